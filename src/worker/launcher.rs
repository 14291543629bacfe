//! The launcher: a static background worker, registered when the library
//! is in `shared_preload_libraries`. It connects to `crm_sync.database` and,
//! about every second (or at once when `sync_async` wakes it):
//! - puts jobs whose worker died (crash, kill, restart) back in the queue,
//!   recording the interrupted run, or fails them after 3 attempts (ends
//!   them cancelled if their cancel was asked for);
//! - queues the jobs of due `crm_sync.schedules`;
//! - starts a dynamic worker for each queued job that does not touch a
//!   stream another job is syncing, up to `crm_sync.max_workers`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::{gucs, shmem, txn};

/// A job whose worker stopped this many times fails instead of resuming.
const MAX_ATTEMPTS: i32 = 3;

struct Launcher {
    /// Workers this launcher started, by job.
    workers: HashMap<i64, DynamicBackgroundWorker>,
    /// Jobs whose worker was already sent a cancel.
    signalled: HashSet<i64>,
    /// Where the workers' handles live. Postgres allocates a handle in the
    /// current memory context, which is the transaction's in a tick: its
    /// end freed the handle under the map, and a later status read saw
    /// reused memory (a running job taken for interrupted, or a crash).
    /// Reset whenever the map is empty.
    handles: pg_sys::MemoryContext,
}

impl Launcher {
    fn new() -> Self {
        // SAFETY: a child of TopMemoryContext, which lives as long as the
        // process; the name is a static string.
        let handles = unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::TopMemoryContext,
                c"pg_crm_sync worker handles".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            )
        };
        Launcher {
            workers: HashMap::new(),
            signalled: HashSet::new(),
            handles,
        }
    }

    /// Drop handles of workers that exited (all of them with `all`), and
    /// free their memory once none is left.
    fn forget_workers(&mut self, all: bool) {
        self.workers
            .retain(|_, w| !all && !matches!(w.pid(), Err(BackgroundWorkerStatus::Stopped)));
        if self.workers.is_empty() {
            // SAFETY: no handle allocated in it is referenced any more.
            unsafe { pg_sys::MemoryContextReset(self.handles) };
        }
    }
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn crm_sync_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    txn::begin();
    txn::pin_search_path();
    txn::commit();
    shmem::set_launcher_latch(true);
    crate::report::log!("pg_crm_sync launcher started for database \"{db}\"");
    let mut state = Launcher::new();
    show_settings();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a worker to reload its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            show_settings();
        }
        // Before the transaction's snapshot: a worker seen stopped here
        // committed how its job ended before it, so the tick reads that.
        state.forget_workers(false);
        txn::begin();
        tick(&mut state);
        txn::commit();
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
    shmem::set_launcher_latch(false);
}

/// Show the settings the launcher goes by in its `pg_stat_activity.query`,
/// so that a DBA (or a test) sees when a reload has reached it.
fn show_settings() {
    let text = format!(
        "pg_crm_sync launcher: crm_sync.max_workers = {}",
        gucs::MAX_WORKERS.get()
    );
    let text = std::ffi::CString::new(text).expect("no NUL in the settings line");
    // SAFETY: called on the launcher's main thread; the text is copied.
    unsafe { pg_sys::pgstat_report_activity(pg_sys::BackendState::STATE_IDLE, text.as_ptr()) };
}

fn tick(state: &mut Launcher) {
    let installed = Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_crm_sync')
            AND to_regclass('crm_sync.jobs') IS NOT NULL",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !installed {
        state.forget_workers(true);
        return;
    }

    let running = running_jobs();
    for job in &running {
        let ours = state.workers.contains_key(&job.job_id);
        if !ours && !worker_alive(job.worker_pid) {
            interrupted(job);
        }
    }
    // A cancel that came before the worker had told its pid.
    for job in running.iter().filter(|j| j.cancel_requested) {
        if let Some(pid) = job.worker_pid {
            if state.signalled.insert(job.job_id) {
                super::signal_worker(pid);
            }
        }
    }
    queue_due_schedules();
    start_jobs(state);
}

