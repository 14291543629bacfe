//! A `rest` source's spec: the JSON document that describes an HTTP API's
//! streams (request, auth, records, paging, incremental reads, deletes,
//! fields, rate limits), parsed into types once and checked as a whole.
//!
//! Every mistake is reported at once, sorted, each as `path: what`, the
//! path written as in the document (`streams[2].paging.cursor_path:
//! missing`): unknown keys are mistakes too, so a typo never falls back to
//! a default. The vocabulary follows dlt's `rest_api` names (`paging.type`,
//! `cursor_path`, `cursor_param`) with Airbyte's coverage (OAuth refresh
//! with rotation, waits from headers, fields discovered from an endpoint);
//! there is no template language. docs/specs.md documents every key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};
use url::Url;

use crate::error::{CrmError, Result};
use crate::types::PgType;

/// Spec versions this build reads.
pub const SPEC_VERSION: u64 = 1;

/// Longest lookback a spec may ask for.
const MAX_LOOKBACK: Duration = Duration::from_secs(7 * 86_400);

/// Largest page size a spec may ask for.
const MAX_PAGE_SIZE: u64 = 10_000;

/// A checked spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub base_url: Url,
    /// Ways to authenticate, tried in order: the first whose credentials
    /// the source has is used.
    pub auth: Vec<Auth>,
    /// Headers sent with every request (no secrets: those are credentials).
    pub headers: Vec<(String, String)>,
    /// Where an error body carries the API's message.
    pub error_message_path: Option<Path>,
    pub rate_limit: RateLimit,
    pub streams: Vec<Stream>,
}

/// One way to authenticate. Fields ending in `_key` name credentials.
#[derive(Debug, Clone)]
pub enum Auth {
    Bearer {
        token_key: String,
    },
    ApiKey {
        inject: Inject,
        name: String,
        value_key: String,
    },
    Basic {
        username_key: String,
        password_key: String,
    },
    OAuth2(OAuth2),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inject {
    Header,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    RefreshToken,
    ClientCredentials,
}

#[derive(Debug, Clone)]
pub struct OAuth2 {
    pub grant: Grant,
    pub token_url: Url,
    pub scopes: Vec<String>,
    /// Client id and secret in an HTTP basic header (else in the form).
    pub client_basic: bool,
    pub client_id_key: String,
    pub client_secret_key: String,
    pub refresh_token_key: String,
    /// A token response's field whose value replaces the base URL's
    /// origin (Pipedrive's `api_domain`, Salesforce's `instance_url`).
    pub base_url_from: Option<String>,
}

impl Auth {
    /// The credential keys this way needs.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Auth::Bearer { token_key } => vec![token_key],
            Auth::ApiKey { value_key, .. } => vec![value_key],
            Auth::Basic {
                username_key,
                password_key,
            } => vec![username_key, password_key],
            Auth::OAuth2(o) => match o.grant {
                Grant::RefreshToken => {
                    vec![&o.client_id_key, &o.client_secret_key, &o.refresh_token_key]
                }
                Grant::ClientCredentials => vec![&o.client_id_key, &o.client_secret_key],
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Auth::Bearer { .. } => "bearer",
            Auth::ApiKey { .. } => "api_key",
            Auth::Basic { .. } => "basic",
            Auth::OAuth2(_) => "oauth2",
        }
    }
}

/// How the API says to slow down.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Header with the calls left in the current window.
    pub remaining_header: Option<String>,
    /// Header saying when the window resets.
    pub reset_header: Option<String>,
    pub reset_unit: ResetUnit,
    /// Statuses that mean "wait, then retry" (429 unless told).
    pub wait_statuses: Vec<u16>,
    /// A wait status while the window still has calls left means a longer
    /// quota (a daily budget) is spent: the run stops instead of waiting.
    pub quota_when_remaining: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetUnit {
    /// Seconds from now.
    Seconds,
    /// A Unix time in seconds.
    EpochSeconds,
    /// A Unix time in milliseconds.
    EpochMs,
}

/// A dotted path into a JSON document: `$` is the whole body, `$.a.b` (or
/// `a.b`) the member `b` of member `a`; digits index arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl Path {
    pub fn parse(s: &str) -> std::result::Result<Path, String> {
        let t = s.strip_prefix('$').unwrap_or(s);
        let t = t.strip_prefix('.').unwrap_or(t);
        if t.is_empty() {
            return Ok(Path(Vec::new()));
        }
        let parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || p.contains(['[', ']', '*', ' ']))
        {
            return Err(format!(
                "invalid path {s:?} (expected $ or dotted member names such as $.data or additional_data.next_cursor)"
            ));
        }
        Ok(Path(parts))
    }

    /// The value at this path in `v`, if any.
    pub fn get<'v>(&self, v: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(v, |v, k| match v {
            Value::Object(m) => m.get(k),
            Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
    }

    /// Set the value at this path in `v`, creating objects on the way.
    pub fn set(&self, v: &mut Value, new: Value) {
        let Some((last, init)) = self.0.split_last() else {
            *v = new;
            return;
        };
        let mut cur = v;
        for k in init {
            if !cur.is_object() {
                *cur = Value::Object(Map::new());
            }
            cur = cur
                .as_object_mut()
                .expect("made an object")
                .entry(k.clone())
                .or_insert(Value::Object(Map::new()));
        }
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur.as_object_mut()
            .expect("made an object")
            .insert(last.clone(), new);
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("$")?;
        for p in &self.0 {
            write!(f, ".{p}")?;
        }
        Ok(())
    }
}

