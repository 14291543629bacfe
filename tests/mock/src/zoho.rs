//! A mock of Zoho CRM's REST API v8 and of the Zoho Accounts token
//! endpoint, on one port.
//!
//! As documented (crates/core/src/connectors/zoho/README.md cites each
//! page):
//! - Get Records `GET /crm/v8/{module}`: `fields` required, at most 50
//!   (`LIMIT_EXCEEDED`); `per_page` at most 200; `page` reaches the first
//!   2,000 records only (`DISCRETE_PAGINATION_LIMIT_EXCEEDED`), then
//!   `page_token` from `info.next_page_token`, bound to the other
//!   parameters (`TOKEN_BOUND_DATA_MISMATCH`) and ending at 100,000
//!   records (`PAGINATION_LIMIT_EXCEEDED`); `sort_by` id, Modified_Time or
//!   Created_Time; `ids` (at most 100); `converted` (Leads: converted ones
//!   are left out unless `both`); `If-Modified-Since` (inclusive); nothing
//!   to return is 204 without a body.
//! - Records: ids are strings of 19 digits; times carry the user's offset
//!   (`+05:30`, whole seconds); lookups `{name, id}`, Owner `{name, id,
//!   email}`; multi-select picklists are arrays.
//! - `GET /crm/v8/settings/fields?module=X`, `GET /crm/v8/settings/modules`,
//!   `GET /crm/v8/users?type=AllUsers`, `GET /crm/v8/{module}/deleted`
//!   (`type` all, recycle or permanent; recycle bin 60 days, permanent 120;
//!   an admin call here purges a record without a trace).
//! - COQL `POST /crm/v8/coql`: the connector's shapes only (`select ...
//!   from M where id > 'x' [and Modified_Time >= 't'] order by id asc
//!   limit n`, and `where id in (...)`); at most 2,000 rows a call.
//! - OAuth: `POST /oauth/v2/token` (query string, form or multipart),
//!   refresh tokens that do not rotate, answers with `api_domain`; errors
//!   come as HTTP 200 (`{"error":"invalid_code"}`, `invalid_client`,
//!   `Access Denied` past 10 tokens in 10 minutes). The API takes
//!   `Authorization: Zoho-oauthtoken ...`; an expired token is 401
//!   `INVALID_TOKEN`.
//! - API credits: a daily budget; each call costs (Get Records 1, COQL 1 to
//!   3 by its limit, deleted records 2); `X-API-CREDITS-REMAINING` only
//!   once half is spent; past the end 429 `TOO_MANY_REQUESTS`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::data::{mix, FIRST, LAST, T0_MS, WORDS};
use crate::faults::{echo_text, sent_secrets, Picked};
use crate::mock::{Base, Mock};
use crate::people;
use crate::server::{Request, Response};

pub const MAX_FIELDS: usize = 50;
pub const MAX_PER_PAGE: u64 = 200;
const ID_BASE: u64 = 5_725_767_000_000_000_000;
const STEP_S: i64 = 30;
/// The mock's users live in India Standard Time.
const OFFSET_S: i32 = 5 * 3600 + 1800;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub contacts: u64,
    pub accounts: u64,
    pub leads: u64,
    pub deals: u64,
    pub users: u64,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    /// Records `page_token` reaches (Zoho: 100,000).
    pub token_limit: u64,
    pub daily_credits: u64,
    pub token_ttl: u64,
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
            deals: 40,
            users: 3,
            client_id: "1000.ZOHOCLIENT".into(),
            client_secret: "zoho-secret".into(),
            refresh_token: "1000.zoho-refresh".into(),
            token_limit: 100_000,
            daily_credits: 50_000,
            token_ttl: 3600,
            shared_people: 0,
            gzip: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    Contacts,
    Accounts,
    Leads,
    Deals,
}

const MODULES: [Module; 4] = [
    Module::Contacts,
    Module::Accounts,
    Module::Leads,
    Module::Deals,
];

