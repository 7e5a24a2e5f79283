//! automation.max_running_jobs holds, and a configuration reload (SIGHUP)
//! changes it for a running scheduler. In its own binary: it changes a
//! cluster-wide setting.

use std::time::{Duration, Instant};

use automation_ext_integration::{connect, wait_for, SystemSettings};

#[test]
fn never_more_runs_at_once_than_max_running_jobs() {
    let mut c = connect();
    let limit = SystemSettings::set(&mut c, &[("automation.max_running_jobs", "2")]);
    std::thread::sleep(Duration::from_secs(2));
    let jobs: Vec<i64> = (0..5)
        .map(|i| {
            c.query_one(
                "SELECT automation.schedule($1, '1 second', 'SELECT pg_sleep(1.5)')",
                &[&format!("it-limit-{i}")],
            )
            .unwrap()
            .get(0)
        })
        .collect();
    let mut most = 0i64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        let running: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'automation_ext job' AND datname = current_database()",
                &[],
            )
            .unwrap()
            .get(0);
        most = most.max(running);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(limit); // reset and reloaded
    for job in &jobs {
        c.execute("SELECT automation.unschedule($1::bigint)", &[job]).unwrap();
    }
    assert_eq!(most, 2, "at most 2 runs at once, and the limit is reached");
    // every job got its turn
    wait_for(
        &mut c,
        &format!(
            "SELECT count(DISTINCT jobid) = 5 FROM automation.job_run_details
              WHERE jobid IN ({}) AND status = 'succeeded'",
            jobs.iter().map(|j| j.to_string()).collect::<Vec<_>>().join(",")
        ),
        Duration::from_secs(30),
        "a successful run of every job",
    );
}
