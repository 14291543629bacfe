//! Landing tables `<source>.<stream>`: created and widened as properties
//! appear, and written one INSERT … ON CONFLICT statement per batch.

use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;

use crm_sync_core::engine::{Record, Sink, WriteStats};
use crm_sync_core::types::{fmt_ts, PgType};
use crm_sync_core::CrmError;

/// Columns every landing table has besides one per property.
const SYSTEM_COLUMNS: &[&str] = &[
    "id",
    "_raw",
    "_updated_at",
    "_deleted_at",
    "_synced_at",
    "_run_id",
];

/// How many bad values a run keeps as samples in crm_sync.runs.
const WARNING_SAMPLES: usize = 10;

/// A property synced into a column.
#[derive(Debug, Clone)]
pub struct Column {
    pub property: String,
    pub column: String,
    pub pg_type: PgType,
}

fn qi(s: &str) -> String {
    // Same quoting as quote_ident(), without a round trip to SQL.
    let plain = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !is_keyword(s);
    if plain {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn is_keyword(s: &str) -> bool {
    // Quoting a non-keyword is harmless, so ask Postgres' own keyword list.
    Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_get_keywords() WHERE word = $1 AND catcode <> 'U')",
        &[s.into()],
    )
    .ok()
    .flatten()
    .unwrap_or(true)
}

/// Existing columns of `schema.table` and their types; empty if no table.
fn existing_columns(schema: &str, table: &str) -> HashMap<String, PgType> {
    Spi::connect(|c| {
        let t = c
            .select(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
                   FROM pg_attribute a
                  WHERE a.attrelid = to_regclass(format('%I.%I', $1::text, $2::text))
                    AND a.attnum > 0 AND NOT a.attisdropped",
                None,
                &[schema.into(), table.into()],
            )
            .expect("read landing table columns");
        t.filter_map(|r| {
            let name: String = r.get(1).ok().flatten()?;
            let ty: String = r.get(2).ok().flatten()?;
            Some((name, PgType::from_sql_name(&ty)))
        })
        .collect()
    })
}

/// Create the landing table if needed and add a column for each new
/// property. A column that exists keeps its type (a user may have changed
/// it); values are converted to whatever the column is.
pub fn ensure_table(schema: &str, table: &str, wanted: &[Column]) -> Result<Vec<Column>, CrmError> {
    let mut existing = existing_columns(schema, table);
    if existing.is_empty() {
        let mut cols = vec!["id text PRIMARY KEY".to_owned()];
        for c in wanted {
            if !SYSTEM_COLUMNS.contains(&c.column.as_str()) {
                cols.push(format!("{} {}", qi(&c.column), c.pg_type.sql_name()));
            }
        }
        cols.extend([
            "_raw jsonb NOT NULL".to_owned(),
            "_updated_at timestamptz".to_owned(),
            "_deleted_at timestamptz".to_owned(),
            "_synced_at timestamptz NOT NULL DEFAULT now()".to_owned(),
            "_run_id bigint".to_owned(),
        ]);
        Spi::run(&format!(
            "CREATE TABLE {}.{} ({})",
            qi(schema),
            qi(table),
            cols.join(", ")
        ))
        .map_err(|e| CrmError::config(format!("cannot create landing table: {e}")))?;
        Spi::run(&format!(
            "COMMENT ON TABLE {}.{} IS {}",
            qi(schema),
            qi(table),
            pgrx::spi::quote_literal(format!(
                "pg_crm_sync landing table: one row per CRM record of stream {table}; _raw holds the record as received, _deleted_at marks records deleted in the CRM."
            ))
        ))
        .map_err(|e| CrmError::config(format!("cannot comment landing table: {e}")))?;
        existing = existing_columns(schema, table);
    }
    let mut out = Vec::with_capacity(wanted.len());
    for c in wanted {
        if SYSTEM_COLUMNS.contains(&c.column.as_str()) {
            continue;
        }
        match existing.get(&c.column) {
            Some(t) => out.push(Column {
                pg_type: *t,
                ..c.clone()
            }),
            None => {
                Spi::run(&format!(
                    "ALTER TABLE {}.{} ADD COLUMN {} {}",
                    qi(schema),
                    qi(table),
                    qi(&c.column),
                    c.pg_type.sql_name()
                ))
                .map_err(|e| CrmError::config(format!("cannot add column {}: {e}", c.column)))?;
                out.push(c.clone());
            }
        }
    }
    Ok(out)
}

/// Writes batches into one landing table with a prepared statement.
pub struct SpiSink {
    columns: Vec<Column>,
    stmt: OwnedPreparedStatement,
    run_id: i64,
    table: String,
    pub warning_samples: Vec<String>,
}

