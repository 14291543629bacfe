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

use super::api::{
    add_associations, join_properties, last_modified_property, read_properties, split_for_url,
    HubSpot, SEARCH_PAGE_LIMIT,
};
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
    /// Properties beyond what a list URL holds: read for each list page
    /// with a batch read (the request body has no such limit).
    extra_properties: Vec<String>,
    /// Association types read with each record (empty: none).
    associations: &'static [&'static str],
    phase: Phase,
    full: bool,
    track_deletes: bool,
    lookback_ms: i64,
    /// Highest modification time known complete: the watermark to store.
    watermark_ms: Option<i64>,
    /// The upper bound of this run's search window (epoch ms): the time the
    /// first search began. Changes after it are the next run's; results
    /// beyond it never move the cursor or the watermark.
    until_ms: Option<i64>,
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
        // The properties the reader itself needs first: a list URL always
        // carries them.
        let (props, required) = read_properties(object, properties);
        let (list_props, extra_properties) = split_for_url(&props, required);
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
            properties_csv: list_props.join(","),
            extra_properties,
            properties: props,
            associations: api.associations_for(object),
            phase,
            full,
            track_deletes,
            lookback_ms,
            watermark_ms,
            until_ms: None,
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

    /// The search window's upper bound, fixed when the first search of the
    /// run is made.
    fn until(&mut self) -> i64 {
        *self
            .until_ms
            .get_or_insert_with(|| Utc::now().timestamp_millis())
    }

    /// Move the watermark to the newest of `recs` inside the window (a
    /// result dated after it, as search sometimes returns, does not count).
    fn saw(&mut self, recs: &[Record]) {
        let until = self.until_ms.unwrap_or(i64::MAX);
        let newest = recs
            .iter()
            .filter_map(|r| self.ts_ms(r))
            .filter(|t| *t <= until)
            .max();
        if let Some(m) = newest {
            self.watermark_ms = Some(self.watermark_ms.map_or(m, |w| w.max(m)));
        }
    }

    /// The window was read to its end: every change indexed up to its upper
    /// bound has been returned, so the watermark moves to it (never back).
    fn window_done(&mut self) {
        if let Some(u) = self.until_ms {
            self.watermark_ms = Some(self.watermark_ms.map_or(u, |w| w.max(u)));
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

    fn range_filters(&mut self, from_ms: i64, inclusive: bool) -> Vec<Value> {
        let until = self.until();
        vec![
            json!({"propertyName": self.cursor_prop, "operator": if inclusive {"GTE"} else {"GT"}, "value": from_ms.to_string()}),
            json!({"propertyName": self.cursor_prop, "operator": "LTE", "value": until.to_string()}),
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
                let (mut records, next, resp) = self
                    .api
                    .list_page(
                        &self.object,
                        &self.properties_csv,
                        self.associations,
                        after.as_deref(),
                        false,
                    )
                    .await?;
                self.read_extra(&mut records, false).await?;
                if !self.associations.is_empty() {
                    self.api
                        .complete_associations(&self.object, &mut records)
                        .await?;
                }
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
                let (mut records, next, _) = self
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
                self.read_extra(&mut records, true).await?;
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
                let until = self.until();
                let (mut records, total) = self
                    .api
                    .search_page(&self.object, &self.properties, filters, self.cursor_prop)
                    .await?;
                if records.len() < SEARCH_PAGE_LIMIT as usize {
                    add_associations(self.api, &self.object, self.associations, &mut records)
                        .await?;
                    self.phase = self.after_search();
                    self.saw(&records);
                    self.window_done();
                    return Ok(Some(Page { records, total }));
                }
                let stamps: Vec<Option<i64>> = records.iter().map(|r| self.ts_ms(r)).collect();
                let Some(kept) = in_order(&stamps, from_ms, inclusive, until) else {
                    return Err(CrmError::bad_response(format!(
                        "search results are not sorted by {} as requested, or lack it",
                        self.cursor_prop
                    )));
                };
                let first = stamps[kept[0]].unwrap_or_default();
                // The page's last result has nothing after it to vouch for
                // its time: the next query starts at the one before it
                // (read again, at worst), unless it is the only one in order.
                let anchor = match kept.as_slice() {
                    [.., before, end] if *end == stamps.len() - 1 => *before,
                    [.., end] => *end,
                    [] => unreachable!("in_order keeps at least one"),
                };
                let last = stamps[anchor].unwrap_or_default();
                let next = if first == last {
                    // A whole page in one timestamp (out-of-order results
                    // aside): read that tie by id.
                    Phase::Tie {
                        ts_ms: last,
                        after_id: None,
                    }
                } else {
                    // The page may have cut the tie at `last`: keep what is
                    // strictly before it, and start the next query at it.
                    // Results out of order (dated after their place in the
                    // sort, or after the window) are kept, as read: they
                    // never move the cursor, and the records between are
                    // read by the next query.
                    let mut i = 0;
                    records.retain(|_| {
                        let keep = !kept.contains(&i) || stamps[i].is_some_and(|t| t < last);
                        i += 1;
                        keep
                    });
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

    /// A wide portal's list page: read the properties its URL could not
    /// carry with a batch read of the same ids, and join them in (records
    /// gone in between are left for the next run).
    async fn read_extra(&self, records: &mut Vec<Record>, archived: bool) -> Result<()> {
        if self.extra_properties.is_empty() || records.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let extra = self
            .api
            .batch_read_in(&self.object, &self.extra_properties, &ids, archived)
            .await?;
        join_properties(records, extra)
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

/// Which results of a full search page mark where the sort stands: walking
/// back from the last, each result dated no later than every result after
/// it and inside the window `[from, until]`. A result dated after its
/// place in the sort (HubSpot's search returns a record changed since it
/// was indexed with its new time, estuary/connectors#2210 and #4595) is left
/// out, so it cannot make the next query skip what lies between. None when
/// no result qualifies (or one lacks its time): the page is not sorted as
/// asked. Indexes in ascending order.
fn in_order(stamps: &[Option<i64>], from: i64, inclusive: bool, until: i64) -> Option<Vec<usize>> {
    let mut kept = Vec::new();
    let mut bound = until;
    for (i, t) in stamps.iter().enumerate().rev() {
        let t = (*t)?;
        let after_from = if inclusive { t >= from } else { t > from };
        if t <= bound && after_from {
            kept.push(i);
            bound = t;
        }
    }
    kept.reverse();
    (!kept.is_empty()).then_some(kept)
}

#[cfg(test)]
mod tests {
    use super::in_order;

    #[test]
    fn results_dated_after_their_place_do_not_mark_the_page_end() {
        // Sorted, with a spike in the middle and one past the window at the end.
        let s = [
            Some(10),
            Some(11),
            Some(500),
            Some(12),
            Some(13),
            Some(9_999),
        ];
        assert_eq!(in_order(&s, 10, true, 1_000), Some(vec![0, 1, 3, 4]));
        // The end is the last result in order inside the window.
        let s = [Some(10), Some(20), Some(30)];
        assert_eq!(in_order(&s, 10, true, 1_000), Some(vec![0, 1, 2]));
        // Ties are in order; a strict lower bound leaves `from` out.
        let s = [Some(10), Some(10), Some(11)];
        assert_eq!(in_order(&s, 10, false, 100), Some(vec![2]));
        assert_eq!(in_order(&s, 10, true, 100), Some(vec![0, 1, 2]));
    }

    #[test]
    fn a_page_with_nothing_in_order_or_a_missing_time_is_refused() {
        assert_eq!(in_order(&[Some(5_000), Some(6_000)], 10, true, 1_000), None);
        assert_eq!(in_order(&[Some(10), None], 10, true, 1_000), None);
        assert_eq!(in_order(&[Some(3), Some(4)], 10, true, 1_000), None);
    }
}
