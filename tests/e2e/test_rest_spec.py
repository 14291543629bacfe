"""The `rest` connector through the SQL API, against the mock's configurable
endpoint (/generic/items): every paging style, every way to authenticate,
incremental windows in the query, a POST body or If-Modified-Since, deletes,
and every kind of mistake in a spec."""

import copy

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import register, sync

STYLES = {
    # style: (records path, page-size parameter, paging)
    "cursor": ("$.items", "limit", {"type": "cursor", "cursor_path": "$.meta.next_cursor", "cursor_param": "cursor"}),
    "next_url": ("$.results", "limit", {"type": "next_url", "next_url_path": "$.next"}),
    "link": ("$", "limit", {"type": "link_header"}),
    "offset": ("$.items", "limit", {"type": "offset", "offset_param": "offset", "total_path": "$.total"}),
    "page": ("$.items", "per_page", {"type": "page_number", "page_param": "page", "has_more_path": "$.has_more"}),
    "none": ("$.items", None, {"type": "none"}),
}


def spec_for(mock, style="cursor", auth=None, **stream):
    path, size_param, paging = STYLES[style]
    request = {"path": "/generic/items", "params": {"style": style}}
    if size_param:
        request.update(page_size=10, page_size_param=size_param)
    s = {"name": "items", "request": request,
         "records": {"path": path, "primary_key": "id", "modified": "modified_at"},
         "paging": paging,
         "fields": {"columns": {"name": "text", "modified_at": "timestamptz", "deleted_at": "timestamptz"}}}
    s.update(stream)
    return {"spec_version": 1, "base_url": mock.url,
            "auth": auth or {"type": "bearer", "credential": "token"}, "streams": [s]}


def create_rest(db, spec, credentials=None, name="g", **options):
    register(db, name, "rest", {"spec": spec, **options}, credentials or {"token": "gen-token"})


def ids(db, table="g.items"):
    return [r[0] for r in db.execute(f"SELECT id::int FROM {table} ORDER BY id::int")]


def one(db, sql, *args):
    return db.execute(sql, args).fetchone()[0]


@pytest.mark.parametrize("style,calls", [("cursor", 3), ("next_url", 3), ("link", 3), ("offset", 3),
                                         ("page", 3), ("none", 1)])
def test_every_paging_style_reads_every_record_once(db, pipedrive, style, calls):
    create_rest(db, spec_for(pipedrive, style))
    r = sync(db, "g")["items"]
    assert (r["status"], r["records_read"], r["api_calls"]) == ("succeeded", 25, calls), r
    assert ids(db) == list(range(1, 26))
    assert one(db, "SELECT name FROM g.items WHERE id = '7'") == "Item 7"
    assert one(db, "SELECT modified_at = _updated_at FROM g.items WHERE id = '7'")


AUTHS = {
    "bearer": ({"type": "bearer", "credential": "token"}, {"token": "gen-token"}),
    "api_key_header": ({"type": "api_key", "in": "header", "name": "X-Api-Key", "credential": "key"},
                       {"key": "gen-key"}),
    "api_key_query": ({"type": "api_key", "in": "query", "name": "api_key", "credential": "key"},
                      {"key": "gen-key"}),
    "basic": ({"type": "basic"}, {"username": "gen-user", "password": "gen-pass"}),
    "oauth": (None, {"client_id": "pd-client", "client_secret": "pd-secret"}),
}


@pytest.mark.parametrize("mode", list(AUTHS))
def test_every_way_to_authenticate(db, pipedrive, mode):
    auth, creds = AUTHS[mode]
    if mode == "oauth":
        auth = {"type": "oauth2", "grant": "client_credentials", "token_url": pipedrive.url + "/oauth/token",
                "scopes": ["items:read"]}
    pipedrive.generic(auth=mode)
    create_rest(db, spec_for(pipedrive, "offset", auth=auth), creds)
    assert sync(db, "g")["items"]["records_read"] == 25
    # A wrong credential is refused with 28000, and never quoted.
    wrong = {k: v + "-wrong" for k, v in creds.items()}
    db.execute("SELECT crm_sync.alter_source('g', credentials => %s)", (Jsonb(wrong),))
    with pytest.raises(psycopg.Error) as e:
        sync(db, "g", full_refresh=True)
    assert e.value.sqlstate == "28000", e.value
    for v in wrong.values():
        assert v not in str(e.value)
        assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE error LIKE %s", f"%{v}%") == 0


