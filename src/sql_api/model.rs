//! `crm_sync.merge()`: the unified model merged by hand.

use pgrx::datum::Interval;
use pgrx::prelude::*;

/// Merge what changed since the last merge (or everything, `full`) into the
/// unified model; one row per entity.
#[pg_extern(security_definer)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
pub fn merge(
    full: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(entity, String),
        name!(records_changed, i64),
        name!(invalid_values, i64),
        name!(unified_rows_changed, i64),
        name!(ids_merged, i64),
        name!(duration, Interval),
    ),
> {
    let rows = crate::merge::run(None, full);
    TableIterator::new(rows.into_iter().map(|r| {
        (
            r.entity.to_owned(),
            r.changed,
            r.invalid,
            r.unified,
            r.merged,
            Interval::from_micros(r.micros),
        )
    }))
}
