//! The workflow runtime driven by several real sessions at once.

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use automation_ext_integration::{connect, wait_for};

fn ids(client: &mut postgres::Client, sql: &str) -> Vec<String> {
    client.query(sql, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect()
}

#[test]
fn concurrent_claimers_never_get_the_same_execution() {
    let mut setup = connect();
    setup
        .batch_execute(
            "SELECT automation.enqueue_execution('it_claim', jsonb_build_object('n', n)) FROM generate_series(1, 10) n",
        )
        .unwrap();
    let mut a = connect();
    let mut b = connect();
    // a holds its claim open; b must skip a's rows, not wait for them
    a.batch_execute("BEGIN").unwrap();
    let got_a = ids(&mut a, "SELECT id::text FROM automation.claim_executions('it_claim', 'a', 6)");
    let got_b = ids(&mut b, "SELECT id::text FROM automation.claim_executions('it_claim', 'b', 6)");
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(got_a.len(), 6);
    assert_eq!(got_b.len(), 4, "b should get exactly the 4 rows a did not lock");
    let all: HashSet<_> = got_a.iter().chain(&got_b).collect();
    assert_eq!(all.len(), 10, "an execution was claimed twice");
}

#[test]
fn four_workers_drain_a_queue_each_execution_exactly_once() {
    const N: i64 = 2000;
    let mut setup = connect();
    setup
        .batch_execute(&format!(
            "SELECT automation.enqueue_execution('it_drain', jsonb_build_object('n', n)) FROM generate_series(1, {N}) n"
        ))
        .unwrap();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            thread::spawn(move || {
                let mut c = connect();
                let mut done = 0;
                loop {
                    let claimed = ids(
                        &mut c,
                        &format!("SELECT id::text FROM automation.claim_executions('it_drain', 'w{w}', 7)"),
                    );
                    if claimed.is_empty() {
                        break done;
                    }
                    for id in claimed {
                        c.execute(
                            "SELECT automation.complete_execution($1::text::uuid, NULL, $2)",
                            &[&id, &format!("w{w}")],
                        )
                        .unwrap();
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let done: i64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(done, N);
    // the scheduler records them in the history within milliseconds
    wait_for(
        &mut setup,
        "SELECT NOT EXISTS (SELECT FROM automation_workflows.execution_log WHERE workflow_name = 'it_drain')",
        Duration::from_secs(20),
        "the finished executions recorded",
    );
    let row = setup
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'success'), max(attempts), count(DISTINCT claimed_by)
               FROM automation_workflows.workflow_executions WHERE workflow_name = 'it_drain'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), N, "every execution completed");
    assert_eq!(row.get::<_, i32>(1), 1, "some execution was claimed more than once");
    assert!(row.get::<_, i64>(2) >= 2, "the work was not shared between workers");
}

#[test]
fn a_lease_that_really_expires_passes_the_work_on() {
    let mut setup = connect();
    let id: String = setup.query_one("SELECT automation.enqueue_execution('it_lease')::text", &[]).unwrap().get(0);
    let mut slow = connect();
    let mut other = connect();
    let first = ids(&mut slow, "SELECT id::text FROM automation.claim_executions('it_lease', 'slow', 1, '1 second')");
    assert_eq!(first, vec![id.clone()]);
    assert!(ids(&mut other, "SELECT id::text FROM automation.claim_executions('it_lease', 'other', 1)").is_empty());
    thread::sleep(Duration::from_millis(1500));
    let second = ids(&mut other, "SELECT id::text FROM automation.claim_executions('it_lease', 'other', 1)");
    assert_eq!(second, vec![id.clone()]);
    let late = slow.execute("SELECT automation.complete_execution($1::text::uuid, NULL, 'slow')", &[&id]);
    let err = late.expect_err("the slow worker completed work it no longer holds");
    assert_eq!(err.code(), Some(&postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE));
    other.execute("SELECT automation.complete_execution($1::text::uuid, NULL, 'other')", &[&id]).unwrap();
}

#[test]
fn a_retry_waits_for_its_real_backoff() {
    let mut c = connect();
    // first retry after 100-200 ms (equal jitter over 200 ms)
    c.batch_execute("SET automation.retry_base_delay = 200").unwrap();
    let id: String = c.query_one("SELECT automation.start_execution('it_backoff')::text", &[]).unwrap().get(0);
    c.execute("SELECT automation.fail_execution($1::text::uuid, 'E', 'boom')", &[&id]).unwrap();
    let early: bool = c.query_one("SELECT automation.retry_failed_workflow('it_backoff')", &[]).unwrap().get(0);
    assert!(!early, "retried before its backoff");
    thread::sleep(Duration::from_millis(300));
    let later: bool = c.query_one("SELECT automation.retry_failed_workflow('it_backoff')", &[]).unwrap().get(0);
    assert!(later, "not retried after its backoff");
}
