//! Every GUC of the extension, under the `automation.` prefix, in one place.
//! `register()` is called from `_PG_init`; it is safe whether the library is
//! preloaded or loaded on first use (a value SET before the library loaded is
//! kept: PostgreSQL turns the placeholder into the real setting). It also
//! notes whether the library is being preloaded (`preloaded()`).

use std::ffi::{c_char, c_void, CStr, CString};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{pg_guard, pg_sys, PostgresGucEnum};

/// A NOTIFY channel name: what `automation.notify_channel` and a trigger's
/// own channel must be. Pure Rust; the settings own the rule, the
/// notification trigger follows it.
pub mod channel {
    use std::fmt;

    /// A channel is an identifier: at most NAMEDATALEN - 1 bytes.
    pub const MAX_CHANNEL_BYTES: usize = 63;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum ChannelError {
        Empty,
        TooLong { bytes: usize },
    }

    impl fmt::Display for ChannelError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                ChannelError::Empty => f.write_str("A NOTIFY channel cannot be empty."),
                ChannelError::TooLong { bytes } => {
                    write!(f, "A NOTIFY channel is at most {MAX_CHANNEL_BYTES} bytes; this one has {bytes}.")
                }
            }
        }
    }

    /// A channel NOTIFY accepts: non-empty, shorter than NAMEDATALEN.
    pub fn validate_channel(channel: &str) -> Result<(), ChannelError> {
        if channel.is_empty() {
            Err(ChannelError::Empty)
        } else if channel.len() > MAX_CHANNEL_BYTES {
            Err(ChannelError::TooLong { bytes: channel.len() })
        } else {
            Ok(())
        }
    }

    #[cfg(test)]
    mod unit {
        use super::*;

        #[test]
        fn channels_are_checked_in_bytes() {
            assert!(validate_channel("workflow_completed").is_ok());
            assert_eq!(validate_channel(""), Err(ChannelError::Empty));
            assert!(validate_channel(&"c".repeat(63)).is_ok());
            assert_eq!(validate_channel(&"c".repeat(64)), Err(ChannelError::TooLong { bytes: 64 }));
            assert!(validate_channel(&"é".repeat(32)).is_err()); // 64 bytes, 32 chars
            assert_eq!(
                ChannelError::TooLong { bytes: 64 }.to_string(),
                "A NOTIFY channel is at most 63 bytes; this one has 64."
            );
        }
    }
}

use channel::validate_channel;

/// Default LISTEN channel of the completion trigger (the seed's).
pub const DEFAULT_NOTIFY_CHANNEL: &CStr = c"workflow_completed";

/// `automation.notify_channel`: the channel the completion trigger notifies
/// when the trigger itself names none (see `attach_completion_notify`).
pub static NOTIFY_CHANNEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEFAULT_NOTIFY_CHANNEL));

/// What the completion trigger does when the NOTIFY queue is (nearly) full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PostgresGucEnum)]
pub enum QueueFullAction {
    /// Keep the row change; skip the notification with a WARNING.
    #[name = c"skip"]
    Skip,
    /// Fail the statement with SQLSTATE 54000 and a hint naming the cause.
    #[name = c"error"]
    Error,
}

/// `automation.notify_queue_full`.
pub static NOTIFY_QUEUE_FULL: GucSetting<QueueFullAction> = GucSetting::<QueueFullAction>::new(QueueFullAction::Skip);

/// `automation.retry_base_delay`: backoff before the first retry (ms).
pub static RETRY_BASE_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);
/// `automation.retry_max_delay`: the longest backoff between retries (ms).
pub static RETRY_MAX_DELAY_MS: GucSetting<i32> = GucSetting::<i32>::new(3_600_000);

/// Monitoring thresholds (read by automation.monitoring_settings()).
pub static LONG_QUERY_THRESHOLD_MS: GucSetting<i32> = GucSetting::<i32>::new(300_000);
pub static MONITORING_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
pub static HEALTH_MAX_CONNECTIONS: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static HEALTH_MIN_CACHE_HIT_RATIO: GucSetting<f64> = GucSetting::<f64>::new(90.0);
pub static HEALTH_MIN_INDEX_HIT_RATIO: GucSetting<f64> = GucSetting::<f64>::new(95.0);
pub static HEALTH_MAX_XID_AGE: GucSetting<i32> = GucSetting::<i32>::new(1_000_000_000);

/// Scheduler (src/scheduler/): on/off, concurrency, time zone, history.
pub static SCHEDULER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static MAX_RUNNING_JOBS: GucSetting<i32> = GucSetting::<i32>::new(5);
/// Upper bound of automation.max_running_jobs per database.
pub const MAX_RUNNING_JOBS_LIMIT: i32 = 256;
/// Cluster-wide: job runs at once (their workers), and schedulers at once
/// (0.3.0: worker slots scale with work, not with databases).
pub static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static SCHEDULER_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
pub const DEFAULT_TIMEZONE: &CStr = c"GMT";
pub static SCHEDULER_TIMEZONE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(DEFAULT_TIMEZONE));
/// (0.7.0) SQL steps: workers per database and role, and the step a step
/// worker runs (what automation.step_input() reads).
pub static STEP_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static STEP_RUN: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
/// (0.8.0) when the fire a job run serves was due: set by the job worker
pub static SCHEDULED_FOR: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);
pub static JOB_RUN_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(7 * 86_400);

