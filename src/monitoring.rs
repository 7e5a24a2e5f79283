//! Monitoring. Collection, health checks and the activity/size functions are
//! SQL over the statistics views (sql/monitoring.sql); here are their
//! thresholds (GUCs) and the Prometheus text exposition of the latest sample.

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::error::{Context, OrRaise, Result};
use crate::settings;

/// Rendering the Prometheus text exposition format (version 0.0.4): no
/// PostgreSQL in here.
pub mod exposition {
    use std::fmt::Write;

    #[derive(Clone, Copy)]
    pub enum Kind {
        Gauge,
        Counter,
        /// samples are the `_bucket` (label `le`), `_sum` and `_count`
        /// series, each naming itself in the label `__name__`
        Histogram,
    }

    pub struct Metric {
        pub name: &'static str,
        pub help: &'static str,
        pub kind: Kind,
        /// (labels: names and values; sample value)
        pub samples: Vec<(Vec<(String, String)>, f64)>,
    }

    impl Metric {
        pub fn single(name: &'static str, help: &'static str, kind: Kind, value: Option<f64>) -> Metric {
            Metric { name, help, kind, samples: value.into_iter().map(|v| (Vec::new(), v)).collect() }
        }
    }

    /// A label value with `\`, `"` and newlines escaped, as the format requires.
    pub fn escape_label(value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        for ch in value.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out
    }

