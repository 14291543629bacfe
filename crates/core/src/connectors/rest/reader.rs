//! Paging through one stream of a `rest` source for one run.
//!
//! A run reads one window: from the stored watermark less the lookback
//! (nothing before it on a full run) to the run's start. When the API
//! takes an end of window (`incremental.until`), pages keep to that fixed
//! window while records keep changing; either way the watermark stored is
//! the newest modification time seen, never past the run's start, so a
//! record changed while the run pages is read again by the next run.
//! Then, when the spec has a deleted-records listing, that listing over
//! the same window. Records repeat across pages and runs; the engine keeps
//! the newest per id.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::spec::{Incremental, Paging, Path, Request, Stream, TimeFormat, WindowInject};
use super::{Call, Rest};
use crate::error::{CrmError, ErrorKind, Result};
use crate::paging::Cursors;
use crate::source::{BoxFuture, Field, IdSource, Page, PageSource, ReadRequest, Record, SyncMode};
use crate::types::parse_datetime;

/// Where a listing goes next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Next {
    First,
    Cursor(String),
    Url(String),
    Offset(u64),
    Page(u64),
    End,
}

/// A run's window as it goes into a request: query parameters, members
/// of a JSON body, or a header.
#[derive(Debug, Default)]
pub struct Window {
    pub query: Vec<(String, String)>,
    pub body: Option<Vec<(Path, String)>>,
    pub header: Option<(String, String)>,
}

/// Pages of one request with one paging style.
pub struct Lister<'a> {
    api: &'a Rest<'a>,
    request: &'a Request,
    paging: &'a Paging,
    records_path: Path,
    /// For messages: `stream persons`, `the fields of persons`.
    label: String,
    path: Option<String>,
    params: Vec<(String, String)>,
    pub next: Next,
    cursors: Cursors,
    /// The last request's URL (relative next-page links are read against
    /// it) and its server's date.
    last_url: Option<url::Url>,
    pub last_date: Option<DateTime<Utc>>,
    /// Pages in a row that were empty yet named a next page, and what the
    /// last page held: an API paging on without end is stopped.
    empty_run: u32,
    last_page: Option<u64>,
    /// Pages this listing has fetched.
    pages: u64,
}

/// Empty pages in a row that still name a next page before a listing is
/// taken for one that never ends.
const MAX_EMPTY_PAGES: u32 = 100;

