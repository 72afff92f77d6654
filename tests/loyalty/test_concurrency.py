"""Concurrent redemptions by two real OS processes (SQLite, PostgreSQL, MariaDB):
FIFO allocations stay exact, a balance never goes negative, and the last unit
of a reward is issued once."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from crmcore_loyalty.tables import reward_codes
from sqlalchemy import func, select

from .conftest import assert_matches_model, won

WORKER = Path(__file__).with_name("worker.py")
ROUNDS = 4
CONFIG = {"points": {"tier_scheme": "none"},
          "rewards": {"catalogue": [{"name": f"mug{i}", "cost": 100, "stock": 1} for i in range(ROUNDS)]}}


class Workers:
    def __init__(self, url: str, control: Path, rounds: int = ROUNDS, names: tuple[str, ...] = ("a", "b")):
        self.control, self.names = control, names
        self.procs = []
        for name in names:
            proc = subprocess.Popen([sys.executable, str(WORKER), url, json.dumps(CONFIG), str(control), name,
                                     str(rounds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, lines), daemon=True).start()
            self.procs.append((proc, lines))

    @staticmethod
    def _pump(proc, lines):
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def wait_ready(self):
        deadline = time.monotonic() + 120
        while not all((self.control / f"ready-{w}").exists() for w in self.names):
            for proc, _ in self.procs:
                if proc.poll() is not None:
                    pytest.fail(f"worker failed to start: {proc.stderr.read()}")
            assert time.monotonic() < deadline, "workers never became ready"
            time.sleep(0.01)

    def go(self, round_no: int, tasks: dict) -> list[dict]:
        (self.control / "go.tmp").write_text(json.dumps(tasks))
        os.replace(self.control / "go.tmp", self.control / f"go-{round_no}")  # appears at once, complete
        results = []
        for proc, lines in self.procs:
            line = lines.get(timeout=180)
            if line is None:
                proc.wait(timeout=30)
                pytest.fail(f"worker ended early ({proc.returncode}): {proc.stderr.read()}")
            results.append(json.loads(line))
        return results

    def finish(self):
        for proc, _ in self.procs:
            if proc.poll() is None:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_two_processes_redeem_points_and_the_last_reward(crm_factory, crm_db_url, tmp_path, clock):
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": CONFIG})
    control = tmp_path / "control"
    control.mkdir()
    workers = Workers(crm_db_url, control)
    try:
        workers.wait_ready()
        for round_no in range(ROUNDS):
            if round_no % 2 == 0:
                # One member, three batches of 100; both processes want 200: one gets it.
                cid = crm.customers.add(name=f"Shared {round_no}").id
                for _ in range(3):
                    won(crm, cid, "100")
                results = workers.go(round_no, {"a": {"customer": cid, "what": 200},
                                                "b": {"customer": cid, "what": 200}})
                assert sorted(r["ok"] for r in results) == [False, True], results
                assert [r["error"] for r in results if not r["ok"]] == ["InsufficientPoints"]
                # The refusal states the balance as it is, not a snapshot from before the wait (MariaDB).
                assert [r["message"] for r in results if not r["ok"]] == [
                    f"customer {cid} has 100 points points; cannot redeem 200"]
                assert crm.loyalty.balance(cid, "points") == 100
            else:
                # Two members with points; both want the one unit of this round's mug.
                one, two = (crm.customers.add(name=f"Fan {round_no}{s}").id for s in "12")
                crm.loyalty.adjust(one, 300, "points", reason="stake")
                crm.loyalty.adjust(two, 300, "points", reason="stake")
                mug = f"mug{round_no}"
                results = workers.go(round_no, {"a": {"customer": one, "what": mug},
                                                "b": {"customer": two, "what": mug}})
                assert sorted(r["ok"] for r in results) == [False, True], results
                assert [r["message"] for r in results if not r["ok"]] == [f"reward '{mug}' is out of stock (1 issued)"]
                assert sorted([crm.loyalty.balance(one, "points"), crm.loyalty.balance(two, "points")]) == [200, 300]
                with crm.unit(readonly=True) as uow:
                    assert uow.conn.execute(select(func.count()).select_from(reward_codes).where(
                        reward_codes.c.reward == mug)).scalar_one() == 1
        workers.finish()
        for proc, _ in workers.procs:
            assert proc.returncode == 0, proc.stderr.read()
    finally:
        for proc, _ in workers.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_matches_model(crm)


def test_expiry_job_and_redemption_at_once(crm_factory, crm_db_url, tmp_path):
    """One process expires everything due while the other redeems from the same account: both succeed."""
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": CONFIG})
    control = tmp_path / "control"
    control.mkdir()
    rounds = 3
    workers = Workers(crm_db_url, control, rounds)
    try:
        workers.wait_ready()
        for round_no in range(rounds):
            cid = crm.customers.add(name=f"Member {round_no}").id
            with crm.unit() as uow:  # 100 already past expiry (the workers run on the real clock), 100 not
                uow.loyalty.credit(cid, "points", 100, key=f"old:{cid}", expires_at=datetime(2020, 1, 1,
                                                                                         tzinfo=timezone.utc))
                uow.loyalty.credit(cid, "points", 100, key=f"new:{cid}")
            results = workers.go(round_no, {"a": {"customer": cid, "what": "expire"},
                                            "b": {"customer": cid, "what": 50}})
            assert [r["ok"] for r in results] == [True, True], results
            assert crm.loyalty.balance(cid, "points") == 50
            assert sorted((e.kind, e.points) for e in crm.loyalty.history(cid)) == [
                ("earn", 100), ("earn", 100), ("expire", -100), ("redeem", -50)]
        workers.finish()
        for proc, _ in workers.procs:
            assert proc.returncode == 0, proc.stderr.read()
    finally:
        for proc, _ in workers.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_matches_model(crm)


def test_two_redemptions_that_both_fit_allocate_different_points(crm_factory, crm_db_url, tmp_path):
    """Both redemptions succeed; the second must allocate what the first left (exact FIFO)."""
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": CONFIG})
    control = tmp_path / "control"
    control.mkdir()
    rounds = 3
    workers = Workers(crm_db_url, control, rounds)
    try:
        workers.wait_ready()
        for round_no in range(rounds):
            cid = crm.customers.add(name=f"Both {round_no}").id
            for _ in range(3):
                won(crm, cid, "100")
            results = workers.go(round_no, {"a": {"customer": cid, "what": 150},
                                            "b": {"customer": cid, "what": 100}})
            assert [r["ok"] for r in results] == [True, True], results
            assert crm.loyalty.balance(cid, "points") == 50
        workers.finish()
    finally:
        for proc, _ in workers.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert_matches_model(crm)


def run_rounds(crm_db_url: str, tmp_path: Path, names: tuple[str, ...], rounds: list[dict]) -> list[list[dict]]:
    """Each round's tasks to the workers ``names`` at once; their results per round."""
    control = tmp_path / "control"
    control.mkdir()
    workers = Workers(crm_db_url, control, len(rounds), names)
    try:
        workers.wait_ready()
        results = [workers.go(n, tasks) for n, tasks in enumerate(rounds)]
        workers.finish()
        for proc, _ in workers.procs:
            assert proc.returncode == 0, proc.stderr.read()
    finally:
        for proc, _ in workers.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def add_unearned_won_deals(crm, count: int) -> list[int]:
    """Won deals that have not earned yet (written directly, as a bulk load without loyalty would)."""
    from crmcore.store import tables

    cids = [crm.customers.add(name=f"Buyer {n}").id for n in range(20)]
    now = datetime(2026, 1, 5, tzinfo=timezone.utc)
    with crm.unit() as uow:
        uow.conn.execute(tables.deals.insert(), [
            {"customer_id": cids[n % len(cids)], "title": f"deal {n}", "amount": Decimal("10"), "currency": "USD",
             "pipeline": "default", "stage": "won", "probability": 100, "closed_at": now, "attributes": {},
             "created_at": now, "updated_at": now} for n in range(count)])
    return cids


