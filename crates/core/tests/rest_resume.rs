//! The declarative connector's reader against the Pipedrive mock, in
//! process and without Postgres: a run that stops after a checkpoint
//! resumes from it; a saved position the API no longer takes starts that
//! listing over; a saved position in a listing the spec no longer has is
//! not used.

mod common;

use common::Crashing;
use crm_mock::pipedrive::{Options, PipedriveMock};
use crm_sync_core::connectors::{self, Configured};
use serde_json::{json, Value};

const PERSONS: u64 = 2_300;

fn spec() -> Value {
    serde_json::from_str(include_str!("../../../specs/pipedrive.json")).unwrap()
}

fn config(base: &str, spec: &Value) -> Configured {
    let opts =
        json!({"base_url": base, "retry_base_ms": 5, "retry_max_ms": 20, "lookback_seconds": 0});
    connectors::configure_spec(
        "pipedrive",
        spec,
        &opts,
        &json!({"api_token": Options::default().token}),
        false,
    )
    .unwrap()
}

fn start() -> String {
    let port = crm_mock::start_in_background(|| {
        PipedriveMock::new(Options {
            persons: PERSONS,
            ..Default::default()
        })
    });
    format!("http://127.0.0.1:{port}")
}

fn ids(records: &[crm_sync_core::source::Record]) -> std::collections::BTreeSet<u64> {
    records.iter().map(|r| r.id.parse().unwrap()).collect()
}

#[test]
fn a_run_resumes_after_its_last_checkpoint_and_a_stale_position_starts_over() {
    let base = start();
    let cfg = config(&base, &spec());
    let run = |resume, sink: &mut Crashing| {
        common::run(
            &cfg,
            "persons",
            |f| f.name == "first_name",
            500,
            resume,
            sink,
        )
    };

    let mut clean = Crashing::dying_after(0);
    let (out, clean_calls) = run(None, &mut clean);
    out.unwrap();
    assert_eq!(ids(&clean.all()).len() as u64, PERSONS);

    // Dies after its 2nd checkpoint: 1,000 records committed.
    let mut first = Crashing::dying_after(2);
    let (out, first_calls) = run(None, &mut first);
    assert!(out.is_err());
    let position = first.position.clone().unwrap();
    let committed = ids(&first.committed);
    assert_eq!(committed.len(), 1_000);

    let mut second = Crashing::dying_after(0);
    let (out, second_calls) = run(Some(position.clone()), &mut second);
    out.unwrap();
    let mut all = committed.clone();
    all.extend(ids(&second.all()));
    assert_eq!(all.len() as u64, PERSONS, "records lost across the resume");
    // The resumed run did not list the committed pages again.
    assert!(
        second_calls < clean_calls,
        "{second_calls} calls resumed, {clean_calls} clean, {first_calls} first"
    );

    // A position whose cursor the API no longer takes: the listing starts
    // over in the same window, and every record is read.
    let mut cp: Value = serde_json::from_str(&position).unwrap();
    cp["next"] = json!({"cursor": "not-a-cursor"});
    let mut third = Crashing::dying_after(0);
    let (out, _) = run(Some(cp.to_string()), &mut third);
    out.unwrap();
    assert_eq!(ids(&third.all()).len() as u64, PERSONS);
}

#[test]
fn a_position_in_a_listing_the_spec_no_longer_has_is_not_used() {
    let base = start();
    let mut s = spec();
    // deals had a deleted-deals listing; the spec changed and has none.
    let deals = s["streams"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|x| x["name"] == "deals")
        .unwrap();
    deals["deletes"] = json!({"flag": {"path": "is_deleted", "value": true}});
    let cfg = config(&base, &s);
    let position = json!({"phase": "deletes", "next": {"cursor": "x"}, "since_ms": null,
                          "until_ms": 1_700_000_000_000i64, "max_seen_ms": null, "full": true});
    let mut sink = Crashing::dying_after(0);
    let (out, _) = common::run(
        &cfg,
        "deals",
        |_| false,
        500,
        Some(position.to_string()),
        &mut sink,
    );
    out.unwrap();
    assert_eq!(sink.all().len(), 40);
}

#[test]
fn a_checkpoint_keeps_no_api_key_an_api_echoes_into_its_links() {
    let base = start();
    common::admin(
        &base,
        reqwest::Method::POST,
        "/_mock/pd/generic",
        json!({"auth": "api_key_query", "count": 40}),
    );
    let s = json!({
        "base_url": base,
        "auth": {"type": "api_key", "in": "query", "name": "api_key", "credential": "key"},
        "streams": [{
            "name": "items",
            "request": {"path": "/generic/items", "params": {"style": "next_url"},
                        "page_size": 10, "page_size_param": "limit"},
            "records": {"path": "$.results", "primary_key": "id", "modified": "modified_at"},
            "paging": {"type": "next_url", "next_url_path": "$.next"}
        }]
    });
    let opts = json!({"spec": s, "retry_base_ms": 5, "retry_max_ms": 20});
    let cfg = connectors::configure("rest", &opts, &json!({"key": "gen-key"}), false).unwrap();
    let mut sink = Crashing::dying_after(2);
    let (out, _) = common::run(&cfg, "items", |_| false, 10, None, &mut sink);
    assert!(out.is_err());
    let position = sink.position.unwrap();
    assert!(position.contains("from="), "{position}");
    assert!(!position.contains("gen-key"), "{position}");
    // And the run goes on from there, sending the key once.
    let mut rest = Crashing::dying_after(0);
    let (out, _) = common::run(&cfg, "items", |_| false, 10, Some(position), &mut rest);
    out.unwrap();
    assert_eq!(ids(&sink.committed).len() + ids(&rest.all()).len(), 40);
}
