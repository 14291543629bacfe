//! A mock of the Microsoft Dataverse Web API (Dynamics 365), OData v4, and
//! of the Microsoft Entra ID token endpoint it trusts, on one port.
//!
//! As documented (crates/core/src/connectors/dynamics/README.md cites each
//! page):
//! - Tables under `/api/data/v9.2/{entity set}`: `$select`, `$filter`
//!   (`modifiedon` comparisons joined by `and`, `Microsoft.Dynamics.CRM.In`
//!   on the primary key), `Prefer: odata.maxpagesize=N` (at most 5,000,
//!   echoed in `Preference-Applied`), `@odata.nextLink` absolute, with a
//!   `$skiptoken` paging cookie; the primary key is always returned;
//!   lookups as `_{name}_value`; `@odata.etag` `W/"{versionnumber}"`;
//!   `Prefer: odata.include-annotations="OData.Community.Display.V1.FormattedValue"`
//!   adds each option set's, lookup's and boolean's label before its value.
//! - Change tracking (`Prefer: odata.track-changes`) on tables that have it
//!   enabled: the full read pages with nextLinks and its last page carries
//!   `@odata.deltaLink` (`$deltatoken={version}!{MM/dd/yyyy HH:mm:ss}`);
//!   a delta read returns rows changed since (by version) then
//!   `$deletedEntity` entries (`id`, `reason: deleted`), paged the same
//!   way, and another deltaLink. `$filter`, `$orderby`, `$expand` and `$top`
//!   are refused with it. A token older than the retention (an admin call
//!   here) fails with `0x80044352` "Version stamp associated with the client
//!   has expired. Please perform a full sync." A table without change
//!   tracking ignores the preference: no deltaLink.
//! - Metadata: `EntityDefinitions` (LogicalName, EntitySetName,
//!   PrimaryIdAttribute, ChangeTrackingEnabled, IsCustomEntity,
//!   DisplayName as a Label) and `EntityDefinitions(LogicalName='x')/Attributes`
//!   (AttributeType, AttributeTypeName, IsValidForRead, IsCustomAttribute,
//!   AttributeOf: a lookup's name helper, which cannot be selected).
//! - Entra ID: `POST /{tenant}/oauth2/v2.0/token`, client credentials with
//!   `scope={environment}/.default`; a bad secret is 401 `invalid_client`
//!   (AADSTS7000215), an unknown tenant 400 (AADSTS90002). Tokens expire
//!   (`--token-ttl`); the API answers an expired one with 401 and
//!   `WWW-Authenticate: Bearer error="invalid_token"`.
//! - Service protection: a per-user window of requests (6,000 in 300 s;
//!   smaller by admin call) answered past its end with 429, `Retry-After`
//!   in seconds and `{"error":{"code":"0x80072322",...}}`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::data::{mix, FIRST, LAST, T0_MS, WORDS};
use crate::faults::{echo_text, sent_secrets, Picked};
use crate::mock::{Base, Mock};
use crate::people;
use crate::server::{Request, Response};

/// Largest page `odata.maxpagesize` gives.
pub const MAX_PAGE: usize = 5_000;
/// Change versions of the org start here; seeded rows have versions below.
const VERSION_BASE: u64 = 10_000_000;
const API: &str = "/api/data/v9.2/";
/// Seeded rows were modified 30 s apart from T0.
const STEP_S: i64 = 30;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub contacts: u64,
    pub accounts: u64,
    pub leads: u64,
    pub opportunities: u64,
    pub users: u64,
    pub projects: u64,
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// Seconds an access token lives.
    pub token_ttl: u64,
    /// The app's certificate (PEM) and its public key (PEM), for client
    /// assertions (certificate credentials).
    pub client_cert: Option<String>,
    pub client_cert_key: Option<String>,
    pub shared_people: u64,
    pub gzip: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            contacts: 120,
            accounts: 30,
            leads: 20,
            opportunities: 40,
            users: 3,
            projects: 10,
            tenant: "7a1b2c3d-0000-4000-8000-00000000d365".into(),
            client_id: "dv-client".into(),
            client_secret: "dv-secret".into(),
            token_ttl: 3599,
            client_cert: None,
            client_cert_key: None,
            shared_people: 0,
            gzip: false,
        }
    }
}

/// The tables of the mock org.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ent {
    Contact,
    Account,
    Lead,
    Opportunity,
    SystemUser,
    Project,
}

const ENTS: [Ent; 6] = [
    Ent::Contact,
    Ent::Account,
    Ent::Lead,
    Ent::Opportunity,
    Ent::SystemUser,
    Ent::Project,
];

impl Ent {
    pub fn logical(self) -> &'static str {
        match self {
            Ent::Contact => "contact",
            Ent::Account => "account",
            Ent::Lead => "lead",
            Ent::Opportunity => "opportunity",
            Ent::SystemUser => "systemuser",
            Ent::Project => "new_project",
        }
    }
    pub fn set(self) -> &'static str {
        match self {
            Ent::Contact => "contacts",
            Ent::Account => "accounts",
            Ent::Lead => "leads",
            Ent::Opportunity => "opportunities",
            Ent::SystemUser => "systemusers",
            Ent::Project => "new_projects",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Ent::Contact => "Contact",
            Ent::Account => "Account",
            Ent::Lead => "Lead",
            Ent::Opportunity => "Opportunity",
            Ent::SystemUser => "User",
            Ent::Project => "Project",
        }
    }
    fn key(self) -> String {
        format!("{}id", self.logical())
    }
    pub fn parse(s: &str) -> Option<Ent> {
        ENTS.iter()
            .copied()
            .find(|e| e.logical() == s || e.set() == s)
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// An attribute as `EntityDefinitions(...)/Attributes` lists it.
#[derive(Debug, Clone, Copy)]
struct Attr {
    name: &'static str,
    /// AttributeType.
    ty: &'static str,
    /// AttributeTypeName.Value.
    type_name: &'static str,
    label: &'static str,
    custom: bool,
    /// The attribute this one is a helper of (`parentcustomeridname`).
    of: Option<&'static str>,
    /// Option set values and labels.
    options: &'static [(i64, &'static str)],
}

const STATE: &[(i64, &str)] = &[(0, "Active"), (1, "Inactive")];
const STATUS: &[(i64, &str)] = &[(1, "Active"), (2, "Inactive")];
const CONTACT_METHOD: &[(i64, &str)] = &[(1, "Any"), (2, "Email"), (3, "Phone"), (4, "Fax")];
const TIER: &[(i64, &str)] = &[
    (100_000_000, "Bronze"),
    (100_000_001, "Silver"),
    (100_000_002, "Gold"),
];
const INDUSTRY: &[(i64, &str)] = &[
    (1, "Accounting"),
    (7, "Consulting"),
    (9, "Design"),
    (33, "Transportation"),
];
const LEAD_SOURCE: &[(i64, &str)] = &[(1, "Advertisement"), (4, "Web"), (8, "Trade Show")];
const SALES_STAGE: &[(i64, &str)] = &[(0, "Qualify"), (1, "Develop"), (2, "Propose"), (3, "Close")];

const fn a(name: &'static str, ty: &'static str, label: &'static str) -> Attr {
    Attr {
        name,
        ty,
        type_name: "",
        label,
        custom: false,
        of: None,
        options: &[],
    }
}

const fn opt(
    name: &'static str,
    ty: &'static str,
    label: &'static str,
    o: &'static [(i64, &'static str)],
) -> Attr {
    Attr {
        options: o,
        ..a(name, ty, label)
    }
}

