//! How requests to HubSpot authenticate: a static bearer token (a private
//! app's access token, a service key, a personal access key), or a public
//! app's OAuth 2.0 refresh-token flow.
//!
//! OAuth access tokens last 30 minutes (`expires_in`); they are kept in
//! this backend's memory only (never stored), shared by the syncs of the
//! same app and refresh token, refreshed five minutes before they expire
//! and once more when HubSpot answers 401. The token endpoint is v3
//! (`POST /oauth/v3/token`, parameters in the form body): v1 is deprecated
//! on 16 February 2027. A refresh that returns another refresh token
//! (rotation) is kept for the run and handed at once to
//! [`HttpClient::credential_rotated`], for the extension to store.
//! <https://developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide>,
//! <https://developers.hubspot.com/changelog/upcoming-expiration-of-oauth-access-tokens-is-changing>

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::Url;

use crate::error::{CrmError, ErrorKind, Result};
use crate::http::{body_excerpt, HttpClient};

pub const CREDENTIALS_HINT: &str = "Pass a private app's access token, a service key or a personal access key: credentials => '{\"access_token\": \"pat-...\"}'; or a public app's OAuth credentials: '{\"client_id\": \"...\", \"client_secret\": \"...\", \"refresh_token\": \"...\"}'.";

/// Refresh this long before a token expires.
const EARLY: Duration = Duration::from_secs(300);

/// A public app's OAuth 2.0 credentials.
pub struct OAuth {
    client_id: String,
    client_secret: String,
    refresh_token: RefCell<String>,
}

/// How requests authenticate.
pub enum Auth {
    Bearer(String),
    OAuth(OAuth),
}

/// Names the kind only: both hold secrets.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Bearer(_) => "Auth::Bearer",
            Auth::OAuth(_) => "Auth::OAuth",
        })
    }
}

/// Access tokens of this process, by app, refresh token and host.
static TOKENS: Mutex<Option<HashMap<u64, (String, Instant)>>> = Mutex::new(None);

impl Auth {
    /// The way `credentials` describe; errors name keys, never values.
    pub fn from_credentials(creds: &Map<String, Value>) -> Result<Auth> {
        let get = |k: &str| -> Result<Option<String>> {
            match creds.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(_) => Err(CrmError::config(format!(
                    "credentials.{k} must be a non-empty string"
                ))
                .with_hint(CREDENTIALS_HINT)),
            }
        };
        let token = get("access_token")?;
        let (id, secret, refresh) = (
            get("client_id")?,
            get("client_secret")?,
            get("refresh_token")?,
        );
        match (token, id, secret, refresh) {
            (Some(t), None, None, None) => Ok(Auth::Bearer(t)),
            (None, Some(client_id), Some(client_secret), Some(refresh_token)) => {
                Ok(Auth::OAuth(OAuth {
                    client_id,
                    client_secret,
                    refresh_token: RefCell::new(refresh_token),
                }))
            }
            (None, None, None, None) => Err(CrmError::config(
                "provider hubspot needs credentials.access_token, or client_id, client_secret and refresh_token",
            )
            .with_hint(CREDENTIALS_HINT)),
            _ => Err(CrmError::config(
                "credentials mix an access token and OAuth keys, or lack one of client_id, client_secret, refresh_token",
            )
            .with_hint(CREDENTIALS_HINT)),
        }
    }

    /// Names whose request budget the calls spend: the host and the token
    /// (or the OAuth app), hashed.
    pub fn budget_key(&self, base: &str) -> u64 {
        let mut h = DefaultHasher::new();
        base.hash(&mut h);
        match self {
            Auth::Bearer(t) => t.hash(&mut h),
            Auth::OAuth(o) => o.client_id.hash(&mut h),
        }
        h.finish().max(1)
    }

    /// The bearer token to send now: the static one, or a valid OAuth
    /// access token (refreshed when `stale`, after a 401, or near expiry).
    pub async fn bearer(&self, http: &HttpClient, base: &Url, stale: bool) -> Result<String> {
        let o = match self {
            Auth::Bearer(t) => return Ok(t.clone()),
            Auth::OAuth(o) => o,
        };
        let key = o.key(base);
        if !stale {
            let cache = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, until)) = cache.as_ref().and_then(|c| c.get(&key)) {
                if Instant::now() + EARLY < *until {
                    return Ok(t.clone());
                }
            }
        }
        let (token, until, rotated) = o.refresh(http, base).await?;
        let mut cache = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        cache.remove(&key);
        if let Some(r) = rotated {
            http.credential_rotated("refresh_token", &r);
            *o.refresh_token.borrow_mut() = r;
        }
        cache.insert(o.key(base), (token.clone(), until));
        Ok(token)
    }
}

