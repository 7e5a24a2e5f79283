//! The recording duty of a database's worker (worker/database.rs): move
//! the finished executions that completing transactions logged into the
//! history (queue/mod.rs `record`), in slices, soon after their commit.

use std::time::Instant;

use pgrx::prelude::*;

use crate::error::in_worker_transaction;
use crate::worker::shared;
use crate::worker::{Duty, Flow, Visit};

/// Recording, for one database.
#[derive(Default)]
pub struct Recorder {
    /// when this visit last recorded
    recorded_at: Option<Instant>,
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
        if shared::take_executions_logged(visit.dboid) || visit.first {
            record_executions(visit.dboid);
            self.recorded_at = Some(Instant::now());
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
/// Executions recorded per transaction.
const RECORD_BATCH: i32 = 5000;
/// Recording stops for a tick after this, so that fires are not held up by
/// a large backlog (the rest is recorded at the next turn of the loop).
const RECORD_SLICE: std::time::Duration = std::time::Duration::from_millis(200);

/// Record the finished executions waiting in the log (queue/mod.rs).
fn record_executions(dboid: u32) {
    let started = std::time::Instant::now();
    loop {
        let Some(moved) = in_worker_transaction(|| super::record(None, RECORD_BATCH, true)) else {
            // the tables are locked (DROP EXTENSION, TRUNCATE...): later
            shared::executions_logged(pg_sys::Oid::from(dboid));
            break;
        };
        if moved < i64::from(RECORD_BATCH) {
            break;
        }
        if started.elapsed() >= RECORD_SLICE {
            shared::executions_logged(pg_sys::Oid::from(dboid));
            break;
        }
    }
}
