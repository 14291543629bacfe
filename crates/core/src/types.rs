//! Column types of landing tables and the conversion of CRM values into them.
//!
//! Conversion happens here, not in SQL, so that a value that does not fit its
//! column becomes NULL plus a warning instead of failing the whole batch.

use std::borrow::Cow;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde_json::Value;

enum Coerced<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl<'a> Coerced<'a> {
    fn into_cow(self) -> Cow<'a, str> {
        match self {
            Coerced::Borrowed(s) => Cow::Borrowed(s),
            Coerced::Owned(s) => Cow::Owned(s),
        }
    }
}

/// The Postgres types a CRM field can land as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    Text,
    Numeric,
    BigInt,
    Boolean,
    Date,
    TimestampTz,
    Time,
    Jsonb,
}

impl PgType {
    pub fn sql_name(self) -> &'static str {
        match self {
            PgType::Text => "text",
            PgType::Numeric => "numeric",
            PgType::BigInt => "bigint",
            PgType::Boolean => "boolean",
            PgType::Date => "date",
            PgType::TimestampTz => "timestamptz",
            PgType::Time => "time",
            PgType::Jsonb => "jsonb",
        }
    }

    /// From `format_type()` output of an existing column. Types we do not
    /// produce ourselves (a user altered the column) are written as text and
    /// cast by Postgres.
    pub fn from_sql_name(name: &str) -> PgType {
        match name {
            "numeric" => PgType::Numeric,
            "bigint" => PgType::BigInt,
            "boolean" => PgType::Boolean,
            "date" => PgType::Date,
            "timestamp with time zone" | "timestamptz" => PgType::TimestampTz,
            "time without time zone" | "time" => PgType::Time,
            "jsonb" => PgType::Jsonb,
            _ => PgType::Text,
        }
    }

    /// Convert a JSON value from the CRM into the text form Postgres accepts
    /// for this type. `Ok(None)` is SQL NULL; `Err(())` means the value does
    /// not fit (the caller keeps it in `_raw` and records a warning).
    /// Text and numbers already in Postgres' form are borrowed, not copied.
    #[allow(clippy::result_unit_err)]
    pub fn coerce(self, v: &Value) -> Result<Option<Cow<'_, str>>, ()> {
        self.coerce_owned(v).map(|o| o.map(Coerced::into_cow))
    }

    #[cfg(test)]
    fn coerce_string(self, v: &Value) -> Result<Option<String>, ()> {
        self.coerce(v).map(|o| o.map(Cow::into_owned))
    }

    fn coerce_owned(self, v: &Value) -> Result<Option<Coerced<'_>>, ()> {
        use Coerced::Owned;
        let s = match v {
            Value::Null => return Ok(None),
            Value::String(s) => s.as_str(),
            Value::Bool(b) => {
                return match self {
                    PgType::Boolean | PgType::Text => Ok(Some(Owned(b.to_string()))),
                    PgType::Jsonb => Ok(Some(Owned(v.to_string()))),
                    _ => Err(()),
                }
            }
            Value::Number(n) => {
                return match self {
                    PgType::Text | PgType::Numeric | PgType::Jsonb => {
                        Ok(Some(Owned(n.to_string())))
                    }
                    PgType::BigInt => n.as_i64().map(|i| Some(Owned(i.to_string()))).ok_or(()),
                    PgType::TimestampTz => n
                        .as_i64()
                        .and_then(epoch_ms)
                        .map(|d| Some(Owned(fmt_ts(d))))
                        .ok_or(()),
                    _ => Err(()),
                }
            }
            Value::Array(_) | Value::Object(_) => {
                return match self {
                    PgType::Text | PgType::Jsonb => Ok(Some(Owned(v.to_string()))),
                    _ => Err(()),
                }
            }
        };
        self.coerce_text(s)
    }

    /// [`PgType::coerce`] of a JSON string (decoded), borrowing from it
    /// where it can.
    #[allow(clippy::result_unit_err)]
    pub fn coerce_str(self, s: &str) -> Result<Option<Cow<'_, str>>, ()> {
        self.coerce_text(s).map(|o| o.map(Coerced::into_cow))
    }

    fn coerce_text(self, s: &str) -> Result<Option<Coerced<'_>>, ()> {
        use Coerced::{Borrowed, Owned};
        if self == PgType::Text {
            return Ok(Some(Borrowed(s)));
        }
        if self == PgType::Jsonb {
            return Ok(Some(Owned(Value::String(s.to_owned()).to_string())));
        }
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        match self {
            PgType::Numeric => is_numeric(s).then_some(Some(Borrowed(s))).ok_or(()),
            PgType::BigInt => s
                .parse::<i64>()
                .map(|i| Some(Owned(i.to_string())))
                .map_err(|_| ()),
            PgType::Boolean => match s.to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(Borrowed("true"))),
                "false" | "0" => Ok(Some(Borrowed("false"))),
                _ => Err(()),
            },
            PgType::Date => parse_date(s)
                .map(|d| Some(Owned(d.format("%Y-%m-%d").to_string())))
                .ok_or(()),
            PgType::TimestampTz => parse_datetime(s).map(|d| Some(Owned(fmt_ts(d)))).ok_or(()),
            PgType::Time => chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
                .or_else(|_| {
                    chrono::NaiveTime::parse_from_str(s.trim_end_matches('Z'), "%H:%M:%S%.f")
                })
                .map(|t| Some(Owned(t.format("%H:%M:%S%.f").to_string())))
                .map_err(|_| ()),
            PgType::Text | PgType::Jsonb => unreachable!("handled above"),
        }
    }
}

