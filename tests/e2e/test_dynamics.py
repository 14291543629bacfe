"""Dynamics 365 (Dataverse Web API) against the Dataverse mock, through the SQL
API: typed columns from EntityDefinitions, change tracking (delta links,
deleted rows, an expired token), a table without change tracking, a token
that expires mid-sync, throttling, bad credentials, a crash in a background
job, and the same person in Dynamics, HubSpot and Salesforce as one
crm.contacts row."""

import subprocess

import psycopg
import pytest

from conftest import DV_CREDENTIALS, crash_and_resume, create_dv_source, create_sf_source, create_source, register, sync


def one(db, sql, *args):
    return db.execute(sql, args).fetchone()[0]


def reconcile(db, source="dv", stream=None):
    cur = db.execute("SELECT * FROM crm_sync.reconcile(%s, %s)", (source, stream))
    cols = [d.name for d in cur.description]
    return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def last_run(db, stream):
    cur = db.execute("SELECT * FROM crm_sync.runs WHERE source = 'dv' AND stream = %s AND mode <> 'reconcile' "
                     "ORDER BY run_id DESC LIMIT 1", (stream,))
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def test_a_full_sync_lands_every_default_table_with_typed_columns(db, dynamics):
    create_dv_source(db, dynamics)
    runs = sync(db, "dv")
    assert {k: (r["status"], r["mode"], r["records_read"]) for k, r in runs.items()} == {
        "contact": ("succeeded", "full", 120), "account": ("succeeded", "full", 30),
        "lead": ("succeeded", "full", 20), "opportunity": ("succeeded", "full", 40),
        "systemuser": ("succeeded", "full", 3)}
    # The watermark is the delta token's time.
    assert runs["contact"]["watermark"] is not None
    assert last_run(db, "contact")["watermark"].startswith("delta:")
    types = dict(db.execute("""SELECT column_name, data_type FROM information_schema.columns
                                WHERE table_schema = 'dv' AND table_name = 'contact'""").fetchall())
    assert types["modifiedon"] == "timestamp with time zone"
    assert types["birthdate"] == "date"
    assert types["statecode"] == "bigint" and types["annualincome"] == "numeric"
    assert types["donotemail"] == "boolean"
    # A lookup lands in a column named after it; its name helper and the
    # image column are not columns.
    assert types["parentcustomerid"] == "text"
    assert "parentcustomeridname" not in types and "entityimage" not in types
    id5 = dynamics.id("contact", 5)
    truth = dynamics.record("contact", id5)
    row = db.execute("SELECT firstname, parentcustomerid, new_loyaltytier, _raw FROM dv.contact WHERE id = %s",
                     (id5,)).fetchone()
    assert row[0] == truth["firstname"] and row[1] == truth["_parentcustomerid_value"]
    # Option sets: the value in the column, the label in _raw.
    assert row[3]["statecode@OData.Community.Display.V1.FormattedValue"] == "Active"
    if row[2] is not None:
        assert row[3]["new_loyaltytier@OData.Community.Display.V1.FormattedValue"] in ("Bronze", "Silver", "Gold")


def test_incremental_syncs_follow_the_delta_link_with_changes_and_deletes(db, dynamics):
    create_dv_source(db, dynamics)
    sync(db, "dv", "contact")
    # Nothing changed: one call for the table, one for the empty delta.
    runs = sync(db, "dv", "contact")
    assert (runs["contact"]["mode"], runs["contact"]["records_read"]) == ("incremental", 0)
    a, b = dynamics.id("contact", 7), dynamics.id("contact", 8)
    dynamics.upsert("contact", {"jobtitle": "Chief Listener"}, id=a)
    assert dynamics.delete("contact", b)
    new = dynamics.upsert("contact", {"firstname": "Ada", "lastname": "Lovelace", "emailaddress1": "ada@example.com"})
    runs = sync(db, "dv", "contact")
    r = runs["contact"]
    assert (r["mode"], r["records_read"], r["records_upserted"], r["records_deleted"]) == \
        ("incremental", 3, 2, 1), r
    assert one(db, "SELECT jobtitle FROM dv.contact WHERE id = %s", a) == "Chief Listener"
    assert one(db, "SELECT lastname FROM dv.contact WHERE id = %s", new) == "Lovelace"
    # The deleted row is marked and keeps its values.
    assert db.execute("SELECT _deleted_at IS NOT NULL, firstname IS NOT NULL FROM dv.contact WHERE id = %s",
                      (b,)).fetchone() == (True, True)
    assert one(db, "SELECT count(*) FROM dv.contact WHERE _deleted_at IS NULL") == 120


