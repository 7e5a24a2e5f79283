//! The recording duty of a database's worker (worker/database.rs): move
//! the finished executions that completing transactions logged into the
//! history (queue/mod.rs `record`), in slices, soon after their commit.

use std::time::Instant;

use pgrx::prelude::*;

use super::log_range::LogRange;
use crate::error::in_worker_transaction;
use crate::worker::shared;
use crate::worker::{Duty, Flow, Visit};

/// Recording, for one database.
#[derive(Default)]
pub struct Recorder {
    /// when this visit last recorded
    recorded_at: Option<Instant>,
    /// when this visit last read the whole log (the visit's own sweep is
    /// `shared` slot's `swept_at`)
    read_whole_at: Option<Instant>,
}

impl Duty for Recorder {
    fn turn(&mut self, visit: &mut Visit) -> Flow {
        // finished executions to record: whenever a completing transaction
        // commits, and at a visit's sweep (`Visit::first`: left from before
        // a restart, restored)
        if let Some(last) = self.recorded_at {
            // at most one recording per RECORD_EVERY: under a stream of
            // completions each one moves more rows for the same overhead
            // (nobody signals us again before we take the request)
            let since = last.elapsed();
            if since < RECORD_EVERY && shared::executions_logged_pending(visit.dboid) {
                std::thread::sleep(RECORD_EVERY - since);
            }
        }
        // (0.13.0) the blocks the committed transactions logged rows in
        // (log_range.rs); the whole log at a visit's start (what was left
        // before a restart, restored...) and at least every SWEEP_EVERY (a
        // log rewritten under waiting rows: VACUUM FULL, CLUSTER; rows a
        // data-only restore wrote while this visit runs)
        let range = match shared::take_executions_logged(visit.dboid) {
            _ if visit.first => Some(LogRange::ALL),
            Some(_) if self.read_whole_at.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) => Some(LogRange::ALL),
            taken => taken,
        };
        if let Some(range) = range {
            if !range.is_empty() {
                record_executions(visit.dboid, range);
            }
            // (0.15.0) the successes of queues without history handed off
            // through shared memory (handoff.rs)
            if super::handoff::waiting(visit.dboid) {
                in_worker_transaction(|| super::drain_handed(true));
            }
            self.recorded_at = Some(Instant::now());
            if range.is_all() {
                self.read_whole_at = self.recorded_at;
            }
        }
        Flow::Continue
    }

    fn next_due(&mut self) -> Option<i64> {
        None // woken by the completing commits
    }

    fn lingers(&self) -> bool {
        self.recorded_at.is_some_and(|t| t.elapsed() < RECORDER_LINGER)
    }
}

/// Executions logged within this of the last recording keep a scheduler
/// that has no fire due (when no other database waits for one): under a
/// steady stream of completions it stays instead of starting again each time.
const RECORDER_LINGER: std::time::Duration = std::time::Duration::from_secs(5);
/// The shortest time between two recordings.
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_millis(10);
/// The longest time between two recordings that read the whole log (the
/// others read the blocks the completing transactions report).
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// Executions recorded per transaction.
const RECORD_BATCH: i32 = 5000;
/// Recording stops for a tick after this, so that fires are not held up by
/// a large backlog (the rest is recorded at the next turn of the loop).
const RECORD_SLICE: std::time::Duration = std::time::Duration::from_millis(200);

/// Record the finished executions waiting in the log (queue/mod.rs), in
/// its blocks `range`.
fn record_executions(dboid: u32, range: LogRange) {
    let started = std::time::Instant::now();
    loop {
        let Some(moved) = in_worker_transaction(|| super::record(None, RECORD_BATCH, true, range)) else {
            // the tables are locked (DROP EXTENSION, TRUNCATE...): later
            shared::executions_logged(pg_sys::Oid::from(dboid), range);
            break;
        };
        if moved < i64::from(RECORD_BATCH) {
            break;
        }
        if started.elapsed() >= RECORD_SLICE {
            shared::executions_logged(pg_sys::Oid::from(dboid), range);
            break;
        }
    }
}
