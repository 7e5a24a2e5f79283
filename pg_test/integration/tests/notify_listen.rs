//! The completion trigger seen by a real LISTEN client in another session.

use std::time::Duration;

use automation_ext_integration::{drain, listener_and_writer};
use serde_json::{json, Value};

const QUIET: Duration = Duration::from_millis(700);
const LIMIT: Duration = Duration::from_secs(10);

fn payloads(got: &[(String, String)], channel: &str) -> Vec<Value> {
    got.iter()
        .map(|(c, p)| {
            assert_eq!(c, channel);
            serde_json::from_str(p).unwrap_or_else(|e| panic!("payload {p:?} is not JSON: {e}"))
        })
        .collect()
}

#[test]
fn one_notification_per_completed_execution_after_commit_only() {
    let channel = "it_commit";
    let (mut listener, mut writer) = listener_and_writer(channel);
    writer
        .batch_execute(
            "INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status, started_at)
             VALUES ('00000000-0000-0000-0000-00000000000a', 'etl-a', 'running', '2026-01-01 00:00:00+00'),
                    ('00000000-0000-0000-0000-00000000000b', 'etl-b', 'running', '2026-01-01 00:00:00+00'),
                    ('00000000-0000-0000-0000-00000000000c', 'etl-c', 'running', '2026-01-01 00:00:00+00');",
        )
        .unwrap();
    // Separate round trip: in one multi-statement query, BEGIN would pull the
    // statements before it into the explicit transaction.
    writer
        .batch_execute(
            "BEGIN;
             UPDATE automation_workflows.workflow_executions
                SET status = 'success', completed_at = '2026-01-01 00:00:12.345678+00'
              WHERE id = '00000000-0000-0000-0000-00000000000a';
             UPDATE automation_workflows.workflow_executions SET status = 'error'
              WHERE id = '00000000-0000-0000-0000-00000000000b';
             UPDATE automation_workflows.workflow_executions
                SET status = 'timeout', completed_at = '2026-01-01 01:00:00+00'
              WHERE id = '00000000-0000-0000-0000-00000000000c';
             -- the same terminal status written again: not a new completion
             UPDATE automation_workflows.workflow_executions SET status = 'success'
              WHERE id = '00000000-0000-0000-0000-00000000000a';",
        )
        .unwrap();
    assert!(drain(&mut listener, QUIET, LIMIT).is_empty(), "a notification arrived before COMMIT");
    writer.batch_execute("COMMIT").unwrap();
    let got = payloads(&drain(&mut listener, QUIET, LIMIT), channel);
    assert_eq!(
        got,
        vec![
            json!({"workflow_id": "00000000-0000-0000-0000-00000000000a", "workflow_name": "etl-a",
                   "status": "success", "duration": 12.345678}),
            json!({"workflow_id": "00000000-0000-0000-0000-00000000000b", "workflow_name": "etl-b",
                   "status": "error", "duration": null}),
            json!({"workflow_id": "00000000-0000-0000-0000-00000000000c", "workflow_name": "etl-c",
                   "status": "timeout", "duration": 3600.0}),
        ]
    );
}

#[test]
fn nothing_for_rollback_nonterminal_or_repeated_status() {
    let channel = "it_quiet";
    let (mut listener, mut writer) = listener_and_writer(channel);
    writer
        .batch_execute(
            "INSERT INTO automation_workflows.workflow_executions (id, workflow_name, status)
             VALUES ('00000000-0000-0000-0000-0000000000d1', 'q', 'pending'),
                    ('00000000-0000-0000-0000-0000000000d2', 'q', 'success');",
        )
        .unwrap();
    let update = |client: &mut postgres::Client, set: &str, id: &str| {
        let n = client
            .execute(&format!("UPDATE automation_workflows.workflow_executions SET {set} WHERE id = '{id}'"), &[])
            .unwrap();
        assert_eq!(n, 1, "UPDATE ... SET {set} WHERE id = {id} matched no row");
    };
    let (d1, d2) = ("00000000-0000-0000-0000-0000000000d1", "00000000-0000-0000-0000-0000000000d2");
    // rolled back: nothing
    writer.batch_execute("BEGIN").unwrap();
    update(&mut writer, "status = 'success'", d1);
    writer.batch_execute("ROLLBACK").unwrap();
    // non-terminal: nothing
    update(&mut writer, "status = 'running'", d1);
    // the same terminal status again, and a change of another column: nothing
    update(&mut writer, "status = 'success'", d2);
    update(&mut writer, "metadata = '{}'", d2);
    let got = drain(&mut listener, QUIET, LIMIT);
    assert!(got.is_empty(), "unexpected notifications: {got:?}");

    // a move from one terminal status to another is a new completion
    update(&mut writer, "status = 'error'", d2);
    let got = payloads(&drain(&mut listener, QUIET, LIMIT), channel);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["status"], json!("error"));
}

#[test]
fn a_20kb_multibyte_row_is_capped_and_the_update_commits() {
    let channel = "it_cap";
    let (mut listener, mut writer) = listener_and_writer(channel);
    writer
        .batch_execute(&format!(
            "CREATE TABLE public.big_jobs (id bigint PRIMARY KEY, workflow_name text, status text,
                                           started_at timestamptz, completed_at timestamptz);
             SELECT automation.attach_completion_notify('public.big_jobs', '{channel}');
             INSERT INTO public.big_jobs VALUES (7, repeat('😀', 5000), 'running', now(), NULL);
             UPDATE public.big_jobs SET status = 'success', completed_at = now();"
        ))
        .unwrap();
    let raw = drain(&mut listener, QUIET, LIMIT);
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(raw[0].1.len() < 8000, "payload of {} bytes", raw[0].1.len());
    let got = payloads(&raw, channel);
    assert_eq!(got[0]["workflow_id"], json!(7));
    assert_eq!(got[0]["status"], json!("success"));
    assert_eq!(got[0]["truncated"], json!(true));
    assert!(got[0].get("workflow_name").is_none());
    let status: String = writer.query_one("SELECT status FROM public.big_jobs", &[]).unwrap().get(0);
    assert_eq!(status, "success");
}
