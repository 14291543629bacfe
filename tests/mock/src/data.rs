//! Deterministic seeded records. Nothing is stored for a record until it is
//! changed: every value is a pure function of (seed, object, id, property),
//! so a million records cost only their index.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// 2023-01-01T00:00:00Z: seeded records were modified in 2023 and 2024.
pub const T0_MS: i64 = 1_672_531_200_000;
const SPAN_MS: i64 = 2 * 365 * 86_400_000;
/// Seeded contacts 1..=IMPORT_TIE share one modification time, as after a
/// bulk import: more than two search pages in one millisecond.
pub const IMPORT_TIE: u64 = 450;
/// Seeded records share a timestamp with about this many others on average.
const PER_TIMESTAMP: u64 = 8;

/// SplitMix64: a fast, well-mixed hash for deterministic choices.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Contacts,
    Companies,
    Deals,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "contacts" | "0-1" => Some(Kind::Contacts),
            "companies" | "0-2" => Some(Kind::Companies),
            "deals" | "0-3" => Some(Kind::Deals),
            _ => None,
        }
    }

    /// An object type as v4 association paths accept it: the plural,
    /// singular or object type id.
    pub fn parse_any(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "contact" => Some(Kind::Contacts),
            "company" => Some(Kind::Companies),
            "deal" => Some(Kind::Deals),
            other => Kind::parse(other),
        }
    }

    /// The singular name, as in HubSpot's messages ("contact").
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Contacts => "contact",
            Kind::Companies => "company",
            Kind::Deals => "deal",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Contacts => "contacts",
            Kind::Companies => "companies",
            Kind::Deals => "deals",
        }
    }

    /// The property holding the last modification time.
    pub fn modified_prop(self) -> &'static str {
        match self {
            Kind::Contacts => "lastmodifieddate",
            _ => "hs_lastmodifieddate",
        }
    }

    /// Properties returned when a request names none (as HubSpot does).
    pub fn default_props(self) -> &'static [&'static str] {
        match self {
            Kind::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            Kind::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            Kind::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        }
    }

    fn salt(self) -> u64 {
        match self {
            Kind::Contacts => 0x11,
            Kind::Companies => 0x22,
            Kind::Deals => 0x33,
        }
    }
}

/// An association type between two objects as HubSpot defines it: the v3
/// type name (`?associations=` lists), and the v4 type ids of the primary
/// (labelled "Primary") and the unlabeled association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssocDef {
    pub v3_type: &'static str,
    pub primary: Option<u32>,
    pub unlabeled: u32,
}

impl AssocDef {
    /// The v3 type name of a non-primary association: HubSpot adds
    /// `_unlabeled` where the pair has a primary association type.
    pub fn v3_unlabeled(&self) -> String {
        match self.primary {
            Some(_) => format!("{}_unlabeled", self.v3_type),
            None => self.v3_type.to_owned(),
        }
    }
}

/// The association types the mock knows (HubSpot-defined type ids).
pub fn assoc_def(from: Kind, to: Kind) -> Option<AssocDef> {
    let (v3_type, primary, unlabeled) = match (from, to) {
        (Kind::Contacts, Kind::Companies) => ("contact_to_company", Some(1), 279),
        (Kind::Deals, Kind::Companies) => ("deal_to_company", Some(5), 341),
        (Kind::Deals, Kind::Contacts) => ("deal_to_contact", None, 3),
        _ => return None,
    };
    Some(AssocDef {
        v3_type,
        primary,
        unlabeled,
    })
}

/// A property definition, shaped like `GET /crm/v3/properties/{type}`.
#[derive(Debug, Clone)]
pub struct PropDef {
    pub name: String,
    pub label: String,
    /// string, number, date, datetime, enumeration, bool
    pub kind: String,
    pub field_type: String,
    pub group: String,
    pub options: Vec<String>,
    pub hubspot_defined: bool,
    /// Computed by HubSpot (rollups, counts): its value changes without
    /// moving the record's modification time.
    pub calculated: bool,
}

