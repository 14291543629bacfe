//! `crm_sync.sync()` and `crm_sync.discover()`.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::Instant;

use pgrx::datum::{Interval, TimestampWithTimeZone};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::catalog::{self, RunRecord, SourceRow, StreamRow};
use crate::errors::{self, Context, OrRaise};
use crate::failed_run;
use crate::gucs;
use crate::landing::{self, Column, SpiSink};
use crate::shmem::ProgressSlot;
use crm_sync_core::config::SourceConfig;
use crm_sync_core::connectors::{
    column_name, Connector, DefaultFields, Field, ReadRequest, SyncMode,
};
use crm_sync_core::engine::{self, Sink};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::types::{parse_datetime, PgType};
use crm_sync_core::{CrmError, ErrorKind};

type SyncRow = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Interval,
    Option<TimestampWithTimeZone>,
    i64,
);

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
        name!(records_upserted, i64),
        name!(records_deleted, i64),
        name!(api_calls, i64),
        name!(bytes_received, i64),
        name!(warnings, i64),
        name!(duration, Interval),
        name!(watermark, Option<TimestampWithTimeZone>),
        name!(run_id, i64),
    ),
> {
    let (src, cfg, ctx) = load(source);
    let streams = catalog::load_streams(source);
    let chosen: Vec<&StreamRow> = match stream {
        Some(name) => match streams.iter().find(|s| s.stream == name) {
            Some(s) => vec![s],
            None => {
                let known: Vec<&str> = streams.iter().map(|s| s.stream.as_str()).collect();
                errors::raise(
                    &CrmError::config(format!("stream \"{name}\" does not exist"))
                        .with_hint(format!("Streams of this source: {}.", known.join(", "))),
                    &ctx,
                )
            }
        },
        None => streams.iter().filter(|s| s.enabled).collect(),
    };
    let mut rows = Vec::new();
    for s in chosen {
        rows.push(sync_stream_guarded(&src, &cfg, s, full_refresh, &ctx));
    }
    TableIterator::new(rows)
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
    ),
