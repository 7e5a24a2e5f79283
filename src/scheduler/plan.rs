//! What a database's scheduler decides, without doing any of it: which jobs
//! are due, what a missed fire becomes, when a due fire is skipped (its job
//! still runs) or waits (no slot), when to wake next, whether to stay, what
//! a run's end and a restart with runs in flight mean. Pure Rust (no SPI, no
//! shared memory, no clock): `database.rs` gathers the facts, calls these,
//! and carries out what they return. Tested with plain `#[test]`s below.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;

use super::cron::Schedule;
use crate::civil::Zone;

/// A run's status, as `automation.job_run_details.status` holds it (its
/// CHECK constraint allows exactly these; a `#[pg_test]` compares them).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// asked for; its worker has not started running the command yet
    Starting,
    Running,
    Succeeded,
    Failed,
    /// not run: the job's previous run was still going when it was due
    Skipped,
}

impl RunStatus {
    pub const ALL: [RunStatus; 5] =
        [RunStatus::Starting, RunStatus::Running, RunStatus::Succeeded, RunStatus::Failed, RunStatus::Skipped];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Starting => "starting",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The statuses a run's row may be in for it to become `self` (what an
    /// UPDATE to `self` requires: a final row is never written again).
    pub fn predecessors(self) -> Vec<&'static str> {
        RunStatus::ALL.into_iter().filter(|s| s.may_become(self)).map(RunStatus::as_str).collect()
    }

    /// A run in this status has ended (its row is not written again).
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Skipped)
    }

    /// The transitions a run's row may go through: a run is recorded as
    /// starting, or directly as failed (refused before it started) or skipped;
    /// it runs, then succeeds or fails; a run that never reported running
    /// (its worker could not connect, the server restarted) fails.
    pub fn may_become(self, next: RunStatus) -> bool {
        use RunStatus::*;
        matches!(
            (self, next),
            (Starting, Running) | (Starting, Succeeded) | (Starting, Failed) | (Running, Succeeded) | (Running, Failed)
        )
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The next fire of a job that fired (or was skipped) at `due`, seen at
/// `now`: aligned to the schedule (computed from the due time, not from when
/// it ran), and fires already missed by `now` (the job waited for a slot, the
/// clock jumped forward) coalesced into the next one after `now`.
pub fn next_fire(schedule: &Schedule, due: i64, now: i64, zone: &dyn Zone) -> Option<i64> {
    match schedule.next_after(due, zone) {
        Some(n) if n <= now => schedule.next_after(now, zone),
        other => other,
    }
}

/// Where a job's first fire comes from when its jobs are (re)loaded.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Known {
    /// this process had the job with the same schedule: its next fire
    InProcess(Option<i64>),
    /// this process had the job with another schedule (ALTER): start afresh
    Altered,
    /// new to this process: the next fire the job table keeps (written by a
    /// previous visit or by the schedule's trigger), if any
    Stored(Option<i64>),
}

/// A job's next fire when the jobs are loaded. A scheduler started a little
/// after a stored fire was due runs it (fires missed for longer, while no
/// scheduler ran, are coalesced into that one run); `@reboot` jobs fire once
/// per server start (`first_boot`), never from a stored time.
pub fn first_fire(schedule: &Schedule, known: Known, first_boot: bool, now: i64, zone: &dyn Zone) -> Option<i64> {
    let kept = match known {
        Known::InProcess(next) => next,
        Known::Altered => None,
        Known::Stored(stored) => stored.filter(|_| !matches!(schedule, Schedule::Reboot)),
    };
    match (schedule, kept) {
        (_, Some(next)) => Some(next),
        (Schedule::Reboot, None) => first_boot.then_some(now),
        (s, None) => s.next_after(now, zone),
    }
}

/// A job as the timetable holds it.
#[derive(Clone, Debug)]
pub struct Timing {
    pub schedule_text: String,
    pub schedule: Schedule,
    pub next: Option<i64>,
}

/// The active jobs' next fires, with a min-heap over them: finding what is
/// due costs O(log n) in the number of jobs. Heap entries whose time is no
/// longer the job's next fire (it was altered, removed, or fired) are stale
/// and dropped when they reach the top.
#[derive(Default)]
pub struct Timetable {
    jobs: HashMap<i64, Timing>,
    heap: BinaryHeap<Reverse<(i64, i64)>>,
}

