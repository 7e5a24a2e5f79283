//! The launcher: one static background worker, registered in `_PG_init` when
//! the library is preloaded, started by the postmaster once the server accepts
//! writes (BgWorkerStart_RecoveryFinished: on a standby it starts only after
//! promotion), restarted 5 seconds after a crash.
//!
//! It lists the databases (it connects to none, like the autovacuum launcher,
//! and reads the shared catalog pg_database), and keeps one scheduler running
//! in each database that has the extension. Whether a database has it is
//! only known from inside it, so a scheduler started in a database without it
//! reports "missing" in shared memory and exits; the launcher then leaves that
//! database alone until `CREATE EXTENSION` there wakes it (the install script
//! calls automation.wake_scheduler()) or, as a safety net for installs that
//! did not wake it (pg_restore of a dump), every ten minutes, one database at
//! a time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::prelude::*;

use super::shared::{self, Extension, SHARED};
use crate::settings;

/// Wait before restarting the scheduler of a database that has the extension.
const RESTART_DELAY: Duration = Duration::from_secs(5);
/// How often a database without the extension is looked at again unprompted.
const REPROBE_EVERY: Duration = Duration::from_secs(600);
/// How long a scheduler started for a woken database waits for the waking
/// transaction (CREATE EXTENSION) to commit.
const WOKEN_PATIENCE_MS: i64 = 30_000;
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
    worker: Option<DynamicBackgroundWorker>,
    stopped_at: Option<Instant>,
    reprobed_at: Option<Instant>,
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
    loop {
        if BackgroundWorker::sigterm_received() {
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
            let mut shared = SHARED.exclusive();
            for slot in shared.dbs.iter_mut() {
                if slot.dboid != 0 && !databases.contains(&slot.dboid) {
                    slot.dboid = 0;
                }
            }
        }
        if settings::SCHEDULER_ENABLED.get() {
            supervise(&databases, &mut tracked);
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break; // postmaster died
        }
    }
    SHARED.exclusive().launcher_pid = 0;
}

fn supervise(databases: &[u32], tracked: &mut HashMap<u32, Tracked>) {
    // a running scheduler that has not yet found out whether its database has
    // the extension is a probe; probe one database at a time
    let mut probing = false;
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let slots: HashMap<u32, (Extension, bool)> = {
        let mut shared = SHARED.exclusive();
        databases
            .iter()
            .filter_map(|&db| match shared.slot_mut(db) {
                Some(slot) if slot.hold_until > now => None, // being dropped
                Some(slot) => Some((db, (slot.extension, slot.woken))),
                None => {
                    warning!(
                        "automation_ext launcher: more than {} databases; database {db} is not scheduled",
                        shared::MAX_DATABASES
                    );
                    None
                }
            })
            .collect()
    };
    for (db, t) in tracked.iter_mut() {
        if let Some(w) = &t.worker {
            match w.pid() {
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => {
                    if slots.get(db).map(|s| s.0) != Some(Extension::Installed) {
                        probing = true;
                    }
                }
                Err(BackgroundWorkerStatus::PostmasterDied) => unsafe { pg_sys::proc_exit(1) },
                Err(_) => {
                    t.worker = None;
                    t.stopped_at = Some(Instant::now());
                }
            }
        }
    }
    for &db in databases {
        let Some(&(extension, woken)) = slots.get(&db) else {
            continue;
        };
        let t = tracked.entry(db).or_default();
        if t.worker.is_some() {
            continue;
        }
        let start = match extension {
            _ if woken => true,
            Extension::Installed => t.stopped_at.map_or(true, |s| s.elapsed() >= RESTART_DELAY),
            Extension::Unknown => !probing,
            Extension::Missing => !probing && t.reprobed_at.map_or(true, |r| r.elapsed() >= REPROBE_EVERY),
        };
        if !start {
            continue;
        }
        let patience = if woken { WOKEN_PATIENCE_MS } else { 0 };
        match start_scheduler(db, patience) {
            Some(worker) => {
                t.worker = Some(worker);
                if extension != Extension::Installed {
                    probing = true;
                    t.reprobed_at = Some(Instant::now());
                }
                if woken {
                    if let Some(slot) = SHARED.exclusive().slot_mut(db) {
                        slot.woken = false;
                    }
                }
            }
            None => {
                // no free worker slot now: try again at the next pass
                t.stopped_at = Some(Instant::now());
                break;
            }
        }
    }
}

fn start_scheduler(db: u32, patience_ms: i64) -> Option<DynamicBackgroundWorker> {
    super::start_worker(
        &format!("automation_ext scheduler for database {db}"),
        "automation_ext scheduler",
        "automation_scheduler_main",
        pg_sys::Datum::from(db),
        &patience_ms.to_string(),
        true,
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
