//! The worker of one database: a dynamic background worker started by the
//! launcher while the database has work due (a fire, a SQL step, a
//! deadline, completions to record, a trigger inbox to drain), which leaves
//! when nothing is due for a moment, writing when it is next needed to
//! shared memory (0.3.0: worker slots follow the work, not the number of
//! databases).
//!
//! It knows no domain: at each turn of its loop it gives each duty wired in
//! by lib.rs (`super::Duty`: jobs, SQL steps and deadlines, recording, the
//! trigger inbox) a turn, reaps the run slots of its step workers, and
//! decides from the duties' next due times and the cluster's crowd
//! (`visit.rs`) how long to sleep and whether to stay.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;

use super::runner::{self, RunSegment, STEP_POOL};
use super::shared::{self, Extension, RunState, SHARED};
use super::visit::{self, Crowd};
use super::{now, Duty, Flow, Visit};
use crate::error::in_worker_transaction;
use crate::settings;

/// Entry point (bgw_main_arg: the database oid; bgw_extra: how many ms to
/// wait for the extension to appear, for a CREATE EXTENSION not yet committed).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn automation_scheduler_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    let patience_ms: i64 = BackgroundWorker::get_extra().parse().unwrap_or(0);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    // (The worker's commits stay synchronous: with them asynchronous, a
    // crash right after a run started could lose its row, and recovery would
    // not know the run was ever in flight.)
    // SAFETY: reports this process's application name (copied by PostgreSQL).
    unsafe { pg_sys::pgstat_report_appname(c"automation_ext scheduler".as_ptr()) };

    // Wait (briefly) for the extension.
    let deadline = now() + patience_ms * 1000;
    loop {
        if BackgroundWorker::transaction(crate::catalog::extension_ready) {
            break;
        }
        if now() >= deadline || super::stop_requested() {
            shared::report_extension(dboid, Extension::Missing);
            return;
        }
        BackgroundWorker::wait_latch(Some(Duration::from_millis(250)));
    }
    shared::report_extension(dboid, Extension::Installed);

    let mut visit = Visit {
        dboid: dboid.to_u32(),
        first: true,
        step_worker_ended: false,
        blocked: false,
        frequent: false,
        resident: false,
    };
    let mut duties = (super::wiring().duties)(visit.dboid);
    // SAFETY: reading this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut left_due = [0i64; shared::MAX_DUTIES];
    if let Some(slot) = SHARED.exclusive().slot_mut(visit.dboid) {
        slot.scheduler_pid = me;
        slot.waiting_since = 0;
        // (issue 34) sweep when the last worker did not leave cleanly, when
        // somebody asked, or once a minute; the time is written before the
        // sweep, so that a request (`wake`) or a failed part
        // (`shared::sweep_again`) arriving during it stays
        visit.first = !slot.left_cleanly || visit::sweeps(slot.swept_at, now());
        if visit.first {
            slot.swept_at = now();
        }
        slot.left_cleanly = false;
        left_due = slot.left_due;
    }
    for (duty, due) in duties.iter_mut().zip(left_due) {
        duty.resume((due != 0).then_some(due));
    }
    // the edge: an error here is raised as an ERROR (the worker exits; the
    // launcher starts another when the database's work is due)
    for duty in &mut duties {
        in_worker_transaction(|| duty.begin(&mut visit));
    }
    debug1!("automation_ext scheduler started");

    // the extension is there and the database writable when the loop ends
    let mut writable = true;
    loop {
        if super::stop_requested() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: what PostgreSQL's own processes do on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            duties.iter_mut().for_each(|d| d.reload_config());
        }
        if !settings::SCHEDULER_ENABLED.get() {
            log!("automation_ext scheduler stopping: automation.enabled is off");
            break;
        }
        // SAFETY: reads shared recovery state; callable in any process.
        if unsafe { pg_sys::RecoveryInProgress() } {
            writable = false;
            break;
        }
        if reap_step_workers(visit.dboid) {
            visit.step_worker_ended = true;
        }
        // (the jobs duty, first, says when the extension is gone)
        if duties.iter_mut().any(|d| d.turn(&mut visit) == Flow::ExtensionGone) {
            shared::report_extension(dboid, Extension::Missing);
            log!("automation_ext scheduler stopping: the extension was dropped");
            writable = false;
            break;
        }
        visit.first = false;
        let next = next_due(&mut duties);
        let lingering = duties.iter().any(|d| d.lingers());
        if !stay(&mut visit, next, lingering) {
            break;
        }
        // a fire still due after the turn waits for a slot: the launcher
        // sets our latch when a run of ours ends; no busy loop meanwhile
        let nap = visit::nap(next, now());
        if nap.latch_ms > 0 && !BackgroundWorker::wait_latch(Some(Duration::from_millis(nap.latch_ms))) {
            break; // asked to stop (SIGTERM)
        }
        if let Some(ts) = next {
            // the last fraction of a millisecond, without the latch
            let left = ts - now();
            if (1..1000).contains(&left) {
                std::thread::sleep(Duration::from_micros(left as u64));
            }
        }
    }
    // (0.15.0) successes handed off through shared memory and not counted
    // yet: counted before leaving, so that a clean shutdown or restart does
    // not lose them (a crash may: handoff.rs)
    if writable && crate::queue::handoff::waiting(visit.dboid) {
        in_worker_transaction(|| crate::queue::drain_handed(true));
    }
    // leaving: when this database needs a worker again (the launcher starts
    // one then; a change to its jobs wakes it sooner)
    let each: Vec<i64> = duties.iter_mut().map(|d| d.next_due().unwrap_or(0)).collect();
    let next = each.iter().copied().filter(|&t| t != 0).min().unwrap_or(0);
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
        if slot.scheduler_pid == me {
            slot.scheduler_pid = 0;
            slot.resident = false;
        }
        slot.next_due = next;
        slot.left_due = std::array::from_fn(|k| each.get(k).copied().unwrap_or(0));
        slot.left_cleanly = true;
        slot.fires_waiting = 0;
        if slot.executions_logged {
            // logged after our last look: the launcher starts another
            slot.woken = true;
        }
    }
}

