//! The completion trigger: when an execution's status moves into a terminal
//! state, send `pg_notify(channel, {workflow_id, workflow_name, status,
//! duration})`, delivered at commit.
//!
//! Never fail the user's UPDATE because of the notification: the payload is
//! capped below NOTIFY's 8000-byte limit (optional fields go first), a
//! misconfigured channel is a WARNING, and a full NOTIFY queue is a WARNING
//! (or, with `automation.notify_queue_full = error`, a clear 54000 error).
//!
//! `payload` is pure Rust; the trigger and the attach/detach functions are the
//! thin PostgreSQL edge.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{direct_function_call, direct_function_call_as_datum, IntoDatum, PgTrigger};
use serde_json::Value;

use crate::error::{Context, Error, Result};
use crate::settings::{self, QueueFullAction};

/// Building and capping the payload: no PostgreSQL in here.
pub mod payload {
    use serde::Serialize;
    use serde_json::Value;

    /// NOTIFY rejects a payload of 8000 bytes or more (NOTIFY_PAYLOAD_MAX_LENGTH
    /// with the default BLCKSZ), with SQLSTATE 22023, rolling back the UPDATE.
    pub const MAX_PAYLOAD_BYTES: usize = 7999;
    /// When the payload is still too long without its optional fields, the
    /// status keeps at most this many bytes and the id gets the rest.
    const STATUS_BUDGET_BYTES: usize = 256;

