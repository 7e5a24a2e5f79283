//! Many databases on few worker slots (issue 14): with the budgets that
//! max_worker_processes = 16 leaves (4 schedulers and 8 runs at once in the
//! whole cluster), 100 databases with a job every 10 seconds (and their
//! default jobs) are all served: every fire runs, no run fails for want of a
//! slot, and the slots in use never exceed the budget. (bench/many_databases.sh
//! does the same on a cluster really limited to 16 worker processes.)
//! Beside them (issue 34), one more database with a 1-second job: its
//! scheduler stays as a resident — one process for the whole watch, never
//! absent — instead of leaving after each fire and waiting for a scheduler
//! slot behind the hundred.
//! In its own binary: it changes cluster-wide settings.

use std::time::{Duration, Instant};

use automation_ext_integration::{conninfo_for, Client, NoTls, SystemSettings};

const N: usize = 100;
const WORKERS: i64 = 8;
const SCHEDULERS: i64 = 4;
/// The job's period, and how long the test watches.
const PERIOD_S: u64 = 10;
const WATCH_S: u64 = 32;

fn db(name: &str) -> Client {
    Client::connect(&conninfo_for(name), NoTls).unwrap_or_else(|e| panic!("connect to {name}: {e}"))
}

fn name(i: usize) -> String {
    format!("automation_it_many_{i:02}")
}

/// The database of the 1-second job.
const SECONDLY: &str = "automation_it_many_secondly";
/// From how long after its scheduler is first seen (its first visit may
/// wait behind the hundred, and it becomes a resident at its first fire)
/// that scheduler must be there at every sample.
const SETTLE_S: u64 = 3;
/// Its scheduler is first seen within this of the start of the watch.
const FIRST_SEEN_S: u64 = 15;

