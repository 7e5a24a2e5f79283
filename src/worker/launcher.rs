//! The launcher: one static background worker, registered in `_PG_init` when
//! the library is preloaded, started by the postmaster once the server accepts
//! writes (BgWorkerStart_RecoveryFinished: on a standby it starts only after
//! promotion), restarted 5 seconds after a crash.
//!
//! It lists the databases (it connects to none, like the autovacuum launcher,
//! and reads the shared catalog pg_database) and starts a database's
//! scheduler when that database needs one: a fire is due (from the next due
//! time its last scheduler left in shared memory), its jobs changed, or runs
//! of it ended and are to be recorded — at most automation.scheduler_workers
//! at once, first come, first served. It also starts the workers of requested
//! runs, oldest due first, at most automation.max_workers at once; both
//! budgets are clamped to what max_worker_processes leaves, and logged.
//! Whether a database has the extension is only known from inside it, so a
//! scheduler started in a database without it reports "missing" and exits;
//! the launcher then leaves that database alone until `CREATE EXTENSION`
//! there wakes it (the install script calls automation.wake_scheduler()) or,
//! as a safety net for installs that did not wake it, every ten minutes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags};
use pgrx::prelude::*;

use super::progress;
use super::runner;
use super::shared::{self, DbSlot, Extension, RunState, SHARED};
use super::{WorkerHandle, WorkerStatus};
use crate::settings;

/// How often a database without the extension is looked at again unprompted.
const REPROBE_EVERY: Duration = Duration::from_secs(600);
/// Wait before starting a scheduler again where the last one ended with an error.
const RESTART_DELAY: Duration = Duration::from_secs(5);
const RESCAN_EVERY: Duration = Duration::from_secs(10);

