"""Loyalty over a real uvicorn process, on SQLite, PostgreSQL and MariaDB: balances, history,
idempotent redemption (also retried concurrently), rewards, roles and visibility."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from crmcore.store import tables

from .conftest import Api

API_TOML = """
[[loyalty.rewards.catalogue]]
name = "mug"
cost = 40
stock = 1
"""


def _customer(api: Api, points: int, owner: str = "rita") -> int:
    made = api.client("ann").post("/customers", json={"name": f"L {uuid.uuid4().hex[:6]}", "owner": owner})
    assert made.status_code == 201, made.text
    cid: int = made.json()["id"]
    if points:
        api.crm.loyalty.adjust(cid, points, "points", "test set-up")
    return cid


def _ledger(api: Api, cid: int) -> tuple[int, int]:
    """(entries, sum of points) of a customer's points ledger, read with SQL."""
    ledger = tables.loyalty_ledger
    with api.crm.engine.connect() as conn:
        n, total = conn.execute(select(func.count(), func.coalesce(func.sum(ledger.c.points), 0)).where(
            ledger.c.customer_id == cid, ledger.c.scheme == "points")).one()
    return int(n), int(total)


def test_balance_and_history_match_the_ledger(api: Api) -> None:
    cid = _customer(api, 120)
    client = api.client("rita")
    spent = client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 45, "reason": "voucher"})
    assert spent.status_code == 201, spent.text
    assert (spent.json()["points"], spent.json()["kind"], spent.json()["actor"]) == (-45, "redeem", "rita")
    status = client.get(f"/customers/{cid}/loyalty?scheme=points").json()
    assert status["customer_id"] == cid and set(status["schemes"]) == {"points"}
    history = client.get(f"/customers/{cid}/loyalty/history?scheme=points").json()
    assert [e["points"] for e in history] == [120, -45]
    assert status["schemes"]["points"]["balance"] == sum(e["points"] for e in history) == _ledger(api, cid)[1] == 75
    assert client.get(f"/customers/{cid}/loyalty?as_of=not-a-date").status_code == 422
    assert client.get(f"/customers/{cid}/loyalty/history?scheme=nope").status_code == 404


def test_retried_redemption_is_one_entry(api: Api) -> None:
    cid = _customer(api, 100)
    client = api.client("ann")
    headers = {"Idempotency-Key": f"redeem-{cid}"}
    first = client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 60}, headers=headers)
    again = client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 60}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotency-replayed"] == "true"
    assert _ledger(api, cid) == (2, 40)
    # The same key for another request is refused; a body ``key`` works as the header does.
    assert client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 5}, headers=headers).status_code == 422
    keyed = [client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 10, "key": f"body-{cid}"})
             for _ in range(2)]
    assert keyed[0].json() == keyed[1].json() and _ledger(api, cid) == (3, 30)


def test_concurrent_retries_never_spend_twice_or_go_negative(api: Api) -> None:
    cid = _customer(api, 50)
    client = api.client("ann")

    def redeem(_: int) -> int:
        response = client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 40},
                               headers={"Idempotency-Key": f"race-{cid}"})
        return response.status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(redeem, range(4)))
    assert codes == [201] * 4
    assert _ledger(api, cid) == (2, 10)
    short = client.post(f"/customers/{cid}/loyalty/redeem", json={"points": 40})
    assert short.status_code == 409 and short.json()["type"].endswith("/insufficient-points")
    assert _ledger(api, cid) == (2, 10)


def test_roles_visibility_and_input(api: Api) -> None:
    cid = _customer(api, 30, owner="max")
    assert api.client("otto").post(f"/customers/{cid}/loyalty/redeem", json={"points": 1}).status_code == 403
    assert api.client("otto").get(f"/customers/{cid}/loyalty").status_code == 200
    rita = api.client("rita")
    assert rita.get(f"/customers/{cid}/loyalty").status_code == 404  # max's customer
    assert rita.get(f"/customers/{cid}/loyalty/history").status_code == 404
    assert rita.post(f"/customers/{cid}/loyalty/redeem", json={"points": 1}).status_code == 404
    for body in ({"points": 0}, {"points": -5}, {"points": "x"}, {"points": 1, "extra": 1}):
        response = api.client("ann").post(f"/customers/{cid}/loyalty/redeem", json=body)
        assert response.status_code == 422, body
    assert _ledger(api, cid) == (1, 30)


def test_rewards_catalogue_and_idempotent_reward(api: Api) -> None:
    catalogue = api.client("otto").get("/loyalty/rewards").json()
    assert [(r["name"], r["cost"], r["scheme"]) for r in catalogue] == [("mug", 40, "rewards")]
    client = api.client("ann")
    poor = _customer(api, 10)
    assert client.post(f"/customers/{poor}/loyalty/rewards/mug").status_code == 409
    rich = _customer(api, 100)
    headers = {"Idempotency-Key": f"mug-{rich}"}
    first = client.post(f"/customers/{rich}/loyalty/rewards/mug", headers=headers)
    again = client.post(f"/customers/{rich}/loyalty/rewards/mug", headers=headers)
    assert first.status_code == again.status_code == 201, first.text
    assert first.json()["code"] == again.json()["code"] and first.json()["points"] == 40
    assert _ledger(api, rich) == (2, 60)
    other = _customer(api, 100)
    assert client.post(f"/customers/{other}/loyalty/rewards/mug").status_code == 422  # out of stock
    assert client.post(f"/customers/{other}/loyalty/rewards/teapot").status_code == 404
    assert _ledger(api, other) == (1, 100)
