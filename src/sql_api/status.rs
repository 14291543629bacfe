//! Helpers of the `crm_sync.status` view (sql/status.sql).

use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;

use crm_sync_core::cron;

/// A watermark as a time, or NULL if it is not one (a connector's cursor
/// is opaque; every connector today stores a time).
#[pg_extern(immutable, parallel_safe, strict, name = "_watermark_time")]
pub fn watermark_time(cursor: &str) -> Option<TimestampWithTimeZone> {
    // Postgres epoch is 2000-01-01.
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    let d = crm_sync_core::connectors::watermark_time(cursor)?;
    TimestampWithTimeZone::try_from(d.timestamp_micros() - PG_EPOCH_OFFSET_US).ok()
}

/// When a pg_cron schedule fires next after `after`, both as seconds since
/// 1970 of local times in pg_cron's time zone; `and_days` is
/// `cron.match_dom_and_dow`. NULL when it never fires or that cannot be
/// known (`@reboot`, `N seconds`, a schedule that does not parse).
#[pg_extern(immutable, parallel_safe, strict, name = "_cron_next_local")]
pub fn cron_next_local(schedule: &str, after: i64, and_days: bool) -> Option<i64> {
    cron::next_after_epoch(schedule, after, and_days)
}

/// The source and stream of each sync a cron job's command runs.
#[pg_extern(immutable, parallel_safe, strict, name = "_sync_calls")]
pub fn sync_calls(
    command: &str,
) -> TableIterator<'static, (name!(source, String), name!(stream, Option<String>))> {
    TableIterator::new(cron::sync_calls(command))
}
