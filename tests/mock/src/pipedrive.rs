//! A mock of Pipedrive's API as the `pipedrive` spec reads it, and a small
//! configurable endpoint (`/generic/items`) for every paging and auth style
//! a `rest` spec can describe.
//!
//! Pipedrive, as documented (docs/specs.md cites each page):
//! - v2 lists `GET /api/v2/{persons,organizations,deals,activities}`:
//!   `limit` (default 100, at most 500, more is a 400), opaque `cursor`,
//!   `additional_data.next_cursor` null on the last page; `updated_since`
//!   inclusive and `updated_until` exclusive (RFC 3339); `sort_by` id,
//!   update_time or add_time; `ids` (at most 100); deals take `status`
//!   (`deleted` lists deleted deals). Deleted records leave the other
//!   lists and are purged after 30 days (an admin call here).
//! - Custom fields: 40-character hash keys under `custom_fields`; field
//!   metadata at `GET /api/v2/{person,organization,deal,activity}Fields`
//!   (`field_code`, `field_name`, `field_type`, `is_custom_field`), cursor
//!   paged. A deleted field leaves every response.
//! - Users only in v1: `GET /v1/users`, unpaged, times as
//!   `YYYY-MM-DD HH:MM:SS` UTC.
//! - Auth: `x-api-token` header (the official client's way), or an OAuth
//!   bearer token from `POST /oauth/token` (refresh-token grant, client
//!   id and secret in basic auth, answer with `api_domain`).
//! - Rate limits: a burst window of 2 s whose `x-ratelimit-limit`,
//!   `-remaining` and `-reset` (seconds) headers come with every answer,
//!   and a daily token budget no header shows (a list call costs 10
//!   tokens, v1 users 20); a 429 while the burst window has calls left
//!   means the daily budget is spent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::data::{mix, FIRST, LAST, T0_MS, WORDS};
use crate::faults::{echo_text, sent_secrets, Picked};
use crate::mock::{Base, Mock};
use crate::people;
use crate::server::{Request, Response};

pub const TOKEN_COST_LIST: u64 = 10;
pub const TOKEN_COST_V1: u64 = 20;
pub const MAX_LIMIT: usize = 500;
const BURST_WINDOW_MS: u128 = 2_000;
const SPAN_S: i64 = 2 * 365 * 86_400;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub persons: u64,
    pub organizations: u64,
    pub deals: u64,
    pub activities: u64,
    pub users: u64,
    pub token: String,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub shared_people: u64,
    pub gzip: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            persons: 120,
            organizations: 30,
            deals: 40,
            activities: 20,
            users: 3,
            token: "pd-token".into(),
            client_id: "pd-client".into(),
            client_secret: "pd-secret".into(),
            refresh_token: "pd-refresh".into(),
            shared_people: 0,
            gzip: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ent {
    Persons,
    Organizations,
    Deals,
    Activities,
}

impl Ent {
    fn parse(s: &str) -> Option<Ent> {
        Some(match s {
            "persons" => Ent::Persons,
            "organizations" => Ent::Organizations,
            "deals" => Ent::Deals,
            "activities" => Ent::Activities,
            _ => return None,
        })
    }
    fn of_fields(s: &str) -> Option<Ent> {
        Some(match s {
            "personFields" => Ent::Persons,
            "organizationFields" => Ent::Organizations,
            "dealFields" => Ent::Deals,
            "activityFields" => Ent::Activities,
            _ => return None,
        })
    }
    fn idx(self) -> usize {
        self as usize
    }
    fn salt(self) -> u64 {
        0x7069_7065_0000 + self as u64
    }
}

/// A field as `GET /api/v2/personFields` lists it.
#[derive(Debug, Clone)]
struct FieldDef {
    code: String,
    name: String,
    ftype: String,
    custom: bool,
}

fn standard_fields(e: Ent) -> Vec<FieldDef> {
    let f = |code: &str, name: &str, t: &str| FieldDef {
        code: code.into(),
        name: name.into(),
        ftype: t.into(),
        custom: false,
    };
    match e {
        Ent::Persons => vec![
            f("name", "Name", "varchar"),
            f("first_name", "First name", "varchar"),
            f("last_name", "Last name", "varchar"),
            f("emails", "Email", "varchar"),
            f("phones", "Phone", "phone"),
            f("org_id", "Organization", "org"),
            f("owner_id", "Owner", "user"),
            f("add_time", "Person created", "date"),
            f("update_time", "Update time", "date"),
            f("visible_to", "Visible to", "visible_to"),
        ],
        Ent::Organizations => vec![
            f("name", "Name", "varchar"),
            f("owner_id", "Owner", "user"),
            f("address", "Address", "address"),
            f("add_time", "Organization created", "date"),
            f("update_time", "Update time", "date"),
            f("visible_to", "Visible to", "visible_to"),
        ],
        Ent::Deals => vec![
            f("title", "Title", "varchar"),
            f("value", "Value", "monetary"),
            f("currency", "Currency", "varchar"),
            f("status", "Status", "status"),
            f("stage_id", "Stage", "stage"),
            f("pipeline_id", "Pipeline", "double"),
            f("person_id", "Contact person", "people"),
            f("org_id", "Organization", "org"),
            f("owner_id", "Owner", "user"),
            f("expected_close_date", "Expected close date", "date"),
            f("add_time", "Deal created", "date"),
            f("update_time", "Update time", "date"),
        ],
        Ent::Activities => vec![
            f("subject", "Subject", "varchar"),
            f("type", "Type", "varchar"),
            f("due_date", "Due date", "date"),
            f("done", "Done", "boolean"),
            f("owner_id", "Assigned to user", "user"),
            f("person_id", "Contact person", "people"),
            f("org_id", "Organization", "org"),
            f("deal_id", "Deal", "int"),
            f("add_time", "Add time", "date"),
            f("update_time", "Update time", "date"),
        ],
    }
}

/// A 40-character hex key, as Pipedrive gives custom fields.
fn hash_key(seed: u64, what: u64) -> String {
    let mut s = String::new();
    for i in 0..3u64 {
        s.push_str(&format!(
            "{:016x}",
            mix(seed ^ what.rotate_left(7) ^ mix(i + 1))
        ));
    }
    s.truncate(40);
    s
}

/// A seeded person's own values.
struct PersonParts {
    first: String,
    last: String,
    email: String,
    phone: String,
    org: u64,
}

