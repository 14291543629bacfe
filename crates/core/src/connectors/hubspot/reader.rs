//! Paging through one HubSpot object for one run.
//!
//! Full run: list every live record (`after` keyset paging), then every
//! archived one, then search for what changed since the list began (by the
//! server's clock) so edits made during the list are caught in the same run.
//!
//! Incremental run: search `lastmodified >= watermark - lookback`, sorted
//! ascending, then list archived records to mark deletes.
//!
//! Associations (contacts -> companies, deals -> companies and contacts):
//! list pages ask for them with `associations=`; search returns none, so
//! each search page is followed by one v4 batch read per association type
//! for its ids, merged into the records' raw JSON in the list's shape.
//!
//! Search is paged by the sort key, never by offset: HubSpot re-evaluates the
//! result set on every request, so offsets skip records that move, and it
//! refuses offsets past 10,000. Each query starts at the last timestamp seen
//! (inclusive, so a tie cut by the page boundary is read again). When a whole
//! page shares one timestamp, that tie is read by `hs_object_id` keyset inside
//! the timestamp, then the range continues strictly after it.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::api::{add_associations, last_modified_property, HubSpot, SEARCH_PAGE_LIMIT};
use crate::error::{CrmError, Result};
use crate::http::server_date_ms;
use crate::paging::Cursors;
use crate::source::{BoxFuture, Page, PageSource, Record, SyncMode};
use crate::types::{fmt_ts, parse_datetime};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    List { after: Option<String> },
    Archived { after: Option<String> },
    Range { from_ms: i64, inclusive: bool },
    Tie { ts_ms: i64, after_id: Option<u64> },
    Done,
}

pub struct HubSpotReader<'a> {
    api: &'a HubSpot<'a>,
    object: String,
    cursor_prop: &'static str,
    properties: Vec<String>,
    properties_csv: String,
    /// Association types read with each record (empty: none).
    associations: &'static [&'static str],
    phase: Phase,
    full: bool,
    track_deletes: bool,
    lookback_ms: i64,
    /// Highest modification time known complete: the watermark to store.
    watermark_ms: Option<i64>,
    /// `after` cursors followed in the list phases.
    cursors: Cursors,
}

impl<'a> HubSpotReader<'a> {
    /// `properties` are the property names to request; the last-modified and
    /// id properties are always added.
    pub fn new(
        api: &'a HubSpot<'a>,
        object: &str,
        properties: &[String],
        mode: &SyncMode,
        lookback_ms: i64,
        track_deletes: bool,
        resume: Option<&str>,
    ) -> Result<Self> {
        let cursor_prop = last_modified_property(object);
        let mut props: Vec<String> = properties.to_vec();
        for p in [cursor_prop, "hs_object_id", "createdate"] {
            if !props.iter().any(|x| x == p) {
                props.push(p.to_owned());
            }
        }
        let (phase, watermark_ms, full) = match mode {
            SyncMode::Full => (Phase::List { after: None }, None, true),
            SyncMode::Incremental { watermark } => {
                let w = parse_datetime(watermark)
                    .ok_or_else(|| CrmError::config(format!("stored watermark {watermark:?} is not a timestamp")).with_hint("Run crm_sync.sync(source, stream, full_refresh => true) to start over."))?
                    .timestamp_millis();
                (
                    Phase::Range {
                        from_ms: w - lookback_ms,
                        inclusive: true,
                    },
                    Some(w),
                    false,
                )
            }
        };
        let mut reader = HubSpotReader {
            api,
            object: object.to_owned(),
            cursor_prop,
            properties_csv: props.join(","),
            properties: props,
            associations: api.associations_for(object),
            phase,
            full,
            track_deletes,
            lookback_ms,
            watermark_ms,
            cursors: Cursors::default(),
        };
        if let Some(saved) = resume.and_then(|s| serde_json::from_str::<Checkpoint>(s).ok()) {
            // Only a position of this same kind of run; anything else (an
            // older format, say) starts over, which is safe.
            if saved.full == full && saved.object == object {
                reader.phase = saved.phase;
                reader.watermark_ms = saved.watermark_ms;
            }
        }
        Ok(reader)
    }

    fn ts_ms(&self, r: &Record) -> Option<i64> {
        r.updated_at.map(|d| d.timestamp_millis())
    }

    fn saw(&mut self, recs: &[Record]) {
        if let Some(m) = recs.iter().filter_map(|r| self.ts_ms(r)).max() {
            self.watermark_ms = Some(self.watermark_ms.map_or(m, |w| w.max(m)));
        }
    }

    /// After the search phase: deletes (incremental) or nothing (full).
    fn after_search(&self) -> Phase {
        if !self.full && self.track_deletes {
            Phase::Archived { after: None }
        } else {
            Phase::Done
        }
    }

    fn range_filters(&self, from_ms: i64, inclusive: bool) -> Vec<Value> {
        vec![
            json!({"propertyName": self.cursor_prop, "operator": if inclusive {"GTE"} else {"GT"}, "value": from_ms.to_string()}),
        ]
    }
}

impl PageSource for HubSpotReader<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(self.step())
    }

    fn watermark(&self) -> Option<String> {
        self.watermark_ms
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .map(fmt_ts)
    }

    /// The phase holds everything needed to go on: `after` cursors of the
    /// list API (stable keyset cursors over ids) or the search range; with
    /// the watermark known so far (for a full run, the list's start time,
    /// which the catch-up search needs).
    fn checkpoint(&self) -> Option<String> {
        serde_json::to_string(&Checkpoint {
            object: self.object.clone(),
            full: self.full,
            phase: self.phase.clone(),
            watermark_ms: self.watermark_ms,
        })
        .ok()
    }
}

