//! HubSpot CRM v3: contacts, companies and deals. See README.md beside this
//! file for the API facts this connector relies on.

mod reader;

pub use reader::HubSpotReader;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use url::Url;

use super::{
    BoxFuture, CheckArgs, Connector, DefaultFields, Field, ObjectInfo, PageSource, Provider,
    ReadRequest, StreamDefaults,
};
use crate::config::{check_url_option, require_credential, SourceConfig};
use crate::engine::Record;
use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, HttpClient, Response};
use crate::types::{parse_datetime, PgType};

pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";
/// `GET /crm/v3/objects/{type}` accepts at most 100 per page.
pub const LIST_PAGE_LIMIT: u32 = 100;
/// `POST .../search` accepts at most 200 per page.
pub const SEARCH_PAGE_LIMIT: u32 = 200;
/// Search returns at most 10,000 results per query; paging past that is a
/// 400. Our readers page by the sort key, so no query ever gets near it.
pub const HUBSPOT_SEARCH_MAX_RESULTS: u32 = 10_000;

const TOKEN_HINT: &str =
    "Pass the private app's access token: credentials => '{\"access_token\": \"pat-...\"}'.";

/// HubSpot as the rest of the system sees it.
pub const PROVIDER: Provider = Provider {
    name: "hubspot",
    options: &["base_url"],
    credentials: &["access_token"],
    streams: STREAMS,
    // Objects may have hundreds of properties, all sent in the list URL:
    // only the id and modification time unless the user picks properties.
    other_objects: DefaultFields::Only(&[]),
    check,
    connect,
};

fn check(a: &CheckArgs<'_>) -> Result<()> {
    require_credential(a.credentials, "hubspot", "access_token", TOKEN_HINT)?;
    check_url_option(
        a.options,
        "base_url",
        DEFAULT_BASE_URL,
        a.allow_insecure_http,
    )
}

fn connect<'a>(http: &'a HttpClient, cfg: &'a SourceConfig) -> Result<Box<dyn Connector + 'a>> {
    let base = cfg.option_str("base_url").unwrap_or(DEFAULT_BASE_URL);
    let token = cfg.credential("access_token").unwrap_or_default();
    Ok(Box::new(HubSpot::new(http, base, token)?))
}

/// The objects this connector syncs. HubSpot's custom objects (schemas API)
/// are not supported yet.
const OBJECTS: &[(&str, &str)] = &[
    ("contacts", "Contacts"),
    ("companies", "Companies"),
    ("deals", "Deals"),
];

impl Connector for HubSpot<'_> {
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>> {
        let objects = OBJECTS
            .iter()
            .map(|(name, label)| ObjectInfo {
                name: (*name).to_owned(),
                label: (*label).to_owned(),
                custom: false,
            })
            .collect();
        Box::pin(async move { Ok(objects) })
    }

    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>> {
        Box::pin(self.properties(object))
    }

    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>> {
        Box::pin(async move {
            check_object(&req.object)?;
            let props: Vec<String> = req.fields.iter().map(|f| f.name.clone()).collect();
            let r = HubSpotReader::new(
                self,
                &req.object,
                &props,
                &req.mode,
                req.lookback.as_millis() as i64,
                req.track_deletes,
                req.resume.as_deref(),
            )?;
            Ok(Box::new(r) as Box<dyn PageSource + 'a>)
        })
    }
}

pub const STREAMS: &[StreamDefaults] = &[
    StreamDefaults {
        name: "contacts",
        object: "contacts",
        fields: DefaultFields::Only(&[
            "email",
            "firstname",
            "lastname",
            "phone",
            "mobilephone",
            "company",
            "jobtitle",
            "website",
            "address",
            "city",
            "state",
            "zip",
            "country",
            "lifecyclestage",
            "hs_lead_status",
            "hubspot_owner_id",
            "createdate",
            "lastmodifieddate",
            "hs_object_id",
        ]),
    },
    StreamDefaults {
        name: "companies",
        object: "companies",
        fields: DefaultFields::Only(&[
            "name",
            "domain",
            "website",
            "phone",
            "industry",
            "city",
            "state",
            "country",
            "numberofemployees",
            "annualrevenue",
            "lifecyclestage",
            "hubspot_owner_id",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ]),
    },
    StreamDefaults {
        name: "deals",
        object: "deals",
        fields: DefaultFields::Only(&[
            "dealname",
            "amount",
            "deal_currency_code",
            "dealstage",
            "pipeline",
            "closedate",
            "hubspot_owner_id",
            "createdate",
            "hs_lastmodifieddate",
            "hs_object_id",
        ]),
    },
];

