//! Step 4: recompute the unified rows the merge touched: each row's
//! records are read in unified-id order, survivorship
//! (`crm_sync_core::model::survive`) picks each field's value, and the rows
//! are written with their lineage, a page at a time.

use std::collections::HashMap;

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiTupleTable};
use serde_json::Value;

use crm_sync_core::model::survive::{self, Contribution, FieldRule};
use crm_sync_core::model::{ref_of_field, table, REFS};
use crm_sync_core::rows::Json;

use super::sql::{each_page, each_row, qi, FETCH};

/// Recompute the unified rows `ids` (every row, `full`), dropping those of
/// `left` (ids that may have lost their last record) without records;
/// returns how many rows were written. The records of each row are read in
/// order of their unified id; each field takes the value of the first record by source
/// priority, then modification time (newest first), then source, stream and
/// id; the row is written with its lineage, in batches.
pub fn survive(entity: &str, ids: &[i64], left: &[i64], full: bool) -> i64 {
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
    // Rows whose every record is gone (merged into another id, or pruned):
    // neither a record pointing at the row nor the row's own record (one
    // with its id and no unified_ids row of its own). (Of some rows: each
    // looked up by id, in anti-joins; a NOT IN list of the ids that still
    // have records was read again for every row once past work_mem.)
    let of_ids = if full { "" } else { "u.id = ANY ($2) AND" };
    if full || !left.is_empty() {
        Spi::run_with_args(
            &format!(
                "DELETE FROM crm.{t} u
                  WHERE {of_ids}
                        NOT EXISTS (SELECT 1 FROM crm_sync.unified_ids r WHERE r.entity = $1 AND r.unified_id = u.id)
                    AND NOT EXISTS (SELECT 1 FROM crm_sync.source_records x
                                     WHERE x.entity = $1 AND x.record_id = u.id AND {X_IS_OWN})"
            ),
            &[entity.into(), left.into()],
        )
        .expect("drop unified rows without records");
    }
    let links: Vec<String> = REFS.iter().map(|r| format!("x.{}", r.column)).collect();
    // The records of the rows: those pointing at each, and each row's own.
    let cols = format!(
        "x.source, x.stream, x.external_id, (extract(epoch FROM x.updated_at) * 1e6)::int8, x.deleted,
         x.vals, {}",
        links.join(", ")
    );
    let sql = format!(
        "SELECT m.unified_id, {cols}
           FROM crm_sync.unified_ids m
           JOIN crm_sync.source_records x ON x.entity = $1 AND x.record_id = m.record_id
          WHERE m.entity = $1 AND m.unified_id = ANY ($2)
         UNION ALL
         SELECT x.record_id, {cols}
           FROM crm_sync.source_records x
          WHERE x.entity = $1 AND x.record_id = ANY ($2)
            AND {X_IS_OWN}
          ORDER BY 1"
    );
    let rules: Vec<FieldRule> = fields
        .into_iter()
        .map(|(field, kind)| FieldRule {
            priority: priority.remove(&field),
            field,
            kind,
        })
        .collect();
    let mut written = 0i64;
    // A first merge writes into an empty table: plain inserts.
    let empty = full
        && !Spi::get_one::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM crm.{t})"))
            .expect("look for unified rows")
            .unwrap_or(true);
    // (An entity without fields has no row to write.)
    if full && !rules.is_empty() {
        let t = std::time::Instant::now();
        written += Spi::connect_mut(|c| {
            singles(entity, &rules, empty)
                .iter()
                .map(|sql| {
                    c.update(sql, None, &[entity.into()])
                        .expect("write unified rows of one record")
                        .len() as i64
                })
                .sum::<i64>()
        });
        crate::report::debug1!(
            "pg_crm_sync merge {entity}: survivorship wrote {written} rows of one record in {:?}",
            t.elapsed()
        );
    }
    let mut w = RowWriter::new(entity, rules, empty);
    let mut rows_read = 0usize;
    let (mut t_read, mut t_write) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    if full {
        // Every row of several records (rows of one record are written by
        // `singles` above), all their records in one read, in unified id
        // order, a page at a time (each in its own SPI connection: memory
        // is given back after every page); the records of a page's last
        // row wait for the next page, which may hold more of them.
        let all = format!(
            "SELECT m.unified_id, {cols}
               FROM crm_sync.unified_ids m
               JOIN crm_sync.source_records x ON x.entity = $1 AND x.record_id = m.record_id
              WHERE m.entity = $1
             UNION ALL
             SELECT x.record_id, {cols}
               FROM crm_sync.source_records x
              WHERE x.entity = $1 AND x.record_id IN ({SHARED_IDS})
                AND {X_IS_OWN}
              ORDER BY 1"
        );
        let mut carry: Vec<Contribution> = Vec::new();
        let t = std::time::Instant::now();
        each_page(&all, &[entity.into()], |c, page, last| {
            let mut rows = std::mem::take(&mut carry);
            contributions(&page, &mut rows);
            if let (false, Some(u)) = (last, rows.last().map(|r| r.unified_id)) {
                let from = rows
                    .iter()
                    .rposition(|r| r.unified_id != u)
                    .map_or(0, |i| i + 1);
                carry = rows.split_off(from);
            }
            rows_read += w.push_rows(&rows);
            let t = std::time::Instant::now();
            written += w.flush(c);
            t_write += t.elapsed();
            true
        });
        t_read = t.elapsed() - t_write;
    }
    // The rows given, a page of ids at a time, each page read and written
    // in its own SPI connection.
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for page in ids.chunks(FETCH as usize).filter(|_| !full) {
        let n = Spi::connect_mut(|c| {
            let t = std::time::Instant::now();
            let mut rows: Vec<Contribution> = Vec::new();
            contributions(
                &c.select(sql.as_str(), None, &[entity.into(), page.into()])
                    .expect("read source records"),
                &mut rows,
            );
            rows_read += w.push_rows(&rows);
            t_read += t.elapsed();
            let t = std::time::Instant::now();
            let n = w.flush(c);
            t_write += t.elapsed();
            n
        });
        written += n;
        pgrx::check_for_interrupts!();
    }
    crate::report::debug1!(
        "pg_crm_sync merge {entity}: survivorship read {rows_read} rows' records in {t_read:?}, wrote them in {t_write:?}"
    );
    written
}

