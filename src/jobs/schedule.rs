//! The jobs duty of a database's worker (worker/database.rs, started by the
//! launcher while the database's jobs are due; it leaves when the next fire
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

use pgrx::prelude::*;

use super::cron;
use super::plan::{self, Loaded, Overlap, Policy, Report, RunStatus, Started, Timetable};
use super::runs::{
    count_run, deactivate, finish_run, insert_run, keep_history, mark_running, note_outcome, record_succeeded,
    refresh_names, tstz, write_next_runs, Job,
};
use crate::civil::pg_zone::PgZone;
use crate::error::{in_worker_transaction, Context, Error, Result};
use crate::settings::{self, LogRuns};
use crate::worker::runner::{self, RunSegment, STEP_POOL};
use crate::worker::shared::{self, RunSlot, RunState, SHARED};
use crate::worker::{now, Duty, Flow, Visit};

static JOBS_DIRTY: AtomicBool = AtomicBool::new(true);
static JOB_RELID: AtomicU32 = AtomicU32::new(0);

/// How often the job table's username and database columns are brought up
/// to date with renamed roles and a renamed (restored, cloned) database.
const NAMES_EVERY: Duration = Duration::from_secs(10);

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

pub struct Scheduler {
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

/// Was this run started for the job table this process loaded (not for
/// the table of an extension since dropped and created again)?
fn of_this_table(run: &RunSlot) -> bool {
    run.table == JOB_RELID.load(Ordering::Relaxed)
}

impl Scheduler {
    /// The jobs of database `dboid`, loaded at its first turn.
    pub fn new(dboid: u32) -> Scheduler {
        let zone = PgZone::from_setting().unwrap_or_else(|problem| {
            warning!("{}; reading schedules in GMT", problem.message);
            PgZone::gmt()
        });
        // SAFETY: registers a callback PostgreSQL calls while processing
        // invalidation messages in this process; it only stores to atomics.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(job_relcache_callback), pg_sys::Datum::from(0)) };
        Scheduler {
            dboid,
            jobs: HashMap::new(),
            timetable: Timetable::default(),
            marked: HashSet::new(),
            zone,
            activity: String::new(),
            names_checked: None,
        }
    }

    /// This database's runs in the shared run slots (index, slot).
    fn in_flight(&self) -> Vec<(usize, RunSlot)> {
        shared::in_flight(self.dboid)
    }

    /// Runs left in flight that no run slot follows any more (the server
    /// restarted, and shared memory with it) are recorded as failed (at a
    /// visit's sweep: `Duty::begin`).
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

