//! What a database's scheduler decides, without doing any of it: which jobs
//! are due, what a missed fire becomes, when a due fire is skipped (its job
//! still runs) or waits (no slot), when to wake next, whether to stay, what
//! a run's end and a restart with runs in flight mean. Pure Rust (no SPI, no
//! shared memory, no clock): `database.rs` gathers the facts, calls these,
//! and carries out what they return. Tested with plain `#[test]`s below.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

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
/// clock jumped forward) coalesced into the next one after `now`. An
/// `'N seconds'` job stays on its own grid (`due` + a multiple of N): late
/// runs never make it drift.
pub fn next_fire(schedule: &Schedule, due: i64, now: i64, zone: &dyn Zone) -> Option<i64> {
    if let Schedule::Seconds(n) = schedule {
        let period = *n as i64 * crate::civil::USECS_PER_SEC;
        let periods = if now < due { 1 } else { (now - due) / period + 1 };
        return Some(due + periods * period);
    }
    match schedule.next_after(due, zone) {
        Some(n) if n <= now => schedule.next_after(now, zone),
        other => other,
    }
}

/// (issue 34) A fire's deadline: the job's next fire after it, by when a
/// run still not started is moot (that fire coalesces it). Runs waiting
/// for a worker start earliest deadline first, so a 1-second job's run goes
/// before a 10-second job's that is due as early or a little earlier. A
/// schedule without a next fire gets a minute.
pub fn deadline(schedule: &Schedule, due: i64, zone: &dyn Zone) -> i64 {
    schedule.next_after(due, zone).unwrap_or(due + 60_000_000)
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

/// What a job does when a fire is due while a run of it is still going
/// (`automation.job.overlap`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// the fire is recorded as skipped (pg_cron's behaviour; the default)
    Skip,
    /// the fire waits and starts as soon as the run ends; fires due
    /// meanwhile are coalesced into it (never more than one waits)
    Queue,
    /// up to N runs at once; a fire beyond that is skipped
    Parallel(u32),
}

impl Overlap {
    /// `skip`, `queue` or `parallel N` (N from 1 to 1000), as the job
    /// table's CHECK constraint allows.
    pub fn parse(text: &str) -> Option<Overlap> {
        match text {
            "skip" => Some(Overlap::Skip),
            "queue" => Some(Overlap::Queue),
            _ => {
                let n: u32 = text.strip_prefix("parallel ")?.parse().ok()?;
                (1..=1000).contains(&n).then_some(Overlap::Parallel(n))
            }
        }
    }
}

/// How a job's fires are run: overlap, priority and retries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub overlap: Overlap,
    /// among fires waiting for a slot, higher first (then the oldest due)
    pub priority: i32,
    /// attempts after a failed one, each its own run
    pub retries: u32,
    /// the first retry's delay (doubling, with jitter, capped so that a
    /// retry never reaches the next fire)
    pub retry_backoff_ms: i64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { overlap: Overlap::Skip, priority: 0, retries: 0, retry_backoff_ms: 10_000 }
    }
}

/// The longest wait for a retry of a job that has no next fire (`@reboot`).
pub const RETRY_CAP_WITHOUT_NEXT_MS: i64 = 3_600_000;
/// A retry starts at least this long before the job's next fire, or not at all.
pub const RETRY_MARGIN_MS: i64 = 1_000;

/// A job as the timetable holds it.
pub struct Timing {
    pub schedule_text: String,
    pub schedule: Schedule,
    /// the job's own time zone (its name, and the zone), else the scheduler's
    pub zone_name: Option<String>,
    pub zone: Option<Rc<dyn Zone>>,
    pub next: Option<i64>,
    /// the attempt `next` is: 1 for a fire of the schedule, more for a retry
    pub attempt: u32,
    pub policy: Policy,
}

/// A job as it is loaded (from automation.job).
pub struct Loaded {
    pub jobid: i64,
    pub schedule_text: String,
    pub schedule: Schedule,
    pub zone_name: Option<String>,
    pub zone: Option<Rc<dyn Zone>>,
    /// next_run_at and next_attempt as the job table keeps them
    pub stored: Option<i64>,
    pub stored_attempt: u32,
    pub policy: Policy,
}

/// The active jobs' next fires, with a min-heap over them: finding what is
/// due costs O(log n) in the number of jobs. Heap entries whose time is no
/// longer the job's next fire (it was altered, removed, or fired) are stale
/// and dropped when they reach the top.
#[derive(Default)]
pub struct Timetable {
    jobs: HashMap<i64, Timing>,
    heap: BinaryHeap<Reverse<(i64, i64)>>,
    /// (issue 34) the shortest time from an active job's next fire to the
    /// one after, as of the last load
    shortest_period: Option<i64>,
}

