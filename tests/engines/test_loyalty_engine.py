"""The loyalty engine: the append-only ledger, idempotency, overdraw refusal,
earning and reversing on won deals, tiers, and concurrent redemption by
separate OS processes.

Balances are checked against an independent Python model and against the sum
of the ledger read straight from its table.
"""

from __future__ import annotations

import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest

import crmcore
from crmcore import InsufficientPoints, NotFound, UnknownComponent, ValidationError
from crmcore.store import tables

from .conftest import Components, ledger_sum, row_count

WORKER = Path(__file__).with_name("worker.py")


# -- components under test ----------------------------------------------------------

class PlainScheme(crmcore.LoyaltyScheme):
    """No rules: points come only from adjustments and redemptions."""

    name = "plain"
    description = "points by hand"


@attrs.frozen
class StarsOptions:
    per_unit: int = 1
    silver: int = 100
    gold: int = 1000


class StarsScheme(crmcore.LoyaltyScheme):
    """A point per whole currency unit of a won deal; silver and gold tiers."""

    name = "stars"
    description = "stars for won deals"
    options_type = StarsOptions

    def points_for_deal(self, uow: Any, deal: crmcore.Deal, options: StarsOptions) -> int:
        return int(deal.amount) * options.per_unit

    def tier_for(self, uow: Any, customer_id: int, balance: int, options: StarsOptions) -> str | None:
        return "gold" if balance >= options.gold else "silver" if balance >= options.silver else None


class TierEvents:
    __name__ = "tier_events"

    def __init__(self) -> None:
        self.calls: list[tuple[int, str, str | None, str | None]] = []

    @crmcore.hookimpl
    def on_loyalty_tier_changed(self, uow: Any, customer_id: int, scheme: str, old: Any, new: Any) -> None:
        self.calls.append((customer_id, scheme, old, new))


def open_crm(crm_factory: Any, *extra: Any, **kwargs: Any) -> crmcore.CRM:
    return crm_factory(extra_plugins=[Components("engine_schemes", schemes=(PlainScheme(), StarsScheme())), *extra],
                       **kwargs)


def assert_consistent(crm: crmcore.CRM, expected: dict[tuple[int, str], int]) -> None:
    """Stored balances, ledger sums and the model agree; drift() finds nothing."""
    for (customer_id, scheme), balance in expected.items():
        assert crm.loyalty.balance(customer_id, scheme) == balance
        assert ledger_sum(crm, customer_id, scheme) == balance
        assert sum(e.points for e in crm.loyalty.history(customer_id, scheme)) == balance
    assert crm.loyalty.drift() == []


# -- the ledger through the use cases ----------------------------------------------------

