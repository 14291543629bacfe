//! Step 3: link the changed records (every record, in a full merge) again
//! by the enabled match rules, write their unified ids, and record ids
//! merged into others in `crm.merged_ids`.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pgrx::prelude::*;

use crm_sync_core::model::identity::{self, Groups, Scoped, HASHED_KEYS};
use crm_sync_core::model::{key_column, table, REFS};

use super::sql::{each_page, FETCH};
use crate::gucs;

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
        .map(|keys| keys.iter().filter_map(|k| key_column(k)).collect())
        .collect()
}

/// `first`, then every column a rule compares, each once, in order.
fn rule_columns(first: &[&'static str], rules: &[Vec<&'static str>]) -> Vec<&'static str> {
    let mut cols = first.to_vec();
    for c in rules.iter().flatten() {
        if !cols.contains(c) {
            cols.push(c);
        }
    }
    cols
}

/// Whether `column` of `crm_sync.source_records` is a link (a company or
/// contact id, bigint) rather than a text key.
fn is_link(column: &str) -> bool {
    REFS.iter().any(|r| r.column == column)
}

/// What linking records again did.
#[derive(Default)]
pub struct Resolved {
    /// The unified ids to recompute (none listed when whole).
    pub affected: Vec<i64>,
    /// Those of `affected` that may have lost their last record.
    pub left: Vec<i64>,
    /// How many ids were merged into others.
    pub merged: i64,
    /// Whether every record of the entity was linked again (asked, or the
    /// changed records' scope was too large to hold): every row is to be
    /// recomputed.
    pub whole: bool,
}

