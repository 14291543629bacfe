-- Creating, changing and dropping sources. Provider knowledge (which options
-- and credentials exist, which streams a provider has) lives in Rust:
-- crm_sync._check_source() and crm_sync._provider_streams().

CREATE FUNCTION crm_sync.create_source(
    name text,
    provider text,
    options jsonb DEFAULT '{}',
    credentials jsonb DEFAULT '{}'
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF name IS NULL OR name !~ '^[a-z_][a-z0-9_]{0,62}$' OR name ~ '^pg_' THEN
        RAISE EXCEPTION 'invalid source name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'The name becomes the schema of the landing tables.',
                  HINT = 'Use lower-case letters, digits and underscores, starting with a letter or underscore, at most 63 characters, not starting with pg_.';
    END IF;
    IF name IN ('crm_sync', 'crm', 'public', 'information_schema') THEN
        RAISE EXCEPTION 'source name "%" is reserved', name
            USING ERRCODE = 'invalid_name', HINT = 'Choose another name.';
    END IF;
    IF EXISTS (SELECT 1 FROM crm_sync.sources s WHERE s.name = create_source.name) THEN
        RAISE EXCEPTION 'source "%" already exists', name
            USING ERRCODE = 'duplicate_object',
                  HINT = 'Change it with crm_sync.alter_source(), or drop it first with crm_sync.drop_source().';
    END IF;
    -- A schema named after a role is that role's "$user" schema, first in
    -- its default search_path: landing tables would shadow its own.
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = create_source.name) THEN
        RAISE EXCEPTION 'source name "%" is the name of a role', name
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'Its schema would come first in that role''s default search_path.',
                  HINT = 'Choose another name.';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = create_source.name) THEN
        RAISE EXCEPTION 'schema "%" already exists', name
            USING ERRCODE = 'duplicate_schema',
                  DETAIL = 'A source''s landing tables go into a schema of its own name.',
                  HINT = 'Choose another source name.';
    END IF;
    -- Validates provider, options and credentials; raises with a hint if
    -- wrong. A spec's provider is not changed meanwhile (register_spec).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('crm_sync.spec ' || provider));
    PERFORM crm_sync._check_credential_refs(name, coalesce(credentials, '{}'));
    PERFORM crm_sync._check_source(name, provider, coalesce(options, '{}'), coalesce(credentials, '{}'));

    INSERT INTO crm_sync.sources (name, provider, options)
        VALUES (name, provider, coalesce(options, '{}'));
    INSERT INTO crm_sync.credentials (source, credentials)
        VALUES (name, coalesce(credentials, '{}'));
    INSERT INTO crm_sync.streams (source, stream, object)
        SELECT create_source.name, p.stream, p.object FROM crm_sync._provider_streams(provider, coalesce(options, '{}')) p;
    EXECUTE format('CREATE SCHEMA %I', name);
    EXECUTE format('COMMENT ON SCHEMA %I IS %L', name,
                   format('Landing tables of pg_crm_sync source %s (%s)', name, provider));
    -- Roles with an access level may read its landing tables.
    PERFORM crm_sync._apply_access_all();
END
$fn$;
COMMENT ON FUNCTION crm_sync.create_source(text, text, jsonb, jsonb) IS
    'Register a CRM connection. name becomes the schema of its landing tables; provider is ''hubspot'', ''salesforce'', ''dynamics'' (Dynamics 365 / Dataverse), ''zoho'', ''rest'' (options.spec describes the API) or a registered spec''s name (''pipedrive''; see crm_sync.specs, crm_sync.builtin_specs); options and credentials are checked.';

CREATE FUNCTION crm_sync.alter_source(
    name text,
    options jsonb DEFAULT NULL,
    credentials jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    src crm_sync.sources;
    cred jsonb;
    new_options jsonb;
    new_credentials jsonb;
    moved text;
BEGIN
    -- The spec's lock before the source's row: register_spec takes them
    -- in that order (a provider never changes, so reading it first is safe).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('crm_sync.spec ' || s.provider))
       FROM crm_sync.sources s WHERE s.name = alter_source.name;
    SELECT * INTO src FROM crm_sync.sources s WHERE s.name = alter_source.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM crm_sync.sources.';
    END IF;
    SELECT c.credentials INTO cred FROM crm_sync.credentials c WHERE c.source = alter_source.name FOR UPDATE;
    -- Keys given replace old ones; a key given as null is removed.
    new_options := jsonb_strip_nulls(src.options || coalesce(options, '{}'));
    new_credentials := jsonb_strip_nulls(coalesce(cred, '{}') || coalesce(credentials, '{}'));
    PERFORM crm_sync._check_credential_refs(name, coalesce(credentials, '{}'));
    -- Credentials follow their host: a new host gets new credentials, given
    -- in the same call, and none of the stored ones.
    moved := crm_sync._host_change(src.provider, src.options, new_options);
    IF moved IS NOT NULL THEN
        IF credentials IS NULL OR credentials = '{}' THEN
            RAISE EXCEPTION 'source "%": changing % needs new credentials in the same call', name, moved
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = 'The stored credentials are never sent to a new host.',
                      HINT = 'Pass credentials => ''{...}'' together with options => ''{...}''.';
        END IF;
        new_credentials := jsonb_strip_nulls(credentials);
    END IF;
    PERFORM crm_sync._check_source(name, src.provider, new_options, new_credentials);
    UPDATE crm_sync.sources s SET options = new_options, updated_at = now() WHERE s.name = alter_source.name;
    UPDATE crm_sync.credentials c SET credentials = new_credentials, updated_at = now() WHERE c.source = alter_source.name;
    -- A new inline spec's new streams are synced from now on.
    IF src.provider = 'rest' THEN
        INSERT INTO crm_sync.streams (source, stream, object)
            SELECT alter_source.name, p.stream, p.object
              FROM crm_sync._provider_streams(src.provider, new_options) p
            ON CONFLICT DO NOTHING;
    END IF;
