"""Benchmark: full then incremental sync of a large HubSpot mock dataset.

Prints records/s, MB/s and the syncing backend's peak memory for each size.
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
from conftest import TOKEN, free_port, start_mock  # noqa: E402


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
    rows = conn.execute(sql, args).fetchall()
    secs = time.perf_counter() - t0
    stop.set()
    th.join()
    return rows, secs, mem


def line(kind, n, what, secs, nbytes, calls, mem):
    return (f"{kind:<6} {n:>9,} {what:<9} {secs:7.2f} s  {n / secs:9,.0f} records/s  "
            f"{nbytes / secs / 1e6:6.1f} MB/s  {calls:>6} API calls  "
            f"peak backend private memory {mem['anon_kb'] / 1024:6.1f} MiB (peak RSS {mem['hwm_kb'] / 1024:.0f} MiB)")


def bench_size(pg, n, batch_size, repeat, copy_baseline):
    mock = start_mock("--contacts", str(n), "--companies", "10", "--deals", "10")
    try:
        dbname = f"bench_{n}"
        with psycopg.connect(**pg, dbname="postgres", autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {dbname}")
            c.execute(f"CREATE DATABASE {dbname}")
        with psycopg.connect(**pg, dbname=dbname, autocommit=True) as db:
            db.execute("CREATE EXTENSION pg_crm_sync")
            db.execute(f"SET crm_sync.batch_size = {batch_size}")
            rates = []
            for rep in range(repeat):
                db.execute("SELECT crm_sync.drop_source(name, drop_data => true) FROM crm_sync.sources")
                db.execute("CHECKPOINT")
                db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
                           (psycopg.types.json.Jsonb({"base_url": mock.url}),
                            psycopg.types.json.Jsonb({"access_token": TOKEN})))
                rows, secs, mem = run(db, "SELECT records_upserted, bytes_received, api_calls "
                                          "FROM crm_sync.sync('hs', 'contacts')")
                recs, nbytes, calls = rows[0]
                assert recs == n, (recs, n)
                rates.append(n / secs)
                print(line("full", n, "contacts", secs, nbytes, calls, mem), flush=True)
            rates.sort()
            print(f"       full sync of {n:,}: median {rates[len(rates) // 2]:,.0f} records/s over {repeat} runs",
                  flush=True)
            changed = max(1, n // 100)
            for start in range(1, changed + 1, 10_000):
                ids = range(start, min(changed, start + 9_999) + 1)
                requests.post(f"{mock.url}/_mock/contacts/upsert", timeout=60,
                              json={"records": [{"id": str(i), "properties": {"firstname": f"b{i}"}} for i in ids]}
                              ).raise_for_status()
            rows, secs, mem = run(db, "SELECT records_upserted, bytes_received, api_calls FROM crm_sync.sync('hs', 'contacts')")
            recs, nbytes, calls = rows[0]
            assert recs == changed, (recs, changed)
            print(line("incr", changed, "changed", secs, nbytes, calls, mem), flush=True)
            size = db.execute("SELECT pg_size_pretty(pg_total_relation_size('hs.contacts'))").fetchone()[0]
            print(f"       landing table hs.contacts: {size}", flush=True)
            if copy_baseline:
                # For scale: PostgreSQL's own COPY of the same rows into the same table shape.
                path = f"/tmp/crm_sync_bench_{n}.copy"
                db.execute(f"COPY hs.contacts TO '{path}'")
                db.execute("CREATE TABLE copy_baseline (LIKE hs.contacts INCLUDING ALL)")
                db.execute("CHECKPOINT")
                t0 = time.perf_counter()
                db.execute(f"COPY copy_baseline FROM '{path}'")
                secs = time.perf_counter() - t0
                Path(path).unlink(missing_ok=True)
                print(f"       for scale, COPY of the same {n:,} rows into the same table: "
                      f"{secs:.2f} s, {n / secs:,.0f} rows/s", flush=True)
        with psycopg.connect(**pg, dbname="postgres", autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {dbname}")
    finally:
        mock.proc.kill()
        mock.proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="200000,1000000")
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3, help="full syncs per size (the median is reported)")
    args = ap.parse_args()
    base = Path(os.environ.get("CRM_BENCH_DIR", "/tmp/crm_sync_bench"))
    port = free_port()
    subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", str(base), str(port)], check=True)
    pg = {"host": "127.0.0.1", "port": port, "user": "postgres"}
    try:
        print(f"pg_crm_sync benchmark: HubSpot mock and PostgreSQL 15 on this machine ({os.cpu_count()} cores)")
        for i, n in enumerate(int(x) for x in args.sizes.split(",")):
            bench_size(pg, n, args.batch_size, args.repeat, copy_baseline=i == 0)
    finally:
        subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", str(base)], check=False)
        subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