/// Link records again (every record of the entity, `full`).
pub fn resolve(entity: &str, changed: &[i64], full: bool) -> Resolved {
    let t = std::time::Instant::now();
    let rules = rules(entity);
    if !full {
        return resolve_changed(entity, changed, &rules, t);
    }
    // Each rule's key: its columns, every one present, grouped by the
    // columns themselves (a text joined from them was built for every
    // record: 1.37 s of grouping in a first merge of 400,000, 1.23 s now).
    // Texts are grouped bytewise (equal under any deterministic collation,
    // and sorted without the database's: 0.64 s -> 0.53 s for 400,000
    // emails in C.UTF-8).
    let keys: Vec<(String, String)> = rules
        .iter()
        .map(|cols| {
            let present: Vec<String> = cols.iter().map(|c| format!("r.{c} IS NOT NULL")).collect();
            let parts: Vec<String> = cols
                .iter()
                .map(|c| {
                    if is_link(c) {
                        format!("r.{c}")
                    } else {
                        format!("r.{c} COLLATE \"C\"")
                    }
                })
                .collect();
            (present.join(" AND "), parts.join(", "))
        })
        .collect();
    // The records that share a rule's key with another: each key's
    // records, one group at a time through a cursor, into union-find.
    // Records that share no key are groups of their own and never leave
    // the database.
    let mut groups = Groups::default();
    let mut linking: Vec<String> = keys
        .iter()
        .filter(|(present, _)| !present.is_empty())
        .map(|(present, cols)| {
            format!(
                "SELECT array_agg(r.record_id), array_agg({FIRST_SEEN_R})
                   FROM crm_sync.source_records r
                  WHERE r.entity = $1 AND {present}
                  GROUP BY {cols} HAVING count(*) > 1"
            )
        })
        .collect();
    // A record the CRM merged into another is one with it, whatever the
    // rules say (the old one is deleted: the new one takes its place).
    linking.push(
        "SELECT ARRAY[r.record_id, t.record_id],
                ARRAY[(extract(epoch FROM r.first_seen) * 1e6)::int8, (extract(epoch FROM t.first_seen) * 1e6)::int8]
           FROM crm_sync.source_records r
           JOIN crm_sync.source_records t ON t.entity = r.entity AND t.record_id = r.merged_into
          WHERE r.entity = $1 AND r.merged_into IS NOT NULL"
            .to_owned(),
    );
    // In memory while the records sharing keys are few enough (some 200
    // bytes each, their unified ids included); past that, in SQL.
    let budget = gucs::MERGE_LINK_IN_MEMORY.get().max(0) as usize;
    let mut in_memory = true;
    for sql in &linking {
        each_page(sql, &[entity.into()], |_, page, _| {
            for row in page {
                let ids: Vec<i64> = row.get(1).ok().flatten().unwrap_or_default();
                // Checked before each key's records join: one key can be
                // shared by millions (a placeholder email).
                if groups.len() + ids.len() > budget {
                    in_memory = false;
                    return false;
                }
                let seen: Vec<i64> = row.get(2).ok().flatten().unwrap_or_default();
                let same: Vec<(i64, i64)> = ids.into_iter().zip(seen).collect();
                groups.link(&same);
            }
            true
        });
        if !in_memory {
            break;
        }
    }
    // The unified id of every record linked to another: from memory as
    // arrays (no temporary table: one a caller created in this session
    // could carry triggers), or labelled in crm_sync.link_labels; every
    // other record's unified id is its own id.
    let (linked, linked_rid, linked_uid): (&str, Vec<i64>, Vec<i64>) = if in_memory {
        crate::report::debug1!(
            "pg_crm_sync merge {entity}: linked {} records that share a key after {:?}",
            groups.len(),
            t.elapsed()
        );
        let (rid, uid) = groups.leaders().into_iter().unzip();
        ("unnest($2::int8[], $3::int8[])", rid, uid)
    } else {
        drop(std::mem::take(&mut groups));
        let rounds = label_in_rounds(entity, &keys);
        crate::report::debug1!(
            "pg_crm_sync merge {entity}: past {budget} records that share a key, linked them in SQL in {rounds} rounds after {:?}",
            t.elapsed()
        );
        (
            "(SELECT k.record_id, k.lid FROM crm_sync.link_labels k)",
            Vec::new(),
            Vec::new(),
        )
    };
    drop(groups);
    let t_crm = table(entity);
    // The entity's first merge: no id to replace, none merged away. Only
    // the records that are not their row's own get a row.
    if first_ids(entity, t_crm) {
        Spi::connect_mut(|c| {
            c.update(
                &format!(
                    "INSERT INTO crm_sync.unified_ids (entity, record_id, unified_id)
                     SELECT $1, l.record_id, l.unified_id
                       FROM {linked} l(record_id, unified_id)
                      WHERE l.unified_id <> l.record_id
                      ORDER BY l.record_id"
                ),
                None,
                &[entity.into(), linked_rid.into(), linked_uid.into()],
            )
            .expect("write unified ids");
        });
        done_with_labels(in_memory);
        crate::report::debug1!(
            "pg_crm_sync merge {entity}: wrote the first unified ids after {:?}",
            t.elapsed()
        );
        return Resolved {
            whole: true,
            ..Resolved::default()
        };
    }
    // One statement: the new unified id of every record; old ids that no
    // longer name a group were merged into the group of their earliest
    // record (crm.merged_ids, chains followed); then the ids are written
    // (an incremental merge does the same for its records in Rust:
    // `identity::relink`).
    let merged: i64 = Spi::connect_mut(|c| {
        c.update(
                &format!(
                    // old: the record's unified id before, NULL for a
                    // record new to the model. A record without a
                    // unified_ids row was in the row of its own id if that
                    // row exists (every record merged before is in a
                    // unified row, which goes only with its last record).
                    // had: its unified_ids row.
                    "WITH n AS MATERIALIZED (
                        SELECT r.record_id, r.first_seen, u.unified_id AS had,
                               CASE WHEN u.unified_id IS NOT NULL THEN u.unified_id
                                    WHEN o.id IS NOT NULL THEN r.record_id END AS old,
                               coalesce(l.unified_id, r.record_id) AS new
                          FROM crm_sync.source_records r
                          LEFT JOIN crm_sync.unified_ids u ON u.entity = r.entity AND u.record_id = r.record_id
                          LEFT JOIN crm.{t_crm} o ON o.id = r.record_id
                          LEFT JOIN {linked} l(record_id, unified_id)
                                 ON l.record_id = r.record_id
                         WHERE r.entity = $1),
                     m AS MATERIALIZED (
                        SELECT DISTINCT ON (n.old) n.old AS old_id, n.new AS new_id
                          FROM n
                         WHERE n.old IS NOT NULL
                           AND NOT EXISTS (SELECT 1 FROM n k WHERE k.record_id = n.old AND k.new = n.old)
                         ORDER BY n.old, n.first_seen, n.record_id),
                     chain AS (UPDATE crm.merged_ids x SET new_id = m.new_id FROM m
                                WHERE x.entity = $1 AND x.new_id = m.old_id),
                     ins AS (INSERT INTO crm.merged_ids (entity, old_id, new_id)
                             SELECT $1, old_id, new_id FROM m
                             ON CONFLICT (entity, old_id) DO UPDATE SET new_id = EXCLUDED.new_id, merged_at = now()),
                     -- A row for each record that is not its row's own,
                     -- none for the others. In key order: each insert lands
                     -- next to the last (half the time of a random order).
                     -- Only ids that change: an unchanged row is not even
                     -- locked.
                     w AS (INSERT INTO crm_sync.unified_ids AS t (entity, record_id, unified_id)
                           SELECT $1, n.record_id, n.new FROM n
                            WHERE n.new <> n.record_id AND n.had IS DISTINCT FROM n.new
                            ORDER BY n.record_id
                           ON CONFLICT (entity, record_id) DO UPDATE SET unified_id = EXCLUDED.unified_id
                            WHERE t.unified_id IS DISTINCT FROM EXCLUDED.unified_id),
                     own AS (DELETE FROM crm_sync.unified_ids t USING n
                              WHERE t.entity = $1 AND t.record_id = n.record_id
                                AND n.new = n.record_id AND n.had IS NOT NULL)
                     SELECT count(*) FROM m"
                ),
                None,
                &[entity.into(), linked_rid.into(), linked_uid.into()],
            )
            .expect("write unified ids")
            .first()
            .get::<i64>(1)
            .ok()
            .flatten()
            .unwrap_or_default()
    });
    done_with_labels(in_memory);
    crate::report::debug1!(
        "pg_crm_sync merge {entity}: wrote unified ids after {:?}",
        t.elapsed()
    );
    Resolved {
        merged,
        whole: true,
        ..Resolved::default()
    }
}

