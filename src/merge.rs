//! The unified customer model: `crm_sync.merge()` and the merge after each
//! sync. Three steps per entity (companies first, then contacts and deals,
//! which link to companies):
//!
//! 1. **Stage**: landing rows written since the stream's last merge (by
//!    `_run_id`) are read through the mapping expressions, cleaned
//!    (`crm_sync_core::clean`) and upserted into `crm_sync.source_records`
//!    with their match keys; values that fail cleaning go to
//!    `crm_sync.invalid_values` and stay out of the model.
//! 2. **Resolve**: the changed records, the unified rows they belonged to and
//!    the rows their keys now match are loaded and linked again
//!    (`crm_sync_core::identity`); ids that disappear are recorded in
//!    `crm.merged_ids` as merged into the surviving id.
//! 3. **Survive**: for the affected unified rows, each field takes the value
//!    of the highest-priority source (`crm_sync.field_priority`), else of the
//!    most recently modified record; the row's `lineage` column (shown by
//!    the `crm.field_lineage` view) records which.
//!
//! A full merge stages every landing row and resolves every record; it gives
//! the same result as the incremental steps.

use std::collections::HashMap;

use pgrx::datum::{DatumWithOid, Interval};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::{Map, Value};

use crm_sync_core::clean;
use crm_sync_core::identity::{self, Member};

const ENTITIES: [&str; 3] = ["company", "contact", "deal"];

/// The links a record can have: (target entity, the mapped field holding
/// the source's id of the linked record, the column holding its unified
/// id in `crm_sync.source_records` and the crm tables). The target entity
/// is also the name of the match key on that column.
const REFS: [(&str, &str, &str); 2] = [
    ("company", "company_ref", "company_id"),
    ("contact", "contact_ref", "contact_id"),
];

/// The `REFS` entry of a ref field.
fn ref_of_field(field: &str) -> Option<usize> {
    REFS.iter().position(|r| r.1 == field)
}
const FETCH: i64 = 5_000;

/// The crm table of an entity.
fn table(entity: &str) -> &'static str {
    match entity {
        "company" => "companies",
        "contact" => "contacts",
        _ => "deals",
    }
}

