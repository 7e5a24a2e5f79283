//! What the launcher, the per-database schedulers and the backends share:
//! one small array in shared memory (only when the library is preloaded).
//!
//! - the launcher records each database it manages in a slot; a scheduler
//!   records there whether its database has the extension (so the launcher
//!   does not keep starting schedulers for databases without it);
//! - `CREATE EXTENSION` (and `automation.wake_scheduler()`) marks its database
//!   "woken", so the launcher starts a scheduler there at once;
//! - a scheduler is not resident: before it leaves, it writes when its
//!   database next needs it (`next_due`), and the launcher starts one again
//!   then (0.3.0: worker slots do not grow with the number of databases);
//! - runs: a scheduler asks for a run by filling a run slot (`Requested`); the
//!   launcher starts its worker when the cluster-wide budget allows
//!   (`Started`), sees it end (`Finished`), and has the database's scheduler
//!   record the outcome and free the slot. Runs that find no free worker wait
//!   here, in order of their due time; they never fail for want of a slot.

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

use super::WorkerHandle;
use crate::queue::log_range::LogRange;

/// Databases with the extension the launcher can schedule at once (0.8.0:
/// databases without it hold no slot, once a probe found the extension
/// missing; more than this are left unscheduled, and the launcher says so
/// once).
pub const MAX_DATABASES: usize = 1024;
/// Runs requested, running or waiting to be recorded, cluster-wide.
pub const MAX_RUNS: usize = 256;

/// Where a run slot is in its life.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    Free = 0,
    /// asked for by a scheduler; waits for the launcher to start its worker
    Requested = 1,
    /// its worker was started by the launcher
    Started = 2,
    /// its worker has exited; the database's scheduler records the outcome
    Finished = 3,
}

#[derive(Copy, Clone)]
#[repr(C)]
pub struct RunSlot {
    pub state: RunState,
    pub dboid: u32,
    pub jobid: i64,
    pub runid: i64,
    /// the run's dynamic shared memory segment (pinned: it outlives the
    /// scheduler that made it, until the run is recorded)
    pub dsm: u32,
    /// when the run was due, its job's priority, and when it was asked for
    pub due: i64,
    pub priority: i32,
    /// (issue 34) by when it is moot: its job's next fire (plan.rs
    /// `deadline`; a SQL step's: when it was asked for). Runs waiting for
    /// a worker start highest priority first, then earliest deadline.
    pub deadline: i64,
    pub requested_at: i64,
    /// the worker's process id once it runs, else 0
    pub pid: i32,
    /// the worker, once the launcher started it
    pub worker: WorkerHandle,
    /// the role the run connects as (a runner that stays takes only runs of
    /// its own database and role)
    pub role: u32,
    /// (0.7.0) the SQL step its worker is running now, 0 for none: what
    /// `stop_step` cancels. Written by the worker under the exclusive lock.
    pub step_id: i64,
    /// (0.8.0) when `stop_step` cancelled that step's query (0: not asked);
    /// a worker still on the same step a second later is terminated (the
    /// step caught the cancel), by the launcher
    pub stop_at: i64,
    /// (0.15.0) the job table (its oid) a job's run was started for, 0 for
    /// a step worker: a run of an extension dropped and created again is
    /// not recorded in the new table, whose jobids and runids start anew
    pub table: u32,
}

impl RunSlot {
    const FREE: RunSlot = RunSlot {
        state: RunState::Free,
        dboid: 0,
        jobid: 0,
        runid: 0,
        dsm: 0,
        due: 0,
        priority: 0,
        deadline: 0,
        requested_at: 0,
        pid: 0,
        worker: WorkerHandle::NONE,
        role: 0,
        step_id: 0,
        stop_at: 0,
        table: 0,
    };
}

/// `IdleRunner::assigned` of a runner waiting for a run.
pub const IDLE_WAITING: i32 = -1;
/// `IdleRunner::assigned` of a runner asked to leave (`evict_idle`), or
/// leaving at the end of its linger: still counted against the worker
/// budget until its process has exited (`reap_idle`).
pub const IDLE_EVICTED: i32 = -2;

