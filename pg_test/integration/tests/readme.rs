//! The README's example pipeline runs when pasted as it is (issue 29, item
//! 9: 0.7.0's did not — an empty table, hard-coded step ids, a retry that
//! could not happen). The block is read from README.md and fed to psql, in
//! a fresh database, as a superuser; then its outcome is checked.

use std::process::Command;
use std::time::Duration;

use automation_ext_integration::{connect_retrying, conninfo_for, wait_for, Client, NoTls};

const DB: &str = "automation_it_readme";

fn readme_block() -> String {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("### An example pipeline")
        .nth(1)
        .expect("the README has its example pipeline");
    let start = section.find("```sql\n").expect("a sql block") + "```sql\n".len();
    let end = section[start..].find("\n```").expect("the block ends") + start;
    section[start..end].to_owned()
}

#[test]
fn the_readme_example_runs_as_pasted() {
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).unwrap();
    admin.batch_execute("DROP ROLE IF EXISTS etl").unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
    let mut c = connect_retrying(&conninfo_for(DB), Duration::from_secs(10));
    c.batch_execute("CREATE EXTENSION automation_ext").unwrap();

    let script = std::env::temp_dir().join(format!("automation_readme_{}.sql", std::process::id()));
    std::fs::write(&script, readme_block()).unwrap();
    let bindir = std::env::var("AUTOMATION_TEST_BINDIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let host = std::env::var("AUTOMATION_TEST_HOST").unwrap_or_else(|_| "/var/run/postgresql".into());
    let port = std::env::var("AUTOMATION_TEST_PORT").unwrap_or_else(|_| "5432".into());
    let out = Command::new(format!("{bindir}/psql"))
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", &host, "-p", &port, "-d", DB, "-f"])
        .arg(&script)
        .output()
        .expect("psql");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "the README's example fails as pasted:\n{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");

    // its outcome: the execution succeeded, the day was stored, each step
    // left metrics, the retried mail shows two attempts
    wait_for(
        &mut c,
        "SELECT status = 'success' FROM automation_workflows.workflow_executions WHERE workflow_name = 'nightly-revenue'",
        Duration::from_secs(30),
        "the README's execution succeeds",
    );
    let (revenue, customers): (String, i32) = c
        .query_one("SELECT revenue::text, customers FROM daily_revenue WHERE day = '2026-11-25'", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((revenue.as_str(), customers), ("242.50", 2));
    let attempts: i64 = c
        .query_one("SELECT count(*) FROM automation_workflows.step_runs WHERE step = 'mail'", &[])
        .unwrap()
        .get(0);
    assert_eq!(attempts, 3, "two customers, one of them mailed twice");
    let stages: i64 = c
        .query_one(
            "SELECT count(DISTINCT stage) FROM automation.pipeline_metrics WHERE pipeline_name = 'nightly-revenue'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stages, 3);
    let owner: String = c
        .query_one("SELECT owner::text FROM automation_triggers.registry", &[])
        .unwrap()
        .get(0);
    assert_eq!(owner, "etl");
    drop(c);
    admin.batch_execute(&format!("DROP DATABASE {DB} WITH (FORCE)")).unwrap();
    admin.batch_execute("DROP ROLE etl").unwrap();
}
