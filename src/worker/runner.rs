//! The run worker: a dynamic background worker connected to a database as a
//! role, that runs what its run segment says — one job's command (at top
//! level, `crate::toplevel`), or, for a step worker (`STEP_POOL`), the SQL
//! steps of its role (the engine's `serve`, wired in by lib.rs) — and
//! reports the outcome through that dynamic shared memory segment. After a
//! run it stays a moment for the next run of its database and role.
use std::ffi::CString;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering};

use pgrx::prelude::*;

use crate::error::Error;
use crate::toplevel::{run_catching, set_application_name, truncate_utf8, SESSION_RESET};

use super::shared::{self, IdleRunner, RunState, SHARED};
use super::WorkerHandle;

/// The "job" of a run that is a step worker: serve the SQL steps of the
/// run's role (0.7.0) instead of running a command.
pub const STEP_POOL: i64 = -1;

pub const MESSAGE_BYTES: usize = 2000;
const MAGIC: u32 = 0x4155_544f; // "AUTO"

/// Run states, written by the runner (`state`), read by the scheduler.
pub const STATE_STARTING: u32 = 0;
pub const STATE_RUNNING: u32 = 1;
pub const STATE_SUCCEEDED: u32 = 2;
pub const STATE_FAILED: u32 = 3;

/// The head of a run's shared memory segment; the command's bytes follow.
#[repr(C)]
pub struct RunHeader {
    magic: u32,
    pub state: AtomicU32,
    pub database: pg_sys::Oid,
    pub role: pg_sys::Oid,
    pub jobid: i64,
    /// statement_timeout in ms, 0 for none
    pub timeout_ms: i32,
    /// (0.8.0) when the fire this run serves was due (PostgreSQL
    /// timestamp); 0 for none (a step worker). Shown to the run as
    /// `automation.scheduled_for`
    pub scheduled_for: i64,
    pub start_time: AtomicI64,
    pub end_time: AtomicI64,
    pub pid: AtomicI32,
    command_len: u32,
    message_len: u32,
    message: [u8; MESSAGE_BYTES],
}

/// A run's segment, owned by the scheduler until the run has been reaped.
pub struct RunSegment {
    seg: *mut pg_sys::dsm_segment,
}

impl RunSegment {
    /// Create the segment of a run (in the scheduler).
    pub fn create(
        jobid: i64,
        database: pg_sys::Oid,
        role: pg_sys::Oid,
        timeout_ms: i32,
        scheduled_for: i64,
        command: &str,
    ) -> RunSegment {
        let size = std::mem::size_of::<RunHeader>() + command.len();
        // SAFETY: dsm_create returns a mapping of at least `size` bytes (or
        // raises an ERROR); we initialise the header in place before anyone
        // else can see the handle, and copy the command right after it.
        // dsm_pin_mapping keeps the mapping past the current transaction's
        // resource owner, until `detach`; dsm_pin_segment keeps the segment
        // itself after every process has detached (the scheduler that made
        // it may leave before the run ends), until `release`.
        unsafe {
            let seg = pg_sys::dsm_create(size, 0);
            pg_sys::dsm_pin_mapping(seg);
            pg_sys::dsm_pin_segment(seg);
            let base = pg_sys::dsm_segment_address(seg) as *mut u8;
            let header = base as *mut RunHeader;
            header.write(RunHeader {
                magic: MAGIC,
                state: AtomicU32::new(STATE_STARTING),
                database,
                role,
                jobid,
                timeout_ms,
                scheduled_for,
                start_time: AtomicI64::new(0),
                end_time: AtomicI64::new(0),
                pid: AtomicI32::new(0),
                command_len: command.len() as u32,
                message_len: 0,
                message: [0; MESSAGE_BYTES],
            });
            std::ptr::copy_nonoverlapping(command.as_ptr(), base.add(std::mem::size_of::<RunHeader>()), command.len());
            RunSegment { seg }
        }
    }

    pub fn handle(&self) -> u32 {
        // SAFETY: seg is a live segment we created.
        unsafe { pg_sys::dsm_segment_handle(self.seg) }
    }

    pub fn header(&self) -> &RunHeader {
        // SAFETY: the mapping lives until `detach`, and starts with the
        // header written in `create`.
        unsafe { &*(pg_sys::dsm_segment_address(self.seg) as *const RunHeader) }
    }

    /// The runner's message (an error, or the last command tag). Read it
    /// after an Acquire load of `state` has seen a final state: the runner
    /// writes the message before it stores that state with Release.
    pub fn message(&self) -> String {
        let h = self.header();
        let len = (h.message_len as usize).min(MESSAGE_BYTES);
        String::from_utf8_lossy(&h.message[..len]).into_owned()
    }

