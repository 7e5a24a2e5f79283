//! The scheduler's background workers, against the running cluster: who runs
//! a job, what is recorded, top-level commands, overlap, timeouts, changes
//! picked up live, new databases.

use std::time::Duration;

use automation_ext_integration::{connect, conninfo_for, wait_for, Client, NoTls};

const LIMIT: Duration = Duration::from_secs(30);

fn one<T: for<'a> postgres::types::FromSql<'a>>(c: &mut Client, sql: &str) -> T {
    c.query_one(sql, &[]).unwrap().get(0)
}

/// Schedule as the current role of `c`; returns the jobid.
fn schedule(c: &mut Client, name: &str, schedule: &str, command: &str) -> i64 {
    c.query_one("SELECT automation.schedule($1, $2, $3)", &[&name, &schedule, &command]).unwrap().get(0)
}

fn unschedule(c: &mut Client, jobid: i64) {
    c.execute("SELECT automation.unschedule($1::bigint)", &[&jobid]).unwrap();
}

#[test]
fn a_job_runs_as_its_owner_with_only_the_owners_privileges() {
    let mut c = connect();
    c.batch_execute(
        "DROP ROLE IF EXISTS it_job_owner;
         CREATE ROLE it_job_owner LOGIN IN ROLE automation_runner;
         CREATE TABLE public.it_whoami (who text, session_who text);
         GRANT USAGE ON SCHEMA public TO it_job_owner;
         GRANT INSERT ON public.it_whoami TO it_job_owner;
         CREATE TABLE public.it_secret (x int);
         SET ROLE it_job_owner;",
    )
    .unwrap();
    let mine =
        schedule(&mut c, "it-whoami", "1 second", "INSERT INTO public.it_whoami SELECT current_user, session_user");
    let theirs = schedule(&mut c, "it-secret", "1 second", "SELECT * FROM public.it_secret");
    c.batch_execute("RESET ROLE").unwrap();
    wait_for(&mut c, "SELECT count(*) > 0 FROM public.it_whoami", LIMIT, "the job's row");
    let (who, session_who): (String, String) = {
        let r = c.query_one("SELECT who, session_who FROM public.it_whoami LIMIT 1", &[]).unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((who.as_str(), session_who.as_str()), ("it_job_owner", "it_job_owner"));
    let refused =
        format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {theirs} AND status = 'failed'");
    wait_for(&mut c, &refused, LIMIT, "the refused run");
    let message: String = one(&mut c, &format!("SELECT return_message FROM automation.job_run_details WHERE jobid = {theirs} AND status = 'failed' LIMIT 1"));
    assert!(message.contains("permission denied for table it_secret"), "{message}");
    let user: String =
        one(&mut c, &format!("SELECT username FROM automation.job_run_details WHERE jobid = {mine} LIMIT 1"));
    assert_eq!(user, "it_job_owner");
    c.batch_execute(&format!(
        "DELETE FROM automation.job WHERE jobid IN ({mine}, {theirs});
         DROP TABLE public.it_whoami, public.it_secret;
         REVOKE USAGE ON SCHEMA public FROM it_job_owner;"
    ))
    .unwrap();
}

#[test]
fn failures_are_recorded_with_their_error_and_counted() {
    let mut c = connect();
    let job = schedule(&mut c, "it-fails", "1 second", "SELECT 1/0");
    let sql = format!("SELECT consecutive_failures >= 2 FROM automation.job WHERE jobid = {job}");
    wait_for(&mut c, &sql, LIMIT, "two failures in a row");
    let r = c
        .query_one(
            &format!(
                "SELECT status, return_message, end_time >= start_time, job_pid > 0
                   FROM automation.job_run_details WHERE jobid = {job} AND status = 'failed' ORDER BY runid LIMIT 1"
            ),
            &[],
        )
        .unwrap();
    assert_eq!(r.get::<_, String>(1), "division by zero [SQLSTATE 22012]");
    assert!(r.get::<_, bool>(2), "end before start");
    assert!(r.get::<_, bool>(3), "no pid recorded");
    let last: String = one(&mut c, &format!("SELECT last_status FROM automation.job WHERE jobid = {job}"));
    assert_eq!(last, "failed");
    unschedule(&mut c, job);
}

#[test]
fn commands_run_at_top_level_vacuum_concurrent_index_commit() {
    let mut c = connect();
    c.batch_execute(
        "CREATE TABLE public.it_top (x int);
         INSERT INTO public.it_top SELECT generate_series(1, 1000);
         CREATE PROCEDURE public.it_commits() LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO public.it_top VALUES (-1); COMMIT;
             INSERT INTO public.it_top VALUES (-2); COMMIT;
         END $$;",
    )
    .unwrap();
    let jobs = [
        schedule(&mut c, "it-vacuum", "1 second", "VACUUM (ANALYZE) public.it_top"),
        schedule(&mut c, "it-cic", "1 second", "CREATE INDEX CONCURRENTLY IF NOT EXISTS it_top_x ON public.it_top (x)"),
        schedule(&mut c, "it-commit", "1 second", "CALL public.it_commits()"),
        // several statements form one implicit transaction, as in psql -c
        schedule(&mut c, "it-multi", "1 second", "SELECT 1; VACUUM public.it_top"),
    ];
    for job in &jobs[..3] {
        let sql =
            format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded'");
        wait_for(&mut c, &sql, LIMIT, &format!("a successful run of job {job}"));
    }
    let tags: Vec<String> = jobs[..3]
        .iter()
        .map(|job| one(&mut c, &format!("SELECT return_message FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded' LIMIT 1")))
        .collect();
    assert_eq!(tags, vec!["VACUUM", "CREATE INDEX", "CALL"]);
    let valid: bool = one(&mut c, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.it_top_x'::regclass");
    assert!(valid, "the concurrently built index is not valid");
    let committed: i64 = one(&mut c, "SELECT count(*) FROM public.it_top WHERE x < 0");
    assert!(committed >= 2);
    let sql =
        format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {} AND status = 'failed'", jobs[3]);
    wait_for(&mut c, &sql, LIMIT, "the multi-statement VACUUM's refusal");
    let message: String = one(
        &mut c,
        &format!(
            "SELECT return_message FROM automation.job_run_details WHERE jobid = {} AND status = 'failed' LIMIT 1",
            jobs[3]
        ),
    );
    assert!(message.contains("VACUUM cannot run inside a transaction block"), "{message}");
    for job in jobs {
        unschedule(&mut c, job);
    }
}

#[test]
fn a_job_never_overlaps_itself_and_fires_stay_on_the_grid() {
    let mut c = connect();
    let job = schedule(&mut c, "it-slow", "1 second", "SELECT pg_sleep(2.5)");
    let grid: String = one(&mut c, &format!("SELECT next_run_at::text FROM automation.job WHERE jobid = {job}"));
    let sql = format!(
        "SELECT count(*) FILTER (WHERE status = 'skipped') >= 3 AND count(*) FILTER (WHERE status = 'succeeded') >= 2
           FROM automation.job_run_details WHERE jobid = {job}"
    );
    wait_for(&mut c, &sql, LIMIT, "skipped and finished runs");
    unschedule(&mut c, job);
    // no two runs of the job were ever in progress at once
    let overlaps: i64 = one(
        &mut c,
        &format!(
            "SELECT count(*) FROM automation.job_run_details a JOIN automation.job_run_details b
                ON a.jobid = b.jobid AND a.runid < b.runid
             WHERE a.jobid = {job} AND a.status IN ('succeeded', 'failed') AND b.status IN ('succeeded', 'failed')
               AND b.start_time < a.end_time"
        ),
    );
    assert_eq!(overlaps, 0);
    let message: String = one(
        &mut c,
        &format!(
            "SELECT return_message FROM automation.job_run_details WHERE jobid = {job} AND status = 'skipped' LIMIT 1"
        ),
    );
    assert!(message.starts_with("skipped: the previous run (runid "), "{message}");
    // every fire is due on the job's grid (a whole number of seconds after
    // the next run it was given when scheduled), and started no earlier
    let off_grid: i64 = one(
        &mut c,
        &format!(
            "SELECT count(*) FROM automation.job_run_details
              WHERE jobid = {job} AND (scheduled_for < '{grid}'
                                       OR extract(epoch FROM scheduled_for - '{grid}')::numeric % 1 <> 0
                                       OR (status <> 'skipped' AND start_time < scheduled_for))"
        ),
    );
    assert_eq!(off_grid, 0);
}

/// (issue 34, 0.11.0) The clones of one template do not keep the
/// template's grid: a cloned job forgets its stored next run, so each clone's
/// `'N seconds'` jobs (and its default jobs) start their grid when the clone
/// is first visited — a fleet made with `CREATE DATABASE ... TEMPLATE` does
/// not fire in one instant.
#[test]
fn the_clones_of_one_template_fire_apart() {
    let (mut admin, mut t) = automation_ext_integration::fresh_database("it_grid_template");
    t.batch_execute("SELECT automation.schedule('it-clone-tick', '2 seconds', 'SELECT 1')").unwrap();
    drop(t);
    let clones = ["it_grid_clone_a", "it_grid_clone_b"];
    for (i, clone) in clones.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(700));
        }
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {clone} WITH (FORCE)")).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {clone} TEMPLATE it_grid_template")).unwrap();
    }
    let mut fires: Vec<Vec<String>> = Vec::new();
    for clone in clones {
        let mut c = Client::connect(&conninfo_for(clone), NoTls).unwrap();
        wait_for(
            &mut c,
            "SELECT count(*) >= 3 FROM automation.job_run_details d JOIN automation.job j USING (jobid)
              WHERE j.jobname = 'it-clone-tick' AND d.status = 'succeeded'",
            LIMIT,
            &format!("three runs of the cloned job in {clone}"),
        );
        c.batch_execute("UPDATE automation.job SET active = false WHERE jobname = 'it-clone-tick'").unwrap();
        let rows = c
            .query(
                "SELECT d.scheduled_for::text FROM automation.job_run_details d JOIN automation.job j USING (jobid)
                  WHERE j.jobname = 'it-clone-tick'",
                &[],
            )
            .unwrap();
        fires.push(rows.iter().map(|r| r.get(0)).collect());
    }
    let shared: Vec<&String> = fires[0].iter().filter(|f| fires[1].contains(f)).collect();
    for n in clones.iter().chain(["it_grid_template"].iter()) {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)")).unwrap();
    }
    assert!(shared.is_empty(), "two clones of one template fired in the same instants: {shared:?}");
}

