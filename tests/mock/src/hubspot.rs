//! The HubSpot CRM v3 mock: objects list and search, properties, record
//! associations (v3 `?associations=` and v4 batch read), HubSpot's error and
//! rate-limit bodies, plus admin endpoints under `/_mock/` for changing
//! data, injecting faults and reading request statistics.
//! README.md beside `Cargo.toml` lists the HubSpot documents followed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::data::{assoc_def, fmt_ms, parse_time, Kind, PropDef};
use crate::faults::{echo_cut, echo_text, sent_secrets, Picked};
use crate::mock::{Base, Mock};
use crate::server::{Request, Response};
use crate::store::{Key, Store};

/// `GET /crm/v3/objects/{type}`: at most 100 per page.
pub const LIST_MAX: usize = 100;
/// The longest request target (path and query) HubSpot accepts.
pub const URL_MAX: usize = 16_300;
/// Search: at most 200 per page and 10,000 results per query.
pub const SEARCH_MAX: usize = 200;
pub const SEARCH_WINDOW: usize = 10_000;
/// Search request limits (filterGroups, filters per group, filters in all).
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 10;
const MAX_FILTERS: usize = 25;
/// `POST /crm/v4/associations/{from}/{to}/batch/read`: inputs per request.
pub const ASSOC_BATCH_MAX: usize = 1000;
/// Association entries a v3 record lists per type (`associations=`) before
/// `paging`, and associated records a v4 answer holds per record.
pub const V3_ASSOC_PAGE: usize = 100;
pub const V4_ASSOC_PAGE: usize = 500;
/// `POST /crm/v3/objects/{type}/batch/read`: inputs per request.
pub const BATCH_READ_MAX: usize = 100;

#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub contacts: u64,
    pub companies: u64,
    pub deals: u64,
    pub token: String,
    /// Search requests allowed per second (0: no limit).
    pub search_rate_limit: u32,
    pub gzip: bool,
    /// The first contacts and companies are people and companies the
    /// Salesforce mock knows too (`crate::people`; 0: none).
    pub shared_people: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 42,
            contacts: 1000,
            companies: 200,
            deals: 300,
            token: "pat-na1-mock".into(),
            search_rate_limit: 0,
            gzip: false,
            shared_people: 0,
        }
    }
}

pub(crate) struct State {
    token: String,
    stores: Vec<Store>,
    searches: VecDeque<Instant>,
    /// A public app's OAuth, once set through `/_mock/oauth`.
    oauth: Option<OAuthApp>,
    /// The portal's API budget, once set through `/_mock/limits`.
    limits: Limits,
}

/// The portal's API budget (none unless set): a ten-secondly rolling
/// window of `max` calls per `interval`, and a daily count.
#[derive(Default)]
pub(crate) struct Limits {
    window: Option<(usize, Duration)>,
    recent: VecDeque<Instant>,
    daily: Option<u64>,
    daily_used: u64,
}

/// An OAuth app installed in the portal: its refresh token, and the
/// access tokens issued, each with when it expires.
pub(crate) struct OAuthApp {
    client_id: String,
    client_secret: String,
    refresh_token: String,
    /// Every refresh returns a new refresh token and retires the old one.
    rotate: bool,
    ttl: Duration,
    issued: BTreeMap<String, Instant>,
    refreshes: u64,
}

impl State {
    fn store(&mut self, kind: Kind) -> &mut Store {
        self.stores
            .iter_mut()
            .find(|s| s.kind() == kind)
            .expect("all kinds have a store")
    }

    fn store_ref(&self, kind: Kind) -> &Store {
        self.stores
            .iter()
            .find(|s| s.kind() == kind)
            .expect("all kinds have a store")
    }

    /// The live records of kind `to` that record `id` of kind `from` is
    /// associated with, the primary first.
    fn associated(&self, from: Kind, id: u64, to: Kind) -> Vec<u64> {
        let target = self.store_ref(to);
        let mut ids = self.store_ref(from).associations(id, to, target.gen.count);
        ids.retain(|t| target.exists(*t) && !target.is_archived(*t));
        ids
    }

    /// Append `,"associations":{…}` for record `id` as the v3 objects API
    /// returns it: per type `{"results":[{"id","type"}]}`, the primary first
    /// (then every associated record by id, as `…_unlabeled` where the pair
    /// has a primary type: HubSpot lists each label); types
    /// without associations, and the key itself when there are none, left
    /// out.
    fn render_associations(&self, out: &mut Vec<u8>, from: Kind, id: u64, types: &[Kind]) {
        let mut first_type = true;
        for &to in types {
            let Some(def) = assoc_def(from, to) else {
                continue;
            };
            let ids = self.associated(from, id, to);
            if ids.is_empty() {
                continue;
            }
            out.extend_from_slice(if first_type {
                b",\"associations\":{" as &[u8]
            } else {
                b","
            });
            first_type = false;
            out.extend_from_slice(format!("\"{}\":{{\"results\":[", to.name()).as_bytes());
            let unlabeled = def.v3_unlabeled();
            let mut entries: Vec<(u64, &str)> = Vec::with_capacity(ids.len() + 1);
            if def.primary.is_some() {
                entries.push((ids[0], def.v3_type));
            }
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            entries.extend(sorted.iter().map(|t| (*t, unlabeled.as_str())));
            for (i, (t, ty)) in entries.iter().take(V3_ASSOC_PAGE).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(format!("{{\"id\":\"{t}\",\"type\":\"{ty}\"}}").as_bytes());
            }
            out.push(b']');
            // More than a page: the rest through the associations API.
            if entries.len() > V3_ASSOC_PAGE {
                out.extend_from_slice(
                    format!(
                        ",\"paging\":{{\"next\":{{\"after\":\"{V3_ASSOC_PAGE}\",\"link\":\"/crm/v3/objects/{}/{id}/associations/{}?after={V3_ASSOC_PAGE}\"}}}}",
                        from.name(),
                        to.name()
                    )
                    .as_bytes(),
                );
            }
            out.push(b'}');
        }
        if !first_type {
            out.push(b'}');
        }
    }
}

/// The association types asked for with `associations=` (comma-separated,
/// or the parameter repeated) that `kind` has; unknown ones are ignored, as
/// HubSpot does.
fn requested_associations(req: &Request, kind: Kind) -> Vec<Kind> {
    let mut out = Vec::new();
    for to in req
        .params("associations")
        .flat_map(|p| p.split(','))
        .filter_map(|t| Kind::parse_any(t.trim()))
    {
        if assoc_def(kind, to).is_some() && !out.contains(&to) {
            out.push(to);
        }
    }
    out
}

/// Write one record, with its associations of `types` if any.
fn render_with_associations(
    st: &State,
    out: &mut Vec<u8>,
    kind: Kind,
    id: u64,
    props: &[&str],
    types: &[Kind],
) {
    let store = st.store_ref(kind);
    store.render(out, id, props);
    if !types.is_empty() {
        // render() ends with the record's closing brace.
        out.pop();
        st.render_associations(out, kind, id, types);
        out.push(b'}');
    }
}

