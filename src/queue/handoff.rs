//! (0.15.0, issue 33) Successes of `none` queues handed to the scheduler
//! through shared memory instead of the execution log.
//!
//! A queue whose history keeps nothing (`set_queue_history(…, 'none')`)
//! still has every completion counted (`execution_stats`) and notified (the
//! completion NOTIFY). Through the log, each success cost its completing
//! transaction a row written (and WAL), and the scheduler a row read,
//! deleted and vacuumed: measured with the completion made to write nothing
//! at all, `none` ran 1.26× the lean table at batch 50 instead of 0.96×
//! (bench/claim.sh's harness, same run). So the completing transaction now
//! puts such a success (id, workflow, duration) in a ring in shared memory,
//! tagged with its transaction id, and the scheduler counts and notifies the
//! ones whose transaction committed (an aborted one's are dropped; one still
//! running is left for later: its commit wakes the scheduler again).
//!
//! What that gives up, and only for `none` queues: a crash or restart of the
//! server loses the successes handed off and not yet counted (milliseconds'
//! worth: their count and their NOTIFY; the executions themselves are
//! finished and gone, as `none` promises). `errors` and `full` queues go
//! through the log as before, which a crash does not lose. When the ring is
//! full, the name too long, or no scheduler records for the database, the
//! success goes through the log as before.
//!
//! Who may hand off: `automation.hand_off_successes` is revoked from PUBLIC;
//! only the extension's own SECURITY DEFINER completion calls it (a runner
//! calling it could count and notify completions that did not happen).

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::{PGRXSharedMemory, PgLwLock, Uuid};

use crate::error::{Context, Result};
use crate::notify::{self, Completion};

/// The ring: pure logic, so that filling, taking and freeing are tested
/// without PostgreSQL.
pub mod ring {
    /// Successes the ring holds at most (then they go through the log).
    pub const SLOTS: usize = 4096;
    /// The longest workflow name a slot holds (longer: through the log).
    pub const NAME_BYTES: usize = 64;
    /// A success not taken in this long (µs) is dropped by whoever drains:
    /// its database's scheduler is gone (a dropped database, a dropped
    /// extension) and it would hold the ring's head for ever.
    pub const STALE_US: i64 = 600 * 1_000_000;

    #[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
    #[repr(u8)]
    pub enum State {
        #[default]
        Empty,
        /// handed off, waiting for its transaction's end and a drainer
        Filled,
        /// taken by a drainer (`taker`) whose transaction has not ended
        Taken,
        /// counted (or dropped): free once the head passes it
        Done,
    }

    #[derive(Copy, Clone, Debug)]
    #[repr(C)]
    pub struct Slot {
        pub state: State,
        pub name_len: u8,
        pub dboid: u32,
        /// the handing transaction (or subtransaction)
        pub xid: u32,
        /// the pid of the drainer that took it
        pub taker: i32,
        /// when it was handed off (µs since 2000-01-01)
        pub at: i64,
        /// started_at (µs since 2000-01-01), if `has_started`
        pub started: i64,
        pub has_started: bool,
        /// now() of the handing transaction
        pub completed: i64,
        pub id: [u8; 16],
        pub name: [u8; NAME_BYTES],
    }

    // (all zero is a valid slot, Empty: no Option in shared memory, whose
    // representation of None is not fixed)
    impl Default for Slot {
        fn default() -> Self {
            Slot {
                state: State::Empty,
                name_len: 0,
                dboid: 0,
                xid: 0,
                taker: 0,
                at: 0,
                started: 0,
                has_started: false,
                completed: 0,
                id: [0; 16],
                name: [0; NAME_BYTES],
            }
        }
    }

    impl Slot {
        pub fn name(&self) -> &str {
            // written from a &str cut at a char boundary (see `Entry::slot`)
            std::str::from_utf8(&self.name[..usize::from(self.name_len)]).unwrap_or("")
        }

        /// started_at and completed_at, never before it (the history's rule)
        pub fn times(&self) -> (Option<i64>, i64) {
            let started = self.has_started.then_some(self.started);
            (started, started.map_or(self.completed, |s| self.completed.max(s)))
        }
    }

