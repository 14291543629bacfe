//! Reading and writing the extension's own tables (crm_sync.*) through SPI.

use pgrx::prelude::*;
use pgrx::JsonB;

/// The hint of every "source does not exist" error.
pub const NO_SOURCE_HINT: &str =
    "Create it with crm_sync.create_source(); see SELECT name FROM crm_sync.sources.";

/// A source as stored, credentials included (read with the owner's rights).
pub struct SourceRow {
    pub name: String,
    pub provider: String,
    pub options: serde_json::Value,
    pub credentials: serde_json::Value,
    /// The registered spec its provider names (None: a built-in
    /// connector, or provider `rest` with the spec in its options).
    pub spec: Option<serde_json::Value>,
}

/// The spec registered as `name`: the user's (crm_sync.specs), else the
/// one shipped with the extension (crm_sync.builtin_specs). None for a
/// built-in provider's name (no spec may take one), without a query.
pub fn load_spec(name: &str) -> Option<serde_json::Value> {
    if crm_sync_core::connectors::find(name).is_ok() {
        return None;
    }
    Spi::get_one_with_args::<JsonB>(
        "SELECT coalesce((SELECT s.spec FROM crm_sync.specs s WHERE s.name = $1),
                         (SELECT b.spec FROM crm_sync.builtin_specs b WHERE b.name = $1))",
        &[name.into()],
    )
    .ok()
    .flatten()
    .map(|j| j.0)
}

pub struct StreamRow {
    pub stream: String,
    pub object: String,
    pub enabled: bool,
    pub properties: Option<Vec<String>>,
}

pub fn load_source(name: &str) -> Option<SourceRow> {
    Spi::connect(|c| {
        let t = c
            .select(
                "SELECT s.provider, s.options, coalesce(c.credentials, '{}'::jsonb)
                   FROM crm_sync.sources s LEFT JOIN crm_sync.credentials c ON c.source = s.name
                  WHERE s.name = $1",
                Some(1),
                &[name.into()],
            )
            .expect("read crm_sync.sources");
        if t.is_empty() {
            return None;
        }
        let t = t.first();
        let provider: String = t.get(1).ok().flatten().unwrap_or_default();
        let options: JsonB = t
            .get(2)
            .ok()
            .flatten()
            .unwrap_or(JsonB(serde_json::json!({})));
        let creds: JsonB = t
            .get(3)
            .ok()
            .flatten()
            .unwrap_or(JsonB(serde_json::json!({})));
        Some((provider, options.0, creds.0))
    })
    .map(|(provider, options, credentials)| SourceRow {
        name: name.to_owned(),
        spec: load_spec(&provider),
        provider,
        options,
        credentials,
    })
}

pub fn load_streams(source: &str) -> Vec<StreamRow> {
    Spi::connect(|c| {
        let t = c
            .select(
                "SELECT stream, object, enabled, properties FROM crm_sync.streams WHERE source = $1 ORDER BY stream",
                None,
                &[source.into()],
            )
            .expect("read crm_sync.streams");
        t.map(|r| StreamRow {
            stream: r.get(1).ok().flatten().unwrap_or_default(),
            object: r.get(2).ok().flatten().unwrap_or_default(),
            enabled: r.get(3).ok().flatten().unwrap_or(true),
            properties: r.get::<Vec<String>>(4).ok().flatten(),
        })
        .collect()
    })
}

pub fn load_watermark(source: &str, stream: &str) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT cursor FROM crm_sync.watermarks WHERE source = $1 AND stream = $2",
        &[source.into(), stream.into()],
    )
    .ok()
    .flatten()
}

pub fn save_watermark(source: &str, stream: &str, cursor: &str, run_id: i64) {
    Spi::run_with_args(
        "INSERT INTO crm_sync.watermarks (source, stream, cursor, updated_at, run_id)
         VALUES ($1, $2, $3, now(), $4)
         ON CONFLICT (source, stream) DO UPDATE
            SET cursor = EXCLUDED.cursor, updated_at = EXCLUDED.updated_at, run_id = EXCLUDED.run_id",
        &[source.into(), stream.into(), cursor.into(), run_id.into()],
    )
    .expect("write crm_sync.watermarks");
}