/// `automation.log_runs`: which runs of a job `automation.job_run_details`
/// keeps once they end (a job's `log_runs` overrides it). A run's row exists
/// while it runs whatever this says: it is how a crash mid-run is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PostgresGucEnum)]
pub enum LogRuns {
    #[name = c"all"]
    All,
    #[name = c"failures"]
    Failures,
    #[name = c"none"]
    None,
}

impl LogRuns {
    pub fn parse(text: &str) -> Option<LogRuns> {
        match text {
            "all" => Some(LogRuns::All),
            "failures" => Some(LogRuns::Failures),
            "none" => Some(LogRuns::None),
            _ => None,
        }
    }

    /// Does a run that ended with this status (`failed`: it failed) stay?
    pub fn keeps(self, failed: bool) -> bool {
        match self {
            LogRuns::All => true,
            LogRuns::Failures => failed,
            LogRuns::None => false,
        }
    }
}

pub static LOG_RUNS: GucSetting<LogRuns> = GucSetting::<LogRuns>::new(LogRuns::All);
pub static EXECUTION_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(30 * 86_400);
pub static ERROR_RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(90 * 86_400);

/// pipeline_metrics partitions (src/timeseries.rs, sql/timeseries.sql).
pub static METRICS_PARTITION_INTERVAL: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"1 day"));
pub static METRICS_RETENTION: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"90 days"));
pub static METRICS_PARTITIONS_AHEAD: GucSetting<i32> = GucSetting::<i32>::new(3);

