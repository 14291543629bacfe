//! The Salesforce mock over real HTTP: OAuth flows (JWT included), session
//! expiry, query paging with snapshot locators, queryAll and deletes,
//! errors, faults, hooks and Bulk API 2.0 query jobs.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::{admin, bearer, items, raw, Resp};
use crm_mock::salesforce::{Options, SalesforceMock};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

const V: &str = "/services/data/v59.0";

fn start(opts: Options) -> u16 {
    common::start(move || SalesforceMock::new(opts).unwrap())
}

fn token_call(port: u16, form: &str) -> Resp {
    raw(
        port,
        "POST",
        "/services/oauth2/token",
        "Content-Type: application/x-www-form-urlencoded\r\n",
        form,
    )
}

/// A mock started with `opts` and a session token for it.
fn start_logged_in(opts: Options) -> (u16, String) {
    let port = start(opts);
    (port, login(port))
}

fn login(port: u16) -> String {
    let o = Options::default();
    let r = token_call(
        port,
        &format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            o.client_id, o.client_secret
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn get(port: u16, token: &str, path: &str) -> Resp {
    raw(port, "GET", path, &bearer(token, ""), "")
}

fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(port: u16, token: &str, soql: &str) -> Resp {
    get(port, token, &format!("{V}/query?q={}", q(soql)))
}

fn query_all(port: u16, token: &str, soql: &str) -> Resp {
    get(port, token, &format!("{V}/queryAll?q={}", q(soql)))
}

#[test]
fn oauth_refresh_and_client_credentials_follow_salesforce() {
    let port = start(Options::default());
    let o = Options::default();
    let refresh = || {
        token_call(
            port,
            &format!(
                "grant_type=refresh_token&client_id={}&refresh_token={}",
                o.client_id, o.refresh_token
            ),
        )
    };
    let r = refresh();
    assert_eq!(r.status, 200);
    let v = r.json();
    for k in [
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
        "scope",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert!(v.get("expires_in").is_none());
    assert_eq!(v["instance_url"], format!("http://127.0.0.1:{port}"));
    let bad = |form: &str, err: &str| {
        let r = token_call(port, form);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["error"], err, "{form}");
    };
    bad(
        "grant_type=refresh_token&client_id=nope&refresh_token=x",
        "invalid_client_id",
    );
    bad(
        &format!(
            "grant_type=client_credentials&client_id={}&client_secret=no",
            o.client_id
        ),
        "invalid_client",
    );
    bad("grant_type=password", "unsupported_grant_type");
    admin(port, "POST", "/_mock/sf/revoke_refresh_token", json!({}));
    let r = refresh();
    assert_eq!(
        r.json(),
        json!({"error":"invalid_grant","error_description":"expired access/refresh token"})
    );
}

#[test]
fn jwt_bearer_flow_checks_signature_and_claims() {
    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, 1024).unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap();
    let o = Options {
        jwt_public_key: Some(pem),
        ..Options::default()
    };
    let port = start(o.clone());
    let signer = SigningKey::<sha2::Sha256>::new(key);
    let jwt = |claims: Value| {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#);
        let c = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = signer.sign(format!("{h}.{c}").as_bytes()).to_bytes();
        format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
    };
    let exp = chrono::Utc::now().timestamp() + 300;
    let bearer_grant = |assertion: &str| {
        token_call(
            port,
            &format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
            ),
        )
    };
    let call = |claims: Value| bearer_grant(&jwt(claims));
    let good = json!({"iss": o.client_id, "sub": o.username, "aud": "https://login.salesforce.com", "exp": exp});
    let r = call(good.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(get(port, &token, &format!("{V}/sobjects")).status, 200);
    let err = |mut c: Value, k: &str, v: Value| {
        c[k] = v;
        call(c).json()["error_description"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        err(good.clone(), "aud", json!("https://x.example.com")),
        "audience is invalid"
    );
    assert_eq!(
        err(good.clone(), "exp", json!(exp - 600)),
        "expired authorization code"
    );
    assert_eq!(
        err(good.clone(), "sub", json!("other@x")),
        "user hasn't approved this consumer"
    );
    assert_eq!(
        err(good.clone(), "iss", json!("other")),
        "client identifier invalid"
    );
    let mut forged = jwt(good);
    forged.push('A');
    let r = bearer_grant(&forged);
    assert_eq!(r.json()["error_description"], "invalid assertion");
}

#[test]
fn sessions_expire_after_n_calls_and_limits_apply() {
    let (port, t) = start_logged_in(Options {
        session_calls: 3,
        daily_api_limit: 5,
        ..Options::default()
    });
    for i in 1..=3 {
        let r = get(port, &t, &format!("{V}/sobjects"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("Sforce-Limit-Info").unwrap(),
            format!("api-usage={i}/5")
        );
    }
    let r = get(port, &t, &format!("{V}/sobjects"));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()[0]["errorCode"], "INVALID_SESSION_ID");
    let t2 = login(port);
    assert_eq!(get(port, &t2, &format!("{V}/sobjects")).status, 200);
    assert_eq!(get(port, &t2, &format!("{V}/sobjects")).status, 200);
    let r = get(port, &t2, &format!("{V}/sobjects"));
    assert_eq!(r.status, 403);
    assert_eq!(r.json()[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(get(port, "garbage", &format!("{V}/sobjects")).status, 401);
    admin(
        port,
        "POST",
        "/_mock/sf/limits",
        json!({"daily_api_limit": 0}),
    );
    admin(port, "POST", "/_mock/sf/expire_sessions", json!({}));
    assert_eq!(get(port, &t2, &format!("{V}/sobjects")).status, 401);
}

#[test]
fn describe_shapes() {
    let (port, t) = start_logged_in(Options::default());
    let g = get(port, &t, &format!("{V}/sobjects")).json();
    assert_eq!(g["encoding"], "UTF-8");
    let names: Vec<&str> = items(&g["sobjects"])
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    for n in [
        "Account",
        "Contact",
        "Lead",
        "Opportunity",
        "User",
        "Invoice__c",
        "Wide__c",
        "UserLogin",
        "AccountHistory",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let d = get(port, &t, &format!("{V}/sobjects/Account/describe")).json();
    let f = |name: &str| {
        items(&d["fields"])
            .iter()
            .find(|f| f["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(f("BillingAddress")["type"], "address");
    assert_eq!(f("BillingCity")["compoundFieldName"], "BillingAddress");
    assert_eq!(f("Tier__c")["type"], "picklist");
    assert_eq!(f("Tier__c")["custom"], true);
    assert_eq!(f("Location__c")["type"], "location");
    assert_eq!(f("Id")["soapType"], "tns:ID");
    let w = get(port, &t, &format!("{V}/sobjects/Wide__c/describe")).json();
    assert!(items(&w["fields"]).len() > 600);
    let r = get(port, &t, &format!("{V}/sobjects/Nope/describe"));
    assert_eq!(r.status, 404);
    assert_eq!(r.json()[0]["errorCode"], "NOT_FOUND");
    assert_eq!(get(port, &t, "/services/data/v20.0/sobjects").status, 404);
    let versions = raw(port, "GET", "/services/data/", "", "").json();
    assert!(items(&versions).iter().any(|v| v["version"] == "59.0"));
}

#[test]
fn query_pages_are_a_snapshot() {
    let (port, t) = start_logged_in(Options {
        accounts: 5000,
        ..Options::default()
    });
    let soql = "SELECT Id, Name, SystemModstamp, BillingAddress, Is_VIP__c, AnnualRevenue FROM Account ORDER BY SystemModstamp, Id";
    let first = raw(
        port,
        "GET",
        &format!("{V}/query?q={}", q(soql)),
        &bearer(&t, "Sforce-Query-Options: batchSize=1000\r\n"),
        "",
    )
    .json();
    let total = first["totalSize"].as_u64().unwrap();
    assert!(total > 4900 && total < 5000, "{total}"); // some seeded deletes
    assert_eq!(first["done"], false);
    assert_eq!(items(&first["records"]).len(), 1000);
    let r0 = &first["records"][0];
    assert_eq!(r0["attributes"]["type"], "Account");
    assert!(r0["SystemModstamp"].as_str().unwrap().ends_with("+0000"));
    // Change a record that is still to come, delete another, then page on.
    let later = first["records"][0]["Id"].as_str().unwrap().to_owned();
    let all_ids: Vec<String> = {
        let mut ids = Vec::new();
        let mut page = first.clone();
        // Admin change after the query started.
        admin(
            port,
            "POST",
            "/_mock/sf/Account/upsert",
            json!({"records": [{"Id": later, "Name": "Changed"}]}),
        );
        loop {
            for r in items(&page["records"]) {
                ids.push(r["Id"].as_str().unwrap().to_owned());
                assert_ne!(r["Name"], "Changed");
            }
            match page["nextRecordsUrl"].as_str() {
                Some(u) => {
                    assert!(u.starts_with(&format!("{V}/query/01g")));
                    page = get(port, &t, u).json();
                }
                None => break,
            }
        }
        ids
    };
    assert_eq!(all_ids.len() as u64, total);
    let mut sorted = all_ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all_ids.len());
    // A new query sees the change, last in SystemModstamp order.
    let r = query(
        port,
        &t,
        &format!("SELECT Id, Name FROM Account WHERE Id = '{later}'"),
    )
    .json();
    assert_eq!(r["records"][0]["Name"], "Changed");
    let r = query(
        port,
        &t,
        "SELECT Id FROM Account ORDER BY SystemModstamp DESC LIMIT 1",
    )
    .json();
    assert_eq!(r["records"][0]["Id"], later.as_str());
    let bad = get(port, &t, &format!("{V}/query/01gNOPE-2000"));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()[0]["errorCode"], "INVALID_QUERY_LOCATOR");
}

#[test]
fn query_all_sees_deletes_and_filters_work() {
    let (port, t) = start_logged_in(Options::default());
    let live = query(port, &t, "SELECT COUNT() FROM Contact").json()["totalSize"]
        .as_u64()
        .unwrap();
    let id = query(port, &t, "SELECT Id FROM Contact LIMIT 1").json()["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = admin(
        port,
        "POST",
        "/_mock/sf/Contact/delete",
        json!({"ids": [id]}),
    );
    assert_eq!(d["deleted"][0], id.as_str());
    assert_eq!(
        query(port, &t, "SELECT COUNT() FROM Contact").json()["totalSize"],
        live - 1
    );
    let r = query_all(
        port,
        &t,
        &format!("SELECT Id, IsDeleted, SystemModstamp FROM Contact WHERE Id = '{id}'"),
    )
    .json();
    assert_eq!(r["records"][0]["IsDeleted"], true);
    let since = r["records"][0]["SystemModstamp"]
        .as_str()
        .unwrap()
        .replace("+0000", "Z");
    let r = query_all(
        port,
        &t,
        &format!("SELECT Id FROM Contact WHERE SystemModstamp >= {since}"),
    )
    .json();
    assert_eq!(r["totalSize"], 1);
    // Filters over types.
    let n = |soql: &str| {
        query(port, &t, soql).json()["totalSize"]
            .as_u64()
            .unwrap_or_else(|| panic!("{soql}"))
    };
    let accounts = n("SELECT COUNT() FROM Account");
    let vip = n("SELECT COUNT() FROM Account WHERE Is_VIP__c = true");
    let not_vip = n("SELECT COUNT() FROM Account WHERE Is_VIP__c = false");
    assert_eq!(vip + not_vip, accounts);
    let nulls = n("SELECT COUNT() FROM Account WHERE AnnualRevenue = null");
    let big = n("SELECT COUNT() FROM Account WHERE AnnualRevenue >= 1000000");
    let small = n("SELECT COUNT() FROM Account WHERE AnnualRevenue < 1000000");
    assert_eq!(nulls + big + small, accounts);
    // Like !=, NOT IN matches nulls.
    assert_eq!(n("SELECT COUNT() FROM Account WHERE Tier__c IN ('Gold','Platinum') OR Tier__c NOT IN ('Gold','Platinum')"), accounts);
    assert!(n("SELECT COUNT() FROM Account WHERE Name LIKE '%inc%'") > 0);
    // Errors.
    let r = query(port, &t, "SELECT Id, Bogus__c FROM Account");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()[0]["errorCode"], "INVALID_FIELD");
    admin(
        port,
        "POST",
        "/_mock/sf/Account/fields",
        json!({"name": "Extra__c", "type": "string"}),
    );
    assert_eq!(
        query(port, &t, "SELECT Id, Extra__c FROM Account").status,
        200
    );
    admin(
        port,
        "DELETE",
        "/_mock/sf/Account/fields/Extra__c",
        json!({}),
    );
    assert_eq!(
        query(port, &t, "SELECT Id, Extra__c FROM Account").json()[0]["errorCode"],
        "INVALID_FIELD"
    );
    admin(
        port,
        "POST",
        "/_mock/sf/limits",
        json!({"max_query_length": 50}),
    );
    let r = query(
        port,
        &t,
        "SELECT Id, Name, Phone, Website, Industry FROM Account",
    );
    assert_eq!(r.json()[0]["errorCode"], "MALFORMED_QUERY");
}

#[test]
fn faults_and_hooks() {
    let (port, t) = start_logged_in(Options::default());
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [
            {"path_contains": "/query", "kind": "query_timeout"},
            {"path_contains": "/sobjects", "kind": "request_limit", "skip": 1},
        ]}),
    );
    let r = query(port, &t, "SELECT Id FROM Account");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()[0]["errorCode"], "QUERY_TIMEOUT");
    assert_eq!(query(port, &t, "SELECT Id FROM Account").status, 200);
    assert_eq!(get(port, &t, &format!("{V}/sobjects")).status, 200);
    assert_eq!(get(port, &t, &format!("{V}/sobjects")).status, 403);
    admin(port, "DELETE", "/_mock/faults", json!({}));
    admin(
        port,
        "POST",
        "/_mock/hooks",
        json!({"path_contains": "/query", "skip": 0,
        "action": {"op": "upsert", "object": "Lead", "records": [{"LastName": "Hooked", "Company": "X"}]}}),
    );
    let r = query(
        port,
        &t,
        "SELECT Id, LastName FROM Lead WHERE LastName = 'Hooked'",
    )
    .json();
    assert_eq!(r["totalSize"], 1);
    let stats = admin(port, "GET", "/_mock/stats", json!(null));
    assert!(stats["requests"].as_u64().unwrap() >= 5);
}

#[test]
fn bulk_query_job_lifecycle() {
    let (port, t) = start_logged_in(Options {
        accounts: 2500,
        bulk_polls: 2,
        ..Options::default()
    });
    let auth = bearer(&t, "Content-Type: application/json\r\n");
    let create = |soql: &str| {
        raw(
            port,
            "POST",
            &format!("{V}/jobs/query"),
            &auth,
            &json!({"operation": "query", "query": soql}).to_string(),
        )
    };
    let r = create("SELECT Id, Name, SystemModstamp, Description, Is_VIP__c FROM Account");
    assert_eq!(r.status, 200, "{}", r.text());
    let job = r.json();
    let id = job["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("750"));
    assert_eq!(job["state"], "UploadComplete");
    let early = get(port, &t, &format!("{V}/jobs/query/{id}/results"));
    assert_eq!(early.status, 400);
    assert_eq!(
        get(port, &t, &format!("{V}/jobs/query/{id}")).json()["state"],
        "InProgress"
    );
    assert_eq!(
        get(port, &t, &format!("{V}/jobs/query/{id}")).json()["state"],
        "InProgress"
    );
    let done = get(port, &t, &format!("{V}/jobs/query/{id}")).json();
    assert_eq!(done["state"], "JobComplete");
    let total = done["numberRecordsProcessed"].as_u64().unwrap();
    let (mut rows, mut locator) = (0u64, String::new());
    loop {
        let path = if locator.is_empty() {
            format!("{V}/jobs/query/{id}/results?maxRecords=1000")
        } else {
            format!("{V}/jobs/query/{id}/results?maxRecords=1000&locator={locator}")
        };
        let r = get(port, &t, &path);
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(text.starts_with("\"Id\",\"Name\",\"SystemModstamp\""));
        let n: u64 = r.header("Sforce-NumberOfRecords").unwrap().parse().unwrap();
        assert!(text.contains("Z\","), "{}", &text[..300]);
        rows += n;
        locator = r.header("Sforce-Locator").unwrap();
        if locator == "null" {
            break;
        }
    }
    assert_eq!(rows, total);
    let r = create("SELECT Id, BillingAddress FROM Account");
    let cid = r.json()["id"].as_str().unwrap().to_owned();
    let failed = get(port, &t, &format!("{V}/jobs/query/{cid}")).json();
    assert_eq!(failed["state"], "Failed");
    assert!(failed["errorMessage"]
        .as_str()
        .unwrap()
        .contains("compound"));
    assert_eq!(create("SELECT Nope FROM Account").status, 400);
    let r = raw(
        port,
        "PATCH",
        &format!("{V}/jobs/query/{cid}"),
        &auth,
        r#"{"state":"Aborted"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        raw(port, "DELETE", &format!("{V}/jobs/query/{id}"), &auth, "").status,
        204
    );
    assert_eq!(get(port, &t, &format!("{V}/jobs/query/{id}")).status, 404);
}

#[test]
fn a_million_accounts_start_fast() {
    let start_at = std::time::Instant::now();
    let port = start(Options {
        accounts: 1_000_000,
        ..Options::default()
    });
    assert!(start_at.elapsed().as_millis() < 1000);
    let t = login(port);
    let r = query(port, &t, "SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp > 2024-06-01T00:00:00Z AND SystemModstamp <= 2024-06-02T00:00:00Z ORDER BY SystemModstamp").json();
    let n = r["totalSize"].as_u64().unwrap();
    assert!(n > 500 && n < 3000, "{n}");
}

/// One run of a query locator with a change between its pages: learn the
/// order of `SELECT … ORDER BY SystemModstamp, Id` (3,000 accounts), open a
/// locator with 1,000-record pages, then rename the record at position
/// 1,500 and delete the one at 1,600 before reading pages 2 and 3.
struct CursorRun {
    records: Vec<Value>,
    total: u64,
    changed: Value,
    gone: String,
}

fn cursor_run(port: u16, t: &str, kind: &str, new_name: &str) -> CursorRun {
    let soql =
        "SELECT Id, Name, SystemModstamp, IsDeleted FROM Account ORDER BY SystemModstamp, Id";
    let open = |batch: usize| {
        raw(
            port,
            "GET",
            &format!("{V}/{kind}?q={}", q(soql)),
            &bearer(t, &format!("Sforce-Query-Options: batchSize={batch}\r\n")),
            "",
        )
        .json()
    };
    let order = open(2000);
    let changed = order["records"][1500].clone();
    let gone = order["records"][1600]["Id"].as_str().unwrap().to_owned();
    let first = open(1000);
    let total = first["totalSize"].as_u64().unwrap();
    assert_eq!(total, order["totalSize"].as_u64().unwrap());
    admin(
        port,
        "POST",
        "/_mock/sf/Account/upsert",
        json!({"records": [{"Id": changed["Id"], "Name": new_name}]}),
    );
    admin(
        port,
        "POST",
        "/_mock/sf/Account/delete",
        json!({ "ids": [gone] }),
    );
    let mut records = items(&first["records"]).to_vec();
    let mut page = first;
    while let Some(u) = page["nextRecordsUrl"].as_str() {
        page = get(port, t, u).json();
        assert_eq!(page["totalSize"].as_u64(), Some(total));
        records.extend(items(&page["records"]).iter().cloned());
    }
    CursorRun {
        records,
        total,
        changed,
        gone,
    }
}

impl CursorRun {
    fn find(&self, id: &str) -> Vec<(usize, &Value)> {
        self.records
            .iter()
            .enumerate()
            .filter(|(_, r)| r["Id"] == id)
            .collect()
    }

    /// The changed record: once, where the query put it.
    fn changed_row(&self) -> &Value {
        let id = self.changed["Id"].as_str().unwrap();
        let hits = self.find(id);
        assert_eq!(hits.len(), 1, "{id}");
        hits[0].1
    }
}

#[test]
fn live_cursors_render_current_values_on_later_pages() {
    let opts = Options {
        accounts: 3000,
        live_cursors: true,
        ..Options::default()
    };
    // query: the Id list and order are the query's, the values current;
    // the record deleted since is left out.
    let (port, t) = start_logged_in(opts.clone());
    let run = cursor_run(port, &t, "query", "Live");
    let row = run.changed_row();
    assert_eq!(row["Name"], "Live");
    let (old, new) = (
        run.changed["SystemModstamp"].as_str().unwrap(),
        row["SystemModstamp"].as_str().unwrap(),
    );
    assert!(new > old, "{new} after {old}");
    assert_eq!(run.find(row["Id"].as_str().unwrap())[0].0, 1500);
    assert!(run.find(&run.gone).is_empty());
    assert_eq!(run.records.len() as u64, run.total - 1);
    // queryAll: the deleted record stays, with its current values.
    let (port, t) = start_logged_in(opts);
    let run = cursor_run(port, &t, "queryAll", "Live");
    assert_eq!(run.changed_row()["Name"], "Live");
    let gone = run.find(&run.gone);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1["IsDeleted"], true);
    assert_eq!(run.records.len() as u64, run.total);
}

#[test]
fn cursors_are_snapshots_by_default_and_switch_to_live_at_run_time() {
    let (port, t) = start_logged_in(Options {
        accounts: 3000,
        ..Options::default()
    });
    let run = cursor_run(port, &t, "query", "Changed");
    let row = run.changed_row();
    assert_eq!(row["Name"], run.changed["Name"]);
    assert_eq!(row["SystemModstamp"], run.changed["SystemModstamp"]);
    let gone = run.find(&run.gone);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].1["IsDeleted"], false);
    assert_eq!(run.records.len() as u64, run.total);
    // The admin switch: locators opened from now on are live.
    let limits = admin(
        port,
        "POST",
        "/_mock/sf/limits",
        json!({"live_cursors": true}),
    );
    assert_eq!(limits["live_cursors"], true);
    let run = cursor_run(port, &t, "query", "Switched");
    assert_eq!(run.changed_row()["Name"], "Switched");
    assert!(run.find(&run.gone).is_empty());
    let limits = admin(
        port,
        "POST",
        "/_mock/sf/limits",
        json!({"live_cursors": false}),
    );
    assert_eq!(limits["live_cursors"], false);
}

