//! The SQL API of background syncs: `sync_async`, `cancel`, `wait` and the
//! rows behind the `crm_sync.progress` view. Workers live in `crate::worker`.

use std::time::{Duration, Instant};

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use crate::catalog::NO_SOURCE_HINT;
use crate::errors::fail as raise;
use crate::worker::signal_worker;
use crate::{gucs, shmem};

fn current_database() -> String {
    // SAFETY: a connected backend always has a database.
    unsafe {
        let p = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// Raise unless background syncs can run for this database: the library is
/// preloaded and this is the database its launcher serves.
#[pg_extern(name = "_check_background")]
pub fn check_background() {
    if !shmem::available() {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "background syncs need pg_crm_sync in shared_preload_libraries".into(),
            Some(&format!(
                "Add pg_crm_sync to shared_preload_libraries in postgresql.conf, set crm_sync.database = '{}', and restart PostgreSQL. crm_sync.sync() works without it.",
                current_database()
            )),
        );
    }
    let here = current_database();
    let served = gucs::database();
    if here != served {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("background syncs run in database \"{served}\" (crm_sync.database), not in \"{here}\""),
            Some(&format!(
                "Set crm_sync.database = '{here}' in postgresql.conf and restart PostgreSQL, or queue the job in \"{served}\"."
            )),
        );
    }
}

/// Queue a sync of one stream (or every enabled stream) of `source` for a
/// background worker; returns the job id at once.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
pub fn sync_async(
    source: &str,
    stream: default!(Option<&str>, "NULL"),
    full_refresh: default!(bool, false),
    if_running: default!(&str, "'wait'"),
) -> i64 {
    if !matches!(if_running, "wait" | "skip") {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("if_running must be 'wait' or 'skip', not '{if_running}'"),
            Some("'wait' queues the job until the other sync of the stream ends; 'skip' ends it at once as skipped."),
        );
    }
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM crm_sync.sources WHERE name = $1)",
        &[source.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !exists {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("source \"{source}\" does not exist"),
            Some(NO_SOURCE_HINT),
        );
    }
    if let Some(st) = stream {
        let known = Spi::get_one_with_args::<bool>(
            "SELECT EXISTS (SELECT 1 FROM crm_sync.streams WHERE source = $1 AND stream = $2)",
            &[source.into(), st.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if !known {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("source \"{source}\": stream \"{st}\" does not exist"),
                Some(&format!(
                    "See SELECT stream FROM crm_sync.streams WHERE source = '{source}'."
                )),
            );
        }
    }
    check_background();
    let id = Spi::get_one_with_args::<i64>(
        "INSERT INTO crm_sync.jobs (source, stream, full_refresh, if_running, queued_by)
         VALUES ($1, $2, $3, $4, $5) RETURNING job_id",
        &[
            source.into(),
            stream.into(),
            full_refresh.into(),
            if_running.into(),
            // The job runs only while this role may sync.
            super::access::caller_name().into(),
        ],
    )
    .ok()
    .flatten()
    .expect("insert into crm_sync.jobs");
    wake_on_commit();
    id
}

/// Wake the launcher when this transaction commits (before, it would not
/// see the job).
fn wake_on_commit() {
    pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Commit, shmem::wake_launcher);
}

/// Stop a queued or running job. True if it was queued or running; a
/// running job stops within about a second and ends `cancelled`.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
pub fn cancel(job_id: i64) -> bool {
    let row: Option<(Option<String>, Option<i32>)> = Spi::connect_mut(|c| {
        let t = c
            .update(
                "SELECT status, worker_pid FROM crm_sync.jobs WHERE job_id = $1 FOR UPDATE",
                Some(1),
                &[job_id.into()],
            )
            .ok()?;
        if t.is_empty() {
            return None;
        }
        let r = t.first();
        Some((r.get(1).ok().flatten(), r.get(2).ok().flatten()))
    });
    let (status, pid) = match row {
        Some((Some(s), pid)) => (s, pid),
        _ => raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("job {job_id} does not exist"),
            Some("See SELECT job_id, source, status FROM crm_sync.jobs."),
        ),
    };
    match status.as_str() {
        "queued" => {
            Spi::run_with_args(
                "UPDATE crm_sync.jobs SET status = 'cancelled', cancel_requested = true,
                        finished_at = clock_timestamp(), detail = 'cancelled before it started'
                  WHERE job_id = $1",
                &[job_id.into()],
            )
            .expect("update crm_sync.jobs");
            true
        }
        "running" => {
            Spi::run_with_args(
                "UPDATE crm_sync.jobs SET cancel_requested = true WHERE job_id = $1",
                &[job_id.into()],
            )
            .expect("update crm_sync.jobs");
            // The worker also looks at cancel_requested at every batch, and
            // the launcher signals it again if it had no pid yet.
            if let Some(pid) = pid {
                signal_worker(pid);
            }
            wake_on_commit();
            true
        }
        _ => false,
    }
}

