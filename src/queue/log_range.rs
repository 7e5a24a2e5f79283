//! Which blocks of the execution log a recording reads (0.13.0): the log
//! has no index and is emptied as fast as it fills, so its rows sit in a few
//! pages among many that hold only rows earlier recordings removed (until
//! VACUUM) or nothing (its high-water mark: it never shrinks). Completing
//! transactions report the blocks they logged rows in; the requests that
//! wait for a recording add up to one range, which the recording reads with
//! a TID range scan instead of the whole log. Pure logic; the shared slot
//! (worker/shared.rs) keeps one per database.

/// An inclusive range of block numbers; empty when `from > to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRange {
    pub from: u32,
    pub to: u32,
}

impl LogRange {
    /// Nothing to read (a wake-up that asks for no recording).
    pub const NOTHING: LogRange = LogRange { from: u32::MAX, to: 0 };
    /// The whole log (where rows are is not known).
    pub const ALL: LogRange = LogRange { from: 0, to: u32::MAX };

    /// The blocks of the rows of one transaction, from its lowest and its
    /// highest (`None`: not known, the whole log).
    pub fn of(lowest: Option<u32>, highest: Option<u32>) -> LogRange {
        match (lowest, highest) {
            (Some(from), Some(to)) if from <= to => LogRange { from, to },
            _ => LogRange::ALL,
        }
    }

    pub fn is_empty(self) -> bool {
        self.from > self.to
    }

    /// The smallest range that holds both.
    pub fn union(self, other: LogRange) -> LogRange {
        if self.is_empty() {
            other
        } else if other.is_empty() {
            self
        } else {
            LogRange { from: self.from.min(other.from), to: self.to.max(other.to) }
        }
    }

    /// Does this range hold all of `other`?
    pub fn covers(self, other: LogRange) -> bool {
        other.is_empty() || (self.from <= other.from && other.to <= self.to)
    }

    pub fn is_all(self) -> bool {
        self == LogRange::ALL
    }

    /// The TIDs that bound the range, as SQL `tid` literals: the first of
    /// its first block and the last possible one of its last block.
    pub fn bounds(self) -> (String, String) {
        (format!("({},0)", self.from), format!("({},65535)", self.to))
    }
}

#[cfg(test)]
mod tests {
    use super::LogRange;

    #[test]
    fn requests_add_up_to_the_smallest_range_holding_them_all() {
        let a = LogRange::of(Some(10), Some(12));
        let b = LogRange::of(Some(3), Some(4));
        assert_eq!(a.union(b), LogRange { from: 3, to: 12 });
        assert_eq!(b.union(a), LogRange { from: 3, to: 12 });
        // nothing adds nothing, whichever side it is on
        assert_eq!(LogRange::NOTHING.union(a), a);
        assert_eq!(a.union(LogRange::NOTHING), a);
        assert!(LogRange::NOTHING.union(LogRange::NOTHING).is_empty());
        // a request that does not know where its rows are reads everything
        assert!(a.union(LogRange::of(None, Some(3))).is_all());
        assert!(LogRange::of(Some(5), Some(4)).is_all());
    }

    #[test]
    fn a_pending_request_covers_what_lies_within_it() {
        let pending = LogRange { from: 3, to: 12 };
        assert!(pending.covers(LogRange { from: 3, to: 12 }));
        assert!(pending.covers(LogRange { from: 5, to: 5 }));
        assert!(!pending.covers(LogRange { from: 2, to: 5 }));
        assert!(!pending.covers(LogRange { from: 5, to: 13 }));
        assert!(pending.covers(LogRange::NOTHING));
        assert!(!LogRange::NOTHING.covers(pending));
        assert!(LogRange::ALL.covers(pending));
    }

    #[test]
    fn bounds_take_in_every_row_of_the_first_and_the_last_block() {
        assert_eq!(LogRange { from: 3, to: 12 }.bounds(), ("(3,0)".into(), "(12,65535)".into()));
        assert_eq!(LogRange::ALL.bounds(), ("(0,0)".into(), "(4294967295,65535)".into()));
    }
}
