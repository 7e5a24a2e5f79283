//! The built-in scheduler (pg_cron's job model, run by our own background
//! workers):
//!
//! - `cron`: schedule parsing and next-fire times (pure Rust);
//! - `launcher`: one static worker that starts a scheduler for every database
//!   where the extension is installed;
//! - `database`: the per-database scheduler loop;
//! - `runner`: the dynamic worker that runs one job, as its owner, at top level;
//! - `shared`: the shared memory they coordinate through;
//! - `hooks`: DROP DATABASE stops our workers in that database first;
//! - `sql`: the SQL-callable functions (schedule validation, wake-up, settings).

pub mod cron;
pub mod database;
pub mod hooks;
pub mod launcher;
pub mod runner;
pub mod shared;
pub mod sql;

use pgrx::prelude::*;

/// From `_PG_init`: shared memory and the launcher, when preloading.
pub fn init() {
    shared::init();
    if shared::preloaded() {
        hooks::install();
    }
    launcher::register();
}

extension_sql_file!(
    "../../sql/scheduler.sql",
    name = "scheduler",
    requires = ["automation_schema", "runtime", "monitoring", sql::automation::job_cache_invalidate]
);