/// (issue 34, 0.11.0) `'N seconds'` counts from when the job was scheduled,
/// as pg_cron 1.5 does, not from multiples of N: two 2-second jobs scheduled
/// 0.7 s apart never fire in the same instant (the 10-second jobs of a
/// hundred databases no longer all fall in one), each stays on its own grid
/// however late a run starts, and an `alter_job` that leaves the schedule
/// keeps it.
#[test]
fn seconds_jobs_scheduled_apart_fire_apart_each_on_its_own_grid() {
    let mut c = connect();
    let a = schedule(&mut c, "it-grid-a", "2 seconds", "SELECT 1");
    std::thread::sleep(Duration::from_millis(700));
    let b = schedule(&mut c, "it-grid-b", "2 seconds", "SELECT 2");
    let grid = |c: &mut Client, job: i64| -> String {
        one(c, &format!("SELECT next_run_at::text FROM automation.job WHERE jobid = {job}"))
    };
    let (grid_a, grid_b) = (grid(&mut c, a), grid(&mut c, b));
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) FILTER (WHERE jobid = {a}) >= 3 AND count(*) FILTER (WHERE jobid = {b}) >= 3
               FROM automation.job_run_details WHERE jobid IN ({a}, {b}) AND status = 'succeeded'"
        ),
        LIMIT,
        "three runs of each 2-second job",
    );
    // altered while its next run is still to come (not in the instant
    // between a fire and the scheduler writing the next one)
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) = 1 FROM (SELECT automation.alter_job(jobid, priority => 1) FROM automation.job
                                        WHERE jobid = {a} AND next_run_at > now() + interval '300 milliseconds') t"
        ),
        LIMIT,
        "a moment to alter the job",
    );
    let kept: String = grid(&mut c, a);
    let on_grid: bool =
        one(&mut c, &format!("SELECT extract(epoch FROM '{kept}'::timestamptz - '{grid_a}')::numeric % 2 = 0"));
    assert!(on_grid, "alter_job(priority) moved the job off its grid: {kept} (grid from {grid_a})");
    wait_for(
        &mut c,
        &format!(
            "SELECT count(*) >= 2 FROM automation.job_run_details
              WHERE jobid = {a} AND status = 'succeeded' AND scheduled_for >= '{kept}'"
        ),
        LIMIT,
        "two more runs of the altered job",
    );
    unschedule(&mut c, a);
    unschedule(&mut c, b);
    let same_instant: i64 = one(
        &mut c,
        &format!(
            "SELECT count(*) FROM automation.job_run_details x JOIN automation.job_run_details y
                 ON x.scheduled_for = y.scheduled_for
              WHERE x.jobid = {a} AND y.jobid = {b}"
        ),
    );
    assert_eq!(same_instant, 0, "two jobs scheduled 0.7 s apart fired in the same instant");
    for (job, grid) in [(a, &grid_a), (b, &grid_b)] {
        let (runs, off_grid): (i64, i64) = {
            let r = c
                .query_one(
                    &format!(
                        "SELECT count(*), count(*) FILTER (WHERE scheduled_for < '{grid}'
                                   OR extract(epoch FROM scheduled_for - '{grid}')::numeric % 2 <> 0)
                           FROM automation.job_run_details WHERE jobid = {job}"
                    ),
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1))
        };
        assert!(runs >= 3, "job {job}: {runs} runs");
        assert_eq!(off_grid, 0, "job {job}: runs off the grid that starts at {grid}");
    }
}

