//! OAuth 2.0 at `{login_url}/services/oauth2/token`, the three flows a
//! server-side integration uses, and a per-source session cache.
//!
//! - Refresh token flow: `client_id`, `refresh_token` (+ `client_secret` when
//!   the connected app requires it).
//! - Client credentials flow: `client_id`, `client_secret`; Salesforce only
//!   serves it at the org's My Domain URL, so `options.login_url` must be that.
//! - JWT bearer flow: `client_id`, `username`, `private_key` (PEM, RSA); we
//!   sign an RS256 assertion with `iss`, `sub`, `aud`, `exp`.
//!
//! The token response has `access_token` and `instance_url` (where API calls
//! go) and no `expires_in`: a session lasts until Salesforce says otherwise
//! with a 401 `INVALID_SESSION_ID`, upon which the caller logs in again once.
//! <https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_flows.htm>
//!
//! With refresh token rotation on (a connected app or external client app
//! setting), each refresh returns a new `refresh_token` and the one sent is
//! invalidated; the new one is handed to
//! [`HttpClient::credential_rotated`] the moment it arrives (NetCoreForce
//! #94 is the bug of a client that dropped it).
//! <https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm>

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use reqwest::Method;
use rsa::RsaPrivateKey;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use url::Url;

use crate::error::{CrmError, ErrorKind, Result};
use crate::http::HttpClient;

const FLOWS_HINT: &str = "Salesforce sources take one of: {\"client_id\", \"refresh_token\"[, \"client_secret\"]} (refresh token flow), {\"client_id\", \"client_secret\"} (client credentials flow), or {\"client_id\", \"username\", \"private_key\"} (JWT bearer flow).";

/// How a source logs in.
#[derive(Clone)]
pub enum Flow {
    RefreshToken {
        client_id: String,
        client_secret: Option<String>,
        refresh_token: String,
    },
    ClientCredentials {
        client_id: String,
        client_secret: String,
    },
    JwtBearer {
        client_id: String,
        username: String,
        key: Box<RsaPrivateKey>,
        /// The PEM text, kept only to tell sources apart in the cache.
        pem: String,
    },
}

/// Names the flow only: a flow holds secrets.
impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flow({})", self.name())
    }
}

impl Flow {
    /// Pick the flow the credentials describe; errors name keys, never values.
    pub fn from_credentials(creds: &Map<String, Value>) -> Result<Flow> {
        for (k, v) in creds {
            if !v.is_string() {
                return Err(
                    CrmError::config(format!("credentials.{k} must be a string"))
                        .with_hint(FLOWS_HINT),
                );
            }
        }
        let get = |k: &str| {
            creds
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_owned)
        };
        let client_id = get("client_id").ok_or_else(|| {
            CrmError::config("provider salesforce needs credentials.client_id (the connected app's consumer key)")
                .with_hint(FLOWS_HINT)
        })?;
        match (
            get("refresh_token"),
            get("private_key"),
            get("username"),
            get("client_secret"),
        ) {
            (Some(_), Some(_), _, _) => Err(CrmError::config(
                "credentials hold both refresh_token and private_key; give the ones of one flow",
            )
            .with_hint(FLOWS_HINT)),
            (Some(refresh_token), None, _, client_secret) => Ok(Flow::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            }),
            (None, Some(pem), Some(username), _) => {
                let key = parse_key(&pem)?;
                Ok(Flow::JwtBearer {
                    client_id,
                    username,
                    key: Box::new(key),
                    pem,
                })
            }
            (None, Some(_), None, _) => Err(CrmError::config(
                "the JWT bearer flow needs credentials.username (the Salesforce user to act as)",
            )
            .with_hint(FLOWS_HINT)),
            (None, None, _, Some(client_secret)) => Ok(Flow::ClientCredentials {
                client_id,
                client_secret,
            }),
            (None, None, _, None) => Err(CrmError::config(
                "credentials name no login flow: add refresh_token, client_secret, or username and private_key",
            )
            .with_hint(FLOWS_HINT)),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Flow::RefreshToken { .. } => "refresh token",
            Flow::ClientCredentials { .. } => "client credentials",
            Flow::JwtBearer { .. } => "JWT bearer",
        }
    }

    fn form(&self, audience: &str) -> Result<Vec<(&'static str, String)>> {
        Ok(match self {
            Flow::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => {
                let mut f = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("client_id", client_id.clone()),
                    ("refresh_token", refresh_token.clone()),
                ];
                if let Some(s) = client_secret {
                    f.push(("client_secret", s.clone()));
                }
                f
            }
            Flow::ClientCredentials {
                client_id,
                client_secret,
            } => vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.clone()),
            ],
            Flow::JwtBearer {
                client_id,
                username,
                key,
                ..
            } => vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
                ),
                (
                    "assertion",
                    jwt_assertion(
                        client_id,
                        username,
                        audience,
                        key,
                        chrono::Utc::now().timestamp(),
                    )?,
                ),
            ],
        })
    }

    /// A fingerprint of everything that identifies the session this flow
    /// yields; used as the cache key, so changed credentials log in afresh.
    fn fingerprint(&self, login_url: &str) -> u64 {
        let mut h = DefaultHasher::new();
        login_url.hash(&mut h);
        match self {
            Flow::RefreshToken {
                client_id,
                client_secret,
                refresh_token,
            } => (1, client_id, client_secret, refresh_token).hash(&mut h),
            Flow::ClientCredentials {
                client_id,
                client_secret,
            } => (2, client_id, client_secret).hash(&mut h),
            Flow::JwtBearer {
                client_id,
                username,
                pem,
                ..
            } => (3, client_id, username, pem).hash(&mut h),
        }
        h.finish()
    }
}