    pub fn detach(self) {
        // SAFETY: we own the mapping; nothing reads it after this.
        unsafe { pg_sys::dsm_detach(self.seg) }
    }

    /// Map the segment of a run again (in the scheduler that records it);
    /// None when it is gone (or not ours).
    pub fn attach(handle: u32) -> Option<RunSegment> {
        // SAFETY: dsm_attach returns NULL for a segment that no longer
        // exists; a segment we made starts with our header (checked by magic).
        unsafe {
            let seg = pg_sys::dsm_attach(handle);
            if seg.is_null() {
                return None;
            }
            pg_sys::dsm_pin_mapping(seg);
            let run = RunSegment { seg };
            if run.header().magic != MAGIC {
                run.detach();
                return None;
            }
            Some(run)
        }
    }

    /// The run is recorded: unpin the segment (it goes when the last mapping does).
    pub fn release(self) {
        let handle = self.handle();
        // SAFETY: the segment was pinned by `create`, once; unpinned once here.
        unsafe { pg_sys::dsm_unpin_segment(handle) };
        self.detach();
    }
}

/// Unpin the segment of a run nobody will record (its database is gone).
/// A segment already gone is not an error: the launcher calls this while it
/// cleans up, and an ERROR there would end it, and the next launcher would
/// meet the same slot (0.7.0: seen as a crash loop).
pub fn release_handle(handle: u32) {
    let unpinned = PgTryBuilder::new(|| {
        // SAFETY: as `release`; the segment is destroyed if nobody maps it.
        unsafe { pg_sys::dsm_unpin_segment(handle) };
        Ok::<(), Error>(())
    })
    .catch_others(|e| Err(Error::caught(&e)))
    .execute();
    if let Err(e) = unpinned {
        log!("automation_ext: the segment of a run was already gone ({e})");
    }
}

/// Register the worker of a run (told to `notify_pid` when it starts and
/// stops); None when no worker slot is free.
pub fn start_run_worker(jobid: i64, dsm: u32, notify_pid: i32) -> Option<WorkerHandle> {
    let name = if jobid == STEP_POOL {
        "automation_ext step worker".to_owned()
    } else {
        format!("automation_ext job {jobid}")
    };
    super::start_worker(
        &name,
        "automation_ext job",
        "automation_job_main",
        pg_sys::Datum::from(dsm),
        "",
        Some(notify_pid),
    )
}

/// Start the worker of run slot `i` at once if the cluster-wide budget
/// allows and no other run waits; false when it is left to the launcher.
pub fn start_now(i: usize) -> bool {
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
        || started + shared.reserved_for_residents_besides(shared.runs[i].dboid) >= shared.max_workers
        || waiting > 1
        || shared.launcher_pid == 0
    {
        return shared.runs[i].state == RunState::Started;
    }
    let run = shared.runs[i];
    match start_run_worker(run.jobid, run.dsm, shared.launcher_pid) {
        Some(worker) => {
            shared.runs[i].state = RunState::Started;
            shared.runs[i].worker = worker;
            true
        }
        None => false,
    }
}

/// How long a run worker stays after its run for the next run of the same
/// database and role (0.6.0). A burst of due runs (1,000 jobs due in the
/// same minute) then costs a latch per run instead of a fork and a
/// connection; a lone run's worker leaves a moment later than before.
const LINGER_MS: i64 = 250;
/// (issue 34) How long it stays when its database's scheduler is a
/// resident (a job firing every second or two): until the next fire, which
/// it then runs without a fork and a connection. It holds the worker that
/// the budget keeps for that resident anyway (shared.rs
/// `reserved_for_residents`).
const RESIDENT_LINGER_MS: i64 = super::visit::RESIDENT_US / 1000 + 500;

/// Entry point of a job run (bgw_main_arg: the run's dsm handle). After the
/// run it stays up to LINGER_MS for the next run of its database and role,
/// which a scheduler or the launcher hands it (shared.rs `hand_to_idle`);
/// the session is reset between runs (`SESSION_RESET`).
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn automation_job_main(arg: pg_sys::Datum) {
    // SIGTERM ends the run at the next interrupt check (never inside a
    // critical section); SIGINT keeps its default, cancelling the query,
    // which the statement timeout relies on.
    super::handle_sigterm_like_a_backend();
    // SAFETY: standard background worker start-up, handlers installed.
    unsafe { pg_sys::BackgroundWorkerUnblockSignals() };
    let mut handle = arg.value() as u32;
    let mut first = true;
    loop {
        let Some((database, role)) = run_one(handle, first) else {
            return;
        };
        first = false;
        match linger(handle, database, role) {
            Some(next) => handle = next,
            None => return,
        }
    }
}

