//! Survivorship: which value each field of a unified row takes from the
//! records merged into it, and the lineage that says which record gave it.
//!
//! Per field, among the live records (deleted ones stop contributing) that
//! have a value: the first by the field's source priority
//! (`crm_sync.field_priority`), then the most recently modified, then by
//! source, stream and id, so the same records always give the same row.

use serde_json::{Map, Value};

use super::{ref_of_field, REFS};

/// One source record's part in a unified row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Contribution {
    pub unified_id: i64,
    pub source: String,
    pub stream: String,
    pub external_id: String,
    /// Modification time, epoch microseconds.
    pub updated_us: Option<i64>,
    pub deleted: bool,
    /// Cleaned values by field.
    pub vals: Map<String, Value>,
    /// The unified rows its ref fields point at, in [`REFS`] order.
    pub links: [Option<i64>; REFS.len()],
}

impl Contribution {
    /// The value it offers for `field`: for a reference, the unified id of
    /// the linked row, which stays None until that record lands.
    fn value(&self, field: &str, kind: &str) -> Option<String> {
        let v = self.vals.get(field)?;
        if kind == "ref" {
            let id = ref_of_field(field).and_then(|i| self.links[i]);
            return id.map(|i| i.to_string());
        }
        Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn key(&self) -> (&str, &str, &str) {
        (&self.source, &self.stream, &self.external_id)
    }
}

/// A unified field: its name, its kind, and the sources whose values win
/// first (none: the newest record wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub field: String,
    pub kind: String,
    pub priority: Option<Vec<String>>,
}

/// One unified row, as survivorship makes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Survivor {
    pub id: i64,
    /// One value per [`FieldRule`], in order.
    pub values: Vec<Option<String>>,
    /// No live record is left: the row is marked deleted.
    pub gone: bool,
    /// The live records, `source/stream/id`, sorted.
    pub sources: Vec<String>,
    /// Field -> 1-based position in `sources` of the record that gave it.
    pub lineage: Map<String, Value>,
}

/// The unified row made of `group` (the records of one unified id); None
/// for an empty group.
pub fn survive(group: &[Contribution], rules: &[FieldRule]) -> Option<Survivor> {
    let first = group.first()?;
    let mut live: Vec<&Contribution> = group.iter().filter(|c| !c.deleted).collect();
    // In `sources` order, so lineage can name a record by its position.
    live.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut lineage = Map::new();
    let mut values = Vec::with_capacity(rules.len());
    for rule in rules {
        let rank = |c: &Contribution| {
            rule.priority
                .as_ref()
                .and_then(|o| o.iter().position(|s| *s == c.source))
                .unwrap_or(usize::MAX)
        };
        let best = live
            .iter()
            .enumerate()
            .filter(|(_, c)| c.vals.get(&rule.field).is_some_and(|v| !v.is_null()))
            .min_by(|(_, a), (_, b)| {
                rank(a)
                    .cmp(&rank(b))
                    .then_with(|| b.updated_us.cmp(&a.updated_us))
                    .then_with(|| a.key().cmp(&b.key()))
            });
        if let Some((pos, _)) = best {
            lineage.insert(rule.field.clone(), Value::from(pos + 1));
        }
        values.push(best.and_then(|(_, c)| c.value(&rule.field, &rule.kind)));
    }
    Some(Survivor {
        id: first.unified_id,
        values,
        gone: live.is_empty(),
        sources: live
            .iter()
            .map(|c| format!("{}/{}/{}", c.source, c.stream, c.external_id))
            .collect(),
        lineage,
    })
}

/// The lineage of unified rows of one record, as `jsonb` bodies: each of
/// the unified fields that is a key of the record's cleaned values (a
/// `jsonb` object, `vals ? field`), pointing at the row's one source (1).
/// The few distinct sets of fields records have are built once each.
#[derive(Default)]
pub struct LineageOfOne {
    /// The fields, as given (a JSON array of names), and read.
    given: String,
    fields: Vec<String>,
    made: std::collections::HashMap<u64, Vec<u8>>,
}

impl LineageOfOne {
    /// Most sets of fields kept at once.
    const KEEP: usize = 1024;

