//! One run of one module: records through Get Records (fields in groups of
//! 50 joined by id; `page` then `page_token`), through COQL by id once
//! page tokens end (100,000 records) or expire, then the deleted records
//! since the last run. Users through the users API.
//!
//! Watermark: the run's start (`If-Modified-Since` of the next run, less
//! the lookback). Checkpoint: `{"after": last id, "deletes_page": n}`:
//! a resumed run goes on by COQL after that id (page tokens are bound to
//! their first call and last 24 hours).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::api::{page, Zoho, COQL_LIMIT, MAX_FIELDS, MAX_IDS, PER_PAGE};
use crate::error::{CrmError, Result};
use crate::source::{BoxFuture, Page, PageSource, ReadRequest, Record, SyncMode};
use crate::types::{fmt_ts, parse_datetime};

/// Zoho keeps deleted records' ids 60 days in the recycle bin (120 once
/// emptied): a longer gap between runs may have lost some.
const DELETES_KEPT_DAYS: i64 = 60;

/// Which fields go in which call: the first group has the id and the
/// modification time, every group at most 50 names.
pub fn groups(fields: &[String]) -> Vec<Vec<String>> {
    let mut first = vec!["id".to_owned(), "Modified_Time".to_owned()];
    let mut rest: Vec<String> = Vec::new();
    for f in fields {
        if !first.contains(f) && !rest.contains(f) {
            rest.push(f.clone());
        }
    }
    let room = MAX_FIELDS - first.len();
    let take = rest.len().min(room);
    first.extend(rest.drain(..take));
    let mut out = vec![first];
    for chunk in rest.chunks(MAX_FIELDS - 1) {
        let mut g = vec!["id".to_owned()];
        g.extend(chunk.iter().cloned());
        out.push(g);
    }
    out
}

fn ims(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

/// Reads a module's records by id or by listing, joining field groups.
pub struct Fetch<'a> {
    pub api: &'a Zoho<'a>,
    pub module: String,
    pub groups: Vec<Vec<String>>,
}

impl Fetch<'_> {
    fn base_query(&self, group: usize) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("fields", self.groups[group].join(",")),
            ("per_page", PER_PAGE.to_string()),
            ("sort_by", "id".to_owned()),
            ("sort_order", "asc".to_owned()),
        ];
        // Converted leads are left out unless asked for (airbyte#39398).
        if self.module == "Leads" {
            q.push(("converted", "both".to_owned()));
        }
        q
    }

    fn endpoint(&self) -> String {
        format!("GET /crm/v8/{}", self.module)
    }

    /// The records of `ids` with the fields of groups 1.. joined into
    /// `rows` (group 0's, by id).
    async fn join(&self, rows: &mut Vec<Map<String, Value>>) -> Result<()> {
        if self.groups.len() < 2 || rows.is_empty() {
            return Ok(());
        }
        let index: HashMap<String, usize> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((r.get("id")?.as_str()?.to_owned(), i)))
            .collect();
        let ids: Vec<String> = index.keys().cloned().collect();
        let mut seen = vec![1usize; rows.len()];
        for g in 1..self.groups.len() {
            for chunk in ids.chunks(MAX_IDS) {
                let mut q = self.base_query(g);
                q.push(("ids", chunk.join(",")));
                let body = self
                    .api
                    .get(&self.module, &format!("/crm/v8/{}", self.module), &q, &[])
                    .await?;
                for raw in page(&self.endpoint(), &body)?.data {
                    let m: Map<String, Value> = parse_row(&self.module, raw.get())?;
                    let Some(i) = m
                        .get("id")
                        .and_then(Value::as_str)
                        .and_then(|id| index.get(id))
                    else {
                        continue;
                    };
                    seen[*i] += 1;
                    for (k, v) in m {
                        if k != "id" && !k.starts_with('$') {
                            rows[*i].insert(k, v);
                        }
                    }
                }
            }
        }
        // A record one group's call no longer had was deleted meanwhile:
        // left out (its delete comes with the deleted records), rather
        // than written with that group's fields empty.
        let groups = self.groups.len();
        let mut i = 0;
        rows.retain(|_| {
            i += 1;
            seen[i - 1] == groups
        });
        Ok(())
    }

    /// Records `ids` with every group's fields.
    pub async fn by_ids(&self, ids: &[String]) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(MAX_IDS) {
            let mut q = self.base_query(0);
            q.push(("ids", chunk.join(",")));
            let body = self
                .api
                .get(&self.module, &format!("/crm/v8/{}", self.module), &q, &[])
                .await?;
            let mut rows = rows_of(&self.module, &page(&self.endpoint(), &body)?.data)?;
            self.join(&mut rows).await?;
            out.extend(rows.into_iter().map(record).collect::<Result<Vec<_>>>()?);
        }
        Ok(out)
    }
}

