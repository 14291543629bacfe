//! Value cleaning for the unified customer model: one canonical form per
//! kind of value, so that records from several CRMs compare equal when they
//! mean the same thing.
//!
//! Every function takes the raw text a CRM returned. The validating ones
//! ([`email`], [`phone`], [`domain`], [`country`]) return a [`Cleaned`]:
//! `Ok(None)` for empty or whitespace-only input (NULL), `Ok(Some(clean))`,
//! or `Err(Invalid)` with a short reason fit to show a user. The others
//! ([`text`], [`name_key`], [`company_key`]) never reject a value and return
//! `Option<String>` (`None` for empty).
//!
//! Choices worth knowing:
//! - Domains, in [`email`] and [`domain`] alike, come out in their ASCII
//!   (punycode) form, lower-case: `bücher.de` → `xn--bcher-kva.de`. The
//!   `url` crate does the same, and one form is what lets a contact's email
//!   domain match a company's website.
//! - [`phone`] drops extensions (`ext. 12`, `x12`): E.164 has no place for
//!   them.
//! - [`country`] maps England, Scotland, Wales and Northern Ireland to `GB`
//!   (the ISO 3166-1 entry they belong to) and accepts Kosovo as `XK`, the
//!   user-assigned code CRMs and libphonenumber use, besides the 249 ISO
//!   codes. Ambiguous names such as "Korea" alone are rejected.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::OnceLock;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Why a value was rejected: a short reason such as "not an email address".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(Cow<'static, str>);

impl Invalid {
    fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Invalid(reason.into())
    }

    /// The reason, e.g. "not a valid phone number for region US".
    pub fn reason(&self) -> &str {
        &self.0
    }
}

/// `Ok(None)`: empty input; `Ok(Some(v))`: the clean value; `Err`: invalid.
pub type Cleaned = Result<Option<String>, Invalid>;

/// The kinds of value that can be invalid, for callers that pick one at run
/// time (the SQL function `crm_sync.clean_problem(kind, value)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Email,
    Phone,
    Domain,
    Country,
}

impl Kind {
    pub const NAMES: &'static str = "email, phone, domain, country";
}

impl FromStr for Kind {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s.trim().to_ascii_lowercase().as_str() {
            "email" => Ok(Kind::Email),
            "phone" => Ok(Kind::Phone),
            "domain" => Ok(Kind::Domain),
            "country" => Ok(Kind::Country),
            _ => Err(Invalid::new(format!(
                "unknown kind of value \"{s}\" (expected one of: {})",
                Kind::NAMES
            ))),
        }
    }
}

/// Clean `value` as `kind`; `region` is used by [`Kind::Phone`] only.
pub fn clean(kind: Kind, value: &str, region: Option<&str>) -> Cleaned {
    match kind {
        Kind::Email => email(value),
        Kind::Phone => phone(value, region),
        Kind::Domain => domain(value),
        Kind::Country => country(value),
    }
}

// ---------------------------------------------------------------------------
// text

/// Characters that separate words but that `char::is_whitespace` does not
/// know: zero-width space, word joiner and the BOM, which copy-paste into a
/// CRM brings along. (NBSP, tabs and newlines are whitespace already.)
fn is_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

