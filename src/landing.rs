//! Landing tables `<source>.<stream>`: created and widened as properties
//! appear, and written one INSERT … ON CONFLICT statement per batch.

use std::borrow::Cow;
use std::collections::HashMap;

use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;

use crm_sync_core::ahead;
use crm_sync_core::columns::{self, SYSTEM_COLUMNS};
use crm_sync_core::engine::{Sink, WriteStats};
use crm_sync_core::rows::{self, ColumnOf, Json, Rows, Values};
use crm_sync_core::source::Record;
use crm_sync_core::types::{pg_timestamp, PgType};
use crm_sync_core::CrmError;

/// How many bad values a run keeps as samples in crm_sync.runs (each
/// chunk of a batch brings at most as many).
const WARNING_SAMPLES: usize = rows::SAMPLES;

/// A property synced into a column.
#[derive(Debug, Clone)]
pub struct Column {
    pub property: String,
    pub column: String,
    pub pg_type: PgType,
}

pub(crate) fn qi(s: &str) -> String {
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

/// ` COMPRESSION lz4` where this server has lz4: large values (`_raw` of a
/// wide record, long text) are compressed several times faster than with
/// the default pglz, which otherwise dominates writing wide records.
fn compression_clause() -> &'static str {
    let lz4 = Spi::get_one::<bool>(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    if lz4 {
        " COMPRESSION lz4"
    } else {
        ""
    }
}

/// What a stream's landing table has: its columns, the column recorded for
/// each property (crm_sync.landing_columns), and how many attributes it
/// has used (dropped ones count towards Postgres' 1,600).
pub struct Landed {
    pub columns: HashMap<String, PgType>,
    pub recorded: HashMap<String, String>,
    pub attributes: usize,
}

impl Landed {
    pub fn load(source: &str, stream: &str) -> Landed {
        let recorded = Spi::connect(|c| {
            c.select(
                "SELECT property, column_name FROM crm_sync.landing_columns
                  WHERE source = $1 AND stream = $2",
                None,
                &[source.into(), stream.into()],
            )
            .expect("read crm_sync.landing_columns")
            .filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??)))
            .collect()
        });
        let attributes = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = pg_catalog.to_regclass(pg_catalog.format('%I.%I', $1::text, $2::text))
                AND a.attnum > 0",
            &[source.into(), stream.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(0) as usize;
        Landed {
            columns: existing_columns(source, stream),
            recorded,
            // A table to create will have its system columns.
            attributes: attributes.max(SYSTEM_COLUMNS.len()),
        }
    }

    /// Whether `property` has a column in the table (recorded, or from
    /// before columns were recorded: its plain name).
    pub fn has_column(&self, property: &str) -> bool {
        let column = self
            .recorded
            .get(property)
            .cloned()
            .unwrap_or_else(|| columns::plain(property));
        self.columns.contains_key(&column)
    }
}

/// The columns of `fields` in the stream's landing table: recorded ones,
/// and for new properties new unique names, recorded now (in the run's
/// transaction). Second, the properties left without a column because the
/// table is full (they stay in `_raw`).
pub fn columns_for(
    source: &str,
    stream: &str,
    landed: &Landed,
    fields: &[crm_sync_core::source::Field],
) -> Result<(Vec<Column>, Vec<String>), CrmError> {
    let taken = landed.columns.keys().cloned().collect();
    let props: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let preferred: HashMap<&str, &str> = fields
        .iter()
        .filter_map(|f| Some((f.name.as_str(), f.column.as_deref()?)))
        .collect();
    let a = columns::assign_preferring(
        &landed.recorded,
        &taken,
        landed.attributes,
        &props,
        &preferred,
    );
    if !a.new.is_empty() {
        let (p, c): (Vec<String>, Vec<String>) = a.new.iter().cloned().unzip();
        Spi::run_with_args(
            "INSERT INTO crm_sync.landing_columns (source, stream, property, column_name)
             SELECT $1, $2, u.p, u.c FROM unnest($3::text[], $4::text[]) u(p, c)
             ON CONFLICT DO NOTHING",
            &[source.into(), stream.into(), p.into(), c.into()],
        )
        .map_err(|e| CrmError::config(format!("cannot record landing columns: {e}")))?;
    }
    let column_of = |p: &str| {
        landed
            .recorded
            .get(p)
            .or_else(|| a.new.iter().find(|(q, _)| q == p).map(|(_, c)| c))
            .cloned()
    };
    let cols = fields
        .iter()
        .filter_map(|f| {
            column_of(&f.name).map(|column| Column {
                property: f.name.clone(),
                column,
                pg_type: f.pg_type,
            })
        })
        .collect();
    Ok((cols, a.without_column))
}

