//! The native parts of the execution queue (0.4.0; the SQL API is in
//! sql/runtime.sql):
//!
//! - `v7`: time-ordered UUIDs (RFC 9562 version 7), so the queue's primary
//!   key grows at its right edge instead of touching random index pages;
//! - the recorder: an execution that finishes in the queue is deleted from it
//!   and appended to `automation_workflows.execution_log` (no index) by the
//!   completing transaction. [`record`] moves logged executions into
//!   `workflow_executions`, the history users query, in bulk, and sends their
//!   completion NOTIFYs (the trigger's payload and channel). The database's
//!   scheduler does it, woken when a completing transaction commits; with no
//!   scheduler to do it (library not preloaded, `automation.enabled` off) the
//!   completing transaction records its own executions before it commits.
//!   (0.10.0) A queue's history mode (`automation.queue_settings`, set by
//!   `set_queue_history`) decides which of them the history keeps: those it
//!   does not keep are counted in `execution_stats` and notified all the same.
//!   (0.13.0) The completing transaction reports the blocks of the log it
//!   wrote to, and a recording reads only those (`log_range`).

pub mod handoff;
pub mod log_range;
pub mod record;

use std::cell::Cell;
use std::ffi::c_void;

use pgrx::prelude::*;
use pgrx::Uuid;

use crate::error::{Context, OrRaise, Result};
use crate::notify::{self, Completion};
use crate::settings;
use crate::worker::shared;
use log_range::LogRange;

/// Version-7 UUIDs: pure, so that their layout and ordering are tested
/// without PostgreSQL.
pub mod v7 {
    /// What one process needs to keep its UUIDs increasing: the millisecond
    /// of the last one and the 12-bit counter within it.
    #[derive(Debug, Default, Clone, Copy)]
    pub struct Clock {
        ms: u64,
        counter: u16,
    }

    impl Clock {
        pub const fn new() -> Clock {
            Clock { ms: 0, counter: 0 }
        }
    }

    /// The next UUID for the time `now_ms` (Unix milliseconds) with the
    /// random bits `random`. Within a process the result always increases:
    /// in the same millisecond (or if the clock went back) the 12-bit
    /// counter of `rand_a` steps on, and when it is used up the timestamp
    /// is moved on by one millisecond (RFC 9562, section 6.2, method 1).
    pub fn next(clock: &mut Clock, now_ms: u64, random: u128) -> [u8; 16] {
        if now_ms > clock.ms {
            clock.ms = now_ms;
            // start low in the millisecond's range, leaving room to count
            clock.counter = (random as u16) & 0x1ff;
        } else if clock.counter >= 0xfff {
            clock.ms += 1;
            clock.counter = 0;
        } else {
            clock.counter += 1;
        }
        let ms = clock.ms & 0xffff_ffff_ffff;
        let rand_b = (random >> 16) as u64 & 0x3fff_ffff_ffff_ffff;
        let mut out = [0u8; 16];
        out[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        out[6..8].copy_from_slice(&(0x7000 | clock.counter).to_be_bytes());
        out[8..].copy_from_slice(&(0x8000_0000_0000_0000 | rand_b).to_be_bytes());
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn layout_is_version_7_variant_rfc() {
            let mut c = Clock::default();
            let u = next(&mut c, 0x0123_4567_89ab, u128::MAX);
            assert_eq!(&u[..6], &[0x01, 0x23, 0x45, 0x67, 0x89, 0xab]);
            assert_eq!(u[6] >> 4, 7, "version");
            assert_eq!(u[8] >> 6, 0b10, "variant");
        }

        #[test]
        fn increases_within_a_millisecond_across_counter_overflow_and_clock_steps_back() {
            let mut c = Clock::default();
            let mut last = next(&mut c, 1_000, 0);
            let mut random: u128 = 0x9e37_79b9_7f4a_7c15;
            for i in 0..10_000u64 {
                // the same millisecond, then a clock step back, then on again
                let now = match i {
                    0..=4_999 => 1_000,
                    5_000..=5_999 => 900,
                    _ => 1_000 + i,
                };
                random = random.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let u = next(&mut c, now, random);
                assert!(u > last, "uuid {i} did not increase");
                last = u;
            }
        }

        #[test]
        fn a_new_millisecond_restarts_the_counter_low() {
            let mut c = Clock::default();
            next(&mut c, 5, 0xffff);
            let u = next(&mut c, 6, 0xffff);
            let counter = u16::from_be_bytes([u[6], u[7]]) & 0xfff;
            assert!(counter <= 0x1ff, "{counter:#x}");
        }
    }
}

/// Waiting claims: who waits for executions of which workflow. A claimer
/// that found nothing registers here and sleeps on its latch; a transaction
/// that enqueued executions of that workflow signals it when it commits.
pub mod waiters {
    use pgrx::{PGRXSharedMemory, PgAtomic, PgLwLock};
    use std::sync::atomic::AtomicU32;