def test_a_row_changed_while_the_full_read_pages_lands_in_the_next_delta(db, dynamics):
    create_dv_source(db, dynamics, page_size=50)
    a = dynamics.id("contact", 3)
    # Row 3 (first page) changes while the second page is read.
    dynamics.hook("/api/data/v9.2/contacts", 1, {"action": "upsert", "entity": "contact", "id": a,
                                                "record": {"jobtitle": "Changed mid-run"}})
    sync(db, "dv", "contact")
    assert one(db, "SELECT jobtitle FROM dv.contact WHERE id = %s", a) != "Changed mid-run"
    runs = sync(db, "dv", "contact")
    assert runs["contact"]["records_read"] == 1
    assert one(db, "SELECT jobtitle FROM dv.contact WHERE id = %s", a) == "Changed mid-run"


def test_an_expired_delta_token_reads_the_table_again_and_reconciles(db, dynamics):
    create_dv_source(db, dynamics)
    sync(db, "dv", "account")
    gone = dynamics.id("account", 4)
    dynamics.delete("account", gone)
    # The org's change tracking retention passed: the token is refused.
    dynamics.expire_deltas()
    runs = sync(db, "dv", "account")
    r = runs["account"]
    assert r["status"] == "succeeded" and r["records_read"] == 29, r
    run = last_run(db, "account")
    assert any("had expired" in w for w in run["warning_samples"]), run
    # The delete the expired token hid is found by the reconciliation the
    # run asked for.
    assert one(db, "SELECT _deleted_at IS NOT NULL FROM dv.account WHERE id = %s", gone) is True
    assert last_run(db, "account")["watermark"].startswith("delta:")


def test_a_custom_table_without_change_tracking_reads_modifiedon_windows(db, dynamics):
    create_dv_source(db, dynamics)
    db.execute("SELECT crm_sync.add_stream('dv', 'new_project')")
    runs = sync(db, "dv", "new_project")
    assert runs["new_project"]["records_read"] == 10
    assert last_run(db, "new_project")["watermark"].startswith("modified:")
    types = dict(db.execute("""SELECT column_name, data_type FROM information_schema.columns
                                WHERE table_schema = 'dv' AND table_name = 'new_project'""").fetchall())
    assert types["new_budget"] == "numeric" and types["new_accountid"] == "text"
    p, q = dynamics.id("new_project", 2), dynamics.id("new_project", 9)
    dynamics.upsert("new_project", {"new_name": "Renamed"}, id=p)
    dynamics.delete("new_project", q)
    runs = sync(db, "dv", "new_project")
    assert runs["new_project"]["records_read"] == 1
    assert one(db, "SELECT new_name FROM dv.new_project WHERE id = %s", p) == "Renamed"
    # Without change tracking a delete leaves no trace but the id listing.
    assert one(db, "SELECT _deleted_at FROM dv.new_project WHERE id = %s", q) is None
    rec = reconcile(db, "dv", "new_project")["new_project"]
    assert rec["status"] == "succeeded" and rec["records_deleted"] == 1, rec
    assert one(db, "SELECT _deleted_at IS NOT NULL FROM dv.new_project WHERE id = %s", q) is True


def test_a_token_that_expires_mid_sync_is_replaced(db, dynamics):
    create_dv_source(db, dynamics, page_size=20)
    dynamics.hook("/api/data/v9.2/contacts", 2, {"action": "expire_access"})
    runs = sync(db, "dv", "contact")
    assert runs["contact"]["status"] == "succeeded"
    assert one(db, "SELECT count(*) FROM dv.contact") == 120
    assert dynamics.stats()["status_counts"]["401"] == 1
    assert dynamics.stats()["token_calls"] == 2


def test_throttling_waits_for_retry_after(db, dynamics):
    create_dv_source(db, dynamics, page_size=30, retry_max_ms=3000)
    dynamics.limits(requests=3, window_s=1)
    runs = sync(db, "dv", "contact")
    assert runs["contact"]["status"] == "succeeded"
    assert one(db, "SELECT count(*) FROM dv.contact") == 120
    assert dynamics.stats()["throttled"] >= 1


