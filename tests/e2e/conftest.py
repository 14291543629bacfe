"""End-to-end fixtures: a real PostgreSQL 15 cluster with pg_crm_sync installed,
and the HubSpot mock, both on 127.0.0.1.

scripts/test.sh builds and installs the extension and the mock before pytest
runs; these fixtures only start and stop processes.

The cluster preloads pg_crm_sync (its launcher runs the background jobs of
database crm_jobs) and pg_cron (scheduling into the same database). Most tests
use a fresh database each (`dbname`, `connect`, `db`); background-job tests use
crm_jobs, reset before each of them (`jobs_db`, `jobs_connect`).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
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


JOBS_DB = "crm_jobs"
PG_BIN = Path("/usr/lib/postgresql/15/bin")

# postgresql.conf lines of the test cluster, after pg.sh's own.
CLUSTER_CONF = [
    "fsync = off", "full_page_writes = off", "synchronous_commit = off",
    "shared_preload_libraries = 'pg_crm_sync,pg_cron'",
    f"crm_sync.database = '{JOBS_DB}'",
    "crm_sync.max_workers = 2",
    f"cron.database_name = '{JOBS_DB}'",
    "cron.use_background_workers = on",  # jobs run in background workers, not libpq sessions
    "max_worker_processes = 32",
]


def as_postgres(argv):
    """argv run as the postgres OS user (initdb and pg_ctl refuse root), as scripts/pg.sh does."""
    return argv if os.geteuid() != 0 else ["sudo", "-u", "postgres", *argv]


def pg_connect(pg_cluster, dbname="postgres", **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(host=pg_cluster["host"], port=pg_cluster["port"],
                           user=kw.pop("user", "postgres"), dbname=dbname, **kw)


def postmaster_alive(pg_cluster):
    try:
        pid = int((pg_cluster["dir"] / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


def wait_ready(pg_cluster, dbname="postgres", timeout=120):
    """A new connection once the cluster accepts them again (after a restart or a crash)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            c = pg_connect(pg_cluster, dbname, connect_timeout=5)
            c.execute("SELECT 1")
            return c
        except psycopg.OperationalError:
            if not postmaster_alive(pg_cluster):
                raise RuntimeError(f"the postmaster is gone; see {pg_cluster['dir'] / 'server.log'}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def ensure_running(pg_cluster):
    """Start the cluster again if an earlier test left it down (its postmaster
    died), so that one crash fails one test, not every later one."""
    if not postmaster_alive(pg_cluster):
        log = (pg_cluster["dir"] / "server.log").read_text(errors="replace").splitlines()
        print("\nthe cluster was down; starting it again. server.log ended with:\n" + "\n".join(log[-15:]))
        start_cluster(pg_cluster)


def pg_ctl(pg_cluster, *args):
    d = pg_cluster["dir"]
    subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(d), *args]), check=True,
                   stdout=subprocess.DEVNULL)


def stop_cluster(pg_cluster, mode="fast"):
    """pg_ctl stop -m mode (fast, smart, or immediate: no shutdown checkpoint, as in a crash)."""
    pg_ctl(pg_cluster, "-m", mode, "-w", "-t", "120", "stop")


def start_cluster(pg_cluster):
    """pg_ctl start (recovering if it was stopped immediately); waits until it accepts connections."""
    pg_ctl(pg_cluster, "-l", str(pg_cluster["dir"] / "server.log"), "-w", "-t", "120", "start")
    wait_ready(pg_cluster).close()


def restart_cluster(pg_cluster, mode="fast"):
    """Stop the cluster with `pg_ctl -m mode` and start it again; waits until it
    accepts connections. Every open connection is lost."""
    stop_cluster(pg_cluster, mode)
    start_cluster(pg_cluster)


@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory):
    """A cluster of our own, removed at the end of the session."""
    base = Path(os.environ.get("CRM_E2E_DIR", "/tmp")) / f"crm_sync_e2e_{os.getpid()}"
    port = free_port()
    subprocess.run([str(ROOT / "scripts" / "pg.sh"), "start", str(base), str(port), *CLUSTER_CONF],
                   check=True)
    cluster = {"host": "127.0.0.1", "port": port, "user": "postgres", "dir": base}
    try:
        with pg_connect(cluster) as c:
            c.execute(f"CREATE DATABASE {JOBS_DB}")
        with pg_connect(cluster, JOBS_DB) as c:
            c.execute("CREATE EXTENSION pg_cron")
        yield cluster
    finally:
        subprocess.run([str(ROOT / "scripts" / "pg.sh"), "stop", str(base)], check=False)
        # The server log outlives the cluster, for a failure to be looked into.
        shutil.copy(base / "server.log", Path(tempfile.gettempdir()) / "crm_sync_e2e_server.log")
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def dbname(pg_cluster):
    """A fresh database with the extension, dropped after the test."""
    ensure_running(pg_cluster)
    # Where this test's server log begins (seen_texts reads from there).
    log = pg_cluster["dir"] / "server.log"
    pg_cluster["log_mark"] = log.stat().st_size if log.exists() else 0
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