/// Set in the postmaster by `_PG_init` while preloading and inherited by
/// every process it forks; false when the library was loaded lazily (no
/// shared memory, no workers).
static PRELOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Was the library loaded by shared_preload_libraries (shared memory, the
/// launcher and the workers exist)?
pub fn preloaded() -> bool {
    PRELOADED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Run `f` with PostgreSQL settings `(name, value)` set, as a function's
/// SET clause sets them, and restored afterwards; an ERROR's
/// (sub)transaction abort restores them.
pub fn with_settings<R>(settings: &[(&CStr, &CStr)], f: impl FnOnce() -> R) -> R {
    // SAFETY: what fmgr_security_definer does for a function's SET clause: a
    // new GUC nest level, each setting saved into it (NUL-terminated names
    // and values of settings any user may set), and AtEOXact_GUC restoring
    // everything above the level on the way out.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        let result = f();
        pg_sys::AtEOXact_GUC(true, level);
        result
    }
}

pub fn register() {
    // SAFETY: reading a postmaster-set global flag.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        PRELOADED.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let int = |name, short, setting, min, max, flags| {
        GucRegistry::define_int_guc(name, short, c"", setting, min, max, GucContext::Userset, flags)
    };
    int(
        c"automation.long_query_threshold",
        c"A query active for longer than this counts as long-running.",
        &LONG_QUERY_THRESHOLD_MS,
        0,
        i32::MAX,
        GucFlags::UNIT_MS,
    );
    int(
        c"automation.monitoring_retention",
        c"collect_database_metrics() deletes samples older than this (0: keep all).",
        &MONITORING_RETENTION_S,
        0,
        i32::MAX,
        GucFlags::UNIT_S,
    );
    int(
        c"automation.health_max_connections",
        c"health_check() warns above this many active sessions.",
        &HEALTH_MAX_CONNECTIONS,
        0,
        i32::MAX,
        GucFlags::default(),
    );
    int(
        c"automation.health_max_xid_age",
        c"health_check() warns when the oldest datfrozenxid is older than this.",
        &HEALTH_MAX_XID_AGE,
        0,
        i32::MAX,
        GucFlags::default(),
    );
    for (name, short, setting) in [
        (
            c"automation.health_min_cache_hit_ratio",
            c"health_check() warns below this cache hit percentage.",
            &HEALTH_MIN_CACHE_HIT_RATIO,
        ),
        (
            c"automation.health_min_index_hit_ratio",
            c"health_check() warns below this index hit percentage.",
            &HEALTH_MIN_INDEX_HIT_RATIO,
        ),
    ] {
        GucRegistry::define_float_guc(name, short, c"", setting, 0.0, 100.0, GucContext::Userset, GucFlags::default());
    }
    GucRegistry::define_int_guc(
        c"automation.retry_base_delay",
        c"Backoff before the first retry of a failed workflow execution.",
        c"Each further retry waits twice as long (up to automation.retry_max_delay), with random jitter over the upper half.",
        &RETRY_BASE_DELAY_MS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"automation.retry_max_delay",
        c"The longest backoff between retries of a failed workflow execution.",
        c"",
        &RETRY_MAX_DELAY_MS,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    // SAFETY: the check hook is a #[pg_guard] function with the signature
    // PostgreSQL expects for string GUCs; it only reads `newval`.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"automation.notify_channel",
            c"LISTEN channel of automation.notify_workflow_completion().",
            c"Used when the trigger is created without a channel argument. A channel is an identifier: 1 to 63 bytes.",
            &NOTIFY_CHANNEL,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_notify_channel),
            None,
            None,
        );
    }
    GucRegistry::define_bool_guc(
        c"automation.enabled",
        c"Whether the built-in scheduler runs jobs.",
        c"Off: the schedulers stop and start no runs until it is turned on again (reload).",
        &SCHEDULER_ENABLED,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"automation.max_running_jobs",
        c"How many job runs a database's scheduler keeps going at once.",
        c"Each run is a background worker: max_worker_processes must leave room for them.",
        &MAX_RUNNING_JOBS,
        1,
        MAX_RUNNING_JOBS_LIMIT,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"automation.max_workers",
        c"How many job runs the extension keeps going at once in the whole cluster.",
        c"Each run is a background worker; runs beyond this wait their turn, in order of due time. Clamped to what max_worker_processes leaves (logged).",
        &MAX_WORKERS,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"automation.step_workers",
        c"How many background workers run the SQL steps of workflows per database and role at once.",
        c"They come when steps are ready and leave when none has been for a moment; they count against automation.max_workers.",
        &STEP_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"automation.step_run",
        c"The workflow step run a step worker is running (set by the step worker; read by automation.step_input()).",
        c"",
        &STEP_RUN,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_string_guc(
        c"automation.scheduled_for",
        c"When the fire a job run serves was due (set by the job worker; a schedule trigger's fire passes it on).",
        c"Empty outside a job run.",
        &SCHEDULED_FOR,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"automation.scheduler_workers",
        c"How many per-database schedulers may run at once in the whole cluster.",
        c"A scheduler runs in a database only while jobs there are due; databases beyond this wait their turn.",
        &SCHEDULER_WORKERS,
        1,
        64,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"automation.timezone",
        c"Time zone in which job schedules are read (pg_cron's cron.timezone).",
        c"Any name PostgreSQL knows, e.g. GMT (the default), UTC, Europe/Berlin.",
        &SCHEDULER_TIMEZONE,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"automation.job_run_retention",
        c"automation.purge_job_run_details() deletes job runs that ended longer ago than this.",
        c"0 keeps every run (as for every retention setting).",
        &JOB_RUN_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"automation.execution_retention",
        c"automation.purge_executions() deletes finished workflow executions that ended longer ago than this.",
        c"Default 30 days; 0 keeps every execution. Executions an open error refers to are kept until automation.error_retention.",
        &EXECUTION_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"automation.error_retention",
        c"automation.purge_executions() deletes errors resolved, dead-lettered or raised longer ago than this, with their executions.",
        c"Default 90 days; 0 keeps every error. Nothing is kept for ever: an open error goes this long after it was raised.",
        &ERROR_RETENTION_S,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_string_guc(
        c"automation.metrics_partition_interval",
        c"Width of the partitions automation.maintain_metrics_partitions() creates for pipeline_metrics.",
        c"An interval: '1 day' (default), '1 hour', '7 days', '1 month'. Existing partitions keep their width.",
        &METRICS_PARTITION_INTERVAL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"automation.metrics_retention",
        c"pipeline_metrics partitions (and default-partition rows) older than this are dropped.",
        c"An interval, default '90 days'; 0 keeps everything; a negative interval is refused when used.",
        &METRICS_RETENTION,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"automation.metrics_partitions_ahead",
        c"How many future pipeline_metrics partitions to keep created.",
        c"",
        &METRICS_PARTITIONS_AHEAD,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"automation.log_runs",
        c"Which ended job runs automation.job_run_details keeps: all, failures or none.",
        c"A job's log_runs overrides it. Runs are counted in automation.job_run_stats whatever this says.",
        &LOG_RUNS,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"automation.notify_queue_full",
        c"What the completion trigger does when the NOTIFY queue is full: skip or error.",
        c"skip (default) keeps the UPDATE and skips the notification with a WARNING; error fails the UPDATE with SQLSTATE 54000.",
        &NOTIFY_QUEUE_FULL,
        GucContext::Userset,
        GucFlags::default(),
    );
}

/// Check hook: refuse a channel NOTIFY would refuse, when it is set rather
/// than later inside somebody's UPDATE.
///
/// # Safety
/// Called by the GUC machinery with a pointer to the candidate value.
#[pg_guard]
unsafe extern "C-unwind" fn check_notify_channel(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value, which
    // is either NULL or a NUL-terminated string it owns for this call.
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return false;
        }
        CStr::from_ptr(*newval)
    };
    match validate_channel(&value.to_string_lossy()) {
        Ok(()) => true,
        Err(problem) => {
            // SAFETY: GUC_check_errdetail_string is how check hooks pass a
            // detail message (what the GUC_check_errdetail macro does); it
            // must be palloc'd, which pstrdup does.
            unsafe {
                // the messages are ours, without NUL
                let detail = CString::new(problem.to_string()).expect("no NUL in the message");
                pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
            }
            false
        }
    }
}