    /// What the trigger read off the row.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Completion {
        /// The row's id: a JSON number for integer ids, a string otherwise.
        pub id: Value,
        pub name: Option<String>,
        pub status: Value,
        /// Seconds between started_at and completed_at.
        pub duration: Option<f64>,
    }

    impl Completion {
        /// A finished execution of the queue (a uuid id, its workflow's
        /// name, status and times in microseconds): what the recorder reads
        /// from the log and what the hand-offs' drain reads from a slot.
        pub fn execution(
            id: &[u8; 16],
            name: Option<String>,
            status: &str,
            started: Option<i64>,
            completed: Option<i64>,
        ) -> Completion {
            Completion {
                id: Value::String(uuid_text(id)),
                name,
                status: Value::String(status.to_owned()),
                duration: duration_seconds(started, completed),
            }
        }
    }

    /// The seed's payload, in its key order. `None` omits a key; `Some(None)`
    /// is a JSON null.
    #[derive(Serialize)]
    struct Wire<'a> {
        workflow_id: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        workflow_name: Option<Option<&'a str>>,
        status: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        duration: Option<Option<f64>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    }

    impl Wire<'_> {
        fn json(&self) -> String {
            // Serializing strings, numbers and booleans cannot fail.
            serde_json::to_string(self).expect("payload serialization")
        }
    }

    /// Seconds from `started` to `completed` (PostgreSQL timestamps in
    /// microseconds); `None` when either is missing or infinite.
    pub fn duration_seconds(started: Option<i64>, completed: Option<i64>) -> Option<f64> {
        let (s, c) = (started?, completed?);
        // PostgreSQL's +/-infinity timestamps are i64::MAX / i64::MIN.
        if [s, c].iter().any(|t| *t == i64::MAX || *t == i64::MIN) {
            return None;
        }
        // Dividing two exact integers rounds once, so 12345678 µs prints as 12.345678.
        Some(c.checked_sub(s)? as f64 / 1_000_000.0)
    }

    /// The JSON payload, at most `max_bytes` long. Returns it and whether
    /// anything was left out or shortened (then it carries `"truncated": true`).
    ///
    /// Order of sacrifice: workflow_name, then duration, then the tail of the
    /// status (beyond 256 bytes) and of the id. workflow_id and status are
    /// always present.
    pub fn build(c: &Completion, max_bytes: usize) -> (String, bool) {
        let full = Wire {
            workflow_id: &c.id,
            workflow_name: Some(c.name.as_deref()),
            status: &c.status,
            duration: Some(c.duration),
            truncated: false,
        };
        let json = full.json();
        if json.len() <= max_bytes {
            return (json, false);
        }
        let no_name = Wire { workflow_name: None, truncated: true, ..full };
        let json = no_name.json();
        if json.len() <= max_bytes {
            return (json, true);
        }
        let minimal = Wire { duration: None, ..no_name };
        let json = minimal.json();
        if json.len() <= max_bytes {
            return (json, true);
        }
        // The id or the status alone is too long: keep their beginnings.
        let status = shorten(&c.status, STATUS_BUDGET_BYTES);
        let skeleton = Wire { workflow_id: &Value::String(String::new()), status: &status, ..minimal };
        let id_budget = max_bytes.saturating_sub(skeleton.json().len());
        let id = shorten(&c.id, id_budget);
        let json = Wire { workflow_id: &id, ..skeleton }.json();
        (json, true)
    }

    /// A string value cut so that its JSON-escaped form (without quotes) is
    /// at most `budget` bytes, on a character boundary; other values as they are.
    fn shorten(v: &Value, budget: usize) -> Value {
        match v {
            Value::String(s) => Value::String(prefix_within(s, budget).to_owned()),
            other => other.clone(),
        }
    }

    fn prefix_within(s: &str, budget: usize) -> &str {
        let mut used = 0;
        for (at, ch) in s.char_indices() {
            used += escaped_len(ch);
            if used > budget {
                return &s[..at];
            }
        }
        s
    }

    /// Bytes serde_json writes for `ch` inside a string.
    fn escaped_len(ch: char) -> usize {
        match ch {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        }
    }

    /// The canonical text form of a UUID (lower-case, hyphenated), as
    /// uuid_out prints it. Hand-rolled: going through `fmt` per byte cost
    /// about 5% of a 100k-row UPDATE with the trigger.
    pub fn uuid_text(bytes: &[u8; 16]) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(36);
        for (i, b) in bytes.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                out.push('-');
            }
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
        out
    }

    /// Past this fraction of `pg_notification_queue_usage()` the queue is
    /// treated as full: PostgreSQL would fail the transaction at commit.
    pub const QUEUE_FULL_USAGE: f64 = 0.99;

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        fn completion(name: &str) -> Completion {
            Completion {
                id: json!("0b7f8a5e-4c1a-4e2b-9d3f-2a1b3c4d5e6f"),
                name: Some(name.to_owned()),
                status: json!("success"),
                duration: Some(12.345678),
            }
        }

        fn parse(s: &str) -> Value {
            serde_json::from_str(s).expect("payload is valid JSON")
        }

        #[test]
        fn small_payload_has_the_seed_keys_and_no_marker() {
            let (p, truncated) = build(&completion("nightly-etl"), MAX_PAYLOAD_BYTES);
            assert!(!truncated);
            assert_eq!(
                p,
                r#"{"workflow_id":"0b7f8a5e-4c1a-4e2b-9d3f-2a1b3c4d5e6f","workflow_name":"nightly-etl","status":"success","duration":12.345678}"#
            );
        }

        #[test]
        fn nulls_stay_as_json_null() {
            let c = Completion { id: json!(42), name: None, status: json!("error"), duration: None };
            let (p, truncated) = build(&c, MAX_PAYLOAD_BYTES);
            assert!(!truncated);
            assert_eq!(p, r#"{"workflow_id":42,"workflow_name":null,"status":"error","duration":null}"#);
        }

        #[test]
        fn a_long_name_is_dropped_first_and_marked() {
            let (p, truncated) = build(&completion(&"x".repeat(9000)), MAX_PAYLOAD_BYTES);
            assert!(truncated);
            let v = parse(&p);
            assert!(v.get("workflow_name").is_none());
            assert_eq!(v["duration"], json!(12.345678));
            assert_eq!(v["status"], json!("success"));
            assert_eq!(v["truncated"], json!(true));
        }

        #[test]
        fn multibyte_text_is_capped_in_bytes_not_characters() {
            // 2000 four-byte characters: 2000 chars but 8000 bytes
            let name = "😀".repeat(2000);
            assert_eq!(name.chars().count(), 2000);
            let (p, truncated) = build(&completion(&name), MAX_PAYLOAD_BYTES);
            assert!(truncated);
            assert!(p.len() <= MAX_PAYLOAD_BYTES);
        }

        #[test]
        fn a_just_fitting_payload_is_kept_whole() {
            let base = build(&completion(""), usize::MAX).0.len();
            let fits = completion(&"n".repeat(MAX_PAYLOAD_BYTES - base));
            let (p, truncated) = build(&fits, MAX_PAYLOAD_BYTES);
            assert_eq!(p.len(), MAX_PAYLOAD_BYTES);
            assert!(!truncated);
            let over = completion(&"n".repeat(MAX_PAYLOAD_BYTES - base + 1));
            assert!(build(&over, MAX_PAYLOAD_BYTES).1);
        }

        #[test]
        fn huge_id_and_status_are_shortened_on_char_boundaries() {
            let c = Completion {
                id: json!("é\"\u{1}".repeat(5000)),
                name: Some("n".into()),
                status: json!("s".repeat(10_000)),
                duration: Some(1.0),
            };
            let (p, truncated) = build(&c, MAX_PAYLOAD_BYTES);
            assert!(truncated);
            assert!(p.len() <= MAX_PAYLOAD_BYTES, "{} bytes", p.len());
            let v = parse(&p);
            assert_eq!(v["status"].as_str().unwrap().len(), STATUS_BUDGET_BYTES);
            let id = v["workflow_id"].as_str().unwrap();
            assert!(!id.is_empty() && "é\"\u{1}".repeat(5000).starts_with(id));
        }

        #[test]
        fn every_size_fits_under_the_limit() {
            for n in (0..20_000).step_by(997) {
                for text in ["a", "é", "😀", "\"", "\u{2}"] {
                    let c = Completion {
                        id: json!(text.repeat(n)),
                        name: Some(text.repeat(n)),
                        status: json!(text.repeat(n / 3)),
                        duration: Some(-3.5),
                    };
                    let (p, _) = build(&c, MAX_PAYLOAD_BYTES);
                    assert!(p.len() <= MAX_PAYLOAD_BYTES, "n={n} text={text:?}: {} bytes", p.len());
                    parse(&p);
                }
            }
        }

        #[test]
        fn duration_is_exact_to_the_microsecond() {
            assert_eq!(duration_seconds(Some(0), Some(12_345_678)), Some(12.345678));
            assert_eq!(duration_seconds(Some(5_000_000), Some(2_000_000)), Some(-3.0));
            assert_eq!(duration_seconds(None, Some(1)), None);
            assert_eq!(duration_seconds(Some(1), None), None);
            assert_eq!(duration_seconds(Some(0), Some(i64::MAX)), None);
            assert_eq!(duration_seconds(Some(i64::MIN), Some(0)), None);
        }

        #[test]
        fn uuids_print_as_uuid_out_does() {
            let bytes =
                [0x0b, 0x7f, 0x8a, 0x5e, 0x4c, 0x1a, 0x4e, 0x2b, 0x9d, 0x3f, 0x2a, 0x1b, 0x3c, 0x4d, 0x5e, 0x6f];
            assert_eq!(uuid_text(&bytes), "0b7f8a5e-4c1a-4e2b-9d3f-2a1b3c4d5e6f");
            assert_eq!(uuid_text(&[0xff; 16]), "ffffffff-ffff-ffff-ffff-ffffffffffff");
        }

        #[test]
        fn an_execution_of_the_queue_as_the_recorder_and_the_drain_notify_it() {
            let c = Completion::execution(&[0xff; 16], Some("etl".into()), "success", Some(1_000_000), Some(3_500_000));
            assert_eq!(c.id, Value::String("ffffffff-ffff-ffff-ffff-ffffffffffff".into()));
            assert_eq!((c.name.as_deref(), c.status.as_str(), c.duration), (Some("etl"), Some("success"), Some(2.5)));
            assert_eq!(Completion::execution(&[0; 16], None, "error", None, Some(1)).duration, None);
        }
    }
}