    /// Metrics without samples (a NULL in the sample) are left out entirely.
    pub fn render(metrics: &[Metric]) -> String {
        let mut out = String::new();
        for m in metrics.iter().filter(|m| !m.samples.is_empty()) {
            let kind = match m.kind {
                Kind::Gauge => "gauge",
                Kind::Counter => "counter",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {} {}", m.name, m.help);
            let _ = writeln!(out, "# TYPE {} {kind}", m.name);
            for (label, value) in &m.samples {
                // a series of the family other than the family's own name
                let series = label.iter().find(|(k, _)| k == "__name__").map_or(m.name, |(_, v)| v.as_str());
                let pairs: Vec<String> = label
                    .iter()
                    .filter(|(k, _)| k != "__name__")
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                if pairs.is_empty() {
                    let _ = writeln!(out, "{series} {value}");
                } else {
                    let _ = writeln!(out, "{series}{{{}}} {value}", pairs.join(","));
                }
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn renders_help_type_and_samples() {
            let text = render(&[
                Metric::single("automation_active_connections", "Active sessions.", Kind::Gauge, Some(3.0)),
                Metric::single("automation_replication_lag_seconds", "Lag.", Kind::Gauge, None),
                Metric {
                    name: "automation_table_size_bytes",
                    help: "Total size.",
                    kind: Kind::Gauge,
                    samples: vec![(vec![("table".into(), "public.orders".into())], 8192.0)],
                },
                Metric::single("automation_deadlocks_total", "Deadlocks.", Kind::Counter, Some(2.0)),
            ]);
            assert_eq!(
                text,
                "# HELP automation_active_connections Active sessions.\n\
                 # TYPE automation_active_connections gauge\n\
                 automation_active_connections 3\n\
                 # HELP automation_table_size_bytes Total size.\n\
                 # TYPE automation_table_size_bytes gauge\n\
                 automation_table_size_bytes{table=\"public.orders\"} 8192\n\
                 # HELP automation_deadlocks_total Deadlocks.\n\
                 # TYPE automation_deadlocks_total counter\n\
                 automation_deadlocks_total 2\n"
            );
        }

        #[test]
        fn histograms_render_their_series_under_one_family() {
            let series = |name: &str, le: Option<&str>, v: f64| {
                let mut labels = vec![("__name__".to_owned(), name.to_owned())];
                labels.extend(le.map(|le| ("le".to_owned(), le.to_owned())));
                (labels, v)
            };
            let text = render(&[Metric {
                name: "x_seconds",
                help: "X.",
                kind: Kind::Histogram,
                samples: vec![
                    series("x_seconds_bucket", Some("0.5"), 1.0),
                    series("x_seconds_bucket", Some("+Inf"), 3.0),
                    series("x_seconds_sum", None, 4.25),
                    series("x_seconds_count", None, 3.0),
                ],
            }]);
            assert_eq!(
                text,
                "# HELP x_seconds X.\n\
                 # TYPE x_seconds histogram\n\
                 x_seconds_bucket{le=\"0.5\"} 1\n\
                 x_seconds_bucket{le=\"+Inf\"} 3\n\
                 x_seconds_sum 4.25\n\
                 x_seconds_count 3\n"
            );
        }

        #[test]
        fn label_values_are_escaped() {
            assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
            assert_eq!(escape_label("two\nlines"), "two\\nlines");
            assert_eq!(escape_label("\"My Schema\".t; DROP"), "\\\"My Schema\\\".t; DROP");
        }
    }
}

use exposition::{Kind, Metric};

#[pg_schema]
mod automation {
    use super::*;

    /// The monitoring thresholds, from the automation.* settings.
    #[pg_extern(stable, parallel_safe)]
    fn monitoring_settings() -> TableIterator<
        'static,
        (
            name!(long_query_threshold, Interval),
            name!(monitoring_retention, Interval),
            name!(max_connections, i32),
            name!(min_cache_hit_ratio, f64),
            name!(min_index_hit_ratio, f64),
            name!(max_xid_age, i64),
        ),
    > {
        // whole days as days, so that 30 days shows as "30 days", not "720:00:00"
        let micros = |v: i64| {
            let day = 86_400_000_000;
            Interval::new(0, (v / day) as i32, v % day).expect("at most ~68 years is a valid interval")
        };
        TableIterator::once((
            micros(i64::from(settings::LONG_QUERY_THRESHOLD_MS.get()) * 1_000),
            micros(i64::from(settings::MONITORING_RETENTION_S.get()) * 1_000_000),
            settings::HEALTH_MAX_CONNECTIONS.get(),
            settings::HEALTH_MIN_CACHE_HIT_RATIO.get(),
            settings::HEALTH_MIN_INDEX_HIT_RATIO.get(),
            i64::from(settings::HEALTH_MAX_XID_AGE.get()),
        ))
    }

    /// The latest sample in the Prometheus text format, for a node_exporter
    /// textfile collector or a postgres_exporter custom query.
    #[pg_extern(stable, parallel_safe)]
    fn metrics_exposition() -> String {
        super::exposition_of_latest_sample().or_raise()
    }
}

fn exposition_of_latest_sample() -> Result<String> {
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT extract(epoch FROM check_time)::float8, active_connections::float8,
                    cache_hit_ratio::float8, index_hit_ratio::float8, long_running_queries::float8,
                    extract(epoch FROM replication_lag)::float8, xid_wraparound_age::float8,
                    deadlocks_total::float8, temp_bytes_total::float8, idle_in_transaction::float8,
                    table_sizes::text, dead_tuple_ratios::text
               FROM automation.database_monitoring ORDER BY check_time DESC LIMIT 1",
            None,
            &[],
        )?;
        let Some(r) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut nums = [None; 10];
        for (i, slot) in nums.iter_mut().enumerate() {
            *slot = r.get::<f64>(i + 1)?;
        }
        Ok::<_, pgrx::spi::SpiError>(Some((nums, r.get::<String>(11)?, r.get::<String>(12)?)))
    })
    .context("could not read automation.database_monitoring")?;
    let live = exposition::render(&live_metrics()?);
    let Some((n, sizes, dead)) = row else {
        return Ok(format!("# no sample yet: call automation.collect_database_metrics()\n{live}"));
    };
    let labelled = |json: Option<String>, field: &str| -> Vec<(Vec<(String, String)>, f64)> {
        let map: serde_json::Map<String, serde_json::Value> =
            json.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default();
        map.into_iter()
            .filter_map(|(table, v)| {
                v.get(field).and_then(|x| x.as_f64()).map(|x| (vec![("table".to_owned(), table)], x))
            })
            .collect()
    };
    Ok(exposition::render(&[
        Metric::single(
            "automation_sample_timestamp_seconds",
            "When the sample was taken (Unix time).",
            Kind::Gauge,
            n[0],
        ),
        Metric::single("automation_active_connections", "Sessions running a query.", Kind::Gauge, n[1]),
        Metric::single(
            "automation_cache_hit_ratio_percent",
            "Heap blocks of user tables found in shared buffers.",
            Kind::Gauge,
            n[2],
        ),
        Metric::single(
            "automation_index_hit_ratio_percent",
            "Index blocks of user tables found in shared buffers.",
            Kind::Gauge,
            n[3],
        ),
        Metric::single(
            "automation_long_running_queries",
            "Queries active longer than automation.long_query_threshold.",
            Kind::Gauge,
            n[4],
        ),
        Metric::single(
            "automation_replication_lag_seconds",
            "Replay lag (standby) or largest standby lag (primary).",
            Kind::Gauge,
            n[5],
        ),
        Metric::single(
            "automation_xid_wraparound_age",
            "Age of the oldest datfrozenxid in the cluster.",
            Kind::Gauge,
            n[6],
        ),
        Metric::single(
            "automation_deadlocks_total",
            "Deadlocks in this database since statistics were reset.",
            Kind::Counter,
            n[7],
        ),
        Metric::single(
            "automation_temp_bytes_total",
            "Bytes written to temporary files in this database.",
            Kind::Counter,
            n[8],
        ),
        Metric::single(
            "automation_idle_in_transaction_sessions",
            "Sessions idle inside a transaction.",
            Kind::Gauge,
            n[9],
        ),
        Metric {
            name: "automation_table_size_bytes",
            help: "Total size of the largest user tables.",
            kind: Kind::Gauge,
            samples: labelled(sizes, "bytes"),
        },
        Metric {
            name: "automation_dead_tuple_percent",
            help: "Share of dead tuples in the tables with the most.",
            kind: Kind::Gauge,
            samples: labelled(dead, "dead_percent"),
        },
    ]) + &live)
}

