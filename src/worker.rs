//! Background syncs: the launcher and the job workers.
//!
//! The launcher is a static background worker, registered when the library
//! is in `shared_preload_libraries`. It connects to `crm_sync.database` and,
//! about every second (or at once when `sync_async` wakes it):
//! - puts jobs whose worker died (crash, kill, restart) back in the queue,
//!   recording the interrupted run, or fails them after 3 attempts;
//! - queues the jobs of due `crm_sync.schedules`;
//! - starts a dynamic worker for each queued job that does not touch a
//!   stream another job is syncing, up to `crm_sync.max_workers`.
//!
//! A job worker syncs the job's streams one after another. Each stream's
//! run commits every batch with its checkpoint (see `sql_api::sync`), so a
//! worker that dies resumes, in its next attempt, from its last batch.
//! Jobs are rows in crm_sync.jobs; nothing about them lives only in memory.

use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, BgWorkerStartTime,
    DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::catalog::{self, StreamRow};
use crate::errors::{self, Context};
use crate::gucs;
use crate::shmem;
use crate::sql_api::sync::{self as fg, Progress};

/// A job whose worker stopped this many times fails instead of resuming.
const MAX_ATTEMPTS: i32 = 3;

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

// ---------------------------------------------------------------- transactions

fn begin() {
    // SAFETY: called from a worker's main loop, outside any transaction.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
}

fn commit() {
    // SAFETY: pairs with begin().
    unsafe {
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
}

fn abort() {
    // SAFETY: after an error was caught; releases locks and snapshots.
    unsafe { pg_sys::AbortCurrentTransaction() };
}

/// Commit what a background run has written and go on in a new transaction.
pub fn commit_and_continue() {
    commit();
    begin();
}

/// Commit a batch and its checkpoint, unless the job was cancelled.
pub fn commit_batch(job_id: i64) {
    let cancelled = Spi::get_one_with_args::<bool>(
        "SELECT cancel_requested FROM crm_sync.jobs WHERE job_id = $1",
        &[job_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if cancelled {
        errors::fail(
            PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
            format!("job {job_id} was cancelled with crm_sync.cancel()"),
            None,
        );
    }
    commit_and_continue();
}

// ---------------------------------------------------------------- launcher

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
    shmem::set_launcher_latch(true);
    log!("pg_crm_sync launcher started for database \"{db}\"");
    let mut state = Launcher::new();
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a worker to reload its settings.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        begin();
        tick(&mut state);
        commit();
        if !BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
            break;
        }
    }
    shmem::set_launcher_latch(false);
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
    state.forget_workers(false);

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
                crate::jobs::signal_worker(pid);
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
    attempts: i32,
    cancel_requested: bool,
}

