"""What a segmentation strategy is and what it yields.

A :class:`Segmenter` (from a plugin) assigns customers to named segments, as
one SQL ``SELECT`` or as batches of :class:`Assignment` / :class:`Assignments`
from Python, optionally ending with :class:`EveryoneElse`.  The engine records
each :class:`SegmentRun` and reports :class:`MembershipChange` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import Select

from ..application.components import Component, EngineContext


@attrs.frozen
class Assignment:
    """One customer's place in a segmentation run."""

    customer_id: int
    segment: str
    score: float | None = None
    details: dict[str, Any] | None = None


@attrs.frozen
class Assignments:
    """Many customers' assignments as columns: a batch :meth:`Segmenter.assign`
    may yield instead of a list of :class:`Assignment`.

    For strategies that compute in arrays: no object per customer is built.
    ``segment`` is one name for every customer or one per customer; ``score``
    and ``details`` are None (nobody has one) or one value (or None) per
    customer.  Lists and numpy arrays both work.
    """

    customer_id: Sequence[int]
    segment: str | Sequence[str]
    score: Sequence[float | None] | None = None
    details: Sequence[Mapping[str, Any] | None] | None = None

    def __len__(self) -> int:
        return len(self.customer_id)

    def columns(self) -> tuple[list[Any], ...]:
        """``customer_id, segment, score, details`` as plain Python lists (numpy values converted)."""
        n = len(self.customer_id)
        ids = _plain(self.customer_id)
        segments = [self.segment] * n if isinstance(self.segment, str) else _plain(self.segment)
        scores = [None] * n if self.score is None else _plain(self.score)
        details = [None] * n if self.details is None else list(self.details)
        if not len(segments) == len(scores) == len(details) == n:
            raise ValueError(f"Assignments: columns of different lengths ({n} customer ids, {len(segments)} "
                             f"segments, {len(scores)} scores, {len(details)} details)")
        return ids, segments, scores, details


@attrs.frozen
class EveryoneElse:
    """Yielded last by :meth:`Segmenter.assign`: every customer the run has not
    assigned yet goes to ``segment`` (e.g. "No purchases"), with no score and
    no details, in one ``INSERT ... SELECT`` rather than a row per customer
    through Python."""

    segment: str


def _plain(values: Sequence[Any]) -> list[Any]:
    # numpy's tolist() turns int64/float64 into int/float, which every driver binds.
    tolist = getattr(values, "tolist", None)
    return tolist() if tolist is not None else list(values)


@attrs.frozen
class MembershipChange:
    """A customer entered (old None), left (new None) or moved between segments."""

    customer_id: int
    old: str | None
    new: str | None

    @property
    def change(self) -> str:
        """``entered``, ``left`` or ``moved``."""
        return "entered" if self.old is None else "left" if self.new is None else "moved"


@attrs.frozen
class SegmentRun:
    """The record of one run of a strategy."""

    id: int
    strategy: str
    options: dict[str, Any]
    as_of: datetime
    started_at: datetime
    duration_s: float | None
    members: int | None
    entered: int | None
    left: int | None
    moved: int | None
    counts: dict[str, int] | None
    actor: str | None
    #: What the strategy recorded about the run with :meth:`SegmentContext.record_run_details`
    #: (a model's fitted parameters, say); None when it recorded nothing.
    details: dict[str, Any] | None = None


@attrs.frozen
class SegmentContext(EngineContext):
    """What a segmenter sees: the unit of work of the run, ``as_of``, the configuration.

    :ivar run_details: what the run records about itself.  While a run is
        computed, :meth:`record_run_details` adds to it and the engine stores
        it with the run (:attr:`SegmentRun.details`); when a run is explained,
        it holds what that run recorded.
    """

    run_details: dict[str, Any] = attrs.field(factory=dict)

    def record_run_details(self, details: Mapping[str, Any]) -> None:
        """Record ``details`` (JSON values) with the run, so a past run can be audited.

        For what is true of the whole run rather than of one customer, such as
        a model's fitted parameters; shown by ``crm segment runs --json`` and
        ``crm segment explain``.  Later calls add to (and overwrite keys of)
        earlier ones.
        """
        self.run_details.update(details)


class Segmenter(Component):
    """Base class of segmentation strategies.

    Override :meth:`select` (preferred) or :meth:`assign`.
    """

    def select(self, ctx: SegmentContext, options: Any) -> Select[*tuple[Any, ...]] | None:
        """A SELECT yielding columns ``customer_id, segment, score, details``.

        ``score`` and ``details`` (JSON) may be NULL.  Return None to use
        :meth:`assign` instead.
        """
        return None

    def assign(self, ctx: SegmentContext, options: Any) -> Iterable[Iterable[Assignment] | Assignments | EveryoneElse]:
        """Batches of assignments, for strategies computed in Python.

        A batch is a list of :class:`Assignment` or one :class:`Assignments`
        (columns); the last item may be :class:`EveryoneElse`.
        """
        raise NotImplementedError(f"segmenter {self.name!r} implements neither select() nor assign()")

    def explain(self, ctx: SegmentContext, options: Any, membership: Mapping[str, Any]) -> dict[str, Any]:
        """Why a customer is where they are; defaults to the stored details."""
        return dict(membership.get("details") or {})
