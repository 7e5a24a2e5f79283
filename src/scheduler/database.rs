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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::ffi::{CStr, CString};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::cron::{self, Schedule, Zone};
use super::runner::{self, RunSegment};
use super::shared::{self, Extension, RunSlot, RunState, SHARED};
use crate::settings;

static JOBS_DIRTY: AtomicBool = AtomicBool::new(true);
static JOB_RELID: AtomicU32 = AtomicU32::new(0);

/// Longest sleep between ticks: how soon a change to automation.job, a
/// settings reload or a finished run is noticed at the latest (finished runs
/// and signals also wake the scheduler at once).
const MAX_NAP_MS: i64 = 1000;
/// Shortest sleep, when a due fire waits for a free slot.
const BLOCKED_NAP_MS: i64 = 100;
/// A scheduler stays while a fire is due within this, and leaves (its next
/// due time in shared memory, for the launcher) when none is: worker slots
/// follow the work, not the number of databases.
const LINGER_US: i64 = 2_000_000;
/// How long a scheduler waits for a run it asked for to end, to record it.
const RUN_LINGER_US: i64 = 500_000;
/// A fire due within this keeps a scheduler even when other databases wait
/// (the launcher starts one this long before a fire: launcher.rs LEAD_US).
const IMMINENT_US: i64 = 150_000;

/// How often the job table's username and database columns are brought up
/// to date with renamed roles and a renamed (restored, cloned) database.
const NAMES_EVERY: Duration = Duration::from_secs(10);

struct Job {
    name: Option<String>,
    schedule_text: String,
    schedule: Schedule,
    command: String,
    /// the current name of the job's database (this one's for a local job)
    database: String,
    /// the job belongs to this database, whatever its name
    local: bool,
    username: String,
    /// the role itself; `username` is its name when the jobs were loaded
    owner: pg_sys::Oid,
    timeout_ms: i32,
    next: Option<i64>,
}

struct Scheduler {
    dboid: u32,
    jobs: HashMap<i64, Job>,
    heap: BinaryHeap<Reverse<(i64, i64)>>,
    /// runs of this database recorded as running (by this process)
    marked: HashSet<i64>,
    zone: PgZone,
    activity: String,
    names_checked: Option<std::time::Instant>,
}

/// What became of a due run.
enum Start {
    /// requested (or failed for good, recorded): the job's schedule moves on
    Done,
    /// every run slot of the cluster is taken: the run waits, due
    NoSlot,
}

enum Flow {
    Continue,
    ExtensionGone,
}

/// PostgreSQL's own time zone database, for `automation.timezone`.
pub struct PgZone(*mut pg_sys::pg_tz);

impl PgZone {
    /// The zone named by automation.timezone; GMT (with a WARNING) when the
    /// name is unknown.
    pub fn from_setting() -> Result<PgZone, String> {
        let name = settings::SCHEDULER_TIMEZONE.get().unwrap_or_else(|| settings::DEFAULT_TIMEZONE.to_owned());
        PgZone::named(&name)
            .ok_or_else(|| format!("automation.timezone \"{}\" is not a known time zone", name.to_string_lossy()))
    }

    pub fn named(name: &CStr) -> Option<PgZone> {
        // SAFETY: pg_tzset returns a pointer into PostgreSQL's process-wide
        // time zone cache (never freed), or NULL for an unknown name.
        let tz = unsafe { pg_sys::pg_tzset(name.as_ptr()) };
        (!tz.is_null()).then_some(PgZone(tz))
    }
}

impl Zone for PgZone {
    fn offset_at_utc(&self, ts: i64) -> i64 {
        let mut tz: i32 = 0;
        let mut tm = pg_sys::pg_tm::default();
        let mut fsec: pg_sys::fsec_t = 0;
        // SAFETY: out-parameters are locals; the zone pointer is from pg_tzset.
        // PostgreSQL's tz is seconds *west* of UTC.
        let rc = unsafe { pg_sys::timestamp2tm(ts, &mut tz, &mut tm, &mut fsec, std::ptr::null_mut(), self.0) };
        if rc != 0 {
            0
        } else {
            -(tz as i64)
        }
    }