def test_two_overlapping_earn_runs(crm_factory, crm_db_url, tmp_path):
    """Issue 14: the second of two overlapping `crm loyalty earn` runs died with an IntegrityError
    on PostgreSQL.  Now each deal earns once, and the runs' counts add up to the deals."""
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": CONFIG})
    deals = 3000
    rounds = []
    for _ in range(3):
        rounds.append({"a": {"what": "earn"}, "b": {"what": "earn"}})
    add_unearned_won_deals(crm, deals)
    first = run_rounds(crm_db_url, tmp_path, ("a", "b"), rounds[:1])[0]
    assert [r["error"] for r in first] == [None, None], first
    assert sum(r["written"] for r in first) == deals
    with crm.unit(readonly=True) as uow:
        from crmcore.store import tables

        earned = uow.conn.execute(select(tables.loyalty_ledger.c.deal_id, func.count()).where(
            tables.loyalty_ledger.c.kind == "earn").group_by(tables.loyalty_ledger.c.deal_id)).all()
    assert len(earned) == deals and {n for _, n in earned} == {1}
    assert crm.loyalty.drift() == []
    assert_matches_model(crm)


def test_four_redemptions_with_one_key(crm_factory, crm_db_url, tmp_path):
    """Issue 14: four concurrent redemptions with one idempotency key gave three raw IntegrityErrors on
    PostgreSQL and MariaDB.  Now all four return the same entry and the points are taken once."""
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": CONFIG})
    names = ("a", "b", "c", "d")
    rounds, cids = [], []
    for n in range(3):
        cid = crm.customers.add(name=f"Twice {n}").id
        crm.loyalty.adjust(cid, 400, "points", reason="stake")
        cids.append(cid)
        rounds.append({w: {"customer": cid, "points": 150, "key": f"order:{n}"} for w in names})
    for cid, results in zip(cids, run_rounds(crm_db_url, tmp_path, names, rounds)):
        assert [r["error"] for r in results] == [None] * 4, results
        assert len({r["entry"] for r in results}) == 1
        assert crm.loyalty.balance(cid, "points") == 250
    assert_matches_model(crm)