/// What to do with a fire that is due.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// start a run
    Start,
    /// record it as skipped: the job's run `runid` is still going
    Skip { runid: i64 },
    /// leave it due, in its place: `max_running_jobs` runs of this database
    /// are going, or the cluster has no free run slot (it starts when one
    /// ends, before any fire due later of the same or a lower priority)
    WaitForSlot,
    /// leave it due: an `overlap = queue` job's run is going (it starts
    /// when that run ends)
    WaitForRun,
}

/// Overlap and slot rules for a due fire of a job with this overlap policy,
/// given its runs in flight (`mine`, `runid` one of them), the database's
/// runs in flight (`total`), `max_running_jobs`, and whether the cluster's
/// run slots ran out during this tick (`no_slot`).
pub fn decide(overlap: Overlap, mine: &[i64], total: usize, max_running: usize, no_slot: bool) -> Action {
    if let Some(&runid) = mine.first() {
        match overlap {
            Overlap::Skip => return Action::Skip { runid },
            Overlap::Queue => return Action::WaitForRun,
            Overlap::Parallel(n) if mine.len() >= n as usize => return Action::Skip { runid },
            Overlap::Parallel(_) => {}
        }
    }
    if no_slot || total >= max_running.max(1) {
        Action::WaitForSlot
    } else {
        Action::Start
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
    /// Start a run of `jobid` for its fire `due`; `deadline` (see
    /// [`deadline`]) orders it among runs waiting for a worker.
    fn start(&mut self, jobid: i64, due: i64, deadline: i64, attempt: u32) -> Result<Started, Self::Error>;
    fn skip(&mut self, jobid: i64, due: i64, running_runid: i64) -> Result<(), Self::Error>;
}

/// A job's next fire as the job table keeps it: (jobid, next_run_at, next_attempt).
pub type Next = (i64, Option<i64>, u32);

/// What one pass over the due fires did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Launched {
    /// the jobs whose next fire moved
    pub advanced: Vec<Next>,
    /// due fires left waiting for a slot (max_running_jobs or the cluster's budget)
    pub waiting_for_slot: usize,
    /// (0.8.0) some of them because the cluster had no free run slot
    pub no_run_slot: bool,
}

impl Timetable {
    /// Load the active jobs, keeping what this process knew of the unchanged
    /// ones. Returns every job's next fire (to be written to the job table).
    pub fn load(
        &mut self,
        jobs: impl IntoIterator<Item = Loaded>,
        first_boot: bool,
        now: i64,
        zone: &dyn Zone,
    ) -> Vec<Next> {
        let mut old = std::mem::take(&mut self.jobs);
        for job in jobs {
            let (known, attempt) = match old.remove(&job.jobid) {
                Some(t) if t.schedule_text == job.schedule_text && t.zone_name == job.zone_name => {
                    (Known::InProcess(t.next), t.attempt)
                }
                Some(_) => (Known::Altered, 1),
                None => (Known::Stored(job.stored), job.stored_attempt.max(1)),
            };
            let job_zone: &dyn Zone = job.zone.as_deref().unwrap_or(zone);
            let next = first_fire(&job.schedule, known, first_boot, now, job_zone);
            let attempt = if matches!(known, Known::Altered) || next.is_none() { 1 } else { attempt };
            self.jobs.insert(
                job.jobid,
                Timing {
                    schedule_text: job.schedule_text,
                    schedule: job.schedule,
                    zone_name: job.zone_name,
                    zone: job.zone,
                    next,
                    attempt,
                    policy: job.policy,
                },
            );
        }
        self.heap = self.jobs.iter().filter_map(|(id, t)| t.next.map(|n| Reverse((n, *id)))).collect();
        self.shortest_period = self
            .jobs
            .values()
            .filter_map(|t| t.next.map(|n| deadline(&t.schedule, n, t.zone.as_deref().unwrap_or(zone)) - n))
            .min();
        let mut nexts: Vec<Next> = self.jobs.iter().map(|(id, t)| (*id, t.next, t.attempt)).collect();
        nexts.sort_unstable();
        nexts
    }

