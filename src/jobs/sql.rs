//! The scheduler's SQL-callable edge: schedule validation and next-fire
//! times, the job-table invalidation trigger, the launcher wake-up, settings.
//! Declared by hand in sql/scheduler.sql (except the trigger function).

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;
use pgrx::{PgTrigger, PgTriggerError};

use super::cron::{self, Schedule};
use crate::civil::pg_zone::PgZone;
use crate::civil::USECS_PER_DAY;
use crate::error::{Error, OrRaise};
use crate::settings;
use crate::worker::shared;

fn parse_or_raise(schedule: &str) -> Schedule {
    match cron::parse(schedule) {
        Ok(s) => s,
        Err(e) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                e.to_string(),
                "Use 5 cron fields (minute hour day-of-month month day-of-week), a macro such as @daily, or 'N seconds' or 'N minutes' with N from 1 to 59."
            );
        }
    }
}

fn zone_or_raise(timezone: Option<&str>) -> PgZone {
    match timezone {
        Some(name) => std::ffi::CString::new(name)
            .ok()
            .and_then(|c| PgZone::named(&c))
            .ok_or_else(|| Error::invalid(format!("time zone \"{name}\" is not known"))),
        None => PgZone::from_setting(),
    }
    .map_err(|e| e.with_detail("Use a name from pg_timezone_names."))
    .or_raise()
}

/// A finite timestamp from which a schedule's search (up to nine years
/// ahead) stays inside the range.
fn in_range_or_raise(t: i64) -> i64 {
    let last = crate::timeseries::bucket::END_TIMESTAMP - 10 * 366 * USECS_PER_DAY;
    if t > last || t < crate::timeseries::bucket::MIN_TIMESTAMP {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
            "timestamp out of range",
            "A schedule's next run is computed after a finite timestamp."
        );
    }
    t
}

fn timestamp_or_raise(next: i64) -> Option<TimestampWithTimeZone> {
    match TimestampWithTimeZone::try_from(next) {
        Ok(t) => Some(t),
        Err(_) => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                "timestamp out of range",
                "The next run of that schedule is past the largest timestamp."
            );
        }
    }
}

#[pg_schema]
mod automation {
    use super::*;

    /// `automation.next_run(schedule text, after timestamptz DEFAULT now(),
    /// timezone text DEFAULT NULL) → timestamptz`: when a schedule fires next
    /// after `after`, reading it in `timezone` (automation.timezone when
    /// NULL); NULL for @reboot; `'N seconds'`: `after` + N. Raises 22023
    /// naming the bad field for an invalid schedule.
    #[pg_extern(sql = false)]
    fn next_run(
        schedule: Option<&str>,
        after: Option<TimestampWithTimeZone>,
        timezone: Option<&str>,
    ) -> Option<TimestampWithTimeZone> {
        let parsed = parse_or_raise(schedule?);
        let zone = zone_or_raise(timezone);
        let after = in_range_or_raise(after?.into());
        timestamp_or_raise(parsed.next_after(after, &zone)?)
    }

    /// `automation.next_fire(schedule text, due timestamptz, now timestamptz
    /// DEFAULT now(), timezone text DEFAULT NULL) → timestamptz` (0.11.0):
    /// the next fire of a job whose fire was due at `due`, seen at `now`, as
    /// the scheduler computes it (`plan::next_fire`): on the schedule — an
    /// `'N seconds'` job on its own grid, `due` + a multiple of N — with the
    /// fires missed by `now` coalesced into the next one after it. NULL for
    /// @reboot. The job table's trigger keeps a job's grid with it, and a
    /// schedule trigger's `next_fire_at` follows its job's.
    #[pg_extern(sql = false)]
    fn next_fire(
        schedule: Option<&str>,
        due: Option<TimestampWithTimeZone>,
        now: Option<TimestampWithTimeZone>,
        timezone: Option<&str>,
    ) -> Option<TimestampWithTimeZone> {
        let parsed = parse_or_raise(schedule?);
        let zone = zone_or_raise(timezone);
        let due = in_range_or_raise(due?.into());
        let now = in_range_or_raise(now?.into());
        timestamp_or_raise(crate::jobs::plan::next_fire(&parsed, due, now, &zone)?)
    }