    /// Claimers that can wait at once (more poll instead, every 50 ms).
    pub const MAX_WAITERS: usize = 256;

    #[derive(Copy, Clone, Default)]
    #[repr(C)]
    pub struct Waiter {
        /// 0: free
        pub pid: i32,
        pub dboid: u32,
        /// [`key`] of the workflow's name
        pub key: u32,
    }

    #[derive(Copy, Clone)]
    #[repr(C)]
    pub struct Waiters {
        pub slots: [Waiter; MAX_WAITERS],
    }

    impl Default for Waiters {
        fn default() -> Self {
            Waiters { slots: [Waiter::default(); MAX_WAITERS] }
        }
    }

    // SAFETY: plain old data (integers), no pointers.
    unsafe impl PGRXSharedMemory for Waiters {}

    pub static WAITERS: PgLwLock<Waiters> = unsafe { PgLwLock::new(c"automation_ext claim waiters") };
    /// How many slots are taken: committing enqueuers look at the slots only
    /// when somebody waits.
    pub static WAITING: PgAtomic<AtomicU32> = unsafe { PgAtomic::new(c"automation_ext claim waiting") };

    /// A workflow name's key (32-bit FNV-1a): two names with the same key
    /// only wake each other's claimers for nothing.
    pub fn key(name: &str) -> u32 {
        name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn keys_are_fnv1a() {
            assert_eq!(super::key(""), 0x811c_9dc5);
            assert_eq!(super::key("a"), 0xe40c_292c);
            assert_ne!(super::key("etl"), super::key("etm"));
        }
    }
}

/// From `_PG_init` while preloading: the waiters' shared memory.
pub fn init_shared_memory() {
    use waiters::{WAITERS, WAITING};
    pgrx::pg_shmem_init!(WAITERS);
    pgrx::pg_shmem_init!(WAITING);
    handoff::init_shared_memory();
}

thread_local! {
    static CLOCK: Cell<v7::Clock> = const { Cell::new(v7::Clock::new()) };
    /// This transaction logged finished executions: wake the recorder at
    /// commit, to read these blocks of the log (empty: none logged).
    static LOGGED: Cell<LogRange> = const { Cell::new(LogRange::NOTHING) };
    /// This transaction appended to the trigger inbox: have it drained at commit.
    static INBOX: Cell<bool> = const { Cell::new(false) };
    /// Keys of the workflows this transaction enqueued executions of, and
    /// how many: wake that many of their waiting claimers at commit.
    static ENQUEUED: std::cell::RefCell<Vec<(u32, u32)>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The waiter slot this backend holds (until its transaction ends).
    static WAIT_SLOT: Cell<Option<usize>> = const { Cell::new(None) };
    static CALLBACK_REGISTERED: Cell<bool> = const { Cell::new(false) };
    /// How many rows this process's last recording moved.
    static LAST_RECORDED: Cell<i64> = const { Cell::new(0) };
}

/// Run the recording's statement `sql` (parameters of `types`) with `args`
/// through the plan this process keeps for it (kept.rs). At batch 1 a
/// scheduler makes up to a hundred recordings a second of a few rows each,
/// and parsing and planning them anew each time was half of its CPU
/// (16,000 completions in `none`: 1.5–1.75 s, 0.74–0.89 s with kept plans).
/// (`keep` false: parsed and planned for this call only.)
fn run<'conn>(
    client: &mut pgrx::spi::SpiClient<'conn>,
    keep: bool,
    sql: &'static str,
    types: &[PgOid],
    args: &[pgrx::datum::DatumWithOid],
) -> std::result::Result<pgrx::spi::SpiTupleTable<'conn>, pgrx::spi::SpiError> {
    if keep {
        crate::kept::update(client, sql, types, args)
    } else {
        client.update(sql, None, args)
    }
}

fn register_callback() {
    if !CALLBACK_REGISTERED.get() {
        // SAFETY: registers a plain function, for the life of the backend,
        // that PostgreSQL calls at every transaction end.
        unsafe { pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut()) };
        CALLBACK_REGISTERED.set(true);
    }
}

/// Executions of `workflow_name` were enqueued: wake its waiting claimers
/// when this transaction commits.
fn enqueued(workflow_name: &str) {
    if !crate::settings::preloaded() {
        return;
    }
    let key = waiters::key(workflow_name);
    ENQUEUED.with_borrow_mut(|keys| match keys.iter_mut().find(|(k, _)| *k == key) {
        Some((_, n)) => *n = n.saturating_add(1),
        None => keys.push((key, 1)),
    });
    register_callback();
}