/// A run worker that finished its run and stays a moment for the next run
/// of the same database and role (0.6.0): starting a worker costs a fork
/// and a connection (about 2 ms of CPU); handing it a run costs a latch.
#[derive(Copy, Clone)]
#[repr(C)]
pub struct IdleRunner {
    /// 0: free
    pub pid: i32,
    pub dboid: u32,
    pub role: u32,
    pub worker: WorkerHandle,
    /// the run slot handed to it, or -1
    pub assigned: i32,
}

impl IdleRunner {
    pub const FREE: IdleRunner = IdleRunner { pid: 0, dboid: 0, role: 0, worker: WorkerHandle::NONE, assigned: -1 };
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Extension {
    Unknown = 0,
    Installed = 1,
    Missing = 2,
}

#[derive(Copy, Clone)]
#[repr(C)]
pub struct DbSlot {
    /// 0: free
    pub dboid: u32,
    pub extension: Extension,
    /// a backend asked for a scheduler here (CREATE EXTENSION)
    pub woken: bool,
    /// no scheduler here before this time (the database is being dropped)
    pub hold_until: i64,
    /// when this database's scheduler is needed next (0: not known); written
    /// by its scheduler when it leaves
    pub next_due: i64,
    /// pid of its scheduler while one runs, else 0
    pub scheduler_pid: i32,
    /// since when it has needed a scheduler that the budget did not allow (0: not waiting)
    pub waiting_since: i64,
    /// its @reboot jobs ran since the server started
    pub booted: bool,
    /// when its jobs' role and database names were last brought up to date
    pub names_checked_at: i64,
    /// finished executions wait in its execution log for its scheduler to
    /// record them (src/queue.rs)
    pub executions_logged: bool,
    /// (0.13.0) the blocks of the execution log that hold them
    /// (`LogRange::NOTHING` while none waits)
    pub log_range: LogRange,
    /// due fires its scheduler left waiting for a slot at its last tick
    pub fires_waiting: u32,
    /// a committed transaction appended to its trigger inbox (sql/engine.sql)
    pub inbox_filled: bool,
    /// (0.7.0) a committed transaction made SQL step runs: its scheduler
    /// hands them to step workers (src/engine/steps.rs)
    pub steps_ready: bool,
    /// (issue 34) its scheduler stays as a resident (visit.rs `resident`),
    /// counted against the resident budget while `scheduler_pid` is set
    pub resident: bool,
    /// (issue 34) when a visit last looked at everything a commit may not
    /// have announced (`Visit::first`: the log, the inbox, the SQL steps);
    /// 0: not since the server started, the slot was made, or somebody asked
    /// (`wake`: CREATE EXTENSION, `automation.wake_scheduler()`)
    pub swept_at: i64,
    /// (issue 34) what each duty (in wiring order) said it next needed when
    /// the last worker of this database left (0: nothing): the next visit
    /// resumes from it (`Duty::resume`) instead of looking again
    pub left_due: [i64; MAX_DUTIES],
    /// (issue 34) its last worker left at the end of its loop (not by an
    /// ERROR or a signal mid-turn): `left_due` is what it knew, and nothing
    /// was left half done; if not, the next visit sweeps
    pub left_cleanly: bool,
}

/// The duties whose due time a database's slot keeps between visits.
pub const MAX_DUTIES: usize = 4;

#[derive(Copy, Clone)]
#[repr(C)]
pub struct Shared {
    pub launcher_pid: i32,
    /// the budgets in force (set by the launcher from the settings, clamped
    /// to what max_worker_processes leaves)
    pub max_workers: u32,
    pub scheduler_workers: u32,
    pub dbs: [DbSlot; MAX_DATABASES],
    pub runs: [RunSlot; MAX_RUNS],
    pub idle: [IdleRunner; MAX_RUNS],
}

impl DbSlot {
    const FREE: DbSlot = DbSlot {
        dboid: 0,
        extension: Extension::Unknown,
        woken: false,
        hold_until: 0,
        next_due: 0,
        scheduler_pid: 0,
        waiting_since: 0,
        booted: false,
        names_checked_at: 0,
        executions_logged: false,
        log_range: LogRange::NOTHING,
        fires_waiting: 0,
        inbox_filled: false,
        steps_ready: false,
        resident: false,
        swept_at: 0,
        left_due: [0; MAX_DUTIES],
        left_cleanly: false,
    };
}

impl Shared {
    /// Whether `dboid`'s scheduler is there as a resident.
    pub fn is_resident(&self, dboid: u32) -> bool {
        self.dbs.iter().any(|d| d.dboid == dboid && d.resident && d.scheduler_pid != 0)
    }

