//! HubSpot's CRM v3 API as the reader needs it: requests with the token,
//! status and error-body handling, property discovery, list and search
//! pages, and associations (v3 list parameter, v4 batch reads).

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use url::Url;

use super::auth::Auth;
use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, HttpClient, Response, Verdict};
use crate::source::{Field, Record};
use crate::types::{parse_datetime, PgType};

pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// `GET /crm/v3/objects/{type}` accepts at most 100 per page.
pub const LIST_PAGE_LIMIT: u32 = 100;
/// `POST /crm/v3/objects/{object}/batch/read`: ids per call.
pub const BATCH_READ_LIMIT: usize = 100;
/// `POST .../search` accepts at most 200 per page.
pub const SEARCH_PAGE_LIMIT: u32 = 200;
/// Search returns at most 10,000 results per query; paging past that is a
/// 400. Our readers page by the sort key, so no query ever gets near it.
pub const HUBSPOT_SEARCH_MAX_RESULTS: u32 = 10_000;
/// Ids per `POST /crm/v4/associations/{from}/{to}/batch/read`: 1,000
/// (HubSpot's reference; a changelog entry once said 100, then 1,000). A
/// search page of 200 takes one call per association type.
pub const ASSOC_BATCH_LIMIT: usize = 1000;
/// Associations per page of `GET /crm/v4/objects/{from}/{id}/associations/{to}`.
pub const ASSOC_PAGE_LIMIT: usize = 500;
/// Most associations of one type read for one record.
pub const MAX_ASSOCIATIONS: usize = 1_000_000;

/// Object names go into URL paths: letters, digits, `_`, `-` only
/// (`contacts`, `p_orders`, `2-123456`).
pub(super) fn check_object(object: &str) -> Result<()> {
    let ok = !object.is_empty()
        && object.len() <= 100
        && object
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(CrmError::config(format!("{object:?} is not a HubSpot object name"))
            .with_hint("Object names look like contacts, companies, deals, or a custom object's p_name or 2-12345."))
    }
}

/// The association types read with `object`'s records (the `associations`
/// source option switches them off): each record's raw JSON carries their
/// ids as the v3 objects API returns them.
pub fn association_types(object: &str) -> &'static [&'static str] {
    match object {
        "contacts" | "0-1" => &["companies"],
        "deals" | "0-3" => &["companies", "contacts"],
        _ => &[],
    }
}

/// The property holding an object's last modification time.
pub fn last_modified_property(object: &str) -> &'static str {
    match object {
        "contacts" | "0-1" => "lastmodifieddate",
        _ => "hs_lastmodifieddate",
    }
}

/// Map a HubSpot property type to a landing column type.
/// <https://developers.hubspot.com/docs/api/crm/properties> (type vs fieldType).
pub fn pg_type_for(hubspot_type: &str) -> PgType {
    match hubspot_type {
        "number" => PgType::Numeric,
        "date" => PgType::Date,
        "datetime" => PgType::TimestampTz,
        "bool" => PgType::Boolean,
        // string, enumeration, phone_number, json, object_coordinates, ...
        _ => PgType::Text,
    }
}

/// A HubSpot account reached with a bearer token or OAuth.
pub struct HubSpot<'a> {
    pub http: &'a HttpClient,
    base: Url,
    pub auth: Auth,
    /// `v3` (the numbered paths) or a date version such as `2026-03`.
    version: String,
    /// The share of the portal's daily API limit (percent) past which runs
    /// stop (option `max_daily_share`; 100: HubSpot's own limit).
    max_daily_share: u64,
    /// Read records' associations (see [`association_types`]).
    associations: bool,
    /// Calculated properties (`"calculated": true`) by object, as the
    /// properties API last listed them.
    calculated: std::cell::RefCell<std::collections::HashMap<String, Vec<String>>>,
}

impl<'a> HubSpot<'a> {
    pub fn new(http: &'a HttpClient, base_url: &str, auth: Auth) -> Result<Self> {
        let mut base = Url::parse(base_url).map_err(|e| {
            CrmError::config(format!("options.base_url is not a valid URL: {e}"))
                .with_hint("Use an absolute URL such as https://api.hubapi.com.")
        })?;
        http.check_url(&base)?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(HubSpot {
            http,
            base,
            auth,
            version: "v3".to_owned(),
            max_daily_share: 100,
            associations: true,
            calculated: Default::default(),
        })
    }

    /// Stop runs once the portal has used this share (percent) of its
    /// daily API limit, leaving the rest to its other integrations.
    pub fn with_max_daily_share(mut self, percent: u64) -> Self {
        self.max_daily_share = percent.clamp(1, 100);
        self
    }

    /// Use the date-versioned paths (`2026-03`) instead of the numbered
    /// ones (`v3`, the default; see [`check_api_version`]).
    pub fn with_api_version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    /// The path of an API: `area` is `objects`, `properties`,
    /// `associations` (v4 when numbered) or `objects/v4` (the per-record
    /// associations, v4 when numbered).
    fn path(&self, area: &str, rest: &str) -> String {
        let numbered = self.version == "v3";
        match (area, numbered) {
            ("objects/v4", true) => format!("crm/v4/objects/{rest}"),
            ("objects/v4", false) => format!("crm/objects/{}/{rest}", self.version),
            ("associations", true) => format!("crm/v4/associations/{rest}"),
            (_, true) => format!("crm/v3/{area}/{rest}"),
            (_, false) => format!("crm/{area}/{}/{rest}", self.version),
        }
    }

    /// Read associations with records (the default) or not.
    pub fn with_associations(mut self, on: bool) -> Self {
        self.associations = on;
        self
    }

