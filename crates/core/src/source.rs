//! The connector contract: what a CRM connector supplies and what the
//! engine may rely on. A newcomer adding a CRM starts here.
//!
//! Adding a CRM means one folder under `connectors/` that implements these
//! types (plus its mock under `tests/mock`) and one line in
//! [`crate::connectors::PROVIDERS`]; the engine, the SQL API and the landing
//! tables need no change. Connectors import this module, never the engine.
//!
//! # What a connector supplies
//! A [`Provider`] value describes the CRM to the rest of the system:
//! - **Options and credentials** it accepts ([`Provider::options`],
//!   [`Provider::credentials`]) and a check of their values
//!   ([`Provider::check`]), run when a source is created or altered. Secrets
//!   live only in credentials.
//! - **Default streams** ([`StreamDefaults`]): the objects a new source syncs,
//!   each with a default list of fields (or all of them).
//! - **Auth and a connection** ([`Provider::connect`]): turns a checked
//!   [`SourceConfig`] into a [`Connector`]. How the connector authenticates
//!   (a static token, an OAuth flow, a cached session refreshed on expiry) is
//!   its own business.
//!
//! A [`Connector`] then answers three questions:
//! - **Discovery**: which objects the account has ([`Connector::objects`]) and
//!   which fields an object has, each with its CRM type mapped to a landing
//!   column type ([`Connector::fields`]). Custom objects and fields included.
//! - **Reading**: a [`PageSource`] for one run of one stream
//!   ([`Connector::reader`]): pages of [`Record`]s, each with its id,
//!   modification time, deletion mark and raw JSON, then the watermark (the
//!   connector's cursor, opaque to everyone else) to store.
//! - **Error classification**: every failure is a [`crate::CrmError`] with a
//!   [`crate::ErrorKind`] (which becomes the SQLSTATE). Retries of 429, 5xx
//!   and transport errors are done by [`crate::http::HttpClient::send`]; a
//!   connector interprets the statuses and error bodies it knows (expired
//!   session, bad credentials, quota used up, a rejected query, an unreadable
//!   body) and may retry what its CRM documents as transient.
//!
//! # What must hold
//! - A reader never loses a record: every record changed after the previous
//!   run's watermark, including while this run pages, is returned by this run
//!   or is still after the watermark this run reports.
//! - A watermark never moves backward, and is only valid once every page
//!   returned before it was asked for has been written.
//! - A page may repeat records, and a run may return a record more than once;
//!   the engine keeps the newest version per id (by `updated_at`).
//! - Deleted/archived records are returned with `deleted_at` set, not skipped.
//! - A connector never touches Postgres and never logs secrets (nor puts them
//!   in an error); it does not sleep except inside the HTTP layer, so cancels
//!   are honoured promptly.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::SourceConfig;
use crate::error::Result;
use crate::http::HttpClient;
use crate::types::PgType;

/// A boxed future: keeps [`Connector`] and [`PageSource`] usable as trait
/// objects, so the engine holds no connector type.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Describes one CRM to the rest of the system; see the module docs.
pub struct Provider {
    /// The name users pass to `crm_sync.create_source(name, provider, ...)`.
    pub name: &'static str,
    /// Provider-specific option keys (common ones are in
    /// [`crate::config::COMMON_OPTIONS`]).
    pub options: &'static [&'static str],
    /// Credential keys. Only these may hold secrets.
    pub credentials: &'static [&'static str],
    /// Options naming a host the credentials are sent to, with their
    /// defaults: changing one needs new credentials in the same call, so a
    /// stored secret never reaches a new host.
    pub hosts: &'static [(&'static str, &'static str)],
    /// Streams registered for a new source.
    pub streams: &'static [StreamDefaults],
    /// Fields synced for other objects (streams added by the user) when the
    /// user has not chosen.
    pub other_objects: DefaultFields,
    /// Whether its connector can list ids ([`Connector::ids`]): incremental
    /// syncs reconcile only then.
    pub reconciles: bool,
    /// Why a stream of this object cannot be synced, known without asking
    /// the CRM (`crm_sync.add_stream` refuses it with 22023); None: it may.
    pub refuses: fn(&str) -> Option<String>,
    /// Check the values of options and credentials (keys are checked already).
    pub check: fn(&CheckArgs<'_>) -> Result<()>,
    /// Open a connection for one sync or discovery call.
    pub connect: for<'a> fn(&'a HttpClient, &'a SourceConfig) -> Result<Box<dyn Connector + 'a>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Provider {
    /// The default stream for `name`, if the provider has one.
    pub fn stream(&self, name: &str) -> Option<&'static StreamDefaults> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// The fields a stream of `object` syncs when the user has not chosen.
    pub fn default_fields(&self, object: &str) -> DefaultFields {
        self.streams
            .iter()
            .find(|d| d.object == object)
            .map_or(self.other_objects, |d| d.fields)
    }
}

/// What [`Provider::check`] sees.
pub struct CheckArgs<'a> {
    pub options: &'a Map<String, Value>,
    pub credentials: &'a Map<String, Value>,
    /// The `crm_sync.allow_insecure_http` setting.
    pub allow_insecure_http: bool,
}

