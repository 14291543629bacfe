//! What `crm_sync.register_spec()` (sql/specs.sql) asks of Rust, and the
//! specs that ship with the extension: JSON files under `specs/`, run by
//! the `rest` connector like any registered spec (no code of their own).

use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::{self, Context, OrRaise};
use crm_sync_core::connectors;
use crm_sync_core::connectors::rest::spec::Spec;

/// The specs shipped with this version: name and JSON text.
const BUILTIN: &[(&str, &str)] = &[("pipedrive", include_str!("../../specs/pipedrive.json"))];

/// The shipped specs (the view crm_sync.builtin_specs).
#[pg_extern(name = "_builtin_specs", immutable, parallel_safe)]
pub fn builtin_specs() -> TableIterator<'static, (name!(name, String), name!(spec, JsonB))> {
    let rows: Vec<(String, JsonB)> = BUILTIN
        .iter()
        .map(|(n, text)| {
            let v = serde_json::from_str(text).unwrap_or_else(|e| {
                errors::fail(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("the shipped spec {n:?} is not JSON: {e}"),
                    None,
                )
            });
            ((*n).to_owned(), JsonB(v))
        })
        .collect();
    TableIterator::new(rows)
}

/// Raise unless `spec` is a valid spec for a `rest` source (22023, naming
/// the path of each mistake), or `name` is a built-in provider's.
#[pg_extern(name = "_check_spec")]
pub fn check_spec(name: &str, spec: JsonB) {
    if connectors::find(name).is_ok() {
        errors::fail(
            PgSqlErrorCode::ERRCODE_INVALID_NAME,
            format!("spec name {name:?} is the name of a built-in provider"),
            Some("Choose another name for the spec."),
        );
    }
    Spec::load(&format!("spec {name:?}"), &spec.0).or_raise(&Context::default());
}

/// The origins a spec sends credentials to, for register_spec's check
/// that replacing a spec in use does not send them elsewhere.
#[pg_extern(name = "_spec_origins", immutable, parallel_safe)]
pub fn spec_origins(spec: JsonB) -> String {
    connectors::rest::origins(&spec.0, &serde_json::json!({})).join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn shipped_specs_are_valid() {
        for (name, text) in super::BUILTIN {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            if let Err(e) = super::Spec::parse(&v) {
                panic!("spec {name}: {e:?}");
            }
        }
    }
}
