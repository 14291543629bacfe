//! Full syncs of large objects through Bulk API 2.0 query jobs: create a
//! job, poll until it completes, then read its CSV results page by page with
//! the `Sforce-Locator` cursor. A job runs in chunks at different times, so
//! the watermark is the newest modification time in its results capped at
//! the job's creation time: anything changed later is found by the next run.
//! Deletes are read afterwards through `queryAll`.
//!
//! Bulk queries cannot select compound fields (addresses, locations); their
//! components are selected instead and the compound values rebuilt, so a
//! record lands the same whichever API read it. A job that fails, or an
//! object Bulk API does not serve, falls back to the REST API with a warning.
//!
//! A run resumes ([`PageSource::checkpoint`]) from the job and the locator
//! of the next results page (results are kept for days after a job
//! completes), or from its REST reader's position; a job gone by then is
//! started again, with a warning.
//! <https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/queries.htm>

use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

use super::api::{parse_json, Api};
use super::describe::{self, Describe};
use super::reader::{capped, incremental_since, RestReader};
use super::soql;
use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, server_date_ms};
use crate::paging::Cursors;
use crate::source::{BoxFuture, Page, PageSource, ReadRequest, Record};
use crate::types::{fmt_ts, parse_datetime};

/// Records per results page: a page is parsed whole, so this bounds memory.
pub const RESULTS_PAGE: u32 = 5_000;
/// SOQL's own length limit; Bulk queries travel in a body, not the URI.
const MAX_SOQL: usize = 100_000;
/// Job status polls back off from 250 ms to 30 s: a job that runs ten
/// minutes costs about 27 calls (each counted against the org's daily
/// limit) rather than the 120 a fixed 5 s would, and a job of a few
/// seconds (an incremental run's) is seen done within a fraction of its
/// time (simple-salesforce's `wait_for_job` polls every 0.5 s or so, up
/// to 2 s). Starting at 1 s, a job done after 1.1 s was read after 3 s.
const FIRST_POLL_WAIT: Duration = Duration::from_millis(250);
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// Give up waiting for a job after this long.
const MAX_JOB_WAIT: Duration = Duration::from_secs(6 * 3600);

/// The wait before the poll after one that waited `wait`.
fn next_poll_wait(wait: Duration) -> Duration {
    (wait * 2).min(MAX_POLL_WAIT)
}

enum Phase {
    Create,
    Poll {
        job: String,
        wait: Duration,
    },
    Results {
        job: String,
        locator: Option<String>,
    },
    /// The deletes pass, or the REST fallback.
    Rest,
    Done,
}

pub struct BulkReader<'a> {
    api: &'a Api<'a>,
    req: ReadRequest,
    d: Rc<Describe>,
    batch_size: u32,
    max_query_length: usize,
    phase: Phase,
    /// Plain fields selected (compound fields replaced by their parts).
    select: Vec<String>,
    /// Compound fields to rebuild: (name, [(json key, component field)]).
    compounds: Vec<(String, Vec<(String, String)>)>,
    watermark: Option<DateTime<Utc>>,
    /// When the job was created (server time): the watermark never passes
    /// it, since a job's chunks run at different times.
    cap: Option<DateTime<Utc>>,
    waited: Duration,
    rest: Option<RestReader<'a>>,
    /// The REST reader reads only the deletes pass (after the results).
    deletes_only: bool,
    /// The results being read are those of an interrupted run's job.
    resumed_job: bool,
    warnings: Vec<String>,
    /// Result locators followed, to stop a server that sends one again.
    locators: Cursors,
    /// Records per results page (`maxRecords`).
    results_page: u32,
    /// base64 fields asked for: Bulk API 2.0 rejects them, so they are
    /// left out and their columns keep their values.
    base64: Vec<String>,
}