/// Trim and collapse every run of whitespace (NBSP, tabs, newlines and
/// zero-width spaces included) to one ASCII space. Never invalid.
pub fn text(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for word in s.split(is_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    (!out.is_empty()).then_some(out)
}

/// `s` without `prefix` (ASCII, any case), if it starts with it.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Trim with [`is_space`]; `None` if nothing is left.
fn trimmed(s: &str) -> Option<&str> {
    let t = s.trim_matches(is_space);
    (!t.is_empty()).then_some(t)
}

// ---------------------------------------------------------------------------
// email

const NOT_EMAIL: &str = "not an email address";
/// RFC 5321 §4.5.3.1: 64 octets of local part, 254 of path less the brackets.
const EMAIL_LOCAL_MAX: usize = 64;
const EMAIL_MAX: usize = 254;

/// An email address, lower-cased, out of `Ada <ada@example.com>`,
/// `<ada@example.com>`, `mailto:ada@example.com?subject=hi` and the like.
///
/// Accepts a practical subset of the RFC 5322 addr-spec: one `@`; a local
/// part of letters, digits and ``!#$%&'*+/=?^_`{|}~-`` (non-ASCII letters
/// too, RFC 6531) and dots, not leading, trailing or doubled; a domain of at
/// least two labels (letters, digits, hyphens, not at either end of a label)
/// whose last is two or more letters or an `xn--` label. No quoted local
/// parts, comments or IP literals. One trailing dot after the domain, as at
/// the end of a sentence, is dropped.
pub fn email(s: &str) -> Cleaned {
    let Some(mut v) = trimmed(s) else {
        return Ok(None);
    };
    // Display-name form: `Name <addr>` or just `<addr>`.
    if let Some(inner) = v.strip_suffix('>') {
        match inner.rfind('<') {
            Some(i) => v = inner[i + 1..].trim_matches(is_space),
            None => return Err(Invalid::new(NOT_EMAIL)),
        }
    }
    if let Some(rest) = strip_prefix_ci(v, "mailto:") {
        v = rest;
        if let Some(q) = v.find('?') {
            v = &v[..q];
        }
        v = v.trim_matches(is_space);
    }
    if v.is_empty() {
        return Err(Invalid::new(NOT_EMAIL));
    }
    let v = v.to_lowercase();
    let Some((local, dom)) = v.split_once('@') else {
        return Err(Invalid::new(NOT_EMAIL));
    };
    if !valid_local_part(local) {
        return Err(Invalid::new(NOT_EMAIL));
    }
    let dom = dom.strip_suffix('.').unwrap_or(dom);
    let Some(dom) = ascii_domain(dom) else {
        return Err(Invalid::new(NOT_EMAIL));
    };
    let out = format!("{local}@{dom}");
    if out.len() > EMAIL_MAX {
        return Err(Invalid::new(NOT_EMAIL));
    }
    Ok(Some(out))
}

fn valid_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= EMAIL_LOCAL_MAX
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || "!#$%&'*+/=?^_`{|}~-.".contains(c)
                || (!c.is_ascii() && c.is_alphanumeric())
        })
}

/// RFC 1035 §2.3.4: 63 octets a label, 253 a name (without the root dot).
const LABEL_MAX: usize = 63;
const DOMAIN_MAX: usize = 253;

/// `d` (lower-case, no trailing dot) as a checked ASCII host name, IDN labels
/// converted to punycode; `None` unless it is a valid name of two or more
/// labels with a plausible top-level domain.
fn ascii_domain(d: &str) -> Option<Cow<'_, str>> {
    let d: Cow<'_, str> = if d.is_ascii() {
        Cow::Borrowed(d)
    } else {
        match url::Host::parse(d).ok()? {
            url::Host::Domain(a) => Cow::Owned(a),
            _ => return None,
        }
    };
    valid_host(&d).then_some(d)
}

fn valid_host(d: &str) -> bool {
    if d.len() > DOMAIN_MAX {
        return false;
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return false;
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= LABEL_MAX
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let tld = labels[labels.len() - 1];
    labels.iter().all(|l| label_ok(l))
        && ((tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_lowercase()))
            || tld.starts_with("xn--"))
}

// ---------------------------------------------------------------------------
// phone

