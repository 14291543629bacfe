//! Calls to Zoho CRM's API v8 and to Zoho Accounts for its tokens.

use std::cell::Cell;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, parse_json, tokens, HttpClient, Response, Verdict};
use crate::source::{Field, ObjectInfo};
use crate::types::PgType;

pub const DEFAULT_ACCOUNTS_URL: &str = "https://accounts.zoho.com";
/// Get Records takes at most 50 field names a call.
pub const MAX_FIELDS: usize = 50;
/// ... and returns at most 200 records a call.
pub const PER_PAGE: usize = 200;
/// COQL returns at most 2,000 rows a call.
pub const COQL_LIMIT: usize = 2_000;
/// Get Records and COQL take at most 100 ids.
pub const MAX_IDS: usize = 100;
/// Share of the day's API credits past which a run stops (53400).
pub const DEFAULT_MAX_DAILY_SHARE: u64 = 80;
const EARLY: Duration = Duration::from_secs(120);
const VENDOR: &str = "Zoho CRM";

/// One connection.
pub struct Zoho<'a> {
    pub http: &'a HttpClient,
    accounts: Url,
    client_id: String,
    secret: String,
    refresh: String,
    /// `options.api_domain`: where API calls go whatever the token says.
    fixed_api: Option<Url>,
    /// `options.daily_credits`, and the share of them a run may spend.
    pub daily_credits: Option<u64>,
    pub max_daily_share: u64,
    /// The day's credits as first inferred from `X-API-CREDITS-REMAINING`
    /// (sent once half is spent): twice what was left then.
    inferred_daily: Cell<Option<u64>>,
    pub credits_left: Cell<Option<u64>>,
    /// The `Date` of the last answer (ms), the CRM's clock.
    last_date: Cell<Option<i64>>,
}

impl<'a> Zoho<'a> {
    pub fn new(
        http: &'a HttpClient,
        accounts: &str,
        api_domain: Option<&str>,
        client_id: &str,
        secret: &str,
        refresh: &str,
    ) -> Result<Self> {
        let accounts = Url::parse(accounts)
            .map_err(|e| CrmError::config(format!("options.accounts_url is not a URL: {e}")))?;
        let fixed_api = api_domain
            .map(|a| {
                Url::parse(a)
                    .map_err(|e| CrmError::config(format!("options.api_domain is not a URL: {e}")))
            })
            .transpose()?;
        Ok(Zoho {
            http,
            accounts,
            client_id: client_id.to_owned(),
            secret: secret.to_owned(),
            refresh: refresh.to_owned(),
            fixed_api,
            daily_credits: None,
            max_daily_share: DEFAULT_MAX_DAILY_SHARE,
            inferred_daily: Cell::new(None),
            credits_left: Cell::new(None),
            last_date: Cell::new(None),
        })
    }

    fn cache_key(&self) -> u64 {
        let mut h = DefaultHasher::new();
        (
            self.accounts.as_str(),
            &self.client_id,
            &self.secret,
            &self.refresh,
        )
            .hash(&mut h);
        h.finish()
    }

    fn secrets(&self) -> [&str; 2] {
        [self.secret.as_str(), self.refresh.as_str()]
    }

