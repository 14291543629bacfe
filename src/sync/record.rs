//! Recording a run in crm_sync.runs (and, for a background run, on its
//! job's row): a run that succeeded with its watermark, in the transaction
//! that wrote its last rows; a run that failed where it survives the
//! rollback.

use pgrx::prelude::*;

use crate::catalog::{self, RunRecord, StreamRow};
use crate::errors::Failure;

use super::commit::Commit;
use super::plan::Plan;
use super::read::{Done, Progress};
use crate::own_txn;

/// The run row of a stream's run, before it ends.
pub fn run_record(src: &str, s: &StreamRow, plan: &Plan, progress: &Progress) -> RunRecord {
    RunRecord {
        run_id: plan.run_id,
        source: src.to_owned(),
        stream: s.stream.clone(),
        mode: plan.mode.to_owned(),
        status: "succeeded".to_owned(),
        started_at_us: plan.started_us,
        finished_at_us: catalog::now_us(),
        records_read: progress.read.get() as i64,
        records: progress.records.get() as i64,
        records_unchanged: 0,
        records_deleted: 0,
        bytes: progress.bytes.get() as i64,
        api_calls: progress.api_calls.get() as i64,
        warnings: 0,
        warning_samples: vec![],
        watermark: None,
        error: None,
        error_sqlstate: None,
    }
}

/// Store what a successful run did: its watermark, its run row; its
/// checkpoint is spent. In the transaction that wrote the (last) rows.
pub fn succeeded(src: &str, s: &StreamRow, plan: &Plan, done: Done, commit: Commit) -> RunRecord {
    let mut run = run_record(src, s, plan, &Progress::default());
    run.records_read = done.outcome.records_received as i64;
    run.records = done.outcome.stats.upserted as i64;
    run.records_unchanged = done.outcome.stats.unchanged as i64;
    run.records_deleted = done.outcome.stats.deleted as i64;
    run.warnings = (done.outcome.stats.warnings + done.outcome.warnings.len() as u64) as i64;
    run.warning_samples = done.warning_samples;
    run.watermark = done.outcome.watermark.clone();
    run.api_calls = done.api_calls as i64;
    run.bytes = done.bytes as i64;
    if let Some(w) = &run.watermark {
        catalog::save_watermark(src, &s.stream, w, plan.run_id);
    }
    // Deletes are looked for from where the CRM's delete log was read
    // through, or, after a stream's first full run, from when it began
    // (what was deleted before is not landed live).
    match done.outcome.deletes_covered {
        Some(t) => catalog::save_deletes_from(src, &s.stream, t),
        None if plan.mode == "full" && catalog::load_deletes_from(src, &s.stream).is_none() => {
            catalog::save_deletes_from(src, &s.stream, plan.began_us() / 1000)
        }
        None => {}
    }
    catalog::delete_checkpoint(src, &s.stream);
    catalog::insert_run(&run);
    on_job(commit, &run);
    for w in &done.outcome.warnings {
        crate::report::warning!("{}.{}: {}", src, s.stream, w);
    }
    if done.outcome.stats.warnings > 0 {
        crate::report::warning!(
            "{}.{}: {} values did not fit their columns and were kept in _raw only; see crm_sync.runs (run_id {})",
            src,
            s.stream,
            done.outcome.stats.warnings,
            plan.run_id
        );
    }
    run
}

/// Record a run that failed. Called after its writes were rolled back: the
/// caller's whole transaction for a foreground run (so the row goes in
/// through a worker of its own, and no record it wrote is kept), or its
/// last, uncommitted batch for a background run (whose committed batches
/// count).
pub fn failed(
    src: &str,
    s: &StreamRow,
    plan: &Plan,
    progress: &Progress,
    f: &Failure,
    commit: Commit,
) {
    let mut run = run_record(src, s, plan, progress);
    run.status = f.status.to_owned();
    run.error = Some(f.message.clone());
    run.error_sqlstate = Some(f.sqlstate());
    match commit {
        Commit::WithCaller => {
            run.records = 0;
            own_txn::record(&run);
            crate::secrets::retry_pending(true);
        }
        Commit::EveryBatch { .. } => {
            catalog::insert_run(&run);
            on_job(commit, &run);
        }
    }
}

/// Add a background run to its job's row. The row stays locked until the
/// run's transaction commits, merge included: `crm_sync.cancel()` locks
/// the row first, so it waits, and a cancel never interrupts a stream's
/// last commit or the merge after it.
pub(super) fn on_job(commit: Commit, run: &RunRecord) {
    let Some(job_id) = commit.job_id() else {
        return;
    };
    Spi::run_with_args(
        "UPDATE crm_sync.jobs SET run_ids = run_ids || $2, records = records + $3 WHERE job_id = $1",
        &[job_id.into(), run.run_id.into(), run.records.into()],
    )
    .expect("update crm_sync.jobs");
}
