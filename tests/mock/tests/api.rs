//! The HubSpot mock over real HTTP: paging, search limits, errors, faults
//! and hooks behave as the connector and the e2e tests rely on.

mod common;

use common::{admin, bearer, items, raw, Resp};
use crm_mock::hubspot::{HubSpotMock, Options};
use serde_json::{json, Value};

const TOKEN: &str = "pat-test";

fn start(contacts: u64) -> u16 {
    common::start(move || {
        HubSpotMock::new(Options {
            contacts,
            companies: 20,
            deals: 20,
            token: TOKEN.into(),
            ..Options::default()
        })
    })
}

fn get_as(port: u16, token: &str, path: &str) -> Resp {
    raw(port, "GET", path, &bearer(token, ""), "")
}

fn get(port: u16, path: &str) -> Resp {
    get_as(port, TOKEN, path)
}

fn search(port: u16, body: Value) -> Resp {
    raw(
        port,
        "POST",
        "/crm/v3/objects/contacts/search",
        &bearer(TOKEN, "Content-Type: application/json\r\n"),
        &body.to_string(),
    )
}

#[test]
fn list_pages_through_every_record_once() {
    let port = start(1234);
    let (mut ids, mut after) = (Vec::new(), String::new());
    loop {
        let r = get(
            port,
            &format!("/crm/v3/objects/contacts?limit=100&properties=email&after={after}"),
        )
        .json();
        for rec in items(&r["results"]) {
            ids.push(rec["id"].as_str().unwrap().parse::<u64>().unwrap());
            assert!(rec["properties"]["email"].as_str().unwrap().contains('@'));
        }
        match r["paging"]["next"]["after"].as_str() {
            Some(a) => after = a.to_owned(),
            None => break,
        }
    }
    assert_eq!(ids, (1..=1234).collect::<Vec<_>>());
    assert_eq!(get(port, "/crm/v3/objects/contacts?limit=101").status, 400);
}

#[test]
fn search_pages_sorted_with_total_and_stops_at_10000() {
    let port = start(12_000);
    let q = |after: usize, limit: usize| {
        json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": "0"}]}],
               "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
               "properties": ["lastmodifieddate"], "limit": limit, "after": after.to_string()})
    };
    let first = search(port, q(0, 200)).json();
    assert_eq!(first["total"], 12_000);
    assert_eq!(first["paging"]["next"]["after"], "200");
    let stamps: Vec<&str> = items(&first["results"])
        .iter()
        .map(|r| r["properties"]["lastmodifieddate"].as_str().unwrap())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted);
    // The first 450 share one import timestamp and are not in id order.
    let ids: Vec<u64> = items(&first["results"])
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).any(|w| w[0] > w[1]));
    assert_eq!(search(port, q(9800, 200)).status, 200);
    let past = search(port, q(9900, 200));
    assert_eq!(past.status, 400);
    assert_eq!(past.json()["category"], "VALIDATION_ERROR");
    assert_eq!(search(port, q(0, 201)).status, 400);
}

