"""crm_sync.sync() against the Salesforce mock: what lands and with which
types, incremental moves, ties, changes while paging, deletes, wide objects,
objects without SystemModstamp, custom objects, OAuth flows, session expiry,
and Salesforce's errors."""

import subprocess
import time

import psycopg
import pytest

from conftest import (SF_CLIENT_ID, SF_CLIENT_SECRET, SF_REFRESH_TOKEN, SF_USERNAME,
                      assert_echoed, assert_no_secret, collect_notices, create_sf_source, seen_texts, sync)


def one(db, sql, *args):
    return db.execute(sql, args or None).fetchone()[0]


def live_count(mock, obj):
    return mock.query(f"SELECT COUNT() FROM {obj} WHERE IsDeleted = false")["totalSize"]


def deleted_count(mock, obj):
    return mock.query(f"SELECT COUNT() FROM {obj} WHERE IsDeleted = true")["totalSize"]


def column_types(db, table):
    return dict(db.execute(
        """SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped""", (table,)).fetchall())


def test_full_sync_lands_default_streams_with_typed_columns(db, sf_factory):
    sf = sf_factory("--accounts", "1500", "--contacts", "120")
    create_sf_source(db, sf)
    rows = sync(db, "sf")
    assert set(rows) == {"account", "contact", "lead", "opportunity", "user"}
    for r in rows.values():
        assert r["status"] == "succeeded" and r["mode"] == "full"
        assert r["watermark"] is not None
    acc_live, acc_del = live_count(sf, "Account"), deleted_count(sf, "Account")
    assert acc_del > 0, "the seed deletes 1 record in 200"
    assert rows["account"]["records_upserted"] == acc_live
    assert rows["account"]["records_deleted"] == acc_del
    assert one(db, "SELECT count(*) FROM sf.account WHERE _deleted_at IS NULL") == acc_live
    assert one(db, "SELECT count(*) FROM sf.account WHERE _deleted_at IS NOT NULL") == acc_del
    assert one(db, "SELECT count(*) FROM sf.contact WHERE _deleted_at IS NULL") == live_count(sf, "Contact")

    t = column_types(db, "sf.account")
    assert t["id"] == "text"
    assert t["name"] == "text"
    assert t["numberofemployees"] == "bigint"
    assert t["annualrevenue"] == "numeric"
    assert t["loyalty_score__c"] == "numeric"
    assert t["is_vip__c"] == "boolean"
    assert t["signup_date__c"] == "date"
    assert t["createddate"] == "timestamp with time zone"
    assert t["systemmodstamp"] == "timestamp with time zone"
    assert t["billingaddress"] == "jsonb"
    assert t["location__c"] == "jsonb"
    assert t["segments__c"] == "text"
    assert t["ownerid"] == "text"

    # Values match the API's, and _raw holds the record as received.
    first = sf.query("SELECT Id, Name, NumberOfEmployees, BillingAddress, SystemModstamp FROM Account "
                     "WHERE IsDeleted = false AND BillingCity != null ORDER BY Id LIMIT 1")["records"][0]
    row = db.execute("SELECT name, numberofemployees, billingaddress, _raw, _updated_at = systemmodstamp "
                     "FROM sf.account WHERE id = %s", (first["Id"],)).fetchone()
    assert row[0] == first["Name"]
    assert row[1] == first["NumberOfEmployees"]
    assert row[2] == first["BillingAddress"]
    assert row[3]["attributes"]["type"] == "Account"
    assert row[4] is True


def mock_ids(sf, obj):
    """Every id of `obj` in the mock, deleted ones included (queryAll, paged)."""
    page = sf.query(f"SELECT Id FROM {obj}")
    ids = [r["Id"] for r in page["records"]]
    for _ in range(1000):
        if page.get("done", True):
            return set(ids)
        page = sf.next_page(page["nextRecordsUrl"])
        ids += [r["Id"] for r in page["records"]]
    raise AssertionError("queryAll did not end within 1,000 pages")


def at_watermark(db, table):
    """Ids of the rows modified at the newest time landed: an incremental
    run reads them again (its watermark is inclusive, so ties are never lost)."""
    return {r[0] for r in db.execute(
        f"SELECT id FROM {table} WHERE _updated_at = (SELECT max(_updated_at) FROM {table})").fetchall()}


