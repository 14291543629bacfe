//! Reconciliation (`crm_sync.reconcile`, and incremental syncs when
//! `reconcile_every` is due): list the ids the CRM has now, mark landed
//! rows it no longer has as deleted (`_deleted_reason = 'gone'`), and read
//! the records it has that never landed (or landed as deleted). Catches what
//! no modification time shows: GDPR erasures, records purged after the
//! restore window, records an index never returned.
//!
//! The ids stream into `crm_sync.reconcile_ids` a page at a time, so memory
//! stays flat however many records the CRM has; the run's rows are deleted
//! at its end (the table is unlogged: a crash leaves nothing to redo).

use std::time::{Duration, Instant};

use pgrx::prelude::*;

use crate::catalog::{self, RunRecord, SourceRow, StreamRow};
use crate::errors::{Context, Failure};
use crate::landing::{self, SpiSink};
use crate::txn::check_interrupts;
use crate::{locks, merge};
use crm_sync_core::connectors::Configured;
use crm_sync_core::engine::Sink;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::CrmError;

use super::commit::Commit;
use super::plan::Plan;
use super::read::{prepare, Counters, Prepared, Progress};
use super::record;

/// Ids read again per call of the connector's `read_ids`.
const REREAD_PAGE: i64 = 500;

/// What a reconciliation did.
pub struct Reconciled {
    pub run: RunRecord,
    pub duration: Duration,
    /// Why the merge after it failed (the landing rows are kept).
    pub merge_warning: Option<String>,
    /// Rows whose formula values changed (see [`IdSource::refreshed`]).
    pub refreshed: i64,
}

struct Counts {
    seen: i64,
    gone: i64,
    reread: i64,
    refreshed: i64,
}

/// Reconcile one stream of `src`, in the caller's transaction (a
/// subtransaction) or, in a background job, in a transaction of its own.
/// A failure is recorded as a failed `reconcile` run and returned.
pub fn reconcile_stream(
    src: &SourceRow,
    cfg: &Configured,
    s: &StreamRow,
    commit: Commit,
    ctx: &Context,
) -> Result<Reconciled, Box<Failure>> {
    let mut ctx = ctx.clone();
    ctx.stream = Some(s.stream.clone());
    if commit == Commit::WithCaller {
        locks::stream_for_transaction(&src.name, &s.stream, &ctx);
    }
    let plan = Plan {
        watermark: None,
        mode: "reconcile",
        run_id: catalog::next_run_id(),
        started_us: catalog::now_us(),
        resume: None,
    };
    let started = Instant::now();
    let progress = Progress::default();
    let began = crate::catalog::now_us() / 1000;
    let work = || reconcile(src, cfg, s, plan.run_id, &progress);
    let n = super::guarded(src, s, &plan, &progress, commit, &ctx, work)?;
    let held = commit.hold_cancel();
    let mut run = record::run_record(&src.name, s, &plan, &progress);
    run.records_read = n.seen;
    run.records = n.reread + n.refreshed;
    run.records_deleted = n.gone;
    catalog::insert_run(&run);
    // Every delete before the listing began is found: incremental runs
    // look for later ones from here (Salesforce's getDeleted).
    catalog::save_deletes_from(&src.name, &s.stream, began);
    record::on_job(commit, &run);
    drop(held);
    let merge_warning = merge::after_sync(&src.name, &s.stream, run.run_id)
        .map(|w| crate::errors::scrub(&w, &ctx.secrets));
    Ok(Reconciled {
        run,
        duration: started.elapsed(),
        merge_warning,
        refreshed: n.refreshed,
    })
}

