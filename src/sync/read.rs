//! Reading one stream and writing it: connect, pick the fields, make sure
//! the landing table has their columns, then run the engine from the
//! connector's pages into the landing table, committing as the [`Commit`]
//! policy says and reporting progress.

use std::cell::Cell;
use std::time::Instant;

use crate::catalog::{self, Checkpoint, SourceRow, StreamRow};
use crate::gucs;
use crate::landing::{self, SpiSink};
use crate::shmem::ProgressSlot;
use crate::txn::check_interrupts;
use crm_sync_core::connectors::Configured;
use crm_sync_core::engine::{self, Outcome, Sink, WriteStats};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::source::{Connector, Field, ReadRequest, Record, SyncMode};
use crm_sync_core::CrmError;

use super::commit::Commit;
use super::fields::{fetch_fields, select_fields};
use super::plan::Plan;

/// Counters kept outside the run (and its subtransaction), so that a run
/// that fails still reports them.
#[derive(Default)]
pub struct Progress {
    pub api_calls: Cell<u64>,
    pub bytes: Cell<u64>,
    /// Rows written and committed (background runs commit in batches).
    pub records: Cell<u64>,
    /// Records received from the CRM so far.
    pub read: Cell<u64>,
}

/// What a run that read its stream to the end did.
pub struct Done {
    pub outcome: Outcome,
    pub warning_samples: Vec<String>,
    pub api_calls: u64,
    pub bytes: u64,
}

