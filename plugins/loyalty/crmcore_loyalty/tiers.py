"""The ``tiers`` scheme: membership levels by rolling spend or points earned.

A member qualifies for the highest level whose ``threshold`` its *basis*
reaches over the last ``window_months`` months: ``spend`` (the amount of won
deals closed in the window) or ``points`` (points earned in ``points_scheme``
in the window, net of reversals).  Upgrades apply at once.  A member that no
longer qualifies keeps its level for ``grace_days`` (counted from the first
evaluation that found it below) and is then moved down to the level it
qualifies for; qualifying again during the grace period cancels it.

Each level's ``earn_multiplier`` is a benefit other rules read: the ``points``
scheme multiplies what a member earns by it.  Tiers are kept in the core's
``loyalty_accounts`` (scheme ``tiers``, no points), changes fire
``on_loyalty_tier_changed`` and are logged in ``loyalty_tier_changes``.

Evaluation is set-based: one query computes every member's qualifying level
and returns only the members whose level or grace state must change.  It runs
in the periodic job (``crm loyalty run``) and for one customer whenever one of
its deals enters or leaves a won stage.  Replaying it at the same ``as_of``
changes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Unpack, overload

import attrs
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    false,
    literal,
    or_,
    true,
    Select,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    type_coerce,
    union,
    union_all,
    update,
)
from sqlalchemy.sql import ColumnElement, FromClause, Subquery

import crmcore
from crmcore.store import (MONEY_SCALE, UTCDateTime, direct, fetch_ints, fetch_rows, tables, temporary_table,
                           unindexed)
from crmcore.store.upsert import ignoring_conflicts, upserting

from .common import won_deal
from .sql import utc
from .tables import tier_changes, tier_status

if TYPE_CHECKING:
    # Not exported from ``crmcore`` (yet): the type of the context schemes receive.
    from crmcore.loyalty import LoyaltyContext


@attrs.frozen
class Level:
    """A membership level: reached at ``threshold``; ``earn_multiplier`` is its benefit."""

    name: str
    threshold: Decimal
    earn_multiplier: Decimal = Decimal(1)


DEFAULT_LEVELS = (
    Level("Bronze", Decimal(100)),
    Level("Silver", Decimal(1000), Decimal("1.25")),
    Level("Gold", Decimal(5000), Decimal("1.5")),
    Level("Platinum", Decimal(20000), Decimal(2)),
)


def _levels(instance: object, attribute: attrs.Attribute[tuple[Level, ...]], value: tuple[Level, ...]) -> None:
    if not value:
        raise ValueError("levels: at least one level is needed")
    names = [level.name for level in value]
    if len(set(names)) != len(names):
        raise ValueError(f"levels: names must be unique, got {names}")
    thresholds = [level.threshold for level in value]
    if thresholds != sorted(set(thresholds)) or thresholds[0] <= 0:
        raise ValueError(f"levels: thresholds must be positive and strictly increasing, got "
                         f"{', '.join(map(str, thresholds))}")
    for level in value:
        if level.earn_multiplier <= 0:
            raise ValueError(f"levels: {level.name} earn_multiplier must be positive")


def _one_of(*choices: str) -> Any:
    def check(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}, got {value!r}")
    return check


def _not_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


@attrs.frozen
class TiersOptions:
    """Options of the ``tiers`` scheme (``[loyalty.tiers]``; levels as ``[[loyalty.tiers.levels]]``).

    :ivar basis: ``"spend"`` (won deal amounts) or ``"points"`` (points earned).
    :ivar levels: lowest first, thresholds strictly increasing.
    :ivar window_months: the rolling window (12: the last year).
    :ivar grace_days: days below a level's threshold before moving down (0: at once).
    :ivar points_scheme: whose earned points count for ``basis = "points"``.
    """

    basis: str = attrs.field(default="spend", validator=_one_of("spend", "points"))
    levels: tuple[Level, ...] = attrs.field(default=DEFAULT_LEVELS, validator=_levels)
    window_months: int = attrs.field(default=12, validator=_not_negative)
    grace_days: int = attrs.field(default=90, validator=_not_negative)
    points_scheme: str = "points"


class TiersScheme(crmcore.LoyaltyScheme):
    """Membership levels by rolling 12-month spend or points, with a grace period."""

    name = "tiers"
    description = "membership levels by rolling spend or points earned, grace before downgrade, earn multipliers"
    options_type = TiersOptions

    def __init__(self) -> None:
        super().__init__()
        # One customer's evaluation statement per options object (options are built once per
        # CRM, and so is this scheme): (the options, the statement).
        self._one: dict[int, tuple[TiersOptions, Select[Unpack[tuple[Any, ...]]]]] = {}

    def earn_multipliers(self, options: TiersOptions) -> dict[str, Decimal]:
        """The ``earn_multiplier`` benefit of each level (read by the points scheme)."""
        return {level.name: level.earn_multiplier for level in options.levels}

    def run(self, ctx: LoyaltyContext, options: TiersOptions) -> int:
        """The periodic job: :meth:`evaluate` every member; returns the changes made."""
        return self.evaluate(ctx, options)

    def evaluate(self, ctx: LoyaltyContext, options: TiersOptions, customer_ids: list[int] | None = None) -> int:
        """Apply upgrades, grace periods and downgrades as of ``ctx.as_of``; returns the changes made."""
        if customer_ids is None:  # the periodic job: every member, in SQL
            return self._evaluate_all(ctx, options)
        # A few customers (a deal won or lost): decide in Python, write in a few statements.
        plan = self._decide(ctx, options, ctx.conn.execute(self._pending(ctx, options, customer_ids)).all())
        self._write(ctx, plan)
        return plan.changes

    def evaluate_one(self, ctx: LoyaltyContext, options: TiersOptions, customer_id: int) -> int:
        """:meth:`evaluate` for one customer (a deal of theirs entered or left won).

        One statement built once reads the customer's metric over the window, tier and grace
        state; the rules (:meth:`_decide`) run in Python and anything is written only when the
        metric crossed a threshold or a grace period starts, ends or runs out.
        """
        start = self.window_start(ctx.as_of, options.window_months)
        row = direct.run(ctx.conn, self._one_statement(ctx, options), {
            "tier_customer": customer_id, "tier_start": start, "tier_as_of": ctx.as_of}).one()
        qualifying = self._rank(int(row.metric or 0), options)
        current = next((i + 1 for i, level in enumerate(options.levels) if level.name == row.tier), 0)
        if qualifying == current and row.below_since is None:
            return 0
        plan = self._decide(ctx, options, [(customer_id, qualifying, current, row.below_since, row.tier,
                                            row.has_account)])
        self._write(ctx, plan)
        return plan.changes

    def _one_statement(self, ctx: LoyaltyContext, options: TiersOptions) -> Select[Unpack[tuple[Any, ...]]]:
        """metric, tier, has_account, below_since of the customer ``:tier_customer`` (scalar
        subqueries, so a customer without rows still gets one row), with bound window limits."""
        cached = self._one.get(id(options))
        if cached is not None and cached[0] is options:
            return cached[1]
        customer = bindparam("tier_customer", type_=Integer)
        start, as_of = bindparam("tier_start", type_=UTCDateTime), bindparam("tier_as_of", type_=UTCDateTime)
        if options.basis == "spend":
            deals = tables.deals
            metric = select(func.sum(type_coerce(deals.c.amount, BigInteger))).where(
                deals.c.customer_id == customer, won_deal(ctx.config), deals.c.closed_at > start,
                deals.c.closed_at <= as_of)
        else:
            ledger = tables.loyalty_ledger
            metric = select(func.sum(ledger.c.points)).where(
                ledger.c.customer_id == customer, ledger.c.scheme == options.points_scheme,
                ledger.c.kind.in_(("earn", "reverse")), ledger.c.occurred_at > start, ledger.c.occurred_at <= as_of)
        accounts = tables.loyalty_accounts
        mine = and_(accounts.c.customer_id == customer, accounts.c.scheme == self.name)
        statement = select(
            metric.scalar_subquery().label("metric"),
            select(accounts.c.tier).where(mine).scalar_subquery().label("tier"),
            select(accounts.c.customer_id).where(mine).scalar_subquery().label("has_account"),
            select(tier_status.c.below_since).where(tier_status.c.customer_id == customer,
                                                    tier_status.c.scheme == self.name).scalar_subquery()
            .label("below_since"))
        self._one[id(options)] = (options, statement)
        return statement

    def _rank(self, metric: int, options: TiersOptions) -> int:
        """The rank (1 = lowest level, 0 = none) ``metric`` qualifies for (:meth:`_rank_by_threshold` in Python)."""
        for i in range(len(options.levels), 0, -1):
            if metric >= self._scaled(options.levels[i - 1].threshold, options):
                return i
        return 0

    def _evaluate_all(self, ctx: LoyaltyContext, options: TiersOptions) -> int:
        """:meth:`_decide` and :meth:`_write` for every member as statements over a temporary table.

        The pending members and what happens to each (move, clear or start a grace
        period) are computed into the table by one ``INSERT ... SELECT`` over the
        metric's aggregate; each write is then one statement reading it, so no
        member's row passes through Python but the moved customers' ids (for the
        audit record) and whatever a tier hook reads of the moves.
        """
        conn = ctx.conn
        work = _work_table()
        with temporary_table(conn, work):
            accounts_exist, anyone_held = self._stored(conn)
            members = self._members(ctx, options, anyone_held)
            query = self._pending_over(options, members, members.c.customer_id, members.c.metric,
                                       stored=accounts_exist or anyone_held)
            if conn.dialect.name == "sqlite":
                # Not flattened into the INSERT (SQLite keeps a subquery with an OFFSET apart): each
                # member's ranks are computed once, not once per use in the decisions below.
                query = query.offset(0)
            pending = query.subquery("pending")
            changes, moves = self._evaluate_pending(ctx, options, pending, work)
            # The hooks fire while the table is there: the moves are read from it, if at all.
            try:
                self._fire(ctx, moves)
            finally:
                moves.close()
        return changes

    def _stored(self, conn: Connection) -> tuple[bool, bool]:
        """Whether the scheme has accounts, and whether any member holds a tier of it or is in a
        grace period.  Neither before the scheme's first evaluation (also the biggest: every
        member moves), whose statement then reads the aggregate alone, joining nothing."""
        accounts = tables.loyalty_accounts
        held, graced = self._held(None)
        row = conn.execute(select(select(accounts.c.customer_id).where(accounts.c.scheme == self.name).exists(),
                                  or_(held.exists(), graced.exists()))).one()
        return bool(row[0]), bool(row[1])

    def _members(self, ctx: LoyaltyContext, options: TiersOptions, anyone_held: bool) -> Subquery:
        """customer_id, metric of every member who may change: those with a metric over the window
        and those holding a tier or in a grace period without one (metric 0).

        The aggregate is then a common table expression the statement reads twice (the databases
        compute it once): its rows, and the set the other members are checked against.  Searching
        each of 100,000 members' rows for one in the window instead cost half the aggregate again.
        When nobody holds a tier yet (``anyone_held`` false), the aggregate alone, read as it is
        computed.  No temporary table: MariaDB cannot read one twice in a statement.
        """
        if not anyone_held:
            return self._metric(ctx, options).subquery("members")
        metric = self._metric(ctx, options).cte("tier_metric")
        accounts = tables.loyalty_accounts
        held, graced = self._held(None)
        # A member in a grace period holds a tier (the period starts below one): only the odd one
        # that does not is added, rather than a distinct over every holder.
        graced = graced.where(~exists().where(accounts.c.customer_id == tier_status.c.customer_id,
                                              accounts.c.scheme == self.name, accounts.c.tier.is_not(None)))
        others = union_all(held, graced).subquery("others")
        if ctx.conn.dialect.name == "sqlite":  # NOT IN: one index over the aggregate, built once
            none: ColumnElement[bool] = others.c.customer_id.not_in(select(metric.c.customer_id))
        else:
            # NOT EXISTS: PostgreSQL answers NOT IN with a per-row scan of the aggregate once its
            # hash would exceed work_mem (a million members), NOT EXISTS with a hash anti-join.
            none = ~exists().where(metric.c.customer_id == others.c.customer_id)
        without = select(others.c.customer_id, literal(0, BigInteger)).where(none)
        return union_all(select(metric.c.customer_id, metric.c.metric), without).subquery("members")

    def _evaluate_pending(self, ctx: LoyaltyContext, options: TiersOptions, pending: Subquery, work: Table
                          ) -> tuple[int, _WorkMoves]:
        """Decide every pending member's change into ``work`` and apply them (see :meth:`_evaluate_all`);
        returns the number of changes and the moves (customer, old, new), read on first use."""
        conn, uow = ctx.conn, ctx.uow
        accounts = tables.loyalty_accounts
        q, c, below = pending.c.qualifying, pending.c.current, pending.c.below_since
        # Grace is over for a member below since ``cutoff`` or earlier (never, with no grace period).
        over = below <= utc(ctx.as_of - timedelta(days=options.grace_days))
        move = or_(q > c, and_(q < c, or_(below.is_(None) if not options.grace_days else false(), over)))
        clear = and_(below.is_not(None), or_(q >= c, over))
        grace = and_(q < c, below.is_(None), true() if options.grace_days else false())
        new = case(*((q == i + 1, literal(level.name)) for i, level in enumerate(options.levels)),
                   else_=literal(None, String))
        # Only the members that change (each counts once, whatever changes).
        conn.execute(insert(work).from_select(
            ["customer_id", "old", "new", "has_account", "move", "clear", "grace"],
            select(pending.c.customer_id, pending.c.old, new, pending.c.has_account, _flag(move), _flag(clear),
                   _flag(grace)).where(or_(move, clear, grace))))
        # Counted, not the INSERT's row count: the sqlite3 module reports none for a statement
        # that starts with WITH (the aggregate's common table expression).
        changes = int(conn.execute(select(func.count()).select_from(work)).scalar_one())
        if not changes:
            return 0, _WorkMoves(conn, work, 0)
        moved = conn.execute(insert(tier_changes).from_select(["customer_id", "scheme", "old", "new", "changed_at"],
                                                              select(work.c.customer_id, literal(self.name), work.c.old,
                                                                     work.c.new, utc(ctx.as_of)).where(
            work.c.move == 1).order_by(work.c.customer_id)).execution_options(preserve_rowcount=True)).rowcount
        # Grace periods end for members in one (few: the table's rows, each looked up in the work
        # table, rather than a pass over every change), and start for changes that are no move.
        conn.execute(delete(tier_status).where(tier_status.c.scheme == self.name, exists().where(
            work.c.customer_id == tier_status.c.customer_id, work.c.clear == 1)))
        if moved < changes:
            conn.execute(insert(tier_status).from_select(["customer_id", "scheme", "below_since"], select(
                work.c.customer_id, literal(self.name), utc(ctx.as_of)).where(work.c.grace == 1)))
        columns = ["customer_id", "scheme", "balance", "tier", "updated_at"]
        values = select(work.c.customer_id, literal(self.name), literal(0, BigInteger), work.c.new,
                        literal(uow.now, UTCDateTime))
        # New accounts get their tier as they are created.  One created meanwhile (a concurrent credit
        # or evaluation) is given it only if it has no tier yet: a tier set since is newer than ours.
        missing = values.where(work.c.move == 1, work.c.has_account.is_(None))
        upsert = _tier_upsert(conn.dialect.name)
        if upsert is not None:  # one statement, and no look-up of each new account afterwards
            conn.execute(upsert.from_select(columns, missing))
            created_meanwhile: ColumnElement[bool] = false()
        else:  # MariaDB: such an account is skipped here and its tier set by the UPDATE below
            conn.execute(ignoring_conflicts(conn, accounts, accounts.c.customer_id, accounts.c.scheme)
                         .from_select(columns, missing))
            created_meanwhile = and_(work.c.has_account.is_(None), accounts.c.tier.is_(None))
        # Existing accounts by one UPDATE (one deleted meanwhile stays deleted).
        existing = and_(work.c.move == 1, or_(work.c.has_account.is_not(None), created_meanwhile))
        if conn.dialect.name == "sqlite":
            # SQLite runs a joined UPDATE as a scan of every account (each scheme's), each looked up in
            # the work table; this form looks up only the work table's moves.
            conn.execute(update(accounts).values(
                tier=select(work.c.new).where(work.c.customer_id == accounts.c.customer_id).scalar_subquery(),
                updated_at=uow.now).where(accounts.c.scheme == self.name, accounts.c.customer_id.in_(
                    select(work.c.customer_id).where(existing))))
        else:  # (MariaDB cannot open a temporary table twice in a statement)
            conn.execute(update(accounts).values(tier=work.c.new, updated_at=uow.now).where(
                accounts.c.customer_id == work.c.customer_id, accounts.c.scheme == self.name, existing))
        return changes, _WorkMoves(conn, work, int(moved))

    def _fire(self, ctx: LoyaltyContext, moves: Sequence[Any]) -> None:
        """One audit record for the job's moves, (customer, old, new) rows, and the tier hooks
        (``on_loyalty_tiers_changed`` once, ``on_loyalty_tier_changed`` per move, for the plugins
        that listen: ``uow.loyalty.tiers_changed``)."""
        if not moves:
            return
        uow = ctx.uow
        # One record per job: the customers moved (old and new tiers are in loyalty_tier_changes).
        ids = moves.customer_ids() if isinstance(moves, _WorkMoves) else [c for c, _, _ in moves]
        uow.audit.batch("tier.change", "loyalty_account", ids, scheme=self.name)
        uow.loyalty.tiers_changed(self.name, moves)

    def status(self, ctx: LoyaltyContext, customer_id: int, options: TiersOptions) -> dict[str, Any]:
        """The member's tier, its basis over the window, the next tier and any grace period."""
        mine = self._metric(ctx, options, [customer_id]).subquery()
        metric = ctx.conn.execute(select(mine.c.metric)).scalar()
        value = self._as_value(metric or 0, options)
        current = ctx.uow.loyalty.tier(customer_id, self.name)
        above = [level for level in options.levels if level.threshold > value]
        below_since = ctx.conn.execute(select(tier_status.c.below_since).where(
            tier_status.c.customer_id == customer_id, tier_status.c.scheme == self.name)).scalar()
        return {"tier": current, f"{options.basis}_{options.window_months}m": value,
                "next_tier": above[0].name if above else None,
                "to_next_tier": above[0].threshold - value if above else None,
                "grace_until": below_since + timedelta(days=options.grace_days) if below_since else None}

    # -- evaluation ---------------------------------------------------------------
    def window_start(self, as_of: datetime, months: int) -> datetime:
        """``as_of`` moved back ``months`` calendar months (day clamped to the month's end)."""
        month = as_of.month - 1 - months
        year, month = as_of.year + month // 12, month % 12 + 1
        for day in range(as_of.day, 27, -1):
            try:
                return as_of.replace(year=year, month=month, day=day)
            except ValueError:
                continue
        return as_of.replace(year=year, month=month, day=min(as_of.day, 28))

    def _metric_parts(self, ctx: LoyaltyContext, options: TiersOptions
                      ) -> tuple[ColumnElement[int], ColumnElement[int], list[ColumnElement[bool]]]:
        """The metric's customer column, the value it sums (an integer: 1/10,000 units of spend,
        or points) and the conditions of the rows it sums over the window.

        The window's limits are checked row by row (no index leads with the time), on the stored
        text as it is (``unindexed``): SQLite otherwise tries to read the limit as a number at
        every row (its time columns have numeric affinity), about a sixth of the aggregate's time.
        """
        start = self.window_start(ctx.as_of, options.window_months)
        if options.basis == "spend":
            deals = tables.deals
            closed = unindexed(deals.c.closed_at)
            return (deals.c.customer_id, type_coerce(deals.c.amount, BigInteger),
                    [won_deal(ctx.config), closed > utc(start), closed <= utc(ctx.as_of)])
        ledger = tables.loyalty_ledger
        occurred = unindexed(ledger.c.occurred_at)
        return (ledger.c.customer_id, ledger.c.points,
                [ledger.c.scheme == options.points_scheme, ledger.c.kind.in_(("earn", "reverse")),
                 occurred > utc(start), occurred <= utc(ctx.as_of)])

    def _metric(self, ctx: LoyaltyContext, options: TiersOptions, customer_ids: list[int] | None = None
               ) -> Select[int, int]:
        """customer_id, metric over the window (:meth:`_metric_parts`), of ``customer_ids`` or everyone."""
        customer, value, where = self._metric_parts(ctx, options)
        if customer_ids is not None:
            where.append(customer.in_(customer_ids))
        return select(customer, func.sum(value).label("metric")).where(*where).group_by(customer)

    def _scaled(self, threshold: Decimal, options: TiersOptions) -> int:
        return int(threshold * MONEY_SCALE) if options.basis == "spend" else int(threshold)

    def _as_value(self, metric: int, options: TiersOptions) -> Decimal:
        return Decimal(int(metric)) / MONEY_SCALE if options.basis == "spend" else Decimal(int(metric))

    def _pending(self, ctx: LoyaltyContext, options: TiersOptions, customer_ids: list[int] | None
                ) -> Select[Unpack[tuple[Any, ...]]]:
        """Members whose qualifying level differs from their level, or who are in a grace period."""
        metric = self._metric(ctx, options, customer_ids).subquery("metric")
        members = union(select(metric.c.customer_id), *self._held(customer_ids)).subquery("members")
        return self._pending_over(options, members.outerjoin(metric, metric.c.customer_id == members.c.customer_id),
                                  members.c.customer_id, metric.c.metric).order_by(members.c.customer_id)

    def _held(self, customer_ids: list[int] | None) -> tuple[Select[int], Select[int]]:
        """Members without a metric who may still change: those holding a tier or in a grace period."""
        accounts = tables.loyalty_accounts
        held = select(accounts.c.customer_id).where(accounts.c.scheme == self.name, accounts.c.tier.is_not(None))
        graced = select(tier_status.c.customer_id).where(tier_status.c.scheme == self.name)
        if customer_ids is not None:
            held = held.where(accounts.c.customer_id.in_(customer_ids))
            graced = graced.where(tier_status.c.customer_id.in_(customer_ids))
        return held, graced

    def _pending_over(self, options: TiersOptions, members: FromClause, customer_id: ColumnElement[int],
                      metric: ColumnElement[int], stored: bool = True) -> Select[Unpack[tuple[Any, ...]]]:
        """customer_id, qualifying, current (level ranks), below_since, old (tier), has_account of the
        ``members`` (each once, with its ``metric``) whose level or grace state may change.

        ``stored`` false: the scheme has no account and no grace period yet, so every member is
        at no level, outside any grace period, without an account: nothing to join.
        """
        accounts = tables.loyalty_accounts
        qualifying = self._rank_by_threshold(func.coalesce(metric, 0), options)
        if not stored:
            return select(customer_id.label("customer_id"), qualifying.label("qualifying"),
                          literal(0, Integer).label("current"), literal(None, UTCDateTime).label("below_since"),
                          literal(None, String).label("old"), literal(None, Integer).label("has_account")
                          ).select_from(members).where(qualifying != 0)
        current = case(*((accounts.c.tier == level.name, i + 1) for i, level in enumerate(options.levels)), else_=0)
        return select(customer_id.label("customer_id"), qualifying.label("qualifying"), current.label("current"),
                      tier_status.c.below_since, accounts.c.tier.label("old"),
                      accounts.c.customer_id.label("has_account")).select_from(
            members.outerjoin(accounts, and_(accounts.c.customer_id == customer_id, accounts.c.scheme == self.name))
            .outerjoin(tier_status, and_(tier_status.c.customer_id == customer_id, tier_status.c.scheme == self.name))
        ).where((qualifying != current) | tier_status.c.below_since.is_not(None))

    def _rank_by_threshold(self, metric: ColumnElement[int], options: TiersOptions) -> ColumnElement[int]:
        whens = [(metric >= self._scaled(level.threshold, options), i + 1)
                 for i, level in reversed(list(enumerate(options.levels)))]
        return case(*whens, else_=0)

    def _decide(self, ctx: LoyaltyContext, options: TiersOptions, pending: Sequence[Any]) -> _Plan:
        """What to write for the pending members (pure Python, no SQL): grace periods to
        clear, grace periods to start, and moves (customer, old tier, new tier, has an account).

        The rules: a member at or above its level is upgraded at once and any grace
        period ends; one below starts a grace period (``grace_days`` > 0) and moves
        down once it is over.  Each member counts as one change when anything changes.
        """
        plan = _Plan()
        grace = timedelta(days=options.grace_days)
        for customer_id, qualifying, current, below_since, old, has_account in pending:
            qualifying, current = int(qualifying), int(current)
            if qualifying >= current:  # up, or back above the threshold during the grace period
                if below_since is not None:
                    plan.clear.append(customer_id)
                if qualifying > current:
                    plan.moves.append((customer_id, old, self._name(options, qualifying), has_account is not None))
                plan.changes += below_since is not None or qualifying > current
            elif below_since is None and options.grace_days:
                plan.grace.append(customer_id)
                plan.changes += 1
            elif below_since is None or ctx.as_of - below_since >= grace:
                if below_since is not None:
                    plan.clear.append(customer_id)
                plan.moves.append((customer_id, old, self._name(options, qualifying), has_account is not None))
                plan.changes += 1
        return plan

    def _name(self, options: TiersOptions, rank: int) -> str | None:
        return options.levels[rank - 1].name if rank else None

    def _write(self, ctx: LoyaltyContext, plan: _Plan) -> None:
        """Apply a plan in a few statements per job (chunked ``IN`` lists and multi-row inserts),
        then fire the tier hooks for the moves."""
        conn, uow = ctx.conn, ctx.uow
        accounts = tables.loyalty_accounts
        if len(plan.clear) == 1:  # one customer (a deal won or lost): a statement built once
            direct.run(conn, _CLEAR_ONE, {"t_scheme": self.name, "t_customer": plan.clear[0]})
        else:
            for chunk in _chunks(plan.clear):
                conn.execute(delete(tier_status).where(tier_status.c.scheme == self.name,
                                                       tier_status.c.customer_id.in_(chunk)))
        if plan.grace:
            direct.run(conn, _GRACE, [{"customer_id": c, "scheme": self.name, "below_since": ctx.as_of}
                                      for c in plan.grace])
        if not plan.moves:
            return
        direct.run(conn, _CHANGES, [{"customer_id": c, "scheme": self.name, "old": old, "new": new,
                                     "changed_at": ctx.as_of} for c, old, new, _ in plan.moves])
        missing = [{"customer_id": c, "scheme": self.name, "balance": 0, "tier": new, "updated_at": uow.now}
                   for c, _, new, has_account in plan.moves if not has_account]
        upsert = _tier_upsert(conn.dialect.name)
        if missing and upsert is not None:  # created holding the tier, or (created meanwhile, no tier) given it
            direct.run(conn, upsert, missing)
        elif missing:  # the tier is set below, with the existing accounts' (a concurrent insert is skipped)
            conn.execute(ignoring_conflicts(conn, accounts, accounts.c.customer_id, accounts.c.scheme), missing)
        by_tier: dict[str | None, list[int]] = {}
        for customer_id, _, new, has_account in plan.moves:
            if has_account or upsert is None:
                by_tier.setdefault(new, []).append(customer_id)
        for new, ids in by_tier.items():
            if len(ids) == 1:
                direct.run(conn, _SET_ONE, {"t_scheme": self.name, "t_customer": ids[0], "t_tier": new,
                                        "t_now": uow.now})
                continue
            for chunk in _chunks(ids):
                conn.execute(update(accounts).where(accounts.c.scheme == self.name,
                                                    accounts.c.customer_id.in_(chunk)).values(
                    tier=new, updated_at=uow.now))
        self._fire(ctx, [(c, old, new) for c, old, new, _ in plan.moves])