    /// (issue 34) Whether `d` is a resident whose database has no worker:
    /// no run started, no runner of its own waiting for its next fire.
    fn lacks_a_worker(&self, d: &DbSlot) -> bool {
        d.dboid != 0
            && d.resident
            && d.scheduler_pid != 0
            && !self.runs.iter().any(|r| r.dboid == d.dboid && r.state == RunState::Started)
            && !self.idle.iter().any(|w| w.pid != 0 && w.dboid == d.dboid && w.assigned == IDLE_WAITING)
    }

    /// (issue 34) The residents whose database has no worker (see
    /// `lacks_a_worker`), for the launcher's pass over the waiting runs.
    pub fn residents_lacking_a_worker(&self) -> Vec<u32> {
        self.dbs.iter().filter(|d| self.lacks_a_worker(d)).map(|d| d.dboid).collect()
    }

    /// (issue 34) Workers held for residents other than `dboid` (`lacking`:
    /// `residents_lacking_a_worker`): one for each, so that its next fire
    /// finds one — at most half the worker budget, so the other databases
    /// always have the other half.
    pub fn reserved_for_residents(&self, lacking: &[u32], dboid: u32) -> u32 {
        (lacking.iter().filter(|&&d| d != dboid).count() as u32).min(self.max_workers / 2)
    }

    /// `reserved_for_residents` for one run start (a scheduler's
    /// `start_now`, under the exclusive lock): counted in place, without
    /// building the list.
    pub fn reserved_for_residents_besides(&self, dboid: u32) -> u32 {
        (self.dbs.iter().filter(|d| d.dboid != dboid && self.lacks_a_worker(d)).count() as u32)
            .min(self.max_workers / 2)
    }

    /// Schedulers staying as residents, other than `dboid`'s.
    pub fn residents_besides(&self, dboid: u32) -> u32 {
        self.dbs.iter().filter(|d| d.dboid != 0 && d.dboid != dboid && d.resident && d.scheduler_pid != 0).count()
            as u32
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_pid: 0,
            max_workers: 0,
            scheduler_workers: 0,
            dbs: [DbSlot::FREE; MAX_DATABASES],
            runs: [RunSlot::FREE; MAX_RUNS],
            idle: [IdleRunner::FREE; MAX_RUNS],
        }
    }
}

// SAFETY: plain old data (integers, bools, a repr(u8) enum), no pointers.
unsafe impl PGRXSharedMemory for Shared {}

pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"automation_ext scheduler") };

/// Called from `_PG_init` while preloading.
pub fn init_shared_memory() {
    pg_shmem_init!(SHARED);
}

/// The runs of database `dboid` in the run slots (index, slot).
pub fn in_flight(dboid: u32) -> Vec<(usize, RunSlot)> {
    let shared = SHARED.share();
    shared
        .runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state != RunState::Free && r.dboid == dboid)
        .map(|(i, r)| (i, *r))
        .collect()
}

/// Free run slot `i` if it still holds the finished run of segment `dsm`
/// (not reused meanwhile).
pub fn free_finished(i: usize, dsm: u32) {
    let mut shared = SHARED.exclusive();
    if shared.runs[i].dsm == dsm && shared.runs[i].state == RunState::Finished {
        shared.free_run(i);
    }
}

impl Shared {
    /// The slot of `dboid`, if it has one (none is made).
    pub fn find_slot(&mut self, dboid: u32) -> Option<&mut DbSlot> {
        self.dbs.iter_mut().find(|s| s.dboid == dboid && dboid != 0)
    }