    /// A token and the API's origin: cached in this process until two
    /// minutes before the token expires (Zoho hands out 10 a refresh token
    /// in 10 minutes at most); `stale` after a 401 asks for a new one.
    async fn token(&self, stale: bool) -> Result<(String, Url)> {
        let key = self.cache_key();
        if !stale {
            if let Some(c) = tokens::get(key, EARLY) {
                let api = self.api_origin(c.extra.as_deref().unwrap_or_default())?;
                return Ok((c.token, api));
            }
        }
        let url = self
            .accounts
            .join("/oauth/v2/token")
            .map_err(|e| CrmError::config(e.to_string()))?;
        let endpoint = "POST /oauth/v2/token";
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.as_str()),
            ("refresh_token", self.refresh.as_str()),
        ];
        let r = self
            .http
            .send(endpoint, || {
                self.http
                    .request(Method::POST, url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&form)
            })
            .await?;
        #[derive(Deserialize, Default)]
        struct Answer {
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            api_domain: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
            #[serde(default)]
            error: Option<String>,
        }
        // Not through parse_json: its error would quote the body, a token.
        let a: Answer = serde_json::from_slice(&r.body).map_err(|_| {
            CrmError::bad_response(format!(
                "Zoho Accounts answered {} with a body that is not JSON",
                r.status.as_u16()
            ))
            .with_endpoint(endpoint)
            .with_hint("Check options.accounts_url: your data centre's accounts server, such as https://accounts.zoho.eu.")
        })?;
        // Zoho Accounts answers errors with HTTP 200 and an `error` member.
        let token = match (a.access_token, a.error) {
            (Some(t), None) if !t.is_empty() => t,
            (_, err) => {
                let err = err.unwrap_or_else(|| format!("HTTP {}", r.status.as_u16()));
                let (kind, hint) = match err.as_str() {
                    "invalid_code" => (ErrorKind::Auth, "The refresh token is revoked or was made for another client: make a new one (Zoho API console, scope ZohoCRM.modules.READ, ZohoCRM.settings.READ, ZohoCRM.users.READ, ZohoCRM.coql.READ) and pass it with crm_sync.alter_source()."),
                    "invalid_client" => (ErrorKind::Auth, "Check client_id and client_secret, and that options.accounts_url is the data centre the client was made in (accounts.zoho.com, .eu, .in, .com.au, .jp, zohocloud.ca, .sa, .com.cn)."),
                    "Access Denied" => (ErrorKind::RateLimited, "Zoho hands out 10 access tokens per refresh token in 10 minutes: other tools using this refresh token take them too. Try again in ten minutes."),
                    _ => (ErrorKind::Auth, "Check client_id, client_secret and refresh_token with crm_sync.alter_source()."),
                };
                return Err(CrmError::new(
                    kind,
                    format!(
                        "Zoho Accounts refused to give a token ({})",
                        crate::error::bounded_text(&err, 60)
                    ),
                )
                .with_endpoint(endpoint)
                .with_hint(hint)
                .redact(&self.secrets()));
            }
        };
        let api = match (&self.fixed_api, a.api_domain) {
            (Some(f), _) => f.clone(),
            (None, Some(d)) => self.api_origin(&d)?,
            (None, None) => {
                return Err(CrmError::bad_response("Zoho Accounts' token answer has no api_domain")
                    .with_endpoint(endpoint)
                    .with_hint("Set options.api_domain to your data centre's API, such as https://www.zohoapis.eu."))
            }
        };
        let secs = a.expires_in.unwrap_or(3_600).clamp(1, 86_400);
        tokens::put(
            key,
            token.clone(),
            Some(api.as_str().to_owned()),
            Duration::from_secs(secs),
        );
        Ok((token, api))
    }

    /// The API origin a token answer names, if it may be trusted with the
    /// token: the options' own, or a Zoho API host of the accounts server's
    /// data centre (`accounts.zoho.eu` → `*.zohoapis.eu`), or the accounts
    /// server's own host (a proxy or a mock).
    fn api_origin(&self, domain: &str) -> Result<Url> {
        if let Some(f) = &self.fixed_api {
            return Ok(f.clone());
        }
        let refuse = |why: &str| {
            CrmError::bad_response(format!(
                "Zoho Accounts named an API domain that {why}; not sending the token there"
            ))
            .with_hint("Set options.api_domain to your data centre's API (https://www.zohoapis.com, .eu, .in, ...).")
        };
        let u = Url::parse(domain).map_err(|_| refuse("is not a URL"))?;
        self.http.check_url(&u)?;
        let (Some(acc), Some(host)) = (self.accounts.host_str(), u.host_str()) else {
            return Err(refuse("has no host"));
        };
        if !allowed_api_host(acc, host) {
            return Err(refuse(&format!(
                "is not a Zoho API host of {acc}'s data centre"
            )));
        }
        let mut root = u.clone();
        root.set_path("/");
        root.set_query(None);
        Ok(root)
    }

    /// GET `path_and_query` (under the API's origin) with `headers`; a 401
    /// gets a new token and one more try. 204 and 304 come back as an empty
    /// body; other answers but 2xx as errors naming `what`.
    pub async fn get(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
    ) -> Result<Vec<u8>> {
        self.call(Method::GET, what, path, query, headers, None)
            .await
    }

    /// POST a COQL query.
    pub async fn coql(&self, what: &str, query: &str) -> Result<Vec<u8>> {
        let body = serde_json::json!({"select_query": query}).to_string();
        self.call(Method::POST, what, "/crm/v8/coql", &[], &[], Some(body))
            .await
    }

    async fn call(
        &self,
        method: Method,
        what: &str,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Result<Vec<u8>> {
        let mut stale = false;
        loop {
            let (token, api) = self.token(stale).await?;
            let url = api
                .join(path)
                .map_err(|e| CrmError::config(e.to_string()))?;
            let endpoint = format!("{method} {}", url.path());
            let mut auth = HeaderValue::from_str(&format!("Zoho-oauthtoken {token}"))
                .map_err(|_| CrmError::bad_response("Zoho sent a token a header cannot carry"))?;
            auth.set_sensitive(true);
            // A 429 that says no credits are left is final; others (the
            // concurrency limit) are retried.
            let judge = |r: &Response| {
                if r.status == StatusCode::TOO_MANY_REQUESTS && credits_left(&r.headers) == Some(0)
                {
                    Verdict::Final
                } else {
                    Verdict::Default
                }
            };
            let r = self
                .http
                .send_judged(
                    &endpoint,
                    || {
                        let mut b = self
                            .http
                            .request(method.clone(), url.clone())
                            .query(query)
                            .header(AUTHORIZATION, auth.clone())
                            .header(reqwest::header::ACCEPT, "application/json");
                        for (k, v) in headers {
                            b = b.header(*k, v.as_str());
                        }
                        match &body {
                            Some(text) => b
                                .header(reqwest::header::CONTENT_TYPE, "application/json")
                                .body(text.clone()),
                            None => b,
                        }
                    },
                    &judge,
                    self.http.settings().max_retries,
                )
                .await
                // An API or proxy echoing the request must not show the token.
                .map_err(|e| e.redact(&[token.as_str()]))?;
            if r.status == StatusCode::UNAUTHORIZED && !stale {
                stale = true;
                continue;
            }
            if let Some(d) = crate::http::server_date_ms(&r.headers) {
                self.last_date.set(Some(d));
            }
            if let Some(left) = credits_left(&r.headers) {
                self.credits_left.set(Some(left));
                if self.inferred_daily.get().is_none() {
                    self.inferred_daily.set(Some(left.saturating_mul(2)));
                }
            }
            if r.status == StatusCode::NO_CONTENT || r.status == StatusCode::NOT_MODIFIED {
                self.check_credits(what)?;
                return Ok(Vec::new());
            }
            if r.status.is_success() {
                self.check_credits(what)?;
                return Ok(r.body.to_vec());
            }
            return Err(api_error(&r, &endpoint, what).redact(&[token.as_str()]));
        }
    }

    /// The CRM's clock at its last answer.
    pub fn server_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_millis(self.last_date.get()?)
    }

    /// Stop once the day's credits are spent past `max_daily_share`.
    fn check_credits(&self, what: &str) -> Result<()> {
        let (Some(left), Some(daily)) = (
            self.credits_left.get(),
            self.daily_credits.or(self.inferred_daily.get()),
        ) else {
            return Ok(());
        };
        let floor = daily.saturating_mul(100 - self.max_daily_share.min(100)) / 100;
        if self.max_daily_share < 100 && left <= floor {
            return Err(CrmError::new(
                ErrorKind::RateLimited,
                format!(
                    "Zoho CRM's API credits for today are {}% spent ({left} of {daily} left) while reading {what}; stopping before max_daily_share ({}%)",
                    100 - left.saturating_mul(100) / daily.max(1),
                    self.max_daily_share
                ),
            )
            .with_hint("The run resumes from its checkpoint when run again; credits come back over 24 hours. Raise options.max_daily_share (or set options.daily_credits to your edition's) to spend more."));
        }
        Ok(())
    }

    /// The modules the API can read.
    pub async fn modules(&self) -> Result<Vec<ObjectInfo>> {
        let body = self
            .get("modules", "/crm/v8/settings/modules", &[], &[])
            .await?;
        #[derive(Deserialize)]
        struct M {
            api_name: String,
            #[serde(default)]
            plural_label: Option<String>,
            #[serde(default)]
            api_supported: Option<bool>,
            #[serde(default)]
            generated_type: Option<String>,
        }
        #[derive(Deserialize)]
        struct L {
            modules: Vec<M>,
        }
        let l: L = parse_json(VENDOR, "GET /crm/v8/settings/modules", &body)?;
        Ok(l.modules
            .into_iter()
            .map(|m| {
                let unsyncable = if m.api_supported == Some(false) {
                    Some("Zoho does not offer this module through its API".to_owned())
                } else if m.generated_type.as_deref() == Some("linking") {
                    Some("a linking module: its records come with the modules it links".to_owned())
                } else {
                    None
                };
                ObjectInfo {
                    label: m.plural_label.unwrap_or_else(|| m.api_name.clone()),
                    custom: m.generated_type.as_deref() == Some("custom"),
                    name: m.api_name,
                    unsyncable,
                }
            })
            .collect())
    }

    /// The fields of `module` a list call can read, typed.
    pub async fn fields(&self, module: &str) -> Result<Vec<Field>> {
        check_module(module)?;
        let body = self
            .get(
                module,
                "/crm/v8/settings/fields",
                &[("module", module.to_owned())],
                &[],
            )
            .await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(Deserialize)]
        struct Formula {
            #[serde(default)]
            return_type: Option<String>,
        }
        #[derive(Deserialize)]
        struct F {
            api_name: String,
            data_type: String,
            #[serde(default)]
            field_label: Option<String>,
            #[serde(default)]
            custom_field: bool,
            #[serde(default)]
            formula: Option<Formula>,
        }
        #[derive(Deserialize)]
        struct L {
            fields: Vec<F>,
        }
        let l: L = parse_json(VENDOR, "GET /crm/v8/settings/fields", &body)?;
        Ok(l.fields
            .into_iter()
            .filter_map(|f| {
                let ty = match (f.data_type.as_str(), &f.formula) {
                    ("formula", Some(fm)) => fm.return_type.clone().unwrap_or_default(),
                    (t, _) => t.to_owned(),
                };
                Some(Field {
                    pg_type: pg_type_for(&ty)?,
                    label: f.field_label.unwrap_or_else(|| f.api_name.clone()),
                    crm_type: f.data_type,
                    custom: f.custom_field,
                    column: None,
                    name: f.api_name,
                })
            })
            .collect())
    }
}

