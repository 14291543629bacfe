//! Step 3: link the changed records (every record, in a full merge) again
//! by the enabled match rules, write their unified ids, and record ids
//! merged into others in `crm.merged_ids`.

use std::collections::{HashMap, HashSet};

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crm_sync_core::model::identity::{self, Member};
use crm_sync_core::model::key_column;

use super::sql::FETCH;

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

/// Link records again; returns the unified ids to recompute and how many
/// ids were merged into others.
pub fn resolve(entity: &str, changed: &[i64], full: bool) -> (Vec<i64>, i64) {
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
    let new_set: HashSet<i64> = ids.iter().copied().collect();
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
