//! Salesforce (REST API): standard and custom objects, read with SOQL through
//! `query` / `queryAll`, OAuth 2.0 sessions refreshed on expiry. See
//! README.md beside this file for the API facts this connector relies on.

mod api;
pub mod auth;
pub mod bulk;
mod describe;
mod reader;
pub mod soql;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::config::{check_url_option, int, SourceConfig};
use crate::error::{CrmError, Result};
use crate::http::HttpClient;
use crate::source::{
    BoxFuture, CheckArgs, Connector, DefaultFields, Field, IdSource, ObjectInfo, PageSource,
    Provider, ReadRequest, Record, StreamDefaults, SyncMode,
};
use api::Api;
use auth::{Flow, Login};
pub use describe::{pg_type_for, Describe};

pub const DEFAULT_LOGIN_URL: &str = "https://login.salesforce.com";
pub const DEFAULT_API_VERSION: &str = "59.0";
/// `Sforce-Query-Options: batchSize` accepts 200 to 2,000.
pub const DEFAULT_BATCH_SIZE: u64 = 2000;
/// Longest request URI we send. Salesforce allows 16,384 bytes for URI and
/// headers together (414 beyond), well under SOQL's own 100,000 characters;
/// wider field lists are split over several queries joined by Id.
/// <https://help.salesforce.com/s/articleView?id=000386264&type=1>
pub const DEFAULT_MAX_QUERY_LENGTH: u64 = 15_000;
/// Share of the org's rolling 24-hour API request limit (every
/// integration's calls together, as `Sforce-Limit-Info` reports them) past
/// which a run stops (53400) instead of calling on: the last fifth is left
/// to users' own tools and the org's other integrations, which
/// `REQUEST_LIMIT_EXCEEDED` would lock out with us. A stopped run resumes
/// later from where it was.
pub const DEFAULT_MAX_DAILY_SHARE: u64 = 80;
/// Full syncs of objects with more records than this use Bulk API 2.0.
pub const DEFAULT_BULK_THRESHOLD: u64 = 50_000;

/// Field types left out unless a stream lists them: base64 (file bodies,
/// such as Attachment.Body and ContentVersion.VersionData) is served one
/// record at a time, up to megabytes each, and Bulk API 2.0 rejects it.
pub const NOT_BY_DEFAULT: &[&str] = &["base64"];

/// Salesforce as the rest of the system sees it.
pub const PROVIDER: Provider = Provider {
    name: "salesforce",
    options: &[
        "login_url",
        "api_version",
        "batch_size",
        "max_query_length",
        "jwt_audience",
        "bulk_api",
        "bulk_threshold",
        "max_daily_share",
    ],
    credentials: &[
        "client_id",
        "client_secret",
        "refresh_token",
        "username",
        "private_key",
    ],
    // Logins go to login_url; API calls to the instance_url the login
    // returns for those credentials.
    hosts: &[("login_url", DEFAULT_LOGIN_URL)],
    streams: STREAMS,
    other_objects: DefaultFields::AllExcept(NOT_BY_DEFAULT),
    // Ids are listed by a query of Id (Bulk API 2.0 for large objects).
    reconciles: true,
    refuses: describe::filter_required,
    check,
    connect,
};

pub const STREAMS: &[StreamDefaults] = &[
    StreamDefaults {
        name: "account",
        object: "Account",
        fields: DefaultFields::AllExcept(NOT_BY_DEFAULT),
    },
    StreamDefaults {
        name: "contact",
        object: "Contact",
        fields: DefaultFields::AllExcept(NOT_BY_DEFAULT),
    },
    StreamDefaults {
        name: "lead",
        object: "Lead",
        fields: DefaultFields::AllExcept(NOT_BY_DEFAULT),
    },
    StreamDefaults {
        name: "opportunity",
        object: "Opportunity",
        fields: DefaultFields::AllExcept(NOT_BY_DEFAULT),
    },
    StreamDefaults {
        name: "user",
        object: "User",
        fields: DefaultFields::AllExcept(NOT_BY_DEFAULT),
    },
];