fn parse_key(pem: &str) -> Result<RsaPrivateKey> {
    crate::jwt::parse_key(pem, "Pass the key whose certificate is uploaded to the connected app, as PEM text beginning with -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----.")
}

/// An RS256-signed assertion for the JWT bearer flow, valid 3 minutes
/// (Salesforce accepts `exp` at most 3 minutes ahead plus clock skew).
/// <https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm>
pub fn jwt_assertion(
    client_id: &str,
    username: &str,
    audience: &str,
    key: &RsaPrivateKey,
    now: i64,
) -> Result<String> {
    let claims = json!({"iss": client_id, "sub": username, "aud": audience, "exp": now + 180});
    crate::jwt::sign_rs256(&json!({"alg": "RS256"}), &claims, key)
}

/// A logged-in session.
#[derive(Clone)]
pub struct Session {
    pub access_token: String,
    pub instance_url: Url,
}

/// Sessions by [`Flow::fingerprint`], shared by every sync in this backend.
static SESSIONS: Mutex<Option<HashMap<u64, Session>>> = Mutex::new(None);

/// Refresh tokens rotated in this backend: the fingerprint of the flow with
/// the spent token → its successor. A later connection of the same call
/// (the next stream, the reconciliation after a sync) still holds the
/// credentials as loaded, with the spent token; it follows the chain.
static ROTATIONS: Mutex<Option<HashMap<u64, String>>> = Mutex::new(None);

pub fn cached(key: u64) -> Option<Session> {
    SESSIONS.lock().ok()?.as_ref()?.get(&key).cloned()
}

fn store(key: u64, s: &Session) {
    if let Ok(mut g) = SESSIONS.lock() {
        g.get_or_insert_with(HashMap::new).insert(key, s.clone());
    }
}

pub fn forget(key: u64) {
    if let Ok(mut g) = SESSIONS.lock() {
        if let Some(m) = g.as_mut() {
            m.remove(&key);
        }
    }
}

/// How one source logs in. With refresh token rotation on, each login
/// returns a new refresh token and the one sent stops working: the flow
/// takes the new one for the rest of the connection, and the HTTP client's
/// rotation hook stores it at once.
pub struct Login {
    pub login_url: Url,
    pub audience: String,
    flow: RefCell<Flow>,
    key: Cell<u64>,
}

impl Login {
    pub fn new(login_url: Url, audience: String, mut flow: Flow) -> Login {
        if let Ok(g) = ROTATIONS.lock() {
            if let Some(chain) = g.as_ref() {
                // Bounded: a chain is as long as the logins of this backend.
                for _ in 0..64 {
                    let Some(newer) = chain.get(&flow.fingerprint(login_url.as_str())) else {
                        break;
                    };
                    if let Flow::RefreshToken { refresh_token, .. } = &mut flow {
                        *refresh_token = newer.clone();
                    }
                }
            }
        }
        let key = flow.fingerprint(login_url.as_str());
        Login {
            login_url,
            audience,
            flow: RefCell::new(flow),
            key: Cell::new(key),
        }
    }

    /// The session cache key of the credentials in use now.
    pub fn key(&self) -> u64 {
        self.key.get()
    }

