//! The declarative connector: any HTTP API a spec describes ([`spec`]), as
//! a source of provider `rest` (the spec in `options.spec`) or of a spec
//! registered by name (`crm_sync.register_spec`; Pipedrive ships as one).
//! No API-specific code lives here: requests, auth, paging, incremental
//! windows, deletes, fields and rate limits all come from the spec. See
//! README.md beside this file and docs/specs.md.

mod auth;
mod reader;
pub mod spec;

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{Map, Value};
use url::Url;

use crate::config::SourceConfig;
use crate::error::{CrmError, ErrorKind, Result};
use crate::http::check_url_allowed;
use crate::http::{body_excerpt, HttpClient, Response, Verdict};
use crate::source::{
    BoxFuture, CheckArgs, Connector, DefaultFields, Field, IdSource, ObjectInfo, PageSource,
    Provider, ReadRequest, Record,
};
use crate::types::PgType;
use auth::{base_from_token, Authn};
use reader::{Lister, Reader, Window};
use spec::{Method, ResetUnit, Spec, Stream};

/// Options of a `rest` source besides the common ones.
pub const OPTIONS: &[&str] = &["spec", "base_url"];

/// The declarative connector as the rest of the system sees it. Its
/// streams, credentials and hosts come from each source's spec, so the
/// registry's static lists are empty here; `connectors::configure` asks
/// the spec instead.
pub const PROVIDER: Provider = Provider {
    name: "rest",
    options: OPTIONS,
    credentials: &[],
    hosts: &[],
    streams: &[],
    other_objects: DefaultFields::All,
    reconciles: true,
    refuses: |_| None,
    check,
    connect,
};

/// Longest wait a rate-limit header may ask for before the next call.
const MAX_PACE: Duration = Duration::from_secs(60);

/// The spec a checked source carries (`connectors::configure` put it in
/// its options).
fn spec_of(cfg_options: &Map<String, Value>, what: &str) -> Result<Spec> {
    let v = cfg_options
        .get("spec")
        .ok_or_else(|| CrmError::config(format!("{what} needs options.spec")).with_hint("Pass the spec: options => '{\"spec\": {...}}', or use a registered spec's name as the provider."))?;
    Spec::load(what, v)
}

fn check(a: &CheckArgs<'_>) -> Result<()> {
    let spec = spec_of(a.options, "options.spec")?;
    check_spec(
        &spec,
        a.options,
        a.credentials,
        "options.spec",
        a.allow_insecure_http,
    )
}

/// Checks of a spec with a source's options and credentials: an auth way
/// the credentials complete, and URLs the source may call.
pub fn check_spec(
    spec: &Spec,
    options: &Map<String, Value>,
    credentials: &Map<String, Value>,
    what: &str,
    allow_insecure_http: bool,
) -> Result<()> {
    Authn::choose(spec, what, credentials)?;
    for (k, v) in credentials {
        if !v.is_string() {
            return Err(CrmError::config(format!(
                "credentials.{k} must be a string"
            )));
        }
    }
    check_url_allowed(&spec.base_url, allow_insecure_http).map_err(|e| {
        e.with_hint(format!(
            "{what}: base_url must be https (plain http reaches loopback only)."
        ))
    })?;
    for a in &spec.auth {
        if let spec::Auth::OAuth2(o) = a {
            check_url_allowed(&o.token_url, allow_insecure_http)?;
        }
    }
    crate::config::check_url_option(
        options,
        "base_url",
        spec.base_url.as_str(),
        allow_insecure_http,
    )
}

/// The origins a source of `spec` with `options` sends credentials to:
/// a change of any needs new credentials (`alter_source`).
pub fn origins(spec: &Value, options: &Value) -> Vec<String> {
    let Ok(s) = Spec::parse(spec) else {
        return vec![spec.to_string()];
    };
    let mut o = s.origins();
    if let Some(b) = options.get("base_url").and_then(Value::as_str) {
        let base = s.base_url.origin().ascii_serialization();
        o.retain(|x| *x != base);
        o.push(Url::parse(b).map_or_else(|_| b.to_owned(), |u| u.origin().ascii_serialization()));
        o.sort();
        o.dedup();
    }
    o
}