fn check(a: &CheckArgs<'_>) -> Result<()> {
    Flow::from_credentials(a.credentials)?;
    check_url_option(
        a.options,
        "login_url",
        DEFAULT_LOGIN_URL,
        a.allow_insecure_http,
    )?;
    check_url_option(
        a.options,
        "jwt_audience",
        DEFAULT_LOGIN_URL,
        // An audience is a name, never called.
        true,
    )?;
    match a.options.get("api_version") {
        None => {}
        Some(Value::String(v)) if is_version(v) => {}
        Some(_) => return Err(
            CrmError::config("options.api_version must look like \"59.0\"").with_hint(
                "Use a REST API version your org supports, e.g. \"59.0\"; see GET /services/data/.",
            ),
        ),
    }
    int(a.options, "batch_size", 200, 2000)?;
    int(a.options, "max_query_length", 1000, 16_000)?;
    int(a.options, "bulk_threshold", 0, 1_000_000_000)?;
    int(a.options, "max_daily_share", 1, 100)?;
    crate::config::boolean(a.options, "bulk_api")?;
    Ok(())
}

fn is_version(v: &str) -> bool {
    let mut it = v.splitn(2, '.');
    let (Some(a), Some(b)) = (it.next(), it.next()) else {
        return false;
    };
    !a.is_empty() && a.len() <= 3 && a.bytes().all(|c| c.is_ascii_digit()) && b == "0"
}

fn connect<'a>(http: &'a HttpClient, cfg: &'a SourceConfig) -> Result<Box<dyn Connector + 'a>> {
    let login_url = cfg.option_str("login_url").unwrap_or(DEFAULT_LOGIN_URL);
    let login_url = Url::parse(login_url)
        .map_err(|e| CrmError::config(format!("options.login_url is not a valid URL: {e}")))?;
    http.check_url(&login_url)?;
    let audience = match cfg.option_str("jwt_audience") {
        Some(a) => a.to_owned(),
        None => default_audience(&login_url),
    };
    let flow = Flow::from_credentials(&cfg.credentials)?;
    let version = cfg.option_str("api_version").unwrap_or(DEFAULT_API_VERSION);
    Ok(Box::new(Salesforce {
        api: Api::new(http, version, Login::new(login_url, audience, flow)).with_max_daily_share(
            cfg.option_u64("max_daily_share")
                .unwrap_or(DEFAULT_MAX_DAILY_SHARE),
        ),
        batch_size: cfg.option_u64("batch_size").unwrap_or(DEFAULT_BATCH_SIZE) as u32,
        max_query_length: cfg
            .option_u64("max_query_length")
            .unwrap_or(DEFAULT_MAX_QUERY_LENGTH) as usize,
        describes: RefCell::new(HashMap::new()),
        bulk_threshold: match cfg.options.get("bulk_api") {
            Some(Value::Bool(false)) => None,
            _ => Some(
                cfg.option_u64("bulk_threshold")
                    .unwrap_or(DEFAULT_BULK_THRESHOLD),
            ),
        },
    }))
}

/// The JWT `aud`: `https://test.salesforce.com` for sandboxes, else
/// `https://login.salesforce.com` (also for My Domain login URLs, as
/// Salesforce documents).
fn default_audience(login_url: &Url) -> String {
    let host = login_url.host_str().unwrap_or_default();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com".to_owned()
    } else {
        DEFAULT_LOGIN_URL.to_owned()
    }
}

/// A Salesforce org reached through one source's login.
pub struct Salesforce<'a> {
    api: Api<'a>,
    batch_size: u32,
    max_query_length: usize,
    describes: RefCell<HashMap<String, Rc<Describe>>>,
    /// Full syncs of objects with more records use Bulk API 2.0 (None: never).
    bulk_threshold: Option<u64>,
}

