//! How a `rest` source's requests authenticate: the first of the spec's
//! ways whose credentials the source has. OAuth 2.0 access tokens are kept
//! in this backend's memory only, refreshed a minute before they expire
//! and once when the API answers 401; a refresh token the token endpoint
//! replaces is handed at once to [`HttpClient::credential_rotated`], as the
//! native connectors do (RFC 6749 §6: the server "MAY issue a new refresh
//! token", and the old one may stop working).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder};
use serde_json::{Map, Value};
use url::Url;

use super::spec::{Auth, Grant, Inject, OAuth2, Spec};
use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, tokens, HttpClient};

/// Refresh this long before a token expires.
const EARLY: Duration = Duration::from_secs(60);

/// The chosen way, with its credential values.
pub struct Authn {
    way: Auth,
    values: HashMap<String, String>,
    /// The refresh token now (it may rotate during the run).
    refresh: RefCell<Option<String>>,
}

/// Names the way only: the values are secrets.
impl std::fmt::Debug for Authn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authn({})", self.way.kind())
    }
}

/// What to add to a request.
#[derive(Clone)]
pub enum Credential {
    Header(String, HeaderValue),
    Query(String, String),
}

impl Authn {
    /// The first of the spec's ways whose credentials are all given.
    pub fn choose(spec: &Spec, what: &str, creds: &Map<String, Value>) -> Result<Authn> {
        let value = |k: &str| {
            creds
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
        };
        for way in &spec.auth {
            let keys = way.keys();
            if keys.iter().all(|k| value(k).is_some()) {
                let values: HashMap<String, String> = keys
                    .iter()
                    .map(|k| ((*k).to_owned(), value(k).unwrap_or_default().to_owned()))
                    .collect();
                let refresh = match way {
                    Auth::OAuth2(o) if o.grant == Grant::RefreshToken => {
                        values.get(&o.refresh_token_key).cloned()
                    }
                    _ => None,
                };
                return Ok(Authn {
                    way: way.clone(),
                    values,
                    refresh: RefCell::new(refresh),
                });
            }
        }
        let ways: Vec<String> = spec
            .auth
            .iter()
            .map(|a| format!("{} ({})", a.kind(), a.keys().join(", ")))
            .collect();
        Err(CrmError::config(format!(
            "{what} needs credentials for one of: {}",
            ways.join("; ")
        ))
        .with_hint("Pass them as strings: credentials => '{\"key\": \"...\"}'."))
    }

    /// The query parameter that carries the credential, if it goes in one.
    pub fn query_param(&self) -> Option<&str> {
        match &self.way {
            Auth::ApiKey {
                inject: Inject::Query,
                name,
                ..
            } => Some(name),
            _ => None,
        }
    }

    pub fn is_oauth(&self) -> bool {
        matches!(self.way, Auth::OAuth2(_))
    }

    /// Names whose request budget the calls spend: the host and the
    /// credential (hashed).
    pub fn budget_key(&self, base: &Url) -> u64 {
        let mut h = DefaultHasher::new();
        base.origin().ascii_serialization().hash(&mut h);
        let mut keys: Vec<_> = self.values.iter().collect();
        keys.sort();
        match &self.way {
            Auth::OAuth2(o) => self.values.get(&o.client_id_key).hash(&mut h),
            _ => keys.hash(&mut h),
        }
        h.finish().max(1)
    }

    /// What to send now; `stale` after a 401 refreshes an OAuth token.
    /// Second: the base URL an OAuth token response named, if any.
    pub async fn credential(
        &self,
        http: &HttpClient,
        stale: bool,
    ) -> Result<(Credential, Option<String>)> {
        let header = |v: String| {
            HeaderValue::from_str(&v)
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
                .map_err(|_| {
                    CrmError::config("a credential holds characters a header cannot carry")
                })
        };
        match &self.way {
            Auth::Bearer { token_key } => Ok((
                Credential::Header(
                    AUTHORIZATION.to_string(),
                    header(format!("Bearer {}", self.values[token_key]))?,
                ),
                None,
            )),
            Auth::ApiKey {
                inject: Inject::Header,
                name,
                value_key,
            } => Ok((
                Credential::Header(name.clone(), header(self.values[value_key].clone())?),
                None,
            )),
            Auth::ApiKey {
                inject: Inject::Query,
                name,
                value_key,
            } => Ok((
                Credential::Query(name.clone(), self.values[value_key].clone()),
                None,
            )),
            Auth::Basic {
                username_key,
                password_key,
            } => {
                use base64::Engine;
                let pair = format!(
                    "{}:{}",
                    self.values[username_key], self.values[password_key]
                );
                let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
                Ok((
                    Credential::Header(AUTHORIZATION.to_string(), header(format!("Basic {b64}"))?),
                    None,
                ))
            }
            Auth::OAuth2(o) => {
                let (token, base) = self.access_token(http, o, stale).await?;
                Ok((
                    Credential::Header(
                        AUTHORIZATION.to_string(),
                        header(format!("Bearer {token}"))?,
                    ),
                    base,
                ))
            }
        }
    }

