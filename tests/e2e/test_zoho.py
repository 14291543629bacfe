"""Zoho CRM (API v8) against the Zoho mock, through the SQL API: a module
wider than one call's 50 fields joined by id, page tokens then COQL past
their end, incremental runs and deleted records, purged records found by
reconciliation, a token expiring mid-sync, token errors that come as HTTP
200, API credits, a crash in a background job, and the same person in Zoho
and HubSpot as one crm.contacts row."""

import psycopg
import pytest

from conftest import (ZOHO_CREDENTIALS, crash_and_resume, create_dv_source, create_sf_source, create_source,
                      create_zoho_source, register, sync)


def one(db, sql, *args):
    return db.execute(sql, args).fetchone()[0]


def last_run(db, stream):
    cur = db.execute("SELECT * FROM crm_sync.runs WHERE source = 'zo' AND stream = %s AND mode <> 'reconcile' "
                     "ORDER BY run_id DESC LIMIT 1", (stream,))
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def test_a_full_sync_lands_every_default_module_with_typed_columns(db, zoho):
    create_zoho_source(db, zoho)
    runs = sync(db, "zo")
    assert {k: (r["status"], r["records_read"]) for k, r in runs.items()} == {
        "contacts": ("succeeded", 120), "accounts": ("succeeded", 30), "leads": ("succeeded", 20),
        "deals": ("succeeded", 40), "users": ("succeeded", 3)}
    types = dict(db.execute("""SELECT column_name, data_type FROM information_schema.columns
                                WHERE table_schema = 'zo' AND table_name = 'contacts'""").fetchall())
    assert types["modified_time"] == "timestamp with time zone" and types["date_of_birth"] == "date"
    assert types["account_name"] == "jsonb" and types["languages"] == "jsonb"
    assert types["custom_score_45"] == "bigint" and types["email_opt_out"] == "boolean"
    # Subforms and images are not list fields: no columns.
    assert "attachments_sub" not in types and "record_image" not in types
    k7 = zoho.id(7)
    truth = zoho.record("Contacts", k7)
    row = db.execute("SELECT first_name, custom_score_45, account_name, _raw FROM zo.contacts WHERE id = %s",
                     (k7,)).fetchone()
    assert (row[0], row[1], row[2]) == (truth["First_Name"], truth["Custom_Score_45"], truth["Account_Name"])
    # One record in _raw, both field groups in it.
    assert row[3]["Custom_Score_45"] == truth["Custom_Score_45"] and row[3]["Email"] == truth["Email"]
    # Converted leads are synced too (Zoho leaves them out unless asked).
    assert one(db, "SELECT count(*) FROM zo.leads WHERE converted__s") >= 1
    # Users: the users API, read whole.
    assert one(db, "SELECT count(*) FROM zo.users WHERE status = 'active'") == 3


def test_incremental_syncs_read_changes_and_deleted_records(db, zoho):
    create_zoho_source(db, zoho)
    sync(db, "zo", "deals")
    a, b = zoho.id(4), zoho.id(5)
    zoho.upsert("Deals", {"Stage": "Closed Lost"}, id=a)
    assert zoho.delete("Deals", b)
    new = zoho.upsert("Deals", {"Deal_Name": "Fresh deal", "Amount": 12.5})
    runs = sync(db, "zo", "deals")
    r = runs["deals"]
    assert (r["mode"], r["records_read"], r["records_upserted"], r["records_deleted"]) == \
        ("incremental", 3, 2, 1), r
    assert one(db, "SELECT stage FROM zo.deals WHERE id = %s", a) == "Closed Lost"
    assert one(db, "SELECT deal_name FROM zo.deals WHERE id = %s", new) == "Fresh deal"
    assert db.execute("SELECT _deleted_at IS NOT NULL, deal_name IS NOT NULL FROM zo.deals WHERE id = %s",
                      (b,)).fetchone() == (True, True)


def test_records_past_the_page_tokens_end_are_read_by_coql(db, zoho_factory):
    zo = zoho_factory("--accounts", "1000", "--token-limit", "400")
    create_zoho_source(db, zo)
    runs = sync(db, "zo", "accounts")
    assert runs["accounts"]["records_read"] == 1000
    assert one(db, "SELECT count(DISTINCT id) FROM zo.accounts") == 1000
    assert zo.stats()["coql_calls"] == 1


def test_purged_records_are_found_by_reconciliation(db, zoho):
    create_zoho_source(db, zoho)
    sync(db, "zo", "accounts")
    gone = zoho.id(3)
    zoho.purge("Accounts", gone)
    sync(db, "zo", "accounts")
    assert one(db, "SELECT _deleted_at FROM zo.accounts WHERE id = %s", gone) is None
    cur = db.execute("SELECT * FROM crm_sync.reconcile('zo', 'accounts')")
    rec = dict(zip([d.name for d in cur.description], cur.fetchone()))
    assert rec["status"] == "succeeded" and rec["records_deleted"] == 1, rec
    assert one(db, "SELECT _deleted_at IS NOT NULL FROM zo.accounts WHERE id = %s", gone) is True