    /// The association types read with `object`'s records: none when the
    /// `associations` option is off.
    pub fn associations_for(&self, object: &str) -> &'static [&'static str] {
        if self.associations {
            association_types(object)
        } else {
            &[]
        }
    }

    fn url(&self, path: &str) -> Url {
        // `path` is ours and relative ("crm/v3/..."), so join cannot fail.
        self.base.join(path).expect("relative API path")
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Response> {
        let url = self.url(path);
        let endpoint = format!("{method} /{path}");
        let oauth = matches!(self.auth, Auth::OAuth(_));
        let mut stale = false;
        loop {
            let token = self.auth.bearer(self.http, &self.base, stale).await?;
            let resp = self
                .http
                .send_judged(
                    &endpoint,
                    || {
                        let mut rb = self
                            .http
                            .request(method.clone(), url.clone())
                            .bearer_auth(&token);
                        if !query.is_empty() {
                            rb = rb.query(query);
                        }
                        if let Some(b) = body {
                            rb = rb.json(b);
                        }
                        rb
                    },
                    &judge_rate_limit,
                    self.http.settings().max_retries,
                )
                .await
                .map_err(|e| e.redact(&[&token]))?;
            // An OAuth access token HubSpot no longer takes (expired early,
            // revoked): refresh once and try again.
            if oauth && !stale && resp.status == StatusCode::UNAUTHORIZED {
                stale = true;
                continue;
            }
            let resp = check_status(&endpoint, resp).map_err(|e| e.redact(&[&token]))?;
            self.pace(&endpoint, &resp).await?;
            return Ok(resp);
        }
    }

    /// Keep within the budget the `X-HubSpot-RateLimit-*` headers report,
    /// which count every integration's calls to the portal: stop once the
    /// daily usage passes `max_daily_share`; as the rolling window runs
    /// out, spread the calls left over it, and wait it out when none are.
    async fn pace(&self, endpoint: &str, resp: &Response) -> Result<()> {
        let num = |k: &str| {
            resp.headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if self.max_daily_share < 100 {
            let daily = num("x-hubspot-ratelimit-daily");
            let left = num("x-hubspot-ratelimit-daily-remaining");
            if let (Some(daily), Some(left)) = (daily, left) {
                let used = daily.saturating_sub(left);
                if daily > 0
                    && used.saturating_mul(100) >= daily.saturating_mul(self.max_daily_share)
                {
                    return Err(CrmError::new(
                        ErrorKind::RateLimited,
                        format!(
                            "the HubSpot account has used {used} of its {daily} API calls today, past the {}% this source may use (option max_daily_share)",
                            self.max_daily_share
                        ),
                    )
                    .with_endpoint(endpoint)
                    .with_hint("The daily count resets at midnight in the HubSpot account's time zone; raise max_daily_share with crm_sync.alter_source() to let this source use more of it. The rows synced so far are kept."));
                }
            }
        }
        let window = (
            num("x-hubspot-ratelimit-max"),
            num("x-hubspot-ratelimit-remaining"),
            num("x-hubspot-ratelimit-interval-milliseconds"),
        );
        if let (Some(max), Some(ms)) = (window.0, window.2) {
            self.http
                .learn_budget(max.min(u32::MAX as u64) as u32, ms.min(60_000) as u32);
        }
        if let (Some(max), Some(left), Some(ms)) = window {
            let ms = ms.min(60_000);
            if max > 0 && left == 0 {
                self.http.wait(std::time::Duration::from_millis(ms)).await;
            } else if left.saturating_mul(10) < max {
                self.http
                    .wait(std::time::Duration::from_millis(ms / max))
                    .await;
            }
        }
        Ok(())
    }

    /// Every property of `object`: `GET /crm/v3/properties/{object}`.
    pub async fn properties(&self, object: &str) -> Result<Vec<Field>> {
        check_object(object)?;
        let path = self.path("properties", object);
        let resp = self.call(Method::GET, &path, &[], None).await?;
        #[derive(Deserialize)]
        struct Props {
            results: Vec<Prop>,
        }
        #[derive(Deserialize)]
        struct Prop {
            name: String,
            #[serde(default)]
            label: String,
            #[serde(rename = "type")]
            kind: String,
            #[serde(rename = "hubspotDefined", default)]
            hubspot_defined: Option<bool>,
            #[serde(default)]
            calculated: bool,
        }
        let props: Props = parse_json(&format!("GET /{path}"), &resp.body)?;
        self.calculated.borrow_mut().insert(
            object.to_owned(),
            props
                .results
                .iter()
                .filter(|p| p.calculated)
                .map(|p| p.name.clone())
                .collect(),
        );
        Ok(props
            .results
            .into_iter()
            .map(|p| Field {
                pg_type: pg_type_for(&p.kind),
                custom: !p.hubspot_defined.unwrap_or(false),
                name: p.name,
                label: p.label,
                crm_type: p.kind,
                column: None,
            })
            .collect())
    }

    /// One page of `GET /crm/v3/objects/{object}`, each record with its
    /// `associations` of the types named (none: no parameter).
    pub async fn list_page(
        &self,
        object: &str,
        properties: &str,
        associations: &[&str],
        after: Option<&str>,
        archived: bool,
    ) -> Result<(Vec<Record>, Option<String>, Response)> {
        let path = self.path("objects", object);
        let mut q = vec![
            ("limit", LIST_PAGE_LIMIT.to_string()),
            ("archived", archived.to_string()),
            ("properties", properties.to_owned()),
        ];
        if !associations.is_empty() {
            q.push(("associations", associations.join(",")));
        }
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        let resp = self.call(Method::GET, &path, &q, None).await?;
        let endpoint = format!("GET /{path}");
        let page: WirePage = parse_json(&endpoint, &resp.body)?;
        let records = to_records(&endpoint, object, page.results)?;
        let next = page.paging.and_then(|p| p.next).map(|n| n.after);
        Ok((records, next, resp))
    }

    /// One page of the ids of live `object` records: the list endpoint asked
    /// for no property beyond the id (`properties=hs_object_id`), the
    /// cheapest listing HubSpot has (100 a call).
    /// The calculated properties of `object` (the properties API is asked
    /// once per connection).
    pub async fn calculated(&self, object: &str) -> Result<Vec<String>> {
        if let Some(c) = self.calculated.borrow().get(object) {
            return Ok(c.clone());
        }
        self.properties(object).await?;
        Ok(self
            .calculated
            .borrow()
            .get(object)
            .cloned()
            .unwrap_or_default())
    }

    pub async fn id_page(
        &self,
        object: &str,
        after: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>)> {
        let path = self.path("objects", object);
        let mut q = vec![
            ("limit", LIST_PAGE_LIMIT.to_string()),
            ("archived", "false".to_owned()),
            ("properties", "hs_object_id".to_owned()),
        ];
        if let Some(a) = after {
            q.push(("after", a.to_owned()));
        }
        let resp = self.call(Method::GET, &path, &q, None).await?;
        #[derive(Deserialize)]
        struct Ids {
            results: Vec<IdOnly>,
            #[serde(default)]
            paging: Option<Paging>,
        }
        #[derive(Deserialize)]
        struct IdOnly {
            #[serde(deserialize_with = "id_string")]
            id: String,
        }
        let page: Ids = parse_json(&format!("GET /{path}"), &resp.body)?;
        let next = page.paging.and_then(|p| p.next).map(|n| n.after);
        Ok((page.results.into_iter().map(|r| r.id).collect(), next))
    }

    /// The live records `ids` of `object` with `properties`: `POST
    /// /crm/v3/objects/{object}/batch/read`, [`BATCH_READ_LIMIT`] ids a
    /// call. Ids HubSpot no longer has come back as errors of a 207 and are
    /// left out.
    pub async fn batch_read(
        &self,
        object: &str,
        properties: &[String],
        ids: &[String],
    ) -> Result<Vec<Record>> {
        self.batch_read_in(object, properties, ids, false).await
    }

    /// As [`HubSpot::batch_read`], of live or of archived records.
    pub async fn batch_read_in(
        &self,
        object: &str,
        properties: &[String],
        ids: &[String],
        archived: bool,
    ) -> Result<Vec<Record>> {
        let path = self.path("objects", &format!("{object}/batch/read"));
        let endpoint = format!("POST /{path}");
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH_READ_LIMIT) {
            let inputs: Vec<Value> = chunk.iter().map(|id| json!({ "id": id })).collect();
            let body = json!({ "properties": properties, "inputs": inputs });
            let q = [("archived", archived.to_string())];
            let resp = self.call(Method::POST, &path, &q, Some(&body)).await?;
            let page: WirePage = parse_json(&endpoint, &resp.body)?;
            out.extend(to_records(&endpoint, object, page.results)?);
        }
        Ok(out)
    }

    /// One page of `POST /crm/v3/objects/{object}/search`.
    pub async fn search_page(
        &self,
        object: &str,
        properties: &[String],
        filters: Vec<Value>,
        sort_by: &str,
    ) -> Result<(Vec<Record>, Option<u64>)> {
        let path = self.path("objects", &format!("{object}/search"));
        let body = json!({
            "filterGroups": [{ "filters": filters }],
            "sorts": [{ "propertyName": sort_by, "direction": "ASCENDING" }],
            "properties": properties,
            "limit": SEARCH_PAGE_LIMIT,
        });
        let resp = self.call(Method::POST, &path, &[], Some(&body)).await?;
        let endpoint = format!("POST /{path}");
        let page: WirePage = parse_json(&endpoint, &resp.body)?;
        let records = to_records(&endpoint, object, page.results)?;
        Ok((records, page.total))
    }

    /// Every association of record `id` of `object` to `to` records, from
    /// `after` on: `GET /crm/v4/objects/{object}/{id}/associations/{to}`,
    /// [`ASSOC_PAGE_LIMIT`] a page, following `paging.next.after`.
    async fn associations_of(
        &self,
        object: &str,
        id: &str,
        to: &str,
        mut after: Option<String>,
    ) -> Result<Vec<AssocTo>> {
        check_object(to)?;
        if !id.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
            return Err(CrmError::bad_response(format!(
                "HubSpot returned a record id that is not a number: {id:?}"
            )));
        }
        let path = self.path("objects/v4", &format!("{object}/{id}/associations/{to}"));
        let endpoint = format!("GET /{}", path.replace(&format!("/{id}/"), "/{id}/"));
        #[derive(Deserialize)]
        struct AssocPage {
            #[serde(default)]
            results: Vec<AssocTo>,
            #[serde(default)]
            paging: Option<Paging>,
        }
        let mut out = Vec::new();
        let mut cursors = crate::paging::Cursors::default();
        loop {
            let mut q = vec![("limit", ASSOC_PAGE_LIMIT.to_string())];
            if let Some(a) = &after {
                cursors.follow("HubSpot's association paging", a)?;
                q.push(("after", a.clone()));
            }
            let resp = self.call(Method::GET, &path, &q, None).await?;
            let page: AssocPage = parse_json(&endpoint, &resp.body)?;
            out.extend(page.results);
            // A record with more links than any real one (HubSpot caps
            // associations per record far below this) is a looping answer.
            if out.len() > MAX_ASSOCIATIONS {
                return Err(CrmError::bad_response(format!(
                    "{endpoint} returned more than {MAX_ASSOCIATIONS} associations for one record; stopping"
                )));
            }
            after = page.paging.and_then(|p| p.next).map(|n| n.after);
            if after.is_none() {
                return Ok(out);
            }
        }
    }

    /// Complete the associations a list page embedded (v3 `associations=`
    /// lists one page per type, with `paging` when there are more): each
    /// type that has more is read whole and put in the record's raw JSON.
    pub async fn complete_associations(&self, object: &str, records: &mut [Record]) -> Result<()> {
        for r in records.iter_mut() {
            // Cheap test first: almost no record has more than a page.
            if !r.raw.contains("\"paging\"") {
                continue;
            }
            let mut raw: Value = serde_json::from_str(&r.raw).map_err(|e| {
                CrmError::bad_response(format!(
                    "a record in the response has an unexpected shape: {e}"
                ))
            })?;
            let Some(assoc) = raw.get_mut("associations").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut changed = false;
            for (to, per_type) in assoc.iter_mut() {
                if per_type.get("paging").is_none() {
                    continue;
                }
                let all = self.associations_of(object, &r.id, to, None).await?;
                *per_type = json!({ "results": v3_associations(object, to, &all) });
                changed = true;
            }
            if changed {
                r.raw = raw.to_string();
            }
        }
        Ok(())
    }

    /// The associations of `to` records for the records `from_ids` of
    /// `object`, in the v3 shape (see [`v3_associations`]), by record id;
    /// ids without associations are absent. `POST
    /// /crm/v4/associations/{object}/{to}/batch/read`, [`ASSOC_BATCH_LIMIT`]
    /// ids a call; its 207 (some ids without associations) is a success.
    pub async fn read_associations(
        &self,
        object: &str,
        to: &str,
        from_ids: &[&str],
    ) -> Result<HashMap<String, Vec<Value>>> {
        check_object(to)?;
        let path = self.path("associations", &format!("{object}/{to}/batch/read"));
        let endpoint = format!("POST /{path}");
        let mut out = HashMap::new();
        for chunk in from_ids.chunks(ASSOC_BATCH_LIMIT) {
            let inputs: Vec<Value> = chunk.iter().map(|id| json!({ "id": id })).collect();
            let body = json!({ "inputs": inputs });
            let resp = self.call(Method::POST, &path, &[], Some(&body)).await?;
            let batch: AssocBatch = parse_json(&endpoint, &resp.body)?;
            // A 207 lists the ids without associations; any other error
            // would land records without their links, so it fails the page
            // (which is read again on the next attempt).
            if let Some(e) = batch.errors.iter().find(|e| !e.no_associations()) {
                return Err(CrmError::bad_response(format!(
                    "{endpoint} reported an error for some records: {} {}: {}",
                    e.category, e.sub_category, e.message
                )));
            }
            for mut r in batch.results {
                if let Some(after) = r.paging.take().and_then(|p| p.next).map(|n| n.after) {
                    let rest = self
                        .associations_of(object, &r.from.id, to, Some(after))
                        .await?;
                    r.to.extend(rest);
                }
                let entries = v3_associations(object, to, &r.to);
                if !entries.is_empty() {
                    out.entry(r.from.id)
                        .or_insert_with(Vec::new)
                        .extend(entries);
                }
            }
        }
        Ok(out)
    }
}

