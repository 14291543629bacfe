"""End-to-end fixtures: a real PostgreSQL 15 cluster with pg_crm_sync installed,
and the HubSpot mock, both on 127.0.0.1.

scripts/test.sh builds and installs the extension and the mock before pytest
runs; these fixtures only start and stop processes.
"""

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
MOCK_BIN = Path(os.environ.get("CRM_MOCK_BIN", ROOT / "target" / "release" / "crm-mock"))
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    """A cluster of our own, removed at the end of the session."""
    base = Path(os.environ.get("CRM_E2E_DIR", "/tmp")) / f"crm_sync_e2e_{os.getpid()}"
    port = free_port()
    subprocess.run(
        [str(ROOT / "scripts" / "pg.sh"), "start", str(base), str(port),
         "fsync = off", "full_page_writes = off", "synchronous_commit = off"],
        check=True,
    )
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "dir": base}
    finally:
        subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dbname(pg_cluster):
    """A fresh database with the extension, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=pg_cluster["host"], port=pg_cluster["port"], user="postgres",
                         dbname="postgres", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(host=pg_cluster["host"], port=pg_cluster["port"], user="postgres",
                         dbname=name, autocommit=True) as c:
        c.execute("CREATE EXTENSION pg_crm_sync")
    yield name
    with psycopg.connect(host=pg_cluster["host"], port=pg_cluster["port"], user="postgres",
                         dbname="postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def connect(pg_cluster, dbname):
    """connect() -> a new autocommit connection to the test database."""
    conns = []

    def _connect(**kw):
        kw.setdefault("autocommit", True)
        c = psycopg.connect(host=pg_cluster["host"], port=pg_cluster["port"],
                            user=kw.pop("user", "postgres"), dbname=dbname, **kw)
        conns.append(c)
        return c

    yield _connect
    for c in conns:
        c.close()


@pytest.fixture
def db(connect):
    return connect()


class Mock:
    """A running crm-mock hubspot process and its admin API."""

    def __init__(self, proc, port):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def admin(self, method, path, body=None):
        r = requests.request(method, self.url + path, json=body, timeout=30)
        r.raise_for_status()
        return r.json() if r.content else None

    def upsert(self, obj, records, timestamp_ms=None):
        body = {"records": records}
        if timestamp_ms is not None:
            body["timestamp_ms"] = timestamp_ms
        return self.admin("POST", f"/_mock/{obj}/upsert", body)["records"]

    def archive(self, obj, ids):
        return self.admin("POST", f"/_mock/{obj}/archive", {"ids": [str(i) for i in ids]})

    def fault(self, **rule):
        self.admin("POST", "/_mock/faults", {"rules": [rule]})

    def clear_faults(self):
        self.admin("DELETE", "/_mock/faults")

    def hook(self, path_contains, skip, action):
        self.admin("POST", "/_mock/hooks", {"path_contains": path_contains, "skip": skip, "action": action})

    def stats(self):
        return self.admin("GET", "/_mock/stats")

    def reset_stats(self):
        self.admin("POST", "/_mock/reset_stats")


def spawn_mock(cls, kind, *args):
    """Start `crm-mock kind --port 0 args...` and wait for its port."""
    proc = subprocess.Popen([str(MOCK_BIN), kind, "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"{kind} mock did not start: {line!r}")
    return cls(proc, int(line.strip().rsplit(":", 1)[1]))


def start_mock(*args):
    return spawn_mock(Mock, "hubspot", "--token", TOKEN, *args)


class Mocks:
    """Mocks started by a test, killed at its end."""

    def __init__(self):
        self.all = []

    def start(self, cls, kind, *args):
        m = spawn_mock(cls, kind, *args)
        self.all.append(m)
        return m

    def stop(self):
        for m in self.all:
            m.proc.kill()
            m.proc.wait(timeout=10)


@pytest.fixture
def mocks():
    ms = Mocks()
    yield ms
    ms.stop()


@pytest.fixture
def mock_factory(mocks):
    def _start(contacts=250, companies=60, deals=40, *extra):
        return mocks.start(Mock, "hubspot", "--token", TOKEN, "--contacts", str(contacts),
                           "--companies", str(companies), "--deals", str(deals), *extra)

    return _start


@pytest.fixture
def hubspot(mock_factory):
    """A small HubSpot mock: 250 contacts (450-record import tie not reached), 60 companies, 40 deals."""
    return mock_factory()


def register(db, name, provider, options, credentials):
    """crm_sync.create_source() with test-friendly defaults: no lookback, fast retries."""
    opts = {"lookback_seconds": 0, "retry_base_ms": 10, "retry_max_ms": 50, **options}
    db.execute("SELECT crm_sync.create_source(%s, %s, %s, %s)",
               (name, provider, psycopg.types.json.Jsonb(opts), psycopg.types.json.Jsonb(credentials)))


def create_source(db, mock, name="hs", token=TOKEN, **options):
    register(db, name, "hubspot", {"base_url": mock.url, **options}, {"access_token": token})


def sync(db, source="hs", stream=None, full_refresh=False):
    """Run crm_sync.sync and return its rows as dicts keyed by stream."""
    cur = db.execute("SELECT * FROM crm_sync.sync(%s, %s, %s)", (source, stream, full_refresh))
    cols = [d.name for d in cur.description]
    return {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}


SF_CLIENT_ID = "3MVG9mock.client.id"
SF_CLIENT_SECRET = "mock-client-secret"
SF_REFRESH_TOKEN = "5Aep861mock.refresh.token"
SF_USERNAME = "integration@mock.example.com"


class SfMock(Mock):
    """A running crm-mock salesforce process and its admin API."""

    def upsert(self, obj, records, timestamp_ms=None):
        body = {"records": records}
        if timestamp_ms is not None:
            body["timestamp_ms"] = timestamp_ms
        return self.admin("POST", f"/_mock/sf/{obj}/upsert", body)["ids"]

    def delete(self, obj, ids):
        return self.admin("POST", f"/_mock/sf/{obj}/delete", {"ids": list(ids)})

    def undelete(self, obj, ids):
        return self.admin("POST", f"/_mock/sf/{obj}/undelete", {"ids": list(ids)})

    def expire_sessions(self):
        self.admin("POST", "/_mock/sf/expire_sessions")

    def limits(self, **kw):
        self.admin("POST", "/_mock/sf/limits", kw)

    def query(self, soql):
        """Run SOQL through the mock's own API (token from the refresh flow)."""
        tok = requests.post(self.url + "/services/oauth2/token", data={
            "grant_type": "refresh_token", "client_id": SF_CLIENT_ID,
            "refresh_token": SF_REFRESH_TOKEN}, timeout=30).json()
        r = requests.get(self.url + "/services/data/v59.0/queryAll", params={"q": soql},
                         headers={"Authorization": "Bearer " + tok["access_token"]}, timeout=60)
        r.raise_for_status()
        return r.json()


@pytest.fixture
def sf_factory(mocks):
    return lambda *args: mocks.start(SfMock, "salesforce", *args)


@pytest.fixture
def salesforce(sf_factory):
    """A small Salesforce mock: 50 records of each object."""
    return sf_factory()


def create_sf_source(db, mock, name="sf", credentials=None, **options):
    creds = credentials if credentials is not None else {
        "client_id": SF_CLIENT_ID, "client_secret": SF_CLIENT_SECRET, "refresh_token": SF_REFRESH_TOKEN}
    register(db, name, "salesforce", {"login_url": mock.url, **options}, creds)