const LIFECYCLE: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
];
const LEAD_STATUS: &[&str] = &[
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
];
const COLORS: &[&str] = &["red", "green", "blue", "yellow", "purple", "orange"];
const TIERS: &[&str] = &["bronze", "silver", "gold", "platinum"];
const STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];
const INDUSTRIES: &[&str] = &[
    "COMPUTER_SOFTWARE",
    "FINANCIAL_SERVICES",
    "HOSPITAL_HEALTH_CARE",
    "RETAIL",
    "MARKETING_AND_ADVERTISING",
    "CONSTRUCTION",
    "EDUCATION_MANAGEMENT",
    "LOGISTICS_AND_SUPPLY_CHAIN",
];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP", "CAD"];

/// (name, label, type, fieldType, groupName, options, hubspotDefined)
type Def = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
);

#[rustfmt::skip]
const CONTACT_PROPS: &[Def] = &[
    ("email", "Email", "string", "text", "contactinformation", &[], true),
    ("firstname", "First Name", "string", "text", "contactinformation", &[], true),
    ("lastname", "Last Name", "string", "text", "contactinformation", &[], true),
    ("phone", "Phone Number", "string", "phonenumber", "contactinformation", &[], true),
    ("mobilephone", "Mobile Phone Number", "string", "phonenumber", "contactinformation", &[], true),
    ("company", "Company Name", "string", "text", "contactinformation", &[], true),
    ("jobtitle", "Job Title", "string", "text", "contactinformation", &[], true),
    ("website", "Website URL", "string", "text", "contactinformation", &[], true),
    ("address", "Street Address", "string", "text", "contactinformation", &[], true),
    ("city", "City", "string", "text", "contactinformation", &[], true),
    ("state", "State/Region", "string", "text", "contactinformation", &[], true),
    ("zip", "Postal Code", "string", "text", "contactinformation", &[], true),
    ("country", "Country/Region", "string", "text", "contactinformation", &[], true),
    ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", "contactinformation", LIFECYCLE, true),
    ("hs_lead_status", "Lead Status", "enumeration", "radio", "sales_properties", LEAD_STATUS, true),
    ("hubspot_owner_id", "Contact owner", "enumeration", "select", "sales_properties", &[], true),
    ("createdate", "Create Date", "datetime", "date", "contactinformation", &[], true),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date", "contactinformation", &[], true),
    ("hs_object_id", "Record ID", "number", "number", "contactinformation", &[], true),
    ("hs_merged_object_ids", "Merged Contact IDs", "enumeration", "checkbox", "contactinformation", &[], true),
    ("num_associated_deals", "Associated Deals", "number", "number", "contactinformation", &[], true),
    ("favorite_color", "Favorite color", "enumeration", "select", "contactinformation", COLORS, false),
    ("loyalty_score", "Loyalty score", "number", "number", "contactinformation", &[], false),
    ("signup_date", "Signup date", "date", "date", "contactinformation", &[], false),
    ("is_vip", "VIP", "bool", "booleancheckbox", "contactinformation", &["true", "false"], false),
];

#[rustfmt::skip]
const COMPANY_PROPS: &[Def] = &[
    ("name", "Company name", "string", "text", "companyinformation", &[], true),
    ("domain", "Company Domain Name", "string", "text", "companyinformation", &[], true),
    ("website", "Website URL", "string", "text", "companyinformation", &[], true),
    ("phone", "Phone Number", "string", "phonenumber", "companyinformation", &[], true),
    ("industry", "Industry", "enumeration", "select", "companyinformation", INDUSTRIES, true),
    ("city", "City", "string", "text", "companyinformation", &[], true),
    ("state", "State/Region", "string", "text", "companyinformation", &[], true),
    ("country", "Country/Region", "string", "text", "companyinformation", &[], true),
    ("numberofemployees", "Number of Employees", "number", "number", "companyinformation", &[], true),
    ("annualrevenue", "Annual Revenue", "number", "number", "companyinformation", &[], true),
    ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio", "companyinformation", LIFECYCLE, true),
    ("hubspot_owner_id", "Company owner", "enumeration", "select", "companyinformation", &[], true),
    ("createdate", "Create Date", "datetime", "date", "companyinformation", &[], true),
    ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", "companyinformation", &[], true),
    ("hs_object_id", "Record ID", "number", "number", "companyinformation", &[], true),
    ("hs_merged_object_ids", "Merged Company IDs", "enumeration", "checkbox", "companyinformation", &[], true),
    ("tier", "Tier", "enumeration", "select", "companyinformation", TIERS, false),
];