impl<'a> Lister<'a> {
    pub fn new(
        api: &'a Rest<'a>,
        request: &'a Request,
        paging: &'a Paging,
        records_path: Path,
        label: String,
    ) -> Lister<'a> {
        Lister {
            api,
            request,
            paging,
            records_path,
            label,
            path: None,
            params: request.params.clone(),
            next: Next::First,
            cursors: Cursors::default(),
            last_url: None,
            last_date: None,
            empty_run: 0,
            last_page: None,
            pages: 0,
        }
    }

    /// The listing of stream `s`'s own request; `label` names it in
    /// messages.
    fn of_stream(api: &'a Rest<'a>, s: &'a Stream, label: String) -> Lister<'a> {
        Lister::new(api, &s.request, &s.paging, s.records_path.clone(), label)
    }

    /// The request's path and parameters replaced (a deleted-records
    /// listing).
    fn with(mut self, path: Option<&str>, params: &[(String, String)]) -> Self {
        self.path = path.map(str::to_owned);
        for (k, v) in params {
            self.params.retain(|(q, _)| q != k);
            self.params.push((k.clone(), v.clone()));
        }
        self
    }

    /// The next page's records and the total the API reported, or None
    /// when the listing is over; `w` goes into the request.
    pub async fn page(&mut self, w: &Window) -> Result<Option<(Vec<Box<RawValue>>, Option<u64>)>> {
        if self.next == Next::End {
            return Ok(None);
        }
        // The base URL first: an OAuth token may name the account's own
        // host, which relative and saved links are read against.
        self.api.prepare().await?;
        let url = match &self.next {
            Next::End => return Ok(None),
            Next::Url(u) => {
                self.api
                    .same_origin("the next-page link", u, self.last_url.as_ref())?
            }
            _ => {
                let mut url = self
                    .api
                    .url(self.path.as_deref().unwrap_or(&self.request.path))?;
                {
                    let mut q = url.query_pairs_mut();
                    for (k, v) in self.params.iter().chain(&w.query) {
                        q.append_pair(k, v);
                    }
                    if let (Some(n), Some(p)) =
                        (self.request.page_size, &self.request.page_size_param)
                    {
                        q.append_pair(p, &n.to_string());
                    }
                    match (&self.next, self.paging) {
                        (Next::Cursor(c), Paging::Cursor { cursor_param, .. }) => {
                            q.append_pair(cursor_param, c);
                        }
                        (Next::Offset(o), Paging::Offset { offset_param, .. }) => {
                            q.append_pair(offset_param, &o.to_string());
                        }
                        (Next::Page(n), Paging::PageNumber { page_param, .. }) => {
                            q.append_pair(page_param, &n.to_string());
                        }
                        (Next::First, Paging::Offset { offset_param, .. }) => {
                            q.append_pair(offset_param, "0");
                        }
                        (
                            Next::First,
                            Paging::PageNumber {
                                page_param,
                                start_page,
                                ..
                            },
                        ) => {
                            q.append_pair(page_param, &start_page.to_string());
                        }
                        _ => {}
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                url
            }
        };
        let mut body = self.request.body.clone();
        if w.body.is_some() && body.is_none() {
            body = Some(Value::Object(Default::default()));
        }
        if let (Some(b), Some(bw)) = (body.as_mut(), &w.body) {
            for (p, v) in bw {
                p.set(b, Value::String(v.clone()));
            }
        }
        let mut headers = self.request.headers.clone();
        headers.extend(w.header.clone());
        let call = Call {
            method: self.request.method,
            url,
            headers,
            body,
        };
        let first = matches!(self.next, Next::First);
        let Some((body, h)) = self.api.send(&self.label, &call).await? else {
            // Not Modified answers the first request of a window; later
            // pages of one cannot be "unchanged".
            if !first {
                return Err(CrmError::bad_response(format!(
                    "{} answered 304 Not Modified to a later page of {}",
                    self.api.what, self.label
                )));
            }
            self.next = Next::End;
            return Ok(Some((Vec::new(), None)));
        };
        self.last_date = Rest::server_date(&h);
        self.last_url = Some(call.url.clone());
        let doc = Doc::parse(&self.api.what, &call.endpoint(), &body)?;
        let items: Vec<Box<RawValue>> = match doc.raw(&self.records_path) {
            None => Vec::new(),
            Some(r) if r.get() == "null" => Vec::new(),
            Some(r) => serde_json::from_str(r.get()).map_err(|_| {
                CrmError::bad_response(format!(
                    "{} sent no list of records at {} for {} (found {})",
                    self.api.what,
                    self.records_path,
                    self.label,
                    kind(r.get())
                ))
                .with_hint("Check the spec's records.path against a response of this endpoint.")
            })?,
        };
        let n = items.len() as u64;
        let num = |p: &Option<Path>| {
            p.as_ref()
                .and_then(|p| doc.value(p))
                .as_ref()
                .and_then(as_u64)
        };
        // true/false, "true"/"false", 1/0; anything else says nothing.
        let more = |p: &Option<Path>| match p.as_ref().and_then(|p| doc.value(p))? {
            Value::Bool(b) => Some(b),
            Value::String(t) if t == "true" || t == "1" => Some(true),
            Value::String(t) if t == "false" || t == "0" => Some(false),
            Value::Number(n) => n.as_u64().filter(|n| *n <= 1).map(|n| n == 1),
            _ => None,
        };
        let mut total = None;
        let next = match self.paging {
            Paging::None => Next::End,
            Paging::Cursor { cursor_path, .. } => match doc.value(cursor_path) {
                Some(Value::String(c)) if !c.is_empty() => Next::Cursor(c),
                // A number as written (exact past 64 bits).
                Some(Value::Number(_)) => doc
                    .raw(cursor_path)
                    .map_or(Next::End, |r| Next::Cursor(r.get().trim().to_owned())),
                _ => Next::End,
            },
            Paging::NextUrl { next_url_path } => match doc.value(next_url_path) {
                Some(Value::String(u)) if !u.is_empty() => Next::Url(u),
                _ => Next::End,
            },
            Paging::LinkHeader { rel } => match link(&h, rel) {
                Some(u) => Next::Url(u),
                None => Next::End,
            },
            Paging::Offset {
                total_path,
                has_more_path,
                ..
            } => {
                let at = match self.next {
                    Next::Offset(o) => o,
                    _ => 0,
                } + n;
                total = num(total_path);
                // A short page is no end: APIs cap page sizes silently.
                let ended =
                    n == 0 || more(has_more_path) == Some(false) || total.is_some_and(|t| at >= t);
                if ended {
                    Next::End
                } else {
                    Next::Offset(at)
                }
            }
            Paging::PageNumber {
                start_page,
                total_pages_path,
                has_more_path,
                ..
            } => {
                let page = match self.next {
                    Next::Page(p) => p,
                    _ => *start_page,
                };
                let pages = num(total_pages_path);
                let last = pages.map(|t| {
                    if *start_page == 0 {
                        t.saturating_sub(1)
                    } else {
                        t
                    }
                });
                let ended =
                    n == 0 || more(has_more_path) == Some(false) || last.is_some_and(|l| page >= l);
                if ended {
                    Next::End
                } else {
                    Next::Page(page + 1)
                }
            }
        };
        // Paging that goes on without records, or serves one page again,
        // would never end.
        self.pages += 1;
        if n == 0 {
            if next != Next::End {
                self.empty_run += 1;
                if self.empty_run >= MAX_EMPTY_PAGES {
                    return Err(CrmError::bad_response(format!(
                        "{} sent {MAX_EMPTY_PAGES} empty pages of {} in a row, each naming a next one; stopping instead of paging forever",
                        self.api.what, self.label
                    ))
                    .with_hint("Check the spec's paging: how does this API say a listing is over?"));
                }
            }
        } else {
            self.empty_run = 0;
            let mut hasher = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(
                &items.iter().map(|r| r.get()).collect::<Vec<_>>(),
                &mut hasher,
            );
            let this = std::hash::Hasher::finish(&hasher);
            if self.last_page == Some(this) {
                // The second page the first again: the API ignores the
                // paging parameter. Later: asked past the end, the API
                // answered with its last page again, already read.
                if self.pages == 2 {
                    return Err(CrmError::bad_response(format!(
                        "{} sent the same page of {} twice in a row; stopping instead of paging forever",
                        self.api.what, self.label
                    ))
                    .with_hint("Check the spec's paging parameter: the API seems to ignore it."));
                }
                self.next = Next::End;
                return Ok(Some((Vec::new(), total)));
            }
            self.last_page = Some(this);
        }
        // A link is checked and cleaned as it comes (on the base's origin,
        // read against this request, without an echoed API key): what a
        // checkpoint keeps holds no credential.
        let next = match next {
            Next::Url(u) => Next::Url(
                self.api
                    .same_origin("the next-page link", &u, Some(&call.url))?
                    .to_string(),
            ),
            other => other,
        };
        // A cursor or link that comes back would page forever.
        if let Next::Cursor(c) | Next::Url(c) = &next {
            self.cursors.follow(
                &format!("{}'s next page of {}", self.api.what, self.label),
                c,
            )?;
        }
        self.next = next;
        Ok(Some((items, total)))
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(_) => "a number",
        None => "nothing",
    }
}

/// An object's members, their values left unread: keys borrowed from the
/// text unless they hold escapes.
enum Members<'a> {
    Borrowed(BTreeMap<&'a str, &'a RawValue>),
    Owned(BTreeMap<String, &'a RawValue>),
}

impl<'a> Members<'a> {
    fn parse(text: &'a str) -> Option<Members<'a>> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(text)
            .map(Members::Borrowed)
            .or_else(|_| serde_json::from_str(text).map(Members::Owned))
            .ok()
    }

    fn get(&self, k: &str) -> Option<&'a RawValue> {
        match self {
            Members::Borrowed(m) => m.get(k).copied(),
            Members::Owned(m) => m.get(k).copied(),
        }
    }
}

/// The value under member or index `k` of `r`.
fn child<'a>(r: &'a RawValue, k: &str) -> Option<&'a RawValue> {
    let t = r.get();
    if t.trim_start().starts_with('[') {
        let v: Vec<&'a RawValue> = serde_json::from_str(t).ok()?;
        return v.get(k.parse::<usize>().ok()?).copied();
    }
    Members::parse(t)?.get(k)
}

