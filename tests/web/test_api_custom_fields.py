"""Custom fields declared in crm.toml shape the API's schemas, validation and filters (issue 16, point 3)."""

from __future__ import annotations

from .conftest import Api

API_TOML = '''
[[custom_fields]]
entity = "customer"
name = "tier"
type = "choice"
choices = ["gold", "silver"]
description = "membership tier"

[[custom_fields]]
entity = "customer"
name = "credit_limit"
type = "decimal"

[[custom_fields]]
entity = "deal"
name = "po"
type = "int"
required = true
'''


def test_declared_fields_are_in_the_schemas(api: Api) -> None:
    schemas = api.client("ann").get("/openapi.json").json()["components"]["schemas"]
    customer = schemas["CustomerAttributes"]["properties"]
    assert customer["tier"]["anyOf"][0]["enum"] == ["gold", "silver"]
    assert customer["tier"]["description"] == "membership tier"
    assert "credit_limit" in customer and "po" in schemas["DealAttributes"]["properties"]
    assert "po" in schemas["DealAttributesInput"]["properties"]


def test_declared_fields_are_validated_and_filterable(api: Api) -> None:
    client = api.client("ann")
    bad = client.post("/customers", json={"name": "Bad tier", "attributes": {"tier": "bronze"}})
    assert bad.status_code == 422 and "tier" in bad.text
    gold = client.post("/customers", json={"name": "Gold one", "attributes": {"tier": "gold",
                                                                               "credit_limit": "2500.50",
                                                                               "note": "undeclared keys are kept"}})
    assert gold.status_code == 201, gold.text
    assert gold.json()["attributes"] == {"tier": "gold", "credit_limit": "2500.50", "note": "undeclared keys are kept"}
    client.post("/customers", json={"name": "Silver one", "attributes": {"tier": "silver"}})
    found = client.get("/customers", params={"where": "attributes.tier=gold", "limit": 500}).json()["items"]
    assert [c["name"] for c in found] == ["Gold one"]
    deal = client.post("/deals", json={"customer_id": gold.json()["id"], "title": "No PO", "amount": "10",
                                       "currency": "CNY", "stage": "lead"})
    assert deal.status_code == 422 and any(e["field"].endswith("po") for e in deal.json()["errors"])
