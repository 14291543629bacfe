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