def test_incremental_by_query_parameter(db, pipedrive):
    create_rest(db, spec_for(pipedrive, "cursor", incremental={
        "in": "query", "since": "since", "until": "until", "lookback": "PT0S"}))
    sync(db, "g")
    pipedrive.generic(change=[{"id": 3, "name": "Third, renamed"}])
    r = sync(db, "g")["items"]
    assert r["mode"] == "incremental"
    # The record at the watermark again (the window starts inclusively), and the change.
    assert (r["records_read"], r["records_upserted"]) == (2, 1), r
    assert one(db, "SELECT name FROM g.items WHERE id = '3'") == "Third, renamed"


def test_incremental_by_a_post_body_filter(db, pipedrive):
    create_rest(db, spec_for(pipedrive, "cursor", request={
        "method": "POST", "path": "/generic/items", "params": {"style": "cursor"},
        "body": {"filter": {}, "fields": ["id", "name"]}, "page_size": 10, "page_size_param": "limit"},
        incremental={"in": "body", "since": "filter.since", "lookback": "PT0S"}))
    assert sync(db, "g")["items"]["records_read"] == 25
    pipedrive.generic(change=[{"id": 3, "name": "Renamed"}])
    r = sync(db, "g")["items"]
    assert (r["records_read"], r["records_upserted"]) == (2, 1), r
    assert one(db, "SELECT name FROM g.items WHERE id = '3'") == "Renamed"


def test_incremental_by_if_modified_since_and_a_304(db, pipedrive):
    create_rest(db, spec_for(pipedrive, "none", incremental={"in": "header", "lookback": "PT0S"}))
    sync(db, "g")
    pipedrive.reset_stats()
    r = sync(db, "g")["items"]
    assert (r["status"], r["records_read"], r["api_calls"]) == ("succeeded", 0, 1)
    assert pipedrive.stats()["status_counts"] == {"304": 1}
    pipedrive.generic(change=[{"id": 2, "name": "Two"}])
    r = sync(db, "g")["items"]
    assert r["records_upserted"] == 1
    assert one(db, "SELECT name FROM g.items WHERE id = '2'") == "Two"


def test_deletes_by_deletion_time_and_by_a_listing(db, pipedrive):
    # A deletion time in the record.
    inc = {"in": "query", "since": "since", "lookback": "PT0S"}
    create_rest(db, spec_for(pipedrive, "cursor", incremental=inc, deletes={"deleted_at": {"path": "deleted_at"}}))
    sync(db, "g")
    pipedrive.generic(delete=[4])
    assert sync(db, "g")["items"]["records_deleted"] == 1
    assert one(db, "SELECT _deleted_at = deleted_at FROM g.items WHERE id = '4'")
    # A listing of deleted records beside the stream's.
    create_rest(db, spec_for(pipedrive, "cursor", incremental=inc,
                             deletes={"endpoint": {"params": {"deleted": "true"}}}), name="g2")
    r = sync(db, "g2")["items"]
    assert r["records_deleted"] == 1
    assert [x[0] for x in db.execute("SELECT id FROM g2.items WHERE _deleted_at IS NOT NULL")] == ["4"]


def test_a_next_page_link_to_another_host_is_refused(db, pipedrive):
    port = pipedrive.url.rsplit(":", 1)[1]
    pipedrive.generic(next_host=f"localhost:{port}")
    create_rest(db, spec_for(pipedrive, "next_url"))
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        sync(db, "g")
    assert f"points to http://localhost:{port}, not to http://127.0.0.1:{port}" in str(e.value)
    assert pipedrive.stats()["requests"] == 1


def test_streams_are_the_specs_and_discover_lists_their_fields(db, pipedrive):
    create_rest(db, spec_for(pipedrive, "cursor"))
    assert db.execute("SELECT stream, object FROM crm_sync.streams WHERE source = 'g'").fetchall() == \
        [("items", "items")]
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.add_stream('g', 'orders')")
    assert 'its spec has no stream "orders" (its streams: items)' in str(e.value)
    names = [r[0] for r in db.execute("SELECT property FROM crm_sync.discover('g', 'items') ORDER BY 1")]
    assert names == ["deleted_at", "modified_at", "name"]


# --- Mistakes in specs ------------------------------------------------------------

def register_spec(db, spec, name="gen"):
    db.execute("SELECT crm_sync.register_spec(%s, %s)", (name, Jsonb(spec)))


def mistake(db, spec):
    """The 22023 raised for a bad spec, registered and given inline."""
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register_spec(db, spec)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e2:
        register(db, "bad", "rest", {"spec": spec}, {})
    assert e2.value.diag.message_primary.startswith('source "bad": options.spec is not valid: ')
    return e.value.diag


