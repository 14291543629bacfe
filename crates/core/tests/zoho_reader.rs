//! The Zoho CRM connector against the Zoho mock, in process, without
//! Postgres: field groups of 50 joined by id, page then page tokens, COQL
//! past the page tokens' end, incremental runs and deleted records, token
//! errors that come as HTTP 200, a token expiring mid-run, API credits.

mod common;

use common::Read;

use crm_mock::zoho::{id_of, Options, ZohoMock};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::source::SyncMode;
use crm_sync_core::{CrmError, ErrorKind};
use serde_json::{json, Value};

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn config(port: u16, extra: Value, creds: Value) -> Configured {
    let mut opts = json!({"accounts_url": url(port), "retry_base_ms": 5, "retry_max_ms": 20});
    for (k, v) in extra.as_object().unwrap() {
        opts[k] = v.clone();
    }
    connectors::configure("zoho", &opts, &creds, true).unwrap()
}

fn creds() -> Value {
    let o = Options::default();
    json!({"client_id": o.client_id, "client_secret": o.client_secret, "refresh_token": o.refresh_token})
}

fn admin(port: u16, path: &str, body: Value) -> Value {
    common::admin(&url(port), reqwest::Method::POST, path, body)
}

fn stats(port: u16) -> Value {
    common::admin(
        &url(port),
        reqwest::Method::GET,
        "/_mock/stats",
        Value::Null,
    )
}

fn try_run(
    cfg: &Configured,
    module: &str,
    mode: SyncMode,
    deletes_since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Read, CrmError> {
    common::read(cfg, module, mode, None, deletes_since)
}

fn run(cfg: &Configured, module: &str, mode: SyncMode) -> Read {
    try_run(cfg, module, mode, None).unwrap()
}

fn start(o: Options) -> u16 {
    crm_mock::start_in_background(move || ZohoMock::new(o))
}

#[test]
fn wide_modules_are_read_in_groups_of_fifty_joined_by_id() {
    let port = start(Options::default());
    let cfg = config(port, json!({}), creds());
    let r = run(&cfg, "Contacts", SyncMode::Full);
    assert_eq!(r.records.len(), 120);
    // Every field of the 60-odd a list call can read, in one record.
    let rec = &r.records[6];
    for f in [
        "First_Name",
        "Email",
        "Account_Name",
        "Custom_Score_1",
        "Custom_Score_45",
        "Modified_Time",
    ] {
        assert!(
            rec.fields.contains_key(f),
            "{f} missing from {:?}",
            rec.fields.keys()
        );
    }
    let truth = admin(
        port,
        "/_mock/zoho/record",
        json!({"module": "Contacts", "id": rec.id}),
    );
    assert_eq!(rec.fields["Custom_Score_45"], truth["Custom_Score_45"]);
    let raw: Value = serde_json::from_str(&rec.raw).unwrap();
    assert_eq!(raw["Account_Name"], truth["Account_Name"]);
    // Subforms and images are not list fields.
    assert!(!rec.fields.contains_key("Attachments_Sub"));
    // One token; fields; per page of 200: the first group and the second
    // by ids (two calls of 100); then the deleted records (none: 204).
    assert_eq!(r.calls, 1 + 1 + (1 + 2) + 1, "{}", r.calls);
}

#[test]
fn past_the_page_tokens_end_coql_goes_on_by_id() {
    let port = start(Options {
        accounts: 1_000,
        token_limit: 400,
        ..Options::default()
    });
    let cfg = config(port, json!({}), creds());
    let r = run(&cfg, "Accounts", SyncMode::Full);
    let ids: std::collections::HashSet<_> = r.records.iter().map(|x| x.id.clone()).collect();
    assert_eq!((r.records.len(), ids.len()), (1_000, 1_000));
    assert_eq!(stats(port)["coql_calls"], json!(1));
}

#[test]
fn incremental_runs_read_what_changed_and_the_deleted() {
    let port = start(Options::default());
    let cfg = config(port, json!({}), creds());
    let full = run(&cfg, "Deals", SyncMode::Full);
    assert_eq!(full.records.len(), 40);
    let w = full.out.watermark.clone().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    admin(
        port,
        "/_mock/zoho/upsert",
        json!({"module": "Deals", "id": id_of(4), "record": {"Stage": "Closed Lost"}}),
    );
    admin(
        port,
        "/_mock/zoho/delete",
        json!({"module": "Deals", "id": id_of(5)}),
    );
    let inc = run(&cfg, "Deals", SyncMode::Incremental { watermark: w });
    let got: Vec<(String, bool)> = inc
        .records
        .iter()
        .map(|r| (r.id.clone(), r.deletion_only))
        .collect();
    assert_eq!(got, vec![(id_of(4), false), (id_of(5), true)]);
    assert_eq!(inc.records[0].fields["Stage"], json!("Closed Lost"));
    assert!(inc.out.deletes_covered.is_some());
}

#[test]
fn converted_leads_are_read_too() {
    let port = start(Options::default());
    let cfg = config(port, json!({}), creds());
    let r = run(&cfg, "Leads", SyncMode::Full);
    assert_eq!(r.records.len(), 20);
    assert!(r
        .records
        .iter()
        .any(|x| x.fields["Converted__s"] == json!(true)));
}

#[test]
fn token_errors_in_http_200_name_what_to_fix() {
    let port = start(Options::default());
    let mut c = creds();
    c["refresh_token"] = json!("1000.revoked-Refresh-9");
    let e = try_run(&config(port, json!({}), c), "Deals", SyncMode::Full, None)
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("invalid_code"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap().contains("refresh token"));
    assert!(!format!("{e:?}").contains("revoked-Refresh-9"));
    let mut c = creds();
    c["client_secret"] = json!("wrong-Secret-3");
    let e = try_run(&config(port, json!({}), c), "Deals", SyncMode::Full, None)
        .err()
        .unwrap();
    assert!(e.message.contains("invalid_client"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap().contains("data centre"));
    assert!(!format!("{e:?}").contains("wrong-Secret-3"));
}

#[test]
fn a_token_that_expires_mid_run_is_replaced() {
    let port = start(Options::default());
    let cfg = config(port, json!({}), creds());
    admin(
        port,
        "/_mock/hooks",
        json!({"path_contains": "/crm/v8/Contacts", "skip": 1, "action": {"action": "expire_access"}}),
    );
    let r = run(&cfg, "Contacts", SyncMode::Full);
    assert_eq!(r.records.len(), 120);
    assert_eq!(stats(port)["status_counts"]["401"], json!(1));
}

#[test]
fn a_run_stops_before_the_days_credits_pass_the_share() {
    let port = start(Options {
        accounts: 1_000,
        ..Options::default()
    });
    // 1,000 credits a day, 795 spent: the header shows; 80% is 800, which
    // the run's first calls pass.
    admin(
        port,
        "/_mock/zoho/credits",
        json!({"daily": 1000, "spent": 795}),
    );
    let cfg = config(port, json!({"daily_credits": 1000}), creds());
    let e = try_run(&cfg, "Accounts", SyncMode::Full, None)
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert!(e.message.contains("max_daily_share"), "{}", e.message);
    // Used up: the 429 is final, not retried.
    admin(
        port,
        "/_mock/zoho/credits",
        json!({"daily": 1000, "spent": 1000}),
    );
    let cfg = config(port, json!({"max_daily_share": 100}), creds());
    let before = stats(port)["status_counts"]["429"].as_u64().unwrap_or(0);
    let e = try_run(&cfg, "Accounts", SyncMode::Full, None)
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::RateLimited);
    assert_eq!(
        stats(port)["status_counts"]["429"].as_u64().unwrap(),
        before + 1
    );
}

#[test]
fn reconciliation_lists_ids_by_coql_and_reads_missing_ones_by_id() {
    let port = start(Options {
        accounts: 2_500,
        ..Options::default()
    });
    let cfg = config(port, json!({}), creds());
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let mut ids = block_on_interruptible(conn.ids("Accounts", &[]), &mut || {}).unwrap();
    let mut all = Vec::new();
    while let Some(p) = block_on_interruptible(ids.next_ids(), &mut || {}).unwrap() {
        all.extend(p);
    }
    assert_eq!(all.len(), 2_500);
    drop(ids);
    let fields = block_on_interruptible(conn.fields("Accounts"), &mut || {}).unwrap();
    let want = vec![id_of(7), id_of(9), "not-a-number".to_owned()];
    let got =
        block_on_interruptible(conn.read_ids("Accounts", &fields, &want), &mut || {}).unwrap();
    let ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![id_of(7).as_str(), id_of(9).as_str()]);
}