fn qi(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

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
    let rows = run(None, full);
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

/// Merge one stream's changes after its sync, in a subtransaction: a merge
/// that fails (a broken mapping expression, say) leaves the sync's rows in
/// place and is reported as a warning, for `crm_sync.merge()` to redo.
pub fn after_sync(source: &str, stream: &str, run_id: i64) -> Option<String> {
    if !crate::gucs::MERGE_AFTER_SYNC.get() {
        return None;
    }
    let mapped = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM crm_sync.streams t JOIN crm_sync.sources s ON s.name = t.source
                          JOIN crm_sync.mappings m ON m.provider = s.provider AND m.object = t.object AND m.enabled
                         WHERE t.source = $1 AND t.stream = $2)",
        &[source.into(), stream.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !mapped {
        return None;
    }
    match crate::sql_api::sync::in_subtransaction(|| run(Some((source, stream)), false)) {
        Ok(stats) => {
            // Values that failed cleaning are the run's warnings too.
            let invalid: i64 = stats.iter().map(|s| s.invalid).sum();
            if invalid > 0 {
                Spi::run_with_args(
                    "UPDATE crm_sync.runs
                        SET warnings = warnings + $2,
                            warning_samples = coalesce(warning_samples, '{}') || format(
                                '%s values failed cleaning for the unified model and were left out of it; see crm_sync.quality', $2)
                      WHERE run_id = $1",
                    &[run_id.into(), invalid.into()],
                )
                .expect("count invalid values in crm_sync.runs");
            }
            None
        }
        Err(message) => Some(format!(
            "merging into the unified model failed: {message}; the synced rows are kept; fix it and run crm_sync.merge()"
        )),
    }
}

pub struct EntityStats {
    pub entity: &'static str,
    pub changed: i64,
    pub invalid: i64,
    pub unified: i64,
    pub merged: i64,
    pub micros: i64,
}

/// Merge every entity; `only` limits staging to one (source, stream).
pub fn run(only: Option<(&str, &str)>, full: bool) -> Vec<EntityStats> {
    // One merge at a time: unified rows span sources.
    Spi::run("SELECT pg_advisory_xact_lock(hashtextextended('crm_sync/merge', 0))")
        .expect("merge lock");
    let mut out = Vec::new();
    // The unified ids each entity's merge recomputed: records linked to
    // them (a contact's company, say) are linked again, whether the group
    // merged, split, changed its id or disappeared.
    let mut touched: HashMap<&str, Vec<i64>> = HashMap::new();
    for entity in ENTITIES {
        let t0 = std::time::Instant::now();
        let mut st = EntityStats {
            entity,
            changed: 0,
            invalid: 0,
            unified: 0,
            merged: 0,
            micros: 0,
        };
        let mut changed: Vec<i64> = Vec::new();
        let lap = |what: &str| {
            pgrx::debug1!(
                "pg_crm_sync merge {entity}: {what} after {:?}",
                t0.elapsed()
            )
        };
        for s in streams(entity, only) {
            let (ids, invalid) = stage(entity, &s, full);
            st.changed += ids.len() as i64;
            st.invalid += invalid;
            changed.extend(ids);
        }
        lap("staged");
        // The steps below read what was just written, by entity; the
        // planner must know it is there. Statistics from before (a first
        // merge of empty tables, or of another entity only) make it expect
        // one row and loop over every record of the entity for each one.
        let big = changed.len() > 1_000 && stats_lag(entity, changed.len());
        if big {
            Spi::run("ANALYZE crm_sync.source_records").expect("analyze crm_sync.source_records");
        }
        // Records of streams that are gone (a dropped source, a dropped
        // landing table) leave the model.
        let (rest, emptied) = prune(entity, full);
        changed.extend(rest);
        for target in link_targets(entity) {
            let targets = touched.get(target).map(Vec::as_slice).unwrap_or_default();
            let moved = link(entity, target, &changed, targets, full);
            changed.extend(moved);
        }
        lap("linked");
        if !changed.is_empty() || !emptied.is_empty() || full {
            let (mut affected, merged) = resolve(entity, &changed, full);
            affected.extend(emptied);
            affected.sort_unstable();
            affected.dedup();
            if big {
                Spi::run("ANALYZE crm_sync.unified_ids").expect("analyze crm_sync.unified_ids");
            }
            lap("resolved");
            st.merged = merged;
            st.unified = survive(entity, &affected, full);
            lap("survived");
            if !full {
                touched.insert(entity, affected);
            }
        }
        st.micros = t0.elapsed().as_micros() as i64;
        out.push(st);
    }
    Spi::run(
        "DELETE FROM crm_sync.merge_state m
          WHERE NOT EXISTS (SELECT 1 FROM crm_sync.streams t WHERE t.source = m.source AND t.stream = m.stream)
             OR to_regclass(format('%I.%I', m.source, m.stream)) IS NULL",
    )
    .expect("forget merge state of gone streams");
    out
}

/// Whether the planner's statistics know too few records of `entity` for
/// `changed` records just staged (fewer than ten times as many).
fn stats_lag(entity: &str, changed: usize) -> bool {
    let known = Spi::get_one_with_args::<f64>(
        "SELECT coalesce((SELECT m.f FROM pg_stats s,
                                 unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS m(v, f)
                           WHERE s.schemaname = 'crm_sync' AND s.tablename = 'source_records'
                             AND s.attname = 'entity' AND m.v = $1), 0)::float8
                * greatest((SELECT reltuples FROM pg_class WHERE oid = 'crm_sync.source_records'::regclass), 0)",
        &[entity.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(0.0);
    (changed as f64) * 10.0 > known
}

/// A stream feeding an entity, with the mapping to use.
struct StreamMap {
    source: String,
    stream: String,
    region: Option<String>,
    /// (field, kind, expression)
    fields: Vec<(String, String, String)>,
    merged_run: i64,
}

fn streams(entity: &str, only: Option<(&str, &str)>) -> Vec<StreamMap> {
    type Row = (String, String, Option<String>, String, String, String, i64);
    let rows: Vec<Row> = Spi::connect(|c| {
        c.select(
            "SELECT DISTINCT ON (t.source, t.stream, f.field)
                    t.source, t.stream, s.options->>'default_region', f.field, f.kind, m.expression,
                    coalesce(ms.merged_run, 0)
               FROM crm_sync.streams t
               JOIN crm_sync.sources s ON s.name = t.source
               JOIN crm_sync.mappings m ON m.provider = s.provider AND m.object = t.object
                                       AND m.entity = $1 AND m.enabled
                                       AND (m.source IS NULL OR m.source = t.source)
               JOIN crm_sync.unified_fields f ON f.entity = m.entity AND f.field = m.field
               LEFT JOIN crm_sync.merge_state ms ON ms.source = t.source AND ms.stream = t.stream
              WHERE to_regclass(format('%I.%I', t.source, t.stream)) IS NOT NULL
              ORDER BY t.source, t.stream, f.field, m.source NULLS LAST",
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
        match out.last_mut() {
            Some(m) if m.source == source && m.stream == stream => {
                m.fields.push((field, kind, expr))
            }
            _ => out.push(StreamMap {
                source,
                stream,
                region,
                fields: vec![(field, kind, expr)],
                merged_run,
            }),
        }
    }
    out
}

/// One cleaned source record.
#[derive(Default)]
struct Staged {
    external_id: String,
    updated_at: Option<String>,
    deleted: bool,
    vals: Map<String, Value>,
    email: Option<String>,
    phone: Option<String>,
    name_key: Option<String>,
    domain: Option<String>,
    company_key: Option<String>,
    company_ref: Option<String>,
    contact_ref: Option<String>,
    invalid: Vec<(String, String, String)>,
}

fn stage_row(
    entity: &str,
    s: &StreamMap,
    id: String,
    updated: Option<String>,
    deleted: bool,
    values: Vec<Option<String>>,
) -> Staged {
    let mut st = Staged {
        external_id: id,
        updated_at: updated,
        deleted,
        ..Default::default()
    };
    for ((field, kind, _), raw) in s.fields.iter().zip(values) {
        let Some(raw) = raw else { continue };
        match clean::field(kind, &raw, s.region.as_deref()) {
            Ok(Some(v)) => {
                st.vals.insert(field.clone(), Value::String(v));
            }
            Ok(None) => {}
            Err(problem) => st.invalid.push((field.clone(), raw, problem)),
        }
    }
    let get = |f: &str| st.vals.get(f).and_then(Value::as_str).map(str::to_owned);
    st.email = get("email");
    st.phone = get("phone");
    st.company_ref = get("company_ref");
    st.contact_ref = get("contact_ref");
    match entity {
        "contact" => {
            let full = [get("first_name"), get("last_name")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            st.name_key = clean::name_key(&full);
        }
        "company" => {
            st.domain = get("domain");
            st.company_key = get("name").and_then(|n| clean::company_key(&n));
        }
        _ => st.name_key = get("name").and_then(|n| clean::name_key(&n)),
    }
    st
}

/// Stage the stream's rows changed since its last merge; returns the
/// record ids staged and the number of invalid values.
fn stage(entity: &str, s: &StreamMap, full: bool) -> (Vec<i64>, i64) {
    // A sync of this stream still writing: its own merge will follow.
    let free = Spi::get_one_with_args::<bool>(
        "SELECT pg_try_advisory_xact_lock(hashtextextended('crm_sync/' || $1 || '/' || $2, 0))",
        &[s.source.as_str().into(), s.stream.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !free {
        pgrx::notice!(
            "{}.{} is being synced; its changes are merged when that sync ends",
            s.source,
            s.stream
        );
        return (vec![], 0);
    }
    let exprs: Vec<String> = s
        .fields
        .iter()
        .map(|(_, _, e)| format!("({e})::text"))
        .collect();
    let since = if full { 0 } else { s.merged_run };
    // Keyset pages, each in its own SPI connection, so that memory is
    // given back after every page however large the stream.
    let sql = format!(
        "SELECT r.id, r._updated_at::text, r._deleted_at IS NOT NULL, r._run_id, {} FROM {}.{} r
          WHERE r._run_id > $1 AND r.id > $2 ORDER BY r.id LIMIT {FETCH}",
        exprs.join(", "),
        qi(&s.source),
        qi(&s.stream)
    );
    let mut ids = Vec::new();
    let mut invalid = 0i64;
    let mut max_run = s.merged_run;
    let (mut t_read, mut t_write) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let cols = s.fields.len();
    let mut after = String::new();
    let had_invalid = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM crm_sync.invalid_values WHERE entity = $1 AND source = $2 AND stream = $3)",
        &[
            entity.into(),
            s.source.as_str().into(),
            s.stream.as_str().into(),
        ],
    )
    .expect("look for the stream's invalid values")
    .unwrap_or(true);
    loop {
        let more = Spi::connect_mut(|c| {
            let t = std::time::Instant::now();
            let batch: Vec<Staged> = c
                .select(sql.as_str(), None, &[since.into(), after.as_str().into()])
                .expect("read landing rows through the mappings")
                .map(|r| {
                    let run: i64 = r.get(4).ok().flatten().unwrap_or_default();
                    max_run = max_run.max(run);
                    let values = (0..cols)
                        .map(|i| r.get::<String>(5 + i).ok().flatten())
                        .collect();
                    stage_row(
                        entity,
                        s,
                        r.get(1).ok().flatten().unwrap_or_default(),
                        r.get(2).ok().flatten(),
                        r.get(3).ok().flatten().unwrap_or(false),
                        values,
                    )
                })
                .collect();
            let Some(last) = batch.last() else {
                return false;
            };
            after = last.external_id.clone();
            invalid += batch.iter().map(|b| b.invalid.len() as i64).sum::<i64>();
            ids.extend(
                batch
                    .iter()
                    .map(|b| identity::record_id(entity, &s.source, &s.stream, &b.external_id)),
            );
            t_read += t.elapsed();
            let t = std::time::Instant::now();
            write_staged(c, entity, s, &batch, had_invalid);
            t_write += t.elapsed();
            batch.len() as i64 == FETCH
        });
        pgrx::check_for_interrupts!();
        if !more {
            break;
        }
    }
    pgrx::debug1!(
        "pg_crm_sync merge {entity}: {}.{}: read and cleaned {} records in {t_read:?}, wrote them in {t_write:?}",
        s.source,
        s.stream,
        ids.len()
    );
    Spi::run_with_args(
        "INSERT INTO crm_sync.merge_state (source, stream, merged_run, merged_at) VALUES ($1, $2, $3, now())
         ON CONFLICT (source, stream) DO UPDATE SET merged_run = EXCLUDED.merged_run, merged_at = now()",
        &[s.source.as_str().into(), s.stream.as_str().into(), max_run.into()],
    )
    .expect("write crm_sync.merge_state");
    (ids, invalid)
}

fn write_staged(
    c: &mut SpiClient<'_>,
    entity: &str,
    s: &StreamMap,
    batch: &[Staged],
    // The stream had invalid values when its staging began (else there are
    // none to clear: pages never repeat a record).
    had_invalid: bool,
) {
    let col = |f: &dyn Fn(&Staged) -> Option<String>| -> Vec<Option<String>> {
        batch.iter().map(f).collect()
    };
    let ext: Vec<String> = batch.iter().map(|b| b.external_id.clone()).collect();
    let rid: Vec<i64> = batch
        .iter()
        .map(|b| identity::record_id(entity, &s.source, &s.stream, &b.external_id))
        .collect();
    let upd = col(&|b| b.updated_at.clone());
    let del: Vec<bool> = batch.iter().map(|b| b.deleted).collect();
    let vals = col(&|b| Some(Value::Object(b.vals.clone()).to_string()));
    let args: Vec<DatumWithOid> = vec![
        entity.into(),
        s.source.as_str().into(),
        s.stream.as_str().into(),
        ext.clone().into(),
        rid.into(),
        upd.into(),
        del.into(),
        vals.into(),
        col(&|b| b.email.clone()).into(),
        col(&|b| b.phone.clone()).into(),
        col(&|b| b.name_key.clone()).into(),
        col(&|b| b.domain.clone()).into(),
        col(&|b| b.company_key.clone()).into(),
        col(&|b| b.company_ref.clone()).into(),
        col(&|b| b.contact_ref.clone()).into(),
    ];
    c.update(
        "INSERT INTO crm_sync.source_records AS t
                (entity, source, stream, external_id, record_id, updated_at, deleted, vals,
                 email, phone, name_key, domain, company_key, company_ref, contact_ref, merged_at)
         SELECT $1, $2, $3, u.ext, u.rid, u.upd::timestamptz, u.del, u.vals::jsonb,
                u.email, u.phone, u.name_key, u.domain, u.company_key, u.company_ref, u.contact_ref, now()
           FROM unnest($4::text[], $5::int8[], $6::text[], $7::bool[], $8::text[], $9::text[],
                       $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
                AS u(ext, rid, upd, del, vals, email, phone, name_key, domain, company_key, company_ref, contact_ref)
         ON CONFLICT (entity, record_id) DO UPDATE
            SET updated_at = EXCLUDED.updated_at, deleted = EXCLUDED.deleted, vals = EXCLUDED.vals,
                email = EXCLUDED.email, phone = EXCLUDED.phone, name_key = EXCLUDED.name_key,
                domain = EXCLUDED.domain, company_key = EXCLUDED.company_key,
                company_ref = EXCLUDED.company_ref, contact_ref = EXCLUDED.contact_ref, merged_at = now()
          -- An unchanged record is not rewritten (a rebuild, a resync).
          WHERE (t.updated_at, t.deleted, t.vals, t.email, t.phone, t.name_key, t.domain, t.company_key,
                 t.company_ref, t.contact_ref)
                IS DISTINCT FROM (EXCLUDED.updated_at, EXCLUDED.deleted, EXCLUDED.vals, EXCLUDED.email,
                 EXCLUDED.phone, EXCLUDED.name_key, EXCLUDED.domain, EXCLUDED.company_key,
                 EXCLUDED.company_ref, EXCLUDED.contact_ref)",
        None,
        &args,
    )
    .expect("write crm_sync.source_records");
    // The invalid values of these records, as of now.
    let mut f_ext = Vec::new();
    let mut f_field = Vec::new();
    let mut f_value = Vec::new();
    let mut f_problem = Vec::new();
    for b in batch {
        for (field, value, problem) in &b.invalid {
            f_ext.push(b.external_id.clone());
            f_field.push(field.clone());
            f_value.push(value.clone());
            f_problem.push(problem.clone());
        }
    }
    if had_invalid {
        c.update(
            "DELETE FROM crm_sync.invalid_values
              WHERE entity = $1 AND source = $2 AND stream = $3 AND external_id = ANY ($4)",
            None,
            &[
                entity.into(),
                s.source.as_str().into(),
                s.stream.as_str().into(),
                ext.into(),
            ],
        )
        .expect("clear crm_sync.invalid_values");
    }
    if f_ext.is_empty() {
        return;
    }
    c.update(
        "INSERT INTO crm_sync.invalid_values (entity, source, stream, external_id, field, value, problem)
         SELECT $1, $2, $3, u.* FROM unnest($4::text[], $5::text[], $6::text[], $7::text[]) u",
        None,
        &[
            entity.into(),
            s.source.as_str().into(),
            s.stream.as_str().into(),
            f_ext.into(),
            f_field.into(),
            f_value.into(),
            f_problem.into(),
        ],
    )
    .expect("write crm_sync.invalid_values");
}

/// Drop the records of streams that are gone: the source was dropped, or the
/// landing table. An incremental merge finds those streams in
/// `crm_sync.merge_state`; a full one checks every record. Returns the
/// remaining records of the unified rows that lost some (to link again) and
/// the unified ids that lost any (to recompute, or delete when none is
/// left).
fn prune(entity: &str, full: bool) -> (Vec<i64>, Vec<i64>) {
    let gone = "(to_regclass(format('%I.%I', r.source, r.stream)) IS NULL
                 OR NOT EXISTS (SELECT 1 FROM crm_sync.streams t WHERE t.source = r.source AND t.stream = r.stream))";
    let which = if full {
        gone.to_owned()
    } else {
        format!(
            "(r.source, r.stream) IN (SELECT r.source, r.stream FROM crm_sync.merge_state r WHERE {gone})"
        )
    };
    let rows: Vec<(i64, bool)> = Spi::connect_mut(|c| {
        c.update(
            &format!(
                "WITH d AS (
                    DELETE FROM crm_sync.source_records r WHERE r.entity = $1 AND {which}
                    RETURNING r.source, r.stream, r.record_id),
                 i AS (DELETE FROM crm_sync.invalid_values v USING (SELECT DISTINCT source, stream FROM d) g
                        WHERE v.entity = $1 AND v.source = g.source AND v.stream = g.stream),
                 u AS (DELETE FROM crm_sync.unified_ids WHERE entity = $1 AND record_id IN (SELECT record_id FROM d)
                       RETURNING unified_id),
                 rest AS (SELECT g.record_id FROM crm_sync.unified_ids g
                           WHERE g.entity = $1 AND g.unified_id IN (SELECT unified_id FROM u)
                             AND g.record_id NOT IN (SELECT record_id FROM d))
                 SELECT record_id, false FROM rest
                 UNION ALL
                 SELECT DISTINCT unified_id, true FROM u"
            ),
            None,
            &[entity.into()],
        )
        .expect("prune crm_sync.source_records")
        .map(|r| {
            (
                r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                r.get::<bool>(2).ok().flatten().unwrap_or_default(),
            )
        })
        .collect()
    });
    let (ids, records): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|(_, is_unified)| *is_unified);
    (
        records.into_iter().map(|(r, _)| r).collect(),
        ids.into_iter().map(|(u, _)| u).collect(),
    )
}

/// The entities whose unified rows an entity's records point at (through
/// their `company_ref` / `contact_ref` fields); those are merged first.
fn link_targets(entity: &str) -> &'static [&'static str] {
    match entity {
        "contact" => &["company"],
        "deal" => &["company", "contact"],
        _ => &[],
    }
}

/// Point records at the unified `target` row of their reference (in the same
/// source): the changed ones (every one, `full`), those linked to a target
/// row this merge recomputed (`targets`: merged, split, renamed or gone), and
/// those whose target had not landed yet. Returns the records whose link
/// changed.
fn link(entity: &str, target: &str, changed: &[i64], targets: &[i64], full: bool) -> Vec<i64> {
    let Some(&(_, rf, id)) = REFS.iter().find(|r| r.0 == target) else {
        return Vec::new();
    };
    // Each kind of candidate found through its own index (one OR over them
    // would read every record of the entity).
    let scope = if full {
        "SELECT record_id FROM crm_sync.source_records WHERE entity = $1".to_owned()
    } else {
        format!(
            "SELECT record_id FROM crm_sync.source_records WHERE entity = $1 AND record_id = ANY ($2)
             UNION SELECT record_id FROM crm_sync.source_records WHERE entity = $1 AND {id} = ANY ($4)
             UNION SELECT record_id FROM crm_sync.source_records
                    WHERE entity = $1 AND {id} IS NULL AND {rf} IS NOT NULL"
        )
    };
    Spi::connect_mut(|c| {
        c.update(
            &format!(
                "WITH want AS (
                    SELECT r.record_id,
                           (SELECT ku.unified_id FROM crm_sync.source_records k
                              JOIN crm_sync.unified_ids ku ON ku.entity = k.entity AND ku.record_id = k.record_id
                             WHERE k.entity = $3 AND k.source = r.source AND k.external_id = r.{rf}
                             ORDER BY k.stream LIMIT 1) AS target_id
                      FROM crm_sync.source_records r
                     WHERE r.entity = $1 AND r.record_id IN ({scope}))
                 UPDATE crm_sync.source_records r SET {id} = w.target_id
                   FROM want w
                  WHERE r.entity = $1 AND r.record_id = w.record_id AND r.{id} IS DISTINCT FROM w.target_id
                 RETURNING r.record_id"
            ),
            None,
            &[
                entity.into(),
                changed.to_vec().into(),
                target.into(),
                targets.to_vec().into(),
            ],
        )
        .unwrap_or_else(|e| panic!("link {entity} records to their {target}: {e}"))
        .map(|r| r.get::<i64>(1).ok().flatten().unwrap_or_default())
        .collect()
    })
}