/// What `automation.live_metrics()` counts now, as metrics: help and kind
/// per name, here; the rows, from SQL (sql/monitoring.sql).
const LIVE: &[(&str, &str, Kind)] = &[
    ("automation_queue_executions", "Executions in the queue, by workflow and state (pending, running).", Kind::Gauge),
    ("automation_queue_oldest_pending_seconds", "Age of the oldest due pending execution, by workflow.", Kind::Gauge),
    (
        "automation_workflow_executions_active",
        "Executions in workflow_executions that are pending or running, by workflow and status.",
        Kind::Gauge,
    ),
    ("automation_workflow_steps", "Step runs pending or running, by queue and status.", Kind::Gauge),
    (
        "automation_executions_finished_total",
        "Executions that finished, by workflow and status (success, error, timeout, cancelled), since the counters started (execution_stats).",
        Kind::Counter,
    ),
    (
        "automation_workflow_success_ratio",
        "Share of the executions that finished in the last hour that succeeded (of success, error, timeout), by workflow.",
        Kind::Gauge,
    ),
    ("automation_errors_open", "Errors neither resolved nor dead-lettered, by workflow.", Kind::Gauge),
    ("automation_dead_letters", "Errors out of retries (dead-lettered) and not resolved, by workflow.", Kind::Gauge),
    (
        "automation_pipeline_success_ratio",
        "Share of pipeline_metrics rows of the last hour with status success, by pipeline: attempts, so a step retried and then successful counts its failed attempts (see automation_workflow_success_ratio).",
        Kind::Gauge,
    ),
    ("automation_job_runs_total", "Job runs by job and status, as the scheduler counted them (job_run_stats).", Kind::Counter),
    (
        "automation_job_run_duration_seconds",
        "How long job runs took, every job of the database (job_run_stats).",
        Kind::Histogram,
    ),
    (
        "automation_job_start_lateness_seconds",
        "How late job runs started after they were due, every job of the database (job_run_stats).",
        Kind::Histogram,
    ),
    ("automation_job_runs_active", "Job runs starting or running now.", Kind::Gauge),
    ("automation_launcher_running", "1 while the scheduler's launcher runs, 0 when it does not (nothing is scheduled).", Kind::Gauge),
    (
        "automation_jobs_waiting_for_slot",
        "This database's due runs waiting for a slot (automation.max_running_jobs, or a worker of automation.max_workers).",
        Kind::Gauge,
    ),
];

