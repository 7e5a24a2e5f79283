//! The execution queue (0.4.0) from outside: the scheduler records finished
//! executions and a real LISTEN client gets their completion; a waiting claim
//! returns when another session's enqueue commits; sixteen workers with
//! priorities and per-key limits claim every execution exactly once without
//! ever exceeding a limit, in every history mode.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use automation_ext_integration::{connect, drain, wait_for};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// One test at a time: a busy cluster sets idle backends' latches now and
/// then (shared-invalidation catch-up signals), which would wake a waiting
/// claim without an enqueue and hide a broken wake-up.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn the_scheduler_records_queue_completions_and_a_listener_is_notified() {
    let _serial = serial();
    let mut listener = connect();
    // the scheduler notifies on the trigger's channel (automation.notify_channel
    // as the server has it): the default
    listener.batch_execute("LISTEN workflow_completed").unwrap();
    let mut worker = connect();
    let ids: Vec<String> = worker
        .query(
            "SELECT automation.enqueue_execution('it-recorded', jsonb_build_object('n', n))::text
               FROM generate_series(1, 3) n",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let claimed: Vec<String> = worker
        .query("SELECT id::text FROM automation.claim_executions('it-recorded', 'w', 10)", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(claimed.len(), 3);
    worker
        .execute(
            "SELECT automation.complete_executions(ARRAY[$1::text, $2::text]::uuid[], NULL, 'w')",
            &[&claimed[0], &claimed[1]],
        )
        .unwrap();
    worker
        .execute("SELECT automation.fail_execution($1::text::uuid, 'E', 'broke', NULL, 'w')", &[&claimed[2]])
        .unwrap();
    let got: Vec<Value> = drain(&mut listener, Duration::from_millis(1500), LIMIT)
        .into_iter()
        .map(|(_, p)| serde_json::from_str::<Value>(&p).unwrap())
        .filter(|v| v["workflow_name"] == "it-recorded")
        .collect();
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|v| (v["workflow_id"].as_str().unwrap().to_owned(), v["status"].as_str().unwrap().to_owned()))
        .collect();
    seen.sort();
    let mut want: Vec<(String, String)> = vec![
        (claimed[0].clone(), "success".into()),
        (claimed[1].clone(), "success".into()),
        (claimed[2].clone(), "error".into()),
    ];
    want.sort();
    assert_eq!(seen, want, "one notification per finished execution, from the recorder");
    assert!(got.iter().all(|v| v["duration"].as_f64().is_some_and(|d| d >= 0.0)), "{got:?}");
    // and they are in the history, not in the queue or the log
    let (history, queue, log): (i64, i64, i64) = {
        let r = worker
            .query_one(
                "SELECT (SELECT count(*) FROM automation_workflows.workflow_executions WHERE id::text = ANY ($1)),
                        (SELECT count(*) FROM automation_workflows.execution_queue WHERE id::text = ANY ($1)),
                        (SELECT count(*) FROM automation_workflows.execution_log WHERE id::text = ANY ($1))",
                &[&ids],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((history, queue, log), (3, 0, 0));
}

#[test]
fn executions_left_in_the_log_are_recorded_when_a_scheduler_starts() {
    let _serial = serial();
    // as after a crash between a completion's commit and its recording
    let mut c = connect();
    c.batch_execute(
        "INSERT INTO automation_workflows.execution_log (id, workflow_name, status, started_at, completed_at, attempts)
         VALUES ('00000000-0000-7000-8000-00000000001f', 'it-left', 'success', now() - interval '1 s', now(), 1);
         SELECT automation.wake_scheduler();",
    )
    .unwrap();
    wait_for(
        &mut c,
        "SELECT EXISTS (SELECT FROM automation_workflows.workflow_executions
                         WHERE id = '00000000-0000-7000-8000-00000000001f' AND status = 'success')",
        LIMIT,
        "the execution left in the log was recorded",
    );
}

#[test]
fn a_waiting_claim_returns_when_an_enqueue_commits() {
    let _serial = serial();
    let mut waiter = connect();
    let started = Instant::now();
    let handle = thread::spawn(move || {
        let rows = waiter
            .query("SELECT metadata->>'n' FROM automation.claim_executions('it-wait', 'w', 1, wait => '30 s')", &[])
            .unwrap();
        (rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>(), Instant::now())
    });
    thread::sleep(Duration::from_millis(500));
    let mut producer = connect();
    // an uncommitted enqueue wakes nobody; the commit does
    producer.batch_execute("BEGIN; SELECT automation.enqueue_execution('it-wait', '{\"n\": \"1\"}')").unwrap();
    thread::sleep(Duration::from_millis(300));
    assert!(!handle.is_finished(), "the claim returned before the enqueue committed");
    let committed = Instant::now();
    producer.batch_execute("COMMIT").unwrap();
    let (got, returned) = handle.join().unwrap();
    assert_eq!(got, vec!["1".to_string()]);
    eprintln!("waiting claim returned {:?} after the enqueue committed", returned.duration_since(committed));
    // well before the 30 s wait ran out (the figures are in bench/claim_latency.sh)
    assert!(returned.duration_since(committed) < Duration::from_secs(5), "{:?}", returned - committed);
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// In every history mode (issue 33: the concurrency tests hold in each).
#[test]
fn sixteen_workers_claim_each_execution_once_in_priority_order_within_key_limits() {
    let _serial = serial();
    for mode in ["full", "errors", "none"] {
        sixteen_workers(mode);
    }
}

fn sixteen_workers(mode: &str) {
    const N: i64 = 1600;
    const KEY_LIMIT: i64 = 2;
    let name = format!("it-16-{mode}");
    let mut c = connect();
    c.batch_execute(&format!(
        "DELETE FROM automation_workflows.definitions WHERE name = '{name}';
         DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = '{name}';
         DELETE FROM automation.execution_stats WHERE workflow_name = '{name}';
         INSERT INTO automation_workflows.definitions (name, definition) VALUES ('{name}', '{{}}');
         SELECT automation.set_queue_history('{name}', '{mode}');"
    ))
    .unwrap();
    // ten customers with a limit of two each, a quarter unkeyed; priorities 0-3
    c.execute(
        "SELECT count(automation.enqueue_execution($3, jsonb_build_object('n', n), now(), priority => n % 4,
                        concurrency_key => CASE WHEN n % 4 <> 0 THEN 'customer-' || (n % 10) END,
                        concurrency_limit => CASE WHEN n % 4 <> 0 THEN $1::int END))
           FROM generate_series(1, $2::int) n",
        &[&(KEY_LIMIT as i32), &(N as i32), &name],
    )
    .unwrap();
    let running: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let claimed: Arc<Mutex<Vec<String>>> = Arc::default();
    let worst: Arc<Mutex<i64>> = Arc::default();
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (running, claimed, worst) = (running.clone(), claimed.clone(), worst.clone());
            let name = name.clone();
            thread::spawn(move || {
                let mut s = connect();
                let me = format!("w{w}");
                let mut idle = 0;
                while idle < 20 {
                    let rows = s
                        .query(
                            "SELECT id::text, (metadata->>'n')::int FROM automation.claim_executions($2, $1, 3)",
                            &[&me, &name],
                        )
                        .unwrap();
                    if rows.is_empty() {
                        idle += 1;
                        thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    idle = 0;
                    let mut keys = Vec::new();
                    for r in &rows {
                        let n: i32 = r.get(1);
                        let key = (n % 4 != 0).then(|| format!("customer-{}", n % 10));
                        claimed.lock().unwrap().push(r.get(0));
                        if let Some(k) = key {
                            // claims commit before we count, completions after
                            // we uncount: what we count never exceeds what
                            // the database has running
                            let mut m = running.lock().unwrap();
                            let n = m.entry(k.clone()).or_default();
                            *n += 1;
                            let mut w = worst.lock().unwrap();
                            *w = (*w).max(*n);
                            keys.push(k);
                        }
                    }
                    thread::sleep(Duration::from_millis(2));
                    for k in keys {
                        *running.lock().unwrap().get_mut(&k).unwrap() -= 1;
                    }
                    let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                    s.execute("SELECT automation.complete_executions($1::text[]::uuid[], NULL, $2)", &[&ids, &me])
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let claimed = claimed.lock().unwrap();
    let distinct: HashSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len() as i64, N, "{mode}: every execution claimed");
    assert_eq!(distinct.len() as i64, N, "{mode}: none claimed twice");
    let worst = *worst.lock().unwrap();
    assert!(worst <= KEY_LIMIT, "{mode}: a customer had {worst} running at once (limit {KEY_LIMIT})");
    assert!(worst >= 1);
    wait_for(
        &mut c,
        &format!("SELECT NOT EXISTS (SELECT FROM automation_workflows.execution_log WHERE workflow_name = '{name}')"),
        LIMIT,
        "recorded",
    );
    // every success counted once in every mode; the history keeps them
    // (each of its first attempt) in full only
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM automation_workflows.workflow_executions
                      WHERE workflow_name = $1 AND status = 'success' AND attempts = 1),
                    (SELECT coalesce(sum(finished), 0)::bigint FROM automation.execution_stats
                      WHERE workflow_name = $1 AND status = 'success'),
                    (SELECT count(*) FROM automation.executions WHERE workflow_name = $1 AND status IN ('pending', 'running'))",
            &[&name],
        )
        .unwrap();
    let got: Vec<i64> = (0..3).map(|i| row.get::<_, i64>(i)).collect();
    let kept = if mode == "full" { N } else { 0 };
    assert_eq!(got, vec![kept, N, 0], "{mode}: kept, counted, left");
    c.batch_execute(&format!(
        "DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = '{name}';
         DELETE FROM automation_workflows.definitions WHERE name = '{name}';"
    ))
    .unwrap();
}

#[test]
fn claims_follow_priority_across_concurrent_claimers() {
    let _serial = serial();
    let mut c = connect();
    c.execute(
        "SELECT count(automation.enqueue_execution('it-prio', jsonb_build_object('p', n % 3), now(), priority => n % 3))
           FROM generate_series(1, 300) n",
        &[],
    )
    .unwrap();
    // the first hundred claimed by four claimers at once are the priority-2 ones
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let got = got.clone();
            thread::spawn(move || {
                let mut s = connect();
                for _ in 0..5 {
                    for r in s
                        .query(
                            "SELECT metadata->>'p' FROM automation.claim_executions('it-prio', $1, 5)",
                            &[&format!("p{w}")],
                        )
                        .unwrap()
                    {
                        got.lock().unwrap().push(r.get(0));
                    }
                }
            })
        })
        .collect();
    for t in claimers {
        t.join().unwrap();
    }
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 100);
    assert!(got.iter().all(|p| p == "2"), "{got:?}");
}

