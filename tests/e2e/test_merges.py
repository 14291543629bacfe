"""Records merged in HubSpot: a merge makes a record with a new id, both old
ids leave every list, and `hs_merged_object_ids` on the new record names
them. Their rows are marked deleted (reason `merged`, pointing at the new
id) with the sync that lands the new record, and the unified model keeps one
row for the person, with no ghost."""

import requests

from conftest import TOKEN, create_source, sync


def one(db, sql, *args):
    return db.execute(sql, args or None).fetchone()[0]


def merge(mock, obj, primary, secondary):
    r = requests.post(f"{mock.url}/crm/v3/objects/{obj}/merge", timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"primaryObjectId": str(primary), "objectIdToMerge": str(secondary)})
    r.raise_for_status()
    return r.json()


def unified_of(db, record):
    """The live unified contact a landed record is part of."""
    rows = db.execute("SELECT id FROM crm.contacts WHERE %s = ANY (sources) AND deleted_at IS NULL",
                      (record,)).fetchall()
    return [r[0] for r in rows]


def live_contacts(db):
    return one(db, "SELECT count(*) FROM crm.contacts WHERE deleted_at IS NULL")


def test_a_merge_marks_both_old_records_and_leaves_one_unified_row(db, hubspot):
    create_source(db, hubspot)
    sync(db)
    before = live_contacts(db)
    (u5,), (u6,) = unified_of(db, "hs/contacts/5"), unified_of(db, "hs/contacts/6")
    assert u5 != u6
    email5 = one(db, "SELECT email FROM hs.contacts WHERE id = '5'")
    new = merge(hubspot, "contacts", 5, 6)
    new_id = new["id"]
    assert new_id not in ("5", "6")
    assert new["properties"]["email"] == email5
    # The mock as HubSpot: old ids leave the list, and read as the new record.
    got = requests.get(f"{hubspot.url}/crm/v3/objects/contacts/6", timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert got["id"] == new_id

    rows = sync(db, stream="contacts")
    assert rows["contacts"]["records_upserted"] == 1
    assert rows["contacts"]["records_deleted"] == 2
    landed = db.execute("SELECT id, _deleted_at IS NOT NULL, _deleted_reason, _merged_into FROM hs.contacts "
                        "WHERE id IN ('5', '6', %s) ORDER BY id::int", (new_id,)).fetchall()
    assert landed == [("5", True, "merged", new_id), ("6", True, "merged", new_id), (new_id, False, None, None)]
    # Their values stay as they were.
    assert one(db, "SELECT email FROM hs.contacts WHERE id = '5'") == email5
    assert one(db, "SELECT _raw->'properties'->>'hs_merged_object_ids' FROM hs.contacts WHERE id = %s",
               new_id) == "5;6"

    # One unified row for the person, which is one of the two it was, with
    # the new record's values; the other id is recorded as merged into it.
    assert live_contacts(db) == before - 1
    assert unified_of(db, "hs/contacts/5") == [] and unified_of(db, "hs/contacts/6") == []
    (survivor,) = unified_of(db, f"hs/contacts/{new_id}")
    assert survivor in (u5, u6)
    gone = u6 if survivor == u5 else u5
    assert db.execute("SELECT new_id FROM crm.merged_ids WHERE entity = 'contact' AND old_id = %s",
                      (gone,)).fetchall() == [(survivor,)]
    assert one(db, "SELECT email FROM crm.contacts WHERE id = %s", survivor) == email5.strip().lower()
    assert one(db, "SELECT sources FROM crm.contacts WHERE id = %s", survivor) == [f"hs/contacts/{new_id}"]
    # A full rebuild of the model gives the same.
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    assert unified_of(db, f"hs/contacts/{new_id}") == [survivor]
    assert live_contacts(db) == before - 1


def test_chained_merges_point_at_the_newest_record(db, hubspot):
    create_source(db, hubspot)
    sync(db)
    before = live_contacts(db)
    first = merge(hubspot, "contacts", 10, 11)["id"]
    sync(db, stream="contacts")
    second = merge(hubspot, "contacts", first, 12)["id"]
    rows = sync(db, stream="contacts")
    # first and 12 are newly deleted; 10 and 11 (deleted already) now point on.
    assert rows["contacts"]["records_deleted"] == 2
    pointers = db.execute("SELECT id, _merged_into FROM hs.contacts WHERE _deleted_reason = 'merged' "
                          "ORDER BY id::int").fetchall()
    assert pointers == sorted([("10", second), ("11", second), ("12", second), (first, second)],
                              key=lambda p: int(p[0]))
    assert live_contacts(db) == before - 2
    assert len(unified_of(db, f"hs/contacts/{second}")) == 1


def test_a_full_sync_after_a_merge_marks_the_old_records_too(db, hubspot):
    create_source(db, hubspot)
    sync(db)
    new_id = merge(hubspot, "companies", 3, 4)["id"]
    rows = sync(db, stream="companies", full_refresh=True)
    assert rows["companies"]["records_deleted"] == 2
    assert db.execute("SELECT id, _merged_into FROM hs.companies WHERE _deleted_reason = 'merged' "
                      "ORDER BY id::int").fetchall() == [("3", new_id), ("4", new_id)]
    assert one(db, "SELECT count(*) FROM hs.companies WHERE _deleted_at IS NULL") == 59
    assert one(db, "SELECT count(*) FROM crm.companies WHERE deleted_at IS NULL AND "
                   "(%s = ANY (sources) OR %s = ANY (sources))", "hs/companies/3", "hs/companies/4") == 0
    # A reconciliation finds nothing more to do.
    r = db.execute("SELECT records_deleted, records_reread FROM crm_sync.reconcile('hs', 'companies')").fetchone()
    assert r == (0, 0)


def test_every_association_of_a_record_is_read(db, mock_factory):
    """A deal with 650 contacts: the list embeds 100 (then `paging`), the v4
    batch read 500 (then `paging`); the rest are read with the associations
    API, so none is lost."""
    m = mock_factory(800, 5, 5)
    m.upsert("deals", [{"id": "1", "associations": {"contacts": [str(i) for i in range(1, 651)]}}])
    create_source(db, m)
    sync(db, stream="deals")

    def linked():
        ids = db.execute("SELECT array_agg(DISTINCT (e->>'id')::int ORDER BY (e->>'id')::int) FROM hs.deals, "
                         "jsonb_array_elements(_raw->'associations'->'contacts'->'results') e "
                         "WHERE id = '1'").fetchone()[0]
        return ids

    assert linked() == list(range(1, 651))
    assert one(db, "SELECT _raw->'associations'->'contacts' ? 'paging' FROM hs.deals WHERE id = '1'") is False
    # 500 a page: two pages (a third read when the catch-up search finds
    # the deal, changed in the second the list began).
    stats = m.stats()["by_endpoint"]
    assert stats.get("GET /crm/v4/objects/deals/1/associations/contacts") in (2, 3)
    # Changed: read by search, associations by the v4 batch read (500, then
    # the rest from its cursor).
    m.upsert("deals", [{"id": "1", "properties": {"dealname": "Big one"}}])
    m.reset_stats()
    sync(db, stream="deals")
    assert one(db, "SELECT dealname FROM hs.deals WHERE id = '1'") == "Big one"
    assert linked() == list(range(1, 651))
    stats = m.stats()["by_endpoint"]
    assert stats.get("GET /crm/v4/objects/deals/1/associations/contacts") == 1


def test_a_row_back_to_life_forgets_what_it_was_merged_into(db, hubspot):
    """A row marked merged that the CRM lists live again (a stale mark, a
    restore) loses its pointer: the unified model keeps it apart from the
    record it pointed at."""
    create_source(db, hubspot)
    sync(db, stream="contacts")
    db.execute("UPDATE hs.contacts SET _deleted_at = now(), _deleted_reason = 'merged', _merged_into = '7' "
               "WHERE id = '8'")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    assert unified_of(db, "hs/contacts/8") == []
    sync(db, stream="contacts", full_refresh=True)
    assert db.execute("SELECT _deleted_at, _deleted_reason, _merged_into FROM hs.contacts WHERE id = '8'"
                      ).fetchone() == (None, None, None)
    (u8,), (u7,) = unified_of(db, "hs/contacts/8"), unified_of(db, "hs/contacts/7")
    assert u8 != u7
