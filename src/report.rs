//! Messages below ERROR: the server log's LOG lines, the WARNINGs and
//! NOTICEs a sync reports, DEBUG1 figures. Every one goes through here,
//! never through pgrx's `log!`, `warning!`, `notice!` or `debug1!`.
//!
//! Postgres ends each report by acting on pending interrupts (errfinish's
//! CHECK_FOR_INTERRUPTS), and pgrx makes the report outside the guard that
//! turns a Postgres ERROR into a Rust panic. A cancel signalled just
//! before a report (`crm_sync.cancel()`, `pg_cancel_backend()`, a
//! statement timeout) therefore jumped straight to the outermost handler,
//! past every `catch_unwind`: a job's worker exited without recording how
//! its job ended, and the launcher ran the job again as if it had crashed.
//! Here a report holds interrupts while it is made; a cancel stays pending
//! and acts at the next interrupt check, as an ERROR the caller catches.

use std::fmt;

use pgrx::{PgLogLevel, PgSqlErrorCode};

use crate::txn;

/// Make one report at `level` (below ERROR); `funcname` and the caller's
/// file and line are the report's location.
#[track_caller]
pub fn emit(level: PgLogLevel, funcname: &'static str, message: fmt::Arguments) {
    debug_assert!((level as i32) < (PgLogLevel::ERROR as i32));
    let code = if level == PgLogLevel::WARNING {
        PgSqlErrorCode::ERRCODE_WARNING
    } else {
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION
    };
    if !level.is_interesting() {
        return;
    }
    let _held = txn::hold_interrupts();
    pgrx::pg_sys::panic::ErrorReport::new(code, message.to_string(), funcname).report(level);
}

/// A line in the server log (LOG).
macro_rules! log {
    ($($arg:tt)*) => { $crate::report::emit(::pgrx::PgLogLevel::LOG, ::pgrx::pg_sys::function_name!(), format_args!($($arg)*)) };
}

/// A WARNING to the client and the server log.
macro_rules! warning {
    ($($arg:tt)*) => { $crate::report::emit(::pgrx::PgLogLevel::WARNING, ::pgrx::pg_sys::function_name!(), format_args!($($arg)*)) };
}

/// A NOTICE to the client.
macro_rules! notice {
    ($($arg:tt)*) => { $crate::report::emit(::pgrx::PgLogLevel::NOTICE, ::pgrx::pg_sys::function_name!(), format_args!($($arg)*)) };
}

/// A DEBUG1 line (shown when `log_min_messages` or `client_min_messages`
/// asks for it).
macro_rules! debug1 {
    ($($arg:tt)*) => { $crate::report::emit(::pgrx::PgLogLevel::DEBUG1, ::pgrx::pg_sys::function_name!(), format_args!($($arg)*)) };
}

pub(crate) use {debug1, log, notice, warning};