const fn helper(name: &'static str, of: &'static str) -> Attr {
    Attr {
        of: Some(of),
        ..a(name, "String", "")
    }
}

const fn custom(a: Attr) -> Attr {
    Attr { custom: true, ..a }
}

/// The attributes every table has last.
const COMMON: [Attr; 6] = [
    a("ownerid", "Owner", "Owner"),
    opt("statecode", "State", "Status", STATE),
    opt("statuscode", "Status", "Status Reason", STATUS),
    a("createdon", "DateTime", "Created On"),
    a("modifiedon", "DateTime", "Modified On"),
    a("versionnumber", "BigInt", "Version Number"),
];

fn attrs(e: Ent) -> Vec<Attr> {
    let own: Vec<Attr> = match e {
        Ent::Contact => vec![
            a("contactid", "Uniqueidentifier", "Contact"),
            a("firstname", "String", "First Name"),
            a("lastname", "String", "Last Name"),
            a("fullname", "String", "Full Name"),
            a("emailaddress1", "String", "Email"),
            a("telephone1", "String", "Business Phone"),
            a("mobilephone", "String", "Mobile Phone"),
            a("jobtitle", "String", "Job Title"),
            a("address1_country", "String", "Address 1: Country/Region"),
            a("parentcustomerid", "Customer", "Company Name"),
            helper("parentcustomeridname", "parentcustomerid"),
            opt(
                "preferredcontactmethodcode",
                "Picklist",
                "Preferred Method of Contact",
                CONTACT_METHOD,
            ),
            a("donotemail", "Boolean", "Do not allow Emails"),
            a("annualincome", "Money", "Annual Income"),
            a("birthdate", "DateTime", "Birthday"),
            a("description", "Memo", "Description"),
            custom(opt("new_loyaltytier", "Picklist", "Loyalty Tier", TIER)),
            a("entityimage", "Virtual", "Default Image"),
        ],
        Ent::Account => vec![
            a("accountid", "Uniqueidentifier", "Account"),
            a("name", "String", "Account Name"),
            a("websiteurl", "String", "Website"),
            a("telephone1", "String", "Main Phone"),
            a("address1_country", "String", "Address 1: Country/Region"),
            opt("industrycode", "Picklist", "Industry", INDUSTRY),
            a("numberofemployees", "Integer", "Number of Employees"),
            a("revenue", "Money", "Annual Revenue"),
            a("primarycontactid", "Lookup", "Primary Contact"),
        ],
        Ent::Lead => vec![
            a("leadid", "Uniqueidentifier", "Lead"),
            a("firstname", "String", "First Name"),
            a("lastname", "String", "Last Name"),
            a("fullname", "String", "Name"),
            a("emailaddress1", "String", "Email"),
            a("telephone1", "String", "Business Phone"),
            a("companyname", "String", "Company Name"),
            a("websiteurl", "String", "Website"),
            a("jobtitle", "String", "Job Title"),
            a("address1_country", "String", "Address 1: Country/Region"),
            opt("leadsourcecode", "Picklist", "Lead Source", LEAD_SOURCE),
        ],
        Ent::Opportunity => vec![
            a("opportunityid", "Uniqueidentifier", "Opportunity"),
            a("name", "String", "Topic"),
            a("estimatedvalue", "Money", "Est. Revenue"),
            a("transactioncurrencyid", "Lookup", "Currency"),
            a("estimatedclosedate", "DateTime", "Est. Close Date"),
            opt("salesstagecode", "Picklist", "Sales Stage", SALES_STAGE),
            a("customerid", "Customer", "Potential Customer"),
            a("parentcontactid", "Lookup", "Contact"),
        ],
        Ent::SystemUser => vec![
            a("systemuserid", "Uniqueidentifier", "User"),
            a("fullname", "String", "Full Name"),
            a("firstname", "String", "First Name"),
            a("lastname", "String", "Last Name"),
            a("internalemailaddress", "String", "Primary Email"),
            a("isdisabled", "Boolean", "Status"),
        ],
        Ent::Project => vec![
            custom(a("new_projectid", "Uniqueidentifier", "Project")),
            custom(a("new_name", "String", "Name")),
            custom(a("new_budget", "Decimal", "Budget")),
            custom(a("new_accountid", "Lookup", "Account")),
        ],
    };
    let common = COMMON.iter().copied().filter(|c| {
        // Users have no owner or state.
        !(e == Ent::SystemUser && ["ownerid", "statecode", "statuscode"].contains(&c.name))
    });
    own.into_iter().chain(common).collect()
}

fn is_lookup(ty: &str) -> bool {
    matches!(ty, "Lookup" | "Customer" | "Owner")
}

/// The name a column has in a record: lookups are `_{name}_value`.
fn json_name(at: &Attr) -> String {
    if is_lookup(at.ty) {
        format!("_{}_value", at.name)
    } else {
        at.name.to_owned()
    }
}

/// Seeded row `k`'s id: a GUID whose last group holds `k` (masked).
fn guid(seed: u64, e: Ent, k: u64) -> String {
    let h = mix(seed ^ mix(k ^ ((e as u64) << 56)));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (h >> 40) & 0xfff,
        k ^ mask(seed, e)
    )
}

fn mask(seed: u64, e: Ent) -> u64 {
    mix(seed.wrapping_add(0xd365 + e as u64)) & 0x0000_ffff_ffff_ffff & !0xff_ffff
}

fn k_of(seed: u64, e: Ent, id: &str) -> Option<u64> {
    let id = id
        .trim_matches(|c| c == '{' || c == '}')
        .to_ascii_lowercase();
    let last = id.rsplit('-').next()?;
    let k = u64::from_str_radix(last, 16).ok()? ^ mask(seed, e);
    (guid(seed, e, k) == id).then_some(k)
}

fn fmt_s(s: i64) -> String {
    chrono::DateTime::from_timestamp(s, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn parse_dt(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp())
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp())
        })
}

/// A changed or created row.
#[derive(Debug, Clone)]
struct Row {
    values: Map<String, Value>,
    modified: i64,
    version: u64,
}

struct Table {
    seeded: u64,
    /// Rows changed or created, by index (created rows after `seeded`).
    rows: BTreeMap<u64, Row>,
    /// Deleted rows: index → the change version of the delete.
    deleted: BTreeMap<u64, u64>,
    next: u64,
    tracking: bool,
}

pub struct State {
    opts: Options,
    tables: Vec<Table>,
    /// The org's change version (every change takes the next one).
    version: u64,
    /// Delta tokens below this version have expired.
    token_floor: u64,
    clock: i64,
    /// Access tokens handed out, with when they stop working.
    access: HashMap<String, Instant>,
    token_calls: u64,
    /// Service protection: requests per window of `window_s` seconds.
    limit: u64,
    window_s: u64,
    window_start: Instant,
    in_window: u64,
    throttled: u64,
}

pub struct DynamicsMock {
    base: Base<State>,
}

impl DynamicsMock {
    pub fn new(o: Options) -> DynamicsMock {
        let counts = [
            o.contacts,
            o.accounts,
            o.leads,
            o.opportunities,
            o.users,
            o.projects,
        ];
        let tables = ENTS
            .iter()
            .zip(counts)
            .map(|(&ent, n)| Table {
                seeded: n,
                rows: BTreeMap::new(),
                deleted: BTreeMap::new(),
                next: n + 1,
                // Custom tables start without change tracking.
                tracking: ent != Ent::Project,
            })
            .collect();
        let gzip = o.gzip;
        DynamicsMock {
            base: Base::new(
                State {
                    opts: o,
                    tables,
                    version: VERSION_BASE,
                    token_floor: 0,
                    clock: 0,
                    access: HashMap::new(),
                    token_calls: 0,
                    limit: 6_000,
                    window_s: 300,
                    window_start: Instant::now(),
                    in_window: 0,
                    throttled: 0,
                },
                gzip,
            ),
        }
    }
}

