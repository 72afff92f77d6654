"""Duplicates over HTTP: POST /customers answers 409 with the customers it looks like, GET /duplicates
asks the door check first, and a merge and its undo go through the same services, with their
permissions (on SQLite, PostgreSQL and MariaDB: the conftest's ``api`` fixture)."""

from __future__ import annotations

from .conftest import Api


def test_door_merge_and_undo_over_http(api: Api):
    client = api.client("ann")
    first = client.post("/customers", json={"name": "张伟", "email": "zhang.wei@example.com"})
    assert first.status_code == 201, first.text
    first_id = first.json()["id"]
    again = client.post("/customers", json={"name": "Zhang Wei", "email": "ZHANG.WEI@example.com"})
    assert again.status_code == 409 and again.json()["type"].endswith("/duplicate")
    assert again.json()["errors"][0]["customer_id"] == first_id
    assert "looks like customer" in again.json()["detail"]
    asked = client.get("/duplicates", params={"email": "Zhang.Wei@Example.com"})
    assert asked.status_code == 200 and [m["customer_id"] for m in asked.json()] == [first_id]
    other = api.crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@example.com", on_duplicate="add")
    clusters = client.get("/duplicates/clusters", params={"min_score": 0.95})
    assert clusters.status_code == 200 and clusters.json()[0]["ids"] == [first_id, other.id]
    refused = api.client("otto").post(f"/customers/{first_id}/merge", json={"others": [other.id]})
    assert refused.status_code == 403  # a read-only user may not merge
    merged = client.post(f"/customers/{first_id}/merge", json={"others": [other.id]})
    assert merged.status_code == 201, merged.text
    assert merged.json()["merged_ids"] == [other.id]
    assert api.client("otto").post(f"/merges/{merged.json()['merge_id']}/undo").status_code == 403
    undone = client.post(f"/merges/{merged.json()['merge_id']}/undo")
    assert undone.status_code == 200 and undone.json()["kept_id"] == first_id
    twice = client.post(f"/merges/{merged.json()['merge_id']}/undo")
    assert twice.status_code == 409 and twice.json()["type"].endswith("/merge-refused")
