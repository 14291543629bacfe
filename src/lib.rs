//! pg_crm_sync: keep PostgreSQL tables in sync with CRMs.
//!
//! This crate is the Postgres side; ARCHITECTURE.md draws the whole. From
//! the top: `sql_api` (the SQL functions, thin) and `worker` (background
//! processes) call `sync` (the one sync path) and `merge` (the unified
//! model), which stand on `catalog`, `landing`, `locks`, `txn`, `errors`,
//! `gucs` and `shmem`. The engine, connectors, HTTP layer and the model's
//! rules live in `crates/core` (`crm_sync_core`), which has no pgrx in it.

use pgrx::prelude::*;

mod catalog;
mod errors;
mod gucs;
mod landing;
mod locks;
mod merge;
mod own_txn;
mod report;
mod secrets;
mod shmem;
mod sql_api;
mod sync;
mod txn;
mod worker;

::pgrx::pg_module_magic!();

pgrx::extension_sql_file!("../sql/bootstrap.sql", name = "bootstrap", bootstrap);
pgrx::extension_sql_file!(
    "../sql/sources.sql",
    name = "sources",
    requires = [
        sql_api::sources::check_source,
        sql_api::sources::provider_streams,
        sql_api::sources::object_refusal,
        sql_api::sources::check_credential_refs,
        sql_api::sources::host_change
    ]
);
pgrx::extension_sql_file!(
    "../sql/specs.sql",
    name = "specs",
    requires = [
        "sources",
        sql_api::specs::check_spec,
        sql_api::specs::builtin_specs,
        sql_api::specs::spec_origins
    ]
);
pgrx::extension_sql_file!(
    "../sql/model.sql",
    name = "model",
    requires = ["jobs", "specs", sql_api::model::source_record_id]
);
pgrx::extension_sql_file!(
    "../sql/jobs.sql",
    name = "jobs",
    requires = [
        "sources",
        sql_api::jobs::progress,
        sql_api::jobs::check_background
    ]
);
pgrx::extension_sql_file!(
    "../sql/status.sql",
    name = "status",
    requires = [
        "jobs",
        "model",
        sql_api::status::watermark_time,
        sql_api::status::cron_next_local,
        sql_api::status::sync_calls
    ]
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: reads a postmaster global.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        shmem::init();
        worker::register_launcher();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

pgrx::extension_sql_file!(
    "../sql/access.sql",
    name = "access",
    requires = [sql_api::model::check_mapping],
    finalize
);