pub struct HubSpotMock {
    opts: Options,
    base: Base<State>,
    correlation: AtomicU64,
}

impl HubSpotMock {
    pub fn new(opts: Options) -> HubSpotMock {
        let stores = vec![
            Store::new(Kind::Contacts, opts.seed, opts.contacts)
                .with_shared_people(opts.shared_people),
            Store::new(Kind::Companies, opts.seed, opts.companies)
                .with_shared_people(opts.shared_people),
            Store::new(Kind::Deals, opts.seed, opts.deals),
        ];
        HubSpotMock {
            base: Base::new(
                State {
                    token: opts.token.clone(),
                    stores,
                    searches: VecDeque::new(),
                    oauth: None,
                    limits: Limits::default(),
                },
                opts.gzip,
            ),
            opts,
            correlation: AtomicU64::new(1),
        }
    }

    fn correlation_id(&self) -> String {
        let n = self.correlation.fetch_add(1, Ordering::Relaxed);
        let h = crate::data::mix(n);
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            h >> 32,
            (h >> 16) & 0xffff,
            h & 0xfff,
            (h >> 12) & 0xfff,
            crate::data::mix(h) & 0xffff_ffff_ffff
        )
    }

    /// HubSpot's standard error body.
    fn error(&self, status: u16, category: &str, message: &str) -> Response {
        let body = json!({
            "status": "error",
            "message": message,
            "correlationId": self.correlation_id(),
            "category": category,
        });
        Response::json(status, body.to_string().into_bytes())
    }

    fn rate_limited(&self, policy: &str, retry_after: bool) -> Response {
        if policy == "DAILY" {
            // Private apps' daily budget; OAuth calls get no daily headers.
            let body = json!({
                "status": "error",
                "message": "You have reached your daily limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": self.correlation_id(),
                "policyName": "DAILY",
                "groupName": "api-calls-daily",
            });
            return Response::json(429, body.to_string().into_bytes())
                .with_header("X-HubSpot-RateLimit-Daily", "250000")
                .with_header("X-HubSpot-RateLimit-Daily-Remaining", "0");
        }
        let (max, interval, msg) = match policy {
            "SECONDLY" => ("5", "1000", "You have reached your secondly limit."),
            _ => (
                "190",
                "10000",
                "You have reached your ten_secondly_rolling limit.",
            ),
        };
        let body = json!({
            "status": "error",
            "message": msg,
            "errorType": "RATE_LIMIT",
            "correlationId": self.correlation_id(),
            "policyName": policy,
            "groupName": "api-calls",
        });
        let mut r = Response::json(429, body.to_string().into_bytes())
            .with_header("X-HubSpot-RateLimit-Max", max)
            .with_header("X-HubSpot-RateLimit-Remaining", "0")
            .with_header("X-HubSpot-RateLimit-Interval-Milliseconds", interval);
        if retry_after {
            r = r.with_header("Retry-After", "1");
        }
        r
    }

    /// `POST /oauth/v3/token` (form body), `grant_type=refresh_token`: a
    /// new access token for the app's refresh token, `expires_in` seconds;
    /// a wrong client is 400 `BAD_CLIENT_ID`, a wrong refresh token 400
    /// `BAD_REFRESH_TOKEN`, as HubSpot answers.
    fn oauth_token(&self, st: &mut State, req: &Request) -> Response {
        let form: BTreeMap<String, String> =
            crate::server::parse_form(std::str::from_utf8(&req.body).unwrap_or_default())
                .into_iter()
                .collect();
        let refused = |status: &str, message: &str| {
            Response::json(
                400,
                json!({"status": status, "message": message, "correlationId": self.correlation_id()})
                    .to_string()
                    .into_bytes(),
            )
        };
        let Some(app) = st.oauth.as_mut() else {
            return refused("BAD_CLIENT_ID", "missing or unknown client id");
        };
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
        if field("grant_type") != "refresh_token" {
            return refused("BAD_GRANT_TYPE", "missing or invalid grant type");
        }
        if field("client_id") != app.client_id || field("client_secret") != app.client_secret {
            return refused("BAD_CLIENT_ID", "missing or unknown client id");
        }
        if field("refresh_token") != app.refresh_token {
            return refused("BAD_REFRESH_TOKEN", "missing or invalid refresh token");
        }
        app.refreshes += 1;
        let token = format!("oauth-mock-access-{:06}", app.refreshes);
        app.issued.insert(token.clone(), Instant::now() + app.ttl);
        if app.rotate {
            app.refresh_token = format!("{}-r{}", app.client_id, app.refreshes);
        }
        Response::json(
            200,
            json!({
                "token_type": "bearer",
                "access_token": token,
                "refresh_token": app.refresh_token,
                "expires_in": app.ttl.as_secs(),
            })
            .to_string()
            .into_bytes(),
        )
    }

    /// A private app without the object's read scope.
    fn missing_scopes(&self, path: &str) -> Response {
        let object = path.split('/').nth(4).unwrap_or("contacts");
        let body = json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": self.correlation_id(),
            "errors": [{"message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": [format!("crm.objects.{object}.read")]}}],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
            "category": "MISSING_SCOPES",
        });
        Response::json(403, body.to_string().into_bytes())
    }

    fn unauthorized(&self) -> Response {
        self.error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        )
    }

    fn with_kind(
        &self,
        t: &str,
        f: impl FnOnce(Kind) -> Result<Response, Response>,
    ) -> Result<Response, Response> {
        match Kind::parse(t) {
            Some(k) => f(k),
            None => Err(self.error(
                400,
                "VALIDATION_ERROR",
                &format!("Unable to infer object type from: {t}"),
            )),
        }
    }

    /// Count a call against the portal's budget; the 429 HubSpot answers
    /// when the daily count or the rolling window is used up.
    fn spend(&self, st: &mut State) -> Option<Response> {
        let l = &mut st.limits;
        if let Some(d) = l.daily {
            if l.daily_used >= d {
                return Some(self.rate_limited("DAILY", false));
            }
        }
        if let Some((max, every)) = l.window {
            let now = Instant::now();
            while l
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= every)
            {
                l.recent.pop_front();
            }
            if l.recent.len() >= max {
                let r = self.rate_limited("TEN_SECONDLY_ROLLING", false);
                return Some(
                    r.with_header("X-HubSpot-RateLimit-Max", max.to_string())
                        .with_header(
                            "X-HubSpot-RateLimit-Interval-Milliseconds",
                            every.as_millis().to_string(),
                        ),
                );
            }
            l.recent.push_back(now);
        }
        l.daily_used += u64::from(l.daily.is_some());
        None
    }

    fn search_rate(&self, st: &mut State) -> Option<Response> {
        let limit = self.opts.search_rate_limit as usize;
        if limit == 0 {
            return None;
        }
        let now = Instant::now();
        while st
            .searches
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            st.searches.pop_front();
        }
        if st.searches.len() >= limit {
            return Some(self.rate_limited("SECONDLY", false));
        }
        st.searches.push_back(now);
        None
    }

    fn bad_request(&self, msg: &str) -> Response {
        self.error(400, "VALIDATION_ERROR", msg)
    }

    /// Properties a response carries: the requested ones that exist (HubSpot
    /// ignores unknown names when listing), or the object's defaults; the id,
    /// create and modify times always.
    fn wanted<'a>(store: &'a Store, requested: Vec<&'a str>) -> Vec<&'a str> {
        let kind = store.kind();
        let mut out: Vec<&str> = if requested.is_empty() {
            kind.default_props().to_vec()
        } else {
            requested
                .into_iter()
                .filter(|p| store.prop(p).is_some())
                .collect()
        };
        for always in ["createdate", kind.modified_prop(), "hs_object_id"] {
            if !out.contains(&always) {
                out.push(always);
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|p| seen.insert(*p));
        out
    }

    fn list(&self, st: &State, kind: Kind, req: &Request) -> Result<Response, Response> {
        let limit = match req.param("limit") {
            None => 10,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=LIST_MAX).contains(&n) => n,
                _ => {
                    return Err(self
                        .bad_request(&format!("limit must be between 1 and {LIST_MAX}, got {l}")))
                }
            },
        };
        let from = match req.param("after") {
            None | Some("") => 1,
            Some(a) => a
                .parse::<u64>()
                .map_err(|_| self.bad_request(&format!("Invalid after cursor: {a}")))?,
        };
        let archived = req
            .param("archived")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let assoc = requested_associations(req, kind);
        let store = st.store_ref(kind);
        let requested: Vec<&str> = req
            .params("properties")
            .flat_map(|p| p.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let props = Self::wanted(store, requested);
        let ids = store.list_ids(from, limit + 1, archived);
        let more = ids.len() > limit;
        let mut out = Vec::with_capacity(limit * 900);
        out.extend_from_slice(b"{\"results\":[");
        for (i, id) in ids.iter().take(limit).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            render_with_associations(st, &mut out, kind, *id, &props, &assoc);
        }
        out.push(b']');
        if more {
            let next = ids[limit];
            let host = req.header("host").unwrap_or("api.hubapi.com");
            let link = format!("http://{host}/crm/v3/objects/{}?after={next}", kind.name());
            out.extend_from_slice(
                format!(",\"paging\":{{\"next\":{{\"after\":\"{next}\",\"link\":\"{link}\"}}}}")
                    .as_bytes(),
            );
        }
        out.push(b'}');
        Ok(Response::json(200, out))
    }

    fn read(&self, st: &State, kind: Kind, id: &str, req: &Request) -> Result<Response, Response> {
        let store = st.store_ref(kind);
        let archived = req
            .param("archived")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // A merged-away id reads as the record it went into.
        let n = id
            .parse::<u64>()
            .ok()
            .map(|n| {
                if archived {
                    n
                } else {
                    store.merged_into(n).unwrap_or(n)
                }
            })
            .filter(|n| store.exists(*n) && store.is_archived(*n) == archived);
        let Some(n) = n else {
            return Err(self.error(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
            ));
        };
        let requested: Vec<&str> = req
            .params("properties")
            .flat_map(|p| p.split(','))
            .collect();
        let props = Self::wanted(store, requested);
        let assoc = requested_associations(req, kind);
        let mut out = Vec::new();
        render_with_associations(st, &mut out, kind, n, &props, &assoc);
        Ok(Response::json(200, out))
    }

    /// `POST /crm/v3/objects/{contacts,companies}/merge`
    /// `{"primaryObjectId","objectIdToMerge"}`: the merged record, which
    /// has a new id (see [`Store::merge`]) and the associations of both.
    fn merge(&self, st: &mut State, kind: Kind, req: &Request) -> Result<Response, Response> {
        if !matches!(kind, Kind::Contacts | Kind::Companies) {
            return Err(
                self.bad_request("merging records of this object is not modelled by the mock")
            );
        }
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|_| self.bad_request("Invalid input JSON on line 1"))?;
        let id = |k: &str| {
            body[k]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| self.bad_request(&format!("{k} must be a record id")))
        };
        let (primary, secondary) = (id("primaryObjectId")?, id("objectIdToMerge")?);
        let others: Vec<Kind> = [Kind::Contacts, Kind::Companies, Kind::Deals]
            .into_iter()
            .filter(|k| *k != kind)
            .collect();
        let assoc: Vec<(Kind, Vec<u64>)> = others
            .iter()
            .map(|&to| {
                let mut ids = st.associated(kind, primary, to);
                for x in st.associated(kind, secondary, to) {
                    if !ids.contains(&x) {
                        ids.push(x);
                    }
                }
                (to, ids)
            })
            .collect();
        let store = st.store(kind);
        let ts = store.change_time(None);
        let Some(new) = store.merge(primary, secondary, ts) else {
            return Err(self.error(
                404,
                "OBJECT_NOT_FOUND",
                "One or both of the records to merge were not found.",
            ));
        };
        for (to, ids) in assoc {
            store.set_associations(new, to, ids);
        }
        let props = Self::wanted(store, vec![]);
        let mut out = Vec::new();
        store.render(&mut out, new, &props);
        Ok(Response::json(200, out))
    }

    /// `POST /crm/v3/objects/{type}/batch/read`: up to 100 ids; ids that
    /// are not live come back as an `OBJECT_NOT_FOUND` error of a 207
    /// Multi-Status, the found records in `results` (HubSpot's batch read;
    /// `idProperty` and `propertiesWithHistory` are not modelled).
    fn batch_read(&self, st: &State, kind: Kind, req: &Request) -> Result<Response, Response> {
        let body = self.batch_body(req, BATCH_READ_MAX)?;
        let inputs = body["inputs"].as_array().expect("checked by batch_body");
        let archived = req
            .param("archived")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let store = st.store_ref(kind);
        let requested: Vec<&str> = body["properties"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let props = Self::wanted(store, requested);
        let mut out = Vec::new();
        out.extend_from_slice(b"{\"status\":\"COMPLETE\",\"results\":[");
        let mut missing = Vec::new();
        let mut first = true;
        for input in inputs {
            let id = input["id"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| input["id"].as_u64().map(|n| n.to_string()))
                .unwrap_or_default();
            match id
                .parse::<u64>()
                .ok()
                .filter(|n| store.exists(*n) && store.is_archived(*n) == archived)
            {
                Some(n) => {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    store.render(&mut out, n, &props);
                }
                None => missing.push(id),
            }
        }
        out.push(b']');
        let status = if missing.is_empty() {
            200
        } else {
            let errors = json!([{
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", kind.name().trim_end_matches('s').to_uppercase()),
                "context": { "ids": missing },
            }]);
            out.extend_from_slice(
                format!(
                    ",\"numErrors\":{},\"errors\":{errors}",
                    errors.as_array().map_or(0, Vec::len)
                )
                .as_bytes(),
            );
            207
        };
        out.extend_from_slice(b",\"startedAt\":\"2024-03-01T12:00:00.000Z\",\"completedAt\":\"2024-03-01T12:00:00.100Z\"}");
        Ok(Response::json(status, out))
    }

    /// `GET /crm/v4/objects/{from}/{id}/associations/{to}`: one record's
    /// associations, `limit` (at most 500) a page from `after` (an offset
    /// here; opaque to clients), the primary first.
    fn associations_of(
        &self,
        st: &State,
        from: &str,
        id: &str,
        to: &str,
        req: &Request,
    ) -> Result<Response, Response> {
        let (from, to) = (self.kind_of(from)?, self.kind_of(to)?);
        let limit = req
            .param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(V4_ASSOC_PAGE)
            .clamp(1, V4_ASSOC_PAGE);
        let after = match req.param("after") {
            None | Some("") => 0,
            Some(a) => a
                .parse::<usize>()
                .map_err(|_| self.bad_request(&format!("Invalid after cursor: {a}")))?,
        };
        let n = id
            .parse::<u64>()
            .ok()
            .filter(|n| st.store_ref(from).exists(*n))
            .ok_or_else(|| self.error(404, "OBJECT_NOT_FOUND", "Object not found."))?;
        let Some(def) = assoc_def(from, to) else {
            return Err(self.bad_request("No association type between these objects"));
        };
        let found = st.associated(from, n, to);
        let page: Vec<u64> = found.iter().skip(after).take(limit).copied().collect();
        let mut out = json!({"results": v4_entries(&def, &page, after)});
        if after + limit < found.len() {
            out["paging"] = json!({"next": {"after": (after + limit).to_string(),
                "link": format!("/crm/v4/objects/{}/{n}/associations/{}?after={}", from.name(), to.name(), after + limit)}});
        }
        Ok(Response::json(200, out.to_string().into_bytes()))
    }

    /// A batch request's body: JSON whose `inputs` is an array of at most
    /// `max` (HubSpot's 400 otherwise).
    fn batch_body(&self, req: &Request, max: usize) -> Result<Value, Response> {
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| self.bad_request(&format!("Invalid input JSON on line 1: {e}")))?;
        let n = body["inputs"]
            .as_array()
            .ok_or_else(|| self.bad_request("Invalid input JSON: inputs must be an array"))?
            .len();
        if n > max {
            return Err(self.bad_request(&format!(
                "Batch input limit exceeded: {n} inputs given, at most {max} are allowed"
            )));
        }
        Ok(body)
    }

    /// An object type named in an associations path (plural, singular or
    /// `0-1`-style).
    fn kind_of(&self, t: &str) -> Result<Kind, Response> {
        Kind::parse_any(t)
            .ok_or_else(|| self.bad_request(&format!("Unable to infer object type from: {t}")))
    }

    /// `POST /crm/v4/associations/{from}/{to}/batch/read`: per input id its
    /// associated records with their association types; ids without any
    /// are reported in `errors` (HTTP 207 Multi-Status).
    fn batch_read_associations(
        &self,
        st: &State,
        from: &str,
        to: &str,
        req: &Request,
    ) -> Result<Response, Response> {
        let (from, to) = (self.kind_of(from)?, self.kind_of(to)?);
        let body = self.batch_body(req, ASSOC_BATCH_MAX)?;
        let inputs = body["inputs"].as_array().expect("checked by batch_body");
        let started = chrono::Utc::now().timestamp_millis();
        let def = assoc_def(from, to);
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for input in inputs {
            let id = match &input["id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(self.bad_request("Invalid input JSON: every input needs an id")),
            };
            let found = match (def, id.parse::<u64>()) {
                (Some(_), Ok(n)) if st.store_ref(from).exists(n) => st.associated(from, n, to),
                _ => Vec::new(),
            };
            let Some(def) = def.filter(|_| !found.is_empty()) else {
                errors.push(json!({
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                    "message": format!("No {} is associated with {} {id}.", to.singular(), from.singular()),
                    "context": {"fromObjectId": [id], "fromObjectType": [from.singular()], "toObjectType": [to.singular()]},
                }));
                continue;
            };
            let mut result = json!({"from": {"id": id}, "to": v4_entries(&def, &found, 0)});
            if found.len() > V4_ASSOC_PAGE {
                result["paging"] = json!({"next": {"after": V4_ASSOC_PAGE.to_string(),
                    "link": format!("/crm/v4/objects/{}/{id}/associations/{}?after={V4_ASSOC_PAGE}", from.name(), to.name())}});
            }
            results.push(result);
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = json!({
            "status": "COMPLETE",
            "results": results,
            "startedAt": fmt_ms(started),
            "completedAt": fmt_ms(now),
        });
        let status = if errors.is_empty() {
            200
        } else {
            out["numErrors"] = json!(errors.len());
            out["errors"] = Value::Array(errors);
            207
        };
        Ok(Response::json(status, out.to_string().into_bytes()))
    }

    fn properties(&self, st: &mut State, kind: Kind) -> Result<Response, Response> {
        let store = st.store(kind);
        let results: Vec<Value> = store
            .props
            .iter()
            .enumerate()
            .map(|(i, p)| property_json(p, i))
            .collect();
        Ok(Response::json(
            200,
            json!({ "results": results }).to_string().into_bytes(),
        ))
    }

    fn search(&self, st: &mut State, kind: Kind, req: &Request) -> Result<Response, Response> {
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| self.bad_request(&format!("Invalid input JSON on line 1: {e}")))?;
        let store = st.store(kind);
        let q = SearchQuery::parse(&body, store).map_err(|m| self.bad_request(&m))?;
        if q.after + q.limit > SEARCH_WINDOW {
            return Err(self.bad_request(&format!(
                "Paging past {SEARCH_WINDOW} results is not supported (after={}, limit={})",
                q.after, q.limit
            )));
        }
        let mut ids = q.matching(store);
        let total = ids.len();
        if let Some((prop, desc)) = &q.sort {
            if prop == kind.modified_prop() {
                if *desc {
                    ids.reverse();
                }
            } else {
                let mut keyed: Vec<(Option<Key>, u64)> =
                    ids.iter().map(|id| (store.key(*id, prop), *id)).collect();
                keyed.sort_by(|a, b| {
                    let o = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
                    if *desc {
                        o.reverse()
                    } else {
                        o
                    }
                });
                ids = keyed.into_iter().map(|k| k.1).collect();
            }
        } else {
            ids.sort_unstable();
        }
        let requested: Vec<&str> = q.properties.iter().map(String::as_str).collect();
        let props = Self::wanted(store, requested);
        let mut out = Vec::with_capacity(q.limit * 900);
        out.extend_from_slice(format!("{{\"total\":{total},\"results\":[").as_bytes());
        for (i, id) in ids.iter().skip(q.after).take(q.limit).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            store.render(&mut out, *id, &props);
        }
        out.push(b']');
        if q.after + q.limit < total {
            let next = q.after + q.limit;
            out.extend_from_slice(
                format!(",\"paging\":{{\"next\":{{\"after\":\"{next}\"}}}}").as_bytes(),
            );
        }
        out.push(b'}');
        Ok(Response::json(200, out))
    }
}

