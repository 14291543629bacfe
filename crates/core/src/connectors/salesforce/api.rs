//! Calls to a Salesforce org's REST API with a session that is refreshed once
//! when Salesforce reports it expired, and Salesforce's error bodies (JSON
//! arrays of `{"message","errorCode"}`) turned into [`CrmError`]s.
//! <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm>

use std::cell::RefCell;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::auth::{self, Login, Session};
use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, HttpClient, Response};

pub struct Api<'a> {
    pub http: &'a HttpClient,
    pub version: String,
    login: Login,
    session: RefCell<Option<Session>>,
    /// Percent of the org's daily API requests past which calls stop.
    max_daily_share: u64,
}

/// `Sforce-Limit-Info: api-usage=18/15000[, per-app-api-usage=…]`: the
/// org's API requests in the last 24 hours, and its limit.
/// <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm>
pub fn api_usage(headers: &reqwest::header::HeaderMap) -> Option<(u64, u64)> {
    let v = headers.get("sforce-limit-info")?.to_str().ok()?;
    let usage = v
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, max) = usage.split_once('/')?;
    Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// Salesforce's error codes that mean "try again".
fn transient(r: &Response) -> bool {
    r.status == StatusCode::BAD_REQUEST
        && first_error(&r.body).is_some_and(|e| e.error_code == "QUERY_TIMEOUT")
}

/// Salesforce ends a synchronous SOQL query after 120 seconds
/// (QUERY_TIMEOUT); a query call waits longer than that, so that the
/// client never cuts a query the server would have finished.
/// <https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_apicalls.htm>
pub const QUERY_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(150);

/// How a call treats a `QUERY_TIMEOUT`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Send the same query again (with backoff).
    Retry,
    /// Return it at once: the caller narrows the query instead.
    Return,
}

#[derive(Deserialize, Debug, Default, Clone)]
pub struct SfError {
    #[serde(rename = "errorCode", default)]
    pub error_code: String,
    #[serde(default)]
    pub message: String,
}

fn first_error(body: &[u8]) -> Option<SfError> {
    match serde_json::from_slice::<Vec<SfError>>(body) {
        Ok(v) => v.into_iter().next(),
        Err(_) => serde_json::from_slice::<SfError>(body).ok(),
    }
}

impl<'a> Api<'a> {
    pub fn new(http: &'a HttpClient, version: &str, login: Login) -> Self {
        let session = auth::cached(login.key());
        Api {
            http,
            version: version.to_owned(),
            login,
            session: RefCell::new(session),
            max_daily_share: 100,
        }
    }

    /// Stop once the org has used `percent` of its daily API requests.
    pub fn with_max_daily_share(mut self, percent: u64) -> Self {
        self.max_daily_share = percent.clamp(1, 100);
        self
    }

    /// Refuse to go on past the org's share of daily requests this source
    /// may see used (every answer reports the org's usage).
    fn check_usage(&self, endpoint: &str, resp: &Response) -> Result<()> {
        let Some((used, max)) = api_usage(&resp.headers) else {
            return Ok(());
        };
        if self.max_daily_share >= 100
            || max == 0
            || used.saturating_mul(100) < max.saturating_mul(self.max_daily_share)
        {
            return Ok(());
        }
        Err(CrmError::new(
            ErrorKind::RateLimited,
            format!(
                "the Salesforce org has used {used} of its {max} API requests in the last 24 hours, past the {}% this source lets it reach (option max_daily_share)",
                self.max_daily_share
            ),
        )
        .with_endpoint(endpoint)
        .with_hint("The limit is a rolling 24 hours, shared by every integration of the org: sync again later (a background job keeps what it committed and goes on from its last checkpoint; crm_sync.sync() rolls this stream back), or raise max_daily_share with crm_sync.alter_source()."))
    }

    /// `/services/data/vNN.N/{rest}`.
    pub fn data_path(&self, rest: &str) -> String {
        format!("/services/data/v{}/{rest}", self.version)
    }

