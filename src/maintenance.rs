//! Index maintenance: bloat estimation (pure arithmetic) and the worker that
//! rebuilds indexes with REINDEX INDEX CONCURRENTLY at top level. The
//! planning (`automation.maintain_indexes`) is SQL, sql/maintenance.sql.

use std::time::Duration;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::error::{in_worker_transaction, Context, Error, OrRaise, Result};
use crate::toplevel;

/// B-tree size arithmetic, after the statistical estimate the widely used
/// bloat queries make (ioguix's btree bloat query): how many pages an index
/// of this many entries of this width would take if freshly built. Pure.
pub mod bloat {
    const MAXALIGN: f64 = 8.0;
    /// IndexTupleData: the heap pointer (6) and the info word (2).
    const INDEX_TUPLE_HEADER: f64 = 8.0;
    /// The null bitmap of an index tuple with nulls (INDEX_MAX_KEYS / 8).
    const NULL_BITMAP: f64 = 4.0;
    /// ItemIdData, the line pointer of each tuple.
    const ITEM_ID: f64 = 4.0;
    /// PageHeaderData and BTPageOpaqueData.
    const PAGE_HEADER: f64 = 24.0;
    const BTREE_SPECIAL: f64 = 16.0;

    #[derive(Debug, Clone, Copy)]
    pub struct Btree {
        /// index entries (pg_class.reltuples of the index)
        pub tuples: f64,
        /// sum of the key columns' average widths (pg_stats.avg_width)
        pub key_width: f64,
        /// some key column has nulls
        pub has_nulls: bool,
        /// 10..=100; B-tree's default is 90
        pub fillfactor: f64,
        pub block_size: f64,
    }

    fn align(x: f64) -> f64 {
        (x / MAXALIGN).ceil() * MAXALIGN
    }

    /// Pages of a freshly built index: leaves filled to fillfactor, one
    /// level of internal pages, the metapage.
    pub fn expected_pages(b: &Btree) -> f64 {
        let header = INDEX_TUPLE_HEADER + if b.has_nulls { NULL_BITMAP } else { 0.0 };
        let entry = align(header + b.key_width.max(0.0)) + ITEM_ID;
        let usable = (b.block_size - PAGE_HEADER - BTREE_SPECIAL) * b.fillfactor.clamp(10.0, 100.0) / 100.0;
        let per_page = (usable / entry).floor().max(1.0);
        let leaves = (b.tuples.max(0.0) / per_page).ceil().max(1.0);
        leaves + (leaves / per_page).ceil() + 1.0
    }

    /// The share of an index (percent, one decimal) that a rebuild would
    /// give back: 0 when it is no larger than expected.
    pub fn ratio(actual_pages: f64, expected_pages: f64) -> f64 {
        if actual_pages <= 0.0 || expected_pages >= actual_pages {
            return 0.0;
        }
        ((1.0 - expected_pages / actual_pages) * 1000.0).round() / 10.0
    }

    /// From pgstattuple's pgstatindex: leaves filled to `avg_leaf_density`
    /// percent, against the fillfactor a rebuild would fill them to.
    pub fn ratio_from_density(avg_leaf_density: f64, fillfactor: f64) -> f64 {
        if avg_leaf_density <= 0.0 {
            return 0.0; // an empty index: nothing to measure
        }
        (((1.0 - avg_leaf_density / fillfactor.clamp(10.0, 100.0)) * 1000.0).round() / 10.0).max(0.0)
    }

    #[cfg(test)]
    mod unit {
        use super::*;

        fn int_index(tuples: f64) -> Btree {
            Btree { tuples, key_width: 4.0, has_nulls: false, fillfactor: 90.0, block_size: 8192.0 }
        }

        #[test]
        fn a_fresh_int4_index_matches_what_postgres_builds() {
            // CREATE INDEX on 1,000,000 int4 values: 2745 pages (PostgreSQL 15)
            let pages = expected_pages(&int_index(1_000_000.0));
            assert!((2700.0..2800.0).contains(&pages), "{pages}");
            assert!(ratio(2745.0, pages) < 1.0, "{}", ratio(2745.0, pages));
        }

        #[test]
        fn nine_tenths_deleted_is_about_ninety_percent_bloat() {
            let expected = expected_pages(&int_index(100_000.0));
            let r = ratio(2745.0, expected);
            assert!((85.0..95.0).contains(&r), "{r}");
        }

