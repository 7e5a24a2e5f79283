//! Table triggers (0.8.0 native; 0.6.0 in PL/pgSQL): the statement trigger
//! that registry rows of type `table` attach to their table, and the drain
//! of the trigger inbox that starts their executions.
//!
//! - The trigger ([`table_trigger`]) asks nothing of the role that changes
//!   the table: it reads its registry row and appends the changed rows (as
//!   text, one entry per statement up to a million rows) as the extension's
//!   owner, recording the trigger's owner (whose executions they become)
//!   and the writer (`changed_by`). A role with only INSERT, UPDATE or
//!   DELETE on the table writes as before. It refuses to run for a table, or
//!   under a name, that its registry row did not attach, and does nothing
//!   while its trigger is paused.
//! - The drain ([`drain`]), run by the database's scheduler after the
//!   commit (or at once by the trigger when no scheduler will), starts the
//!   executions 2,500 rows at a time. Each slice's rows are cast to the
//!   table's row type and turned into inputs **as the trigger's owner, in a
//!   security-restricted operation** (`tenancy::as_role`): a domain's CHECK,
//!   an input function or a cast to json reached from there runs with that
//!   role's rights and cannot SET ROLE back to the scheduler's superuser.
//!   The executions are then started as that owner, which must still be
//!   able to act as the owner of the workflow it starts. A slice that cannot
//!   start goes to `automation.errors` with its rows; the rest go on.

use pgrx::prelude::*;
use pgrx::{PgTrigger, PgTriggerError};

use crate::error::{Context, Error, OrRaise, Result};
use crate::tenancy;

/// Changed rows started per slice (per subtransaction).
const SLICE: i32 = 2500;

/// What the drain knows of one inbox entry.
struct Entry {
    ctid: String,
    trigger_id: i32,
    workflow: String,
    op: String,
    table: String,
    owner: pg_sys::Oid,
    changed_by: Option<pg_sys::Oid>,
    rows: i32,
    done: i32,
    queued_at: Option<TimestampWithTimeZone>,
}

/// One slice of changed rows: the rows (new ones, or old ones for DELETE)
/// and, for UPDATE, the old ones in the same order.
struct Rows {
    rows: Vec<Option<String>>,
    old: Option<Vec<Option<String>>>,
}

