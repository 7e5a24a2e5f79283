//! DROP DATABASE must not fail because our scheduler is connected to the
//! database (PostgreSQL waits five seconds for other sessions, then gives
//! up, and it does not ask background workers to leave). A ProcessUtility
//! hook sees the DROP first: for a caller who owns the database, it holds
//! the launcher off that database for a while and stops our workers there.
//! If the DROP fails after all, the scheduler comes back when the hold ends.

use std::ffi::{c_char, CStr};

use pgrx::prelude::*;

use super::shared::SHARED;

/// How long the launcher stays away from a database being dropped.
const HOLD_USECS: i64 = 15 * 1_000_000;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub fn install() {
    // SAFETY: hooks are installed once, in _PG_init of a preloading
    // postmaster, before any backend exists; we chain to the previous hook.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

// PostgreSQL's own standard_ProcessUtility, called directly: pgrx's pg_sys
// binding would catch the statement's errors and raise them again without
// their cursor position and context.
extern "C-unwind" {
    #[link_name = "standard_ProcessUtility"]
    fn raw_standard_process_utility(
        pstmt: *mut pg_sys::PlannedStmt,
        query_string: *const c_char,
        read_only_tree: bool,
        context: pg_sys::ProcessUtilityContext::Type,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
        dest: *mut pg_sys::DestReceiver,
        qc: *mut pg_sys::QueryCompletion,
    );
}

/// Deliberately not #[pg_guard]: an ERROR from the statement must reach
/// PostgreSQL's handler untouched. This frame holds only raw pointers and
/// integers (nothing to drop), so a longjmp across it is sound; our own work
/// happens in the guarded `drop_database_requested`.
///
/// # Safety
/// Installed as ProcessUtility_hook: PostgreSQL calls it with the arguments
/// of standard_ProcessUtility.
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL passes a valid planned utility statement; the
    // previous hook, if any, has this same signature.
    unsafe {
        let stmt = (*pstmt).utilityStmt;
        if !stmt.is_null() && (*stmt).type_ == pg_sys::NodeTag::T_DropdbStmt {
            drop_database_requested(stmt as *mut pg_sys::DropdbStmt);
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
            None => {
                raw_standard_process_utility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }
        }
    }
}

/// # Safety
/// `stmt` is a valid DropdbStmt, inside a transaction.
#[pg_guard]
unsafe extern "C-unwind" fn drop_database_requested(stmt: *mut pg_sys::DropdbStmt) {
    // SAFETY: a DropdbStmt's dbname is NULL or a NUL-terminated string.
    unsafe {
        let name = (*stmt).dbname;
        if !name.is_null() {
            before_drop(CStr::from_ptr(name));
        }
    }
}

/// Hold the database's schedulers off and stop our workers in it, so DROP
/// DATABASE finds no session of ours.
///
/// # Safety
/// Inside a transaction (catalog look-ups), in a backend with shared memory.
unsafe fn before_drop(name: &CStr) {
    // SAFETY: catalog look-ups in the current transaction.
    let (dboid, owner) = unsafe {
        let dboid = pg_sys::get_database_oid(name.as_ptr(), true);
        (dboid, dboid != pg_sys::InvalidOid && pg_sys::pg_database_ownercheck(dboid, pg_sys::GetUserId()))
    };
    if !owner {
        return; // DROP DATABASE itself will refuse
    }
    {
        let mut s = SHARED.exclusive();
        if let Some(slot) = s.slot_mut(dboid.to_u32()) {
            // SAFETY: reads the clock.
            slot.hold_until = unsafe { pg_sys::GetCurrentTimestamp() } + HOLD_USECS;
        }
    }
    // SAFETY: walks this backend's snapshot of the activity array; SIGTERM
    // to a background worker is how PostgreSQL itself asks one to exit.
    unsafe {
        let n = pg_sys::pgstat_fetch_stat_numbackends();
        for i in 1..=n {
            let entry = pg_sys::pgstat_fetch_stat_local_beentry(i);
            if entry.is_null() {
                continue;
            }
            let status = &(*entry).backendStatus;
            if status.st_databaseid != dboid || status.st_backendType != pg_sys::BackendType::B_BG_WORKER {
                continue;
            }
            let kind = pg_sys::GetBackgroundWorkerTypeByPid(status.st_procpid);
            if !kind.is_null() && CStr::from_ptr(kind).to_bytes().starts_with(b"automation_ext ") {
                libc::kill(status.st_procpid, libc::SIGTERM);
            }
        }
    }
}
