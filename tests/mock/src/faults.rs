//! The fault, hook and statistics engine every mock shares: admin rules that
//! answer matching requests with a fault, actions that run just before the
//! n-th matching request, and request counters. Each mock names its own
//! vendor-specific fault kinds and renders them; the transport-level kinds
//! (`502`, `reset`, `latency`, `malformed`, `truncated`, `cut`) are rendered
//! here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{Reply, Request, Response};

/// Fault kinds every mock understands, rendered by [`transport_fault`]:
/// besides broken transports, a redirect to another host (which a client
/// must not follow with its token) and a small gzip body that inflates to
/// `size_mb` megabytes (a decompression bomb).
pub const TRANSPORT_KINDS: &[&str] = &[
    "502",
    "reset",
    "latency",
    "malformed",
    "truncated",
    "cut",
    "redirect",
    "gzip_bomb",
];

/// Fault kinds every mock understands and renders in its own error shape:
/// an error that repeats the secrets the request carried ([`sent_secrets`]),
/// as APIs quote request parameters in `invalid_request` messages; `_cut`
/// sends a plain-text body whose 300th character falls inside the first of
/// them, as a client's bounded body excerpt cuts it. A rule's `status`
/// (default 400) is the answer's.
pub const ECHO_KINDS: &[&str] = &["echo_secrets", "echo_secrets_cut"];

#[derive(Debug, Clone)]
struct Fault {
    path_contains: String,
    method: Option<String>,
    skip: u64,
    count: u64,
    kind: String,
    latency_ms: u64,
    size_mb: u64,
    status: Option<u16>,
    seen: u64,
    fired: u64,
}

#[derive(Debug, Clone)]
struct Hook {
    path_contains: String,
    skip: u64,
    seen: u64,
    action: Value,
}

/// Fault rules and hooks set through the admin API.
#[derive(Debug, Default)]
pub struct Rules {
    faults: Vec<Fault>,
    hooks: Vec<Hook>,
}

impl Rules {
    /// `{"rules":[{"path_contains","method"?,"skip","count","kind","latency_ms"?}]}`;
    /// `kinds` lists the kinds this mock renders.
    pub fn add_faults(&mut self, body: &Value, kinds: &[&str]) -> Result<Value, String> {
        let rules = body["rules"].as_array().ok_or("rules must be an array")?;
        for r in rules {
            let kind = r["kind"].as_str().ok_or("kind missing")?;
            if !kinds.contains(&kind) {
                return Err(format!("unknown fault kind {kind:?}; one of {kinds:?}"));
            }
            self.faults.push(Fault {
                path_contains: r["path_contains"].as_str().unwrap_or("").to_owned(),
                method: r["method"].as_str().map(str::to_owned),
                skip: r["skip"].as_u64().unwrap_or(0),
                count: r["count"].as_u64().unwrap_or(1),
                kind: kind.to_owned(),
                latency_ms: r["latency_ms"].as_u64().unwrap_or(1000),
                size_mb: r["size_mb"].as_u64().unwrap_or(100).min(2048),
                status: r["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .filter(|s| (100..600).contains(s)),
                seen: 0,
                fired: 0,
            });
        }
        Ok(json!({ "rules": self.faults.len() }))
    }

    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// `{"path_contains","skip","action":{…}}`: the action runs once.
    pub fn add_hook(&mut self, body: &Value) {
        self.hooks.push(Hook {
            path_contains: body["path_contains"].as_str().unwrap_or("").to_owned(),
            skip: body["skip"].as_u64().unwrap_or(0),
            seen: 0,
            action: body["action"].clone(),
        });
    }

    pub fn clear_hooks(&mut self) {
        self.hooks.clear();
    }

    /// Actions of the hooks due at this request; they are removed.
    pub fn due_hooks(&mut self, req: &Request) -> Vec<Value> {
        let mut fire = Vec::new();
        self.hooks.retain_mut(|h| {
            if !req.path.contains(&h.path_contains) {
                return true;
            }
            h.seen += 1;
            if h.seen > h.skip {
                fire.push(h.action.clone());
                false
            } else {
                true
            }
        });
        fire
    }

    /// The fault this request gets, if any. Every matching rule counts
    /// the request; the first due one fires.
    pub fn pick(&mut self, req: &Request) -> Option<Picked> {
        let mut chosen = None;
        for f in self.faults.iter_mut() {
            if !req.path.contains(&f.path_contains) {
                continue;
            }
            if f.method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(&req.method))
            {
                continue;
            }
            f.seen += 1;
            if chosen.is_none() && f.seen > f.skip && (f.count == 0 || f.fired < f.count) {
                f.fired += 1;
                chosen = Some(Picked {
                    kind: f.kind.clone(),
                    latency_ms: f.latency_ms,
                    size_mb: f.size_mb,
                    status: f.status,
                });
            }
        }
        chosen
    }
}