#[test]
fn the_timeout_cancels_a_run() {
    let mut c = connect();
    let job: i64 = one(
        &mut c,
        "SELECT automation.schedule_in_database('it-timeout', '1 second', 'SELECT pg_sleep(20)', current_database(),
                                                timeout => '300 ms')",
    );
    let sql = format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {job} AND status = 'failed'");
    wait_for(&mut c, &sql, LIMIT, "the timed-out run");
    let r = c
        .query_one(
            &format!(
                "SELECT return_message, end_time - start_time < interval '10 seconds'
                   FROM automation.job_run_details WHERE jobid = {job} AND status = 'failed' LIMIT 1"
            ),
            &[],
        )
        .unwrap();
    let message: String = r.get(0);
    assert!(message.contains("canceling statement due to statement timeout"), "{message}");
    assert!(r.get::<_, bool>(1), "the run was not cut short");
    unschedule(&mut c, job);
}

#[test]
fn changes_are_picked_up_without_a_restart() {
    let mut c = connect();
    let job = schedule(&mut c, "it-live", "0 0 1 1 *", "SELECT 'live'");
    std::thread::sleep(Duration::from_secs(2));
    let none: i64 = one(&mut c, &format!("SELECT count(*) FROM automation.job_run_details WHERE jobid = {job}"));
    assert_eq!(none, 0, "a yearly job ran");
    c.execute("SELECT automation.alter_job($1::bigint, schedule => '1 second')", &[&job]).unwrap();
    let sql =
        format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded'");
    wait_for(&mut c, &sql, LIMIT, "a run after alter_job");
    let next_set: bool = one(
        &mut c,
        &format!("SELECT next_run_at > now() - interval '5 seconds' FROM automation.job WHERE jobid = {job}"),
    );
    assert!(next_set);
    // deactivated: no new runs start
    c.execute("SELECT automation.alter_job($1::bigint, active => false)", &[&job]).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let before: i64 = one(&mut c, &format!("SELECT max(runid) FROM automation.job_run_details WHERE jobid = {job}"));
    std::thread::sleep(Duration::from_secs(3));
    let after: i64 = one(&mut c, &format!("SELECT max(runid) FROM automation.job_run_details WHERE jobid = {job}"));
    assert_eq!(before, after, "an inactive job ran");
    unschedule(&mut c, job);
}