/// A phone number in E.164 (`+14155552671`), parsed and validated with
/// libphonenumber's metadata (the `phonenumber` crate).
///
/// A number that starts with `+` or `00` carries its country code and
/// `default_region` is ignored; any other needs `default_region`, a country
/// as [`country`] accepts it (`"US"`, `"gb"`, `"Germany"`). A number the
/// metadata does not consider valid for its region is rejected, so are
/// numbers with no country code and no region. Extensions (`ext. 12`,
/// `x12`, `;ext=12`) are dropped: E.164 has no place for them.
pub fn phone(s: &str, default_region: Option<&str>) -> Cleaned {
    let Some(mut v) = trimmed(s) else {
        return Ok(None);
    };
    // RFC 3966 `tel:` URIs, as click-to-call fields hold them.
    if let Some(rest) = strip_prefix_ci(v, "tel:") {
        v = rest.trim_matches(is_space);
    }
    let international: Cow<'_, str> = if v.starts_with('+') {
        Cow::Borrowed(v)
    } else if let Some(rest) = v.strip_prefix("00") {
        Cow::Owned(format!("+{rest}"))
    } else {
        Cow::Borrowed(v)
    };
    let region = if international.starts_with('+') {
        None
    } else {
        let Some(r) = default_region.and_then(trimmed) else {
            return Err(Invalid::new(
                "no country code in the phone number and no default region",
            ));
        };
        let code = country(r)
            .ok()
            .flatten()
            .ok_or_else(|| Invalid::new(format!("unknown phone region \"{r}\"")))?;
        let id = phonenumber::country::Id::from_str(&code)
            .map_err(|_| Invalid::new(format!("no phone numbering plan for region {code}")))?;
        Some((id, code))
    };
    let invalid = || match &region {
        Some((_, code)) => Invalid::new(format!("not a valid phone number for region {code}")),
        None => Invalid::new("not a valid phone number"),
    };
    // The parser has had panics on odd input before (see the crate's
    // advisories test); a bad value must not abort a whole UPDATE.
    let e164 = catch_unwind(AssertUnwindSafe(|| {
        let n = phonenumber::parse(region.as_ref().map(|(id, _)| *id), &*international).ok()?;
        if !is_valid_number(&n) {
            return None;
        }
        let mut out = String::with_capacity(16);
        write!(out, "{}", n.format().mode(phonenumber::Mode::E164)).ok()?;
        Some(out)
    }));
    match e164 {
        Ok(Some(out)) => Ok(Some(out)),
        _ => Err(invalid()),
    }
}

/// `phonenumber::is_valid`, answered with fewer pattern matches: the same
/// steps (the region whose numbering plan the number follows, then whether
/// it is of a known type there), but a number is of a known type as soon
/// as one type's pattern matches, fixed line and mobile tried first (the
/// crate tries eight rarer types before them, to name the type), and a
/// region chosen because its number is of a known type is not asked
/// again. Half of a merge's cleaning went to phone numbers, most of it to
/// these patterns: a (415) 555 number took 2.2 µs, now 0.5; numbers over
/// 700 US area codes 5.6 µs, now 4.2.
/// The test `phone_validity_is_the_crates` holds it to the crate's answer.
fn is_valid_number(n: &phonenumber::PhoneNumber) -> bool {
    use phonenumber::metadata::DATABASE;
    use phonenumber::Metadata;
    // `validator::number_type(meta, national) != Type::Unknown`.
    fn of_known_type(meta: &Metadata, national: &str) -> bool {
        meta.descriptors().general().is_match(national)
            && number_types(meta)
                .into_iter()
                .flatten()
                .any(|t| t.is_match(national))
    }
    let code = n.country().code();
    let national = n.national().to_string();
    let Some(regions) = DATABASE.region(&code) else {
        return false;
    };
    // `validator::source_for`, then the metadata `is_valid_with` takes.
    let by_id = |region: &str| -> Option<&Metadata> {
        let id: phonenumber::country::Id = region.parse().ok()?;
        DATABASE.by_id(id.as_ref())
    };
    if regions.len() == 1 {
        let meta = if regions[0] == "001" {
            DATABASE.by_code(&code).and_then(|m| m.into_iter().next())
        } else {
            by_id(regions[0])
        };
        return meta.is_some_and(|m| of_known_type(m, &national));
    }
    for region in regions {
        let Some(meta) = DATABASE.by_id(region) else {
            return false;
        };
        match meta.leading_digits() {
            Some(pattern) if pattern.find(&national).is_some_and(|m| m.start() == 0) => {
                return by_id(region).is_some_and(|m| of_known_type(m, &national));
            }
            Some(_) => {}
            // Chosen for being of a known type: valid (if it names a
            // region, as the crate's parse of it requires).
            None if of_known_type(meta, &national) => return by_id(region).is_some(),
            None => {}
        }
    }
    false
}