    fn offset_for_local(&self, local: &cron::Civil) -> i64 {
        let mut tm = pg_sys::pg_tm {
            tm_year: local.year as i32,
            tm_mon: local.month as i32, // pg_tm months are 1-based
            tm_mday: local.day as i32,
            tm_hour: local.hour as i32,
            tm_min: local.minute as i32,
            tm_sec: local.second as i32,
            ..Default::default()
        };
        // SAFETY: tm is a local; the zone pointer is from pg_tzset.
        -(unsafe { pg_sys::DetermineTimeZoneOffset(&mut tm, self.0) } as i64)
    }
}

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

fn tstz(ts: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(ts).unwrap_or_else(|_| TimestampWithTimeZone::try_from(0).expect("epoch"))
}

/// Is the extension installed here, at a version whose job table this
/// library reads (0.3.0's, with `owner` and `local`)? 0.1.0 had no scheduler
/// tables and 0.2.0 other columns: such a database waits, unscheduled, for
/// its ALTER EXTENSION automation_ext UPDATE (whose script wakes the launcher).
fn extension_installed() -> bool {
    // SAFETY: syscache lookups inside the caller's transaction.
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
        let ready =
            job != pg_sys::InvalidOid && pg_sys::get_attnum(job, c"local".as_ptr()) != pg_sys::InvalidAttrNumber as i16;
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
    // SAFETY: reports this process's application name (copied by PostgreSQL).
    // (The scheduler's commits stay synchronous: with them asynchronous, a
    // crash right after a run started could lose its row, and recovery would
    // not know the run was ever in flight.)
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
        warning!("{problem}; reading schedules in GMT");
        PgZone::named(c"GMT").expect("GMT is always known")
    });
    let mut scheduler = Scheduler {
        dboid: dboid.to_u32(),
        jobs: HashMap::new(),
        heap: BinaryHeap::new(),
        marked: HashSet::new(),
        zone,
        activity: String::new(),
        names_checked: None,
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
    BackgroundWorker::transaction(AssertUnwindSafe(|| scheduler.recover()));
    debug1!("automation_ext scheduler started");

    loop {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: what PostgreSQL's own processes do on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            match PgZone::from_setting() {
                Ok(zone) => scheduler.zone = zone,
                Err(problem) => warning!("{problem}; keeping the previous time zone"),
            }
            JOBS_DIRTY.store(true, Ordering::Relaxed);
        }
        if !settings::SCHEDULER_ENABLED.get() {
            log!("automation_ext scheduler stopping: automation.enabled is off");
            break;
        }
        if unsafe { pg_sys::RecoveryInProgress() } {
            break;
        }
        let flow = BackgroundWorker::transaction(AssertUnwindSafe(|| scheduler.tick()));
        if let Flow::ExtensionGone = flow {
            shared::report_extension(dboid, Extension::Missing);
            log!("automation_ext scheduler stopping: the extension was dropped");
            break;
        }
        let next = scheduler.heap.peek().map(|Reverse((ts, _))| *ts);
        if !scheduler.stays(next) {
            break;
        }
        // a fire still due after the tick waits for a slot: the launcher sets
        // our latch when a run of ours ends; no busy loop meanwhile
        // sleep until the next fire, to the millisecond on the latch, then
        // the last fraction of a millisecond without it, so that a fire is
        // launched within microseconds of its due time
        let nap_us = match next {
            Some(ts) if ts <= now() => BLOCKED_NAP_MS * 1000,
            Some(ts) => (ts - now()).clamp(0, MAX_NAP_MS * 1000),
            None => MAX_NAP_MS * 1000,
        };
        if nap_us >= 1000 && !BackgroundWorker::wait_latch(Some(Duration::from_millis((nap_us / 1000) as u64))) {
            break; // postmaster died
        }
        if let Some(ts) = next {
            let left = ts - now();
            if (1..1000).contains(&left) {
                std::thread::sleep(Duration::from_micros(left as u64));
            }
        }
    }
    // leaving: when this database needs a scheduler again (the launcher
    // starts one then; a change to its jobs wakes it sooner)
    let next = scheduler.heap.peek().map(|Reverse((ts, _))| *ts).unwrap_or(0);
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
        if slot.scheduler_pid == me {
            slot.scheduler_pid = 0;
        }
        slot.next_due = next;
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

    /// Stay for a fire due soon; leave when none is, or when other
    /// databases wait for a scheduler and this one had its share.
    fn stays(&self, next: Option<i64>) -> bool {
        // others wait for a scheduler: leave now that what was due is done
        // (a run of ours that ends is recorded at our next visit)
        // more databases than schedulers may run at once: no lingering, so
        // that every database's fires find a scheduler slot in time
        let (others_wait, crowded) = {
            let shared = SHARED.share();
            let installed = shared.dbs.iter().filter(|d| d.dboid != 0 && d.extension == Extension::Installed).count();
            (
                shared.dbs.iter().any(|d| d.dboid != 0 && d.dboid != self.dboid && d.waiting_since != 0),
                installed > shared.scheduler_workers as usize,
            )
        };
        let now = now();
        // a fire due in a moment is what this visit is for: stay for it
        if next.is_some_and(|ts| ts - now <= IMMINENT_US) {
            return true;
        }
        if others_wait || crowded {
            return false;
        }
        // a fire due soon, or a run of ours asked for a moment ago (it is
        // recorded sooner, and without starting a scheduler again, if we wait)
        next.is_some_and(|ts| ts - now <= LINGER_US)
            || self.in_flight().iter().any(|(_, r)| now - r.requested_at < RUN_LINGER_US)
    }

    /// Runs left 'starting' or 'running' that no run slot holds any more
    /// (the server restarted, and shared memory with it): their outcome is
    /// unknown; say so. Runs still in a slot are followed as usual.
    fn recover(&mut self) {
        let live: Vec<i64> = self.in_flight().iter().map(|(_, r)| r.runid).collect();
        let n = Spi::connect_mut(|client| {
            client
                .update(
                    "UPDATE automation.job_run_details
                        SET status = 'failed', end_time = pg_catalog.clock_timestamp(),
                            return_message = 'the scheduler restarted while this run was in flight; its outcome is unknown'
                      WHERE status IN ('starting', 'running') AND runid <> ALL ($1)",
                    None,
                    &[live.into()],
                )
                .map(|t| t.len())
        })
        .unwrap_or_else(|e| error!("could not recover run history: {e}"));
        if n > 0 {
            log!("automation_ext scheduler: marked {n} run(s) left in flight as failed");
        }
    }

    fn tick(&mut self) -> Flow {
        if !extension_installed() {
            return Flow::ExtensionGone;
        }
        if self.names_checked.map_or(true, |t| t.elapsed() >= NAMES_EVERY) {
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
                refresh_names();
            }
            self.names_checked = Some(std::time::Instant::now());
        }
        if JOBS_DIRTY.swap(false, Ordering::Relaxed) {
            self.reload();
        }
        self.reap();
        self.launch_due(now());
        self.report_activity();
        Flow::Continue
    }

    fn reload(&mut self) {
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
                            (pg_catalog.date_part('epoch', next_run_at - '2000-01-01 00:00:00+00') * 1000000)::int8
                       FROM automation.job WHERE active",
                    None,
                    &[],
                )?
                .map(|r| {
                    Ok((
                        r.get::<i64>(1)?.unwrap_or_default(),
                        r.get::<String>(2)?,
                        r.get::<String>(3)?.unwrap_or_default(),
                        r.get::<String>(4)?.unwrap_or_default(),
                        r.get::<String>(5)?.unwrap_or_default(),
                        r.get::<String>(6)?.unwrap_or_default(),
                        r.get::<i32>(7)?.unwrap_or_default(),
                        r.get::<pg_sys::Oid>(8)?.unwrap_or(pg_sys::InvalidOid),
                        r.get::<bool>(9)?.unwrap_or(true),
                        r.get::<i64>(10)?,
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
        .unwrap_or_else(|e| error!("could not load automation.job: {e}"));

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
        let mut old = std::mem::take(&mut self.jobs);
        for (jobid, name, schedule_text, command, database, username, timeout_ms, owner, local, stored) in rows {
            let schedule = match cron::parse(&schedule_text) {
                Ok(s) => s,
                Err(e) => {
                    warning!("job {jobid} is not scheduled: {e}");
                    continue;
                }
            };
            // the fire this process knows, else the one the table keeps
            // (written by the previous visit, or by the schedule's trigger):
            // a scheduler started a little after a fire was due runs it;
            // fires missed for longer are coalesced into that one run
            let kept = match old.remove(&jobid) {
                Some(j) if j.schedule_text == schedule_text => j.next,
                Some(_) => None,
                None => stored.filter(|_| !matches!(schedule, Schedule::Reboot)),
            };
            let next = match (&schedule, kept) {
                (_, Some(next)) => Some(next),
                (Schedule::Reboot, None) => first_boot.then_some(now),
                (s, None) => s.next_after(now, &self.zone),
            };
            self.jobs.insert(
                jobid,
                Job { name, schedule_text, schedule, command, database, local, username, owner, timeout_ms, next },
            );
        }
        self.heap = self.jobs.iter().filter_map(|(id, j)| j.next.map(|n| Reverse((n, *id)))).collect();
        let ids: Vec<i64> = self.jobs.keys().copied().collect();
        let nexts: Vec<Option<TimestampWithTimeZone>> = ids.iter().map(|id| self.jobs[id].next.map(tstz)).collect();
        write_next_runs(&ids, &nexts);
    }

    fn launch_due(&mut self, now: i64) {
        let max = settings::MAX_RUNNING_JOBS.get().max(1) as usize;
        let flights = self.in_flight();
        let mut running: HashMap<i64, i64> = flights.iter().map(|(_, r)| (r.jobid, r.runid)).collect();
        let mut advanced: Vec<(i64, Option<i64>)> = Vec::new();
        while let Some(&Reverse((ts, jobid))) = self.heap.peek() {
            if ts > now {
                break;
            }
            let stale = self.jobs.get(&jobid).map_or(true, |j| j.next != Some(ts));
            if stale {
                self.heap.pop();
                continue;
            }
            if !running.contains_key(&jobid) && running.len() >= max {
                break; // due, but waits for a free slot (it keeps its place)
            }
            if let Some(&runid) = running.get(&jobid) {
                let job = &self.jobs[&jobid];
                record_skipped(jobid, job, ts, now, runid);
            } else {
                match self.start(jobid, ts) {
                    Start::Done => {
                        running.insert(jobid, 0);
                    }
                    Start::NoSlot => break, // due, and waits (it keeps its place)
                }
            }
            self.heap.pop();
            let job = self.jobs.get_mut(&jobid).expect("checked above");
            let mut next = job.schedule.next_after(ts, &self.zone);
            if let Some(n) = next {
                if n <= now {
                    next = job.schedule.next_after(now, &self.zone);
                }
            }
            job.next = next;
            if let Some(n) = next {
                self.heap.push(Reverse((n, jobid)));
            }
            advanced.push((jobid, next));
        }
        if !advanced.is_empty() {
            let ids: Vec<i64> = advanced.iter().map(|(id, _)| *id).collect();
            let nexts: Vec<Option<TimestampWithTimeZone>> = advanced.iter().map(|(_, n)| n.map(tstz)).collect();
            write_next_runs(&ids, &nexts);
        }
    }

    fn start(&mut self, jobid: i64, due: i64) -> Start {
        let job = &self.jobs[&jobid];
        // Who and where, checked here so that a refusal is a clear failed
        // run rather than a worker dying on connect.
        let target = run_target(job);
        let problem = match target {
            Ok((Some(db), Some(role), Some(true))) => {
                if SHARED.share().runs.iter().all(|r| r.state != RunState::Free) {
                    return Start::NoSlot;
                }
                // the worker first (its start, about 5 ms, overlaps the
                // bookkeeping), then the run's row: 'starting' until it runs.
                // Beyond the cluster-wide budget the launcher starts it
                // later, oldest due first (start_time - scheduled_for is how
                // late it started)
                let seg = RunSegment::create(jobid, db, role, job.timeout_ms, &job.command);
                let Some(slot) = SHARED.exclusive().request_run(self.dboid, jobid, 0, seg.handle(), due, now()) else {
                    // another scheduler took the last slot meanwhile
                    seg.release();
                    return Start::NoSlot;
                };
                let started = start_now(slot);
                let runid = insert_run(jobid, job, "starting", None, due, None);
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
                return Start::Done;
            }
            Ok((None, _, _)) => format!("database \"{}\" does not exist or does not allow connections", job.database),
            Ok((_, None, _)) => {
                // the owner was dropped: the job can never run again as it
                // is; it is deactivated (once), not failed for ever
                let problem = format!(
                    "the role that owned this job (\"{}\", oid {}) was dropped; the job is deactivated",
                    job.username,
                    job.owner.to_u32()
                );
                deactivate(jobid, &problem);
                problem
            }
            Ok((_, _, _)) => format!(
                "role \"{}\" is not permitted to log in; jobs run as their owner, which needs LOGIN",
                job.username
            ),
            Err(e) => format!("could not check the job's database and role: {e}"),
        };
        let t = now();
        insert_run(jobid, job, "failed", Some(&problem), due, Some((t, t)));
        note_outcome(jobid, t, false);
        Start::Done
    }

    /// Record what the runs of this database did: running ones once, ended
    /// ones with their outcome (then their slot is free again).
    fn reap(&mut self) {
        for (i, run) in self.in_flight() {
            match run.state {
                RunState::Started if run.pid > 0 && !self.marked.contains(&run.runid) => {
                    mark_running(run.runid, run.pid, now());
                    self.marked.insert(run.runid);
                }
                RunState::Finished => {
                    let (status, message, pid, start, end) = match RunSegment::attach(run.dsm) {
                        Some(seg) => {
                            let header = seg.header();
                            let state = header.state.load(Ordering::Acquire);
                            let outcome = match state {
                                runner::STATE_SUCCEEDED => ("succeeded", seg.message()),
                                runner::STATE_FAILED => ("failed", seg.message()),
                                _ => ("failed", "the job worker exited without reporting a result (it could not connect, or it was terminated); see the server log".to_string()),
                            };
                            let times = (
                                header.pid.load(Ordering::Relaxed),
                                header.start_time.load(Ordering::Relaxed),
                                header.end_time.load(Ordering::Relaxed),
                            );
                            seg.release();
                            (outcome.0, outcome.1, times.0, times.1, times.2)
                        }
                        None => ("failed", "the outcome of this run was lost".to_string(), run.pid, 0, 0),
                    };
                    let t = now();
                    let start = if start > 0 { start } else { t };
                    let end = if end > 0 { end } else { t };
                    finish_run(run.runid, status, &message, (pid > 0).then_some(pid), Some(start), Some(end));
                    note_outcome(run.jobid, start, status == "succeeded");
                    self.marked.remove(&run.runid);
                    let mut shared = SHARED.exclusive();
                    if shared.runs[i].runid == run.runid && shared.runs[i].state == RunState::Finished {
                        shared.free_run(i);
                    }
                }
                _ => {}
            }
        }
    }

    /// What pg_stat_activity shows for this scheduler (and scheduler_status()).
    fn report_activity(&mut self) {
        let in_flight = self.in_flight().len();
        let next = self.heap.peek().map(|Reverse((ts, id))| (*ts, *id));
        let text = match next {
            Some((ts, id)) => {
                let name =
                    self.jobs.get(&id).and_then(|j| j.name.clone()).map(|n| format!(" ({n})")).unwrap_or_default();
                format!("{} jobs, {} running; next: job {id}{name} at {}", self.jobs.len(), in_flight, tstz(ts))
            }
            None => format!("{} jobs, {} running; nothing scheduled", self.jobs.len(), in_flight),
        };
        if text != self.activity {
            let c = CString::new(text.as_str()).unwrap_or_default();
            // SAFETY: PostgreSQL copies the string into shared memory.
            unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, c.as_ptr()) };
            self.activity = text;
        }
    }
}

