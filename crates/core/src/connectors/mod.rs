//! Connectors: one folder per CRM. A newcomer adding a CRM starts here.
//!
//! # What a connector supplies
//! - **Streams**: the default streams of a source ([`StreamDefaults`]), each an
//!   object in the CRM with a sensible default list of fields.
//! - **Discovery**: the fields an object really has, with their CRM type mapped
//!   to a landing column type ([`Field`]). Custom fields included.
//! - **A reader** per stream and run, implementing [`crate::engine::PageSource`]:
//!   pages of [`crate::engine::Record`]s plus the watermark reached.
//! - **Error classification**: every failure is a [`crate::CrmError`] with a
//!   [`crate::ErrorKind`]; retries of 429/5xx/transport errors are already done
//!   by [`crate::http::HttpClient::send`], so a connector only interprets the
//!   statuses it knows (401/403 → `Auth`, 400/404 → `ApiRejected`, unreadable
//!   bodies → `BadResponse`).
//!
//! # What must hold
//! - A reader never loses a record: every record changed after the previous
//!   run's watermark, including while this run pages, is returned by this run
//!   or is still after the watermark this run reports.
//! - A watermark never moves backward, and is only valid once every page
//!   returned before it was asked for has been written.
//! - A page may repeat records, and a run may return a record more than once;
//!   the engine keeps the newest version per id (by `updated_at`).
//! - Deleted/archived records are returned with `deleted_at` set, not skipped.
//! - A connector never touches Postgres and never logs secrets; it does not
//!   sleep except inside the HTTP layer, so cancels are honoured promptly.

pub mod hubspot;

use crate::types::PgType;

/// A stream registered by default for a new source.
#[derive(Debug, Clone)]
pub struct StreamDefaults {
    /// Stream name, also the landing table's name.
    pub name: &'static str,
    /// The CRM's object (type) name.
    pub object: &'static str,
    /// Fields synced unless the user chooses others.
    pub properties: &'static [&'static str],
}

/// A field of a CRM object, as discovered.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub label: String,
    /// The CRM's own type name.
    pub crm_type: String,
    /// The landing column type it maps to.
    pub pg_type: PgType,
    /// True for fields the user (not the vendor) defined.
    pub custom: bool,
}

/// Full or incremental, as the engine asks a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// Read everything; the reader establishes a fresh watermark.
    Full,
    /// Read what changed since the stored watermark.
    Incremental { watermark: String },
}

/// Turn a CRM field name into a landing column name (lower case).
pub fn column_name(field: &str) -> String {
    field.to_lowercase()
}