/// The tablespace new tables of this database go to by default.
fn database_tablespace() -> String {
    Spi::get_one::<String>(
        "SELECT t.spcname::text FROM pg_catalog.pg_tablespace t
           JOIN pg_catalog.pg_database d ON d.dattablespace = t.oid
          WHERE d.datname = pg_catalog.current_database()",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| "pg_default".to_owned())
}

/// Existing columns of `schema.table` and their types; empty if no table.
pub fn existing_columns(schema: &str, table: &str) -> HashMap<String, PgType> {
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

/// Why a landing row is marked deleted: `archived` (the CRM lists it as
/// archived or deleted), `merged` (merged into another record) or `gone`
/// (a reconciliation found the CRM no longer has it).
pub const DELETED_REASON: &str = "_deleted_reason";

/// The id of the record a row's record was merged into (reason `merged`).
pub const MERGED_INTO: &str = "_merged_into";

/// Create the landing table if needed and add a column for each new
/// property. A column that exists keeps its type (a user may have changed
/// it); values are converted to whatever the column is.
pub fn ensure_table(schema: &str, table: &str, wanted: &[Column]) -> Result<Vec<Column>, CrmError> {
    let mut existing = existing_columns(schema, table);
    let lz4 = compression_clause();
    let col_def = |c: &Column| {
        let z = match c.pg_type {
            PgType::Text | PgType::Jsonb => lz4,
            _ => "",
        };
        format!("{} {}{z}", qi(&c.column), c.pg_type.sql_name())
    };
    if existing.is_empty() {
        // The database's own tablespace and the heap, whatever the caller
        // set default_tablespace and default_table_access_method to: the
        // table belongs to the extension's owner.
        let space = qi(&database_tablespace());
        let mut cols = vec![format!(
            "id text PRIMARY KEY USING INDEX TABLESPACE {space}"
        )];
        for c in wanted {
            if !SYSTEM_COLUMNS.contains(&c.column.as_str()) {
                cols.push(col_def(c));
            }
        }
        cols.extend([
            format!("_raw jsonb{lz4} NOT NULL"),
            "_updated_at timestamptz".to_owned(),
            "_deleted_at timestamptz".to_owned(),
            "_deleted_reason text".to_owned(),
            "_merged_into text".to_owned(),
            "_synced_at timestamptz NOT NULL DEFAULT now()".to_owned(),
            "_run_id bigint".to_owned(),
        ]);
        Spi::run(&format!(
            "CREATE TABLE {}.{} ({}) USING heap TABLESPACE {space}",
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
        // Roles with an access level read it (crm_sync.access).
        Spi::run_with_args(
            "SELECT crm_sync._grant_landing($1::regclass)",
            &[format!("{}.{}", qi(schema), qi(table)).as_str().into()],
        )
        .map_err(|e| CrmError::config(format!("cannot grant access to the landing table: {e}")))?;
        existing = existing_columns(schema, table);
    }
    // Tables landed before deletes had reasons get the columns.
    for col in [DELETED_REASON, MERGED_INTO] {
        if !existing.contains_key(col) {
            Spi::run(&format!(
                "ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {col} text",
                qi(schema),
                qi(table)
            ))
            .map_err(|e| CrmError::config(format!("cannot add column {col}: {e}")))?;
        }
    }
    ensure_run_index(schema, table)?;
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
                    "ALTER TABLE {}.{} ADD COLUMN {}",
                    qi(schema),
                    qi(table),
                    col_def(c)
                ))
                .map_err(|e| CrmError::config(format!("cannot add column {}: {e}", c.column)))?;
                out.push(c.clone());
            }
        }
    }
    Ok(out)
}

/// An index of `_run_id`: the merge after a sync reads the rows that sync
/// wrote by it (without one, every merge reads the whole table to find a
/// few changed rows). Tables landed before it get it at their next sync;
/// Postgres names it (a name of ours could pass 63 bytes). A table of
/// another owner (a user's, or one re-owned) is left as it is: the index
/// is speed, and only its owner may build it.
fn ensure_run_index(schema: &str, table: &str) -> Result<(), CrmError> {
    let rel = format!("{}.{}", qi(schema), qi(table));
    let wanted = Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE')
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i
                                  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                                 WHERE i.indrelid = c.oid AND a.attname = '_run_id'
                                   AND i.indisvalid AND i.indpred IS NULL)
           FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass",
        &[rel.as_str().into()],
    )
    .map_err(|e| CrmError::config(format!("cannot look for the landing table's indexes: {e}")))?
    .unwrap_or(false);
    if wanted {
        Spi::run(&format!(
            "CREATE INDEX ON {rel} (_run_id) TABLESPACE {}",
            qi(&database_tablespace())
        ))
        .map_err(|e| CrmError::config(format!("cannot index the landing table's _run_id: {e}")))?;
    }
    Ok(())
}

/// Writes batches into one landing table with a prepared statement.
pub struct SpiSink {
    columns: Vec<Column>,
    stmt: OwnedPreparedStatement,
    /// Rows are compared before they are written ([`SpiSink::comparing`]).
    compare_first: bool,
    run_id: i64,
    schema: String,
    table: String,
    pub warning_samples: Vec<String>,
}

