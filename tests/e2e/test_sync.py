"""crm_sync.sync() against the HubSpot mock: what lands, incremental moves,
ties, changes while paging, deletes, types, streams and properties."""

import psycopg
import pytest

import requests

from conftest import TOKEN, create_source, sync


def count(db, sql, *args):
    return db.execute(sql, args or None).fetchone()[0]


def test_full_sync_lands_every_record_with_typed_columns(db, hubspot):
    create_source(db, hubspot)
    rows = sync(db)
    assert set(rows) == {"contacts", "companies", "deals"}
    assert rows["contacts"]["mode"] == "full"
    assert rows["contacts"]["status"] == "succeeded"
    assert rows["contacts"]["records_upserted"] == 250
    assert rows["companies"]["records_upserted"] == 60
    assert rows["deals"]["records_upserted"] == 40
    assert rows["contacts"]["api_calls"] >= 3  # properties + 3 list pages (+ archived + catch-up)
    assert rows["contacts"]["bytes_received"] > 50_000
    assert rows["contacts"]["watermark"] is not None
    # Every record of the mock once (its seed's ids are 1..250).
    assert count(db, "SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts") == list(range(1, 251))

    types = dict(db.execute(
        """SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = 'hs.contacts'::regclass AND attnum > 0 AND NOT attisdropped""").fetchall())
    assert types["id"] == "text"
    assert types["email"] == "text"
    assert types["createdate"] == "timestamp with time zone"
    assert types["hs_object_id"] == "numeric"
    assert types["_raw"] == "jsonb"
    assert types["_deleted_at"] == "timestamp with time zone"
    ctypes = dict(db.execute(
        """SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = 'hs.companies'::regclass AND attnum > 0""").fetchall())
    assert ctypes["numberofemployees"] == "numeric"

    # Typed values equal what the API sent, which _raw keeps whole.
    mismatches = count(db, """SELECT count(*) FROM hs.contacts
                               WHERE email IS DISTINCT FROM _raw->'properties'->>'email'
                                  OR _updated_at IS DISTINCT FROM (_raw->'properties'->>'lastmodifieddate')::timestamptz""")
    assert mismatches == 0
    run = db.execute("""SELECT mode, status, records, api_calls, bytes, error FROM crm_sync.runs
                         WHERE source = 'hs' AND stream = 'contacts'""").fetchall()
    assert run == [("full", "succeeded", 250, rows["contacts"]["api_calls"], rows["contacts"]["bytes_received"], None)]
    wm = db.execute("SELECT cursor FROM crm_sync.watermarks WHERE source='hs' AND stream='contacts'").fetchone()
    assert wm is not None


def test_incremental_sync_moves_only_what_changed(db, hubspot):
    create_source(db, hubspot)
    sync(db)
    hubspot.reset_stats()
    again = sync(db)
    # Nothing changed: nothing is read, one search, one archived-list page
    # and one properties call per stream (counted by the mock, too).
    assert {(k, r["mode"], r["records_read"], r["records_upserted"], r["records_unchanged"], r["records_deleted"],
             r["api_calls"]) for k, r in again.items()} == {
        (k, "incremental", 0, 0, 0, 0, 3) for k in ("companies", "contacts", "deals")}
    assert hubspot.stats()["requests"] == 9

    hubspot.upsert("contacts", [{"id": "7", "properties": {"firstname": "Changed"}},
                                {"properties": {"email": "new.person@example.com", "firstname": "New"}}])
    hubspot.archive("contacts", [9])
    hubspot.upsert("deals", [{"id": "3", "properties": {"amount": "1234.5"}}])
    hubspot.reset_stats()
    rows = sync(db)
    assert {k: r["mode"] for k, r in rows.items()} == dict.fromkeys(rows, "incremental")
    # Read: the two changed contacts and the archived one; nothing else.
    assert (rows["contacts"]["records_read"], rows["contacts"]["records_upserted"],
            rows["contacts"]["records_unchanged"], rows["contacts"]["records_deleted"]) == (3, 2, 0, 1)
    assert (rows["deals"]["records_read"], rows["deals"]["records_upserted"]) == (1, 1)
    assert (rows["companies"]["records_read"], rows["companies"]["records_upserted"]) == (0, 0)
    # A search page, an archived page and properties per stream, plus one
    # associations call per associated type of the changed records
    # (contacts: companies; deals: companies and contacts).
    assert [r["api_calls"] for r in rows.values()] == [3, 4, 5]
    assert hubspot.stats()["requests"] == 12
    assert count(db, "SELECT firstname FROM hs.contacts WHERE id = '7'") == "Changed"
    assert count(db, "SELECT count(*) FROM hs.contacts WHERE email = 'new.person@example.com'") == 1
    assert count(db, "SELECT amount FROM hs.deals WHERE id = '3'") == pytest.approx(1234.5)
    # The archived contact stays, marked.
    assert count(db, "SELECT _deleted_at IS NOT NULL FROM hs.contacts WHERE id = '9'") is True
    assert count(db, "SELECT count(*) FROM hs.contacts") == 251
    # Watermark moved to the newest change.
    assert rows["contacts"]["watermark"] > again["contacts"]["watermark"]


