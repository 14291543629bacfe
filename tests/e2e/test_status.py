"""crm_sync.status: one row per source and stream with its state, last run,
watermark and lag, the failures since the last success, what syncs it now,
when it is scheduled next (crm_sync.schedule() or pg_cron), and its landing
table's row count."""

import datetime as dt

import psycopg
import pytest

from conftest import TOKEN, create_source, sync, wait_job, wait_until


def status(conn, source="hs"):
    cur = conn.execute("SELECT * FROM crm_sync.status WHERE source = %s ORDER BY stream", (source,))
    cols = [d.name for d in cur.description]
    return {r[1]: dict(zip(cols, r)) for r in cur.fetchall()}


def test_status_follows_a_stream_from_never_synced_to_failing_and_back(db, hubspot):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream = 'deals'")
    s = status(db)
    assert sorted(s) == ["companies", "contacts", "deals"]
    assert s["contacts"]["state"] == "never synced"
    assert s["contacts"]["provider"] == "hubspot"
    assert s["contacts"]["last_status"] is None and s["contacts"]["lag"] is None
    assert s["deals"]["state"] == "disabled"

    rows = sync(db)
    s = status(db)
    c = s["contacts"]
    assert c["state"] == "ok"
    assert c["last_status"] == "succeeded" and c["last_mode"] == "full"
    assert c["last_records"] == rows["contacts"]["records_upserted"] == 250
    assert c["watermark"] == rows["contacts"]["watermark"]
    assert dt.timedelta(0) <= c["lag"] < dt.timedelta(minutes=10)
    assert c["error"] is None and c["failures"] is None
    assert s["deals"]["state"] == "disabled" and s["deals"]["last_status"] is None

    # The row count comes from the statistics, which this session flushes
    # when it goes idle.
    def counted():
        return status(db)["contacts"]["landing_rows"] == 250
    wait_until("landing_rows of hs.contacts", counted, timeout=20)

    # Two failed runs: the newest error and how many since the last success.
    hubspot.fault(path_contains="/search", skip=0, count=0, kind="bad_token")
    for n in (1, 2):
        with pytest.raises(psycopg.Error) as e:
            sync(db, stream="contacts")
        assert e.value.sqlstate == "28000"
        c = status(db)["contacts"]
        assert c["state"] == "failing"
        assert c["last_status"] == "failed"
        assert c["error_sqlstate"] == "28000"
        assert c["failures"] == n
        assert 'source "hs", stream "contacts"' in c["error"]
        assert TOKEN not in c["error"]
    # Other streams are not failing.
    assert status(db)["companies"]["state"] == "ok"

    hubspot.clear_faults()
    sync(db, stream="contacts")
    c = status(db)["contacts"]
    assert c["state"] == "ok" and c["last_mode"] == "incremental"
    assert c["error"] is None and c["error_sqlstate"] is None and c["failures"] is None


def next_utc(hour, minute, now):
    """The next hour:minute (UTC) after `now`."""
    t = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return t if t > now else t + dt.timedelta(days=1)