/// A Bulk query job over Contact (`Name` selected), completed; then the
/// first contact renamed and the second deleted. Returns the results CSV
/// and the two ids.
fn bulk_run(port: u16, t: &str) -> (Resp, String, String) {
    let auth = bearer(t, "Content-Type: application/json\r\n");
    let soql = "SELECT Id, Name, FirstName, LastName, SystemModstamp FROM Contact ORDER BY Id";
    let r = raw(
        port,
        "POST",
        &format!("{V}/jobs/query"),
        &auth,
        &json!({"operation": "query", "query": soql}).to_string(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let job = loop {
        let j = get(port, t, &format!("{V}/jobs/query/{id}")).json();
        if j["state"] != "InProgress" && j["state"] != "UploadComplete" {
            break j;
        }
    };
    assert_eq!(job["state"], "JobComplete", "{job}");
    let first = query(port, t, "SELECT Id FROM Contact ORDER BY Id LIMIT 2").json();
    let a = first["records"][0]["Id"].as_str().unwrap().to_owned();
    let b = first["records"][1]["Id"].as_str().unwrap().to_owned();
    admin(
        port,
        "POST",
        "/_mock/sf/Contact/upsert",
        json!({"records": [{"Id": a, "FirstName": "Zed", "Name": "Zed Live"}]}),
    );
    admin(
        port,
        "POST",
        "/_mock/sf/Contact/delete",
        json!({ "ids": [b] }),
    );
    let r = get(port, t, &format!("{V}/jobs/query/{id}/results"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .text()
        .starts_with("\"Id\",\"Name\",\"FirstName\",\"LastName\",\"SystemModstamp\"\n"));
    (r, a, b)
}

fn csv_row<'a>(text: &'a str, id: &str) -> Option<&'a str> {
    text.lines().find(|l| l.starts_with(&format!("\"{id}\",")))
}

#[test]
fn bulk_jobs_select_name_and_follow_live_cursors() {
    let opts = Options {
        contacts: 300,
        bulk_polls: 0,
        ..Options::default()
    };
    // Default: the job's values are those of its creation.
    let (port, t) = start_logged_in(opts.clone());
    let (r, a, b) = bulk_run(port, &t);
    let text = r.text();
    assert!(!csv_row(&text, &a).unwrap().contains("Zed"));
    assert!(csv_row(&text, &b).is_some());
    let rows: usize = r.header("Sforce-NumberOfRecords").unwrap().parse().unwrap();
    assert_eq!(rows, text.lines().count() - 1);
    // Live: same Ids, current values, the deleted contact left out.
    let (port, t) = start_logged_in(Options {
        live_cursors: true,
        ..opts
    });
    let (r, a, b) = bulk_run(port, &t);
    let text = r.text();
    assert!(csv_row(&text, &a)
        .unwrap()
        .starts_with(&format!("\"{a}\",\"Zed Live\",\"Zed\",")));
    assert!(csv_row(&text, &b).is_none());
    let live_rows: usize = r.header("Sforce-NumberOfRecords").unwrap().parse().unwrap();
    assert_eq!(live_rows, text.lines().count() - 1);
    assert_eq!(live_rows, rows - 1);
}

#[test]
fn person_names_are_compound_name_fields() {
    let (port, t) = start_logged_in(Options::default());
    for obj in ["Contact", "Lead", "User"] {
        let d = get(port, &t, &format!("{V}/sobjects/{obj}/describe")).json();
        let f = |name: &str| {
            items(&d["fields"])
                .iter()
                .find(|f| f["name"] == name)
                .unwrap_or_else(|| panic!("{obj}.{name}"))
                .clone()
        };
        for part in ["FirstName", "LastName"] {
            assert_eq!(f(part)["compoundFieldName"], "Name", "{obj}.{part}");
            assert_eq!(f(part)["type"], "string");
            assert_eq!(f(part)["createable"], true);
        }
        assert_eq!(f("FirstName")["length"], 40);
        assert_eq!(f("LastName")["length"], 80);
        assert_eq!(f("LastName")["nillable"], false);
        let name = f("Name");
        assert_eq!(name["type"], "string", "{obj}");
        assert_eq!(name["soapType"], "xsd:string");
        assert_eq!(name["compoundFieldName"], Value::Null);
        assert_eq!(name["nameField"], true);
        assert_eq!(name["length"], 121);
        assert_eq!(name["createable"], false);
        assert_eq!(name["updateable"], false);
        assert_eq!(name["filterable"], true);
        assert_eq!(name["sortable"], true);
    }
    let d = get(port, &t, &format!("{V}/sobjects/Contact/describe")).json();
    let city = items(&d["fields"])
        .iter()
        .find(|f| f["name"] == "MailingCity")
        .unwrap()
        .clone();
    assert_eq!(city["compoundFieldName"], "MailingAddress");
    // Name is a plain string in REST results and can be filtered and sorted.
    let r = query(
        port,
        &t,
        "SELECT Id, Name, FirstName, LastName FROM Contact WHERE Name != null ORDER BY Name LIMIT 5",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = &r.json()["records"][0];
    assert_eq!(
        rec["Name"].as_str().unwrap(),
        format!(
            "{} {}",
            rec["FirstName"].as_str().unwrap(),
            rec["LastName"].as_str().unwrap()
        )
    );
}

#[test]
fn echo_secrets_quotes_form_fields_as_sent_and_the_session() {
    let (port, sid) = start_logged_in(Options::default());
    admin(
        port,
        "POST",
        "/_mock/faults",
        json!({"rules": [{"path_contains": "/services/oauth2/token", "kind": "echo_secrets", "count": 0},
                         {"path_contains": "/query", "kind": "echo_secrets"}]}),
    );
    // A refresh token with `/`, `+` and `=`, percent-encoded in the form.
    let r = token_call(
        port,
        "grant_type=refresh_token&client_id=3MVG9mock.client.id&client_secret=sec%2Fret%2B1%3D\
         &refresh_token=5Aep%2Frefresh%2Btoken%3D%3D",
    );
    assert_eq!(r.status, 400);
    let v = r.json();
    // The error the grant earns, its description quoting the form.
    assert_eq!(v["error"], "invalid_client");
    let d = v["error_description"].as_str().unwrap();
    for form in [
        "refresh_token=5Aep%2Frefresh%2Btoken%3D%3D",
        "5Aep/refresh+token==",
        "5Aep%2frefresh%2btoken%3d%3d",
        r#"{"refresh_token":"5Aep\/refresh+token=="}"#,
        r"5Aep\u002Frefresh\u002Btoken\u003D\u003D",
        "client_secret=sec%2Fret%2B1%3D",
        "sec/ret+1=",
    ] {
        assert!(d.contains(form), "{form} not in {d}");
    }
    // A valid grant is refused too, quoting its secrets.
    let r = token_call(
        port,
        "grant_type=client_credentials&client_id=3MVG9mock.client.id&client_secret=mock-client-secret",
    );
    assert_eq!(r.json()["error"], "invalid_grant");
    assert!(r.text().contains("mock-client-secret"));
    // REST: the session token, as sent and encoded (`!` is %21).
    let r = query(port, &sid, "SELECT Id FROM Account");
    assert_eq!(r.status, 400);
    let e = &r.json()[0];
    assert_eq!(e["errorCode"], "MALFORMED_QUERY");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains(&sid), "{m}");
    assert!(m.contains(&sid.replace('!', "%21")), "{m}");
    assert!(m.contains(&sid.replace('!', r"\u0021")), "{m}");
    let stats = admin(port, "GET", "/_mock/stats", Value::Null);
    assert_eq!(stats["faults_fired"]["echo_secrets"], 3);
    assert_eq!(
        stats["echoed"]["refresh_token"],
        json!(["5Aep/refresh+token=="])
    );
    assert_eq!(
        stats["echoed"]["client_secret"],
        json!(["sec/ret+1=", "mock-client-secret"])
    );
    assert_eq!(stats["echoed"]["bearer"], json!([sid]));
}
