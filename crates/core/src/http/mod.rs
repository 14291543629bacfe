//! The HTTP layer: one reqwest client (rustls, gzip) with timeouts, bounded
//! exponential backoff with full jitter for 429/5xx/transport errors, call and
//! byte accounting, and what a request may reach: plain `http://` only to
//! loopback, no internal address unless allowed ([`address`]), no redirect
//! followed, no response body larger than the source allows.
//!
//! Connectors build requests and interpret status codes they know (401, 400,
//! ...); retrying is decided here so every connector behaves the same.

pub mod address;
pub mod budget;
pub mod tokens;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use url::{Host, Url};

use crate::error::{CrmError, ErrorKind, Result};
use address::Network;

/// Settings of one sync's HTTP client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Whole-request timeout, connect included.
    pub timeout: Duration,
    /// Retries after the first attempt for 429, 5xx and transport errors.
    pub max_retries: u32,
    /// First backoff; doubles each retry (full jitter), capped at `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Allow `http://` to hosts other than loopback (never on by default).
    pub allow_insecure_http: bool,
    /// Internal networks a request may reach anyway (the superuser setting
    /// `crm_sync.allowed_networks`).
    pub allowed_networks: Vec<Network>,
    /// Largest response body read, after decompression.
    pub max_body_bytes: u64,
}

/// Default of [`HttpSettings::max_body_bytes`]: 64 MB (the source option
/// `max_response_mb`). The largest page a connector asks for is a Bulk API
/// results page of a few MB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(60),
            max_retries: 6,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            allow_insecure_http: false,
            allowed_networks: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Longest wait we honour from a `Retry-After` header.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);

/// A response whose body has been read whole (one API page).
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
    /// How long the attempt that produced this response took.
    pub elapsed: Duration,
}

pub struct HttpClient {
    client: reqwest::Client,
    settings: HttpSettings,
    /// Hosts requested over plain http (loopback only): they may resolve
    /// to loopback.
    http_hosts: Arc<Mutex<HashSet<String>>>,
    api_calls: Cell<u64>,
    bytes: Cell<u64>,
    retries: Cell<u64>,
    /// Whose shared request budget the calls spend ([`budget`]), if any.
    budget_key: Cell<Option<u64>>,
    /// Told at once when the CRM replaces a credential
    /// ([`HttpClient::credential_rotated`]).
    on_rotation: RefCell<Option<RotationHook>>,
    /// Reads a credential as stored now ([`HttpClient::stored_credential`]).
    lookup: RefCell<Option<LookupHook>>,
}

/// Reads a credential of the source as stored now (committed by another
/// session, or rotated earlier in this one): `key` → value.
pub type LookupHook = Box<dyn Fn(&str) -> Option<String>>;

/// What the extension does with a rotated credential: `(key, new value)`.
pub type RotationHook = Box<dyn Fn(&str, &str)>;

