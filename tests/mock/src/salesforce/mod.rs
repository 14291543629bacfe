//! The Salesforce mock: OAuth token endpoint, REST API (describeGlobal,
//! describe, query/queryAll with snapshot query locators), Bulk API 2.0
//! query jobs, Salesforce's error bodies, session expiry and daily API
//! limits, plus admin endpoints under `/_mock/`. README.md beside
//! `Cargo.toml` lists the Salesforce documents followed.

pub mod bulk;
pub mod oauth;
pub mod records;
pub mod schema;
pub mod soql;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rsa::RsaPublicKey;
use serde_json::{json, Value};

use crate::data::mix;
use crate::faults::{echo_cut, echo_text, sent_secrets, Picked};
use crate::mock::{Base, Mock};
use crate::server::{Request, Response};
use crate::store::json_str;
use records::{fmt_dt, parse_dt, Table};
use schema::Field;

/// `Sforce-Query-Options: batchSize` bounds and default.
pub const BATCH_MIN: usize = 200;
pub const BATCH_MAX: usize = 2000;
/// Query locators expire after 15 minutes unused; a user has at most 10.
const CURSOR_IDLE: Duration = Duration::from_secs(15 * 60);
const MAX_CURSORS: usize = 10;
/// API versions served.
const VERSIONS: std::ops::RangeInclusive<u32> = 31..=66;
/// Documented default SOQL statement limit (characters).
pub const SOQL_MAX_LENGTH: usize = 100_000;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub accounts: u64,
    pub contacts: u64,
    pub leads: u64,
    pub opportunities: u64,
    pub users: u64,
    pub invoices: u64,
    /// Task records; about a third are archived (`IsArchived`), which
    /// `query` hides and `queryAll` returns.
    pub tasks: u64,
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    pub username: String,
    /// PEM text of the connected app's certificate key (JWT flow).
    pub jwt_public_key: Option<String>,
    /// API calls a session token serves before it expires (0: never).
    pub session_calls: u64,
    /// API calls the org may make (0: no limit).
    pub daily_api_limit: u64,
    pub max_query_length: usize,
    /// Status polls a Bulk query job stays InProgress.
    pub bulk_polls: u64,
    /// Query locators and Bulk query jobs keep the Ids (and order) of the
    /// moment the query ran but render each record's current values on
    /// every page (false: every page is a snapshot as of the query).
    pub live_cursors: bool,
    pub gzip: bool,
    /// The first contacts and accounts are people and companies the
    /// HubSpot mock knows too (`crate::people`; 0: none).
    pub shared_people: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 42,
            accounts: 50,
            contacts: 50,
            leads: 50,
            opportunities: 50,
            users: 50,
            invoices: 50,
            tasks: 50,
            client_id: "3MVG9mock.client.id".into(),
            client_secret: "mock-client-secret".into(),
            refresh_token: "5Aep861mock.refresh.token".into(),
            username: "integration@mock.example.com".into(),
            jwt_public_key: None,
            session_calls: 0,
            daily_api_limit: 0,
            max_query_length: SOQL_MAX_LENGTH,
            bulk_polls: 2,
            live_cursors: false,
            gzip: false,
            shared_people: 0,
        }
    }
}

/// An open query locator: the ids and the change sequence of the moment
/// the query ran, so later pages show records as they were then (or, when
/// `live`, each record's current values; `query` then skips records deleted
/// since).
struct Cursor {
    object: String,
    fields: Vec<String>,
    ids: Vec<u64>,
    seq: u64,
    live: bool,
    all: bool,
    batch: usize,
    used: Instant,
}

pub(crate) struct State {
    tables: Vec<Table>,
    /// Change sequence: bumped by every admin change.
    seq: u64,
    sessions: HashMap<String, u64>,
    refresh_token: Option<String>,
    /// Refresh token rotation: each refresh returns a new refresh token
    /// and invalidates the one used.
    rotate_refresh_tokens: bool,
    /// Refresh-token grants served.
    refreshes: u64,
    api_calls: u64,
    session_calls: u64,
    daily_api_limit: u64,
    max_query_length: usize,
    /// A REST query (not a COUNT()) matching more records than this runs
    /// past Salesforce's 120 s and fails with QUERY_TIMEOUT (0: never), as
    /// a non-selective query over a large change set does.
    query_timeout_rows: usize,
    /// The queries that timed out so, in order.
    timed_out: Vec<String>,
    /// See [`Options::live_cursors`]; fixed per locator or job when the
    /// query runs.
    live_cursors: bool,
    cursors: HashMap<String, Cursor>,
    cursor_order: VecDeque<String>,
    jobs: bulk::Jobs,
}

impl State {
    fn table(&self, name: &str) -> Option<&Table> {
        self.tables
            .iter()
            .find(|t| t.obj.name.eq_ignore_ascii_case(name))
    }

