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
    for _ in range(10):
        page = client.crm.contacts.basic_api.get_page(limit=100, after=after, properties=["email", "firstname"])
        seen += [r.id for r in page.results]
        assert all(r.properties["hs_object_id"] == r.id for r in page.results)
        if page.paging is None:
            break
        after = page.paging.next.after
    else:
        raise AssertionError("more than 10 pages of 100 for 250 contacts")
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


def test_list_with_associations(client, hubspot):
    hubspot.upsert("deals", [{"id": "3", "associations": {"companies": ["12", "7"]}}])
    page = client.crm.deals.basic_api.get_page(limit=5, associations=["companies"])
    by_id = {r.id: r for r in page.results}
    companies = by_id["3"].associations["companies"].results
    assert [(a.id, a.type) for a in companies] == [
        ("12", "deal_to_company"), ("7", "deal_to_company_unlabeled"), ("12", "deal_to_company_unlabeled")]
    # Seeded deals have a primary company too; contacts were not asked for.
    assert all(r.associations["companies"].results[0].type == "deal_to_company" for r in page.results)
    assert all("contacts" not in r.associations for r in page.results)
    one = client.crm.deals.basic_api.get_by_id("3", associations=["contacts"])
    assert one.associations["contacts"].results[0].type == "deal_to_contact"


def test_v4_batch_read_parses_with_207(client, hubspot):
    from hubspot.crm.associations.v4 import BatchInputPublicFetchAssociationsBatchRequest

    hubspot.upsert("deals", [{"id": "2", "associations": {"companies": []}}])
    req = BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": "1"}, {"id": "2"}])
    resp = client.crm.associations.v4.batch_api.get_page("deals", "companies", req)
    assert resp.status == "COMPLETE"
    assert [r._from.id for r in resp.results] == ["1"]
    to = resp.results[0].to[0]
    assert int(to.to_object_id) > 0
    assert [(t.type_id, t.label) for t in to.association_types] == [(5, "Primary"), (341, None)]
    assert resp.num_errors == 1
    assert resp.errors[0].sub_category == "crm.associations.NO_ASSOCIATIONS_FOUND"
    assert resp.errors[0].context["fromObjectId"] == ["2"]


def test_batch_read_parses_found_records_and_errors(client, hubspot):
    """`POST /crm/v3/objects/contacts/batch/read`, as reconciliation reads
    records that never landed: found ones in results, a purged id in the
    207's errors."""
    from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId
    hubspot.admin("POST", "/_mock/contacts/purge", {"ids": ["8"]})
    req = BatchReadInputSimplePublicObjectId(
        properties=["email", "lastmodifieddate"], properties_with_history=[],
        inputs=[SimplePublicObjectId(id=i) for i in ("7", "8", "9")])
    out = client.crm.contacts.batch_api.read(batch_read_input_simple_public_object_id=req)
    assert out.status == "COMPLETE"
    assert sorted(r.id for r in out.results) == ["7", "9"]
    assert all(r.properties["email"] and r.properties["lastmodifieddate"] for r in out.results)
    assert out.num_errors == 1
    assert out.errors[0].category == "OBJECT_NOT_FOUND"
    assert out.errors[0].context == {"ids": ["8"]}
    # The purged id is gone from the list too.
    ids = [r.id for r in client.crm.contacts.get_all()]
    assert "8" not in ids and len(ids) == 249


def test_merge_api_returns_a_record_with_a_new_id(client):
    """`POST /crm/v3/objects/contacts/merge` as HubSpot's client sends it:
    the merged record has a new id and names both old ones in
    hs_merged_object_ids; the old ids leave the list."""
    from hubspot.crm.contacts import PublicMergeInput
    out = client.crm.contacts.basic_api.merge(
        public_merge_input=PublicMergeInput(primary_object_id="20", object_id_to_merge="21"))
    assert out.id not in ("20", "21") and int(out.id) > 250
    again = client.crm.contacts.basic_api.get_by_id(out.id, properties=["hs_merged_object_ids"])
    assert again.properties["hs_merged_object_ids"] == "20;21"
    ids = {r.id for r in client.crm.contacts.get_all()}
    assert "20" not in ids and "21" not in ids and out.id in ids
    with pytest.raises(ApiException) as e:
        client.crm.contacts.basic_api.merge(
            public_merge_input=PublicMergeInput(primary_object_id="20", object_id_to_merge="22"))
    assert e.value.status == 404