/// A fault due for a request.
#[derive(Debug, Clone)]
pub struct Picked {
    pub kind: String,
    pub latency_ms: u64,
    pub size_mb: u64,
    /// The status a rule asked for (the echo kinds).
    pub status: Option<u16>,
}

/// A secret a request carried: where (`bearer`, `basic`, or a form
/// field's name) and its text as sent (a form field still
/// percent-encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub name: String,
    pub raw: String,
}

impl Sent {
    /// The value as the client meant it.
    pub fn value(&self) -> String {
        if self.name == "bearer" || self.name == "basic" {
            self.raw.clone()
        } else {
            crate::server::decode(&self.raw)
        }
    }
}

/// Form fields that carry secrets (OAuth token requests).
const FORM_SECRETS: &[&str] = &[
    "client_id",
    "client_secret",
    "refresh_token",
    "assertion",
    "password",
    "access_token",
    "code",
];

/// The secrets a request carried: its `Authorization` credentials and
/// the secret fields of a form body, in order.
pub fn sent_secrets(req: &Request) -> Vec<Sent> {
    let mut out = Vec::new();
    if let Some(h) = req.header("authorization") {
        let (name, raw) = match h.split_once(' ') {
            Some(("Basic", v)) => ("basic", v),
            Some((_, v)) => ("bearer", v),
            None => ("bearer", h),
        };
        out.push(Sent {
            name: name.into(),
            raw: raw.trim().into(),
        });
    }
    let body = String::from_utf8_lossy(&req.body);
    for kv in body.split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            if FORM_SECRETS.contains(&k) && !v.is_empty() {
                out.push(Sent {
                    name: k.into(),
                    raw: v.into(),
                });
            }
        }
    }
    out
}

/// Each secret as sent, as meant, percent-encoded in lower case and
/// JSON-escaped twice over (`\/`, and `\u00XX` for every punctuation
/// character), as an API quoting the request's parameters might.
pub fn echo_text(sent: &[Sent]) -> String {
    let mut parts = Vec::new();
    for s in sent {
        let v = s.value();
        let pct: String = v
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect();
        let slash = v.replace('\\', "\\\\").replace('/', "\\/");
        let unicode: String = v
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_string()
                } else {
                    format!("\\u{:04X}", c as u32)
                }
            })
            .collect();
        parts.push(format!(
            "{n}={raw} ({n} {v}; {pct}; {{\"{n}\":\"{slash}\"}}; {{\"{n}\":\"{unicode}\"}})",
            n = s.name,
            raw = s.raw,
        ));
    }
    if parts.is_empty() {
        "no credentials".into()
    } else {
        parts.join("; ")
    }
}

/// Characters of a body a client keeps as an excerpt (crm_sync_core's
/// `body_excerpt`).
pub const EXCERPT_CHARS: usize = 300;

/// `echo_secrets_cut`'s body: plain text whose first [`EXCERPT_CHARS`]
/// characters end two thirds into the first secret sent.
pub fn echo_cut(status: u16, sent: &[Sent]) -> Response {
    let Some(first) = sent.first() else {
        return Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: b"Bad Request: no credentials".to_vec(),
        };
    };
    let len = first.raw.chars().count();
    let visible = (len * 2 / 3).max(8).min(len.saturating_sub(1));
    let head = format!("Bad Request: the request was refused. {}=", first.name);
    let pad = EXCERPT_CHARS.saturating_sub(head.chars().count() + visible);
    let body = format!(
        "{}{head}{} ({})",
        ".".repeat(pad),
        first.raw,
        echo_text(sent)
    );
    Response {
        status,
        headers: vec![("Content-Type".into(), "text/plain".into())],
        body: body.into_bytes(),
    }
}

