//! SQL steps (0.7.0): steps of a workflow definition with `"sql"`, run by
//! the extension's own background workers as the role that started the
//! workflow.
//!
//! - A SQL step's run has no queue (`step_runs.queue IS NULL`). The
//!   transaction that makes one (run_workflow, a completion, a retry) calls
//!   `wake_step_workers()`; at its commit the database's scheduler is told
//!   (`shared::steps_ready`).
//! - The database's worker (`dispatch.rs`, the SQL steps duty) asks for up
//!   to `automation.step_workers` step workers per role that has steps
//!   ready, through the same run slots, cluster-wide budget and resident
//!   workers as job runs (worker/runner.rs); a step worker is a run worker
//!   whose run is "serve the SQL steps of this role" (`STEP_POOL`).
//! - A step worker (`serve`) claims one step at a time
//!   (`automation.claim_sql_step`), runs its SQL at top level like a job's
//!   command (so COMMIT, VACUUM and CREATE INDEX CONCURRENTLY work), with
//!   the step's timeout as statement_timeout, and records the outcome
//!   (`automation.finish_sql_step`), which makes the next steps' runs in the
//!   same transaction: the worker claims the next step of the execution
//!   straight away, without waiting for a scheduler. When no step of its
//!   role has been ready for a moment, it stops serving (and stays a moment
//!   longer as a resident worker, in case a job or more steps come).
//! - Stopping: when an execution ends while one of its SQL steps runs
//!   (cancel_workflow, another step's failure, the workflow timeout),
//!   `stop_sql_step(id)` cancels that worker's query at commit
//!   (`shared::stop_step`).
//! - A worker that dies mid-step (SIGKILL, a crash, pg_terminate_backend)
//!   leaves its step running; the SQL steps duty's recovery fails
//!   that attempt (retried while attempts remain) once the worker's process
//!   is gone.

use std::cell::{Cell, RefCell};
use std::ffi::{c_void, CString};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::error::{Error, OrRaise, Result};
use crate::toplevel::{self, FirstValue};
use crate::worker::shared;

/// A step worker stops serving after this long without a ready step of its
/// role (it then stays as a resident run worker for LINGER_MS more).
const IDLE_MS: i64 = 250;
/// How often an idle step worker looks for a step without being woken
/// (steps whose retry backoff ends, a wake-up lost to a race).
const POLL_MS: i64 = 50;

thread_local! {
    /// This transaction made SQL step runs: tell the scheduler at commit.
    static STEPS: Cell<bool> = const { Cell::new(false) };
    /// In a step worker: ready SQL step runs this transaction made (the
    /// worker takes one of them itself, at once).
    static READY_MADE: Cell<i64> = const { Cell::new(0) };
    /// This process is a step worker.
    static STEP_WORKER: Cell<bool> = const { Cell::new(false) };
    /// SQL steps (and the roles they run as) whose worker this transaction
    /// stops at commit.
    static STOP: RefCell<Vec<(i64, pg_sys::Oid)>> = const { RefCell::new(Vec::new()) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

fn register_callback() {
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: registers a plain function, for the life of the backend,
        // that PostgreSQL calls at every transaction end.
        unsafe { pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut()) };
        CALLBACK_REGISTERED.set(true);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    let committed = match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => true,
        pg_sys::XactEvent::XACT_EVENT_ABORT => false,
        _ => return,
    };
    let made = READY_MADE.replace(0);
    if (STEPS.replace(false) || made > 1) && committed {
        // SAFETY: the database this backend is connected to.
        shared::steps_ready(unsafe { pg_sys::MyDatabaseId });
    }
    let stop = STOP.take();
    if committed {
        // SAFETY: the database this backend is connected to.
        let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
        for (id, role) in stop {
            shared::stop_step(database, role.to_u32(), id);
        }
    }
}

/// Can SQL steps run in this cluster? (The library is preloaded: the
/// workers exist. `automation.enabled = off` only pauses them.)
pub fn available() -> bool {
    crate::settings::preloaded()
}

#[pg_schema]
mod automation {
    use super::*;

    /// Internal: does this cluster have step workers (the library is preloaded)?
    #[pg_extern(volatile, parallel_safe, sql = false)]
    fn step_workers_available() -> bool {
        available()
    }

    /// Internal: this transaction made SQL step runs (`ready_now` of them
    /// ready at once; 0: for later); the scheduler of this database hands
    /// them to step workers when it commits. In a step worker, whose next
    /// claim (in this transaction) takes one of them, only when it made
    /// more than one, or runs for later.
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn wake_step_workers(ready_now: i32) {
        if crate::settings::preloaded() {
            if STEP_WORKER.get() && ready_now > 0 {
                READY_MADE.set(READY_MADE.get() + i64::from(ready_now));
            } else {
                STEPS.set(true);
            }
            register_callback();
        }
    }

