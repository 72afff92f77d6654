"""Helpers shared by the contrib plugin tests (imported as a module, like tests/io/iotools.py)."""

from __future__ import annotations

from crmcore import SegmentContext


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def explain(crm, strategy: str, customer_id: int, as_of, options=None) -> dict:
    """The segmenter's explanation of a customer's latest membership (what
    `crm segment explain` prints), through the public API only."""
    segmenter = crm.segments.registry.get(strategy)
    [membership] = [m for m in crm.segments.members(strategy) if m["customer_id"] == customer_id]
    opts = segmenter.options_type(**(options or {}))
    with crm.unit(readonly=True) as uow:
        return segmenter.explain(SegmentContext(uow, crm.as_of(as_of)), opts, membership)


def simulate_bgnbd(rng, customers: int, r: float, alpha: float, a: float, b: float, weeks: float,
                   spend: tuple[float, float, float] = (6.0, 4.0, 15.0)) -> list[list[tuple[float, float]]]:
    """Purchase histories drawn from the BG/NBD and Gamma-Gamma story itself
    (numpy ``Generator`` ``rng``): per customer a list of (week, value), the
    first purchase at week 0, observed for ``weeks``.

    lambda ~ Gamma(r, 1/alpha) and p ~ Beta(a, b); purchases arrive at rate
    lambda, and after each *repeat* purchase the customer drops out with
    probability p (FHL 2005, assumptions (i)-(v): nobody drops out at the
    first purchase, which is why x = 0 has likelihood exp(-lambda T)).
    Values are Gamma(p_s, nu) with nu ~ Gamma(q, 1/gamma) per customer.
    """
    p_s, q, gamma = spend
    histories = []
    for _ in range(customers):
        rate, drop, nu = rng.gamma(r, 1 / alpha), rng.beta(a, b), rng.gamma(q, 1 / gamma)
        t, purchases = 0.0, [(0.0, rng.gamma(p_s, 1 / nu))]
        while True:
            t += rng.exponential(1 / rate)
            if t > weeks:
                break
            purchases.append((t, rng.gamma(p_s, 1 / nu)))
            if rng.random() < drop:
                break
        histories.append(purchases)
    return histories


def bulk_load(crm, customers: int, deals: list[dict]) -> list[int]:
    """Customers 0..customers-1 and their deals (dicts with ``customer`` as an
    index) through the public bulk API; returns customer ids by index."""
    crm.customers.add_many({"name": f"Customer {i}", "external_id": f"c{i}"} for i in range(customers))
    by_external = {c.external_id: c.id for c in crm.customers.list()}
    ids = [by_external[f"c{i}"] for i in range(customers)]
    crm.deals.add_many({"customer_id": ids[d["customer"]], "title": f"Deal {n}", "amount": d["amount"],
                        "currency": d.get("currency", "USD"), "pipeline": d["pipeline"], "stage": d["stage"],
                        "closed_at": d["closed_at"]} for n, d in enumerate(deals))
    return ids
