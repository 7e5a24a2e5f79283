//! Data-change audit: `automation.enable_audit(regclass)` attaches a native
//! trigger that records every INSERT, UPDATE, DELETE (and TRUNCATE) of a table
//! in `automation_audit.log`.
//!
//! Privileges: the people whose changes are audited must not be able to write
//! (or forge) audit rows, so they get no privilege on the log. The trigger
//! turns the row into JSON *as the user making the change* (so any user code
//! that can run while rendering a value runs with that user's rights), then
//! switches to the owner of the log for the one fixed INSERT, whose every
//! operator, function and type is schema-qualified to pg_catalog (the caller's
//! search_path cannot redirect it), and switches back.

use pgrx::prelude::*;
use pgrx::{direct_function_call_as_datum, PgTrigger, PgTriggerError};

use crate::error::{Context, Error, OrRaise, Result};

const ROW_TRIGGER: &str = "automation_audit_row";
const TRUNCATE_TRIGGER: &str = "automation_audit_truncate";

/// $1 actor, $2 schema, $3 table, $4 operation, $5 old row, $6 new row (json,
/// in column order). For an UPDATE, changed_columns are the columns whose
/// values differ, in column order. Planned once per backend and kept
/// (kept.rs): a `static`, whose address is the same at every use.
static INSERT_SQL: &str = "\
INSERT INTO automation_audit.log (actor, table_schema, table_name, operation, old_row, new_row, changed_columns)
VALUES ($1::pg_catalog.name, $2::pg_catalog.name, $3::pg_catalog.name, $4, $5::pg_catalog.jsonb, $6::pg_catalog.jsonb,
        CASE WHEN $4 OPERATOR(pg_catalog.=) 'UPDATE'::pg_catalog.text THEN
            ARRAY(SELECT n.key
                    FROM pg_catalog.json_each($6) WITH ORDINALITY AS n(key, value, ord)
                   WHERE (n.value::pg_catalog.jsonb OPERATOR(pg_catalog.=)
                          ($5::pg_catalog.jsonb OPERATOR(pg_catalog.->) n.key)) IS NOT TRUE
                   ORDER BY n.ord)
        END)";

#[pg_schema]
mod automation {
    use pgrx::prelude::*;
    use pgrx::{PgTrigger, PgTriggerError};

    use crate::error::OrRaise;

    /// Trigger function behind `enable_audit`: AFTER ... FOR EACH ROW for
    /// INSERT, UPDATE, DELETE; AFTER TRUNCATE FOR EACH STATEMENT.
    #[pg_trigger]
    fn audit_row_change<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
        super::record(trigger)?;
        Ok(None)
    }

    // regclass arguments: declared by hand in sql/audit.sql.

    /// `automation.enable_audit(target regclass) → text`
    #[pg_extern(sql = false)]
    fn enable_audit(target: pg_sys::Oid) -> String {
        super::enable(target).or_raise()
    }

    /// `automation.disable_audit(target regclass) → boolean`
    #[pg_extern(sql = false)]
    fn disable_audit(target: pg_sys::Oid) -> bool {
        super::disable(target).or_raise()
    }
}

extension_sql_file!(
    "../sql/audit.sql",
    name = "audit",
    requires = ["automation_audit_schema", automation::audit_row_change]
);

/// Which change fired the trigger, and the rows it involves.
struct Change {
    operation: &'static str,
    old: Option<pg_sys::HeapTuple>,
    new: Option<pg_sys::HeapTuple>,
}

fn protocol_violation() -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        "automation.audit_row_change() must be fired AFTER INSERT, UPDATE or DELETE FOR EACH ROW, or AFTER TRUNCATE",
        "Attach it with automation.enable_audit(table)."
    );
}

