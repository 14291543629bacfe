//! The request flow every mock shares around its vendor-specific parts:
//! `/_mock/` paths go to the admin API (shared routes first, then the
//! vendor's, else 404), all others to the vendor API after request counting,
//! due hooks and fault rules; only API responses count as bytes sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Value};

use crate::faults::{
    admin_body, admin_error, admin_reply, shared_admin, transport_fault, Picked, Rules, Stats,
    ECHO_KINDS, TRANSPORT_KINDS,
};
use crate::server::{Handler, Reply, Request, Response};

/// Paths under this prefix are the admin API.
const ADMIN: &str = "/_mock/";

/// What every mock keeps besides its options: its fault rules, request
/// counters and own state behind one lock, the bytes its API has sent,
/// whether it gzips.
pub(crate) struct Base<S> {
    locked: Mutex<Locked<S>>,
    bytes_sent: AtomicU64,
    gzip: bool,
}

struct Locked<S> {
    rules: Rules,
    stats: Stats,
    state: S,
}

impl<S> Base<S> {
    pub(crate) fn new(state: S, gzip: bool) -> Self {
        Base {
            locked: Mutex::new(Locked {
                rules: Rules::default(),
                stats: Stats::default(),
                state,
            }),
            bytes_sent: AtomicU64::new(0),
            gzip,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Locked<S>> {
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a mock provides; the [`Handler`] comes with it.
pub(crate) trait Mock: Send + Sync + 'static {
    type State: Send;
    /// The vendor's own fault kinds; `POST /_mock/faults` accepts these and
    /// [`TRANSPORT_KINDS`].
    const FAULT_KINDS: &'static [&'static str];

    fn base(&self) -> &Base<Self::State>;
    /// The answer for one of [`Self::FAULT_KINDS`]; None for other kinds.
    fn fault(&self, kind: &str, req: &Request) -> Option<Response>;
    /// The answer for one of [`ECHO_KINDS`]: an error in the vendor's
    /// shape repeating [`crate::faults::sent_secrets`].
    fn echo(&self, st: &mut Self::State, fault: &Picked, req: &Request) -> Response;
    /// The API's answer.
    fn route(&self, st: &mut Self::State, req: &Request) -> Response;
    /// Run an admin action (from a hook).
    fn apply_action(st: &mut Self::State, action: &Value) -> Result<Value, String>;
    /// The vendor's admin routes (`parts`: the path after `/_mock/`); None
    /// when `parts` is none of them.
    fn admin_route(
        &self,
        st: &mut Self::State,
        method: &str,
        parts: &[&str],
        body: &Value,
    ) -> Option<Result<Value, String>>;
    /// What `GET /_mock/stats` adds to the shared counters, in order.
    fn stats_extra(st: &Self::State) -> Vec<(&'static str, Value)>;

    /// The path as request statistics count it.
    fn endpoint(path: &str) -> String {
        path.to_owned()
    }
}

impl<M: Mock> Handler for M {
    fn handle(&self, req: &Request) -> Reply {
        if req.path.starts_with(ADMIN) {
            admin(self, req)
        } else {
            api(self, req)
        }
    }

    fn sent(&self, req: &Request, _status: u16, bytes: usize) {
        if !req.path.starts_with(ADMIN) {
            self.base()
                .bytes_sent
                .fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    fn gzip(&self) -> bool {
        self.base().gzip
    }
}

fn api<M: Mock>(m: &M, req: &Request) -> Reply {
    let mut guard = m.base().lock();
    let Locked {
        rules,
        stats,
        state,
    } = &mut *guard;
    stats.count_request(format!("{} {}", req.method, M::endpoint(&req.path)));

    // Hooks change data just before the request they wait for is served.
    for action in rules.due_hooks(req) {
        let _ = M::apply_action(state, &action);
    }

    let reply = match fault(m, rules, stats, state, req) {
        Some(r) => r,
        None => Reply::Send(m.route(state, req)),
    };
    stats.count_reply(&reply);
    reply
}

/// The fault the rules give this request, if any: the vendor's own kinds
/// rendered by the vendor, the transport-level ones here.
fn fault<M: Mock>(
    m: &M,
    rules: &mut Rules,
    stats: &mut Stats,
    st: &mut M::State,
    req: &Request,
) -> Option<Reply> {
    let picked = rules.pick(req)?;
    stats.count_fault(&picked.kind, req);
    if ECHO_KINDS.contains(&picked.kind.as_str()) {
        return Some(Reply::Send(m.echo(st, &picked, req)));
    }
    match m.fault(&picked.kind, req) {
        Some(r) => Some(Reply::Send(r)),
        None => transport_fault(&picked, || m.route(st, req)),
    }
}

fn admin<M: Mock>(m: &M, req: &Request) -> Reply {
    let body = match admin_body(req) {
        Ok(v) => v,
        Err(r) => return Reply::Send(r),
    };
    let base = m.base();
    let mut guard = base.lock();
    let Locked {
        rules,
        stats,
        state,
    } = &mut *guard;
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let shared = shared_admin(
        rules,
        stats,
        &base.bytes_sent,
        &req.method,
        &parts[1..],
        &body,
        &[M::FAULT_KINDS, TRANSPORT_KINDS, ECHO_KINDS].concat(),
    );
    if let Some(r) = shared {
        return admin_reply(r);
    }
    let r = match (req.method.as_str(), &parts[1..]) {
        ("GET", ["stats"]) => {
            let mut v = json!({
                "requests": stats.requests,
                "by_endpoint": stats.by_endpoint,
                "status_counts": stats.status_counts,
                "faults_fired": stats.faults_fired,
                "echoed": stats.echoed,
                "bytes_sent": base.bytes_sent.load(Ordering::Relaxed),
            });
            for (k, x) in M::stats_extra(state) {
                v[k] = x;
            }
            Ok(v)
        }
        (method, parts) => match m.admin_route(state, method, parts, &body) {
            Some(r) => r,
            None => {
                return Reply::Send(admin_error(
                    404,
                    &format!("no admin route {} {}", req.method, req.path),
                ))
            }
        },
    };
    admin_reply(r)
}