    fn table_mut(&mut self, name: &str) -> Option<&mut Table> {
        self.tables
            .iter_mut()
            .find(|t| t.obj.name.eq_ignore_ascii_case(name))
    }

    fn objects(&self) -> Vec<schema::Object> {
        self.tables.iter().map(|t| t.obj.clone()).collect()
    }
}

pub struct SalesforceMock {
    opts: Options,
    public_key: Option<RsaPublicKey>,
    base: Base<State>,
    counter: AtomicU64,
}

/// Salesforce's REST error body: `[{"message","errorCode"}]`.
pub fn sf_error(status: u16, code: &str, message: &str) -> Response {
    Response::json(
        status,
        json!([{ "message": message, "errorCode": code }])
            .to_string()
            .into_bytes(),
    )
}

fn oauth_error(e: oauth::OAuthError) -> Response {
    Response::json(
        400,
        json!({"error": e.0, "error_description": e.1})
            .to_string()
            .into_bytes(),
    )
}

fn not_found() -> Response {
    sf_error(404, "NOT_FOUND", "The requested resource does not exist")
}

fn invalid_session() -> Response {
    sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
}

fn request_limit() -> Response {
    sf_error(
        403,
        "REQUEST_LIMIT_EXCEEDED",
        "TotalRequests Limit exceeded.",
    )
}

impl SalesforceMock {
    pub fn new(opts: Options) -> Result<SalesforceMock, String> {
        let public_key = match &opts.jwt_public_key {
            Some(pem) => Some(oauth::load_public_key(pem)?),
            None => None,
        };
        let counts = [
            ("Account", opts.accounts),
            ("AccountHistory", opts.accounts),
            ("Contact", opts.contacts),
            ("Invoice__c", opts.invoices),
            ("Task", opts.tasks),
            ("Attachment", opts.tasks),
            ("Lead", opts.leads),
            ("Opportunity", opts.opportunities),
            ("User", opts.users),
            ("UserLogin", opts.users),
            ("Wide__c", opts.invoices),
        ];
        let tables = schema::objects()
            .into_iter()
            .map(|o| {
                let n = counts
                    .iter()
                    .find(|c| c.0 == o.name)
                    .map(|c| c.1)
                    .unwrap_or(0);
                Table::new(o, opts.seed, n).with_shared_people(opts.shared_people)
            })
            .collect();
        Ok(SalesforceMock {
            public_key,
            base: Base::new(
                State {
                    tables,
                    seq: 0,
                    sessions: HashMap::new(),
                    refresh_token: Some(opts.refresh_token.clone()),
                    rotate_refresh_tokens: false,
                    refreshes: 0,
                    api_calls: 0,
                    session_calls: opts.session_calls,
                    daily_api_limit: opts.daily_api_limit,
                    max_query_length: opts.max_query_length,
                    query_timeout_rows: 0,
                    timed_out: Vec::new(),
                    live_cursors: opts.live_cursors,
                    cursors: HashMap::new(),
                    cursor_order: VecDeque::new(),
                    jobs: bulk::Jobs::default(),
                },
                opts.gzip,
            ),
            opts,
            counter: AtomicU64::new(1),
        })
    }

    /// A fresh opaque string of `len` characters from Salesforce's id alphabet.
    fn opaque(&self, len: usize) -> String {
        const A: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut h = mix(self.counter.fetch_add(1, Ordering::Relaxed) ^ self.opts.seed);
        (0..len)
            .map(|i| {
                if i % 8 == 0 {
                    h = mix(h.wrapping_add(i as u64));
                }
                let c = A[(h % A.len() as u64) as usize] as char;
                h /= A.len() as u64;
                c
            })
            .collect()
    }

    fn own_url(req: &Request) -> String {
        format!("http://{}", req.header("host").unwrap_or("127.0.0.1"))
    }

