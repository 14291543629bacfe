"""Pipedrive, shipped as a spec the `rest` connector runs (specs/pipedrive.json),
against the Pipedrive mock: full and incremental syncs, deletes, custom fields
named after their display names, rate limits, OAuth with rotation, a crash
in a background job, and a Pipedrive person merged with the same HubSpot
contact in crm.contacts."""

import json

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import PD_TOKEN, ROOT, crash_and_resume, create_pd_source, create_source, register, sync

SPEC = json.loads((ROOT / "specs" / "pipedrive.json").read_text())


def one(db, sql, *args):
    return db.execute(sql, args).fetchone()[0]


def reconcile(db, source="pd", stream=None):
    cur = db.execute("SELECT * FROM crm_sync.reconcile(%s, %s)", (source, stream))
    cols = [d.name for d in cur.description]
    return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


def test_a_full_sync_lands_every_stream_with_typed_columns(db, pipedrive):
    create_pd_source(db, pipedrive)
    runs = sync(db, "pd")
    assert {k: (r["status"], r["records_read"]) for k, r in runs.items()} == {
        "persons": ("succeeded", 120), "organizations": ("succeeded", 30), "deals": ("succeeded", 40),
        "activities": ("succeeded", 20), "users": ("succeeded", 3)}
    # One field listing and one page of 500 per stream; users are one v1 call.
    assert runs["persons"]["api_calls"] == 2 and runs["users"]["api_calls"] == 1
    types = dict(db.execute("""SELECT column_name, data_type FROM information_schema.columns
                                WHERE table_schema = 'pd' AND table_name = 'persons'""").fetchall())
    assert types["update_time"] == "timestamp with time zone"
    assert types["emails"] == "jsonb" and types["org_id"] == "bigint"
    assert types["lead_score"] == "numeric" and types["source_channel"] == "bigint"
    r = db.execute("SELECT p.id, p.first_name, p._raw->'custom_fields', p.lead_score FROM pd.persons p "
                   "WHERE p.id = '7'").fetchone()
    truth = pipedrive.record("persons", 7)
    assert r[1] == truth["first_name"]
    lead = next(f for f in pipedrive.fields("persons") if f["name"] == "Lead score")
    assert float(r[3]) == truth["custom_fields"][lead["code"]]
    assert r[2] == truth["custom_fields"]
    # Users: v1 times in their own format became the watermark.
    assert one(db, "SELECT count(*) FROM pd.users WHERE active_flag") == 3
    # The tokens it spent: 10 per v2 call, 20 for v1 users.
    assert pipedrive.stats()["tokens_spent"] == 10 * 9 + 20


def test_custom_fields_keep_their_column_when_renamed_and_new_ones_get_theirs(db, pipedrive):
    create_pd_source(db, pipedrive)
    sync(db, "pd", "persons")
    lead = next(f for f in pipedrive.fields("persons") if f["name"] == "Lead score")
    # The 40-character key is what the catalog records.
    assert db.execute("""SELECT property, column_name FROM crm_sync.landing_columns
                          WHERE source = 'pd' AND stream = 'persons' AND column_name = 'lead_score'""").fetchone() \
        == (lead["code"], "lead_score")
    pipedrive.admin("PATCH", f"/_mock/pd/persons/fields/{lead['code']}", {"name": "Score (old)"})
    new = pipedrive.admin("POST", "/_mock/pd/persons/fields", {"name": "Preferred language", "type": "varchar"})
    pipedrive.upsert("persons", {"custom_fields": {"Preferred language": "Estonian", "Score (old)": 99.5}}, id=7)
    runs = sync(db, "pd", "persons")
    assert runs["persons"]["status"] == "succeeded"
    assert db.execute("SELECT lead_score, preferred_language FROM pd.persons WHERE id = '7'").fetchone() == \
        (99.5, "Estonian")
    cols = dict(db.execute("SELECT property, column_name FROM crm_sync.landing_columns "
                           "WHERE source = 'pd' AND stream = 'persons'").fetchall())
    assert cols[new["field_code"]] == "preferred_language"
    assert "score_old" not in cols.values()
    # Two fields of one display name get two columns.
    pipedrive.admin("POST", "/_mock/pd/persons/fields", {"name": "Preferred language", "type": "varchar"})
    sync(db, "pd", "persons")
    twins = [c for c in dict(db.execute("SELECT property, column_name FROM crm_sync.landing_columns "
                                        "WHERE source = 'pd' AND stream = 'persons'").fetchall()).values()
             if c.startswith("preferred_language")]
    assert len(twins) == 2 and "preferred_language" in twins


