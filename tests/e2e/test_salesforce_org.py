"""What real Salesforce orgs do that a plain mock does not: refresh token
rotation, hard deletes and purges (getDeleted and its
earliestDateAvailable, reconciliation), archived activities, formula
fields, query timeouts, unfilterable cursors and unqueryable objects, base64
fields, and the org's daily API limit (Sforce-Limit-Info)."""

import psycopg
import pytest

from conftest import SF_REFRESH_TOKEN, create_sf_source, sync


def one(db, sql, *args):
    return db.execute(sql, args or None).fetchone()[0]


def stored_refresh_token(db, source="sf"):
    return one(db, "SELECT credentials->>'refresh_token' FROM crm_sync.credentials WHERE source = %s", source)


def oauth_state(sf):
    return sf.admin("GET", "/_mock/sf/oauth")


# --- Refresh token rotation ------------------------------------------------

def test_a_rotated_refresh_token_is_stored_at_once_and_survives_a_failed_sync(db, connect, salesforce):
    sf = salesforce
    sf.admin("POST", "/_mock/sf/oauth", {"rotate_refresh_tokens": True})
    create_sf_source(db, sf)
    assert sync(db, "sf", "account")["account"]["status"] == "succeeded"
    first = oauth_state(sf)["refresh_token"]
    assert first != SF_REFRESH_TOKEN
    assert stored_refresh_token(db) == first

    # The session expires; the re-login rotates the token again, then the
    # query fails for good: the sync fails, yet the new token is stored.
    sf.expire_sessions()
    sf.fault(path_contains="/query", count=0, kind="request_limit")
    other = connect()
    with pytest.raises(psycopg.errors.Error):
        sync(other, "sf", "account")
    second = oauth_state(sf)["refresh_token"]
    assert second != first
    assert stored_refresh_token(db) == second

    # Inside a transaction the caller rolls back, too.
    sf.clear_faults()
    sf.expire_sessions()
    third_conn = connect()
    third_conn.execute("BEGIN")
    sync(third_conn, "sf", "contact")
    third_conn.execute("ROLLBACK")
    third = oauth_state(sf)["refresh_token"]
    assert third != second
    assert stored_refresh_token(db) == third

    # A new backend logs in with the stored token, and nothing logs the old.
    sf.expire_sessions()
    assert sync(connect(), "sf", "lead")["lead"]["status"] == "succeeded"
    assert stored_refresh_token(db) == oauth_state(sf)["refresh_token"]
    for t in (first, second, third):
        assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE concat(error, warning_samples::text) LIKE %s",
                   f"%{t}%") == 0


def test_a_source_created_in_the_same_transaction_keeps_its_rotated_token(db, salesforce):
    sf = salesforce
    sf.admin("POST", "/_mock/sf/oauth", {"rotate_refresh_tokens": True})
    db.execute("BEGIN")
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    db.execute("COMMIT")
    assert stored_refresh_token(db) == oauth_state(sf)["refresh_token"] != SF_REFRESH_TOKEN
