//! A batch of records laid out as the columns the landing upsert sends: one
//! vector per column, values coerced to their column's type and `_raw`
//! already encoded as jsonb. Pure work, no database: the extension prepares
//! one chunk of a batch here, on a helper thread (see [`crate::ahead`]),
//! while its main thread writes the chunk before.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::jsonb::Picked;
use crate::source::Record;
use crate::types::{coerce_timestamp, pg_timestamp, timestamp_of_str, PgType};

/// How many bad values one chunk keeps as samples (the run keeps fewer).
pub const SAMPLES: usize = 10;

/// A landing column: the CRM property it holds and its type.
pub struct ColumnOf<'a> {
    pub property: &'a str,
    pub column: &'a str,
    pub pg_type: PgType,
}

/// A JSON value on its way to a `jsonb` datum.
pub enum Json<'a> {
    /// Encoded in Rust (`crate::jsonb::encode`): a varlena whose first four
    /// bytes are left for its header.
    Encoded(Vec<u8>),
    /// For Postgres' `jsonb_in` (not a UTF-8 database, or a text the Rust
    /// encoder leaves to it).
    Text(Cow<'a, str>),
}

impl<'a> Json<'a> {
    pub fn new(text: Cow<'a, str>, utf8: bool) -> Self {
        match utf8.then(|| crate::jsonb::encode(&text)).flatten() {
            Some(v) => Json::Encoded(v),
            None => Json::Text(text),
        }
    }
}

/// One column's values, in the form they are sent.
pub enum Values<'a> {
    Text(Vec<Option<Cow<'a, str>>>),
    /// Postgres timestamps (microseconds since 2000-01-01).
    Timestamps(Vec<Option<i64>>),
    Json(Vec<Option<Json<'a>>>),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Values::Text(v) => v.len(),
            Values::Timestamps(v) => v.len(),
            Values::Json(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_null(&mut self) {
        match self {
            Values::Text(v) => v.push(None),
            Values::Timestamps(v) => v.push(None),
            Values::Json(v) => v.push(None),
        }
    }
}

/// Records as the upsert's parameters.
pub struct Rows<'a> {
    pub ids: Vec<Option<&'a str>>,
    pub raws: Vec<Option<Json<'a>>>,
    pub updated_at: Vec<Option<i64>>,
    pub deleted_at: Vec<Option<i64>>,
    /// In the order of the columns given to [`prepare`].
    pub columns: Vec<Values<'a>>,
    /// Values that did not fit their column (landed NULL, kept in `_raw`)
    /// and records whose JSON held `\u0000`.
    pub warnings: u64,
    /// What the first of those were, at most [`SAMPLES`].
    pub samples: Vec<String>,
}

/// Lay `records` out as the columns of `table`'s upsert; `utf8` when the
/// database's encoding is UTF-8 (else JSON goes to `jsonb_in`).
pub fn prepare<'a>(
    table: &str,
    columns: &[ColumnOf<'_>],
    records: &'a [Record],
    utf8: bool,
) -> Rows<'a> {
    let n = records.len();
    let mut out = Rows {
        ids: Vec::with_capacity(n),
        raws: Vec::with_capacity(n),
        updated_at: Vec::with_capacity(n),
        deleted_at: Vec::with_capacity(n),
        columns: columns
            .iter()
            .map(|c| match c.pg_type {
                PgType::TimestampTz => Values::Timestamps(Vec::with_capacity(n)),
                PgType::Jsonb => Values::Json(Vec::with_capacity(n)),
                _ => Values::Text(Vec::with_capacity(n)),
            })
            .collect(),
        warnings: 0,
        samples: Vec::new(),
    };
    // Each column's slot, by the property it holds (when two columns hold
    // one property, records take the map's path below).
    let slot: HashMap<&str, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.property, i))
        .collect();
    for r in records {
        out.ids.push(Some(r.id.as_str()));
        out.updated_at.push(r.updated_at.map(pg_timestamp));
        out.deleted_at.push(r.deleted_at.map(pg_timestamp));
        let nul = without_nul_escapes(&r.raw);
        // Values left in `raw` are picked from it as it is encoded (one
        // parse for both).
        if r.unparsed > 0 && nul.is_none() && utf8 && slot.len() == columns.len() {
            if let Some((jsonb, cells)) = picked(&r.raw, columns.len(), &slot) {
                out.raws.push(Some(jsonb));
                push_values(&mut out, table, columns, &r.id, cells, utf8, |x| x);
                continue;
            }
        }
        let raw = match nul {
            Some(clean) => {
                out.warnings += 1;
                sample(&mut out.samples, &|| {
                    format!(
                    "{table}: record {} has \\u0000 in its JSON, which Postgres cannot store; replaced with U+FFFD in _raw",
                    r.id
                )
                });
                Cow::Owned(clean)
            }
            None => Cow::Borrowed(r.raw.as_str()),
        };
        out.raws.push(Some(Json::new(raw, utf8)));
        if r.unparsed == 0 {
            push_values(
                &mut out,
                table,
                columns,
                &r.id,
                cells(columns, &r.fields),
                utf8,
                |x| x,
            );
        } else {
            // Values parsed here from `raw` are copied out of their map.
            let fields = r.values();
            push_values(
                &mut out,
                table,
                columns,
                &r.id,
                cells(columns, &fields),
                utf8,
                |x| Cow::Owned(x.into_owned()),
            );
        }
    }
    out
}

