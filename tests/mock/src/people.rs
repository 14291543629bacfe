//! People and companies both demo CRMs know (`--shared-people N` on both
//! mocks). The first N seeded HubSpot contacts and the first N seeded
//! Salesforce contacts are the same N people, and the first N/4 HubSpot
//! companies and Salesforce accounts the same companies, each person
//! working at one of them. Each CRM writes them its own way, as two sales
//! teams would type them: case and stray spaces in emails and names, phone
//! numbers with and without the country code, countries spelt four ways.
//! A few values are wrong outright (an email without `@`, a phone `n/a`, a
//! misspelt country), as in any real CRM, so that the unified model has
//! invalid values to report and records to match by phone and name when
//! the email fails. Everything here is a pure function of the index.

use crate::data::{mix, FIRST, LAST, WORDS};

const SALT: u64 = 0x7065_6f70_6c65;
const AREAS: [&str; 5] = ["415", "212", "646", "312", "617"];

/// The shared companies: a quarter as many as the shared people.
pub fn companies(shared_people: u64) -> u64 {
    (shared_people / 4).max(1)
}

/// One shared person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub first: &'static str,
    pub last: &'static str,
    /// The email as it really is (lower case).
    pub email: String,
    /// Area code, exchange and line of a North American number.
    pub phone: (&'static str, u64, u64),
    /// The shared company the person works at (1-based).
    pub company: u64,
}

fn h(k: u64, what: u64) -> u64 {
    mix(SALT ^ mix(k ^ what.rotate_left(23)))
}

