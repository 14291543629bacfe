"""Benchmark: full then incremental sync of large HubSpot, Salesforce, Pipedrive and Dynamics 365 mock datasets.

Prints records/s, MB/s, API calls and the syncing backend's peak memory for
each provider, mode and size: HubSpot contacts (`hs`), Salesforce accounts
through the REST query API (`sf-rest`) and through Bulk API 2.0 (`sf-bulk`),
Pipedrive persons through the declarative `rest` connector (`pd`), Dynamics 365
contacts through the Dataverse Web API with change tracking (`dv`), Zoho
CRM contacts (60 fields: two groups joined by id) through Get Records and
COQL (`zo`), then a side-by-side summary of the full-sync medians.
Run through scripts/bench.sh, which installs and starts everything.
"""

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from conftest import (  # noqa: E402
    DV_CREDENTIALS, DV_TENANT, PD_TOKEN, ZOHO_CREDENTIALS, ZohoMockProc, SF_CLIENT_ID, SF_CLIENT_SECRET, SF_REFRESH_TOKEN, TOKEN, DvMock, PdMock,
    SfMock, free_port, spawn_mock, start_mock,
)

PROVIDERS = ("hubspot", "salesforce", "pipedrive", "dynamics", "zoho")
# Salesforce full-sync modes: label -> extra source options. REST must say
# bulk_api false once the connector has the option (its default threshold
# would pick Bulk at these sizes); Bulk forces Bulk API 2.0 at any size.
SF_MODES = {"sf-rest": {"bulk_api": False}, "sf-bulk": {"bulk_threshold": 0}}
SYNC_SQL = "SELECT records_upserted, bytes_received, api_calls FROM crm_sync.sync(%s, %s)"
REFRESH_SQL = ("SELECT records_read, records_upserted, records_unchanged, bytes_received, api_calls "
               "FROM crm_sync.sync(%s, %s, full_refresh => true)")
RECONCILE_SQL = "SELECT records_seen, records_deleted, records_reread, api_calls FROM crm_sync.reconcile(%s, %s)"