def test_incremental_moves_only_changes_and_marks_deletes(db, salesforce):
    sf = salesforce
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    ids = [r[0] for r in db.execute(
        "SELECT id FROM sf.account WHERE _deleted_at IS NULL ORDER BY id LIMIT 4").fetchall()]
    # The records that share the watermark's timestamp: the next run reads
    # them again (the watermark is inclusive, so a tie is never lost).
    ties = at_watermark(db, "sf.account")
    sf.upsert("Account", [{"Id": ids[0], "Name": "Renamed One"}, {"Id": ids[1], "Tier__c": "Gold"}])
    new_id = sf.upsert("Account", [{"Name": "Brand New Co"}])[0]
    sf.delete("Account", [ids[2]])
    sf.reset_stats()
    r = sync(db, "sf", "account")["account"]
    assert r["mode"] == "incremental"
    # Read: the three changed records, the deleted one, and the ties.
    tied = len(ties - set(ids[:3]))
    assert 0 < tied < 10
    assert (r["records_read"], r["records_upserted"], r["records_unchanged"], r["records_deleted"]) == \
        (4 + tied, 3, tied, 1)
    assert r["api_calls"] == sf.stats()["requests"] <= 4  # describe, query, queryAll (+ login)
    assert one(db, "SELECT name FROM sf.account WHERE id = %s", ids[0]) == "Renamed One"
    assert one(db, "SELECT tier__c FROM sf.account WHERE id = %s", ids[1]) == "Gold"
    assert one(db, "SELECT name FROM sf.account WHERE id = %s", new_id) == "Brand New Co"
    deleted = db.execute("SELECT _deleted_at IS NOT NULL, name IS NOT NULL FROM sf.account WHERE id = %s",
                         (ids[2],)).fetchone()
    assert deleted == (True, True), "a deleted record stays, marked"
    # Nothing changed: nothing moves. At most the four records just changed
    # are read again (the watermark never passes the server's clock, in
    # whole seconds, when the query began); an undelete clears the mark.
    r = sync(db, "sf", "account")["account"]
    assert (r["mode"], r["records_upserted"], r["records_deleted"]) == ("incremental", 0, 0)
    assert r["records_read"] == r["records_unchanged"] <= 4
    sf.undelete("Account", [ids[2]])
    r = sync(db, "sf", "account")["account"]
    assert r["records_upserted"] == 1
    assert one(db, "SELECT _deleted_at FROM sf.account WHERE id = %s", ids[2]) is None


def test_a_nul_in_an_address_lands_replaced_with_a_warning(db, salesforce):
    # A compound field (an address) lands as jsonb, which cannot hold
    # \u0000: the value is kept with U+FFFD, as in _raw and text columns,
    # instead of failing every run of the stream.
    sf = salesforce
    create_sf_source(db, sf)
    sync(db, "sf", "account")
    new_id = sf.upsert("Account", [{"Name": "Nul Street Co", "BillingStreet": "Main\u0000St",
                                    "BillingCity": "Oslo"}])[0]
    r = sync(db, "sf", "account")["account"]
    assert r["status"] == "succeeded"
    assert r["records_upserted"] >= 1
    row = db.execute("SELECT billingaddress->>'street', billingaddress->>'city', billingstreet, "
                     "_raw->>'BillingStreet' FROM sf.account WHERE id = %s", (new_id,)).fetchone()
    assert row == ("Main\ufffdSt", "Oslo", "Main\ufffdSt", "Main\ufffdSt")
    samples = db.execute("SELECT warning_samples FROM crm_sync.runs WHERE source = 'sf' AND stream = 'account' "
                         "ORDER BY run_id DESC LIMIT 1").fetchone()[0]
    assert any("billingaddress" in s and new_id in s for s in samples), samples


def test_ties_and_changes_at_the_watermark_are_not_lost(db, sf_factory):
    # 3,000 accounts: 450 share one SystemModstamp; pages of 200 cut that tie.
    sf = sf_factory("--accounts", "3000")
    create_sf_source(db, sf, batch_size=200)
    r = sync(db, "sf", "account")["account"]
    live, dele = live_count(sf, "Account"), deleted_count(sf, "Account")
    assert one(db, "SELECT count(*) FROM sf.account") == live + dele
    assert {x[0] for x in db.execute("SELECT id FROM sf.account")} == mock_ids(sf, "Account")
    assert r["api_calls"] >= 15
    wm = r["watermark"]
    # Changes stamped exactly at the watermark, after it, and many sharing one
    # new timestamp all land in the next run.
    ids = [x[0] for x in db.execute("SELECT id FROM sf.account WHERE _deleted_at IS NULL ORDER BY id LIMIT 260")]
    ms = int(wm.timestamp() * 1000)
    sf.upsert("Account", [{"Id": i, "Name": f"Tie {i}"} for i in ids[:10]], timestamp_ms=ms)
    sf.upsert("Account", [{"Id": i, "Name": f"Later {i}"} for i in ids[10:]])
    r = sync(db, "sf", "account")["account"]
    assert r["records_upserted"] == 260
    assert one(db, "SELECT count(*) FROM sf.account WHERE name LIKE 'Tie %%' OR name LIKE 'Later %%'") == 260


