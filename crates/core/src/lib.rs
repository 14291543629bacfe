//! The parts of pg_crm_sync that need no database: the sync engine, the CRM
//! connectors, the HTTP layer and the unified model's rules. Nothing in this
//! crate may import pgrx; the extension crate supplies an [`engine::Sink`]
//! that writes through SPI and an interrupt check, and everything else is
//! tested here with plain `cargo test`.
//!
//! Start reading at [`source`]: it states what a connector must supply.
//! Imports run one way: `connectors` -> `source` -> `config`/`http`/`types`;
//! `engine` -> `source`; `model` needs none of them (`config` asks its
//! cleaner whether `default_region` is a country).

pub use chrono;
pub mod ahead;
pub mod columns;
pub mod config;
pub mod connectors;
pub mod cron;
pub mod engine;
pub mod error;
pub mod http;
pub mod jsonb;
pub mod jwt;
pub mod model;
pub mod paging;
pub mod rows;
pub mod runtime;
pub mod scrub;
pub mod source;
pub mod types;

pub use error::{CrmError, ErrorKind};