/// Postgres `numeric` input syntax, without NaN and infinities (a CRM sending
/// those means bad data, not a number).
fn is_numeric(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start || i - exp_start > 4 {
            return false;
        }
    }
    i == b.len()
}

fn epoch_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(ms)
}

/// Microseconds between 1970-01-01 and Postgres' epoch, 2000-01-01.
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A datetime as Postgres stores a `timestamptz`: microseconds since
/// 2000-01-01 UTC.
pub fn pg_timestamp(d: DateTime<Utc>) -> i64 {
    d.timestamp_micros() - PG_EPOCH_OFFSET_US
}

/// A CRM value for a `timestamptz` column, as [`pg_timestamp`] micros:
/// the same rules as [`PgType::coerce`] for `TimestampTz`, without text.
#[allow(clippy::result_unit_err)]
pub fn coerce_timestamp(v: &Value) -> Result<Option<i64>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .and_then(epoch_ms)
            .map(|d| Some(pg_timestamp(d)))
            .ok_or(()),
        Value::String(s) => timestamp_of_str(s),
        _ => Err(()),
    }
}

/// [`coerce_timestamp`] of a JSON string (decoded).
#[allow(clippy::result_unit_err)]
pub fn timestamp_of_str(s: &str) -> Result<Option<i64>, ()> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    parse_datetime(s.trim())
        .map(|d| Some(pg_timestamp(d)))
        .ok_or(())
}

