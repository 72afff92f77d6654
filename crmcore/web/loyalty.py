"""Loyalty over HTTP: a customer's balances and history, redemption, the reward catalogue.

- ``GET /customers/{id}/loyalty`` (``as_of``, ``scheme``): balance, available points, expiring
  points by day and tier, per scheme.
- ``GET /customers/{id}/loyalty/history`` (``scheme``): the ledger entries, oldest first.
- ``POST /customers/{id}/loyalty/redeem`` ``{"points", "scheme", "reason", "key"}``: spend points
  (``201``); too few is ``409`` and nothing is written.
- ``GET /loyalty/rewards`` (``as_of``) and ``POST /customers/{id}/loyalty/rewards/{reward}``: the
  catalogue, and exchanging points for a reward (a code is issued).

Both redemptions are idempotent with an ``Idempotency-Key`` header (or, for points, a ``key``
field): a retry returns the first response (``Idempotency-Replayed: true``) and writes nothing;
the same key with another request is a 422.  For points the key also becomes the ledger entry's
key, so even a retry racing the first request finds its entry instead of spending again.
Every route calls ``crm.loyalty``, which authorizes (``loyalty.read``, ``loyalty.redeem``,
``loyalty.rewards``) and answers 404 for a customer the user cannot see.
"""

import hashlib
import json
from typing import TYPE_CHECKING, Any

import attrs
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ..application.idempotency import MAX_KEY, once, request_hash
from ..domain.errors import ValidationError
from ..loyalty import LedgerEntry
from .auth import acting_login, crm_of, protected_router
from .components import AS_OF_TEXT, as_of_value
from .encoding import JSON, dumps
from .problems import responses

if TYPE_CHECKING:
    from ..app import CRM

MAX_ID = 2**31 - 1
#: The most points one redemption takes (the ledger's 64-bit column).
MAX_POINTS = 2**63 - 1


class Redemption(BaseModel):
    """``POST /customers/{id}/loyalty/redeem``."""

    model_config = ConfigDict(extra="forbid")
    points: int = Field(ge=1, le=MAX_POINTS, description="Points to spend.")
    scheme: str | None = Field(default=None, max_length=100,
                               description="The scheme (default: the only one, else `points`).")
    reason: str | None = Field(default=None, max_length=500)
    key: str | None = Field(default=None, min_length=1, max_length=MAX_KEY,
                            description="An idempotency key (as the `Idempotency-Key` header).")


def _data(value: Any) -> Any:
    """JSON data of engine results (times ISO 8601, Decimal exact)."""
    return json.loads(dumps(value))


def _entry(entry: LedgerEntry) -> dict[str, Any]:
    data: dict[str, Any] = _data(attrs.asdict(entry))
    return data


def _scheme(crm: "CRM", scheme: str | None) -> str:
    """The scheme named, or the default as ``crm loyalty redeem`` chooses it."""
    names = crm.loyalty.registry.names()
    if scheme:
        crm.loyalty.registry.get(scheme)  # UnknownComponent: 404 naming the schemes
        return scheme
    if len(names) == 1:
        return names[0]
    if "points" in names:
        return "points"
    raise ValidationError.single("scheme", f"choose a scheme ({', '.join(names) or 'none is installed'})")


def _key(header: str | None, field: str | None) -> str | None:
    if header is not None and field is not None and header != field:
        raise ValidationError.single("key", "differs from the Idempotency-Key header (send one of them)")
    return header if header is not None else field


def _replayed(status: int, body: Any, replayed: bool) -> JSON:
    return JSON(body, status_code=status, headers={"Idempotency-Replayed": "true"} if replayed else {})


IdempotencyKey = Header(default=None, max_length=MAX_KEY,
                        description="Send the same key to retry safely: the first response returns.")