/// What to do with a fire that is due.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// start a run
    Start,
    /// record it as skipped: the job's run `runid` is still going
    Skip { runid: i64 },
    /// leave it due, in its place: `max_running_jobs` runs of this database
    /// are going (it starts when one ends, before any fire due later)
    Wait,
}

/// Overlap and slot rules for a due fire of `jobid`, given this database's
/// runs in flight (job → run) and `max_running_jobs`.
pub fn decide(jobid: i64, running: &HashMap<i64, i64>, max_running: usize) -> Action {
    match running.get(&jobid) {
        Some(&runid) => Action::Skip { runid },
        None if running.len() >= max_running.max(1) => Action::Wait,
        None => Action::Start,
    }
}

/// What the caller managed when asked to start a run.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Started {
    /// requested, or refused for good and recorded as failed: either way the
    /// schedule moves on
    Done,
    /// every run slot of the cluster is taken: the fire stays due
    NoSlot,
}

/// The side effects of launching, carried out by the caller.
pub trait Launcher {
    type Error;
    fn start(&mut self, jobid: i64, due: i64) -> Result<Started, Self::Error>;
    fn skip(&mut self, jobid: i64, due: i64, running_runid: i64) -> Result<(), Self::Error>;
}

impl Timetable {
    /// Load the active jobs `(jobid, schedule text, schedule, stored next
    /// fire)`, keeping what this process knew of the unchanged ones. Returns
    /// every job's next fire (to be written to the job table).
    pub fn load(
        &mut self,
        jobs: impl IntoIterator<Item = (i64, String, Schedule, Option<i64>)>,
        first_boot: bool,
        now: i64,
        zone: &dyn Zone,
    ) -> Vec<(i64, Option<i64>)> {
        let mut old = std::mem::take(&mut self.jobs);
        for (jobid, schedule_text, schedule, stored) in jobs {
            let known = match old.remove(&jobid) {
                Some(t) if t.schedule_text == schedule_text => Known::InProcess(t.next),
                Some(_) => Known::Altered,
                None => Known::Stored(stored),
            };
            let next = first_fire(&schedule, known, first_boot, now, zone);
            self.jobs.insert(jobid, Timing { schedule_text, schedule, next });
        }
        self.heap = self.jobs.iter().filter_map(|(id, t)| t.next.map(|n| Reverse((n, *id)))).collect();
        let mut nexts: Vec<(i64, Option<i64>)> = self.jobs.iter().map(|(id, t)| (*id, t.next)).collect();
        nexts.sort_unstable();
        nexts
    }

    /// The earliest fire and its job (stale heap entries dropped first).
    pub fn next(&mut self) -> Option<(i64, i64)> {
        while let Some(&Reverse((ts, jobid))) = self.heap.peek() {
            if self.jobs.get(&jobid).is_some_and(|t| t.next == Some(ts)) {
                return Some((ts, jobid));
            }
            self.heap.pop();
        }
        None
    }

    /// The fire of `jobid` due at `due` was dealt with: move the job on.
    fn advance(&mut self, jobid: i64, due: i64, now: i64, zone: &dyn Zone) -> Option<i64> {
        if self.heap.peek() == Some(&Reverse((due, jobid))) {
            self.heap.pop();
        }
        let timing = self.jobs.get_mut(&jobid)?;
        let next = next_fire(&timing.schedule, due, now, zone);
        timing.next = next;
        if let Some(n) = next {
            self.heap.push(Reverse((n, jobid)));
        }
        next
    }