pub fn register() {
    // SAFETY: reading postmaster globals during _PG_init.
    if unsafe { !pg_sys::process_shared_preload_libraries_in_progress || pg_sys::IsBinaryUpgrade } {
        return;
    }
    BackgroundWorkerBuilder::new("automation_ext launcher")
        .set_type("automation_ext launcher")
        .set_library("automation_ext")
        .set_function("automation_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[derive(Default)]
struct Tracked {
    worker: Option<WorkerHandle>,
    /// when its scheduler last ended without saying goodbye (an error): not restarted for a while
    crashed_at: Option<Instant>,
    reprobed_at: Option<Instant>,
    /// a scheduler has run here since the launcher started
    visited: bool,
    /// (0.8.0) its last scheduler found no extension: it holds no shared
    /// slot until it is probed again (REPROBE_EVERY) or woken
    missing: bool,
}

/// A database's scheduler is started this long before its next fire, so
/// that it is connected and has its jobs loaded when the fire is due.
const LEAD_US: i64 = progress::LEAD_US;
/// The launcher's shortest sleep when nothing sets its latch.
const MIN_NAP_US: i64 = 10_000;
/// How often a lasting shortage of worker slots is logged, at most.
const SHORTAGE_LOG_EVERY: Duration = Duration::from_secs(60);
/// A wait longer than this for a worker or a scheduler is a shortage worth a log line.
const SHORTAGE_US: i64 = 10_000_000;

/// The launcher's view of the budgets, logged when they change.
#[derive(Default, PartialEq, Eq, Clone, Copy)]
struct Budget {
    max_workers: u32,
    scheduler_workers: u32,
}

/// The fewest background worker processes with which every due fire is
/// eventually run (src/scheduler/progress.rs proves it for one scheduler
/// and one run slot): the launcher, the index maintenance worker, a
/// scheduler and a run.
pub const MIN_WORKER_PROCESSES: u32 = 4;

/// The budgets in force: automation.max_workers and
/// automation.scheduler_workers, clamped to what max_worker_processes
/// leaves beside the launcher and the index maintenance worker (pg_cron
/// clamps its max_running_jobs the same way, and says so).
fn budget(previous: &mut Option<Budget>) -> Budget {
    // SAFETY: reading a GUC variable of this process.
    let processes = unsafe { pg_sys::max_worker_processes }.max(0) as u32;
    let reserved = 2; // this launcher, and the index maintenance worker
    let room = processes.saturating_sub(reserved).max(2);
    let wanted_schedulers = settings::SCHEDULER_WORKERS.get().max(1) as u32;
    let scheduler_workers = wanted_schedulers.min(room / 2).max(1);
    let wanted_workers = settings::MAX_WORKERS.get().max(1) as u32;
    let max_workers = wanted_workers.min(room - scheduler_workers).max(1);
    let b = Budget { max_workers, scheduler_workers };
    if previous.as_ref() != Some(&b) {
        if processes < MIN_WORKER_PROCESSES {
            warning!(
                "automation_ext launcher: max_worker_processes = {processes} is below the minimum of {MIN_WORKER_PROCESSES} (this launcher, the index maintenance worker, one scheduler and one job run); jobs and SQL steps may wait for ever. Raise max_worker_processes (restart needed)"
            );
        }
        if max_workers < wanted_workers || scheduler_workers < wanted_schedulers {
            log!(
                "automation_ext launcher: max_worker_processes = {processes} leaves room for {max_workers} job runs and {scheduler_workers} schedulers at once (automation.max_workers = {wanted_workers}, automation.scheduler_workers = {wanted_schedulers}); raise max_worker_processes for more"
            );
        } else {
            log!("automation_ext launcher: up to {max_workers} job runs and {scheduler_workers} schedulers at once");
        }
        let mut shared = SHARED.exclusive();
        shared.max_workers = max_workers;
        shared.scheduler_workers = scheduler_workers;
        *previous = Some(b);
    }
    b
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn automation_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    // SAFETY: reading this process's pid.
    SHARED.exclusive().launcher_pid = unsafe { pg_sys::MyProcPid };
    log!("automation_ext launcher started");

    let mut tracked: HashMap<u32, Tracked> = HashMap::new();
    let mut databases: Vec<u32> = Vec::new();
    let mut scanned_at: Option<Instant> = None;
    let mut budgets: Option<Budget> = None;
    let mut logged_shortage: Option<Instant> = None;
    loop {
        if super::stop_requested() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: what PostgreSQL's own processes do on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let woken = SHARED.share().dbs.iter().any(|s| s.woken);
        if woken || scanned_at.map_or(true, |t| t.elapsed() >= RESCAN_EVERY) {
            databases = list_databases();
            scanned_at = Some(Instant::now());
            tracked.retain(|db, _| databases.contains(db));
            forget_gone(&databases);
        }
        let mut nap = Duration::from_secs(1);
        if settings::SCHEDULER_ENABLED.get() {
            let b = budget(&mut budgets);
            watch_runs();
            // SAFETY: reads the clock.
            shared::terminate_unstopped(unsafe { pg_sys::GetCurrentTimestamp() });
            let waiting_runs = start_runs(b.max_workers);
            let waiting_dbs = supervise(&databases, &mut tracked, b.scheduler_workers);
            nap = nap.min(next_wake(&tracked));
            // SAFETY: reads the clock.
            let now = unsafe { pg_sys::GetCurrentTimestamp() };
            let short_runs = waiting_runs.filter(|since| now - since > SHORTAGE_US);
            let short_dbs = waiting_dbs.filter(|since| now - since > SHORTAGE_US);
            if (short_runs.is_some() || short_dbs.is_some())
                && logged_shortage.map_or(true, |t| t.elapsed() >= SHORTAGE_LOG_EVERY)
            {
                logged_shortage = Some(Instant::now());
                if short_runs.is_some() {
                    log!(
                        "automation_ext launcher: job runs have waited more than 10 s for a worker (up to {} at once); they start in order of due time. Raise automation.max_workers or max_worker_processes if this lasts",
                        b.max_workers
                    );
                }
                if short_dbs.is_some() {
                    log!(
                        "automation_ext launcher: databases have waited more than 10 s for a scheduler (up to {} at once); raise automation.scheduler_workers if this lasts",
                        b.scheduler_workers
                    );
                }
            }
        }
        if !BackgroundWorker::wait_latch(Some(nap)) {
            break; // postmaster died
        }
    }
    SHARED.exclusive().launcher_pid = 0;
}

/// Forget the databases that are gone: their slots, and their runs that
/// nobody will record (a run still going ends on its own, then goes too).
fn forget_gone(databases: &[u32]) {
    let mut shared = SHARED.exclusive();
    for slot in shared.dbs.iter_mut() {
        if slot.dboid != 0 && !databases.contains(&slot.dboid) {
            *slot = DbSlot { dboid: 0, ..*slot };
        }
    }
    for i in 0..shared.runs.len() {
        let r = shared.runs[i];
        if r.state != RunState::Free && r.state != RunState::Started && !databases.contains(&r.dboid) {
            runner::release_handle(r.dsm);
            shared.free_run(i);
        }
    }
}

/// Runs whose worker ended become Finished, and their database's scheduler
/// (if one is running) is told at once.
fn watch_runs() {
    let mut wake = Vec::new();
    {
        let mut shared = SHARED.exclusive();
        for i in 0..shared.runs.len() {
            if shared.runs[i].state != RunState::Started {
                continue;
            }
            match shared.runs[i].worker.status() {
                WorkerStatus::Running(pid) => shared.runs[i].pid = pid,
                WorkerStatus::NotYetStarted => {}
                WorkerStatus::Stopped => {
                    shared.runs[i].state = RunState::Finished;
                    let db = shared.runs[i].dboid;
                    if let Some(slot) = shared.slot_mut(db) {
                        wake.push(slot.scheduler_pid);
                    }
                }
                // SAFETY: what every process does when the postmaster is gone.
                WorkerStatus::PostmasterDied => unsafe { pg_sys::proc_exit(1) },
            }
        }
    }
    for pid in wake {
        shared::signal(pid);
    }
}

/// The order in which waiting runs get a worker: highest priority, then
/// earliest deadline (issue 34; before, oldest due: a 1-second job's run
/// waited behind every overdue 10-second job's), then oldest due, then
/// first asked for.
fn run_order(r: &shared::RunSlot) -> (std::cmp::Reverse<i32>, i64, i64, i64) {
    (std::cmp::Reverse(r.priority), r.deadline, r.due, r.requested_at)
}

/// Start the workers of requested runs, highest priority then earliest
/// deadline first, while fewer than
/// `max_workers` run; returns since when the longest-waiting run has waited.
fn start_runs(max_workers: u32) -> Option<i64> {
    // SAFETY: reading this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    loop {
        // check and start under one lock: schedulers start runs too
        // (start_now), and the budget must hold against both
        let mut shared = SHARED.exclusive();
        shared.reap_idle();
        let running = shared.workers_busy();
        // SAFETY: reads the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let holding: Vec<u32> = shared.dbs.iter().filter(|d| d.hold_until > now).map(|d| d.dboid).collect();
        let waiting: Vec<(usize, shared::RunSlot)> = shared
            .runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RunState::Requested && !holding.contains(&r.dboid))
            .map(|(i, r)| (i, *r))
            .collect();
        let longest = waiting.iter().map(|(_, r)| r.requested_at).min();
        let Some(&(first, _)) = waiting.iter().min_by_key(|(_, r)| run_order(r)) else {
            return None;
        };
        // a worker that stayed after its run takes it if it can
        if let Some(pid) = shared.hand_to_idle(first) {
            drop(shared);
            shared::signal(pid);
            continue;
        }
        // (issue 34) the first in order that the budget allows: workers held
        // for residents (a database firing every second) are theirs only
        let lacking = shared.residents_lacking_a_worker();
        let startable = waiting
            .iter()
            .filter(|(_, r)| running + shared.reserved_for_residents(&lacking, r.dboid) < max_workers)
            .min_by_key(|(_, r)| run_order(r))
            .copied();
        let Some((i, run)) = startable else {
            // idle runners of other databases hold the budget: one leaves
            // now (its exit wakes us) instead of at the end of its linger
            if let Some(pid) = shared.evict_idle() {
                drop(shared);
                shared::signal(pid);
            }
            return longest;
        };
        match runner::start_run_worker(run.jobid, run.dsm, me) {
            Some(worker) => {
                shared.runs[i].state = RunState::Started;
                shared.runs[i].worker = worker;
            }
            // every max_worker_processes slot is taken (by others): the
            // run keeps waiting, and is started when one is free
            None => return longest,
        }
    }
}