/// Render a transport-level fault; `answer` produces the real response for
/// the kinds that send it late, halved or cut. None for other kinds.
pub fn transport_fault(fault: &Picked, answer: impl FnOnce() -> Response) -> Option<Reply> {
    let latency_ms = fault.latency_ms;
    Some(match fault.kind.as_str() {
        "502" => Reply::Send(html(502, "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>")),
        "reset" => Reply::Reset,
        "latency" => Reply::Delay(Duration::from_millis(latency_ms), answer()),
        "malformed" => Reply::Send(html(200, "<html><body>Service temporarily unavailable, please try again.</body></html>")),
        "truncated" => {
            // A whole HTTP response whose body stops half way.
            let mut r = answer();
            let n = r.body.len() / 2;
            r.body.truncate(n);
            Reply::Send(r)
        }
        "cut" => Reply::Cut { response: answer() },
        "redirect" => Reply::Send(Response {
            status: 302,
            headers: vec![(
                "Location".into(),
                "https://collector.example/steal?from=crm".into(),
            )],
            body: Vec::new(),
        }),
        "gzip_bomb" => Reply::Send(gzip_bomb(fault.size_mb)),
        _ => return None,
    })
}

/// A 200 whose gzip body inflates to `mb` megabytes of JSON whitespace.
fn gzip_bomb(mb: u64) -> Response {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![b' '; 1 << 20];
    for _ in 0..mb {
        enc.write_all(&block).expect("write to a Vec");
    }
    Response {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Encoding".into(), "gzip".into()),
        ],
        body: enc.finish().expect("finish into a Vec"),
    }
}

/// API request counters for `GET /_mock/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: u64,
    pub by_endpoint: BTreeMap<String, u64>,
    pub status_counts: BTreeMap<String, u64>,
    /// Faults fired, by kind.
    pub faults_fired: BTreeMap<String, u64>,
    /// What the echo kinds repeated: each secret's values as meant, by
    /// where they were sent.
    pub echoed: BTreeMap<String, Vec<String>>,
}

impl Stats {
    pub fn count_request(&mut self, endpoint: String) {
        self.requests += 1;
        *self.by_endpoint.entry(endpoint).or_default() += 1;
    }

    pub fn count_fault(&mut self, kind: &str, req: &Request) {
        *self.faults_fired.entry(kind.to_owned()).or_default() += 1;
        if ECHO_KINDS.contains(&kind) {
            for s in sent_secrets(req) {
                let vals = self.echoed.entry(s.name.clone()).or_default();
                let v = s.value();
                if !vals.contains(&v) && vals.len() < 20 {
                    vals.push(v);
                }
            }
        }
    }

    pub fn count_reply(&mut self, reply: &Reply) {
        let status = match reply {
            Reply::Send(r) | Reply::Delay(_, r) => r.status.to_string(),
            Reply::Cut { .. } => "cut".into(),
            Reply::Reset => "reset".into(),
        };
        *self.status_counts.entry(status).or_default() += 1;
    }
}

/// The admin routes every mock shares (`faults`, `hooks`, `reset_stats`);
/// None when `parts` (the path after `/_mock/`) is none of them.
pub fn shared_admin(
    rules: &mut Rules,
    stats: &mut Stats,
    bytes_sent: &AtomicU64,
    method: &str,
    parts: &[&str],
    body: &Value,
    kinds: &[&str],
) -> Option<Result<Value, String>> {
    Some(match (method, parts) {
        ("POST", ["faults"]) => rules.add_faults(body, kinds),
        ("DELETE", ["faults"]) => {
            rules.clear_faults();
            Ok(json!({}))
        }
        ("POST", ["hooks"]) => {
            rules.add_hook(body);
            Ok(json!({}))
        }
        ("DELETE", ["hooks"]) => {
            rules.clear_hooks();
            Ok(json!({}))
        }
        ("POST", ["reset_stats"]) => {
            *stats = Stats::default();
            bytes_sent.store(0, Ordering::Relaxed);
            Ok(json!({}))
        }
        _ => return None,
    })
}

pub fn html(status: u16, body: &str) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "text/html".into())],
        body: body.as_bytes().to_vec(),
    }
}

/// An admin call's answer: 200 with the JSON, or 400 with the message.
pub fn admin_reply(r: Result<Value, String>) -> Reply {
    Reply::Send(match r {
        Ok(v) => Response::json(200, v.to_string().into_bytes()),
        Err(m) => admin_error(400, &m),
    })
}

pub fn admin_error(status: u16, msg: &str) -> Response {
    Response::json(status, json!({ "error": msg }).to_string().into_bytes())
}

/// The body of an admin request as JSON (`null` when empty).
pub fn admin_body(req: &Request) -> Result<Value, Response> {
    if req.body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&req.body).map_err(|e| admin_error(400, &format!("bad JSON: {e}")))
}
