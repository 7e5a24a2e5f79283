//! The console's pages and actions. Each page is a few SQL statements that
//! return JSON (`jsonb_agg` of the rows), rendered by a template; every
//! value is escaped by minijinja (HTML auto-escaping), every statement is
//! parameterised. A section the connecting role may not read shows why,
//! and the rest of the page renders.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_postgres::types::ToSql;

use crate::{auth, dag, timeline, App};

const PAGE: i64 = 50;
const CSRF_COOKIE: &str = "automation_console_csrf";

pub fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("../templates/base.html")),
        ("macros.html", include_str!("../templates/macros.html")),
        ("overview.html", include_str!("../templates/overview.html")),
        ("workflows.html", include_str!("../templates/workflows.html")),
        ("workflow.html", include_str!("../templates/workflow.html")),
        ("executions.html", include_str!("../templates/executions.html")),
        ("execution.html", include_str!("../templates/execution.html")),
        ("jobs.html", include_str!("../templates/jobs.html")),
        ("job.html", include_str!("../templates/job.html")),
        ("triggers.html", include_str!("../templates/triggers.html")),
        ("errors.html", include_str!("../templates/errors.html")),
        ("queue.html", include_str!("../templates/queue.html")),
    ] {
        env.add_template(name, text).expect("the console's templates parse");
    }
    env.add_filter("ts", ts);
    env.add_filter("json", |v: minijinja::Value| -> String { serde_json::to_string_pretty(&v).unwrap_or_default() });
    env
}

/// A timestamp as jsonb gives it (`2026-12-02T21:25:20.123456+00:00`), to
/// the second, in UTC (the console's sessions use UTC).
fn ts(v: minijinja::Value) -> String {
    match v.as_str() {
        Some(s) => {
            let s = s.replacen('T', " ", 1);
            s.split(['.', '+']).next().unwrap_or_default().to_owned()
        }
        None if v.is_none() || v.is_undefined() => String::new(),
        None => v.to_string(),
    }
}

pub fn router(app: Arc<App>) -> Router {
    let mut r = Router::new()
        .route("/", get(overview))
        .route("/workflows", get(workflows))
        .route("/workflows/{name}", get(workflow))
        .route("/executions", get(executions))
        .route("/executions/{id}", get(execution))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job))
        .route("/triggers", get(triggers))
        .route("/errors", get(errors))
        .route("/queue", get(queue))
        .route(
            "/static/app.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], include_str!("../static/app.js")) }),
        )
        .route(
            "/static/app.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], include_str!("../static/app.css")) }),
        )
        .route("/healthz", get(|| async { "ok" }));
    if app.allow_actions {
        r = r
            .route("/executions/{id}/rerun", post(rerun))
            .route("/executions/{id}/cancel", post(cancel))
            .route("/triggers/{id}/enabled", post(trigger_enabled))
            .route("/jobs/{id}/active", post(job_active));
    }
    r.layer(middleware::from_fn_with_state(app.clone(), guard)).with_state(app)
}

/// Every request: the password when one is set; a CSRF cookie for forms;
/// headers that keep pages out of frames and scripts to our own.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(hash) = &app.password_hash {
        let ok = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(auth::basic_password)
            .is_some_and(|p| auth::verify(hash, &p));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"automation-console\", charset=\"UTF-8\"")],
                "the console needs its password",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if app.allow_actions {
        if let Ok(v) = HeaderValue::from_str(&format!("{CSRF_COOKIE}={}; Path=/; SameSite=Strict; HttpOnly", app.csrf))
        {
            h.append(header::SET_COOKIE, v);
        }
    }
    response
}

/// What a section of a page shows: its rows, or why it could not read them.
#[derive(Serialize, Default)]
struct Section {
    rows: Value,
    error: Option<String>,
}

fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => match d.hint() {
            Some(h) => format!("{} ({}) — {}", d.message(), d.code().code(), h),
            None => format!("{} ({})", d.message(), d.code().code()),
        },
        None => e.to_string(),
    }
}