/// The first seen time of record `r` as union-find orders records
/// (microseconds since the epoch).
const FIRST_SEEN_R: &str = "(extract(epoch FROM r.first_seen) * 1e6)::int8";

/// Link the records of `entity` that share a key (`keys`: each rule's
/// presence test and grouping columns) or were merged into one another,
/// in SQL, in flat memory: each gets a label in `crm_sync.link_labels`, its
/// own first seen time and id; then, in rounds, every group of a key (or
/// record and its merge) takes its members' lowest label, until no label
/// moves. Each record ends labelled with the earliest record (then the
/// smallest id) of all it is linked to, as `identity::Groups` names it.
/// Returns how many rounds it took.
fn label_in_rounds(entity: &str, keys: &[(String, String)]) -> usize {
    Spi::run("TRUNCATE crm_sync.link_labels").expect("empty crm_sync.link_labels");
    let rules: Vec<&(String, String)> = keys
        .iter()
        .filter(|(present, _)| !present.is_empty())
        .collect();
    let run = |sql: &str| -> usize {
        let n = Spi::connect_mut(|c| {
            c.update(sql, None, &[entity.into()])
                .expect("link records in SQL")
                .len()
        });
        pgrx::check_for_interrupts!();
        n
    };
    for (present, cols) in &rules {
        // Each record of a key shared by several, labelled at once with the
        // key's earliest record (what a first round would do).
        run(&format!(
            "INSERT INTO crm_sync.link_labels AS l (record_id, lfs, lid)
             SELECT s.record_id, s.lfs, s.lid
               FROM (SELECT r.record_id, count(*) OVER k AS n,
                            first_value({FIRST_SEEN_R}) OVER f AS lfs, first_value(r.record_id) OVER f AS lid
                       FROM crm_sync.source_records r
                      WHERE r.entity = $1 AND {present}
                     WINDOW k AS (PARTITION BY {cols}), f AS (k ORDER BY r.first_seen, r.record_id)) s
              WHERE s.n > 1
             ON CONFLICT (record_id) DO UPDATE SET lfs = EXCLUDED.lfs, lid = EXCLUDED.lid
              WHERE (EXCLUDED.lfs, EXCLUDED.lid) < (l.lfs, l.lid)"
        ));
    }
    // A record the CRM merged into another, and that one.
    const MERGES: &str = "SELECT r.record_id AS a, t.record_id AS b
                            FROM crm_sync.source_records r
                            JOIN crm_sync.source_records t ON t.entity = r.entity AND t.record_id = r.merged_into
                           WHERE r.entity = $1 AND r.merged_into IS NOT NULL";
    run(&format!(
        "INSERT INTO crm_sync.link_labels (record_id, lfs, lid)
         SELECT r.record_id, {FIRST_SEEN_R}, r.record_id
           FROM crm_sync.source_records r
          WHERE r.entity = $1
            AND r.record_id IN (SELECT e.a FROM ({MERGES}) e UNION ALL SELECT e.b FROM ({MERGES}) e)
         ON CONFLICT (record_id) DO NOTHING"
    ));
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut moved = 0;
        // Each key's records take their lowest label, and so do the records
        // their labels name (hooking: a label's own record may lag behind
        // the records pointing at it).
        for (present, cols) in &rules {
            moved += run(&format!(
                "WITH g AS (SELECT l.record_id, l.lid AS was,
                                   first_value(l.lfs) OVER w AS lfs, first_value(l.lid) OVER w AS lid
                              FROM crm_sync.source_records r
                              JOIN crm_sync.link_labels l ON l.record_id = r.record_id
                             WHERE r.entity = $1 AND {present}
                            WINDOW w AS (PARTITION BY {cols} ORDER BY l.lfs, l.lid)),
                      c AS (SELECT DISTINCT ON (u.x) u.x, u.lfs, u.lid
                              FROM (SELECT g.record_id AS x, g.lfs, g.lid FROM g
                                    UNION ALL
                                    SELECT g.was, g.lfs, g.lid FROM g) u
                             ORDER BY u.x, u.lfs, u.lid)
                 UPDATE crm_sync.link_labels l SET lfs = c.lfs, lid = c.lid
                   FROM c
                  WHERE l.record_id = c.x AND (c.lfs, c.lid) < (l.lfs, l.lid)"
            ));
        }
        // Each label takes its own record's label (pointer jumping): with
        // hooking, a chain of records linked one to the next (a shares an
        // email with b, b a phone and name with c, ...) takes far fewer
        // rounds than it has links.
        moved += run("UPDATE crm_sync.link_labels l SET lfs = p.lfs, lid = p.lid
               FROM crm_sync.link_labels p
              WHERE p.record_id = l.lid AND (p.lfs, p.lid) < (l.lfs, l.lid)");
        moved += run(&format!(
            "WITH e AS ({MERGES}),
                  p AS (SELECT e.a AS x, e.b AS y FROM e UNION ALL SELECT e.b, e.a FROM e),
                  m AS (SELECT DISTINCT ON (p.x) p.x, y.lfs, y.lid
                          FROM p JOIN crm_sync.link_labels y ON y.record_id = p.y
                         ORDER BY p.x, y.lfs, y.lid)
             UPDATE crm_sync.link_labels l SET lfs = m.lfs, lid = m.lid
               FROM m
              WHERE l.record_id = m.x AND (m.lfs, m.lid) < (l.lfs, l.lid)"
        ));
        if moved == 0 {
            return rounds;
        }
    }
}

