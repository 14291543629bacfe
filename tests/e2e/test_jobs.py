"""Background syncs: crm_sync.sync_async() queues a job that the launcher runs
in a worker of database crm_jobs (crm_sync.database). Jobs report through
crm_sync.jobs, crm_sync.progress, pg_stat_activity and NOTIFY crm_sync; they
can be waited for, cancelled, limited (crm_sync.max_workers), kept apart per
stream, survive a restart while queued, and be scheduled by crm_sync.schedule()
or pg_cron."""

import json
import threading
import time

import psycopg
import pytest

from conftest import (TOKEN, assert_echoed, assert_no_secret, create_sf_source, create_source, job,
                      reset_max_workers, restart_cluster, seen_texts, set_max_workers, wait_job, wait_notify,
                      wait_until)

HS_CONTACTS = "/crm/v3/objects/contacts"


def queue(conn, source="hs", stream=None, full_refresh=False, if_running="wait"):
    return conn.execute("SELECT crm_sync.sync_async(%s, %s, %s, %s)",
                        (source, stream, full_refresh, if_running)).fetchone()[0]


def wait_sql(conn, job_id, timeout="120 s"):
    return conn.execute("SELECT crm_sync.wait(%s, %s::interval)", (job_id, timeout)).fetchone()[0]


def count(conn, sql, *args):
    return conn.execute(sql, args or None).fetchone()[0]


def job_runs(conn, job_id):
    """The crm_sync.runs rows of a job, as dicts, oldest first."""
    cur = conn.execute("SELECT r.* FROM crm_sync.runs r, crm_sync.jobs j "
                       "WHERE j.job_id = %s AND r.run_id = ANY (j.run_ids) ORDER BY r.run_id", (job_id,))
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def listen(jobs_connect):
    c = jobs_connect()
    c.execute("LISTEN crm_sync")
    return c


def slow(mock, path=HS_CONTACTS, latency_ms=300):
    """Every request whose path contains `path` is answered `latency_ms` late."""
    mock.fault(path_contains=path, skip=0, count=0, kind="latency", latency_ms=latency_ms)