/// Issue 33: the scheduler keeps its recording's plans from one recording to
/// the next; when a DBA changes the log's shape under a running scheduler
/// (a column added, then dropped) and indexes the history, it goes on
/// recording every completion, with plans made again.
#[test]
fn a_running_scheduler_records_through_changes_to_the_log_and_the_history() {
    let _serial = serial();
    let mut c = connect();
    let round = |c: &mut automation_ext_integration::Client, n: i64| {
        c.batch_execute(&format!(
            "SELECT automation.enqueue_execution('it-altered', jsonb_build_object('round', {n})) FROM generate_series(1, 10);
             SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('it-altered', 'w', 10)));"
        ))
        .unwrap();
        wait_for(
            c,
            &format!(
                "SELECT (SELECT count(*) FROM automation_workflows.workflow_executions
                          WHERE workflow_name = 'it-altered' AND metadata->>'round' = '{n}') = 10"
            ),
            Duration::from_secs(20),
            &format!("round {n} recorded"),
        );
    };
    c.batch_execute("DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = 'it-altered'").unwrap();
    round(&mut c, 1);
    let scheduler = |c: &mut automation_ext_integration::Client| -> i32 {
        c.query_one(
            "SELECT coalesce(max(pid), 0) FROM pg_stat_activity
              WHERE backend_type = 'automation_ext scheduler' AND datname = current_database()",
            &[],
        )
        .unwrap()
        .get(0)
    };
    let before = scheduler(&mut c);
    c.batch_execute("ALTER TABLE automation_workflows.execution_log ADD COLUMN it_note text DEFAULT 'x'").unwrap();
    round(&mut c, 2);
    c.batch_execute(
        "ALTER TABLE automation_workflows.execution_log DROP COLUMN it_note;
         CREATE INDEX it_altered ON automation_workflows.workflow_executions (completed_at)",
    )
    .unwrap();
    round(&mut c, 3);
    c.batch_execute("DROP INDEX automation_workflows.it_altered").unwrap();
    // the same scheduler, with plans made before the changes, recorded them
    assert_ne!(before, 0);
    assert_eq!(scheduler(&mut c), before, "the scheduler restarted: the test proves nothing");
    let left: i64 = c
        .query_one("SELECT count(*) FROM automation_workflows.execution_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// Each round's completions are recorded too (issue 33: the recording's
/// plans are kept per process; DROP EXTENSION ends the database's scheduler,
/// and the next one makes them for the new extension's tables).
#[test]
fn drop_extension_succeeds_while_the_scheduler_is_recording() {
    let _serial = serial();
    use automation_ext_integration::{conninfo_for, Client, NoTls};
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    admin.batch_execute("DROP DATABASE IF EXISTS automation_it_drop WITH (FORCE)").unwrap();
    admin.batch_execute("CREATE DATABASE automation_it_drop").unwrap();
    for round in 0..3 {
        let mut c = Client::connect(&conninfo_for("automation_it_drop"), NoTls).unwrap();
        c.batch_execute("CREATE EXTENSION automation_ext").unwrap();
        // a worker completing executions one by one: the scheduler records all the time
        let busy = thread::spawn(move || {
            let mut w = Client::connect(&conninfo_for("automation_it_drop"), NoTls).unwrap();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(3) {
                let r = w.batch_execute(
                    "SELECT automation.complete_executions(ARRAY(
                         SELECT id FROM automation.claim_executions('it-drop', 'w', 5)));
                     SELECT count(automation.enqueue_execution('it-drop')) FROM generate_series(1, 5);",
                );
                if r.is_err() {
                    break; // the extension is gone
                }
            }
        });
        thread::sleep(Duration::from_millis(1000 + 300 * round));
        wait_for(
            &mut c,
            "SELECT (SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'it-drop') > 0",
            Duration::from_secs(20),
            &format!("round {round}: the scheduler recorded completions"),
        );
        let dropped = c.batch_execute("DROP EXTENSION automation_ext CASCADE");
        busy.join().unwrap();
        assert!(dropped.is_ok(), "round {round}: DROP EXTENSION failed: {dropped:?}");
    }
    admin.batch_execute("DROP DATABASE automation_it_drop WITH (FORCE)").unwrap();
}