/// One entity's records: seeded ones generated on demand, changed ones
/// kept whole.
struct Store {
    ent: Ent,
    seed: u64,
    count: u64,
    next_id: u64,
    changed: HashMap<u64, Map<String, Value>>,
    /// Deleted (not yet purged) ids and their deletion times.
    deleted: BTreeMap<u64, i64>,
    purged: HashSet<u64>,
    /// Live records by (update time s, id).
    index: BTreeSet<(i64, u64)>,
    /// Deleted ones, the same way.
    deleted_index: BTreeSet<(i64, u64)>,
    fields: Vec<FieldDef>,
    shared: u64,
    users: u64,
}

impl Store {
    fn new(ent: Ent, seed: u64, count: u64, shared: u64, users: u64) -> Store {
        let mut fields = standard_fields(ent);
        // Two custom fields each, named as a team would.
        let customs: &[(&str, &str)] = match ent {
            Ent::Persons => &[("Lead score", "double"), ("Source channel", "enum")],
            Ent::Organizations => &[("Website", "varchar"), ("Employees", "int")],
            Ent::Deals => &[("Renewal date", "date"), ("Region", "enum")],
            Ent::Activities => &[("Outcome", "text"), ("Minutes", "int")],
        };
        for (i, (n, t)) in customs.iter().enumerate() {
            fields.push(FieldDef {
                code: hash_key(seed, ent.salt() + i as u64),
                name: (*n).into(),
                ftype: (*t).into(),
                custom: true,
            });
        }
        let mut s = Store {
            ent,
            seed,
            count,
            next_id: count + 1,
            changed: HashMap::new(),
            deleted: BTreeMap::new(),
            purged: HashSet::new(),
            index: BTreeSet::new(),
            deleted_index: BTreeSet::new(),
            fields,
            shared,
            users,
        };
        s.index = (1..=count).map(|id| (s.seeded_update(id), id)).collect();
        s
    }

    fn h(&self, id: u64, what: u64) -> u64 {
        mix(self.seed ^ self.ent.salt().rotate_left(40) ^ mix(id ^ what.rotate_left(19)))
    }

    /// Seconds since the epoch: Pipedrive stamps whole seconds, so many
    /// records share one.
    fn seeded_update(&self, id: u64) -> i64 {
        T0_MS / 1000 + 86_400 + (self.h(id, 1) % (SPAN_S as u64 - 86_400)) as i64
    }

    fn exists(&self, id: u64) -> bool {
        ((id >= 1 && id <= self.count) || self.changed.contains_key(&id))
            && !self.purged.contains(&id)
    }