    /// Session and daily-limit checks; counts the call.
    fn authorize(&self, st: &mut State, req: &Request) -> Option<Response> {
        let token = req
            .header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            })
            .map(str::trim);
        let limit = st.session_calls;
        let Some(calls) = token.and_then(|t| st.sessions.get_mut(t)) else {
            return Some(invalid_session());
        };
        if limit > 0 && *calls >= limit {
            return Some(invalid_session());
        }
        if st.daily_api_limit > 0 && st.api_calls >= st.daily_api_limit {
            return Some(request_limit());
        }
        *calls += 1;
        st.api_calls += 1;
        None
    }

    /// The connected app and user a token request is checked against.
    fn oauth_client<'a>(&'a self, st: &'a State, own_url: &'a str) -> oauth::Client<'a> {
        oauth::Client {
            client_id: &self.opts.client_id,
            client_secret: &self.opts.client_secret,
            refresh_token: st.refresh_token.as_deref(),
            username: &self.opts.username,
            public_key: self.public_key.as_ref(),
            own_url,
        }
    }

    fn token(&self, st: &mut State, req: &Request) -> Response {
        let own = Self::own_url(req);
        let client = self.oauth_client(st, &own);
        let scope = match oauth::check(req, &client) {
            Ok(s) => s,
            Err(e) => return oauth_error(e),
        };
        // With rotation on, the refresh token used is spent and a new one
        // comes back with the session (help.salesforce.com, "OAuth 2.0
        // Refresh Token Flow for Renewed Sessions").
        let rotated = if scope == "api refresh_token" {
            st.refreshes += 1;
            st.rotate_refresh_tokens.then(|| {
                let t = format!("5Aep861{}", self.opaque(80));
                st.refresh_token = Some(t.clone());
                t
            })
        } else {
            None
        };
        let access = format!("00D5G0000001MOCK!AQ{}", self.opaque(96));
        st.sessions.insert(access.clone(), 0);
        let issued_at = chrono::Utc::now().timestamp_millis().to_string();
        let id = format!(
            "{own}/id/00D5G0000001MOCKEAA/{}",
            records::make_id("005", 1)
        );
        let sig = oauth::signature(&id, &issued_at, &self.opts.client_secret);
        let mut body = json!({
            "access_token": access,
            "instance_url": own,
            "id": id,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": sig,
            "scope": scope,
        });
        if let Some(t) = rotated {
            body["refresh_token"] = json!(t);
        }
        Response::json(200, body.to_string().into_bytes())
    }

    fn rest(&self, st: &mut State, req: &Request, v: &str, rest: &[&str]) -> Response {
        match (req.method.as_str(), rest) {
            ("GET", []) => Response::json(
                200,
                json!({
                    "sobjects": format!("/services/data/v{v}/sobjects"),
                    "query": format!("/services/data/v{v}/query"),
                    "queryAll": format!("/services/data/v{v}/queryAll"),
                    "jobs": format!("/services/data/v{v}/jobs"),
                    "limits": format!("/services/data/v{v}/limits"),
                })
                .to_string()
                .into_bytes(),
            ),
            ("GET", ["limits"]) => {
                let max = st.daily_api_limit;
                Response::json(
                    200,
                    json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(st.api_calls)}})
                        .to_string()
                        .into_bytes(),
                )
            }
            ("GET", ["sobjects"]) => {
                let list: Vec<Value> = st.tables.iter().map(|t| t.obj.global_entry(v)).collect();
                Response::json(
                    200,
                    json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})
                        .to_string()
                        .into_bytes(),
                )
            }
            ("GET", ["sobjects", name]) => match st.table(name) {
                Some(t) => Response::json(
                    200,
                    json!({"objectDescribe": t.obj.global_entry(v), "recentItems": []})
                        .to_string()
                        .into_bytes(),
                ),
                None => not_found(),
            },
            // getDeleted: the delete log between start and end (ISO 8601
            // datetimes); start no more than 30 days back
            // (INVALID_REPLICATION_DATE), the log reaching back 15 days or
            // to earliestDateAvailable.
            ("GET", ["sobjects", name, "deleted"]) => match st.table(name) {
                Some(t) => get_deleted(t, req),
                None => not_found(),
            },
            ("GET", ["sobjects", name, "describe"]) => match st.table(name) {
                Some(t) => Response::json(200, t.obj.describe(v).to_string().into_bytes()),
                None => not_found(),
            },
            ("GET", [kind @ ("query" | "queryAll")]) => {
                let q = req.param("q").unwrap_or("");
                let batch = batch_size(req);
                self.query(st, v, q, *kind == "queryAll", batch)
                    .unwrap_or_else(|e| e)
            }
            ("GET", ["query" | "queryAll", locator]) => self.more(st, v, locator),
            (_, ["jobs", "query", ..]) => bulk::route(st, req, v, &rest[2..], &self.opts, || {
                format!("750{}", self.opaque(12))
            }),
            _ => not_found(),
        }
    }

    fn query(
        &self,
        st: &mut State,
        v: &str,
        q: &str,
        all: bool,
        batch: usize,
    ) -> Result<Response, Response> {
        if q.trim().is_empty() {
            return Err(sf_error(
                400,
                "MALFORMED_QUERY",
                "A query string has to be specified",
            ));
        }
        if q.chars().count() > st.max_query_length {
            return Err(sf_error(
                400,
                "MALFORMED_QUERY",
                &format!(
                    "Query too long: SOQL statements cannot be longer than {} characters",
                    st.max_query_length
                ),
            ));
        }
        let objects = st.objects();
        let (query, _) = soql::parse(q, &objects).map_err(|e| sf_error(400, e.code, &e.message))?;
        let seq = st.seq;
        let t = st.table(&query.object).expect("parsed objects exist");
        if !t.obj.queryable {
            return Err(sf_error(
                400,
                "INVALID_TYPE",
                &format!("sObject type '{}' is not supported.", t.obj.name),
            ));
        }
        if !t.obj.filter_on.is_empty()
            && !query
                .filter
                .as_ref()
                .is_some_and(|f| t.obj.filter_on.iter().any(|n| f.mentions(n)))
        {
            return Err(sf_error(
                400,
                "MALFORMED_QUERY",
                &format!(
                    "Implementation restriction: {} requires a filter by a single Id on {} using the equals operator or multiple Id's using the IN operator.",
                    t.obj.name,
                    t.obj.filter_on.join(" or ")
                ),
            ));
        }
        let ids = soql::run(&query, t, all, seq);
        if !query.count && st.query_timeout_rows > 0 && ids.len() > st.query_timeout_rows {
            st.timed_out.push(q.to_owned());
            return Err(sf_error(
                400,
                "QUERY_TIMEOUT",
                "Your query request was running for too long.",
            ));
        }
        if query.count {
            return Ok(Response::json(
                200,
                json!({"totalSize": ids.len(), "done": true, "records": []})
                    .to_string()
                    .into_bytes(),
            ));
        }
        let cursor = Cursor {
            object: t.obj.name.clone(),
            fields: query.fields,
            ids,
            seq,
            live: st.live_cursors,
            all,
            batch,
            used: Instant::now(),
        };
        let locator = format!("01g{}", self.opaque(15));
        let resp = page(st, v, &cursor, &locator, 0);
        if cursor.ids.len() > batch {
            open_cursor(st, locator, cursor);
        }
        Ok(resp)
    }

    fn more(&self, st: &mut State, v: &str, locator: &str) -> Response {
        let now = Instant::now();
        st.cursors
            .retain(|_, c| now.duration_since(c.used) < CURSOR_IDLE);
        let invalid = || sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
        let Some((loc, offset)) = locator.rsplit_once('-') else {
            return invalid();
        };
        let Ok(offset) = offset.parse::<usize>() else {
            return invalid();
        };
        let Some(mut cursor) = st.cursors.remove(loc) else {
            return invalid();
        };
        cursor.used = now;
        let r = page(st, v, &cursor, loc, offset);
        if offset + cursor.batch < cursor.ids.len() {
            st.cursors.insert(loc.to_owned(), cursor);
        } else {
            st.cursor_order.retain(|l| l != loc);
        }
        r
    }
}