    /// The slot of `dboid`, made when it has none (None: every slot is taken).
    pub fn slot_mut(&mut self, dboid: u32) -> Option<&mut DbSlot> {
        if let Some(i) = self.dbs.iter().position(|s| s.dboid == dboid) {
            return Some(&mut self.dbs[i]);
        }
        let free = self.dbs.iter().position(|s| s.dboid == 0)?;
        self.dbs[free] = DbSlot { dboid, ..DbSlot::FREE };
        Some(&mut self.dbs[free])
    }

    /// Take a free run slot for a run of `dboid`; None when all are taken.
    #[allow(clippy::too_many_arguments)]
    pub fn request_run(
        &mut self,
        dboid: u32,
        role: u32,
        jobid: i64,
        dsm: u32,
        due: i64,
        priority: i32,
        deadline: i64,
        now: i64,
        table: u32,
    ) -> Option<usize> {
        let i = self.runs.iter().position(|r| r.state == RunState::Free)?;
        self.runs[i] = RunSlot {
            state: RunState::Requested,
            dboid,
            role,
            jobid,
            dsm,
            due,
            priority,
            deadline,
            requested_at: now,
            table,
            ..RunSlot::FREE
        };
        Some(i)
    }

    pub fn free_run(&mut self, i: usize) {
        self.runs[i] = RunSlot::FREE;
    }

    /// Forget idle runners that are gone (terminated while they waited:
    /// DROP DATABASE, pg_terminate_backend, a crash).
    pub fn reap_idle(&mut self) {
        for w in self.idle.iter_mut() {
            if w.pid != 0 && w.assigned < 0 && !matches!(w.worker.status(), super::WorkerStatus::Running(_)) {
                *w = IdleRunner::FREE;
            }
        }
    }

    /// Worker processes of runs: started ones and idle ones (the budget;
    /// call `reap_idle` first).
    pub fn workers_busy(&self) -> u32 {
        (self.runs.iter().filter(|r| r.state == RunState::Started).count()
            + self.idle.iter().filter(|w| w.pid != 0 && w.assigned < 0).count()) as u32
    }

    /// (issue 34) Every worker is busy and a run waits that no idle runner
    /// can take (another database or role): ask one idle runner to leave
    /// now rather than at the end of its linger, so that the waiting run's
    /// worker starts at once — not a resident's, which waits for its next
    /// fire. One at a time; the pid to signal, or None.
    pub fn evict_idle(&mut self) -> Option<i32> {
        if self.idle.iter().any(|w| w.pid != 0 && w.assigned == IDLE_EVICTED) {
            return None; // one is leaving: its exit wakes the launcher
        }
        let w =
            self.idle.iter().position(|w| w.pid != 0 && w.assigned == IDLE_WAITING && !self.is_resident(w.dboid))?;
        self.idle[w].assigned = IDLE_EVICTED;
        Some(self.idle[w].pid)
    }

    /// Hand the requested run `i` to an idle runner of its database and
    /// role, if one is waiting (and alive); true when handed. The runner is
    /// woken by the caller (`signal(pid)` of the returned runner).
    pub fn hand_to_idle(&mut self, i: usize) -> Option<i32> {
        let run = self.runs[i];
        if run.state != RunState::Requested || run.role == 0 {
            return None;
        }
        let w = self
            .idle
            .iter()
            .position(|w| w.pid != 0 && w.assigned == IDLE_WAITING && w.dboid == run.dboid && w.role == run.role)?;
        let idle = self.idle[w];
        if !matches!(idle.worker.status(), super::WorkerStatus::Running(_)) {
            self.idle[w] = IdleRunner::FREE; // it died while idle
            return None;
        }
        self.idle[w].assigned = i as i32;
        self.runs[i].state = RunState::Started;
        self.runs[i].worker = idle.worker;
        self.runs[i].pid = idle.pid;
        Some(idle.pid)
    }
}