impl OAuth {
    fn key(&self, base: &Url) -> u64 {
        let mut h = DefaultHasher::new();
        (
            base.as_str(),
            &self.client_id,
            &self.client_secret,
            &*self.refresh_token.borrow(),
        )
            .hash(&mut h);
        h.finish()
    }

    /// `POST /oauth/v3/token` with the refresh token: a new access token,
    /// when it expires, and the new refresh token if HubSpot rotated it.
    async fn refresh(
        &self,
        http: &HttpClient,
        base: &Url,
    ) -> Result<(String, Instant, Option<String>)> {
        let url = base.join("oauth/v3/token").expect("relative path");
        let endpoint = "POST /oauth/v3/token";
        let current = self.refresh_token.borrow().clone();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("refresh_token", current.as_str()),
        ];
        let resp = http
            .send(endpoint, || {
                http.request(Method::POST, url.clone()).form(&form)
            })
            .await
            .map_err(|e| e.redact(&[&self.client_secret, &current]))?;
        if !resp.status.is_success() {
            #[derive(Deserialize, Default)]
            struct Refused {
                #[serde(default)]
                status: String,
                #[serde(default)]
                message: String,
            }
            let r: Refused = serde_json::from_slice(&resp.body).unwrap_or_default();
            let code = if r.status.is_empty() {
                format!("HTTP {}", resp.status.as_u16())
            } else {
                format!("HTTP {} {}", resp.status.as_u16(), r.status)
            };
            let hint = if r.status == "BAD_REFRESH_TOKEN" || resp.status == StatusCode::BAD_REQUEST
            {
                "The refresh token was revoked (the app was uninstalled, or the token was deleted) or belongs to another app: authorize the app again and set credentials.refresh_token with crm_sync.alter_source()."
            } else {
                "Check credentials.client_id and client_secret against the app's settings in HubSpot."
            };
            let detail = if r.message.is_empty() {
                body_excerpt(&resp.body)
            } else {
                r.message
            };
            return Err(CrmError::new(
                ErrorKind::Auth,
                format!("HubSpot refused to refresh the OAuth access token ({code})"),
            )
            .with_endpoint(endpoint)
            .with_detail(detail)
            .with_hint(hint)
            .redact(&[&self.client_secret, &current]));
        }
        #[derive(Deserialize)]
        struct Granted {
            #[serde(alias = "accessToken")]
            access_token: String,
            #[serde(alias = "refreshToken", default)]
            refresh_token: Option<String>,
            #[serde(alias = "expiresIn", default)]
            expires_in: Option<u64>,
        }
        // Not through the shared parser: its error quotes the body, which
        // holds the new tokens.
        let g: Granted = serde_json::from_slice(&resp.body).map_err(|_| {
            CrmError::bad_response(
                "HubSpot's token response is not the JSON expected (access_token, expires_in)",
            )
            .with_endpoint(endpoint)
        })?;
        if g.access_token.trim().is_empty() {
            return Err(CrmError::bad_response(
                "HubSpot's token response has an empty access_token",
            )
            .with_endpoint(endpoint));
        }
        // 30 minutes when HubSpot does not say.
        let until = Instant::now() + Duration::from_secs(g.expires_in.unwrap_or(1800).min(86_400));
        let rotated = g.refresh_token.filter(|r| !r.is_empty() && *r != current);
        Ok((g.access_token, until, rotated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn creds(v: Value) -> Result<Auth> {
        Auth::from_credentials(v.as_object().unwrap())
    }

    #[test]
    fn credentials_pick_a_bearer_token_or_oauth() {
        assert!(matches!(
            creds(json!({"access_token": "pat-1"})).unwrap(),
            Auth::Bearer(_)
        ));
        let o =
            creds(json!({"client_id": "c", "client_secret": "s", "refresh_token": "r"})).unwrap();
        assert!(matches!(o, Auth::OAuth(_)));
        for bad in [
            json!({}),
            json!({"access_token": "pat-1", "refresh_token": "r"}),
            json!({"client_id": "c", "refresh_token": "r"}),
            json!({"access_token": ""}),
            json!({"access_token": 5}),
        ] {
            let e = creds(bad.clone()).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidConfig, "{bad}");
            assert!(e.hint.unwrap().contains("service key"));
            assert!(!e.message.contains("pat-1"));
        }
    }
}
