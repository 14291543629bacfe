//! The unified customer model: the merge after each sync and
//! `crm_sync.merge()`. Per entity (companies first, then contacts and
//! deals, which link to companies), in steps, one file each:
//!
//! 1. [`stage`] — landing rows written since the stream's last merge (by
//!    `_run_id`) are read through the mapping expressions, cleaned and keyed
//!    (`crm_sync_core::model::stage`) and upserted into
//!    `crm_sync.source_records`; values that fail cleaning go to
//!    `crm_sync.invalid_values` and stay out of the model.
//! 2. [`link`] — records of gone streams leave; records point at the unified
//!    row of the company or contact they reference.
//! 3. [`resolve`] — the changed records, the unified rows they belonged to
//!    and the rows their keys now match are linked again
//!    (`crm_sync_core::model::identity`); ids that disappear are recorded in
//!    `crm.merged_ids` as merged into the surviving id.
//! 4. [`survive`] — for the affected unified rows, each field takes its
//!    value by the rules of `crm_sync_core::model::survive`, and the row is
//!    written with its lineage.
//!
//! A full merge stages every landing row and resolves every record; it gives
//! the same result as the incremental steps. Every step reads in pages, each
//! in its own SPI connection, so memory stays flat.

mod link;
mod resolve;
mod sql;
mod stage;
mod survive;

use std::collections::HashMap;

use pgrx::prelude::*;

use crate::{gucs, locks, txn};
use crm_sync_core::model::{link_targets, ENTITIES};

/// Ready what the merge after a sync will need while the sync runs (the
/// phone metadata, loaded on a thread of its own).
pub fn before_sync() {
    if gucs::MERGE_AFTER_SYNC.get() {
        crm_sync_core::model::clean::warm_phone();
    }
}