/// A resumable position, as stored with a background sync's batches.
#[derive(serde::Serialize, serde::Deserialize)]
struct Checkpoint {
    object: String,
    full: bool,
    #[serde(flatten)]
    phase: Phase,
    watermark_ms: Option<i64>,
}

impl HubSpotReader<'_> {
    async fn step(&mut self) -> Result<Option<Page>> {
        match self.phase.clone() {
            Phase::Done => Ok(None),
            Phase::List { after } => {
                let (records, next, resp) = self
                    .api
                    .list_page(
                        &self.object,
                        &self.properties_csv,
                        self.associations,
                        after.as_deref(),
                        false,
                    )
                    .await?;
                if after.is_none() {
                    // Edits made from now on are found by the search phase.
                    let t0 = server_date_ms(&resp.headers)
                        .unwrap_or_else(|| Utc::now().timestamp_millis());
                    self.watermark_ms = Some(t0);
                }
                if let Some(a) = &next {
                    self.cursors.follow("HubSpot's paging.next.after", a)?;
                }
                self.phase = match next {
                    Some(a) => Phase::List { after: Some(a) },
                    None if self.track_deletes => Phase::Archived { after: None },
                    None => self.catch_up(),
                };
                Ok(Some(Page {
                    records,
                    total: None,
                }))
            }
            Phase::Archived { after } => {
                let (records, next, _) = self
                    .api
                    .list_page(
                        &self.object,
                        &self.properties_csv,
                        // Deleted records supply no values, links included.
                        &[],
                        after.as_deref(),
                        true,
                    )
                    .await?;
                if let Some(a) = &next {
                    self.cursors.follow("HubSpot's paging.next.after", a)?;
                }
                self.phase = match next {
                    Some(a) => Phase::Archived { after: Some(a) },
                    None if self.full => self.catch_up(),
                    None => Phase::Done,
                };
                Ok(Some(Page {
                    records,
                    total: None,
                }))
            }
            Phase::Range { from_ms, inclusive } => {
                let filters = self.range_filters(from_ms, inclusive);
                let (mut records, total) = self
                    .api
                    .search_page(&self.object, &self.properties, filters, self.cursor_prop)
                    .await?;
                if records.len() < SEARCH_PAGE_LIMIT as usize {
                    add_associations(self.api, &self.object, self.associations, &mut records)
                        .await?;
                    self.phase = self.after_search();
                    self.saw(&records);
                    return Ok(Some(Page { records, total }));
                }
                let first = records.first().and_then(|r| self.ts_ms(r));
                let last = records.last().and_then(|r| self.ts_ms(r));
                let (Some(first), Some(last)) = (first, last) else {
                    return Err(CrmError::bad_response(format!(
                        "search results lack {}",
                        self.cursor_prop
                    )));
                };
                if last < first || first < from_ms || (!inclusive && first == from_ms) {
                    return Err(CrmError::bad_response(format!(
                        "search results are not sorted by {} as requested",
                        self.cursor_prop
                    )));
                }
                let next = if first == last {
                    // A whole page in one timestamp: read that tie by id.
                    Phase::Tie {
                        ts_ms: last,
                        after_id: None,
                    }
                } else {
                    // The page may have cut the tie at `last`: keep what is
                    // strictly before it, and start the next query at it.
                    records.retain(|r| r.updated_at.is_some_and(|d| d.timestamp_millis() < last));
                    Phase::Range {
                        from_ms: last,
                        inclusive: true,
                    }
                };
                // After the cut (what is read again is looked up then), and
                // before the phase moves on, so a failure repeats this page.
                add_associations(self.api, &self.object, self.associations, &mut records).await?;
                self.phase = next;
                self.saw(&records);
                Ok(Some(Page { records, total }))
            }
            Phase::Tie { ts_ms, after_id } => {
                let mut filters = vec![
                    json!({"propertyName": self.cursor_prop, "operator": "GTE", "value": ts_ms.to_string()}),
                    json!({"propertyName": self.cursor_prop, "operator": "LTE", "value": ts_ms.to_string()}),
                ];
                if let Some(id) = after_id {
                    filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": id.to_string()}));
                }
                let (mut records, total) = self
                    .api
                    .search_page(&self.object, &self.properties, filters, "hs_object_id")
                    .await?;
                add_associations(self.api, &self.object, self.associations, &mut records).await?;
                let last_id = records
                    .last()
                    .map(|r| r.id.parse::<u64>())
                    .transpose()
                    .map_err(|_| {
                        CrmError::bad_response("search returned a record whose id is not a number")
                    })?;
                self.phase = match last_id {
                    Some(id) if records.len() >= SEARCH_PAGE_LIMIT as usize => {
                        if after_id.is_some_and(|a| id <= a) {
                            return Err(CrmError::bad_response(
                                "search results are not sorted by hs_object_id as requested",
                            ));
                        }
                        Phase::Tie {
                            ts_ms,
                            after_id: Some(id),
                        }
                    }
                    _ => Phase::Range {
                        from_ms: ts_ms,
                        inclusive: false,
                    },
                };
                self.saw(&records);
                Ok(Some(Page { records, total }))
            }
        }
    }

    /// The search that follows a full list: everything modified since the list
    /// began, by the server's clock, minus the lookback for index lag.
    fn catch_up(&self) -> Phase {
        match self.watermark_ms {
            Some(t0) => Phase::Range {
                from_ms: t0 - self.lookback_ms,
                inclusive: true,
            },
            None => Phase::Done,
        }
    }
}
