-- crm_sync.status: one row per source and stream, the one place an operator
-- looks. Built from crm_sync.runs, watermarks, jobs, schedules, the progress
-- board and the statistics of the landing tables; pg_cron's jobs are read
-- when pg_cron is installed in this database.

-- pg_cron jobs of this database that sync a source, with the source and
-- stream their command names (crm_sync._sync_calls). Read only from the
-- cron.job of the pg_cron extension: a look-alike table someone created
-- in a schema "cron" is ignored (its columns could run their owner's
-- functions as whoever reads the status). Each role sees its own cron jobs
-- only (pg_cron's row security); none without pg_cron.
CREATE FUNCTION crm_sync._cron_jobs()
RETURNS TABLE (source text, stream text, jobname text, schedule text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_depend d
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pg_cron'
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_extension'::regclass
           AND d.deptype = 'e' AND d.objid = pg_catalog.to_regclass('cron.job')) THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
        SELECT c.source, c.stream, j.jobname::text, j.schedule::text
          FROM cron.job j, crm_sync._sync_calls(j.command) c
         WHERE j.database = pg_catalog.current_database() AND j.active$q$;
EXCEPTION WHEN insufficient_privilege OR undefined_column THEN
    -- No access to pg_cron's schema, or a pg_cron too old to have jobname
    -- and active: no schedule shown rather than no status at all.
    RETURN;
END
$fn$;

-- pg_cron's time zone and day rule. Both settings are superuser-only, so
-- they are read with the extension owner's rights; they say nothing
-- secret.
CREATE FUNCTION crm_sync._cron_settings(OUT timezone text, OUT match_dom_and_dow boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce(nullif(pg_catalog.current_setting('cron.timezone', true), ''), 'GMT'),
           coalesce(nullif(pg_catalog.current_setting('cron.match_dom_and_dow', true), '')::boolean, false)
$fn$;

-- The next time a pg_cron schedule fires after `after`.
CREATE FUNCTION crm_sync._cron_next(schedule text, after timestamptz)
RETURNS timestamptz
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT (pg_catalog.to_timestamp(crm_sync._cron_next_local(
                schedule, pg_catalog.floor(extract(epoch FROM after AT TIME ZONE z.timezone))::bigint,
                z.match_dom_and_dow))
            AT TIME ZONE 'UTC') AT TIME ZONE z.timezone
      FROM crm_sync._cron_settings() z
$fn$;

CREATE VIEW crm_sync.status AS
WITH cron AS MATERIALIZED (SELECT * FROM crm_sync._cron_jobs())
SELECT t.source,
       t.stream,
       s.provider,
       t.enabled,
       CASE WHEN p.pid IS NOT NULL OR j.job_id IS NOT NULL THEN 'syncing'
            WHEN NOT t.enabled THEN 'disabled'
            WHEN err.failures IS NOT NULL THEN 'failing'
            WHEN last.status = 'cancelled' THEN 'cancelled'
            WHEN last.run_id IS NULL THEN 'never synced'
            ELSE 'ok' END AS state,
       last.status AS last_status,
       last.finished_at AS last_run_at,
       last.mode AS last_mode,
       last.records AS last_records,
       last.records_deleted AS last_records_deleted,
       crm_sync._watermark_time(w.cursor) AS watermark,
       date_trunc('second', now() - crm_sync._watermark_time(w.cursor)) AS lag,
       err.error_sqlstate,
       err.error,
       err.finished_at AS error_at,
       err.failures,
       j.job_id AS running_job,
       p.pid AS syncing_pid,
       p.records AS syncing_records,
       nxt.next_run_at,
       nxt.schedule,
       st.n_live_tup AS landing_rows
  FROM crm_sync.streams t
  JOIN crm_sync.sources s ON s.name = t.source
  LEFT JOIN crm_sync.watermarks w ON w.source = t.source AND w.stream = t.stream
  -- Runs are read newest first through runs_source_stream_started, so a
  -- stream with years of history costs what one with a day does.
  LEFT JOIN LATERAL (
        SELECT r.run_id, r.status, r.finished_at, r.mode, r.records, r.records_deleted
          FROM crm_sync.runs r
         WHERE r.source = t.source AND r.stream = t.stream
         ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1) last ON true
  LEFT JOIN LATERAL (
        SELECT ok.started_at
          FROM crm_sync.runs ok
         WHERE ok.source = t.source AND ok.stream = t.stream AND ok.status = 'succeeded'
         ORDER BY ok.started_at DESC LIMIT 1) good ON true
  -- Failed runs since the last success: the newest, and how many
  -- (cancelled ones are no failure).
  LEFT JOIN LATERAL (
        SELECT r.error, r.error_sqlstate, r.finished_at, count(*) OVER () AS failures
          FROM crm_sync.runs r
         WHERE r.source = t.source AND r.stream = t.stream AND r.status = 'failed'
           AND r.started_at > coalesce(good.started_at, '-infinity')
         ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1) err ON true
  LEFT JOIN LATERAL (
        SELECT q.job_id FROM crm_sync.jobs q
         WHERE q.status = 'running' AND q.source = t.source AND (q.stream = t.stream OR (q.stream IS NULL AND t.enabled))
         ORDER BY q.job_id LIMIT 1) j ON true
  LEFT JOIN crm_sync.progress p ON p.source = t.source AND p.stream = t.stream
  LEFT JOIN LATERAL (
        SELECT min(x.next_run_at) AS next_run_at,
               string_agg(x.schedule, '; ' ORDER BY x.schedule) AS schedule
          FROM (SELECT sc.next_run_at, format('every %s', sc.every) AS schedule
                  FROM crm_sync.schedules sc
                 WHERE sc.source = t.source AND (sc.stream = t.stream OR (sc.stream IS NULL AND t.enabled))
                UNION ALL
                SELECT crm_sync._cron_next(c.schedule, now()),
                       format('pg_cron %s: %s', coalesce(c.jobname, '(unnamed)'), c.schedule)
                  FROM cron c
                 WHERE c.source = t.source AND (c.stream = t.stream OR (c.stream IS NULL AND t.enabled))) x
         HAVING count(*) > 0) nxt ON true
  LEFT JOIN pg_catalog.pg_stat_user_tables st ON st.schemaname = t.source AND st.relname = t.stream;

COMMENT ON VIEW crm_sync.status IS
    'One row per source and stream: state (ok, failing, syncing, cancelled, disabled, never synced), the last run (status, when, mode, records), the watermark and lag (now minus watermark), the failed runs since the last success (the newest error and its SQLSTATE), the background job or session syncing it now, the next scheduled run (crm_sync.schedule() or pg_cron), and the landing table''s row count (an estimate from the statistics).';
COMMENT ON COLUMN crm_sync.status.lag IS 'now() minus the watermark: changes in the CRM older than this have landed.';
COMMENT ON COLUMN crm_sync.status.failures IS 'Runs that failed since the last one that succeeded (cancelled runs do not count); error, error_sqlstate and error_at are the newest one''s.';
COMMENT ON COLUMN crm_sync.status.landing_rows IS 'Rows in the landing table, as the statistics estimate them (pg_stat_user_tables.n_live_tup).';