# ---------------------------------------------------------------------------
# Background jobs: database crm_jobs (crm_sync.database), reset for each test.

JOB_ENDED = ("succeeded", "failed", "cancelled", "skipped")


def _quiet_jobs_db(c, wait_seconds=30):
    """Stop what a test may have left going in crm_jobs: pg_cron and crm_sync
    schedules, queued and running jobs, cluster-wide settings it changed."""
    c.execute("SELECT cron.unschedule(jobid) FROM cron.job")
    if c.execute("SELECT to_regclass('crm_sync.schedules') IS NOT NULL").fetchone()[0]:
        c.execute("DELETE FROM crm_sync.schedules")
    c.execute("ALTER SYSTEM RESET ALL")
    c.execute("SELECT pg_reload_conf()")
    if c.execute("SELECT to_regclass('crm_sync.jobs') IS NOT NULL").fetchone()[0]:
        c.execute("SELECT crm_sync.cancel(job_id) FROM crm_sync.jobs WHERE status IN ('queued', 'running')")
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline and c.execute(
                "SELECT count(*) FROM crm_sync.jobs WHERE status IN ('queued', 'running')").fetchone()[0]:
            time.sleep(0.2)
    # A worker that did not stop in time is ended (exit code 1: no crash restart).
    c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'pg_crm_sync worker'")


def reset_jobs_db(pg_cluster):
    """crm_jobs as new: no sources (their schemas dropped), a fresh pg_crm_sync,
    no cron jobs, no per-database settings, no ALTER SYSTEM settings."""
    ensure_running(pg_cluster)
    with wait_ready(pg_cluster, JOBS_DB) as c:
        c.execute("SET lock_timeout = '60s'")
        _quiet_jobs_db(c)
        if c.execute("SELECT to_regclass('crm_sync.sources') IS NOT NULL").fetchone()[0]:
            c.execute("SELECT crm_sync.drop_source(name, drop_data => true) FROM crm_sync.sources")
        c.execute("DROP EXTENSION IF EXISTS pg_crm_sync CASCADE")
        c.execute("CREATE EXTENSION pg_crm_sync")
        c.execute(f"ALTER DATABASE {JOBS_DB} RESET ALL")


@pytest.fixture
def jobs_db(pg_cluster):
    """The name of the database whose background jobs the launcher runs, reset."""
    reset_jobs_db(pg_cluster)
    yield JOBS_DB
    try:
        with wait_ready(pg_cluster, JOBS_DB, timeout=60) as c:
            _quiet_jobs_db(c)
    except psycopg.Error as e:  # the next test's reset tries again
        print(f"jobs_db teardown: {e}")


@pytest.fixture
def jobs_connect(pg_cluster, jobs_db):
    """jobs_connect() -> a new autocommit connection to crm_jobs."""
    conns = []

    def _connect(**kw):
        c = pg_connect(pg_cluster, jobs_db, **kw)
        conns.append(c)
        return c

    yield _connect
    for c in conns:
        c.close()


def job(conn, job_id):
    """The crm_sync.jobs row as a dict (None if there is none)."""
    cur = conn.execute("SELECT * FROM crm_sync.jobs WHERE job_id = %s", (job_id,))
    row = cur.fetchone()
    return None if row is None else dict(zip([d.name for d in cur.description], row))


def wait_job(conn, job_id, timeout=120, statuses=JOB_ENDED):
    """Poll crm_sync.jobs until the job's status is one of `statuses` (by
    default: it ended); returns its row. Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        j = job(conn, job_id)
        if j is not None and j["status"] in statuses:
            return j
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not {statuses} after {timeout} s: {j}")
        time.sleep(0.2)


def wait_until(what, check, timeout=60, interval=0.2):
    """Call check() until it returns something truthy, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def _settle_reload(pg_cluster, name, value):
    """After pg_reload_conf(): wait until the launcher shows it goes by the
    new value (in its pg_stat_activity.query)."""
    want = f"pg_crm_sync launcher: {name} = {value}"

    def seen():
        with pg_connect(pg_cluster, JOBS_DB) as c:
            return c.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_crm_sync launcher' "
                             "AND query = %s", (want,)).fetchone()[0] == 1
    wait_until(f"the launcher to go by {name} = {value} after reload", seen, timeout=30, interval=0.05)


