//! The SQL-facing functions: thin wrappers that check arguments, call the
//! sync path (`crate::sync`), the merge (`crate::merge`) or the catalog, and
//! shape result rows. Errors become Postgres errors in `crate::errors`.
//! Nothing but `lib.rs` imports this module.
//!
//! - [`sources`] — what `create_source`/`alter_source` (sql/sources.sql) ask
//!   of Rust;
//! - [`specs`] — `register_spec`, and the specs shipped with the extension;
//! - [`sync`] — `crm_sync.sync()` and both `crm_sync.discover()`s;
//! - [`jobs`] — background syncs: `sync_async`, `cancel`, `wait`, progress;
//! - [`model`] — `crm_sync.merge()`;
//! - [`clean`] — the cleaners as SQL functions;
//! - [`status`] — helpers of the `crm_sync.status` view;
//! - [`access`] — who is asking (access levels live in sql/access.sql).

pub(crate) mod access;
pub(crate) mod clean;
pub(crate) mod jobs;
pub(crate) mod model;
pub(crate) mod sources;
pub(crate) mod specs;
pub(crate) mod status;
pub(crate) mod sync;
