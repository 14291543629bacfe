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
        if !phonenumber::is_valid(&n) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: Cleaned) -> String {
        r.unwrap_or_else(|e| panic!("rejected: {e}"))
            .expect("empty")
    }

    fn reason(r: Cleaned) -> String {
        match r {
            Err(e) => e.reason().to_owned(),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    // --- text

    #[test]
    fn clean_text_collapses_every_kind_of_space() {
        assert_eq!(text("  Ada   Lovelace "), Some("Ada Lovelace".into()));
        assert_eq!(
            text("Ada\u{a0}Lovelace\t\r\n  Analyst"),
            Some("Ada Lovelace Analyst".into())
        );
        assert_eq!(text("\u{feff}Acme\u{200b}Corp"), Some("Acme Corp".into()));
        assert_eq!(text("Ünïcode  kept"), Some("Ünïcode kept".into()));
        assert_eq!(text(""), None);
        assert_eq!(text(" \u{a0}\t\n "), None);
    }

    // --- email

    #[test]
    fn clean_email_accepts_messy_forms() {
        let cases = [
            (" Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
            ("mailto:x@y.io", "x@y.io"),
            ("MAILTO:x@y.io?subject=Hello", "x@y.io"),
            ("<ada@example.com>", "ada@example.com"),
            ("Ada Lovelace <Ada@Example.com>", "ada@example.com"),
            ("\"Lovelace, Ada\" < ada@example.com >", "ada@example.com"),
            ("first+crm@sub.example.co.uk", "first+crm@sub.example.co.uk"),
            ("o'brien@example.ie", "o'brien@example.ie"),
            ("user_name-1@my-company.com", "user_name-1@my-company.com"),
            ("ada@example.com.", "ada@example.com"),
            ("\u{a0}ada@example.com\u{a0}", "ada@example.com"),
            ("jürgen@müller.de", "jürgen@xn--mller-kva.de"),
            ("info@xn--mller-kva.de", "info@xn--mller-kva.de"),
            ("a@b.xn--p1ai", "a@b.xn--p1ai"),
            ("A@B.CD", "a@b.cd"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(email(input)), want, "{input:?}");
        }
    }

    #[test]
    fn clean_email_rejects_non_addresses() {
        let bad = [
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "ada@ex@ample.com",
            "ada lovelace@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "ada..lovelace@example.com",
            "ada@example..com",
            "ada@-example.com",
            "ada@example-.com",
            "ada@exa_mple.com",
            "ada@example.c",
            "ada@example.c0m",
            "ada@127.0.0.1",
            "ada@[127.0.0.1]",
            "\"ada lovelace\"@example.com",
            "ada@example.com>",
            "mailto:",
            "<>",
            "n/a",
            "ada(at)example.com",
        ];
        for input in bad {
            assert_eq!(reason(email(input)), "not an email address", "{input:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(email(&long_local).is_err());
        let long_label = format!("ada@{}.com", "a".repeat(64));
        assert!(email(&long_label).is_err());
    }

    #[test]
    fn clean_email_empty_is_null() {
        assert_eq!(email(""), Ok(None));
        assert_eq!(email("  \t"), Ok(None));
    }

    // --- phone

    #[test]
    fn clean_phone_to_e164() {
        let cases = [
            ("(415) 555-2671", Some("US"), "+14155552671"),
            ("415.555.2671", Some("us"), "+14155552671"),
            ("1-415-555-2671", Some("US"), "+14155552671"),
            ("+1 (415) 555-2671", None, "+14155552671"),
            ("+44 20 7946 0958", None, "+442079460958"),
            ("+44 20 7946 0958", Some("US"), "+442079460958"),
            ("+44 (0)20 7946 0958", None, "+442079460958"),
            ("020 7946 0958", Some("GB"), "+442079460958"),
            ("020 7946 0958", Some("United Kingdom"), "+442079460958"),
            ("07911 123456", Some("uk"), "+447911123456"),
            ("0049 30 123456", None, "+4930123456"),
            ("0049 30 123456", Some("US"), "+4930123456"),
            ("030 123456", Some("DE"), "+4930123456"),
            ("+49 (0) 30 123456", Some("FR"), "+4930123456"),
            ("01 23 45 67 89", Some("FR"), "+33123456789"),
            ("011 49 30 123456", Some("US"), "+4930123456"),
            ("(415) 555-2671 ext. 12", Some("US"), "+14155552671"),
            ("415-555-2671 x12", Some("US"), "+14155552671"),
            ("+1 415 555 2671 ext 12", None, "+14155552671"),
            ("tel:+1-415-555-2671", None, "+14155552671"),
            ("1-800-FLOWERS", Some("US"), "+18003569377"),
            ("\u{a0}+14155552671\u{a0}", None, "+14155552671"),
        ];
        for (input, region, want) in cases {
            assert_eq!(ok(phone(input, region)), want, "{input:?} {region:?}");
        }
    }

    #[test]
    fn clean_phone_rejects_invalid_numbers() {
        assert_eq!(
            reason(phone("555-1234", Some("US"))),
            "not a valid phone number for region US"
        );
        assert_eq!(
            reason(phone("12", Some("DE"))),
            "not a valid phone number for region DE"
        );
        assert_eq!(
            reason(phone("n/a", Some("GB"))),
            "not a valid phone number for region GB"
        );
        assert_eq!(
            reason(phone("+1 000 000 0000", None)),
            "not a valid phone number"
        );
        assert_eq!(
            reason(phone("+999 123 456 789", None)),
            "not a valid phone number"
        );
        assert_eq!(
            reason(phone("(415) 555-2671", None)),
            "no country code in the phone number and no default region"
        );
        assert_eq!(
            reason(phone("(415) 555-2671", Some(" "))),
            "no country code in the phone number and no default region"
        );
        assert_eq!(
            reason(phone("(415) 555-2671", Some("Narnia"))),
            "unknown phone region \"Narnia\""
        );
        assert_eq!(
            reason(phone("123 456", Some("AQ"))),
            "no phone numbering plan for region AQ"
        );
    }

    #[test]
    fn clean_phone_empty_is_null_and_garbage_never_panics() {
        assert_eq!(phone("", Some("US")), Ok(None));
        assert_eq!(phone(" ", None), Ok(None));
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "0123456789+()-. xext;=#*tel:\u{a0}٠١٢".chars().collect();
        for _ in 0..5_000 {
            let len = rng.usize(0..30);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            for region in [None, Some("US"), Some("DE"), Some("IN")] {
                let _ = phone(&s, region);
            }
        }
    }

    // --- domain

    #[test]
    fn clean_domain_from_urls_hosts_and_addresses() {
        let cases = [
            ("https://www.Acme.com/about?x=1", "acme.com"),
            ("acme.com.", "acme.com"),
            ("http://user@eu.acme.co.uk:8080/", "eu.acme.co.uk"),
            ("http://user:pw@www.acme.com:443/x#top", "acme.com"),
            ("www.acme.com", "acme.com"),
            ("WWW.ACME.COM/contact", "acme.com"),
            ("acme.com:8080", "acme.com"),
            ("//acme.com/path", "acme.com"),
            ("ftp://files.acme.com", "files.acme.com"),
            ("sales@Acme.com", "acme.com"),
            ("mailto:sales@acme.com", "acme.com"),
            ("eu.acme.com", "eu.acme.com"),
            ("www2.acme.com", "www2.acme.com"),
            ("www.com", "www.com"),
            ("https://münchen.de/", "xn--mnchen-3ya.de"),
            ("xn--mnchen-3ya.de", "xn--mnchen-3ya.de"),
            ("https://acme.com?utm_source=hubspot", "acme.com"),
            (" \u{a0}acme.io ", "acme.io"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(domain(input)), want, "{input:?}");
        }
    }

    #[test]
    fn clean_domain_rejects_non_domains() {
        let bad = [
            "Acme Inc",
            "acme",
            "localhost",
            "http://localhost:3000",
            "192.168.0.1",
            "http://[::1]/",
            "n/a",
            "-",
            "acme .com",
            "acme_corp.com",
            "https://",
            "acme.c",
            "mailto:",
            "file:///etc/passwd",
        ];
        for input in bad {
            assert_eq!(
                reason(domain(input)),
                "not a website or domain",
                "{input:?}"
            );
        }
        assert_eq!(domain("  "), Ok(None));
    }

    // --- country

    #[test]
    fn clean_country_names_codes_and_aliases() {
        let cases = [
            ("us", "US"),
            ("GB", "GB"),
            ("USA", "US"),
            ("DEU", "DE"),
            ("United States", "US"),
            ("United States of America", "US"),
            ("U.S.", "US"),
            ("U.S.A.", "US"),
            ("the United States", "US"),
            ("Germany", "DE"),
            ("Deutschland", "DE"),
            ("UK", "GB"),
            ("U.K.", "GB"),
            ("United Kingdom", "GB"),
            ("Great Britain", "GB"),
            ("England", "GB"),
            ("Scotland", "GB"),
            ("Wales", "GB"),
            ("Northern Ireland", "GB"),
            ("Holland", "NL"),
            ("The Netherlands", "NL"),
            ("Netherlands, The", "NL"),
            ("netherlands", "NL"),
            ("South Korea", "KR"),
            ("Korea, Republic of", "KR"),
            ("Korea, Democratic People's Republic of", "KP"),
            ("Russia", "RU"),
            ("Russian Federation", "RU"),
            ("Czech Republic", "CZ"),
            ("Czechia", "CZ"),
            ("Ivory Coast", "CI"),
            ("Côte d'Ivoire", "CI"),
            ("côte d’ivoire", "CI"),
            ("COTE D'IVOIRE", "CI"),
            ("Vietnam", "VN"),
            ("Viet Nam", "VN"),
            ("  france ", "FR"),
            ("Türkiye", "TR"),
            ("Turkey", "TR"),
            ("Åland Islands", "AX"),
            ("Curaçao", "CW"),
            ("Réunion", "RE"),
            ("Iran, Islamic Republic of", "IR"),
            ("Tanzania, United Republic of", "TZ"),
            ("Bolivia, Plurinational State of", "BO"),
            ("Venezuela, Bolivarian Republic of", "VE"),
            ("Congo, the Democratic Republic of the", "CD"),
            ("Democratic Republic of the Congo", "CD"),
            ("Congo", "CG"),
            ("Virgin Islands, British", "VG"),
            ("Virgin Islands, U.S.", "VI"),
            ("Holy See (Vatican City State)", "VA"),
            ("Taiwan", "TW"),
            ("Taiwan, Province of China", "TW"),
            ("Hong Kong", "HK"),
            ("Lao People's Democratic Republic", "LA"),
            ("Micronesia, Federated States of", "FM"),
            ("Saint Helena, Ascension and Tristan da Cunha", "SH"),
            ("Bonaire, Sint Eustatius and Saba", "BQ"),
            ("Sint Maarten (Dutch part)", "SX"),
            ("Saint Martin (French part)", "MF"),
            ("Falkland Islands (Malvinas)", "FK"),
            ("Cocos (Keeling) Islands", "CC"),
            ("Heard Island and McDonald Islands", "HM"),
            ("Timor-Leste", "TL"),
            ("Guinea-Bissau", "GW"),
            ("UAE", "AE"),
            ("United Arab Emirates", "AE"),
            ("Schweiz", "CH"),
            ("España", "ES"),
            ("Österreich", "AT"),
            ("Kosovo", "XK"),
        ];
        for (input, want) in cases {
            assert_eq!(ok(country(input)), want, "{input:?}");
        }
    }

    #[test]
    fn clean_country_rejects_unknown() {
        for input in [
            "Narnia",
            "Europe",
            "EU",
            "California",
            "Korea",
            "XX",
            "ZZZ",
            "-",
            "n/a",
            "N / A",
        ] {
            assert_eq!(reason(country(input)), "not a country", "{input:?}");
        }
        assert_eq!(country(" "), Ok(None));
    }

    /// The 249 ISO 3166-1 alpha-2 codes as of 2024, each found by its code,
    /// its alpha-3 and the table's own name.
    #[test]
    fn clean_country_covers_iso_3166_1() {
        const ISO: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG \
            BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR \
            CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD \
            GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO \
            IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU \
            LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE \
            NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS \
            RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH \
            TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT \
            ZA ZM ZW";
        let codes: Vec<&str> = ISO.split_whitespace().collect();
        assert_eq!(codes.len(), 249);
        for code in &codes {
            assert_eq!(ok(country(code)), *code);
            assert_eq!(ok(country(&code.to_lowercase())), *code);
        }
        for c in celes::Country::get_countries() {
            assert!(
                codes.contains(&c.alpha2) || c.alpha2 == "XK",
                "{}",
                c.alpha2
            );
            assert_eq!(ok(country(c.alpha3)), c.alpha2, "{}", c.alpha3);
            assert_eq!(ok(country(c.long_name)), c.alpha2, "{}", c.long_name);
        }
    }

    // --- name keys

    #[test]
    fn name_key_folds_people() {
        let cases = [
            ("Ada Lovelace", "ada lovelace"),
            ("  ADA   LOVELACE ", "ada lovelace"),
            ("Zoë O’Brien-Smith", "zoe obrien smith"),
            ("José  García", "jose garcia"),
            ("Jürgen Müller", "jurgen muller"),
            ("Günther Straße", "gunther strasse"),
            ("Søren Kierkegaard", "soren kierkegaard"),
            ("Łukasz Żółć", "lukasz zolc"),
            ("Lovelace, Ada", "lovelace ada"),
            ("J.R.R. Tolkien", "jrr tolkien"),
            ("Dr. Ada Lovelace (CTO)", "dr ada lovelace cto"),
            ("ＡＣＭＥ", "acme"),
            ("İlhan", "ilhan"),
            ("Иван Петров", "иван петров"),
            ("Ada\u{a0}Lovelace", "ada lovelace"),
        ];
        for (input, want) in cases {
            assert_eq!(name_key(input).as_deref(), Some(want), "{input:?}");
        }
        assert_eq!(name_key(""), None);
        assert_eq!(name_key(" -- , . "), None);
    }

    #[test]
    fn company_key_drops_legal_forms() {
        let cases = [
            ("Acme, Inc.", "acme"),
            ("ACME Corporation", "acme"),
            ("Acme Inc", "acme"),
            ("acme incorporated", "acme"),
            ("The Acme Company", "acme"),
            ("Acme Co., Ltd.", "acme"),
            ("Acme LLC", "acme"),
            ("Acme, L.L.C.", "acme"),
            ("Acme Ltd", "acme"),
            ("Acme Limited", "acme"),
            ("Acme Pty Ltd", "acme"),
            ("Acme Pte. Ltd.", "acme"),
            ("Müller GmbH", "muller"),
            ("Müller GmbH & Co. KG", "muller"),
            ("Siemens AG", "siemens"),
            ("Airbus SE", "airbus"),
            ("Renault S.A.", "renault"),
            ("Renault S. A.", "renault"),
            ("Renault SAS", "renault"),
            ("Fiat S.p.A.", "fiat"),
            ("Acme S.r.l.", "acme"),
            ("Philips N.V.", "philips"),
            ("Acme B.V.", "acme"),
            ("Acme plc", "acme"),
            ("Nokia Oyj", "nokia"),
            ("Volvo AB", "volvo"),
            ("Maersk A/S", "maersk"),
            ("Equinor ASA", "equinor"),
            ("Acme Sdn Bhd", "acme"),
            ("Acme S.A. de C.V.", "acme"),
            ("Smith & Co", "smith"),
            ("Johnson & Johnson", "johnson and johnson"),
            ("Johnson and Johnson Inc.", "johnson and johnson"),
            ("The Coca-Cola Company", "coca cola"),
            ("Société Générale S.A.", "societe generale"),
            ("3M Company", "3m"),
            ("Acme Holdings", "acme holdings"),
            ("The Company", "company"),
            ("Inc.", "inc"),
            ("The", "the"),
            ("Acme Corp. (Europe)", "acme corp europe"),
        ];
        for (input, want) in cases {
            assert_eq!(company_key(input).as_deref(), Some(want), "{input:?}");
        }
        assert_eq!(company_key("  "), None);
        assert_eq!(company_key(", ."), None);
    }

    #[test]
    fn clean_never_panics_on_garbage() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: Vec<char> = "aZ09@.:/<>-_+ ,'’()xn\u{a0}\u{200b}éßİ٠🙂mailtohttpwww"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = rng.usize(0..24);
            let s: String = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            let _ = (text(&s), email(&s), domain(&s), country(&s));
            let _ = (name_key(&s), company_key(&s), phone(&s, Some(&s)));
        }
    }

    // --- dispatch

    #[test]
    fn clean_by_kind() {
        assert_eq!("Email".parse(), Ok(Kind::Email));
        assert_eq!(" phone ".parse(), Ok(Kind::Phone));
        assert!("zip".parse::<Kind>().is_err());
        assert_eq!(
            clean(Kind::Phone, "020 7946 0958", Some("GB")),
            Ok(Some("+442079460958".into()))
        );
        assert_eq!(
            clean(Kind::Domain, "x", None).unwrap_err().reason(),
            NOT_DOMAIN
        );
        assert_eq!(clean(Kind::Country, "", None), Ok(None));
        assert_eq!(
            clean(Kind::Email, "a@b.co", None),
            Ok(Some("a@b.co".into()))
        );
    }

    // --- cost per value

    /// `cargo test --release -p crm_sync_core clean_cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn clean_cost_per_value() {
        use std::time::Instant;
        const N: usize = 200_000;
        let mut rng = fastrand::Rng::with_seed(1);
        // Mostly valid numbers as CRMs hold them, one in ten international,
        // one in ten junk (invalid numbers cost the most: every number type
        // is tried).
        let area = [
            "415", "212", "646", "312", "617", "202", "303", "206", "512", "713",
        ];
        let phones: Vec<String> = (0..N)
            .map(|i| {
                let a = area[rng.usize(..area.len())];
                let b = rng.u32(200..1000);
                let c = rng.u32(0..10_000);
                match i % 10 {
                    0 => format!("({a}) {b}-{c:04}"),
                    1 => format!("+1 {a} {b} {c:04}"),
                    2 => format!("{a}.{b}.{c:04} x12"),
                    3 => format!("1-{a}-{b}-{c:04}"),
                    4 => format!("{a}{b}{c:04}"),
                    5 => format!("{a}-{b}-{c:04}"),
                    6 => format!("({a}) {b} {c:04}"),
                    7 => format!("+44 20 7946 {c:04}"),
                    8 => format!("0049 30 {b}{c:04}"),
                    _ => format!("{b}-{c:04}"),
                }
            })
            .collect();
        let emails: Vec<String> = (0..N)
            .map(|i| match i % 4 {
                0 => format!(" First.Last{i}@Example{}.COM ", i % 97),
                1 => format!("Name {i} <user{i}@sub.example.co.uk>"),
                2 => format!("mailto:u{i}@acme.io"),
                _ => format!("bad {i}@example"),
            })
            .collect();

        let t = Instant::now();
        let _ = phone("+14155552671", None);
        eprintln!("phone first call (metadata load): {:?}", t.elapsed());

        let t = Instant::now();
        let valid = phones
            .iter()
            .filter(|p| matches!(phone(p, Some("US")), Ok(Some(_))))
            .count();
        let el = t.elapsed();
        eprintln!(
            "phone: {N} values ({valid} valid) in {el:?}: {:.2} µs/value",
            el.as_secs_f64() * 1e6 / N as f64
        );

        let t = Instant::now();
        let valid = emails
            .iter()
            .filter(|e| matches!(email(e), Ok(Some(_))))
            .count();
        let el = t.elapsed();
        eprintln!(
            "email: {N} values ({valid} valid) in {el:?}: {:.2} µs/value",
            el.as_secs_f64() * 1e6 / N as f64
        );
    }
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
mod field_tests {
    use super::field;

    #[test]
    fn fields_are_cleaned_by_kind() {
        assert_eq!(
            field("numeric", " 1,250.50 ", None),
            Ok(Some("1250.50".into()))
        );
        assert!(field("numeric", "lots", None).is_err());
        assert_eq!(
            field("date", "2024-03-01T10:00:00Z", None),
            Ok(Some("2024-03-01".into()))
        );
        assert_eq!(
            field("date", "2024-03-01", None),
            Ok(Some("2024-03-01".into()))
        );
        assert!(field("date", "soon", None).is_err());
        assert_eq!(field("timestamptz", "", None), Ok(None));
        assert_eq!(
            field("text", "  Ada \n Lovelace ", None),
            Ok(Some("Ada Lovelace".into()))
        );
        assert_eq!(
            field("email", "ADA@Example.com", None),
            Ok(Some("ada@example.com".into()))
        );
        assert!(field("email", "ada at example", None).is_err());
    }
}

#[cfg(test)]
mod postgres_text_tests {
    use super::field;

    #[test]
    fn postgres_timestamptz_text_is_read() {
        for (t, want) in [
            ("2024-06-01 00:00:01+00", "2024-06-01T00:00:01+00:00"),
            ("2024-06-01 00:00:01.5+00", "2024-06-01T00:00:01.500+00:00"),
            ("2023-01-01T00:00:00.000+0000", "2023-01-01T00:00:00+00:00"),
        ] {
            assert_eq!(
                field("timestamptz", t, None),
                Ok(Some(want.to_owned())),
                "{t}"
            );
        }
    }
}