/// The budgets for the test, back to the defaults when dropped.
/// (The test's databases are dropped first, then the settings reset.)
struct Budget(#[allow(dead_code)] SystemSettings);

impl Budget {
    fn set(admin: &mut Client) -> Budget {
        let settings = SystemSettings::set(
            admin,
            &[
                ("automation.max_workers", &WORKERS.to_string()),
                ("automation.scheduler_workers", &SCHEDULERS.to_string()),
            ],
        );
        std::thread::sleep(Duration::from_secs(2));
        Budget(settings)
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        if let Ok(mut admin) = Client::connect(&conninfo_for("postgres"), NoTls) {
            for i in 0..N {
                let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", name(i)));
            }
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {SECONDLY} WITH (FORCE)"));
        }
    }
}

#[test]
fn a_hundred_databases_share_four_schedulers_and_eight_workers() {
    let mut admin = db("postgres");
    let _budget = Budget::set(&mut admin);
    let state: (i32, i32) = admin
        .query_one(
            "SELECT current_setting('automation.max_workers')::int, current_setting('automation.scheduler_workers')::int",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(state, (WORKERS as i32, SCHEDULERS as i32));
    for i in 0..N {
        admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", name(i))).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {}", name(i))).unwrap();
        db(&name(i))
            .batch_execute(
                "CREATE EXTENSION automation_ext;
                 CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp());
                 SELECT automation.schedule('tick', '10 seconds', 'INSERT INTO public.ticks DEFAULT VALUES; SELECT pg_sleep(0.1)');",
            )
            .unwrap();
    }

    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {SECONDLY} WITH (FORCE)")).unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {SECONDLY}")).unwrap();
    db(SECONDLY)
        .batch_execute(
            "CREATE EXTENSION automation_ext;
             CREATE TABLE public.ticks (at timestamptz DEFAULT clock_timestamp());
             SELECT automation.schedule('tick', '1 seconds', 'INSERT INTO public.ticks DEFAULT VALUES');",
        )
        .unwrap();

    // while it runs, never more of our processes than the budget allows;
    // the 1-second job's scheduler: which process, at every sample
    let started = Instant::now();
    let (mut most_schedulers, mut most_runs) = (0i64, 0i64);
    let (mut samples, mut absent) = (0u32, 0u32);
    let mut resident_pids: Vec<i32> = Vec::new();
    let mut first_seen: Option<Duration> = None;
    // its activity line says it stays as a resident; no other says so
    let (mut said_resident, mut others_said_resident) = (0u32, 0i64);
    while started.elapsed() < Duration::from_secs(WATCH_S) {
        let r = admin
            .query_one(
                "SELECT count(*) FILTER (WHERE backend_type = 'automation_ext scheduler'),
                        count(*) FILTER (WHERE backend_type = 'automation_ext job'),
                        array_agg(pid) FILTER (WHERE backend_type = 'automation_ext scheduler' AND datname = $1),
                        coalesce(bool_or(query LIKE '%resident%')
                                 FILTER (WHERE backend_type = 'automation_ext scheduler' AND datname = $1), false),
                        count(*) FILTER (WHERE backend_type = 'automation_ext scheduler' AND datname <> $1
                                           AND query LIKE '%resident%')
                   FROM pg_stat_activity",
                &[&SECONDLY],
            )
            .unwrap();
        most_schedulers = most_schedulers.max(r.get(0));
        most_runs = most_runs.max(r.get(1));
        let pids: Option<Vec<i32>> = r.get(2);
        let says_resident: bool = r.get(3);
        others_said_resident += r.get::<_, i64>(4);
        if first_seen.is_none() && pids.is_some() {
            first_seen = Some(started.elapsed());
        }
        if first_seen.is_some_and(|t| started.elapsed() >= t + Duration::from_secs(SETTLE_S)) {
            samples += 1;
            if says_resident {
                said_resident += 1;
            }
            match pids {
                Some(pids) => {
                    for p in pids {
                        if !resident_pids.contains(&p) {
                            resident_pids.push(p);
                        }
                    }
                }
                None => absent += 1,
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most_schedulers <= SCHEDULERS, "{most_schedulers} schedulers at once, budget {SCHEDULERS}");
    let first_seen = first_seen.expect("the 1-second job's database got a scheduler");
    assert!(first_seen <= Duration::from_secs(FIRST_SEEN_S), "its first scheduler came after {first_seen:?}");
    assert_eq!(
        (resident_pids.len(), absent),
        (1, 0),
        "the 1-second job's scheduler stays (one process, present in all {samples} samples from {SETTLE_S} s after it came): pids {resident_pids:?}, absent {absent} times"
    );
    // (the line is written at each turn, from the previous turn's decision)
    assert!(
        said_resident * 10 >= samples * 9,
        "its activity line says it is a resident in {said_resident} of {samples} samples"
    );
    assert_eq!(others_said_resident, 0, "the 10-second jobs' schedulers are not residents");
    let detail: String = db(SECONDLY)
        .query_one(
            "SELECT coalesce(string_agg(detail, ' | '), '') FROM automation.scheduler_status()
              WHERE component = 'scheduler' AND database = current_database()",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(detail.contains("resident"), "scheduler_status() shows the resident: {detail:?}");
    assert!(most_runs <= WORKERS, "{most_runs} runs at once, budget {WORKERS}");
    assert!(most_runs >= 1, "the run workers were seen at work");

    // every database's job ran, none failed, and lateness is recorded
    let mut lateness_ms: Vec<f64> = Vec::new();
    for i in 0..N {
        let mut c = db(&name(i));
        let r = c
            .query_one(
                "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'),
                        count(*) FILTER (WHERE status IN ('succeeded', 'failed') AND start_time IS NULL)
                   FROM automation.job_run_details",
                &[],
            )
            .unwrap();
        let (ok, failed, no_start): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let least = (WATCH_S / PERIOD_S) as i64 - 1;
        assert!(ok >= least, "{}: only {ok} runs succeeded in {WATCH_S} s of a {PERIOD_S}-second job", name(i));
        assert_eq!(failed, 0, "{}: {failed} runs failed (no run may fail for want of a slot)", name(i));
        assert_eq!(no_start, 0);
        let ticks: i64 = c.query_one("SELECT count(*) FROM public.ticks", &[]).unwrap().get(0);
        assert!(ticks >= least, "{}: {ticks} ticks", name(i));
        for row in c
            .query(
                "SELECT extract(epoch FROM start_time - scheduled_for)::float8 * 1000 FROM automation.job_run_details
                  WHERE status = 'succeeded' AND scheduled_for IS NOT NULL",
                &[],
            )
            .unwrap()
        {
            lateness_ms.push(row.get(0));
        }
    }
    // every fire of the 1-second job ran; its interval error (printed, not a threshold)
    let mut c = db(SECONDLY);
    let r = c
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FILTER (WHERE status = 'failed'),
                    coalesce(array_agg(abs(extract(epoch FROM d) * 1000 - 1000)::float8) FILTER (WHERE d IS NOT NULL), '{}')
               FROM (SELECT status, start_time - lag(start_time) OVER (ORDER BY start_time) AS d
                       FROM automation.job_run_details) s",
            &[],
        )
        .unwrap();
    let (ok, failed, mut errors): (i64, i64, Vec<f64>) = (r.get(0), r.get(1), r.get(2));
    assert_eq!(failed, 0);
    let least = (WATCH_S - first_seen.as_secs() - SETTLE_S) as i64;
    assert!(ok >= least, "{SECONDLY}: {ok} runs of a 1-second job in {WATCH_S} s (its scheduler came after {first_seen:?})");
    errors.sort_by(|a, b| a.total_cmp(b));
    println!(
        "the 1-second job beside them: {ok} runs, interval error p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        errors[errors.len() / 2],
        errors[(errors.len() - 1) * 95 / 100],
        errors[errors.len() - 1]
    );

    lateness_ms.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| lateness_ms[((lateness_ms.len() - 1) as f64 * q) as usize];
    assert!(lateness_ms.iter().all(|l| *l >= 0.0), "no run starts before it is due");
    // the figures go to the test's output (not a threshold: machines are noisy)
    println!(
        "{} runs over {N} databases with {SCHEDULERS} schedulers and {WORKERS} workers: start lateness p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        lateness_ms.len(),
        p(0.5),
        p(0.95),
        p(1.0)
    );
}