impl SpiSink {
    fn sample(&mut self, msg: String) {
        if self.warning_samples.len() < WARNING_SAMPLES {
            self.warning_samples.push(msg);
        }
    }

    pub fn new(schema: &str, table: &str, columns: Vec<Column>, run_id: i64) -> Self {
        Self::with(schema, table, columns, run_id, false)
    }

    /// A sink that compares each record with its row first, if the table
    /// holds rows already: rows that did not change are neither written
    /// nor locked. For runs that read records the table holds unchanged: a
    /// full refresh, and an incremental run that reads its lookback again
    /// (HubSpot's last hour, the others' last minute: runs more frequent
    /// than that read the records of the runs before again). The upsert
    /// locks every row it meets before it compares: a full refresh of
    /// 200,000 unchanged HubSpot contacts wrote 211 MB of WAL for nothing
    /// (`full_page_writes` on), and waited for any row another session had
    /// locked; Salesforce incremental runs 6-17 s apart read 18,000-20,000
    /// records for 2,000 changed, and one run's locks were 118 MB of
    /// full-page images in its 180 MB of WAL. The comparison is one more
    /// look-up of each record: not for a first sync (an empty table, every
    /// row new).
    pub fn comparing(schema: &str, table: &str, columns: Vec<Column>, run_id: i64) -> Self {
        let landed = Spi::get_one::<bool>(&format!(
            "SELECT EXISTS (SELECT 1 FROM {}.{})",
            qi(schema),
            qi(table)
        ))
        .ok()
        .flatten()
        .unwrap_or(false);
        Self::with(schema, table, columns, run_id, landed)
    }

    fn with(
        schema: &str,
        table: &str,
        columns: Vec<Column>,
        run_id: i64,
        compare_first: bool,
    ) -> Self {
        SpiSink {
            stmt: Self::statement(schema, table, &columns, compare_first),
            compare_first,
            columns,
            run_id,
            schema: schema.to_owned(),
            table: table.to_owned(),
            warning_samples: Vec::new(),
        }
    }

    /// The batch upsert for `columns` (compared first, if `compare_first`),
    /// prepared once and kept.
    fn statement(
        schema: &str,
        table: &str,
        columns: &[Column],
        compare_first: bool,
    ) -> OwnedPreparedStatement {
        let n = columns.len();
        // $1 id, $2 raw, $3 updated_at, $4 deleted_at, $5 run_id, $6.. columns.
        // unnest() in the select list runs as a ProjectSet, row by row;
        // in FROM it would be materialized into a tuplestore first.
        // Timestamps travel as binary timestamptz[], records and JSON
        // columns as jsonb[] built in Rust (no jsonb_in to run), the rest as
        // text[].
        let array_type = |t: PgType| match t {
            PgType::TimestampTz => "timestamptz[]",
            PgType::Jsonb => "jsonb[]",
            _ => "text[]",
        };
        let param_types: Vec<&str> = ["text[]", "jsonb[]", "timestamptz[]", "timestamptz[]"]
            .into_iter()
            .chain(columns.iter().map(|c| array_type(c.pg_type)))
            .collect();
        let unnests: Vec<String> = (0..4)
            .map(|i| i + 1)
            .chain((0..n).map(|i| i + 6))
            .zip(&param_types)
            .enumerate()
            .map(|(k, (p, t))| format!("unnest(${p}::{t}) AS u{k}"))
            .collect();
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
        // A row `t` is written over when its record changed (values or
        // deletion) and is not older than it.
        let news = |t: &str, raw: &str, updated: &str, deleted: &str| {
            format!(
                "({t}._raw IS DISTINCT FROM {raw} OR {t}._deleted_at IS DISTINCT FROM {deleted})
                  AND ({t}._updated_at IS NULL OR {updated} IS NULL
                       OR {updated} >= {t}._updated_at OR {deleted} IS NOT NULL)"
            )
        };
        // Compared first: records whose row would not be written over are
        // left out before the upsert meets (and locks) their rows. A row
        // inserted by someone else meanwhile is the upsert's, as before;
        // one changed by someone else after the statement's snapshot is
        // judged as the snapshot saw it (syncs of the stream take turns:
        // only a writer outside them, the table's owner, could).
        let compared = if compare_first {
            format!(
                "
                WHERE NOT EXISTS (SELECT 1 FROM {s}.{t} x
                                   WHERE x.id = u.u0 AND NOT ({differs}))",
                s = qi(schema),
                t = qi(table),
                differs = news("x", "u.u1", "u.u2", "u.u3"),
            )
        } else {
            String::new()
        };
        let sql = format!(
            "WITH up AS (
               INSERT INTO {s}.{t} AS t (id, {cols}_raw, _updated_at, _deleted_at, _deleted_reason, _synced_at, _run_id)
               SELECT u0, {casts}u1, u2, u3, CASE WHEN u3 IS NOT NULL THEN 'archived' END, now(), $5
                 FROM (SELECT {unnests}) AS u{compared}
               ON CONFLICT (id) DO UPDATE
                  SET {sets}_raw = EXCLUDED._raw, _updated_at = EXCLUDED._updated_at,
                      _deleted_at = EXCLUDED._deleted_at, _deleted_reason = EXCLUDED._deleted_reason,
                      _merged_into = NULL,
                      _synced_at = EXCLUDED._synced_at, _run_id = EXCLUDED._run_id
                WHERE {differs}
               RETURNING t._deleted_at IS NOT NULL AS del)
             SELECT count(*) FILTER (WHERE NOT del), count(*) FILTER (WHERE del) FROM up",
            s = qi(schema),
            t = qi(table),
            cols = comma(&target_cols),
            casts = comma(&casts),
            sets = comma(&sets),
            unnests = unnests.join(", "),
            differs = news("t", "EXCLUDED._raw", "EXCLUDED._updated_at", "EXCLUDED._deleted_at"),
        );
        let oid = |t: &str| match t {
            "timestamptz[]" => PgOid::BuiltIn(PgBuiltInOids::TIMESTAMPTZARRAYOID),
            "jsonb[]" => PgOid::BuiltIn(PgBuiltInOids::JSONBARRAYOID),
            _ => PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
        };
        let mut types: Vec<PgOid> = param_types[..4].iter().map(|t| oid(t)).collect();
        types.push(PgOid::BuiltIn(PgBuiltInOids::INT8OID));
        types.extend(param_types[4..].iter().map(|t| oid(t)));
        Spi::connect(|c| {
            c.prepare_mut(sql.as_str(), &types)
                .expect("prepare landing upsert")
                .keep()
        })
    }
}

