//! The parts of pg_crm_sync that need no database: the sync engine, the CRM
//! connectors and the HTTP layer. Nothing in this crate may import pgrx; the
//! extension crate supplies a [`engine::Sink`] that writes through SPI and an
//! interrupt check, and everything else is tested here with plain `cargo test`.
//!
//! Start reading at [`connectors`]: it states what a connector must supply.

pub mod clean;
pub mod config;
pub mod connectors;
pub mod engine;
pub mod error;
pub mod http;
pub mod identity;
pub mod runtime;
pub mod types;

pub use error::{CrmError, ErrorKind};
