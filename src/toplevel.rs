//! Running a user's SQL at top level in one of our background workers: the
//! way a client's simple query does (postgres.c's exec_simple_query), not
//! through SPI, so VACUUM, CREATE INDEX CONCURRENTLY, REINDEX CONCURRENTLY
//! and procedures that COMMIT work. Several statements in one command form
//! one implicit transaction, exactly as `psql -c 'a; b'` does, unless they
//! contain BEGIN/COMMIT themselves.
//!
//! Used by job runs (worker/runner.rs), SQL steps (engine/steps.rs) and
//! index maintenance (maintenance.rs); it knows nothing of what it runs.

use std::ffi::{c_char, c_int, CStr, CString};

use pgrx::prelude::*;

use crate::error::Error;

// timeout.h is not in pgrx's bindings. STATEMENT_TIMEOUT is the fourth
// TimeoutId (after STARTUP_PACKET_TIMEOUT, DEADLOCK_TIMEOUT, LOCK_TIMEOUT) in
// PostgreSQL 13 through 18; the #[pg_test] `statement_timeout_id_is_right`
// proves it on the version built against (a wrong id fires another
// timeout's handler, with another message).
const STATEMENT_TIMEOUT: c_int = 3;
extern "C-unwind" {
    fn enable_timeout_after(id: c_int, delay_ms: c_int);
    fn disable_timeout(id: c_int, keep_indicator: bool);
}

/// The session reset between two runs (and two SQL steps) of a worker that
/// stays: what `DISCARD ALL` does, except DISCARD PLANS — a run's settings,
/// SET ROLE, temporary tables, prepared statements, cursors, LISTENs and
/// advisory locks go; the plans cached by the extension's own functions
/// stay (PostgreSQL's plan cache already plans again for another role or
/// search_path), so that each step does not plan the engine again (0.7.0:
/// 314 -> 662 steps/s with the rest of that change).
pub const SESSION_RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; \
                                 UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; \
                                 DISCARD SEQUENCES";

/// Set (and report) this worker's application_name: what pg_stat_activity
/// shows. As a client's connection parameter (PGC_S_CLIENT): it is the
/// value `RESET ALL` and `DISCARD ALL` go back to, so the session resets
/// between runs and steps never blank it, even for a moment.
pub fn set_application_name(name: &CStr) {
    // SAFETY: a plain GUC assignment after InitPostgres, outside or inside
    // a transaction; PostgreSQL copies the NUL-terminated value.
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            name.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_CLIENT,
        );
        pg_sys::pgstat_report_appname(name.as_ptr());
    }
}

/// Run `sql` at top level (see `run_top_level`); an ERROR comes back as the
/// error value (message, detail, SQLSTATE), after the session is cleaned up
/// the way PostgreSQL's own error recovery does (timeouts off, out of every
/// transaction level), so the worker can go on. A FATAL (the worker was
/// terminated) ends the process, as in any backend. Only for background
/// workers, outside a transaction.
pub fn run_catching(sql: &str) -> Result<String, Error> {
    run_caught(sql, false).map(|(tag, _)| tag)
}

/// `run_top_level` with its ERROR caught and the session cleaned up; a
/// command that leaves a transaction block open is rolled back and fails.
fn run_caught(sql: &str, capture: bool) -> Result<(String, Option<FirstValue>), Error> {
    PgTryBuilder::new(|| {
        // SAFETY: callers are background workers outside any transaction.
        let ran = unsafe { run_top_level(sql, capture) };
        no_open_block()?;
        Ok::<_, Error>(ran)
    })
    .catch_others(|e| {
        // SAFETY: see above; this is what PostgresMain does after an ERROR.
        unsafe {
            disable_timeout(STATEMENT_TIMEOUT, false);
            pg_sys::AbortOutOfAnyTransaction();
        }
        Err(Error::caught(&e))
    })
    .execute()
}

/// A command that began a transaction block and did not end it (`BEGIN;
/// INSERT ...` without COMMIT) is rolled back, as a client session that
/// ends there would be, and fails: nothing after it (the next run's
/// bookkeeping, the session reset) may run inside its block.
fn no_open_block() -> Result<(), Error> {
    // SAFETY: reads this backend's transaction state; the abort is what
    // PostgreSQL does for a session that ends inside a block.
    unsafe {
        if pg_sys::IsTransactionOrTransactionBlock() {
            pg_sys::AbortOutOfAnyTransaction();
            return Err(Error::new(
                PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
                "the command left a transaction block open (BEGIN without COMMIT): it was rolled back",
            )
            .with_hint("End the block with COMMIT (or ROLLBACK) in the same command."));
        }
    }
    Ok(())
}

