//! Paging through one Salesforce object for one run, over the REST API.
//!
//! One SOQL query per pass, paged through `nextRecordsUrl`:
//! `SELECT … FROM X [WHERE SystemModstamp >= :since] ORDER BY SystemModstamp, Id`
//! through `query`, then (deletes) the same with `IsDeleted = true` through
//! `queryAll`. Salesforce does not document whether later pages of a query
//! locator show values as of the query or as of the page, so the watermark
//! is the newest modification time the live pass saw, capped at the
//! server's time when the live query began: anything changed after that is
//! stamped later and found by the next run, whatever the pages showed.
//! Records seen with newer stamps are read again next run, harmlessly (an
//! unchanged row is not rewritten). The deletes pass starts later still; it
//! never moves the watermark. Ties need no care: the
//! next run starts at the watermark inclusive (minus the lookback) and
//! rewrites nothing that did not change.
//!
//! Objects without `SystemModstamp` use `LastModifiedDate`; objects with
//! neither are read whole every run.
//!
//! Field lists too long for one query are split ([`soql::plan`]): the first
//! group's query drives paging and each page's other fields are fetched by
//! `Id IN (...)`. A record that changed between those queries keeps the
//! older modification time, so the next run reads it again whole.
//!
//! A field deleted in the org (`INVALID_FIELD`) is dropped from the query
//! with a warning and the query is sent again.
//!
//! A run can resume ([`PageSource::checkpoint`]): its position is the pass
//! and the last (cursor time, Id) it returned, and the resumed query starts
//! after it (`SystemModstamp >= :t AND (SystemModstamp > :t OR Id > :id)`,
//! the query's own order) rather than from a query locator, which expires
//! after 15 minutes unused. A page may show a record's current values in
//! the query's original order, so only a record stamped before its query
//! began can mark the position: one edited since could sort far later than
//! where the query returned it. Records changed since the interrupted query
//! began are stamped later than the position, so the resumed query finds
//! them; the watermark stays capped at the interrupted query's start.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::api::{parse_json, Api};
use super::describe::Describe;
use super::soql;
use crate::error::{CrmError, Result};
use crate::http::server_date_ms;
use crate::paging::Cursors;
use crate::source::{BoxFuture, Page, PageSource, ReadRequest, Record, SyncMode};
use crate::types::{fmt_ts, parse_datetime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Pass {
    Live,
    /// `queryAll` of `IsDeleted = true`: the recycle bin's records, whole.
    Deleted,
    /// `sobjects/{X}/deleted`: the delete log's ids and times.
    #[serde(rename = "getdeleted")]
    GetDeleted,
}

impl Pass {
    fn resource(self) -> &'static str {
        match self {
            Pass::Live => "query",
            Pass::Deleted | Pass::GetDeleted => "queryAll",
        }
    }
}

/// getDeleted serves deletes back to 15 days before the call ("or earlier
/// if an administrator has purged the Recycle Bin").
/// <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getdeleted.htm>
const DELETE_LOG_DAYS: i64 = 15;

#[derive(Debug, Clone)]
enum Phase {
    Start(Pass),
    More(Pass, String),
    Done,
}