fn connect<'a>(http: &'a HttpClient, cfg: &'a SourceConfig) -> Result<Box<dyn Connector + 'a>> {
    let what = if cfg.provider == "rest" {
        "options.spec".to_owned()
    } else {
        format!("spec {:?}", cfg.provider)
    };
    let spec = spec_of(&cfg.options, &what)?;
    let auth = Authn::choose(&spec, &what, &cfg.credentials)?;
    let base = match cfg.option_str("base_url") {
        Some(b) => Url::parse(b).map_err(|e| CrmError::config(format!("options.base_url: {e}")))?,
        None => spec.base_url.clone(),
    };
    http.share_budget(auth.budget_key(&base));
    let lookback = cfg
        .options
        .get("lookback_seconds")
        .is_some()
        .then_some(cfg.lookback);
    Ok(Box::new(Rest {
        http,
        what: cfg.provider.clone(),
        spec,
        base: RefCell::new(base.clone()),
        configured_base: base,
        auth,
        lookback,
        pace_until: Cell::new(None),
    }))
}

/// A connection to one API account.
pub struct Rest<'a> {
    http: &'a HttpClient,
    /// The provider's name, for messages (`pipedrive`, `rest`).
    what: String,
    spec: Spec,
    /// Where requests go: the configured base, or what an OAuth token
    /// response named.
    base: RefCell<Url>,
    configured_base: Url,
    auth: Authn,
    /// The source's lookback_seconds, when set: it wins over the spec's.
    lookback: Option<Duration>,
    /// No request before this (the API said its window is spent).
    pace_until: Cell<Option<Instant>>,
}

/// One request, fully built.
pub struct Call {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Call {
    /// `METHOD /path`, naming the call in errors (never the query, which
    /// may hold an API key).
    pub fn endpoint(&self) -> String {
        format!("{} {}", self.method.as_str(), self.url.path())
    }
}

impl<'a> Rest<'a> {
    fn stream(&self, name: &str) -> Result<&Stream> {
        self.spec.stream(name).ok_or_else(|| {
            let known: Vec<&str> = self.spec.streams.iter().map(|s| s.name.as_str()).collect();
            CrmError::config(format!("the spec of {} has no stream {name:?}", self.what))
                .with_hint(format!("Its streams: {}.", known.join(", ")))
        })
    }

    /// `path` on the base URL (its own path kept as a prefix).
    pub fn url(&self, path: &str) -> Result<Url> {
        let mut u = self.base.borrow().clone();
        let prefix = u.path().trim_end_matches('/').to_owned();
        u.set_path(&format!("{prefix}{path}"));
        u.set_query(None);
        Ok(u)
    }

    /// A URL the API handed over (next page), read against the request it
    /// came with: only on the base's origin, so credentials never follow a
    /// link elsewhere; without the API key parameter (auth adds it again),
    /// which an API echoing the query string would put there.
    pub fn same_origin(&self, what: &str, link: &str, from: Option<&Url>) -> Result<Url> {
        let base = self.base.borrow();
        let mut u = from
            .unwrap_or(&base)
            .join(link)
            .map_err(|_| CrmError::bad_response(format!("{what} is not a URL")))?;
        if u.origin() != base.origin() {
            return Err(CrmError::bad_response(format!(
                "{what} points to {}, not to {}; not sending credentials there",
                u.origin().ascii_serialization(),
                base.origin().ascii_serialization()
            ))
            .with_hint("The API's next-page link must stay on the source's base_url."));
        }
        // Only the key's own parameters go; the rest stays byte for byte
        // (a signed link, `%20`, a bare flag).
        if let (Some(key), Some(q)) = (self.auth.query_param(), u.query()) {
            let is_key = |seg: &str| {
                let name = seg.split('=').next().unwrap_or("");
                url::form_urlencoded::parse(name.as_bytes())
                    .next()
                    .is_some_and(|(k, _)| k == key)
            };
            if q.split('&').any(is_key) {
                let kept: Vec<&str> = q.split('&').filter(|seg| !is_key(seg)).collect();
                let kept = kept.join("&");
                u.set_query((!kept.is_empty()).then_some(kept.as_str()));
            }
        }
        Ok(u)
    }

    /// The date the API's server put on a response, for a run's window;
    /// none more than an hour from ours (a cached answer, a clock far off).
    pub fn server_date(h: &HeaderMap) -> Option<chrono::DateTime<chrono::Utc>> {
        let d = crate::http::server_date_ms(h).and_then(chrono::DateTime::from_timestamp_millis)?;
        ((d - chrono::Utc::now()).num_seconds().abs() <= 3_600).then_some(d)
    }