/// Start schedulers where they are needed, most urgent first, while fewer
/// than `scheduler_workers` run; returns since when the longest-waiting
/// database has waited for one.
fn supervise(databases: &[u32], tracked: &mut HashMap<u32, Tracked>, scheduler_workers: u32) -> Option<i64> {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    for (db, t) in tracked.iter_mut() {
        if let Some(w) = &t.worker {
            match w.status() {
                WorkerStatus::Running(_) | WorkerStatus::NotYetStarted => {}
                // SAFETY: what every process does when the postmaster is gone.
                WorkerStatus::PostmasterDied => unsafe { pg_sys::proc_exit(1) },
                WorkerStatus::Stopped => {
                    t.worker = None;
                    // a scheduler that ended with an error did not clear its pid
                    let mut shared = SHARED.exclusive();
                    let mut gone = false;
                    if let Some(slot) = shared.find_slot(*db) {
                        slot.resident = false;
                        if slot.scheduler_pid != 0 {
                            slot.scheduler_pid = 0;
                            t.crashed_at = Some(Instant::now());
                        }
                        gone = slot.extension == Extension::Missing && !slot.woken;
                    }
                    if gone {
                        // no extension there (any more): its slot goes back,
                        // and so do runs nobody will record
                        t.missing = true;
                        forget_database(&mut shared, *db);
                    }
                }
            }
        }
    }
    let mut running = tracked.values().filter(|t| t.worker.is_some()).count() as u32;
    // (urgency, database, patience for CREATE EXTENSION to commit)
    let mut needed: Vec<(i64, u32, i64)> = Vec::new();
    {
        let mut shared = SHARED.exclusive();
        let finished: Vec<u32> =
            shared.runs.iter().filter(|r| r.state == RunState::Finished).map(|r| r.dboid).collect();
        let free_run_slot = shared.runs.iter().any(|r| r.state == RunState::Free);
        let mut unscheduled = 0usize;
        for &db in databases {
            let t = tracked.entry(db).or_default();
            let known = shared.find_slot(db).is_some();
            if !known && t.missing && t.reprobed_at.is_some_and(|r| r.elapsed() < REPROBE_EVERY) {
                continue; // no extension there: looked at again later (or when woken)
            }
            let Some(slot) = shared.slot_mut(db) else {
                unscheduled += 1;
                continue;
            };
            if !known && t.missing {
                slot.extension = Extension::Missing; // (probing it again)
            }
            let slot = *slot;
            if slot.hold_until > now || t.worker.is_some() || t.crashed_at.is_some_and(|c| c.elapsed() < RESTART_DELAY)
            {
                continue;
            }
            let view = progress::DbView {
                presence: match slot.extension {
                    Extension::Unknown => progress::Presence::Unknown,
                    Extension::Installed => progress::Presence::Installed,
                    Extension::Missing => progress::Presence::Missing,
                },
                woken: slot.woken,
                visited: t.visited,
                finished_runs: finished.contains(&db),
                next_due: slot.next_due,
                free_run_slot,
                reprobe_due: t.reprobed_at.map_or(true, |r| r.elapsed() >= REPROBE_EVERY),
            };
            if let Some((since, patience)) = progress::needs_scheduler(&view, now) {
                // first come, first served: a database that already waited
                // goes before one whose fire is merely due now
                let since = if slot.waiting_since != 0 { slot.waiting_since.min(since) } else { since };
                needed.push((since, db, patience));
            } else if let Some(slot) = shared.slot_mut(db) {
                slot.waiting_since = 0;
            }
        }
        drop(shared);
        report_unscheduled(unscheduled);
    }
    needed.sort();
    let mut waiting: Option<i64> = None;
    for (_, db, patience) in needed {
        let t = tracked.entry(db).or_default();
        let started = running < scheduler_workers && {
            match start_scheduler(db, patience) {
                Some(worker) => {
                    t.worker = Some(worker);
                    t.visited = true;
                    running += 1;
                    true
                }
                None => false, // no free worker slot now: at the next pass
            }
        };
        let mut shared = SHARED.exclusive();
        if let Some(slot) = shared.slot_mut(db) {
            if started {
                slot.woken = false;
                slot.waiting_since = 0;
                if slot.extension != Extension::Installed {
                    t.reprobed_at = Some(Instant::now());
                }
                t.missing = false;
            } else {
                if slot.waiting_since == 0 {
                    slot.waiting_since = now;
                }
                waiting = Some(waiting.map_or(slot.waiting_since, |w: i64| w.min(slot.waiting_since)));
            }
        }
    }
    waiting
}