/// Start the executions of one slice of `entry` (rows `from..from+SLICE`
/// of the inbox, or `given` rows): the inputs are made as the trigger's
/// owner (restricted), the executions started as that owner. Returns how
/// many started.
fn start_slice(entry: &Entry, rows: &Rows) -> Result<i64> {
    if !tenancy::role_exists(entry.owner) {
        return Err(Error::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!(
                "the role (oid {}) that owns table trigger {} no longer exists",
                entry.owner.to_u32(),
                entry.trigger_id
            ),
        ));
    }
    // the trigger must still be there, running, and allowed to start its workflow
    let state = Spi::get_two_with_args::<bool, bool>(
        "SELECT r.enabled, automation.role_may_act_as(r.owner, d.owner)
           FROM automation_triggers.registry r
           JOIN automation_workflows.definitions d ON d.name OPERATOR(pg_catalog.=) $2
          WHERE r.id OPERATOR(pg_catalog.=) $1 AND r.owner OPERATOR(pg_catalog.=) $3::pg_catalog.regrole",
        &[entry.trigger_id.into(), entry.workflow.as_str().into(), entry.owner.into()],
    );
    match state {
        Ok((Some(true), Some(true))) => {}
        Ok((Some(false), _)) => {
            return Err(Error::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!("table trigger {} is paused", entry.trigger_id),
            ))
        }
        Ok((_, Some(false))) => {
            return Err(Error::new(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!(
                    "the owner of table trigger {} may no longer act as the owner of workflow {}",
                    entry.trigger_id, entry.workflow
                ),
            ))
        }
        Ok(_) | Err(pgrx::spi::SpiError::InvalidPosition) => {
            return Err(Error::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("table trigger {} (or its workflow {}) no longer exists", entry.trigger_id, entry.workflow),
            ))
        }
        Err(e) => return Err(Error::internal("could not read a table trigger", e)),
    }
    // the table, quoted (its name as the trigger wrote it; it may be gone)
    let table = Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
          WHERE c.oid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1)",
        &[entry.table.as_str().into()],
    )
    .ok()
    .flatten()
    .ok_or_else(|| {
        Error::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("table {} does not exist", entry.table))
    })?;
    let changed_by = entry.changed_by.map(|r| {
        // SAFETY: a syscache look-up by oid; noerr gives NULL for a dropped role.
        let name = unsafe { pg_sys::GetUserNameFromId(r, true) };
        if name.is_null() {
            r.to_u32().to_string()
        } else {
            // SAFETY: a NUL-terminated string PostgreSQL returned.
            unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned()
        }
    });
    // the rows become inputs as the trigger's owner, restricted
    // (as text: jsonb of any depth goes through unchanged)
    let inputs = tenancy::as_role(entry.owner, || {
        Spi::get_one_with_args::<Vec<Option<String>>>(
            &format!(
                "SELECT pg_catalog.array_agg((
                        pg_catalog.jsonb_build_object('op', $1::text, 'table', $2::text)
                        OPERATOR(pg_catalog.||) CASE WHEN $1::text OPERATOR(pg_catalog.=) 'DELETE'
                             THEN pg_catalog.jsonb_build_object('old', pg_catalog.to_jsonb(u.r::{table}))
                             ELSE pg_catalog.jsonb_build_object('new', pg_catalog.to_jsonb(u.r::{table})) END
                        OPERATOR(pg_catalog.||) CASE WHEN o.r IS NOT NULL
                             THEN pg_catalog.jsonb_build_object('old', pg_catalog.to_jsonb(o.r::{table}))
                             ELSE '{{}}'::pg_catalog.jsonb END
                        OPERATOR(pg_catalog.||) CASE WHEN $5::text IS NOT NULL
                             THEN pg_catalog.jsonb_build_object('changed_by', $5::text)
                             ELSE '{{}}'::pg_catalog.jsonb END
                        -- (0.8.0) which trigger, and when the change was queued
                        OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('trigger', pg_catalog.jsonb_build_object(
                             'id', $6::integer, 'type', 'table', 'scheduled_for', NULL, 'fired_at', $7::timestamptz)))::text
                        ORDER BY u.i)
                   FROM pg_catalog.unnest($3::text[]) WITH ORDINALITY u(r, i)
                   LEFT JOIN pg_catalog.unnest($4::text[]) WITH ORDINALITY o(r, i) ON o.i OPERATOR(pg_catalog.=) u.i"
            ),
            &[
                entry.op.as_str().into(),
                entry.table.as_str().into(),
                rows.rows.clone().into(),
                rows.old.clone().into(),
                changed_by.as_deref().into(),
                entry.trigger_id.into(),
                entry.queued_at.into(),
            ],
        )
    })
    .map_err(|e| Error::internal("could not read the changed rows", e))?
    .unwrap_or_default();
    if inputs.is_empty() {
        return Ok(0);
    }
    // ... and start as that owner
    let started = Spi::get_one_with_args::<i32>(
        "SELECT automation.run_workflows_as($1, $2, $3::text[]::pg_catalog.jsonb[])",
        &[entry.owner.into(), entry.workflow.as_str().into(), inputs.into()],
    )
    .map_err(|e| Error::internal("could not start the executions", e))?
    .unwrap_or(0);
    Ok(i64::from(started))
}