/// Wake, per workflow, as many waiting claimers as executions were enqueued
/// (not all of them: eight idle workers woken for one execution would all
/// claim, and seven find nothing). Which ones: a different place in the
/// array each time, so that no slot is always first.
fn wake_waiters(keys: &[(u32, u32)]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static ROTATE: AtomicUsize = AtomicUsize::new(0);
    if waiters::WAITING.get().load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: the database this backend is connected to.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let start = ROTATE.fetch_add(1, Ordering::Relaxed) % waiters::MAX_WAITERS;
    let pids = {
        let w = waiters::WAITERS.share();
        let mut left: Vec<(u32, u32)> = keys.to_vec();
        let mut pids = Vec::new();
        for i in 0..waiters::MAX_WAITERS {
            let slot = w.slots[(start + i) % waiters::MAX_WAITERS];
            if slot.pid == 0 || slot.dboid != db {
                continue;
            }
            if let Some((_, n)) = left.iter_mut().find(|(k, n)| *k == slot.key && *n > 0) {
                *n -= 1;
                pids.push(slot.pid);
            }
        }
        pids
    };
    for pid in pids {
        shared::signal(pid);
    }
}

fn release_wait_slot() {
    use std::sync::atomic::Ordering;
    if let Some(i) = WAIT_SLOT.take() {
        // SAFETY: this process's pid.
        let me = unsafe { pg_sys::MyProcPid };
        let mut w = waiters::WAITERS.exclusive();
        if w.slots[i].pid == me {
            w.slots[i] = waiters::Waiter::default();
            waiters::WAITING.get().fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One step of a waiting claim (see claim_executions): the first call
/// registers this backend as waiting for `workflow_name` and returns at once
/// (the caller claims again, so nothing committed meanwhile is missed); the
/// next ones sleep until an enqueue of the workflow commits or `deadline`
/// passes (claim_executions makes it at most a second away while executions
/// of the workflow are delayed or leased: they come due without waking anyone).
fn wait_step(workflow_name: &str, deadline: i64) {
    use std::sync::atomic::Ordering;
    // SAFETY: reads the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let left_ms = (deadline.saturating_sub(now) / 1000).clamp(0, i64::from(i32::MAX));
    let key = waiters::key(workflow_name);
    // SAFETY: the database this backend is connected to, and its pid.
    let (db, me) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::MyProcPid) };
    let registered = crate::settings::preloaded()
        && WAIT_SLOT.get().is_some_and(|i| {
            let w = waiters::WAITERS.share().slots[i];
            w.pid == me && w.dboid == db && w.key == key
        });
    if !registered && crate::settings::preloaded() {
        release_wait_slot();
        let mut w = waiters::WAITERS.exclusive();
        if let Some(i) = w.slots.iter().position(|s| s.pid == 0) {
            w.slots[i] = waiters::Waiter { pid: me, dboid: db, key };
            waiters::WAITING.get().fetch_add(1, Ordering::Relaxed);
            WAIT_SLOT.set(Some(i));
            register_callback();
            drop(w);
            // SAFETY: this backend's own latch.
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
            return;
        }
    }
    // registered: sleep on the latch; not preloaded, or no free slot: poll
    let timeout = if WAIT_SLOT.get().is_some() { left_ms } else { left_ms.min(50) };
    // SAFETY: waits on this backend's own latch; WL_EXIT_ON_PM_DEATH exits
    // if the postmaster dies.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

fn uuid_v7_bytes() -> [u8; 16] {
    // SAFETY: reads the clock; pg_prng_uint64 advances this backend's
    // global PRNG (seeded at backend start; random() uses it).
    let (now_us, random) = unsafe {
        let now = pg_sys::GetCurrentTimestamp();
        let hi = pg_sys::pg_prng_uint64(&raw mut pg_sys::pg_global_prng_state);
        let lo = pg_sys::pg_prng_uint64(&raw mut pg_sys::pg_global_prng_state);
        (now, (u128::from(hi) << 64) | u128::from(lo))
    };
    // PostgreSQL counts from 2000-01-01; Unix from 1970-01-01
    let unix_ms = (now_us / 1000 + 946_684_800_000).max(0) as u64;
    let mut clock = CLOCK.get();
    let out = v7::next(&mut clock, unix_ms, random);
    CLOCK.set(clock);
    out
}

/// Called by the SQL functions that log finished executions (ids: the ones
/// they logged). With a scheduler to record them, wake it when this
/// transaction commits; otherwise record them now, in this transaction.
/// `range`: the blocks of the log they are in.
fn logged(ids: Vec<Uuid>, range: LogRange) -> Result<()> {
    if recorder_running() {
        LOGGED.set(LOGGED.get().union(range));
        register_callback();
        return Ok(());
    }
    record(Some(ids), i32::MAX, false, range)?;
    // (0.15.0) and the hand-offs left from when a scheduler recorded here
    // (`automation.enabled` turned off since, say): they would wait for it
    drain_handed(false).map(|_| ())
}

/// Is a scheduler going to record executions in this database? The launcher
/// runs (it starts a scheduler for a database whose executions wait), the
/// scheduler is enabled, and the database is one the launcher manages.
fn recorder_running() -> bool {
    crate::settings::preloaded()
        && settings::SCHEDULER_ENABLED.get()
        && shared::SHARED.share().launcher_pid > 0
        // SAFETY: the database this backend is connected to.
        && shared::can_record(unsafe { pg_sys::MyDatabaseId })
}

/// Will a scheduler drain what this transaction leaves in the trigger
/// inbox? If so, it is woken when the transaction commits; if not, the
/// caller drains it itself.
pub fn inbox_will_be_drained() -> bool {
    if recorder_running() {
        INBOX.set(true);
        register_callback();
        true
    } else {
        false
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    let committed = match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT => true,
        pg_sys::XactEvent::XACT_EVENT_ABORT => false,
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            // (0.15.0) hand-offs counted by a transaction that may never
            // commit would hold their slots, and the ring's head, for as
            // long as it stays prepared
            if handoff::taken_any() {
                crate::error::Error::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "cannot PREPARE a transaction that counted successes handed off by completions",
                )
                .with_hint("Call automation.record_executions() in a transaction of its own.")
                .raise();
            }
            return;
        }
        pg_sys::XactEvent::XACT_EVENT_PREPARE => {
            // its own hand-offs are counted once it is committed, at a later
            // recording (its commit wakes nobody)
            handoff::at_transaction_end(false);
            return;
        }
        _ => return,
    };
    let range = LOGGED.replace(LogRange::NOTHING);
    // (0.15.0) successes handed off (handoff.rs) wake the scheduler too; with
    // none logged, the empty range asks for no reading of the log
    let handed = handoff::at_transaction_end(committed);
    if (!range.is_empty() || handed) && committed {
        // SAFETY: the database this backend is connected to.
        shared::executions_logged(unsafe { pg_sys::MyDatabaseId }, range);
    }
    if INBOX.replace(false) && committed {
        // SAFETY: the database this backend is connected to.
        shared::inbox_filled(unsafe { pg_sys::MyDatabaseId });
    }
    let keys = ENQUEUED.take();
    if committed && !keys.is_empty() {
        wake_waiters(&keys);
    }
    release_wait_slot();
}

