//! DROP DATABASE must not fail because our scheduler is connected to the
//! database (PostgreSQL waits five seconds for other sessions, then gives
//! up, and it does not ask background workers to leave). A ProcessUtility
//! hook sees the DROP first: for a caller who owns the database, it holds
//! the launcher off that database for a while and stops our workers there.
//! If the DROP fails after all, the scheduler comes back when the hold ends.
//!
//! (0.8.0, issue 28) `CREATE DATABASE ... TEMPLATE y` needs y without other
//! sessions too. For a caller who may clone y, the hook holds the launcher
//! off y and stops our workers there that are not running anything (the
//! scheduler, workers waiting for work); a job or SQL step *running* in y
//! is not cut short: the hook waits for it a few seconds, then refuses the
//! clone with a message naming it and a hint on how to pause the work.
//!
//! DROP EXTENSION automation_ext must not fail with "deadlock detected"
//! because the engine's tables are in use (seen in CI: the extension's own
//! minute job, `timeout_stale_executions()`, held one table and wanted
//! another that the DROP had taken, while the DROP waited for the first).
//! PostgreSQL's DROP locks the objects one by one as it deletes them; for
//! the extension's owner, the hook first takes every relation of the
//! extension (and their partitions) at once, never waiting for one while
//! it holds another — so the DROP itself waits for nothing it could
//! deadlock on, and whoever uses the tables waits for it.

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
        if !stmt.is_null() && (*stmt).type_ == pg_sys::NodeTag::T_CreatedbStmt {
            create_database_requested(stmt as *mut pg_sys::CreatedbStmt);
        }
        if !stmt.is_null() && (*stmt).type_ == pg_sys::NodeTag::T_DropStmt && drops_us(stmt as *const pg_sys::DropStmt)
        {
            drop_extension_requested();
        }
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc),
            None => {
                raw_standard_process_utility(pstmt, query_string, read_only_tree, context, params, query_env, dest, qc)
            }
        }
    }
}

/// Is `stmt` a DROP EXTENSION that names automation_ext?
///
/// # Safety
/// `stmt` is a valid DropStmt.
unsafe fn drops_us(stmt: *const pg_sys::DropStmt) -> bool {
    // SAFETY: a DropStmt of extensions lists its names as String nodes.
    unsafe {
        if (*stmt).removeType != pg_sys::ObjectType::OBJECT_EXTENSION {
            return false;
        }
        let list = (*stmt).objects;
        if list.is_null() {
            return false;
        }
        (0..(*list).length as usize).any(|i| {
            let node = (*(*list).elements.add(i)).ptr_value as *const pg_sys::Node;
            !node.is_null()
                && (*node).type_ == pg_sys::NodeTag::T_String
                && !(*(node as *const pg_sys::String)).sval.is_null()
                && CStr::from_ptr((*(node as *const pg_sys::String)).sval).to_bytes() == b"automation_ext"
        })
    }
}

/// The relations of the extension in this database (its tables, views,
/// sequences, and the partitions and children of its tables), when the
/// role in effect may drop it (owns it, or is a member of its owner, or a
/// superuser): others get PostgreSQL's own refusal and take no lock here.
const OUR_RELATIONS: &str = "
    WITH RECURSIVE rels(oid) AS (
        SELECT d.objid
          FROM pg_catalog.pg_extension e
          JOIN pg_catalog.pg_depend d
            ON d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.refobjid = e.oid
           AND d.deptype = 'e' AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
         WHERE e.extname = 'automation_ext' AND pg_catalog.pg_has_role(e.extowner, 'USAGE')
        UNION
        SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN rels ON i.inhparent = rels.oid
    )
    SELECT pg_catalog.array_agg(c.oid ORDER BY c.oid)
      FROM rels JOIN pg_catalog.pg_class c ON c.oid = rels.oid
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')";

