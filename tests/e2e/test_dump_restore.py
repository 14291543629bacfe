"""pg_dump/pg_restore keep every table the extension dumps, the user's edits
to shipped mappings and match rules included, and an incremental sync
continues from the restored watermark."""

import subprocess
import uuid

import psycopg

from conftest import create_source, sync

BIN = "/usr/lib/postgresql/15/bin"

DUMPED = """SELECT c::regclass::text, relkind FROM pg_extension e, unnest(e.extconfig) c
              JOIN pg_class k ON k.oid = c WHERE e.extname = 'pg_crm_sync' ORDER BY 1"""


def contents(conn):
    """Every row of every table (and the value of every sequence) the
    extension dumps, the shipped rows of mappings and match rules included,
    plus the landing table."""
    out = {}
    for name, kind in conn.execute(DUMPED).fetchall():
        if kind == "S":
            out[name] = conn.execute(f"SELECT last_value, is_called FROM {name}").fetchall()
        else:
            out[name] = conn.execute(f"SELECT t::text FROM {name} t ORDER BY 1").fetchall()
    out["hs.contacts"] = conn.execute("SELECT t::text FROM hs.contacts t ORDER BY 1").fetchall()
    return out


def edit_configuration(db):
    """What a user changes besides syncing: shipped rows edited, disabled
    and deleted, rows of their own, priorities and grants."""
    db.execute("UPDATE crm_sync.match_rules SET enabled = false WHERE entity = 'contact' AND name = 'phone_and_name'")
    db.execute("""UPDATE crm_sync.mappings SET expression = $$upper(r._raw->'properties'->>'firstname')$$
                   WHERE provider = 'hubspot' AND object = 'contacts' AND field = 'first_name' AND source IS NULL""")
    db.execute("""DELETE FROM crm_sync.mappings
                   WHERE provider = 'hubspot' AND object = 'contacts' AND field = 'company_domain' AND source IS NULL""")
    # A shipped row replaced by an insert of the same key.
    db.execute("DELETE FROM crm_sync.match_rules WHERE entity = 'company' AND name = 'name'")
    db.execute("INSERT INTO crm_sync.match_rules VALUES ('company', 2, 'name', '{company_name,domain}', true)")
    db.execute("""INSERT INTO crm_sync.mappings (provider, object, entity, field, expression, source)
                  VALUES ('hubspot', 'contacts', 'contact', 'title', $$r._raw->'properties'->>'jobtitle'$$, 'hs')""")
    db.execute("INSERT INTO crm_sync.match_rules VALUES ('contact', 3, 'email_only_mine', '{email}', true)")
    db.execute("INSERT INTO crm_sync.field_priority VALUES ('contact', 'phone', '{hs}')")
    # A spec of the user's, and one overriding the shipped pipedrive spec.
    spec = {"base_url": "https://api.example.com", "auth": {"type": "bearer"},
            "streams": [{"name": "items", "request": {"path": "/items"}, "records": {"primary_key": "id"},
                         "paging": {"type": "none"}}]}
    db.execute("SELECT crm_sync.register_spec('acme', %s)", (psycopg.types.json.Jsonb(spec),))
    pd = db.execute("SELECT spec FROM crm_sync.builtin_specs WHERE name = 'pipedrive'").fetchone()[0]
    pd["streams"] = pd["streams"][:1]
    db.execute("SELECT crm_sync.register_spec('pipedrive', %s)", (psycopg.types.json.Jsonb(pd),))
    db.execute("DROP ROLE IF EXISTS dump_reader")
    db.execute("CREATE ROLE dump_reader")
    db.execute("SELECT crm_sync.grant_access('dump_reader', 'read')")


def add_background_state(db):
    """Jobs, a checkpoint and a schedule (this database runs no background
    jobs: rows as the launcher and workers leave them)."""
    db.execute("INSERT INTO crm_sync.jobs (source, stream, status) VALUES ('hs', 'contacts', 'succeeded')")
    db.execute("""INSERT INTO crm_sync.checkpoints (source, stream, run_id, mode, fields, position, records, started_at)
                  VALUES ('hs', 'companies', 999, 'full', 'name', '{"after":"40"}', 40, now())""")
    db.execute("INSERT INTO crm_sync.schedules (source, every) VALUES ('hs', '1 hour')")


