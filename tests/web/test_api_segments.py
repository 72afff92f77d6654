"""Segmentation over a real uvicorn process, on SQLite, PostgreSQL and MariaDB.

The strategy ``probe-city`` comes from a plugin directory (family_plugins/api_probe.py) the
API has no code for: its run route, typed options and members appear from the registry.
Members are checked against a direct SQL count of the customers.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from crmcore.store import tables

from .conftest import Api

API_TOML = f'plugins_dir = "{(Path(__file__).parent / "family_plugins").as_posix()}"\n'


def _customers(api: Api, city: str, owners: list[str]) -> list[int]:
    client = api.client("ann")
    ids = []
    for n, owner in enumerate(owners):
        made = client.post("/customers", json={"name": f"{city} {n}", "city": city, "owner": owner})
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    return ids


def _sql_ids(api: Api, city: str, owner: str | None = None) -> list[int]:
    """The customers of a city, read with SQL (not through the API or the segment engine)."""
    c = tables.customers
    query = select(c.c.id).where(c.c.city == city, c.c.archived_at.is_(None)).order_by(c.c.id)
    if owner is not None:
        query = query.where(c.c.owner == owner)
    with api.crm.engine.connect() as conn:
        return list(conn.execute(query).scalars())


def _all_pages(client, url: str) -> list[dict]:
    items: list[dict] = []
    while url:
        page = client.get(url)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        url = page.json()["next"]
    return items


def test_a_plugin_strategy_appears_with_its_typed_options(api: Api) -> None:
    client = api.client("otto")  # any role reads the catalog
    listed = {s["name"]: s for s in client.get("/segments/strategies").json()}
    assert {"probe-city", "rfm", "value-tier"} <= set(listed)
    options = listed["probe-city"]["options"]["properties"]
    assert options["city"]["default"] == "Lyon"
    assert options["mode"]["anyOf"][0]["enum"] == ["exact", "prefix"]
    assert options["min_id"]["anyOf"][0]["type"] == "integer"
    assert "whose customers are" in options["city"]["description"]
    document = client.get("/openapi.json").json()
    body = document["paths"]["/segments/probe-city/runs"]["post"]["requestBody"]["content"]["application/json"]
    assert "SegmentsProbeCityOptions" in str(body["schema"])
    assert "SegmentsValueTierOptions" in document["components"]["schemas"]


def test_run_poll_and_members_match_sql(api: Api) -> None:
    city = f"Lyon-{uuid.uuid4().hex[:6]}"
    mine = _customers(api, city, ["rita", "max", "rita", "max", "rita"])
    client = api.client("ann")
    started = client.post("/segments/probe-city/runs?as_of=2030-06-30", json={"city": city})
    assert started.status_code == 201, started.text
    run = started.json()
    assert started.headers["location"] == f"/segments/runs/{run['id']}"
    polled = client.get(started.headers["location"]).json()
    assert polled == run and polled["as_of"].startswith("2030-06-30T")
    assert polled["options"] == {"city": city, "mode": "exact", "min_id": 1}
    with api.crm.engine.connect() as conn:
        everyone = conn.execute(select(tables.customers.c.id).where(
            tables.customers.c.archived_at.is_(None))).all()
    assert run["members"] == len(everyone)
    assert run["counts"]["in-city"] == len(_sql_ids(api, city)) == len(mine)
    pages = _all_pages(client, f"/segments/probe-city/members?segment=in-city&limit=2&run_id={run['id']}")
    assert [m["customer_id"] for m in pages] == _sql_ids(api, city)
    assert {m["segment"] for m in pages} == {"in-city"}
    # Without run_id: the latest run, pinned in the next link.
    first = client.get("/segments/probe-city/members?segment=in-city&limit=1").json()
    assert first["run_id"] == run["id"] and f"run_id={run['id']}" in first["next"]
    runs = client.get("/segments/runs?strategy=probe-city&limit=1").json()
    assert [r["id"] for r in runs] == [run["id"]]
    explained = client.get(f"/segments/probe-city/explain/{mine[0]}").json()
    assert (explained["segment"], explained["run_id"], explained["customer_id"]) == ("in-city", run["id"], mine[0])


def test_bad_options_are_422_naming_the_option(api: Api) -> None:
    client = api.client("ann")
    for body, field in (({"mode": "fuzzy"}, "mode"), ({"min_id": 0}, "min_id"), ({"min_id": "many"}, "min_id"),
                        ({"cty": "Lyon"}, "cty")):
        response = client.post("/segments/probe-city/runs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in response.json()["errors"]] == [field]
    bad_time = client.post("/segments/probe-city/runs?as_of=yesterday")
    assert bad_time.status_code == 422 and bad_time.json()["errors"][0]["field"] == "as_of"
    assert client.post("/segments/no-such/runs").status_code == 404
    assert client.get("/segments/runs/2147483647").status_code == 404


def test_roles_and_visibility(api: Api) -> None:
    city = f"Nice-{uuid.uuid4().hex[:6]}"
    ids = _customers(api, city, ["rita", "max", "max", "rita"])
    api.client("ann").post("/segments/probe-city/runs", json={"city": city}).raise_for_status()
    assert api.client("rita").post("/segments/probe-city/runs", json={"city": city}).status_code == 403
    assert api.client("sam").get("/segments/probe-city/members").status_code == 403
    url = "/segments/probe-city/members?segment=in-city&limit=1"
    seen = [m["customer_id"] for m in _all_pages(api.client("rita"), url)]
    assert seen == _sql_ids(api, city, owner="rita")
    assert [m["customer_id"] for m in _all_pages(api.client("otto"), url)] == _sql_ids(api, city)
    others = [i for i in ids if i not in seen]
    assert api.client("rita").get(f"/segments/probe-city/explain/{others[0]}").status_code == 404
    value_tier = api.client("ann").post("/segments/value-tier/runs", json={}).json()
    wrong = api.client("ann").get(f"/segments/probe-city/members?run_id={value_tier['id']}")
    assert wrong.status_code == 422


def test_a_run_in_the_background_is_a_job(api: Api) -> None:
    """No broker on the test server: the job runs before the answer; 202 and the job's URL either way."""
    city = f"Nantes-{uuid.uuid4().hex[:6]}"
    _customers(api, city, ["rita", "max"])
    client = api.client("ann")
    started = client.post("/segments/probe-city/runs?background=true&as_of=2030-06-30", json={"city": city})
    assert started.status_code == 202, started.text
    job = started.json()
    assert started.headers["location"] == f"/jobs/{job['id']}"
    assert (job["kind"], job["actor"], job["args"]["strategy"]) == ("segments.run", "ann", "probe-city")
    polled = client.get(started.headers["location"]).json()
    assert polled["status"] == "done", polled["error"]
    run = client.get(f"/segments/runs/{polled['result']['run_id']}").json()
    assert run["counts"]["in-city"] == len(_sql_ids(api, city)) == 2
    assert job["id"] in [j["id"] for j in client.get("/jobs?kind=segments.run").json()]
    assert api.client("rita").post("/segments/probe-city/runs?background=true", json={"city": city}).status_code == 403
    assert api.client("rita").get(f"/jobs/{job['id']}").status_code == 404  # not hers
    assert client.post("/segments/probe-city/runs?background=true&as_of=nonsense", json={}).status_code == 422
