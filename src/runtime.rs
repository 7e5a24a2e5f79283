//! Workflow runtime: execution lifecycle, claiming with SKIP LOCKED, the
//! timeout sweep and the retry queue. The set-oriented parts are SQL
//! (sql/runtime.sql); the retry backoff is here, as plain Rust.

use pgrx::datum::Interval;
use pgrx::prelude::*;

use crate::settings;

/// Backoff before retry number `retry_count + 1`, in milliseconds:
/// exponential (`base * 2^retry_count`, at most `max`) with "equal jitter":
/// half the delay is fixed, the other half scaled by `jitter` in [0, 1).
/// Never less than half the exponential delay, so a burst of failures
/// spreads out instead of retrying in lockstep.
pub fn backoff_ms(base_ms: i64, max_ms: i64, retry_count: i32, jitter: f64) -> i64 {
    let base = base_ms.max(1);
    let cap = max_ms.max(base);
    // 2^62 ms would overflow any sane cap; saturate well before that.
    let exponential = match u32::try_from(retry_count.max(0)) {
        Ok(n) if n < 62 => base.saturating_mul(1_i64 << n).min(cap),
        _ => cap,
    };
    let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
    let half = exponential / 2;
    half + ((exponential - half) as f64 * jitter) as i64
}

#[pg_schema]
mod automation {
    use super::*;

    /// How long to wait before the next retry of an error that has been
    /// retried `retry_count` times (settings `automation.retry_base_delay`
    /// and `automation.retry_max_delay`, with random jitter).
    #[pg_extern(volatile, parallel_restricted)]
    fn retry_delay(retry_count: i32) -> Interval {
        if retry_count < 0 {
            crate::error::Error::invalid(format!("retry_count must be zero or more, not {retry_count}"))
                .with_hint("It is how many times the failure was retried already.")
                .raise();
        }
        // SAFETY: pg_prng_double reads and advances this backend's global
        // PRNG state, which PostgreSQL seeds at backend start (random() uses it).
        let jitter = unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) };
        let ms = backoff_ms(
            i64::from(settings::RETRY_BASE_DELAY_MS.get()),
            i64::from(settings::RETRY_MAX_DELAY_MS.get()),
            retry_count,
            jitter,
        );
        Interval::new(0, 0, ms * 1000).expect("a delay of at most ~24 days is a valid interval")
    }
}

extension_sql_file!(
    "../sql/runtime.sql",
    name = "runtime",
    requires = ["automation_workflows_schema", automation::retry_delay, queue::automation::uuid_v7]
);

#[cfg(test)]
mod unit {
    use super::backoff_ms;

    #[test]
    fn doubles_per_retry_within_its_jitter_band() {
        for n in 0..8 {
            let full = 10_000 * (1 << n);
            assert_eq!(backoff_ms(10_000, i64::MAX, n, 0.0), full / 2);
            assert_eq!(backoff_ms(10_000, i64::MAX, n, 0.999_999), full - 1);
        }
    }

    #[test]
    fn is_capped() {
        assert_eq!(backoff_ms(10_000, 3_600_000, 20, 0.0), 1_800_000);
        assert!(backoff_ms(10_000, 3_600_000, 20, 0.99) < 3_600_000);
        assert_eq!(backoff_ms(10_000, 3_600_000, i32::MAX, 0.0), 1_800_000);
    }

