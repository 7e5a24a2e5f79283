//! The scheduler of one database: a dynamic background worker started by the
//! launcher while the database's jobs are due (it leaves when the next fire
//! is more than a moment away, writing that time to shared memory). It keeps
//! the active jobs in memory with a min-heap of their next fire times (a
//! wake-up costs O(log n) in the number of jobs, not O(n)), reloads them when
//! automation.job changes (a relcache invalidation the table's trigger sends
//! on commit), asks for each due run through a shared run slot (starting its
//! worker at once when the cluster-wide budget allows, else the launcher
//! does), and records every run in automation.job_run_details.
//!
//! Fires are aligned to the schedule: a job's next fire is computed from the
//! time it was due, not from when it ran, and a new scheduler starts from the
//! next fire the job table keeps; fires missed while the server was down, or
//! while the job waited for a free slot past its next fire, are coalesced
//! into one run.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::cron;
use super::plan::{self, Crowd, Loaded, Overlap, Policy, Report, RunStatus, Started, Timetable};
use super::runner::{self, RunSegment};
use super::shared::{self, Extension, RunSlot, RunState, SHARED};
use crate::civil::pg_zone::PgZone;
use crate::error::{in_worker_transaction, Context, Error, Result};
use crate::settings::{self, LogRuns};

static JOBS_DIRTY: AtomicBool = AtomicBool::new(true);
static JOB_RELID: AtomicU32 = AtomicU32::new(0);

/// How often the job table's username and database columns are brought up
/// to date with renamed roles and a renamed (restored, cloned) database.
const NAMES_EVERY: Duration = Duration::from_secs(10);

/// What a run needs to know of its job (its schedule and next fire are in
/// the timetable).
struct Job {
    name: Option<String>,
    command: String,
    /// the current name of the job's database (this one's for a local job)
    database: String,
    /// the job belongs to this database, whatever its name
    local: bool,
    username: String,
    /// the role itself; `username` is its name when the jobs were loaded
    owner: pg_sys::Oid,
    timeout_ms: i32,
    /// which of its ended runs job_run_details keeps (None: automation.log_runs)
    log_runs: Option<LogRuns>,
    /// at most this many of its runs are kept
    keep_runs: Option<i32>,
    /// its runs' place among runs waiting for a worker
    priority: i32,
}

impl Job {
    fn log_runs(&self) -> LogRuns {
        self.log_runs.unwrap_or_else(|| settings::LOG_RUNS.get())
    }
}

/// A row of automation.job as the scheduler reads it.
struct JobRow {
    jobid: Option<i64>,
    name: Option<String>,
    schedule: Option<String>,
    command: Option<String>,
    database: Option<String>,
    username: Option<String>,
    timeout_ms: Option<i32>,
    owner: Option<pg_sys::Oid>,
    local: Option<bool>,
    stored: Option<i64>,
    timezone: Option<String>,
    retries: Option<i32>,
    retry_backoff_ms: Option<i64>,
    overlap: Option<String>,
    priority: Option<i32>,
    log_runs: Option<String>,
    keep_runs: Option<i32>,
    next_attempt: Option<i32>,
}

struct Scheduler {
    dboid: u32,
    jobs: HashMap<i64, Job>,
    timetable: Timetable,
    /// runs of this database recorded as running (by this process)
    marked: HashSet<i64>,
    zone: PgZone,
    activity: String,
    /// when this process last looked at the shared names_checked_at (a
    /// cheap guard: the shared time is what counts across visits)
    names_checked: Option<std::time::Instant>,
    /// (0.7.0) when a SQL step waiting out its retry backoff becomes ready
    steps_due: Option<i64>,
    /// (0.8.0) the earliest deadline of a running workflow or lease of a
    /// running step: expire_steps() then, not at the minutely sweep
    deadline_due: Option<i64>,
    /// a step worker of this database ended since the last dispatch
    step_worker_ended: bool,
    /// (0.8.0) a due fire found no free run slot at the last tick
    blocked: bool,
}

enum Flow {
    Continue,
    ExtensionGone,
}

/// Relcache invalidation callback: a change to automation.job (or a reset of
/// every relation, InvalidOid) marks the jobs for reloading.
///
/// # Safety
/// Called by PostgreSQL's invalidation processing with plain values; it only
/// touches atomics.
#[pg_guard]
unsafe extern "C-unwind" fn job_relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    let job = JOB_RELID.load(Ordering::Relaxed);
    if relid == pg_sys::InvalidOid || relid.to_u32() == job {
        JOBS_DIRTY.store(true, Ordering::Relaxed);
    }
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// The scheduler's times come from the clock and from schedules' next fires
/// (at most nine years after it): always within PostgreSQL's range.
fn tstz(ts: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(ts).expect("scheduler times are within PostgreSQL's timestamp range")
}

/// Is the extension installed here, at a version whose job table this
/// library reads (0.6.0's, with `next_attempt` and the other per-job
/// options)? Older versions had other columns or none: such a database
/// waits, unscheduled, for its ALTER EXTENSION automation_ext UPDATE (whose
/// script wakes the launcher).
fn extension_installed() -> bool {
    // SAFETY: syscache lookups inside the caller's transaction; the
    // attribute tuple is read as pg_attribute's row struct and released.
    unsafe {
        if pg_sys::get_extension_oid(c"automation_ext".as_ptr(), true) == pg_sys::InvalidOid {
            return false;
        }
        let nsp = pg_sys::get_namespace_oid(c"automation".as_ptr(), true);
        if nsp == pg_sys::InvalidOid
            || pg_sys::get_relname_relid(c"job_run_details".as_ptr(), nsp) == pg_sys::InvalidOid
        {
            return false;
        }
        let job = pg_sys::get_relname_relid(c"job".as_ptr(), nsp);
        // 0.6.0's job columns and 0.8.0's engine (this library uses them:
        // an older schema would make every load, recording or dispatch
        // fail, and the scheduler exit, again and again). 0.8.0 is marked
        // by workflow_runs.owner (executions owned by oid).
        let workflows = pg_sys::get_namespace_oid(c"automation_workflows".as_ptr(), true);
        let runs = if workflows == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(c"workflow_runs".as_ptr(), workflows)
        };
        let owned = runs != pg_sys::InvalidOid
            && pg_sys::get_attnum(runs, c"owner".as_ptr()) != pg_sys::InvalidAttrNumber as i16;
        let ready = job != pg_sys::InvalidOid
            && pg_sys::get_attnum(job, c"next_attempt".as_ptr()) != pg_sys::InvalidAttrNumber as i16
            && owned;
        if !ready {
            debug1!("automation_ext scheduler: this database has an older version of the extension; its jobs wait for ALTER EXTENSION automation_ext UPDATE");
        }
        ready
    }
}