/// `POST /crm/v4/associations/{from}/{to}/batch/read` response, the parts
/// used (`errors` lists the ids without associations).
#[derive(Debug, Deserialize)]
struct AssocBatch {
    #[serde(default)]
    results: Vec<AssocResult>,
    #[serde(default)]
    errors: Vec<AssocError>,
}

#[derive(Debug, Deserialize)]
struct AssocError {
    #[serde(default)]
    category: String,
    #[serde(rename = "subCategory", default)]
    sub_category: String,
    #[serde(default)]
    message: String,
}

impl AssocError {
    /// "This record has none": the only error a complete answer has.
    fn no_associations(&self) -> bool {
        self.sub_category.ends_with("NO_ASSOCIATIONS_FOUND")
    }
}

#[derive(Debug, Deserialize)]
struct AssocResult {
    from: AssocFrom,
    #[serde(default)]
    to: Vec<AssocTo>,
    /// More associations than one answer holds: the rest are read with
    /// [`HubSpot::associations_of`] from this cursor.
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct AssocFrom {
    #[serde(deserialize_with = "id_string")]
    id: String,
}

#[derive(Debug, Deserialize)]
struct AssocTo {
    /// A number in HubSpot's answers, a string in its OpenAPI spec.
    #[serde(rename = "toObjectId", deserialize_with = "id_string")]
    to_object_id: String,
    #[serde(rename = "associationTypes", default)]
    association_types: Vec<AssocType>,
}

#[derive(Debug, Deserialize)]
struct AssocType {
    #[serde(default)]
    category: String,
    #[serde(rename = "typeId")]
    type_id: i64,
    #[serde(default)]
    label: Option<String>,
}

/// An id given as a JSON string or number.
fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
    })
}

