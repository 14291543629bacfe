//! Step 1: stage the landing rows written since a stream's last merge
//! into `crm_sync.source_records`, cleaned and keyed, and their invalid
//! values into `crm_sync.invalid_values`.

use std::borrow::Cow;
use std::time::Duration;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

use crate::landing::as_str;
use crate::locks;
use crm_sync_core::ahead;
use crm_sync_core::model;
use crm_sync_core::model::identity;
use crm_sync_core::model::stage::{Mapped, Staged};
use crm_sync_core::rows::Json;

use super::sql::{each_row, qi, records_by_external_id, FETCH, MAPPED_STREAMS, UNIFIED_OF_K};

/// A stream feeding an entity, with the mapping to use.
pub struct StreamMap {
    source: String,
    stream: String,
    region: Option<String>,
    fields: Vec<Mapped>,
    /// The mapping expression of each field, over the landing row `r`.
    exprs: Vec<String>,
    merged_run: i64,
}

/// The streams feeding `entity` (only the one `only` names, if set).
pub fn streams(entity: &str, only: Option<(&str, &str)>) -> Vec<StreamMap> {
    type Row = (String, String, Option<String>, String, String, String, i64);
    let rows: Vec<Row> = Spi::connect(|c| {
        c.select(
            &format!(
                "SELECT DISTINCT ON (t.source, t.stream, f.field)
                    t.source, t.stream, s.options->>'default_region', f.field, f.kind, m.expression,
                    coalesce(ms.merged_run, 0)
               FROM {MAPPED_STREAMS}
               LEFT JOIN crm_sync.merge_state ms ON ms.entity = $1 AND ms.source = t.source AND ms.stream = t.stream
              WHERE to_regclass(format('%I.%I', t.source, t.stream)) IS NOT NULL
              ORDER BY t.source, t.stream, f.field, m.source NULLS LAST"
            ),
            None,
            &[entity.into()],
        )
        .expect("read crm_sync.mappings")
        .map(|r| {
            (
                r.get(1).ok().flatten().unwrap_or_default(),
                r.get(2).ok().flatten().unwrap_or_default(),
                r.get(3).ok().flatten(),
                r.get(4).ok().flatten().unwrap_or_default(),
                r.get(5).ok().flatten().unwrap_or_default(),
                r.get(6).ok().flatten().unwrap_or_default(),
                r.get(7).ok().flatten().unwrap_or_default(),
            )
        })
        .collect()
    });
    let mut out: Vec<StreamMap> = Vec::new();
    for (source, stream, region, field, kind, expr, merged_run) in rows {
        if let Some((s, t)) = only {
            if s != source || t != stream {
                continue;
            }
        }
        let m = match out.last_mut() {
            Some(m) if m.source == source && m.stream == stream => m,
            _ => {
                out.push(StreamMap {
                    source,
                    stream,
                    region,
                    fields: vec![],
                    exprs: vec![],
                    merged_run,
                });
                out.last_mut().expect("just pushed")
            }
        };
        m.fields.push(Mapped { field, kind });
        m.exprs.push(expr);
    }
    out
}

/// A landing row as its mappings read it: id, modification time, whether
/// deleted, the id it was merged into, and the mapped values (in the order
/// of the stream's fields).
type Landed = (
    String,
    Option<TimestampWithTimeZone>,
    bool,
    Option<String>,
    Vec<Option<String>>,
);

/// The records a staging changed.
#[derive(Default)]
pub struct Changed {
    /// New records, and records whose match keys, references, merge or
    /// deletion changed: to link again.
    pub keyed: Vec<i64>,
    /// Records whose values alone changed: their unified rows are
    /// recomputed, their links stay.
    pub valued: Vec<i64>,
}

/// What staging a stream did.
pub struct Staging {
    /// The records staged that changed, while there are at most the `keep`
    /// the caller asked for; beyond that the caller merges the whole
    /// entity, and the ids are not kept (memory stays flat however many
    /// records change).
    pub ids: Option<Changed>,
    pub count: i64,
    pub invalid: i64,
}