/// Read one stream and write it.
pub fn read_stream(
    src: &SourceRow,
    cfg: &Configured,
    s: &StreamRow,
    plan: &Plan,
    progress: &Progress,
    commit: Commit,
) -> Result<Done, CrmError> {
    let http = crate::secrets::http_client(&src.name, cfg.config.http.clone())?;
    // Copies the counters out even when a cancel unwinds through here.
    let _counters = Counters {
        http: &http,
        out: progress,
    };
    let slot = ProgressSlot::claim(
        commit.job_id(),
        plan.run_id,
        &src.name,
        &s.stream,
        plan.mode == "full",
    );
    let conn = cfg.connect(&http)?;
    let Prepared {
        columns,
        read_fields,
        without_column,
        gone,
    } = prepare(cfg, conn.as_ref(), &src.name, s)?;
    commit.step();
    let fields_key = columns
        .iter()
        .map(|c| c.property.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // Full refreshes meet rows already there unchanged, and so do
    // incremental runs that read their lookback again (HubSpot's last
    // hour); without one, an incremental run's records are all changed.
    let mut sink = if plan.mode == "full" || !cfg.config.lookback.is_zero() {
        SpiSink::comparing(&src.name, &s.stream, columns, plan.run_id)
    } else {
        SpiSink::new(&src.name, &s.stream, columns, plan.run_id)
    };
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
        crate::report::log!(
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
        lookback: cfg.config.lookback,
        track_deletes: cfg.config.track_deletes,
        resume,
        deletes_since: catalog::load_deletes_from(&src.name, &s.stream)
            .and_then(crm_sync_core::chrono::DateTime::from_timestamp_millis)
            .or_else(|| last_run_began(&src.name, &s.stream)),
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut check_interrupts)?;
    let interval = gucs::PROGRESS_INTERVAL_MS.get();
    let started = Instant::now();
    let mut last = Instant::now();
    let mut report = |o: &Outcome| {
        progress.read.set(o.records_received);
        slot.update(
            o.records_received,
            o.pages,
            http.bytes_received(),
            http.api_calls(),
            o.total,
        );
        // Only a foreground sync has a client to tell.
        if commit.job_id().is_some()
            || interval <= 0
            || last.elapsed().as_millis() < interval as u128
        {
            return;
        }
        last = Instant::now();
        crate::report::notice!(
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
        commit,
        source: &src.name,
        stream: &s.stream,
        plan,
        fields: &fields_key,
        http: &http,
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
    if !without_column.is_empty() {
        outcome.warnings.insert(0, format!(
            "{} properties have no column (a table holds at most 1,600 columns) and are in _raw only: {}",
            without_column.len(),
            without_column.join(", ")
        ));
    }
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

/// When the stream's last successful sync (full or incremental) began.
fn last_run_began(
    source: &str,
    stream: &str,
) -> Option<crm_sync_core::chrono::DateTime<crm_sync_core::chrono::Utc>> {
    let ms = pgrx::Spi::get_one_with_args::<i64>(
        "SELECT (pg_catalog.date_part('epoch', pg_catalog.max(started_at)) * 1000)::int8
           FROM crm_sync.runs
          WHERE source = $1 AND stream = $2 AND status = 'succeeded'
            AND mode OPERATOR(pg_catalog.=) ANY (ARRAY['full', 'incremental'])",
        &[source.into(), stream.into()],
    )
    .ok()
    .flatten()?;
    crm_sync_core::chrono::DateTime::from_timestamp_millis(ms)
}

/// A stream's landing table made ready for a run: its columns, the fields
/// to read, the properties left in `_raw` only, and chosen properties the
/// CRM no longer has.
pub struct Prepared {
    pub columns: Vec<landing::Column>,
    pub read_fields: Vec<Field>,
    pub without_column: Vec<String>,
    pub gone: Vec<String>,
}

/// Pick the stream's fields and make sure the landing table has their
/// columns.
pub fn prepare(
    cfg: &Configured,
    conn: &dyn Connector,
    source: &str,
    s: &StreamRow,
) -> Result<Prepared, CrmError> {
    let fields = fetch_fields(conn, &s.object)?;
    let landed = landing::Landed::load(source, &s.stream);
    let (wanted, gone) = select_fields(cfg, s, &fields, &landed)?;
    let (wanted_columns, without_column) =
        landing::columns_for(source, &s.stream, &landed, &wanted)?;
    let columns = landing::ensure_table(source, &s.stream, &wanted_columns)?;
    // Properties without a column are read too: they land in _raw.
    let read_fields: Vec<Field> = wanted
        .iter()
        .filter(|f| {
            columns.iter().any(|c| c.property == f.name) || without_column.contains(&f.name)
        })
        .cloned()
        .collect();
    Ok(Prepared {
        columns,
        read_fields,
        without_column,
        gone,
    })
}

/// The landing writer, and at every checkpoint the run's commit policy
/// with the reader's position.
struct Committing<'a> {
    sink: &'a mut SpiSink,
    commit: Commit,
    source: &'a str,
    stream: &'a str,
    plan: &'a Plan,
    /// The synced properties, comma-separated.
    fields: &'a str,
    http: &'a HttpClient,
    progress: &'a Progress,
}

impl Sink for Committing<'_> {
    fn write(&mut self, batch: &[Record]) -> Result<WriteStats, CrmError> {
        self.sink.write(batch)
    }

    fn forget_fields(&mut self, fields: &[String]) {
        self.sink.forget_fields(fields)
    }

    fn checkpoint(&mut self, position: &str, so_far: &Outcome) -> Result<(), CrmError> {
        let committed = self.commit.after_batch(|| Checkpoint {
            source: self.source.to_owned(),
            stream: self.stream.to_owned(),
            run_id: self.plan.run_id,
            job_id: None,
            mode: self.plan.mode.to_owned(),
            watermark: self.plan.watermark.clone(),
            fields: self.fields.to_owned(),
            position: position.to_owned(),
            records: so_far.stats.upserted as i64,
            api_calls: self.http.api_calls() as i64,
            started_at_us: self.plan.began_us(),
        });
        if committed {
            self.progress.records.set(so_far.stats.upserted);
        }
        Ok(())
    }
}

/// `source.stream: 12,000 records in 6 pages, 15.2 MB, 8,100 records/s, 40% of 30,000, about 2 s left`.
fn progress_line(
    source: &str,
    stream: &str,
    o: &Outcome,
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

pub(super) struct Counters<'a> {
    pub http: &'a HttpClient,
    pub out: &'a Progress,
}

impl Drop for Counters<'_> {
    fn drop(&mut self) {
        self.out.api_calls.set(self.http.api_calls());
        self.out.bytes.set(self.http.bytes_received());
    }
}
