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

/// An HTTP client for one call of `source`'s connector, whose rotated
/// credentials are stored the moment the CRM sends them ([`store_rotated`]).
pub fn http_client(
    source: &str,
    settings: crm_sync_core::http::HttpSettings,
) -> Result<crm_sync_core::http::HttpClient, CrmError> {
    let http = crm_sync_core::http::HttpClient::new(settings)?;
    let name = source.to_owned();
    http.on_credential_rotated(Box::new(move |key, value| store_rotated(&name, key, value)));
    let name = source.to_owned();
    http.on_credential_lookup(Box::new(move |key| {
        crate::catalog::stored_credential(&name, key)
    }));
    Ok(http)
}

/// Store a credential the CRM replaced (a rotated refresh token: the old
/// one no longer works), in a transaction of its own so that it survives a
/// sync that fails afterwards; if that cannot be (the source was created in
/// the caller's uncommitted transaction, or its row is locked), in the
/// caller's transaction. A key given by reference cannot be written here: a
/// WARNING says to update the referenced secret. Values never appear in
/// messages.
pub fn store_rotated(source: &str, key: &str, value: &str) {
    crate::errors::add_secret(value);
    // A newer value supersedes any older one still waiting.
    if let Ok(mut p) = PENDING.lock() {
        p.retain(|x| !(x.source == source && x.key == key));
    }
    if crate::own_txn::store_credential(source, key, value) {
        return;
    }
    // What is committed now: a retry replaces only that.
    let old = crate::catalog::stored_credential(source, key);
    if crate::catalog::update_credential(source, key, value, None) {
        // Only in this transaction: kept to try again on its own after a
        // failed run and at the next call (see `retry_pending`), in case
        // this one rolls back.
        if let Ok(mut p) = PENDING.lock() {
            p.push(Pending {
                source: source.to_owned(),
                key: key.to_owned(),
                old,
                value: value.to_owned(),
            });
        }
        return;
    }
    crate::report::warning!(
        "source \"{source}\": the CRM rotated credentials.{key}, which could not be stored (it is given by reference, or the source's row is not visible); put the new value where the reference points before the next sync"
    );
}

/// A rotated credential stored only in a transaction that may roll back,
/// and the value committed before it.
struct Pending {
    source: String,
    key: String,
    old: Option<String>,
    value: String,
}

static PENDING: std::sync::Mutex<Vec<Pending>> = std::sync::Mutex::new(Vec::new());

/// Store rotated credentials that only reached a transaction that may roll
/// back again, each in a transaction of its own, where the committed value
/// is still the one they replaced (never over a newer one). Done after a
/// failed run and at the start of every call; those that still cannot be
/// stored (no worker free, the row locked) wait for the next try, with a
/// WARNING when `warn`.
pub fn retry_pending(warn: bool) {
    let pending = match PENDING.lock() {
        Ok(mut p) => std::mem::take(&mut *p),
        Err(_) => return,
    };
    let mut left = Vec::new();
    for p in pending {
        if crate::own_txn::store_credential_over(&p.source, &p.key, &p.value, p.old.as_deref()) {
            continue;
        }
        if warn {
            crate::report::warning!(
                "source \"{}\": the CRM rotated credentials.{} during a run that failed, and the new value could not yet be stored on its own (no background worker free, or the row is locked); it is kept in this transaction and tried again at the next call",
                p.source,
                p.key
            );
        }
        left.push(p);
    }
    if let Ok(mut g) = PENDING.lock() {
        g.extend(left);
    }
}
