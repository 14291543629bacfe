"""A background sync commits every batch with a checkpoint. When its worker
dies (SIGKILL, after which the postmaster restarts every process; or an
immediate shutdown), the launcher queues the job again and the next attempt
goes on from the checkpoint: nothing is written twice, nothing is lost, and
the pages already landed are not fetched again."""

import os
import signal

import psycopg
import pytest

from conftest import (create_sf_source, create_source, job, start_cluster, stop_cluster, wait_gone, wait_job,
                      wait_ready, wait_until)

CONTACTS = 200_000
PAGE = 100  # HubSpot's list page size
LIST = "GET /crm/v3/objects/contacts"
FAST_PAGES = 650  # list pages answered at once; later ones are slow, so the kill lands mid-sync
# The test cluster runs with synchronous_commit = off, under which a commit
# other sessions already see can still be lost in a crash. Jobs here commit
# as on a default server, so that a batch seen committed is there after it.
DURABLE_COMMITS = "ALTER DATABASE crm_jobs SET synchronous_commit = on"


def list_calls(mock):
    return mock.stats()["by_endpoint"].get(LIST, 0)


@pytest.mark.parametrize("how", ["sigkill", "immediate"])
def test_an_interrupted_job_resumes_from_its_checkpoint(pg_cluster, jobs_db, jobs_connect, mock_factory, how):
    m = mock_factory(CONTACTS, 10, 10)
    c = jobs_connect()
    create_source(c, m)
    c.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream <> 'contacts'")
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 5000")
    c.execute(DURABLE_COMMITS)
    m.fault(path_contains="/crm/v3/objects/contacts", skip=FAST_PAGES, count=0, kind="latency", latency_ms=300)

    job_id = c.execute("SELECT crm_sync.sync_async('hs', 'contacts')").fetchone()[0]

    def checkpoint():
        r = c.execute("SELECT records, job_id, position FROM crm_sync.checkpoints "
                      "WHERE source = 'hs' AND stream = 'contacts'").fetchone()
        return r if r and r[0] >= 60_000 else None

    seen, cp_job, position = wait_until("a checkpoint past 60,000 records", checkpoint, timeout=120, interval=0.1)
    assert cp_job == job_id and position
    j = job(c, job_id)
    assert j["status"] == "running" and j["attempts"] == 1
    pid = j["worker_pid"]
    assert c.execute("SELECT backend_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == \
        ("pg_crm_sync worker",)

    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
        wait_gone(c)  # every process is being restarted: no second attempt yet
        first_attempt_pages = list_calls(m)
        m.clear_faults()
        wait_ready(pg_cluster, "crm_jobs").close()
    else:
        stop_cluster(pg_cluster, "immediate")
        first_attempt_pages = list_calls(m)
        m.clear_faults()
        start_cluster(pg_cluster)

    c = wait_ready(pg_cluster, "crm_jobs")
    try:
        j = wait_job(c, job_id, timeout=240)
        assert j["status"] == "succeeded", j
        assert j["attempts"] == 2
        assert "interrupt" in (j["detail"] or "").lower(), j["detail"]

        assert c.execute("SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts").fetchone()[0] == \
            list(range(1, CONTACTS + 1))
        runs = c.execute("SELECT status, mode, records FROM crm_sync.runs WHERE run_id = ANY (%s) ORDER BY run_id",
                         (j["run_ids"],)).fetchall()
        assert [(s, mode) for s, mode, _ in runs] == [("failed", "full"), ("succeeded", "full")], runs
        r1, r2 = runs[0][2], runs[1][2]
        assert r1 >= seen, "the interrupted attempt's run counts the rows it committed"
        assert r1 + r2 == CONTACTS, f"{r1} + {r2}: rows written twice or lost"
        assert j["records"] == CONTACTS

        # The second attempt fetched only the pages after the checkpoint (plus
        # the archived list); starting over would have fetched r1 / PAGE more.
        second_attempt_pages = list_calls(m) - first_attempt_pages
        assert second_attempt_pages <= (CONTACTS - r1) // PAGE + 5, \
            f"resumed attempt listed {second_attempt_pages} pages, {r1} records were already landed"
        total = list_calls(m)
        assert total < 1.5 * CONTACTS // PAGE + 60, f"{total} list calls over both attempts"

        assert c.execute("SELECT count(*) FROM crm_sync.checkpoints").fetchone()[0] == 0
        assert c.execute("SELECT cursor FROM crm_sync.watermarks WHERE source = 'hs' AND stream = 'contacts'"
                         ).fetchone() is not None

        # A rerun repeats nothing: it reads nothing, in three calls.
        m.reset_stats()
        again = c.execute("SELECT crm_sync.sync_async('hs', 'contacts')").fetchone()[0]
        j2 = wait_job(c, again, timeout=120)
        assert (j2["status"], j2["records"], j2["attempts"]) == ("succeeded", 0, 1)
        assert c.execute("SELECT mode, records_read, records, api_calls FROM crm_sync.runs WHERE run_id = ANY (%s)",
                         (j2["run_ids"],)).fetchall() == [("incremental", 0, 0, 3)]
        assert m.stats()["requests"] == 3
        assert c.execute("SELECT count(*) FROM hs.contacts").fetchone()[0] == CONTACTS
    finally:
        c.close()


def test_a_job_interrupted_three_times_fails(pg_cluster, jobs_db, jobs_connect, mock_factory):
    """Each attempt is killed once it has committed a batch; the third interruption fails the job."""
    m = mock_factory(20_000, 10, 10)
    c = jobs_connect()
    create_source(c, m)
    c.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream <> 'contacts'")
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 1000")
    c.execute(DURABLE_COMMITS)
    m.fault(path_contains="/crm/v3/objects/contacts", skip=0, count=0, kind="latency", latency_ms=300)
    job_id = c.execute("SELECT crm_sync.sync_async('hs', 'contacts')").fetchone()[0]
    conns = []
    runs_seen = set()
    try:
        for attempt in (1, 2, 3):
            # After a crash the row still says running until the launcher queues it again.
            wait_until(f"attempt {attempt} to run", lambda: c.execute(
                "SELECT status = 'running' AND attempts = %s FROM crm_sync.jobs WHERE job_id = %s",
                (attempt, job_id)).fetchone()[0], timeout=120)

            def committed():
                r = c.execute("SELECT run_id FROM crm_sync.checkpoints WHERE job_id = %s", (job_id,)).fetchone()
                return r if r and r[0] not in runs_seen else None

            run_id = wait_until(f"attempt {attempt} to commit a batch", committed, timeout=120)[0]
            runs_seen.add(run_id)
            pid = job(c, job_id)["worker_pid"]
            assert c.execute("SELECT backend_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == \
                ("pg_crm_sync worker",)
            os.kill(pid, signal.SIGKILL)
            wait_gone(c)
            c = wait_ready(pg_cluster, "crm_jobs")
            conns.append(c)
        j = wait_job(c, job_id, timeout=120)
        assert j["status"] == "failed" and j["attempts"] == 3 and j["error"], j
        runs = c.execute("SELECT status, records, error FROM crm_sync.runs WHERE run_id = ANY (%s) ORDER BY run_id",
                         (j["run_ids"],)).fetchall()
        assert [s for s, _, _ in runs] == ["failed"] * 3
        assert all(r > 0 and "interrupted" in e for _, r, e in runs), runs
        # What each attempt committed stays, once.
        # What each attempt committed stays, once: the list pages come in id
        # order, so the rows are ids 1..n, n the records the runs committed.
        landed = c.execute("SELECT array_agg(id::int ORDER BY id::int) FROM hs.contacts").fetchone()[0]
        assert landed == list(range(1, sum(r for _, r, _ in runs) + 1))
    finally:
        m.clear_faults()
        for x in conns:
            x.close()


def test_a_failed_salesforce_job_resumes_after_its_last_committed_record(jobs_db, jobs_connect, sf_factory):
    """A Salesforce run that fails mid-way keeps its committed batches; the next
    run's query starts after the last committed record (SystemModstamp, Id)
    instead of reading the object again."""
    sf = sf_factory("--accounts", "3000")
    c = jobs_connect()
    create_sf_source(c, sf, batch_size=200, bulk_api=False)
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 500")
    # Query pages after the first are GET .../query/<locator>: the 7th of
    # them (the 8th page, records 1,401-1,600) comes back as an HTML page.
    sf.fault(path_contains="/query/", skip=6, count=1, kind="malformed")
    first = c.execute("SELECT crm_sync.sync_async('sf', 'account', true)").fetchone()[0]
    j = wait_job(c, first)
    assert j["status"] == "failed" and j["error_sqlstate"] == "08P01", j
    records, position = c.execute(
        "SELECT records, position FROM crm_sync.checkpoints WHERE source = 'sf' AND stream = 'account'").fetchone()
    assert records == 1200 and '"reader":"rest"' in position, (records, position)
    assert c.execute("SELECT records FROM crm_sync.runs WHERE run_id = %s", (j["run_ids"][-1],)).fetchone()[0] == 1200
    assert c.execute("SELECT count(*) FROM sf.account").fetchone()[0] == 1200, "committed batches stay"

    sf.reset_stats()
    second = c.execute("SELECT crm_sync.sync_async('sf', 'account', true)").fetchone()[0]
    j = wait_job(c, second)
    assert j["status"] == "succeeded", j
    total = sf.query("SELECT COUNT() FROM Account")["totalSize"]
    assert c.execute("SELECT count(*) FROM sf.account").fetchone()[0] == total, "live and deleted, none lost"
    pages = sum(n for k, n in sf.stats()["by_endpoint"].items() if k.startswith("GET ") and "/query" in k)
    # 1,800 live records left: 9 pages of 200, plus the deletes pass; starting
    # over would have read 15 live pages.
    assert pages <= 11, sf.stats()["by_endpoint"]
    assert c.execute("SELECT count(*) FROM crm_sync.checkpoints").fetchone()[0] == 0
