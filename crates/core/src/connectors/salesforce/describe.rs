//! What describe says about an object, as the readers need it: its fields
//! with their landing types, the compound fields and their parts, and the
//! field that serves as the cursor.

use std::collections::HashMap;

use crate::source::Field;
use crate::types::PgType;

/// Map a Salesforce field type (describe's `type`) to a landing column type.
/// <https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/field_types.htm>
pub fn pg_type_for(sf_type: &str) -> PgType {
    match sf_type {
        "boolean" => PgType::Boolean,
        "int" | "long" => PgType::BigInt,
        "double" | "currency" | "percent" => PgType::Numeric,
        "date" => PgType::Date,
        "datetime" => PgType::TimestampTz,
        "time" => PgType::Time,
        "address" | "location" | "complexvalue" => PgType::Jsonb,
        // id, string, picklist, multipicklist, combobox, email, phone, url,
        // textarea, reference, encryptedstring, base64, anyType, ...
        _ => PgType::Text,
    }
}

/// Why an object describeGlobal lists with `queryable: false` cannot be
/// synced.
pub const NOT_QUERYABLE: &str =
    "Salesforce does not let it be queried (describe says queryable: false)";

/// Objects Salesforce only queries with a filter on one parent's Id (an
/// "Implementation restriction" MALFORMED_QUERY otherwise), so no sync can
/// read them whole. The list peers keep: Airbyte's source-salesforce and
/// singer-io/tap-salesforce (`QUERY_RESTRICTED_SALESFORCE_OBJECTS`).
const FILTER_REQUIRED: &[&str] = &[
    "Announcement",
    "AppTabMember",
    "CollaborationGroupRecord",
    "ColorDefinition",
    "ContentDocumentLink",
    "ContentFolderItem",
    "ContentFolderMember",
    "DataStatistics",
    "DatacloudDandBCompany",
    "EntityParticle",
    "FieldDefinition",
    "FieldHistoryArchive",
    "FlexQueueItem",
    "FlowVariableView",
    "FlowVersionView",
    "IconDefinition",
    "IdeaComment",
    "NetworkUserHistoryRecent",
    "OwnerChangeOptionInfo",
    "PicklistValueInfo",
    "PlatformAction",
    "RecordActionHistory",
    "RelationshipDomain",
    "RelationshipInfo",
    "SearchLayout",
    "SiteDetail",
    "UserEntityAccess",
    "UserFieldAccess",
    "Vote",
];

/// Why `object` cannot be synced, when Salesforce's own rules say so
/// without asking the org.
pub fn filter_required(object: &str) -> Option<String> {
    FILTER_REQUIRED
        .iter()
        .any(|o| o.eq_ignore_ascii_case(object))
        .then(|| format!("Salesforce only queries {object} with a filter on one parent record's Id, so it cannot be read whole"))
}

/// Hint for an object a stream cannot sync.
pub const UNSYNCABLE_HINT: &str = "Disable the stream: UPDATE crm_sync.streams SET enabled = false WHERE source = ... AND stream = ...; crm_sync.discover(source) says which objects can be synced.";

/// base64 fields (file bodies): Bulk API 2.0 fails a job that selects one.
pub fn bulk_cannot_read(f: &Field) -> bool {
    f.crm_type == "base64"
}

/// What describe says about an object, as the reader needs it.
#[derive(Debug)]
pub struct Describe {
    pub fields: Vec<Field>,
    /// Compound fields (addresses, locations) and their component fields.
    pub components: HashMap<String, Vec<String>>,
    /// `SystemModstamp`, else `LastModifiedDate`, else none (full refresh).
    pub cursor: Option<&'static str>,
    pub has_is_deleted: bool,
    /// Task and Event: `query` hides archived records (`IsArchived`), so
    /// they are read with `queryAll` and `IsDeleted = false`.
    pub has_is_archived: bool,
    /// describe's `replicateable`: the object serves `sobjects/{X}/deleted`
    /// (getDeleted).
    pub replicateable: bool,
    /// Formula and roll-up summary fields (describe's `calculated`): their
    /// values change without SystemModstamp moving.
    pub calculated: Vec<String>,
}

impl Describe {
    #[cfg(test)]
    fn from_fields(fields: Vec<Field>) -> Describe {
        Self::with_components(fields, HashMap::new(), &|_| true)
    }

    /// `cursorable`: the fields describe says are filterable and sortable,
    /// which a cursor must be.
    pub(super) fn with_components(
        fields: Vec<Field>,
        components: HashMap<String, Vec<String>>,
        cursorable: &dyn Fn(&str) -> bool,
    ) -> Describe {
        let has = |n: &str| fields.iter().any(|f| f.name == n);
        let cursor = ["SystemModstamp", "LastModifiedDate"]
            .into_iter()
            .find(|c| has(c) && cursorable(c));
        let has_is_deleted = has("IsDeleted");
        let has_is_archived = has("IsArchived");
        Describe {
            fields,
            components,
            cursor,
            has_is_deleted,
            has_is_archived,
            replicateable: false,
            calculated: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_map_follows_the_issue() {
        for (t, pg) in [
            ("id", PgType::Text),
            ("string", PgType::Text),
            ("picklist", PgType::Text),
            ("email", PgType::Text),
            ("reference", PgType::Text),
            ("textarea", PgType::Text),
            ("boolean", PgType::Boolean),
            ("int", PgType::BigInt),
            ("double", PgType::Numeric),
            ("currency", PgType::Numeric),
            ("percent", PgType::Numeric),
            ("date", PgType::Date),
            ("datetime", PgType::TimestampTz),
            ("time", PgType::Time),
            ("address", PgType::Jsonb),
            ("location", PgType::Jsonb),
        ] {
            assert_eq!(pg_type_for(t), pg, "{t}");
        }
    }

    #[test]
    fn describe_picks_the_cursor() {
        let f = |n: &str| Field {
            name: n.into(),
            label: n.into(),
            crm_type: "datetime".into(),
            pg_type: PgType::TimestampTz,
            custom: false,
            column: None,
        };
        let d = Describe::from_fields(vec![f("Id"), f("LastModifiedDate"), f("SystemModstamp")]);
        assert_eq!(d.cursor, Some("SystemModstamp"));
        let d = Describe::from_fields(vec![f("Id"), f("LastModifiedDate")]);
        assert_eq!(d.cursor, Some("LastModifiedDate"));
        let d = Describe::from_fields(vec![f("Id"), f("CreatedDate")]);
        assert_eq!(d.cursor, None);
        assert!(!d.has_is_deleted);
        // A SystemModstamp describe says cannot be filtered or sorted on.
        let d = Describe::with_components(
            vec![f("Id"), f("LastModifiedDate"), f("SystemModstamp")],
            HashMap::new(),
            &|n| n != "SystemModstamp",
        );
        assert_eq!(d.cursor, Some("LastModifiedDate"));
        assert!(filter_required("ContentDocumentLink").is_some());
        assert!(filter_required("Account").is_none());
    }
}
