//! The built-in scheduler (pg_cron's job model, run by our own background
//! workers):
//!
//! - `cron`: schedule parsing and next-fire times (pure Rust);
//! - `launcher`: one static worker that starts a scheduler for every database
//!   where the extension is installed;
//! - `database`: the per-database scheduler loop;
//! - `runner`: the dynamic worker that runs one job, as its owner, at top level;
//! - `shared`: the shared memory they coordinate through;
//! - `hooks`: DROP DATABASE stops our workers in that database first;
//! - `sql`: the SQL-callable functions (schedule validation, wake-up, settings).

pub mod cron;
pub mod database;
pub mod hooks;
pub mod launcher;
pub mod runner;
pub mod shared;
pub mod sql;

use pgrx::bgworkers::{BackgroundWorkerBuilder, DynamicBackgroundWorker};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

/// Start one of our dynamic background workers (`function` in this
/// library, connected to a database by the worker itself). With `notify`,
/// the caller is signalled when it starts and stops and can follow it with
/// the returned handle; `None` when no worker slot is free.
pub fn start_worker(
    name: &str,
    kind: &str,
    function: &str,
    arg: pg_sys::Datum,
    extra: &str,
    notify: bool,
) -> Option<DynamicBackgroundWorker> {
    let mut builder = BackgroundWorkerBuilder::new(name)
        .set_type(kind)
        .set_library("automation_ext")
        .set_function(function)
        .set_argument(Some(arg))
        .set_extra(extra)
        .enable_spi_access()
        .set_restart_time(None);
    if notify {
        // SAFETY: reading this process's pid.
        builder = builder.set_notify_pid(unsafe { pg_sys::MyProcPid });
    }
    // SAFETY: the handle is palloc'd in the current memory context, which
    // may be a transaction's; callers keep it across transactions, so it
    // goes in TopMemoryContext (a few bytes per worker, for the process's life).
    unsafe { PgMemoryContexts::TopMemoryContext.switch_to(|_| builder.load_dynamic()) }.ok()
}

/// From `_PG_init`: shared memory and the launcher, when preloading.
pub fn init() {
    shared::init();
    if shared::preloaded() {
        hooks::install();
    }
    launcher::register();
}

extension_sql_file!(
    "../../sql/scheduler.sql",
    name = "scheduler",
    requires = ["automation_schema", "runtime", "monitoring", sql::automation::job_cache_invalidate]
);