    /// A success to hand off.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Entry<'a> {
        pub dboid: u32,
        pub xid: u32,
        pub at: i64,
        pub id: [u8; 16],
        pub name: &'a str,
        pub started: Option<i64>,
        pub completed: i64,
    }

    /// What became of a handing transaction, as a drainer sees it.
    #[derive(Copy, Clone, Debug, PartialEq, Eq)]
    pub enum Fate {
        /// committed, or the drainer's own transaction: count it
        Count,
        /// still running: leave it
        Running,
        /// rolled back (or lost in a crash of its backend): drop it
        Drop,
    }

    #[derive(Copy, Clone)]
    #[repr(C)]
    pub struct Ring {
        /// slots `head..tail` (modulo SLOTS) are in use
        pub head: u64,
        pub tail: u64,
        pub slots: [Slot; SLOTS],
    }

    impl Default for Ring {
        fn default() -> Self {
            Ring { head: 0, tail: 0, slots: [Slot::default(); SLOTS] }
        }
    }

    impl Ring {
        /// Put `entry` in the ring: false when it has no room, or the name
        /// is too long (the caller logs the success instead).
        pub fn push(&mut self, entry: &Entry) -> bool {
            if entry.name.len() > NAME_BYTES || (self.tail - self.head) as usize >= SLOTS {
                return false;
            }
            let mut slot = Slot {
                state: State::Filled,
                name_len: entry.name.len() as u8,
                dboid: entry.dboid,
                xid: entry.xid,
                taker: 0,
                at: entry.at,
                started: entry.started.unwrap_or(0),
                has_started: entry.started.is_some(),
                completed: entry.completed,
                id: entry.id,
                name: [0; NAME_BYTES],
            };
            slot.name[..entry.name.len()].copy_from_slice(entry.name.as_bytes());
            self.slots[(self.tail % SLOTS as u64) as usize] = slot;
            self.tail += 1;
            true
        }

        /// Does the ring hold a success of `dboid` not yet counted?
        pub fn waiting(&self, dboid: u32) -> bool {
            (self.head..self.tail).any(|k| {
                let s = &self.slots[(k % SLOTS as u64) as usize];
                s.state == State::Filled && s.dboid == dboid
            })
        }

        /// Take, for the drainer `taker` of `dboid`, the successes to count
        /// (`fate` says which): their positions, marked taken. Those of
        /// rolled-back transactions, and any slot handed off before
        /// `now - STALE_US` that nobody took, are dropped on the way; it
        /// returns how many stale ones it dropped.
        pub fn take(
            &mut self,
            dboid: u32,
            taker: i32,
            now: i64,
            mut fate: impl FnMut(u32) -> Fate,
        ) -> (Vec<usize>, usize) {
            let mut taken = Vec::new();
            let mut stale = 0;
            for k in self.head..self.tail {
                let i = (k % SLOTS as u64) as usize;
                let s = &mut self.slots[i];
                if s.state != State::Filled {
                    continue;
                }
                if s.dboid != dboid {
                    if now.saturating_sub(s.at) > STALE_US {
                        s.state = State::Done;
                        stale += 1;
                    }
                    continue;
                }
                match fate(s.xid) {
                    Fate::Count => {
                        s.state = State::Taken;
                        s.taker = taker;
                        taken.push(i);
                    }
                    Fate::Drop => s.state = State::Done,
                    Fate::Running => {}
                }
            }
            self.advance();
            (taken, stale)
        }

        /// The drainer's transaction ended: what it took is done (committed)
        /// or waits again (rolled back).
        pub fn finish(&mut self, taken: &[usize], taker: i32, committed: bool) {
            for &i in taken {
                let s = &mut self.slots[i];
                if s.state == State::Taken && s.taker == taker {
                    s.state = if committed { State::Done } else { State::Filled };
                    s.taker = 0;
                }
            }
            self.advance();
        }

        /// Free the done slots at the head.
        fn advance(&mut self) {
            while self.head < self.tail {
                let s = &mut self.slots[(self.head % SLOTS as u64) as usize];
                if s.state != State::Done {
                    break;
                }
                *s = Slot::default();
                self.head += 1;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn entry(dboid: u32, xid: u32, name: &str) -> Entry<'_> {
            Entry { dboid, xid, at: 1_000, id: [xid as u8; 16], name, started: Some(10), completed: 20 }
        }

        fn boxed() -> Box<Ring> {
            // (too large for a test thread's stack)
            // SAFETY: all zero is a valid ring: empty slots, head = tail = 0.
            unsafe { Box::<Ring>::new_zeroed().assume_init() }
        }

        #[test]
        fn fills_up_then_refuses_and_frees_after_a_committed_drain() {
            let mut r = boxed();
            for n in 0..SLOTS as u32 {
                assert!(r.push(&entry(1, n, "etl")), "slot {n}");
            }
            assert!(!r.push(&entry(1, 0, "etl")), "full");
            let (taken, stale) = r.take(1, 7, 2_000, |_| Fate::Count);
            assert_eq!((taken.len(), stale), (SLOTS, 0));
            assert!(!r.push(&entry(1, 0, "etl")), "taken slots are not free before the drainer commits");
            r.finish(&taken, 7, true);
            assert_eq!(r.head, r.tail);
            assert!(r.push(&entry(1, 0, "etl")));
        }

        #[test]
        fn a_rolled_back_drain_leaves_them_to_count_again() {
            let mut r = boxed();
            r.push(&entry(1, 100, "a"));
            r.push(&entry(1, 101, "b"));
            let (taken, _) = r.take(1, 7, 2_000, |_| Fate::Count);
            assert_eq!(taken.len(), 2);
            // another drainer meanwhile takes nothing
            assert!(r.take(1, 8, 2_000, |_| Fate::Count).0.is_empty());
            r.finish(&taken, 7, false);
            let (again, _) = r.take(1, 8, 2_000, |_| Fate::Count);
            assert_eq!(again, taken);
            assert_eq!(r.slots[again[0]].name(), "a");
        }

        #[test]
        fn other_databases_running_and_rolled_back_transactions() {
            let mut r = boxed();
            r.push(&entry(2, 1, "other database"));
            r.push(&entry(1, 2, "running"));
            r.push(&entry(1, 3, "rolled back"));
            r.push(&entry(1, 4, "committed"));
            let fate = |xid| match xid {
                2 => Fate::Running,
                3 => Fate::Drop,
                _ => Fate::Count,
            };
            let (taken, stale) = r.take(1, 7, 2_000, fate);
            assert_eq!(stale, 0);
            assert_eq!(taken.iter().map(|&i| r.slots[i].name()).collect::<Vec<_>>(), ["committed"]);
            r.finish(&taken, 7, true);
            // the head waits at the other database's success
            assert_eq!((r.head, r.tail), (0, 4));
            assert!(r.waiting(2) && r.waiting(1));
            let (theirs, _) = r.take(2, 9, 2_000, fate);
            r.finish(&theirs, 9, true);
            // and now at the running transaction's
            assert_eq!(r.head, 1);
            let (later, _) = r.take(1, 7, 2_000, |_| Fate::Count);
            r.finish(&later, 7, true);
            assert_eq!(r.head, r.tail);
            assert!(!r.waiting(1));
        }

        #[test]
        fn stale_successes_of_another_database_are_dropped() {
            let mut r = boxed();
            r.push(&entry(2, 1, "gone"));
            r.push(&entry(1, 2, "here"));
            let (_, stale) = r.take(1, 7, 1_000 + STALE_US, |_| Fate::Running);
            assert_eq!(stale, 0, "not older than STALE_US yet");
            let (_, stale) = r.take(1, 7, 1_001 + STALE_US, |_| Fate::Running);
            assert_eq!(stale, 1);
            assert_eq!(r.head, 1, "the head passed it");
        }

        #[test]
        fn names_longer_than_a_slot_are_refused() {
            let mut r = boxed();
            let long = "x".repeat(NAME_BYTES + 1);
            assert!(!r.push(&entry(1, 1, &long)));
            assert!(r.push(&entry(1, 1, &long[..NAME_BYTES])));
            assert_eq!(r.slots[0].name().len(), NAME_BYTES);
        }
    }
}