/// A JSON text read only as deep as asked: a page's list of records is
/// kept as text (each record's `_raw` exactly as received), and only the
/// members a spec names are parsed.
pub struct Doc<'a> {
    whole: &'a RawValue,
    top: Option<Members<'a>>,
}

impl<'a> Doc<'a> {
    /// The body of a response from `endpoint` of `vendor`: the whole text
    /// is checked to be JSON (a malformed or truncated one is 08P01).
    pub fn parse(vendor: &str, endpoint: &str, text: &'a [u8]) -> Result<Doc<'a>> {
        let whole: &'a RawValue = crate::http::parse_json(vendor, endpoint, text)?;
        Ok(Doc::of(whole))
    }

    fn of(whole: &'a RawValue) -> Doc<'a> {
        Doc {
            top: Members::parse(whole.get()),
            whole,
        }
    }

    pub fn raw(&self, p: &Path) -> Option<&'a RawValue> {
        let Some((first, rest)) = p.0.split_first() else {
            return Some(self.whole);
        };
        let mut cur = match &self.top {
            Some(m) => m.get(first)?,
            None => child(self.whole, first)?,
        };
        for k in rest {
            cur = child(cur, k)?;
        }
        Some(cur)
    }

    pub fn value(&self, p: &Path) -> Option<Value> {
        self.raw(p).and_then(|r| serde_json::from_str(r.get()).ok())
    }
}

/// The URL of the `rel` link in RFC 8288 `Link` headers (commas inside
/// `<...>` and quoted parameters are the URL's and the value's own).
pub fn link(h: &reqwest::header::HeaderMap, rel: &str) -> Option<String> {
    for v in h.get_all(reqwest::header::LINK) {
        let Ok(s) = v.to_str() else { continue };
        let mut parts = Vec::new();
        let (mut start, mut in_url, mut in_quote) = (0, false, false);
        for (i, c) in s.char_indices() {
            match c {
                '<' if !in_quote => in_url = true,
                '>' if !in_quote => in_url = false,
                '"' if !in_url => in_quote = !in_quote,
                ',' if !in_url && !in_quote => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        for part in parts {
            let part = part.trim();
            let Some(end) = part.find('>') else { continue };
            let Some(u) = part.strip_prefix('<').map(|p| &p[..end - 1]) else {
                continue;
            };
            let has = part[end + 1..].split(';').any(|b| {
                let b = b.trim();
                b.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|x| x == rel))
                    .unwrap_or(false)
            });
            if has {
                return Some(u.to_owned());
            }
        }
    }
    None
}

/// A time as the API writes it.
pub fn format_time(t: DateTime<Utc>, f: &TimeFormat) -> String {
    match f {
        TimeFormat::Rfc3339 => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        TimeFormat::EpochSeconds => t.timestamp().to_string(),
        TimeFormat::EpochMs => t.timestamp_millis().to_string(),
        TimeFormat::HttpDate => httpdate::fmt_http_date(t.into()),
        TimeFormat::Pattern(p) => t.format(p).to_string(),
    }
}

/// A record's time as the API wrote it.
pub fn parse_time(v: &Value, f: &TimeFormat) -> Option<DateTime<Utc>> {
    match (f, v) {
        (_, Value::Null) => None,
        (TimeFormat::EpochSeconds, v) => {
            let n = v.as_f64().or_else(|| v.as_str()?.parse().ok())?;
            Utc.timestamp_millis_opt((n * 1000.0) as i64).single()
        }
        (TimeFormat::EpochMs, v) => {
            let n = v.as_i64().or_else(|| v.as_str()?.parse().ok())?;
            Utc.timestamp_millis_opt(n).single()
        }
        (TimeFormat::HttpDate, Value::String(s)) => {
            httpdate::parse_http_date(s).ok().map(DateTime::<Utc>::from)
        }
        (TimeFormat::Pattern(p), Value::String(s)) => chrono::NaiveDateTime::parse_from_str(s, p)
            .ok()
            .map(|n| n.and_utc())
            .or_else(|| {
                chrono::NaiveDate::parse_from_str(s, p)
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|n| n.and_utc())
            }),
        (_, Value::String(s)) => parse_datetime(s),
        _ => None,
    }
}

