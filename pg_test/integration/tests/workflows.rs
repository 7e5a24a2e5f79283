//! The workflow engine (0.5.0) from outside: eight workers running diamond
//! workflows concurrently lose no join and run no step twice; a LISTEN client
//! hears exactly one completion per execution (success, and error after the
//! retries ran out); a worker whose connection dies mid-step has its step
//! retried when the lease expires, and the workflow finishes; a schedule
//! trigger of the registry is fired by the scheduler until it is deleted.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use automation_ext_integration::{connect, drain};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn define(name: &str, definition: &str) {
    let mut c = connect();
    c.execute(
        "DELETE FROM automation_triggers.registry
          WHERE workflow_id IN (SELECT id FROM automation_workflows.definitions WHERE name = $1)",
        &[&name],
    )
    .unwrap();
    c.execute("DELETE FROM automation_workflows.definitions WHERE name = $1", &[&name]).unwrap();
    c.execute(
        "INSERT INTO automation_workflows.definitions (name, definition) VALUES ($1, $2::text::jsonb)",
        &[&name, &definition],
    )
    .unwrap();
}

fn statuses(workflow: &str) -> HashMap<String, i64> {
    let mut c = connect();
    c.query(
        "SELECT status, count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = $1 GROUP BY 1",
        &[&workflow],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[test]
fn eight_workers_finish_every_diamond_and_run_no_step_twice() {
    const WORKFLOWS: i64 = 200;
    define(
        "it-diamond",
        r#"{"steps": [{"name": "a", "queue": "it-diamond"},
                      {"name": "b", "after": ["a"], "queue": "it-diamond"},
                      {"name": "c", "after": ["a"], "queue": "it-diamond"},
                      {"name": "d", "after": ["b", "c"], "queue": "it-diamond"}]}"#,
    );
    let mut c = connect();
    c.execute(
        "SELECT count(automation.run_workflow('it-diamond', jsonb_build_object('n', n))) FROM generate_series(1, $1::bigint) n",
        &[&WORKFLOWS],
    )
    .unwrap();
    let start = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            thread::spawn(move || {
                let mut c = connect();
                let me = format!("w{w}");
                let mut idle_since = Instant::now();
                let mut done = 0;
                while idle_since.elapsed() < Duration::from_secs(2) && start.elapsed() < LIMIT {
                    let rows = c.query("SELECT id, step FROM automation.claim_steps('it-diamond', $1, 1)", &[&me]).unwrap();
                    if rows.is_empty() {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    idle_since = Instant::now();
                    for r in rows {
                        let (id, step): (i64, String) = (r.get(0), r.get(1));
                        c.execute(
                            "SELECT automation.complete_step($1, jsonb_build_object('by', $2::text, 'step', $3::text), $2)",
                            &[&id, &me, &step],
                        )
                        .unwrap();
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let steps: i64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(steps, WORKFLOWS * 4, "every step of every workflow was completed once");
    assert_eq!(statuses("it-diamond"), HashMap::from([("success".to_owned(), WORKFLOWS)]));
    // one run per step (no retry, no duplicate), and d got both outputs
    let (runs, per_step, joins): (i64, i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*),
                        max(n),
                        (SELECT count(*) FROM automation_workflows.step_runs s
                           JOIN automation_workflows.workflow_runs w USING (execution_id)
                          WHERE w.workflow_name = 'it-diamond' AND s.step = 'd'
                            AND s.input->'steps' ?& ARRAY['b', 'c'])
                   FROM (SELECT count(*) AS n FROM automation_workflows.step_runs s
                           JOIN automation_workflows.workflow_runs w USING (execution_id)
                          WHERE w.workflow_name = 'it-diamond' GROUP BY s.execution_id, s.step) x",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((runs, per_step, joins), (WORKFLOWS * 4, 1, WORKFLOWS));
}

#[test]
fn a_listener_hears_each_execution_end_once() {
    define(
        "it-notify",
        r#"{"steps": [{"name": "one", "queue": "it-notify", "retry": {"max_attempts": 3, "backoff": "1 ms"}},
                      {"name": "two", "after": ["one"], "queue": "it-notify"}]}"#,
    );
    let mut listener = connect();
    listener.batch_execute("LISTEN workflow_completed").unwrap();
    let mut c = connect();
    let ok: String = c.query_one("SELECT automation.run_workflow('it-notify', '{\"ok\": true}')::text", &[]).unwrap().get(0);
    let bad: String = c.query_one("SELECT automation.run_workflow('it-notify', '{\"ok\": false}')::text", &[]).unwrap().get(0);
    // the good one: two steps; the bad one: `one` fails three times
    let deadline = Instant::now() + LIMIT;
    loop {
        assert!(Instant::now() < deadline, "the workflows did not end");
        let rows = c.query("SELECT id, (input->'input'->>'ok')::boolean FROM automation.claim_steps('it-notify', 'w', 10)", &[]).unwrap();
        for r in &rows {
            let (id, ok): (i64, bool) = (r.get(0), r.get(1));
            if ok {
                c.execute("SELECT automation.complete_step($1)", &[&id]).unwrap();
            } else {
                c.execute("SELECT automation.fail_step($1, 'no good', true)", &[&id]).unwrap();
            }
        }
        let open: i64 = c
            .query_one(
                "SELECT count(*) FROM automation_workflows.workflow_executions
                  WHERE workflow_name = 'it-notify' AND status IN ('pending', 'running')",
                &[],
            )
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let heard: Vec<(String, String)> = drain(&mut listener, Duration::from_millis(1000), LIMIT)
        .into_iter()
        .map(|(_, p)| serde_json::from_str::<Value>(&p).unwrap())
        .filter(|v| v["workflow_name"] == "it-notify")
        .map(|v| (v["workflow_id"].as_str().unwrap().to_owned(), v["status"].as_str().unwrap().to_owned()))
        .collect();
    let mut want = vec![(ok, "success".to_owned()), (bad.clone(), "error".to_owned())];
    let mut heard_sorted = heard.clone();
    heard_sorted.sort();
    want.sort();
    assert_eq!(heard_sorted, want, "exactly one notification per execution: {heard:?}");
    let attempts: i64 = c
        .query_one("SELECT count(*) FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid", &[&bad])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3, "three attempts of one; two never started: {attempts}");
}

#[test]
fn a_step_whose_worker_died_is_retried_and_the_workflow_finishes() {
    define(
        "it-killed",
        r#"{"steps": [{"name": "work", "queue": "it-killed", "retry": {"max_attempts": 2, "backoff": "1 ms"}},
                      {"name": "after", "after": ["work"], "queue": "it-killed"}]}"#,
    );
    let mut c = connect();
    let id: String = c.query_one("SELECT automation.run_workflow('it-killed')::text", &[]).unwrap().get(0);
    // a worker claims with a short lease, and its backend is killed mid-step
    let mut doomed = connect();
    let pid: i32 = doomed.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let claimed = doomed.query("SELECT id FROM automation.claim_steps('it-killed', 'doomed', 1, '300 ms')", &[]).unwrap();
    assert_eq!(claimed.len(), 1);
    let killed: bool = c.query_one("SELECT pg_terminate_backend($1)", &[&pid]).unwrap().get(0);
    assert!(killed);
    assert!(doomed.query("SELECT 1", &[]).is_err(), "the worker's connection is gone");
    // nothing claimable until the lease expires; then the retry is
    let deadline = Instant::now() + LIMIT;
    let mut finished = false;
    while Instant::now() < deadline {
        for r in c.query("SELECT id FROM automation.claim_steps('it-killed', 'survivor', 10)", &[]).unwrap() {
            let step_id: i64 = r.get(0);
            c.execute("SELECT automation.complete_step($1, NULL, 'survivor')", &[&step_id]).unwrap();
        }
        let status: String = c
            .query_one("SELECT status FROM automation_workflows.workflow_executions WHERE id = $1::text::uuid", &[&id])
            .unwrap()
            .get(0);
        if status == "success" {
            finished = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(finished, "the workflow finished after the dead worker's lease expired");
    let runs: Vec<(String, i32, String, Option<String>)> = c
        .query(
            "SELECT step, attempt, status, worker FROM automation_workflows.step_runs
              WHERE execution_id = $1::text::uuid ORDER BY step, attempt",
            &[&id],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        runs,
        vec![
            ("after".into(), 1, "success".into(), Some("survivor".into())),
            ("work".into(), 1, "timeout".into(), Some("doomed".into())),
            ("work".into(), 2, "success".into(), Some("survivor".into())),
        ]
    );
}

#[test]
fn a_schedule_trigger_is_fired_by_the_scheduler_until_it_is_deleted() {
    define("it-scheduled", r#"{"steps": [{"name": "tick", "queue": "it-scheduled"}]}"#);
    let mut c = connect();
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM automation_workflows.workflow_runs
              WHERE workflow_name = 'it-scheduled' AND input->>'by' = 'scheduler'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = count(&mut c);
    let id: i32 = c
        .query_one(
            "INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
             SELECT 'schedule', '{\"cron\": \"1 second\", \"input\": {\"by\": \"scheduler\"}, \"overlap\": \"parallel\"}', id
               FROM automation_workflows.definitions WHERE name = 'it-scheduled'
             RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    c.batch_execute("SELECT automation.wake_scheduler()").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&mut c) < before + 2 {
        assert!(Instant::now() < deadline, "the scheduler did not fire the trigger twice in 30 s");
        thread::sleep(Duration::from_millis(100));
    }
    let (last, started_by): (bool, String) = {
        let r = c
            .query_one(
                "SELECT (SELECT last_fired_at IS NOT NULL FROM automation_triggers.registry WHERE id = $1),
                        (SELECT owner::text FROM automation_workflows.workflow_runs
                          WHERE workflow_name = 'it-scheduled' ORDER BY created_at DESC LIMIT 1)",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(last, "last_fired_at is kept current");
    // (0.8.0) each fire passes the time it was scheduled for, as the job run
    // records it, and the trigger's id
    let (fires, matching): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT count(*),
                        count(*) FILTER (WHERE EXISTS (
                            SELECT FROM automation.job_run_details d JOIN automation.job j USING (jobid)
                             WHERE j.jobname = 'workflow trigger ' || $1::int
                               AND d.scheduled_for = (w.input->'trigger'->>'scheduled_for')::timestamptz))
                   FROM automation_workflows.workflow_runs w
                  WHERE w.workflow_name = 'it-scheduled' AND w.trigger_id = $1::int
                    AND (w.input->'trigger'->>'id')::int = $1::int AND w.input->'trigger'->>'type' = 'schedule'",
                &[&id],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(fires >= 2, "the fires carry their trigger: {fires}");
    assert_eq!(matching, fires, "each fire's scheduled_for is its job run's scheduled_for");
    // (0.11.0) next_fire_at follows the job's grid: whole seconds after the
    // last fire's scheduled time (written in the same transaction as it)
    let ahead: f64 = c
        .query_one(
            "SELECT extract(epoch FROM r.next_fire_at - (SELECT max((w.input->'trigger'->>'scheduled_for')::timestamptz)
                                                           FROM automation_workflows.workflow_runs w
                                                          WHERE w.trigger_id = r.id))::float8
               FROM automation_triggers.registry r WHERE r.id = $1",
            &[&id],
        )
        .unwrap()
        .get(0);
    assert!(ahead >= 1.0 && (ahead - ahead.round()).abs() < 1e-6, "next_fire_at is {ahead} s after the last fire");
    let me: String = c.query_one("SELECT current_user::text", &[]).unwrap().get(0);
    assert_eq!(started_by, me, "the job runs as the role that registered the trigger");
    c.execute("DELETE FROM automation_triggers.registry WHERE id = $1", &[&id]).unwrap();
    // a run that was already starting may still land; then nothing more
    thread::sleep(Duration::from_millis(1500));
    let settled = count(&mut c);
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(count(&mut c), settled, "no more executions once the trigger is deleted");
}

/// A table trigger: the changing statement only appends to the trigger
/// inbox; the scheduler (nobody drains by hand here) starts one execution
/// per row after the commit, as the trigger's owner (0.8.0), noting who
/// made the change. The writer needs no grant on any of the extension's
/// schemas: only its privileges on the table.
#[test]
fn the_scheduler_starts_a_table_triggers_executions_as_its_owner() {
    let mut c = connect();
    define("it-inbox", r#"{"steps": [{"name": "ship", "queue": "it-inbox"}]}"#);
    c.batch_execute(
        "DROP ROLE IF EXISTS it_inbox_writer;
         CREATE ROLE it_inbox_writer LOGIN;
         CREATE TABLE public.it_inbox_orders (id int PRIMARY KEY, total numeric);
         GRANT SELECT, INSERT, DELETE ON public.it_inbox_orders TO it_inbox_writer;
         INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
         SELECT 'table', '{\"table\": \"public.it_inbox_orders\", \"events\": [\"INSERT\", \"DELETE\"]}', id
           FROM automation_workflows.definitions WHERE name = 'it-inbox';",
    )
    .unwrap();
    c.batch_execute(
        "SET ROLE it_inbox_writer;
         INSERT INTO public.it_inbox_orders SELECT g, g FROM generate_series(1, 25000) g;
         DELETE FROM public.it_inbox_orders WHERE id <= 10;
         RESET ROLE;",
    )
    .unwrap();
    let start = Instant::now();
    loop {
        let started: i64 = c
            .query_one("SELECT count(*) FROM automation_workflows.workflow_runs WHERE workflow_name = 'it-inbox'", &[])
            .unwrap()
            .get(0);
        if started == 25_010 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{started} of 25010 executions started");
        thread::sleep(Duration::from_millis(100));
    }
    let (left, by, ops, deleted_ids): (i64, Vec<String>, Vec<String>, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM automation_workflows.trigger_inbox),
                        array_agg(DISTINCT owner::text || ' for ' || (input->>'changed_by'))::text[],
                        array_agg(DISTINCT input->>'op'),
                        count(*) FILTER (WHERE input->>'op' = 'DELETE' AND (input->'old'->>'id')::int <= 10)
                   FROM automation_workflows.workflow_runs WHERE workflow_name = 'it-inbox'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2), r.get(3))
    };
    assert_eq!(left, 0, "the inbox is drained");
    let me: String = c.query_one("SELECT current_user::text", &[]).unwrap().get(0);
    assert_eq!(by, vec![format!("{me} for it_inbox_writer")], "started as the trigger's owner, for the writer");
    assert_eq!(ops, vec!["DELETE", "INSERT"]);
    assert_eq!(deleted_ids, 10);
    c.batch_execute(
        "DELETE FROM automation_triggers.registry r USING automation_workflows.definitions d
          WHERE d.id = r.workflow_id AND d.name = 'it-inbox';
         DROP TABLE public.it_inbox_orders;
         DROP ROLE it_inbox_writer;",
    )
    .unwrap();
}

/// (0.8.0) claim_steps(..., wait => ...) returns as soon as a step of its
/// queue is made (the commit wakes it), not at the end of the wait nor at
/// the next poll; and at the end of the wait when none comes.
#[test]
fn a_waiting_step_claim_returns_when_a_step_is_made() {
    define("it-wait-steps", r#"{"steps": [{"name": "s", "queue": "it-wait-steps"}]}"#);
    let mut latencies = Vec::new();
    for _ in 0..10 {
        let waiter = thread::spawn(|| {
            let mut c = connect();
            let t = Instant::now();
            let rows = c
                .query(
                    "SELECT (input->'input'->>'t')::timestamptz::text, clock_timestamp()::text
                       FROM automation.claim_steps('it-wait-steps', 'waiter', 1, wait => '20 s')",
                    &[],
                )
                .unwrap();
            (rows.len(), t.elapsed())
        });
        thread::sleep(Duration::from_millis(300));
        let mut c = connect();
        let started = Instant::now();
        c.execute("SELECT automation.run_workflow('it-wait-steps', jsonb_build_object('t', clock_timestamp()))", &[])
            .unwrap();
        let (claimed, waited) = waiter.join().unwrap();
        assert_eq!(claimed, 1, "the waiting claim got the step");
        assert!(waited < Duration::from_secs(10), "it returned when the step was made, not after its 20 s wait");
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    println!(
        "run_workflow to a waiting claim_steps returning: p50 {:.1} ms, max {:.1} ms (10 tries, including the starting commit)",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
    // nothing comes: the wait ends
    let mut c = connect();
    let t = Instant::now();
    let n = c
        .query("SELECT 1 FROM automation.claim_steps('it-wait-nothing', 'waiter', 1, wait => '300 ms')", &[])
        .unwrap()
        .len();
    assert_eq!(n, 0);
    assert!(t.elapsed() >= Duration::from_millis(290), "it waited its wait");
}