/// Entry point (bgw_main_arg: the database oid; bgw_extra: how many ms to
/// wait for the extension to appear, for a CREATE EXTENSION not yet committed).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn automation_scheduler_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    let patience_ms: i64 = BackgroundWorker::get_extra().parse().unwrap_or(0);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    // (The scheduler's commits stay synchronous: with them asynchronous, a
    // crash right after a run started could lose its row, and recovery would
    // not know the run was ever in flight.)
    // SAFETY: reports this process's application name (copied by PostgreSQL).
    unsafe { pg_sys::pgstat_report_appname(c"automation_ext scheduler".as_ptr()) };

    // Wait (briefly) for the extension.
    let deadline = now() + patience_ms * 1000;
    loop {
        if BackgroundWorker::transaction(extension_installed) {
            break;
        }
        if now() >= deadline || BackgroundWorker::sigterm_received() {
            shared::report_extension(dboid, Extension::Missing);
            return;
        }
        BackgroundWorker::wait_latch(Some(Duration::from_millis(250)));
    }
    shared::report_extension(dboid, Extension::Installed);

    let zone = PgZone::from_setting().unwrap_or_else(|problem| {
        warning!("{}; reading schedules in GMT", problem.message);
        PgZone::gmt()
    });
    let mut scheduler = Scheduler {
        dboid: dboid.to_u32(),
        jobs: HashMap::new(),
        timetable: Timetable::default(),
        marked: HashSet::new(),
        zone,
        activity: String::new(),
        names_checked: None,
        steps_due: None,
        deadline_due: None,
        step_worker_ended: false,
        blocked: false,
    };
    // SAFETY: reading this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    if let Some(slot) = SHARED.exclusive().slot_mut(dboid.to_u32()) {
        slot.scheduler_pid = me;
        slot.waiting_since = 0;
    }
    // SAFETY: registers a callback PostgreSQL calls while processing
    // invalidation messages in this process; it only stores to atomics.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(job_relcache_callback), pg_sys::Datum::from(0)) };
    // the edge: an error here is raised as an ERROR (the worker exits; the
    // launcher starts another when the database's jobs are due)
    in_worker_transaction(|| scheduler.recover());
    debug1!("automation_ext scheduler started");
    let mut recorded_at: Option<std::time::Instant> = None;

    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: what PostgreSQL's own processes do on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            match PgZone::from_setting() {
                Ok(zone) => scheduler.zone = zone,
                Err(problem) => warning!("{}; keeping the previous time zone", problem.message),
            }
            JOBS_DIRTY.store(true, Ordering::Relaxed);
        }
        if !settings::SCHEDULER_ENABLED.get() {
            log!("automation_ext scheduler stopping: automation.enabled is off");
            break;
        }
        // SAFETY: reads shared recovery state; callable in any process.
        if unsafe { pg_sys::RecoveryInProgress() } {
            break;
        }
        let flow = in_worker_transaction(|| scheduler.tick());
        if let Flow::ExtensionGone = flow {
            shared::report_extension(dboid, Extension::Missing);
            log!("automation_ext scheduler stopping: the extension was dropped");
            break;
        }
        // finished executions to record: at the first tick of a visit (left
        // from before a restart, or logged while no scheduler ran), and
        // whenever a completing transaction commits
        if let Some(last) = recorded_at {
            // at most one recording per RECORD_EVERY: under a stream of
            // completions each one moves more rows for the same overhead
            // (nobody signals us again before we take the request)
            let since = last.elapsed();
            if since < RECORD_EVERY && shared::executions_logged_pending(scheduler.dboid) {
                std::thread::sleep(RECORD_EVERY - since);
            }
        }
        // SQL steps of workflows (0.7.0): when a commit made some, a step
        // worker ended, a retry's backoff ended, and at the first tick of a
        // visit (workers lost in a crash first)
        let first_tick = recorded_at.is_none();
        if first_tick || scheduler.step_worker_ended {
            recover_sql_steps();
        }
        if shared::take_steps_ready(scheduler.dboid)
            || first_tick
            || std::mem::take(&mut scheduler.step_worker_ended)
            || scheduler.steps_due.is_some_and(|t| t <= now())
        {
            scheduler.steps_due = dispatch_sql_steps(scheduler.dboid);
            scheduler.deadline_due = next_deadline();
        }
        // (0.8.0) timeouts at their time: a workflow's, a step's
        if scheduler.deadline_due.is_some_and(|t| t <= now()) {
            expire_deadlines();
            scheduler.deadline_due = next_deadline();
        }
        if shared::take_executions_logged(scheduler.dboid) || recorded_at.is_none() {
            record_executions(scheduler.dboid);
            // the inbox when a commit filled it, and at the first tick of a
            // visit (left from before a restart, a restore, or a commit while
            // no scheduler could be told)
            if shared::take_inbox_filled(scheduler.dboid) || recorded_at.is_none() {
                drain_trigger_inbox(scheduler.dboid);
            }
            recorded_at = Some(std::time::Instant::now());
        }
        let next = earliest(
            earliest(scheduler.timetable.next().map(|(ts, _)| ts), scheduler.steps_due),
            scheduler.deadline_due,
        );
        let crowd = scheduler.crowd();
        let recording = recorded_at.is_some_and(|t| t.elapsed() < RECORDER_LINGER) && !crowd.others_wait;
        if !plan::stays(next, now(), crowd) && !recording {
            break;
        }
        // a fire still due after the tick waits for a slot: the launcher sets
        // our latch when a run of ours ends; no busy loop meanwhile
        let nap = plan::nap(next, now());
        if nap.latch_ms > 0 && !BackgroundWorker::wait_latch(Some(Duration::from_millis(nap.latch_ms))) {
            break; // postmaster died
        }
        if let Some(ts) = next {
            // the last fraction of a millisecond, without the latch
            let left = ts - now();
            if (1..1000).contains(&left) {
                std::thread::sleep(Duration::from_micros(left as u64));
            }
        }
    }
    // leaving: when this database needs a scheduler again (the launcher
    // starts one then; a change to its jobs wakes it sooner)
    let next = earliest(earliest(scheduler.timetable.next().map(|(ts, _)| ts), scheduler.steps_due), scheduler.deadline_due)
        .unwrap_or(0);
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
        if slot.scheduler_pid == me {
            slot.scheduler_pid = 0;
        }
        slot.next_due = next;
        slot.fires_waiting = 0;
        if slot.executions_logged {
            // logged after our last look: the launcher starts another
            slot.woken = true;
        }
    }
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When the engine next has a deadline to keep (a running workflow's
/// timeout, a running step's lease or timeout); None when there is none.
/// An error (the tables locked) means: look again in a second.
fn next_deadline() -> Option<i64> {
    match guarded("look for deadlines", || Spi::get_one::<TimestampWithTimeZone>("SELECT automation.next_deadline()")) {
        Some(found) => found.map(|t| t.into_inner()),
        None => Some(now() + 1_000_000),
    }
}

/// Executions past their workflow's timeout end as timeout (their running
/// SQL step cancelled), steps past their lease or timeout are retried or
/// failed: at the deadline, within a second.
fn expire_deadlines() {
    let expired = guarded("keep deadlines", || {
        Spi::run("SET LOCAL lock_timeout = '100ms'")?;
        Spi::get_one::<i32>("SELECT automation.expire_steps(NULL, 1000)")
    });
    if let Some(n) = expired.flatten().filter(|&n| n > 0) {
        debug1!("automation_ext scheduler: {n} step(s) or execution(s) timed out");
    }
}

/// SQL steps whose worker is gone (a crash, a restart, a terminated
/// worker) fail that attempt, and are retried while attempts remain.
fn recover_sql_steps() {
    let recovered = guarded("recover SQL steps", || {
        Spi::run("SET LOCAL lock_timeout = '100ms'")?;
        Spi::get_one::<i32>("SELECT automation.recover_sql_steps()")
    });
    if let Some(n) = recovered.flatten().filter(|&n| n > 0) {
        log!("automation_ext scheduler: {n} SQL step(s) whose worker was gone will be retried or failed");
    }
}

/// `f` in a transaction of its own; an ERROR (the extension being dropped,
/// a lock not granted) is logged at DEBUG1 and gives None: it is tried again
/// at the next occasion, and never ends the scheduler.
fn guarded<T>(what: &str, f: impl FnOnce() -> std::result::Result<T, pgrx::spi::SpiError>) -> Option<T> {
    match in_worker_transaction(|| Ok(crate::subxact::run(f))) {
        Ok(v) => Some(v),
        Err(e) => {
            debug1!("automation_ext scheduler: could not {what}: {}", crate::subxact::message(&e));
            None
        }
    }
}

/// Hand the ready SQL steps of this database to step workers: per role
/// that has some, up to `automation.step_workers` workers (the running ones
/// are woken; more are asked for as runs, which the cluster-wide budget
/// and the resident workers serve like job runs). Steps of a role that no
/// longer exists or may not log in fail. Returns when the next step
/// waiting out a retry backoff becomes ready.
fn dispatch_sql_steps(dboid: u32) -> Option<i64> {
    let waiting = guarded("look for SQL steps", || {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT role_name, role_oid, refusal, ready, next_visible FROM automation.sql_steps_waiting()",
                    None,
                    &[],
                )?
                .map(|r| {
                    Ok((
                        r.get::<String>(1)?.unwrap_or_default(),
                        r.get::<pg_sys::Oid>(2)?,
                        r.get::<String>(3)?,
                        r.get::<i64>(4)?.unwrap_or(0),
                        r.get::<TimestampWithTimeZone>(5)?,
                    ))
                })
                .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    });
    let Some(waiting) = waiting else {
        return Some(now() + 1_000_000); // again in a second
    };
    let mut next: Option<i64> = None;
    let workers = settings::STEP_WORKERS.get().max(1) as i64;
    for (role_name, role, refusal, ready, next_visible) in waiting {
        if let Some(ts) = next_visible {
            next = earliest(next, Some(ts.into_inner()));
        }
        if ready == 0 {
            continue;
        }
        let Some(role) = role else { continue };
        // a role that cannot run them (dropped, NOLOGIN, no CONNECT, no
        // longer a runner): its steps fail once, with the reason, instead of
        // a worker started (and failing) for them again and again
        if let Some(why) = refusal {
            let failed = guarded("refuse SQL steps", || {
                Spi::get_one_with_args::<i32>(
                    "SELECT automation.refuse_sql_steps($1, $2)",
                    &[role.into(), why.as_str().into()],
                )
            });
            if let Some(n) = failed.flatten().filter(|&n| n > 0) {
                log!("automation_ext scheduler: {n} SQL step(s) of role {role_name} failed: {why}");
            }
            continue;
        }
        // (0.8.0) a worker busy with a step (a long one) serves no other:
        // the ready steps want idle workers beside the busy ones, up to the
        // limit (0.7.0 counted busy workers too, so one step sleeping for
        // ten minutes held up every other step of its role)
        let (active, busy): (Vec<i32>, usize) = {
            let shared = SHARED.share();
            let mine: Vec<&RunSlot> = shared
                .runs
                .iter()
                .filter(|r| {
                    r.dboid == dboid
                        && r.role == role.to_u32()
                        && r.jobid == crate::engine::steps::STEP_POOL
                        && matches!(r.state, RunState::Requested | RunState::Started)
                })
                .collect();
            (mine.iter().map(|r| r.pid).collect(), mine.iter().filter(|r| r.step_id != 0).count())
        };
        let want = (ready as usize + busy).min(workers as usize);
        for &pid in &active {
            shared::signal(pid); // (0 while it starts: it looks anyway)
        }
        for _ in active.len()..want {
            // SAFETY: reading the database this worker is connected to.
            let database = unsafe { pg_sys::MyDatabaseId };
            let seg = RunSegment::create(crate::engine::steps::STEP_POOL, database, role, 0, 0, "");
            let Some(slot) = SHARED.exclusive().request_run(
                dboid,
                role.to_u32(),
                crate::engine::steps::STEP_POOL,
                seg.handle(),
                now(),
                0,
                now(),
            ) else {
                seg.release();
                break;
            };
            let started = start_now(slot);
            seg.detach();
            if !started {
                shared::signal_launcher();
            }
        }
    }
    next
}

