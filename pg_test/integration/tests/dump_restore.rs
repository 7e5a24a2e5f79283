//! What DBAs do to a cluster (issue 14): pg_dump in custom and plain format
//! of a database using every feature restores into a new database with no
//! error and every row; the restored (and a cloned) database runs its jobs
//! itself; DBA changes to default jobs survive; jobs belong to the role
//! itself, not to its name.

use std::process::{Command, Output};
use std::time::Duration;

use automation_ext_integration::{conninfo_for, wait_for, Client, NoTls, SystemSettings};

fn bindir() -> String {
    std::env::var("AUTOMATION_TEST_BINDIR").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into())
}

fn port() -> String {
    std::env::var("AUTOMATION_TEST_PORT").unwrap_or_else(|_| "5432".into())
}

fn host() -> String {
    std::env::var("AUTOMATION_TEST_HOST").unwrap_or_else(|_| "/var/run/postgresql".into())
}

fn db(name: &str) -> Client {
    Client::connect(&conninfo_for(name), NoTls).unwrap_or_else(|e| panic!("connect to {name}: {e}"))
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(format!("{}/{program}", bindir()))
        .args(["-h", &host(), "-p", &port()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    out
}

fn recreate(admin: &mut Client, name: &str) {
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
}

/// Rows per table of the extension's schemas (partitions included) and of public.
fn counts(c: &mut Client) -> Vec<(String, i64)> {
    let tables: Vec<String> = c
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname IN ('automation', 'automation_workflows', 'automation_triggers', 'automation_audit', 'public')
                AND c.relkind = 'r' AND c.relname <> 'ticks'
                -- derived: rebuilt by the first refresh after a restore (see the README)
                AND c.oid::regclass::text NOT IN ('automation.pipeline_metrics_hourly', 'automation.pipeline_metrics_invalidations',
                                                  'automation.pipeline_metrics_hourly_state',
                                                  -- counters, not dumped: they start again (a counter reset)
                                                  'automation.job_run_stats')
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let n: i64 = c.query_one(&format!("SELECT count(*) FROM {t}"), &[]).unwrap().get(0);
            (t, n)
        })
        .collect()
}