def progress_of(conn, job_id):
    cur = conn.execute("SELECT * FROM crm_sync.progress WHERE job_id = %s", (job_id,))
    cols = [d.name for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def test_a_queued_job_runs_in_the_background_and_notifies(jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    lis = listen(jobs_connect)
    job_id = queue(c)
    assert isinstance(job_id, int)
    j = job(c, job_id)
    assert j["status"] in ("queued", "running")
    assert (j["source"], j["stream"], j["full_refresh"], j["if_running"], j["scheduled_by"]) == \
        ("hs", None, False, "wait", None)
    assert j["queued_at"] is not None

    assert wait_sql(c, job_id) == "succeeded"
    j = job(c, job_id)
    assert j["status"] == "succeeded"
    assert j["queued_at"] <= j["started_at"] <= j["finished_at"]
    assert j["attempts"] == 1
    assert j["error"] is None and j["error_sqlstate"] is None
    # Every record of the mock once (ids 1..250 in its seed).
    assert count(c, "SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts") == list(range(1, 251))
    assert hubspot.stats()["live"]["contacts"] == 250
    assert count(c, "SELECT count(*) FROM hs.companies") == 60
    assert count(c, "SELECT count(*) FROM hs.deals") == 40
    # The worker merged what it landed into the unified model too.
    assert count(c, "SELECT count(*) FROM crm_sync.source_records WHERE source = 'hs'") == 350
    assert count(c, "SELECT count(*) FROM crm.contacts") == count(
        c, "SELECT count(DISTINCT unified_id) FROM crm.identities WHERE entity = 'contact' AND NOT deleted") > 0

    # Its runs are the ordinary crm_sync.runs rows, one per enabled stream.
    runs = job_runs(c, job_id)
    assert sorted(r["stream"] for r in runs) == ["companies", "contacts", "deals"]
    assert all(r["status"] == "succeeded" and r["mode"] == "full" for r in runs)
    assert {r["stream"]: r["records"] for r in runs} == {"contacts": 250, "companies": 60, "deals": 40}
    assert j["records"] == sum(r["records"] for r in runs) == 350
    assert len(j["run_ids"]) == 3

    n = wait_notify(lis, job_id)
    assert n["status"] == "succeeded"
    assert n["source"] == "hs" and n["stream"] is None
    assert n["records"] == 350
    assert sorted(n["run_ids"]) == sorted(j["run_ids"])
    assert n["error"] is None
    # Waiting for a job that already ended answers at once with how it ended.
    assert wait_sql(c, job_id, "1 s") == "succeeded"

    # A second job of the same source is incremental and writes nothing new.
    hubspot.reset_stats()
    again = queue(c, stream="contacts")
    assert wait_sql(c, again) == "succeeded"
    runs = job_runs(c, again)
    assert [(r["stream"], r["mode"], r["records_read"], r["records"], r["records_unchanged"]) for r in runs] == \
        [("contacts", "incremental", 0, 0, 0)]
    # Properties, one search page, one archived-list page: as the mock counted.
    assert runs[0]["api_calls"] == hubspot.stats()["requests"] == 3
    assert job(c, again)["records"] == 0


def test_a_running_job_shows_in_pg_stat_activity_and_progress(jobs_connect, mock_factory):
    c = jobs_connect()
    m = mock_factory(3000, 10, 10)
    create_source(c, m)
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 200")
    slow(m, latency_ms=200)  # 30 list pages of 100 contacts, each 200 ms late
    job_id = queue(c, stream="contacts")

    name = f"pg_crm_sync job {job_id}: hs.contacts"
    worker = wait_until(f"a worker named {name!r}", lambda: c.execute(
        "SELECT pid, backend_type FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone())
    assert worker[1] == "pg_crm_sync worker"
    assert count(c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_crm_sync launcher'") == 1
    assert job(c, job_id)["worker_pid"] == worker[0]

    first = wait_until("progress with records", lambda: (p := progress_of(c, job_id)) and p["records"] > 0 and p)
    second = wait_until("more records in progress",
                        lambda: (p := progress_of(c, job_id)) and p["records"] > first["records"] and p)
    for p in (first, second):
        assert (p["pid"], p["source"], p["stream"], p["mode"]) == (worker[0], "hs", "contacts", "full")
        assert p["run_id"] is not None and p["started_at"] is not None and p["updated_at"] is not None
        assert p["api_calls"] > 0 and p["bytes"] > 0 and p["pages"] > 0
        assert p["records_per_second"] is None or p["records_per_second"] >= 0
    assert second["pages"] >= first["pages"] and second["bytes"] > first["bytes"]

    assert wait_sql(c, job_id) == "succeeded"
    assert count(c, "SELECT count(*) FROM hs.contacts") == 3000
    assert progress_of(c, job_id) is None
    wait_until("the worker's name to go", lambda: not c.execute(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone(), timeout=30)


def test_a_foreground_sync_shows_in_progress_without_a_job(jobs_connect, mock_factory):
    c = jobs_connect()
    m = mock_factory(2000, 10, 10)
    create_source(c, m)
    slow(m, latency_ms=200)
    fg = jobs_connect()
    pid = fg.info.backend_pid
    box = {}
    th = threading.Thread(target=lambda: box.setdefault(
        "rows", fg.execute("SELECT stream, status FROM crm_sync.sync('hs', 'contacts')").fetchall()))
    th.start()
    try:
        p = wait_until("a progress row of the foreground sync", lambda: c.execute(
            "SELECT job_id, source, stream, records, api_calls FROM crm_sync.progress WHERE pid = %s",
            (pid,)).fetchone())
        assert p[0] is None and p[1:3] == ("hs", "contacts")
    finally:
        th.join(timeout=120)
    assert box["rows"] == [("contacts", "succeeded")]
    assert count(c, "SELECT count(*) FROM crm_sync.progress WHERE pid = %s", pid) == 0


def test_progress_reports_percent_done_where_the_crm_reports_a_total(jobs_connect, sf_factory):
    c = jobs_connect()
    sf = sf_factory("--accounts", "3000")
    create_sf_source(c, sf, batch_size=200, bulk_api=False)
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 200")
    slow(sf, path="/query/", latency_ms=150)  # 15 pages of 200 accounts
    job_id = queue(c, "sf", "account", full_refresh=True)

    def with_total():
        p = progress_of(c, job_id)
        return p if p and p["total"] is not None and p["records"] > 0 else None

    first = wait_until("progress with a total", with_total)
    second = wait_until("progress moving on",
                        lambda: (p := with_total()) and p["records"] > first["records"] and p)
    for p in (first, second):
        assert 2900 < p["total"] <= 3000, p  # the mock seeds a few accounts already deleted
        assert 0 <= p["percent_done"] <= 100, p
        assert (p["source"], p["stream"]) == ("sf", "account")
    assert second["percent_done"] > first["percent_done"]
    # Rate and time left are known while a total is: the rate is records
    # over the time the run has taken, the time left what remains at it.
    for p in (first, second):
        took = (p["updated_at"] - p["started_at"]).total_seconds()
        assert took > 0, p
        assert p["records_per_second"] == pytest.approx(p["records"] / took, rel=0.01), p
        assert p["eta"] is not None, p
        assert p["eta"].total_seconds() == pytest.approx((p["total"] - p["records"]) / p["records_per_second"],
                                                         rel=0.05, abs=0.2), p

    assert wait_sql(c, job_id) == "succeeded"
    assert progress_of(c, job_id) is None
    assert count(c, "SELECT count(*) FROM sf.account") >= second["total"]


def test_cancel_a_running_and_a_queued_job(pg_cluster, jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    # Every page is answered 20 s late: only the cancel signal, not the
    # next page or batch, can end the job within a second or two.
    slow(hubspot, latency_ms=20_000)
    job_id = queue(c, stream="contacts")
    wait_job(c, job_id, statuses=("running",))
    wait_until("the run to wait on its first page", lambda: progress_of(c, job_id) and any(
        "/crm/v3/objects/contacts" in k for k in hubspot.stats()["by_endpoint"]))
    t0 = time.monotonic()
    assert c.execute("SELECT crm_sync.cancel(%s)", (job_id,)).fetchone()[0] is True
    assert wait_sql(c, job_id, "30 s") == "cancelled"
    took = time.monotonic() - t0
    assert took < 2.5, f"cancel took {took:.1f} s (the README promises about a second)"
    j = job(c, job_id)
    assert j["status"] == "cancelled" and j["finished_at"] is not None
    assert [r["status"] for r in job_runs(c, job_id)] == ["cancelled"]
    assert progress_of(c, job_id) is None
    # It has already ended.
    assert c.execute("SELECT crm_sync.cancel(%s)", (job_id,)).fetchone()[0] is False

    hubspot.clear_faults()
    runs_before = count(c, "SELECT count(*) FROM crm_sync.runs")
    set_max_workers(pg_cluster, 0)
    try:
        queued = queue(c, stream="deals")
        assert wait_sql(c, queued, "1 s") == "queued"
        assert c.execute("SELECT crm_sync.cancel(%s)", (queued,)).fetchone()[0] is True
        assert wait_sql(c, queued, "30 s") == "cancelled"
        j = job(c, queued)
        assert j["status"] == "cancelled" and j["started_at"] is None
        assert not j["run_ids"]
        assert count(c, "SELECT count(*) FROM crm_sync.runs") == runs_before
        assert c.execute("SELECT crm_sync.cancel(%s)", (queued,)).fetchone()[0] is False
    finally:
        reset_max_workers(pg_cluster)

    with pytest.raises(psycopg.errors.UndefinedObject):
        c.execute("SELECT crm_sync.cancel(987654321)")


def test_max_workers_limits_jobs_running_at_once(pg_cluster, jobs_connect, mock_factory):
    c = jobs_connect()
    for i in range(3):
        m = mock_factory()
        slow(m, latency_ms=300)
        create_source(c, m, name=f"hs{i}")
    set_max_workers(pg_cluster, 1)
    try:
        ids = [queue(c, f"hs{i}", "contacts") for i in range(3)]
        most = 0
        deadline = time.monotonic() + 120
        while True:
            statuses = dict(c.execute("SELECT job_id, status FROM crm_sync.jobs WHERE job_id = ANY (%s)",
                                      (ids,)).fetchall())
            most = max(most, sum(s == "running" for s in statuses.values()))
            if all(s not in ("queued", "running") for s in statuses.values()):
                break
            assert time.monotonic() < deadline, f"jobs still going after 120 s: {statuses}"
            time.sleep(0.2)
        assert most == 1
        jobs = sorted((job(c, i) for i in ids), key=lambda j: j["started_at"])
        assert [j["status"] for j in jobs] == ["succeeded"] * 3
        for before, after in zip(jobs, jobs[1:]):
            assert after["started_at"] >= before["finished_at"], "two jobs ran at once"
        for i in range(3):
            assert count(c, f"SELECT count(*) FROM hs{i}.contacts") == 250
    finally:
        reset_max_workers(pg_cluster)


def test_one_stream_is_synced_by_one_job_at_a_time(jobs_connect, mock_factory):
    c = jobs_connect()
    m = mock_factory(2000, 10, 10)
    create_source(c, m)
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 200")
    slow(m, latency_ms=300)  # 20 list pages: several seconds
    a = queue(c, stream="contacts")
    wait_job(c, a, statuses=("running",))
    b = queue(c, stream="contacts", if_running="wait")
    skipped = queue(c, stream="contacts", if_running="skip")

    j = wait_job(c, skipped)
    assert j["status"] == "skipped"
    assert str(a) in (j["detail"] or ""), j
    assert j["started_at"] is None or not j["run_ids"]

    # B waits for A, and says so.
    jb = wait_until("job B to say why it waits",
                    lambda: (x := job(c, b)) and x["status"] == "queued" and x["detail"] and x)
    assert str(a) in jb["detail"]
    assert job(c, a)["status"] == "running"
    # "running" is set when A's worker starts; it takes the stream's lock a
    # moment later, once connected.
    wait_until("job A's worker to hold the stream's lock", lambda: count(
        c, "SELECT count(*) FROM pg_locks l JOIN crm_sync.jobs j ON l.pid = j.worker_pid "
           "WHERE j.job_id = %s AND l.locktype = 'advisory' AND l.granted", a))

    # A foreground sync of the same stream is refused; reading the table is not blocked.
    with pytest.raises(psycopg.errors.LockNotAvailable):
        c.execute("SELECT * FROM crm_sync.sync('hs', 'contacts')")
    reader = jobs_connect()
    reader.execute("SET lock_timeout = '2s'")
    wait_until("hs.contacts to exist", lambda: count(reader, "SELECT to_regclass('hs.contacts') IS NOT NULL"))
    # A reader sees A's committed batches (of 200 records) and never a part of one.
    seen = count(reader, "SELECT count(*) FROM hs.contacts")
    assert seen % 200 == 0 and seen < 2000, seen
    assert job(c, a)["status"] == "running", "the reads above must happen while A writes"

    ja, jb = wait_job(c, a), wait_job(c, b)
    assert (ja["status"], jb["status"]) == ("succeeded", "succeeded")
    assert jb["started_at"] >= ja["finished_at"]
    assert count(c, "SELECT count(*) FROM hs.contacts") == 2000


def test_queued_jobs_survive_a_restart(pg_cluster, jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    set_max_workers(pg_cluster, 0)
    try:
        job_id = queue(c)
        assert wait_sql(c, job_id, "1 s") == "queued"  # wait() times out with the current status
        j = job(c, job_id)
        assert j["status"] == "queued" and j["started_at"] is None
        c.execute("ALTER SYSTEM RESET crm_sync.max_workers")
        restart_cluster(pg_cluster, "fast")
        c = jobs_connect()
        j = wait_job(c, job_id)
        assert j["status"] == "succeeded"
        assert count(c, "SELECT count(*) FROM hs.contacts") == 250
        assert count(c, "SELECT count(*) FROM hs.deals") == 40
    finally:
        reset_max_workers(pg_cluster)


def test_schedule_queues_jobs_until_unscheduled(jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    c.execute("SELECT crm_sync.schedule('hs', '1 hour')")
    c.execute("SELECT crm_sync.schedule('hs', '1 second')")  # replaces the first
    rows = c.execute("SELECT source, stream, every, next_run_at IS NOT NULL FROM crm_sync.schedules").fetchall()
    assert len(rows) == 1 and rows[0][0] == "hs" and rows[0][1] is None
    assert rows[0][2].total_seconds() == 1 and rows[0][3]

    def scheduled_successes():
        n = count(c, "SELECT count(*) FROM crm_sync.jobs WHERE scheduled_by = 'schedule' AND status = 'succeeded'")
        return n >= 2

    wait_until("two scheduled jobs to succeed", scheduled_successes, timeout=90)
    kinds = c.execute("SELECT DISTINCT source, stream, if_running FROM crm_sync.jobs "
                      "WHERE scheduled_by = 'schedule'").fetchall()
    assert kinds == [("hs", None, "skip")]
    last = count(c, "SELECT last_job_id FROM crm_sync.schedules WHERE source = 'hs'")
    assert job(c, last)["scheduled_by"] == "schedule"
    assert count(c, "SELECT count(*) FROM hs.contacts") == 250

    assert c.execute("SELECT crm_sync.unschedule('hs')").fetchone()[0] is True
    stopped_at = count(c, "SELECT clock_timestamp()")
    assert count(c, "SELECT count(*) FROM crm_sync.schedules") == 0
    time.sleep(3)
    late = count(c, "SELECT count(*) FROM crm_sync.jobs WHERE scheduled_by = 'schedule' "
                    "AND queued_at > %s + interval '1 second'", stopped_at)
    assert late == 0, "jobs were queued after unschedule()"
    assert c.execute("SELECT crm_sync.unschedule('hs')").fetchone()[0] is False
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        c.execute("SELECT crm_sync.schedule('hs', '0 seconds')")
    assert count(c, "SELECT count(*) FROM crm_sync.schedules") == 0


def test_pg_cron_queues_a_job(jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    cron_id = count(c, "SELECT cron.schedule('hs-sync', '* * * * *', "
                       "$$SELECT crm_sync.sync_async('hs', if_running => 'skip')$$)")
    try:
        # pg_cron 1.4 runs jobs at the start of a minute.
        job_id = wait_until("pg_cron to queue a job", lambda: count(
            c, "SELECT min(job_id) FROM crm_sync.jobs WHERE source = 'hs'"), timeout=130, interval=1)
        j = wait_job(c, job_id)
        assert j["status"] == "succeeded" and j["scheduled_by"] is None and j["if_running"] == "skip"
        assert count(c, "SELECT count(*) FROM hs.contacts") == 250
        details = wait_until("cron.job_run_details to show the run", lambda: c.execute(
            "SELECT status, return_message FROM cron.job_run_details WHERE jobid = %s AND status <> 'running' "
            "ORDER BY runid LIMIT 1", (cron_id,)).fetchone(), timeout=30)
        assert details[0] == "succeeded", details
    finally:
        c.execute("SELECT cron.unschedule(%s)", (cron_id,))


def test_errors_of_sync_async_and_of_a_failing_job(pg_cluster, jobs_connect, db, hubspot):
    c = jobs_connect()
    with pytest.raises(psycopg.errors.UndefinedObject):
        queue(c, "nope")
    create_source(c, hubspot)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        queue(c, if_running="sometimes")
    assert count(c, "SELECT count(*) FROM crm_sync.jobs") == 0

    # Only crm_sync.database runs jobs; elsewhere sync_async says what to configure.
    create_source(db, hubspot)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
        queue(db)
    said = str(e.value) + " " + (e.value.diag.message_hint or "")
    assert "crm_sync.database" in said, said

    wrong = "pat-na1-wrong-token-0000"
    c.execute("SELECT crm_sync.alter_source('hs', credentials => %s)",
              (psycopg.types.json.Jsonb({"access_token": wrong}),))
    # The 401 quotes the token back.
    hubspot.fault(path_contains="/crm/v3/", count=0, kind="echo_secrets", status=401)
    lis = listen(jobs_connect)
    job_id = queue(c, stream="contacts")
    assert wait_sql(c, job_id) == "failed"
    j = job(c, job_id)
    assert j["error_sqlstate"] == "28000"
    assert 'source "hs"' in j["error"] and 'stream "contacts"' in j["error"], j["error"]
    for text in (j["error"], j["detail"] or ""):
        assert wrong not in text and TOKEN not in text
    assert [(r["status"], r["error_sqlstate"]) for r in job_runs(c, job_id)] == [("failed", "28000")]
    n = wait_notify(lis, job_id)
    assert n["status"] == "failed" and n["error"]
    assert_echoed(hubspot, bearer=wrong)
    texts = seen_texts(c, pg_cluster)
    texts.update(job_error=j["error"], job_detail=j["detail"] or "", notify=json.dumps(n))
    assert_no_secret(texts, [wrong, TOKEN])


def test_a_cancel_does_not_undo_a_finished_streams_merge(jobs_connect, hubspot):
    """A cancel that comes while a job merges the stream it has just synced
    waits for that stream to commit: the merge is not rolled back, and the
    job does not report it failed."""
    c = jobs_connect()
    create_source(c, hubspot)
    # A mapping that takes its time: the merge after the sync of the 250
    # contacts runs for a few seconds.
    c.execute("INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source) "
              "VALUES ('hubspot', 'contacts', 'contact', 'title', "
              "$$pg_sleep(0.01)::text || (r._raw->'properties'->>'jobtitle')$$, 'hs')")
    job_id = queue(c, "hs", "contacts")
    wait_until("the job merging", lambda: count(
        c, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_crm_sync worker' "
           "AND wait_event = 'PgSleep'") > 0)
    c.execute("SELECT crm_sync.cancel(%s)", (job_id,))
    j = wait_job(c, job_id)
    assert "merging into the unified model failed" not in (j["detail"] or ""), j
    assert count(c, "SELECT count(*) FROM crm.identities WHERE source = 'hs' AND stream = 'contacts'") == 250
    assert count(c, "SELECT count(*) FROM crm_sync.runs WHERE stream = 'contacts' AND status = 'succeeded'") == 1


def test_jobs_calling_one_account_share_its_request_budget(jobs_connect, mock_factory):
    """Two workers sync two sources of one HubSpot account (same token) at
    once, the account allowing 6 calls a second and no retries: the
    budget in shared memory takes their calls in turn, so neither runs into
    a 429 (each alone could only see the other's calls after the fact)."""
    c = jobs_connect()
    m = mock_factory(1000, 5, 5)
    m.admin("POST", "/_mock/limits", {"ten_secondly": 6, "interval_ms": 1000})
    create_source(c, m, name="hs1", max_retries=0)
    create_source(c, m, name="hs2", max_retries=0)
    ids = [queue(c, s, "contacts") for s in ("hs1", "hs2")]
    for i in ids:
        assert wait_sql(c, i) == "succeeded", job(c, i)
    assert m.stats()["status_counts"].get("429", 0) == 0
    assert count(c, "SELECT count(*) FROM hs1.contacts") == count(c, "SELECT count(*) FROM hs2.contacts") == 1000
    runs = [r for i in ids for r in job_runs(c, i)]
    assert sum(r["api_calls"] for r in runs) >= 26