/// The canonical text form we write and store as watermarks: UTC, milliseconds.
pub fn fmt_ts(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Datetimes as CRMs send them: RFC 3339 (`2024-03-01T12:00:00.000Z`),
/// Salesforce's offset without colon (`2024-03-01T12:00:00.000+0000`), or
/// epoch milliseconds (older HubSpot properties).
pub fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    if let Some(d) = parse_iso_fast(s) {
        return Some(d);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(d.with_timezone(&Utc));
    }
    if !s.is_empty() && s.len() <= 15 && s.bytes().all(|c| c.is_ascii_digit()) {
        return s.parse().ok().and_then(epoch_ms);
    }
    None
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM|±HHMM)` without chrono's format
/// machinery (a wide Salesforce record has several such values, and the
/// general parser was a visible share of a sync's CPU). Anything else is
/// left to the general parsers.
fn parse_iso_fast(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(start..i)? * 10u32.pow(9 - digits as u32);
    }
    let offset_secs: i64 = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (oh, om) = match rest {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    let d = |c: &u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
                    (d(h1)? * 10 + d(h2)?, d(m1)? * 10 + d(m2)?)
                }
                _ => return None,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if *sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let t = chrono::NaiveTime::from_hms_nano_opt(h, mi, sec, nanos)?;
    let local = date.and_time(t).and_utc();
    Some(local - chrono::Duration::seconds(offset_secs))
}

fn parse_date(s: &str) -> Option<NaiveDate> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d);
    }
    // HubSpot date properties may arrive as midnight UTC datetimes or epoch ms.
    parse_datetime(s).map(|d| d.date_naive())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fast_datetimes_agree_with_chrono() {
        for s in [
            "2024-03-01T12:00:00.000+0000",
            "2024-03-01T12:00:00Z",
            "2024-03-01T12:00:00.5Z",
            "2024-03-01T12:00:00.123456789Z",
            "2024-02-29T23:59:59.999-0530",
            "1999-12-31T00:00:00+01:00",
            "2024-03-01T12:00:00.000-00:00",
        ] {
            let slow = DateTime::parse_from_rfc3339(s)
                .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(parse_iso_fast(s), Some(slow), "{s}");
        }
        for s in [
            "2024-02-30T00:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T12:00:00",
            "2024-03-01T12:00:00.Z",
            "2024-03-01T12:00:00+2400",
            "2024-03-01 12:00:00Z",
            "2024-03-01T12:00:00.0000000000Z",
            "1709294400000",
        ] {
            assert_eq!(parse_iso_fast(s), None, "{s}");
        }
        assert_eq!(
            parse_datetime("1709294400000"),
            DateTime::from_timestamp_millis(1_709_294_400_000)
        );
    }

    #[test]
    fn timestamps_as_postgres_micros() {
        assert_eq!(
            coerce_timestamp(&json!("2000-01-01T00:00:00Z")),
            Ok(Some(0))
        );
        assert_eq!(
            coerce_timestamp(&json!("2000-01-01T00:00:01.5Z")),
            Ok(Some(1_500_000))
        );
        assert_eq!(coerce_timestamp(&json!(946684800001i64)), Ok(Some(1000)));
        assert_eq!(coerce_timestamp(&json!("")), Ok(None));
        assert_eq!(coerce_timestamp(&json!(null)), Ok(None));
        assert_eq!(coerce_timestamp(&json!("soon")), Err(()));
        assert_eq!(coerce_timestamp(&json!(true)), Err(()));
        // Same instant as the text path.
        let d = parse_datetime("2024-03-01T12:00:00.123Z").unwrap();
        assert_eq!(
            coerce_timestamp(&json!(fmt_ts(d))),
            Ok(Some(pg_timestamp(d)))
        );
    }

    #[test]
    fn numbers() {
        for ok in ["1", "-1.5", "+.5", "3.", "1e10", "12345678901234567890.123"] {
            assert_eq!(
                PgType::Numeric.coerce_string(&json!(ok)),
                Ok(Some(ok.to_string())),
                "{ok}"
            );
        }
        for bad in ["n/a", "1,5", ".", "1e", "NaN", "Infinity", "0x10", "1 2"] {
            assert_eq!(PgType::Numeric.coerce_string(&json!(bad)), Err(()), "{bad}");
        }
        assert_eq!(PgType::Numeric.coerce_string(&json!("")), Ok(None));
        assert_eq!(
            PgType::Numeric.coerce_string(&json!(2.5)),
            Ok(Some("2.5".into()))
        );
        assert_eq!(
            PgType::BigInt.coerce_string(&json!("42")),
            Ok(Some("42".into()))
        );
        assert_eq!(PgType::BigInt.coerce_string(&json!("4.2")), Err(()));
    }

    #[test]
    fn datetimes_in_every_crm_shape_become_utc_millis() {
        let want = Ok(Some("2024-03-01T12:00:00.000Z".to_string()));
        assert_eq!(
            PgType::TimestampTz.coerce_string(&json!("2024-03-01T12:00:00Z")),
            want
        );
        assert_eq!(
            PgType::TimestampTz.coerce_string(&json!("2024-03-01T13:00:00.000+01:00")),
            want
        );
        assert_eq!(
            PgType::TimestampTz.coerce_string(&json!("2024-03-01T12:00:00.000+0000")),
            want
        );
        assert_eq!(
            PgType::TimestampTz.coerce_string(&json!("1709294400000")),
            want
        );
        assert_eq!(
            PgType::TimestampTz.coerce_string(&json!("yesterday")),
            Err(())
        );
    }

    #[test]
    fn dates() {
        assert_eq!(
            PgType::Date.coerce_string(&json!("2020-02-29")),
            Ok(Some("2020-02-29".into()))
        );
        assert_eq!(
            PgType::Date.coerce_string(&json!("2020-02-29T00:00:00Z")),
            Ok(Some("2020-02-29".into()))
        );
        assert_eq!(PgType::Date.coerce_string(&json!("31/02/2020")), Err(()));
        assert_eq!(PgType::Date.coerce_string(&json!("2021-02-29")), Err(()));
    }

    #[test]
    fn booleans_text_and_json() {
        assert_eq!(
            PgType::Boolean.coerce_string(&json!("TRUE")),
            Ok(Some("true".into()))
        );
        assert_eq!(
            PgType::Boolean.coerce_string(&json!(false)),
            Ok(Some("false".into()))
        );
        assert_eq!(PgType::Boolean.coerce_string(&json!("maybe")), Err(()));
        assert_eq!(
            PgType::Text.coerce_string(&json!("  keep  ")),
            Ok(Some("  keep  ".into()))
        );
        assert_eq!(PgType::Text.coerce_string(&json!(null)), Ok(None));
        assert_eq!(
            PgType::Jsonb.coerce_string(&json!({"a": 1})),
            Ok(Some("{\"a\":1}".into()))
        );
        assert_eq!(
            PgType::Jsonb.coerce_string(&json!("x")),
            Ok(Some("\"x\"".into()))
        );
    }

    #[test]
    fn sql_names_round_trip() {
        for t in [
            PgType::Text,
            PgType::Numeric,
            PgType::BigInt,
            PgType::Boolean,
            PgType::Date,
            PgType::TimestampTz,
            PgType::Time,
            PgType::Jsonb,
        ] {
            assert_eq!(PgType::from_sql_name(t.sql_name()), t);
        }
        assert_eq!(
            PgType::from_sql_name("timestamp with time zone"),
            PgType::TimestampTz
        );
    }
}
