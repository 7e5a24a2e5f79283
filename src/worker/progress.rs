//! Progress with any budget (issue 28): the launcher's decision of which
//! databases need a scheduler, and the proof that no slot is ever held by
//! work that waits for a slot.
//!
//! Three budgets meet: schedulers (one per database visited, at most
//! `automation.scheduler_workers`), run slots (shared memory, `MAX_RUNS`:
//! a run holds one from its request until its database's scheduler records
//! it) and workers (`automation.max_workers`). 0.7.0 could stall the whole
//! cluster: a scheduler whose due fire found no free run slot stayed (a due
//! fire is "imminent"), so it held the only scheduler slots, while the run
//! slots were held by finished runs that only *their* databases' schedulers
//! may record — which the launcher would not start while no run slot was
//! free. Now:
//!
//! - a database with finished runs to record always gets a scheduler when
//!   the budget allows, whether or not a run slot is free ([`needs_scheduler`]);
//! - a scheduler whose fires wait for a run slot leaves when other
//!   databases wait for a scheduler (`visit::stays`, `Crowd::blocked`): not
//!   needed for progress in the model, but a database with many jobs should
//!   not hold a scheduler slot to wait.
//!
//! - (issue 34) a scheduler whose next fire is within a moment may stay as
//!   a *resident* (`visit::resident`), but at most half the schedulers do
//!   (`visit::resident_budget`): in the model database 0 has a 1-second job.
//!
//! The `#[test]`s below explore every interleaving of a small model (three
//! or four databases; one or two schedulers, workers; one to three run
//! slots) and check that from every reachable state each waiting fire can
//! still be served — and that the 0.7.0 rules do reach a state where it
//! cannot.

/// Whether the extension is in a database, as the launcher knows it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    Unknown,
    Installed,
    Missing,
}

/// What the launcher knows of a database that has no scheduler running
/// (and is not held back: being dropped, or its last scheduler failed a
/// moment ago).
#[derive(Copy, Clone, Debug)]
pub struct DbView {
    pub presence: Presence,
    /// a backend asked for a scheduler (CREATE EXTENSION, wake_scheduler)
    pub woken: bool,
    /// a scheduler ran there since the launcher started
    pub visited: bool,
    /// runs of it ended and wait to be recorded (they hold run slots)
    pub finished_runs: bool,
    /// when its scheduler is needed next (0: not known)
    pub next_due: i64,
    /// a run slot is free in the cluster (a visit for a due fire can request a run)
    pub free_run_slot: bool,
    /// a database without the extension is due to be looked at again
    pub reprobe_due: bool,
}

/// How long before a fire the launcher starts its database's scheduler.
pub const LEAD_US: i64 = 100_000;
/// Ended runs are recorded by the next visit for a fire when it comes
/// within this; otherwise by a visit of their own, ranked after databases
/// whose fires are due now.
pub const REAP_LATER_US: i64 = 5_000_000;
/// How long a scheduler started for a woken database waits for the waking
/// transaction (CREATE EXTENSION) to commit.
pub const WOKEN_PATIENCE_MS: i64 = 30_000;

/// Does this database need a scheduler now? `Some((since, patience_ms))`:
/// since when (the launcher starts the oldest first), and how long the
/// scheduler waits for the extension to appear.
pub fn needs_scheduler(v: &DbView, now: i64) -> Option<(i64, i64)> {
    match v.presence {
        _ if v.woken => Some((now, WOKEN_PATIENCE_MS)),
        Presence::Installed if !v.visited => Some((now, 0)),
        // a due fire: when a run slot is free to take it, or when runs of
        // its own wait to be recorded (recording them frees slots: a
        // database holding slots is never kept from giving them back)
        Presence::Installed
            if v.next_due != 0 && v.next_due <= now + LEAD_US && (v.free_run_slot || v.finished_runs) =>
        {
            Some((v.next_due - LEAD_US, 0))
        }
        // runs to record and no fire soon: a visit of their own, ranked as
        // needed from a little later
        Presence::Installed if v.finished_runs && (v.next_due == 0 || v.next_due > now + REAP_LATER_US) => {
            Some((now + REAP_LATER_US, 0))
        }
        Presence::Installed => None,
        Presence::Unknown => Some((now, 0)),
        Presence::Missing => v.reprobe_due.then_some((now, 0)),
    }
}

