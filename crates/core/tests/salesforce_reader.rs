//! The Salesforce connector against the Salesforce mock, in process and
//! without Postgres: sessions renewed on expiry, fields deleted while a run
//! starts, and the watermark kept to the live query's snapshot.

mod common;

use std::sync::{Arc, Mutex};

use common::{admin, sf_config as config, sf_start as start};

use crm_mock::salesforce::Options;
use crm_sync_core::connectors::Configured;
use crm_sync_core::engine::{self, Sink, WriteStats};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::{block_on_interruptible, runtime};
use crm_sync_core::source::{ReadRequest, Record, SyncMode};
use crm_sync_core::CrmError;
use serde_json::{json, Value};

#[derive(Default, Clone)]
struct Mem(Arc<Mutex<Vec<Record>>>, Arc<Mutex<Vec<String>>>);

impl Sink for Mem {
    fn forget_fields(&mut self, fields: &[String]) {
        *self.1.lock().unwrap() = fields.to_vec();
    }

    fn write(&mut self, batch: &[Record]) -> Result<WriteStats, CrmError> {
        self.0.lock().unwrap().extend_from_slice(batch);
        Ok(WriteStats {
            upserted: batch.len() as u64,
            ..Default::default()
        })
    }
}

/// Read `object` once; returns the records, the watermark and warnings.
fn read(
    cfg: &Configured,
    object: &str,
    fields: Option<&[&str]>,
    mode: SyncMode,
    before_read: impl FnOnce(),
) -> (Vec<Record>, Option<String>, Vec<String>, u64) {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let all = block_on_interruptible(conn.fields(object), &mut || {}).unwrap();
    let chosen = all
        .into_iter()
        .filter(|f| fields.is_none_or(|w| w.contains(&f.name.as_str())))
        .collect();
    before_read();
    let req = ReadRequest {
        object: object.into(),
        fields: chosen,
        mode,
        lookback: std::time::Duration::ZERO,
        track_deletes: true,
        resume: None,
        deletes_since: None,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut || {}).unwrap();
    let mut sink = Mem::default();
    let out = engine::run(reader.as_mut(), &mut sink, 1000, &mut || {}).unwrap();
    drop(reader);
    let recs = sink.0.lock().unwrap().clone();
    let mut warnings = out.warnings;
    warnings.extend(
        sink.1
            .lock()
            .unwrap()
            .iter()
            .map(|f| format!("sink forgot {f}")),
    );
    (recs, out.watermark, warnings, http.api_calls())
}

#[test]
fn expired_sessions_are_renewed_and_every_record_read() {
    let base = start(Options {
        accounts: 1200,
        session_calls: 2,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let (recs, wm, _, calls) = read(&cfg, "Account", Some(&["Name"]), SyncMode::Full, || {});
    let stats = admin(&base, reqwest::Method::GET, "/_mock/stats", json!({}));
    let all = soql(&base, "queryAll", "SELECT COUNT() FROM Account")["totalSize"]
        .as_u64()
        .unwrap() as usize;
    let ids: std::collections::HashSet<&str> = recs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), all, "every live and deleted record, once");
    assert!(wm.is_some());
    // 6 query pages + deletes + describe, a session for every 2 calls.
    let logins = stats["by_endpoint"]["POST /services/oauth2/token"]
        .as_u64()
        .unwrap();
    assert!(logins >= 4, "{stats}");
    assert!(calls >= 8 + logins);
}

#[test]
fn a_field_deleted_after_describe_is_dropped_with_a_warning() {
    let base = start(Options {
        accounts: 300,
        ..Options::default()
    });
    let cfg = config(&base, json!({"bulk_api": false}));
    let (recs, _, warnings, _) = read(
        &cfg,
        "Account",
        Some(&["Name", "Tier__c", "Loyalty_Score__c"]),
        SyncMode::Full,
        || {
            admin(
                &base,
                reqwest::Method::DELETE,
                "/_mock/sf/Account/fields/Tier__c",
                json!({}),
            );
        },
    );
    assert!(recs.len() >= 290);
    assert!(recs.iter().all(|r| !r.values().contains_key("Tier__c")));
    assert!(recs
        .iter()
        .any(|r| r.values()["Loyalty_Score__c"].is_number()));
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("Tier__c") && warnings[0].contains("INVALID_FIELD"));
    assert_eq!(
        warnings[1], "sink forgot Tier__c",
        "the sink stops writing the column"
    );
}