impl Module {
    pub fn name(self) -> &'static str {
        match self {
            Module::Contacts => "Contacts",
            Module::Accounts => "Accounts",
            Module::Leads => "Leads",
            Module::Deals => "Deals",
        }
    }
    pub fn parse(s: &str) -> Option<Module> {
        MODULES.iter().copied().find(|m| m.name() == s)
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// A field as `settings/fields` lists it.
#[derive(Debug, Clone)]
struct FieldDef {
    api: String,
    data_type: &'static str,
    json_type: &'static str,
    label: String,
    custom: bool,
    lookup: Option<&'static str>,
}

fn f(api: &str, data_type: &'static str, label: &str) -> FieldDef {
    let json_type = match data_type {
        "integer" | "bigint" => "integer",
        "double" | "currency" | "percent" => "double",
        "boolean" => "boolean",
        "lookup" | "ownerlookup" => "jsonobject",
        "multiselectpicklist" | "subform" => "jsonarray",
        _ => "string",
    };
    FieldDef {
        api: api.into(),
        data_type,
        json_type,
        label: label.into(),
        custom: false,
        lookup: None,
    }
}

fn lookup(api: &str, to: &'static str, label: &str) -> FieldDef {
    FieldDef {
        lookup: Some(to),
        ..f(api, "lookup", label)
    }
}

/// Contacts carry this many custom fields: with the standard ones, more
/// than one call's 50.
const CONTACT_CUSTOM: usize = 45;

fn fields(m: Module) -> Vec<FieldDef> {
    let mut v = vec![f("id", "bigint", "Record Id")];
    let common_tail = [
        f("Owner", "ownerlookup", "Owner"),
        f("Created_Time", "datetime", "Created Time"),
        f("Modified_Time", "datetime", "Modified Time"),
        f("Tag", "text", "Tag"),
    ];
    match m {
        Module::Contacts => {
            v.extend([
                f("First_Name", "text", "First Name"),
                f("Last_Name", "text", "Last Name"),
                f("Full_Name", "text", "Full Name"),
                f("Email", "email", "Email"),
                f("Phone", "phone", "Phone"),
                f("Mobile", "phone", "Mobile"),
                f("Title", "text", "Title"),
                f("Mailing_Country", "text", "Mailing Country"),
                lookup("Account_Name", "Accounts", "Account Name"),
                f("Lead_Source", "picklist", "Lead Source"),
                f("Languages", "multiselectpicklist", "Languages"),
                f("Date_of_Birth", "date", "Date of Birth"),
                f("Email_Opt_Out", "boolean", "Email Opt Out"),
                f("Description", "textarea", "Description"),
                f("Record_Image", "profileimage", "Contact Image"),
                f("Attachments_Sub", "subform", "Attachments"),
            ]);
            for i in 1..=CONTACT_CUSTOM {
                v.push(FieldDef {
                    custom: true,
                    ..f(
                        &format!("Custom_Score_{i}"),
                        "integer",
                        &format!("Score {i}"),
                    )
                });
            }
        }
        Module::Accounts => v.extend([
            f("Account_Name", "text", "Account Name"),
            f("Website", "website", "Website"),
            f("Phone", "phone", "Phone"),
            f("Billing_Country", "text", "Billing Country"),
            f("Industry", "picklist", "Industry"),
            f("Employees", "integer", "Employees"),
            f("Annual_Revenue", "currency", "Annual Revenue"),
        ]),
        Module::Leads => v.extend([
            f("First_Name", "text", "First Name"),
            f("Last_Name", "text", "Last Name"),
            f("Email", "email", "Email"),
            f("Phone", "phone", "Phone"),
            f("Company", "text", "Company"),
            f("Website", "website", "Website"),
            f("Lead_Status", "picklist", "Lead Status"),
            f("Country", "text", "Country"),
            f("Converted__s", "boolean", "Converted"),
        ]),
        Module::Deals => v.extend([
            f("Deal_Name", "text", "Deal Name"),
            f("Amount", "currency", "Amount"),
            f("Stage", "picklist", "Stage"),
            f("Closing_Date", "date", "Closing Date"),
            lookup("Account_Name", "Accounts", "Account Name"),
            lookup("Contact_Name", "Contacts", "Contact Name"),
            f("Probability", "percent", "Probability (%)"),
        ]),
    }
    v.extend(common_tail);
    v
}

pub fn id_of(k: u64) -> String {
    (ID_BASE + k).to_string()
}

fn k_of(id: &str) -> Option<u64> {
    id.trim()
        .parse::<u64>()
        .ok()?
        .checked_sub(ID_BASE)
        .filter(|k| *k > 0 && *k < 1_000_000_000)
}

fn fmt_s(s: i64) -> String {
    let tz = chrono::FixedOffset::east_opt(OFFSET_S).expect("offset");
    chrono::DateTime::from_timestamp(s, 0)
        .unwrap_or_default()
        .with_timezone(&tz)
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn parse_dt(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|d| d.timestamp())
}

#[derive(Debug, Clone)]
struct Row {
    values: Map<String, Value>,
    modified: i64,
}

struct Store {
    seeded: u64,
    rows: BTreeMap<u64, Row>,
    /// Deleted: when, and whether emptied from the recycle bin.
    deleted: BTreeMap<u64, (i64, &'static str)>,
    next: u64,
}

pub struct State {
    opts: Options,
    stores: Vec<Store>,
    clock: i64,
    access: HashMap<String, Instant>,
    token_calls: u64,
    /// When tokens were handed out lately (10 in 10 minutes at most).
    issued: VecDeque<Instant>,
    credits_spent: u64,
    /// Page tokens handed out: token → (parameters it is bound to, the
    /// last index served, records served so far).
    tokens: HashMap<String, (String, u64, u64)>,
    coql_calls: u64,
}

pub struct ZohoMock {
    base: Base<State>,
}

impl ZohoMock {
    pub fn new(o: Options) -> ZohoMock {
        let counts = [o.contacts, o.accounts, o.leads, o.deals];
        let stores = counts
            .iter()
            .map(|&n| Store {
                seeded: n,
                rows: BTreeMap::new(),
                deleted: BTreeMap::new(),
                next: n + 1,
            })
            .collect();
        let gzip = o.gzip;
        ZohoMock {
            base: Base::new(
                State {
                    opts: o,
                    stores,
                    clock: 0,
                    access: HashMap::new(),
                    token_calls: 0,
                    issued: VecDeque::new(),
                    credits_spent: 0,
                    tokens: HashMap::new(),
                    coql_calls: 0,
                },
                gzip,
            ),
        }
    }
}

fn body(status: u16, v: Value) -> Response {
    Response::json(status, v.to_string().into_bytes())
}

/// Zoho's error shape.
fn error(status: u16, code: &str, msg: &str, details: Value) -> Response {
    body(
        status,
        json!({"code": code, "details": details, "message": msg, "status": "error"}),
    )
}

fn no_content() -> Response {
    Response {
        status: 204,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn invalid_token() -> Response {
    error(401, "INVALID_TOKEN", "invalid oauth token", json!({}))
}

impl State {
    fn now(&mut self) -> i64 {
        let real = chrono::Utc::now().timestamp();
        self.clock = self.clock.max(real);
        self.clock
    }

    fn store(&self, m: Module) -> &Store {
        &self.stores[m.idx()]
    }

    fn exists(&self, m: Module, k: u64) -> bool {
        let s = self.store(m);
        k >= 1 && (k <= s.seeded || s.rows.contains_key(&k)) && !s.deleted.contains_key(&k)
    }

    fn modified(&self, m: Module, k: u64) -> i64 {
        self.store(m)
            .rows
            .get(&k)
            .map_or(T0_MS / 1000 + k as i64 * STEP_S, |r| r.modified)
    }

    fn converted(&self, m: Module, k: u64) -> bool {
        m == Module::Leads && self.value(m, k, "Converted__s") == json!(true)
    }

    fn seeded(&self, m: Module, k: u64, field: &str) -> Value {
        let seed = self.opts.seed;
        let h = |w: u64| mix(seed ^ mix(k ^ w.rotate_left(19) ^ ((m as u64) << 44)));
        let shared = self.opts.shared_people;
        let person = (m == Module::Contacts && k <= shared).then(|| people::person(k, shared));
        let modified = T0_MS / 1000 + k as i64 * STEP_S;
        let user = |w: u64| {
            let u = h(w) % self.opts.users.max(1) + 1;
            json!({"name": format!("User {u}"), "id": id_of(900_000_000 - u), "email": format!("user{u}@zylker.example")})
        };
        let of = |to: Module, w: u64| {
            let n = self.store(to).seeded;
            if n == 0 {
                Value::Null
            } else {
                let c = h(w) % n + 1;
                json!({"name": self.seeded(to, c, if to == Module::Accounts { "Account_Name" } else { "Full_Name" }), "id": id_of(c)})
            }
        };
        let first = FIRST[(h(1) % FIRST.len() as u64) as usize];
        let last = LAST[(h(2) % LAST.len() as u64) as usize];
        match (m, field) {
            (_, "id") => json!(id_of(k)),
            (_, "Modified_Time") => json!(fmt_s(modified)),
            (_, "Created_Time") => json!(fmt_s(modified - 86_400)),
            (_, "Owner") => user(3),
            (_, "Tag") => json!([]),
            (Module::Contacts | Module::Leads, "First_Name") => match &person {
                Some(p) => json!(p.first),
                None => json!(first),
            },
            (Module::Contacts | Module::Leads, "Last_Name") => match &person {
                Some(p) => json!(p.last),
                None => json!(last),
            },
            (_, "Full_Name") => {
                let a = self.seeded(m, k, "First_Name");
                let b = self.seeded(m, k, "Last_Name");
                json!(format!(
                    "{} {}",
                    a.as_str().unwrap_or(""),
                    b.as_str().unwrap_or("")
                ))
            }
            (Module::Contacts | Module::Leads, "Email") => match &person {
                // Zoho users paste emails with a trailing dot now and then.
                Some(p) if k.is_multiple_of(5) => json!(format!("{}.", p.email)),
                Some(p) => json!(p.email),
                None => json!(format!(
                    "{}.{}{k}@{}.example.org",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    WORDS[(h(4) % WORDS.len() as u64) as usize].to_lowercase()
                )),
            },
            (_, "Phone") => match &person {
                Some(p) => {
                    let (area, exch, line) = p.phone;
                    json!(format!("001{area}{exch:03}{line:04}"))
                }
                None => json!(format!("+91 98{:08}", h(5) % 100_000_000)),
            },
            (_, "Mobile") => Value::Null,
            (_, "Title") => json!(["Manager", "Analyst", "Director"][(h(6) % 3) as usize]),
            (_, "Mailing_Country" | "Country" | "Billing_Country") => {
                json!(["India", "United States", "Germany"][(h(7) % 3) as usize])
            }
            (Module::Contacts, "Account_Name") => match &person {
                Some(p) => json!({"name": people::company(p.company).0, "id": id_of(p.company)}),
                None => of(Module::Accounts, 8),
            },
            (_, "Lead_Source") => {
                json!(["Advertisement", "Web Download", "Trade Show"][(h(9) % 3) as usize])
            }
            (_, "Languages") => json!(["English", "Hindi"][..(1 + h(10) % 2) as usize]),
            (_, "Date_of_Birth") => {
                if h(11).is_multiple_of(2) {
                    Value::Null
                } else {
                    json!(format!(
                        "19{:02}-0{}-1{}",
                        60 + h(12) % 40,
                        1 + h(13) % 9,
                        h(14) % 10
                    ))
                }
            }
            (_, "Email_Opt_Out") => json!(h(15).is_multiple_of(4)),
            (_, "Description") => Value::Null,
            (_, "Record_Image" | "Attachments_Sub") => Value::Null,
            (_, c) if c.starts_with("Custom_Score_") => json!(h(16 + c.len() as u64) % 100),
            (Module::Accounts, "Account_Name") => {
                match shared > 0 && k <= people::companies(shared) {
                    true => json!(people::company(k).0),
                    false => json!(format!(
                        "{} {}",
                        WORDS[(h(17) % WORDS.len() as u64) as usize],
                        ["Pvt Ltd", "LLC", "AG"][(h(18) % 3) as usize]
                    )),
                }
            }
            (Module::Accounts, "Website") => match shared > 0 && k <= people::companies(shared) {
                true => json!(format!("http://{}", people::company(k).1)),
                false => json!(format!(
                    "www.{}.example.in",
                    WORDS[(h(17) % WORDS.len() as u64) as usize].to_lowercase()
                )),
            },
            (_, "Website") => json!(format!(
                "www.{}.example.in",
                WORDS[(h(19) % WORDS.len() as u64) as usize].to_lowercase()
            )),
            (_, "Industry") => {
                json!(["Technology", "Manufacturing", "Retail"][(h(20) % 3) as usize])
            }
            (_, "Employees") => json!(h(21) % 10_000),
            (_, "Annual_Revenue" | "Amount") => json!((h(22) % 1_000_000) as f64 + 0.25),
            (_, "Company") => json!(format!(
                "{} Traders",
                WORDS[(h(23) % WORDS.len() as u64) as usize]
            )),
            (_, "Lead_Status") => {
                json!(["Not Contacted", "Contacted", "Qualified"][(h(24) % 3) as usize])
            }
            (_, "Converted__s") => json!(h(25).is_multiple_of(10)),
            (_, "Deal_Name") => json!(format!("Deal {k}")),
            (_, "Stage") => {
                json!(["Qualification", "Negotiation/Review", "Closed Won"][(h(26) % 3) as usize])
            }
            (_, "Closing_Date") => {
                json!(format!("2025-{:02}-{:02}", 1 + h(27) % 12, 1 + h(28) % 28))
            }
            (Module::Deals, "Account_Name") => of(Module::Accounts, 29),
            (Module::Deals, "Contact_Name") => of(Module::Contacts, 30),
            (_, "Probability") => json!(h(31) % 100),
            _ => Value::Null,
        }
    }

    fn value(&self, m: Module, k: u64, field: &str) -> Value {
        match self.store(m).rows.get(&k) {
            Some(r) => match field {
                "Modified_Time" => json!(fmt_s(r.modified)),
                "id" => json!(id_of(k)),
                f => r.values.get(f).cloned().unwrap_or_else(|| {
                    if k <= self.store(m).seeded {
                        self.seeded(m, k, f)
                    } else {
                        Value::Null
                    }
                }),
            },
            None => self.seeded(m, k, field),
        }
    }

    fn render(&self, m: Module, k: u64, fields: &[&str]) -> Value {
        let mut o = Map::new();
        for f in fields {
            o.insert((*f).to_owned(), self.value(m, k, f));
        }
        o.insert("id".into(), json!(id_of(k)));
        o.insert("$editable".into(), json!(true));
        o.insert("$currency_symbol".into(), json!("₹"));
        Value::Object(o)
    }

    fn authorized(&self, req: &Request) -> bool {
        req.header("authorization")
            .and_then(|h| h.strip_prefix("Zoho-oauthtoken "))
            .and_then(|t| self.access.get(t))
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Spend `cost` credits: the 429 past the day's, and the header once
    /// half is spent.
    fn spend(&mut self, cost: u64) -> Result<Option<u64>, Response> {
        let total = self.opts.daily_credits;
        if self.credits_spent + cost > total {
            return Err(error(
                429,
                "TOO_MANY_REQUESTS",
                "The number of API requests for the 24 hour period is exceeded.",
                json!({}),
            )
            .with_header("X-API-CREDITS-REMAINING", "0"));
        }
        self.credits_spent += cost;
        let left = total - self.credits_spent;
        Ok((self.credits_spent * 2 >= total).then_some(left))
    }

    fn token(&mut self, req: &Request) -> Response {
        self.token_calls += 1;
        let text = String::from_utf8_lossy(&req.body).into_owned();
        let mut form: HashMap<String, String> = req.query.iter().cloned().collect();
        let ct = req.header("content-type").unwrap_or("");
        if let Some(boundary) = ct.split("boundary=").nth(1) {
            // multipart/form-data, as the official SDK sends it.
            for part in text.split(&format!("--{boundary}")) {
                if let Some((head, value)) = part.split_once("\r\n\r\n") {
                    if let Some(name) = head
                        .split("name=\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                    {
                        form.insert(name.to_owned(), value.trim_end_matches("\r\n").to_owned());
                    }
                }
            }
        } else {
            form.extend(crate::server::parse_form(&text));
        }
        // Errors come as HTTP 200.
        if form.get("client_id") != Some(&self.opts.client_id)
            || form.get("client_secret") != Some(&self.opts.client_secret)
        {
            return body(200, json!({"error": "invalid_client"}));
        }
        if form.get("grant_type").map(String::as_str) != Some("refresh_token")
            || form.get("refresh_token") != Some(&self.opts.refresh_token)
        {
            return body(200, json!({"error": "invalid_code"}));
        }
        let now = Instant::now();
        while self
            .issued
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(600))
        {
            self.issued.pop_front();
        }
        if self.issued.len() >= 10 {
            return body(
                200,
                json!({"error_description": "You have made too many requests continuously. Please try again after some time.",
                       "error": "Access Denied", "status": "failure"}),
            );
        }
        self.issued.push_back(now);
        let token = format!("1000.zoho-access-{}.x", self.token_calls);
        self.access.insert(
            token.clone(),
            now + Duration::from_secs(self.opts.token_ttl),
        );
        let host = req.header("host").unwrap_or("127.0.0.1");
        body(
            200,
            json!({"access_token": token, "api_domain": format!("http://{host}"),
                   "token_type": "Bearer", "expires_in": self.opts.token_ttl}),
        )
    }

    /// Live records of `m` after index `after`, in id order, passing
    /// `keep`, at most `n`.
    fn scan(&self, m: Module, after: u64, n: usize, keep: &dyn Fn(u64) -> bool) -> Vec<u64> {
        let s = self.store(m);
        let mut out = Vec::new();
        let mut created = s
            .rows
            .range(after + 1..)
            .map(|(k, _)| *k)
            .filter(|k| *k > s.seeded);
        let mut k = after + 1;
        while out.len() < n {
            let cand = if k <= s.seeded {
                k += 1;
                k - 1
            } else {
                match created.next() {
                    Some(c) => c,
                    None => break,
                }
            };
            if self.exists(m, cand) && keep(cand) {
                out.push(cand);
            }
        }
        out
    }

    /// `GET /crm/v8/{module}`.
    fn list(&mut self, m: Module, req: &Request) -> Response {
        let bad = |code: &str, msg: &str, d: Value| error(400, code, msg, d);
        let Some(fields) = req.param("fields") else {
            return bad(
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameters is missing.",
                json!({"param_name": "fields"}),
            );
        };
        let fields: Vec<&str> = fields
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if fields.len() > MAX_FIELDS {
            return bad(
                "LIMIT_EXCEEDED",
                "Fields limit exceeded.",
                json!({"limit": MAX_FIELDS}),
            );
        }
        let known = self::fields(m);
        for f in &fields {
            if !known.iter().any(|d| d.api == *f) {
                return bad(
                    "INVALID_DATA",
                    "the field is not available",
                    json!({"api_name": f}),
                );
            }
        }
        let per_page = match req.param("per_page").map(str::parse::<u64>) {
            None => MAX_PER_PAGE,
            Some(Ok(n)) if (1..=MAX_PER_PAGE).contains(&n) => n,
            _ => {
                return bad(
                    "INVALID_DATA",
                    "invalid per_page",
                    json!({"param_name": "per_page"}),
                )
            }
        };
        if req.param("page").is_some() && req.param("page_token").is_some() {
            return bad(
                "AMBIGUITY_DURING_PROCESSING",
                "You cannot use both page and page_token",
                json!({}),
            );
        }
        let sort_by = req.param("sort_by").unwrap_or("id");
        if sort_by != "id" {
            return bad(
                "INVALID_DATA",
                "sort_by other than id is not supported by this mock",
                json!({}),
            );
        }
        if req.param("sort_order") != Some("asc") {
            return bad(
                "INVALID_DATA",
                "sort_order desc is not supported by this mock",
                json!({}),
            );
        }
        let since = match req.header("if-modified-since").map(parse_dt) {
            None => None,
            Some(Some(t)) => Some(t),
            Some(None) => {
                return bad(
                    "INVALID_DATA",
                    "If-Modified-Since is not a valid date time",
                    json!({}),
                )
            }
        };
        let converted = req.param("converted").unwrap_or("false");
        let ids: Option<Vec<u64>> = req
            .param("ids")
            .map(|s| s.split(',').filter_map(k_of).collect());
        if ids.as_ref().is_some_and(|v| v.len() > 100) {
            return bad(
                "LIMIT_EXCEEDED",
                "ids limit exceeded",
                json!({"limit": 100}),
            );
        }
        // What a page token is bound to: every parameter but itself.
        let mut bound: Vec<String> = req
            .query
            .iter()
            .filter(|(k, _)| k != "page_token" && k != "page")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        bound.push(format!(
            "ims={}",
            req.header("if-modified-since").unwrap_or("")
        ));
        bound.sort();
        let bound = bound.join("&");
        let (after, served) = match (req.param("page"), req.param("page_token")) {
            (_, Some(t)) => match self.tokens.get(t) {
                None => return bad("INVALID_DATA", "The token given seems to be invalid", json!({"param_name": "page_token"})),
                Some((b, _, _)) if *b != bound => {
                    return bad("TOKEN_BOUND_DATA_MISMATCH", "The page_token given seems to be invalid or input param is added, altered, or deleted.", json!({}))
                }
                Some((_, last, served)) => (*last, *served),
            },
            (Some(p), None) => {
                let p: u64 = p.parse().unwrap_or(0);
                if p == 0 {
                    return bad("INVALID_DATA", "invalid page", json!({}));
                }
                if (p - 1) * per_page >= 2_000 {
                    return bad("DISCRETE_PAGINATION_LIMIT_EXCEEDED", "You can only get the first 2000 records without using page_token param", json!({"limit": 2000}));
                }
                // Offset paging: skip the pages before.
                let skip = ((p - 1) * per_page) as usize;
                let before = self.matching(m, 0, skip, since, converted, ids.as_deref());
                (before.last().copied().unwrap_or(0), skip as u64)
            }
            (None, None) => (0, 0),
        };
        if served >= self.opts.token_limit {
            return bad(
                "PAGINATION_LIMIT_EXCEEDED",
                "You can only get up to first 100000 records using page_token param.",
                json!({"limit": self.opts.token_limit}),
            );
        }
        let n = per_page.min(self.opts.token_limit - served) as usize;
        let page = self.matching(m, after, n + 1, since, converted, ids.as_deref());
        let more = page.len() > n;
        let page = &page[..page.len().min(n)];
        if page.is_empty() {
            return no_content();
        }
        let data: Vec<Value> = page.iter().map(|k| self.render(m, *k, &fields)).collect();
        let next = if more {
            let t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
                "{}:{}:{}",
                m.name(),
                page[page.len() - 1],
                mix(self.tokens.len() as u64)
            ));
            self.tokens.insert(
                t.clone(),
                (bound, page[page.len() - 1], served + page.len() as u64),
            );
            Some(t)
        } else {
            None
        };
        body(
            200,
            json!({"data": data,
                   "info": {"call": false, "per_page": per_page, "next_page_token": next,
                            "count": page.len(), "sort_by": "id", "page": req.param("page").and_then(|p| p.parse::<u64>().ok()).unwrap_or(1),
                            "previous_page_token": null,
                            "page_token_expiry": next.as_ref().map(|_| fmt_s(self.clock + 86_400)),
                            "sort_order": "asc", "email": false, "more_records": more}}),
        )
    }

    fn matching(
        &self,
        m: Module,
        after: u64,
        n: usize,
        since: Option<i64>,
        converted: &str,
        ids: Option<&[u64]>,
    ) -> Vec<u64> {
        let keep = |k: u64| {
            since.is_none_or(|t| self.modified(m, k) >= t)
                && match converted {
                    "both" => true,
                    "true" => self.converted(m, k),
                    _ => !self.converted(m, k),
                }
        };
        match ids {
            Some(ids) => {
                let mut v: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|k| *k > after && self.exists(m, *k) && keep(*k))
                    .collect();
                v.sort_unstable();
                v.dedup();
                v.truncate(n);
                v
            }
            None => self.scan(m, after, n, &keep),
        }
    }

    /// `GET /crm/v8/{module}/deleted`.
    fn deleted(&self, m: Module, req: &Request) -> Response {
        let kind = req.param("type").unwrap_or("all");
        if !["all", "recycle", "permanent"].contains(&kind) {
            return error(
                400,
                "PATTERN_NOT_MATCHED",
                "Please check whether the input values are correct",
                json!({"param_name": "type"}),
            );
        }
        let since = req.header("if-modified-since").and_then(parse_dt);
        let per_page = req
            .param("per_page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(200)
            .min(200);
        let page = req
            .param("page")
            .and_then(|p| p.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let mut all: Vec<(&u64, &(i64, &str))> = self
            .store(m)
            .deleted
            .iter()
            .filter(|(_, (t, ty))| {
                since.is_none_or(|s| *t >= s) && (kind == "all" || *ty == kind) && *ty != "purged"
            })
            .collect();
        all.sort_by_key(|(k, (t, _))| (std::cmp::Reverse(*t), **k));
        let chunk: Vec<Value> = all
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|(k, (t, ty))| {
                let (by, name) = if *ty == "recycle" {
                    (json!({"name": "User 1", "id": id_of(899_999_999)}), json!(format!("Record {k}")))
                } else {
                    (Value::Null, Value::Null)
                };
                json!({"deleted_by": by, "id": id_of(**k), "display_name": name, "type": ty,
                       "created_by": {"name": "User 1", "id": id_of(899_999_999)}, "deleted_time": fmt_s(*t)})
            })
            .collect();
        if chunk.is_empty() {
            return no_content();
        }
        let more = all.len() > page * per_page;
        body(
            200,
            json!({"data": chunk, "info": {"per_page": per_page, "count": chunk.len(), "page": page, "more_records": more}}),
        )
    }

    /// `POST /crm/v8/coql`: the connector's query shapes.
    fn coql(&mut self, req: &Request) -> Result<(Response, u64), Response> {
        self.coql_calls += 1;
        let syntax = |near: &str| {
            error(
                400,
                "SYNTAX_ERROR",
                "error occured while parsing the query",
                json!({"near": near}),
            )
        };
        let b: Value = serde_json::from_slice(&req.body).map_err(|_| syntax("body"))?;
        let q = b["select_query"]
            .as_str()
            .ok_or_else(|| syntax("select_query"))?
            .trim()
            .to_owned();
        let lower = q.to_ascii_lowercase();
        let s = lower
            .strip_prefix("select ")
            .ok_or_else(|| syntax("select"))?;
        let from = s.find(" from ").ok_or_else(|| syntax("from"))?;
        let cols: Vec<String> = q[7..7 + from]
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect();
        if cols.len() > 500 {
            return Err(error(
                400,
                "LIMIT_EXCEEDED",
                "The value of limit clause or the select column exceeded the maximum limit",
                json!({"clause": "select"}),
            ));
        }
        let rest = q[7 + from + 6..].trim();
        let (module, rest) = rest.split_once(' ').ok_or_else(|| syntax("module"))?;
        let m = Module::parse(module).ok_or_else(|| {
            error(
                400,
                "INVALID_QUERY",
                "the module name given seems to be invalid",
                json!({"module": module}),
            )
        })?;
        let known = fields(m);
        for c in &cols {
            if !known.iter().any(|d| d.api == *c) {
                return Err(error(
                    400,
                    "INVALID_QUERY",
                    "column given seems to be invalid",
                    json!({"column_name": c}),
                ));
            }
        }
        let rest = rest
            .trim()
            .strip_prefix("where ")
            .ok_or_else(|| syntax("where"))?;
        let (cond, tail) = match rest.find(" order by ") {
            Some(i) => (&rest[..i], &rest[i..]),
            None => rest
                .split_once(" limit ")
                .map(|(a, _)| (a, ""))
                .unwrap_or((rest, "")),
        };
        let limit: u64 = lower
            .rsplit(" limit ")
            .next()
            .and_then(|l| {
                l.trim()
                    .split(',')
                    .next_back()
                    .map(str::trim)
                    .and_then(|x| x.parse().ok())
            })
            .unwrap_or(200);
        if limit > 2_000 {
            return Err(error(
                400,
                "LIMIT_EXCEEDED",
                "Max records limit exceeded",
                json!({"clause": "limit"}),
            ));
        }
        if !tail.is_empty() && !tail.to_ascii_lowercase().starts_with(" order by id asc") {
            return Err(syntax("order by"));
        }
        let mut after = 0u64;
        let mut since = None;
        let mut ids: Option<Vec<u64>> = None;
        for part in cond.split(" and ") {
            let part = part
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')')
                .trim();
            if let Some(v) = part.strip_prefix("id > ") {
                after = k_of(v.trim_matches('\'')).unwrap_or(0);
            } else if let Some(v) = part.strip_prefix("Modified_Time >= ") {
                since = Some(parse_dt(v.trim_matches('\'')).ok_or_else(|| syntax(v))?);
            } else if let Some(v) = part.strip_prefix("id in ") {
                let list: Vec<u64> = v
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .split(',')
                    .filter_map(|x| k_of(x.trim().trim_matches('\'')))
                    .collect();
                if list.len() > 100 {
                    return Err(error(
                        400,
                        "LIMIT_EXCEEDED",
                        "in values exceeded",
                        json!({}),
                    ));
                }
                ids = Some(list);
            } else if part == "id is not null" {
            } else {
                return Err(syntax(part));
            }
        }
        let page = self.matching(m, after, limit as usize + 1, since, "both", ids.as_deref());
        let more = page.len() as u64 > limit;
        let page = &page[..page.len().min(limit as usize)];
        let cost = match limit {
            0..=200 => 1,
            201..=1000 => 2,
            _ => 3,
        };
        if page.is_empty() {
            return Ok((no_content(), cost));
        }
        let colrefs: Vec<&str> = cols.iter().map(String::as_str).collect();
        let data: Vec<Value> = page
            .iter()
            .map(|k| {
                let mut v = self.render(m, *k, &colrefs);
                // COQL answers carry no $ keys.
                if let Value::Object(o) = &mut v {
                    o.retain(|k, _| !k.starts_with('$'));
                }
                v
            })
            .collect();
        Ok((
            body(
                200,
                json!({"data": data, "info": {"count": page.len(), "more_records": more}}),
            ),
            cost,
        ))
    }

    fn fields_meta(&self, req: &Request) -> Response {
        let Some(m) = req.param("module").and_then(Module::parse) else {
            return error(
                400,
                "INVALID_MODULE",
                "the module name given seems to be invalid",
                json!({"resource_path_index": 0}),
            );
        };
        let list: Vec<Value> = fields(m)
            .iter()
            .map(|d| {
                let mut v = json!({"api_name": d.api, "data_type": d.data_type, "json_type": d.json_type,
                                   "field_label": d.label, "display_label": d.label, "custom_field": d.custom,
                                   "visible": true, "read_only": d.api == "id" || d.api.ends_with("_Time"),
                                   "id": id_of(800_000_000 + d.api.len() as u64)});
                if let Some(to) = d.lookup {
                    v["lookup"] = json!({"module": {"api_name": to, "id": id_of(700_000_000)}, "display_label": to, "api_name": d.api});
                }
                v
            })
            .collect();
        body(200, json!({"fields": list}))
    }

    fn modules_meta(&self) -> Response {
        let mut list: Vec<Value> = MODULES
            .iter()
            .map(|m| {
                json!({"api_name": m.name(), "module_name": m.name(), "plural_label": m.name(),
                       "singular_label": m.name().trim_end_matches('s'), "api_supported": true,
                       "generated_type": "default", "id": id_of(600_000_000 + m.idx() as u64)})
            })
            .collect();
        list.push(json!({"api_name": "Contacts_X_Deals", "module_name": "Contacts_X_Deals", "plural_label": "Contact Roles",
                         "singular_label": "Contact Role", "api_supported": true, "generated_type": "linking", "id": id_of(600_000_010)}));
        list.push(json!({"api_name": "Visits", "module_name": "Visits", "plural_label": "Visits",
                         "singular_label": "Visit", "api_supported": false, "generated_type": "default", "id": id_of(600_000_011)}));
        body(200, json!({"modules": list}))
    }

    fn users(&self, req: &Request) -> Response {
        let per_page = req
            .param("per_page")
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(200)
            .min(200);
        let page = req
            .param("page")
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(1)
            .max(1);
        let n = self.opts.users;
        let from = (page - 1) * per_page + 1;
        let to = (from + per_page - 1).min(n);
        if from > n {
            return no_content();
        }
        let users: Vec<Value> = (from..=to)
            .map(|u| {
                json!({"id": id_of(900_000_000 - u), "full_name": format!("User {u}"), "first_name": "User",
                       "last_name": u.to_string(), "email": format!("user{u}@zylker.example"), "status": "active",
                       "role": {"name": "CEO", "id": id_of(500_000_000)},
                       "Modified_Time": fmt_s(T0_MS / 1000 + u as i64), "created_time": fmt_s(T0_MS / 1000)})
            })
            .collect();
        body(
            200,
            json!({"users": users, "info": {"per_page": per_page, "count": users.len(), "page": page, "more_records": to < n}}),
        )
    }

    fn upsert(
        &mut self,
        m: Module,
        id: Option<&str>,
        values: &Map<String, Value>,
    ) -> Result<String, String> {
        let now = self.now();
        let k = match id {
            Some(id) => k_of(id).ok_or("unknown id")?,
            None => {
                let s = &mut self.stores[m.idx()];
                s.next += 1;
                s.next - 1
            }
        };
        let known = fields(m);
        for n in values.keys() {
            if !known.iter().any(|d| d.api == *n) {
                return Err(format!("unknown field {n}"));
            }
        }
        let s = &mut self.stores[m.idx()];
        s.deleted.remove(&k);
        let row = s.rows.entry(k).or_insert_with(|| Row {
            values: Map::new(),
            modified: now,
        });
        for (n, v) in values {
            row.values.insert(n.clone(), v.clone());
        }
        row.modified = values
            .get("Modified_Time")
            .and_then(Value::as_str)
            .and_then(parse_dt)
            .unwrap_or(now);
        Ok(id_of(k))
    }
}

impl Mock for ZohoMock {
    type State = State;
    const FAULT_KINDS: &'static [&'static str] = &["429", "401", "500", "expired_page_token"];

    fn base(&self) -> &Base<State> {
        &self.base
    }

    fn fault(&self, kind: &str, _req: &Request) -> Option<Response> {
        Some(match kind {
            "429" => error(
                429,
                "TOO_MANY_REQUESTS",
                "The concurrency limit of the user for the app is exceeded.",
                json!({}),
            ),
            "401" => invalid_token(),
            "500" => error(500, "INTERNAL_ERROR", "Internal Server Error", json!({})),
            "expired_page_token" => error(
                400,
                "EXPIRED_VALUE",
                "The token given has expired.",
                json!({"param_name": "page_token"}),
            ),
            _ => return None,
        })
    }

    fn echo(&self, _st: &mut State, fault: &Picked, req: &Request) -> Response {
        let sent = sent_secrets(req);
        error(
            fault.status.unwrap_or(400),
            "INVALID_DATA",
            &format!("invalid data: {}", echo_text(&sent)),
            json!({}),
        )
    }

    fn route(&self, st: &mut State, req: &Request) -> Response {
        let path = req.path.trim_end_matches('/');
        if req.method == "POST" && path == "/oauth/v2/token" {
            return st.token(req);
        }
        if !st.authorized(req) {
            return invalid_token();
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let cost = match parts.as_slice() {
            ["crm", "v8", _, "deleted"] => 2,
            ["crm", "v8", "coql"] => 0, // by its limit, below
            _ => 1,
        };
        let left = match st.spend(cost) {
            Ok(l) => l,
            Err(r) => return r,
        };
        let r = match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["crm", "v8", "settings", "fields"]) => st.fields_meta(req),
            ("GET", ["crm", "v8", "settings", "modules"]) => st.modules_meta(),
            ("GET", ["crm", "v8", "users"]) => st.users(req),
            ("POST", ["crm", "v8", "coql"]) => match st.coql(req) {
                Ok((r, cost)) => match st.spend(cost) {
                    Ok(_) => r,
                    Err(e) => e,
                },
                Err(e) => e,
            },
            ("GET", ["crm", "v8", module, "deleted"]) => match Module::parse(module) {
                Some(m) => st.deleted(m, req),
                None => error(
                    400,
                    "INVALID_MODULE",
                    "the module name given seems to be invalid",
                    json!({"resource_path_index": 0}),
                ),
            },
            ("GET", ["crm", "v8", module]) => match Module::parse(module) {
                Some(m) => st.list(m, req),
                None => error(
                    400,
                    "INVALID_MODULE",
                    "the module name given seems to be invalid",
                    json!({"resource_path_index": 0}),
                ),
            },
            _ => error(
                404,
                "INVALID_URL_PATTERN",
                "Please check if the URL trying to access is a correct one",
                json!({}),
            ),
        };
        let left = st.spend(0).ok().flatten().or(left);
        match left {
            Some(l) => r.with_header("X-API-CREDITS-REMAINING", l.to_string()),
            None => r,
        }
    }

    fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
        if action["action"] == "expire_access" {
            st.access.values_mut().for_each(|v| *v = Instant::now());
            return Ok(json!({}));
        }
        let m = action["module"]
            .as_str()
            .and_then(Module::parse)
            .ok_or("module missing")?;
        match action["action"].as_str() {
            Some("upsert") => {
                let empty = Map::new();
                let id = st.upsert(
                    m,
                    action["id"].as_str(),
                    action["record"].as_object().unwrap_or(&empty),
                )?;
                Ok(json!({"id": id}))
            }
            Some(kind @ ("delete" | "purge")) => {
                let k = action["id"].as_str().and_then(k_of).ok_or("id missing")?;
                if !st.exists(m, k) {
                    return Ok(json!({"deleted": false}));
                }
                let now = st.now();
                let ty = if kind == "purge" { "purged" } else { "recycle" };
                st.stores[m.idx()].deleted.insert(k, (now, ty));
                Ok(json!({"deleted": true}))
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
            ("POST", ["zoho", action @ ("upsert" | "delete" | "purge")]) => {
                let mut a = b.clone();
                a["action"] = json!(action);
                Self::apply_action(st, &a)
            }
            ("POST", ["zoho", "upsert_range"]) => {
                let (Some(m), Some(from), Some(to)) = (
                    b["module"].as_str().and_then(Module::parse),
                    b["from"].as_u64(),
                    b["to"].as_u64(),
                ) else {
                    return Some(Err("module, from and to needed".into()));
                };
                let empty = Map::new();
                let rec = b["record"].as_object().unwrap_or(&empty).clone();
                for k in from..=to.min(from + 1_000_000) {
                    if let Err(e) = st.upsert(m, Some(&id_of(k)), &rec) {
                        return Some(Err(e));
                    }
                }
                Ok(json!({"changed": to.saturating_sub(from) + 1}))
            }
            ("POST", ["zoho", "record"]) => match (
                b["module"].as_str().and_then(Module::parse),
                b["id"].as_str().and_then(k_of),
            ) {
                (Some(m), Some(k)) if st.exists(m, k) => {
                    let names: Vec<String> = fields(m).into_iter().map(|d| d.api).collect();
                    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
                    Ok(st.render(m, k, &refs))
                }
                (Some(_), Some(_)) => Ok(Value::Null),
                _ => Err("module and id needed".into()),
            },
            ("POST", ["zoho", "credits"]) => {
                if let Some(n) = b["daily"].as_u64() {
                    st.opts.daily_credits = n;
                }
                if let Some(n) = b["spent"].as_u64() {
                    st.credits_spent = n;
                }
                Ok(json!({"daily": st.opts.daily_credits, "spent": st.credits_spent}))
            }
            ("POST", ["zoho", "auth"]) => {
                if b["expire_access"].as_bool() == Some(true) {
                    st.access.values_mut().for_each(|v| *v = Instant::now());
                }
                if let Some(t) = b["token_ttl"].as_u64() {
                    st.opts.token_ttl = t;
                }
                Ok(json!({"token_ttl": st.opts.token_ttl}))
            }
            _ => return None,
        })
    }

    fn stats_extra(st: &State) -> Vec<(&'static str, Value)> {
        vec![
            ("token_calls", json!(st.token_calls)),
            ("credits_spent", json!(st.credits_spent)),
            ("coql_calls", json!(st.coql_calls)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nineteen_digits_and_round_trip() {
        assert_eq!(id_of(1).len(), 19);
        assert_eq!(k_of(&id_of(12_345)), Some(12_345));
        assert_eq!(k_of("123"), None);
        assert_eq!(k_of("x"), None);
    }

    #[test]
    fn times_carry_the_users_offset() {
        assert_eq!(fmt_s(0), "1970-01-01T05:30:00+05:30");
        assert_eq!(parse_dt("1970-01-01T05:30:00+05:30"), Some(0));
    }

    #[test]
    fn contacts_have_more_fields_than_one_call_takes() {
        assert!(fields(Module::Contacts).len() > MAX_FIELDS);
        assert!(fields(Module::Accounts).len() < MAX_FIELDS);
    }
}
