"""What README.md and docs/ promise, checked with exact oracles (issue 17):
the SQLSTATEs of docs/errors.md, the source options' defaults and effects
(lookback_seconds, track_deletes, timeout_seconds), crm_sync.merge_after_sync,
the public cleaners, and how background jobs resume from, or start over
without, their checkpoint."""

import time
import uuid

import psycopg
import pytest
import requests
from psycopg.types.json import Jsonb

from conftest import TOKEN, create_sf_source, create_source, job, sync, wait_job, wait_until

CONTACTS = "/crm/v3/objects/contacts"
LIST = "GET " + CONTACTS
SEARCH = "POST " + CONTACTS + "/search"
PROPS = "GET /crm/v3/properties/contacts"
# A full read of 1,000 contacts: the properties, 10 list pages, the archived
# list and the catch-up search.
FULL_READ_CALLS = 1 + 10 + 1 + 1


def one(conn, sql, *args):
    return conn.execute(sql, args or None).fetchone()[0]


def calls(mock, endpoint):
    return mock.stats()["by_endpoint"].get(endpoint, 0)


def last_run(conn, source="hs", stream="contacts"):
    cur = conn.execute("SELECT * FROM crm_sync.runs WHERE source = %s AND stream = %s ORDER BY run_id DESC LIMIT 1",
                       (source, stream))
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def firstnames(conn, ids):
    return dict(conn.execute("SELECT id, firstname FROM hs.contacts WHERE id = ANY (%s)",
                             ([str(i) for i in ids],)).fetchall())


# ---------------------------------------------------------------------------
# docs/errors.md: 42602, 42710, 42704, 08006


def hs_source(db, mock, name, **options):
    db.execute("SELECT crm_sync.create_source(%s, 'hubspot', %s, %s)",
               (name, Jsonb({"base_url": mock.url, **options}), Jsonb({"access_token": TOKEN})))


