//! Small catalog look-ups shared by the functions that take a `regclass`,
//! and whether this database's extension is one our workers can serve.

use pgrx::prelude::*;

use crate::error::{Context, Error, Result};

/// Quoted `schema.relation` (safe to splice into SQL) and relkind of `target`;
/// 42P01 when there is no such relation.
pub fn describe_relation(target: pg_sys::Oid) -> Result<(String, String)> {
    let row = Spi::get_two_with_args::<String, String>(
        "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.oid = $1",
        &[target.into()],
    );
    match row {
        Ok((Some(name), Some(kind))) => Ok((name, kind)),
        Ok(_) | Err(pgrx::spi::SpiError::InvalidPosition) => Err(Error::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
            format!("relation with OID {} does not exist", target.to_u32()),
        )),
        Err(e) => Err(Error::internal(format!("could not look up relation {}", target.to_u32()), e)),
    }
}

/// The definition of trigger `name` on `target` (pg_get_triggerdef), if it exists.
pub fn trigger_definition(target: pg_sys::Oid, name: &str) -> Result<Option<String>> {
    Spi::get_one_with_args::<String>(
        "SELECT pg_catalog.pg_get_triggerdef(oid) FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2",
        &[target.into(), name.into()],
    )
    .or_else(|e| match e {
        pgrx::spi::SpiError::InvalidPosition => Ok(None),
        e => Err(e),
    })
    .with_context(|| format!("could not read the definition of trigger {name}"))
}

/// Drop the trigger `name` of `target` (whose quoted name is `table`) if it
/// is there; returns whether it was.
pub fn drop_trigger_if_exists(target: pg_sys::Oid, table: &str, name: &str) -> Result<bool> {
    let present = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = $2)",
        &[target.into(), name.into()],
    )
    .with_context(|| format!("could not look for trigger {name} on {table}"))?
    .unwrap_or(false);
    if present {
        Spi::run(&format!("DROP TRIGGER {} ON {table}", pgrx::spi::quote_identifier(name)))
            .with_context(|| format!("could not drop trigger {name} on {table}"))?;
    }
    Ok(present)
}

/// The owner of relation `schema.name` (42P01 when there is none).
pub fn relation_owner(schema: &str, name: &str) -> Result<pg_sys::Oid> {
    let (schema_c, name_c) = (
        std::ffi::CString::new(schema).expect("no NUL in a schema name"),
        std::ffi::CString::new(name).expect("no NUL in a relation name"),
    );
    // SAFETY: catalog look-ups by name inside the caller's transaction; the
    // pg_class row is read as its row struct and released at once.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(schema_c.as_ptr(), true);
        let relid = if nsp == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(name_c.as_ptr(), nsp)
        };
        let tuple = if relid == pg_sys::InvalidOid {
            std::ptr::null_mut()
        } else {
            pg_sys::SearchSysCache1(pg_sys::SysCacheIdentifier::RELOID as i32, pg_sys::Datum::from(relid))
        };
        if tuple.is_null() {
            return Err(Error::new(PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE, format!("{schema}.{name} does not exist")));
        }
        let owner = (*(pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_class)).relowner;
        pg_sys::ReleaseSysCache(tuple);
        Ok(owner)
    }
}

/// (For our background workers.) Is the extension installed here, at a
/// version whose tables this library reads (0.6.0's, with `next_attempt` and the other per-job
/// options)? Older versions had other columns or none: such a database
/// waits, unscheduled, for its ALTER EXTENSION automation_ext UPDATE (whose
/// script wakes the launcher).
pub fn extension_ready() -> bool {
    // SAFETY: syscache lookups inside the caller's transaction; the
    // attribute tuple is read as pg_attribute's row struct and released.
    unsafe {
        if pg_sys::get_extension_oid(c"automation_ext".as_ptr(), true) == pg_sys::InvalidOid {
            return false;
        }
        let nsp = pg_sys::get_namespace_oid(c"automation".as_ptr(), true);
        if nsp == pg_sys::InvalidOid
            || pg_sys::get_relname_relid(c"job_run_details".as_ptr(), nsp) == pg_sys::InvalidOid
        {
            return false;
        }
        let job = pg_sys::get_relname_relid(c"job".as_ptr(), nsp);
        // 0.6.0's job columns and 0.8.0's engine (this library uses them:
        // an older schema would make every load, recording or dispatch
        // fail, and the scheduler exit, again and again). 0.8.0 is marked
        // by workflow_runs.owner (executions owned by oid).
        let workflows = pg_sys::get_namespace_oid(c"automation_workflows".as_ptr(), true);
        let runs = if workflows == pg_sys::InvalidOid {
            pg_sys::InvalidOid
        } else {
            pg_sys::get_relname_relid(c"workflow_runs".as_ptr(), workflows)
        };
        let owned = runs != pg_sys::InvalidOid
            && pg_sys::get_attnum(runs, c"owner".as_ptr()) != pg_sys::InvalidAttrNumber as i16;
        let ready = job != pg_sys::InvalidOid
            && pg_sys::get_attnum(job, c"next_attempt".as_ptr()) != pg_sys::InvalidAttrNumber as i16
            && owned;
        if !ready {
            debug1!("automation_ext scheduler: this database has an older version of the extension; its jobs wait for ALTER EXTENSION automation_ext UPDATE");
        }
        ready
    }
}