/// The rows of `sql` as a JSON array.
async fn rows(client: &deadpool_postgres::Object, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Section {
    let wrapped = format!("SELECT coalesce(jsonb_agg(t), '[]'::jsonb) FROM ({sql}) t");
    match client.query_one(&wrapped, params).await {
        Ok(row) => Section { rows: row.get::<_, Value>(0), error: None },
        Err(e) => Section { rows: json!([]), error: Some(db_error(&e)) },
    }
}

/// The one row of `sql` as a JSON object (null when there is none).
async fn one(client: &deadpool_postgres::Object, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Value, String> {
    let wrapped = format!("SELECT to_jsonb(t) FROM ({sql}) t LIMIT 1");
    match client.query_opt(&wrapped, params).await {
        Ok(Some(row)) => Ok(row.get::<_, Value>(0)),
        Ok(None) => Ok(Value::Null),
        Err(e) => Err(db_error(&e)),
    }
}

async fn session(app: &App) -> Result<deadpool_postgres::Object, Response> {
    app.pool.get().await.map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(format!("<p>the database is not reachable: {}</p>", escape(&e.to_string()))),
        )
            .into_response()
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

/// Render `name` with `ctx` plus what every page has; only the live part
/// (block `content`) when the page's own script asks (X-Fragment).
fn render(
    app: &App,
    headers: &HeaderMap,
    name: &str,
    page: &str,
    mut ctx: Value,
    flash: &HashMap<String, String>,
) -> Response {
    if let Value::Object(m) = &mut ctx {
        m.insert("page".into(), json!(page));
        m.insert("allow_actions".into(), json!(app.allow_actions));
        m.insert("csrf".into(), json!(app.csrf));
        m.insert("refresh".into(), json!(app.refresh_seconds));
        m.insert("done".into(), json!(flash.get("done")));
        m.insert("failed".into(), json!(flash.get("error")));
    }
    let fragment = headers.get("x-fragment").is_some();
    let result = app.templates.get_template(name).and_then(|t| {
        let ctx = minijinja::Value::from_serialize(&ctx);
        if fragment {
            t.render_captured(ctx)?.with_state_mut(|state| state.render_block("content"))
        } else {
            t.render(ctx)
        }
    });
    match result {
        Ok(html) => ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, Html(format!("<pre>{}</pre>", escape(&format!("{e:#}")))))
            .into_response(),
    }
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, Html(format!("<p>{} — <a href=\"/\">overview</a></p>", escape(what)))).into_response()
}

// ---------------------------------------------------------------- pages

async fn overview(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let health = rows(&c, "SELECT * FROM automation.health_check()", &[]).await;
    let scheduler = rows(&c, "SELECT * FROM automation.scheduler_status()", &[]).await;
    let queue = rows(
        &c,
        "SELECT q.workflow_name AS workflow,
                count(*) FILTER (WHERE q.claimed_by IS NULL) AS pending,
                count(*) FILTER (WHERE q.claimed_by IS NOT NULL) AS running,
                extract(epoch FROM now() - min(q.run_after) FILTER (WHERE q.claimed_by IS NULL AND q.run_after <= now()))
                    AS oldest_pending_seconds
           FROM automation_workflows.execution_queue q
          GROUP BY 1 ORDER BY 1 LIMIT 100",
        &[],
    )
    .await;
    let hours = rows(
        &c,
        "SELECT h.hour, coalesce(x.ok, 0) AS ok, coalesce(x.failed, 0) AS failed, coalesce(x.other, 0) AS other
           FROM generate_series(date_trunc('hour', now()) - interval '23 hours', date_trunc('hour', now()), interval '1 hour') h(hour)
           LEFT JOIN (SELECT date_trunc('hour', e.started_at) AS hour,
                             count(*) FILTER (WHERE e.status = 'success') AS ok,
                             count(*) FILTER (WHERE e.status IN ('error', 'timeout')) AS failed,
                             count(*) FILTER (WHERE e.status NOT IN ('success', 'error', 'timeout')) AS other
                        FROM automation_workflows.workflow_executions e
                       WHERE e.started_at >= date_trunc('hour', now()) - interval '23 hours'
                       GROUP BY 1) x USING (hour)
          ORDER BY h.hour",
        &[],
    )
    .await;
    // (0.10.0) workflows whose history keeps no successes: said under the chart
    let not_kept = rows(
        &c,
        "SELECT workflow_name, history FROM automation.queue_settings ORDER BY 1 LIMIT 20",
        &[],
    )
    .await;
    let pipelines = rows(
        &c,
        "SELECT pipeline_name, sum(successes)::float8 / nullif(sum(executions), 0) AS success_rate,
                sum(executions) AS attempts, sum(errors) AS errors
           FROM automation.pipeline_metrics_hourly
          WHERE bucket > now() - interval '24 hours'
          GROUP BY 1 ORDER BY 2 NULLS FIRST, 1 LIMIT 30",
        &[],
    )
    .await;
    let problems = rows(
        &c,
        "SELECT coalesce(workflow_name, '') AS workflow,
                count(*) FILTER (WHERE dead_lettered_at IS NULL) AS open,
                count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS dead_letters,
                max(error_time) AS latest
           FROM automation.errors WHERE resolved_at IS NULL
          GROUP BY 1 ORDER BY 4 DESC LIMIT 30",
        &[],
    )
    .await;
    // jobs failing now (their last fire failed, with its message) and jobs
    // the scheduler deactivated (with why): what needs a person
    let failing_jobs = rows(
        &c,
        "SELECT j.jobid, j.jobname, j.consecutive_failures, j.last_run_at, j.active, j.inactive_reason,
                l.return_message AS last_message
           FROM automation.job j
           LEFT JOIN LATERAL (SELECT d.return_message FROM automation.job_run_details d
                               WHERE d.jobid = j.jobid AND d.status = 'failed'
                               ORDER BY d.runid DESC LIMIT 1) l ON j.active
          WHERE (j.active AND j.last_status = 'failed') OR (NOT j.active AND j.inactive_reason IS NOT NULL)
          ORDER BY j.last_run_at DESC NULLS LAST LIMIT 30",
        &[],
    )
    .await;
    let max = hours
        .rows
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| ["ok", "failed", "other"].iter().map(|k| h[*k].as_f64().unwrap_or(0.0)).sum::<f64>())
                .fold(0.0, f64::max)
        })
        .unwrap_or(0.0);
    render(
        &app,
        &headers,
        "overview.html",
        "overview",
        json!({"health": health, "scheduler": scheduler, "queue": queue, "hours": hours, "hours_max": max, "not_kept": not_kept,
               "pipelines": pipelines, "problems": problems, "failing_jobs": failing_jobs}),
        &q,
    )
}

