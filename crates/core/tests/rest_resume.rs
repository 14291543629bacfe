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