fn body(status: u16, v: Value) -> Response {
    Response::json(status, v.to_string().into_bytes()).with_header("OData-Version", "4.0")
}

/// The Web API's error shape.
fn error(status: u16, code: &str, msg: &str) -> Response {
    body(status, json!({"error": {"code": code, "message": msg}}))
}

/// Entra ID's error shape.
fn aad_error(status: u16, error: &str, code: u64, msg: &str) -> Response {
    body(
        status,
        json!({"error": error,
               "error_description": format!("AADSTS{code}: {msg} Trace ID: 0b6b5a4c-0000-4000-8000-000000000000 Correlation ID: 1f2e3d4c-0000-4000-8000-000000000000 Timestamp: 2026-12-05 10:00:00Z"),
               "error_codes": [code], "timestamp": "2026-12-05 10:00:00Z",
               "trace_id": "0b6b5a4c-0000-4000-8000-000000000000",
               "correlation_id": "1f2e3d4c-0000-4000-8000-000000000000",
               "error_uri": format!("https://login.microsoftonline.com/error?code={code}")}),
    )
}

fn unauthorized(tenant: &str, why: &str) -> Response {
    Response {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\", authorization_uri=https://login.microsoftonline.com/{tenant}/oauth2/authorize"),
        )],
        body: Vec::new(),
    }
}

/// What the `Prefer` header asks.
#[derive(Debug, Default)]
struct Prefer {
    page: Option<usize>,
    track: bool,
    formatted: bool,
}

fn prefer(req: &Request) -> Prefer {
    let mut p = Prefer::default();
    for h in req
        .headers
        .iter()
        .filter(|(k, _)| k == "prefer")
        .map(|(_, v)| v)
    {
        for part in h.split(',').map(str::trim) {
            if part == "odata.track-changes" {
                p.track = true;
            } else if let Some(n) = part.strip_prefix("odata.maxpagesize=") {
                p.page = n.trim().parse().ok();
            } else if let Some(a) = part.strip_prefix("odata.include-annotations=") {
                let a = a.trim_matches('"');
                p.formatted = a == "*" || a.contains("OData.Community.Display.V1.FormattedValue");
            }
        }
    }
    p
}

/// One comparison of a `$filter`.
#[derive(Debug)]
enum Cond {
    Modified(&'static str, i64),
    In(Vec<String>),
}

fn parse_filter(f: &str, key: &str) -> Result<Vec<Cond>, String> {
    let mut out = Vec::new();
    for part in f.split(" and ") {
        let part = part.trim().trim_start_matches('(').trim_end_matches(')');
        if let Some(rest) = part.strip_prefix("Microsoft.Dynamics.CRM.In(") {
            let rest = rest.trim_end_matches(')');
            let (prop, vals) = rest
                .split_once(",PropertyValues=")
                .ok_or("In() needs PropertyName and PropertyValues")?;
            let prop = prop.trim_start_matches("PropertyName=").trim_matches('\'');
            if prop != key {
                return Err(format!("In() on {prop} is not supported by this mock"));
            }
            let vals = vals.trim_start_matches('[').trim_end_matches(']');
            out.push(Cond::In(
                vals.split(',')
                    .map(|v| v.trim().trim_matches('\'').to_ascii_lowercase())
                    .filter(|v| !v.is_empty())
                    .collect(),
            ));
            continue;
        }
        let mut w = part.split_whitespace();
        let (Some(prop), Some(op), Some(val), None) = (w.next(), w.next(), w.next(), w.next())
        else {
            return Err(format!("Syntax error at '{part}'"));
        };
        if prop != "modifiedon" {
            return Err(format!("filter on {prop} is not supported by this mock"));
        }
        let op = match op {
            "ge" => "ge",
            "gt" => "gt",
            "le" => "le",
            "lt" => "lt",
            _ => return Err(format!("operator {op} is not supported by this mock")),
        };
        let t = parse_dt(val).ok_or_else(|| format!("bad datetime {val}"))?;
        out.push(Cond::Modified(op, t));
    }
    Ok(out)
}

/// Where a listing stands, in the `$skiptoken` paging cookie: the page
/// number, the last row's index (full reads) or change position (delta
/// reads), and the version the read saw the table at.
fn cookie(page: u64, last: u64, version: u64, tracking: bool) -> String {
    let inner = format!(
        "<cookie page=\"{}\"><last>{last}</last><maxTimestamp>{version}</maxTimestamp></cookie>",
        page
    );
    format!(
        "<cookie pagenumber=\"{}\" pagingcookie=\"{}\" istracking=\"{}\" />",
        page + 1,
        pct(&pct(&inner)),
        if tracking { "True" } else { "False" }
    )
}

fn read_cookie(s: &str) -> Option<(u64, u64, u64)> {
    let page: u64 = s
        .split("pagenumber=\"")
        .nth(1)?
        .split('"')
        .next()?
        .parse()
        .ok()?;
    let pc = s.split("pagingcookie=\"").nth(1)?.split('"').next()?;
    let inner = crate::server::decode(&crate::server::decode(pc));
    let grab = |tag: &str| -> Option<u64> {
        inner
            .split(&format!("<{tag}>"))
            .nth(1)?
            .split('<')
            .next()?
            .parse()
            .ok()
    };
    Some((page, grab("last")?, grab("maxTimestamp")?))
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02x}"),
        })
        .collect()
}

fn delta_token(version: u64, s: i64) -> String {
    let d = chrono::DateTime::from_timestamp(s, 0).unwrap_or_default();
    format!("{version}!{}", d.format("%m/%d/%Y %H:%M:%S"))
}

impl State {
    fn now(&mut self) -> i64 {
        let real = chrono::Utc::now().timestamp();
        self.clock = self.clock.max(real);
        self.clock
    }

    fn table(&self, e: Ent) -> &Table {
        &self.tables[e.idx()]
    }

    fn seed(&self) -> u64 {
        self.opts.seed
    }