/// Set the latch of process `pid` (a background worker of ours): SIGUSR1 is
/// what sets a background worker's latch.
pub fn signal(pid: i32) {
    if pid > 0 {
        // SAFETY: a signal to a pid; at worst the pid is stale and the
        // process (or another) ignores SIGUSR1's latch wake-up.
        unsafe {
            libc::kill(pid, libc::SIGUSR1);
        }
    }
}

/// Tell the launcher there is something to do (a run requested, a database
/// to visit).
pub fn signal_launcher() {
    let pid = SHARED.share().launcher_pid;
    signal(pid);
}

/// Ask the launcher for a scheduler in `dboid` now. Returns false when the
/// scheduler is not running (library not preloaded).
pub fn wake(dboid: pg_sys::Oid) -> bool {
    if !crate::settings::preloaded() {
        return false;
    }
    let launcher = {
        let mut shared = SHARED.exclusive();
        if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
            slot.woken = true;
            slot.extension = Extension::Unknown;
            // the next visit looks at everything (a restore may have filled
            // the log or the inbox without a commit that announced it)
            slot.swept_at = 0;
        }
        shared.launcher_pid
    };
    if launcher > 0 {
        // SAFETY: SIGUSR1 sets a background worker's latch (its handler in
        // both connected and unconnected workers); at worst the pid is stale
        // and the launcher's once-a-second poll picks the request up.
        unsafe {
            libc::kill(launcher, libc::SIGUSR1);
        }
    }
    true
}

/// The jobs of `dboid` changed (committed): its scheduler, if one runs, is
/// told by a relcache invalidation; otherwise the launcher starts one. (Also
/// when one runs: it may be leaving before it reads the change; one more
/// visit costs little.)
pub fn jobs_changed(dboid: pg_sys::Oid) {
    if !crate::settings::preloaded() {
        return;
    }
    let launcher = {
        let mut shared = SHARED.exclusive();
        if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
            slot.woken = true;
        }
        shared.launcher_pid
    };
    signal(launcher);
}

/// (issue 34) A duty of `dboid`'s worker could not do its part of a sweep
/// (a lock, an error): the next visit sweeps again.
pub fn sweep_again(dboid: u32) {
    if let Some(slot) = SHARED.exclusive().find_slot(dboid) {
        slot.swept_at = 0;
    }
}

/// A scheduler reports what it found in its database.
pub fn report_extension(dboid: pg_sys::Oid, extension: Extension) {
    if !crate::settings::preloaded() {
        return;
    }
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
        slot.extension = extension;
        if extension == Extension::Missing {
            slot.swept_at = 0;
        }
    }
}

/// A transaction that logged finished executions in `dboid` committed: have
/// its scheduler record them (signal it, or have the launcher start one).
/// `range`: the blocks of the execution log that this transaction's rows
/// are in (`LogRange::ALL` when unknown; `LogRange::NOTHING` to wake it
/// only), so that the recording reads those instead of the whole log
/// (queue/log_range.rs). Cheap when a wake-up that covers `range` is
/// already on its way: one shared lock.
pub fn executions_logged(dboid: pg_sys::Oid, range: LogRange) {
    if !crate::settings::preloaded() {
        return;
    }
    let db = dboid.to_u32();
    {
        let shared = SHARED.share();
        if let Some(slot) = shared.dbs.iter().find(|s| s.dboid == db) {
            if slot.executions_logged && slot.log_range.covers(range) && (slot.scheduler_pid > 0 || slot.woken) {
                return;
            }
        }
    }
    let pid = {
        let mut shared = SHARED.exclusive();
        let launcher = shared.launcher_pid;
        match shared.slot_mut(db) {
            Some(slot) => {
                slot.log_range = slot.log_range.union(range);
                if slot.executions_logged && (slot.scheduler_pid > 0 || slot.woken) {
                    // a wake-up is on its way: it takes the wider range (a
                    // signal here would have the launcher start a scheduler
                    // again for a wake-up already asked for)
                    return;
                }
                slot.executions_logged = true;
                if slot.scheduler_pid > 0 {
                    slot.scheduler_pid
                } else {
                    slot.woken = true;
                    launcher
                }
            }
            None => launcher,
        }
    };
    signal(pid);
}