impl Salesforce<'_> {
    /// `GET sobjects/{object}/describe`, once per object and connection.
    pub async fn describe(&self, object: &str) -> Result<Rc<Describe>> {
        if let Some(d) = self.describes.borrow().get(object) {
            return Ok(d.clone());
        }
        if !soql::is_identifier(object) {
            return Err(CrmError::config(format!(
                "{object:?} is not a Salesforce object API name"
            ))
            .with_hint("Object API names look like Account or Invoice__c."));
        }
        let path = self.api.data_path(&format!("sobjects/{object}/describe"));
        #[derive(Deserialize)]
        struct Wire {
            fields: Vec<WireField>,
            #[serde(default)]
            replicateable: bool,
            #[serde(default = "yes")]
            queryable: bool,
        }
        fn yes() -> bool {
            true
        }
        #[derive(Deserialize)]
        struct WireField {
            name: String,
            #[serde(default)]
            label: String,
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            custom: bool,
            #[serde(rename = "compoundFieldName", default)]
            compound_field_name: Option<String>,
            #[serde(default = "yes")]
            filterable: bool,
            #[serde(default = "yes")]
            sortable: bool,
            #[serde(default)]
            calculated: bool,
        }
        let (w, _) = self.api.get_json::<Wire>(&path, &[], &[]).await?;
        // Address and location fields cannot be selected in Bulk queries;
        // their parts can. (Name and Fiscal are compounds too, but plain
        // selectable fields.)
        let is_geo = |name: &str| {
            w.fields
                .iter()
                .any(|f| f.name == name && matches!(f.kind.as_str(), "address" | "location"))
        };
        let mut components: HashMap<String, Vec<String>> = HashMap::new();
        for f in &w.fields {
            if let Some(c) = f.compound_field_name.as_deref().filter(|c| is_geo(c)) {
                components
                    .entry(c.to_owned())
                    .or_default()
                    .push(f.name.clone());
            }
        }
        if !w.queryable {
            return Err(CrmError::config(format!(
                "{object} cannot be synced: {}",
                describe::NOT_QUERYABLE
            ))
            .with_hint(describe::UNSYNCABLE_HINT));
        }
        // A cursor must be both filterable and sortable.
        let calculated: Vec<String> = w
            .fields
            .iter()
            .filter(|f| f.calculated)
            .map(|f| f.name.clone())
            .collect();
        let cursorable: std::collections::HashSet<String> = w
            .fields
            .iter()
            .filter(|f| f.filterable && f.sortable)
            .map(|f| f.name.clone())
            .collect();
        let fields = w
            .fields
            .into_iter()
            .map(|f| Field {
                pg_type: pg_type_for(&f.kind),
                name: f.name,
                label: f.label,
                crm_type: f.kind,
                custom: f.custom,
                column: None,
            })
            .collect();
        let mut d = Describe::with_components(fields, components, &|n| cursorable.contains(n));
        d.replicateable = w.replicateable;
        d.calculated = calculated;
        let d = Rc::new(d);
        self.describes
            .borrow_mut()
            .insert(object.to_owned(), d.clone());
        Ok(d)
    }
}

