//! Writes that must outlive the caller's transaction: a failed run (its
//! ERROR aborts the transaction, and with it anything written to
//! crm_sync.runs), and a refresh token the CRM rotated (the one stored no
//! longer works, whatever becomes of the sync that received it).
//!
//! Each write is handed to a short-lived dynamic background worker, which
//! makes it in a transaction of its own. The task travels through a dynamic
//! shared memory segment (length, JSON, then a status byte the worker sets);
//! the backend waits until the worker has finished and reads the status.

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::prelude::*;

use crate::catalog::{insert_run, update_credential, RunRecord};

#[derive(serde::Serialize, serde::Deserialize)]
enum Task {
    Run(RunRecord),
    /// Set `credentials.{key}` of `source`, if it is stored as a string
    /// (and, with `expect`, still holds that value: a retry never puts back
    /// a token another session has replaced since).
    Credential {
        source: String,
        key: String,
        value: String,
        expect: Option<String>,
    },
}

/// The worker set the status byte: the write committed.
const DONE: u8 = 1;

/// Insert `run` in its own transaction. Best effort: if no worker can be
/// started (max_worker_processes reached), the failure is logged instead.
pub fn record(run: &RunRecord) {
    if !in_own_transaction(&Task::Run(run.clone())) {
        crate::report::warning!(
            "pg_crm_sync: failed run {} could not be recorded in a transaction of its own (is max_worker_processes reached?)",
            run.run_id
        );
    }
}

/// Store a credential the CRM rotated in its own transaction, so that it
/// survives whatever happens to the caller's. False when it could not be
/// (the source's row is not committed yet, it is locked, the key is given by
/// reference, or no worker could start): the caller stores it in its own
/// transaction instead.
pub fn store_credential(source: &str, key: &str, value: &str) -> bool {
    in_own_transaction(&Task::Credential {
        source: source.to_owned(),
        key: key.to_owned(),
        value: value.to_owned(),
        expect: None,
    })
}

/// As [`store_credential`], only where the stored value is still `old`
/// (or already `value`). True once that was checked in a committed
/// transaction of its own.
pub fn store_credential_over(source: &str, key: &str, value: &str, old: Option<&str>) -> bool {
    in_own_transaction(&Task::Credential {
        source: source.to_owned(),
        key: key.to_owned(),
        value: value.to_owned(),
        expect: Some(old.unwrap_or_default().to_owned()),
    })
}

fn in_own_transaction(task: &Task) -> bool {
    let Ok(payload) = serde_json::to_vec(task) else {
        return false;
    };
    let dbname = unsafe {
        let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    // SAFETY: the segment is created, filled and detached here; the worker
    // attaches by handle while we wait for it to exit.
    unsafe {
        let size = payload.len() + 9;
        let seg = pg_sys::dsm_create(size, 0);
        let addr = pg_sys::dsm_segment_address(seg) as *mut u8;
        std::ptr::copy_nonoverlapping((payload.len() as u64).to_le_bytes().as_ptr(), addr, 8);
        std::ptr::copy_nonoverlapping(payload.as_ptr(), addr.add(8), payload.len());
        *addr.add(8 + payload.len()) = 0;
        let handle = pg_sys::dsm_segment_handle(seg);
        let worker = BackgroundWorkerBuilder::new("pg_crm_sync own-transaction writer")
            .set_type("pg_crm_sync writer")
            .set_library("pg_crm_sync")
            .set_function("crm_sync_record_run")
            .set_argument(Some(pg_sys::Datum::from(handle as usize)))
            .set_extra(&dbname)
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(None)
            .set_notify_pid(pg_sys::MyProcPid)
            .load_dynamic();
        let done = match worker {
            Ok(w) => w.wait_for_shutdown().is_ok() && *addr.add(8 + payload.len()) == DONE,
            Err(_) => false,
        };
        // Nothing of a secret stays in shared memory.
        std::ptr::write_bytes(addr, 0, size);
        pg_sys::dsm_detach(seg);
        done
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn crm_sync_record_run(arg: pg_sys::Datum) {
    let handle = arg.value() as pg_sys::dsm_handle;
    // SAFETY: the launching backend keeps the segment alive until we exit.
    let (payload, status) = unsafe {
        let seg = pg_sys::dsm_attach(handle);
        if seg.is_null() {
            return;
        }
        let addr = pg_sys::dsm_segment_address(seg) as *mut u8;
        let mut len = [0u8; 8];
        std::ptr::copy_nonoverlapping(addr, len.as_mut_ptr(), 8);
        let len = u64::from_le_bytes(len) as usize;
        let bytes = std::slice::from_raw_parts(addr.add(8), len).to_vec();
        (bytes, (seg, addr.add(8 + len)))
    };
    let Ok(task) = serde_json::from_slice::<Task>(&payload) else {
        unsafe { pg_sys::dsm_detach(status.0) };
        return;
    };
    let dbname = BackgroundWorker::get_extra().to_owned();
    BackgroundWorker::connect_worker_to_spi(Some(&dbname), None);
    let done = BackgroundWorker::transaction(|| {
        crate::txn::pin_search_path();
        match &task {
            Task::Run(run) => {
                insert_run(run);
                true
            }
            Task::Credential {
                source,
                key,
                value,
                expect,
            } => {
                // Never wait long on a row the caller's transaction holds:
                // the caller then stores it itself.
                Spi::run("SET LOCAL lock_timeout = '2s'").ok();
                match expect {
                    None => update_credential(source, key, value, None),
                    // Done once checked: a newer value stays.
                    Some(old) => {
                        update_credential(source, key, value, Some(old));
                        true
                    }
                }
            }
        }
    });
    // SAFETY: as above; the backend reads the byte after we exit.
    unsafe {
        if done {
            *status.1 = DONE;
        }
        pg_sys::dsm_detach(status.0);
    }
}