def test_names_that_cannot_be_schemas_or_tables_are_42602(db, hubspot):
    for bad in ["Bad-Name", "UPPER", "1abc", "has space", "", "pg_foo", "a" * 64, "crm", "crm_sync", "public",
                "postgres"]:  # the last is a role's name
        with pytest.raises(psycopg.errors.InvalidName) as e:
            hs_source(db, hubspot, bad)
        assert e.value.sqlstate == "42602", bad
    with pytest.raises(psycopg.errors.InvalidName):
        db.execute("SELECT crm_sync.create_source(NULL, 'hubspot', '{}', '{}')")
    assert one(db, "SELECT count(*) FROM crm_sync.sources") == 0
    hs_source(db, hubspot, "a" * 63)  # the longest name that is one
    assert one(db, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", "a" * 63) == 1

    hs_source(db, hubspot, "hs")
    for stream in ["Bad-Name", "UPPER", "1abc", "x" * 64]:
        with pytest.raises(psycopg.errors.InvalidName):
            db.execute("SELECT crm_sync.add_stream('hs', 'Invoice__c', %s)", (stream,))
    # Without a stream name, the object's lower-cased name is the table's: too long here.
    with pytest.raises(psycopg.errors.InvalidName):
        db.execute("SELECT crm_sync.add_stream('hs', %s)", ("Invoice" + "x" * 60,))
    assert one(db, "SELECT crm_sync.add_stream('hs', 'Invoice__c', %s)", "x" * 63) == "x" * 63
    assert one(db, "SELECT crm_sync.add_stream('hs', %s)", "Invoice" + "x" * 56) == "invoice" + "x" * 56
    assert one(db, "SELECT count(*) FROM crm_sync.streams WHERE source = 'hs'") == 3 + 2


def test_names_that_exist_are_42710(db, hubspot, mock_factory):
    hs_source(db, hubspot, "hs", timeout_seconds=7)
    other = mock_factory(5, 1, 1)
    with pytest.raises(psycopg.errors.DuplicateObject) as e:
        hs_source(db, other, "hs")
    assert e.value.sqlstate == "42710"
    assert one(db, "SELECT options FROM crm_sync.sources WHERE name = 'hs'") == \
        {"base_url": hubspot.url, "timeout_seconds": 7}, "the first source is left alone"

    assert one(db, "SELECT crm_sync.add_stream('hs', 'Invoice__c')") == "invoice__c"
    for args in [("Invoice__c", None), ("Other__c", "invoice__c"), ("contacts", None), ("Widget__c", "deals")]:
        with pytest.raises(psycopg.errors.DuplicateObject) as e:
            db.execute("SELECT crm_sync.add_stream('hs', %s, %s)", args)
        assert e.value.sqlstate == "42710", args
    assert db.execute("SELECT stream, object FROM crm_sync.streams WHERE source = 'hs' ORDER BY stream").fetchall() == \
        [("companies", "companies"), ("contacts", "contacts"), ("deals", "deals"), ("invoice__c", "Invoice__c")]


def test_unknown_sources_streams_and_jobs_are_42704(db, hubspot):
    for sql in ["SELECT crm_sync.add_stream('nope', 'Invoice__c')",
                "SELECT * FROM crm_sync.sync('nope')",
                "SELECT crm_sync.alter_source('nope', '{}')",
                "SELECT crm_sync.drop_source('nope')",
                "SELECT crm_sync.cancel(987654321)",
                "SELECT crm_sync.wait(987654321, '1 s')"]:
        with pytest.raises(psycopg.errors.UndefinedObject) as e:
            db.execute(sql)
        assert e.value.sqlstate == "42704", sql
    create_source(db, hubspot)
    with pytest.raises(psycopg.errors.UndefinedObject) as e:
        db.execute("SELECT * FROM crm_sync.sync('hs', 'tickets')")
    assert 'source "hs": stream "tickets" does not exist' in str(e.value)
    assert one(db, "SELECT count(*) FROM crm_sync.runs") == 0


def test_an_object_the_crm_does_not_have_fails_its_sync_with_22023(db, hubspot):
    """add_stream does not ask the CRM; the sync of an object it does not have
    is 'an object ... the CRM rejects' (22023)."""
    create_source(db, hubspot)
    assert one(db, "SELECT crm_sync.add_stream('hs', 'widgets')") == "widgets"
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        sync(db, stream="widgets")
    assert 'source "hs", stream "widgets"' in str(e.value)
    assert (last_run(db, stream="widgets")["status"], last_run(db, stream="widgets")["error_sqlstate"]) == \
        ("failed", "22023")


def test_a_query_timing_out_on_every_retry_is_08006(db, salesforce):
    create_sf_source(db, salesforce, max_retries=2)
    salesforce.fault(path_contains="/query", skip=0, count=0, kind="query_timeout")
    salesforce.reset_stats()
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        sync(db, "sf", "account")
    assert e.value.sqlstate == "08006"
    assert 'source "sf", stream "account"' in str(e.value) and "after 3 attempts" in str(e.value), str(e.value)
    stats = salesforce.stats()
    assert stats["status_counts"].get("400") == 3, stats  # the first try and max_retries retries, no more
    r = last_run(db, "sf", "account")
    assert (r["status"], r["error_sqlstate"]) == ("failed", "08006")


def test_a_5xx_on_every_retry_is_08006(db, hubspot):
    create_source(db, hubspot, max_retries=2)
    hubspot.fault(path_contains=CONTACTS, skip=0, count=0, kind="500")
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        sync(db, stream="contacts")
    assert "server error HTTP 500 after 3 attempts" in str(e.value)
    assert hubspot.stats()["status_counts"].get("500") == 3
    r = last_run(db)
    assert (r["status"], r["error_sqlstate"]) == ("failed", "08006")


# ---------------------------------------------------------------------------
# docs/configuration.md: source options


def watermark_ms(conn, stream="contacts"):
    cur = one(conn, "SELECT cursor FROM crm_sync.watermarks WHERE source = 'hs' AND stream = %s", stream)
    return int(one(conn, "SELECT extract(epoch FROM %s::timestamptz) * 1000", cur))


def test_hubspot_lookback_defaults_to_an_hour(db, mock_factory):
    """An incremental run re-reads what changed up to an hour before the
    watermark (inclusive), not earlier; the watermark is where the run's
    search window ended, never later than the run's start."""
    m = mock_factory(30, 1, 1)
    # Every other test sets lookback_seconds 0; here the option is absent.
    db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
               (Jsonb({"base_url": m.url, "retry_base_ms": 10}), Jsonb({"access_token": TOKEN})))
    assert "lookback_seconds" not in one(db, "SELECT options FROM crm_sync.sources WHERE name = 'hs'")
    before_run = int(time.time() * 1000)
    sync(db, stream="contacts")
    m.upsert("contacts", [{"id": "1", "properties": {"firstname": "now"}}])
    started = int(time.time() * 1000)
    sync(db, stream="contacts")
    ended = int(time.time() * 1000)
    w = watermark_ms(db)
    assert before_run <= started <= w <= ended
    assert firstnames(db, [1]) == {"1": "now"}

    # Changed in the CRM with modification times before the watermark, as a
    # lagging search index or a late commit would show them.
    for i, ago_ms in [(2, 1), (3, 120_000), (4, 3_600_000), (5, 3_600_001), (6, 86_400_000)]:
        m.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"ago-{ago_ms}"}}], timestamp_ms=w - ago_ms)
    before = firstnames(db, [5, 6])
    sync(db, stream="contacts")
    assert firstnames(db, [2, 3, 4]) == {"2": "ago-1", "3": "ago-120000", "4": "ago-3600000"}
    assert firstnames(db, [5, 6]) == before, "changes older than the lookback are not read"

    # With the option set to 0, nothing before the watermark is read.
    db.execute("SELECT crm_sync.alter_source('hs', '{\"lookback_seconds\": 0}')")
    w = watermark_ms(db)
    m.upsert("contacts", [{"id": "7", "properties": {"firstname": "ago-1000"}}], timestamp_ms=w - 1000)
    before = firstnames(db, [7])
    sync(db, stream="contacts")
    assert firstnames(db, [7]) == before


