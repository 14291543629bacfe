-- Background syncs: the job queue, checkpoints of interrupted runs,
-- schedules, and the progress view. The launcher (src/worker/) runs jobs.

CREATE TABLE crm_sync.jobs (
    job_id           bigserial PRIMARY KEY,
    source           text NOT NULL,
    stream           text,
    full_refresh     boolean NOT NULL DEFAULT false,
    if_running       text NOT NULL DEFAULT 'wait' CHECK (if_running IN ('wait', 'skip')),
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    queued_at        timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    worker_pid       integer,
    records          bigint NOT NULL DEFAULT 0,
    run_ids          bigint[] NOT NULL DEFAULT '{}',
    error            text,
    error_sqlstate   text,
    detail           text,
    cancel_requested boolean NOT NULL DEFAULT false,
    scheduled_by     text,
    -- The role that asked (crm_sync._caller(), or a schedule's owner): the
    -- job runs only while it may sync.
    queued_by        text NOT NULL DEFAULT current_user
);
CREATE INDEX jobs_open ON crm_sync.jobs (job_id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_source_queued ON crm_sync.jobs (source, queued_at DESC);
COMMENT ON TABLE crm_sync.jobs IS
    'Background syncs queued with crm_sync.sync_async() or by a schedule, and what became of them. stream NULL means every enabled stream of the source. Each run of a stream is also in crm_sync.runs (run_ids).';
COMMENT ON COLUMN crm_sync.jobs.detail IS
    'Why a job waits, was skipped, or was resumed after its worker stopped.';
COMMENT ON COLUMN crm_sync.jobs.attempts IS
    'Times a worker started the job; above 1 when a crash or restart interrupted it and it resumed from its checkpoint.';

-- NOTIFY crm_sync with the job as JSON when it ends, whoever ends it (its
-- worker, the launcher, crm_sync.cancel()); delivered at commit. The error
-- is cut to 1,000 characters: a payload must stay under 8,000 bytes, and a
-- remote server's text may be four bytes a character.
CREATE FUNCTION crm_sync._notify_job_end() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('crm_sync', json_build_object(
        'job_id', NEW.job_id, 'source', NEW.source, 'stream', NEW.stream,
        'status', NEW.status, 'records', NEW.records, 'run_ids', NEW.run_ids,
        'error', left(NEW.error, 1000), 'finished_at', NEW.finished_at)::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_notify_end AFTER UPDATE OF status ON crm_sync.jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'skipped'))
    EXECUTE FUNCTION crm_sync._notify_job_end();

CREATE TABLE crm_sync.checkpoints (
    source      text NOT NULL,
    stream      text NOT NULL,
    run_id      bigint NOT NULL,
    job_id      bigint,
    mode        text NOT NULL CHECK (mode IN ('full', 'incremental')),
    watermark   text,
    fields      text NOT NULL,
    position    text NOT NULL,
    records     bigint NOT NULL DEFAULT 0,
    api_calls   bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream),
    FOREIGN KEY (source, stream) REFERENCES crm_sync.streams (source, stream) ON DELETE CASCADE
);
COMMENT ON TABLE crm_sync.checkpoints IS
    'Where a background sync stood at its last committed batch: the reader''s position (paging cursor and watermark so far). The next run of the stream in the same mode resumes from it; a finished run removes it.';

CREATE TABLE crm_sync.schedules (
    source      text PRIMARY KEY REFERENCES crm_sync.sources (name) ON DELETE CASCADE,
    stream      text,
    every       interval NOT NULL CHECK (every >= interval '1 second'),
    next_run_at timestamptz NOT NULL DEFAULT now(),
    last_job_id bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Its jobs are queued by this role and run only while it may sync.
    owner       text NOT NULL DEFAULT current_user
);
COMMENT ON TABLE crm_sync.schedules IS
    'Syncs the launcher queues by itself (for servers without pg_cron). Change with crm_sync.schedule()/unschedule().';

SELECT pg_catalog.pg_extension_config_dump('crm_sync.jobs', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.jobs_job_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.checkpoints', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.schedules', '');


CREATE FUNCTION crm_sync.schedule(source text, every interval, stream text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM crm_sync.sources s WHERE s.name = schedule.source) THEN
        RAISE EXCEPTION 'source "%" does not exist', schedule.source
            USING ERRCODE = 'undefined_object',
                  HINT = 'Create it with crm_sync.create_source(); see SELECT name FROM crm_sync.sources.';
    END IF;
    IF every IS NULL OR every < interval '1 second' THEN
        RAISE EXCEPTION 'schedule of source "%": every must be at least 1 second, not %', schedule.source, every
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF schedule.stream IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM crm_sync.streams t WHERE t.source = schedule.source AND t.stream = schedule.stream) THEN
        RAISE EXCEPTION 'source "%": stream "%" does not exist', schedule.source, schedule.stream
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT stream FROM crm_sync.streams WHERE source = ''' || schedule.source || '''.';
    END IF;
    INSERT INTO crm_sync.schedules AS s (source, stream, every, next_run_at, owner)
    VALUES (schedule.source, schedule.stream, every, now(), crm_sync._caller())
    ON CONFLICT ON CONSTRAINT schedules_pkey
    DO UPDATE SET stream = EXCLUDED.stream, every = EXCLUDED.every, next_run_at = now(),
                  owner = EXCLUDED.owner;
    PERFORM crm_sync._check_background();
END;
$$;
COMMENT ON FUNCTION crm_sync.schedule(text, interval, text) IS
    'Sync the source (or one stream) every interval in the background, starting now; replaces the source''s schedule. A run still going when the next is due is skipped (see crm_sync.jobs). With pg_cron, cron.schedule() with crm_sync.sync_async() does the same.';

CREATE FUNCTION crm_sync.unschedule(source text)
RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM crm_sync.schedules s WHERE s.source = unschedule.source RETURNING 1)
    SELECT count(*) > 0 FROM d;
$$;
COMMENT ON FUNCTION crm_sync.unschedule(text) IS
    'Stop syncing the source on a schedule; true if it had one. Jobs already queued still run (crm_sync.cancel() stops them).';


CREATE VIEW crm_sync.progress AS
SELECT p.pid, p.job_id, p.run_id, p.source, p.stream, p.mode, p.started_at,
       p.records, p.pages, p.bytes, p.api_calls,
       round(p.records / greatest(extract(epoch FROM p.updated_at - p.started_at), 0.001), 1)::float8
           AS records_per_second,
       p.total,
       CASE WHEN p.total > 0 AND p.records <= p.total
            THEN round(100.0 * p.records / p.total, 1) END AS percent_done,
       CASE WHEN p.total > 0 AND p.records > 0 AND p.records <= p.total
            THEN (p.updated_at - p.started_at) * ((p.total - p.records)::float8 / p.records) END AS eta,
       p.updated_at
  FROM crm_sync._progress() p;
COMMENT ON VIEW crm_sync.progress IS
    'Each running sync, background or foreground: records, pages, bytes and API calls so far, rate, and (where the CRM reports a total) percent done and estimated time left. Needs pg_crm_sync in shared_preload_libraries.';
