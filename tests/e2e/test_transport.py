"""The HTTP layer as a user meets it: gzip, rate-limited search, plain http
only to loopback, and TLS certificates verified."""

import http.server
import ssl
import subprocess
import threading

import psycopg
import pytest

from conftest import TOKEN, assert_echoed, assert_no_secret, collect_notices, create_source, seen_texts, sync


def test_gzip_responses_are_decoded(db, mock_factory):
    m = mock_factory(300, 10, 10, "--gzip")
    create_source(db, m)
    m.reset_stats()
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["records_upserted"] == 300
    # bytes_received counts the decoded JSON; the mock sent it compressed.
    assert m.stats()["bytes_sent"] * 3 < rows["contacts"]["bytes_received"]
    assert db.execute("SELECT count(*) FROM hs.contacts WHERE email LIKE '%@%'").fetchone()[0] == 300


def test_search_rate_limit_is_waited_out(db, mock_factory):
    m = mock_factory(1000, 10, 10, "--search-rate-limit", "2")
    # Backoff as configured by default, scaled down: waits up to a second.
    create_source(db, m, retry_base_ms=300, retry_max_ms=1000, max_retries=12)
    sync(db, stream="contacts")
    m.upsert("contacts", [{"id": str(i), "properties": {"firstname": f"r{i}"}} for i in range(1, 1001)])
    m.reset_stats()
    rows = sync(db, stream="contacts")
    assert rows["contacts"]["status"] == "succeeded"
    assert rows["contacts"]["records_upserted"] == 1000
    # Five search pages at two a second: some were answered 429 and retried.
    assert m.stats()["status_counts"].get("429", 0) >= 1
    assert db.execute("SELECT count(*) FROM hs.contacts WHERE firstname LIKE 'r%'").fetchone()[0] == 1000


def test_plain_http_only_to_loopback(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
                   (psycopg.types.json.Jsonb({"base_url": "http://api.example.com"}),
                    psycopg.types.json.Jsonb({"access_token": TOKEN})))
    assert "plain http:// is only allowed to loopback addresses, not to api.example.com" in str(e.value)
    assert "allow_insecure_http" in e.value.diag.message_hint
    # https to anywhere is fine to register.
    db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
               (psycopg.types.json.Jsonb({"base_url": "https://api.example.com"}),
                psycopg.types.json.Jsonb({"access_token": TOKEN})))
    # Only a superuser may allow plain http elsewhere.
    db.execute("CREATE ROLE plain_user LOGIN")
    db.execute("SET ROLE plain_user")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("SET crm_sync.allow_insecure_http = on")
    db.execute("RESET ROLE")


@pytest.fixture
def self_signed_https(tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"https://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_tls_certificates_are_verified(db, self_signed_https):
    db.execute("SELECT crm_sync.create_source('hs', 'hubspot', %s, %s)",
               (psycopg.types.json.Jsonb({"base_url": self_signed_https, "max_retries": 0}),
                psycopg.types.json.Jsonb({"access_token": TOKEN})))
    # https to loopback is an internal address: allowed here by a superuser.
    db.execute("SET crm_sync.allowed_networks = '127.0.0.1/32'")
    with pytest.raises(psycopg.errors.ConnectionFailure) as e:
        sync(db, stream="deals")
    msg = str(e.value)
    assert 'source "hs", stream "deals"' in msg
    assert "certificate" in msg.lower()
    assert TOKEN not in msg


def test_a_body_excerpt_cut_inside_a_secret_shows_none_of_it(db, hubspot, pg_cluster):
    """The HTTP layer keeps the first 300 characters of an error body, and the
    extension scrubs after: a body cut two thirds into the token must not
    show the part before the cut."""
    token = "pat-na1-cut/inside+token=0123-4567-89ab"
    hubspot.admin("POST", "/_mock/token", {"token": token})
    create_source(db, hubspot, token=token)
    hubspot.fault(path_contains="/crm/v3/objects/contacts", count=0, kind="echo_secrets_cut")
    notices = collect_notices(db)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        sync(db, stream="contacts")
    detail = e.value.diag.message_detail
    assert_echoed(hubspot, kind="echo_secrets_cut", bearer=token)
    assert detail.endswith("[redacted]…"), detail
    assert_no_secret(seen_texts(db, pg_cluster, e.value, notices), [token])
    assert token[:8] not in detail
