-- Who may see and do what: three access levels granted to roles, and
-- nothing for PUBLIC but the pure clean_* functions. Loaded last (see
-- src/lib.rs), when every object exists.
--
--   read     SELECT on every landing table (tables created later too), the
--            unified model (schema crm), run history, jobs, progress,
--            status, quality and the model's configuration
--   operate  read + running syncs and merges, waiting for and cancelling
--            jobs, schedules, discovery (which calls the CRM)
--   admin    operate + creating, altering and dropping sources and streams,
--            choosing streams and properties, and editing mappings, match
--            rules and field priorities. Mappings are SQL expressions the
--            merge evaluates with the extension owner's rights: admin
--            means running SQL as the owner.
--
-- crm_sync.credentials is read by the owner only, in every level.

CREATE TABLE crm_sync.access (
    role        regrole PRIMARY KEY,
    level       text NOT NULL CHECK (level IN ('read', 'operate', 'admin')),
    granted_at  timestamptz NOT NULL DEFAULT now(),
    granted_by  text NOT NULL
);
COMMENT ON TABLE crm_sync.access IS
    'Access levels of roles (read, operate, admin), set with crm_sync.grant_access()/revoke_access() and applied to every object of the extension and to each landing table when it is created. Dumped by pg_dump.';
SELECT pg_catalog.pg_extension_config_dump('crm_sync.access', '');

-- The level's rank: 1 read, 2 operate, 3 admin.
CREATE FUNCTION crm_sync._level_rank(level text) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT array_position(ARRAY['read', 'operate', 'admin'], level) $$;

-- Give `r` exactly the privileges of its level (none without one): every
-- privilege on the extension's objects and landing tables is revoked from
-- it first.
CREATE FUNCTION crm_sync._apply_access(r regrole) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    rank integer := (SELECT crm_sync._level_rank(a.level) FROM crm_sync.access a WHERE a.role = r);
    -- The role's name as it is (regrole's text is quoted already: %I on
    -- it would quote twice).
    who name := (SELECT rolname FROM pg_roles WHERE oid = r);
    s text;
    f text;
BEGIN
    IF who IS NULL THEN
        RETURN;  -- a dropped role
    END IF;
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA crm_sync, crm FROM %I', who);
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA crm_sync FROM %I', who);
    EXECUTE format('REVOKE ALL ON SCHEMA crm FROM %I', who);
    FOR s IN SELECT n.nspname FROM crm_sync.sources src JOIN pg_namespace n ON n.nspname = src.name LOOP
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', s, who);
        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', s, who);
    END LOOP;
    IF rank IS NULL THEN
        RETURN;
    END IF;
    -- read
    EXECUTE format('GRANT USAGE ON SCHEMA crm TO %I', who);
    EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA crm TO %I', who);
    EXECUTE format('GRANT SELECT ON crm_sync.sources, crm_sync.streams, crm_sync.watermarks, crm_sync.runs,
                        crm_sync.jobs, crm_sync.checkpoints, crm_sync.schedules, crm_sync.progress, crm_sync.status,
                        crm_sync.quality, crm_sync.mappings, crm_sync.unified_fields, crm_sync.match_rules,
                        crm_sync.field_priority, crm_sync.source_records, crm_sync.unified_ids,
                        crm_sync.invalid_values, crm_sync.merge_state, crm_sync.access,
                        crm_sync.landing_columns, crm_sync.removed_defaults, crm_sync.specs,
                        crm_sync.builtin_specs TO %I', who);
    FOREACH f IN ARRAY ARRAY['crm_sync._progress()', 'crm_sync._watermark_time(text)',
                             'crm_sync._cron_jobs()', 'crm_sync._cron_next(text, timestamptz)',
                             'crm_sync._cron_next_local(text, bigint, boolean)', 'crm_sync._cron_settings()',
                             'crm_sync._sync_calls(text)', 'crm_sync._level_rank(text)',
                             'crm_sync._builtin_specs()'] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, who);
    END LOOP;
    FOR s IN SELECT n.nspname FROM crm_sync.sources src JOIN pg_namespace n ON n.nspname = src.name LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, who);
        EXECUTE format('GRANT SELECT ON ALL TABLES IN SCHEMA %I TO %I', s, who);
    END LOOP;
    IF rank < 2 THEN
        RETURN;
    END IF;
    -- operate
    FOREACH f IN ARRAY ARRAY['crm_sync.sync(text, text, boolean)', 'crm_sync.sync_async(text, text, boolean, text)',
                             'crm_sync.cancel(bigint)', 'crm_sync.wait(bigint, interval)',
                             'crm_sync.schedule(text, interval, text)', 'crm_sync.unschedule(text)',
                             'crm_sync.discover(text)', 'crm_sync.discover(text, text)', 'crm_sync.merge(boolean)',
                             'crm_sync.reconcile(text, text)'] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, who);
    END LOOP;
    IF rank < 3 THEN
        RETURN;
    END IF;
    -- admin
    FOREACH f IN ARRAY ARRAY['crm_sync.create_source(text, text, jsonb, jsonb)',
                             'crm_sync.alter_source(text, jsonb, jsonb)', 'crm_sync.drop_source(text, boolean)',
                             'crm_sync.add_stream(text, text, text, text[])',
                             'crm_sync.register_spec(text, jsonb)', 'crm_sync.drop_spec(text)'] LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, who);
    END LOOP;
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON crm_sync.mappings, crm_sync.match_rules, crm_sync.field_priority TO %I', who);
    EXECUTE format('GRANT EXECUTE ON FUNCTION crm_sync._check_mapping(text, text, text, text) TO %I', who);
    EXECUTE format('GRANT UPDATE (enabled, properties) ON crm_sync.streams TO %I', who);
    EXECUTE format('GRANT DELETE ON crm_sync.checkpoints TO %I', who);