def test_a_full_refresh_of_unchanged_data_reports_what_it_read(db, hubspot):
    create_source(db, hubspot)
    sync(db, stream="contacts")
    hubspot.reset_stats()
    r = sync(db, stream="contacts", full_refresh=True)["contacts"]
    assert (r["mode"], r["records_read"], r["records_upserted"], r["records_unchanged"], r["records_deleted"]) == \
        ("full", 250, 0, 250, 0)
    assert r["api_calls"] == hubspot.stats()["requests"]
    assert db.execute("""SELECT records_read, records, records_unchanged, records_deleted, api_calls
                           FROM crm_sync.runs WHERE run_id = %s""", (r["run_id"],)).fetchone() == \
        (250, 0, 250, 0, r["api_calls"])


def row_versions(db):
    """Each landing row's version: a row written gets a new one (ctid,
    xmin); one locked keeps the locker's id in xmax."""
    return dict(db.execute("SELECT id, ctid::text || '/' || xmin::text || '/' || xmax::text "
                           "FROM hs.contacts").fetchall())


def test_a_full_refresh_writes_and_locks_only_the_rows_that_changed(db, connect, mock_factory):
    """A full refresh reads every record again: a landing row whose record
    did not change is neither rewritten nor locked (a lock is a WAL record
    and a dirty page: 211 MB of WAL for 200,000 unchanged HubSpot
    contacts), so a refresh does not wait for an application holding such
    a row; one whose record changed is written, one new is added."""
    hs = mock_factory(300, 0, 0)
    create_source(db, hs)
    sync(db, stream="contacts")
    hs.upsert("contacts", [{"id": "7", "properties": {"jobtitle": "Refreshed"}},
                           {"properties": {"email": "new.one@example.com", "firstname": "New"}}])

    # An application holds an unchanged row (SELECT .. FOR UPDATE, in an
    # open transaction) all through the refresh.
    app = connect(autocommit=False)
    app.execute("SELECT 1 FROM hs.contacts WHERE id = '8' FOR UPDATE")
    before = row_versions(db)
    db.execute("SET lock_timeout = '2s'")
    r = sync(db, stream="contacts", full_refresh=True)["contacts"]
    assert (r["records_upserted"], r["records_unchanged"]) == (2, 299)
    after = row_versions(db)
    app.rollback()
    new = set(after) - set(before)
    assert len(new) == 1
    # Written: the changed row and the new one; every other row as it was
    # (the same version, no lock taken).
    assert sorted(i for i in after if after[i] != before.get(i)) == sorted(["7", *new])
    assert db.execute("SELECT jobtitle, _run_id = %s FROM hs.contacts WHERE id = '7'",
                      (r["run_id"],)).fetchone() == ("Refreshed", True)
    # The next full refresh, nothing changed: nothing written.
    again = sync(db, stream="contacts", full_refresh=True)["contacts"]
    assert (again["records_upserted"], again["records_unchanged"]) == (0, 301)
    assert row_versions(db) == after