fn ascii(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            'é' | 'è' => Some('e'),
            'ë' => Some('e'),
            'ñ' => Some('n'),
            'ä' => Some('a'),
            'ö' => Some('o'),
            'ü' => Some('u'),
            'ł' | 'Ł' => Some('l'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Kinds of business, the second word of a shared company's name.
const KINDS: [&str; 10] = [
    "Labs",
    "Systems",
    "Logistics",
    "Health",
    "Foods",
    "Energy",
    "Media",
    "Robotics",
    "Capital",
    "Textiles",
];

/// Shared company `c` (1-based): its name and its web domain. Names are
/// distinct (the unified model matches companies by name too): a word and
/// a kind for the first 160, numbered after that.
pub fn company(c: u64) -> (String, String) {
    let i = c - 1;
    let word = WORDS[(i % WORDS.len() as u64) as usize];
    let kind = KINDS[((i / WORDS.len() as u64) % KINDS.len() as u64) as usize];
    let round = i / (WORDS.len() * KINDS.len()) as u64;
    let name = if round == 0 {
        format!("{word} {kind}")
    } else {
        format!("{word} {kind} {}", round + 1)
    };
    let domain = format!(
        "{}-{}{}.example.com",
        word.to_lowercase(),
        kind.to_lowercase(),
        if round == 0 {
            String::new()
        } else {
            (round + 1).to_string()
        }
    );
    (name, domain)
}

/// Shared person `k` (1-based) of `shared` people.
pub fn person(k: u64, shared: u64) -> Person {
    let first = FIRST[(h(k, 3) % FIRST.len() as u64) as usize];
    let last = LAST[(h(k, 4) % LAST.len() as u64) as usize];
    let c = (k - 1) % companies(shared) + 1;
    let (_, domain) = company(c);
    Person {
        first,
        last,
        email: format!("{}.{}{k}@{domain}", ascii(first), ascii(last)),
        phone: (
            AREAS[(h(k, 5) % 5) as usize],
            200 + h(k, 6) % 800,
            h(k, 7) % 10_000,
        ),
        company: c,
    }
}

/// A shared person's value of a HubSpot contact property, for the
/// properties the people decide: `Some(None)` is a null.
pub fn hubspot_contact(k: u64, shared: u64, prop: &str) -> Option<Option<String>> {
    let p = person(k, shared);
    let (area, exch, line) = p.phone;
    let (company, domain) = company(p.company);
    Some(Some(match prop {
        // Typed in by hand: capitals and a stray space now and then.
        "email" if k.is_multiple_of(4) => {
            let (local, host) = p.email.split_once('@').unwrap_or((&p.email, ""));
            format!(" {}@{} ", title_dots(local), host.to_uppercase())
        }
        "email" => p.email.clone(),
        "firstname" => p.first.to_owned(),
        "lastname" if k.is_multiple_of(3) => p.last.to_uppercase(),
        "lastname" => p.last.to_owned(),
        "phone" if k.is_multiple_of(11) => "n/a".to_owned(),
        "phone" => format!("+1 ({area}) {exch:03}-{line:04}"),
        "mobilephone" => return Some(None),
        "company" => company,
        "website" => format!("https://{domain}"),
        "country" => ["United States", "USA", "US", "U.S.A."][(k % 4) as usize].to_owned(),
        _ => return None,
    }))
}

/// A shared person's value of a Salesforce Contact field.
pub fn salesforce_contact(k: u64, shared: u64, field: &str) -> Option<Option<String>> {
    let p = person(k, shared);
    let (area, exch, line) = p.phone;
    Some(Some(match field {
        "FirstName" if k.is_multiple_of(7) => format!("{}  ", p.first),
        "FirstName" => p.first.to_owned(),
        "LastName" => p.last.to_owned(),
        "Name" => format!("{} {}", p.first, p.last),
        // Someone typed "at" for "@".
        "Email" if k.is_multiple_of(17) => p.email.replacen('@', " at ", 1),
        "Email" => p.email.clone(),
        // As people type them in Salesforce: no country code.
        "Phone" if k.is_multiple_of(2) => format!("{area}.{exch:03}.{line:04}"),
        "Phone" => format!("({area}) {exch:03} {line:04}"),
        "MobilePhone" => return Some(None),
        "MailingCountry" if k.is_multiple_of(13) => "Untied States".to_owned(),
        "MailingCountry" => {
            ["United States", "US", "U.S.", "united states"][(k % 4) as usize].to_owned()
        }
        _ => return None,
    }))
}

/// A shared company's value of a HubSpot company property.
pub fn hubspot_company(c: u64, prop: &str) -> Option<Option<String>> {
    let (name, domain) = company(c);
    Some(Some(match prop {
        "name" => name,
        "domain" => domain,
        "website" => format!("https://{domain}"),
        "country" => "United States".to_owned(),
        _ => return None,
    }))
}

/// A shared company's value of a Salesforce Account field.
pub fn salesforce_account(c: u64, field: &str) -> Option<Option<String>> {
    let (name, domain) = company(c);
    Some(Some(match field {
        "Name" => format!("{name}, Inc."),
        "Website" => format!("https://www.{domain}/"),
        "BillingCountry" => "USA".to_owned(),
        _ => return None,
    }))
}

/// `ada.lovelace7` -> `Ada.Lovelace7`.
fn title_dots(local: &str) -> String {
    local
        .split('.')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_crms_write_the_same_person_differently() {
        let k = 12;
        let p = person(k, 100);
        let hs = hubspot_contact(k, 100, "email").unwrap().unwrap();
        let sf = salesforce_contact(k, 100, "Email").unwrap().unwrap();
        assert_ne!(hs, sf);
        assert_eq!(hs.trim().to_lowercase(), sf);
        assert_eq!(sf, p.email);
        assert!(p.company >= 1 && p.company <= companies(100));
        let (name, domain) = company(p.company);
        assert!(salesforce_account(p.company, "Website")
            .unwrap()
            .unwrap()
            .contains(&domain));
        assert_eq!(hubspot_company(p.company, "name").unwrap(), Some(name));
        assert_eq!(hubspot_contact(k, 100, "hs_object_id"), None);
    }

    #[test]
    fn shared_companies_have_names_and_domains_of_their_own() {
        let all: Vec<(String, String)> = (1..=400).map(company).collect();
        let names: std::collections::HashSet<_> = all.iter().map(|c| &c.0).collect();
        let domains: std::collections::HashSet<_> = all.iter().map(|c| &c.1).collect();
        assert_eq!(names.len(), 400);
        assert_eq!(domains.len(), 400);
    }

    #[test]
    fn a_few_values_are_wrong_outright() {
        assert_eq!(hubspot_contact(22, 100, "phone"), Some(Some("n/a".into())));
        assert!(salesforce_contact(34, 100, "Email")
            .unwrap()
            .unwrap()
            .contains(" at "));
        assert_eq!(
            salesforce_contact(26, 100, "MailingCountry"),
            Some(Some("Untied States".into()))
        );
    }
}
