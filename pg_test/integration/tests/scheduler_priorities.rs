//! Priorities when runs wait for a slot (automation.max_running_jobs = 1),
//! and the cluster-wide history mode (automation.log_runs). In its own
//! binary: it changes cluster-wide settings.

use std::time::Duration;

use automation_ext_integration::{connect, wait_for, SystemSettings};

#[test]
fn higher_priority_first_when_one_slot_is_shared_and_log_runs_failures() {
    let mut c = connect();
    let settings = SystemSettings::set(
        &mut c,
        &[("automation.max_running_jobs", "1"), ("automation.log_runs", "failures")],
    );
    std::thread::sleep(Duration::from_secs(2));
    // three jobs due at the same instants, one slot: each run takes 0.3 s
    let mut t = c.transaction().unwrap();
    let mut ids = Vec::new();
    for (name, priority) in [("it-prio-low", 0), ("it-prio-high", 10), ("it-prio-mid", 5)] {
        let id: i64 = t
            .query_one(
                "SELECT automation.schedule($1, '3 seconds', 'SELECT pg_sleep(0.3)', priority => $2, log_runs => 'all')",
                &[&name, &priority],
            )
            .unwrap()
            .get(0);
        ids.push(id);
    }
    // and one job that follows the setting (failures): its successes go
    let quiet: i64 =
        t.query_one("SELECT automation.schedule('it-log-setting', '3 seconds', 'SELECT 1')", &[]).unwrap().get(0);
    t.commit().unwrap();
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) >= 9 FROM automation.job_run_details WHERE jobid IN ({list}) AND status = 'succeeded'"
        ),
        Duration::from_secs(40),
        "three fires of each job",
    );
    for id in ids.iter().chain([&quiet]) {
        c.execute("UPDATE automation.job SET active = false WHERE jobid = $1", &[id]).unwrap();
    }
    std::thread::sleep(Duration::from_secs(2));
    // per fire (the same scheduled_for), the order the runs started in
    let rows = c
        .query(
            "SELECT scheduled_for, array_agg(j.jobname ORDER BY d.start_time)
               FROM automation.job_run_details d JOIN automation.job j USING (jobid)
              WHERE d.jobid = ANY ($1) AND d.status = 'succeeded'
              GROUP BY scheduled_for HAVING count(*) = 3 ORDER BY scheduled_for",
            &[&ids],
        )
        .unwrap();
    assert!(rows.len() >= 2, "fires where all three ran: {}", rows.len());
    for r in &rows {
        let order: Vec<String> = r.get(1);
        assert_eq!(order, vec!["it-prio-high", "it-prio-mid", "it-prio-low"]);
    }
    // the quiet job ran (counted) but kept no successful runs
    let (kept, counted): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM automation.job_run_details WHERE jobid = $1),
                        (SELECT succeeded FROM automation.job_run_stats WHERE jobid = $1)",
                &[&quiet],
            )
            .unwrap();
        (r.get(0), r.get::<_, Option<i64>>(1).unwrap_or(0))
    };
    drop(settings);
    assert!(counted >= 2, "the job ran: {counted}");
    assert_eq!(kept, 0, "log_runs = failures kept no successful run");
}