async fn workflows(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list = rows(
        &c,
        "SELECT d.name, d.version, d.is_active, d.owner::text AS owner, d.updated_at,
                jsonb_array_length(coalesce(d.definition->'steps', '[]')) AS steps,
                (SELECT count(*) FROM automation_triggers.registry r WHERE r.workflow_id = d.id) AS triggers,
                s.finished, s.succeeded, s.failed, s.latest,
                coalesce(h.history, 'full') AS history, c.counted, c.counted_ok, c.since AS counted_since
           FROM automation_workflows.definitions d
           -- (0.10.0) what its history keeps, and the counters, which count
           -- every finished execution whatever the history keeps
           LEFT JOIN automation.queue_settings h ON h.workflow_name = d.name
           LEFT JOIN LATERAL (
               SELECT sum(x.finished) AS counted, sum(x.finished) FILTER (WHERE x.status = 'success') AS counted_ok,
                      min(x.since) AS since
                 FROM automation.execution_stats x WHERE x.workflow_name = d.name) c ON true
           LEFT JOIN LATERAL (
               SELECT count(*) FILTER (WHERE e.status IN ('success', 'error', 'timeout')) AS finished,
                      count(*) FILTER (WHERE e.status = 'success') AS succeeded,
                      count(*) FILTER (WHERE e.status IN ('error', 'timeout')) AS failed,
                      max(e.started_at) AS latest
                 FROM automation_workflows.workflow_executions e
                WHERE e.workflow_name = d.name AND e.started_at > now() - interval '24 hours') s ON true
          ORDER BY d.name",
        &[],
    )
    .await;
    render(&app, &headers, "workflows.html", "workflows", json!({"workflows": list}), &q)
}

async fn workflow(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let def = match one(
        &c,
        "SELECT d.id, d.name, d.version, d.is_active, d.owner::text AS owner, d.created_at, d.updated_at, d.definition
           FROM automation_workflows.definitions d WHERE d.name = $1",
        &[&name],
    )
    .await
    {
        Ok(Value::Null) => return not_found(&format!("no workflow {name} (or you may not see it)")),
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Html(escape(&e))).into_response(),
    };
    let steps = dag::steps_of(&def["definition"]);
    let graph = dag::layout(&steps, &|_| "none".to_owned());
    let id = def["id"].as_i64().unwrap_or(0) as i32;
    let trig = rows(
        &c,
        "SELECT r.id, r.trigger_type, r.config, r.enabled, r.inactive_reason, r.owner::text AS owner,
                r.next_fire_at, r.last_fired_at, r.skipped_fires
           FROM automation_triggers.registry r WHERE r.workflow_id = $1 ORDER BY r.id",
        &[&id],
    )
    .await;
    let recent = rows(
        &c,
        "SELECT e.id, e.status, e.started_at, e.completed_at, e.owner::text AS owner,
                e.metadata->>'workflow_version' AS version,
                extract(epoch FROM coalesce(e.completed_at, now()) - e.started_at) AS seconds
           FROM automation_workflows.workflow_executions e
          WHERE e.workflow_name = $1 AND e.started_at IS NOT NULL
          ORDER BY e.started_at DESC, e.id DESC LIMIT 20",
        &[&name],
    )
    .await;
    let versions = rows(
        &c,
        "SELECT e.metadata->>'workflow_version' AS version, count(*) AS executions,
                count(*) FILTER (WHERE e.status = 'success') AS succeeded,
                count(*) FILTER (WHERE e.status IN ('error', 'timeout')) AS failed,
                max(e.started_at) AS latest
           FROM automation_workflows.workflow_executions e
          WHERE e.workflow_name = $1 AND e.started_at > now() - interval '7 days'
          GROUP BY 1 ORDER BY 1 DESC NULLS LAST",
        &[&name],
    )
    .await;
    render(
        &app,
        &headers,
        "workflow.html",
        "workflows",
        json!({"workflow": def, "dag": graph, "triggers": trig, "recent": recent, "versions": versions}),
        &q,
    )
}