/// Issue 33: in each history mode, four workers drain a queue (one in ten
/// executions fails) while the real scheduler records: every execution is
/// claimed once, a LISTEN client hears each completion exactly once, the
/// history keeps what the mode says, and the counters count every one.
#[test]
fn every_history_mode_notifies_and_counts_every_completion_and_keeps_what_it_says() {
    const N: i64 = 300;
    let _serial = serial();
    for mode in ["full", "errors", "none"] {
        let name = format!("it-history-{mode}");
        let mut setup = connect();
        setup
            .batch_execute(&format!(
                "DELETE FROM automation_workflows.definitions WHERE name = '{name}';
                 DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = '{name}';
                 DELETE FROM automation.execution_stats WHERE workflow_name = '{name}';
                 INSERT INTO automation_workflows.definitions (name, definition) VALUES ('{name}', '{{}}');
                 SELECT automation.set_queue_history('{name}', '{mode}');
                 SELECT automation.enqueue_execution('{name}', jsonb_build_object('n', n)) FROM generate_series(1, {N}) n;"
            ))
            .unwrap();
        let mut listener = connect();
        listener.batch_execute("LISTEN workflow_completed").unwrap();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let name = name.clone();
                thread::spawn(move || {
                    let mut c = connect();
                    let mut mine = Vec::new();
                    loop {
                        let claimed: Vec<(String, i32)> = c
                            .query(
                                "SELECT id::text, (metadata->>'n')::int FROM automation.claim_executions($1, $2, 5)",
                                &[&name, &format!("w{w}")],
                            )
                            .unwrap()
                            .iter()
                            .map(|r| (r.get(0), r.get(1)))
                            .collect();
                        if claimed.is_empty() {
                            break mine;
                        }
                        let (fail, ok): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|(_, n)| n % 10 == 0);
                        let ok_ids: Vec<String> = ok.iter().map(|(id, _)| id.clone()).collect();
                        c.execute("SELECT automation.complete_executions($1::text[]::uuid[], NULL, $2)", &[
                            &ok_ids,
                            &format!("w{w}"),
                        ])
                        .unwrap();
                        for (id, _) in &fail {
                            c.execute("SELECT automation.fail_execution($1::text::uuid, 'E', 'broke', NULL, $2)", &[
                                id,
                                &format!("w{w}"),
                            ])
                            .unwrap();
                        }
                        mine.extend(ok.into_iter().map(|(id, _)| (id, "success")));
                        mine.extend(fail.into_iter().map(|(id, _)| (id, "error")));
                    }
                })
            })
            .collect();
        let mut done: Vec<(String, &str)> = workers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        done.sort();
        let claimed_once: HashSet<&String> = done.iter().map(|(id, _)| id).collect();
        assert_eq!((done.len() as i64, claimed_once.len() as i64), (N, N), "{mode}: each execution claimed once");
        let mut heard: Vec<(String, String)> = drain(&mut listener, Duration::from_millis(1500), LIMIT)
            .into_iter()
            .map(|(_, p)| serde_json::from_str::<Value>(&p).unwrap())
            .filter(|v| v["workflow_name"] == name.as_str())
            .map(|v| (v["workflow_id"].as_str().unwrap().to_owned(), v["status"].as_str().unwrap().to_owned()))
            .collect();
        heard.sort();
        let want: Vec<(String, String)> = done.iter().map(|(id, s)| (id.clone(), s.to_string())).collect();
        assert_eq!(heard, want, "{mode}: one completion NOTIFY per finished execution");
        wait_for(
            &mut setup,
            &format!("SELECT NOT EXISTS (SELECT FROM automation_workflows.execution_log WHERE workflow_name = '{name}')"),
            LIMIT,
            "recorded",
        );
        let row = setup
            .query_one(
                "SELECT (SELECT count(*) FILTER (WHERE status = 'success') FROM automation_workflows.workflow_executions WHERE workflow_name = $1),
                        (SELECT count(*) FILTER (WHERE status = 'error') FROM automation_workflows.workflow_executions WHERE workflow_name = $1),
                        (SELECT coalesce(sum(finished) FILTER (WHERE status = 'success'), 0)::bigint FROM automation.execution_stats WHERE workflow_name = $1),
                        (SELECT coalesce(sum(finished) FILTER (WHERE status = 'error'), 0)::bigint FROM automation.execution_stats WHERE workflow_name = $1),
                        (SELECT count(*) FROM automation.errors WHERE workflow_name = $1 AND retry_input IS NOT NULL),
                        (SELECT count(*) FROM automation_workflows.execution_queue WHERE workflow_name = $1)",
                &[&name],
            )
            .unwrap();
        let got: Vec<i64> = (0..6).map(|i| row.get::<_, i64>(i)).collect();
        let (ok, failed) = (N - N / 10, N / 10);
        let kept = match mode {
            "full" => (ok, failed),
            "errors" => (0, failed),
            _ => (0, 0),
        };
        assert_eq!(got, vec![kept.0, kept.1, ok, failed, failed, 0], "{mode}: kept, counted, errors, queue");
        setup
            .batch_execute(&format!(
                "DELETE FROM automation.errors WHERE workflow_name = '{name}';
                 DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = '{name}';
                 DELETE FROM automation_workflows.definitions WHERE name = '{name}';"
            ))
            .unwrap();
    }
}