/// Whether an incremental sync of the stream should reconcile it now: its
/// last reconciliation (or, before the first, its first successful run)
/// is at least `every` ago.
pub fn due(source: &str, stream: &str, every: Option<Duration>) -> bool {
    let Some(every) = every else {
        return false;
    };
    Spi::get_one_with_args::<bool>(
        "SELECT COALESCE(pg_catalog.max(finished_at) FILTER (WHERE mode = 'reconcile'), pg_catalog.min(finished_at))
                + pg_catalog.make_interval(secs => $3) <= pg_catalog.now()
           FROM crm_sync.runs
          WHERE source = $1 AND stream = $2 AND status = 'succeeded'",
        &[source.into(), stream.into(), every.as_secs_f64().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn reconcile(
    src: &SourceRow,
    cfg: &Configured,
    s: &StreamRow,
    run_id: i64,
    progress: &Progress,
) -> Result<Counts, CrmError> {
    let http = crate::secrets::http_client(&src.name, cfg.config.http.clone())?;
    let _counters = Counters {
        http: &http,
        out: progress,
    };
    let table = format!("{}.{}", landing::qi(&src.name), landing::qi(&s.stream));
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
        &[table.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !exists {
        return Err(CrmError::config(
            "the stream has no landing table yet, so there is nothing to reconcile",
        )
        .with_hint("Sync it first with crm_sync.sync()."));
    }
    let conn = cfg.connect(&http)?;
    // Re-read records are written as a sync writes them.
    let Prepared {
        columns,
        read_fields,
        ..
    } = prepare(cfg, conn.as_ref(), &src.name, s)?;
    let mut sink = SpiSink::new(&src.name, &s.stream, columns, run_id);
    // 1. Every id the CRM has now, into crm_sync.reconcile_ids; with them,
    // the values of the stream's formula fields, refreshed as they come.
    let mut ids = block_on_interruptible(conn.ids(&s.object, &read_fields), &mut check_interrupts)?;
    let mut seen = 0i64;
    let mut refreshed = 0i64;
    while let Some(page) = block_on_interruptible(ids.next_ids(), &mut check_interrupts)? {
        seen += page.len() as i64;
        progress.read.set(seen as u64);
        // The array is made inside the SPI connection, in its memory,
        // which is freed with it: memory stays flat over millions of ids.
        Spi::connect_mut(|c| {
            c.update(
                "INSERT INTO crm_sync.reconcile_ids (run_id, id)
                 SELECT $1, u.id FROM pg_catalog.unnest($2::text[]) AS u(id)
                 ON CONFLICT DO NOTHING",
                None,
                &[run_id.into(), page.into()],
            )
            .map(|_| ())
        })
        .expect("write crm_sync.reconcile_ids");
        let (fields, values) = ids.refreshed();
        refreshed += sink.refresh(&fields, &values, ids.raw_prefix())?;
        check_interrupts();
    }
    drop(ids);
    // An empty listing of a stream with live rows is far likelier a fault
    // (a proxy's empty answer, a token that lost its scope) than every
    // record erased: nothing is marked.
    if seen == 0 {
        let live = Spi::get_one::<i64>(&format!(
            "SELECT pg_catalog.count(*) FROM {table} WHERE _deleted_at IS NULL"
        ))
        .ok()
        .flatten()
        .unwrap_or(0);
        if live > 0 {
            return Err(CrmError::bad_response(format!(
                "the CRM listed no {} records while {live} are landed live; nothing was marked deleted",
                s.object
            ))
            .with_hint("Run crm_sync.reconcile() again later; if the CRM really has none, check that the credentials still see this object."));
        }
    }
    // 2. Landed rows the CRM no longer has.
    let gone = Spi::get_one_with_args::<i64>(
        &format!(
            "WITH g AS (
               UPDATE {table} l
                  SET _deleted_at = pg_catalog.now(), {reason} = 'gone',
                      _synced_at = pg_catalog.now(), _run_id = $1
                WHERE l._deleted_at IS NULL
                  AND NOT EXISTS (SELECT 1 FROM crm_sync.reconcile_ids r
                                   WHERE r.run_id = $1 AND r.id = l.id)
               RETURNING 1)
             SELECT pg_catalog.count(*) FROM g",
            reason = landing::DELETED_REASON
        ),
        &[run_id.into()],
    )
    .expect("mark the records the CRM no longer has")
    .unwrap_or(0);
    // 3. Records the CRM has that never landed, or landed as deleted.
    let mut reread = 0i64;
    let mut after = String::new();
    loop {
        let page: Vec<String> = Spi::connect(|c| {
            c.select(
                &format!(
                    "SELECT r.id FROM crm_sync.reconcile_ids r
                      WHERE r.run_id = $1 AND r.id > $2
                        AND NOT EXISTS (SELECT 1 FROM {table} l
                                         WHERE l.id = r.id AND l._deleted_at IS NULL)
                      ORDER BY r.id LIMIT {REREAD_PAGE}"
                ),
                None,
                &[run_id.into(), after.as_str().into()],
            )
            .expect("find the records that never landed")
            .filter_map(|r| r.get::<String>(1).ok().flatten())
            .collect()
        });
        let Some(last) = page.last() else { break };
        after = last.clone();
        let records = block_on_interruptible(
            conn.read_ids(&s.object, &read_fields, &page),
            &mut check_interrupts,
        )?;
        if !records.is_empty() {
            reread += sink.write(&records)?.upserted as i64;
        }
        if (page.len() as i64) < REREAD_PAGE {
            break;
        }
    }
    Spi::run_with_args(
        "DELETE FROM crm_sync.reconcile_ids WHERE run_id = $1",
        &[run_id.into()],
    )
    .expect("clear crm_sync.reconcile_ids");
    Ok(Counts {
        seen,
        gone,
        reread,
        refreshed,
    })
}