/// The name of the trigger `attach_completion_notify` creates (the seed's).
pub const TRIGGER_NAME: &str = "trg_notify_workflow_completion";

#[pg_schema]
mod automation {
    use pgrx::prelude::*;
    use pgrx::{PgTrigger, PgTriggerError};

    /// Trigger function: notify the completion of the row's execution.
    /// Create it with `automation.attach_completion_notify(table, channel)`,
    /// which adds the WHEN clause that limits it to transitions into a
    /// terminal status.
    #[pg_trigger]
    fn notify_workflow_completion<'a>(
        trigger: &'a PgTrigger<'a>,
    ) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
        super::fire(trigger);
        // AFTER trigger: the return value is ignored.
        Ok(None)
    }

    // The two SQL-callable functions below take `regclass`, which pgrx has no
    // Rust type for (its datum is an Oid), so their CREATE FUNCTION statements
    // are hand-written in sql/notify.sql; pgrx only compiles the C symbols.

    use crate::error::OrRaise;

    /// `automation.attach_completion_notify(target regclass, channel text DEFAULT NULL) → text`
    #[pg_extern(sql = false)]
    fn attach_completion_notify(target: Option<pg_sys::Oid>, channel: Option<&str>) -> String {
        let Some(target) = target else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "the table to attach the completion trigger to must not be NULL"
            );
        };
        super::attach(target, channel).or_raise()
    }

    /// `automation.detach_completion_notify(target regclass) → boolean` (STRICT)
    #[pg_extern(sql = false)]
    fn detach_completion_notify(target: pg_sys::Oid) -> bool {
        super::detach(target).or_raise()
    }
}