    /// Whose access token: the token URL, the grant, every credential
    /// (the secret too: a source with another secret gets its own token)
    /// and the scopes.
    fn cache_key(&self, o: &OAuth2) -> u64 {
        let mut h = DefaultHasher::new();
        o.token_url.as_str().hash(&mut h);
        matches!(o.grant, Grant::RefreshToken).hash(&mut h);
        self.values.get(&o.client_id_key).hash(&mut h);
        self.values.get(&o.client_secret_key).hash(&mut h);
        self.refresh.borrow().hash(&mut h);
        o.scopes.hash(&mut h);
        h.finish()
    }

    async fn access_token(
        &self,
        http: &HttpClient,
        o: &OAuth2,
        stale: bool,
    ) -> Result<(String, Option<String>)> {
        let key = self.cache_key(o);
        if !stale {
            if let Some(c) = tokens::get(key, EARLY) {
                return Ok((c.token, c.extra));
            }
        }
        let body = self.token_request(http, o).await?;
        // A new refresh token first: the one sent may no longer work, so
        // it is stored before anything else can fail.
        let rotated = body
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && Some(*r) != self.refresh.borrow().as_deref())
            .map(str::to_owned);
        if let Some(r) = rotated {
            http.credential_rotated(&o.refresh_token_key, &r);
            *self.refresh.borrow_mut() = Some(r);
        }
        let token = body
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                CrmError::bad_response("the token endpoint's answer has no access_token")
                    .with_endpoint(format!("POST {}", o.token_url.path()))
            })?
            .to_owned();
        let expires = body
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(3_600);
        let base = o
            .base_url_from
            .as_ref()
            .and_then(|f| body.get(f))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // A rotated refresh token makes another key.
        tokens::forget(key);
        tokens::put(
            self.cache_key(o),
            token.clone(),
            base.clone(),
            Duration::from_secs(expires.clamp(1, 86_400 * 30)),
        );
        Ok((token, base))
    }

    /// POST the token endpoint; a refresh token refused as `invalid_grant`
    /// is tried once more with the one stored now (another session may
    /// have rotated it).
    async fn token_request(&self, http: &HttpClient, o: &OAuth2) -> Result<Value> {
        let endpoint = format!("POST {}", o.token_url.path());
        for attempt in 0..2 {
            let refresh = self.refresh.borrow().clone();
            let mut form: Vec<(&str, String)> = match o.grant {
                Grant::RefreshToken => vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", refresh.clone().unwrap_or_default()),
                ],
                Grant::ClientCredentials => vec![("grant_type", "client_credentials".into())],
            };
            if !o.scopes.is_empty() {
                form.push(("scope", o.scopes.join(" ")));
            }
            let (id, secret) = (
                self.values[&o.client_id_key].clone(),
                self.values[&o.client_secret_key].clone(),
            );
            if !o.client_basic {
                form.push(("client_id", id.clone()));
                form.push(("client_secret", secret.clone()));
            }
            let r = http
                .send_with(
                    &endpoint,
                    || {
                        let b = http
                            .request(Method::POST, o.token_url.clone())
                            .header(reqwest::header::ACCEPT, "application/json")
                            .form(&form);
                        if o.client_basic {
                            b.basic_auth(&id, Some(&secret))
                        } else {
                            b
                        }
                    },
                    &|_| false,
                    // A refresh token may work once: never send it twice.
                    if o.grant == Grant::RefreshToken { 0 } else { 3 },
                )
                .await?;
            if r.status.is_success() {
                // Not through the shared parser: its error quotes the body,
                // which holds the new tokens.
                return serde_json::from_slice::<Value>(&r.body)
                    .ok()
                    .filter(Value::is_object)
                    .ok_or_else(|| {
                        CrmError::bad_response(format!(
                            "the token endpoint answered {} with a body that is not a JSON object",
                            r.status.as_u16()
                        ))
                        .with_endpoint(&endpoint)
                        .with_hint(
                            "Check the spec's token_url: it must be the OAuth 2.0 token endpoint.",
                        )
                    });
            }
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            let code = body.get("error").and_then(Value::as_str).unwrap_or("");
            if attempt == 0 && code == "invalid_grant" && o.grant == Grant::RefreshToken {
                if let Some(stored) = http.stored_credential(&o.refresh_token_key) {
                    if Some(&stored) != refresh.as_ref() {
                        *self.refresh.borrow_mut() = Some(stored);
                        continue;
                    }
                }
            }
            let kind = if r.status.is_client_error() {
                ErrorKind::Auth
            } else {
                ErrorKind::ServerError
            };
            return Err(CrmError::new(
                kind,
                format!("the token endpoint refused the credentials ({})", r.status.as_u16()),
            )
            .with_detail(body_excerpt(&r.body))
            .redact(
                &[Some(secret.as_str()), refresh.as_deref()]
                    .into_iter()
                    .flatten()
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>(),
            )
            .with_endpoint(endpoint)
            .with_hint("Check client_id, client_secret and refresh_token with crm_sync.alter_source(); a refresh token the provider rotated elsewhere must be given again."));
        }
        unreachable!("the loop returns")
    }

    /// Add `c` to a request.
    pub fn apply(b: RequestBuilder, c: &Credential) -> RequestBuilder {
        match c {
            Credential::Header(k, v) => b.header(k.as_str(), v.clone()),
            Credential::Query(k, v) => b.query(&[(k, v)]),
        }
    }
}

