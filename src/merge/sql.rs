//! What the merge steps share in the SQL they build.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};

/// Rows per page: every step reads in pages of this many, each in its own
/// SPI connection, so memory stays flat however large the model.
pub const FETCH: i64 = 5_000;

/// Read `sql` through a cursor, [`FETCH`] rows at a time, each page in its
/// own SPI connection (its memory is given back after it), handing `each`
/// the connection, the page and whether it is the last (checking for
/// interrupts between pages); `each` returns whether to go on.
pub fn each_page(
    sql: &str,
    args: &[DatumWithOid<'_>],
    mut each: impl FnMut(&mut SpiClient<'_>, SpiTupleTable<'_>, bool) -> bool,
) {
    let mut cursor: Option<String> = None;
    loop {
        let more = Spi::connect_mut(|c| {
            let mut cur = match &cursor {
                None => c.open_cursor(sql, args),
                Some(name) => c.find_cursor(name).expect("find the merge's cursor"),
            };
            let page = cur
                .fetch(FETCH)
                .expect("read a page through the merge's cursor");
            let more = page.len() as i64 == FETCH;
            let more = each(c, page, !more) && more;
            cursor = more.then(|| cur.detach_into_name());
            more
        });
        pgrx::check_for_interrupts!();
        if !more {
            break;
        }
    }
}

/// The streams `t` that feed the entity `$1`: each with its source `s`, its
/// enabled mappings into the entity `m` and their unified fields `f`. What
/// staging reads and what pruning keeps are these same streams.
pub const MAPPED_STREAMS: &str = "crm_sync.streams t
               JOIN crm_sync.sources s ON s.name = t.source
               JOIN crm_sync.mappings m ON m.provider = s.provider AND m.object = t.object
                                       AND m.entity = $1 AND m.enabled
                                       AND (m.source IS NULL OR m.source = t.source)
               JOIN crm_sync.unified_fields f ON f.entity = m.entity AND f.field = m.field";

/// The unified id of record `k` of `crm_sync.source_records`, given its
/// row `ku` of `crm_sync.unified_ids` (LEFT JOINed: most records have none,
/// being their row's own).
pub const UNIFIED_OF_K: &str = "coalesce(ku.unified_id, k.record_id)";

/// `crm_sync.unified_ids ku` joined to the record `k` whose unified id
/// [`UNIFIED_OF_K`] gives.
pub const JOIN_KU: &str =
    "LEFT JOIN crm_sync.unified_ids ku ON ku.entity = k.entity AND ku.record_id = k.record_id";

/// The records `k` of the `target` entity with CRM id `external_id` in
/// `source`, one per stream of the source staged into the target entity
/// (`ms`, its `merge_state` rows), each found by its id through the primary
/// key. The arguments are SQL expressions.
pub fn records_by_external_id(target: &str, source: &str, external_id: &str) -> String {
    format!(
        "crm_sync.merge_state ms
         JOIN crm_sync.source_records k
           ON k.entity = {target}
          AND k.record_id = crm_sync.source_record_id({target}, ms.source, ms.stream, {external_id})
          AND k.source = ms.source AND k.stream = ms.stream AND k.external_id = {external_id}
         {JOIN_KU}
        WHERE ms.entity = {target} AND ms.source = {source}"
    )
}

/// The unified id of the `target` entity's record a reference names: the
/// record with that external id in the same source (of its first stream, by
/// name). The arguments are SQL expressions.
pub fn target_of(target: &str, source: &str, external_id: &str) -> String {
    format!(
        "(SELECT {UNIFIED_OF_K} FROM {} ORDER BY k.stream LIMIT 1)",
        records_by_external_id(target, source, external_id)
    )
}

/// `s` quoted as an identifier (always, unlike `quote_ident`).
pub fn qi(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
