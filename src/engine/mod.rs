//! The workflow engine (issue 18). 0.5.0 has its first part: the definition
//! format, validated when a definition is written, and every version of a
//! definition kept (`automation_workflows.definition_versions`), so that an
//! execution can run the version it started with.
//!
//! - `definition`: the format, parsed and validated in plain Rust;
//! - `steps`: SQL steps (0.7.0), and the step workers' serving loop;
//! - `dispatch`: the SQL steps duty of a database's worker (hand ready
//!   steps to step workers, recover lost ones, keep deadlines);
//! - this file: the edge, `automation.check_definition(jsonb)`, which adds
//!   what only PostgreSQL can check (interval syntax) and raises 22023.
//!
//! Executions' runtime (start, complete, claim) is sql/engine.sql's and
//! sql/runtime.sql's; table triggers are in triggers/, the queue's
//! recording in queue/.

pub mod definition;
pub mod dispatch;
pub mod steps;

use pgrx::prelude::*;

use crate::error::Error;
use definition::{DefinitionError, Parsed};

/// The error a refused definition raises.
fn refuse(e: &DefinitionError) -> Error {
    Error::invalid(format!("invalid workflow definition: {e}")).with_hint(
        "See docs/workflows.md, \"Definitions\": steps with a unique name, after (the steps it waits for), \
         and exactly one of sql or queue.",
    )
}

/// Is `text` an interval PostgreSQL accepts, and positive? (No: why not.)
fn check_interval(text: &str) -> Result<(), String> {
    let checked = crate::subxact::run(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT $1::pg_catalog.interval OPERATOR(pg_catalog.>) '0'::pg_catalog.interval",
            &[text.into()],
        )
    });
    match checked {
        Ok(Some(true)) => Ok(()),
        Ok(_) => Err(format!("must be a positive interval, not {text}")),
        Err(_) => Err(format!("is not an interval: {text}")),
    }
}

/// Is `text` a JSON path PostgreSQL accepts? (No: why not.)
fn check_jsonpath(text: &str) -> Result<(), String> {
    crate::subxact::run(|| Spi::get_one_with_args::<bool>("SELECT $1::pg_catalog.jsonpath IS NOT NULL", &[text.into()]))
        .map(|_| ())
        .map_err(|_| format!("is not a JSON path: {text}"))
}

/// Validate `definition` (see `definition::parse`), intervals included.
pub fn check(definition: &serde_json::Value) -> Result<Parsed, Error> {
    let parsed = definition::parse(definition).map_err(|e| refuse(&e))?;
    if let Parsed::Workflow(w) = &parsed {
        for (step, field, value) in w.intervals() {
            check_interval(value).map_err(|problem| {
                refuse(&DefinitionError { step: step.map(str::to_owned), field: field.to_owned(), problem })
            })?;
        }
        for s in &w.steps {
            if let Some(path) = &s.map {
                check_jsonpath(path).map_err(|problem| {
                    refuse(&DefinitionError { step: Some(s.name.clone()), field: "map".into(), problem })
                })?;
            }
        }
    }
    Ok(parsed)
}

/// Microseconds in an interval, as PostgreSQL compares intervals (a month is
/// 30 days, a day 24 hours); saturating.
fn interval_micros(i: &pgrx::datum::Interval) -> i64 {
    let days = i64::from(i.months()).saturating_mul(30).saturating_add(i64::from(i.days()));
    days.saturating_mul(86_400_000_000).saturating_add(i.micros())
}

#[pg_schema]
mod automation {
    use super::*;
    use crate::error::OrRaise;
    use pgrx::datum::Interval;

    /// `automation.step_backoff(attempt, base, cap) → interval`: how long a
    /// step waits before attempt `attempt + 1` after attempt `attempt`
    /// failed: `base * 2^(attempt - 1)`, at most `cap`, with equal jitter
    /// (half fixed, half random), as `retry_delay` does for executions.
    #[pg_extern(volatile, parallel_restricted, sql = false)]
    fn step_backoff(attempt: i32, base: Interval, cap: Interval) -> Interval {
        // SAFETY: pg_prng_double reads and advances this backend's global
        // PRNG state, seeded by PostgreSQL at backend start.
        let jitter = unsafe { pg_sys::pg_prng_double(&raw mut pg_sys::pg_global_prng_state) };
        let ms = crate::runtime::backoff_ms(
            interval_micros(&base) / 1000,
            interval_micros(&cap) / 1000,
            attempt.saturating_sub(1),
            jitter,
        );
        Interval::new(0, 0, ms.saturating_mul(1000)).unwrap_or_else(|_| cap)
    }

    /// `automation.check_definition(definition jsonb) → boolean` (a SQL
    /// function handing the definition over as text): raises 22023 naming
    /// the step and field when `definition` is not a valid workflow; true
    /// when it can be started (it has steps), false when it is data without
    /// steps. (0.8.0) A definition nested deeper than MAX_DEPTH levels is
    /// refused with 22023 before it is parsed (a definition nested ~127
    /// deep raised XX000 from the JSON parser's recursion limit).
    /// `automation.map_is_sequence(path text) → boolean` (internal): does a
    /// map path yield a sequence whose matches are the list (a wildcard, a
    /// filter, a slice), rather than one array? See definition::map_shape.
    #[pg_extern(immutable, parallel_safe, sql = false)]
    fn map_is_sequence(path: &str) -> bool {
        matches!(definition::map_shape(path), Ok(definition::MapShape::Sequence))
    }

    /// The C symbol of 0.5.0-0.7.0's `check_definition(jsonb)`: kept so an
    /// installation at those versions loads (and updates) with this library;
    /// 0.8.0 declares `check_definition` in SQL over `check_definition_text`.
    #[pg_extern(stable, parallel_safe, sql = false)]
    fn check_definition(definition: pgrx::JsonB) -> bool {
        matches!(check(&definition.0).or_raise(), Parsed::Workflow(_))
    }

    #[pg_extern(stable, parallel_safe, sql = false)]
    fn check_definition_text(definition: &str) -> bool {
        let depth = definition::nesting_depth(definition);
        if depth > definition::MAX_DEPTH {
            Error::invalid(format!(
                "invalid workflow definition: nested {depth} levels deep; at most {} are allowed",
                definition::MAX_DEPTH
            ))
            .with_hint("A definition's steps, retries and inputs need a few levels; keep deep data in tables, not in the definition.")
            .raise();
        }
        let value: serde_json::Value = serde_json::from_str(definition)
            .unwrap_or_else(|e| Error::invalid(format!("invalid workflow definition: {e}")).raise());
        matches!(check(&value).or_raise(), Parsed::Workflow(_))
    }
}

extension_sql_file!(
    "../../sql/engine.sql",
    name = "engine",
    requires = [
        "automation_workflows_schema",
        "runtime",
        "timeseries",
        automation::check_definition_text,
        automation::map_is_sequence,
        automation::step_backoff,
        steps::automation::step_workers_available,
        steps::automation::wake_step_workers,
        steps::automation::stop_sql_step,
        steps::automation::in_step_worker,
        steps::automation::note_deadline,
        triggers::inbox::automation::drain_trigger_inbox,
        triggers::inbox::automation::workflow_table_trigger
    ]
);