/// Empty `crm_sync.link_labels` once the unified ids it gave are written
/// (when the records were linked in SQL).
fn done_with_labels(in_memory: bool) {
    if !in_memory {
        Spi::run("TRUNCATE crm_sync.link_labels").expect("empty crm_sync.link_labels");
    }
}

/// An incremental merge's step: link again the changed records, the
/// unified rows they were in and the records their keys now match (the
/// scope), in memory (at most twice `crm_sync.merge_follow_at_most`
/// records, and 200,000: past that the entity is linked whole), read once
/// with what linking needs; then write the ids that changed.
fn resolve_changed(
    entity: &str,
    changed: &[i64],
    rules: &[Vec<&'static str>],
    t: std::time::Instant,
) -> Resolved {
    let (ch, cand) = candidates(entity, changed, rules);
    // Every column a rule compares, once; each rule's by position.
    let cols = rule_columns(&[], rules);
    let rule_cols: Vec<Vec<usize>> = rules
        .iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            r.iter()
                .map(|c| cols.iter().position(|x| x == c).expect("listed"))
                .collect()
        })
        .collect();
    let as_text: Vec<String> = cols.iter().map(|c| format!(", r.{c}::text")).collect();
    let t_crm = table(entity);
    // The scope: the changed records, the rows the candidates are in (each
    // row's own record, its id, and the records pointing at it), each
    // record with its first sighting, its unified_ids row, whether a
    // unified row has its id, the record it was merged into and its keys.
    let sql = format!(
        "WITH rows AS MATERIALIZED (
            SELECT DISTINCT coalesce(xu.unified_id, x) AS unified_id
              FROM unnest($3::int8[]) x
              LEFT JOIN crm_sync.unified_ids xu ON xu.entity = $1 AND xu.record_id = x),
              scope AS MATERIALIZED (
            SELECT s FROM unnest($2::int8[]) s
             UNION
            SELECT unified_id FROM rows
             UNION
            SELECT g.record_id FROM crm_sync.unified_ids g
             WHERE g.entity = $1 AND g.unified_id IN (SELECT unified_id FROM rows))
         SELECT r.record_id, (extract(epoch FROM r.first_seen) * 1e6)::int8, u.unified_id,
                EXISTS (SELECT 1 FROM crm.{t_crm} o WHERE o.id = r.record_id), r.merged_into{}
           FROM scope
           JOIN crm_sync.source_records r ON r.entity = $1 AND r.record_id = scope.s
           LEFT JOIN crm_sync.unified_ids u ON u.entity = $1 AND u.record_id = r.record_id",
        as_text.concat()
    );
    let mut scope: Vec<Scoped> = Vec::new();
    // Per rule, the first record of each key: the next with that key joins it.
    let mut first: Vec<HashMap<String, (i64, i64)>> = vec![HashMap::new(); rule_cols.len()];
    let mut merged_into: Vec<(i64, i64, i64)> = Vec::new();
    let mut groups = Groups::default();
    // The scope is held in memory (some 200 bytes a record): past twice
    // crm_sync.merge_follow_at_most records, and never past 200,000 (rows
    // of thousands of records the changed ones joined), the entity is
    // linked whole instead, in pages.
    let at_most = (2 * gucs::MERGE_FOLLOW_AT_MOST.get().max(0) as usize).min(200_000);
    let mut too_many = false;
    Spi::connect_mut(|c| {
        let mut cur = c.open_cursor(&sql, &[entity.into(), ch.into(), cand.into()]);
        while !too_many {
            let page = cur.fetch(FETCH).expect("read the records to link again");
            let n = page.len();
            for row in page {
                let r = Scoped {
                    id: row.get(1).ok().flatten().unwrap_or_default(),
                    first_seen: row.get(2).ok().flatten().unwrap_or_default(),
                    had: row.get(3).ok().flatten(),
                    own_row: row.get(4).ok().flatten().unwrap_or(false),
                };
                if let Some(into) = row.get::<i64>(5).ok().flatten() {
                    merged_into.push((r.id, r.first_seen, into));
                }
                let vals: Vec<Option<String>> = (0..cols.len())
                    .map(|i| row.get(6 + i).ok().flatten())
                    .collect();
                for (on, seen) in rule_cols.iter().zip(first.iter_mut()) {
                    // Every key of the rule present, compared bytewise
                    // (text has no NUL byte to stand between them).
                    let Some(parts) = on
                        .iter()
                        .map(|&i| vals[i].as_deref())
                        .collect::<Option<Vec<&str>>>()
                    else {
                        continue;
                    };
                    match seen.entry(parts.join("\0")) {
                        Entry::Occupied(e) => groups.link(&[*e.get(), (r.id, r.first_seen)]),
                        Entry::Vacant(e) => {
                            e.insert((r.id, r.first_seen));
                        }
                    }
                }
                scope.push(r);
            }
            too_many = scope.len() > at_most;
            pgrx::check_for_interrupts!();
            if (n as i64) < FETCH {
                break;
            }
        }
    });
    drop(first);
    if too_many {
        crate::report::debug1!(
            "pg_crm_sync merge {entity}: more than {at_most} records to link again: linking every record"
        );
        drop((scope, groups, merged_into));
        return resolve(entity, &[], true);
    }
    crate::report::debug1!(
        "pg_crm_sync merge {entity}: found {} records to link again after {:?}",
        scope.len(),
        t.elapsed()
    );
    // A record the CRM merged into another is one with it, whatever the
    // rules say (the old one is deleted: the new one takes its place).
    if !merged_into.is_empty() {
        let seen: HashMap<i64, i64> = scope.iter().map(|r| (r.id, r.first_seen)).collect();
        for (id, first_seen, into) in merged_into {
            if let Some(&s) = seen.get(&into) {
                groups.link(&[(id, first_seen), (into, s)]);
            }
        }
    }
    crate::report::debug1!(
        "pg_crm_sync merge {entity}: linked {} records that share a key after {:?}",
        groups.len(),
        t.elapsed()
    );
    let ids = identity::relink(&scope, &mut groups);
    drop(scope);
    drop(groups);
    let merged = ids.merged.len() as i64;
    if !(ids.merged.is_empty() && ids.point.is_empty() && ids.own.is_empty()) {
        let (old, new): (Vec<i64>, Vec<i64>) = ids.merged.into_iter().unzip();
        let (rid, uid): (Vec<i64>, Vec<i64>) = ids.point.into_iter().unzip();
        Spi::run_with_args(
            // Ids merged away (chains followed); a row for each record that
            // is not its row's own (in key order: each insert lands next
            // to the last), none for the others.
            "WITH m AS (SELECT * FROM unnest($2::int8[], $3::int8[]) m(old_id, new_id)),
                  chain AS (UPDATE crm.merged_ids x SET new_id = m.new_id FROM m
                             WHERE x.entity = $1 AND x.new_id = m.old_id),
                  ins AS (INSERT INTO crm.merged_ids (entity, old_id, new_id)
                          SELECT $1, old_id, new_id FROM m
                          ON CONFLICT (entity, old_id) DO UPDATE SET new_id = EXCLUDED.new_id, merged_at = now()),
                  w AS (INSERT INTO crm_sync.unified_ids AS t (entity, record_id, unified_id)
                        SELECT $1, w.record_id, w.unified_id FROM unnest($4::int8[], $5::int8[]) w(record_id, unified_id)
                         ORDER BY w.record_id
                        ON CONFLICT (entity, record_id) DO UPDATE SET unified_id = EXCLUDED.unified_id
                         WHERE t.unified_id IS DISTINCT FROM EXCLUDED.unified_id)
             DELETE FROM crm_sync.unified_ids t WHERE t.entity = $1 AND t.record_id = ANY ($6)",
            &[
                entity.into(),
                old.into(),
                new.into(),
                rid.into(),
                uid.into(),
                ids.own.into(),
            ],
        )
        .expect("write unified ids");
    }
    crate::report::debug1!(
        "pg_crm_sync merge {entity}: wrote unified ids after {:?}",
        t.elapsed()
    );
    Resolved {
        affected: ids.affected,
        left: ids.left,
        merged,
        whole: false,
    }
}

