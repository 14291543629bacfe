//! Building the SOQL this connector sends, and splitting a field list that
//! would make a query too long into several queries joined by Id.
//! <https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select.htm>

use chrono::{DateTime, SecondsFormat, Utc};

/// Object and field API names: a letter, then letters, digits, underscores.
pub fn is_identifier(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && s.len() <= 255
}

/// A datetime literal: unquoted, UTC (`2024-03-01T12:00:00.000Z`).
pub fn datetime(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A string literal in single quotes, with `\` and `'` escaped.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `SELECT a, b FROM X[ WHERE w][ ORDER BY o]`.
pub fn select(
    fields: &[String],
    object: &str,
    where_: Option<&str>,
    order: Option<&str>,
) -> String {
    let mut q = format!("SELECT {} FROM {object}", fields.join(", "));
    if let Some(w) = where_ {
        q.push_str(" WHERE ");
        q.push_str(w);
    }
    if let Some(o) = order {
        q.push_str(" ORDER BY ");
        q.push_str(o);
    }
    q
}

/// The length of `s` once form-encoded into a URL's query string.
pub fn encoded_len(s: &str) -> usize {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .map(str::len)
        .sum()
}

/// An `Id IN (...)` list's encoded cost per id: 18 characters, two encoded
/// quotes, an encoded comma and a space.
const ENCODED_ID_COST: usize = 18 + 3 + 3 + 3 + 1;
/// Room for `SELECT`, `FROM`, `WHERE`, `ORDER BY`, the path and the rest.
const QUERY_OVERHEAD: usize = 400;

/// How a too-wide field list is split.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Field groups; each query selects `key` fields plus one group. The
    /// first group's query drives paging; the others fetch by Id.
    pub groups: Vec<Vec<String>>,
    /// Ids per `Id IN (...)` query of the other groups.
    pub ids_per_query: usize,
}

/// Split `fields` (the `key` fields, such as Id and the cursor, excluded) so
/// that each query stays within `max_len` encoded characters: a third of it
/// for an `Id IN` list, the rest for fields.
pub fn plan(key: &[String], fields: &[String], max_len: usize) -> Plan {
    let sep = encoded_len(", ");
    let key_len: usize = key.iter().map(|k| encoded_len(k) + sep).sum();
    let id_budget = max_len / 3;
    let ids_per_query = (id_budget / ENCODED_ID_COST).clamp(1, 200);
    let all_len: usize = key_len + fields.iter().map(|f| encoded_len(f) + sep).sum::<usize>();
    if all_len + QUERY_OVERHEAD <= max_len {
        return Plan {
            groups: vec![fields.to_vec()],
            ids_per_query,
        };
    }
    let budget = max_len
        .saturating_sub(QUERY_OVERHEAD + id_budget + key_len)
        .max(1);
    let mut groups: Vec<Vec<String>> = vec![];
    let mut cur: Vec<String> = vec![];
    let mut cur_len = 0;
    for f in fields {
        let l = encoded_len(f) + sep;
        if !cur.is_empty() && cur_len + l > budget {
            groups.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        cur.push(f.clone());
        cur_len += l;
    }
    if !cur.is_empty() || groups.is_empty() {
        groups.push(cur);
    }
    Plan {
        groups,
        ids_per_query,
    }
}

/// The field named in an `INVALID_FIELD` message (`No such column 'X' on
/// entity 'Y'`), if any.
pub fn invalid_field_name(message: &str) -> Option<&str> {
    let start = message.find("No such column '")? + "No such column '".len();
    let rest = &message[start..];
    let end = rest.find('\'')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("Custom_Field_{i:04}__c")).collect()
    }

    #[test]
    fn literals() {
        assert_eq!(string("O'Brien \\ co"), "'O\\'Brien \\\\ co'");
        let d = DateTime::from_timestamp_millis(1_709_294_400_123).unwrap();
        assert_eq!(datetime(d), "2024-03-01T12:00:00.123Z");
        assert!(is_identifier("Invoice__c"));
        assert!(!is_identifier("Account; DROP"));
        assert!(!is_identifier("1Bad"));
        assert!(!is_identifier(""));
    }

    #[test]
    fn narrow_lists_stay_whole() {
        let key = vec!["Id".to_owned(), "SystemModstamp".to_owned()];
        let p = plan(&key, &names(10), 15_000);
        assert_eq!(p.groups.len(), 1);
        assert_eq!(p.groups[0].len(), 10);
    }

    #[test]
    fn wide_lists_split_and_every_query_fits() {
        let key = vec!["Id".to_owned(), "SystemModstamp".to_owned()];
        let fields = names(600);
        let max = 4000;
        let p = plan(&key, &fields, max);
        assert!(p.groups.len() > 1);
        let flat: Vec<String> = p.groups.iter().flatten().cloned().collect();
        assert_eq!(flat, fields, "every field once, in order");
        for g in &p.groups {
            let mut sel = key.clone();
            sel.extend(g.iter().cloned());
            let ids: Vec<String> = (0..p.ids_per_query)
                .map(|i| string(&format!("a0B{i:015}")))
                .collect();
            let q = select(
                &sel,
                "Wide__c",
                Some(&format!("Id IN ({})", ids.join(", "))),
                None,
            );
            let url_len = "/services/data/v59.0/query?q=".len() + encoded_len(&q);
            assert!(url_len <= max, "{url_len} > {max}");
            let driver = select(
                &sel,
                "Wide__c",
                Some("IsDeleted = true AND SystemModstamp >= 2024-03-01T12:00:00.000Z"),
                Some("SystemModstamp ASC, Id ASC"),
            );
            assert!("/services/data/v59.0/queryAll?q=".len() + encoded_len(&driver) <= max);
        }
    }

    #[test]
    fn invalid_field_messages() {
        let m = "\nSELECT Id, Gone__c FROM Account\n           ^\nERROR at Row:1:Column:12\nNo such column 'Gone__c' on entity 'Account'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.";
        assert_eq!(invalid_field_name(m), Some("Gone__c"));
        assert_eq!(invalid_field_name("something else"), None);
    }
}