fn change_of(td: &pg_sys::TriggerData) -> Change {
    let event = td.tg_event;
    let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
    let per_row = event & pg_sys::TRIGGER_EVENT_ROW != 0;
    if event & pg_sys::TRIGGER_EVENT_TIMINGMASK != pg_sys::TRIGGER_EVENT_AFTER {
        protocol_violation();
    }
    let tuple = |t: pg_sys::HeapTuple| (!t.is_null()).then_some(t);
    match (op, per_row) {
        (pg_sys::TRIGGER_EVENT_INSERT, true) => Change { operation: "INSERT", old: None, new: tuple(td.tg_trigtuple) },
        (pg_sys::TRIGGER_EVENT_UPDATE, true) => {
            Change { operation: "UPDATE", old: tuple(td.tg_trigtuple), new: tuple(td.tg_newtuple) }
        }
        (pg_sys::TRIGGER_EVENT_DELETE, true) => Change { operation: "DELETE", old: tuple(td.tg_trigtuple), new: None },
        (pg_sys::TRIGGER_EVENT_TRUNCATE, false) => Change { operation: "TRUNCATE", old: None, new: None },
        _ => protocol_violation(),
    }
}

/// The row as `json`, columns in table order, rendered by PostgreSQL's own
/// row_to_json as the current user.
///
/// # Safety
/// `tuple` must be a valid heap tuple of a relation whose descriptor is
/// `tupdesc`, both alive for the call.
unsafe fn row_json(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc) -> pg_sys::Datum {
    // SAFETY: per the contract above; heap_copy_tuple_as_datum pallocs a
    // composite datum stamped with the descriptor's row type, which is what
    // row_to_json(record) reads.
    unsafe {
        let composite = pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc);
        direct_function_call_as_datum(pg_sys::row_to_json, &[Some(composite)])
            .unwrap_or_else(|| error!("row_to_json returned NULL"))
    }
}

fn record(trigger: &PgTrigger<'_>) -> Result<(), PgTriggerError> {
    let td = trigger.trigger_data();
    let change = change_of(td);
    let schema = trigger.table_schema()?;
    let table = trigger.table_name()?;
    // SAFETY: tg_relation is open for the duration of the trigger call, and
    // the tuples are the trigger's own, of that relation.
    let (old, new) = unsafe {
        let tupdesc = (*td.tg_relation).rd_att;
        (change.old.map(|t| row_json(t, tupdesc)), change.new.map(|t| row_json(t, tupdesc)))
    };
    // SAFETY: plain reads of the backend's current user; GetUserNameFromId
    // raises an ERROR (never returns NULL) for an unknown role.
    let actor = unsafe {
        std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false)).to_string_lossy().into_owned()
    };
    let json = |d: Option<pg_sys::Datum>| {
        // SAFETY: d is a json datum made above, alive until the trigger returns.
        match d {
            Some(d) => unsafe { pgrx::datum::DatumWithOid::new(d, pg_sys::JSONOID) },
            None => pgrx::datum::DatumWithOid::null_oid(pg_sys::JSONOID),
        }
    };
    let args = [
        pgrx::datum::DatumWithOid::from(actor.as_str()),
        schema.as_str().into(),
        table.as_str().into(),
        change.operation.into(),
        json(old),
        json(new),
    ];
    as_log_owner(|| {
        Spi::connect_mut(|client| {
            let types = [
                PgOid::from(pg_sys::TEXTOID),
                PgOid::from(pg_sys::TEXTOID),
                PgOid::from(pg_sys::TEXTOID),
                PgOid::from(pg_sys::TEXTOID),
                PgOid::from(pg_sys::JSONOID),
                PgOid::from(pg_sys::JSONOID),
            ];
            crate::kept::update(client, INSERT_SQL, &types, &args).map(|_| ())
        })
    })
    .context("could not write to automation_audit.log")
    .or_raise();
    Ok(())
}

/// Run `f` as the owner of automation_audit.log, then switch back.
pub(crate) fn as_log_owner<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: catalog lookups by name in the current transaction; the
    // relation is opened and closed again right here. The user switch is the
    // one PostgreSQL itself makes for SECURITY DEFINER functions: if `f`
    // raises an ERROR, transaction (or subtransaction) abort restores the
    // saved user and security context, so an error cannot leave us switched.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"automation_audit".as_ptr(), false);
        let relid = pg_sys::get_relname_relid(c"log".as_ptr(), nsp);
        if relid == pg_sys::InvalidOid {
            Error::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, "automation_audit.log does not exist").raise();
        }
        let rel = pg_sys::RelationIdGetRelation(relid);
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);

        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
        pg_sys::SetUserIdAndSecContext(owner, saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        let result = f();
        pg_sys::SetUserIdAndSecContext(saved_user, saved_context);
        result
    }
}