struct RunningJob {
    job_id: i64,
    source: String,
    stream: Option<String>,
    worker_pid: Option<i32>,
    cancel_requested: bool,
}

fn running_jobs() -> Vec<RunningJob> {
    Spi::connect(|c| {
        c.select(
            "SELECT job_id, source, stream, worker_pid, cancel_requested
               FROM crm_sync.jobs WHERE status = 'running' ORDER BY job_id",
            None,
            &[],
        )
        .expect("read crm_sync.jobs")
        .map(|r| RunningJob {
            job_id: r.get(1).ok().flatten().unwrap_or_default(),
            source: r.get(2).ok().flatten().unwrap_or_default(),
            stream: r.get(3).ok().flatten(),
            worker_pid: r.get(4).ok().flatten(),
            cancel_requested: r.get(5).ok().flatten().unwrap_or(false),
        })
        .collect()
    })
}

/// Whether `pid` is a job worker of this cluster.
fn worker_alive(pid: Option<i32>) -> bool {
    let Some(pid) = pid else { return false };
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_type = 'pg_crm_sync worker')",
        &[pid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The worker of `job` stopped without finishing it (the server crashed or
/// restarted, or the process was killed). Record the run it was in, then
/// queue the job again to resume from its checkpoint, or fail it, or (its
/// cancel was asked for) end it cancelled.
fn interrupted(job: &RunningJob) {
    // The tick read the job in its snapshot; the worker may have ended the
    // job (or a cancel come) since. Lock the row and read it as it is now.
    let now: Option<(i32, bool)> = Spi::connect_mut(|c| {
        let t = c
            .update(
                "SELECT attempts, cancel_requested FROM crm_sync.jobs
                  WHERE job_id = $1 AND status = 'running' FOR UPDATE",
                Some(1),
                &[job.job_id.into()],
            )
            .expect("lock an interrupted job");
        if t.is_empty() {
            return None;
        }
        let r = t.first();
        Some((
            r.get(1).ok().flatten().unwrap_or_default(),
            r.get(2).ok().flatten().unwrap_or(false),
        ))
    });
    let Some((attempts, cancel_requested)) = now else {
        return;
    };
    Spi::run_with_args(
        "WITH k AS (
            SELECT * FROM crm_sync.checkpoints k
             WHERE k.job_id = $1 AND NOT EXISTS (SELECT 1 FROM crm_sync.runs r WHERE r.run_id = k.run_id)),
         r AS (
            INSERT INTO crm_sync.runs (run_id, source, stream, mode, status, started_at, finished_at,
                                       records, api_calls, error, error_sqlstate)
            SELECT run_id, source, stream, mode, 'failed', started_at, updated_at, records, api_calls,
                   format('interrupted: the worker of job %s stopped (server crash, restart or kill) after committing %s records; the next run resumes from its checkpoint', $1, records),
                   '57P02'
              FROM k
            RETURNING run_id, records)
         UPDATE crm_sync.jobs j
            SET run_ids = j.run_ids || coalesce((SELECT array_agg(run_id ORDER BY run_id) FROM r), '{}'),
                records = j.records + coalesce((SELECT sum(records) FROM r), 0)
          WHERE j.job_id = $1",
        &[job.job_id.into()],
    )
    .expect("record an interrupted run");
    // How the job goes on: its statement, what it does, and the log line.
    let (sql, what, outcome) = if cancel_requested {
        // Its cancel was asked for: it ends here, not in another attempt
        // that would only end it.
        (
            "UPDATE crm_sync.jobs
                SET status = 'cancelled', finished_at = now(), worker_pid = NULL, error_sqlstate = '57014',
                    error = format('job %s was cancelled with crm_sync.cancel(); its worker stopped (server crash, restart or kill) before it ended the run, which is recorded as interrupted', job_id),
                    detail = 'cancelled with crm_sync.cancel()'
              WHERE job_id = $1",
            "cancel an interrupted job",
            format!("({}): its worker stopped after the job was cancelled; marked cancelled", job.source),
        )
    } else if attempts >= MAX_ATTEMPTS {
        (
            "UPDATE crm_sync.jobs
                SET status = 'failed', finished_at = now(), worker_pid = NULL, error_sqlstate = '57P02',
                    error = format('job %s: its worker stopped %s times (server crash, restart or kill); giving up', job_id, attempts),
                    detail = 'see the server log for why the workers stopped; queue it again with crm_sync.sync_async()'
              WHERE job_id = $1",
            "fail an interrupted job",
            format!("({}): its worker stopped {attempts} times; marked failed", job.source),
        )
    } else {
        (
            "UPDATE crm_sync.jobs
                SET status = 'queued', worker_pid = NULL,
                    detail = format('interrupted: its worker stopped (server crash, restart or kill) during attempt %s; queued again to resume from the checkpoint', attempts)
              WHERE job_id = $1",
            "queue an interrupted job again",
            format!(
                "({}.{}): its worker stopped; queued again to resume from its checkpoint",
                job.source,
                job.stream.as_deref().unwrap_or("*")
            ),
        )
    };
    Spi::run_with_args(sql, &[job.job_id.into()]).expect(what);
    crate::report::log!("pg_crm_sync: job {} {outcome}", job.job_id);
}

fn queue_due_schedules() {
    Spi::run(
        "WITH due AS (
            SELECT source, stream, every, next_run_at, owner FROM crm_sync.schedules
             WHERE next_run_at <= now() FOR UPDATE),
         q AS (
            INSERT INTO crm_sync.jobs (source, stream, if_running, scheduled_by, queued_by)
            SELECT source, stream, 'skip', 'schedule', owner FROM due
            RETURNING job_id, source)
         UPDATE crm_sync.schedules s
            SET last_job_id = q.job_id,
                next_run_at = due.next_run_at + due.every *
                    (floor(extract(epoch FROM now() - due.next_run_at) / extract(epoch FROM due.every)) + 1)
           FROM q, due
          WHERE s.source = q.source AND due.source = q.source",
    )
    .expect("queue scheduled jobs");
}

