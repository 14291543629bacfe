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

/// Store credentials the CRM replaced during a run (a rotated refresh
/// token: the old one no longer works), in the run's transaction. A key
/// given by reference cannot be written here: a WARNING says to update
/// the referenced secret. Values never appear in messages.
pub fn store_rotated(source: &str, rotated: &serde_json::Map<String, serde_json::Value>) {
    use pgrx::prelude::*;
    for (key, value) in rotated {
        let Some(v) = value.as_str() else { continue };
        let stored = Spi::get_one_with_args::<bool>(
            "WITH u AS (
               UPDATE crm_sync.credentials c
                  SET credentials = pg_catalog.jsonb_set(c.credentials, ARRAY[$2], pg_catalog.to_jsonb($3::text))
                WHERE c.source = $1 AND pg_catalog.jsonb_typeof(c.credentials -> $2) = 'string'
               RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM u)",
            &[source.into(), key.as_str().into(), v.into()],
        )
        .ok()
        .flatten()
        .unwrap_or(false);
        if !stored {
            pgrx::warning!(
                "source \"{source}\": the CRM rotated credentials.{key}, which is given by reference and cannot be stored here; put the new value where the reference points before the next sync"
            );
        }
    }
}