END
$fn$;

-- Re-apply every role's level: after a source (schema) is created, after a
-- restore.
CREATE FUNCTION crm_sync._apply_access_all() RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT crm_sync._apply_access(a.role) FROM crm_sync.access a;
$fn$;

-- A landing table just created: SELECT for every role with a level.
CREATE FUNCTION crm_sync._grant_landing(t regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    who name;
BEGIN
    FOR who IN SELECT x.rolname FROM crm_sync.access a JOIN pg_roles x ON x.oid = a.role LOOP
        EXECUTE format('GRANT SELECT ON %s TO %I', t, who);
    END LOOP;
END
$fn$;

CREATE FUNCTION crm_sync.grant_access(role regrole, level text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF crm_sync._level_rank(level) IS NULL THEN
        RAISE EXCEPTION 'unknown access level %', coalesce(quote_literal(level), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Levels: read (see everything but secrets), operate (read + run syncs and schedules), admin (operate + manage sources, streams and mappings).';
    END IF;
    -- A role keeps the highest level it was granted.
    INSERT INTO crm_sync.access AS a (role, level, granted_by)
    VALUES (grant_access.role, grant_access.level, crm_sync._caller())
    ON CONFLICT ON CONSTRAINT access_pkey DO UPDATE
       SET level = EXCLUDED.level, granted_at = now(), granted_by = EXCLUDED.granted_by
     WHERE crm_sync._level_rank(EXCLUDED.level) > crm_sync._level_rank(a.level);
    PERFORM crm_sync._apply_access(grant_access.role);
END
$fn$;
COMMENT ON FUNCTION crm_sync.grant_access(regrole, text) IS
    'Give a role an access level: read (SELECT on landing tables, the unified model, run history, jobs, progress, status and quality), operate (read + running syncs, merges and schedules), admin (operate + managing sources, streams, mappings, match rules and field priorities; mappings run SQL with the owner''s rights). Remembered, dumped, and applied to landing tables created later.';

CREATE FUNCTION crm_sync.revoke_access(role regrole, level text DEFAULT 'read') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    rank integer := crm_sync._level_rank(level);
BEGIN
    IF rank IS NULL THEN
        RAISE EXCEPTION 'unknown access level %', coalesce(quote_literal(level), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Levels: read, operate, admin.';
    END IF;
    -- The level and those above it go; the ones below stay.
    IF rank = 1 THEN
        DELETE FROM crm_sync.access a WHERE a.role = revoke_access.role;
    ELSE
        UPDATE crm_sync.access a
           SET level = (ARRAY['read', 'operate', 'admin'])[rank - 1], granted_at = now(),
               granted_by = crm_sync._caller()
         WHERE a.role = revoke_access.role AND crm_sync._level_rank(a.level) >= rank;
    END IF;
    PERFORM crm_sync._apply_access(revoke_access.role);
END
$fn$;
COMMENT ON FUNCTION crm_sync.revoke_access(regrole, text) IS
    'Take an access level (and any above it) from a role: revoke_access(r, ''operate'') leaves read; revoke_access(r) takes everything. Jobs and schedules the role queued stop running (their jobs fail with 42501).';

COMMENT ON FUNCTION crm_sync.merge(boolean) IS
    'Merge what the syncs landed since the last merge into the unified model (schema crm); full => true re-reads every landing row and resolves every identity again, with the same result. Runs by itself after each sync (crm_sync.merge_after_sync).';
COMMENT ON FUNCTION crm_sync.sync_async(text, text, boolean, text) IS
    'Queue a sync of one stream (or every enabled stream) for a background worker; returns the job id at once. if_running: ''wait'' (default) runs it after another sync of the same stream ends, ''skip'' ends it as skipped. The job runs only while the role that queued it may sync. See crm_sync.jobs and crm_sync.progress.';
COMMENT ON FUNCTION crm_sync.cancel(bigint) IS
    'Stop a queued or running job (a running one within about a second; rows of batches already committed stay, and the next run resumes from there). True if the job was queued or running.';
COMMENT ON FUNCTION crm_sync.wait(bigint, interval) IS
    'Wait until a job ends and return its status; after timeout, return its status then (queued or running).';
COMMENT ON FUNCTION crm_sync.reconcile(text, text) IS
    'List the ids the CRM has now for one stream (or every enabled stream) and compare: landed rows the CRM no longer has are marked deleted (_deleted_reason = ''gone''), records it has that never landed are read. One row per stream; incremental syncs run it by themselves every reconcile_every (a source option, default 1 day).';
COMMENT ON FUNCTION crm_sync.sync(text, text, boolean) IS
    'Sync one stream (or every enabled stream) of a source in this transaction; returns one row per stream. Rows and watermark commit together.';
COMMENT ON FUNCTION crm_sync.discover(text, text) IS
    'The fields of a stream''s CRM object (or of any object, by its CRM name), the column type each lands as, and whether it is synced.';
COMMENT ON FUNCTION crm_sync.discover(text) IS
    'The objects of a source''s CRM account, the stream that syncs each, and whether it can be synced (reason says why not).';

-- Mappings are SQL the merge evaluates as the owner: each written one must
-- be a single expression that compiles against the landing tables it is
-- for (crm_sync._check_mapping). The shipped ones are in already.
CREATE FUNCTION crm_sync._check_mapping_row() RETURNS trigger
LANGUAGE plpgsql
-- Parsed as the merge parses it (see merge::run).
SET search_path = pg_catalog, pg_temp
SET standard_conforming_strings = on
AS $fn$
BEGIN
    PERFORM crm_sync._check_mapping(NEW.provider, NEW.object, NEW.source, NEW.expression);
    RETURN NEW;
END
$fn$;
CREATE TRIGGER mappings_check BEFORE INSERT OR UPDATE OF provider, object, source, expression
    ON crm_sync.mappings FOR EACH ROW EXECUTE FUNCTION crm_sync._check_mapping_row();

-- PUBLIC: USAGE on crm_sync to reach the cleaners, EXECUTE on the pure
-- cleaners, nothing else: no table, view or other function.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = 'crm_sync'::regnamespace
                AND p.proname NOT IN ('clean_text', 'clean_email', 'clean_phone', 'clean_domain',
                                      'clean_country', 'clean_problem', 'name_key', 'company_key',
                                      'source_record_id') LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
REVOKE ALL ON ALL TABLES IN SCHEMA crm_sync FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA crm FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA crm_sync FROM PUBLIC;
REVOKE ALL ON SCHEMA crm FROM PUBLIC;
GRANT USAGE ON SCHEMA crm_sync TO PUBLIC;
