"""The contract every loyalty scheme obeys (:class:`LoyaltySchemeContract`)."""

from __future__ import annotations

from typing import Any

import pytest

from ..domain.errors import InsufficientPoints
from .base import Contract
from .data import FIXED_NOW, generate

JOB_KINDS = ("earn", "bonus", "redeem", "expire", "adjust", "reverse")


def _snapshot(crm: Any, scheme: str) -> tuple[dict[int, int], int]:
    """Balances of the scheme and the number of ledger entries (for idempotency checks)."""
    balances = crm.loyalty.balances(scheme)
    entries = sum(len(crm.loyalty.history(c.id, scheme)) for c in crm.customers.list())
    return balances, entries


def _run_jobs(crm: Any, scheme: str) -> None:
    """Every periodic job of the scheme as of FIXED_NOW: catch-up earning, its own job, expiry."""
    crm.loyalty.earn_won_deals(as_of=FIXED_NOW, scheme=scheme)
    crm.loyalty.run(as_of=FIXED_NOW, scheme=scheme)
    crm.loyalty.expire(as_of=FIXED_NOW, scheme=scheme)


class LoyaltySchemeContract(Contract):
    """Subclass and provide ``component`` (a :class:`crmcore.LoyaltyScheme`).

    On a generated database (``seeded_crm``: won, lost and open deals, so the
    scheme earns as deals are won) and after the scheme's jobs (catch-up
    earning, ``run``, expiry), checks: every balance equals the sum of the
    customer's ledger entries and is never negative, no drift, the jobs are
    idempotent (a rerun writes nothing), reversing a won deal keeps balances
    non-negative, and everything works on an empty database.

    Optional fixtures: ``contract_config``, ``contract_crm`` (override with
    ``crm_factory(plugins=["yourplugin"])`` when the scheme needs its plugin's
    tables) and ``seeded_crm`` (default: ``contract_crm`` filled by
    :func:`crmcore.contracts.generate`).
    """

    family = "loyalty"

    @pytest.fixture
    def seeded_crm(self, contract_crm: Any) -> Any:
        """``contract_crm`` with generated customers, deals and interactions."""
        generate(contract_crm)
        return contract_crm

    def test_ledger_matches_balances(self, seeded_crm: Any, component: Any) -> None:
        """After earning and the jobs: balance = sum of entries >= 0, known kinds, no drift."""
        _run_jobs(seeded_crm, component.name)
        balances = seeded_crm.loyalty.balances(component.name)
        for customer in seeded_crm.customers.list():
            history = seeded_crm.loyalty.history(customer.id, component.name)
            assert all(entry.kind in JOB_KINDS for entry in history)
            assert all(entry.points != 0 or entry.kind in ("redeem", "reverse", "expire") for entry in history)
            total = sum(entry.points for entry in history)
            assert balances.get(customer.id, 0) == total, f"customer {customer.id}: balance is not the ledger's sum"
            assert total >= 0, f"customer {customer.id} has a negative balance"
        assert seeded_crm.loyalty.drift(component.name) == []
        assert seeded_crm.loyalty.recompute() == []

    def test_jobs_are_idempotent(self, seeded_crm: Any, component: Any) -> None:
        """Running every job a second time as of the same moment writes nothing."""
        _run_jobs(seeded_crm, component.name)
        before = _snapshot(seeded_crm, component.name)
        _run_jobs(seeded_crm, component.name)
        assert _snapshot(seeded_crm, component.name) == before, "a rerun of the scheme's jobs changed the ledger"

    def test_won_deal_then_lost_never_goes_negative(self, seeded_crm: Any, component: Any) -> None:
        """Winning a deal earns what the scheme says; losing it again reverses, never below zero."""
        customer = seeded_crm.customers.add(name="Contract winner", email="winner@example.com")
        deal = seeded_crm.deals.add(customer_id=customer.id, title="Contract deal", amount="1234.50",
                                    currency="USD", stage="proposal")
        seeded_crm.deals.move(deal.id, "won")
        earned = seeded_crm.loyalty.history(customer.id, component.name)
        assert all(entry.deal_id == deal.id and entry.points > 0 for entry in earned if entry.kind == "earn")
        balance = seeded_crm.loyalty.balance(customer.id, component.name)
        assert balance == sum(entry.points for entry in earned) >= 0
        if balance:
            seeded_crm.loyalty.redeem(customer.id, 1, component.name, reason="contract")
        seeded_crm.deals.move(deal.id, "lost", lost_reason="contract")
        assert seeded_crm.loyalty.balance(customer.id, component.name) >= 0
        assert seeded_crm.loyalty.drift(component.name) == []
        left = seeded_crm.loyalty.balance(customer.id, component.name)
        with pytest.raises(InsufficientPoints):
            seeded_crm.loyalty.redeem(customer.id, left + 1, component.name, reason="contract")

    def test_empty_database(self, contract_crm: Any, component: Any) -> None:
        """Every job runs on an empty database and writes nothing."""
        assert contract_crm.loyalty.earn_won_deals(as_of=FIXED_NOW, scheme=component.name) == {component.name: 0}
        assert contract_crm.loyalty.run(as_of=FIXED_NOW, scheme=component.name) == {component.name: 0}
        assert contract_crm.loyalty.expire(as_of=FIXED_NOW, scheme=component.name) == 0
        assert contract_crm.loyalty.balances(component.name) == {}


__all__ = ["LoyaltySchemeContract"]