/// The types of the survivorship query's columns, in order.
fn contribution_types() -> Vec<pg_sys::Oid> {
    [
        pg_sys::INT8OID,
        pg_sys::TEXTOID,
        pg_sys::TEXTOID,
        pg_sys::TEXTOID,
        pg_sys::INT8OID,
        pg_sys::BOOLOID,
        pg_sys::JSONBOID,
    ]
    .into_iter()
    .chain(REFS.iter().map(|_| pg_sys::INT8OID))
    .collect()
}

/// The rows of a page of the survivorship query, as records' contributions.
fn contributions(page: &SpiTupleTable<'_>, out: &mut Vec<Contribution>) {
    each_row(page, &contribution_types(), |r| {
        out.push(Contribution {
            unified_id: r.int8(0).unwrap_or_default(),
            source: r.text(1).unwrap_or_default(),
            stream: r.text(2).unwrap_or_default(),
            external_id: r.text(3).unwrap_or_default(),
            updated_us: r.int8(4),
            deleted: r.boolean(5).unwrap_or(false),
            vals: r.jsonb_object(6),
            links: std::array::from_fn(|i| r.int8(7 + i)),
        })
    });
}

/// Record `x` (of entity `$1`) is in the row of its own id: it has no
/// `crm_sync.unified_ids` row.
const X_IS_OWN: &str =
    "NOT EXISTS (SELECT 1 FROM crm_sync.unified_ids y WHERE y.entity = $1 AND y.record_id = x.record_id)";

/// The unified ids of rows made of several records (each names a record
/// that is not its own); every other record of a whole merge is alone.
const SHARED_IDS: &str = "SELECT m.unified_id FROM crm_sync.unified_ids m WHERE m.entity = $1";

/// The crm table's column of a unified field, and the cast its text value
/// takes: a ref field is the linked row's unified id (company_ref ->
/// company_id).
fn column_of(rule: &FieldRule) -> (String, &'static str) {
    match (rule.kind.as_str(), ref_of_field(&rule.field)) {
        ("ref", Some(r)) => (REFS[r].column.to_owned(), "::int8"),
        ("numeric", _) => (qi(&rule.field), "::numeric"),
        ("date", _) => (qi(&rule.field), "::date"),
        ("timestamptz", _) => (qi(&rule.field), "::timestamptz"),
        _ => (qi(&rule.field), ""),
    }
}