/// Before DROP EXTENSION automation_ext (see the module comment): take an
/// ACCESS EXCLUSIVE lock on every relation of the extension, all at once.
/// Each round, in a subtransaction, waits for the one lock the previous
/// round found taken (holding no other of ours meanwhile), then tries the
/// others without waiting; if one is taken, the round is rolled back (its
/// locks released) and the next waits for that one. A waiting round honours
/// lock_timeout, statement_timeout and a cancel, as the DROP itself would.
#[pg_guard]
extern "C-unwind" fn drop_extension_requested() {
    let Ok(Some(rels)) = Spi::get_one::<Vec<pg_sys::Oid>>(OUR_RELATIONS) else {
        return;
    };
    let lock = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
    let mut wait_for: Option<pg_sys::Oid> = None;
    loop {
        let taken = std::cell::Cell::new(None);
        let round = crate::subxact::run(|| {
            // SAFETY: heavyweight lock calls inside the subtransaction just
            // begun (its abort releases what they took); an oid whose
            // relation is gone is locked harmlessly.
            unsafe {
                if let Some(rel) = wait_for {
                    pg_sys::LockRelationOid(rel, lock);
                }
                for &rel in rels.iter().filter(|&&rel| Some(rel) != wait_for) {
                    if !pg_sys::ConditionalLockRelationOid(rel, lock) {
                        taken.set(Some(rel));
                        return Err(crate::error::Error::new(
                            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
                            "a relation of automation_ext is in use",
                        ));
                    }
                }
            }
            Ok::<(), crate::error::Error>(())
        });
        match (round, taken.get()) {
            (Ok(()), _) => return,
            (Err(_), Some(rel)) => wait_for = Some(rel),
            // lock_timeout, a cancel: the DROP fails as it would have
            (Err(e), None) => crate::subxact::rethrow(e),
        }
        pgrx::check_for_interrupts!();
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
        (dboid, dboid != pg_sys::InvalidOid && crate::compat::database_owned_by(dboid, pg_sys::GetUserId()))
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
            let entry = crate::compat::local_backend(i);
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

/// # Safety
/// `stmt` is a valid CreatedbStmt, inside a transaction.
#[pg_guard]
unsafe extern "C-unwind" fn create_database_requested(stmt: *mut pg_sys::CreatedbStmt) {
    // SAFETY: the statement's options are a List of DefElem nodes (or NIL);
    // defGetString reads a DefElem's argument as a string.
    unsafe {
        let list = (*stmt).options;
        if list.is_null() {
            return;
        }
        for i in 0..(*list).length as usize {
            let def = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::DefElem;
            if def.is_null() || (*def).defname.is_null() || (*def).arg.is_null() {
                continue;
            }
            if CStr::from_ptr((*def).defname).to_bytes() == b"template" {
                before_clone(CStr::from_ptr(pg_sys::defGetString(def)));
            }
        }
    }
}

/// May the role in effect clone database `dboid`? (What CREATE DATABASE
/// checks: CREATEDB, and a template it owns or that is marked a template;
/// a superuser always.) Others get PostgreSQL's own refusal, and our
/// workers are left alone.
///
/// # Safety
/// Inside a transaction (syscache look-ups).
unsafe fn may_clone(dboid: pg_sys::Oid) -> bool {
    // SAFETY: syscache look-ups by oid, read as the catalogs' row structs and released.
    unsafe {
        let me = pg_sys::GetUserId();
        if pg_sys::superuser_arg(me) {
            return true;
        }
        let role = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::AUTHOID as i32, pg_sys::Datum::from(me));
        if role.is_null() {
            return false;
        }
        let createdb = (*(pg_sys::GETSTRUCT(role) as *const pg_sys::FormData_pg_authid)).rolcreatedb;
        pg_sys::ReleaseSysCache(role);
        let db = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::DATABASEOID as i32, pg_sys::Datum::from(dboid));
        if db.is_null() {
            return false;
        }
        let form = &*(pg_sys::GETSTRUCT(db) as *const pg_sys::FormData_pg_database);
        let (template, owner) = (form.datistemplate, form.datdba);
        pg_sys::ReleaseSysCache(db);
        createdb && (template || crate::tenancy::may_act_as(me, owner))
    }
}