def test_an_incremental_run_writes_and_locks_only_the_rows_that_changed(db, connect, mock_factory):
    """An incremental run reads its lookback again (HubSpot's last hour):
    run more often than that, it meets the records of the runs before,
    unchanged. Their rows are neither rewritten nor locked, so the run does
    not wait for an application holding one; the changed row is written."""
    hs = mock_factory(30, 0, 0)
    # HubSpot's default lookback (the tests' default is none).
    create_source(db, hs, lookback_seconds=3600)
    sync(db, stream="contacts")
    hs.upsert("contacts", [{"id": "5", "properties": {"jobtitle": "First change"}},
                           {"id": "6", "properties": {"jobtitle": "First change"}}])
    first = sync(db, stream="contacts")["contacts"]
    assert (first["mode"], first["records_upserted"]) == ("incremental", 2)
    hs.upsert("contacts", [{"id": "7", "properties": {"jobtitle": "Second change"}}])

    # An application holds a row the last run wrote (read again now,
    # unchanged) all through the next run.
    app = connect(autocommit=False)
    app.execute("SELECT 1 FROM hs.contacts WHERE id = '5' FOR UPDATE")
    before = row_versions(db)
    db.execute("SET lock_timeout = '2s'")
    r = sync(db, stream="contacts")["contacts"]
    after = row_versions(db)
    app.rollback()
    assert r["mode"] == "incremental"
    # 5 and 6 were read again (within the lookback), unchanged.
    assert r["records_upserted"] == 1 and r["records_unchanged"] >= 2
    assert [i for i in after if after[i] != before[i]] == ["7"]
    assert db.execute("SELECT jobtitle FROM hs.contacts WHERE id = '7'").fetchone() == ("Second change",)


def test_restored_record_is_unmarked(db, hubspot):
    create_source(db, hubspot)
    hubspot.archive("contacts", [4])
    sync(db, stream="contacts")
    assert count(db, "SELECT _deleted_at IS NOT NULL FROM hs.contacts WHERE id = '4'") is True
    hubspot.upsert("contacts", [{"id": "4", "properties": {"lastname": "Back"}}])
    sync(db, stream="contacts")
    assert count(db, "SELECT _deleted_at IS NULL AND lastname = 'Back' FROM hs.contacts WHERE id = '4'") is True


def mock_state(mock, obj="contacts", prop="firstname"):
    """Every live record's id -> prop, read from the mock's list endpoint."""
    out, after = {}, None
    for _ in range(1000):
        params = {"limit": 100, "properties": prop}
        if after:
            params["after"] = after
        r = requests.get(f"{mock.url}/crm/v3/objects/{obj}", params=params,
                         headers={"Authorization": "Bearer " + TOKEN}, timeout=30).json()
        for rec in r["results"]:
            out[rec["id"]] = rec["properties"].get(prop)
        after = r.get("paging", {}).get("next", {}).get("after")
        if not after:
            return out
    raise AssertionError("the mock's list did not end within 1,000 pages")


def db_state(db, table="hs.contacts", col="firstname"):
    return dict(db.execute(f"SELECT id, {col} FROM {table} WHERE _deleted_at IS NULL").fetchall())


def test_ties_larger_than_a_page_lose_nothing(db, mock_factory):
    # 1,000 contacts: ids 1..450 share one timestamp (a bulk import) in the seed.
    m = mock_factory(contacts=1000, companies=10, deals=10)
    create_source(db, m)
    sync(db, stream="contacts")
    assert count(db, "SELECT count(*) FROM hs.contacts") == 1000
    # 700 records changed in the same millisecond (one change: the mock
    # gives it one time): far more than a search page.
    m.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"tie-{i}"}} for i in range(100, 800)])
    m.reset_stats()
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["records_upserted"] == 700
    assert count(db, "SELECT count(*) FROM hs.contacts WHERE firstname LIKE 'tie-%'") == 700
    assert db_state(db) == mock_state(m)
    # Nothing new: the next run writes nothing.
    assert sync(db, stream="contacts")["contacts"]["records_upserted"] == 0


def test_more_than_10000_changes_in_one_window(db, mock_factory):
    m = mock_factory(contacts=12_000, companies=10, deals=10)
    create_source(db, m, track_deletes=False)
    sync(db, stream="contacts")
    # Every record changes, half of them in one shared millisecond: a search
    # query could return at most 10,000 of these.
    m.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"bulk-{i}"}} for i in range(1, 6001)])
    m.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"bulk-{i}"}} for i in range(6001, 12001)])
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["records_upserted"] == 12_000
    assert count(db, "SELECT count(*) FROM hs.contacts WHERE firstname LIKE 'bulk-%'") == 12_000
    assert m.stats()["status_counts"].get("400", 0) == 0


