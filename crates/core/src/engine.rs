//! The sync loop: pull pages from a connector's [`PageSource`], de-duplicate
//! them into batches, and hand each batch to a [`Sink`] in one call. The
//! engine owns batching and interrupt checks; the connector owns paging and
//! the cursor (its contract is [`crate::source`]); the sink (SPI in the
//! extension) owns writing. The watermark is returned to the caller, which
//! stores it in the same transaction as the rows.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::runtime::{block_on_interruptible, kick};
use crate::source::{BoxFuture, Page, PageSource, Record};

/// Counts a sink reports for one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows inserted or changed (unchanged rows are not rewritten or counted).
    pub upserted: u64,
    /// Rows newly marked deleted.
    pub deleted: u64,
    /// Records written that changed nothing (read again as they were):
    /// set by the engine, from the batch size and the two counts above.
    pub unchanged: u64,
    /// Values that did not fit their column (kept in `_raw`).
    pub warnings: u64,
    /// Rows of other records newly marked deleted because the CRM merged
    /// them into records of the batch ([`Record::merged_ids`]); counted in
    /// `deleted` too.
    pub merged: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: Self) {
        self.upserted += o.upserted;
        self.deleted += o.deleted;
        self.merged += o.merged;
        self.unchanged += o.unchanged;
        self.warnings += o.warnings;
    }
}

/// Writes batches. A batch never holds two records with the same id.
pub trait Sink {
    fn write(&mut self, batch: &[Record]) -> Result<WriteStats>;
    /// Stop writing the columns of these fields (see
    /// [`PageSource::dropped_fields`]).
    fn forget_fields(&mut self, _fields: &[String]) {}
    /// Every record up to `position` has been written. A sink that commits
    /// in steps (a background sync) stores the position with the rows, so a
    /// run that dies later resumes from here.
    fn checkpoint(&mut self, _position: &str, _so_far: &Outcome) -> Result<()> {
        Ok(())
    }
}

/// What one stream's run did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub stats: WriteStats,
    pub records_received: u64,
    pub pages: u64,
    pub watermark: Option<String>,
    /// The reader's warnings ([`PageSource::warnings`]).
    pub warnings: Vec<String>,
    /// Records the run's first query matches, when the CRM says (for
    /// progress; HubSpot search `total`, Salesforce `totalSize`).
    pub total: Option<u64>,
    /// [`PageSource::reconcile_needed`] at the end of the run.
    pub reconcile_needed: Option<String>,
    /// [`PageSource::deletes_covered`] at the end of the run (epoch ms).
    pub deletes_covered: Option<i64>,
}

/// Most field values a batch holds before it is written, whatever
/// `batch_size` says: a record costs memory by its fields (parsed, coerced,
/// then copied into Postgres arrays; about 400 bytes a value), so 5,000
/// records of 65 fields (Zoho contacts) held 130 MiB where 5,000 of 19
/// (HubSpot's) hold 40. 200,000 values keep the default 5,000 records for
/// up to 40 fields, and write wider records in smaller batches.
pub const MAX_BATCH_VALUES: usize = 200_000;

/// A page of at least this many records is written before its batch is
/// full when the next page has not arrived yet (the landing writes up to
/// 1,000 a statement).
pub const EARLY_WRITE: usize = 1_000;

/// Pull every page from `source` and write it to `sink` in batches of about
/// `batch_size` records (fewer for wide records: [`MAX_BATCH_VALUES`]). `check` is called between pages and at least every
/// 100 ms while waiting on the network; it may unwind to abort the run.
pub fn run(
    source: &mut dyn PageSource,
    sink: &mut dyn Sink,
    batch_size: usize,
    check: &mut dyn FnMut(),
) -> Result<Outcome> {
    run_with_progress(source, sink, batch_size, check, &mut |_| {})
}

