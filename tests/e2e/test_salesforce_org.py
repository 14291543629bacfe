"""What real Salesforce orgs do that a plain mock does not: refresh token
rotation, hard deletes and purges (getDeleted and its
earliestDateAvailable, reconciliation), archived activities, formula
fields, query timeouts, unfilterable cursors and unqueryable objects, base64
fields, and the org's daily API limit (Sforce-Limit-Info)."""

import psycopg
import pytest

from conftest import (SF_CLIENT_ID, SF_REFRESH_TOKEN, assert_echoed, assert_no_secret, create_sf_source,
                      seen_texts, sync)


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


def test_every_stream_of_one_call_logs_in_with_the_rotated_token(db, connect, salesforce):
    """One sync() of every stream, then the reconciliation an incremental
    run does when due: each connection after the first goes on with the
    token the first login rotated to, not the spent one the call loaded."""
    sf = salesforce
    sf.admin("POST", "/_mock/sf/oauth", {"rotate_refresh_tokens": True})
    create_sf_source(db, sf)
    rows = sync(db, "sf")
    assert set(rows) == {"account", "contact", "lead", "opportunity", "user"}
    assert all(r["status"] == "succeeded" for r in rows.values())
    assert stored_refresh_token(db) == oauth_state(sf)["refresh_token"]
    # Sessions expire: each stream of the next call logs in again, each
    # time with the token the previous login left.
    sf.expire_sessions()
    db.execute("UPDATE crm_sync.runs SET finished_at = finished_at - interval '3 days'")
    c = connect()
    cur = c.execute("SELECT stream, mode, status FROM crm_sync.sync('sf')")
    got = cur.fetchall()
    assert all(s == "succeeded" for _, _, s in got), got
    assert ("account", "reconcile", "succeeded") in got
    assert stored_refresh_token(db) == oauth_state(sf)["refresh_token"]


def test_a_token_rotated_during_a_call_is_scrubbed_from_what_it_records(db, pg_cluster, salesforce):
    """The call loaded its secrets before the rotation: a later login of the
    same call sends the new token, and a token endpoint that quotes it in
    its error must not put it in the ERROR, the runs or the log."""
    sf = salesforce
    sf.admin("POST", "/_mock/sf/oauth", {"rotate_refresh_tokens": True})
    create_sf_source(db, sf)
    # Each session serves 3 calls: the second stream logs in again, with
    # the rotated token, and the token endpoint echoes what it was sent.
    sf.limits(session_calls=3)
    sf.fault(path_contains="/services/oauth2/token", skip=1, count=1, kind="echo_secrets")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf")
    rotated = oauth_state(sf)["refresh_token"]
    assert rotated != SF_REFRESH_TOKEN
    assert_echoed(sf, refresh_token=rotated)
    assert_no_secret(seen_texts(db, pg_cluster, e.value, notices), [rotated], pair_with=[SF_CLIENT_ID])


def test_a_source_created_in_the_same_transaction_keeps_its_rotated_token(db, salesforce):
    sf = salesforce
    sf.admin("POST", "/_mock/sf/oauth", {"rotate_refresh_tokens": True})
    db.execute("BEGIN")
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    db.execute("COMMIT")
    assert stored_refresh_token(db) == oauth_state(sf)["refresh_token"] != SF_REFRESH_TOKEN


# --- Hard deletes, purges, getDeleted, reconciliation -------------------------

def rows_of(db, sql, *args):
    cur = db.execute(sql, args or None)
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def reconcile(db, stream, source="sf"):
    return rows_of(db, "SELECT * FROM crm_sync.reconcile(%s, %s)", source, stream)[0]


def live_ids(db, table, n):
    return [r[0] for r in db.execute(
        f"SELECT id FROM {table} WHERE _deleted_at IS NULL ORDER BY id LIMIT %s", (n,)).fetchall()]


def calls(sf, part):
    return sum(v for k, v in sf.stats()["by_endpoint"].items() if part in k)


def reason(db, table, rid):
    return db.execute(f"SELECT _deleted_at IS NOT NULL, _deleted_reason FROM {table} WHERE id = %s",
                      (rid,)).fetchone()