def set_max_workers(pg_cluster, n):
    """ALTER SYSTEM SET crm_sync.max_workers = n, reloaded."""
    with pg_connect(pg_cluster, JOBS_DB) as c:
        c.execute(f"ALTER SYSTEM SET crm_sync.max_workers = {int(n)}")
        c.execute("SELECT pg_reload_conf()")
    _settle_reload(pg_cluster, "crm_sync.max_workers", int(n))


def reset_max_workers(pg_cluster):
    """ALTER SYSTEM RESET crm_sync.max_workers (back to postgresql.conf's 2), reloaded."""
    with pg_connect(pg_cluster, JOBS_DB) as c:
        c.execute("ALTER SYSTEM RESET crm_sync.max_workers")
        c.execute("SELECT pg_reload_conf()")
    _settle_reload(pg_cluster, "crm_sync.max_workers", 2)


def wait_notify(conn, job_id, timeout=60):
    """The JSON payload of the first crm_sync notification about job_id."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for n in conn.notifies(timeout=max(0.1, deadline - time.monotonic())):
            payload = json.loads(n.payload)
            seen.append(payload)
            if payload.get("job_id") == job_id:
                return payload
    raise AssertionError(f"no NOTIFY crm_sync for job {job_id} within {timeout} s; got {seen}")


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

    def _token(self):
        return requests.post(self.url + "/services/oauth2/token", data={
            "grant_type": "refresh_token", "client_id": SF_CLIENT_ID,
            "refresh_token": SF_REFRESH_TOKEN}, timeout=30).json()["access_token"]

    def query(self, soql):
        """Run SOQL through the mock's own API (token from the refresh flow)."""
        r = requests.get(self.url + "/services/data/v59.0/queryAll", params={"q": soql},
                         headers={"Authorization": "Bearer " + self._token()}, timeout=60)
        r.raise_for_status()
        return r.json()

    def next_page(self, next_records_url):
        """The page a query's nextRecordsUrl names."""
        r = requests.get(self.url + next_records_url, headers={"Authorization": "Bearer " + self._token()},
                         timeout=60)
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


# ---------------------------------------------------------------------------
# Secrets: what a CRM may echo of them, and every place a user or the server
# log could see one.