def test_two_concurrent_bulk_credits_with_overlapping_keys(crm_factory, crm_db_url, tmp_path):
    """Issue 14 point 4: `credit_many` (bulk credits for schemes without a set-based earn query, and
    imports) checked the keys and then inserted, so the second of two concurrent callers died with an
    IntegrityError.  Now both succeed, each key is credited once, and balances equal the ledger's sum."""
    crm = crm_factory(plugins=["loyalty"], config={"loyalty": CONFIG})
    cids = [crm.customers.add(name=f"Bulk {n}").id for n in range(30)]
    rounds, expected = [], {}
    for round_no in range(3):
        # a: keys 0..1199, b: keys 600..1799 of this round; the shared 600 carry the same points.
        items = [{"customer_id": cids[k % len(cids)], "points": 1 + k % 7, "key": f"bulk:{round_no}:{k}"}
                 for k in range(1800)]
        rounds.append({"a": {"what": "credit_many", "credits": items[:1200]},
                       "b": {"what": "credit_many", "credits": items[600:][::-1]}})  # another order too
        for item in items:
            expected[item["customer_id"]] = expected.get(item["customer_id"], 0) + item["points"]
    for results in run_rounds(crm_db_url, tmp_path, ("a", "b"), rounds):
        assert [r["error"] for r in results] == [None, None], results
        assert sum(r["written"] for r in results) == 1800  # every key written by exactly one of them
    with crm.unit(readonly=True) as uow:
        from crmcore.store import tables

        ledger = tables.loyalty_ledger
        keys = uow.conn.execute(select(ledger.c.idempotency_key, func.count()).where(
            ledger.c.idempotency_key.like("bulk:%")).group_by(ledger.c.idempotency_key)).all()
    assert len(keys) == 3 * 1800 and {n for _, n in keys} == {1}
    assert crm.loyalty.balances("points") == expected
    assert crm.loyalty.drift() == []
    assert_matches_model(crm)
