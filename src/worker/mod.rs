//! The built-in scheduler (pg_cron's job model, run by our own background
//! workers):
//!
//! - `cron`: schedule parsing and next-fire times (pure Rust);
//! - `launcher`: one static worker that starts a database's scheduler when
//!   its jobs are due, and the workers of runs, within cluster-wide budgets;
//! - `database`: the per-database scheduler loop (runs only while needed);
//! - `progress`: which databases need a scheduler, and the proof (a model
//!   explored in its tests) that no budget can stall them;
//! - `runner`: the dynamic worker that runs one job, as its owner, at top level;
//! - `shared`: the shared memory they coordinate through;
//! - `hooks`: DROP DATABASE stops our workers in that database first;
//! - `sql`: the SQL-callable functions (schedule validation, wake-up, settings).

pub mod cron;
pub mod database;
pub mod hooks;
pub mod launcher;
pub mod plan;
pub mod progress;
pub mod runner;
pub mod shared;
pub mod sql;

use std::ffi::c_int;

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::prelude::*;

/// For workers that run users' SQL (job runs, index maintenance): SIGTERM
/// handled as a backend handles it (`die`: a flag acted on at the next
/// CHECK_FOR_INTERRUPTS, FATAL from there), instead of the background
/// worker default `bgworker_die`, which raises FATAL inside the signal
/// handler. A SIGTERM landing in a critical section (a WAL insert, a commit)
/// made that a PANIC, and the whole server crash-restarted: seen when DROP
/// DATABASE ... WITH (FORCE) terminated a job run that was writing.
/// Call before BackgroundWorkerUnblockSignals.
pub fn handle_sigterm_like_a_backend() {
    // pgrx's `pg_sys::die` is a Rust wrapper; a signal handler must be the C
    // symbol itself. Its declaration here has the bindings' signature (the
    // assignment below fails to compile if tcopprot.h's `die` changes).
    extern "C-unwind" {
        #[link_name = "die"]
        fn postgres_die(postgres_signal_arg: c_int);
    }
    let _same_signature: unsafe fn(c_int) = pg_sys::die;
    // SAFETY: installs PostgreSQL's own handler for a signal that is still
    // blocked (background workers start with signals blocked).
    unsafe { crate::compat::set_signal_handler(pg_sys::SIGTERM as c_int, Some(postgres_die)) };
}

/// A dynamic worker's handle as PostgreSQL keeps it (bgworker.c's
/// `struct BackgroundWorkerHandle { int slot; uint64 generation; }`, the same
/// from 9.4 through 18), copied into shared memory so that any of our
/// processes (a restarted launcher too) can ask for the worker's status.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct WorkerHandle {
    slot: c_int,
    generation: u64,
}

/// What became of a worker.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WorkerStatus {
    NotYetStarted,
    Running(i32),
    Stopped,
    PostmasterDied,
}

impl WorkerHandle {
    pub const NONE: WorkerHandle = WorkerHandle { slot: -1, generation: 0 };

    pub fn status(&self) -> WorkerStatus {
        if self.slot < 0 {
            return WorkerStatus::Stopped; // never started
        }
        let mut copy = *self;
        let mut pid: pg_sys::pid_t = 0;
        // SAFETY: `copy` has the layout of BackgroundWorkerHandle (see the
        // type); GetBackgroundWorkerPid only reads it and checks the slot's
        // generation, so a stale handle reads as Stopped.
        let status = unsafe {
            pg_sys::GetBackgroundWorkerPid(
                &mut copy as *mut WorkerHandle as *mut pg_sys::BackgroundWorkerHandle,
                &mut pid,
            )
        };
        match status {
            pg_sys::BgwHandleStatus::BGWH_STARTED => WorkerStatus::Running(pid),
            pg_sys::BgwHandleStatus::BGWH_NOT_YET_STARTED => WorkerStatus::NotYetStarted,
            pg_sys::BgwHandleStatus::BGWH_POSTMASTER_DIED => WorkerStatus::PostmasterDied,
            _ => WorkerStatus::Stopped,
        }
    }
}

/// Start one of our dynamic background workers (`function` in this
/// library, connected to a database by the worker itself), told to
/// `notify_pid` when it starts and stops. Returns a copy of its handle (so
/// nothing stays allocated for it: a launcher that starts workers all day
/// must not grow), or None when no worker slot is free.
pub fn start_worker(
    name: &str,
    kind: &str,
    function: &str,
    arg: pg_sys::Datum,
    extra: &str,
    notify_pid: Option<i32>,
) -> Option<WorkerHandle> {
    let mut builder = BackgroundWorkerBuilder::new(name)
        .set_type(kind)
        .set_library("automation_ext")
        .set_function(function)
        .set_argument(Some(arg))
        .set_extra(extra)
        .enable_spi_access()
        .set_restart_time(None);
    if let Some(pid) = notify_pid {
        builder = builder.set_notify_pid(pid);
    }
    let mut bgw: pg_sys::BackgroundWorker = (&builder).into();
    let mut handle: *mut pg_sys::BackgroundWorkerHandle = std::ptr::null_mut();
    // SAFETY: bgw is fully initialised by pgrx's builder; on success
    // PostgreSQL sets `handle` to a palloc'd BackgroundWorkerHandle, which we
    // copy (see WorkerHandle) and free at once.
    unsafe {
        if !pg_sys::RegisterDynamicBackgroundWorker(&mut bgw, &mut handle) || handle.is_null() {
            return None;
        }
        let copy = *(handle as *const WorkerHandle);
        pg_sys::pfree(handle as *mut std::ffi::c_void);
        Some(copy)
    }
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