#[test]
fn search_filters_by_time_range_and_id() {
    let port = start(1000);
    // The import tie (ids 1..=450) paged by id within one timestamp.
    let tie = "1672534800000";
    let body = json!({"filterGroups": [{"filters": [
            {"propertyName": "lastmodifieddate", "operator": "GTE", "value": tie},
            {"propertyName": "lastmodifieddate", "operator": "LTE", "value": tie},
            {"propertyName": "hs_object_id", "operator": "GT", "value": "99"}]}],
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "limit": 200});
    let r = search(port, body).json();
    assert_eq!(r["total"], 351);
    let ids: Vec<u64> = items(&r["results"])
        .iter()
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (100..300).collect::<Vec<_>>());
    // ISO values work too, and an unknown property is a 400.
    let iso = json!({"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "EQ", "value": "2023-01-01T01:00:00Z"}]}]});
    assert_eq!(search(port, iso).json()["total"], 450);
    let bad = json!({"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]});
    assert_eq!(search(port, bad).status, 400);
}

#[test]
fn changes_archives_and_hooks() {
    let port = start(100);
    let up = admin(
        port,
        "POST",
        "/_mock/contacts/upsert",
        json!({"records": [{"id": "5", "properties": {"firstname": "Changed"}}, {"properties": {"email": "n@x.io"}}]}),
    );
    assert_eq!(up["records"][1]["id"], "101");
    admin(
        port,
        "POST",
        "/_mock/contacts/archive",
        json!({"ids": ["7"]}),
    );
    let live = get(port, "/crm/v3/objects/contacts?limit=100&after=1").json();
    assert_eq!(items(&live["results"]).len(), 100); // 1..=101 minus 7, from 1: 100 of them
    assert!(!items(&live["results"]).iter().any(|r| r["id"] == "7"));
    let gone = get(port, "/crm/v3/objects/contacts?archived=true").json();
    assert_eq!(gone["results"][0]["id"], "7");
    assert_eq!(gone["results"][0]["archived"], true);
    // Newest changes sort last in search.
    let r = search(port, json!({"sorts": [{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}], "limit": 2,
                                "properties": ["firstname"]})).json();
    let top: Vec<&str> = items(&r["results"])
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(top.contains(&"5") && top.contains(&"101"), "{top:?}");
    // A hook fires before the second matching request.
    admin(
        port,
        "POST",
        "/_mock/hooks",
        json!({"path_contains": "/objects/deals", "skip": 1,
        "action": {"op": "upsert", "object": "deals", "records": [{"id": "3", "properties": {"dealname": "hooked"}}]}}),
    );
    let before = get(port, "/crm/v3/objects/deals/3?properties=dealname").json();
    assert_ne!(before["properties"]["dealname"], "hooked");
    let after = get(port, "/crm/v3/objects/deals/3?properties=dealname").json();
    assert_eq!(after["properties"]["dealname"], "hooked");
}

#[test]
fn auth_rate_limit_and_body_faults() {
    let port = start(50);
    let r = get_as(port, "wrong", "/crm/v3/objects/contacts");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["category"], "INVALID_AUTHENTICATION");

    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [
        {"path_contains": "/objects/companies", "skip": 1, "count": 1, "kind": "429"},
        {"path_contains": "/objects/deals", "count": 1, "kind": "truncated"},
        {"path_contains": "/properties/deals", "count": 1, "kind": "malformed"}]}),
    );
    assert_eq!(get(port, "/crm/v3/objects/companies").status, 200);
    let limited = get(port, "/crm/v3/objects/companies");
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["errorType"], "RATE_LIMIT");
    assert!(limited.head.contains("X-HubSpot-RateLimit-Max"));
    assert_eq!(get(port, "/crm/v3/objects/companies").status, 200);
    let cut = get(port, "/crm/v3/objects/deals");
    assert_eq!(cut.status, 200);
    assert!(serde_json::from_slice::<Value>(&cut.body)
        .unwrap_err()
        .is_eof());
    let html = get(port, "/crm/v3/properties/deals");
    assert!(serde_json::from_slice::<Value>(&html.body)
        .unwrap_err()
        .is_syntax());
    assert_eq!(get(port, "/crm/v3/objects/deals").status, 200);

    let stats = admin(port, "GET", "/_mock/stats", json!({}));
    assert_eq!(stats["status_counts"]["429"], 1);
    assert_eq!(stats["by_endpoint"]["GET /crm/v3/objects/companies"], 3);
}

#[test]
fn properties_have_hubspot_shape_and_new_ones_appear() {
    let port = start(10);
    admin(
        port,
        "POST",
        "/_mock/companies/properties",
        json!({"name": "contract_value", "type": "number", "fieldType": "number"}),
    );
    let props = get(port, "/crm/v3/properties/companies").json();
    let by: std::collections::HashMap<&str, &Value> = items(&props["results"])
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p))
        .collect();
    assert_eq!(by["name"]["hubspotDefined"], true);
    assert_eq!(by["hs_lastmodifieddate"]["type"], "datetime");
    assert_eq!(by["contract_value"]["type"], "number");
    assert!(by["contract_value"].get("hubspotDefined").is_none());
    assert!(items(&by["tier"]["options"]).len() >= 3);
}
