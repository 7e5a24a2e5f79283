//! The process layer: every background process of the extension, and
//! nothing of what they serve. It knows worker slots, shared memory,
//! latches, signals and budgets; the domains it drives (jobs, the workflow
//! engine's SQL steps and deadlines, the queue's recording, the trigger
//! inbox) each own their SQL and their decisions, and are wired in by
//! lib.rs (`Wiring`): the process layer imports none of them.
//!
//! - `launcher`: one static worker that starts a database's worker when it
//!   has work due, and the workers of runs, within cluster-wide budgets;
//! - `database`: the per-database worker (runs only while needed), which
//!   gives each duty (`Duty`) its slices;
//! - `visit`: when that worker sleeps, stays or leaves (pure Rust);
//! - `progress`: which databases need a worker, and the proof (a model
//!   explored in its tests) that no budget can stall them;
//! - `runner`: the run worker (one job's command, or a role's SQL steps),
//!   and the run segments and slots it is handed through;
//! - `shared`: the shared memory they coordinate through, and the wake-ups
//!   backends send;
//! - `hooks`: DROP DATABASE stops our workers in that database first.

pub mod database;
pub mod hooks;
pub mod launcher;
pub mod progress;
pub mod runner;
pub mod shared;
pub mod visit;

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

/// Has this worker been asked to stop (SIGTERM)? pgrx's handler sets
/// PostgreSQL's `ShutdownRequestPending`, which, unlike pgrx's
/// `sigterm_received()` (and `wait_latch()`, which calls it), is not reset
/// by reading it: a SIGTERM that arrives while the worker waits on its latch
/// in one loop is still seen by the next. (A scheduler waiting for its
/// extension lost the SIGTERM of DROP DATABASE ... WITH (FORCE) that way,
/// stayed connected, and the DROP failed: "being accessed by other users".)
pub fn stop_requested() -> bool {
    // SAFETY: a sig_atomic_t written by the signal handler, read volatile.
    unsafe { (&raw const pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

/// The current time (PostgreSQL's clock, µs since 2000-01-01).
pub fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// `f` in a transaction of its own that waits at most 100 ms for a lock; an
/// ERROR (the extension being dropped, a lock not granted) is logged at
/// DEBUG1 and gives None: it is tried again at the next occasion, and never
/// ends the worker. The short wait makes the worker, not a DBA's DDL, give
/// way: reading the engine's tables one after the other while DROP EXTENSION
/// took them one by one, it deadlocked with the DROP, and the deadlock
/// detector cancelled the DROP (seen in CI, hostile_install.sql on 16).
pub fn guarded<T>(what: &str, f: impl FnOnce() -> std::result::Result<T, pgrx::spi::SpiError>) -> Option<T> {
    let f = || {
        // SAFETY: what `SET LOCAL lock_timeout = '100ms'` executes, without
        // a statement to parse and plan: inside the transaction just begun,
        // a NUL-terminated name and value; the setting goes at its end
        // (also when f raises, with the subtransaction's abort).
        unsafe {
            pg_sys::set_config_option(
                c"lock_timeout".as_ptr(),
                c"100ms".as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_LOCAL,
                true,
                0,
                false,
            );
        }
        f()
    };
    match crate::error::in_worker_transaction(|| Ok(crate::subxact::run(f))) {
        Ok(v) => Some(v),
        Err(e) => {
            debug1!("automation_ext scheduler: could not {what}: {}", crate::subxact::message(&e));
            None
        }
    }
}

/// What a visit of the per-database worker knows and passes between its
/// duties.
#[derive(Debug)]
pub struct Visit {
    /// the database's oid
    pub dboid: u32,
    /// the first turn of a visit that sweeps (`visit::sweeps`: the first
    /// since the server started, then once a minute): what no commit
    /// announced (a restart, a restore) is looked at
    /// (a duty that could not do its part calls `shared::sweep_again`)
    pub first: bool,
    /// a step worker of this database ended since the last turn
    pub step_worker_ended: bool,
    /// (0.8.0) a due fire found no free run slot at this turn: the slots
    /// are held by runs that other databases' workers must record
    pub blocked: bool,
    /// (issue 34) its work comes often: the last fire it started was
    /// followed by its job's next within `visit::RESIDENT_US` (a 1-second
    /// job); such a database's worker may stay as a resident
    pub frequent: bool,
    /// (issue 34) the worker stayed as a resident at its last turn (shown in
    /// its activity line: pg_stat_activity, scheduler_status())
    pub resident: bool,
}

/// What a duty's turn says about the visit.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// leave: this database's extension is gone, or too old for this
    /// library (`crate::catalog::extension_ready`)
    ExtensionGone,
}

/// One duty of the per-database worker, as the process layer drives it:
/// "is there work for me" and "do a slice of it" are one call (`turn`),
/// made at every turn of the worker's loop in the order lib.rs gives.
pub trait Duty {
    /// At the start of a visit, in a transaction: recover what a crash left
    /// (an error ends the worker; the launcher starts another).
    fn begin(&mut self, _visit: &mut Visit) -> crate::error::Result<()> {
        Ok(())
    }
    /// At the start of a visit: `due` is what this duty's `next_due` said
    /// when the database's last worker left (None: nothing, or not known) —
    /// a visit that does not sweep (`Visit::first`) learns from it what
    /// the last one knew.
    fn resume(&mut self, _due: Option<i64>) {}
    /// A slice of work, if there is some now (each duty runs its own
    /// transactions, and keeps its slices short: fires are not held up).
    fn turn(&mut self, visit: &mut Visit) -> Flow;
    /// When it next needs a turn without being woken (None: only when woken).
    fn next_due(&mut self) -> Option<i64>;
    /// Whether it keeps the worker in its database although nothing is due
    /// (the recorder under a stream of completions).
    fn lingers(&self) -> bool {
        false
    }
    /// The configuration was reloaded (SIGHUP).
    fn reload_config(&mut self) {}
}

/// What the process layer is wired to (lib.rs): the duties of a database's
/// worker, and what a step worker serves.
pub struct Wiring {
    /// the duties of the worker of database `dboid`, in turn order
    pub duties: fn(dboid: u32) -> Vec<Box<dyn Duty>>,
    /// serve the SQL steps of the role a step worker is connected as (the
    /// run segment's handle); how many it ran
    pub serve_steps: fn(dsm: u32) -> crate::error::Result<u64>,
}

static WIRING: std::sync::OnceLock<Wiring> = std::sync::OnceLock::new();

fn wiring() -> &'static Wiring {
    WIRING.get().expect("_PG_init wires the process layer before any worker starts")
}

/// From `_PG_init`: the wiring, the hooks and the launcher (when preloading).
pub fn init(wiring: Wiring) {
    let _ = WIRING.set(wiring);
    if crate::settings::preloaded() {
        shared::init_shared_memory();
        hooks::install();
    }
    launcher::register();
}