fn wait_for_ticks(c: &mut Client, dbname: &str) {
    let start = std::time::Instant::now();
    loop {
        let n: i64 = c
            .query_one("SELECT count(*) FROM public.ticks WHERE db = current_database() AND at > now() - interval '10 seconds'", &[])
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the job of {dbname} did not run in {dbname}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

const SRC: &str = "automation_it_dump_src";

/// The tests of this binary one at a time: the dump test pauses the
/// scheduler of the whole cluster for a while.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A database that uses every feature.
fn source(admin: &mut Client) -> Client {
    recreate(admin, SRC);
    // the extension first: it creates automation_runner in a fresh cluster
    // (this binary may be the first to run)
    db(SRC).batch_execute("CREATE EXTENSION automation_ext").unwrap();
    // (0.8.0) a runner whose definition, trigger, grant and execution the dump carries
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'it_dump_owner') THEN DROP ROLE it_dump_owner; END IF;
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'it_dump_grantee') THEN DROP ROLE it_dump_grantee; END IF;
             END $$;
             CREATE ROLE it_dump_owner LOGIN IN ROLE automation_runner;
             CREATE ROLE it_dump_grantee LOGIN IN ROLE automation_runner;",
        )
        .unwrap();
    let mut c = db(SRC);
    c.batch_execute(
        "CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp(), db text DEFAULT current_database());
         CREATE TABLE public.orders (id int PRIMARY KEY, total numeric);
         SELECT automation.enable_audit('public.orders');
         INSERT INTO public.orders VALUES (1, 10), (2, 20);
         UPDATE public.orders SET total = 11 WHERE id = 1;
         SELECT * FROM automation.maintain_metrics_partitions();
         INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, duration_ms, records_processed, status)
         SELECT now() - (i % 48) * interval '1 hour' - interval '5 minutes', 'etl-' || (i % 3), 'load', i % 1000, i,
                CASE WHEN i % 7 = 0 THEN 'error' ELSE 'success' END
           FROM generate_series(1, 3000) i;
         -- rows older than every partition, and one far ahead, land in the default one
         INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
         VALUES (now() - interval '20 days', 'etl-old', 'load', 'success'), (now() + interval '60 days', 'etl-future', 'load', 'success');
         -- and one that lands in a daily partition whatever the time of day (in
         -- the first minutes after midnight UTC every row above is yesterday's)
         INSERT INTO automation.pipeline_metrics (time, pipeline_name, stage, status)
         VALUES (now() + interval '1 hour', 'etl-soon', 'load', 'success');
         SELECT * FROM automation.refresh_pipeline_metrics_hourly();
         INSERT INTO automation_workflows.definitions (name, definition) VALUES ('etl', '{\"v\": 1}');
         -- a workflow edited once (version 2), and one written before 0.5.0
         -- that the format refuses (as an upgraded database may hold)
         INSERT INTO automation_workflows.definitions (name, definition)
         VALUES ('dag', '{\"steps\": [{\"name\": \"a\", \"queue\": \"q\"}]}');
         UPDATE automation_workflows.definitions
            SET definition = '{\"steps\": [{\"name\": \"a\", \"queue\": \"q\"}, {\"name\": \"b\", \"after\": [\"a\"], \"queue\": \"q\"}]}'
          WHERE name = 'dag';
         SET check_function_bodies = off;
         INSERT INTO automation_workflows.definitions (name, definition) VALUES ('odd', '{\"steps\": [\"x\"]}');
         RESET check_function_bodies;
         -- a workflow execution half done: step a done, b claimed
         SELECT automation.run_workflow('dag', '{\"day\": 1}');
         SELECT automation.complete_step(id, '{\"rows\": 1}') FROM automation.claim_steps('q', 'w-dump');
         SELECT count(*) FROM automation.claim_steps('q', 'w-dump');
         -- live triggers: a table trigger on orders, a schedule (a job), a manual one
         INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
         SELECT t, c::jsonb, id FROM automation_workflows.definitions,
                (VALUES ('table', '{\"table\": \"public.orders\", \"events\": [\"INSERT\"]}'),
                        ('schedule', '{\"cron\": \"0 4 * * *\"}'), ('manual', '{}')) v(t, c)
          WHERE name = 'dag';
         SELECT automation.complete_execution(automation.start_execution('etl', '{\"n\": 1}'));
         SELECT automation.fail_execution(automation.start_execution('etl'), 'Boom', 'it broke');
         SELECT automation.enqueue_execution('etl');
         -- a queued execution that a worker holds, with its lease
         SELECT automation.enqueue_execution('etl', '{\"n\": 2}', now() - interval '1 minute');
         SELECT count(*) FROM automation.claim_executions('etl', 'w-dump', 1);
         SELECT automation.apply_migration('001_app', 'CREATE TABLE public.app_t (id int)');
         INSERT INTO automation_triggers.registry (trigger_type, config) VALUES ('webhook', '{}');
         -- (0.8.0) what a runner owns: a definition it shares, a trigger, an execution
         SET ROLE it_dump_owner;
         INSERT INTO automation_workflows.definitions (name, definition)
         VALUES ('owned', '{\"steps\": [{\"name\": \"s\", \"queue\": \"owned-q\"}]}');
         INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
         SELECT 'manual', '{}', id FROM automation_workflows.definitions WHERE name = 'owned';
         SELECT automation.grant_workflow('owned', 'it_dump_grantee', 'work');
         -- (0.10.0) what its queue's history keeps
         SELECT automation.set_queue_history('owned', 'errors');
         SELECT automation.run_workflow('owned', '{\"by\": \"owner\"}');
         RESET ROLE;
         -- DBA choices about the default jobs
         SELECT automation.alter_job(jobid, active => false) FROM automation.job WHERE jobname = 'automation: maintain indexes';
         SELECT automation.alter_job(jobid, schedule => '*/7 * * * *') FROM automation.job WHERE jobname = 'automation: collect database metrics';
         SELECT automation.unschedule('automation: purge job run history');
         -- a user job that records where it runs
         SELECT automation.schedule('tick', '1 second', 'INSERT INTO public.ticks DEFAULT VALUES');
         -- a job with every 0.6.0 option
         SELECT automation.schedule('options', '0 9 * * *', 'SELECT 1', timezone => 'Asia/Tokyo', retries => 2,
                                    retry_backoff => '5 seconds', overlap => 'parallel 2', priority => 7,
                                    log_runs => 'failures', keep_runs => 50);",
    )
    .unwrap();
    wait_for_ticks(&mut c, SRC);
    c
}