class _WorkMoves(Sequence[tuple[int, str | None, str | None]]):
    """A tier job's moves, (customer id, old tier, new tier) in customer order, read from its
    temporary table on first use: the ``moves`` the tier hooks get.

    A job can move every member, and its listeners often read none of the moves (the notify
    plugin's trigger, with no ``tier_upgraded`` trigger configured): reading 100,000 of them
    cost about a tenth of the job.  ``len()`` is known without reading.  Once read, they
    are kept; a sequence the hooks never read is closed when the job drops its table, and
    reading it then is an error that says so.
    """

    def __init__(self, conn: Connection, work: Table, count: int) -> None:
        self._conn, self._work, self._count = conn, work, count
        self._items: list[tuple[int, str | None, str | None]] | None = None
        self._closed = False

    def customer_ids(self) -> list[int]:
        """The moved customers' ids, ascending (one column, read as one JSON array where that pays)."""
        work = self._work
        return fetch_ints(self._conn, select(work.c.customer_id).where(work.c.move == 1).order_by(work.c.customer_id))

    def _load(self) -> list[tuple[int, str | None, str | None]]:
        if self._items is None:
            if self._closed:
                raise RuntimeError("a tier job's moves are read from its temporary table: read them during "
                                   "the hook call (list(moves) keeps them)")
            work = self._work
            # The driver's own tuples (ids and tier names need no processing): no Row object per move.
            self._items = list(fetch_rows(self._conn, select(work.c.customer_id, work.c.old, work.c.new).where(
                work.c.move == 1).order_by(work.c.customer_id))) if self._count else []
        return self._items

    def close(self) -> None:
        """The table is about to go: later reads of moves not read yet are an error."""
        self._closed = True

    def __len__(self) -> int:
        return self._count if self._items is None else len(self._items)

    @overload
    def __getitem__(self, index: int) -> tuple[int, str | None, str | None]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[int, str | None, str | None]]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._load()[index]

    def __iter__(self) -> Iterator[tuple[int, str | None, str | None]]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence (a list, a tuple, another job's moves) of the same moves."""
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return self._load() == list(other)

    __hash__ = None  # type: ignore[assignment]


@attrs.define
class _Plan:
    """What one evaluation writes (see :meth:`TiersScheme._decide`)."""

    clear: list[int] = attrs.Factory(list)
    grace: list[int] = attrs.Factory(list)
    moves: list[tuple[int, str | None, str | None, bool]] = attrs.Factory(list)
    changes: int = 0


# Built once: one customer's tier writes (a deal won or lost), with bound values only.
_CLEAR_ONE = delete(tier_status).where(tier_status.c.scheme == bindparam("t_scheme"),
                                       tier_status.c.customer_id == bindparam("t_customer"))
_GRACE = insert(tier_status)
_CHANGES = insert(tier_changes)
_SET_ONE = update(tables.loyalty_accounts).where(
    tables.loyalty_accounts.c.scheme == bindparam("t_scheme"),
    tables.loyalty_accounts.c.customer_id == bindparam("t_customer")).values(
    tier=bindparam("t_tier"), updated_at=bindparam("t_now"))


@functools.cache
def _tier_upsert(dialect: str) -> Any:
    """A tiers account created holding its tier, or, if one exists without a tier (created meanwhile
    by a concurrent credit), given it; one given a tier meanwhile keeps that newer tier (one
    statement; None on MariaDB)."""
    accounts = tables.loyalty_accounts
    return upserting(dialect, accounts, (accounts.c.customer_id, accounts.c.scheme), (
        ("tier", lambda new: new.tier), ("updated_at", lambda new: new.updated_at)),
        where=accounts.c.tier.is_(None))


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def _work_table() -> Table:
    """The temporary table of :meth:`TiersScheme._evaluate_all` (a fresh MetaData per job)."""
    return Table("tmp_loyalty_tier_work", MetaData(), Column("customer_id", Integer, primary_key=True),
                 Column("old", String(50)), Column("new", String(50)), Column("has_account", Integer),
                 Column("move", Integer, nullable=False), Column("clear", Integer, nullable=False),
                 Column("grace", Integer, nullable=False), prefixes=["TEMPORARY"])


def _chunks(ids: list[int], size: int = 5000) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]
