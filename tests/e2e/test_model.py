"""The unified customer model (schema crm): people, companies and deals from
HubSpot and Salesforce merged into one row each, with cleaned values,
lineage, a crosswalk, and a quality view of the values that failed cleaning."""

import re

import psycopg
import pytest
import requests

from conftest import TOKEN, create_sf_source, create_source, sync


def one(db, sql, *args):
    return db.execute(sql, args or None).fetchone()


def person(db, email):
    cur = db.execute("SELECT * FROM crm.contacts WHERE email = %s", (email,))
    cols = [d.name for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    assert len(rows) == 1, rows
    return rows[0]


@pytest.fixture
def both(db, mock_factory, sf_factory):
    """A small HubSpot and a small Salesforce with the same people in them, messily."""
    hs = mock_factory(5, 3, 3)
    sf = sf_factory("--accounts", "3", "--contacts", "3", "--leads", "2", "--opportunities", "2", "--users", "2")
    create_source(db, hs, default_region="US")
    create_sf_source(db, sf, default_region="GB", bulk_api=False)
    hs.upsert("contacts", [
        {"properties": {"email": " Ada.Lovelace@Example.COM ", "firstname": " Ada ", "lastname": "Lovelace",
                        "phone": "(415) 555-2671", "country": "U.S.A.", "jobtitle": "Analyst"}},
        {"properties": {"email": "grace@navy.example", "firstname": "Grace", "lastname": "Hopper",
                        "phone": "+44 20 7946 0958"}},
        {"properties": {"email": "not-an-email", "firstname": "Bad", "lastname": "Data", "phone": "12"}},
        {"properties": {"email": "lin@x.example", "firstname": "Lin", "lastname": "Wu"}},
    ], timestamp_ms=1_700_000_000_000)
    sf.upsert("Contact", [
        {"Email": "ada.lovelace@example.com", "FirstName": "Ada", "LastName": "Lovelace",
         "Phone": "+1 415 555 2671", "Title": "Countess"},
        {"Email": "g.hopper@yale.example", "FirstName": "Grace", "LastName": "Hopper", "Phone": "020 7946 0958"},
        {"Email": "lin.wu@y.example", "FirstName": "Lin", "LastName": "Wu"},
    ], timestamp_ms=1_700_000_100_000)
    hs.upsert("companies", [{"properties": {"name": "Acme, Inc.", "domain": "https://www.Acme.com/about",
                                            "country": "United States"}}])
    sf.upsert("Account", [{"Name": "ACME Corporation", "Website": "acme.com", "BillingCountry": "USA"}])
    sync(db, "hs")
    sync(db, "sf")
    return hs, sf


def test_the_same_person_in_both_crms_is_one_clean_row(db, both):
    ada = person(db, "ada.lovelace@example.com")
    assert ada["first_name"] == "Ada" and ada["last_name"] == "Lovelace"
    assert ada["phone"] == "+14155552671"
    assert ada["country"] == "US"
    assert len(ada["sources"]) == 2
    assert {s.split("/")[0] for s in ada["sources"]} == {"hs", "sf"}
    # The crosswalk names both records under one id.
    ids = db.execute("SELECT DISTINCT unified_id FROM crm.identities WHERE entity = 'contact' AND "
                     "(source, stream, external_id) IN (SELECT split_part(s, '/', 1), split_part(s, '/', 2), "
                     "split_part(s, '/', 3) FROM unnest(%s::text[]) s)", (ada["sources"],)).fetchall()
    assert ids == [(ada["id"],)]
    # Salesforce's record is newer: its title wins, and lineage says so.
    assert ada["title"] == "Countess"
    src = one(db, "SELECT source FROM crm.field_lineage WHERE entity = 'contact' AND unified_id = %s AND field = 'title'",
              ada["id"])
    assert src == ("sf",)


def test_phone_and_name_link_people_with_different_emails(db, both):
    rows = db.execute("SELECT id, email, phone, sources FROM crm.contacts WHERE last_name = 'Hopper'").fetchall()
    assert len(rows) == 1, rows
    assert rows[0][2] == "+442079460958"
    assert len(rows[0][3]) == 2


def test_invalid_values_stay_landed_are_counted_and_never_block(db, both):
    bad = db.execute("SELECT email, phone FROM hs.contacts WHERE email = 'not-an-email'").fetchall()
    assert bad == [("not-an-email", "12")], "landing keeps what the CRM sent"
    row = one(db, "SELECT email, phone, first_name FROM crm.contacts WHERE last_name = 'Data'")
    assert row == (None, None, "Bad")
    q = dict(((f), (v, i)) for f, v, i in db.execute(
        "SELECT field, valid, invalid FROM crm_sync.quality WHERE source = 'hs' AND stream = 'contacts'").fetchall())
    # Only this email is invalid; the mock's seeded +1 555 numbers are not
    # real numbers either, which libphonenumber knows.
    assert q["email"][1] == 1 and q["phone"][1] >= 1
    assert q["email"][0] >= 4
    bad_id = one(db, "SELECT id FROM hs.contacts WHERE email = 'not-an-email'")[0]
    problems = db.execute("SELECT field, value, problem FROM crm_sync.invalid_values "
                          "WHERE source = 'hs' AND external_id = %s ORDER BY field", (bad_id,)).fetchall()
    assert problems == [("email", "not-an-email", "not an email address"),
                        ("phone", "12", "not a valid phone number for region US")]
    w = one(db, "SELECT warnings FROM crm_sync.runs WHERE source = 'hs' AND stream = 'contacts' ORDER BY run_id DESC LIMIT 1")
    assert w[0] >= 2


def test_a_merge_rewrites_only_the_invalid_values_that_changed(db, both):
    """Restaging a record leaves its invalid values as they are unless they
    changed: an unchanged one is neither deleted nor written again, a
    changed one is updated, a fixed one goes, a new one comes."""
    hs, _ = both
    bad_id = one(db, "SELECT id FROM hs.contacts WHERE email = 'not-an-email'")[0]
    # Another record with an invalid value, which nothing here changes.
    hs.upsert("contacts", [{"properties": {"email": "nope", "firstname": "Other", "lastname": "Bad"}}])
    sync(db, "hs")

    def versions():
        # Each invalid value of the stream with its row version.
        return {(e, f): (v, str(c), str(x)) for e, f, v, c, x in db.execute(
            "SELECT external_id, field, value, ctid, xmin FROM crm_sync.invalid_values "
            "WHERE source = 'hs' AND stream = 'contacts'").fetchall()}

    before = versions()
    assert {f for e, f in before if e == bad_id} == {"email", "phone"}
    # Its title alone changes: the record is staged again, its invalid
    # values are the same.
    hs.upsert("contacts", [{"id": bad_id, "properties": {"jobtitle": "Clerk"}}])
    sync(db, "hs")
    assert one(db, "SELECT title FROM crm.contacts WHERE last_name = 'Data'") == ("Clerk",)
    assert versions() == before
    # Now its email is another bad one, its phone good, its country unknown.
    hs.upsert("contacts", [{"id": bad_id, "properties": {"email": "still-not-an-email", "phone": "+1 415 555 2671",
                                                         "country": "Atlantis"}}])
    sync(db, "hs")
    after = versions()
    mine = {f: v for (e, f), (v, _, _) in after.items() if e == bad_id}
    assert mine == {"email": "still-not-an-email", "country": "Atlantis"}
    row = one(db, "SELECT email, phone, country FROM crm.contacts WHERE last_name = 'Data'")
    assert row == (None, "+14155552671", None)
    # The other records' invalid values were not touched.
    others = {k: v for k, v in before.items() if k[0] != bad_id}
    assert others and {k: v for k, v in after.items() if k[0] != bad_id} == others
    # A rebuild finds them as they are.
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    assert versions() == after


def test_companies_match_on_domain_and_clean_names_and_countries(db, both):
    rows = db.execute("SELECT name, domain, country, sources FROM crm.companies WHERE domain = 'acme.com'").fetchall()
    assert len(rows) == 1, rows
    assert rows[0][2] == "US"
    assert len(rows[0][3]) == 2


def ids_by_source(row):
    """{source: CRM id} of a unified row's records."""
    return {s.split("/")[0]: s.split("/")[2] for s in row["sources"]}


def test_deals_link_to_their_company_and_contact_and_merge_across_crms(db, both):
    hs, sf = both
    ada = person(db, "ada.lovelace@example.com")
    grace = db.execute("SELECT id, sources FROM crm.contacts WHERE last_name = 'Hopper'").fetchone()
    grace = {"id": grace[0], "sources": grace[1]}
    cur = db.execute("SELECT id, sources FROM crm.companies WHERE domain = 'acme.com'")
    acme = dict(zip(("id", "sources"), cur.fetchone()))
    person_ids, grace_ids, acme_ids = ids_by_source(ada), ids_by_source(grace), ids_by_source(acme)
    # Matching deals on contact and name is a rule that ships disabled.
    db.execute("UPDATE crm_sync.match_rules SET enabled = true WHERE entity = 'deal' AND name = 'contact_and_name'")
    # HubSpot links through associations, Salesforce through AccountId and
    # ContactId; the same deal is in both, under differently written names.
    hs.upsert("deals", [
        {"properties": {"dealname": "Acme Renewal 2025", "amount": "1200", "dealstage": "closedwon"},
         "associations": {"companies": [acme_ids["hs"]], "contacts": [person_ids["hs"]]}},
        {"properties": {"dealname": "Pilot project", "amount": "300"},
         "associations": {"contacts": [grace_ids["hs"]]}},
    ])
    # The contact's company, through HubSpot's contact-to-company association.
    hs.upsert("contacts", [{"id": person_ids["hs"], "properties": {},
                            "associations": {"companies": [acme_ids["hs"]]}}])
    sync(db, "hs")
    sf.upsert("Opportunity", [
        {"Name": "ACME renewal 2025", "AccountId": acme_ids["sf"], "ContactId": person_ids["sf"],
         "StageName": "Closed Won", "Amount": 1250, "CloseDate": "2025-03-01"},
        {"Name": "Pilot Project", "ContactId": grace_ids["sf"], "StageName": "Prospecting", "CloseDate": "2025-06-01"},
    ])
    sync(db, "sf")
    renewal = db.execute("SELECT id, company_id, contact_id, sources, amount FROM crm.deals "
                         "WHERE name ILIKE 'acme renewal 2025'").fetchall()
    assert len(renewal) == 1, renewal
    _, company_id, contact_id, sources, amount = renewal[0]
    assert (company_id, contact_id) == (acme["id"], ada["id"])
    assert {s.split("/")[0] for s in sources} == {"hs", "sf"}
    assert amount == 1250, "Salesforce's opportunity is the newer record"
    pilot = db.execute("SELECT company_id, contact_id, sources FROM crm.deals WHERE name ILIKE 'pilot project'").fetchall()
    assert len(pilot) == 1, "matched on contact and name, with no company"
    assert pilot[0][0] is None and pilot[0][1] == grace["id"] and len(pilot[0][2]) == 2
    assert one(db, "SELECT company_id FROM crm.contacts WHERE id = %s", ada["id"]) == (acme["id"],)
    assert_rebuild_agrees(db)


def model(db):
    """Every unified row (without merged_at) and every record's links."""
    out = {t: [r[:-1] for r in db.execute(f"SELECT * FROM crm.{t} ORDER BY id").fetchall()]
           for t in ("contacts", "companies", "deals")}
    out["links"] = db.execute("SELECT entity, source, stream, external_id, company_id, contact_id "
                              "FROM crm_sync.source_records ORDER BY 1, 2, 3, 4").fetchall()
    return out


def assert_rebuild_agrees(db):
    before = model(db)
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    after = model(db)
    for k in before:
        assert before[k] == after[k], k


# Merges follow changed records one by one (the default), or recompute an
# entity whole past crm_sync.merge_follow_at_most changed records: every
# entity (0), or some and not others (1). The model is the same.
FOLLOW = pytest.mark.parametrize("follow", [None, 0, 1])


def follow_at_most(db, follow):
    if follow is not None:
        db.execute(f"SET crm_sync.merge_follow_at_most = {int(follow)}")


@FOLLOW
def test_links_follow_a_company_that_splits(db, both, follow):
    hs, sf = both
    follow_at_most(db, follow)
    acme = db.execute("SELECT id, sources FROM crm.companies WHERE domain = 'acme.com'").fetchone()
    acme_ids = ids_by_source({"sources": acme[1]})
    sf.upsert("Opportunity", [{"Name": "Acme expansion", "AccountId": acme_ids["sf"], "StageName": "Prospecting",
                               "CloseDate": "2025-09-01"}])
    hs.upsert("deals", [{"properties": {"dealname": "Acme upsell"}, "associations": {"companies": [acme_ids["hs"]]}}])
    sync(db, "sf")
    sync(db, "hs")
    deals = dict(db.execute("SELECT name, company_id FROM crm.deals WHERE name IN ('Acme expansion', 'Acme upsell')").fetchall())
    assert deals == {"Acme expansion": acme[0], "Acme upsell": acme[0]}
    # HubSpot's company turns out to be another one: the group splits, and
    # each deal follows its own side.
    hs.upsert("companies", [{"id": acme_ids["hs"], "properties": {"domain": "acme-labs.example", "name": "Acme Labs"}}])
    sync(db, "hs")
    hs_co = one(db, "SELECT unified_id FROM crm.identities WHERE entity = 'company' AND source = 'hs' AND external_id = %s",
                acme_ids["hs"])[0]
    sf_co = one(db, "SELECT unified_id FROM crm.identities WHERE entity = 'company' AND source = 'sf' AND external_id = %s",
                acme_ids["sf"])[0]
    assert hs_co != sf_co
    deals = dict(db.execute("SELECT name, company_id FROM crm.deals WHERE name IN ('Acme expansion', 'Acme upsell')").fetchall())
    assert deals == {"Acme expansion": sf_co, "Acme upsell": hs_co}
    assert_rebuild_agrees(db)


def test_a_change_that_reaches_more_records_than_the_limit_links_the_entity_whole(db, both):
    """An incremental merge holds the records it links again in memory: when
    one changed record reaches more than twice merge_follow_at_most (its row
    is large), the entity is linked whole instead, with the same result."""
    hs, _ = both
    ada = person(db, "ada.lovelace@example.com")
    assert len(ada["sources"]) == 2
    db.execute("SET crm_sync.merge_follow_at_most = 1")
    db.execute("SET client_min_messages = debug1")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    # One new record (at the limit: followed), sharing Ada's email: with
    # her two records, three to link again, more than two.
    hs.upsert("contacts", [{"properties": {"email": "ada.lovelace@example.com", "firstname": "Ada",
                                           "lastname": "King", "jobtitle": "Countess of Lovelace"}}])
    sync(db, "hs")
    db.execute("RESET client_min_messages")
    assert any("more than 2 records to link again: linking every record" in n for n in notices), notices
    ada2 = person(db, "ada.lovelace@example.com")
    assert ada2["id"] == ada["id"] and len(ada2["sources"]) == 3
    assert ada2["title"] == "Countess of Lovelace", "the newest record's title"
    assert_rebuild_agrees(db)


@FOLLOW
def test_a_change_of_values_alone_recomputes_the_row_and_keeps_its_links(db, both, follow):
    """A record whose values alone changed keeps its unified row (it is not
    linked again); the row takes its new values, also when another record
    of the same sync splits a row."""
    _, sf = both
    follow_at_most(db, follow)
    ada = person(db, "ada.lovelace@example.com")
    grace = one(db, "SELECT id, title, sources FROM crm.contacts WHERE last_name = 'Hopper'")
    sf_ada = [s for s in ada["sources"] if s.startswith("sf/")][0].split("/")[2]
    sf_grace = [s for s in grace[2] if s.startswith("sf/")][0].split("/")[2]
    # Values alone: Salesforce's newer title wins, on the same row.
    sf.upsert("Contact", [{"Id": sf_ada, "Title": "Duchess"}])
    sync(db, "sf")
    ada2 = person(db, "ada.lovelace@example.com")
    assert (ada2["id"], ada2["title"], sorted(ada2["sources"])) == (ada["id"], "Duchess", sorted(ada["sources"]))
    # In one sync: Grace's Salesforce title (values alone), and Ada's
    # Salesforce email and phone (her keys: she leaves the shared row).
    sf.upsert("Contact", [{"Id": sf_grace, "Title": "Rear Admiral"},
                          {"Id": sf_ada, "Email": "countess@example.org", "Phone": "+1 212 555 0100"}])
    sync(db, "sf")
    assert one(db, "SELECT id, title FROM crm.contacts WHERE last_name = 'Hopper'") == (grace[0], "Rear Admiral")
    hs_only = person(db, "ada.lovelace@example.com")
    assert hs_only["id"] == ada["id"] and [s.split("/")[0] for s in hs_only["sources"]] == ["hs"]
    assert hs_only["title"] == "Analyst"
    assert person(db, "countess@example.org")["title"] == "Duchess"
    assert_rebuild_agrees(db)


@FOLLOW
def test_a_delete_on_one_side_removes_only_its_contribution(db, both, follow):
    hs, sf = both
    follow_at_most(db, follow)
    ada = person(db, "ada.lovelace@example.com")
    sf_id = [s for s in ada["sources"] if s.startswith("sf/")][0].split("/")[2]
    sf.delete("Contact", [sf_id])
    sync(db, "sf")
    ada2 = person(db, "ada.lovelace@example.com")
    assert ada2["id"] == ada["id"] and ada2["deleted_at"] is None
    assert [s.split("/")[0] for s in ada2["sources"]] == ["hs"]
    assert ada2["title"] == "Analyst", "the remaining source's value takes over"
    hs_id = ada2["sources"][0].split("/")[2]
    hs.archive("contacts", [hs_id])
    sync(db, "hs")
    gone = one(db, "SELECT deleted_at IS NOT NULL, sources FROM crm.contacts WHERE id = %s", ada["id"])
    assert gone == (True, [])


@FOLLOW
def test_a_late_link_merges_two_rows_and_keeps_the_old_id(db, both, follow):
    hs, sf = both
    follow_at_most(db, follow)
    a = person(db, "lin@x.example")
    b = person(db, "lin.wu@y.example")
    assert a["id"] != b["id"]
    hs_id = a["sources"][0].split("/")[2]
    sf_id = b["sources"][0].split("/")[2]
    hs.upsert("deals", [{"properties": {"dealname": "Wu consulting"}, "associations": {"contacts": [hs_id]}}])
    sync(db, "hs")
    assert one(db, "SELECT contact_id FROM crm.deals WHERE name = 'Wu consulting'") == (a["id"],)
    hs.upsert("contacts", [{"id": hs_id, "properties": {"phone": "+1 212 555 0187"}}])
    sf.upsert("Contact", [{"Id": sf_id, "Phone": "(212) 555-0187"}])
    sync(db, "hs")
    # Salesforce's phone has no country code: its source's default region is GB.
    db.execute("SELECT crm_sync.alter_source('sf', options => '{\"default_region\": \"US\"}')")
    sync(db, "sf")
    rows = db.execute("SELECT id FROM crm.contacts WHERE last_name = 'Wu'").fetchall()
    assert len(rows) == 1, rows
    # The merged row keeps the id of its earliest-seen record: HubSpot's Lin
    # (synced first); Salesforce's row's id points there.
    new, old = rows[0][0], b["id"]
    assert new == a["id"]
    assert one(db, "SELECT new_id FROM crm.merged_ids WHERE entity = 'contact' AND old_id = %s", old) == (new,)
    assert one(db, "SELECT contact_id FROM crm.deals WHERE name = 'Wu consulting'") == (new,), \
        "the deal follows its contact into the merged row"


def test_field_priority_and_user_mappings_with_transformations(db, both):
    ada = person(db, "ada.lovelace@example.com")
    db.execute("INSERT INTO crm_sync.field_priority VALUES ('contact', 'title', '{hs}')")
    db.execute("""INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source)
                  VALUES ('hubspot', 'contacts', 'contact', 'title', $$upper(r._raw->'properties'->>'jobtitle')$$, 'hs')""")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    ada2 = person(db, "ada.lovelace@example.com")
    assert ada2["id"] == ada["id"]
    assert ada2["title"] == "ANALYST"
    assert one(db, "SELECT source FROM crm.field_lineage WHERE entity = 'contact' AND unified_id = %s AND field = 'title'",
               ada["id"]) == ("hs",)


def test_a_full_rebuild_gives_the_same_model(db, both):
    hs, sf = both
    hs.upsert("contacts", [{"properties": {"email": "ADA.LOVELACE@example.com", "firstname": "Augusta"}}])
    sync(db, "hs")
    snap = "SELECT * FROM crm.{} ORDER BY id"
    before = {t: db.execute(snap.format(t)).fetchall() for t in ("contacts", "companies", "deals")}
    lineage = db.execute("SELECT entity, unified_id, field, source, stream, external_id FROM crm.field_lineage ORDER BY 1, 2, 3").fetchall()
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    after = {t: db.execute(snap.format(t)).fetchall() for t in ("contacts", "companies", "deals")}
    strip = lambda rows: [r[:-1] for r in rows]  # merged_at differs
    for t in before:
        assert strip(before[t]) == strip(after[t]), t
    assert lineage == db.execute("SELECT entity, unified_id, field, source, stream, external_id FROM crm.field_lineage ORDER BY 1, 2, 3").fetchall()
    assert len(before["contacts"]) > 5 and len(before["deals"]) >= 4


def test_a_model_rebuilt_from_nothing_is_the_one_merged_change_by_change(db, both):
    """A merge into an empty model writes the rows of one record in SQL and
    every table with plain inserts; rows of several records go through
    survivorship. The model is the one the merges after each sync made, row
    for row: live and deleted rows, numbers, dates, links, lineage."""
    hs, sf = both
    lin = person(db, "lin@x.example")
    hs.archive("contacts", [lin["sources"][0].split("/")[2]])
    sync(db, "hs")
    snap = """SELECT to_jsonb(t) - 'merged_at' - 'deleted_at' || jsonb_build_object('deleted', t.deleted_at IS NOT NULL)
                FROM crm.{} t ORDER BY id"""
    tables = ("contacts", "companies", "deals")
    before = {t: db.execute(snap.format(t)).fetchall() for t in tables}
    shapes = [r[0] for t in tables for r in before[t]]
    assert any(r["deleted"] and r["sources"] == [] for r in shapes), "a deleted row of one record"
    assert any(len(r["sources"]) > 1 for r in shapes) and any(len(r["sources"]) == 1 for r in shapes)
    assert any(r.get("company_id") for r in shapes) and any(r.get("contact_id") for r in shapes)
    assert any(r.get("amount") is not None for r in shapes)
    lineage = db.execute("SELECT * FROM crm.field_lineage ORDER BY 1, 2, 3").fetchall()
    db.execute("TRUNCATE crm_sync.unified_ids, crm.contacts, crm.companies, crm.deals")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    for t in tables:
        assert db.execute(snap.format(t)).fetchall() == before[t], t
    assert db.execute("SELECT * FROM crm.field_lineage ORDER BY 1, 2, 3").fetchall() == lineage


@pytest.mark.parametrize("from_nothing", [False, True])
def test_records_linked_in_sql_past_the_memory_budget_get_the_same_unified_ids(db, both, from_nothing):
    """Past crm_sync.merge_link_in_memory records that share keys, a whole
    merge links them in SQL, in rounds, in memory that does not grow: the
    same unified ids, merged ids and rows as linking in memory, for links
    chained through two rules and through records the CRM merged."""
    hs, sf = both
    # Grace's Salesforce record shares its email with a new HubSpot record,
    # and its phone and name with her first HubSpot record.
    hs.upsert("contacts", [{"properties": {"email": "G.Hopper@yale.example", "firstname": "Amazing",
                                           "lastname": "Grace"}}])
    sync(db, "hs")
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE cardinality(sources) = 3") == (1,)
    # HubSpot merges Lin's record with Bad Data's: a new record, both old
    # ones merged into it.
    lin, bad = (one(db, "SELECT id FROM hs.contacts WHERE _raw->'properties'->>'email' = %s", e)[0]
                for e in ("lin@x.example", "not-an-email"))
    r = requests.post(f"{hs.url}/crm/v3/objects/contacts/merge", timeout=30,
                      headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"primaryObjectId": lin, "objectIdToMerge": bad})
    r.raise_for_status()
    sync(db, "hs")
    assert one(db, "SELECT count(*) FROM crm_sync.source_records WHERE merged_into IS NOT NULL") == (2,)
    ids = "SELECT entity, record_id, unified_id FROM crm_sync.unified_ids ORDER BY 1, 2"
    merged = "SELECT entity, old_id, new_id FROM crm.merged_ids ORDER BY 1, 2"
    before, before_ids, before_merged = model(db), db.execute(ids).fetchall(), db.execute(merged).fetchall()
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    db.execute("SET crm_sync.merge_link_in_memory = 0")
    db.execute("SET client_min_messages = debug1")
    if from_nothing:
        db.execute("TRUNCATE crm_sync.unified_ids, crm.contacts, crm.companies, crm.deals")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    db.execute("RESET client_min_messages")
    in_sql = {n.split(":")[0] for n in notices if "linked them in SQL" in n}
    assert in_sql == {"pg_crm_sync merge contact", "pg_crm_sync merge company"}, notices
    after = model(db)
    for k in before:
        assert before[k] == after[k], k
    assert db.execute(ids).fetchall() == before_ids
    assert db.execute(merged).fetchall() == before_merged
    assert one(db, "SELECT count(*) FROM crm_sync.link_labels") == (0,)
    # Linking in memory again gives the same.
    db.execute("RESET crm_sync.merge_link_in_memory")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    assert db.execute(ids).fetchall() == before_ids