// Declarations of the two functions above, and the trigger on
// automation_workflows.workflow_executions (installed by calling
// attach_completion_notify, so there is one definition of the trigger).
extension_sql_file!(
    "../sql/notify.sql",
    name = "notify",
    requires = ["automation_workflows_schema", automation::notify_workflow_completion]
);

/// The trigger body.
fn fire(trigger: &PgTrigger<'_>) {
    let td = trigger.trigger_data();
    // SAFETY: pgrx checked this is a trigger call; PostgreSQL hands us valid
    // TriggerData whose relation stays open for the duration of the call.
    let (is_row_update, tupdesc, tuple) = unsafe {
        let event = td.tg_event;
        let is_row_update = (event & pg_sys::TRIGGER_EVENT_OPMASK) == pg_sys::TRIGGER_EVENT_UPDATE
            && (event & pg_sys::TRIGGER_EVENT_ROW) != 0;
        (is_row_update, (*td.tg_relation).rd_att, td.tg_newtuple)
    };
    if !is_row_update || tuple.is_null() {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "automation.notify_workflow_completion() must be fired AFTER UPDATE ... FOR EACH ROW",
            "Install it with automation.attach_completion_notify(table)."
        );
    }
    let channel = match trigger.extra_args().ok().and_then(|a| a.into_iter().next()) {
        Some(channel) => channel,
        None => settings::NOTIFY_CHANNEL.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    // SAFETY: tuple and tupdesc are the trigger's new row and its relation's
    // descriptor, valid for this call.
    let completion = unsafe { read_completion(tuple, tupdesc) };
    let Some(completion) = completion else {
        // The table lost its id or status column after the trigger was made.
        return;
    };
    send(&channel, &completion);
}