/// A live connection to one CRM account; see the module docs.
pub trait Connector {
    /// The objects (types) the account has that can be synced.
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>>;
    /// The fields of `object`, custom ones included.
    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>>;
    /// A reader for one run of one stream.
    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>>;
    /// Reconciliation: the ids of every live record of `object` now, by the
    /// cheapest listing the API offers, in pages (see [`IdSource`]). Of
    /// `fields` (the stream's), those whose values change without the
    /// modification time moving (formulas) may be read along
    /// ([`IdSource::refreshed`]). Connectors that cannot list ids keep this
    /// default.
    fn ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
    ) -> BoxFuture<'a, Result<Box<dyn IdSource + 'a>>> {
        let _ = fields;
        Box::pin(async move {
            Err(crate::CrmError::unsupported(format!(
                "reconciliation of {object} is not supported by this connector yet"
            )))
        })
    }
    /// The live records `ids` of `object` with `fields`, as a reader returns
    /// them; ids the CRM no longer has are left out. Used by reconciliation
    /// for records it finds were never landed.
    fn read_ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Record>>> {
        let _ = (fields, ids);
        Box::pin(async move {
            Err(crate::CrmError::unsupported(format!(
                "reading {object} records by id is not supported by this connector yet"
            )))
        })
    }
}

/// Where a listing of ids stands (see [`Connector::ids`]). Ids may repeat
/// across pages; every id live when the listing began and still live when
/// it ends is returned.
pub trait IdSource {
    /// The next page of ids, or `None` when the listing is complete.
    fn next_ids(&mut self) -> BoxFuture<'_, Result<Option<Vec<String>>>>;
    /// The records of the last page with the values of the fields the
    /// listing re-reads (see [`Connector::ids`]), and those fields' names;
    /// empty when it re-reads none.
    fn refreshed(&mut self) -> (Vec<String>, Vec<Record>) {
        (Vec::new(), Vec::new())
    }
    /// Where a record's field values sit in its `_raw`: at the top (""),
    /// or under this key (HubSpot: "properties").
    fn raw_prefix(&self) -> &'static str {
        ""
    }
}

/// What the engine asks a connector to read.
#[derive(Debug, Clone)]
pub struct ReadRequest {
    /// The CRM's object name.
    pub object: String,
    /// The fields to read (a connector adds the ones it needs for its cursor).
    pub fields: Vec<Field>,
    pub mode: SyncMode,
    /// Incremental runs start this far before the watermark.
    pub lookback: Duration,
    /// Look for deleted records too.
    pub track_deletes: bool,
    /// Where an interrupted run of the same mode stopped: a position the
    /// reader returned from [`PageSource::checkpoint`]. Readers that cannot
    /// resume ignore it and start over, which is safe, only slower.
    pub resume: Option<String>,
    /// Deletes before this time have been found (a run read the delete log
    /// up to it, or a reconciliation began then): an incremental run looks
    /// from here (None: unknown).
    pub deletes_since: Option<DateTime<Utc>>,
}

/// Full or incremental, as the engine asks a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// Read everything; the reader establishes a fresh watermark.
    Full,
    /// Read what changed since the stored watermark.
    Incremental { watermark: String },
}

