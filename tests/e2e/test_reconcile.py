"""crm_sync.reconcile() against the HubSpot mock: records that leave no
trace (GDPR erasures, archived records purged after the 90-day restore
window) are marked gone; records that never landed are read; incremental
syncs reconcile by themselves when reconcile_every is due."""

import psycopg
import pytest

from conftest import create_sf_source, create_source, sync


def one(db, sql, *args):
    return db.execute(sql, args or None).fetchone()[0]


def reconcile(db, source="hs", stream=None):
    cur = db.execute("SELECT * FROM crm_sync.reconcile(%s, %s)", (source, stream))
    cols = [d.name for d in cur.description]
    return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def sync_rows(db, source="hs", stream=None):
    """Every row of crm_sync.sync(), in order (a stream may have two)."""
    cur = db.execute("SELECT * FROM crm_sync.sync(%s, %s)", (source, stream))
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def purge(mock, obj, ids):
    return mock.admin("POST", f"/_mock/{obj}/purge", {"ids": [str(i) for i in ids]})["purged"]


def named_in_model(db, record):
    return one(db, "SELECT count(*) FROM crm.contacts WHERE %s = ANY (sources) AND deleted_at IS NULL", record)


def test_records_purged_in_the_crm_are_marked_gone(db, hubspot):
    create_source(db, hubspot)
    sync(db)
    assert purge(hubspot, "contacts", [5, 17, 230]) == ["5", "17", "230"]
    hubspot.archive("contacts", [40])
    # An incremental sync sees the archived record, and nothing of the
    # purged ones: they stay live, in the landing table and the model.
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["records_deleted"] == 1
    assert one(db, "SELECT _deleted_reason FROM hs.contacts WHERE id = '40'") == "archived"
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE id IN ('5', '17', '230') AND _deleted_at IS NULL") == 3
    assert named_in_model(db, "hs/contacts/17") == 1

    hubspot.reset_stats()
    r = reconcile(db, stream="contacts")["contacts"]
    assert r["mode"] == "reconcile" and r["status"] == "succeeded"
    assert (r["records_seen"], r["records_deleted"], r["records_reread"]) == (246, 3, 0)
    # The properties call, then 3 list pages of ids (100 a page).
    assert r["api_calls"] == hubspot.stats()["requests"] == 4
    gone = db.execute("SELECT id, _deleted_reason, _deleted_at IS NOT NULL, _run_id FROM hs.contacts "
                      "WHERE _deleted_reason = 'gone' ORDER BY id::int").fetchall()
    assert gone == [(i, "gone", True, r["run_id"]) for i in ("5", "17", "230")]
    # Values stay as they were; the archived row keeps its reason.
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE id = '17' AND email IS NOT NULL") == 1
    assert one(db, "SELECT _deleted_reason FROM hs.contacts WHERE id = '40'") == "archived"
    # The unified model follows at once: no ghost.
    assert named_in_model(db, "hs/contacts/17") == 0
    run = db.execute("SELECT mode, status, records_read, records_deleted, records, api_calls FROM crm_sync.runs "
                     "WHERE run_id = %s", (r["run_id"],)).fetchone()
    assert run == ("reconcile", "succeeded", 246, 3, 0, 4)
    # The working set is emptied; a second run finds nothing more.
    assert one(db, "SELECT count(*) FROM crm_sync.reconcile_ids") == 0
    again = reconcile(db, stream="contacts")["contacts"]
    assert (again["records_seen"], again["records_deleted"], again["records_reread"]) == (246, 0, 0)


def test_records_that_never_landed_are_read(db, hubspot):
    """What an index never returned (or a row lost or marked deleted by
    mistake) is read by id and lands as a sync lands it."""
    create_source(db, hubspot)
    sync(db)
    expected = db.execute("SELECT id, email, _raw->'properties'->>'lastmodifieddate' FROM hs.contacts "
                          "WHERE id IN ('3', '150', '151') ORDER BY id").fetchall()
    db.execute("DELETE FROM hs.contacts WHERE id IN ('3', '150')")
    db.execute("UPDATE hs.contacts SET _deleted_at = now(), _deleted_reason = 'gone' WHERE id = '151'")
    hubspot.reset_stats()
    r = reconcile(db, stream="contacts")["contacts"]
    assert (r["records_seen"], r["records_deleted"], r["records_reread"]) == (250, 0, 3)
    # 1 properties call, 3 pages of ids, 1 batch read, and its associations.
    assert r["api_calls"] == hubspot.stats()["requests"]
    back = db.execute("SELECT id, email, _raw->'properties'->>'lastmodifieddate' FROM hs.contacts "
                      "WHERE id IN ('3', '150', '151') AND _deleted_at IS NULL AND _deleted_reason IS NULL "
                      "ORDER BY id").fetchall()
    assert back == expected
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE _deleted_at IS NULL") == 250
    assert named_in_model(db, "hs/contacts/150") == 1


def test_incremental_syncs_reconcile_when_it_is_due(db, hubspot):
    create_source(db, hubspot, reconcile_every="0 s")
    sync(db)
    purge(hubspot, "deals", [7])
    rows = sync_rows(db, stream="deals")
    assert [r["mode"] for r in rows] == ["incremental", "reconcile"]
    assert rows[1]["records_deleted"] == 1
    assert one(db, "SELECT _deleted_reason FROM hs.deals WHERE id = '7'") == "gone"
    assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE stream = 'deals' AND mode = 'reconcile'") == 1