fn running_jobs() -> Vec<RunningJob> {
    Spi::connect(|c| {
        c.select(
            "SELECT job_id, source, stream, worker_pid, attempts, cancel_requested
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
            attempts: r.get(5).ok().flatten().unwrap_or_default(),
            cancel_requested: r.get(6).ok().flatten().unwrap_or(false),
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
/// queue the job again to resume from its checkpoint, or fail it.
fn interrupted(job: &RunningJob) {
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
    if job.attempts >= MAX_ATTEMPTS {
        Spi::run_with_args(
            "UPDATE crm_sync.jobs
                SET status = 'failed', finished_at = now(), worker_pid = NULL, error_sqlstate = '57P02',
                    error = format('job %s: its worker stopped %s times (server crash, restart or kill); giving up', job_id, attempts),
                    detail = 'see the server log for why the workers stopped; queue it again with crm_sync.sync_async()'
              WHERE job_id = $1",
            &[job.job_id.into()],
        )
        .expect("fail an interrupted job");
        log!(
            "pg_crm_sync: job {} ({}): its worker stopped {} times; marked failed",
            job.job_id,
            job.source,
            job.attempts
        );
    } else {
        Spi::run_with_args(
            "UPDATE crm_sync.jobs
                SET status = 'queued', worker_pid = NULL,
                    detail = format('interrupted: its worker stopped (server crash, restart or kill) during attempt %s; queued again to resume from the checkpoint', attempts)
              WHERE job_id = $1",
            &[job.job_id.into()],
        )
        .expect("queue an interrupted job again");
        log!(
            "pg_crm_sync: job {} ({}.{}): its worker stopped; queued again to resume from its checkpoint",
            job.job_id,
            job.source,
            job.stream.as_deref().unwrap_or("*")
        );
    }
}

fn queue_due_schedules() {
    Spi::run(
        "WITH due AS (
            SELECT source, stream, every, next_run_at FROM crm_sync.schedules
             WHERE next_run_at <= now() FOR UPDATE),
         q AS (
            INSERT INTO crm_sync.jobs (source, stream, if_running, scheduled_by, queued_by)
            SELECT source, stream, 'skip', 'schedule', 'crm_sync.schedule' FROM due
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
                    "UPDATE crm_sync.jobs SET status = 'skipped', finished_at = now(),
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
                Spi::run_with_args(
                    "UPDATE crm_sync.jobs
                        SET status = 'running', started_at = coalesce(started_at, now()),
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

// ---------------------------------------------------------------- job worker

// Postgres' own signal handlers (pgrx wraps the Rust bindings, which a
// signal handler must not be).
extern "C-unwind" {
    #[link_name = "die"]
    fn pg_die(signal: std::ffi::c_int);
    #[link_name = "StatementCancelHandler"]
    fn pg_statement_cancel_handler(signal: std::ffi::c_int);
}

struct Job {
    job_id: i64,
    source: String,
    stream: Option<String>,
    full_refresh: bool,
    if_running: String,
}

/// How one stream of a job went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
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

    begin();
    let Some(job) = claim(job_id) else {
        commit();
        return;
    };
    commit();

    begin();
    let outcome = catch_unwind(AssertUnwindSafe(|| run_job(&job)));
    let (status, error, code) = match outcome {
        Ok(r) => r,
        Err(panic) => {
            abort();
            begin();
            let ctx = Context {
                source: Some(job.source.clone()),
                stream: job.stream.clone(),
                secrets: vec![],
            };
            let f = fg::failure(Err(panic), &ctx);
            (
                f.status,
                Some(f.message),
                Some(errors::sqlstate_text(f.code)),
            )
        }
    };
    Spi::run_with_args(
        "UPDATE crm_sync.jobs
            SET status = $2, finished_at = now(), error = $3, error_sqlstate = $4,
                detail = CASE WHEN $2 = 'cancelled' THEN 'cancelled with crm_sync.cancel()' ELSE detail END
          WHERE job_id = $1",
        &[job_id.into(), status.into(), error.into(), code.into()],
    )
    .expect("finish crm_sync.jobs");
    commit();
}

/// Take the job row (the launcher marked it running); None if it is not
/// ours to run any more.
fn claim(job_id: i64) -> Option<Job> {
    let row = Spi::connect_mut(|c| {
        let t = c
            .update(
                "SELECT source, stream, full_refresh, if_running, status, cancel_requested
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
    set_application_name(&job, job.stream.as_deref().unwrap_or("*"));
    if cancel {
        Spi::run_with_args(
            "UPDATE crm_sync.jobs SET status = 'cancelled', finished_at = now(),
                    detail = 'cancelled with crm_sync.cancel()' WHERE job_id = $1",
            &[job_id.into()],
        )
        .expect("cancel crm_sync.jobs");
        return None;
    }
    Some(job)
}

fn set_application_name(job: &Job, stream: &str) {
    let name = format!("pg_crm_sync job {}: {}.{}", job.job_id, job.source, stream);
    Spi::run_with_args(
        "SELECT set_config('application_name', $1, false)",
        &[name.as_str().into()],
    )
    .expect("set application_name");
}

/// Sync every stream of the job; returns the job's status, error and
/// SQLSTATE. Runs in a transaction, and leaves one open.
fn run_job(job: &Job) -> (&'static str, Option<String>, Option<String>) {
    let (src, cfg, ctx) = fg::load(&job.source);
    let streams = catalog::load_streams(&job.source);
    let chosen: Vec<&StreamRow> = match &job.stream {
        Some(name) => streams.iter().filter(|s| &s.stream == name).collect(),
        None => streams.iter().filter(|s| s.enabled).collect(),
    };
    if chosen.is_empty() {
        let what = match &job.stream {
            Some(s) => format!("source \"{}\": stream \"{s}\" does not exist", job.source),
            None => format!("source \"{}\" has no enabled stream", job.source),
        };
        return ("failed", Some(what), Some("42704".into()));
    }
    let mut first_error: Option<(String, String)> = None;
    let mut ended = Vec::new();
    for s in chosen {
        set_application_name(job, &s.stream);
        let mut ctx = ctx.clone();
        ctx.stream = Some(s.stream.clone());
        let e = run_stream(job, &src, &cfg, s, &ctx);
        if let (Ended::Failed | Ended::Cancelled, Some(err)) = (e.0, e.1) {
            first_error.get_or_insert(err);
        }
        ended.push(e.0);
        if e.0 == Ended::Cancelled {
            break;
        }
    }
    let status = if ended.contains(&Ended::Cancelled) {
        "cancelled"
    } else if ended.contains(&Ended::Failed) {
        "failed"
    } else if ended.iter().all(|e| *e == Ended::Skipped) {
        "skipped"
    } else {
        "succeeded"
    };
    let (error, code) = match first_error {
        Some((m, c)) => (Some(m), Some(c)),
        None => (None, None),
    };
    (status, error, code)
}

/// One stream's run, in steps that each commit.
fn run_stream(
    job: &Job,
    src: &catalog::SourceRow,
    cfg: &crm_sync_core::config::SourceConfig,
    s: &StreamRow,
    ctx: &Context,
) -> (Ended, Option<(String, String)>) {
    let what = format!("{}.{}", src.name, s.stream);
    if !try_lock(&src.name, &s.stream) {
        if job.if_running == "skip" {
            note(
                job.job_id,
                &format!("skipped {what}: another session was syncing it"),
            );
            commit_and_continue();
            return (Ended::Skipped, None);
        }
        note(
            job.job_id,
            &format!("waiting for another session syncing {what}"),
        );
        commit_and_continue();
        lock(&src.name, &s.stream);
        note(job.job_id, "");
    }
    let plan = fg::plan(&src.name, &s.stream, job.full_refresh);
    commit_and_continue();
    let progress = Progress::default();
    let result = catch_unwind(AssertUnwindSafe(|| {
        fg::sync_stream(src, cfg, s, &plan, &progress, Some(job.job_id))
    }));
    let out = match result {
        Ok(Ok(done)) => {
            let run = fg::record_success(&src.name, s, &plan, done);
            add_run(job.job_id, run.run_id, run.records);
            if let Some(w) = crate::merge::after_sync(&src.name, &s.stream, run.run_id) {
                note(job.job_id, &errors::scrub(&w, &ctx.secrets));
            }
            (Ended::Succeeded, None)
        }
        failed => {
            abort();
            begin();
            let f = fg::failure(failed, ctx);
            let mut run = fg::run_record(&src.name, s, &plan, &progress);
            run.status = f.status.to_owned();
            run.error = Some(f.message.clone());
            run.error_sqlstate = Some(errors::sqlstate_text(f.code));
            catalog::insert_run(&run);
            add_run(job.job_id, run.run_id, run.records);
            log!("pg_crm_sync: job {}: {}", job.job_id, f.message);
            let ended = if f.status == "cancelled" {
                Ended::Cancelled
            } else {
                Ended::Failed
            };
            (ended, Some((f.message, errors::sqlstate_text(f.code))))
        }
    };
    unlock(&src.name, &s.stream);
    commit_and_continue();
    out
}

fn add_run(job_id: i64, run_id: i64, records: i64) {
    Spi::run_with_args(
        "UPDATE crm_sync.jobs SET run_ids = run_ids || $2, records = records + $3 WHERE job_id = $1",
        &[job_id.into(), run_id.into(), records.into()],
    )
    .expect("update crm_sync.jobs");
}

fn note(job_id: i64, detail: &str) {
    Spi::run_with_args(
        "UPDATE crm_sync.jobs SET detail = nullif($2, '') WHERE job_id = $1",
        &[job_id.into(), detail.into()],
    )
    .expect("update crm_sync.jobs");
}

const LOCK_KEY: &str = "hashtextextended('crm_sync/' || $1 || '/' || $2, 0)";

/// The same lock `crm_sync.sync()` takes for its transaction, held here
/// for the session: the run commits many times.
fn try_lock(source: &str, stream: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        &format!("SELECT pg_try_advisory_lock({LOCK_KEY})"),
        &[source.into(), stream.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn lock(source: &str, stream: &str) {
    Spi::run_with_args(
        &format!("SELECT pg_advisory_lock({LOCK_KEY})"),
        &[source.into(), stream.into()],
    )
    .expect("wait for the stream's lock");
}

fn unlock(source: &str, stream: &str) {
    let _ = Spi::run_with_args(
        &format!("SELECT pg_advisory_unlock({LOCK_KEY})"),
        &[source.into(), stream.into()],
    );
}
