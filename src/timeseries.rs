//! Time series without TimescaleDB: `automation.time_bucket`, the settings of
//! pipeline_metrics' partitions, and the timestamp check that lets
//! `flush_metrics_staging` reject a bad row instead of failing the batch.
//! The partitioning, rollup and staging are SQL (sql/timeseries.sql).

use pgrx::datum::{Interval, Timestamp, TimestampWithTimeZone};
use pgrx::prelude::*;

use crate::civil::{days_in_month, Civil, USECS_PER_DAY};
use crate::settings;

/// Bucket arithmetic on microseconds since 2000-01-01 00:00 UTC. Pure.
pub mod bucket {
    use super::*;

    /// TimescaleDB's default origin: Monday 2000-01-03 00:00 UTC, so that
    /// weekly buckets start on Mondays.
    #[cfg_attr(not(test), allow(dead_code))]
    pub const DEFAULT_ORIGIN: i64 = 2 * USECS_PER_DAY;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Width {
        /// days and time, as a fixed number of microseconds (a day is 24 h)
        Fixed(i64),
        Months(i32),
    }

    /// PostgreSQL's timestamp range: [MIN_TIMESTAMP, END_TIMESTAMP).
    pub const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
    pub const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
    /// Years of that range (4714 BC is year -4713 proleptic).
    const MIN_YEAR: i64 = -4713;
    const MAX_YEAR: i64 = 294_276;

    /// TimescaleDB's origin for widths in months: 2000-01-01 00:00 UTC, so
    /// that months, quarters and years start on the 1st (of January).
    pub const MONTH_ORIGIN: i64 = 0;