    /// Deal with every fire due at `now`, earliest first: start it, skip it
    /// (overlap), or stop at the first that must wait (no slot: it and every
    /// later fire keep their place). `running` (job → run) is this
    /// database's runs in flight; started runs are added to it (run id 0
    /// until recorded). Returns the jobs whose next fire moved; the first
    /// error of a side effect stops it (the caller's transaction rolls back).
    pub fn launch_due<L: Launcher>(
        &mut self,
        now: i64,
        zone: &dyn Zone,
        running: &mut HashMap<i64, i64>,
        max_running: usize,
        fx: &mut L,
    ) -> Result<Vec<(i64, Option<i64>)>, L::Error> {
        let mut advanced = Vec::new();
        while let Some((due, jobid)) = self.next() {
            if due > now {
                break;
            }
            match decide(jobid, running, max_running) {
                Action::Wait => break,
                Action::Skip { runid } => fx.skip(jobid, due, runid)?,
                Action::Start => match fx.start(jobid, due)? {
                    Started::Done => {
                        running.insert(jobid, 0);
                    }
                    Started::NoSlot => break,
                },
            }
            advanced.push((jobid, self.advance(jobid, due, now, zone)));
        }
        Ok(advanced)
    }
}

/// Longest sleep between ticks: how soon a change to automation.job, a
/// settings reload or a finished run is noticed at the latest (finished runs
/// and signals also wake the scheduler at once).
pub const MAX_NAP_US: i64 = 1_000_000;
/// The sleep while a due fire waits for a free slot (a run's end wakes the
/// scheduler sooner).
pub const BLOCKED_NAP_US: i64 = 100_000;

/// How to sleep until the next tick: on the latch to the millisecond, then
/// the last fraction of a millisecond without it, so that a fire is launched
/// within microseconds of its due time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Nap {
    pub latch_ms: u64,
    pub spin_us: u64,
}

pub fn nap(next: Option<i64>, now: i64) -> Nap {
    let us = match next {
        Some(ts) if ts <= now => BLOCKED_NAP_US,
        Some(ts) => (ts - now).min(MAX_NAP_US),
        None => MAX_NAP_US,
    };
    let latch_ms = (us / 1000) as u64;
    let spin_us = match next {
        Some(ts) if ts > now && ts - now < MAX_NAP_US => ((ts - now) % 1000) as u64,
        _ => 0,
    };
    Nap { latch_ms, spin_us }
}

/// A scheduler stays while a fire is due within this, and leaves (its next
/// due time in shared memory, for the launcher) when none is: worker slots
/// follow the work, not the number of databases.
pub const LINGER_US: i64 = 2_000_000;
/// How long a scheduler waits for a run it asked for to end, to record it.
pub const RUN_LINGER_US: i64 = 500_000;
/// A fire due within this keeps a scheduler even when other databases wait
/// (the launcher starts one this long before a fire: launcher.rs LEAD_US).
pub const IMMINENT_US: i64 = 150_000;

/// What the scheduler knows of the cluster when it decides whether to stay.
#[derive(Copy, Clone, Debug, Default)]
pub struct Crowd {
    /// another database waits for a scheduler the budget does not allow
    pub others_wait: bool,
    /// more databases have the extension than schedulers may run at once
    pub crowded: bool,
    /// when this database's most recent run in flight was asked for, if any
    pub last_request: Option<i64>,
}

/// Stay for a fire due in a moment always; otherwise leave when other
/// databases need the slot (or might: crowded); else stay while a fire is
/// due soon or a run asked for a moment ago may end soon (it is recorded
/// sooner, and without starting a scheduler again, if we wait).
pub fn stays(next: Option<i64>, now: i64, crowd: Crowd) -> bool {
    if next.is_some_and(|ts| ts - now <= IMMINENT_US) {
        return true;
    }
    if crowd.others_wait || crowd.crowded {
        return false;
    }
    next.is_some_and(|ts| ts - now <= LINGER_US) || crowd.last_request.is_some_and(|t| now - t < RUN_LINGER_US)
}

/// How a run's worker left its result (runner.rs's segment states).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Succeeded,
    Failed,
    /// the worker exited without a result (could not connect, terminated)
    None,
    /// the run's shared segment was lost
    Lost,
}

/// A finished run's status, and the message when the worker left none.
pub fn outcome(report: Report) -> (RunStatus, Option<&'static str>) {
    match report {
        Report::Succeeded => (RunStatus::Succeeded, None),
        Report::Failed => (RunStatus::Failed, None),
        Report::None => (
            RunStatus::Failed,
            Some(
                "the job worker exited without reporting a result (it could not connect, or it was terminated); \
                 see the server log",
            ),
        ),
        Report::Lost => (RunStatus::Failed, Some("the outcome of this run was lost")),
    }
}