def test_status_shows_schedules_of_the_launcher_and_of_pg_cron(jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    assert all(r["next_run_at"] is None and r["schedule"] is None for r in status(c).values())

    # crm_sync.schedule() queues a job now, then every hour.
    c.execute("SELECT crm_sync.schedule('hs', '1 hour', 'contacts')")
    wait_until("the schedule's first job", lambda: c.execute(
        "SELECT last_job_id FROM crm_sync.schedules WHERE source = 'hs'").fetchone()[0] is not None)
    first = c.execute("SELECT last_job_id FROM crm_sync.schedules").fetchone()[0]
    assert wait_job(c, first)["status"] == "succeeded"
    s = status(c)
    assert s["contacts"]["schedule"] == "every 01:00:00"
    now = c.execute("SELECT now()").fetchone()[0]
    assert dt.timedelta(minutes=55) < s["contacts"]["next_run_at"] - now <= dt.timedelta(hours=1)
    assert s["companies"]["schedule"] is None

    # pg_cron jobs that sync the source (positional or named arguments, one
    # stream or all) show with their next run; other cron jobs do not.
    c.execute("SELECT cron.schedule('hs-companies', '30 3 * * *', "
              "$$SELECT crm_sync.sync_async('hs', 'companies', if_running => 'skip')$$)")
    c.execute("SELECT cron.schedule('hs-all', '0 0 1 1 *', "
              "$$SELECT crm_sync.sync_async(source => 'hs')$$)")
    c.execute("SELECT cron.schedule('other', '* * * * *', $$SELECT 1$$)")
    now = c.execute("SELECT now()").fetchone()[0].astimezone(dt.timezone.utc)
    new_year = dt.datetime(now.year + 1, 1, 1, tzinfo=dt.timezone.utc)
    s = status(c)
    assert s["companies"]["schedule"] == "pg_cron hs-all: 0 0 1 1 *; pg_cron hs-companies: 30 3 * * *"
    assert s["companies"]["next_run_at"] == next_utc(3, 30, now)
    assert s["deals"]["schedule"] == "pg_cron hs-all: 0 0 1 1 *"
    assert s["deals"]["next_run_at"] == new_year
    assert s["contacts"]["schedule"] == "every 01:00:00; pg_cron hs-all: 0 0 1 1 *"
    # An inactive cron job is no schedule.
    c.execute("SELECT cron.alter_job(jobid, active => false) FROM cron.job WHERE jobname = 'hs-all'")
    assert status(c)["deals"]["schedule"] is None


def test_status_shows_the_job_syncing_a_stream(jobs_connect, mock_factory):
    m = mock_factory(3000, 10, 10)
    c = jobs_connect()
    create_source(c, m)
    # Slow pages: the job is still going when the status is read.
    m.fault(path_contains="/crm/v3/objects/contacts", skip=1, count=0, kind="latency", latency_ms=1500)
    job_id = c.execute("SELECT crm_sync.sync_async('hs', 'contacts')").fetchone()[0]

    def syncing():
        r = status(c)["contacts"]
        return r["state"] == "syncing" and r["syncing_pid"] is not None
    wait_until("the job syncing contacts", syncing, timeout=60)
    s = status(c)
    assert s["contacts"]["running_job"] == job_id
    assert s["contacts"]["syncing_records"] >= 0
    assert s["companies"]["state"] == "never synced"
    c.execute("SELECT crm_sync.cancel(%s)", (job_id,))
    assert wait_job(c, job_id)["status"] == "cancelled"
    # A cancel is no failure.
    s = status(c)["contacts"]
    assert s["state"] == "cancelled" and s["last_status"] == "cancelled"
    assert s["error"] is None and s["failures"] is None


def test_each_role_sees_the_schedules_of_its_own_cron_jobs(jobs_connect, hubspot):
    c = jobs_connect()
    create_source(c, hubspot)
    c.execute("CREATE ROLE status_ops LOGIN")
    c.execute("CREATE ROLE status_viewer LOGIN")
    c.execute("GRANT USAGE ON SCHEMA cron TO status_ops, status_viewer")
    c.execute("SELECT crm_sync.grant_access('status_ops', 'read')")
    c.execute("SELECT crm_sync.grant_access('status_viewer', 'read')")
    try:
        c.execute("SET ROLE status_ops")
        c.execute("SELECT cron.schedule('ops-hs', '0 0 1 1 *', $$SELECT crm_sync.sync_async('hs')$$)")
        # A role with the read level sees the status, and its own cron
        # job's schedule (pg_cron's settings are read for it: they are
        # superuser-only).
        s = status(c)
        assert s["contacts"]["schedule"] == "pg_cron ops-hs: 0 0 1 1 *"
        assert s["contacts"]["next_run_at"] is not None
        # Another role does not see it; nor does one without access to
        # pg_cron's schema, which still gets the rest of the status.
        c.execute("SET ROLE status_viewer")
        assert status(c)["contacts"]["schedule"] is None
        c.execute("RESET ROLE")
        c.execute("REVOKE USAGE ON SCHEMA cron FROM status_viewer")
        c.execute("SET ROLE status_viewer")
        s = status(c)
        assert s["contacts"]["schedule"] is None and s["contacts"]["state"] == "never synced"
    finally:
        c.execute("RESET ROLE")
        c.execute("SELECT cron.unschedule(jobid) FROM cron.job WHERE username = 'status_ops'")
        c.execute("REVOKE USAGE ON SCHEMA cron FROM status_ops, status_viewer")
        c.execute("SELECT crm_sync.revoke_access('status_ops')")
        c.execute("SELECT crm_sync.revoke_access('status_viewer')")
        c.execute("DROP ROLE status_ops")
        c.execute("DROP ROLE status_viewer")