impl SpiSink {
    pub fn new(schema: &str, table: &str, columns: Vec<Column>, run_id: i64) -> Self {
        let n = columns.len();
        // $1 id, $2 raw, $3 updated_at, $4 deleted_at, $5 run_id, $6.. columns.
        let arrays: Vec<String> = (0..4)
            .map(|i| format!("${}::text[]", i + 1))
            .chain((0..n).map(|i| format!("${}::text[]", i + 6)))
            .collect();
        let aliases: Vec<String> = (0..4 + n).map(|i| format!("u{i}")).collect();
        let target_cols: Vec<String> = columns.iter().map(|c| qi(&c.column)).collect();
        let casts: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("u{}::{}", i + 4, c.pg_type.sql_name()))
            .collect();
        let sets: Vec<String> = target_cols
            .iter()
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let comma = |v: &[String]| {
            if v.is_empty() {
                String::new()
            } else {
                format!("{}, ", v.join(", "))
            }
        };
        let sql = format!(
            "WITH up AS (
               INSERT INTO {s}.{t} AS t (id, {cols}_raw, _updated_at, _deleted_at, _synced_at, _run_id)
               SELECT u0, {casts}u1::jsonb, u2::timestamptz, u3::timestamptz, now(), $5
                 FROM unnest({arrays}) AS u({aliases})
               ON CONFLICT (id) DO UPDATE
                  SET {sets}_raw = EXCLUDED._raw, _updated_at = EXCLUDED._updated_at,
                      _deleted_at = EXCLUDED._deleted_at, _synced_at = EXCLUDED._synced_at, _run_id = EXCLUDED._run_id
                WHERE (t._raw IS DISTINCT FROM EXCLUDED._raw OR t._deleted_at IS DISTINCT FROM EXCLUDED._deleted_at)
                  AND (t._updated_at IS NULL OR EXCLUDED._updated_at IS NULL
                       OR EXCLUDED._updated_at >= t._updated_at OR EXCLUDED._deleted_at IS NOT NULL)
               RETURNING t._deleted_at IS NOT NULL AS del)
             SELECT count(*) FILTER (WHERE NOT del), count(*) FILTER (WHERE del) FROM up",
            s = qi(schema),
            t = qi(table),
            cols = comma(&target_cols),
            casts = comma(&casts),
            sets = comma(&sets),
            arrays = arrays.join(", "),
            aliases = aliases.join(", "),
        );
        let text_array = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
        let mut types = vec![text_array; 4];
        types.push(PgOid::BuiltIn(PgBuiltInOids::INT8OID));
        types.extend(std::iter::repeat_n(text_array, n));
        let stmt = Spi::connect(|c| {
            c.prepare_mut(sql.as_str(), &types)
                .expect("prepare landing upsert")
                .keep()
        });
        SpiSink {
            columns,
            stmt,
            run_id,
            table: table.to_owned(),
            warning_samples: Vec::new(),
        }
    }
}

impl Sink for SpiSink {
    fn write(&mut self, batch: &[Record]) -> Result<WriteStats, CrmError> {
        let mut warnings = 0u64;
        let mut ids = Vec::with_capacity(batch.len());
        let mut raws = Vec::with_capacity(batch.len());
        let mut upd = Vec::with_capacity(batch.len());
        let mut del = Vec::with_capacity(batch.len());
        let mut cols: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(batch.len()); self.columns.len()];
        for r in batch {
            ids.push(Some(r.id.clone()));
            raws.push(Some(r.raw.clone()));
            upd.push(r.updated_at.map(fmt_ts));
            del.push(r.deleted_at.map(fmt_ts));
            for (c, out) in self.columns.iter().zip(cols.iter_mut()) {
                let v = r
                    .fields
                    .get(&c.property)
                    .unwrap_or(&serde_json::Value::Null);
                match c.pg_type.coerce(v) {
                    Ok(x) => out.push(x),
                    Err(()) => {
                        warnings += 1;
                        if self.warning_samples.len() < WARNING_SAMPLES {
                            let mut shown = v.to_string();
                            shown.truncate(60);
                            self.warning_samples.push(format!(
                                "{}.{}: value {} of record {} is not a valid {}; kept in _raw",
                                self.table,
                                c.column,
                                shown,
                                r.id,
                                c.pg_type.sql_name()
                            ));
                        }
                        out.push(None);
                    }
                }
            }
        }
        let (upserted, deleted) = Spi::connect_mut(|c| {
            let mut args: Vec<pgrx::datum::DatumWithOid> = Vec::with_capacity(5 + cols.len());
            args.push(ids.into());
            args.push(raws.into());
            args.push(upd.into());
            args.push(del.into());
            args.push(self.run_id.into());
            for col in cols {
                args.push(col.into());
            }
            let t = c
                .update(&self.stmt, None, &args)
                .expect("write landing batch")
                .first();
            let a: i64 = t.get(1).ok().flatten().unwrap_or(0);
            let b: i64 = t.get(2).ok().flatten().unwrap_or(0);
            (a, b)
        });
        Ok(WriteStats {
            upserted: upserted as u64,
            deleted: deleted as u64,
            warnings,
        })
    }
}
