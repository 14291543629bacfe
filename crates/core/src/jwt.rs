//! RS256-signed JSON Web Tokens, as OAuth 2.0 assertions (RFC 7523): the
//! Salesforce JWT bearer flow and Microsoft Entra ID certificate
//! credentials sign theirs here.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::sha2::{Digest, Sha256};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde_json::Value;

use crate::error::{CrmError, Result};

/// An RSA private key in PEM (PKCS#8 or PKCS#1); `hint` says which key.
pub fn parse_key(pem: &str, hint: &str) -> Result<RsaPrivateKey> {
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            CrmError::config("credentials.private_key is not an RSA private key in PEM form")
                .with_hint(hint.to_owned())
        })
}

/// `header.claims.signature`, each part base64url, signed RS256.
pub fn sign_rs256(header: &Value, claims: &Value, key: &RsaPrivateKey) -> Result<String> {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = SigningKey::<Sha256>::new(key.clone())
        .try_sign(input.as_bytes())
        .map_err(|_| {
            CrmError::config("could not sign the JWT assertion with credentials.private_key")
        })?;
    Ok(format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    ))
}

/// The DER bytes of the first certificate of a PEM text.
pub fn certificate_der(pem: &str) -> Result<Vec<u8>> {
    let bad = || {
        CrmError::config("credentials.certificate is not an X.509 certificate in PEM form")
            .with_hint("Pass the certificate uploaded to the app registration, as PEM text beginning with -----BEGIN CERTIFICATE-----.")
    };
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|r| r.split("-----END CERTIFICATE-----").next())
        .ok_or_else(bad)?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD.decode(b64).map_err(|_| bad())?;
    // A DER SEQUENCE, as every certificate is.
    if der.first() != Some(&0x30) || der.len() < 64 {
        return Err(bad());
    }
    Ok(der)
}

/// The certificate's SHA-256 thumbprint, base64url: the `x5t#S256` header.
pub fn thumbprint_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_read_from_pem_and_thumbprinted() {
        let der: Vec<u8> = std::iter::once(0x30)
            .chain((0..99).map(|i| i as u8))
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(&der)
        );
        assert_eq!(certificate_der(&pem).unwrap(), der);
        let t = thumbprint_s256(&der);
        assert_eq!(t.len(), 43);
        assert_eq!(t, URL_SAFE_NO_PAD.encode(Sha256::digest(&der)));
        assert!(
            certificate_der("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----").is_err()
        );
        assert!(certificate_der("not a pem").is_err());
    }
}