def test_reconcile_marks_hard_deleted_and_purged_records_gone(db, sf_factory):
    sf = sf_factory("--accounts", "1200")
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    hard = live_ids(db, "sf.account", 2)
    sf.admin("POST", "/_mock/sf/Account/hard_delete", {"ids": hard})
    # A deleted record purged from the recycle bin stays deleted here.
    binned = one(db, "SELECT id FROM sf.account WHERE _deleted_at IS NOT NULL LIMIT 1")
    sf.admin("POST", "/_mock/sf/Account/purge", {"ids": [binned]})
    # A landed row lost here is read again.
    lost = live_ids(db, "sf.account", 3)[2]
    db.execute("DELETE FROM sf.account WHERE id = %s", (lost,))
    sf.reset_stats()
    r = reconcile(db, "account")
    assert (r["status"] if "status" in r else "succeeded") == "succeeded"
    assert (r["records_deleted"], r["records_reread"]) == (2, 1)
    # 1,200 ids at 2,000 a page: one listing call (plus the count and the re-read).
    assert r["api_calls"] <= 4, r
    for h in hard:
        assert reason(db, "sf.account", h) == (True, "gone")
    assert reason(db, "sf.account", binned)[0] is True
    assert reason(db, "sf.account", lost) == (False, None)
    # A second reconciliation finds nothing more.
    r = reconcile(db, "account")
    assert (r["records_deleted"], r["records_reread"]) == (0, 0)


def test_reconcile_of_a_large_object_lists_ids_with_bulk_api(db, sf_factory):
    sf = sf_factory("--accounts", "3000")
    create_sf_source(db, sf, bulk_threshold=1000)
    sync(db, "sf", "account")
    hard = live_ids(db, "sf.account", 3)
    sf.admin("POST", "/_mock/sf/Account/hard_delete", {"ids": hard})
    sf.reset_stats()
    r = reconcile(db, "account")
    assert r["records_deleted"] == 3
    assert calls(sf, "/jobs/query") >= 2
    assert calls(sf, "GET /services/data/v59.0/query/") == 0, sf.stats()["by_endpoint"]
    assert [reason(db, "sf.account", h) for h in hard] == [(True, "gone")] * 3


def test_incremental_runs_read_get_deleted_once_hard_deletes_included(db, salesforce):
    sf = salesforce
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    hard, soft, back = live_ids(db, "sf.account", 3)
    sf.admin("POST", "/_mock/sf/Account/hard_delete", {"ids": [hard]})
    sf.delete("Account", [soft])
    # Deleted and restored between runs: the log lists it, yet it is live.
    import time
    now = int(time.time() * 1000)
    sf.admin("POST", "/_mock/sf/Account/delete", {"ids": [back], "timestamp_ms": now - 2000})
    sf.admin("POST", "/_mock/sf/Account/undelete", {"ids": [back], "timestamp_ms": now - 1000})
    sf.reset_stats()
    r = sync(db, "sf", "account")["account"]
    assert r["mode"] == "incremental" and r["records_deleted"] == 2
    by = sf.stats()["by_endpoint"]
    assert calls(sf, "/sobjects/Account/deleted") == 1, by
    assert calls(sf, "/queryAll") == 0, by
    assert reason(db, "sf.account", hard) == (True, "archived")
    assert reason(db, "sf.account", soft) == (True, "archived")
    assert reason(db, "sf.account", back) == (False, None)
    # Values stay as they were landed.
    assert one(db, "SELECT name IS NOT NULL FROM sf.account WHERE id = %s", hard)


def test_a_delete_log_that_no_longer_reaches_back_reconciles_the_stream(db, salesforce):
    sf = salesforce
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    hard = live_ids(db, "sf.account", 1)[0]
    sf.admin("POST", "/_mock/sf/Account/hard_delete", {"ids": [hard]})
    # The log is emptied past the deletion (earliestDateAvailable moves on).
    sf.admin("POST", "/_mock/sf/Account/expire_delete_log", {})
    db.execute("SET client_min_messages = warning")
    rows = rows_of(db, "SELECT * FROM crm_sync.sync('sf', 'account')")
    assert [r["mode"] for r in rows] == ["incremental", "reconcile"]
    assert rows[1]["records_deleted"] == 1
    assert reason(db, "sf.account", hard) == (True, "gone")
    w = one(db, "SELECT warning_samples::text FROM crm_sync.runs WHERE mode = 'incremental' ORDER BY run_id DESC LIMIT 1")
    assert "earliestDateAvailable" in w and "reconciled now" in w