def test_lookback_removed_with_null_is_back_to_the_default(db, mock_factory):
    m = mock_factory(10, 1, 1)
    create_source(db, m)  # lookback_seconds 0
    db.execute("SELECT crm_sync.alter_source('hs', '{\"lookback_seconds\": null}')")
    assert "lookback_seconds" not in one(db, "SELECT options FROM crm_sync.sources WHERE name = 'hs'")
    sync(db, stream="contacts")
    w = watermark_ms(db)
    m.upsert("contacts", [{"id": "2", "properties": {"firstname": "in"}}], timestamp_ms=w - 1_800_000)
    m.upsert("contacts", [{"id": "3", "properties": {"firstname": "out"}}], timestamp_ms=w - 5_400_000)
    before = firstnames(db, [3])
    sync(db, stream="contacts")
    assert firstnames(db, [2]) == {"2": "in"}
    assert firstnames(db, [3]) == before


def test_track_deletes_false_neither_lists_nor_marks_archived_records(db, mock_factory):
    m = mock_factory(30, 1, 1)  # one list page of live contacts
    create_source(db, m, track_deletes=False)
    m.reset_stats()
    sync(db, stream="contacts")
    assert calls(m, LIST) == 1, "a full run lists the live page, not the archived list"

    m.archive("contacts", [3])
    m.upsert("contacts", [{"id": "4", "properties": {"firstname": "changed"}}])
    m.reset_stats()
    r = sync(db, stream="contacts")["contacts"]
    assert (r["mode"], r["records_deleted"]) == ("incremental", 0)
    assert calls(m, LIST) == 0, "an incremental run only searches; the list endpoint is the archived list"
    assert calls(m, SEARCH) >= 1
    assert firstnames(db, [4]) == {"4": "changed"}
    assert one(db, "SELECT count(*) FROM hs.contacts WHERE _deleted_at IS NOT NULL") == 0

    # The default (the option removed) lists archived records and marks them.
    db.execute("SELECT crm_sync.alter_source('hs', '{\"track_deletes\": null}')")
    m.reset_stats()
    r = sync(db, stream="contacts")["contacts"]
    assert r["records_deleted"] == 1
    assert calls(m, LIST) == 1
    assert db.execute("SELECT id FROM hs.contacts WHERE _deleted_at IS NOT NULL").fetchall() == [("3",)]


def test_timeout_seconds_fails_a_slow_request_with_08006(db, hubspot):
    create_source(db, hubspot, timeout_seconds=1, max_retries=1)
    sync(db, stream="contacts")
    hubspot.fault(path_contains=CONTACTS + "/search", skip=0, count=0, kind="latency", latency_ms=6000)
    hubspot.reset_stats()
    started = time.monotonic()
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        sync(db, stream="contacts")
    took = time.monotonic() - started
    assert e.value.sqlstate == "08006"
    assert "timed out" in str(e.value) and "POST /crm/v3/objects/contacts/search" in str(e.value), str(e.value)
    assert calls(hubspot, SEARCH) == 2, "the first try and one retry"
    # Two attempts cut at 1 s each; without the timeout each would take 6 s.
    assert took < 5, took
    assert last_run(db)["error_sqlstate"] == "08006"