/// The fields a run reads, where each one's value sits.
struct Reads {
    fields: Vec<(String, bool)>,
}

impl Reads {
    fn new(fields: &[Field]) -> Reads {
        Reads {
            fields: fields.iter().map(|f| (f.name.clone(), f.custom)).collect(),
        }
    }
}

/// A record from one item of a page; `deleted`: it came from a listing of
/// deleted records. Second: its modification time was there but could not
/// be read as the spec says.
fn record(
    api: &Rest<'_>,
    s: &Stream,
    reads: &Reads,
    item: &RawValue,
    deleted: bool,
    now: DateTime<Utc>,
) -> Result<(Record, bool)> {
    let doc = Doc::of(item);
    let id = match doc.raw(&s.primary_key).map(|r| r.get().trim()) {
        Some(t) if t.starts_with('"') => serde_json::from_str::<String>(t)
            .ok()
            .filter(|x| !x.is_empty()),
        Some(t) if t.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => Some(t.to_owned()),
        _ => None,
    };
    let Some(id) = id else {
        return Err(CrmError::bad_response(format!(
            "{} sent a record of stream {} without its primary key {}",
            api.what, s.name, s.primary_key
        ))
        .with_detail(format!(
            "record begins: {}",
            crate::http::body_excerpt(item.get().as_bytes())
        ))
        .with_hint("Check the spec's records.primary_key."));
    };
    let modified = s.modified.as_ref().and_then(|(p, _)| doc.value(p));
    let updated_at = s
        .modified
        .as_ref()
        .zip(modified.as_ref())
        .and_then(|((_, f), v)| parse_time(v, f));
    // A time given but unreadable as the spec says (not one absent or null).
    let unreadable = updated_at.is_none() && modified.as_ref().is_some_and(|v| !v.is_null());
    let flagged = s
        .deletes
        .flag
        .as_ref()
        .is_some_and(|(p, v)| doc.value(p).as_ref() == Some(v));
    let mut deleted_at = s
        .deletes
        .deleted_at
        .as_ref()
        .and_then(|(p, f)| doc.value(p).and_then(|v| parse_time(&v, f)));
    if deleted_at.is_none() && (deleted || flagged) {
        deleted_at = Some(updated_at.unwrap_or(now));
    }
    let custom = s
        .fields
        .discovery
        .as_ref()
        .and_then(|d| d.custom_values_path.as_ref())
        .and_then(|p| doc.raw(p))
        .and_then(|r| Members::parse(r.get()));
    let top = doc.top.as_ref();
    let mut fields = serde_json::Map::new();
    for (name, is_custom) in &reads.fields {
        let raw = if *is_custom {
            custom
                .as_ref()
                .and_then(|c| c.get(name))
                .or_else(|| top.and_then(|t| t.get(name)))
        } else {
            top.and_then(|t| t.get(name))
        };
        if let Some(v) = raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok()) {
            fields.insert(name.clone(), v);
        }
    }
    Ok((
        Record {
            id,
            updated_at,
            deleted_at,
            fields,
            raw: item.get().to_owned(),
            merged_ids: Vec::new(),
            deletion_only: false,
            unparsed: 0,
        },
        unreadable,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Main,
    Deletes,
    Done,
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    phase: Phase,
    next: Next,
    since_ms: Option<i64>,
    until_ms: i64,
    /// The watermark's cap: the run's start by the server's clock if that
    /// is earlier.
    #[serde(default)]
    cap_ms: Option<i64>,
    max_seen_ms: Option<i64>,
    full: bool,
}

pub struct Reader<'a> {
    api: &'a Rest<'a>,
    stream: &'a Stream,
    reads: Reads,
    phase: Phase,
    lister: Lister<'a>,
    track_deletes: bool,
    full: bool,
    since: Option<DateTime<Utc>>,
    /// The run's start, in whole seconds: the watermark never passes it,
    /// and since windows start inclusively, what changes in that second
    /// after the listing passed it is read again by the next run.
    until: DateTime<Utc>,
    /// The watermark never passes this: `until`, or the server's own clock
    /// when that is behind ours.
    cap: DateTime<Utc>,
    /// A position from a checkpoint is being tried and has not yet given a
    /// page.
    resumed: bool,
    /// Records whose modification time could not be read.
    timeless: u64,
    previous: Option<DateTime<Utc>>,
    max_seen: Option<DateTime<Utc>>,
}

