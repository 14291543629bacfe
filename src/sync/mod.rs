//! The one in-database sync path: plan → read pages → write batches →
//! commit → record the run → merge into the unified model, for both
//! callers. `crm_sync.sync()` runs each stream in a subtransaction of the
//! caller's transaction; a background job commits every batch with its
//! checkpoint. The [`Commit`] value they pass is the only difference.
//!
//! - [`plan`] — full or incremental, from which watermark or checkpoint;
//! - [`read`] — the connector's pages through the engine into the landing
//!   table (`crate::landing`), committing as [`Commit`] says;
//! - [`record`] — the run's row in crm_sync.runs, and the watermark;
//! - [`job`] — a background job's streams, one after another.

mod commit;
mod fields;
pub mod job;
mod plan;
mod read;
mod reconcile;
mod record;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use pgrx::prelude::*;

use crate::catalog::{self, RunRecord, SourceRow, StreamRow, NO_SOURCE_HINT};
use crate::errors::{self, Context, Failure, OrRaise};
use crate::{gucs, locks, merge, secrets, txn};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::http::address;
use crm_sync_core::CrmError;

pub use commit::Commit;
pub use fields::{fetch_fields, select_fields};
pub use reconcile::{reconcile_stream, Reconciled};

/// A source with its checked settings, and the context of its errors;
/// raises if it does not exist or its settings no longer check out.
pub fn load(source: &str) -> (SourceRow, Configured, Context) {
    // A rotated token an earlier call could only store in a transaction
    // that may have rolled back: store it on its own first.
    crate::secrets::retry_pending(false);
    let mut ctx = Context {
        source: Some(source.to_owned()),
        ..Default::default()
    };
    let Some(src) = catalog::load_source(source) else {
        errors::fail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("source \"{source}\" does not exist"),
            Some(NO_SOURCE_HINT),
        )
    };
    ctx.secrets = errors::secret_strings(&src.credentials);
    let credentials = secrets::resolve(&src.credentials)
        .map_err(|e| {
            e.with_hint("Fix the source with crm_sync.alter_source(), or the server's environment.")
        })
        .or_raise(&ctx);
    ctx.secrets = errors::secret_strings(&credentials);
    let mut cfg = configure(&src.provider, src.spec.as_ref(), &src.options, &credentials)
        .map_err(|e| e.with_hint("Fix the source with crm_sync.alter_source()."))
        .or_raise(&ctx);
    cfg.config.http.allowed_networks = address::parse_networks(&gucs::allowed_networks())
        .map_err(|e| {
            CrmError::config(format!("crm_sync.allowed_networks: {e}")).with_hint(
                "A superuser sets it to comma-separated CIDRs, such as '10.0.0.0/8, fd00::/8'.",
            )
        })
        .or_raise(&ctx);
    (src, cfg, ctx)
}

/// A source's provider and its checked settings: a built-in connector, or
/// the `rest` connector running `spec` (the spec registered under the
/// provider's name, `catalog::load_spec`).
pub fn configure(
    provider: &str,
    spec: Option<&serde_json::Value>,
    options: &serde_json::Value,
    credentials: &serde_json::Value,
) -> Result<Configured, CrmError> {
    let insecure = gucs::ALLOW_INSECURE_HTTP.get();
    match spec {
        Some(spec) => connectors::configure_spec(provider, spec, options, credentials, insecure),
        None => connectors::configure(provider, options, credentials, insecure).map_err(|e| {
            if connectors::find(provider).is_err() {
                e.with_hint(format!(
                    "Providers: {}, and the specs in crm_sync.specs and crm_sync.builtin_specs (register one with crm_sync.register_spec()).",
                    connectors::PROVIDERS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
                ))
            } else {
                e
            }
        }),
    }
}

/// The secrets of a source (its credentials, references read), to scrub
/// from what a failure reports where `load`'s context is not at hand: a
/// worker's last resort after a panic.
pub fn secrets_of(source: &str) -> Vec<String> {
    let Some(src) = catalog::load_source(source) else {
        return vec![];
    };
    let mut out = errors::secret_strings(&src.credentials);
    if let Ok(read) = secrets::resolve(&src.credentials) {
        out.extend(errors::secret_strings(&read));
    }
    out
}

/// A stream's run that succeeded.
pub struct Synced {
    pub run: RunRecord,
    pub duration: Duration,
    /// Why the merge after the sync failed (the synced rows are kept),
    /// scrubbed of secrets.
    pub merge_warning: Option<String>,
    /// The reconciliation that followed an incremental run because
    /// `reconcile_every` was due.
    pub reconciled: Option<Reconciled>,
}