/// The patterns of each type of number a region's plan has (fixed line
/// and mobile first: most numbers are one of them).
fn number_types(meta: &phonenumber::Metadata) -> [Option<&phonenumber::metadata::Descriptor>; 10] {
    let d = meta.descriptors();
    [
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.voip(),
        d.personal_number(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ]
}

/// Load libphonenumber's metadata on a thread of its own, once a process,
/// so that the first [`phone`] does not wait the 65 ms it takes: a sync
/// calls this as it starts, the merge after it finds the metadata loaded.
/// It touches nothing but the metadata (never Postgres).
pub fn warm_phone() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    // Blocking every signal, as the merge's helper thread does (they are
    // the backend's main thread's). A process that cannot start a thread
    // loads the metadata at its first phone number, as before.
    let _ = crate::ahead::spawn_quiet("phone metadata", || {
        let _ = phonenumber::metadata::DATABASE.by_id("US");
    });
}

// ---------------------------------------------------------------------------
// domain

const NOT_DOMAIN: &str = "not a website or domain";

/// The host of a website, lower-case, from a URL (`https://www.Acme.com/about`),
/// a bare host (`acme.com.`), or an email-ish value (`sales@acme.com`):
/// scheme, user info, port, path, query, fragment, a trailing dot and one
/// leading `www.` are dropped; other subdomains stay (`eu.acme.com`). IDN
/// hosts come out in punycode. IP addresses and names without a dot are
/// rejected.
pub fn domain(s: &str) -> Cleaned {
    let Some(v) = trimmed(s) else {
        return Ok(None);
    };
    let v = strip_prefix_ci(v, "mailto:").unwrap_or(v);
    let url = if has_scheme(v) {
        Cow::Borrowed(v)
    } else if let Some(rest) = v.strip_prefix("//") {
        Cow::Owned(format!("http://{rest}"))
    } else {
        // `sales@acme.com`: no slash before the `@`, so it is an address, and
        // the URL parser would read `sales` as user info anyway.
        Cow::Owned(format!("http://{v}"))
    };
    let parsed = url::Url::parse(&url).map_err(|_| Invalid::new(NOT_DOMAIN))?;
    let Some(url::Host::Domain(host)) = parsed.host() else {
        return Err(Invalid::new(NOT_DOMAIN));
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    let host = match host.strip_prefix("www.") {
        Some(rest) if rest.contains('.') => rest,
        _ => host,
    };
    if !valid_host(host) {
        return Err(Invalid::new(NOT_DOMAIN));
    }
    Ok(Some(host.to_owned()))
}

/// Whether `v` starts with `scheme://` (RFC 3986 §3.1 scheme characters).
/// `acme.com:8080` has no scheme, though a URL parser would take `acme.com`
/// for one.
fn has_scheme(v: &str) -> bool {
    let Some(i) = v.find("://") else {
        return false;
    };
    let scheme = &v[..i];
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

// ---------------------------------------------------------------------------
// country

const NOT_COUNTRY: &str = "not a country";

/// Names the ISO table (the `celes` crate) lacks, keyed as [`country_key`]
/// spells them (folded, no spaces or punctuation, no leading "the").
const COUNTRY_ALIASES: &[(&str, &str)] = &[
    // United Kingdom: its countries map to GB.
    ("uk", "GB"),
    ("britain", "GB"),
    ("wales", "GB"),
    // United States.
    ("unitedstatesamerica", "US"),
    ("usofa", "US"),
    ("unitedstatesvirginislands", "VI"),
    ("usvi", "VI"),
    // Names in the country's own language, common in European CRMs.
    ("deutschland", "DE"),
    ("bundesrepublikdeutschland", "DE"),
    ("osterreich", "AT"),
    ("schweiz", "CH"),
    ("suisse", "CH"),
    ("svizzera", "CH"),
    ("nederland", "NL"),
    ("belgique", "BE"),
    ("belgie", "BE"),
    ("espana", "ES"),
    ("italia", "IT"),
    ("brasil", "BR"),
    ("sverige", "SE"),
    ("norge", "NO"),
    ("danmark", "DK"),
    ("suomi", "FI"),
    ("polska", "PL"),
    ("ceskarepublika", "CZ"),
    ("cesko", "CZ"),
    ("magyarorszag", "HU"),
    ("eire", "IE"),
    ("republicofireland", "IE"),
    // Short and older names.
    ("uae", "AE"),
    ("emirates", "AE"),
    ("drc", "CD"),
    ("drcongo", "CD"),
    ("democraticrepublicofcongo", "CD"),
    ("congokinshasa", "CD"),
    ("republicofcongo", "CG"),
    ("republicofthecongo", "CG"),
    ("congobrazzaville", "CG"),
    ("korearepublicof", "KR"),
    ("korearepublic", "KR"),
    ("rok", "KR"),
    ("koreasouth", "KR"),
    ("koreanorth", "KP"),
    ("czech", "CZ"),
    ("slovakrepublic", "SK"),
    ("kyrgyzrepublic", "KG"),
    ("socialistrepublicofvietnam", "VN"),
    ("plurinationalstateofbolivia", "BO"),
    ("taiwanprovinceofchina", "TW"),
    ("republicofchina", "TW"),
    ("peoplesrepublicofchina", "CN"),
    ("prc", "CN"),
    ("hongkongsar", "HK"),
    ("hongkongsarchina", "HK"),
    ("macaosar", "MO"),
    ("macaosarchina", "MO"),
    ("formeryugoslavrepublicofmacedonia", "MK"),
    ("sainthelenaascensionandtristandacunha", "SH"),
    ("sthelenaascensionandtristandacunha", "SH"),
    ("bonairesinteustatiusandsaba", "BQ"),
    ("caribbeannetherlands", "BQ"),
    ("sintmaarten", "SX"),
    ("heardislandandmcdonaldislands", "HM"),
    ("svalbard", "SJ"),
    ("libyanarabjamahiriya", "LY"),
];

/// Every key [`country`] knows → alpha-2: the ISO table's codes and names
/// (with and without a leading "the") and [`COUNTRY_ALIASES`].
fn country_table() -> &'static HashMap<String, &'static str> {
    static TABLE: OnceLock<HashMap<String, &'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut m = HashMap::new();
        for c in celes::Country::get_countries() {
            m.insert(c.alpha2.to_ascii_lowercase(), c.alpha2);
            m.insert(c.alpha3.to_ascii_lowercase(), c.alpha2);
            if let Some(k) = country_key(c.long_name) {
                m.insert(k, c.alpha2);
            }
            // celes spells a few names oddly ("Taiwan, Republic Of China").
            let compact: String = fold(c.long_name)
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect();
            m.entry(compact).or_insert(c.alpha2);
        }
        for (k, v) in COUNTRY_ALIASES {
            m.insert((*k).to_owned(), *v);
        }
        m
    })
}

