//! Monitoring against a real cluster with real concurrent sessions.

use std::thread;
use std::time::Duration;

use automation_ext_integration::connect;

#[test]
fn a_sample_fills_every_column_and_sees_other_sessions() {
    // real activity on a user table, flushed to the statistics
    let mut worker = connect();
    worker
        .batch_execute(
            // autovacuum off: it could remove the dead tuples this test looks for
            "CREATE TABLE public.it_mon (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false);
             INSERT INTO public.it_mon SELECT g, 'x' FROM generate_series(1, 5000) g;",
        )
        .unwrap();
    worker.batch_execute("SELECT count(*) FROM public.it_mon").unwrap();
    worker.batch_execute("SELECT v FROM public.it_mon WHERE id = 42").unwrap();
    worker.batch_execute("UPDATE public.it_mon SET v = 'y' WHERE id <= 2500").unwrap();
    worker.batch_execute("SELECT pg_stat_force_next_flush()").unwrap();

    // a session running a long query, and one idle inside a transaction
    let sleeper = thread::spawn(|| {
        let mut c = connect();
        c.batch_execute("SET application_name = 'it-workflow-runner'").unwrap();
        c.batch_execute("SELECT pg_sleep(4)").unwrap();
    });
    let mut idle = connect();
    idle.batch_execute("BEGIN; SELECT 1").unwrap();
    thread::sleep(Duration::from_millis(1500));

    let mut mon = connect();
    mon.batch_execute("SET automation.long_query_threshold = '1s'").unwrap();
    mon.batch_execute("SELECT automation.collect_database_metrics()").unwrap();
    let row = mon
        .query_one(
            "SELECT active_connections, cache_hit_ratio IS NOT NULL, index_hit_ratio IS NOT NULL,
                    table_sizes ? 'public.it_mon', long_running_queries, replication_lag IS NULL,
                    xid_wraparound_age > 0, deadlocks IS NOT NULL, temp_bytes IS NOT NULL,
                    idle_in_transaction, dead_tuple_ratios ? 'public.it_mon'
               FROM automation.collect_database_metrics()",
            &[],
        )
        .unwrap();
    assert!(row.get::<_, i32>(0) >= 2, "the sleeper and this session are active");
    assert!(row.get::<_, bool>(1), "cache_hit_ratio not filled");
    assert!(row.get::<_, bool>(2), "index_hit_ratio not filled");
    assert!(row.get::<_, bool>(3), "table_sizes misses public.it_mon");
    assert!(row.get::<_, i32>(4) >= 1, "the sleeping query is not counted as long-running");
    assert!(row.get::<_, bool>(5), "replication_lag should be NULL without replication");
    assert!(row.get::<_, bool>(6), "xid age not filled");
    assert!(row.get::<_, bool>(7) && row.get::<_, bool>(8), "deltas missing on a second sample");
    assert!(row.get::<_, i32>(9) >= 1, "the idle-in-transaction session is not counted");
    assert!(row.get::<_, bool>(10), "dead tuples of public.it_mon not reported");

    // the seed's long-running query, with its application filter as an argument
    let found = mon
        .query("SELECT application_name FROM automation.long_running_queries('1 second', '%workflow%')", &[])
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get::<_, String>(0), "it-workflow-runner");
    assert!(mon
        .query("SELECT 1 FROM automation.long_running_queries('1 second', '%nothing-like-this%')", &[])
        .unwrap()
        .is_empty());
    let status: String = mon
        .query_one("SELECT status FROM automation.health_check() WHERE check_name = 'Long-running queries'", &[])
        .unwrap()
        .get(0);
    assert!(status.starts_with("WARNING: "), "{status}");

    let text: String = mon.query_one("SELECT automation.metrics_exposition()", &[]).unwrap().get(0);
    assert!(text.contains("automation_table_size_bytes{table=\"public.it_mon\"}"), "{text}");
    idle.batch_execute("COMMIT").unwrap();
    sleeper.join().unwrap();
}