def test_changes_while_paging_land_in_this_or_the_next_run(db, sf_factory):
    sf = sf_factory("--accounts", "2000")
    create_sf_source(db, sf, batch_size=200)
    first = sf.query("SELECT Id FROM Account WHERE IsDeleted = false ORDER BY Id LIMIT 3")["records"]
    ids = [r["Id"] for r in first]
    # While the 3rd page is fetched: update two records, create one, delete one.
    sf.admin("POST", "/_mock/hooks", {"path_contains": "/query/", "skip": 2, "action": {
        "op": "upsert", "object": "Account",
        "records": [{"Id": ids[0], "Name": "Mid Sync A"}, {"Id": ids[1], "Name": "Mid Sync B"},
                    {"Name": "Created Mid Sync"}]}})
    sf.admin("POST", "/_mock/hooks", {"path_contains": "/query/", "skip": 4, "action": {
        "op": "delete", "object": "Account", "ids": [ids[2]]}})
    sync(db, "sf", "account")
    sync(db, "sf", "account")
    assert one(db, "SELECT name FROM sf.account WHERE id = %s", ids[0]) == "Mid Sync A"
    assert one(db, "SELECT name FROM sf.account WHERE id = %s", ids[1]) == "Mid Sync B"
    assert one(db, "SELECT count(*) FROM sf.account WHERE name = 'Created Mid Sync'") == 1
    assert one(db, "SELECT _deleted_at IS NOT NULL FROM sf.account WHERE id = %s", ids[2])
    assert one(db, "SELECT count(*) FROM sf.account WHERE _deleted_at IS NULL") == live_count(sf, "Account")


def test_session_expiring_mid_sync_is_renewed_once_per_expiry(db, sf_factory):
    sf = sf_factory("--accounts", "1500", "--session-calls", "3")
    create_sf_source(db, sf, batch_size=200)
    sf.reset_stats()
    r = sync(db, "sf", "account")["account"]
    stats = sf.stats()
    assert r["status"] == "succeeded"
    assert one(db, "SELECT count(*) FROM sf.account") == live_count(sf, "Account") + deleted_count(sf, "Account")
    logins = sum(v for k, v in stats["by_endpoint"].items() if "oauth2/token" in k)
    api = r["api_calls"] - logins
    # Each session serves 3 calls, then one 401 and one fresh login.
    assert api >= 10 and logins >= 3, stats["by_endpoint"]
    assert logins <= api // 2 + 1, "one login per expiry, not per call"
    assert stats["status_counts"].get("401", 0) == logins - 1
    # An expired session between syncs, too.
    sf.expire_sessions()
    assert sync(db, "sf", "account")["account"]["status"] == "succeeded"


def test_client_credentials_and_jwt_bearer_flows(db, sf_factory, tmp_path):
    key, pub = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(key)], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(pub)],
                   check=True, capture_output=True)
    sf = sf_factory("--jwt-public-key", str(pub))
    create_sf_source(db, sf, name="sf_cc", credentials={"client_id": SF_CLIENT_ID,
                                                        "client_secret": SF_CLIENT_SECRET})
    assert sync(db, "sf_cc", "lead")["lead"]["status"] == "succeeded"
    create_sf_source(db, sf, name="sf_jwt", credentials={"client_id": SF_CLIENT_ID, "username": SF_USERNAME,
                                                         "private_key": key.read_text()})
    assert sync(db, "sf_jwt", "lead")["lead"]["records_upserted"] == live_count(sf, "Lead") + deleted_count(sf, "Lead")
    # Another key: the mock cannot verify the assertion.
    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                    "-out", str(other)], check=True, capture_output=True)
    create_sf_source(db, sf, name="sf_bad", credentials={"client_id": SF_CLIENT_ID, "username": SF_USERNAME,
                                                         "private_key": other.read_text()})
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf_bad", "lead")
    assert e.value.sqlstate == "28000"
    msg = str(e.value)
    assert 'source "sf_bad"' in msg and "JWT bearer" in msg and "invalid_grant" in msg
    assert "PRIVATE KEY" not in msg


