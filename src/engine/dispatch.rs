//! The SQL steps duty of a database's worker (worker/database.rs): hand
//! the ready SQL steps to step workers, recover the steps of workers that
//! died, and keep the engine's deadlines (a workflow's timeout, a step's
//! lease or timeout) at their time. The step workers themselves serve in
//! steps.rs; the SQL these call is sql/engine.sql's.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crate::settings;
use crate::worker::runner::{self, RunSegment, STEP_POOL};
use crate::worker::shared::{self, RunSlot, RunState, SHARED};
use crate::worker::{guarded, now, Duty, Flow, Visit};

/// SQL steps and deadlines, for one database.
#[derive(Default)]
pub struct SqlSteps {
    /// (0.7.0) when a SQL step waiting out its retry backoff becomes ready
    steps_due: Option<i64>,
    /// (0.8.0) the earliest deadline of a running workflow or lease of a
    /// running step: expire_steps() then, not at the minutely sweep
    deadline_due: Option<i64>,
}

impl Duty for SqlSteps {
    fn turn(&mut self, visit: &mut Visit) -> Flow {
        // SQL steps of workflows (0.7.0): when a commit made some, a step
        // worker ended, a retry's backoff ended, and at a visit's sweep
        // (`Visit::first`: workers lost in a crash first)
        let ended = std::mem::take(&mut visit.step_worker_ended);
        if (visit.first || ended) && !recover() {
            if visit.first {
                shared::sweep_again(visit.dboid); // the look failed: again at the next visit
            }
        }
        if shared::take_steps_ready(visit.dboid) || visit.first || ended || self.steps_due.is_some_and(|t| t <= now()) {
            self.steps_due = dispatch(visit.dboid);
            self.deadline_due = next_deadline();
        }
        // (0.8.0) timeouts at their time: a workflow's, a step's
        if self.deadline_due.is_some_and(|t| t <= now()) {
            expire_deadlines();
            self.deadline_due = next_deadline();
        }
        Flow::Continue
    }

    fn next_due(&mut self) -> Option<i64> {
        [self.steps_due, self.deadline_due].into_iter().flatten().min()
    }

    /// (issue 34) A visit that does not sweep starts from what the last one
    /// knew: at that time it dispatches and keeps deadlines, and looks again.
    fn resume(&mut self, due: Option<i64>) {
        self.steps_due = due;
        self.deadline_due = due;
    }
}

/// When the engine next has a deadline to keep (a running workflow's
/// timeout, a running step's lease or timeout); None when there is none.
/// An error (the tables locked) means: look again in a second.
fn next_deadline() -> Option<i64> {
    match guarded("look for deadlines", || Spi::get_one::<TimestampWithTimeZone>("SELECT automation.next_deadline()")) {
        Some(found) => found.map(|t| t.into_inner()),
        None => Some(now() + 1_000_000),
    }
}

/// Executions past their workflow's timeout end as timeout (their running
/// SQL step cancelled), steps past their lease or timeout are retried or
/// failed: at the deadline, within a second.
fn expire_deadlines() {
    let expired = guarded("keep deadlines", || Spi::get_one::<i32>("SELECT automation.expire_steps(NULL, 1000)"));
    if let Some(n) = expired.flatten().filter(|&n| n > 0) {
        debug1!("automation_ext scheduler: {n} step(s) or execution(s) timed out");
    }
}

/// SQL steps whose worker is gone (a crash, a restart, a terminated
/// worker) fail that attempt, and are retried while attempts remain. False
/// when the look failed (a lock, an error): it is done again later.
fn recover() -> bool {
    let Some(recovered) = guarded("recover SQL steps", || Spi::get_one::<i32>("SELECT automation.recover_sql_steps()"))
    else {
        return false;
    };
    if let Some(n) = recovered.filter(|&n| n > 0) {
        log!("automation_ext scheduler: {n} SQL step(s) whose worker was gone will be retried or failed");
    }
    true
}

