//! Schedules, as pg_cron accepts them, and when they fire next. Pure Rust:
//! times are microseconds since 2000-01-01 00:00 UTC (PostgreSQL's
//! `TimestampTz`), and the time zone is a trait the caller provides (the
//! scheduler passes PostgreSQL's own time zone database; tests pass fixed
//! offsets and a made-up DST zone).
//!
//! Accepted, as pg_cron 1.6:
//! - 5 fields `minute hour day-of-month month day-of-week` with `*`, numbers,
//!   ranges `a-b`, steps `*/n`, `a-b/n`, `a/n`, lists `a,b-c`, month names
//!   `jan`…`dec`, weekday names `sun`…`sat` (0 and 7 are Sunday), and `$` in
//!   day-of-month for the last day of the month;
//! - `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight` `@hourly`
//!   and `@reboot` (once, when the scheduler starts; `@restart` is the same,
//!   as in pg_cron);
//! - `N seconds` (or `N second`) for N in 1–59: every N seconds from when
//!   the schedule was set (0.11.0; before, aligned to multiples of N); and,
//!   beyond pg_cron (0.11.0), `N minutes` (or `N minute`) for N in 1–59,
//!   the same way (the default jobs use it, so that the minutely jobs of a
//!   hundred databases do not all fire at second 0).
//!
//! Day matching follows Vixie cron (and so pg_cron): when both day-of-month
//! and day-of-week are restricted (neither starts with `*`), a day matches if
//! either does; otherwise both must.

use std::fmt;

use crate::civil::{civil_from_days, days_from_civil, days_in_month, Civil, Zone, USECS_PER_SEC};

/// How far ahead to look for the next fire before declaring that a schedule
/// never fires (covers Feb 29, which can be 8 years away).
const HORIZON_DAYS: i64 = 366 * 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(CronSpec),
    /// Every N seconds (`'N seconds'`, or `'N minutes'` as N × 60), counted
    /// from a fire (a job's grid starts when its
    /// schedule is set: `next_run_at`), as pg_cron 1.5 counts them — so the
    /// `'10 seconds'` jobs of a hundred databases do not all fall in one
    /// instant; the scheduler keeps each job on its own grid (`plan::next_fire`).
    Seconds(u32),
    /// Once, when the scheduler starts.
    Reboot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    minutes: u64, // bits 0..=59
    hours: u32,   // bits 0..=23
    days: u32,    // bits 1..=31
    last_day: bool,
    months: u16,  // bits 1..=12
    weekdays: u8, // bits 0..=6, Sunday = 0
    days_star: bool,
    weekdays_star: bool,
}