/// Whether an API host belongs to the accounts server's data centre.
pub fn allowed_api_host(accounts: &str, api: &str) -> bool {
    if accounts == api {
        return true;
    }
    let suffix = if accounts == "accounts.zohocloud.ca" {
        "ca"
    } else {
        match accounts.strip_prefix("accounts.zoho.") {
            Some(s) => s,
            None => return false,
        }
    };
    api.strip_suffix(&format!(".zohoapis.{suffix}"))
        .is_some_and(|label| !label.is_empty() && !label.contains('.'))
}

/// The landing type of a field's data type; None for what a list call
/// does not return (subforms, multi-select lookups, files, images).
pub fn pg_type_for(data_type: &str) -> Option<PgType> {
    Some(match data_type {
        "text" | "textarea" | "mediumtext" | "email" | "phone" | "website" | "picklist"
        | "autonumber" | "string" | "event_reminder" => PgType::Text,
        "integer" | "bigint" | "long" => PgType::BigInt,
        "double" | "currency" | "percent" | "decimal" | "rollup_summary" => PgType::Numeric,
        "boolean" => PgType::Boolean,
        "date" => PgType::Date,
        "datetime" => PgType::TimestampTz,
        "lookup"
        | "ownerlookup"
        | "userlookup"
        | "multiselectpicklist"
        | "consent_lookup"
        | "multi_module_lookup" => PgType::Jsonb,
        _ => return None,
    })
}