/// A keyset cursor `<timestamp>|<id>` of the last row shown.
fn cursor(before: Option<&String>) -> (Option<String>, Option<String>) {
    match before.and_then(|b| b.split_once('|')) {
        Some((t, id)) if !t.is_empty() && !id.is_empty() => (Some(t.to_owned()), Some(id.to_owned())),
        _ => (None, None),
    }
}

fn filter(q: &HashMap<String, String>, key: &str) -> Option<String> {
    q.get(key).map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

async fn executions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let status = filter(&q, "status");
    let wf = filter(&q, "workflow");
    let since = filter(&q, "since");
    let (t, id) = cursor(q.get("before"));
    // a status group: "failed" is error and timeout
    let statuses: Option<Vec<String>> = status.as_deref().map(|s| match s {
        "failed" => vec!["error".to_owned(), "timeout".to_owned()],
        other => vec![other.to_owned()],
    });
    let list = rows(
        &c,
        "SELECT e.id, e.workflow_name, e.status, e.started_at, e.completed_at, e.owner::text AS owner,
                extract(epoch FROM coalesce(e.completed_at, now()) - e.started_at) AS seconds,
                e.error_details->>'message' AS message,
                coalesce(e.error_details->'error'->>'sqlstate', e.error_details->>'sqlstate') AS sqlstate,
                e.metadata->>'rerun_of' AS rerun_of
           FROM automation_workflows.workflow_executions e
          WHERE e.started_at IS NOT NULL
            AND ($1::text[] IS NULL OR e.status = ANY ($1::text[]))
            AND ($2::text IS NULL OR e.workflow_name = $2::text)
            AND ($3::text IS NULL OR e.started_at > now() - $3::text::interval)
            AND ($4::text IS NULL OR (e.started_at, e.id) < ($4::text::timestamptz, $5::uuid))
          ORDER BY e.started_at DESC, e.id DESC
          LIMIT 50",
        &[&statuses, &wf, &since, &t, &id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok())],
    )
    .await;
    let next =
        list.rows.as_array().filter(|a| a.len() as i64 == PAGE).and_then(|a| a.last()).map(|r| {
            format!("{}|{}", r["started_at"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default())
        });
    render(
        &app,
        &headers,
        "executions.html",
        "executions",
        json!({"executions": list, "next": next, "status": status, "workflow": wf, "since": since}),
        &q,
    )
}

