"""HubSpot search that cannot skip: each run's search window ends where the
run began; a result dated after its place in the sort (HubSpot's search
returns a record changed since it was indexed with its new time,
estuary/connectors#2210) or after the window never moves the cursor or the
watermark; changes that reach the index late are read within the lookback."""

import time

import requests

from conftest import TOKEN, create_source, sync


def one(db, sql, *args):
    return db.execute(sql, args or None).fetchone()[0]


def watermark_ms(db, stream="contacts"):
    cur = one(db, "SELECT cursor FROM crm_sync.watermarks WHERE source = 'hs' AND stream = %s", stream)
    return int(one(db, "SELECT extract(epoch FROM %s::timestamptz) * 1000", cur))


def stale(mock, obj, record_id, shown_ms):
    mock.admin("POST", f"/_mock/{obj}/stale_sort", {"id": str(record_id), "shown_ms": shown_ms})


def spread_changes(mock, db, n):
    """Change contacts 1..n, one at a time, at increasing times between the
    watermark and now: n changes in order of id."""
    w = watermark_ms(db)
    time.sleep(0.5)
    now = int(time.time() * 1000)
    stamps = [w + 1 + (now - w - 2) * i // n for i in range(n)]
    for i, ts in enumerate(stamps, start=1):
        mock.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"changed-{i}"}}], timestamp_ms=ts)
    return stamps


def test_a_result_dated_after_its_place_skips_nothing(db, mock_factory):
    m = mock_factory(contacts=1000, companies=5, deals=5)
    create_source(db, m)
    sync(db, stream="contacts")
    stamps = spread_changes(m, db, 300)
    # The 200th result (the last of the first search page) shows a time a
    # day ahead, and the 100th one 50 places ahead, both still sorted where
    # they were indexed.
    stale(m, "contacts", 200, int(time.time() * 1000) + 86_400_000)
    stale(m, "contacts", 100, stamps[149])
    started = int(time.time() * 1000)
    rows = sync(db, stream="contacts")
    missing = db.execute("SELECT array_agg(i) FROM generate_series(1, 300) i WHERE NOT EXISTS "
                         "(SELECT 1 FROM hs.contacts c WHERE c.id = i::text AND c.firstname LIKE 'changed-%%')").fetchone()[0]
    assert missing is None
    assert rows["contacts"]["records_upserted"] == 300
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE firstname LIKE 'changed-%'") == 300
    # The watermark is the end of the window, not the day-ahead time.
    assert stamps[-1] <= watermark_ms(db) <= started + 1000
    # What was shown ahead lands as shown; the next run reads it again only
    # while it is inside the window, and misses nothing.
    assert one(db, "SELECT _updated_at > now() FROM hs.contacts WHERE id = '200'") is True
    m.upsert("contacts", [{"id": "900", "properties": {"firstname": "after"}}])
    rows = sync(db, stream="contacts")
    assert one(db, "SELECT firstname FROM hs.contacts WHERE id = '900'") == "after"


def test_a_change_dated_after_the_run_began_waits_for_the_next_run(db, mock_factory):
    """A record dated ahead of this machine's clock (a CRM clock running
    fast) is outside the window: it does not move the watermark past the
    run's start, so nothing between is skipped."""
    m = mock_factory(contacts=50, companies=5, deals=5)
    create_source(db, m)
    sync(db, stream="contacts")
    ahead = int(time.time() * 1000) + 600_000
    m.upsert("contacts", [{"id": "7", "properties": {"firstname": "from-the-future"}}], timestamp_ms=ahead)
    started = int(time.time() * 1000)
    sync(db, stream="contacts")
    assert watermark_ms(db) <= started + 1000
    assert one(db, "SELECT firstname FROM hs.contacts WHERE id = '7'") != "from-the-future"


def test_changes_reaching_the_index_late_are_read_within_the_lookback(db, mock_factory):
    """The issue's case: a change that reaches search dated two minutes
    before the previous run's watermark. HubSpot's default lookback (an
    hour) reads it; the old default (60 s) would not."""
    m = mock_factory(contacts=50, companies=5, deals=5)
    create_source(db, m)
    db.execute("SELECT crm_sync.alter_source('hs', '{\"lookback_seconds\": null}')")
    sync(db, stream="contacts")
    w = watermark_ms(db)
    m.upsert("contacts", [{"id": "3", "properties": {"firstname": "late-2min"}}], timestamp_ms=w - 120_000)
    m.upsert("contacts", [{"id": "4", "properties": {"firstname": "late-59min"}}], timestamp_ms=w - 3_540_000)
    sync(db, stream="contacts")
    got = dict(db.execute("SELECT id, firstname FROM hs.contacts WHERE id IN ('3', '4')").fetchall())
    assert got == {"3": "late-2min", "4": "late-59min"}