impl Mock for HubSpotMock {
    type State = State;
    /// HubSpot's own fault bodies.
    const FAULT_KINDS: &'static [&'static str] = &[
        "429",
        "429_retry_after",
        "429_daily",
        "500",
        "503",
        "bad_token",
        "missing_scopes",
        "association_error",
        "cursor_loop",
    ];

    fn base(&self) -> &Base<State> {
        &self.base
    }

    fn fault(&self, kind: &str, req: &Request) -> Option<Response> {
        Some(match kind {
            "429" => self.rate_limited("TEN_SECONDLY_ROLLING", false),
            "429_retry_after" => self.rate_limited("TEN_SECONDLY_ROLLING", true),
            "429_daily" => self.rate_limited("DAILY", false),
            "500" => self.error(500, "INTERNAL_ERROR", "internal error"),
            "503" => self.error(503, "SERVICE_UNAVAILABLE", "Service Unavailable"),
            "bad_token" => self.unauthorized(),
            "missing_scopes" => self.missing_scopes(&req.path),
            // A v4 batch read that failed for some inputs for another reason
            // than their having no associations.
            "association_error" => Response::json(
                207,
                json!({"status": "COMPLETE", "results": [], "numErrors": 1, "errors": [{
                    "status": "error", "category": "INTERNAL_ERROR",
                    "subCategory": "crm.associations.READ_FAILED",
                    "message": "Unable to read associations, try again.",
                    "context": {}}]})
                .to_string()
                .into_bytes(),
            ),
            // A list whose `after` cursors go round: a, b, a, ...
            "cursor_loop" => {
                let next = if req.param("after") == Some("loop-a") {
                    "loop-b"
                } else {
                    "loop-a"
                };
                Response::json(
                    200,
                    json!({"results": [], "paging": {"next": {"after": next,
                        "link": format!("{}?after={next}", req.path)}}})
                    .to_string()
                    .into_bytes(),
                )
            }
            _ => return None,
        })
    }

    /// HubSpot's error body quoting the request's token: a 400
    /// VALIDATION_ERROR, or the rule's status (401: INVALID_AUTHENTICATION,
    /// 403: MISSING_SCOPES).
    fn echo(&self, _st: &mut State, fault: &Picked, req: &Request) -> Response {
        let status = fault.status.unwrap_or(400);
        let sent = sent_secrets(req);
        if fault.kind == "echo_secrets_cut" {
            return echo_cut(status, &sent);
        }
        let category = match status {
            401 => "INVALID_AUTHENTICATION",
            403 => "MISSING_SCOPES",
            s if s >= 500 => "INTERNAL_ERROR",
            _ => "VALIDATION_ERROR",
        };
        self.error(
            status,
            category,
            &format!(
                "Invalid input JSON on line 1: the request with {} was refused",
                echo_text(&sent)
            ),
        )
    }

    fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
        apply_action(st, action)
    }

    fn route(&self, st: &mut State, req: &Request) -> Response {
        // HubSpot's front end refuses longer URLs (airbyte#33976 saw 414s
        // past about 16,300 characters with wide property lists).
        if req.target_len > URL_MAX {
            return Response {
                status: 414,
                headers: vec![("Content-Type".into(), "text/html".into())],
                body: b"<html><body><h1>414 Request-URI Too Large</h1></body></html>".to_vec(),
            };
        }
        if req.method == "POST" && req.path == "/oauth/v3/token" {
            return self.oauth_token(st, req);
        }
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "));
        let auth_ok = bearer.is_some_and(|t| t == st.token);
        if !auth_ok {
            // An OAuth access token: valid until it expires.
            let issued = bearer.and_then(|t| st.oauth.as_ref()?.issued.get(t).copied());
            match issued {
                Some(until) if Instant::now() < until => {}
                Some(_) => {
                    return self.error(
                        401,
                        "EXPIRED_AUTHENTICATION",
                        "The OAuth token used to make this call expired 0 second(s) ago.",
                    )
                }
                None => return self.unauthorized(),
            }
        }
        if let Some(r) = self.spend(st) {
            return r;
        }
        let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
        let Some(parts) = numbered(parts) else {
            return self.error(
                404,
                "OBJECT_NOT_FOUND",
                &format!(
                    "No route for {} {}: unknown API version",
                    req.method, req.path
                ),
            );
        };
        let resp = match (req.method.as_str(), parts.as_slice()) {
            ("GET", ["crm", "v3", "objects", t]) => self.with_kind(t, |k| self.list(st, k, req)),
            ("GET", ["crm", "v3", "objects", t, id]) => {
                self.with_kind(t, |k| self.read(st, k, id, req))
            }
            ("POST", ["crm", "v3", "objects", t, "search"]) => {
                if let Some(r) = self.search_rate(st) {
                    return r;
                }
                self.with_kind(t, |k| self.search(st, k, req))
            }
            ("POST", ["crm", "v3", "objects", t, "merge"]) => {
                self.with_kind(t, |k| self.merge(st, k, req))
            }
            ("POST", ["crm", "v3", "objects", t, "batch", "read"]) => {
                self.with_kind(t, |k| self.batch_read(st, k, req))
            }
            ("GET", ["crm", "v3", "properties", t]) => {
                self.with_kind(t, |k| self.properties(st, k))
            }
            ("GET", ["crm", "v4", "objects", from, id, "associations", to]) => {
                self.associations_of(st, from, id, to, req)
            }
            ("POST", ["crm", "v4", "associations", from, to, "batch", "read"]) => {
                self.batch_read_associations(st, from, to, req)
            }
            _ => Err(self.error(
                404,
                "OBJECT_NOT_FOUND",
                &format!("No route for {} {}", req.method, req.path),
            )),
        };
        let r = resp.unwrap_or_else(|e| e);
        if r.status == 200 || r.status == 207 {
            let l = &st.limits;
            let (max, left, interval) = match l.window {
                Some((max, every)) => (max, max.saturating_sub(l.recent.len()), every.as_millis()),
                // No budget set: an allowance no run reaches (tests and
                // benchmarks measure the engine; /_mock/limits sets a real one).
                None => (100_000, 99_999, 10_000),
            };
            let r = r
                .with_header("X-HubSpot-RateLimit-Max", max.to_string())
                .with_header("X-HubSpot-RateLimit-Remaining", left.to_string())
                .with_header(
                    "X-HubSpot-RateLimit-Interval-Milliseconds",
                    interval.to_string(),
                );
            match l.daily {
                Some(d) => r
                    .with_header("X-HubSpot-RateLimit-Daily", d.to_string())
                    .with_header(
                        "X-HubSpot-RateLimit-Daily-Remaining",
                        d.saturating_sub(l.daily_used).to_string(),
                    ),
                None => r,
            }
        } else {
            r
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
            ("POST", [t, "upsert"]) => match Kind::parse(t) {
                Some(_) => apply_action(
                    st,
                    &json!({"op": "upsert", "object": t, "records": body["records"], "timestamp_ms": body["timestamp_ms"]}),
                ),
                None => Err(format!("unknown object {t}")),
            },
            ("POST", [t, "archive"]) => apply_action(
                st,
                &json!({"op": "archive", "object": t, "ids": body["ids"], "timestamp_ms": body["timestamp_ms"]}),
            ),
            // Gone without a trace: a GDPR erasure, or an archived record
            // past the 90-day restore window.
            ("POST", [t, "purge"]) => {
                apply_action(st, &json!({"op": "purge", "object": t, "ids": body["ids"]}))
            }
            // A search result at a stale place: sorted and filtered by its
            // indexed time, shown with a later one (estuary/connectors#2210).
            ("POST", [t, "stale_sort"]) => match Kind::parse(t) {
                Some(k) => {
                    let id = body["id"].as_str().and_then(|v| v.parse::<u64>().ok());
                    match (id, body["shown_ms"].as_i64()) {
                        (Some(id), Some(ms)) if st.store(k).show_stale(id, ms) => Ok(json!({})),
                        _ => Err("id (a live record's, as a string) and shown_ms needed".into()),
                    }
                }
                None => Err(format!("unknown object {t}")),
            },
            // Install an OAuth app: `{"client_id", "client_secret",
            // "refresh_token", "ttl_ms"?, "rotate"?}`.
            ("POST", ["oauth"]) => {
                let text = |k: &str| body[k].as_str().map(str::to_owned);
                match (
                    text("client_id"),
                    text("client_secret"),
                    text("refresh_token"),
                ) {
                    (Some(client_id), Some(client_secret), Some(refresh_token)) => {
                        st.oauth = Some(OAuthApp {
                            client_id,
                            client_secret,
                            refresh_token,
                            rotate: body["rotate"].as_bool().unwrap_or(false),
                            ttl: Duration::from_millis(
                                body["ttl_ms"].as_u64().unwrap_or(1_800_000),
                            ),
                            issued: BTreeMap::new(),
                            refreshes: 0,
                        });
                        Ok(json!({}))
                    }
                    _ => Err("client_id, client_secret and refresh_token needed".into()),
                }
            }
            // Every access token issued expires now.
            ("POST", ["oauth", "expire"]) => match st.oauth.as_mut() {
                Some(app) => {
                    let now = Instant::now();
                    app.issued.values_mut().for_each(|t| *t = now);
                    Ok(json!({"refreshes": app.refreshes}))
                }
                None => Err("no OAuth app".into()),
            },
            ("GET", ["oauth"]) => match st.oauth.as_ref() {
                Some(app) => {
                    Ok(json!({"refreshes": app.refreshes, "refresh_token": app.refresh_token}))
                }
                None => Err("no OAuth app".into()),
            },
            // The portal's API budget: `{"ten_secondly": N, "interval_ms"?,
            // "daily": D, "daily_used"?}` (absent or 0: no limit).
            ("POST", ["limits"]) => {
                let n = |k: &str| body[k].as_u64().filter(|v| *v > 0);
                st.limits = Limits {
                    window: n("ten_secondly").map(|m| {
                        (
                            m as usize,
                            Duration::from_millis(n("interval_ms").unwrap_or(10_000)),
                        )
                    }),
                    recent: VecDeque::new(),
                    daily: n("daily"),
                    daily_used: body["daily_used"].as_u64().unwrap_or(0),
                };
                Ok(json!({}))
            }
            // HubSpot recomputes a calculated property: its value changes,
            // the record's modification time does not.
            ("POST", [t, "calculated"]) => match Kind::parse(t) {
                Some(k) => {
                    let store = st.store(k);
                    let id = body["id"].as_str().and_then(|v| v.parse::<u64>().ok());
                    let prop = body["property"].as_str().unwrap_or_default();
                    match id {
                        Some(id) if store.prop(prop).is_some_and(|p| p.calculated) => {
                            let v = body["value"].as_str().map(str::to_owned);
                            if store.recompute(id, prop, v) {
                                Ok(json!({}))
                            } else {
                                Err(format!("no live record {id}"))
                            }
                        }
                        _ => Err("id (a string) and a calculated property needed".into()),
                    }
                }
                None => Err(format!("unknown object {t}")),
            },
            ("POST", [t, "properties"]) => add_property(st, t, body),
            ("POST", ["token"]) => match body["token"].as_str() {
                Some(t) => {
                    st.token = t.to_owned();
                    Ok(json!({}))
                }
                None => Err("token missing".into()),
            },
            _ => return None,
        })
    }

    fn stats_extra(st: &State) -> Vec<(&'static str, Value)> {
        let live: BTreeMap<_, _> = st
            .stores
            .iter()
            .map(|s| (s.kind().name(), s.live_count()))
            .collect();
        vec![("live", json!(live))]
    }
}