/// A transaction that appended to the trigger inbox of `dboid` committed:
/// have its scheduler drain it (woken as for recording).
pub fn inbox_filled(dboid: pg_sys::Oid) {
    if !crate::settings::preloaded() {
        return;
    }
    if let Some(slot) = SHARED.exclusive().slot_mut(dboid.to_u32()) {
        slot.inbox_filled = true;
    }
    executions_logged(dboid, LogRange::NOTHING);
}

/// A transaction that made SQL step runs in `dboid` committed: have its
/// scheduler hand them to step workers (woken as for recording; the step
/// workers already running find them by themselves).
pub fn steps_ready(dboid: pg_sys::Oid) {
    if !crate::settings::preloaded() {
        return;
    }
    let pid = {
        let mut shared = SHARED.exclusive();
        let launcher = shared.launcher_pid;
        match shared.slot_mut(dboid.to_u32()) {
            Some(slot) => {
                slot.steps_ready = true;
                if slot.scheduler_pid > 0 {
                    slot.scheduler_pid
                } else {
                    slot.woken = true;
                    launcher
                }
            }
            None => launcher,
        }
    };
    signal(pid);
}

/// Clear a request flag of `dboid`'s slot; true when it was set.
fn take_flag(dboid: u32, flag: impl FnOnce(&mut DbSlot) -> &mut bool) -> bool {
    let mut shared = SHARED.exclusive();
    shared.slot_mut(dboid).is_some_and(|slot| std::mem::replace(flag(slot), false))
}

/// The scheduler of `dboid` takes the request to dispatch SQL steps.
pub fn take_steps_ready(dboid: u32) -> bool {
    take_flag(dboid, |slot| &mut slot.steps_ready)
}

/// Cancel the query of the worker running SQL step `step_id` (its
/// execution ended: cancelled, failed, timed out), if one runs it now. The
/// signal is sent under the lock the worker takes to move to another step,
/// so it never reaches the worker's next step (the worker drops a cancel
/// that arrives between steps: see src/engine/steps.rs).
pub fn stop_step(dboid: u32, role: u32, step_id: i64) -> bool {
    if !crate::settings::preloaded() || step_id == 0 {
        return false;
    }
    let mut shared = SHARED.exclusive();
    // (0.8.0) the step of this database, run as the execution's owner: a
    // step id alone named any database's step
    match shared.runs.iter_mut().find(|r| {
        r.state == RunState::Started && r.step_id == step_id && r.pid > 0 && r.dboid == dboid && r.role == role
    }) {
        Some(run) => {
            // SAFETY: SIGINT is a query cancel for a connected background
            // worker (die/StatementCancelHandler are its handlers); the pid
            // is the worker's own, which holds step_id until it takes this
            // lock, so it is alive and running that step.
            unsafe { libc::kill(run.pid, libc::SIGINT) };
            if run.stop_at == 0 {
                // SAFETY: reads the clock.
                run.stop_at = unsafe { pg_sys::GetCurrentTimestamp() };
            }
            true
        }
        None => false,
    }
}

/// Mark the run slot of this worker as running step `id` (0: none). Under
/// the exclusive lock: `stop_step` signals under it, so a cancel of
/// the previous step was delivered before we get here, and is dropped.
pub fn running_step(dsm: u32, id: i64) {
    // SAFETY: reading this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let mut s = SHARED.exclusive();
    if let Some(slot) = s.runs.iter_mut().find(|r| r.state == RunState::Started && r.dsm == dsm) {
        slot.pid = me;
        slot.step_id = id;
        slot.stop_at = 0;
    }
    // SAFETY: plain stores to this process's interrupt flags: a query
    // cancel meant for the step that ended (sent before we took the lock)
    // must not cancel the next one. A termination request (ProcDiePending)
    // is kept.
    unsafe {
        pg_sys::QueryCancelPending = 0;
    }
}

/// How long a step worker has to stop its step's query after the cancel.
pub const STOP_GRACE_US: i64 = 1_000_000;