/// Stage the stream's rows changed since its last merge.
pub fn stage(entity: &str, s: &StreamMap, full: bool, keep: usize) -> Staging {
    // A sync of this stream still writing: its own merge will follow.
    if !locks::try_stream_for_transaction(&s.source, &s.stream) {
        crate::report::notice!(
            "{}.{} is being synced; its changes are merged when that sync ends",
            s.source,
            s.stream
        );
        return Staging {
            ids: Some(Changed::default()),
            count: 0,
            invalid: 0,
        };
    }
    // On lines of their own: a trailing comment in one ends with its line.
    let exprs: Vec<String> = s.exprs.iter().map(|e| format!("(\n{e}\n)::text")).collect();
    let t_prep = std::time::Instant::now();
    let since = if full { 0 } else { s.merged_run };
    // Keyset pages, each in its own SPI connection, so that memory is
    // given back after every page however large the stream.
    // Tables not synced since merges were recorded lack the column.
    let merged_into = if crate::landing::existing_columns(&s.source, &s.stream)
        .contains_key(crate::landing::MERGED_INTO)
    {
        "CASE WHEN r._deleted_reason = 'merged' THEN r._merged_into END"
    } else {
        "NULL::text"
    };
    let sql = format!(
        "SELECT r.id::text, r._updated_at::timestamptz, r._deleted_at IS NOT NULL, r._run_id::int8, ({merged_into})::text, {} FROM {}.{} r
          WHERE r._run_id > $1",
        exprs.join(", "),
        qi(&s.source),
        qi(&s.stream)
    );
    let mut ids = Some(Changed::default());
    let mut count = 0i64;
    let mut invalid = 0i64;
    let mut max_run = s.merged_run;
    let (mut t_read, mut t_clean, mut t_write) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let cols = s.fields.len();
    // id, _updated_at, whether deleted, _run_id, merged into, then the
    // mapped values.
    let types: Vec<pg_sys::Oid> = [
        pg_sys::TEXTOID,
        pg_sys::TIMESTAMPTZOID,
        pg_sys::BOOLOID,
        pg_sys::INT8OID,
        pg_sys::TEXTOID,
    ]
    .into_iter()
    .chain(std::iter::repeat_n(pg_sys::TEXTOID, cols))
    .collect();
    // One pass over the landing table through a cursor, fetched a page at
    // a time, each page in its own SPI connection (memory is given back
    // after every page): pages by id would walk the primary key over every
    // row to find the few an incremental merge wants.
    let mut cursor: Option<String> = None;
    // Whether the stream has invalid values to clear, and records staged
    // before (a first staging inserts without looking for them).
    let (had_invalid, staged_before) = Spi::get_two_with_args::<bool, bool>(
        // A stream merged before has its records (the state goes only with
        // them): its state row answers at once, where finding one of its
        // records reads past every record of the source's other streams.
        "SELECT EXISTS (SELECT 1 FROM crm_sync.invalid_values WHERE entity = $1 AND source = $2 AND stream = $3),
                EXISTS (SELECT 1 FROM crm_sync.merge_state WHERE entity = $1 AND source = $2 AND stream = $3)
                OR EXISTS (SELECT 1 FROM crm_sync.source_records WHERE entity = $1 AND source = $2 AND stream = $3)",
        &[
            entity.into(),
            s.source.as_str().into(),
            s.stream.as_str().into(),
        ],
    )
    .expect("look for the stream's invalid values and records");
    let had_invalid = had_invalid.unwrap_or(true);
    let first = !staged_before.unwrap_or(true);
    // Values are cleaned on a helper thread, two pages ahead: while it
    // cleans one, this thread reads the next and writes the one before (the
    // second page ahead absorbs pages that take the helper longer: with one,
    // this thread waited 0.2-0.7 s of each 200,000 records for it). The
    // helper also lays the page out as the columns the write sends, and
    // frees it once written.
    let utf8 = crate::landing::utf8_database();
    // The cleaner's own time (against the time this thread waits for it).
    let busy = std::sync::atomic::AtomicU64::new(0);
    let clean = |page: Vec<Landed>| -> Page {
        let t = std::time::Instant::now();
        let mut out = Page::default();
        for (external_id, updated_at, deleted, merged_into, values) in page {
            let st = model::stage::stage(
                entity,
                s.region.as_deref(),
                &s.fields,
                external_id,
                deleted,
                values,
            );
            out.push(entity, s, st, updated_at, merged_into, utf8);
        }
        busy.fetch_add(
            t.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        out
    };
    let t_prep = t_prep.elapsed();
    ahead::with_helper(clean, |cleaner| {
        let mut read_all = false;
        // The first pages are small, growing to FETCH: the cleaner starts
        // on the first at once, and each page's cleaning hides behind the
        // write of the one before (an incremental merge's few thousand
        // records were one page, cleaned while this thread only waited).
        let mut size = FIRST_FETCH;
        loop {
            Spi::connect_mut(|c| {
                if !read_all {
                    let t = std::time::Instant::now();
                    let mut cur = match &cursor {
                        None => c.open_cursor(sql.as_str(), &[since.into()]),
                        Some(name) => c.find_cursor(name).expect("find the staging cursor"),
                    };
                    let fetched = cur
                        .fetch(size)
                        .expect("read landing rows through the mappings");
                    let mut page: Vec<Landed> = Vec::with_capacity(fetched.len());
                    each_row(&fetched, &types, |r| {
                        max_run = max_run.max(r.int8(3).unwrap_or_default());
                        page.push((
                            r.text(0).unwrap_or_default(),
                            r.timestamptz(1),
                            r.boolean(2).unwrap_or(false),
                            r.text(4),
                            (0..cols).map(|i| r.text(5 + i)).collect(),
                        ));
                    });
                    read_all = page.len() < size as usize;
                    size = (size * 2).min(FETCH);
                    cursor = (!read_all).then(|| cur.detach_into_name());
                    if !page.is_empty() {
                        cleaner.send(page);
                    }
                    t_read += t.elapsed();
                }
                // Two pages stay with the cleaner while there are more.
                if cleaner.in_flight() > 2 || (read_all && cleaner.in_flight() > 0) {
                    let t = std::time::Instant::now();
                    let batch = cleaner.recv().expect("a page is out");
                    t_clean += t.elapsed();
                    invalid += batch.invalid.len() as i64;
                    count += batch.rid.len() as i64;
                    if count as usize > keep {
                        ids = None;
                    }
                    let t = std::time::Instant::now();
                    let written = write_staged(c, entity, s, &batch, had_invalid, first);
                    if let Some(ids) = ids.as_mut() {
                        ids.keyed.extend(written.keyed);
                        ids.valued.extend(written.valued);
                    }
                    t_write += t.elapsed();
                    cleaner.give_back(batch);
                }
            });
            pgrx::check_for_interrupts!();
            if read_all && cleaner.in_flight() == 0 {
                break;
            }
        }
    });
    crate::report::debug1!(
        "pg_crm_sync merge {entity}: {}.{}: prepared in {t_prep:?}, read {} records in {t_read:?}, waited {t_clean:?} for their cleaning ({:?} of the cleaner's time), wrote them in {t_write:?}",
        s.source,
        s.stream,
        count,
        Duration::from_nanos(busy.load(std::sync::atomic::Ordering::Relaxed))
    );
    Spi::run_with_args(
        "INSERT INTO crm_sync.merge_state (entity, source, stream, merged_run, merged_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (entity, source, stream) DO UPDATE SET merged_run = EXCLUDED.merged_run, merged_at = now()",
        &[
            entity.into(),
            s.source.as_str().into(),
            s.stream.as_str().into(),
            max_run.into(),
        ],
    )
    .expect("write crm_sync.merge_state");
    Staging {
        ids,
        count,
        invalid,
    }
}

/// The size of the first page staging reads (then twice the last, up to
/// [`FETCH`]).
const FIRST_FETCH: i64 = 250;

/// A page's records (`p`, [`write_staged`]'s rows) with the staged record
/// of each (`tid`, NULL for a new one), whether it differs from that
/// (`differs`) and whether its match keys, references, merge or deletion
/// do (`relink`): one look-up of each record, for both the comparison and
/// the write.
const PAGE_VS_STAGED: &str = "SELECT p.*, t.ctid AS tid,
                (t.updated_at, t.deleted, t.vals, t.email, t.phone, t.name_key, t.domain, t.company_key,
                 t.company_ref, t.contact_ref, t.merged_into, t.keys)
                IS DISTINCT FROM (p.upd, p.del, p.vals, p.email, p.phone, p.name_key, p.domain,
                 p.company_key, p.company_ref, p.contact_ref, p.merged_into, p.keys) AS differs,
                (t.deleted, t.email, t.phone, t.name_key, t.domain, t.company_key,
                 t.company_ref, t.contact_ref, t.merged_into, t.keys)
                IS DISTINCT FROM (p.del, p.email, p.phone, p.name_key, p.domain,
                 p.company_key, p.company_ref, p.contact_ref, p.merged_into, p.keys) AS relink
           FROM p LEFT JOIN crm_sync.source_records t ON t.entity = $1 AND t.record_id = p.rid";

/// The page's records already staged that changed, written over (by
/// `tid`: no second look-up); unchanged ones, as in a rebuild or a
/// resync, are left alone. Each comes back with whether it was linked now
/// (`linked_at`). An UPDATE, not `INSERT .. ON CONFLICT DO UPDATE`: that
/// locks each record it meets before it compares, a WAL record and a dirty
/// page even for a record that stays as it was (a rebuild of 400,000
/// unchanged contacts wrote 372-380 MB of WAL; now the whole rebuild
/// writes 69-146 kB).
const UPDATE_STAGED: &str = "UPDATE crm_sync.source_records AS t
            SET updated_at = u.upd, deleted = u.del, vals = u.vals,
                email = u.email, phone = u.phone, name_key = u.name_key,
                domain = u.domain, company_key = u.company_key,
                company_ref = u.company_ref, contact_ref = u.contact_ref,
                merged_into = u.merged_into, keys = u.keys, merged_at = now(),
                linked_at = CASE WHEN u.relink THEN now() ELSE t.linked_at END
           FROM u
          WHERE t.ctid = u.tid AND u.differs
         RETURNING t.record_id, u.relink";

/// Write a page of staged records (and their invalid values); returns the
/// records written, to link again or with values alone changed (records
/// unchanged are neither written nor returned).
fn write_staged(
    c: &mut SpiClient<'_>,
    entity: &str,
    s: &StreamMap,
    page: &Page,
    // The stream had invalid values when its staging began (else there are
    // none to clear: pages never repeat a record).
    had_invalid: bool,
    // No record of the stream was staged before.
    first: bool,
) -> Changed {
    let ext: Vec<&str> = page.ext.iter().map(String::as_str).collect();
    let mut args: Vec<DatumWithOid> = vec![
        entity.into(),
        s.source.as_str().into(),
        s.stream.as_str().into(),
        ext.clone().into(),
        page.rid.as_slice().into(),
        page.upd.as_slice().into(),
        page.del.as_slice().into(),
        crate::landing::jsonb_array_of(&page.vals)
            .unwrap_or_else(|e| panic!("cleaned values as jsonb: {e}")),
    ];
    args.extend(page.keys.iter().map(|k| DatumWithOid::from(as_str(k))));
    args.push(page.merged_into.as_slice().into());
    args.extend(page.hashes.iter().map(|h| DatumWithOid::from(h.as_slice())));
    // A new record points at the unified row of the record it references
    // at once (the link step would otherwise write every new row twice);
    // links of records already there are the link step's. The page's
    // references are looked up together (`target_of`'s rule: the record
    // with that id in the same source, of its first stream by name).
    let mut link_cols = String::new();
    let mut link_vals = String::new();
    let mut link_joins = String::new();
    for (i, r) in model::REFS.iter().enumerate() {
        // (A page that references nothing has no row to join: its new
        // records point at none, as the join would have them. That is most
        // pages of contacts landed without their companies; the join cost
        // a sixth of such a page's write.)
        if !model::link_targets(entity).contains(&r.target)
            || page.keys[5 + i].iter().all(Option::is_none)
        {
            continue;
        }
        // The page's references, in REFS order from $14.
        let refs = 14 + i;
        link_cols.push_str(&format!(", {}", r.column));
        link_vals.push_str(&format!(", l{i}.unified_id"));
        link_joins.push_str(&format!(
            "
           LEFT JOIN (SELECT DISTINCT ON (e.ext) e.ext AS external_id, {UNIFIED_OF_K} AS unified_id
                        FROM (SELECT DISTINCT x FROM unnest(${refs}::text[]) x WHERE x IS NOT NULL) e(ext)
                       CROSS JOIN {by_id}
                       ORDER BY e.ext, k.stream) l{i} ON l{i}.external_id = u.{field}",
            by_id = records_by_external_id(&format!("'{}'", r.target), "$2", "e.ext"),
            field = r.field,
        ));
    }
    // The page, as the rows it stages.
    let page_rows = "SELECT u.ext, u.rid, u.upd, u.del, u.vals, u.email, u.phone, u.name_key, u.domain,
                u.company_key, u.company_ref, u.contact_ref, u.merged_into,
                array_remove(ARRAY[u.h0, u.h1, u.h2, u.h3], NULL) AS keys
           FROM unnest($4::text[], $5::int8[], $6::timestamptz[], $7::bool[], $8::jsonb[], $9::text[],
                       $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                       $16::int8[], $17::int8[], $18::int8[], $19::int8[], $20::int8[])
                AS u(ext, rid, upd, del, vals, email, phone, name_key, domain, company_key, company_ref,
                     contact_ref, merged_into, h0, h1, h2, h3)";
    let insert = |from: &str, new_only: &str| {
        format!(
            "INSERT INTO crm_sync.source_records AS t
                (entity, source, stream, external_id, record_id, updated_at, deleted, vals,
                 email, phone, name_key, domain, company_key, company_ref, contact_ref, merged_into,
                 keys, merged_at{link_cols})
         SELECT $1, $2, $3, u.ext, u.rid, u.upd, u.del, u.vals,
                u.email, u.phone, u.name_key, u.domain, u.company_key, u.company_ref, u.contact_ref,
                u.merged_into, u.keys, now(){link_vals}
           FROM {from}{link_joins}{new_only}"
        )
    };
    // A stream staged for the first time has no record to meet: a plain
    // insert (a page never repeats a record), every record new. Otherwise
    // the records already there are updated where they changed, the others
    // inserted, and the records written come back, each with whether it was
    // linked now (new, or its keys changed). Merges take turns: no other
    // one stages meanwhile.
    let sql = if first {
        insert(&format!("({page_rows}) u"), "")
    } else {
        format!(
            "WITH p AS ({page_rows}),
              u AS ({PAGE_VS_STAGED}),
              changed AS ({UPDATE_STAGED}),
              added AS ({}
         RETURNING t.record_id, true)
         SELECT * FROM changed UNION ALL SELECT * FROM added",
            insert(
                "u",
                "
          WHERE u.tid IS NULL"
            )
        )
    };
    let written = c
        .update(&sql, None, &args)
        .expect("write crm_sync.source_records");
    let mut out = Changed::default();
    if first {
        out.keyed = page.rid.clone();
    } else {
        for r in written {
            let id: i64 = r.get(1).ok().flatten().unwrap_or_default();
            if r.get::<bool>(2).ok().flatten().unwrap_or(true) {
                out.keyed.push(id);
            } else {
                out.valued.push(id);
            }
        }
    }
    // The invalid values of these records, as of now.
    if !had_invalid && page.invalid.is_empty() {
        return out;
    }
    let column = |i: usize| -> Vec<&str> { page.invalid.iter().map(|v| v[i].as_str()).collect() };
    let sql = if had_invalid {
        INVALID_VALUES_AGAIN
    } else {
        INVALID_VALUES_NEW
    };
    c.update(
        sql,
        None,
        &[
            entity.into(),
            s.source.as_str().into(),
            s.stream.as_str().into(),
            ext.into(),
            column(0).into(),
            column(1).into(),
            column(2).into(),
            column(3).into(),
        ],
    )
    .expect("write crm_sync.invalid_values");
    out
}

/// The invalid values of a page's records (`$5`..`$8`: external id, field,
/// value, problem) in a stream that had none when its staging began: each
/// new.
const INVALID_VALUES_NEW: &str =
    "INSERT INTO crm_sync.invalid_values (entity, source, stream, external_id, field, value, problem)
     SELECT $1, $2, $3, v.* FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) v";

