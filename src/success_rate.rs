//! `automation.pipeline_success_rate(status)`: the percentage of rows whose
//! status is exactly 'success', rounded to 2 decimals; every row counts toward
//! the total, NULL statuses included; an empty group gives NULL (the seed's
//! semantics).
//!
//! The state is two 64-bit counters in an `internal` state allocated once per
//! group and updated in place, so a row costs one function call and a
//! 7-byte comparison. The aggregate has combine/serialize/deserialize (parallel
//! plans) and an inverse transition (sliding window frames in O(1) per row).
//!
//! The CREATE AGGREGATE statements are hand-written in sql/success_rate.sql:
//! pgrx's generated deserialize signature is wrong for `internal` states
//! (pgrx#2351), so pgrx only compiles the C symbols here (`sql = false`).

use pgrx::prelude::*;
use pgrx::{pg_sys, AnyNumeric, Internal};

/// The counters, with no PostgreSQL in them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Counts {
    pub successes: i64,
    pub total: i64,
}

impl Counts {
    pub const SERIALIZED_LEN: usize = 16;

    pub fn add(&mut self, success: bool) {
        self.total += 1;
        self.successes += i64::from(success);
    }

    /// Inverse of `add`, for rows leaving a sliding window frame.
    pub fn remove(&mut self, success: bool) {
        self.total -= 1;
        self.successes -= i64::from(success);
    }

    pub fn merge(&mut self, other: &Counts) {
        self.total += other.total;
        self.successes += other.successes;
    }

    /// The result in hundredths of a percent, rounded half away from zero as
    /// numeric's round(x, 2) does: 1 success of 3 rows is 3333 (33.33%).
    /// `None` for an empty group.
    pub fn percent_hundredths(&self) -> Option<i64> {
        if self.total == 0 {
            return None;
        }
        // 10_000 * successes fits easily in i128 for any i64 count.
        let (num, den) = (10_000 * i128::from(self.successes), i128::from(self.total));
        let rounded = (2 * num + den) / (2 * den); // successes <= total, so num >= 0
        Some(rounded as i64)
    }

    /// `percent_hundredths` as the numeric literal round(…, 2) prints: "33.33".
    pub fn percent_text(&self) -> Option<String> {
        self.percent_hundredths().map(|h| format!("{}.{:02}", h / 100, h % 100))
    }

    pub fn to_bytes(self) -> [u8; Self::SERIALIZED_LEN] {
        let mut out = [0u8; Self::SERIALIZED_LEN];
        out[..8].copy_from_slice(&self.successes.to_be_bytes());
        out[8..].copy_from_slice(&self.total.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Counts> {
        if bytes.len() != Self::SERIALIZED_LEN {
            return None;
        }
        let successes = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let total = i64::from_be_bytes(bytes[8..].try_into().ok()?);
        (0 <= successes && successes <= total).then_some(Counts { successes, total })
    }
}

/// Is this text datum exactly 'success'? Reads the varlena header in Rust;
/// only compressed or out-of-line values (never a short status) are detoasted.
///
/// # Safety
/// `datum` must be a non-null text (or varchar) datum.
unsafe fn is_success(datum: pg_sys::Datum) -> bool {
    const SUCCESS: &[u8] = b"success";
    unsafe {
        let mut ptr = datum.cast_mut_ptr::<pg_sys::varlena>();
        if pgrx::varlena::varatt_is_1b_e(ptr) || pgrx::varlena::varatt_is_4b_c(ptr) {
            ptr = pg_sys::pg_detoast_datum_packed(ptr);
        }
        pgrx::varlena::varsize_any_exhdr(ptr) == SUCCESS.len()
            && std::slice::from_raw_parts(pgrx::varlena::vardata_any(ptr).cast::<u8>(), SUCCESS.len()) == SUCCESS
    }
}

/// Argument 1 (the status) of a transition call: is it 'success'?
///
/// # Safety
/// `fcinfo` must be a call of a function declared (internal, text).
unsafe fn status_is_success(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    unsafe { pgrx::fcinfo::pg_getarg_datum(fcinfo, 1).is_some_and(|d| is_success(d)) }
}

/// The group's counters, allocated zeroed in the aggregate's memory context
/// on first use (the per-call context is reset between rows).
///
/// # Safety
/// `fcinfo` must be the call's; `state` must be NULL or a `Counts` this module allocated.
unsafe fn counts_mut<'a>(state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> &'a mut Counts {
    unsafe {
        if let Some(datum) = state.unwrap() {
            return &mut *datum.cast_mut_ptr::<Counts>();
        }
        let mut agg_context: pg_sys::MemoryContext = std::ptr::null_mut();
        if pg_sys::AggCheckCallContext(fcinfo, &mut agg_context) == 0 {
            crate::error::Error::new(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "pipeline_success_rate support functions can only be called as part of an aggregate",
            )
            .raise();
        }
        let ptr = pg_sys::MemoryContextAllocZero(agg_context, std::mem::size_of::<Counts>());
        &mut *ptr.cast::<Counts>()
    }
}

/// A copy of the counters in `state`, if it has been created.
///
/// # Safety
/// `state` must be NULL or a `Counts` this module allocated.
unsafe fn read_counts(state: Internal) -> Option<Counts> {
    unsafe { state.unwrap().map(|d| *d.cast_mut_ptr::<Counts>()) }
}

fn internal(counts: &mut Counts) -> Internal {
    Internal::from(Some(pg_sys::Datum::from(counts as *mut Counts)))
}

#[pg_schema]
mod automation {
    use super::*;

    // The transition functions take (internal, text). pgrx cannot pass a raw
    // Datum, so only the state is declared and the status is read from fcinfo
    // as argument 1, with no conversion: the hot path compares bytes.

    /// Transition: count the row (NULL statuses too).
    #[pg_extern(sql = false)]
    fn success_rate_sfunc(state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
        // SAFETY: state is NULL or ours; argument 1 is a text datum or NULL.
        unsafe {
            let counts = counts_mut(state, fcinfo);
            counts.add(status_is_success(fcinfo));
            internal(counts)
        }
    }

    /// Inverse transition: a row leaves the window frame.
    #[pg_extern(sql = false)]
    fn success_rate_minvfunc(state: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
        // SAFETY: as for the transition; the executor only removes rows it added.
        unsafe {
            let counts = counts_mut(state, fcinfo);
            counts.remove(status_is_success(fcinfo));
            internal(counts)
        }
    }

    /// Combine two partial states (parallel plans). Not strict: either may be
    /// NULL, and the result is always newly allocated in the aggregate context.
    #[pg_extern(sql = false)]
    fn success_rate_combine(a: Internal, b: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
        // SAFETY: both states are NULL or Counts allocated by this module.
        unsafe {
            let other = read_counts(b).unwrap_or_default();
            let counts = counts_mut(a, fcinfo);
            counts.merge(&other);
            internal(counts)
        }
    }

    #[pg_extern(sql = false)]
    fn success_rate_serialize(state: Internal) -> Vec<u8> {
        // SAFETY: STRICT, so the state is a Counts allocated by this module.
        unsafe { read_counts(state) }.unwrap_or_default().to_bytes().to_vec()
    }

    #[pg_extern(sql = false)]
    fn success_rate_deserialize(bytes: &[u8], _unused: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
        let Some(parsed) = Counts::from_bytes(bytes) else {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
                format!("invalid pipeline_success_rate state of {} bytes", bytes.len())
            );
        };
        // SAFETY: a NULL state makes counts_mut allocate a fresh one.
        unsafe {
            let counts = counts_mut(Internal::from(None), fcinfo);
            *counts = parsed;
            internal(counts)
        }
    }

    /// Final: the percentage as numeric with 2 decimals, NULL for no rows.
    #[pg_extern(sql = false)]
    fn success_rate_final(state: Internal) -> Option<AnyNumeric> {
        // SAFETY: NULL or a Counts allocated by this module; only read.
        let counts = unsafe { read_counts(state) }?;
        counts.percent_text().map(|t| AnyNumeric::try_from(t.as_str()).expect("a valid numeric literal"))
    }
}

extension_sql_file!("../sql/success_rate.sql", name = "success_rate", requires = ["automation_schema"]);

#[cfg(test)]
mod tests {
    use super::Counts;

