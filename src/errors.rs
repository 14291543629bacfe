//! The one place where core errors become Postgres errors: a SQLSTATE per
//! kind, the source and stream in the message, DETAIL and HINT, and every
//! known secret scrubbed.

use crm_sync_core::{CrmError, ErrorKind};
use pgrx::pg_sys::panic::ErrorReport;
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

pub fn scrub(s: &str, secrets: &[String]) -> String {
    let mut out = s.to_owned();
    for sec in secrets {
        if sec.len() >= 4 {
            out = out.replace(sec.as_str(), "[redacted]");
        }
    }
    out
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
