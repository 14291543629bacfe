//! Step 2: records of gone streams (a dropped source or landing table)
//! leave the model, and records point at the unified row of the company
//! or contact they reference.

use pgrx::prelude::*;

use crm_sync_core::model::{table, Ref, REFS};

use super::sql::{target_of, JOIN_KU, MAPPED_STREAMS, UNIFIED_OF_K};

/// Drop the records of streams that are gone: the source was dropped, or the
/// landing table, or the stream no longer maps to this entity (its mappings
/// deleted or disabled). An incremental merge finds those streams in
/// `crm_sync.merge_state`; a full one checks every record. Returns the
/// remaining records of the unified rows that lost some (to link again) and
/// the unified ids that lost any (to recompute, or delete when none is
/// left).
pub fn prune(entity: &str, full: bool) -> (Vec<i64>, Vec<i64>) {
    // Gone: no landing table, or no longer a stream staging reads.
    let gone = format!(
        "(to_regclass(format('%I.%I', g.source, g.stream)) IS NULL
          OR NOT EXISTS (SELECT 1 FROM {MAPPED_STREAMS} WHERE t.source = g.source AND t.stream = g.stream))"
    );
    // Each stream is checked once, not each record (400,000 records'
    // checks took 0.4 s).
    let streams = if full {
        "(SELECT DISTINCT source, stream FROM crm_sync.source_records WHERE entity = $1)"
    } else {
        "(SELECT source, stream FROM crm_sync.merge_state WHERE entity = $1)"
    };
    // The gone streams first: most merges have none, and then nothing is
    // read (a delete over a join read every record of the entity).
    let (gone_sources, gone_streams): (Vec<String>, Vec<String>) = Spi::connect(|c| {
        c.select(
            &format!("SELECT DISTINCT g.source, g.stream FROM {streams} g WHERE {gone}"),
            None,
            &[entity.into()],
        )
        .expect("find gone streams")
        .map(|r| {
            (
                r.get::<String>(1).ok().flatten().unwrap_or_default(),
                r.get::<String>(2).ok().flatten().unwrap_or_default(),
            )
        })
        .unzip()
    });
    if gone_sources.is_empty() {
        return (Vec::new(), Vec::new());
    }
    for (source, stream) in gone_sources.iter().zip(&gone_streams) {
        crate::report::notice!(
            "the records of {source}.{stream} leave crm.{}: the stream is gone or no longer mapped to {entity} (see crm_sync.mappings)",
            table(entity)
        );
    }
    // Rows of table `a` of the gone streams.
    let of_gone = |a: &str| {
        format!("({a}.source, {a}.stream) IN (SELECT * FROM unnest($2::text[], $3::text[]))")
    };
    let (which, which_m) = (of_gone("r"), of_gone("m"));
    let rows: Vec<(i64, bool)> = Spi::connect_mut(|c| {
        c.update(
            &format!(
                "WITH d AS (
                    DELETE FROM crm_sync.source_records r WHERE r.entity = $1 AND {which}
                    RETURNING r.source, r.stream, r.record_id),
                 i AS (DELETE FROM crm_sync.invalid_values v USING (SELECT DISTINCT source, stream FROM d) g
                        WHERE v.entity = $1 AND v.source = g.source AND v.stream = g.stream),
                 -- Mapped again later, the stream is staged from its start.
                 s AS (DELETE FROM crm_sync.merge_state m WHERE m.entity = $1 AND {which_m}),
                 -- The rows they were in (read as they were before this
                 -- statement: a record without a unified_ids row is in
                 -- the row of its own id).
                 was AS MATERIALIZED (
                    SELECT DISTINCT coalesce(x.unified_id, d.record_id) AS unified_id
                      FROM d LEFT JOIN crm_sync.unified_ids x ON x.entity = $1 AND x.record_id = d.record_id),
                 u AS (DELETE FROM crm_sync.unified_ids WHERE entity = $1 AND record_id IN (SELECT record_id FROM d)),
                 -- Their other records: those pointing at the row, and the
                 -- row's own record.
                 rest AS (SELECT g.record_id FROM crm_sync.unified_ids g
                           WHERE g.entity = $1 AND g.unified_id IN (SELECT unified_id FROM was)
                          UNION
                          SELECT o.record_id FROM crm_sync.source_records o
                           WHERE o.entity = $1 AND o.record_id IN (SELECT unified_id FROM was))
                 -- (An anti-join: a NOT IN list too large for work_mem
                 -- was read again for each record.)
                 SELECT r.record_id, false FROM rest r WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.record_id = r.record_id)
                 UNION ALL
                 SELECT unified_id, true FROM was"
            ),
            None,
            &[entity.into(), gone_sources.into(), gone_streams.into()],
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

/// Point records at the unified `target` row of their reference (in the same
/// source): the changed ones (every one, `full`), those linked to a target
/// row this merge recomputed (`targets`: merged, split, renamed or gone), and
/// those whose target had not landed yet. Returns the records whose link
/// changed: their ids, or (`full`, where there may be any number) how many.
pub fn link(entity: &str, target: &str, changed: &[i64], targets: &[i64], full: bool) -> Moved {
    let Some(Ref {
        field: rf,
        column: id,
        ..
    }) = REFS.iter().find(|r| r.target == target)
    else {
        return Moved::Records(Vec::new());
    };
    // Each kind of candidate found through its own index (one OR over them
    // would read every record of the entity).
    let scope = if full {
        // Records with neither a reference nor a link have nothing to change.
        format!(
            "SELECT record_id FROM crm_sync.source_records
              WHERE entity = $1 AND ({rf} IS NOT NULL OR {id} IS NOT NULL)"
        )
    } else {
        // A reference still unresolved can resolve only when target records
        // changed in this merge (`targets`): otherwise they are not looked
        // at (there may be millions, referring to objects never synced).
        let unresolved = if targets.is_empty() {
            String::new()
        } else {
            format!(
                "UNION SELECT record_id FROM crm_sync.source_records
                        WHERE entity = $1 AND {id} IS NULL AND {rf} IS NOT NULL"
            )
        };
        format!(
            "SELECT record_id FROM crm_sync.source_records WHERE entity = $1 AND record_id = ANY ($2)
                AND ({rf} IS NOT NULL OR {id} IS NOT NULL)
             UNION SELECT record_id FROM crm_sync.source_records WHERE entity = $1 AND {id} = ANY ($4)
             {unresolved}"
        )
    };
    let tail = if full {
        "SELECT count(*) FROM moved"
    } else {
        "SELECT record_id FROM moved"
    };
    // The target of a reference (`target_of`). A whole link joins every
    // reference at once, the same rule as a join; a link of some records
    // looks each up.
    let want = if full {
        format!(
            "targets AS (
                SELECT DISTINCT ON (k.source, k.external_id) k.source, k.external_id, {UNIFIED_OF_K} AS unified_id
                  FROM crm_sync.source_records k {JOIN_KU}
                 WHERE k.entity = $3
                 ORDER BY k.source, k.external_id, k.stream),
             want AS (
                SELECT r.record_id, t.unified_id AS target_id
                  FROM crm_sync.source_records r
                  LEFT JOIN targets t ON t.source = r.source AND t.external_id = r.{rf}
                 WHERE r.entity = $1 AND r.record_id IN ({scope}))"
        )
    } else {
        format!(
            "want AS (
                SELECT r.record_id, CASE WHEN r.{rf} IS NOT NULL THEN {} END AS target_id
                  FROM crm_sync.source_records r
                 WHERE r.entity = $1 AND r.record_id IN ({scope}))",
            target_of("$3", "r.source", &format!("r.{rf}"))
        )
    };
    let rows: Vec<i64> = Spi::connect_mut(|c| {
        c.update(
            &format!(
                "WITH {want},
                 moved AS (
                    UPDATE crm_sync.source_records r SET {id} = w.target_id
                      FROM want w
                     WHERE r.entity = $1 AND r.record_id = w.record_id AND r.{id} IS DISTINCT FROM w.target_id
                    RETURNING r.record_id)
                 {tail}"
            ),
            None,
            &[
                entity.into(),
                changed.into(),
                target.into(),
                targets.into(),
            ],
        )
        .unwrap_or_else(|e| panic!("link {entity} records to their {target}: {e}"))
        .map(|r| r.get::<i64>(1).ok().flatten().unwrap_or_default())
        .collect()
    });
    if full {
        Moved::Count(rows.first().copied().unwrap_or_default())
    } else {
        Moved::Records(rows)
    }
}

/// The records whose link changed.
pub enum Moved {
    Records(Vec<i64>),
    Count(i64),
}
