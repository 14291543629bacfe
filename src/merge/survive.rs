//! Step 4: recompute the unified rows the merge touched: each row's
//! records are read in unified-id order, survivorship
//! (`crm_sync_core::model::survive`) picks each field's value, and the rows
//! are written with their lineage, a page at a time.

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use serde_json::Value;

use crm_sync_core::model::survive::{self, Contribution, FieldRule};
use crm_sync_core::model::{ref_of_field, table, REFS};

use super::sql::{qi, FETCH};

/// Recompute the unified rows `ids` (every row, `full`); returns how many
/// rows were written. The records of each row are read in order of their
/// unified id; each field takes the value of the first record by source
/// priority, then modification time (newest first), then source, stream and
/// id; the row is written with its lineage, in batches.
pub fn survive(entity: &str, ids: &[i64], full: bool) -> i64 {
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
    let mut priority: HashMap<String, Vec<String>> = Spi::connect(|c| {
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
        &[entity.into(), ids.into()],
    )
    .expect("drop unified rows without records");
    let links: Vec<String> = REFS.iter().map(|r| format!("x.{}", r.column)).collect();
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
    let rules: Vec<FieldRule> = fields
        .into_iter()
        .map(|(field, kind)| FieldRule {
            priority: priority.remove(&field),
            field,
            kind,
        })
        .collect();
    let mut w = RowWriter::new(entity, rules);
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
                            c.select(sql.as_str(), None, &[entity.into(), page.into()])
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

/// Unified rows gathered column by column, written with one statement.
struct RowWriter {
    sql: String,
    rules: Vec<FieldRule>,
    ids: Vec<i64>,
    cols: Vec<Vec<Option<String>>>,
    gone: Vec<bool>,
    sources: Vec<String>,
    lineage: Vec<String>,
}

impl RowWriter {
    fn new(entity: &str, rules: Vec<FieldRule>) -> Self {
        let t = table(entity);
        let mut cols = Vec::new();
        let mut exprs = Vec::new();
        let mut unnest = vec!["$1::int8[]".to_owned()];
        let mut names = vec!["id".to_owned()];
        for (i, rule) in rules.iter().enumerate() {
            let (f, kind) = (&rule.field, rule.kind.as_str());
            let p = i + 2;
            unnest.push(format!("${p}::text[]"));
            names.push(format!("c{i}"));
            let v = format!("u.c{i}");
            match (kind, ref_of_field(f)) {
                // The linked row's unified id (company_ref -> company_id).
                ("ref", Some(r)) => {
                    cols.push(REFS[r].column.to_owned());
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
        let n = rules.len() + 2;
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
            cols: vec![Vec::new(); rules.len()],
            rules,
            ids: vec![],
            gone: vec![],
            sources: vec![],
            lineage: vec![],
        }
    }

    /// Add the unified row made of `group` (the records of one unified id).
    fn push(&mut self, group: &[Contribution]) {
        let Some(row) = survive::survive(group, &self.rules) else {
            return;
        };
        for (col, v) in self.cols.iter_mut().zip(row.values) {
            col.push(v);
        }
        self.ids.push(row.id);
        self.gone.push(row.gone);
        self.sources.push(row.sources.join("\u{1f}"));
        self.lineage.push(Value::Object(row.lineage).to_string());
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
