//! One run of one table: a full read (under change tracking where the
//! table has it), a delta read from the stored delta token, or a window of
//! `modifiedon` for tables without change tracking.
//!
//! Watermarks (opaque to the engine): `delta:{token}` (the `$deltatoken`
//! of the last page's `@odata.deltaLink`, the URL rebuilt with the
//! stream's columns each run, as Airbyte does) or `modified:{time}` (the
//! run's start: the next window starts there less the lookback).
//! Checkpoints: `{"next": link, "select": columns, "watermark": ...}`, the
//! next page's link (same environment only), used only while the stream
//! still asks for the same columns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use super::api::{error_code, Dataverse, Table, ANNOTATIONS, EXPIRED_VERSION_STAMP};
use crate::error::{CrmError, Result};
use crate::source::{BoxFuture, Page, PageSource, Record, SyncMode};
use crate::types::{fmt_ts, parse_datetime};

/// Where a run stands, saved between pages.
#[derive(Debug, Serialize, Deserialize)]
struct Position {
    next: String,
    select: String,
    /// The watermark the run will report when its links give none.
    watermark: Option<String>,
    /// Whether the link belongs to a change-tracked read (its Prefer).
    #[serde(default)]
    track: bool,
    /// What an expired delta token made the run say and ask for.
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    reconcile: Option<String>,
}

pub struct Reader<'a> {
    api: &'a Dataverse<'a>,
    table: Table,
    select: String,
    /// The next page to read; None when done.
    next: Option<Url>,
    prefer: String,
    tracked: bool,
    /// Whether this run reads a delta (deleted rows may come).
    watermark: Option<String>,
    started: DateTime<Utc>,
    warnings: Vec<String>,
    reconcile: Option<String>,
    /// Set once a full read replaced an expired delta read.
    restarted: bool,
    /// Whether the links followed now are a change-tracked read's.
    link_tracked: bool,
    /// Next links followed (an API handing one back would loop).
    cursors: crate::paging::Cursors,
    /// A `modified:` window's start is still to be set to the server's
    /// clock from the run's first answer.
    window_clock: bool,
}