    fn counts(successes: i64, total: i64) -> Counts {
        Counts { successes, total }
    }

    #[test]
    fn rounds_like_numeric_round_to_two_places() {
        assert_eq!(counts(1, 3).percent_text().as_deref(), Some("33.33"));
        assert_eq!(counts(2, 3).percent_text().as_deref(), Some("66.67"));
        assert_eq!(counts(1, 8).percent_text().as_deref(), Some("12.50"));
        assert_eq!(counts(1, 1600).percent_text().as_deref(), Some("0.06")); // 0.0625
                                                                             // exactly half a hundredth rounds away from zero: 1/20000 = 0.005%
        assert_eq!(counts(1, 20000).percent_text().as_deref(), Some("0.01"));
        assert_eq!(counts(3, 20000).percent_text().as_deref(), Some("0.02")); // 0.015
        assert_eq!(counts(0, 5).percent_text().as_deref(), Some("0.00"));
        assert_eq!(counts(5, 5).percent_text().as_deref(), Some("100.00"));
    }

    #[test]
    fn an_empty_group_is_null() {
        assert_eq!(Counts::default().percent_text(), None);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let c = counts(i64::MAX / 2, i64::MAX);
        assert_eq!(c.percent_text().as_deref(), Some("50.00"));
        let mut total = Counts::default();
        for _ in 0..4 {
            total.merge(&counts(1 << 40, 3 << 40)); // 4 x 3.3e12 rows
        }
        assert_eq!(total.percent_text().as_deref(), Some("33.33"));
    }

    #[test]
    fn add_and_remove_are_inverse() {
        let mut c = Counts::default();
        for s in [true, false, true, true, false] {
            c.add(s);
        }
        assert_eq!(c, counts(3, 5));
        c.remove(true);
        c.remove(false);
        assert_eq!(c, counts(2, 3));
    }

    #[test]
    fn serialization_round_trips_and_rejects_garbage() {
        let c = counts(123_456_789_012, 987_654_321_098);
        assert_eq!(Counts::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(Counts::from_bytes(&[0; 15]), None);
        assert_eq!(Counts::from_bytes(&counts(5, 4).to_bytes()), None);
        assert_eq!(Counts::from_bytes(&counts(-1, 4).to_bytes()), None);
    }

    /// The seed computes round(successes / total * 100, 2) in numeric; check
    /// the integer rounding against exact rational arithmetic.
    #[test]
    fn matches_exact_rounding_for_many_ratios() {
        for total in 1..=400i64 {
            for successes in 0..=total {
                let h = counts(successes, total).percent_hundredths().unwrap();
                // round half up: -1/2 <= exact - h < 1/2, times 2t in integers
                let twice_diff = 2 * (10_000 * successes - h * total);
                assert!(-total <= twice_diff && twice_diff < total, "s={successes} t={total} h={h}");
            }
        }
    }
}