async fn execution(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return not_found("not an execution id");
    };
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let exec = match one(
        &c,
        "SELECT e.id, e.workflow_name, e.status, e.started_at, e.completed_at, e.metadata, e.error_details,
                e.run_after, e.claimed_by, e.attempts, e.retry_of, e.owner::text AS owner
           FROM automation.executions e WHERE e.id = $1",
        &[&uuid],
    )
    .await
    {
        Ok(Value::Null) => return not_found(&format!("no execution {id} (or you may not see it)")),
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Html(escape(&e))).into_response(),
    };
    let run = one(
        &c,
        "SELECT w.version, w.definition, w.input, w.idempotency_key, w.rerun_of, w.trigger_id, w.deadline,
                r.trigger_type, p.done, p.running, p.pending, p.waiting, p.failed
           FROM automation_workflows.workflow_runs w
           LEFT JOIN automation_triggers.registry r ON r.id = w.trigger_id
           LEFT JOIN automation.workflow_progress p ON p.execution_id = w.execution_id
          WHERE w.execution_id = $1",
        &[&uuid],
    )
    .await
    .unwrap_or(Value::Null);
    let attempts = rows(
        &c,
        "SELECT r.id, r.step, r.map_index, r.attempt, r.max_attempts, r.status, coalesce(r.queue, '(sql)') AS queue,
                r.worker, r.visible_at, r.lease_expires_at, r.started_at, r.completed_at, r.input, r.output,
                r.error->>'message' AS error, r.error->>'sqlstate' AS sqlstate,
                extract(epoch FROM r.started_at) AS t0, extract(epoch FROM r.completed_at) AS t1
           FROM automation_workflows.step_runs r WHERE r.execution_id = $1
          ORDER BY r.started_at NULLS LAST, r.id LIMIT 2000",
        &[&uuid],
    )
    .await;
    let reruns = rows(
        &c,
        "SELECT w.execution_id AS id, e.status, e.started_at FROM automation_workflows.workflow_runs w
           JOIN automation_workflows.workflow_executions e ON e.id = w.execution_id
          WHERE w.rerun_of = $1 ORDER BY e.started_at",
        &[&uuid],
    )
    .await;
    // the graph, each step coloured by where it is in this execution
    let status_of = |name: &str| -> String {
        for key in ["failed", "running", "pending", "done", "waiting"] {
            if run[key].as_array().is_some_and(|a| a.iter().any(|s| s.as_str() == Some(name))) {
                return key.to_owned();
            }
        }
        "none".to_owned()
    };
    let steps = dag::steps_of(&run["definition"]);
    let graph = dag::layout(&steps, &status_of);
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let spans: Vec<timeline::Span> = attempts
        .rows
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["t0"].as_f64().is_some())
                .map(|r| timeline::Span {
                    label: match r["map_index"].as_i64() {
                        Some(i) => format!("{}[{i}] #{}", r["step"].as_str().unwrap_or_default(), r["attempt"]),
                        None => format!("{} #{}", r["step"].as_str().unwrap_or_default(), r["attempt"]),
                    },
                    start: r["t0"].as_f64().unwrap_or(0.0),
                    end: r["t1"].as_f64(),
                    status: r["status"].as_str().unwrap_or_default().to_owned(),
                    detail: r["worker"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let gantt = timeline::chart(&spans[..spans.len().min(200)], now);
    render(
        &app,
        &headers,
        "execution.html",
        "executions",
        json!({"execution": exec, "run": run, "attempts": attempts, "reruns": reruns, "dag": graph,
               "gantt": gantt, "step_names": steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>()}),
        &q,
    )
}

async fn jobs(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list = rows(
        &c,
        "SELECT j.jobid, j.jobname, j.schedule, j.command, j.database, j.username, j.active, j.inactive_reason,
                j.next_run_at, j.timezone, l.status AS last_status, l.start_time AS last_start, l.return_message AS last_message,
                extract(epoch FROM l.start_time - l.scheduled_for) AS last_late,
                extract(epoch FROM l.end_time - l.start_time) AS last_seconds,
                s.succeeded, s.failed, s.skipped
           FROM automation.job j
           LEFT JOIN LATERAL (SELECT d.* FROM automation.job_run_details d WHERE d.jobid = j.jobid
                               ORDER BY d.runid DESC LIMIT 1) l ON true
           LEFT JOIN automation.job_run_stats s ON s.jobid = j.jobid
          ORDER BY j.jobid",
        &[],
    )
    .await;
    render(&app, &headers, "jobs.html", "jobs", json!({"jobs": list}), &q)
}

async fn job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let j = match one(
        &c,
        "SELECT j.jobid, j.jobname, j.schedule, j.command, j.database, j.username, j.active, j.inactive_reason,
                j.next_run_at, j.timezone, j.timeout::text AS timeout, j.retries, j.overlap, j.priority
           FROM automation.job j WHERE j.jobid = $1",
        &[&id],
    )
    .await
    {
        Ok(Value::Null) => return not_found(&format!("no job {id} (or you may not see it)")),
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Html(escape(&e))).into_response(),
    };
    let before: Option<i64> = q.get("before").and_then(|b| b.parse().ok());
    let runs = rows(
        &c,
        "SELECT d.runid, d.status, d.scheduled_for, d.start_time, d.end_time, d.return_message, d.attempt,
                extract(epoch FROM d.start_time - d.scheduled_for) AS late,
                extract(epoch FROM d.end_time - d.start_time) AS seconds
           FROM automation.job_run_details d
          WHERE d.jobid = $1 AND ($2::bigint IS NULL OR d.runid < $2)
          ORDER BY d.runid DESC LIMIT 50",
        &[&id, &before],
    )
    .await;
    // the timeline: how late each run started and how long it took
    let bars: Vec<Value> = runs
        .rows
        .as_array()
        .map(|a| {
            let worst = a
                .iter()
                .map(|r| r["late"].as_f64().unwrap_or(0.0).max(0.0) + r["seconds"].as_f64().unwrap_or(0.0).max(0.0))
                .fold(0.001, f64::max);
            a.iter()
                .rev()
                .map(|r| {
                    let late = r["late"].as_f64().unwrap_or(0.0).max(0.0);
                    let secs = r["seconds"].as_f64().unwrap_or(0.0).max(0.0);
                    json!({"runid": r["runid"], "status": r["status"], "late_pct": late / worst * 100.0,
                           "run_pct": (secs / worst * 100.0).max(0.5), "late": late, "seconds": secs})
                })
                .collect()
        })
        .unwrap_or_default();
    let next =
        runs.rows.as_array().filter(|a| a.len() as i64 == PAGE).and_then(|a| a.last()).map(|r| r["runid"].clone());
    render(&app, &headers, "job.html", "jobs", json!({"job": j, "runs": runs, "bars": bars, "next": next}), &q)
}