@pytest.mark.parametrize("creds,needle", [
    ({"client_id": SF_CLIENT_ID, "refresh_token": "wrong"}, "invalid_grant"),
    ({"client_id": "nope", "refresh_token": SF_REFRESH_TOKEN}, "invalid_client_id"),
    ({"client_id": SF_CLIENT_ID, "client_secret": "wrong-secret"}, "invalid_client"),
])
def test_bad_credentials_fail_clearly_without_secrets(db, pg_cluster, salesforce, creds, needle):
    create_sf_source(db, salesforce, credentials=creds)
    # The token endpoint's error quotes the form's fields back, as sent
    # (percent-encoded), as meant, and JSON-escaped.
    salesforce.fault(path_contains="/services/oauth2/token", count=0, kind="echo_secrets")
    notices = collect_notices(db)
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf", "account")
    assert e.value.sqlstate == "28000"
    msg = str(e.value)
    assert 'source "sf"' in msg and needle in msg and "[redacted]" in msg
    run = db.execute("SELECT status, error FROM crm_sync.runs WHERE source = 'sf'").fetchone()
    assert run[0] == "failed" and needle in run[1]
    assert_echoed(salesforce, **creds)
    secrets = [v for v in creds.values() if len(v) > 4]
    assert_no_secret(seen_texts(db, pg_cluster, e.value, notices), secrets, pair_with=creds.values())


def test_revoked_refresh_token_names_the_fix(db, salesforce):
    create_sf_source(db, salesforce)
    sync(db, "sf", "user")
    salesforce.admin("POST", "/_mock/sf/revoke_refresh_token")
    salesforce.expire_sessions()
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf", "user")
    assert e.value.sqlstate == "28000"
    assert "refresh token" in str(e.value)
    assert "alter_source" in (e.value.diag.message_hint or "")
    assert SF_REFRESH_TOKEN not in str(e.value)
    assert one(db, "SELECT count(*) FROM sf.user") > 0, "data already synced stays"


def test_daily_api_limit_stops_with_a_clear_error(db, salesforce):
    create_sf_source(db, salesforce)
    sync(db, "sf", "account")
    before = one(db, "SELECT count(*) FROM sf.account")
    wm = one(db, "SELECT cursor FROM crm_sync.watermarks WHERE source = 'sf' AND stream = 'account'")
    salesforce.fault(path_contains="/query", count=0, skip=0, kind="request_limit")
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf", "account")
    assert e.value.sqlstate == "53400"
    assert "daily API request limit" in str(e.value) and "REQUEST_LIMIT_EXCEEDED" in str(e.value)
    assert one(db, "SELECT count(*) FROM sf.account") == before
    assert one(db, "SELECT cursor FROM crm_sync.watermarks WHERE source = 'sf' AND stream = 'account'") == wm
    assert one(db, "SELECT status FROM crm_sync.runs WHERE source = 'sf' ORDER BY run_id DESC LIMIT 1") == "failed"


def test_query_timeouts_and_server_errors_are_retried(db, salesforce):
    create_sf_source(db, salesforce)
    salesforce.admin("POST", "/_mock/faults", {"rules": [
        {"path_contains": "/query", "count": 2, "skip": 0, "kind": "query_timeout"},
        {"path_contains": "/describe", "count": 1, "skip": 0, "kind": "503"}]})
    salesforce.reset_stats()
    r = sync(db, "sf", "opportunity")["opportunity"]
    stats = salesforce.stats()
    assert r["status"] == "succeeded"
    assert stats["status_counts"].get("400") == 2 and stats["status_counts"].get("503") == 1, stats
    n = live_count(salesforce, "Opportunity") + deleted_count(salesforce, "Opportunity")
    assert one(db, "SELECT count(*) FROM sf.opportunity") == n


