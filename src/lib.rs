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
        sql_api::sources::provider_streams
    ]
);
pgrx::extension_sql_file!("../sql/model.sql", name = "model", requires = ["jobs"]);
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

pgrx::extension_sql!(
    r#"
REVOKE EXECUTE ON FUNCTION crm_sync.sync(text, text, boolean) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION crm_sync.discover(text, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION crm_sync.discover(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION crm_sync._check_source(text, text, jsonb, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION crm_sync.sync_async(text, text, boolean, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION crm_sync.cancel(bigint) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION crm_sync.merge(boolean) FROM PUBLIC;
COMMENT ON FUNCTION crm_sync.merge(boolean) IS
    'Merge what the syncs landed since the last merge into the unified model (schema crm); full => true re-reads every landing row and resolves every identity again, with the same result. Runs by itself after each sync (crm_sync.merge_after_sync).';
COMMENT ON FUNCTION crm_sync.sync_async(text, text, boolean, text) IS
    'Queue a sync of one stream (or every enabled stream) for a background worker; returns the job id at once. if_running: ''wait'' (default) runs it after another sync of the same stream ends, ''skip'' ends it as skipped. See crm_sync.jobs and crm_sync.progress.';
COMMENT ON FUNCTION crm_sync.cancel(bigint) IS
    'Stop a queued or running job (a running one within about a second; rows of batches already committed stay, and the next run resumes from there). True if the job was queued or running.';
COMMENT ON FUNCTION crm_sync.wait(bigint, interval) IS
    'Wait until a job ends and return its status; after timeout, return its status then (queued or running).';
COMMENT ON FUNCTION crm_sync.sync(text, text, boolean) IS
    'Sync one stream (or every enabled stream) of a source in this transaction; returns one row per stream. Rows and watermark commit together.';
COMMENT ON FUNCTION crm_sync.discover(text, text) IS
    'The fields of a stream''s CRM object (or of any object, by its CRM name), the column type each lands as, and whether it is synced.';
COMMENT ON FUNCTION crm_sync.discover(text) IS
    'The objects of a source''s CRM account that can be synced, and the stream that syncs each.';
"#,
    name = "grants",
    finalize
);
