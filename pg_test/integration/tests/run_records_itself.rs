//! (issue 34) A job run that succeeded is recorded by the worker that ran
//! it, not by a scheduler visit: with the launcher stopped (SIGSTOP: no
//! scheduler can start anywhere) a run that ends is still recorded — its
//! row, its job's last run, its counters — while a failed run waits for its
//! scheduler as before, and is recorded once the launcher goes on. The
//! run's owner is a plain member of automation_runner who tries to subvert
//! the recording done on its session (a role default search_path leading
//! to its own `=` operator, settings left by the command): nothing it
//! planted runs. In its own binary: it stops the launcher.

use std::time::{Duration, Instant};

use automation_ext_integration::{connect, connect_as, wait_for, Client};

const OWNER: &str = "it_self_rec";

/// SIGCONT the launcher when dropped, also when the test panics: a stopped
/// launcher would stall every later test binary.
struct Stopped(i32);

impl Stopped {
    fn launcher(c: &mut Client) -> Stopped {
        let pid: i32 = c
            .query_one("SELECT pid FROM pg_stat_activity WHERE backend_type = 'automation_ext launcher'", &[])
            .expect("the launcher runs")
            .get(0);
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: i32) {
    let ok = std::process::Command::new("kill").args([which, &pid.to_string()]).status().expect("kill runs");
    assert!(ok.success(), "kill {which} {pid}");
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

const SCHEDULERS: &str = "SELECT count(*) FROM pg_stat_activity
                           WHERE backend_type = 'automation_ext scheduler' AND datname = current_database()";

#[test]
fn a_run_that_succeeded_is_recorded_by_its_worker() {
    let mut c = connect();
    c.batch_execute(&format!(
        "DROP ROLE IF EXISTS {OWNER};
         CREATE ROLE {OWNER} LOGIN IN ROLE automation_runner;
         CREATE SCHEMA it_planted AUTHORIZATION {OWNER};"
    ))
    .unwrap();
    // the owner's trap: its own bigint = bigint, first on its default
    // search_path, logging whoever calls it
    let mut own = connect_as(OWNER);
    own.batch_execute(
        "CREATE TABLE it_planted.called_by (who name);
         GRANT INSERT ON it_planted.called_by TO PUBLIC;
         GRANT USAGE ON SCHEMA it_planted TO PUBLIC;
         CREATE FUNCTION it_planted.eq(a bigint, b bigint) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO it_planted.called_by VALUES (current_user);
             RETURN a OPERATOR(pg_catalog.=) b;
         END $$;
         CREATE OPERATOR it_planted.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = it_planted.eq);",
    )
    .unwrap();
    c.batch_execute(&format!("ALTER ROLE {OWNER} SET search_path = it_planted, pg_catalog")).unwrap();
    drop(own);
    let mut own = connect_as(OWNER);
    // the trap works where it is used: the owner's own bigint comparison
    own.batch_execute("SELECT 1::bigint = 1::bigint").unwrap();
    assert_eq!(count(&mut c, "SELECT count(*) FROM it_planted.called_by"), 1, "the planted operator is reachable");
    c.batch_execute("TRUNCATE it_planted.called_by").unwrap();

    // both fire at the same instants (aligned to 10 s) and run 3 s: the
    // scheduler that fired them has left long before they end (it stays
    // 0.5 s after a run starts when the next fire is 10 s away)
    let ok: i64 = own
        .query_one(
            "SELECT automation.schedule('it-self-ok', '10 seconds',
                     'SET search_path = it_planted, pg_catalog; SET statement_timeout = 60000; SELECT pg_sleep(3)')",
            &[],
        )
        .unwrap()
        .get(0);
    let failing: i64 = own
        .query_one("SELECT automation.schedule('it-self-fails', '10 seconds', 'SELECT pg_sleep(3); SELECT 1/0')", &[])
        .unwrap()
        .get(0);