/// Notify `channel` of one completion (the trigger's payload, capped), unless
/// the channel is unusable or the NOTIFY queue is full (a WARNING, or an
/// error with `automation.notify_queue_full = error`). Also used by the
/// recorder (src/queue.rs), for executions that finished in the queue.
pub fn send(channel: &str, completion: &Completion) {
    if let Err(problem) = settings::channel::validate_channel(channel) {
        warning!("completion notification skipped: {problem}");
        return;
    }
    if queue_full(&completion.id) {
        return;
    }
    let (payload, _truncated) = payload::build(completion, payload::MAX_PAYLOAD_BYTES);
    // SAFETY: pg_notify(text, text) is a plain V1 function; both arguments
    // are non-null text datums that live until the call returns.
    unsafe {
        direct_function_call_as_datum(pg_sys::pg_notify, &[channel.into_datum(), payload.as_str().into_datum()]);
    }
}

/// Read the completion fields off the row. `None` when `id` or `status` is
/// missing from the table.
///
/// This runs once per completed row, so it avoids per-column FFI calls (each
/// pg_sys call is a guarded setjmp): columns are found by reading the tuple
/// descriptor in Rust, and the row is deformed once.
///
/// # Safety
/// `tuple` must be a valid heap tuple described by `tupdesc`.
unsafe fn read_completion(tuple: pg_sys::HeapTuple, tupdesc: pg_sys::TupleDesc) -> Option<Completion> {
    // SAFETY: a valid descriptor (caller); from_pg_unchecked does not take
    // ownership, so nothing is freed when `desc` goes out of scope.
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked(tupdesc) };
    // index and type of: id, status, workflow_name, started_at, completed_at
    let mut at: [Option<(usize, pg_sys::Oid)>; 5] = [None; 5];
    for (i, attr) in desc.iter().enumerate() {
        if attr.attisdropped {
            continue;
        }
        // SAFETY: attname is a NUL-terminated NameData.
        let name = unsafe { std::ffi::CStr::from_ptr(attr.attname.data.as_ptr()) };
        let slot = match name.to_bytes() {
            b"id" => 0,
            b"status" => 1,
            b"workflow_name" => 2,
            b"started_at" => 3,
            b"completed_at" => 4,
            _ => continue,
        };
        at[slot] = Some((i, attr.atttypid));
    }
    let (id, status) = (at[0]?, at[1]?);

    let mut values = vec![pg_sys::Datum::from(0usize); desc.len()];
    let mut nulls = vec![true; desc.len()];
    // SAFETY: both arrays have natts elements, as heap_deform_tuple requires.
    unsafe { pg_sys::heap_deform_tuple(tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr()) };
    // SAFETY (both closures): the datums come from the deformed row, which
    // outlives them, and carry the type read from the descriptor.
    let json = |(i, typ): (usize, pg_sys::Oid)| unsafe { datum_json(values[i], nulls[i], typ) };
    let timestamp = |(i, typ): (usize, pg_sys::Oid)| match typ {
        // both are int64 microseconds, passed by value
        pg_sys::TIMESTAMPTZOID | pg_sys::TIMESTAMPOID => unsafe { i64::from_datum(values[i], nulls[i]) },
        _ => None,
    };
    Some(Completion {
        id: json(id),
        status: json(status),
        name: match at[2].map(json) {
            Some(Value::String(s)) => Some(s),
            Some(Value::Null) | None => None,
            Some(other) => Some(other.to_string()),
        },
        duration: payload::duration_seconds(at[3].and_then(timestamp), at[4].and_then(timestamp)),
    })
}

pub use payload::Completion;