#[cfg(test)]
mod model {
    //! The model: databases with one job that is always due again after its
    //! run is recorded, run slots, and the three budgets. A state holds, per
    //! database, whether a fire is due, whether its scheduler runs, whether
    //! it waits for one; per run slot, its state. Transitions are the
    //! processes' steps, in any order. Time is abstract: "due" is now, and
    //! a scheduler that is not needed leaves.

    use std::collections::{HashMap, HashSet, VecDeque};

    use super::*;
    use crate::worker::visit::{self, Crowd};

    /// A configuration: databases, run slots, schedulers and workers.
    #[derive(Copy, Clone, Debug)]
    struct Budgets {
        dbs: usize,
        run_slots: usize,
        schedulers: usize,
        workers: usize,
    }

    #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
    enum Slot {
        Free,
        Requested(u8),
        Started(u8),
        Finished(u8),
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    struct State {
        due: Vec<bool>,
        scheduler: Vec<bool>,
        waiting: Vec<bool>,
        slots: Vec<Slot>,
        /// (issue 34) its scheduler stays as a resident
        resident: Vec<bool>,
    }

    /// The rules in force: 0.8.0's, 0.7.0's (to show the model finds the
    /// stall), or 0.8.0's launcher with 0.7.0's schedulers.
    #[derive(Copy, Clone)]
    enum Rules {
        Current,
        Old,
        OldSchedulers,
        /// (issue 34) today's rules with every scheduler allowed to stay
        /// as a resident (no resident budget)
        ResidentsUnbounded,
    }

    fn in_flight(s: &State, db: usize) -> bool {
        s.slots
            .iter()
            .any(|x| matches!(*x, Slot::Requested(d) | Slot::Started(d) | Slot::Finished(d) if d as usize == db))
    }

    fn needs(s: &State, db: usize, rules: Rules) -> bool {
        let now = 1_000_000_000;
        let finished = s.slots.iter().any(|x| *x == Slot::Finished(db as u8));
        let free = s.slots.contains(&Slot::Free);
        let v = DbView {
            presence: Presence::Installed,
            woken: false,
            visited: true,
            finished_runs: finished,
            // a due fire is due now; otherwise the next one is far off
            next_due: if s.due[db] { now } else { now + 60_000_000 },
            free_run_slot: free,
            reprobe_due: false,
        };
        match rules {
            Rules::Current | Rules::OldSchedulers | Rules::ResidentsUnbounded => needs_scheduler(&v, now).is_some(),
            // 0.7.0: a due fire only with a free run slot; finished runs
            // only when no fire is near
            Rules::Old => (s.due[db] && free) || (finished && !s.due[db]),
        }
    }