        #[test]
        fn wider_keys_and_nulls_need_more_pages() {
            let narrow = expected_pages(&int_index(100_000.0));
            let wide = expected_pages(&Btree { key_width: 64.0, ..int_index(100_000.0) });
            let nulls = expected_pages(&Btree { has_nulls: true, key_width: 8.0, ..int_index(100_000.0) });
            assert!(wide > narrow * 3.0);
            assert!(nulls > narrow);
            let packed = expected_pages(&Btree { fillfactor: 100.0, ..int_index(100_000.0) });
            assert!(packed < narrow);
        }

        #[test]
        fn edges() {
            assert_eq!(expected_pages(&int_index(0.0)), 3.0);
            assert_eq!(ratio(0.0, 3.0), 0.0);
            assert_eq!(ratio(10.0, 20.0), 0.0);
            assert_eq!(ratio(100.0, 25.0), 75.0);
            assert_eq!(ratio_from_density(90.0, 90.0), 0.0);
            assert_eq!(ratio_from_density(9.0, 90.0), 90.0);
            assert_eq!(ratio_from_density(95.0, 90.0), 0.0);
            assert_eq!(ratio_from_density(0.0, 90.0), 0.0);
        }
    }
}

#[pg_schema]
mod automation {
    use super::*;

    /// `automation.btree_expected_pages(tuples float8, key_width float8,
    /// has_nulls boolean, fillfactor integer, block_size integer) → float8`
    #[pg_extern(sql = false)]
    fn btree_expected_pages(tuples: f64, key_width: f64, has_nulls: bool, fillfactor: i32, block_size: i32) -> f64 {
        bloat::expected_pages(&bloat::Btree {
            tuples,
            key_width,
            has_nulls,
            fillfactor: fillfactor as f64,
            block_size: block_size as f64,
        })
    }

    /// `automation.bloat_ratio(actual_pages float8, expected_pages float8) → numeric`
    #[pg_extern(sql = false)]
    fn bloat_ratio(actual_pages: f64, expected_pages: f64) -> f64 {
        bloat::ratio(actual_pages, expected_pages)
    }

    /// `automation.bloat_ratio_from_density(avg_leaf_density float8, fillfactor integer) → float8`
    #[pg_extern(sql = false)]
    fn bloat_ratio_from_density(avg_leaf_density: f64, fillfactor: i32) -> f64 {
        bloat::ratio_from_density(avg_leaf_density, fillfactor as f64)
    }

    /// `automation.start_index_maintenance() → boolean`: start the worker
    /// that carries out the rebuilds this transaction queued, once it commits.
    #[pg_extern(sql = false)]
    fn start_index_maintenance() -> bool {
        super::start_worker()
    }

    /// `automation.maintain_index_blocking(index regclass, action text,
    /// lock_timeout_ms integer, bloat_ratio numeric, estimated_by text) → text`:
    /// carry out one blocking maintenance action of `maintain_indexes(blocking
    /// => true)` as the caller, and write its audit row, in one place: the
    /// audit log only ever records what this function did. `action` is
    /// `reindex` (REINDEX INDEX) or `drop` (DROP INDEX of an invalid leftover
    /// of a failed concurrent rebuild). The caller must own the table (42501
    /// otherwise, and nothing is logged). Returns NULL when it worked, or the
    /// error of a REINDEX that failed (logged as REINDEX FAILED; the failed
    /// REINDEX itself is rolled back, the rest of the caller's work is not).
    #[pg_extern(sql = false)]
    fn maintain_index_blocking(
        index: Option<pg_sys::Oid>,
        action: Option<&str>,
        lock_timeout_ms: Option<i32>,
        bloat_ratio: Option<pgrx::AnyNumeric>,
        estimated_by: Option<&str>,
    ) -> Option<String> {
        let (Some(index), Some(action), Some(lock_timeout_ms)) = (index, action, lock_timeout_ms) else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "index, action and lock_timeout_ms must not be NULL"
            );
        };
        super::blocking_action(index, action, lock_timeout_ms, bloat_ratio.map(|n| n.to_string()), estimated_by)
            .or_raise()
    }
}

/// 0.2.0's `automation.record_maintenance(text, regclass, jsonb)`, which let
/// any caller write audit rows: dropped by the 0.3.0 upgrade. The symbol
/// stays because the 0.1.0 -> 0.2.0 upgrade script creates the function on
/// the way to 0.3.0; called, it refuses.
#[pg_extern(sql = false)]
fn record_maintenance(_operation: Option<&str>, _target: Option<pg_sys::Oid>, _details: Option<pgrx::JsonB>) {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        "automation.record_maintenance() was removed in automation_ext 0.3.0",
        "Run ALTER EXTENSION automation_ext UPDATE; maintenance is logged by automation.maintain_indexes() itself."
    );
}