impl Mock for SalesforceMock {
    type State = State;
    /// Salesforce's own fault bodies.
    const FAULT_KINDS: &'static [&'static str] = &[
        "invalid_session",
        "request_limit",
        "query_timeout",
        "500",
        "503",
        "echo_session",
    ];

    fn base(&self) -> &Base<State> {
        &self.base
    }

    fn fault(&self, kind: &str, req: &Request) -> Option<Response> {
        Some(match kind {
            "invalid_session" => invalid_session(),
            // An error whose message quotes the request's session token, as
            // a misbehaving proxy or error page might.
            "echo_session" => sf_error(
                400,
                "INVALID_QUERY_FILTER_OPERATOR",
                &format!(
                    "Request with {} was refused",
                    req.header("authorization").unwrap_or("no Authorization")
                ),
            ),
            "request_limit" => request_limit(),
            "query_timeout" => sf_error(
                400,
                "QUERY_TIMEOUT",
                "Your query request was running for too long.",
            ),
            "500" => sf_error(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1893502137-61393 (-1126450366)",
            ),
            "503" => sf_error(
                503,
                "SERVER_UNAVAILABLE",
                "Server temporarily unavailable. Please try again later.",
            ),
            _ => return None,
        })
    }

    /// At the token endpoint, the OAuth error the grant earns (else
    /// `invalid_grant`) whose description quotes the form's secrets as
    /// sent; elsewhere a REST `MALFORMED_QUERY` quoting the session token.
    /// Status 400 unless the rule names one.
    fn echo(&self, st: &mut State, fault: &Picked, req: &Request) -> Response {
        let status = fault.status.unwrap_or(400);
        let sent = sent_secrets(req);
        if fault.kind == "echo_secrets_cut" {
            return echo_cut(status, &sent);
        }
        if req.path.contains("/services/oauth2/token") {
            let own = Self::own_url(req);
            let client = self.oauth_client(st, &own);
            let (error, why) = match oauth::check(req, &client) {
                Err(e) => e,
                Ok(_) => ("invalid_grant", "authentication failure"),
            };
            return Response::json(
                status,
                json!({"error": error,
                       "error_description": format!("{why}: request {}", echo_text(&sent))})
                .to_string()
                .into_bytes(),
            );
        }
        sf_error(
            status,
            "MALFORMED_QUERY",
            &format!(
                "unexpected token: '{}' in the request with {}",
                sent.first().map(|s| s.raw.as_str()).unwrap_or(""),
                echo_text(&sent)
            ),
        )
    }

    fn endpoint(path: &str) -> String {
        endpoint(path)
    }

    fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
        apply_action(st, action)
    }

    fn route(&self, st: &mut State, req: &Request) -> Response {
        let parts: Vec<&str> = req
            .path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (req.method.as_str(), parts.as_slice()) {
            ("POST", ["services", "oauth2", "token"]) => self.token(st, req),
            ("GET", ["services", "data"]) => versions(),
            (_, ["services", "data", v, rest @ ..]) => {
                let Some(version) = parse_version(v) else {
                    return not_found();
                };
                if let Some(r) = self.authorize(st, req) {
                    return r;
                }
                let limit = if st.daily_api_limit > 0 {
                    st.daily_api_limit
                } else {
                    5_000_000
                };
                let usage = format!("api-usage={}/{limit}", st.api_calls);
                let r = self.rest(st, req, &version, rest);
                r.with_header("Sforce-Limit-Info", usage)
            }
            _ => not_found(),
        }
    }

    fn admin_route(
        &self,
        st: &mut State,
        method: &str,
        parts: &[&str],
        body: &Value,
    ) -> Option<Result<Value, String>> {
        Some(match (method, parts) {
            ("POST", ["sf", obj, op @ ("upsert" | "delete" | "undelete")]) => {
                let mut action = body.clone();
                if !action.is_object() {
                    action = json!({});
                }
                action["op"] = json!(op);
                action["object"] = json!(obj);
                apply_action(st, &action)
            }
            // Physical deletes: `hard_delete` (Bulk hardDelete: never in
            // the recycle bin) or `purge` (empty the recycle bin of these
            // deleted records). `expire_delete_log` drops the log's
            // entries before `before_ms` (earliestDateAvailable).
            ("POST", ["sf", obj, op @ ("hard_delete" | "purge")]) => (|| {
                let t = st
                    .table_mut(obj)
                    .ok_or_else(|| format!("unknown object {obj}"))?;
                let ts = t.change_time(body["timestamp_ms"].as_i64());
                let mut done = 0;
                for id in body["ids"].as_array().into_iter().flatten() {
                    let n = id
                        .as_str()
                        .and_then(|i| t.parse_id(i))
                        .ok_or_else(|| format!("unknown id {id}"))?;
                    if *op == "purge" && !t.deleted(n, u64::MAX) {
                        return Err(format!("{id} is not in the recycle bin"));
                    }
                    done += t.purge(n, ts) as u64;
                }
                st.seq += 1;
                Ok(json!({"purged": done}))
            })(),
            ("POST", ["sf", obj, "expire_delete_log"]) => match st.table_mut(obj) {
                Some(t) => {
                    let before = body["before_ms"]
                        .as_i64()
                        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
                    t.expire_delete_log(before);
                    Ok(json!({"earliestDateAvailable": fmt_dt(t.earliest_deleted)}))
                }
                None => Err(format!("unknown object {obj}")),
            },
            ("POST", ["sf", obj, "fields"]) => schema::custom_field(body).and_then(|f| {
                let d = f.describe();
                st.table_mut(obj)
                    .ok_or_else(|| format!("unknown object {obj}"))?
                    .add_field(f)?;
                Ok(d)
            }),
            // Formula values change without SystemModstamp moving:
            // {"field": name, "values": {id: value}}.
            ("POST", ["sf", obj, "recalculate"]) => (|| {
                let t = st
                    .table_mut(obj)
                    .ok_or_else(|| format!("unknown object {obj}"))?;
                let field = body["field"].as_str().ok_or("field missing")?;
                let mut n = 0;
                for (id, v) in body["values"].as_object().into_iter().flatten() {
                    let rec = t.parse_id(id).ok_or_else(|| format!("unknown id {id}"))?;
                    let v = match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    };
                    t.recalculate(rec, field, v)?;
                    n += 1;
                }
                Ok(json!({"recalculated": n}))
            })(),
            ("POST", ["sf", obj, "fields", name, "flags"]) => st
                .table_mut(obj)
                .ok_or_else(|| format!("unknown object {obj}"))
                .and_then(|t| t.set_filterable(name, body["filterable"].as_bool().unwrap_or(true)))
                .map(|_| json!({})),
            ("DELETE", ["sf", obj, "fields", name]) => st
                .table_mut(obj)
                .ok_or_else(|| format!("unknown object {obj}"))
                .and_then(|t| t.remove_field(name))
                .map(|_| json!({})),
            ("POST", ["sf", "expire_sessions"]) => {
                st.sessions.clear();
                Ok(json!({}))
            }
            ("POST", ["sf", "oauth"]) => {
                if let Some(b) = body["rotate_refresh_tokens"].as_bool() {
                    st.rotate_refresh_tokens = b;
                }
                Ok(json!({}))
            }
            ("GET", ["sf", "oauth"]) => Ok(json!({
                "refresh_token": st.refresh_token,
                "rotate_refresh_tokens": st.rotate_refresh_tokens,
                "refreshes": st.refreshes,
            })),
            ("POST", ["sf", "revoke_refresh_token"]) => {
                st.refresh_token = None;
                Ok(json!({}))
            }
            ("POST", ["sf", "limits"]) => {
                if let Some(n) = body["session_calls"].as_u64() {
                    st.session_calls = n;
                }
                if let Some(n) = body["daily_api_limit"].as_u64() {
                    st.daily_api_limit = n;
                }
                if let Some(n) = body["max_query_length"].as_u64() {
                    st.max_query_length = n as usize;
                }
                if let Some(n) = body["query_timeout_rows"].as_u64() {
                    st.query_timeout_rows = n as usize;
                }
                if let Some(n) = body["api_calls"].as_u64() {
                    st.api_calls = n;
                }
                if let Some(b) = body["live_cursors"].as_bool() {
                    st.live_cursors = b;
                }
                Ok(json!({
                    "session_calls": st.session_calls,
                    "daily_api_limit": st.daily_api_limit,
                    "max_query_length": st.max_query_length,
                    "api_calls": st.api_calls,
                    "live_cursors": st.live_cursors,
                }))
            }
            _ => return None,
        })
    }

    fn stats_extra(st: &State) -> Vec<(&'static str, Value)> {
        let live: BTreeMap<_, _> = st
            .tables
            .iter()
            .map(|t| (t.obj.name.clone(), t.live_count()))
            .collect();
        vec![
            ("api_calls", json!(st.api_calls)),
            ("open_query_locators", json!(st.cursors.len())),
            ("timed_out_queries", json!(st.timed_out)),
            ("live", json!(live)),
        ]
    }
}