    /// Take the refresh token a token response carried, if it is new.
    fn rotate(&self, http: &HttpClient, new: Option<String>) {
        let Some(new) = new.filter(|r| !r.trim().is_empty()) else {
            return;
        };
        let mut flow = self.flow.borrow_mut();
        let Flow::RefreshToken { refresh_token, .. } = &mut *flow else {
            return;
        };
        if *refresh_token == new {
            return;
        }
        http.credential_rotated("refresh_token", &new);
        let spent = flow.fingerprint(self.login_url.as_str());
        if let Ok(mut g) = ROTATIONS.lock() {
            g.get_or_insert_with(HashMap::new)
                .insert(spent, new.clone());
        }
        let Flow::RefreshToken { refresh_token, .. } = &mut *flow else {
            return;
        };
        *refresh_token = new;
        self.key.set(flow.fingerprint(self.login_url.as_str()));
    }

    /// Take the refresh token stored now, if it differs from the one just
    /// refused: another session rotated it since this one loaded the
    /// credentials (two streams of a source synced in parallel).
    fn take_stored(&self, http: &HttpClient) -> bool {
        let Some(stored) = http.stored_credential("refresh_token") else {
            return false;
        };
        let mut flow = self.flow.borrow_mut();
        let Flow::RefreshToken { refresh_token, .. } = &mut *flow else {
            return false;
        };
        if stored.trim().is_empty() || *refresh_token == stored {
            return false;
        }
        *refresh_token = stored;
        self.key.set(flow.fingerprint(self.login_url.as_str()));
        true
    }

    /// `POST /services/oauth2/token`. A refresh token refused as
    /// `invalid_grant` is tried once more with the one stored now, if that
    /// is another.
    pub async fn login(&self, http: &HttpClient) -> Result<Session> {
        match self.login_once(http).await {
            Err(e) if e.code.as_deref() == Some("invalid_grant") && self.take_stored(http) => {
                self.login_once(http).await
            }
            r => r,
        }
    }

    async fn login_once(&self, http: &HttpClient) -> Result<Session> {
        let url = self
            .login_url
            .join("/services/oauth2/token")
            .expect("absolute path");
        let endpoint = "POST /services/oauth2/token";
        let form = self.flow.borrow().form(&self.audience)?;
        let flow_name = self.flow.borrow().name();
        let resp = http
            .send(endpoint, || {
                http.request(Method::POST, url.clone())
                    .header("Accept", "application/json")
                    .form(&form)
            })
            .await?;
        if !resp.status.is_success() {
            #[derive(Deserialize, Default)]
            struct OAuthError {
                #[serde(default)]
                error: String,
                #[serde(default)]
                error_description: String,
            }
            let e: OAuthError = serde_json::from_slice(&resp.body).unwrap_or_default();
            let what = if e.error.is_empty() {
                format!("HTTP {}", resp.status.as_u16())
            } else {
                format!("{}: {}", e.error, e.error_description)
            };
            let hint = match e.error.as_str() {
                "invalid_grant" => match &*self.flow.borrow() {
                    Flow::RefreshToken { .. } => "The refresh token was revoked or expired: authorize the connected app again and store the new token with crm_sync.alter_source(name, credentials => '{\"refresh_token\": \"...\"}').",
                    Flow::JwtBearer { .. } => "Check credentials.username, that the user is pre-authorized for the connected app, that the app holds the certificate of credentials.private_key, and options.jwt_audience.",
                    Flow::ClientCredentials { .. } => "Check that the connected app enables the client credentials flow and names a run-as user, and that options.login_url is the org's My Domain URL.",
                },
                "invalid_client_id" | "invalid_client" => "Check credentials.client_id and client_secret: they are the connected app's consumer key and secret.",
                _ => "Check the source's credentials and options.login_url.",
            };
            let kind = if resp.status.is_client_error() {
                ErrorKind::Auth
            } else {
                ErrorKind::ServerError
            };
            return Err(CrmError::new(
                kind,
                format!("Salesforce login ({flow_name} flow) failed ({what})"),
            )
            .with_endpoint(endpoint)
            .with_code(e.error)
            .with_hint(hint));
        }
        #[derive(Deserialize)]
        struct Token {
            access_token: String,
            instance_url: String,
            /// Only with refresh token rotation on.
            #[serde(default)]
            refresh_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&resp.body).map_err(|e| {
            // Never any of the body: it may hold a session token.
            CrmError::bad_response(format!(
                "Salesforce sent an unreadable token response ({})",
                e.classify_name()
            ))
            .with_endpoint(endpoint)
            .with_detail(format!(
                "HTTP {}, {} bytes, fields: {}",
                resp.status.as_u16(),
                resp.body.len(),
                key_names(&resp.body)
            ))
        })?;
        // The one sent is spent: keep the new refresh token whatever comes.
        self.rotate(http, t.refresh_token.clone());
        let mut instance_url = Url::parse(&t.instance_url).map_err(|e| {
            CrmError::bad_response(format!(
                "the token response's instance_url is not a URL ({e})"
            ))
            .with_endpoint(endpoint)
        })?;
        http.check_url(&instance_url)?;
        instance_url.set_path("/");
        let s = Session {
            access_token: t.access_token,
            instance_url,
        };
        store(self.key(), &s);
        Ok(s)
    }
}