// SAFETY: plain old data (integers, booleans, byte arrays, a u8 enum), no
// pointers.
unsafe impl PGRXSharedMemory for ring::Ring {}

static RING: PgLwLock<ring::Ring> = unsafe { PgLwLock::new(c"automation_ext success hand-off") };

/// From `_PG_init` while preloading.
pub fn init_shared_memory() {
    pgrx::pg_shmem_init!(RING);
}

thread_local! {
    /// The slots this transaction took to count (freed at its end), with
    /// the subtransaction that took each (given back if it rolls back).
    static TAKEN: RefCell<Vec<(usize, pg_sys::SubTransactionId)>> = const { RefCell::new(Vec::new()) };
    static SUBXACT_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This transaction handed successes off: wake the scheduler at commit.
    static HANDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Hand successes off (see the module comment), each as `(id, workflow
/// name, started_at)`: returns the ids the caller must log instead (all of
/// them with no scheduler recording for this database; those that found
/// the ring full or have a name over 64 bytes). One look at the scheduler
/// and one hold of the ring's lock for the whole batch.
fn hand_off(successes: impl IntoIterator<Item = (Uuid, String, Option<i64>)>) -> Vec<Uuid> {
    let successes = successes.into_iter();
    if !super::recorder_running() {
        return successes.map(|(id, _, _)| id).collect();
    }
    // SAFETY: this backend's database; the current (sub)transaction's id,
    // assigned if it has none (the completion's DELETE assigned it already);
    // the start of the transaction (now()) and the clock.
    let (dboid, xid, completed, at) = unsafe {
        (
            pg_sys::MyDatabaseId.to_u32(),
            pg_sys::GetCurrentTransactionId().into_inner(),
            pg_sys::GetCurrentTransactionStartTimestamp(),
            pg_sys::GetCurrentTimestamp(),
        )
    };
    let mut refused = Vec::new();
    let mut handed = false;
    {
        let mut ring = RING.exclusive();
        for (id, name, started) in successes {
            let entry = ring::Entry { dboid, xid, at, id: *id.as_bytes(), name: &name, started, completed };
            if ring.push(&entry) {
                handed = true;
            } else {
                refused.push(id);
            }
        }
    }
    if handed && !HANDED.replace(true) {
        super::register_callback();
    }
    refused
}

/// At the end of a transaction (queue/mod.rs `at_transaction_end`): free
/// or give back what it took, and report whether it handed successes off
/// (the caller wakes the scheduler when it committed).
pub(super) fn at_transaction_end(committed: bool) -> bool {
    let taken: Vec<usize> = TAKEN.take().into_iter().map(|(i, _)| i).collect();
    if !taken.is_empty() {
        // SAFETY: this process's pid.
        RING.exclusive().finish(&taken, unsafe { pg_sys::MyProcPid }, committed);
    }
    HANDED.replace(false)
}

/// A subtransaction that rolls back rolls back the counts of what it (and
/// its children) took: those slots wait again. (Its hand-offs need nothing:
/// their xid is its own, which a drainer then finds rolled back.)
#[pg_guard]
unsafe extern "C-unwind" fn at_subtransaction_abort(
    event: pg_sys::SubXactEvent::Type,
    my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event != pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        return;
    }
    // (subtransaction ids grow: the ones taken since `my` began are its own
    // or its children's)
    let back: Vec<usize> = TAKEN.with_borrow_mut(|taken| {
        let (back, kept): (Vec<_>, Vec<_>) = taken.drain(..).partition(|(_, sub)| *sub >= my);
        *taken = kept;
        back.into_iter().map(|(i, _)| i).collect()
    });
    if !back.is_empty() {
        // SAFETY: this process's pid.
        RING.exclusive().finish(&back, unsafe { pg_sys::MyProcPid }, false);
    }
}

/// Has this transaction taken hand-offs to count?
pub fn taken_any() -> bool {
    TAKEN.with_borrow(|t| !t.is_empty())
}

/// Does the ring hold successes of this database to count?
pub fn waiting(dboid: u32) -> bool {
    crate::settings::preloaded() && RING.share().waiting(dboid)
}

/// What became of transaction `xid` (checked in this order, as
/// heapam_visibility.c does: in progress first, then committed).
fn fate(xid: u32) -> ring::Fate {
    let xid = pg_sys::TransactionId::from_inner(xid);
    // SAFETY: plain look-ups of the proc array and the commit log for an
    // xid that a transaction of this cluster assigned since its start (the
    // ring is in shared memory, emptied by a restart) and at most
    // STALE_US old: far younger than any xid whose status was truncated.
    unsafe {
        if pg_sys::TransactionIdIsCurrentTransactionId(xid) {
            ring::Fate::Count
        } else if pg_sys::TransactionIdIsInProgress(xid) {
            ring::Fate::Running
        } else if pg_sys::TransactionIdDidCommit(xid) {
            ring::Fate::Count
        } else {
            ring::Fate::Drop
        }
    }
}

/// Counts the drained successes ($1, their workflows' names), as the
/// recorder counts the ones the history does not keep. A `static`: its plan
/// is kept (kept.rs; up to a hundred drains a second at batch 1).
static COUNT_SQL: &str = "INSERT INTO automation.execution_stats AS x (workflow_name, status, shard, finished)
     SELECT n.name, 'success', pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.%) 8, pg_catalog.count(*)
       FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n(name)
      GROUP BY n.name
     ON CONFLICT (workflow_name, status, shard)
     DO UPDATE SET finished = x.finished OPERATOR(pg_catalog.+) EXCLUDED.finished";