def test_incremental_syncs_read_what_changed_in_a_window_closed_at_the_run_start(db, pipedrive):
    create_pd_source(db, pipedrive)
    sync(db, "pd")
    pipedrive.reset_stats()
    pipedrive.upsert("persons", {"first_name": "Changed"}, id=3)
    new_id = pipedrive.upsert("persons", {"name": "New Person", "first_name": "New", "last_name": "Person",
                                          "emails": [{"value": "new@example.com", "primary": True}]})
    runs = sync(db, "pd", "persons")
    r = runs["persons"]
    assert r["mode"] == "incremental" and r["status"] == "succeeded"
    assert r["records_upserted"] == 2, r
    assert one(db, "SELECT first_name FROM pd.persons WHERE id = '3'") == "Changed"
    assert one(db, "SELECT count(*) FROM pd.persons WHERE id = %s", str(new_id)) == 1
    # Asked with updated_since (the watermark) and updated_until (the start).
    assert r["api_calls"] == 2
    # The watermark is the newest change seen, never past the run's start.
    wm = one(db, "SELECT crm_sync._watermark_time(cursor) FROM crm_sync.watermarks "
                 "WHERE source = 'pd' AND stream = 'persons'")
    assert wm is not None
    assert one(db, "SELECT %s::timestamptz <= now()", wm)


def test_a_record_changed_while_the_run_pages_lands_in_this_or_the_next_run(db, pipedrive):
    create_pd_source(db, pipedrive)
    sync(db, "pd", "persons")
    for i in range(1, 121):
        pipedrive.upsert("persons", {"first_name": f"Wave{i}"}, id=i)
    # Between the first and the second page of the next run, person 1 changes
    # again: its new update time is past the run's window.
    pipedrive.hook("/api/v2/persons", 1, {"entity": "persons", "action": "upsert", "id": 1,
                                         "record": {"first_name": "DuringRun"}})
    db.execute("SELECT crm_sync.alter_source('pd', options => '{\"lookback_seconds\": 0}')")
    runs = sync(db, "pd", "persons")
    assert runs["persons"]["status"] == "succeeded"
    first = one(db, "SELECT first_name FROM pd.persons WHERE id = '1'")
    assert first in ("Wave1", "DuringRun")
    sync(db, "pd", "persons")
    assert one(db, "SELECT first_name FROM pd.persons WHERE id = '1'") == "DuringRun"
    assert one(db, "SELECT count(*) FROM pd.persons WHERE first_name LIKE 'Wave%%' OR id = '1'") == 120


def test_deleted_deals_are_marked_and_deleted_persons_found_by_reconciliation(db, pipedrive):
    create_pd_source(db, pipedrive)
    sync(db, "pd")
    pipedrive.delete("deals", 5)
    runs = sync(db, "pd", "deals")
    assert runs["deals"]["records_deleted"] == 1
    assert db.execute("SELECT _deleted_at IS NOT NULL, title IS NOT NULL FROM pd.deals WHERE id = '5'"
                      ).fetchone() == (True, True)
    # Persons leave the list when deleted, and are purged after 30 days:
    # neither shows in an incremental run; a reconciliation finds both.
    pipedrive.delete("persons", 8)
    pipedrive.delete("persons", 9)
    pipedrive.purge("persons", 9)
    pipedrive.purge("persons", 10)
    sync(db, "pd", "persons")
    assert one(db, "SELECT count(*) FROM pd.persons WHERE _deleted_at IS NOT NULL") == 0
    rec = reconcile(db, "pd", "persons")["persons"]
    assert rec["status"] == "succeeded" and rec["records_deleted"] == 3, rec
    assert [r[0] for r in db.execute("SELECT id FROM pd.persons WHERE _deleted_at IS NOT NULL ORDER BY id")] == \
        ["10", "8", "9"]
    # A person that never landed is read by id (ids=, at most 100 a call).
    pipedrive.upsert("persons", {"first_name": "Late", "update_time": "2023-01-02T00:00:00Z"}, id=500)
    rec = reconcile(db, "pd", "persons")["persons"]
    assert rec["records_reread"] == 1
    assert one(db, "SELECT first_name FROM pd.persons WHERE id = '500'") == "Late"


def test_the_burst_window_is_waited_for_and_a_spent_daily_budget_stops_the_run(db, pipedrive):
    create_pd_source(db, pipedrive)
    # Three calls per 2-second window: the run paces itself by the headers.
    pipedrive.limits(burst=3)
    runs = sync(db, "pd", "persons")
    assert runs["persons"]["status"] == "succeeded"
    runs = sync(db, "pd", "organizations")
    assert runs["organizations"]["status"] == "succeeded"
    assert pipedrive.stats()["status_counts"].get("429", 0) <= 1
    # The daily budget spent: a 429 while the window has calls left.
    pipedrive.limits(burst=0, daily=100, spent=85)
    pipedrive.reset_stats()
    with pytest.raises(psycopg.errors.ConfigurationLimitExceeded) as e:
        sync(db, "pd", "deals")
    d = e.value.diag
    assert "pipedrive says the request quota for stream deals is used up" in d.message_primary
    assert "daily budget" in d.message_hint
    # Not retried: one refused call (after the field listing).
    assert pipedrive.stats()["status_counts"].get("429") == 1
    run = db.execute("SELECT status, error_sqlstate FROM crm_sync.runs WHERE stream = 'deals' "
                     "ORDER BY run_id DESC LIMIT 1").fetchone()
    assert run == ("failed", "53400")
    assert one(db, "SELECT count(*) FROM pd.persons") == 120