/// What a connector makes of a response before the retry policy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 429, 5xx: retried with backoff; anything else returned.
    Default,
    /// Returned as it is, whatever its status: the connector reports it.
    Final,
    /// Retried, waiting at least this long (None: the backoff).
    Retry(Option<Duration>),
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Result<Self> {
        let http_hosts = Arc::new(Mutex::new(HashSet::new()));
        let resolver = Arc::new(Resolver {
            allowed_networks: settings.allowed_networks.clone(),
            http_hosts: http_hosts.clone(),
        });
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false)
            // A redirect could send a request, and its token, to another
            // host, or from https to http: it is an error instead.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the server's environment (HTTPS_PROXY...) would
            // resolve the CRM's host itself, past the address check.
            .no_proxy()
            .dns_resolver(resolver)
            .gzip(true)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(15)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("pg_crm_sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                CrmError::new(
                    ErrorKind::InvalidConfig,
                    format!("cannot build HTTP client: {e}"),
                )
            })?;
        Ok(HttpClient {
            client,
            settings,
            http_hosts,
            api_calls: Cell::new(0),
            bytes: Cell::new(0),
            retries: Cell::new(0),
            budget_key: Cell::new(None),
            on_rotation: RefCell::new(None),
            lookup: RefCell::new(None),
        })
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    /// API calls made so far, retries included.
    pub fn api_calls(&self) -> u64 {
        self.api_calls.get()
    }

    /// Response body bytes received so far (after gzip decoding).
    pub fn bytes_received(&self) -> u64 {
        self.bytes.get()
    }

    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    /// Check that `url` may be called: https anywhere, http only on loopback
    /// unless insecure http is allowed.
    pub fn check_url(&self, url: &Url) -> Result<()> {
        check_url_allowed(url, self.settings.allow_insecure_http)
    }

    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url)
    }

    /// Send the request built by `build` (called again for each retry) and
    /// read the body. 429, 5xx and transport errors are retried with backoff;
    /// any other status is returned for the connector to interpret.
    /// `endpoint` (`METHOD /path`) names the call in errors.
    pub async fn send(
        &self,
        endpoint: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response> {
        self.send_retrying(endpoint, build, &|_| false).await
    }

    /// As [`HttpClient::send`], also retrying responses `transient` accepts
    /// (errors a CRM documents as temporary, such as Salesforce's
    /// `QUERY_TIMEOUT`, which comes as a 400).
    pub async fn send_retrying(
        &self,
        endpoint: &str,
        build: impl Fn() -> RequestBuilder,
        transient: &dyn Fn(&Response) -> bool,
    ) -> Result<Response> {
        self.send_with(endpoint, build, transient, self.settings.max_retries)
            .await
    }

    /// As [`HttpClient::send_retrying`] with at most `max_retries` retries
    /// (0 for requests that must not be repeated, such as creating a job).
    pub async fn send_with(
        &self,
        endpoint: &str,
        build: impl Fn() -> RequestBuilder,
        transient: &dyn Fn(&Response) -> bool,
        max_retries: u32,
    ) -> Result<Response> {
        let judge = |r: &Response| {
            if transient(r) {
                Verdict::Retry(None)
            } else {
                Verdict::Default
            }
        };
        self.send_judged(endpoint, build, &judge, max_retries).await
    }

    /// As [`HttpClient::send_with`], the connector judging each response
    /// first ([`Verdict`]): a 429 its CRM documents as lasting (a daily
    /// quota used up) is returned at once instead of retried, and a rate
    /// limit window it knows is waited for.
    pub async fn send_judged(
        &self,
        endpoint: &str,
        build: impl Fn() -> RequestBuilder,
        judge: &dyn Fn(&Response) -> Verdict,
        max_retries: u32,
    ) -> Result<Response> {
        let mut attempt: u32 = 0;
        loop {
            self.take_budget().await;
            let req = build().build().map_err(|e| transport_error(endpoint, &e))?;
            let url = req.url().clone();
            self.check_target(&url)
                .map_err(|e| e.with_endpoint(endpoint))?;
            self.api_calls.set(self.api_calls.get() + 1);
            let started = std::time::Instant::now();
            let outcome = match self.client.execute(req).await {
                Ok(resp) => self.read(endpoint, resp, started).await,
                Err(e) => Err(transport_error(endpoint, &e)),
            };
            match &outcome {
                // Only a transport error is worth another try; a refused
                // address or an oversized body would come again.
                Err(e) if e.kind != ErrorKind::Transport => return outcome,
                Ok(r) if r.status.is_redirection() && r.status != StatusCode::NOT_MODIFIED => {
                    return Err(redirected(endpoint, &url, r));
                }
                _ => {}
            }
            let retry_after = match &outcome {
                Ok(r) => match judge(r) {
                    Verdict::Final => return outcome,
                    // The connector's wait (within the source's retry_max_ms)
                    // is a floor under Retry-After's.
                    Verdict::Retry(wait) => match (
                        wait.map(|w| w.min(self.settings.retry_max)),
                        retry_after(&r.headers),
                    ) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                    Verdict::Default
                        if r.status == StatusCode::TOO_MANY_REQUESTS
                            || r.status.is_server_error() =>
                    {
                        retry_after(&r.headers)
                    }
                    Verdict::Default => return outcome,
                },
                Err(_) => None,
            };
            if attempt >= max_retries {
                return match outcome {
                    Ok(r) => Err(exhausted(endpoint, &r, attempt + 1)),
                    Err(e) => Err(e.with_detail(format!("gave up after {} attempts", attempt + 1))),
                };
            }
            let wait = retry_wait(&self.settings, attempt, retry_after);
            attempt += 1;
            self.retries.set(self.retries.get() + 1);
            tokio::time::sleep(wait).await;
        }
    }

    /// Who stores credentials the CRM replaces during this client's calls.
    pub fn on_credential_rotated(&self, hook: RotationHook) {
        self.on_rotation.replace(Some(hook));
    }

    /// The CRM replaced `key` (an OAuth token response carried a new
    /// refresh token, and the one sent no longer works): the hook stores it
    /// at once, before anything else can fail. Connectors call this the
    /// moment they read the token response.
    pub fn credential_rotated(&self, key: &str, value: &str) {
        if let Some(hook) = self.on_rotation.borrow().as_ref() {
            hook(key, value);
        }
    }

    /// Who reads the source's credentials as stored now.
    pub fn on_credential_lookup(&self, hook: LookupHook) {
        self.lookup.replace(Some(hook));
    }

    /// The source's credential `key` as stored now, when the extension can
    /// tell: a connector whose rotating refresh token was refused asks
    /// whether another session stored a newer one.
    pub fn stored_credential(&self, key: &str) -> Option<String> {
        self.lookup.borrow().as_ref().and_then(|f| f(key))
    }

    /// Spend the request budget every process calling the same account
    /// shares ([`budget`]; `key` names the account): each request waits
    /// for its turn first.
    pub fn share_budget(&self, key: u64) {
        self.budget_key.set(Some(key));
    }

    /// What the CRM says the shared budget is: `max` calls per window.
    pub fn learn_budget(&self, max: u32, interval_ms: u32) {
        if let (Some(key), Some(b)) = (self.budget_key.get(), budget::shared()) {
            b.learn(key, max, interval_ms);
        }
    }

    /// Wait until the shared budget has a call for this request.
    async fn take_budget(&self) {
        let (Some(key), Some(b)) = (self.budget_key.get(), budget::shared()) else {
            return;
        };
        loop {
            match b.take(key) {
                None => return,
                Some(d) => tokio::time::sleep(d.min(Duration::from_secs(10))).await,
            }
        }
    }

    /// Wait before the next request (a connector pacing itself to a rate
    /// limit its CRM reports): the HTTP layer is where runs sleep, so that a
    /// cancel still ends them within a second.
    pub async fn wait(&self, d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// Read a response whole, refusing a body larger than the source
    /// allows (without reading on).
    async fn read(
        &self,
        endpoint: &str,
        mut resp: reqwest::Response,
        started: std::time::Instant,
    ) -> Result<Response> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let max = self.settings.max_body_bytes;
        let too_large = || {
            CrmError::bad_response(format!(
                "the response is larger than {} MB (after decompression); it was not read further",
                max / (1024 * 1024)
            ))
            .with_endpoint(endpoint)
            .with_hint(
                "Raise the source option max_response_mb if the CRM really sends pages this large.",
            )
        };
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if (body.len() + chunk.len()) as u64 > max {
                        self.bytes.set(self.bytes.get() + body.len() as u64);
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(transport_error(endpoint, &e)),
            }
        }
        self.bytes.set(self.bytes.get() + body.len() as u64);
        Ok(Response {
            status,
            headers,
            body: body.freeze(),
            elapsed: started.elapsed(),
        })
    }

    /// Check a request's URL before it is sent: the scheme rule, and the
    /// address rule for a host given as an IP address (names are checked
    /// when they resolve, see [`Resolver`]).
    fn check_target(&self, url: &Url) -> Result<()> {
        check_url_allowed(url, self.settings.allow_insecure_http)?;
        let http = url.scheme() == "http";
        let ip = match url.host() {
            Some(Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            Some(Host::Domain(d)) => {
                if http && !self.settings.allow_insecure_http {
                    if let Ok(mut hosts) = self.http_hosts.lock() {
                        hosts.insert(d.to_ascii_lowercase());
                    }
                }
                None
            }
            None => None,
        };
        match ip {
            Some(ip) if !address::allowed(ip, &self.settings.allowed_networks, http) => {
                Err(refused(url.host_str().unwrap_or("?"), ip))
            }
            _ => Ok(()),
        }
    }
}