impl Salesforce<'_> {
    /// `SELECT COUNT() FROM object [WHERE filter]`: live records.
    async fn count(&self, object: &str, filter: Option<&str>) -> Result<u64> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "totalSize")]
            total_size: u64,
        }
        let q = soql::select(&["COUNT()".to_owned()], object, filter, None);
        let path = self.api.data_path("query");
        // Counting a whole object is retried on QUERY_TIMEOUT; a change set
        // that cannot be counted in time is large.
        let resp = if filter.is_none() {
            self.api
                .call(Method::GET, &path, &[("q", q.as_str())], &[], None)
                .await?
        } else {
            self.api
                .query_narrowable(&path, &[("q", q.as_str())], &[])
                .await?
        };
        let w: Wire = api::parse_json(&format!("GET {path}"), &resp.body)?;
        Ok(w.total_size)
    }

    /// The reader for `req`: Bulk API 2.0 when [`Salesforce::large`] says
    /// so (`results_page` records a results page), else REST; either goes
    /// on from `req.resume` when it is one of its own positions, and
    /// starts over otherwise.
    async fn open<'a>(
        &'a self,
        req: ReadRequest,
        d: Rc<Describe>,
        results_page: u32,
    ) -> Result<Box<dyn PageSource + 'a>> {
        if self.large(&req, &d).await? {
            let resume = req.resume.clone();
            let mut r =
                bulk::BulkReader::new(&self.api, req, d, self.batch_size, self.max_query_length)
                    .with_results_page(results_page);
            if let Some(p) = resume {
                r.resume_from(&p)?;
            }
            return Ok(Box::new(r));
        }
        let mut r =
            reader::RestReader::new(&self.api, &req, &d, self.batch_size, self.max_query_length)?;
        if let Some(p) = &req.resume {
            r.resume_from(p);
        }
        Ok(Box::new(r))
    }

    /// Whether `req` should go through Bulk API 2.0: a full read of more
    /// records than `bulk_threshold`, or an incremental one whose change
    /// set (`COUNT()` of the window) is larger; a count Salesforce cannot
    /// finish (QUERY_TIMEOUT) is large.
    async fn large(&self, req: &ReadRequest, d: &Describe) -> Result<bool> {
        let Some(threshold) = self.bulk_threshold else {
            return Ok(false);
        };
        let filter = match (reader::incremental_since(req)?, d.cursor) {
            (None, _) => None,
            (Some((since, _)), Some(c)) => Some(format!("{c} >= {}", soql::datetime(since))),
            // Read whole every run: small by nature.
            (Some(_), None) => return Ok(false),
        };
        // Bulk API 2.0 cannot read base64 fields: a change set that holds
        // some stays on REST, or their new values would never land.
        if filter.is_some() && req.fields.iter().any(describe::bulk_cannot_read) {
            return Ok(false);
        }
        match self.count(&req.object, filter.as_deref()).await {
            Ok(n) => Ok(n > threshold),
            Err(e) if e.code.as_deref() == Some("QUERY_TIMEOUT") => Ok(true),
            Err(e) => Err(e),
        }
    }
}

impl Connector for Salesforce<'_> {
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Wire {
                sobjects: Vec<WireObject>,
            }
            #[derive(Deserialize)]
            struct WireObject {
                name: String,
                #[serde(default)]
                label: String,
                #[serde(default)]
                custom: bool,
                #[serde(default)]
                queryable: bool,
            }
            let path = self.api.data_path("sobjects");
            let (w, _) = self.api.get_json::<Wire>(&path, &[], &[]).await?;
            Ok(w.sobjects
                .into_iter()
                .map(|o| ObjectInfo {
                    unsyncable: if o.queryable {
                        describe::filter_required(&o.name)
                    } else {
                        Some(describe::NOT_QUERYABLE.to_owned())
                    },
                    name: o.name,
                    label: o.label,
                    custom: o.custom,
                })
                .collect())
        })
    }

    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>> {
        Box::pin(async move { Ok(self.describe(object).await?.fields.clone()) })
    }

    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>> {
        Box::pin(async move {
            if let Some(why) = describe::filter_required(&req.object) {
                return Err(
                    CrmError::config(format!("{} cannot be synced: {why}", req.object))
                        .with_hint(describe::UNSYNCABLE_HINT),
                );
            }
            let d = self.describe(&req.object).await?;
            self.open(req, d, bulk::RESULTS_PAGE).await
        })
    }

    /// Every live Id: `SELECT Id, SystemModstamp FROM X` through `query`
    /// (2,000 ids a call), or a Bulk API 2.0 job above `bulk_threshold`
    /// records ([`IDS_RESULTS_PAGE`] ids a results page). Archived activities count as
    /// live (`queryAll`, `IsDeleted = false`). The stream's formula and
    /// roll-up fields ride along, so each reconciliation refreshes them.
    fn ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
    ) -> BoxFuture<'a, Result<Box<dyn IdSource + 'a>>> {
        Box::pin(async move {
            let d = self.describe(object).await?;
            let formulas: Vec<Field> = fields
                .iter()
                .filter(|f| d.calculated.contains(&f.name))
                .cloned()
                .collect();
            let names: Vec<String> = formulas.iter().map(|f| f.name.clone()).collect();
            let page = if names.is_empty() {
                IDS_RESULTS_PAGE
            } else {
                bulk::RESULTS_PAGE
            };
            let reader = self.open(live_records(object, formulas), d, page).await?;
            Ok(Box::new(Ids {
                reader,
                formulas: names,
                last: Vec::new(),
            }) as Box<dyn IdSource + 'a>)
        })
    }

    /// `SELECT … FROM X WHERE Id IN (…)`, as many queries as the ids need.
    fn read_ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Record>>> {
        Box::pin(async move {
            let d = self.describe(object).await?;
            let req = live_records(object, fields.to_vec());
            let open = |chunk: &[String]| {
                reader::RestReader::by_ids(
                    &self.api,
                    &req,
                    &d,
                    self.batch_size,
                    self.max_query_length,
                    chunk,
                )
            };
            let per = open(&[])?.ids_per_query().max(1);
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(per) {
                let mut r = open(chunk)?;
                while let Some(p) = r.next_page().await? {
                    out.extend(p.records);
                }
            }
            Ok(out)
        })
    }
}