/// How a time is written, in records or in requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// `2025-01-01T10:20:00Z` (fractions and offsets accepted when read).
    Rfc3339,
    EpochSeconds,
    EpochMs,
    /// `Wed, 21 Oct 2015 07:28:00 GMT` (If-Modified-Since).
    HttpDate,
    /// A strftime pattern, in UTC (`%Y-%m-%d %H:%M:%S`).
    Pattern(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One request: the stream's, or a listing beside it (fields, deletes).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    /// Appended to the base URL, or an absolute URL on the base URL's
    /// origin.
    pub path: String,
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    /// A JSON body (POST).
    pub body: Option<Value>,
    pub page_size: Option<u64>,
    pub page_size_param: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Paging {
    /// One request.
    None,
    /// A cursor in the body goes into a query parameter; stops when absent,
    /// null or empty.
    Cursor {
        cursor_path: Path,
        cursor_param: String,
    },
    /// The body holds the next page's URL; stops when absent or null.
    NextUrl { next_url_path: Path },
    /// RFC 8288 `Link: <url>; rel="next"`; stops when there is none.
    LinkHeader { rel: String },
    /// `offset_param` counts records; stops on an empty page, at
    /// `total_path`, or when `has_more_path` is false (a short page is no
    /// end: APIs cap page sizes silently).
    Offset {
        offset_param: String,
        total_path: Option<Path>,
        has_more_path: Option<Path>,
    },
    /// `page_param` counts pages from `start_page`; stops like `Offset`
    /// (`total_pages_path`).
    PageNumber {
        page_param: String,
        start_page: u64,
        total_pages_path: Option<Path>,
        has_more_path: Option<Path>,
    },
}

impl Paging {
    pub fn kind(&self) -> &'static str {
        match self {
            Paging::None => "none",
            Paging::Cursor { .. } => "cursor",
            Paging::NextUrl { .. } => "next_url",
            Paging::LinkHeader { .. } => "link_header",
            Paging::Offset { .. } => "offset",
            Paging::PageNumber { .. } => "page_number",
        }
    }
}

/// How the watermark goes into a request.
#[derive(Debug, Clone)]
pub enum Incremental {
    /// Every run reads everything.
    None,
    /// The start (and, if the API takes one, the end: the run's start) of
    /// the window, as query parameters or members of the JSON body.
    Window {
        inject: WindowInject,
        since: String,
        until: Option<String>,
        format: TimeFormat,
        lookback: Duration,
    },
    /// `If-Modified-Since` (or another header), in HTTP date form; a 304
    /// means nothing changed.
    Header { header: String, lookback: Duration },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowInject {
    Query,
    Body,
}

impl Incremental {
    pub fn lookback(&self) -> Option<Duration> {
        match self {
            Incremental::None => None,
            Incremental::Window { lookback, .. } | Incremental::Header { lookback, .. } => {
                Some(*lookback)
            }
        }
    }
}

/// How the API shows deleted records.
#[derive(Debug, Clone, Default)]
pub struct Deletes {
    /// A member that holds `value` when the record is deleted.
    pub flag: Option<(Path, Value)>,
    /// A member with the deletion time (null when live).
    pub deleted_at: Option<(Path, TimeFormat)>,
    /// A listing of deleted records (paged and windowed as the stream).
    pub endpoint: Option<DeletesEndpoint>,
}

/// The stream's request with this path and these parameters instead.
#[derive(Debug, Clone, Default)]
pub struct DeletesEndpoint {
    pub path: Option<String>,
    pub params: Vec<(String, String)>,
}

/// Where the records' fields come from.
#[derive(Debug, Clone)]
pub struct Fields {
    /// Columns declared in the spec: (member, type).
    pub declared: Vec<(String, PgType)>,
    pub discovery: Option<Discovery>,
}

/// A field listing endpoint and how to read it.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub request: Request,
    pub paging: Paging,
    pub records_path: Path,
    /// Member of a field holding its key (the record member).
    pub key: Path,
    /// Member holding its display name.
    pub name: Path,
    /// Member holding its type.
    pub type_: Path,
    /// Member that is true for a custom field.
    pub custom: Option<Path>,
    /// Where custom fields' values sit in a record (else at the top).
    pub custom_values_path: Option<Path>,
    /// Custom fields' columns are named after their display names (the
    /// key, often an opaque hash, is recorded in crm_sync.landing_columns).
    pub custom_columns_from_name: bool,
    /// The API's type → landing column type; `*` for the rest (text).
    pub types: BTreeMap<String, PgType>,
}

/// Reading records by id (reconciliation's records it never landed).
#[derive(Debug, Clone)]
pub struct ReadIds {
    pub param: String,
    pub max: usize,
    pub separator: String,
}

#[derive(Debug, Clone)]
pub struct Stream {
    pub name: String,
    pub label: String,
    pub request: Request,
    pub records_path: Path,
    pub primary_key: Path,
    pub modified: Option<(Path, TimeFormat)>,
    pub paging: Paging,
    pub incremental: Incremental,
    pub deletes: Deletes,
    pub fields: Fields,
    pub read_ids: Option<ReadIds>,
}

impl Spec {
    /// Parse and check `v`; `Err` lists every mistake, sorted, one per line.
    pub fn parse(v: &Value) -> std::result::Result<Spec, Vec<String>> {
        let mut errs = Errors::default();
        let spec = parse_spec(v, &mut errs);
        let mut list = errs.0;
        if list.is_empty() {
            if let Some(s) = spec {
                return Ok(s);
            }
            list.push("$: not a spec".into());
        }
        list.sort();
        list.dedup();
        Err(list)
    }

    /// Parse, as an error naming `what` (`spec "pipedrive"`) and the first
    /// mistake, the others in its detail (22023).
    pub fn load(what: &str, v: &Value) -> Result<Spec> {
        Spec::parse(v).map_err(|errs| spec_error(what, &errs))
    }

    pub fn stream(&self, name: &str) -> Option<&Stream> {
        self.streams.iter().find(|s| s.name == name)
    }

    /// Every credential key any of its ways to authenticate names.
    pub fn credential_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .auth
            .iter()
            .flat_map(|a| a.keys().into_iter().map(str::to_owned))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The origins the spec sends requests (and so credentials) to.
    pub fn origins(&self) -> Vec<String> {
        let mut o: Vec<String> = std::iter::once(&self.base_url)
            .chain(self.auth.iter().filter_map(|a| match a {
                Auth::OAuth2(o) => Some(&o.token_url),
                _ => None,
            }))
            .map(|u| u.origin().ascii_serialization())
            .collect();
        o.sort();
        o.dedup();
        o
    }
}

