-- Specs: JSON descriptions of HTTP APIs the `rest` connector syncs
-- (docs/specs.md). A spec registered under a name is used as a provider:
-- crm_sync.create_source('pd', 'pipedrive', ...). The user's specs are in
-- crm_sync.specs (dumped by pg_dump); the ones shipped with the extension
-- in crm_sync.builtin_specs. A user's spec of a shipped spec's name wins.

CREATE TABLE crm_sync.specs (
    name        text PRIMARY KEY,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- The role that registered it (not the extension's owner, whose
    -- rights register_spec runs with).
    updated_by  text NOT NULL,
    CONSTRAINT specs_name_is_a_provider_name CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$')
);
COMMENT ON TABLE crm_sync.specs IS
    'Specs registered with crm_sync.register_spec(): each name can be used as a provider in crm_sync.create_source(). Dumped by pg_dump. See docs/specs.md.';
SELECT pg_catalog.pg_extension_config_dump('crm_sync.specs', '');

CREATE VIEW crm_sync.builtin_specs AS
    SELECT b.name, b.spec FROM crm_sync._builtin_specs() b;
COMMENT ON VIEW crm_sync.builtin_specs IS
    'Specs shipped with the extension (pipedrive). crm_sync.register_spec() with the same name overrides one.';

-- The spec `name` its sources run changed (registered, replaced, or a
-- user's override dropped): every source of it must still check out (its
-- credentials fit an auth way of the spec), else the caller's change is
-- undone; and the streams the spec has that a source lacks are synced by
-- it from now on (streams the spec no longer has fail their syncs, saying
-- so). Called by register_spec and drop_spec only, as the owner.
CREATE FUNCTION crm_sync._spec_changed(name text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s record;
BEGIN
    FOR s IN SELECT x.name, x.provider, x.options, coalesce(c.credentials, '{}') AS credentials
               FROM crm_sync.sources x LEFT JOIN crm_sync.credentials c ON c.source = x.name
              WHERE x.provider = _spec_changed.name LOOP
        PERFORM crm_sync._check_source(s.name, s.provider, s.options, s.credentials);
    END LOOP;
    INSERT INTO crm_sync.streams (source, stream, object)
        SELECT x.name, p.stream, p.object
          FROM crm_sync.sources x, crm_sync._provider_streams(x.provider, x.options) p
         WHERE x.provider = _spec_changed.name
        ON CONFLICT DO NOTHING;
END
$fn$;

CREATE FUNCTION crm_sync.register_spec(name text, spec jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    old jsonb;
    users text;
BEGIN
    IF name IS NULL OR name !~ '^[a-z][a-z0-9_]{0,62}$' THEN
        RAISE EXCEPTION 'invalid spec name %', coalesce(quote_literal(name), 'NULL')
            USING ERRCODE = 'invalid_name',
                  HINT = 'Use lower-case letters, digits and underscores, starting with a letter, at most 63 characters.';
    END IF;
    IF spec IS NULL THEN
        RAISE EXCEPTION 'spec % is NULL', quote_literal(name)
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the spec as jsonb; see docs/specs.md.';
    END IF;
    -- 22023 naming the path of each mistake.
    PERFORM crm_sync._check_spec(name, spec);
    -- One change of a spec and its sources at a time (create_source and
    -- alter_source of its sources take the same lock).
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('crm_sync.spec ' || name));
    SELECT coalesce((SELECT x.spec FROM crm_sync.specs x WHERE x.name = register_spec.name),
                    (SELECT b.spec FROM crm_sync.builtin_specs b WHERE b.name = register_spec.name))
      INTO old;
    SELECT string_agg(x.name, ', ' ORDER BY x.name) INTO users
      FROM crm_sync.sources x WHERE x.provider = register_spec.name;
    -- Stored credentials never reach a host their source was not created
    -- for: a spec in use keeps its hosts.
    IF users IS NOT NULL AND old IS NOT NULL
       AND crm_sync._spec_origins(old) <> crm_sync._spec_origins(spec) THEN
        RAISE EXCEPTION 'spec "%" is used by sources % and would send their credentials to other hosts (% → %)',
                name, users, crm_sync._spec_origins(old), crm_sync._spec_origins(spec)
            USING ERRCODE = 'object_in_use',
                  HINT = 'Register it under another name and create sources of it, or drop those sources first.';
    END IF;
    INSERT INTO crm_sync.specs AS x (name, spec, updated_by)
        VALUES (register_spec.name, register_spec.spec, crm_sync._caller())
        ON CONFLICT ON CONSTRAINT specs_pkey
        DO UPDATE SET spec = excluded.spec, updated_at = pg_catalog.now(), updated_by = excluded.updated_by;
    PERFORM crm_sync._spec_changed(register_spec.name);
END
$fn$;
COMMENT ON FUNCTION crm_sync.register_spec(text, jsonb) IS
    'Register (or replace) a spec: its name can then be used as a provider in crm_sync.create_source(). A bad spec fails with 22023 naming the path of each mistake. See docs/specs.md.';

CREATE FUNCTION crm_sync.drop_spec(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    users text;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('crm_sync.spec ' || name));
    SELECT string_agg(x.name, ', ' ORDER BY x.name) INTO users
      FROM crm_sync.sources x WHERE x.provider = drop_spec.name;
    -- Its sources may fall back to the shipped spec of the same name only
    -- if that calls the same hosts.
    IF users IS NOT NULL AND coalesce((
            SELECT crm_sync._spec_origins(b.spec) = crm_sync._spec_origins(x.spec)
              FROM crm_sync.builtin_specs b JOIN crm_sync.specs x ON x.name = b.name
             WHERE b.name = drop_spec.name), false) IS NOT TRUE THEN
        RAISE EXCEPTION 'spec "%" is used by sources %', name, users
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Drop those sources first with crm_sync.drop_source().';
    END IF;
    DELETE FROM crm_sync.specs x WHERE x.name = drop_spec.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'spec "%" is not registered', name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM crm_sync.specs.';
    END IF;
    -- Sources falling back to the shipped spec.
    PERFORM crm_sync._spec_changed(drop_spec.name);
END
$fn$;
COMMENT ON FUNCTION crm_sync.drop_spec(text) IS
    'Forget a registered spec (refused while sources use it). Dropping a user''s spec of a shipped spec''s name brings the shipped one back.';