/// The match key columns of each enabled rule, in order.
fn rules(entity: &str) -> Vec<Vec<&'static str>> {
    let rows: Vec<Vec<String>> = Spi::connect(|c| {
        c.select(
            "SELECT keys FROM crm_sync.match_rules WHERE entity = $1 AND enabled ORDER BY position, name",
            None,
            &[entity.into()],
        )
        .expect("read crm_sync.match_rules")
        .map(|r| r.get::<Vec<String>>(1).ok().flatten().unwrap_or_default())
        .collect()
    });
    rows.into_iter()
        .map(|keys| {
            keys.iter()
                .filter_map(|k| match k.as_str() {
                    "email" => Some("email"),
                    "phone" => Some("phone"),
                    "name" => Some("name_key"),
                    "domain" => Some("domain"),
                    "company_name" => Some("company_key"),
                    other => REFS.iter().find(|r| r.0 == other).map(|r| r.2),
                })
                .collect()
        })
        .collect()
}

/// Link records again; returns the unified ids to recompute and how many
/// ids were merged into others.
fn resolve(entity: &str, changed: &[i64], full: bool) -> (Vec<i64>, i64) {
    let t = std::time::Instant::now();
    let rules = rules(entity);
    let key_exprs: Vec<String> = rules
        .iter()
        .map(|cols| {
            let present: Vec<String> = cols.iter().map(|c| format!("r.{c} IS NOT NULL")).collect();
            let parts: Vec<String> = cols.iter().map(|c| format!("r.{c}::text")).collect();
            // NULL unless every key is there.
            format!(
                "CASE WHEN {} THEN concat_ws(chr(31), {}) END",
                present.join(" AND "),
                parts.join(", ")
            )
        })
        .collect();
    let keys_sql = if key_exprs.is_empty() {
        "ARRAY[]::text[]".to_owned()
    } else {
        format!("ARRAY[{}]", key_exprs.join(", "))
    };
    // Who takes part: everything (full), or the changed records, the
    // unified rows they were in, and the rows their keys now match. Each
    // rule's matches are found through its keys' index.
    let scope: Option<Vec<i64>> = (!full).then(|| {
        let mut cand = vec!["SELECT record_id FROM ch".to_owned()];
        for cols in &rules {
            let on: Vec<String> = cols.iter().map(|c| format!("x.{c} = ch.{c}")).collect();
            cand.push(format!(
                "SELECT x.record_id FROM ch JOIN crm_sync.source_records x ON x.entity = $1 AND {}",
                on.join(" AND ")
            ));
        }
        let sql = format!(
            "WITH ch AS (SELECT * FROM crm_sync.source_records WHERE entity = $1 AND record_id = ANY ($2)),
                  cand AS ({})
             SELECT record_id FROM ch
             UNION
             SELECT g.record_id FROM crm_sync.unified_ids g
              WHERE g.entity = $1 AND g.unified_id IN (
                    SELECT xu.unified_id FROM crm_sync.unified_ids xu
                     WHERE xu.entity = $1 AND xu.record_id IN (SELECT record_id FROM cand))
             ORDER BY 1",
            cand.join(" UNION ")
        );
        Spi::connect(|c| {
            c.select(&sql, None, &[entity.into(), changed.to_vec().into()])
                .expect("find the records to resolve")
                .map(|r| r.get::<i64>(1).ok().flatten().unwrap_or_default())
                .collect()
        })
    });
    // In pages by record id (keyset, or chunks of the scope), each in its
    // own SPI connection.
    let which = if full {
        format!("r.record_id > $2 ORDER BY r.record_id LIMIT {FETCH}")
    } else {
        "r.record_id = ANY ($2) ORDER BY r.record_id".to_owned()
    };
    let sql = format!(
        "SELECT r.record_id, (extract(epoch FROM r.first_seen) * 1e6)::int8, u.unified_id, {keys_sql}
           FROM crm_sync.source_records r
           LEFT JOIN crm_sync.unified_ids u ON u.entity = r.entity AND u.record_id = r.record_id
          WHERE r.entity = $1 AND {which}"
    );
    let mut members: Vec<(Member, Option<i64>)> = Vec::new();
    let mut chunks = scope.as_deref().map(|s| s.chunks(FETCH as usize));
    let mut after = i64::MIN;
    loop {
        let arg: DatumWithOid = match chunks.as_mut() {
            None => after.into(),
            Some(it) => match it.next() {
                Some(chunk) => chunk.to_vec().into(),
                None => break,
            },
        };
        let page: Vec<(Member, Option<i64>)> = Spi::connect(|c| {
            c.select(sql.as_str(), None, &[entity.into(), arg])
                .expect("read records to resolve")
                .map(|r| {
                    let keys: Vec<Option<String>> = r
                        .get::<Vec<Option<String>>>(4)
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    (
                        Member {
                            id: r.get(1).ok().flatten().unwrap_or_default(),
                            first_seen: r.get(2).ok().flatten().unwrap_or_default(),
                            keys,
                        },
                        r.get(3).ok().flatten(),
                    )
                })
                .collect()
        });
        pgrx::check_for_interrupts!();
        let n = page.len() as i64;
        if let Some((m, _)) = page.last() {
            after = m.id;
        }
        members.extend(page);
        if chunks.is_none() && n < FETCH {
            break;
        }
    }
    pgrx::debug1!(
        "pg_crm_sync merge {entity}: read {} records to resolve in {:?}",
        members.len(),
        t.elapsed()
    );
    let only: Vec<Member> = members.iter().map(|(m, _)| m.clone()).collect();
    let ids = identity::resolve(&only);
    pgrx::debug1!(
        "pg_crm_sync merge {entity}: linked them after {:?}",
        t.elapsed()
    );
    // Old ids that no longer name any group were merged into the group
    // that holds their earliest record.
    let new_set: std::collections::HashSet<i64> = ids.iter().copied().collect();
    let mut merged: HashMap<i64, (i64, i64, i64)> = HashMap::new();
    for ((m, old), new) in members.iter().zip(&ids) {
        if let Some(old) = old {
            if !new_set.contains(old) {
                let e = merged.entry(*old).or_insert((m.first_seen, m.id, *new));
                if (m.first_seen, m.id) < (e.0, e.1) {
                    *e = (m.first_seen, m.id, *new);
                }
            }
        }
    }
    let rid: Vec<i64> = members.iter().map(|(m, _)| m.id).collect();
    Spi::run_with_args(
        "INSERT INTO crm_sync.unified_ids AS t (entity, record_id, unified_id)
         SELECT $1, u.rid, u.uid FROM unnest($2::int8[], $3::int8[]) u(rid, uid)
         ON CONFLICT (entity, record_id) DO UPDATE SET unified_id = EXCLUDED.unified_id
          WHERE t.unified_id IS DISTINCT FROM EXCLUDED.unified_id",
        &[entity.into(), rid.into(), ids.clone().into()],
    )
    .expect("write unified ids");
    pgrx::debug1!(
        "pg_crm_sync merge {entity}: wrote unified ids after {:?}",
        t.elapsed()
    );
    let old: Vec<i64> = merged.keys().copied().collect();
    let new: Vec<i64> = merged.values().map(|v| v.2).collect();
    if !old.is_empty() {
        Spi::run_with_args(
            "WITH m AS (SELECT * FROM unnest($2::int8[], $3::int8[]) u(old_id, new_id)),
                  chain AS (UPDATE crm.merged_ids x SET new_id = m.new_id FROM m
                             WHERE x.entity = $1 AND x.new_id = m.old_id)
             INSERT INTO crm.merged_ids (entity, old_id, new_id)
             SELECT $1, old_id, new_id FROM m
             ON CONFLICT (entity, old_id) DO UPDATE SET new_id = EXCLUDED.new_id, merged_at = now()",
            &[entity.into(), old.clone().into(), new.clone().into()],
        )
        .expect("write crm.merged_ids");
    }
    let mut affected: Vec<i64> = ids;
    affected.extend(members.iter().filter_map(|(_, o)| *o));
    affected.sort_unstable();
    affected.dedup();
    (affected, old.len() as i64)
}