/// See `automation.maintain_index_blocking`.
fn blocking_action(
    index: pg_sys::Oid,
    action: &str,
    lock_timeout_ms: i32,
    bloat_ratio: Option<String>,
    estimated_by: Option<&str>,
) -> Result<Option<String>> {
    if !matches!(action, "reindex" | "drop") || lock_timeout_ms < 0 {
        return Err(Error::invalid(format!(
            "invalid maintenance action \"{action}\" (lock timeout {lock_timeout_ms} ms)"
        ))
        .with_detail("action is reindex or drop; lock_timeout_ms is zero or more."));
    }
    // SAFETY: reads the current role's name; raises for an unknown role.
    let actor = unsafe {
        std::ffi::CStr::from_ptr(pg_sys::GetUserNameFromId(pg_sys::GetUserId(), false)).to_string_lossy().into_owned()
    };
    let Some(Target { index: name, schema, table, size: size_before, valid, allowed: owner, .. }) =
        describe_index(index, &actor)?
    else {
        return Err(Error::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("index with OID {} does not exist", index.to_u32()),
        ));
    };
    if !owner {
        return Err(Error::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("must be owner of the table of index {name}"),
        )
        .with_detail("Only the owner of a table (or a member of its owning role) may rebuild or drop its indexes."));
    }
    if action == "drop" && valid {
        return Err(Error::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("index {name} is valid; only invalid leftovers of failed concurrent rebuilds are dropped"),
        ));
    }
    let statement = if action == "drop" { format!("DROP INDEX {name}") } else { format!("REINDEX INDEX {name}") };
    // lock_timeout for this statement only: set inside the subtransaction
    // (undone if it rolls back), put back after it (a released
    // subtransaction keeps its SET LOCAL until the end of the transaction)
    let saved = Spi::get_one::<String>("SELECT pg_catalog.current_setting('lock_timeout')")
        .context("could not read lock_timeout")?;
    let outcome = crate::subxact::run(|| {
        Spi::run_with_args(
            "SELECT pg_catalog.set_config('lock_timeout', $1, true)",
            &[format!("{lock_timeout_ms}ms").into()],
        )?;
        Spi::run(&statement)
    });
    if outcome.is_ok() {
        Spi::run_with_args("SELECT pg_catalog.set_config('lock_timeout', $1, true)", &[saved.into()])
            .context("could not restore lock_timeout")?;
    }
    let mut details = serde_json::json!({ "index": name, "size_before": size_before, "concurrently": false });
    let (operation, error) = match (action, outcome) {
        ("drop", Ok(_)) => ("DROP INVALID INDEX", None),
        (_, Ok(_)) => {
            details["size_after"] =
                Spi::get_one_with_args::<i64>("SELECT pg_catalog.pg_relation_size($1)", &[index.into()])
                    .context("could not read the rebuilt index's size")?
                    .into();
            ("REINDEX", None)
        }
        // a failed DROP is the caller's error, as a plain DROP INDEX would be
        ("drop", Err(e)) => crate::subxact::rethrow(e),
        (_, Err(e)) => {
            let message = crate::subxact::message(&e);
            details["error"] = message.clone().into();
            ("REINDEX FAILED", Some(message))
        }
    };
    if operation != "DROP INVALID INDEX" {
        details["bloat_ratio"] = bloat_ratio.and_then(|r| r.parse::<f64>().ok()).into();
        details["estimated_by"] = estimated_by.into();
    }
    crate::audit::as_log_owner(|| write_audit(&actor, operation, Some(&schema), Some(&table), pgrx::JsonB(details)))?;
    Ok(error)
}

extension_sql_file!(
    "../sql/maintenance.sql",
    name = "maintenance",
    // after timeseries, so that the default jobs always get the same ids
    requires = ["automation_audit_schema", "scheduler", "timeseries"]
);

fn write_audit(
    actor: &str,
    operation: &str,
    schema: Option<&str>,
    table: Option<&str>,
    details: pgrx::JsonB,
) -> Result<()> {
    Spi::run_with_args(
        "INSERT INTO automation_audit.log (actor, table_schema, table_name, operation, details)
         VALUES ($1::pg_catalog.name, $2::pg_catalog.name, $3::pg_catalog.name, $4, $5)",
        &[actor.into(), schema.into(), table.into(), operation.into(), details.into()],
    )
    .context("could not write to automation_audit.log")
}