    // wait for both runs to be going, with no scheduler in the database,
    // then stop the launcher: from here until SIGCONT no scheduler starts
    let mut stopped = None;
    let start = Instant::now();
    while stopped.is_none() {
        assert!(start.elapsed() < Duration::from_secs(90), "never saw both runs going with no scheduler here");
        std::thread::sleep(Duration::from_millis(50));
        let going = count(
            &mut c,
            "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type = 'automation_ext job' AND datname = current_database()
                AND state = 'active' AND query LIKE '%pg_sleep(3)%'",
        );
        if going != 2 || count(&mut c, SCHEDULERS) != 0 {
            continue;
        }
        let s = Stopped::launcher(&mut c);
        // a scheduler the launcher started just before would show now
        std::thread::sleep(Duration::from_millis(300));
        let still_going = count(
            &mut c,
            "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type = 'automation_ext job' AND datname = current_database()
                AND state = 'active' AND query LIKE '%pg_sleep(3)%'",
        );
        if count(&mut c, SCHEDULERS) == 0 && still_going == 2 {
            stopped = Some(s);
        } // else: SIGCONT (drop) and try at the next fire
    }
    let runs = |which: i64| {
        format!("SELECT runid FROM automation.job_run_details WHERE jobid = {which} ORDER BY runid DESC LIMIT 1")
    };
    let ok_run: i64 = c.query_one(&runs(ok), &[]).unwrap().get(0);
    let failing_run: i64 = c.query_one(&runs(failing), &[]).unwrap().get(0);

    // the successful run is recorded with the launcher stopped: by its worker
    wait_for(
        &mut c,
        &format!(
            "SELECT status = 'succeeded' AND end_time IS NOT NULL AND return_message = 'SELECT 1'
               FROM automation.job_run_details WHERE runid = {ok_run}"
        ),
        Duration::from_secs(20),
        "the successful run recorded while no scheduler could start",
    );
    assert_eq!(count(&mut c, SCHEDULERS), 0, "no scheduler came meanwhile");
    let (status, stats): (String, i64) = {
        let r = c
            .query_one(
                &format!(
                    "SELECT j.last_status, s.succeeded FROM automation.job j
                       JOIN automation.job_run_stats s USING (jobid) WHERE j.jobid = {ok}"
                ),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(status, "succeeded", "its job's last run");
    assert!(stats >= 1, "its counter");
    // the failed run waits for its scheduler (its retries and failure
    // counts are the scheduler's): not ended while the launcher is stopped
    std::thread::sleep(Duration::from_secs(1));
    let failing_status: String = c
        .query_one(&format!("SELECT status FROM automation.job_run_details WHERE runid = {failing_run}"), &[])
        .unwrap()
        .get(0);
    assert!(
        failing_status == "starting" || failing_status == "running",
        "a failed run is left to the scheduler, which cannot start now: {failing_status}"
    );
    drop(stopped); // SIGCONT
    wait_for(
        &mut c,
        &format!(
            "SELECT status = 'failed' AND return_message LIKE 'division by zero%'
               FROM automation.job_run_details WHERE runid = {failing_run}"
        ),
        Duration::from_secs(30),
        "the failed run recorded by the scheduler once the launcher went on",
    );
    // and the next runs are recorded as before
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) >= 1 FROM automation.job_run_details
              WHERE jobid = {ok} AND status = 'succeeded' AND runid > {ok_run}"
        ),
        Duration::from_secs(30),
        "the next successful run",
    );
    own.batch_execute("SELECT automation.unschedule('it-self-ok'); SELECT automation.unschedule('it-self-fails')")
        .unwrap();
    // nothing the owner planted ran, as anyone: the recording on its
    // session used a pinned search_path, after a session reset
    let called: Vec<String> =
        c.query("SELECT who::text FROM it_planted.called_by", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert!(called.is_empty(), "the planted operator ran during the runs' recording, as {called:?}");
    drop(own);
    c.batch_execute(&format!(
        "DROP SCHEMA it_planted CASCADE; ALTER ROLE {OWNER} RESET search_path;
         DELETE FROM automation.job_run_details WHERE username = '{OWNER}';
         DROP ROLE {OWNER};"
    ))
    .unwrap();
}
