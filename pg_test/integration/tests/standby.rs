//! On a streaming standby the scheduler does not run; after promotion it
//! does. The standby is a real one: pg_basebackup of the test cluster on
//! another port, started with the library preloaded, then promoted.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use automation_ext_integration::{connect, connect_retrying, wait_for, Client};

const PORT: &str = "5499";
const DIR: &str = "/tmp/automation_ext_it_standby";

fn bin(name: &str) -> String {
    let bindir = std::env::var("AUTOMATION_TEST_BINDIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    format!("{bindir}/{name}")
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd).args(args).status().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

struct Standby;

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = Command::new(bin("pg_ctl")).args(["-D", DIR, "-m", "immediate", "-w", "stop"]).status();
        let _ = std::fs::remove_dir_all(DIR);
    }
}

fn automation_processes(c: &mut Client) -> i64 {
    c.query_one("SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'automation_ext %'", &[]).unwrap().get(0)
}

#[test]
fn the_scheduler_waits_on_a_standby_and_starts_after_promotion() {
    let mut primary = connect();
    let port = std::env::var("AUTOMATION_TEST_PORT").unwrap_or_else(|_| "5432".into());
    let host = std::env::var("AUTOMATION_TEST_HOST").unwrap_or_else(|_| "/var/run/postgresql".into());
    if Path::new(DIR).exists() {
        let _ = Command::new(bin("pg_ctl")).args(["-D", DIR, "-m", "immediate", "-w", "stop"]).status();
        std::fs::remove_dir_all(DIR).unwrap();
    }
    let _guard = Standby;
    // a standby needs at least the primary's max_worker_processes
    let workers: String = primary.query_one("SELECT current_setting('max_worker_processes')", &[]).unwrap().get(0);
    run(&bin("pg_basebackup"), &["-h", &host, "-p", &port, "-D", DIR, "-R", "-X", "stream", "-c", "fast"]);
    // Debian keeps the configuration outside the data directory: give the
    // standby its own, with the library preloaded
    std::fs::write(
        format!("{DIR}/postgresql.conf"),
        format!(
            "port = {PORT}\nlisten_addresses = ''\nunix_socket_directories = '/tmp'\n\
             shared_preload_libraries = 'automation_ext'\nmax_worker_processes = {workers}\nhot_standby = on\n"
        ),
    )
    .unwrap();
    std::fs::write(format!("{DIR}/pg_hba.conf"), "local all all peer\nlocal replication all peer\n").unwrap();
    std::fs::write(format!("{DIR}/pg_ident.conf"), "").unwrap();
    run(&bin("pg_ctl"), &["-D", DIR, "-l", &format!("{DIR}.log"), "-w", "start"]);
    let standby_conninfo = format!("host=/tmp port={PORT} user=postgres dbname={}", automation_ext_integration::DB);
    let mut standby = connect_retrying(&standby_conninfo, Duration::from_secs(30));

    // a job the primary runs every second, replicated to the standby
    let job: i64 =
        primary.query_one("SELECT automation.schedule('it-standby', '1 second', 'SELECT 1')", &[]).unwrap().get(0);
    wait_for(
        &mut standby,
        &format!("SELECT count(*) > 0 FROM automation.job WHERE jobid = {job}"),
        Duration::from_secs(30),
        "the job on the standby",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(automation_processes(&mut standby), 0, "a scheduler process runs on the standby");
    let state: String = standby
        .query_one("SELECT state FROM automation.scheduler_status() WHERE component = 'launcher'", &[])
        .unwrap()
        .get(0);
    assert!(state.contains("standby"), "{state}");

    // promoted, it schedules on its own
    let before: i64 =
        standby.query_one("SELECT COALESCE(max(runid), 0) FROM automation.job_run_details", &[]).unwrap().get(0);
    run(&bin("pg_ctl"), &["-D", DIR, "-w", "promote"]);
    wait_for(
        &mut standby,
        &format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded' AND runid > {before}"),
        Duration::from_secs(60),
        "a run on the promoted server",
    );
    assert!(automation_processes(&mut standby) >= 2, "launcher and scheduler on the promoted server");
    primary.execute("SELECT automation.unschedule($1::bigint)", &[&job]).unwrap();
}