def test_a_field_deleted_in_the_org_is_dropped_with_a_warning(db, salesforce):
    create_sf_source(db, salesforce)
    db.execute("UPDATE crm_sync.streams SET properties = '{Name,Tier__c,Loyalty_Score__c}' "
               "WHERE source = 'sf' AND stream = 'account'")
    sync(db, "sf", "account")
    assert one(db, "SELECT count(*) FROM sf.account WHERE tier__c IS NOT NULL") > 0
    salesforce.admin("DELETE", "/_mock/sf/Account/fields/Tier__c")
    r = sync(db, "sf", "account")["account"]
    assert r["status"] == "succeeded" and r["warnings"] >= 1
    assert one(db, "SELECT properties FROM crm_sync.streams WHERE source = 'sf' AND stream = 'account'") == \
        ["Name", "Tier__c", "Loyalty_Score__c"], "the user's list is left alone"
    assert one(db, "SELECT count(*) FROM sf.account WHERE tier__c IS NOT NULL") > 0, "landed values stay"
    samples = one(db, "SELECT warning_samples FROM crm_sync.runs WHERE source = 'sf' ORDER BY run_id DESC LIMIT 1")
    assert any("Tier__c" in s for s in samples)
    # A name that never existed is still an error.
    db.execute("UPDATE crm_sync.streams SET properties = '{Name,Not_A_Field__c}' "
               "WHERE source = 'sf' AND stream = 'account'")
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf", "account")
    assert "Not_A_Field__c" in str(e.value)


def test_wide_object_is_split_over_queries_joined_by_id(db, sf_factory):
    sf = sf_factory("--invoices", "300", "--max-query-length", "4000")
    create_sf_source(db, sf, max_query_length=4000, batch_size=200)
    assert one(db, "SELECT crm_sync.add_stream('sf', 'Wide__c')") == "wide__c"
    r = sync(db, "sf", "wide__c")["wide__c"]
    assert r["status"] == "succeeded"
    n = live_count(sf, "Wide__c") + deleted_count(sf, "Wide__c")
    assert one(db, "SELECT count(*) FROM sf.wide__c") == n
    t = column_types(db, "sf.wide__c")
    assert "wide_field_600__c" in t and "wide_field_001__c" in t
    # Every field of a record matches the API's.
    rec = sf.query("SELECT Id, Wide_Field_001__c, Wide_Field_300__c, Wide_Field_600__c FROM Wide__c "
                   "ORDER BY Id LIMIT 1")["records"][0]
    row = db.execute("SELECT _raw FROM sf.wide__c WHERE id = %s", (rec["Id"],)).fetchone()[0]
    for f in ("Wide_Field_001__c", "Wide_Field_300__c", "Wide_Field_600__c"):
        assert row[f] == rec[f]
    # A change reaches the last group too.
    sf.upsert("Wide__c", [{"Id": rec["Id"], "Wide_Field_600__c": None}])
    assert sync(db, "sf", "wide__c")["wide__c"]["records_upserted"] == 1


def test_objects_without_systemmodstamp(db, salesforce):
    create_sf_source(db, salesforce)
    db.execute("SELECT crm_sync.add_stream('sf', 'UserLogin')")
    db.execute("SELECT crm_sync.add_stream('sf', 'AccountHistory')")
    r = sync(db, "sf", "userlogin")["userlogin"]
    assert r["watermark"] is not None, "LastModifiedDate serves as the cursor"
    assert r["records_read"] == one(db, "SELECT count(*) FROM sf.userlogin") > 0
    # Nothing changed: only the records at the (inclusive) watermark are read.
    tied = len(at_watermark(db, "sf.userlogin"))
    r = sync(db, "sf", "userlogin")["userlogin"]
    assert (r["mode"], r["records_read"], r["records_unchanged"], r["records_upserted"]) == \
        ("incremental", tied, tied, 0)
    r = sync(db, "sf", "accounthistory")["accounthistory"]
    assert r["watermark"] is None, "no modification time: full refresh every run"
    n = one(db, "SELECT count(*) FROM sf.accounthistory")
    assert n > 0
    r = sync(db, "sf", "accounthistory")["accounthistory"]
    assert (r["mode"], r["records_read"], r["records_upserted"], r["records_unchanged"]) == ("full", n, 0, n)
    assert one(db, "SELECT count(*) FROM sf.accounthistory") == n