/// The statement that writes, in a full merge, every unified row made of one
/// record, in SQL (they are most rows, and their values need no choosing):
/// the row `survive::survive` makes of a group of one, field for field: the
/// records that neither belong to another's row nor lead a row of several
/// ([`SHARED_IDS`], the rows survivorship reads a page at a time).
fn singles(entity: &str, rules: &[FieldRule], empty: bool) -> Vec<String> {
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut cols = Vec::new();
    let mut exprs = Vec::new();
    // Field -> 1 (the one record gave every value it has), for the fields
    // the record has.
    let mut names = Vec::new();
    for rule in rules {
        let (col, cast) = column_of(rule);
        let has = format!("x.vals ? {}", lit(&rule.field));
        let value = match (rule.kind.as_str(), ref_of_field(&rule.field)) {
            ("ref", Some(r)) => format!("CASE WHEN {has} THEN x.{} END", REFS[r].column),
            ("ref", None) => "NULL::text".to_owned(),
            _ => format!("(x.vals->>{}){cast}", lit(&rule.field)),
        };
        cols.push(col);
        exprs.push(format!("CASE WHEN NOT x.deleted THEN {value} END"));
        names.push(rule.field.as_str());
    }
    let lineage = format!(
        "crm_sync._lineage_of_one(x.vals, {})",
        lit(&serde_json::to_string(&names).unwrap_or_default())
    );
    let exprs: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS c{i}"))
        .collect();
    let rows = format!(
        "(SELECT x.record_id AS id, {exprs}, CASE WHEN x.deleted THEN now() END AS gone_at,
                CASE WHEN x.deleted THEN '{{}}'::text[] ELSE ARRAY[concat_ws('/', x.source, x.stream, x.external_id)] END AS srcs,
                CASE WHEN x.deleted THEN '{{}}'::jsonb ELSE {lineage} END AS lin
           FROM crm_sync.source_records x
          WHERE x.entity = $1
            AND {X_IS_OWN}
            AND NOT EXISTS (SELECT 1 FROM crm_sync.unified_ids m WHERE m.entity = $1 AND m.unified_id = x.record_id)) u",
        exprs = exprs.join(", "),
    );
    let t = table(entity);
    if empty {
        return vec![insert_rows(t, &cols, &rows, None)];
    }
    // The rows there first, then the new ones (the update would otherwise
    // compare every new row again).
    vec![
        update_rows(t, &cols, &rows, false),
        insert_rows(
            t,
            &cols,
            &rows,
            Some(&format!(
                "NOT EXISTS (SELECT 1 FROM crm.{t} y WHERE y.id = u.id)"
            )),
        ),
    ]
}

/// Unified rows written over those there where they differ (`cols`: the
/// field columns, as [`column_of`] names them), from `from`, rows `u` of
/// id, a value per field (c0, c1, ..), gone_at (when deleted), srcs and
/// lin (lineage); `by_tid`: rows `u` found their row already (`tid`) and
/// whether they differ from it (`differs`, as [`differs`] says). An
/// UPDATE, not `INSERT .. ON CONFLICT DO UPDATE`: that locks every row it
/// meets before it compares (a WAL record and a dirty page even for a row
/// that stays as it was, as most do in a rebuild).
fn update_rows(t: &str, cols: &[String], from: &str, by_tid: bool) -> String {
    let sets: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = u.c{i}"))
        .collect();
    let which = if by_tid {
        "t.ctid = u.tid AND u.differs".to_owned()
    } else {
        format!("t.id = u.id AND {}", differs(cols, "u"))
    };
    format!(
        "UPDATE crm.{t} AS t
            SET {sets},
                deleted_at = CASE WHEN u.gone_at IS NULL THEN NULL ELSE coalesce(t.deleted_at, u.gone_at) END,
                sources = u.srcs, lineage = u.lin, merged_at = now()
           FROM {from}
          WHERE {which}",
        sets = sets.join(", "),
    )
}

/// Whether the new row `u` (as [`update_rows`] reads it) differs from the
/// row `t` there.
fn differs(cols: &[String], u: &str) -> String {
    let olds: Vec<String> = cols.iter().map(|c| format!("t.{c}")).collect();
    let news: Vec<String> = (0..cols.len()).map(|i| format!("{u}.c{i}")).collect();
    format!(
        "({olds}, t.deleted_at IS NULL, t.sources, t.lineage)
                IS DISTINCT FROM ({news}, {u}.gone_at IS NULL, {u}.srcs, {u}.lin)",
        olds = olds.join(", "),
        news = news.join(", "),
    )
}