/// The lookup key of a country name: folded (see [`fold`]), a leading
/// "the" dropped, then only letters and digits. `None` if nothing is left.
fn country_key(s: &str) -> Option<String> {
    let folded = fold(s);
    let mut words = folded.split_whitespace().peekable();
    if words.peek() == Some(&"the") {
        words.next();
    }
    let key: String = words.flat_map(|w| w.chars()).collect();
    (!key.is_empty()).then_some(key)
}

/// An ISO 3166-1 alpha-2 code, upper-case, from a code (`us`, `DEU`), an
/// English name (`Germany`, `The Netherlands`), an ISO-style inverted name
/// (`Korea, Republic of`) or a common alias (`U.S.A.`, `UK`, `Deutschland`,
/// `Holland`, `Ivory Coast`). Case, accents, punctuation and a leading "the"
/// do not matter. England, Scotland, Wales and Northern Ireland give `GB`;
/// Kosovo gives `XK`. `NA` is Namibia, but `N/A` is rejected.
pub fn country(s: &str) -> Cleaned {
    let Some(v) = trimmed(s) else {
        return Ok(None);
    };
    // "N/A" would otherwise read as NA, Namibia's code.
    if fold(v) == "n a" {
        return Err(Invalid::new(NOT_COUNTRY));
    }
    let table = country_table();
    let find = |candidate: &str| -> Option<&'static str> {
        let key = country_key(candidate)?;
        table.get(&key).copied().or_else(|| {
            celes::Country::from_alias(&key)
                .ok()
                .map(|c: celes::Country| c.alpha2)
        })
    };
    let mut candidates: Vec<Cow<'_, str>> = vec![Cow::Borrowed(v)];
    // "Korea, Republic of" → "Republic of Korea".
    if let Some((head, tail)) = v.rsplit_once(',') {
        candidates.push(Cow::Owned(format!("{tail} {head}")));
    }
    // "Holy See (Vatican City State)" → "Holy See".
    if let (Some(open), Some(close)) = (v.find('('), v.rfind(')')) {
        if open < close {
            candidates.push(Cow::Owned(format!("{} {}", &v[..open], &v[close + 1..])));
        }
    }
    candidates
        .iter()
        .find_map(|c| find(c))
        .map(|code| Some(code.to_owned()))
        .ok_or_else(|| Invalid::new(NOT_COUNTRY))
}

