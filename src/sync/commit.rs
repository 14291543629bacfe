//! The one difference between a foreground and a background sync: when
//! what a run writes is committed.

use pgrx::prelude::*;

use crate::catalog::{self, Checkpoint};
use crate::errors;
use crate::txn;

/// When a stream's run commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// With the caller's transaction (`crm_sync.sync()`): the stream runs
    /// in a subtransaction; rows, watermark and run row commit together, or
    /// nothing of the stream is kept.
    WithCaller,
    /// Every batch, with its checkpoint (a background job): a run that dies
    /// keeps what it committed and the next run resumes from there.
    EveryBatch { job_id: i64 },
}

impl Commit {
    /// The background job the run belongs to.
    pub fn job_id(self) -> Option<i64> {
        match self {
            Commit::WithCaller => None,
            Commit::EveryBatch { job_id } => Some(job_id),
        }
    }

    /// A background run commits what it has done so far (its plan, the
    /// landing table's DDL: readers of the table never wait for the long
    /// part); a foreground one leaves that to its caller.
    pub fn step(self) {
        if let Commit::EveryBatch { .. } = self {
            txn::commit_and_continue();
        }
    }

    /// For a background run: from here until the guard drops, a cancel
    /// waits ([`txn::hold_cancel`]), so what records the run's end is not
    /// rolled back by a cancel signalled again (`crm_sync.cancel()` and the
    /// launcher each signal). A foreground run's cancel acts at once.
    pub fn hold_cancel(self) -> Option<txn::CancelHeld> {
        matches!(self, Commit::EveryBatch { .. }).then(txn::hold_cancel)
    }

    /// A batch and everything before it is written: a background run
    /// stores `checkpoint` and commits, unless its job was cancelled.
    /// Returns whether it committed.
    pub fn after_batch(self, checkpoint: impl FnOnce() -> Checkpoint) -> bool {
        let Commit::EveryBatch { job_id } = self else {
            return false;
        };
        let mut c = checkpoint();
        c.job_id = Some(job_id);
        catalog::save_checkpoint(&c);
        if cancel_requested(job_id) {
            errors::fail(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                format!("job {job_id} was cancelled with crm_sync.cancel()"),
                None,
            );
        }
        txn::commit_and_continue();
        true
    }
}

/// Whether `crm_sync.cancel()` asked job `job_id` to stop.
pub(super) fn cancel_requested(job_id: i64) -> bool {
    Spi::get_one_with_args::<bool>(
        "SELECT cancel_requested FROM crm_sync.jobs WHERE job_id = $1",
        &[job_id.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}