def test_spec_mistakes_name_their_path(db, pipedrive):
    good = spec_for(pipedrive, "cursor")
    register_spec(db, good)
    three = copy.deepcopy(good)
    three["streams"] = [copy.deepcopy(good["streams"][0]) for _ in range(3)]
    for i, s in enumerate(three["streams"]):
        s["name"] = f"s{i}"
    del three["streams"][2]["paging"]["cursor_path"]
    d = mistake(db, three)
    assert d.message_primary == 'spec "gen" is not valid: streams[2].paging.cursor_path: missing'
    assert "docs/specs.md" in d.message_hint

    cases = [
        (lambda s: s["streams"][0]["paging"].update(type="cursorr"),
         'streams[0].paging.type: unknown value "cursorr" (expected one of: cursor, next_url, link_header, '
         'offset, page_number, none)'),
        (lambda s: s["streams"][0].update(pagination={}), "streams[0].pagination: unknown field"),
        (lambda s: s["streams"][0].update(incremental={"in": "query", "since": "s", "lookback": "5m"}),
         'streams[0].incremental.lookback: invalid duration "5m" (expected ISO 8601, e.g. PT5M)'),
        (lambda s: s.update(base_url="ftp://x"),
         'base_url: invalid URL "ftp://x" (expected an absolute http or https URL)'),
        (lambda s: s["streams"][0]["request"].update(page_size="10"),
         'streams[0].request.page_size: must be an integer from 1 to 10000, not "10"'),
        (lambda s: s.update(headers={"Authorization": "Bearer x"}),
         "headers.Authorization: reserved header (auth and the HTTP layer set it)"),
        (lambda s: s["streams"][0]["records"].pop("primary_key"), "streams[0].records.primary_key: missing"),
        (lambda s: s["streams"][0]["request"].update(path="generic/items"),
         'streams[0].request.path: must start with / (got "generic/items")'),
        (lambda s: s["streams"][0]["fields"]["columns"].update(name="varchar"),
         'streams[0].fields.columns.name: unknown value "varchar" (expected one of: text, numeric, bigint, '
         'boolean, date, timestamptz, time, jsonb)'),
        (lambda s: s.update(auth={"type": "api_key", "in": "cookie", "name": "k"}),
         'auth.in: unknown value "cookie" (expected one of: header, query)'),
        (lambda s: s["streams"][0].update(name="Items!"),
         'streams[0].name: invalid stream name "Items!" (lower-case letters, digits and _, at most 63, '
         "the landing table's name)"),
        (lambda s: s.update(rate_limit={"x-remaining": "a"}), 'rate_limit["x-remaining"]: unknown field'),
        (lambda s: s.update(streams=[]), "streams: must list at least one stream"),
    ]
    for change, want in cases:
        s = copy.deepcopy(good)
        change(s)
        d = mistake(db, s)
        assert d.message_primary == f'spec "gen" is not valid: {want}', d.message_primary
    # Every mistake at once, in the detail.
    s = copy.deepcopy(good)
    s["streams"][0]["paging"]["type"] = "cursorr"
    s["streams"][0]["extra"] = 1
    d = mistake(db, s)
    assert d.message_detail.startswith("2 mistakes in all:\n")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.register_spec('x', '[]')")
    assert "$: wrong type (expected object, got array)" in str(e.value)
    with pytest.raises(psycopg.errors.InvalidName):
        register_spec(db, good, name="hubspot")
    with pytest.raises(psycopg.errors.InvalidName):
        register_spec(db, good, name="Bad Name")


def test_a_spec_in_use_keeps_its_hosts(db, pipedrive):
    register_spec(db, spec_for(pipedrive, "cursor"))
    register(db, "g", "gen", {}, {"token": "gen-token"})
    assert sync(db, "g")["items"]["records_read"] == 25
    # Same hosts: replaced; the sources use the new spec at once.
    register_spec(db, spec_for(pipedrive, "offset"))
    assert sync(db, "g", full_refresh=True)["items"]["api_calls"] == 3
    # Another host would receive the stored credentials: refused.
    elsewhere = spec_for(pipedrive, "cursor")
    elsewhere["base_url"] = "https://api.example.com"
    with pytest.raises(psycopg.errors.ObjectInUse) as e:
        register_spec(db, elsewhere)
    assert "used by sources g and would send their credentials to other hosts" in str(e.value)
    # A spec whose auth the source's credentials do not fit: refused too.
    other_auth = spec_for(pipedrive, "cursor", auth={"type": "basic"})
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register_spec(db, other_auth)
    assert 'source "g": unknown credential "token" for provider gen' in str(e.value)
    assert one(db, "SELECT spec->'streams'->0->'paging'->>'type' FROM crm_sync.specs WHERE name = 'gen'") == "offset"
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        db.execute("SELECT crm_sync.drop_spec('gen')")
    db.execute("SELECT crm_sync.drop_source('g', drop_data => true)")
    db.execute("SELECT crm_sync.drop_spec('gen')")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        register(db, "g", "gen", {}, {"token": "gen-token"})
    assert 'unknown provider "gen"' in str(e.value)