/// Whether `new` may replace `base` as the API's origin (a token
/// response's `api_domain`): https (or loopback http where allowed), and
/// the same host or a sibling under the same parent domain
/// (`api.pipedrive.com` → `acme.pipedrive.com`), never an IP address
/// unless it is the same one.
pub fn base_from_token(base: &Url, new: &str, http: &HttpClient) -> Result<Url> {
    // The value is not quoted: a spec could name any field of the token
    // response, the access token too.
    let refuse = |why: &str| {
        CrmError::bad_response(format!(
            "the token response named an address for the API which {why}; not sending requests there"
        ))
        .with_hint("Check the spec's base_url_from.")
    };
    let u = Url::parse(new).map_err(|_| refuse("is not a URL"))?;
    http.check_url(&u)?;
    let (Some(a), Some(b)) = (base.host_str(), u.host_str()) else {
        return Err(refuse("has no host"));
    };
    let parent = |h: &str| h.split_once('.').map(|(_, p)| p.to_owned());
    let same = a == b;
    let sibling = matches!(base.host(), Some(url::Host::Domain(_)))
        && matches!(u.host(), Some(url::Host::Domain(_)))
        && parent(a).is_some_and(|p| p.contains('.') && parent(b).as_deref() == Some(p.as_str()));
    if !(same || sibling) {
        return Err(refuse(&format!("is not {a} or a host beside it")));
    }
    let mut out = base.clone();
    out.set_scheme(u.scheme())
        .map_err(|_| refuse("has another scheme"))?;
    out.set_host(Some(b))
        .map_err(|_| refuse("has a bad host"))?;
    out.set_port(u.port())
        .map_err(|_| refuse("has a bad port"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        Spec::parse(&json!({
            "base_url": "https://api.pipedrive.com",
            "auth": [
                {"type": "api_key", "in": "header", "name": "x-api-token", "credential": "api_token"},
                {"type": "oauth2", "token_url": "https://oauth.pipedrive.com/oauth/token", "client_auth": "basic", "base_url_from": "api_domain"}
            ],
            "streams": [{"name": "p", "request": {"path": "/p"}, "records": {"primary_key": "id"}, "paging": {"type": "none"}}]
        }))
        .unwrap()
    }

    #[test]
    fn the_first_complete_way_is_chosen() {
        let s = spec();
        let a = Authn::choose(
            &s,
            "spec \"x\"",
            json!({"api_token": "t"}).as_object().unwrap(),
        )
        .unwrap();
        assert!(!a.is_oauth());
        let a = Authn::choose(
            &s,
            "spec \"x\"",
            json!({"client_id": "i", "client_secret": "s", "refresh_token": "r"})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(a.is_oauth());
        let e = Authn::choose(
            &s,
            "spec \"x\"",
            json!({"client_id": "i"}).as_object().unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "spec \"x\" needs credentials for one of: api_key (api_token); oauth2 (client_id, client_secret, refresh_token)"
        );
        assert_eq!(format!("{a:?}"), "Authn(oauth2)");
    }

    #[test]
    fn a_token_may_move_the_api_to_a_sibling_host_only() {
        let http = HttpClient::new(Default::default()).unwrap();
        let base = Url::parse("https://api.pipedrive.com/").unwrap();
        let u = base_from_token(&base, "https://acme.pipedrive.com", &http).unwrap();
        assert_eq!(u.as_str(), "https://acme.pipedrive.com/");
        assert!(base_from_token(&base, "https://evil.example.com", &http).is_err());
        assert!(base_from_token(&base, "https://pipedrive.com.evil.io", &http).is_err());
        assert!(base_from_token(&base, "http://acme.pipedrive.com", &http).is_err());
        // A one-label parent (".com") is no family.
        let base = Url::parse("https://example.com/").unwrap();
        assert!(base_from_token(&base, "https://other.com", &http).is_err());
        let base = Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(base_from_token(&base, "http://127.0.0.2:9", &http).is_err());
        assert!(base_from_token(&base, "http://127.0.0.1:10", &http).is_ok());
    }
}