pub struct RestReader<'a> {
    api: &'a Api<'a>,
    object: String,
    cursor: Option<&'static str>,
    /// Fields every query selects: Id and the cursor.
    key: Vec<String>,
    /// The other fields, as chosen for the stream.
    fields: Vec<String>,
    plan: soql::Plan,
    max_query_length: usize,
    batch_size: u32,
    since: Option<DateTime<Utc>>,
    /// The stored watermark this run started from.
    start: Option<DateTime<Utc>>,
    watermark: Option<DateTime<Utc>>,
    track_deletes: bool,
    /// How this run finds deletes: [`Pass::GetDeleted`] on incremental runs
    /// of replicateable objects whose last run the delete log still
    /// covers (one call, hard deletes included), else [`Pass::Deleted`].
    deletes: Pass,
    /// Where getDeleted starts: the last successful run's start, less the
    /// lookback.
    deletes_since: Option<DateTime<Utc>>,
    /// The object has `IsArchived` (Task, Event): live records are read
    /// through `queryAll`, which `query` would hide when archived.
    archived: bool,
    /// Read only these records (reconciliation's re-reads).
    only_ids: Option<Vec<String>>,
    /// The live pass of an incremental run reads the cursor range from
    /// `win_lo` up to when the run began, `win_len` at a time once a query
    /// timed out (None: all of it); see [`RestReader::narrow`].
    win_lo: Option<DateTime<Utc>>,
    win_len: Option<chrono::Duration>,
    /// Windows finished in a row since the last timeout: two double it.
    win_ok: u8,
    /// Why the deletes of this run are incomplete (see
    /// [`PageSource::reconcile_needed`]).
    reconcile: Option<String>,
    /// When this run began (local clock), and up to when it found every
    /// delete (see [`PageSource::deletes_covered`]).
    created: DateTime<Utc>,
    covered: Option<DateTime<Utc>>,
    phase: Phase,
    warnings: Vec<String>,
    /// Fields dropped during the run (deleted in the org).
    dropped: Vec<String>,
    /// The server's time when the live query started: the watermark never
    /// passes it (see the module docs).
    cap: Option<DateTime<Utc>>,
    /// The server's time when the current pass's query began: records
    /// stamped later may show values newer than the query's order.
    began: Option<DateTime<Utc>>,
    /// The `nextRecordsUrl`s followed, to stop a server that sends one again.
    urls: Cursors,
    /// The last record the current pass returned (or, resuming, the one an
    /// interrupted run had): its cursor time and Id. `None` before the
    /// pass's first page, and when a record had no cursor time (then the
    /// run cannot resume from a position).
    after: Option<After>,
    /// Records returned without a cursor time since the pass began.
    unplaced: bool,
}

/// Where a pass stands: after this record, in the query's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct After {
    /// Cursor time in epoch milliseconds (absent for objects without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<i64>,
    id: String,
}

/// A resumable position (see the module docs); opaque to the engine.
#[derive(Debug, Serialize, Deserialize)]
struct Position {
    /// Always "rest": a Bulk reader's position is not one of these.
    reader: String,
    object: String,
    /// Where the live query starts (the watermark minus the lookback).
    since_ms: Option<i64>,
    /// `None`: every pass is done.
    pass: Option<Pass>,
    after: Option<After>,
    /// The live pass's window, once narrowed (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    win_lo_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    win_len_ms: Option<i64>,
    watermark_ms: Option<i64>,
    cap_ms: Option<i64>,
}

#[derive(Deserialize)]
struct QueryPage {
    #[serde(rename = "totalSize", default)]
    total_size: Option<u64>,
    #[serde(rename = "nextRecordsUrl", default)]
    next_records_url: Option<String>,
    records: Vec<Box<RawValue>>,
}

impl<'a> RestReader<'a> {
    pub fn new(
        api: &'a Api<'a>,
        req: &ReadRequest,
        d: &Describe,
        batch_size: u32,
        max_query_length: usize,
    ) -> Result<Self> {
        let cursor = d.cursor;
        let mut key = vec!["Id".to_owned()];
        key.extend(cursor.map(str::to_owned));
        let fields: Vec<String> = req
            .fields
            .iter()
            .map(|f| f.name.clone())
            .filter(|f| !key.contains(f))
            .collect();
        for f in &fields {
            if !soql::is_identifier(f) {
                return Err(CrmError::config(format!(
                    "{f:?} is not a Salesforce field API name"
                )));
            }
        }
        let (since, watermark) = match (incremental_since(req)?, cursor) {
            (Some((since, w)), Some(_)) => (Some(since), Some(w)),
            // Full runs, and objects without a modification time.
            _ => (None, None),
        };
        let plan = soql::plan(&key, &fields, max_query_length);
        let track_deletes = req.track_deletes && d.has_is_deleted;
        let lookback = chrono::Duration::from_std(req.lookback).unwrap_or_default();
        let deletes_since = req.deletes_since.map(|t| t - lookback);
        let recent = |t: DateTime<Utc>| t > Utc::now() - chrono::Duration::days(DELETE_LOG_DAYS);
        let mut reconcile = None;
        let created = Utc::now();
        let deletes = match (&req.mode, deletes_since) {
            (SyncMode::Incremental { .. }, Some(t))
                if track_deletes && d.replicateable && recent(t) =>
            {
                Pass::GetDeleted
            }
            (SyncMode::Incremental { .. }, Some(t)) if track_deletes && d.replicateable => {
                reconcile = Some(format!(
                    "the last run began {}, before Salesforce's delete log reaches back ({DELETE_LOG_DAYS} days): records hard-deleted or purged from the recycle bin since then are only found by listing ids",
                    soql::datetime(t)
                ));
                Pass::Deleted
            }
            (SyncMode::Incremental { .. }, None) if track_deletes && d.replicateable => {
                reconcile = Some(
                    "there is no record of when this stream's deletes were last looked for (its run history was removed?): records hard-deleted or purged since are only found by listing ids"
                        .to_owned(),
                );
                Pass::Deleted
            }
            _ => Pass::Deleted,
        };
        Ok(RestReader {
            api,
            object: req.object.clone(),
            cursor,
            key,
            fields,
            plan,
            max_query_length,
            batch_size,
            since,
            start: watermark,
            watermark,
            track_deletes,
            deletes,
            deletes_since,
            archived: d.has_is_archived,
            only_ids: None,
            created,
            covered: None,
            win_lo: since,
            win_len: None,
            win_ok: 0,
            reconcile,
            phase: Phase::Start(Pass::Live),
            warnings: vec![],
            dropped: vec![],
            cap: None,
            began: None,
            urls: Cursors::default(),
            after: None,
            unplaced: false,
        })
    }

