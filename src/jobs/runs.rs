//! What the jobs duty writes: a job's runs in automation.job_run_details
//! (started, running, ended, skipped, forgotten beyond the job's history
//! settings), its run state and next fire in automation.job, its counters
//! in automation.job_run_stats. One function per statement; the decisions
//! are schedule.rs's and plan.rs's.

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use super::plan::{self, RunStatus};
use crate::error::{Context, Error, Result};
use crate::settings::{self, LogRuns};

/// What a run needs to know of its job (its schedule and next fire are in
/// the timetable).
pub(super) struct Job {
    pub(super) name: Option<String>,
    pub(super) command: String,
    /// the current name of the job's database (this one's for a local job)
    pub(super) database: String,
    /// the job belongs to this database, whatever its name
    pub(super) local: bool,
    pub(super) username: String,
    /// the role itself; `username` is its name when the jobs were loaded
    pub(super) owner: pg_sys::Oid,
    pub(super) timeout_ms: i32,
    /// which of its ended runs job_run_details keeps (None: automation.log_runs)
    pub(super) log_runs: Option<LogRuns>,
    /// at most this many of its runs are kept
    pub(super) keep_runs: Option<i32>,
    /// its runs' place among runs waiting for a worker
    pub(super) priority: i32,
}

impl Job {
    pub(super) fn log_runs(&self) -> LogRuns {
        self.log_runs.unwrap_or_else(|| settings::LOG_RUNS.get())
    }
}

/// The scheduler's times come from the clock and from schedules' next fires
/// (at most nine years after it): always within PostgreSQL's range.
pub(super) fn tstz(ts: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(ts).expect("scheduler times are within PostgreSQL's timestamp range")
}

pub(super) fn insert_run(
    jobid: i64,
    job: &Job,
    status: RunStatus,
    message: Option<&str>,
    due: i64,
    times: Option<(i64, i64)>,
    attempt: u32,
) -> Result<i64> {
    Spi::get_one_with_args::<i64>(
        "INSERT INTO automation.job_run_details
                (jobid, database, username, command, status, return_message, start_time, end_time, scheduled_for,
                 attempt)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING runid",
        &[
            jobid.into(),
            job.database.as_str().into(),
            job.username.as_str().into(),
            job.command.as_str().into(),
            status.as_str().into(),
            message.into(),
            times.map(|t| tstz(t.0)).into(),
            times.map(|t| tstz(t.1)).into(),
            tstz(due).into(),
            i32::try_from(attempt).unwrap_or(i32::MAX).into(),
        ],
    )
    .with_context(|| format!("could not record a run of job {jobid}"))?
    .ok_or_else(|| Error::internal(format!("could not record a run of job {jobid}"), "no runid was returned"))
}

/// Take a job out of the schedule, saying why (the change reloads the jobs).
pub(super) fn deactivate(jobid: i64, reason: &str) -> Result<()> {
    Spi::run_with_args(
        "UPDATE automation.job SET active = false, inactive_reason = $2 WHERE jobid = $1",
        &[jobid.into(), reason.into()],
    )
    .with_context(|| format!("could not deactivate job {jobid}"))?;
    warning!("automation_ext job {jobid}: {reason}");
    Ok(())
}

/// Bring the shown names up to date: a renamed role's jobs keep running as
/// that role and show its new name; this database's jobs show this
/// database's current name (after a rename, a restore under another name or
/// a clone). Rows a user holds locked are left for the next time.
///
/// (0.11.0) Such a job also forgets its next run: in a clone it is the
/// template's, and the clones of one template would all keep its grid —
/// every `'N seconds'`/`'N minutes'` job (the default jobs too) firing in the
/// same instant in each of them. Without a stored next run the scheduler
/// starts the job afresh (`plan::first_fire`): a clone's grids start when it
/// is first visited, and a clone does not run its template's missed fires.
pub(super) fn refresh_names() -> Result<()> {
    Spi::run(
        "UPDATE automation.job j SET username = r.rolname
           FROM pg_catalog.pg_roles r
          WHERE r.oid = j.owner
            AND j.jobid IN (SELECT k.jobid FROM automation.job k JOIN pg_catalog.pg_roles kr ON kr.oid = k.owner
                             WHERE k.username OPERATOR(pg_catalog.<>) kr.rolname FOR UPDATE OF k SKIP LOCKED)",
    )
    .and_then(|_| {
        Spi::run(
            "UPDATE automation.job j SET database = pg_catalog.current_database(), next_run_at = NULL, next_attempt = 1
              WHERE j.jobid IN (SELECT k.jobid FROM automation.job k
                                 WHERE k.local AND k.database OPERATOR(pg_catalog.<>) pg_catalog.current_database()
                                   FOR UPDATE SKIP LOCKED)",
        )
    })
    .context("could not refresh job names")
}

pub(super) fn mark_running(runid: i64, pid: i32, start: i64) -> Result<()> {
    Spi::run_with_args(
        "UPDATE automation.job_run_details SET status = $4, job_pid = $2, start_time = $3
          WHERE runid = $1 AND status = ANY ($5)",
        &[
            runid.into(),
            pid.into(),
            tstz(start).into(),
            RunStatus::Running.as_str().into(),
            RunStatus::Running.predecessors().into(),
        ],
    )
    .with_context(|| format!("could not record run {runid}"))
}