/// Resolves host names and keeps only the addresses a request may reach.
struct Resolver {
    allowed_networks: Vec<Network>,
    http_hosts: Arc<Mutex<HashSet<String>>>,
}

/// A host name that resolved only to addresses a request may not reach.
#[derive(Debug)]
struct Refused {
    host: String,
    ip: IpAddr,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves to {}", self.host, self.ip)
    }
}

impl std::error::Error for Refused {}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let nets = self.allowed_networks.clone();
        // A name used with plain http (only ever to loopback, unless
        // insecure http is allowed) must resolve to loopback, not to some
        // public address that would get the token in the clear.
        // (check_target records such names only while insecure http is off.)
        let loopback_only = self
            .http_hosts
            .lock()
            .map(|h| h.contains(&host))
            .unwrap_or(false);
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| {
                    if loopback_only {
                        address::is_loopback(a.ip())
                    } else {
                        address::allowed(a.ip(), &nets, false)
                    }
                })
                .collect();
            match (ok.is_empty(), found.first()) {
                (false, _) => Ok(Box::new(ok.into_iter()) as Addrs),
                (true, Some(first)) => Err(Box::new(Refused {
                    host,
                    ip: first.ip(),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                (true, None) => Err(format!("{host} has no address").into()),
            }
        })
    }
}