# ---------------------------------------------------------------------------
# docs/unified-model.md


def test_merge_after_sync_off_leaves_the_model_until_merge(db, mock_factory):
    m = mock_factory(20, 1, 1)
    create_source(db, m)
    db.execute("SET crm_sync.merge_after_sync = off")
    sync(db, stream="contacts")
    assert one(db, "SELECT count(*) FROM hs.contacts") == 20
    assert one(db, "SELECT count(*) FROM crm.contacts") == 0
    assert one(db, "SELECT count(*) FROM crm.identities") == 0
    assert one(db, "SELECT count(*) FROM crm_sync.source_records") == 0
    db.execute("SELECT crm_sync.merge()")
    assert one(db, "SELECT count(*) FROM crm.identities WHERE source = 'hs' AND stream = 'contacts'") == 20
    emails = one(db, "SELECT count(DISTINCT crm_sync.clean_email(email)) FROM hs.contacts")
    assert one(db, "SELECT count(*) FROM crm.contacts") == emails > 0

    # Later changes too wait for merge().
    m.upsert("contacts", [{"id": "1", "properties": {"firstname": "Zelda"}}])
    sync(db, stream="contacts")
    assert firstnames(db, [1]) == {"1": "Zelda"}
    uid = one(db, "SELECT unified_id FROM crm.identities WHERE source = 'hs' AND external_id = '1'")
    assert one(db, "SELECT first_name FROM crm.contacts WHERE id = %s", uid) != "Zelda"
    db.execute("SELECT crm_sync.merge()")
    assert one(db, "SELECT first_name FROM crm.contacts WHERE id = %s", uid) == "Zelda"


@pytest.fixture
def nobody(pg_cluster, connect):
    """A connection as a new role without any grant."""
    role = f"promises_nobody_{uuid.uuid4().hex[:8]}"
    admin = connect()
    admin.execute(f"CREATE ROLE {role} LOGIN")
    c = connect(user=role)
    yield c
    c.close()
    admin.execute(f"DROP ROLE {role}")


CLEANED = [
    # docs/unified-model.md and README.md examples, then the functions' own comments
    ("clean_email(' Jose.Bernerslee12@WONKA-LABS.EXAMPLE.COM ')", "jose.bernerslee12@wonka-labs.example.com"),
    ("clean_email('Ada <Ada@Example.com>')", "ada@example.com"),
    ("clean_email('mailto:ada@example.com')", "ada@example.com"),
    ("clean_email('karen.kowalski17 at acme-systems.example.com')", None),
    ("clean_email('   ')", None),
    ("clean_phone('+1 (415) 480-9106')", "+14154809106"),
    ("clean_phone('415.480.9106', 'US')", "+14154809106"),
    ("clean_phone('415.480.9106')", None),  # no country code and no region
    ("clean_phone('020 7946 0958', 'GB')", "+442079460958"),
    ("clean_phone('n/a', 'US')", None),
    ("clean_domain('https://www.Acme.com/x')", "acme.com"),
    ("clean_domain('https://www.Acme.com/about?x=1')", "acme.com"),
    ("clean_domain('not a domain')", None),
    ("clean_country('U.S.A.')", "US"),
    ("clean_country('Deutschland')", "DE"),
    ("clean_country('England')", "GB"),
    ("clean_country('Untied States')", None),
    ("clean_text(E'  Ada \\t Lovelace\\n')", "Ada Lovelace"),
    ("clean_text(' ')", None),
    ("clean_problem('email', 'karen.kowalski17 at acme-systems.example.com')", "not an email address"),
    ("clean_problem('country', 'Untied States')", "not a country"),
    ("clean_problem('phone', '555-1234', 'US')", "not a valid phone number for region US"),
    ("clean_problem('email', 'ada@example.com')", None),
    ("clean_problem('domain', '')", None),
]