/// A database without the extension (dropped, or never there): its shared
/// slot goes back, and its runs that nobody will record (their segments
/// too); a run still going ends on its own and goes at the next pass.
fn forget_database(shared: &mut shared::Shared, db: u32) {
    for i in 0..shared.runs.len() {
        let r = shared.runs[i];
        if r.dboid == db && matches!(r.state, RunState::Requested | RunState::Finished) {
            runner::release_handle(r.dsm);
            shared.free_run(i);
        }
    }
    if !shared.runs.iter().any(|r| r.dboid == db && r.state != RunState::Free) {
        if let Some(slot) = shared.find_slot(db) {
            *slot = DbSlot { dboid: 0, ..*slot };
        }
    }
}

/// Databases with the extension beyond what the launcher can schedule: said
/// once when it happens (and when the number changes), not at every pass.
fn report_unscheduled(unscheduled: usize) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static REPORTED: AtomicUsize = AtomicUsize::new(0);
    if REPORTED.swap(unscheduled, Ordering::Relaxed) != unscheduled && unscheduled > 0 {
        warning!(
            "automation_ext launcher: {unscheduled} database(s) are not scheduled: at most {} databases with the extension (or being looked at) are scheduled at once",
            shared::MAX_DATABASES
        );
    }
}

/// How long the launcher may sleep: until the next database needs its
/// scheduler started (at most a second; a run that ends, a request and a
/// wake-up set its latch sooner).
fn next_wake(tracked: &HashMap<u32, Tracked>) -> Duration {
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let shared = SHARED.share();
    let soonest = shared
        .dbs
        .iter()
        .filter(|d| d.dboid != 0 && d.next_due != 0 && d.extension == Extension::Installed)
        .filter(|d| tracked.get(&d.dboid).map_or(true, |t| t.worker.is_none()))
        .map(|d| d.next_due - LEAD_US)
        .min();
    match soonest {
        // at least 10 ms: a database overdue but not startable now (its last
        // scheduler failed a moment ago, it is being dropped, every run slot
        // is taken) must not make the launcher spin; events set its latch anyway
        Some(t) => Duration::from_micros((t - now).clamp(MIN_NAP_US, 1_000_000) as u64),
        None => Duration::from_secs(1),
    }
}

fn start_scheduler(db: u32, patience_ms: i64) -> Option<WorkerHandle> {
    // SAFETY (below): reading this process's pid; the launcher is told when its schedulers start and stop.
    super::start_worker(
        &format!("automation_ext scheduler for database {db}"),
        "automation_ext scheduler",
        "automation_scheduler_main",
        pg_sys::Datum::from(db),
        &patience_ms.to_string(),
        // SAFETY: reading this process's pid
        Some(unsafe { pg_sys::MyProcPid }),
    )
}

/// Oids of the databases that allow connections and are not templates.
fn list_databases() -> Vec<u32> {
    let mut out = Vec::new();
    // SAFETY: a catalog heap scan of the shared catalog pg_database in its own
    // transaction, as the autovacuum launcher's get_database_list does; each
    // tuple's fixed-size part is read as FormData_pg_database (GETSTRUCT).
    unsafe {
        pg_sys::StartTransactionCommand();
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let data = (*tuple).t_data;
            let form = (data as *const u8).add((*data).t_hoff as usize) as *const pg_sys::FormData_pg_database;
            if (*form).datallowconn && !(*form).datistemplate {
                out.push((*form).oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::CommitTransactionCommand();
    }
    out
}