#[test]
fn a_new_database_gets_a_scheduler_and_can_still_be_dropped() {
    // the test database first: its CREATE EXTENSION makes the cluster's
    // roles, which two concurrent first installs would both try to create
    drop(connect());
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    admin.batch_execute("DROP DATABASE IF EXISTS it_newdb WITH (FORCE)").unwrap();
    admin.batch_execute("CREATE DATABASE it_newdb").unwrap();
    {
        let mut c = Client::connect(&conninfo_for("it_newdb"), NoTls).unwrap();
        c.batch_execute("CREATE EXTENSION automation_ext").unwrap();
        let job = schedule(&mut c, "it-new", "1 second", "SELECT 1");
        let sql =
            format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded'");
        wait_for(&mut c, &sql, LIMIT, "a run in the new database");
        let schedulers: i64 = one(
            &mut c,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'automation_ext scheduler' AND datname = 'it_newdb'",
        );
        // schedulers come and go with the work (0.3.0); never two at once
        assert!(schedulers <= 1, "{schedulers} schedulers in one database");
    }
    // no FORCE: the scheduler connected to it must not stand in the way
    admin.batch_execute("DROP DATABASE it_newdb").unwrap();
}

/// A database still at the previous version (the new library is installed,
/// ALTER EXTENSION not run yet) waits: its jobs do not run and its scheduler
/// does not fail over and over on columns it does not have; the update
/// starts them.
#[test]
fn a_database_at_the_previous_version_waits_for_its_update() {
    // the test database first: its CREATE EXTENSION makes the cluster's
    // roles, which two concurrent first installs would both try to create
    drop(connect());
    let mut admin = Client::connect(&conninfo_for("postgres"), NoTls).unwrap();
    // 0.5.0 lacks 0.6.0's columns; 0.6.0 lacks 0.7.0's functions (a 0.6.0
    // database made the 0.7.0 scheduler fail at every recorded run until
    // the check learned 0.7.0's mark)
    for version in ["0.5.0", "0.6.0"] {
        admin.batch_execute("DROP DATABASE IF EXISTS it_olddb WITH (FORCE)").unwrap();
        admin.batch_execute("CREATE DATABASE it_olddb").unwrap();
        let mut c = Client::connect(&conninfo_for("it_olddb"), NoTls).unwrap();
        c.batch_execute(&format!("CREATE EXTENSION automation_ext VERSION '{version}'")).unwrap();
        let job = schedule(&mut c, "it-old", "1 second", "SELECT 1");
        c.batch_execute("SELECT automation.wake_scheduler()").unwrap();
        std::thread::sleep(Duration::from_secs(4));
        let runs: i64 = one(&mut c, &format!("SELECT count(*) FROM automation.job_run_details WHERE jobid = {job}"));
        assert_eq!(runs, 0, "no run before the update from {version}");
        if let Ok(path) = std::env::var("AUTOMATION_TEST_LOG") {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                !log.lines().any(|l| l.contains("column \"next_attempt\" does not exist")
                    || l.contains("column \"timezone\" does not exist")
                    || l.contains("function automation.job_run_succeeded(")
                    || l.contains("cannot unpin unknown segment handle")),
                "the scheduler used a schema it does not know ({version})"
            );
        }
        c.batch_execute("ALTER EXTENSION automation_ext UPDATE").unwrap();
        let sql =
            format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {job} AND status = 'succeeded'");
        wait_for(&mut c, &sql, LIMIT, "a run once the database is updated");
        drop(c);
        admin.batch_execute("DROP DATABASE it_olddb WITH (FORCE)").unwrap();
    }
}