/// Where the stream's deletes are to be looked for from (see the
/// `deletes_from` column of crm_sync.watermarks), in epoch milliseconds.
pub fn load_deletes_from(source: &str, stream: &str) -> Option<i64> {
    Spi::get_one_with_args::<i64>(
        "SELECT (pg_catalog.date_part('epoch', deletes_from) * 1000)::int8
           FROM crm_sync.watermarks WHERE source = $1 AND stream = $2",
        &[source.into(), stream.into()],
    )
    .ok()
    .flatten()
}

/// Deletes before `ms` (epoch milliseconds) have been found. Written only
/// with the watermark or by a reconciliation, in their transaction.
pub fn save_deletes_from(source: &str, stream: &str, ms: i64) {
    Spi::run_with_args(
        "UPDATE crm_sync.watermarks
            SET deletes_from = pg_catalog.to_timestamp($3::float8 / 1000)
          WHERE source = $1 AND stream = $2",
        &[source.into(), stream.into(), ms.into()],
    )
    .expect("write crm_sync.watermarks.deletes_from");
}

pub fn next_run_id() -> i64 {
    Spi::get_one::<i64>("SELECT nextval('crm_sync.runs_run_id_seq')")
        .ok()
        .flatten()
        .expect("nextval for crm_sync.runs")
}

/// One finished run, as recorded in crm_sync.runs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    pub run_id: i64,
    pub source: String,
    pub stream: String,
    pub mode: String,
    pub status: String,
    /// Epoch microseconds.
    pub started_at_us: i64,
    pub finished_at_us: i64,
    /// Records received from the CRM (every page; a record read twice
    /// counts twice).
    pub records_read: i64,
    /// Rows inserted or changed.
    pub records: i64,
    /// Records written again as they were.
    pub records_unchanged: i64,
    pub records_deleted: i64,
    pub bytes: i64,
    pub api_calls: i64,
    pub warnings: i64,
    pub warning_samples: Vec<String>,
    pub watermark: Option<String>,
    pub error: Option<String>,
    pub error_sqlstate: Option<String>,
}

pub fn insert_run(r: &RunRecord) {
    Spi::run_with_args(
        "INSERT INTO crm_sync.runs (run_id, source, stream, mode, status, started_at, finished_at,
                                    records, records_deleted, bytes, api_calls, warnings, warning_samples,
                                    watermark, error, error_sqlstate, records_read, records_unchanged)
         VALUES ($1, $2, $3, $4, $5, to_timestamp($6 / 1e6), to_timestamp($7 / 1e6),
                 $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        &[
            r.run_id.into(),
            r.source.as_str().into(),
            r.stream.as_str().into(),
            r.mode.as_str().into(),
            r.status.as_str().into(),
            (r.started_at_us as f64).into(),
            (r.finished_at_us as f64).into(),
            r.records.into(),
            r.records_deleted.into(),
            r.bytes.into(),
            r.api_calls.into(),
            r.warnings.into(),
            (!r.warning_samples.is_empty()).then(|| r.warning_samples.clone()).into(),
            r.watermark.clone().into(),
            r.error.clone().into(),
            r.error_sqlstate.clone().into(),
            r.records_read.into(),
            r.records_unchanged.into(),
        ],
    )
    .expect("write crm_sync.runs");
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// The position of an interrupted run (crm_sync.checkpoints).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub source: String,
    pub stream: String,
    pub run_id: i64,
    pub job_id: Option<i64>,
    pub mode: String,
    /// The watermark the run started from (None for a full run).
    pub watermark: Option<String>,
    /// The synced properties, comma-separated.
    pub fields: String,
    /// The reader's own position (see `PageSource::checkpoint`).
    pub position: String,
    /// Rows the run had committed.
    pub records: i64,
    pub api_calls: i64,
    pub started_at_us: i64,
}