def secret_forms(secret, pair_with=()):
    """The spellings of `secret` a CRM's error may repeat (see the mocks'
    echo_secrets fault): as is, percent-encoded (upper and lower case hex, `+`
    for a space), JSON-escaped (`\\/`, `\\u00XX`), base64 alone and of
    `other:secret` (HTTP Basic), and, for a long one, its first half (a body
    excerpt cut inside it)."""
    import base64
    import re
    from urllib.parse import quote, quote_plus
    forms = {secret}
    for enc in (quote(secret, safe=""), quote_plus(secret, safe="")):
        forms.add(enc)
        forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), enc))
    forms.add(secret.replace("\\", "\\\\").replace("/", "\\/"))
    for fmt in ("\\u{:04X}", "\\u{:04x}"):
        forms.add("".join(c if c.isalnum() else fmt.format(ord(c)) for c in secret))
    for raw in [secret] + [f"{o}:{secret}" for o in pair_with if o != secret]:
        for b in (base64.b64encode(raw.encode()), base64.urlsafe_b64encode(raw.encode())):
            forms.add(b.decode().rstrip("="))
    if len(secret) >= 16:
        forms.add(secret[:(len(secret) + 1) // 2])
    return forms


def collect_notices(conn):
    """A list that fills with the text of each NOTICE and WARNING sent to conn."""
    seen = []
    conn.add_notice_handler(lambda d: seen.append(
        " ".join(x or "" for x in (d.severity, d.message_primary, d.message_detail, d.message_hint))))
    return seen


def error_texts(err):
    """An ERROR's message, DETAIL and HINT, for secret checks."""
    if err is None:
        return {}
    d = err.diag
    return {"error": str(err), "detail": d.message_detail or "", "hint": d.message_hint or "",
            "context": d.context or ""}


def seen_texts(db, pg_cluster, err=None, notices=()):
    """Every place a secret could reach: the ERROR, crm_sync.runs, crm_sync.jobs,
    NOTICE/WARNING text and the server log since the test's database was made."""
    texts = error_texts(err)
    texts["runs"] = db.execute(
        "SELECT coalesce(string_agg(row_to_json(r)::text, ''), '') FROM crm_sync.runs r").fetchone()[0]
    if db.execute("SELECT to_regclass('crm_sync.jobs') IS NOT NULL").fetchone()[0]:
        texts["jobs"] = db.execute(
            "SELECT coalesce(string_agg(row_to_json(j)::text, ''), '') FROM crm_sync.jobs j").fetchone()[0]
    texts["notices"] = "\n".join(notices)
    with open(pg_cluster["dir"] / "server.log", "rb") as f:
        f.seek(pg_cluster.get("log_mark", 0))
        texts["log"] = f.read().decode(errors="replace")
    return texts


def assert_no_secret(texts, secrets, pair_with=()):
    """No spelling (secret_forms) of any of `secrets` in any of `texts` (name -> text)."""
    for s in secrets:
        for form in secret_forms(s, pair_with):
            for where, text in texts.items():
                assert form not in text, f"{form!r} (a form of a secret) in {where}: {text[-2000:]}"


def assert_echoed(mock, kind="echo_secrets", **sent):
    """The mock's echo fault fired, and repeated each `name=value` given
    (name: bearer, basic or a form field). Returns its stats."""
    st = mock.stats()
    assert st["faults_fired"].get(kind, 0) >= 1, st["faults_fired"]
    for name, value in sent.items():
        assert value in st["echoed"].get(name, []), (name, value, st["echoed"])
    return st


PD_TOKEN = "pd-token"


class PdMock(Mock):
    """A running crm-mock pipedrive process and its admin API."""

    def upsert(self, entity, record, id=None):
        body = {"record": record}
        if id is not None:
            body["id"] = id
        return self.admin("POST", f"/_mock/pd/{entity}", body)["id"]

    def delete(self, entity, id):
        return self.admin("DELETE", f"/_mock/pd/{entity}/{id}")

    def purge(self, entity, id):
        return self.admin("POST", f"/_mock/pd/{entity}/{id}/purge")

    def record(self, entity, id):
        return self.admin("GET", f"/_mock/pd/{entity}/{id}")

    def fields(self, entity):
        return self.admin("GET", f"/_mock/pd/{entity}/fields")

    def limits(self, **kw):
        return self.admin("POST", "/_mock/pd/limits", kw)

    def generic(self, **kw):
        return self.admin("POST", "/_mock/pd/generic", kw)


@pytest.fixture
def pd_factory(mocks):
    def _start(*extra):
        return mocks.start(PdMock, "pipedrive", "--token", PD_TOKEN, *extra)

    return _start


@pytest.fixture
def pipedrive(pd_factory):
    """A small Pipedrive mock: 120 persons, 30 organizations, 40 deals, 20 activities, 3 users."""
    return pd_factory()


def create_pd_source(db, mock, name="pd", credentials=None, **options):
    register(db, name, "pipedrive", {"base_url": mock.url, **options},
             credentials or {"api_token": PD_TOKEN})



def crash_and_resume(pg_cluster, c, mock, source, stream, endpoint, total, page, path_contains, resumed_by=None):
    """A background sync of `source`.`stream` (`total` records in pages of
    `page` from `endpoint`) killed with SIGKILL once a checkpoint passed
    8,000 records: the job's second attempt goes on from the checkpoint
    (through `resumed_by`, an (endpoint, page) pair, when the connector
    resumes another way), landing every record once, and does not list
    again the pages the first had landed. Returns the job's runs (status,
    records, watermark). `c` is a crm_jobs session (closed here)."""
    c.execute("UPDATE crm_sync.streams SET enabled = false WHERE source = %s AND stream <> %s", (source, stream))
    c.execute("ALTER DATABASE crm_jobs SET crm_sync.batch_size = 1000")
    c.execute("ALTER DATABASE crm_jobs SET synchronous_commit = on")
    mock.fault(path_contains=path_contains, skip=20, count=0, kind="latency", latency_ms=300)
    job_id = c.execute("SELECT crm_sync.sync_async(%s, %s)", (source, stream)).fetchone()[0]

    def checkpoint():
        r = c.execute("SELECT records FROM crm_sync.checkpoints WHERE source = %s AND stream = %s",
                      (source, stream)).fetchone()
        return r if r and r[0] >= 8000 else None

    wait_until("a checkpoint past 8,000 records", checkpoint, timeout=120, interval=0.1)
    pid = job(c, job_id)["worker_pid"]
    calls_before = mock.stats()["by_endpoint"].get(endpoint, 0)
    os.kill(pid, signal.SIGKILL)
    mock.clear_faults()
    wait_gone(c)  # every process is being restarted
    c = wait_ready(pg_cluster, "crm_jobs")
    try:
        j = wait_job(c, job_id, timeout=240)
        assert j["status"] == "succeeded", j
        assert j["attempts"] == 2
        assert c.execute(f"SELECT count(*) FROM {source}.{stream}").fetchone()[0] == total
        runs = c.execute("SELECT status, records, watermark FROM crm_sync.runs WHERE run_id = ANY (%s) "
                         "ORDER BY run_id", (j["run_ids"],)).fetchall()
        assert [s for s, _, _ in runs] == ["failed", "succeeded"]
        assert runs[0][1] + runs[1][1] == total, runs
        # The second attempt went on from the cursor.
        after_endpoint, after_page = resumed_by or (endpoint, page)
        calls = mock.stats()["by_endpoint"].get(after_endpoint, 0)
        assert calls - (calls_before if after_endpoint == endpoint else 0) <= (total - 8000) // after_page + 5, calls
        assert calls_before >= 16
        return runs
    finally:
        c.close()


def wait_gone(conn, timeout=60):
    """Until `conn` is cut (the postmaster ends every session when a process crashes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.execute("SELECT pg_sleep(0.2)")
        except psycopg.OperationalError:
            return
    raise AssertionError("the crash did not end the other sessions")


DV_TENANT = "7a1b2c3d-0000-4000-8000-00000000d365"
DV_CREDENTIALS = {"tenant_id": DV_TENANT, "client_id": "dv-client", "client_secret": "dv-secret"}


class DvMock(Mock):
    """A running crm-mock dynamics process (Dataverse Web API and Entra ID token endpoint)."""

    def id(self, entity, k):
        """The GUID of seeded row k of `entity`."""
        return self.admin("POST", "/_mock/dv/id", {"entity": entity, "k": k})

    def upsert(self, entity, record, id=None):
        return self.admin("POST", "/_mock/dv/upsert", {"entity": entity, "id": id, "record": record})["id"]

    def delete(self, entity, id):
        return self.admin("POST", "/_mock/dv/delete", {"entity": entity, "id": id})["deleted"]

    def record(self, entity, id):
        return self.admin("POST", "/_mock/dv/record", {"entity": entity, "id": id})

    def expire_deltas(self):
        return self.admin("POST", "/_mock/dv/expire_deltas", {})

    def auth(self, **kw):
        return self.admin("POST", "/_mock/dv/auth", kw)

    def limits(self, **kw):
        return self.admin("POST", "/_mock/dv/limits", kw)


@pytest.fixture
def dv_factory(mocks):
    def _start(*extra):
        return mocks.start(DvMock, "dynamics", "--tenant", DV_TENANT, *extra)

    return _start


@pytest.fixture
def dynamics(dv_factory):
    """A small Dataverse mock: 120 contacts, 30 accounts, 20 leads, 40 opportunities, 3 users, 10 projects."""
    return dv_factory()


def create_dv_source(db, mock, name="dv", credentials=None, **options):
    register(db, name, "dynamics", {"environment_url": mock.url, "login_url": mock.url, **options},
             credentials or DV_CREDENTIALS)


ZOHO_CREDENTIALS = {"client_id": "1000.ZOHOCLIENT", "client_secret": "zoho-secret", "refresh_token": "1000.zoho-refresh"}


class ZohoMockProc(Mock):
    """A running crm-mock zoho process (Zoho CRM API v8 and Zoho Accounts)."""

    def id(self, k):
        """The id of seeded record k of any module (ids are the index plus a base)."""
        return str(5_725_767_000_000_000_000 + k)

    def upsert(self, module, record, id=None):
        return self.admin("POST", "/_mock/zoho/upsert", {"module": module, "id": id, "record": record})["id"]

    def delete(self, module, id):
        return self.admin("POST", "/_mock/zoho/delete", {"module": module, "id": id})["deleted"]

    def purge(self, module, id):
        """Gone without a trace in the deleted-records API (past its 120 days)."""
        return self.admin("POST", "/_mock/zoho/purge", {"module": module, "id": id})["deleted"]

    def record(self, module, id):
        return self.admin("POST", "/_mock/zoho/record", {"module": module, "id": id})

    def credits(self, **kw):
        return self.admin("POST", "/_mock/zoho/credits", kw)


@pytest.fixture
def zoho_factory(mocks):
    def _start(*extra):
        return mocks.start(ZohoMockProc, "zoho", *extra)

    return _start


@pytest.fixture
def zoho(zoho_factory):
    """A small Zoho CRM mock: 120 contacts (more than 50 fields), 30 accounts, 20 leads, 40 deals, 3 users."""
    return zoho_factory()


def create_zoho_source(db, mock, name="zo", credentials=None, **options):
    register(db, name, "zoho", {"accounts_url": mock.url, **options}, credentials or ZOHO_CREDENTIALS)