    /// Internal: when this transaction commits, cancel the query of the
    /// worker of this database running SQL step run `id` as `role` (if one
    /// runs it then).
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn stop_sql_step(id: i64, role: pg_sys::Oid) {
        if crate::settings::preloaded() {
            STOP.with_borrow_mut(|v| v.push((id, role)));
            register_callback();
        }
    }

    /// Internal (0.8.0): this transaction set a deadline (a workflow's
    /// timeout, the lease of a step with a timeout): the scheduler of this
    /// database looks again when it commits (it wakes at the earliest
    /// deadline). True, so that it can stand in a WHERE clause.
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn note_deadline() -> bool {
        if crate::settings::preloaded() {
            STEPS.set(true);
            register_callback();
        }
        true
    }

    /// Internal (0.8.0): is this session a step worker serving SQL steps?
    /// Only step workers claim and record SQL steps.
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn in_step_worker() -> bool {
        STEP_WORKER.get()
    }
}

/// A step claimed by this worker.
struct Claimed {
    id: i64,
    execution: String,
    sql: Option<String>,
    timeout_ms: i32,
}

/// `f` in a transaction of its own; an ERROR comes back as the error value,
/// the transaction aborted (the worker goes on).
fn catching<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let f = std::panic::AssertUnwindSafe(f);
    PgTryBuilder::new(move || Ok(BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| f().or_raise()))))
        .catch_others(|e| {
            // SAFETY: a background worker, after an ERROR inside its own
            // transaction: what PostgresMain does to recover.
            unsafe { pg_sys::AbortOutOfAnyTransaction() };
            Err(Error::caught(&e))
        })
        .execute()
}

/// Claim a ready SQL step of this worker's role (of `after` first: the
/// execution whose step just ended), in the current transaction.
fn claim_in_transaction(worker: &str, after: Option<&str>) -> Result<Option<Claimed>> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT id, execution_id::text, sql, timeout_ms FROM automation.claim_sql_step($1, $2::text::uuid)",
            None,
            &[worker.into(), after.into()],
        )?;
        let mut found = None;
        for row in rows {
            found = Some(Claimed {
                id: row.get::<i64>(1)?.unwrap_or(0),
                execution: row.get::<String>(2)?.unwrap_or_default(),
                sql: row.get::<String>(3)?,
                timeout_ms: row.get::<i32>(4)?.unwrap_or(0),
            });
        }
        Ok::<_, pgrx::spi::SpiError>(found)
    })
    .map_err(Error::from)
}

fn claim(worker: &str) -> Result<Option<Claimed>> {
    catching(|| claim_in_transaction(worker, None))
}

/// Record a step's outcome — its output (the first column of the first row
/// of its last statement, as jsonb) or its error — and, in the same
/// transaction, claim the next step (of the same execution first: a
/// workflow's next SQL step starts without a round trip through anyone).
fn finish_and_claim(
    step: &Claimed,
    worker: &str,
    outcome: &std::result::Result<Option<FirstValue>, Error>,
    claim_next: bool,
) -> Result<Option<Claimed>> {
    let (text, type_oid, error) = match outcome {
        Ok(Some(v)) => (v.text.clone(), Some(i64::from(v.type_oid.to_u32())), None),
        Ok(None) => (None, None, None),
        Err(e) => (None, None, Some(e)),
    };
    let message = error.map(|e| match &e.detail {
        Some(d) => format!("{} (detail: {d})", e.message),
        None => e.message.clone(),
    });
    let sqlstate = error.map(Error::sqlstate);
    catching(|| {
        Spi::run_with_args(
            "SELECT automation.finish_sql_step($1, $2, automation.step_output($3, $4::oid),
                    CASE WHEN $5::text IS NOT NULL
                         THEN pg_catalog.jsonb_build_object('message', $5::text, 'sqlstate', $6::text) END)",
            &[step.id.into(), worker.into(), text.into(), type_oid.into(), message.into(), sqlstate.into()],
        )?;
        if claim_next {
            claim_in_transaction(worker, Some(&step.execution))
        } else {
            Ok(None)
        }
    })
}