fn restored_ok(dst: &str, src_counts: &[(String, i64)]) {
    let mut d = db(dst);
    // every row back (ticks excepted: the job keeps writing), partitions attached
    assert_eq!(counts(&mut d), src_counts, "row counts of {dst}");
    // definitions keep their versions, a refused legacy one included
    let definitions = "SELECT string_agg(name || ':' || version, ',' ORDER BY name) FROM automation_workflows.definitions";
    let restored: String = d.query_one(definitions, &[]).unwrap().get(0);
    assert_eq!(restored, "dag:2,etl:1,odd:1,owned:1,sqlwf:1", "definitions of {dst}");
    // (0.10.0) a queue's history mode comes back, with who set it
    let history: String = d
        .query_one("SELECT string_agg(workflow_name || ':' || history || ':' || set_by::text, ',') FROM automation.queue_settings", &[])
        .unwrap()
        .get(0);
    assert_eq!(history, "owned:errors:it_dump_owner", "queue settings of {dst}");
    // (0.8.0) owners come back, by name: the definition, its trigger, its
    // grant, its execution; and the grantee works it, the owner fires it
    let owners: String = d
        .query_one(
            "SELECT concat_ws(' ',
                    (SELECT owner::text FROM automation_workflows.definitions WHERE name = 'owned'),
                    (SELECT r.owner::text FROM automation_triggers.registry r JOIN automation_workflows.definitions d
                        ON d.id = r.workflow_id WHERE d.name = 'owned'),
                    (SELECT grantee::text || '/' || privilege || '/' || granted_by::text FROM automation_workflows.workflow_grants),
                    (SELECT owner::text FROM automation_workflows.workflow_runs WHERE workflow_name = 'owned'),
                    (SELECT owner::text FROM automation_workflows.workflow_executions WHERE workflow_name = 'owned'))",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        owners,
        "it_dump_owner it_dump_owner it_dump_grantee/work/it_dump_owner it_dump_owner it_dump_owner",
        "owners in {dst}"
    );
    d.batch_execute("SET ROLE it_dump_grantee").unwrap();
    let worked: i64 = d.query_one("SELECT count(*) FROM automation.claim_steps('owned-q', 'w-grantee')", &[]).unwrap().get(0);
    d.batch_execute("RESET ROLE").unwrap();
    assert_eq!(worked, 1, "the grantee works the owner's restored execution in {dst}");
    // the half-done workflow execution carries on: b is still claimed; a new
    // execution's step runs get new ids
    let progress = "SELECT done::text || running::text FROM automation.workflow_progress WHERE workflow_name = 'dag'";
    let before: String = d.query_one(progress, &[]).unwrap().get(0);
    assert_eq!(before, "{a}{b}", "progress in {dst}");

    d.batch_execute("SELECT automation.run_workflow('dag', '{\"day\": 2}')").unwrap();
    let fresh: i64 = d
        .query_one(
            "SELECT count(*) FROM automation.claim_steps('q', 'w-restored', 10) c
              WHERE c.id > (SELECT max(id) FROM automation_workflows.step_runs WHERE worker = 'w-dump')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(fresh, 1, "a new step run in {dst}");
    // the live triggers came back once: one trigger on orders that starts one
    // execution per row, one job for the schedule
    let (table_triggers, jobs): (i64, i64) = {
        let r = d
            .query_one(
                "SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass
                           AND tgname LIKE 'automation_workflow_%'),
                        (SELECT count(*) FROM automation.job WHERE jobname LIKE 'workflow trigger %')",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((table_triggers, jobs), (1, 1), "triggers and jobs of {dst}");
    d.batch_execute("INSERT INTO public.orders VALUES (100, 1), (101, 2)").unwrap();
    // (started after the commit by the scheduler, or in the statement while
    // automation.enabled is off; drained here too, whoever is first)
    wait_for(
        &mut d,
        "SELECT automation.drain_trigger_inbox() >= 0
            AND NOT EXISTS (SELECT FROM automation_workflows.trigger_inbox)",
        Duration::from_secs(30),
        "the trigger inbox drained",
    );
    let from_table: i64 = d
        .query_one("SELECT count(*) FROM automation_workflows.workflow_runs WHERE input->>'op' = 'INSERT'", &[])
        .unwrap()
        .get(0);
    assert_eq!(from_table, 2, "the table trigger of {dst} starts one execution per row");
    let partitions: i64 = d
        .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'automation.pipeline_metrics'::regclass", &[])
        .unwrap()
        .get(0);
    let mut s = db(SRC);
    let src_partitions: i64 = s
        .query_one("SELECT count(*) FROM pg_inherits WHERE inhparent = 'automation.pipeline_metrics'::regclass", &[])
        .unwrap()
        .get(0);
    assert_eq!(partitions, src_partitions, "partitions attached in {dst}");

    // the rollup: rebuilt on the first refresh, equal to a full recomputation
    d.batch_execute("SELECT * FROM automation.refresh_pipeline_metrics_hourly()").unwrap();
    let differences: i64 = d
        .query_one(
            "WITH truth AS (
                 SELECT date_trunc('hour', time, 'UTC') AS bucket, pipeline_name, stage, count(*) AS executions,
                        sum(records_processed) AS total_records, count(*) FILTER (WHERE status = 'success') AS successes,
                        count(*) FILTER (WHERE status = 'error') AS errors
                   FROM automation.pipeline_metrics WHERE time < date_trunc('hour', now(), 'UTC') GROUP BY 1, 2, 3),
             rollup AS (SELECT bucket, pipeline_name, stage, executions, total_records, successes, errors
                          FROM automation.pipeline_metrics_hourly)
             SELECT (SELECT count(*) FROM (SELECT * FROM truth EXCEPT SELECT * FROM rollup) a)
                  + (SELECT count(*) FROM (SELECT * FROM rollup EXCEPT SELECT * FROM truth) b)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(differences, 0, "the rollup of {dst} equals a full recomputation");
    let src_rollup: i64 = s.query_one("SELECT count(*) FROM automation.pipeline_metrics_hourly", &[]).unwrap().get(0);
    let dst_rollup: i64 = d.query_one("SELECT count(*) FROM automation.pipeline_metrics_hourly", &[]).unwrap().get(0);
    assert!(
        dst_rollup >= src_rollup && dst_rollup > 0,
        "rollup rows: {dst_rollup} in {dst}, {src_rollup} in the source"
    );

    // the DBA's choices about the default jobs
    let defaults: Vec<(String, bool, String)> = d
        .query(
            "SELECT jobname, active, schedule FROM automation.job WHERE jobname LIKE 'automation: %' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let find = |name: &str| defaults.iter().find(|(n, _, _)| n == name).cloned();
    assert_eq!(
        find("automation: maintain indexes").map(|j| j.1),
        Some(false),
        "deactivated stays deactivated: {defaults:?}"
    );
    assert_eq!(find("automation: collect database metrics").map(|j| j.2), Some("*/7 * * * *".into()), "{defaults:?}");
    assert_eq!(find("automation: purge job run history"), None, "unscheduled stays unscheduled: {defaults:?}");
    assert_eq!(defaults.len(), 6, "no default job twice: {defaults:?}");

    // the restored jobs belong to this database, and run here
    let row = d.query_one("SELECT database, local FROM automation.job WHERE jobname = 'tick'", &[]).unwrap();
    let (database, local): (String, bool) = (row.get(0), row.get(1));
    assert_eq!((database.as_str(), local), (dst, true));
    // its options, and its next fire in its own time zone
    let row = d
        .query_one(
            "SELECT concat_ws(' ', timezone, retries, retry_backoff, overlap, priority, log_runs, keep_runs),
                    next_run_at = automation.next_run('0 9 * * *', now(), 'Asia/Tokyo')
               FROM automation.job WHERE jobname = 'options'",
            &[],
        )
        .unwrap();
    let (options, in_tokyo): (String, bool) = (row.get(0), row.get(1));
    assert_eq!(options, "Asia/Tokyo 2 00:00:05 parallel 2 7 failures 50", "{dst}");
    assert!(in_tokyo, "{dst}");
}

/// automation.enabled off for the cluster while it lives (no job changes
/// anything while we dump, restore and count), back on when dropped. Runs
/// still going (schedulers stop, runs are not cut short) are terminated.
struct Paused(#[allow(dead_code)] SystemSettings);

impl Paused {
    fn new(admin: &mut Client) -> Paused {
        let settings = SystemSettings::set(admin, &[("automation.enabled", "off")]);
        std::thread::sleep(Duration::from_millis(500));
        admin
            .batch_execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'automation_ext job'",
            )
            .unwrap();
        automation_ext_integration::wait_for(
            admin,
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type IN ('automation_ext scheduler', 'automation_ext job')",
            Duration::from_secs(30),
            "schedulers stopped",
        );
        Paused(settings)
    }
}

#[test]
fn a_dump_restores_with_every_row_and_its_jobs_run_in_the_restored_database() {
    let _serial = serial();
    let mut admin = db("postgres");
    let mut s = source(&mut admin);
    let paused = Paused::new(&mut admin);
    // (0.7.0) a workflow whose SQL step waits (nothing runs while paused):
    // it runs in each restored database, as the role that started it
    s.batch_execute(
        "INSERT INTO automation_workflows.definitions (name, definition) VALUES ('sqlwf', '{\"steps\": [{\"name\": \"s\",
            \"sql\": \"INSERT INTO public.ticks (db) SELECT ''sql step by '' || current_user || '' in '' || current_database()\"}]}');
         SELECT automation.run_workflow('sqlwf');",
    )
    .unwrap();
    let src_counts = counts(&mut s);
    assert!(src_counts.iter().any(|(t, n)| t.starts_with("automation.pipeline_metrics_p") && *n > 0), "{src_counts:?}");
    assert!(src_counts.iter().any(|(t, n)| t == "automation.job_run_details" && *n > 0), "{src_counts:?}");

    let dir = std::env::temp_dir();
    let custom = dir.join("automation_it_dump.custom");
    let plain = dir.join("automation_it_dump.sql");
    for (path, format) in [(&custom, "c"), (&plain, "p")] {
        let out = run("pg_dump", &["-F", format, "-f", path.to_str().unwrap(), SRC]);
        assert!(out.status.success(), "pg_dump -F{format}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // (0.8.0) owners are dumped by name (regrole), not by oid: a restore
    // into another cluster maps them to the roles of that name
    let text = std::fs::read_to_string(&plain).unwrap();
    let copy = text.split("COPY automation_workflows.definitions").nth(1).expect("the definitions' data");
    let copy = &copy[..copy.find("\\.").expect("end of COPY")];
    assert!(copy.contains("\tit_dump_owner\n") || copy.contains("\tit_dump_owner"), "owner by name in the dump: {copy}");
    for (dst, restore) in [("automation_it_dump_custom", "pg_restore"), ("automation_it_dump_plain", "psql")] {
        recreate(&mut admin, dst);
        let out = if restore == "pg_restore" {
            run("pg_restore", &["-d", dst, custom.to_str().unwrap()])
        } else {
            run("psql", &["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dst, "-f", plain.to_str().unwrap()])
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("ERROR"), "{restore} into {dst} failed: {stderr}");
        restored_ok(dst, &src_counts);
    }
    // scheduling again: each restored database runs its own jobs
    drop(paused);
    for dst in ["automation_it_dump_custom", "automation_it_dump_plain"] {
        let mut d = db(dst);
        d.batch_execute("SELECT automation.wake_scheduler()").unwrap();
        wait_for_ticks(&mut d, dst);
        d.batch_execute("SELECT automation.unschedule('tick')").unwrap();
        wait_for(
            &mut d,
            &format!("SELECT count(*) = 1 FROM public.ticks WHERE db = 'sql step by postgres in {dst}'"),
            Duration::from_secs(30),
            "the restored SQL step runs in the restored database",
        );
    }

    // a clone made with CREATE DATABASE ... TEMPLATE runs its jobs itself
    // (the template may have no session: keep the launcher away from it)
    s.batch_execute("SELECT automation.unschedule('tick')").unwrap();
    drop(s);
    admin.batch_execute(&format!("ALTER DATABASE {SRC} WITH ALLOW_CONNECTIONS false")).unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{SRC}' AND pid <> pg_backend_pid()"
        ))
        .unwrap();
    let mut cloned = false;
    for _ in 0..50 {
        let _ = admin.batch_execute("DROP DATABASE IF EXISTS automation_it_clone");
        if admin.batch_execute(&format!("CREATE DATABASE automation_it_clone TEMPLATE {SRC}")).is_ok() {
            cloned = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(cloned, "could not clone {SRC}");
    let mut k = db("automation_it_clone");
    k.batch_execute("SELECT automation.schedule('tick', '1 second', 'INSERT INTO public.ticks DEFAULT VALUES'); SELECT automation.wake_scheduler()")
        .unwrap();
    wait_for_ticks(&mut k, "automation_it_clone");
    let database: String = k
        .query_one("SELECT database FROM automation.job WHERE jobname = 'automation: maintain indexes'", &[])
        .unwrap()
        .get(0);
    assert_eq!(database, "automation_it_clone", "a local job shows the clone's name");
    drop(k);
    cleanup(&mut admin);
}

fn cleanup(admin: &mut Client) {
    for name in ["automation_it_dump_custom", "automation_it_dump_plain", "automation_it_clone", SRC] {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    }
    admin.batch_execute("DROP ROLE IF EXISTS it_dump_owner; DROP ROLE IF EXISTS it_dump_grantee").unwrap();
}

#[test]
fn jobs_belong_to_the_role_not_to_its_name() {
    let _serial = serial();
    let mut admin = db("postgres");
    let name = "automation_it_roles";
    recreate(&mut admin, name);
    // the extension first: it creates automation_runner in a fresh cluster
    let mut c = db(name);
    c.batch_execute("CREATE EXTENSION automation_ext").unwrap();
    admin
        .batch_execute(
            "DROP ROLE IF EXISTS it_role_owner; DROP ROLE IF EXISTS it_role_renamed; CREATE ROLE it_role_owner LOGIN IN ROLE automation_runner",
        )
        .unwrap();
    c.batch_execute(
        "CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp(), db text DEFAULT current_database(),
                                    who text DEFAULT current_user);
         GRANT INSERT ON public.ticks TO it_role_owner;
         GRANT USAGE ON SCHEMA automation TO it_role_owner;
         GRANT SELECT ON automation.job, automation.job_run_details TO it_role_owner;
         SELECT automation.schedule_in_database('owned', '1 second', 'INSERT INTO public.ticks DEFAULT VALUES',
                                                current_database(), 'it_role_owner');",
    )
    .unwrap();
    wait_for_ticks(&mut c, name);

    // renamed: the job keeps running as that role, and shows the new name
    admin.batch_execute("ALTER ROLE it_role_owner RENAME TO it_role_renamed").unwrap();
    c.batch_execute("DELETE FROM public.ticks").unwrap();
    wait_for_ticks(&mut c, name);
    let who: String = c.query_one("SELECT who FROM public.ticks ORDER BY at DESC LIMIT 1", &[]).unwrap().get(0);
    assert_eq!(who, "it_role_renamed");
    automation_ext_integration::wait_for(
        &mut c,
        "SELECT username = 'it_role_renamed' FROM automation.job WHERE jobname = 'owned'",
        Duration::from_secs(30),
        "username shows the new name",
    );

    // a new role with the old name inherits nothing: no job, no history
    admin.batch_execute("CREATE ROLE it_role_owner LOGIN").unwrap();
    c.batch_execute("GRANT USAGE ON SCHEMA automation TO it_role_owner; GRANT SELECT ON automation.job, automation.job_run_details TO it_role_owner")
        .unwrap();
    let (jobs, runs): (i64, i64) = {
        c.batch_execute("SET ROLE it_role_owner").unwrap();
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM automation.job), (SELECT count(*) FROM automation.job_run_details)",
                &[],
            )
            .unwrap();
        c.batch_execute("RESET ROLE").unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((jobs, runs), (0, 0), "the new role with the old name sees no job and no run");

    // dropped: the job is deactivated once, with the reason; it never fails for ever
    c.batch_execute("REVOKE ALL ON public.ticks FROM it_role_renamed; REVOKE ALL ON automation.job, automation.job_run_details FROM it_role_renamed; REVOKE ALL ON SCHEMA automation FROM it_role_renamed")
        .unwrap();
    admin.batch_execute("DROP ROLE it_role_renamed").unwrap();
    automation_ext_integration::wait_for(
        &mut c,
        "SELECT NOT active AND inactive_reason LIKE '%was dropped%' FROM automation.job WHERE jobname = 'owned'",
        Duration::from_secs(30),
        "the job of a dropped role deactivated",
    );
    // (a fire launched just before the DROP ROLE may also fail, its worker
    // unable to connect as the role: that run is not the job failing for ever)
    let failed = |c: &mut Client, reason: &str| -> i64 {
        c.query_one(
            "SELECT count(*) FROM automation.job_run_details WHERE jobid = (SELECT jobid FROM automation.job WHERE jobname = 'owned')
                AND status = 'failed' AND return_message LIKE $1",
            &[&reason],
        )
        .unwrap()
        .get(0)
    };
    let before = failed(&mut c, "%");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(failed(&mut c, "%was dropped%"), 1, "one failed run says why");
    assert_eq!(failed(&mut c, "%"), before, "then nothing");
    drop(c);
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).unwrap();
    admin.batch_execute("DROP ROLE it_role_owner").unwrap();
}
