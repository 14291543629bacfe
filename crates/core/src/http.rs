//! The HTTP layer: one reqwest client (rustls, gzip) with timeouts, bounded
//! exponential backoff with full jitter for 429/5xx/transport errors, call and
//! byte accounting, and the rule that plain `http://` goes to loopback only.
//!
//! Connectors build requests and interpret status codes they know (401, 400,
//! ...); retrying is decided here so every connector behaves the same.

use std::cell::Cell;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use url::{Host, Url};

use crate::error::{CrmError, ErrorKind, Result};

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
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(60),
            max_retries: 6,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            allow_insecure_http: false,
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
    api_calls: Cell<u64>,
    bytes: Cell<u64>,
    retries: Cell<u64>,
}

impl HttpClient {
    pub fn new(settings: HttpSettings) -> Result<Self> {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false)
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
            api_calls: Cell::new(0),
            bytes: Cell::new(0),
            retries: Cell::new(0),
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
        let mut attempt: u32 = 0;
        loop {
            self.api_calls.set(self.api_calls.get() + 1);
            let started = std::time::Instant::now();
            let outcome = match build().send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(body) => {
                            self.bytes.set(self.bytes.get() + body.len() as u64);
                            Ok(Response {
                                status,
                                headers,
                                body,
                                elapsed: started.elapsed(),
                            })
                        }
                        Err(e) => Err(transport_error(endpoint, &e)),
                    }
                }
                Err(e) => Err(transport_error(endpoint, &e)),
            };
            let retry_after = match &outcome {
                Ok(r)
                    if r.status == StatusCode::TOO_MANY_REQUESTS
                        || r.status.is_server_error()
                        || transient(r) =>
                {
                    retry_after(&r.headers)
                }
                Ok(_) => return outcome,
                Err(_) => None,
            };
            if attempt >= max_retries {
                return match outcome {
                    Ok(r) => Err(exhausted(endpoint, &r, attempt + 1)),
                    Err(e) => Err(e.with_detail(format!("gave up after {} attempts", attempt + 1))),
                };
            }
            let wait = retry_after.unwrap_or_else(|| backoff(&self.settings, attempt));
            attempt += 1;
            self.retries.set(self.retries.get() + 1);
            tokio::time::sleep(wait).await;
        }
    }
}

fn transport_error(endpoint: &str, e: &reqwest::Error) -> CrmError {
    // reqwest's Display includes the URL; ours never carry secrets in the
    // query string, but keep only the cause chain to be safe and short.
    let mut cause = String::new();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
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

/// Full-jitter exponential backoff: uniform in [0, min(max, base * 2^attempt)].
pub fn backoff(s: &HttpSettings, attempt: u32) -> Duration {
    let cap = s
        .retry_base
        .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .min(s.retry_max);
    let ms = cap.as_millis() as u64;
    // Never zero: a burst of instant retries is what rate limiters punish.
    Duration::from_millis(fastrand::u64(ms / 2..=ms.max(1)))
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

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = HttpSettings {
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Default::default()
        };
        for _ in 0..50 {
            let d0 = backoff(&s, 0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = backoff(&s, 3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            let d20 = backoff(&s, 20);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_millis(1000));
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
    }
}