// ---------------------------------------------------------------------------
// name keys

/// Letters NFKD does not decompose but that people type without the mark.
fn fold_letter(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'ł' => "l",
        'đ' | 'ð' => "d",
        'þ' => "th",
        'ı' => "i",
        _ => return None,
    })
}

/// Lower-case, accents stripped (NFKD, combining marks dropped, a few
/// letters folded: ß → ss, æ → ae, ø → o, ł → l ...), apostrophes and dots
/// dropped so that `O'Brien` → `obrien` and `S.A.` → `sa`, `&` read as
/// "and", every other non-alphanumeric character a space; words joined by
/// one space. May be empty.
fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let push = |c: char, out: &mut String| {
        if is_combining_mark(c) {
            return;
        }
        for l in c.to_lowercase() {
            if is_combining_mark(l) {
                continue;
            }
            if let Some(f) = fold_letter(l) {
                out.push_str(f);
            } else if l.is_alphanumeric() {
                out.push(l);
            } else if !out.ends_with(' ') {
                out.push(' ');
            }
        }
    };
    for c in s.chars() {
        match c {
            '\'' | '’' | '‘' | 'ʼ' | '`' | '´' | '.' => {}
            '&' | '＆' => {
                for a in " and ".chars() {
                    push(a, &mut out);
                }
            }
            _ => decompose_compatible(c, |d| push(d, &mut out)),
        }
    }
    let t = out.trim();
    if t.len() == out.len() {
        out
    } else {
        t.to_owned()
    }
}

/// A key for matching people by name: see [`fold`]. `Zoë  O’Brien-Smith`
/// → `zoe obrien smith`. `None` if no letter or digit is left.
pub fn name_key(s: &str) -> Option<String> {
    let k = fold(s);
    (!k.is_empty()).then_some(k)
}

