//! SQL wrappers of `crm_sync_core::model::clean`: `crm_sync.clean_email(text)` and
//! friends, for the unified customer model. Each returns the canonical form
//! or NULL, for empty input and for an invalid value alike;
//! `crm_sync.clean_problem(kind, value)` tells the two apart and says why.
//!
//! All are IMMUTABLE and PARALLEL SAFE, so they can back expression indexes
//! and generated columns. IMMUTABLE holds for one build: the phone metadata
//! and the country table are compiled in, so after upgrading the extension
//! REINDEX indexes built on `clean_phone` or `clean_country`.

use pgrx::prelude::*;

use crm_sync_core::model::clean::{self as core_clean, Kind};

/// Trimmed, every run of whitespace (NBSP, tabs, newlines) one space; NULL
/// if nothing is left.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn clean_text(value: &str) -> Option<String> {
    core_clean::text(value)
}

/// A lower-case email address out of `Ada <Ada@Example.com>`,
/// `mailto:ada@example.com` and the like; NULL if empty or not an address.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn clean_email(value: &str) -> Option<String> {
    core_clean::email(value).ok().flatten()
}

/// A phone number in E.164 (`+14155552671`), extension dropped. Numbers
/// without `+`/`00` need `default_region` (`'US'`, `'GB'`, a country name);
/// NULL if empty or not a valid number.
#[pg_extern(immutable, parallel_safe)]
pub fn clean_phone(
    value: Option<&str>,
    default_region: default!(Option<&str>, "NULL"),
) -> Option<String> {
    core_clean::phone(value?, default_region).ok().flatten()
}

/// The lower-case host of a website (`https://www.Acme.com/about` →
/// `acme.com`); NULL if empty or not a domain.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn clean_domain(value: &str) -> Option<String> {
    core_clean::domain(value).ok().flatten()
}

/// An ISO 3166-1 alpha-2 code from a code, name or alias (`'U.S.A.'` →
/// `US`, `'Deutschland'` → `DE`); NULL if empty or not a country.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn clean_country(value: &str) -> Option<String> {
    core_clean::country(value).ok().flatten()
}

/// A key for matching people by name: lower-case, accents and punctuation
/// dropped, whitespace collapsed; NULL if empty.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn name_key(value: &str) -> Option<String> {
    core_clean::name_key(value)
}

/// `name_key` for companies, also without a leading "the" and trailing
/// legal forms (`'Acme, Inc.'` → `acme`); NULL if empty.
#[pg_extern(immutable, parallel_safe, strict)]
pub fn company_key(value: &str) -> Option<String> {
    core_clean::company_key(value)
}

/// Why `value` is not a valid `kind` ('email', 'phone', 'domain',
/// 'country'), or NULL when it is valid or empty. `region` is the default
/// region for phones.
#[pg_extern(immutable, parallel_safe)]
pub fn clean_problem(
    kind: Option<&str>,
    value: Option<&str>,
    region: default!(Option<&str>, "NULL"),
) -> Option<String> {
    let (kind, value) = (kind?, value?);
    let kind: Kind = match kind.parse() {
        Ok(k) => k,
        Err(e) => {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                e.to_string(),
                "pg_crm_sync",
            )
            .report(PgLogLevel::ERROR);
            unreachable!("ERROR does not return")
        }
    };
    core_clean::clean(kind, value, region)
        .err()
        .map(|e| e.reason().to_owned())
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn get(sql: &str) -> Option<String> {
        Spi::get_one::<String>(sql).unwrap()
    }

    #[pg_test]
    fn clean_functions_in_sql() {
        assert_eq!(
            get("SELECT crm_sync.clean_text(E' Ada \\t Lovelace\\n')").as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(
            get("SELECT crm_sync.clean_email(' Ada.Lovelace@Example.COM ')").as_deref(),
            Some("ada.lovelace@example.com")
        );
        assert_eq!(get("SELECT crm_sync.clean_email('ada@example')"), None);
        assert_eq!(
            get("SELECT crm_sync.clean_phone('(415) 555-2671', 'US')").as_deref(),
            Some("+14155552671")
        );
        assert_eq!(
            get("SELECT crm_sync.clean_phone('+44 20 7946 0958')").as_deref(),
            Some("+442079460958")
        );
        assert_eq!(get("SELECT crm_sync.clean_phone('(415) 555-2671')"), None);
        assert_eq!(get("SELECT crm_sync.clean_phone(NULL, 'US')"), None);
        assert_eq!(
            get("SELECT crm_sync.clean_domain('https://www.Acme.com/about?x=1')").as_deref(),
            Some("acme.com")
        );
        assert_eq!(
            get("SELECT crm_sync.clean_country('U.S.A.')").as_deref(),
            Some("US")
        );
        assert_eq!(
            get("SELECT crm_sync.name_key('Zoë O''Brien')").as_deref(),
            Some("zoe obrien")
        );
        assert_eq!(
            get("SELECT crm_sync.company_key('ACME Corporation')").as_deref(),
            Some("acme")
        );
    }

    #[pg_test]
    fn clean_problem_says_why() {
        assert_eq!(
            get("SELECT crm_sync.clean_problem('email', 'ada@example')").as_deref(),
            Some("not an email address")
        );
        assert_eq!(
            get("SELECT crm_sync.clean_problem('phone', '555-1234', 'US')").as_deref(),
            Some("not a valid phone number for region US")
        );
        assert_eq!(
            get("SELECT crm_sync.clean_problem('phone', '020 7946 0958', 'GB')"),
            None
        );
        assert_eq!(get("SELECT crm_sync.clean_problem('domain', '')"), None);
        assert_eq!(
            get("SELECT crm_sync.clean_problem('country', 'Narnia')").as_deref(),
            Some("not a country")
        );
        assert_eq!(get("SELECT crm_sync.clean_problem('email', NULL)"), None);
    }

    #[pg_test(
        error = "unknown kind of value \"zip\" (expected one of: email, phone, domain, country)"
    )]
    fn clean_problem_rejects_unknown_kinds() {
        Spi::run("SELECT crm_sync.clean_problem('zip', '94107')").unwrap();
    }
}