fn start_worker() -> bool {
    // SAFETY: this backend's database and top-level transaction id (the
    // queue insert that precedes this call assigned it).
    let (db, xid) = unsafe { (pg_sys::MyDatabaseId, pg_sys::GetTopFullTransactionId().value) };
    crate::worker::start_worker(
        "automation_ext index maintenance",
        "automation_ext index maintenance",
        "automation_index_main",
        pg_sys::Datum::from(db),
        &xid.to_string(),
        None,
    )
    .is_some()
}

struct Task {
    id: i64,
    index: pg_sys::Oid,
    action: String,
    lock_timeout_ms: i32,
    requested_by: String,
}

struct Target {
    index: String,
    table_oid: pg_sys::Oid,
    schema: String,
    table: String,
    size: i64,
    allowed: bool,
    valid: bool,
}

/// The worker: waits for the queuing transaction to end (nothing to do if it
/// rolled back), then carries out that transaction's queued actions in
/// order: REINDEX INDEX CONCURRENTLY (dropping what a failed rebuild leaves
/// behind), or DROP INDEX CONCURRENTLY of an invalid leftover. Each outcome
/// goes to its queue row and to automation_audit.log.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn automation_index_main(arg: pg_sys::Datum) {
    let db = pg_sys::Oid::from(arg.value() as u32);
    let xid = BackgroundWorker::get_extra().to_string();
    // SIGTERM ends the worker at the next interrupt check (never inside a
    // critical section); SIGINT cancels the statement.
    crate::worker::handle_sigterm_like_a_backend();
    // SAFETY: standard start-up, handlers installed.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    // SAFETY: copied by PostgreSQL.
    unsafe { pg_sys::pgstat_report_appname(c"automation_ext index maintenance".as_ptr()) };

    loop {
        let status = in_worker_transaction(|| {
            Spi::get_one_with_args::<String>("SELECT pg_catalog.pg_xact_status($1::text::xid8)", &[xid.as_str().into()])
                .context("could not read the status of the requesting transaction")
        });
        match status.as_deref() {
            Some("in progress") => std::thread::sleep(Duration::from_millis(200)),
            Some("committed") => break,
            _ => return, // rolled back (or unknown): nothing was queued
        }
    }
    let tasks = in_worker_transaction(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT id, index_oid, action, lock_timeout_ms, requested_by::text
                       FROM automation.index_maintenance_queue
                      WHERE batch = $1::text::xid8 AND status = 'queued' ORDER BY id",
                    None,
                    &[xid.as_str().into()],
                )?
                .map(|r| {
                    Ok((
                        r.get::<i64>(1)?,
                        r.get::<pg_sys::Oid>(2)?,
                        r.get::<String>(3)?,
                        r.get::<i32>(4)?,
                        r.get::<String>(5)?,
                    ))
                })
                .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .context("could not read the index maintenance queue")?
        .into_iter()
        .map(|row| match row {
            (Some(id), Some(index), Some(action), Some(lock_timeout_ms), Some(requested_by)) => {
                Ok(Task { id, index, action, lock_timeout_ms, requested_by })
            }
            _ => Err(Error::internal("could not read the index maintenance queue", "a NOT NULL column read as NULL")),
        })
        .collect::<Result<Vec<_>>>()
    });
    for task in tasks {
        carry_out(&task);
    }
}

/// An index, its table, and whether `role` may maintain it (owns the table,
/// or is a superuser); None when there is no such index. In the caller's
/// transaction.
fn describe_index(index: pg_sys::Oid, role: &str) -> Result<Option<Target>> {
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname), t.oid, tn.nspname::text, t.relname::text,
                    pg_catalog.pg_relation_size(c.oid),
                    pg_catalog.pg_has_role($2::name, t.relowner, 'USAGE')
                    OR COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = $2), false),
                    i.indisvalid
               FROM pg_catalog.pg_index i
               JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
              WHERE c.oid = $1",
            None,
            &[index.into(), role.into()],
        )?;
        let mut found = None;
        for r in rows {
            found = Some((
                r.get::<String>(1)?,
                r.get::<pg_sys::Oid>(2)?,
                r.get::<String>(3)?,
                r.get::<String>(4)?,
                r.get::<i64>(5)?,
                r.get::<bool>(6)?,
                r.get::<bool>(7)?,
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(found)
    })
    .with_context(|| format!("could not look up index {}", index.to_u32()))?;
    match row {
        None => Ok(None),
        Some((Some(index), Some(table_oid), Some(schema), Some(table), Some(size), Some(allowed), Some(valid))) => {
            Ok(Some(Target { index, table_oid, schema, table, size, allowed, valid }))
        }
        Some(_) => Err(Error::internal(format!("could not look up index {}", index.to_u32()), "a column read as NULL")),
    }
}