END
$fn$;
COMMENT ON FUNCTION crm_sync.alter_source(text, jsonb, jsonb) IS
    'Change a source''s options and/or credentials: given keys replace old ones, keys set to null are removed.';

CREATE FUNCTION crm_sync.drop_source(name text, drop_data boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    who name;
BEGIN
    DELETE FROM crm_sync.sources s WHERE s.name = drop_source.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'source "%" does not exist', name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM crm_sync.sources.';
    END IF;
    IF drop_data THEN
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', name);
    ELSE
        -- The tables stay, the source's readers do not: access levels
        -- reach only the schemas of sources, so a later revoke would miss
        -- this one.
        IF EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = drop_source.name) THEN
            FOR who IN SELECT x.rolname FROM crm_sync.access a JOIN pg_roles x ON x.oid = a.role LOOP
                EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA %I FROM %I', name, who);
                EXECUTE format('REVOKE ALL ON SCHEMA %I FROM %I', name, who);
            END LOOP;
        END IF;
        RAISE NOTICE 'source "%" dropped; its landing tables remain in schema "%", readable by its owner only', name, name;
    END IF;
    -- Its records leave the unified model (schema crm) now, as a sync's
    -- changes enter it, unless merging after syncs is off.
    IF coalesce(nullif(current_setting('crm_sync.merge_after_sync', true), ''), 'on')::boolean THEN
        BEGIN
            PERFORM crm_sync.merge();
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'source "%" dropped, but merging the unified model failed: %', name, SQLERRM
                USING HINT = 'Fix it and run crm_sync.merge(); until then schema crm still shows the source''s records.';
        END;
    END IF;
END
$fn$;
COMMENT ON FUNCTION crm_sync.drop_source(text, boolean) IS
    'Forget a source (its streams, watermarks and credentials) and take its records out of the unified model (schema crm). drop_data => true also drops its schema and landing tables; run history stays in crm_sync.runs.';


CREATE FUNCTION crm_sync.add_stream(
    source text,
    object text,
    stream text DEFAULT NULL,
    properties text[] DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    name text := coalesce(stream, lower(regexp_replace(object, '[^A-Za-z0-9_]', '_', 'g')));
    refusal text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM crm_sync.sources s WHERE s.name = add_stream.source) THEN
        RAISE EXCEPTION 'source "%" does not exist', source
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM crm_sync.sources.';
    END IF;
    IF object IS NULL OR object !~ '^[A-Za-z][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'invalid object name %', coalesce(quote_literal(object), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give the CRM''s API name of the object, such as Invoice__c; see crm_sync.discover(source).';
    END IF;
    SELECT crm_sync._object_refusal(s.provider, s.options, add_stream.object) INTO refusal
      FROM crm_sync.sources s WHERE s.name = add_stream.source;
    IF refusal IS NOT NULL THEN
        RAISE EXCEPTION 'object % of source "%" cannot be synced: %', object, source, refusal
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'See crm_sync.discover(source): its syncable and reason columns say which objects can be synced.';
    END IF;
    IF name !~ '^[a-z_][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid stream name %', quote_literal(name)
            USING ERRCODE = 'invalid_name',
                  DETAIL = 'The stream name becomes the landing table''s name.',
                  HINT = 'Use lower-case letters, digits and underscores, at most 63 characters.';
    END IF;
    IF array_position(properties, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'properties must not contain NULL'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'List field names, e.g. ''{Name,Amount__c}'', or pass NULL for all fields.';
    END IF;
    IF EXISTS (SELECT 1 FROM crm_sync.streams t WHERE t.source = add_stream.source AND t.stream = name) THEN
        RAISE EXCEPTION 'stream "%" of source "%" already exists', name, source
            USING ERRCODE = 'duplicate_object', HINT = 'Pass another stream name.';
    END IF;
    INSERT INTO crm_sync.streams (source, stream, object, properties)
        VALUES (add_stream.source, name, add_stream.object, add_stream.properties);
    RETURN name;
END
$fn$;
COMMENT ON FUNCTION crm_sync.add_stream(text, text, text, text[]) IS
    'Sync another object of a source (custom objects included) into <source>.<stream>; stream defaults to the object''s name in lower case. Returns the stream name.';