/// A read of every live record of `object` with `fields`, deletes aside
/// (reconciliation's listings and re-reads).
fn live_records(object: &str, fields: Vec<Field>) -> ReadRequest {
    ReadRequest {
        object: object.to_owned(),
        fields,
        mode: SyncMode::Full,
        lookback: std::time::Duration::ZERO,
        track_deletes: false,
        resume: None,
        deletes_since: None,
    }
}

/// Ids per Bulk API results page of a reconciliation's listing (about 50
/// bytes a row: 1.25 MB, and some 50 MB of parsed records); with formula
/// values along, the usual results page.
const IDS_RESULTS_PAGE: u32 = 25_000;

/// Reconciliation's listing: a reader of Id, the cursor and the stream's
/// formula fields, its records' ids page by page, and the formulas'
/// values for the extension to refresh.
struct Ids<'a> {
    reader: Box<dyn PageSource + 'a>,
    /// The formula fields read along.
    formulas: Vec<String>,
    last: Vec<Record>,
}

impl IdSource for Ids<'_> {
    fn next_ids(&mut self) -> BoxFuture<'_, Result<Option<Vec<String>>>> {
        Box::pin(async move {
            let Some(page) = self.reader.next_page().await? else {
                return Ok(None);
            };
            let ids = page.records.iter().map(|r| r.id.clone()).collect();
            if !self.formulas.is_empty() {
                self.last = page.records;
            }
            Ok(Some(ids))
        })
    }

    fn refreshed(&mut self) -> (Vec<String>, Vec<Record>) {
        (self.formulas.clone(), std::mem::take(&mut self.last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_checked() {
        let opts = |o: Value| o.as_object().unwrap().clone();
        let creds = json!({"client_id": "c", "refresh_token": "r"});
        let creds = creds.as_object().unwrap();
        let chk = |o: Value| {
            check(&CheckArgs {
                options: &opts(o),
                credentials: creds,
                allow_insecure_http: false,
            })
        };
        assert!(chk(json!({})).is_ok());
        assert!(chk(json!({"api_version": "59.0"})).is_ok());
        assert!(chk(json!({"api_version": "v59"})).is_err());
        assert!(chk(json!({"batch_size": 100})).is_err());
        assert!(chk(json!({"login_url": "http://example.com"})).is_err());
        assert!(chk(json!({"login_url": "http://127.0.0.1:1"})).is_ok());
        assert_eq!(
            default_audience(&Url::parse("https://acme.sandbox.my.salesforce.com").unwrap()),
            "https://test.salesforce.com"
        );
        assert_eq!(
            default_audience(&Url::parse("https://acme.my.salesforce.com").unwrap()),
            DEFAULT_LOGIN_URL
        );
    }
}