    async fn session(&self, fresh: bool) -> Result<Session> {
        if fresh {
            auth::forget(self.login.key());
            self.session.replace(None);
        }
        if let Some(s) = self.session.borrow().clone() {
            return Ok(s);
        }
        let s = self.login.login(self.http).await?;
        self.session.replace(Some(s.clone()));
        Ok(s)
    }

    /// Call `path` (absolute, under the instance URL; may carry a query
    /// string, as `nextRecordsUrl` does). An expired session is renewed once.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Response> {
        self.call_with(method, path, query, headers, body, true)
            .await
    }

    /// As [`Api::call`]; `retry` false sends the request once (a 5xx or a
    /// broken connection is then an error, never a repeated side effect).
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Option<&Value>,
        retry: bool,
    ) -> Result<Response> {
        self.send(method, path, query, headers, body, retry, OnTimeout::Retry)
            .await
    }

    /// A query whose `QUERY_TIMEOUT` comes back at once (other failures
    /// are retried as usual): the reader asks for a narrower window.
    pub async fn query_narrowable(
        &self,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
    ) -> Result<Response> {
        self.send(
            Method::GET,
            path,
            query,
            headers,
            None,
            true,
            OnTimeout::Return,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Option<&Value>,
        retry: bool,
        on_timeout: OnTimeout,
    ) -> Result<Response> {
        let endpoint = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let mut fresh = false;
        loop {
            let s = self.session(fresh).await?;
            // Paths come from us or from the API (nextRecordsUrl): only
            // ever send the session to the instance itself.
            let url = s
                .instance_url
                .join(path)
                .ok()
                .filter(|u| {
                    path.starts_with('/')
                        && !path.starts_with("//")
                        && u.origin() == s.instance_url.origin()
                })
                .ok_or_else(|| {
                    CrmError::bad_response(format!(
                        "Salesforce sent a link outside the instance: {:?}",
                        path.split('?').next().unwrap_or(path)
                    ))
                })?;
            let retries = if retry {
                self.http.settings().max_retries
            } else {
                0
            };
            // Queries (and their later pages) may run up to Salesforce's
            // own limit.
            let is_query = path.contains("/query");
            let call_timeout = self.http.settings().timeout.max(QUERY_CALL_TIMEOUT);
            let judge = |r: &Response| on_timeout == OnTimeout::Retry && transient(r);
            let resp = self
                .http
                .send_with(
                    &endpoint,
                    || {
                        let mut rb = self
                            .http
                            .request(method.clone(), url.clone())
                            .bearer_auth(&s.access_token);
                        if !headers
                            .iter()
                            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
                        {
                            rb = rb.header("Accept", "application/json");
                        }
                        if !query.is_empty() {
                            rb = rb.query(query);
                        }
                        for (k, v) in headers {
                            rb = rb.header(*k, v);
                        }
                        if let Some(b) = body {
                            rb = rb.json(b);
                        }
                        if is_query {
                            rb = rb.timeout(call_timeout);
                        }
                        rb
                    },
                    &judge,
                    retries,
                )
                .await
                .map_err(|e| e.redact(&[&s.access_token]))?;
            if resp.status == StatusCode::UNAUTHORIZED && !fresh {
                // INVALID_SESSION_ID: the session timed out or was revoked.
                fresh = true;
                continue;
            }
            // The session token is no credential the SQL side knows to
            // scrub: never let it reach an error.
            let resp = check_status(&endpoint, resp).map_err(|e| e.redact(&[&s.access_token]))?;
            // A call that created something (a Bulk job) is let through: its
            // answer holds what the run must keep track of; the next read
            // stops.
            if method == Method::GET {
                self.check_usage(&endpoint, &resp)?;
            }
            return Ok(resp);
        }
    }

    pub async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
    ) -> Result<(T, Response)> {
        let resp = self.call(Method::GET, path, query, headers, None).await?;
        let endpoint = format!("GET {}", path.split('?').next().unwrap_or(path));
        let v = parse_json(&endpoint, &resp.body)?;
        Ok((v, resp))
    }
}

pub fn parse_json<T: DeserializeOwned>(endpoint: &str, body: &[u8]) -> Result<T> {
    crate::http::parse_json("Salesforce", endpoint, body)
}

