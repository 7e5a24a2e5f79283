//! Terminating a job run (pg_terminate_backend, DROP DATABASE ... WITH
//! (FORCE), a DBA's kill -TERM) ends that run, recorded as failed, and
//! nothing else. Background workers' default SIGTERM handler raises FATAL
//! inside the signal handler; landing in a critical section (a WAL insert, a
//! commit) that became a PANIC and a crash-restart of the whole server. Runs
//! that write continuously are terminated again and again here: one session
//! stays connected throughout, and a crash-restart would end it.

use std::time::{Duration, Instant};

use automation_ext_integration::{connect, wait_for};

#[test]
fn terminating_writing_runs_never_crashes_the_server() {
    let mut c = connect();
    c.batch_execute(
        "CREATE TABLE it_writes (i bigint, filler text);
         CREATE PROCEDURE it_write_forever() LANGUAGE plpgsql AS $$
         BEGIN
             LOOP
                 INSERT INTO it_writes VALUES (1, 'x');
                 COMMIT;
             END LOOP;
         END $$;",
    )
    .unwrap();
    let job: i64 = c
        .query_one("SELECT automation.schedule('it-writer', '1 second', 'CALL it_write_forever()')", &[])
        .unwrap()
        .get(0);
    let mut watcher = connect();
    let backend: i32 = watcher.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut terminated = 0;
    let start = Instant::now();
    while terminated < 25 {
        assert!(start.elapsed() < Duration::from_secs(120), "only {terminated} runs terminated in 2 minutes");
        let running = c
            .query_opt(
                "SELECT runid, job_pid FROM automation.job_run_details
                  WHERE jobid = $1 AND status = 'running' AND job_pid IS NOT NULL",
                &[&job],
            )
            .unwrap();
        let Some(row) = running else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let (runid, pid): (i64, i32) = (row.get(0), row.get(1));
        // let it write for a moment (varying, so the signal lands anywhere)
        std::thread::sleep(Duration::from_millis(50 + 37 * (terminated % 7) as u64));
        let _ = c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap();
        wait_for(
            &mut c,
            &format!("SELECT status = 'failed' FROM automation.job_run_details WHERE runid = {runid}"),
            Duration::from_secs(30),
            "the terminated run recorded as failed",
        );
        terminated += 1;
    }
    c.execute("SELECT automation.unschedule($1::bigint)", &[&job]).unwrap();
    // the session opened before the first termination is still the same one
    let same: i32 = watcher
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("the server crash-restarted: a session opened before the terminations was ended")
        .get(0);
    assert_eq!(same, backend);
    let rows: i64 = c.query_one("SELECT count(*) FROM it_writes", &[]).unwrap().get(0);
    assert!(rows > 0, "the runs wrote");
    let message: String = c
        .query_one(
            "SELECT return_message FROM automation.job_run_details WHERE jobid = $1 AND status = 'failed' LIMIT 1",
            &[&job],
        )
        .unwrap()
        .get(0);
    assert!(message.contains("terminat"), "{message}");
}
