//! When the per-database worker sleeps, and whether it stays in its
//! database or leaves its worker slot to others (pure Rust: the times and
//! what it knows of the cluster in, the decision out; progress.rs's model
//! proves these decisions never stall a database).

/// Longest sleep between ticks: how soon a change to automation.job, a
/// settings reload or a finished run is noticed at the latest (finished runs
/// and signals also wake the scheduler at once).
pub const MAX_NAP_US: i64 = 1_000_000;
/// The sleep while a due fire waits for a free slot (a run's end wakes the
/// scheduler sooner).
pub const BLOCKED_NAP_US: i64 = 100_000;

/// How to sleep until the next tick: on the latch to the millisecond, then
/// the last fraction of a millisecond without it, so that a fire is launched
/// within microseconds of its due time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Nap {
    pub latch_ms: u64,
    pub spin_us: u64,
}

pub fn nap(next: Option<i64>, now: i64) -> Nap {
    let us = match next {
        Some(ts) if ts <= now => BLOCKED_NAP_US,
        Some(ts) => (ts - now).min(MAX_NAP_US),
        None => MAX_NAP_US,
    };
    let latch_ms = (us / 1000) as u64;
    let spin_us = match next {
        Some(ts) if ts > now && ts - now < MAX_NAP_US => ((ts - now) % 1000) as u64,
        _ => 0,
    };
    Nap { latch_ms, spin_us }
}

/// A scheduler stays while a fire is due within this, and leaves (its next
/// due time in shared memory, for the launcher) when none is: worker slots
/// follow the work, not the number of databases.
pub const LINGER_US: i64 = 2_000_000;
/// How long a scheduler waits for a run it asked for to end, to record it.
pub const RUN_LINGER_US: i64 = 500_000;
/// A fire due within this keeps a scheduler even when other databases wait
/// (the launcher starts one this long before a fire: launcher.rs LEAD_US).
pub const IMMINENT_US: i64 = 150_000;
/// (issue 34) A database whose next fire is due within this keeps its
/// scheduler in a crowded cluster too, as a *resident*, while the resident
/// budget allows (`resident_budget`): a 1-second job is fired by a process
/// that is already connected and has its jobs loaded, instead of waiting
/// every second for a scheduler slot behind the minutely visits of every
/// other database, and paying a process start and a connection each time.
pub const RESIDENT_US: i64 = LINGER_US;

/// (issue 34) How often a visit looks at everything a commit may not have
/// announced — executions in the log, entries in the trigger inbox, SQL
/// steps whose worker is gone (rows restored by a data-only pg_restore, a
/// step worker lost while no scheduler ran) — besides the first visit
/// after the server started, the slot was made or somebody asked
/// (`automation.wake_scheduler()`, CREATE EXTENSION). Every visit used to:
/// those look-ups, in a process that has just connected, were a third of a
/// fire's CPU (bench/many_databases.sh, README). A database with only its
/// default jobs is visited every minute anyway, so the worst case is what
/// it was.
pub const SWEEP_EVERY_US: i64 = 60_000_000;

/// Whether a visit starting at `now` sweeps (`Visit::first`), the last
/// sweep of its database having been at `swept_at` (0: none since the
/// server started, the slot was made or somebody asked).
pub fn sweeps(swept_at: i64, now: i64) -> bool {
    swept_at == 0 || now - swept_at >= SWEEP_EVERY_US || now < swept_at
}

/// How many schedulers may be residents at once: half of them (none with a
/// single scheduler), so the other half always serves the databases that
/// wait (progress.rs's model explores it).
pub fn resident_budget(scheduler_workers: u32) -> u32 {
    scheduler_workers / 2
}

/// What the scheduler knows of the cluster when it decides whether to stay.
#[derive(Copy, Clone, Debug, Default)]
pub struct Crowd {
    /// another database waits for a scheduler the budget does not allow
    pub others_wait: bool,
    /// more databases have the extension than schedulers may run at once
    pub crowded: bool,
    /// when this database's most recent run in flight was asked for, if any
    pub last_request: Option<i64>,
    /// (0.8.0) a due fire found no free run slot at the last tick: the
    /// slots are held by runs that other databases' schedulers must record
    pub blocked: bool,
    /// (issue 34) this database's work comes often (`Visit::frequent`)
    pub frequent: bool,
    /// (issue 34) this database's scheduler is a resident, or may become
    /// one: fewer other residents than the budget
    pub resident_room: bool,
}

/// Stay for a fire due in a moment always; otherwise leave when other
/// databases need the slot (or might: crowded); else stay while a fire is
/// due soon or a run asked for a moment ago may end soon (it is recorded
/// sooner, and without starting a scheduler again, if we wait).
pub fn stays(next: Option<i64>, now: i64, crowd: Crowd) -> bool {
    // (0.8.0) never hold a scheduler slot waiting for a run slot that only
    // a database waiting for that scheduler slot can free (issue 28; the
    // model in progress.rs): the due fire stays due, and the launcher
    // starts this database again in its turn
    // (issue 34) except a resident: at most half the schedulers are, and the
    // others record the runs that free the slots (progress.rs's model)
    if crowd.blocked && (crowd.others_wait || crowd.crowded) && !resident(next, now, crowd) {
        return false;
    }
    if next.is_some_and(|ts| ts - now <= IMMINENT_US) {
        return true;
    }
    if resident(next, now, crowd) {
        return true;
    }
    if crowd.others_wait || crowd.crowded {
        return false;
    }
    next.is_some_and(|ts| ts - now <= LINGER_US) || crowd.last_request.is_some_and(|t| now - t < RUN_LINGER_US)
}