/// `info.more_records` with no record would page on for ever.
fn more_but_empty(module: &str, more: bool, n: usize) -> Result<()> {
    if more && n == 0 {
        return Err(CrmError::bad_response(format!(
            "Zoho CRM said more records of {module} follow on a page without any"
        ))
        .with_hint("Run the sync again; if it persists, the API or a proxy in between is answering wrongly."));
    }
    Ok(())
}

/// Whether id `a` comes after id `b` (ids are numbers of up to 19 digits).
fn id_after(a: &str, b: &str) -> bool {
    match (a.parse::<u128>(), b.parse::<u128>()) {
        (Ok(x), Ok(y)) => x > y,
        _ => false,
    }
}

fn parse_row(module: &str, raw: &str) -> Result<Map<String, Value>> {
    serde_json::from_str(raw).map_err(|e| {
        CrmError::bad_response(format!("a record of {module} is not a JSON object ({e})"))
    })
}

fn rows_of(
    module: &str,
    data: &[Box<serde_json::value::RawValue>],
) -> Result<Vec<Map<String, Value>>> {
    data.iter().map(|r| parse_row(module, r.get())).collect()
}

fn record(m: Map<String, Value>) -> Result<Record> {
    let id = match m.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(CrmError::bad_response("a Zoho CRM record has no id")),
    };
    let updated_at = m
        .get("Modified_Time")
        .and_then(Value::as_str)
        .and_then(parse_datetime);
    // The groups' fields joined: one object, as one call would give it.
    let raw = serde_json::to_string(&m)
        .map_err(|e| CrmError::bad_response(format!("a Zoho CRM record: {e}")))?;
    Ok(Record {
        id,
        updated_at,
        deleted_at: None,
        fields: m,
        raw,
        merged_ids: Vec::new(),
        deletion_only: false,
        unparsed: 0,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Position {
    /// The last record id read (records phase, or done with it).
    after: Option<String>,
    /// In the deletes phase (resumed from its first page: deletes are
    /// listed newest first, so pages move as records are deleted).
    #[serde(default)]
    deletes: bool,
    /// When the interrupted run began (ms): still the run's watermark, for
    /// records the part already read may have changed since.
    #[serde(default)]
    started_ms: Option<i64>,
}

enum Phase {
    /// Get Records: the first page, then page tokens.
    List {
        token: Option<String>,
    },
    /// COQL after an id.
    Coql,
    Deletes {
        page: u32,
    },
    Done,
}

pub struct Reader<'a> {
    fetch: Fetch<'a>,
    phase: Phase,
    after: Option<String>,
    since: Option<DateTime<Utc>>,
    deletes_from: Option<DateTime<Utc>>,
    track_deletes: bool,
    started: DateTime<Utc>,
    warnings: Vec<String>,
    reconcile: Option<String>,
    covered: Option<DateTime<Utc>>,
    /// Page tokens followed (an API handing one back twice would loop).
    cursors: crate::paging::Cursors,
    /// The first id of the last deleted-records page.
    last_first: Option<String>,
    /// Whether `started` is settled: it came from a checkpoint, or was
    /// moved back to the server's clock after the run's first answer.
    resumed: bool,
}

impl<'a> Reader<'a> {
    /// A run of `req` (its fields, mode, lookback, deletes and resume).
    pub fn new(api: &'a Zoho<'a>, req: &ReadRequest) -> Reader<'a> {
        let module = req.object.as_str();
        let fields: Vec<String> = req.fields.iter().map(|f| f.name.clone()).collect();
        let (mode, lookback, track_deletes, deletes_since, resume) = (
            &req.mode,
            req.lookback,
            req.track_deletes,
            req.deletes_since,
            req.resume.as_deref(),
        );
        let started = Utc::now();
        let lookback = chrono::Duration::from_std(lookback).unwrap_or_default();
        let since = match mode {
            SyncMode::Full => None,
            SyncMode::Incremental { watermark } => parse_datetime(watermark).map(|t| t - lookback),
        };
        let deletes_from = since.map(|s| deletes_since.map_or(s, |d| d.min(s)));
        let mut reconcile = None;
        if let Some(d) = deletes_from {
            if started - d > chrono::Duration::days(DELETES_KEPT_DAYS) {
                reconcile = Some(format!(
                    "the last run of {module} was more than {DELETES_KEPT_DAYS} days ago: Zoho no longer lists every record deleted since"
                ));
            }
        }
        let mut r = Reader {
            fetch: Fetch {
                api,
                module: module.to_owned(),
                groups: groups(&fields),
            },
            phase: Phase::List { token: None },
            after: None,
            since,
            deletes_from,
            track_deletes,
            started,
            warnings: Vec::new(),
            reconcile,
            covered: None,
            cursors: Default::default(),
            last_first: None,
            resumed: false,
        };
        if let Some(p) = resume.and_then(|s| serde_json::from_str::<Position>(s).ok()) {
            if let Some(t) = p
                .started_ms
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .filter(|t| *t <= started)
            {
                r.started = t;
                r.resumed = true;
            }
            r.after = p.after;
            r.phase = match (p.deletes, &r.after) {
                (true, _) => Phase::Deletes { page: 1 },
                (false, Some(_)) => Phase::Coql,
                (false, None) => Phase::List { token: None },
            };
        }
        r
    }

    async fn read(&mut self) -> Result<Option<Page>> {
        loop {
            let out = match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::List { token } => self.list(token).await?,
                Phase::Coql => self.coql().await?,
                Phase::Deletes { page } => self.deletes(page).await?,
                Phase::Done => return Ok(None),
            };
            if let Some(p) = out {
                return Ok(Some(p));
            }
        }
    }

    fn headers(&self) -> Vec<(&'static str, String)> {
        self.since
            .map(|s| vec![("If-Modified-Since", ims(s))])
            .unwrap_or_default()
    }

    /// After the records: the deletes, or the end.
    fn records_done(&mut self) {
        self.phase = if self.track_deletes {
            Phase::Deletes { page: 1 }
        } else {
            Phase::Done
        };
    }

    async fn list(&mut self, token: Option<String>) -> Result<Option<Page>> {
        let mut q = self.fetch.base_query(0);
        if let Some(t) = &token {
            q.push(("page_token", t.clone()));
        } else {
            q.push(("page", "1".to_owned()));
        }
        let path = format!("/crm/v8/{}", self.fetch.module);
        let body = match self
            .fetch
            .api
            .get(&self.fetch.module, &path, &q, &self.headers())
            .await
        {
            Ok(b) => b,
            Err(e)
                if matches!(
                    e.code.as_deref(),
                    Some(
                        "PAGINATION_LIMIT_EXCEEDED" | "EXPIRED_VALUE" | "TOKEN_BOUND_DATA_MISMATCH"
                    )
                ) && self.after.is_some() =>
            {
                // Page tokens reach 100,000 records and last 24 hours:
                // COQL goes on after the last id.
                self.phase = Phase::Coql;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        self.server_clock();
        let p = page(&self.fetch.endpoint(), &body)?;
        more_but_empty(&self.fetch.module, p.info.more_records, p.data.len())?;
        let mut rows = rows_of(&self.fetch.module, &p.data)?;
        self.fetch.join(&mut rows).await?;
        let records = self.take(rows)?;
        match (p.info.more_records, p.info.next_page_token) {
            (true, Some(t)) => {
                self.cursors.follow("Zoho CRM's info.next_page_token", &t)?;
                self.phase = Phase::List { token: Some(t) };
            }
            // More records without a token (past what tokens reach): COQL.
            (true, None) => self.phase = Phase::Coql,
            _ => self.records_done(),
        }
        Ok(Some(Page {
            records,
            total: None,
        }))
    }

    async fn coql(&mut self) -> Result<Option<Page>> {
        let after = self.after.clone().unwrap_or_else(|| "0".to_owned());
        if !after.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CrmError::bad_response(format!(
                "a record id of {} is not a number",
                self.fetch.module
            )));
        }
        let mut q = format!(
            "select {} from {} where id > '{after}'",
            self.fetch.groups[0].join(", "),
            self.fetch.module
        );
        if let Some(s) = self.since {
            q.push_str(&format!(" and Modified_Time >= '{}'", ims(s)));
        }
        q.push_str(&format!(" order by id asc limit {COQL_LIMIT}"));
        let body = self.fetch.api.coql(&self.fetch.module, &q).await?;
        self.server_clock();
        let p = page("POST /crm/v8/coql", &body)?;
        more_but_empty(&self.fetch.module, p.info.more_records, p.data.len())?;
        let mut rows = rows_of(&self.fetch.module, &p.data)?;
        self.fetch.join(&mut rows).await?;
        let records = self.take(rows)?;
        if let Some(last) = &self.after {
            if !id_after(last, &after) {
                return Err(CrmError::bad_response(format!(
                    "Zoho CRM's COQL answer for {} did not move past id {after}; stopping instead of asking again",
                    self.fetch.module
                ))
                .with_endpoint("POST /crm/v8/coql"));
            }
        }
        if p.info.more_records {
            self.phase = Phase::Coql;
        } else {
            self.records_done();
        }
        Ok(Some(Page {
            records,
            total: None,
        }))
    }

    /// The run's start on the CRM's clock when it is behind ours (within an
    /// hour): the next run's If-Modified-Since is compared on Zoho's.
    fn server_clock(&mut self) {
        if self.resumed {
            return;
        }
        // Once: the Date of this run's first answer.
        self.resumed = true;
        if let Some(t) = self.fetch.api.server_time() {
            let off = (self.started - t).num_seconds().abs();
            if t < self.started && off <= 3_600 {
                self.started = t;
            }
        }
    }

    /// Records of joined rows; the last id noted.
    fn take(&mut self, rows: Vec<Map<String, Value>>) -> Result<Vec<Record>> {
        let records: Vec<Record> = rows.into_iter().map(record).collect::<Result<_>>()?;
        if let Some(last) = records.last() {
            self.after = Some(last.id.clone());
        }
        Ok(records)
    }

    async fn deletes(&mut self, n: u32) -> Result<Option<Page>> {
        let q = vec![
            ("type", "all".to_owned()),
            ("page", n.to_string()),
            ("per_page", PER_PAGE.to_string()),
        ];
        let headers = self
            .deletes_from
            .map(|s| vec![("If-Modified-Since", ims(s))])
            .unwrap_or_default();
        let path = format!("/crm/v8/{}/deleted", self.fetch.module);
        let body = self
            .fetch
            .api
            .get(&self.fetch.module, &path, &q, &headers)
            .await?;
        let endpoint = format!("GET {path}");
        let p = page(&endpoint, &body)?;
        more_but_empty(&self.fetch.module, p.info.more_records, p.data.len())?;
        #[derive(Deserialize)]
        struct Deleted {
            id: String,
            #[serde(default)]
            deleted_time: Option<String>,
        }
        let mut records = Vec::with_capacity(p.data.len());
        for raw in &p.data {
            let d: Deleted = serde_json::from_str(raw.get()).map_err(|e| {
                CrmError::bad_response(format!(
                    "a deleted record of {} has an unexpected shape ({e})",
                    self.fetch.module
                ))
                .with_endpoint(&endpoint)
            })?;
            let at = d
                .deleted_time
                .as_deref()
                .and_then(parse_datetime)
                .unwrap_or(self.started);
            records.push(Record {
                id: d.id,
                updated_at: None,
                deleted_at: Some(at),
                fields: Map::new(),
                raw: String::new(),
                merged_ids: Vec::new(),
                deletion_only: true,
                unparsed: 0,
            });
        }
        // An API answering every page with the first would loop.
        let first = records.first().map(|r| r.id.clone());
        if n > 1 && first.is_some() && first == self.last_first {
            return Err(CrmError::bad_response(format!(
                "Zoho CRM's deleted records of {} repeat page {} on page {n}; stopping instead of paging on",
                self.fetch.module,
                n - 1
            ))
            .with_endpoint(&endpoint));
        }
        self.last_first = first;
        if p.info.more_records {
            self.phase = Phase::Deletes { page: n + 1 };
        } else {
            self.covered = Some(self.started);
        }
        Ok(Some(Page {
            records,
            total: None,
        }))
    }
}