def test_custom_objects_and_discovery(db, salesforce):
    create_sf_source(db, salesforce)
    objs = {r[0]: r for r in db.execute("SELECT object, label, custom, stream FROM crm_sync.discover('sf')")}
    assert objs["Account"][3] == "account"
    assert objs["Invoice__c"][2] is True and objs["Invoice__c"][3] is None
    fields = {r[0]: r for r in db.execute(
        "SELECT property, crm_type, column_type, custom, selected FROM crm_sync.discover('sf', 'Invoice__c')")}
    assert fields["Amount__c"][1:4] == ("currency", "numeric", True)
    assert fields["Due_Time__c"][2] == "time"
    db.execute("SELECT crm_sync.add_stream('sf', 'Invoice__c', 'invoices')")
    fields = {r[0]: r for r in db.execute(
        "SELECT property, selected FROM crm_sync.discover('sf', 'invoices')")}
    assert fields["Amount__c"][1] is True
    r = sync(db, "sf", "invoices")["invoices"]
    assert r["records_upserted"] == live_count(salesforce, "Invoice__c") + deleted_count(salesforce, "Invoice__c")
    assert column_types(db, "sf.invoices")["due_time__c"] == "time without time zone"
    with pytest.raises(psycopg.Error) as e:
        db.execute("SELECT crm_sync.add_stream('sf', 'No_Such__c')")
        sync(db, "sf", "no_such__c")
    assert e.value.sqlstate == "22023"
    assert "does not know this object" in str(e.value)
    assert "crm_sync.discover(source)" in (e.value.diag.message_hint or "")


def test_bad_salesforce_options(db, salesforce):
    cases = [
        ({"api_version": "v59"}, None, "api_version"),
        ({"batch_size": 50}, None, "batch_size"),
        ({"login_url": "http://login.example.com"}, None, "http"),
        ({}, {"client_id": SF_CLIENT_ID}, "no login flow"),
        ({}, {"client_id": SF_CLIENT_ID, "username": SF_USERNAME, "private_key": "not a key"}, "RSA private key"),
        ({}, {"refresh_token": SF_REFRESH_TOKEN}, "client_id"),
    ]
    for opts, creds, needle in cases:
        with pytest.raises(psycopg.Error) as e:
            create_sf_source(db, salesforce, credentials=creds, **opts)
        assert needle in str(e.value), (opts, str(e.value))
        assert e.value.sqlstate in ("22023", "28000"), e.value.sqlstate
        assert "not a key" not in str(e.value)


def comparable(db, table):
    return {r[0]: r[1] for r in db.execute(
        f"SELECT id, to_jsonb(t) - '_synced_at' - '_run_id' FROM {table} t")}


def test_bulk_api_full_sync_lands_what_rest_lands(db, sf_factory):
    sf = sf_factory("--accounts", "3000", "--contacts", "400", "--bulk-polls", "3")
    create_sf_source(db, sf, name="sf_rest", bulk_api=False)
    create_sf_source(db, sf, name="sf_bulk", bulk_threshold=100)
    # Contact: Name is a compound of FirstName/LastName but a plain field.
    sync(db, "sf_rest", "contact")
    sync(db, "sf_bulk", "contact")
    assert comparable(db, "sf_rest.contact") == comparable(db, "sf_bulk.contact")
    assert one(db, "SELECT count(*) FROM sf_bulk.contact WHERE name LIKE '{%%'") == 0
    sf.reset_stats()
    r = sync(db, "sf_bulk", "account")["account"]
    eps = sf.stats()["by_endpoint"]
    assert any("jobs/query" in k and k.startswith("POST") for k in eps), eps
    assert any(k.endswith("/results") for k in eps), eps
    assert not any(k.endswith("v59.0/query/{locator}") for k in eps), "no REST paging"
    assert r["records_deleted"] == deleted_count(sf, "Account")
    sync(db, "sf_rest", "account")
    rest, bulk = comparable(db, "sf_rest.account"), comparable(db, "sf_bulk.account")
    assert len(bulk) == live_count(sf, "Account") + deleted_count(sf, "Account")
    assert rest == bulk, "Bulk API and REST land identical rows (compound fields rebuilt, types kept)"
    # Incremental runs of a Bulk-synced stream use REST and see later changes.
    some = next(iter(bulk))
    tied = len(at_watermark(db, "sf_bulk.account") - {some})
    sf.upsert("Account", [{"Id": some, "Name": "After Bulk"}])
    sf.reset_stats()
    r = sync(db, "sf_bulk", "account")["account"]
    assert (r["mode"], r["records_read"], r["records_upserted"], r["records_unchanged"]) == \
        ("incremental", 1 + tied, 1, tied)
    assert r["api_calls"] == sf.stats()["requests"] <= 4
    assert one(db, "SELECT name FROM sf_bulk.account WHERE id = %s", some) == "After Bulk"
    # Small objects stay on REST even with Bulk on.
    sf.reset_stats()
    sync(db, "sf_bulk", "lead")
    assert not any("jobs/query" in k for k in sf.stats()["by_endpoint"])