/// The first column of the first row the last statement of a command
/// returned, as text (its type's output function), and its type.
#[derive(Clone, Debug)]
pub struct FirstValue {
    pub text: Option<String>,
    pub type_oid: pg_sys::Oid,
}

/// As `run_catching`, and keep the first value the last statement returns
/// (None when it returns no row): what a SQL step outputs (0.7.0).
pub fn run_catching_first_value(sql: &str) -> Result<Option<FirstValue>, Error> {
    run_caught(sql, true).map(|(_, first)| first)
}

extern "C-unwind" {
    // executor/tstoreReceiver.h (not in pgrx's bindings); the same six
    // parameters in PostgreSQL 14 through 18.
    fn SetTuplestoreDestReceiverParams(
        receiver: *mut pg_sys::DestReceiver,
        store: *mut pg_sys::Tuplestorestate,
        context: pg_sys::MemoryContext,
        detoast: bool,
        target_tupdesc: pg_sys::TupleDesc,
        map_failure_msg: *const c_char,
    );
}

thread_local! {
    /// The memory context of parse and plan trees, made once per process
    /// and reset at each command (a worker that stays runs many).
    static PARSE_CONTEXT: std::cell::Cell<pg_sys::MemoryContext> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Run `sql` as top-level statements; returns the last command's completion
/// tag (as psql shows it: "SELECT 1", "VACUUM", "INSERT 0 5") and, if
/// `capture`, the first value the last statement returned.
///
/// # Safety
/// Must be called in a connected background worker, outside a transaction.
unsafe fn run_top_level(sql: &str, capture: bool) -> (String, Option<FirstValue>) {
    let source = CString::new(sql.replace('\0', " ")).unwrap_or_default();
    let source_ptr: *const c_char = source.as_ptr();
    // SAFETY (whole body): this mirrors exec_simple_query: a transaction
    // command around parsing, then per statement analyze, plan, portal run
    // with isTopLevel = true, and commit at the end (or at each transaction
    // statement). Every pointer passed comes from the PostgreSQL call before
    // it and lives in the current transaction's memory.
    unsafe {
        // Parse and plan trees live in a context of their own, like
        // postgres.c's MessageContext: statements such as VACUUM commit and
        // start transactions inside, which frees transaction memory.
        // (made once, reset for each command: the trees of an earlier
        // command, or of one that failed, go here)
        let context = match PARSE_CONTEXT.get() {
            c if c.is_null() => {
                let c = pg_sys::AllocSetContextCreateInternal(
                    pg_sys::TopMemoryContext,
                    c"automation_ext job".as_ptr(),
                    0,
                    8 * 1024,
                    8 * 1024 * 1024,
                );
                PARSE_CONTEXT.set(c);
                c
            }
            c => {
                pg_sys::MemoryContextReset(c);
                c
            }
        };
        let mut first: Option<FirstValue> = None;
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, source_ptr);
        pg_sys::StartTransactionCommand();
        pg_sys::CurrentMemoryContext = context;
        let mut in_xact = true;
        let parsetrees = pg_sys::pg_parse_query(source_ptr);
        let n = if parsetrees.is_null() { 0 } else { (*parsetrees).length };
        let implicit_block = n > 1;
        let mut tag = String::new();
        for i in 0..n {
            let raw = pg_sys::list_nth(parsetrees, i) as *mut pg_sys::RawStmt;
            let is_xact_stmt = (*(*raw).stmt).type_ == pg_sys::NodeTag::T_TransactionStmt;
            if !in_xact {
                pg_sys::SetCurrentStatementStartTimestamp();
                pg_sys::StartTransactionCommand();
                in_xact = true;
            }
            pg_sys::CurrentMemoryContext = context;
            if implicit_block && !is_xact_stmt {
                pg_sys::BeginImplicitTransactionBlock();
            }
            if pg_sys::StatementTimeout > 0 {
                enable_timeout_after(STATEMENT_TIMEOUT, pg_sys::StatementTimeout);
            }
            let snapshot = pg_sys::analyze_requires_snapshot(raw);
            if snapshot {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                source_ptr,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            );
            let plans = pg_sys::pg_plan_queries(
                queries,
                source_ptr,
                pg_sys::CURSOR_OPT_PARALLEL_OK as c_int,
                std::ptr::null_mut(),
            );
            if snapshot {
                pg_sys::PopActiveSnapshot();
            }
            let command_tag = pg_sys::CreateCommandTag((*raw).stmt);
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(portal, std::ptr::null(), source_ptr, command_tag, plans, std::ptr::null_mut());
            pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
            let mut format: i16 = 0;
            pg_sys::PortalSetResultFormat(portal, 1, &mut format);
            // the last statement's rows go to a tuple store when its first
            // value is wanted (spilled to disk past work_mem)
            let store = if capture && i == n - 1 {
                pg_sys::tuplestore_begin_heap(false, false, pg_sys::work_mem)
            } else {
                std::ptr::null_mut()
            };
            let receiver = if store.is_null() {
                pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone)
            } else {
                let r = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestTuplestore);
                SetTuplestoreDestReceiverParams(
                    r,
                    store,
                    pg_sys::CurrentMemoryContext,
                    false,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                );
                r
            };
            let mut qc = pg_sys::QueryCompletion::default();
            crate::compat::portal_run_to_end(portal, receiver, &mut qc);
            if let Some(destroy) = (*receiver).rDestroy {
                destroy(receiver);
            }
            if !store.is_null() {
                first = first_value(store, (*portal).tupDesc);
                pg_sys::tuplestore_end(store);
            }
            pg_sys::PortalDrop(portal, false);
            disable_timeout(STATEMENT_TIMEOUT, false);
            tag = completion_tag(&qc);
            if is_xact_stmt {
                pg_sys::CommitTransactionCommand();
                in_xact = false;
            } else if i == n - 1 {
                if implicit_block {
                    pg_sys::EndImplicitTransactionBlock();
                }
                pg_sys::CommitTransactionCommand();
                in_xact = false;
            } else {
                pg_sys::CommandCounterIncrement();
            }
        }
        if in_xact {
            pg_sys::CommitTransactionCommand();
        }
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
        (tag, first)
    }
}

