//! What the reader tests share: a sink that dies like a killed worker, one
//! run of one stream against a mock, and the Salesforce mock's set-up.
// Each test crate uses its own part of this module.
#![allow(dead_code)]

use crm_mock::salesforce::{Options, SalesforceMock};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::engine::{self, Outcome, Sink, WriteStats};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::runtime::runtime;
use crm_sync_core::source::{Field, ReadRequest, Record, SyncMode};
use crm_sync_core::{CrmError, ErrorKind};
use serde_json::{json, Value};

/// Keeps what was written; after `stop_after` checkpoints (0: never) it
/// fails the run, as a killed worker would, keeping only what the
/// checkpoints covered.
#[derive(Default)]
pub struct Crashing {
    pub committed: Vec<Record>,
    pub pending: Vec<Record>,
    pub position: Option<String>,
    pub checkpoints: usize,
    pub stop_after: usize,
}

impl Crashing {
    pub fn dying_after(checkpoints: usize) -> Self {
        Crashing {
            stop_after: checkpoints,
            ..Default::default()
        }
    }

    /// Everything written, as if the run's last transaction committed.
    pub fn all(mut self) -> Vec<Record> {
        self.committed.append(&mut self.pending);
        self.committed
    }
}

impl Sink for Crashing {
    fn write(&mut self, batch: &[Record]) -> Result<WriteStats, CrmError> {
        self.pending.extend_from_slice(batch);
        Ok(WriteStats {
            upserted: batch.len() as u64,
            ..Default::default()
        })
    }

    fn checkpoint(&mut self, position: &str, _so_far: &Outcome) -> Result<(), CrmError> {
        self.committed.append(&mut self.pending);
        self.position = Some(position.to_owned());
        self.checkpoints += 1;
        if self.checkpoints == self.stop_after {
            return Err(CrmError::new(ErrorKind::Transport, "worker killed"));
        }
        Ok(())
    }
}

/// One full run of `object` (only the fields `keep` accepts) into `sink`,
/// in engine batches of `batch`; returns its outcome and the API calls it
/// made.
pub fn run(
    cfg: &Configured,
    object: &str,
    keep: fn(&Field) -> bool,
    batch: usize,
    resume: Option<String>,
    sink: &mut Crashing,
) -> (Result<Outcome, CrmError>, u64) {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let fields = block_on_interruptible(conn.fields(object), &mut || {}).unwrap();
    let req = ReadRequest {
        object: object.into(),
        fields: fields.into_iter().filter(keep).collect(),
        mode: SyncMode::Full,
        lookback: std::time::Duration::ZERO,
        track_deletes: true,
        resume,
        deletes_since: None,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut || {}).unwrap();
    let out = engine::run(reader.as_mut(), sink, batch, &mut || {});
    drop(reader);
    (out, http.api_calls())
}

/// What one run read: every record written, its outcome, its API calls.
pub struct Read {
    pub records: Vec<Record>,
    pub out: Outcome,
    pub calls: u64,
}

/// One run of `object` with all its fields, in `mode`, from `resume`;
/// an error where the connection, discovery or the run fails.
pub fn read(
    cfg: &Configured,
    object: &str,
    mode: SyncMode,
    resume: Option<String>,
    deletes_since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Read, CrmError> {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let fields = block_on_interruptible(conn.fields(object), &mut || {})?;
    let req = ReadRequest {
        object: object.into(),
        fields,
        mode,
        lookback: std::time::Duration::ZERO,
        track_deletes: true,
        resume,
        deletes_since,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut || {})?;
    let mut sink = Crashing::default();
    let out = engine::run(reader.as_mut(), &mut sink, 500, &mut || {})?;
    drop(reader);
    Ok(Read {
        records: sink.all(),
        out,
        calls: http.api_calls(),
    })
}

/// The first page of a run of `object` in `mode`, then a stop as a killed
/// worker's: the records it read and the reader's checkpoint then.
pub fn first_page(cfg: &Configured, object: &str, mode: SyncMode) -> (usize, String) {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let fields = block_on_interruptible(conn.fields(object), &mut || {}).unwrap();
    let req = ReadRequest {
        object: object.into(),
        fields,
        mode,
        lookback: std::time::Duration::ZERO,
        track_deletes: true,
        resume: None,
        deletes_since: None,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut || {}).unwrap();
    let page = block_on_interruptible(reader.next_page(), &mut || {})
        .unwrap()
        .unwrap();
    (page.records.len(), reader.checkpoint().unwrap())
}

/// Start a Salesforce mock on its own runtime thread; returns its base URL.
pub fn sf_start(opts: Options) -> String {
    let port = crm_mock::start_in_background(move || SalesforceMock::new(opts).unwrap());
    format!("http://127.0.0.1:{port}")
}

/// A Salesforce source on the mock at `base` (fast retries, no lookback),
/// with the options in `extra` added.
pub fn sf_config(base: &str, extra: Value) -> Configured {
    let mut opts =
        json!({"login_url": base, "retry_base_ms": 5, "retry_max_ms": 20, "lookback_seconds": 0});
    for (k, v) in extra.as_object().unwrap() {
        opts[k] = v.clone();
    }
    let o = Options::default();
    let creds = json!({"client_id": o.client_id, "refresh_token": o.refresh_token});
    connectors::configure("salesforce", &opts, &creds, false).unwrap()
}

/// Call a mock's admin API; panics unless it succeeds.
pub fn admin(base: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let url = format!("{base}{path}");
    runtime().block_on(async move {
        let r = reqwest::Client::new()
            .request(method, url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json::<Value>().await.unwrap_or(Value::Null)
    })
}
