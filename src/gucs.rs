//! Every `crm_sync.*` setting, registered once in `_PG_init`.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Records per INSERT statement when writing landing tables.
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(5000);

/// Allow plain `http://` to hosts other than loopback. Superuser only: it
/// would let credentials travel unencrypted.
pub static ALLOW_INSECURE_HTTP: GucSetting<bool> = GucSetting::<bool>::new(false);

pub fn init() {
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