@pytest.mark.parametrize("order", ["at_once", "oldest_at_one_end_newest_next_to_it"])
def test_a_long_chain_of_links_is_linked_in_sql_in_few_rounds(db, mock_factory, order):
    """Records linked one to the next, alternately by email and by phone and
    name, are one row; linked in SQL, each round's labels also hook and
    jump along the chain, so it takes far fewer rounds than it has links:
    the same row as linking in memory. Landed at once (ids decide which is
    earliest), or one by one with the earliest at one end and the others
    ever earlier towards the far end (labels then lag the most)."""
    hs = mock_factory(0, 0, 0)
    create_source(db, hs, default_region="US")
    n = 40 if order == "at_once" else 24
    chain = []
    for i in range(n):
        # Odd records share their email with the one before, even ones
        # (but the first) their phone and name.
        k = i // 2 if i % 2 else i // 2 - 1
        chain.append({"properties": {"email": f"chain{(i - 1) // 2 if i % 2 else i // 2}@x.example",
                                     "firstname": "Chain", "lastname": f"Person{k}",
                                     "phone": f"+1 415 555 {2600 + k}"}})
    if order == "at_once":
        hs.upsert("contacts", chain)
        sync(db, "hs")
    else:
        for record in [chain[0]] + chain[:0:-1]:
            hs.upsert("contacts", [record])
            sync(db, "hs")
    assert one(db, "SELECT count(*), max(cardinality(sources)) FROM crm.contacts") == (1, n)
    ids = "SELECT record_id, unified_id FROM crm_sync.unified_ids ORDER BY 1"
    in_memory = db.execute(ids).fetchall()
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    db.execute("SET crm_sync.merge_link_in_memory = 0")
    db.execute("SET client_min_messages = debug1")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    db.execute("RESET client_min_messages")
    (rounds,) = [int(m.group(1)) for n in notices if (m := re.search(r"contact: .*linked them in SQL in (\d+) rounds", n))]
    assert rounds <= 6, rounds
    assert db.execute(ids).fetchall() == in_memory
    assert one(db, "SELECT count(*), max(cardinality(sources)) FROM crm.contacts") == (1, n)


