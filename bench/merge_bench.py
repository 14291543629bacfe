"""Benchmark: merge contacts from HubSpot and Salesforce into crm.contacts.

Lands N HubSpot contacts and N Salesforce contacts straight into their
landing tables (shaped as the syncs land them; the syncs themselves are
measured by bench.py), 30% of them the same people written differently
(case, spaces, phone formats). Then times crm_sync.merge(full => true),
crm_sync.merge() after 1% of the records of each side changed a title
(values alone), again after another 1% changed their emails (keys:
linked again), and after a third 1% changed titles once VACUUM ANALYZE and
a checkpoint (autovacuum's and the checkpointer's work after a first
merge) are done. Prints records/s and the backend's peak memory for each.
With --floor, last, also what the first merge's writes cost at the least:
the model's staged records and unified rows, copied out and loaded back
with COPY into empty copies of their tables, beside the first merge's time.
Run through scripts/bench_merge.sh (--size 200000 by default).
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from bench import run  # noqa: E402
from conftest import free_port  # noqa: E402

LANDING = """
CREATE TABLE {s}.{t} (id text PRIMARY KEY, _raw jsonb NOT NULL, _updated_at timestamptz,
                      _deleted_at timestamptz, _synced_at timestamptz DEFAULT now(), _run_id bigint);
CREATE INDEX ON {s}.{t} (_run_id);
"""

HS_ROWS = """
INSERT INTO hs.contacts (id, _raw, _updated_at, _run_id)
SELECT i::text,
       jsonb_build_object('id', i::text, 'properties', jsonb_build_object(
           'email', CASE WHEN i %% 10 < 3 THEN ' Person.' || i || '@Example.COM ' ELSE 'hs' || i || '@example.com' END,
           'firstname', 'First' || i, 'lastname', 'Last' || i,
           'phone', '(415) 555-' || lpad((i %% 10000)::text, 4, '0'),
           'company', 'Company ' || (i %% 5000), 'jobtitle', 'Title ' || (i %% 40),
           'country', (ARRAY['USA', 'United States', 'U.S.', 'Germany', 'UK'])[1 + i %% 5],
           'lifecyclestage', 'lead', 'createdate', '2024-01-01T00:00:00Z')),
       timestamptz '2024-06-01' + i * interval '1 second', 1
  FROM generate_series(1, %(n)s) i
"""

SF_ROWS = """
INSERT INTO sf.contact (id, _raw, _updated_at, _run_id)
SELECT '003' || lpad(i::text, 15, '0'),
       jsonb_build_object('Id', '003' || lpad(i::text, 15, '0'),
           'Email', CASE WHEN i %% 10 < 3 THEN 'person.' || i || '@example.com' ELSE 'sf' || i || '@example.org' END,
           'FirstName', CASE WHEN i %% 10 < 3 THEN 'First' || i ELSE 'Sf' || i END, 'LastName', 'Last' || i,
           'Phone', '+1 415 555 ' || lpad((i %% 10000)::text, 4, '0'),
           'Title', 'Role ' || (i %% 30), 'MailingCountry', 'US',
           'CreatedDate', '2023-01-01T00:00:00.000+0000'),
       timestamptz '2024-07-01' + i * interval '1 second', 1
  FROM generate_series(1, %(n)s) i
"""


def session(port):
    """A new connection (a fresh backend: its peak memory is this step's
    alone), printing the merge's step timings (DEBUG1)."""
    m = psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="bench", autocommit=True)
    m.execute("SET client_min_messages = debug1")
    m.add_notice_handler(lambda d: print("   ", d.message_primary) if "merge" in d.message_primary else None)
    return m


def model_md5(c):
    """md5 of every row of the unified model (ids, values, sources, lineage,
    whether deleted) and of the merged-id map, times left out: equal md5s,
    identical models."""
    q = """SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM
             (SELECT (to_jsonb(t) - 'merged_at' - 'deleted_at'
                      || jsonb_build_object('deleted', t.deleted_at IS NOT NULL))::text AS x FROM {t} t) s"""
    parts = [c.execute(q.format(t=t)).fetchone()[0] for t in ("crm.contacts", "crm.companies", "crm.deals")]
    parts += c.execute("SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM "
                       "(SELECT concat_ws('/', entity, old_id, new_id) AS x FROM crm.merged_ids) s").fetchone()
    return hashlib.md5(",".join(parts).encode()).hexdigest()[:16]