    /// Go on from `position` (from [`PageSource::checkpoint`] of a run of
    /// the same object, mode and watermark). A position that does not fit
    /// this run is ignored: the run starts over, which is only slower.
    pub fn resume_from(&mut self, position: &str) -> bool {
        let Ok(p) = serde_json::from_str::<Position>(position) else {
            return false;
        };
        let ms = |d: Option<DateTime<Utc>>| d.map(|d| d.timestamp_millis());
        let fits = p.reader == "rest"
            && p.object == self.object
            && p.since_ms == ms(self.since)
            && p.after
                .as_ref()
                .is_none_or(|a| a.t.is_some() == self.cursor.is_some())
            && (p.pass.is_none_or(|p| p == Pass::Live) || self.track_deletes);
        if !fits {
            return false;
        }
        let at = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis);
        self.phase = match p.pass {
            Some(Pass::Live) => Phase::Start(Pass::Live),
            Some(_) => Phase::Start(self.deletes),
            None => Phase::Done,
        };
        self.after = p.after;
        if let (Some(lo), Some(len)) = (at(p.win_lo_ms), p.win_len_ms) {
            self.win_lo = Some(lo);
            self.win_len = Some(chrono::Duration::milliseconds(len));
        }
        self.watermark = at(p.watermark_ms).or(self.watermark);
        self.cap = at(p.cap_ms);
        true
    }

    /// Where the next page starts, if the run can go on from there.
    fn position(&self) -> Option<Position> {
        let pass = match &self.phase {
            Phase::Done => None,
            Phase::Start(p) | Phase::More(p, _) => Some(*p),
        };
        if self.unplaced && pass.is_some() {
            return None;
        }
        let ms = |d: Option<DateTime<Utc>>| d.map(|d| d.timestamp_millis());
        Some(Position {
            reader: "rest".into(),
            object: self.object.clone(),
            since_ms: ms(self.since),
            pass,
            after: self.after.clone(),
            win_lo_ms: self.win_len.and(ms(self.win_lo)),
            win_len_ms: self.win_len.map(|l| l.num_milliseconds()),
            watermark_ms: ms(self.watermark),
            cap_ms: ms(self.cap),
        })
    }

    /// Reconciliation's re-read: the live records among `ids` (at most
    /// [`RestReader::ids_per_query`] of them), whole. The field groups
    /// leave a third of each query to the `Id IN (...)` list.
    pub fn by_ids(
        api: &'a Api<'a>,
        req: &ReadRequest,
        d: &Describe,
        batch_size: u32,
        max_query_length: usize,
        ids: &[String],
    ) -> Result<Self> {
        let mut r = Self::new(api, req, d, batch_size, max_query_length * 2 / 3)?;
        r.max_query_length = max_query_length;
        r.only_ids = Some(ids.to_vec());
        r.track_deletes = false;
        Ok(r)
    }

    /// How many ids one `Id IN (...)` query of this reader takes.
    pub fn ids_per_query(&self) -> usize {
        self.plan.ids_per_query
    }

    /// Only the deletes pass (after a Bulk API full read).
    pub fn deletes_only(
        api: &'a Api<'a>,
        req: &ReadRequest,
        d: &Describe,
        batch_size: u32,
        max_query_length: usize,
    ) -> Result<Self> {
        let mut r = Self::new(api, req, d, batch_size, max_query_length)?;
        r.phase = Phase::Start(r.deletes);
        Ok(r)
    }

    /// The watermark reached, if any: the newest modification time seen,
    /// but never past the server's time when the live query began, and
    /// never before where this run started.
    pub fn watermark_at(&self) -> Option<DateTime<Utc>> {
        match (capped(self.watermark, self.cap), self.start) {
            (Some(w), Some(s)) => Some(w.max(s)),
            (w, s) => w.or(s),
        }
    }

    fn order(&self) -> String {
        match self.cursor {
            Some(c) => format!("{c} ASC, Id ASC"),
            None => "Id ASC".to_owned(),
        }
    }

    /// The resource a pass's query goes to: `queryAll` for deletes, and
    /// for the live records of objects `query` hides archived ones of.
    fn resource(&self, pass: Pass) -> &'static str {
        match pass {
            Pass::Live if self.archived => "queryAll",
            p => p.resource(),
        }
    }

    fn driver_soql(&self, pass: Pass) -> String {
        let mut conds = vec![];
        match pass {
            Pass::Deleted | Pass::GetDeleted => conds.push("IsDeleted = true".to_owned()),
            // queryAll: the deleted ones stay out.
            Pass::Live if self.archived => conds.push("IsDeleted = false".to_owned()),
            Pass::Live => {}
        }
        if let Some(ids) = &self.only_ids {
            let list: Vec<String> = ids.iter().map(|i| soql::string(i)).collect();
            conds.push(format!("Id IN ({})", list.join(", ")));
        }
        match (self.cursor, self.since, pass) {
            (Some(c), Some(_), Pass::Live) => {
                if let Some(lo) = self.win_lo {
                    conds.push(format!("{c} >= {}", soql::datetime(lo)));
                }
                // Every window is bounded: at most up to when the run
                // began (what changed since is the next run's).
                if let Some(hi) = self.win_hi() {
                    conds.push(format!("{c} < {}", soql::datetime(hi)));
                }
            }
            (Some(c), Some(s), _) => conds.push(format!("{c} >= {}", soql::datetime(s))),
            _ => {}
        }
        // Resuming: after the last record returned, in the query's order.
        if let Some(a) = &self.after {
            let id = soql::string(&a.id);
            conds.push(
                match (self.cursor, a.t.and_then(DateTime::from_timestamp_millis)) {
                    // The leading range keeps the cursor's index usable.
                    (Some(c), Some(t)) => {
                        let t = soql::datetime(t);
                        format!("{c} >= {t} AND ({c} > {t} OR Id > {id})")
                    }
                    _ => format!("Id > {id}"),
                },
            );
        }
        let mut sel = self.key.clone();
        sel.extend(self.plan.groups[0].iter().cloned());
        let w = (!conds.is_empty()).then(|| conds.join(" AND "));
        soql::select(&sel, &self.object, w.as_deref(), Some(&self.order()))
    }

    fn headers(&self) -> [(&'static str, String); 1] {
        [(
            "Sforce-Query-Options",
            format!("batchSize={}", self.batch_size),
        )]
    }

    /// Run `q`; an `INVALID_FIELD` naming one of our fields drops that field
    /// (with a warning) and returns `Ok(None)` so the caller rebuilds `q`.
    async fn start_query(&mut self, pass: Pass, q: &str) -> Result<Option<QueryPage>> {
        let path = self.api.data_path(self.resource(pass));
        let windowed = pass == Pass::Live && self.win_lo.is_some() && self.cursor.is_some();
        let res = if windowed {
            self.api
                .query_narrowable(&path, &[("q", q)], &self.headers())
                .await
        } else {
            self.api
                .call(Method::GET, &path, &[("q", q)], &self.headers(), None)
                .await
        };
        match res {
            Ok(resp) => {
                // The query began before the server stamped its answer, at
                // most one round trip earlier.
                let date =
                    server_date_ms(&resp.headers).unwrap_or_else(|| Utc::now().timestamp_millis());
                let rtt = resp.elapsed.as_millis() as i64 + 1;
                self.began = DateTime::from_timestamp_millis(date - rtt);
                if pass == Pass::Live && self.cap.is_none() {
                    self.cap = self.began;
                }
                Ok(Some(parse_json(&format!("GET {path}"), &resp.body)?))
            }
            Err(e) if windowed && e.code.as_deref() == Some("QUERY_TIMEOUT") => {
                self.narrow(e)?;
                Ok(None)
            }
            Err(e) if e.code.as_deref() == Some("INVALID_FIELD") => {
                let gone = e
                    .detail
                    .as_deref()
                    .and_then(soql::invalid_field_name)
                    .and_then(|n| self.fields.iter().position(|f| f.eq_ignore_ascii_case(n)));
                let Some(i) = gone else { return Err(e) };
                let name = self.fields.remove(i);
                self.dropped.push(name.clone());
                self.warnings.push(format!(
                    "field {name} no longer exists on {} (INVALID_FIELD); it is no longer synced and its column keeps the values already landed",
                    self.object
                ));
                self.plan = soql::plan(&self.key, &self.fields, self.max_query_length);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn step(&mut self) -> Result<Option<Page>> {
        let (pass, page) = match self.phase.clone() {
            Phase::Done => return Ok(None),
            Phase::Start(Pass::GetDeleted) => return self.get_deleted().await.map(Some),
            Phase::Start(pass) => {
                let page = loop {
                    let q = self.driver_soql(pass);
                    if let Some(p) = self.start_query(pass, &q).await? {
                        break p;
                    }
                };
                (pass, page)
            }
            Phase::More(pass, url) => {
                self.urls.follow("Salesforce's nextRecordsUrl", &url)?;
                let (p, _) = self
                    .api
                    .get_json::<QueryPage>(&url, &[], &self.headers())
                    .await?;
                (pass, p)
            }
        };
        let mut records = self.take_records(pass, page.records)?;
        // A narrowed live pass goes on with the next window.
        let next_window = match (pass, self.win_hi(), self.win_len) {
            (Pass::Live, Some(hi), Some(_)) if hi < self.until() => Some(hi),
            _ => None,
        };
        self.phase = match (page.next_records_url.clone(), pass) {
            (Some(u), _) => Phase::More(pass, u),
            (None, Pass::Live) if next_window.is_some() => {
                // A window that finished: the next may be twice as wide (a
                // burst of changes is often short). A timeout halves it
                // again at a later start, so no query repeats.
                self.win_lo = next_window;
                self.win_ok += 1;
                if self.win_ok >= 2 {
                    self.win_len = self.win_len.map(|l| l * 2);
                    self.win_ok = 0;
                }
                Phase::Start(Pass::Live)
            }
            (None, Pass::Live) if self.track_deletes => Phase::Start(self.deletes),
            (None, _) => Phase::Done,
        };
        if !matches!(self.phase, Phase::More(..)) {
            // A new pass (or none) begins from its start.
            self.after = None;
            self.unplaced = false;
        }
        if self.plan.groups.len() > 1 && !records.is_empty() {
            self.fetch_other_groups(&mut records).await?;
        }
        Ok(Some(Page {
            records,
            // A narrowed pass's windows each count their own records:
            // none of them is the run's total.
            total: if self.win_len.is_some() {
                None
            } else {
                page.total_size
            },
        }))
    }

    fn take_records(&mut self, pass: Pass, raws: Vec<Box<RawValue>>) -> Result<Vec<Record>> {
        let endpoint = format!("GET {}", self.api.data_path(self.resource(pass)));
        let split = self.plan.groups.len() > 1;
        let mut out = Vec::with_capacity(raws.len());
        // Only the id and the cursor are read here: the values are parsed
        // where they are written, on the writer's helper thread (this
        // thread's parse into maps was a quarter of a REST sync's time).
        // A record of several field groups is joined by its values.
        let keys = ["Id", self.cursor.unwrap_or("Id")];
        for raw in raws {
            let shape = |e: serde_json::Error| {
                CrmError::bad_response(format!(
                    "a record in the response has an unexpected shape: {e}"
                ))
                .with_endpoint(&endpoint)
            };
            let (fields, unparsed, head) = if split {
                let fields: Map<String, Value> = serde_json::from_str(raw.get()).map_err(shape)?;
                let head = keys
                    .iter()
                    .map(|k| fields.get(*k).and_then(Value::as_str).map(str::to_owned))
                    .collect();
                (fields, 0, head)
            } else {
                let (head, n) = crate::source::head(raw.get(), &keys).map_err(shape)?;
                (Map::new(), n, head)
            };
            let mut head = head.into_iter();
            let Some(id) = head.next().flatten() else {
                return Err(CrmError::bad_response("a record in the response has no Id")
                    .with_endpoint(&endpoint));
            };
            let updated_at = head
                .next()
                .flatten()
                .filter(|_| self.cursor.is_some())
                .as_deref()
                .and_then(parse_datetime);
            // Only the live pass moves the watermark: the deletes pass is a
            // later snapshot, and changes made between the two are stamped
            // before its newest deletion.
            if let (Some(u), Pass::Live) = (updated_at, pass) {
                self.watermark = Some(self.watermark.map_or(u, |w| w.max(u)));
            }
            let deleted_at = match pass {
                Pass::Live => None,
                Pass::Deleted | Pass::GetDeleted => Some(updated_at.unwrap_or_else(Utc::now)),
            };
            match (self.cursor, updated_at) {
                (Some(_), None) => self.unplaced = true,
                // Edited since the query began: it may sort later than
                // here, and the resumed query reads it again anyway.
                (Some(_), Some(t)) if self.began.is_none_or(|b| t > b) => {}
                (_, t) => {
                    self.after = Some(After {
                        t: t.map(|t| t.timestamp_millis()),
                        id: id.clone(),
                    })
                }
            }
            out.push(Record {
                id,
                updated_at,
                deleted_at,
                raw: if split {
                    String::new()
                } else {
                    // The text itself, not a copy.
                    String::from(Box::<str>::from(raw))
                },
                fields,
                merged_ids: Vec::new(),
                deletion_only: false,
                unparsed,
            });
        }
        Ok(out)
    }

    /// The live query timed out (`QUERY_TIMEOUT`, Salesforce's 120 s): read
    /// the cursor range in windows of half the span instead (tap-salesforce
    /// halves its date window the same way), up to when the run began; a
    /// window that finishes doubles the one after the next. A window's start only moves
    /// forward and, at one start, its end only moves back: the same query
    /// is never sent twice.
    fn narrow(&mut self, e: crate::error::CrmError) -> Result<()> {
        let lo = self.win_lo.expect("a windowed query");
        // The span the query covered.
        let span = self
            .win_hi()
            .unwrap_or_else(|| Utc::now().max(lo + chrono::Duration::hours(1)))
            - lo;
        let half = span / 2;
        if half < chrono::Duration::seconds(1) {
            let mut e = e;
            // The CRM cannot answer, not a request to fix: 08006.
            e.kind = crate::error::ErrorKind::ServerError;
            return Err(e.with_hint(format!(
                "Salesforce timed out on {} records changed within one second; lower the source option bulk_threshold so that large change sets are read through Bulk API 2.0",
                self.object
            )));
        }
        if self.win_len.is_none() {
            self.warnings.push(format!(
                "the query of the {} records changed since {} timed out (QUERY_TIMEOUT); they were read in narrower windows instead, halved at each timeout (the first: {})",
                self.object,
                soql::datetime(lo),
                human(half)
            ));
        }
        self.win_len = Some(half);
        self.win_ok = 0;
        Ok(())
    }

    /// Where an incremental live pass ends: when the run began, unless a
    /// server clock ahead of ours put the start past it.
    fn until(&self) -> DateTime<Utc> {
        self.created
    }

    /// The end of the current window (exclusive); None: open (the start is
    /// past when the run began).
    fn win_hi(&self) -> Option<DateTime<Utc>> {
        let lo = self.win_lo?;
        let until = self.until();
        if lo >= until {
            // Narrowed all the same: a timeout must never repeat a query.
            return self.win_len.map(|l| lo + l);
        }
        Some(self.win_len.map_or(until, |l| (lo + l).min(until)))
    }

    /// The deletes pass of an incremental run through getDeleted:
    /// `GET sobjects/{X}/deleted/?start=&end=` from the last run's start
    /// (less the lookback) to now, one call whatever the number of deletes,
    /// hard deletes and records purged from the recycle bin included. A
    /// delete log that begins after `start` (`earliestDateAvailable`) or a
    /// start Salesforce refuses means deletes may be missing: the records
    /// it has are marked, the recycle bin is read as before, and the run
    /// asks for a reconciliation.
    async fn get_deleted(&mut self) -> Result<Page> {
        #[derive(Deserialize)]
        struct Wire {
            #[serde(rename = "deletedRecords", default)]
            deleted: Vec<WireDeleted>,
            #[serde(rename = "earliestDateAvailable", default)]
            earliest: Option<String>,
            #[serde(rename = "latestDateCovered", default)]
            latest: Option<String>,
        }
        #[derive(Deserialize)]
        struct WireDeleted {
            id: String,
            #[serde(rename = "deletedDate", default)]
            deleted_date: Option<String>,
        }
        // The start must precede the end by more than a minute
        // (INVALID_REPLICATION_DATE otherwise): an earlier start only
        // repeats deletes already marked.
        // Whole seconds, as documented; the end rounded up (Salesforce
        // ignores the seconds anyway: the next run starts before this one
        // began, so nothing is lost either way).
        let now = Utc::now();
        let end = DateTime::from_timestamp(now.timestamp() + 1, 0).unwrap_or(now);
        let start = self
            .deletes_since
            .unwrap_or(end)
            .min(end - chrono::Duration::minutes(2));
        let path = self
            .api
            .data_path(&format!("sobjects/{}/deleted/", self.object));
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
        let (start_s, end_s) = (fmt(start), fmt(end));
        let res = self
            .api
            .get_json::<Wire>(&path, &[("start", &start_s), ("end", &end_s)], &[])
            .await;
        self.after = None;
        self.unplaced = false;
        let w = match res {
            Ok((w, _)) => w,
            // The start is older than the log serves, the log was purged
            // since (the documented answer: pull the whole table), or too
            // many deletes for one answer (EXCEEDED_ID_LIMIT, above 600,000
            // ids). <https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getdeleted.htm>
            Err(e)
                if matches!(
                    e.code.as_deref(),
                    Some("INVALID_REPLICATION_DATE" | "EXCEEDED_ID_LIMIT")
                ) =>
            {
                self.reconcile = Some(format!(
                    "Salesforce's getDeleted refused the window from {start_s} ({}): deletes the recycle bin no longer holds are only found by listing ids",
                    e.code.as_deref().unwrap_or_default()
                ));
                self.phase = Phase::Start(Pass::Deleted);
                return Ok(Page::default());
            }
            Err(e) => return Err(e),
        };
        if let Some(earliest) = w.earliest.as_deref().and_then(parse_datetime) {
            if earliest > start {
                self.reconcile = Some(format!(
                    "Salesforce's delete log for {} begins {} (earliestDateAvailable), after the last run began ({start_s}): deletes before it are only found by listing ids",
                    self.object,
                    soql::datetime(earliest)
                ));
            }
        }
        // Every delete up to what the answer covers is found, unless the
        // log began too late: the next run looks from there (Salesforce:
        // the next start must not be after latestDateCovered).
        if self.reconcile.is_none() {
            let latest = w.latest.as_deref().and_then(parse_datetime).unwrap_or(end);
            self.covered = Some(self.created.min(latest));
        }
        self.phase = Phase::Done;
        let records = w
            .deleted
            .into_iter()
            .map(|d| Record {
                id: d.id,
                updated_at: None,
                deleted_at: Some(
                    d.deleted_date
                        .as_deref()
                        .and_then(parse_datetime)
                        .unwrap_or(now),
                ),
                fields: Map::new(),
                raw: String::new(),
                merged_ids: Vec::new(),
                deletion_only: true,
                unparsed: 0,
            })
            .collect();
        Ok(Page {
            records,
            total: None,
        })
    }

    /// Fill in the fields of the other groups for `records`, by Id.
    async fn fetch_other_groups(&mut self, records: &mut Vec<Record>) -> Result<()> {
        let index: std::collections::HashMap<String, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        let ids: Vec<String> = records.iter().map(|r| soql::string(&r.id)).collect();
        let groups: Vec<Vec<String>> = self.plan.groups[1..].to_vec();
        // queryAll: a record deleted since the driver query still comes back.
        let path = self.api.data_path(Pass::Deleted.resource());
        let mut complete = vec![0usize; records.len()];
        for group in &groups {
            for chunk in ids.chunks(self.plan.ids_per_query) {
                let mut sel = self.key.clone();
                sel.extend(group.iter().cloned());
                let w = format!("Id IN ({})", chunk.join(", "));
                let q = soql::select(&sel, &self.object, Some(&w), None);
                let mut next: Option<String> = None;
                loop {
                    let page: QueryPage = match &next {
                        None => {
                            let resp = self
                                .api
                                .call(Method::GET, &path, &[("q", &q)], &self.headers(), None)
                                .await?;
                            parse_json(&format!("GET {path}"), &resp.body)?
                        }
                        Some(u) => self.api.get_json(u, &[], &self.headers()).await?.0,
                    };
                    for raw in page.records {
                        let part: Map<String, Value> =
                            serde_json::from_str(raw.get()).map_err(|e| {
                                CrmError::bad_response(format!(
                                    "a record in the response has an unexpected shape: {e}"
                                ))
                            })?;
                        let Some(&i) = part
                            .get("Id")
                            .and_then(Value::as_str)
                            .and_then(|id| index.get(id))
                        else {
                            continue;
                        };
                        complete[i] += 1;
                        let r = &mut records[i];
                        let stamp = self
                            .cursor
                            .and_then(|c| part.get(c))
                            .and_then(Value::as_str)
                            .and_then(parse_datetime);
                        if let (Some(a), Some(b)) = (r.updated_at, stamp) {
                            // Changed between the queries: keep the older
                            // time so the next run reads it again.
                            r.updated_at = Some(a.min(b));
                        }
                        for (k, v) in part {
                            if !self.key.contains(&k) && k != "attributes" {
                                r.fields.insert(k, v);
                            }
                        }
                    }
                    next = page.next_records_url;
                    if next.is_none() {
                        break;
                    }
                }
            }
        }
        // A record missing from a group was removed from the org in
        // between; land only whole records.
        let mut i = 0;
        records.retain(|_| {
            i += 1;
            complete[i - 1] >= groups.len()
        });
        for r in records.iter_mut() {
            // As Value::Object(fields).to_string(), without a copy.
            r.raw = serde_json::to_string(&r.fields).unwrap_or_default();
        }
        Ok(())
    }
}

/// Of an incremental read: where it starts (the stored watermark less the
/// lookback) and the watermark; None for a full read. Every reader and the
/// choice between them start from here.
pub(super) fn incremental_since(
    req: &ReadRequest,
) -> Result<Option<(DateTime<Utc>, DateTime<Utc>)>> {
    let SyncMode::Incremental { watermark } = &req.mode else {
        return Ok(None);
    };
    let w = parse_datetime(watermark).ok_or_else(|| {
        CrmError::config(format!("stored watermark {watermark:?} is not a timestamp"))
            .with_hint("Run crm_sync.sync(source, stream, full_refresh => true) to start over.")
    })?;
    let lookback = chrono::Duration::from_std(req.lookback).unwrap_or_default();
    Ok(Some((w - lookback, w)))
}

/// `3 days 4 h`, `12 min`, `40 s`: a window's length in a warning.
fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds();
    match s {
        s if s >= 86_400 => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// The newest modification time seen, never past `cap` (the server's time
/// when the query or job began).
pub fn capped(seen: Option<DateTime<Utc>>, cap: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (seen, cap) {
        (Some(w), Some(c)) => Some(w.min(c)),
        (w, _) => w,
    }
}

impl PageSource for RestReader<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(self.step())
    }

    fn watermark(&self) -> Option<String> {
        self.watermark_at().map(fmt_ts)
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn dropped_fields(&self) -> Vec<String> {
        self.dropped.clone()
    }

    fn checkpoint(&self) -> Option<String> {
        serde_json::to_string(&self.position()?).ok()
    }

    fn reconcile_needed(&self) -> Option<String> {
        self.reconcile.clone()
    }

    fn deletes_covered(&self) -> Option<DateTime<Utc>> {
        self.covered
    }
}