/// Record in automation.errors that a slice of `entry` started nothing, with
/// its rows (so nothing is lost), as the trigger's owner's error.
fn slice_failed(entry: &Entry, rows: &Rows, problem: &str, sqlstate: &str) -> Result<()> {
    Spi::run_with_args(
        "INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context, owner)
         VALUES ($1, 'TableTriggerFailed',
                 pg_catalog.format('%s of %s row(s) of %s (table trigger %s) started no execution: %s',
                                   $2, pg_catalog.cardinality($5::text[]), $3, $4, $6),
                 pg_catalog.jsonb_build_object('sqlstate', $7, 'trigger_id', $4, 'op', $2, 'table', $3,
                                               'owner', $8::pg_catalog.regrole::text,
                                               'changed_by', $9::pg_catalog.regrole::text,
                                               'queued_at', $10, 'rows', pg_catalog.to_jsonb($5::text[]),
                                               'old_rows', pg_catalog.to_jsonb($11::text[])),
                 $8::pg_catalog.regrole)",
        &[
            entry.workflow.as_str().into(),
            entry.op.as_str().into(),
            entry.table.as_str().into(),
            entry.trigger_id.into(),
            rows.rows.clone().into(),
            problem.into(),
            sqlstate.into(),
            entry.owner.into(),
            entry.changed_by.into(),
            entry.queued_at.into(),
            rows.old.clone().into(),
        ],
    )
    .context("could not record a table trigger's failure in automation.errors")
}

/// Start `rows` of `entry` in a subtransaction; a failure goes to
/// automation.errors. Returns how many started.
fn start_or_record(entry: &Entry, rows: &Rows) -> Result<i64> {
    match crate::subxact::run(|| start_slice(entry, rows)) {
        Ok(n) => Ok(n),
        Err(caught) => {
            let e = Error::caught(&caught);
            slice_failed(entry, rows, &e.message, &e.sqlstate())?;
            Ok(0)
        }
    }
}