    /// (issue 34) The shortest time between two fires of a job, as of the
    /// last load (from each job's next fire to the one after): a database
    /// with a job firing every second keeps its scheduler (visit.rs
    /// `resident`) from its first turn on.
    pub fn shortest_period(&self) -> Option<i64> {
        self.shortest_period
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

    /// The fire of `jobid` due at `due` was dealt with (it left the heap):
    /// move the job on to its next fire of the schedule.
    fn advance(&mut self, jobid: i64, due: i64, now: i64, zone: &dyn Zone) -> Next {
        let Some(timing) = self.jobs.get_mut(&jobid) else {
            return (jobid, None, 1);
        };
        let next = next_fire(&timing.schedule, due, now, timing.zone.as_deref().unwrap_or(zone));
        timing.next = next;
        timing.attempt = 1;
        if let Some(n) = next {
            self.heap.push(Reverse((n, jobid)));
        }
        (jobid, next, 1)
    }

    /// Attempt `attempt` of `jobid` failed at `end`: its retry, if the job
    /// has one left and it fits before the job's next fire (else that fire
    /// is the next attempt). The delay is `retry_backoff` doubled per
    /// attempt, with jitter (`jitter` in 0..1), capped by the time left to
    /// the next fire. Returns the job's new next fire when a retry was
    /// planned.
    pub fn failed(&mut self, jobid: i64, attempt: u32, end: i64, jitter: f64) -> Option<Next> {
        let timing = self.jobs.get_mut(&jobid)?;
        if attempt == 0 || attempt > timing.policy.retries {
            return None;
        }
        // the longest delay: up to RETRY_MARGIN_MS before the next fire
        let cap_ms = match timing.next {
            Some(n) => (n - end) / 1000 - RETRY_MARGIN_MS,
            None if matches!(timing.schedule, Schedule::Reboot) => RETRY_CAP_WITHOUT_NEXT_MS,
            None => return None,
        };
        if cap_ms <= 0 {
            return None;
        }
        let delay_ms = crate::runtime::backoff_ms(
            timing.policy.retry_backoff_ms.min(cap_ms),
            cap_ms,
            i32::try_from(attempt - 1).unwrap_or(i32::MAX),
            jitter,
        );
        let at = end + delay_ms * 1000;
        if timing.next.is_some_and(|n| at >= n) {
            return None;
        }
        timing.next = Some(at);
        timing.attempt = attempt + 1;
        self.heap.push(Reverse((at, jobid)));
        Some((jobid, Some(at), attempt + 1))
    }

    /// Deal with every fire due at `now`: the highest priority first, then
    /// the oldest due. Start it, skip it (overlap), or leave it due (no slot,
    /// or a queued job's run still going: it and fires of the same or lower
    /// priority due later keep their place). `running` (job → runs) is this
    /// database's runs in flight; started runs are added to it (run id 0
    /// until recorded). The first error of a side effect stops it (the
    /// caller's transaction rolls back).
    pub fn launch_due<L: Launcher>(
        &mut self,
        now: i64,
        zone: &dyn Zone,
        running: &mut HashMap<i64, Vec<i64>>,
        max_running: usize,
        fx: &mut L,
    ) -> Result<Launched, L::Error> {
        let mut due = Vec::new();
        while let Some((ts, jobid)) = self.next() {
            if ts > now {
                break;
            }
            self.heap.pop();
            due.push((Reverse(self.jobs[&jobid].policy.priority), ts, jobid));
        }
        due.sort_unstable();
        let mut launched = Launched::default();
        let mut total: usize = running.values().map(Vec::len).sum();
        let mut no_slot = false;
        let mut held = Vec::new();
        for (_, ts, jobid) in due {
            let timing = &self.jobs[&jobid];
            let mine = running.get(&jobid).map_or(&[][..], Vec::as_slice);
            match decide(timing.policy.overlap, mine, total, max_running, no_slot) {
                Action::WaitForRun => {
                    held.push((ts, jobid));
                    continue;
                }
                Action::WaitForSlot => {
                    launched.waiting_for_slot += 1;
                    held.push((ts, jobid));
                    continue;
                }
                Action::Skip { runid } => fx.skip(jobid, ts, runid)?,
                Action::Start => {
                    let deadline = deadline(&timing.schedule, ts, timing.zone.as_deref().unwrap_or(zone));
                    match fx.start(jobid, ts, deadline, timing.attempt)? {
                        Started::Done => {
                            running.entry(jobid).or_default().push(0);
                            total += 1;
                        }
                        Started::NoSlot => {
                            no_slot = true;
                            launched.no_run_slot = true;
                            launched.waiting_for_slot += 1;
                            held.push((ts, jobid));
                            continue;
                        }
                    }
                }
            }
            launched.advanced.push(self.advance(jobid, ts, now, zone));
        }
        self.heap.extend(held.into_iter().map(Reverse));
        Ok(launched)
    }
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
    use crate::jobs::cron;
    use crate::worker::visit::{nap, Nap};

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
        attempts: Vec<u32>,
        deadlines: Vec<i64>,
        slots: Option<usize>,
    }

