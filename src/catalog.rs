//! Small catalog look-ups shared by the functions that take a `regclass`.

use pgrx::prelude::*;

/// Quoted `schema.relation` (safe to splice into SQL) and relkind of `target`;
/// ERROR 42P01 when there is no such relation.
pub fn describe_relation(target: pg_sys::Oid) -> (String, String) {
    let row = Spi::get_two_with_args::<String, String>(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = $1",
        &[target.into()],
    );
    match row {
        Ok((Some(name), Some(kind))) => (name, kind),
        _ => {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                format!("relation with OID {} does not exist", target.to_u32())
            );
        }
    }
}

/// Drop the trigger `name` of `target` (whose quoted name is `table`) if it
/// is there; returns whether it was.
pub fn drop_trigger_if_exists(target: pg_sys::Oid, table: &str, name: &str) -> bool {
    let present = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2)",
        &[target.into(), name.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if present {
        Spi::run(&format!("DROP TRIGGER {} ON {table}", pgrx::spi::quote_identifier(name)))
            .unwrap_or_else(|e| error!("could not drop trigger {name} on {table}: {e}"));
    }
    present
}