    /// Why an interval is not a bucket width.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum WidthError {
        TooLarge,
        NotPositive,
        MixesMonths,
    }

    impl std::fmt::Display for WidthError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                WidthError::TooLarge => "the bucket width is too large",
                WidthError::NotPositive => "the bucket width must be positive",
                WidthError::MixesMonths => "the bucket width mixes months with days or time; use one or the other",
            })
        }
    }

    pub fn width(months: i32, days: i32, micros: i64) -> Result<Width, WidthError> {
        let fixed = days as i128 * USECS_PER_DAY as i128 + micros as i128;
        match (months, fixed) {
            (0, w) if w > i64::MAX as i128 => Err(WidthError::TooLarge),
            (0, w) if w > 0 => Ok(Width::Fixed(w as i64)),
            (m, 0) if m > 0 => Ok(Width::Months(m)),
            (0, _) | (_, 0) => Err(WidthError::NotPositive),
            _ => Err(WidthError::MixesMonths),
        }
    }

    /// The default origin of a width: Monday 2000-01-03 for days and time,
    /// 2000-01-01 for months (as TimescaleDB).
    pub fn default_origin(width: Width) -> i64 {
        match width {
            Width::Fixed(_) => DEFAULT_ORIGIN,
            Width::Months(_) => MONTH_ORIGIN,
        }
    }

    /// The start of the bucket of `ts` (both finite timestamps); `None` when
    /// that start is outside PostgreSQL's timestamp range.
    pub fn start(width: Width, ts: i64, origin: i64) -> Option<i64> {
        let start = match width {
            Width::Fixed(w) => {
                let (ts, origin, w) = (ts as i128, origin as i128, w as i128);
                origin + (ts - origin).div_euclid(w) * w
            }
            Width::Months(m) => {
                let o = Civil::from_timestamp(origin, 0);
                let t = Civil::from_timestamp(ts, 0);
                let mut months = (t.year * 12 + t.month as i64 - 1) - (o.year * 12 + o.month as i64 - 1);
                // not yet at the origin's day and time in ts's month: still the previous month
                if add_months(o, months)?.to_timestamp(0) > ts {
                    months -= 1;
                }
                add_months(o, months.div_euclid(m as i64) * m as i64)?.to_timestamp(0) as i128
            }
        };
        (MIN_TIMESTAMP as i128..END_TIMESTAMP as i128).contains(&start).then_some(start as i64)
    }

    /// `None` when the result is outside the years PostgreSQL can represent.
    fn add_months(c: Civil, months: i64) -> Option<Civil> {
        let total = c.year * 12 + c.month as i64 - 1 + months;
        let (year, month) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        (MIN_YEAR..=MAX_YEAR + 1).contains(&year).then(|| Civil {
            year,
            month,
            day: c.day.min(days_in_month(year, month)),
            ..c
        })
    }

    #[cfg(test)]
    mod unit {
        use super::*;

        fn ts(y: i64, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
            Civil { year: y, month: mo, day: d, hour: h, minute: mi, second: 0, micro: 0 }.to_timestamp(0)
        }
        const HOUR: i64 = 3_600_000_000;

        fn st(w: Width, t: i64, o: i64) -> i64 {
            start(w, t, o).expect("in range")
        }

        #[test]
        fn fixed_widths() {
            let w = width(0, 0, HOUR).unwrap();
            assert_eq!(st(w, ts(2026, 11, 25, 13, 59), DEFAULT_ORIGIN), ts(2026, 11, 25, 13, 0));
            assert_eq!(st(w, ts(2026, 11, 25, 13, 0), DEFAULT_ORIGIN), ts(2026, 11, 25, 13, 0));
            let w = width(0, 0, 15 * 60_000_000).unwrap();
            assert_eq!(st(w, ts(2026, 11, 25, 13, 44), DEFAULT_ORIGIN), ts(2026, 11, 25, 13, 30));
            let day = width(0, 1, 0).unwrap();
            assert_eq!(st(day, ts(2026, 11, 25, 23, 59), DEFAULT_ORIGIN), ts(2026, 11, 25, 0, 0));
            // weeks start on Monday (2026-11-23)
            let week = width(0, 7, 0).unwrap();
            assert_eq!(st(week, ts(2026, 11, 25, 12, 0), DEFAULT_ORIGIN), ts(2026, 11, 23, 0, 0));
            // before the origin too
            assert_eq!(st(day, ts(1999, 12, 31, 6, 0), DEFAULT_ORIGIN), ts(1999, 12, 31, 0, 0));
            // another origin
            assert_eq!(st(day, ts(2026, 11, 25, 5, 0), ts(2000, 1, 1, 6, 0)), ts(2026, 11, 24, 6, 0));
        }

        #[test]
        fn month_widths() {
            let month = width(1, 0, 0).unwrap();
            assert_eq!(
                st(month, ts(2026, 11, 25, 13, 0), DEFAULT_ORIGIN),
                ts(2026, 11, 3, 0, 0),
                "origin day is the 3rd"
            );
            assert_eq!(st(month, ts(2026, 11, 2, 13, 0), DEFAULT_ORIGIN), ts(2026, 10, 3, 0, 0));
            let first = ts(2000, 1, 1, 0, 0);
            assert_eq!(st(month, ts(2026, 11, 25, 13, 0), first), ts(2026, 11, 1, 0, 0));
            let quarter = width(3, 0, 0).unwrap();
            assert_eq!(st(quarter, ts(2026, 11, 25, 13, 0), first), ts(2026, 10, 1, 0, 0));
            assert_eq!(st(width(12, 0, 0).unwrap(), ts(2026, 11, 25, 13, 0), first), ts(2026, 1, 1, 0, 0));
            assert_eq!(st(quarter, ts(1999, 11, 5, 0, 0), first), ts(1999, 10, 1, 0, 0));
        }

        #[test]
        fn bad_widths() {
            assert_eq!(width(0, 0, 0), Err(WidthError::NotPositive));
            assert_eq!(width(0, 0, -5), Err(WidthError::NotPositive));
            assert_eq!(width(1, 1, 0), Err(WidthError::MixesMonths));
            assert!(width(1, 1, 0).unwrap_err().to_string().contains("mixes months"));
            assert_eq!(width(-1, 0, 0), Err(WidthError::NotPositive));
            // i32::MAX days does not fit in microseconds: an error, not an overflow
            assert_eq!(width(0, i32::MAX, i64::MAX), Err(WidthError::TooLarge));
        }

        #[test]
        fn calendar_widths_start_on_the_first_by_default() {
            let month = width(1, 0, 0).unwrap();
            let o = default_origin(month);
            // the reproductions of issue 15
            assert_eq!(st(month, ts(2026, 11, 2, 12, 0), o), ts(2026, 11, 1, 0, 0));
            assert_eq!(st(width(12, 0, 0).unwrap(), ts(2026, 1, 2, 0, 0), o), ts(2026, 1, 1, 0, 0));
            assert_eq!(default_origin(width(0, 1, 0).unwrap()), DEFAULT_ORIGIN);
        }

        /// Month, quarter and year widths against calendar arithmetic
        /// (date_trunc's), every 37 hours over five centuries.
        #[test]
        fn calendar_widths_agree_with_the_calendar_over_centuries() {
            let (month, quarter, year) = (width(1, 0, 0).unwrap(), width(3, 0, 0).unwrap(), width(12, 0, 0).unwrap());
            let mut t = ts(1800, 1, 1, 0, 0);
            let end = ts(2300, 1, 1, 0, 0);
            while t < end {
                let c = Civil::from_timestamp(t, 0);
                let first = |m: u32| {
                    Civil { year: c.year, month: m, day: 1, hour: 0, minute: 0, second: 0, micro: 0 }.to_timestamp(0)
                };
                assert_eq!(st(month, t, MONTH_ORIGIN), first(c.month), "month of {c:?}");
                assert_eq!(st(quarter, t, MONTH_ORIGIN), first((c.month - 1) / 3 * 3 + 1), "quarter of {c:?}");
                assert_eq!(st(year, t, MONTH_ORIGIN), first(1), "year of {c:?}");
                t += 37 * HOUR;
            }
        }

        /// Fixed widths with odd origins against a brute-force walk from the origin.
        #[test]
        fn fixed_widths_agree_with_brute_force() {
            let origins = [0, 7 * HOUR + 13_000_001, -(3 * 86_400_000_000 + 17), ts(1987, 6, 5, 4, 3)];
            let widths = [HOUR, 7 * 60_000_000 + 3, 86_400_000_000 * 3 + 5, 999_999];
            let times =
                [ts(2026, 11, 25, 13, 59), ts(1970, 1, 1, 0, 0), ts(2000, 1, 1, 0, 0) - 1, ts(1999, 2, 3, 4, 5)];
            for &o in &origins {
                for &w in &widths {
                    for &t in &times {
                        let mut b = o;
                        while b > t {
                            b -= w;
                        }
                        while b + w <= t {
                            b += w;
                        }
                        assert_eq!(st(Width::Fixed(w), t, o), b, "width {w} origin {o} ts {t}");
                    }
                }
            }
        }

        #[test]
        fn out_of_range_is_none_not_garbage() {
            let month = width(1, 0, 0).unwrap();
            // the very first representable instant, bucketed back before it
            assert_eq!(start(month, MIN_TIMESTAMP, ts(2000, 1, 15, 0, 0)), None);
            assert_eq!(start(width(i32::MAX, 0, 0).unwrap(), ts(1999, 1, 1, 0, 0), MONTH_ORIGIN), None);
            assert_eq!(start(Width::Fixed(i64::MAX), ts(1999, 1, 1, 0, 0), 0), None);
            assert_eq!(
                start(Width::Fixed(HOUR), END_TIMESTAMP - 1, 0),
                Some(END_TIMESTAMP - 1 - (END_TIMESTAMP - 1).rem_euclid(HOUR))
            );
        }
    }
}