/// Serve the SQL steps of this worker's role (the run of a STEP_POOL slot):
/// claim, run, record, until none has been ready for IDLE_MS. Returns how
/// many steps ran, or the error that stopped the worker (which then exits:
/// a step it could not record is found by the SQL steps duty once its
/// process is gone).
pub fn serve(dsm: u32) -> Result<u64> {
    /// Marks this process a step worker while it serves (a job it runs
    /// afterwards, as a resident worker, wakes the scheduler as any backend).
    struct Serving;
    impl Drop for Serving {
        fn drop(&mut self) {
            STEP_WORKER.set(false);
        }
    }
    STEP_WORKER.set(true);
    let _serving = Serving;
    reload_config_on_sighup();
    // a reload signalled while this worker was starting, before its handler
    // was in place, was ignored: read the configuration once now, so that an
    // `automation.enabled = off` made meanwhile is not missed (the suspected
    // cause of a step worker seen running steps 10 s after the schedulers
    // stopped, once, on 18)
    // SAFETY: sets the flag SIGHUP's handler sets; reload_if_asked clears it.
    unsafe { pg_sys::ConfigReloadPending = 1 };
    reload_if_asked();
    // SAFETY: reading this process's pid.
    let worker = format!("step worker {}", unsafe { pg_sys::MyProcPid });
    let mut ran = 0u64;
    let now = || {
        // SAFETY: reads the clock.
        unsafe { pg_sys::GetCurrentTimestamp() }
    };
    let mut idle_since = now();
    let mut next: Option<Claimed> = None;
    loop {
        pgrx::check_for_interrupts!();
        reload_if_asked();
        // automation.enabled = off stops step workers as it stops the
        // schedulers (a step already claimed is run and recorded first)
        if next.is_none() && !crate::settings::SCHEDULER_ENABLED.get() {
            return Ok(ran);
        }
        let step = match next.take() {
            Some(step) => step,
            None => match claim(&worker)? {
                Some(step) => step,
                None => {
                    if now() - idle_since >= IDLE_MS * 1000 {
                        return Ok(ran);
                    }
                    // SAFETY: waits on this process's latch (set by the
                    // scheduler when steps are ready, or by SIGTERM's
                    // handler); the interrupt check ends the process on
                    // SIGTERM.
                    unsafe {
                        pg_sys::WaitLatch(
                            pg_sys::MyLatch,
                            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                            POLL_MS,
                            pg_sys::PG_WAIT_EXTENSION,
                        );
                        pg_sys::ResetLatch(pg_sys::MyLatch);
                    }
                    continue;
                }
            },
        };
        shared::running_step(dsm, step.id);
        let outcome = match &step.sql {
            Some(sql) => run_step(step.id, sql, step.timeout_ms),
            None => Err(Error::new(
                PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "this step run has no SQL in its execution's definition",
            )),
        };
        shared::running_step(dsm, 0);
        if let Err(e) = &outcome {
            // (0.8.0) a SQL step's failure reaches the server log, as a
            // job's does (its record is in step_runs and, when it fails the
            // execution, automation.errors)
            log!(
                "automation_ext step run {} (execution {}): {} [SQLSTATE {}]",
                step.id,
                step.execution,
                e.message,
                e.sqlstate()
            );
        }
        // the session as the role connected, without the step's settings,
        // temporary tables, SET ROLE... before recording as that role
        if let Err(e) = toplevel::run_catching(toplevel::SESSION_RESET) {
            finish_and_claim(&step, &worker, &Err(e.clone()), false)?;
            return Err(e);
        }
        reload_if_asked();
        next = finish_and_claim(&step, &worker, &outcome, crate::settings::SCHEDULER_ENABLED.get())?;
        ran += 1;
        idle_since = now();
    }
}

/// Reload the configuration on SIGHUP (at the next step), as backends do:
/// `automation.enabled = off` must reach a step worker that is busy.
fn reload_config_on_sighup() {
    // pgrx's `pg_sys::SignalHandlerForConfigReload` is a Rust wrapper; a
    // signal handler must be the C symbol itself (declared here with the
    // bindings' signature, checked by the assignment below).
    extern "C-unwind" {
        #[link_name = "SignalHandlerForConfigReload"]
        fn postgres_reload_handler(postgres_signal_arg: std::ffi::c_int);
    }
    let _same_signature: unsafe fn(std::ffi::c_int) = pg_sys::SignalHandlerForConfigReload;
    // SAFETY: installs PostgreSQL's own handler, which only sets
    // ConfigReloadPending and this process's latch.
    unsafe { crate::compat::set_signal_handler(pg_sys::SIGHUP as std::ffi::c_int, Some(postgres_reload_handler)) };
}

/// Reload the configuration if SIGHUP asked for it.
fn reload_if_asked() {
    // SAFETY: reads and clears the flag SIGHUP's handler sets; reloading
    // the configuration outside a transaction is what PostgreSQL's own
    // processes do.
    unsafe {
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// Run a step's SQL at top level with its timeout and the step's id in
/// `automation.step_run` (what `automation.step_input()` reads).
fn run_step(id: i64, sql: &str, timeout_ms: i32) -> std::result::Result<Option<FirstValue>, Error> {
    let run = CString::new(id.to_string()).unwrap_or_default();
    let timeout = CString::new(timeout_ms.max(0).to_string()).unwrap_or_default();
    // SAFETY: GUC assignments outside a transaction in a connected worker,
    // as run_one does; PostgreSQL copies the values.
    unsafe {
        pg_sys::SetConfigOption(
            c"automation.step_run".as_ptr(),
            run.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
        pg_sys::SetConfigOption(
            c"statement_timeout".as_ptr(),
            timeout.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    toplevel::run_catching_first_value(sql)
}