def test_a_no_change_sync_does_not_reconcile_before_it_is_due(db, hubspot):
    create_source(db, hubspot)  # reconcile_every: 1 day
    sync(db)
    purge(hubspot, "contacts", [9])
    hubspot.reset_stats()
    rows = sync_rows(db, stream="contacts")
    assert [r["mode"] for r in rows] == ["incremental"]
    assert rows[0]["api_calls"] <= 3
    assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE mode = 'reconcile'") == 0
    # Off stays off, even when a day has passed.
    db.execute("SELECT crm_sync.alter_source('hs', options => '{\"reconcile_every\": \"off\"}')")
    db.execute("UPDATE crm_sync.runs SET finished_at = finished_at - interval '2 days'")
    assert [r["mode"] for r in sync_rows(db, stream="contacts")] == ["incremental"]
    # Due: a day after the last reconciliation (or the first run).
    db.execute("SELECT crm_sync.alter_source('hs', options => '{\"reconcile_every\": \"1 day\"}')")
    rows = sync_rows(db, stream="contacts")
    assert [r["mode"] for r in rows] == ["incremental", "reconcile"]
    assert [r["mode"] for r in sync_rows(db, stream="contacts")] == ["incremental"]


def test_a_failed_reconciliation_keeps_the_sync_and_is_recorded(db, hubspot):
    create_source(db, hubspot, reconcile_every="0 s", max_retries=0)
    sync(db)
    hubspot.upsert("contacts", [{"id": "12", "properties": {"jobtitle": "Changed"}}])
    purge(hubspot, "contacts", [13])
    # A row to read again, whose batch read fails.
    db.execute("DELETE FROM hs.contacts WHERE id = '14'")
    hubspot.fault(path_contains="/objects/contacts/batch/read", count=0, kind="500")
    warnings = []
    db.add_notice_handler(lambda d: warnings.append(d.message_primary) if d.severity == "WARNING" else None)
    rows = sync_rows(db, stream="contacts")
    assert [r["mode"] for r in rows] == ["incremental"]
    assert any("reconciliation after the sync failed" in w and "synced rows are kept" in w for w in warnings)
    assert one(db, "SELECT jobtitle FROM hs.contacts WHERE id = '12'") == "Changed"
    # Nothing of the failed reconciliation stays: 13 is not marked gone.
    assert one(db, "SELECT _deleted_at FROM hs.contacts WHERE id = '13'") is None
    failed = db.execute("SELECT mode, status, error_sqlstate FROM crm_sync.runs WHERE mode = 'reconcile'").fetchall()
    assert failed == [("reconcile", "failed", "08006")]
    assert one(db, "SELECT count(*) FROM crm_sync.reconcile_ids") == 0
    # Called directly, the failure is an ERROR naming source and stream.
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        reconcile(db, stream="contacts")
    assert "hs" in str(e.value) and "contacts" in str(e.value)
    assert one(db, "SELECT _deleted_at FROM hs.contacts WHERE id = '13'") is None
    hubspot.clear_faults()
    r = reconcile(db, stream="contacts")["contacts"]
    assert (r["records_deleted"], r["records_reread"]) == (1, 1)


def test_reconcile_refuses_what_it_cannot_do(db, hubspot):
    create_source(db, hubspot)
    with pytest.raises(psycopg.errors.UndefinedObject):
        reconcile(db, stream="tickets")
    # Never synced: nothing to compare.
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        reconcile(db, stream="contacts")
    assert "Sync it first" in e.value.diag.message_hint
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.alter_source('hs', options => '{\"reconcile_every\": \"daily\"}')")
    assert "reconcile_every" in str(e.value)


def test_reconcile_needs_the_operate_level(db, connect, hubspot):
    create_source(db, hubspot)
    sync(db, stream="deals")
    for role, level in (("rc_reader", "read"), ("rc_operator", "operate")):
        db.execute(f"CREATE ROLE {role} LOGIN")
        db.execute("SELECT crm_sync.grant_access(%s, %s)", (role, level))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reconcile(connect(user="rc_reader"), stream="deals")
    op = connect(user="rc_operator")
    assert reconcile(op, stream="deals")["deals"]["records_seen"] == 40
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        op.execute("SELECT * FROM crm_sync.reconcile_ids")


def test_an_empty_listing_of_a_landed_stream_marks_nothing(db, hubspot):
    """A listing that comes back empty (a proxy's empty answer, a token that
    lost its scope) while rows are landed is refused: nothing is marked."""
    create_source(db, hubspot)
    sync(db, stream="deals")
    purge(hubspot, "deals", range(1, 41))
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        reconcile(db, stream="deals")
    assert "listed no deals records while 40 are landed live; nothing was marked deleted" in str(e.value)
    assert one(db, "SELECT count(*) FROM hs.deals WHERE _deleted_at IS NULL") == 40


def test_salesforce_incremental_syncs_reconcile_when_due(db, salesforce):
    """Salesforce reconciles too: an incremental sync a day after the first
    run also reconciles (its own row, mode 'reconcile')."""
    create_sf_source(db, salesforce)
    sync(db, "sf", "account")
    db.execute("UPDATE crm_sync.runs SET finished_at = finished_at - interval '3 days'")
    rows = sync_rows(db, "sf", "account")
    assert [r["mode"] for r in rows] == ["incremental", "reconcile"]
    assert rows[1]["status"] == "succeeded"
    assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE mode = 'reconcile'") == 1
