//! In-database tests of the SQL API that need no CRM: run by `cargo pgrx test`.
//! End-to-end syncs against the mock live in tests/e2e.

#[pgrx::pg_schema]
#[allow(clippy::module_inception)]
mod tests {
    use pgrx::prelude::*;

    fn create_demo() {
        Spi::run(
            "SELECT crm_sync.create_source('hs', 'hubspot', '{\"base_url\": \"http://127.0.0.1:9\"}', '{\"access_token\": \"pat-secret-123\"}')",
        )
        .unwrap();
    }

    #[pg_test]
    fn create_source_registers_streams_and_schema() {
        create_demo();
        let streams = Spi::get_one::<String>("SELECT string_agg(stream, ',' ORDER BY stream) FROM crm_sync.streams WHERE source = 'hs'")
            .unwrap()
            .unwrap();
        assert_eq!(streams, "companies,contacts,deals");
        assert_eq!(
            Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'hs')")
                .unwrap(),
            Some(true)
        );
    }

    fn create_sf() {
        Spi::run(
            "SELECT crm_sync.create_source('sf', 'salesforce', '{\"login_url\": \"http://127.0.0.1:9\"}', '{\"client_id\": \"cid\", \"refresh_token\": \"rt-secret\"}')",
        )
        .unwrap();
    }

    #[pg_test]
    fn salesforce_sources_get_their_streams_and_add_stream_registers_objects() {
        create_sf();
        let streams = Spi::get_one::<String>("SELECT string_agg(stream || '=' || object, ',' ORDER BY stream) FROM crm_sync.streams WHERE source = 'sf'")
            .unwrap()
            .unwrap();
        assert_eq!(
            streams,
            "account=Account,contact=Contact,lead=Lead,opportunity=Opportunity,user=User"
        );
        let name = Spi::get_one::<String>("SELECT crm_sync.add_stream('sf', 'Invoice__c')")
            .unwrap()
            .unwrap();
        assert_eq!(name, "invoice__c");
        let name = Spi::get_one::<String>(
            "SELECT crm_sync.add_stream('sf', 'Invoice__c', 'invoices', '{Name,Amount__c}')",
        )
        .unwrap()
        .unwrap();
        assert_eq!(name, "invoices");
        let props = Spi::get_one::<Vec<String>>(
            "SELECT properties FROM crm_sync.streams WHERE source = 'sf' AND stream = 'invoices'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(props, ["Name", "Amount__c"]);
    }

    #[pg_test]
    fn discover_and_add_stream_are_not_public() {
        Spi::run("CREATE ROLE nobody_special").unwrap();
        for f in [
            "crm_sync.discover(text)",
            "crm_sync.discover(text, text)",
            "crm_sync.add_stream(text, text, text, text[])",
            "crm_sync.sync(text, text, boolean)",
        ] {
            let can = Spi::get_one::<bool>(&format!(
                "SELECT has_function_privilege('nobody_special', '{f}', 'EXECUTE')"
            ))
            .unwrap();
            assert_eq!(can, Some(false), "{f} must not be executable by PUBLIC");
        }
    }

    /// The merge after a sync reads the rows it wrote by `_run_id`: new
    /// landing tables are indexed on it, and a table landed before (no
    /// index) gets one at its next sync, once, with a name that fits
    /// however long the stream's.
    #[pg_test]
    fn landing_tables_index_run_id() {
        use crate::landing::{ensure_table, Column};
        use crm_sync_core::types::PgType;
        let run_indexes = |rel: &str| {
            Spi::get_one_with_args::<i64>(
                "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                  WHERE i.indrelid = $1::regclass AND a.attname = '_run_id'",
                &[rel.into()],
            )
            .unwrap()
            .unwrap()
        };
        let c = Column {
            property: "Name".into(),
            column: "name".into(),
            pg_type: PgType::Text,
        };
        Spi::run("CREATE SCHEMA land3").unwrap();
        let long = "s".repeat(63);
        ensure_table("land3", &long, std::slice::from_ref(&c)).unwrap();
        assert_eq!(run_indexes(&format!("land3.{long}")), 1);
        ensure_table("land3", &long, std::slice::from_ref(&c)).unwrap();
        assert_eq!(run_indexes(&format!("land3.{long}")), 1, "indexed once");
        // A table landed by an earlier version.
        Spi::run(
            "CREATE TABLE land3.old (id text PRIMARY KEY, name text, _raw jsonb NOT NULL, _updated_at timestamptz,
                                     _deleted_at timestamptz, _synced_at timestamptz NOT NULL DEFAULT now(), _run_id bigint)",
        )
        .unwrap();
        assert_eq!(run_indexes("land3.old"), 0);
        ensure_table("land3", "old", std::slice::from_ref(&c)).unwrap();
        assert_eq!(run_indexes("land3.old"), 1);
        // A table of another owner syncs as before, without the index
        // (only its owner may build one).
        Spi::run(
            "CREATE ROLE land3_owner; CREATE ROLE land3_syncer;
             CREATE TABLE land3.theirs (id text PRIMARY KEY, name text, _raw jsonb NOT NULL, _updated_at timestamptz,
                                        _deleted_at timestamptz, _deleted_reason text, _merged_into text,
                                        _synced_at timestamptz NOT NULL DEFAULT now(), _run_id bigint);
             ALTER TABLE land3.theirs OWNER TO land3_owner;
             GRANT USAGE ON SCHEMA land3 TO land3_syncer;
             GRANT ALL ON land3.theirs TO land3_syncer;
             SET ROLE land3_syncer",
        )
        .unwrap();
        let synced = ensure_table("land3", "theirs", &[c]);
        Spi::run("RESET ROLE").unwrap();
        assert!(synced.is_ok(), "{:?}", synced.err());
        assert_eq!(run_indexes("land3.theirs"), 0);
    }

    #[pg_test]
    fn landing_tables_compress_with_lz4_where_available() {
        use crate::landing::{ensure_table, Column};
        use crm_sync_core::types::PgType;
        Spi::run("CREATE SCHEMA land2").unwrap();
        let c = Column {
            property: "Description".into(),
            column: "description".into(),
            pg_type: PgType::Text,
        };
        ensure_table("land2", "t", &[c]).unwrap();
        let lz4 = Spi::get_one::<bool>(
            "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
        )
        .unwrap()
        .unwrap();
        let methods = Spi::get_one::<String>(
            "SELECT string_agg(attname || '=' || coalesce(nullif(attcompression::text, ''), '-'), ',' ORDER BY attnum)
               FROM pg_attribute WHERE attrelid = 'land2.t'::regclass AND attname IN ('description', '_raw')",
        )
        .unwrap()
        .unwrap();
        if lz4 {
            assert_eq!(methods, "description=l,_raw=l");
        } else {
            assert_eq!(methods, "description=-,_raw=-");
        }
    }

    #[pg_test(error = "stream \"invoice__c\" of source \"sf\" already exists")]
    fn add_stream_twice_is_an_error() {
        create_sf();
        Spi::run("SELECT crm_sync.add_stream('sf', 'Invoice__c')").unwrap();
        Spi::run("SELECT crm_sync.add_stream('sf', 'Invoice__c')").unwrap();
    }

    #[pg_test(error = "invalid object name 'Invoice; DROP'")]
    fn add_stream_checks_the_object_name() {
        create_sf();
        Spi::run("SELECT crm_sync.add_stream('sf', 'Invoice; DROP')").unwrap();
    }

    #[pg_test(
        error = "source \"x\": the JWT bearer flow needs credentials.username (the Salesforce user to act as)"
    )]
    fn salesforce_credentials_are_checked() {
        Spi::run("SELECT crm_sync.create_source('x', 'salesforce', '{}', '{\"client_id\": \"c\", \"private_key\": \"k\"}')").unwrap();
    }

    #[pg_test(error = "source \"hs\" already exists")]
    fn duplicate_source_is_an_error() {
        create_demo();
        create_demo();
    }

    #[pg_test(error = "invalid source name 'Bad-Name'")]
    fn bad_source_name_is_an_error() {
        Spi::run("SELECT crm_sync.create_source('Bad-Name', 'hubspot', '{}', '{\"access_token\": \"x\"}')").unwrap();
    }

    #[pg_test(error = "source \"x\": unknown provider \"hubspott\"")]
    fn unknown_provider_is_an_error() {
        Spi::run("SELECT crm_sync.create_source('x', 'hubspott', '{}', '{}')").unwrap();
    }

    #[pg_test(
        error = "source \"x\": provider hubspot needs credentials.access_token, or client_id, client_secret and refresh_token"
    )]
    fn missing_credentials_is_an_error() {
        Spi::run("SELECT crm_sync.create_source('x', 'hubspot', '{}', '{}')").unwrap();
    }

    #[pg_test(
        error = "source \"x\": plain http:// is only allowed to loopback addresses, not to example.com"
    )]
    fn insecure_http_is_refused() {
        Spi::run("SELECT crm_sync.create_source('x', 'hubspot', '{\"base_url\": \"http://example.com\"}', '{\"access_token\": \"t\"}')").unwrap();
    }

    #[pg_test(error = "source \"nope\" does not exist")]
    fn sync_of_unknown_source_is_an_error() {
        Spi::run("SELECT * FROM crm_sync.sync('nope')").unwrap();
    }

    #[pg_test(error = "source \"hs\": stream \"tickets\" does not exist")]
    fn sync_of_unknown_stream_is_an_error() {
        create_demo();
        Spi::run("SELECT * FROM crm_sync.sync('hs', 'tickets')").unwrap();
    }

    #[pg_test]
    fn alter_source_merges_and_drop_source_keeps_or_drops_data() {
        create_demo();
        Spi::run("SELECT crm_sync.alter_source('hs', options => '{\"lookback_seconds\": 5}')")
            .unwrap();
        let o =
            Spi::get_one::<pgrx::JsonB>("SELECT options FROM crm_sync.sources WHERE name = 'hs'")
                .unwrap()
                .unwrap();
        assert_eq!(
            o.0,
            serde_json::json!({"base_url": "http://127.0.0.1:9", "lookback_seconds": 5})
        );
        Spi::run("SELECT crm_sync.alter_source('hs', options => '{\"lookback_seconds\": null}')")
            .unwrap();
        let o =
            Spi::get_one::<pgrx::JsonB>("SELECT options FROM crm_sync.sources WHERE name = 'hs'")
                .unwrap()
                .unwrap();
        assert_eq!(o.0, serde_json::json!({"base_url": "http://127.0.0.1:9"}));
        Spi::run("CREATE TABLE hs.keepme (x int)").unwrap();
        Spi::run("SELECT crm_sync.drop_source('hs')").unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM crm_sync.streams WHERE source = 'hs'")
                .unwrap(),
            Some(0)
        );
        assert_eq!(
            Spi::get_one::<bool>("SELECT to_regclass('hs.keepme') IS NOT NULL").unwrap(),
            Some(true)
        );
        create_demo_again_after_drop();
    }

    fn create_demo_again_after_drop() {
        // The schema is still there, so the name is taken until the data goes.
        let r = Spi::run("DROP SCHEMA hs CASCADE");
        assert!(r.is_ok());
        create_demo();
        Spi::run("SELECT crm_sync.drop_source('hs', drop_data => true)").unwrap();
        assert_eq!(
            Spi::get_one::<bool>("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'hs')")
                .unwrap(),
            Some(false)
        );
    }

    #[pg_test]
    fn catalog_tables_are_dumped_with_pg_dump() {
        let dumped = Spi::get_one::<String>(
            "SELECT string_agg(c::regclass::text, ',' ORDER BY c::regclass::text)
               FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = 'pg_crm_sync'",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            dumped,
            "crm.companies,crm.contacts,crm.deals,crm.merged_ids,crm_sync.access,crm_sync.checkpoints,crm_sync.credentials,crm_sync.field_priority,crm_sync.invalid_values,crm_sync.jobs,crm_sync.jobs_job_id_seq,crm_sync.landing_columns,crm_sync.mappings,crm_sync.match_rules,crm_sync.merge_state,crm_sync.removed_defaults,crm_sync.runs,crm_sync.runs_run_id_seq,crm_sync.schedules,crm_sync.source_records,crm_sync.sources,crm_sync.specs,crm_sync.streams,crm_sync.unified_ids,crm_sync.watermarks"
        );
    }

    #[pg_test]
    fn credentials_are_hidden_from_other_roles() {
        create_demo();
        Spi::run("CREATE ROLE crm_reader").unwrap();
        // Even the read level, which sees everything else.
        Spi::run("SELECT crm_sync.grant_access('crm_reader', 'read')").unwrap();
        Spi::run("SET ROLE crm_reader").unwrap();
        let sources = Spi::get_one::<i64>("SELECT count(*) FROM crm_sync.sources").unwrap();
        assert_eq!(sources, Some(1), "sources are readable");
        let can_read =
            Spi::get_one::<bool>("SELECT has_table_privilege('crm_sync.credentials', 'SELECT')")
                .unwrap();
        assert_eq!(can_read, Some(false));
        let can_sync = Spi::get_one::<bool>("SELECT has_function_privilege('crm_sync.create_source(text,text,jsonb,jsonb)', 'EXECUTE')").unwrap();
        assert_eq!(can_sync, Some(false));
        Spi::run("RESET ROLE").unwrap();
    }

    #[pg_test]
    fn a_forgotten_field_keeps_its_landed_values() {
        use crate::landing::{ensure_table, Column, SpiSink};
        use crm_sync_core::engine::Sink;
        use crm_sync_core::source::Record;
        use crm_sync_core::types::PgType;
        Spi::run("CREATE SCHEMA land").unwrap();
        let col = |p: &str| Column {
            property: p.into(),
            column: p.to_lowercase(),
            pg_type: PgType::Text,
        };
        let cols = ensure_table("land", "t", &[col("Name"), col("Tier__c")]).unwrap();
        let rec = |name: &str, tier: Option<&str>| {
            let mut fields = serde_json::Map::new();
            fields.insert("Name".into(), name.into());
            if let Some(t) = tier {
                fields.insert("Tier__c".into(), t.into());
            }
            Record {
                id: "1".into(),
                updated_at: None,
                deleted_at: None,
                raw: serde_json::Value::Object(fields.clone()).to_string(),
                merged_ids: Vec::new(),
                deletion_only: false,
                unparsed: 0,
                fields,
            }
        };
        let mut sink = SpiSink::new("land", "t", cols, 1);
        sink.write(&[rec("a", Some("Gold"))]).unwrap();
        sink.forget_fields(&["Tier__c".to_owned()]);
        let stats = sink.write(&[rec("b", None)]).unwrap();
        assert_eq!(stats.upserted, 1);
        let row = Spi::get_two::<String, String>("SELECT name, tier__c FROM land.t WHERE id = '1'")
            .unwrap();
        assert_eq!(row, (Some("b".into()), Some("Gold".into())));
    }

    #[pg_test]
    fn batch_arrays_are_the_arrays_postgres_builds() {
        use crate::landing::{text_array, timestamptz_array};
        // Strings of every length modulo 4 (padding), NULLs across a bitmap
        // byte boundary, multi-byte UTF-8, and an empty string.
        let words: Vec<Option<String>> = (0..19)
            .map(|i| (i % 5 != 3).then(|| "é".repeat(i % 4) + &"x".repeat(i)))
            .chain([Some(String::new())])
            .collect();
        let refs: Vec<Option<&str>> = words.iter().map(|w| w.as_deref()).collect();
        let same = Spi::connect(|c| {
            let expected = "ARRAY(SELECT CASE WHEN i % 5 = 3 THEN NULL ELSE repeat('é', i % 4) || repeat('x', i) END
                                    FROM generate_series(0, 18) i) || ''::text";
            c.select(
                &format!("SELECT $1::text[] IS NOT DISTINCT FROM {expected} AND array_length($1, 1) = 20 AND $1[20] = ''"),
                None,
                &[text_array(&refs).unwrap()],
            )
            .unwrap()
            .first()
            .get_one::<bool>()
            .unwrap()
        });
        assert_eq!(same, Some(true));
        let stamps = [
            Some(0),
            None,
            Some(1_500_000),
            Some(-86_400_000_000),
            None,
            None,
            None,
            None,
            Some(7),
        ];
        let same = Spi::connect(|c| {
            c.select(
                "SELECT $1 IS NOT DISTINCT FROM ARRAY['2000-01-01 00:00:00+00', NULL, '2000-01-01 00:00:01.5+00',
                        '1999-12-31 00:00:00+00', NULL, NULL, NULL, NULL, '2000-01-01 00:00:00.000007+00']::timestamptz[]",
                None,
                &[timestamptz_array(&stamps).unwrap()],
            )
            .unwrap()
            .first()
            .get_one::<bool>()
            .unwrap()
        });
        assert_eq!(same, Some(true));
        let empty = Spi::connect(|c| {
            c.select(
                "SELECT cardinality($1) = 0 AND cardinality($2) = 0",
                None,
                &[text_array(&[]).unwrap(), timestamptz_array(&[]).unwrap()],
            )
            .unwrap()
            .first()
            .get_one::<bool>()
            .unwrap()
        });
        assert_eq!(empty, Some(true));
    }

    // The pgrx test server does not preload the library: background syncs
    // say what to configure (the e2e tests run them on a preloaded server).
    #[pg_test(error = "background syncs need pg_crm_sync in shared_preload_libraries")]
    fn sync_async_without_preloading_says_what_to_configure() {
        create_demo();
        Spi::run("SELECT crm_sync.sync_async('hs')").unwrap();
    }

    #[pg_test(error = "source \"nope\" does not exist")]
    fn sync_async_of_unknown_source_is_an_error() {
        Spi::run("SELECT crm_sync.sync_async('nope')").unwrap();
    }

    #[pg_test(error = "if_running must be 'wait' or 'skip', not 'queue'")]
    fn sync_async_checks_if_running() {
        create_demo();
        Spi::run("SELECT crm_sync.sync_async('hs', if_running => 'queue')").unwrap();
    }

    #[pg_test(error = "schedule of source \"hs\": every must be at least 1 second, not 00:00:00.5")]
    fn schedules_are_at_least_a_second_apart() {
        create_demo();
        Spi::run("SELECT crm_sync.schedule('hs', '0.5 seconds')").unwrap();
    }

    fn queue_directly() -> i64 {
        create_demo();
        // What sync_async inserts (it refuses to on this unpreloaded server).
        Spi::get_one::<i64>("INSERT INTO crm_sync.jobs (source) VALUES ('hs') RETURNING job_id")
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn a_queued_job_is_cancelled_without_running() {
        let id = queue_directly();
        let first =
            Spi::get_one_with_args::<bool>("SELECT crm_sync.cancel($1)", &[id.into()]).unwrap();
        assert_eq!(first, Some(true));
        let again =
            Spi::get_one_with_args::<bool>("SELECT crm_sync.cancel($1)", &[id.into()]).unwrap();
        assert_eq!(again, Some(false), "an ended job cannot be cancelled");
        let row = Spi::get_one_with_args::<bool>(
            "SELECT status = 'cancelled' AND started_at IS NULL AND finished_at IS NOT NULL FROM crm_sync.jobs WHERE job_id = $1",
            &[id.into()],
        )
        .unwrap();
        assert_eq!(row, Some(true));
    }

    #[pg_test(error = "job 77 was queued in this transaction, so no worker can see it yet")]
    fn waiting_for_a_job_queued_in_the_same_transaction_is_an_error() {
        create_demo();
        Spi::run("INSERT INTO crm_sync.jobs (job_id, source) VALUES (77, 'hs')").unwrap();
        Spi::run("SELECT crm_sync.wait(77, '1 s')").unwrap();
    }

    #[pg_test(error = "background syncs need pg_crm_sync in shared_preload_libraries")]
    fn schedule_without_preloading_says_what_to_configure() {
        create_demo();
        Spi::run("SELECT crm_sync.schedule('hs', '15 minutes')").unwrap();
    }

    /// A cancel that arrives just before a WARNING or LOG line (a job's
    /// worker logs the error that ended a stream, and `crm_sync.cancel()`
    /// and the launcher both signal it) is not acted on by the report: it
    /// acts at the next interrupt check, as an ERROR the code around can
    /// catch. Acted on inside the report, it jumped past every catch to
    /// the outermost handler, and the worker exited without recording how
    /// its job ended.
    #[pg_test]
    fn a_cancel_pending_during_a_report_acts_at_the_next_check() {
        use crate::report;
        for level in ["warning", "log", "notice"] {
            // What a SIGINT's handler (StatementCancelHandler) sets.
            unsafe {
                pg_sys::QueryCancelPending = 1;
                pg_sys::InterruptPending = 1;
            }
            let made = std::panic::catch_unwind(|| match level {
                "warning" => report::warning!("a warning with a cancel pending"),
                "log" => report::log!("a log line with a cancel pending"),
                _ => report::notice!("a notice with a cancel pending"),
            });
            assert!(made.is_ok(), "{level}");
            assert_eq!(unsafe { pg_sys::QueryCancelPending }, 1, "{level}");
            let checked = crate::txn::in_subtransaction(crate::txn::check_interrupts);
            assert_eq!(
                checked,
                Err("canceling statement due to user request".to_owned()),
                "{level}"
            );
        }
        // The transaction goes on.
        assert_eq!(Spi::get_one::<i32>("SELECT 1").unwrap(), Some(1));
    }

    #[pg_test(error = "job 424242 does not exist")]
    fn cancel_of_unknown_job_is_an_error() {
        Spi::run("SELECT crm_sync.cancel(424242)").unwrap();
    }

    #[pg_test]
    fn unschedule_reports_whether_there_was_a_schedule() {
        create_demo();
        Spi::run("INSERT INTO crm_sync.schedules (source, every) VALUES ('hs', '1 hour')").unwrap();
        let gone = Spi::get_one::<bool>("SELECT crm_sync.unschedule('hs')").unwrap();
        assert_eq!(gone, Some(true));
        let again = Spi::get_one::<bool>("SELECT crm_sync.unschedule('hs')").unwrap();
        assert_eq!(again, Some(false));
    }

    #[pg_test]
    fn progress_is_empty_without_running_syncs_and_job_functions_are_not_public() {
        let rows = Spi::get_one::<i64>("SELECT count(*) FROM crm_sync.progress").unwrap();
        assert_eq!(rows, Some(0));
        for f in [
            "crm_sync.sync_async(text,text,boolean,text)",
            "crm_sync.cancel(bigint)",
            "crm_sync.schedule(text,interval,text)",
            "crm_sync.unschedule(text)",
        ] {
            let public = Spi::get_one_with_args::<bool>(
                "SELECT has_function_privilege('public', $1, 'EXECUTE')",
                &[f.into()],
            )
            .unwrap();
            assert_eq!(public, Some(false), "{f}");
        }
    }

    #[pg_test]
    fn status_lists_every_stream_with_its_schedule_and_no_pg_cron() {
        create_demo();
        create_sf();
        Spi::run(
            "UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream = 'deals'",
        )
        .unwrap();
        // A schedule row as crm_sync.schedule() leaves it (that function
        // also checks for the launcher, which these tests do not preload).
        Spi::run(
            "INSERT INTO crm_sync.schedules (source, stream, every, next_run_at)
             VALUES ('hs', 'contacts', '15 minutes', now() + interval '10 minutes')",
        )
        .unwrap();
        let rows = Spi::get_one::<String>(
            "SELECT string_agg(format('%s.%s=%s', source, stream, state), ',' ORDER BY source, stream)
               FROM crm_sync.status",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            rows,
            "hs.companies=never synced,hs.contacts=never synced,hs.deals=disabled,\
             sf.account=never synced,sf.contact=never synced,sf.lead=never synced,\
             sf.opportunity=never synced,sf.user=never synced"
        );
        let sched = Spi::get_one::<String>(
            "SELECT format('%s %s', schedule, next_run_at > now()) FROM crm_sync.status
              WHERE source = 'hs' AND stream = 'contacts'",
        )
        .unwrap();
        assert_eq!(sched.as_deref(), Some("every 00:15:00 t"));
        let none = Spi::get_one::<i64>(
            "SELECT count(*) FROM crm_sync.status WHERE schedule IS NOT NULL OR lag IS NOT NULL",
        )
        .unwrap();
        assert_eq!(none, Some(1));
    }

    #[pg_test]
    fn cron_schedules_fire_next_in_pg_crons_time_zone() {
        // GMT unless cron.timezone says otherwise.
        Spi::run("SET TimeZone = 'UTC'").unwrap();
        let next = Spi::get_one::<String>(
            "SELECT crm_sync._cron_next('30 3 * * *', '2026-12-04 17:31:55+00')::text",
        )
        .unwrap();
        assert_eq!(next.as_deref(), Some("2026-12-05 03:30:00+00"));
        Spi::run("SET cron.timezone = 'America/New_York'").unwrap();
        let next = Spi::get_one::<String>(
            "SELECT crm_sync._cron_next('30 3 * * *', '2026-12-04 17:31:55+00')::text",
        )
        .unwrap();
        assert_eq!(next.as_deref(), Some("2026-12-05 08:30:00+00"));
        let none = Spi::get_one::<bool>(
            "SELECT crm_sync._cron_next('5 seconds', now()) IS NULL AND crm_sync._watermark_time('not a time') IS NULL",
        )
        .unwrap();
        assert_eq!(none, Some(true));
    }

    #[pg_test]
    fn a_source_wide_schedule_is_not_shown_on_disabled_streams() {
        create_sf();
        Spi::run(
            "UPDATE crm_sync.streams SET enabled = false WHERE source = 'sf' AND stream = 'user'",
        )
        .unwrap();
        Spi::run(
            "INSERT INTO crm_sync.schedules (source, every, next_run_at)
             VALUES ('sf', '1 hour', now() + interval '1 hour')",
        )
        .unwrap();
        let rows = Spi::get_one::<String>(
            "SELECT string_agg(format('%s=%s', stream, coalesce(schedule, '-')), ',' ORDER BY stream)
               FROM crm_sync.status WHERE source = 'sf'",
        )
        .unwrap();
        assert_eq!(
            rows.as_deref(),
            Some("account=every 01:00:00,contact=every 01:00:00,lead=every 01:00:00,opportunity=every 01:00:00,user=-")
        );
    }

    #[pg_test]
    fn a_look_alike_cron_job_table_is_not_read() {
        // Without pg_cron, anyone who may create a schema could make a
        // "cron.job" whose rows run their functions as the status reader.
        create_demo();
        Spi::run(
            "CREATE SCHEMA cron;
             CREATE TABLE cron.job (jobid bigint, schedule text, command text, database text,
                                    username text, active boolean, jobname text);
             INSERT INTO cron.job VALUES (1, '* * * * *', $$SELECT crm_sync.sync_async('hs')$$,
                                          current_database(), current_user, true, 'fake');",
        )
        .unwrap();
        let shown =
            Spi::get_one::<i64>("SELECT count(*) FROM crm_sync.status WHERE schedule IS NOT NULL")
                .unwrap();
        assert_eq!(shown, Some(0));
        let jobs = Spi::get_one::<i64>("SELECT count(*) FROM crm_sync._cron_jobs()").unwrap();
        assert_eq!(jobs, Some(0));
    }

    #[pg_test]
    fn a_firing_minute_a_fraction_of_a_second_away_is_next() {
        Spi::run("SET TimeZone = 'UTC'").unwrap();
        let next = Spi::get_one::<String>(
            "SELECT crm_sync._cron_next('30 3 * * *', '2026-12-05 03:29:59.6+00')::text",
        )
        .unwrap();
        assert_eq!(next.as_deref(), Some("2026-12-05 03:30:00+00"));
        // pg_cron's cron.match_dom_and_dow: both day fields must match.
        Spi::run("SET cron.match_dom_and_dow = on").unwrap();
        let next = Spi::get_one::<String>(
            "SELECT crm_sync._cron_next('0 0 13 * 5', '2026-12-04 12:00:00+00')::text",
        )
        .unwrap();
        assert_eq!(next.as_deref(), Some("2027-08-13 00:00:00+00"));
    }

    /// What a role may do: (privilege, object, kind) for has_*_privilege.
    fn may(role: &str, kind: &str, object: &str, privilege: &str) -> bool {
        Spi::get_one_with_args::<bool>(
            &format!("SELECT has_{kind}_privilege($1, $2, $3)"),
            &[role.into(), object.into(), privilege.into()],
        )
        .unwrap()
        .unwrap()
    }

    const SECRETS_AND_VALUES: &[(&str, &str)] = &[
        ("table", "crm_sync.credentials"),
        ("table", "crm.contacts"),
        ("table", "crm.companies"),
        ("table", "crm.identities"),
        ("table", "crm_sync.source_records"),
        ("table", "crm_sync.invalid_values"),
        ("table", "crm_sync.quality"),
        ("table", "crm_sync.runs"),
        ("table", "crm_sync.jobs"),
        ("table", "crm_sync.status"),
        ("table", "crm_sync.sources"),
        ("table", "hs.contacts"),
    ];

    fn landing_table() {
        use crate::landing::{ensure_table, Column};
        use crm_sync_core::types::PgType;
        ensure_table(
            "hs",
            "contacts",
            &[Column {
                property: "email".into(),
                column: "email".into(),
                pg_type: PgType::Text,
            }],
        )
        .unwrap();
    }

    #[pg_test]
    fn a_role_without_a_level_sees_no_crm_value_and_runs_nothing() {
        create_demo();
        landing_table();
        Spi::run("CREATE ROLE nobody_at_all").unwrap();
        for (kind, object) in SECRETS_AND_VALUES {
            assert!(!may("nobody_at_all", kind, object, "SELECT"), "{object}");
        }
        for f in [
            "crm_sync.sync(text,text,boolean)",
            "crm_sync.wait(bigint,interval)",
            "crm_sync.merge(boolean)",
            "crm_sync._progress()",
            "crm_sync.grant_access(regrole,text)",
        ] {
            assert!(!may("nobody_at_all", "function", f, "EXECUTE"), "{f}");
        }
        // The pure cleaners are everyone's.
        assert!(may(
            "nobody_at_all",
            "function",
            "crm_sync.clean_email(text)",
            "EXECUTE"
        ));
        Spi::run("SET ROLE nobody_at_all").unwrap();
        let email =
            Spi::get_one::<String>("SELECT crm_sync.clean_email(' Ada@Example.COM ')").unwrap();
        Spi::run("RESET ROLE").unwrap();
        assert_eq!(email.as_deref(), Some("ada@example.com"));
    }

    #[pg_test]
    fn access_levels_add_up_and_come_off_from_the_top() {
        create_demo();
        Spi::run("CREATE ROLE lvl").unwrap();
        Spi::run("SELECT crm_sync.grant_access('lvl', 'read')").unwrap();
        // A landing table created after the grant is readable too.
        landing_table();
        for (kind, object) in &SECRETS_AND_VALUES[1..] {
            assert!(may("lvl", kind, object, "SELECT"), "read: {object}");
        }
        assert!(!may("lvl", "table", "crm_sync.credentials", "SELECT"));
        assert!(!may(
            "lvl",
            "function",
            "crm_sync.sync(text,text,boolean)",
            "EXECUTE"
        ));
        Spi::run("SELECT crm_sync.grant_access('lvl', 'operate')").unwrap();
        for f in [
            "crm_sync.sync(text,text,boolean)",
            "crm_sync.sync_async(text,text,boolean,text)",
            "crm_sync.cancel(bigint)",
            "crm_sync.wait(bigint,interval)",
            "crm_sync.schedule(text,interval,text)",
            "crm_sync.merge(boolean)",
            "crm_sync.reconcile(text,text)",
        ] {
            assert!(may("lvl", "function", f, "EXECUTE"), "operate: {f}");
        }
        assert!(!may(
            "lvl",
            "function",
            "crm_sync.create_source(text,text,jsonb,jsonb)",
            "EXECUTE"
        ));
        assert!(!may("lvl", "table", "crm_sync.mappings", "INSERT"));
        Spi::run("SELECT crm_sync.grant_access('lvl', 'admin')").unwrap();
        assert!(may(
            "lvl",
            "function",
            "crm_sync.create_source(text,text,jsonb,jsonb)",
            "EXECUTE"
        ));
        assert!(may("lvl", "table", "crm_sync.mappings", "INSERT"));
        assert!(!may("lvl", "table", "crm_sync.credentials", "SELECT"));
        // Granting a lower level keeps the higher one.
        Spi::run("SELECT crm_sync.grant_access('lvl', 'read')").unwrap();
        assert!(may("lvl", "table", "crm_sync.mappings", "INSERT"));
        // Taking operate takes admin too, and leaves read.
        Spi::run("SELECT crm_sync.revoke_access('lvl', 'operate')").unwrap();
        let level =
            Spi::get_one::<String>("SELECT level FROM crm_sync.access WHERE role = 'lvl'::regrole")
                .unwrap();
        assert_eq!(level.as_deref(), Some("read"));
        assert!(!may(
            "lvl",
            "function",
            "crm_sync.sync(text,text,boolean)",
            "EXECUTE"
        ));
        assert!(may("lvl", "table", "hs.contacts", "SELECT"));
        Spi::run("SELECT crm_sync.revoke_access('lvl')").unwrap();
        assert!(!may("lvl", "table", "hs.contacts", "SELECT"));
        assert!(!may("lvl", "table", "crm.contacts", "SELECT"));
    }

    #[pg_test(error = "unknown access level 'superuser'")]
    fn an_unknown_access_level_is_an_error() {
        Spi::run("CREATE ROLE lvl2").unwrap();
        Spi::run("SELECT crm_sync.grant_access('lvl2', 'superuser')").unwrap();
    }

    #[pg_test]
    fn landing_tables_ignore_the_callers_table_defaults() {
        // A caller of a SECURITY DEFINER sync chooses its session's
        // settings; the owner's landing table takes none of them.
        create_demo();
        Spi::run("CREATE ACCESS METHOD caller_heap TYPE TABLE HANDLER heap_tableam_handler")
            .unwrap();
        Spi::run("SET default_table_access_method = 'caller_heap'").unwrap();
        landing_table();
        let am = Spi::get_one::<String>(
            "SELECT a.amname::text FROM pg_class c JOIN pg_am a ON a.oid = c.relam
              WHERE c.oid = 'hs.contacts'::regclass",
        )
        .unwrap();
        assert_eq!(am.as_deref(), Some("heap"));
    }

    fn map_title(expression: &str) {
        Spi::run_with_args(
            "INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source)
             VALUES ('hubspot', 'contacts', 'contact', 'title', $1, 'hs')",
            &[expression.into()],
        )
        .unwrap();
    }

    #[pg_test(error = "mapping of hubspot contacts: it is more than one statement")]
    fn a_mapping_cannot_smuggle_a_statement() {
        create_demo();
        map_title("r.id); DROP TABLE crm_sync.runs; SELECT (1");
    }

    #[pg_test(
        error = "mapping of hubspot contacts: it is more than one expression (a FROM, a second column, a set operation...)"
    )]
    fn a_mapping_is_one_expression() {
        create_demo();
        map_title("1) FROM pg_authid WHERE (true");
    }

    #[pg_test(
        error = "mapping of hubspot contacts: the expression does not compile against hs.contacts: column r.emial does not exist"
    )]
    fn a_mapping_compiles_against_its_landing_tables() {
        create_demo();
        landing_table();
        map_title("lower(r.email) -- a comment ends with its line");
        map_title("upper(r.emial)");
    }

    #[pg_test]
    fn levels_reach_roles_whose_names_need_quoting() {
        create_demo();
        landing_table();
        Spi::run(r#"CREATE ROLE "Sales Ops""#).unwrap();
        Spi::run(r#"SELECT crm_sync.grant_access('"Sales Ops"', 'read')"#).unwrap();
        assert!(may("Sales Ops", "table", "crm.contacts", "SELECT"));
        assert!(may("Sales Ops", "table", "hs.contacts", "SELECT"));
        Spi::run(r#"SELECT crm_sync.revoke_access('"Sales Ops"')"#).unwrap();
        assert!(!may("Sales Ops", "table", "hs.contacts", "SELECT"));
    }

    #[pg_test]
    fn a_dropped_sources_tables_leave_the_levels() {
        create_demo();
        landing_table();
        Spi::run("CREATE ROLE lvl3").unwrap();
        Spi::run("SELECT crm_sync.grant_access('lvl3', 'read')").unwrap();
        assert!(may("lvl3", "table", "hs.contacts", "SELECT"));
        Spi::run("SET crm_sync.merge_after_sync = off").unwrap();
        Spi::run("SELECT crm_sync.drop_source('hs')").unwrap();
        // The table stays, for its owner only: revoke_access would no
        // longer reach it.
        assert!(!may("lvl3", "table", "hs.contacts", "SELECT"));
        assert!(!may("lvl3", "schema", "hs", "USAGE"));
    }

    #[pg_test(error = "source name \"lvl4\" is the name of a role")]
    fn a_source_is_not_named_after_a_role() {
        Spi::run("CREATE ROLE lvl4").unwrap();
        Spi::run(
            "SELECT crm_sync.create_source('lvl4', 'hubspot', '{\"base_url\": \"http://127.0.0.1:9\"}', '{\"access_token\": \"t-123\"}')",
        )
        .unwrap();
    }

    /// JSON texts as the CRMs send them, and the corners of jsonb's layout.
    fn json_corpus() -> Vec<String> {
        let mut out: Vec<String> = [
            r#"{"id":"101","properties":{"email":"ada@example.com","firstname":"Ada","createdate":"2024-01-01T00:00:00Z","hs_object_id":"101","annualrevenue":null,"num_employees":"250"},"createdAt":"2024-01-01T00:00:00.000Z","archived":false,"associations":{"companies":{"results":[{"id":"7","type":"contact_to_company"}]}}}"#,
            r#"{"attributes":{"type":"Account","url":"/services/data/v59.0/sobjects/Account/001000000000001AAA"},"Id":"001000000000001AAA","Name":"Acme, Inc.","AnnualRevenue":1.25E7,"NumberOfEmployees":250,"BillingLatitude":37.774929,"BillingLongitude":-122.419416,"IsDeleted":false,"Description":"Line one\nLine \"two\"\t\u00e9\ud83d\ude00 \/","LastModifiedDate":"2024-06-01T12:00:00.000+0000"}"#,
            r#"{"b":1,"a":2,"ab":3,"a":4,"":5,"é":6,"aa":[],"z":{}}"#,
            r#"[1,"two",true,false,null,[[]],{"k":[{"x":-0}]}]"#,
            r#"  {"spaces" :  [ 1 , 2 ]  }  "#,
            r#""a scalar string""#,
            "42",
            "true",
            "null",
            "[]",
            "{}",
            r#"{"long":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Past 32 entries (offsets every 32nd), keys of mixed lengths, and
        // numbers between strings (alignment padding).
        let wide: Vec<String> = (0..150)
            .map(|i| match i % 4 {
                0 => format!("\"k{}\": \"v{i}\"", "x".repeat(i % 7)),
                1 => format!("\"n{i}\": {}.{}", i * 37, i % 10),
                2 => format!("\"a{i}\": [{i}, \"s\", {{\"d\": {i}e-2}}]"),
                _ => format!("\"b{i}\": {}", i % 2 == 0),
            })
            .collect();
        out.push(format!("{{{}}}", wide.join(", ")));
        out.push(format!(
            "[{}]",
            (0..100)
                .map(|i| format!("\"{}\"", "y".repeat(i)))
                .collect::<Vec<_>>()
                .join(",")
        ));
        out.push(format!("{}{}", "[".repeat(60), "]".repeat(60)));
        // Numbers: every shape numeric_in reads differently.
        for int in [
            "0",
            "1",
            "9",
            "10",
            "999",
            "1000",
            "9999",
            "10000",
            "12345678",
            "100000000",
            "123456789012345678901234567890",
            // Past what the builder keeps on the stack.
            "1234567890123456789012345678901234567890123456789012345678901234567890",
        ] {
            for frac in [
                "",
                ".0",
                ".5",
                ".05",
                ".000",
                ".0001",
                ".00010",
                ".123456789",
                ".99999999",
                ".1234567890123456789012345678901234567890123456789012345678900",
            ] {
                for exp in [
                    "", "e0", "e1", "E+3", "e-1", "e-4", "e-7", "e12", "e63", "e64", "e-62",
                    "e-63", "e-64", "e-70", "e300", "e-300", "e1000",
                ] {
                    for sign in ["", "-"] {
                        out.push(format!("{sign}{int}{frac}{exp}"));
                    }
                }
            }
        }
        out
    }

    #[pg_test]
    fn records_built_as_jsonb_in_rust_are_jsonb_in_s_bytes() {
        let mut checked = 0;
        for json in json_corpus() {
            let ours = crm_sync_core::jsonb::encode(&json)
                .unwrap_or_else(|| panic!("not encoded: {json}"));
            let theirs = crate::landing::jsonb_bytes(&json).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{json}");
            assert_eq!(ours[4..], theirs[4..], "{json}");
            checked += 1;
        }
        assert!(checked > 3000, "{checked}");
        // What the builder leaves to jsonb_in still lands as jsonb_in makes it.
        let lone = r#"{"a":"1e00001","b":1e00001}"#;
        assert!(crm_sync_core::jsonb::encode(lone).is_none());
        let left = crm_sync_core::rows::Json::new(std::borrow::Cow::Borrowed(lone), true);
        assert!(matches!(&left, crm_sync_core::rows::Json::Text(t) if t.as_ref() == lone));
        let arr = crate::landing::jsonb_array_of(&[Some(left)]).unwrap();
        let same = Spi::get_one_with_args::<bool>(
            "SELECT ($1::jsonb[])[1]::text = $2::jsonb::text",
            &[arr, lone.into()],
        );
        assert_eq!(same, Ok(Some(true)));
    }

    #[pg_test]
    fn a_jsonb_array_of_records_reads_back_as_written() {
        let corpus = json_corpus();
        let items: Vec<Option<&str>> = corpus
            .iter()
            .map(|s| Some(s.as_str()))
            .chain([None])
            .collect();
        let back: Vec<Option<String>> = Spi::connect(|c| {
            let arr = crate::landing::jsonb_array(&items).unwrap();
            c.select(
                "SELECT (u.j = u2.t::jsonb)::text FROM unnest($1::jsonb[], $2::text[]) AS u(j, x)
                   CROSS JOIN LATERAL (SELECT u.x AS t) u2",
                None,
                &[arr, items.clone().into()],
            )
            .unwrap()
            .map(|r| r.get::<String>(1).unwrap())
            .collect()
        });
        assert_eq!(back.len(), items.len());
        assert!(
            back[..items.len() - 1]
                .iter()
                .all(|b| b.as_deref() == Some("true")),
            "{back:?}"
        );
        assert_eq!(back[items.len() - 1], None);
    }

    #[pg_test]
    fn a_full_merge_of_an_entity_without_fields_writes_nothing_and_succeeds() {
        Spi::run("DELETE FROM crm_sync.unified_fields WHERE entity = 'deal'").unwrap();
        let n = Spi::get_one::<i64>("SELECT count(*) FROM crm_sync.merge(full => true)")
            .unwrap()
            .unwrap();
        assert_eq!(n, 3);
    }

    #[pg_test]
    fn the_lineage_of_a_row_of_one_record_names_the_fields_its_values_have() {
        // As the merge wrote it before: every field, less those the
        // record's values lack.
        let cases = [
            (
                r#"{"email": "a@b.c", "title": null, "x": 1}"#,
                r#"["email", "phone", "title"]"#,
            ),
            ("{}", r#"["email", "phone"]"#),
            (
                r#"{"it's": "q", "é\"x": 2, "email": {"a": 1}}"#,
                r#"["email", "it's", "é\"x", "z"]"#,
            ),
            (r#"{"a": 1}"#, "[]"),
        ];
        for (vals, fields) in cases {
            let same = Spi::get_one_with_args::<bool>(
                "SELECT crm_sync._lineage_of_one($1::jsonb, $2)
                        = (SELECT coalesce(jsonb_object_agg(f, 1), '{}') FROM jsonb_array_elements_text($2::jsonb) f
                            WHERE $1::jsonb ? f)",
                &[vals.into(), fields.into()],
            )
            .unwrap();
            assert_eq!(same, Some(true), "{vals} {fields}");
        }
        let wide: Vec<String> = (0..80).map(|i| format!("f{i}")).collect();
        let got = Spi::get_one_with_args::<String>(
            "SELECT crm_sync._lineage_of_one('{\"f2\": 0, \"f70\": 1, \"g\": 2}', $1)::text",
            &[serde_json::to_string(&wide).unwrap().into()],
        )
        .unwrap();
        assert_eq!(got.as_deref(), Some(r#"{"f2": 1, "f70": 1}"#));
    }
}
