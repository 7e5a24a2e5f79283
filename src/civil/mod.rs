//! Civil (wall-clock) time, proleptic Gregorian, and the time-zone trait the
//! scheduler's cron arithmetic and `time_bucket`'s calendar widths share.
//! Pure Rust: times are microseconds since 2000-01-01 00:00 UTC
//! (PostgreSQL's `TimestampTz`). `pg_zone` adapts PostgreSQL's own time zone
//! database to the trait (the only part that calls into PostgreSQL).

pub mod pg_zone;

pub const USECS_PER_SEC: i64 = 1_000_000;
pub const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
pub const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;
/// Days from 1970-01-01 to 2000-01-01 (PostgreSQL's epoch).
pub const PG_EPOCH_DAYS: i64 = 10_957;

/// Days in a month (1-based), proleptic Gregorian.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// A local (wall-clock) time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micro: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Civil {
    /// The civil time `ts` (µs since the PostgreSQL epoch) shows at UTC+offset.
    pub fn from_timestamp(ts: i64, offset_secs: i64) -> Civil {
        let local = ts + offset_secs * USECS_PER_SEC;
        let days = local.div_euclid(USECS_PER_DAY);
        let rem = local.rem_euclid(USECS_PER_DAY);
        let (year, month, day) = civil_from_days(days + PG_EPOCH_DAYS);
        Civil {
            year,
            month,
            day,
            hour: (rem / 3_600_000_000) as u32,
            minute: (rem / USECS_PER_MINUTE % 60) as u32,
            second: (rem / USECS_PER_SEC % 60) as u32,
            micro: (rem % USECS_PER_SEC) as u32,
        }
    }

    /// Microseconds since the PostgreSQL epoch of this civil time read at UTC+offset.
    pub fn to_timestamp(&self, offset_secs: i64) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day) - PG_EPOCH_DAYS;
        days * USECS_PER_DAY
            + self.hour as i64 * 3_600_000_000
            + self.minute as i64 * USECS_PER_MINUTE
            + self.second as i64 * USECS_PER_SEC
            + self.micro as i64
            - offset_secs * USECS_PER_SEC
    }

    /// `ts` (µs since the PostgreSQL epoch) in ISO 8601, UTC, to the
    /// microsecond: what timestamptz input reads back exactly.
    pub fn iso_utc(ts: i64) -> String {
        let c = Civil::from_timestamp(ts, 0);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            c.year, c.month, c.day, c.hour, c.minute, c.second, c.micro
        )
    }

    /// 0 = Sunday.
    pub fn weekday(&self) -> u32 {
        // 1970-01-01 was a Thursday (4)
        (days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) as u32
    }
}

/// A time zone: UTC offset (seconds east) in effect at a UTC instant, and the
/// offset to read a wall-clock time with.
pub trait Zone {
    fn offset_at_utc(&self, ts: i64) -> i64;
    /// For a wall-clock time that occurs twice (DST ends) either offset may be
    /// returned; for one that does not occur (DST starts), the offset before
    /// the change.
    fn offset_for_local(&self, local: &Civil) -> i64;
}

/// A zone with one fixed offset (UTC/GMT is `FixedOffset(0)`).
#[cfg_attr(not(test), allow(dead_code))]
pub struct FixedOffset(pub i64);

impl Zone for FixedOffset {
    fn offset_at_utc(&self, _ts: i64) -> i64 {
        self.0
    }
    fn offset_for_local(&self, _local: &Civil) -> i64 {
        self.0
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn ts(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Civil { year: y, month: mo, day: d, hour: h, minute: mi, second: s, micro: 0 }.to_timestamp(0)
    }

    #[test]
    fn civil_round_trips_and_knows_the_epoch() {
        assert_eq!(ts(2000, 1, 1, 0, 0, 0), 0);
        for t in [0, -1, 1, 86_399_999_999, 123_456_789_012_345, -987_654_321_000] {
            assert_eq!(Civil::from_timestamp(t, 0).to_timestamp(0), t);
            assert_eq!(Civil::from_timestamp(t, 3600).to_timestamp(3600), t);
        }
        let c = Civil::from_timestamp(ts(2024, 2, 29, 23, 59, 59), 0);
        assert_eq!((c.year, c.month, c.day, c.hour, c.minute, c.second), (2024, 2, 29, 23, 59, 59));
        assert_eq!(c.weekday(), 4); // a Thursday
    }

    #[test]
    fn iso_utc_is_exact() {
        assert_eq!(Civil::iso_utc(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(Civil::iso_utc(ts(2026, 11, 26, 3, 0, 0) + 42), "2026-11-26T03:00:00.000042Z");
        assert_eq!(Civil::iso_utc(-1), "1999-12-31T23:59:59.999999Z");
    }
}
