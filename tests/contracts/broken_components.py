"""Components that pass a contract and components each broken in one way.

``test_broken_components.py`` runs every contract class against these with
pytester: the good ones must pass, each broken one must fail the test named
in ``EXPECTED_FAILURES`` there.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import attrs
from sqlalchemy import case, func, literal, null, select, union_all, update

import crmcore
from crmcore.store import tables

# -- segmenters -------------------------------------------------------------------------------


class WonDeals(crmcore.Segmenter):
    """Good: customers by their number of won deals."""

    name = "won-deals"
    description = "customers by number of won deals"

    def select(self, ctx: Any, options: Any) -> Any:
        c, d = tables.customers, tables.deals
        won = select(func.count()).where(d.c.customer_id == c.c.id, d.c.stage == "won",
                                         d.c.closed_at <= ctx.as_of).scalar_subquery()
        return select(c.c.id.label("customer_id"),
                      case((won >= 2, literal("repeat")), (won == 1, literal("once")), else_=literal("none"))
                      .label("segment"), null().label("score"), null().label("details"))


class Duplicates(WonDeals):
    """Broken: puts every customer in two segments."""

    name = "duplicates"

    def select(self, ctx: Any, options: Any) -> Any:
        c = tables.customers
        one = select(c.c.id.label("customer_id"), literal("a").label("segment"), null().label("score"),
                     null().label("details"))
        two = select(c.c.id, literal("b"), null(), null())
        return union_all(one, two)


class ExplainFailsForNonMembers(WonDeals):
    """Broken: explain assumes the customer has details."""

    name = "explain-fails"

    def explain(self, ctx: Any, options: Any, membership: Any) -> dict[str, Any]:
        return {"segment": membership["segment"].upper()}


class FailsOnEmpty(crmcore.Segmenter):
    """Broken: divides by the number of customers."""

    name = "fails-on-empty"
    description = "above or below the average number of deals"

    def assign(self, ctx: Any, options: Any) -> Any:
        ids = list(ctx.conn.execute(select(tables.customers.c.id)).scalars())
        average = len(list(ctx.conn.execute(select(tables.deals.c.id)))) / len(ids)
        yield [crmcore.Assignment(i, "above" if average > 1 else "below") for i in ids]


class Shuffles(WonDeals):
    """Broken: a different answer every run (customers swap segments)."""

    name = "shuffles"

    def __init__(self) -> None:
        self.runs = 0

    def assign(self, ctx: Any, options: Any) -> Any:
        self.runs += 1
        ids = list(ctx.conn.execute(select(tables.customers.c.id)).scalars())
        yield [crmcore.Assignment(i, "odd" if (i + self.runs) % 2 else "even") for i in ids]

    def select(self, ctx: Any, options: Any) -> Any:
        return None


# -- loyalty schemes --------------------------------------------------------------------------


class Cashback(crmcore.LoyaltyScheme):
    """Good: one point per whole unit of a won deal."""

    name = "cashback"
    description = "a point per unit of won deals"

    def points_for_deal(self, uow: Any, deal: Any, options: Any) -> int:
        return int(deal.amount)


class BonusEveryRun(Cashback):
    """Broken: its periodic job gives a bonus with a new key every time."""

    name = "bonus-every-run"

    def run(self, ctx: Any, options: Any) -> int:
        first = ctx.conn.execute(select(func.min(tables.customers.c.id))).scalar()
        if first is None:
            return 0
        ctx.uow.loyalty.credit(first, self.name, 5, key=f"{self.name}:bonus:{uuid.uuid4().hex}", kind="bonus")
        return 1


class BalanceBehindTheLedger(Cashback):
    """Broken: its job changes balances without ledger entries."""

    name = "behind-the-ledger"

    def run(self, ctx: Any, options: Any) -> int:
        accounts = tables.loyalty_accounts
        ctx.conn.execute(update(accounts).where(accounts.c.scheme == self.name).values(
            balance=accounts.c.balance + 7))
        return 0


# -- channels (the endpoint is a file of lines: recipient, key, body) ---------------------------


@attrs.frozen
class LinesOptions:
    path: str = "lines.txt"


class Lines(crmcore.Channel):
    """Good: appends a line per message; an unwritable path is retried, a directory given up on."""

    name = "lines"
    description = "a line per message in a file"
    options_type = LinesOptions

    def write(self, path: Path, text: str) -> None:
        with path.open("a", encoding="utf-8") as out:
            out.write(text)

    def send(self, message: Any, options: Any) -> str:
        line = f"{message.recipient}\t{message.idempotency_key}\t{message.body}\n"
        try:
            self.write(Path(options.path), line)
        except IsADirectoryError as exc:
            raise crmcore.PermanentError(str(exc)) from exc
        except OSError as exc:
            raise crmcore.TransientError(str(exc)) from exc
        return message.idempotency_key


class Silent(Lines):
    """Broken: says it sent, delivers nothing."""

    name = "silent"

    def write(self, path: Path, text: str) -> None:
        if path.is_dir() or not path.parent.is_dir():
            raise OSError("cannot write")


class Twice(Lines):
    """Broken: delivers every message twice."""

    name = "twice"

    def write(self, path: Path, text: str) -> None:
        super().write(path, text + text)


class Unclassified(Lines):
    """Broken: lets OSError out instead of saying retry or give up."""

    name = "unclassified"

    def send(self, message: Any, options: Any) -> str:
        self.write(Path(options.path), f"{message.recipient}\t{message.idempotency_key}\t{message.body}\n")
        return message.idempotency_key


class AlwaysPermanent(Lines):
    """Broken: gives up on every failure, even one that would pass."""

    name = "always-permanent"

    def send(self, message: Any, options: Any) -> str:
        try:
            return super().send(message, options)
        except crmcore.TransientError as exc:
            raise crmcore.PermanentError(str(exc)) from exc


# -- reports ------------------------------------------------------------------------------------


class WonCount(crmcore.Report):
    """Good: won deals and revenue per owner up to as_of."""

    name = "won-count"
    description = "won deals per owner"

    def run(self, ctx: Any, options: Any) -> crmcore.ReportResult:
        d = tables.deals
        rows = ctx.conn.execute(select(d.c.owner, func.count(), func.sum(d.c.amount)).where(
            d.c.stage == "won", d.c.closed_at <= ctx.as_of).group_by(d.c.owner).order_by(d.c.owner))
        return crmcore.ReportResult(
            title="Won deals", columns=(crmcore.Column("owner"), crmcore.Column("deals", "int"),
                                        crmcore.Column("revenue", "decimal")),
            rows=tuple((o, int(n), s) for o, n, s in rows))


class ShortRows(WonCount):
    """Broken: leaves the revenue out of its rows."""

    name = "short-rows"

    def run(self, ctx: Any, options: Any) -> crmcore.ReportResult:
        result = super().run(ctx, options)
        return attrs.evolve(result, rows=tuple(r[:2] for r in result.rows) or (("nobody", 0),))


class IgnoresAsOf(WonCount):
    """Broken: counts every won deal, whenever it closed."""

    name = "ignores-as-of"

    def run(self, ctx: Any, options: Any) -> crmcore.ReportResult:
        d = tables.deals
        rows = ctx.conn.execute(select(d.c.owner, func.count(), func.sum(d.c.amount)).where(
            d.c.stage == "won").group_by(d.c.owner).order_by(d.c.owner))
        return attrs.evolve(super().run(ctx, options), rows=tuple((o, int(n), s) for o, n, s in rows))


class ReportFailsOnEmpty(WonCount):
    """Broken: the best owner of no deals."""

    name = "report-fails-on-empty"

    def run(self, ctx: Any, options: Any) -> crmcore.ReportResult:
        result = super().run(ctx, options)
        best = max(result.rows, key=lambda r: r[1])
        return attrs.evolve(result, notes=(f"best: {best[0]}",))
