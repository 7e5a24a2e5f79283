//! Table triggers (0.8.0): a table's changes start workflows. The trigger
//! itself and the inbox it fills are in `inbox`; the inbox duty of a
//! database's worker (worker/database.rs) starts the executions the inbox
//! holds, as each trigger's owner, soon after the writers' commits.

pub mod inbox;

use std::time::Instant;

use pgrx::prelude::*;

use crate::worker::shared;
use crate::worker::{guarded, Duty, Flow, Visit};

/// The trigger inbox, for one database.
pub struct Inbox;

impl Duty for Inbox {
    fn turn(&mut self, visit: &mut Visit) -> Flow {
        // when a commit filled it, and at a visit's sweep (`Visit::first`:
        // left from before a restart, restored)
        if shared::take_inbox_filled(visit.dboid) || visit.first {
            drain(visit.dboid);
        }
        Flow::Continue
    }

    fn next_due(&mut self) -> Option<i64> {
        None // woken by the writers' commits
    }
}

/// Draining stops for a turn after this, so that fires are not held up by a
/// large inbox (the rest is drained at the next turn of the loop).
const DRAIN_SLICE: std::time::Duration = std::time::Duration::from_millis(200);

/// Slices of the trigger inbox (2,500 changed rows each) started per
/// transaction.
const DRAIN_BATCH: i32 = 2;

/// Start the executions that table triggers left in the trigger inbox
/// (sql/engine.sql), a few entries per transaction, for at most
/// DRAIN_SLICE per tick (then later: fires are not held up). Each
/// transaction waits at most a moment for the inbox's lock: a DBA's DROP
/// EXTENSION or TRUNCATE goes first, and the inbox is drained later.
fn drain(dboid: u32) {
    let started = Instant::now();
    loop {
        // None: empty; Some(true): executions started; Some(false): entries
        // left that this pass could not start (another drainer holds them,
        // or they failed and went to automation.errors)
        // (an ERROR, a lock not granted at once: logged at DEBUG1 by
        // `guarded`, and the inbox waits for the next turn)
        let outcome = guarded("drain the trigger inbox", || {
            let waiting = Spi::get_one::<bool>("SELECT EXISTS (SELECT FROM automation_workflows.trigger_inbox)")?
                .unwrap_or(false);
            if !waiting {
                return Ok(None);
            }
            let started =
                Spi::get_one_with_args::<i64>("SELECT automation.drain_trigger_inbox($1)", &[DRAIN_BATCH.into()])?
                    .unwrap_or(0);
            Ok(Some(started > 0))
        });
        match outcome {
            Some(None) => break,
            Some(Some(true)) if started.elapsed() < DRAIN_SLICE => continue,
            // more, at the next turn of the loop (or after the other
            // drainer), or the drain failed
            Some(Some(_)) | None => {
                shared::inbox_filled(pg_sys::Oid::from(dboid));
                break;
            }
        }
    }
}