/// One CRM record as a reader returns it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The CRM's id, unique within a stream.
    pub id: String,
    /// The CRM's modification time, if it has one.
    pub updated_at: Option<DateTime<Utc>>,
    /// Set when the CRM reports the record deleted/archived.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Field values by field name, as JSON values from the API; empty when
    /// the reader left them in `raw` (`unparsed`): read them through
    /// [`Record::values`].
    pub fields: Map<String, Value>,
    /// The whole record exactly as received (JSON text).
    pub raw: String,
    /// Ids of records the CRM merged into this one (they left every list):
    /// their rows are marked deleted, reason `merged`, pointing here, in
    /// the transaction that writes this record.
    pub merged_ids: Vec<String>,
    /// Only the deletion is known (Salesforce's getDeleted lists ids and
    /// deletion times): a landed row is marked deleted at `deleted_at` and
    /// keeps its values, unless it was modified after that (undeleted);
    /// a record never landed stays absent. `fields` and `raw` are empty.
    pub deletion_only: bool,
    /// How many values a reader left unparsed in `raw` (0: `fields` holds
    /// every value). Such a record's `fields` is empty: [`Record::values`]
    /// parses `raw` where the values are used, on the writer's helper
    /// thread, and the reader parsed only what it needed ([`head`]).
    pub unparsed: usize,
}

impl Record {
    /// The record's values: `fields`, or those left in `raw`, parsed.
    pub fn values(&self) -> std::borrow::Cow<'_, Map<String, Value>> {
        if self.unparsed == 0 {
            std::borrow::Cow::Borrowed(&self.fields)
        } else {
            // `raw` was read as an object by `head`.
            std::borrow::Cow::Owned(serde_json::from_str(&self.raw).unwrap_or_default())
        }
    }

    /// Values the record holds, parsed or not (the engine's bound on a
    /// batch's memory).
    pub fn width(&self) -> usize {
        self.fields.len() + self.unparsed
    }
}

