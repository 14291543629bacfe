//! What a request may reach and read: no redirect is followed, no body
//! larger than the source allows is read, no internal address is reached
//! over https (loopback over plain http is the mocks' and stays allowed).
//! Against the HubSpot mock on 127.0.0.1, in process; no request leaves
//! 127.0.0.0/8 (a redirect's target is named in the error, never called).

mod common;

use crm_mock::hubspot::{HubSpotMock, Options};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::http::{address, HttpClient};
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::ErrorKind;
use serde_json::{json, Value};

fn config(base: &str, extra: Value) -> Configured {
    let mut opts = json!({"base_url": base, "retry_base_ms": 5, "retry_max_ms": 20});
    for (k, v) in extra.as_object().unwrap() {
        opts[k] = v.clone();
    }
    let creds = json!({"access_token": Options::default().token});
    connectors::configure("hubspot", &opts, &creds, false).unwrap()
}

fn mock() -> u16 {
    crm_mock::start_in_background(|| {
        HubSpotMock::new(Options {
            contacts: 10,
            ..Default::default()
        })
    })
}

/// A call of the mock's admin or stats API; its JSON answer.
fn admin(port: u16, method: &str, path: &str, body: Value) -> Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    common::admin(&format!("http://127.0.0.1:{port}"), method, path, body)
}

fn fields(cfg: &Configured) -> (Result<usize, crm_sync_core::CrmError>, u64) {
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let out = block_on_interruptible(conn.fields("contacts"), &mut || {}).map(|f| f.len());
    drop(conn);
    (out, http.api_calls())
}

#[test]
fn a_redirect_is_an_error_naming_its_target_and_is_not_followed() {
    let port = mock();
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/crm/v3/properties", "kind": "redirect", "count": 0}]}),
    );
    let cfg = config(&format!("http://127.0.0.1:{port}"), json!({}));
    let (out, calls) = fields(&cfg);
    let e = out.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport);
    assert!(
        e.message
            .contains("redirected the request (HTTP 302) to https://collector.example"),
        "{}",
        e.message
    );
    assert!(e.message.contains("not followed"));
    // Neither followed nor retried: one request, to the mock.
    assert_eq!(calls, 1);
    let stats = admin(port, "GET", "/_mock/stats", json!(null));
    assert_eq!(stats["status_counts"]["302"], 1, "{stats}");
}

#[test]
fn a_body_larger_than_the_source_allows_is_not_read() {
    let port = mock();
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/crm/v3/properties", "kind": "gzip_bomb",
                          "size_mb": 8, "count": 0}]}),
    );
    let cfg = config(
        &format!("http://127.0.0.1:{port}"),
        json!({"max_response_mb": 1}),
    );
    let (out, calls) = fields(&cfg);
    let e = out.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadResponse);
    assert!(
        e.message.contains("larger than 1 MB (after decompression)"),
        "{}",
        e.message
    );
    assert!(e.hint.unwrap().contains("max_response_mb"));
    assert_eq!(calls, 1, "an oversized body is not asked for again");
    // The same body under the default cap (64 MB) is read, and is no JSON.
    let cfg = config(&format!("http://127.0.0.1:{port}"), json!({}));
    assert_eq!(fields(&cfg).0.unwrap_err().kind, ErrorKind::BadResponse);
}

#[test]
fn internal_addresses_are_refused_over_https_unless_allowed() {
    // Nothing listens on port 1: a request that went out would fail to
    // connect (Transport); a refused one fails before (InvalidConfig).
    for base in [
        "https://127.0.0.1:1",
        "https://[::1]:1",
        "https://localhost:1",
    ] {
        let cfg = config(base, json!({"max_retries": 0}));
        let (out, _) = fields(&cfg);
        let e = out.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig, "{base}: {e:?}");
        assert!(
            e.message.contains("is an internal address"),
            "{base}: {}",
            e.message
        );
        assert!(e.hint.unwrap().contains("crm_sync.allowed_networks"));
    }
    // A superuser's crm_sync.allowed_networks lets the request out.
    let mut cfg = config("https://127.0.0.1:1", json!({"max_retries": 0}));
    cfg.config.http.allowed_networks = address::parse_networks("127.0.0.0/8").unwrap();
    let e = fields(&cfg).0.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transport, "{e:?}");
}

#[test]
fn plain_http_to_loopback_by_name_is_allowed() {
    let port = mock();
    let cfg = config(&format!("http://localhost:{port}"), json!({}));
    assert!(fields(&cfg).0.unwrap() > 0);
}

#[test]
fn a_salesforce_session_token_never_reaches_an_error() {
    let base = common::sf_start(crm_mock::salesforce::Options::default());
    common::admin(
        &base,
        reqwest::Method::POST,
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/describe", "kind": "echo_session", "count": 0}]}),
    );
    let cfg = common::sf_config(&base, json!({}));
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let e = block_on_interruptible(conn.fields("Account"), &mut || {}).unwrap_err();
    // The mock quoted "Bearer <session>" (in the error's detail); the
    // session is gone from every text of the error.
    let all = format!("{} | {:?} | {:?}", e.message, e.detail, e.hint);
    assert!(
        all.contains("Request with Bearer [redacted] was refused"),
        "{all}"
    );
    assert_eq!(
        all.matches("Bearer ").count(),
        all.matches("Bearer [redacted]").count()
    );
}

#[test]
fn a_paging_cursor_that_comes_back_stops_the_run() {
    let port = mock();
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/crm/v3/objects/contacts", "kind": "cursor_loop", "count": 0}]}),
    );
    let cfg = config(&format!("http://127.0.0.1:{port}"), json!({}));
    let http = HttpClient::new(cfg.config.http.clone()).unwrap();
    let conn = cfg.connect(&http).unwrap();
    let req = crm_sync_core::source::ReadRequest {
        object: "contacts".into(),
        fields: vec![],
        mode: crm_sync_core::source::SyncMode::Full,
        lookback: std::time::Duration::ZERO,
        track_deletes: true,
        resume: None,
        deletes_since: None,
    };
    let mut reader = block_on_interruptible(conn.reader(req), &mut || {}).unwrap();
    let mut sink = common::Crashing::dying_after(0);
    let e = crm_sync_core::engine::run(reader.as_mut(), &mut sink, 100, &mut || {}).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadResponse);
    assert!(
        e.message.contains("paging.next.after came back"),
        "{}",
        e.message
    );
    drop(reader);
    // Pages answering loop-a, loop-b, then loop-a again: three, then the
    // error (not a fourth request).
    assert_eq!(http.api_calls(), 3);
}