/// Count and notify the successes of queues without history that were
/// handed to the scheduler (handoff.rs), in this transaction; how many.
/// `relaxed` as for `record` (the scheduler's: its commit does not wait for
/// its WAL flush; a crash loses such counts, as it loses the hand-offs).
pub fn drain_handed(relaxed: bool) -> Result<i64> {
    // SAFETY: the database this backend is connected to.
    if !handoff::waiting(unsafe { pg_sys::MyDatabaseId }.to_u32()) {
        return Ok(0);
    }
    let Facts { channel, .. } = facts(relaxed)?;
    handoff::drain(channel.as_deref())
}

/// What a recording needs to know first, in one round trip: the oids of the
/// history and of the log, and where the completion trigger of the history
/// notifies — `None` when it was detached or disabled (then the recorder is
/// silent too). `relaxed` also makes this transaction's commit asynchronous.
struct Facts {
    tables: [Option<pg_sys::Oid>; 2],
    channel: Option<String>,
    /// `automation.queue_settings` exists (0.10.0): the library may run
    /// before `ALTER EXTENSION automation_ext UPDATE` reached this database,
    /// and then records everything, as the version it runs under did
    modes: bool,
}

/// What a recording needs to know first ($1, the completion trigger's
/// name; $2, relaxed): the two tables, the trigger and its channel, and
/// whether the queues' history modes exist (0.10.0's SQL). A `static`:
/// its plan is kept (kept.rs), found by this address.
static FACTS_SQL: &str = "SELECT 'automation_workflows.workflow_executions'::pg_catalog.regclass::pg_catalog.oid,
                'automation_workflows.execution_log'::pg_catalog.regclass::pg_catalog.oid,
                t.tgname IS NOT NULL,
                CASE WHEN t.tgnargs > 0
                     THEN pg_catalog.split_part(pg_catalog.encode(t.tgargs, 'escape'), '\\000', 1) END,
                CASE WHEN $2 THEN pg_catalog.set_config('synchronous_commit', 'off', true) END,
                pg_catalog.to_regclass('automation.queue_settings') IS NOT NULL
           FROM (SELECT 1) one
           LEFT JOIN pg_catalog.pg_trigger t
             ON t.tgrelid = 'automation_workflows.workflow_executions'::pg_catalog.regclass
            AND t.tgname = $1 AND t.tgenabled <> 'D'";