/// Recompute the unified rows `ids` (every row, `full`); returns how many
/// rows were written. The records of each row are read in order of their
/// unified id; each field takes the value of the first record by source
/// priority, then modification time (newest first), then source, stream and
/// id; the row is written with its lineage, in batches.
fn survive(entity: &str, ids: &[i64], full: bool) -> i64 {
    let fields: Vec<(String, String)> = Spi::connect(|c| {
        c.select(
            "SELECT field, kind FROM crm_sync.unified_fields WHERE entity = $1 ORDER BY field",
            None,
            &[entity.into()],
        )
        .expect("read crm_sync.unified_fields")
        .map(|r| {
            (
                r.get(1).ok().flatten().unwrap_or_default(),
                r.get(2).ok().flatten().unwrap_or_default(),
            )
        })
        .collect()
    });
    let priority: HashMap<String, Vec<String>> = Spi::connect(|c| {
        c.select(
            "SELECT field, sources FROM crm_sync.field_priority WHERE entity = $1",
            None,
            &[entity.into()],
        )
        .expect("read crm_sync.field_priority")
        .map(|r| {
            (
                r.get::<String>(1).ok().flatten().unwrap_or_default(),
                r.get::<Vec<String>>(2).ok().flatten().unwrap_or_default(),
            )
        })
        .collect()
    });
    let t = table(entity);
    // Rows whose every record is gone (merged into another id, or pruned).
    Spi::run_with_args(
        &format!(
            "DELETE FROM crm.{t} u WHERE {}
                AND NOT EXISTS (SELECT 1 FROM crm_sync.unified_ids r WHERE r.entity = $1 AND r.unified_id = u.id)",
            if full { "TRUE" } else { "u.id = ANY ($2)" }
        ),
        &[entity.into(), ids.to_vec().into()],
    )
    .expect("drop unified rows without records");
    let links: Vec<String> = REFS.iter().map(|r| format!("x.{}", r.2)).collect();
    let sql = format!(
        "SELECT i.unified_id, x.source, x.stream, x.external_id,
                (extract(epoch FROM x.updated_at) * 1e6)::int8, x.deleted, x.vals::text, {}
           FROM crm_sync.unified_ids i
           JOIN crm_sync.source_records x ON x.entity = i.entity AND x.record_id = i.record_id
          WHERE i.entity = $1 {}
          ORDER BY i.unified_id",
        links.join(", "),
        if full {
            ""
        } else {
            "AND i.unified_id = ANY ($2)"
        }
    );
    let mut w = RowWriter::new(entity, &fields, &priority);
    let mut written = 0i64;
    let mut rows_read = 0usize;
    let (mut t_read, mut t_write) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    // Pages of records in unified-id order, each read and written in its
    // own SPI connection (memory is given back after every page). A full
    // merge reads every record through one cursor: one pass over the
    // tables, where pages of ids would each scan them again. A unified row
    // whose records straddle a page waits for the next one.
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut pages = ids.chunks(FETCH as usize);
    let mut cursor: Option<String> = None;
    let mut carry: Vec<Contribution> = Vec::new();
    loop {
        let (done, n) = Spi::connect_mut(|c| {
            let t = std::time::Instant::now();
            let mut rows = std::mem::take(&mut carry);
            let done = if full {
                let mut cur = match &cursor {
                    None => c.open_cursor(sql.as_str(), &[entity.into()]),
                    Some(name) => c.find_cursor(name).expect("find the survivorship cursor"),
                };
                let before = rows.len();
                rows.extend(
                    cur.fetch(FETCH)
                        .expect("read source records")
                        .map(|r| contribution(&r)),
                );
                let done = rows.len() - before < FETCH as usize;
                if done {
                    cursor = None;
                } else {
                    cursor = Some(cur.detach_into_name());
                    let last = rows.last().map(|r| r.unified_id);
                    let keep = rows.partition_point(|r| Some(r.unified_id) != last);
                    carry = rows.split_off(keep);
                }
                done
            } else {
                match pages.next() {
                    None => true,
                    Some(page) => {
                        rows.extend(
                            c.select(sql.as_str(), None, &[entity.into(), page.to_vec().into()])
                                .expect("read source records")
                                .map(|r| contribution(&r)),
                        );
                        false
                    }
                }
            };
            for g in rows.chunk_by(|a, b| a.unified_id == b.unified_id) {
                w.push(g);
                rows_read += 1;
            }
            t_read += t.elapsed();
            let t = std::time::Instant::now();
            let n = w.flush(c);
            t_write += t.elapsed();
            (done, n)
        });
        written += n;
        pgrx::check_for_interrupts!();
        if done {
            break;
        }
    }
    pgrx::debug1!(
        "pg_crm_sync merge {entity}: survivorship read {rows_read} rows' records in {t_read:?}, wrote them in {t_write:?}"
    );
    written
}