    /// Resolve the credential (and so the base URL an OAuth token may
    /// name) before URLs are built or checked against it.
    pub async fn prepare(&self) -> Result<()> {
        if self.auth.is_oauth() {
            self.credential(false).await?;
        }
        Ok(())
    }

    /// What to send now (`stale` after a 401); the base URL moves to the
    /// account's own host when the token response names one.
    async fn credential(&self, stale: bool) -> Result<auth::Credential> {
        let (cred, named) = self.auth.credential(self.http, stale).await?;
        if let Some(n) = named {
            let moved = base_from_token(&self.configured_base, &n, self.http)?;
            self.base.replace(moved);
        }
        Ok(cred)
    }

    fn lookback(&self, s: &Stream) -> Duration {
        self.lookback
            .or_else(|| s.incremental.lookback())
            .unwrap_or(Duration::from_secs(60))
    }

    /// How long the rate-limit headers of `h` say to wait, if they do.
    fn reset_wait(&self, h: &HeaderMap) -> Option<Duration> {
        let rl = &self.spec.rate_limit;
        let v: f64 = h
            .get(rl.reset_header.as_deref()?)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        let secs = match rl.reset_unit {
            ResetUnit::Seconds => v,
            ResetUnit::EpochSeconds => v - now,
            ResetUnit::EpochMs => v / 1000.0 - now,
        };
        Some(Duration::from_secs_f64(
            secs.clamp(0.0, MAX_PACE.as_secs_f64()),
        ))
    }

    fn remaining(&self, h: &HeaderMap) -> Option<i64> {
        let name = self.spec.rate_limit.remaining_header.as_deref()?;
        h.get(name)?.to_str().ok()?.trim().parse().ok()
    }

    /// Send `call`; the body of a 2xx (not empty; JSON is the caller's to
    /// check, see `reader::Doc::parse`) and its headers, or None for 304
    /// Not Modified.
    pub async fn send(
        &self,
        label: &str,
        call: &Call,
    ) -> Result<Option<(bytes::Bytes, HeaderMap)>> {
        let endpoint = call.endpoint();
        let mut stale = false;
        loop {
            let cred = self.credential(stale).await?;
            // A URL built before the token named the account's own host
            // goes there instead.
            let mut url = call.url.clone();
            let now = self.base.borrow().clone();
            if now.origin() != self.configured_base.origin()
                && url.origin() == self.configured_base.origin()
            {
                let _ = url.set_scheme(now.scheme());
                let _ = url.set_host(now.host_str());
                let _ = url.set_port(now.port());
            }
            if let Some(t) = self.pace_until.take() {
                let left = t.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    self.http.wait(left).await;
                }
            }
            let rl = &self.spec.rate_limit;
            let judge = |r: &Response| {
                if !rl.wait_statuses.contains(&r.status.as_u16()) {
                    return Verdict::Default;
                }
                if rl.quota_when_remaining && self.remaining(&r.headers).is_some_and(|n| n > 0) {
                    return Verdict::Final;
                }
                Verdict::Retry(self.reset_wait(&r.headers))
            };
            let build = || {
                let method = if call.method == Method::Post {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::GET
                };
                let mut b = self
                    .http
                    .request(method, url.clone())
                    .header(reqwest::header::ACCEPT, "application/json");
                for (k, v) in self.spec.headers.iter().chain(&call.headers) {
                    b = b.header(k.as_str(), v.as_str());
                }
                if let Some(body) = &call.body {
                    b = b.json(body);
                }
                Authn::apply(b, &cred)
            };
            let r = self
                .http
                .send_judged(&endpoint, build, &judge, self.http.settings().max_retries)
                .await?;
            if self.remaining(&r.headers) == Some(0) {
                if let Some(w) = self.reset_wait(&r.headers) {
                    self.pace_until.set(Some(Instant::now() + w));
                }
            }
            if r.status == StatusCode::UNAUTHORIZED && self.auth.is_oauth() && !stale {
                stale = true;
                continue;
            }
            return self.interpret(label, &endpoint, r);
        }
    }

