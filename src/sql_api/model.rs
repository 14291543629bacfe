//! `crm_sync.merge()`, the unified model merged by hand, and the check of
//! the mappings it evaluates.

use pgrx::datum::Interval;
use pgrx::prelude::*;
use pgrx::PgTryBuilder;

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
    let rows = crate::merge::run(None, full);
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

/// The id of a source record in `crm_sync.source_records` (`record_id`),
/// and in the unified model the id of the row it leads: a hash of the four
/// parts (`crm_sync_core::model::identity::record_id`). The model's own
/// lookups of a record by its CRM id go through it and the primary key.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn source_record_id(entity: &str, source: &str, stream: &str, external_id: &str) -> i64 {
    crm_sync_core::model::identity::record_id(entity, source, stream, external_id)
}

/// The hash of a match key's value as `crm_sync.source_records.keys` holds
/// it (`crm_sync_core::model::identity::key_hash`), for the merge's lookups
/// of the records sharing a key.
#[pg_extern(immutable, parallel_safe, strict, name = "_match_key_hash")]
pub fn match_key_hash(entity: &str, column: &str, value: &str) -> i64 {
    crm_sync_core::model::identity::key_hash(entity, column, value)
}

std::thread_local! {
    static LINEAGE: std::cell::RefCell<crm_sync_core::model::survive::LineageOfOne> = Default::default();
}

/// `crm_sync._lineage_of_one(vals jsonb, fields text) RETURNS jsonb`
/// (sql/model.sql): the lineage of a unified row of one record, each of
/// `fields` (a JSON array of names) that is a key of `vals` -> 1, as
/// `every - ARRAY[fields not in vals]` gives it, at about an eighth of the cost
/// (the merge writes most rows this way). Declared by hand: `vals` is read
/// as the jsonb it is, without pgrx's conversion through text, and the
/// result is a jsonb body.
#[pg_extern(immutable, parallel_safe, strict, sql = false)]
pub fn lineage_of_one(vals: &[u8], fields: &str) -> Vec<u8> {
    LINEAGE.with(|l| l.borrow_mut().of(vals, fields).to_vec())
}

/// Raise unless `expression` is one SQL expression over the landing row `r`
/// that compiles against every landing table it would be evaluated on (the
/// streams of `provider`'s `object`, of `source` only if set). Checked by a
/// trigger whenever crm_sync.mappings is written: a mapping is SQL the
/// merge runs with the extension owner's rights.
#[pg_extern(name = "_check_mapping")]
pub fn check_mapping(provider: &str, object: &str, source: Option<&str>, expression: &str) {
    let bad = |why: String, hint: &str| -> ! {
        crate::errors::fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("mapping of {provider} {object}: {why}"),
            Some(hint),
        )
    };
    if let Err(why) = one_expression(expression) {
        bad(
            why,
            "Write one SQL expression over the landing row r, such as r.email or lower(r._raw->>'Email').",
        );
    }
    let tables: Vec<(String, String)> = Spi::connect(|c| {
        c.select(
            "SELECT t.source, t.stream FROM crm_sync.streams t JOIN crm_sync.sources s ON s.name = t.source
              WHERE s.provider = $1 AND t.object = $2 AND ($3::text IS NULL OR t.source = $3)
                AND pg_catalog.to_regclass(pg_catalog.format('%I.%I', t.source, t.stream)) IS NOT NULL",
            None,
            &[provider.into(), object.into(), source.into()],
        )
        .expect("read crm_sync.streams")
        .filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??)))
        .collect()
    });
    for (schema, table) in tables {
        let sql = format!(
            "EXPLAIN (COSTS OFF) SELECT (\n{expression}\n)::text FROM {}.{} r",
            pgrx::spi::quote_identifier(&schema),
            pgrx::spi::quote_identifier(&table)
        );
        if let Err(message) = crate::txn::in_subtransaction(|| Spi::run(&sql)) {
            bad(
                format!("the expression does not compile against {schema}.{table}: {message}"),
                "Columns of the landing table, and r._raw, are what an expression can use; see crm_sync.discover(source, stream).",
            );
        }
    }
}

/// Whether `expression` is one expression: `SELECT (expression)` parses as
/// one statement with one target and nothing else (no FROM, no set
/// operation, no second statement). Only parsed, never run.
fn one_expression(expression: &str) -> Result<(), String> {
    let sql = std::ffi::CString::new(format!("SELECT (\n{expression}\n)"))
        .map_err(|_| "the expression holds a NUL character".to_owned())?;
    let parsed = PgTryBuilder::new(|| {
        // SAFETY: raw_parser only parses, into the current memory context;
        // a syntax error is caught below.
        unsafe {
            Some(pg_sys::raw_parser(
                sql.as_ptr(),
                pg_sys::RawParseMode::RAW_PARSE_DEFAULT,
            ))
        }
    })
    .catch_others(|_| None)
    .execute();
    let Some(list) = parsed else {
        return Err("the expression does not parse".into());
    };
    // SAFETY: reading the parse tree raw_parser just built.
    unsafe {
        if list.is_null() || pg_sys::list_length(list) != 1 {
            return Err("it is more than one statement".into());
        }
        let raw = pg_sys::list_nth(list, 0) as *mut pg_sys::RawStmt;
        let stmt = (*raw).stmt;
        if stmt.is_null() || (*stmt).type_ != pg_sys::NodeTag::T_SelectStmt {
            return Err("it is not an expression".into());
        }
        let s = stmt as *mut pg_sys::SelectStmt;
        let s = &*s;
        let only_target = !s.targetList.is_null()
            && pg_sys::list_length(s.targetList) == 1
            && s.distinctClause.is_null()
            && s.intoClause.is_null()
            && s.fromClause.is_null()
            && s.whereClause.is_null()
            && s.groupClause.is_null()
            && s.havingClause.is_null()
            && s.windowClause.is_null()
            && s.valuesLists.is_null()
            && s.sortClause.is_null()
            && s.limitOffset.is_null()
            && s.limitCount.is_null()
            && s.lockingClause.is_null()
            && s.withClause.is_null()
            && s.op == pg_sys::SetOperation::SETOP_NONE;
        if only_target {
            Ok(())
        } else {
            Err(
                "it is more than one expression (a FROM, a second column, a set operation...)"
                    .into(),
            )
        }
    }
}