fn facts(relaxed: bool) -> Result<Facts> {
    let (tables, trigger, argument, modes) = Spi::connect_mut(|client| {
        let row = run(
            client,
            true,
            FACTS_SQL,
            &[PgOid::from(pg_sys::TEXTOID), PgOid::from(pg_sys::BOOLOID)],
            &[notify::TRIGGER_NAME.into(), relaxed.into()],
        )?
        .first();
        Ok::<_, pgrx::spi::SpiError>((
            [row.get::<pg_sys::Oid>(1)?, row.get::<pg_sys::Oid>(2)?],
            row.get::<bool>(3)?.unwrap_or(false),
            row.get::<String>(4)?,
            row.get::<bool>(6)?.unwrap_or(false),
        ))
    })
    .context("could not read the execution tables and their completion trigger")?;
    let channel = trigger.then(|| {
        argument.unwrap_or_else(|| {
            settings::NOTIFY_CHANNEL.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
        })
    });
    Ok(Facts { tables, channel, modes })
}

/// Move up to `batch` logged executions (only `ids`, when given) into
/// workflow_executions and notify their completion. Returns how many moved.
///
/// `relaxed` (the scheduler's recordings): never waits for a lock, and the
/// transaction commits without waiting for its WAL flush. A crash can lose such a commit; then the log
/// still has the rows and they are recorded (and notified: a listener may
/// hear of one twice) after recovery; nothing is lost.
///
/// Never stuck on a bad row: an id already in the history is left there
/// (the logged copy is dropped, with a WARNING), and completed_at is never
/// before started_at (the history's CHECK) even if the clock stepped back.
/// `None` (the scheduler's recordings only): one of the two tables is locked
/// by somebody else (DROP EXTENSION, TRUNCATE, ALTER TABLE); nothing was done.
///
/// `range` (0.13.0): the blocks of the log to read (log_range.rs): the ones
/// the completing transactions reported. The log has no index and is
/// emptied as fast as it fills; a sequential read of all of it passed, at
/// every recording, every row earlier recordings removed (until VACUUM) and
/// every empty page of its high-water mark: 1.2 ms for 4,000 pages, at up
/// to a hundred recordings a second.
pub fn record(ids: Option<Vec<Uuid>>, batch: i32, relaxed: bool, range: LogRange) -> Result<Option<i64>> {
    // Kept plans for the small recordings, the many of a busy queue at small
    // batches, where planning was most of a recording's cost; a large one
    // (a whole-log sweep, a backlog, large batches) is planned for its rows,
    // as before: measured on 2,400 rows, the kept generic plan ran 2–3 ms
    // longer than the 0.5 ms it saves (it probes the queue settings' index
    // per row where a custom plan hashes them once). How many rows the
    // scheduler's recording finds is known only after it: the last one's
    // count stands for the next (a stream's recordings are alike; the blocks
    // a range spans say little, each backend appending to a page of its own).
    let small = match &ids {
        Some(ids) => ids.len() <= KEPT_PLANS_UP_TO_ROWS,
        None => !range.is_all() && LAST_RECORDED.get() <= KEPT_PLANS_UP_TO_ROWS as i64,
    };
    let recorded = if small {
        // The kept plans (`run`) are generic from their first use (the plan
        // cache's "auto" planned each of the first five anew, and every one
        // after it when a generic plan looked dearer), and must read the log
        // by TID whatever its size when they were made: planned while the
        // log was a few pages long, a generic plan read all of it for the
        // batch's TIDs (a sequential scan testing each row against the whole
        // batch), which measured 0.55 of the lean table at batch 50 in
        // `full` (twice) against 0.65–0.71 with plans made for each
        // recording. Nothing the recording reads is better read whole: the
        // log by TID, the rest by index.
        crate::settings::with_settings(
            &[(c"plan_cache_mode", c"force_generic_plan"), (c"enable_seqscan", c"off")],
            || record_now(ids, batch, relaxed, range, true),
        )
    } else {
        record_now(ids, batch, relaxed, range, false)
    };
    if let Ok(Some(moved)) = recorded {
        LAST_RECORDED.set(moved);
    }
    recorded
}

/// A recording of at most this many rows runs kept plans (see `record`).
const KEPT_PLANS_UP_TO_ROWS: usize = 256;

