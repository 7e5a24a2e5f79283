//! Issue 27 from outside: hostile members of automation_runner, each logged
//! in as itself, against the real scheduler, step workers and trigger
//! drain. What 0.7.0 gave up (superuser through the trigger inbox, another
//! role's trigger repointed, a step run as the wrong role after a DROP and
//! CREATE ROLE, a step of another database cancelled) holds on 0.8.0.

use std::time::{Duration, Instant};

use automation_ext_integration::{conninfo_for, connect, connect_as, connect_as_to, wait_for, Client, NoTls};

const LIMIT: Duration = Duration::from_secs(60);

/// A login role in automation_runner (made anew, with a schema of its own).
fn runner(admin: &mut Client, role: &str) {
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
               IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                 EXECUTE 'DROP OWNED BY {role} CASCADE';
                 EXECUTE 'DROP ROLE {role}';
               END IF;
             END $$;
             CREATE ROLE {role} LOGIN IN ROLE automation_runner;
             CREATE SCHEMA {role} AUTHORIZATION {role};"
        ))
        .unwrap();
}

fn superuser(admin: &mut Client, role: &str) -> bool {
    admin.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role]).unwrap().get(0)
}

/// The ordinary route of path 1: a domain's CHECK, the role's own code, is
/// evaluated when the drain casts the changed rows to the table's type. The
/// drain runs in the scheduler's superuser session; the cast runs as the
/// trigger's owner, in a security-restricted operation.
#[test]
fn a_watched_tables_domain_check_runs_as_its_owner_when_the_scheduler_drains() {
    let mut admin = connect();
    runner(&mut admin, "it_t_carol");
    let mut carol = connect_as("it_t_carol");
    carol
        .batch_execute(
            "CREATE TABLE it_t_carol.seen (who name, session name, super boolean, note text);
             -- in another role's session (the drain), try everything
             CREATE FUNCTION it_t_carol.evil(v int) RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 IF session_user = current_user THEN
                     RETURN true;
                 END IF;
                 INSERT INTO it_t_carol.seen SELECT current_user, session_user, rolsuper, 'cast' FROM pg_roles
                  WHERE rolname = current_user;
                 IF v = 2 THEN
                     EXECUTE 'RESET ROLE';
                 ELSIF v = 3 THEN
                     EXECUTE 'SET ROLE postgres';
                 END IF;
                 BEGIN
                     EXECUTE 'ALTER ROLE it_t_carol SUPERUSER';
                 EXCEPTION WHEN insufficient_privilege THEN
                     -- (what a plain role gets for ALTER ROLE ... SUPERUSER)
                     NULL;
                 END;
                 RETURN true;
             END $$;
             CREATE DOMAIN it_t_carol.d AS int CHECK (it_t_carol.evil(VALUE));
             CREATE TABLE it_t_carol.t (id int, v it_t_carol.d);
             INSERT INTO automation_workflows.definitions (name, definition)
             VALUES ('it-t-carol', '{\"steps\": [{\"name\": \"s\", \"queue\": \"it-t-carol\"}]}');
             INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
             SELECT 'table', '{\"table\": \"it_t_carol.t\", \"events\": [\"INSERT\"]}', id
               FROM automation_workflows.definitions WHERE name = 'it-t-carol';
             INSERT INTO it_t_carol.t VALUES (1, 1);
             INSERT INTO it_t_carol.t VALUES (2, 2);
             INSERT INTO it_t_carol.t VALUES (3, 3);",
        )
        .unwrap();
    // the scheduler drains (nobody else does here)
    wait_for(
        &mut admin,
        "SELECT NOT EXISTS (SELECT FROM automation_workflows.trigger_inbox WHERE workflow_name = 'it-t-carol')",
        LIMIT,
        "the scheduler drains carol's changes",
    );
    assert!(!superuser(&mut admin, "it_t_carol"), "carol became superuser");
    let seen: Vec<(String, String, bool)> = admin
        .query("SELECT DISTINCT who::text, session::text, super FROM it_t_carol.seen ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, "it_t_carol", "the cast ran as carol, in the scheduler's session: {seen:?}");
    assert_ne!(seen[0].1, "it_t_carol", "...in the scheduler's session: {seen:?}");
    // row 1 started as carol's; rows 2 and 3 (SET ROLE and RESET ROLE in a
    // security-restricted operation) were refused and kept in the errors
    let started: i64 = admin
        .query_one(
            "SELECT count(*) FROM automation_workflows.workflow_runs WHERE workflow_name = 'it-t-carol'
                AND owner = 'it_t_carol'::regrole",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(started, 1);
    let refused: Vec<String> = admin
        .query(
            "SELECT error_context->>'rows' FROM automation.errors
              WHERE workflow_name = 'it-t-carol' AND error_message ~ 'cannot set parameter \"role\"' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(refused, vec!["[\"(2,2)\"]", "[\"(3,3)\"]"]);
    // and carol could not have put the rows there herself
    let e = carol
        .batch_execute(
            "INSERT INTO automation_workflows.trigger_inbox (trigger_id, workflow_name, op, table_name, owner, rows)
             VALUES (0, 'it-t-carol', 'INSERT', 'it_t_carol.t', 'postgres', ARRAY['(9,9)'])",
        )
        .unwrap_err();
    assert_eq!(e.code().map(|s| s.code()), Some("42501"), "{e}");
    drop(carol);
    admin
        .batch_execute(
            "DELETE FROM automation_triggers.registry WHERE owner = 'it_t_carol'::regrole;
             DELETE FROM automation_workflows.workflow_executions WHERE workflow_name = 'it-t-carol';
             DELETE FROM automation.errors WHERE workflow_name = 'it-t-carol';
             DELETE FROM automation_workflows.definitions WHERE name = 'it-t-carol';",
        )
        .unwrap();
}

/// Path 2: a superuser's schedule trigger keeps running the superuser's
/// own SQL while a runner tries to repoint it, retarget it, rewrite its
/// workflow, or make its own trigger start it.
#[test]
fn another_roles_schedule_trigger_runs_its_owners_sql_whatever_a_runner_does() {
    let mut admin = connect();
    runner(&mut admin, "it_t_alice");
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS public.it_t_log;
             CREATE TABLE public.it_t_log (who text, at timestamptz DEFAULT clock_timestamp());
             GRANT INSERT ON public.it_t_log TO PUBLIC;
             DELETE FROM automation_workflows.definitions WHERE name = 'it-t-admin';
             INSERT INTO automation_workflows.definitions (name, definition)
             VALUES ('it-t-admin', '{\"steps\": [{\"name\": \"log\", \"sql\": \"INSERT INTO public.it_t_log (who) VALUES (current_user)\"}]}');",
        )
        .unwrap();
    let trigger: i32 = admin
        .query_one(
            "INSERT INTO automation_triggers.registry (trigger_type, config, workflow_id)
             SELECT 'schedule', '{\"cron\": \"1 second\"}', id FROM automation_workflows.definitions WHERE name = 'it-t-admin'
             RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    let mut alice = connect_as("it_t_alice");
    alice
        .batch_execute(
            "INSERT INTO automation_workflows.definitions (name, definition)
             VALUES ('it-t-alice', '{\"steps\": [{\"name\": \"up\", \"sql\": \"ALTER ROLE it_t_alice SUPERUSER\"}]}')",
        )
        .unwrap();
    let mine: i32 =
        alice.query_one("SELECT id FROM automation_workflows.definitions WHERE name = 'it-t-alice'", &[]).unwrap().get(0);
    for sql in [
        format!("UPDATE automation_triggers.registry SET workflow_id = {mine} WHERE id = {trigger}"),
        format!("UPDATE automation_triggers.registry SET config = '{{\"cron\": \"1 second\", \"input\": {{\"x\": 1}}}}' WHERE id = {trigger}"),
        "UPDATE automation_workflows.definitions SET definition = '{\"steps\": [{\"name\": \"log\", \"sql\": \"ALTER ROLE it_t_alice SUPERUSER\"}]}' WHERE name = 'it-t-admin'".to_owned(),
        format!("DELETE FROM automation_triggers.registry WHERE id = {trigger}"),
        "UPDATE automation.job SET command = 'ALTER ROLE it_t_alice SUPERUSER'".to_owned(),
    ] {
        // (with format checks off, as a restore has them: privilege checks do not depend on it)
        for bodies in ["on", "off"] {
            alice.batch_execute(&format!("SET check_function_bodies = {bodies}")).unwrap();
            let n = alice.execute(sql.as_str(), &[]);
            assert!(matches!(n, Ok(0)), "{sql}: {n:?}");
        }
    }
    alice.batch_execute("RESET check_function_bodies").unwrap();
    // two fires after the attempts, each running the superuser's SQL
    let since: String = admin.query_one("SELECT clock_timestamp()::text", &[]).unwrap().get(0);
    wait_for(
        &mut admin,
        &format!("SELECT count(*) >= 2 FROM public.it_t_log WHERE at > '{since}'"),
        LIMIT,
        "the schedule trigger fires twice",
    );
    let who: Vec<String> =
        admin.query("SELECT DISTINCT who FROM public.it_t_log", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(who, vec!["postgres".to_owned()]);
    assert!(!superuser(&mut admin, "it_t_alice"));
    drop(alice);
    admin
        .batch_execute(&format!(
            "DELETE FROM automation_triggers.registry WHERE id = {trigger};
             DELETE FROM automation_workflows.definitions WHERE name IN ('it-t-alice');"
        ))
        .unwrap();
}

fn start_delayed_as(role: &str, workflow: &str, seconds: i32) -> String {
    let mut c = connect_as(role);
    c.query_one(
        "SELECT automation.run_workflow($1, '{}', now() + make_interval(secs => $2))::text",
        &[&workflow, &f64::from(seconds)],
    )
    .unwrap()
    .get(0)
}

fn finished(admin: &mut Client, id: &str) -> String {
    wait_for(
        admin,
        &format!("SELECT status NOT IN ('pending', 'running') FROM automation_workflows.workflow_executions WHERE id = '{id}'"),
        LIMIT,
        "the execution ends",
    );
    admin
        .query_one("SELECT status FROM automation_workflows.workflow_executions WHERE id = $1::text::uuid", &[&id])
        .unwrap()
        .get(0)
}

/// Executions belong to their role by oid: after DROP ROLE and CREATE ROLE
/// of the same name the dropped role's waiting step fails once, with the
/// reason, and never runs as the new role; after a rename, waiting steps
/// run as the renamed role.
#[test]
fn a_dropped_roles_step_fails_and_a_renamed_roles_step_runs() {
    let mut admin = connect();
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS public.it_t_who;
             CREATE TABLE public.it_t_who (who text);
             GRANT SELECT, INSERT ON public.it_t_who TO PUBLIC;",
        )
        .unwrap();
    for role in ["it_t_gone", "it_t_before", "it_t_after"] {
        admin.batch_execute(&format!("DROP ROLE IF EXISTS {role}")).unwrap();
    }
    admin.batch_execute("CREATE ROLE it_t_gone LOGIN IN ROLE automation_runner; CREATE ROLE it_t_before LOGIN IN ROLE automation_runner").unwrap();
    let step = r#"{"steps": [{"name": "who", "sql": "INSERT INTO public.it_t_who VALUES (current_user) RETURNING who"}]}"#;
    for (role, name) in [("it_t_gone", "it-t-gone"), ("it_t_before", "it-t-renamed")] {
        let mut c = connect_as(role);
        c.execute(
            "INSERT INTO automation_workflows.definitions (name, definition) VALUES ($1, $2::text::jsonb)",
            &[&name, &step],
        )
        .unwrap();
    }
    let gone = start_delayed_as("it_t_gone", "it-t-gone", 3);
    let renamed = start_delayed_as("it_t_before", "it-t-renamed", 3);
    admin
        .batch_execute(
            "DROP ROLE it_t_gone;
             CREATE ROLE it_t_gone LOGIN IN ROLE automation_runner;
             ALTER ROLE it_t_before RENAME TO it_t_after;",
        )
        .unwrap();
    assert_eq!(finished(&mut admin, &gone), "error");
    let (state, message): (String, String) = {
        let r = admin
            .query_one(
                "SELECT error->>'sqlstate', error->>'message' FROM automation_workflows.step_runs
                  WHERE execution_id = $1::text::uuid",
                &[&gone],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(state, "28000", "{message}");
    assert!(message.contains("no longer exists"), "{message}");
    assert_eq!(finished(&mut admin, &renamed), "success");
    let who: Vec<String> = admin.query("SELECT who FROM public.it_t_who", &[]).unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(who, vec!["it_t_after".to_owned()], "only the renamed role's step ran, as itself");
    admin
        .batch_execute(
            "DELETE FROM automation_workflows.workflow_executions WHERE workflow_name IN ('it-t-gone', 'it-t-renamed');
             DELETE FROM automation_workflows.definitions WHERE name IN ('it-t-gone', 'it-t-renamed');
             DROP ROLE it_t_gone; DROP ROLE it_t_after;",
        )
        .unwrap();
}

/// A step id is a step id of one database: cancelling one's own execution in
/// another database never stops another role's step that has the same id.
#[test]
fn cancelling_in_another_database_stops_only_that_databases_step() {
    let mut admin = connect();
    let other = "automation_it_tenancy_other";
    {
        let mut root = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
        root.batch_execute(&format!("DROP DATABASE IF EXISTS {other} WITH (FORCE)")).unwrap();
        root.batch_execute(&format!("CREATE DATABASE {other}")).unwrap();
    }
    let mut o = Client::connect(&conninfo_for(other), NoTls).unwrap();
    o.batch_execute("CREATE EXTENSION automation_ext").unwrap();
    runner(&mut admin, "it_t_bob");
    admin.batch_execute("DROP ROLE IF EXISTS it_t_mallory; CREATE ROLE it_t_mallory LOGIN IN ROLE automation_runner").unwrap();
    let sleepy = r#"{"steps": [{"name": "nap", "sql": "SELECT pg_sleep(30)"}]}"#;
    let mut bob = connect_as("it_t_bob");
    bob.execute(
        "INSERT INTO automation_workflows.definitions (name, definition) VALUES ('it-t-nap', $1::text::jsonb)",
        &[&sleepy],
    )
    .unwrap();
    let bobs: String = bob.query_one("SELECT automation.run_workflow('it-t-nap')::text", &[]).unwrap().get(0);
    let running = |c: &mut Client, db: &str| -> bool {
        c.query_one(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = $1 AND state = 'active'
                             AND application_name = 'automation_ext step worker' AND query = 'SELECT pg_sleep(30)')",
            &[&db],
        )
        .unwrap()
        .get(0)
    };
    let start = Instant::now();
    while !running(&mut admin, automation_ext_integration::DB) {
        assert!(start.elapsed() < LIMIT, "bob's step runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let bob_step: i64 = admin
        .query_one("SELECT id FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid", &[&bobs])
        .unwrap()
        .get(0);
    // mallory's step in the other database gets the same id
    o.batch_execute(&format!(
        "SELECT setval(pg_get_serial_sequence('automation_workflows.step_runs', 'id'), {bob_step} - 1, true)"
    ))
    .unwrap();
    let mut mallory = connect_as_to("it_t_mallory", other);
    mallory
        .execute(
            "INSERT INTO automation_workflows.definitions (name, definition) VALUES ('it-t-nap', $1::text::jsonb)",
            &[&sleepy],
        )
        .unwrap();
    let hers: String = mallory.query_one("SELECT automation.run_workflow('it-t-nap')::text", &[]).unwrap().get(0);
    let start = Instant::now();
    while !running(&mut admin, other) {
        assert!(start.elapsed() < LIMIT, "mallory's step runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let her_step: i64 = o
        .query_one("SELECT id FROM automation_workflows.step_runs WHERE execution_id = $1::text::uuid", &[&hers])
        .unwrap()
        .get(0);
    assert_eq!(her_step, bob_step, "the same step id in both databases");
    let cancelled: bool =
        mallory.query_one("SELECT automation.cancel_workflow($1::text::uuid)", &[&hers]).unwrap().get(0);
    assert!(cancelled);
    let start = Instant::now();
    while running(&mut admin, other) {
        assert!(start.elapsed() < Duration::from_secs(10), "mallory's own step stops");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(running(&mut admin, automation_ext_integration::DB), "bob's step, of the same id, still runs");
    // and mallory cannot cancel bob's from his database either
    let mut mallory_here = connect_as("it_t_mallory");
    let e = mallory_here.query_one("SELECT automation.cancel_workflow($1::text::uuid)", &[&bobs]).unwrap_err();
    assert_eq!(e.code().map(|s| s.code()), Some("42501"), "{e}");
    bob.query_one("SELECT automation.cancel_workflow($1::text::uuid)", &[&bobs]).unwrap();
    drop((bob, mallory, mallory_here, o));
    admin.batch_execute("DELETE FROM automation_workflows.definitions WHERE name = 'it-t-nap'").unwrap();
    let mut root = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    root.batch_execute(&format!("DROP DATABASE IF EXISTS {other} WITH (FORCE)")).unwrap();
}
