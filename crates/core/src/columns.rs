//! Column names for CRM properties: unique, stable, and valid however long,
//! cased or spelled a property's name is. HubSpot portals have properties
//! whose names share their first 63 bytes (Postgres' limit, past which it
//! truncates an identifier), and Salesforce `Email` and a custom `email`
//! differ only in case: lower-casing alone gives two columns one name.
//!
//! A property's column is its lower-cased name when that fits and is free;
//! otherwise the name cut to fit, `_`, and 8 hex digits of a hash of the
//! property's exact name. The caller records each assignment (a catalog
//! table), so a column never changes once given.

use std::collections::{HashMap, HashSet};

/// Longest identifier Postgres keeps (NAMEDATALEN - 1).
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// Most columns a Postgres table can have, dropped ones included.
pub const MAX_COLUMNS: usize = 1600;

/// Columns every landing table has besides one per property.
pub const SYSTEM_COLUMNS: &[&str] = &[
    "id",
    "_raw",
    "_updated_at",
    "_deleted_at",
    "_deleted_reason",
    "_merged_into",
    "_synced_at",
    "_run_id",
];

/// Postgres' own system columns: no table column may take their names.
pub const POSTGRES_SYSTEM_COLUMNS: &[&str] = &["ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"];

/// The plain column name of a property: its lower-cased name.
pub fn plain(property: &str) -> String {
    property.to_lowercase()
}

/// FNV-1a, 32 bits: stable across builds and platforms.
fn hash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// `name` cut to at most `max` bytes, at a character boundary.
fn cut(name: &str, max: usize) -> &str {
    let mut end = name.len().min(max);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The column for `property` when its plain name cannot be used: the plain
/// name cut to leave room for `_` and 8 hex digits of its hash (`salt`
/// counts up past a collision of hashes, which is never expected).
fn hashed(property: &str, name: &str, salt: u32) -> String {
    let h = hash(property).wrapping_add(salt);
    let suffix = format!("_{h:08x}");
    let stem = cut(name, MAX_IDENTIFIER_BYTES - suffix.len()).to_owned();
    stem + &suffix
}

/// What [`assign`] decides for the properties of one stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    /// New (property, column) pairs, to record.
    pub new: Vec<(String, String)>,
    /// Properties left without a column (the table is full): they stay in
    /// `_raw` only.
    pub without_column: Vec<String>,
}

/// Give each property of `properties` that has none in `known` (property ->
/// column) a column. `taken` holds the table's column names as they are,
/// and `used` the number of its attributes, dropped ones included (a table
/// holds at most [`MAX_COLUMNS`]). Properties are taken in order of their
/// exact names, so the same properties get the same columns whatever order
/// they come in.
pub fn assign(
    known: &HashMap<String, String>,
    taken: &HashSet<String>,
    used: usize,
    properties: &[&str],
) -> Assignment {
    assign_preferring(known, taken, used, properties, &HashMap::new())
}