/// The invalid values of a page's records (`$4`: their external ids) as of
/// now, over those recorded: the ones gone are deleted, the changed
/// updated, the new inserted, and the ones that stay as they were are left
/// alone (deleting and inserting them again wrote two row versions and
/// their index entries for each, on every restaging). Merges take turns:
/// the three parts meet different rows.
const INVALID_VALUES_AGAIN: &str = "WITH v AS (
        SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[]) v(external_id, field, value, problem)),
     x AS (
        SELECT v.*, i.ctid AS tid, (i.value, i.problem) IS DISTINCT FROM (v.value, v.problem) AS differs
          FROM v LEFT JOIN crm_sync.invalid_values i
            ON i.entity = $1 AND i.source = $2 AND i.stream = $3 AND i.external_id = v.external_id
           AND i.field = v.field),
     gone AS (
        DELETE FROM crm_sync.invalid_values i
         WHERE i.entity = $1 AND i.source = $2 AND i.stream = $3 AND i.external_id = ANY ($4)
           AND NOT EXISTS (SELECT 1 FROM v WHERE v.external_id = i.external_id AND v.field = i.field)),
     changed AS (
        UPDATE crm_sync.invalid_values t SET value = x.value, problem = x.problem
          FROM x
         WHERE t.ctid = x.tid AND x.differs)
     INSERT INTO crm_sync.invalid_values (entity, source, stream, external_id, field, value, problem)
     SELECT $1, $2, $3, x.external_id, x.field, x.value, x.problem FROM x WHERE x.tid IS NULL";