fn carry_out(task: &Task) {
    let Some(target) = in_worker_transaction(|| describe_index(task.index, &task.requested_by)) else {
        finish(task, None, "skipped", Some("the index no longer exists"), None, serde_json::json!({}));
        return;
    };
    if !target.allowed {
        let why = format!("{} does not own the table of {}", task.requested_by, target.index);
        finish(task, Some(&target), "failed", Some(&why), None, serde_json::json!({}));
        return;
    }
    let ms = std::ffi::CString::new(task.lock_timeout_ms.max(0).to_string()).expect("digits have no NUL");
    // SAFETY: a plain GUC assignment for this session; PostgreSQL copies it.
    unsafe {
        pg_sys::SetConfigOption(
            c"lock_timeout".as_ptr(),
            ms.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
        )
    };
    let started = std::time::Instant::now();
    let (outcome, leftovers) = match task.action.as_str() {
        "reindex" => {
            let outcome = toplevel::run_catching(&format!("REINDEX INDEX CONCURRENTLY {}", target.index));
            let leftovers = if outcome.is_err() { drop_leftovers(target.table_oid) } else { Vec::new() };
            (outcome, leftovers)
        }
        _ => (toplevel::run_catching(&format!("DROP INDEX CONCURRENTLY IF EXISTS {}", target.index)), Vec::new()),
    };
    let after = if task.action == "reindex" {
        in_worker_transaction(|| {
            // by name: REINDEX CONCURRENTLY gives the rebuilt index a new oid
            Spi::get_one_with_args::<i64>(
                "SELECT pg_catalog.pg_relation_size(pg_catalog.to_regclass($1))",
                &[target.index.as_str().into()],
            )
            .context("could not read the rebuilt index's size")
        })
    } else {
        None
    };
    let details = serde_json::json!({
        "duration_ms": started.elapsed().as_millis() as u64,
        "lock_timeout_ms": task.lock_timeout_ms,
        "leftovers_dropped": leftovers,
    });
    match outcome {
        Ok(_) => finish(task, Some(&target), "done", None, after, details),
        Err(e) => finish(task, Some(&target), "failed", Some(&e.to_string()), after, details),
    }
}

/// Drop the invalid `*_ccnew` indexes a failed concurrent rebuild left on a
/// table; returns their names.
fn drop_leftovers(table: pg_sys::Oid) -> Vec<String> {
    let names: Vec<String> = in_worker_transaction(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
                       FROM pg_catalog.pg_index i
                       JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
                       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE i.indrelid = $1 AND NOT i.indisvalid AND c.relname ~ '_ccnew[0-9]*$'",
                    None,
                    &[table.into()],
                )?
                // format() of two names is never NULL
                .filter_map(|r| r.get::<String>(1).transpose())
                .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .context("could not look for the leftovers of a failed rebuild")
    });
    names
        .into_iter()
        .filter(|name| toplevel::run_catching(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}")).is_ok())
        .collect()
}

fn finish(
    task: &Task,
    target: Option<&Target>,
    status: &str,
    error: Option<&str>,
    after: Option<i64>,
    mut details: serde_json::Value,
) {
    let operation = match (task.action.as_str(), status) {
        ("reindex", "done") => "REINDEX",
        ("reindex", _) => "REINDEX FAILED",
        _ => "DROP INVALID INDEX",
    };
    if let Some(t) = target {
        details["index"] = t.index.clone().into();
        details["size_before"] = t.size.into();
    }
    details["size_after"] = after.into();
    details["concurrently"] = true.into();
    details["status"] = status.into();
    details["error"] = error.into();
    details["queue_id"] = task.id.into();
    in_worker_transaction(|| {
        Spi::run_with_args(
            "UPDATE automation.index_maintenance_queue
                SET status = $2, error = $3, size_after = $4, finished_at = pg_catalog.clock_timestamp()
              WHERE id = $1",
            &[task.id.into(), status.into(), error.into(), after.into()],
        )
        .context("could not record index maintenance")?;
        if status != "skipped" || target.is_some() {
            write_audit(
                &task.requested_by,
                operation,
                target.map(|t| t.schema.as_str()),
                target.map(|t| t.table.as_str()),
                pgrx::JsonB(details.clone()),
            )?;
        }
        Ok(())
    });
}