/// Executions logged within this of the last recording keep a scheduler
/// that has no fire due (when no other database waits for one): under a
/// steady stream of completions it stays instead of starting again each time.
const RECORDER_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// The shortest time between two recordings.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// Executions recorded per transaction.
const RECORD_BATCH: i32 = 5000;
/// Recording stops for a tick after this, so that fires are not held up by
/// a large backlog (the rest is recorded at the next turn of the loop).
const RECORD_SLICE: std::time::Duration = std::time::Duration::from_millis(200);

/// Record the finished executions waiting in the log (src/queue.rs).
fn record_executions(dboid: u32) {
    let started = std::time::Instant::now();
    loop {
        let Some(moved) = in_worker_transaction(|| crate::queue::record(None, RECORD_BATCH, true)) else {
            // the tables are locked (DROP EXTENSION, TRUNCATE...): later
            shared::executions_logged(pg_sys::Oid::from(dboid));
            break;
        };
        if moved < i64::from(RECORD_BATCH) {
            break;
        }
        if started.elapsed() >= RECORD_SLICE {
            shared::executions_logged(pg_sys::Oid::from(dboid));
            break;
        }
    }
}

/// Slices of the trigger inbox (2,500 changed rows each) started per
/// transaction.
const DRAIN_BATCH: i32 = 2;

/// Start the executions that table triggers left in the trigger inbox
/// (sql/engine.sql), a few entries per transaction, for at most
/// RECORD_SLICE per tick (then later: fires are not held up). Each
/// transaction waits at most a moment for the inbox's lock: a DBA's DROP
/// EXTENSION or TRUNCATE goes first, and the inbox is drained later.
fn drain_trigger_inbox(dboid: u32) {
    let started = std::time::Instant::now();
    loop {
        // None: empty; Some(true): executions started; Some(false): entries
        // left that this pass could not start (another drainer holds them,
        // or they failed and went to automation.errors)
        let outcome = in_worker_transaction(|| {
            Ok(crate::subxact::run(|| {
                Spi::run("SET LOCAL lock_timeout = '100ms'")?;
                let waiting = Spi::get_one::<bool>("SELECT EXISTS (SELECT FROM automation_workflows.trigger_inbox)")?
                    .unwrap_or(false);
                if !waiting {
                    return Ok::<_, pgrx::spi::SpiError>(None);
                }
                let started =
                    Spi::get_one_with_args::<i64>("SELECT automation.drain_trigger_inbox($1)", &[DRAIN_BATCH.into()])?
                        .unwrap_or(0);
                Ok(Some(started > 0))
            }))
        });
        match outcome {
            Ok(None) => break,
            Ok(Some(true)) if started.elapsed() < RECORD_SLICE => continue,
            Ok(Some(_)) => {
                // more, at the next turn of the loop (or after the other drainer)
                shared::inbox_filled(pg_sys::Oid::from(dboid));
                break;
            }
            Err(e) => {
                debug1!("automation_ext scheduler: the trigger inbox waits: {}", crate::subxact::message(&e));
                shared::inbox_filled(pg_sys::Oid::from(dboid));
                break;
            }
        }
    }
}

