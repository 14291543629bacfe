//! `POST /services/oauth2/token`: the refresh-token, client-credentials
//! and JWT bearer flows with Salesforce's response and error bodies.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::RsaPublicKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::server::{decode, parse_form, Request};

pub const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Audiences Salesforce accepts in a JWT (the mock's own URL too).
const AUDIENCES: &[&str] = &[
    "https://login.salesforce.com",
    "https://test.salesforce.com",
];

/// An OAuth error: (error, error_description).
pub type OAuthError = (&'static str, &'static str);

pub struct Client<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub refresh_token: Option<&'a str>,
    pub username: &'a str,
    pub public_key: Option<&'a RsaPublicKey>,
    pub own_url: &'a str,
}

pub fn load_public_key(pem: &str) -> Result<RsaPublicKey, String> {
    RsaPublicKey::from_public_key_pem(pem).map_err(|e| format!("bad public key: {e}"))
}

/// Form fields from the body (and the query string, which Salesforce
/// also reads).
pub fn form(req: &Request) -> Vec<(String, String)> {
    let mut out = parse_form(&String::from_utf8_lossy(&req.body));
    out.extend(req.query.iter().cloned());
    out
}

/// Check a grant; Ok is the scope to issue.
pub fn check(req: &Request, c: &Client) -> Result<&'static str, OAuthError> {
    let f = form(req);
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // Client credentials may come as HTTP Basic instead of form fields.
    let basic = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (basic_id, basic_secret) = match basic.as_deref().and_then(|b| b.split_once(':')) {
        Some((i, s)) => (Some(decode(i)), Some(decode(s))),
        None => (None, None),
    };
    let id = get("client_id").map(str::to_owned).or(basic_id);
    let secret = get("client_secret").map(str::to_owned).or(basic_secret);
    let bad_id = ("invalid_client_id", "client identifier invalid");
    let bad_secret = ("invalid_client", "invalid client credentials");
    match get("grant_type") {
        Some("refresh_token") => {
            if id.as_deref() != Some(c.client_id) {
                return Err(bad_id);
            }
            if secret.as_deref().is_some_and(|s| s != c.client_secret) {
                return Err(bad_secret);
            }
            match (get("refresh_token"), c.refresh_token) {
                (Some(t), Some(want)) if t == want => Ok("api refresh_token"),
                _ => Err(("invalid_grant", "expired access/refresh token")),
            }
        }
        Some("client_credentials") => {
            if id.as_deref() != Some(c.client_id) {
                return Err(bad_id);
            }
            if secret.as_deref() != Some(c.client_secret) {
                return Err(bad_secret);
            }
            Ok("api")
        }
        Some(JWT_GRANT) => jwt(get("assertion").unwrap_or(""), c).map(|_| "api"),
        _ => Err(("unsupported_grant_type", "grant type not supported")),
    }
}

/// The JWT bearer flow's checks, in Salesforce's words.
fn jwt(assertion: &str, c: &Client) -> Result<(), OAuthError> {
    let invalid = ("invalid_grant", "invalid assertion");
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid);
    }
    // Header and claims: base64url-encoded JSON.
    let json_part = |p: &str| -> Result<Value, OAuthError> {
        URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(invalid)
    };
    let header = json_part(parts[0])?;
    if header["alg"] != "RS256" {
        return Err(invalid);
    }
    let claims = json_part(parts[1])?;
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|_| invalid)?;
    let key = c.public_key.ok_or(invalid)?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|_| invalid)?;
    VerifyingKey::<Sha256>::new(key.clone())
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .map_err(|_| invalid)?;
    if claims["iss"].as_str() != Some(c.client_id) {
        return Err(("invalid_client_id", "client identifier invalid"));
    }
    let aud = claims["aud"].as_str().unwrap_or("").trim_end_matches('/');
    if !AUDIENCES.contains(&aud) && aud != c.own_url {
        return Err(("invalid_grant", "audience is invalid"));
    }
    let now = chrono::Utc::now().timestamp();
    if claims["exp"].as_i64().is_none_or(|e| e <= now) {
        return Err(("invalid_grant", "expired authorization code"));
    }
    if claims["sub"].as_str() != Some(c.username) {
        return Err(("invalid_grant", "user hasn't approved this consumer"));
    }
    Ok(())
}

/// The response's `signature`: base64 HMAC-SHA256 of id + issued_at keyed
/// with the client secret, as Salesforce documents.
pub fn signature(id: &str, issued_at: &str, secret: &str) -> String {
    STANDARD.encode(hmac_sha256(
        secret.as_bytes(),
        format!("{id}{issued_at}").as_bytes(),
    ))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(&opad)
        .chain_update(inner)
        .finalize()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        let out = hmac_sha256(&[0x0b; 20], b"Hi There");
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }
}