def rss_sampler(pid, stop, out):
    """Peak private (anonymous) memory and peak RSS of a backend, sampled."""
    peak_anon = peak_hwm = 0
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    peak_anon = max(peak_anon, int(line.split()[1]))
                elif line.startswith("VmHWM:"):
                    peak_hwm = max(peak_hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    out["anon_kb"], out["hwm_kb"] = peak_anon, peak_hwm


def run(conn, sql, args=()):
    pid = conn.info.backend_pid
    stop, mem = threading.Event(), {}
    th = threading.Thread(target=rss_sampler, args=(pid, stop, mem))
    th.start()
    t0 = time.perf_counter()
    try:
        rows = conn.execute(sql, args).fetchall()
    finally:
        secs = time.perf_counter() - t0
        stop.set()
        th.join()
    return rows, secs, mem


def line(label, kind, n, what, secs, nbytes, calls, mem):
    return (f"{label:<8}{kind:<11} {n:>9,} {what:<9} {secs:7.2f} s  {n / secs:9,.0f} records/s  "
            f"{nbytes / secs / 1e6:6.1f} MB/s  {calls:>6} API calls  "
            f"peak backend private memory {mem['anon_kb'] / 1024:6.1f} MiB (peak RSS {mem['hwm_kb'] / 1024:.0f} MiB)")


def note(text):
    print(f"{'':<15}{text}", flush=True)


def fresh_db(pg, dbname, batch_size):
    with psycopg.connect(**pg, dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {dbname}")
    db = psycopg.connect(**pg, dbname=dbname, autocommit=True)
    db.execute("CREATE EXTENSION pg_crm_sync")
    # For every session: each measured step runs in a new one.
    db.execute(f"ALTER DATABASE {dbname} SET crm_sync.batch_size = {batch_size}")
    db.execute(f"SET crm_sync.batch_size = {batch_size}")
    return db


def drop_db(pg, dbname):
    with psycopg.connect(**pg, dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")


RESET_MODEL = """TRUNCATE crm_sync.source_records, crm_sync.unified_ids, crm_sync.merge_state,
                         crm_sync.invalid_values, crm.contacts, crm.companies, crm.deals, crm.merged_ids"""
MERGE_SQL = "SELECT sum(records_changed)::int8 FROM crm_sync.merge()"


def measured(pg, dbname, sql, args=(), merge_after_sync=True):
    """`sql` in a new backend (its peak memory is this step's alone)."""
    with psycopg.connect(**pg, dbname=dbname, autocommit=True) as c:
        if not merge_after_sync:
            c.execute("SET crm_sync.merge_after_sync = off")
        if os.environ.get("BENCH_STEPS"):  # the merge's step timings (DEBUG1)
            c.execute("SET client_min_messages = debug1")
            c.add_notice_handler(lambda d: print("   ", d.message_primary) if "merge" in d.message_primary else None)
        return run(c, sql, args)


def full_syncs(pg, db, label, n, what, repeat, create, sync_args, results, expected=None):
    """Per run, into a fresh source and an empty unified model: the default
    path (sync, each stream merged after it), then the sync alone
    (merge_after_sync off) and the merge alone after it. Prints each and the
    medians; records the median default run."""
    runs = {"sync+merge": [], "sync": [], "merge": []}
    dbname = db.info.dbname

    def fresh():
        db.execute("SELECT crm_sync.drop_source(name, drop_data => true) FROM crm_sync.sources")
        db.execute(RESET_MODEL)
        db.execute("CHECKPOINT")
        create()

    for _ in range(repeat):
        for mode in ("sync+merge", "sync"):
            fresh()
            rows, secs, mem = measured(pg, dbname, SYNC_SQL, sync_args, merge_after_sync=(mode == "sync+merge"))
            recs, nbytes, calls = rows[0]
            if expected is None:
                assert recs == n, (recs, n)
            elif recs != expected:
                note(f"WARNING: {recs:,} records upserted, the mock holds {expected:,} live")
            runs[mode].append((recs / secs, recs, secs, nbytes, calls, mem))
            print(line(label, mode, recs, what, secs, nbytes, calls, mem), flush=True)
        rows, secs, mem = measured(pg, dbname, MERGE_SQL)
        merged = rows[0][0] or 0
        runs["merge"].append((merged / secs, merged, secs, 0, 0, mem))
        print(line(label, "merge", merged, what, secs, 0, 0, mem), flush=True)
    for mode, rs in runs.items():
        rs.sort(key=lambda r: r[0])
        med = rs[len(rs) // 2]
        results[(n, label, mode)] = med
    note(f"{n:,} {what}, medians over {repeat} run(s): sync alone "
         f"{results[(n, label, 'sync')][0]:,.0f} records/s, merge alone {results[(n, label, 'merge')][0]:,.0f} "
         f"records/s, both (the default) {results[(n, label, 'sync+merge')][0]:,.0f} records/s")
    # The last run left the stream synced and merged, as the default path
    # leaves it: the incremental run goes on from there.


def incremental_then_reconcile(pg, db, source, stream, n, changed, purged, purge, refresh=False):
    """After `changed` records changed in the mock: the incremental sync
    (asserting it upserted exactly those), the landing table's size, then
    `purge` (which erases `purged` in the mock) and a reconciliation that
    must mark exactly those gone and read none; then, if `refresh`, a full
    refresh, which must find every record unchanged (its WAL printed)."""
    dbname = db.info.dbname
    rows, secs, mem = measured(pg, dbname, SYNC_SQL, (source, stream))
    recs, nbytes, calls = rows[0]
    assert recs == changed, (recs, changed)
    print(line(source, "incr", changed, "changed", secs, nbytes, calls, mem), flush=True)
    size = db.execute("SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))",
                      (f"{source}.{stream}",)).fetchone()[0]
    note(f"landing table {source}.{stream}: {size}")
    purge()
    rows, secs, mem = measured(pg, dbname, RECONCILE_SQL, (source, stream))
    seen, gone, reread, calls = rows[0]
    assert (seen, gone, reread) == (n - len(purged), len(purged), 0), rows[0]
    print(line(source, "reconcile", seen, "ids", secs, 0, calls, mem) + f"  ({gone} marked gone)", flush=True)
    if not refresh:
        return
    # A full refresh of what did not change: read again, written nowhere.
    lsn = db.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    rows, secs, mem = measured(pg, dbname, REFRESH_SQL, (source, stream))
    read, upserted, unchanged, nbytes, calls = rows[0]
    assert upserted == 0 and unchanged >= n - len(purged), rows[0]
    wal = db.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", (lsn,)).fetchone()[0]
    print(line(source, "refresh", read, "unchanged", secs, nbytes, calls, mem)
          + f"  WAL {wal / 1048576:.1f} MiB", flush=True)


def bench_hubspot(pg, n, batch_size, repeat, copy_baseline, results):
    mock = start_mock("--contacts", str(n), "--companies", "10", "--deals", "10")
    dbname = f"bench_hs_{n}"
    try:
        with fresh_db(pg, dbname, batch_size) as db:
            full_syncs(pg, db, "hs", n, "contacts", repeat,
                       lambda: db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
                                          (psycopg.types.json.Jsonb({"base_url": mock.url}),
                                           psycopg.types.json.Jsonb({"access_token": TOKEN}))),
                       ("hs", "contacts"), results)
            changed = max(1, n // 100)
            for start in range(1, changed + 1, 10_000):
                ids = range(start, min(changed, start + 9_999) + 1)
                requests.post(f"{mock.url}/_mock/contacts/upsert", timeout=60,
                              json={"records": [{"id": str(i), "properties": {"firstname": f"b{i}"}} for i in ids]}
                              ).raise_for_status()
            # Reconciliation: list every id, mark the ones the CRM no
            # longer has (0.01% purged, as GDPR erasures), read none.
            purged = [str(i) for i in range(7, n + 1, 10_000)]
            incremental_then_reconcile(
                pg, db, "hs", "contacts", n, changed, purged,
                lambda: requests.post(f"{mock.url}/_mock/contacts/purge", json={"ids": purged},
                                      timeout=60).raise_for_status(),
                refresh=True)
            if copy_baseline:
                copy_ceiling(db, "hs.contacts", n)
        drop_db(pg, dbname)
    finally:
        mock.proc.kill()
        mock.proc.wait()


def copy_ceiling(db, table, n):
    """For scale: PostgreSQL's own COPY of the rows a sync landed in
    `table` into an empty table of the same shape (its indexes too)."""
    path = f"/tmp/crm_sync_bench_{n}.copy"
    db.execute(f"COPY {table} TO '{path}'")
    db.execute(f"CREATE TABLE copy_baseline (LIKE {table} INCLUDING ALL)")
    db.execute("CHECKPOINT")
    t0 = time.perf_counter()
    db.execute(f"COPY copy_baseline FROM '{path}'")
    secs = time.perf_counter() - t0
    Path(path).unlink(missing_ok=True)
    db.execute("DROP TABLE copy_baseline")
    note(f"for scale, COPY of the same {n:,} rows into a table like {table}: "
         f"{secs:.2f} s, {n / secs:,.0f} rows/s")


def bench_pipedrive(pg, n, batch_size, repeat, results):
    """Pipedrive persons through the declarative `rest` connector (the
    shipped spec), the same steps as HubSpot's."""
    mock = spawn_mock(PdMock, "pipedrive", "--token", PD_TOKEN, "--persons", str(n), "--organizations", "10",
                      "--deals", "10", "--activities", "10")
    dbname = f"bench_pd_{n}"
    try:
        with fresh_db(pg, dbname, batch_size) as db:
            full_syncs(pg, db, "pd", n, "persons", repeat,
                       lambda: db.execute("SELECT crm_sync.create_source('pd', 'pipedrive', %s, %s)",
                                          (psycopg.types.json.Jsonb({"base_url": mock.url}),
                                           psycopg.types.json.Jsonb({"api_token": PD_TOKEN}))),
                       ("pd", "persons"), results)
            changed = max(1, n // 100)
            for start in range(1, changed + 1, 10_000):
                ids = list(range(start, min(changed, start + 9_999) + 1))
                requests.post(f"{mock.url}/_mock/pd/persons", timeout=60,
                              json={"ids": ids, "record": {"first_name": "bench"}}).raise_for_status()
            purged = list(range(7, n + 1, 10_000))
            incremental_then_reconcile(
                pg, db, "pd", "persons", n, changed, purged,
                lambda: [requests.post(f"{mock.url}/_mock/pd/persons/{i}/purge", timeout=60).raise_for_status()
                         for i in purged])
        drop_db(pg, dbname)
    finally:
        mock.proc.kill()
        mock.proc.wait()


def bench_dynamics(pg, n, batch_size, repeat, results):
    """Dynamics 365 contacts through the Dataverse Web API: a tracked full
    read (pages of 5,000), then 1% changed read through the delta link and
    a reconciliation listing every id (nothing gone: Dataverse reports
    every delete through change tracking)."""
    mock = spawn_mock(DvMock, "dynamics", "--tenant", DV_TENANT, "--contacts", str(n), "--accounts", "10",
                      "--leads", "10", "--opportunities", "10")
    dbname = f"bench_dv_{n}"
    try:
        with fresh_db(pg, dbname, batch_size) as db:
            full_syncs(pg, db, "dv", n, "contacts", repeat,
                       lambda: db.execute("SELECT crm_sync.create_source('dv', 'dynamics', %s, %s)",
                                          (psycopg.types.json.Jsonb({"environment_url": mock.url,
                                                                     "login_url": mock.url}),
                                           psycopg.types.json.Jsonb(DV_CREDENTIALS))),
                       ("dv", "contact"), results)
            changed = max(1, n // 100)
            mock.admin("POST", "/_mock/dv/upsert_range",
                       {"entity": "contact", "from": 1, "to": changed, "record": {"jobtitle": "bench"}})
            incremental_then_reconcile(pg, db, "dv", "contact", n, changed, [], lambda: None)
        drop_db(pg, dbname)
    finally:
        mock.proc.kill()
        mock.proc.wait()


def bench_zoho(pg, n, batch_size, repeat, results):
    """Zoho CRM contacts (more than 50 fields, so two groups a page joined
    by id; page tokens to 100,000 records, COQL by id beyond), then 1%
    changed read with If-Modified-Since and a reconciliation (COQL ids)
    that finds the 0.01% purged."""
    mock = spawn_mock(ZohoMockProc, "zoho", "--contacts", str(n), "--accounts", "10", "--leads", "10",
                      "--deals", "10", "--daily-credits", "100000000")
    dbname = f"bench_zo_{n}"
    try:
        with fresh_db(pg, dbname, batch_size) as db:
            full_syncs(pg, db, "zo", n, "contacts", repeat,
                       lambda: db.execute("SELECT crm_sync.create_source('zo', 'zoho', %s, %s)",
                                          (psycopg.types.json.Jsonb({"accounts_url": mock.url}),
                                           psycopg.types.json.Jsonb(ZOHO_CREDENTIALS))),
                       ("zo", "contacts"), results)
            changed = max(1, n // 100)
            mock.admin("POST", "/_mock/zoho/upsert_range",
                       {"module": "Contacts", "from": 1, "to": changed, "record": {"Title": "bench"}})
            purged = [mock.id(k) for k in range(7, n + 1, 10_000)]
            incremental_then_reconcile(
                pg, db, "zo", "contacts", n, changed, purged,
                lambda: [mock.purge("Contacts", i) for i in purged])
        drop_db(pg, dbname)
    finally:
        mock.proc.kill()
        mock.proc.wait()


def create_sf(db, mock, extra):
    opts = {"login_url": mock.url, **extra}
    creds = {"client_id": SF_CLIENT_ID, "client_secret": SF_CLIENT_SECRET, "refresh_token": SF_REFRESH_TOKEN}
    db.execute("SELECT crm_sync.create_source('sf', 'salesforce', %s, %s)",
               (psycopg.types.json.Jsonb(opts), psycopg.types.json.Jsonb(creds)))


def sf_accepts(db, mock, extra):
    """Whether the installed connector accepts these options (bulk_api and
    bulk_threshold are new; an older connector rejects them as unknown)."""
    try:
        create_sf(db, mock, extra)
    except psycopg.Error as e:
        msg = str(e)
        if "unknown option" in msg and "bulk_" in msg:
            return False
        raise
    db.execute("SELECT crm_sync.drop_source('sf', drop_data => true)")
    return True


def bench_salesforce(pg, n, batch_size, repeat, modes, copy_baseline, results):
    mock = spawn_mock(SfMock, "salesforce", "--accounts", str(n), "--contacts", "10", "--leads", "10",
                      "--opportunities", "10", "--users", "10")
    try:
        for label in modes:
            # The mock seeds some accounts already deleted (in the recycle
            # bin); a full sync counts those as deleted, not upserted. (An
            # earlier mode's reconciliation hard-deleted a few more.)
            expected = mock.query("SELECT COUNT() FROM Account WHERE IsDeleted = false")["totalSize"]
            dbname = f"bench_{label.replace('-', '_')}_{n}"
            with fresh_db(pg, dbname, batch_size) as db:
                extra = SF_MODES[label]
                if not sf_accepts(db, mock, extra):
                    if label == "sf-bulk":
                        print(f"{label:<8}full   {n:>9,} account   skipped: connector has no bulk_api option yet",
                              flush=True)
                        db.close()
                        drop_db(pg, dbname)
                        continue
                    extra = {}  # no bulk_api option yet: REST is the connector's only mode
                full_syncs(pg, db, label, n, "account", repeat, lambda: create_sf(db, mock, extra),
                           ("sf", "account"), results, expected=expected)
                changed = max(1, n // 100)
                ids = [r[0] for r in db.execute(
                    "SELECT id FROM sf.account WHERE _deleted_at IS NULL ORDER BY id LIMIT %s", (changed,))]
                for start in range(0, len(ids), 10_000):
                    mock.upsert("Account", [{"Id": i, "Name": f"{label} {i}"} for i in ids[start:start + 10_000]])
                rows, secs, mem = measured(pg, dbname, SYNC_SQL, ("sf", "account"))
                recs, nbytes, calls = rows[0]
                if recs != len(ids):
                    note(f"WARNING: incremental synced {recs:,} records, {len(ids):,} changed")
                print(line(label, "incr", recs, "changed", secs, nbytes, calls, mem), flush=True)
                size = db.execute("SELECT pg_size_pretty(pg_total_relation_size('sf.account'))").fetchone()[0]
                note(f"landing table sf.account: {size}")
                # Reconciliation: list every id (REST: 2,000 a call; Bulk
                # API 2.0: one job, 100,000 a results page) and mark the
                # 0.01% hard-deleted in the org meanwhile.
                hard = [r[0] for r in db.execute(
                    "SELECT id FROM sf.account WHERE _deleted_at IS NULL ORDER BY id OFFSET 3 LIMIT %s",
                    (max(1, n // 10_000),))]
                requests.post(f"{mock.url}/_mock/sf/Account/hard_delete", json={"ids": hard},
                              timeout=60).raise_for_status()
                rows, secs, mem = measured(pg, dbname, RECONCILE_SQL, ("sf", "account"))
                seen, gone, reread, calls = rows[0]
                if gone != len(hard) or reread != 0:
                    note(f"WARNING: reconciliation marked {gone:,} gone and read {reread:,} again; "
                         f"{len(hard):,} were hard-deleted")
                print(line(label, "reconcile", seen, "ids", secs, 0, calls, mem)
                      + f"  ({gone} marked gone)", flush=True)
                # Last (the rows are all still there, a few marked gone):
                # its checkpoint and reads would change what the runs above
                # meet.
                if copy_baseline and label == modes[0]:
                    copy_ceiling(db, "sf.account", n)
            drop_db(pg, dbname)
    finally:
        mock.proc.kill()
        mock.proc.wait()


def summary(results, sizes, labels):
    print("summary: medians of full syncs per provider/mode and size (sync alone, merge alone, both: the default)",
          flush=True)
    for n in sizes:
        for label in labels:
            for mode in ("sync", "merge", "sync+merge"):
                r = results.get((n, label, mode))
                if r is None:
                    continue
                rate, recs, secs, nbytes, calls, mem = r
                print(f"{label:<8}{mode:<11}{n:>11,}  {rate:9,.0f} records/s  {secs:7.2f} s  "
                      f"peak backend private memory {mem['anon_kb'] / 1024:6.1f} MiB", flush=True)
        # The declarative connector against the native one, same size, same run.
        for mode in ("sync", "sync+merge"):
            hs, pd = results.get((n, "hs", mode)), results.get((n, "pd", mode))
            if hs and pd:
                print(f"pd/hs   {mode:<11}{n:>11,}  Pipedrive (rest spec) at {100 * pd[0] / hs[0]:.0f}% "
                      f"of HubSpot's (native) records/s", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="full syncs per size (the median is reported)")
    ap.add_argument("--providers", default=",".join(PROVIDERS),
                    help="comma-separated: hubspot, salesforce (Salesforce runs REST and Bulk API 2.0), "
                         "pipedrive (the shipped spec, through the rest connector), dynamics (Dataverse Web API), "
                         "zoho (Zoho CRM API v8)")
    args = ap.parse_args()
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    for p in providers:
        if p not in PROVIDERS:
            ap.error(f"unknown provider {p!r}; choose from {', '.join(PROVIDERS)}")
    sizes = [int(x) for x in args.sizes.split(",")]
    labels = ((["hs"] if "hubspot" in providers else []) + (list(SF_MODES) if "salesforce" in providers else [])
              + (["pd"] if "pipedrive" in providers else []) + (["dv"] if "dynamics" in providers else [])
              + (["zo"] if "zoho" in providers else []))
    base = Path(os.environ.get("CRM_BENCH_DIR", "/tmp/crm_sync_bench"))
    port = free_port()
    subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", str(base), str(port)], check=True)
    pg = {"host": "127.0.0.1", "port": port, "user": "postgres"}
    results = {}
    try:
        names = " and ".join({"hubspot": "HubSpot", "salesforce": "Salesforce", "pipedrive": "Pipedrive",
                              "dynamics": "Dynamics 365", "zoho": "Zoho CRM"}[p]
                             for p in providers)
        mocks = "mocks" if len(providers) > 1 else "mock"
        print(f"pg_crm_sync benchmark: {names} {mocks} and PostgreSQL 15 on this machine ({os.cpu_count()} cores)")
        for i, n in enumerate(sizes):
            if "hubspot" in providers:
                bench_hubspot(pg, n, args.batch_size, args.repeat, i == 0, results)
            if "salesforce" in providers:
                bench_salesforce(pg, n, args.batch_size, args.repeat, list(SF_MODES), i == 0, results)
            if "pipedrive" in providers:
                bench_pipedrive(pg, n, args.batch_size, args.repeat, results)
            if "dynamics" in providers:
                bench_dynamics(pg, n, args.batch_size, args.repeat, results)
            if "zoho" in providers:
                bench_zoho(pg, n, args.batch_size, args.repeat, results)
        summary(results, sizes, labels)
    finally:
        subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", str(base)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
