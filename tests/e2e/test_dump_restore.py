"""Sources, streams, credentials, watermarks and runs survive pg_dump/restore,
and an incremental sync continues from the restored watermark."""

import subprocess
import uuid

import psycopg

from conftest import create_source, sync

BIN = "/usr/lib/postgresql/15/bin"


def test_pg_dump_and_restore_keep_configuration_and_state(db, hubspot, pg_cluster, tmp_path):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream = 'deals'")
    sync(db)
    dump = tmp_path / "db.dump"
    src = db.info.dbname
    conn = ["-h", "127.0.0.1", "-p", str(pg_cluster["port"]), "-U", "postgres"]
    subprocess.run([f"{BIN}/pg_dump", *conn, "-Fc", "-f", str(dump), src], check=True)
    target = f"r_{uuid.uuid4().hex[:10]}"
    subprocess.run([f"{BIN}/createdb", *conn, target], check=True)
    try:
        subprocess.run([f"{BIN}/pg_restore", *conn, "-d", target, "--exit-on-error", str(dump)], check=True)
        with psycopg.connect(host="127.0.0.1", port=pg_cluster["port"], user="postgres", dbname=target,
                             autocommit=True) as r:
            q = lambda sql: r.execute(sql).fetchall()  # noqa: E731
            orig = lambda sql: db.execute(sql).fetchall()  # noqa: E731
            for sql in ["SELECT name, provider, options FROM crm_sync.sources",
                        "SELECT source, credentials FROM crm_sync.credentials",
                        "SELECT source, stream, object, enabled, properties FROM crm_sync.streams ORDER BY 2",
                        "SELECT source, stream, cursor FROM crm_sync.watermarks ORDER BY 2",
                        "SELECT run_id, stream, status, records FROM crm_sync.runs ORDER BY 1",
                        "SELECT count(*) FROM hs.contacts",
                        # The unified model, with its ids and lineage.
                        "SELECT * FROM crm.contacts ORDER BY id",
                        "SELECT * FROM crm.companies ORDER BY id",
                        "SELECT * FROM crm.identities ORDER BY 1, 2, 3, 4, 5",
                        "SELECT * FROM crm_sync.merge_state ORDER BY 1, 2"]:
                assert q(sql) == orig(sql), sql
            assert orig("SELECT count(*) FROM crm.contacts")[0][0] > 0
            hubspot.upsert("contacts", [{"id": "1", "properties": {"firstname": "after-restore"}}])
            rows = {x[0]: x for x in r.execute("SELECT stream, mode, records_upserted, run_id FROM crm_sync.sync('hs')")}
            assert rows["contacts"][1:3] == ("incremental", 1)
            # The merge after it went on from the restored state: the
            # person keeps the unified id they had before the dump.
            who = "SELECT unified_id FROM crm.identities WHERE source = 'hs' AND stream = 'contacts' AND external_id = '1'"
            assert q(who) == orig(who)
            assert q("SELECT first_name FROM crm.contacts WHERE id = (%s)" % who) == [("after-restore",)]
            # New run ids continue after the restored ones.
            assert rows["contacts"][3] > max(x[0] for x in orig("SELECT run_id FROM crm_sync.runs"))
    finally:
        subprocess.run([f"{BIN}/dropdb", *conn, "--force", target], check=False)