fn refused(host: &str, ip: IpAddr) -> CrmError {
    CrmError::config(format!(
        "{host} ({ip}) is an internal address; syncs may not connect to it"
    ))
    .with_hint("A superuser can allow internal networks with crm_sync.allowed_networks (for example '10.0.0.0/8').")
}

/// A 3xx answer: the request is not sent on, to its Location or anywhere.
fn redirected(endpoint: &str, url: &Url, r: &Response) -> CrmError {
    let to = r
        .headers
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url.join(l).ok());
    let host = to
        .as_ref()
        .map(|u| format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?")))
        .unwrap_or_else(|| "an unnamed location".into());
    CrmError::new(
        ErrorKind::Transport,
        format!(
            "the server redirected the request (HTTP {}) to {host}; redirects are not followed",
            r.status.as_u16()
        ),
    )
    .with_endpoint(endpoint)
    .with_hint(
        "Set the source's URL option to the API's own address (a proxy or a moved endpoint may redirect).",
    )
}

fn transport_error(endpoint: &str, e: &reqwest::Error) -> CrmError {
    // reqwest's Display includes the URL; ours never carry secrets in the
    // query string, but keep only the cause chain to be safe and short.
    let mut cause = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return refused(&r.host, r.ip).with_endpoint(endpoint);
        }
        cause = s.to_string();
        src = s.source();
    }
    let what = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        format!("could not connect: {cause}")
    } else if e.is_body() || e.is_decode() {
        format!("connection broke while reading the response: {cause}")
    } else {
        format!("request failed: {cause}")
    };
    CrmError::new(ErrorKind::Transport, what).with_endpoint(endpoint)
}

fn exhausted(endpoint: &str, r: &Response, attempts: u32) -> CrmError {
    let excerpt = body_excerpt(&r.body);
    if r.status == StatusCode::TOO_MANY_REQUESTS {
        CrmError::new(
            ErrorKind::RateLimited,
            format!("still rate limited (HTTP 429) after {attempts} attempts"),
        )
        .with_endpoint(endpoint)
        .with_detail(excerpt)
        .with_hint("Sync less often, or raise max_retries / retry_max_ms in the source options.")
    } else {
        CrmError::new(
            ErrorKind::ServerError,
            if r.status.is_server_error() {
                format!(
                    "server error HTTP {} after {attempts} attempts",
                    r.status.as_u16()
                )
            } else {
                format!(
                    "still failing with HTTP {} after {attempts} attempts",
                    r.status.as_u16()
                )
            },
        )
        .with_endpoint(endpoint)
        .with_detail(excerpt)
        .with_hint("The CRM is having trouble; run the sync again later.")
    }
}

/// Parse a JSON API body; a body that is not JSON, or stops half way, is a
/// [`ErrorKind::BadResponse`] naming `vendor` and `endpoint`.
pub fn parse_json<'de, T: serde::Deserialize<'de>>(
    vendor: &str,
    endpoint: &str,
    body: &'de [u8],
) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_eof() { "truncated" } else { "malformed" };
        CrmError::bad_response(format!("{vendor} sent a {what} response ({e})"))
            .with_endpoint(endpoint)
            .with_detail(format!("body begins: {}", body_excerpt(body)))
            .with_hint("Run the sync again; if it persists, the API or a proxy in between is returning bad data.")
    })
}

/// The first 300 characters of a body, for error details.
pub fn body_excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let mut out: String = s.chars().take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}

/// `Retry-After` in seconds or as an HTTP date, capped.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let d = if let Ok(secs) = v.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::from_secs_f64(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
    };
    Some(d.min(RETRY_AFTER_CAP))
}

/// How long to wait before retry `attempt + 1`: the server's `Retry-After`
/// if it sent one (never less), else [`backoff`].
fn retry_wait(s: &HttpSettings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| backoff(s, attempt))
}

/// Full-jitter exponential backoff: uniform in [0, min(max, base * 2^attempt)].
pub fn backoff(s: &HttpSettings, attempt: u32) -> Duration {
    let cap = s
        .retry_base
        .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .min(s.retry_max);
    Duration::from_millis(fastrand::u64(0..=cap.as_millis() as u64))
}