fn live_metrics() -> Result<Vec<Metric>> {
    let rows: Vec<(String, String, f64)> = Spi::connect(|client| {
        let mut out = Vec::new();
        for r in client.select("SELECT metric, labels::text, value FROM automation.live_metrics()", None, &[])? {
            if let (Some(m), Some(l), Some(v)) = (r.get::<String>(1)?, r.get::<String>(2)?, r.get::<f64>(3)?) {
                out.push((m, l, v));
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .context("could not read automation.live_metrics()")?;
    Ok(LIVE
        .iter()
        .map(|&(name, help, kind)| Metric {
            name,
            help,
            kind,
            samples: rows
                .iter()
                .filter(|(m, _, _)| match kind {
                    Kind::Histogram => {
                        m.strip_prefix(name).is_some_and(|suffix| ["_bucket", "_sum", "_count"].contains(&suffix))
                    }
                    _ => m == name,
                })
                .map(|(_, labels, v)| {
                    let map: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(labels).unwrap_or_default();
                    let labels = map
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                        .collect();
                    (labels, *v)
                })
                .collect(),
        })
        .collect())
}

extension_sql_file!(
    "../sql/monitoring.sql",
    name = "monitoring",
    requires = ["automation_schema", automation::monitoring_settings]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::test_support::one;

    fn status_of(check: &str) -> String {
        one(&format!("SELECT status FROM automation.health_check() WHERE check_name = '{check}'"))
    }

    #[pg_test]
    fn settings_have_their_defaults() {
        let row: String =
            one("SELECT format('%s|%s|%s|%s|%s|%s', long_query_threshold, monitoring_retention, max_connections,
                           min_cache_hit_ratio, min_index_hit_ratio, max_xid_age)
               FROM automation.monitoring_settings()");
        assert_eq!(row, "00:05:00|30 days|100|90|95|1000000000");
    }

    #[pg_test]
    fn health_check_has_the_seed_checks_and_more() {
        let names: String =
            one("SELECT string_agg(check_name, ',' ORDER BY check_name) FROM automation.health_check()");
        assert_eq!(
            names,
            "Cache hit ratio,Connection count,Index hit ratio,Invalid indexes,Long-running queries,Transaction ID age"
        );
    }

    #[pg_test]
    fn thresholds_are_settings() {
        assert_eq!(status_of("Connection count"), "OK");
        Spi::run("SET automation.health_max_connections = 0").unwrap();
        assert_eq!(status_of("Connection count"), "WARNING: High connection count");
        Spi::run("SET automation.health_max_xid_age = 0").unwrap();
        assert!(status_of("Transaction ID age").starts_with("WARNING: oldest unfrozen transaction ID is"));
    }

    #[pg_test]
    fn an_invalid_index_is_reported() {
        Spi::run(
            "CREATE TABLE public.t (x int); CREATE INDEX t_x ON public.t (x);
             UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'public.t_x'::regclass",
        )
        .unwrap();
        assert_eq!(status_of("Invalid indexes"), "WARNING: 1 invalid indexes");
    }

    #[pg_test]
    fn retention_deletes_old_samples_only() {
        Spi::run(
            "INSERT INTO automation.database_monitoring (check_time)
             VALUES (now() - interval '40 days'), (now() - interval '31 days'), (now() - interval '10 days')",
        )
        .unwrap();
        Spi::run("SELECT automation.collect_database_metrics()").unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM automation.database_monitoring"), 2);
        Spi::run(
            "SET automation.monitoring_retention = 0;
             INSERT INTO automation.database_monitoring (check_time) VALUES (now() - interval '400 days');
             SELECT automation.collect_database_metrics()",
        )
        .unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM automation.database_monitoring"), 4, "0 keeps all");
    }

    #[pg_test]
    fn counters_grow_between_samples_and_survive_a_reset() {
        assert_eq!(Spi::get_one::<i64>("SELECT automation.counter_delta(5, NULL)").unwrap(), None);
        assert_eq!(one::<i64>("SELECT automation.counter_delta(7, 5)"), 2);
        assert_eq!(one::<i64>("SELECT automation.counter_delta(3, 5)"), 3);
        Spi::run("SELECT automation.collect_database_metrics()").unwrap();
        Spi::run("SELECT automation.collect_database_metrics()").unwrap();
        let deltas: String = one("SELECT format('%s|%s', deadlocks IS NOT NULL, temp_bytes IS NOT NULL)
               FROM automation.database_monitoring ORDER BY check_time DESC LIMIT 1");
        assert_eq!(deltas, "t|t");
    }

    #[pg_test]
    fn table_growth_filters_by_schema_and_handles_odd_names() {
        Spi::run(
            r#"CREATE SCHEMA "My; Schema";
               CREATE TABLE "My; Schema"."big ""one""" AS SELECT g FROM generate_series(1, 5000) g;
               CREATE TABLE "My; Schema".small (x int)"#,
        )
        .unwrap();
        let rows: String = one(
            "SELECT string_agg(tablename || ':' || (total_bytes > 0), ',') FROM automation.table_growth('My; Schema')",
        );
        assert_eq!(rows, r#"big "one":true,small:false"#);
    }

    #[pg_test]
    fn the_monitor_role_can_collect_and_read_without_superuser() {
        Spi::run(
            "CREATE ROLE it_monitor NOLOGIN IN ROLE automation_monitor;
             CREATE ROLE it_nobody NOLOGIN;
             SET ROLE it_monitor",
        )
        .unwrap();
        assert!(!one::<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"));
        Spi::run("SELECT automation.collect_database_metrics()").unwrap();
        assert!(one::<i64>("SELECT count(*) FROM automation.database_monitoring") >= 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM automation.health_check()"), 6);
        assert!(one::<String>("SELECT automation.metrics_exposition()").contains("automation_active_connections "));
        Spi::run("RESET ROLE").unwrap();
        // by oid: it_nobody cannot even look names up in schema automation
        let table: pg_sys::Oid = one("SELECT 'automation.database_monitoring'::regclass::oid");
        Spi::run("SET ROLE it_nobody").unwrap();
        let denied = one::<bool>(&format!("SELECT NOT has_table_privilege({}::oid, 'SELECT')", table.to_u32()));
        Spi::run("RESET ROLE").unwrap();
        assert!(denied, "a role outside automation_monitor can read the samples");
    }

    #[pg_test]
    fn the_exposition_says_when_there_is_no_sample() {
        assert!(one::<String>("SELECT automation.metrics_exposition()").starts_with("# no sample yet"));
    }

    /// The metric names the shipped postgres_exporter query file defines
    /// (`<namespace>_<column>` of its GAUGE and COUNTER columns).
    fn exporter_metric_names(yaml: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut namespace = String::new();
        let mut column = String::new();
        for line in yaml.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if !line.starts_with(' ') {
                namespace = line.trim_end_matches(':').to_owned();
            } else if let Some(c) = line.trim().strip_prefix("- ") {
                column = c.trim_end_matches(':').to_owned();
            } else if let Some(usage) = line.trim().strip_prefix("usage:") {
                if usage.contains("GAUGE") || usage.contains("COUNTER") {
                    names.push(format!("{namespace}_{column}"));
                } else if usage.contains("HISTOGRAM") {
                    for part in ["bucket", "sum", "count"] {
                        names.push(format!("{namespace}_{column}_{part}"));
                    }
                }
            }
        }
        names
    }

    /// The metric names the shipped Grafana dashboard's queries use.
    fn dashboard_metric_names(json: &str) -> Vec<String> {
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        if k == "expr" {
                            let text = v.as_str().unwrap_or_default();
                            let mut rest = text;
                            while let Some(at) = rest.find("automation_") {
                                let tail = &rest[at..];
                                let end =
                                    tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                                out.push(tail[..end].to_owned());
                                rest = &tail[end..];
                            }
                        } else {
                            walk(v, out);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&serde_json::from_str(json).expect("the dashboard is JSON"), &mut out);
        out
    }

    #[pg_test]
    fn every_metric_of_the_exporter_file_and_the_dashboard_is_exposed() {
        // something to count in every part of the exposition
        Spi::run(
            "SELECT automation.collect_database_metrics();
             SELECT automation.enqueue_execution('m-wf', '{}', now() - interval '1 minute');
             SELECT automation.enqueue_execution('m-wf', '{}');
             SELECT count(*) FROM automation.claim_executions('m-wf', 'w', 1);
             SELECT automation.start_execution('m-legacy');
             INSERT INTO automation_workflows.definitions (name, definition)
             VALUES ('m-dag', '{\"steps\": [{\"name\": \"a\", \"queue\": \"m-q\"}]}');
             SELECT automation.run_workflow('m-dag');
             INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
             VALUES (now() - interval '1 minute', 'm-dag', 'a', 'success');
             SELECT automation.count_job_run(jobid, 'failed', 1.5, 0.01) FROM automation.job LIMIT 1;
             SELECT automation.complete_execution(automation.start_execution('m-done'));
             SELECT automation.fail_execution(automation.start_execution('m-failed'), 'Boom', 'it broke');
             INSERT INTO automation.errors (workflow_name, error_type, dead_lettered_at) VALUES ('m-dead', 'Boom', now());",
        )
        .unwrap();
        let text = one::<String>("SELECT automation.metrics_exposition()");
        let exposed: std::collections::BTreeSet<&str> =
            text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
        let exporter = exporter_metric_names(include_str!("../monitoring/postgres_exporter_queries.yaml"));
        let dashboard = dashboard_metric_names(include_str!("../monitoring/grafana_dashboard.json"));
        // (0.8.0) and the alerting rules' (their expr lines)
        let alerts: Vec<String> = include_str!("../monitoring/alerts.yaml")
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.contains("description:") && !l.contains("summary:"))
            .flat_map(|l| {
                let mut out = Vec::new();
                let mut rest = l;
                while let Some(at) = rest.find("automation_") {
                    let tail = &rest[at..];
                    let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                    if tail[..end] != *"automation_ext" {
                        out.push(tail[..end].to_owned());
                    }
                    rest = &tail[end..];
                }
                out
            })
            .collect();
        assert!(
            exporter.len() >= 13 && dashboard.len() >= 11 && alerts.len() >= 6,
            "{exporter:?} {dashboard:?} {alerts:?}"
        );
        for name in exporter.iter().chain(dashboard.iter()).chain(alerts.iter()) {
            assert!(exposed.contains(name.as_str()), "{name} is not in the exposition:\n{text}");
        }
        // and the exporter's queries run as a member of automation_monitor
        // (what the file's header says to use), each with rows: 0.7.0 gave
        // that role nothing of the jobs, and three dashboard panels were blank
        Spi::run("CREATE ROLE m_monitor IN ROLE automation_monitor; SET ROLE m_monitor").unwrap();
        for line in include_str!("../monitoring/postgres_exporter_queries.yaml").split("query: >-").skip(1) {
            let query: String =
                line.lines().skip(1).take_while(|l| l.starts_with("    ")).collect::<Vec<_>>().join(" ");
            let rows = one::<i64>(&format!("SELECT count(*) FROM ({query}) q"));
            assert!(rows > 0, "no rows for automation_monitor: {query}");
        }
        // scheduler_status() too (0.7.0: 42501 for a runner, on shared_preload_libraries)
        assert!(one::<i64>("SELECT count(*) FROM automation.scheduler_status()") >= 1);
        Spi::run("RESET ROLE").unwrap();
    }
}