/// `GET sobjects/{X}/deleted/?start=&end=`.
/// <https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_getdeleted.htm>
fn get_deleted(t: &Table, req: &Request) -> Response {
    let when = |k: &str| {
        req.param(k).and_then(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .ok()
                .map(|d| d.timestamp_millis())
                .or_else(|| parse_dt(v))
        })
    };
    let (Some(start), Some(end)) = (when("start"), when("end")) else {
        return sf_error(
            400,
            "MALFORMED_QUERY",
            "getDeleted needs start and end as ISO 8601 date-times",
        );
    };
    let now = chrono::Utc::now().timestamp_millis();
    const DAY: i64 = 86_400_000;
    // "startDate must chronologically precede endDate by more than one
    // minute" (SOAP API guide, getDeleted()).
    if end - start <= 60_000 {
        return sf_error(
            400,
            "INVALID_REPLICATION_DATE",
            "startDate must precede endDate by more than one minute",
        );
    }
    if start < now - 30 * DAY {
        return sf_error(
            400,
            "INVALID_REPLICATION_DATE",
            "startDate cannot be more than 30 days ago",
        );
    }
    let earliest = t.earliest_deleted.max(now - 15 * DAY);
    let list: Vec<Value> = t
        .deleted_between(start.max(earliest), end.min(now))
        .into_iter()
        .map(|(id, ts)| json!({"id": id, "deletedDate": fmt_dt(ts)}))
        .collect();
    if list.len() > 600_000 {
        return sf_error(
            400,
            "EXCEEDED_ID_LIMIT",
            "too many ids; use a shorter window",
        );
    }
    Response::json(
        200,
        json!({
            "deletedRecords": list,
            "earliestDateAvailable": fmt_dt(earliest),
            "latestDateCovered": fmt_dt(end.min(now)),
        })
        .to_string()
        .into_bytes(),
    )
}