impl SpiSink {
    /// Rows of records the CRM merged into records of `batch`: marked
    /// deleted (reason `merged`, pointing at the record they went into), in
    /// the transaction that writes the batch; their values stay (a chain of
    /// merges points them at the newest record). Returns how many live rows
    /// were marked.
    fn mark_merged(&self, batch: &[Record]) -> i64 {
        let (old, into): (Vec<&str>, Vec<&str>) = batch
            .iter()
            .flat_map(|r| r.merged_ids.iter().map(|m| (m.as_str(), r.id.as_str())))
            .unzip();
        if old.is_empty() {
            return 0;
        }
        let sql = format!(
            "WITH m AS (
                   UPDATE {s}.{t} AS t
                      SET _deleted_at = coalesce(t._deleted_at, pg_catalog.now()),
                          {DELETED_REASON} = 'merged', {MERGED_INTO} = w.target,
                          _synced_at = pg_catalog.now(), _run_id = $3
                     FROM (SELECT x.id, u.target, x._deleted_at IS NULL AS was_live
                             -- unnest of two arrays is FROM-clause syntax (ROWS FROM),
                     -- not a function a schema can qualify.
                     FROM unnest($1::text[], $2::text[]) AS u(old, target)
                             JOIN {s}.{t} x ON x.id = u.old
                            WHERE x.id <> u.target
                              AND (x.{DELETED_REASON} IS DISTINCT FROM 'merged'
                                   OR x.{MERGED_INTO} IS DISTINCT FROM u.target)) w
                    WHERE t.id = w.id
                   RETURNING w.was_live)
                 SELECT pg_catalog.count(*) FILTER (WHERE was_live) FROM m",
            s = qi(&self.schema),
            t = qi(&self.table),
        );
        // Arrays made inside the connection are freed with it.
        Spi::connect_mut(|c| {
            c.update(&sql, None, &[old.into(), into.into(), self.run_id.into()])?
                .first()
                .get_one::<i64>()
        })
        .expect("mark merged records")
        .unwrap_or(0)
    }
}

impl Sink for SpiSink {
    /// Columns of fields the CRM deleted mid-run keep their landed values.
    fn forget_fields(&mut self, fields: &[String]) {
        let before = self.columns.len();
        self.columns.retain(|c| !fields.contains(&c.property));
        if self.columns.len() != before {
            self.stmt =
                Self::statement(&self.schema, &self.table, &self.columns, self.compare_first);
        }
    }

    fn write(&mut self, batch: &[Record]) -> Result<WriteStats, CrmError> {
        if !batch.iter().any(|r| r.deletion_only) {
            return self.write_records(batch);
        }
        // Records first, then the deletions known by id only (a deletes
        // pass comes after the live one).
        let (gone, rest): (Vec<&Record>, Vec<&Record>) =
            batch.iter().partition(|r| r.deletion_only);
        let mut stats = if rest.is_empty() {
            WriteStats::default()
        } else {
            let rest: Vec<Record> = rest.into_iter().cloned().collect();
            self.write_records(&rest)?
        };
        stats.deleted += self.mark_deleted(&gone)? as u64;
        Ok(stats)
    }
}