/// The date versions the mock serves besides the numbered paths.
pub const DATE_VERSIONS: &[&str] = &["2026-03"];

/// A date-versioned path (`crm/objects/2026-03/contacts`,
/// `crm/properties/2026-03/…`, `crm/associations/2026-03/…`, and the
/// per-record associations `crm/objects/2026-03/{from}/{id}/associations/{to}`)
/// as its numbered twin, which answers the same; numbered paths as they
/// are; None for a date the mock does not know.
fn numbered(parts: Vec<&str>) -> Option<Vec<&str>> {
    let dated = |d: &str| {
        d.len() == 7 && d.as_bytes()[4] == b'-' && d.bytes().filter(u8::is_ascii_digit).count() == 6
    };
    match parts.as_slice() {
        ["crm", area, d, rest @ ..] if dated(d) => {
            if !DATE_VERSIONS.contains(d) {
                return None;
            }
            let head: &[&str] = match (*area, rest) {
                ("objects", [_, _, "associations", _]) => &["crm", "v4", "objects"],
                ("objects", _) => &["crm", "v3", "objects"],
                ("properties", _) => &["crm", "v3", "properties"],
                ("associations", _) => &["crm", "v4", "associations"],
                _ => return None,
            };
            Some(head.iter().copied().chain(rest.iter().copied()).collect())
        }
        _ => Some(parts),
    }
}