/// A column as JSON: integers and booleans as themselves (as the seed's
/// jsonb_build_object would), everything else as its text form. text,
/// varchar and uuid, the usual types of these columns, are decoded in Rust;
/// other types go through their output function.
///
/// # Safety
/// `datum` must be a value of type `typ` (or `isnull`).
unsafe fn datum_json(datum: pg_sys::Datum, isnull: bool, typ: pg_sys::Oid) -> Value {
    if isnull {
        return Value::Null;
    }
    // SAFETY: the caller guarantees datum has type typ; each arm reads it as that type.
    unsafe {
        match typ {
            pg_sys::INT2OID => i16::from_datum(datum, false).map_or(Value::Null, Value::from),
            pg_sys::INT4OID => i32::from_datum(datum, false).map_or(Value::Null, Value::from),
            pg_sys::INT8OID => i64::from_datum(datum, false).map_or(Value::Null, Value::from),
            pg_sys::BOOLOID => bool::from_datum(datum, false).map_or(Value::Null, Value::from),
            pg_sys::TEXTOID | pg_sys::VARCHAROID => String::from_datum(datum, false).map_or(Value::Null, Value::String),
            pg_sys::UUIDOID => pgrx::Uuid::from_datum(datum, false)
                .map_or(Value::Null, |u| Value::String(payload::uuid_text(u.as_bytes()))),
            _ => {
                let mut output = pg_sys::InvalidOid;
                let mut varlena = false;
                pg_sys::getTypeOutputInfo(typ, &mut output, &mut varlena);
                let text = pg_sys::OidOutputFunctionCall(output, datum);
                Value::String(std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned())
            }
        }
    }
}

thread_local! {
    /// The statement the queue was last checked for, and the usage seen.
    static QUEUE_CHECKED: std::cell::Cell<Option<((i64, i64), f64)>> = const { std::cell::Cell::new(None) };
}

/// `pg_notification_queue_usage()`, read once per statement: the function
/// first advances the queue tail (exclusive locks and a scan of every backend
/// slot), far too much per row, and a statement's own notifications only
/// enter the queue at commit anyway.
fn queue_usage() -> f64 {
    // SAFETY: plain reads of the current transaction's and statement's start times.
    let statement =
        unsafe { (pg_sys::GetCurrentTransactionStartTimestamp(), pg_sys::GetCurrentStatementStartTimestamp()) };
    if let Some((checked, usage)) = QUEUE_CHECKED.get() {
        if checked == statement {
            return usage;
        }
    }
    // SAFETY: pg_notification_queue_usage() takes no arguments and returns a float8.
    let usage = unsafe { direct_function_call::<f64>(pg_sys::pg_notification_queue_usage, &[]) }.unwrap_or(0.0);
    QUEUE_CHECKED.set(Some((statement, usage)));
    usage
}

/// True when the notification must not be queued because the NOTIFY queue is
/// full; with `automation.notify_queue_full = error` this raises instead.
fn queue_full(id: &Value) -> bool {
    let usage = queue_usage();
    if usage < payload::QUEUE_FULL_USAGE {
        return false;
    }
    let message = format!(
        "NOTIFY queue is full ({:.1}% used): completion notification for execution {id} not sent",
        usage * 100.0
    );
    let hint = "A session that ran LISTEN and keeps a transaction open stops the queue from \
                being cleaned up; the server log names its PID. End that transaction, or \
                pg_terminate_backend() the session.";
    let report =
        ErrorReport::new(PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED, message, function_name!()).set_hint(hint);
    match settings::NOTIFY_QUEUE_FULL.get() {
        QueueFullAction::Error => report.report(PgLogLevel::ERROR),
        QueueFullAction::Skip => report.report(PgLogLevel::WARNING),
    }
    true
}