/// The earliest time a duty next needs a turn.
fn next_due(duties: &mut [Box<dyn Duty>]) -> Option<i64> {
    duties.iter_mut().filter_map(|d| d.next_due()).min()
}

/// Whether this database's scheduler stays for another turn (`visit::stays`
/// on what it knows of the cluster; a duty that lingers keeps it while no
/// other database waits). Decided under the exclusive lock, with the
/// resident flag set or cleared in the same hold, so that two schedulers
/// deciding at once cannot both take the last resident place.
fn stay(visit: &mut Visit, next: Option<i64>, lingering: bool) -> bool {
    let last_request = shared::in_flight(visit.dboid).iter().map(|(_, r)| r.requested_at).max();
    let now = now();
    let mut shared = SHARED.exclusive();
    let installed = shared.dbs.iter().filter(|d| d.dboid != 0 && d.extension == Extension::Installed).count();
    let crowd = Crowd {
        others_wait: shared.dbs.iter().any(|d| d.dboid != 0 && d.dboid != visit.dboid && d.waiting_since != 0),
        crowded: installed > shared.scheduler_workers as usize,
        last_request,
        blocked: visit.blocked,
        frequent: visit.frequent,
        resident_room: shared.residents_besides(visit.dboid) < visit::resident_budget(shared.scheduler_workers),
    };
    let stays = visit::stays(next, now, crowd) || (lingering && !crowd.others_wait);
    visit.resident = stays && visit::resident(next, now, crowd);
    if let Some(slot) = shared.slot_mut(visit.dboid) {
        slot.resident = visit.resident;
    }
    stays
}

/// Free the run slots of this database's step workers that ended (a step
/// worker is not a job's run: nothing to record); true when one did.
fn reap_step_workers(dboid: u32) -> bool {
    let mut ended = false;
    for (i, run) in shared::in_flight(dboid) {
        if run.jobid != STEP_POOL || run.state != RunState::Finished {
            continue;
        }
        if let Some(seg) = RunSegment::attach(run.dsm) {
            if seg.header().state.load(Ordering::Acquire) != runner::STATE_SUCCEEDED {
                log!("automation_ext scheduler: a SQL step worker ended: {}", seg.message());
            }
            seg.release();
        }
        shared::free_finished(i, run.dsm);
        ended = true;
    }
    ended
}
