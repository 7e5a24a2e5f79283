//! The per-job options of 0.6.0 (issue 17) with the real scheduler and job
//! workers: retries with backoff, each attempt its own run, never reaching
//! the next fire; the overlap policies under a slow job; history modes and
//! the per-job cap, with the counters counting every run regardless.

use std::time::Duration;

use automation_ext_integration::{connect, wait_for, Client};

fn one<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap_or_else(|e| panic!("{sql}: {e}")).get(0)
}

/// Deactivate a job and wait until none of its runs is in flight.
fn stop(c: &mut Client, jobid: i64) {
    c.execute("UPDATE automation.job SET active = false WHERE jobid = $1", &[&jobid]).unwrap();
    wait_for(
        c,
        &format!(
            "SELECT NOT EXISTS (SELECT FROM automation.job_run_details
                                  WHERE jobid = {jobid} AND status IN ('starting', 'running'))"
        ),
        Duration::from_secs(20),
        "the job's runs to end",
    );
}

#[test]
fn a_failed_run_is_retried_with_backoff_as_its_own_attempt() {
    let mut c = connect();
    c.batch_execute("CREATE SEQUENCE it_retry_seq").unwrap();
    // fails twice, then succeeds (a sequence is not rolled back by the failure)
    let job: i64 = one(
        &mut c,
        "SELECT automation.schedule('it-retry', '20 seconds',
                'SELECT 1 / (CASE WHEN pg_catalog.nextval(''it_retry_seq'') % 3 = 0 THEN 1 ELSE 0 END)',
                retries => 3, retry_backoff => '1 second')",
    );
    wait_for(
        &mut c,
        &format!("SELECT EXISTS (SELECT FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded')"),
        Duration::from_secs(40),
        "the third attempt to succeed",
    );
    stop(&mut c, job);
    let rows = c
        .query(
            "SELECT attempt, status, return_message,
                    extract(epoch FROM scheduled_for - lag(end_time) OVER (ORDER BY runid))::float8 AS waited,
                    extract(epoch FROM start_time - scheduled_for)::float8 AS late,
                    scheduled_for < (SELECT min(scheduled_for) FROM automation.job_run_details WHERE jobid = $1)
                                     + interval '20 seconds' AS before_next_fire
               FROM automation.job_run_details WHERE jobid = $1 ORDER BY runid LIMIT 3",
            &[&job],
        )
        .unwrap();
    let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(1, "failed".into()), (2, "failed".into()), (3, "succeeded".into())]);
    assert!(rows[0].get::<_, String>(2).contains("division by zero"));
    // attempt 2 waited half to all of 1 s after attempt 1 ended, attempt 3
    // half to all of 2 s (doubling, with jitter); all before the next fire
    let waited: Vec<f64> = rows[1..].iter().map(|r| r.get(3)).collect();
    assert!(waited[0] >= 0.49, "{waited:?}");
    assert!(waited[1] >= 0.99, "{waited:?}");
    for r in &rows {
        assert!(r.get::<_, f64>(4) >= 0.0, "a run never starts before it is due");
        assert!(r.get::<_, bool>(5), "a retry never reaches the next fire");
    }
    // the fire succeeded in the end: no consecutive failure; every attempt counted
    let (failures, status): (i32, String) = {
        let r = c
            .query_one("SELECT consecutive_failures, last_status FROM automation.job WHERE jobid = $1", &[&job])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((failures, status.as_str()), (0, "succeeded"));
    let counted: (i64, i64) = {
        let r = c.query_one("SELECT succeeded, failed FROM automation.job_run_stats WHERE jobid = $1", &[&job]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(counted, (1, 2));
}

#[test]
fn consecutive_failures_count_fires_not_attempts() {
    let mut c = connect();
    let job: i64 = one(
        &mut c,
        "SELECT automation.schedule('it-always-fails', '4 seconds', 'SELECT 1 / 0',
                retries => 2, retry_backoff => '200 milliseconds')",
    );
    wait_for(
        &mut c,
        &format!("SELECT count(*) >= 2 FROM automation.job_run_details WHERE jobid = {job} AND attempt = 3"),
        Duration::from_secs(30),
        "two fires to use up their three attempts",
    );
    stop(&mut c, job);
    let (most_attempts, exhausted, failures): (i32, i64, i32) = {
        let r = c
            .query_one(
                "SELECT max(attempt), count(*) FILTER (WHERE attempt = 3),
                        (SELECT consecutive_failures FROM automation.job WHERE jobid = $1)
                   FROM automation.job_run_details WHERE jobid = $1",
                &[&job],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(most_attempts, 3, "never more than 1 + retries attempts per fire");
    assert_eq!(i64::from(failures), exhausted, "one failure per fire whose attempts all failed");
}

#[test]
fn overlap_policies_under_a_slow_job() {
    let mut c = connect();
    let jobs: Vec<(i64, &str)> = ["skip", "queue", "parallel 2"]
        .into_iter()
        .map(|policy| {
            let id: i64 = c
                .query_one(
                    "SELECT automation.schedule($1, '1 second', 'SELECT pg_sleep(2.5)', overlap => $2)",
                    &[&format!("it-overlap-{policy}"), &policy],
                )
                .unwrap()
                .get(0);
            (id, policy)
        })
        .collect();
    let mut most = std::collections::HashMap::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(11) {
        for (id, policy) in &jobs {
            let n: i64 = c
                .query_one(
                    "SELECT count(*) FROM automation.job_run_details WHERE jobid = $1 AND status IN ('starting', 'running')",
                    &[id],
                )
                .unwrap()
                .get(0);
            let m = most.entry(*policy).or_insert(0);
            *m = (*m).max(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (id, _) in &jobs {
        stop(&mut c, *id);
    }
    let count = |c: &mut Client, id: i64, status: &str| -> i64 {
        c.query_one("SELECT count(*) FROM automation.job_run_details WHERE jobid = $1 AND status = $2", &[&id, &status])
            .unwrap()
            .get(0)
    };
    let (skip, queue, parallel) = (jobs[0].0, jobs[1].0, jobs[2].0);
    // skip: one run at a time; fires during a run are recorded skipped
    assert_eq!(most["skip"], 1);
    assert!(count(&mut c, skip, "skipped") >= 3);
    // queue: one run at a time, nothing skipped; each run starts right after
    // the previous one ended (the fire waited for it), never before
    assert_eq!(most["queue"], 1);
    assert_eq!(count(&mut c, queue, "skipped"), 0);
    assert!(count(&mut c, queue, "succeeded") >= 3);
    let gaps: Vec<f64> = c
        .query(
            "SELECT extract(epoch FROM start_time - lag(end_time) OVER (ORDER BY runid))::float8
               FROM automation.job_run_details WHERE jobid = $1 AND status = 'succeeded' ORDER BY runid",
            &[&queue],
        )
        .unwrap()
        .iter()
        .skip(1)
        .map(|r| r.get(0))
        .collect();
    assert!(gaps.iter().all(|g| *g >= 0.0), "a queued run starts after the one it waited for: {gaps:?}");
    // parallel 2: two at once, never three; the third is skipped
    assert_eq!(most["parallel 2"], 2);
    assert!(count(&mut c, parallel, "skipped") >= 1);
}

#[test]
fn history_modes_and_the_cap_keep_what_they_say_and_count_everything() {
    let mut c = connect();
    c.batch_execute("CREATE SEQUENCE it_history_seq").unwrap();
    // every other run fails
    // (not `CASE ... THEN 1 / 0`: the planner folds that constant, and it always fails)
    let alternating = "SELECT 1 / (pg_catalog.nextval(''it_history_seq'') % 2)::int";
    let failures: i64 = one(
        &mut c,
        &format!("SELECT automation.schedule('it-log-failures', '1 second', '{alternating}', log_runs => 'failures')"),
    );
    let none: i64 = one(&mut c, "SELECT automation.schedule('it-log-none', '1 second', 'SELECT 1', log_runs => 'none')");
    let capped: i64 = one(&mut c, "SELECT automation.schedule('it-keep-3', '1 second', 'SELECT 1', keep_runs => 3)");
    wait_for(
        &mut c,
        &format!(
            "SELECT bool_and(succeeded + failed >= 6) AND count(*) = 3 FROM automation.job_run_stats
              WHERE jobid IN ({failures}, {none}, {capped})"
        ),
        Duration::from_secs(30),
        "six runs of each job",
    );
    for id in [failures, none, capped] {
        stop(&mut c, id);
    }
    let kept = |c: &mut Client, id: i64| -> Vec<String> {
        c.query("SELECT status FROM automation.job_run_details WHERE jobid = $1 ORDER BY runid", &[&id])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let stats = |c: &mut Client, id: i64| -> (i64, i64) {
        let r = c.query_one("SELECT succeeded, failed FROM automation.job_run_stats WHERE jobid = $1", &[&id]).unwrap();
        (r.get(0), r.get(1))
    };
    let f = kept(&mut c, failures);
    let (ok, failed) = stats(&mut c, failures);
    assert!(ok >= 3 && failed >= 3, "both outcomes happened: {ok} / {failed}");
    assert!(f.iter().all(|s| s == "failed"), "failures keeps only failed runs: {f:?}");
    assert_eq!(f.len() as i64, failed, "and every one of them");
    assert!(kept(&mut c, none).is_empty(), "none keeps nothing");
    assert!(stats(&mut c, none).0 >= 6);
    assert_eq!(kept(&mut c, capped), vec!["succeeded"; 3], "keep_runs => 3 keeps the last three");
    let newest: i64 = one(&mut c, &format!("SELECT max(runid) FROM automation.job_run_details WHERE jobid = {capped}"));
    let total: i64 = one(&mut c, &format!("SELECT succeeded FROM automation.job_run_stats WHERE jobid = {capped}"));
    assert!(total >= 6);
    // the kept ones are the newest
    let oldest_kept: i64 =
        one(&mut c, &format!("SELECT min(runid) FROM automation.job_run_details WHERE jobid = {capped}"));
    assert!(newest > oldest_kept);
    // the exposition shows the counters
    let text: String = one(&mut c, "SELECT automation.metrics_exposition()");
    assert!(text.contains("automation_job_runs_total{job=\"it-log-none\",status=\"succeeded\"}"), "{text}");
    assert!(text.contains("# TYPE automation_job_run_duration_seconds histogram"));
    assert!(text.contains("automation_job_start_lateness_seconds_bucket{le=\"+Inf\"}"));
}
