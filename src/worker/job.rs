//! A job worker: a dynamic background worker the launcher starts for one
//! job. It connects as the extension's owner, claims the job, runs it
//! (`crate::sync::job`) and records how it ended.

use std::panic::{catch_unwind, AssertUnwindSafe};

use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::errors::{Context, Failure};
use crate::sync::job::{self, Job, JobEnd};
use crate::txn;

// Postgres' own signal handlers (pgrx wraps the Rust bindings, which a
// signal handler must not be).
extern "C-unwind" {
    #[link_name = "die"]
    fn pg_die(signal: std::ffi::c_int);
    #[link_name = "StatementCancelHandler"]
    fn pg_statement_cancel_handler(signal: std::ffi::c_int);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn crm_sync_job_main(arg: pg_sys::Datum) {
    // SIGTERM (shutdown, pg_terminate_backend) ends the worker at the next
    // interrupt check; SIGINT (crm_sync.cancel) cancels like a query's.
    // SAFETY: installing Postgres' own handlers before unblocking signals.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(pg_die));
        pg_sys::pqsignal(pg_sys::SIGINT as i32, Some(pg_statement_cancel_handler));
        pg_sys::BackgroundWorkerUnblockSignals();
    }
    let job_id = arg.value() as i64;
    let extra = BackgroundWorker::get_extra().to_owned();
    let mut parts = extra.split(' ').map(|p| p.parse::<u32>().unwrap_or(0));
    let db = pg_sys::Oid::from(parts.next().unwrap_or(0));
    let user = pg_sys::Oid::from(parts.next().unwrap_or(0));
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), Some(user));

    txn::begin();
    txn::pin_search_path();
    let Some(job) = claim(job_id) else {
        txn::commit();
        return;
    };
    txn::commit();

    txn::begin();
    let ran = catch_unwind(AssertUnwindSafe(|| job::run(&job)));
    // How the job ended is recorded whatever signal comes now: a cancel
    // waits (and the worker exits), else the job would stay `running` and
    // the launcher would run it again as if its worker had crashed.
    let _held = txn::hold_cancel();
    let end = match ran {
        Ok(end) => end,
        Err(panic) => {
            txn::abort();
            txn::begin();
            let ctx = Context {
                source: Some(job.source.clone()),
                stream: job.stream.clone(),
                secrets: crate::sync::secrets_of(&job.source),
            };
            let f = Failure::of_panic(panic, &ctx);
            JobEnd {
                status: f.status,
                sqlstate: Some(f.sqlstate()),
                error: Some(f.message),
            }
        }
    };
    let JobEnd {
        status,
        error,
        sqlstate,
    } = end;
    // The clock, not the transaction's start (`now()`): the job that waits
    // for this one is started once this commits, and its start must not
    // read earlier than this end.
    Spi::run_with_args(
        "UPDATE crm_sync.jobs
            SET status = $2, finished_at = clock_timestamp(), error = $3, error_sqlstate = $4,
                detail = CASE WHEN $2 = 'cancelled' THEN 'cancelled with crm_sync.cancel()' ELSE detail END
          WHERE job_id = $1",
        &[job_id.into(), status.into(), error.into(), sqlstate.into()],
    )
    .expect("finish crm_sync.jobs");
    txn::commit();
}

/// Take the job row (the launcher marked it running); None if it is not
/// ours to run any more.
fn claim(job_id: i64) -> Option<Job> {
    let row = Spi::connect_mut(|c| {
        let t = c
            .update(
                "SELECT source, stream, full_refresh, if_running, status, cancel_requested, queued_by
                   FROM crm_sync.jobs WHERE job_id = $1 FOR UPDATE",
                Some(1),
                &[job_id.into()],
            )
            .ok()?;
        if t.is_empty() {
            return None;
        }
        let r = t.first();
        let status: String = r.get(5).ok().flatten().unwrap_or_default();
        let cancel: bool = r.get(6).ok().flatten().unwrap_or(false);
        Some((
            Job {
                job_id,
                source: r.get(1).ok().flatten().unwrap_or_default(),
                stream: r.get(2).ok().flatten(),
                full_refresh: r.get(3).ok().flatten().unwrap_or(false),
                if_running: r.get(4).ok().flatten().unwrap_or_default(),
                queued_by: r.get(7).ok().flatten().unwrap_or_default(),
            },
            status,
            cancel,
        ))
    })?;
    let (job, status, cancel) = row;
    if status != "running" {
        return None;
    }
    Spi::run_with_args(
        "UPDATE crm_sync.jobs SET worker_pid = pg_backend_pid() WHERE job_id = $1",
        &[job_id.into()],
    )
    .expect("claim crm_sync.jobs");
    job::set_application_name(&job, job.stream.as_deref().unwrap_or("*"));
    if cancel {
        Spi::run_with_args(
            "UPDATE crm_sync.jobs SET status = 'cancelled', finished_at = clock_timestamp(),
                    detail = 'cancelled with crm_sync.cancel()' WHERE job_id = $1",
            &[job_id.into()],
        )
        .expect("cancel crm_sync.jobs");
        return None;
    }
    Some(job)
}