/// Stats key: the path with query locators and job ids folded.
fn endpoint(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    let folded: Vec<&str> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let prev = if i > 0 { parts[i - 1] } else { "" };
            let prev2 = if i > 1 { parts[i - 2] } else { "" };
            match (prev2, prev) {
                (_, "query" | "queryAll") if prev2 != "jobs" => "{locator}",
                ("jobs", "query") => "{id}",
                _ => p,
            }
        })
        .collect();
    folded.join("/")
}

fn parse_version(v: &str) -> Option<String> {
    let n = v.strip_prefix('v')?;
    let (major, minor) = n.split_once('.')?;
    let major: u32 = major.parse().ok()?;
    (VERSIONS.contains(&major) && minor == "0").then(|| n.to_owned())
}

fn versions() -> Response {
    const NAMES: &[&str] = &["Winter", "Spring", "Summer"];
    let list: Vec<Value> = VERSIONS
        .map(|v| {
            // v31.0 was Summer '14; three releases a year since.
            let k = (v - 31) as usize + 2;
            let year = 14 + k / 3;
            let season = NAMES[k % 3];
            let year = if season == "Winter" { year + 1 } else { year };
            json!({"label": format!("{season} '{year}"), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")})
        })
        .collect();
    Response::json(200, Value::Array(list).to_string().into_bytes())
}

fn batch_size(req: &Request) -> usize {
    req.header("sforce-query-options")
        .and_then(|h| {
            h.split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("batchSize"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        })
        .map(|n| n.clamp(BATCH_MIN, BATCH_MAX))
        .unwrap_or(BATCH_MAX)
}

fn open_cursor(st: &mut State, locator: String, cursor: Cursor) {
    st.cursor_order.retain(|l| st.cursors.contains_key(l));
    while st.cursor_order.len() >= MAX_CURSORS {
        if let Some(old) = st.cursor_order.pop_front() {
            st.cursors.remove(&old);
        }
    }
    st.cursor_order.push_back(locator.clone());
    st.cursors.insert(locator, cursor);
}

/// Whether a page renders record `n` and at which change sequence: the
/// cursor's snapshot, or (live) the current values, where a plain `query`
/// leaves out records deleted since it ran.
pub(crate) fn visible(t: &Table, n: u64, seq: u64, live: bool, all: bool) -> Option<u64> {
    if !live {
        return Some(seq);
    }
    (all || !t.deleted(n, u64::MAX)).then_some(u64::MAX)
}

/// One page of query results from `offset`, rendered as of the cursor's
/// snapshot (or, for a live cursor, with current values).
fn page(st: &State, v: &str, c: &Cursor, locator: &str, offset: usize) -> Response {
    let Some(t) = st.table(&c.object) else {
        return not_found();
    };
    let end = (offset + c.batch).min(c.ids.len());
    let done = end >= c.ids.len();
    let mut out = Vec::with_capacity((end - offset.min(end)) * 600 + 128);
    out.extend_from_slice(format!("{{\"totalSize\":{},\"done\":{done},", c.ids.len()).as_bytes());
    if !done {
        out.extend_from_slice(
            format!("\"nextRecordsUrl\":\"/services/data/v{v}/query/{locator}-{end}\",").as_bytes(),
        );
    }
    out.extend_from_slice(b"\"records\":[");
    let mut first = true;
    for n in &c.ids[offset.min(end)..end] {
        let Some(seq) = visible(t, *n, c.seq, c.live, c.all) else {
            continue;
        };
        if !first {
            out.push(b',');
        }
        first = false;
        render_record(&mut out, t, *n, &c.fields, seq, v);
    }
    out.extend_from_slice(b"]}");
    Response::json(200, out)
}

/// One record as REST query results carry it.
fn render_record(out: &mut Vec<u8>, t: &Table, n: u64, fields: &[String], seq: u64, v: &str) {
    let id = t.id(n);
    out.extend_from_slice(
        format!(
            "{{\"attributes\":{{\"type\":\"{}\",\"url\":\"/services/data/v{v}/sobjects/{}/{id}\"}}",
            t.obj.name, t.obj.name
        )
        .as_bytes(),
    );
    for f in fields {
        out.push(b',');
        json_str(out, f);
        out.push(b':');
        let def = t.obj.field(f);
        match def {
            Some(d) if d.is_compound() => render_compound(out, t, n, d, seq),
            _ => render_value(out, def, t.value(n, f, seq).as_deref()),
        }
    }
    out.push(b'}');
}

fn render_value(out: &mut Vec<u8>, def: Option<&Field>, v: Option<&str>) {
    let Some(v) = v else {
        out.extend_from_slice(b"null");
        return;
    };
    let t = def.map(|d| d.ftype.as_str()).unwrap_or("string");
    match t {
        "boolean" => out.extend_from_slice(if v == "true" { b"true" } else { b"false" }),
        "int" | "double" | "currency" | "percent" => match v.parse::<f64>() {
            Ok(x) if x.is_finite() => out.extend_from_slice(
                if t == "int" {
                    format!("{}", x as i64)
                } else {
                    serde_json::Number::from_f64(x)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "null".into())
                }
                .as_bytes(),
            ),
            _ => out.extend_from_slice(b"null"),
        },
        _ => json_str(out, v),
    }
}

/// Address and location fields come back as JSON objects.
fn render_compound(out: &mut Vec<u8>, t: &Table, n: u64, def: &Field, seq: u64) {
    let parts = t.compound(n, def, seq);
    if parts.iter().all(|(_, v)| v.is_none()) {
        out.extend_from_slice(b"null");
        return;
    }
    // Component field name (lower-cased) to key, by suffix.
    const SUFFIXES: [(&str, &str); 5] = [
        ("street", "street"),
        ("city", "city"),
        ("postalcode", "postalCode"),
        ("state", "state"),
        ("country", "country"),
    ];
    let key = |name: &str| -> &'static str {
        let l = name.to_lowercase();
        if l.contains("latitude") {
            "latitude"
        } else if l.contains("longitude") {
            "longitude"
        } else {
            SUFFIXES
                .iter()
                .find(|(suffix, _)| l.ends_with(suffix))
                .map_or("geocodeAccuracy", |(_, k)| k)
        }
    };
    let mut m = serde_json::Map::new();
    for (name, v) in &parts {
        let k = key(name);
        let val = match (k, v) {
            (_, None) => Value::Null,
            ("latitude" | "longitude", Some(s)) => s
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            (_, Some(s)) => Value::String(s.clone()),
        };
        m.insert(k.to_owned(), val);
    }
    out.extend_from_slice(Value::Object(m).to_string().as_bytes());
}

/// Admin values: JSON to the text the store keeps, checked against the
/// field's type.
fn to_text(f: &Field, v: &Value) -> Result<Option<String>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if f.ftype == "datetime" => Some(fmt_dt(
            parse_dt(s).ok_or_else(|| format!("{}: not a datetime: {s}", f.name))?,
        )),
        Value::String(s) => Some(s.clone()),
        other => return Err(format!("{}: unsupported value {other}", f.name)),
    })
}

