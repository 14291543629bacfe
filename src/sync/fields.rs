//! Which fields of a stream's CRM object land, and as which columns.

use crate::catalog::StreamRow;
use crate::landing::Landed;
use crate::txn::check_interrupts;
use crm_sync_core::connectors::Configured;
use crm_sync_core::runtime::block_on_interruptible;
use crm_sync_core::source::{Connector, Field};
use crm_sync_core::CrmError;

/// The fields of `object`, as the CRM describes them now.
pub fn fetch_fields(conn: &dyn Connector, object: &str) -> Result<Vec<Field>, CrmError> {
    block_on_interruptible(conn.fields(object), &mut check_interrupts)
}

/// The properties a stream syncs: its list, `{*}` for all, or the defaults.
/// A listed property the CRM no longer has is an error, unless the landing
/// table has its column already: then the field was deleted in the CRM, and
/// it is dropped from the stream with a warning (returned second).
pub fn select_fields(
    cfg: &Configured,
    s: &StreamRow,
    fields: &[Field],
    landed: &Landed,
) -> Result<(Vec<Field>, Vec<String>), CrmError> {
    let col = |f: &Field| f.clone();
    match &s.properties {
        Some(list) if list.iter().any(|p| p == "*") => {
            Ok((fields.iter().map(col).collect(), vec![]))
        }
        Some(list) => {
            let mut cols = vec![];
            let mut gone = vec![];
            for p in list {
                // Exact name first; CRM API names are case-insensitive.
                let found = fields
                    .iter()
                    .find(|f| &f.name == p)
                    .or_else(|| fields.iter().find(|f| f.name.eq_ignore_ascii_case(p)));
                match found {
                    Some(f) => cols.push(col(f)),
                    None if landed.has_column(p) => gone.push(p.clone()),
                    None => {
                        return Err(CrmError::config(format!("property \"{p}\" does not exist on {}", s.object)).with_hint(
                            "See crm_sync.discover(source, stream) for the properties, and fix crm_sync.streams.properties.",
                        ))
                    }
                }
            }
            Ok((cols, gone))
        }
        None => {
            let default = cfg.provider.default_fields(&s.object);
            let cols = fields
                .iter()
                .filter(|f| default.picks(f))
                .map(col)
                .collect();
            Ok((cols, vec![]))
        }
    }
}
