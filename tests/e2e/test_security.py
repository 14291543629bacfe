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
    c.execute("CREATE TABLE public.planted_calls (fn text)")
    c.execute("GRANT INSERT ON public.planted_calls TO PUBLIC")
    for sig, (ret, body) in PLANTED.items():
        name = sig.split("(")[0]
        c.execute(f"CREATE FUNCTION public.{sig} RETURNS {ret} LANGUAGE sql AS "
                  f"$$ INSERT INTO public.planted_calls VALUES ('{name}'); SELECT {body} $$")
    try:
        # The database's search_path puts public first: every new session
        # (each job worker, the failed-run recorder, a restarted launcher)
        # starts with it.
        c.execute("ALTER DATABASE crm_jobs SET search_path = public, pg_catalog")
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE backend_type = 'pg_crm_sync launcher'")
        wait_until("the launcher back", lambda: c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_crm_sync launcher'").fetchone()[0],
            timeout=30)
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
