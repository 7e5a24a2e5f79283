//! Index rebuilds by the background worker: REINDEX INDEX CONCURRENTLY at top
//! level once the calling transaction commits, outcomes in the queue and the
//! audit log, and no invalid index left behind by a rebuild that failed.

use std::time::Duration;

use automation_ext_integration::{connect, wait_for, Client};

const LIMIT: Duration = Duration::from_secs(60);

fn bloated_table(c: &mut Client, schema: &str) {
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;
         CREATE SCHEMA \"{schema}\";
         CREATE TABLE \"{schema}\".t (id int, pad text);
         INSERT INTO \"{schema}\".t SELECT g, 'x' FROM generate_series(1, 300000) g;
         CREATE INDEX \"t id\" ON \"{schema}\".t (id);
         DELETE FROM \"{schema}\".t WHERE id % 10 <> 0;"
    ))
    .unwrap();
    c.batch_execute(&format!("VACUUM ANALYZE \"{schema}\".t")).unwrap();
}

fn one<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn a_bloated_index_is_rebuilt_concurrently_to_a_fraction_of_its_size() {
    let mut c = connect();
    bloated_table(&mut c, "it_maint_ok");
    let before: i64 = one(&mut c, "SELECT pg_relation_size('it_maint_ok.\"t id\"')");
    // nothing happens before the caller commits
    c.batch_execute("BEGIN").unwrap();
    let action: String =
        one(&mut c, "SELECT action_taken FROM automation.maintain_indexes('it_maint_ok', min_size_bytes => 0)");
    assert_eq!(action, "reindex scheduled");
    std::thread::sleep(Duration::from_millis(500));
    let early: i64 = one(&mut c, "SELECT count(*) FROM automation.index_maintenance_queue WHERE index_name = 'it_maint_ok.\"t id\"' AND status <> 'queued'");
    assert_eq!(early, 0, "the worker did not wait for the commit");
    c.batch_execute("COMMIT").unwrap();
    wait_for(
        &mut c,
        "SELECT count(*) > 0 FROM automation.index_maintenance_queue WHERE index_name = 'it_maint_ok.\"t id\"' AND status = 'done'",
        LIMIT,
        "the rebuild",
    );
    let after: i64 = one(&mut c, "SELECT pg_relation_size('it_maint_ok.\"t id\"')");
    assert!(after * 5 < before, "{before} -> {after}");
    let valid: bool =
        one(&mut c, "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'it_maint_ok.t'::regclass");
    assert!(valid);
    let audited: bool = one(
        &mut c,
        "SELECT (details->>'size_after')::bigint * 5 < (details->>'size_before')::bigint AND (details->>'concurrently')::boolean
           FROM automation_audit.log WHERE operation = 'REINDEX' AND table_schema = 'it_maint_ok' ORDER BY id DESC LIMIT 1",
    );
    assert!(audited);
    c.batch_execute("DROP SCHEMA it_maint_ok CASCADE").unwrap();
}

#[test]
fn a_rolled_back_request_does_nothing() {
    let mut c = connect();
    bloated_table(&mut c, "it_maint_rollback");
    c.batch_execute("BEGIN").unwrap();
    c.batch_execute("SELECT * FROM automation.maintain_indexes('it_maint_rollback', min_size_bytes => 0)").unwrap();
    c.batch_execute("ROLLBACK").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let n: i64 = one(&mut c, "SELECT count(*) FROM automation_audit.log WHERE table_schema = 'it_maint_rollback'");
    assert_eq!(n, 0);
    c.batch_execute("DROP SCHEMA it_maint_rollback CASCADE").unwrap();
}

#[test]
fn a_failed_rebuild_leaves_no_invalid_index_behind() {
    let mut c = connect();
    bloated_table(&mut c, "it_maint_fail");
    // an old snapshot: REINDEX CONCURRENTLY waits for it after building the
    // new copy, and gives up at the lock timeout
    let mut blocker = connect();
    blocker.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM it_maint_fail.t").unwrap();
    c.batch_execute(
        "SELECT * FROM automation.maintain_indexes('it_maint_fail', min_size_bytes => 0, lock_timeout => '1s')",
    )
    .unwrap();
    wait_for(
        &mut c,
        "SELECT count(*) > 0 FROM automation.index_maintenance_queue WHERE index_name = 'it_maint_fail.\"t id\"' AND status = 'failed'",
        LIMIT,
        "the rebuild to fail",
    );
    let error: String = one(
        &mut c,
        "SELECT error FROM automation.index_maintenance_queue WHERE index_name = 'it_maint_fail.\"t id\"' AND status = 'failed' LIMIT 1",
    );
    assert!(error.contains("lock timeout"), "{error}");
    let failed_audit: i64 = one(&mut c, "SELECT count(*) FROM automation_audit.log WHERE operation = 'REINDEX FAILED' AND table_schema = 'it_maint_fail'");
    assert_eq!(failed_audit, 1);
    blocker.batch_execute("COMMIT").unwrap();
    // whatever the failed rebuild left is dropped by the next run (the
    // worker tries at once, but the old snapshot may still be in its way)
    c.batch_execute("SELECT * FROM automation.maintain_indexes('it_maint_fail', min_size_bytes => 0)").unwrap();
    wait_for(
        &mut c,
        "SELECT NOT EXISTS (SELECT FROM pg_index WHERE indrelid = 'it_maint_fail.t'::regclass AND NOT indisvalid)
            AND NOT EXISTS (SELECT FROM automation.index_maintenance_queue WHERE index_name LIKE 'it_maint_fail.%' AND status = 'queued')",
        LIMIT,
        "no invalid index left",
    );
    let indexes: i64 = one(&mut c, "SELECT count(*) FROM pg_index WHERE indrelid = 'it_maint_fail.t'::regclass");
    assert_eq!(indexes, 1, "the table should have exactly its one index");
    c.batch_execute("DROP SCHEMA it_maint_fail CASCADE").unwrap();
}