def test_adjust_and_redeem_append_entries(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    cid = crm.customers.add(name="Lin").id

    with crm.acting_as("alice"):
        welcome = crm.loyalty.adjust(cid, 150, "plain", reason="welcome gift")
    spent = crm.loyalty.redeem(cid, 50, "plain", reason="mug")
    fixed = crm.loyalty.adjust(cid, -30, "plain", reason="duplicate gift")

    assert (welcome.kind, welcome.points, welcome.reason, welcome.actor) == ("adjust", 150, "welcome gift", "alice")
    assert (spent.kind, spent.points, spent.reason, spent.actor) == ("redeem", -50, "mug", "system")
    assert (fixed.kind, fixed.points) == ("adjust", -30)
    assert crm.loyalty.balance(cid, "plain") == 70
    assert crm.loyalty.history(cid) == [welcome, spent, fixed]
    assert crm.loyalty.history(cid, "stars") == []
    assert crm.loyalty.balances("plain") == {cid: 70}
    assert len({welcome.idempotency_key, spent.idempotency_key, fixed.idempotency_key}) == 3
    assert_consistent(crm, {(cid, "plain"): 70})


def test_ledger_refuses_bad_input(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    cid = crm.customers.add(name="Lin").id
    with pytest.raises(ValidationError, match="reason"):
        crm.loyalty.adjust(cid, 10, "plain", reason=" ")
    for points in (0, True, 1.5):
        with pytest.raises(ValidationError, match="points"):
            crm.loyalty.adjust(cid, points, "plain", reason="x")
    for points in (0, -5):
        with pytest.raises(ValidationError, match="points"):
            crm.loyalty.redeem(cid, points, "plain")
    with pytest.raises(UnknownComponent, match="plain, stars"):
        crm.loyalty.redeem(cid, 1, "miles")
    with pytest.raises(NotFound):
        crm.loyalty.adjust(cid + 1, 10, "plain", reason="nobody")
    assert row_count(crm, tables.loyalty_ledger) == 0
    assert row_count(crm, tables.loyalty_accounts) == 0


def test_unit_of_work_ledger(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    cid = crm.customers.add(name="Lin").id

    with crm.unit() as uow:
        earned = uow.loyalty.credit(cid, "plain", 40, key="order-1:earn", reason="order 1")
        taken = uow.loyalty.debit(cid, "plain", 15, key="order-1:spend")
        assert uow.loyalty.balance(cid, "plain") == 25  # visible inside the unit
        assert uow.loyalty.entry("order-1:earn") == earned
    assert (earned.kind, earned.points, taken.kind, taken.points) == ("earn", 40, "redeem", -15)
    assert crm.loyalty.history(cid) == [earned, taken]

    with pytest.raises(RuntimeError):
        with crm.unit() as uow:
            uow.loyalty.credit(cid, "plain", 1000, key="order-2:earn")
            raise RuntimeError("the order failed after earning")
    with pytest.raises(InsufficientPoints):
        with crm.unit() as uow:
            uow.loyalty.credit(cid, "plain", 10, key="order-3:earn")
            uow.loyalty.debit(cid, "plain", 36, key="order-3:spend")  # 35 there
    assert crm.loyalty.history(cid) == [earned, taken]
    assert_consistent(crm, {(cid, "plain"): 25})


def test_idempotency_key_replay_changes_nothing(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    cid = crm.customers.add(name="Lin").id

    first = crm.loyalty.adjust(cid, 100, "plain", reason="import", key="import:row:7")
    again = crm.loyalty.adjust(cid, 999, "plain", reason="import rerun", key="import:row:7")
    assert again == first
    spend = crm.loyalty.redeem(cid, 30, "plain", key="pos:4711")
    assert crm.loyalty.redeem(cid, 30, "plain", key="pos:4711") == spend
    with crm.unit() as uow:
        assert uow.loyalty.credit(cid, "plain", 5, key="import:row:7") == first
        assert uow.loyalty.debit(cid, "plain", 70, key="pos:4711") == spend
    assert crm.loyalty.history(cid) == [first, spend]
    assert_consistent(crm, {(cid, "plain"): 70})


def test_redeeming_more_than_the_balance(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    cid, newcomer = crm.customers.add(name="Lin").id, crm.customers.add(name="New").id
    crm.loyalty.adjust(cid, 50, "plain", reason="start")
    history = crm.loyalty.history(cid)

    with pytest.raises(InsufficientPoints) as info:
        crm.loyalty.redeem(cid, 51, "plain")
    assert (info.value.requested, info.value.available) == (51, 50)
    with pytest.raises(InsufficientPoints):
        crm.loyalty.adjust(cid, -51, "plain", reason="too much")
    with pytest.raises(InsufficientPoints) as info:
        crm.loyalty.redeem(newcomer, 1, "plain")
    assert info.value.available == 0

    assert crm.loyalty.history(cid) == history
    assert crm.loyalty.history(newcomer) == []
    assert row_count(crm, tables.loyalty_accounts, tables.loyalty_accounts.c.customer_id == newcomer) == 0
    assert_consistent(crm, {(cid, "plain"): 50})


@pytest.mark.parametrize("seed", [1, 2])
def test_random_operations_match_a_model(crm_factory: Any, seed: int) -> None:
    crm = open_crm(crm_factory)
    rng = random.Random(seed)
    customers = [crm.customers.add(name=f"C{i}").id for i in range(3)]
    schemes = ["plain", "stars"]
    model: dict[tuple[int, str], int] = {(c, s): 0 for c in customers for s in schemes}
    done: list[tuple[str, int, str, str]] = []  # (op, customer, scheme, key) that succeeded

    for step in range(45):
        cid, scheme = rng.choice(customers), rng.choice(schemes)
        n = rng.randint(1, 120)
        key = f"op:{seed}:{step}"
        balance = model[(cid, scheme)]
        op = rng.choice(["credit", "adjust-", "redeem", "replay", "unit", "unit-fails"])
        if op == "replay" and done:
            kind, rcid, rscheme, rkey = rng.choice(done)
            before = crm.loyalty.history(rcid, rscheme)
            original = next(e for e in before if e.idempotency_key == rkey)
            if kind == "credit":
                assert crm.loyalty.adjust(rcid, n, rscheme, reason="again", key=rkey) == original
            else:
                assert crm.loyalty.redeem(rcid, n, rscheme, key=rkey) == original
            assert crm.loyalty.history(rcid, rscheme) == before
        elif op == "credit":
            crm.loyalty.adjust(cid, n, scheme, reason="random", key=key)
            model[(cid, scheme)] += n
            done.append(("credit", cid, scheme, key))
        elif op in ("adjust-", "redeem"):
            call = ((lambda: crm.loyalty.adjust(cid, -n, scheme, reason="random", key=key)) if op == "adjust-"
                    else (lambda: crm.loyalty.redeem(cid, n, scheme, key=key)))
            if n > balance:
                with pytest.raises(InsufficientPoints):
                    call()
            else:
                call()
                model[(cid, scheme)] -= n
                done.append(("debit", cid, scheme, key))
        elif op == "unit":
            take = rng.randint(1, 150)
            if take > balance + n:
                with pytest.raises(InsufficientPoints):
                    with crm.unit() as uow:
                        uow.loyalty.credit(cid, scheme, n, key=key + ":in")
                        uow.loyalty.debit(cid, scheme, take, key=key + ":out")
            else:
                with crm.unit() as uow:
                    uow.loyalty.credit(cid, scheme, n, key=key + ":in")
                    uow.loyalty.debit(cid, scheme, take, key=key + ":out")
                model[(cid, scheme)] += n - take
        elif op == "unit-fails":
            with pytest.raises(ZeroDivisionError):
                with crm.unit() as uow:
                    uow.loyalty.credit(cid, scheme, n, key=key)
                    1 / 0
        assert crm.loyalty.balance(cid, scheme) == model[(cid, scheme)]

    assert all(v >= 0 for v in model.values())
    for scheme in schemes:
        stored = crm.loyalty.balances(scheme)
        assert stored == {c: model[(c, scheme)] for c in stored}
    assert_consistent(crm, model)


# -- earning from won deals -----------------------------------------------------------------

def test_won_deals_earn_and_reverse(crm_factory: Any) -> None:
    tiers = TierEvents()
    crm = crm_factory(extra_plugins=[Components("stars_only", schemes=(StarsScheme(),)), tiers])
    cid = crm.customers.add(name="Wang").id

    won_at_once = crm.deals.add(customer_id=cid, title="first", amount=Decimal("250.90"), stage="won")
    (earn,) = crm.loyalty.history(cid, "stars")
    assert (earn.kind, earn.points, earn.deal_id) == ("earn", 250, won_at_once.id)
    assert earn.occurred_at == won_at_once.closed_at
    assert crm.loyalty.balance(cid, "stars") == 250
    assert tiers.calls == [(cid, "stars", None, "silver")]

    later = crm.deals.add(customer_id=cid, title="second", amount=Decimal("800"), stage="lead")
    assert crm.loyalty.balance(cid, "stars") == 250  # open deals earn nothing
    crm.deals.move(later.id, "proposal")
    crm.deals.move(later.id, "won")
    assert crm.loyalty.balance(cid, "stars") == 1050
    assert tiers.calls[-1] == (cid, "stars", "silver", "gold")

    crm.deals.move(later.id, "negotiation")  # out of won: exactly what it earned comes back off
    reverse = crm.loyalty.history(cid, "stars")[-1]
    assert (reverse.kind, reverse.points, reverse.deal_id) == ("reverse", -800, later.id)
    assert crm.loyalty.balance(cid, "stars") == 250
    assert tiers.calls[-1] == (cid, "stars", "gold", "silver")

    crm.deals.move(later.id, "won")  # won again: earns again, under a new key
    assert crm.loyalty.balance(cid, "stars") == 1050
    earns = [e for e in crm.loyalty.history(cid, "stars") if e.deal_id == later.id and e.kind == "earn"]
    assert [e.points for e in earns] == [800, 800] and earns[0].idempotency_key != earns[1].idempotency_key
    crm.deals.move(later.id, "lost", lost_reason="budget cut")
    assert crm.loyalty.balance(cid, "stars") == 250
    crm.deals.update(won_at_once.id, title="first, renamed")  # not a stage change: nothing happens
    assert crm.loyalty.balance(cid, "stars") == 250
    assert tiers.calls == [(cid, "stars", None, "silver"), (cid, "stars", "silver", "gold"),
                           (cid, "stars", "gold", "silver"), (cid, "stars", "silver", "gold"),
                           (cid, "stars", "gold", "silver")]
    assert_consistent(crm, {(cid, "stars"): 250})


def test_reversal_after_points_were_spent(crm_factory: Any) -> None:
    tiers = TierEvents()
    crm = crm_factory(extra_plugins=[Components("stars_only", schemes=(StarsScheme(),)), tiers])
    cid = crm.customers.add(name="Wang").id
    deal = crm.deals.add(customer_id=cid, title="big", amount=Decimal("300"), stage="won")
    crm.loyalty.redeem(cid, 250, "stars", reason="voucher")
    assert crm.loyalty.balance(cid, "stars") == 50

    crm.deals.move(deal.id, "lost", lost_reason="returned")

    reverse = crm.loyalty.history(cid, "stars")[-1]
    assert (reverse.kind, reverse.points) == ("reverse", -50)
    assert reverse.details == {"requested": 300, "shortfall": 250}
    assert crm.loyalty.balance(cid, "stars") == 0
    assert tiers.calls == [(cid, "stars", None, "silver"), (cid, "stars", "silver", None)]
    assert_consistent(crm, {(cid, "stars"): 0})

    crm.deals.move(deal.id, "won")  # won again: earns the full amount again
    assert crm.loyalty.balance(cid, "stars") == 300
    other = crm.deals.add(customer_id=cid, title="other", amount=Decimal("1000"), stage="won")
    assert crm.loyalty.balance(cid, "stars") == 1300

    # Out of won again: this win earned 300, so 300 comes off.  The shortfall of
    # the first reversal was written off; it must not be taken from the points
    # the other deal earned.
    crm.deals.move(deal.id, "negotiation")
    last = crm.loyalty.history(cid, "stars")[-1]
    assert (last.kind, last.points, last.deal_id) == ("reverse", -300, deal.id)
    assert crm.loyalty.balance(cid, "stars") == 1000
    crm.deals.move(other.id, "lost", lost_reason="cancelled")
    assert crm.loyalty.balance(cid, "stars") == 0
    assert_consistent(crm, {(cid, "stars"): 0})


def test_deal_earning_in_a_failed_unit_is_rolled_back(crm_factory: Any) -> None:
    crm = crm_factory(extra_plugins=[Components("stars_only", schemes=(StarsScheme(),))])
    cid = crm.customers.add(name="Wang").id
    with pytest.raises(RuntimeError):
        with crm.unit():
            crm.deals.add(customer_id=cid, title="big", amount=Decimal("300"), stage="won")
            raise RuntimeError("the import failed later")
    assert crm.deals.count() == 0
    assert crm.loyalty.history(cid) == []
    assert row_count(crm, tables.loyalty_accounts) == 0


def test_scheme_options_from_config(crm_factory: Any) -> None:
    crm = crm_factory(extra_plugins=[Components("stars_only", schemes=(StarsScheme(),))],
                      config={"loyalty": {"stars": {"per_unit": 3, "silver": 10_000}}})
    cid = crm.customers.add(name="Wang").id
    crm.deals.add(customer_id=cid, title="x", amount=Decimal("20.99"), stage="won")
    assert crm.loyalty.balance(cid, "stars") == 60
    with crm.unit(readonly=True) as uow:
        assert uow.loyalty.tier(cid, "stars") is None


# -- concurrent redemption by separate processes ---------------------------------------------

def _start_worker(url: str, control: Path, worker: str, rounds: int) -> tuple[subprocess.Popen, queue.Queue]:
    proc = subprocess.Popen([sys.executable, str(WORKER), "redeem", url, "plain", str(control), worker,
                             str(rounds), "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _result(proc: subprocess.Popen, lines: queue.Queue) -> dict[str, Any]:
    line = lines.get(timeout=180)
    if line is None:
        proc.wait(timeout=30)
        pytest.fail(f"worker ended early ({proc.returncode}): {proc.stderr.read()}")  # type: ignore[union-attr]
    return json.loads(line)


def test_concurrent_redemptions_by_two_processes(crm_factory: Any, crm_db_url: str, tmp_path: Path) -> None:
    """Balance 100, two processes redeem 60 at the same moment: one gets it."""
    crm = open_crm(crm_factory)
    control = tmp_path / "control"
    control.mkdir()
    rounds = 6
    workers = [_start_worker(crm_db_url, control, w, rounds) for w in ("a", "b")]
    try:
        deadline = time.monotonic() + 120
        while not all((control / f"ready-{w}").exists() for w in ("a", "b")):
            for proc, _ in workers:
                if proc.poll() is not None:
                    pytest.fail(f"worker failed to start: {proc.stderr.read()}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.01)

        for round_no in range(rounds):
            cid = crm.customers.add(name=f"Racer {round_no}").id
            crm.loyalty.adjust(cid, 100, "plain", reason="stake")
            go = control / f"go-{round_no}"
            (control / "go.tmp").write_text(str(cid))
            os.replace(control / "go.tmp", go)  # appears at once, complete

            results = [_result(proc, lines) for proc, lines in workers]
            assert all(r["round"] == round_no for r in results)
            winners = [r for r in results if r["ok"]]
            losers = [r for r in results if not r["ok"]]
            assert len(winners) == 1, results
            assert [r["error"] for r in losers] == ["InsufficientPoints"], results
            assert crm.loyalty.balance(cid, "plain") == 40
            assert ledger_sum(crm, cid, "plain") == 40
            assert [(e.kind, e.points) for e in crm.loyalty.history(cid, "plain")] == [("adjust", 100),
                                                                                      ("redeem", -60)]
        for proc, _ in workers:
            assert proc.wait(timeout=60) == 0, proc.stderr.read()  # type: ignore[union-attr]
    finally:
        for proc, _ in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert crm.loyalty.drift() == []


# -- batch jobs without a SQL earn path ----------------------------------------------------

def test_catch_up_earning_falls_back_to_points_for_deal(crm_factory: Any) -> None:
    """A scheme without earn_select is asked per deal, in pages; a rerun writes nothing."""
    plain = crm_factory()
    cid = plain.customers.add(name="Late").id
    for amount in ("10.5", "20", "0.4"):
        plain.deals.add(customer_id=cid, title="t", amount=Decimal(amount), stage="won")
    plain.deals.add(customer_id=cid, title="open", amount=Decimal("99"), stage="lead")
    crm = crm_factory(extra_plugins=[Components("stars_only", schemes=(StarsScheme(),))])
    assert crm.loyalty.earn_won_deals() == {"stars": 2}        # 10 and 20; 0.4 earns 0 and writes nothing
    assert crm.loyalty.earn_won_deals() == {"stars": 0}
    assert sorted(e.points for e in crm.loyalty.history(cid, "stars")) == [10, 20]
    assert all(e.idempotency_key.endswith(":earn:batch") for e in crm.loyalty.history(cid))
    assert_consistent(crm, {(cid, "stars"): 30})


def test_expiry_and_recompute_in_the_core(crm_factory: Any) -> None:
    crm = open_crm(crm_factory)
    cid = crm.customers.add(name="Lin").id
    with crm.unit() as uow:
        uow.loyalty.credit(cid, "plain", 40, key="a", expires_at=crmcore.parse_as_of("2026-07-31"))
        uow.loyalty.credit(cid, "plain", 25, key="b")         # never expires
    crm.loyalty.redeem(cid, 30, "plain")                      # FIFO: 30 of "a"
    assert crm.loyalty.expire(as_of="2026-08-01") == 1
    assert crm.loyalty.expire(as_of="2026-08-01") == 0
    assert crm.loyalty.history(cid)[-1].points == -10
    assert crm.loyalty.balance(cid, "plain") == 25
    assert crm.loyalty.recompute() == []
    assert_consistent(crm, {(cid, "plain"): 25})
