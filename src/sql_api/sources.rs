//! What `crm_sync.create_source()` and `alter_source()` (sql/sources.sql)
//! ask of Rust: the provider's check of options and credentials, and the
//! streams a new source gets.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::{self, secret_strings, Context, OrRaise};
use crate::{catalog, secrets};
use crm_sync_core::config::has_secret_refs;
use crm_sync_core::connectors;
use crm_sync_core::connectors::rest::spec::Spec;

/// Raise if `options`/`credentials` do not suit `provider`. Used by
/// create_source and alter_source.
#[pg_extern(name = "_check_source")]
pub fn check_source(name: &str, provider: &str, options: JsonB, credentials: JsonB) {
    let mut ctx = Context {
        source: Some(name.to_owned()),
        stream: None,
        secrets: secret_strings(&credentials.0),
    };
    let creds = secrets::resolve(&credentials.0).or_raise(&ctx);
    ctx.secrets = secret_strings(&creds);
    let spec = catalog::load_spec(provider);
    crate::sync::configure(provider, spec.as_ref(), &options.0, &creds).or_raise(&ctx);
}

/// The streams a spec describes, for crm_sync.discover-like listings.
fn spec_streams(spec: &serde_json::Value) -> Vec<(String, String)> {
    Spec::parse(spec)
        .map(|s| {
            s.streams
                .iter()
                .map(|t| (t.name.clone(), t.name.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The spec a source of `provider` with `options` runs, if any.
fn spec_for(provider: &str, options: &serde_json::Value) -> Option<serde_json::Value> {
    if provider == connectors::rest::PROVIDER.name {
        return options.get("spec").cloned();
    }
    catalog::load_spec(provider)
}

/// Raise unless the caller may give these credentials: references
/// (`{"env": ...}`, `{"file": ...}`) read the server's environment and
/// files, so only a superuser may give them. Used by create_source and
/// alter_source on the credentials a call gives.
#[pg_extern(name = "_check_credential_refs")]
pub fn check_credential_refs(name: &str, given: JsonB) {
    if has_secret_refs(&given.0) && !super::access::caller_is_superuser() {
        errors::fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("source \"{name}\": only a superuser may give credentials by reference ({{\"env\": ...}}, {{\"file\": ...}})"),
            Some("They read the server's environment and files. Give the credential as a value, or ask a superuser."),
        );
    }
}

/// Why a stream of `object` cannot be synced from a source of `provider`,
/// known without asking the CRM (`crm_sync.add_stream` refuses it); NULL
/// when nothing says so.
#[pg_extern(name = "_object_refusal", stable)]
pub fn object_refusal(provider: &str, options: JsonB, object: &str) -> Option<String> {
    if let Some(spec) = spec_for(provider, &options.0) {
        let streams = spec_streams(&spec);
        if streams.iter().any(|(s, _)| s == object) {
            return None;
        }
        let names: Vec<&str> = streams.iter().map(|(s, _)| s.as_str()).collect();
        return Some(format!(
            "its spec has no stream {object:?} (its streams: {})",
            names.join(", ")
        ));
    }
    connectors::find(provider)
        .ok()
        .and_then(|p| (p.refuses)(object))
}

/// Which host option (`base_url`, `login_url`) changes origin between a
/// source's old and new options, as `key (old → new)`; NULL if none. Used
/// by alter_source: such a change needs new credentials.
#[pg_extern(name = "_host_change")]
pub fn host_change(provider: &str, old_options: JsonB, new_options: JsonB) -> Option<String> {
    if connectors::find(provider).is_err() || provider == connectors::rest::PROVIDER.name {
        let spec = catalog::load_spec(provider);
        return connectors::spec_origin_change(spec.as_ref(), &old_options.0, &new_options.0)
            .map(|(a, b)| format!("the hosts it calls ({a} → {b})"));
    }
    connectors::host_change(provider, &old_options.0, &new_options.0)
        .or_raise(&Context::default())
        .map(|(key, a, b)| format!("{key} ({a} → {b})"))
}

/// The streams a provider registers for a new source.
#[pg_extern(name = "_provider_streams")]
pub fn provider_streams(
    provider: &str,
    options: JsonB,
) -> TableIterator<'static, (name!(stream, String), name!(object, String))> {
    if let Some(spec) = spec_for(provider, &options.0) {
        return TableIterator::new(spec_streams(&spec));
    }
    let p = connectors::find(provider).or_raise(&Context::default());
    let rows: Vec<(String, String)> = p
        .streams
        .iter()
        .map(|s| (s.name.to_owned(), s.object.to_owned()))
        .collect();
    TableIterator::new(rows)
}
