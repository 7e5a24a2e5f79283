//! What the launcher, the per-database schedulers and the backends share:
//! one small array in shared memory (only when the library is preloaded).
//!
//! - the launcher records each database it manages in a slot; a scheduler
//!   records there whether its database has the extension (so the launcher
//!   does not keep starting schedulers for databases without it);
//! - `CREATE EXTENSION` (and `automation.wake_scheduler()`) marks its database
//!   "woken", so the launcher starts a scheduler there at once.

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{pg_shmem_init, PGRXSharedMemory, PgLwLock};

/// Databases the launcher can manage at once (more are ignored, with a WARNING).
pub const MAX_DATABASES: usize = 256;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Extension {
    Unknown = 0,
    Installed = 1,
    Missing = 2,
}

#[derive(Copy, Clone)]
#[repr(C)]
pub struct DbSlot {
    /// 0: free
    pub dboid: u32,
    pub extension: Extension,
    /// a backend asked for a scheduler here (CREATE EXTENSION)
    pub woken: bool,
    /// no scheduler here before this time (the database is being dropped)
    pub hold_until: i64,
}

#[derive(Copy, Clone)]
#[repr(C)]
pub struct Shared {
    pub launcher_pid: i32,
    pub dbs: [DbSlot; MAX_DATABASES],
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            launcher_pid: 0,
            dbs: [DbSlot { dboid: 0, extension: Extension::Unknown, woken: false, hold_until: 0 }; MAX_DATABASES],
        }
    }
}

// SAFETY: plain old data (integers, bools, a repr(u8) enum), no pointers.
unsafe impl PGRXSharedMemory for Shared {}

pub static SHARED: PgLwLock<Shared> = unsafe { PgLwLock::new(c"automation_ext scheduler") };

/// Set in the postmaster by `_PG_init` while preloading and inherited by every
/// process it forks; false when the library was loaded lazily (no shared
/// memory, no workers).
static PRELOADED: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init`.
pub fn init() {
    // SAFETY: reading a postmaster-set global flag.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(SHARED);
        PRELOADED.store(true, Ordering::Relaxed);
    }
}

pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

impl Shared {
    pub fn slot_mut(&mut self, dboid: u32) -> Option<&mut DbSlot> {
        if let Some(i) = self.dbs.iter().position(|s| s.dboid == dboid) {
            return Some(&mut self.dbs[i]);
        }
        let free = self.dbs.iter().position(|s| s.dboid == 0)?;
        self.dbs[free] = DbSlot { dboid, extension: Extension::Unknown, woken: false, hold_until: 0 };
        Some(&mut self.dbs[free])
    }
}

/// Ask the launcher for a scheduler in `dboid` now. Returns false when the
/// scheduler is not running (library not preloaded).
pub fn wake(dboid: pg_sys::Oid) -> bool {
    if !preloaded() {
        return false;
    }
    let launcher = {
        let mut shared = SHARED.exclusive();
        if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
            slot.woken = true;
            slot.extension = Extension::Unknown;
        }
        shared.launcher_pid
    };
    if launcher > 0 {
        // SAFETY: SIGUSR1 sets a background worker's latch (its handler in
        // both connected and unconnected workers); at worst the pid is stale
        // and the launcher's once-a-second poll picks the request up.
        unsafe {
            libc::kill(launcher, libc::SIGUSR1);
        }
    }
    true
}

/// A scheduler reports what it found in its database.
pub fn report_extension(dboid: pg_sys::Oid, extension: Extension) {
    if !preloaded() {
        return;
    }
    let mut shared = SHARED.exclusive();
    if let Some(slot) = shared.slot_mut(dboid.to_u32()) {
        slot.extension = extension;
    }
}