/// Module API names are letters, digits and `_`: they go in the path and
/// in COQL.
pub fn check_module(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CrmError::config(format!("{name:?} is not a Zoho CRM module's API name"))
            .with_hint("Use the module's API name, such as Contacts or Custom_Module1 (see crm_sync.discover_objects)."))
    }
}

/// A 429 for the day's credits (not the concurrency limit): no credits
/// left by the header, or the 24-hour period named in the message.
fn credits_spent(r: &Response) -> bool {
    credits_left(&r.headers) == Some(0)
        || error_code(&r.body)
            .1
            .to_ascii_lowercase()
            .contains("24 hour")
}

fn credits_left(h: &HeaderMap) -> Option<u64> {
    h.get("x-api-credits-remaining")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Zoho's `{"code","details","message","status"}`.
pub fn error_code(body: &[u8]) -> (String, String) {
    #[derive(Deserialize, Default)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: E = serde_json::from_slice(body).unwrap_or_default();
    (e.code, e.message)
}

fn api_error(r: &Response, endpoint: &str, what: &str) -> CrmError {
    let (code, message) = error_code(&r.body);
    let status = r.status.as_u16();
    let detail = if message.is_empty() {
        body_excerpt(&r.body)
    } else {
        format!("{code}: {}", crate::error::bounded_text(&message, 300))
    };
    let (kind, msg, hint) = match (r.status, code.as_str()) {
        (StatusCode::TOO_MANY_REQUESTS, _) if credits_spent(r) => (
            ErrorKind::RateLimited,
            format!("Zoho CRM's API credits for today are used up ({what})"),
            "Credits come back over 24 hours; the run resumes from its checkpoint when run again.",
        ),
        (StatusCode::TOO_MANY_REQUESTS, _) => (
            ErrorKind::RateLimited,
            format!("Zoho CRM kept refusing requests for {what}: too many at once (429)"),
            "Other tools of this org use the same concurrency allowance (5 to 25 calls at once by edition); run the sync again later.",
        ),
        (StatusCode::UNAUTHORIZED, _) | (_, "OAUTH_SCOPE_MISMATCH") => (
            ErrorKind::Auth,
            format!("Zoho CRM refused the token for {what} ({status} {code})"),
            "Make a refresh token with the scopes ZohoCRM.modules.READ, ZohoCRM.settings.READ, ZohoCRM.users.READ and ZohoCRM.coql.READ.",
        ),
        (StatusCode::FORBIDDEN, _) => (
            ErrorKind::Auth,
            format!("Zoho CRM refused to read {what} ({status} {code})"),
            "The user who made the refresh token needs a profile that can read this module.",
        ),
        (_, "INVALID_MODULE") => (
            ErrorKind::ApiRejected,
            format!("Zoho CRM has no module {what}"),
            "Check the module's API name (crm_sync.discover_objects).",
        ),
        _ => (
            ErrorKind::ApiRejected,
            format!("Zoho CRM rejected the request for {what} ({status} {code})"),
            "Check the stream's fields: each must be a field of the module.",
        ),
    };
    let e = CrmError::new(kind, msg)
        .with_endpoint(endpoint)
        .with_detail(detail)
        .with_hint(hint);
    if code.is_empty() {
        e
    } else {
        e.with_code(code)
    }
}

/// A page of Get Records or COQL: records as received and `info`.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(default)]
    pub data: Vec<Box<RawValue>>,
    #[serde(default)]
    pub info: Info,
}