    impl Launcher for Fake {
        type Error = std::convert::Infallible;
        fn start(&mut self, jobid: i64, due: i64, deadline: i64, attempt: u32) -> Result<Started, Self::Error> {
            if self.slots.is_some_and(|s| self.started.len() >= s) {
                return Ok(Started::NoSlot);
            }
            self.started.push((jobid, due));
            self.deadlines.push(deadline);
            self.attempts.push(attempt);
            Ok(Started::Done)
        }
        fn skip(&mut self, jobid: i64, due: i64, runid: i64) -> Result<(), Self::Error> {
            self.skipped.push((jobid, due, runid));
            Ok(())
        }
    }

    fn loaded(jobid: i64, text: &str, stored: Option<i64>, policy: Policy) -> Loaded {
        let (schedule_text, schedule) = sched(text);
        Loaded { jobid, schedule_text, schedule, zone_name: None, zone: None, stored, stored_attempt: 1, policy }
    }

    fn table_with(jobs: &[(i64, &str, Policy)], now: i64) -> Timetable {
        let mut t = Timetable::default();
        t.load(jobs.iter().map(|(id, text, p)| loaded(*id, text, None, *p)), false, now, &UTC);
        t
    }

    fn table(jobs: &[(i64, &str)], now: i64) -> Timetable {
        table_with(&jobs.iter().map(|(id, text)| (*id, *text, Policy::default())).collect::<Vec<_>>(), now)
    }

    /// job → its runs in flight
    fn runs(pairs: &[(i64, i64)]) -> HashMap<i64, Vec<i64>> {
        let mut m: HashMap<i64, Vec<i64>> = HashMap::new();
        for (job, run) in pairs {
            m.entry(*job).or_default().push(*run);
        }
        m
    }

    trait Tap: Sized {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }
    impl Tap for Timetable {}