/// ISO 8601 timestamps, checked without raising: `YYYY-MM-DD`, then
/// optionally `T` or a space and `HH:MM[:SS[.ffffff]]`, then optionally `Z`
/// or `±HH[:MM]`. A time without an offset is UTC. Pure.
pub mod iso {
    use super::*;

    pub fn parse(s: &str) -> Option<i64> {
        let b = s.trim().as_bytes();
        let num = |from: usize, len: usize| -> Option<u32> {
            let part = b.get(from..from + len)?;
            part.iter().all(u8::is_ascii_digit).then(|| part.iter().fold(0u32, |n, d| n * 10 + (d - b'0') as u32))
        };
        let year = num(0, 4)? as i64;
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return None;
        }
        let (month, day) = (num(5, 2)?, num(8, 2)?);
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let mut c = Civil { year, month, day, hour: 0, minute: 0, second: 0, micro: 0 };
        let mut i = 10;
        if i < b.len() && (b[i] == b'T' || b[i] == b' ') && b.len() > i + 1 && b[i + 1].is_ascii_digit() {
            c.hour = num(i + 1, 2)?;
            if b.get(i + 3) != Some(&b':') {
                return None;
            }
            c.minute = num(i + 4, 2)?;
            i += 6;
            if b.get(i) == Some(&b':') {
                c.second = num(i + 1, 2)?;
                i += 3;
                if b.get(i) == Some(&b'.') {
                    let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
                    if digits == 0 {
                        return None;
                    }
                    let frac = &b[i + 1..i + 1 + digits.min(6)];
                    let mut micro = frac.iter().fold(0u32, |n, d| n * 10 + (d - b'0') as u32);
                    for _ in digits.min(6)..6 {
                        micro *= 10;
                    }
                    c.micro = micro;
                    i += 1 + digits;
                }
            }
            if c.hour > 23 || c.minute > 59 || c.second > 59 {
                return None;
            }
        }
        let offset = match b.get(i) {
            None => 0,
            Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) => {
                let h = num(i + 1, 2)? as i64;
                let m = match b.len() - (i + 3) {
                    0 => 0,
                    2 => num(i + 3, 2)? as i64,
                    3 if b[i + 3] == b':' => num(i + 4, 2)? as i64,
                    _ => return None,
                };
                if h > 15 || m > 59 {
                    return None;
                }
                let secs = h * 3600 + m * 60;
                if sign == b'-' {
                    -secs
                } else {
                    secs
                }
            }
            _ => return None,
        };
        Some(c.to_timestamp(offset))
    }

    #[cfg(test)]
    mod unit {
        use super::parse;
        use crate::civil::Civil;

        fn ts(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, micro: u32) -> i64 {
            Civil { year: y, month: mo, day: d, hour: h, minute: mi, second: s, micro }.to_timestamp(0)
        }

        #[test]
        fn accepts_iso_8601() {
            assert_eq!(parse("2026-11-25"), Some(ts(2026, 11, 25, 0, 0, 0, 0)));
            assert_eq!(parse("2026-11-25T13:45"), Some(ts(2026, 11, 25, 13, 45, 0, 0)));
            assert_eq!(parse("2026-11-25 13:45:07"), Some(ts(2026, 11, 25, 13, 45, 7, 0)));
            assert_eq!(parse("2026-11-25T13:45:07.5Z"), Some(ts(2026, 11, 25, 13, 45, 7, 500_000)));
            assert_eq!(parse("2026-11-25T13:45:07.123456789Z"), Some(ts(2026, 11, 25, 13, 45, 7, 123_456)));
            assert_eq!(parse("2026-11-25T13:45:07+02:00"), Some(ts(2026, 11, 25, 11, 45, 7, 0)));
            assert_eq!(parse("2026-11-25T13:45:07-0530"), Some(ts(2026, 11, 25, 19, 15, 7, 0)));
            assert_eq!(parse("2026-11-25T13:45:07+01"), Some(ts(2026, 11, 25, 12, 45, 7, 0)));
            assert_eq!(parse(" 2024-02-29 "), Some(ts(2024, 2, 29, 0, 0, 0, 0)));
        }

        #[test]
        fn refuses_what_is_not_a_time() {
            for bad in [
                "",
                "yesterday",
                "2026-13-01",
                "2026-02-29",
                "2026-11-31",
                "2026-11-25T24:00",
                "2026-11-25T12:60",
                "2026-11-25T12",
                "2026-11-25T12:00:00.",
                "2026-11-25X",
                "2026-11-25T12:00+2",
                "26-11-25",
                "2026/11/25",
                "2026-11-25T12:00Zjunk",
                "2026-11-25T12:00+99:00",
            ] {
                assert_eq!(parse(bad), None, "{bad:?}");
            }
        }
    }
}