    /// The lineage of a row whose one record has the cleaned values `vals`
    /// (a `jsonb` container: the bytes after its varlena header), the
    /// entity's unified fields being `fields` (a JSON array of their
    /// names); a body for the varlena header to go before. Values that are
    /// not an object, or fields that are not an array of names, give `{}`.
    pub fn of(&mut self, vals: &[u8], fields: &str) -> &[u8] {
        if self.given != fields {
            self.fields = serde_json::from_str(fields).unwrap_or_default();
            self.given = fields.to_owned();
            self.made.clear();
        }
        let keys = crate::jsonb::object_keys(vals).unwrap_or_default();
        let present: Vec<bool> = self
            .fields
            .iter()
            .map(|f| keys.contains(&f.as_bytes()))
            .collect();
        // Past 64 fields, sets are told apart by the whole list (rare).
        let mask = if self.fields.len() <= 64 {
            present
                .iter()
                .enumerate()
                .fold(0u64, |m, (i, p)| m | (u64::from(*p) << i))
        } else {
            self.made.clear();
            0
        };
        if !self.made.contains_key(&mask) {
            let object: Map<String, Value> = self
                .fields
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(f, _)| (f.clone(), Value::from(1)))
                .collect();
            let text = Value::Object(object).to_string();
            // Field names are text; "1" is a plain number: always encodable.
            let body = crate::jsonb::encode(&text)
                .map(|v| v[4..].to_vec())
                // (An empty object: its header alone.)
                .unwrap_or_else(|| 0x2000_0000u32.to_ne_bytes().to_vec());
            if self.made.len() >= Self::KEEP {
                self.made.clear();
            }
            self.made.insert(mask, body);
        }
        &self.made[&mask]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lineage_of_one_names_the_fields_the_record_has() {
        let body = |json: &str| crate::jsonb::encode(json).unwrap()[4..].to_vec();
        let fields = r#"["company_name", "email", "owner", "phone", "title"]"#;
        let mut l = LineageOfOne::default();
        let vals = body(r#"{"email": "a@b.c", "title": null, "phone": "+1", "other": 2}"#);
        let want = body(r#"{"email": 1, "phone": 1, "title": 1}"#);
        assert_eq!(l.of(&vals, fields), want);
        // Again, from what was built for the same set of fields.
        assert_eq!(l.of(&vals, fields), want);
        // Other fields: built anew.
        assert_eq!(
            l.of(&vals, r#"["email", "owner"]"#),
            body(r#"{"email": 1}"#)
        );
        assert_eq!(l.of(&body("{}"), fields), body("{}"));
        // Not an object.
        assert_eq!(l.of(&body("[1]"), fields), body("{}"));
        // More fields than a mask holds.
        let wide: Vec<String> = (0..70).map(|i| format!("f{i}")).collect();
        let wide = serde_json::to_string(&wide).unwrap();
        let vals = body(r#"{"f3": "x", "f69": "y"}"#);
        assert_eq!(l.of(&vals, &wide), body(r#"{"f3": 1, "f69": 1}"#));
        assert_eq!(l.of(&body(r#"{"f1": 0}"#), &wide), body(r#"{"f1": 1}"#));
        // Fields that are not names.
        assert_eq!(l.of(&vals, "not json"), body("{}"));
    }

    fn rec(source: &str, id: &str, updated: i64, vals: Value) -> Contribution {
        Contribution {
            unified_id: 7,
            source: source.into(),
            stream: "contacts".into(),
            external_id: id.into(),
            updated_us: Some(updated),
            deleted: false,
            vals: vals.as_object().unwrap().clone(),
            links: [None, None],
        }
    }

    fn rule(field: &str, kind: &str, priority: Option<&[&str]>) -> FieldRule {
        FieldRule {
            field: field.into(),
            kind: kind.into(),
            priority: priority.map(|p| p.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn the_newest_record_wins_each_field_it_has() {
        let group = [
            rec("hs", "1", 10, json!({"email": "old@x.com", "title": "CTO"})),
            rec("sf", "a", 20, json!({"email": "new@x.com"})),
        ];
        let rules = [rule("email", "email", None), rule("title", "text", None)];
        let s = survive(&group, &rules).unwrap();
        assert_eq!(s.id, 7);
        assert_eq!(s.values, [Some("new@x.com".into()), Some("CTO".into())]);
        assert_eq!(s.sources, ["hs/contacts/1", "sf/contacts/a"]);
        assert_eq!(
            s.lineage,
            *json!({"email": 2, "title": 1}).as_object().unwrap()
        );
        assert!(!s.gone);
    }

    #[test]
    fn source_priority_beats_recency() {
        let group = [
            rec("hs", "1", 10, json!({"email": "hs@x.com"})),
            rec("sf", "a", 20, json!({"email": "sf@x.com"})),
        ];
        let s = survive(&group, &[rule("email", "email", Some(&["hs"]))]).unwrap();
        assert_eq!(s.values, [Some("hs@x.com".into())]);
    }

    #[test]
    fn deleted_records_stop_contributing_and_an_all_deleted_row_is_gone() {
        let mut gone = rec("sf", "a", 20, json!({"email": "sf@x.com"}));
        gone.deleted = true;
        let live = rec("hs", "1", 10, json!({"email": "hs@x.com"}));
        let s = survive(&[live, gone.clone()], &[rule("email", "email", None)]).unwrap();
        assert_eq!(s.values, [Some("hs@x.com".into())]);
        assert_eq!(s.sources, ["hs/contacts/1"]);
        let s = survive(&[gone], &[rule("email", "email", None)]).unwrap();
        assert!(s.gone);
        assert_eq!(s.values, [None]);
        assert!(s.sources.is_empty());
    }

    #[test]
    fn a_reference_takes_the_linked_rows_unified_id() {
        let mut r = rec("hs", "1", 10, json!({"company_ref": "1001"}));
        let rules = [rule("company_ref", "ref", None)];
        assert_eq!(survive(&[r.clone()], &rules).unwrap().values, [None]);
        r.links[0] = Some(55);
        assert_eq!(survive(&[r], &rules).unwrap().values, [Some("55".into())]);
    }

    #[test]
    fn ties_are_broken_by_source_stream_and_id() {
        let group = [
            rec("sf", "b", 10, json!({"title": "B"})),
            rec("sf", "a", 10, json!({"title": "A"})),
        ];
        let s = survive(&group, &[rule("title", "text", None)]).unwrap();
        assert_eq!(s.values, [Some("A".into())]);
        assert!(survive(&[], &[]).is_none());
    }
}