/// Merge one stream's changes after its sync, in a subtransaction: a merge
/// that fails (a broken mapping expression, say) leaves the sync's rows in
/// place and is reported as a warning, for `crm_sync.merge()` to redo.
pub fn after_sync(source: &str, stream: &str, run_id: i64) -> Option<String> {
    if !gucs::MERGE_AFTER_SYNC.get() {
        return None;
    }
    // A stream merged before but mapped no more: its merge takes its
    // records out of the model.
    let mapped = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM crm_sync.streams t JOIN crm_sync.sources s ON s.name = t.source
                          JOIN crm_sync.mappings m ON m.provider = s.provider AND m.object = t.object AND m.enabled
                         WHERE t.source = $1 AND t.stream = $2)
             OR EXISTS (SELECT 1 FROM crm_sync.merge_state WHERE source = $1 AND stream = $2)",
        &[source.into(), stream.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if !mapped {
        return None;
    }
    match txn::in_subtransaction(|| run(Some((source, stream)), false)) {
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
    locks::merge_for_transaction();
    crm_sync_core::model::clean::warm_phone();
    // Mappings are parsed as their check parsed them, whatever the session
    // set: a string literal must not turn into code, or a date into another
    // date, between the check and the merge.
    let saved = pin_parse_settings();
    let mut out = Vec::new();
    // The unified ids each entity's merge recomputed: records linked to
    // them (a contact's company, say) are linked again, whether the group
    // merged, split, changed its id or disappeared.
    let mut touched: HashMap<&str, Vec<i64>> = HashMap::new();
    // Entities merged whole (not by their changed records).
    let mut whole: Vec<&str> = Vec::new();
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
        // Records to link again (new, or their keys changed), and records
        // whose values alone changed (their rows are recomputed).
        let mut changed: Vec<i64> = Vec::new();
        let mut valued: Vec<i64> = Vec::new();
        let mut entity_full = full;
        // Past this many changed records, the steps after staging run over
        // the whole entity (the same result, in pages, with memory that
        // does not grow with the change).
        let follow_at_most = gucs::MERGE_FOLLOW_AT_MOST.get().max(0) as usize;
        let lap = |what: &str| {
            crate::report::debug1!(
                "pg_crm_sync merge {entity}: {what} after {:?}",
                t0.elapsed()
            )
        };
        for s in stage::streams(entity, only) {
            let keep = if entity_full {
                0
            } else {
                follow_at_most.saturating_sub(changed.len() + valued.len())
            };
            let staged = stage::stage(entity, &s, full, keep);
            st.changed += staged.count;
            st.invalid += staged.invalid;
            match staged.ids {
                Some(ids) if !entity_full => {
                    changed.extend(ids.keyed);
                    valued.extend(ids.valued);
                }
                _ => {
                    entity_full = true;
                    changed = Vec::new();
                    valued = Vec::new();
                }
            }
        }
        lap("staged");
        // The steps below read what was just written, by entity; the
        // planner must know it is there. Statistics from before (a first
        // merge of empty tables, or of another entity only) make it expect
        // one row and loop over every record of the entity for each one.
        let big = st.changed > 1_000 && stats_lag(entity, st.changed as usize);
        if big {
            // The columns the steps join and filter on: the values (vals)
            // are never a condition, and their statistics took a third of
            // the time.
            Spi::run(
                "ANALYZE crm_sync.source_records (entity, source, stream, external_id, record_id, email, phone,
                                                  name_key, domain, company_key, company_ref, company_id,
                                                  contact_ref, contact_id, merged_into)",
            )
            .expect("analyze crm_sync.source_records");
        }
        // Records of streams that are gone (a dropped source, a dropped
        // landing table) leave the model.
        let (rest, emptied) = link::prune(entity, full);
        changed.extend(rest);
        for target in link_targets(entity) {
            let targets = touched.get(target).map(Vec::as_slice).unwrap_or_default();
            // Every link is checked when the target, or this entity, was
            // merged whole.
            let link_all = entity_full || whole.contains(target);
            match link::link(entity, target, &changed, targets, link_all) {
                link::Moved::Records(moved) => changed.extend(moved),
                // Links moved in a whole target: this entity's rows that
                // show them are recomputed whole too.
                link::Moved::Count(n) if n > 0 => {
                    entity_full = true;
                    changed = Vec::new();
                    valued = Vec::new();
                }
                link::Moved::Count(_) => {}
            }
        }
        // Links can bring many more (a company merge moving the links of
        // all its contacts), and a dropped source empties all its rows:
        // past the limit, the entity goes whole too (in pages, not lists).
        if !entity_full && (changed.len() > follow_at_most || emptied.len() > follow_at_most) {
            entity_full = true;
            changed = Vec::new();
            valued = Vec::new();
        }
        lap("linked");
        if !changed.is_empty() || !emptied.is_empty() || !valued.is_empty() || entity_full {
            // (Records whose values alone changed keep their links.)
            let resolve::Resolved {
                mut affected,
                mut left,
                merged,
                whole: linked_whole,
            } = if changed.is_empty() && !entity_full {
                resolve::Resolved::default()
            } else {
                resolve::resolve(entity, &changed, entity_full)
            };
            entity_full |= linked_whole;
            // (A whole entity's rows are all recomputed: no list.)
            if !entity_full {
                affected.extend_from_slice(&emptied);
                left.extend(emptied);
                affected.extend(resolve::rows_of(entity, &valued));
            }
            affected.sort_unstable();
            affected.dedup();
            left.sort_unstable();
            left.dedup();
            if big {
                Spi::run("ANALYZE crm_sync.unified_ids").expect("analyze crm_sync.unified_ids");
            }
            lap("resolved");
            st.merged = merged;
            st.unified = survive::survive(entity, &affected, &left, entity_full);
            lap("survived");
            if entity_full {
                whole.push(entity);
            } else {
                touched.insert(entity, affected);
            }
        }
        st.micros = t0.elapsed().as_micros() as i64;
        out.push(st);
    }
    // The keys a whole entity's merge wrote wait in the pending list of
    // their index, which each lookup of the next merge would read whole.
    if !whole.is_empty() {
        Spi::run("SELECT crm_sync._flush_match_keys()").expect("flush the match keys' index");
    }
    Spi::run(
        "DELETE FROM crm_sync.merge_state m
          WHERE NOT EXISTS (SELECT 1 FROM crm_sync.streams t WHERE t.source = m.source AND t.stream = m.stream)
             OR to_regclass(format('%I.%I', m.source, m.stream)) IS NULL",
    )
    .expect("forget merge state of gone streams");
    restore_settings(saved);
    out
}

/// The settings that decide how a mapping parses and converts: set for
/// this transaction; returns the values they had.
fn pin_parse_settings() -> Vec<(&'static str, String)> {
    [
        ("standard_conforming_strings", "on"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        // Each page's query would be JIT-compiled again (its plan is not
        // kept): compiling costs more than it saves at 5,000 rows a page.
        ("jit", "off"),
        // The model's tables are read by key, mostly from cache: at the
        // default 4 the planner scans all of unified_ids (or
        // source_records) to join a few thousand changed records.
        ("random_page_cost", "1.1"),
        // Every cursor the merge opens is read to its end: planned for its
        // first rows (the default 0.1), grouping 100 changed records read
        // the whole index of a key in its order instead (0.45 s at
        // 1,000,000 records).
        ("cursor_tuple_fraction", "1"),
        // Its reads are by key, a page at a time: parallel workers cost more
        // to start than they save (an incremental merge's survivorship
        // read of 4,000 records took 64 ms with two workers, about 30
        // without).
        ("max_parallel_workers_per_gather", "0"),
    ]
    .into_iter()
    .map(|(name, value)| {
        let old = Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.current_setting($1)",
            &[name.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        set_setting(name, value);
        (name, old)
    })
    .collect()
}

fn restore_settings(saved: Vec<(&'static str, String)>) {
    for (name, value) in saved {
        set_setting(name, &value);
    }
}

fn set_setting(name: &str, value: &str) {
    Spi::run_with_args(
        "SELECT pg_catalog.set_config($1, $2, true)",
        &[name.into(), value.into()],
    )
    .expect("set a merge setting");
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