    /// Trigger on automation.job: have this database's scheduler reload its
    /// jobs when the change commits (a relcache invalidation it listens for).
    #[pg_trigger]
    fn job_cache_invalidate<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
        // SAFETY: tg_relation is the trigger's open relation; the look-ups
        // read the syscache; the invalidation message is sent at commit.
        unsafe {
            let relid = (*trigger.trigger_data().tg_relation).rd_id;
            let nsp = pg_sys::get_namespace_oid(c"automation".as_ptr(), true);
            if nsp == pg_sys::InvalidOid || relid != pg_sys::get_relname_relid(c"job".as_ptr(), nsp) {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                    "automation.job_cache_invalidate() only runs as a trigger of automation.job"
                );
            }
            pg_sys::CacheInvalidateRelcacheByRelid(relid);
        }
        // a database whose scheduler is not running now learns of the change
        // through the launcher, once the change commits
        pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, || {
            // SAFETY: reading this backend's database oid.
            shared::jobs_changed(unsafe { pg_sys::MyDatabaseId });
        });
        Ok(None)
    }

    /// `automation.wake_scheduler() → boolean`: ask the launcher to (re)start
    /// the scheduler of this database now. False, with a NOTICE, when the
    /// library is not preloaded (then nothing schedules jobs).
    #[pg_extern(sql = false)]
    fn wake_scheduler() -> bool {
        // SAFETY: reading this backend's database oid.
        let woke = shared::wake(unsafe { pg_sys::MyDatabaseId });
        if !woke {
            notice!("automation_ext is not in shared_preload_libraries: jobs are recorded but nothing runs them until it is (and the server restarted)");
        }
        woke
    }

    /// `automation.scheduler_state()`: what the launcher and the schedulers
    /// share, one row per database they know: whether it has the extension,
    /// its scheduler (pid, or none), when it needs one next, since when it
    /// has waited for one, and its runs waiting for a worker and running;
    /// with the cluster-wide budgets in force. No rows when the library is
    /// not preloaded.
    #[pg_extern(sql = false)]
    fn scheduler_state() -> TableIterator<
        'static,
        (
            name!(database_oid, pg_sys::Oid),
            name!(extension, String),
            name!(scheduler_pid, Option<i32>),
            name!(next_due, Option<TimestampWithTimeZone>),
            name!(waiting_since, Option<TimestampWithTimeZone>),
            name!(runs_waiting, i32),
            name!(runs_running, i32),
            name!(fires_waiting, i32),
            name!(max_workers, i32),
            name!(scheduler_workers, i32),
        ),
    > {
        if !crate::settings::preloaded() {
            return TableIterator::new(Vec::new());
        }
        let shared = shared::SHARED.share();
        let ts = |t: i64| (t != 0).then(|| TimestampWithTimeZone::try_from(t).ok()).flatten();
        let rows: Vec<_> = shared
            .dbs
            .iter()
            .filter(|d| d.dboid != 0)
            .map(|d| {
                let runs = |state: shared::RunState| {
                    shared.runs.iter().filter(|r| r.dboid == d.dboid && r.state == state).count() as i32
                };
                (
                    pg_sys::Oid::from(d.dboid),
                    match d.extension {
                        shared::Extension::Installed => "installed",
                        shared::Extension::Missing => "missing",
                        shared::Extension::Unknown => "unknown",
                    }
                    .to_string(),
                    (d.scheduler_pid > 0).then_some(d.scheduler_pid),
                    ts(d.next_due),
                    ts(d.waiting_since),
                    runs(shared::RunState::Requested),
                    runs(shared::RunState::Started),
                    d.fires_waiting as i32,
                    shared.max_workers as i32,
                    shared.scheduler_workers as i32,
                )
            })
            .collect();
        TableIterator::new(rows)
    }

    /// `automation.job_run_retention() → interval`: the setting, as an interval.
    #[pg_extern(sql = false)]
    fn job_run_retention() -> Interval {
        Interval::new(0, 0, settings::JOB_RUN_RETENTION_S.get() as i64 * 1_000_000).expect("in range")
    }
}