    /// A seeded row's value of `at`.
    fn seeded(&self, e: Ent, k: u64, at: &Attr) -> Value {
        let seed = self.seed();
        let h = |w: u64| mix(seed ^ mix(k ^ w.rotate_left(17) ^ ((e as u64) << 40)));
        let modified = T0_MS / 1000 + k as i64 * STEP_S;
        let shared = self.opts.shared_people;
        let person = (matches!(e, Ent::Contact) && k <= shared).then(|| people::person(k, shared));
        let first = |w| FIRST[(h(w) % FIRST.len() as u64) as usize];
        let last = |w| LAST[(h(w) % LAST.len() as u64) as usize];
        let of_table = |t: Ent, w: u64| {
            let n = self.table(t).seeded;
            if n == 0 {
                Value::Null
            } else {
                json!(guid(seed, t, h(w) % n + 1))
            }
        };
        let pick = |o: &[(i64, &str)], w: u64| json!(o[(h(w) % o.len() as u64) as usize].0);
        let s = |v: String| json!(v);
        match (e, at.name) {
            (_, n) if n == format!("{}id", e.logical()) => json!(guid(seed, e, k)),
            (_, "modifiedon") => s(fmt_s(modified)),
            (_, "createdon") => s(fmt_s(modified - 86_400)),
            (_, "versionnumber") => json!(k),
            (_, "statecode") => json!(0),
            (_, "statuscode") => json!(1),
            (_, "ownerid") => of_table(Ent::SystemUser, 9),
            (Ent::Contact | Ent::Lead | Ent::SystemUser, "firstname") => match &person {
                Some(p) => s(p.first.to_owned()),
                None => s(first(1).to_owned()),
            },
            (Ent::Contact | Ent::Lead | Ent::SystemUser, "lastname") => match &person {
                Some(p) => s(p.last.to_owned()),
                None => s(last(2).to_owned()),
            },
            (_, "fullname") => {
                let f = self.seeded(e, k, &a("firstname", "String", ""));
                let l = self.seeded(e, k, &a("lastname", "String", ""));
                s(format!(
                    "{} {}",
                    f.as_str().unwrap_or(""),
                    l.as_str().unwrap_or("")
                ))
            }
            (Ent::Contact | Ent::Lead, "emailaddress1") => match &person {
                // Dynamics users type emails in capitals now and then.
                Some(p) if k.is_multiple_of(3) => s(p.email.to_uppercase()),
                Some(p) => s(p.email.clone()),
                None => s(format!(
                    "{}.{}{k}@{}.example.net",
                    first(1).to_lowercase(),
                    last(2).to_lowercase(),
                    WORDS[(h(3) % WORDS.len() as u64) as usize].to_lowercase()
                )),
            },
            (Ent::SystemUser, "internalemailaddress") => s(format!("user{k}@contoso.example")),
            (_, "telephone1") => match &person {
                Some(p) => {
                    let (area, exch, line) = p.phone;
                    s(format!("+1 ({area}) {exch}-{line:04}"))
                }
                None => s(format!("+1 555 {:03} {:04}", h(4) % 1000, h(5) % 10_000)),
            },
            (_, "mobilephone") => {
                if h(6) % 3 == 0 {
                    s(format!("+44 7700 {:06}", h(7) % 1_000_000))
                } else {
                    Value::Null
                }
            }
            (_, "jobtitle") => {
                s(["Buyer", "CTO", "Engineer", "Office Manager"][(h(8) % 4) as usize].to_owned())
            }
            (_, "address1_country") => s(["United States", "Germany", "France", "Canada"]
                [(h(10) % 4) as usize]
                .to_owned()),
            (Ent::Contact, "parentcustomerid") => match &person {
                Some(p) => json!(guid(seed, Ent::Account, p.company)),
                None => of_table(Ent::Account, 11),
            },
            (_, "preferredcontactmethodcode") => pick(CONTACT_METHOD, 12),
            (_, "new_loyaltytier") => {
                if h(13) % 4 == 0 {
                    Value::Null
                } else {
                    pick(TIER, 13)
                }
            }
            (_, "donotemail") => json!(h(14) % 5 == 0),
            (_, "isdisabled") => json!(false),
            (_, "annualincome" | "revenue" | "estimatedvalue") => {
                json!((h(15) % 500_000) as f64 + 0.5)
            }
            (_, "birthdate") => {
                if h(16) % 2 == 0 {
                    Value::Null
                } else {
                    s(format!(
                        "19{:02}-0{}-1{}",
                        50 + h(16) % 50,
                        1 + h(17) % 9,
                        h(18) % 10
                    ))
                }
            }
            (_, "description") => Value::Null,
            (Ent::Account, "name") => match k <= people::companies(shared) && shared > 0 {
                true => s(people::company(k).0),
                false => s(format!(
                    "{} {}",
                    WORDS[(h(19) % WORDS.len() as u64) as usize],
                    ["Ltd", "GmbH", "Inc."][(h(20) % 3) as usize]
                )),
            },
            (_, "websiteurl") => match (e, k <= people::companies(shared) && shared > 0) {
                (Ent::Account, true) => s(format!("https://www.{}", people::company(k).1)),
                _ => s(format!(
                    "https://{}.example.org",
                    WORDS[(h(19) % WORDS.len() as u64) as usize].to_lowercase()
                )),
            },
            (_, "industrycode") => pick(INDUSTRY, 21),
            (_, "numberofemployees") => json!(h(22) % 5000),
            (Ent::Account, "primarycontactid") => of_table(Ent::Contact, 23),
            (Ent::Lead, "companyname") => s(format!(
                "{} Partners",
                WORDS[(h(24) % WORDS.len() as u64) as usize]
            )),
            (_, "leadsourcecode") => pick(LEAD_SOURCE, 25),
            (Ent::Opportunity, "name") => s(format!("{} units", 10 + h(26) % 90)),
            (_, "transactioncurrencyid") => json!("4d2a3b1c-0000-4000-8000-0000000000eu"),
            (_, "estimatedclosedate") => {
                s(format!("2025-{:02}-{:02}", 1 + h(27) % 12, 1 + h(28) % 28))
            }
            (_, "salesstagecode") => pick(SALES_STAGE, 29),
            (Ent::Opportunity, "customerid") => of_table(Ent::Account, 30),
            (Ent::Opportunity, "parentcontactid") => of_table(Ent::Contact, 31),
            (Ent::Project, "new_name") => s(format!("Project {k}")),
            (_, "new_budget") => json!((h(32) % 100_000) as f64 / 4.0),
            (_, "new_accountid") => of_table(Ent::Account, 33),
            _ => Value::Null,
        }
    }

    fn exists(&self, e: Ent, k: u64) -> bool {
        let t = self.table(e);
        (k >= 1 && (k <= t.seeded || t.rows.contains_key(&k))) && !t.deleted.contains_key(&k)
    }

    fn modified(&self, e: Ent, k: u64) -> i64 {
        self.table(e)
            .rows
            .get(&k)
            .map_or(T0_MS / 1000 + k as i64 * STEP_S, |r| r.modified)
    }

    fn version_of(&self, e: Ent, k: u64) -> u64 {
        self.table(e).rows.get(&k).map_or(k, |r| r.version)
    }

    fn value(&self, e: Ent, k: u64, at: &Attr) -> Value {
        match self.table(e).rows.get(&k) {
            Some(r) => match at.name {
                "modifiedon" => json!(fmt_s(r.modified)),
                "versionnumber" => json!(r.version),
                n if n == e.key() => json!(guid(self.seed(), e, k)),
                n => r.values.get(n).cloned().unwrap_or_else(|| {
                    if k <= self.table(e).seeded {
                        self.seeded(e, k, at)
                    } else {
                        Value::Null
                    }
                }),
            },
            None => self.seeded(e, k, at),
        }
    }

    fn render(&self, out: &mut String, e: Ent, k: u64, select: &[Attr], formatted: bool) {
        let mut m = Map::new();
        m.insert(
            "@odata.etag".into(),
            json!(format!("W/\"{}\"", self.version_of(e, k))),
        );
        for at in select {
            let v = self.value(e, k, at);
            let name = json_name(at);
            if formatted && !v.is_null() {
                let label = match at.ty {
                    "Picklist" | "State" | "Status" => at
                        .options
                        .iter()
                        .find(|(n, _)| Some(*n) == v.as_i64())
                        .map(|(_, l)| (*l).to_owned()),
                    "Boolean" => Some(
                        if v.as_bool() == Some(true) {
                            "Yes"
                        } else {
                            "No"
                        }
                        .to_owned(),
                    ),
                    "Money" => v.as_f64().map(|x| format!("${x:.2}")),
                    _ => None,
                };
                if let Some(l) = label {
                    m.insert(
                        format!("{name}@OData.Community.Display.V1.FormattedValue"),
                        json!(l),
                    );
                }
            }
            m.insert(name, v);
        }
        // The primary key always comes back.
        m.insert(e.key(), json!(guid(self.seed(), e, k)));
        out.push_str(&Value::Object(m).to_string());
    }