    #[test]
    fn odd_inputs_stay_sane() {
        assert_eq!(backoff_ms(10_000, 60_000, -5, 0.0), 5_000); // negative count: first delay
        assert_eq!(backoff_ms(0, 0, 0, 0.5), 0); // base clamped to 1 ms, half of which rounds down
        assert_eq!(backoff_ms(10_000, 60_000, 0, f64::NAN), 5_000);
        assert_eq!(backoff_ms(10_000, 5_000, 0, 0.0), 5_000); // cap below base: base wins
        assert_eq!(backoff_ms(i64::MAX, i64::MAX, 61, 1.0), i64::MAX);
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    use crate::test_support::one;

    fn status(id: &str) -> String {
        one(&format!("SELECT status::text FROM automation.executions WHERE id = '{id}'"))
    }

    /// Run `sql` in a subtransaction (a PL/pgSQL EXCEPTION block, so a
    /// failure is rolled back as it would be for a client) and return the
    /// error message, or "ok".
    fn attempt(sql: &str) -> String {
        Spi::run(
            "CREATE OR REPLACE FUNCTION pg_temp.attempt(stmt text) RETURNS text LANGUAGE plpgsql AS $$
             BEGIN EXECUTE stmt; RETURN 'ok'; EXCEPTION WHEN others THEN RETURN SQLERRM; END $$",
        )
        .unwrap();
        Spi::get_one_with_args::<String>("SELECT pg_temp.attempt($1)", &[sql.into()]).unwrap().unwrap()
    }

    /// Backoff is measured from now(), which a test transaction never moves:
    /// make every error due.
    fn backoff_passes() {
        Spi::run("UPDATE automation.errors SET next_retry_at = now() - interval '1 second'").unwrap();
    }

    #[pg_test]
    fn start_then_complete_merges_metadata() {
        let id: String = one("SELECT automation.start_execution('etl', '{\"a\": 1, \"b\": 1}')::text");
        assert_eq!(status(&id), "running");
        Spi::run(&format!("SELECT automation.complete_execution('{id}', '{{\"b\": 2}}')")).unwrap();
        assert_eq!(status(&id), "success");
        let meta: String =
            one(&format!("SELECT metadata::text FROM automation_workflows.workflow_executions WHERE id = '{id}'"));
        assert_eq!(meta, r#"{"a": 1, "b": 2}"#);
    }

    #[pg_test(
        error = "cannot complete workflow execution 00000000-0000-0000-0000-000000000001: it is success, not running"
    )]
    fn completing_twice_is_an_error() {
        Spi::run(
            "INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status)
             VALUES ('00000000-0000-0000-0000-000000000001', 'etl', 'success')",
        )
        .unwrap();
        Spi::run("SELECT automation.complete_execution('00000000-0000-0000-0000-000000000001')").unwrap();
    }

    #[pg_test(error = "workflow execution 00000000-0000-0000-0000-000000000002 does not exist")]
    fn failing_an_unknown_execution_is_an_error() {
        Spi::run("SELECT automation.fail_execution('00000000-0000-0000-0000-000000000002', 't', 'm')").unwrap();
    }

    #[pg_test(error = "workflow_name must not be empty")]
    fn an_empty_workflow_name_is_refused() {
        Spi::run("SELECT automation.enqueue_execution('')").unwrap();
    }

