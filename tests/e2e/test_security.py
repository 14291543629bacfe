"""Attacks on pg_crm_sync in a database many roles share, each played
against the SQL API, and how each fails safely. Outbound HTTP: no redirect
followed, no body beyond the source's cap read, no internal address reached
unless a superuser allows it. No request leaves 127.0.0.0/8: a redirect's
target is only named."""

import psycopg
import pytest

from conftest import TOKEN, create_source, sync


def last_run(db, stream):
    return db.execute("SELECT status, error, error_sqlstate FROM crm_sync.runs WHERE stream = %s "
                      "ORDER BY run_id DESC LIMIT 1", (stream,)).fetchone()


def test_a_redirect_is_not_followed_with_the_token(db, hubspot):
    """A CRM endpoint (or a proxy on the way) answers 302 to another host:
    following it would hand the bearer token to that host."""
    create_source(db, hubspot)
    hubspot.fault(path_contains="/crm/v3/objects/deals", skip=0, count=0, kind="redirect")
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        sync(db, stream="deals")
    msg = str(e.value)
    assert "redirected the request (HTTP 302) to https://collector.example" in msg
    assert "not followed" in msg and TOKEN not in msg
    # Asked once, not again and again.
    assert hubspot.stats()["status_counts"]["302"] == 1
    status, error, sqlstate = last_run(db, "deals")
    assert (status, sqlstate) == ("failed", "08006")
    assert "collector.example" in error


def test_a_decompression_bomb_is_not_read_whole(db, hubspot):
    """A small gzip body that inflates far beyond any page: reading stops at
    the source's cap (max_response_mb, default 64) with 08P01."""
    create_source(db, hubspot, max_response_mb=1)
    hubspot.fault(path_contains="/crm/v3/objects/deals", skip=0, count=0, kind="gzip_bomb", size_mb=16)
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        sync(db, stream="deals")
    assert "larger than 1 MB (after decompression)" in str(e.value)
    assert "max_response_mb" in e.value.diag.message_hint
    assert last_run(db, "deals")[2] == "08P01"
    # Nothing of the failed stream was kept, its landing table included.
    assert db.execute("SELECT to_regclass('hs.deals')").fetchone()[0] is None