/// A row of the survivorship query as one record's contribution.
fn contribution(r: &pgrx::spi::SpiHeapTupleData<'_>) -> Contribution {
    Contribution {
        unified_id: r.get(1).ok().flatten().unwrap_or_default(),
        source: r.get(2).ok().flatten().unwrap_or_default(),
        stream: r.get(3).ok().flatten().unwrap_or_default(),
        external_id: r.get(4).ok().flatten().unwrap_or_default(),
        updated_us: r.get(5).ok().flatten(),
        deleted: r.get(6).ok().flatten().unwrap_or(false),
        vals: r
            .get::<String>(7)
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default(),
        links: std::array::from_fn(|i| r.get(8 + i).ok().flatten()),
    }
}

/// One source record's part in a unified row.
struct Contribution {
    unified_id: i64,
    source: String,
    stream: String,
    external_id: String,
    updated_us: Option<i64>,
    deleted: bool,
    vals: Map<String, Value>,
    /// The unified rows its ref fields point at, in `REFS` order.
    links: [Option<i64>; REFS.len()],
}

impl Contribution {
    /// The value it offers for `field`: for a reference, the unified id of
    /// the linked row (found by `link`), which stays NULL until that record
    /// lands.
    fn value(&self, field: &str, kind: &str) -> Option<String> {
        let v = self.vals.get(field)?;
        if kind == "ref" {
            let id = ref_of_field(field).and_then(|i| self.links[i]);
            return id.map(|i| i.to_string());
        }
        Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Unified rows gathered column by column, written with one statement.
struct RowWriter {
    sql: String,
    /// (field, kind)
    fields: Vec<(String, String)>,
    /// Per field, its source priority (`crm_sync.field_priority`).
    priority: Vec<Option<Vec<String>>>,
    ids: Vec<i64>,
    cols: Vec<Vec<Option<String>>>,
    gone: Vec<bool>,
    sources: Vec<String>,
    lineage: Vec<String>,
}

impl RowWriter {
    fn new(
        entity: &str,
        fields: &[(String, String)],
        priority: &HashMap<String, Vec<String>>,
    ) -> Self {
        let t = table(entity);
        let mut cols = Vec::new();
        let mut exprs = Vec::new();
        let mut unnest = vec!["$1::int8[]".to_owned()];
        let mut names = vec!["id".to_owned()];
        for (i, (f, kind)) in fields.iter().enumerate() {
            let p = i + 2;
            unnest.push(format!("${p}::text[]"));
            names.push(format!("c{i}"));
            let v = format!("u.c{i}");
            match (kind.as_str(), ref_of_field(f)) {
                // The linked row's unified id (company_ref -> company_id).
                ("ref", Some(r)) => {
                    cols.push(REFS[r].2.to_owned());
                    exprs.push(format!("{v}::int8"));
                }
                ("numeric" | "date" | "timestamptz", _) => {
                    cols.push(qi(f));
                    exprs.push(format!("{v}::{kind}"));
                }
                _ => {
                    cols.push(qi(f));
                    exprs.push(v);
                }
            }
        }
        let n = fields.len() + 2;
        for (k, ty) in [
            ("gone", "bool[]"),
            ("sources", "text[]"),
            ("lineage", "text[]"),
        ]
        .iter()
        .enumerate()
        .map(|(j, (name, ty))| ((*name, j + n), *ty))
        {
            unnest.push(format!("${}::{ty}", k.1));
            names.push(k.0.to_owned());
        }
        let sets: Vec<String> = cols.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
        let olds: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
        let news: Vec<String> = cols.iter().map(|c| format!("EXCLUDED.{c}")).collect();
        let sql = format!(
            "INSERT INTO crm.{t} AS t (id, {cols}, deleted_at, sources, lineage, merged_at)
             SELECT u.id, {exprs}, CASE WHEN u.gone THEN now() END,
                    string_to_array(u.sources, chr(31)), u.lineage::jsonb, now()
               FROM unnest({unnest}) AS u({names})
             ON CONFLICT (id) DO UPDATE SET {sets},
                deleted_at = CASE WHEN EXCLUDED.deleted_at IS NULL THEN NULL ELSE coalesce(t.deleted_at, EXCLUDED.deleted_at) END,
                sources = EXCLUDED.sources, lineage = EXCLUDED.lineage, merged_at = now()
              WHERE ({olds}, t.deleted_at IS NULL, t.sources, t.lineage)
                    IS DISTINCT FROM ({news}, EXCLUDED.deleted_at IS NULL, EXCLUDED.sources, EXCLUDED.lineage)",
            olds = olds.join(", "),
            news = news.join(", "),
            cols = cols.join(", "),
            exprs = exprs.join(", "),
            unnest = unnest.join(", "),
            names = names.join(", "),
            sets = sets.join(", "),
        );
        RowWriter {
            sql,
            fields: fields.to_vec(),
            priority: fields
                .iter()
                .map(|(f, _)| priority.get(f).cloned())
                .collect(),
            ids: vec![],
            cols: vec![Vec::new(); fields.len()],
            gone: vec![],
            sources: vec![],
            lineage: vec![],
        }
    }

    /// Add the unified row made of `group` (the records of one unified id).
    fn push(&mut self, group: &[Contribution]) {
        let Some(first) = group.first() else { return };
        let mut live: Vec<&Contribution> = group.iter().filter(|c| !c.deleted).collect();
        // In `sources` order, so lineage can name a record by its position.
        live.sort_by(|a, b| {
            (&a.source, &a.stream, &a.external_id).cmp(&(&b.source, &b.stream, &b.external_id))
        });
        let mut lineage = Map::new();
        for (i, (f, kind)) in self.fields.iter().enumerate() {
            let order = self.priority[i].as_ref();
            let rank = |c: &Contribution| {
                order
                    .and_then(|o| o.iter().position(|s| *s == c.source))
                    .unwrap_or(usize::MAX)
            };
            let best = live
                .iter()
                .enumerate()
                .filter(|(_, c)| c.vals.get(f).is_some_and(|v| !v.is_null()))
                .min_by(|(_, a), (_, b)| {
                    rank(a)
                        .cmp(&rank(b))
                        .then_with(|| b.updated_us.cmp(&a.updated_us))
                        .then_with(|| {
                            (&a.source, &a.stream, &a.external_id).cmp(&(
                                &b.source,
                                &b.stream,
                                &b.external_id,
                            ))
                        })
                });
            let value = best.and_then(|(_, c)| c.value(f, kind));
            if let Some((pos, _)) = best {
                // 1-based, as Postgres arrays are.
                lineage.insert(f.clone(), Value::from(pos + 1));
            }
            self.cols[i].push(value);
        }
        let sources: Vec<String> = live
            .iter()
            .map(|c| format!("{}/{}/{}", c.source, c.stream, c.external_id))
            .collect();
        self.ids.push(first.unified_id);
        self.gone.push(live.is_empty());
        self.sources.push(sources.join("\u{1f}"));
        self.lineage.push(Value::Object(lineage).to_string());
    }

    fn flush(&mut self, c: &mut SpiClient<'_>) -> i64 {
        if self.ids.is_empty() {
            return 0;
        }
        let mut args: Vec<DatumWithOid> = vec![std::mem::take(&mut self.ids).into()];
        for col in &mut self.cols {
            args.push(std::mem::take(col).into());
        }
        args.push(std::mem::take(&mut self.gone).into());
        args.push(std::mem::take(&mut self.sources).into());
        args.push(std::mem::take(&mut self.lineage).into());
        // Rows written; unchanged ones are skipped.
        c.update(self.sql.as_str(), None, &args)
            .expect("write unified rows")
            .len() as i64
    }
}
