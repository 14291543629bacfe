"""The Salesforce mock checked with simple-salesforce: query paging through
nextRecordsUrl, describe, describeGlobal and expired sessions parse with it.

simple-salesforce builds its OAuth URLs as https://{domain}.salesforce.com,
and every API URL as https://{instance}, so it cannot reach a mock on
http://127.0.0.1 by itself: the token comes from the mock's OAuth endpoint
with requests (as after any external login), and the client gets a session
whose adapter sends its https://127.0.0.1 calls as plain http."""

import os
import subprocess
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceMalformedRequest

ROOT = Path(__file__).resolve().parents[2]
MOCK_BIN = Path(os.environ.get("CRM_MOCK_BIN", ROOT / "target" / "release" / "crm-mock"))
CLIENT_ID = "e2e-client"
CLIENT_SECRET = "e2e-secret"
REFRESH_TOKEN = "e2e-refresh"


@pytest.fixture(scope="module")
def sf_mock():
    if not MOCK_BIN.exists():
        pytest.skip(f"{MOCK_BIN} not built (cargo build --release -p crm-mock)")
    proc = subprocess.Popen(
        [str(MOCK_BIN), "salesforce", "--port", "0", "--accounts", "4500", "--invoices", "30",
         "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, "--refresh-token", REFRESH_TOKEN,
         "--session-calls", "25"],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on 127.0.0.1:"), line
    url = "http://" + line.split()[-1]
    yield url
    proc.terminate()
    proc.wait(timeout=10)


class PlainHttp(HTTPAdapter):
    """Sends https://127.0.0.1 requests as http (the mock speaks no TLS)."""

    def send(self, request, **kwargs):
        request.url = request.url.replace("https://", "http://", 1)
        return super().send(request, **kwargs)


def client(t):
    session = requests.Session()
    session.mount("https://127.0.0.1", PlainHttp())
    return Salesforce(instance_url=t["instance_url"], session_id=t["access_token"], session=session)


def token(url, **form):
    r = requests.post(f"{url}/services/oauth2/token", data=form, timeout=10)
    r.raise_for_status()
    return r.json()


@pytest.fixture
def sf(sf_mock):
    t = token(sf_mock, grant_type="client_credentials", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert t["instance_url"] == sf_mock and t["token_type"] == "Bearer" and "expires_in" not in t
    return client(t)


def test_query_more_follows_next_records_url(sf):
    first = sf.query("SELECT Id, Name, SystemModstamp FROM Account ORDER BY SystemModstamp, Id")
    assert first["done"] is False and len(first["records"]) == 2000
    seen = [r["Id"] for r in first["records"]]
    page = first
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        seen += [r["Id"] for r in page["records"]]
    assert len(seen) == first["totalSize"] == len(set(seen))
    assert all(len(i) == 18 and i.startswith("001") for i in seen)


def test_query_all_includes_deleted_records(sf):
    live = sf.query_all("SELECT Id FROM Account")["totalSize"]
    everything = sf.query_all("SELECT Id, IsDeleted FROM Account", include_deleted=True)
    assert everything["totalSize"] == 4500 > live
    assert sum(r["IsDeleted"] for r in everything["records"]) == 4500 - live


def test_describe_account_and_custom_object(sf):
    d = sf.Account.describe()
    fields = {f["name"]: f for f in d["fields"]}
    assert fields["BillingAddress"]["type"] == "address"
    assert fields["Tier__c"]["custom"] is True and fields["Tier__c"]["picklistValues"]
    inv = sf.Invoice__c.describe()
    assert inv["custom"] is True and inv["keyPrefix"] == "a01"
    assert {"Amount__c", "Due_Time__c", "SystemModstamp"} <= {f["name"] for f in inv["fields"]}
    rows = sf.query("SELECT Id, Name, Amount__c, Paid__c FROM Invoice__c")["records"]
    assert 0 < len(rows) <= 30 and all(isinstance(r["Paid__c"], bool) for r in rows)


def test_sobjects_listing(sf):
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Contact", "Lead", "Opportunity", "User", "Invoice__c", "Wide__c"} <= names
    assert sf.api_usage  # parsed from Sforce-Limit-Info


def test_bad_soql_raises_malformed_request(sf):
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.query("SELECT Id, Nope__c FROM Account")
    assert e.value.content[0]["errorCode"] == "INVALID_FIELD"


def test_expired_session_raises(sf_mock):
    t = token(sf_mock, grant_type="refresh_token", client_id=CLIENT_ID, refresh_token=REFRESH_TOKEN)
    sf = client(t)
    for _ in range(25):
        sf.query("SELECT COUNT() FROM Lead")
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT COUNT() FROM Lead")
    requests.post(f"{sf_mock}/_mock/sf/expire_sessions", timeout=10)
    r = requests.post(f"{sf_mock}/services/oauth2/token", timeout=10,
                      data={"grant_type": "refresh_token", "client_id": "nope", "refresh_token": REFRESH_TOKEN})
    assert r.status_code == 400 and r.json()["error"] == "invalid_client_id"


def test_get_deleted_and_query_all_see_what_the_org_deleted(sf, sf_mock):
    """sf.Account.deleted(start, end) parses the mock's getDeleted answer:
    hard deletes and recycle-bin deletes with their dates, and
    earliestDateAvailable; queryAll keeps what sits in the recycle bin, not
    what was purged; a start over 30 days back is INVALID_REPLICATION_DATE."""
    from datetime import datetime, timedelta, timezone
    live = [r["Id"] for r in sf.query("SELECT Id FROM Account ORDER BY Id LIMIT 3")["records"]]
    admin = lambda path, body: requests.post(f"{sf_mock}/_mock/sf/Account/{path}", json=body, timeout=10)
    admin("hard_delete", {"ids": [live[0]]}).raise_for_status()
    admin("delete", {"ids": [live[1], live[2]]}).raise_for_status()
    admin("purge", {"ids": [live[2]]}).raise_for_status()
    now = datetime.now(timezone.utc)
    got = sf.Account.deleted(now - timedelta(days=1), now + timedelta(seconds=5))
    assert {d["id"] for d in got["deletedRecords"]} == set(live)
    assert all(d["deletedDate"].endswith("+0000") for d in got["deletedRecords"])
    assert got["earliestDateAvailable"] and got["latestDateCovered"]
    everything = {r["Id"] for r in sf.query_all("SELECT Id FROM Account", include_deleted=True)["records"]}
    assert live[1] in everything and live[0] not in everything and live[2] not in everything
    with pytest.raises(SalesforceMalformedRequest) as e:
        sf.Account.deleted(now - timedelta(days=31), now)
    assert e.value.content[0]["errorCode"] == "INVALID_REPLICATION_DATE"


def test_query_hides_archived_tasks_and_query_all_returns_them(sf):
    shown = sf.query_all("SELECT Id, IsArchived FROM Task")["records"]
    everything = sf.query_all("SELECT Id, IsArchived FROM Task WHERE IsDeleted = false",
                              include_deleted=True)["records"]
    assert not any(r["IsArchived"] for r in shown)
    assert len(everything) > len(shown) and any(r["IsArchived"] for r in everything)
    fields = {f["name"]: f for f in sf.Invoice__c.describe()["fields"]}
    assert fields["Days_Overdue__c"]["calculated"] is True and fields["Days_Overdue__c"]["calculatedFormula"]
    assert fields["Amount__c"]["calculated"] is False
