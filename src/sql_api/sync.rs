//! `crm_sync.sync()` and `crm_sync.discover()`.

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::prelude::*;

use crate::catalog::{self, RunRecord, StreamRow};
use crate::errors::{self, OrRaise};
use crate::landing;
use crate::sync::{self, fetch_fields, select_fields, Commit};
use crate::txn::check_interrupts;

use super::status::watermark_time;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::ErrorKind;

/// Sync one stream, or every enabled stream, of `source` in this transaction.
/// The rows and the new watermark commit together; on any error nothing of
/// the failing stream is kept, the failed run is recorded, and an ERROR names
/// the source and stream.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
pub fn sync(
    source: &str,
    stream: default!(Option<&str>, "NULL"),
    full_refresh: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(stream, String),
        name!(mode, String),
        name!(status, String),
        name!(records_read, i64),
        name!(records_upserted, i64),
        name!(records_unchanged, i64),
        name!(records_deleted, i64),
        name!(api_calls, i64),
        name!(bytes_received, i64),
        name!(warnings, i64),
        name!(duration, Interval),
        name!(watermark, Option<TimestampWithTimeZone>),
        name!(run_id, i64),
    ),
> {
    let (src, cfg, ctx) = sync::load(source);
    let streams = catalog::load_streams(source);
    let chosen = chosen_streams(source, &streams, stream);
    let mut rows = Vec::new();
    for s in chosen {
        let done = match sync::sync_stream(&src, &cfg, s, full_refresh, Commit::WithCaller, &ctx) {
            Ok(done) => done,
            Err(failure) => failure.rethrow.raise(),
        };
        if let Some(w) = &done.merge_warning {
            crate::report::warning!("{}.{}: {}", src.name, s.stream, w);
        }
        rows.push(sync_row(&s.stream, done.run, done.duration));
        if let Some(r) = done.reconciled {
            if let Some(w) = &r.merge_warning {
                crate::report::warning!("{}.{}: {}", src.name, s.stream, w);
            }
            rows.push(sync_row(&s.stream, r.run, r.duration));
        }
    }
    TableIterator::new(rows)
}

/// One row of `crm_sync.sync()`'s result.
type SyncRow = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Interval,
    Option<TimestampWithTimeZone>,
    i64,
);

/// The row of `sync()`'s result for a run of `stream` (a sync, or the
/// reconciliation that followed it).
fn sync_row(stream: &str, run: RunRecord, duration: std::time::Duration) -> SyncRow {
    (
        stream.to_owned(),
        run.mode,
        run.status,
        run.records_read,
        run.records,
        run.records_unchanged,
        run.records_deleted,
        run.api_calls,
        run.bytes,
        run.warnings,
        Interval::from_micros(duration.as_micros() as i64),
        run.watermark.as_deref().and_then(watermark_time),
        run.run_id,
    )
}

/// Reconcile one stream, or every enabled stream, of `source` with the CRM
/// in this transaction: list the ids the CRM has now, mark landed rows it
/// no longer has as deleted (`_deleted_reason = 'gone'`), and read the
/// records it has that never landed. One row per stream.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
pub fn reconcile(
    source: &str,
    stream: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(stream, String),
        name!(mode, String),
        name!(status, String),
        name!(records_seen, i64),
        name!(records_deleted, i64),
        name!(records_reread, i64),
        name!(api_calls, i64),
        name!(duration, Interval),
        name!(run_id, i64),
        name!(records_refreshed, i64),
    ),
> {
    let (src, cfg, ctx) = sync::load(source);
    let streams = catalog::load_streams(source);
    let mut rows = Vec::new();
    for s in chosen_streams(source, &streams, stream) {
        let done = match sync::reconcile_stream(&src, &cfg, s, Commit::WithCaller, &ctx) {
            Ok(done) => done,
            Err(failure) => failure.rethrow.raise(),
        };
        if let Some(w) = &done.merge_warning {
            crate::report::warning!("{}.{}: {}", src.name, s.stream, w);
        }
        let run = done.run;
        rows.push((
            s.stream.clone(),
            run.mode,
            run.status,
            run.records_read,
            run.records_deleted,
            run.records - done.refreshed,
            run.api_calls,
            Interval::from_micros(done.duration.as_micros() as i64),
            run.run_id,
            done.refreshed,
        ));
    }
    TableIterator::new(rows)
}