/// A page of staged records, as the columns [`write_staged`] sends.
#[derive(Default)]
struct Page {
    ext: Vec<String>,
    rid: Vec<i64>,
    /// Modification times, as landed (no text in between: two conversions
    /// a record).
    upd: Vec<Option<TimestampWithTimeZone>>,
    del: Vec<bool>,
    /// Cleaned values, as JSON objects, encoded as jsonb by the helper
    /// (see `rows::Json`).
    vals: Vec<Option<Json<'static>>>,
    /// email, phone, name_key, domain, company_key, company_ref, contact_ref
    keys: [Vec<Option<String>>; 7],
    merged_into: Vec<Option<i64>>,
    /// The hash of each match key (`identity::key_hash`), in
    /// `identity::HASHED_KEYS` order, by key: a record's keys are those it
    /// has, in that order (`array_remove` of the NULLs).
    hashes: [Vec<Option<i64>>; 4],
    /// (external id, field, value, problem)
    invalid: Vec<[String; 4]>,
}

impl Page {
    fn push(
        &mut self,
        entity: &str,
        s: &StreamMap,
        st: Staged,
        updated_at: Option<TimestampWithTimeZone>,
        merged_into: Option<String>,
        utf8: bool,
    ) {
        let id = |ext: &str| identity::record_id(entity, &s.source, &s.stream, ext);
        self.rid.push(id(&st.external_id));
        self.merged_into.push(merged_into.as_deref().map(id));
        for (field, value, problem) in st.invalid {
            self.invalid
                .push([st.external_id.clone(), field, value, problem]);
        }
        self.upd.push(updated_at);
        self.del.push(st.deleted);
        let vals = serde_json::to_string(&st.vals).unwrap_or_else(|_| "{}".to_owned());
        self.vals.push(Some(Json::new(Cow::Owned(vals), utf8)));
        for ((column, v), out) in identity::HASHED_KEYS
            .iter()
            .zip([&st.email, &st.name_key, &st.domain, &st.company_key])
            .zip(self.hashes.iter_mut())
        {
            out.push(v.as_ref().map(|v| identity::key_hash(entity, column, v)));
        }
        for (col, v) in self.keys.iter_mut().zip([
            st.email,
            st.phone,
            st.name_key,
            st.domain,
            st.company_key,
            st.company_ref,
            st.contact_ref,
        ]) {
            col.push(v);
        }
        self.ext.push(st.external_id);
    }
}