/// Count and notify the successes of this database that the ring holds,
/// in the current transaction (freed when it commits, given back if it
/// rolls back). `channel`: the completion trigger's (None: not notified).
/// Returns how many it counted.
pub fn drain(channel: Option<&str>) -> Result<i64> {
    if !crate::settings::preloaded() {
        return Ok(0);
    }
    // SAFETY: this backend's database, pid and the clock.
    let (dboid, me, now) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::MyProcPid, pg_sys::GetCurrentTimestamp()) };
    let (slots, stale) = {
        let mut ring = RING.exclusive();
        let (taken, stale) = ring.take(dboid, me, now, fate);
        let slots: Vec<ring::Slot> = taken.iter().map(|&i| ring.slots[i]).collect();
        // SAFETY: reads the current subtransaction's id.
        let sub = unsafe { pg_sys::GetCurrentSubTransactionId() };
        TAKEN.with_borrow_mut(|t| t.extend(taken.into_iter().map(|i| (i, sub))));
        (slots, stale)
    };
    if !SUBXACT_CALLBACK.replace(true) {
        // SAFETY: registers a plain function, for the life of the backend.
        unsafe { pg_sys::RegisterSubXactCallback(Some(at_subtransaction_abort), std::ptr::null_mut()) };
    }
    if stale > 0 {
        warning!(
            "automation_ext: {stale} success(es) of queues without history, handed off more than {} s ago by another database whose scheduler never took them, were dropped uncounted",
            ring::STALE_US / 1_000_000
        );
    }
    if slots.is_empty() {
        return Ok(0);
    }
    super::register_callback();
    let names: Vec<&str> = slots.iter().map(ring::Slot::name).collect();
    Spi::connect_mut(|client| {
        super::run(client, true, COUNT_SQL, &[PgOid::from(pg_sys::TEXTARRAYOID)], &[names.into()]).map(|_| ())
    })
    .context("could not count the successes of queues without history")?;
    if let Some(channel) = channel {
        for s in &slots {
            notify::send(channel, &{
                let (started, completed) = s.times();
                Completion::execution(&s.id, Some(s.name().to_owned()), "success", started, Some(completed))
            });
        }
    }
    Ok(slots.len() as i64)
}