/// A resumable position (see the module docs); opaque to the engine.
#[derive(Serialize, Deserialize)]
struct Position {
    /// Always "bulk": a REST reader's position is not one of these.
    reader: String,
    object: String,
    at: At,
    watermark_ms: Option<i64>,
    cap_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum At {
    /// The job's results, from this locator (`None`: the first page).
    Results {
        job: String,
        locator: Option<String>,
    },
    /// The REST reader's own position.
    Rest {
        deletes_only: bool,
        position: String,
    },
    Done,
}

impl<'a> BulkReader<'a> {
    pub fn new(
        api: &'a Api<'a>,
        req: ReadRequest,
        d: Rc<Describe>,
        batch_size: u32,
        max_query_length: usize,
    ) -> Self {
        let mut select = vec!["Id".to_owned()];
        select.extend(d.cursor.map(str::to_owned));
        let mut compounds = vec![];
        let mut base64 = vec![];
        for f in &req.fields {
            if describe::bulk_cannot_read(f) {
                base64.push(f.name.clone());
                continue;
            }
            if let Some(parts) = d.components.get(&f.name) {
                let keyed = parts
                    .iter()
                    .map(|p| (compound_key(&f.name, p), p.clone()))
                    .collect();
                compounds.push((f.name.clone(), keyed));
                for p in parts {
                    if !select.contains(p) {
                        select.push(p.clone());
                    }
                }
            } else if !select.contains(&f.name) {
                select.push(f.name.clone());
            }
        }
        BulkReader {
            api,
            req,
            d,
            batch_size,
            max_query_length,
            phase: Phase::Create,
            select,
            compounds,
            watermark: None,
            cap: None,
            waited: Duration::ZERO,
            rest: None,
            deletes_only: false,
            resumed_job: false,
            warnings: vec![],
            locators: Cursors::default(),
            results_page: RESULTS_PAGE,
            base64,
        }
    }

    /// Ask for `n` records per results page.
    pub fn with_results_page(mut self, n: u32) -> Self {
        self.results_page = n;
        self
    }

    /// Go on from `position` (from [`PageSource::checkpoint`] of a full run
    /// of the same object). A position that does not fit is ignored: the
    /// run starts over, which is only slower.
    pub fn resume_from(&mut self, position: &str) -> Result<()> {
        let Ok(p) = serde_json::from_str::<Position>(position) else {
            return Ok(());
        };
        if p.reader != "bulk" || p.object != self.req.object {
            return Ok(());
        }
        match p.at {
            At::Results { job, locator } => {
                self.phase = Phase::Results { job, locator };
                self.resumed_job = true;
            }
            At::Rest {
                deletes_only: true, ..
            } if !(self.req.track_deletes && self.d.has_is_deleted) => {
                // Deletes are no longer tracked: the Bulk part was all.
                self.phase = Phase::Done;
            }
            At::Rest {
                deletes_only,
                position,
            } => {
                self.continue_with_rest(deletes_only)?;
                let rest = self.rest.as_mut().expect("REST reader set");
                if !rest.resume_from(&position) {
                    // Its REST part starts over; the Bulk part stays read.
                    if !deletes_only {
                        return Ok(());
                    }
                }
            }
            At::Done => self.phase = Phase::Done,
        }
        let at = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
        self.watermark = at(p.watermark_ms);
        self.cap = at(p.cap_ms);
        Ok(())
    }

    fn position(&self) -> Option<Position> {
        let at = match &self.phase {
            Phase::Results { job, locator } => At::Results {
                job: job.clone(),
                locator: locator.clone(),
            },
            Phase::Rest => At::Rest {
                deletes_only: self.deletes_only,
                position: self.rest.as_ref()?.checkpoint()?,
            },
            Phase::Done => match &self.rest {
                Some(r) => At::Rest {
                    deletes_only: self.deletes_only,
                    position: r.checkpoint()?,
                },
                None => At::Done,
            },
            Phase::Create | Phase::Poll { .. } => return None,
        };
        let ms = |d: Option<DateTime<Utc>>| d.map(|d| d.timestamp_millis());
        Some(Position {
            reader: "bulk".into(),
            object: self.req.object.clone(),
            at,
            watermark_ms: ms(self.watermark),
            cap_ms: ms(self.cap),
        })
    }

    fn jobs_path(&self, rest: &str) -> String {
        self.api.data_path(&format!("jobs/query{rest}"))
    }

    /// Read through REST instead, from the start.
    fn fall_back(&mut self, why: String) -> Result<()> {
        self.warnings.push(format!(
            "Bulk API could not read {} ({why}); it was read through the REST API instead",
            self.req.object
        ));
        self.continue_with_rest(false)
    }