/// v4 association entries for `ids` (the associated records from position
/// `offset` on): the first of all (offset 0) is the primary.
fn v4_entries(def: &crate::data::AssocDef, ids: &[u64], offset: usize) -> Vec<Value> {
    ids.iter()
        .take(if offset == 0 {
            V4_ASSOC_PAGE
        } else {
            usize::MAX
        })
        .enumerate()
        .map(|(i, t)| {
            let mut types = Vec::new();
            if let (0, 0, Some(p)) = (offset, i, def.primary) {
                types.push(json!({"category": "HUBSPOT_DEFINED", "typeId": p, "label": "Primary"}));
            }
            types.push(
                json!({"category": "HUBSPOT_DEFINED", "typeId": def.unlabeled, "label": null}),
            );
            json!({"toObjectId": t, "associationTypes": types})
        })
        .collect()
}

fn property_json(p: &PropDef, order: usize) -> Value {
    let options: Vec<Value> = p
        .options
        .iter()
        .enumerate()
        .map(|(i, o)| json!({"label": o, "value": o, "description": "", "displayOrder": i, "hidden": false}))
        .collect();
    let mut v = json!({
        "updatedAt": "2024-03-01T12:00:00.000Z",
        "createdAt": "2019-08-06T02:41:52.000Z",
        "name": p.name,
        "label": p.label,
        "type": p.kind,
        "fieldType": p.field_type,
        "description": "",
        "groupName": p.group,
        "options": options,
        "displayOrder": if p.hubspot_defined { -1 } else { order as i64 },
        "calculated": p.calculated,
        "externalOptions": false,
        "hasUniqueValue": false,
        "hidden": false,
        "modificationMetadata": {
            "archivable": !p.hubspot_defined,
            "readOnlyDefinition": p.hubspot_defined,
            "readOnlyValue": matches!(p.name.as_str(), "hs_object_id" | "createdate" | "lastmodifieddate" | "hs_lastmodifieddate"),
        },
        "formField": true,
        "dataSensitivity": "non_sensitive",
    });
    if p.hubspot_defined {
        v["hubspotDefined"] = json!(true);
    }
    v
}

