//! The Dataverse connector against the Dataverse mock, in process, without
//! Postgres: discovery, a tracked full read and its delta, deleted rows,
//! an expired delta token, a table without change tracking, a token that
//! expires mid-run, throttling, bad credentials, and a resumed run.

mod common;

use common::Read;

use crm_mock::dynamics::{DynamicsMock, Options};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::http::HttpClient;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::source::{Field, SyncMode};
use crm_sync_core::{CrmError, ErrorKind};
use serde_json::{json, Value};

fn config(port: u16, creds: Value) -> Configured {
    let url = format!("http://127.0.0.1:{port}");
    let opts = json!({"environment_url": url, "login_url": url, "retry_base_ms": 5,
                      "retry_max_ms": 2000, "page_size": 50});
    connectors::configure("dynamics", &opts, &creds, true).unwrap()
}

fn creds() -> Value {
    let o = Options::default();
    json!({"tenant_id": o.tenant, "client_id": o.client_id, "client_secret": o.client_secret})
}

fn admin(port: u16, path: &str, body: Value) -> Value {
    common::admin(
        &format!("http://127.0.0.1:{port}"),
        reqwest::Method::POST,
        path,
        body,
    )
}

fn fields(cfg: &Configured, object: &str) -> Vec<Field> {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    block_on_interruptible(conn.fields(object), &mut || {}).unwrap()
}

fn try_run(
    cfg: &Configured,
    object: &str,
    mode: SyncMode,
    resume: Option<String>,
) -> Result<Read, CrmError> {
    common::read(cfg, object, mode, resume, None)
}

fn run(cfg: &Configured, object: &str, mode: SyncMode) -> Read {
    try_run(cfg, object, mode, None).unwrap()
}

fn incremental(w: &Option<String>) -> SyncMode {
    SyncMode::Incremental {
        watermark: w.clone().unwrap(),
    }
}

fn start(o: Options) -> u16 {
    crm_mock::start_in_background(move || DynamicsMock::new(o))
}

#[test]
fn discovery_gives_typed_columns_lookups_under_their_name_and_skips_helpers() {
    let port = start(Options::default());
    let f = fields(&config(port, creds()), "contact");
    let by = |n: &str| f.iter().find(|x| x.name == n).cloned();
    let parent = by("_parentcustomerid_value").unwrap();
    assert_eq!(parent.column.as_deref(), Some("parentcustomerid"));
    assert_eq!(by("statecode").unwrap().pg_type.sql_name(), "bigint");
    assert_eq!(by("annualincome").unwrap().pg_type.sql_name(), "numeric");
    assert_eq!(by("modifiedon").unwrap().pg_type.sql_name(), "timestamptz");
    // Dates only are dates (Airbyte typed them as timestamps and failed).
    assert_eq!(by("birthdate").unwrap().pg_type.sql_name(), "date");
    assert!(by("new_loyaltytier").unwrap().custom);
    // A lookup's name helper and an image column cannot be selected.
    assert!(by("parentcustomeridname").is_none() && by("entityimage").is_none());
    let e = try_run(&config(port, creds()), "nosuchtable", SyncMode::Full, None)
        .err()
        .unwrap();
    assert!(e.message.contains("nosuchtable"), "{}", e.message);
}

#[test]
fn a_tracked_full_read_then_deltas_bring_changes_and_deletes_only() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    let full = run(&cfg, "contact", SyncMode::Full);
    assert_eq!(full.records.len(), 120);
    let w = full.out.watermark.clone();
    assert!(w.as_deref().unwrap().starts_with("delta:"), "{w:?}");
    // Pages of 50, then the token's table description: 3 pages + 2
    // metadata reads for the columns + 1 for the table + 1 token.
    assert_eq!(full.calls, 3 + 2 + 1 + 1, "{}", full.calls);
    let r = &full.records[0];
    let raw: Value = serde_json::from_str(&r.raw).unwrap();
    assert!(
        raw["statecode@OData.Community.Display.V1.FormattedValue"].is_string(),
        "{raw}"
    );
    assert!(r.updated_at.is_some());

    // Nothing changed: an empty delta and a new token.
    let none = run(&cfg, "contact", incremental(&w));
    assert!(none.records.is_empty());
    let w2 = none.out.watermark.clone();
    assert!(w2.as_deref().unwrap().starts_with("delta:"));

    let a = admin(port, "/_mock/dv/id", json!({"entity": "contact", "k": 5}));
    let b = admin(port, "/_mock/dv/id", json!({"entity": "contact", "k": 6}));
    admin(
        port,
        "/_mock/dv/upsert",
        json!({"entity": "contact", "id": a, "record": {"firstname": "Zoë"}}),
    );
    admin(
        port,
        "/_mock/dv/delete",
        json!({"entity": "contact", "id": b}),
    );
    let created = admin(
        port,
        "/_mock/dv/upsert",
        json!({"entity": "contact", "record": {"lastname": "New"}}),
    );
    let d = run(&cfg, "contact", incremental(&w2));
    let got: Vec<(&str, bool)> = d
        .records
        .iter()
        .map(|r| (r.id.as_str(), r.deletion_only))
        .collect();
    assert_eq!(
        got,
        vec![
            (a.as_str().unwrap(), false),
            (created["id"].as_str().unwrap(), false),
            (b.as_str().unwrap(), true)
        ]
    );
    assert_eq!(d.records[0].fields["firstname"], json!("Zoë"));
    assert!(d.records[2].deleted_at.is_some());
}

