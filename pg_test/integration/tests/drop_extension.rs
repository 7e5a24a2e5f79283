//! DROP EXTENSION automation_ext while the extension's tables are in use.
//!
//! Seen in CI (PostgreSQL 18, the upgrade regression test, stop 38): the
//! extension's own minute job `SELECT count(*) FROM
//! automation.timeout_stale_executions()`, run by a job worker, locked one
//! of the engine's tables and then wanted another that DROP EXTENSION had
//! already taken; the DROP, waiting for the first, was the one the deadlock
//! detector cancelled ("deadlock detected"). A DBA's DROP EXTENSION must not
//! fail because the extension's work (or an application) uses its tables:
//! it waits for them, as for any lock, and then drops.
//!
//! Here sessions call the engine's functions in a loop, in a database of
//! its own, while the extension is created and dropped again and again;
//! every DROP must succeed. At the end, DROP DATABASE ... WITH (FORCE) must
//! succeed too: a scheduler that was waiting for the (dropped) extension
//! lost the SIGTERM that asks it to leave, stayed connected, and the DROP
//! DATABASE failed (2 of 3 runs before the fix).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use automation_ext_integration::{conninfo_for, Client, NoTls};

const DB: &str = "automation_it_drop_ext";
const ROUNDS: usize = 40;

fn connect() -> Client {
    Client::connect(&conninfo_for(DB), NoTls).unwrap_or_else(|e| panic!("connect to {DB}: {e}"))
}

/// DROP DATABASE ... WITH (FORCE), saying who was still connected if it fails.
fn drop_database(admin: &mut Client, name: &str) {
    if let Err(e) = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")) {
        let who: Vec<String> = admin
            .query(
                "SELECT format('%s %s %s %s wait %s/%s since %s xact %s: %s', pid, backend_type, usename, state,
                               wait_event_type, wait_event, backend_start, xact_start, query)
                   FROM pg_stat_activity WHERE datname = $1",
                &[&name],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        panic!("DROP DATABASE {name}: {e}; still connected: {who:#?}");
    }
}

#[test]
fn drop_extension_never_deadlocks_with_the_engines_users() {
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
    let mut c = connect();

    // the engine's users: what the minute job does (the statement of the
    // deadlock seen in CI), and what runners and a console do
    let stop = Arc::new(AtomicBool::new(false));
    let statements = [
        "SELECT count(*) FROM automation.timeout_stale_executions()",
        "SELECT count(*) FROM automation.timeout_stale_executions()",
        "SELECT count(*) FROM automation.claim_executions('w', 'w', 5)",
        "SELECT automation.run_workflow('w')",
    ];
    let users: Vec<_> = statements
        .iter()
        .map(|sql| {
            let stop = stop.clone();
            let sql = sql.to_string();
            std::thread::spawn(move || {
                let mut u = connect();
                let mut calls = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // errors are expected (the extension is not there half
                    // of the time); only the DROP's outcome is judged
                    if u.batch_execute(&sql).is_ok() {
                        calls += 1;
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                calls
            })
        })
        .collect();

    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        c.batch_execute("CREATE EXTENSION automation_ext").unwrap();
        c.batch_execute(
            "INSERT INTO automation_workflows.definitions (name, definition)
             VALUES ('w', '{\"steps\": [{\"name\": \"a\", \"queue\": \"q\"}]}')",
        )
        .unwrap();
        c.batch_execute("SELECT automation.enqueue_execution('w', '{}') FROM generate_series(1, 20)").unwrap();
        std::thread::sleep(Duration::from_millis(100 + (round as u64 % 5) * 37));
        if let Err(e) = c.batch_execute("DROP EXTENSION automation_ext CASCADE") {
            let message = e.as_db_error().map(|d| format!("{}: {}", d.code().code(), d.message()));
            failures.push(format!("round {round}: {}", message.unwrap_or_else(|| e.to_string())));
            // leave it dropped for the next round
            for _ in 0..20 {
                if c.batch_execute("DROP EXTENSION IF EXISTS automation_ext CASCADE").is_ok() {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let calls: Vec<u64> = users.into_iter().map(|u| u.join().unwrap()).collect();
    drop(c);
    drop_database(&mut admin, DB);

    // the users did reach the engine between the DROPs (else the test
    // proves nothing)
    assert!(calls.iter().all(|&n| n > 0), "every user called the engine at least once: {calls:?}");
    assert!(failures.is_empty(), "DROP EXTENSION failed {} of {ROUNDS} times: {failures:#?}", failures.len());
}

/// A role that may not drop the extension takes no lock on its tables by
/// trying: its DROP is refused at once ("must be owner"), even while the
/// tables are in use (it does not queue behind their users, holding up
/// everyone who comes after it).
#[test]
fn a_refused_drop_takes_no_lock() {
    const OTHER_DB: &str = "automation_it_drop_ext_refused";
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {OTHER_DB} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {OTHER_DB}")).unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'it_drop_stranger') THEN
                 CREATE ROLE it_drop_stranger LOGIN;
               END IF;
             END $$",
        )
        .unwrap();
    let mut owner = Client::connect(&conninfo_for(OTHER_DB), NoTls).unwrap();
    owner.batch_execute("CREATE EXTENSION automation_ext").unwrap();
    // a user of the tables, in a long transaction
    owner.batch_execute("BEGIN; LOCK TABLE automation.job IN ACCESS SHARE MODE").unwrap();

    let mut stranger = automation_ext_integration::connect_as_to("it_drop_stranger", OTHER_DB);
    stranger.batch_execute("SET lock_timeout = '3s'").unwrap();
    let started = std::time::Instant::now();
    let err = stranger.batch_execute("DROP EXTENSION automation_ext").expect_err("a stranger cannot drop the extension");
    let waited = started.elapsed();
    let code = err.as_db_error().map(|d| d.code().code().to_string());
    owner.batch_execute("ROLLBACK").unwrap();
    drop(stranger);
    drop(owner);
    drop_database(&mut admin, OTHER_DB);
    admin.batch_execute("DROP ROLE IF EXISTS it_drop_stranger").unwrap();

    // 42501: must be owner — not 55P03, a lock timeout after queueing
    assert_eq!(code.as_deref(), Some("42501"), "{err}");
    assert!(waited < Duration::from_secs(3), "the refused DROP waited {waited:?} for a lock");
}