/// (0.13.0) A recording reads only the blocks of the execution log that the
/// completing transactions say they wrote to, not the whole log. After
/// VACUUM the log's early pages are free again, and completions' rows go
/// there, below the pages of rows that recordings removed: they are recorded
/// at once all the same (a recorder that read on from where it last stopped
/// would leave them until its next whole read of the log, half a minute
/// later).
#[test]
fn completions_logged_in_freed_pages_early_in_the_log_are_recorded_at_once() {
    const BURST: i64 = 4000;
    let _serial = serial();
    // a database of its own: a log that only this test wrote to
    let (mut admin, mut c) = automation_ext_integration::fresh_database("it_log_pages");
    c.batch_execute(&format!(
        "SELECT automation.enqueue_execution('it-log-pages', jsonb_build_object('n', n, 'pad', repeat('x', 300)))
           FROM generate_series(1, {BURST}) n;
         SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('it-log-pages', 'w', {BURST})), NULL, 'w');"
    ))
    .unwrap();
    let count = "(SELECT count(*) FROM automation_workflows.workflow_executions WHERE workflow_name = 'it-log-pages')";
    wait_for(&mut c, &format!("SELECT {count} = {BURST}"), LIMIT, "the burst was recorded");
    c.batch_execute("VACUUM automation_workflows.execution_log").unwrap();
    let pages: i64 = c
        .query_one("SELECT pg_relation_size('automation_workflows.execution_log') / current_setting('block_size')::bigint", &[])
        .unwrap()
        .get(0);
    // completions one at a time, each from a session of its own (no cached
    // target page: the free space map places its row), each waited for,
    // until one was logged in the first half of the log (the free space map
    // hands out its pages in turn: within `pages` completions)
    let mut blocks = Vec::new();
    for k in 0..pages {
        let mut worker = automation_ext_integration::connect_retrying(
            &automation_ext_integration::conninfo_for("it_log_pages"),
            LIMIT,
        );
        worker
            .execute("SELECT automation.enqueue_execution('it-log-pages', jsonb_build_object('k', $1::bigint))", &[&k])
            .unwrap();
        let mut tx = worker.transaction().unwrap();
        tx.execute(
            "SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('it-log-pages', $1, 1)), NULL, $1)",
            &[&format!("w{k}")],
        )
        .unwrap();
        let block: f64 = tx
            .query_one(
                "SELECT (ctid::text::point)[0] FROM automation_workflows.execution_log WHERE workflow_name = 'it-log-pages'",
                &[],
            )
            .unwrap()
            .get(0);
        tx.commit().unwrap();
        wait_for(
            &mut c,
            &format!("SELECT {count} = {}", BURST + k + 1),
            Duration::from_secs(10),
            &format!("completion {k}, logged in block {block} of {pages}, was recorded"),
        );
        blocks.push(block as i64);
        if (block as i64) < pages / 2 {
            break;
        }
    }
    // what the test is about: a row went below the removed ones
    assert!(
        blocks.iter().any(|&b| b < pages / 2),
        "no completion was logged in the first half of the {pages} pages: {blocks:?}"
    );
    drop(c);
    admin.batch_execute("DROP DATABASE it_log_pages WITH (FORCE)").unwrap();
}
