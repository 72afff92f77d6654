"""The entity resources over a real uvicorn process, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from decimal import Decimal

from crmcore import CRM

from .conftest import Api


def test_create_get_and_etag(api: Api) -> None:
    client = api.client("ann")
    created = client.post("/customers", json={"name": "张伟", "email": "Zhang.Wei@Example.com", "owner": "rita"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["email"] == "Zhang.Wei@example.com"  # the core's normalisation
    assert created.headers["location"] == f"/customers/{body['id']}"
    fetched = client.get(created.headers["location"])
    assert fetched.status_code == 200
    assert fetched.json() == body
    assert fetched.headers["etag"] == created.headers["etag"]
    stored = api.crm.customers.get(body["id"])
    assert stored.name == "张伟" and stored.owner == "rita"


def test_validation_is_422_naming_every_field(api: Api) -> None:
    response = api.client("ann").post("/customers", json={"name": "X", "email": "no-at-sign", "country": "Narnia"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {e["field"] for e in problem["errors"]} == {"email", "country"}
    assert "Traceback" not in response.text


def test_stale_write_is_412_and_nothing_is_lost(api: Api) -> None:
    client = api.client("ann")
    created = client.post("/customers", json={"name": "Versioned"}).json()
    first = client.get(f"/customers/{created['id']}")
    tag = first.headers["etag"]
    ok = client.patch(f"/customers/{created['id']}", json={"city": "Shanghai"}, headers={"If-Match": tag})
    assert ok.status_code == 200 and ok.json()["city"] == "Shanghai"
    stale = client.patch(f"/customers/{created['id']}", json={"city": "Beijing"}, headers={"If-Match": tag})
    assert stale.status_code == 412
    assert api.crm.customers.get(created["id"]).city == "Shanghai"


def test_idempotent_create_returns_the_first_record(api: Api) -> None:
    client = api.client("ann")
    before = api.crm.customers.count()
    headers = {"Idempotency-Key": "order-4711"}
    first = client.post("/customers", json={"name": "Once"}, headers=headers)
    again = client.post("/customers", json={"name": "Once"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["idempotency-replayed"] == "true"
    assert api.crm.customers.count() == before + 1
    other = client.post("/customers", json={"name": "Different"}, headers=headers)
    assert other.status_code == 422


def test_keyset_pages_cover_every_row_once(api: Api) -> None:
    client = api.client("ann")
    for i in range(7):
        assert client.post("/customers", json={"name": f"page-{i}", "industry": "paging"}).status_code == 201
    seen: list[str] = []
    url: str | None = "/customers?where=industry=paging&sort=-name&limit=3"
    while url:
        page = client.get(url).json()
        seen += [c["name"] for c in page["items"]]
        url = page["next"]
    assert seen == sorted((f"page-{i}" for i in range(7)), reverse=True)


def test_tokens_and_visibility(api: Api) -> None:
    assert api.client(None).get("/customers").status_code == 401
    bad = httpx_get(api, "/customers", "crm_not-a-token")
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")
    ann = api.client("ann")
    mine = ann.post("/customers", json={"name": "Rita's", "owner": "rita"}).json()
    theirs = ann.post("/customers", json={"name": "Max's", "owner": "max"}).json()
    rita = api.client("rita")
    assert rita.get(f"/customers/{mine['id']}").status_code == 200
    assert rita.get(f"/customers/{theirs['id']}").status_code == 404  # invisible, not forbidden
    listed = {c["id"] for c in rita.get("/customers?limit=500").json()["items"]}
    assert mine["id"] in listed and theirs["id"] not in listed
    assert api.client("otto").post("/customers", json={"name": "nope"}).status_code == 403


def test_deal_money_is_exact_and_moves(api: Api) -> None:
    client = api.client("ann")
    customer = client.post("/customers", json={"name": "Buyer"}).json()
    deal = client.post("/deals", json={"customer_id": customer["id"], "title": "Big", "amount": "1234.5",
                                       "currency": "CNY", "stage": "lead"})
    assert deal.status_code == 201, deal.text
    assert Decimal(deal.json()["amount"]) == Decimal("1234.5")
    moved = client.post(f"/deals/{deal.json()['id']}/move", json={"stage": "won"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["stage"] == "won"


def test_delete_archives_and_audit_names_the_user(api: Api) -> None:
    client = api.client("ann")
    customer = client.post("/customers", json={"name": "Leaving"}).json()
    assert client.delete(f"/customers/{customer['id']}").status_code == 204
    assert client.get(f"/customers/{customer['id']}").json()["archived_at"] is not None
    assert client.post(f"/customers/{customer['id']}/restore").status_code == 200
    from crmcore.application.audit import records
    with api.crm.unit(readonly=True) as uow:
        actions = [(r.actor, r.action) for r in records(uow.conn, customer_id=customer["id"])]
    assert ("ann", "customer.create") in actions and ("ann", "customer.archive") in actions


def httpx_get(api: Api, path: str, token: str):  # type: ignore[no-untyped-def]
    import httpx
    return httpx.get(api.base_url + path, headers={"Authorization": f"Bearer {token}"})


def test_plugin_route_and_custom_field_in_the_schema(api: Api) -> None:
    """acme (the docs' example plugin) adds a route with register_routes and a custom field: both are
    in the API without HTTP code in the core."""
    client = api.client("ann")
    schema = client.get("/openapi.json").json()
    assert "/acme/accounts/{customer_id}" in schema["paths"]
    attributes = schema["components"]["schemas"]["CustomerAttributes"]["properties"]
    assert "acme_account" in attributes
    customer = client.post("/customers", json={"name": "Acme Co", "attributes": {"acme_account": "A-17"},
                                               "owner": "rita"}).json()
    assert client.get(f"/acme/accounts/{customer['id']}").json() == {"customer_id": customer["id"],
                                                                     "acme_account": "A-17"}
    other = client.post("/customers", json={"name": "Not Rita's", "owner": "max"}).json()
    assert api.client("rita").get(f"/acme/accounts/{other['id']}").status_code == 404
    assert api.client(None).get(f"/acme/accounts/{customer['id']}").status_code == 401


def test_every_route_checks_the_token_whatever_it_does(api: Api) -> None:
    """The token is checked by the request's first unit of work; a route that opens none, or fails
    before it would, still answers 401 to a bad token, and current_user gives a plugin the login."""
    bad = "crm_" + "x" * 43
    for path in ("/acme/version", "/acme/whoami", "/customers/0", "/customers?limit=0", "/customers/1"):
        assert httpx_get(api, path, bad).status_code == 401, path
    assert api.client("rita").get("/acme/whoami").json() == {"login": "rita"}
    assert api.client("rita").get("/acme/version").status_code == 200
    token_id, secret = _new_token(api, "rita")
    assert httpx_get(api, "/acme/version", secret).status_code == 200
    api.crm.tokens.revoke(token_id)
    for path in ("/acme/version", "/customers"):
        assert httpx_get(api, path, secret).status_code == 401, path


def _new_token(api: Api, login: str) -> tuple[int, str]:
    with api.crm.acting("ann"):
        token, secret = api.crm.tokens.create(login, "short-lived")
    return token.id, secret


def test_concurrent_retries_with_one_key_make_one_record(api: Api) -> None:
    """Eight clients send the same create with the same key at once: one customer, eight equal answers."""
    from concurrent.futures import ThreadPoolExecutor

    body = {"name": "Raced", "external_id": "race-1"}
    headers = {"Idempotency-Key": "race-key-1"}

    def post(_: int) -> tuple[int, dict]:  # type: ignore[type-arg]
        with api.client("ann") as client:
            response = client.post("/customers", json=body, headers=headers)
            return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(8)))
    assert {status for status, _ in answers} == {201}, answers
    assert len({data["id"] for _, data in answers}) == 1
    assert api.crm.customers.count({"external_id": "race-1"}) == 1


def test_revoked_token_stops_at_the_next_request(api: Api) -> None:
    stored, secret = api.crm.tokens.create("max", "short-lived")
    client = api.client(None, headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/customers?limit=1").status_code == 200
    api.crm.tokens.revoke(stored.id)
    refused = client.get("/customers?limit=1")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]


def test_task_routes_with_roles_and_visibility(api: Api) -> None:
    rita, otto = api.client("rita"), api.client("otto")
    mine = rita.post("/customers", json={"name": "回访客户", "owner": "rita"}).json()
    theirs = api.crm.customers.add(name="别人的客户", owner="max")
    created = rita.post("/tasks", json={"customer_id": mine["id"], "title": "回访", "due": "2026-12-08T10:00:00+08:00",
                                        "assignee": "rita", "priority": "high"})
    assert created.status_code == 201, created.text
    task = created.json()
    assert (task["status"], task["due"], task["source"]) == ("open", "2026-12-08T02:00:00+00:00", "manual")
    assert created.headers["location"] == f"/tasks/{task['id']}"
    listed = rita.get("/tasks", params={"where": ["status=open", f"customer_id={mine['id']}"]}).json()
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    assert otto.post(f"/tasks/{task['id']}/done").status_code == 403  # read-only may read, not complete
    assert otto.get(f"/tasks/{task['id']}").status_code == 200
    done = rita.post(f"/tasks/{task['id']}/done")
    assert done.status_code == 200 and done.json()["status"] == "done" and done.json()["completed_at"]
    assert api.crm.tasks.get(task["id"]).status.value == "done"
    hidden = api.crm.tasks.add(customer_id=theirs.id, title="not rita's", assignee="rita")
    assert rita.get(f"/tasks/{hidden.id}").status_code == 404
    assert rita.post(f"/tasks/{hidden.id}/cancel").status_code == 404
    refused = rita.post("/tasks", json={"customer_id": theirs.id, "title": "x"})
    assert refused.status_code == 422 and "does not exist" in refused.text
    bad = rita.post("/tasks", json={"customer_id": mine["id"], "title": "x", "priority": "asap"})
    assert bad.status_code == 422