impl SpiSink {
    /// Rows of records the CRM reports deleted by id and time only: marked
    /// deleted (reason `archived`, as a deleted record read whole is),
    /// values kept; a row modified after the deletion (the record was
    /// undeleted since) stays live. Returns how many live rows were marked.
    fn mark_deleted(&self, gone: &[&Record]) -> Result<i64, CrmError> {
        let ids: Vec<Option<&str>> = gone.iter().map(|r| Some(r.id.as_str())).collect();
        let at: Vec<Option<i64>> = gone
            .iter()
            .map(|r| r.deleted_at.map(pg_timestamp))
            .collect();
        let sql = format!(
            "WITH d AS (
                   UPDATE {s}.{t} AS t
                      SET _deleted_at = u.at, {DELETED_REASON} = 'archived',
                          _synced_at = pg_catalog.now(), _run_id = $3
                     -- unnest of two arrays is FROM-clause syntax (ROWS FROM),
                     -- not a function a schema can qualify.
                     FROM unnest($1::text[], $2::timestamptz[]) AS u(id, at)
                    WHERE t.id = u.id AND t._deleted_at IS NULL
                      AND (t._updated_at IS NULL OR t._updated_at <= u.at)
                   RETURNING 1)
                 SELECT pg_catalog.count(*) FROM d",
            s = qi(&self.schema),
            t = qi(&self.table),
        );
        // Arrays made inside the connection are freed with it.
        Spi::connect_mut(|c| -> Result<i64, CrmError> {
            let args = [
                text_array(&ids)?,
                timestamptz_array(&at)?,
                self.run_id.into(),
            ];
            Ok(c.update(&sql, None, &args)
                .expect("mark deleted records")
                .first()
                .get_one::<i64>()
                .ok()
                .flatten()
                .unwrap_or(0))
        })
    }

    /// Refresh the values of `fields` (formulas, which change without the
    /// modification time moving) in the live rows of `records`: their
    /// columns and their keys in `_raw`; rows whose values are the same
    /// are left alone. Returns how many rows changed.
    pub fn refresh(
        &self,
        fields: &[String],
        records: &[Record],
        raw_prefix: &str,
    ) -> Result<i64, CrmError> {
        let cols: Vec<&Column> = self
            .columns
            .iter()
            .filter(|c| fields.contains(&c.property))
            .collect();
        if cols.is_empty() || records.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Option<&str>> = records.iter().map(|r| Some(r.id.as_str())).collect();
        let values: Vec<_> = records.iter().map(Record::values).collect();
        let patches: Vec<Option<String>> = values
            .iter()
            .map(|r| {
                let m: serde_json::Map<String, serde_json::Value> = cols
                    .iter()
                    .map(|c| {
                        let v = r.get(&c.property).cloned().unwrap_or_default();
                        (c.property.clone(), v)
                    })
                    .collect();
                Some(serde_json::Value::Object(m).to_string())
            })
            .collect();
        let values: Vec<Vec<Option<String>>> = cols
            .iter()
            .map(|c| {
                values
                    .iter()
                    .map(|r| {
                        let v = r.get(&c.property).unwrap_or(&serde_json::Value::Null);
                        match c.pg_type {
                            PgType::TimestampTz => v
                                .as_str()
                                .and_then(crm_sync_core::types::parse_datetime)
                                .map(crm_sync_core::types::fmt_ts),
                            t => t.coerce(v).ok().flatten().map(Cow::into_owned),
                        }
                    })
                    .collect()
            })
            .collect();
        let sets: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} = u.c{i}::{}", qi(&c.column), c.pg_type.sql_name()))
            .collect();
        let arrays: Vec<String> = (0..cols.len())
            .map(|i| format!("${}::text[]", i + 5))
            .collect();
        let names: Vec<String> = (0..cols.len()).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "WITH p AS (
               UPDATE {s}.{t} AS t
                  SET {sets},
                      _raw = CASE WHEN $4 = '' THEN t._raw || u.patch::jsonb
                                  ELSE pg_catalog.jsonb_set(t._raw, ARRAY[$4],
                                         COALESCE(t._raw -> $4, '{{}}'::jsonb) || u.patch::jsonb) END,
                      _synced_at = pg_catalog.now(), _run_id = $3
                 -- unnest of several arrays is FROM-clause syntax (ROWS
                 -- FROM), not a function a schema can qualify.
                 FROM unnest($1::text[], $2::text[], {arrays}) AS u(id, patch, {names})
                WHERE t.id = u.id AND t._deleted_at IS NULL
                  AND NOT (CASE WHEN $4 = '' THEN t._raw
                                ELSE COALESCE(t._raw -> $4, '{{}}'::jsonb) END @> u.patch::jsonb)
               RETURNING 1)
             SELECT pg_catalog.count(*) FROM p",
            s = qi(&self.schema),
            t = qi(&self.table),
            sets = sets.join(", "),
            arrays = arrays.join(", "),
            names = names.join(", "),
        );
        // Arrays made inside the connection are freed with it.
        Spi::connect_mut(|c| -> Result<i64, CrmError> {
            let mut args = vec![
                text_array(&ids)?,
                text_array(&as_str(&patches))?,
                self.run_id.into(),
                raw_prefix.into(),
            ];
            for v in &values {
                args.push(text_array(&as_str(v))?);
            }
            Ok(c.update(&sql, None, &args)
                .expect("refresh formula values")
                .first()
                .get_one::<i64>()
                .ok()
                .flatten()
                .unwrap_or(0))
        })
    }

    fn write_records<'b>(&mut self, batch: &'b [Record]) -> Result<WriteStats, CrmError> {
        let utf8 = utf8_database();
        let columns: Vec<ColumnOf<'_>> = self
            .columns
            .iter()
            .map(|c| ColumnOf {
                property: &c.property,
                column: &c.column,
                pg_type: c.pg_type,
            })
            .collect();
        let table = self.table.as_str();
        let stmt = &self.stmt;
        let run_id = self.run_id;
        let prepare = |chunk: &'b [Record]| rows::prepare(table, &columns, chunk, utf8);
        let mut written = Written::default();
        let chunks = chunks(batch);
        if chunks.len() < 2 {
            for chunk in chunks {
                written.add(upsert(stmt, run_id, prepare(chunk))?);
            }
        } else {
            // The next chunk is laid out (values coerced, JSON encoded) on a
            // helper thread while this one is written.
            ahead::with_helper(prepare, |helper| -> Result<(), CrmError> {
                let mut chunks = chunks.into_iter();
                if let Some(first) = chunks.next() {
                    helper.send(first);
                }
                loop {
                    if let Some(next) = chunks.next() {
                        helper.send(next);
                    }
                    let Some(rows) = helper.recv() else {
                        return Ok(());
                    };
                    let (done, rows) = upsert_kept(stmt, run_id, rows);
                    helper.give_back(rows);
                    written.add(done?);
                }
            })?;
        }
        for m in std::mem::take(&mut written.samples) {
            self.sample(m);
        }
        let merged = self.mark_merged(batch);
        Ok(WriteStats {
            upserted: written.upserted as u64,
            deleted: (written.deleted + merged) as u64,
            merged: merged as u64,
            warnings: written.warnings,
            ..Default::default()
        })
    }
}