/// `record`, with kept plans (`keep`) or plans made for this recording.
fn record_now(ids: Option<Vec<Uuid>>, batch: i32, relaxed: bool, range: LogRange, keep: bool) -> Result<Option<i64>> {
    let Facts { tables, channel, modes } = facts(relaxed)?;
    if relaxed {
        // The scheduler never waits for these locks: holding the log's while
        // waiting for the history's, it deadlocked with DROP EXTENSION (which
        // takes them one by one) and the deadlock detector cancelled the DROP.
        for oid in tables.into_iter().flatten() {
            // SAFETY: a conditional lock on a relation by oid, released at the
            // end of this transaction; it never waits.
            if !unsafe { pg_sys::ConditionalLockRelationOid(oid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) } {
                return Ok(None);
            }
        }
    }
    let which = if ids.is_some() { Which::ByIds } else { Which::Batch };
    // (0.8.0, issue 28) a row the history refuses (a status its CHECK does
    // not allow, say) must not stop recording for everyone: the batch is
    // tried in a subtransaction, and when it fails, row by row, a refused
    // row set aside in automation.errors with its content. An id the
    // history already has fails the batch too; row by row, it is skipped
    // (`Move::skip_known`).
    let bounds = range.bounds();
    let batch_at_once = || move_logged(Move { which, modes, skip_known: false }, ids.clone(), batch, &bounds, keep);
    let (moved, recorded, set_aside) = match crate::subxact::run(batch_at_once) {
        Ok((moved, recorded)) => (moved, recorded, 0i64),
        Err(_) => {
            let each = Spi::connect(|client| {
                client
                    .select(
                        &format!("SELECT l.id FROM automation_workflows.execution_log l WHERE {}", which.condition()),
                        None,
                        &[ids.clone().into(), batch.into(), bounds.0.as_str().into(), bounds.1.as_str().into()],
                    )?
                    .map(|r| r.get::<Uuid>(1))
                    .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
            })
            .context("could not read the execution log")?;
            let mut moved = 0i64;
            let mut set_aside = 0i64;
            let mut recorded = Vec::new();
            let one = Move { which: Which::ByIds, modes, skip_known: true };
            for id in each.into_iter().flatten() {
                match crate::subxact::run(|| move_logged(one, Some(vec![id]), 1, &bounds, keep)) {
                    Ok((n, r)) => {
                        moved += n;
                        recorded.extend(r);
                    }
                    Err(caught) => {
                        set_aside_logged(id, &crate::error::Error::caught(&caught))?;
                        set_aside += 1;
                    }
                }
            }
            (moved, recorded, set_aside)
        }
    };
    if (recorded.len() as i64) < moved {
        warning!(
            "{} finished execution(s) were already in workflow_executions under the same id; the logged copies were dropped",
            moved - recorded.len() as i64
        );
    }
    if let Some(channel) = channel {
        for completion in &recorded {
            if matches!(completion.status.as_str(), Some("success" | "error" | "timeout")) {
                notify::send(&channel, completion);
            }
        }
    }
    Ok(Some(moved + set_aside))
}

/// Which logged executions a recording moves: a batch of the log's rows in
/// the blocks of the range it is given, by TID ($3 and $4, at most $2 of
/// them), or the ones it is given by id ($1, within the same blocks; $2,
/// the batch, is positive). Two statements, not a CASE choosing between
/// the two, which made every recording scan the whole log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Which {
    Batch,
    ByIds,
}

impl Which {
    fn condition(self) -> &'static str {
        match self {
            // (a TID range scan for the batch, a TID scan for its rows)
            Which::Batch => {
                "l.ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
                     SELECT b.ctid FROM automation_workflows.execution_log b
                      WHERE b.ctid OPERATOR(pg_catalog.>=) $3::pg_catalog.tid
                        AND b.ctid OPERATOR(pg_catalog.<=) $4::pg_catalog.tid LIMIT $2))"
            }
            Which::ByIds => {
                "l.id OPERATOR(pg_catalog.=) ANY ($1) AND $2 > 0
                 AND l.ctid OPERATOR(pg_catalog.>=) $3::pg_catalog.tid AND l.ctid OPERATOR(pg_catalog.<=) $4::pg_catalog.tid"
            }
        }
    }
}

/// How a statement that moves logged executions is built.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Move {
    /// Which logged executions it moves.
    which: Which,
    /// It reads the queues' history modes (before 0.10.0's SQL, with no
    /// queue_settings, everything is kept).
    modes: bool,
    /// An id the history already has is skipped (`ON CONFLICT DO NOTHING`)
    /// rather than failing the statement. Only the row-by-row retry of a
    /// failed batch skips: the check costs every row a look-up in the
    /// primary key before its insertion and a speculative insertion (10% of
    /// the scheduler's CPU in `full` at batch 50, `perf`), for a case that
    /// needs somebody to write the history and the log by hand (a data-only
    /// restore of both, say); the primary key refuses the duplicate anyway.
    skip_known: bool,
}