/// Run the run of segment `handle` (connecting first if `first`, else
/// resetting the session); its database and role, or None when there was
/// nothing to run.
fn run_one(handle: u32, first: bool) -> Option<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: attaching by the handle the scheduler passed; NULL when the
    // scheduler is gone (and the segment with it), in which case nobody
    // wants the result.
    let seg = unsafe { pg_sys::dsm_attach(handle) };
    if seg.is_null() {
        log!("automation_ext job: the scheduler that started this run is gone; nothing to do");
        return None;
    }
    // SAFETY: the segment starts with the header the scheduler wrote
    // (checked by magic) followed by command_len bytes of command; it stays
    // mapped until we detach at the end.
    let (header, command) = unsafe {
        let base = pg_sys::dsm_segment_address(seg) as *mut u8;
        let header = &mut *(base as *mut RunHeader);
        if header.magic != MAGIC {
            pg_sys::dsm_detach(seg);
            Error::internal("automation_ext job", format!("run segment {handle} is not ours")).raise();
        }
        let bytes = std::slice::from_raw_parts(base.add(std::mem::size_of::<RunHeader>()), header.command_len as usize);
        (header, String::from_utf8_lossy(bytes).into_owned())
    };

    if first {
        // Connecting fails (FATAL) if the role may not log in or the
        // database is gone; the scheduler checks both first, and reports a
        // run that ended without a result as failed.
        pgrx::bgworkers::BackgroundWorker::connect_worker_to_spi_by_oid(Some(header.database), Some(header.role));
    } else if let Err(e) = run_catching(SESSION_RESET) {
        // the previous run's settings, temporary tables, prepared
        // statements, advisory locks, LISTENs and SET ROLE are gone, as in a
        // new session; if that fails the run fails (and the worker leaves)
        fail(header, &format!("could not reset the session of the previous run: {e}"));
        // SAFETY: nothing references the mapping after this.
        unsafe { pg_sys::dsm_detach(seg) };
        return None;
    }
    if header.jobid == STEP_POOL {
        set_application_name(c"automation_ext step worker");
    } else {
        set_application_name(&CString::new(format!("automation_ext job {}", header.jobid)).unwrap_or_default());
    }
    if header.timeout_ms > 0 {
        let ms = CString::new(header.timeout_ms.to_string()).unwrap_or_default();
        // SAFETY: a plain GUC assignment after InitPostgres; PostgreSQL
        // copies the NUL-terminated value.
        unsafe {
            pg_sys::SetConfigOption(
                c"statement_timeout".as_ptr(),
                ms.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }

    if header.scheduled_for != 0 {
        // (0.8.0) the fire's due time, for the run to read (a schedule
        // trigger's fire passes it on, and keys its execution by it)
        let due = CString::new(crate::civil::Civil::iso_utc(header.scheduled_for)).unwrap_or_default();
        // SAFETY: as for statement_timeout above.
        unsafe {
            pg_sys::SetConfigOption(
                c"automation.scheduled_for".as_ptr(),
                due.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
            );
        }
    }

    // SAFETY: reading this process's pid and the clock.
    let (pid, started) = unsafe { (pg_sys::MyProcPid, pg_sys::GetCurrentTimestamp()) };
    header.pid.store(pid, Ordering::Relaxed);
    header.start_time.store(started, Ordering::Relaxed);
    header.state.store(STATE_RUNNING, Ordering::Release);

    let outcome = if header.jobid == STEP_POOL {
        // (0.7.0) not a job: serve the SQL steps of this role
        (super::wiring().serve_steps)(handle).map(|n| format!("{n} SQL steps"))
    } else {
        run_catching(&command)
    };

    let (state, message) = match outcome {
        Ok(tag) => (STATE_SUCCEEDED, tag),
        Err(error) => {
            log!("automation_ext job {}: {}", header.jobid, error);
            (STATE_FAILED, error.to_string())
        }
    };
    report(header, state, &message);
    // a step worker that failed (it could not record a step) exits instead
    // of staying: the steps it held are recovered once it is gone
    let stays = !(header.jobid == STEP_POOL && state == STATE_FAILED);
    let ran = (header.database, header.role);
    // SAFETY: nothing references the mapping after this.
    unsafe { pg_sys::dsm_detach(seg) };
    stays.then_some(ran)
}

/// Leave the outcome in the run's header (message, end time, then state).
fn report(header: &mut RunHeader, state: u32, message: &str) {
    let bytes = truncate_utf8(message, MESSAGE_BYTES);
    header.message[..bytes.len()].copy_from_slice(bytes.as_bytes());
    header.message_len = bytes.len() as u32;
    // SAFETY: reading the clock.
    header.end_time.store(unsafe { pg_sys::GetCurrentTimestamp() }, Ordering::Relaxed);
    // Release: message and times are visible to whoever sees the state.
    header.state.store(state, Ordering::Release);
}

fn fail(header: &mut RunHeader, message: &str) {
    log!("automation_ext job {}: {}", header.jobid, message);
    report(header, STATE_FAILED, message);
}

/// The run of segment `done` has ended (its outcome is in its segment):
/// mark its slot Finished (its scheduler records it at once), and stay up
/// to LINGER_MS for a run that a scheduler or the launcher hands us (one of
/// our database and role). The segment handle of that run, or None.
fn linger(done: u32, database: pg_sys::Oid, role: pg_sys::Oid) -> Option<u32> {
    // SAFETY: reading this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    // pg_stat_activity tells a worker waiting for a run from one running a
    // job or serving SQL steps (renamed before its slot is released, so that
    // the step workers it shows never exceed automation.step_workers); its
    // query is what it waits for, not the last statement it ran (set first:
    // a worker named idle never shows its last run's command)
    // SAFETY: PostgreSQL copies the string into shared memory.
    unsafe {
        pg_sys::pgstat_report_activity(
            pg_sys::BackendState::STATE_IDLE,
            c"waiting for another run of this database and role".as_ptr(),
        )
    };
    set_application_name(c"automation_ext worker (idle)");
    let (scheduler, place, linger_ms) = {
        let mut s = SHARED.exclusive();
        let Some(i) = s.runs.iter().position(|r| r.state == RunState::Started && r.dsm == done) else {
            // not followed by a slot (the launcher restarted): just leave
            return None;
        };
        let run = s.runs[i];
        s.runs[i].state = RunState::Finished;
        let scheduler = s.dbs.iter().find(|d| d.dboid == run.dboid).map_or(0, |d| d.scheduler_pid);
        s.reap_idle();
        let place = if crate::settings::preloaded() && s.workers_busy() < s.max_workers {
            s.idle.iter().position(|w| w.pid == 0).inspect(|&k| {
                s.idle[k] = IdleRunner {
                    pid: me,
                    dboid: database.to_u32(),
                    role: role.to_u32(),
                    worker: run.worker,
                    assigned: shared::IDLE_WAITING,
                };
            })
        } else {
            None
        };
        let linger_ms = if s.is_resident(database.to_u32()) { RESIDENT_LINGER_MS } else { LINGER_MS };
        (scheduler, place, linger_ms)
    };
    // the scheduler (or the launcher) may start a fire that waited for this
    // run to end (max_running_jobs, an overlap policy, the worker budget)
    shared::signal(if scheduler > 0 { scheduler } else { SHARED.share().launcher_pid });
    let k = place?;
    // SAFETY: reads the clock.
    let deadline = unsafe { pg_sys::GetCurrentTimestamp() } + linger_ms * 1000;
    loop {
        // a shared look while nothing has happened; the exclusive lock only
        // to leave the idle list (assigned, or time is up)
        // SAFETY: reads the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        // (or asked to leave: a run of another database needs the worker budget)
        let assigned = SHARED.share().idle[k].assigned;
        if assigned >= 0 || assigned == shared::IDLE_EVICTED || now >= deadline {
            let mut s = SHARED.exclusive();
            let assigned = s.idle[k].assigned;
            if assigned >= 0 {
                s.idle[k] = IdleRunner::FREE; // the run's slot counts us now
                return Some(s.runs[assigned as usize].dsm);
            }
            // leaving: the entry stays, counted against the worker budget,
            // until this process has exited (`reap_idle` frees it then) — a
            // worker started for the budget meanwhile would be one too many
            s.idle[k].assigned = shared::IDLE_EVICTED;
            return None;
        }
        // SAFETY: waiting on this process's latch until the linger ends:
        // every change of our entry (a run handed to us: `hand_to_idle`;
        // asked to leave: `evict_idle`) is followed by SIGUSR1, which sets
        // the latch, and SIGTERM's handler sets it too; the entry is read
        // again after each wake-up, so a signal between the read and the
        // wait is not lost. Then the interrupt check ends the process on
        // SIGTERM, as in a backend. (Before: a 20 ms poll, 125 wake-ups
        // in a resident's 2.5 s linger.)
        unsafe {
            let left_ms = ((deadline - now) / 1000).clamp(1, 1000);
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                left_ms,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}