def test_a_stream_paused_past_the_delete_log_says_it_must_be_reconciled(db, salesforce):
    sf = salesforce
    create_sf_source(db, sf, reconcile_every="off")
    sync(db, "sf", "account")
    hard = live_ids(db, "sf.account", 1)[0]
    sf.admin("POST", "/_mock/sf/Account/hard_delete", {"ids": [hard]})
    # Deletes were last looked for 20 days ago: getDeleted reaches back 15.
    db.execute("UPDATE crm_sync.watermarks SET deletes_from = deletes_from - interval '20 days'")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    rows = rows_of(db, "SELECT * FROM crm_sync.sync('sf', 'account')")
    assert [r["mode"] for r in rows] == ["incremental"]
    assert any("run crm_sync.reconcile()" in n and "15 days" in n for n in notices), notices
    assert reason(db, "sf.account", hard) == (False, None)
    # Still owed on the next run: it says so again.
    notices.clear()
    sync(db, "sf", "account")
    assert any("run crm_sync.reconcile()" in n for n in notices), notices
    assert reconcile(db, "account")["records_deleted"] == 1
    # Reconciled: later runs look for deletes from then, and say nothing.
    notices.clear()
    sync(db, "sf", "account")
    assert not any("reconcile" in n for n in notices), notices


# --- Archived activities -----------------------------------------------------

def archived_counts(sf):
    live = sf.query("SELECT COUNT() FROM Task WHERE IsDeleted = false")["totalSize"]
    archived = sf.query("SELECT COUNT() FROM Task WHERE IsDeleted = false AND IsArchived = true")["totalSize"]
    return live, archived


@pytest.mark.parametrize("bulk", [False, True])
def test_archived_tasks_land_as_live_rows_with_their_flag(db, sf_factory, bulk):
    sf = sf_factory("--tasks", "300")
    live, archived = archived_counts(sf)
    assert archived > 50, "the mock archives about a third"
    create_sf_source(db, sf, **({"bulk_threshold": 10} if bulk else {}))
    assert one(db, "SELECT crm_sync.add_stream('sf', 'Task')") == "task"
    sf.reset_stats()
    r = sync(db, "sf", "task")["task"]
    assert r["records_upserted"] == live
    assert one(db, "SELECT count(*) FROM sf.task WHERE _deleted_at IS NULL AND isarchived") == archived
    by = sf.stats()["by_endpoint"]
    if bulk:
        assert calls(sf, "POST /services/data/v59.0/jobs/query") == 1, by
    else:
        assert by.get("GET /services/data/v59.0/query") == 1, by  # the count only
        assert by.get("GET /services/data/v59.0/queryAll", 0) >= 1, by
    # An archived task changed later comes with the next incremental run.
    old = one(db, "SELECT id FROM sf.task WHERE isarchived ORDER BY id LIMIT 1")
    sf.upsert("Task", [{"Id": old, "Subject": "Edited while archived"}])
    r = sync(db, "sf", "task")["task"]
    assert r["mode"] == "incremental" and r["records_upserted"] == 1
    assert one(db, "SELECT subject FROM sf.task WHERE id = %s", old) == "Edited while archived"
    # Reconciliation counts archived tasks as live.
    assert reconcile(db, "task")["records_deleted"] == 0
    assert one(db, "SELECT count(*) FROM sf.task WHERE _deleted_at IS NULL") == live


# --- The org's daily API requests -------------------------------------------

def test_a_sync_stops_before_the_org_passes_its_share_of_daily_requests(db, sf_factory):
    sf = sf_factory("--accounts", "5000")
    create_sf_source(db, sf, bulk_api=False)
    sync(db, "sf", "contact")
    landed = one(db, "SELECT count(*) FROM sf.contact")
    # Other integrations have used 797 of the org's 1,000 requests: three
    # calls in, the org is at 800, the default 80%.
    sf.limits(daily_api_limit=1000, api_calls=797)
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as e:
        sync(db, "sf", "account")
    d = e.value.diag
    assert "has used 800 of its 1000 API requests" in d.message_primary
    assert "80%" in d.message_primary and "max_daily_share" in d.message_primary
    assert "rolling 24 hours" in d.message_hint
    run = db.execute("SELECT status, error_sqlstate FROM crm_sync.runs WHERE stream = 'account'").fetchone()
    assert run == ("failed", "53400")
    assert one(db, "SELECT count(*) FROM sf.contact") == landed
    # Well short of REQUEST_LIMIT_EXCEEDED: the org still has requests left.
    assert sf.stats()["api_calls"] < 1000
    # A source may be allowed more of it.
    db.execute("""SELECT crm_sync.alter_source('sf', options => '{"max_daily_share": 95}')""")
    assert sync(db, "sf", "account")["account"]["status"] == "succeeded"
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("""SELECT crm_sync.alter_source('sf', options => '{"max_daily_share": 0}')""")