/// The changed records that are still there, and the candidates to link
/// again with them: the records merged into them or they into, and those
/// sharing a rule's key with them (each rule's matches found through its
/// keys' index).
fn candidates(entity: &str, changed: &[i64], rules: &[Vec<&'static str>]) -> (Vec<i64>, Vec<i64>) {
    let mut cand = vec![
        "SELECT record_id FROM ch".to_owned(),
        // Records merged into each other, both ways.
        "SELECT x.record_id FROM ch JOIN crm_sync.source_records x
             ON x.entity = $1 AND x.record_id = ch.merged_into"
            .to_owned(),
        "SELECT x.record_id FROM ch JOIN crm_sync.source_records x
             ON x.entity = $1 AND x.merged_into = ch.record_id"
            .to_owned(),
    ];
    // A rule with a hashed key: the records sharing that key's hash
    // with a changed one, found through the GIN index of `keys` (in
    // a few scans, never record by record: each scan reads the index's
    // pending list), then compared by value. Other rules join through
    // their own indexes, if any: a rule with a company or contact id
    // through that id's (the records sharing only its name would be
    // every deal of that name).
    let hashed = |cols: &[&str]| {
        cols.iter().any(|c| HASHED_KEYS.contains(c)) && !cols.iter().any(|c| is_link(c))
    };
    let mut with_shared = String::new();
    if rules.iter().any(|cols| hashed(cols)) {
        let cols = rule_columns(&["record_id"], rules);
        // Each such rule is looked up by one of its hashed keys, the
        // most telling (a record matching the rule shares that key).
        let mut lookup: Vec<&str> = Vec::new();
        for cols in rules.iter().filter(|cols| hashed(cols)) {
            if let Some(c) = ["email", "domain", "company_key", "name_key"]
                .into_iter()
                .find(|c| cols.contains(c))
            {
                if !lookup.contains(&c) {
                    lookup.push(c);
                }
            }
        }
        let hashes: Vec<String> = lookup
            .iter()
            .map(|c| {
                format!(
                    "SELECT crm_sync._match_key_hash($1, '{c}', ch.{c}) FROM ch WHERE ch.{c} IS NOT NULL"
                )
            })
            .collect();
        // The changed records' hashes, 64 to a scan: one scan of
        // thousands costs GIN a check of every one for each record it
        // finds (0.3 s for 4,000 changed contacts; 0.05 s so).
        let cols: Vec<String> = cols.iter().map(|c| format!("x.{c}")).collect();
        with_shared = format!(
            ", shared AS MATERIALIZED (
                SELECT DISTINCT {}
                  FROM (SELECT array_agg(k) AS ks
                          FROM (SELECT k, (row_number() OVER ()) / 64 AS g
                                  FROM ({}) d(k)) n
                         GROUP BY g) q
                  JOIN crm_sync.source_records x ON x.keys && q.ks
                 WHERE x.entity = $1)",
            cols.join(", "),
            hashes.join(" UNION ")
        );
        // The keys written since the index's last flush are in its
        // pending list, which every scan reads whole.
        Spi::run("SELECT crm_sync._flush_match_keys()").expect("flush the match keys' index");
    }
    for cols in rules {
        let on: Vec<String> = cols.iter().map(|c| format!("x.{c} = ch.{c}")).collect();
        cand.push(if hashed(cols) {
            format!(
                "SELECT x.record_id FROM ch JOIN shared x ON {}",
                on.join(" AND ")
            )
        } else {
            format!(
                "SELECT x.record_id FROM ch JOIN crm_sync.source_records x ON x.entity = $1 AND {}",
                on.join(" AND ")
            )
        });
    }
    // In two statements: the candidates first, then the unified rows
    // they are in. As one, the planner guessed the candidates from the
    // union's estimate (many more than there are) and read every
    // unified id of the entity to join them.
    // The changed records' ids and keys only (whole rows, values and
    // all, spilled the CTE to disk past a few thousand).
    let ch_cols = rule_columns(&["record_id", "merged_into"], rules);
    let sql = format!(
        "WITH ch AS MATERIALIZED (SELECT {} FROM crm_sync.source_records WHERE entity = $1 AND record_id = ANY ($2)){with_shared},
              cand AS ({})
         SELECT ARRAY(SELECT record_id FROM ch), ARRAY(SELECT record_id FROM cand)",
        ch_cols.join(", "),
        cand.join(" UNION ")
    );
    Spi::connect(|c| {
        let row = c
            .select(&sql, None, &[entity.into(), changed.into()])
            .expect("find the records to resolve")
            .first();
        (
            row.get::<Vec<i64>>(1).ok().flatten().unwrap_or_default(),
            row.get::<Vec<i64>>(2).ok().flatten().unwrap_or_default(),
        )
    })
}

/// The unified ids of `records` (as linked now).
pub fn rows_of(entity: &str, records: &[i64]) -> Vec<i64> {
    if records.is_empty() {
        return Vec::new();
    }
    Spi::get_one_with_args::<Vec<i64>>(
        "SELECT array_agg(DISTINCT coalesce(u.unified_id, r.id))
           FROM unnest($2::int8[]) r(id)
           LEFT JOIN crm_sync.unified_ids u ON u.entity = $1 AND u.record_id = r.id",
        &[entity.into(), records.into()],
    )
    .expect("find the unified rows of changed records")
    .unwrap_or_default()
}

/// Whether `entity` has no unified id yet: neither a unified row (in
/// `crm.<t_crm>`) nor a record pointing at another's.
fn first_ids(entity: &str, t_crm: &str) -> bool {
    !Spi::get_one_with_args::<bool>(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM crm.{t_crm}) OR EXISTS (SELECT 1 FROM crm_sync.unified_ids WHERE entity = $1)"
        ),
        &[entity.into()],
    )
    .expect("look for unified ids")
    .unwrap_or(true)
}