/// Legal forms [`company_key`] drops from the end of a name, as word
/// sequences after [`fold`]. Longer ones first.
const LEGAL_FORMS: &[&[&str]] = &[
    &["limited", "liability", "company"],
    &["public", "limited", "company"],
    &["kabushiki", "kaisha"],
    &["sa", "de", "cv"],
    &["s", "a", "r", "l"],
    &["s", "p", "a"],
    &["s", "r", "l"],
    &["s", "a", "s"],
    &["pty", "ltd"],
    &["pty", "limited"],
    &["pte", "ltd"],
    &["pvt", "ltd"],
    &["private", "limited"],
    &["co", "ltd"],
    &["co", "limited"],
    &["sdn", "bhd"],
    &["de", "cv"],
    &["and", "co"],
    &["and", "cie"],
    &["s", "a"],
    &["s", "l"],
    &["a", "s"],
    &["a", "g"],
    &["b", "v"],
    &["n", "v"],
    &["inc"],
    &["incorporated"],
    &["llc"],
    &["llp"],
    &["lp"],
    &["pllc"],
    &["ltd"],
    &["limited"],
    &["ltda"],
    &["ltee"],
    &["gmbh"],
    &["mbh"],
    &["ag"],
    &["kg"],
    &["kgaa"],
    &["ohg"],
    &["ug"],
    &["se"],
    &["sa"],
    &["sas"],
    &["sarl"],
    &["spa"],
    &["srl"],
    &["sl"],
    &["slu"],
    &["sprl"],
    &["bv"],
    &["bvba"],
    &["nv"],
    &["plc"],
    &["corp"],
    &["corporation"],
    &["co"],
    &["company"],
    &["cie"],
    &["oy"],
    &["oyj"],
    &["ab"],
    &["as"],
    &["asa"],
    &["aps"],
    &["pty"],
    &["pte"],
    &["kk"],
    &["bhd"],
    &["pvt"],
];

/// A key for matching companies by name: [`name_key`], then a leading
/// "the" and any legal forms at the end dropped (`The Acme Company, Inc.`
/// → `acme`; `Müller GmbH & Co. KG` → `muller`). A name that is nothing but
/// a legal form keeps its last word. `None` if empty.
pub fn company_key(s: &str) -> Option<String> {
    let k = fold(s);
    let mut words: Vec<&str> = k.split(' ').filter(|w| !w.is_empty()).collect();
    if words.len() > 1 && words[0] == "the" {
        words.remove(0);
    }
    'strip: loop {
        for form in LEGAL_FORMS {
            if words.len() > form.len() && words.ends_with(form) {
                words.truncate(words.len() - form.len());
                continue 'strip;
            }
        }
        break;
    }
    (!words.is_empty()).then(|| words.join(" "))
}

/// Clean a value of a unified model field by its kind (`crm_sync.unified_fields.kind`):
/// the cleaners above, plus `numeric` (thousands separators dropped),
/// `date` (`YYYY-MM-DD`, or the date of a timestamp), `timestamptz` (RFC
/// 3339 in UTC), `ref` and `text` (whitespace normalised). `Err` holds why
/// the value is invalid.
pub fn field(kind: &str, raw: &str, region: Option<&str>) -> Result<Option<String>, String> {
    let reason = |e: Invalid| e.reason().to_owned();
    let t = raw.trim();
    match kind {
        "email" => email(raw).map_err(reason),
        "phone" => phone(raw, region).map_err(reason),
        "domain" => domain(raw).map_err(reason),
        "country" => country(raw).map_err(reason),
        _ if t.is_empty() => Ok(None),
        "numeric" => {
            let n = t.replace(',', "");
            if n.parse::<f64>().is_ok_and(f64::is_finite) {
                Ok(Some(n))
            } else {
                Err("not a number".into())
            }
        }
        "date" => match crate::types::parse_datetime(t) {
            Some(d) => Ok(Some(d.format("%Y-%m-%d").to_string())),
            None => chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                .map(|d| Some(d.to_string()))
                .map_err(|_| "not a date".into()),
        },
        "timestamptz" => crate::types::parse_datetime(t)
            .or_else(|| crate::types::parse_datetime(&from_postgres_text(t)))
            .map(|d| Some(d.to_rfc3339()))
            .ok_or_else(|| "not a timestamp".into()),
        _ => Ok(text(raw)),
    }
}

/// Postgres' text form of a timestamptz (`2024-06-01 00:00:01.5+00`, what
/// a mapping over a timestamptz column gives) in ISO 8601 form.
fn from_postgres_text(t: &str) -> String {
    let mut s = t.replacen(' ', "T", 1);
    // A bare hour offset, +00 or -05, gets its minutes.
    let b = s.as_bytes();
    if b.len() > 3
        && matches!(b[b.len() - 3], b'+' | b'-')
        && b[b.len() - 2..].iter().all(u8::is_ascii_digit)
    {
        s.push_str(":00");
    }
    s
}

#[cfg(test)]
mod tests;