def test_bulk_changes_while_reading_results_land_next_run(db, sf_factory):
    sf = sf_factory("--accounts", "25000")
    create_sf_source(db, sf, bulk_threshold=0)
    ids = [r["Id"] for r in sf.query("SELECT Id FROM Account WHERE IsDeleted = false ORDER BY Id LIMIT 2")["records"]]
    sf.admin("POST", "/_mock/hooks", {"path_contains": "/results", "skip": 1, "action": {
        "op": "upsert", "object": "Account", "records": [{"Id": ids[0], "Name": "During Bulk"}]}})
    sf.admin("POST", "/_mock/hooks", {"path_contains": "/results", "skip": 1, "action": {
        "op": "delete", "object": "Account", "ids": [ids[1]]}})
    r = sync(db, "sf", "account")["account"]
    # The job's snapshot still had ids[1] live; the deletes pass after it saw it deleted.
    assert r["records_upserted"] == live_count(sf, "Account") + 1
    assert r["records_deleted"] == deleted_count(sf, "Account")
    sync(db, "sf", "account")
    assert one(db, "SELECT name FROM sf.account WHERE id = %s", ids[0]) == "During Bulk"
    assert one(db, "SELECT _deleted_at IS NOT NULL FROM sf.account WHERE id = %s", ids[1])
    assert one(db, "SELECT count(*) FROM sf.account WHERE _deleted_at IS NULL") == live_count(sf, "Account")


def test_bulk_falls_back_to_rest_when_a_job_cannot_run(db, sf_factory):
    sf = sf_factory("--invoices", "120", "--max-query-length", "4000")
    create_sf_source(db, sf, max_query_length=4000, bulk_threshold=0)
    db.execute("SELECT crm_sync.add_stream('sf', 'Wide__c')")
    r = sync(db, "sf", "wide__c")["wide__c"]
    assert r["status"] == "succeeded" and r["warnings"] >= 1
    assert one(db, "SELECT count(*) FROM sf.wide__c") == live_count(sf, "Wide__c") + deleted_count(sf, "Wide__c")
    samples = one(db, "SELECT warning_samples FROM crm_sync.runs WHERE stream = 'wide__c'")
    assert any("REST API instead" in s for s in samples), samples


def test_cancel_while_waiting_for_a_bulk_job(connect, sf_factory):
    from test_failures import run_in_thread
    sf = sf_factory("--accounts", "3000", "--bulk-polls", "100000")
    db = connect()
    create_sf_source(db, sf, bulk_threshold=0)
    worker = connect()
    pid = worker.info.backend_pid
    th, box = run_in_thread(worker, "SELECT * FROM crm_sync.sync('sf', 'account')")
    deadline = time.monotonic() + 20
    while not any(k.startswith("GET") and "jobs/query/" in k for k in sf.stats()["by_endpoint"]):
        assert time.monotonic() < deadline, "the sync never polled its job"
        time.sleep(0.1)
    cancelled_at = time.monotonic()
    assert db.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]
    th.join(timeout=15)
    assert not th.is_alive()
    assert isinstance(box["error"], psycopg.errors.QueryCanceled)
    took = time.monotonic() - cancelled_at
    assert took < 1.0, f"the sync stopped {took:.2f} s after the cancel"  # the README: 100 ms
    assert one(db, "SELECT status FROM crm_sync.runs WHERE stream = 'account'") == "cancelled"
    assert one(db, "SELECT count(*) FROM crm_sync.watermarks") == 0