async fn triggers(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let list = rows(
        &c,
        "SELECT r.id, r.trigger_type, r.config, r.enabled, r.inactive_reason, r.owner::text AS owner,
                r.next_fire_at, r.last_fired_at, r.skipped_fires, d.name AS workflow
           FROM automation_triggers.registry r
           LEFT JOIN automation_workflows.definitions d ON d.id = r.workflow_id
          ORDER BY r.id",
        &[],
    )
    .await;
    render(&app, &headers, "triggers.html", "triggers", json!({"triggers": list}), &q)
}

async fn errors(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let state = filter(&q, "state").unwrap_or_else(|| "open".to_owned());
    let wf = filter(&q, "workflow");
    let (t, id) = cursor(q.get("before"));
    let list = rows(
        &c,
        "SELECT r.id, r.error_time, r.workflow_name, r.error_type, r.error_message, r.execution_id,
                r.retry_execution_id, r.retry_count, r.next_retry_at, r.dead_lettered_at, r.resolved_at,
                r.owner::text AS owner, r.error_context->>'sqlstate' AS sqlstate
           FROM automation.errors r
          WHERE CASE $1::text WHEN 'open' THEN r.resolved_at IS NULL AND r.dead_lettered_at IS NULL
                              WHEN 'dead' THEN r.resolved_at IS NULL AND r.dead_lettered_at IS NOT NULL
                              WHEN 'resolved' THEN r.resolved_at IS NOT NULL
                              ELSE true END
            AND ($2::text IS NULL OR r.workflow_name = $2::text)
            AND ($3::text IS NULL OR (r.error_time, r.id) < ($3::text::timestamptz, $4::uuid))
          ORDER BY r.error_time DESC, r.id DESC LIMIT 50",
        &[&state, &wf, &t, &id.as_deref().and_then(|s| uuid::Uuid::parse_str(s).ok())],
    )
    .await;
    let next =
        list.rows.as_array().filter(|a| a.len() as i64 == PAGE).and_then(|a| a.last()).map(|r| {
            format!("{}|{}", r["error_time"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default())
        });
    render(
        &app,
        &headers,
        "errors.html",
        "errors",
        json!({"errors": list, "state": state, "workflow": wf, "next": next}),
        &q,
    )
}

async fn queue(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let wf = filter(&q, "workflow");
    let list = rows(
        &c,
        "SELECT q.id, q.workflow_name, CASE WHEN q.claimed_by IS NULL THEN 'pending' ELSE 'running' END AS status,
                q.run_after, q.claimed_by, q.visible_at, q.attempts, q.priority, q.owner::text AS owner,
                extract(epoch FROM now() - q.run_after) AS waiting
           FROM automation_workflows.execution_queue q
          WHERE ($1::text IS NULL OR q.workflow_name = $1::text)
          ORDER BY q.priority DESC, q.run_after, q.id LIMIT 200",
        &[&wf],
    )
    .await;
    let steps = rows(
        &c,
        "SELECT coalesce(r.queue, '(sql)') AS queue, count(*) FILTER (WHERE r.status = 'pending') AS pending,
                count(*) FILTER (WHERE r.status = 'running') AS running, min(r.visible_at) FILTER (WHERE r.status = 'pending') AS oldest
           FROM automation_workflows.step_runs r WHERE r.status IN ('pending', 'running')
          GROUP BY 1 ORDER BY 1",
        &[],
    )
    .await;
    // (0.10.0) what the history keeps of each queue that keeps less than all
    let history = rows(
        &c,
        "SELECT h.workflow_name, h.history, h.set_by::text AS set_by, h.set_at
           FROM automation.queue_settings h ORDER BY 1 LIMIT 200",
        &[],
    )
    .await;
    render(
        &app,
        &headers,
        "queue.html",
        "queue",
        json!({"queue": list, "steps": steps, "workflow": wf, "history": history}),
        &q,
    )
}

// ---------------------------------------------------------------- actions

#[derive(Deserialize)]
struct ActionForm {
    csrf: String,
    #[serde(default)]
    from_step: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// A form of this console, from this browser (the cookie) — not a forged
/// cross-site POST.
fn csrf_ok(app: &App, headers: &HeaderMap, form: &ActionForm) -> bool {
    let cookie = headers.get(header::COOKIE).and_then(|c| c.to_str().ok()).and_then(|c| auth::cookie(c, CSRF_COOKIE));
    auth::same_token(&form.csrf, &app.csrf) && cookie.is_some_and(|c| auth::same_token(c, &app.csrf))
}

fn back(to: &str, outcome: Result<String, String>) -> Response {
    let (key, text) = match outcome {
        Ok(t) => ("done", t),
        Err(t) => ("error", t),
    };
    let sep = if to.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{to}{sep}{key}={}", urlencode(&text))).into_response()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "the form is stale or not from this console: reload the page and try again").into_response()
}

async fn rerun(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&app, &headers, &form) {
        return forbidden();
    }
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return not_found("not an execution id");
    };
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let from = form.from_step.filter(|s| !s.is_empty());
    match c.query_one("SELECT automation.rerun_workflow($1, $2)::text", &[&uuid, &from]).await {
        Ok(row) => {
            let new: String = row.get(0);
            back(&format!("/executions/{new}"), Ok(format!("re-run of {id} started")))
        }
        Err(e) => back(&format!("/executions/{id}"), Err(db_error(&e))),
    }
}