def test_internal_addresses_need_a_superusers_allowance(db, connect):
    """A source pointed at the server's own network (loopback over https,
    a private or metadata address) is refused when the request would be
    sent, unless a superuser lists the network in crm_sync.allowed_networks."""
    for base in ("https://127.0.0.1:1", "https://169.254.169.254", "https://[::1]:1", "https://localhost:1"):
        db.execute("SELECT crm_sync.drop_source(name, drop_data => true) FROM crm_sync.sources")
        db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
                   (psycopg.types.json.Jsonb({"base_url": base, "max_retries": 0}),
                    psycopg.types.json.Jsonb({"access_token": TOKEN})))
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            sync(db, stream="deals")
        assert "is an internal address" in str(e.value), base
        assert "crm_sync.allowed_networks" in e.value.diag.message_hint
    # Allowed by a superuser, the request goes out (and finds nothing on port 1).
    db.execute("SELECT crm_sync.drop_source(name, drop_data => true) FROM crm_sync.sources")
    db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
               (psycopg.types.json.Jsonb({"base_url": "https://127.0.0.1:1", "max_retries": 0}),
                psycopg.types.json.Jsonb({"access_token": TOKEN})))
    db.execute("SET crm_sync.allowed_networks = '127.0.0.0/8'")
    with pytest.raises(psycopg.errors.ConnectionFailure):
        sync(db, stream="deals")
    # A bad value is named.
    db.execute("SET crm_sync.allowed_networks = 'intranet'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        sync(db, stream="deals")
    assert "crm_sync.allowed_networks" in str(e.value)
    # Only a superuser may set it.
    db.execute("CREATE ROLE net_user LOGIN")
    other = connect(user="net_user")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        other.execute("SET crm_sync.allowed_networks = '0.0.0.0/0'")


# Functions a role that may create objects in public (a database owner, or
# anyone in a database upgraded from PostgreSQL 14 or older) plants to
# shadow the ones the extension's SQL means: each logs its call, then does
# what the real one does.
PLANTED = {
    "hashtextextended(text, integer)": ("bigint", "pg_catalog.hashtextextended($1, $2)"),
    "now()": ("timestamptz", "pg_catalog.now()"),
    "clock_timestamp()": ("timestamptz", "pg_catalog.clock_timestamp()"),
    "format(text, bigint, text)": ("text", "pg_catalog.format($1, $2, $3)"),
    "to_timestamp(double precision)": ("timestamptz", "pg_catalog.to_timestamp($1)"),
    "set_config(text, text, boolean)": ("text", "pg_catalog.set_config($1, $2, $3)"),
    "to_regclass(text)": ("regclass", "pg_catalog.to_regclass($1)"),
    "lower(text)": ("text", "pg_catalog.lower($1)"),
    "nextval(regclass)": ("bigint", "pg_catalog.nextval($1)"),
}


def test_background_workers_never_call_functions_planted_in_public(pg_cluster, jobs_connect, hubspot):
    from conftest import wait_job, wait_until
    c = jobs_connect()
    create_source(c, hubspot)
    # The planter: a role with no access level that may create in public.
    c.execute("CREATE ROLE sec_planter LOGIN")
    c.execute("GRANT CREATE ON SCHEMA public TO sec_planter")
    p = jobs_connect(user="sec_planter")
    p.execute("CREATE TABLE public.planted_calls (fn text)")
    p.execute("GRANT INSERT ON public.planted_calls TO PUBLIC")
    for sig, (ret, body) in PLANTED.items():
        name = sig.split("(")[0]
        p.execute(f"CREATE FUNCTION public.{sig} RETURNS {ret} LANGUAGE sql AS "
                  f"$$ INSERT INTO public.planted_calls VALUES ('{name}'); SELECT {body} $$")
    try:
        # The database's search_path puts public first: every new session
        # (each job worker, the failed-run recorder) starts with it. (The
        # launcher, connected before, has public in its default path: the
        # overloads planted above would catch it too.)
        c.execute("ALTER DATABASE crm_jobs SET search_path = public, pg_catalog")
        job_id = c.execute("SELECT crm_sync.sync_async('hs')").fetchone()[0]
        assert wait_job(c, job_id)["status"] == "succeeded"
        c.execute("SELECT crm_sync.schedule('hs', '1 hour', 'deals')")
        wait_until("the scheduled job", lambda: c.execute(
            "SELECT last_job_id FROM crm_sync.schedules").fetchone()[0])
        scheduled = c.execute("SELECT last_job_id FROM crm_sync.schedules").fetchone()[0]
        assert wait_job(c, scheduled)["status"] == "succeeded"
        # A foreground sync that fails: its run is recorded by a worker of
        # its own, in a new session.
        hubspot.fault(path_contains="/crm/v3/objects/companies", skip=0, count=0, kind="bad_token")
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            sync(c, stream="companies", full_refresh=True)
        assert c.execute("SELECT count(*) FROM crm_sync.runs WHERE status = 'failed'").fetchone()[0] == 1
        assert c.execute("SELECT count(*) FROM public.planted_calls").fetchone()[0] == 0, \
            c.execute("SELECT fn, count(*) FROM public.planted_calls GROUP BY fn").fetchall()
    finally:
        c.execute("ALTER DATABASE crm_jobs RESET search_path")
        for sig in PLANTED:
            c.execute(f"DROP FUNCTION public.{sig}")
        c.execute("DROP TABLE public.planted_calls")
        c.execute("REVOKE CREATE ON SCHEMA public FROM sec_planter")
        p.close()
        c.execute("DROP ROLE sec_planter")


def test_a_role_without_a_level_sees_no_customer(db, connect, hubspot):
    """A freshly created LOGIN role, no grant: no unified customer, cleaned
    value, invalid value, quality sample, run warning, job or landing row."""
    create_source(db, hubspot)
    sync(db)
    db.execute("CREATE ROLE sec_snooper LOGIN")
    s = connect(user="sec_snooper")
    for sql in ("SELECT email, phone FROM crm.contacts", "SELECT vals FROM crm_sync.source_records",
                "SELECT value FROM crm_sync.invalid_values", "SELECT invalid_samples FROM crm_sync.quality",
                "SELECT warning_samples FROM crm_sync.runs", "SELECT * FROM crm_sync.jobs",
                "SELECT * FROM crm_sync.status", "SELECT email FROM hs.contacts",
                "SELECT * FROM crm_sync.sources", "SELECT * FROM crm_sync.credentials"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute(sql)
    for sql in ("SELECT * FROM crm_sync.sync('hs')", "SELECT crm_sync.merge()",
                "SELECT crm_sync.grant_access('sec_snooper', 'admin')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute(sql)
    # Nor flush the merge's index of match keys, nor hash a key as it does.
    for sql in ("SELECT crm_sync._flush_match_keys()",
                "SELECT crm_sync._match_key_hash('contact', 'email', 'ada@example.com')"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute(sql)
    # The pure cleaners stay public, and the hash that is a record's id.
    assert s.execute("SELECT crm_sync.clean_phone('(415) 555-2671', 'US')").fetchone()[0] == "+14155552671"
    (rid,) = db.execute("SELECT record_id FROM crm_sync.source_records WHERE source = 'hs' AND stream = 'contacts' "
                        "ORDER BY external_id LIMIT 1").fetchone()
    (ext,) = db.execute("SELECT external_id FROM crm_sync.source_records WHERE record_id = %s", (rid,)).fetchone()
    assert s.execute("SELECT crm_sync.source_record_id('contact', 'hs', 'contacts', %s)", (ext,)).fetchone() == (rid,)


def test_read_operate_and_admin_roles_do_what_their_level_allows(db, connect, hubspot):
    create_source(db, hubspot)
    for role, level in (("sec_reader", "read"), ("sec_operator", "operate"), ("sec_admin", "admin")):
        db.execute(f"CREATE ROLE {role} LOGIN")
        db.execute("SELECT crm_sync.grant_access(%s, %s)", (role, level))
    op = connect(user="sec_operator")
    # An sec_operator syncs (with the owner's rights, never seeing the token)...
    assert sync(op, stream="contacts")["contacts"]["records_upserted"] == 250
    # ...whose merge flushes its index of match keys: the operator may not.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        op.execute("SELECT crm_sync._flush_match_keys()")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        op.execute("SELECT * FROM crm_sync.credentials")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        op.execute("SELECT crm_sync.alter_source('hs', options => '{}')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        op.execute("INSERT INTO crm_sync.mappings (provider, object, entity, field, expression) "
                   "VALUES ('hubspot', 'contacts', 'contact', 'title', 'r.id')")
    # ... a sec_reader reads what landed, including tables created after its grant...
    rd = connect(user="sec_reader")
    assert rd.execute("SELECT count(*) FROM hs.contacts").fetchone()[0] == 250
    assert rd.execute("SELECT count(*) FROM crm.contacts").fetchone()[0] == 250
    assert rd.execute("SELECT state FROM crm_sync.status WHERE stream = 'contacts'").fetchone()[0] == "ok"
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        sync(rd, stream="deals")
    # ... and an admin manages sources and mappings.
    ad = connect(user="sec_admin")
    ad.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream = 'deals'")
    ad.execute("SELECT crm_sync.alter_source('hs', options => '{\"lookback_seconds\": 5}')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ad.execute("SELECT * FROM crm_sync.credentials")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ad.execute("SELECT crm_sync.grant_access('sec_reader', 'admin')")


def test_a_job_runs_only_while_the_role_that_queued_it_may_sync(jobs_connect, hubspot):
    """Jobs, and the jobs of a schedule, run with the rights of the role that
    queued them: once it loses the operate level, they fail with 42501."""
    from conftest import job, wait_job, wait_until
    c = jobs_connect()
    create_source(c, hubspot)
    c.execute("CREATE ROLE sec_jobber LOGIN")
    c.execute("SELECT crm_sync.grant_access('sec_jobber', 'operate')")
    try:
        j = jobs_connect(user="sec_jobber")
        job_id = j.execute("SELECT crm_sync.sync_async('hs', 'deals')").fetchone()[0]
        assert wait_job(c, job_id)["status"] == "succeeded"
        assert job(c, job_id)["queued_by"] == "sec_jobber"
        j.execute("SELECT crm_sync.schedule('hs', '1 hour', 'deals')")
        first = wait_until("the schedule's first job", lambda: c.execute(
            "SELECT last_job_id FROM crm_sync.schedules").fetchone()[0])
        assert wait_job(c, first)["status"] == "succeeded"
        assert job(c, first)["queued_by"] == "sec_jobber"

        c.execute("SELECT crm_sync.revoke_access('sec_jobber', 'operate')")
        # The schedule fires again: its job fails, saying why.
        c.execute("UPDATE crm_sync.schedules SET next_run_at = now()")
        second = wait_until("the schedule's second job", lambda: (n := c.execute(
            "SELECT last_job_id FROM crm_sync.schedules").fetchone()[0]) != first and n)
        ended = wait_job(c, second)
        assert (ended["status"], ended["error_sqlstate"]) == ("failed", "42501")
        assert 'queued by role "sec_jobber", which may no longer sync' in ended["error"]
        # Nothing was synced for it.
        assert ended["run_ids"] == []
    finally:
        c.execute("SELECT crm_sync.unschedule('hs')")
        c.execute("SELECT crm_sync.revoke_access('sec_jobber')")
        c.execute("DROP ROLE sec_jobber")


def test_credentials_follow_their_host(db, connect, hubspot):
    """Whoever may alter a source (an admin role) cannot send its stored
    token elsewhere by changing its URL: a new host needs new credentials
    in the same call, and gets none of the stored ones."""
    create_source(db, hubspot)
    db.execute("CREATE ROLE sec_mover LOGIN")
    db.execute("SELECT crm_sync.grant_access('sec_mover', 'admin')")
    mover = connect(user="sec_mover")
    moved = psycopg.types.json.Jsonb({"base_url": "https://collector.example"})
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        mover.execute("SELECT crm_sync.alter_source('hs', options => %s)", (moved,))
    assert (f"changing base_url ({hubspot.url} → https://collector.example) needs new credentials "
            "in the same call") in str(e.value)
    assert "never sent to a new host" in e.value.diag.message_detail
    assert db.execute("SELECT options->>'base_url' FROM crm_sync.sources").fetchone()[0] == hubspot.url
    # The same host with another path is the same host.
    mover.execute("SELECT crm_sync.alter_source('hs', options => %s)",
                  (psycopg.types.json.Jsonb({"base_url": hubspot.url + "/"}),))
    # With new credentials it moves, and the old ones are dropped, not merged.
    mover.execute("SELECT crm_sync.alter_source('hs', options => %s, credentials => %s)",
                  (moved, psycopg.types.json.Jsonb({"access_token": "pat-new-host"})))
    assert db.execute("SELECT credentials FROM crm_sync.credentials").fetchone()[0] == \
        {"access_token": "pat-new-host"}


def test_salesforce_credentials_follow_the_login_host(db, salesforce):
    from conftest import create_sf_source
    create_sf_source(db, salesforce)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.alter_source('sf', options => %s)",
                   (psycopg.types.json.Jsonb({"login_url": "https://test.salesforce.com"}),))
    assert "changing login_url" in str(e.value)
    # New credentials must stand on their own: the stored refresh token and
    # secret are not kept for the new host.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT crm_sync.alter_source('sf', options => %s, credentials => %s)",
                   (psycopg.types.json.Jsonb({"login_url": "https://test.salesforce.com"}),
                    psycopg.types.json.Jsonb({"client_id": "3MVG9other"})))


def test_credentials_by_reference_stay_out_of_sql_text(db, connect, hubspot):
    """A superuser can store a credential as a reference to a file (or an
    environment variable) of the server: the token is read when the source
    is checked and synced, and never appears in SQL text or the catalog."""
    import os
    import pwd
    import uuid
    path = f"/tmp/crm_sync_secret_{uuid.uuid4().hex[:8]}"
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    pg = pwd.getpwnam("postgres")
    os.chown(path, pg.pw_uid, pg.pw_gid)
    os.chmod(path, 0o600)
    try:
        ref = psycopg.types.json.Jsonb({"access_token": {"file": path}})
        db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
                   (psycopg.types.json.Jsonb({"base_url": hubspot.url}), ref))
        assert sync(db, stream="deals")["deals"]["records_upserted"] == 40
        assert db.execute("SELECT credentials FROM crm_sync.credentials").fetchone()[0] == \
            {"access_token": {"file": path}}
        # A bad token read from the file is scrubbed from errors like any.
        with open(path, "w") as f:
            f.write("pat-from-file-wrong\n")
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
            sync(db, stream="deals", full_refresh=True)
        assert "pat-from-file-wrong" not in str(e.value)
        # A missing variable is named when the reference is given.
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            db.execute("SELECT crm_sync.alter_source('hs', credentials => %s)",
                       (psycopg.types.json.Jsonb({"access_token": {"env": "CRM_SYNC_NO_SUCH_VARIABLE"}}),))
        assert "environment variable CRM_SYNC_NO_SUCH_VARIABLE: not set" in str(e.value)
    finally:
        os.unlink(path)
    # Only a superuser may store a reference (it reads the server's files).
    db.execute("CREATE ROLE sec_ref_admin LOGIN")
    db.execute("SELECT crm_sync.grant_access('sec_ref_admin', 'admin')")
    a = connect(user="sec_ref_admin")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
        a.execute("SELECT crm_sync.create_source('hs2', 'hubspot', %s, %s)",
                  (psycopg.types.json.Jsonb({"base_url": hubspot.url}),
                   psycopg.types.json.Jsonb({"access_token": {"file": "/etc/passwd"}})))
    assert "only a superuser may give credentials by reference" in str(e.value)


def test_long_property_names_sharing_a_prefix_land_in_columns_of_their_own(db, hubspot):
    """Two HubSpot properties whose names share their first 63 bytes (where
    Postgres cuts an identifier) used to fail the stream on every run with
    "column already exists"; each now gets a stable column of its own."""
    base = "hs_analytics_first_touch_converting_campaign_source_data_drill_down"
    props = [base + "_one", base + "_two"]
    for p in props:
        hubspot.admin("POST", "/_mock/contacts/properties", {"name": p, "type": "string", "fieldType": "text"})
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET properties = %s WHERE stream = 'contacts'", (["email", *props],))
    hubspot.upsert("contacts", [{"id": "1", "properties": {props[0]: "first", props[1]: "second"}}])
    sync(db, stream="contacts")
    cols = dict(db.execute("SELECT property, column_name FROM crm_sync.landing_columns "
                           "WHERE stream = 'contacts'").fetchall())
    assert cols["email"] == "email"
    assert cols[props[0]] != cols[props[1]]
    assert all(len(cols[p].encode()) <= 63 for p in props)
    row = db.execute(f'SELECT "{cols[props[0]]}", "{cols[props[1]]}" FROM hs.contacts WHERE id = %s',
                     ("1",)).fetchone()
    assert row == ("first", "second")
    # And again: the columns stay where they are.
    hubspot.upsert("contacts", [{"id": "1", "properties": {props[1]: "changed"}}])
    assert sync(db, stream="contacts")["contacts"]["status"] == "succeeded"
    assert db.execute(f'SELECT "{cols[props[1]]}" FROM hs.contacts WHERE id = %s', ("1",)).fetchone()[0] == "changed"
    assert dict(db.execute("SELECT property, column_name FROM crm_sync.landing_columns "
                           "WHERE stream = 'contacts'").fetchall()) == cols


def test_mappings_are_checked_when_written(db, connect, hubspot):
    """A mapping is SQL the merge runs as the owner: an admin may write one,
    but only one expression that compiles against its landing tables; a
    smuggled statement is refused before anything runs."""
    create_source(db, hubspot)
    sync(db, stream="contacts")
    db.execute("CREATE ROLE sec_mapper LOGIN")
    db.execute("SELECT crm_sync.grant_access('sec_mapper', 'admin')")
    a = connect(user="sec_mapper")
    insert = ("INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source) "
              "VALUES ('hubspot', 'contacts', 'contact', 'title', %s, 'hs')")
    for expr, why in (("r.id); DELETE FROM crm_sync.runs; SELECT (1", "more than one statement"),
                      ("r.id) FROM crm_sync.credentials WHERE (true", "more than one expression"),
                      ("r.no_such_column", "does not compile against hs.contacts")):
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            a.execute(insert, (expr,))
        assert why in str(e.value), expr
    assert db.execute("SELECT count(*) FROM crm_sync.runs").fetchone()[0] == 1, "nothing was run"
    a.execute(insert, ("upper(r._raw->'properties'->>'jobtitle')",))
    assert sync(db, stream="contacts")["contacts"]["status"] == "succeeded"


def test_a_paging_loop_is_stopped(db, hubspot):
    """A listing whose cursors go round (a, b, a, ...) would keep a sync
    reading forever; it stops with 08P01 when a cursor comes back."""
    create_source(db, hubspot)
    hubspot.fault(path_contains="/crm/v3/objects/deals", skip=0, count=0, kind="cursor_loop")
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        sync(db, stream="deals")
    assert "paging.next.after came back" in str(e.value)
    assert last_run(db, "deals")[2] == "08P01"
