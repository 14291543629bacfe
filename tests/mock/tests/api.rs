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

fn post(port: u16, path: &str, body: &Value) -> Resp {
    raw(
        port,
        "POST",
        path,
        &bearer(TOKEN, "Content-Type: application/json\r\n"),
        &body.to_string(),
    )
}

/// The `results` of one association type of a v3 record, as (id, type).
fn assoc_of(rec: &Value, to: &str) -> Vec<(String, String)> {
    match rec["associations"][to]["results"].as_array() {
        None => vec![],
        Some(a) => a
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_owned(),
                    e["type"].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    }
}

#[test]
fn list_returns_associations_when_asked() {
    let port = start(100);
    // Without the parameter: no associations key at all.
    let plain = get(port, "/crm/v3/objects/deals?limit=5").json();
    assert!(items(&plain["results"])
        .iter()
        .all(|r| r.get("associations").is_none()));
    // Comma-separated, unknown types ignored.
    let r = get(
        port,
        "/crm/v3/objects/deals?limit=20&properties=dealname&associations=companies,contacts,tickets",
    )
    .json();
    for rec in items(&r["results"]) {
        let companies = assoc_of(rec, "companies");
        let (primary, ty) = &companies[0];
        assert_eq!(ty, "deal_to_company");
        assert_eq!(
            companies[1],
            (primary.clone(), "deal_to_company_unlabeled".into())
        );
        let contacts = assoc_of(rec, "contacts");
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].1, "deal_to_contact");
        let c: u64 = contacts[0].0.parse().unwrap();
        assert!((1..=100).contains(&c));
        assert!(rec["associations"].get("tickets").is_none());
    }
    // A contact's primary company is the one its company/website name.
    let r = get(
        port,
        "/crm/v3/objects/contacts?limit=100&properties=company,website&associations=companies",
    )
    .json();
    let mut linked = 0;
    for rec in items(&r["results"]) {
        let companies = assoc_of(rec, "companies");
        if companies.is_empty() {
            // Its company number is past the 20 companies: no key at all.
            assert!(rec.get("associations").is_none());
            continue;
        }
        linked += 1;
        let company = get(
            port,
            &format!(
                "/crm/v3/objects/companies/{}?properties=name,domain",
                companies[0].0
            ),
        )
        .json();
        assert_eq!(rec["properties"]["company"], company["properties"]["name"]);
        assert_eq!(
            rec["properties"]["website"].as_str().unwrap(),
            format!(
                "https://{}",
                company["properties"]["domain"].as_str().unwrap()
            )
        );
    }
    assert!(linked > 50, "{linked}");
    // The repeated parameter works too; companies have none of these.
    let r = get(
        port,
        "/crm/v3/objects/deals/3?associations=companies&associations=contacts",
    )
    .json();
    assert_eq!(assoc_of(&r, "contacts").len(), 1);
    let r = get(
        port,
        "/crm/v3/objects/companies?limit=5&associations=contacts",
    )
    .json();
    assert!(r["results"][0].get("associations").is_none());
    // Search does not return associations.
    let s = post(
        port,
        "/crm/v3/objects/deals/search",
        &json!({"limit": 5, "associations": ["companies"]}),
    )
    .json();
    assert!(s["results"][0].get("associations").is_none());
}

#[test]
fn upserts_replace_associations_of_the_types_given() {
    let port = start(100);
    let seeded = get(
        port,
        "/crm/v3/objects/deals/4?associations=companies,contacts",
    )
    .json();
    admin(
        port,
        "POST",
        "/_mock/deals/upsert",
        json!({"records": [
            {"id": "4", "properties": {"dealname": "x"}, "associations": {"contacts": ["9", "5"]}},
            {"id": "5", "properties": {"dealname": "y"}},
            {"properties": {"dealname": "new"}}]}),
    );
    let r = get(
        port,
        "/crm/v3/objects/deals/4?associations=companies,contacts",
    )
    .json();
    assert_eq!(
        assoc_of(&r, "contacts"),
        [
            ("5".into(), "deal_to_contact".into()),
            ("9".into(), "deal_to_contact".into())
        ]
    );
    assert_eq!(assoc_of(&r, "companies"), assoc_of(&seeded, "companies"));
    let kept = get(port, "/crm/v3/objects/deals/5?associations=contacts").json();
    assert_eq!(assoc_of(&kept, "contacts").len(), 1);
    let new = get(
        port,
        "/crm/v3/objects/deals/21?associations=companies,contacts",
    )
    .json();
    assert!(new.get("associations").is_none());
    // Emptied: the type disappears; archived targets are not listed.
    admin(
        port,
        "POST",
        "/_mock/contacts/upsert",
        json!({"records": [{"id": "1", "associations": {"companies": []}},
                           {"id": "2", "associations": {"companies": ["3", "4"]}}]}),
    );
    admin(
        port,
        "POST",
        "/_mock/companies/archive",
        json!({"ids": ["3"]}),
    );
    let r = get(
        port,
        "/crm/v3/objects/contacts?limit=2&associations=companies",
    )
    .json();
    assert!(r["results"][0].get("associations").is_none());
    assert_eq!(
        assoc_of(&r["results"][1], "companies"),
        [
            ("4".into(), "contact_to_company".into()),
            ("4".into(), "contact_to_company_unlabeled".into())
        ]
    );
    // Bad association input is refused.
    let bad = raw(
        port,
        "POST",
        "/_mock/contacts/upsert",
        "",
        &json!({"records": [{"id": "1", "associations": {"deals": ["1"]}}]}).to_string(),
    );
    assert_eq!(bad.status, 400, "{}", bad.text());
}