/// The first column of the first row in `store` (rows of `desc`), as text.
///
/// # Safety
/// `store` holds rows of `desc` (the portal's result descriptor, or NULL
/// for a statement that returns none); inside a transaction.
unsafe fn first_value(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Option<FirstValue> {
    // SAFETY: as the caller promises; the slot is made for `desc`, read,
    // and dropped here; the output function returns a palloc'd C string.
    unsafe {
        if desc.is_null() || (*desc).natts < 1 {
            return None;
        }
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        let found = if pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
            let type_oid = crate::compat::column_type(desc, 0);
            let mut isnull = false;
            let datum = pg_sys::slot_getattr(slot, 1, &mut isnull);
            let text = (!isnull).then(|| {
                let mut output = pg_sys::InvalidOid;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
                let c = pg_sys::OidOutputFunctionCall(output, datum);
                CStr::from_ptr(c).to_string_lossy().into_owned()
            });
            Some(FirstValue { text, type_oid })
        } else {
            None
        };
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        found
    }
}

/// "SELECT 3", "INSERT 0 5", "VACUUM" (what BuildQueryCompletionString makes).
fn completion_tag(qc: &pg_sys::QueryCompletion) -> String {
    // SAFETY: GetCommandTagName returns a static string for any tag.
    let (name, rows) = unsafe {
        (
            CStr::from_ptr(pg_sys::GetCommandTagName(qc.commandTag)).to_string_lossy().into_owned(),
            pg_sys::command_tag_display_rowcount(qc.commandTag),
        )
    };
    if !rows {
        name
    } else if qc.commandTag == pg_sys::CommandTag::CMDTAG_INSERT {
        format!("{name} 0 {}", qc.nprocessed)
    } else {
        format!("{name} {}", qc.nprocessed)
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::{disable_timeout, enable_timeout_after, STATEMENT_TIMEOUT};
    use crate::error::Error;

    #[pg_test]
    fn statement_timeout_id_is_right() {
        // statement_timeout is off: only our call arms a timeout
        Spi::run("SET LOCAL statement_timeout = 0").unwrap();
        let outcome = crate::subxact::run(|| {
            // SAFETY: arms a timeout of this backend; disarmed below.
            unsafe { enable_timeout_after(STATEMENT_TIMEOUT, 50) };
            Spi::run("SELECT pg_catalog.pg_sleep(5)")
        });
        // SAFETY: disarms it (already fired, or not) either way.
        unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
        let error = Error::caught(&outcome.expect_err("the timeout cancels the sleep"));
        assert_eq!(error.message, "canceling statement due to statement timeout");
        assert_eq!(error.sqlstate(), "57014");
    }
}

#[cfg(test)]
mod unit {
    use super::truncate_utf8;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a"); // é is two bytes
        assert_eq!(truncate_utf8("€€", 4), "€");
    }
}
