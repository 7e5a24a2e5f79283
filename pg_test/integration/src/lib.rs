//! Helpers shared by the integration tests: connections to the cluster that
//! scripts/test.sh prepared, and a fresh database per test binary.

use std::sync::Once;
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
pub use postgres::{Client, NoTls};

/// Connection string parts, overridable for other clusters.
fn base() -> String {
    let host = std::env::var("AUTOMATION_TEST_HOST").unwrap_or_else(|_| "/var/run/postgresql".into());
    let port = std::env::var("AUTOMATION_TEST_PORT").unwrap_or_else(|_| "5432".into());
    let user = std::env::var("AUTOMATION_TEST_USER").unwrap_or_else(|_| "postgres".into());
    format!("host={host} port={port} user={user}")
}

pub const DB: &str = "automation_it";

static CREATE: Once = Once::new();

/// A session on the test database, which is created (fresh, with the
/// extension) the first time any test of this binary asks.
pub fn connect() -> Client {
    CREATE.call_once(|| {
        let mut admin = Client::connect(&format!("{} dbname=postgres", base()), NoTls)
            .expect("connect to the cluster scripts/test.sh set up");
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {DB}")).unwrap();
        let mut c = Client::connect(&format!("{} dbname={DB}", base()), NoTls).unwrap();
        c.batch_execute("CREATE EXTENSION automation_ext").unwrap();
    });
    Client::connect(&format!("{} dbname={DB}", base()), NoTls).expect("connect to the test database")
}

/// A database of a test's own, made anew with the extension: a session as
/// the superuser on `postgres` (to drop it at the end) and one on it.
pub fn fresh_database(name: &str) -> (Client, Client) {
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let mut c = Client::connect(&conninfo_for(name), NoTls).unwrap();
    c.batch_execute("CREATE EXTENSION automation_ext").unwrap();
    (admin, c)
}

/// A session on the test database logged in as `role` (the test cluster
/// trusts its private socket): what that role does from its own session,
/// where RESET ROLE leads nowhere else.
pub fn connect_as(role: &str) -> Client {
    connect_as_to(role, DB)
}

/// A session on database `dbname` logged in as `role`.
pub fn connect_as_to(role: &str, dbname: &str) -> Client {
    let host = std::env::var("AUTOMATION_TEST_HOST").unwrap_or_else(|_| "/var/run/postgresql".into());
    let port = std::env::var("AUTOMATION_TEST_PORT").unwrap_or_else(|_| "5432".into());
    Client::connect(&format!("host={host} port={port} user={role} dbname={dbname}"), NoTls)
        .unwrap_or_else(|e| panic!("connect as {role} to {dbname}: {e}"))
}

/// A session LISTENing on `channel`, and a writer session whose completion
/// trigger notifies that channel (so tests running at once don't cross).
pub fn listener_and_writer(channel: &str) -> (Client, Client) {
    let mut listener = connect();
    listener.batch_execute(&format!("LISTEN {channel}")).unwrap();
    let mut writer = connect();
    writer.batch_execute(&format!("SET automation.notify_channel = {channel}")).unwrap();
    (listener, writer)
}

/// Notifications that arrive within `quiet` of each other, starting now and
/// for at most `limit` in all.
pub fn drain(client: &mut Client, quiet: Duration, limit: Duration) -> Vec<(String, String)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut notifications = client.notifications();
    let mut it = notifications.timeout_iter(quiet);
    while start.elapsed() < limit {
        match it.next() {
            Ok(Some(n)) => got.push((n.channel().to_owned(), n.payload().to_owned())),
            Ok(None) => break,
            Err(e) => panic!("reading notifications: {e}"),
        }
    }
    got
}

/// Poll `sql` (returning one boolean) until it is true; panic with `what`
/// after `limit`. For effects of background workers, which come when they come.
pub fn wait_for(client: &mut Client, sql: &str, limit: Duration, what: &str) {
    let start = Instant::now();
    loop {
        let done: bool = client.query_one(sql, &[]).map(|r| r.get(0)).unwrap_or(false);
        if done {
            return;
        }
        if start.elapsed() > limit {
            panic!("{what}: not after {limit:?} (polled: {sql})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Connect with retries, for after a server restart.
pub fn connect_retrying(conninfo: &str, limit: Duration) -> Client {
    let start = Instant::now();
    loop {
        match Client::connect(conninfo, NoTls) {
            Ok(c) => return c,
            Err(e) if start.elapsed() < limit => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("could not reconnect within {limit:?}: {e}"),
        }
    }
}

/// The connection string of the test database (for reconnecting).
pub fn conninfo() -> String {
    format!("{} dbname={DB}", base())
}

/// Connection string of another database of the same cluster.
pub fn conninfo_for(dbname: &str) -> String {
    format!("{} dbname={dbname}", base())
}

/// Cluster settings a test changes with ALTER SYSTEM: reset, and the
/// configuration reloaded, when this is dropped, also when the test panics
/// (so that a failure leaves no setting behind for the next binaries).
pub struct SystemSettings(Vec<String>);

impl SystemSettings {
    /// `ALTER SYSTEM SET name = value` for each, then a reload.
    pub fn set(admin: &mut Client, settings: &[(&str, &str)]) -> SystemSettings {
        for (name, value) in settings {
            admin.batch_execute(&format!("ALTER SYSTEM SET {name} = {value}")).unwrap();
        }
        admin.batch_execute("SELECT pg_reload_conf()").unwrap();
        SystemSettings(settings.iter().map(|(name, _)| name.to_string()).collect())
    }
}

impl Drop for SystemSettings {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&conninfo_for("postgres"), NoTls) {
            for name in &self.0 {
                let _ = admin.batch_execute(&format!("ALTER SYSTEM RESET {name}"));
            }
            let _ = admin.batch_execute("SELECT pg_reload_conf()");
        }
    }
}

/// SIGKILL the scheduler of `client`'s database (the postmaster then
/// restarts the cluster: every session ends). Panics if there is none.
pub fn kill_scheduler(client: &mut Client) {
    let pid: i32 = client
        .query_one(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'automation_ext scheduler' AND datname = current_database()",
            &[],
        )
        .expect("this database's scheduler is running")
        .get(0);
    let killed = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill runs");
    assert!(killed.success(), "kill -9 {pid}");
}
