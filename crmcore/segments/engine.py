"""Segmentation: strategies from plugins, runs and memberships in the core.

A :class:`Segmenter` assigns customers to named segments, either as one SQL
``SELECT`` (fast path: the engine runs ``INSERT ... SELECT``) or as batches of
:class:`Assignment` (or columns, :class:`Assignments`) from Python (for
model-based strategies), optionally ending with :class:`EveryoneElse`.  Every run is
recorded; the engine diffs it against the strategy's previous run and fires
``on_segment_membership_changed`` with what changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Select, and_, case, delete, func, insert, literal, null, select, update

from ..application.components import build_options, options_dict
from ..application.registry import Registry
from ..domain.errors import NotFound, ValidationError
from ..store import tables
from ..store.bulk import inserted_id
from .memberships import (
    MembershipChanges,
    MembershipWriter,
    SQLiteMembershipWriter,
    cyclic_gc_paused,
    untyped_null,
)
from .reference import ResolvedSegment, SegmentRef, resolve_segment
from .protocol import (
    Assignment,
    Assignments,
    EveryoneElse,
    MembershipChange,
    SegmentContext,
    Segmenter,
    SegmentRun,
)

if TYPE_CHECKING:
    from ..app import CRM
    from ..application.uow import UnitOfWork

m = tables.segment_memberships
runs = tables.segment_runs


class SegmentEngine:
    """``crm.segments``: list strategies, run them, read runs and members."""

    def __init__(self, crm: "CRM"):
        self.crm = crm
        self.registry: Registry[Segmenter] = Registry("segmenter")

    def strategies(self) -> list[Segmenter]:
        """The registered segmentation strategies, by name."""
        self.crm.authorize("segment.strategies", None)
        return list(self.registry)

    def run(self, strategy: str, as_of: str | date | datetime | None = None,
            options: Mapping[str, Any] | None = None) -> SegmentRun:
        """Run ``strategy`` as of ``as_of``; store memberships; fire change events."""
        segmenter = self.registry.get(strategy)
        opts = build_options(segmenter, "segments", self.crm.config, options)
        moment = self.crm.as_of(as_of)
        with self.crm.unit() as uow:
            self.crm.authorize("segment.run", strategy)
            started = time.perf_counter()
            run_id = inserted_id(uow.conn.execute(insert(runs).values(
                strategy=strategy, options=options_dict(opts), as_of=moment, started_at=uow.now,
                actor=uow.actor)))
            uow.audit.record("segment.run", "segment_run", run_id, values={"strategy": strategy, "as_of": moment})
            ctx = SegmentContext(uow, moment)
            query = segmenter.select(ctx, opts)
            if query is not None:
                self._insert_select(uow, run_id, query)
            else:
                with cyclic_gc_paused():
                    self._insert_batches(uow, run_id, segmenter.assign(ctx, opts))
            self._drop_archived(uow, run_id)
            if ctx.run_details:  # before the diff, so the change event's run carries them
                uow.conn.execute(update(runs).where(runs.c.id == run_id).values(details=ctx.run_details))
            stats = self._diff(uow, strategy, run_id)
            stats["duration_s"] = time.perf_counter() - started
            uow.conn.execute(update(runs).where(runs.c.id == run_id).values(**stats))
            return self._run(uow, run_id)

    @staticmethod
    def _drop_archived(uow: "UnitOfWork", run_id: int) -> None:
        """Archived customers are no longer live customers: whatever a strategy selected, they are in
        no segment of the run (one statement here rather than a rule every strategy must follow; the
        index on ``customers.archived_at`` keeps it cheap when nobody is archived)."""
        gone = select(tables.customers.c.id).where(tables.customers.c.archived_at.is_not(None))
        uow.conn.execute(delete(m).where(m.c.run_id == run_id, m.c.customer_id.in_(gone)))

    @staticmethod
    def _insert_select(uow: "UnitOfWork", run_id: int, query: Select[*tuple[Any, ...]]) -> None:
        sub = query.subquery()
        # PostgreSQL types a bare NULL inside a subquery as text and then refuses it
        # for the float/JSON column; a NULL at the top level takes the column's type.
        optional = [null() if untyped_null(query.selected_columns[name]) else sub.c[name]
                    for name in ("score", "details")]
        source = select(literal(run_id), sub.c.customer_id, sub.c.segment, *optional)
        uow.conn.execute(insert(m).from_select(["run_id", "customer_id", "segment", "score", "details"], source))

    @staticmethod
    def _insert_batches(uow: "UnitOfWork", run_id: int,
                        batches: Iterable[Iterable[Assignment] | Assignments | EveryoneElse]) -> None:
        writer = (SQLiteMembershipWriter if uow.conn.dialect.name == "sqlite" else MembershipWriter)(
            uow.conn, run_id)
        rest: EveryoneElse | None = None
        for batch in batches:
            if isinstance(batch, EveryoneElse):
                rest = batch
                continue
            if isinstance(batch, Assignments):
                ids, segments, scores, details = batch.columns()
            else:
                batch = list(batch)
                ids, segments, scores, details = ([a.customer_id for a in batch], [a.segment for a in batch],
                                                  [a.score for a in batch], [a.details for a in batch])
            if rest is not None and ids:
                raise ValueError("Segmenter.assign() yielded assignments after EveryoneElse, which must be last")
            writer.write(ids, segments, scores, details)
        writer.finish(None if rest is None else rest.segment)

    def _diff(self, uow: "UnitOfWork", strategy: str, run_id: int) -> dict[str, Any]:
        """Count changes against the previous run (and, when someone listens, hand them a
        :class:`MembershipChanges` view that lists them on demand)."""
        conn = uow.conn
        previous = conn.execute(select(func.max(runs.c.id)).where(
            runs.c.strategy == strategy, runs.c.id < run_id)).scalar()
        counts = {seg: n for seg, n in conn.execute(
            select(m.c.segment, func.count()).where(m.c.run_id == run_id).group_by(m.c.segment))}
        stats: dict[str, Any] = {"members": sum(counts.values()), "counts": counts}
        stats.update(self._change_counts(conn, run_id, previous, stats["members"]))
        changed = stats["entered"] + stats["left"] + stats["moved"]
        if uow.crm.plugins.has_impls("on_segment_membership_changed") and changed:
            # A lazy view: a listener that needs no change (say, a trigger of another
            # strategy) costs no query and no Python object per changed membership.
            changes = MembershipChanges(conn, run_id, previous, changed)
            uow.conn.execute(update(runs).where(runs.c.id == run_id).values(**stats))
            uow.fire("on_segment_membership_changed", run=self._run(uow, run_id), changes=changes)
        return stats

    @staticmethod
    def _change_counts(conn: Any, run_id: int, previous: int | None, members: int) -> dict[str, int]:
        """entered / left / moved in one pass over the new run (a key lookup in the old one per member).

        ``matched`` members are in both runs, so entered = members - matched and
        left = previous members - matched; a first run only has entries.
        """
        if previous is None:
            return {"entered": members, "left": 0, "moved": 0}
        new, old = m.alias("new"), m.alias("old")
        matched, moved = conn.execute(
            select(func.count(old.c.customer_id),
                   func.coalesce(func.sum(case((old.c.segment != new.c.segment, 1), else_=0)), 0))
            .select_from(new.outerjoin(old, and_(old.c.run_id == previous, old.c.customer_id == new.c.customer_id)))
            .where(new.c.run_id == run_id)).one()
        # Counted, not read from the run record: deleting a customer deletes their memberships.
        before = conn.execute(select(func.count()).select_from(m).where(m.c.run_id == previous)).scalar_one()
        return {"entered": members - matched, "left": before - matched, "moved": int(moved)}

    # -- reading (on the read replica when one is configured: crmcore.store.replica) ----
    def runs(self, strategy: str | None = None, limit: int = 50) -> list[SegmentRun]:
        """The recorded runs, newest first (of one strategy if given)."""
        self.crm.authorize("segment.runs", strategy)
        return self._runs(strategy, limit)

    def _runs(self, strategy: str | None, limit: int) -> list[SegmentRun]:
        with self.crm.unit(replica=True) as uow:
            query = select(runs.c.id).order_by(runs.c.id.desc()).limit(limit)
            if strategy:
                query = query.where(runs.c.strategy == strategy)
            return [self._run(uow, rid) for rid in uow.conn.execute(query).scalars()]

    def resolve(self, ref: SegmentRef | str, as_of: str | date | datetime | None = None) -> ResolvedSegment:
        """The strategy, segment and latest run (up to ``as_of``) that a reference
        ``STRATEGY:SEGMENT`` or ``SEGMENT`` names (see :mod:`crmcore.segments.reference`).

        A :class:`~crmcore.ValidationError` lists the known ones when it names none.
        """
        moment = self.crm.as_of(as_of) if as_of is not None else None
        with self.crm.unit(readonly=True) as uow:
            return resolve_segment(uow.conn, ref, moment, registered=self.registry.names())

    def latest_run(self, strategy: str) -> SegmentRun | None:
        """The newest run of ``strategy``, or None if it never ran."""
        found = self._runs(strategy, limit=1)
        return found[0] if found else None

    def members(self, strategy: str, segment: str | None = None, run_id: int | None = None,
                customer_fields: bool = False) -> list[dict[str, Any]]:
        """Memberships of a run (default: the strategy's latest), optionally one segment.

        With ``customer_fields`` each row also carries the customer's ``name``
        and ``email`` (one join, not a lookup per member).
        """
        return list(self.iter_members(strategy, segment, run_id, customer_fields))

    def iter_members(self, strategy: str, segment: str | None = None, run_id: int | None = None,
                     customer_fields: bool = False, *, after: int | None = None,
                     limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Like :meth:`members`, streamed (for exports of large runs).

        ``after`` and ``limit`` read one keyset page: at most ``limit`` members whose
        customer id is greater than ``after`` (members come in customer id order).
        Asks ``authorize("segment.members", strategy)`` now, not at the first row, so a
        refused caller has not opened an output file yet; a ``run_id`` of another
        strategy is a :class:`ValidationError` (rather than that run's members).
        """
        self.crm.authorize("segment.members", strategy)
        if run_id is not None:
            self._check_run(run_id, strategy)
        return self._iter_members(strategy, segment, run_id, customer_fields, after, limit)

    def _iter_members(self, strategy: str, segment: str | None, run_id: int | None,
                      customer_fields: bool, after: int | None = None,
                      limit: int | None = None) -> Iterator[dict[str, Any]]:
        if run_id is None:
            latest = self.latest_run(strategy)
            if latest is None:
                return
            run_id = latest.id
        columns = [m.c.customer_id, m.c.segment, m.c.score, m.c.details]
        source: Any = m
        if customer_fields:
            c = tables.customers
            columns[1:1] = [c.c.name, c.c.email]
            source = m.join(c, c.c.id == m.c.customer_id)
        query = select(*columns).select_from(source).where(m.c.run_id == run_id)
        if segment is not None:
            query = query.where(m.c.segment == segment)
        if after is not None:
            query = query.where(m.c.customer_id > after)
        if limit is not None:
            query = query.limit(limit)
        with self.crm.unit(replica=True) as uow:
            for row in uow.conn.execute(query.order_by(m.c.customer_id).execution_options(yield_per=5000)):
                yield dict(row._mapping)

    def diff(self, run_a: int, run_b: int) -> list[MembershipChange]:
        """What changed from run ``run_a`` to run ``run_b`` (of the same strategy).

        Ordered by customer id; ``change`` says entered, left or moved.
        """
        self.crm.authorize("segment.diff", (run_a, run_b))
        first, second = self._run_info(run_a), self._run_info(run_b)
        if first.strategy != second.strategy:
            raise ValidationError.single(
                "runs", f"run {run_a} is {first.strategy!r} and run {run_b} is {second.strategy!r}: "
                        "only runs of the same strategy can be compared")
        a, b = m.alias("a"), m.alias("b")
        on = and_(a.c.customer_id == b.c.customer_id, a.c.run_id == run_a, b.c.run_id == run_b)
        entered = select(b.c.customer_id, null(), b.c.segment).select_from(b.outerjoin(a, on)).where(
            b.c.run_id == run_b, a.c.customer_id.is_(None))
        left = select(a.c.customer_id, a.c.segment, null()).select_from(a.outerjoin(b, on)).where(
            a.c.run_id == run_a, b.c.customer_id.is_(None))
        moved = select(a.c.customer_id, a.c.segment, b.c.segment).select_from(a.join(b, on)).where(
            a.c.segment != b.c.segment)
        with self.crm.unit(replica=True) as uow:
            changes = [MembershipChange(cid, old, new) for query in (entered, left, moved)
                       for cid, old, new in uow.conn.execute(query)]
        return sorted(changes, key=lambda change: change.customer_id)

    def explain(self, strategy: str, customer_id: int, run_id: int | None = None) -> dict[str, Any]:
        """Why ``customer_id`` is where they are in a run (default: the strategy's latest).

        Returns ``strategy``, ``run_id``, ``as_of``, ``segment`` (None when the
        customer is not a member of that run), ``explanation``: what the
        strategy's :meth:`Segmenter.explain` says, and ``run_details``: what
        the strategy recorded about that run (:attr:`SegmentRun.details`).
        """
        self.crm.authorize("segment.explain", customer_id)
        segmenter = self.registry.get(strategy)
        if run_id is None:
            latest = self.latest_run(strategy)
            if latest is None:
                raise NotFound("segment run of", strategy)
            run = latest
        else:
            run = self._check_run(run_id, strategy)
        opts = build_options(segmenter, "segments", self.crm.config, run.options)
        with self.crm.unit(replica=True) as uow:
            if uow.conn.execute(select(tables.customers.c.id).where(tables.customers.c.id == customer_id)
                                ).first() is None:
                raise NotFound("customer", customer_id)
            row = uow.conn.execute(select(m.c.segment, m.c.score, m.c.details).where(
                m.c.run_id == run.id, m.c.customer_id == customer_id)).first()
            membership = dict(row._mapping) if row else {"segment": None, "score": None, "details": None}
            membership["customer_id"] = customer_id
            membership["run_id"] = run.id  # so a strategy explains with that run's inputs
            ctx = SegmentContext(uow, run.as_of, run_details=dict(run.details or {}))
            explanation = segmenter.explain(ctx, opts, membership)
        return {"strategy": strategy, "run_id": run.id, "as_of": run.as_of, "customer_id": customer_id,
                "segment": membership["segment"], "score": membership["score"], "explanation": explanation,
                "run_details": run.details}

    def run_info(self, run_id: int) -> SegmentRun:
        """One recorded run; :class:`NotFound` when there is none with that id."""
        self.crm.authorize("segment.runs", run_id)
        return self._run_info(run_id)

    def _run_info(self, run_id: int) -> SegmentRun:
        with self.crm.unit(replica=True) as uow:
            if uow.conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
                raise NotFound("segment run", run_id)
            return self._run(uow, run_id)

    def _check_run(self, run_id: int, strategy: str) -> SegmentRun:
        run = self._run_info(run_id)
        if run.strategy != strategy:
            raise ValidationError.single("run", f"run {run_id} is a run of {run.strategy!r}, not of {strategy!r}")
        return run

    def segments_of(self, customer_id: int) -> dict[str, str]:
        """The customer's segment in the latest run of each strategy."""
        latest = select(runs.c.strategy, func.max(runs.c.id).label("run_id")).group_by(runs.c.strategy).subquery()
        query = select(latest.c.strategy, m.c.segment).join(m, m.c.run_id == latest.c.run_id).where(
            m.c.customer_id == customer_id)
        with self.crm.unit(readonly=True) as uow:
            return dict(uow.conn.execute(query).all())

    @staticmethod
    def _run(uow: "UnitOfWork", run_id: int) -> SegmentRun:
        row = uow.conn.execute(select(runs).where(runs.c.id == run_id)).one()._mapping
        return SegmentRun(**{f.name: row[f.name] for f in attrs.fields(SegmentRun)})