    /// Every state reachable in one step, with the database whose due fire
    /// that step served (launched, or skipped while its run was in flight).
    fn next(s: &State, b: Budgets, rules: Rules) -> Vec<(State, Option<usize>)> {
        let mut out = Vec::new();
        // the launcher starts a scheduler where one is needed, within budget
        let running = s.scheduler.iter().filter(|&&x| x).count();
        for db in 0..b.dbs {
            if !s.scheduler[db] && needs(s, db, rules) {
                let mut t = s.clone();
                if running < b.schedulers {
                    t.scheduler[db] = true;
                    t.waiting[db] = false;
                } else {
                    t.waiting[db] = true;
                }
                if t != *s {
                    out.push((t, None));
                }
            }
        }
        // the launcher starts a requested run's worker, within budget; (issue
        // 34) workers are held for residents whose database has none, at
        // most half of them (shared.rs `reserved_for_residents`)
        let started = s.slots.iter().filter(|x| matches!(x, Slot::Started(_))).count();
        let reserved = |d: usize| {
            let lacking = (0..b.dbs)
                .filter(|&r| r != d && s.resident[r] && s.scheduler[r] && !s.slots.contains(&Slot::Started(r as u8)))
                .count();
            lacking.min(b.workers / 2)
        };
        for i in 0..b.run_slots {
            if let Slot::Requested(d) = s.slots[i] {
                if started + reserved(d as usize) < b.workers {
                    let mut t = s.clone();
                    t.slots[i] = Slot::Started(d);
                    out.push((t, None));
                }
            }
        }
        // a worker ends
        for i in 0..b.run_slots {
            if let Slot::Started(d) = s.slots[i] {
                let mut t = s.clone();
                t.slots[i] = Slot::Finished(d);
                out.push((t, None));
            }
        }
        // time passes: a job whose fire was served is due again
        for db in 0..b.dbs {
            if !s.due[db] {
                let mut t = s.clone();
                t.due[db] = true;
                out.push((t, None));
            }
        }
        // a scheduler's tick: record its database's ended runs, launch its
        // due fire (skipped while its run is in flight; waiting with no free
        // run slot), then stay or leave as visit::stays says
        for db in 0..b.dbs {
            if !s.scheduler[db] {
                continue;
            }
            let mut t = s.clone();
            for x in t.slots.iter_mut() {
                if *x == Slot::Finished(db as u8) {
                    *x = Slot::Free;
                }
            }
            let mut served = None;
            let mut blocked = false;
            let mut requested = false;
            if t.due[db] {
                if in_flight(&t, db) {
                    t.due[db] = false; // overlap skip
                    served = Some(db);
                } else if let Some(i) = t.slots.iter().position(|x| *x == Slot::Free) {
                    t.slots[i] = Slot::Requested(db as u8);
                    t.due[db] = false;
                    served = Some(db);
                    requested = true;
                } else {
                    blocked = true;
                }
            }
            let now = 1_000_000_000;
            let current = matches!(rules, Rules::Current | Rules::ResidentsUnbounded);
            let residents = (0..b.dbs).filter(|&d| d != db && t.resident[d] && t.scheduler[d]).count() as u32;
            let crowd = Crowd {
                others_wait: (0..b.dbs).any(|d| d != db && t.waiting[d]),
                crowded: b.dbs > b.schedulers,
                last_request: requested.then_some(now),
                blocked: current && blocked,
                frequent: db == 0,
                resident_room: match rules {
                    Rules::Current => residents < visit::resident_budget(b.schedulers as u32),
                    Rules::ResidentsUnbounded => true,
                    _ => false,
                },
            };
            // database 0 has a 1-second job: its next fire is always near
            // (the others' are a minute off once served)
            let next = if t.due[db] {
                Some(now)
            } else if db == 0 && current {
                Some(now + 1_000_000)
            } else {
                Some(now + 60_000_000)
            };
            let stays = visit::stays(next, now, crowd);
            t.resident[db] = stays && visit::resident(next, now, crowd);
            if !stays {
                t.scheduler[db] = false;
            }
            if t != *s || served.is_some() {
                out.push((t, served));
            }
        }
        out
    }

    /// Explore every state reachable from the idle cluster; return how many
    /// there are, and the reachable states where a database's fire is due
    /// but can never be served again.
    fn stuck(b: Budgets, rules: Rules) -> (usize, Vec<(usize, State)>) {
        let start = State {
            due: vec![true; b.dbs],
            scheduler: vec![false; b.dbs],
            waiting: vec![false; b.dbs],
            slots: vec![Slot::Free; b.run_slots],
            resident: vec![false; b.dbs],
        };
        let mut index: HashMap<State, usize> = HashMap::new();
        let mut states = vec![start.clone()];
        index.insert(start, 0);
        let mut reverse: Vec<Vec<usize>> = vec![Vec::new()];
        let mut serves: Vec<Vec<usize>> = vec![Vec::new(); b.dbs];
        let mut queue = VecDeque::from([0usize]);
        while let Some(i) = queue.pop_front() {
            let s = states[i].clone();
            for (t, served) in next(&s, b, rules) {
                let j = match index.get(&t) {
                    Some(&j) => j,
                    None => {
                        states.push(t.clone());
                        reverse.push(Vec::new());
                        index.insert(t, states.len() - 1);
                        queue.push_back(states.len() - 1);
                        states.len() - 1
                    }
                };
                reverse[j].push(i);
                if let Some(db) = served {
                    serves[db].push(i);
                }
            }
        }
        let mut stuck = Vec::new();
        for db in 0..b.dbs {
            // the states from which a serve of db's fire is reachable
            let mut can: HashSet<usize> = serves[db].iter().copied().collect();
            let mut work: Vec<usize> = can.iter().copied().collect();
            while let Some(j) = work.pop() {
                for &i in &reverse[j] {
                    if can.insert(i) {
                        work.push(i);
                    }
                }
            }
            for (i, s) in states.iter().enumerate() {
                if s.due[db] && !can.contains(&i) {
                    stuck.push((db, s.clone()));
                }
            }
        }
        (states.len(), stuck)
    }