impl<'a> Reader<'a> {
    pub fn new(api: &'a Rest<'a>, s: &'a Stream, req: &ReadRequest) -> Result<Reader<'a>> {
        let until = Utc::now().trunc_subsecs(0);
        let (full, previous) = match &req.mode {
            SyncMode::Full => (true, None),
            SyncMode::Incremental { watermark } => {
                let w = parse_datetime(watermark).ok_or_else(|| {
                    CrmError::config(format!("stored watermark {watermark:?} is not a timestamp"))
                        .with_hint(
                        "Run crm_sync.sync(source, stream, full_refresh => true) to start over.",
                    )
                })?;
                (false, Some(w))
            }
        };
        let since = match (&s.incremental, previous) {
            (Incremental::None, _) | (_, None) => None,
            (_, Some(w)) => chrono::Duration::from_std(api.lookback(s))
                .ok()
                .and_then(|lb| w.checked_sub_signed(lb)),
        };
        let mut r = Reader {
            api,
            stream: s,
            reads: Reads::new(&req.fields),
            phase: Phase::Main,
            lister: Lister::of_stream(api, s, format!("stream {}", s.name)),
            track_deletes: req.track_deletes,
            full,
            since,
            until,
            cap: until,
            previous,
            max_seen: None,
            resumed: false,
            timeless: 0,
        };
        if let Some(c) = req
            .resume
            .as_deref()
            .and_then(|c| serde_json::from_str::<Checkpoint>(c).ok())
        {
            // Only a position of the same kind of run, in a listing the
            // spec still has.
            let listing =
                c.phase != Phase::Deletes || (s.deletes.endpoint.is_some() && req.track_deletes);
            if c.full == full && listing {
                r.since = c
                    .since_ms
                    .and_then(|m| Utc.timestamp_millis_opt(m).single());
                r.until = Utc
                    .timestamp_millis_opt(c.until_ms)
                    .single()
                    .unwrap_or(until);
                r.cap = c
                    .cap_ms
                    .and_then(|m| Utc.timestamp_millis_opt(m).single())
                    .unwrap_or(r.until);
                r.max_seen = c
                    .max_seen_ms
                    .and_then(|m| Utc.timestamp_millis_opt(m).single());
                r.resumed = c.next != Next::First;
                r.phase = c.phase;
                if c.phase == Phase::Deletes {
                    r.lister = r.deletes_lister();
                }
                r.lister.next = c.next;
            }
        }
        Ok(r)
    }

    fn main_lister(&self) -> Lister<'a> {
        let s = self.stream;
        Lister::of_stream(self.api, s, format!("stream {}", s.name))
    }