#[rustfmt::skip]
const DEAL_PROPS: &[Def] = &[
    ("dealname", "Deal Name", "string", "text", "dealinformation", &[], true),
    ("amount", "Amount", "number", "number", "dealinformation", &[], true),
    ("deal_currency_code", "Currency", "enumeration", "select", "dealinformation", CURRENCIES, true),
    ("dealstage", "Deal Stage", "enumeration", "radio", "dealinformation", STAGES, true),
    ("pipeline", "Pipeline", "enumeration", "select", "dealinformation", &["default"], true),
    ("closedate", "Close Date", "datetime", "date", "dealinformation", &[], true),
    ("hubspot_owner_id", "Deal owner", "enumeration", "select", "dealinformation", &[], true),
    ("createdate", "Create Date", "datetime", "date", "dealinformation", &[], true),
    ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date", "dealinformation", &[], true),
    ("hs_object_id", "Record ID", "number", "number", "dealinformation", &[], true),
    ("renewal_date", "Renewal date", "date", "date", "dealinformation", &[], false),
];

pub fn builtin_props(kind: Kind) -> Vec<PropDef> {
    let defs = match kind {
        Kind::Contacts => CONTACT_PROPS,
        Kind::Companies => COMPANY_PROPS,
        Kind::Deals => DEAL_PROPS,
    };
    defs.iter()
        .map(
            |&(name, label, kind, field_type, group, options, builtin)| PropDef {
                calculated: name.starts_with("num_") || name == "hs_lead_score",
                name: name.into(),
                label: label.into(),
                kind: kind.into(),
                field_type: field_type.into(),
                group: group.into(),
                options: options.iter().map(|s| s.to_string()).collect(),
                hubspot_defined: builtin,
            },
        )
        .collect()
}

pub const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger",
    "Radia", "Leslie", "Donald", "Sophie", "Tim", "Anita", "John", "Hedy", "Niklaus", "Karen",
    "José", "Zoë", "Łukasz", "Mei",
];
pub const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Dijkstra",
    "Perlman",
    "Lamport",
    "Knuth",
    "Wilson",
    "Berners-Lee",
    "Borg",
    "McCarthy",
    "Lamarr",
    "Wirth",
    "Spärck Jones",
    "O'Neil",
    "Nuñez",
    "Kowalski",
    "Chen",
];
pub const WORDS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Cyberdyne",
    "Vandelay",
    "Wonka",
    "Oscorp",
    "Aperture",
    "Gringotts",
    "Monarch",
];
pub const SUFFIX: &[&str] = &[
    "Inc", "GmbH", "Ltd", "LLC", "SA", "Group", "Labs", "Partners",
];
/// Legal forms of seeded HubSpot companies: none of [`SUFFIX`], which the
/// Salesforce mock's accounts use, so that no HubSpot company and
/// Salesforce account share a name by chance (the unified model would take
/// them for one company). Shared companies are `crate::people`'s.
const HUBSPOT_SUFFIX: &[&str] = &[
    "Corp",
    "AG",
    "Co",
    "BV",
    "Holdings",
    "Industries",
    "Works",
    "Studio",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Boston", "MA", "United States"),
    ("Austin", "TX", "United States"),
    ("Dublin", "Leinster", "Ireland"),
    ("Berlin", "Berlin", "Germany"),
    ("Paris", "Île-de-France", "France"),
    ("Toronto", "ON", "Canada"),
    ("Sydney", "NSW", "Australia"),
    ("São Paulo", "SP", "Brazil"),
];
const TITLES: &[&str] = &[
    "CTO",
    "VP Sales",
    "Data Engineer",
    "Office Manager",
    "CEO",
    "Account Executive",
    "Analyst",
];

