"""The loyalty jobs over every customer: bulk earning, expiry, the schemes' runs, checks.

Set-based: each job is a few statements over all won deals or accounts, not
a loop over customers.  :class:`LoyaltyJobs` is part of ``crm.loyalty``
(:class:`~crmcore.loyalty.LoyaltyEngine` inherits it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    JSON,
    String,
    and_,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.sql import ColumnElement

from ..application.registry import Registry
from ..domain.errors import CRMError
from ..domain.entities import Deal, Stage, StageOutcome
from ..store import tables
from .ledger import (
    accounts,
    ledger,
)
from .scheme import LoyaltyContext, LoyaltyScheme

if TYPE_CHECKING:
    from ..app import CRM
    from ..application.uow import UnitOfWork

T = TypeVar("T")


class LoyaltyJobs:
    """The periodic and bulk operations of ``crm.loyalty``."""

    crm: CRM
    registry: Registry[LoyaltyScheme]

    if TYPE_CHECKING:
        def schemes(self) -> list[LoyaltyScheme]: ...
        def options(self, scheme: LoyaltyScheme) -> Any: ...
        def context(self, uow: UnitOfWork, as_of: datetime | None = None) -> LoyaltyContext: ...
        def evaluate_tiers(self, uow: UnitOfWork, scheme_name: str, customer_ids: list[int]) -> None: ...
        def _retrying(self, work: Callable[[UnitOfWork], T]) -> T: ...
        def deal_stage_changed(self, uow: UnitOfWork, deal: Deal, old: Stage | None, new: Stage | None,
                               transition_id: int) -> None: ...

    def earn_won_deals(self, as_of: str | date | datetime | None = None,
                       scheme: str | None = None) -> dict[str, int]:
        """Catch up: earn for every won deal (closed by ``as_of``) that has not earned in a scheme.

        The batch job behind ``crm loyalty earn``: one ``INSERT ... SELECT``
        per scheme that has :meth:`LoyaltyScheme.earn_select`, keys
        ``<scheme>:deal:<id>:earn:batch``; a deal that already earned (by a
        stage change, an import or an earlier run) is skipped, so a rerun
        writes nothing.  Returns the entries written per scheme.
        """
        moment = self.crm.as_of(as_of)
        names = [scheme] if scheme else self.registry.names()
        written: dict[str, int] = {}
        with self._one_at_a_time("crmcore:loyalty:earn"), self.crm.unit() as uow:
            self.crm.authorize("loyalty.earn", None)
            for name in names:
                target = self.registry.get(name)
                if not earns_for_deals(target):  # tiers, bonuses, rewards: nothing to page through
                    written[name] = 0
                    continue
                earned = exists().where(ledger.c.deal_id == tables.deals.c.id, ledger.c.scheme == name,
                                        ledger.c.kind == "earn")
                where = [self._won_stage_filter(), tables.deals.c.closed_at <= moment, ~earned]
                written[name] = self._earn_where(uow, target, where, "batch", moment)
        return written

    @contextmanager
    def _one_at_a_time(self, name: str, wait_s: int = 600) -> Iterator[None]:
        """On MariaDB/MySQL, run a job alone: a named lock (``GET_LOCK``) held on a
        connection of its own until the job's transaction has ended.

        Two overlapping ``INSERT IGNORE ... SELECT`` runs of the earning job
        can fail there with error 1467 (a lock conflict on the auto-increment
        reported as "failed to read auto-increment value").  PostgreSQL
        serialises the job with a transaction-scoped advisory lock
        (``LoyaltyLedger._job_lock``); SQLite's write transactions are serial.
        """
        if self.crm.engine.dialect.name not in ("mysql", "mariadb"):
            yield
            return
        with self.crm.engine.connect() as conn:
            if conn.execute(select(func.get_lock(name, wait_s))).scalar() != 1:
                raise CRMError(f"another run of {name} has held its lock for {wait_s} s; try again later")
            try:
                yield
            finally:
                conn.execute(select(func.release_lock(name)))

    def _won_stage_filter(self) -> ColumnElement[bool]:
        deals = tables.deals
        return or_(*(and_(deals.c.pipeline == pipeline.name,
                          deals.c.stage.in_([s.name for s in pipeline.stages if s.outcome is StageOutcome.WON]))
                     for pipeline in self.crm.config.pipelines.values()))

    def deals_moved(self, uow: "UnitOfWork",
                    moves: list[tuple[Deal, Stage | None, Stage | None, int, datetime]]) -> None:
        """Earn and reverse for bulk stage moves (``crm.deals.move_many``):
        (deal as moved, old stage, new stage, transition id, time of the move).

        Deals entering a won stage earn in bulk, keyed by their transition as a
        single move is (``<scheme>:deal:<id>:earn:<transition>``): set-based for
        schemes with :meth:`LoyaltyScheme.earn_select`.  A deal that leaves a won
        stage in the batch takes the single-move path for its moves, in order
        and at their times (a reversal allocates per account, FIFO).
        """
        if not len(self.registry):
            return
        changes = [m for m in moves if _is_won(m[1]) != _is_won(m[2])]
        leaving = {deal.id for deal, old, *_ in changes if _is_won(old)}
        call_time = uow.now
        try:
            for deal, old, new, transition, at in changes:
                if deal.id in leaving:
                    uow.now = at  # as the single move at that time would see it
                    self.deal_stage_changed(uow, deal, old, new, transition)
        finally:
            uow.now = call_time
        earning = {deal.id: (deal, transition) for deal, _, _, transition, _ in changes if deal.id not in leaving}
        ids = sorted(i for i in earning if i is not None)
        for scheme in self.registry:
            if not earns_for_deals(scheme):
                continue
            if type(scheme).earn_select is not LoyaltyScheme.earn_select:
                for start in range(0, len(ids), 5000):
                    chunk = tables.deals.c.id.in_(ids[start:start + 5000])
                    self._earn_where(uow, scheme, [chunk], None, uow.now)
                continue
            self._credit_deals(uow, scheme, self.options(scheme), [earning[i][0] for i in ids],
                               {i: str(earning[i][1]) for i in ids})

    def _earn_where(self, uow: "UnitOfWork", scheme: LoyaltyScheme, where: list[ColumnElement[bool]],
                    suffix: str | None, as_of: datetime) -> int:
        """Earn for the deals matching ``where``: set-based if the scheme can, else in chunks.

        The keys end in ``suffix``, or (None) in each deal's latest stage-history
        id: the transition that made it won, as a single move's key does.
        """
        options = self.options(scheme)
        source = scheme.earn_select(self.context(uow, as_of), options, where)
        if source is not None:
            src = source.subquery("earn")
            history = tables.deal_stage_history
            ending: ColumnElement[Any] = literal(f":earn:{suffix}") if suffix is not None else (
                literal(":earn:") + cast(select(func.max(history.c.id)).where(
                    history.c.deal_id == src.c.deal_id).scalar_subquery(), String))
            key = literal(f"{scheme.name}:deal:") + cast(src.c.deal_id, String) + ending
            rows = select(src.c.customer_id, src.c.points, key.label("idempotency_key"), src.c.deal_id,
                          src.c.expires_at, (literal("deal ") + cast(src.c.deal_id, String) + literal(" won"))
                          .label("reason"), src.c.occurred_at, literal("earn").label("kind"),
                          literal(None, JSON(none_as_null=True)).label("details")).where(src.c.points > 0)
            # No key check per row: callers pass only deals without an earn entry in
            # this scheme (or new ones), and the unique key is the last line of defence.
            if suffix is not None:
                return uow.loyalty.insert_credits(scheme.name, rows, f"{scheme.name}:deal:%:earn:{suffix}")
            # Every earn key matches this pattern: count only these deals' new entries.
            deal_ids = select(tables.deals.c.id).where(*where)
            return uow.loyalty.insert_credits(scheme.name, rows, f"{scheme.name}:deal:%:earn:%",
                                              only=ledger.c.deal_id.in_(deal_ids))
        if suffix is None:  # deals_moved passes per-deal suffixes to _credit_deals itself
            raise ValueError("keys by transition need the scheme's earn_select")
        total, last = 0, 0
        while True:  # keyset pages: bounded memory whatever the number of deals
            page = uow.conn.execute(select(tables.deals).where(*where, tables.deals.c.id > last).order_by(
                tables.deals.c.id).limit(5000)).all()
            if not page:
                return total
            total += self._credit_deals(uow, scheme, options, [uow.deals.from_row(r._mapping) for r in page],
                                        suffix)
            last = page[-1].id

    def _credit_deals(self, uow: "UnitOfWork", scheme: LoyaltyScheme, options: Any, deals: list[Deal],
                      suffix: str | Mapping[int | None, str]) -> int:
        """Earn deal by deal (schemes without a set-based query), credited in bulk; ``suffix``
        ends every key, or per deal id."""
        credits = []
        for deal in deals:
            points = scheme.points_for_deal(uow, deal, options)
            if points > 0:
                earned_at = deal.closed_at or uow.now
                credits.append({"customer_id": deal.customer_id, "points": points, "deal_id": deal.id,
                                "key": f"{scheme.name}:deal:{deal.id}:earn:"
                                       f"{suffix if isinstance(suffix, str) else suffix[deal.id]}",
                                "occurred_at": earned_at,
                                "expires_at": scheme.expires_at(uow, earned_at, options),
                                "reason": f"deal {deal.id} won"})
        return uow.loyalty.credit_many(scheme.name, credits) if credits else 0

    def expire(self, as_of: str | date | datetime | None = None, scheme: str | None = None) -> int:
        """Expire every batch past its expiry as of ``as_of`` (idempotent); returns the entries written."""
        moment = self.crm.as_of(as_of)
        if scheme:
            self.registry.get(scheme)
        def work(uow: UnitOfWork) -> int:
            self.crm.authorize("loyalty.expire", scheme)
            return uow.loyalty.expire(moment, scheme=scheme)
        return self._retrying(work)

    def run(self, as_of: str | date | datetime | None = None, scheme: str | None = None,
            progress: Callable[[int, int, str], None] | None = None) -> dict[str, int]:
        """Run each scheme's periodic job (birthday bonuses, tier evaluation, referral bonuses).

        :param progress: called as ``progress(done, total, scheme)`` before each
            scheme's job and once at the end (``crm loyalty run`` draws a bar).
        """
        moment = self.crm.as_of(as_of)
        names = [scheme] if scheme else self.registry.names()
        done: dict[str, int] = {}
        with self.crm.unit() as uow:
            self.crm.authorize("loyalty.run", scheme)
            for n, name in enumerate(names):
                if progress is not None:
                    progress(n, len(names), name)
                target = self.registry.get(name)
                done[name] = target.run(self.context(uow, moment), self.options(target))
        if progress is not None:
            progress(len(names), len(names), "")
        return done


    def balances(self, scheme: str) -> dict[int, int]:
        """Every customer's balance in a scheme."""
        with self.crm.unit(readonly=True) as uow:
            return dict(uow.conn.execute(select(accounts.c.customer_id, accounts.c.balance).where(
                accounts.c.scheme == scheme)).all())

    def drift(self, scheme: str | None = None) -> list[tuple[int, str, int, int]]:
        """Accounts whose stored balance differs from the ledger's sum: (customer, scheme, stored, ledger)."""
        sums = select(ledger.c.customer_id, ledger.c.scheme, func.sum(ledger.c.points).label("total")).group_by(
            ledger.c.customer_id, ledger.c.scheme).subquery()
        query = select(accounts.c.customer_id, accounts.c.scheme, accounts.c.balance,
                       func.coalesce(sums.c.total, 0)).outerjoin(
            sums, and_(sums.c.customer_id == accounts.c.customer_id, sums.c.scheme == accounts.c.scheme)).where(
            accounts.c.balance != func.coalesce(sums.c.total, 0))
        if scheme:
            query = query.where(accounts.c.scheme == scheme)
        with self.crm.unit(readonly=True) as uow:
            return [tuple(r) for r in uow.conn.execute(query)]


def earns_for_deals(scheme: LoyaltyScheme) -> bool:
    """Whether won deals can earn in ``scheme``: it overrides ``earn_select`` or ``points_for_deal``.

    A scheme with neither (tiers, birthday, referral, rewards) earns 0 for every
    deal by definition, so the jobs skip it instead of paging through every won deal.
    """
    kind = type(scheme)
    return (kind.earn_select is not LoyaltyScheme.earn_select
            or kind.points_for_deal is not LoyaltyScheme.points_for_deal)


def _is_won(stage: Stage | None) -> bool:
    return stage is not None and stage.outcome is StageOutcome.WON