    /// Hand the rest of the run to a REST reader: the whole read, or only
    /// the deletes pass after the Bulk results.
    fn continue_with_rest(&mut self, deletes_only: bool) -> Result<()> {
        let (api, req, d) = (self.api, &self.req, &*self.d);
        let (b, m) = (self.batch_size, self.max_query_length);
        self.deletes_only = deletes_only;
        self.rest = Some(if deletes_only {
            RestReader::deletes_only(api, req, d, b, m)?
        } else {
            RestReader::new(api, req, d, b, m)?
        });
        self.phase = Phase::Rest;
        Ok(())
    }

    async fn step(&mut self) -> Result<Option<Page>> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Done => return Ok(None),
                Phase::Rest => {
                    let rest = self.rest.as_mut().expect("REST reader set");
                    let page = rest.next_page().await?;
                    if page.is_some() {
                        self.phase = Phase::Rest;
                    }
                    return Ok(page);
                }
                Phase::Create => {
                    // Archived activities only come with queryAll.
                    let mut conds = vec![];
                    let operation = if self.d.has_is_archived {
                        conds.push("IsDeleted = false".to_owned());
                        "queryAll"
                    } else {
                        "query"
                    };
                    // A large incremental change set: what changed since
                    // the watermark (less the lookback).
                    if let (Some((since, _)), Some(c)) =
                        (incremental_since(&self.req)?, self.d.cursor)
                    {
                        conds.push(format!("{c} >= {}", soql::datetime(since)));
                    }
                    let filter = (!conds.is_empty()).then(|| conds.join(" AND "));
                    let q = soql::select(&self.select, &self.req.object, filter.as_deref(), None);
                    if q.len() > MAX_SOQL {
                        self.fall_back("the field list is longer than a SOQL query may be".into())?;
                        continue;
                    }
                    let body = json!({
                        "operation": operation,
                        "query": q,
                        "contentType": "CSV",
                        "columnDelimiter": "COMMA",
                        "lineEnding": "LF",
                    });
                    let path = self.jobs_path("");
                    // Sent once: a retried POST could start a second job.
                    match self
                        .api
                        .call_with(Method::POST, &path, &[], &[], Some(&body), false)
                        .await
                    {
                        Ok(resp) => {
                            let info: JobInfo = parse_json(&format!("POST {path}"), &resp.body)?;
                            self.cap = info
                                .created_date
                                .as_deref()
                                .and_then(parse_datetime)
                                .or_else(|| {
                                    server_date_ms(&resp.headers)
                                        .and_then(DateTime::from_timestamp_millis)
                                })
                                .or_else(|| Some(Utc::now()));
                            self.phase = Phase::Poll {
                                job: info.id,
                                wait: FIRST_POLL_WAIT,
                            };
                        }
                        Err(e) if matches!(e.kind, ErrorKind::ApiRejected) => {
                            self.fall_back(e.detail.clone().unwrap_or(e.message))?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Phase::Poll { job, wait } => {
                    let path = self.jobs_path(&format!("/{job}"));
                    let info = match self.api.get_json::<JobInfo>(&path, &[], &[]).await {
                        Ok((info, _)) => info,
                        Err(e) => {
                            // The run stops (the org's daily share, a
                            // broken link): abort the job rather than leave
                            // it running for nobody. Best effort.
                            let aborted = json!({"state": "Aborted"});
                            let _ = self
                                .api
                                .call_with(Method::PATCH, &path, &[], &[], Some(&aborted), false)
                                .await;
                            let _ = self
                                .api
                                .call_with(Method::DELETE, &path, &[], &[], None, false)
                                .await;
                            return Err(e);
                        }
                    };
                    match info.state.as_str() {
                        "JobComplete" => {
                            self.phase = Phase::Results { job, locator: None };
                        }
                        "Failed" | "Aborted" => {
                            let why = info
                                .error_message
                                .unwrap_or_else(|| format!("job {}", info.state));
                            let _ = self.api.call(Method::DELETE, &path, &[], &[], None).await;
                            self.fall_back(why)?;
                        }
                        _ => {
                            if self.waited > MAX_JOB_WAIT {
                                return Err(CrmError::new(
                                    ErrorKind::ServerError,
                                    format!(
                                        "Bulk API job {job} did not finish within {} hours",
                                        MAX_JOB_WAIT.as_secs() / 3600
                                    ),
                                )
                                .with_endpoint(format!("GET {path}")));
                            }
                            // Waits on the runtime's timer: cancels still
                            // reach the backend within INTERRUPT_POLL.
                            tokio::time::sleep(wait).await;
                            self.waited += wait;
                            self.phase = Phase::Poll {
                                job,
                                wait: next_poll_wait(wait),
                            };
                        }
                    }
                }
                Phase::Results { job, locator } => {
                    let path = self.jobs_path(&format!("/{job}/results"));
                    let max = self.results_page.to_string();
                    let mut query: Vec<(&str, &str)> = vec![("maxRecords", &max)];
                    if let Some(l) = &locator {
                        query.push(("locator", l));
                    }
                    let res = self
                        .api
                        .call(
                            Method::GET,
                            &path,
                            &query,
                            &[("Accept", "text/csv".to_owned())],
                            None,
                        )
                        .await;
                    let resp = match res {
                        // Gone (404 once deleted or expired), its locator no
                        // longer served, or not ours to read: a position
                        // that cannot be read on must not fail every later
                        // run. Only a passing outage fails this one.
                        Err(e)
                            if self.resumed_job
                                && !matches!(
                                    e.kind,
                                    ErrorKind::Transport
                                        | ErrorKind::ServerError
                                        | ErrorKind::RateLimited
                                ) =>
                        {
                            self.warnings.push(format!(
                                "Bulk API job {job} of the interrupted run could not be read on ({}); {} was read again from the start",
                                e.code.as_deref().unwrap_or("rejected"),
                                self.req.object
                            ));
                            self.resumed_job = false;
                            self.watermark = None;
                            self.cap = None;
                            self.phase = Phase::Create;
                            continue;
                        }
                        r => r?,
                    };
                    let next = resp
                        .headers
                        .get("Sforce-Locator")
                        .and_then(|v| v.to_str().ok())
                        .filter(|l| !l.is_empty() && *l != "null")
                        .map(str::to_owned);
                    if let Some(l) = &next {
                        self.locators
                            .follow("Salesforce's Sforce-Locator", l)
                            .map_err(|e| e.with_endpoint(format!("GET {path}")))?;
                    }
                    let records = self.parse_csv(&format!("GET {path}"), &resp.body)?;
                    drop(resp);
                    match next {
                        Some(l) => {
                            self.phase = Phase::Results {
                                job,
                                locator: Some(l),
                            }
                        }
                        None => {
                            // Results are read; the job is no longer needed.
                            let _ = self
                                .api
                                .call(
                                    Method::DELETE,
                                    &self.jobs_path(&format!("/{job}")),
                                    &[],
                                    &[],
                                    None,
                                )
                                .await;
                            if self.req.track_deletes && self.d.has_is_deleted {
                                self.continue_with_rest(true)?;
                            }
                        }
                    }
                    return Ok(Some(Page {
                        records,
                        total: None,
                    }));
                }
            }
        }
    }