/// Why a schedule was refused; `Display` names the schedule and the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub schedule: String,
    pub field: Option<&'static str>,
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field {
            Some(field) => write!(f, "invalid schedule \"{}\": {} field: {}", self.schedule, field, self.problem),
            None => write!(f, "invalid schedule \"{}\": {}", self.schedule, self.problem),
        }
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[] };
const DAY: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[] };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
// 7 is accepted for Sunday and folded onto 0.
const WEEKDAY: Field =
    Field { name: "day-of-week", min: 0, max: 7, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

/// The longest schedule text accepted (pg_cron's parser has had overflows on
/// long input; nothing legitimate is this long).
pub const MAX_SCHEDULE_LEN: usize = 1000;

pub fn parse(text: &str) -> Result<Schedule, ParseError> {
    let err = |field: Option<&'static str>, problem: String| ParseError { schedule: text.to_string(), field, problem };
    if text.len() > MAX_SCHEDULE_LEN {
        return Err(err(None, format!("longer than {MAX_SCHEDULE_LEN} bytes")));
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(err(None, "empty".into()));
    }
    if let Some((number, unit)) = parse_interval(trimmed) {
        return match (number, unit) {
            (Ok(n), Unit::Seconds) if (1..=59).contains(&n) => Ok(Schedule::Seconds(n)),
            (Ok(n), Unit::Minutes) if (1..=59).contains(&n) => Ok(Schedule::Seconds(n * 60)),
            (Ok(n), Unit::Seconds) => Err(err(
                None,
                format!("{n} seconds: an interval schedule takes 1 to 59 seconds (or 'N minutes', 1 to 59); use cron fields for hours and longer"),
            )),
            (Ok(n), Unit::Minutes) => Err(err(
                None,
                format!("{n} minutes: an interval schedule takes 1 to 59 minutes; use cron fields for hours and longer"),
            )),
            (Err(()), unit) => Err(err(None, format!("the number of {} is not a whole number", unit.name()))),
        };
    }
    let expanded = match trimmed.to_ascii_lowercase().as_str() {
        // pg_cron accepts @restart for @reboot (its own regression test uses it)
        "@reboot" | "@restart" => return Ok(Schedule::Reboot),
        "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
        "@monthly" => "0 0 1 * *".to_string(),
        "@weekly" => "0 0 * * 0".to_string(),
        "@daily" | "@midnight" => "0 0 * * *".to_string(),
        "@hourly" => "0 * * * *".to_string(),
        other if other.starts_with('@') => {
            return Err(err(None, format!("unknown macro \"{trimmed}\" (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly, @reboot, @restart)")))
        }
        _ => trimmed.to_string(),
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(err(
            None,
            format!("{} fields; expected 5 (minute hour day-of-month month day-of-week), a macro such as @daily, 'N seconds' or 'N minutes'", fields.len()),
        ));
    }
    let minutes = parse_field(fields[0], &MINUTE).map_err(|p| err(Some(MINUTE.name), p))?;
    let hours = parse_field(fields[1], &HOUR).map_err(|p| err(Some(HOUR.name), p))?;
    let (days, last_day) = parse_days(fields[2]).map_err(|p| err(Some(DAY.name), p))?;
    let months = parse_field(fields[3], &MONTH).map_err(|p| err(Some(MONTH.name), p))?;
    let mut weekdays = parse_field(fields[4], &WEEKDAY).map_err(|p| err(Some(WEEKDAY.name), p))?;
    if weekdays & (1 << 7) != 0 {
        weekdays = (weekdays & !(1 << 7)) | 1;
    }
    let spec = CronSpec {
        minutes,
        hours: hours as u32,
        days: days as u32,
        last_day,
        months: months as u16,
        weekdays: weekdays as u8,
        days_star: fields[2].starts_with('*'),
        weekdays_star: fields[4].starts_with('*'),
    };
    spec.check_possible().map_err(|p| err(Some(DAY.name), p))?;
    Ok(Schedule::Cron(spec))
}

#[derive(Copy, Clone)]
enum Unit {
    Seconds,
    Minutes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Seconds => "seconds",
            Unit::Minutes => "minutes",
        }
    }
}

/// `N second(s)` or `N minute(s)`: the number (Err if not a whole number)
/// and the unit; None for anything else.
fn parse_interval(s: &str) -> Option<(Result<u32, ()>, Unit)> {
    let lower = s.to_ascii_lowercase();
    let (number, unit) =
        [("seconds", Unit::Seconds), ("second", Unit::Seconds), ("minutes", Unit::Minutes), ("minute", Unit::Minutes)]
            .into_iter()
            .find_map(|(suffix, unit)| lower.strip_suffix(suffix).map(|n| (n.trim().to_string(), unit)))?;
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return Some((Err(()), unit));
    }
    Some((number.parse::<u32>().map_err(|_| ()).map(|n| n.min(1_000_000)), unit))
}

fn parse_days(text: &str) -> Result<(u64, bool), String> {
    let mut last = false;
    let mut rest = Vec::new();
    for item in text.split(',') {
        if item == "$" {
            last = true;
        } else {
            rest.push(item);
        }
    }
    if rest.is_empty() {
        return Ok((0, last));
    }
    Ok((parse_field(&rest.join(","), &DAY)?, last))
}