impl<'a> Reader<'a> {
    pub fn new(
        api: &'a Dataverse<'a>,
        table: Table,
        columns: &[String],
        mode: &SyncMode,
        lookback: std::time::Duration,
        resume: Option<&str>,
    ) -> Result<Reader<'a>> {
        let mut cols: Vec<&str> = vec![table.key.as_str(), "modifiedon"];
        for c in columns {
            if !cols.contains(&c.as_str()) {
                cols.push(c);
            }
        }
        let select = cols.join(",");
        let tracked = api.change_tracking && table.tracking == Some(true);
        let started = Utc::now();
        let mut r = Reader {
            api,
            select,
            next: None,
            prefer: String::new(),
            tracked,
            watermark: None,
            started,
            warnings: Vec::new(),
            reconcile: None,
            restarted: false,
            link_tracked: false,
            cursors: Default::default(),
            window_clock: false,
            table,
        };
        // A saved position of the same columns goes on from there, asked
        // as its link was made (tracked or not).
        if let Some(p) = resume.and_then(|s| serde_json::from_str::<Position>(s).ok()) {
            if p.select == r.select {
                if let Ok(u) = Url::parse(&p.next) {
                    if api.check_link(&u).is_ok() {
                        r.link_tracked = p.track;
                        r.prefer = r.prefer_for(p.track);
                        r.next = Some(u);
                        r.watermark = p.watermark;
                        r.restarted = p.reconcile.is_some();
                        r.warnings = p.warnings;
                        r.reconcile = p.reconcile;
                        return Ok(r);
                    }
                }
            }
        }
        // A delta token when change tracking is no longer to be used: a
        // window from the token's time.
        let window_of_token = match mode {
            SyncMode::Incremental { watermark } if !tracked && watermark.starts_with("delta:") => {
                super::watermark_time(watermark).map(|t| format!("modified:{}", fmt_ts(t)))
            }
            _ => None,
        };
        let mode = match &window_of_token {
            Some(w) => &SyncMode::Incremental {
                watermark: w.clone(),
            },
            None => mode,
        };
        match mode {
            SyncMode::Full => r.start_full()?,
            SyncMode::Incremental { watermark } => {
                if let Some(token) = watermark.strip_prefix("delta:") {
                    r.link_tracked = true;
                    r.prefer = r.prefer_for(true);
                    r.next =
                        Some(api.list_url(&r.table.set, &r.select, &[("$deltatoken", token)])?);
                } else if let Some(t) = watermark.strip_prefix("modified:").and_then(parse_datetime)
                {
                    let since = t - chrono::Duration::from_std(lookback).unwrap_or_default();
                    r.prefer = r.prefer_for(false);
                    let filter = format!("modifiedon ge {}", since.format("%Y-%m-%dT%H:%M:%SZ"));
                    r.next =
                        Some(api.list_url(&r.table.set, &r.select, &[("$filter", &filter)])?);
                    r.watermark = Some(format!("modified:{}", fmt_ts(started)));
                    r.window_clock = true;
                } else {
                    // A watermark of another connector or version: read all.
                    r.start_full()?;
                }
            }
        }
        Ok(r)
    }

    /// The rows `filter` selects, untracked (reconciliation's re-reads).
    pub fn by_filter(
        api: &'a Dataverse<'a>,
        table: Table,
        columns: &[String],
        filter: &str,
    ) -> Result<Reader<'a>> {
        let mut r = Reader::new(
            api,
            table,
            columns,
            &SyncMode::Full,
            Default::default(),
            None,
        )?;
        r.tracked = false;
        r.link_tracked = false;
        r.window_clock = false;
        r.watermark = None;
        r.prefer = r.prefer_for(false);
        r.next = Some(api.list_url(&r.table.set, &r.select, &[("$filter", filter)])?);
        Ok(r)
    }

    fn prefer_for(&self, track: bool) -> String {
        let columns = self.select.split(',').count();
        let mut p = vec![format!("odata.maxpagesize={}", self.api.page_for(columns))];
        if track {
            p.push("odata.track-changes".into());
        }
        p.push(ANNOTATIONS.into());
        p.join(",")
    }

    fn start_full(&mut self) -> Result<()> {
        self.link_tracked = self.tracked;
        self.window_clock = !self.tracked;
        self.prefer = self.prefer_for(self.tracked);
        self.next = Some(self.api.list_url(&self.table.set, &self.select, &[])?);
        // Tables without change tracking: the next run's window starts
        // where this one began.
        self.watermark = (!self.tracked).then(|| format!("modified:{}", fmt_ts(self.started)));
        Ok(())
    }

    async fn read(&mut self) -> Result<Option<Page>> {
        let Some(url) = self.next.clone() else {
            return Ok(None);
        };
        let what = format!("table {}", self.table.logical);
        let expired = |r: &crate::http::Response| {
            r.status.as_u16() == 400 && error_code(&r.body).0 == EXPIRED_VERSION_STAMP
        };
        let r = self.api.get(&what, &url, &self.prefer, &expired).await?;
        if expired(&r) {
            if self.restarted {
                return Err(CrmError::bad_response(format!(
                    "Dataverse called a fresh read of {} an expired delta",
                    self.table.logical
                )));
            }
            // The org keeps changes for its retention days only
            // (organization.expirechangetrackingindays): read everything
            // again; deletes in the gap are found by a reconciliation.
            self.restarted = true;
            self.warnings.push(format!(
                "the change-tracking token of table {} had expired (Dataverse keeps changes for the environment's retention period); the whole table was read again",
                self.table.logical
            ));
            self.reconcile = Some(format!(
                "the change-tracking token of table {} expired, so deletes since the last run are unknown",
                self.table.logical
            ));
            self.start_full()?;
            return Box::pin(self.read()).await;
        }
        if std::mem::take(&mut self.window_clock) {
            // The next window starts where this run began on Dataverse's
            // clock, when it is behind ours (within an hour).
            if let Some(t) = crate::http::server_date_ms(&r.headers)
                .and_then(DateTime::<Utc>::from_timestamp_millis)
            {
                if t < self.started && (self.started - t).num_seconds() <= 3_600 {
                    self.started = t;
                    self.watermark = Some(format!("modified:{}", fmt_ts(t)));
                }
            }
        }
        let page = self.api.page(&url, &r.body)?;
        let now = Utc::now();
        let mut records = Vec::with_capacity(page.value.len());
        for raw in page.value {
            records.push(self.record(&url, raw.get(), now)?);
        }
        self.next = match (&page.next, &page.delta) {
            (Some(n), _) => {
                self.cursors.follow("Dataverse's @odata.nextLink", n)?;
                Some(Url::parse(n).map_err(|e| CrmError::bad_response(e.to_string()))?)
            }
            (None, Some(d)) => {
                let u = Url::parse(d).map_err(|e| CrmError::bad_response(e.to_string()))?;
                let token = u
                    .query_pairs()
                    .find(|(k, _)| k == "$deltatoken")
                    .map(|(_, v)| v.into_owned())
                    .ok_or_else(|| {
                        CrmError::bad_response(format!(
                            "Dataverse's delta link for table {} has no $deltatoken",
                            self.table.logical
                        ))
                    })?;
                self.watermark = Some(format!("delta:{token}"));
                None
            }
            (None, None) => {
                if self.tracked && self.watermark.is_none() {
                    // Asked for changes but none promised: the table lost
                    // change tracking; windows of modifiedon from now on.
                    self.warnings.push(format!(
                        "Dataverse gave no delta link for table {}: change tracking looks off; later runs read windows of modifiedon",
                        self.table.logical
                    ));
                    self.watermark = Some(format!("modified:{}", fmt_ts(self.started)));
                }
                None
            }
        };
        Ok(Some(Page {
            records,
            total: None,
        }))
    }

    fn record(&self, url: &Url, raw: &str, now: DateTime<Utc>) -> Result<Record> {
        let bad = |why: &str| {
            CrmError::bad_response(format!("a row of table {} {why}", self.table.logical))
                .with_endpoint(format!("GET {}", url.path()))
        };
        let fields: Map<String, Value> =
            serde_json::from_str(raw).map_err(|e| bad(&format!("is not a JSON object ({e})")))?;
        let deleted = fields
            .get("@odata.context")
            .and_then(Value::as_str)
            .is_some_and(|c| c.ends_with("$deletedEntity"));
        if deleted {
            // Only the id of a deleted row is known, not when.
            let id = fields
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("deleted has no id"))?
                .to_owned();
            return Ok(Record {
                id,
                updated_at: None,
                deleted_at: Some(now),
                fields: Map::new(),
                raw: String::new(),
                merged_ids: Vec::new(),
                deletion_only: true,
                unparsed: 0,
            });
        }
        let id = fields
            .get(&self.table.key)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("has no {}", self.table.key)))?
            .to_owned();
        let updated_at = fields
            .get("modifiedon")
            .and_then(Value::as_str)
            .and_then(parse_datetime);
        Ok(Record {
            id,
            updated_at,
            deleted_at: None,
            fields,
            raw: raw.to_owned(),
            merged_ids: Vec::new(),
            deletion_only: false,
            unparsed: 0,
        })
    }
}

impl PageSource for Reader<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(self.read())
    }

    fn watermark(&self) -> Option<String> {
        self.watermark.clone()
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    fn checkpoint(&self) -> Option<String> {
        let next = self.next.as_ref()?;
        serde_json::to_string(&Position {
            next: next.to_string(),
            select: self.select.clone(),
            watermark: self.watermark.clone(),
            track: self.link_tracked,
            warnings: self.warnings.clone(),
            reconcile: self.reconcile.clone(),
        })
        .ok()
    }

    fn reconcile_needed(&self) -> Option<String> {
        self.reconcile.clone()
    }
}