def test_a_wrong_token_fails_with_the_api_message_and_no_secret(db, pipedrive):
    create_pd_source(db, pipedrive, credentials={"api_token": "not-the-token-123"})
    with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification) as e:
        sync(db, "pd", "persons")
    d = e.value.diag
    assert "pipedrive refused the credentials" in d.message_primary
    assert "unauthorized access" in d.message_primary
    assert "not-the-token-123" not in str(e.value)
    assert "alter_source" in d.message_hint
    # Credentials must fit one of the spec's ways.
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "pd2", "pipedrive", {"base_url": pipedrive.url}, {"client_id": "x"})
    assert "needs credentials for one of: api_key (api_token); oauth2 (client_id, client_secret, refresh_token)" \
        in str(e.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "pd2", "pipedrive", {"base_url": pipedrive.url}, {"api_token": "t", "password": "x"})
    assert 'unknown credential "password"' in str(e.value)


def oauth_spec(mock):
    spec = json.loads(json.dumps(SPEC))
    spec["base_url"] = mock.url
    spec["auth"][1]["token_url"] = mock.url + "/oauth/token"
    return spec


def test_oauth_with_a_rotating_refresh_token_stores_each_new_one(db, connect, pipedrive):
    db.execute("SELECT crm_sync.register_spec('pd_oauth', %s)", (Jsonb(oauth_spec(pipedrive)),))
    pipedrive.admin("POST", "/_mock/pd/oauth", {"rotate": True})
    register(db, "pdo", "pd_oauth", {}, {"client_id": "pd-client", "client_secret": "pd-secret",
                                        "refresh_token": "pd-refresh"})
    assert sync(db, "pdo", "persons")["persons"]["status"] == "succeeded"
    state = pipedrive.admin("POST", "/_mock/pd/oauth", {})
    assert state["refresh_token"] != "pd-refresh"
    stored = one(db, "SELECT credentials->>'refresh_token' FROM crm_sync.credentials WHERE source = 'pdo'")
    assert stored == state["refresh_token"]
    # Access tokens expire: a 401 refreshes once and goes on, in another backend.
    pipedrive.admin("POST", "/_mock/pd/oauth", {"expire_access": True})
    assert sync(connect(), "pdo", "organizations")["organizations"]["status"] == "succeeded"
    state2 = pipedrive.admin("POST", "/_mock/pd/oauth", {})
    assert one(db, "SELECT credentials->>'refresh_token' FROM crm_sync.credentials WHERE source = 'pdo'") == \
        state2["refresh_token"]
    assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE coalesce(error, '') LIKE '%%pd-refresh%%'") == 0


def test_a_person_and_the_same_hubspot_contact_are_one_unified_contact(db, mock_factory, pd_factory):
    hs = mock_factory(40, 10, 5, "--shared-people", "20")
    pd = pd_factory("--persons", "30", "--organizations", "10", "--shared-people", "20")
    create_source(db, hs)
    create_pd_source(db, pd)
    sync(db, "hs", "contacts")
    sync(db, "pd", "persons")
    # Person 2 of both mocks is the same person: one row, both sources.
    row = db.execute("SELECT email, sources FROM crm.contacts WHERE %s = ANY (sources)",
                     ("pd/persons/2",)).fetchone()
    assert "hs/contacts/2" in row[1], row
    assert row[0] == pd.record("persons", 2)["emails"][0]["value"].lower()
    # Pipedrive capitalised some emails: the shared people merge all the same.
    merged = one(db, """SELECT count(*) FROM crm.contacts c
                         WHERE EXISTS (SELECT 1 FROM unnest(c.sources) s WHERE s LIKE 'hs/%%')
                           AND EXISTS (SELECT 1 FROM unnest(c.sources) s WHERE s LIKE 'pd/%%')""")
    assert merged >= 18, merged


def test_an_interrupted_background_job_resumes_from_its_checkpoint(pg_cluster, jobs_db, jobs_connect, pd_factory):
    pd = pd_factory("--persons", "30000", "--organizations", "5", "--deals", "5", "--activities", "5")
    c = jobs_connect()
    create_pd_source(c, pd)
    crash_and_resume(pg_cluster, c, pd, "pd", "persons", "GET /api/v2/persons", 30000, 500, "/api/v2/persons")


def test_a_token_answer_that_is_not_json_quotes_no_token(db, pipedrive):
    db.execute("SELECT crm_sync.register_spec('pd_oauth', %s)", (Jsonb(oauth_spec(pipedrive)),))
    register(db, "pdo", "pd_oauth", {}, {"client_id": "pd-client", "client_secret": "pd-secret",
                                        "refresh_token": "pd-refresh"})
    pipedrive.fault(path_contains="/oauth/token", count=1, kind="token_form")
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        sync(db, "pdo", "persons")
    assert "the token endpoint answered 200 with a body that is not a JSON object" in str(e.value)
    assert "SECRET" not in str(e.value)
    assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE error LIKE '%%SECRET%%'") == 0