#[test]
fn v4_batch_read_with_207_for_ids_without_associations() {
    let port = start(100);
    admin(
        port,
        "POST",
        "/_mock/deals/upsert",
        json!({"records": [{"id": "2", "associations": {"companies": []}},
                           {"id": "3", "associations": {"companies": ["7", "11"]}}]}),
    );
    let path = "/crm/v4/associations/deals/companies/batch/read";
    let r = post(
        port,
        path,
        &json!({"inputs": [{"id": "1"}, {"id": "2"}, {"id": "3"}, {"id": "999"}]}),
    );
    assert_eq!(r.status, 207, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "COMPLETE");
    assert!(v["startedAt"].is_string() && v["completedAt"].is_string());
    let results = items(&v["results"]);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["from"]["id"], "1");
    let types = items(&results[0]["to"][0]["associationTypes"]);
    assert_eq!(
        types[0],
        json!({"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"})
    );
    assert_eq!(
        types[1],
        json!({"category": "HUBSPOT_DEFINED", "typeId": 341, "label": null})
    );
    assert!(results[0]["to"][0]["toObjectId"].is_u64());
    let three: Vec<u64> = items(&results[1]["to"])
        .iter()
        .map(|t| t["toObjectId"].as_u64().unwrap())
        .collect();
    assert_eq!(three, [7, 11]);
    assert_eq!(items(&results[1]["to"][1]["associationTypes"]).len(), 1);
    assert_eq!(v["numErrors"], 2);
    let e = &v["errors"][0];
    assert_eq!(e["status"], "error");
    assert_eq!(e["category"], "OBJECT_NOT_FOUND");
    assert_eq!(e["subCategory"], "crm.associations.NO_ASSOCIATIONS_FOUND");
    assert_eq!(e["context"]["fromObjectId"], json!(["2"]));
    assert_eq!(e["message"], "No company is associated with deal 2.");
    assert_eq!(v["errors"][1]["context"]["fromObjectId"], json!(["999"]));

    // All found: 200 without errors. deal -> contact has no primary type.
    let r = post(
        port,
        "/crm/v4/associations/deal/contacts/batch/read",
        &json!({"inputs": [{"id": "1"}]}),
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert!(v.get("errors").is_none());
    assert_eq!(
        v["results"][0]["to"][0]["associationTypes"],
        json!([{"category": "HUBSPOT_DEFINED", "typeId": 3, "label": null}])
    );

    // At most 1,000 inputs; HubSpot's error body otherwise.
    let inputs: Vec<Value> = (1..=1000).map(|i| json!({"id": i.to_string()})).collect();
    assert_eq!(post(port, path, &json!({ "inputs": inputs })).status, 207);
    let inputs: Vec<Value> = (1..=1001).map(|i| json!({"id": i.to_string()})).collect();
    let r = post(port, path, &json!({ "inputs": inputs }));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["category"], "VALIDATION_ERROR");
    assert_eq!(r.json()["status"], "error");
    // Auth and unknown objects.
    let r = raw(port, "POST", path, &bearer("wrong", ""), "{\"inputs\":[]}");
    assert_eq!(r.status, 401);
    let r = post(
        port,
        "/crm/v4/associations/widgets/companies/batch/read",
        &json!({"inputs": []}),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn echo_secrets_quotes_the_token_in_every_spelling() {
    let token = "pat-na1-ab/cd+ef=gh-0123";
    let port = start(10);
    admin(port, "POST", "/_mock/token", json!({"token": token}));
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/crm/v3/objects/contacts", "kind": "echo_secrets"},
                         {"path_contains": "/crm/v3/objects/deals", "kind": "echo_secrets", "status": 401},
                         {"path_contains": "/crm/v3/objects/companies", "kind": "echo_secrets_cut"}]}),
    );
    let r = get_as(port, token, "/crm/v3/objects/contacts");
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["status"], "error");
    assert_eq!(v["category"], "VALIDATION_ERROR");
    let msg = v["message"].as_str().unwrap();
    for form in [
        token,
        "pat%2dna1%2dab%2fcd%2bef%3dgh%2d0123",
        r"pat-na1-ab\/cd+ef=gh-0123",
        r"pat\u002Dna1\u002Dab\u002Fcd\u002Bef\u003Dgh\u002D0123",
    ] {
        assert!(msg.contains(form), "{form} not in {msg}");
    }
    let r = get_as(port, token, "/crm/v3/objects/deals");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["category"], "INVALID_AUTHENTICATION");
    assert!(r.text().contains(token));
    // Cut: the body's first 300 characters end inside the token.
    let r = get_as(port, token, "/crm/v3/objects/companies");
    assert_eq!(r.status, 400);
    let text = r.text();
    let head: String = text.chars().take(300).collect();
    assert!(head.ends_with(&token[..16]), "{head}");
    assert!(!head.contains(token));
    let stats = admin(port, "GET", "/_mock/stats", Value::Null);
    assert_eq!(stats["faults_fired"]["echo_secrets"], 2);
    assert_eq!(stats["faults_fired"]["echo_secrets_cut"], 1);
    assert_eq!(stats["echoed"]["bearer"], json!([token]));
}