/// Which seeded company a seeded contact works for (shared by name/domain).
fn company_word(seed: u64, n: u64) -> (&'static str, &'static str) {
    let h = mix(seed ^ n.wrapping_mul(0x5bd1_e995));
    (pick(WORDS, h), pick(HUBSPOT_SUFFIX, h >> 17))
}

fn pick<'a>(list: &[&'a str], h: u64) -> &'a str {
    list[(h % list.len() as u64) as usize]
}

pub fn fmt_ms(ms: i64) -> String {
    let dt: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn fmt_date(ms: i64) -> String {
    let dt: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    dt.format("%Y-%m-%d").to_string()
}

/// A datetime or date filter value: epoch milliseconds, RFC 3339, or a date.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// The generator for one object type.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub kind: Kind,
    pub seed: u64,
    pub count: u64,
}

impl Seeded {
    fn h(&self, id: u64, what: u64) -> u64 {
        mix(self.seed ^ self.kind.salt().rotate_left(48) ^ mix(id ^ what.rotate_left(17)))
    }

    /// Modification time of seeded record `id`.
    pub fn updated_ms(&self, id: u64) -> i64 {
        if self.kind == Kind::Contacts && id <= IMPORT_TIE {
            return T0_MS + 3_600_000;
        }
        let slots = (self.count / PER_TIMESTAMP).max(1);
        let step = (SPAN_MS - 86_400_000) / slots as i64;
        let slot = self.h(id, 1) % slots;
        T0_MS + 86_400_000 + slot as i64 * step
    }

    pub fn created_ms(&self, id: u64) -> i64 {
        let back = (self.h(id, 2) % (400 * 86_400)) as i64 * 1000;
        self.updated_ms(id) - back
    }

    /// The seeded company number a seeded contact or deal is about (its
    /// `company`, `website` and `dealname` come from it). Companies use
    /// [`company_word`] with their own id, so contact `company` equals the
    /// name of company `company_n(id)` when that company exists.
    pub fn company_n(&self, id: u64) -> u64 {
        self.h(id, 13) % (self.count / 5 + 1) + 1
    }

    /// The record of kind `to` seeded record `id` is associated with, if
    /// any; `to_count` is how many seeded records of kind `to` there are.
    /// Contacts and deals: the company `company_n(id)` when it exists; deals
    /// also one contact picked by a hash of the deal id.
    pub fn associated(&self, id: u64, to: Kind, to_count: u64) -> Option<u64> {
        match (self.kind, to) {
            (Kind::Contacts | Kind::Deals, Kind::Companies) => {
                Some(self.company_n(id)).filter(|n| *n <= to_count)
            }
            (Kind::Deals, Kind::Contacts) if to_count > 0 => Some(self.h(id, 14) % to_count + 1),
            _ => None,
        }
    }

