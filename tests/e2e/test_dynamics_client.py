"""The Dataverse mock checked with the Node client Microsoft's docs point to
for the Web API, `dynamics-web-api` 2.5.0 (npm, installed by scripts/setup.sh
into tests/node): a tracked full read paged by nextLinks, the deltaLink with a
changed and a deleted row, formatted values, metadata and error bodies parse
with it (tests/node/check_dynamics.mjs)."""

import json
import subprocess

from conftest import DV_CREDENTIALS, DV_TENANT, ROOT

SCRIPT = ROOT / "tests" / "node" / "check_dynamics.mjs"


def test_the_vendor_client_reads_the_mock(dv_factory):
    dv = dv_factory("--contacts", "150")
    changed, deleted = dv.id("contact", 2), dv.id("contact", 3)
    out = subprocess.run(["node", str(SCRIPT), dv.url, DV_TENANT, DV_CREDENTIALS["client_id"],
                          DV_CREDENTIALS["client_secret"], changed, deleted],
                         capture_output=True, text=True, timeout=120, cwd=SCRIPT.parent)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    # 150 contacts over four pages of 40, each once; the last page's deltaLink.
    assert r["full"] == {"count": 150, "distinct": 150, "delta": True}
    assert r["first"]["state"] == 0 and r["first"]["state_label"] == "Active"
    assert len(r["first"]["parent"]) == 36
    # The client turns the API's whole-second UTC times into Date objects.
    assert r["first"]["modified_type"] == "object"
    assert r["delta"] == [{"changed": changed, "fullname": "Changed Person"},
                          {"deleted": deleted, "reason": "deleted"}]
    assert r["next_delta"] is True
    assert ["contact", "contacts", True] in r["tables"] and ["new_project", "new_projects", False] in r["tables"]
    assert r["bad_column"]["status"] == 400 and r["bad_column"]["code"] == "0x80060888"
    assert "nosuchcolumn" in r["bad_column"]["message"]
    assert r["throttled"]["status"] == 429 and r["throttled"]["code"] == "0x80072322"
    assert r["throttled"]["retry_after"] is not None