    #[pg_test]
    fn batch_completion_is_all_or_nothing() {
        Spi::run("SELECT automation.enqueue_execution('etl') FROM generate_series(1, 3)").unwrap();
        let ids: String = one("SELECT array_agg(id)::text FROM automation.claim_executions('etl', 'w', 3)");
        let stray: String = one("SELECT automation.enqueue_execution('etl')::text");
        // one pending id among running ones: nothing is completed, and the error names it
        let refused =
            attempt(&format!("SELECT automation.complete_executions('{ids}'::uuid[] || '{stray}'::uuid, NULL, 'w')"));
        assert_eq!(refused, format!("cannot complete workflow execution {stray}: it is pending, not running"));
        assert_eq!(one::<i64>("SELECT count(*) FROM automation.executions WHERE status = 'running'"), 3);
        let n: i32 = one(&format!("SELECT automation.complete_executions('{ids}', '{{\"batch\": true}}', 'w')"));
        assert_eq!(n, 3);
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM automation_workflows.workflow_executions WHERE metadata @> '{\"batch\": true}'"
            ),
            3
        );
    }

    #[pg_test]
    fn failure_is_recorded_in_the_same_transaction() {
        let id: String = one("SELECT automation.start_execution('etl')::text");
        let error_id: String =
            one(&format!("SELECT automation.fail_execution('{id}', 'HttpError', '503', '{{\"url\": \"u\"}}')::text"));
        assert_eq!(status(&id), "error");
        let row: String = one(&format!(
            "SELECT format('%s|%s|%s|%s', workflow_name, error_type, error_message, execution_id = '{id}')
               FROM automation.errors WHERE id = '{error_id}'"
        ));
        assert_eq!(row, "etl|HttpError|503|t");
    }

    #[pg_test]
    fn claims_take_due_pending_rows_oldest_first_up_to_the_batch() {
        Spi::run(
            "SELECT automation.enqueue_execution('etl', jsonb_build_object('n', n), now() - n * interval '1 minute')
               FROM generate_series(1, 5) n;
             SELECT automation.enqueue_execution('etl', '{\"n\": 0}', now() + interval '1 hour');
             SELECT automation.enqueue_execution('other', '{}')",
        )
        .unwrap();
        let claimed: String = one("SELECT string_agg(metadata->>'n', ',' ORDER BY run_after)
               FROM automation.claim_executions('etl', 'w1', 3)");
        assert_eq!(claimed, "5,4,3");
        let rest: i64 = one("SELECT count(*) FROM automation.claim_executions('etl', 'w2', 100)");
        assert_eq!(rest, 2, "the future one and the other workflow's stay pending");
        let owners: String =
            one("SELECT string_agg(DISTINCT claimed_by || ':' || attempts, ',') FROM automation.executions
              WHERE status = 'running'");
        assert_eq!(owners, "w1:1,w2:1");
    }

    #[pg_test]
    fn an_expired_lease_is_claimable_again_and_the_old_worker_loses_it() {
        let id: String = one("SELECT automation.enqueue_execution('etl')::text");
        Spi::run("SELECT * FROM automation.claim_executions('etl', 'w1', 1, '1 minute')").unwrap();
        let none: i64 = one("SELECT count(*) FROM automation.claim_executions('etl', 'w2', 1)");
        assert_eq!(none, 0, "a live lease is not claimable");
        Spi::run(&format!(
            "UPDATE automation_workflows.execution_queue SET visible_at = now() - interval '1 s' WHERE id = '{id}'"
        ))
        .unwrap();
        let again: String = one("SELECT id::text || ':' || attempts FROM automation.claim_executions('etl', 'w2', 1)");
        assert_eq!(again, format!("{id}:2"));
        assert_eq!(
            attempt(&format!("SELECT automation.complete_execution('{id}', NULL, 'w1')")),
            format!("cannot complete workflow execution {id}: it is claimed by w2, not by w1")
        );
        Spi::run(&format!("SELECT automation.complete_execution('{id}', NULL, 'w2')")).unwrap();
        assert_eq!(status(&id), "success");
    }

    #[pg_test]
    fn the_timeout_sweep_times_out_and_records() {
        let old: String = one("SELECT automation.start_execution('etl')::text");
        let fresh: String = one("SELECT automation.start_execution('etl')::text");
        Spi::run(&format!(
            "UPDATE automation_workflows.workflow_executions SET started_at = now() - interval '2 hours' WHERE id = '{old}'"
        ))
        .unwrap();
        let swept: String = one("SELECT string_agg(id::text, ',') FROM automation.timeout_stale_executions('1 hour')");
        assert_eq!(swept, old);
        assert_eq!(status(&old), "timeout");
        assert_eq!(status(&fresh), "running");
        let details: String = one(&format!(
            "SELECT error_details::text FROM automation_workflows.workflow_executions WHERE id = '{old}'"
        ));
        assert_eq!(details, r#"{"reason": "execution_timeout"}"#);
        let recorded: String = one(&format!("SELECT error_type FROM automation.errors WHERE execution_id = '{old}'"));
        assert_eq!(recorded, "execution_timeout");
    }

    #[pg_test]
    fn a_retry_really_reruns_and_its_success_resolves_the_error() {
        let first: String = one("SELECT automation.start_execution('etl', '{\"order\": 42}')::text");
        Spi::run(&format!("SELECT automation.fail_execution('{first}', 'HttpError', '503')")).unwrap();
        assert!(!one::<bool>("SELECT automation.retry_failed_workflow('etl')"), "retried before the backoff passed");
        backoff_passes();
        assert!(one::<bool>("SELECT automation.retry_failed_workflow('etl')"));
        assert!(!one::<bool>("SELECT automation.retry_failed_workflow('etl')"), "retried twice while in flight");
        // the retry runs with the original metadata, and fails again
        let retry: String = one("SELECT id::text FROM automation.claim_executions('etl', 'w', 1)");
        let linked: String = one(&format!(
            "SELECT format('%s|%s', metadata, retry_of = '{first}') FROM automation.executions WHERE id = '{retry}'"
        ));
        assert_eq!(linked, r#"{"order": 42}|t"#);
        Spi::run(&format!("SELECT automation.fail_execution('{retry}', 'HttpError', '502')")).unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM automation.errors"), 1, "a failed retry opens no new error");
        let counted: String = one("SELECT retry_count || '|' || error_message FROM automation.errors");
        assert_eq!(counted, "1|502");
        // second retry succeeds: the error is resolved
        backoff_passes();
        assert!(one::<bool>("SELECT automation.retry_failed_workflow('etl')"));
        let retry2: String = one("SELECT id::text FROM automation.claim_executions('etl', 'w', 1)");
        assert_eq!(one::<bool>("SELECT resolved_at IS NULL FROM automation.errors"), true);
        Spi::run(&format!("SELECT automation.complete_execution('{retry2}')")).unwrap();
        assert_eq!(
            one::<String>("SELECT retry_count || '|' || (resolved_at IS NOT NULL) FROM automation.errors"),
            "2|true"
        );
        assert!(!one::<bool>("SELECT automation.retry_failed_workflow('etl')"), "a resolved error is not retried");
    }

    #[pg_test]
    fn errors_out_of_retries_are_dead_lettered() {
        let id: String = one("SELECT automation.start_execution('etl')::text");
        Spi::run(&format!("SELECT automation.fail_execution('{id}', 'E', 'first')")).unwrap();
        backoff_passes();
        assert!(one::<bool>("SELECT automation.retry_failed_workflow('etl', 1)"));
        let retry: String = one("SELECT id::text FROM automation.claim_executions('etl', 'w', 1)");
        Spi::run(&format!("SELECT automation.fail_execution('{retry}', 'E', 'again')")).unwrap();
        backoff_passes();
        assert!(!one::<bool>("SELECT automation.retry_failed_workflow('etl', 1)"));
        assert_eq!(
            one::<String>("SELECT retry_count || '|' || (dead_lettered_at IS NOT NULL) || '|' || (resolved_at IS NULL) FROM automation.errors"),
            "1|true|true"
        );
        // a larger max_retries later does not revive a dead letter
        assert!(!one::<bool>("SELECT automation.retry_failed_workflow('etl', 5)"));
    }

    #[pg_test]
    fn a_hand_written_error_retries_with_its_context() {
        // the seed's style: rows put into automation.errors directly
        Spi::run(
            "INSERT INTO automation.errors (workflow_name, error_type, error_context)
             VALUES ('etl', 'manual', '{\"file\": \"a.csv\"}')",
        )
        .unwrap();
        assert!(one::<bool>("SELECT automation.retry_failed_workflow('etl')"));
        assert_eq!(
            one::<String>("SELECT metadata::text FROM automation.executions WHERE status = 'pending'"),
            r#"{"file": "a.csv"}"#
        );
    }

    #[pg_test]
    fn finished_queue_executions_are_recorded_in_the_history() {
        // no scheduler in this cluster (not preloaded): the completing
        // transaction records them itself
        Spi::run("SELECT automation.enqueue_execution('etl', jsonb_build_object('n', n)) FROM generate_series(1, 3) n")
            .unwrap();
        let ids: String = one("SELECT array_agg(id)::text FROM automation.claim_executions('etl', 'w', 2)");
        Spi::run(&format!("SELECT automation.complete_executions('{ids}', '{{\"ok\": true}}', 'w')")).unwrap();
        let where_: String = one("SELECT (SELECT count(*) FROM automation_workflows.execution_queue) || '/'
                 || (SELECT count(*) FROM automation_workflows.execution_log) || '/'
                 || (SELECT string_agg(status || ':' || attempts || ':' || claimed_by || ':' || (metadata->>'ok'), ',')
                       FROM automation_workflows.workflow_executions)");
        assert_eq!(where_, "1/0/success:1:w:true,success:1:w:true");
        let ordered: bool = one("SELECT bool_and(completed_at >= started_at AND started_at >= run_after)
               FROM automation_workflows.workflow_executions");
        assert!(ordered);
    }

    #[pg_test]
    fn higher_priority_first_then_first_in_first_out() {
        Spi::run(
            "SELECT automation.enqueue_execution('etl', jsonb_build_object('n', n), now(), priority => p)
               FROM (VALUES (1, 0), (2, 5), (3, 0), (4, 5), (5, -1), (6, 0)) v(n, p)",
        )
        .unwrap();
        let order: String =
            one("SELECT string_agg(metadata->>'n', ',') FROM automation.claim_executions('etl', 'w', 10)");
        assert_eq!(order, "2,4,1,3,6,5");
    }

    #[pg_test]
    fn a_unique_key_enqueues_once_while_pending_or_running_and_debounce_replaces_the_payload() {
        let first: String = one("SELECT automation.enqueue_execution('sync', '{\"v\": 1}', unique_key => 'c42')::text");
        let again: String = one("SELECT automation.enqueue_execution('sync', '{\"v\": 2}', unique_key => 'c42')::text");
        assert_eq!(first, again);
        assert_eq!(status(&first), "pending");
        assert_eq!(one::<String>("SELECT metadata::text FROM automation.executions"), r#"{"v": 1}"#);
        let debounced: String = one(
            "SELECT automation.enqueue_execution('sync', '{\"v\": 3}', unique_key => 'c42', debounce => true)::text",
        );
        assert_eq!(debounced, first);
        assert_eq!(one::<String>("SELECT metadata::text FROM automation.executions"), r#"{"v": 3}"#);
        // another workflow, same key: its own
        let other: String = one("SELECT automation.enqueue_execution('mail', '{}', unique_key => 'c42')::text");
        assert_ne!(other, first);
        // running: still the same one, and debounce cannot change it
        Spi::run("SELECT * FROM automation.claim_executions('sync', 'w')").unwrap();
        let running: String = one(
            "SELECT automation.enqueue_execution('sync', '{\"v\": 4}', unique_key => 'c42', debounce => true)::text",
        );
        assert_eq!(running, first);
        assert_eq!(
            one::<String>("SELECT metadata::text FROM automation.executions WHERE workflow_name = 'sync'"),
            r#"{"v": 3}"#
        );
        // finished: the key is free again
        Spi::run(&format!("SELECT automation.complete_execution('{first}')")).unwrap();
        let next: String = one("SELECT automation.enqueue_execution('sync', '{\"v\": 5}', unique_key => 'c42')::text");
        assert_ne!(next, first);
        assert_eq!(status(&next), "pending");
    }

    #[pg_test]
    fn a_concurrency_key_limits_how_many_run_at_once() {
        Spi::run(
            "SELECT automation.enqueue_execution('bill', jsonb_build_object('n', n), now() - (10 - n) * interval '1 s',
                                                 concurrency_key => 'customer-' || (n % 2), concurrency_limit => 2)
               FROM generate_series(1, 8) n;
             SELECT automation.enqueue_execution('bill', '{\"n\": 0}')",
        )
        .unwrap();
        let first: String =
            one("SELECT string_agg(metadata->>'n', ',' ORDER BY (metadata->>'n')::int) FROM automation.claim_executions('bill', 'w', 100)");
        assert_eq!(first, "0,1,2,3,4", "two per customer, and the unkeyed one");
        assert_eq!(one::<i64>("SELECT count(*) FROM automation.claim_executions('bill', 'w', 100)"), 0);
        let one_done: String = one("SELECT id::text FROM automation.executions WHERE metadata->>'n' = '1'");
        Spi::run(&format!("SELECT automation.complete_execution('{one_done}')")).unwrap();
        let next: String =
            one("SELECT string_agg(metadata->>'n', ',') FROM automation.claim_executions('bill', 'w', 100)");
        assert_eq!(next, "5", "customer-1 had room for one more");
    }

    #[pg_test(error = "concurrency_key and concurrency_limit go together, and the limit must be at least 1")]
    fn a_concurrency_key_needs_a_limit() {
        Spi::run("SELECT automation.enqueue_execution('bill', '{}', concurrency_key => 'c')").unwrap();
    }

    #[pg_test]
    fn a_waiting_claim_with_nothing_to_claim_returns_empty_after_its_wait() {
        let waited: f64 = one("SELECT extract(epoch FROM clock_timestamp() - t0)::float8
               FROM (SELECT clock_timestamp() AS t0) s,
                    LATERAL (SELECT count(*) FROM automation.claim_executions('none', 'w', 1, wait => '300 ms')) c");
        assert!((0.29..5.0).contains(&waited), "{waited}");
        // a delayed execution that comes due during the wait is claimed
        Spi::run("SELECT automation.enqueue_execution('later', '{}', clock_timestamp() + interval '200 ms')").unwrap();
        let got: i64 = one("SELECT count(*) FROM automation.claim_executions('later', 'w', 1, wait => '5 s')");
        assert_eq!(got, 1);
    }

    /// (issue 33) A small recording's statements are planned once per
    /// process and kept, a large one's planned for it: completions are
    /// recorded whole, small batches and large, in every history mode, also
    /// after the kept plans were invalidated (ANALYZE of the log and the
    /// history; changes of their shape under a running scheduler are the
    /// integration test `a_running_scheduler_records_through_changes_to_the_log_and_the_history`:
    /// DDL here would lock tables the tests running beside this one use).
    #[pg_test]
    fn small_and_large_recordings_keep_or_count_every_completion() {
        // (a workflow of its own: tests run side by side, and two that write
        // the same definition and counters can deadlock)
        // n executions at once: up to 256, a completing transaction's own
        // recording runs kept plans; more, plans made for it
        let claim_and_complete = |round: i32, n: i32| {
            Spi::run(&format!(
                "SELECT automation.enqueue_execution('kept-plans', '{{\"round\": {round}}}') FROM generate_series(1, {n})"
            ))
            .unwrap();
            let done: i32 = one("SELECT automation.complete_executions(ARRAY(SELECT id FROM automation.claim_executions('kept-plans', 'w', 1000)))");
            assert_eq!(done, n);
        };
        Spi::run("INSERT INTO automation_workflows.definitions (name, definition) VALUES ('kept-plans', '{}')")
            .unwrap();
        claim_and_complete(1, 1);
        claim_and_complete(2, 300);
        Spi::run("ANALYZE automation_workflows.execution_log, automation_workflows.workflow_executions").unwrap();
        claim_and_complete(3, 2);
        claim_and_complete(4, 300);
        Spi::run("ANALYZE automation_workflows.execution_log").unwrap();
        claim_and_complete(5, 3);
        Spi::run("SELECT automation.set_queue_history('kept-plans', 'none')").unwrap();
        claim_and_complete(6, 4);
        claim_and_complete(7, 300);
        let kept: String = one("SELECT string_agg(format('%s:%s', round, n), ' ' ORDER BY round)
                                  FROM (SELECT metadata->>'round' AS round, count(*) AS n
                                          FROM automation_workflows.workflow_executions
                                         WHERE workflow_name = 'kept-plans' AND status = 'success'
                                         GROUP BY 1) r");
        assert_eq!(kept, "1:1 2:300 3:2 4:300 5:3");
        let counted: i64 = one("SELECT sum(finished)::int8 FROM automation.execution_stats
                                 WHERE workflow_name = 'kept-plans' AND status = 'success'");
        assert_eq!(counted, 910);
        let left: i64 = one("SELECT count(*) FROM automation_workflows.execution_log");
        assert_eq!(left, 0);
    }

    #[pg_test]
    fn queue_ids_are_time_ordered_uuids() {
        let ok: bool = one("SELECT bool_and(a < b) AND bool_and(substr(a::text, 15, 1) = '7')
               FROM (SELECT u AS a, lead(u) OVER (ORDER BY n) AS b
                       FROM (SELECT n, automation.uuid_v7() u FROM generate_series(1, 10000) n) g) p
              WHERE b IS NOT NULL");
        assert!(ok);
    }

    #[pg_test]
    fn the_status_view_counts_per_workflow() {
        Spi::run(
            "INSERT INTO automation_workflows.definitions (name, definition) VALUES ('etl', '{}'), ('idle', '{}');
             INSERT INTO automation_workflows.workflow_executions (workflow_name, status, started_at, completed_at)
             VALUES ('etl', 'success', now() - interval '10 s', now()),
                    ('etl', 'error', now() - interval '20 s', now()),
                    ('etl', 'running', now(), NULL)",
        )
        .unwrap();
        let row: String =
            one("SELECT string_agg(format('%s:%s/%s/%s/%s/%s', name, total_executions, successes, errors, in_progress,
                                      round(avg_duration_seconds)), ' ' ORDER BY name)
               FROM automation.v_workflow_status");
        assert_eq!(row, "etl:3/1/1/1/15 idle:0/0/0/0/");
    }
}