fn insert_run(jobid: i64, job: &Job, status: &str, message: Option<&str>, due: i64, times: Option<(i64, i64)>) -> i64 {
    Spi::get_one_with_args::<i64>(
        "INSERT INTO automation.job_run_details
                (jobid, database, username, command, status, return_message, start_time, end_time, scheduled_for)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING runid",
        &[
            jobid.into(),
            job.database.as_str().into(),
            job.username.as_str().into(),
            job.command.as_str().into(),
            status.into(),
            message.into(),
            times.map(|t| tstz(t.0)).into(),
            times.map(|t| tstz(t.1)).into(),
            tstz(due).into(),
        ],
    )
    .unwrap_or_else(|e| error!("could not record a run of job {jobid}: {e}"))
    .unwrap_or_default()
}

/// Take a job out of the schedule, saying why (the change reloads the jobs).
fn deactivate(jobid: i64, reason: &str) {
    Spi::run_with_args(
        "UPDATE automation.job SET active = false, inactive_reason = $2 WHERE jobid = $1",
        &[jobid.into(), reason.into()],
    )
    .unwrap_or_else(|e| error!("could not deactivate job {jobid}: {e}"));
    warning!("automation_ext job {jobid}: {reason}");
}

/// Bring the shown names up to date: a renamed role's jobs keep running as
/// that role and show its new name; this database's jobs show this
/// database's current name (after a rename, a restore under another name or
/// a clone). Rows a user holds locked are left for the next time.
fn refresh_names() {
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
    .unwrap_or_else(|e| error!("could not refresh job names: {e}"));
}