#[pg_schema]
pub(crate) mod automation {
    use super::*;

    /// Internal (0.15.0): called by the completion with the successes of
    /// queues whose history keeps nothing (three arrays of one length):
    /// those handed to the scheduler through shared memory are counted and
    /// notified after commit; returns the ids the caller must log instead.
    #[pg_extern(volatile, parallel_unsafe, sql = false)]
    fn hand_off_successes(
        ids: Array<Uuid>,
        workflow_names: Array<&str>,
        started_at: Array<TimestampWithTimeZone>,
    ) -> Vec<Uuid> {
        if ids.len() != workflow_names.len() || ids.len() != started_at.len() {
            crate::error::Error::invalid("ids, workflow_names and started_at must have the same length").raise();
        }
        let mut unnamed = Vec::new();
        let successes: Vec<(Uuid, String, Option<i64>)> = ids
            .iter()
            .zip(workflow_names.iter())
            .zip(started_at.iter())
            .filter_map(|((id, name), started)| match (id, name) {
                (Some(id), Some(name)) => Some((id, name.to_owned(), started.map(|t| i64::from(t.into_inner())))),
                (Some(id), None) => {
                    unnamed.push(id);
                    None
                }
                (None, _) => None,
            })
            .collect();
        let mut refused = hand_off(successes);
        refused.extend(unnamed);
        refused
    }
}
