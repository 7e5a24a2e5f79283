//! The workflow engine (issue 18). 0.5.0 has its first part: the definition
//! format, validated when a definition is written, and every version of a
//! definition kept (`automation_workflows.definition_versions`), so that an
//! execution can run the version it started with.
//!
//! - `definition`: the format, parsed and validated in plain Rust;
//! - this file: the edge, `automation.check_definition(jsonb)`, which adds
//!   what only PostgreSQL can check (interval syntax) and raises 22023.

pub mod definition;

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

/// Validate `definition` (see `definition::parse`), intervals included.
pub fn check(definition: &serde_json::Value) -> Result<Parsed, Error> {
    let parsed = definition::parse(definition).map_err(|e| refuse(&e))?;
    if let Parsed::Workflow(w) = &parsed {
        for (step, field, value) in w.intervals() {
            check_interval(value).map_err(|problem| {
                refuse(&DefinitionError { step: step.map(str::to_owned), field: field.to_owned(), problem })
            })?;
        }
    }
    Ok(parsed)
}

#[pg_schema]
mod automation {
    use super::*;
    use crate::error::OrRaise;

    /// `automation.check_definition(definition jsonb) → boolean`: raises
    /// 22023 naming the step and field when `definition` is not a valid
    /// workflow; true when it can be started (it has steps), false when it
    /// is data without steps.
    #[pg_extern(stable, parallel_safe, sql = false)]
    fn check_definition(definition: pgrx::JsonB) -> bool {
        matches!(check(&definition.0).or_raise(), Parsed::Workflow(_))
    }
}

extension_sql_file!(
    "../../sql/engine.sql",
    name = "engine",
    requires = ["automation_workflows_schema", automation::check_definition]
);
