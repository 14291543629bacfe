"""The HubSpot mock checked with HubSpot's official Python client
(hubspot-api-client): listing, search paging and properties parse with it."""

import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import Filter, FilterGroup, PublicObjectSearchRequest
from hubspot.crm.contacts.exceptions import ApiException

from conftest import TOKEN


@pytest.fixture
def client(hubspot):
    return HubSpot(access_token=TOKEN, host=hubspot.url)


def test_basic_api_list_pages_through_every_contact(client):
    seen, after = [], None
    while True:
        page = client.crm.contacts.basic_api.get_page(limit=100, after=after, properties=["email", "firstname"])
        seen += [r.id for r in page.results]
        assert all(r.properties["hs_object_id"] == r.id for r in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    assert len(seen) == 250 and len(set(seen)) == 250


def test_get_all_helper(client):
    assert len(client.crm.companies.get_all()) == 60


def test_search_pages_with_total_and_sort(client):
    req = PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=[Filter(property_name="lastmodifieddate", operator="GTE", value="0")])],
        sorts=[{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        properties=["email", "lastmodifieddate"], limit=100, after="0")
    first = client.crm.contacts.search_api.do_search(public_object_search_request=req)
    assert first.total == 250
    assert len(first.results) == 100
    stamps = [r.properties["lastmodifieddate"] for r in first.results]
    assert stamps == sorted(stamps)
    req.after = first.paging.next.after
    second = client.crm.contacts.search_api.do_search(public_object_search_request=req)
    assert not {r.id for r in first.results} & {r.id for r in second.results}


def test_properties_api(client):
    props = client.crm.properties.core_api.get_all(object_type="contacts").results
    by_name = {p.name: p for p in props}
    assert by_name["email"].type == "string"
    assert by_name["lastmodifieddate"].type == "datetime"
    assert by_name["loyalty_score"].type == "number"
    assert by_name["email"].hubspot_defined is True
    assert not by_name["favorite_color"].hubspot_defined


def test_errors_parse_as_api_exceptions(hubspot):
    bad = HubSpot(access_token="wrong", host=hubspot.url)
    with pytest.raises(ApiException) as e:
        bad.crm.contacts.basic_api.get_page(limit=10)
    assert e.value.status == 401
    assert "INVALID_AUTHENTICATION" in e.value.body
    with pytest.raises(ApiException) as e:
        HubSpot(access_token=TOKEN, host=hubspot.url).crm.contacts.basic_api.get_page(limit=101)
    assert e.value.status == 400