/// An admin change (`upsert`, `delete`, `undelete`), from the admin API or
/// a hook.
pub(crate) fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
    let object = action["object"].as_str().unwrap_or("");
    st.seq += 1;
    let seq = st.seq;
    let t = st
        .table_mut(object)
        .ok_or_else(|| format!("unknown object {object:?}"))?;
    let ts = t.change_time(action["timestamp_ms"].as_i64());
    let id_of = |t: &Table, v: &Value| -> Result<u64, String> {
        let s = v.as_str().ok_or_else(|| format!("bad id {v}"))?;
        t.parse_id(s)
            .ok_or_else(|| format!("no {} with id {s}", t.obj.name))
    };
    match action["op"].as_str() {
        Some("upsert") => {
            let recs = action["records"]
                .as_array()
                .ok_or("records must be an array")?;
            let mut ids = Vec::new();
            for r in recs {
                let m = r.as_object().ok_or("a record must be an object")?;
                let n = match m.get("Id") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(id_of(t, v)?),
                };
                let mut values = Vec::new();
                for (k, v) in m {
                    if k == "Id" {
                        continue;
                    }
                    let f = t.obj.field(k).ok_or_else(|| {
                        format!("No such column '{k}' on sobject of type {}", t.obj.name)
                    })?;
                    if f.is_compound()
                        || matches!(
                            f.name.as_str(),
                            "IsDeleted" | "CreatedDate" | "LastModifiedDate" | "SystemModstamp"
                        )
                    {
                        return Err(format!("{} is not writable", f.name));
                    }
                    values.push((f.name.clone(), to_text(f, v)?));
                }
                let n = t.upsert(n, values, ts, seq);
                ids.push(t.id(n));
            }
            Ok(json!({"ids": ids, "SystemModstamp": fmt_dt(ts)}))
        }
        Some(op @ ("delete" | "undelete")) => {
            if !t.obj.has("IsDeleted") {
                return Err(format!("{} records cannot be deleted", t.obj.name));
            }
            let ids = action["ids"].as_array().ok_or("ids must be an array")?;
            let mut done = Vec::new();
            for v in ids {
                let n = id_of(t, v)?;
                if t.set_deleted(n, op == "delete", ts, seq) {
                    done.push(t.id(n));
                }
            }
            Ok(json!({ op.to_owned() + "d": done }))
        }
        // A custom field deleted in the org (hooks: between a describe and
        // the query that names the field).
        Some("remove_field") => {
            let name = action["name"].as_str().ok_or("name must be a string")?;
            t.remove_field(name).map(|_| json!({}))
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_fold_locators_and_job_ids() {
        assert_eq!(
            endpoint("/services/data/v59.0/query/01gABC-2000"),
            "/services/data/v59.0/query/{locator}"
        );
        assert_eq!(
            endpoint("/services/data/v59.0/jobs/query/750X/results"),
            "/services/data/v59.0/jobs/query/{id}/results"
        );
        assert_eq!(
            endpoint("/services/data/v59.0/query"),
            "/services/data/v59.0/query"
        );
    }

    #[test]
    fn versions_and_batch_sizes() {
        assert_eq!(parse_version("v59.0").as_deref(), Some("59.0"));
        assert_eq!(parse_version("v20.0"), None);
        assert_eq!(parse_version("59.0"), None);
        let mut req = Request::default();
        assert_eq!(batch_size(&req), BATCH_MAX);
        req.headers
            .push(("sforce-query-options".into(), "batchSize=50".into()));
        assert_eq!(batch_size(&req), BATCH_MIN);
    }
}