/// The error for a spec's mistakes.
pub fn spec_error(what: &str, errs: &[String]) -> CrmError {
    let first = errs.first().cloned().unwrap_or_default();
    let mut e = CrmError::config(format!("{what} is not valid: {first}"));
    if errs.len() > 1 {
        e = e.with_detail(format!(
            "{} mistakes in all:\n{}",
            errs.len(),
            errs.join("\n")
        ));
    }
    e.with_hint("Fix the spec at that path; docs/specs.md describes every key.")
}

#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn at(&mut self, path: &str, what: impl std::fmt::Display) {
        let path = if path.is_empty() { "$" } else { path };
        self.0.push(format!("{path}: {what}"));
    }
}

/// A member's path: `a.b`, `a[2]`, or `a["x-y"]` for keys that are not
/// identifiers.
fn join(path: &str, key: &str) -> String {
    let ident = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    match (path.is_empty(), ident) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{key:?}]"),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An object being read: the keys taken are noted, the rest are unknown.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    taken: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    fn of(v: &'a Value, path: &str, errs: &mut Errors) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => Some(Obj {
                map,
                path: path.to_owned(),
                taken: Vec::new(),
            }),
            other => {
                errs.at(
                    path,
                    format!("wrong type (expected object, got {})", type_name(other)),
                );
                None
            }
        }
    }

    fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.taken.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str, errs: &mut Errors) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::String(_) => {
                errs.at(&self.at(key), "must not be empty");
                None
            }
            other => {
                errs.at(
                    &self.at(key),
                    format!("wrong type (expected string, got {})", type_name(other)),
                );
                None
            }
        }
    }

    fn required(&mut self, key: &'static str, errs: &mut Errors) -> Option<String> {
        if !self.has(key) {
            self.taken.push(key);
            errs.at(&self.at(key), "missing");
            return None;
        }
        self.string(key, errs)
    }

    fn uint(&mut self, key: &'static str, min: u64, max: u64, errs: &mut Errors) -> Option<u64> {
        let v = self.get(key)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                errs.at(
                    &self.at(key),
                    format!("must be an integer from {min} to {max}, not {v}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str, errs: &mut Errors) -> Option<bool> {
        let v = self.get(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                errs.at(
                    &self.at(key),
                    format!("wrong type (expected boolean, got {})", type_name(other)),
                );
                None
            }
        }
    }

    fn path(&mut self, key: &'static str, errs: &mut Errors) -> Option<Path> {
        let s = self.string(key, errs)?;
        Path::parse(&s).map_err(|e| errs.at(&self.at(key), e)).ok()
    }

    fn required_path(&mut self, key: &'static str, errs: &mut Errors) -> Option<Path> {
        let s = self.required(key, errs)?;
        Path::parse(&s).map_err(|e| errs.at(&self.at(key), e)).ok()
    }

    /// One of `allowed`, or `default` when absent.
    fn choice(
        &mut self,
        key: &'static str,
        allowed: &[&'static str],
        default: Option<&'static str>,
        errs: &mut Errors,
    ) -> Option<&'static str> {
        let Some(s) = self.string(key, errs) else {
            if default.is_none() && !self.has(key) {
                errs.at(&self.at(key), "missing");
            }
            return default;
        };
        match allowed.iter().find(|a| **a == s) {
            Some(a) => Some(a),
            None => {
                errs.at(
                    &self.at(key),
                    format!(
                        "unknown value {s:?} (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// A flat object of strings (query parameters, headers); numbers and
    /// booleans are written as text.
    fn strings(&mut self, key: &'static str, errs: &mut Errors) -> Vec<(String, String)> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let path = self.at(key);
        let Some(m) = Obj::of(v, &path, errs) else {
            return Vec::new();
        };
        m.map
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some((k.clone(), s.clone())),
                Value::Number(n) => Some((k.clone(), n.to_string())),
                Value::Bool(b) => Some((k.clone(), b.to_string())),
                other => {
                    errs.at(
                        &join(&path, k),
                        format!("wrong type (expected string, got {})", type_name(other)),
                    );
                    None
                }
            })
            .collect()
    }

    fn duration(&mut self, key: &'static str, errs: &mut Errors) -> Option<Duration> {
        let s = self.string(key, errs)?;
        let d = iso_duration(&s);
        if d.is_none() {
            errs.at(
                &self.at(key),
                format!("invalid duration {s:?} (expected ISO 8601, e.g. PT5M)"),
            );
        }
        d
    }

    fn url(&mut self, key: &'static str, required: bool, errs: &mut Errors) -> Option<Url> {
        let s = if required {
            self.required(key, errs)?
        } else {
            self.string(key, errs)?
        };
        match Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    errs.at(
                        &self.at(key),
                        "must not hold a user name or password (credentials go in credentials)",
                    );
                    return None;
                }
                Some(u)
            }
            _ => {
                errs.at(
                    &self.at(key),
                    format!("invalid URL {s:?} (expected an absolute http or https URL)"),
                );
                None
            }
        }
    }

    /// Report every key not taken.
    fn finish(self, errs: &mut Errors) {
        for k in self.map.keys() {
            if !self.taken.contains(&k.as_str()) {
                errs.at(&self.at(k), "unknown field");
            }
        }
    }
}

/// `PT5M`, `PT1H30M`, `P1D`, `PT0S`: days, hours, minutes, seconds.
pub fn iso_duration(s: &str) -> Option<Duration> {
    let rest = s.strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return None,
        None => (rest, None),
    };
    let mut secs = 0u64;
    let mut num = |part: &str, units: &[(char, u64)]| -> std::result::Result<(), ()> {
        let mut n = String::new();
        let mut idx = 0;
        for c in part.chars() {
            if c.is_ascii_digit() {
                n.push(c);
                continue;
            }
            let pos = units[idx..].iter().position(|(u, _)| *u == c).ok_or(())?;
            let (_, mult) = units[idx + pos];
            idx += pos + 1;
            let v: u64 = n.parse().map_err(|_| ())?;
            secs = secs.checked_add(v.checked_mul(mult).ok_or(())?).ok_or(())?;
            n.clear();
        }
        if n.is_empty() {
            Ok(())
        } else {
            Err(())
        }
    };
    num(date, &[('W', 604_800), ('D', 86_400)]).ok()?;
    if let Some(t) = time {
        num(t, &[('H', 3_600), ('M', 60), ('S', 1)]).ok()?;
    }
    Some(Duration::from_secs(secs))
}

