//! Credentials given by reference (`{"env": ...}`, `{"file": ...}`, see
//! `crm_sync_core::config::SecretRef`), read where the server runs, each
//! time a source is checked or synced.

use std::io::Read;

use crm_sync_core::config::{resolve_secrets, SecretRef};
use crm_sync_core::CrmError;

/// A secret file is a token or a key, not a document.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The credentials with every reference read.
pub fn resolve(credentials: &serde_json::Value) -> Result<serde_json::Value, CrmError> {
    resolve_secrets(credentials, &mut read)
}

fn read(r: &SecretRef) -> Result<String, String> {
    match r {
        SecretRef::Env(name) => {
            std::env::var(name).map_err(|_| "not set in the server's environment".to_owned())
        }
        SecretRef::File(path) => {
            let f =
                std::fs::File::open(path).map_err(|e| format!("cannot be read ({})", e.kind()))?;
            let mut s = String::new();
            f.take(MAX_SECRET_FILE + 1)
                .read_to_string(&mut s)
                .map_err(|e| format!("cannot be read ({})", e.kind()))?;
            if s.len() as u64 > MAX_SECRET_FILE {
                return Err("is larger than 64 kB".into());
            }
            Ok(s.trim_end_matches(['\n', '\r']).to_owned())
        }
    }
}