def test_the_cleaners_give_the_documented_values_to_anyone(nobody):
    assert one(nobody, "SELECT has_schema_privilege('crm_sync', 'USAGE')") is True
    got = {sql: one(nobody, f"SELECT crm_sync.{sql}") for sql, _ in CLEANED}
    assert got == dict(CLEANED)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        nobody.execute("SELECT crm_sync.clean_problem('zip', '94107')")
    # Nothing else of the extension is open to this role.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        nobody.execute("SELECT count(*) FROM crm_sync.sources")


# ---------------------------------------------------------------------------
# docs/background-syncs.md: interrupted, cancelled and failed jobs


def paged_jobs(jobs_connect, mock_factory, contacts, **source):
    """A HubSpot mock of `contacts` contacts and its source `hs` in the jobs
    database, whose syncs commit after every list page (batch_size 100);
    returns the mock and a connection."""
    m = mock_factory(contacts, 1, 1)
    c = jobs_connect()
    create_source(c, m, **source)
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 100")  # a commit per list page
    return m, c


def queue(conn, stream="contacts", source="hs"):
    return one(conn, "SELECT crm_sync.sync_async(%s, %s)", source, stream)


def job_runs(conn, job_id):
    cur = conn.execute("SELECT r.* FROM crm_sync.runs r, crm_sync.jobs j "
                       "WHERE j.job_id = %s AND r.run_id = ANY (j.run_ids) ORDER BY r.run_id", (job_id,))
    return [dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()]


def checkpoint(conn, stream="contacts"):
    return conn.execute("SELECT records, run_id, job_id FROM crm_sync.checkpoints "
                        "WHERE source = 'hs' AND stream = %s", (stream,)).fetchone()


def mock_ids(mock, obj="contacts"):
    """The ids of the mock's live records, read through its own list API."""
    ids, after = [], None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = requests.get(f"{mock.url}/crm/v3/objects/{obj}", params={"limit": 100, **({"after": after} if after else {})},
                         headers={"Authorization": "Bearer " + TOKEN}, timeout=10).json()
        ids += [x["id"] for x in r["results"]]
        after = r.get("paging", {}).get("next", {}).get("after")
        if after is None:
            return ids
    raise AssertionError("the mock's list did not end")


def test_a_job_whose_workers_stopped_3_times_fails_with_57P02(jobs_connect, mock_factory):
    """Each attempt's worker is killed (pg_terminate_backend) once it has
    committed a batch: each interrupted run is recorded with 57P02, and the
    third interruption fails the job with 57P02."""
    m, c = paged_jobs(jobs_connect, mock_factory, 3000)
    m.fault(path_contains=CONTACTS, skip=0, count=0, kind="latency", latency_ms=200)
    job_id = queue(c)
    seen = set()
    for attempt in (1, 2, 3):
        wait_until(f"attempt {attempt} to run", lambda: c.execute(
            "SELECT status = 'running' AND attempts = %s FROM crm_sync.jobs WHERE job_id = %s",
            (attempt, job_id)).fetchone()[0], timeout=30)
        run_id = wait_until(f"attempt {attempt} to commit a batch", lambda: (
            (k := checkpoint(c)) and k[2] == job_id and k[1] not in seen and k[1]), timeout=30)
        seen.add(run_id)
        pid = job(c, job_id)["worker_pid"]
        assert one(c, "SELECT pg_terminate_backend(%s) FROM pg_stat_activity "
                      "WHERE pid = %s AND backend_type = 'pg_crm_sync worker'", pid, pid) is True
        # The run the worker left: failed, 57P02.
        run = wait_until(f"the run of attempt {attempt} to be recorded", lambda: c.execute(
            "SELECT status, error_sqlstate, records FROM crm_sync.runs WHERE run_id = %s", (run_id,)).fetchone(),
            timeout=30)
        assert run[:2] == ("failed", "57P02") and run[2] > 0, run
    j = wait_job(c, job_id, timeout=30)
    assert (j["status"], j["error_sqlstate"], j["attempts"]) == ("failed", "57P02", 3), j
    runs = job_runs(c, job_id)
    assert [(r["status"], r["error_sqlstate"]) for r in runs] == [("failed", "57P02")] * 3
    assert {r["run_id"] for r in runs} == seen
    # What each attempt committed stays, once: ids 1..n in list order.
    landed = c.execute("SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts").fetchone()[0]
    assert landed == list(range(1, sum(r["records"] for r in runs) + 1))
    assert len(landed) == j["records"]


