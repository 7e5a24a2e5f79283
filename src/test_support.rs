//! Helpers shared by the in-backend (#[pg_test]) tests.

use pgrx::prelude::*;

/// The single value `sql` returns; panics (failing the test) on an error or NULL.
pub fn one<T: IntoDatum + FromDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql).expect("query failed").expect("NULL result")
}