fn time_format(s: &str) -> std::result::Result<TimeFormat, String> {
    Ok(match s {
        "rfc3339" => TimeFormat::Rfc3339,
        "epoch_seconds" => TimeFormat::EpochSeconds,
        "epoch_ms" => TimeFormat::EpochMs,
        "http_date" => TimeFormat::HttpDate,
        p if p.contains('%') => {
            // chrono reports a bad pattern only when used: try it now.
            let probe = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
            let mut out = String::new();
            use std::fmt::Write;
            write!(out, "{}", probe.format_with_items(chrono::format::StrftimeItems::new(p)))
                .map_err(|_| format!("invalid time pattern {p:?}"))?;
            TimeFormat::Pattern(p.to_owned())
        }
        other => {
            return Err(format!(
                "unknown value {other:?} (expected one of: rfc3339, epoch_seconds, epoch_ms, http_date, or a strftime pattern such as \"%Y-%m-%d %H:%M:%S\")"
            ))
        }
    })
}

fn format_at(
    o: &mut Obj<'_>,
    key: &'static str,
    default: Option<TimeFormat>,
    errs: &mut Errors,
) -> Option<TimeFormat> {
    match o.string(key, errs) {
        None => default,
        Some(s) => time_format(&s).map_err(|e| errs.at(&o.at(key), e)).ok(),
    }
}

fn pg_type(s: &str) -> Option<PgType> {
    Some(match s {
        "text" => PgType::Text,
        "numeric" => PgType::Numeric,
        "bigint" => PgType::BigInt,
        "boolean" => PgType::Boolean,
        "date" => PgType::Date,
        "timestamptz" => PgType::TimestampTz,
        "time" => PgType::Time,
        "jsonb" => PgType::Jsonb,
        _ => return None,
    })
}

const PG_TYPES: &str = "text, numeric, bigint, boolean, date, timestamptz, time, jsonb";

fn parse_spec(v: &Value, errs: &mut Errors) -> Option<Spec> {
    let mut o = Obj::of(v, "", errs)?;
    if let Some(n) = o.get("spec_version") {
        if n.as_u64() != Some(SPEC_VERSION) {
            errs.at(
                "spec_version",
                format!("unsupported version {n} (this build reads {SPEC_VERSION})"),
            );
        }
    }
    o.string("name", errs);
    o.string("description", errs);
    o.string("docs", errs);
    let base_url = o.url("base_url", true, errs);
    let auth = match o.get("auth") {
        None => {
            errs.at("auth", "missing");
            Vec::new()
        }
        Some(Value::Array(a)) if a.is_empty() => {
            errs.at("auth", "must not be empty");
            Vec::new()
        }
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_auth(v, &format!("auth[{i}]"), errs))
            .collect(),
        Some(v) => parse_auth(v, "auth", errs).into_iter().collect(),
    };
    let headers = o.strings("headers", errs);
    check_headers(&headers, "headers", errs);
    let error_message_path = o.path("error_message_path", errs);
    let rate_limit = match o.get("rate_limit") {
        None => RateLimit {
            remaining_header: None,
            reset_header: None,
            reset_unit: ResetUnit::Seconds,
            wait_statuses: vec![429],
            quota_when_remaining: false,
        },
        Some(v) => parse_rate_limit(v, errs).unwrap_or(RateLimit {
            remaining_header: None,
            reset_header: None,
            reset_unit: ResetUnit::Seconds,
            wait_statuses: vec![429],
            quota_when_remaining: false,
        }),
    };
    let defaults = match o.get("stream_defaults") {
        None => None,
        Some(v) => Obj::of(v, "stream_defaults", errs).map(|d| d.map.clone()),
    };
    let streams = match o.get("streams") {
        None => {
            errs.at("streams", "missing");
            Vec::new()
        }
        Some(Value::Array(a)) if a.is_empty() => {
            errs.at("streams", "must list at least one stream");
            Vec::new()
        }
        Some(Value::Array(a)) => {
            let mut out: Vec<Stream> = Vec::new();
            for (i, v) in a.iter().enumerate() {
                let path = format!("streams[{i}]");
                // A stream's own keys replace the defaults' (whole keys).
                let merged = match (v, &defaults) {
                    (Value::Object(m), Some(d)) => {
                        let mut all = d.clone();
                        all.extend(m.clone());
                        Value::Object(all)
                    }
                    _ => v.clone(),
                };
                if let Some(s) = parse_stream(&merged, &path, errs) {
                    if out.iter().any(|o| o.name == s.name) {
                        errs.at(
                            &join(&path, "name"),
                            format!("duplicate stream {:?}", s.name),
                        );
                    }
                    out.push(s);
                }
            }
            out
        }
        Some(other) => {
            errs.at(
                "streams",
                format!("wrong type (expected array, got {})", type_name(other)),
            );
            Vec::new()
        }
    };
    o.finish(errs);
    Some(Spec {
        base_url: base_url?,
        auth,
        headers,
        error_message_path,
        rate_limit,
        streams,
    })
}

/// Headers a spec may not set: the HTTP layer's and auth's own.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "authorization",
    "proxy-authorization",
    "cookie",
    "transfer-encoding",
    "connection",
];

fn check_headers(h: &[(String, String)], path: &str, errs: &mut Errors) {
    for (k, v) in h {
        let at = join(path, k);
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
            errs.at(&at, "invalid header name");
        } else if RESERVED_HEADERS.contains(&k.to_ascii_lowercase().as_str()) {
            errs.at(&at, "reserved header (auth and the HTTP layer set it)");
        } else if reqwest::header::HeaderValue::from_str(v).is_err() {
            errs.at(&at, "invalid header value");
        } else {
            check_not_secret(k, v, &at, errs);
        }
    }
}