/// (0.8.0) Step workers still running a step a second after its query was
/// cancelled (the step caught the cancel, or its timeout): terminated, as
/// a backend is (its step is recorded already; the worker's end is
/// noticed like any). Called by the launcher at every pass.
pub fn terminate_unstopped(now: i64) {
    let mut shared = SHARED.exclusive();
    for run in shared.runs.iter_mut() {
        if run.state == RunState::Started
            && run.step_id != 0
            && run.stop_at > 0
            && now - run.stop_at >= STOP_GRACE_US
            && run.pid > 0
        {
            log!(
                "automation_ext: terminating the step worker (pid {}) whose SQL step {} did not stop when cancelled",
                run.pid,
                run.step_id
            );
            // SAFETY: SIGTERM to a worker of ours, alive under this lock
            // (it clears step_id under it before moving on); it ends as a
            // backend does (die).
            unsafe { libc::kill(run.pid, libc::SIGTERM) };
            run.stop_at = -1;
        }
    }
}

/// The scheduler of `dboid` takes the request to drain its trigger inbox.
pub fn take_inbox_filled(dboid: u32) -> bool {
    take_flag(dboid, |slot| &mut slot.inbox_filled)
}

/// The scheduler of `dboid` takes the request to record executions: the
/// blocks of the log to read (empty: a wake-up only), `None` when there
/// was none.
pub fn take_executions_logged(dboid: u32) -> Option<LogRange> {
    let mut shared = SHARED.exclusive();
    let slot = shared.slot_mut(dboid)?;
    std::mem::replace(&mut slot.executions_logged, false)
        .then(|| std::mem::replace(&mut slot.log_range, LogRange::NOTHING))
}

/// Is a request to record executions of `dboid` waiting?
pub fn executions_logged_pending(dboid: u32) -> bool {
    SHARED.share().dbs.iter().any(|s| s.dboid == dboid && s.executions_logged)
}

/// Can a scheduler of `dboid` be asked to record executions? Not when the
/// launcher manages as many databases as it can and this is not one of them
/// (its scheduler never runs: the completing transaction records instead).
pub fn can_record(dboid: pg_sys::Oid) -> bool {
    let db = dboid.to_u32();
    SHARED.share().dbs.iter().any(|s| s.dboid == db || s.dboid == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scheduler's count in place (`reserved_for_residents_besides`) and
    /// the launcher's from the list agree, whoever asks; and the reserve
    /// never takes more than half the worker budget.
    #[test]
    fn the_reserve_counted_in_place_is_the_launchers() {
        let mut s = Shared { max_workers: 4, ..Default::default() };
        // databases 1..=5: residents (with a scheduler) except 5; 2 has a
        // run started, 3 a runner of its own waiting
        for (k, dboid) in (1..=5u32).enumerate() {
            s.dbs[k].dboid = dboid;
            s.dbs[k].scheduler_pid = 100 + dboid as i32;
            s.dbs[k].resident = dboid != 5;
        }
        s.runs[0] = RunSlot { state: RunState::Started, dboid: 2, ..RunSlot::FREE };
        s.idle[0] = IdleRunner { pid: 7, dboid: 3, role: 1, worker: WorkerHandle::NONE, assigned: IDLE_WAITING };
        assert_eq!(s.residents_lacking_a_worker(), vec![1, 4]);
        for asker in [0u32, 1, 2, 4, 5, 9] {
            let lacking = s.residents_lacking_a_worker();
            assert_eq!(
                s.reserved_for_residents_besides(asker),
                s.reserved_for_residents(&lacking, asker),
                "asked by {asker}"
            );
        }
        assert_eq!(s.reserved_for_residents_besides(9), 2);
        assert_eq!(s.reserved_for_residents_besides(1), 1);
        // a runner leaving (asked to) is no longer one of its database's
        s.idle[0].assigned = IDLE_EVICTED;
        assert_eq!(s.residents_lacking_a_worker(), vec![1, 3, 4]);
        // at most half the budget: 2 of 4
        assert_eq!(s.reserved_for_residents_besides(9), 2);
        assert_eq!(s.reserved_for_residents_besides(1), 2);
    }
}
