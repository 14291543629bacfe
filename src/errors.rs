//! The one place where core errors become Postgres errors: a SQLSTATE per
//! kind, the source and stream in the message, DETAIL and HINT, and every
//! known secret scrubbed; and the one place where a failed run's error,
//! caught while it unwound, is classified (status, message, SQLSTATE) and
//! raised again.

use std::any::Any;
use std::panic::resume_unwind;

use crm_sync_core::config::SecretRef;
use crm_sync_core::{CrmError, ErrorKind};
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Which source and stream an error belongs to.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub source: Option<String>,
    pub stream: Option<String>,
    pub secrets: Vec<String>,
}

pub fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match kind {
        ErrorKind::InvalidConfig => ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::Auth => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        ErrorKind::RateLimited => ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
        ErrorKind::Transport => ERRCODE_CONNECTION_FAILURE,
        ErrorKind::ServerError => ERRCODE_CONNECTION_FAILURE,
        ErrorKind::BadResponse => ERRCODE_PROTOCOL_VIOLATION,
        ErrorKind::ApiRejected => ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::Unsupported => ERRCODE_FEATURE_NOT_SUPPORTED,
    }
}

/// The SQLSTATE's five characters, for crm_sync.runs.
pub fn sqlstate_text(code: PgSqlErrorCode) -> String {
    // SAFETY: unpack_sql_state returns a static buffer we copy at once.
    unsafe {
        let p = pgrx::pg_sys::unpack_sql_state(code as i32);
        std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// `s` without any of `secrets`, in any spelling (see
/// [`crm_sync_core::scrub`]).
pub fn scrub(s: &str, secrets: &[String]) -> String {
    let rotated = ROTATED.lock().map(|r| r.clone()).unwrap_or_default();
    if rotated.is_empty() {
        return crm_sync_core::scrub::scrub(s, secrets);
    }
    let all: Vec<&String> = secrets.iter().chain(rotated.iter()).collect();
    crm_sync_core::scrub::scrub(s, &all)
}

/// Credentials the CRM rotated in this backend: a call loaded its secrets
/// before they existed, yet a later request of the same call sends them
/// (and a CRM may quote them in an error).
static ROTATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Scrub `value` from every error, warning and run this backend records.
pub fn add_secret(value: &str) {
    if value.is_empty() {
        return;
    }
    if let Ok(mut r) = ROTATED.lock() {
        if !r.iter().any(|v| v == value) {
            // Bounded: the newest are the ones still in use.
            if r.len() >= 64 {
                r.remove(0);
            }
            r.push(value.to_owned());
        }
    }
}

/// The message a user sees: `source.stream: what happened (endpoint)`.
pub fn message(e: &CrmError, ctx: &Context) -> String {
    let prefix = match (&ctx.source, &ctx.stream) {
        (Some(s), Some(t)) => format!("source \"{s}\", stream \"{t}\": "),
        (Some(s), None) => format!("source \"{s}\": "),
        _ => String::new(),
    };
    scrub(&format!("{prefix}{e}"), &ctx.secrets)
}

/// Raise an ERROR of the extension's own (not from a CRM).
pub fn fail(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    let mut r = ErrorReport::new(code, message, "pg_crm_sync");
    if let Some(h) = hint {
        r = r.set_hint(h.to_owned());
    }
    r.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub fn report(e: &CrmError, ctx: &Context) -> ErrorReport {
    let mut r = ErrorReport::new(sqlstate(e.kind), message(e, ctx), "pg_crm_sync");
    if let Some(d) = &e.detail {
        r = r.set_detail(scrub(d, &ctx.secrets));
    }
    if let Some(h) = &e.hint {
        r = r.set_hint(scrub(h, &ctx.secrets));
    }
    r
}

/// Raise `e` as an ERROR. Never returns.
pub fn raise(e: &CrmError, ctx: &Context) -> ! {
    report(e, ctx).report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

pub trait OrRaise<T> {
    fn or_raise(self, ctx: &Context) -> T;
}

impl<T> OrRaise<T> for Result<T, CrmError> {
    fn or_raise(self, ctx: &Context) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(&e, ctx),
        }
    }
}

/// Every string value in a credentials object, for scrubbing messages; a
/// reference (`{"env": "NAME"}`, `{"file": "/path"}`) names where a secret
/// is, and is no secret itself (its value is scrubbed once read).
pub fn secret_strings(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .filter(|(k, v)| !matches!(SecretRef::of(k, v), Some(Ok(_))))
            .flat_map(|(_, v)| secret_strings(v))
            .collect(),
        serde_json::Value::Array(a) => a.iter().flat_map(secret_strings).collect(),
        serde_json::Value::String(s) => vec![s.clone()],
        _ => vec![],
    }
}

/// Longest error text recorded in crm_sync.runs and crm_sync.jobs (and
/// sent in NOTIFY payloads): a CRM's error message is the remote server's
/// text, of any length.
const MAX_RECORDED_ERROR: usize = 2000;

fn bounded(s: String) -> String {
    crm_sync_core::error::bounded_text(&s, MAX_RECORDED_ERROR)
}

/// What a run that failed (or was cancelled) reports, and how to raise it
/// again once it is recorded.
pub struct Failure {
    /// `failed` or `cancelled`, as crm_sync.runs and crm_sync.jobs say.
    pub status: &'static str,
    /// Scrubbed of secrets, and bounded in length.
    pub message: String,
    pub code: PgSqlErrorCode,
    pub rethrow: Rethrow,
}

/// The error behind a [`Failure`], to raise it as it came.
pub enum Rethrow {
    Report(ErrorReport),
    Caught(Box<CaughtError>),
    Panic(Box<dyn Any + Send>),
}

impl Failure {
    /// A connector's or the engine's error.
    pub fn of_error(e: &CrmError, ctx: &Context) -> Failure {
        Failure {
            status: "failed",
            message: bounded(message(e, ctx)),
            code: sqlstate(e.kind),
            rethrow: Rethrow::Report(report(e, ctx)),
        }
    }

    /// An ERROR raised through Postgres (a cancel, a statement timeout, an
    /// SPI error) or a Rust panic, caught while it unwound.
    pub fn of_panic(panic: Box<dyn Any + Send>, ctx: &Context) -> Failure {
        match panic.downcast::<CaughtError>() {
            Ok(caught) => {
                let (msg, code) = match caught.as_ref() {
                    CaughtError::PostgresError(r)
                    | CaughtError::ErrorReport(r)
                    | CaughtError::RustPanic { ereport: r, .. } => (
                        bounded(scrub(r.message(), &ctx.secrets)),
                        r.sql_error_code(),
                    ),
                };
                let status = if code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED {
                    "cancelled"
                } else {
                    "failed"
                };
                Failure {
                    status,
                    message: msg,
                    code,
                    rethrow: Rethrow::Caught(caught),
                }
            }
            Err(other) => Failure {
                status: "failed",
                message: "internal error".to_owned(),
                code: PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                rethrow: Rethrow::Panic(other),
            },
        }
    }

    /// The SQLSTATE's five characters.
    pub fn sqlstate(&self) -> String {
        sqlstate_text(self.code)
    }
}

impl Rethrow {
    pub fn raise(self) -> ! {
        match self {
            Rethrow::Report(r) => {
                r.report(PgLogLevel::ERROR);
                unreachable!("ERROR does not return")
            }
            Rethrow::Caught(c) => c.rethrow(),
            Rethrow::Panic(p) => resume_unwind(p),
        }
    }
}