pub fn check_url_allowed(url: &Url, allow_insecure: bool) -> Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure || is_loopback(url) => Ok(()),
        "http" => Err(CrmError::config(format!(
            "plain http:// is only allowed to loopback addresses, not to {}",
            url.host_str().unwrap_or("?")
        ))
        .with_hint("Use https://, or set crm_sync.allow_insecure_http = on (superuser only) if you really mean it.")),
        other => Err(CrmError::config(format!("unsupported URL scheme {other}:// (use https://)"))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(a)) => a.is_loopback(),
        Some(Host::Ipv6(a)) => a.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The server's clock from a `Date` header, in epoch milliseconds.
pub fn server_date_ms(h: &HeaderMap) -> Option<i64> {
    let v = h.get(reqwest::header::DATE)?.to_str().ok()?;
    let t = httpdate::parse_http_date(v).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_only_to_loopback() {
        for ok in [
            "https://api.hubapi.com",
            "http://127.0.0.1:8080",
            "http://127.9.9.9",
            "http://[::1]:1",
            "http://localhost",
        ] {
            assert!(
                check_url_allowed(&Url::parse(ok).unwrap(), false).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://api.hubapi.com",
            "http://10.0.0.1",
            "ftp://127.0.0.1",
        ] {
            let e = check_url_allowed(&Url::parse(bad).unwrap(), false).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidConfig, "{bad}");
        }
        assert!(check_url_allowed(&Url::parse("http://10.0.0.1").unwrap(), true).is_ok());
    }

    /// docs/configuration.md: "exponential backoff, full jitter,
    /// `Retry-After` honoured". Full jitter is uniform in
    /// [0, min(retry_max, retry_base * 2^attempt)]: every sample within the
    /// bound, and spread over all of it (near 0, near the cap, the mean
    /// half-way). 2,000 samples of a uniform variable miss these margins
    /// with a probability far below 1e-20.
    #[test]
    fn backoff_is_full_jitter_under_the_exponential_cap() {
        let s = HttpSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Default::default()
        };
        for (attempt, cap_ms) in [
            (0, 100u64),
            (1, 200),
            (2, 400),
            (3, 800),
            (4, 1000),
            (20, 1000),
        ] {
            let samples: Vec<u64> = (0..2000)
                .map(|_| backoff(&s, attempt).as_millis() as u64)
                .collect();
            let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
            assert!(
                *max <= cap_ms,
                "attempt {attempt}: {max} ms above the cap {cap_ms} ms"
            );
            assert!(
                *min <= cap_ms / 20,
                "attempt {attempt}: nothing near 0 (min {min} ms of {cap_ms})"
            );
            assert!(
                *max >= cap_ms * 19 / 20,
                "attempt {attempt}: nothing near the cap (max {max} ms of {cap_ms})"
            );
            let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
            assert!(
                (mean / cap_ms as f64 - 0.5).abs() < 0.1,
                "attempt {attempt}: mean {mean} ms is not half of {cap_ms} ms"
            );
            let low = samples.iter().filter(|&&d| d * 2 < cap_ms).count();
            assert!(
                (800..=1200).contains(&low),
                "attempt {attempt}: {low} of 2000 in the lower half"
            );
        }
    }

    /// A `Retry-After` is a floor: the wait is never shorter, even above
    /// retry_max; without one the backoff applies.
    #[test]
    fn retry_after_is_a_floor_of_the_wait() {
        let s = HttpSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Default::default()
        };
        for attempt in [0, 3, 20] {
            for given in [
                Duration::from_millis(50),
                Duration::from_secs(2),
                Duration::from_secs(5),
            ] {
                for _ in 0..200 {
                    let w = retry_wait(&s, attempt, Some(given));
                    assert!(
                        w >= given,
                        "attempt {attempt}: waited {w:?} < Retry-After {given:?}"
                    );
                    assert!(
                        w <= given.max(s.retry_max),
                        "attempt {attempt}: waited {w:?} for {given:?}"
                    );
                }
            }
            assert!(retry_wait(&s, attempt, None) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", "100000".parse().unwrap());
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_CAP));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        // An HTTP date: the time until then.
        let at = std::time::SystemTime::now() + Duration::from_secs(30);
        h.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        // A date already past: retry at once.
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        // A date far ahead: capped.
        let at = std::time::SystemTime::now() + Duration::from_secs(86_400);
        h.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
        assert_eq!(retry_after(&h), Some(RETRY_AFTER_CAP));
    }
}