/// How long CREATE DATABASE ... TEMPLATE waits for work of ours running in
/// the template to end before it is refused.
const CLONE_PATIENCE_MS: u64 = 4_000;

/// Our workers connected to `dboid`: (pid, background worker type, busy:
/// running a statement).
///
/// # Safety
/// In a backend, inside a transaction.
unsafe fn our_workers(dboid: pg_sys::Oid) -> Vec<(i32, String, bool)> {
    let mut out = Vec::new();
    // SAFETY: a fresh snapshot of the activity array of this backend, walked by index.
    unsafe {
        pg_sys::pgstat_clear_snapshot();
        let n = pg_sys::pgstat_fetch_stat_numbackends();
        for i in 1..=n {
            let entry = crate::compat::local_backend(i);
            if entry.is_null() {
                continue;
            }
            let status = &(*entry).backendStatus;
            if status.st_databaseid != dboid || status.st_backendType != pg_sys::BackendType::B_BG_WORKER {
                continue;
            }
            let kind = pg_sys::GetBackgroundWorkerTypeByPid(status.st_procpid);
            if kind.is_null() {
                continue;
            }
            let kind = CStr::from_ptr(kind).to_string_lossy().into_owned();
            if kind.starts_with("automation_ext ") {
                let busy = status.st_state == pg_sys::BackendState::STATE_RUNNING;
                out.push((status.st_procpid, kind, busy));
            }
        }
    }
    out
}

/// Before CREATE DATABASE ... TEMPLATE `name` (see the module comment).
///
/// # Safety
/// Inside a transaction, in a backend with shared memory.
unsafe fn before_clone(name: &CStr) {
    // SAFETY: a catalog look-up in the current transaction.
    let dboid = unsafe { pg_sys::get_database_oid(name.as_ptr(), true) };
    // SAFETY: as documented for may_clone.
    if dboid == pg_sys::InvalidOid || !crate::settings::preloaded() || !unsafe { may_clone(dboid) } {
        return;
    }
    {
        let mut s = SHARED.exclusive();
        if let Some(slot) = s.find_slot(dboid.to_u32()) {
            // SAFETY: reads the clock.
            slot.hold_until = unsafe { pg_sys::GetCurrentTimestamp() } + HOLD_USECS;
        }
    }
    let start = std::time::Instant::now();
    loop {
        // SAFETY: as documented for our_workers.
        let workers = unsafe { our_workers(dboid) };
        let busy: Vec<&(i32, String, bool)> =
            workers.iter().filter(|w| w.2 && w.1 != "automation_ext scheduler").collect();
        for (pid, _, _) in workers.iter().filter(|w| !w.2 || w.1 == "automation_ext scheduler") {
            // SAFETY: SIGTERM to a background worker of ours that runs
            // nothing (the scheduler, a worker waiting for work): it leaves.
            unsafe { libc::kill(*pid, libc::SIGTERM) };
        }
        if workers.is_empty() {
            return;
        }
        if !busy.is_empty() && start.elapsed() >= std::time::Duration::from_millis(CLONE_PATIENCE_MS) {
            let running: Vec<String> = busy.iter().map(|(pid, kind, _)| format!("{kind} (pid {pid})")).collect();
            crate::error::Error::new(
                PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
                format!(
                    "source database \"{}\" is running automation_ext work: {}",
                    name.to_string_lossy(),
                    running.join(", ")
                ),
            )
            .with_hint(
                "Wait for it to end, or pause the work first: ALTER SYSTEM SET automation.enabled = off; SELECT pg_reload_conf(); \
                 (jobs and SQL steps finish what they run and start nothing new) — then clone, and set it back on.",
            )
            .raise();
        }
        if busy.is_empty() && start.elapsed() >= std::time::Duration::from_millis(CLONE_PATIENCE_MS) {
            return; // what is left is leaving; CREATE DATABASE waits a little more itself
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        pgrx::check_for_interrupts!();
    }
}