def test_a_token_that_expires_mid_sync_is_replaced(db, zoho):
    create_zoho_source(db, zoho)
    zoho.hook("/crm/v8/Contacts", 1, {"action": "expire_access"})
    runs = sync(db, "zo", "contacts")
    assert runs["contacts"]["status"] == "succeeded" and runs["contacts"]["records_read"] == 120
    assert zoho.stats()["status_counts"]["401"] == 1


def test_token_errors_that_come_as_http_200_fail_naming_what_to_fix(db, zoho):
    create_zoho_source(db, zoho, credentials={**ZOHO_CREDENTIALS, "refresh_token": "1000.revoked-Token-11"})
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, "zo", "deals")
    assert "invalid_code" in e.value.diag.message_primary
    assert "refresh token" in e.value.diag.message_hint
    assert "revoked-Token-11" not in str(e.value)
    run = last_run(db, "deals")
    assert (run["status"], run["error_sqlstate"]) == ("failed", "28000")
    register(db, "zo2", "zoho", {"accounts_url": zoho.url}, {**ZOHO_CREDENTIALS, "client_secret": "wrong-Secret-5"})
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, "zo2", "deals")
    assert "invalid_client" in e.value.diag.message_primary and "data centre" in e.value.diag.message_hint
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "zo3", "zoho", {"accounts_url": zoho.url}, {"client_id": "x", "client_secret": "y"})
    assert "refresh_token" in str(e.value)


def test_a_run_stops_before_the_days_credits_pass_max_daily_share(db, zoho_factory):
    zo = zoho_factory("--accounts", "1000", "--daily-credits", "1000")
    create_zoho_source(db, zo, daily_credits=1000)
    zo.credits(spent=795)
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as e:
        sync(db, "zo", "accounts")
    assert "max_daily_share" in e.value.diag.message_primary
    run = last_run(db, "accounts")
    assert (run["status"], run["error_sqlstate"]) == ("failed", "53400")
    # The pages landed before stopping stay; the next run goes on.
    zo.credits(spent=0)
    runs = sync(db, "zo", "accounts")
    assert runs["accounts"]["status"] == "succeeded"
    assert one(db, "SELECT count(*) FROM zo.accounts") == 1000


def test_the_same_person_in_zoho_and_hubspot_is_one_contact(db, zoho_factory, mock_factory):
    zo = zoho_factory("--contacts", "30", "--accounts", "10", "--shared-people", "20")
    hs = mock_factory(40, 10, 5, "--shared-people", "20")
    create_zoho_source(db, zo)
    create_source(db, hs)
    sync(db, "zo", "contacts")
    sync(db, "hs", "contacts")
    row = db.execute("SELECT sources FROM crm.contacts WHERE %s = ANY (sources)",
                     (f"zo/contacts/{zo.id(2)}",)).fetchone()
    assert "hs/contacts/2" in row[0], row
    merged = one(db, """SELECT count(*) FROM crm.contacts c
                         WHERE EXISTS (SELECT 1 FROM unnest(c.sources) s WHERE s LIKE 'zo/%%')
                           AND EXISTS (SELECT 1 FROM unnest(c.sources) s WHERE s LIKE 'hs/%%')""")
    assert merged >= 18, merged


def test_the_same_person_in_four_crms_is_one_contact(db, zoho_factory, dv_factory, mock_factory, sf_factory):
    zo = zoho_factory("--contacts", "30", "--accounts", "10", "--shared-people", "20")
    dv = dv_factory("--contacts", "30", "--accounts", "10", "--shared-people", "20")
    hs = mock_factory(40, 10, 5, "--shared-people", "20")
    sf = sf_factory("--contacts", "30", "--accounts", "10", "--shared-people", "20")
    create_zoho_source(db, zo)
    create_dv_source(db, dv)
    create_source(db, hs)
    create_sf_source(db, sf)
    for source, stream in (("zo", "contacts"), ("dv", "contact"), ("hs", "contacts"), ("sf", "contact")):
        sync(db, source, stream)
    # Person 2 is the same person in Zoho, Dynamics, HubSpot and Salesforce.
    row = db.execute("SELECT first_name, last_name, sources FROM crm.contacts WHERE %s = ANY (sources)",
                     (f"zo/contacts/{zo.id(2)}",)).fetchone()
    assert {s.split("/")[0] for s in row[2]} == {"zo", "dv", "hs", "sf"}, row
    assert len(row[2]) == 4
    truth = zo.record("Contacts", zo.id(2))
    assert (row[0], row[1]) == (truth["First_Name"], truth["Last_Name"])
    four = one(db, """SELECT count(*) FROM crm.contacts c
                       WHERE (SELECT count(DISTINCT split_part(s, '/', 1)) FROM unnest(c.sources) s) = 4""")
    assert four >= 15, four


def test_an_interrupted_background_job_resumes_from_its_checkpoint(pg_cluster, jobs_db, jobs_connect, zoho_factory):
    zo = zoho_factory("--accounts", "30000", "--contacts", "5", "--leads", "5", "--deals", "5")
    c = jobs_connect()
    create_zoho_source(c, zo)
    # Pages of 200 by page token, then after the crash COQL by id from the
    # checkpoint's last id (page tokens are bound to the call that began).
    crash_and_resume(pg_cluster, c, zo, "zo", "accounts", "GET /crm/v8/Accounts", 30000, 200,
                     "/crm/v8/Accounts", resumed_by=("POST /crm/v8/coql", 2000))