/// Object names go into URL paths: letters, digits, `_`, `-` only
/// (`contacts`, `p_orders`, `2-123456`).
fn check_object(object: &str) -> Result<()> {
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

/// A HubSpot account reached with a private-app access token.
pub struct HubSpot<'a> {
    pub http: &'a HttpClient,
    base: Url,
    token: String,
}

impl<'a> HubSpot<'a> {
    pub fn new(http: &'a HttpClient, base_url: &str, access_token: &str) -> Result<Self> {
        let mut base = Url::parse(base_url).map_err(|e| {
            CrmError::config(format!("options.base_url is not a valid URL: {e}"))
                .with_hint("Use an absolute URL such as https://api.hubapi.com.")
        })?;
        http.check_url(&base)?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        if access_token.trim().is_empty() {
            return Err(CrmError::config("credentials.access_token is empty"));
        }
        Ok(HubSpot {
            http,
            base,
            token: access_token.to_owned(),
        })
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
        let resp = self
            .http
            .send(&endpoint, || {
                let mut rb = self
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(&self.token);
                if !query.is_empty() {
                    rb = rb.query(query);
                }
                if let Some(b) = body {
                    rb = rb.json(b);
                }
                rb
            })
            .await?;
        check_status(&endpoint, resp)
    }

    /// Every property of `object`: `GET /crm/v3/properties/{object}`.
    pub async fn properties(&self, object: &str) -> Result<Vec<Field>> {
        check_object(object)?;
        let path = format!("crm/v3/properties/{object}");
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
        }
        let props: Props = parse_json(&format!("GET /{path}"), &resp.body)?;
        Ok(props
            .results
            .into_iter()
            .map(|p| Field {
                pg_type: pg_type_for(&p.kind),
                custom: !p.hubspot_defined.unwrap_or(false),
                name: p.name,
                label: p.label,
                crm_type: p.kind,
            })
            .collect())
    }

    /// One page of `GET /crm/v3/objects/{object}`.
    pub async fn list_page(
        &self,
        object: &str,
        properties: &str,
        after: Option<&str>,
        archived: bool,
    ) -> Result<(Vec<Record>, Option<String>, Response)> {
        let path = format!("crm/v3/objects/{object}");
        let mut q = vec![
            ("limit", LIST_PAGE_LIMIT.to_string()),
            ("archived", archived.to_string()),
            ("properties", properties.to_owned()),
        ];
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

    /// One page of `POST /crm/v3/objects/{object}/search`.
    pub async fn search_page(
        &self,
        object: &str,
        properties: &[String],
        filters: Vec<Value>,
        sort_by: &str,
    ) -> Result<(Vec<Record>, Option<u64>)> {
        let path = format!("crm/v3/objects/{object}/search");
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
            Ok(Record {
                id: w.id,
                updated_at,
                deleted_at,
                fields: w.properties,
                raw: raw.get().to_owned(),
            })
        })
        .collect()
}

fn parse_json<'de, T: Deserialize<'de>>(endpoint: &str, body: &'de [u8]) -> Result<T> {
    crate::http::parse_json("HubSpot", endpoint, body)
}

/// HubSpot error bodies: `{"status":"error","message":…,"category":…}`.
fn check_status(endpoint: &str, resp: Response) -> Result<Response> {
    let s = resp.status;
    if s.is_success() {
        return Ok(resp);
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
            .with_hint("Check credentials.access_token: it must be a valid private-app token. Update it with crm_sync.alter_source(name, credentials => '{\"access_token\": \"...\"}')."),
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
