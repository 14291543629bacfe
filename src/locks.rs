//! Advisory locks: one sync of a stream at a time, in any session, and one
//! merge at a time. Every holder uses the same key per stream.

use pgrx::prelude::*;

use crate::errors::{self, Context};
use crm_sync_core::CrmError;

const STREAM_KEY: &str = "pg_catalog.hashtextextended('crm_sync/' || $1 || '/' || $2, 0::int8)";

fn get_bool(sql: &str, source: &str, stream: &str) -> bool {
    Spi::get_one_with_args::<bool>(sql, &[source.into(), stream.into()])
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Lock the stream until this transaction ends (a foreground sync), so the
/// rows and watermark it writes are committed first; raise 55P03 if
/// another session is syncing it.
pub fn stream_for_transaction(source: &str, stream: &str, ctx: &Context) {
    if !try_stream_for_transaction(source, stream) {
        let e = CrmError::config("another session is already syncing this stream");
        errors::fail(
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE,
            errors::message(&e, ctx),
            Some(
                "Wait for it to finish (see pg_stat_activity and crm_sync.jobs), then sync again.",
            ),
        );
    }
}

/// Lock the stream until this transaction ends, unless another session
/// holds it (a sync still writing): then false, at once.
pub fn try_stream_for_transaction(source: &str, stream: &str) -> bool {
    get_bool(
        &format!("SELECT pg_catalog.pg_try_advisory_xact_lock({STREAM_KEY})"),
        source,
        stream,
    )
}

/// Lock the stream for the session (a background run, which commits many
/// times); false if another session holds it.
pub fn try_stream_for_session(source: &str, stream: &str) -> bool {
    get_bool(
        &format!("SELECT pg_catalog.pg_try_advisory_lock({STREAM_KEY})"),
        source,
        stream,
    )
}

/// Wait for the stream's lock, for the session.
pub fn stream_for_session(source: &str, stream: &str) {
    Spi::run_with_args(
        &format!("SELECT pg_catalog.pg_advisory_lock({STREAM_KEY})"),
        &[source.into(), stream.into()],
    )
    .expect("wait for the stream's lock");
}

/// Release the session's lock on the stream.
pub fn release_stream(source: &str, stream: &str) {
    let _ = Spi::run_with_args(
        &format!("SELECT pg_catalog.pg_advisory_unlock({STREAM_KEY})"),
        &[source.into(), stream.into()],
    );
}

/// One merge at a time, until this transaction ends: unified rows span
/// sources.
pub fn merge_for_transaction() {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('crm_sync/merge', 0::int8))")
        .expect("merge lock");
}
