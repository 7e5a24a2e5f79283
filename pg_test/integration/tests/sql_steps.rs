//! SQL steps (0.7.0) from outside: run by the extension's step workers as
//! the role that started the workflow, with each step's output passed on;
//! COMMIT and VACUUM work in a step; a step cannot read what its role
//! cannot; a runner cannot have SQL run as another role; cancelling an
//! execution stops its running SQL step; a step's timeout is its statement
//! timeout; a thousand three-step workflows finish within the step workers'
//! limit, each step run once.

use std::time::{Duration, Instant};

use automation_ext_integration::{connect, wait_for, Client};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn define(c: &mut Client, name: &str, definition: &str) {
    c.execute("DELETE FROM automation_workflows.definitions WHERE name = $1", &[&name]).unwrap();
    c.execute(
        "INSERT INTO automation_workflows.definitions (name, definition) VALUES ($1, $2::text::jsonb)",
        &[&name, &definition],
    )
    .unwrap();
}

/// A login role in automation_runner (made anew).
fn runner_role(c: &mut Client, role: &str) {
    c.batch_execute(&format!(
        "DO $$ BEGIN
           IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
             EXECUTE 'DROP OWNED BY {role}';
             EXECUTE 'DROP ROLE {role}';
           END IF;
         END $$;
         CREATE ROLE {role} LOGIN IN ROLE automation_runner;
         GRANT CREATE, USAGE ON SCHEMA public TO {role};"
    ))
    .unwrap();
}

/// Start `workflow` (the superuser's, shared with `role`: 0.8.0) as `role`;
/// its execution id.
fn start_as(c: &mut Client, role: &str, workflow: &str, input: &str) -> String {
    c.execute("SELECT automation.grant_workflow($1, $2::text::regrole)", &[&workflow, &role]).unwrap();
    c.batch_execute(&format!("SET ROLE {role}")).unwrap();
    let id: String = c
        .query_one("SELECT automation.run_workflow($1, $2::text::jsonb)::text", &[&workflow, &input])
        .unwrap()
        .get(0);
    c.batch_execute("RESET ROLE").unwrap();
    id
}