    fn deletes_lister(&self) -> Lister<'a> {
        let s = self.stream;
        let e = s.deletes.endpoint.as_ref().expect("a deletes listing");
        let (path, params) = (&e.path, &e.params);
        Lister::of_stream(
            self.api,
            s,
            format!("the deleted records of stream {}", s.name),
        )
        .with(path.as_deref(), params)
    }

    /// The window's parameters for a request.
    fn window(&self) -> Window {
        let mut w = Window::default();
        match &self.stream.incremental {
            Incremental::None => {}
            Incremental::Header { header, .. } => {
                w.header = self
                    .since
                    .map(|s| (header.clone(), format_time(s, &TimeFormat::HttpDate)));
            }
            Incremental::Window {
                inject,
                since,
                until,
                format,
                ..
            } => {
                let mut kv = Vec::new();
                if let Some(s) = self.since {
                    kv.push((since.clone(), format_time(s, format)));
                }
                if let Some(u) = until {
                    // The end of the window is exclusive and whole seconds
                    // are common: the second the run began is in it.
                    let end = self.until + chrono::Duration::seconds(1);
                    kv.push((u.clone(), format_time(end, format)));
                }
                match inject {
                    WindowInject::Query => w.query = kv,
                    WindowInject::Body => {
                        w.body = Some(
                            kv.into_iter()
                                .filter_map(|(k, v)| Some((Path::parse(&k).ok()?, v)))
                                .collect(),
                        )
                    }
                }
            }
        }
        w
    }
}

