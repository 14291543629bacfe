"""The Zoho mock checked with Zoho's official Node SDK for API v8
(`@zohocrm/nodejs-sdk-8.0` 2.0.0 on npm, installed by scripts/setup.sh into
tests/node): its token refresh (multipart form) against the mock's accounts
server, field metadata, Get Records over page tokens, typed values and the
error body for more than 50 fields (tests/node/check_zoho.mjs)."""

import json
import subprocess

from conftest import ROOT, ZOHO_CREDENTIALS

SCRIPT = ROOT / "tests" / "node" / "check_zoho.mjs"


def test_the_official_sdk_reads_the_mock(zoho_factory):
    zo = zoho_factory("--contacts", "450")
    c = ZOHO_CREDENTIALS
    out = subprocess.run(["node", str(SCRIPT), zo.url, c["client_id"], c["client_secret"], c["refresh_token"]],
                         capture_output=True, text=True, timeout=120, cwd=SCRIPT.parent)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    # 450 contacts in pages of 200 followed by page tokens, each once.
    assert (r["count"], r["distinct"], r["pages"]) == (450, 450, 3)
    first = r["first"]
    truth = zo.record("Contacts", first["id"])
    assert first["last_name"] == truth["Last_Name"]
    assert first["account_id"] == truth["Account_Name"]["id"]
    # The SDK read the +05:30 time as the same instant.
    assert first["modified"] == "2023-01-01T00:00:30.000Z"
    assert [v["value"] for v in first["languages"]] == truth["Languages"]
    assert r["too_many"] == {"status": 400, "code": "LIMIT_EXCEEDED", "message": "Fields limit exceeded."}