/// The stream `stream` names (42704 if the source has none of that name),
/// or every enabled stream.
fn chosen_streams<'a>(
    source: &str,
    streams: &'a [StreamRow],
    stream: Option<&str>,
) -> Vec<&'a StreamRow> {
    match stream {
        Some(name) => match streams.iter().find(|s| s.stream == name) {
            Some(s) => vec![s],
            None => {
                let known: Vec<&str> = streams.iter().map(|s| s.stream.as_str()).collect();
                // 42704 (undefined_object), as docs/errors.md says and as
                // sync_async and schedule raise it.
                errors::fail(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    format!("source \"{source}\": stream \"{name}\" does not exist"),
                    Some(&format!("Streams of this source: {}.", known.join(", "))),
                )
            }
        },
        None => streams.iter().filter(|s| s.enabled).collect(),
    }
}

/// The objects of a source's CRM account that can be synced, and the
/// stream (if any) that syncs each.
#[pg_extern(security_definer, name = "discover")]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
pub fn discover_objects(
    source: &str,
) -> TableIterator<
    'static,
    (
        name!(object, String),
        name!(label, String),
        name!(custom, bool),
        name!(stream, Option<String>),
        name!(syncable, bool),
        name!(reason, Option<String>),
    ),
> {
    let (_src, cfg, ctx) = sync::load(source);
    let streams = catalog::load_streams(source);
    let http = crate::secrets::http_client(source, cfg.config.http.clone()).or_raise(&ctx);
    let conn = cfg.connect(&http).or_raise(&ctx);
    let objects = block_on_interruptible(conn.objects(), &mut check_interrupts).or_raise(&ctx);
    let rows: Vec<_> = objects
        .into_iter()
        .map(|o| {
            let stream = streams
                .iter()
                .find(|s| s.object == o.name)
                .map(|s| s.stream.clone());
            (
                o.name,
                o.label,
                o.custom,
                stream,
                o.unsyncable.is_none(),
                o.unsyncable,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The fields of a stream's object (or of any object, by its CRM name), what
/// they land as, and whether they are synced now.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
pub fn discover(
    source: &str,
    stream: &str,
) -> TableIterator<
    'static,
    (
        name!(property, String),
        name!(label, String),
        name!(crm_type, String),
        name!(column_type, String),
        name!(custom, bool),
        name!(selected, bool),
    ),
> {
    let (_src, cfg, mut ctx) = sync::load(source);
    ctx.stream = Some(stream.to_owned());
    let streams = catalog::load_streams(source);
    let registered = streams.iter().find(|s| s.stream == stream);
    let (object, chosen) = match registered {
        Some(s) => (s.object.clone(), Some(s)),
        None => (stream.to_owned(), None),
    };
    let http = crate::secrets::http_client(source, cfg.config.http.clone()).or_raise(&ctx);
    let conn = cfg.connect(&http).or_raise(&ctx);
    let fields = fetch_fields(conn.as_ref(), &object)
        .map_err(|e| {
            if chosen.is_none()
                && matches!(e.kind, ErrorKind::InvalidConfig | ErrorKind::ApiRejected)
            {
                let known: Vec<&str> = streams.iter().map(|s| s.stream.as_str()).collect();
                e.with_hint(format!(
                    "\"{stream}\" is neither a stream of this source ({}) nor an object of the CRM; see crm_sync.discover(source) for the objects.",
                    known.join(", ")
                ))
            } else {
                e
            }
        })
        .or_raise(&ctx);
    let selected = match chosen {
        Some(s) => {
            // A typo in the list is what discover helps fix: show the
            // fields, none selected, rather than the error.
            let landed = landing::Landed::load(source, &s.stream);
            select_fields(&cfg, s, &fields, &landed)
                .map(|x| x.0)
                .unwrap_or_default()
        }
        None => vec![],
    };
    let rows: Vec<_> = fields
        .into_iter()
        .map(|f| {
            let sel = selected.iter().any(|c| c.name == f.name);
            (
                f.name,
                f.label,
                f.crm_type,
                f.pg_type.sql_name().to_owned(),
                f.custom,
                sel,
            )
        })
        .collect();
    TableIterator::new(rows)
}
