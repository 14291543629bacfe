-- pg_crm_sync catalog: sources, their credentials, streams, watermarks and runs.
-- Loaded first by CREATE EXTENSION (see src/lib.rs); schema crm_sync comes
-- from the control file.

CREATE TABLE crm_sync.sources (
    name        text PRIMARY KEY,
    provider    text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sources_name_is_a_schema_name
        CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$' AND name !~ '^pg_'),
    CONSTRAINT sources_options_is_an_object CHECK (jsonb_typeof(options) = 'object')
);
COMMENT ON TABLE crm_sync.sources IS
    'One row per CRM connection. Its landing tables live in the schema of the same name. Change with crm_sync.create_source/alter_source/drop_source.';

-- Secrets live apart from sources so that sources can be readable while
-- credentials are readable by the extension owner only.
CREATE TABLE crm_sync.credentials (
    source      text PRIMARY KEY REFERENCES crm_sync.sources (name) ON DELETE CASCADE,
    credentials jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT credentials_is_an_object CHECK (jsonb_typeof(credentials) = 'object')
);
COMMENT ON TABLE crm_sync.credentials IS
    'Secrets of each source. Readable by the extension owner only; the sync functions read it with the owner''s rights.';

CREATE TABLE crm_sync.streams (
    source      text NOT NULL REFERENCES crm_sync.sources (name) ON DELETE CASCADE,
    stream      text NOT NULL,
    object      text NOT NULL,
    enabled     boolean NOT NULL DEFAULT true,
    properties  text[],
    PRIMARY KEY (source, stream),
    CONSTRAINT streams_name_is_a_table_name CHECK (stream ~ '^[a-z_][a-z0-9_]{0,62}$')
);
COMMENT ON TABLE crm_sync.streams IS
    'Streams of each source, one landing table each. Set enabled = false to skip a stream; set properties to choose the synced properties (NULL = the provider''s defaults, ''{*}'' = every property; see crm_sync.discover()).';
COMMENT ON COLUMN crm_sync.streams.properties IS
    'Properties synced into typed columns: NULL for the defaults, ''{*}'' for all, or a list of property names (custom ones included).';

-- The column each property lands in: lower-cased, or cut and suffixed with
-- a hash when too long for Postgres (63 bytes) or taken. Recorded once, so
-- a column never moves.
CREATE TABLE crm_sync.landing_columns (
    source      text NOT NULL,
    stream      text NOT NULL,
    property    text NOT NULL,
    column_name text NOT NULL,
    PRIMARY KEY (source, stream, property),
    UNIQUE (source, stream, column_name),
    FOREIGN KEY (source, stream) REFERENCES crm_sync.streams (source, stream) ON DELETE CASCADE
);
COMMENT ON TABLE crm_sync.landing_columns IS
    'The landing column of each synced property: its lower-cased name, or, when that is longer than 63 bytes or taken (names differing only in case), the name cut and suffixed with a hash. Never changes once recorded.';

CREATE TABLE crm_sync.watermarks (
    source      text NOT NULL,
    stream      text NOT NULL,
    cursor      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    run_id      bigint,
    -- Deletes before this time have been found (Salesforce's getDeleted, or
    -- a reconciliation); the next incremental run looks from here. NULL:
    -- from the stream's last successful run.
    deletes_from timestamptz,
    PRIMARY KEY (source, stream),
    FOREIGN KEY (source, stream) REFERENCES crm_sync.streams (source, stream) ON DELETE CASCADE
);
COMMENT ON TABLE crm_sync.watermarks IS
    'Where the next incremental sync of each stream starts: the CRM modification time up to which every change has landed. Written in the transaction that wrote the rows.';

CREATE TABLE crm_sync.runs (
    run_id          bigserial PRIMARY KEY,
    source          text NOT NULL,
    stream          text NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('full', 'incremental', 'reconcile')),
    status          text NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    records_read    bigint NOT NULL DEFAULT 0,
    records         bigint NOT NULL DEFAULT 0,
    records_unchanged bigint NOT NULL DEFAULT 0,
    records_deleted bigint NOT NULL DEFAULT 0,
    bytes           bigint NOT NULL DEFAULT 0,
    api_calls       bigint NOT NULL DEFAULT 0,
    warnings        bigint NOT NULL DEFAULT 0,
    warning_samples text[],
    watermark       text,
    error           text,
    error_sqlstate  text
);
CREATE INDEX runs_source_stream_started ON crm_sync.runs (source, stream, started_at DESC);
COMMENT ON TABLE crm_sync.runs IS
    'One row per stream per sync run: what it did, or why it failed. Failed runs are recorded even though their transaction rolled back.';
COMMENT ON COLUMN crm_sync.runs.records_read IS 'Records received from the CRM (every page; a record on two pages counts twice). Far above records + records_unchanged + records_deleted, or far above what changed, means the run read more than it needed.';
COMMENT ON COLUMN crm_sync.runs.records IS 'Rows inserted or changed (a reconcile run: records read again because they never landed).';
COMMENT ON COLUMN crm_sync.runs.records_unchanged IS 'Records written again exactly as they were (a full refresh of unchanged data counts them all here).';
COMMENT ON COLUMN crm_sync.runs.warnings IS 'Things that did not stop the run: values that did not fit their column (they stay in _raw) and fields the CRM no longer has. warning_samples shows the first few.';

-- What a reconciliation (crm_sync.reconcile) listed: the ids the CRM has
-- now, one run's at a time, deleted when the run ends. Unlogged and never
-- dumped: a run that dies leaves nothing to keep.
CREATE UNLOGGED TABLE crm_sync.reconcile_ids (
    run_id  bigint NOT NULL,
    id      text NOT NULL,
    PRIMARY KEY (run_id, id)
);
COMMENT ON TABLE crm_sync.reconcile_ids IS
    'Working set of crm_sync.reconcile(): the ids a CRM listed during one run; empty between runs.';

-- pg_dump keeps configuration and state.
SELECT pg_catalog.pg_extension_config_dump('crm_sync.sources', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.credentials', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.streams', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.watermarks', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.landing_columns', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.runs', '');
SELECT pg_catalog.pg_extension_config_dump('crm_sync.runs_run_id_seq', '');

-- Access: nothing here is PUBLIC (see sql/access.sql, loaded last).
