//! Every `crm_sync.*` setting, registered once in `_PG_init`.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Records per INSERT statement when writing landing tables.
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(5000);

/// Allow plain `http://` to hosts other than loopback. Superuser only: it
/// would let credentials travel unencrypted.
pub static ALLOW_INSECURE_HTTP: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Milliseconds between progress NOTICEs of a foreground sync (0: none).
pub static PROGRESS_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(5000);

pub fn init() {
    GucRegistry::define_int_guc(
        c"crm_sync.progress_interval_ms",
        c"How often a running crm_sync.sync() reports progress as a NOTICE.",
        c"Milliseconds between NOTICEs naming the stream, records and pages so far, bytes, rate, and percent done where the CRM reports a total; 0 turns them off. client_min_messages decides whether you see them.",
        &PROGRESS_INTERVAL_MS,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"crm_sync.batch_size",
        c"Records written per INSERT statement by a sync.",
        c"Larger batches write faster and use more memory; rows and the watermark still commit together.",
        &BATCH_SIZE,
        1,
        100_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"crm_sync.allow_insecure_http",
        c"Allow plain http:// CRM URLs to hosts other than loopback.",
        c"Off by default: credentials would travel unencrypted. Loopback http is always allowed (for tests and local mocks).",
        &ALLOW_INSECURE_HTTP,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: called once from _PG_init with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"crm_sync".as_ptr()) };
}