    fn update_s(&self, id: u64) -> i64 {
        self.changed
            .get(&id)
            .and_then(|r| r.get("update_time"))
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)
            .unwrap_or_else(|| self.seeded_update(id))
    }

    fn custom_defs(&self) -> impl Iterator<Item = &FieldDef> {
        self.fields.iter().filter(|f| f.custom)
    }

    /// A seeded person's own values.
    fn person(&self, id: u64) -> PersonParts {
        let pick = |l: &[&str], w: u64| l[(self.h(id, w) % l.len() as u64) as usize].to_owned();
        if id <= self.shared {
            let p = people::person(id, self.shared);
            let (a, e, l) = p.phone;
            PersonParts {
                first: p.first.to_owned(),
                last: p.last.to_owned(),
                // Typed into Pipedrive in capitals now and then.
                email: if id.is_multiple_of(5) {
                    p.email.to_uppercase()
                } else {
                    p.email.clone()
                },
                phone: format!("+1 {a}-{e:03}-{l:04}"),
                org: p.company,
            }
        } else {
            let first = pick(FIRST, 4);
            let last = pick(LAST, 5);
            PersonParts {
                email: format!(
                    "{}.{}{id}@pd{}.example.org",
                    first.to_lowercase(),
                    last.to_lowercase(),
                    self.h(id, 6) % 97
                ),
                first,
                last,
                phone: format!("+44 20 7946 {:04}", self.h(id, 7) % 10_000),
                org: self.h(id, 8) % 30 + 1,
            }
        }
    }

    /// A seeded custom field's value.
    fn custom_value(&self, id: u64, i: usize, f: &FieldDef, up: i64) -> Value {
        match f.ftype.as_str() {
            "double" => json!((self.h(id, 20 + i as u64) % 1000) as f64 / 10.0),
            "enum" => json!(self.h(id, 20 + i as u64) % 4 + 1),
            "int" => json!(self.h(id, 20 + i as u64) % 500),
            "date" => json!(fmt_s(up + 86_400 * 90)[..10].to_owned()),
            _ => json!(format!("{} {}", f.name, id)),
        }
    }

    /// Record `id` as JSON text: written directly for a seeded person (the
    /// benchmarks list millions), else [`Store::record`] serialized.
    fn render(&self, out: &mut Vec<u8>, id: u64) {
        use std::io::Write;
        if self.ent != Ent::Persons
            || self.changed.contains_key(&id)
            || self.deleted.contains_key(&id)
        {
            let _ = serde_json::to_writer(&mut *out, &self.record(id));
            return;
        }
        let up = self.seeded_update(id);
        let add = up - (self.h(id, 2) % (300 * 86_400)) as i64;
        let owner = self.h(id, 3) % self.users.max(1) + 1;
        let p = self.person(id);
        let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let _ = write!(
            out,
            r#"{{"id":{id},"name":{},"first_name":{},"last_name":{},"owner_id":{owner},"org_id":{},"add_time":"{}","update_time":"{}","emails":[{{"value":{},"primary":true,"label":"work"}}],"phones":[{{"value":{},"primary":true,"label":"mobile"}}],"is_deleted":false,"visible_to":3,"label_ids":[],"picture_id":null,"custom_fields":{{"#,
            q(&format!("{} {}", p.first, p.last)),
            q(&p.first),
            q(&p.last),
            p.org,
            fmt_s(add),
            fmt_s(up),
            q(&p.email),
            q(&p.phone),
        );
        for (i, f) in self.custom_defs().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = write!(out, "\"{}\":{}", f.code, self.custom_value(id, i, f, up));
        }
        out.extend_from_slice(b"}}");
    }

    /// A seeded record as the v2 API shows it.
    fn seeded(&self, id: u64) -> Map<String, Value> {
        let up = self.seeded_update(id);
        let add = up - (self.h(id, 2) % (300 * 86_400)) as i64;
        let owner = self.h(id, 3) % self.users.max(1) + 1;
        let pick = |l: &[&str], w: u64| l[(self.h(id, w) % l.len() as u64) as usize].to_owned();
        let mut v = match self.ent {
            Ent::Persons => {
                let p = self.person(id);
                json!({
                    "id": id, "name": format!("{} {}", p.first, p.last), "first_name": p.first,
                    "last_name": p.last, "owner_id": owner, "org_id": p.org,
                    "add_time": fmt_s(add), "update_time": fmt_s(up),
                    "emails": [{"value": p.email, "primary": true, "label": "work"}],
                    "phones": [{"value": p.phone, "primary": true, "label": "mobile"}],
                    "is_deleted": false, "visible_to": 3, "label_ids": [], "picture_id": null,
                })
            }
            Ent::Organizations => {
                let name = if id <= people::companies(self.shared) && self.shared > 0 {
                    people::company(id).0
                } else {
                    format!(
                        "{} {}",
                        pick(WORDS, 4),
                        ["GmbH", "Ltd", "Inc", "Oy"][(self.h(id, 5) % 4) as usize]
                    )
                };
                json!({
                    "id": id, "name": name, "owner_id": owner,
                    "add_time": fmt_s(add), "update_time": fmt_s(up), "is_deleted": false, "visible_to": 3,
                    "address": {"value": "1 Main St, Springfield", "country": "United States", "locality": "Springfield"},
                    "label_ids": [],
                })
            }
            Ent::Deals => json!({
                "id": id, "title": format!("{} deal", pick(WORDS, 4)),
                "value": (self.h(id, 5) % 100_000) as f64 / 4.0, "currency": "USD",
                "status": (["open", "won", "lost"][(self.h(id, 6) % 3) as usize]),
                "stage_id": self.h(id, 7) % 5 + 1, "pipeline_id": 1,
                "person_id": self.h(id, 8) % 100 + 1, "org_id": self.h(id, 9) % 30 + 1, "owner_id": owner,
                "expected_close_date": fmt_s(up + 30 * 86_400)[..10].to_owned(),
                "add_time": fmt_s(add), "update_time": fmt_s(up), "is_deleted": false, "visible_to": 3,
            }),
            Ent::Activities => json!({
                "id": id, "subject": format!("Call about {}", pick(WORDS, 4)), "type": "call",
                "due_date": fmt_s(up)[..10].to_owned(), "done": self.h(id, 5).is_multiple_of(2),
                "owner_id": owner, "person_id": self.h(id, 6) % 100 + 1, "org_id": null, "deal_id": null,
                "add_time": fmt_s(add), "update_time": fmt_s(up), "is_deleted": false,
            }),
        };
        let mut custom = Map::new();
        for (i, f) in self.custom_defs().enumerate() {
            custom.insert(f.code.clone(), self.custom_value(id, i, f, up));
        }
        v["custom_fields"] = Value::Object(custom);
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// The record as the API shows it now (custom fields as defined now).
    fn record(&self, id: u64) -> Map<String, Value> {
        let mut r = match self.changed.get(&id) {
            Some(r) => r.clone(),
            None => self.seeded(id),
        };
        let defs: HashSet<&str> = self.custom_defs().map(|f| f.code.as_str()).collect();
        if let Some(Value::Object(c)) = r.get_mut("custom_fields") {
            c.retain(|k, _| defs.contains(k.as_str()));
            for d in &defs {
                c.entry(d.to_string()).or_insert(Value::Null);
            }
        }
        if let Some(t) = self.deleted.get(&id) {
            r.insert("is_deleted".into(), json!(true));
            r.insert("update_time".into(), json!(fmt_s(*t)));
        }
        r
    }

    /// Change (or create) a record: `patch`'s members replace its own,
    /// custom fields by key or by display name; the update time moves.
    fn upsert(
        &mut self,
        id: Option<u64>,
        patch: &Map<String, Value>,
        now: i64,
    ) -> Result<u64, String> {
        let id = id.unwrap_or_else(|| {
            let n = self.next_id;
            self.next_id += 1;
            n
        });
        if id >= self.next_id {
            self.next_id = id + 1;
        }
        if self.purged.contains(&id) || self.deleted.contains_key(&id) {
            return Err(format!("{:?} {id} is deleted", self.ent));
        }
        let old = self.update_s(id);
        let existed = self.exists(id);
        let mut r = if existed {
            self.record(id)
        } else {
            let mut m = Map::new();
            m.insert("id".into(), json!(id));
            m.insert("add_time".into(), json!(fmt_s(now)));
            m.insert("is_deleted".into(), json!(false));
            m.insert("custom_fields".into(), json!({}));
            m
        };
        for (k, v) in patch {
            if k == "custom_fields" {
                for (ck, cv) in v.as_object().into_iter().flatten() {
                    let code = self
                        .fields
                        .iter()
                        .find(|f| f.custom && (f.code == *ck || f.name == *ck))
                        .map(|f| f.code.clone())
                        .ok_or_else(|| format!("no custom field {ck}"))?;
                    r["custom_fields"][code] = cv.clone();
                }
            } else if k != "id" {
                r.insert(k.clone(), v.clone());
            }
        }
        let up = patch
            .get("update_time")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339)
            .unwrap_or(now);
        r.insert("update_time".into(), json!(fmt_s(up)));
        if existed {
            self.index.remove(&(old, id));
        }
        self.index.insert((up, id));
        self.changed.insert(id, r);
        Ok(id)
    }

    fn delete(&mut self, id: u64, now: i64) -> bool {
        if !self.exists(id) || self.deleted.contains_key(&id) {
            return false;
        }
        let old = self.update_s(id);
        self.index.remove(&(old, id));
        self.deleted.insert(id, now);
        self.deleted_index.insert((now, id));
        true
    }

    /// Gone for good (30 days after deletion, or at once for a merge).
    fn purge(&mut self, id: u64) -> bool {
        if !self.exists(id) {
            return false;
        }
        if let Some(t) = self.deleted.remove(&id) {
            self.deleted_index.remove(&(t, id));
        } else {
            let up = self.update_s(id);
            self.index.remove(&(up, id));
        }
        self.purged.insert(id);
        self.changed.remove(&id);
        true
    }
}