/// 0.6.0: a run worker stays a moment after its run and takes the next run
/// of its database and role (no fork, no connection) — in a session reset
/// as DISCARD ALL does: no setting, temporary table or role of the previous
/// run is left.
#[test]
fn a_worker_that_stays_runs_the_next_run_in_a_clean_session() {
    let mut c = connect();
    c.batch_execute(
        "CREATE TABLE public.it_reuse (pid int, work_mem text, leftover boolean, who text);
         DROP ROLE IF EXISTS it_reuse_other; CREATE ROLE it_reuse_other;",
    )
    .unwrap();
    let mut jobs = Vec::new();
    for i in 0..10 {
        // more runs due at once than max_running_jobs (5): the later ones
        // wait for a slot, and a finishing worker takes them
        jobs.push(schedule(
            &mut c,
            &format!("it-reuse-dirty-{i}"),
            "1 second",
            "SET work_mem = '77MB'; CREATE TEMP TABLE it_leftover (); SET ROLE it_reuse_other; \
             SELECT pg_sleep(0.02)",
        ));
        jobs.push(schedule(
            &mut c,
            &format!("it-reuse-check-{i}"),
            "1 second",
            "INSERT INTO public.it_reuse SELECT pg_backend_pid(), current_setting('work_mem'), \
             to_regclass('pg_temp.it_leftover') IS NOT NULL, current_user",
        ));
    }
    // meanwhile: an idle worker's activity line says what it waits for,
    // never the last run's command as if it were running it
    let (mut idle_seen, mut idle_with_command) = (0, Vec::new());
    let watching = std::time::Instant::now();
    while watching.elapsed() < Duration::from_secs(6) {
        for row in c
            .query(
                "SELECT query FROM pg_stat_activity
                  WHERE application_name = 'automation_ext worker (idle)' AND datname = current_database()",
                &[],
            )
            .unwrap()
        {
            let query: String = row.get(0);
            if query == "waiting for another run of this database and role" {
                idle_seen += 1;
            } else if query.contains("it_reuse") || query.contains("pg_sleep") {
                idle_with_command.push(query);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        idle_with_command.is_empty(),
        "{} samples of idle workers showing a run's command, first: {:?}",
        idle_with_command.len(),
        idle_with_command.first()
    );
    assert!(idle_seen > 0, "an idle worker was seen waiting");
    for job in &jobs {
        c.execute("UPDATE automation.job SET active = false WHERE jobid = $1", &[job]).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let list = jobs.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let (runs, workers): (i64, i64) = {
        let r = c
            .query_one(
                &format!(
                    "SELECT count(*), count(DISTINCT job_pid) FROM automation.job_run_details
                      WHERE jobid IN ({list}) AND job_pid IS NOT NULL"
                ),
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert!(runs >= 40, "{runs} runs");
    let dirty_ok: i64 = one(
        &mut c,
        &format!(
            "SELECT count(*) FROM automation.job_run_details d JOIN automation.job j USING (jobid)
              WHERE d.jobid IN ({list}) AND j.jobname LIKE 'it-reuse-dirty-%' AND d.status = 'succeeded'"
        ),
    );
    assert!(dirty_ok >= 20, "the runs that leave state behind ran: {dirty_ok}");
    // every check ran as the job's owner (a leftover SET ROLE would make its
    // INSERT fail), and saw none of the settings
    let checks_failed: i64 = one(
        &mut c,
        &format!(
            "SELECT count(*) FROM automation.job_run_details d JOIN automation.job j USING (jobid)
              WHERE d.jobid IN ({list}) AND j.jobname LIKE 'it-reuse-check-%' AND d.status = 'failed'"
        ),
    );
    assert_eq!(checks_failed, 0, "a check run failed: it inherited an earlier run's session");
    assert!(workers < runs, "no worker took a second run: {workers} workers for {runs} runs");
    let (checks, dirty, default_work_mem): (i64, i64, String) = {
        let r = c
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE work_mem = '77MB' OR leftover OR who <> current_user),
                        current_setting('work_mem')
                   FROM public.it_reuse",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(checks >= 20, "{checks} checks ran");
    assert_eq!(dirty, 0, "a run saw what an earlier run of its worker left (default work_mem {default_work_mem})");
    for job in &jobs {
        unschedule(&mut c, *job);
    }
    c.batch_execute("DROP TABLE public.it_reuse; DROP ROLE it_reuse_other").unwrap();
}

/// Issue 34: a visit of a database's worker no longer looks at the
/// execution log, the trigger inbox and the SQL steps each time it starts
/// (a third of a fire's CPU in a cluster of 100 databases): only what a
/// commit announced, plus a sweep of everything at the first visit since
/// the server started and then once a minute, or when somebody asks
/// (`wake_scheduler()`, CREATE EXTENSION). A row restored into the log
/// without a commit that announces it (a data-only pg_restore) waits for
/// the sweep — and `wake_scheduler()` brings it at once. (This failed on
/// the code before: every visit recorded it.)
#[test]
fn a_visit_sweeps_once_a_minute_or_when_asked_not_every_time() {
    let (mut admin, mut c) = automation_ext_integration::fresh_database("it_sweep");
    c.batch_execute(
        "INSERT INTO automation_workflows.definitions (name, definition) VALUES ('it-sweep', '{}');
         -- a job every 5 seconds: its worker leaves between two fires, so
         -- each fire is a new visit
         SELECT automation.schedule('it-sweep-tick', '5 seconds', 'SELECT 1');",
    )
    .unwrap();
    // a finished execution as a data-only restore writes it: straight into
    // the log, no commit that tells the scheduler
    let restore = |c: &mut Client| -> String {
        one(
            c,
            "INSERT INTO automation_workflows.execution_log (id, workflow_name, status, started_at, completed_at, attempts)
             VALUES (automation.uuid_v7(), 'it-sweep', 'success', now(), now(), 1) RETURNING id::text",
        )
    };
    let recorded = |c: &mut Client, id: &str| -> bool {
        c.query_one("SELECT EXISTS (SELECT FROM automation_workflows.workflow_executions WHERE id = $1::text::uuid)", &[&id])
            .unwrap()
            .get(0)
    };
    // asked: the next visit looks at everything
    let first = restore(&mut c);
    let asked: std::time::SystemTime = one(&mut c, "SELECT clock_timestamp()");
    c.batch_execute("SELECT automation.wake_scheduler()").unwrap();
    let t = std::time::Instant::now();
    // (and a visit that started after the request took it: a request that
    // arrives during a sweep is kept for the next visit, so one made while
    // CREATE EXTENSION's first visit swept would make the next one sweep)
    let mut taken = false;
    while !recorded(&mut c, &first) || !taken {
        assert!(t.elapsed() < LIMIT, "a restored execution is recorded after wake_scheduler()");
        taken = taken
            || c.query_one(
                "SELECT EXISTS (SELECT FROM pg_stat_activity
                  WHERE datname = 'it_sweep' AND backend_type = 'automation_ext scheduler' AND backend_start > $1)",
                &[&asked],
            )
            .unwrap()
            .get::<_, bool>(0);
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1)); // its sweep is over
    // not asked: the visits of the next ~20 seconds (new workers, seen by
    // their backend_start) leave it in the log
    let second = restore(&mut c);
    let since: std::time::SystemTime = one(&mut c, "SELECT now()");
    let t = std::time::Instant::now();
    let mut new_visits = std::collections::BTreeSet::new();
    while t.elapsed() < Duration::from_secs(20) {
        for row in c
            .query(
                "SELECT pid FROM pg_stat_activity
                  WHERE datname = 'it_sweep' AND backend_type = 'automation_ext scheduler' AND backend_start > $1",
                &[&since],
            )
            .unwrap()
        {
            new_visits.insert(row.get::<_, i32>(0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(new_visits.len() >= 2, "the 5-second job's worker left and came back ({new_visits:?})");
    assert!(!recorded(&mut c, &second), "visits that do not sweep leave an unannounced row to the sweep");
    let runs: i64 = one(
        &mut c,
        "SELECT count(*) FROM automation.job_run_details d JOIN automation.job j USING (jobid)
          WHERE j.jobname = 'it-sweep-tick' AND d.status = 'succeeded'",
    );
    assert!(runs >= 4, "the job ran meanwhile ({runs} runs)");
    // asked again: recorded at once
    c.batch_execute("SELECT automation.wake_scheduler()").unwrap();
    let t = std::time::Instant::now();
    while !recorded(&mut c, &second) {
        assert!(t.elapsed() < LIMIT, "recorded after wake_scheduler()");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(c);
    admin.batch_execute("DROP DATABASE it_sweep WITH (FORCE)").unwrap();
}

/// Seen in CI (PostgreSQL 18, the upgrade regression test, stop 48): an
/// extension dropped and created again while its database's scheduler did
/// not leave numbers its jobs from 1 again, and the scheduler took the new
/// table's jobs for the ones it had loaded from the old table under the same
/// jobids — their next fires overwrote the next runs the new table held.
/// Here the DROP and the CREATE are one transaction (the scheduler never sees
/// the extension missing), the new job gets the old job's jobid, and its next
/// run, set in the transaction that schedules it (docs/scheduler.md), is
/// far away: it must be kept and the job must not run.
#[test]
fn a_recreated_extension_is_not_taken_for_the_dropped_one() {
    let (mut admin, mut c) = automation_ext_integration::fresh_database("it_recreated_extension");
    // every second: the database's scheduler stays (visit::resident)
    let old = schedule(&mut c, "it-recreated", "1 second", "SELECT 1");
    wait_for(
        &mut c,
        &format!("SELECT count(*) >= 2 FROM automation.job_run_details WHERE jobid = {old} AND status = 'succeeded'"),
        LIMIT,
        "two runs of the job of the first extension",
    );
    let scheduler: i32 = one(
        &mut c,
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'automation_ext scheduler' AND datname = current_database()",
    );
    c.batch_execute(
        "BEGIN;
         DROP EXTENSION automation_ext CASCADE;
         CREATE EXTENSION automation_ext;",
    )
    .unwrap();
    let new = schedule(&mut c, "it-recreated", "1 second", "SELECT 1");
    // another job every second keeps the scheduler in the database
    c.batch_execute(
        "UPDATE automation.job SET next_run_at = '2100-01-01 00:00:00+00' WHERE jobname = 'it-recreated';
         SELECT automation.schedule('it-recreated-keeper', '1 second', 'SELECT 2');
         COMMIT",
    )
    .unwrap();
    assert_eq!(new, old, "the new job has the dropped job's jobid (else this test proves nothing)");
    std::thread::sleep(Duration::from_secs(4));
    let still: bool = one(
        &mut c,
        &format!("SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = {scheduler} AND datname = current_database()"),
    );
    let kept: bool =
        one(&mut c, &format!("SELECT next_run_at = '2100-01-01 00:00:00+00' FROM automation.job WHERE jobid = {new}"));
    let runs: i64 = one(&mut c, &format!("SELECT count(*) FROM automation.job_run_details WHERE jobid = {new}"));
    drop(c);
    admin.batch_execute("DROP DATABASE it_recreated_extension WITH (FORCE)").unwrap();
    assert!(still, "the scheduler stayed through the DROP and CREATE (else this test proves nothing)");
    assert!(kept, "the next run set with the schedule was overwritten");
    assert_eq!(runs, 0, "the new job ran at the dropped job's fires");
}

/// A run still going when its extension is dropped and created again (in
/// one transaction, its scheduler staying) ends after the new table has
/// jobs and runs with the same ids: its outcome belongs to a job that is
/// gone and must not be recorded against the new job with its jobid (nor
/// on the new table's run with its runid).
#[test]
fn a_run_of_the_dropped_extension_is_not_recorded_in_the_new_one() {
    let (mut admin, mut c) = automation_ext_integration::fresh_database("it_recreated_run");
    let old =
        schedule(&mut c, "it-recreated-run", "1 second", "DO $$ BEGIN PERFORM pg_sleep(3); PERFORM 1 / 0; END $$");
    wait_for(
        &mut c,
        &format!("SELECT count(*) > 0 FROM automation.job_run_details WHERE jobid = {old} AND status = 'running'"),
        LIMIT,
        "a run of the first extension's job",
    );
    c.batch_execute(
        "BEGIN;
         DROP EXTENSION automation_ext CASCADE;
         CREATE EXTENSION automation_ext;",
    )
    .unwrap();
    let new = schedule(&mut c, "it-recreated-run", "1 second", "SELECT 2");
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(new, old, "the new job has the dropped job's jobid (else this test proves nothing)");
    // the old run fails about three seconds after it started; the new job
    // runs every second meanwhile
    std::thread::sleep(Duration::from_secs(5));
    let runs: i64 = one(
        &mut c,
        &format!("SELECT count(*) FROM automation.job_run_details WHERE jobid = {new} AND status = 'succeeded'"),
    );
    let failed: i64 = one(
        &mut c,
        &format!(
            "SELECT ((SELECT count(*) FROM automation.job_run_details WHERE status = 'failed')
                  + (SELECT coalesce(sum(failed), 0) FROM automation.job_run_stats WHERE jobid = {new}))::int8"
        ),
    );
    drop(c);
    admin.batch_execute("DROP DATABASE it_recreated_run WITH (FORCE)").unwrap();
    assert_eq!(failed, 0, "the dropped job's failure was recorded in the new extension");
    // (nor does the new job wait for the dropped one's run: its fires would
    // be skipped as overlapping it)
    assert!(runs >= 3, "the new job ran {runs} time(s) in 5 seconds, firing every second");
}