def test_no_secret_in_runs_errors_or_log(db, pg_cluster, sf_factory, tmp_path):
    sf = sf_factory()
    notices = collect_notices(db)
    create_sf_source(db, sf)
    sync(db, "sf", "lead")
    # A REST error that quotes the session token (a secret the source's
    # credentials do not hold: the connector redacts it).
    sf.fault(path_contains="/query", count=1, kind="echo_secrets")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as rest_err:
        sync(db, "sf", "lead")
    assert "MALFORMED_QUERY" in str(rest_err.value)
    assert "[redacted]" in rest_err.value.diag.message_detail
    sessions = assert_echoed(sf, kind="echo_secrets")["echoed"]["bearer"]
    # A 200 with a warning: the Bulk API job is refused with the session
    # token quoted; the run reads through REST and warns why.
    create_sf_source(db, sf, name="sf_bulk", bulk_threshold=1)
    sf.fault(path_contains="/jobs/query", method="POST", count=1, kind="echo_secrets")
    warned = len(notices)
    r = sync(db, "sf_bulk", "lead")["lead"]
    assert r["status"] == "succeeded"
    samples = one(db, "SELECT array_to_string(warning_samples, ' ') FROM crm_sync.runs "
                      "WHERE source = 'sf_bulk' ORDER BY run_id DESC LIMIT 1")
    assert "Bulk API could not read" in samples and "[redacted]" in samples, samples
    assert any("[redacted]" in n for n in notices[warned:]), notices
    sessions = assert_echoed(sf)["echoed"]["bearer"]  # the session is shared (same credentials)
    # The token endpoint quoting a bad source's secrets, percent-encoded as
    # the form carried them.
    bad_secret, bad_refresh = "s3cr3t/client+secret=", "5Aep/revoked+refresh=token"
    create_sf_source(db, sf, name="sf_bad", credentials={"client_id": SF_CLIENT_ID,
                                                         "client_secret": bad_secret,
                                                         "refresh_token": bad_refresh})
    sf.fault(path_contains="/services/oauth2/token", count=0, kind="echo_secrets")
    with pytest.raises(psycopg.Error) as e:
        sync(db, "sf_bad", "lead")
    assert_echoed(sf, client_secret=bad_secret, refresh_token=bad_refresh)
    for err in (rest_err.value, e.value):
        assert_no_secret(seen_texts(db, pg_cluster, err, notices),
                         [SF_CLIENT_SECRET, SF_REFRESH_TOKEN, bad_secret, bad_refresh, *sessions],
                         pair_with=[SF_CLIENT_ID])
    # Other roles cannot read the credentials.
    db.execute("CREATE ROLE sf_reader LOGIN")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SET ROLE sf_reader; SELECT * FROM crm_sync.credentials")
    db.execute("RESET ROLE")
    db.execute("DROP ROLE sf_reader")


def test_a_field_deleted_between_describe_and_query_keeps_its_landed_values(db, salesforce):
    create_sf_source(db, salesforce)
    db.execute("UPDATE crm_sync.streams SET properties = '{Name,Tier__c}' "
               "WHERE source = 'sf' AND stream = 'account'")
    sync(db, "sf", "account")
    tiers = one(db, "SELECT count(*) FROM sf.account WHERE tier__c IS NOT NULL")
    assert tiers > 0
    some = one(db, "SELECT id FROM sf.account WHERE _deleted_at IS NULL AND tier__c IS NOT NULL ORDER BY id LIMIT 1")
    salesforce.upsert("Account", [{"Id": some, "Name": "Changed With Tier Gone"}])
    # The describe still lists Tier__c; the field is gone when the query runs.
    salesforce.admin("POST", "/_mock/hooks", {"path_contains": "/query", "skip": 0, "action": {
        "op": "remove_field", "object": "Account", "name": "Tier__c"}})
    r = sync(db, "sf", "account")["account"]
    # The change, plus the records tied at the watermark: read again, their
    # _raw now lacks the deleted field.
    assert r["status"] == "succeeded" and r["records_upserted"] >= 1 and r["warnings"] >= 1
    row = db.execute("SELECT name, tier__c FROM sf.account WHERE id = %s", (some,)).fetchone()
    assert row[0] == "Changed With Tier Gone"
    assert row[1] is not None, "the column keeps the value landed before the field was deleted"
    assert one(db, "SELECT count(*) FROM sf.account WHERE tier__c IS NOT NULL") == tiers
    samples = one(db, "SELECT warning_samples FROM crm_sync.runs WHERE source = 'sf' ORDER BY run_id DESC LIMIT 1")
    assert any("Tier__c" in w and "INVALID_FIELD" in w for w in samples), samples
    # Next run: describe no longer has it; skipped with a warning again, the
    # user's list left alone.
    r = sync(db, "sf", "account")["account"]
    assert r["status"] == "succeeded" and r["warnings"] >= 1
    assert one(db, "SELECT properties FROM crm_sync.streams WHERE source = 'sf' AND stream = 'account'") == \
        ["Name", "Tier__c"]