    /// Tiny budgets, and more databases than schedulers, workers and slots.
    const CONFIGS: [Budgets; 4] = [
        Budgets { dbs: 3, run_slots: 2, schedulers: 1, workers: 1 },
        Budgets { dbs: 3, run_slots: 1, schedulers: 2, workers: 1 },
        Budgets { dbs: 4, run_slots: 2, schedulers: 2, workers: 1 },
        Budgets { dbs: 4, run_slots: 3, schedulers: 2, workers: 2 },
    ];

    #[test]
    fn every_due_fire_can_still_be_served_from_every_reachable_state() {
        for b in CONFIGS {
            let (explored, stuck) = stuck(b, Rules::Current);
            assert!(explored > 100, "{b:?}: the model explores the interleavings ({explored} states)");
            assert!(stuck.is_empty(), "{b:?}: stuck states, e.g. {:?}", &stuck[..stuck.len().min(3)]);
        }
    }

    #[test]
    fn residents_without_a_budget_starve_the_others() {
        // one scheduler, and a database with a 1-second job allowed to stay
        // for ever: the other databases' fires are never served
        let (_, unbounded) = stuck(CONFIGS[0], Rules::ResidentsUnbounded);
        assert!(
            unbounded.iter().any(|(db, s)| *db != 0 && s.scheduler[0] && s.resident[0]),
            "the model must find the resident holding the only scheduler"
        );
    }

    #[test]
    fn the_old_rules_stall_in_the_model() {
        // 0.7.0's rules: e.g. two runs of other databases ended, every
        // database due, no run slot free: no scheduler is started to record them
        let (_, old) = stuck(CONFIGS[0], Rules::Old);
        assert!(!old.is_empty(), "the model must find 0.7.0's stall, or it proves nothing");
        assert!(
            old.iter().any(|(_, s)| s.scheduler.iter().all(|x| !x)
                && s.slots.iter().all(|x| matches!(x, Slot::Requested(_) | Slot::Started(_) | Slot::Finished(_)))),
            "the stall seen in the field: no scheduler runs, every run slot is held"
        );
        // with 0.8.0's launcher, a scheduler left blocked by another's request
        // in the same moment is not a stall either (it leaves, by visit::stays,
        // when others wait; and without that, the runs it waits for belong to
        // databases the launcher still serves)
        for b in CONFIGS {
            assert!(stuck(b, Rules::OldSchedulers).1.is_empty(), "{b:?}");
        }
    }

    #[test]
    fn the_launchers_decisions() {
        let now = 1_000_000_000;
        let base = DbView {
            presence: Presence::Installed,
            woken: false,
            visited: true,
            finished_runs: false,
            next_due: 0,
            free_run_slot: true,
            reprobe_due: false,
        };
        assert_eq!(needs_scheduler(&base, now), None, "nothing due, nothing to record");
        assert_eq!(needs_scheduler(&DbView { next_due: now, ..base }, now), Some((now - LEAD_US, 0)));
        assert_eq!(
            needs_scheduler(&DbView { next_due: now, free_run_slot: false, ..base }, now),
            None,
            "a due fire with no free run slot and nothing to give back waits"
        );
        assert_eq!(
            needs_scheduler(&DbView { next_due: now, free_run_slot: false, finished_runs: true, ..base }, now),
            Some((now - LEAD_US, 0)),
            "finished runs hold slots: their database always gets a scheduler"
        );
        assert_eq!(
            needs_scheduler(&DbView { finished_runs: true, ..base }, now),
            Some((now + REAP_LATER_US, 0)),
            "runs to record, no fire: after the due ones"
        );
        assert_eq!(
            needs_scheduler(
                &DbView { finished_runs: true, next_due: now + 2_000_000, free_run_slot: false, ..base },
                now
            ),
            None,
            "a fire soon: its visit records them (then it is due, and eligible with no slot free)"
        );
        assert_eq!(needs_scheduler(&DbView { woken: true, ..base }, now), Some((now, WOKEN_PATIENCE_MS)));
        assert_eq!(needs_scheduler(&DbView { visited: false, ..base }, now), Some((now, 0)));
        assert_eq!(needs_scheduler(&DbView { presence: Presence::Missing, ..base }, now), None);
        assert_eq!(
            needs_scheduler(&DbView { presence: Presence::Missing, reprobe_due: true, ..base }, now),
            Some((now, 0))
        );
    }
}