impl PageSource for Reader<'_> {
    fn next_page(&mut self) -> BoxFuture<'_, Result<Option<Page>>> {
        Box::pin(async move {
            loop {
                if self.phase == Phase::Done {
                    return Ok(None);
                }
                let w = self.window();
                let page = match self.lister.page(&w).await {
                    // A position saved by an interrupted run that no longer
                    // works (a cursor that expired, a link to a base URL
                    // since changed): that listing starts over, in the
                    // same window. Records read twice are upserted once.
                    Err(e)
                        if self.resumed
                            && matches!(
                                e.kind,
                                ErrorKind::ApiRejected | ErrorKind::BadResponse
                            ) =>
                    {
                        self.resumed = false;
                        self.lister = match self.phase {
                            Phase::Deletes => self.deletes_lister(),
                            _ => self.main_lister(),
                        };
                        continue;
                    }
                    other => other?,
                };
                self.resumed = false;
                // The server's clock caps the watermark too: records it
                // stamped later than its own now are the next run's.
                if let Some(d) = self.lister.last_date {
                    self.cap = self.cap.min(d.trunc_subsecs(0));
                }
                match page {
                    Some((items, total)) => {
                        let deleted = self.phase == Phase::Deletes;
                        let mut records = Vec::with_capacity(items.len());
                        for item in items {
                            let (r, unreadable) = record(
                                self.api,
                                self.stream,
                                &self.reads,
                                &item,
                                deleted,
                                self.until,
                            )?;
                            if let Some(t) = r.updated_at {
                                self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
                            }
                            if unreadable {
                                self.timeless += 1;
                            }
                            records.push(r);
                        }
                        return Ok(Some(Page { records, total }));
                    }
                    None => {
                        let deletes = self.phase == Phase::Main
                            && self.track_deletes
                            && self.stream.deletes.endpoint.is_some();
                        if deletes {
                            self.phase = Phase::Deletes;
                            self.lister = self.deletes_lister();
                        } else {
                            self.phase = Phase::Done;
                        }
                    }
                }
            }
        })
    }

    fn watermark(&self) -> Option<String> {
        let w = match (self.max_seen, self.full) {
            (Some(m), _) => Some(m.min(self.cap)),
            (None, true) => Some(self.cap),
            (None, false) => self.previous,
        };
        let w = match (w, self.previous) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        w.map(crate::types::fmt_ts)
    }

    fn warnings(&self) -> Vec<String> {
        match (&self.stream.modified, self.timeless) {
            (Some((p, f)), n) if n > 0 => vec![format!(
                "{n} records of stream {} had no modification time readable at {p} as {f:?}; check the spec's records.modified and modified_format",
                self.stream.name
            )],
            _ => Vec::new(),
        }
    }

    fn checkpoint(&self) -> Option<String> {
        serde_json::to_string(&Checkpoint {
            phase: self.phase,
            next: self.lister.next.clone(),
            since_ms: self.since.map(|s| s.timestamp_millis()),
            until_ms: self.until.timestamp_millis(),
            cap_ms: Some(self.cap.timestamp_millis()),
            max_seen_ms: self.max_seen.map(|m| m.timestamp_millis()),
            full: self.full,
        })
        .ok()
    }
}

/// Reconciliation's listing: the stream without a window, ids only.
pub struct Ids<'a> {
    api: &'a Rest<'a>,
    stream: &'a Stream,
    lister: Lister<'a>,
}

impl<'a> Ids<'a> {
    pub fn new(api: &'a Rest<'a>, s: &'a Stream) -> Ids<'a> {
        Ids {
            api,
            stream: s,
            lister: Lister::of_stream(api, s, format!("the ids of stream {}", s.name)),
        }
    }
}

impl IdSource for Ids<'_> {
    fn next_ids(&mut self) -> BoxFuture<'_, Result<Option<Vec<String>>>> {
        Box::pin(async move {
            let Some((items, _)) = self.lister.page(&Window::default()).await? else {
                return Ok(None);
            };
            let reads = Reads { fields: Vec::new() };
            let now = Utc::now();
            let mut ids = Vec::with_capacity(items.len());
            for item in items {
                let (r, _) = record(self.api, self.stream, &reads, &item, false, now)?;
                if r.deleted_at.is_none() {
                    ids.push(r.id);
                }
            }
            Ok(Some(ids))
        })
    }
}

