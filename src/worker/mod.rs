//! Background syncs' processes: the launcher ([`launcher`]) and the job
//! workers it starts ([`job`]). What a worker runs is the sync path
//! (`crate::sync::job`); this module owns only their lifecycle: start,
//! signals, claiming a job, recovering a job whose worker died.
//!
//! A job worker syncs the job's streams one after another. Each stream's
//! run commits every batch with its checkpoint, so a worker that dies
//! resumes, in its next attempt, from its last batch. Jobs are rows in
//! crm_sync.jobs; nothing about them lives only in memory.

mod job;
mod launcher;

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

/// Register the launcher; called from `_PG_init` while preloading.
pub fn register_launcher() {
    BackgroundWorkerBuilder::new("pg_crm_sync launcher")
        .set_type("pg_crm_sync launcher")
        .set_library("pg_crm_sync")
        .set_function("crm_sync_launcher_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Cancel the current statement of worker `pid`, if it is one of ours.
pub fn signal_worker(pid: i32) {
    let _ = Spi::run_with_args(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity
          WHERE pid = $1 AND backend_type = 'pg_crm_sync worker'",
        &[pid.into()],
    );
}