/// As [`run`], calling `progress` after every page with the counts so far.
pub fn run_with_progress(
    source: &mut dyn PageSource,
    sink: &mut dyn Sink,
    batch_size: usize,
    check: &mut dyn FnMut(),
    progress: &mut dyn FnMut(&Outcome),
) -> Result<Outcome> {
    let batch_size = batch_size.max(1);
    let mut out = Outcome::default();
    let mut batch = Batch::default();
    type Next<'a> = BoxFuture<'a, Result<Option<Page>>>;
    let mut next: Option<Next<'_>> = Some(source.next_page());
    let mut ready: Option<Result<Option<Page>>> = None;
    let mut dropped_count = 0;
    // Records written since the last checkpoint.
    let mut unsaved = 0usize;
    // Pages read since the CRM first reported a total.
    let mut pages_since_total = 0u64;
    loop {
        let page = match (ready.take(), next.as_mut()) {
            (Some(r), _) => r,
            (None, Some(f)) => block_on_interruptible(f.as_mut(), check),
            (None, None) => unreachable!("a page is always requested or ready"),
        };
        next = None;
        let Some(page) = page? else { break };
        // The reader has no request in flight: where it stands now is just
        // after this page.
        let position = source.checkpoint();
        out.pages += 1;
        out.records_received += page.records.len() as u64;
        // The first total a run sees covers the run's main query.
        if out.total.is_none() {
            out.total = page.total;
        }
        if let Some(t) = out.total {
            pages_since_total += 1;
            if pages_since_total > crate::paging::page_bound(t) {
                return Err(crate::error::CrmError::bad_response(format!(
                    "the CRM reported {t} matching records, but its pages went on past {pages_since_total}; stopping instead of paging forever"
                ))
                .with_hint("The API or something in between is looping; run the sync again later."));
            }
        }
        // No request is in flight here: ask whether the reader dropped a
        // field (the CRM deleted it). Records read before hold its values:
        // write them first, then stop writing that column.
        let now_dropped = source.dropped_fields();
        if now_dropped.len() != dropped_count {
            if !batch.records.is_empty() {
                check();
                out.stats += write(sink, &batch.records)?;
                batch.clear();
            }
            sink.forget_fields(&now_dropped);
            dropped_count = now_dropped.len();
        }
        let page_len = page.records.len();
        for r in page.records {
            batch.push(r);
        }
        // Ask for the following page now: the CRM prepares it while this
        // thread writes to Postgres.
        let mut f: Next<'_> = source.next_page();
        ready = kick(f.as_mut());
        next = Some(f);
        let full = batch.records.len() >= batch_size || batch.values >= MAX_BATCH_VALUES;
        // A large page read and the next not here yet: write what is held
        // meanwhile, so that the CRM prepares that page while this thread
        // writes rather than while it waits (two pages of three waited for
        // it with Salesforce's 2,000-record pages and 5,000-record
        // batches). Small pages (HubSpot's 100) come too fast for a write
        // to be worth its statements: they wait for the batch. A record
        // met again in a later write is upserted over, as across batches.
        let early = ready.is_none() && page_len >= EARLY_WRITE;
        if full || early {
            check();
            out.stats += write(sink, &batch.records)?;
            unsaved += batch.records.len();
            batch.clear();
            // Every record up to this page's end is written; the position
            // is kept (a background sync commits) every batch_size records.
            if full || unsaved >= batch_size {
                if let Some(p) = &position {
                    sink.checkpoint(p, &out)?;
                }
                unsaved = 0;
            }
        }
        progress(&out);
    }
    drop(next);
    if !batch.records.is_empty() {
        check();
        out.stats += write(sink, &batch.records)?;
    }
    out.watermark = source.watermark();
    out.warnings = source.warnings();
    out.reconcile_needed = source.reconcile_needed();
    out.deletes_covered = source.deletes_covered().map(|t| t.timestamp_millis());
    Ok(out)
}

/// Write one batch; what it did not insert, change or delete was unchanged.
fn write(sink: &mut dyn Sink, batch: &[Record]) -> Result<WriteStats> {
    let mut stats = sink.write(batch)?;
    let written = stats.upserted + stats.deleted - stats.merged.min(stats.deleted);
    stats.unchanged = (batch.len() as u64).saturating_sub(written);
    Ok(stats)
}

/// Records keyed by id; a later or newer version replaces an older one.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    index: HashMap<String, usize>,
    /// Field values held (a replaced version's stay counted: a bound).
    values: usize,
}

