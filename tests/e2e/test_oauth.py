"""HubSpot public apps: OAuth 2.0 refresh-token flow against the mock's
`/oauth/v3/token`. Access tokens live in the backend's memory only, are
reused until near expiry, refreshed once on a 401; a rotated refresh token
is stored; a revoked one fails with 28000 and no secret in the error."""

import psycopg
import pytest
import requests

from conftest import TOKEN, register, sync

APP = {"client_id": "app-7f3c", "client_secret": "sec-9d2e1b77a0", "refresh_token": "rt-44c1e0b9aa"}


def install(mock, **kw):
    mock.admin("POST", "/_mock/oauth", {**APP, **kw})


def refreshes(mock):
    return mock.admin("GET", "/_mock/oauth")["refreshes"]


def oauth_source(db, mock, **creds):
    register(db, "hs", "hubspot", {"base_url": mock.url}, {**APP, **creds})


def test_an_oauth_app_syncs_and_refreshes_its_token(db, connect, hubspot):
    install(hubspot, ttl_ms=1_800_000)
    oauth_source(db, hubspot)
    assert sync(db, stream="contacts")["contacts"]["records_upserted"] == 250
    assert refreshes(hubspot) == 1
    # The same backend reuses the token while it is valid.
    sync(db, stream="contacts")
    assert refreshes(hubspot) == 1
    # HubSpot expires it early: the call gets a 401, the token is refreshed
    # once, and the call made again.
    hubspot.admin("POST", "/_mock/oauth/expire")
    hubspot.reset_stats()
    hubspot.upsert("contacts", [{"id": "3", "properties": {"firstname": "after-expiry"}}])
    r = sync(db, stream="contacts")["contacts"]
    assert r["status"] == "succeeded"
    assert refreshes(hubspot) == 2
    assert hubspot.stats()["status_counts"].get("401") == 1
    assert db.execute("SELECT firstname FROM hs.contacts WHERE id = '3'").fetchone()[0] == "after-expiry"
    # Access tokens are never stored: not with the credentials, not in runs.
    assert db.execute("SELECT count(*) FROM crm_sync.credentials WHERE credentials::text LIKE '%oauth-mock-access%'"
                      ).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM crm_sync.runs WHERE concat(error, warning_samples::text) "
                      "LIKE '%oauth-mock-access%'").fetchone()[0] == 0
    # Near expiry (under five minutes left), a token is refreshed first.
    install(hubspot, ttl_ms=120_000)
    other = connect()
    sync(other, stream="deals")
    first = refreshes(hubspot)
    sync(other, stream="deals")
    assert refreshes(hubspot) > first


def test_a_revoked_refresh_token_fails_with_28000_and_no_secret(db, hubspot):
    install(hubspot)
    oauth_source(db, hubspot, refresh_token="rt-revoked-0c9a71e2")
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, stream="contacts")
    text = " ".join(filter(None, [e.value.diag.message_primary, e.value.diag.message_detail,
                                  e.value.diag.message_hint]))
    assert "HubSpot refused to refresh the OAuth access token (HTTP 400 BAD_REFRESH_TOKEN)" in text
    assert "authorize the app again" in text
    for secret in ("rt-revoked-0c9a71e2", APP["client_secret"]):
        assert secret not in text
    run = db.execute("SELECT status, error_sqlstate, error FROM crm_sync.runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert run[:2] == ("failed", "28000")
    assert APP["client_secret"] not in run[2] and "rt-revoked" not in run[2]


def test_a_rotated_refresh_token_is_stored(db, connect, hubspot):
    install(hubspot, rotate=True)
    oauth_source(db, hubspot)
    sync(db, stream="contacts")
    current = hubspot.admin("GET", "/_mock/oauth")["refresh_token"]
    assert current != APP["refresh_token"]
    stored = db.execute("SELECT credentials->>'refresh_token' FROM crm_sync.credentials WHERE source = 'hs'"
                        ).fetchone()[0]
    assert stored == current
    # A new backend (no token in memory) refreshes with the stored one.
    other = connect()
    assert sync(other, stream="deals")["deals"]["status"] == "succeeded"
    assert refreshes(hubspot) == 2


def test_credentials_are_one_kind_or_the_other(db, hubspot):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "hs", "hubspot", {"base_url": hubspot.url}, {"access_token": "pat-1", "refresh_token": "x"})
    assert "service key" in e.value.diag.message_hint
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        register(db, "hs", "hubspot", {"base_url": hubspot.url}, {"client_id": "a", "refresh_token": "x"})


def test_api_version_selects_the_date_versioned_paths(db, hubspot):
    """api_version '2026-03': every call goes to /crm/objects/2026-03/...,
    /crm/properties/2026-03/..., /crm/associations/2026-03/...: lists,
    searches, association reads, batch reads; none to /crm/v3 or /crm/v4."""
    register(db, "hs", "hubspot", {"base_url": hubspot.url, "api_version": "2026-03"},
             {"access_token": TOKEN})
    rows = sync(db)
    assert all(r["status"] == "succeeded" for r in rows.values())
    assert rows["deals"]["records_upserted"] == 40
    hubspot.upsert("deals", [{"id": "4", "properties": {"dealname": "Dated"}}])
    sync(db, stream="deals")
    db.execute("DELETE FROM hs.deals WHERE id = '5'")
    assert db.execute("SELECT records_reread FROM crm_sync.reconcile('hs', 'deals')").fetchone()[0] == 1
    calls = hubspot.stats()["by_endpoint"]
    assert not [c for c in calls if "/crm/v3/" in c or "/crm/v4/" in c], calls
    for want in ("GET /crm/objects/2026-03/contacts", "GET /crm/properties/2026-03/deals",
                 "POST /crm/objects/2026-03/deals/search", "POST /crm/objects/2026-03/deals/batch/read",
                 "POST /crm/associations/2026-03/deals/companies/batch/read"):
        assert calls.get(want, 0) >= 1, (want, calls)
    # Deals keep their links to companies, read through the dated paths.
    assert db.execute("SELECT count(*) FROM hs.deals WHERE _raw ? 'associations'").fetchone()[0] > 0


def test_an_unknown_api_version_is_refused(db, hubspot):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "hs", "hubspot", {"base_url": hubspot.url, "api_version": "2019-01"},
                 {"access_token": TOKEN})
    assert "2026-03" in e.value.diag.message_hint