    fn parse_csv(&mut self, endpoint: &str, body: &[u8]) -> Result<Vec<Record>> {
        let bad = |e: String| {
            CrmError::bad_response(format!("Salesforce sent unreadable Bulk API results ({e})"))
                .with_endpoint(endpoint)
                .with_detail(format!("body begins: {}", body_excerpt(body)))
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(body);
        let headers: Vec<String> = rdr
            .headers()
            .map_err(|e| bad(e.to_string()))?
            .iter()
            .map(str::to_owned)
            .collect();
        let types: Vec<&str> = headers
            .iter()
            .map(|h| {
                self.d
                    .fields
                    .iter()
                    .find(|f| &f.name == h)
                    .map_or("string", |f| f.crm_type.as_str())
            })
            .collect();
        let url_base = self
            .api
            .data_path(&format!("sobjects/{}/", self.req.object));
        let at = |name: &str| headers.iter().position(|h| h == name);
        // Each compound's components by their column.
        let compounds: Vec<Compound<'_>> = self
            .compounds
            .iter()
            .map(|(name, parts)| {
                let parts = parts.iter().map(|(k, p)| (k.as_str(), at(p))).collect();
                (name.as_str(), parts)
            })
            .collect();
        let (id_at, cursor_at) = (at("Id"), self.d.cursor.and_then(at));
        let mut out = vec![];
        for row in rdr.records() {
            let row = row.map_err(|e| bad(e.to_string()))?;
            if row.len() != headers.len() {
                return Err(bad(format!(
                    "a row has {} values for {} columns",
                    row.len(),
                    headers.len()
                )));
            }
            let Some(id) = id_at.and_then(|i| row.get(i)).filter(|v| !v.is_empty()) else {
                return Err(bad("a row has no Id".into()));
            };
            let updated_at =
                cursor_at.and_then(|i| typed(types[i], &row[i]).as_str().and_then(parse_datetime));
            if let Some(u) = updated_at {
                self.watermark = Some(self.watermark.map_or(u, |w| w.max(u)));
            }
            let attributes = json!({"type": self.req.object, "url": format!("{url_base}{id}")});
            let (raw, unparsed) = row_json(&headers, &types, &compounds, &row, &attributes);
            // The values are parsed from `raw` on the writer's helper
            // thread: this thread only writes the JSON text.
            out.push(Record {
                id: id.to_owned(),
                updated_at,
                deleted_at: None,
                raw,
                merged_ids: Vec::new(),
                deletion_only: false,
                unparsed,
                fields: Map::new(),
            });
        }
        Ok(out)
    }
}

/// A compound field of a results page: its name, and its components' JSON
/// keys with their column (None: not in the results).
type Compound<'a> = (&'a str, Vec<(&'a str, Option<usize>)>);

/// A CSV row as the JSON object REST would have sent: each column's value
/// [`typed`], then each compound (an object of its components, null when
/// every one is), then `attributes`. Written straight to text (a row's map
/// was most of a Bulk sync's main-thread time); returns the text and how
/// many keys it has.
fn row_json(
    headers: &[String],
    types: &[&str],
    compounds: &[Compound<'_>],
    row: &csv::StringRecord,
    attributes: &Value,
) -> (String, usize) {
    // Writing JSON into a Vec cannot fail.
    fn put<T: serde::Serialize + ?Sized>(w: &mut Vec<u8>, v: &T) {
        let _ = serde_json::to_writer(w, v);
    }
    let mut w: Vec<u8> = Vec::with_capacity(row.as_slice().len() * 2 + 256);
    w.push(b'{');
    let mut keys = 0;
    let mut key = |w: &mut Vec<u8>, k: &str| {
        if keys > 0 {
            w.push(b',');
        }
        keys += 1;
        put(w, k);
        w.push(b':');
    };
    for ((h, t), v) in headers.iter().zip(types).zip(row.iter()) {
        key(&mut w, h);
        match *t {
            _ if v.is_empty() => w.extend_from_slice(b"null"),
            "boolean" | "int" | "long" | "double" | "currency" | "percent" | "datetime" => {
                put(&mut w, &typed(t, v))
            }
            _ => put(&mut w, v),
        }
    }
    for (name, parts) in compounds {
        key(&mut w, name);
        let vals: Vec<(&str, Value)> = parts
            .iter()
            .map(|(k, i)| (*k, i.map_or(Value::Null, |i| typed(types[i], &row[i]))))
            .collect();
        if vals.iter().all(|(_, v)| v.is_null()) {
            w.extend_from_slice(b"null");
        } else {
            let obj: Map<String, Value> =
                vals.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            put(&mut w, &Value::Object(obj));
        }
    }
    key(&mut w, "attributes");
    put(&mut w, attributes);
    w.push(b'}');
    // Keys, strings and values were written by serde_json from UTF-8 text.
    let text = String::from_utf8(w).unwrap_or_default();
    (text, keys)
}

/// A CSV value as the REST API would have sent it in JSON: empty is null,
/// booleans and numbers typed, datetimes in REST's `+0000` form.
fn typed(crm_type: &str, v: &str) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    match crm_type {
        "boolean" => match v {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(v.to_owned()),
        },
        "int" | "long" | "double" | "currency" | "percent" => v
            .parse::<Number>()
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(v.to_owned())),
        "datetime" => {
            // Bulk's `2024-03-01T12:00:00.000Z` is REST's `...000+0000`.
            if v.len() == 24 && v.ends_with('Z') && v.as_bytes()[19] == b'.' {
                return Value::String(format!("{}+0000", &v[..23]));
            }
            match parse_datetime(v) {
                Some(d) => Value::String(d.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()),
                None => Value::String(v.to_owned()),
            }
        }
        _ => Value::String(v.to_owned()),
    }
}

/// The JSON key of a compound field's component: `BillingPostalCode` of
/// `BillingAddress` is `postalCode`; `Loc__Latitude__s` of `Loc__c` is
/// `latitude`.
pub fn compound_key(compound: &str, component: &str) -> String {
    let prefix = compound
        .strip_suffix("Address")
        .or_else(|| compound.strip_suffix("__c").map(|_| ""))
        .unwrap_or("");
    let mut rest = component.strip_prefix(prefix).unwrap_or(component);
    if let Some(base) = compound.strip_suffix("__c") {
        rest = rest
            .strip_prefix(base)
            .and_then(|r| r.strip_prefix("__"))
            .unwrap_or(rest);
    }
    let rest = rest.strip_suffix("__s").unwrap_or(rest);
    let mut c = rest.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => component.to_owned(),
    }
}

#[derive(Deserialize)]
struct JobInfo {
    id: String,
    #[serde(rename = "createdDate", default)]
    created_date: Option<String>,
    #[serde(default)]
    state: String,
    #[serde(rename = "errorMessage", default)]
    error_message: Option<String>,
}

impl PageSource for BulkReader<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(self.step())
    }

    fn watermark(&self) -> Option<String> {
        let bulk = capped(self.watermark, self.cap);
        let rest = self.rest.as_ref().and_then(|r| r.watermark_at());
        match (bulk, rest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .map(fmt_ts)
    }

    fn dropped_fields(&self) -> Vec<String> {
        // base64 columns are left alone only while Bulk API reads: a REST
        // fallback reads them.
        let mut d = if self.rest.is_none() || self.deletes_only {
            self.base64.clone()
        } else {
            vec![]
        };
        d.extend(self.rest.iter().flat_map(|r| r.dropped_fields()));
        d
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = self.warnings.clone();
        for f in &self.base64 {
            w.push(format!(
                "{}.{f} is a base64 field, which Bulk API 2.0 cannot read: this Bulk run left its column as it was; the next change to a record lands its value (incremental runs read base64 fields through the REST API)",
                self.req.object
            ));
        }
        if let Some(r) = &self.rest {
            w.extend(r.warnings());
        }
        w
    }

    fn checkpoint(&self) -> Option<String> {
        serde_json::to_string(&self.position()?).ok()
    }

    fn reconcile_needed(&self) -> Option<String> {
        self.rest.as_ref().and_then(|r| r.reconcile_needed())
    }

    fn deletes_covered(&self) -> Option<DateTime<Utc>> {
        self.rest.as_ref().and_then(|r| r.deletes_covered())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When each poll of a job is made, from its creation, until `until`.
    fn polls_until(until: Duration) -> Vec<Duration> {
        let (mut at, mut wait, mut out) = (Duration::ZERO, FIRST_POLL_WAIT, vec![Duration::ZERO]);
        while at + wait <= until {
            at += wait;
            out.push(at);
            wait = next_poll_wait(wait);
        }
        out
    }

    #[test]
    fn a_short_job_is_seen_done_soon_and_a_long_one_costs_few_polls() {
        // A job done after 1.1 s (an incremental run's few thousand
        // records) is seen done within a second of it.
        let polls = polls_until(Duration::from_secs(60));
        let seen = polls.iter().find(|t| **t >= Duration::from_millis(1100));
        assert!(
            seen.is_some_and(|t| *t <= Duration::from_millis(2100)),
            "{polls:?}"
        );
        // Ten minutes of polling stays under 30 calls of the daily limit.
        let n = polls_until(Duration::from_secs(600)).len();
        assert!(n <= 30, "{n} polls in ten minutes");
        // The waits stop growing at MAX_POLL_WAIT.
        let later = polls_until(Duration::from_secs(3600));
        let gaps: Vec<Duration> = later.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g <= MAX_POLL_WAIT), "{gaps:?}");
        assert_eq!(gaps.last(), Some(&MAX_POLL_WAIT));
    }

    #[test]
    fn compound_keys() {
        assert_eq!(
            compound_key("BillingAddress", "BillingPostalCode"),
            "postalCode"
        );
        assert_eq!(
            compound_key("BillingAddress", "BillingGeocodeAccuracy"),
            "geocodeAccuracy"
        );
        assert_eq!(compound_key("MailingAddress", "MailingStreet"), "street");
        assert_eq!(compound_key("Address", "Street"), "street");
        assert_eq!(
            compound_key("Location__c", "Location__Latitude__s"),
            "latitude"
        );
        assert_eq!(
            compound_key("Location__c", "Location__Longitude__s"),
            "longitude"
        );
    }

    #[test]
    fn a_csv_row_is_the_json_rest_would_send() {
        let headers: Vec<String> = [
            "Id",
            "Name",
            "IsActive__c",
            "Amount",
            "SystemModstamp",
            "BillingCity",
            "BillingCountry",
            "ShippingCity",
            "Note",
        ]
        .map(String::from)
        .to_vec();
        let types = [
            "id", "string", "boolean", "currency", "datetime", "string", "string", "string",
            "textarea",
        ];
        let compounds = vec![
            (
                "BillingAddress",
                vec![("city", Some(5)), ("country", Some(6)), ("geo", None)],
            ),
            ("ShippingAddress", vec![("city", Some(7))]),
        ];
        let attributes =
            json!({"type": "Account", "url": "/services/data/v62.0/sobjects/Account/001A"});
        for cells in [
            [
                "001A",
                "Acme \"Q\" \u{e9}",
                "true",
                "1234.50",
                "2024-03-01T12:00:00.000Z",
                "Paris",
                "",
                "",
                "line 1\nline 2, \\ \u{1}",
            ],
            ["001B", "", "false", "x1", "", "", "", "Oslo", ""],
            [
                "001C",
                "B",
                "yes",
                "-0",
                "2024-03-01T12:00:00Z",
                "",
                "FR",
                "",
                "null",
            ],
        ] {
            let row = csv::StringRecord::from(cells.to_vec());
            let (raw, n) = row_json(&headers, &types, &compounds, &row, &attributes);
            // What a map of the row gave before.
            let mut m = Map::new();
            for ((h, t), v) in headers.iter().zip(&types).zip(row.iter()) {
                m.insert(h.clone(), typed(t, v));
            }
            for (name, parts) in &compounds {
                let obj: Map<String, Value> = parts
                    .iter()
                    .map(|(k, i)| {
                        (
                            k.to_string(),
                            i.map_or(Value::Null, |i| m[&headers[i]].clone()),
                        )
                    })
                    .collect();
                let any = obj.values().any(|v| !v.is_null());
                m.insert(
                    name.to_string(),
                    if any { Value::Object(obj) } else { Value::Null },
                );
            }
            m.insert("attributes".into(), attributes.clone());
            let parsed: Map<String, Value> = serde_json::from_str(&raw).unwrap();
            assert_eq!(parsed, m, "{raw}");
            assert_eq!(n, m.len());
        }
    }

    #[test]
    fn csv_values_are_typed_as_rest_sends_them() {
        assert_eq!(typed("boolean", "true"), Value::Bool(true));
        assert_eq!(typed("int", "42"), json!(42));
        assert_eq!(typed("currency", "1234.5"), json!(1234.5));
        assert_eq!(typed("string", ""), Value::Null);
        assert_eq!(typed("string", "a,b"), json!("a,b"));
        assert_eq!(
            typed("datetime", "2024-03-01T12:00:00.000Z"),
            json!("2024-03-01T12:00:00.000+0000")
        );
        assert_eq!(typed("date", "2024-03-01"), json!("2024-03-01"));
        assert_eq!(
            typed("datetime", "2024-03-01T12:00:00Z"),
            json!("2024-03-01T12:00:00.000+0000")
        );
    }
}