fn sample(out: &mut Vec<String>, msg: &dyn Fn() -> String) {
    if out.len() < SAMPLES {
        out.push(msg());
    }
}

/// A record's value for one column: from its map of fields, or picked
/// from its JSON text as it was encoded ([`picked`]).
enum Cell<'f> {
    Value(&'f Value),
    /// A JSON string, decoded.
    Str(Cow<'f, str>),
    /// Any other value picked, parsed as the record's map would hold it.
    Parsed(Value),
}

static NULL: Value = Value::Null;

impl<'f> Cell<'f> {
    /// The value as `t`'s text ([`PgType::coerce`]).
    fn text(&self, t: PgType) -> Result<Option<Cow<'f, str>>, ()> {
        let owned = |c: Option<Cow<'_, str>>| c.map(|c| Cow::Owned(c.into_owned()));
        match self {
            Cell::Value(v) => t.coerce(v),
            Cell::Str(Cow::Borrowed(s)) => t.coerce_str(s),
            Cell::Str(Cow::Owned(s)) => t.coerce_str(s).map(owned),
            Cell::Parsed(v) => t.coerce(v).map(owned),
        }
    }

    fn timestamp(&self) -> Result<Option<i64>, ()> {
        match self {
            Cell::Value(v) => coerce_timestamp(v),
            Cell::Str(s) => timestamp_of_str(s),
            Cell::Parsed(v) => coerce_timestamp(v),
        }
    }

    /// The value as JSON (for a warning).
    fn json(&self) -> String {
        match self {
            Cell::Value(v) => v.to_string(),
            Cell::Str(s) => Value::String(s.to_string()).to_string(),
            Cell::Parsed(v) => v.to_string(),
        }
    }
}

/// The values of `columns` in a record's map of fields.
fn cells<'c, 'f: 'c>(
    columns: &'c [ColumnOf<'_>],
    fields: &'f Map<String, Value>,
) -> impl Iterator<Item = Cell<'f>> + 'c {
    columns
        .iter()
        .map(|c| Cell::Value(fields.get(c.property).unwrap_or(&NULL)))
}

/// `raw` encoded as jsonb, and the values of the columns (`slot`: each
/// property's column, of `n`) picked from it on the way, as the record's
/// map would hold them; None when `raw` is left to `jsonb_in`.
fn picked<'a>(
    raw: &'a str,
    n: usize,
    slot: &HashMap<&str, usize>,
) -> Option<(Json<'a>, Vec<Cell<'a>>)> {
    let (jsonb, values) = crate::jsonb::encode_picking(raw, n, |k| slot.get(k).copied())?;
    let mut cells = Vec::with_capacity(n);
    for v in values {
        cells.push(match v {
            None | Some(Picked::Null) => Cell::Value(&NULL),
            Some(Picked::Bool(b)) => Cell::Parsed(Value::Bool(b)),
            Some(Picked::Str(s)) => Cell::Str(s),
            Some(Picked::Num(t) | Picked::Json(t)) => Cell::Parsed(serde_json::from_str(t).ok()?),
        });
    }
    Some((Json::Encoded(jsonb), cells))
}