    fn tick(&mut self, visit: &mut Visit) -> Result<Flow> {
        // (in the tick's transaction: a check of its own would cost a
        // transaction at every turn of the worker's loop)
        if !crate::catalog::extension_ready() {
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
        visit.blocked = self.launch_due(now())?.no_run_slot;
        // (issue 34) a job firing every second or two: this worker may stay
        visit.frequent = self.timetable.shortest_period().is_some_and(|p| p <= crate::worker::visit::RESIDENT_US);
        self.report_activity(visit.resident);
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
                // another job table than the one loaded before: the extension
                // was dropped and created again while this process stayed
                // (one transaction, or between two turns). Its jobids start
                // from 1 again and name other jobs: nothing this process
                // knew of the old table's jobs holds for them.
                let before = JOB_RELID.swap(relid.to_u32(), Ordering::Relaxed);
                if before != 0 && before != relid.to_u32() {
                    self.timetable = Timetable::default();
                }
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

    /// Start the due fires; true when one found no free run slot.
    fn launch_due(&mut self, now: i64) -> Result<plan::Launched> {
        let max = settings::MAX_RUNNING_JOBS.get().max(1) as usize;
        let mut running: HashMap<i64, Vec<i64>> = HashMap::new();
        for (_, r) in self.in_flight() {
            if r.jobid != STEP_POOL && of_this_table(&r) {
                running.entry(r.jobid).or_default().push(r.runid);
            }
        }
        let mut effects = Effects { dboid: self.dboid, jobs: &self.jobs };
        let launched = self.timetable.launch_due(now, &self.zone, &mut running, max, &mut effects)?;
        if let Some(slot) = SHARED.exclusive().slot_mut(self.dboid) {
            slot.fires_waiting = launched.waiting_for_slot as u32;
        }
        write_next_runs(&launched.advanced)?;
        Ok(launched)
    }
    /// Record what the runs of this database did: running ones once, ended
    /// ones with their outcome (then their slot is free again).
    fn reap(&mut self) -> Result<()> {
        for (i, run) in self.in_flight() {
            if run.jobid == STEP_POOL {
                continue; // a step worker: the process layer frees its slot
            }
            if !of_this_table(&run) {
                // a run of the job table of an extension dropped (and
                // created again): its job is gone, and its jobid and runid
                // may be another job's and run's now; its slot is freed
                // when it ends, nothing is recorded
                if run.state == RunState::Finished {
                    log!(
                        "automation_ext scheduler: run {} of job {} of a dropped automation.job ended; not recorded",
                        run.runid,
                        run.jobid
                    );
                    let seg = RunSegment::attach(run.dsm);
                    self.recorded(i, run, seg);
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
        shared::free_finished(i, run.dsm);
    }

    /// What pg_stat_activity shows for this scheduler (and scheduler_status()):
    /// its jobs, its runs, its next fire, and (issue 34) whether it stays as
    /// a resident (as decided at its last turn).
    fn report_activity(&mut self, resident: bool) {
        let in_flight = self.in_flight().len();
        let mut text = match self.timetable.next() {
            Some((ts, id)) => {
                let name =
                    self.jobs.get(&id).and_then(|j| j.name.clone()).map(|n| format!(" ({n})")).unwrap_or_default();
                format!("{} jobs, {} running; next: job {id}{name} at {}", self.jobs.len(), in_flight, tstz(ts))
            }
            None => format!("{} jobs, {} running; nothing scheduled", self.jobs.len(), in_flight),
        };
        if resident {
            text.push_str("; resident (its jobs fire every 2 s or more often: this scheduler stays)");
        }
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

impl Duty for Scheduler {
    fn begin(&mut self, visit: &mut Visit) -> Result<()> {
        // (issue 34) runs that lost their slot exist only after a restart
        // (shared memory lost), a worker that did not leave cleanly, or the
        // extension coming back: the visits that sweep (`Visit::first`)
        if visit.first {
            self.recover()?;
        }
        Ok(())
    }

    fn turn(&mut self, visit: &mut Visit) -> Flow {
        in_worker_transaction(|| self.tick(visit))
    }

    fn next_due(&mut self) -> Option<i64> {
        self.timetable.next().map(|(ts, _)| ts)
    }

    fn reload_config(&mut self) {
        match PgZone::from_setting() {
            Ok(zone) => self.zone = zone,
            Err(problem) => warning!("{}; keeping the previous time zone", problem.message),
        }
        JOBS_DIRTY.store(true, Ordering::Relaxed);
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

    fn start(&mut self, jobid: i64, due: i64, deadline: i64, attempt: u32) -> Result<Started> {
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
                    deadline,
                    now(),
                    JOB_RELID.load(Ordering::Relaxed),
                ) else {
                    // another scheduler took the last slot meanwhile
                    seg.release();
                    return Ok(Started::NoSlot);
                };
                let started = runner::start_now(slot);
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

/// A uniform number in [0, 1) for a retry's jitter.
fn jitter() -> f64 {
    // SAFETY: pg_prng_double reads and advances this process's global PRNG
    // state, which PostgreSQL seeds when the process starts.
    unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::jobs::plan::RunStatus;

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
        use crate::jobs::cron;
        use crate::jobs::plan::{Launcher, Loaded, Policy, Started, Timetable};

        struct Log(Vec<(i64, i64)>);
        impl Launcher for Log {
            type Error = ();
            fn start(&mut self, jobid: i64, due: i64, _: i64, _: u32) -> Result<Started, ()> {
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