# --- Honest discovery ----------------------------------------------------------

def test_discover_marks_objects_that_cannot_be_synced_and_add_stream_refuses_them(db, salesforce):
    sf = salesforce
    create_sf_source(db, sf)
    objs = {r[0]: r[1:] for r in db.execute(
        "SELECT object, syncable, reason FROM crm_sync.discover('sf')").fetchall()}
    assert objs["Account"] == (True, None)
    assert objs["ContentDocumentLink"][0] is False
    assert "filter on one parent record's Id" in objs["ContentDocumentLink"][1]
    assert objs["AccountChangeEvent"][0] is False
    assert "queryable: false" in objs["AccountChangeEvent"][1]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.add_stream('sf', 'ContentDocumentLink')")
    assert "cannot be synced" in e.value.diag.message_primary
    assert "filter on one parent record's Id" in e.value.diag.message_primary
    assert one(db, "SELECT count(*) FROM crm_sync.streams WHERE object = 'ContentDocumentLink'") == 0
    # Not queryable is only known from the org: the first sync says so.
    db.execute("SELECT crm_sync.add_stream('sf', 'AccountChangeEvent')")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        sync(db, "sf", "accountchangeevent")
    assert "AccountChangeEvent cannot be synced" in e.value.diag.message_primary
    assert "SET enabled = false" in e.value.diag.message_hint


def test_a_cursor_describe_says_cannot_be_filtered_is_not_used(db, salesforce):
    sf = salesforce
    sf.admin("POST", "/_mock/sf/Account/fields/SystemModstamp/flags", {"filterable": False})
    create_sf_source(db, sf)
    assert sync(db, "sf", "account")["account"]["status"] == "succeeded"
    rid = live_ids(db, "sf.account", 1)[0]
    sf.upsert("Account", [{"Id": rid, "Name": "Changed with LastModifiedDate"}])
    r = sync(db, "sf", "account")["account"]
    assert r["mode"] == "incremental" and r["records_upserted"] == 1
    assert one(db, "SELECT name FROM sf.account WHERE id = %s", rid) == "Changed with LastModifiedDate"