/// Records a landing upsert sends at once: the batch is written in chunks
/// of up to this many, the next laid out on a helper thread while one is
/// written.
const CHUNK: usize = 1000;
/// The first chunk of a batch, which this thread waits for (laying a record
/// out takes about two thirds of writing it): the chunks after grow by half
/// each, each laid out while the one before is written.
const FIRST_CHUNK: usize = 250;

/// A batch as the chunks [`SpiSink::write_records`] writes: from
/// [`FIRST_CHUNK`] records, growing by half to [`CHUNK`].
fn chunks(batch: &[Record]) -> Vec<&[Record]> {
    let mut out = Vec::new();
    let mut rest = batch;
    let mut size = FIRST_CHUNK;
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = after;
        size = (size + size / 2).min(CHUNK);
    }
    out
}

/// What the chunks of a batch did.
#[derive(Default)]
struct Written {
    upserted: i64,
    deleted: i64,
    warnings: u64,
    samples: Vec<String>,
}

impl Written {
    fn add(&mut self, w: Written) {
        self.upserted += w.upserted;
        self.deleted += w.deleted;
        self.warnings += w.warnings;
        self.samples.extend(w.samples);
    }
}

/// Write one chunk with the landing upsert.
fn upsert(stmt: &OwnedPreparedStatement, run_id: i64, rows: Rows<'_>) -> Result<Written, CrmError> {
    upsert_kept(stmt, run_id, rows).0
}

/// [`upsert`], handing `rows` back (for the thread that made them to free).
fn upsert_kept<'r>(
    stmt: &OwnedPreparedStatement,
    run_id: i64,
    mut rows: Rows<'r>,
) -> (Result<Written, CrmError>, Rows<'r>) {
    // Inside the SPI connection the arrays live in SPI's procedure
    // context, freed when this chunk's connection ends.
    let done = Spi::connect_mut(|c| -> Result<(i64, i64), CrmError> {
        let mut args: Vec<pgrx::datum::DatumWithOid> = Vec::with_capacity(5 + rows.columns.len());
        args.push(text_array(&rows.ids)?);
        args.push(jsonb_array_of(&rows.raws)?);
        args.push(timestamptz_array(&rows.updated_at)?);
        args.push(timestamptz_array(&rows.deleted_at)?);
        args.push(run_id.into());
        for col in &rows.columns {
            args.push(match col {
                Values::Text(v) => text_array(&as_str(v))?,
                Values::Timestamps(v) => timestamptz_array(v)?,
                Values::Json(v) => jsonb_array_of(v)?,
            });
        }
        let t = c
            .update(stmt, None, &args)
            .expect("write landing batch")
            .first();
        let a: i64 = t.get(1).ok().flatten().unwrap_or(0);
        let b: i64 = t.get(2).ok().flatten().unwrap_or(0);
        Ok((a, b))
    })
    .map(|(upserted, deleted)| Written {
        upserted,
        deleted,
        warnings: rows.warnings,
        samples: std::mem::take(&mut rows.samples),
    });
    (done, rows)
}