fn enable(target: pg_sys::Oid) -> Result<String> {
    let (table, relkind) = crate::catalog::describe_relation(target)?;
    if relkind != "r" && relkind != "p" {
        return Err(Error::new(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("{table} is not a table"))
            .with_detail("Auditing works on tables and partitioned tables."));
    }
    if table == "automation_audit.log" {
        return Err(Error::invalid("the audit log cannot audit itself")
            .with_detail("Every audit row would write another audit row."));
    }
    // CREATE TRIGGER checks that the caller owns the table (or has TRIGGER on it).
    for sql in [
        format!(
            "CREATE OR REPLACE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}
                 FOR EACH ROW EXECUTE FUNCTION automation.audit_row_change()"
        ),
        format!(
            "CREATE OR REPLACE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {table}
                 FOR EACH STATEMENT EXECUTE FUNCTION automation.audit_row_change()"
        ),
    ] {
        Spi::run(&sql).with_context(|| format!("could not enable auditing on {table}"))?;
    }
    let mut definitions = Vec::new();
    for name in [ROW_TRIGGER, TRUNCATE_TRIGGER] {
        definitions.push(crate::catalog::trigger_definition(target, name)?.ok_or_else(|| {
            Error::internal(format!("could not enable auditing on {table}"), format!("trigger {name} is not there"))
        })?);
    }
    Ok(definitions.join(";\n"))
}

fn disable(target: pg_sys::Oid) -> Result<bool> {
    let (table, _) = crate::catalog::describe_relation(target)?;
    // both, whatever the first finds
    let row = crate::catalog::drop_trigger_if_exists(target, &table, ROW_TRIGGER)?;
    let truncate = crate::catalog::drop_trigger_if_exists(target, &table, TRUNCATE_TRIGGER)?;
    Ok(row || truncate)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn setup() {
        Spi::run(
            "CREATE TABLE public.\"Audited; T\" (id int PRIMARY KEY, \"Name\" text, qty int);
             SELECT automation.enable_audit('public.\"Audited; T\"')",
        )
        .unwrap();
    }

    #[pg_test]
    fn records_each_operation_with_rows_and_changed_columns() {
        setup();
        Spi::run("INSERT INTO public.\"Audited; T\" VALUES (1, 'a', 5)").unwrap();
        Spi::run("UPDATE public.\"Audited; T\" SET qty = 6 WHERE id = 1").unwrap();
        Spi::run("DELETE FROM public.\"Audited; T\"").unwrap();
        Spi::run("TRUNCATE public.\"Audited; T\"").unwrap();
        let got = Spi::get_one::<String>(
            "SELECT string_agg(concat_ws(' ', operation, table_schema, table_name, old_row, new_row,
                                         changed_columns::text, actor = current_user), ' | ' ORDER BY id)
               FROM automation_audit.log",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            "INSERT public Audited; T {\"id\": 1, \"qty\": 5, \"Name\": \"a\"} t | \
             UPDATE public Audited; T {\"id\": 1, \"qty\": 5, \"Name\": \"a\"} {\"id\": 1, \"qty\": 6, \"Name\": \"a\"} {qty} t | \
             DELETE public Audited; T {\"id\": 1, \"qty\": 6, \"Name\": \"a\"} t | \
             TRUNCATE public Audited; T t"
        );
    }

    #[pg_test]
    fn disable_removes_the_triggers() {
        setup();
        assert!(Spi::get_one::<bool>("SELECT automation.disable_audit('public.\"Audited; T\"')").unwrap().unwrap());
        Spi::run("INSERT INTO public.\"Audited; T\" VALUES (1, 'a', 5)").unwrap();
        assert_eq!(Spi::get_one::<i64>("SELECT count(*) FROM automation_audit.log").unwrap(), Some(0));
        assert!(!Spi::get_one::<bool>("SELECT automation.disable_audit('public.\"Audited; T\"')").unwrap().unwrap());
    }

    #[pg_test(error = "the audit log cannot audit itself")]
    fn the_log_is_not_audited() {
        Spi::run("SELECT automation.enable_audit('automation_audit.log')").unwrap();
    }
}