def test_changes_while_paging_land_in_this_sync_or_the_next(db, mock_factory):
    m = mock_factory(contacts=1000, companies=10, deals=10)
    create_source(db, m)
    # During the full list: after 3 pages, change a record already read (id 5)
    # and one not read yet (id 990), and create one.
    m.hook("/crm/v3/objects/contacts", 3, {"op": "upsert", "object": "contacts", "records": [
        {"id": "5", "properties": {"firstname": "edited-during-list"}},
        {"id": "990", "properties": {"firstname": "edited-ahead"}},
        {"properties": {"firstname": "created-during-list", "email": "during@example.com"}}]})
    sync(db, stream="contacts")
    assert db_state(db) == mock_state(m)

    # During an incremental search: records move while we page.
    m.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"wave1-{i}"}} for i in range(1, 601)])
    m.hook("/search", 1, {"op": "upsert", "object": "contacts", "records": [
        {"id": "2", "properties": {"firstname": "moved-while-paging"}},
        {"id": "599", "properties": {"firstname": "moved-too"}},
        {"id": "900", "properties": {"firstname": "not-in-wave"}}]})
    sync(db, stream="contacts")
    sync(db, stream="contacts")
    live = mock_state(m)
    assert db_state(db) == live
    # Nothing archived in this test: no row beside the live ones.
    assert count(db, "SELECT count(*) FROM hs.contacts") == len(live)


def test_value_that_does_not_fit_is_kept_in_raw_with_a_warning(db, hubspot):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET properties = '{email,loyalty_score,signup_date,is_vip,favorite_color}' "
               "WHERE source = 'hs' AND stream = 'contacts'")
    hubspot.upsert("contacts", [{"id": "11", "properties": {"loyalty_score": "n/a", "signup_date": "31/02/2020",
                                                            "is_vip": "true"}}])
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert rows["contacts"]["warnings"] >= 2
    r = db.execute("SELECT loyalty_score, signup_date, is_vip, _raw->'properties'->>'loyalty_score' "
                   "FROM hs.contacts WHERE id = '11'").fetchone()
    assert r == (None, None, True, "n/a")
    types = dict(db.execute("""SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
                                WHERE attrelid = 'hs.contacts'::regclass AND attnum > 0""").fetchall())
    assert types["loyalty_score"] == "numeric"
    assert types["signup_date"] == "date"
    assert types["is_vip"] == "boolean"
    assert types["favorite_color"] == "text"
    samples = count(db, "SELECT warning_samples FROM crm_sync.runs WHERE stream = 'contacts'")
    assert any("loyalty_score" in s and "record 11" in s for s in samples)


def test_a_batch_of_several_chunks_lands_every_record_and_every_warning(db, mock_factory):
    # A batch (5,000 records by default) is written in chunks of 1,000, the
    # next laid out on a helper thread while one is written: bad values in
    # every chunk, and a record the CRM sent with a NUL in the last.
    m = mock_factory(contacts=2500, companies=10, deals=10)
    create_source(db, m)
    db.execute("UPDATE crm_sync.streams SET properties = '{email,firstname,loyalty_score}' "
               "WHERE source = 'hs' AND stream = 'contacts'")
    bad = list(range(7, 2501, 400))
    m.upsert("contacts", [{"id": str(i), "properties": {"loyalty_score": "n/a"}} for i in bad]
             + [{"id": "2500", "properties": {"firstname": "Last\u0000One"}}])
    r = sync(db, stream="contacts")["contacts"]
    assert r["status"] == "succeeded"
    assert r["records_upserted"] == 2500
    assert r["warnings"] == len(bad) + 1
    samples = count(db, "SELECT warning_samples FROM crm_sync.runs WHERE stream = 'contacts'")
    for i in bad:
        assert any("loyalty_score" in s and f"record {i} " in s for s in samples), (i, samples)
    assert any("record 2500 has \\u0000" in s for s in samples), samples
    live = mock_state(m)
    live["2500"] = "Last\ufffdOne"
    assert db_state(db) == live
    assert count(db, "SELECT count(*) FROM hs.contacts WHERE loyalty_score IS NULL "
                     "AND _raw->'properties'->>'loyalty_score' = 'n/a'") == len(bad)
    assert count(db, "SELECT count(*) FROM hs.contacts WHERE _run_id IS NOT NULL") == 2500