/// Borrowed text values, as [`text_array`] takes them.
pub(crate) fn as_str<S: AsRef<str>>(v: &[Option<S>]) -> Vec<Option<&str>> {
    v.iter().map(|x| x.as_ref().map(AsRef::as_ref)).collect()
}

/// Largest varlena Postgres accepts (MaxAllocSize).
const MAX_VARLENA: usize = 0x3fff_ffff;

/// ArrayType (varlena header, ndim, dataoffset, elemtype) + dims[1] + lbound[1].
const ARRAY_HEADER: usize = 16 + 8;

/// Allocate, zeroed in the current memory context, a one-dimensional array
/// of `n` elements of type `elemtype` in Postgres' layout (`utils/array.h`):
/// header, dims, lower bounds, a null bitmap when some element is NULL,
/// then `data_len` bytes of elements from the returned offset, which is
/// MAXALIGNed. `present[i]` is false for a NULL. `n` must be positive.
fn alloc_array(
    elemtype: pg_sys::Oid,
    present: &[bool],
    data_len: usize,
) -> Result<(*mut u8, usize), CrmError> {
    let maxalign = |x: usize| (x + 7) & !7;
    let n = present.len();
    let has_nulls = present.iter().any(|p| !p);
    let overhead = if has_nulls {
        maxalign(ARRAY_HEADER + n.div_ceil(8))
    } else {
        maxalign(ARRAY_HEADER)
    };
    let total = overhead + data_len;
    if total > MAX_VARLENA {
        return Err(
            CrmError::config(format!("a batch of {n} values is larger than 1 GB"))
                .with_hint("Lower crm_sync.batch_size."),
        );
    }
    // SAFETY: every write below stays inside the `total` bytes allocated.
    unsafe {
        let p = pg_sys::palloc0(total) as *mut u8;
        pgrx::varlena::set_varsize_4b(p as *mut pg_sys::varlena, total as i32);
        (p.add(4) as *mut i32).write_unaligned(1); // ndim
        let dataoffset = if has_nulls { overhead as i32 } else { 0 };
        (p.add(8) as *mut i32).write_unaligned(dataoffset);
        (p.add(12) as *mut pg_sys::Oid).write_unaligned(elemtype);
        (p.add(16) as *mut i32).write_unaligned(n as i32); // dims[0]
        (p.add(20) as *mut i32).write_unaligned(1); // lbound[0]
        if has_nulls {
            let bitmap = p.add(ARRAY_HEADER);
            for (i, _) in present.iter().enumerate().filter(|(_, p)| **p) {
                *bitmap.add(i / 8) |= 1 << (i % 8);
            }
        }
        Ok((p, overhead))
    }
}

fn empty_array<'a>(
    elemtype: pg_sys::Oid,
    array_type: pg_sys::Oid,
) -> pgrx::datum::DatumWithOid<'a> {
    // SAFETY: construct_empty_array builds a valid empty array datum in
    // the current memory context.
    unsafe {
        let arr = pg_sys::construct_empty_array(elemtype);
        pgrx::datum::DatumWithOid::new(pg_sys::Datum::from(arr), array_type)
    }
}

/// A `text[]` datum built in one allocation: each element a 4-byte-header
/// varlena aligned to 4 bytes. pgrx's generic conversion palloc()s and
/// copies every element twice, which was a sixth of a full sync's CPU time.
pub(crate) fn text_array<'a>(
    items: &[Option<&str>],
) -> Result<pgrx::datum::DatumWithOid<'a>, CrmError> {
    let bodies: Vec<Option<&[u8]>> = items.iter().map(|s| s.map(str::as_bytes)).collect();
    varlena_array(pg_sys::TEXTOID, pg_sys::TEXTARRAYOID, &bodies)
}

/// A `jsonb[]` datum of JSON texts, each element as `jsonb_in` would make
/// it: built in Rust (`crm_sync_core::jsonb`) in a UTF-8 database, else,
/// and for any text the builder leaves to it, by `jsonb_in` itself (which
/// fails on a text that is not JSON, as the cast did).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn jsonb_array<'a>(
    items: &[Option<&str>],
) -> Result<pgrx::datum::DatumWithOid<'a>, CrmError> {
    let utf8 = utf8_database();
    let values: Vec<Option<Json<'_>>> = items
        .iter()
        .map(|s| s.map(|s| Json::new(Cow::Borrowed(s), utf8)))
        .collect();
    jsonb_array_of(&values)
}