    fn api_message(&self, body: &[u8]) -> String {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let msg = v.as_ref().and_then(|v| {
            let p = self.spec.error_message_path.as_ref()?;
            match p.get(v)? {
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        });
        crate::error::bounded_text(&msg.unwrap_or_else(|| body_excerpt(body)), 300)
    }

    fn interpret(
        &self,
        label: &str,
        endpoint: &str,
        r: Response,
    ) -> Result<Option<(bytes::Bytes, HeaderMap)>> {
        let what = &self.what;
        let s = r.status;
        if s == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if s.is_success() {
            if r.body.iter().all(u8::is_ascii_whitespace) {
                return Err(CrmError::bad_response(format!(
                    "{what} sent an empty response for {label}"
                ))
                .with_endpoint(endpoint));
            }
            // Parsed (and checked whole) by the caller, as deep as the spec asks.
            return Ok(Some((r.body, r.headers)));
        }
        let msg = self.api_message(&r.body);
        let code = s.as_u16();
        let e = if self.spec.rate_limit.wait_statuses.contains(&code) {
            CrmError::new(
                ErrorKind::RateLimited,
                format!("{what} says the request quota for {label} is used up (HTTP {code} while the rate window still had calls left): {msg}"),
            )
            .with_hint("The API's daily budget is spent: data synced so far is kept, and the next run, after the budget resets, continues from there.")
        } else {
            match s {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CrmError::new(
                    ErrorKind::Auth,
                    format!("{what} refused the credentials for {label} (HTTP {code}): {msg}"),
                )
                .with_hint("Check the credentials and their scopes; change them with crm_sync.alter_source()."),
                StatusCode::PAYMENT_REQUIRED => CrmError::new(
                    ErrorKind::Auth,
                    format!("{what} refused {label}: the account is not open (HTTP 402): {msg}"),
                ),
                StatusCode::NOT_FOUND | StatusCode::GONE => CrmError::new(
                    ErrorKind::ApiRejected,
                    format!("{what} has no {label} at {endpoint} (HTTP {code}): {msg}"),
                )
                .with_hint("Check the spec's request path and the source's base_url."),
                _ => CrmError::new(
                    ErrorKind::ApiRejected,
                    format!("{what} rejected the request for {label} (HTTP {code}): {msg}"),
                )
                .with_hint("Check the spec's request parameters for this stream."),
            }
        };
        Err(e.with_endpoint(endpoint).with_code(code.to_string()))
    }
}

/// A field name as a column would read it: lower case, runs of other
/// characters as one `_` ("Lead score (%)" → "lead_score").
pub fn snake(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
    }
    let out = out.trim_end_matches('_').to_owned();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("f_{out}")
    } else {
        out
    }
}

