//! A background job's work: sync its streams one after another, each under
//! the stream's session lock, committing every batch. The worker that runs
//! it (`crate::worker`) only claims the job and records how it ended.

use pgrx::prelude::*;

use crate::catalog::{self, StreamRow};
use crate::errors::Context;
use crate::{locks, txn};

use super::commit::cancel_requested;
use super::{load, sync_stream, Commit};

/// A job as its worker claimed it.
pub struct Job {
    pub job_id: i64,
    pub source: String,
    pub stream: Option<String>,
    pub full_refresh: bool,
    /// `wait` or `skip`: what to do when another session syncs a stream.
    pub if_running: String,
    /// The role that queued it (or owns the schedule that did).
    pub queued_by: String,
}

/// How a job ended: its status, error and SQLSTATE.
pub struct JobEnd {
    pub status: &'static str,
    pub error: Option<String>,
    pub sqlstate: Option<String>,
}

/// How one stream of a job went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ended {
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

/// Sync every stream of the job. Runs in a transaction, and leaves one open.
pub fn run(job: &Job) -> JobEnd {
    if !may_sync(&job.queued_by) {
        return JobEnd {
            status: "failed",
            error: Some(format!(
                "job {} was queued by role \"{}\", which may no longer sync (it lost the operate access level, or the role is gone); nothing was synced",
                job.job_id, job.queued_by
            )),
            sqlstate: Some("42501".into()),
        };
    }
    let (src, cfg, ctx) = load(&job.source);
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
        return JobEnd {
            status: "failed",
            error: Some(what),
            sqlstate: Some("42704".into()),
        };
    }
    let mut first_error: Option<(String, String)> = None;
    let mut ended = Vec::new();
    for s in chosen {
        // A stream shorter than a batch never looks at cancel_requested,
        // and a cancel can come between streams.
        if cancel_requested(job.job_id) {
            first_error.get_or_insert((
                format!(
                    "job {} was cancelled with crm_sync.cancel() before stream \"{}\"",
                    job.job_id, s.stream
                ),
                "57014".to_owned(),
            ));
            ended.push(Ended::Cancelled);
            break;
        }
        set_application_name(job, &s.stream);
        let (e, err) = run_stream(job, &src, &cfg, s, &ctx);
        if let (Ended::Failed | Ended::Cancelled, Some(err)) = (e, err) {
            first_error.get_or_insert(err);
        }
        ended.push(e);
        if e == Ended::Cancelled {
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
    let (error, sqlstate) = first_error.unzip();
    JobEnd {
        status,
        error,
        sqlstate,
    }
}

/// One stream of the job, under its session lock: the job waits for
/// another session syncing it, or skips it (`if_running`).
fn run_stream(
    job: &Job,
    src: &catalog::SourceRow,
    cfg: &crm_sync_core::connectors::Configured,
    s: &StreamRow,
    ctx: &Context,
) -> (Ended, Option<(String, String)>) {
    let what = format!("{}.{}", src.name, s.stream);
    if !locks::try_stream_for_session(&src.name, &s.stream) {
        if job.if_running == "skip" {
            note(
                job.job_id,
                &format!("skipped {what}: another session was syncing it"),
            );
            txn::commit_and_continue();
            return (Ended::Skipped, None);
        }
        note(
            job.job_id,
            &format!("waiting for another session syncing {what}"),
        );
        txn::commit_and_continue();
        locks::stream_for_session(&src.name, &s.stream);
        note(job.job_id, "");
    }
    let commit = Commit::EveryBatch { job_id: job.job_id };
    let out = match sync_stream(src, cfg, s, job.full_refresh, commit, ctx) {
        Ok(done) => {
            if let Some(w) = done.merge_warning {
                note(job.job_id, &w);
            }
            (Ended::Succeeded, None)
        }
        Err(f) => {
            crate::report::log!("pg_crm_sync: job {}: {}", job.job_id, f.message);
            let ended = if f.status == "cancelled" {
                Ended::Cancelled
            } else {
                Ended::Failed
            };
            let sqlstate = f.sqlstate();
            (ended, Some((f.message, sqlstate)))
        }
    };
    // A cancel signalled again waits for the next stream, not here.
    let held = txn::hold_cancel();
    locks::release_stream(&src.name, &s.stream);
    txn::commit_and_continue();
    drop(held);
    out
}

/// Whether `role` may sync in the foreground (`crm_sync.sync()`, the
/// operate level): a job runs with the rights of the role that queued it,
/// checked when it runs, so a role that lost its grant no longer runs its
/// schedules and pg_cron jobs.
fn may_sync(role: &str) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)
                     THEN pg_catalog.has_function_privilege($1::name,
                              'crm_sync.sync(text, text, boolean)'::regprocedure, 'EXECUTE')
                     ELSE false END",
        &[role.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Name the worker in pg_stat_activity after the job and the stream it
/// syncs.
pub fn set_application_name(job: &Job, stream: &str) {
    let name = format!("pg_crm_sync job {}: {}.{}", job.job_id, job.source, stream);
    Spi::run_with_args(
        "SELECT set_config('application_name', $1, false)",
        &[name.as_str().into()],
    )
    .expect("set application_name");
}

fn note(job_id: i64, detail: &str) {
    Spi::run_with_args(
        "UPDATE crm_sync.jobs SET detail = nullif($2, '') WHERE job_id = $1",
        &[job_id.into(), detail.into()],
    )
    .expect("update crm_sync.jobs");
}
