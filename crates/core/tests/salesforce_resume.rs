//! A Salesforce run that stops after a checkpoint resumes from it, through
//! the REST API (after the last record returned, in the query's order) and
//! through Bulk API 2.0 (the job's next results page): the connector against
//! the Salesforce mock, in process and without Postgres.

mod common;

use std::collections::{HashMap, HashSet};

use common::{sf_config as config, sf_start as start, Crashing};
use crm_mock::salesforce::Options;
use crm_sync_core::connectors::Configured;
use crm_sync_core::engine::Outcome;
use crm_sync_core::runtime::runtime;
use crm_sync_core::source::Field;
use crm_sync_core::source::Record;
use crm_sync_core::CrmError;
use serde_json::{json, Value};

fn admin(base: &str, path: &str, body: Value) -> Value {
    common::admin(base, reqwest::Method::POST, path, body)
}

fn name(f: &Field) -> bool {
    f.name == "Name"
}

fn run(
    cfg: &Configured,
    batch: usize,
    resume: Option<String>,
    sink: &mut Crashing,
) -> (Result<Outcome, CrmError>, u64) {
    common::run(cfg, "Account", name, batch, resume, sink)
}

/// Each record's latest version by id (a resumed run may read again what
/// changed after it was committed).
fn latest(recs: &[Record]) -> HashMap<&str, &Record> {
    recs.iter().map(|r| (r.id.as_str(), r)).collect()
}

/// The resumed run read nothing the interrupted one had committed, and the
/// two together read every record a clean run reads.
fn assert_read_once(committed: &[Record], resumed: &[Record], expected: &HashSet<&str>) {
    // Counted, not only collected: a set would hide a record read twice.
    assert_eq!(
        committed.len() + resumed.len(),
        expected.len(),
        "every record read exactly once"
    );
    let mut ids: HashSet<&str> = committed.iter().map(|r| r.id.as_str()).collect();
    assert!(
        resumed.iter().all(|r| !ids.contains(r.id.as_str())),
        "nothing read twice"
    );
    ids.extend(resumed.iter().map(|r| r.id.as_str()));
    assert_eq!(&ids, expected);
}

#[test]
fn a_rest_run_resumes_after_its_last_record_even_inside_a_tie() {
    // 900 seeded accounts, then 600 stamped at one instant: with pages of
    // 200 and batches of 500, the second checkpoint (1,200 records) falls
    // 300 records into the tie.
    let base = start(Options {
        accounts: 900,
        ..Options::default()
    });
    let tied: Vec<Value> = (0..600)
        .map(|i| json!({"Name": format!("tied {i}")}))
        .collect();
    let ts = chrono::Utc::now().timestamp_millis() - 60_000;
    admin(
        &base,
        "/_mock/sf/Account/upsert",
        json!({"records": tied, "timestamp_ms": ts}),
    );
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));

    let mut clean = Crashing::dying_after(0);
    let (out, clean_calls) = run(&cfg, 500, None, &mut clean);
    out.unwrap();
    let clean = clean.all();
    let expected: HashSet<&str> = clean.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        expected.len(),
        clean.len(),
        "a clean run reads each record once"
    );
    let live = clean.iter().filter(|r| r.deleted_at.is_none()).count();
    assert_eq!(
        live,
        1_500 - clean.iter().filter(|r| r.deleted_at.is_some()).count()
    );

    let mut first = Crashing::dying_after(2);
    let (out, _) = run(&cfg, 500, None, &mut first);
    assert!(out.is_err());
    assert_eq!(first.committed.len(), 1_200);
    let position = first.position.clone().expect("a checkpoint was taken");
    let p: Value = serde_json::from_str(&position).unwrap();
    assert_eq!(p["pass"], "live");
    assert_eq!(p["after"]["t"], ts, "the position is inside the tie");

    // While no worker runs: a committed record is edited, one not yet
    // read is edited, and a committed one is deleted.
    let committed: Vec<&str> = first.committed.iter().map(|r| r.id.as_str()).collect();
    let (read_a, read_b) = (committed[10].to_owned(), committed[20].to_owned());
    let unread = clean
        .iter()
        .find(|r| r.deleted_at.is_none() && !committed.contains(&r.id.as_str()))
        .unwrap()
        .id
        .clone();
    admin(
        &base,
        "/_mock/sf/Account/upsert",
        json!({"records": [{"Id": read_a, "Name": "edited after the crash"},
                           {"Id": unread, "Name": "edited before it was read"}]}),
    );
    admin(&base, "/_mock/sf/Account/delete", json!({"ids": [read_b]}));

    let mut second = Crashing::dying_after(0);
    let (out, second_calls) = run(&cfg, 500, Some(position), &mut second);
    let out = out.unwrap();
    let second = second.all();

    // Nothing lost: every record, in its latest state.
    let mut both = first.committed.clone();
    both.extend(second.iter().cloned());
    let got = latest(&both);
    let ids: HashSet<&str> = got.keys().copied().collect();
    assert_eq!(ids, expected);
    assert_eq!(
        got[read_a.as_str()].values()["Name"],
        "edited after the crash"
    );
    assert_eq!(
        got[unread.as_str()].values()["Name"],
        "edited before it was read"
    );
    assert!(
        got[read_b.as_str()].deleted_at.is_some(),
        "the deletes pass found it"
    );
    // Nothing read twice but what changed after it was committed.
    let again: HashSet<&str> = second
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| committed.contains(id))
        .collect();
    assert_eq!(again, HashSet::from([read_a.as_str(), read_b.as_str()]));
    // Fewer calls than starting over, and a watermark.
    assert!(
        second_calls < clean_calls,
        "{second_calls} vs {clean_calls}"
    );
    assert!(out.watermark.is_some());
}

