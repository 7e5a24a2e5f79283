//! A step worker killed with SIGKILL while it runs a SQL step: the
//! postmaster restarts the cluster, the scheduler finds the step's worker
//! gone, the attempt fails (SQLSTATE 57P01) and is retried, and the
//! workflow completes. (Its own binary: the crash restart ends every
//! session of the cluster.)

use std::process::Command;
use std::time::Duration;

use automation_ext_integration::{connect, connect_retrying, conninfo, wait_for};

#[test]
fn a_killed_step_worker_s_step_is_retried_and_the_workflow_completes() {
    let mut c = connect();
    c.batch_execute(
        "DROP TABLE IF EXISTS it_kill_go;
         CREATE TABLE it_kill_go (x int);
         INSERT INTO automation_workflows.definitions (name, definition) VALUES ('it-sql-kill', '{\"steps\": [
            {\"name\": \"work\", \"retry\": {\"max_attempts\": 2, \"backoff\": \"10 milliseconds\"},
             \"sql\": \"SELECT pg_sleep(CASE WHEN EXISTS (SELECT FROM public.it_kill_go) THEN 0 ELSE 120 END)\"},
            {\"name\": \"after\", \"after\": [\"work\"], \"sql\": \"SELECT 7\"}]}');",
    )
    .unwrap();
    let id: String = c.query_one("SELECT automation.run_workflow('it-sql-kill')::text", &[]).unwrap().get(0);
    let busy = "SELECT pid FROM pg_stat_activity WHERE application_name = 'automation_ext step worker'
                   AND state = 'active' AND query LIKE 'SELECT pg_sleep(CASE%'";
    wait_for(&mut c, &format!("SELECT EXISTS ({busy})"), Duration::from_secs(60), "the SQL step runs");
    let pid: i32 = c.query_one(busy, &[]).unwrap().get(0);
    // the running attempt is past its CASE (asleep for 120 s); its retry
    // will not sleep
    c.batch_execute("INSERT INTO it_kill_go VALUES (1)").unwrap();
    let status = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    drop(c);

    std::thread::sleep(Duration::from_secs(1));
    let mut c = connect_retrying(&conninfo(), Duration::from_secs(60));
    wait_for(
        &mut c,
        &format!("SELECT status = 'success' FROM automation_workflows.workflow_executions WHERE id = '{id}'"),
        Duration::from_secs(90),
        "the workflow completes after the crash",
    );
    let attempts: Vec<(String, i32, String, Option<String>)> = c
        .query(
            "SELECT step, attempt, status, error->>'sqlstate' FROM automation_workflows.step_runs
              WHERE execution_id = $1::text::uuid ORDER BY id",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        attempts,
        vec![
            ("work".to_owned(), 1, "error".to_owned(), Some("57P01".to_owned())),
            ("work".to_owned(), 2, "success".to_owned(), None),
            ("after".to_owned(), 1, "success".to_owned(), None),
        ],
        "the killed attempt failed, the retry ran once, then the next step"
    );
}
