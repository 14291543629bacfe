//! A run that stops after a checkpoint resumes from it: the HubSpot reader
//! against the HubSpot mock, in process and without Postgres.

mod common;

use common::Crashing;
use crm_mock::hubspot::{HubSpotMock, Options};
use crm_sync_core::connectors::{self, Configured};
use crm_sync_core::engine::Outcome;
use crm_sync_core::types::parse_datetime;
use crm_sync_core::CrmError;
use serde_json::json;

const CONTACTS: u64 = 2_500;

fn config(base: &str) -> Configured {
    let opts =
        json!({"base_url": base, "retry_base_ms": 5, "retry_max_ms": 20, "lookback_seconds": 0});
    let creds = json!({"access_token": Options::default().token});
    connectors::configure("hubspot", &opts, &creds, false).unwrap()
}

fn run(
    cfg: &Configured,
    resume: Option<String>,
    sink: &mut Crashing,
) -> (Result<Outcome, CrmError>, u64) {
    common::run(cfg, "contacts", |f| f.name == "email", 500, resume, sink)
}

#[test]
fn a_full_run_resumes_from_its_last_checkpoint() {
    let port = crm_mock::start_in_background(|| {
        HubSpotMock::new(Options {
            contacts: CONTACTS,
            ..Default::default()
        })
    });
    let cfg = config(&format!("http://127.0.0.1:{port}"));

    let mut clean = Crashing::dying_after(0);
    let (out, clean_calls) = run(&cfg, None, &mut clean);
    let clean_watermark = out.unwrap().watermark;
    assert_eq!(clean.all().len() as u64, CONTACTS);

    // Dies after its 2nd checkpoint (1,000 of 2,500 records), with a third
    // batch written but not committed.
    let mut first = Crashing::dying_after(2);
    let (out, first_calls) = run(&cfg, None, &mut first);
    assert!(out.is_err());
    assert_eq!(first.committed.len(), 1_000);
    let position = first.position.clone().expect("a checkpoint was taken");
    let started_ms = serde_json::from_str::<serde_json::Value>(&position).unwrap()["watermark_ms"]
        .as_i64()
        .expect("the position holds the list's start");

    let mut second = Crashing::dying_after(0);
    let (out, second_calls) = run(&cfg, Some(position), &mut second);
    let out = out.unwrap();
    let second = second.all();

    // Nothing lost, nothing read twice.
    let mut ids: Vec<&str> = first
        .committed
        .iter()
        .chain(&second)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids.len() as u64, CONTACTS);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, CONTACTS);
    // The resumed run's catch-up search starts from the interrupted list's
    // start (kept in the position); its watermark is where that search's
    // window ended: after the list began, never after the run.
    assert!(clean_watermark.is_some());
    let resumed = out
        .watermark
        .as_deref()
        .and_then(parse_datetime)
        .expect("a watermark");
    assert!(resumed.timestamp_millis() >= started_ms);
    assert!(resumed.timestamp_millis() <= chrono::Utc::now().timestamp_millis());
    // It asks for the remaining pages only: 15 of the 25 list pages.
    assert!(
        second_calls + 10 <= clean_calls,
        "resumed {second_calls} calls, clean run {clean_calls}"
    );
    assert!(first_calls > 10);
}

#[test]
fn a_position_from_another_kind_of_run_is_ignored() {
    let port = crm_mock::start_in_background(|| {
        HubSpotMock::new(Options {
            contacts: 700,
            ..Default::default()
        })
    });
    let cfg = config(&format!("http://127.0.0.1:{port}"));
    for junk in [
        "not json",
        r#"{"object":"companies","full":true,"phase":"done","watermark_ms":1}"#,
    ] {
        let mut s = Crashing::dying_after(0);
        let (out, _) = run(&cfg, Some(junk.to_owned()), &mut s);
        out.unwrap();
        assert_eq!(s.all().len(), 700, "{junk}: starts over");
    }
}
