//! Subtransactions for Rust code that must survive an ERROR and go on (as a
//! PL/pgSQL `BEGIN ... EXCEPTION` block does): the work is rolled back, the
//! error is returned as a value, the caller's transaction carries on.

use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::error::Error;

/// Run `f` in an internal subtransaction: committed (released) when it
/// returns, rolled back when it raises an ERROR, which comes back as `Err`.
/// A `Result::Err` returned by `f` itself is raised (with its SQLSTATE), so
/// it is rolled back and comes back the same way.
pub fn run<T, E: Into<Error>>(f: impl FnOnce() -> Result<T, E>) -> Result<T, CaughtError> {
    // SAFETY: what PL/pgSQL's exec_stmt_block does around a block with an
    // EXCEPTION clause: remember the memory context and resource owner,
    // start an internal subtransaction, and on the way out (either way)
    // release or roll it back and restore both. Called inside a transaction.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        let mut f = Some(f);
        PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
            let value = match (f.take().expect("runs once"))() {
                Ok(value) => value,
                Err(e) => e.into().raise(),
            };
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Ok(value)
        }))
        .catch_others(|e| {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Err(e)
        })
        .execute()
    }
}

/// Raise a caught error again, unchanged.
pub fn rethrow(e: CaughtError) -> ! {
    e.rethrow()
}

/// The message of a caught error, with its SQLSTATE.
pub fn message(e: &CaughtError) -> String {
    match e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
            format!("{} [SQLSTATE {}]", r.message(), crate::error::sqlstate(r.sql_error_code() as isize))
        }
        CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
    }
}