    /// The value of `prop` on seeded record `id`; `None` is a null.
    /// hs_object_id, createdate and the modified property are handled by
    /// the store, which knows about changes.
    pub fn value(&self, id: u64, prop: &str) -> Option<String> {
        let h = self.h(id, name_hash(prop));
        let first = || pick(FIRST, self.h(id, 10));
        let last = || pick(LAST, self.h(id, 11));
        let place = || CITIES[(self.h(id, 12) % CITIES.len() as u64) as usize];
        let company_n = || self.company_n(id);
        let company = || company_word(self.seed, company_n());
        let domain = || format!("{}{}.example.com", company().0.to_lowercase(), company_n());
        let sometimes = |pct: u64| h % 100 < pct;
        Some(match (self.kind, prop) {
            (Kind::Contacts, "email") => {
                let local: String = format!("{}.{}", first(), last())
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                format!("{local}{id}@{}", domain())
            }
            (Kind::Contacts, "firstname") => first().to_owned(),
            (Kind::Contacts, "lastname") => last().to_owned(),
            // Real-looking North American numbers (555 exchanges are not).
            (_, "phone") => format!(
                "+1 {} {:03} {:04}",
                ["415", "212", "646", "312", "617"][(h % 5) as usize],
                200 + (h >> 8) % 800,
                (h >> 20) % 10_000
            ),
            (Kind::Contacts, "mobilephone") if sometimes(40) => {
                format!("+1 646 {:03} {:04}", 200 + h % 797, (h >> 24) % 10_000)
            }
            (Kind::Contacts, "company") => {
                let (w, s) = company();
                format!("{w} {s} {}", company_n())
            }
            (Kind::Contacts, "jobtitle") if sometimes(70) => pick(TITLES, h >> 8).to_owned(),
            (Kind::Contacts, "website") => format!("https://{}", domain()),
            (Kind::Companies, "website") => {
                let (w, _) = company_word(self.seed, id);
                format!("https://{}{}.example.com", w.to_lowercase(), id)
            }
            (Kind::Contacts, "address") if sometimes(80) => format!("{} Main Street", h % 999 + 1),
            (_, "city") => place().0.to_owned(),
            (_, "state") => place().1.to_owned(),
            (Kind::Contacts, "zip") => format!("{:05}", h % 100_000),
            (_, "country") => place().2.to_owned(),
            (_, "lifecyclestage") => pick(LIFECYCLE, h >> 3).to_owned(),
            (Kind::Contacts, "hs_lead_status") if sometimes(60) => {
                pick(LEAD_STATUS, h >> 5).to_owned()
            }
            (_, "hubspot_owner_id") if sometimes(90) => format!("{}", 50_000_000 + h % 12),
            (Kind::Contacts, "favorite_color") if sometimes(75) => pick(COLORS, h >> 7).to_owned(),
            // HubSpot sends "" for a number property that was cleared.
            (Kind::Contacts, "loyalty_score") if h.is_multiple_of(500) => String::new(),
            (Kind::Contacts, "loyalty_score") => format!("{}.{}", h % 1000, (h >> 10) % 10),
            (Kind::Contacts, "signup_date") if sometimes(85) => {
                fmt_date(self.created_ms(id) - 86_400_000 * (h % 90) as i64)
            }
            (Kind::Contacts, "is_vip") => h.is_multiple_of(10).to_string(),
            // Numbered, as in the Salesforce mock: 128 word pairs alone
            // would make many companies share a name, which the unified
            // model's name rule would take for one company.
            (Kind::Companies, "name") => {
                let (w, s) = company_word(self.seed, id);
                format!("{w} {s} {id}")
            }
            (Kind::Companies, "domain") => {
                let (w, _) = company_word(self.seed, id);
                format!("{}{}.example.com", w.to_lowercase(), id)
            }
            (Kind::Companies, "industry") => pick(INDUSTRIES, h >> 4).to_owned(),
            (Kind::Companies, "numberofemployees") => format!("{}", 1 + h % 5000),
            (Kind::Companies, "annualrevenue") if sometimes(80) => {
                format!("{}", (h % 50_000) * 1000)
            }
            (Kind::Companies, "tier") => pick(TIERS, h >> 9).to_owned(),
            (Kind::Deals, "dealname") => format!("{} {} renewal", company().0, 2023 + h % 3),
            (Kind::Deals, "amount") => format!("{}.{:02}", h % 250_000, (h >> 30) % 100),
            (Kind::Deals, "deal_currency_code") => pick(CURRENCIES, h >> 6).to_owned(),
            (Kind::Deals, "dealstage") => pick(STAGES, h >> 2).to_owned(),
            (Kind::Deals, "pipeline") => "default".to_owned(),
            (Kind::Deals, "closedate") if sometimes(70) => {
                fmt_ms(self.updated_ms(id) + 86_400_000 * (h % 120) as i64)
            }
            (Kind::Deals, "renewal_date") if sometimes(50) => {
                fmt_date(self.updated_ms(id) + 86_400_000 * (365 + h % 30) as i64)
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_seed_dependent() {
        let a = Seeded {
            kind: Kind::Contacts,
            seed: 1,
            count: 1000,
        };
        let b = Seeded {
            kind: Kind::Contacts,
            seed: 2,
            count: 1000,
        };
        assert_eq!(a.value(7, "email"), a.value(7, "email"));
        let differ = (500..600)
            .filter(|&i| a.value(i, "email") != b.value(i, "email"))
            .count();
        assert!(differ > 50, "{differ}");
        assert!(a.value(7, "email").unwrap().contains('@'));
    }

    #[test]
    fn many_records_share_timestamps_and_the_import_is_one_tie() {
        let s = Seeded {
            kind: Kind::Contacts,
            seed: 1,
            count: 10_000,
        };
        let mut by_ts = std::collections::HashMap::new();
        for id in 1..=10_000 {
            *by_ts.entry(s.updated_ms(id)).or_insert(0u32) += 1;
        }
        assert_eq!(by_ts[&(T0_MS + 3_600_000)], IMPORT_TIE as u32);
        let shared = by_ts.values().filter(|&&n| n > 1).count();
        assert!(shared > 500, "{shared}");
        for id in 1..=10_000 {
            assert!(s.created_ms(id) <= s.updated_ms(id));
        }
    }

    #[test]
    fn seeded_associations_match_the_company_fields() {
        let contacts = Seeded {
            kind: Kind::Contacts,
            seed: 42,
            count: 1000,
        };
        let companies = Seeded {
            kind: Kind::Companies,
            seed: 42,
            count: 200,
        };
        let deals = Seeded {
            kind: Kind::Deals,
            seed: 42,
            count: 300,
        };
        let mut linked = 0;
        for id in 1..=1000 {
            match contacts.associated(id, Kind::Companies, 200) {
                Some(c) => {
                    linked += 1;
                    assert_eq!(contacts.value(id, "company"), companies.value(c, "name"));
                    let site = contacts.value(id, "website").unwrap();
                    assert_eq!(
                        site,
                        format!("https://{}", companies.value(c, "domain").unwrap())
                    );
                }
                None => assert!(contacts.company_n(id) > 200),
            }
            assert_eq!(contacts.associated(id, Kind::Deals, 300), None);
        }
        assert!(linked > 900, "{linked}");
        for id in 1..=300 {
            let c = deals.associated(id, Kind::Contacts, 1000).unwrap();
            assert!((1..=1000).contains(&c));
            assert_eq!(deals.associated(id, Kind::Contacts, 1000), Some(c));
            assert!(deals.associated(id, Kind::Companies, 200).is_some());
        }
        assert_eq!(deals.associated(1, Kind::Contacts, 0), None);
        assert_eq!(
            assoc_def(Kind::Deals, Kind::Companies)
                .unwrap()
                .v3_unlabeled(),
            "deal_to_company_unlabeled"
        );
        assert_eq!(
            assoc_def(Kind::Deals, Kind::Contacts)
                .unwrap()
                .v3_unlabeled(),
            "deal_to_contact"
        );
        assert_eq!(assoc_def(Kind::Companies, Kind::Contacts), None);
    }

    #[test]
    fn time_values_parse() {
        assert_eq!(parse_time("1672531200000"), Some(T0_MS));
        assert_eq!(parse_time("2023-01-01T00:00:00Z"), Some(T0_MS));
        assert_eq!(parse_time("2023-01-01T00:00:00.000Z"), Some(T0_MS));
        assert_eq!(parse_time("2023-01-01"), Some(T0_MS));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(fmt_ms(T0_MS + 1), "2023-01-01T00:00:00.001Z");
    }

    #[test]
    fn a_few_loyalty_scores_are_empty() {
        let s = Seeded {
            kind: Kind::Contacts,
            seed: 42,
            count: 100_000,
        };
        let empty = (1..=100_000)
            .filter(|&i| s.value(i, "loyalty_score").as_deref() == Some(""))
            .count();
        assert!((100..400).contains(&empty), "{empty}");
    }
}