def test_a_cancelled_job_resumes_from_its_checkpoint(jobs_connect, mock_factory):
    m, c = paged_jobs(jobs_connect, mock_factory, 1000)
    m.fault(path_contains=CONTACTS, skip=0, count=0, kind="latency", latency_ms=150)
    first = queue(c)
    wait_until("300 records committed", lambda: (k := checkpoint(c)) and k[0] >= 300, timeout=30)
    assert one(c, "SELECT crm_sync.cancel(%s)", first) is True
    j = wait_job(c, first, timeout=30)
    assert j["status"] == "cancelled", j
    [run1] = job_runs(c, first)
    r1 = run1["records"]
    assert (run1["status"], run1["mode"]) == ("cancelled", "full")
    assert 300 <= r1 < 1000 and r1 % 100 == 0, r1
    assert checkpoint(c)[0] == r1
    assert one(c, "SELECT count(*) FROM hs.contacts") == r1, "committed batches stay"

    m.clear_faults()
    m.reset_stats()
    second = queue(c)
    j = wait_job(c, second, timeout=60)
    assert j["status"] == "succeeded", j
    [run2] = job_runs(c, second)
    assert (run2["status"], run2["mode"]) == ("succeeded", "full")
    # The list pages after the checkpoint, then the archived list and the
    # catch-up search of a full run.
    assert m.stats()["by_endpoint"] == {PROPS: 1, LIST: (1000 - r1) // 100 + 1, SEARCH: 1}, r1
    assert run2["api_calls"] == (1000 - r1) // 100 + 3 < FULL_READ_CALLS
    assert r1 + run2["records"] == 1000, (r1, run2["records"])
    # Every record of the mock, each exactly once.
    assert m.stats()["live"]["contacts"] == 1000
    assert c.execute("SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts").fetchone()[0] == \
        list(range(1, 1001))
    landed = {r[0] for r in c.execute("SELECT id FROM hs.contacts").fetchall()}
    assert landed == set(mock_ids(m))
    assert one(c, "SELECT count(*) FROM crm_sync.checkpoints") == 0


def test_a_cancel_signalled_again_while_the_worker_records_it_keeps_the_run(jobs_connect, mock_factory):
    """crm_sync.cancel() signals the worker, and so does the launcher; a user
    may pg_cancel_backend() it too. A cancel arriving while the worker records
    the cancelled run, or ends the job, must not lose the run or leave the job
    running (the launcher would take it for a crashed worker and run it again)."""
    m, c = paged_jobs(jobs_connect, mock_factory, 6000)  # 60 pages: six cancelled jobs do not reach the end
    hammer = jobs_connect()
    m.fault(path_contains=CONTACTS, skip=0, count=0, kind="latency", latency_ms=150)
    hammered = 0
    for attempt in range(6):
        if hammered == 3:
            break
        job_id = queue(c)
        wait_until("a batch committed", lambda: (k := checkpoint(c)) and k[2] == job_id, timeout=30)
        pid = job(c, job_id)["worker_pid"]
        assert one(c, "SELECT crm_sync.cancel(%s)", job_id) is True
        # Signal the worker again and again until it has ended the job.
        deadline = time.monotonic() + 30
        signals = 0
        while time.monotonic() < deadline and hammer.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = %s "
                "AND backend_type = 'pg_crm_sync worker'", (pid,)).fetchone():
            signals += 1
            time.sleep(0.001)
        # On a busy machine the worker may end the job before the first
        # signal: the job must end the same way, and another job is tried.
        hammered += signals > 0
        j = wait_job(c, job_id, timeout=30)
        assert (j["status"], j["error_sqlstate"], j["attempts"], j["detail"]) == \
            ("cancelled", "57014", 1, "cancelled with crm_sync.cancel()"), j
        time.sleep(1.5)  # the launcher's next look: the job is not run again
        assert job(c, job_id)["status"] == "cancelled"
        [run] = job_runs(c, job_id)
        assert (run["status"], run["error_sqlstate"]) == ("cancelled", "57014"), run
        assert run["records"] > 0 and run["records"] % 100 == 0, run
        assert j["records"] == run["records"]
    assert hammered > 0, "no worker was signalled again while it ended its job"
    # What each cancelled job committed is there, once: ids 1..n in list order.
    landed = c.execute("SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts").fetchone()[0]
    assert landed == list(range(1, one(c, "SELECT sum(records)::int FROM crm_sync.runs WHERE status = 'cancelled'") + 1))