> {
    let (_src, cfg, ctx) = load(source);
    let streams = catalog::load_streams(source);
    let http = HttpClient::new(cfg.http.clone()).or_raise(&ctx);
    let conn = (cfg.provider.connect)(&http, &cfg).or_raise(&ctx);
    let objects = block_on_interruptible(conn.objects(), &mut check_interrupts).or_raise(&ctx);
    let rows: Vec<_> = objects
        .into_iter()
        .map(|o| {
            let stream = streams
                .iter()
                .find(|s| s.object == o.name)
                .map(|s| s.stream.clone());
            (o.name, o.label, o.custom, stream)
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
    let (_src, cfg, mut ctx) = load(source);
    ctx.stream = Some(stream.to_owned());
    let streams = catalog::load_streams(source);
    let registered = streams.iter().find(|s| s.stream == stream);
    let (object, chosen) = match registered {
        Some(s) => (s.object.clone(), Some(s)),
        None => (stream.to_owned(), None),
    };
    let http = HttpClient::new(cfg.http.clone()).or_raise(&ctx);
    let conn = (cfg.provider.connect)(&http, &cfg).or_raise(&ctx);
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
            let landed = landing::existing_columns(source, &s.stream);
            select_fields(&cfg, s, &fields, &landed)
                .map(|x| x.0)
                .unwrap_or_default()
        }
        None => vec![],
    };
    let rows: Vec<_> = fields
        .into_iter()
        .map(|f| {
            let sel = selected.iter().any(|c| c.property == f.name);
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

pub(crate) const NO_SOURCE_HINT: &str =
    "Create it with crm_sync.create_source(); see SELECT name FROM crm_sync.sources.";

pub(crate) fn load(source: &str) -> (SourceRow, SourceConfig, Context) {
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
    ctx.secrets = super::secret_strings(&src.credentials);
    let cfg = SourceConfig::parse(
        &src.provider,
        &src.options,
        &src.credentials,
        gucs::ALLOW_INSECURE_HTTP.get(),
    )
    .map_err(|e| e.with_hint("Fix the source with crm_sync.alter_source()."))
    .or_raise(&ctx);
    (src, cfg, ctx)
}

fn fetch_fields(conn: &dyn Connector, object: &str) -> Result<Vec<Field>, CrmError> {
    block_on_interruptible(conn.fields(object), &mut check_interrupts)
}

/// The properties a stream syncs: its list, `{*}` for all, or the defaults.
/// A listed property the CRM no longer has is an error, unless the landing
/// table has its column already: then the field was deleted in the CRM, and
/// it is dropped from the stream with a warning (returned second).
fn select_fields(
    cfg: &SourceConfig,
    s: &StreamRow,
    fields: &[Field],
    landed: &HashMap<String, PgType>,
) -> Result<(Vec<Column>, Vec<String>), CrmError> {
    let col = |f: &Field| Column {
        property: f.name.clone(),
        column: column_name(&f.name),
        pg_type: f.pg_type,
    };
    match &s.properties {
        Some(list) if list.iter().any(|p| p == "*") => {
            Ok((fields.iter().map(col).collect(), vec![]))
        }
        Some(list) => {
            let mut cols = vec![];
            let mut gone = vec![];
            for p in list {
                // Exact name first; CRM API names are case-insensitive.
                let found = fields
                    .iter()
                    .find(|f| &f.name == p)
                    .or_else(|| fields.iter().find(|f| f.name.eq_ignore_ascii_case(p)));
                match found {
                    Some(f) => cols.push(col(f)),
                    None if landed.contains_key(&column_name(p)) => gone.push(p.clone()),
                    None => {
                        return Err(CrmError::config(format!("property \"{p}\" does not exist on {}", s.object)).with_hint(
                            "See crm_sync.discover(source, stream) for the properties, and fix crm_sync.streams.properties.",
                        ))
                    }
                }
            }
            Ok((cols, gone))
        }
        None => {
            let defaults = cfg
                .provider
                .streams
                .iter()
                .find(|d| d.object == s.object)
                .map_or(cfg.provider.other_objects, |d| d.fields);
            let cols = match defaults {
                DefaultFields::All => fields.iter().map(col).collect(),
                DefaultFields::Only(names) => fields
                    .iter()
                    .filter(|f| names.contains(&f.name.as_str()))
                    .map(col)
                    .collect(),
            };
            Ok((cols, vec![]))
        }
    }
}

/// How a stream's run starts: from its watermark, and from the checkpoint
/// of an interrupted run of the same kind if there is one.
pub(crate) struct Plan {
    pub watermark: Option<String>,
    pub mode: &'static str,
    pub run_id: i64,
    pub started_us: i64,
    pub resume: Option<catalog::Checkpoint>,
}

pub(crate) fn plan(source: &str, stream: &str, full_refresh: bool) -> Plan {
    let stored = catalog::load_watermark(source, stream);
    let checkpoint = catalog::load_checkpoint(source, stream);
    // A full refresh that was interrupted is still one: resume it, rather
    // than falling back to an incremental run.
    let watermark = if full_refresh || checkpoint.as_ref().is_some_and(|c| c.mode == "full") {
        None
    } else {
        stored
    };
    let mode = if watermark.is_some() {
        "incremental"
    } else {
        "full"
    };
    let resume = checkpoint.filter(|c| c.mode == mode && c.watermark == watermark);
    Plan {
        watermark,
        mode,
        run_id: catalog::next_run_id(),
        started_us: catalog::now_us(),
        resume,
    }
}

/// What a run that failed (or was cancelled) reports, and how to raise it.
pub(crate) struct Failure {
    pub status: &'static str,
    pub message: String,
    pub code: PgSqlErrorCode,
    pub rethrow: Rethrow,
}

pub(crate) fn failure(
    failed: std::result::Result<Result<Done, CrmError>, Box<dyn std::any::Any + Send>>,
    ctx: &Context,
) -> Failure {
    match failed {
        Ok(Err(e)) => {
            let r = errors::report(&e, ctx);
            Failure {
                status: "failed",
                message: errors::message(&e, ctx),
                code: errors::sqlstate(e.kind),
                rethrow: Rethrow::Report(r),
            }
        }
        Err(panic) => match panic.downcast::<CaughtError>() {
            Ok(caught) => {
                let (msg, code) = match caught.as_ref() {
                    CaughtError::PostgresError(r)
                    | CaughtError::ErrorReport(r)
                    | CaughtError::RustPanic { ereport: r, .. } => {
                        (errors::scrub(r.message(), &ctx.secrets), r.sql_error_code())
                    }
                };
                let status = if code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                    "cancelled"
                } else {
                    "failed"
                };
                Failure {
                    status,
                    message: msg,
                    code,
                    rethrow: Rethrow::Caught(caught),
                }
            }
            Err(other) => Failure {
                status: "failed",
                message: "internal error".to_owned(),
                code: PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                rethrow: Rethrow::Panic(other),
            },
        },
        Ok(Ok(_)) => unreachable!("only failures are classified"),
    }
}

impl Rethrow {
    pub(crate) fn raise(self) -> ! {
        match self {
            Rethrow::Report(r) => {
                r.report(PgLogLevel::ERROR);
                unreachable!()
            }
            Rethrow::Caught(c) => c.rethrow(),
            Rethrow::Panic(p) => resume_unwind(p),
        }
    }
}

/// The run row of a stream's run, before it ends.
pub(crate) fn run_record(src: &str, s: &StreamRow, plan: &Plan, progress: &Progress) -> RunRecord {
    RunRecord {
        run_id: plan.run_id,
        source: src.to_owned(),
        stream: s.stream.clone(),
        mode: plan.mode.to_owned(),
        status: "succeeded".to_owned(),
        started_at_us: plan.started_us,
        finished_at_us: catalog::now_us(),
        records: progress.records.get() as i64,
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
pub(crate) fn record_success(src: &str, s: &StreamRow, plan: &Plan, done: Done) -> RunRecord {
    let mut run = run_record(src, s, plan, &Progress::default());
    run.records = done.outcome.stats.upserted as i64;
    run.records_deleted = done.outcome.stats.deleted as i64;
    run.warnings = (done.outcome.stats.warnings + done.outcome.warnings.len() as u64) as i64;
    run.warning_samples = done.warning_samples;
    run.watermark = done.outcome.watermark.clone();
    run.api_calls = done.api_calls as i64;
    run.bytes = done.bytes as i64;
    if let Some(w) = &run.watermark {
        catalog::save_watermark(src, &s.stream, w, plan.run_id);
    }
    catalog::delete_checkpoint(src, &s.stream);
    catalog::insert_run(&run);
    for w in &done.outcome.warnings {
        pgrx::warning!("{}.{}: {}", src, s.stream, w);
    }
    if done.outcome.stats.warnings > 0 {
        pgrx::warning!(
            "{}.{}: {} values did not fit their columns and were kept in _raw only; see crm_sync.runs (run_id {})",
            src,
            s.stream,
            done.outcome.stats.warnings,
            plan.run_id
        );
    }
    run
}

/// Run `f` in a subtransaction (the dance of PL/pgSQL's exception blocks):
/// it is kept if `f` returns a value `keep` accepts, and rolled back if `f`
/// raises or `keep` refuses; either way the transaction goes on.
fn subtransaction<R>(
    f: impl FnOnce() -> R,
    keep: impl FnOnce(&R) -> bool,
) -> std::thread::Result<R> {
    // SAFETY: begun and ended here, with the memory context and resource
    // owner of the caller restored afterwards.
    let (old_cxt, old_owner) =
        unsafe { (pg_sys::CurrentMemoryContext, pg_sys::CurrentResourceOwner) };
    unsafe {
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(old_cxt);
    }
    let result = catch_unwind(AssertUnwindSafe(f));
    let commit = matches!(&result, Ok(r) if keep(r));
    unsafe {
        if commit {
            pg_sys::ReleaseCurrentSubTransaction();
        } else {
            pg_sys::MemoryContextSwitchTo(old_cxt);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
        }
        pg_sys::MemoryContextSwitchTo(old_cxt);
        pg_sys::CurrentResourceOwner = old_owner;
    }
    result
}

/// Run `f` in a subtransaction: on an error, roll back what it did and
/// return the error's message (the transaction goes on).
pub(crate) fn in_subtransaction<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    subtransaction(f, |_| true).map_err(|panic| failure(Err(panic), &Context::default()).message)
}

/// Run one stream inside a subtransaction; on failure roll it back, record
/// the failed run outside the transaction, and raise.
fn sync_stream_guarded(
    src: &SourceRow,
    cfg: &SourceConfig,
    s: &StreamRow,
    full_refresh: bool,
    ctx: &Context,
) -> SyncRow {
    let mut ctx = ctx.clone();
    ctx.stream = Some(s.stream.clone());
    catalog::lock_stream(&src.name, &s.stream, &ctx);
    let plan = plan(&src.name, &s.stream, full_refresh);
    let started = Instant::now();
    let progress = Progress::default();

    let result = subtransaction(
        || sync_stream(src, cfg, s, &plan, &progress, None),
        |r| r.is_ok(),
    );
    match result {
        Ok(Ok(done)) => {
            let run = record_success(&src.name, s, &plan, done);
            if let Some(w) = crate::merge::after_sync(&src.name, &s.stream, run.run_id) {
                pgrx::warning!(
                    "{}.{}: {}",
                    src.name,
                    s.stream,
                    errors::scrub(&w, &ctx.secrets)
                );
            }
            let micros = started.elapsed().as_micros() as i64;
            (
                s.stream.clone(),
                plan.mode.to_owned(),
                run.status,
                run.records,
                run.records_deleted,
                run.api_calls,
                run.bytes,
                run.warnings,
                Interval::from_micros(micros),
                run.watermark.as_deref().and_then(to_timestamptz),
                plan.run_id,
            )
        }
        failed => {
            let f = failure(failed, &ctx);
            let mut run = run_record(&src.name, s, &plan, &progress);
            // Rolled back: nothing this run wrote is kept.
            run.records = 0;
            run.status = f.status.to_owned();
            run.error = Some(f.message);
            run.error_sqlstate = Some(errors::sqlstate_text(f.code));
            failed_run::record(&run);
            f.rethrow.raise()
        }
    }
}

pub(crate) enum Rethrow {
    Report(pgrx::pg_sys::panic::ErrorReport),
    Caught(Box<CaughtError>),
    Panic(Box<dyn std::any::Any + Send>),
}

/// Counters kept outside the subtransaction so a failed run still reports them.
#[derive(Default)]
pub(crate) struct Progress {
    pub api_calls: Cell<u64>,
    pub bytes: Cell<u64>,
    /// Rows written and committed (background runs commit in batches).
    pub records: Cell<u64>,
}

pub(crate) struct Done {
    outcome: engine::Outcome,
    warning_samples: Vec<String>,
    api_calls: u64,
    bytes: u64,
}

/// Read one stream and write it. `job` is set for a background run, which
/// commits every batch together with its checkpoint.
pub(crate) fn sync_stream(
    src: &SourceRow,
    cfg: &SourceConfig,
    s: &StreamRow,
    plan: &Plan,
    progress: &Progress,
    job: Option<i64>,
) -> Result<Done, CrmError> {
    let http = HttpClient::new(cfg.http.clone())?;
    // Copies the counters out even when a cancel unwinds through here.
    let _counters = Counters {
        http: &http,
        out: progress,
    };
    let slot = ProgressSlot::claim(job, plan.run_id, &src.name, &s.stream, plan.mode == "full");
    let conn = (cfg.provider.connect)(&http, cfg)?;
    let fields = fetch_fields(conn.as_ref(), &s.object)?;
    let landed = landing::existing_columns(&src.name, &s.stream);
    let (wanted, gone) = select_fields(cfg, s, &fields, &landed)?;
    let columns = landing::ensure_table(&src.name, &s.stream, &wanted)?;
    if job.is_some() {
        // Release the table's DDL lock before the long part: readers of
        // the landing table never wait for a background sync.
        crate::worker::commit_and_continue();
    }
    let read_fields: Vec<Field> = columns
        .iter()
        .filter_map(|c| fields.iter().find(|f| f.name == c.property).cloned())
        .collect();
    let fields_key = columns
        .iter()
        .map(|c| c.property.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut sink = SpiSink::new(&src.name, &s.stream, columns, plan.run_id);
    let mode = match &plan.watermark {
        Some(w) => SyncMode::Incremental {
            watermark: w.clone(),
        },
        None => SyncMode::Full,
    };
    // A position saved while other columns were synced would leave the
    // rows written before it without the new ones: start over then.
    let resume = plan
        .resume
        .as_ref()
        .filter(|c| c.fields == fields_key)
        .map(|c| c.position.clone());
    if let (Some(c), true) = (&plan.resume, resume.is_some()) {
        pgrx::log!(
            "pg_crm_sync: {}.{}: resuming run {} from its checkpoint ({} records were written)",
            src.name,
            s.stream,
            c.run_id,
            c.records
        );
    }
    let batch = gucs::BATCH_SIZE.get().max(1) as usize;
    let req = ReadRequest {
        object: s.object.clone(),
        fields: read_fields,
        mode,
        lookback: cfg.lookback,
        track_deletes: cfg.track_deletes,
        resume,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut check_interrupts)?;
    let interval = gucs::PROGRESS_INTERVAL_MS.get();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut report = |o: &engine::Outcome| {
        slot.update(
            o.records_received,
            o.pages,
            http.bytes_received(),
            http.api_calls(),
            o.total,
        );
        if job.is_some() || interval <= 0 || last.elapsed().as_millis() < interval as u128 {
            return;
        }
        last = Instant::now();
        pgrx::notice!(
            "{}",
            progress_line(
                &src.name,
                &s.stream,
                o,
                http.bytes_received(),
                started.elapsed()
            )
        );
    };
    let mut committing = Committing {
        sink: &mut sink,
        job,
        target: CheckpointTarget {
            source: &src.name,
            stream: &s.stream,
            plan,
            fields: &fields_key,
            http: &http,
        },
        progress,
    };
    let outcome = engine::run_with_progress(
        reader.as_mut(),
        &mut committing,
        batch,
        &mut check_interrupts,
        &mut report,
    )?;
    drop(reader);
    let mut outcome = outcome;
    for p in gone.iter().rev() {
        outcome.warnings.insert(0, format!(
            "property {p} is listed in crm_sync.streams.properties but {} no longer has it (deleted, or hidden from this user); it is skipped and its column keeps the values already landed",
            s.object
        ));
    }
    let mut warning_samples = outcome.warnings.clone();
    warning_samples.append(&mut sink.warning_samples);
    Ok(Done {
        outcome,
        warning_samples,
        api_calls: http.api_calls(),
        bytes: http.bytes_received(),
    })
}

struct CheckpointTarget<'a> {
    source: &'a str,
    stream: &'a str,
    plan: &'a Plan,
    fields: &'a str,
    http: &'a HttpClient,
}

/// The landing writer; in a background run it also commits every batch
/// with the reader's position, so a run that dies resumes from there.
struct Committing<'a> {
    sink: &'a mut SpiSink,
    job: Option<i64>,
    target: CheckpointTarget<'a>,
    progress: &'a Progress,
}

impl Sink for Committing<'_> {
    fn write(&mut self, batch: &[engine::Record]) -> Result<engine::WriteStats, CrmError> {
        self.sink.write(batch)
    }

    fn forget_fields(&mut self, fields: &[String]) {
        self.sink.forget_fields(fields)
    }

    fn checkpoint(&mut self, position: &str, so_far: &engine::Outcome) -> Result<(), CrmError> {
        let Some(job) = self.job else { return Ok(()) };
        let t = &self.target;
        catalog::save_checkpoint(&catalog::Checkpoint {
            source: t.source.to_owned(),
            stream: t.stream.to_owned(),
            run_id: t.plan.run_id,
            job_id: Some(job),
            mode: t.plan.mode.to_owned(),
            watermark: t.plan.watermark.clone(),
            fields: t.fields.to_owned(),
            position: position.to_owned(),
            records: so_far.stats.upserted as i64,
            api_calls: t.http.api_calls() as i64,
            started_at_us: t.plan.started_us,
        });
        crate::worker::commit_batch(job);
        self.progress.records.set(so_far.stats.upserted);
        Ok(())
    }
}

/// `source.stream: 12,000 records in 6 pages, 15.2 MB, 8,100 records/s, 40% of 30,000, about 2 s left`.
fn progress_line(
    source: &str,
    stream: &str,
    o: &engine::Outcome,
    bytes: u64,
    elapsed: std::time::Duration,
) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = o.records_received as f64 / secs;
    let mut line = format!(
        "{source}.{stream}: {} records in {} pages, {:.1} MB, {:.0} records/s",
        o.records_received,
        o.pages,
        bytes as f64 / 1e6,
        rate
    );
    // Only while the total still describes what is being read.
    if let Some(total) = o.total.filter(|t| *t > 0 && o.records_received <= *t) {
        let done = o.records_received as f64 / total as f64;
        line.push_str(&format!(", {:.0}% of {total}", done * 100.0));
        if rate > 0.0 {
            let left = (total - o.records_received) as f64 / rate;
            line.push_str(&format!(", about {left:.0} s left"));
        }
    }
    line
}

struct Counters<'a> {
    http: &'a HttpClient,
    out: &'a Progress,
}

impl Drop for Counters<'_> {
    fn drop(&mut self) {
        self.out.api_calls.set(self.http.api_calls());
        self.out.bytes.set(self.http.bytes_received());
    }
}

fn to_timestamptz(s: &str) -> Option<TimestampWithTimeZone> {
    // Postgres epoch is 2000-01-01.
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    let d = parse_datetime(s)?;
    TimestampWithTimeZone::try_from(d.timestamp_micros() - PG_EPOCH_OFFSET_US).ok()
}

/// Lets Postgres act on a cancel or statement timeout (raises if pending).
fn check_interrupts() {
    pgrx::check_for_interrupts!();
}