/// Turn a non-2xx answer into an error that says what to do.
fn check_status(endpoint: &str, resp: Response) -> Result<Response> {
    let s = resp.status;
    if s.is_success() {
        return Ok(resp);
    }
    let e = first_error(&resp.body).unwrap_or_default();
    let what = if e.error_code.is_empty() {
        format!("HTTP {}", s.as_u16())
    } else {
        format!("HTTP {} {}", s.as_u16(), e.error_code)
    };
    let detail = if e.message.is_empty() {
        body_excerpt(&resp.body)
    } else {
        e.message.clone()
    };
    let err = match (s, e.error_code.as_str()) {
        (_, "REQUEST_LIMIT_EXCEEDED") => CrmError::new(
            ErrorKind::RateLimited,
            format!("the Salesforce org's daily API request limit is used up ({what})"),
        )
        .with_hint("The org's rolling 24-hour API request limit (or its limit of concurrent long requests) is reached; syncs can resume when requests free up. See Setup > Company Information > API Requests, or ask Salesforce for a higher limit."),
        (StatusCode::UNAUTHORIZED, _) => CrmError::new(
            ErrorKind::Auth,
            format!("Salesforce rejected a fresh session ({what})"),
        )
        .with_hint("Check the connected app's policies and the user's permissions (API Enabled)."),
        (StatusCode::FORBIDDEN, _) => CrmError::new(
            ErrorKind::Auth,
            format!("Salesforce refused access ({what})"),
        )
        .with_hint("The integration user lacks a permission this stream needs (API Enabled, read access to the object); grant it, or disable the stream in crm_sync.streams."),
        (StatusCode::NOT_FOUND, _) | (_, "INVALID_TYPE") | (_, "NOT_FOUND") => CrmError::new(
            ErrorKind::InvalidConfig,
            format!("Salesforce does not know this object ({what})"),
        )
        .with_hint("See crm_sync.discover(source) for the org's objects; object names are API names such as Account or Invoice__c."),
        _ => CrmError::new(
            ErrorKind::ApiRejected,
            format!("Salesforce rejected the request ({what})"),
        )
        .with_hint("Check the source options and the stream's fields in crm_sync.streams."),
    };
    let err = err.with_endpoint(endpoint).with_detail(detail);
    Err(if e.error_code.is_empty() {
        err
    } else {
        err.with_code(e.error_code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderMap;

    fn resp(status: u16, body: &str) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: bytes::Bytes::from(body.to_owned()),
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn api_usage_is_read_from_sforce_limit_info() {
        let mut h = HeaderMap::new();
        assert_eq!(api_usage(&h), None);
        h.insert(
            "Sforce-Limit-Info",
            "api-usage=18/15000, per-app-api-usage=17/250(appName=sample-app)"
                .parse()
                .unwrap(),
        );
        assert_eq!(api_usage(&h), Some((18, 15000)));
        h.insert("Sforce-Limit-Info", "api-usage=x/15000".parse().unwrap());
        assert_eq!(api_usage(&h), None);
    }

    #[test]
    fn errors_are_classified_by_code() {
        let e = check_status(
            "GET /q",
            resp(403, r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(e.message.contains("daily API request limit"));
        let e = check_status(
            "GET /q",
            resp(400, r#"[{"message":"No such column 'Foo__c' on entity 'Account'.","errorCode":"INVALID_FIELD"}]"#),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::ApiRejected);
        assert_eq!(e.code.as_deref(), Some("INVALID_FIELD"));
        assert!(e.detail.unwrap().contains("Foo__c"));
        let e = check_status(
            "GET /q",
            resp(
                404,
                r#"[{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}]"#,
            ),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert!(check_status("GET /q", resp(200, "{}")).is_ok());
        assert!(transient(&resp(
            400,
            r#"[{"message":"Your query request was running for too long.","errorCode":"QUERY_TIMEOUT"}]"#
        )));
        assert!(!transient(&resp(
            400,
            r#"[{"message":"x","errorCode":"MALFORMED_QUERY"}]"#
        )));
    }
}