def loyalty_router(crm: "CRM") -> APIRouter:
    """The loyalty routes (under ``/customers/{id}/loyalty`` and ``/loyalty``)."""
    router = protected_router(tags=["loyalty"], responses=responses(401, 403, 422))
    CustomerId = Path(description="The customer's id.", ge=1, le=MAX_ID)

    @router.get("/customers/{id}/loyalty", summary="A customer's points and tier per scheme",
                operation_id="get_customer_loyalty", responses=responses(404))
    def status(request: Request, id: int = CustomerId,
               scheme: str | None = Query(default=None, max_length=100, description="Only this scheme."),
               as_of: str | None = Query(default=None, max_length=40, description=AS_OF_TEXT)) -> Response:
        crm = crm_of(request)
        if scheme:
            crm.loyalty.registry.get(scheme)
        rows = crm.loyalty.status(id, as_of=as_of_value(crm, as_of))
        schemes = {r["scheme"]: {k: v for k, v in r.items() if k != "scheme"} for r in rows
                   if scheme is None or r["scheme"] == scheme}
        return JSON(_data({"customer_id": id, "schemes": schemes}))

    @router.get("/customers/{id}/loyalty/history", summary="A customer's ledger entries, oldest first",
                operation_id="get_customer_loyalty_history", responses=responses(404))
    def history(request: Request, id: int = CustomerId,
                scheme: str | None = Query(default=None, max_length=100, description="Only this scheme.")
                ) -> Response:
        crm = crm_of(request)
        if scheme:
            crm.loyalty.registry.get(scheme)
        return JSON([_entry(e) for e in crm.loyalty.history(id, scheme)])

    @router.post("/customers/{id}/loyalty/redeem", status_code=201, summary="Spend a customer's points",
                 operation_id="redeem_loyalty_points", responses=responses(404, 409))
    def redeem(request: Request, id: int = CustomerId, body: Redemption = Body(...),
               idempotency_key: str | None = IdempotencyKey) -> Response:
        crm = crm_of(request)
        scheme = _scheme(crm, body.scheme)
        key = _key(idempotency_key, body.key)

        def work(ledger_key: str | None = None) -> tuple[int, Any]:
            entry = crm.loyalty.redeem(id, body.points, scheme, body.reason, key=ledger_key)
            return 201, _entry(entry)

        if key is None:
            status_code, data = work()
            return JSON(data, status_code=status_code)
        # The ledger key: the user's idempotency key, hashed (it may be 200 characters of anything).
        actor = acting_login(request)
        ledger_key = "api:redeem:" + hashlib.sha256(f"{actor}\x00{key}".encode()).hexdigest()
        digest = request_hash({"customer": id, "points": body.points, "scheme": scheme, "reason": body.reason})
        stored, replayed = once(crm, key, f"POST /customers/{id}/loyalty/redeem", digest,
                                lambda: work(ledger_key))
        return _replayed(stored.status, stored.body, replayed)

    @router.get("/loyalty/rewards", summary="The reward catalogue of every scheme", operation_id="list_rewards")
    def rewards(request: Request,
                as_of: str | None = Query(default=None, max_length=40, description=AS_OF_TEXT)) -> Response:
        crm = crm_of(request)
        return JSON(_data(crm.loyalty.rewards(as_of=as_of_value(crm, as_of))))

    @router.post("/customers/{id}/loyalty/rewards/{reward}", status_code=201,
                 summary="Exchange a customer's points for a reward (issues a code)",
                 operation_id="redeem_loyalty_reward", responses=responses(404, 409))
    def redeem_reward(request: Request, id: int = CustomerId,
                      reward: str = Path(max_length=200, description="The reward's name (`GET /loyalty/rewards`)."),
                      as_of: str | None = Query(default=None, max_length=40, description=AS_OF_TEXT),
                      idempotency_key: str | None = IdempotencyKey) -> Response:
        crm = crm_of(request)
        moment = as_of_value(crm, as_of)

        def work() -> tuple[int, Any]:
            return 201, _data({"customer_id": id, **crm.loyalty.redeem_reward(id, reward, as_of=moment)})

        if idempotency_key is None:
            status_code, data = work()
            return JSON(data, status_code=status_code)
        digest = request_hash({"customer": id, "reward": reward, "as_of": as_of})
        stored, replayed = once(crm, idempotency_key, f"POST /customers/{id}/loyalty/rewards/{reward}", digest,
                                work)
        return _replayed(stored.status, stored.body, replayed)

    return router