def test_pg_dump_and_restore_keep_configuration_edits_and_state(db, hubspot, pg_cluster, tmp_path):
    create_source(db, hubspot)
    db.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = 'hs' AND stream = 'deals'")
    edit_configuration(db)
    sync(db)
    add_background_state(db)
    before = contents(db)
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
            after = contents(r)
            assert sorted(after) == sorted(before)
            for table in before:
                assert after[table] == before[table], table
            # The oracle is not vacuous: what the user changed is there.
            q = lambda sql: r.execute(sql).fetchall()  # noqa: E731
            assert q("SELECT enabled FROM crm_sync.match_rules WHERE name = 'phone_and_name'") == [(False,)]
            assert q("SELECT keys FROM crm_sync.match_rules WHERE entity = 'company' AND name = 'name'") == \
                [(["company_name", "domain"],)]
            assert q("""SELECT expression FROM crm_sync.mappings WHERE provider = 'hubspot' AND object = 'contacts'
                         AND field IN ('first_name', 'company_domain') AND source IS NULL""") == \
                [("upper(r._raw->'properties'->>'firstname')",)]
            for table in ("crm_sync.jobs", "crm_sync.checkpoints", "crm_sync.schedules", "crm_sync.access",
                          "crm_sync.field_priority", "crm_sync.runs", "crm.contacts", "hs.contacts"):
                assert len(after[table]) > 0, table
            assert q("SELECT count(*) FROM crm.contacts WHERE first_name <> upper(first_name)") == [(0,)]
            assert q("SELECT has_table_privilege('dump_reader', 'hs.contacts', 'SELECT')") == [(True,)]
            assert q("SELECT name, jsonb_array_length(spec->'streams') FROM crm_sync.specs ORDER BY 1") == \
                [("acme", 1), ("pipedrive", 1)]
            assert q("SELECT jsonb_array_length(spec->'streams') FROM crm_sync.builtin_specs") == [(5,)]

            r.execute("DELETE FROM crm_sync.checkpoints")
            hubspot.upsert("contacts", [{"id": "1", "properties": {"firstname": "after-restore"}}])
            rows = {x[0]: x for x in r.execute("SELECT stream, mode, records_upserted, run_id FROM crm_sync.sync('hs')")}
            assert rows["contacts"][1:3] == ("incremental", 1)
            # The merge after it went on from the restored state: the
            # person keeps the unified id they had before the dump.
            who = "SELECT unified_id FROM crm.identities WHERE source = 'hs' AND stream = 'contacts' AND external_id = '1'"
            assert q(who) == db.execute(who).fetchall()
            assert q("SELECT first_name FROM crm.contacts WHERE id = (%s)" % who) == [("AFTER-RESTORE",)]
            # New run ids continue after the restored ones.
            assert rows["contacts"][3] > max(x[0] for x in db.execute("SELECT run_id FROM crm_sync.runs").fetchall())
    finally:
        subprocess.run([f"{BIN}/dropdb", *conn, "--force", target], check=False)
        db.execute("DROP OWNED BY dump_reader")
        db.execute("DROP ROLE IF EXISTS dump_reader")


def test_editing_a_shipped_row_makes_it_the_users(db):
    """The bookkeeping behind the dump: an edited shipped row is the user's
    (dumped), a deleted one leaves a tombstone, and neither is duplicated."""
    db.execute("UPDATE crm_sync.match_rules SET enabled = false WHERE entity = 'contact' AND name = 'phone_and_name'")
    db.execute("DELETE FROM crm_sync.match_rules WHERE entity = 'deal' AND name = 'contact_and_name'")
    assert db.execute("""SELECT name, is_default FROM crm_sync.match_rules WHERE entity IN ('contact', 'deal')
                          ORDER BY 1""").fetchall() == [
        ("company_and_name", True), ("email", True), ("phone_and_name", False)]
    assert db.execute("SELECT tbl, key FROM crm_sync.removed_defaults ORDER BY 2").fetchall() == [
        ("match_rules", ["contact", "phone_and_name"]), ("match_rules", ["deal", "contact_and_name"])]
    # Loading the tombstone again (as a restore does) is not an error.
    db.execute("INSERT INTO crm_sync.removed_defaults (tbl, key) VALUES ('match_rules', '{contact,phone_and_name}')")
    assert db.execute("SELECT count(*) FROM crm_sync.removed_defaults").fetchone()[0] == 2
    # A user row with a shipped row's key replaces it.
    db.execute("""INSERT INTO crm_sync.mappings (provider, object, entity, field, expression)
                  VALUES ('salesforce', 'Contact', 'contact', 'email', $$lower(r._raw->>'Email')$$)""")
    assert db.execute("""SELECT expression, is_default FROM crm_sync.mappings
                          WHERE provider = 'salesforce' AND object = 'Contact' AND field = 'email'""").fetchall() == [
        ("lower(r._raw->>'Email')", False)]