/// The live records `ids` of stream `s`, by the spec's `read_ids`
/// parameter; none without one.
pub async fn read_ids(
    api: &Rest<'_>,
    s: &Stream,
    fields: &[Field],
    ids: &[String],
) -> Result<Vec<Record>> {
    // Without a way to read by id, records a reconciliation finds never
    // landed wait for the stream's next full sync.
    let Some(by) = &s.read_ids else {
        return Ok(Vec::new());
    };
    let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
    let reads = Reads::new(fields);
    let now = Utc::now();
    let mut out = Vec::new();
    for chunk in ids.chunks(by.max) {
        let mut l = Lister::of_stream(api, s, format!("stream {} by id", s.name))
            .with(None, &[(by.param.clone(), chunk.join(&by.separator))]);
        while let Some((items, _)) = l.page(&Window::default()).await? {
            for item in items {
                let (r, _) = record(api, s, &reads, &item, false, now)?;
                if r.deleted_at.is_none() && wanted.contains(r.id.as_str()) {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, LINK};
    use serde_json::json;

    #[test]
    fn link_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://x/a?page=1>; rel=\"prev\", <https://x/a?page=3>; rel=\"next\"",
            ),
        );
        assert_eq!(link(&h, "next").as_deref(), Some("https://x/a?page=3"));
        assert_eq!(link(&h, "last"), None);
        // Commas inside the URL and in quoted values.
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://x/a?fields=a,b&page=1>; rel=\"prev\"; title=\"a, b\", <https://x/a?fields=a,b&page=3>; rel=\"next\"",
            ),
        );
        assert_eq!(
            link(&h, "next").as_deref(),
            Some("https://x/a?fields=a,b&page=3")
        );
    }

    #[test]
    fn times_both_ways() {
        let t = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(format_time(t, &TimeFormat::Rfc3339), "2026-01-02T03:04:05Z");
        assert_eq!(format_time(t, &TimeFormat::EpochSeconds), "1767323045");
        assert_eq!(
            format_time(t, &TimeFormat::HttpDate),
            "Fri, 02 Jan 2026 03:04:05 GMT"
        );
        let p = TimeFormat::Pattern("%Y-%m-%d %H:%M:%S".into());
        assert_eq!(format_time(t, &p), "2026-01-02 03:04:05");
        assert_eq!(parse_time(&json!("2026-01-02 03:04:05"), &p), Some(t));
        assert_eq!(
            parse_time(&json!("2026-01-02T03:04:05.000Z"), &TimeFormat::Rfc3339),
            Some(t)
        );
        assert_eq!(
            parse_time(&json!(1767323045), &TimeFormat::EpochSeconds),
            Some(t)
        );
        assert_eq!(
            parse_time(&json!("1767323045000"), &TimeFormat::EpochMs),
            Some(t)
        );
        assert_eq!(parse_time(&json!(null), &TimeFormat::Rfc3339), None);
        assert_eq!(parse_time(&json!("garbage"), &p), None);
    }

    #[test]
    fn documents_are_read_as_deep_as_asked() {
        let body = br#"{"data": [{"id": 1, "x": {"y": [5, 6]}}], "additional_data": {"next_cursor": "c\"1"}, "k\u0041": 2}"#;
        let d = Doc::parse("x", "GET /", body).unwrap();
        assert_eq!(
            d.raw(&Path::parse("$.data").unwrap()).unwrap().get(),
            r#"[{"id": 1, "x": {"y": [5, 6]}}]"#
        );
        assert_eq!(
            d.value(&Path::parse("additional_data.next_cursor").unwrap()),
            Some(json!("c\"1"))
        );
        assert_eq!(
            d.value(&Path::parse("data.0.x.y.1").unwrap()),
            Some(json!(6))
        );
        assert_eq!(d.value(&Path::parse("$.missing").unwrap()), None);
        // A key written with an escape is still found.
        assert_eq!(d.value(&Path::parse("kA").unwrap()), Some(json!(2)));
        let arr = Doc::parse("x", "GET /", b"[1, 2]").unwrap();
        let e = Doc::parse("acme", "GET /items", br#"{"data": [1, 2"#)
            .err()
            .unwrap();
        assert!(
            e.message.contains("acme sent a truncated response"),
            "{}",
            e.message
        );
        assert_eq!(arr.value(&Path::parse("$.1").unwrap()), Some(json!(2)));
        assert_eq!(kind(" {"), "an object");
    }
}