/// After a restart: the runs recorded as in flight (`(runid, status)`) that
/// no run slot follows any more (`live`) have an unknown outcome; they are
/// recorded as failed. Runs still in a slot are followed as usual.
pub fn orphaned(in_flight: &[(i64, RunStatus)], live: &HashSet<i64>) -> Vec<i64> {
    in_flight.iter().filter(|(runid, status)| !status.is_final() && !live.contains(runid)).map(|(r, _)| *r).collect()
}

pub const ORPHANED_MESSAGE: &str = "the scheduler restarted while this run was in flight; its outcome is unknown";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::civil::FixedOffset;
    use crate::scheduler::cron;

    const SEC: i64 = 1_000_000;
    const MIN: i64 = 60 * SEC;
    const UTC: FixedOffset = FixedOffset(0);

    fn sched(text: &str) -> (String, Schedule) {
        (text.to_owned(), cron::parse(text).unwrap())
    }

    /// Records what it was asked to do; refuses starts beyond `slots`.
    #[derive(Default)]
    struct Fake {
        started: Vec<(i64, i64)>,
        skipped: Vec<(i64, i64, i64)>,
        slots: Option<usize>,
    }

    impl Launcher for Fake {
        type Error = std::convert::Infallible;
        fn start(&mut self, jobid: i64, due: i64) -> Result<Started, Self::Error> {
            if self.slots.is_some_and(|s| self.started.len() >= s) {
                return Ok(Started::NoSlot);
            }
            self.started.push((jobid, due));
            Ok(Started::Done)
        }
        fn skip(&mut self, jobid: i64, due: i64, runid: i64) -> Result<(), Self::Error> {
            self.skipped.push((jobid, due, runid));
            Ok(())
        }
    }

    fn table(jobs: &[(i64, &str)], now: i64) -> Timetable {
        let mut t = Timetable::default();
        t.load(
            jobs.iter().map(|(id, text)| {
                let (s, p) = sched(text);
                (*id, s, p, None)
            }),
            false,
            now,
            &UTC,
        );
        t
    }

    #[test]
    fn run_statuses_round_trip_and_transitions_are_the_documented_ones() {
        for s in RunStatus::ALL {
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(RunStatus::parse("SUCCEEDED"), None);
        assert_eq!(RunStatus::parse("cancelled"), None);
        use RunStatus::*;
        let allowed: Vec<(RunStatus, RunStatus)> = RunStatus::ALL
            .into_iter()
            .flat_map(|a| RunStatus::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.may_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Starting, Running),
                (Starting, Succeeded),
                (Starting, Failed),
                (Running, Succeeded),
                (Running, Failed)
            ]
        );
        assert_eq!(Running.predecessors(), vec!["starting"]);
        assert_eq!(Failed.predecessors(), vec!["starting", "running"]);
        assert!(Starting.predecessors().is_empty() && Skipped.predecessors().is_empty());
        // a final status never changes; and only final statuses are final
        for s in RunStatus::ALL {
            assert_eq!(s.is_final(), RunStatus::ALL.into_iter().all(|t| !s.may_become(t)));
        }
    }

    #[test]
    fn a_fire_is_aligned_to_the_schedule_not_to_when_it_ran() {
        let (_, every_min) = sched("* * * * *");
        // due at 10:00, handled 300 ms late: the next is 10:01, not 10:01.3
        assert_eq!(next_fire(&every_min, 600 * MIN, 600 * MIN + 300_000, &UTC), Some(601 * MIN));
    }

    #[test]
    fn missed_fires_are_coalesced_into_the_next_one() {
        let (_, every_min) = sched("* * * * *");
        // due at 10:00, handled at 10:07:30 (waited for a slot): one run, then 10:08
        assert_eq!(next_fire(&every_min, 600 * MIN, 607 * MIN + 30 * SEC, &UTC), Some(608 * MIN));
        let (_, every_sec) = sched("1 second");
        assert_eq!(next_fire(&every_sec, 0, 10 * SEC + 1, &UTC), Some(11 * SEC));
    }

    #[test]
    fn first_fires_after_a_load() {
        let (_, s) = sched("*/5 * * * *");
        let now = 601 * MIN;
        assert_eq!(first_fire(&s, Known::Stored(None), false, now, &UTC), Some(605 * MIN));
        // a stored fire a little (or long) overdue runs once now
        assert_eq!(first_fire(&s, Known::Stored(Some(600 * MIN)), false, now, &UTC), Some(600 * MIN));
        // this process's own knowledge wins over the table's
        assert_eq!(first_fire(&s, Known::InProcess(Some(610 * MIN)), false, now, &UTC), Some(610 * MIN));
        assert_eq!(first_fire(&s, Known::Altered, false, now, &UTC), Some(605 * MIN));
        let (_, reboot) = sched("@reboot");
        assert_eq!(first_fire(&reboot, Known::Stored(Some(0)), true, now, &UTC), Some(now));
        assert_eq!(first_fire(&reboot, Known::Stored(Some(0)), false, now, &UTC), None);
        // it ran in this process (no next fire): a reload does not run it again
        // (first_boot is only true at the first load after a server start)
        assert_eq!(first_fire(&reboot, Known::InProcess(None), false, now, &UTC), None);
    }

    #[test]
    fn due_jobs_start_in_order_of_their_fires() {
        let now = 600 * MIN + 1;
        let mut t = table(&[(1, "*/2 * * * *"), (2, "* * * * *"), (3, "*/10 * * * *")], 599 * MIN);
        let mut fx = Fake::default();
        let mut running = HashMap::new();
        let moved = t.launch_due(now, &UTC, &mut running, 10, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(1, 600 * MIN), (2, 600 * MIN), (3, 600 * MIN)]);
        assert_eq!(moved, vec![(1, Some(602 * MIN)), (2, Some(601 * MIN)), (3, Some(610 * MIN))]);
        // nothing more is due until 10:01
        assert!(t.launch_due(now + 10 * SEC, &UTC, &mut running, 10, &mut fx).unwrap().is_empty());
        assert_eq!(t.next(), Some((601 * MIN, 2)));
    }

    #[test]
    fn a_fire_while_the_previous_run_goes_is_skipped_and_the_schedule_moves_on() {
        let mut t = table(&[(7, "1 second")], 0);
        let mut fx = Fake::default();
        let mut running = HashMap::from([(7, 42)]);
        let moved = t.launch_due(SEC, &UTC, &mut running, 5, &mut fx).unwrap();
        assert_eq!(fx.skipped, vec![(7, SEC, 42)]);
        assert!(fx.started.is_empty());
        assert_eq!(moved, vec![(7, Some(2 * SEC))]);
    }

    #[test]
    fn max_running_jobs_makes_fires_wait_in_their_place() {
        let mut t = table(&[(1, "1 second"), (2, "1 second"), (3, "1 second")], 0);
        let mut fx = Fake::default();
        let mut running = HashMap::new();
        let moved = t.launch_due(SEC, &UTC, &mut running, 2, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(1, SEC), (2, SEC)]);
        assert_eq!(moved.len(), 2);
        // job 3 is still due at 1 s, first in line
        assert_eq!(t.next(), Some((SEC, 3)));
        // one run ends 1.5 s later: job 3's fire runs (late), then its next is
        // coalesced past now; jobs 1 and 2 (due at 2 s) wait behind it
        running.remove(&1);
        let moved = t.launch_due(2 * SEC + 500_000, &UTC, &mut running, 2, &mut fx).unwrap();
        assert_eq!(fx.started[2], (3, SEC));
        assert_eq!(moved, vec![(3, Some(3 * SEC))]);
        assert_eq!(t.next(), Some((2 * SEC, 1)));
        // a running job's own fire is still skipped, even with no slot left
        let mut t = table(&[(1, "1 second")], 0);
        let mut running = HashMap::from([(1, 9), (2, 10)]);
        let mut fx = Fake::default();
        t.launch_due(SEC, &UTC, &mut running, 2, &mut fx).unwrap();
        assert_eq!(fx.skipped, vec![(1, SEC, 9)]);
    }

    #[test]
    fn no_free_run_slot_keeps_the_fire_due() {
        let mut t = table(&[(1, "1 second"), (2, "1 second")], 0);
        let mut fx = Fake { slots: Some(1), ..Default::default() };
        let mut running = HashMap::new();
        let moved = t.launch_due(SEC, &UTC, &mut running, 10, &mut fx).unwrap();
        assert_eq!(moved, vec![(1, Some(2 * SEC))]);
        assert_eq!(t.next(), Some((SEC, 2)));
        assert_eq!(nap(t.next().map(|n| n.0), SEC), Nap { latch_ms: 100, spin_us: 0 });
    }

    #[test]
    fn the_clock_jumping_forward_runs_each_job_once_then_resumes_the_schedule() {
        let mut t = table(&[(1, "* * * * *"), (2, "1 second"), (3, "0 * * * *")], 0);
        let mut fx = Fake::default();
        let mut running = HashMap::new();
        // the clock jumps five hours ahead (a suspended VM wakes up)
        let now = 5 * 60 * MIN + 17 * SEC;
        let moved = t.launch_due(now, &UTC, &mut running, 10, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(2, SEC), (1, MIN), (3, 60 * MIN)]);
        assert_eq!(moved, vec![(2, Some(now - 17 * SEC + 18 * SEC)), (1, Some(301 * MIN)), (3, Some(360 * MIN))]);
    }

    #[test]
    fn the_clock_going_back_fires_nothing_twice_and_early() {
        let mut t = table(&[(1, "* * * * *")], 0);
        let mut fx = Fake::default();
        let mut running = HashMap::new();
        t.launch_due(10 * MIN, &UTC, &mut running, 10, &mut fx).unwrap();
        running.clear();
        assert_eq!(fx.started, vec![(1, MIN)]);
        assert_eq!(t.next(), Some((11 * MIN, 1)));
        // the clock is set back an hour: nothing is due until the job's next
        // fire (11 min) comes round again; fires are never repeated
        for now in [0, 5 * MIN, 10 * MIN, 11 * MIN - 1] {
            assert!(t.launch_due(now, &UTC, &mut running, 10, &mut fx).unwrap().is_empty());
        }
        // and the nap never goes negative or past a second
        assert_eq!(nap(Some(11 * MIN), 0), Nap { latch_ms: 1000, spin_us: 0 });
        t.launch_due(11 * MIN, &UTC, &mut running, 10, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(1, MIN), (1, 11 * MIN)]);
    }

    #[test]
    fn a_job_altered_while_running() {
        let now = 30 * SEC;
        let mut t = table(&[(1, "* * * * *")], now);
        assert_eq!(t.next(), Some((MIN, 1)));
        let mut fx = Fake::default();
        let mut running = HashMap::new();
        t.launch_due(MIN, &UTC, &mut running, 10, &mut fx).unwrap();
        // while run 1 goes, the schedule is altered to every 10 s: the new
        // schedule starts afresh from now; its next fire is skipped (overlap)
        let (text, s) = sched("10 seconds");
        t.load([(1, text.clone(), s.clone(), Some(2 * MIN))], false, MIN + 3 * SEC, &UTC);
        assert_eq!(t.next(), Some((MIN + 10 * SEC, 1)));
        running.insert(1, 5);
        t.launch_due(MIN + 10 * SEC, &UTC, &mut running, 10, &mut fx).unwrap();
        assert_eq!(fx.skipped, vec![(1, MIN + 10 * SEC, 5)]);
        // reloaded unchanged (another job changed): the fire this process knows is kept
        t.load([(1, text, s, Some(0))], false, MIN + 12 * SEC, &UTC);
        assert_eq!(t.next(), Some((MIN + 20 * SEC, 1)));
        // deactivated (not among the active jobs any more): nothing is due, ever
        t.load([], false, MIN + 13 * SEC, &UTC);
        assert_eq!(t.next(), None);
        assert!(t.launch_due(10 * MIN, &UTC, &mut running, 10, &mut fx).unwrap().is_empty());
    }

    #[test]
    fn ten_thousand_jobs() {
        let jobs: Vec<(i64, String)> = (0..10_000)
            .map(|i| {
                let text = match i % 4 {
                    0 => "* * * * *".to_owned(),
                    1 => format!("{} * * * *", i % 60),
                    2 => format!("{} seconds", 1 + i % 59),
                    _ => format!("{} {} * * *", i % 60, i % 24),
                };
                (i, text)
            })
            .collect();
        let mut t = Timetable::default();
        let nexts =
            t.load(jobs.iter().map(|(id, text)| (*id, text.clone(), cron::parse(text).unwrap(), None)), false, 0, &UTC);
        assert_eq!(nexts.len(), 10_000);
        assert!(nexts.iter().all(|(_, n)| n.is_some_and(|n| n > 0)));
        // an hour, a tick per second: every fire starts exactly once, in time order
        let mut fx = Fake::default();
        let mut running = HashMap::new();
        let mut fires = 0usize;
        let mut last = 0;
        for s in 1..=3600 {
            let now = s * SEC;
            for (jobid, next) in t.launch_due(now, &UTC, &mut running, usize::MAX, &mut fx).unwrap() {
                assert!(next.unwrap() > now, "job {jobid}");
            }
            running.clear();
            for &(_, due) in &fx.started[fires..] {
                assert!(due >= last && due <= now);
                last = due;
            }
            fires = fx.started.len();
        }
        let expected: usize = jobs
            .iter()
            .map(|(_, text)| match cron::parse(text).unwrap() {
                Schedule::Seconds(secs) => (3600 / secs) as usize,
                _ if text == "* * * * *" => 60,
                _ if text.ends_with("* * * *") => 1,
                _ => 0, // daily, at hours 3, 7, ... 23: not in the first hour
            })
            .sum();
        assert_eq!(fires, expected);
        assert!(fx.skipped.is_empty());
    }

    #[test]
    fn naps() {
        assert_eq!(nap(None, 0), Nap { latch_ms: 1000, spin_us: 0 });
        assert_eq!(nap(Some(5 * SEC), 0), Nap { latch_ms: 1000, spin_us: 0 });
        assert_eq!(nap(Some(2_500), 0), Nap { latch_ms: 2, spin_us: 500 });
        assert_eq!(nap(Some(400), 0), Nap { latch_ms: 0, spin_us: 400 });
        // due (waits for a slot): a short sleep, no spin
        assert_eq!(nap(Some(0), 0), Nap { latch_ms: 100, spin_us: 0 });
        assert_eq!(nap(Some(-5 * SEC), 0), Nap { latch_ms: 100, spin_us: 0 });
    }

    #[test]
    fn staying() {
        let quiet = Crowd::default();
        let busy = Crowd { others_wait: true, ..quiet };
        let crowded = Crowd { crowded: true, ..quiet };
        assert!(stays(Some(100_000), 0, busy), "a fire in a moment keeps the scheduler");
        assert!(stays(Some(100_000), 0, crowded));
        assert!(!stays(Some(SEC), 0, busy), "others wait: leave");
        assert!(!stays(Some(SEC), 0, crowded));
        assert!(stays(Some(SEC), 0, quiet));
        assert!(!stays(Some(3 * SEC), 0, quiet), "nothing soon: leave");
        assert!(!stays(None, 0, quiet));
        assert!(stays(None, SEC, Crowd { last_request: Some(SEC - 100_000), ..quiet }), "a run just asked for");
        assert!(!stays(None, SEC, Crowd { last_request: Some(0), ..quiet }));
    }

    #[test]
    fn outcomes_and_recovery() {
        assert_eq!(outcome(Report::Succeeded), (RunStatus::Succeeded, None));
        assert_eq!(outcome(Report::Failed).0, RunStatus::Failed);
        assert!(outcome(Report::None).1.unwrap().contains("without reporting"));
        assert_eq!(outcome(Report::Lost).0, RunStatus::Failed);
        let rows =
            [(1, RunStatus::Starting), (2, RunStatus::Running), (3, RunStatus::Running), (4, RunStatus::Succeeded)];
        assert_eq!(orphaned(&rows, &HashSet::from([2])), vec![1, 3]);
        assert!(orphaned(&rows, &HashSet::from([1, 2, 3])).is_empty());
    }
}