impl Scheduler {
    /// This database's runs in the shared run slots (index, slot).
    fn in_flight(&self) -> Vec<(usize, RunSlot)> {
        let shared = SHARED.share();
        shared
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state != RunState::Free && r.dboid == self.dboid)
            .map(|(i, r)| (i, *r))
            .collect()
    }

    /// What `plan::stays` needs to know of the cluster.
    fn crowd(&self) -> Crowd {
        let (others_wait, crowded) = {
            let shared = SHARED.share();
            let installed = shared.dbs.iter().filter(|d| d.dboid != 0 && d.extension == Extension::Installed).count();
            (
                shared.dbs.iter().any(|d| d.dboid != 0 && d.dboid != self.dboid && d.waiting_since != 0),
                installed > shared.scheduler_workers as usize,
            )
        };
        let last_request = self.in_flight().iter().map(|(_, r)| r.requested_at).max();
        Crowd { others_wait, crowded, last_request, blocked: self.blocked }
    }

    /// Runs left in flight that no run slot follows any more (the server
    /// restarted, and shared memory with it) are recorded as failed.
    fn recover(&mut self) -> Result<()> {
        let live: HashSet<i64> = self.in_flight().iter().map(|(_, r)| r.runid).collect();
        let in_flight = [RunStatus::Starting.as_str(), RunStatus::Running.as_str()];
        let recorded = Spi::connect(|client| {
            client
                .select(
                    "SELECT runid, status FROM automation.job_run_details WHERE status = ANY ($1)",
                    None,
                    &[in_flight.to_vec().into()],
                )?
                .map(|r| Ok((r.get::<i64>(1)?, r.get::<String>(2)?)))
                .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .context("could not read the runs left in flight")?;
        let recorded = recorded
            .into_iter()
            .map(|(runid, status)| match (runid, status.as_deref().and_then(RunStatus::parse)) {
                (Some(runid), Some(status)) => Ok((runid, status)),
                (runid, _) => Err(Error::internal(
                    "automation.job_run_details holds a run the scheduler cannot read",
                    format!("runid {runid:?}, status {status:?}"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let lost = plan::orphaned(&recorded, &live);
        if lost.is_empty() {
            return Ok(());
        }
        Spi::run_with_args(
            "UPDATE automation.job_run_details
                SET status = $2, end_time = pg_catalog.clock_timestamp(), return_message = $3
              WHERE runid = ANY ($1) AND status = ANY ($4)",
            &[
                lost.clone().into(),
                RunStatus::Failed.as_str().into(),
                plan::ORPHANED_MESSAGE.into(),
                RunStatus::Failed.predecessors().into(),
            ],
        )
        .context("could not record the runs left in flight")?;
        log!("automation_ext scheduler: marked {} run(s) left in flight as failed", lost.len());
        Ok(())
    }

    fn tick(&mut self) -> Result<Flow> {
        if !extension_installed() {
            return Ok(Flow::ExtensionGone);
        }
        if self.names_checked.is_none_or(|t| t.elapsed() >= NAMES_EVERY) {
            // once per NAMES_EVERY per database, also across short visits
            let due = {
                let mut shared = SHARED.exclusive();
                match shared.slot_mut(self.dboid) {
                    Some(slot) if now() - slot.names_checked_at >= NAMES_EVERY.as_micros() as i64 => {
                        slot.names_checked_at = now();
                        true
                    }
                    _ => false,
                }
            };
            if due {
                refresh_names()?;
            }
            self.names_checked = Some(std::time::Instant::now());
        }
        if JOBS_DIRTY.swap(false, Ordering::Relaxed) {
            self.reload()?;
        }
        self.reap()?;
        self.launch_due(now())?;
        self.report_activity();
        Ok(Flow::Continue)
    }

    fn reload(&mut self) -> Result<()> {
        let now = now();
        let rows = Spi::connect(|client| {
            let relid = client
                .select("SELECT 'automation.job'::pg_catalog.regclass::pg_catalog.oid", None, &[])?
                .first()
                .get_one::<pg_sys::Oid>()?;
            if let Some(relid) = relid {
                JOB_RELID.store(relid.to_u32(), Ordering::Relaxed);
            }
            client
                .select(
                    "SELECT jobid, jobname, schedule, command,
                            CASE WHEN local THEN pg_catalog.current_database()::text ELSE database END, username,
                            COALESCE(LEAST(pg_catalog.date_part('epoch', timeout) * 1000, 2147483647), 0)::int4,
                            owner, local,
                            (pg_catalog.date_part('epoch', next_run_at - '2000-01-01 00:00:00+00') * 1000000)::int8,
                            timezone, retries,
                            LEAST(pg_catalog.date_part('epoch', retry_backoff) * 1000, 86400000)::int8,
                            overlap, priority, log_runs, keep_runs, next_attempt
                       FROM automation.job WHERE active",
                    None,
                    &[],
                )?
                .map(|r| {
                    Ok(JobRow {
                        jobid: r.get(1)?,
                        name: r.get(2)?,
                        schedule: r.get(3)?,
                        command: r.get(4)?,
                        database: r.get(5)?,
                        username: r.get(6)?,
                        timeout_ms: r.get(7)?,
                        owner: r.get(8)?,
                        local: r.get(9)?,
                        stored: r.get(10)?,
                        timezone: r.get(11)?,
                        retries: r.get(12)?,
                        retry_backoff_ms: r.get(13)?,
                        overlap: r.get(14)?,
                        priority: r.get(15)?,
                        log_runs: r.get(16)?,
                        keep_runs: r.get(17)?,
                        next_attempt: r.get(18)?,
                    })
                })
                .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .context("could not load automation.job")?;

        // @reboot jobs run once per server start, not at every visit of a scheduler
        let first_boot = {
            let mut shared = SHARED.exclusive();
            match shared.slot_mut(self.dboid) {
                Some(slot) if !slot.booted => {
                    slot.booted = true;
                    true
                }
                _ => false,
            }
        };
        self.jobs.clear();
        let mut zones: HashMap<String, Rc<dyn crate::civil::Zone>> = HashMap::new();
        let mut timings = Vec::with_capacity(rows.len());
        for row in rows {
            // every column but the name, the stored next fire, the time zone,
            // log_runs and keep_runs is NOT NULL
            let JobRow {
                jobid: Some(jobid),
                name,
                schedule: Some(text),
                command: Some(command),
                database: Some(database),
                username: Some(username),
                timeout_ms: Some(timeout_ms),
                owner: Some(owner),
                local: Some(local),
                stored,
                timezone,
                retries: Some(retries),
                retry_backoff_ms: Some(retry_backoff_ms),
                overlap: Some(overlap),
                priority: Some(priority),
                log_runs,
                keep_runs,
                next_attempt: Some(next_attempt),
            } = row
            else {
                return Err(Error::internal("could not load automation.job", "a NOT NULL column read as NULL"));
            };
            let schedule = match cron::parse(&text) {
                Ok(s) => s,
                Err(e) => {
                    warning!("job {jobid} is not scheduled: {e}");
                    continue;
                }
            };
            // the table's CHECK constraints allow only what these read
            let Some(overlap) = Overlap::parse(&overlap) else {
                warning!("job {jobid} is not scheduled: overlap \"{overlap}\" is not skip, queue or parallel N");
                continue;
            };
            let zone = match &timezone {
                None => None,
                Some(name) => match zones.get(name) {
                    Some(z) => Some(Rc::clone(z)),
                    None => match CString::new(name.as_str()).ok().and_then(|c| PgZone::named(&c)) {
                        Some(z) => {
                            let z: Rc<dyn crate::civil::Zone> = Rc::new(z);
                            zones.insert(name.clone(), Rc::clone(&z));
                            Some(z)
                        }
                        None => {
                            warning!("job {jobid} is not scheduled: time zone \"{name}\" is not known");
                            continue;
                        }
                    },
                },
            };
            let policy = Policy {
                overlap,
                priority,
                retries: u32::try_from(retries).unwrap_or(0),
                retry_backoff_ms: retry_backoff_ms.max(1),
            };
            timings.push(Loaded {
                jobid,
                schedule_text: text,
                schedule,
                zone_name: timezone,
                zone,
                stored,
                stored_attempt: u32::try_from(next_attempt).unwrap_or(1),
                policy,
            });
            let log_runs = log_runs.as_deref().and_then(LogRuns::parse);
            self.jobs.insert(
                jobid,
                Job { name, command, database, local, username, owner, timeout_ms, log_runs, keep_runs, priority },
            );
        }
        let nexts = self.timetable.load(timings, first_boot, now, &self.zone);
        write_next_runs(&nexts)
    }

    fn launch_due(&mut self, now: i64) -> Result<()> {
        let max = settings::MAX_RUNNING_JOBS.get().max(1) as usize;
        let mut running: HashMap<i64, Vec<i64>> = HashMap::new();
        for (_, r) in self.in_flight() {
            if r.jobid != crate::engine::steps::STEP_POOL {
                running.entry(r.jobid).or_default().push(r.runid);
            }
        }
        let mut effects = Effects { dboid: self.dboid, jobs: &self.jobs };
        let launched = self.timetable.launch_due(now, &self.zone, &mut running, max, &mut effects)?;
        self.blocked = launched.no_run_slot;
        if let Some(slot) = SHARED.exclusive().slot_mut(self.dboid) {
            slot.fires_waiting = launched.waiting_for_slot as u32;
        }
        write_next_runs(&launched.advanced)
    }
    /// Record what the runs of this database did: running ones once, ended
    /// ones with their outcome (then their slot is free again).
    fn reap(&mut self) -> Result<()> {
        for (i, run) in self.in_flight() {
            if run.jobid == crate::engine::steps::STEP_POOL {
                // a step worker, not a job's run: nothing to record
                if run.state == RunState::Finished {
                    let seg = RunSegment::attach(run.dsm);
                    if let Some(seg) = &seg {
                        if seg.header().state.load(Ordering::Acquire) != runner::STATE_SUCCEEDED {
                            log!("automation_ext scheduler: a SQL step worker ended: {}", seg.message());
                        }
                    }
                    self.recorded(i, run, seg);
                    self.step_worker_ended = true;
                }
                continue;
            }
            match run.state {
                RunState::Started if run.pid > 0 && !self.marked.contains(&run.runid) => {
                    mark_running(run.runid, run.pid, now())?;
                    self.marked.insert(run.runid);
                }
                RunState::Finished => {
                    // (the segment is released once the run is recorded: if
                    // recording fails, this scheduler exits and the next one
                    // finds the outcome still there)
                    let (report, message, pid, start, end, seg) = match RunSegment::attach(run.dsm) {
                        Some(seg) => {
                            let header = seg.header();
                            let report = match header.state.load(Ordering::Acquire) {
                                runner::STATE_SUCCEEDED => Report::Succeeded,
                                runner::STATE_FAILED => Report::Failed,
                                _ => Report::None,
                            };
                            (
                                report,
                                seg.message(),
                                header.pid.load(Ordering::Relaxed),
                                header.start_time.load(Ordering::Relaxed),
                                header.end_time.load(Ordering::Relaxed),
                                Some(seg),
                            )
                        }
                        None => (Report::Lost, String::new(), run.pid, 0, 0, None),
                    };
                    let (status, default_message) = plan::outcome(report);
                    let message = default_message.map_or(message, str::to_owned);
                    let t = now();
                    let start = if start > 0 { start } else { t };
                    let end = if end > 0 { end } else { t };
                    if status == RunStatus::Succeeded {
                        // the common case, in one call
                        let job = self.jobs.get(&run.jobid);
                        let keep = job.map_or_else(|| settings::LOG_RUNS.get(), Job::log_runs).keeps(false);
                        let pid = (pid > 0).then_some(pid);
                        record_succeeded(run.runid, run.jobid, &message, pid, (start, end, start - run.due), keep)?;
                        if job.and_then(|j| j.keep_runs).is_some() {
                            keep_history(job, run.jobid, None, status)?;
                        }
                        self.recorded(i, run, seg);
                        continue;
                    }
                    let attempt = finish_run(run.runid, status, &message, (pid > 0).then_some(pid), start, end)?;
                    // a failed attempt with retries left: the job's next fire
                    // is its retry (when that comes before the next fire)
                    let retry = match (status, attempt) {
                        (RunStatus::Failed, Some(attempt)) => {
                            self.timetable.failed(run.jobid, u32::try_from(attempt).unwrap_or(0), end, jitter())
                        }
                        _ => None,
                    };
                    if let Some(next) = retry {
                        write_next_runs(&[next])?;
                    }
                    note_outcome(run.jobid, start, status, retry.is_none())?;
                    count_run(run.jobid, status, Some((end - start, start - run.due)))?;
                    keep_history(self.jobs.get(&run.jobid), run.jobid, Some(run.runid), status)?;
                    self.recorded(i, run, seg);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The run of slot `i` is recorded: its segment goes (only now: had
    /// recording failed, the next scheduler would find the outcome there),
    /// and the slot is free again unless it was reused meanwhile.
    fn recorded(&mut self, i: usize, run: RunSlot, seg: Option<RunSegment>) {
        if let Some(seg) = seg {
            seg.release();
        }
        self.marked.remove(&run.runid);
        let mut shared = SHARED.exclusive();
        if shared.runs[i].dsm == run.dsm && shared.runs[i].state == RunState::Finished {
            shared.free_run(i);
        }
    }

    /// What pg_stat_activity shows for this scheduler (and scheduler_status()).
    fn report_activity(&mut self) {
        let in_flight = self.in_flight().len();
        let text = match self.timetable.next() {
            Some((ts, id)) => {
                let name =
                    self.jobs.get(&id).and_then(|j| j.name.clone()).map(|n| format!(" ({n})")).unwrap_or_default();
                format!("{} jobs, {} running; next: job {id}{name} at {}", self.jobs.len(), in_flight, tstz(ts))
            }
            None => format!("{} jobs, {} running; nothing scheduled", self.jobs.len(), in_flight),
        };
        if text != self.activity {
            // job names cannot hold NUL (text), so neither can the report
            if let Ok(c) = CString::new(text.as_str()) {
                // SAFETY: PostgreSQL copies the string into shared memory.
                unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, c.as_ptr()) };
            }
            self.activity = text;
        }
    }
}

/// The scheduler's side of `plan::Launcher`: start runs, record skipped fires.
struct Effects<'a> {
    dboid: u32,
    jobs: &'a HashMap<i64, Job>,
}

impl plan::Launcher for Effects<'_> {
    type Error = Error;

    fn skip(&mut self, jobid: i64, due: i64, running: i64) -> Result<()> {
        let job = &self.jobs[&jobid];
        count_run(jobid, RunStatus::Skipped, None)?;
        if job.log_runs().keeps(false) {
            let message = format!("skipped: the previous run (runid {running}) was still running");
            let t = now();
            insert_run(jobid, job, RunStatus::Skipped, Some(&message), due, Some((t, t)), 1)?;
            keep_history(Some(job), jobid, None, RunStatus::Skipped)?;
        }
        Ok(())
    }

    fn start(&mut self, jobid: i64, due: i64, attempt: u32) -> Result<Started> {
        let job = &self.jobs[&jobid];
        // Who and where, checked here so that a refusal is a clear failed
        // run rather than a worker dying on connect.
        let problem = match run_target(job)? {
            Target { database: Some(db), role: Some(role), login: true, runner: true } => {
                if SHARED.share().runs.iter().all(|r| r.state != RunState::Free) {
                    return Ok(Started::NoSlot);
                }
                // the worker first (its start, about 5 ms, overlaps the
                // bookkeeping), then the run's row: 'starting' until it runs.
                // Beyond the cluster-wide budget the launcher starts it
                // later, oldest due first (start_time - scheduled_for is how
                // late it started)
                let seg = RunSegment::create(jobid, db, role, job.timeout_ms, due, &job.command);
                let Some(slot) = SHARED.exclusive().request_run(
                    self.dboid,
                    role.to_u32(),
                    jobid,
                    seg.handle(),
                    due,
                    job.priority,
                    now(),
                ) else {
                    // another scheduler took the last slot meanwhile
                    seg.release();
                    return Ok(Started::NoSlot);
                };
                let started = start_now(slot);
                let runid = insert_run(jobid, job, RunStatus::Starting, None, due, None, attempt)?;
                {
                    let mut shared = SHARED.exclusive();
                    if shared.runs[slot].dsm == seg.handle() && shared.runs[slot].state != RunState::Free {
                        shared.runs[slot].runid = runid;
                    }
                }
                seg.detach();
                if !started {
                    shared::signal_launcher();
                }
                return Ok(Started::Done);
            }
            // (0.8.0) what cannot change by itself deactivates the job, once,
            // with the reason (0.7.0 failed it at every fire: 423 failures
            // of a 5-second job whose owner lost LOGIN)
            Target { database: None, .. } => {
                let problem = format!(
                    "database \"{}\" does not exist or does not allow connections; the job is deactivated",
                    job.database
                );
                deactivate(jobid, &problem)?;
                problem
            }
            Target { role: None, .. } => {
                // the owner was dropped: the job can never run again as it
                // is; it is deactivated (once), not failed for ever
                let problem = format!(
                    "the role that owned this job (\"{}\", oid {}) was dropped; the job is deactivated",
                    job.username,
                    job.owner.to_u32()
                );
                deactivate(jobid, &problem)?;
                problem
            }
            Target { login: false, .. } => {
                let problem = format!(
                    "role \"{}\" is not permitted to log in; jobs run as their owner, which needs LOGIN; the job is deactivated",
                    job.username
                );
                deactivate(jobid, &problem)?;
                problem
            }
            Target { runner: false, .. } => {
                let problem = format!(
                    "role \"{}\" is not a member of automation_runner (any more); jobs run as their owner, who needs it; the job is deactivated",
                    job.username
                );
                deactivate(jobid, &problem)?;
                problem
            }
        };
        let t = now();
        if job.log_runs().keeps(true) {
            insert_run(jobid, job, RunStatus::Failed, Some(&problem), due, Some((t, t)), attempt)?;
            keep_history(Some(job), jobid, None, RunStatus::Failed)?;
        }
        note_outcome(jobid, t, RunStatus::Failed, true)?;
        count_run(jobid, RunStatus::Failed, None)?;
        Ok(Started::Done)
    }
}

fn insert_run(
    jobid: i64,
    job: &Job,
    status: RunStatus,
    message: Option<&str>,
    due: i64,
    times: Option<(i64, i64)>,
    attempt: u32,
) -> Result<i64> {
    Spi::get_one_with_args::<i64>(
        "INSERT INTO automation.job_run_details
                (jobid, database, username, command, status, return_message, start_time, end_time, scheduled_for,
                 attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING runid",
        &[
            jobid.into(),
            job.database.as_str().into(),
            job.username.as_str().into(),
            job.command.as_str().into(),
            status.as_str().into(),
            message.into(),
            times.map(|t| tstz(t.0)).into(),
            times.map(|t| tstz(t.1)).into(),
            tstz(due).into(),
            i32::try_from(attempt).unwrap_or(i32::MAX).into(),
        ],
    )
    .with_context(|| format!("could not record a run of job {jobid}"))?
    .ok_or_else(|| Error::internal(format!("could not record a run of job {jobid}"), "no runid was returned"))
}

/// Take a job out of the schedule, saying why (the change reloads the jobs).
fn deactivate(jobid: i64, reason: &str) -> Result<()> {
    Spi::run_with_args(
        "UPDATE automation.job SET active = false, inactive_reason = $2 WHERE jobid = $1",
        &[jobid.into(), reason.into()],
    )
    .with_context(|| format!("could not deactivate job {jobid}"))?;
    warning!("automation_ext job {jobid}: {reason}");
    Ok(())
}

/// Bring the shown names up to date: a renamed role's jobs keep running as
/// that role and show its new name; this database's jobs show this
/// database's current name (after a rename, a restore under another name or
/// a clone). Rows a user holds locked are left for the next time.
fn refresh_names() -> Result<()> {
    Spi::run(
        "UPDATE automation.job j SET username = r.rolname
           FROM pg_catalog.pg_roles r
          WHERE r.oid = j.owner
            AND j.jobid IN (SELECT k.jobid FROM automation.job k JOIN pg_catalog.pg_roles kr ON kr.oid = k.owner
                             WHERE k.username OPERATOR(pg_catalog.<>) kr.rolname FOR UPDATE OF k SKIP LOCKED)",
    )
    .and_then(|_| {
        Spi::run(
            "UPDATE automation.job j SET database = pg_catalog.current_database()
              WHERE j.jobid IN (SELECT k.jobid FROM automation.job k
                                 WHERE k.local AND k.database OPERATOR(pg_catalog.<>) pg_catalog.current_database()
                                   FOR UPDATE SKIP LOCKED)",
        )
    })
    .context("could not refresh job names")
}

/// Start the worker of run slot `i` at once if the cluster-wide budget
/// allows and no other run waits; false when it is left to the launcher.
fn start_now(i: usize) -> bool {
    let mut shared = SHARED.exclusive();
    // a worker that stays after its run takes it, if one of its database and
    // role waits (no fork, no connection)
    if let Some(pid) = shared.hand_to_idle(i) {
        drop(shared);
        shared::signal(pid);
        return true;
    }
    shared.reap_idle();
    let started = shared.workers_busy();
    let waiting = shared.runs.iter().filter(|r| r.state == RunState::Requested).count();
    // (the launcher may have started it meanwhile: then it is not ours to start)
    if shared.runs[i].state != RunState::Requested
        || started >= shared.max_workers
        || waiting > 1
        || shared.launcher_pid == 0
    {
        return shared.runs[i].state == RunState::Started;
    }
    let run = shared.runs[i];
    match runner::start_run_worker(run.jobid, run.dsm, shared.launcher_pid) {
        Some(worker) => {
            shared.runs[i].state = RunState::Started;
            shared.runs[i].worker = worker;
            true
        }
        None => false,
    }
}

/// Who and where a run would connect.
struct Target {
    /// the database, if it exists and allows connections
    database: Option<pg_sys::Oid>,
    /// the owner, if it still exists
    role: Option<pg_sys::Oid>,
    /// the owner may log in
    login: bool,
    /// (0.8.0) the owner may still schedule: a superuser, or a member of automation_runner
    runner: bool,
}

/// Read from the system caches, not with SQL: this is on the path from a
/// fire being due to its worker starting.
fn run_target(job: &Job) -> Result<Target> {
    let name = if job.local {
        None
    } else {
        Some(CString::new(job.database.as_str()).map_err(|e| Error::internal("bad database name", e))?)
    };
    // SAFETY: syscache look-ups inside the caller's transaction; each tuple
    // found is read as its catalog's fixed-size struct (GETSTRUCT) and
    // released before returning.
    unsafe {
        let database = match name {
            None => Some(pg_sys::MyDatabaseId), // we are connected to it: it allows connections
            Some(name) => {
                let oid = pg_sys::get_database_oid(name.as_ptr(), true);
                let allowed = oid != pg_sys::InvalidOid && {
                    let tuple =
                        pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::DATABASEOID as _, pg_sys::Datum::from(oid));
                    let allowed = !tuple.is_null() && (*getstruct::<pg_sys::FormData_pg_database>(tuple)).datallowconn;
                    if !tuple.is_null() {
                        pg_sys::ReleaseSysCache(tuple);
                    }
                    allowed
                };
                allowed.then_some(oid)
            }
        };
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::AUTHOID as _, pg_sys::Datum::from(job.owner));
        if tuple.is_null() {
            return Ok(Target { database, role: None, login: false, runner: false });
        }
        let login = (*getstruct::<pg_sys::FormData_pg_authid>(tuple)).rolcanlogin;
        pg_sys::ReleaseSysCache(tuple);
        Ok(Target { database, role: Some(job.owner), login, runner: crate::tenancy::is_runner(job.owner) })
    }
}

/// The fixed-size part of a catalog tuple (PostgreSQL's GETSTRUCT).
///
/// # Safety
/// `tuple` is a valid heap tuple of a catalog whose row struct is `T`.
unsafe fn getstruct<T>(tuple: pg_sys::HeapTuple) -> *const T {
    // SAFETY: as the caller promises; t_hoff is the offset of the data.
    unsafe {
        let data = (*tuple).t_data;
        (data as *const u8).add((*data).t_hoff as usize) as *const T
    }
}

fn mark_running(runid: i64, pid: i32, start: i64) -> Result<()> {
    Spi::run_with_args(
        "UPDATE automation.job_run_details SET status = $4, job_pid = $2, start_time = $3
          WHERE runid = $1 AND status = ANY ($5)",
        &[
            runid.into(),
            pid.into(),
            tstz(start).into(),
            RunStatus::Running.as_str().into(),
            RunStatus::Running.predecessors().into(),
        ],
    )
    .with_context(|| format!("could not record run {runid}"))
}

/// Record a run's end; returns its attempt (None when its row is gone: a
/// user deleted it).
fn finish_run(
    runid: i64,
    status: RunStatus,
    message: &str,
    pid: Option<i32>,
    start: i64,
    end: i64,
) -> Result<Option<i32>> {
    Spi::get_one_with_args::<i32>(
        "UPDATE automation.job_run_details
            SET status = $2, return_message = $3, job_pid = COALESCE($4, job_pid),
                start_time = $5, end_time = $6
          WHERE runid = $1 AND status = ANY ($7)
         RETURNING attempt",
        &[
            runid.into(),
            status.as_str().into(),
            message.into(),
            pid.into(),
            tstz(start).into(),
            tstz(end).into(),
            status.predecessors().into(),
        ],
    )
    .with_context(|| format!("could not record run {runid}"))
}

/// Record a run that succeeded (`times`: start, end and lateness in µs):
/// its row (deleted unless `keep`), its job's last run, the counters.
fn record_succeeded(
    runid: i64,
    jobid: i64,
    message: &str,
    pid: Option<i32>,
    times: (i64, i64, i64),
    keep: bool,
) -> Result<()> {
    let (start, end, lateness) = times;
    Spi::run_with_args(
        "SELECT automation.job_run_succeeded($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            runid.into(),
            jobid.into(),
            message.into(),
            pid.into(),
            tstz(start).into(),
            tstz(end).into(),
            (lateness as f64 / 1e6).into(),
            keep.into(),
            RunStatus::Succeeded.predecessors().into(),
        ],
    )
    .with_context(|| format!("could not record run {runid}"))
}

/// Run-state columns of automation.job. SKIP LOCKED: a user holding the row
/// (an open ALTER) must never stall the scheduler; the columns are
/// informational and are written again at the next run. A failed attempt
/// that will be retried (`fire_over` false) does not count as a failure:
/// consecutive_failures counts fires.
fn note_outcome(jobid: i64, start: i64, status: RunStatus, fire_over: bool) -> Result<()> {
    let ok = status == RunStatus::Succeeded;
    Spi::run_with_args(
        "UPDATE automation.job j
            SET last_run_at = $2, last_status = $4,
                consecutive_failures = CASE WHEN $3 THEN 0
                                            WHEN $5 THEN j.consecutive_failures + 1
                                            ELSE j.consecutive_failures END
          WHERE j.jobid = (SELECT jobid FROM automation.job WHERE jobid = $1 FOR UPDATE SKIP LOCKED)",
        &[jobid.into(), tstz(start).into(), ok.into(), status.as_str().into(), fire_over.into()],
    )
    .with_context(|| format!("could not update job {jobid}"))
}

/// Count a run in automation.job_run_stats (with its duration and start
/// lateness in µs when it ran).
fn count_run(jobid: i64, status: RunStatus, times: Option<(i64, i64)>) -> Result<()> {
    let secs = |us: i64| us as f64 / 1e6;
    Spi::run_with_args(
        "SELECT automation.count_job_run($1, $2, $3, $4)",
        &[jobid.into(), status.as_str().into(), times.map(|t| secs(t.0)).into(), times.map(|t| secs(t.1)).into()],
    )
    .with_context(|| format!("could not count a run of job {jobid}"))
}

/// What job_run_details keeps of a job's ended runs: the run `runid` goes
/// unless its job's log_runs keeps it; beyond keep_runs, the oldest ended
/// runs of the job go.
fn keep_history(job: Option<&Job>, jobid: i64, runid: Option<i64>, status: RunStatus) -> Result<()> {
    let mode = job.map_or_else(|| settings::LOG_RUNS.get(), Job::log_runs);
    if let Some(runid) = runid.filter(|_| !mode.keeps(status == RunStatus::Failed)) {
        Spi::run_with_args("DELETE FROM automation.job_run_details WHERE runid = $1", &[runid.into()])
            .with_context(|| format!("could not forget run {runid}"))?;
    }
    if let Some(keep) = job.and_then(|j| j.keep_runs) {
        let ended: Vec<&str> = RunStatus::ALL.into_iter().filter(|s| s.is_final()).map(RunStatus::as_str).collect();
        Spi::run_with_args(
            "DELETE FROM automation.job_run_details
              WHERE runid IN (SELECT d.runid FROM automation.job_run_details d
                               WHERE d.jobid = $1 AND d.status = ANY ($3)
                               ORDER BY d.runid DESC OFFSET $2)",
            &[jobid.into(), i64::from(keep).into(), ended.into()],
        )
        .with_context(|| format!("could not cap the history of job {jobid}"))?;
    }
    Ok(())
}

/// A uniform number in [0, 1) for a retry's jitter.
fn jitter() -> f64 {
    // SAFETY: pg_prng_double reads and advances this process's global PRNG
    // state, which PostgreSQL seeds when the process starts.
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

/// Write the jobs' next fires to automation.job (rows a user holds locked
/// are left: the next write catches up).
fn write_next_runs(nexts: &[plan::Next]) -> Result<()> {
    if nexts.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = nexts.iter().map(|(id, _, _)| *id).collect();
    let times: Vec<Option<TimestampWithTimeZone>> = nexts.iter().map(|(_, n, _)| n.map(tstz)).collect();
    let attempts: Vec<i32> = nexts.iter().map(|(_, _, a)| i32::try_from(*a).unwrap_or(1)).collect();
    Spi::run_with_args(
        "UPDATE automation.job j SET next_run_at = u.next, next_attempt = u.attempt
           FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::timestamptz[]),
                           pg_catalog.unnest($3::int4[])) AS u(jobid, next, attempt)
          WHERE j.jobid = u.jobid
            AND (j.next_run_at IS DISTINCT FROM u.next OR j.next_attempt IS DISTINCT FROM u.attempt)
            AND j.jobid IN (SELECT jobid FROM automation.job WHERE jobid = ANY ($1) FOR UPDATE SKIP LOCKED)",
        &[ids.into(), times.into(), attempts.into()],
    )
    .context("could not update next run times")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::scheduler::plan::RunStatus;

    /// Per-job time zones through two DST changes (America/New_York on
    /// 2026-03-08 and 2026-11-01, Europe/Berlin on 2026-03-29), with
    /// PostgreSQL's zone database: a 10-minute tick over the weeks around
    /// them; each job fires once per local day, at the documented times.
    #[pg_test]
    fn per_job_time_zones_through_dst_in_two_zones() {
        use std::collections::HashMap;
        use std::rc::Rc;

        use crate::civil::pg_zone::PgZone;
        use crate::civil::{Civil, Zone};
        use crate::scheduler::cron;
        use crate::scheduler::plan::{Launcher, Loaded, Policy, Started, Timetable};

        struct Log(Vec<(i64, i64)>);
        impl Launcher for Log {
            type Error = ();
            fn start(&mut self, jobid: i64, due: i64, _: u32) -> Result<Started, ()> {
                self.0.push((jobid, due));
                Ok(Started::Done)
            }
            fn skip(&mut self, _: i64, _: i64, _: i64) -> Result<(), ()> {
                Ok(())
            }
        }
        let zone = |name: &std::ffi::CStr| -> Rc<dyn Zone> { Rc::new(PgZone::named(name).unwrap()) };
        let (ny, berlin) = (zone(c"America/New_York"), zone(c"Europe/Berlin"));
        let job = |jobid, text: &str, name: &str, z: &Rc<dyn Zone>| Loaded {
            jobid,
            schedule_text: text.to_owned(),
            schedule: cron::parse(text).unwrap(),
            zone_name: Some(name.to_owned()),
            zone: Some(Rc::clone(z)),
            stored: None,
            stored_attempt: 1,
            policy: Policy::default(),
        };
        // PostgreSQL timestamps: µs since 2000-01-01 UTC
        let utc = |y, mo, d, h, mi| {
            Civil { year: y, month: mo, day: d, hour: h, minute: mi, second: 0, micro: 0 }.to_timestamp(0)
        };
        let mut t = Timetable::default();
        let gmt = PgZone::gmt();
        let start = utc(2026, 3, 1, 0, 0);
        t.load(
            [
                job(1, "30 2 * * *", "America/New_York", &ny),
                job(2, "30 2 * * *", "Europe/Berlin", &berlin),
                job(3, "30 1 * * *", "America/New_York", &ny),
            ],
            false,
            start,
            &gmt,
        );
        let mut log = Log(Vec::new());
        let mut now = start;
        while now < utc(2026, 11, 5, 0, 0) {
            now += 600_000_000;
            t.launch_due(now, &gmt, &mut HashMap::new(), 10, &mut log).unwrap();
        }
        let fires = |jobid| log.0.iter().filter(|(j, _)| *j == jobid).map(|(_, d)| *d).collect::<Vec<_>>();
        let (ny_fires, berlin_fires, ny_night) = (fires(1), fires(2), fires(3));
        // New York: 02:30 EST = 07:30 UTC; on 03-08 02:30 does not exist and
        // the offset before the change is used (07:30 UTC = 03:30 EDT); then
        // 02:30 EDT = 06:30 UTC
        for (day, hour) in [(7, 7), (8, 7), (9, 6)] {
            assert!(ny_fires.contains(&utc(2026, 3, day, hour, 30)), "New York, March {day}");
        }
        // Berlin: 02:30 CET = 01:30 UTC up to and on 03-29, then 00:30 UTC
        for (day, hour) in [(28, 1), (29, 1), (30, 0)] {
            assert!(berlin_fires.contains(&utc(2026, 3, day, hour, 30)), "Berlin, March {day}");
        }
        // once per local day, every day: no day skipped, none twice (01:30
        // happens twice in New York on 11-01; the job runs once)
        for (fires, z) in [(&ny_fires, &ny), (&berlin_fires, &berlin), (&ny_night, &ny)] {
            let days: Vec<(i64, u32, u32)> = fires
                .iter()
                .map(|&f| {
                    let c = Civil::from_timestamp(f, z.offset_at_utc(f));
                    (c.year, c.month, c.day)
                })
                .collect();
            let mut unique = days.clone();
            unique.dedup();
            assert_eq!(unique.len(), days.len(), "a local day fired twice");
            assert!(days.len() >= 245, "{} fires", days.len());
        }
        assert!(ny_night.contains(&utc(2026, 11, 1, 5, 30)) || ny_night.contains(&utc(2026, 11, 1, 6, 30)));
    }

    #[pg_test]
    fn run_statuses_are_the_ones_the_table_allows() {
        let check = Spi::get_one::<String>(
            "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint
              WHERE conname = 'job_run_details_status_check'",
        )
        .unwrap()
        .unwrap();
        // CHECK ((status = ANY (ARRAY['starting'::text, ...])))
        let allowed: Vec<&str> = check.split('\'').skip(1).step_by(2).collect();
        assert_eq!(allowed, RunStatus::ALL.map(RunStatus::as_str), "{check}");
    }
}