def incremental(c, port, k, label, width, after):
    """crm_sync.merge() in a new backend after 1% of each side (k records)
    changed: its time, records and rows, peak memory, then the model's md5."""
    m = session(port)
    rows, secs, mem = run(m, "SELECT entity, records_changed, unified_rows_changed FROM crm_sync.merge()")
    m.close()
    staged = sum(r[1] for r in rows)
    print(f"  {label}{secs:{width}.2f} s  {staged:,} records changed ({2 * k:,} expected), "
          f"{sum(r[2] for r in rows):,} unified rows rewritten  peak private memory {mem['anon_kb'] / 1024:.0f} MiB")
    print(f"  model md5 after {after}: {model_md5(c)}")


def floor(c, base, merge_secs):
    """What a first merge's writes cost at the least, on this machine now:
    the model's two tables (its staged records and unified rows, as the
    benchmark leaves them: as many as the first merge wrote), copied out,
    then COPY'd (PostgreSQL's bulk load) back into empty copies of them,
    with the same indexes and storage options, and without some indexes or
    columns for comparison. Each load is timed once, after a checkpoint;
    the copies are dropped after."""
    staged = f"{base}/floor_staged.copy"
    model = f"{base}/floor_model.copy"
    # The staged records' columns but vals, and vals' field in the COPY
    # text (from the table itself: a column added later stays counted).
    cols = [r[0] for r in c.execute(
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = 'crm_sync.source_records'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum").fetchall()]
    field = cols.index("vals") + 1
    narrow = ", ".join(col for col in cols if col != "vals")
    without_vals = f"-f1-{field - 1},{field + 1}-" if field > 1 else f"-f{field + 1}-"

    def like(table, indexes=True):
        opts = c.execute("SELECT array_to_string(reloptions, ', ') FROM pg_class WHERE oid = %s::regclass",
                         (table,)).fetchone()[0]
        return (f"CREATE TABLE public.floor_t (LIKE {table}{' INCLUDING ALL' if indexes else ''})"
                + (f" WITH ({opts})" if opts else ""))

    records = c.execute("SELECT count(*) FROM crm_sync.source_records").fetchone()[0]
    rows = c.execute("SELECT count(*) FROM crm.contacts").fetchone()[0]
    c.execute(f"COPY crm_sync.source_records TO '{staged}'")
    c.execute(f"COPY crm.contacts TO '{model}'")
    loads = [
        (f"{records:,} staged records, with every index of crm_sync.source_records",
         [like("crm_sync.source_records")], f"COPY public.floor_t FROM '{staged}'"),
        (f"{records:,} staged records, no index (the heap alone)",
         [like("crm_sync.source_records", indexes=False)], f"COPY public.floor_t FROM '{staged}'"),
        (f"{records:,} staged records without their values (vals), with every index",
         [like("crm_sync.source_records"), "ALTER TABLE public.floor_t DROP COLUMN vals"],
         f"COPY public.floor_t ({narrow}) FROM PROGRAM 'cut {without_vals} {staged}'"),
        (f"{rows:,} unified rows, with the primary key of crm.contacts",
         [like("crm.contacts")], f"COPY public.floor_t FROM '{model}'"),
    ]
    took = []
    for what, create, load in loads:
        for sql in create:
            c.execute(sql)
        c.execute("CHECKPOINT")
        t0 = time.perf_counter()
        c.execute(load)
        took.append(time.perf_counter() - t0)
        c.execute("DROP TABLE public.floor_t")
        print(f"  floor: COPY of the {what}: {took[-1]:6.2f} s")
    print(f"  floor: the model's two tables by COPY: {took[0] + took[3]:.2f} s, "
          f"against the first merge's {merge_secs:.2f} s")
    for f in (staged, model):
        # (In the cluster's directory, which goes with it unless --keep.)
        try:
            Path(f).unlink(missing_ok=True)
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=200_000, help="contacts per source")
    ap.add_argument("--keep", action="store_true", help="leave the cluster running (its port is printed)")
    ap.add_argument("--floor", action="store_true",
                    help="after the first merge, time COPY of what it wrote into copies of its tables")
    args = ap.parse_args()
    n = args.size
    base = Path(os.environ.get("CRM_BENCH_DIR", "/tmp")) / f"crm_sync_merge_bench_{os.getpid()}"
    port = free_port()
    subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", str(base), str(port),
                    "fsync = off", "synchronous_commit = off", "full_page_writes = off"], check=True)
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            c.execute("CREATE DATABASE bench")
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="bench",
                             autocommit=True) as c:
            c.execute("CREATE EXTENSION pg_crm_sync")
            c.execute("""SELECT crm_sync.create_source('hs', 'hubspot', '{"base_url": "http://127.0.0.1:9", "default_region": "US"}',
                                                       '{"access_token": "x"}')""")
            c.execute("""SELECT crm_sync.create_source('sf', 'salesforce', '{"login_url": "http://127.0.0.1:9"}',
                                                       '{"client_id": "x", "refresh_token": "y"}')""")
            c.execute(LANDING.format(s="hs", t="contacts"))
            c.execute(LANDING.format(s="sf", t="contact"))
            c.execute(HS_ROWS, {"n": n})
            c.execute(SF_ROWS, {"n": n})
            c.execute("ANALYZE")
            print(f"merge: {n:,} HubSpot + {n:,} Salesforce contacts, 30% the same people")
            m = session(port)
            rows, secs, mem = run(m, "SELECT entity, records_changed, unified_rows_changed FROM crm_sync.merge(full => true)")
            m.close()
            staged = sum(r[1] for r in rows)
            unified = c.execute("SELECT count(*) FROM crm.contacts").fetchone()[0]
            print(f"  full merge:        {secs:7.2f} s  {staged / secs:9,.0f} records/s  "
                  f"{unified:,} unified contacts  peak private memory {mem['anon_kb'] / 1024:.0f} MiB")
            print(f"  model md5 after the full merge: {model_md5(c)}")
            first_secs = secs
            k = n // 100
            c.execute("UPDATE hs.contacts SET _raw = jsonb_set(_raw, '{properties,jobtitle}', '\"Changed\"'), "
                      "_run_id = 2, _updated_at = timestamptz '2025-01-01' WHERE id::int % 100 = 0")
            c.execute("UPDATE sf.contact SET _raw = jsonb_set(_raw, '{Title}', '\"Changed\"'), _run_id = 2, "
                      "_updated_at = timestamptz '2025-01-01' WHERE right(id, 2) = '00'")
            incremental(c, port, k, "incremental (1%):  ", 7, "the incremental merge")
            # Another 1%, their emails changed: these records are linked again.
            c.execute("UPDATE hs.contacts SET _raw = jsonb_set(_raw, '{properties,email}', to_jsonb('moved' || id || '@example.net')), "
                      "_run_id = 3, _updated_at = timestamptz '2025-02-01' WHERE id::int % 100 = 1")
            c.execute("UPDATE sf.contact SET _raw = jsonb_set(_raw, '{Email}', to_jsonb('moved' || id || '@example.net')), "
                      "_run_id = 3, _updated_at = timestamptz '2025-02-01' WHERE right(id, 2) = '01'")
            incremental(c, port, k, "incremental (1%, emails): ", 5, "the emails' merge")
            # The two above run while the first merge's writes are still
            # being vacuumed and checkpointed; a user's merges every few
            # minutes find them done (autovacuum: 400,000 new records pass
            # its insert threshold at once). The same 1% of titles again,
            # after that work.
            c.execute("VACUUM ANALYZE")
            c.execute("CHECKPOINT")
            c.execute("UPDATE hs.contacts SET _raw = jsonb_set(_raw, '{properties,jobtitle}', '\"Changed again\"'), "
                      "_run_id = 4, _updated_at = timestamptz '2025-03-01' WHERE id::int % 100 = 2")
            c.execute("UPDATE sf.contact SET _raw = jsonb_set(_raw, '{Title}', '\"Changed again\"'), _run_id = 4, "
                      "_updated_at = timestamptz '2025-03-01' WHERE right(id, 2) = '02'")
            incremental(c, port, k, "incremental (1%, vacuumed): ", 3, "the vacuumed merge")
            # The same model either way: every row, every column but times.
            before = model_md5(c)
            t0 = time.perf_counter()
            c.execute("SELECT * FROM crm_sync.merge(full => true)")
            secs = time.perf_counter() - t0
            after = model_md5(c)
            print(f"  full rebuild:      {secs:7.2f} s  model md5 {after}, the same as incremental: {before == after}")
            if args.floor:
                # Last: its reads and checkpoints would change what the
                # incremental merges above meet.
                floor(c, base, first_secs)
    finally:
        if args.keep:
            print(f"  still running: psql -h 127.0.0.1 -p {port} -U postgres bench   (scripts/pg.sh stop {base})")
        else:
            subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", str(base)], check=False)
            subprocess.run(["rm", "-rf", str(base)], check=False)


if __name__ == "__main__":
    main()