impl PageSource for Reader<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(self.read())
    }

    fn watermark(&self) -> Option<String> {
        Some(fmt_ts(self.started))
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn checkpoint(&self) -> Option<String> {
        let deletes = match &self.phase {
            Phase::List { .. } | Phase::Coql => false,
            Phase::Deletes { .. } => true,
            Phase::Done => return None,
        };
        let p = Position {
            after: self.after.clone(),
            deletes,
            started_ms: Some(self.started.timestamp_millis()),
        };
        if p.after.is_none() && !deletes {
            return None;
        }
        serde_json::to_string(&p).ok()
    }

    fn reconcile_needed(&self) -> Option<String> {
        self.reconcile.clone()
    }

    fn deletes_covered(&self) -> Option<DateTime<Utc>> {
        self.covered
    }
}

/// Users (`GET /crm/v8/users?type=AllUsers`): read whole each run.
pub struct Users<'a> {
    pub api: &'a Zoho<'a>,
    pub page: Option<u32>,
}

impl Users<'_> {
    async fn read(&mut self) -> Result<Option<Page>> {
        let Some(n) = self.page else {
            return Ok(None);
        };
        let q = vec![
            ("type", "AllUsers".to_owned()),
            ("page", n.to_string()),
            ("per_page", PER_PAGE.to_string()),
        ];
        let body = self.api.get("Users", "/crm/v8/users", &q, &[]).await?;
        #[derive(Deserialize, Default)]
        struct L {
            #[serde(default)]
            users: Vec<Box<serde_json::value::RawValue>>,
            #[serde(default)]
            info: super::api::Info,
        }
        let l: L = if body.is_empty() {
            L::default()
        } else {
            crate::http::parse_json("Zoho CRM", "GET /crm/v8/users", &body)?
        };
        let records = rows_of("Users", &l.users)?
            .into_iter()
            .map(record)
            .collect::<Result<Vec<_>>>()?;
        self.page = (l.info.more_records && !records.is_empty()).then_some(n + 1);
        Ok(Some(Page {
            records,
            total: None,
        }))
    }
}

impl PageSource for Users<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(self.read())
    }

    /// None: every run reads the users whole (they are few).
    fn watermark(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_groups_hold_fifty_names_and_the_id() {
        let fields: Vec<String> = (0..120).map(|i| format!("F{i}")).collect();
        let g = groups(&fields);
        assert_eq!(g.len(), 3);
        assert!(g.iter().all(|x| x.len() <= MAX_FIELDS && x[0] == "id"));
        assert_eq!(&g[0][..2], ["id", "Modified_Time"]);
        let all: Vec<&String> = g.iter().flat_map(|x| x.iter().skip(1)).collect();
        assert_eq!(all.len(), 121); // the 120 and Modified_Time, each once
                                    // A short list is one group; the id and time are not repeated.
        let g = groups(&["id".into(), "Email".into(), "Modified_Time".into()]);
        assert_eq!(g, vec![vec!["id", "Modified_Time", "Email"]]);
    }
}