def test_bad_credentials_fail_naming_what_to_fix_without_the_secret(db, dynamics):
    create_dv_source(db, dynamics, credentials={**DV_CREDENTIALS, "client_secret": "wrong-secret-Value-77"})
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, "dv", "contact")
    d = e.value.diag
    assert "Microsoft Entra ID refused the client credentials" in d.message_primary
    assert "AADSTS7000215" in d.message_primary
    assert "client_secret" in d.message_hint
    assert "wrong-secret-Value-77" not in str(e.value)
    run = last_run(db, "contact")
    assert (run["status"], run["error_sqlstate"]) == ("failed", "28000")
    assert "wrong-secret-Value-77" not in (run["error"] or "")
    register(db, "dv2", "dynamics", {"environment_url": dynamics.url, "login_url": dynamics.url},
             {**DV_CREDENTIALS, "tenant_id": "00000000-0000-0000-0000-000000000000"})
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, "dv2", "contact")
    assert "AADSTS90002" in e.value.diag.message_primary and "tenant_id" in e.value.diag.message_hint
    # Options and credentials are checked when the source is created.
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "dv3", "dynamics", {"login_url": dynamics.url}, DV_CREDENTIALS)
    assert "needs options.environment_url" in str(e.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "dv3", "dynamics", {"environment_url": dynamics.url + "/api/data/v9.2"}, DV_CREDENTIALS)
    assert "without a path" in str(e.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "dv3", "dynamics", {"environment_url": dynamics.url},
                 {"tenant_id": DV_CREDENTIALS["tenant_id"], "client_id": "c"})
    assert "client_secret" in str(e.value)


def make_certificate(dirpath, name):
    key, cert, pub = dirpath / f"{name}.key", dirpath / f"{name}.crt", dirpath / f"{name}.pub"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=pg_crm_sync test", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    pub.write_bytes(subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)],
                                   check=True, capture_output=True).stdout)
    return key, cert, pub


def test_certificate_credentials(db, dv_factory, tmp_path):
    key, cert, pub = make_certificate(tmp_path, "app")
    dv = dv_factory("--client-cert", str(cert), "--client-cert-key", str(pub))
    creds = {"tenant_id": DV_CREDENTIALS["tenant_id"], "client_id": DV_CREDENTIALS["client_id"],
             "certificate": cert.read_text(), "private_key": key.read_text()}
    create_dv_source(db, dv, credentials=creds)
    assert sync(db, "dv", "account")["account"]["records_upserted"] == 30
    # A key of another certificate: refused, and no key text anywhere.
    other_key, _, _ = make_certificate(tmp_path, "other")
    register(db, "dv_bad", "dynamics", {"environment_url": dv.url, "login_url": dv.url},
             {**creds, "private_key": other_key.read_text()})
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, "dv_bad", "account")
    assert "AADSTS700027" in e.value.diag.message_primary and "certificate" in e.value.diag.message_hint
    assert "PRIVATE KEY" not in str(e.value)
    err = db.execute("SELECT error FROM crm_sync.runs WHERE source = 'dv_bad' ORDER BY run_id DESC LIMIT 1"
                     ).fetchone()[0]
    assert "PRIVATE KEY" not in err and other_key.read_text()[40:80] not in err
    # A key that is not PEM is refused when the source is made.
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "dv_x", "dynamics", {"environment_url": dv.url}, {**creds, "private_key": "not a key"})
    assert "private_key is not an RSA private key" in str(e.value)


def test_the_same_person_in_dynamics_hubspot_and_salesforce_is_one_contact(db, dv_factory, mock_factory, sf_factory):
    dv = dv_factory("--contacts", "30", "--accounts", "10", "--shared-people", "20")
    hs = mock_factory(40, 10, 5, "--shared-people", "20")
    sf = sf_factory("--contacts", "30", "--accounts", "10", "--shared-people", "20")
    create_dv_source(db, dv)
    create_source(db, hs)
    create_sf_source(db, sf)
    sync(db, "dv", "contact")
    sync(db, "hs", "contacts")
    sync(db, "sf", "contact")
    # Person 2 is the same person in all three CRMs: one row.
    row = db.execute("SELECT email, sources FROM crm.contacts WHERE %s = ANY (sources)",
                     (f"dv/contact/{dv.id('contact', 2)}",)).fetchone()
    assert "hs/contacts/2" in row[1] and any(s.startswith("sf/contact/") for s in row[1]), row
    merged = one(db, """SELECT count(*) FROM crm.contacts c
                         WHERE EXISTS (SELECT 1 FROM unnest(c.sources) s WHERE s LIKE 'dv/%%')
                           AND EXISTS (SELECT 1 FROM unnest(c.sources) s WHERE s LIKE 'hs/%%')""")
    assert merged >= 18, merged


def test_an_interrupted_background_job_resumes_from_its_checkpoint(pg_cluster, jobs_db, jobs_connect, dv_factory):
    dv = dv_factory("--contacts", "30000", "--accounts", "5", "--leads", "5", "--opportunities", "5")
    c = jobs_connect()
    create_dv_source(c, dv, page_size=500)
    runs = crash_and_resume(pg_cluster, c, dv, "dv", "contact", "GET /api/data/v9.2/contacts", 30000, 500,
                            "/api/data/v9.2/contacts")
    # The resumed run's last page gave the delta link.
    assert runs[1][2].startswith("delta:")
