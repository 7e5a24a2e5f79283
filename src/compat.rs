//! What differs between PostgreSQL majors in the C API this extension calls,
//! behind one function each, so that the rest of the code reads the same on
//! 13 through 18 (the versions pgrx 0.18 builds for; 15, 16 and 18 are built
//! and tested, see README "PostgreSQL versions").
//!
//! | call                         | 13–15                           | 16–17                                | 18                         |
//! |------------------------------|---------------------------------|--------------------------------------|----------------------------|
//! | owner of a database          | `pg_database_ownercheck`        | `object_ownercheck(pg_database, …)`  | same as 16                 |
//! | i-th backend of the snapshot | `pgstat_fetch_stat_local_beentry` | `pgstat_get_local_beentry_by_index` | same as 16                 |
//! | install a signal handler     | `pqsignal`                      | `pqsignal`                           | `pqsignal_be` (returns nothing) |
//! | run a portal                 | `PortalRun(…, run_once, …)`     | same                                 | no `run_once` argument     |
//! | a tuple descriptor's column  | `attrs[i]`                      | same                                 | `TupleDescAttr()` (the array moved behind `compact_attrs`) |

use pgrx::pg_sys;
use std::ffi::c_int;

/// Whether `role` owns (or is a member of the owner of) database `dboid`.
///
/// # Safety
/// Inside a transaction (a catalog look-up); `dboid` is a valid database OID.
pub unsafe fn database_owned_by(dboid: pg_sys::Oid, role: pg_sys::Oid) -> bool {
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pg_database_ownercheck(dboid, role)
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::object_ownercheck(pg_sys::DatabaseRelationId, dboid, role)
    }
}

/// The `i`-th entry (1-based) of this backend's snapshot of the activity
/// array, or NULL.
///
/// # Safety
/// In a backend attached to shared memory; `i` within
/// `1..=pgstat_fetch_stat_numbackends()` of the same snapshot.
pub unsafe fn local_backend(i: c_int) -> *mut pg_sys::LocalPgBackendStatus {
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15"))]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pgstat_fetch_stat_local_beentry(i)
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15")))]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pgstat_get_local_beentry_by_index(i)
    }
}

/// Install `handler` for `signo` (PostgreSQL's own wrapper around
/// sigaction: SA_RESTART, all signals blocked while it runs).
///
/// # Safety
/// `handler` is async-signal-safe (PostgreSQL's handlers only set flags and
/// the process latch).
pub unsafe fn set_signal_handler(signo: c_int, handler: pg_sys::pqsigfunc) {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pqsignal(signo, handler);
    }
    #[cfg(feature = "pg18")]
    // SAFETY: as the caller promises.
    unsafe {
        pg_sys::pqsignal_be(signo, handler);
    }
}

/// Run `portal` to completion at top level, sending its rows to `dest`.
///
/// # Safety
/// `portal` is started; `dest` and `qc` are valid; inside a transaction.
pub unsafe fn portal_run_to_end(
    portal: pg_sys::Portal,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) -> bool {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: as the caller promises; run_once = true (one PortalRun per portal).
    unsafe {
        pg_sys::PortalRun(portal, i64::MAX as _, true, true, dest, dest, qc)
    }
    #[cfg(feature = "pg18")]
    // SAFETY: as the caller promises (18 dropped the run_once argument).
    unsafe {
        pg_sys::PortalRun(portal, i64::MAX as _, true, dest, dest, qc)
    }
}

/// The type of column `i` (0-based) of `desc`.
///
/// # Safety
/// `desc` is a valid tuple descriptor with more than `i` columns.
pub unsafe fn column_type(desc: pg_sys::TupleDesc, i: usize) -> pg_sys::Oid {
    #[cfg(not(feature = "pg18"))]
    // SAFETY: as the caller promises: attrs is a flexible array of natts entries.
    unsafe {
        (*(*desc).attrs.as_ptr().add(i)).atttypid
    }
    #[cfg(feature = "pg18")]
    // SAFETY: as the caller promises; TupleDescAttr finds the array after compact_attrs.
    unsafe {
        (*pg_sys::TupleDescAttr(desc, i as c_int)).atttypid
    }
}
