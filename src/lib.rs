//! automation_ext: a PostgreSQL extension that turns a database into a
//! workflow and data-pipeline engine.
//!
//! This file only wires modules together; each concern lives in its own
//! module (the README's "Layout" section is the map).

use pgrx::prelude::*;

mod audit;
mod catalog;
mod civil;
mod compat;
mod discovery;
mod engine;
mod error;
mod jobs;
mod kept;
mod maintenance;
mod monitoring;
mod notify;
mod queue;
mod runtime;
mod schema;
mod settings;
mod subxact;
mod success_rate;
mod tenancy;
#[cfg(any(test, feature = "pg_test"))]
mod test_support;
mod timeseries;
mod toplevel;
mod triggers;
mod worker;

::pgrx::pg_module_magic!(name, version);

/// Called once per backend when the library is loaded, either at postmaster
/// start (`shared_preload_libraries`) or lazily on first use of one of our
/// functions. Everything registered here must be safe in both cases: GUCs may
/// be defined either way, background workers only during preload.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::register();
    if settings::preloaded() {
        queue::init_shared_memory();
        tenancy::init_shared_memory();
    }
    worker::init(worker::Wiring { duties, serve_steps: engine::steps::serve });
}

/// The duties of a database's worker, in the order of its turns: the jobs
/// first (fires are the most time-critical), then SQL steps and deadlines,
/// then recording finished queue executions, then the trigger inbox.
fn duties(dboid: u32) -> Vec<Box<dyn worker::Duty>> {
    vec![
        Box::new(jobs::schedule::Scheduler::new(dboid)),
        Box::new(engine::dispatch::SqlSteps::default()),
        Box::new(queue::record::Recorder::default()),
        Box::new(triggers::Inbox),
    ]
}

/// Required by `cargo pgrx test`: the options of the throw-away test cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    /// The `#[pg_test]` cluster runs *without* `shared_preload_libraries`, so
    /// the in-backend tests also prove the library loads lazily; the SQL
    /// regression suite (pg_test/) runs against a cluster that preloads it.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
