"""The Pipedrive mock checked with Pipedrive's official Node client
(`pipedrive` 33.7.0 on npm, installed by scripts/setup.sh into tests/node):
cursor paging, windows, field metadata types, deleted deals, v1 users and
error bodies parse with it (tests/node/check_pipedrive.mjs)."""

import json
import subprocess

from conftest import PD_TOKEN, ROOT

SCRIPT = ROOT / "tests" / "node" / "check_pipedrive.mjs"


def run_client(mock):
    out = subprocess.run(["node", str(SCRIPT), mock.url, PD_TOKEN], capture_output=True, text=True,
                         timeout=120, cwd=SCRIPT.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_official_client_reads_the_mock(pd_factory):
    pd = pd_factory("--persons", "1200", "--users", "4")
    pd.delete("deals", 3)
    r = run_client(pd)
    # 1,200 persons in three pages of 500, each once.
    assert r["persons"] == {"count": 1200, "distinct": 1200, "pages": 3}
    p = r["person7"]
    assert p["id"] == 7 and p["is_deleted"] is False
    assert p["emails"][0]["primary"] is True and "@" in p["emails"][0]["value"]
    assert p["update_time"].endswith("Z")
    assert all(len(k) == 40 for k in p["custom_keys"]) and len(p["custom_keys"]) == 2
    # updated_since is inclusive, updated_until exclusive: [t, t) is empty.
    assert r["empty_window"] == 0
    # Every field type is one the client's enum knows; custom ones have hash keys.
    assert all(f["known"] for f in r["fields"]), [f for f in r["fields"] if not f["known"]]
    customs = [f for f in r["fields"] if f["custom"]]
    assert [f["name"] for f in customs] == ["Lead score", "Source channel"]
    assert all(len(f["code"]) == 40 for f in customs)
    assert (r["deals"], r["deleted_deals"]) == (39, 1)
    assert (r["organizations"], r["activities"]) == (30, 20)
    assert [u["id"] for u in r["users"]] == [1, 2, 3, 4]
    assert all(len(u["created"]) == 19 for u in r["users"])
    assert r["bad_token"] == "unauthorized access"
    assert "limit" in r["over_limit"] and "500" in r["over_limit"]
