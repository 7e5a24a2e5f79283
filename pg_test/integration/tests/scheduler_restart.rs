//! A scheduler killed with SIGKILL: the postmaster restarts the cluster, the
//! launcher restarts the schedulers, the run that was in flight is recorded
//! as failed rather than left 'running', and jobs resume. (One test in its
//! own binary: the crash restart ends every session of the cluster.)

use std::time::Duration;

use automation_ext_integration::{connect, connect_retrying, conninfo, kill_scheduler, wait_for};

#[test]
fn jobs_resume_after_the_scheduler_is_killed() {
    let mut c = connect();
    let slow: i64 = c
        .query_one("SELECT automation.schedule('it-in-flight', '1 second', 'SELECT pg_sleep(60)')", &[])
        .unwrap()
        .get(0);
    let quick: i64 = c.query_one("SELECT automation.schedule('it-quick', '1 second', 'SELECT 1')", &[]).unwrap().get(0);
    let limit = Duration::from_secs(30);
    wait_for(
        &mut c,
        &format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {slow} AND status = 'running'"),
        limit,
        "the slow run in flight",
    );
    let killed_at: std::time::SystemTime = std::time::SystemTime::now();
    kill_scheduler(&mut c);
    drop(c);

    // the postmaster reinitializes; sessions come back
    std::thread::sleep(Duration::from_secs(1));
    let mut c = connect_retrying(&conninfo(), Duration::from_secs(60));
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {slow} AND status = 'failed'
                AND return_message LIKE 'the scheduler restarted while this run was in flight%'"
        ),
        Duration::from_secs(60),
        "the in-flight run recorded as failed",
    );
    let since = killed_at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) > 0 FROM automation.job_run_details
              WHERE jobid = {quick} AND status = 'succeeded' AND start_time > to_timestamp({since})"
        ),
        Duration::from_secs(60),
        "a run after the restart",
    );
    let stuck: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM automation.job_run_details
                  WHERE status IN ('starting', 'running') AND start_time < to_timestamp({since})"
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stuck, 0, "a run from before the crash is still shown in flight");
    c.batch_execute(&format!("DELETE FROM automation.job WHERE jobid IN ({slow}, {quick})")).unwrap();
    // and the slow run the restarted scheduler started again: not left
    // sleeping into the next test binary
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE backend_type = 'automation_ext job' AND datname = current_database()",
    )
    .unwrap();
}