#[test]
fn a_record_edited_while_paging_does_not_move_the_position_past_unread_ones() {
    // Pages keep the query's order but show current values: the last record
    // of the third page, edited just before that page is served, comes back
    // stamped after every record not yet read. Resuming after its new stamp
    // would skip them all.
    let base = start(Options {
        accounts: 1500,
        live_cursors: true,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let mut clean = Crashing::dying_after(0);
    run(&cfg, 500, None, &mut clean).0.unwrap();
    let clean = clean.all();
    let expected: HashSet<&str> = clean.iter().map(|r| r.id.as_str()).collect();
    let edited = clean[599].id.clone();
    let hook = json!({"path_contains": "/query/", "skip": 1, "action":
        {"op": "upsert", "object": "Account", "records": [{"Id": edited, "Name": "edited mid-run"}]}});
    admin(&base, "/_mock/hooks", hook);

    let mut first = Crashing::dying_after(1);
    assert!(run(&cfg, 500, None, &mut first).0.is_err());
    assert_eq!(first.committed.len(), 600);
    assert_eq!(first.committed[599].id, edited);
    assert_eq!(first.committed[599].values()["Name"], "edited mid-run");
    let position = first.position.clone().unwrap();

    let mut second = Crashing::dying_after(0);
    run(&cfg, 500, Some(position), &mut second).0.unwrap();
    let mut ids: HashSet<&str> = first.committed.iter().map(|r| r.id.as_str()).collect();
    let second = second.all();
    ids.extend(second.iter().map(|r| r.id.as_str()));
    assert_eq!(ids, expected, "every record, the unread ones included");
    // The edited record was committed before its edit: read again once.
    assert_eq!(
        first.committed.len() + second.len(),
        expected.len() + 1,
        "nothing else read twice"
    );
    assert!(
        second.len() <= 1500 - 600 + 10,
        "{}: resumed, not started over",
        second.len()
    );
}

#[test]
fn a_run_paused_in_the_deletes_pass_resumes_in_it() {
    let base = start(Options {
        accounts: 1500,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let mut clean = Crashing::dying_after(0);
    run(&cfg, 500, None, &mut clean).0.unwrap();
    let live: Vec<String> = clean
        .all()
        .into_iter()
        .filter(|r| r.deleted_at.is_none())
        .map(|r| r.id)
        .collect();
    // Deleted a minute ago: records stamped after their query began (the
    // server's Date has whole seconds) never mark a position.
    let ago = chrono::Utc::now().timestamp_millis() - 60_000;
    admin(
        &base,
        "/_mock/sf/Account/delete",
        json!({"ids": live[..500], "timestamp_ms": ago}),
    );
    let mut clean = Crashing::dying_after(0);
    run(&cfg, 500, None, &mut clean).0.unwrap();
    let clean = clean.all();
    let expected: HashSet<&str> = clean.iter().map(|r| r.id.as_str()).collect();
    let deleted = clean.iter().filter(|r| r.deleted_at.is_some()).count();
    assert!(deleted > 500);

    // About 1,000 live records, then over 500 deleted ones: the second
    // checkpoint (1,200 records) falls in the deletes pass.
    let mut first = Crashing::dying_after(2);
    assert!(run(&cfg, 500, None, &mut first).0.is_err());
    let p: Value = serde_json::from_str(first.position.as_deref().unwrap()).unwrap();
    assert_eq!(p["pass"], "deleted", "{p}");
    let position = first.position.clone();
    let mut second = Crashing::dying_after(0);
    run(&cfg, 500, position, &mut second).0.unwrap();
    let second = second.all();
    assert!(
        second.iter().all(|r| r.deleted_at.is_some()),
        "only the deletes pass is left"
    );
    assert_read_once(&first.committed, &second, &expected);
}

#[test]
fn an_object_without_a_modification_time_resumes_by_id() {
    let base = start(Options {
        accounts: 1500,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let all = |_: &Field| true;
    let mut clean = Crashing::dying_after(0);
    common::run(&cfg, "AccountHistory", all, 500, None, &mut clean)
        .0
        .unwrap();
    let clean = clean.all();
    let expected: HashSet<&str> = clean.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(expected.len(), 1500);

    let mut first = Crashing::dying_after(1);
    assert!(
        common::run(&cfg, "AccountHistory", all, 500, None, &mut first)
            .0
            .is_err()
    );
    let position = first.position.clone();
    let p: Value = serde_json::from_str(position.as_deref().unwrap()).unwrap();
    assert!(
        p["after"]["t"].is_null() && p["after"]["id"].is_string(),
        "{p}"
    );
    let mut second = Crashing::dying_after(0);
    common::run(&cfg, "AccountHistory", all, 500, position, &mut second)
        .0
        .unwrap();
    let committed: HashSet<&str> = first.committed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(committed.len(), 600);
    assert_read_once(&first.committed, &second.all(), &expected);
}

#[test]
fn a_bulk_run_resumes_from_its_jobs_next_results_page() {
    // 12,000 accounts: three results pages of 5,000 (the reader's page),
    // committed one by one with batches of 5,000.
    let base = start(Options {
        accounts: 12_000,
        ..Options::default()
    });
    let cfg = config(&base, json!({"bulk_threshold": 1000}));

    let mut clean = Crashing::dying_after(0);
    let (out, _) = run(&cfg, 5_000, None, &mut clean);
    let clean_wm = out.unwrap().watermark;
    let clean = clean.all();
    let expected: HashSet<&str> = clean.iter().map(|r| r.id.as_str()).collect();

    let mut first = Crashing::dying_after(1);
    let (out, _) = run(&cfg, 5_000, None, &mut first);
    assert!(out.is_err());
    let position = first.position.clone().expect("a checkpoint was taken");
    let p: Value = serde_json::from_str(&position).unwrap();
    assert!(p["at"]["results"]["locator"].is_string(), "{p}");
    let committed: HashSet<&str> = first.committed.iter().map(|r| r.id.as_str()).collect();
    assert!(committed.len() >= 4_000, "{}", committed.len());

    let jobs_before = jobs_created(&base);
    let mut second = Crashing::dying_after(0);
    let (out, _) = run(&cfg, 5_000, Some(position.clone()), &mut second);
    let out = out.unwrap();
    let second = second.all();
    assert_eq!(
        jobs_created(&base),
        jobs_before,
        "the interrupted job's results are read on"
    );
    assert_read_once(&first.committed, &second, &expected);
    assert_eq!(out.watermark, clean_wm, "the job's watermark");
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);

    // A job gone by the time the run resumes (expired, or deleted by
    // hand): the run starts over with a new job and says so.
    let gone = position.replace(
        p["at"]["results"]["job"].as_str().unwrap(),
        "750000000000000AAA",
    );
    let mut third = Crashing::dying_after(0);
    let (out, _) = run(&cfg, 5_000, Some(gone), &mut third);
    let out = out.unwrap();
    let third: HashSet<String> = third.all().into_iter().map(|r| r.id).collect();
    assert_eq!(third.len(), expected.len());
    assert_eq!(jobs_created(&base), jobs_before + 1);
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("750000000000000AAA") && w.contains("read again from the start")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn a_position_from_another_kind_of_run_is_ignored() {
    let base = start(Options {
        accounts: 700,
        ..Options::default()
    });
    let cfg = config(&base, json!({"batch_size": 200, "bulk_api": false}));
    let mut clean = Crashing::dying_after(0);
    run(&cfg, 500, None, &mut clean).0.unwrap();
    let n = clean.all().len();
    for junk in [
        "not json",
        r#"{"object":"contacts","full":true,"phase":"done","watermark_ms":1}"#,
        r#"{"reader":"bulk","object":"Account","at":"done","watermark_ms":1,"cap_ms":1}"#,
        r#"{"reader":"rest","object":"Contact","since_ms":null,"pass":null,"after":null,"watermark_ms":1,"cap_ms":1}"#,
    ] {
        let mut s = Crashing::dying_after(0);
        run(&cfg, 500, Some(junk.to_owned()), &mut s).0.unwrap();
        assert_eq!(s.all().len(), n, "{junk}: starts over");
    }
}

/// Bulk query jobs the mock has seen created.
fn jobs_created(base: &str) -> u64 {
    let url = format!("{base}/_mock/stats");
    let stats: Value =
        runtime().block_on(async move { reqwest::get(url).await.unwrap().json().await.unwrap() });
    stats["by_endpoint"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("POST ") && k.ends_with("/jobs/query"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum()
}