    /// the (jobid, next fire) pairs a pass moved
    fn moves(l: Launched) -> Vec<(i64, Option<i64>)> {
        l.advanced.into_iter().map(|(id, n, _)| (id, n)).collect()
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
    fn a_seconds_job_keeps_its_own_grid() {
        let (_, ten) = sched("10 seconds");
        // its grid is 10:00:03.250 + 10 s k (set when it was scheduled)
        let due = 600 * MIN + 3 * SEC + 250_000;
        // on time or late by less than a period: the next point of the grid
        assert_eq!(next_fire(&ten, due, due + 40_000, &UTC), Some(due + 10 * SEC));
        assert_eq!(next_fire(&ten, due, due + 9_999_999, &UTC), Some(due + 10 * SEC));
        // handled exactly at the next point, or 35 s late: coalesced, still on the grid
        assert_eq!(next_fire(&ten, due, due + 10 * SEC, &UTC), Some(due + 20 * SEC));
        assert_eq!(next_fire(&ten, due, due + 35 * SEC, &UTC), Some(due + 40 * SEC));
        // a clock that went back: the next point after the fire
        assert_eq!(next_fire(&ten, due, due - 5 * SEC, &UTC), Some(due + 10 * SEC));
        // a thousand fires handled late by up to 0.9 s never drift
        let mut t = due;
        for i in 0..1000 {
            t = next_fire(&ten, t, t + (i % 10) * 90_000, &UTC).unwrap();
        }
        assert_eq!(t, due + 1000 * 10 * SEC);
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
    fn a_fires_deadline_is_the_jobs_next_fire() {
        let (_, every_second) = sched("1 seconds");
        let (_, ten) = sched("10 seconds");
        let (_, reboot) = sched("@reboot");
        assert_eq!(deadline(&every_second, 600 * MIN, &UTC), 600 * MIN + SEC);
        assert_eq!(deadline(&ten, 600 * MIN, &UTC), 600 * MIN + 10 * SEC);
        // due in the same instant, the 1-second job's run goes first
        assert!(deadline(&every_second, 600 * MIN, &UTC) < deadline(&ten, 600 * MIN, &UTC));
        assert_eq!(deadline(&reboot, 600 * MIN, &UTC), 601 * MIN, "no next fire: a minute");
    }

    #[test]
    fn due_jobs_start_in_order_of_their_fires() {
        let now = 600 * MIN + 1;
        let mut t = table(&[(1, "*/2 * * * *"), (2, "* * * * *"), (3, "*/10 * * * *")], 599 * MIN);
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        let moved = moves(t.launch_due(now, &UTC, &mut running, 10, &mut fx).unwrap());
        assert_eq!(fx.started, vec![(1, 600 * MIN), (2, 600 * MIN), (3, 600 * MIN)]);
        assert_eq!(moved, vec![(1, Some(602 * MIN)), (2, Some(601 * MIN)), (3, Some(610 * MIN))]);
        // each run's deadline is its job's next fire (the worker order)
        assert_eq!(fx.deadlines, vec![602 * MIN, 601 * MIN, 610 * MIN]);
        // known from the load, before any fire
        let both = table(&[(1, "10 seconds"), (2, "1 seconds")], 600 * MIN - 1);
        assert_eq!(
            both.shortest_period(),
            Some(SEC),
            "the 1-second job makes the database one that fires every second"
        );
        assert_eq!(table(&[(1, "10 seconds"), (2, "* * * * *")], 600 * MIN).shortest_period(), Some(10 * SEC));
        assert_eq!(table(&[(1, "@reboot")], 600 * MIN).shortest_period(), None, "fired at boot: none left");
        // nothing more is due until 10:01
        assert!(t.launch_due(now + 10 * SEC, &UTC, &mut running, 10, &mut fx).unwrap().advanced.is_empty());
        assert_eq!(t.next(), Some((601 * MIN, 2)));
    }

    #[test]
    fn a_fire_while_the_previous_run_goes_is_skipped_and_the_schedule_moves_on() {
        let mut t = table(&[(7, "1 second")], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[(7, 42)]);
        let moved = moves(t.launch_due(SEC, &UTC, &mut running, 5, &mut fx).unwrap());
        assert_eq!(fx.skipped, vec![(7, SEC, 42)]);
        assert!(fx.started.is_empty());
        assert_eq!(moved, vec![(7, Some(2 * SEC))]);
    }

    #[test]
    fn max_running_jobs_makes_fires_wait_in_their_place() {
        let mut t = table(&[(1, "1 second"), (2, "1 second"), (3, "1 second")], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        let moved = moves(t.launch_due(SEC, &UTC, &mut running, 2, &mut fx).unwrap());
        assert_eq!(fx.started, vec![(1, SEC), (2, SEC)]);
        assert_eq!(moved.len(), 2);
        // job 3 is still due at 1 s, first in line
        assert_eq!(t.next(), Some((SEC, 3)));
        // one run ends 1.5 s later: job 3's fire runs (late), then its next is
        // coalesced past now; job 1 (due at 2 s) waits behind it; job 2's
        // fire of 2 s is skipped (its run still goes), waiting for nothing
        running.remove(&1);
        let moved = moves(t.launch_due(2 * SEC + 500_000, &UTC, &mut running, 2, &mut fx).unwrap());
        assert_eq!(fx.started[2], (3, SEC));
        assert_eq!(moved, vec![(3, Some(3 * SEC)), (2, Some(3 * SEC))]);
        assert_eq!(fx.skipped, vec![(2, 2 * SEC, 0)]);
        assert_eq!(t.next(), Some((2 * SEC, 1)));
        // a running job's own fire is still skipped, even with no slot left
        let mut t = table(&[(1, "1 second")], 0);
        let mut running = runs(&[(1, 9), (2, 10)]);
        let mut fx = Fake::default();
        t.launch_due(SEC, &UTC, &mut running, 2, &mut fx).unwrap();
        assert_eq!(fx.skipped, vec![(1, SEC, 9)]);
    }

    #[test]
    fn no_free_run_slot_keeps_the_fire_due() {
        let mut t = table(&[(1, "1 second"), (2, "1 second")], 0);
        let mut fx = Fake { slots: Some(1), ..Default::default() };
        let mut running = runs(&[]);
        let moved = moves(t.launch_due(SEC, &UTC, &mut running, 10, &mut fx).unwrap());
        assert_eq!(moved, vec![(1, Some(2 * SEC))]);
        assert_eq!(t.next(), Some((SEC, 2)));
        assert_eq!(nap(t.next().map(|n| n.0), SEC), Nap { latch_ms: 100, spin_us: 0 });
    }

    #[test]
    fn the_clock_jumping_forward_runs_each_job_once_then_resumes_the_schedule() {
        let mut t = table(&[(1, "* * * * *"), (2, "1 second"), (3, "0 * * * *")], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        // the clock jumps five hours ahead (a suspended VM wakes up)
        let now = 5 * 60 * MIN + 17 * SEC;
        let moved = moves(t.launch_due(now, &UTC, &mut running, 10, &mut fx).unwrap());
        assert_eq!(fx.started, vec![(2, SEC), (1, MIN), (3, 60 * MIN)]);
        assert_eq!(moved, vec![(2, Some(now - 17 * SEC + 18 * SEC)), (1, Some(301 * MIN)), (3, Some(360 * MIN))]);
    }

    #[test]
    fn the_clock_going_back_fires_nothing_twice_and_early() {
        let mut t = table(&[(1, "* * * * *")], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        t.launch_due(10 * MIN, &UTC, &mut running, 10, &mut fx).unwrap();
        running.clear();
        assert_eq!(fx.started, vec![(1, MIN)]);
        assert_eq!(t.next(), Some((11 * MIN, 1)));
        // the clock is set back an hour: nothing is due until the job's next
        // fire (11 min) comes round again; fires are never repeated
        for now in [0, 5 * MIN, 10 * MIN, 11 * MIN - 1] {
            assert!(t.launch_due(now, &UTC, &mut running, 10, &mut fx).unwrap().advanced.is_empty());
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
        let mut running = runs(&[]);
        t.launch_due(MIN, &UTC, &mut running, 10, &mut fx).unwrap();
        // while run 1 goes, the schedule is altered to every 10 s: the new
        // schedule starts afresh from now (its grid: now + 10 s k); its next
        // fire is skipped (overlap)
        let (text, _) = sched("10 seconds");
        let job = |stored| Loaded { stored, ..loaded(1, &text, None, Policy::default()) };
        t.load([job(Some(2 * MIN))], false, MIN + 3 * SEC, &UTC);
        assert_eq!(t.next(), Some((MIN + 13 * SEC, 1)));
        running.insert(1, vec![5]);
        t.launch_due(MIN + 13 * SEC, &UTC, &mut running, 10, &mut fx).unwrap();
        assert_eq!(fx.skipped, vec![(1, MIN + 13 * SEC, 5)]);
        // reloaded unchanged (another job changed): the fire this process knows is kept
        t.load([job(Some(0))], false, MIN + 15 * SEC, &UTC);
        assert_eq!(t.next(), Some((MIN + 23 * SEC, 1)));
        // deactivated (not among the active jobs any more): nothing is due, ever
        t.load([], false, MIN + 13 * SEC, &UTC);
        assert_eq!(t.next(), None);
        assert!(t.launch_due(10 * MIN, &UTC, &mut running, 10, &mut fx).unwrap().advanced.is_empty());
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
        let nexts = t.load(jobs.iter().map(|(id, text)| loaded(*id, text, None, Policy::default())), false, 0, &UTC);
        assert_eq!(nexts.len(), 10_000);
        assert!(nexts.iter().all(|(_, n, a)| n.is_some_and(|n| n > 0) && *a == 1));
        // an hour, a tick per second: every fire starts exactly once, in time order
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        let mut fires = 0usize;
        let mut last = 0;
        for s in 1..=3600 {
            let now = s * SEC;
            for (jobid, next, _) in t.launch_due(now, &UTC, &mut running, usize::MAX, &mut fx).unwrap().advanced {
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
    fn overlap_policies_parse_as_the_table_allows() {
        assert_eq!(Overlap::parse("skip"), Some(Overlap::Skip));
        assert_eq!(Overlap::parse("queue"), Some(Overlap::Queue));
        assert_eq!(Overlap::parse("parallel 3"), Some(Overlap::Parallel(3)));
        assert_eq!(Overlap::parse("parallel 1000"), Some(Overlap::Parallel(1000)));
        for bad in ["", "Skip", "parallel", "parallel 0", "parallel 1001", "parallel -1", "parallel  2", "queue "] {
            assert_eq!(Overlap::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_queued_fire_waits_for_the_run_and_starts_when_it_ends() {
        let queue = Policy { overlap: Overlap::Queue, ..Policy::default() };
        let mut t = table_with(&[(1, "1 second", queue), (2, "1 second", Policy::default())], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[(1, 10)]);
        // at 1 s job 1 is still running: its fire waits; job 2 is not held up
        let l = t.launch_due(SEC, &UTC, &mut running, 5, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(2, SEC)]);
        assert!(fx.skipped.is_empty());
        assert_eq!(l.waiting_for_slot, 0, "waiting for its own run is not waiting for a slot");
        // still going at 3.5 s: fires of 2 s and 3 s are coalesced into the
        // one waiting (never more than one waits; nothing is recorded skipped)
        running.remove(&2);
        t.launch_due(3 * SEC + 500_000, &UTC, &mut running, 5, &mut fx).unwrap();
        assert_eq!(fx.started.iter().filter(|(j, _)| *j == 1).count(), 0);
        assert!(fx.skipped.is_empty());
        // the run ends at 3.7 s: the waiting fire starts at once, then the
        // schedule resumes from now
        running.clear();
        let l = t.launch_due(3 * SEC + 700_000, &UTC, &mut running, 5, &mut fx).unwrap();
        assert!(fx.started.contains(&(1, SEC)));
        assert!(l.advanced.contains(&(1, Some(4 * SEC), 1)));
    }

    #[test]
    fn parallel_n_runs_up_to_n_then_skips() {
        let par = Policy { overlap: Overlap::Parallel(2), ..Policy::default() };
        let mut t = table_with(&[(1, "1 second", par)], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        t.launch_due(SEC, &UTC, &mut running, 5, &mut fx).unwrap();
        t.launch_due(2 * SEC, &UTC, &mut running, 5, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(1, SEC), (1, 2 * SEC)]);
        assert_eq!(running[&1].len(), 2);
        t.launch_due(3 * SEC, &UTC, &mut running, 5, &mut fx).unwrap();
        assert_eq!(fx.skipped, vec![(1, 3 * SEC, 0)]);
        // max_running_jobs still counts every run of the database
        let mut t = table_with(&[(1, "1 second", par), (2, "1 second", Policy::default())], 0);
        let mut running = runs(&[(1, 7)]);
        let mut fx = Fake::default();
        let l = t.launch_due(SEC, &UTC, &mut running, 2, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(1, SEC)]);
        assert_eq!(l.waiting_for_slot, 1);
        assert_eq!(t.next(), Some((SEC, 2)));
    }

    #[test]
    fn priorities_order_the_fires_that_wait_for_a_slot() {
        let p = |priority| Policy { priority, ..Policy::default() };
        // four jobs due at once, one slot (max_running_jobs = 1)
        let mut t = table_with(
            &[(1, "1 second", p(0)), (2, "1 second", p(10)), (3, "1 second", p(5)), (4, "1 second", p(10))],
            0,
        );
        let mut fx = Fake::default();
        let mut order = Vec::new();
        let mut now = SEC;
        for _ in 0..4 {
            let mut running = runs(&[]);
            t.launch_due(now, &UTC, &mut running, 1, &mut fx).unwrap();
            order.push(fx.started.last().unwrap().0);
            now += 100_000; // each run takes 0.1 s
        }
        // highest first; equal priorities by due time, then job id
        assert_eq!(order, vec![2, 4, 3, 1]);
        // an older due fire of a lower priority still waits behind a higher one
        let mut t = table_with(&[(1, "1 second", p(0)), (2, "2 seconds", p(1))], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[(9, 99)]);
        t.launch_due(SEC, &UTC, &mut running, 1, &mut fx).unwrap(); // job 1 waits from 1 s
        let l = t.launch_due(2 * SEC, &UTC, &mut runs(&[(9, 99)]), 1, &mut fx).unwrap();
        assert_eq!(l.waiting_for_slot, 2);
        t.launch_due(2 * SEC + 1, &UTC, &mut runs(&[]), 1, &mut fx).unwrap();
        assert_eq!(fx.started, vec![(2, 2 * SEC)]);
    }

    #[test]
    fn retries_back_off_and_never_reach_the_next_fire() {
        let retry = Policy { retries: 3, retry_backoff_ms: 1_000, ..Policy::default() };
        let mut t = table_with(&[(1, "* * * * *", retry)], 0);
        let mut fx = Fake::default();
        let mut running = runs(&[]);
        t.launch_due(MIN, &UTC, &mut running, 5, &mut fx).unwrap();
        assert_eq!(fx.attempts, vec![1]);
        // attempt 1 fails at 1:02: attempt 2 between 0.5 s and 1 s later
        let end = MIN + 2 * SEC;
        let (_, at, attempt) = t.failed(1, 1, end, 1.0).unwrap();
        assert_eq!((at, attempt), (Some(end + SEC), 2));
        let (_, at_low, _) = table_with(&[(1, "* * * * *", retry)], 0)
            .tap(|t| t.launch_due(MIN, &UTC, &mut runs(&[]), 5, &mut Fake::default()).map(|_| ()).unwrap())
            .failed(1, 1, end, 0.0)
            .unwrap();
        assert_eq!(at_low, Some(end + SEC / 2));
        // the retry runs as attempt 2; when it fails, attempt 3 waits twice as long
        t.launch_due(end + SEC, &UTC, &mut runs(&[]), 5, &mut fx).unwrap();
        assert_eq!(fx.started.last(), Some(&(1, end + SEC)));
        assert_eq!(fx.attempts, vec![1, 2]);
        let end2 = end + 2 * SEC;
        assert_eq!(t.failed(1, 2, end2, 1.0), Some((1, Some(end2 + 2 * SEC), 3)));
        // after a retry the schedule goes on from its own fires (2:00)
        let l = t.launch_due(end2 + 2 * SEC, &UTC, &mut runs(&[]), 5, &mut fx).unwrap();
        assert_eq!(l.advanced, vec![(1, Some(2 * MIN), 1)]);
        // attempt 4 (the last of 1 + 3 retries) failing plans nothing more
        assert_eq!(t.failed(1, 4, end2 + 3 * SEC, 1.0), None);
        assert_eq!(t.next(), Some((2 * MIN, 1)));
        // a retry that would reach the next fire is not planned: that fire is
        // the next attempt (the delay is capped by the time left, so only a
        // failure right before it gets none)
        let late = Policy { retries: 5, retry_backoff_ms: 50_000, ..Policy::default() };
        let mut t = table_with(&[(1, "* * * * *", late)], 0);
        t.launch_due(MIN, &UTC, &mut runs(&[]), 5, &mut Fake::default()).unwrap();
        let (_, at, _) = t.failed(1, 1, MIN + 30 * SEC, 1.0).unwrap();
        assert_eq!(at, Some(2 * MIN - SEC), "capped a second before the next fire");
        let mut t = table_with(&[(1, "* * * * *", late)], 0);
        t.launch_due(MIN, &UTC, &mut runs(&[]), 5, &mut Fake::default()).unwrap();
        assert_eq!(t.failed(1, 1, 2 * MIN, 1.0), None, "it failed at the next fire");
        // a job without retries
        let mut t = table(&[(1, "* * * * *")], 0);
        t.launch_due(MIN, &UTC, &mut runs(&[]), 5, &mut Fake::default()).unwrap();
        assert_eq!(t.failed(1, 1, MIN + SEC, 0.5), None);
    }

    #[test]
    fn a_planned_retry_survives_a_reload() {
        let retry = Policy { retries: 2, retry_backoff_ms: 1_000, ..Policy::default() };
        let mut t = table_with(&[(1, "* * * * *", retry)], 0);
        t.launch_due(MIN, &UTC, &mut runs(&[]), 5, &mut Fake::default()).unwrap();
        let (_, at, attempt) = t.failed(1, 1, MIN + SEC, 1.0).unwrap();
        // another job changed: this process keeps the retry
        let nexts = t.load([loaded(1, "* * * * *", Some(0), retry)], false, MIN + SEC + 1, &UTC);
        assert_eq!(nexts, vec![(1, at, attempt)]);
        // a new scheduler (the next visit) reads it from the job table
        let mut fresh = Timetable::default();
        let stored = Loaded { stored_attempt: attempt, ..loaded(1, "* * * * *", at, retry) };
        assert_eq!(fresh.load([stored], false, MIN + 5 * SEC, &UTC), vec![(1, at, 2)]);
        let mut fx = Fake::default();
        fresh.launch_due(MIN + 5 * SEC, &UTC, &mut runs(&[]), 5, &mut fx).unwrap();
        assert_eq!(fx.attempts, vec![2]);
        // an altered schedule starts afresh at attempt 1
        let nexts = t.load([loaded(1, "*/2 * * * *", Some(0), retry)], false, MIN + 2 * SEC, &UTC);
        assert_eq!(nexts, vec![(1, Some(2 * MIN), 1)]);
    }

    #[test]
    fn each_job_reads_its_schedule_in_its_own_time_zone() {
        let plus2: Rc<dyn Zone> = Rc::new(FixedOffset(2 * 3600));
        let daily9 = |jobid, zone: Option<Rc<dyn Zone>>| Loaded {
            zone_name: zone.as_ref().map(|_| "UTC+2".to_owned()),
            zone,
            ..loaded(jobid, "0 9 * * *", None, Policy::default())
        };
        let mut t = Timetable::default();
        let nexts = t.load([daily9(1, None), daily9(2, Some(plus2.clone()))], false, 0, &UTC);
        assert_eq!(nexts, vec![(1, Some(9 * 60 * MIN), 1), (2, Some(7 * 60 * MIN), 1)]);
        // after a fire, the next one is in the job's zone too
        let mut fx = Fake::default();
        let l = t.launch_due(7 * 60 * MIN, &UTC, &mut runs(&[]), 5, &mut fx).unwrap();
        assert_eq!(l.advanced, vec![(2, Some((24 + 7) * 60 * MIN), 1)]);
        // a changed zone is an altered job: its fire is computed afresh
        let nexts = t.load([daily9(1, None), daily9(2, None)], false, 8 * 60 * MIN, &UTC);
        assert_eq!(nexts[1], (2, Some(9 * 60 * MIN), 1));
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
