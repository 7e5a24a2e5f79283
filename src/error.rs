//! The crate's error type: a value with its SQLSTATE (and detail, hint),
//! returned through the crate as `Result<T, Error>` and raised with `ereport`
//! only at the edge (a SQL-callable function, a background worker's
//! transaction). Nothing that fails becomes an empty string or a default id.

use std::fmt;

use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Error {
        Error { code, message: message.into(), detail: None, hint: None }
    }

    /// 22023: a value the caller passed (or a setting) is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, message)
    }

    /// XX000: something the extension itself does failed (an SPI call, a
    /// catalog look-up); `what` says what it was doing.
    pub fn internal(what: impl fmt::Display, cause: impl fmt::Display) -> Error {
        Error::new(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{what}: {cause}"))
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Error {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    /// The five-character SQLSTATE ("22023").
    pub fn sqlstate(&self) -> String {
        sqlstate(self.code as isize)
    }

    /// Raise it as an ERROR (the edge: a SQL-callable function, a worker's
    /// transaction).
    pub fn raise(self) -> ! {
        self.report(PgLogLevel::ERROR);
        unreachable!("an ERROR does not return")
    }

    /// Report it at a level below ERROR (WARNING, LOG), and go on.
    pub fn report(self, level: PgLogLevel) {
        let mut report = ErrorReport::new(self.code, self.message, function_name!());
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        if let Some(hint) = self.hint {
            report = report.set_hint(hint);
        }
        report.report(level);
    }

    /// An ERROR PostgreSQL raised and the caller caught (subtransaction, top
    /// level runner), as a value.
    pub fn caught(e: &CaughtError) -> Error {
        match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => Error {
                code: r.sql_error_code(),
                message: r.message().to_owned(),
                detail: r.detail().map(str::to_owned),
                hint: r.hint().map(str::to_owned),
            },
            CaughtError::RustPanic { ereport, .. } => Error {
                code: ereport.sql_error_code(),
                message: ereport.message().to_owned(),
                detail: ereport.detail().map(str::to_owned),
                hint: ereport.hint().map(str::to_owned),
            },
        }
    }
}

impl fmt::Display for Error {
    /// "message (detail: ...) [SQLSTATE xxxxx]": what run history keeps.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " (detail: {detail})")?;
        }
        write!(f, " [SQLSTATE {}]", self.sqlstate())
    }
}

impl std::error::Error for Error {}

/// An SPI call that failed without PostgreSQL raising (a bad position, a
/// type mismatch): the extension's own mistake.
impl From<pgrx::spi::SpiError> for Error {
    fn from(e: pgrx::spi::SpiError) -> Error {
        Error::internal("SPI", e)
    }
}

/// The five-character SQLSTATE of an error code (MAKE_SQLSTATE packs each
/// character in six bits, least significant first).
pub fn sqlstate(code: isize) -> String {
    (0..5).map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char).collect()
}

/// Saying what was being done when an SPI call (or anything displayable)
/// failed: `spi_call().context("could not load automation.job")?`.
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::internal(what, e))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::internal(what(), e))
    }
}

/// At the edge: the value, or the error raised.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.raise())
    }
}

/// The edge of a background worker: `f` in a transaction of its own, its
/// error raised inside it (so the transaction aborts, and the worker exits
/// with the error in the server log).
pub fn in_worker_transaction<T>(f: impl FnOnce() -> Result<T>) -> T {
    pgrx::bgworkers::BackgroundWorker::transaction(std::panic::AssertUnwindSafe(|| f().or_raise()))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn sqlstates_unpack() {
        use PgSqlErrorCode::*;
        assert_eq!(sqlstate(ERRCODE_QUERY_CANCELED as isize), "57014");
        assert_eq!(sqlstate(ERRCODE_DIVISION_BY_ZERO as isize), "22012");
        assert_eq!(sqlstate(ERRCODE_UNDEFINED_TABLE as isize), "42P01");
        assert_eq!(Error::invalid("x").sqlstate(), "22023");
        assert_eq!(Error::internal("a", "b").sqlstate(), "XX000");
    }

    #[test]
    fn display_carries_detail_and_sqlstate() {
        let e = Error::invalid("bad").with_detail("because").with_hint("do this");
        assert_eq!(e.to_string(), "bad (detail: because) [SQLSTATE 22023]");
        let e: Result<()> = Err::<(), _>("boom").context("could not load");
        assert_eq!(e.unwrap_err().message, "could not load: boom");
    }
}