/// Lay one record's values (`cells`, one a column) out as `columns`' values
/// in `out`; `keep` makes a text borrowed from the values one that `out`
/// may hold.
fn push_values<'a, 'f>(
    out: &mut Rows<'a>,
    table: &str,
    columns: &[ColumnOf<'_>],
    id: &str,
    cells: impl IntoIterator<Item = Cell<'f>>,
    utf8: bool,
    keep: impl Fn(Cow<'f, str>) -> Cow<'a, str>,
) {
    for ((c, values), v) in columns.iter().zip(out.columns.iter_mut()).zip(cells) {
        let fits = match values {
            Values::Timestamps(vs) => v.timestamp().map(|x| vs.push(x)),
            Values::Text(vs) => v
                .text(c.pg_type)
                .map(|x| vs.push(x.map(|x| keep(without_nul(x))))),
            // A JSON value holds a NUL as the escape `\u0000`, which
            // jsonb rejects (the whole batch would fail): replaced, as
            // in `_raw`, with a warning.
            Values::Json(vs) => v.text(c.pg_type).map(|x| {
                vs.push(x.map(|x| {
                    let x = match without_nul_escapes(&x) {
                        Some(clean) => {
                            out.warnings += 1;
                            sample(&mut out.samples, &|| format!(
                                "{table}.{}: value of record {id} has \\u0000, which Postgres cannot store; replaced with U+FFFD",
                                c.column
                            ));
                            Cow::Owned(clean)
                        }
                        None => keep(x),
                    };
                    Json::new(x, utf8)
                }))
            }),
        };
        if fits.is_err() {
            values.push_null();
            out.warnings += 1;
            sample(&mut out.samples, &|| {
                let shown: String = v.json().chars().take(60).collect();
                format!(
                    "{table}.{}: value {shown} of record {id} is not a valid {}; kept in _raw",
                    c.column,
                    c.pg_type.sql_name()
                )
            });
        }
    }
}

/// A text value Postgres can store: NUL (which it cannot) becomes U+FFFD.
fn without_nul(x: Cow<'_, str>) -> Cow<'_, str> {
    if x.contains('\0') {
        Cow::Owned(x.replace('\0', "\u{FFFD}"))
    } else {
        x
    }
}

/// `raw` with every `\u0000` escape (which jsonb rejects) replaced by
/// U+FFFD, or None when it has none.
pub fn without_nul_escapes(raw: &str) -> Option<String> {
    if !raw.contains("\\u0000") {
        return None;
    }
    fn clean(v: &mut Value) -> bool {
        match v {
            Value::String(s) if s.contains('\0') => {
                *s = s.replace('\0', "\u{FFFD}");
                true
            }
            Value::Array(a) => a.iter_mut().fold(false, |acc, x| clean(x) | acc),
            Value::Object(m) => {
                let mut changed = false;
                let keys: Vec<String> = m.keys().filter(|k| k.contains('\0')).cloned().collect();
                for k in keys {
                    let val = m.remove(&k).unwrap_or_default();
                    m.insert(k.replace('\0', "\u{FFFD}"), val);
                    changed = true;
                }
                m.values_mut().fold(changed, |acc, x| clean(x) | acc)
            }
            _ => false,
        }
    }
    let mut v: Value = serde_json::from_str(raw).ok()?;
    clean(&mut v).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn record(id: &str, raw: &str) -> Record {
        let fields = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => m,
            _ => Default::default(),
        };
        Record {
            id: id.into(),
            updated_at: Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()),
            deleted_at: None,
            fields,
            raw: raw.into(),
            merged_ids: Vec::new(),
            deletion_only: false,
            unparsed: 0,
        }
    }

    fn cols() -> Vec<ColumnOf<'static>> {
        vec![
            ColumnOf {
                property: "n",
                column: "n",
                pg_type: PgType::Numeric,
            },
            ColumnOf {
                property: "at",
                column: "at",
                pg_type: PgType::TimestampTz,
            },
            ColumnOf {
                property: "addr",
                column: "addr",
                pg_type: PgType::Jsonb,
            },
            ColumnOf {
                property: "name",
                column: "name",
                pg_type: PgType::Text,
            },
        ]
    }

    fn text(v: &Values<'_>, i: usize) -> Option<String> {
        match v {
            Values::Text(v) => v[i].as_ref().map(|s| s.to_string()),
            _ => panic!("not a text column"),
        }
    }

    #[test]
    fn records_become_one_vector_per_column() {
        let recs = [
            record(
                "1",
                r#"{"n": 12.5, "at": "2026-01-01T00:00:00Z", "addr": {"city": "Oslo"}, "name": "A"}"#,
            ),
            record("2", r#"{"n": null}"#),
        ];
        let rows = prepare("t", &cols(), &recs, true);
        assert_eq!(rows.ids, [Some("1"), Some("2")]);
        assert_eq!(rows.warnings, 0);
        assert!(rows.columns.iter().all(|c| c.len() == 2));
        assert_eq!(text(&rows.columns[0], 0).as_deref(), Some("12.5"));
        assert_eq!(text(&rows.columns[0], 1), None);
        match &rows.columns[1] {
            Values::Timestamps(v) => {
                let at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
                assert_eq!(v, &[Some(pg_timestamp(at)), None]);
            }
            _ => panic!("timestamps"),
        }
        match &rows.columns[2] {
            Values::Json(v) => {
                assert!(matches!(v[0], Some(Json::Encoded(_))));
                assert!(v[1].is_none());
            }
            _ => panic!("json"),
        }
        assert_eq!(text(&rows.columns[3], 0).as_deref(), Some("A"));
        assert!(rows
            .raws
            .iter()
            .all(|r| matches!(r, Some(Json::Encoded(_)))));
        assert_eq!(rows.updated_at[0], recs[0].updated_at.map(pg_timestamp));
    }

    #[test]
    fn outside_utf8_json_is_left_to_postgres() {
        let recs = [record("1", r#"{"addr": {"a": 1}}"#)];
        let rows = prepare("t", &cols(), &recs, false);
        assert!(matches!(&rows.raws[0], Some(Json::Text(t)) if t.as_ref() == recs[0].raw));
        assert!(matches!(&rows.columns[2], Values::Json(v) if matches!(v[0], Some(Json::Text(_)))));
    }

    #[test]
    fn a_value_that_does_not_fit_lands_null_with_a_sample() {
        let recs: Vec<Record> = (0..15)
            .map(|i| {
                record(
                    &i.to_string(),
                    r#"{"n": "twelve", "at": "soon", "name": "x\u0000y"}"#,
                )
            })
            .collect();
        let rows = prepare("t", &cols(), &recs, true);
        // Two bad values a record; the NUL in a text value is replaced,
        // not counted, and a NUL escape in the JSON is.
        assert_eq!(rows.warnings, 15 * 3);
        assert_eq!(rows.samples.len(), SAMPLES);
        assert!(
            rows.samples[0].contains("has \\u0000 in its JSON"),
            "{:?}",
            rows.samples
        );
        assert!(
            rows.samples[1].contains("t.n: value \"twelve\" of record 0 is not a valid numeric"),
            "{:?}",
            rows.samples
        );
        assert_eq!(text(&rows.columns[0], 3), None);
        assert_eq!(text(&rows.columns[3], 0).as_deref(), Some("x\u{FFFD}y"));
        match &rows.raws[0] {
            Some(Json::Encoded(_)) => {}
            _ => panic!("the cleaned record is encoded"),
        }
    }

    #[test]
    fn a_nul_in_a_json_value_is_replaced_with_a_warning() {
        let recs = [record("1", r#"{"addr": {"street": "Main\u0000St"}}"#)];
        let rows = prepare("t", &cols(), &recs, true);
        // One for _raw, one for the JSON column.
        assert_eq!(rows.warnings, 2);
        assert!(
            rows.samples[1].contains("t.addr: value of record 1 has \\u0000"),
            "{:?}",
            rows.samples
        );
        match &rows.columns[2] {
            Values::Json(v) => match &v[0] {
                Some(Json::Encoded(b)) => {
                    let text = String::from_utf8_lossy(b);
                    assert!(text.contains("Main\u{FFFD}St"), "{text}");
                }
                _ => panic!("encoded, not left to jsonb_in (which rejects \\u0000)"),
            },
            _ => panic!("json"),
        }
    }

    /// Every value of a prepared chunk, as text (to compare two).
    fn render(rows: &Rows<'_>) -> Vec<String> {
        let json = |j: &Option<Json<'_>>| match j {
            None => "null".to_owned(),
            Some(Json::Encoded(b)) => format!("jsonb {:?}", &b[4..]),
            Some(Json::Text(t)) => format!("text {t}"),
        };
        let mut out: Vec<String> = rows.raws.iter().map(json).collect();
        for c in &rows.columns {
            out.extend((0..c.len()).map(|i| match c {
                Values::Text(v) => format!("{:?}", v[i]),
                Values::Timestamps(v) => format!("{:?}", v[i]),
                Values::Json(v) => json(&v[i]),
            }));
        }
        out.push(rows.warnings.to_string());
        out.extend(rows.samples.iter().cloned());
        out
    }

    #[test]
    fn values_left_in_the_json_land_as_parsed_ones_do() {
        let props = [
            ("s", PgType::Text),
            ("n", PgType::Numeric),
            ("i", PgType::BigInt),
            ("b", PgType::Boolean),
            ("d", PgType::Date),
            ("at", PgType::TimestampTz),
            ("t", PgType::Time),
            ("j", PgType::Jsonb),
            ("", PgType::Text),
        ];
        let columns: Vec<ColumnOf<'_>> = props
            .iter()
            .map(|(p, t)| ColumnOf {
                property: p,
                column: p,
                pg_type: *t,
            })
            .collect();
        let raws = [
            r#"{"s": "plain", "n": 1.0, "i": 42, "b": true, "d": "2024-03-01", "at": "2024-03-01T12:00:00.000+0000", "t": "10:11:12", "j": {"b": 1, "a": [1, 2.50, "x"]}, "": "empty key"}"#,
            r#" { "s" : "tab\t \"quoted\" \u00e9\ud83d\ude00" , "n" : 1e3 , "i" : "17" , "b" : "FALSE" , "j" : "a string" } "#,
            r#"{"s": 12.50, "n": "  7.25 ", "i": 12345678901234567890, "b": 1, "at": 1709294400000, "j": [true, null]}"#,
            r#"{"s": true, "n": -0, "i": 1.5, "b": "maybe", "d": "soon", "at": "later", "t": "noon", "j": null}"#,
            r#"{"s": {"nested": {"deep": "x"}}, "n": "twelve", "s": "the last wins", "extra": [1, {"s": "not top"}]}"#,
            r#"{"s": null, "n": null, "at": "   ", "i": " ", "j": false, "d": 20240301}"#,
            r#"{"n": 123456789012345678901234567890, "i": -9223372036854775808, "j": 1.0e-7}"#,
            r#"{}"#,
        ];
        let parsed: Vec<Record> = raws
            .iter()
            .enumerate()
            .map(|(i, r)| record(&i.to_string(), r))
            .collect();
        let unparsed: Vec<Record> = parsed
            .iter()
            .map(|r| Record {
                fields: Map::new(),
                unparsed: r.fields.len().max(1),
                ..r.clone()
            })
            .collect();
        let a = render(&prepare("t", &columns, &parsed, true));
        let b = render(&prepare("t", &columns, &unparsed, true));
        assert_eq!(a, b);
        // Bad values were met (the comparison covers their warnings).
        assert!(a.iter().any(|x| x.contains("is not a valid")), "{a:?}");
    }

    #[test]
    fn nul_escapes_are_replaced_in_keys_and_values() {
        let raw = json!({"a\u{0}": ["x\u{0}", {"b": "c"}], "d": 1}).to_string();
        assert!(raw.contains("\\u0000"));
        let clean = without_nul_escapes(&raw).expect("changed");
        assert!(!clean.contains("\\u0000"));
        assert!(clean.contains("a\u{FFFD}") && clean.contains("x\u{FFFD}"));
        assert_eq!(without_nul_escapes(r#"{"a": "b"}"#), None);
    }
}
