//! Associations land in the raw JSON of HubSpot records: list pages ask for
//! them (`associations=`), search pages get them from the v4 batch read. The
//! HubSpot reader against the HubSpot mock, in process, without Postgres.

use std::io::{Read, Write};
use std::net::TcpStream;

use crm_mock::hubspot::{HubSpotMock, Options};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::engine::{self, Sink, WriteStats};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::source::{ReadRequest, Record, SyncMode};
use crm_sync_core::CrmError;
use serde_json::{json, Value};

/// Mock changes are made at this time (ten minutes ago: after every seeded
/// one, and inside a run's search window, which ends when the run begins).
static CHANGED: std::sync::LazyLock<i64> =
    std::sync::LazyLock::new(|| chrono::Utc::now().timestamp_millis() - 600_000);

fn config(port: u16, extra: Value) -> Configured {
    let mut opts = json!({"base_url": format!("http://127.0.0.1:{port}"), "retry_base_ms": 5,
                          "retry_max_ms": 20, "lookback_seconds": 0});
    for (k, v) in extra.as_object().unwrap() {
        opts[k] = v.clone();
    }
    let creds = json!({"access_token": Options::default().token});
    connectors::configure("hubspot", &opts, &creds, true).unwrap()
}

/// A request to the mock's admin or stats API; its JSON answer.
fn admin(port: u16, method: &str, path: &str, body: Value) -> Value {
    let body = body.to_string();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    serde_json::from_slice(&raw[split + 4..]).unwrap()
}

#[derive(Default)]
struct Keep(Vec<Record>);

impl Sink for Keep {
    fn write(&mut self, batch: &[Record]) -> Result<WriteStats, CrmError> {
        self.0.extend_from_slice(batch);
        Ok(WriteStats::default())
    }
}

/// Every record one run of `object` returns, by id, and the run's API calls.
fn run(cfg: &Configured, object: &str, mode: SyncMode) -> (Vec<(String, Value)>, u64) {
    try_run(cfg, object, mode).unwrap()
}

fn try_run(
    cfg: &Configured,
    object: &str,
    mode: SyncMode,
) -> Result<(Vec<(String, Value)>, u64), CrmError> {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let fields = block_on_interruptible(conn.fields(object), &mut || {}).unwrap();
    let req = ReadRequest {
        object: object.into(),
        fields: fields
            .into_iter()
            .filter(|f| f.name == "dealname" || f.name == "email")
            .collect(),
        mode,
        lookback: std::time::Duration::ZERO,
        track_deletes: true,
        resume: None,
        deletes_since: None,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut || {}).unwrap();
    let mut sink = Keep::default();
    engine::run(reader.as_mut(), &mut sink, 500, &mut || {})?;
    drop(reader);
    let recs = sink
        .0
        .into_iter()
        .map(|r| (r.id.clone(), serde_json::from_str(&r.raw).unwrap()))
        .collect();
    Ok((recs, http.api_calls()))
}

fn results(raw: &Value, to: &str) -> Value {
    raw["associations"][to]["results"].clone()
}

fn start() -> u16 {
    crm_mock::start_in_background(|| HubSpotMock::new(Options::default()))
}

#[test]
fn list_pages_carry_associations() {
    let port = start();
    let (deals, _) = run(&config(port, json!({})), "deals", SyncMode::Full);
    assert_eq!(deals.len(), 300);
    for (id, raw) in &deals {
        let companies = results(raw, "companies");
        assert_eq!(companies[0]["type"], "deal_to_company", "deal {id}: {raw}");
        assert_eq!(companies[1]["type"], "deal_to_company_unlabeled");
        assert_eq!(companies[0]["id"], companies[1]["id"]);
        assert_eq!(results(raw, "contacts")[0]["type"], "deal_to_contact");
    }
    assert_eq!(v4_calls(port), 0);

    // Contacts: companies only.
    let (contacts, _) = run(&config(port, json!({})), "contacts", SyncMode::Full);
    let linked = contacts
        .iter()
        .filter(|(_, raw)| results(raw, "companies")[0]["type"] == "contact_to_company")
        .count();
    assert!(linked > 900, "{linked}");
    assert!(contacts
        .iter()
        .all(|(_, raw)| raw["associations"].get("contacts").is_none()));

    // Switched off: no associations, not asked for.
    let (deals, _) = run(
        &config(port, json!({"associations": false})),
        "deals",
        SyncMode::Full,
    );
    assert!(deals
        .iter()
        .all(|(_, raw)| raw.get("associations").is_none()));
}