def test_new_property_adds_a_column(db, hubspot):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET properties = '{*}' WHERE source = 'hs' AND stream = 'companies'")
    sync(db, stream="companies")
    hubspot.admin("POST", "/_mock/companies/properties",
                  {"name": "contract_value", "label": "Contract value", "type": "number", "fieldType": "number"})
    hubspot.upsert("companies", [{"id": "2", "properties": {"contract_value": "99000"}}])
    sync(db, stream="companies")
    assert count(db, "SELECT contract_value FROM hs.companies WHERE id = '2'") == 99000
    assert count(db, "SELECT count(*) FROM hs.companies WHERE contract_value IS NULL") == 59


def test_streams_can_be_disabled_and_properties_chosen(db, hubspot):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream = 'deals'")
    db.execute("UPDATE crm_sync.streams SET properties = '{email,favorite_color}' "
               "WHERE source = 'hs' AND stream = 'contacts'")
    rows = sync(db)
    assert set(rows) == {"contacts", "companies"}
    cols = [r[0] for r in db.execute("""SELECT attname::text FROM pg_attribute WHERE attrelid = 'hs.contacts'::regclass
                                          AND attnum > 0 AND NOT attisdropped ORDER BY attnum""").fetchall()]
    assert cols[:3] == ["id", "email", "favorite_color"]
    assert count(db, "SELECT count(*) FROM hs.contacts WHERE favorite_color IS NOT NULL") > 0
    found = db.execute("SELECT property, column_type, custom, selected FROM crm_sync.discover('hs', 'contacts') "
                       "WHERE property IN ('favorite_color', 'loyalty_score', 'email') ORDER BY property").fetchall()
    assert found == [("email", "text", False, True), ("favorite_color", "text", True, True),
                     ("loyalty_score", "numeric", True, False)]
    # A disabled stream still syncs when asked by name.
    assert sync(db, stream="deals")["deals"]["records_upserted"] == 40


def test_unknown_property_is_a_clear_error(db, hubspot):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET properties = '{email,no_such_prop}' WHERE source='hs' AND stream='contacts'")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        sync(db, stream="contacts")
    assert 'source "hs", stream "contacts": property "no_such_prop" does not exist on contacts' in str(e.value)
    assert "crm_sync.discover" in e.value.diag.message_hint


def test_full_refresh_rereads_everything(db, hubspot):
    create_source(db, hubspot)
    first = sync(db, stream="deals")
    rows = sync(db, stream="deals", full_refresh=True)
    assert rows["deals"]["mode"] == "full"
    assert rows["deals"]["api_calls"] >= first["deals"]["api_calls"]
    # Records read again unchanged are not rewritten.
    assert rows["deals"]["records_upserted"] == 0
    hubspot.upsert("deals", [{"id": "1", "properties": {"dealname": "from crm"}}])
    rows = sync(db, stream="deals", full_refresh=True)
    assert rows["deals"]["records_upserted"] == 1
    assert count(db, "SELECT dealname FROM hs.deals WHERE id = '1'") == "from crm"


def test_drop_source_with_data(db, hubspot):
    create_source(db, hubspot)
    sync(db, stream="deals")
    db.execute("SELECT crm_sync.drop_source('hs', drop_data => true)")
    assert count(db, "SELECT to_regclass('hs.deals') IS NULL") is True
    assert count(db, "SELECT count(*) FROM crm_sync.watermarks") == 0
    assert count(db, "SELECT count(*) FROM crm_sync.runs WHERE source = 'hs'") == 1


def test_nul_characters_do_not_fail_the_sync(db, hubspot):
    # JSON may carry \u0000, which neither text nor jsonb can hold.
    create_source(db, hubspot)
    sync(db, stream="contacts")
    hubspot.upsert("contacts", [{"id": "12", "properties": {"firstname": "Nul\u0000Byte"}}])
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert rows["contacts"]["records_upserted"] == 1
    assert rows["contacts"]["warnings"] == 1
    r = db.execute("SELECT firstname, _raw->'properties'->>'firstname' FROM hs.contacts WHERE id = '12'").fetchone()
    assert r == ("Nul\ufffdByte", "Nul\ufffdByte")