#[test]
fn a_resumed_run_keeps_the_interrupted_runs_start_as_its_watermark() {
    let port = start(Options {
        accounts: 500,
        ..Options::default()
    });
    let cfg = config(port, json!({}), creds());
    let (n, cp) = common::first_page(&cfg, "Accounts", SyncMode::Full);
    assert_eq!(n, 200);
    // Record 10, read before the stop, changes while the worker is down.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    admin(
        port,
        "/_mock/zoho/upsert",
        json!({"module": "Accounts", "id": id_of(10), "record": {"Industry": "Changed meanwhile"}}),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let rest = common::read(&cfg, "Accounts", SyncMode::Full, Some(cp), None).unwrap();
    assert_eq!(rest.records.len(), 300);
    // The next run reads from before the change: record 10 comes again.
    let next = run(
        &cfg,
        "Accounts",
        SyncMode::Incremental {
            watermark: rest.out.watermark.unwrap(),
        },
    );
    let ids: Vec<&str> = next.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![id_of(10).as_str()]);
}

#[test]
fn a_record_deleted_between_field_group_calls_is_not_written_half_empty() {
    let port = start(Options::default());
    let cfg = config(port, json!({}), creds());
    // The second call (the first page's second field group by ids) comes
    // after record 9 is deleted.
    admin(
        port,
        "/_mock/hooks",
        json!({"path_contains": "/crm/v8/Contacts", "skip": 1,
               "action": {"action": "delete", "module": "Contacts", "id": id_of(9)}}),
    );
    let r = run(&cfg, "Contacts", SyncMode::Full);
    let live: Vec<&crm_sync_core::source::Record> =
        r.records.iter().filter(|x| !x.deletion_only).collect();
    assert_eq!(live.len(), 119);
    assert!(live
        .iter()
        .all(|x| x.fields.contains_key("Custom_Score_45")));
    // Its delete comes with the deleted records.
    assert!(r
        .records
        .iter()
        .any(|x| x.deletion_only && x.id == id_of(9)));
}

#[test]
fn an_api_echoing_the_request_never_shows_the_token() {
    let port = start(Options::default());
    let cfg = config(port, json!({"max_retries": 0}), creds());
    admin(
        port,
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/crm/v8/settings/fields", "kind": "echo_secrets", "status": 400, "count": 5}]}),
    );
    let e = try_run(&cfg, "Deals", SyncMode::Full, None).err().unwrap();
    let text = format!("{e:?}");
    assert!(!text.contains("zoho-access-"), "{text}");
    assert!(text.contains("invalid data"), "{text}");
}