pub fn load_checkpoint(source: &str, stream: &str) -> Option<Checkpoint> {
    Spi::connect(|c| {
        let t = c
            .select(
                "SELECT run_id, job_id, mode, watermark, fields, position, records, api_calls,
                        (extract(epoch FROM started_at) * 1e6)::int8
                   FROM crm_sync.checkpoints WHERE source = $1 AND stream = $2",
                Some(1),
                &[source.into(), stream.into()],
            )
            .expect("read crm_sync.checkpoints");
        if t.is_empty() {
            return None;
        }
        let r = t.first();
        Some(Checkpoint {
            source: source.to_owned(),
            stream: stream.to_owned(),
            run_id: r.get(1).ok().flatten().unwrap_or_default(),
            job_id: r.get(2).ok().flatten(),
            mode: r.get(3).ok().flatten().unwrap_or_default(),
            watermark: r.get(4).ok().flatten(),
            fields: r.get(5).ok().flatten().unwrap_or_default(),
            position: r.get(6).ok().flatten().unwrap_or_default(),
            records: r.get(7).ok().flatten().unwrap_or_default(),
            api_calls: r.get(8).ok().flatten().unwrap_or_default(),
            started_at_us: r.get(9).ok().flatten().unwrap_or_default(),
        })
    })
}

pub fn save_checkpoint(c: &Checkpoint) {
    Spi::run_with_args(
        "INSERT INTO crm_sync.checkpoints AS k (source, stream, run_id, job_id, mode, watermark, fields,
                                               position, records, api_calls, started_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, to_timestamp($11 / 1e6), now())
         ON CONFLICT (source, stream) DO UPDATE
            SET run_id = EXCLUDED.run_id, job_id = EXCLUDED.job_id, mode = EXCLUDED.mode,
                watermark = EXCLUDED.watermark, fields = EXCLUDED.fields, position = EXCLUDED.position,
                records = EXCLUDED.records, api_calls = EXCLUDED.api_calls,
                started_at = EXCLUDED.started_at, updated_at = EXCLUDED.updated_at",
        &[
            c.source.as_str().into(),
            c.stream.as_str().into(),
            c.run_id.into(),
            c.job_id.into(),
            c.mode.as_str().into(),
            c.watermark.clone().into(),
            c.fields.as_str().into(),
            c.position.as_str().into(),
            c.records.into(),
            c.api_calls.into(),
            (c.started_at_us as f64).into(),
        ],
    )
    .expect("write crm_sync.checkpoints");
}

pub fn delete_checkpoint(source: &str, stream: &str) {
    Spi::run_with_args(
        "DELETE FROM crm_sync.checkpoints WHERE source = $1 AND stream = $2",
        &[source.into(), stream.into()],
    )
    .expect("delete from crm_sync.checkpoints");
}

/// Set `credentials.{key}` of `source` where it is stored as a string
/// (and, with `old`, only while it still holds that value). Whether a row
/// was written.
pub fn update_credential(source: &str, key: &str, value: &str, old: Option<&str>) -> bool {
    Spi::get_one_with_args::<bool>(
        "WITH u AS (
           UPDATE crm_sync.credentials c
              SET credentials = pg_catalog.jsonb_set(c.credentials, ARRAY[$2], pg_catalog.to_jsonb($3::text))
            WHERE c.source = $1 AND pg_catalog.jsonb_typeof(c.credentials -> $2) = 'string'
              AND ($4::text IS NULL OR c.credentials ->> $2 = $4)
           RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM u)",
        &[source.into(), key.into(), value.into(), old.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// `credentials.{key}` of `source` as stored now, when stored as a string.
pub fn stored_credential(source: &str, key: &str) -> Option<String> {
    Spi::get_one_with_args::<String>(
        "SELECT c.credentials ->> $2 FROM crm_sync.credentials c
          WHERE c.source = $1 AND pg_catalog.jsonb_typeof(c.credentials -> $2) = 'string'",
        &[source.into(), key.into()],
    )
    .ok()
    .flatten()
}