async fn cancel(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&app, &headers, &form) {
        return forbidden();
    }
    let Ok(uuid) = uuid::Uuid::parse_str(&id) else {
        return not_found("not an execution id");
    };
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let outcome =
        match c.query_one("SELECT automation.cancel_workflow($1, 'cancelled from the console')", &[&uuid]).await {
            Ok(row) if row.get::<_, bool>(0) => Ok("cancelled".to_owned()),
            Ok(_) => Err("it had already ended".to_owned()),
            Err(e) => Err(db_error(&e)),
        };
    back(&format!("/executions/{id}"), outcome)
}

async fn trigger_enabled(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i32>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&app, &headers, &form) {
        return forbidden();
    }
    let enabled = form.value.as_deref() == Some("true");
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let outcome =
        match c.execute("UPDATE automation_triggers.registry SET enabled = $2 WHERE id = $1", &[&id, &enabled]).await {
            Ok(1) => Ok(format!("trigger {id} {}", if enabled { "resumed" } else { "paused" })),
            Ok(_) => Err(format!("trigger {id} does not exist, or you may not change it")),
            Err(e) => Err(db_error(&e)),
        };
    back("/triggers", outcome)
}

async fn job_active(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ActionForm>,
) -> Response {
    if !csrf_ok(&app, &headers, &form) {
        return forbidden();
    }
    let active = form.value.as_deref() == Some("true");
    let c = match session(&app).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let outcome = match c.execute("SELECT automation.alter_job($1, active => $2)", &[&id, &active]).await {
        Ok(_) => Ok(format!("job {id} {}", if active { "resumed" } else { "paused" })),
        Err(e) => Err(db_error(&e)),
    };
    back(&format!("/jobs/{id}"), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_escape_what_the_database_holds() {
        let env = templates();
        let t = env.get_template("errors.html").unwrap();
        let html = t
            .render(minijinja::Value::from_serialize(json!({
                "page": "errors", "allow_actions": true, "csrf": "t", "refresh": 5, "state": "open",
                "errors": {"rows": [{"id": "00000000-0000-0000-0000-000000000001", "error_time": "2026-12-02T10:00:00+00:00",
                                     "workflow_name": "<script>alert(1)</script>", "error_type": "X",
                                     "error_message": "\"><img src=x onerror=alert(2)>"}], "error": null}
            })))
            .unwrap();
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)"), "{html}");
        assert!(!html.contains("<img src=x"));
    }

    #[test]
    fn history_modes_show_on_workflows_and_under_the_chart() {
        let env = templates();
        let render = |name: &str, mut ctx: serde_json::Value| {
            ctx["page"] = json!("x");
            ctx["refresh"] = json!(0);
            env.get_template(name).unwrap().render(minijinja::Value::from_serialize(&ctx)).unwrap()
        };
        let row = |name: &str, history: &str| {
            json!({"name": name, "version": 1, "is_active": true, "steps": 1, "triggers": 0, "owner": "o",
                   "finished": 2, "succeeded": 1, "failed": 1, "latest": null,
                   "history": history, "counted": 40, "counted_ok": 30, "counted_since": null})
        };
        let html = render(
            "workflows.html",
            json!({"workflows": {"rows": [row("kept", "full"), row("lean", "errors")], "error": null}}),
        );
        let lean = &html[html.find(">lean<").unwrap()..];
        let lean = &lean[..lean.find("</tr>").unwrap()];
        assert!(lean.contains(">errors</span>") && lean.contains("successes not kept"), "{lean}");
        assert!(lean.contains(">40<") && lean.contains("75.0%"), "counted: 30 of 40 succeeded: {lean}");
        assert!(!lean.contains("50.0%"), "no success rate from a history that keeps no successes: {lean}");
        let kept = &html[html.find(">kept<").unwrap()..];
        let kept = &kept[..kept.find("</tr>").unwrap()];
        assert!(kept.contains("50.0%") && !kept.contains("successes not kept"), "{kept}");

        let empty = json!({"rows": [], "error": null});
        let overview = |not_kept| {
            render(
                "overview.html",
                json!({"health": empty, "scheduler": empty, "queue": empty, "hours": empty, "hours_max": 0,
                       "pipelines": empty, "problems": empty, "failing_jobs": empty, "not_kept": not_kept}),
            )
        };
        let html = overview(json!({"rows": [{"workflow_name": "lean", "history": "none"}], "error": null}));
        assert!(html.contains("Not in the chart: the successes of") && html.contains(">lean</a> (none)"));
        assert!(!overview(empty.clone()).contains("Not in the chart"));
    }

    #[test]
    fn every_page_renders_with_empty_sections() {
        let env = templates();
        let empty = json!({"rows": [], "error": null});
        let failing = json!({"rows": [], "error": "permission denied for table job (42501)"});
        for (name, ctx) in [
            (
                "overview.html",
                json!({"health": empty, "scheduler": failing, "queue": empty, "hours": empty, "hours_max": 0,
                                     "pipelines": empty, "problems": empty, "failing_jobs": empty, "not_kept": failing}),
            ),
            ("workflows.html", json!({"workflows": empty})),
            ("executions.html", json!({"executions": empty})),
            ("jobs.html", json!({"jobs": failing})),
            ("triggers.html", json!({"triggers": empty})),
            ("errors.html", json!({"errors": empty, "state": "open"})),
            ("queue.html", json!({"queue": empty, "steps": empty, "history": failing})),
        ] {
            let mut ctx = ctx;
            ctx["page"] = json!("x");
            ctx["refresh"] = json!(0);
            let html = env.get_template(name).unwrap().render(minijinja::Value::from_serialize(&ctx)).unwrap();
            assert!(html.contains("</html>"), "{name}");
            // the title is the page's name, nothing of its content (the
            // Queue page once carried its History modes table in it)
            let title = &html[html.find("<title>").unwrap() + 7..html.find("</title>").unwrap()];
            assert!(!title.contains('<') && title.ends_with(" · automation-console"), "{name}: title {title:?}");
            if name == "jobs.html" {
                assert!(html.contains("permission denied for table job (42501)"));
            }
        }
    }

    #[test]
    fn timestamps_and_cursors() {
        assert_eq!(ts(minijinja::Value::from("2026-12-02T21:25:20.123456+00:00")), "2026-12-02 21:25:20");
        assert_eq!(ts(minijinja::Value::from("2026-12-02T21:25:20+00:00")), "2026-12-02 21:25:20");
        assert_eq!(ts(minijinja::Value::from(())), "");
        let b = "2026-12-02T21:25:20+00:00|01a2389a-f97d-7060-a755-f3f69b28ea06".to_owned();
        assert_eq!(cursor(Some(&b)).1.as_deref(), Some("01a2389a-f97d-7060-a755-f3f69b28ea06"));
        assert_eq!(cursor(Some(&"nonsense".to_owned())), (None, None));
        assert_eq!(urlencode("a b&c<"), "a%20b%26c%3C");
    }
}