def test_base64_fields_stay_out_of_default_fields_and_of_bulk_queries(db, sf_factory):
    sf = sf_factory("--tasks", "200")
    create_sf_source(db, sf, bulk_threshold=10)
    db.execute("SELECT crm_sync.add_stream('sf', 'Attachment')")
    sf.reset_stats()
    r = sync(db, "sf", "attachment")["attachment"]
    assert r["status"] == "succeeded" and r["records_upserted"] > 150
    assert calls(sf, "POST /services/data/v59.0/jobs/query") == 1
    assert not (r["warnings"] or 0)
    cols = {c[0] for c in db.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = 'sf.attachment'::regclass AND attnum > 0")}
    assert "body" not in cols and "bodylength" in cols
    sel = dict(db.execute("SELECT property, selected FROM crm_sync.discover('sf', 'attachment')").fetchall())
    assert sel["Body"] is False and sel["Name"] is True
    # Chosen explicitly: a Bulk run leaves it out (and says so) instead of
    # failing the job and reading the whole object through REST.
    db.execute("UPDATE crm_sync.streams SET properties = '{Name,Body}' WHERE stream = 'attachment'")
    sf.reset_stats()
    r = sync(db, "sf", "attachment", full_refresh=True)["attachment"]
    assert r["status"] == "succeeded" and r["warnings"] >= 1
    assert calls(sf, "POST /services/data/v59.0/jobs/query") == 1
    assert sf.stats()["by_endpoint"].get("GET /services/data/v59.0/query", 0) <= 1  # the count
    w = one(db, "SELECT warning_samples::text FROM crm_sync.runs ORDER BY run_id DESC LIMIT 1")
    assert "Attachment.Body is a base64 field" in w and "REST API instead" not in w
    # An incremental (REST) run reads it: the blob's URL (records at the
    # watermark, read again, get theirs too).
    # A change set above bulk_threshold stays on REST when it holds a
    # base64 field, so the new values land.
    rids = [r[0] for r in db.execute(
        "SELECT id FROM sf.attachment WHERE _deleted_at IS NULL ORDER BY id LIMIT 30").fetchall()]
    sf.upsert("Attachment", [{"Id": i, "Name": "renamed.pdf"} for i in rids])
    sf.reset_stats()
    assert sync(db, "sf", "attachment")["attachment"]["records_upserted"] >= 30
    assert calls(sf, "/jobs/query") == 0
    rid = rids[0]
    assert one(db, "SELECT name FROM sf.attachment WHERE id = %s", rid) == "renamed.pdf"
    assert one(db, "SELECT body FROM sf.attachment WHERE id = %s", rid).endswith(f"/Attachment/{rid}/Body")


# --- Incremental windows that finish --------------------------------------------

DAY_MS = 86_400_000


def spread_changes(sf, obj, days, per_day):
    """New records stamped one day apart over the last `days` days."""
    import time
    now = int(time.time() * 1000)
    ids = []
    for d in range(days, 0, -1):
        ids += sf.upsert(obj, [{"Name": f"Spread {d}-{i}"} for i in range(per_day)],
                         timestamp_ms=now - d * DAY_MS)
    return ids


def test_a_query_timeout_halves_the_window_and_never_repeats_a_query(db, sf_factory):
    sf = sf_factory("--accounts", "400")
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    ids = spread_changes(sf, "Account", 20, 30)
    # Queries matching more than 250 records time out, as non-selective
    # queries over a large change set do.
    sf.limits(query_timeout_rows=250)
    sf.reset_stats()
    r = sync(db, "sf", "account")["account"]
    assert r["status"] == "succeeded" and r["records_upserted"] == len(ids) == 600
    timed_out = sf.stats()["timed_out_queries"]
    assert timed_out and len(timed_out) <= 30, timed_out
    assert len(set(timed_out)) == len(timed_out), "the same query was sent again"
    w = one(db, "SELECT warning_samples::text FROM crm_sync.runs WHERE stream = 'account' ORDER BY run_id DESC LIMIT 1")
    assert "timed out (QUERY_TIMEOUT)" in w and "narrower windows" in w
    assert one(db, "SELECT count(*) FROM sf.account WHERE name LIKE 'Spread %%'") == 600
    # The next run starts from the new watermark: nothing times out.
    sf.reset_stats()
    assert sync(db, "sf", "account")["account"]["status"] == "succeeded"


def test_records_changed_within_one_second_past_the_limit_fail_with_a_hint(db, sf_factory):
    sf = sf_factory("--accounts", "100")
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    sf.upsert("Account", [{"Name": f"Burst {i}"} for i in range(300)])
    sf.limits(query_timeout_rows=250)
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        sync(db, "sf", "account")
    assert "bulk_threshold" in (e.value.diag.message_hint or "")
    timed_out = sf.stats()["timed_out_queries"]
    assert len(set(timed_out)) == len(timed_out)


def test_a_large_incremental_change_set_goes_through_bulk_api(db, sf_factory):
    sf = sf_factory("--accounts", "80")
    create_sf_source(db, sf, bulk_threshold=100)
    sync(db, "sf", "account")
    sf.upsert("Account", [{"Name": f"Big change {i}"} for i in range(300)])
    sf.reset_stats()
    r = sync(db, "sf", "account")["account"]
    assert r["mode"] == "incremental" and r["records_upserted"] == 300
    assert r["records_read"] < 380, "only the change set was read"
    assert calls(sf, "POST /services/data/v59.0/jobs/query") == 1
    assert calls(sf, "/sobjects/Account/deleted") == 1
    # Once the watermark has passed the big change (the lookback reads it
    # again until then), a small change set stays on the REST API.
    sf.upsert("Account", [{"Name": "Small change"}])
    assert sync(db, "sf", "account")["account"]["records_upserted"] == 1
    sf.upsert("Account", [{"Name": "Another small change"}])
    sf.reset_stats()
    assert sync(db, "sf", "account")["account"]["records_upserted"] == 1
    assert calls(sf, "/jobs/query") == 0


def test_a_query_may_run_longer_than_the_source_timeout(db, salesforce):
    """Salesforce runs a query up to 120 s: query calls wait 150 s whatever
    timeout_seconds says; other calls keep it."""
    create_sf_source(db, salesforce, timeout_seconds=1, max_retries=0)
    salesforce.fault(path_contains="/query", skip=0, count=1, kind="latency", latency_ms=2500)
    assert sync(db, "sf", "account")["account"]["status"] == "succeeded"
    salesforce.fault(path_contains="/describe", skip=0, count=1, kind="latency", latency_ms=2500)
    with pytest.raises(psycopg.errors.Error):
        sync(db, "sf", "contact")


# --- Formula fields ----------------------------------------------------------------

@pytest.mark.parametrize("bulk", [False, True])
def test_formula_values_are_refreshed_by_each_reconciliation(db, sf_factory, bulk):
    sf = sf_factory("--invoices", "120")
    create_sf_source(db, sf, **({"bulk_threshold": 10} if bulk else {}))
    db.execute("SELECT crm_sync.add_stream('sf', 'Invoice__c')")
    sync(db, "sf", "invoice__c")
    ids = live_ids(db, "sf.invoice__c", 3)
    sf.admin("POST", "/_mock/sf/Invoice__c/recalculate",
             {"field": "Days_Overdue__c", "values": {i: 200000 + k for k, i in enumerate(ids)}})
    # SystemModstamp did not move: an incremental run cannot see it.
    r = sync(db, "sf", "invoice__c")["invoice__c"]
    assert r["records_upserted"] == 0
    assert one(db, "SELECT count(*) FROM sf.invoice__c WHERE days_overdue__c >= 200000") == 0
    sf.reset_stats()
    r = reconcile(db, "invoice__c")
    assert (r["records_refreshed"], r["records_deleted"], r["records_reread"]) == (3, 0, 0)
    got = dict(db.execute("SELECT id, days_overdue__c FROM sf.invoice__c WHERE id = ANY(%s)", (ids,)).fetchall())
    assert got == {i: 200000 + k for k, i in enumerate(ids)}
    raw = one(db, "SELECT (_raw->>'Days_Overdue__c')::numeric FROM sf.invoice__c WHERE id = %s", ids[0])
    assert raw == 200000
    if bulk:
        assert calls(sf, "POST /services/data/v59.0/jobs/query") == 1
    # Nothing changed since: nothing is rewritten.
    assert reconcile(db, "invoice__c")["records_refreshed"] == 0


def test_bulk_job_polls_count_against_the_daily_share(db, sf_factory):
    """Every status poll of a Bulk job is an API request the org counts: a
    slow job's polls stop the run at max_daily_share like any other call."""
    sf = sf_factory("--accounts", "300", "--bulk-polls", "6")
    create_sf_source(db, sf, bulk_threshold=10)
    sf.limits(daily_api_limit=1000, api_calls=795)
    sf.reset_stats()
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as e:
        sync(db, "sf", "account")
    assert "has used 800 of its 1000 API requests" in e.value.diag.message_primary
    by = sf.stats()["by_endpoint"]
    polls = sum(v for k, v in by.items() if k.startswith("GET /services/data/v59.0/jobs/query/{id}")
                and not k.endswith("/results"))
    assert polls >= 2, by
    assert not any(k.endswith("/results") for k in by), "stopped before the results"
    # The job is not left running for nobody.
    assert by.get("PATCH /services/data/v59.0/jobs/query/{id}") == 1, by
    assert by.get("DELETE /services/data/v59.0/jobs/query/{id}") == 1, by


def test_many_narrow_windows_are_not_taken_for_a_looping_server(db, sf_factory):
    """A long stretch of dense changes read in a hundred and more windows:
    no window's count is the run's total, so the pages are not mistaken
    for a server paging forever."""
    sf = sf_factory("--accounts", "100")
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    import time
    now = int(time.time() * 1000)
    ids = []
    for k in range(200):  # 15 records every 3 hours over 25 days
        ids += sf.upsert("Account", [{"Name": f"Dense {k}-{i}"} for i in range(15)],
                         timestamp_ms=now - 25 * DAY_MS + k * 3 * 3_600_000)
    sf.limits(query_timeout_rows=25)
    r = sync(db, "sf", "account")["account"]
    assert r["status"] == "succeeded" and r["records_upserted"] == len(ids) == 3000
    timed_out = sf.stats()["timed_out_queries"]
    assert len(set(timed_out)) == len(timed_out)
