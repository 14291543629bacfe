//! The unified customer model's rules, apart from the database: cleaning
//! values ([`clean`]), the match keys of one record ([`stage`]), which
//! records are one ([`identity`]) and which value each unified field takes
//! ([`survive`]). The extension's `merge` module reads and writes the
//! tables; everything it decides is decided here, and tested here.

pub mod clean;
pub mod identity;
pub mod stage;
pub mod survive;

/// The entities of the model, in merge order: companies first, then
/// contacts and deals, which link to them.
pub const ENTITIES: [&str; 3] = ["company", "contact", "deal"];

/// A link a record can have to another entity's unified row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    /// The entity linked to; also the name of the match key on `column`.
    pub target: &'static str,
    /// The mapped field holding the source's own id of the linked record.
    pub field: &'static str,
    /// The column holding the linked row's unified id, in
    /// `crm_sync.source_records` and in the crm tables.
    pub column: &'static str,
}

/// Every link, in one order (a record's `links` follow it).
pub const REFS: [Ref; 2] = [
    Ref {
        target: "company",
        field: "company_ref",
        column: "company_id",
    },
    Ref {
        target: "contact",
        field: "contact_ref",
        column: "contact_id",
    },
];

/// The position in [`REFS`] of a ref field (`company_ref`).
pub fn ref_of_field(field: &str) -> Option<usize> {
    REFS.iter().position(|r| r.field == field)
}

/// The crm table of an entity.
pub fn table(entity: &str) -> &'static str {
    match entity {
        "company" => "companies",
        "contact" => "contacts",
        _ => "deals",
    }
}

/// The entities whose unified rows an entity's records point at (through
/// their ref fields); those are merged first.
pub fn link_targets(entity: &str) -> &'static [&'static str] {
    match entity {
        "contact" => &["company"],
        "deal" => &["company", "contact"],
        _ => &[],
    }
}

/// The `crm_sync.source_records` column of a match rule's key
/// (`crm_sync.match_rules.keys`); None for a key the model does not know.
pub fn key_column(key: &str) -> Option<&'static str> {
    match key {
        "email" => Some("email"),
        "phone" => Some("phone"),
        "name" => Some("name_key"),
        "domain" => Some("domain"),
        "company_name" => Some("company_key"),
        other => REFS.iter().find(|r| r.target == other).map(|r| r.column),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_at_entities_merged_before() {
        for (i, e) in ENTITIES.iter().enumerate() {
            for t in link_targets(e) {
                let at = ENTITIES.iter().position(|x| x == t).unwrap();
                assert!(at < i, "{e} links to {t}, which must merge first");
            }
        }
    }

    #[test]
    fn rule_keys_name_columns() {
        assert_eq!(key_column("name"), Some("name_key"));
        assert_eq!(key_column("company"), Some("company_id"));
        assert_eq!(key_column("contact"), Some("contact_id"));
        assert_eq!(key_column("shoe_size"), None);
        assert_eq!(ref_of_field("contact_ref"), Some(1));
        assert_eq!(table("deal"), "deals");
    }
}