/// Block until job `job_id` ends (or `timeout` passes) and return its
/// status.
#[pg_extern]
#[search_path(pg_catalog, pg_temp)]
pub fn wait(job_id: i64, timeout: default!(Interval, "'1 hour'")) -> String {
    // SAFETY: reads a global of this backend.
    if unsafe { pg_sys::XactIsoLevel } >= pg_sys::XACT_REPEATABLE_READ as i32 {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "crm_sync.wait() cannot see a job change in a REPEATABLE READ or SERIALIZABLE transaction".into(),
            Some("Call it in autocommit mode or a READ COMMITTED transaction."),
        );
    }
    let own = Spi::get_one_with_args::<bool>(
        "SELECT xmin = xid(pg_current_xact_id_if_assigned()) FROM crm_sync.jobs WHERE job_id = $1",
        &[job_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if own {
        raise(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("job {job_id} was queued in this transaction, so no worker can see it yet"),
            Some("Commit first, then call crm_sync.wait() (in autocommit mode, call sync_async and wait in two statements)."),
        );
    }
    let micros = timeout.as_micros().max(0) as u64;
    let deadline = Instant::now() + Duration::from_micros(micros);
    loop {
        let status = Spi::get_one_with_args::<String>(
            "SELECT status FROM crm_sync.jobs WHERE job_id = $1",
            &[job_id.into()],
        )
        .ok()
        .flatten();
        let Some(status) = status else {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("job {job_id} does not exist"),
                Some("See SELECT job_id, source, status FROM crm_sync.jobs."),
            )
        };
        if !matches!(status.as_str(), "queued" | "running") || Instant::now() >= deadline {
            return status;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        sleep_interruptibly(left.min(Duration::from_millis(100)));
    }
}

/// Sleep on this backend's latch, acting on cancel and statement_timeout.
fn sleep_interruptibly(d: Duration) {
    // SAFETY: the standard latch wait of a backend.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            d.as_millis() as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

/// The rows of `crm_sync.progress`.
#[pg_extern(name = "_progress")]
#[allow(clippy::type_complexity)]
pub fn progress() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(job_id, Option<i64>),
        name!(run_id, i64),
        name!(source, String),
        name!(stream, String),
        name!(mode, String),
        name!(started_at, Option<TimestampWithTimeZone>),
        name!(records, i64),
        name!(pages, i64),
        name!(bytes, i64),
        name!(api_calls, i64),
        name!(total, Option<i64>),
        name!(updated_at, Option<TimestampWithTimeZone>),
    ),
> {
    let rows: Vec<_> = shmem::snapshot()
        .into_iter()
        .map(|s| {
            (
                s.pid,
                (s.job_id != 0).then_some(s.job_id),
                s.run_id,
                s.source(),
                s.stream(),
                if s.full { "full" } else { "incremental" }.to_owned(),
                ts(s.started_us),
                s.records,
                s.pages,
                s.bytes,
                s.api_calls,
                (s.total >= 0).then_some(s.total),
                ts(s.updated_us),
            )
        })
        .collect();
    TableIterator::new(rows)
}

fn ts(epoch_us: i64) -> Option<TimestampWithTimeZone> {
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    TimestampWithTimeZone::try_from(epoch_us - PG_EPOCH_OFFSET_US).ok()
}