#[pg_schema]
mod automation {
    use super::*;

    fn width_or_raise(w: &Interval) -> bucket::Width {
        match bucket::width(w.months(), w.days(), w.micros()) {
            Ok(w) => w,
            Err(problem) => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                    format!("invalid bucket width: {problem}"),
                    "Use e.g. '15 minutes', '1 hour', '1 day', '7 days' or '1 month'."
                );
            }
        }
    }

    /// The bucket of finite `ts` as microseconds, with the errors
    /// date_bin gives: an infinite origin, or a start outside the range, is
    /// 22008 (datetime_field_overflow).
    fn bucket_or_raise(width: bucket::Width, ts: i64, origin: Option<i64>) -> i64 {
        let origin = origin.unwrap_or_else(|| bucket::default_origin(width));
        if origin == i64::MAX || origin == i64::MIN {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                "origin out of range",
                "The origin of time_bucket must be a finite timestamp."
            );
        }
        match bucket::start(width, ts, origin) {
            Some(start) => start,
            None => {
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                    "timestamp out of range",
                    "The start of that bucket is outside the range of timestamps."
                );
            }
        }
    }

    /// `automation.time_bucket(bucket_width interval, ts timestamptz, origin
    /// timestamptz DEFAULT NULL) → timestamptz` (TimescaleDB's signature).
    /// Buckets of days and time are fixed lengths counted in UTC from origin
    /// (Monday 2000-01-03 by default); month buckets follow the calendar in
    /// UTC from origin (2000-01-01 by default, so they start on the 1st).
    /// An infinite ts is returned as it is, as date_bin does.
    #[pg_extern(sql = false)]
    fn time_bucket(
        bucket_width: Option<Interval>,
        ts: Option<TimestampWithTimeZone>,
        origin: Option<TimestampWithTimeZone>,
    ) -> Option<TimestampWithTimeZone> {
        let w = width_or_raise(&bucket_width?);
        let t: i64 = ts?.into();
        if t == i64::MAX || t == i64::MIN {
            return ts;
        }
        let start = bucket_or_raise(w, t, origin.map(Into::into));
        TimestampWithTimeZone::try_from(start).ok()
    }

    /// The same for `timestamp` (no time zone).
    #[pg_extern(sql = false)]
    fn time_bucket_ts(
        bucket_width: Option<Interval>,
        ts: Option<Timestamp>,
        origin: Option<Timestamp>,
    ) -> Option<Timestamp> {
        let w = width_or_raise(&bucket_width?);
        let t: i64 = ts?.into();
        if t == i64::MAX || t == i64::MIN {
            return ts;
        }
        let start = bucket_or_raise(w, t, origin.map(Into::into));
        Timestamp::try_from(start).ok()
    }

    /// `automation.try_timestamptz(text) → timestamptz`: an ISO 8601 time
    /// (UTC when it has no offset), or NULL when it is not one.
    #[pg_extern(sql = false)]
    fn try_timestamptz(value: &str) -> Option<TimestampWithTimeZone> {
        iso::parse(value).and_then(|t| TimestampWithTimeZone::try_from(t).ok())
    }

    /// `automation.metrics_settings()`: the partitioning and retention
    /// settings, as text for SQL to cast.
    #[pg_extern(sql = false)]
    fn metrics_settings() -> TableIterator<
        'static,
        (name!(partition_interval, String), name!(retention, String), name!(partitions_ahead, i32)),
    > {
        let text = |s: &pgrx::guc::GucSetting<Option<std::ffi::CString>>| {
            s.get().map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
        };
        TableIterator::once((
            text(&settings::METRICS_PARTITION_INTERVAL),
            text(&settings::METRICS_RETENTION),
            settings::METRICS_PARTITIONS_AHEAD.get(),
        ))
    }
}

extension_sql_file!("../sql/timeseries.sql", name = "timeseries", requires = ["automation_schema", "scheduler"]);
