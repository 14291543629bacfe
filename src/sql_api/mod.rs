//! The SQL-facing functions: thin wrappers that validate input, call the
//! engine and turn errors into Postgres errors (see `crate::errors`).

pub(crate) mod sync;

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::{Context, OrRaise};
use crate::gucs;
use crm_sync_core::config::SourceConfig;
use crm_sync_core::connectors::Provider;

/// Raise if `options`/`credentials` do not suit `provider`. Used by
/// create_source and alter_source.
#[pg_extern(name = "_check_source")]
pub fn check_source(name: &str, provider: &str, options: JsonB, credentials: JsonB) {
    let cfg = SourceConfig::parse(
        provider,
        &options.0,
        &credentials.0,
        gucs::ALLOW_INSECURE_HTTP.get(),
    );
    let ctx = Context {
        source: Some(name.to_owned()),
        stream: None,
        secrets: secret_strings(&credentials.0),
    };
    cfg.or_raise(&ctx);
}

/// The streams a provider registers for a new source.
#[pg_extern(name = "_provider_streams")]
pub fn provider_streams(
    provider: &str,
) -> TableIterator<'static, (name!(stream, String), name!(object, String))> {
    let p = Provider::find(provider).or_raise(&Context::default());
    let rows: Vec<(String, String)> = p
        .streams
        .iter()
        .map(|s| (s.name.to_owned(), s.object.to_owned()))
        .collect();
    TableIterator::new(rows)
}

/// Every string value in a credentials object, for scrubbing messages.
pub fn secret_strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Object(m) => m.values().flat_map(secret_strings).collect(),
        serde_json::Value::Array(a) => a.iter().flat_map(secret_strings).collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => vec![],
    }
}