/// As [`assign`], a property of `preferred` getting the name given there
/// (lower-cased) instead of its own plain name: a readable name for a
/// property whose name is an opaque key. The property stays what is
/// recorded, so the column keeps its name when the display name changes.
pub fn assign_preferring(
    known: &HashMap<String, String>,
    taken: &HashSet<String>,
    used: usize,
    properties: &[&str],
    preferred: &HashMap<&str, &str>,
) -> Assignment {
    let want = |p: &str| preferred.get(p).map_or_else(|| plain(p), |n| plain(n));
    let mut taken: HashSet<String> = taken.clone();
    taken.extend(known.values().cloned());
    taken.extend(
        SYSTEM_COLUMNS
            .iter()
            .chain(POSTGRES_SYSTEM_COLUMNS)
            .map(|s| s.to_string()),
    );
    // A column the table has for a property (a table landed before columns
    // were recorded) is that property's when its plain name matches.
    let mut new_props: Vec<&str> = properties
        .iter()
        .copied()
        .filter(|p| !known.contains_key(*p))
        .collect();
    new_props.sort_unstable();
    new_props.dedup();
    // Properties with their own names first: a readable name never takes
    // the plain name of a property that has it.
    new_props.sort_by_key(|p| preferred.contains_key(p));
    let mut room = MAX_COLUMNS.saturating_sub(used);
    let mut out = Assignment::default();
    let mut claimed: HashSet<String> = HashSet::new();
    // First, properties whose plain column exists and is no one else's.
    let recorded: HashSet<&String> = known.values().collect();
    for p in &new_props {
        let c = want(p);
        if c.len() <= MAX_IDENTIFIER_BYTES
            && taken.contains(&c)
            && !recorded.contains(&c)
            && !SYSTEM_COLUMNS.contains(&c.as_str())
            && !POSTGRES_SYSTEM_COLUMNS.contains(&c.as_str())
            && claimed.insert(c.clone())
        {
            out.new.push((p.to_string(), c));
        }
    }
    for p in &new_props {
        if out.new.iter().any(|(q, _)| q == p) {
            continue;
        }
        if room == 0 {
            out.without_column.push(p.to_string());
            continue;
        }
        let c = want(p);
        let column =
            if c.len() <= MAX_IDENTIFIER_BYTES && !taken.contains(&c) && !claimed.contains(&c) {
                c
            } else {
                let mut salt = 0;
                loop {
                    let h = hashed(p, &c, salt);
                    if !taken.contains(&h) && !claimed.contains(&h) {
                        break h;
                    }
                    salt += 1;
                }
            };
        claimed.insert(column.clone());
        taken.insert(column.clone());
        room -= 1;
        out.new.push((p.to_string(), column));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &Assignment) -> Vec<(&str, &str)> {
        a.new
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect()
    }

    #[test]
    fn a_preferred_name_is_used_and_the_key_recorded() {
        let key = "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2";
        let other = "ffffc3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2";
        let a = assign_preferring(
            &HashMap::new(),
            &HashSet::new(),
            6,
            &[key, other, "name", "a0"],
            &HashMap::from([(key, "lead_score"), (other, "lead_score"), ("a0", "Name")]),
        );
        let n = names(&a);
        // The property called name keeps its plain name.
        assert_eq!(n[0], ("name", "name"));
        assert_eq!(n[1].0, "a0");
        assert!(n[1].1.starts_with("name_"), "{n:?}");
        assert_eq!(n[2], (key, "lead_score"));
        // Two fields of one display name: the second gets a hashed suffix.
        assert_eq!(n[3].0, other);
        assert!(
            n[3].1.starts_with("lead_score_") && n[3].1.len() == 19,
            "{n:?}"
        );
    }

    #[test]
    fn plain_names_where_they_fit_and_are_free() {
        let a = assign(&HashMap::new(), &HashSet::new(), 6, &["Email", "firstname"]);
        assert_eq!(names(&a), [("Email", "email"), ("firstname", "firstname")]);
        assert!(a.without_column.is_empty());
    }

    #[test]
    fn long_names_sharing_a_prefix_get_distinct_stable_columns() {
        let base = "hs_analytics_first_touch_converting_campaign_for_the_second_marketing_";
        let p1 = format!("{base}email_a");
        let p2 = format!("{base}email_b");
        let a = assign(&HashMap::new(), &HashSet::new(), 6, &[&p2, &p1]);
        let cols: Vec<&str> = a.new.iter().map(|(_, c)| c.as_str()).collect();
        assert_eq!(cols.len(), 2);
        assert_ne!(cols[0], cols[1]);
        for c in &cols {
            assert_eq!(c.len(), MAX_IDENTIFIER_BYTES, "{c}");
            assert!(c.starts_with(&base[..54]));
        }
        // The same properties, in another order, get the same columns.
        let again = assign(&HashMap::new(), &HashSet::new(), 6, &[&p1, &p2]);
        assert_eq!(a, again);
    }

    #[test]
    fn names_that_differ_in_case_or_meet_a_system_column() {
        let a = assign(
            &HashMap::new(),
            &HashSet::new(),
            6,
            &["email", "Email", "_raw", "ID"],
        );
        let map: HashMap<&str, &str> = names(&a).into_iter().collect();
        // Sorted by exact name: "Email" < "ID" < "_raw" < "email".
        assert_eq!(map["Email"], "email");
        assert!(map["email"].starts_with("email_") && map["email"].len() == 14);
        assert!(map["_raw"].starts_with("_raw_"));
        assert!(map["ID"].starts_with("id_"));
        // Postgres' own system columns are taken too.
        let a = assign(&HashMap::new(), &HashSet::new(), 6, &["xmin", "ctid"]);
        assert!(a
            .new
            .iter()
            .all(|(p, c)| c.starts_with(&format!("{p}_")) && c.len() == p.len() + 9));
    }

    #[test]
    fn multibyte_names_are_cut_at_a_character_boundary() {
        let p = "é".repeat(40); // 80 bytes
        let a = assign(&HashMap::new(), &HashSet::new(), 6, &[&p]);
        let c = &a.new[0].1;
        assert!(c.len() <= MAX_IDENTIFIER_BYTES, "{c}");
        assert!(c.is_char_boundary(c.len() - 9));
    }

    #[test]
    fn recorded_columns_stay_and_landed_ones_are_adopted() {
        let known: HashMap<String, String> = [("Email".to_string(), "email".to_string())]
            .into_iter()
            .collect();
        // A table landed before columns were recorded has "phone".
        let taken: HashSet<String> = ["email", "phone"].iter().map(|s| s.to_string()).collect();
        let a = assign(&known, &taken, 8, &["Email", "phone", "email"]);
        let map: HashMap<&str, &str> = names(&a).into_iter().collect();
        assert_eq!(map.get("Email"), None, "recorded already");
        assert_eq!(map["phone"], "phone");
        assert_ne!(map["email"], "email", "Email has it");
    }

    #[test]
    fn a_full_table_keeps_the_rest_in_raw() {
        let props: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        let refs: Vec<&str> = props.iter().map(String::as_str).collect();
        let a = assign(&HashMap::new(), &HashSet::new(), MAX_COLUMNS - 4, &refs);
        assert_eq!(a.new.len(), 4);
        assert_eq!(a.without_column, ["p4", "p5", "p6", "p7", "p8", "p9"]);
    }
}
