//! What `crm_sync.create_source()` and `alter_source()` (sql/sources.sql)
//! ask of Rust: the provider's check of options and credentials, and the
//! streams a new source gets.

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::{secret_strings, Context, OrRaise};
use crate::gucs;
use crm_sync_core::connectors;

/// Raise if `options`/`credentials` do not suit `provider`. Used by
/// create_source and alter_source.
#[pg_extern(name = "_check_source")]
pub fn check_source(name: &str, provider: &str, options: JsonB, credentials: JsonB) {
    let cfg = connectors::configure(
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
    let p = connectors::find(provider).or_raise(&Context::default());
    let rows: Vec<(String, String)> = p
        .streams
        .iter()
        .map(|s| (s.name.to_owned(), s.object.to_owned()))
        .collect();
    TableIterator::new(rows)
}