/// Hand the ready SQL steps of this database to step workers: per role
/// that has some, up to `automation.step_workers` workers (the running ones
/// are woken; more are asked for as runs, which the cluster-wide budget
/// and the resident workers serve like job runs). Steps of a role that no
/// longer exists or may not log in fail. Returns when the next step
/// waiting out a retry backoff becomes ready.
fn dispatch(dboid: u32) -> Option<i64> {
    let waiting = guarded("look for SQL steps", || {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT role_name, role_oid, refusal, ready, next_visible FROM automation.sql_steps_waiting()",
                    None,
                    &[],
                )?
                .map(|r| {
                    Ok((
                        r.get::<String>(1)?.unwrap_or_default(),
                        r.get::<pg_sys::Oid>(2)?,
                        r.get::<String>(3)?,
                        r.get::<i64>(4)?.unwrap_or(0),
                        r.get::<TimestampWithTimeZone>(5)?,
                    ))
                })
                .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    });
    let Some(waiting) = waiting else {
        return Some(now() + 1_000_000); // again in a second
    };
    let mut next: Option<i64> = None;
    let workers = settings::STEP_WORKERS.get().max(1) as i64;
    for (role_name, role, refusal, ready, next_visible) in waiting {
        if let Some(ts) = next_visible {
            next = Some(next.map_or(ts.into_inner(), |n: i64| n.min(ts.into_inner())));
        }
        if ready == 0 {
            continue;
        }
        let Some(role) = role else { continue };
        // a role that cannot run them (dropped, NOLOGIN, no CONNECT, no
        // longer a runner): its steps fail once, with the reason, instead of
        // a worker started (and failing) for them again and again
        if let Some(why) = refusal {
            let failed = guarded("refuse SQL steps", || {
                Spi::get_one_with_args::<i32>(
                    "SELECT automation.refuse_sql_steps($1, $2)",
                    &[role.into(), why.as_str().into()],
                )
            });
            if let Some(n) = failed.flatten().filter(|&n| n > 0) {
                log!("automation_ext scheduler: {n} SQL step(s) of role {role_name} failed: {why}");
            }
            continue;
        }
        // (0.8.0) a worker busy with a step (a long one) serves no other:
        // the ready steps want idle workers beside the busy ones, up to the
        // limit (0.7.0 counted busy workers too, so one step sleeping for
        // ten minutes held up every other step of its role)
        let (active, busy): (Vec<i32>, usize) = {
            let shared = SHARED.share();
            let mine: Vec<&RunSlot> = shared
                .runs
                .iter()
                .filter(|r| {
                    r.dboid == dboid
                        && r.role == role.to_u32()
                        && r.jobid == STEP_POOL
                        && matches!(r.state, RunState::Requested | RunState::Started)
                })
                .collect();
            (mine.iter().map(|r| r.pid).collect(), mine.iter().filter(|r| r.step_id != 0).count())
        };
        let want = (ready as usize + busy).min(workers as usize);
        for &pid in &active {
            shared::signal(pid); // (0 while it starts: it looks anyway)
        }
        for _ in active.len()..want {
            // SAFETY: reading the database this worker is connected to.
            let database = unsafe { pg_sys::MyDatabaseId };
            let seg = RunSegment::create(STEP_POOL, database, role, 0, 0, "");
            let Some(slot) = SHARED.exclusive().request_run(
                dboid,
                role.to_u32(),
                STEP_POOL,
                seg.handle(),
                now(),
                0,
                now(),
                now(),
                0,
            ) else {
                // (issue 34) no run slot free: again in a second (a visit
                // no longer looks at every step when it starts)
                seg.release();
                let soon = now() + 1_000_000;
                next = Some(next.map_or(soon, |n| n.min(soon)));
                break;
            };
            let started = runner::start_now(slot);
            seg.detach();
            if !started {
                shared::signal_launcher();
            }
        }
    }
    next
}