impl Move {
    /// The statement's text, built once per process in its eight variants
    /// (kept plans are found by the statement's address).
    fn statement(self) -> &'static str {
        static STATEMENTS: std::sync::LazyLock<std::collections::HashMap<Move, String>> =
            std::sync::LazyLock::new(|| {
                let mut all = std::collections::HashMap::new();
                for which in [Which::Batch, Which::ByIds] {
                    for modes in [false, true] {
                        for skip_known in [false, true] {
                            let how = Move { which, modes, skip_known };
                            all.insert(how, how.text());
                        }
                    }
                }
                all
            });
        STATEMENTS[&self].as_str()
    }

    fn text(self) -> String {
        let condition = self.which.condition();
        let settings = if self.modes {
            "LEFT JOIN automation.queue_settings s ON s.workflow_name OPERATOR(pg_catalog.=) m.workflow_name"
        } else {
            "LEFT JOIN (SELECT NULL::text AS history) s ON false"
        };
        let on_conflict = if self.skip_known { "ON CONFLICT (id) DO NOTHING" } else { "" };
        format!(
            "WITH moved AS (
                 DELETE FROM automation_workflows.execution_log l WHERE {condition}
                 RETURNING l.*),
             -- (0.10.0) what the queue's history mode keeps: everything
             -- (full, no settings row), failures (errors), nothing (none)
             sorted AS (
                 SELECT m.*, s.history IS NULL OR (s.history OPERATOR(pg_catalog.=) 'errors'
                                                   AND m.status OPERATOR(pg_catalog.<>) 'success') AS kept
                   FROM moved m
                   {settings}),
             recorded AS (
                 INSERT INTO automation_workflows.workflow_executions AS e
                        (id, workflow_name, status, started_at, completed_at, metadata, error_details,
                         run_after, claimed_by, attempts, retry_of, owner)
                 SELECT m.id, m.workflow_name, m.status, m.started_at,
                        GREATEST(m.completed_at, m.started_at), m.metadata, m.error_details,
                        m.run_after, m.claimed_by, m.attempts, m.retry_of, m.owner
                   FROM sorted m WHERE m.kept
                 {on_conflict}
                 RETURNING e.id, e.workflow_name::text, e.status::text, e.started_at, e.completed_at),
             dropped AS (
                 SELECT m.id, m.workflow_name, m.status, m.started_at, GREATEST(m.completed_at, m.started_at) AS completed_at
                   FROM sorted m WHERE NOT m.kept),
             -- what the history's statement trigger counts for the kept ones
             counted AS (
                 INSERT INTO automation.execution_stats AS x (workflow_name, status, shard, finished)
                 SELECT d.workflow_name, d.status, pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.%) 8, pg_catalog.count(*)
                   FROM dropped d
                  WHERE d.status OPERATOR(pg_catalog.=) ANY ('{{success,error,timeout,cancelled}}'::text[])
                  GROUP BY d.workflow_name, d.status
                 ON CONFLICT (workflow_name, status, shard)
                 DO UPDATE SET finished = x.finished OPERATOR(pg_catalog.+) EXCLUDED.finished)
             SELECT (SELECT pg_catalog.count(*) FROM moved), r.id, r.workflow_name, r.status,
                    r.started_at, r.completed_at
               FROM (SELECT 1) one
               LEFT JOIN (SELECT * FROM recorded UNION ALL SELECT * FROM dropped) r ON true"
        )
    }
}

/// Move the logged executions into workflow_executions with the statement
/// `how` describes: how many left the log, and the completions to notify.
fn move_logged(
    how: Move,
    ids: Option<Vec<Uuid>>,
    batch: i32,
    bounds: &(String, String),
    keep: bool,
) -> Result<(i64, Vec<Completion>)> {
    Spi::connect_mut(|client| {
        let rows = run(
            client,
            keep,
            how.statement(),
            &[
                PgOid::from(pg_sys::UUIDARRAYOID),
                PgOid::from(pg_sys::INT4OID),
                PgOid::from(pg_sys::TEXTOID),
                PgOid::from(pg_sys::TEXTOID),
            ],
            &[ids.into(), batch.into(), bounds.0.as_str().into(), bounds.1.as_str().into()],
        )?;
        let mut moved = 0i64;
        let mut recorded = Vec::new();
        for row in rows {
            moved = row.get::<i64>(1)?.unwrap_or(0);
            if let Some(id) = row.get::<Uuid>(2)? {
                let status = row.get::<String>(4)?.unwrap_or_default();
                let micros = |ts: Option<TimestampWithTimeZone>| ts.map(|t| i64::from(t.into_inner()));
                recorded.push(Completion::execution(
                    id.as_bytes(),
                    row.get::<String>(3)?,
                    &status,
                    micros(row.get::<TimestampWithTimeZone>(5)?),
                    micros(row.get::<TimestampWithTimeZone>(6)?),
                ));
            }
        }
        Ok::<_, pgrx::spi::SpiError>((moved, recorded))
    })
    .context("could not record finished executions in workflow_executions")
}