/// Unified rows inserted from `from` (rows `u` as [`update_rows`] reads
/// them), those that meet `new_only`, if given.
fn insert_rows(t: &str, cols: &[String], from: &str, new_only: Option<&str>) -> String {
    let news: Vec<String> = (0..cols.len()).map(|i| format!("u.c{i}")).collect();
    let new_only = new_only
        .map(|w| format!("\n          WHERE {w}"))
        .unwrap_or_default();
    format!(
        "INSERT INTO crm.{t} (id, {cols}, deleted_at, sources, lineage, merged_at)
         SELECT u.id, {news}, u.gone_at, u.srcs, u.lin, now()
           FROM {from}{new_only}",
        cols = cols.join(", "),
        news = news.join(", "),
    )
}

/// Unified rows gathered column by column, written with one statement.
struct RowWriter {
    sql: String,
    rules: Vec<FieldRule>,
    ids: Vec<i64>,
    cols: Vec<Vec<Option<String>>>,
    gone: Vec<bool>,
    sources: Vec<String>,
    /// Each row's lineage, encoded as jsonb here (`jsonb_in` took a
    /// tenth of a page's write).
    lineage: Vec<Option<Json<'static>>>,
    utf8: bool,
}

impl RowWriter {
    fn new(entity: &str, rules: Vec<FieldRule>, empty: bool) -> Self {
        let t = table(entity);
        let mut cols = Vec::new();
        let mut exprs = Vec::new();
        let mut unnest = vec!["$1::int8[]".to_owned()];
        let mut names = vec!["id".to_owned()];
        for (i, rule) in rules.iter().enumerate() {
            let (col, cast) = column_of(rule);
            unnest.push(format!("${}::text[]", i + 2));
            names.push(format!("c{i}"));
            cols.push(col);
            exprs.push(format!("u.c{i}{cast} AS c{i}"));
        }
        let n = rules.len() + 2;
        for (k, ty) in [
            ("gone", "bool[]"),
            ("sources", "text[]"),
            ("lineage", "jsonb[]"),
        ]
        .iter()
        .enumerate()
        .map(|(j, (name, ty))| ((*name, j + n), *ty))
        {
            unnest.push(format!("${}::{ty}", k.1));
            names.push(k.0.to_owned());
        }
        let rows = format!(
            "SELECT u.id, {exprs}, CASE WHEN u.gone THEN now() END AS gone_at,
                    string_to_array(u.sources, chr(31)) AS srcs, u.lineage AS lin
               FROM unnest({unnest}) AS u({names})",
            exprs = exprs.join(", "),
            unnest = unnest.join(", "),
            names = names.join(", "),
        );
        // Into a table empty when the merge began: plain inserts. Otherwise
        // each row of the page is looked up once: written over if it
        // differs, inserted if new; the rows written come back.
        let sql = if empty {
            insert_rows(t, &cols, &format!("({rows}) u"), None)
        } else {
            format!(
                "WITH r AS ({rows}),
                  u AS (SELECT r.*, t.ctid AS tid, {differs} AS differs
                          FROM r LEFT JOIN crm.{t} t ON t.id = r.id),
                  changed AS ({} RETURNING t.id),
                  added AS ({} RETURNING id)
                 SELECT id FROM changed UNION ALL SELECT id FROM added",
                update_rows(t, &cols, "u", true),
                insert_rows(t, &cols, "u", Some("u.tid IS NULL")),
                differs = differs(&cols, "r"),
            )
        };
        RowWriter {
            sql,
            cols: vec![Vec::new(); rules.len()],
            rules,
            ids: vec![],
            gone: vec![],
            sources: vec![],
            lineage: vec![],
            utf8: crate::landing::utf8_database(),
        }
    }

    /// Add the unified rows made of `records` (in unified id order);
    /// returns how many.
    fn push_rows(&mut self, records: &[Contribution]) -> usize {
        let mut n = 0;
        for g in records.chunk_by(|a, b| a.unified_id == b.unified_id) {
            self.push(g);
            n += 1;
        }
        n
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
        let lineage = Value::Object(row.lineage).to_string();
        self.lineage
            .push(Some(Json::new(std::borrow::Cow::Owned(lineage), self.utf8)));
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
        args.push(
            crate::landing::jsonb_array_of(&std::mem::take(&mut self.lineage))
                .unwrap_or_else(|e| panic!("lineage as jsonb: {e}")),
        );
        // Rows written; unchanged ones are skipped.
        c.update(self.sql.as_str(), None, &args)
            .expect("write unified rows")
            .len() as i64
    }
}