#[test]
fn an_expired_delta_token_reads_the_whole_table_with_a_warning_and_asks_for_reconciliation() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    let full = run(&cfg, "account", SyncMode::Full);
    admin(port, "/_mock/dv/expire_deltas", json!({}));
    let again = run(&cfg, "account", incremental(&full.out.watermark));
    assert_eq!(again.records.len(), 30);
    assert!(
        again.out.warnings.iter().any(|w| w.contains("had expired")),
        "{:?}",
        again.out.warnings
    );
    assert!(again.out.reconcile_needed.is_some());
    assert!(again.out.watermark.unwrap().starts_with("delta:"));
}

#[test]
fn a_table_without_change_tracking_reads_windows_of_modifiedon() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    let full = run(&cfg, "new_project", SyncMode::Full);
    assert_eq!(full.records.len(), 10);
    let w = full.out.watermark.clone().unwrap();
    assert!(w.starts_with("modified:"), "{w}");
    let p = admin(
        port,
        "/_mock/dv/id",
        json!({"entity": "new_project", "k": 3}),
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    admin(
        port,
        "/_mock/dv/upsert",
        json!({"entity": "new_project", "id": p, "record": {"new_name": "Renamed"}}),
    );
    let inc = run(&cfg, "new_project", incremental(&Some(w)));
    assert_eq!(inc.records.len(), 1);
    assert_eq!(inc.records[0].fields["new_name"], json!("Renamed"));
}

#[test]
fn a_token_that_expires_mid_run_is_replaced_and_the_run_goes_on() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    // Every token dies once the second page has been asked for.
    admin(
        port,
        "/_mock/hooks",
        json!({"path_contains": "/api/data/v9.2/contacts", "skip": 1,
                                        "action": {"action": "expire_access"}}),
    );
    let full = run(&cfg, "contact", SyncMode::Full);
    let ids: std::collections::HashSet<_> = full.records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids.len(), 120);
    let stats = common::admin(
        &format!("http://127.0.0.1:{port}"),
        reqwest::Method::GET,
        "/_mock/stats",
        Value::Null,
    );
    assert_eq!(stats["status_counts"]["401"], json!(1), "{stats}");
}

#[test]
fn throttling_waits_for_retry_after() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    admin(
        port,
        "/_mock/dv/limits",
        json!({"requests": 4, "window_s": 1}),
    );
    let full = run(&cfg, "contact", SyncMode::Full);
    assert_eq!(full.records.len(), 120);
    // Refused at least once, each time waited for and asked again.
    let stats = common::admin(
        &format!("http://127.0.0.1:{port}"),
        reqwest::Method::GET,
        "/_mock/stats",
        Value::Null,
    );
    let throttled = stats["throttled"].as_u64().unwrap();
    assert!(throttled >= 1, "{stats}");
    assert_eq!(stats["status_counts"]["429"].as_u64().unwrap(), throttled);
}

#[test]
fn bad_credentials_name_what_to_fix_without_the_secret() {
    let port = start(Options::default());
    let mut c = creds();
    c["client_secret"] = json!("wrong-Secret-42");
    let e = try_run(&config(port, c), "contact", SyncMode::Full, None)
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("AADSTS7000215"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap().contains("client_secret"));
    assert!(!format!("{e:?}").contains("wrong-Secret-42"));
    let mut c = creds();
    c["tenant_id"] = json!("00000000-0000-0000-0000-000000000000");
    let e = try_run(&config(port, c), "contact", SyncMode::Full, None)
        .err()
        .unwrap();
    assert!(e.message.contains("AADSTS90002"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap().contains("tenant_id"));
}

#[test]
fn a_run_resumes_from_its_checkpoint() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    let (n, cp) = common::first_page(&cfg, "contact", SyncMode::Full);
    assert_eq!(n, 50);
    let rest = try_run(&cfg, "contact", SyncMode::Full, Some(cp)).unwrap();
    assert_eq!(rest.records.len(), 70);
    assert!(rest.out.watermark.unwrap().starts_with("delta:"));
    // The full read's first page and the rest: every contact once.
    let all = run(&cfg, "contact", SyncMode::Full);
    let rest_ids: std::collections::HashSet<_> =
        rest.records.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        all.records
            .iter()
            .filter(|r| !rest_ids.contains(&r.id))
            .count(),
        50
    );
}