impl Connector for Rest<'_> {
    fn objects(&self) -> BoxFuture<'_, Result<Vec<ObjectInfo>>> {
        let out = self
            .spec
            .streams
            .iter()
            .map(|s| ObjectInfo {
                name: s.name.clone(),
                label: s.label.clone(),
                custom: false,
                unsyncable: None,
            })
            .collect();
        Box::pin(async move { Ok(out) })
    }

    fn fields<'a>(&'a self, object: &'a str) -> BoxFuture<'a, Result<Vec<Field>>> {
        Box::pin(async move {
            let s = self.stream(object)?;
            let mut out: Vec<Field> = s
                .fields
                .declared
                .iter()
                .map(|(name, t)| Field {
                    name: name.clone(),
                    label: name.clone(),
                    crm_type: t.sql_name().to_owned(),
                    pg_type: *t,
                    custom: false,
                    column: None,
                })
                .collect();
            let Some(d) = &s.fields.discovery else {
                return Ok(out);
            };
            let mut l = Lister::new(
                self,
                &d.request,
                &d.paging,
                d.records_path.clone(),
                format!("the fields of {object}"),
            );
            while let Some((items, _)) = l.page(&Window::default()).await? {
                for f in items {
                    let f: Value = serde_json::from_str(f.get()).unwrap_or(Value::Null);
                    let text = |p: &spec::Path| {
                        p.get(&f).and_then(|v| match v {
                            Value::String(s) => Some(s.clone()),
                            Value::Number(n) => Some(n.to_string()),
                            _ => None,
                        })
                    };
                    let Some(key) = text(&d.key).filter(|k| !k.is_empty()) else {
                        continue;
                    };
                    if out.iter().any(|o| o.name == key) {
                        continue;
                    }
                    let crm_type = text(&d.type_).unwrap_or_default();
                    let custom = d
                        .custom
                        .as_ref()
                        .and_then(|p| p.get(&f))
                        .is_some_and(|v| v.as_bool() == Some(true));
                    let label = text(&d.name).unwrap_or_else(|| key.clone());
                    let pg_type = d
                        .types
                        .get(&crm_type)
                        .or_else(|| d.types.get("*"))
                        .copied()
                        .unwrap_or(PgType::Text);
                    out.push(Field {
                        column: (custom && d.custom_columns_from_name).then(|| snake(&label)),
                        name: key,
                        label,
                        crm_type,
                        pg_type,
                        custom,
                    });
                }
            }
            Ok(out)
        })
    }

    fn reader<'a>(&'a self, req: ReadRequest) -> BoxFuture<'a, Result<Box<dyn PageSource + 'a>>> {
        Box::pin(async move {
            let s = self.stream(&req.object)?;
            let r = Reader::new(self, s, &req)?;
            Ok(Box::new(r) as Box<dyn PageSource + 'a>)
        })
    }

    fn ids<'a>(
        &'a self,
        object: &'a str,
        _fields: &'a [Field],
    ) -> BoxFuture<'a, Result<Box<dyn IdSource + 'a>>> {
        Box::pin(async move {
            let s = self.stream(object)?;
            Ok(Box::new(reader::Ids::new(self, s)) as Box<dyn IdSource + 'a>)
        })
    }

    fn read_ids<'a>(
        &'a self,
        object: &'a str,
        fields: &'a [Field],
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Record>>> {
        Box::pin(async move {
            let s = self.stream(object)?;
            reader::read_ids(self, s, fields, ids).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_columns() {
        assert_eq!(snake("Lead score (%)"), "lead_score");
        assert_eq!(snake("  Größe "), "größe");
        assert_eq!(snake("2nd phone"), "f_2nd_phone");
        assert_eq!(snake("!!!"), "f_");
    }

    #[test]
    fn next_links_lose_only_the_api_key() {
        let spec = Spec::parse(&serde_json::json!({
            "base_url": "https://api.example.com/v1",
            "auth": {"type": "api_key", "in": "query", "name": "api_key", "credential": "k"},
            "streams": [{"name": "p", "request": {"path": "/p"}, "records": {"primary_key": "id"}, "paging": {"type": "none"}}]
        }))
        .unwrap();
        let http = HttpClient::new(Default::default()).unwrap();
        let creds = serde_json::json!({"k": "secret"});
        let auth = Authn::choose(&spec, "x", creds.as_object().unwrap()).unwrap();
        let base = spec.base_url.clone();
        let api = Rest {
            http: &http,
            what: "x".into(),
            spec,
            base: RefCell::new(base.clone()),
            configured_base: base,
            auth,
            lookback: None,
            pace_until: Cell::new(None),
        };
        let from = Url::parse("https://api.example.com/v1/p?page=1").unwrap();
        let clean = |l: &str| api.same_origin("link", l, Some(&from)).unwrap().to_string();
        // Signed or oddly encoded links stay as they are.
        assert_eq!(
            clean("https://api.example.com/v1/p?q=a%20b&flag&sig=x%2By"),
            "https://api.example.com/v1/p?q=a%20b&flag&sig=x%2By"
        );
        assert_eq!(
            clean("p?page=2&api_key=secret&q=a%20b&api%5Fkey=secret"),
            "https://api.example.com/v1/p?page=2&q=a%20b"
        );
        assert_eq!(clean("?api_key=secret"), "https://api.example.com/v1/p");
        assert!(api
            .same_origin("link", "https://evil.example.com/p", Some(&from))
            .is_err());
    }

    #[test]
    fn origins_follow_the_base_url_option() {
        let spec = serde_json::json!({
            "base_url": "https://api.pipedrive.com",
            "auth": [{"type": "oauth2", "token_url": "https://oauth.pipedrive.com/oauth/token"}],
            "streams": [{"name": "p", "request": {"path": "/p"}, "records": {"primary_key": "id"}, "paging": {"type": "none"}}]
        });
        assert_eq!(
            origins(&spec, &serde_json::json!({})),
            ["https://api.pipedrive.com", "https://oauth.pipedrive.com"]
        );
        assert_eq!(
            origins(
                &spec,
                &serde_json::json!({"base_url": "http://127.0.0.1:9/pd"})
            ),
            ["http://127.0.0.1:9", "https://oauth.pipedrive.com"]
        );
    }
}