    fn authorized(&mut self, req: &Request) -> Result<(), Response> {
        let tenant = self.opts.tenant.clone();
        let Some(t) = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
        else {
            return Err(unauthorized(&tenant, "No bearer token"));
        };
        match self.access.get(t) {
            Some(until) if Instant::now() < *until => Ok(()),
            Some(_) => Err(unauthorized(&tenant, "The access token expired")),
            None => Err(unauthorized(&tenant, "Invalid access token")),
        }
    }

    /// Service protection: one request of the window; the 429 past it.
    fn spend(&mut self) -> Result<(), Response> {
        let elapsed = self.window_start.elapsed().as_secs();
        if elapsed >= self.window_s {
            self.window_start = Instant::now();
            self.in_window = 0;
        }
        if self.in_window >= self.limit {
            self.throttled += 1;
            let retry =
                (self.window_s - self.window_start.elapsed().as_secs().min(self.window_s)).max(1);
            return Err(error(
                429,
                "0x80072322",
                &format!(
                    "Number of requests exceeded the limit of {} over time window of {} seconds.",
                    self.limit, self.window_s
                ),
            )
            .with_header("Retry-After", retry.to_string()));
        }
        self.in_window += 1;
        Ok(())
    }

    fn token(&mut self, tenant: &str, req: &Request) -> Response {
        self.token_calls += 1;
        let form: HashMap<String, String> =
            crate::server::parse_form(&String::from_utf8_lossy(&req.body))
                .into_iter()
                .collect();
        if tenant != self.opts.tenant {
            return aad_error(
                400,
                "invalid_tenant",
                90002,
                &format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            );
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
        if form.get("client_id") != Some(&self.opts.client_id) {
            return aad_error(
                400,
                "unauthorized_client",
                700016,
                "Application with identifier was not found in the directory.",
            );
        }
        let assertion_type = form.get("client_assertion_type").map(String::as_str);
        if assertion_type == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            let host = req.header("host").unwrap_or("127.0.0.1");
            let aud = format!("http://{host}/{tenant}/oauth2/v2.0/token");
            if let Err((code, msg)) = self.check_assertion(
                form.get("client_assertion").map_or("", String::as_str),
                &aud,
            ) {
                return aad_error(401, "invalid_client", code, msg);
            }
        } else if form.get("client_secret") != Some(&self.opts.client_secret) {
            return aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            );
        }
        match form.get("scope") {
            Some(s) if s.ends_with("/.default") && s.starts_with("http") => {}
            _ => {
                return aad_error(
                    400,
                    "invalid_scope",
                    1002012,
                    "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                )
            }
        }
        let token = format!("eyJ0eXAiOiJKV1Qi.dv-access-{}.sig", self.token_calls);
        let ttl = self.opts.token_ttl;
        self.access.insert(
            token.clone(),
            Instant::now() + std::time::Duration::from_secs(ttl),
        );
        body(
            200,
            json!({"token_type": "Bearer", "expires_in": ttl, "ext_expires_in": ttl,
                   "access_token": token}),
        )
    }