/// Run an admin action (`upsert` or `archive`), from the admin API or a hook.
fn apply_action(st: &mut State, action: &Value) -> Result<Value, String> {
    let object = action["object"].as_str().unwrap_or("");
    let kind = Kind::parse(object).ok_or_else(|| format!("unknown object {object:?}"))?;
    let store = st.store(kind);
    let ts = store.change_time(action["timestamp_ms"].as_i64());
    match action["op"].as_str() {
        Some("upsert") => {
            let records = action["records"]
                .as_array()
                .ok_or("records must be an array")?;
            let mut out = Vec::new();
            for r in records {
                let id = match &r["id"] {
                    Value::Null => None,
                    Value::String(s) => {
                        Some(s.parse::<u64>().map_err(|_| format!("bad id {s:?}"))?)
                    }
                    Value::Number(n) => n.as_u64(),
                    other => return Err(format!("bad id {other}")),
                };
                let props = r["properties"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| {
                                let v = match v {
                                    Value::Null => None,
                                    Value::String(s) => Some(s.clone()),
                                    other => Some(other.to_string()),
                                };
                                (k.clone(), v)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let assoc = parse_associations(kind, &r["associations"])?;
                let id = store.upsert(id, props, ts);
                for (to, ids) in assoc {
                    store.set_associations(id, to, ids);
                }
                out.push(json!({"id": id.to_string(), "updatedAt": crate::data::fmt_ms(ts)}));
            }
            Ok(json!({ "records": out }))
        }
        Some("archive") => {
            let archived: Vec<String> = action_ids(action)?
                .into_iter()
                .filter(|id| store.archive(*id, ts))
                .map(|id| id.to_string())
                .collect();
            Ok(json!({ "archived": archived }))
        }
        Some("purge") => {
            let purged: Vec<String> = action_ids(action)?
                .into_iter()
                .filter(|id| store.purge(*id))
                .map(|id| id.to_string())
                .collect();
            Ok(json!({ "purged": purged }))
        }
        other => Err(format!("unknown op {other:?}")),
    }
}

/// An action's `"ids"`: numbers or strings of digits (others skipped).
fn action_ids(action: &Value) -> Result<Vec<u64>, String> {
    let ids = action["ids"].as_array().ok_or("ids must be an array")?;
    Ok(ids
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => s.parse::<u64>().ok(),
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .collect())
}

/// An upserted record's `"associations": {"companies": ["12"], …}`: the
/// associations of each type named replace the record's (the first listed is
/// the primary one); absent or null, the record keeps its own.
fn parse_associations(kind: Kind, v: &Value) -> Result<Vec<(Kind, Vec<u64>)>, String> {
    let map = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m,
        other => return Err(format!("associations must be an object, not {other}")),
    };
    let mut out = Vec::new();
    for (t, ids) in map {
        let to = Kind::parse_any(t)
            .filter(|to| assoc_def(kind, *to).is_some())
            .ok_or_else(|| format!("{} have no associations of type {t:?}", kind.name()))?;
        let ids = ids
            .as_array()
            .ok_or_else(|| format!("associations.{t} must be an array of ids"))?
            .iter()
            .map(|v| match v {
                Value::String(s) => s.parse::<u64>().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
            .map(|id| id.ok_or_else(|| format!("associations.{t} holds a bad id")))
            .collect::<Result<Vec<u64>, String>>()?;
        out.push((to, ids));
    }
    Ok(out)
}

fn add_property(st: &mut State, t: &str, body: &Value) -> Result<Value, String> {
    let kind = Kind::parse(t).ok_or_else(|| format!("unknown object {t}"))?;
    let name = body["name"].as_str().ok_or("name missing")?.to_owned();
    let store = st.store(kind);
    if store.prop(&name).is_some() {
        return Err(format!("property {name} exists"));
    }
    let def = PropDef {
        label: body["label"].as_str().unwrap_or(&name).to_owned(),
        kind: body["type"].as_str().unwrap_or("string").to_owned(),
        field_type: body["fieldType"].as_str().unwrap_or("text").to_owned(),
        group: body["groupName"].as_str().unwrap_or("custom").to_owned(),
        options: body["options"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["value"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        hubspot_defined: false,
        calculated: body["calculated"].as_bool().unwrap_or(false),
        name,
    };
    let v = property_json(&def, store.props.len());
    store.props.push(def);
    Ok(v)
}

#[derive(Debug)]
struct Filter {
    prop: String,
    op: String,
    value: Option<String>,
    high: Option<String>,
    values: Vec<String>,
}

#[derive(Debug)]
struct SearchQuery {
    groups: Vec<Vec<Filter>>,
    sort: Option<(String, bool)>,
    properties: Vec<String>,
    limit: usize,
    after: usize,
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl SearchQuery {
    fn parse(body: &Value, store: &Store) -> Result<SearchQuery, String> {
        let mut groups = Vec::new();
        let mut n_filters = 0;
        if let Some(gs) = body.get("filterGroups").filter(|v| !v.is_null()) {
            let gs = gs.as_array().ok_or("filterGroups must be an array")?;
            if gs.len() > MAX_GROUPS {
                return Err(format!(
                    "Too many filter groups ({}); the limit is {MAX_GROUPS}",
                    gs.len()
                ));
            }
            for g in gs {
                let fs = g["filters"].as_array().cloned().unwrap_or_default();
                if fs.len() > MAX_FILTERS_PER_GROUP {
                    return Err(format!(
                        "Too many filters in a group ({}); the limit is {MAX_FILTERS_PER_GROUP}",
                        fs.len()
                    ));
                }
                n_filters += fs.len();
                let mut group = Vec::new();
                for f in fs {
                    let prop = f["propertyName"]
                        .as_str()
                        .ok_or("filter without propertyName")?
                        .to_owned();
                    if store.prop(&prop).is_none() {
                        return Err(format!(
                            "There was a problem with the request: property {prop} does not exist"
                        ));
                    }
                    let op = f["operator"].as_str().unwrap_or("EQ").to_ascii_uppercase();
                    const OPS: &[&str] = &[
                        "EQ",
                        "NEQ",
                        "LT",
                        "LTE",
                        "GT",
                        "GTE",
                        "BETWEEN",
                        "IN",
                        "NOT_IN",
                        "HAS_PROPERTY",
                        "NOT_HAS_PROPERTY",
                        "CONTAINS_TOKEN",
                        "NOT_CONTAINS_TOKEN",
                    ];
                    if !OPS.contains(&op.as_str()) {
                        return Err(format!("Unknown filter operator {op}"));
                    }
                    group.push(Filter {
                        prop,
                        op,
                        value: as_text(&f["value"]),
                        high: as_text(&f["highValue"]),
                        values: f["values"]
                            .as_array()
                            .map(|a| a.iter().filter_map(as_text).collect())
                            .unwrap_or_default(),
                    });
                }
                groups.push(group);
            }
        }
        if n_filters > MAX_FILTERS {
            return Err(format!(
                "Too many filters ({n_filters}); the limit is {MAX_FILTERS}"
            ));
        }
        let sorts = body["sorts"].as_array().cloned().unwrap_or_default();
        if sorts.len() > 1 {
            return Err("Only one sort is allowed".into());
        }
        let sort = match sorts.first() {
            None => None,
            Some(Value::String(s)) => Some(match s.strip_prefix('-') {
                Some(p) => (p.to_owned(), true),
                None => (s.clone(), false),
            }),
            Some(o) => Some((
                o["propertyName"]
                    .as_str()
                    .ok_or("sort without propertyName")?
                    .to_owned(),
                o["direction"]
                    .as_str()
                    .is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING")),
            )),
        };
        let properties = body["properties"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let limit = match &body["limit"] {
            Value::Null => 10,
            v => match v.as_u64() {
                Some(n) if (1..=SEARCH_MAX as u64).contains(&n) => n as usize,
                _ => return Err(format!("limit must be between 1 and {SEARCH_MAX}, got {v}")),
            },
        };
        let after = match &body["after"] {
            Value::Null => 0,
            Value::String(s) if s.is_empty() => 0,
            Value::String(s) => s
                .parse::<usize>()
                .map_err(|_| format!("Invalid after: {s}"))?,
            Value::Number(n) => n.as_u64().ok_or("Invalid after")? as usize,
            other => return Err(format!("Invalid after: {other}")),
        };
        Ok(SearchQuery {
            groups,
            sort,
            properties,
            limit,
            after,
        })
    }

    /// Live ids matching any filter group, in modification-time order.
    fn matching(&self, store: &Store) -> Vec<u64> {
        let mp = store.kind().modified_prop();
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        if self.groups.len() == 1 {
            // Narrow the scan with the modification-time bounds of the one group.
            for f in &self.groups[0] {
                if f.prop != mp {
                    continue;
                }
                let v = f.value.as_deref().and_then(parse_time);
                let h = f.high.as_deref().and_then(parse_time);
                match (f.op.as_str(), v) {
                    ("GTE", Some(v)) => lo = lo.max(v),
                    ("GT", Some(v)) => lo = lo.max(v.saturating_add(1)),
                    ("LTE", Some(v)) => hi = hi.min(v),
                    ("LT", Some(v)) => hi = hi.min(v.saturating_sub(1)),
                    ("EQ", Some(v)) => {
                        lo = lo.max(v);
                        hi = hi.min(v);
                    }
                    ("BETWEEN", Some(v)) => {
                        lo = lo.max(v);
                        if let Some(h) = h {
                            hi = hi.min(h);
                        }
                    }
                    _ => {}
                }
            }
        }
        store
            .ids_modified_between(lo, hi)
            .filter(|id| {
                self.groups.is_empty()
                    || self
                        .groups
                        .iter()
                        .any(|g| g.iter().all(|f| f.matches(store, *id)))
            })
            .collect()
    }
}

impl Filter {
    fn matches(&self, store: &Store, id: u64) -> bool {
        let raw = store.value(id, &self.prop);
        let has = raw.as_deref().is_some_and(|v| !v.is_empty());
        // The modification time compares as indexed (a stale result shows
        // a later one).
        let key = if self.prop == store.kind().modified_prop() {
            store.key(id, &self.prop)
        } else {
            raw.as_deref().and_then(|v| store.key_of(&self.prop, v))
        };
        let arg = |v: &Option<String>| v.as_deref().and_then(|v| store.key_of(&self.prop, v));
        let cmp = |o: &Option<String>| -> Option<std::cmp::Ordering> {
            let (a, b) = (key.as_ref()?, arg(o)?);
            a.partial_cmp(&b)
        };
        use std::cmp::Ordering::*;
        match self.op.as_str() {
            "HAS_PROPERTY" => has,
            "NOT_HAS_PROPERTY" => !has,
            "EQ" => cmp(&self.value) == Some(Equal),
            "NEQ" => cmp(&self.value) != Some(Equal),
            "LT" => cmp(&self.value) == Some(Less),
            "LTE" => matches!(cmp(&self.value), Some(Less | Equal)),
            "GT" => cmp(&self.value) == Some(Greater),
            "GTE" => matches!(cmp(&self.value), Some(Greater | Equal)),
            "BETWEEN" => {
                matches!(cmp(&self.value), Some(Greater | Equal))
                    && matches!(cmp(&self.high), Some(Less | Equal))
            }
            "IN" | "NOT_IN" => {
                let found = self
                    .values
                    .iter()
                    .any(|v| key.is_some() && store.key_of(&self.prop, v) == key);
                found == (self.op == "IN")
            }
            "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
                let token = self
                    .value
                    .as_deref()
                    .unwrap_or("")
                    .trim_matches('*')
                    .to_lowercase();
                let found = raw
                    .as_deref()
                    .is_some_and(|v| v.to_lowercase().contains(&token));
                found == (self.op == "CONTAINS_TOKEN")
            }
            _ => false,
        }
    }
}