/// What a reader needs of a record in JSON, without keeping its values:
/// the string values of the top-level `keys` (None when absent or not a
/// string; the last of a repeated key, as a parse into a map keeps), and
/// how many keys the object has. Fails unless `raw` is an object that
/// parses into a map (every value is read as that parse reads it: numbers
/// in range, strings valid, nesting bounded), so that [`Record::values`]
/// cannot fail later; nothing is allocated but the strings returned.
pub fn head(raw: &str, keys: &[&str]) -> serde_json::Result<(Vec<Option<String>>, usize)> {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

    /// Any JSON value, read through and dropped.
    struct Skip;
    impl<'de> Visitor<'de> for Skip {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<(), A::Error> {
            while s.next_element_seed(Skip)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while m.next_key_seed(Skip)?.is_some() {
                m.next_value_seed(Skip)?;
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Skip {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    struct Head<'k>(&'k [&'k str]);
    /// A key, as its position in the keys looked for (no copy made).
    struct Key<'k>(&'k [&'k str]);
    impl<'de> Visitor<'de> for Key<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Self::Value, E> {
            Ok(self.0.iter().position(|x| *x == k))
        }
    }
    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = Option<usize>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for Head<'_> {
        type Value = (Vec<Option<String>>, usize);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = vec![None; self.0.len()];
            let mut n = 0;
            while let Some(k) = m.next_key_seed(Key(self.0))? {
                n += 1;
                match k {
                    Some(i) => {
                        out[i] = match m.next_value::<Value>()? {
                            Value::String(s) => Some(s),
                            _ => None,
                        }
                    }
                    None => m.next_value_seed(Skip)?,
                }
            }
            Ok((out, n))
        }
    }
    impl<'de> DeserializeSeed<'de> for Head<'_> {
        type Value = (Vec<Option<String>>, usize);
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    let out = Head(keys).deserialize(&mut de)?;
    de.end()?;
    Ok(out)
}

/// A page of records from one API call.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<Record>,
    /// Total matches, when the API reports one (for progress).
    pub total: Option<u64>,
}

/// Where a connector's stream reader stands; see the module docs for what
/// must hold.
pub trait PageSource {
    /// The next page, or `None` when the stream is exhausted for this run.
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>>;
    /// The watermark to store once every page returned so far is written.
    fn watermark(&self) -> Option<String>;
    /// Things the user should know about this run that did not stop it (a
    /// field the CRM no longer has, say); recorded with the run.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Fields the reader stopped reading during the run (the CRM deleted
    /// them); the sink stops writing their columns, which keep their values.
    fn dropped_fields(&self) -> Vec<String> {
        Vec::new()
    }
    /// Where this run stands after the pages returned so far, if the reader
    /// can resume from there (see [`ReadRequest::resume`]): an opaque
    /// string, asked for between pages only.
    fn checkpoint(&self) -> Option<String> {
        None
    }
    /// Why this run could not see every delete since the last one (the
    /// CRM's delete log no longer reaches back that far), so the stream
    /// must be reconciled now; None when it saw them all.
    fn reconcile_needed(&self) -> Option<String> {
        None
    }
    /// Deletes before this time have all been found by this run (the
    /// CRM's delete log read through); the next run looks from there
    /// ([`ReadRequest::deletes_since`]). None: leave it where it was.
    fn deletes_covered(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// A stream registered by default for a new source.
#[derive(Debug, Clone)]
pub struct StreamDefaults {
    /// Stream name, also the landing table's name.
    pub name: &'static str,
    /// The CRM's object (type) name.
    pub object: &'static str,
    /// Fields synced unless the user chooses others.
    pub fields: DefaultFields,
}

/// Which fields a stream syncs when the user has not chosen.
#[derive(Debug, Clone, Copy)]
pub enum DefaultFields {
    /// Every field the object has.
    All,
    /// These fields (those the object lacks are skipped).
    Only(&'static [&'static str]),
    /// Every field but those of these CRM types.
    AllExcept(&'static [&'static str]),
}

impl DefaultFields {
    /// Whether `f` is synced by default.
    pub fn picks(&self, f: &Field) -> bool {
        match self {
            DefaultFields::All => true,
            DefaultFields::Only(names) => names.contains(&f.name.as_str()),
            DefaultFields::AllExcept(types) => !types.contains(&f.crm_type.as_str()),
        }
    }
}

/// An object (type) in the CRM, as discovered.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectInfo {
    pub name: String,
    pub label: String,
    /// True for objects the user (not the vendor) defined.
    pub custom: bool,
    /// Why the object cannot be synced, if it cannot (not queryable, or
    /// only queryable with a filter on one parent).
    pub unsyncable: Option<String>,
}

/// A field of a CRM object, as discovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub label: String,
    /// The CRM's own type name.
    pub crm_type: String,
    /// The landing column type it maps to.
    pub pg_type: PgType,
    /// True for fields the user (not the vendor) defined.
    pub custom: bool,
    /// The landing column's name the connector prefers to the field's
    /// name, for fields whose name is an opaque key (a `rest` spec's custom
    /// fields named by hash): given when the field first lands, then kept
    /// (crm_sync.landing_columns) however the field is renamed.
    pub column: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn head_finds_its_keys_without_parsing_the_rest() {
        let raw = r#"{"attributes": {"type": "Account", "Id": "nested"}, "Name": "A \"B\"",
                      "I\u0064": "001A", "SystemModstamp": "2024-01-01T00:00:00.000+0000",
                      "Amount": 12.5, "Tags": [1, {"Id": "x"}]}"#;
        let (vals, n) = head(raw, &["Id", "SystemModstamp", "Amount", "Missing"]).unwrap();
        assert_eq!(
            vals,
            vec![
                Some("001A".into()),
                Some("2024-01-01T00:00:00.000+0000".into()),
                None,
                None
            ]
        );
        assert_eq!(n, 6);
        // A repeated key: the last, as a parse into a map keeps.
        let (vals, n) = head(r#"{"Id": "a", "Id": "b"}"#, &["Id"]).unwrap();
        assert_eq!((vals, n), (vec![Some("b".into())], 2));
        // What a parse into a map refuses, head refuses: a record it let
        // through would have no values to land.
        let deep = format!(
            r#"{{"Id": "a", "X": {}1{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        for bad in [
            r#"["Id"]"#,
            r#""Id""#,
            r#"{"Id": "a""#,
            r#"{"Id": "a"} x"#,
            "null",
            r#"{"Id": "a", "X": 1e400}"#,
            r#"{"Id": "a", "X": "\ud800"}"#,
            r#"{"Id": "a", "X": [1, }"#,
            r#"{"Id": "a", "\ud800": 1}"#,
            &deep,
        ] {
            assert!(
                serde_json::from_str::<Map<String, Value>>(bad).is_err(),
                "{bad}"
            );
            assert!(head(bad, &["Id"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_with_its_values_in_raw_gives_them_parsed() {
        let raw = r#"{"Id": "001A", "Name": "Acme", "N": 3}"#;
        let r = Record {
            id: "001A".into(),
            updated_at: None,
            deleted_at: None,
            fields: Map::new(),
            raw: raw.into(),
            merged_ids: Vec::new(),
            deletion_only: false,
            unparsed: head(raw, &["Id"]).unwrap().1,
        };
        assert_eq!(r.width(), 3);
        assert_eq!(r.values()["Name"], json!("Acme"));
        assert_eq!(r.values()["N"], json!(3));
    }
}