fn wait_finished(c: &mut Client, id: &str) -> String {
    wait_for(
        c,
        &format!("SELECT status NOT IN ('pending', 'running') FROM automation_workflows.workflow_executions WHERE id = '{id}'"),
        LIMIT,
        "the execution ends",
    );
    c.query_one("SELECT status FROM automation_workflows.workflow_executions WHERE id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0)
}

fn output(c: &mut Client, id: &str, step: &str) -> Value {
    c.query_one(
        "SELECT output::text FROM automation_workflows.step_runs
          WHERE execution_id = $1::text::uuid AND step = $2 AND status = 'success'",
        &[&id, &step],
    )
    .map(|r| serde_json::from_str(r.get::<_, Option<&str>>(0).unwrap_or("null")).unwrap())
    .unwrap_or_else(|e| panic!("step {step} of {id} has no success: {e}"))
}

#[test]
fn sql_steps_run_as_the_starting_role_and_pass_their_outputs_on() {
    let mut c = connect();
    runner_role(&mut c, "it_sql_owner");
    c.batch_execute(
        "DROP TABLE IF EXISTS it_sql_secret, it_sql_data;
         DROP PROCEDURE IF EXISTS it_sql_commit();
         CREATE TABLE it_sql_secret (x int);
         INSERT INTO it_sql_secret VALUES (1);
         SET ROLE it_sql_owner;
         CREATE TABLE it_sql_data (x int, committed_at timestamptz DEFAULT clock_timestamp());
         CREATE PROCEDURE it_sql_commit() LANGUAGE plpgsql AS $p$
         BEGIN
             INSERT INTO it_sql_data (x) VALUES (1);
             COMMIT;
             INSERT INTO it_sql_data (x) VALUES (2);
         END $p$;
         RESET ROLE;",
    )
    .unwrap();
    define(
        &mut c,
        "it-sql-diamond",
        r#"{"steps": [
            {"name": "a", "sql": "SELECT jsonb_build_object('n', (automation.step_input()->'input'->>'n')::int + 1)"},
            {"name": "b", "after": ["a"], "sql": "SELECT (automation.step_input()->'steps'->'a'->>'n')::int * 10"},
            {"name": "c", "after": ["a"], "sql": "SET search_path = nowhere; SELECT current_user::text"},
            {"name": "proc", "after": ["a"], "sql": "CALL public.it_sql_commit()"},
            {"name": "vac", "after": ["proc"], "sql": "VACUUM public.it_sql_data"},
            {"name": "d", "after": ["b", "c", "vac"],
             "sql": "SELECT automation.step_input()->'steps' || jsonb_build_object('path', current_setting('search_path'))"}]}"#,
    );
    let id = start_as(&mut c, "it_sql_owner", "it-sql-diamond", r#"{"n": 41}"#);
    assert_eq!(wait_finished(&mut c, &id), "success");
    assert_eq!(output(&mut c, &id, "a"), serde_json::json!({"n": 42}));
    assert_eq!(output(&mut c, &id, "b"), serde_json::json!(420));
    assert_eq!(output(&mut c, &id, "c"), serde_json::json!("it_sql_owner"), "runs as the starting role");
    assert_eq!(
        output(&mut c, &id, "d"),
        serde_json::json!({"b": 420, "c": "it_sql_owner", "vac": null, "path": "\"$user\", public"}),
        "a step reads its dependencies' outputs; step c's search_path did not stay in its worker's session"
    );
    // the procedure committed in between (two transactions), and VACUUM ran
    let (rows, distinct_xmins): (i64, i64) = c
        .query_one("SELECT count(*), count(DISTINCT xmin::text) FROM it_sql_data", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((rows, distinct_xmins), (2, 2), "COMMIT inside a SQL step");
    let vacuumed: bool = c
        .query_one("SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'it_sql_data'", &[])
        .unwrap()
        .get(0);
    assert!(vacuumed, "VACUUM ran as a step");
    // a step cannot read what its role cannot
    define(&mut c, "it-sql-secret", r#"{"steps": [{"name": "peek", "sql": "SELECT count(*) FROM public.it_sql_secret"}]}"#);
    let id = start_as(&mut c, "it_sql_owner", "it-sql-secret", "{}");
    assert_eq!(wait_finished(&mut c, &id), "error");
    let (message, sqlstate): (String, String) = c
        .query_one(
            "SELECT error->>'message', error->>'sqlstate' FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid",
            &[&id],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(sqlstate, "42501", "{message}");
    assert!(message.contains("permission denied for table it_sql_secret"), "{message}");
    let metrics: i64 = c
        .query_one(
            "SELECT count(*) FROM automation.pipeline_metrics WHERE pipeline_name = 'it-sql-diamond' AND status = 'success'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(metrics >= 6, "every finished step run is a pipeline metric ({metrics})");
}

#[test]
fn a_runner_cannot_have_sql_run_as_another_role() {
    let mut c = connect();
    runner_role(&mut c, "it_sql_mallory");
    define(&mut c, "it-sql-whoami", r#"{"steps": [{"name": "who", "sql": "SELECT current_user::text"}]}"#);
    // a superuser's execution, waiting (delayed start) for the attempts below
    let victim: String = c
        .query_one("SELECT automation.run_workflow('it-sql-whoami', '{}', now() + interval '1 hour')::text", &[])
        .unwrap()
        .get(0);
    c.batch_execute("SET ROLE it_sql_mallory").unwrap();
    let attempts = [
        // (0.8.0) nothing of a run is writable but through the functions
        format!(
            "INSERT INTO automation_workflows.workflow_runs
                    (execution_id, workflow_name, version, definition, input, admitted, run_after, steps_left, owner)
             VALUES (gen_random_uuid(), 'it-sql-whoami', 1, '{{}}', '{{}}', true, now(), 1, 'postgres')"
        ),
        format!("UPDATE automation_workflows.workflow_runs SET owner = 'it_sql_mallory' WHERE execution_id = '{victim}'"),
        format!(
            "UPDATE automation_workflows.workflow_runs
                SET definition = '{{\"steps\": [{{\"name\": \"who\", \"sql\": \"ALTER ROLE it_sql_mallory SUPERUSER\"}}]}}'
              WHERE execution_id = '{victim}'"
        ),
        format!("UPDATE automation_workflows.step_runs SET input = '{{}}' WHERE execution_id = '{victim}'"),
        format!("UPDATE automation_workflows.step_runs SET queue = NULL WHERE execution_id = '{victim}'"),
        format!("UPDATE automation_workflows.step_runs SET status = 'pending', worker = NULL WHERE execution_id = '{victim}'"),
        format!(
            "INSERT INTO automation_workflows.step_runs (execution_id, step, queue, input)
             VALUES ('{victim}', 'who', NULL, '{{\"input\": {{\"forged_by\": \"mallory\"}}}}')"
        ),
        "SELECT automation.stop_sql_step(1, 10)".to_owned(),
        format!("SELECT automation.run_workflow_as(10, 'it-sql-whoami', '{{}}', NULL, NULL)"),
    ];
    for sql in &attempts {
        let e = c.batch_execute(sql).expect_err(sql);
        assert_eq!(e.code().map(|s| s.code()), Some("42501"), "{sql}: {e}");
    }
    c.batch_execute("RESET ROLE").unwrap();
    // what mallory starts runs as mallory
    let id = start_as(&mut c, "it_sql_mallory", "it-sql-whoami", "{}");
    assert_eq!(wait_finished(&mut c, &id), "success");
    assert_eq!(output(&mut c, &id, "who"), serde_json::json!("it_sql_mallory"));
    let started_by: String = c
        .query_one("SELECT owner::text FROM automation_workflows.workflow_runs WHERE execution_id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(started_by, "it_sql_mallory");
    c.execute("SELECT automation.cancel_workflow($1::text::uuid)", &[&victim]).unwrap();
}

#[test]
fn cancelling_an_execution_stops_its_running_sql_step() {
    let mut c = connect();
    define(
        &mut c,
        "it-sql-sleepy",
        r#"{"steps": [{"name": "nap", "sql": "SELECT pg_sleep(60)"}, {"name": "after", "after": ["nap"], "sql": "SELECT 1"}]}"#,
    );
    let id: String = c.query_one("SELECT automation.run_workflow('it-sql-sleepy')::text", &[]).unwrap().get(0);
    let sleeping = "SELECT count(*) = 1 FROM pg_stat_activity
                     WHERE application_name = 'automation_ext step worker' AND state = 'active'
                       AND query = 'SELECT pg_sleep(60)'";
    wait_for(&mut c, sleeping, LIMIT, "the SQL step runs");
    let pid: i32 = c
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'automation_ext step worker' AND query = 'SELECT pg_sleep(60)'",
            &[],
        )
        .unwrap()
        .get(0);
    let cancelled_at = Instant::now();
    let done: bool = c.query_one("SELECT automation.cancel_workflow($1::text::uuid, 'enough')", &[&id]).unwrap().get(0);
    assert!(done);
    wait_for(
        &mut c,
        &format!("SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = {pid} AND query = 'SELECT pg_sleep(60)' AND state = 'active')"),
        Duration::from_secs(10),
        "the running step's query stopped",
    );
    assert!(cancelled_at.elapsed() < Duration::from_secs(10));
    let statuses: Vec<(String, String)> = c
        .query(
            "SELECT step, status FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid ORDER BY id",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(statuses, vec![("nap".to_owned(), "cancelled".to_owned())], "the next step never started");
    let status: String = c
        .query_one("SELECT status FROM automation_workflows.workflow_executions WHERE id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(status, "cancelled");
    // a step that leaves a transaction block open is rolled back and fails
    // (its worker does not go on inside that block)
    c.batch_execute("DROP TABLE IF EXISTS it_sql_open; CREATE TABLE it_sql_open (x int)").unwrap();
    define(
        &mut c,
        "it-sql-open",
        r#"{"steps": [{"name": "open", "sql": "BEGIN; INSERT INTO public.it_sql_open VALUES (1)"}]}"#,
    );
    let id: String = c.query_one("SELECT automation.run_workflow('it-sql-open')::text", &[]).unwrap().get(0);
    assert_eq!(wait_finished(&mut c, &id), "error");
    let sqlstate: String = c
        .query_one("SELECT error->>'sqlstate' FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0);
    assert_eq!(sqlstate, "25000");
    let rows: i64 = c.query_one("SELECT count(*) FROM it_sql_open", &[]).unwrap().get(0);
    assert_eq!(rows, 0, "rolled back");
    // the worker goes on with other steps
    define(&mut c, "it-sql-quick", r#"{"steps": [{"name": "one", "sql": "SELECT 1"}]}"#);
    let id: String = c.query_one("SELECT automation.run_workflow('it-sql-quick')::text", &[]).unwrap().get(0);
    assert_eq!(wait_finished(&mut c, &id), "success");
}

#[test]
fn a_steps_timeout_is_its_statement_timeout() {
    let mut c = connect();
    define(
        &mut c,
        "it-sql-slow",
        r#"{"steps": [{"name": "slow", "sql": "SELECT pg_sleep(5)", "timeout": "300 milliseconds",
                       "retry": {"max_attempts": 2, "backoff": "10 milliseconds"}}]}"#,
    );
    let started = Instant::now();
    let id: String = c.query_one("SELECT automation.run_workflow('it-sql-slow')::text", &[]).unwrap().get(0);
    assert_eq!(wait_finished(&mut c, &id), "error");
    assert!(started.elapsed() < Duration::from_secs(5), "both attempts were cut short: {:?}", started.elapsed());
    let attempts: Vec<(i32, String, String)> = c
        .query(
            "SELECT attempt, status, error->>'sqlstate' FROM automation_workflows.step_runs
              WHERE execution_id = $1::text::uuid ORDER BY attempt",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        attempts,
        vec![(1, "timeout".to_owned(), "57014".to_owned()), (2, "timeout".to_owned(), "57014".to_owned())]
    );
}

#[test]
fn a_thousand_three_step_workflows_finish_within_the_step_worker_limit() {
    let mut c = connect();
    let limit: i64 = c.query_one("SELECT current_setting('automation.step_workers')::bigint", &[]).unwrap().get(0);
    define(
        &mut c,
        "it-sql-many",
        r#"{"steps": [{"name": "one", "sql": "SELECT 1"},
                      {"name": "two", "after": ["one"], "sql": "SELECT 2"},
                      {"name": "three", "after": ["two"], "sql": "SELECT 3"}]}"#,
    );
    c.batch_execute("SELECT automation.run_workflow('it-sql-many', jsonb_build_object('i', i)) FROM generate_series(1, 1000) i")
        .unwrap();
    let started = Instant::now();
    let mut most = 0i64;
    loop {
        let (workers, open): (i64, i64) = c
            .query_one(
                // (step_workers is per database and role: the other tests
                // of this binary run steps as other roles meanwhile)
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'automation_ext step worker'
                           AND datname = current_database() AND usename = current_user),
                        (SELECT count(*) FROM automation_workflows.workflow_executions
                          WHERE workflow_name = 'it-sql-many' AND status IN ('pending', 'running'))",
                &[],
            )
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        most = most.max(workers);
        if open == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{open} executions still open");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most >= 1 && most <= limit, "step workers at once: {most} (automation.step_workers = {limit})");
    let (success, runs, distinct): (i64, i64, i64) = c
        .query_one(
            "SELECT (SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'it-sql-many' AND status = 'success'),
                    count(*), count(DISTINCT (r.execution_id, r.step))
               FROM automation_workflows.step_runs r JOIN automation_workflows.workflow_runs w USING (execution_id)
              WHERE w.workflow_name = 'it-sql-many' AND r.status = 'success'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .unwrap();
    assert_eq!((success, runs, distinct), (1000, 3000, 3000), "every workflow succeeded, every step ran once");
}

/// Issue 34: a visit of the database's worker no longer looks at every SQL
/// step when it starts; what the last visit knew is kept in shared memory
/// instead. A retry's backoff and a workflow's timeout that fall after the
/// worker left are still kept at their time: the next visit starts then and
/// resumes from them. (Its own database: in the shared one other tests keep
/// the worker from leaving.)
#[test]
fn a_backoff_and_a_timeout_after_the_worker_left_are_kept_at_their_time() {
    let (mut admin, mut c) = automation_ext_integration::fresh_database("it_resume");
    c.batch_execute("CREATE SEQUENCE public.it_attempt").unwrap();
    // fails at its first attempt (division by zero), not at its second
    define(
        &mut c,
        "it-backoff",
        r#"{"steps": [{"name": "once", "sql": "SELECT 1 / (nextval('public.it_attempt') - 1)::int",
                       "retry": {"max_attempts": 2, "backoff": "12 seconds"}}]}"#,
    );
    // a queue step nobody claims, in a workflow with a timeout (both times
    // past the worker's stay: it leaves after 2 s with nothing due, 5 s
    // after its last recording)
    define(&mut c, "it-deadline", r#"{"timeout": "12 seconds", "steps": [{"name": "wait", "queue": "it-nobody"}]}"#);
    let since: std::time::SystemTime = c.query_one("SELECT now()", &[]).unwrap().get(0);
    let started = Instant::now();
    let retried: String = c.query_one("SELECT automation.run_workflow('it-backoff')::text", &[]).unwrap().get(0);
    let timed: String = c.query_one("SELECT automation.run_workflow('it-deadline')::text", &[]).unwrap().get(0);
    let mut workers = std::collections::BTreeSet::new();
    let ended = |c: &mut Client, id: &str| -> Option<String> {
        c.query_one(
            "SELECT status FROM automation_workflows.workflow_executions
              WHERE id = $1::text::uuid AND status NOT IN ('pending', 'running')",
            &[&id],
        )
        .ok()
        .map(|r| r.get(0))
    };
    let (mut a, mut b) = (None, None);
    while a.is_none() || b.is_none() {
        // (due at 12 s; without what the last visit knew, they waited for a
        // step worker's exit or the minute's sweep: 27 s and more)
        assert!(started.elapsed() < Duration::from_secs(20), "the backoff and the timeout were kept ({a:?}, {b:?})");
        for row in c
            .query(
                "SELECT pid, backend_start > $1::timestamptz + interval '8 seconds' FROM pg_stat_activity
                  WHERE datname = 'it_resume' AND backend_type = 'automation_ext scheduler'",
                &[&since],
            )
            .unwrap()
        {
            workers.insert((row.get::<_, i32>(0), row.get::<_, bool>(1)));
        }
        a = a.or_else(|| ended(&mut c, &retried));
        b = b.or_else(|| ended(&mut c, &timed));
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("ended after {:?}; workers of the database: {workers:?}", started.elapsed());
    assert_eq!(a.as_deref(), Some("success"), "the second attempt, after its backoff");
    assert_eq!(b.as_deref(), Some("timeout"));
    // (pid, started 8 s or more after the workflows: a later visit; the
    // first one leaves 2 s after its last work, 5 s after its last recording)
    assert!(workers.iter().any(|&(_, later)| later), "the worker left while both waited, and came back ({workers:?})");
    let attempts: i64 = c
        .query_one("SELECT count(*) FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid", &[&retried])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 2);
    drop(c);
    admin.batch_execute("DROP DATABASE it_resume WITH (FORCE)").unwrap();
}