fn fmt_s(s: i64) -> String {
    chrono::DateTime::from_timestamp(s, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn fmt_v1(s: i64) -> String {
    chrono::DateTime::from_timestamp(s, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp())
}

/// Rate limits: the burst window and the daily token budget.
struct Limits {
    /// Calls per 2-second window (0: none).
    burst: u64,
    window_start: Instant,
    in_window: u64,
    /// Tokens a day (0: none) and spent so far.
    daily: u64,
    spent: u64,
}

/// The configurable endpoint for spec tests.
struct Generic {
    count: u64,
    auth: String,
    changed: HashMap<u64, (String, i64)>,
    deleted: HashMap<u64, i64>,
    /// Largest page it serves.
    max_page: usize,
    /// The host next-page links name (a link to elsewhere).
    next_host: Option<String>,
    /// Next-page links relative to the request (`items?...`).
    relative_links: bool,
    /// Offset, page and cursor parameters ignored: the first page again.
    ignore_paging: bool,
    /// Asked past the end, the last page again (as some APIs answer).
    repeat_last: bool,
    /// `has_more` as the text "true"/"false".
    has_more_text: bool,
}

impl Generic {
    fn item(&self, id: u64) -> Value {
        let (name, m) = self
            .changed
            .get(&id)
            .cloned()
            .unwrap_or_else(|| (format!("Item {id}"), T0_MS / 1000 + id as i64 * 60));
        json!({"id": id, "name": name, "modified_at": fmt_s(m),
               "deleted_at": self.deleted.get(&id).map(|d| fmt_s(*d))})
    }
    fn modified(&self, id: u64) -> i64 {
        self.changed
            .get(&id)
            .map_or(T0_MS / 1000 + id as i64 * 60, |c| c.1)
    }
}

pub struct State {
    opts: Options,
    stores: Vec<Store>,
    users: u64,
    limits: Limits,
    /// The refresh token valid now, whether refreshes rotate it, and the
    /// access tokens handed out.
    refresh_token: String,
    rotate: bool,
    access: HashSet<String>,
    token_calls: u64,
    /// The last change time handed out (changes get distinct-or-later
    /// seconds).
    clock: i64,
    generic: Generic,
}

pub struct PipedriveMock {
    base: Base<State>,
}

impl PipedriveMock {
    pub fn new(o: Options) -> PipedriveMock {
        let stores = vec![
            Store::new(Ent::Persons, o.seed, o.persons, o.shared_people, o.users),
            Store::new(
                Ent::Organizations,
                o.seed,
                o.organizations,
                o.shared_people,
                o.users,
            ),
            Store::new(Ent::Deals, o.seed, o.deals, 0, o.users),
            Store::new(Ent::Activities, o.seed, o.activities, 0, o.users),
        ];
        let gzip = o.gzip;
        PipedriveMock {
            base: Base::new(
                State {
                    users: o.users,
                    refresh_token: o.refresh_token.clone(),
                    opts: o,
                    stores,
                    limits: Limits {
                        burst: 0,
                        window_start: Instant::now(),
                        in_window: 0,
                        daily: 0,
                        spent: 0,
                    },
                    rotate: false,
                    access: HashSet::new(),
                    token_calls: 0,
                    clock: 0,
                    generic: Generic {
                        count: 25,
                        auth: "bearer".into(),
                        changed: HashMap::new(),
                        deleted: HashMap::new(),
                        max_page: 100,
                        next_host: None,
                        relative_links: false,
                        ignore_paging: false,
                        repeat_last: false,
                        has_more_text: false,
                    },
                },
                gzip,
            ),
        }
    }
}

fn body(status: u16, v: Value) -> Response {
    Response::json(status, v.to_string().into_bytes())
}

/// Pipedrive's error shape.
fn error(status: u16, msg: &str, info: &str) -> Response {
    body(
        status,
        json!({"success": false, "error": msg, "error_info": info, "data": null, "additional_data": null}),
    )
}

fn unauthorized() -> Response {
    body(
        401,
        json!({"success": false, "error": "unauthorized access", "errorCode": 401,
               "error_info": "Please check developers.pipedrive.com/docs/api/v1 for more information"}),
    )
}

impl State {
    fn now(&mut self) -> i64 {
        let real = chrono::Utc::now().timestamp();
        self.clock = self.clock.max(real);
        self.clock
    }

    fn authorized(&self, req: &Request) -> bool {
        if req.header("x-api-token") == Some(self.opts.token.as_str()) {
            return true;
        }
        match req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Bearer "))
        {
            Some(t) => self.access.contains(t),
            None => false,
        }
    }

    /// Spend `cost` tokens and one burst call; the 429 if over a limit,
    /// and the headers every answer carries.
    fn spend(&mut self, cost: u64) -> (Option<Response>, Vec<(String, String)>) {
        let l = &mut self.limits;
        let elapsed = l.window_start.elapsed().as_millis();
        if elapsed >= BURST_WINDOW_MS {
            l.window_start = Instant::now();
            l.in_window = 0;
        }
        let reset = ((BURST_WINDOW_MS - l.window_start.elapsed().as_millis().min(BURST_WINDOW_MS))
            as f64
            / 1000.0)
            .ceil() as u64;
        let limit = if l.burst == 0 { 80 } else { l.burst };
        let over_burst = l.burst > 0 && l.in_window >= l.burst;
        let over_daily = l.daily > 0 && l.spent + cost > l.daily;
        if !over_burst && !over_daily {
            l.in_window += 1;
            l.spent += cost;
        }
        let remaining = if l.burst == 0 {
            limit
        } else {
            l.burst.saturating_sub(l.in_window)
        };
        let headers = vec![
            ("x-ratelimit-limit".to_owned(), limit.to_string()),
            ("x-ratelimit-remaining".to_owned(), remaining.to_string()),
            ("x-ratelimit-reset".to_owned(), reset.max(1).to_string()),
        ];
        let refused = (over_burst || over_daily).then(|| {
            error(
                429,
                "Request over limit",
                "Please check the x-ratelimit headers and the daily token budget",
            )
        });
        (refused, headers)
    }

    fn list(&mut self, ent: Ent, req: &Request) -> Response {
        let bad = |m: &str| {
            error(
                400,
                &format!("Validation failed: {m}"),
                "Check the request parameters",
            )
        };
        let limit = match req.param("limit").map(str::parse::<usize>) {
            None => 100,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return bad("limit: Number must be less than or equal to 500"),
        };
        let sort_by = req.param("sort_by").unwrap_or("id");
        if !["id", "update_time", "add_time"].contains(&sort_by) {
            return bad("sort_by: Invalid enum value");
        }
        if sort_by == "add_time" {
            return bad("sort_by add_time is not supported by this mock");
        }
        let desc = req.param("sort_direction") == Some("desc");
        if desc {
            return bad("sort_direction desc is not supported by this mock");
        }
        let time = |k: &str| match req.param(k) {
            None => Ok(None),
            Some(v) => parse_rfc3339(v).map(Some).ok_or(()),
        };
        let (Ok(since), Ok(until)) = (time("updated_since"), time("updated_until")) else {
            return bad("updated_since/updated_until: Invalid datetime (RFC 3339)");
        };
        let deleted_only = ent == Ent::Deals && req.param("status") == Some("deleted");
        let store = &self.stores[ent.idx()];
        let ids: Option<HashSet<u64>> = match req.param("ids") {
            None => None,
            Some(s) => {
                let v: Vec<u64> = s.split(',').filter_map(|x| x.trim().parse().ok()).collect();
                if v.len() > 100 {
                    return bad("ids: at most 100");
                }
                Some(v.into_iter().collect())
            }
        };
        let cursor = req.param("cursor").and_then(decode_cursor);
        if req.param("cursor").is_some() && cursor.is_none() {
            return bad("cursor: Invalid cursor");
        }
        let in_window = |t: i64| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u);
        let mut out: Vec<(i64, u64)> = Vec::with_capacity(limit + 1);
        let index = if deleted_only {
            &store.deleted_index
        } else {
            &store.index
        };
        if sort_by == "update_time" {
            let from = match cursor {
                Some((t, id)) => std::ops::Bound::Excluded((t, id)),
                None => std::ops::Bound::Included((since.unwrap_or(i64::MIN), 0)),
            };
            for &(t, id) in index.range((from, std::ops::Bound::Unbounded)) {
                if until.is_some_and(|u| t >= u) {
                    break;
                }
                if !in_window(t) || ids.as_ref().is_some_and(|s| !s.contains(&id)) {
                    continue;
                }
                out.push((t, id));
                if out.len() > limit {
                    break;
                }
            }
        } else {
            let start = cursor.map_or(1, |(_, id)| id + 1);
            let mut id = start;
            let live = |id: u64| {
                store.exists(id)
                    && if deleted_only {
                        store.deleted.contains_key(&id)
                    } else {
                        !store.deleted.contains_key(&id)
                    }
            };
            if let Some(set) = &ids {
                let mut v: Vec<u64> = set
                    .iter()
                    .copied()
                    .filter(|i| *i >= start && live(*i))
                    .collect();
                v.sort_unstable();
                for i in v {
                    let t = store.update_s(i);
                    if in_window(t) {
                        out.push((t, i));
                    }
                }
            } else {
                while id < store.next_id && out.len() <= limit {
                    if live(id) {
                        let t = store.update_s(id);
                        if in_window(t) {
                            out.push((t, id));
                        }
                    }
                    id += 1;
                }
            }
        }
        let more = out.len() > limit;
        out.truncate(limit);
        let next = if more {
            out.last()
                .map(|(t, id)| encode_cursor(if sort_by == "id" { 0 } else { *t }, *id))
        } else {
            None
        };
        let mut text = Vec::with_capacity(out.len() * 700 + 100);
        text.extend_from_slice(br#"{"success":true,"data":["#);
        for (i, (_, id)) in out.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            store.render(&mut text, *id);
        }
        text.extend_from_slice(br#"],"additional_data":{"next_cursor":"#);
        text.extend_from_slice(json!(next).to_string().as_bytes());
        text.extend_from_slice(b"}}");
        Response::json(200, text)
    }

    fn fields(&self, ent: Ent, req: &Request) -> Response {
        let limit = req
            .param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(100)
            .clamp(1, MAX_LIMIT);
        let start = req
            .param("cursor")
            .and_then(decode_cursor)
            .map_or(0, |(_, i)| i as usize);
        let all = &self.stores[ent.idx()].fields;
        let page: Vec<Value> = all
            .iter()
            .skip(start)
            .take(limit)
            .map(|f| {
                json!({"field_name": f.name, "field_code": f.code, "field_type": f.ftype,
                       "is_custom_field": f.custom, "is_optional_response_field": false,
                       "options": if f.ftype == "enum" { json!([{"id": 1, "label": "Web"}, {"id": 2, "label": "Referral"}, {"id": 3, "label": "Event"}, {"id": 4, "label": "Partner"}]) } else { Value::Null }})
            })
            .collect();
        let next = (start + limit < all.len()).then(|| encode_cursor(0, (start + limit) as u64));
        body(
            200,
            json!({"success": true, "data": page, "additional_data": {"next_cursor": next}}),
        )
    }

    fn users(&self) -> Response {
        let data: Vec<Value> = (1..=self.users)
            .map(|id| {
                let created = T0_MS / 1000 - 86_400 * 30 + id as i64 * 3_600;
                json!({"id": id, "name": format!("{} {}", FIRST[id as usize % FIRST.len()], LAST[id as usize % LAST.len()]),
                       "email": format!("user{id}@pipedrive-mock.example"), "lang": 1, "locale": "en_US",
                       "timezone_name": "Europe/Tallinn", "timezone_offset": "+02:00", "default_currency": "USD",
                       "icon_url": null, "active_flag": true, "is_deleted": false, "is_admin": if id == 1 { 1 } else { 0 },
                       "role_id": 1, "created": fmt_v1(created), "modified": fmt_v1(created + 86_400),
                       "last_login": fmt_v1(created + 2 * 86_400), "has_created_company": id == 1, "is_you": id == 1})
            })
            .collect();
        body(
            200,
            json!({"success": true, "data": data, "additional_data": {}}),
        )
    }

    fn token(&mut self, req: &Request) -> Response {
        self.token_calls += 1;
        let form: HashMap<String, String> = String::from_utf8_lossy(&req.body)
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), crate::server::decode(v)))
            .collect();
        let basic = req
            .header("authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let client = basic.or_else(|| {
            Some(format!(
                "{}:{}",
                form.get("client_id")?,
                form.get("client_secret")?
            ))
        });
        if client.as_deref()
            != Some(&format!(
                "{}:{}",
                self.opts.client_id, self.opts.client_secret
            ))
        {
            return body(
                401,
                json!({"error": "invalid_client", "error_description": "Invalid client credentials"}),
            );
        }
        let grant = form.get("grant_type").map(String::as_str);
        match grant {
            Some("refresh_token") => {
                if form.get("refresh_token") != Some(&self.refresh_token) {
                    return body(
                        400,
                        json!({"error": "invalid_grant", "error_description": "Invalid refresh token"}),
                    );
                }
                if self.rotate {
                    self.refresh_token = format!("pd-refresh-{}", self.token_calls);
                }
            }
            Some("client_credentials") => {}
            _ => return body(400, json!({"error": "unsupported_grant_type"})),
        }
        let access = format!("pd-access-{}", self.token_calls);
        self.access.insert(access.clone());
        let host = req.header("host").unwrap_or("127.0.0.1");
        body(
            200,
            json!({"access_token": access, "token_type": "Bearer", "refresh_token": self.refresh_token,
                   "scope": "base,contacts:read,deals:read,activities:read,users:read", "expires_in": 3599,
                   "api_domain": format!("http://{host}")}),
        )
    }

    /// The configurable endpoint: see the module docs and docs/specs.md.
    fn generic(&mut self, req: &Request) -> Response {
        let g = &self.generic;
        let ok = match g.auth.as_str() {
            "bearer" => req.header("authorization") == Some("Bearer gen-token"),
            "oauth" => req
                .header("authorization")
                .and_then(|h| h.strip_prefix("Bearer "))
                .is_some_and(|t| self.access.contains(t)),
            "api_key_header" => req.header("x-api-key") == Some("gen-key"),
            // Once: a client that sends it twice (an echoed next link plus
            // its own) is refused, as strict APIs do.
            "api_key_query" => req.params("api_key").collect::<Vec<_>>() == ["gen-key"],
            "basic" => {
                let want = base64::engine::general_purpose::STANDARD.encode("gen-user:gen-pass");
                req.header("authorization") == Some(format!("Basic {want}").as_str())
            }
            _ => false,
        };
        if !ok {
            return body(
                401,
                json!({"message": "authentication required", "auth": g.auth}),
            );
        }
        let body_json: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let style = req.param("style").unwrap_or("none");
        let param_time = |k: &str| {
            req.param(k)
                .or_else(|| body_json["filter"][k].as_str())
                .and_then(parse_rfc3339)
        };
        let since = param_time("since");
        let until = param_time("until");
        let ims = req
            .header("if-modified-since")
            .and_then(|h| chrono::DateTime::parse_from_rfc2822(h).ok())
            .map(|d| d.timestamp());
        let deleted_only = req.param("deleted") == Some("true");
        let ids: Vec<u64> = (1..=g.count)
            .filter(|id| {
                let m = g.modified(*id);
                since.is_none_or(|s| m >= s)
                    && until.is_none_or(|u| m < u)
                    && ims.is_none_or(|s| m > s)
                    && (!deleted_only || g.deleted.contains_key(id))
            })
            .collect();
        if ims.is_some() && ids.is_empty() {
            return Response {
                status: 304,
                headers: vec![],
                body: vec![],
            };
        }
        let size = |k: &str| {
            req.param(k)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(10)
                .clamp(1, g.max_page)
        };
        // Paging parameters, unless this endpoint ignores them.
        let param = |k: &str| {
            if g.ignore_paging {
                None
            } else {
                req.param(k).and_then(|c| c.parse::<u64>().ok())
            }
        };
        let page_of = |from: usize, n: usize| -> Vec<Value> {
            let from = if g.repeat_last && from >= ids.len() && !ids.is_empty() {
                (ids.len() - 1) / n * n
            } else {
                from
            };
            ids.iter().skip(from).take(n).map(|i| g.item(*i)).collect()
        };
        let host = g
            .next_host
            .as_deref()
            .or(req.header("host"))
            .unwrap_or("127.0.0.1");
        let here = |q: String| {
            if g.relative_links {
                format!("items?{q}")
            } else {
                format!("http://{host}/generic/items?{q}")
            }
        };
        match style {
            "cursor" => {
                let after = param("cursor").unwrap_or(0);
                let n = size("limit");
                let from = ids.iter().position(|i| *i > after).unwrap_or(ids.len());
                let items = page_of(from, n);
                let next = (from + n < ids.len()).then(|| ids[from + n - 1].to_string());
                body(200, json!({"items": items, "meta": {"next_cursor": next}}))
            }
            "next_url" | "link" => {
                let n = size("limit");
                let from = param("from").unwrap_or(0) as usize;
                let items = page_of(from, n);
                // The whole query string again, as many APIs build it.
                let mut q: Vec<String> = req
                    .query
                    .iter()
                    .filter(|(k, _)| k != "from")
                    .map(|(k, v)| format!("{k}={}", pct(v)))
                    .collect();
                q.push(format!("from={}", from + n));
                let next = (from + n < ids.len()).then(|| here(q.join("&")));
                if style == "link" {
                    let mut r = body(200, Value::Array(items));
                    if let Some(n) = next {
                        r = r.with_header(
                            "Link",
                            format!(
                                "<{}>; rel=\"first\", <{n}>; rel=\"next\"",
                                here("style=link".into())
                            ),
                        );
                    }
                    r
                } else {
                    body(200, json!({"results": items, "next": next}))
                }
            }
            "offset" => {
                let n = size("limit");
                let from = param("offset").unwrap_or(0) as usize;
                let mut v = json!({"items": page_of(from, n), "total": ids.len()});
                if req.param("no_total").is_some() {
                    v.as_object_mut().map(|m| m.remove("total"));
                }
                body(200, v)
            }
            "page" => {
                let n = size("per_page");
                let page = param("page").unwrap_or(1).max(1) as usize;
                let from = (page - 1) * n;
                let more = from + n < ids.len();
                let more = if g.has_more_text {
                    json!(more.to_string())
                } else {
                    json!(more)
                };
                body(200, json!({"items": page_of(from, n), "has_more": more}))
            }
            _ => body(200, json!({"items": page_of(0, ids.len())})),
        }
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn encode_cursor(t: i64, id: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{{\"t\":{t},\"id\":{id}}}"))
}

fn decode_cursor(s: &str) -> Option<(i64, u64)> {
    let b = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    let v: Value = serde_json::from_slice(&b).ok()?;
    Some((v["t"].as_i64()?, v["id"].as_u64()?))
}

impl Mock for PipedriveMock {
    type State = State;
    const FAULT_KINDS: &'static [&'static str] = &[
        "429",
        "429_daily",
        "401",
        "403_html",
        "500",
        "503",
        "token_form",
    ];

    fn base(&self) -> &Base<State> {
        &self.base
    }

    fn fault(&self, kind: &str, _req: &Request) -> Option<Response> {
        Some(match kind {
            "429" => error(429, "Request over limit", "Please check the x-ratelimit headers")
                .with_header("x-ratelimit-remaining", "0")
                .with_header("x-ratelimit-reset", "1"),
            "429_daily" => error(429, "Request over limit", "Daily token budget used up")
                .with_header("x-ratelimit-remaining", "40")
                .with_header("x-ratelimit-reset", "2"),
            "401" => unauthorized(),
            // What Cloudflare sends clients that keep going after 429s.
            "403_html" => crate::faults::html(403, "<html><body><h1>Access denied</h1>Error 1015: You are being rate limited.</body></html>"),
            // A token endpoint answering form-encoded, as some do without
            // Accept: application/json: new tokens in a body that is not JSON.
            "token_form" => Response {
                status: 200,
                headers: vec![(
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into(),
                )],
                body: b"access_token=pd-access-form-SECRET&token_type=bearer&refresh_token=pd-refresh-form-SECRET".to_vec(),
            },
            "500" => error(500, "Internal server error", "Please try again later"),
            "503" => error(503, "Service unavailable", "Pipedrive is in maintenance"),
            _ => return None,
        })
    }

    fn echo(&self, _st: &mut State, fault: &Picked, req: &Request) -> Response {
        let status = fault.status.unwrap_or(400);
        let sent = sent_secrets(req);
        let token = req.header("x-api-token").unwrap_or("");
        error(
            status,
            &format!("Bad request with {} {token}", echo_text(&sent)),
            "echo",
        )
    }

    fn route(&self, st: &mut State, req: &Request) -> Response {
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        if req.method == "POST" && parts == ["oauth", "token"] {
            return st.token(req);
        }
        if parts.first() == Some(&"generic") {
            return st.generic(req);
        }
        if !st.authorized(req) {
            return unauthorized();
        }
        let cost = if parts.first() == Some(&"v1") {
            TOKEN_COST_V1
        } else {
            TOKEN_COST_LIST
        };
        let (refused, headers) = st.spend(cost);
        let mut r = match refused {
            Some(r) => r,
            None => match (req.method.as_str(), parts.as_slice()) {
                ("GET", ["api", "v2", name]) => match (Ent::parse(name), Ent::of_fields(name)) {
                    (Some(e), _) => st.list(e, req),
                    (_, Some(e)) => st.fields(e, req),
                    _ => error(404, "Not found", "Unknown endpoint"),
                },
                ("GET", ["v1", "users"]) => st.users(),
                _ => error(404, "Not found", "Unknown endpoint"),
            },
        };
        r.headers.extend(headers);
        r
    }

    fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
        let ent = action["entity"]
            .as_str()
            .and_then(Ent::parse)
            .ok_or("entity missing")?;
        let now = st.now();
        let s = &mut st.stores[ent.idx()];
        match action["action"].as_str() {
            Some("upsert") => {
                let id = s.upsert(
                    action["id"].as_u64(),
                    action["record"].as_object().ok_or("record missing")?,
                    now,
                )?;
                Ok(json!({"id": id}))
            }
            Some("delete") => {
                Ok(json!({"deleted": s.delete(action["id"].as_u64().ok_or("id")?, now)}))
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
        let now = st.now();
        Some(match (method, parts) {
            ("POST", ["pd", "limits"]) => {
                let l = &mut st.limits;
                if let Some(n) = b["burst"].as_u64() {
                    l.burst = n;
                }
                if let Some(n) = b["daily"].as_u64() {
                    l.daily = n;
                }
                if let Some(n) = b["spent"].as_u64() {
                    l.spent = n;
                }
                l.window_start = Instant::now();
                l.in_window = 0;
                Ok(json!({"burst": l.burst, "daily": l.daily, "spent": l.spent}))
            }
            ("POST", ["pd", "oauth"]) => {
                if let Some(r) = b["rotate"].as_bool() {
                    st.rotate = r;
                }
                if b["expire_access"].as_bool() == Some(true) {
                    st.access.clear();
                }
                Ok(json!({"refresh_token": st.refresh_token, "token_calls": st.token_calls}))
            }
            ("POST", ["pd", "generic"]) => {
                let g = &mut st.generic;
                if let Some(n) = b["count"].as_u64() {
                    g.count = n;
                }
                if let Some(a) = b["auth"].as_str() {
                    g.auth = a.to_owned();
                }
                if let Some(n) = b["max_page"].as_u64() {
                    g.max_page = n as usize;
                }
                if let Some(h) = b.get("next_host") {
                    g.next_host = h.as_str().map(str::to_owned);
                }
                if let Some(r) = b["relative_links"].as_bool() {
                    g.relative_links = r;
                }
                if let Some(r) = b["ignore_paging"].as_bool() {
                    g.ignore_paging = r;
                }
                if let Some(r) = b["repeat_last"].as_bool() {
                    g.repeat_last = r;
                }
                if let Some(r) = b["has_more_text"].as_bool() {
                    g.has_more_text = r;
                }
                if let Some(items) = b["change"].as_array() {
                    for it in items {
                        let Some(id) = it["id"].as_u64() else {
                            return Some(Err("change: id missing".into()));
                        };
                        let name = it["name"].as_str().unwrap_or("changed").to_owned();
                        g.changed.insert(id, (name, now));
                        g.count = g.count.max(id);
                    }
                }
                if let Some(ids) = b["delete"].as_array() {
                    for id in ids.iter().filter_map(Value::as_u64) {
                        g.deleted.insert(id, now);
                        let name = g
                            .changed
                            .get(&id)
                            .map_or(format!("Item {id}"), |c| c.0.clone());
                        g.changed.insert(id, (name, now));
                    }
                }
                Ok(json!({"count": g.count, "auth": g.auth}))
            }
            ("POST", ["pd", e, "fields"]) => {
                let Some(ent) = Ent::parse(e) else {
                    return Some(Err("entity".into()));
                };
                let s = &mut st.stores[ent.idx()];
                let code = hash_key(s.seed ^ now as u64, s.fields.len() as u64 + 1000);
                s.fields.push(FieldDef {
                    code: code.clone(),
                    name: b["name"].as_str().unwrap_or("New field").into(),
                    ftype: b["type"].as_str().unwrap_or("varchar").into(),
                    custom: true,
                });
                Ok(json!({"field_code": code}))
            }
            ("PATCH", ["pd", e, "fields", code]) => {
                let Some(ent) = Ent::parse(e) else {
                    return Some(Err("entity".into()));
                };
                match st.stores[ent.idx()]
                    .fields
                    .iter_mut()
                    .find(|f| f.code == *code)
                {
                    Some(f) => {
                        f.name = b["name"].as_str().unwrap_or(&f.name).to_owned();
                        Ok(json!({"field_code": code, "field_name": f.name}))
                    }
                    None => Err("no such field".into()),
                }
            }
            ("DELETE", ["pd", e, "fields", code]) => {
                let Some(ent) = Ent::parse(e) else {
                    return Some(Err("entity".into()));
                };
                let s = &mut st.stores[ent.idx()];
                let before = s.fields.len();
                s.fields.retain(|f| f.code != *code);
                Ok(json!({"deleted": before != s.fields.len()}))
            }
            ("GET", ["pd", e, "fields"]) => {
                let Some(ent) = Ent::parse(e) else {
                    return Some(Err("entity".into()));
                };
                Ok(json!(st.stores[ent.idx()]
                    .fields
                    .iter()
                    .map(|f| json!({"code": f.code, "name": f.name, "type": f.ftype, "custom": f.custom}))
                    .collect::<Vec<_>>()))
            }
            ("POST", ["pd", e]) => {
                let Some(ent) = Ent::parse(e) else {
                    return Some(Err("entity".into()));
                };
                let rec = b["record"].as_object().cloned().unwrap_or_default();
                let s = &mut st.stores[ent.idx()];
                match b["ids"].as_array() {
                    // The same change to many records (benchmarks).
                    Some(ids) => ids
                        .iter()
                        .filter_map(Value::as_u64)
                        .map(|id| s.upsert(Some(id), &rec, now))
                        .collect::<Result<Vec<u64>, String>>()
                        .map(|v| json!({"ids": v.len()})),
                    None => s
                        .upsert(b["id"].as_u64(), &rec, now)
                        .map(|id| json!({"id": id})),
                }
            }
            ("DELETE", ["pd", e, id]) => {
                let (Some(ent), Ok(id)) = (Ent::parse(e), id.parse::<u64>()) else {
                    return Some(Err("entity/id".into()));
                };
                Ok(json!({"deleted": st.stores[ent.idx()].delete(id, now)}))
            }
            ("POST", ["pd", e, id, "purge"]) => {
                let (Some(ent), Ok(id)) = (Ent::parse(e), id.parse::<u64>()) else {
                    return Some(Err("entity/id".into()));
                };
                Ok(json!({"purged": st.stores[ent.idx()].purge(id)}))
            }
            ("GET", ["pd", e, id]) => {
                let (Some(ent), Ok(id)) = (Ent::parse(e), id.parse::<u64>()) else {
                    return Some(Err("entity/id".into()));
                };
                let s = &st.stores[ent.idx()];
                if s.exists(id) {
                    Ok(Value::Object(s.record(id)))
                } else {
                    Err("no such record".into())
                }
            }
            _ => return None,
        })
    }

    fn stats_extra(st: &State) -> Vec<(&'static str, Value)> {
        vec![
            ("tokens_spent", json!(st.limits.spent)),
            ("token_calls", json!(st.token_calls)),
            (
                "live",
                json!(st.stores.iter().map(|s| s.index.len()).collect::<Vec<_>>()),
            ),
        ]
    }

    fn endpoint(path: &str) -> String {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mock() -> PipedriveMock {
        PipedriveMock::new(Options::default())
    }

    fn get(m: &PipedriveMock, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let req = Request {
            method: "GET".into(),
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: vec![("x-api-token".into(), "pd-token".into())],
            ..Default::default()
        };
        let crate::server::Reply::Send(r) = crate::server::Handler::handle(m, &req) else {
            panic!("a plain answer")
        };
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    #[test]
    fn cursor_pages_cover_every_person_once() {
        let m = mock();
        let mut seen = HashSet::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![("limit", "50"), ("sort_by", "update_time")];
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let (s, v) = get(&m, "/api/v2/persons", &q);
            assert_eq!(s, 200);
            for p in v["data"].as_array().unwrap() {
                assert!(seen.insert(p["id"].as_u64().unwrap()));
                assert_eq!(p["custom_fields"].as_object().unwrap().len(), 2);
            }
            match v["additional_data"]["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 120);
    }

    #[test]
    fn limits_and_windows() {
        let m = mock();
        let (s, v) = get(&m, "/api/v2/persons", &[("limit", "501")]);
        assert_eq!(s, 400);
        assert_eq!(v["success"], json!(false));
        let (_, all) = get(&m, "/api/v2/persons", &[("limit", "500")]);
        let t = all["data"][7]["update_time"].as_str().unwrap().to_owned();
        let (_, v) = get(
            &m,
            "/api/v2/persons",
            &[
                ("limit", "500"),
                ("updated_since", &t),
                ("updated_until", &t),
            ],
        );
        assert_eq!(v["data"].as_array().unwrap().len(), 0);
        let (_, v) = get(
            &m,
            "/api/v2/persons",
            &[("limit", "500"), ("updated_since", &t)],
        );
        assert!(v["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["update_time"].as_str().unwrap() >= t.as_str()));
    }

    #[test]
    fn a_person_written_directly_is_the_person_built_as_json() {
        let o = Options {
            shared_people: 10,
            ..Options::default()
        };
        let s = Store::new(Ent::Persons, 3, 40, o.shared_people, 3);
        for id in [1, 5, 10, 11, 40] {
            let mut out = Vec::new();
            s.render(&mut out, id);
            let fast: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(fast, Value::Object(s.record(id)), "person {id}");
        }
    }

    #[test]
    fn hash_keys_are_forty_hex_characters() {
        let k = hash_key(1, 2);
        assert_eq!(k.len(), 40);
        assert!(k.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