/// A field as a bit set: bit i set when value i matches.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    if text.is_empty() {
        return Err("empty".into());
    }
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("\"{text}\" has an empty list element"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("step \"{s}\" in \"{item}\" is not a number"))?;
                if step == 0 || step > field.max {
                    return Err(format!("step {step} in \"{item}\" is out of range 1-{}", field.max));
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (lo, hi) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = value(a, field)?;
            let hi = value(b, field)?;
            if lo > hi {
                return Err(format!("range \"{range}\" runs backwards"));
            }
            (lo, hi)
        } else {
            let v = value(range, field)?;
            // "a/n" means from a to the end, every n
            if item.contains('/') {
                (v, field.max)
            } else {
                (v, v)
            }
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(i) = field.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + if field.min == 1 { 1 } else { 0 });
    }
    if text == "$" {
        return Err("\"$\" (last day of the month) is only allowed on its own in a day-of-month list".into());
    }
    let v: u32 = text.parse().map_err(|_| {
        if field.names.is_empty() {
            format!("\"{text}\" is not a number")
        } else {
            format!("\"{text}\" is neither a number nor a name ({}…)", field.names[..3].join(", "))
        }
    })?;
    if v < field.min || v > field.max {
        return Err(format!("{v} is out of range {}-{}", field.min, field.max));
    }
    Ok(v)
}

impl CronSpec {
    /// Refuse day/month combinations that can never occur (`0 0 30 2 *`).
    fn check_possible(&self) -> Result<(), String> {
        if !self.days_star && !self.weekdays_star {
            return Ok(()); // either may match: some weekday always comes
        }
        if self.last_day {
            return Ok(());
        }
        for month in 1..=12u32 {
            if self.months & (1 << month) != 0 && (self.days >> 1).trailing_zeros() + 1 <= days_in_month(2000, month) {
                return Ok(());
            }
        }
        Err("none of the days named occurs in any of the months named".into())
    }