#[test]
fn a_resumed_rereading_after_an_expired_token_still_asks_for_reconciliation() {
    let port = start(Options::default());
    let cfg = config(port, creds());
    let full = run(&cfg, "contact", SyncMode::Full);
    admin(port, "/_mock/dv/expire_deltas", json!({}));
    let (n, cp) = common::first_page(&cfg, "contact", incremental(&full.out.watermark));
    assert_eq!(n, 50);
    let rest = try_run(&cfg, "contact", incremental(&full.out.watermark), Some(cp)).unwrap();
    assert_eq!(rest.records.len(), 70);
    assert!(rest.out.reconcile_needed.is_some());
    assert!(rest.out.warnings.iter().any(|w| w.contains("had expired")));
}

#[test]
fn a_window_resumed_after_change_tracking_was_turned_on_goes_on() {
    let port = start(Options {
        projects: 120,
        ..Options::default()
    });
    let cfg = config(port, creds());
    let full = run(&cfg, "new_project", SyncMode::Full);
    // Every project changes; the window's first page is read, then the
    // worker stops, and an admin turns change tracking on.
    for k in 1..=120u64 {
        let id = admin(
            port,
            "/_mock/dv/id",
            json!({"entity": "new_project", "k": k}),
        );
        admin(
            port,
            "/_mock/dv/upsert",
            json!({"entity": "new_project", "id": id, "record": {"new_name": "x"}}),
        );
    }
    let (n, cp) = common::first_page(&cfg, "new_project", incremental(&full.out.watermark));
    assert_eq!(n, 50);
    admin(
        port,
        "/_mock/dv/tracking",
        json!({"entity": "new_project", "enabled": true}),
    );
    let rest = try_run(
        &cfg,
        "new_project",
        incremental(&full.out.watermark),
        Some(cp),
    )
    .unwrap();
    assert_eq!(rest.records.len(), 70);
}

#[test]
fn an_api_echoing_the_request_never_shows_the_token() {
    let port = start(Options::default());
    let url = format!("http://127.0.0.1:{port}");
    let opts = json!({"environment_url": url, "login_url": url, "max_retries": 0});
    let cfg = connectors::configure("dynamics", &opts, &creds(), true).unwrap();
    admin(
        port,
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/Attributes", "kind": "echo_secrets", "status": 400, "count": 5}]}),
    );
    let e = try_run(&cfg, "contact", SyncMode::Full, None)
        .err()
        .unwrap();
    let text = format!("{e:?}");
    assert!(!text.contains("dv-access-"), "{text}");
    assert!(text.contains("missing privileges"), "{text}");
}

/// A self-signed certificate, its private key and its public key (PEM),
/// made with openssl.
fn certificate() -> (String, String, String) {
    let dir = std::env::temp_dir().join(format!(
        "dv-cert-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert, public) = (
        dir.join("key.pem"),
        dir.join("cert.pem"),
        dir.join("pub.pem"),
    );
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pg_crm_sync test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let out = std::process::Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    std::fs::write(&public, &out.stdout).unwrap();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let r = (read(&cert), read(&key), read(&public));
    std::fs::remove_dir_all(&dir).unwrap();
    r
}

#[test]
fn certificate_credentials_sign_a_client_assertion() {
    let (cert, key, public) = certificate();
    let port = start(Options {
        client_cert: Some(cert.clone()),
        client_cert_key: Some(public),
        ..Options::default()
    });
    let o = Options::default();
    let with = |key: &str| json!({"tenant_id": o.tenant, "client_id": o.client_id, "certificate": cert, "private_key": key});
    let full = run(&config(port, with(&key)), "account", SyncMode::Full);
    assert_eq!(full.records.len(), 30);
    // Another key: the assertion's signature does not verify.
    let (_, other_key, _) = certificate();
    let e = try_run(
        &config(port, with(&other_key)),
        "account",
        SyncMode::Full,
        None,
    )
    .err()
    .unwrap();
    assert_eq!(e.kind, ErrorKind::Auth);
    assert!(e.message.contains("AADSTS700027"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap().contains("certificate"));
    let text = format!("{e:?}");
    assert!(!text.contains("PRIVATE KEY") && !text.contains(&other_key[40..80]));
    // A secret and a certificate together are refused when the source is made.
    let mut both = with(&key);
    both["client_secret"] = json!("s");
    let url = format!("http://127.0.0.1:{port}");
    let e = connectors::configure("dynamics", &json!({"environment_url": url}), &both, true)
        .unwrap_err();
    assert!(
        e.message
            .contains("client_secret, or credentials.certificate"),
        "{}",
        e.message
    );
}