/// Start the worker of run slot `i` at once if the cluster-wide budget
/// allows and no other run waits; false when it is left to the launcher.
fn start_now(i: usize) -> bool {
    let mut shared = SHARED.exclusive();
    let started = shared.runs.iter().filter(|r| r.state == RunState::Started).count() as u32;
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

/// Who and where a run of `job` would connect: (database, role, may the role
/// log in). Read from the system caches, not with SQL: this is on the path
/// from a fire being due to its worker starting.
fn run_target(job: &Job) -> Result<(Option<pg_sys::Oid>, Option<pg_sys::Oid>, Option<bool>), String> {
    // SAFETY: syscache look-ups inside the caller's transaction; each tuple
    // found is read as its catalog's fixed-size struct (GETSTRUCT) and
    // released before returning.
    unsafe {
        let database = if job.local {
            Some(pg_sys::MyDatabaseId) // we are connected to it: it allows connections
        } else {
            let name = std::ffi::CString::new(job.database.as_str()).map_err(|e| e.to_string())?;
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
        };
        let tuple = pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::AUTHOID as _, pg_sys::Datum::from(job.owner));
        if tuple.is_null() {
            return Ok((database, None, None));
        }
        let login = (*getstruct::<pg_sys::FormData_pg_authid>(tuple)).rolcanlogin;
        pg_sys::ReleaseSysCache(tuple);
        Ok((database, Some(job.owner), Some(login)))
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

fn record_skipped(jobid: i64, job: &Job, due: i64, now: i64, running: i64) {
    let message = format!("skipped: the previous run (runid {running}) was still running");
    insert_run(jobid, job, "skipped", Some(&message), due, Some((now, now)));
}

fn mark_running(runid: i64, pid: i32, start: i64) {
    Spi::run_with_args(
        "UPDATE automation.job_run_details SET status = 'running', job_pid = $2, start_time = $3
          WHERE runid = $1 AND status = 'starting'",
        &[runid.into(), pid.into(), tstz(start).into()],
    )
    .unwrap_or_else(|e| error!("could not record run {runid}: {e}"));
}

fn finish_run(runid: i64, status: &str, message: &str, pid: Option<i32>, start: Option<i64>, end: Option<i64>) {
    Spi::run_with_args(
        "UPDATE automation.job_run_details
            SET status = $2, return_message = $3, job_pid = COALESCE($4, job_pid),
                start_time = COALESCE($5, start_time), end_time = COALESCE($6, pg_catalog.clock_timestamp())
          WHERE runid = $1",
        &[runid.into(), status.into(), message.into(), pid.into(), start.map(tstz).into(), end.map(tstz).into()],
    )
    .unwrap_or_else(|e| error!("could not record run {runid}: {e}"));
}

/// Run-state columns of automation.job. SKIP LOCKED: a user holding the row
/// (an open ALTER) must never stall the scheduler; the columns are
/// informational and are written again at the next run.
fn note_outcome(jobid: i64, start: i64, ok: bool) {
    Spi::run_with_args(
        "UPDATE automation.job j
            SET last_run_at = $2, last_status = CASE WHEN $3 THEN 'succeeded' ELSE 'failed' END,
                consecutive_failures = CASE WHEN $3 THEN 0 ELSE j.consecutive_failures + 1 END
          WHERE j.jobid = (SELECT jobid FROM automation.job WHERE jobid = $1 FOR UPDATE SKIP LOCKED)",
        &[jobid.into(), tstz(start).into(), ok.into()],
    )
    .unwrap_or_else(|e| error!("could not update job {jobid}: {e}"));
}

fn write_next_runs(ids: &[i64], nexts: &[Option<TimestampWithTimeZone>]) {
    if ids.is_empty() {
        return;
    }
    Spi::run_with_args(
        "UPDATE automation.job j SET next_run_at = u.next
           FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::timestamptz[])) AS u(jobid, next)
          WHERE j.jobid = u.jobid
            AND j.next_run_at IS DISTINCT FROM u.next
            AND j.jobid IN (SELECT jobid FROM automation.job WHERE jobid = ANY ($1) FOR UPDATE SKIP LOCKED)",
        &[ids.to_vec().into(), nexts.to_vec().into()],
    )
    .unwrap_or_else(|e| error!("could not update next run times: {e}"));
}