    fn day_matches(&self, year: i64, month: u32, day: u32, weekday: u32) -> bool {
        let dom = self.days & (1 << day) != 0 || (self.last_day && day == days_in_month(year, month));
        let dow = self.weekdays & (1 << weekday) != 0;
        if self.days_star || self.weekdays_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

impl Schedule {
    /// The first time strictly after `after` at which the schedule fires;
    /// `None` for `@reboot` and for a cron schedule with no fire within
    /// nine years.
    pub fn next_after(&self, after: i64, zone: &dyn Zone) -> Option<i64> {
        match self {
            Schedule::Reboot => None,
            Schedule::Seconds(n) => Some(after + *n as i64 * USECS_PER_SEC),
            Schedule::Cron(spec) => spec.next_after(after, zone),
        }
    }
}

impl CronSpec {
    fn next_after(&self, after: i64, zone: &dyn Zone) -> Option<i64> {
        let local = Civil::from_timestamp(after, zone.offset_at_utc(after));
        let start_day = days_from_civil(local.year, local.month, local.day);
        // the first candidate minute is the one after `after`'s minute
        let (first_hour, first_minute) = (local.hour, local.minute + 1);
        for d in 0..HORIZON_DAYS {
            let (year, month, day) = civil_from_days(start_day + d);
            if self.months & (1 << month) == 0 {
                continue;
            }
            let probe = Civil { year, month, day, hour: 0, minute: 0, second: 0, micro: 0 };
            if !self.day_matches(year, month, day, probe.weekday()) {
                continue;
            }
            for hour in 0..24u32 {
                if self.hours & (1 << hour) == 0 || (d == 0 && hour < first_hour) {
                    continue;
                }
                for minute in 0..60u32 {
                    if self.minutes & (1 << minute) == 0 || (d == 0 && hour == first_hour && minute < first_minute) {
                        continue;
                    }
                    let civil = Civil { hour, minute, ..probe };
                    let ts = civil.to_timestamp(zone.offset_for_local(&civil));
                    if ts > after {
                        return Some(ts);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::civil::{days_from_civil, FixedOffset, PG_EPOCH_DAYS, USECS_PER_DAY, USECS_PER_MINUTE};

    const UTC: FixedOffset = FixedOffset(0);

    fn ts(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Civil { year: y, month: mo, day: d, hour: h, minute: mi, second: s, micro: 0 }.to_timestamp(0)
    }

    fn next(schedule: &str, after: i64) -> i64 {
        parse(schedule).unwrap().next_after(after, &UTC).unwrap()
    }

    fn fires(schedule: &str, from: i64, n: usize) -> Vec<i64> {
        let s = parse(schedule).unwrap();
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            t = s.next_after(t, &UTC).unwrap();
            out.push(t);
        }
        out
    }

    #[test]
    fn every_minute_and_every_five() {
        let t = ts(2026, 11, 25, 10, 7, 30);
        assert_eq!(next("* * * * *", t), ts(2026, 11, 25, 10, 8, 0));
        assert_eq!(next("*/5 * * * *", t), ts(2026, 11, 25, 10, 10, 0));
        // strictly after: at an exact fire time, the next one
        assert_eq!(next("*/5 * * * *", ts(2026, 11, 25, 10, 10, 0)), ts(2026, 11, 25, 10, 15, 0));
    }

    #[test]
    fn ranges_lists_steps_and_names() {
        let t = ts(2026, 11, 25, 10, 7, 0); // a Wednesday
        assert_eq!(next("0 9-17/4 * * mon-fri", t), ts(2026, 11, 25, 13, 0, 0));
        assert_eq!(next("15,45 2 * * *", t), ts(2026, 11, 26, 2, 15, 0));
        assert_eq!(next("0 0 1 jan,JUL *", t), ts(2027, 1, 1, 0, 0, 0));
        assert_eq!(next("0 0 * * SUN", t), ts(2026, 11, 29, 0, 0, 0));
        assert_eq!(next("0 0 * * 7", t), ts(2026, 11, 29, 0, 0, 0), "7 is Sunday too");
        assert_eq!(next("30/10 * * * *", t), ts(2026, 11, 25, 10, 30, 0), "a/n runs from a to the end");
        assert_eq!(
            fires("50/10 * * * *", t, 3),
            vec![ts(2026, 11, 25, 10, 50, 0), ts(2026, 11, 25, 11, 50, 0), ts(2026, 11, 25, 12, 50, 0)]
        );
    }

    #[test]
    fn macros() {
        let t = ts(2026, 11, 25, 10, 7, 0);
        assert_eq!(next("@hourly", t), ts(2026, 11, 25, 11, 0, 0));
        assert_eq!(next("@daily", t), ts(2026, 11, 26, 0, 0, 0));
        assert_eq!(next("@midnight", t), ts(2026, 11, 26, 0, 0, 0));
        assert_eq!(next("@weekly", t), ts(2026, 11, 29, 0, 0, 0));
        assert_eq!(next("@monthly", t), ts(2026, 12, 1, 0, 0, 0));
        assert_eq!(next("@yearly", t), ts(2027, 1, 1, 0, 0, 0));
        assert_eq!(next("@ANNUALLY", t), ts(2027, 1, 1, 0, 0, 0));
        assert_eq!(parse("@reboot").unwrap(), Schedule::Reboot);
        assert_eq!(parse("@reboot").unwrap().next_after(t, &UTC), None);
        assert_eq!(parse("@restart").unwrap(), Schedule::Reboot);
        assert_eq!(parse(" @Restart ").unwrap(), Schedule::Reboot);
    }

    #[test]
    fn last_day_of_month() {
        let t = ts(2026, 1, 15, 0, 0, 0);
        assert_eq!(
            fires("0 23 $ * *", t, 4),
            vec![
                ts(2026, 1, 31, 23, 0, 0),
                ts(2026, 2, 28, 23, 0, 0),
                ts(2026, 3, 31, 23, 0, 0),
                ts(2026, 4, 30, 23, 0, 0)
            ]
        );
        assert_eq!(next("0 0 $ 2 *", ts(2027, 3, 1, 0, 0, 0)), ts(2028, 2, 29, 0, 0, 0), "leap year");
        assert_eq!(fires("0 0 15,$ * *", t, 2), vec![ts(2026, 1, 31, 0, 0, 0), ts(2026, 2, 15, 0, 0, 0)]);
    }

    #[test]
    fn day_of_month_or_day_of_week_as_vixie_cron() {
        // both restricted: the 13th OR a Friday
        let t = ts(2026, 11, 1, 0, 0, 0); // a Sunday
        assert_eq!(
            fires("0 0 13 * 5", t, 3),
            vec![ts(2026, 11, 6, 0, 0, 0), ts(2026, 11, 13, 0, 0, 0), ts(2026, 11, 20, 0, 0, 0)]
        );
        // day-of-month starts with '*': both must match, i.e. every other day that is a Friday
        assert_eq!(next("0 0 */2 * 5", t), ts(2026, 11, 13, 0, 0, 0));
    }

    #[test]
    fn seconds() {
        assert_eq!(parse("1 second").unwrap(), Schedule::Seconds(1));
        assert_eq!(parse(" 30 SECONDS ").unwrap(), Schedule::Seconds(30));
        assert_eq!(parse("1 minute").unwrap(), Schedule::Seconds(60));
        assert_eq!(parse("5 Minutes").unwrap(), Schedule::Seconds(300));
        assert_eq!(parse("59 minutes").unwrap(), Schedule::Seconds(3540));
        let t = ts(2026, 11, 25, 10, 7, 13) + 250_000;
        assert_eq!(next("1 seconds", t), ts(2026, 11, 25, 10, 7, 14) + 250_000);
        assert_eq!(next("10 seconds", t), ts(2026, 11, 25, 10, 7, 23) + 250_000);
        // counted from the time given (not aligned to multiples of N): the
        // grid is the job's own
        assert_eq!(
            fires("15 seconds", t, 3),
            vec![
                ts(2026, 11, 25, 10, 7, 28) + 250_000,
                ts(2026, 11, 25, 10, 7, 43) + 250_000,
                ts(2026, 11, 25, 10, 7, 58) + 250_000
            ]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(e("61 * * * *"), "invalid schedule \"61 * * * *\": minute field: 61 is out of range 0-59");
        assert_eq!(e("0 24 * * *"), "invalid schedule \"0 24 * * *\": hour field: 24 is out of range 0-23");
        assert_eq!(e("0 0 0 * *"), "invalid schedule \"0 0 0 * *\": day-of-month field: 0 is out of range 1-31");
        assert_eq!(e("0 0 * 13 *"), "invalid schedule \"0 0 * 13 *\": month field: 13 is out of range 1-12");
        assert!(e("0 0 * foo *").contains("month field: \"foo\" is neither a number nor a name"));
        assert!(e("0 0 * * 8").contains("day-of-week field: 8 is out of range 0-7"));
        assert!(e("5-3 * * * *").contains("minute field: range \"5-3\" runs backwards"));
        assert!(e("*/0 * * * *").contains("minute field: step 0"));
        assert!(e("1,,2 * * * *").contains("empty list element"));
        assert!(e("* * * *").contains("4 fields; expected 5"));
        assert!(e("* * * * * *").contains("6 fields"));
        assert!(e("").contains("empty"));
        assert!(e("61 seconds").contains("61 seconds: an interval schedule takes 1 to 59 seconds"));
        assert!(e("60 minutes").contains("60 minutes: an interval schedule takes 1 to 59 minutes"));
        assert!(e("0 minutes").contains("1 to 59 minutes"));
        assert!(e("2.5 minutes").contains("the number of minutes is not a whole number"));
        assert!(e("minutes").contains("the number of minutes is not a whole number"));
        assert!(e("0 seconds").contains("1 to 59"));
        assert!(e("1.5 seconds").contains("not a whole number"));
        assert!(e("99999999999999999999 seconds").contains("not a whole number"));
        assert!(e("@often").contains("unknown macro"));
        assert!(e("0 0 30 2 *").contains("day-of-month field: none of the days named occurs"));
        assert!(e("0 0 1-$ * *").contains("only allowed on its own"));
        assert!(e(&"1,".repeat(600)).contains("longer than 1000 bytes"));
    }

    #[test]
    fn impossible_only_when_nothing_can_match() {
        assert!(parse("0 0 31 4,6 *").is_err());
        assert!(parse("0 0 31 4,5 *").is_ok());
        assert!(parse("0 0 29 2 *").is_ok(), "Feb 29 comes in leap years");
        assert!(parse("0 0 30 2 1").is_ok(), "or any Monday in February");
    }

    /// A zone one hour east of UTC in winter and two in summer, changing at
    /// 01:00 UTC on the last Sunday of March and of October (as in Europe).
    struct Cet;
    fn last_sunday(year: i64, month: u32) -> i64 {
        let last = days_from_civil(year, month, days_in_month(year, month));
        let weekday = (last + 4).rem_euclid(7);
        last - weekday
    }
    impl Cet {
        fn summer_utc(&self, year: i64) -> (i64, i64) {
            let to_ts = |days: i64| (days - PG_EPOCH_DAYS) * USECS_PER_DAY + 3_600_000_000;
            (to_ts(last_sunday(year, 3)), to_ts(last_sunday(year, 10)))
        }
    }
    impl Zone for Cet {
        fn offset_at_utc(&self, ts: i64) -> i64 {
            let year = Civil::from_timestamp(ts, 0).year;
            let (start, end) = self.summer_utc(year);
            if ts >= start && ts < end {
                7200
            } else {
                3600
            }
        }
        fn offset_for_local(&self, local: &Civil) -> i64 {
            let summer_ok = self.offset_at_utc(local.to_timestamp(7200)) == 7200;
            // summer time when the wall-clock time exists in it (the first
            // of the two when it occurs twice); otherwise winter time, which
            // is also the offset before the change for a time in the gap
            if summer_ok {
                7200
            } else {
                3600
            }
        }
    }

    #[test]
    fn wall_clock_times_in_a_zone_with_dst() {
        let s = parse("30 2 * * *").unwrap();
        // the day before summer time: 02:30 CET = 01:30 UTC
        let before = ts(2026, 3, 28, 12, 0, 0);
        assert_eq!(s.next_after(before, &Cet), Some(ts(2026, 3, 29, 1, 30, 0)));
        // after the change, 02:30 CEST = 00:30 UTC
        assert_eq!(s.next_after(ts(2026, 3, 29, 12, 0, 0), &Cet), Some(ts(2026, 3, 30, 0, 30, 0)));
        // fires keep moving forward through both changes, once a day
        let mut t = ts(2026, 3, 20, 0, 0, 0);
        for _ in 0..250 {
            let n = s.next_after(t, &Cet).unwrap();
            assert!(n > t && n - t <= USECS_PER_DAY + 3_600_000_000, "{t} -> {n}");
            t = n;
        }
        // 9 o'clock local stays 9 o'clock local
        let nine = parse("0 9 * * *").unwrap();
        let n = nine.next_after(ts(2026, 7, 1, 0, 0, 0), &Cet).unwrap();
        assert_eq!(Civil::from_timestamp(n, Cet.offset_at_utc(n)).hour, 9);
    }

    #[test]
    fn dense_schedules_never_skip_or_repeat() {
        let s = parse("* * * * *").unwrap();
        let mut t = ts(2026, 12, 31, 23, 58, 30);
        for i in 0..5 {
            let n = s.next_after(t, &UTC).unwrap();
            assert_eq!(n % USECS_PER_MINUTE, 0);
            if i > 0 {
                assert_eq!(n - t, USECS_PER_MINUTE);
            }
            t = n;
        }
        assert_eq!(t, ts(2027, 1, 1, 0, 3, 0));
    }
}
