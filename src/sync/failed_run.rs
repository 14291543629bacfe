//! Recording a failed run although its transaction rolls back.
//!
//! `crm_sync.sync()` raises an ERROR when a stream fails, which aborts the
//! caller's transaction, and with it anything written to crm_sync.runs. So
//! the failed run is handed to a short-lived dynamic background worker, which
//! inserts it in a transaction of its own. The row travels through a dynamic
//! shared memory segment; the backend waits until the worker has finished.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

use crate::catalog::{insert_run, RunRecord};

/// Insert `run` in its own transaction. Best effort: if no worker can be
/// started (max_worker_processes reached), the failure is logged instead.
pub fn record(run: &RunRecord) {
    let payload = match serde_json::to_vec(run) {
        Ok(p) => p,
        Err(_) => return,
    };
    let dbname = unsafe {
        let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    // SAFETY: the segment is created, filled and detached here; the worker
    // attaches by handle while we wait for it to exit.
    unsafe {
        let seg = pg_sys::dsm_create(payload.len() + 8, 0);
        let addr = pg_sys::dsm_segment_address(seg) as *mut u8;
        std::ptr::copy_nonoverlapping((payload.len() as u64).to_le_bytes().as_ptr(), addr, 8);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), addr.add(8), payload.len());
        let handle = pg_sys::dsm_segment_handle(seg);
        let worker = BackgroundWorkerBuilder::new("pg_crm_sync run recorder")
            .set_type("pg_crm_sync run recorder")
            .set_library("pg_crm_sync")
            .set_function("crm_sync_record_run")
            .set_argument(Some(pg_sys::Datum::from(handle as usize)))
            .set_extra(&dbname)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            .set_notify_pid(pg_sys::MyProcPid)
            .load_dynamic();
        match worker {
            Ok(w) => {
                if w.wait_for_shutdown().is_err() {
                    pgrx::warning!("pg_crm_sync: the worker recording run {} did not finish", run.run_id);
                }
            }
            Err(_) => pgrx::warning!(
                "pg_crm_sync: could not start a background worker to record failed run {} (raise max_worker_processes)",
                run.run_id
            ),
        }
        pg_sys::dsm_detach(seg);
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn crm_sync_record_run(arg: pg_sys::Datum) {
    let handle = arg.value() as pg_sys::dsm_handle;
    // SAFETY: the launching backend keeps the segment alive until we exit.
    let payload = unsafe {
        let seg = pg_sys::dsm_attach(handle);
        if seg.is_null() {
            return;
        }
        let addr = pg_sys::dsm_segment_address(seg) as *const u8;
        let mut len = [0u8; 8];
        std::ptr::copy_nonoverlapping(addr, len.as_mut_ptr(), 8);
        let len = u64::from_le_bytes(len) as usize;
        let bytes = std::slice::from_raw_parts(addr.add(8), len).to_vec();
        pg_sys::dsm_detach(seg);
        bytes
    };
    let Ok(run) = serde_json::from_slice::<RunRecord>(&payload) else {
        return;
    };
    let dbname = BackgroundWorker::get_extra().to_owned();
    BackgroundWorker::connect_worker_to_spi(Some(&dbname), None);
    BackgroundWorker::transaction(|| {
        crate::txn::pin_search_path();
        insert_run(&run)
    });
}