/// Record a run's end; returns its attempt (None when its row is gone: a
/// user deleted it).
pub(super) fn finish_run(
    runid: i64,
    status: RunStatus,
    message: &str,
    pid: Option<i32>,
    start: i64,
    end: i64,
) -> Result<Option<i32>> {
    Spi::get_one_with_args::<i32>(
        "UPDATE automation.job_run_details
            SET status = $2, return_message = $3, job_pid = COALESCE($4, job_pid),
                start_time = $5, end_time = $6
          WHERE runid = $1 AND status = ANY ($7)
         RETURNING attempt",
        &[
            runid.into(),
            status.as_str().into(),
            message.into(),
            pid.into(),
            tstz(start).into(),
            tstz(end).into(),
            status.predecessors().into(),
        ],
    )
    .with_context(|| format!("could not record run {runid}"))
}

/// Record a run that succeeded (`times`: start, end and lateness in µs):
/// its row (deleted unless `keep`), its job's last run, the counters.
pub(super) fn record_succeeded(
    runid: i64,
    jobid: i64,
    message: &str,
    pid: Option<i32>,
    times: (i64, i64, i64),
    keep: bool,
) -> Result<()> {
    let (start, end, lateness) = times;
    Spi::run_with_args(
        "SELECT automation.job_run_succeeded($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            runid.into(),
            jobid.into(),
            message.into(),
            pid.into(),
            tstz(start).into(),
            tstz(end).into(),
            (lateness as f64 / 1e6).into(),
            keep.into(),
            RunStatus::Succeeded.predecessors().into(),
        ],
    )
    .with_context(|| format!("could not record run {runid}"))
}

/// Run-state columns of automation.job. SKIP LOCKED: a user holding the row
/// (an open ALTER) must never stall the scheduler; the columns are
/// informational and are written again at the next run. A failed attempt
/// that will be retried (`fire_over` false) does not count as a failure:
/// consecutive_failures counts fires.
pub(super) fn note_outcome(jobid: i64, start: i64, status: RunStatus, fire_over: bool) -> Result<()> {
    let ok = status == RunStatus::Succeeded;
    Spi::run_with_args(
        "UPDATE automation.job j
            SET last_run_at = $2, last_status = $4,
                consecutive_failures = CASE WHEN $3 THEN 0
                                            WHEN $5 THEN j.consecutive_failures + 1
                                            ELSE j.consecutive_failures END
          WHERE j.jobid = (SELECT jobid FROM automation.job WHERE jobid = $1 FOR UPDATE SKIP LOCKED)",
        &[jobid.into(), tstz(start).into(), ok.into(), status.as_str().into(), fire_over.into()],
    )
    .with_context(|| format!("could not update job {jobid}"))
}

/// Count a run in automation.job_run_stats (with its duration and start
/// lateness in µs when it ran).
pub(super) fn count_run(jobid: i64, status: RunStatus, times: Option<(i64, i64)>) -> Result<()> {
    let secs = |us: i64| us as f64 / 1e6;
    Spi::run_with_args(
        "SELECT automation.count_job_run($1, $2, $3, $4)",
        &[jobid.into(), status.as_str().into(), times.map(|t| secs(t.0)).into(), times.map(|t| secs(t.1)).into()],
    )
    .with_context(|| format!("could not count a run of job {jobid}"))
}

/// What job_run_details keeps of a job's ended runs: the run `runid` goes
/// unless its job's log_runs keeps it; beyond keep_runs, the oldest ended
/// runs of the job go.
pub(super) fn keep_history(job: Option<&Job>, jobid: i64, runid: Option<i64>, status: RunStatus) -> Result<()> {
    let mode = job.map_or_else(|| settings::LOG_RUNS.get(), Job::log_runs);
    if let Some(runid) = runid.filter(|_| !mode.keeps(status == RunStatus::Failed)) {
        Spi::run_with_args("DELETE FROM automation.job_run_details WHERE runid = $1", &[runid.into()])
            .with_context(|| format!("could not forget run {runid}"))?;
    }
    if let Some(keep) = job.and_then(|j| j.keep_runs) {
        let ended: Vec<&str> = RunStatus::ALL.into_iter().filter(|s| s.is_final()).map(RunStatus::as_str).collect();
        Spi::run_with_args(
            "DELETE FROM automation.job_run_details
              WHERE runid IN (SELECT d.runid FROM automation.job_run_details d
                               WHERE d.jobid = $1 AND d.status = ANY ($3)
                               ORDER BY d.runid DESC OFFSET $2)",
            &[jobid.into(), i64::from(keep).into(), ended.into()],
        )
        .with_context(|| format!("could not cap the history of job {jobid}"))?;
    }
    Ok(())
}

/// Write the jobs' next fires to automation.job (rows a user holds locked
/// are left: the next write catches up).
pub(super) fn write_next_runs(nexts: &[plan::Next]) -> Result<()> {
    if nexts.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = nexts.iter().map(|(id, _, _)| *id).collect();
    let times: Vec<Option<TimestampWithTimeZone>> = nexts.iter().map(|(_, n, _)| n.map(tstz)).collect();
    let attempts: Vec<i32> = nexts.iter().map(|(_, _, a)| i32::try_from(*a).unwrap_or(1)).collect();
    Spi::run_with_args(
        "UPDATE automation.job j SET next_run_at = u.next, next_attempt = u.attempt
           FROM ROWS FROM (pg_catalog.unnest($1::int8[]), pg_catalog.unnest($2::timestamptz[]),
                           pg_catalog.unnest($3::int4[])) AS u(jobid, next, attempt)
          WHERE j.jobid = u.jobid
            AND (j.next_run_at IS DISTINCT FROM u.next OR j.next_attempt IS DISTINCT FROM u.attempt)
            AND j.jobid IN (SELECT jobid FROM automation.job WHERE jobid = ANY ($1) FOR UPDATE SKIP LOCKED)",
        &[ids.into(), times.into(), attempts.into()],
    )
    .context("could not update next run times")
}