/// Names under which a static value would be a secret.
const SECRET_NAMES: &[&str] = &[
    "secret", "password", "passwd", "token", "apikey", "api_key", "api-key",
];

/// A spec is readable by every role with the read level and dumped with
/// the database: a static header or parameter that looks like a secret is
/// refused, the secret belongs in the source's credentials.
fn check_not_secret(name: &str, value: &str, at: &str, errs: &mut Errors) {
    let n = name.to_ascii_lowercase();
    if !value.is_empty() && SECRET_NAMES.iter().any(|s| n.contains(s)) {
        errs.at(
            at,
            "looks like a secret (specs are readable and dumped): put it in the source's credentials and name it in auth",
        );
    }
}

fn parse_auth(v: &Value, path: &str, errs: &mut Errors) -> Option<Auth> {
    let mut o = Obj::of(v, path, errs)?;
    let kind = o.choice(
        "type",
        &["bearer", "api_key", "basic", "oauth2"],
        None,
        errs,
    );
    let key = |o: &mut Obj<'_>, k: &'static str, default: &str, errs: &mut Errors| {
        let s = o.string(k, errs).unwrap_or_else(|| default.to_owned());
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            errs.at(&o.at(k), "must name a credential (letters, digits, _)");
        }
        s
    };
    let auth = match kind? {
        "bearer" => Auth::Bearer {
            token_key: key(&mut o, "credential", "access_token", errs),
        },
        "api_key" => {
            let inject = match o.choice("in", &["header", "query"], None, errs)? {
                "header" => Inject::Header,
                _ => Inject::Query,
            };
            let name = o.required("name", errs)?;
            if inject == Inject::Header {
                check_headers(&[(name.clone(), String::new())], path, errs);
            }
            Auth::ApiKey {
                inject,
                name,
                value_key: key(&mut o, "credential", "api_key", errs),
            }
        }
        "basic" => Auth::Basic {
            username_key: key(&mut o, "username_credential", "username", errs),
            password_key: key(&mut o, "password_credential", "password", errs),
        },
        _ => {
            let grant = match o.choice(
                "grant",
                &["refresh_token", "client_credentials"],
                Some("refresh_token"),
                errs,
            )? {
                "refresh_token" => Grant::RefreshToken,
                _ => Grant::ClientCredentials,
            };
            let token_url = o.url("token_url", true, errs);
            let scopes = match o.get("scopes") {
                None => Vec::new(),
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect(),
                Some(_) => {
                    errs.at(&o.at("scopes"), "wrong type (expected array of strings)");
                    Vec::new()
                }
            };
            let client_basic =
                o.choice("client_auth", &["body", "basic"], Some("body"), errs) == Some("basic");
            let base_url_from = o.string("base_url_from", errs);
            Auth::OAuth2(OAuth2 {
                grant,
                token_url: token_url?,
                scopes,
                client_basic,
                client_id_key: key(&mut o, "client_id_credential", "client_id", errs),
                client_secret_key: key(&mut o, "client_secret_credential", "client_secret", errs),
                refresh_token_key: key(&mut o, "refresh_token_credential", "refresh_token", errs),
                base_url_from,
            })
        }
    };
    o.finish(errs);
    Some(auth)
}

fn parse_rate_limit(v: &Value, errs: &mut Errors) -> Option<RateLimit> {
    let mut o = Obj::of(v, "rate_limit", errs)?;
    let remaining_header = o
        .string("remaining_header", errs)
        .map(|s| s.to_ascii_lowercase());
    let reset_header = o
        .string("reset_header", errs)
        .map(|s| s.to_ascii_lowercase());
    let reset_unit = match o.choice(
        "reset_unit",
        &["seconds", "epoch_seconds", "epoch_ms"],
        Some("seconds"),
        errs,
    ) {
        Some("epoch_seconds") => ResetUnit::EpochSeconds,
        Some("epoch_ms") => ResetUnit::EpochMs,
        _ => ResetUnit::Seconds,
    };
    let wait_statuses = match o.get("wait_statuses") {
        None => vec![429],
        Some(Value::Array(a)) => {
            let s: Vec<u16> = a
                .iter()
                .filter_map(|v| {
                    v.as_u64()
                        .filter(|n| (400..600).contains(n))
                        .map(|n| n as u16)
                })
                .collect();
            if s.len() != a.len() || s.is_empty() {
                errs.at(
                    &o.at("wait_statuses"),
                    "must list HTTP statuses from 400 to 599",
                );
            }
            s
        }
        Some(_) => {
            errs.at(
                &o.at("wait_statuses"),
                "wrong type (expected array of integers)",
            );
            vec![429]
        }
    };
    let quota_when_remaining = o.boolean("quota_when_remaining", errs).unwrap_or(false);
    if quota_when_remaining && remaining_header.is_none() {
        errs.at(
            &o.at("remaining_header"),
            "missing (quota_when_remaining reads it)",
        );
    }
    o.finish(errs);
    Some(RateLimit {
        remaining_header,
        reset_header,
        reset_unit,
        wait_statuses,
        quota_when_remaining,
    })
}

fn parse_request(v: &Value, path: &str, need_path: bool, errs: &mut Errors) -> Option<Request> {
    let mut o = Obj::of(v, path, errs)?;
    let method = match o.choice("method", &["GET", "POST"], Some("GET"), errs) {
        Some("POST") => Method::Post,
        _ => Method::Get,
    };
    let p = if need_path {
        o.required("path", errs)
    } else {
        o.string("path", errs)
    };
    if let Some(p) = &p {
        if !p.starts_with('/') {
            errs.at(&o.at("path"), format!("must start with / (got {p:?})"));
        }
    }
    let params = o.strings("params", errs);
    for (k, v) in &params {
        check_not_secret(k, v, &join(&o.at("params"), k), errs);
    }
    let headers = o.strings("headers", errs);
    check_headers(&headers, &o.at("headers"), errs);
    let body = o.get("body").cloned();
    if body.is_some() && method == Method::Get {
        errs.at(
            &o.at("body"),
            "a GET request has no body (set method to POST)",
        );
    }
    let page_size = o.uint("page_size", 1, MAX_PAGE_SIZE, errs);
    let page_size_param = o.string("page_size_param", errs);
    if o.has("page_size") != o.has("page_size_param") {
        let (k, other) = if !o.has("page_size") {
            ("page_size", "page_size_param")
        } else {
            ("page_size_param", "page_size")
        };
        errs.at(&o.at(k), format!("missing (given with {other})"));
    }
    o.finish(errs);
    Some(Request {
        method,
        path: p.unwrap_or_default(),
        params,
        headers,
        body,
        page_size,
        page_size_param,
    })
}