fn attach(target: pg_sys::Oid, channel: Option<&str>) -> Result<String> {
    let (table, relkind) = crate::catalog::describe_relation(target)?;
    if relkind != "r" && relkind != "p" {
        return Err(Error::new(PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE, format!("{table} is not a table"))
            .with_detail("The completion trigger can only be attached to a table or a partitioned table."));
    }
    if let Some(channel) = channel {
        if let Err(problem) = settings::channel::validate_channel(channel) {
            return Err(Error::invalid(format!("invalid NOTIFY channel {channel:?}"))
                .with_detail(problem.to_string())
                .with_hint("Pass NULL to use automation.notify_channel."));
        }
    }
    check_columns(target, &table)?;

    let args = channel.map(pgrx::spi::quote_literal).unwrap_or_default();
    let sql = format!(
        "CREATE OR REPLACE TRIGGER {TRIGGER_NAME}
            AFTER UPDATE OF status ON {table}
            FOR EACH ROW
            WHEN ((NEW.status)::text OPERATOR(pg_catalog.=) ANY ('{{success,error,timeout}}'::text[])
                  AND (OLD.status)::text IS DISTINCT FROM (NEW.status)::text)
            EXECUTE FUNCTION automation.notify_workflow_completion({args})"
    );
    Spi::run(&sql).with_context(|| format!("could not create the completion trigger on {table}"))?;
    crate::catalog::trigger_definition(target, TRIGGER_NAME)?.ok_or_else(|| {
        Error::internal(format!("could not attach the completion trigger to {table}"), "the trigger is not there")
    })
}

