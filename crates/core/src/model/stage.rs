//! One landing row as the model sees it: its mapped values cleaned, the
//! values that failed cleaning set aside, and its match keys.

use serde_json::{Map, Value};

use super::clean;

/// A unified field a stream feeds, and how its values are cleaned
/// (`crm_sync.unified_fields.kind`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub field: String,
    pub kind: String,
}

/// One cleaned source record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Staged {
    pub external_id: String,
    pub deleted: bool,
    /// Cleaned values by unified field; fields without a value are absent.
    pub vals: Map<String, Value>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Contacts: first and last name; deals: the deal's name.
    pub name_key: Option<String>,
    pub domain: Option<String>,
    /// Companies: the name without its legal form.
    pub company_key: Option<String>,
    pub company_ref: Option<String>,
    pub contact_ref: Option<String>,
    /// The external id of the record (same stream) the CRM merged this one
    /// into: identity resolution puts them in one unified row.
    pub merged_into: Option<String>,
    /// (field, value as landed, why it is invalid)
    pub invalid: Vec<(String, String, String)>,
}

/// Stage one record of `entity`: `values` are the raw mapped values, in the
/// order of `fields`; `region` reads phone numbers without a country code.
pub fn stage(
    entity: &str,
    region: Option<&str>,
    fields: &[Mapped],
    external_id: String,
    deleted: bool,
    values: Vec<Option<String>>,
) -> Staged {
    let mut st = Staged {
        external_id,
        deleted,
        ..Default::default()
    };
    for (m, raw) in fields.iter().zip(values) {
        let Some(raw) = raw else { continue };
        match clean::field(&m.kind, &raw, region) {
            Ok(Some(v)) => {
                st.vals.insert(m.field.clone(), Value::String(v));
            }
            Ok(None) => {}
            Err(problem) => st.invalid.push((m.field.clone(), raw, problem)),
        }
    }
    let get = |f: &str| st.vals.get(f).and_then(Value::as_str).map(str::to_owned);
    st.email = get("email");
    st.phone = get("phone");
    st.company_ref = get("company_ref");
    st.contact_ref = get("contact_ref");
    match entity {
        "contact" => {
            let full = [get("first_name"), get("last_name")]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            st.name_key = clean::name_key(&full);
        }
        "company" => {
            st.domain = get("domain");
            st.company_key = get("name").and_then(|n| clean::company_key(&n));
        }
        _ => st.name_key = get("name").and_then(|n| clean::name_key(&n)),
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(pairs: &[(&str, &str)]) -> Vec<Mapped> {
        pairs
            .iter()
            .map(|(f, k)| Mapped {
                field: (*f).into(),
                kind: (*k).into(),
            })
            .collect()
    }

    #[test]
    fn a_contact_gets_cleaned_values_and_match_keys() {
        let fields = mapped(&[
            ("first_name", "text"),
            ("last_name", "text"),
            ("email", "email"),
            ("phone", "phone"),
            ("country", "country"),
            ("company_ref", "ref"),
        ]);
        let s = stage(
            "contact",
            Some("US"),
            &fields,
            "42".into(),
            false,
            vec![
                Some("  José ".into()),
                Some("Nuñez".into()),
                Some(" Jose.Nunez@Example.COM ".into()),
                Some("(415) 555-2671".into()),
                Some("U.S.A.".into()),
                Some("1001".into()),
            ],
        );
        assert_eq!(s.vals["first_name"], "José");
        assert_eq!(s.email.as_deref(), Some("jose.nunez@example.com"));
        assert_eq!(s.phone.as_deref(), Some("+14155552671"));
        assert_eq!(s.vals["country"], "US");
        assert_eq!(s.name_key.as_deref(), Some("jose nunez"));
        assert_eq!(s.company_ref.as_deref(), Some("1001"));
        assert!(s.invalid.is_empty());
    }

    #[test]
    fn invalid_values_stay_out_of_the_record_and_its_keys() {
        let fields = mapped(&[
            ("email", "email"),
            ("phone", "phone"),
            ("last_name", "text"),
        ]);
        let s = stage(
            "contact",
            None,
            &fields,
            "7".into(),
            true,
            vec![Some("ada at example".into()), None, Some("Lovelace".into())],
        );
        assert!(s.deleted);
        assert_eq!(s.email, None);
        assert!(!s.vals.contains_key("email"));
        assert_eq!(s.invalid.len(), 1);
        assert_eq!(s.invalid[0].0, "email");
        assert_eq!(s.invalid[0].1, "ada at example");
        assert_eq!(s.name_key.as_deref(), Some("lovelace"));
    }

    #[test]
    fn companies_key_on_domain_and_name_without_legal_form() {
        let fields = mapped(&[("name", "text"), ("domain", "domain")]);
        let s = stage(
            "company",
            None,
            &fields,
            "1".into(),
            false,
            vec![
                Some("Acme GmbH".into()),
                Some("https://www.Acme.com/about".into()),
            ],
        );
        assert_eq!(s.domain.as_deref(), Some("acme.com"));
        assert_eq!(s.company_key.as_deref(), Some("acme"));
        assert_eq!(s.name_key, None);
    }
}