/// Start the executions of the oldest inbox entries, SLICE rows at a time,
/// up to `batch` slices (see the module comment). Returns how many started.
pub fn drain(batch: i32) -> Result<i64> {
    let entries = Spi::connect_mut(|client| {
        client
            .update(
                "SELECT i.ctid::text, i.trigger_id, i.workflow_name, i.op, i.table_name, i.owner::pg_catalog.oid,
                        i.changed_by::pg_catalog.oid, pg_catalog.cardinality(i.rows), i.rows_done, i.queued_at
                   FROM automation_workflows.trigger_inbox i
                  ORDER BY i.queued_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                None,
                &[batch.into()],
            )?
            .map(|r| {
                Ok(Entry {
                    ctid: r.get::<String>(1)?.unwrap_or_default(),
                    trigger_id: r.get::<i32>(2)?.unwrap_or(0),
                    workflow: r.get::<String>(3)?.unwrap_or_default(),
                    op: r.get::<String>(4)?.unwrap_or_default(),
                    table: r.get::<String>(5)?.unwrap_or_default(),
                    owner: r.get::<pg_sys::Oid>(6)?.unwrap_or(pg_sys::InvalidOid),
                    changed_by: r.get::<pg_sys::Oid>(7)?,
                    rows: r.get::<i32>(8)?.unwrap_or(0),
                    done: r.get::<i32>(9)?.unwrap_or(0),
                    queued_at: r.get::<TimestampWithTimeZone>(10)?,
                })
            })
            .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .context("could not read the trigger inbox")?;
    let mut slices = 0;
    let mut started = 0i64;
    for entry in entries {
        let mut done = entry.done;
        while done < entry.rows && slices < batch {
            slices += 1;
            let (rows, old) = Spi::get_two_with_args::<Vec<Option<String>>, Vec<Option<String>>>(
                "SELECT i.rows[$2:$3], i.old_rows[$2:$3] FROM automation_workflows.trigger_inbox i
                  WHERE i.ctid OPERATOR(pg_catalog.=) $1::tid",
                &[entry.ctid.as_str().into(), (done + 1).into(), (done + SLICE).into()],
            )
            .context("could not read a trigger inbox entry")?;
            started += start_or_record(&entry, &Rows { rows: rows.unwrap_or_default(), old })?;
            done += SLICE;
        }
        if done >= entry.rows {
            Spi::run_with_args(
                "DELETE FROM automation_workflows.trigger_inbox i WHERE i.ctid OPERATOR(pg_catalog.=) $1::tid",
                &[entry.ctid.as_str().into()],
            )
        } else {
            // (the rows themselves are not written again: an unchanged
            // TOASTed value is kept as it is)
            Spi::run_with_args(
                "UPDATE automation_workflows.trigger_inbox i SET rows_done = $2
                  WHERE i.ctid OPERATOR(pg_catalog.=) $1::tid",
                &[entry.ctid.as_str().into(), done.into()],
            )
        }
        .context("could not update the trigger inbox")?;
        if slices >= batch {
            break;
        }
    }
    Ok(started)
}

/// The statement trigger (see the module comment).
fn table_trigger(trigger: &PgTrigger<'_>) -> Result<()> {
    let misuse = || {
        Error::new(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            "automation.workflow_table_trigger() only runs as the AFTER ... FOR EACH STATEMENT trigger that a table trigger of automation_triggers.registry attaches",
        )
    };
    use pgrx::{PgTriggerLevel, PgTriggerOperation, PgTriggerWhen};
    if !matches!(trigger.level(), PgTriggerLevel::Statement) || !matches!(trigger.when(), Ok(PgTriggerWhen::After)) {
        return Err(misuse());
    }
    let args = trigger.extra_args().map_err(|_| misuse())?;
    let [id] = args.as_slice() else { return Err(misuse()) };
    let id: i32 = id.parse().map_err(|_| misuse())?;
    let op = match trigger.op().map_err(|_| misuse())? {
        PgTriggerOperation::Insert => "INSERT",
        PgTriggerOperation::Update => "UPDATE",
        PgTriggerOperation::Delete => "DELETE",
        PgTriggerOperation::Truncate => return Err(misuse()),
    };
    let relid = trigger.relid().map_err(|_| misuse())?;
    let name = trigger.name().map_err(|_| misuse())?.to_owned();
    let writer = tenancy::current_role();
    let data = trigger.trigger_data();
    let has_new = !data.tg_newtable.is_null();
    let has_old = !data.tg_oldtable.is_null();
    let scheduler = crate::queue::inbox_will_be_drained();
    let data_ptr = data as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    tenancy::as_extension_owner(|| -> Result<()> {
        Spi::connect_mut(|client| -> Result<()> {
            // SAFETY: the trigger data PostgreSQL passed to this trigger
            // call, registered with the SPI connection opened just above,
            // so that its transition tables can be read by name.
            unsafe { pg_sys::SPI_register_trigger_data(data_ptr) };
            // its registry row: the table it names (stored qualified) must
            // be this one, and the trigger must be the one it attached
            let reg = client
                .select(
                    "SELECT r.owner::pg_catalog.oid, r.enabled, d.name::text,
                            (SELECT pg_catalog.cardinality(p) OPERATOR(pg_catalog.=) 2
                                    AND p[1] OPERATOR(pg_catalog.=) n.nspname::text
                                    AND p[2] OPERATOR(pg_catalog.=) c.relname::text
                               FROM pg_catalog.pg_class c
                               JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace,
                                    pg_catalog.parse_ident(r.config->>'table') p
                              WHERE c.oid OPERATOR(pg_catalog.=) $2)
                       FROM automation_triggers.registry r
                       JOIN automation_workflows.definitions d ON d.id OPERATOR(pg_catalog.=) r.workflow_id
                      WHERE r.id OPERATOR(pg_catalog.=) $1 AND r.trigger_type OPERATOR(pg_catalog.=) 'table'",
                    Some(1),
                    &[id.into(), relid.into()],
                )
                .context("could not read the registry")?;
            let mut found = None;
            for row in reg {
                found = Some((
                    row.get::<pg_sys::Oid>(1)?.unwrap_or(pg_sys::InvalidOid),
                    row.get::<bool>(2)?.unwrap_or(false),
                    row.get::<String>(3)?.unwrap_or_default(),
                    row.get::<bool>(4)?.unwrap_or(false),
                ));
            }
            let attached_name = format!("automation_workflow_{id}_{}", op.to_ascii_lowercase());
            let Some((owner, enabled, workflow, same_table)) = found.filter(|f| f.3 && name == attached_name) else {
                let table = crate::catalog::describe_relation(relid).map(|t| t.0).unwrap_or_default();
                return Err(Error::new(
                    PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                    format!("automation.workflow_table_trigger({id}) does not belong to table {table}"),
                )
                .with_hint("Table triggers are attached by inserting a row into automation_triggers.registry."));
            };
            let _ = same_table;
            if !enabled {
                return Ok(());
            }
            let table = crate::catalog::describe_relation(relid)?.0;
            let (rows_name, old_name) = match op {
                "DELETE" => ("old_rows", None),
                "UPDATE" if has_old && has_new => ("new_rows", Some("old_rows")),
                _ => ("new_rows", None),
            };
            if (op == "DELETE" && !has_old) || (op != "DELETE" && !has_new) {
                return Err(misuse());
            }
            let how_many = client
                .select(&format!("SELECT pg_catalog.count(*) FROM {rows_name}"), Some(1), &[])?
                .first()
                .get_one::<i64>()?
                .unwrap_or(0);
            if how_many == 0 {
                return Ok(());
            }
            // the rows as text (their own type's output: cheap), in one
            // entry up to a million rows (a value may not exceed 1 GB), else
            // 100,000 an entry; with the old rows of an UPDATE in the same order
            let rows = match old_name {
                None => format!(
                    "SELECT c::text AS r, pg_catalog.row_number() OVER () AS i, NULL::text AS o FROM {rows_name} c"
                ),
                Some(old) => format!(
                    "SELECT n.r, n.i, o.r AS o
                       FROM (SELECT c::text AS r, pg_catalog.row_number() OVER () AS i FROM {rows_name} c) n
                       JOIN (SELECT c::text AS r, pg_catalog.row_number() OVER () AS i FROM {old} c) o
                         ON o.i OPERATOR(pg_catalog.=) n.i"
                ),
            };
            let group = if how_many <= 1_000_000 {
                ""
            } else {
                "GROUP BY (p.i OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog./) 100000"
            };
            let old_rows = if old_name.is_some() { "pg_catalog.array_agg(p.o ORDER BY p.i)" } else { "NULL" };
            client
                .update(
                    &format!(
                        "INSERT INTO automation_workflows.trigger_inbox
                                (trigger_id, workflow_name, op, table_name, owner, changed_by, rows, old_rows)
                         SELECT $1, $2, $3, $4, $5::pg_catalog.regrole, $6::pg_catalog.regrole,
                                pg_catalog.array_agg(p.r ORDER BY p.i), {old_rows}
                           FROM ({rows}) p {group}"
                    ),
                    None,
                    &[
                        id.into(),
                        workflow.as_str().into(),
                        op.into(),
                        table.as_str().into(),
                        owner.into(),
                        writer.into(),
                    ],
                )
                .context("could not append to the trigger inbox")?;
            client
                .update(
                    "UPDATE automation_triggers.registry r SET last_fired_at = pg_catalog.now()
                      WHERE r.id OPERATOR(pg_catalog.=) $1",
                    None,
                    &[id.into()],
                )
                .context("could not note when the trigger fired")?;
            Ok(())
        })?;
        // no scheduler will drain it: start them now, in this transaction
        if !scheduler {
            drain(i32::MAX)?;
        }
        Ok(())
    })
}

#[pg_schema]
mod automation {
    use super::*;

    /// Internal: the statement trigger of tables that table triggers watch.
    #[pg_trigger(sql = false)]
    fn workflow_table_trigger<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> std::result::Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
        table_trigger(trigger).or_raise();
        Ok(None)
    }

    /// `automation.drain_trigger_inbox(batch integer) → bigint` (the
    /// scheduler's; nobody else may execute it).
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn drain_trigger_inbox(batch: i32) -> i64 {
        if batch < 1 {
            Error::invalid(format!("batch must be positive, not {batch}")).raise();
        }
        drain(batch).or_raise()
    }
}