def test_a_cancelled_job_whose_worker_stops_before_acting_on_it_is_not_run_again(jobs_connect, mock_factory):
    """A job's cancel was asked for, and its worker stopped (killed, or the
    server went down) before it acted on it: the launcher records the
    interrupted run and ends the job cancelled, rather than queueing it
    again to resume (a second attempt that only ends it)."""
    m, c = paged_jobs(jobs_connect, mock_factory, 3000)
    # The second list page takes 20 s: the worker waits on the CRM.
    m.fault(path_contains=CONTACTS, skip=1, count=1, kind="latency", latency_ms=20000)
    job_id = queue(c)
    run_id = wait_until("a batch committed", lambda: (k := checkpoint(c)) and k[2] == job_id and k[1], timeout=30)
    pid = job(c, job_id)["worker_pid"]
    # The cancel is asked for (crm_sync.cancel() sets this, then signals)
    # and the worker stops before its signal acts. The cancel commits only
    # once the worker is gone (no signal reaches it), after the launcher
    # may have read the job still running and not cancelled: it must look
    # again before it queues the job.
    asker = jobs_connect()
    with asker.transaction():
        asker.execute("UPDATE crm_sync.jobs SET cancel_requested = true WHERE job_id = %s", (job_id,))
        assert one(c, "SELECT pg_terminate_backend(%s)", pid) is True
        wait_until("the worker to stop", lambda: not c.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(), timeout=30)
        time.sleep(1.5)  # the launcher's next look, which waits for this row
    j = wait_job(c, job_id, timeout=30)
    assert (j["status"], j["error_sqlstate"], j["attempts"], j["detail"]) == \
        ("cancelled", "57014", 1, "cancelled with crm_sync.cancel()"), j
    assert f"job {job_id} was cancelled with crm_sync.cancel()" in j["error"], j
    time.sleep(1.5)  # the launcher's next look: the job is not run again
    assert job(c, job_id)["attempts"] == 1
    # The run the worker left is recorded, interrupted, with what it committed.
    [run] = job_runs(c, job_id)
    assert (run["run_id"], run["status"], run["error_sqlstate"], run["records"]) == (run_id, "failed", "57P02", 100), run
    assert j["records"] == 100
    assert one(c, "SELECT count(*) FROM hs.contacts") == 100


def test_deleting_the_checkpoint_makes_the_next_run_start_over(jobs_connect, mock_factory):
    m, c = paged_jobs(jobs_connect, mock_factory, 1000, max_retries=0)
    # List pages 5 on fail: 400 records committed.
    m.fault(path_contains=CONTACTS, skip=4, count=0, kind="500")
    j = wait_job(c, queue(c), timeout=60)
    assert (j["status"], j["error_sqlstate"]) == ("failed", "08006"), j
    assert checkpoint(c)[0] == 400
    assert one(c, "SELECT count(*) FROM hs.contacts") == 400

    # The next run resumes: 3 more pages, then page 8 fails.
    m.clear_faults()
    m.fault(path_contains=CONTACTS, skip=3, count=0, kind="500")
    m.reset_stats()
    j = wait_job(c, queue(c), timeout=60)
    assert j["status"] == "failed", j
    assert calls(m, LIST) == 4, "pages 5 to 7, and 8 failing"
    assert checkpoint(c)[0] == 300 and one(c, "SELECT count(*) FROM hs.contacts") == 700

    c.execute("DELETE FROM crm_sync.checkpoints WHERE source = 'hs' AND stream = 'contacts'")
    m.clear_faults()
    m.reset_stats()
    j = wait_job(c, queue(c), timeout=60)
    assert j["status"] == "succeeded", j
    [run] = job_runs(c, j["job_id"])
    assert run["mode"] == "full"
    assert calls(m, LIST) == 10 + 1, "every live page again, and the archived list"
    assert m.stats()["by_endpoint"] == {PROPS: 1, LIST: 11, SEARCH: 1}
    assert run["api_calls"] == FULL_READ_CALLS
    assert c.execute("SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts").fetchone()[0] == \
        list(range(1, 1001))