#[derive(Debug, Default, Deserialize)]
pub struct Info {
    #[serde(default)]
    pub more_records: bool,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// Parse a page (an empty body: no records).
pub fn page(endpoint: &str, body: &[u8]) -> Result<Page> {
    if body.is_empty() {
        return Ok(Page {
            data: Vec::new(),
            info: Info::default(),
        });
    }
    parse_json(VENDOR, endpoint, body)
}

/// Names the accounts server only: the rest are secrets.
impl std::fmt::Debug for Zoho<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Zoho({})", self.accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_hosts_must_be_of_the_accounts_data_centre() {
        assert!(allowed_api_host("accounts.zoho.com", "www.zohoapis.com"));
        assert!(allowed_api_host("accounts.zoho.eu", "www.zohoapis.eu"));
        assert!(allowed_api_host(
            "accounts.zoho.com.au",
            "www.zohoapis.com.au"
        ));
        assert!(allowed_api_host("accounts.zohocloud.ca", "www.zohoapis.ca"));
        assert!(allowed_api_host("127.0.0.1", "127.0.0.1"));
        assert!(!allowed_api_host("accounts.zoho.com", "www.zohoapis.eu"));
        assert!(!allowed_api_host("accounts.zoho.com", "evil.com"));
        assert!(!allowed_api_host("accounts.zoho.com", "a.b.zohoapis.com"));
        assert!(!allowed_api_host(
            "accounts.zoho.com",
            "www.zohoapis.com.evil.io"
        ));
        assert!(!allowed_api_host("accounts.zoho.com", "wwwzohoapis.com"));
        assert!(!allowed_api_host("login.example", "www.zohoapis.com"));
    }

    #[test]
    fn modules_cannot_reach_outside_the_path_or_the_query() {
        assert!(check_module("Contacts").is_ok());
        assert!(check_module("Custom_Module1").is_ok());
        for bad in ["", "Contacts/deleted", "Contacts where", "a'b", "../x"] {
            assert!(check_module(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_types_map_to_landing_types() {
        assert_eq!(pg_type_for("ownerlookup"), Some(PgType::Jsonb));
        assert_eq!(pg_type_for("currency"), Some(PgType::Numeric));
        assert_eq!(pg_type_for("datetime"), Some(PgType::TimestampTz));
        assert_eq!(pg_type_for("subform"), None);
        assert_eq!(pg_type_for("profileimage"), None);
    }
}