/// Sync one stream of `src`. A foreground run ([`Commit::WithCaller`])
/// takes the stream's lock for the caller's transaction (55P03 if another
/// session syncs it); a background job holds the stream's session lock
/// already (see [`job`]). On failure nothing uncommitted is kept, the run
/// is recorded, and the failure is returned for the caller to raise
/// (`Failure::rethrow`) or report.
pub fn sync_stream(
    src: &SourceRow,
    cfg: &Configured,
    s: &StreamRow,
    full_refresh: bool,
    commit: Commit,
    ctx: &Context,
) -> Result<Synced, Box<Failure>> {
    let mut ctx = ctx.clone();
    ctx.stream = Some(s.stream.clone());
    if commit == Commit::WithCaller {
        locks::stream_for_transaction(&src.name, &s.stream, &ctx);
    }
    let plan = plan::plan(&src.name, &s.stream, full_refresh);
    merge::before_sync();
    commit.step();
    let started = Instant::now();
    let progress = read::Progress::default();
    let read = || read::read_stream(src, cfg, s, &plan, &progress, commit);
    let mut done = guarded(src, s, &plan, &progress, commit, &ctx, read)?;
    // Warnings quote CRM values and texts: a secret among them stays out of
    // run history and the WARNINGs.
    for w in done
        .outcome
        .warnings
        .iter_mut()
        .chain(done.warning_samples.iter_mut())
    {
        *w = errors::scrub(w, &ctx.secrets);
    }
    // The CRM's delete log did not reach back to the last run: only a
    // reconciliation finds the deletes it lost.
    let must_reconcile = done.outcome.reconcile_needed.clone();
    if let Some(why) = &must_reconcile {
        let what = if cfg.config.reconcile_every.is_some() {
            "it is reconciled now"
        } else {
            "reconcile_every is off, so run crm_sync.reconcile() for it now"
        };
        let w = format!("{}.{}: {why}; {what}", src.name, s.stream);
        done.warning_samples.push(w.clone());
        done.outcome.warnings.push(w);
    }
    // The rows are read: a cancel now waits until the run is recorded
    // (then it stops the merge, with a warning, or the job's next stream).
    let held = commit.hold_cancel();
    let run = record::succeeded(&src.name, s, &plan, done, commit);
    drop(held);
    let merge_warning = merge::after_sync(&src.name, &s.stream, run.run_id)
        .map(|w| errors::scrub(&w, &ctx.secrets));
    let duration = started.elapsed();
    // Deletes no modification time shows: when due, an incremental run
    // reconciles the stream's ids too (its own run row).
    let reconciled = if plan.mode == "incremental"
        && cfg.provider.reconciles
        && cfg.config.reconcile_every.is_some()
        && (must_reconcile.is_some()
            || reconcile::due(&src.name, &s.stream, cfg.config.reconcile_every))
    {
        commit.step();
        // Its failure (recorded as a failed reconcile run) leaves the
        // sync's rows in place.
        match reconcile_stream(src, cfg, s, commit, &ctx) {
            Ok(r) => Some(r),
            // A job cancelled while it reconciled stops there (its sync's
            // run and rows are committed; the reconcile run is recorded).
            Err(f) if f.status == "cancelled" && commit.job_id().is_some() => return Err(f),
            Err(f) => {
                crate::report::warning!(
                    "{}.{}: the reconciliation after the sync failed: {}; the synced rows are kept; see crm_sync.runs",
                    src.name,
                    s.stream,
                    f.message
                );
                None
            }
        }
    } else {
        None
    };
    Ok(Synced {
        run,
        duration,
        merge_warning,
        reconciled,
    })
}

/// Run a stream's `work` as `commit` says: in a subtransaction of the
/// caller's transaction, or in a background job's current transaction.
/// On failure nothing uncommitted is kept, the run is recorded as failed,
/// and the failure is returned.
fn guarded<T>(
    src: &SourceRow,
    s: &StreamRow,
    plan: &plan::Plan,
    progress: &read::Progress,
    commit: Commit,
    ctx: &Context,
    work: impl FnOnce() -> Result<T, CrmError>,
) -> Result<T, Box<Failure>> {
    let result = match commit {
        Commit::WithCaller => txn::subtransaction(work, |r| r.is_ok()),
        Commit::EveryBatch { .. } => catch_unwind(AssertUnwindSafe(work)),
    };
    let failure = match result {
        Ok(Ok(out)) => return Ok(out),
        Ok(Err(e)) => Failure::of_error(&e, ctx),
        Err(panic) => Failure::of_panic(panic, ctx),
    };
    match commit {
        Commit::WithCaller => record::failed(&src.name, s, plan, progress, &failure, commit),
        Commit::EveryBatch { .. } => {
            // The last batch's transaction is lost; the committed ones
            // stay, and so does the run's row: a cancel signalled again
            // (crm_sync.cancel() and the launcher each signal) waits until
            // it is committed, and one that stopped this run is spent.
            let held = txn::hold_cancel();
            txn::abort();
            txn::begin();
            record::failed(&src.name, s, plan, progress, &failure, commit);
            txn::commit_and_continue();
            if failure.status == "cancelled" {
                txn::forget_cancel(&held);
            }
        }
    }
    Err(Box::new(failure))
}
