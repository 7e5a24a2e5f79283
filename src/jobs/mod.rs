//! Jobs: the built-in scheduler's domain (pg_cron's job model).
//!
//! - `cron`: schedule parsing and next-fire times (pure Rust);
//! - `plan`: the timetable of a database's jobs and what happens at a fire
//!   (overlap, retries, priorities, outcomes; pure Rust);
//! - `schedule`: the jobs duty of a database's worker (worker/database.rs):
//!   it loads the jobs, asks for due runs through the process layer's run
//!   slots, and records every run (`runs`: the SQL it writes with);
//! - `sql`: the SQL-callable functions (schedule validation, wake-up,
//!   settings).
//!
//! The processes that run all this are in worker/.

pub mod cron;
pub mod plan;
pub mod runs;
pub mod schedule;
pub mod sql;

use pgrx::prelude::*;

extension_sql_file!(
    "../../sql/scheduler.sql",
    name = "scheduler",
    requires = ["automation_schema", "runtime", "monitoring", sql::automation::job_cache_invalidate]
);
