//! PostgreSQL's own time zone database as a `Zone` (the edge: pg_sys calls).

use std::ffi::CStr;

use pgrx::prelude::*;

use super::{Civil, Zone};
use crate::error::{Error, Result};
use crate::settings;

/// A zone of PostgreSQL's time zone database (what `SET timezone` accepts).
pub struct PgZone(*mut pg_sys::pg_tz);

impl PgZone {
    /// The zone named by automation.timezone.
    pub fn from_setting() -> Result<PgZone> {
        let name = settings::SCHEDULER_TIMEZONE.get().unwrap_or_else(|| settings::DEFAULT_TIMEZONE.to_owned());
        PgZone::named(&name).ok_or_else(|| {
            Error::invalid(format!("automation.timezone \"{}\" is not a known time zone", name.to_string_lossy()))
                .with_detail("Use a name from pg_timezone_names.")
        })
    }

    pub fn named(name: &CStr) -> Option<PgZone> {
        // SAFETY: pg_tzset returns a pointer into PostgreSQL's process-wide
        // time zone cache (never freed), or NULL for an unknown name.
        let tz = unsafe { pg_sys::pg_tzset(name.as_ptr()) };
        (!tz.is_null()).then_some(PgZone(tz))
    }

    /// GMT, always known.
    pub fn gmt() -> PgZone {
        PgZone::named(c"GMT").expect("GMT is always in PostgreSQL's time zone database")
    }
}

impl Zone for PgZone {
    fn offset_at_utc(&self, ts: i64) -> i64 {
        let mut tz: i32 = 0;
        let mut tm = pg_sys::pg_tm::default();
        let mut fsec: pg_sys::fsec_t = 0;
        // SAFETY: out-parameters are locals; the zone pointer is from pg_tzset.
        // PostgreSQL's tz is seconds *west* of UTC.
        let rc = unsafe { pg_sys::timestamp2tm(ts, &mut tz, &mut tm, &mut fsec, std::ptr::null_mut(), self.0) };
        if rc != 0 {
            0
        } else {
            -(tz as i64)
        }
    }

    fn offset_for_local(&self, local: &Civil) -> i64 {
        let mut tm = pg_sys::pg_tm {
            tm_year: local.year as i32,
            tm_mon: local.month as i32, // pg_tm months are 1-based
            tm_mday: local.day as i32,
            tm_hour: local.hour as i32,
            tm_min: local.minute as i32,
            tm_sec: local.second as i32,
            ..Default::default()
        };
        // SAFETY: tm is a local; the zone pointer is from pg_tzset.
        -(unsafe { pg_sys::DetermineTimeZoneOffset(&mut tm, self.0) } as i64)
    }
}