#[test]
fn search_pages_get_associations_from_the_v4_batch_read() {
    let port = start();
    // 150 deals change (one v4 call per type for the page), one gets new
    // companies (12 primary) and contacts, one loses its companies, and a
    // new deal has none.
    let mut records: Vec<Value> = (1..=150)
        .map(|i| json!({"id": i.to_string(), "properties": {"dealname": format!("changed {i}")}}))
        .collect();
    records[4] = json!({"id": "5", "properties": {"dealname": "moved"},
                        "associations": {"companies": ["12", "7"], "contacts": ["3"]}});
    records[5] = json!({"id": "6", "associations": {"companies": []}});
    records.push(json!({"properties": {"dealname": "brand new"}}));
    admin(
        port,
        "POST",
        "/_mock/deals/upsert",
        json!({"records": records, "timestamp_ms": *CHANGED}),
    );
    admin(port, "POST", "/_mock/reset_stats", json!({}));

    let watermark = chrono::DateTime::from_timestamp_millis(*CHANGED - 1000)
        .unwrap()
        .to_rfc3339();
    let cfg = config(port, json!({}));
    let (deals, _) = run(&cfg, "deals", SyncMode::Incremental { watermark });
    let by_id: std::collections::HashMap<&str, &Value> =
        deals.iter().map(|(id, raw)| (id.as_str(), raw)).collect();
    assert_eq!(by_id.len(), 151);
    assert_eq!(
        results(by_id["5"], "companies"),
        json!([{"id": "12", "type": "deal_to_company"},
               {"id": "7", "type": "deal_to_company_unlabeled"},
               {"id": "12", "type": "deal_to_company_unlabeled"}])
    );
    assert_eq!(
        results(by_id["5"], "contacts"),
        json!([{"id": "3", "type": "deal_to_contact"}])
    );
    // The rest of the record is as search returned it.
    assert_eq!(by_id["5"]["properties"]["dealname"], "moved");
    assert_eq!(by_id["5"]["archived"], false);
    // No companies: that key is absent; no associations at all: no key.
    assert!(by_id["6"]["associations"].get("companies").is_none());
    assert_eq!(results(by_id["6"], "contacts").as_array().unwrap().len(), 1);
    assert!(by_id["301"].get("associations").is_none());

    // A search page of 151 ids: one batch read (of up to 1,000) per
    // association type.
    let stats = admin(port, "GET", "/_mock/stats", json!({}));
    let calls = &stats["by_endpoint"];
    assert_eq!(
        calls["POST /crm/v4/associations/deals/companies/batch/read"],
        1
    );
    assert_eq!(
        calls["POST /crm/v4/associations/deals/contacts/batch/read"],
        1
    );
    assert_eq!(calls["POST /crm/v3/objects/deals/search"], 1);

    // The same deal read by the list API lands in the same shape.
    let (listed, _) = run(&cfg, "deals", SyncMode::Full);
    let five = &listed.iter().find(|(id, _)| id == "5").unwrap().1;
    assert_eq!(
        five["associations"]["companies"]["results"][0]["id"],
        by_id["5"]["associations"]["companies"]["results"][0]["id"]
    );
    assert_eq!(five["associations"], by_id["5"]["associations"]);

    // Switched off: search pages get no v4 calls.
    admin(port, "POST", "/_mock/reset_stats", json!({}));
    let watermark = chrono::DateTime::from_timestamp_millis(*CHANGED - 1000)
        .unwrap()
        .to_rfc3339();
    let (deals, _) = run(
        &config(port, json!({"associations": false})),
        "deals",
        SyncMode::Incremental { watermark },
    );
    assert!(deals
        .iter()
        .all(|(_, raw)| raw.get("associations").is_none()));
    assert_eq!(v4_calls(port), 0);
}

/// How many v4 associations calls the mock has answered.
fn v4_calls(port: u16) -> u64 {
    let stats = admin(port, "GET", "/_mock/stats", json!({}));
    stats["by_endpoint"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("/crm/v4/"))
        .map(|(_, v)| v.as_u64().unwrap_or(1))
        .sum()
}

#[test]
fn a_batch_read_failing_for_another_reason_fails_the_page() {
    let port = start();
    let cfg = config(port, json!({}));
    admin(
        port,
        "POST",
        "/_mock/deals/upsert",
        json!({"records": [{"properties": {"dealname": "Changed"}}], "timestamp_ms": *CHANGED}),
    );
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/crm/v4/", "count": 1, "kind": "association_error"}]}),
    );
    let watermark = chrono::DateTime::from_timestamp_millis(*CHANGED - 1000)
        .unwrap()
        .to_rfc3339();
    let err = try_run(&cfg, "deals", SyncMode::Incremental { watermark }).unwrap_err();
    assert!(
        err.message.contains("READ_FAILED"),
        "the record is not landed without its links: {}",
        err.message
    );
}
