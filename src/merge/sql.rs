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

/// One row of the page a cursor fetched last, its columns deformed once
/// (pgrx's `get` finds each column from the start of the tuple again, and
/// checks its type, at every call: staging read 200,000 HubSpot contacts
/// in 0.99-1.75 s through it, 0.75-1.09 s this way).
pub struct Deformed {
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
}

impl Deformed {
    fn datum(&self, i: usize) -> Option<pg_sys::Datum> {
        (!self.nulls[i]).then(|| self.values[i])
    }

    /// Column `i` (from 0), of type text.
    pub fn text(&self, i: usize) -> Option<String> {
        // SAFETY: a datum of the fetched tuple, not null, of type text
        // ([`each_row`] checked the page's column types).
        self.datum(i)
            .and_then(|d| unsafe { String::from_polymorphic_datum(d, false, pg_sys::TEXTOID) })
    }

    /// Column `i`, of type bigint.
    pub fn int8(&self, i: usize) -> Option<i64> {
        self.datum(i).map(|d| d.value() as i64)
    }

    /// Column `i`, of type boolean.
    pub fn boolean(&self, i: usize) -> Option<bool> {
        self.datum(i).map(|d| d.value() != 0)
    }

    /// Column `i`, of type jsonb, as an object's values: those of an object
    /// of strings read from its bytes (in a UTF-8 database), any other
    /// through `jsonb_out` and serde (not an object, or not JSON serde
    /// reads: no values).
    pub fn jsonb_object(&self, i: usize) -> serde_json::Map<String, serde_json::Value> {
        let Some(d) = self.datum(i) else {
            return serde_json::Map::new();
        };
        // SAFETY: a datum of the fetched tuple, not null, of type jsonb
        // (checked by `each_row`); detoasted (a copy, if it was compressed
        // or out of line, in the page's memory) and read as bytes while the
        // page lives.
        let pairs = crate::landing::utf8_database()
            .then(|| unsafe {
                let v = pg_sys::pg_detoast_datum_packed(d.cast_mut_ptr());
                crm_sync_core::jsonb::string_object(pgrx::varlena::varlena_to_byte_slice(v)).map(
                    |p| {
                        p.into_iter()
                            .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
                            .collect()
                    },
                )
            })
            .flatten();
        pairs.unwrap_or_else(|| {
            // SAFETY: jsonb's output function on a jsonb datum gives a
            // palloc'd C string (in the page's memory).
            let text = unsafe {
                let out = pg_sys::OidOutputFunctionCall(pg_sys::Oid::from(pg_sys::F_JSONB_OUT), d);
                std::ffi::CStr::from_ptr(out)
                    .to_str()
                    .expect("the merge's cleaned values are UTF-8")
                    .to_owned()
            };
            match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            }
        })
    }

    /// Column `i`, of type timestamptz.
    pub fn timestamptz(&self, i: usize) -> Option<TimestampWithTimeZone> {
        // SAFETY: as in `text`, a timestamptz (passed by value).
        self.datum(i).and_then(|d| unsafe {
            TimestampWithTimeZone::from_polymorphic_datum(d, false, pg_sys::TIMESTAMPTZOID)
        })
    }
}

/// Hand `each` every row of the page `page` (the tuple table a cursor's
/// `fetch` just returned), each deformed once, after checking that its
/// columns have the `types` (OIDs) the caller reads them as.
pub fn each_row(page: &SpiTupleTable<'_>, types: &[pg_sys::Oid], mut each: impl FnMut(&Deformed)) {
    // SAFETY: `page` is the tuple table SPI_cursor_fetch left in
    // SPI_tuptable (no SPI call since: `page` borrows the connection), and
    // lives as long as that connection; its tuples have its descriptor.
    unsafe {
        let table = pg_sys::SPI_tuptable;
        if page.is_empty() || table.is_null() {
            return;
        }
        let desc = (*table).tupdesc;
        let natts = (*desc).natts as usize;
        let attrs = (*desc).attrs.as_slice(natts);
        assert!(
            natts == types.len() && attrs.iter().zip(types).all(|(a, t)| a.atttypid == *t),
            "the merge read columns of unexpected types"
        );
        let rows = std::slice::from_raw_parts((*table).vals, page.len());
        let mut row = Deformed {
            values: vec![pg_sys::Datum::from(0); natts],
            nulls: vec![true; natts],
        };
        for &tuple in rows {
            pg_sys::heap_deform_tuple(tuple, desc, row.values.as_mut_ptr(), row.nulls.as_mut_ptr());
            each(&row);
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
