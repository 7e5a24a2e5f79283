//! The job runner: a dynamic background worker that runs one job's command,
//! connected to the job's database as the job's role, and reports the outcome
//! to its scheduler through a dynamic shared memory segment.
//!
//! The command runs as top-level statements, the way a client's simple query
//! does (postgres.c's exec_simple_query), not through SPI: so VACUUM, CREATE
//! INDEX CONCURRENTLY, REINDEX CONCURRENTLY and procedures that COMMIT work.
//! Several statements in one command form one implicit transaction, exactly
//! as `psql -c 'a; b'` does, unless they contain BEGIN/COMMIT themselves.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, Ordering};

use pgrx::prelude::*;

use crate::error::Error;

use super::WorkerHandle;

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
    let name = if jobid == crate::engine::steps::STEP_POOL {
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

// timeout.h is not in pgrx's bindings. STATEMENT_TIMEOUT is the fourth
// TimeoutId (after STARTUP_PACKET_TIMEOUT, DEADLOCK_TIMEOUT, LOCK_TIMEOUT) in
// PostgreSQL 13 through 18; the #[pg_test] `statement_timeout_id_is_right`
// proves it on the version built against (a wrong id fires another
// timeout's handler, with another message).
const STATEMENT_TIMEOUT: c_int = 3;
extern "C-unwind" {
    fn enable_timeout_after(id: c_int, delay_ms: c_int);
    fn disable_timeout(id: c_int, keep_indicator: bool);
}

/// How long a run worker stays after its run for the next run of the same
/// database and role (0.6.0). A burst of due runs (1,000 jobs due in the
/// same minute) then costs a latch per run instead of a fork and a
/// connection; a lone run's worker leaves a moment later than before.
const LINGER_MS: i64 = 250;

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
    if header.jobid == crate::engine::steps::STEP_POOL {
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

    let outcome = if header.jobid == crate::engine::steps::STEP_POOL {
        // (0.7.0) not a job: serve the SQL steps of this role
        crate::engine::steps::serve(handle).map(|n| format!("{n} SQL steps"))
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
    let stays = !(header.jobid == crate::engine::steps::STEP_POOL && state == STATE_FAILED);
    let ran = (header.database, header.role);
    // SAFETY: nothing references the mapping after this.
    unsafe { pg_sys::dsm_detach(seg) };
    stays.then_some(ran)
}

/// The session reset between two runs (and two SQL steps) of a worker that
/// stays: what `DISCARD ALL` does, except DISCARD PLANS — a run's settings,
/// SET ROLE, temporary tables, prepared statements, cursors, LISTENs and
/// advisory locks go; the plans cached by the extension's own functions
/// stay (PostgreSQL's plan cache already plans again for another role or
/// search_path), so that each step does not plan the engine again (0.7.0:
/// 314 -> 662 steps/s with the rest of that change).
pub const SESSION_RESET: &str = "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; DEALLOCATE ALL; \
                                 UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); DISCARD TEMP; \
                                 DISCARD SEQUENCES";

/// Set (and report) this worker's application_name: what pg_stat_activity
/// shows. As a client's connection parameter (PGC_S_CLIENT): it is the
/// value `RESET ALL` and `DISCARD ALL` go back to, so the session resets
/// between runs and steps never blank it, even for a moment.
pub fn set_application_name(name: &CStr) {
    // SAFETY: a plain GUC assignment after InitPostgres, outside or inside
    // a transaction; PostgreSQL copies the NUL-terminated value.
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            name.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_CLIENT,
        );
        pg_sys::pgstat_report_appname(name.as_ptr());
    }
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
    use super::shared::{self, IdleRunner, RunState, SHARED};
    // SAFETY: reading this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    // pg_stat_activity tells a worker waiting for a run from one running a
    // job or serving SQL steps (renamed before its slot is released, so that
    // the step workers it shows never exceed automation.step_workers)
    set_application_name(c"automation_ext worker (idle)");
    let (scheduler, place) = {
        let mut s = SHARED.exclusive();
        let Some(i) = s.runs.iter().position(|r| r.state == RunState::Started && r.dsm == done) else {
            // not followed by a slot (the launcher restarted): just leave
            return None;
        };
        let run = s.runs[i];
        s.runs[i].state = RunState::Finished;
        let scheduler = s.dbs.iter().find(|d| d.dboid == run.dboid).map_or(0, |d| d.scheduler_pid);
        s.reap_idle();
        let place = if shared::preloaded() && s.workers_busy() < s.max_workers {
            s.idle.iter().position(|w| w.pid == 0).inspect(|&k| {
                s.idle[k] = IdleRunner {
                    pid: me,
                    dboid: database.to_u32(),
                    role: role.to_u32(),
                    worker: run.worker,
                    assigned: -1,
                };
            })
        } else {
            None
        };
        (scheduler, place)
    };
    shared::signal(if scheduler > 0 { scheduler } else { SHARED.share().launcher_pid });
    let k = place?;
    // SAFETY: reads the clock.
    let deadline = unsafe { pg_sys::GetCurrentTimestamp() } + LINGER_MS * 1000;
    loop {
        // a shared look while nothing has happened; the exclusive lock only
        // to leave the idle list (assigned, or time is up)
        // SAFETY: reads the clock.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        if SHARED.share().idle[k].assigned >= 0 || now >= deadline {
            let mut s = SHARED.exclusive();
            let assigned = s.idle[k].assigned;
            s.idle[k] = IdleRunner::FREE;
            return (assigned >= 0).then(|| s.runs[assigned as usize].dsm);
        }
        // SAFETY: waiting on this process's latch, set by SIGUSR1 (a
        // scheduler handing us a run) or by SIGTERM's handler; then the
        // interrupt check ends the process on SIGTERM, as in a backend.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                20,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

/// Run `sql` at top level (see `run_top_level`); an ERROR comes back as the
/// error value (message, detail, SQLSTATE), after the session is cleaned up
/// the way PostgreSQL's own error recovery does (timeouts off, out of every
/// transaction level), so the worker can go on. A FATAL (the worker was
/// terminated) ends the process, as in any backend. Only for background
/// workers, outside a transaction.
pub fn run_catching(sql: &str) -> Result<String, Error> {
    run_caught(sql, false).map(|(tag, _)| tag)
}

/// `run_top_level` with its ERROR caught and the session cleaned up; a
/// command that leaves a transaction block open is rolled back and fails.
fn run_caught(sql: &str, capture: bool) -> Result<(String, Option<FirstValue>), Error> {
    PgTryBuilder::new(|| {
        // SAFETY: callers are background workers outside any transaction.
        let ran = unsafe { run_top_level(sql, capture) };
        no_open_block()?;
        Ok::<_, Error>(ran)
    })
    .catch_others(|e| {
        // SAFETY: see above; this is what PostgresMain does after an ERROR.
        unsafe {
            disable_timeout(STATEMENT_TIMEOUT, false);
            pg_sys::AbortOutOfAnyTransaction();
        }
        Err(Error::caught(&e))
    })
    .execute()
}

/// A command that began a transaction block and did not end it (`BEGIN;
/// INSERT ...` without COMMIT) is rolled back, as a client session that
/// ends there would be, and fails: nothing after it (the next run's
/// bookkeeping, the session reset) may run inside its block.
fn no_open_block() -> Result<(), Error> {
    // SAFETY: reads this backend's transaction state; the abort is what
    // PostgreSQL does for a session that ends inside a block.
    unsafe {
        if pg_sys::IsTransactionOrTransactionBlock() {
            pg_sys::AbortOutOfAnyTransaction();
            return Err(Error::new(
                PgSqlErrorCode::ERRCODE_INVALID_TRANSACTION_STATE,
                "the command left a transaction block open (BEGIN without COMMIT): it was rolled back",
            )
            .with_hint("End the block with COMMIT (or ROLLBACK) in the same command."));
        }
    }
    Ok(())
}

/// The first column of the first row the last statement of a command
/// returned, as text (its type's output function), and its type.
#[derive(Clone, Debug)]
pub struct FirstValue {
    pub text: Option<String>,
    pub type_oid: pg_sys::Oid,
}

/// As `run_catching`, and keep the first value the last statement returns
/// (None when it returns no row): what a SQL step outputs (0.7.0).
pub fn run_catching_first_value(sql: &str) -> Result<Option<FirstValue>, Error> {
    run_caught(sql, true).map(|(_, first)| first)
}

extern "C-unwind" {
    // executor/tstoreReceiver.h (not in pgrx's bindings); the same six
    // parameters in PostgreSQL 14 through 18.
    fn SetTuplestoreDestReceiverParams(
        receiver: *mut pg_sys::DestReceiver,
        store: *mut pg_sys::Tuplestorestate,
        context: pg_sys::MemoryContext,
        detoast: bool,
        target_tupdesc: pg_sys::TupleDesc,
        map_failure_msg: *const c_char,
    );
}

thread_local! {
    /// The memory context of parse and plan trees, made once per process
    /// and reset at each command (a worker that stays runs many).
    static PARSE_CONTEXT: std::cell::Cell<pg_sys::MemoryContext> = const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Run `sql` as top-level statements; returns the last command's completion
/// tag (as psql shows it: "SELECT 1", "VACUUM", "INSERT 0 5") and, if
/// `capture`, the first value the last statement returned.
///
/// # Safety
/// Must be called in a connected background worker, outside a transaction.
unsafe fn run_top_level(sql: &str, capture: bool) -> (String, Option<FirstValue>) {
    let source = CString::new(sql.replace('\0', " ")).unwrap_or_default();
    let source_ptr: *const c_char = source.as_ptr();
    // SAFETY (whole body): this mirrors exec_simple_query: a transaction
    // command around parsing, then per statement analyze, plan, portal run
    // with isTopLevel = true, and commit at the end (or at each transaction
    // statement). Every pointer passed comes from the PostgreSQL call before
    // it and lives in the current transaction's memory.
    unsafe {
        // Parse and plan trees live in a context of their own, like
        // postgres.c's MessageContext: statements such as VACUUM commit and
        // start transactions inside, which frees transaction memory.
        // (made once, reset for each command: the trees of an earlier
        // command, or of one that failed, go here)
        let context = match PARSE_CONTEXT.get() {
            c if c.is_null() => {
                let c = pg_sys::AllocSetContextCreateInternal(
                    pg_sys::TopMemoryContext,
                    c"automation_ext job".as_ptr(),
                    0,
                    8 * 1024,
                    8 * 1024 * 1024,
                );
                PARSE_CONTEXT.set(c);
                c
            }
            c => {
                pg_sys::MemoryContextReset(c);
                c
            }
        };
        let mut first: Option<FirstValue> = None;
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_RUNNING, source_ptr);
        pg_sys::StartTransactionCommand();
        pg_sys::CurrentMemoryContext = context;
        let mut in_xact = true;
        let parsetrees = pg_sys::pg_parse_query(source_ptr);
        let n = if parsetrees.is_null() { 0 } else { (*parsetrees).length };
        let implicit_block = n > 1;
        let mut tag = String::new();
        for i in 0..n {
            let raw = pg_sys::list_nth(parsetrees, i) as *mut pg_sys::RawStmt;
            let is_xact_stmt = (*(*raw).stmt).type_ == pg_sys::NodeTag::T_TransactionStmt;
            if !in_xact {
                pg_sys::SetCurrentStatementStartTimestamp();
                pg_sys::StartTransactionCommand();
                in_xact = true;
            }
            pg_sys::CurrentMemoryContext = context;
            if implicit_block && !is_xact_stmt {
                pg_sys::BeginImplicitTransactionBlock();
            }
            if pg_sys::StatementTimeout > 0 {
                enable_timeout_after(STATEMENT_TIMEOUT, pg_sys::StatementTimeout);
            }
            let snapshot = pg_sys::analyze_requires_snapshot(raw);
            if snapshot {
                pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            }
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                source_ptr,
                std::ptr::null_mut(),
                0,
                std::ptr::null_mut(),
            );
            let plans = pg_sys::pg_plan_queries(
                queries,
                source_ptr,
                pg_sys::CURSOR_OPT_PARALLEL_OK as c_int,
                std::ptr::null_mut(),
            );
            if snapshot {
                pg_sys::PopActiveSnapshot();
            }
            let command_tag = pg_sys::CreateCommandTag((*raw).stmt);
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(portal, std::ptr::null(), source_ptr, command_tag, plans, std::ptr::null_mut());
            pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
            let mut format: i16 = 0;
            pg_sys::PortalSetResultFormat(portal, 1, &mut format);
            // the last statement's rows go to a tuple store when its first
            // value is wanted (spilled to disk past work_mem)
            let store = if capture && i == n - 1 {
                pg_sys::tuplestore_begin_heap(false, false, pg_sys::work_mem)
            } else {
                std::ptr::null_mut()
            };
            let receiver = if store.is_null() {
                pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone)
            } else {
                let r = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestTuplestore);
                SetTuplestoreDestReceiverParams(
                    r,
                    store,
                    pg_sys::CurrentMemoryContext,
                    false,
                    std::ptr::null_mut(),
                    std::ptr::null(),
                );
                r
            };
            let mut qc = pg_sys::QueryCompletion::default();
            crate::compat::portal_run_to_end(portal, receiver, &mut qc);
            if let Some(destroy) = (*receiver).rDestroy {
                destroy(receiver);
            }
            if !store.is_null() {
                first = first_value(store, (*portal).tupDesc);
                pg_sys::tuplestore_end(store);
            }
            pg_sys::PortalDrop(portal, false);
            disable_timeout(STATEMENT_TIMEOUT, false);
            tag = completion_tag(&qc);
            if is_xact_stmt {
                pg_sys::CommitTransactionCommand();
                in_xact = false;
            } else if i == n - 1 {
                if implicit_block {
                    pg_sys::EndImplicitTransactionBlock();
                }
                pg_sys::CommitTransactionCommand();
                in_xact = false;
            } else {
                pg_sys::CommandCounterIncrement();
            }
        }
        if in_xact {
            pg_sys::CommitTransactionCommand();
        }
        pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, std::ptr::null());
        (tag, first)
    }
}