/// The singular of an object name as v3 association type names use it.
fn singular(object: &str) -> &str {
    match object {
        "contacts" | "0-1" => "contact",
        "companies" | "0-2" => "company",
        "deals" | "0-3" => "deal",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// HubSpot-defined type ids of the primary association between two objects.
fn primary_type_id(object: &str, to: &str) -> Option<i64> {
    match (singular(object), singular(to)) {
        ("contact", "company") => Some(1),
        ("deal", "company") => Some(5),
        _ => None,
    }
}

/// One v4 batch-read result's associations as the v3 objects API lists
/// them: `{"id": "<id>", "type": "<from>_to_<to>"}`, the primary first, then
/// every associated record (`…_unlabeled` where the pair has a primary type,
/// as v3 names them) by id.
fn v3_associations(object: &str, to: &str, assoc: &[AssocTo]) -> Vec<Value> {
    let base = format!("{}_to_{}", singular(object), singular(to));
    let primary_id = primary_type_id(object, to);
    let is_primary = |t: &AssocType| {
        t.category == "HUBSPOT_DEFINED"
            && (Some(t.type_id) == primary_id
                || (primary_id.is_none() && t.label.as_deref() == Some("Primary")))
    };
    let unlabeled = if primary_id.is_some() {
        format!("{base}_unlabeled")
    } else {
        base.clone()
    };
    let mut ids: Vec<&str> = assoc.iter().map(|a| a.to_object_id.as_str()).collect();
    let by_id = |a: &&str, b: &&str| {
        (a.len(), *a).cmp(&(b.len(), *b)) // numeric order for decimal ids
    };
    ids.sort_by(by_id);
    ids.dedup();
    let mut primaries: Vec<&str> = assoc
        .iter()
        .filter(|a| a.association_types.iter().any(is_primary))
        .map(|a| a.to_object_id.as_str())
        .collect();
    primaries.sort_by(by_id);
    primaries.dedup();
    let mut out: Vec<Value> = primaries
        .iter()
        .map(|id| json!({ "id": id, "type": base }))
        .collect();
    out.extend(ids.iter().map(|id| json!({ "id": id, "type": unlabeled })));
    out
}

/// Put `assoc` (association type -> v3 entries) into a record's raw JSON as
/// `"associations": {type: {"results": [...]}}`, as the v3 objects API
/// returns them; a record that already has `associations` is left as is.
fn attach_associations(record: &mut Record, assoc: Map<String, Value>) -> Result<()> {
    if assoc.is_empty() {
        return Ok(());
    }
    let keys: HashMap<String, serde::de::IgnoredAny> =
        serde_json::from_str(&record.raw).map_err(|e| {
            CrmError::bad_response(format!(
                "a record in the response has an unexpected shape: {e}"
            ))
        })?;
    if keys.contains_key("associations") {
        return Ok(());
    }
    let body = record.raw.trim_end();
    let Some(head) = body.strip_suffix('}') else {
        return Err(CrmError::bad_response(
            "a record in the response is not a JSON object",
        ));
    };
    let sep = if head.trim_end().ends_with('{') {
        ""
    } else {
        ","
    };
    let value = Value::Object(
        assoc
            .into_iter()
            .map(|(t, results)| (t, json!({ "results": results })))
            .collect(),
    );
    record.raw = format!("{head}{sep}\"associations\":{value}}}");
    Ok(())
}

/// Read the associations of `types` for a page of `object` records (from a
/// search, which returns none) and put them into the records' raw JSON.
pub(crate) async fn add_associations(
    api: &HubSpot<'_>,
    object: &str,
    types: &[&str],
    records: &mut [Record],
) -> Result<()> {
    if types.is_empty() || records.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let mut per_record: HashMap<String, Map<String, Value>> = HashMap::new();
    for to in types {
        for (id, entries) in api.read_associations(object, to, &ids).await? {
            per_record
                .entry(id)
                .or_default()
                .insert((*to).to_owned(), Value::Array(entries));
        }
    }
    for r in records.iter_mut() {
        if let Some(assoc) = per_record.remove(&r.id) {
            attach_associations(r, assoc)?;
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct WirePage {
    results: Vec<Box<RawValue>>,
    #[serde(default)]
    paging: Option<Paging>,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Debug, Deserialize)]
struct Next {
    after: String,
}

#[derive(Deserialize)]
struct WireRecord {
    id: String,
    #[serde(default)]
    properties: Map<String, Value>,
    #[serde(rename = "updatedAt", default)]
    updated_at: Option<String>,
    #[serde(default)]
    archived: bool,
    #[serde(rename = "archivedAt", default)]
    archived_at: Option<String>,
}

fn to_records(endpoint: &str, object: &str, raws: Vec<Box<RawValue>>) -> Result<Vec<Record>> {
    let lm = last_modified_property(object);
    raws.into_iter()
        .map(|raw| {
            let w: WireRecord = serde_json::from_str(raw.get()).map_err(|e| {
                CrmError::bad_response(format!(
                    "a record in the response has an unexpected shape: {e}"
                ))
                .with_endpoint(endpoint)
            })?;
            let updated_at = w
                .properties
                .get(lm)
                .and_then(Value::as_str)
                .or(w.updated_at.as_deref())
                .and_then(parse_datetime);
            let deleted_at = if w.archived {
                Some(
                    w.archived_at
                        .as_deref()
                        .and_then(parse_datetime)
                        .or(updated_at)
                        .unwrap_or_else(chrono::Utc::now),
                )
            } else {
                None
            };
            let merged_ids = merged_ids(&w.id, &w.properties);
            Ok(Record {
                id: w.id,
                updated_at,
                deleted_at,
                fields: w.properties,
                raw: raw.get().to_owned(),
                merged_ids,
                deletion_only: false,
                unparsed: 0,
            })
        })
        .collect()
}

/// The properties a read of `object` asks for: those the reader keys on
/// (modification time, id, creation time, and the merged ids where records
/// merge) first, then `wanted`; with how many come first.
pub fn read_properties(object: &str, wanted: &[String]) -> (Vec<String>, usize) {
    let merged = merges(object).then_some(MERGED_IDS_PROPERTY);
    let mut props: Vec<String> = [last_modified_property(object), "hs_object_id", "createdate"]
        .into_iter()
        .chain(merged)
        .map(str::to_owned)
        .collect();
    let required = props.len();
    for p in wanted {
        if !props.contains(p) {
            props.push(p.clone());
        }
    }
    (props, required)
}

/// The longest `properties=` value (percent-encoded) a list URL carries:
/// HubSpot refuses URLs past about 16,300 characters with 414, Airbyte
/// splits its property lists at 15,000 (airbyte#33976); the rest of the URL
/// (host, path, limit, after, associations) stays well under the margin.
pub const LIST_PROPERTIES_MAX: usize = 12_000;

/// Split `props` (the first ones always kept) into those a list URL carries
/// and the rest, which a batch read takes in its body.
pub fn split_for_url(props: &[String], keep_first: usize) -> (Vec<String>, Vec<String>) {
    let encoded = |p: &str| {
        p.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    1
                } else {
                    3
                }
            })
            .sum::<usize>()
            + 3 // the %2C between names
    };
    let mut used = 0;
    let (mut url, mut body) = (Vec::new(), Vec::new());
    for (i, p) in props.iter().enumerate() {
        let n = encoded(p);
        if i < keep_first || (body.is_empty() && used + n <= LIST_PROPERTIES_MAX) {
            used += n;
            url.push(p.clone());
        } else {
            body.push(p.clone());
        }
    }
    (url, body)
}

/// Put the properties of `extra` (the same records, read for other
/// properties) into `records`, whose values and raw JSON get them; records
/// `extra` lacks (gone between the two calls) are dropped, so that only
/// whole records land.
pub fn join_properties(records: &mut Vec<Record>, extra: Vec<Record>) -> Result<()> {
    let mut by_id: HashMap<String, Record> = extra.into_iter().map(|r| (r.id.clone(), r)).collect();
    records.retain(|r| by_id.contains_key(&r.id));
    for r in records.iter_mut() {
        let more = by_id
            .remove(&r.id)
            .expect("kept records have their other part");
        let mut raw: Value = serde_json::from_str(&r.raw).map_err(|e| {
            CrmError::bad_response(format!(
                "a record in the response has an unexpected shape: {e}"
            ))
        })?;
        if let Some(props) = raw.get_mut("properties").and_then(Value::as_object_mut) {
            for (k, v) in &more.fields {
                props.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for (k, v) in more.fields {
            r.fields.entry(k).or_insert(v);
        }
        r.raw = raw.to_string();
    }
    Ok(())
}

/// The date versions of HubSpot's API this connector knows, newest first.
pub const DATE_VERSIONS: &[&str] = &["2026-03"];

/// `api_version`: `v3` (the numbered paths: `/crm/v3/objects`, v4
/// associations) or a date version (`/crm/objects/2026-03/...`), which
/// HubSpot is moving to (v4 ends on 2027-03-30).
/// <https://developers.hubspot.com/docs/api-reference/latest/overview>
pub fn check_api_version(v: &str) -> Result<()> {
    if v == "v3" || DATE_VERSIONS.contains(&v) {
        return Ok(());
    }
    Err(CrmError::config(format!(
        "option api_version {v:?} is not one this connector knows"
    ))
    .with_hint(format!(
        "Use \"v3\" (the default) or one of: {}.",
        DATE_VERSIONS.join(", ")
    )))
}

/// The property naming the records merged into a contact or company: a
/// merge makes a record with a new id, both old ids leave every list, and
/// this property of the new record lists them, and those of earlier merges
/// into either (HubSpot's "updated merge functionality"; Fivetran's
/// dbt_hubspot relies on it for chains of merges, fivetran/dbt_hubspot#172).
pub const MERGED_IDS_PROPERTY: &str = "hs_merged_object_ids";

/// The objects whose records can be merged into new ones.
pub fn merges(object: &str) -> bool {
    matches!(object, "contacts" | "companies")
}

/// The ids `hs_merged_object_ids` lists (semicolon-separated), the record's
/// own left out.
fn merged_ids(own: &str, properties: &Map<String, Value>) -> Vec<String> {
    let Some(list) = properties.get(MERGED_IDS_PROPERTY).and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out: Vec<String> = list
        .split(';')
        .map(str::trim)
        .filter(|id| !id.is_empty() && *id != own && id.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

fn parse_json<'de, T: Deserialize<'de>>(endpoint: &str, body: &'de [u8]) -> Result<T> {
    crate::http::parse_json("HubSpot", endpoint, body)
}

/// The `policyName` of a HubSpot 429 body: `DAILY`, `TEN_SECONDLY_ROLLING`,
/// `SECONDLY` (search), ...
fn rate_limit_policy(resp: &Response) -> Option<String> {
    #[derive(Deserialize)]
    struct Limited {
        #[serde(rename = "policyName")]
        policy: Option<String>,
    }
    if resp.status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    serde_json::from_slice::<Limited>(&resp.body).ok()?.policy
}

/// HubSpot's 429s by policy: the daily limit lasts until midnight, so it
/// is reported at once; a ten-secondly or secondly window is waited out
/// (`X-HubSpot-RateLimit-Interval-Milliseconds`, HubSpot's own clients
/// wait 10 s a try); anything else is retried with backoff.
/// <https://developers.hubspot.com/docs/api/usage-details>
fn judge_rate_limit(resp: &Response) -> Verdict {
    let window = || {
        resp.headers
            .get("x-hubspot-ratelimit-interval-milliseconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|ms| std::time::Duration::from_millis(ms.min(60_000)))
    };
    match rate_limit_policy(resp).as_deref() {
        Some("DAILY") => Verdict::Final,
        Some("TEN_SECONDLY_ROLLING") => {
            Verdict::Retry(Some(window().unwrap_or(std::time::Duration::from_secs(10))))
        }
        Some("SECONDLY") => {
            Verdict::Retry(Some(window().unwrap_or(std::time::Duration::from_secs(1))))
        }
        _ => Verdict::Default,
    }
}

/// HubSpot error bodies: `{"status":"error","message":…,"category":…}`.
fn check_status(endpoint: &str, resp: Response) -> Result<Response> {
    let s = resp.status;
    if s.is_success() {
        return Ok(resp);
    }
    if rate_limit_policy(&resp).as_deref() == Some("DAILY") {
        let limit = resp
            .headers
            .get("x-hubspot-ratelimit-daily")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(" of {v} calls"))
            .unwrap_or_default();
        return Err(CrmError::new(
            ErrorKind::RateLimited,
            format!("HubSpot's daily API limit{limit} is used up (HTTP 429, policy DAILY)"),
        )
        .with_endpoint(endpoint)
        .with_detail(body_excerpt(&resp.body))
        .with_hint("The limit resets at midnight in the HubSpot account's time zone; sync again after that, or sync less (fewer streams or properties, a longer reconcile_every). The rows synced so far are kept."));
    }
    #[derive(Deserialize, Default)]
    struct ErrBody {
        #[serde(default)]
        message: String,
        #[serde(default)]
        category: String,
    }
    let eb: ErrBody = serde_json::from_slice(&resp.body).unwrap_or_default();
    let what = if eb.category.is_empty() {
        format!("HTTP {}", s.as_u16())
    } else {
        format!("HTTP {} {}", s.as_u16(), eb.category)
    };
    let detail = if eb.message.is_empty() {
        body_excerpt(&resp.body)
    } else {
        eb.message
    };
    let err = match s {
        StatusCode::UNAUTHORIZED => CrmError::new(ErrorKind::Auth, format!("HubSpot rejected the access token ({what})"))
            .with_hint("Check credentials.access_token: a private app's access token, a service key or a personal access key (or an OAuth app's client_id, client_secret and refresh_token). Update it with crm_sync.alter_source(name, credentials => '{\"access_token\": \"...\"}')."),
        StatusCode::FORBIDDEN => CrmError::new(ErrorKind::Auth, format!("HubSpot refused access ({what})"))
            .with_hint("The private app lacks a scope this stream needs (e.g. crm.objects.contacts.read); grant it in HubSpot, or disable the stream in crm_sync.streams."),
        _ => CrmError::new(ErrorKind::ApiRejected, format!("HubSpot rejected the request ({what})"))
            .with_hint("Check the source options and the stream's properties in crm_sync.streams."),
    };
    Err(err.with_endpoint(endpoint).with_detail(detail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_with_raw_and_archive_marks() {
        let raws: Vec<Box<RawValue>> = serde_json::from_str(
            r#"[{"id":"1","properties":{"lastmodifieddate":"2024-01-01T00:00:00.000Z","email":"a@b.c"},"createdAt":"x","updatedAt":"2024-01-01T00:00:00.000Z","archived":false},
                {"id":"2","properties":{"lastmodifieddate":"2024-01-02T00:00:00Z"},"archived":true,"archivedAt":"2024-02-01T00:00:00Z"}]"#,
        )
        .unwrap();
        let recs = to_records("GET /x", "contacts", raws).unwrap();
        assert_eq!(recs[0].id, "1");
        assert_eq!(recs[0].fields["email"], "a@b.c");
        assert!(recs[0].raw.starts_with("{\"id\":\"1\""));
        assert!(recs[0].deleted_at.is_none());
        assert_eq!(recs[1].deleted_at, parse_datetime("2024-02-01T00:00:00Z"));
        assert_eq!(recs[1].updated_at, parse_datetime("2024-01-02T00:00:00Z"));
    }

    /// A 207 body as HubSpot sends it: deal 1 with a primary company and a
    /// second one, deal 2 in `errors` (no associations).
    const BATCH_207: &str = r#"{"status":"COMPLETE","results":[
        {"from":{"id":"1"},"to":[
            {"toObjectId":90,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":341,"label":null}]},
            {"toObjectId":12,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":5,"label":"Primary"},
                                                 {"category":"HUBSPOT_DEFINED","typeId":341,"label":null}]}]}],
        "numErrors":1,"errors":[{"status":"error","category":"OBJECT_NOT_FOUND",
            "subCategory":"crm.associations.NO_ASSOCIATIONS_FOUND","message":"No company is associated with deal 2.",
            "context":{"fromObjectId":["2"],"fromObjectType":["deal"],"toObjectType":["company"]}}],
        "startedAt":"2024-01-01T00:00:00.000Z","completedAt":"2024-01-01T00:00:00.010Z"}"#;

    #[test]
    fn v4_batch_reads_become_v3_associations() {
        let b: AssocBatch = parse_json("POST /x", BATCH_207.as_bytes()).unwrap();
        assert_eq!(b.results.len(), 1);
        assert_eq!(b.results[0].from.id, "1");
        let v3 = v3_associations("deals", "companies", &b.results[0].to);
        assert_eq!(
            Value::Array(v3),
            json!([{"id": "12", "type": "deal_to_company"},
                   {"id": "12", "type": "deal_to_company_unlabeled"},
                   {"id": "90", "type": "deal_to_company_unlabeled"}])
        );
        // String ids (as in HubSpot's OpenAPI spec), a pair without a primary
        // type, ids ordered as numbers.
        let to: Vec<AssocTo> = serde_json::from_str(
            r#"[{"toObjectId":"100","associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":3}]},
                {"toObjectId":"7","associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":3,"label":null}]}]"#,
        )
        .unwrap();
        assert_eq!(
            Value::Array(v3_associations("deals", "contacts", &to)),
            json!([{"id": "7", "type": "deal_to_contact"}, {"id": "100", "type": "deal_to_contact"}])
        );
        let to: Vec<AssocTo> = serde_json::from_str(
            r#"[{"toObjectId":5,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":279,"label":null},
                                                     {"category":"HUBSPOT_DEFINED","typeId":1,"label":"Primary"}]}]"#,
        )
        .unwrap();
        assert_eq!(
            v3_associations("contacts", "companies", &to)[0],
            json!({"id": "5", "type": "contact_to_company"})
        );
        // Malformed: the connector's bad_response error.
        for bad in [
            r#"{"results":[{"from":{},"to":[]}]}"#,
            r#"{"results":[{"from":{"id":"1"},"to":[{"toObjectId":[1]}]}]}"#,
            r#"{"results":"#,
        ] {
            let e = parse_json::<AssocBatch>(
                "POST /crm/v4/associations/deals/companies/batch/read",
                bad.as_bytes(),
            )
            .unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadResponse, "{bad}");
        }
    }

    fn record(raw: &str) -> Record {
        Record {
            id: "1".into(),
            updated_at: None,
            deleted_at: None,
            fields: Map::new(),
            raw: raw.into(),
            merged_ids: Vec::new(),
            deletion_only: false,
            unparsed: 0,
        }
    }

    #[test]
    fn associations_are_merged_into_the_raw_json() {
        let mut r = record(r#"{"id":"1","properties":{"a":"x"},"archived":false} "#);
        let mut assoc = Map::new();
        assoc.insert(
            "companies".into(),
            json!([{"id": "12", "type": "deal_to_company"}]),
        );
        assoc.insert(
            "contacts".into(),
            json!([{"id": "7", "type": "deal_to_contact"}]),
        );
        attach_associations(&mut r, assoc.clone()).unwrap();
        assert!(r
            .raw
            .starts_with(r#"{"id":"1","properties":{"a":"x"},"archived":false,"associations":"#));
        let v: Value = serde_json::from_str(&r.raw).unwrap();
        assert_eq!(v["associations"]["companies"]["results"][0]["id"], "12");
        assert_eq!(
            v["associations"]["contacts"]["results"][0]["type"],
            "deal_to_contact"
        );
        // Already there (as from a list page): left alone.
        let before = r.raw.clone();
        attach_associations(&mut r, assoc.clone()).unwrap();
        assert_eq!(r.raw, before);
        // Nothing to add: unchanged, no empty key.
        let mut r = record(r#"{"id":"1"}"#);
        attach_associations(&mut r, Map::new()).unwrap();
        assert_eq!(r.raw, r#"{"id":"1"}"#);
        let mut r = record("{}");
        attach_associations(&mut r, assoc.clone()).unwrap();
        assert!(serde_json::from_str::<Value>(&r.raw).unwrap()["associations"].is_object());
        let mut r = record("[1]");
        assert_eq!(
            attach_associations(&mut r, assoc).unwrap_err().kind,
            ErrorKind::BadResponse
        );
    }

    #[test]
    fn association_types_per_object() {
        assert_eq!(association_types("contacts"), ["companies"]);
        assert_eq!(association_types("deals"), ["companies", "contacts"]);
        assert!(association_types("companies").is_empty());
        assert!(association_types("p_orders").is_empty());
    }

    #[test]
    fn long_property_lists_are_split_within_the_url_budget() {
        let props: Vec<String> = (0..1000)
            .map(|i| format!("custom_property_with_a_realistic_long_name_{i:04}"))
            .collect();
        let (url, body) = split_for_url(&props, 3);
        assert_eq!(url.len() + body.len(), 1000);
        assert_eq!(url[..3], props[..3]);
        let encoded: usize = url.iter().map(|p| p.len() + 3).sum();
        assert!(encoded <= LIST_PROPERTIES_MAX, "{encoded}");
        assert!(!body.is_empty());
        // Order kept, nothing twice.
        assert_eq!([url, body].concat(), props);
        let few: Vec<String> = vec!["email".into(), "firstname".into()];
        assert_eq!(split_for_url(&few, 1), (few.clone(), vec![]));
    }

    #[test]
    fn extra_properties_join_whole_records_only() {
        let rec = |raw: &str| {
            to_records(
                "GET /x",
                "contacts",
                vec![RawValue::from_string(raw.into()).unwrap()],
            )
            .unwrap()
            .remove(0)
        };
        let mut page = vec![
            rec(r#"{"id":"1","properties":{"email":"a@x.com"}}"#),
            rec(r#"{"id":"2","properties":{"email":"b@x.com"}}"#),
        ];
        // Record 2 went between the two calls: it is left for the next run.
        let extra = vec![rec(
            r#"{"id":"1","properties":{"wide_1":"v1","email":"ignored"}}"#,
        )];
        join_properties(&mut page, extra).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].fields["wide_1"], "v1");
        assert_eq!(page[0].fields["email"], "a@x.com");
        let raw: Value = serde_json::from_str(&page[0].raw).unwrap();
        assert_eq!(raw["properties"]["wide_1"], "v1");
        assert_eq!(raw["properties"]["email"], "a@x.com");
    }

    #[test]
    fn merged_ids_are_read_from_hs_merged_object_ids() {
        let raw = r#"{"id":"901","properties":{"hs_merged_object_ids":"12;34; 901;;x7;34"},"archived":false}"#;
        let recs = to_records(
            "GET /x",
            "contacts",
            vec![RawValue::from_string(raw.into()).unwrap()],
        )
        .unwrap();
        assert_eq!(recs[0].merged_ids, ["12", "34"]);
        let none = r#"{"id":"5","properties":{"hs_merged_object_ids":null}}"#;
        let recs = to_records(
            "GET /x",
            "contacts",
            vec![RawValue::from_string(none.into()).unwrap()],
        )
        .unwrap();
        assert!(recs[0].merged_ids.is_empty());
    }

    #[test]
    fn bad_bodies_are_named() {
        let e = parse_json::<WirePage>("GET /crm/v3/objects/contacts", b"{\"results\":[{\"id\"")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadResponse);
        assert!(e.message.contains("truncated"), "{}", e.message);
        let e = parse_json::<WirePage>("GET /x", b"<html>oops</html>").unwrap_err();
        assert!(e.message.contains("malformed"), "{}", e.message);
        assert_eq!(e.endpoint.as_deref(), Some("GET /x"));
    }

    #[test]
    fn type_map() {
        assert_eq!(pg_type_for("number"), PgType::Numeric);
        assert_eq!(pg_type_for("datetime"), PgType::TimestampTz);
        assert_eq!(pg_type_for("date"), PgType::Date);
        assert_eq!(pg_type_for("bool"), PgType::Boolean);
        assert_eq!(pg_type_for("enumeration"), PgType::Text);
        assert_eq!(pg_type_for("phone_number"), PgType::Text);
        assert_eq!(last_modified_property("contacts"), "lastmodifieddate");
        assert_eq!(last_modified_property("deals"), "hs_lastmodifieddate");
        assert!(check_object("2-123456").is_ok() && check_object("p_orders").is_ok());
        assert!(check_object("../../objects/contacts/1").is_err());
        assert!(check_object("contacts?x=1").is_err());
    }
}