def test_an_inline_spec_moving_hosts_needs_new_credentials(db, pipedrive):
    spec = spec_for(pipedrive, "cursor")
    create_rest(db, spec)
    moved = copy.deepcopy(spec)
    moved["base_url"] = "https://api.example.com"
    with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
        db.execute("SELECT crm_sync.alter_source('g', options => %s)", (Jsonb({"spec": moved}),))
    assert "needs new credentials in the same call" in str(e.value)
    # A plain-http spec base_url off loopback is refused.
    bad = copy.deepcopy(spec)
    bad["base_url"] = "http://api.example.com"
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        register(db, "g3", "rest", {"spec": bad}, {"token": "t"})


# --- Paging that would end too early, or never ------------------------------------

def offset_without_total(mock):
    """Offset paging against an endpoint that reports no total."""
    spec = spec_for(mock, "offset")
    spec["streams"][0]["request"]["params"]["no_total"] = "1"
    spec["streams"][0]["paging"] = {"type": "offset", "offset_param": "offset"}
    return spec


def test_a_page_size_the_api_caps_silently_is_no_end(db, pipedrive):
    # The spec asks for 10 a page, the API gives 5 and reports no total: a
    # short page is not the last one (stopping there lost 20 records, and a
    # reconciliation would then have marked them deleted).
    pipedrive.generic(max_page=5)
    create_rest(db, offset_without_total(pipedrive))
    r = sync(db, "g")["items"]
    assert r["records_read"] == 25, r
    assert r["api_calls"] == 6  # five pages of 5, then the empty one
    assert ids(db) == list(range(1, 26))


def test_an_api_that_ignores_the_paging_parameter_is_stopped(db, pipedrive):
    pipedrive.generic(ignore_paging=True)
    create_rest(db, offset_without_total(pipedrive))
    with pytest.raises(psycopg.errors.ProtocolViolation) as e:
        sync(db, "g")
    assert "sent the same page of stream items twice in a row" in str(e.value)
    assert pipedrive.stats()["requests"] == 2


def test_relative_next_links_are_read_against_the_request(db, pipedrive):
    pipedrive.generic(relative_links=True)
    create_rest(db, spec_for(pipedrive, "next_url"))
    assert sync(db, "g")["items"]["records_read"] == 25
    assert ids(db) == list(range(1, 26))


def test_an_api_key_echoed_into_next_links_is_sent_once_and_not_kept(db, pipedrive):
    # The API builds next links from the request's query string, the key
    # included; the connector takes it out (and adds its own once).
    pipedrive.generic(auth="api_key_query")
    auth, creds = AUTHS["api_key_query"]
    create_rest(db, spec_for(pipedrive, "next_url", auth=auth), creds)
    assert sync(db, "g")["items"]["records_read"] == 25
    assert one(db, "SELECT count(*) FROM crm_sync.runs WHERE error LIKE '%%gen-key%%'") == 0


def test_a_modification_time_the_spec_cannot_read_is_a_warning(db, pipedrive):
    spec = spec_for(pipedrive, "cursor")
    spec["streams"][0]["records"]["modified_format"] = "epoch_ms"  # the API writes RFC 3339
    create_rest(db, spec)
    r = sync(db, "g")["items"]
    assert (r["status"], r["records_read"], r["warnings"]) == ("succeeded", 25, 1), r
    sample = one(db, "SELECT warning_samples::text FROM crm_sync.runs WHERE source = 'g'")
    assert "25 records of stream items had no modification time readable at $.modified_at" in sample


def test_an_api_answering_past_the_end_with_its_last_page_again_ends_there(db, pipedrive):
    pipedrive.generic(repeat_last=True)
    create_rest(db, offset_without_total(pipedrive))
    r = sync(db, "g")["items"]
    assert (r["status"], r["records_upserted"], r["api_calls"]) == ("succeeded", 25, 4), r


def test_has_more_written_as_text_is_read(db, pipedrive):
    pipedrive.generic(has_more_text=True)
    create_rest(db, spec_for(pipedrive, "page"))
    r = sync(db, "g")["items"]
    assert (r["records_read"], r["api_calls"]) == (25, 3), r
