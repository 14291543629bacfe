//! Every `crm_sync.*` setting, registered once in `_PG_init`.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Records per INSERT statement when writing landing tables.
pub static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(5000);

/// Allow plain `http://` to hosts other than loopback. Superuser only: it
/// would let credentials travel unencrypted.
pub static ALLOW_INSECURE_HTTP: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Internal networks (private, loopback, link-local...) syncs may connect
/// to anyway, comma-separated CIDRs. Superuser only: it opens the server's
/// own network to whoever may create a source.
pub static ALLOWED_NETWORKS: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// Milliseconds between progress NOTICEs of a foreground sync (0: none).
pub static PROGRESS_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(5000);

/// Merge each synced stream into the unified model (schema crm) at once.
pub static MERGE_AFTER_SYNC: GucSetting<bool> = GucSetting::<bool>::new(true);

/// Changed records a merge follows one by one; past this many, it
/// recomputes the whole entity in pages.
pub static MERGE_FOLLOW_AT_MOST: GucSetting<i32> = GucSetting::<i32>::new(50_000);

/// Records sharing keys a whole merge links in memory; past this many, it
/// links them in SQL, in rounds.
pub static MERGE_LINK_IN_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(200_000);

/// Background workers that run jobs at once, at most.
pub static MAX_WORKERS: GucSetting<i32> = GucSetting::<i32>::new(2);

/// The database whose jobs and schedules the launcher runs.
pub static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));

/// `crm_sync.allowed_networks` as text ('' when unset).
pub fn allowed_networks() -> String {
    ALLOWED_NETWORKS
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn database() -> String {
    DATABASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".to_owned())
}

pub fn init() {
    GucRegistry::define_int_guc(
        c"crm_sync.max_workers",
        c"Background syncs that run at once, at most.",
        c"Each takes one of max_worker_processes while it runs; 0 stops starting jobs (queued jobs wait). Reload to change.",
        &MAX_WORKERS,
        0,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // A postmaster setting can only be defined while preloading.
    // SAFETY: reads a postmaster global.
    if unsafe { pgrx::pg_sys::process_shared_preload_libraries_in_progress } {
        define_database();
    }
    define_session_settings();
}

fn define_database() {
    GucRegistry::define_string_guc(
        c"crm_sync.database",
        c"The database whose background syncs (crm_sync.sync_async, crm_sync.schedule) the launcher runs.",
        c"Like pg_cron's cron.database_name: one database per cluster. Needs pg_crm_sync in shared_preload_libraries; takes effect at server start.",
        &DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

fn define_session_settings() {
    GucRegistry::define_bool_guc(
        c"crm_sync.merge_after_sync",
        c"Merge what each sync landed into the unified model (schema crm) right after it.",
        c"On by default; off leaves merging to crm_sync.merge().",
        &MERGE_AFTER_SYNC,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"crm_sync.merge_follow_at_most",
        c"Changed records of one entity a merge follows one by one.",
        c"Past this many, the merge recomputes the whole entity in pages: the same model, in memory that does not grow with the change (a first sync, a full refresh).",
        &MERGE_FOLLOW_AT_MOST,
        0,
        10_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"crm_sync.merge_link_in_memory",
        c"Records sharing match keys a whole merge links in memory.",
        c"Past this many (some 200 bytes each), the merge links the entity's records in SQL instead, in rounds, in memory that does not grow with the data: the same unified ids, more slowly.",
        &MERGE_LINK_IN_MEMORY,
        0,
        10_000_000,
        // The merge runs as the extension's owner: a role that may only
        // merge must not make it take gigabytes, or crawl while it holds
        // the merge lock.
        GucContext::Suset,
        GucFlags::default(),
    );
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
    GucRegistry::define_string_guc(
        c"crm_sync.allowed_networks",
        c"Internal networks syncs may connect to, as comma-separated CIDRs (e.g. 10.0.0.0/8).",
        c"Empty by default: a CRM host that resolves to a private, loopback, link-local or otherwise internal address is refused (plain http to loopback excepted), so a source cannot reach the server's own network or a cloud metadata endpoint.",
        &ALLOWED_NETWORKS,
        GucContext::Suset,
        GucFlags::default(),
    );
    // SAFETY: called once from _PG_init with a static C string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"crm_sync".as_ptr()) };
}