/// Whether the database's encoding is UTF-8: JSON is then encoded as jsonb
/// in Rust (`crm_sync_core::rows::Json`), else by `jsonb_in`.
pub(crate) fn utf8_database() -> bool {
    // SAFETY: reads the database's encoding, fixed for the session.
    unsafe { pg_sys::GetDatabaseEncoding() == pg_sys::pg_enc::PG_UTF8 as i32 }
}

/// A `jsonb[]` datum of JSON values encoded in Rust where they could be
/// (see [`jsonb_array`]); the others go through `jsonb_in` here.
pub(crate) fn jsonb_array_of<'a>(
    items: &[Option<Json<'_>>],
) -> Result<pgrx::datum::DatumWithOid<'a>, CrmError> {
    let by_postgres: Vec<Option<Vec<u8>>> = items
        .iter()
        .map(|j| match j {
            Some(Json::Text(t)) => jsonb_bytes(t).map(Some),
            _ => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    // Each value is a whole varlena: the array writes its own header.
    let bodies: Vec<Option<&[u8]>> = items
        .iter()
        .zip(&by_postgres)
        .map(|(j, pg)| match (j, pg) {
            (Some(Json::Encoded(v)), _) => Some(&v[4..]),
            (Some(Json::Text(_)), Some(v)) => Some(&v[4..]),
            _ => None,
        })
        .collect();
    varlena_array(pg_sys::JSONBOID, pg_sys::JSONBARRAYOID, &bodies)
}

/// An array datum of a varlena type (`elemtype`, int-aligned: text, jsonb)
/// built in one allocation: each element its body after a 4-byte header,
/// aligned to 4 bytes.
fn varlena_array<'a>(
    elemtype: pg_sys::Oid,
    array_type: pg_sys::Oid,
    bodies: &[Option<&[u8]>],
) -> Result<pgrx::datum::DatumWithOid<'a>, CrmError> {
    if bodies.is_empty() {
        return Ok(empty_array(elemtype, array_type));
    }
    let align4 = |x: usize| (x + 3) & !3;
    let present: Vec<bool> = bodies.iter().map(Option::is_some).collect();
    let data_len = bodies.iter().flatten().map(|b| align4(4 + b.len())).sum();
    let (p, mut off) = alloc_array(elemtype, &present, data_len)?;
    // SAFETY: alloc_array reserved align4(4 + len) bytes per element.
    unsafe {
        for b in bodies.iter().flatten() {
            let len = 4 + b.len();
            pgrx::varlena::set_varsize_4b(p.add(off) as *mut pg_sys::varlena, len as i32);
            std::ptr::copy_nonoverlapping(b.as_ptr(), p.add(off + 4), b.len());
            off += align4(len);
        }
        Ok(pgrx::datum::DatumWithOid::new(
            pg_sys::Datum::from(p),
            array_type,
        ))
    }
}

/// One JSON text as the `jsonb` varlena `jsonb_in` makes of it, with its
/// 4-byte header (the array writes its own).
pub(crate) fn jsonb_bytes(json: &str) -> Result<Vec<u8>, CrmError> {
    let c = std::ffi::CString::new(json)
        .map_err(|_| CrmError::bad_response("a record's JSON holds a NUL byte"))?;
    // SAFETY: jsonb_in takes a C string and returns a new, plain (not
    // toasted) varlena, or raises an ERROR for a text that is not JSON.
    unsafe {
        let d = pgrx::direct_function_call_as_datum(
            pg_sys::jsonb_in,
            &[Some(pg_sys::Datum::from(c.as_ptr()))],
        )
        .expect("jsonb_in returns a value");
        let v = d.cast_mut_ptr::<pg_sys::varlena>();
        let len = pgrx::varlena::varsize_any(v);
        Ok(std::slice::from_raw_parts(v as *const u8, len).to_vec())
    }
}

/// A `timestamptz[]` datum: 8-byte Postgres timestamps (microseconds since
/// 2000-01-01), 8-byte aligned since the data starts MAXALIGNed.
pub(crate) fn timestamptz_array<'a>(
    items: &[Option<i64>],
) -> Result<pgrx::datum::DatumWithOid<'a>, CrmError> {
    if items.is_empty() {
        return Ok(empty_array(
            pg_sys::TIMESTAMPTZOID,
            pg_sys::TIMESTAMPTZARRAYOID,
        ));
    }
    let present: Vec<bool> = items.iter().map(Option::is_some).collect();
    let (p, mut off) = alloc_array(
        pg_sys::TIMESTAMPTZOID,
        &present,
        8 * items.iter().flatten().count(),
    )?;
    // SAFETY: alloc_array reserved 8 bytes per non-NULL element.
    unsafe {
        for v in items.iter().flatten() {
            (p.add(off) as *mut i64).write_unaligned(*v);
            off += 8;
        }
        Ok(pgrx::datum::DatumWithOid::new(
            pg_sys::Datum::from(p),
            pg_sys::TIMESTAMPTZARRAYOID,
        ))
    }
}