def owner_mapping(db, expression):
    """Map hs contacts' owner through `expression`; returns the list that
    fills with the connection's NOTICE and WARNING texts."""
    db.execute("""INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source)
                  VALUES ('hubspot', 'contacts', 'contact', 'owner', %s, 'hs')""", (expression,))
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    return notices


def assert_merge_failed(notices, why):
    assert any("merging into the unified model failed" in n and why in n for n in notices), notices


def test_a_broken_user_mapping_does_not_fail_the_sync(db, both):
    hs, _ = both
    # A mapping is checked when written; it breaks later when the column
    # it reads is dropped.
    db.execute("ALTER TABLE hs.contacts ADD COLUMN no_such_column text")
    notices = owner_mapping(db, "r.no_such_column")
    db.execute("ALTER TABLE hs.contacts DROP COLUMN no_such_column")
    hs.upsert("contacts", [{"properties": {"email": "new@z.example", "firstname": "New"}}])
    rows = sync(db, "hs", "contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert_merge_failed(notices, "no_such_column")
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE email = 'new@z.example'") == (1,)
    with pytest.raises(psycopg.errors.UndefinedColumn):
        db.execute("SELECT * FROM crm_sync.merge()")


def test_a_mapping_failing_on_a_value_does_not_fail_the_sync(db, both, pg_cluster):
    """A mapping that compiles but fails on a row's value (a cast) fails the
    merge while it reads the landing rows: the sync stands, the merge is
    reported, and the server goes on (no crash while unwinding)."""
    hs, _ = both
    notices = owner_mapping(db, "((r._raw->'properties'->>'firstname')::int)::text")
    hs.upsert("contacts", [{"properties": {"email": "cast@z.example", "firstname": "Not a number"}}])
    rows = sync(db, "hs", "contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert_merge_failed(notices, "invalid input syntax")
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE email = 'cast@z.example'") == (1,)
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        db.execute("SELECT * FROM crm_sync.merge()")
    # The same session goes on.
    assert one(db, "SELECT 1") == (1,)


def test_a_mapping_failing_on_a_later_page_does_not_fail_the_sync(db, mock_factory):
    """The same, when the failing value is past the first page the merge
    reads (its cursor is found again in a later SPI connection)."""
    m = mock_factory(6000, 5, 5)
    create_source(db, m)
    notices = owner_mapping(db, "CASE WHEN r.id = '5999' THEN ('x' || r.id)::int::text END")
    rows = sync(db, "hs", "contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert_merge_failed(notices, "invalid input syntax")
    assert one(db, "SELECT count(*) FROM hs.contacts") == (6000,)
    assert one(db, "SELECT count(*) FROM crm.contacts") == (0,), "the failed merge left nothing half done"
    assert one(db, "SELECT 1") == (1,)


def test_dropping_a_source_takes_its_records_out_of_the_model(db, both):
    ada = person(db, "ada.lovelace@example.com")
    sf_only = db.execute("SELECT count(*) FROM crm.contacts WHERE sources <@ "
                         "(SELECT array_agg(s) FROM crm.contacts, unnest(sources) s WHERE s LIKE 'sf/%')").fetchone()[0]
    assert sf_only > 0
    before = db.execute("SELECT count(*) FROM crm.contacts").fetchone()[0]
    db.execute("SELECT crm_sync.drop_source('sf')")
    ada2 = person(db, "ada.lovelace@example.com")
    assert ada2["id"] == ada["id"] and [s.split("/")[0] for s in ada2["sources"]] == ["hs"]
    assert ada2["title"] == "Analyst", "the Salesforce value is gone with its source"
    assert db.execute("SELECT count(*) FROM crm.contacts").fetchone()[0] == before - sf_only
    for t in ("contacts", "companies", "deals"):
        assert one(db, f"SELECT count(*) FROM crm.{t}, unnest(sources) s WHERE s LIKE 'sf/%%'") == (0,), t
    assert one(db, "SELECT count(*) FROM crm.identities WHERE source = 'sf'") == (0,)
    assert one(db, "SELECT count(*) FROM crm_sync.quality WHERE source = 'sf'") == (0,)
    # The landing tables stay (drop_data => false), and a rebuild agrees.
    assert one(db, "SELECT count(*) > 0 FROM sf.contact") == (True,)
    assert_rebuild_agrees(db)


@FOLLOW
def test_records_new_to_the_model_that_join_a_row_record_no_merged_id(db, both, follow):
    """Salesforce's Ada was synced after HubSpot's and joined its row: no id
    was merged away (hers never was one). Nor when a later record joins."""
    hs, sf = both
    follow_at_most(db, follow)
    ada = person(db, "ada.lovelace@example.com")
    assert len(ada["sources"]) == 2
    assert one(db, "SELECT count(*) FROM crm.merged_ids") == (0,)
    sf.upsert("Lead", [{"Email": "ADA.LOVELACE@example.com", "FirstName": "Ada", "LastName": "Lovelace",
                        "Company": "Analytical Engines"}])
    sync(db, "sf")
    ada2 = person(db, "ada.lovelace@example.com")
    assert ada2["id"] == ada["id"] and len(ada2["sources"]) == 3
    assert one(db, "SELECT count(*) FROM crm.merged_ids") == (0,)
    assert_rebuild_agrees(db)


@FOLLOW
def test_dropping_the_source_whose_record_gave_a_row_its_id(db, both, follow):
    """Ada's row has the id of HubSpot's record (seen first). Without
    HubSpot, Salesforce's record is the row, under its own id, and the old
    id is recorded as merged into it."""
    hs, sf = both
    follow_at_most(db, follow)
    ada = person(db, "ada.lovelace@example.com")
    (hs_id,) = one(db, "SELECT unified_id FROM crm.identities WHERE entity = 'contact' AND source = 'hs' "
                       "AND external_id = %s", ids_by_source(ada)["hs"])
    (sf_id,) = one(db, "SELECT unified_id FROM crm.identities WHERE entity = 'contact' AND source = 'sf' "
                       "AND external_id = %s", ids_by_source(ada)["sf"])
    assert hs_id == sf_id == ada["id"]
    db.execute("SELECT crm_sync.drop_source('hs')")
    ada2 = person(db, "ada.lovelace@example.com")
    assert [s.split("/")[0] for s in ada2["sources"]] == ["sf"]
    assert ada2["id"] != ada["id"] and ada2["title"] == "Countess"
    assert one(db, "SELECT unified_id FROM crm.identities WHERE entity = 'contact' AND source = 'sf' "
                   "AND external_id = %s", ids_by_source(ada)["sf"]) == (ada2["id"],)
    assert one(db, "SELECT new_id FROM crm.merged_ids WHERE entity = 'contact' AND old_id = %s",
               ada["id"]) == (ada2["id"],)
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE id = %s", ada["id"]) == (0,)
    assert one(db, "SELECT count(*) FROM crm.identities WHERE source = 'hs'") == (0,)
    assert_rebuild_agrees(db)


def test_a_full_merge_larger_than_one_read_page_keeps_every_row_whole(db):
    """A full merge reads the rows of several records by pages of unified
    ids (2,500 a page, after the last id of the page before), each row
    whole from all its records. 2,600 people, each two HubSpot records and
    one Salesforce record: two pages, every row on one of them."""
    db.execute("""SELECT crm_sync.create_source('hs', 'hubspot', '{"base_url": "http://127.0.0.1:9"}',
                                                '{"access_token": "x"}')""")
    db.execute("""SELECT crm_sync.create_source('sf', 'salesforce', '{"login_url": "http://127.0.0.1:9"}',
                                                '{"client_id": "x", "refresh_token": "y"}')""")
    for s, t in (("hs", "contacts"), ("sf", "contact")):
        db.execute(f"CREATE TABLE {s}.{t} (id text PRIMARY KEY, _raw jsonb NOT NULL, _updated_at timestamptz, "
                   "_deleted_at timestamptz, _synced_at timestamptz DEFAULT now(), _run_id bigint)")
    db.execute("""INSERT INTO hs.contacts (id, _raw, _updated_at, _run_id)
                  SELECT i::text, jsonb_build_object('id', i::text, 'properties', jsonb_build_object(
                             'email', CASE WHEN i % 2 = 0 THEN 'P' ELSE ' p' END || (i / 2) || '@example.com',
                             'firstname', 'First' || i, 'lastname', 'Last' || (i / 2))),
                         timestamptz '2024-06-01' + i * interval '1 second', 1
                    FROM generate_series(2, 5201) i""")
    db.execute("""INSERT INTO sf.contact (id, _raw, _updated_at, _run_id)
                  SELECT '003' || lpad(i::text, 15, '0'), jsonb_build_object('Id', '003' || lpad(i::text, 15, '0'),
                             'Email', 'p' || i || '@example.com', 'LastName', 'Last' || i, 'Title', 'Role ' || i),
                         timestamptz '2024-07-01' + i * interval '1 second', 1
                    FROM generate_series(1, 2600) i""")
    db.execute("SELECT * FROM crm_sync.merge()")  # by pages of changed unified ids
    incremental = model(db)
    # Rebuilt from no row at all: every row comes from its page.
    db.execute("TRUNCATE crm.contacts")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")  # pages of the rows of several records
    assert db.execute("SELECT count(*), min(cardinality(sources)), max(cardinality(sources)), "
                      "count(*) FILTER (WHERE title IS NULL) FROM crm.contacts").fetchone() == (2600, 3, 3, 0)
    assert model(db) == incremental


def test_dropping_a_large_source_takes_its_records_out_in_one_pass(db):
    """Dropping a source prunes its records from the model with joins, not a
    list read again for every record. 60,000 HubSpot contacts, the model's
    only records, dropped with work_mem at its 64 kB minimum (where a NOT IN
    list no longer fits a hash: the prune read it once per record and took
    minutes; 1,000,000 records ran for hours at the default): the drop ends
    within a statement_timeout of 60 s, a bound far above its second or so,
    and every record, unified id and row is gone."""
    n = 60_000
    db.execute("""SELECT crm_sync.create_source('hs', 'hubspot', '{"base_url": "http://127.0.0.1:9"}',
                                                '{"access_token": "x"}')""")
    db.execute("CREATE TABLE hs.contacts (id text PRIMARY KEY, _raw jsonb NOT NULL, _updated_at timestamptz, "
               "_deleted_at timestamptz, _synced_at timestamptz DEFAULT now(), _run_id bigint)")
    # Every tenth person twice (rows of two records too).
    db.execute("""INSERT INTO hs.contacts (id, _raw, _updated_at, _run_id)
                  SELECT i::text, jsonb_build_object('id', i::text, 'properties', jsonb_build_object(
                             'email', 'p' || CASE WHEN i %% 10 = 0 THEN i - 1 ELSE i END || '@example.com',
                             'lastname', 'Last' || i)),
                         timestamptz '2024-06-01' + i * interval '1 second', 1
                    FROM generate_series(1, %s) i""", (n,))
    db.execute("SELECT * FROM crm_sync.merge()")
    assert one(db, "SELECT count(*), count(*) FILTER (WHERE cardinality(sources) = 2) FROM crm.contacts") == \
        (n - n // 10, n // 10)
    db.execute("SET work_mem = '64kB'")
    db.execute("SET statement_timeout = '60s'")
    db.execute("SELECT crm_sync.drop_source('hs', drop_data => true)")
    db.execute("RESET statement_timeout")
    db.execute("RESET work_mem")
    assert one(db, "SELECT (SELECT count(*) FROM crm.contacts), (SELECT count(*) FROM crm_sync.source_records), "
                   "(SELECT count(*) FROM crm_sync.unified_ids), (SELECT count(*) FROM crm.identities)") == (0, 0, 0, 0)


def test_the_demos_shared_people_merge_one_row_each(db, mock_factory, sf_factory):
    """Both mocks with --shared-people (as scripts/demo.sh runs them): each
    person in both CRMs is one row of crm.contacts, each shared company one
    row of crm.companies, and the values either CRM got wrong are reported,
    not merged."""
    shared = 40
    hs = mock_factory(60, 15, 5, "--shared-people", str(shared))
    sf = sf_factory("--accounts", "15", "--contacts", "60", "--leads", "2", "--opportunities", "2",
                    "--users", "2", "--shared-people", str(shared))
    create_source(db, hs)
    create_sf_source(db, sf, default_region="US", bulk_api=False)
    sync(db, "hs")
    sync(db, "sf")

    def unified(entity, source, ext):
        return one(db, "SELECT unified_id FROM crm.identities WHERE entity = %s AND source = %s "
                       "AND external_id = %s", entity, source, ext)[0]

    # Seeded Salesforce ids sort in creation order: the k-th is record k,
    # the same person as HubSpot contact k.
    def sf_rows(table, n):
        return db.execute(f"SELECT id, _deleted_at IS NULL FROM sf.{table} ORDER BY id LIMIT %s",
                          (n,)).fetchall()

    merged = 0
    for k, (sf_id, live) in enumerate(sf_rows("contact", shared), start=1):
        hs_row = unified("contact", "hs", str(k))
        row = one(db, "SELECT sources, email, phone, country FROM crm.contacts WHERE id = %s", hs_row)
        if live:
            assert unified("contact", "sf", sf_id) == hs_row, (k, row)
            assert sorted(s.split("/")[0] for s in row[0]) == ["hs", "sf"], (k, row)
            assert row[2] is not None and row[2].startswith("+1"), (k, row)
            merged += 1
        else:
            assert [s.split("/")[0] for s in row[0]] == ["hs"], (k, row)
    assert merged >= shared - 3, "most shared people are live in Salesforce"
    # Nobody else is merged across the two CRMs.
    both = one(db, "SELECT count(*) FROM crm.contacts WHERE "
                   "(SELECT count(DISTINCT split_part(s, '/', 1)) FROM unnest(sources) s) = 2")[0]
    assert both == merged

    companies = 10  # a quarter of the shared people
    live_companies = 0
    for c, (sf_id, live) in enumerate(sf_rows("account", companies), start=1):
        if live:
            assert unified("company", "sf", sf_id) == unified("company", "hs", str(c)), c
            live_companies += 1
    # The other companies of the two CRMs share no name or domain.
    assert one(db, "SELECT count(*) FROM crm.companies WHERE "
                   "(SELECT count(DISTINCT split_part(s, '/', 1)) FROM unnest(sources) s) = 2")[0] \
        == live_companies

    # What a CRM got wrong is reported per source and field, with samples,
    # and counted from the landing rows as they are.
    def invalid(source, stream, field):
        r = one(db, "SELECT invalid FROM crm_sync.quality WHERE source = %s AND stream = %s AND field = %s",
                source, stream, field)
        return r[0] if r else 0
    assert invalid("hs", "contacts", "phone") == one(
        db, "SELECT count(*) FROM hs.contacts WHERE _raw->'properties'->>'phone' = 'n/a'")[0] > 0
    assert invalid("sf", "contact", "email") == one(
        db, "SELECT count(*) FROM sf.contact WHERE _raw->>'Email' LIKE '% at %'")[0] > 0
    assert invalid("sf", "contact", "country") == one(
        db, "SELECT count(*) FROM sf.contact WHERE _raw->>'MailingCountry' = 'Untied States'")[0] > 0


@FOLLOW
def test_a_reference_resolves_when_its_target_lands_later(db, hubspot, follow):
    """Contacts synced before their companies point at them once the
    companies land, and stay unlinked while nothing they reference lands."""
    create_source(db, hubspot)
    follow_at_most(db, follow)
    sync(db, stream="contacts")
    refs = one(db, "SELECT count(*) FROM crm_sync.source_records WHERE entity = 'contact' AND company_ref IS NOT NULL")[0]
    assert refs > 0
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE company_id IS NOT NULL") == (0,)
    sync(db, stream="deals")  # another entity changes: the contacts' references still have no target
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE company_id IS NOT NULL") == (0,)
    sync(db, stream="companies")
    linked = one(db, """SELECT count(*) FROM crm_sync.source_records r
                          JOIN crm_sync.source_records k ON k.entity = 'company' AND k.source = r.source
                                                        AND k.external_id = r.company_ref
                         WHERE r.entity = 'contact'""")[0]
    assert linked > 0
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE company_id IS NOT NULL") == (linked,)
    assert_rebuild_agrees(db)


def test_an_incremental_merge_reads_the_rows_of_its_sync_through_the_run_index(db, hubspot):
    """Landing tables are indexed on _run_id: each sync's merge reads the
    rows that sync wrote through it (a plan that can use it), and merges
    them as before."""
    create_source(db, hubspot)
    sync(db, stream="contacts")
    assert one(db, """SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
                                                       AND a.attnum = i.indkey[0]
                       WHERE i.indrelid = 'hs.contacts'::regclass AND a.attname = '_run_id'""") == (1,)
    db.execute("ANALYZE hs.contacts")
    run = one(db, "SELECT max(_run_id) FROM hs.contacts")[0]
    plan = "\n".join(r[0] for r in db.execute(
        f"EXPLAIN SELECT id FROM hs.contacts r WHERE r._run_id > {run}").fetchall())
    assert "_run_id" in plan and "Seq Scan" not in plan, plan
    hubspot.upsert("contacts", [{"properties": {"email": "late@x.example", "firstname": "Late", "lastname": "Comer"}}])
    assert sync(db, stream="contacts")["contacts"]["records_upserted"] == 1
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE email = 'late@x.example'") == (1,)
    assert_rebuild_agrees(db)


def test_records_whose_values_alone_change_are_rewritten_in_place(db, mock_factory):
    """crm_sync.source_records keeps room on its pages: a record whose values
    alone changed (a new job title) is rewritten on its own page, a HOT
    update that adds nothing to the table's indexes, instead of a new copy
    in every index (which bloats them and slowed incremental merges by a
    third). Records spread over full pages: one on each."""
    hs = mock_factory(600, 0, 0)
    create_source(db, hs)
    sync(db, stream="contacts")
    pages = one(db, "SELECT pg_relation_size('crm_sync.source_records') / 8192")[0]
    assert pages >= 20
    # One contact in every thirty: about one on each page.
    hs.upsert("contacts", [{"id": str(i), "properties": {"jobtitle": f"Title {i}"}} for i in range(30, 601, 30)])

    def updates():
        db.execute("SELECT pg_stat_force_next_flush()")
        db.execute("SELECT pg_stat_clear_snapshot()")
        return one(db, """SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
                           WHERE relid = 'crm_sync.source_records'::regclass""")

    before = updates()
    assert sync(db, stream="contacts")["contacts"]["records_upserted"] == 20
    after = updates()
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE title LIKE 'Title %'") == (20,)
    upd, hot = after[0] - before[0], after[1] - before[1]
    assert upd == 20 and hot >= 18, (upd, hot)


def test_a_rebuild_writes_and_locks_only_what_changed(db, mock_factory):
    """crm_sync.merge(full => true) stages every record again: the records
    and unified rows that did not change are left as they are, neither
    rewritten nor locked (a lock is a WAL record and a dirty page each: a
    rebuild of 400,000 unchanged contacts wrote 372 MB of WAL). A record
    whose landing row changed is written, with its unified row."""
    hs = mock_factory(300, 40, 0)
    create_source(db, hs)
    sync(db)
    # A landing row edited in place (as a repair would), seen by a rebuild.
    db.execute("""UPDATE hs.contacts SET _raw = jsonb_set(_raw, '{properties,jobtitle}', '"Chief Rebuilder"')
                   WHERE id = '7'""")
    stamps = dict(db.execute("SELECT record_id, merged_at FROM crm_sync.source_records").fetchall())
    tables = ("crm_sync.source_records", "crm.contacts", "crm.companies")

    def versions(table):
        # A row written gets a new version (xmin); one locked keeps the
        # locker's id in xmax.
        return dict(db.execute(f"SELECT ctid::text || '/' || xmin::text, xmax::text FROM {table}").fetchall())

    for rebuild, rewritten in ((0, {"crm_sync.source_records": 1, "crm.contacts": 1, "crm.companies": 0}),
                               (1, {table: 0 for table in tables})):
        before = {table: versions(table) for table in tables}
        db.execute("SELECT * FROM crm_sync.merge(full => true)")
        for table in tables:
            after = versions(table)
            assert len(after) > 0
            assert [x for x in after.values() if x != "0"] == [], (rebuild, table, "locked")
            assert len(set(after) - set(before[table])) == rewritten[table], (rebuild, table)
    again = db.execute("SELECT record_id, merged_at, vals->>'title' FROM crm_sync.source_records").fetchall()
    assert [title for rid, at, title in again if stamps[rid] != at] == ["Chief Rebuilder"]
    assert one(db, "SELECT count(*) FROM crm.contacts WHERE title = 'Chief Rebuilder'") == (1,)


def test_a_unified_column_given_its_own_collation_still_takes_every_change(db, mock_factory):
    """A DBA gives crm.contacts.first_name a case-insensitive collation (for
    lookups by name). The merge's comparisons of new values with the row's
    meet that collation: they must neither fail on it nor, in a change of
    case (equal under it), lose the change, incrementally or in a rebuild."""
    hs = mock_factory(50, 5, 0)
    create_source(db, hs)
    sync(db)
    db.execute("CREATE COLLATION case_blind (provider = icu, locale = 'und-u-ks-level2', deterministic = false)")
    db.execute("ALTER TABLE crm.contacts ALTER COLUMN first_name TYPE text COLLATE case_blind")
    row = "SELECT first_name FROM crm.contacts WHERE 'hs/contacts/7' = ANY (sources)"
    (name,) = one(db, row)
    assert name and name != name.upper()
    hs.upsert("contacts", [{"id": "7", "properties": {"firstname": name.upper()}}])
    assert sync(db, stream="contacts")["contacts"]["records_upserted"] == 1
    assert one(db, row) == (name.upper(),)
    hs.upsert("contacts", [{"id": "7", "properties": {"firstname": name}}])
    sync(db, stream="contacts")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    assert one(db, row) == (name,)


@FOLLOW
def test_a_stream_mapped_to_two_entities_merges_its_changes_into_both(db, both, follow):
    """A user maps Salesforce leads to companies as well as contacts (a
    lead's Company): each entity keeps its own place in the
    stream, so the companies' merge does not use up the contacts' changes."""
    _, sf = both
    follow_at_most(db, follow)
    db.execute("""INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source)
                  VALUES ('salesforce', 'Lead', 'company', 'name', $$r._raw->>'Company'$$, 'sf')""")
    db.execute("SELECT * FROM crm_sync.merge(full => true)")
    sf.upsert("Lead", [{"FirstName": "Zoe", "LastName": "Zeta", "Email": "zoe@zeta.example",
                        "Company": "Zeta Ltd"}])
    sync(db, "sf")
    assert one(db, "SELECT count(*) FROM crm.companies WHERE name = 'Zeta Ltd'") == (1,)
    zoe = person(db, "zoe@zeta.example")
    assert zoe["first_name"] == "Zoe"
    lead = zoe["sources"][0].split("/")[2]
    sf.upsert("Lead", [{"Id": lead, "FirstName": "Zoey", "Company": "Zeta Limited"}])
    sync(db, "sf")
    assert person(db, "zoe@zeta.example")["first_name"] == "Zoey"
    assert one(db, "SELECT count(*) FROM crm.companies WHERE name = 'Zeta Limited'") == (1,)
    # The mapping removed, the leads' companies leave the model.
    db.execute("DELETE FROM crm_sync.mappings WHERE object = 'Lead' AND entity = 'company'")
    db.execute("SELECT * FROM crm_sync.merge()")
    assert one(db, "SELECT count(*) FROM crm.companies WHERE name = 'Zeta Limited'") == (0,)
    assert person(db, "zoe@zeta.example")["first_name"] == "Zoey"
    # Mapped again, the stream is read from its start.
    db.execute("""INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source)
                  VALUES ('salesforce', 'Lead', 'company', 'name', $$r._raw->>'Company'$$, 'sf')""")
    db.execute("SELECT * FROM crm_sync.merge()")
    assert one(db, "SELECT count(*) FROM crm.companies WHERE name = 'Zeta Limited'") == (1,)


def test_a_stream_no_longer_mapped_leaves_the_model_at_its_next_sync(db, both):
    """Its own sync's merge takes the records out (not only a merge of
    another stream), and says so."""
    def acme_sources():
        rows = db.execute("SELECT sources FROM crm.companies WHERE domain = 'acme.com'").fetchall()
        assert len(rows) == 1, rows
        return {s.split("/")[0] for s in rows[0][0]}
    assert acme_sources() == {"hs", "sf"}
    db.execute("UPDATE crm_sync.mappings SET enabled = false WHERE provider = 'hubspot' AND object = 'companies'")
    notices = []
    db.add_notice_handler(lambda d: notices.append(d.message_primary))
    sync(db, "hs", "companies")
    assert acme_sources() == {"sf"}
    assert any("hs.companies leave crm.companies" in n and "no longer mapped to company" in n for n in notices), \
        notices
    # Nothing is left to take out: the next sync says nothing.
    notices.clear()
    sync(db, "hs", "companies")
    assert not any("hs.companies" in n for n in notices), notices