/// The first column of the first row in `store` (rows of `desc`), as text.
///
/// # Safety
/// `store` holds rows of `desc` (the portal's result descriptor, or NULL
/// for a statement that returns none); inside a transaction.
unsafe fn first_value(store: *mut pg_sys::Tuplestorestate, desc: pg_sys::TupleDesc) -> Option<FirstValue> {
    // SAFETY: as the caller promises; the slot is made for `desc`, read,
    // and dropped here; the output function returns a palloc'd C string.
    unsafe {
        if desc.is_null() || (*desc).natts < 1 {
            return None;
        }
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsMinimalTuple);
        let found = if pg_sys::tuplestore_gettupleslot(store, true, false, slot) {
            let type_oid = crate::compat::column_type(desc, 0);
            let mut isnull = false;
            let datum = pg_sys::slot_getattr(slot, 1, &mut isnull);
            let text = (!isnull).then(|| {
                let mut output = pg_sys::InvalidOid;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(type_oid, &mut output, &mut varlena);
                let c = pg_sys::OidOutputFunctionCall(output, datum);
                CStr::from_ptr(c).to_string_lossy().into_owned()
            });
            Some(FirstValue { text, type_oid })
        } else {
            None
        };
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        found
    }
}

/// "SELECT 3", "INSERT 0 5", "VACUUM" (what BuildQueryCompletionString makes).
fn completion_tag(qc: &pg_sys::QueryCompletion) -> String {
    // SAFETY: GetCommandTagName returns a static string for any tag.
    let (name, rows) = unsafe {
        (
            CStr::from_ptr(pg_sys::GetCommandTagName(qc.commandTag)).to_string_lossy().into_owned(),
            pg_sys::command_tag_display_rowcount(qc.commandTag),
        )
    };
    if !rows {
        name
    } else if qc.commandTag == pg_sys::CommandTag::CMDTAG_INSERT {
        format!("{name} 0 {}", qc.nprocessed)
    } else {
        format!("{name} {}", qc.nprocessed)
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use super::{disable_timeout, enable_timeout_after, STATEMENT_TIMEOUT};
    use crate::error::Error;

    #[pg_test]
    fn statement_timeout_id_is_right() {
        // statement_timeout is off: only our call arms a timeout
        Spi::run("SET LOCAL statement_timeout = 0").unwrap();
        let outcome = crate::subxact::run(|| {
            // SAFETY: arms a timeout of this backend; disarmed below.
            unsafe { enable_timeout_after(STATEMENT_TIMEOUT, 50) };
            Spi::run("SELECT pg_catalog.pg_sleep(5)")
        });
        // SAFETY: disarms it (already fired, or not) either way.
        unsafe { disable_timeout(STATEMENT_TIMEOUT, false) };
        let error = Error::caught(&outcome.expect_err("the timeout cancels the sleep"));
        assert_eq!(error.message, "canceling statement due to statement timeout");
        assert_eq!(error.sqlstate(), "57014");
    }
}

#[cfg(test)]
mod unit {
    use super::truncate_utf8;

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_utf8("abc", 10), "abc");
        assert_eq!(truncate_utf8("abcdef", 3), "abc");
        assert_eq!(truncate_utf8("aé", 2), "a"); // é is two bytes
        assert_eq!(truncate_utf8("€€", 4), "€");
    }
}