/// The top-level keys of a JSON object body, or "none readable".
fn key_names(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => m.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => "none readable".to_owned(),
    }
}

trait Classify {
    fn classify_name(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        if self.is_eof() {
            "truncated"
        } else if self.is_data() {
            "missing access_token or instance_url"
        } else {
            "malformed"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::sha2::Sha256;
    use rsa::signature::Verifier;

    fn creds(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn flows_are_chosen_by_the_credentials_given() {
        let f = Flow::from_credentials(&creds(json!({"client_id": "c", "refresh_token": "r"})))
            .unwrap();
        assert_eq!(f.name(), "refresh token");
        let f = Flow::from_credentials(&creds(json!({"client_id": "c", "client_secret": "s"})))
            .unwrap();
        assert_eq!(f.name(), "client credentials");
        let e = Flow::from_credentials(&creds(json!({"client_id": "c", "private_key": "k"})))
            .unwrap_err();
        assert!(
            e.message.contains("needs credentials.username"),
            "{}",
            e.message
        );
        let e = Flow::from_credentials(&creds(
            json!({"client_id": "c", "username": "u", "private_key": "hunter2-not-a-key"}),
        ))
        .unwrap_err();
        assert!(e.message.contains("not an RSA private key"));
        assert!(!format!("{e:?}").contains("hunter2"));
        let e = Flow::from_credentials(&creds(json!({"refresh_token": "r"}))).unwrap_err();
        assert!(e.message.contains("client_id"));
        let e = Flow::from_credentials(&creds(json!({"client_id": "c"}))).unwrap_err();
        assert!(e.message.contains("no login flow"));
        let e = Flow::from_credentials(&creds(json!({"client_id": 1}))).unwrap_err();
        assert!(e.message.contains("must be a string"));
    }

    #[test]
    fn jwt_assertion_is_rs256_over_the_documented_claims() {
        let mut rng = rand_core_rng();
        let key = RsaPrivateKey::new(&mut rng, 1024).unwrap();
        let jwt = jwt_assertion(
            "cid",
            "user@example.com",
            "https://login.salesforce.com",
            &key,
            1_700_000_000,
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "cid", "sub": "user@example.com", "aud": "https://login.salesforce.com", "exp": 1_700_000_180})
        );
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let sig =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        let vk = VerifyingKey::<Sha256>::new(key.to_public_key());
        vk.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        assert!(vk.verify(b"tampered", &sig).is_err());
    }

    #[test]
    fn fingerprints_change_with_the_secret() {
        let a = Flow::from_credentials(&creds(json!({"client_id": "c", "refresh_token": "r1"})))
            .unwrap();
        let b = Flow::from_credentials(&creds(json!({"client_id": "c", "refresh_token": "r2"})))
            .unwrap();
        assert_ne!(a.fingerprint("https://x"), b.fingerprint("https://x"));
        assert_eq!(
            a.fingerprint("https://x"),
            a.clone().fingerprint("https://x")
        );
    }

    #[test]
    fn token_errors_show_keys_never_values() {
        let s = key_names(br#"{"access_token":"00Dxx!secret","instance_url":5}"#);
        assert_eq!(s, "access_token, instance_url");
        assert_eq!(
            key_names(br#"{"access_token":"00Dxx!secr"#),
            "none readable"
        );
    }

    /// A deterministic RNG for key generation in tests.
    fn rand_core_rng() -> impl rsa::rand_core::CryptoRngCore {
        struct Xs(u64);
        impl rsa::rand_core::RngCore for Xs {
            fn next_u32(&mut self) -> u32 {
                self.next_u64() as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                for b in dest {
                    *b = self.next_u64() as u8;
                }
            }
            fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        impl rsa::rand_core::CryptoRng for Xs {}
        Xs(0x9E37_79B9_7F4A_7C15)
    }
}