/// `id` and `status` must exist; timestamps, when present, must be timestamps.
fn check_columns(target: pg_sys::Oid, table: &str) -> Result<()> {
    let columns: Vec<(Option<String>, Option<String>)> = Spi::connect(|client| {
        client
            .select(
                "SELECT attname::text, atttypid::regtype::text FROM pg_catalog.pg_attribute
                  WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped",
                None,
                &[target.into()],
            )?
            .map(|row| Ok((row.get::<String>(1)?, row.get::<String>(2)?)))
            .collect::<std::result::Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .with_context(|| format!("could not read the columns of {table}"))?;
    let type_of =
        |name: &str| columns.iter().find(|(n, _)| n.as_deref() == Some(name)).map(|(_, t)| t.as_deref().unwrap_or(""));
    for required in ["id", "status"] {
        if type_of(required).is_none() {
            return Err(Error::new(
                PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
                format!("{table} has no column \"{required}\""),
            )
            .with_detail(
                "The completion trigger reads the columns id and status, and workflow_name, started_at and completed_at when present.",
            ));
        }
    }
    for ts in ["started_at", "completed_at"] {
        if let Some(t) = type_of(ts) {
            if t != "timestamp with time zone" && t != "timestamp without time zone" {
                return Err(Error::new(
                    PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                    format!("column \"{ts}\" of {table} is {t}, not a timestamp"),
                )
                .with_detail(
                    "The duration in the payload is completed_at - started_at; both must be timestamptz or timestamp.",
                ));
            }
        }
    }
    Ok(())
}

fn detach(target: pg_sys::Oid) -> Result<bool> {
    let (table, _) = crate::catalog::describe_relation(target)?;
    crate::catalog::drop_trigger_if_exists(target, &table, TRIGGER_NAME)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// A user table of the seed's shape, but with unbounded text columns.
    fn jobs_table() {
        Spi::run(
            "CREATE TABLE public.jobs (id bigint PRIMARY KEY, workflow_name text, status text,
                                       started_at timestamptz, completed_at timestamptz)",
        )
        .unwrap();
    }

    #[pg_test]
    fn the_extension_installs_the_seed_trigger() {
        let def = Spi::get_one::<String>(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger
              WHERE tgrelid = 'automation_workflows.workflow_executions'::regclass
                AND tgname = 'trg_notify_workflow_completion'",
        )
        .unwrap()
        .expect("trigger missing");
        assert!(def.contains("AFTER UPDATE OF status"), "{def}");
        assert!(def.contains("FOR EACH ROW"), "{def}");
        assert!(def.contains("{success,error,timeout}"), "{def}");
        assert!(def.contains("IS DISTINCT FROM"), "{def}");
        assert!(def.ends_with("automation.notify_workflow_completion()"), "{def}");
    }

    #[pg_test]
    fn attach_with_a_channel_passes_it_as_the_trigger_argument() {
        jobs_table();
        let def = Spi::get_one::<String>("SELECT automation.attach_completion_notify('public.jobs', 'jobs_done')")
            .unwrap()
            .unwrap();
        assert!(def.ends_with("automation.notify_workflow_completion('jobs_done')"), "{def}");
        // attaching again replaces, it does not add a second trigger
        Spi::run("SELECT automation.attach_completion_notify('public.jobs')").unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.jobs'::regclass AND NOT tgisinternal",
        )
        .unwrap()
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            Spi::get_one::<bool>("SELECT automation.detach_completion_notify('public.jobs')").unwrap(),
            Some(true)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT automation.detach_completion_notify('public.jobs')").unwrap(),
            Some(false)
        );
    }

    #[pg_test]
    fn an_oversized_multibyte_payload_never_fails_the_update() {
        // 20 kB of 4-byte characters in the name and a long status: without
        // the cap pg_notify raises 22023 and the UPDATE is rolled back.
        jobs_table();
        Spi::run("SELECT automation.attach_completion_notify('public.jobs')").unwrap();
        Spi::run("INSERT INTO public.jobs VALUES (1, repeat('😀', 5000), 'running', now(), NULL)").unwrap();
        Spi::run("UPDATE public.jobs SET status = 'error', completed_at = now()").unwrap();
        assert_eq!(Spi::get_one::<String>("SELECT status FROM public.jobs").unwrap().as_deref(), Some("error"));
    }

    #[pg_test(error = "public.jobs has no column \"status\"")]
    fn attach_requires_a_status_column() {
        Spi::run("CREATE TABLE public.jobs (id int, state text)").unwrap();
        Spi::run("SELECT automation.attach_completion_notify('public.jobs')").unwrap();
    }

    #[pg_test(error = "column \"started_at\" of public.jobs is text, not a timestamp")]
    fn attach_requires_timestamp_columns() {
        Spi::run("CREATE TABLE public.jobs (id int, status text, started_at text)").unwrap();
        Spi::run("SELECT automation.attach_completion_notify('public.jobs')").unwrap();
    }

    #[pg_test(error = "invalid NOTIFY channel \"\"")]
    fn attach_refuses_an_empty_channel() {
        jobs_table();
        Spi::run("SELECT automation.attach_completion_notify('public.jobs', '')").unwrap();
    }

    #[pg_test(error = "public.v is not a table")]
    fn attach_refuses_a_view() {
        Spi::run("CREATE VIEW public.v AS SELECT 1 AS id, 'x'::text AS status").unwrap();
        Spi::run("SELECT automation.attach_completion_notify('public.v')").unwrap();
    }

    #[pg_test]
    fn quoted_identifiers_work() {
        Spi::run(r#"CREATE SCHEMA "My Schema"; CREATE TABLE "My Schema"."jobs; DROP TABLE x" (id int, status text)"#)
            .unwrap();
        let def =
            Spi::get_one::<String>(r#"SELECT automation.attach_completion_notify('"My Schema"."jobs; DROP TABLE x"')"#)
                .unwrap()
                .unwrap();
        assert!(def.contains(r#"ON "My Schema"."jobs; DROP TABLE x""#), "{def}");
    }

    #[pg_test(error = "invalid value for parameter \"automation.notify_channel\": \"\"")]
    fn the_channel_setting_refuses_an_empty_channel() {
        Spi::run("SET automation.notify_channel = ''").unwrap();
    }

    #[pg_test(error = "automation.notify_workflow_completion() must be fired AFTER UPDATE ... FOR EACH ROW")]
    fn the_trigger_function_refuses_other_events() {
        Spi::run("CREATE TABLE public.jobs (id int, status text)").unwrap();
        Spi::run(
            "CREATE TRIGGER t AFTER INSERT ON public.jobs FOR EACH ROW
             EXECUTE FUNCTION automation.notify_workflow_completion()",
        )
        .unwrap();
        Spi::run("INSERT INTO public.jobs VALUES (1, 'success')").unwrap();
    }
}