def test_a_portal_with_1000_properties_syncs_whole_records(db, mock_factory):
    """`properties => '{*}'` on a portal with 1,000 custom properties of
    realistic names: the list URL would pass HubSpot's ~16,300 characters
    (a 414); the properties beyond what it carries are read with a batch
    read of the same ids (a request body), and joined in."""
    m = mock_factory(contacts=250, companies=5, deals=5)
    names = [f"custom_{g}_field_{i:04}_for_reporting" for i in range(1000)
             for g in [("marketing", "sales", "service", "finance")[i % 4]]]
    for n in names:
        m.admin("POST", "/_mock/contacts/properties", {"name": n, "type": "string", "fieldType": "text"})
    create_source(db, m)
    db.execute("UPDATE crm_sync.streams SET properties = '{*}' WHERE source = 'hs' AND stream = 'contacts'")
    m.upsert("contacts", [{"id": str(i), "properties": {names[0]: f"first-{i}", names[-1]: f"last-{i}"}}
                          for i in (1, 150)])
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert rows["contacts"]["records_upserted"] == 250
    stats = m.stats()
    assert stats["status_counts"].get("414", 0) == 0
    assert stats["by_endpoint"].get("POST /crm/v3/objects/contacts/batch/read", 0) >= 3  # one per list page
    cols = dict(db.execute("SELECT property, column_name FROM crm_sync.landing_columns "
                           "WHERE source = 'hs' AND stream = 'contacts'").fetchall())
    assert all(n in cols for n in names)
    got = db.execute(f'SELECT id, "{cols[names[0]]}", "{cols[names[-1]]}", _raw->\'properties\'->>%s '
                     "FROM hs.contacts WHERE id IN ('1', '150') ORDER BY id::int", (names[-1],)).fetchall()
    assert got == [("1", "first-1", "last-1", "last-1"), ("150", "first-150", "last-150", "last-150")]
    # Incremental runs search with the properties in the body.
    m.upsert("contacts", [{"id": "7", "properties": {names[-1]: "changed"}}])
    sync(db, stream="contacts")
    assert one(db, f'SELECT "{cols[names[-1]]}" FROM hs.contacts WHERE id = \'7\'') == "changed"


def test_a_calculated_property_is_stale_until_a_reconciliation_or_a_full_refresh(db, mock_factory):
    """HubSpot recomputes a calculated property (`"calculated": true`)
    without moving the record's modification time: incremental runs keep
    the old value, as docs/configuration.md says; a reconciliation (its id
    listing asks for the stream's calculated properties too) and a full
    refresh read the new one."""
    m = mock_factory(contacts=50, companies=5, deals=5)
    answer = requests.get(f"{m.url}/crm/v3/properties/contacts", timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()
    props = {p["name"]: p for p in answer["results"]}
    assert props["num_associated_deals"]["calculated"] is True
    create_source(db, m)
    db.execute("UPDATE crm_sync.streams SET properties = '{email,num_associated_deals}' "
               "WHERE source = 'hs' AND stream = 'contacts'")
    sync(db, stream="contacts")
    m.admin("POST", "/_mock/contacts/calculated", {"id": "5", "property": "num_associated_deals", "value": "7"})
    sync(db, stream="contacts")
    assert one(db, "SELECT num_associated_deals FROM hs.contacts WHERE id = '5'") is None
    m.reset_stats()
    cur = db.execute("SELECT records_refreshed, records_deleted, api_calls FROM crm_sync.reconcile('hs', 'contacts')")
    refreshed, deleted, calls = cur.fetchone()
    assert (refreshed, deleted) == (1, 0)
    assert one(db, "SELECT num_associated_deals FROM hs.contacts WHERE id = '5'") == 7
    assert one(db, "SELECT (_raw->'properties'->>'num_associated_deals')::int FROM hs.contacts WHERE id = '5'") == 7 \
        or one(db, "SELECT (_raw->>'num_associated_deals')::int FROM hs.contacts WHERE id = '5'") == 7
    m.admin("POST", "/_mock/contacts/calculated", {"id": "5", "property": "num_associated_deals", "value": "9"})
    sync(db, stream="contacts", full_refresh=True)
    assert one(db, "SELECT num_associated_deals FROM hs.contacts WHERE id = '5'") == 9