impl Batch {
    fn push(&mut self, r: Record) {
        self.values += r.width();
        match self.index.get(&r.id) {
            Some(&i) => {
                let old = &mut self.records[i];
                match (old.deletion_only, r.deletion_only) {
                    // A deletion known by id only ends the record when it is
                    // newer than the version read; the values stay.
                    (false, true) => {
                        if deletes(r.deleted_at, old.updated_at) {
                            old.deleted_at = old.deleted_at.or(r.deleted_at);
                        }
                    }
                    (true, false) => {
                        let at = old.deleted_at;
                        *old = r;
                        if deletes(at, old.updated_at) {
                            old.deleted_at = old.deleted_at.or(at);
                        }
                    }
                    _ => {
                        let older =
                            matches!((old.updated_at, r.updated_at), (Some(a), Some(b)) if b < a);
                        if !older || r.deleted_at.is_some() {
                            *old = r;
                        }
                    }
                }
            }
            None => {
                self.index.insert(r.id.clone(), self.records.len());
                self.records.push(r);
            }
        }
    }

    fn clear(&mut self) {
        self.records.clear();
        self.index.clear();
        self.values = 0;
    }
}

/// A deletion at `deleted` ends a version modified before it or in the
/// same instant (Salesforce stamps whole seconds: a record changed and
/// deleted within one second is deleted); one modified later was restored
/// since. A wrong guess is mended by reconciliation, which reads again
/// what the CRM has but landed deleted.
fn deletes(deleted: Option<DateTime<Utc>>, updated: Option<DateTime<Utc>>) -> bool {
    match (deleted, updated) {
        (Some(d), Some(u)) => u <= d,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CrmError;
    use chrono::DateTime;

    fn rec(id: &str, ts: i64) -> Record {
        Record {
            id: id.into(),
            updated_at: DateTime::from_timestamp_millis(ts),
            deleted_at: None,
            fields: Default::default(),
            raw: format!("{{\"id\":\"{id}\",\"ts\":{ts}}}"),
            merged_ids: Vec::new(),
            deletion_only: false,
            unparsed: 0,
        }
    }

    struct Pages(Vec<Result<Vec<Record>>>);
    impl PageSource for Pages {
        fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
            let next = if self.0.is_empty() {
                Ok(None)
            } else {
                self.0.remove(0).map(|records| {
                    Some(Page {
                        records,
                        total: None,
                    })
                })
            };
            Box::pin(async move { next })
        }
        fn watermark(&self) -> Option<String> {
            Some("w".into())
        }
    }

    #[derive(Default)]
    struct MemSink(Vec<Vec<Record>>);
    impl Sink for MemSink {
        fn write(&mut self, batch: &[Record]) -> Result<WriteStats> {
            self.0.push(batch.to_vec());
            Ok(WriteStats {
                upserted: batch.len() as u64,
                ..Default::default()
            })
        }
    }

    #[test]
    fn batches_dedupe_by_id_and_keep_the_newest() {
        let mut src = Pages(vec![
            Ok(vec![rec("1", 10), rec("2", 10)]),
            Ok(vec![rec("1", 20), rec("2", 5), rec("3", 1)]),
        ]);
        let mut sink = MemSink::default();
        let out = run(&mut src, &mut sink, 100, &mut || {}).unwrap();
        assert_eq!(sink.0.len(), 1);
        let b = &sink.0[0];
        assert_eq!(
            b.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["1", "2", "3"]
        );
        assert_eq!(b[0].updated_at, DateTime::from_timestamp_millis(20));
        assert_eq!(b[1].updated_at, DateTime::from_timestamp_millis(10));
        assert_eq!(out.records_received, 5);
        assert_eq!(out.stats.upserted, 3);
        assert_eq!(out.watermark.as_deref(), Some("w"));
    }

    #[test]
    fn a_deletion_known_by_id_ends_only_older_versions() {
        let gone = |id: &str, ts: i64| Record {
            deleted_at: DateTime::from_timestamp_millis(ts),
            raw: String::new(),
            deletion_only: true,
            unparsed: 0,
            ..rec(id, 0)
        };
        let mut src = Pages(vec![
            Ok(vec![rec("1", 10), rec("2", 30)]),
            Ok(vec![gone("1", 20), gone("2", 20), gone("3", 20)]),
        ]);
        let mut sink = MemSink::default();
        run(&mut src, &mut sink, 100, &mut || {}).unwrap();
        let b = &sink.0[0];
        // Deleted after it was read: ends with its values.
        assert!(!b[0].deletion_only && b[0].deleted_at.is_some() && !b[0].raw.is_empty());
        // Restored after the deletion: stays live.
        assert!(!b[1].deletion_only && b[1].deleted_at.is_none());
        // Never read: the deletion alone.
        assert!(b[2].deletion_only);
    }

    #[test]
    fn progress_is_reported_after_every_page() {
        let pages = (0..3)
            .map(|p| Ok((0..10).map(|i| rec(&format!("{p}-{i}"), 1)).collect()))
            .collect();
        let mut seen = vec![];
        run_with_progress(
            &mut Pages(pages),
            &mut MemSink::default(),
            15,
            &mut || {},
            &mut |o| seen.push((o.pages, o.records_received, o.stats.upserted)),
        )
        .unwrap();
        assert_eq!(seen, [(1, 10, 0), (2, 20, 20), (3, 30, 20)]);
    }

    /// Reports the first record of every batch as changed, the second as
    /// deleted, the rest as unchanged.
    struct ChangesTwo;
    impl Sink for ChangesTwo {
        fn write(&mut self, batch: &[Record]) -> Result<WriteStats> {
            Ok(WriteStats {
                upserted: batch.len().min(1) as u64,
                deleted: batch.len().saturating_sub(1).min(1) as u64,
                ..Default::default()
            })
        }
    }

    #[test]
    fn records_written_but_not_changed_are_counted_as_unchanged() {
        // 25 records, one of them twice (read once per page it moved to).
        let pages = vec![
            Ok((0..10).map(|i| rec(&i.to_string(), 1)).collect()),
            Ok((9..25).map(|i| rec(&i.to_string(), 2)).collect()),
        ];
        let out = run(&mut Pages(pages), &mut ChangesTwo, 10, &mut || {}).unwrap();
        assert_eq!(out.records_received, 26);
        // Batches of 10 and 16: record 9 is written twice, once per batch.
        assert_eq!(out.stats.upserted, 2);
        assert_eq!(out.stats.deleted, 2);
        assert_eq!(out.stats.unchanged, 8 + 14);
    }

    /// Pages that each take a moment to arrive (the CRM preparing them):
    /// not there yet when asked for, as over a network.
    struct SlowPages {
        pages: Vec<Vec<Record>>,
        read: usize,
    }
    impl PageSource for SlowPages {
        fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
            let next = (!self.pages.is_empty()).then(|| self.pages.remove(0));
            self.read += next.is_some() as usize;
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(next.map(|records| Page {
                    records,
                    total: None,
                }))
            })
        }
        fn watermark(&self) -> Option<String> {
            None
        }
        fn checkpoint(&self) -> Option<String> {
            Some(format!("after page {}", self.read))
        }
    }

    /// Writes and checkpoints, in order.
    #[derive(Default)]
    struct Log(Vec<String>);
    impl Sink for Log {
        fn write(&mut self, batch: &[Record]) -> Result<WriteStats> {
            self.0.push(format!("write {}", batch.len()));
            Ok(WriteStats {
                upserted: batch.len() as u64,
                ..Default::default()
            })
        }
        fn checkpoint(&mut self, position: &str, _so_far: &Outcome) -> Result<()> {
            self.0.push(position.to_owned());
            Ok(())
        }
    }

    fn slow_pages(pages: usize, size: usize) -> SlowPages {
        SlowPages {
            pages: (0..pages)
                .map(|p| (0..size).map(|i| rec(&format!("{p}-{i}"), 1)).collect())
                .collect(),
            read: 0,
        }
    }

    #[test]
    fn pages_are_written_while_the_next_is_on_its_way_and_kept_every_batch() {
        // Pages of 2,000 with batches of 5,000 (Salesforce's REST pages):
        // each page is written as soon as it is read, while the CRM
        // prepares the next; the position is kept every 5,000 records.
        let mut log = Log::default();
        let out = run(&mut slow_pages(6, 2000), &mut log, 5000, &mut || {}).unwrap();
        assert_eq!(out.stats.upserted, 12_000);
        assert_eq!(
            log.0,
            [
                "write 2000",
                "write 2000",
                "write 2000",
                "after page 3",
                "write 2000",
                "write 2000",
                "write 2000",
                "after page 6",
            ]
        );
        // Small pages (HubSpot's 100) wait for their batch.
        let mut log = Log::default();
        run(&mut slow_pages(60, 100), &mut log, 5000, &mut || {}).unwrap();
        assert_eq!(log.0, ["write 5000", "after page 50", "write 1000"]);
    }

    /// The size of each batch written when `pages` are read with `batch_size`.
    fn batch_lengths(pages: Vec<Result<Vec<Record>>>, batch_size: usize) -> Vec<usize> {
        let mut sink = MemSink::default();
        run(&mut Pages(pages), &mut sink, batch_size, &mut || {}).unwrap();
        sink.0.iter().map(Vec::len).collect()
    }

    #[test]
    fn batch_size_bounds_each_write() {
        let pages = (0..10)
            .map(|p| Ok((0..30).map(|i| rec(&format!("{p}-{i}"), 1)).collect()))
            .collect();
        assert_eq!(batch_lengths(pages, 100), [120, 120, 60]);
    }

    #[test]
    fn wide_records_are_written_in_smaller_batches() {
        let wide = |id: String| {
            let mut r = rec(&id, 1);
            r.fields = (0..100)
                .map(|f| (format!("f{f}"), serde_json::Value::from(f)))
                .collect();
            r
        };
        // Pages of 500 records of 100 fields: 200,000 values every 4 pages.
        let pages = (0..10)
            .map(|p| Ok((0..500).map(|i| wide(format!("{p}-{i}"))).collect()))
            .collect();
        assert_eq!(batch_lengths(pages, 5_000), [2_000, 2_000, 1_000]);
    }

    /// Drops field "F" while its last page is fetched.
    struct DropsAfterFirst(Pages, bool);
    impl PageSource for DropsAfterFirst {
        fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
            if self.0 .0.len() < 2 {
                self.1 = true;
            }
            self.0.next_page()
        }
        fn watermark(&self) -> Option<String> {
            None
        }
        fn dropped_fields(&self) -> Vec<String> {
            if self.1 {
                vec!["F".into()]
            } else {
                vec![]
            }
        }
    }

    #[derive(Default)]
    struct LogSink(Vec<String>);
    impl Sink for LogSink {
        fn write(&mut self, batch: &[Record]) -> Result<WriteStats> {
            let ids: Vec<&str> = batch.iter().map(|r| r.id.as_str()).collect();
            self.0.push(format!("write {}", ids.join(",")));
            Ok(WriteStats::default())
        }
        fn forget_fields(&mut self, fields: &[String]) {
            self.0.push(format!("forget {}", fields.join(",")));
        }
    }

    #[test]
    fn records_read_before_a_field_is_dropped_are_written_with_it() {
        let mut src = DropsAfterFirst(
            Pages(vec![
                Ok(vec![rec("1", 1)]),
                Ok(vec![rec("2", 2)]),
                Ok(vec![rec("3", 3)]),
            ]),
            false,
        );
        let mut sink = LogSink::default();
        run(&mut src, &mut sink, 100, &mut || {}).unwrap();
        assert_eq!(sink.0, ["write 1,2", "forget F", "write 3"]);
    }

    /// Pages of one record each that never end, claiming a total of 3.
    struct Endless(u64);
    impl PageSource for Endless {
        fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
            self.0 += 1;
            let page = Page {
                records: vec![rec(&self.0.to_string(), 1)],
                total: Some(3),
            };
            Box::pin(async move { Ok(Some(page)) })
        }
        fn watermark(&self) -> Option<String> {
            None
        }
    }

    #[test]
    fn pages_past_what_the_total_allows_stop_the_run() {
        let mut src = Endless(0);
        let e = run(&mut src, &mut MemSink::default(), 10, &mut || {}).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::BadResponse);
        assert!(
            e.message.contains("reported 3 matching records"),
            "{}",
            e.message
        );
        // Stopped at the bound (2 x 3 + 100), not long after.
        assert!(src.0 <= crate::paging::page_bound(3) + 2, "{}", src.0);
    }

    #[test]
    fn an_error_stops_before_the_unwritten_batch() {
        let mut src = Pages(vec![
            Ok(vec![rec("1", 1)]),
            Err(CrmError::bad_response("truncated")),
        ]);
        let mut sink = MemSink::default();
        let e = run(&mut src, &mut sink, 100, &mut || {}).unwrap_err();
        assert_eq!(e.message, "truncated");
        assert!(
            sink.0.is_empty(),
            "nothing is written when the run fails before a batch fills"
        );
    }
}