fn parse_paging(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<Paging> {
    let Some(v) = v else {
        errs.at(path, "missing");
        return None;
    };
    let mut o = Obj::of(v, path, errs)?;
    let kind = o.choice(
        "type",
        &[
            "cursor",
            "next_url",
            "link_header",
            "offset",
            "page_number",
            "none",
        ],
        None,
        errs,
    );
    let paging = match kind? {
        "none" => Paging::None,
        "cursor" => Paging::Cursor {
            cursor_path: o.required_path("cursor_path", errs)?,
            cursor_param: o.required("cursor_param", errs)?,
        },
        "next_url" => Paging::NextUrl {
            next_url_path: o.required_path("next_url_path", errs)?,
        },
        "link_header" => Paging::LinkHeader {
            rel: o.string("rel", errs).unwrap_or_else(|| "next".into()),
        },
        "offset" => Paging::Offset {
            offset_param: o.required("offset_param", errs)?,
            total_path: o.path("total_path", errs),
            has_more_path: o.path("has_more_path", errs),
        },
        _ => Paging::PageNumber {
            page_param: o.required("page_param", errs)?,
            start_page: o.uint("start_page", 0, 1, errs).unwrap_or(1),
            total_pages_path: o.path("total_pages_path", errs),
            has_more_path: o.path("has_more_path", errs),
        },
    };
    o.finish(errs);
    Some(paging)
}

fn parse_incremental(v: Option<&Value>, path: &str, errs: &mut Errors) -> Option<Incremental> {
    let Some(v) = v else {
        return Some(Incremental::None);
    };
    let mut o = Obj::of(v, path, errs)?;
    let kind = o.choice("in", &["query", "body", "header", "none"], None, errs);
    let lookback = o
        .duration("lookback", errs)
        .unwrap_or(Duration::from_secs(60));
    if lookback > MAX_LOOKBACK {
        errs.at(&o.at("lookback"), "at most P7D");
    }
    let inc = match kind? {
        "none" => Incremental::None,
        "header" => {
            let header = o
                .string("header", errs)
                .unwrap_or_else(|| "If-Modified-Since".into());
            check_headers(&[(header.clone(), String::new())], path, errs);
            Incremental::Header { header, lookback }
        }
        k => {
            let since = o.required("since", errs);
            let until = o.string("until", errs);
            let format = format_at(&mut o, "format", Some(TimeFormat::Rfc3339), errs);
            let inject = if k == "body" {
                WindowInject::Body
            } else {
                WindowInject::Query
            };
            for (key, v) in [("since", &since), ("until", &until)] {
                if let (WindowInject::Body, Some(p)) = (inject, v) {
                    if let Err(e) = Path::parse(p) {
                        errs.at(&o.at(key), e);
                    }
                }
            }
            Incremental::Window {
                inject,
                since: since?,
                until,
                format: format?,
                lookback,
            }
        }
    };
    o.finish(errs);
    Some(inc)
}

fn parse_deletes(v: Option<&Value>, path: &str, errs: &mut Errors) -> Deletes {
    let Some(v) = v else {
        return Deletes::default();
    };
    let Some(mut o) = Obj::of(v, path, errs) else {
        return Deletes::default();
    };
    let mut d = Deletes::default();
    if let Some(f) = o.get("flag") {
        let at = o.at("flag");
        if let Some(mut f) = Obj::of(f, &at, errs) {
            let p = f.required_path("path", errs);
            let value = f.get("value").cloned().unwrap_or(Value::Bool(true));
            f.finish(errs);
            d.flag = p.map(|p| (p, value));
        }
    }
    if let Some(f) = o.get("deleted_at") {
        let at = o.at("deleted_at");
        if let Some(mut f) = Obj::of(f, &at, errs) {
            let p = f.required_path("path", errs);
            let fmt = format_at(&mut f, "format", Some(TimeFormat::Rfc3339), errs);
            f.finish(errs);
            d.deleted_at = p.zip(fmt);
        }
    }
    if let Some(f) = o.get("endpoint") {
        let at = o.at("endpoint");
        if let Some(mut f) = Obj::of(f, &at, errs) {
            let p = f.string("path", errs);
            if let Some(p) = &p {
                if !p.starts_with('/') {
                    errs.at(&f.at("path"), format!("must start with / (got {p:?})"));
                }
            }
            let params = f.strings("params", errs);
            if p.is_none() && params.is_empty() {
                errs.at(
                    &at,
                    "needs a path or params (else it is the stream's own listing)",
                );
            }
            f.finish(errs);
            d.endpoint = Some(DeletesEndpoint { path: p, params });
        }
    }
    o.finish(errs);
    d
}

fn parse_fields(v: Option<&Value>, path: &str, errs: &mut Errors) -> Fields {
    let mut f = Fields {
        declared: Vec::new(),
        discovery: None,
    };
    let Some(v) = v else {
        return f;
    };
    let Some(mut o) = Obj::of(v, path, errs) else {
        return f;
    };
    if let Some(cols) = o.get("columns") {
        let at = o.at("columns");
        if let Some(c) = Obj::of(cols, &at, errs) {
            for (k, t) in c.map {
                match t.as_str().and_then(pg_type) {
                    Some(t) => f.declared.push((k.clone(), t)),
                    None => errs.at(
                        &join(&at, k),
                        format!("unknown value {t} (expected one of: {PG_TYPES})"),
                    ),
                }
            }
        }
    }
    if let Some(d) = o.get("discovery") {
        f.discovery = parse_discovery(d, &o.at("discovery"), errs);
    }
    o.finish(errs);
    f
}

fn parse_discovery(v: &Value, path: &str, errs: &mut Errors) -> Option<Discovery> {
    let mut o = Obj::of(v, path, errs)?;
    let request = match o.get("request") {
        Some(r) => parse_request(r, &o.at("request"), true, errs),
        None => {
            errs.at(&o.at("request"), "missing");
            None
        }
    };
    let paging = match o.get("paging") {
        None => Some(Paging::None),
        p => parse_paging(p, &o.at("paging"), errs),
    };
    let records_path = o.path("records_path", errs).unwrap_or(Path(Vec::new()));
    let key = o.required_path("key", errs);
    let name = o.path("name", errs);
    let type_ = o.required_path("type", errs);
    let custom = o.path("custom", errs);
    let custom_values_path = o.path("custom_values_path", errs);
    let custom_columns_from_name =
        o.choice("custom_columns", &["name", "key"], Some("key"), errs) == Some("name");
    let mut types = BTreeMap::new();
    if let Some(t) = o.get("types") {
        let at = o.at("types");
        if let Some(t) = Obj::of(t, &at, errs) {
            for (k, v) in t.map {
                match v.as_str().and_then(pg_type) {
                    Some(p) => {
                        types.insert(k.clone(), p);
                    }
                    None => errs.at(
                        &join(&at, k),
                        format!("unknown value {v} (expected one of: {PG_TYPES})"),
                    ),
                }
            }
        }
    }
    o.finish(errs);
    Some(Discovery {
        request: request?,
        paging: paging?,
        records_path,
        key: key.clone()?,
        name: name.or(key)?,
        type_: type_?,
        custom,
        custom_values_path,
        custom_columns_from_name,
        types,
    })
}

fn parse_stream(v: &Value, path: &str, errs: &mut Errors) -> Option<Stream> {
    let mut o = Obj::of(v, path, errs)?;
    let name = o.required("name", errs);
    if let Some(n) = &name {
        let ok = n.len() <= 63
            && n.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            errs.at(
                &o.at("name"),
                format!("invalid stream name {n:?} (lower-case letters, digits and _, at most 63, the landing table's name)"),
            );
        }
    }
    let label = o.string("label", errs);
    let request = match o.get("request") {
        Some(r) => parse_request(r, &o.at("request"), true, errs),
        None => {
            errs.at(&o.at("request"), "missing");
            None
        }
    };
    let (records_path, primary_key, modified) = match o.get("records") {
        None => {
            errs.at(&o.at("records"), "missing");
            (None, None, None)
        }
        Some(r) => {
            let at = o.at("records");
            match Obj::of(r, &at, errs) {
                None => (None, None, None),
                Some(mut r) => {
                    let p = r.path("path", errs).or(Some(Path(Vec::new())));
                    let pk = r.required_path("primary_key", errs);
                    let m = r.path("modified", errs);
                    let f = format_at(&mut r, "modified_format", Some(TimeFormat::Rfc3339), errs);
                    r.finish(errs);
                    (p, pk, m.zip(f))
                }
            }
        }
    };
    let paging = parse_paging(o.get("paging"), &o.at("paging"), errs);
    let incremental = parse_incremental(o.get("incremental"), &o.at("incremental"), errs);
    if let (Some(Incremental::Window { .. } | Incremental::Header { .. }), None) =
        (&incremental, &modified)
    {
        errs.at(
            &join(&o.at("records"), "modified"),
            "missing (an incremental stream needs each record's modification time)",
        );
    }
    if let (
        Some(Incremental::Window {
            inject: WindowInject::Body,
            ..
        }),
        Some(r),
    ) = (&incremental, &request)
    {
        if r.method != Method::Post {
            errs.at(
                &join(&o.at("request"), "method"),
                "must be POST (incremental.in is body)",
            );
        }
    }
    let deletes = parse_deletes(o.get("deletes"), &o.at("deletes"), errs);
    let fields = parse_fields(o.get("fields"), &o.at("fields"), errs);
    let read_ids = match o.get("read_ids") {
        None => None,
        Some(r) => {
            let at = o.at("read_ids");
            Obj::of(r, &at, errs).and_then(|mut r| {
                let param = r.required("param", errs);
                let max = r.uint("max", 1, 1000, errs).unwrap_or(100) as usize;
                let separator = r.string("separator", errs).unwrap_or_else(|| ",".into());
                r.finish(errs);
                Some(ReadIds {
                    param: param?,
                    max,
                    separator,
                })
            })
        }
    };
    o.finish(errs);
    let name = name?;
    Some(Stream {
        label: label.unwrap_or_else(|| name.clone()),
        name,
        request: request?,
        records_path: records_path?,
        primary_key: primary_key?,
        modified,
        paging: paging?,
        incremental: incremental?,
        deletes,
        fields,
        read_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> Value {
        json!({
            "base_url": "https://api.example.com",
            "auth": {"type": "bearer"},
            "streams": [{
                "name": "people",
                "request": {"path": "/people"},
                "records": {"path": "$.data", "primary_key": "id"},
                "paging": {"type": "none"}
            }]
        })
    }

    fn errors(v: Value) -> Vec<String> {
        Spec::parse(&v).unwrap_err()
    }

    #[test]
    fn a_minimal_spec_parses() {
        let s = Spec::parse(&minimal()).unwrap();
        assert_eq!(s.streams[0].name, "people");
        assert_eq!(s.credential_keys(), ["access_token"]);
        assert_eq!(s.origins(), ["https://api.example.com"]);
        assert!(matches!(s.streams[0].incremental, Incremental::None));
    }

    #[test]
    fn mistakes_are_named_by_path_all_at_once() {
        let mut v = minimal();
        v["streams"] = json!([
            {"name": "a", "request": {"path": "/a"}, "records": {"primary_key": "id"}, "paging": {"type": "none"}},
            {"name": "b", "request": {"path": "/b"}, "records": {"primary_key": "id"}, "paging": {"type": "none"}},
            {"name": "c", "request": {"path": "/c"}, "records": {"primary_key": "id"},
             "paging": {"type": "cursor", "cursor_param": "cursor"}, "pagination": {}}
        ]);
        v["auth"] = json!({"type": "api_key", "in": "cookie", "name": "k"});
        let e = errors(v);
        assert_eq!(
            e,
            [
                "auth.in: unknown value \"cookie\" (expected one of: header, query)",
                "streams[2].pagination: unknown field",
                "streams[2].paging.cursor_path: missing",
            ]
        );
    }

    #[test]
    fn wrong_types_values_and_durations_are_named() {
        let mut v = minimal();
        v["streams"][0]["paging"] = json!({"type": "cursorr"});
        v["streams"][0]["incremental"] =
            json!({"in": "query", "since": "updated_since", "lookback": "5m"});
        v["streams"][0]["request"]["page_size"] = json!("500");
        v["headers"] = json!({"Authorization": "Bearer x", "x-ok": "1"});
        let e = errors(v);
        assert!(e.contains(&"streams[0].paging.type: unknown value \"cursorr\" (expected one of: cursor, next_url, link_header, offset, page_number, none)".to_owned()), "{e:?}");
        assert!(e.contains(&"streams[0].incremental.lookback: invalid duration \"5m\" (expected ISO 8601, e.g. PT5M)".to_owned()), "{e:?}");
        assert!(
            e.iter()
                .any(|m| m.starts_with("streams[0].request.page_size: must be an integer")),
            "{e:?}"
        );
        assert!(
            e.contains(
                &"headers.Authorization: reserved header (auth and the HTTP layer set it)"
                    .to_owned()
            ),
            "{e:?}"
        );
        assert!(e.contains(&"streams[0].records.modified: missing (an incremental stream needs each record's modification time)".to_owned()), "{e:?}");
    }

    #[test]
    fn secrets_and_odd_values_are_refused() {
        let mut v = minimal();
        v["headers"] = json!({"X-Api-Key": "abc123"});
        v["streams"][0]["request"]["params"] = json!({"access_token": "t0k", "sort": "id"});
        v["streams"][0]["base_url"] = json!("https://elsewhere.example.com");
        v["streams"][0]["incremental"] =
            json!({"in": "header", "header": "Bad Header", "lookback": "P30D"});
        v["streams"][0]["records"]["modified"] = json!("updated");
        let e = errors(v);
        assert!(
            e.iter()
                .any(|m| m.starts_with("headers[\"X-Api-Key\"]: looks like a secret")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m
                    .starts_with("streams[0].request.params.access_token: looks like a secret")),
            "{e:?}"
        );
        assert!(
            e.contains(&"streams[0].base_url: unknown field".to_owned()),
            "{e:?}"
        );
        assert!(
            e.contains(&"streams[0].incremental.lookback: at most P7D".to_owned()),
            "{e:?}"
        );
        assert!(
            e.contains(&"streams[0].incremental[\"Bad Header\"]: invalid header name".to_owned()),
            "{e:?}"
        );
    }

    #[test]
    fn top_level_mistakes() {
        assert_eq!(
            errors(json!([])),
            ["$: wrong type (expected object, got array)"]
        );
        let e = errors(json!({"base_url": "ftp://x", "streams": []}));
        assert_eq!(
            e,
            [
                "auth: missing",
                "base_url: invalid URL \"ftp://x\" (expected an absolute http or https URL)",
                "streams: must list at least one stream",
            ]
        );
        let e = errors(
            json!({"base_url": "https://u:p@x.com", "auth": {"type": "basic"}, "streams": [{}]}),
        );
        assert!(
            e.contains(
                &"base_url: must not hold a user name or password (credentials go in credentials)"
                    .to_owned()
            ),
            "{e:?}"
        );
        assert!(e.contains(&"streams[0].name: missing".to_owned()), "{e:?}");
        assert!(
            e.contains(&"streams[0].request: missing".to_owned()),
            "{e:?}"
        );
        assert!(
            e.contains(&"streams[0].paging: missing".to_owned()),
            "{e:?}"
        );
    }

    #[test]
    fn stream_defaults_fill_streams() {
        let mut v = minimal();
        v["stream_defaults"] = json!({"paging": {"type": "link_header"}});
        v["streams"][0].as_object_mut().unwrap().remove("paging");
        let s = Spec::parse(&v).unwrap();
        assert!(matches!(s.streams[0].paging, Paging::LinkHeader { ref rel } if rel == "next"));
        // A duplicate name is a mistake.
        let mut v = minimal();
        let again = v["streams"][0].clone();
        v["streams"].as_array_mut().unwrap().push(again);
        assert_eq!(errors(v), ["streams[1].name: duplicate stream \"people\""]);
    }

    #[test]
    fn durations() {
        assert_eq!(iso_duration("PT5M"), Some(Duration::from_secs(300)));
        assert_eq!(iso_duration("P1DT1H"), Some(Duration::from_secs(90_000)));
        assert_eq!(iso_duration("PT0S"), Some(Duration::ZERO));
        assert!(iso_duration("5m").is_none());
        assert!(iso_duration("PT").is_none());
        assert!(iso_duration("PT5").is_none());
        assert!(iso_duration("PT1S1M").is_none());
    }

    #[test]
    fn paths() {
        let p = Path::parse("$.additional_data.next_cursor").unwrap();
        let v = json!({"additional_data": {"next_cursor": "abc"}});
        assert_eq!(p.get(&v), Some(&json!("abc")));
        assert_eq!(Path::parse("$").unwrap().get(&v), Some(&v));
        assert_eq!(
            Path::parse("a.0").unwrap().get(&json!({"a": [5]})),
            Some(&json!(5))
        );
        assert!(Path::parse("$.a[*]").is_err());
        assert!(Path::parse("a..b").is_err());
        let mut body = json!({});
        Path::parse("filter.updated_after")
            .unwrap()
            .set(&mut body, json!("t"));
        assert_eq!(body, json!({"filter": {"updated_after": "t"}}));
    }

    #[test]
    fn keys_that_are_not_identifiers_are_quoted() {
        let mut v = minimal();
        v["rate_limit"] = json!({"x-remaining": "a"});
        assert_eq!(errors(v), ["rate_limit[\"x-remaining\"]: unknown field"]);
    }
}
