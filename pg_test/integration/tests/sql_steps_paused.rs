//! `automation.enabled = off` stops busy step workers as it stops the
//! schedulers (after the step each one is running), and SQL steps resume
//! when it is back on. (Its own binary: the setting is cluster-wide.)

use std::time::{Duration, Instant};

use automation_ext_integration::{connect, wait_for, SystemSettings};

#[test]
fn turning_the_scheduler_off_stops_busy_step_workers() {
    let mut c = connect();
    c.batch_execute(
        r#"INSERT INTO automation_workflows.definitions (name, definition) VALUES ('it-sql-pause', '{"steps": [
             {"name": "a", "sql": "SELECT pg_sleep(0.01)"},
             {"name": "b", "after": ["a"], "sql": "SELECT pg_sleep(0.01)"}]}');
           SELECT automation.run_workflow('it-sql-pause') FROM generate_series(1, 2000);"#,
    )
    .unwrap();
    let done = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM automation_workflows.step_runs r JOIN automation_workflows.workflow_runs w USING (execution_id)
              WHERE w.workflow_name = 'it-sql-pause' AND r.status = 'success'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    wait_for(
        &mut c,
        "SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'automation_ext step worker'",
        Duration::from_secs(30),
        "step workers at work",
    );
    let off = SystemSettings::set(&mut c, &[("automation.enabled", "off")]);
    let stopped_at = Instant::now();
    wait_for(
        &mut c,
        "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'automation_ext step worker' AND state = 'active'",
        Duration::from_secs(10),
        "the step workers stopped",
    );
    // a worker between two steps (its last one recorded a moment after the
    // check above) may still add the step it had run: settle first
    let mut at_stop = done(&mut c);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = done(&mut c);
        if now == at_stop {
            break;
        }
        at_stop = now;
    }
    std::thread::sleep(Duration::from_secs(2));
    let later = done(&mut c);
    assert_eq!(later, at_stop, "no step ran while automation.enabled was off");
    assert!(at_stop < 4000, "the workflows were not all done before the stop ({at_stop} steps)");
    eprintln!("stopped within {:?} after {at_stop} steps", stopped_at.elapsed());
    drop(off);
    wait_for(
        &mut c,
        "SELECT count(*) = 2000 FROM automation_workflows.workflow_executions WHERE workflow_name = 'it-sql-pause' AND status = 'success'",
        Duration::from_secs(120),
        "every workflow finishes once it is back on",
    );
}