#[test]
fn the_deletes_pass_never_moves_the_watermark_past_unseen_changes() {
    let base = start(Options {
        accounts: 600,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let made = admin(
        &base,
        reqwest::Method::POST,
        "/_mock/sf/Account/upsert",
        json!({"records": [{"Name": "edited"}, {"Name": "deleted"}]}),
    );
    let (a, b) = (made["ids"][0].clone(), made["ids"][1].clone());
    // While the live query pages (after its snapshot): A is edited, then B
    // is deleted, stamped later. Only the deletes pass sees B's deletion.
    admin(
        &base,
        reqwest::Method::POST,
        "/_mock/hooks",
        json!({"path_contains": "/query/", "skip": 0,
        "action": {"op": "upsert", "object": "Account", "records": [{"Id": a, "Name": "edited mid-run"}]}}),
    );
    admin(
        &base,
        reqwest::Method::POST,
        "/_mock/hooks",
        json!({"path_contains": "/query/", "skip": 1,
        "action": {"op": "delete", "object": "Account", "ids": [b]}}),
    );
    let (recs, wm, _, _) = read(&cfg, "Account", Some(&["Name"]), SyncMode::Full, || {});
    assert!(recs
        .iter()
        .any(|r| r.id == b.as_str().unwrap() && r.deleted_at.is_some()));
    // The next run from that watermark still reads A's edit.
    assert_eq!(name_next_run(&cfg, wm, &a), "edited mid-run");
}

/// The Name of Account `id` as the next incremental run from `wm` reads it.
fn name_next_run(cfg: &Configured, wm: Option<String>, id: &Value) -> Value {
    let mode = SyncMode::Incremental {
        watermark: wm.unwrap(),
    };
    let (recs, _, _, _) = read(cfg, "Account", Some(&["Name"]), mode, || {});
    let r = recs.iter().find(|r| r.id == id.as_str().unwrap());
    r.expect("read again").values()["Name"].clone()
}

/// Run SOQL against the mock with a token of its own.
fn soql(base: &str, resource: &str, q: &str) -> Value {
    let o = Options::default();
    let (base, q, resource) = (base.to_owned(), q.to_owned(), resource.to_owned());
    runtime().block_on(async move {
        let c = reqwest::Client::new();
        let tok: Value = c
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", &o.client_id),
                ("refresh_token", &o.refresh_token),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        c.get(format!("{base}/services/data/v59.0/{resource}"))
            .query(&[("q", q)])
            .bearer_auth(tok["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

#[test]
fn pages_showing_newer_values_never_lift_the_watermark_past_unseen_edits() {
    // Later pages show current values (Salesforce does not promise a
    // snapshot): a record on the last page edited mid-run comes back with a
    // new stamp, after an edit to a record already read.
    let base = start(Options {
        accounts: 1000,
        live_cursors: true,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let first = soql(
        &base,
        "query",
        "SELECT Id FROM Account ORDER BY SystemModstamp ASC, Id ASC LIMIT 1",
    );
    let last = soql(
        &base,
        "query",
        "SELECT Id FROM Account ORDER BY SystemModstamp DESC, Id DESC LIMIT 1",
    );
    let (a, z) = (
        first["records"][0]["Id"].clone(),
        last["records"][0]["Id"].clone(),
    );
    admin(
        &base,
        reqwest::Method::POST,
        "/_mock/hooks",
        json!({"path_contains": "/query/", "skip": 0,
        "action": {"op": "upsert", "object": "Account", "records": [{"Id": a, "Name": "A edited"}]}}),
    );
    admin(
        &base,
        reqwest::Method::POST,
        "/_mock/hooks",
        json!({"path_contains": "/query/", "skip": 1,
        "action": {"op": "upsert", "object": "Account", "records": [{"Id": z, "Name": "Z edited"}]}}),
    );
    let (recs, wm, _, _) = read(&cfg, "Account", Some(&["Name"]), SyncMode::Full, || {});
    let z_seen = recs.iter().find(|r| r.id == z.as_str().unwrap()).unwrap();
    assert_eq!(
        z_seen.values()["Name"],
        "Z edited",
        "the mock served the live value"
    );
    assert_eq!(name_next_run(&cfg, wm, &a), "A edited");
}