    /// Entra ID's checks of a client assertion (certificate credentials):
    /// the error code and message when it fails.
    fn check_assertion(&self, assertion: &str, aud: &str) -> Result<(), (u64, &'static str)> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use base64::Engine;
        use rsa::pkcs1v15::{Signature, VerifyingKey};
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        use sha2::{Digest, Sha256};
        let malformed = (50027, "JWT token is invalid or malformed.");
        let parts: Vec<&str> = assertion.split('.').collect();
        if parts.len() != 3 {
            return Err(malformed);
        }
        let json_part = |p: &str| -> Option<Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
        };
        let (Some(header), Some(claims)) = (json_part(parts[0]), json_part(parts[1])) else {
            return Err(malformed);
        };
        let not_registered = (700027, "The certificate with identifier used to sign the client assertion is not registered on application.");
        let (Some(cert), Some(key)) = (&self.opts.client_cert, &self.opts.client_cert_key) else {
            return Err(not_registered);
        };
        let der = cert
            .split("-----BEGIN CERTIFICATE-----")
            .nth(1)
            .and_then(|r| r.split("-----END CERTIFICATE-----").next())
            .map(|b| b.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .and_then(|b| STANDARD.decode(b).ok())
            .ok_or(not_registered)?;
        let thumb = URL_SAFE_NO_PAD.encode(Sha256::digest(&der));
        if header["alg"] != "RS256" || header["x5t#S256"].as_str() != Some(thumb.as_str()) {
            return Err(not_registered);
        }
        let key = rsa::RsaPublicKey::from_public_key_pem(key).map_err(|_| not_registered)?;
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).map_err(|_| malformed)?;
        let sig = Signature::try_from(sig.as_slice()).map_err(|_| malformed)?;
        VerifyingKey::<Sha256>::new(key)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .map_err(|_| (700027, "Client assertion failed signature validation."))?;
        if claims["iss"].as_str() != Some(self.opts.client_id.as_str())
            || claims["sub"].as_str() != Some(self.opts.client_id.as_str())
        {
            return Err((
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            ));
        }
        if claims["aud"].as_str() != Some(aud) {
            return Err((
                700016,
                "Client assertion audience claim does not match Realm issuer.",
            ));
        }
        let now = chrono::Utc::now().timestamp();
        let (nbf, exp) = (
            claims["nbf"].as_i64().unwrap_or(0),
            claims["exp"].as_i64().unwrap_or(0),
        );
        if exp <= now || nbf > now + 300 || exp - nbf > 86_400 {
            return Err((
                700024,
                "Client assertion is not within its valid time range.",
            ));
        }
        Ok(())
    }

    fn definitions(&self, one: Option<Ent>) -> Response {
        let def = |e: Ent| {
            json!({"LogicalName": e.logical(), "EntitySetName": e.set(),
                   "PrimaryIdAttribute": e.key(),
                   "ChangeTrackingEnabled": self.table(e).tracking,
                   "IsCustomEntity": e == Ent::Project,
                   "DisplayName": {"LocalizedLabels": [{"Label": e.label(), "LanguageCode": 1033}],
                                    "UserLocalizedLabel": {"Label": e.label(), "LanguageCode": 1033}},
                   "MetadataId": guid(0, e, 0)})
        };
        match one {
            Some(e) => body(200, def(e)),
            None => body(
                200,
                json!({"@odata.context": "$metadata#EntityDefinitions",
                       "value": ENTS.iter().map(|e| def(*e)).collect::<Vec<_>>()}),
            ),
        }
    }

    fn attributes(&self, e: Ent) -> Response {
        let list: Vec<Value> = attrs(e)
            .iter()
            .map(|at| {
                let type_name = if at.type_name.is_empty() {
                    format!("{}Type", at.ty)
                } else {
                    at.type_name.to_owned()
                };
                let type_name = if at.name == "entityimage" { "ImageType".into() } else { type_name };
                let label = if at.label.is_empty() {
                    json!({"LocalizedLabels": [], "UserLocalizedLabel": null})
                } else {
                    json!({"LocalizedLabels": [{"Label": at.label, "LanguageCode": 1033}],
                           "UserLocalizedLabel": {"Label": at.label, "LanguageCode": 1033}})
                };
                json!({"LogicalName": at.name, "AttributeType": at.ty,
                       "AttributeTypeName": {"Value": type_name},
                       "IsCustomAttribute": at.custom, "IsValidForRead": at.ty != "Virtual" || at.name == "entityimage",
                       "AttributeOf": at.of, "DisplayName": label,
                       "MetadataId": guid(1, e, at.name.len() as u64)})
            })
            .collect();
        body(
            200,
            json!({"@odata.context": format!("$metadata#EntityDefinitions('{}')/Attributes", e.logical()),
                   "value": list}),
        )
    }

    /// The DateTime columns and their Format (dates only or with time).
    fn date_formats(&self, e: Ent) -> Response {
        let list: Vec<Value> = attrs(e)
            .iter()
            .filter(|a| a.ty == "DateTime")
            .map(|a| {
                let only = ["birthdate", "estimatedclosedate"].contains(&a.name);
                json!({"LogicalName": a.name, "Format": if only { "DateOnly" } else { "DateAndTime" },
                       "MetadataId": guid(2, e, a.name.len() as u64)})
            })
            .collect();
        body(200, json!({"value": list}))
    }

    fn select(&self, e: Ent, req: &Request) -> Result<Vec<Attr>, Response> {
        let all = attrs(e);
        let Some(sel) = req.param("$select") else {
            // Every column but helpers and virtual ones.
            return Ok(all
                .into_iter()
                .filter(|a| a.of.is_none() && a.ty != "Virtual")
                .collect());
        };
        let mut out = Vec::new();
        for name in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let found = all.iter().find(|a| {
                a.of.is_none()
                    && a.ty != "Virtual"
                    && (json_name(a) == name || (a.name == name && !is_lookup(a.ty)))
            });
            match found {
                Some(a) => out.push(*a),
                None => {
                    return Err(error(
                        400,
                        "0x80060888",
                        &format!(
                            "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
                            e.logical()
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// `GET /api/data/v9.2/{set}`.
    fn list(&mut self, e: Ent, req: &Request) -> Response {
        let p = prefer(req);
        let page = p.page.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
        let select = match self.select(e, req) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let tracking = p.track && self.table(e).tracking;
        let delta = req.param("$deltatoken");
        if tracking || delta.is_some() {
            for q in ["$filter", "$orderby", "$expand", "$top"] {
                if req.param(q).is_some() {
                    return error(
                        400,
                        "0x80060888",
                        &format!("The \"{}\" query parameter isn't supported when Change Tracking is enabled.", q.trim_start_matches('$')),
                    );
                }
            }
        }
        let conds = match req.param("$filter").map(|f| parse_filter(f, &e.key())) {
            None => Vec::new(),
            Some(Ok(c)) => c,
            Some(Err(m)) => return error(400, "0x80060888", &m),
        };
        let host = req.header("host").unwrap_or("127.0.0.1").to_owned();
        let sel_text = req.param("$select").map(|s| format!("$select={}", pct(s)));
        let link = |extra: String| {
            let mut q: Vec<String> = sel_text.iter().cloned().collect();
            if let Some(f) = req.param("$filter") {
                q.push(format!("$filter={}", pct(f)));
            }
            q.push(extra);
            format!("http://{host}{API}{}?{}", e.set(), q.join("&"))
        };
        let skip = match req.param("$skiptoken").map(read_cookie) {
            None => None,
            Some(Some(c)) => Some(c),
            Some(None) => return error(400, "0x80040203", "Invalid paging cookie."),
        };
        let now = self.now();
        let mut out = String::with_capacity(page * 600);
        let mut v = serde_json::Map::new();
        let context = format!(
            "http://{host}{API}$metadata#{}({})",
            e.set(),
            select.iter().map(json_name).collect::<Vec<_>>().join(",")
        );
        let mut next = None;
        let mut delta_link = None;
        if let Some(token) = delta {
            let Some(since) = token.split('!').next().and_then(|v| v.parse::<u64>().ok()) else {
                return error(400, "0x80044352", "Version stamp associated with the client has expired. Please perform a full sync.");
            };
            if since < self.token_floor || !self.table(e).tracking {
                return error(
                    400,
                    "0x80044352",
                    "Version stamp associated with the client has expired. Please perform a full sync.",
                );
            }
            // Where the delta stands: by version (a keyset, so rows that
            // change while it pages shift nothing), the deletes phase
            // marked by a high bit.
            const DELETES: u64 = 1 << 62;
            let (last, upto) = match skip {
                Some((_, last, ver)) => (last, ver),
                None => (0, self.version),
            };
            let (in_deletes, last_v) = (last & DELETES != 0, last & !DELETES);
            // Rows changed since, by version, then deletes.
            let t = self.table(e);
            let mut changed: Vec<(u64, u64)> = t
                .rows
                .iter()
                .filter(|(k, r)| {
                    r.version > since && r.version <= upto && !t.deleted.contains_key(k)
                })
                .map(|(k, r)| (r.version, *k))
                .collect();
            changed.sort_unstable();
            let mut gone: Vec<(u64, u64)> = t
                .deleted
                .iter()
                .filter(|(_, v)| **v > since && **v <= upto)
                .map(|(k, v)| (*v, *k))
                .collect();
            gone.sort_unstable();
            let items: Vec<(bool, u64, u64)> = if in_deletes {
                gone.iter()
                    .filter(|(v, _)| *v > last_v)
                    .map(|(v, k)| (true, *v, *k))
                    .collect()
            } else {
                changed
                    .iter()
                    .filter(|(v, _)| *v > last_v)
                    .map(|(v, k)| (false, *v, *k))
                    .chain(gone.iter().map(|(v, k)| (true, *v, *k)))
                    .collect()
            };
            let end = page.min(items.len());
            out.push('[');
            for (i, (deleted, _, k)) in items[..end].iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if *deleted {
                    out.push_str(
                        &json!({"@odata.context": format!("http://{host}{API}$metadata#{}/$deletedEntity", e.set()),
                                "id": guid(self.seed(), e, *k), "reason": "deleted"})
                        .to_string(),
                    );
                } else {
                    self.render(&mut out, e, *k, &select, p.formatted);
                }
            }
            out.push(']');
            if end < items.len() {
                let page_no = skip.map_or(1, |s| s.0);
                let (deleted, v, _) = items[end - 1];
                let last = if deleted { v | DELETES } else { v };
                next = Some(link(format!(
                    "$deltatoken={}&$skiptoken={}",
                    pct(token),
                    pct(&cookie(page_no, last, upto, true))
                )));
            } else {
                delta_link = Some(link(format!(
                    "$deltatoken={}",
                    pct(&delta_token(upto, now))
                )));
            }
            v.insert("@odata.context".into(), json!(format!("{context}/$delta")));
        } else {
            let (after, upto, page_no) = match skip {
                Some((n, last, ver)) => (last, ver, n),
                None => (0, self.version, 1),
            };
            let ids = self.page_ids(e, after, page, &conds);
            out.push('[');
            for (i, k) in ids.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                self.render(&mut out, e, *k, &select, p.formatted);
            }
            out.push(']');
            if ids.len() == page
                && self.page_ids(e, *ids.last().unwrap_or(&0), 1, &conds).len() == 1
            {
                next = Some(link(format!(
                    "$skiptoken={}",
                    pct(&cookie(page_no, ids[ids.len() - 1], upto, tracking))
                )));
            } else if tracking {
                delta_link = Some(link(format!(
                    "$deltatoken={}",
                    pct(&delta_token(upto, now))
                )));
            }
            v.insert("@odata.context".into(), json!(context));
        }
        let mut text = String::with_capacity(out.len() + 400);
        text.push('{');
        text.push_str(&format!("\"@odata.context\":{}", v["@odata.context"]));
        text.push_str(",\"value\":");
        text.push_str(&out);
        if let Some(n) = next {
            text.push_str(&format!(",\"@odata.nextLink\":{}", json!(n)));
        }
        if let Some(d) = delta_link {
            text.push_str(&format!(",\"@odata.deltaLink\":{}", json!(d)));
        }
        text.push('}');
        let mut applied = vec![format!("odata.maxpagesize={page}")];
        if tracking {
            applied.push("odata.track-changes".into());
        }
        if p.formatted {
            applied.push(
                "odata.include-annotations=\"OData.Community.Display.V1.FormattedValue\"".into(),
            );
        }
        Response::json(200, text.into_bytes())
            .with_header("OData-Version", "4.0")
            .with_header("Preference-Applied", applied.join(","))
    }

    /// Up to `n` live rows after index `after`, in key order, that pass
    /// `conds`.
    fn page_ids(&self, e: Ent, after: u64, n: usize, conds: &[Cond]) -> Vec<u64> {
        let t = self.table(e);
        let seed = self.seed();
        // An In() names its rows: only those.
        if let Some(Cond::In(ids)) = conds.iter().find(|c| matches!(c, Cond::In(_))) {
            let mut ks: Vec<u64> = ids.iter().filter_map(|id| k_of(seed, e, id)).collect();
            ks.sort_unstable();
            ks.dedup();
            return ks
                .into_iter()
                .filter(|k| *k > after && self.exists(e, *k) && self.passes(e, *k, conds))
                .take(n)
                .collect();
        }
        // Seeded rows' times grow with their index: start where they pass.
        let lo = conds
            .iter()
            .filter_map(|c| match c {
                Cond::Modified("ge", x) => Some((x - T0_MS / 1000).div_euclid(STEP_S)),
                Cond::Modified("gt", x) => Some((x - T0_MS / 1000).div_euclid(STEP_S)),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            .max(0) as u64;
        let mut out = Vec::with_capacity(n);
        let mut changed = t.rows.range(after + 1..).map(|(k, _)| *k).peekable();
        let mut k = after.max(lo.saturating_sub(1)) + 1;
        loop {
            if out.len() == n {
                break;
            }
            let seeded_next = (k <= t.seeded).then_some(k);
            let cand = match (seeded_next, changed.peek().copied()) {
                (None, None) => break,
                (Some(s), Some(c)) if c < s => {
                    changed.next();
                    c
                }
                (Some(s), Some(c)) => {
                    if c == s {
                        changed.next();
                    }
                    k = s + 1;
                    s
                }
                (Some(s), None) => {
                    k = s + 1;
                    s
                }
                (None, Some(c)) => {
                    changed.next();
                    c
                }
            };
            if self.exists(e, cand) && self.passes(e, cand, conds) && !out.contains(&cand) {
                out.push(cand);
            }
        }
        out
    }

    fn passes(&self, e: Ent, k: u64, conds: &[Cond]) -> bool {
        let m = self.modified(e, k);
        conds.iter().all(|c| match c {
            Cond::Modified("ge", x) => m >= *x,
            Cond::Modified("gt", x) => m > *x,
            Cond::Modified("le", x) => m <= *x,
            Cond::Modified("lt", x) => m < *x,
            Cond::Modified(..) => false,
            Cond::In(ids) => ids.contains(&guid(self.seed(), e, k)),
        })
    }

    /// Create or change a row: `values` by logical name; returns its id.
    fn upsert(
        &mut self,
        e: Ent,
        id: Option<&str>,
        values: &Map<String, Value>,
    ) -> Result<String, String> {
        let seed = self.seed();
        let now = self.now();
        let k = match id {
            Some(id) => k_of(seed, e, id).ok_or("unknown id")?,
            None => {
                let t = &mut self.tables[e.idx()];
                t.next += 1;
                t.next - 1
            }
        };
        let known = attrs(e);
        for name in values.keys() {
            if !known.iter().any(|a| a.name == name) {
                return Err(format!("unknown attribute {name}"));
            }
        }
        self.version += 1;
        let version = self.version;
        let t = &mut self.tables[e.idx()];
        t.deleted.remove(&k);
        let row = t.rows.entry(k).or_insert_with(|| Row {
            values: Map::new(),
            modified: now,
            version,
        });
        for (n, v) in values {
            row.values.insert(n.clone(), v.clone());
        }
        row.modified = values
            .get("modifiedon")
            .and_then(Value::as_str)
            .and_then(parse_dt)
            .unwrap_or(now);
        row.version = version;
        Ok(guid(seed, e, k))
    }

    fn delete(&mut self, e: Ent, id: &str) -> Result<bool, String> {
        let k = k_of(self.seed(), e, id).ok_or("unknown id")?;
        if !self.exists(e, k) {
            return Ok(false);
        }
        self.version += 1;
        let v = self.version;
        self.tables[e.idx()].deleted.insert(k, v);
        Ok(true)
    }

    fn record(&self, e: Ent, id: &str) -> Result<Value, String> {
        let k = k_of(self.seed(), e, id).ok_or("unknown id")?;
        if !self.exists(e, k) {
            return Ok(Value::Null);
        }
        let mut s = String::new();
        let select: Vec<Attr> = attrs(e)
            .into_iter()
            .filter(|a| a.of.is_none() && a.ty != "Virtual")
            .collect();
        self.render(&mut s, e, k, &select, true);
        serde_json::from_str(&s).map_err(|e| e.to_string())
    }
}

impl Mock for DynamicsMock {
    type State = State;
    const FAULT_KINDS: &'static [&'static str] = &["429", "401", "500", "503", "expired_delta"];

    fn base(&self) -> &Base<State> {
        &self.base
    }

    fn fault(&self, kind: &str, _req: &Request) -> Option<Response> {
        Some(match kind {
            "429" => error(
                429,
                "0x80072322",
                "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
            )
            .with_header("Retry-After", "1"),
            "401" => unauthorized("any", "The access token expired"),
            "500" => error(500, "0x80040216", "An unexpected error occurred."),
            "503" => error(503, "0x80040265", "The service is temporarily unavailable."),
            "expired_delta" => error(
                400,
                "0x80044352",
                "Version stamp associated with the client has expired. Please perform a full sync.",
            ),
            _ => return None,
        })
    }

    fn echo(&self, _st: &mut State, fault: &Picked, req: &Request) -> Response {
        let status = fault.status.unwrap_or(400);
        let sent = sent_secrets(req);
        error(
            status,
            "0x80040220",
            &format!("Principal user is missing privileges: {}", echo_text(&sent)),
        )
    }

    fn route(&self, st: &mut State, req: &Request) -> Response {
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        if let (true, [tenant, "oauth2", "v2.0", "token"]) =
            (req.method == "POST", parts.as_slice())
        {
            return st.token(tenant, req);
        }
        if let Err(r) = st.authorized(req) {
            return r;
        }
        if let Err(r) = st.spend() {
            return r;
        }
        let rest = match req.path.strip_prefix(API) {
            Some(r) if req.method == "GET" => r,
            _ => {
                return error(
                    404,
                    "0x8006088a",
                    &format!("Resource not found for the segment '{}'.", req.path),
                )
            }
        };
        if rest == "EntityDefinitions" {
            return st.definitions(None);
        }
        if let Some(def) = rest.strip_prefix("EntityDefinitions(LogicalName='") {
            let (name, tail) = def.split_once("')").unwrap_or((def, ""));
            let Some(e) = Ent::parse(name).filter(|e| e.logical() == name) else {
                return error(
                    404,
                    "0x80040217",
                    &format!("Could not find entity with LogicalName = '{name}'."),
                );
            };
            return match tail {
                "" => st.definitions(Some(e)),
                "/Attributes" => st.attributes(e),
                "/Attributes/Microsoft.Dynamics.CRM.DateTimeAttributeMetadata" => {
                    st.date_formats(e)
                }
                _ => error(404, "0x8006088a", "Resource not found for the segment."),
            };
        }
        match Ent::parse(rest).filter(|e| e.set() == rest) {
            Some(e) => st.list(e, req),
            None => error(
                404,
                "0x8006088a",
                &format!("Resource not found for the segment '{rest}'."),
            ),
        }
    }

    fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
        if action["action"] == "expire_access" {
            st.access.values_mut().for_each(|v| *v = Instant::now());
            return Ok(json!({}));
        }
        let e = action["entity"]
            .as_str()
            .and_then(Ent::parse)
            .ok_or("entity missing")?;
        match action["action"].as_str() {
            Some("upsert") => {
                let empty = Map::new();
                let id = st.upsert(
                    e,
                    action["id"].as_str(),
                    action["record"].as_object().unwrap_or(&empty),
                )?;
                Ok(json!({"id": id}))
            }
            Some("delete") => {
                Ok(json!({"deleted": st.delete(e, action["id"].as_str().ok_or("id missing")?)?}))
            }
            _ => Err("unknown action".into()),
        }
    }

    fn admin_route(
        &self,
        st: &mut State,
        method: &str,
        parts: &[&str],
        b: &Value,
    ) -> Option<Result<Value, String>> {
        Some(match (method, parts) {
            ("POST", ["dv", "upsert"]) => Self::apply_action(
                st,
                &json!({"action": "upsert", "entity": b["entity"], "id": b["id"], "record": b["record"]}),
            ),
            // Seeded rows from..=to changed at once (benchmarks).
            ("POST", ["dv", "upsert_range"]) => {
                let e = b["entity"].as_str().and_then(Ent::parse);
                let (Some(e), Some(from), Some(to)) = (e, b["from"].as_u64(), b["to"].as_u64())
                else {
                    return Some(Err("entity, from and to needed".into()));
                };
                let empty = Map::new();
                let record = b["record"].as_object().unwrap_or(&empty).clone();
                let seed = st.seed();
                for k in from..=to.min(from + 1_000_000) {
                    if let Err(m) = st.upsert(e, Some(&guid(seed, e, k)), &record) {
                        return Some(Err(m));
                    }
                }
                Ok(json!({"changed": to.saturating_sub(from) + 1}))
            }
            ("POST", ["dv", "delete"]) => Self::apply_action(
                st,
                &json!({"action": "delete", "entity": b["entity"], "id": b["id"]}),
            ),
            ("POST", ["dv", "record"]) => {
                let e = b["entity"].as_str().and_then(Ent::parse);
                match (e, b["id"].as_str()) {
                    (Some(e), Some(id)) => st.record(e, id),
                    _ => Err("entity and id needed".into()),
                }
            }
            ("POST", ["dv", "id"]) => {
                // The id of seeded row k.
                match (b["entity"].as_str().and_then(Ent::parse), b["k"].as_u64()) {
                    (Some(e), Some(k)) => Ok(json!(guid(st.seed(), e, k))),
                    _ => Err("entity and k needed".into()),
                }
            }
            ("POST", ["dv", "tracking"]) => match b["entity"].as_str().and_then(Ent::parse) {
                Some(e) => {
                    st.tables[e.idx()].tracking = b["enabled"].as_bool().unwrap_or(true);
                    Ok(json!({"tracking": st.tables[e.idx()].tracking}))
                }
                None => Err("entity missing".into()),
            },
            // Change tracking data older than now is gone: every delta
            // token handed out so far has expired.
            ("POST", ["dv", "expire_deltas"]) => {
                st.token_floor = st.version + 1;
                Ok(json!({"token_floor": st.token_floor}))
            }
            ("POST", ["dv", "auth"]) => {
                if b["expire_access"].as_bool() == Some(true) {
                    st.access.values_mut().for_each(|v| *v = Instant::now());
                }
                if let Some(ttl) = b["token_ttl"].as_u64() {
                    st.opts.token_ttl = ttl;
                }
                Ok(json!({"token_ttl": st.opts.token_ttl}))
            }
            ("POST", ["dv", "limits"]) => {
                if let Some(n) = b["requests"].as_u64() {
                    st.limit = n;
                }
                if let Some(n) = b["window_s"].as_u64() {
                    st.window_s = n.max(1);
                }
                st.window_start = Instant::now();
                st.in_window = 0;
                Ok(json!({"requests": st.limit, "window_s": st.window_s}))
            }
            _ => return None,
        })
    }

    fn stats_extra(st: &State) -> Vec<(&'static str, Value)> {
        vec![
            ("token_calls", json!(st.token_calls)),
            ("throttled", json!(st.throttled)),
            ("version", json!(st.version)),
        ]
    }

    fn endpoint(path: &str) -> String {
        path.split('(').next().unwrap_or(path).to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_strangers() {
        for k in [1, 2, 99, 1_000_000] {
            let id = guid(7, Ent::Contact, k);
            assert_eq!(id.len(), 36, "{id}");
            assert_eq!(k_of(7, Ent::Contact, &id), Some(k));
            assert_eq!(k_of(7, Ent::Account, &id), None);
            assert_eq!(
                k_of(7, Ent::Contact, &format!("{{{}}}", id.to_uppercase())),
                Some(k)
            );
        }
        assert_eq!(
            k_of(7, Ent::Contact, "00000000-0000-0000-0000-000000000001"),
            None
        );
    }

    #[test]
    fn the_paging_cookie_round_trips() {
        let c = cookie(3, 15_000, VERSION_BASE + 4, true);
        assert!(
            c.starts_with("<cookie pagenumber=\"4\" pagingcookie=\"%253ccookie"),
            "{c}"
        );
        assert_eq!(read_cookie(&c), Some((4, 15_000, VERSION_BASE + 4)));
        assert_eq!(read_cookie("<cookie />"), None);
    }

    #[test]
    fn filters_parse_as_the_connector_writes_them() {
        let c = parse_filter(
            "modifiedon ge 2024-01-01T00:00:00Z and modifiedon lt 2024-02-01T00:00:00Z",
            "contactid",
        )
        .unwrap();
        assert!(matches!(c[0], Cond::Modified("ge", _)) && matches!(c[1], Cond::Modified("lt", _)));
        let c = parse_filter(
            "Microsoft.Dynamics.CRM.In(PropertyName='contactid',PropertyValues=['A','b'])",
            "contactid",
        )
        .unwrap();
        assert!(matches!(&c[0], Cond::In(v) if v == &["a", "b"]));
        assert!(parse_filter("name eq 'x'", "contactid").is_err());
    }
}