/// A logged execution the history refuses: out of the log, into
/// automation.errors with its row (nothing lost; recording goes on).
fn set_aside_logged(id: Uuid, why: &crate::error::Error) -> Result<()> {
    warning!("automation_ext: finished execution {} could not be recorded and was set aside: {}", id, why.message);
    Spi::run_with_args(
        "WITH bad AS (DELETE FROM automation_workflows.execution_log l WHERE l.id OPERATOR(pg_catalog.=) $1 RETURNING l.*)
         INSERT INTO automation.errors (workflow_name, error_type, error_message, error_context, execution_id, owner)
         SELECT bad.workflow_name, 'RecordingFailed',
                pg_catalog.format('finished execution %s could not be recorded in workflow_executions: %s', bad.id, $2::text),
                pg_catalog.jsonb_build_object('sqlstate', $3::text, 'logged', pg_catalog.to_jsonb(bad)), bad.id, bad.owner
           FROM bad",
        &[id.into(), why.message.as_str().into(), why.sqlstate().into()],
    )
    .context("could not set a logged execution aside")
}

#[pg_schema]
pub(crate) mod automation {
    use super::*;

    /// `automation.uuid_v7() → uuid`: a time-ordered UUID (the queue's ids).
    #[pg_extern(volatile, parallel_safe)]
    fn uuid_v7() -> Uuid {
        Uuid::from_bytes(uuid_v7_bytes())
    }

    /// Internal: executions of the workflow were enqueued (see `enqueued`).
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn executions_enqueued(workflow_name: &str) {
        enqueued(workflow_name)
    }

    /// Internal: one step of a waiting claim (see `wait_step`).
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn wait_for_executions(workflow_name: &str, deadline: TimestampWithTimeZone) {
        wait_step(workflow_name, deadline.into_inner())
    }

    /// `automation.execution_retention() → interval`: the setting, as an interval.
    #[pg_extern(sql = false)]
    fn execution_retention() -> pgrx::datum::Interval {
        seconds(settings::EXECUTION_RETENTION_S.get())
    }

    /// `automation.error_retention() → interval`: the setting, as an interval.
    #[pg_extern(sql = false)]
    fn error_retention() -> pgrx::datum::Interval {
        seconds(settings::ERROR_RETENTION_S.get())
    }

    fn seconds(s: i32) -> pgrx::datum::Interval {
        pgrx::datum::Interval::new(0, 0, i64::from(s) * 1_000_000).expect("in range")
    }

    /// Internal: called by the runtime functions after they logged finished
    /// executions (see the module comment).
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn executions_logged(ids: Vec<Option<Uuid>>) {
        logged(ids.into_iter().flatten().collect(), LogRange::ALL).or_raise()
    }

    /// Internal (0.13.0): the same, with the lowest and the highest TID of
    /// the rows they logged, so that the recorder reads only those blocks
    /// of the log. (Not STRICT: a NULL TID reads the whole log.)
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn executions_logged_in(
        ids: Option<Vec<Option<Uuid>>>,
        first: Option<pg_sys::ItemPointerData>,
        last: Option<pg_sys::ItemPointerData>,
    ) {
        let Some(ids) = ids else { return };
        let block = |tid: pg_sys::ItemPointerData| pgrx::itemptr::item_pointer_get_both(tid).0;
        let range = LogRange::of(first.map(block), last.map(block));
        logged(ids.into_iter().flatten().collect(), range).or_raise()
    }

    /// Internal (0.6.0): will a scheduler pick up what this transaction
    /// leaves for it (the trigger inbox)? If so, it is woken when the
    /// transaction commits; if not, the caller does the work itself.
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn wake_recorder() -> bool {
        inbox_will_be_drained()
    }

    /// `automation.record_executions(batch integer DEFAULT 10000) → bigint`:
    /// move up to `batch` finished executions from the log into
    /// workflow_executions now (the scheduler does it within milliseconds),
    /// and (0.15.0) count and notify the successes of queues without
    /// history handed to the scheduler (handoff.rs). Returns how many.
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn record_executions(batch: i32) -> i64 {
        if batch < 1 {
            crate::error::Error::invalid(format!("batch must be positive, not {batch}")).raise();
        }
        // (0.8.0) runners may not write the log or the history themselves;
        // moving finished executions is what the scheduler does anyway
        crate::tenancy::as_extension_owner(|| {
            let moved = record(None, batch, false, LogRange::ALL)?.unwrap_or(0);
            Ok(moved + drain_handed(false)?)
        })
        .or_raise()
    }
}