struct QueuedJob {
    job_id: i64,
    source: String,
    stream: Option<String>,
    if_running: String,
}

fn overlaps(
    a_source: &str,
    a_stream: Option<&str>,
    b_source: &str,
    b_stream: Option<&str>,
) -> bool {
    a_source == b_source
        && match (a_stream, b_stream) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

fn start_jobs(state: &mut Launcher) {
    let queued: Vec<QueuedJob> = Spi::connect(|c| {
        c.select(
            "SELECT job_id, source, stream, if_running FROM crm_sync.jobs
              WHERE status = 'queued' ORDER BY job_id LIMIT 1000",
            None,
            &[],
        )
        .expect("read crm_sync.jobs")
        .map(|r| QueuedJob {
            job_id: r.get(1).ok().flatten().unwrap_or_default(),
            source: r.get(2).ok().flatten().unwrap_or_default(),
            stream: r.get(3).ok().flatten(),
            if_running: r.get(4).ok().flatten().unwrap_or_default(),
        })
        .collect()
    });
    if queued.is_empty() {
        return;
    }
    let mut busy: Vec<(i64, String, Option<String>)> = running_jobs()
        .into_iter()
        .map(|j| (j.job_id, j.source, j.stream))
        .collect();
    let max = gucs::MAX_WORKERS.get().max(0) as usize;
    let (db_oid, owner_oid) = ids();
    for q in queued {
        let blocker = busy
            .iter()
            .find(|(_, src, st)| overlaps(src, st.as_deref(), &q.source, q.stream.as_deref()))
            .map(|(id, src, st)| (*id, format!("{src}.{}", st.as_deref().unwrap_or("*"))));
        if let Some((other, what)) = blocker {
            if q.if_running == "skip" {
                Spi::run_with_args(
                    "UPDATE crm_sync.jobs SET status = 'skipped', finished_at = clock_timestamp(),
                            detail = format('skipped: job %s was already syncing %s', $2::bigint, $3::text)
                      WHERE job_id = $1",
                    &[q.job_id.into(), other.into(), what.as_str().into()],
                )
                .expect("skip a job");
            } else {
                Spi::run_with_args(
                    "UPDATE crm_sync.jobs SET detail = format('waiting for job %s, which is syncing %s', $2::bigint, $3::text)
                      WHERE job_id = $1 AND detail IS DISTINCT FROM format('waiting for job %s, which is syncing %s', $2::bigint, $3::text)",
                    &[q.job_id.into(), other.into(), what.as_str().into()],
                )
                .expect("note a waiting job");
            }
            continue;
        }
        if busy.len() >= max {
            continue;
        }
        // Lock the row before the worker exists: its claim (FOR UPDATE)
        // then waits for this transaction, and sees the job running. A
        // worker that read the row first saw it still queued and left,
        // and the job was later taken for interrupted.
        let still_queued = Spi::connect_mut(|c| {
            c.update(
                "SELECT status = 'queued' FROM crm_sync.jobs WHERE job_id = $1 FOR UPDATE SKIP LOCKED",
                Some(1),
                &[q.job_id.into()],
            )
            .expect("lock a job")
            .first()
            .get_one::<bool>()
            .ok()
            .flatten()
            .unwrap_or(false)
        });
        if !still_queued {
            // Cancelled or deleted since it was read, or another session
            // holds the row (a cancel in an open transaction, say): the
            // next tick looks again rather than wait.
            continue;
        }
        // SAFETY: the handle is allocated in a context that outlives the
        // transaction (see `Launcher::handles`).
        let started = unsafe {
            PgMemoryContexts::For(state.handles)
                .switch_to(|_| start_worker(q.job_id, db_oid, owner_oid))
        };
        match started {
            Some(w) => {
                // The clock, not this transaction's start: a job that waited
                // for another is started after seeing it end, which may be
                // after this transaction began (its start read 0.4 ms
                // before the other's end).
                Spi::run_with_args(
                    "UPDATE crm_sync.jobs
                        SET status = 'running', started_at = coalesce(started_at, clock_timestamp()),
                            attempts = attempts + 1, worker_pid = NULL,
                            detail = CASE WHEN detail LIKE 'interrupted:%' THEN detail END
                      WHERE job_id = $1",
                    &[q.job_id.into()],
                )
                .expect("start a job");
                state.workers.insert(q.job_id, w);
                busy.push((q.job_id, q.source, q.stream));
            }
            None => {
                Spi::run_with_args(
                    "UPDATE crm_sync.jobs SET detail = 'waiting for a free background worker slot (raise max_worker_processes)'
                      WHERE job_id = $1",
                    &[q.job_id.into()],
                )
                .expect("note a waiting job");
                break;
            }
        }
    }
}

/// This database and the extension's owner, whom workers connect as.
fn ids() -> (pg_sys::Oid, pg_sys::Oid) {
    let owner = Spi::get_one::<pg_sys::Oid>(
        "SELECT extowner FROM pg_extension WHERE extname = 'pg_crm_sync'",
    )
    .ok()
    .flatten()
    .unwrap_or(pg_sys::InvalidOid);
    // SAFETY: a connected worker always has a database.
    (unsafe { pg_sys::MyDatabaseId }, owner)
}

fn start_worker(
    job_id: i64,
    db: pg_sys::Oid,
    owner: pg_sys::Oid,
) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("pg_crm_sync job {job_id}"))
        .set_type("pg_crm_sync worker")
        .set_library("pg_crm_sync")
        .set_function("crm_sync_job_main")
        .set_argument(Some(pg_sys::Datum::from(job_id)))
        .set_extra(&format!("{} {}", db.to_u32(), owner.to_u32()))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        // SAFETY: reads this process's pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}