/// Whether the scheduler stays as a resident: its work comes often, the
/// next is soon, and there is room for it (also in a quiet cluster, where
/// it would stay anyway: then it counts against the budget, so that a crowd
/// arriving finds the budget in force). A database whose 10-second job's
/// fire happens to be 2 s off does not take a resident's place.
pub fn resident(next: Option<i64>, now: i64, crowd: Crowd) -> bool {
    crowd.frequent && crowd.resident_room && next.is_some_and(|ts| ts - now <= RESIDENT_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    /// A visit sweeps when its database was never swept (since the server
    /// started, the slot was made, or somebody asked), then once a minute;
    /// a clock stepped back never postpones it.
    #[test]
    fn sweeps_once_a_minute() {
        let t = 1_000 * SEC;
        assert!(sweeps(0, t));
        assert!(!sweeps(t, t));
        assert!(!sweeps(t, t + 10 * SEC));
        assert!(!sweeps(t, t + 59 * SEC));
        assert!(sweeps(t, t + 60 * SEC));
        assert!(sweeps(t, t - SEC));
    }

    #[test]
    fn naps() {
        assert_eq!(nap(None, 0), Nap { latch_ms: 1000, spin_us: 0 });
        assert_eq!(nap(Some(5 * SEC), 0), Nap { latch_ms: 1000, spin_us: 0 });
        assert_eq!(nap(Some(2_500), 0), Nap { latch_ms: 2, spin_us: 500 });
        assert_eq!(nap(Some(400), 0), Nap { latch_ms: 0, spin_us: 400 });
        // due (waits for a slot): a short sleep, no spin
        assert_eq!(nap(Some(0), 0), Nap { latch_ms: 100, spin_us: 0 });
        assert_eq!(nap(Some(-5 * SEC), 0), Nap { latch_ms: 100, spin_us: 0 });
    }

    #[test]
    fn staying() {
        let quiet = Crowd::default();
        let busy = Crowd { others_wait: true, ..quiet };
        let crowded = Crowd { crowded: true, ..quiet };
        assert!(stays(Some(100_000), 0, busy), "a fire in a moment keeps the scheduler");
        assert!(stays(Some(100_000), 0, crowded));
        assert!(!stays(Some(SEC), 0, busy), "others wait: leave");
        assert!(!stays(Some(SEC), 0, crowded));
        assert!(stays(Some(SEC), 0, quiet));
        assert!(!stays(Some(3 * SEC), 0, quiet), "nothing soon: leave");
        assert!(!stays(None, 0, quiet));
        assert!(stays(None, SEC, Crowd { last_request: Some(SEC - 100_000), ..quiet }), "a run just asked for");
        assert!(!stays(None, SEC, Crowd { last_request: Some(0), ..quiet }));
        // a due fire blocked on run slots: leave when others need the scheduler slot
        let blocked = Crowd { blocked: true, ..quiet };
        assert!(stays(Some(0), 0, blocked), "alone: wait for a slot here");
        assert!(!stays(Some(0), 0, Crowd { others_wait: true, ..blocked }), "others wait: give them the slot");
        assert!(!stays(Some(0), 0, Crowd { crowded: true, ..blocked }));
    }

    #[test]
    fn residents() {
        let crowded = Crowd { crowded: true, others_wait: true, frequent: true, ..Crowd::default() };
        let room = Crowd { resident_room: true, ..crowded };
        assert!(!stays(Some(SEC), 0, Crowd { frequent: false, ..room }), "work that comes seldom: no resident");
        assert!(!stays(Some(SEC), 0, crowded), "no room: a 1-second job's scheduler leaves");
        assert!(stays(Some(SEC), 0, room), "room: it stays for its next fire");
        assert!(resident(Some(SEC), 0, room));
        assert!(resident(Some(RESIDENT_US), 0, room));
        assert!(!stays(Some(RESIDENT_US + 1), 0, room), "a fire further off: it leaves");
        assert!(!resident(None, 0, room));
        // a resident waits for a run slot (every run slot taken at a minute's
        // turn, when every database's default jobs are due): the other
        // schedulers record the runs that free them
        assert!(stays(Some(0), 0, Crowd { blocked: true, ..room }));
        assert!(!stays(Some(0), 0, Crowd { blocked: true, resident_room: false, ..room }));
        assert!(!resident(Some(SEC), 0, Crowd { resident_room: false, ..room }));
        // half the schedulers at most, none when there is one
        assert_eq!(resident_budget(1), 0);
        assert_eq!(resident_budget(4), 2);
        assert_eq!(resident_budget(5), 2);
    }
}
