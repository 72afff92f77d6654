"""Naming a segment: ``STRATEGY:SEGMENT``, or ``SEGMENT`` alone when only one strategy has it.

One syntax for every command and option that takes a segment (``customer
list --segment``, ``export --segment``, ``notify campaign --segment``,
``report run --segment`` and the reports' ``segment`` option).  A reference
means the segment in the *latest* run of its strategy (with ``as_of``: the
latest run standing for a moment up to it).

Segment names may hold spaces, non-ASCII letters and colons (``East China
VIP``, ``华北``, ``Tier: Gold``): the text is split at its first colon only
when what comes before it is a strategy that has run, so ``Tier: Gold`` is a
segment name unless a strategy is called ``Tier``.  Anything that names no
segment is a :class:`~crmcore.ValidationError` on one line listing what is
known.  Resolving reads the runs' stored counts (a handful of rows), never
the memberships.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs
from sqlalchemy import Connection, distinct, func, select

from ..domain.errors import ValidationError
from ..store import tables

runs = tables.segment_runs
m = tables.segment_memberships
#: How many known segments an error lists before "and N more".
LISTED = 12


@attrs.frozen
class SegmentRef:
    """A segment reference as typed, checked for shape only (see :func:`parse_segment_ref`).

    :ivar text: the reference, stripped.
    """

    text: str

    def __str__(self) -> str:
        return self.text


@attrs.frozen
class ResolvedSegment:
    """What a reference names: a segment of one strategy's run.

    :ivar strategy: the segmentation strategy.
    :ivar segment: the segment's name.
    :ivar run_id: the run the reference stands for (the strategy's latest, up to ``as_of``).
    """

    strategy: str
    segment: str
    run_id: int

    def __str__(self) -> str:
        return f"{self.strategy}:{self.segment}"


def parse_segment_ref(text: str) -> SegmentRef:
    """``text`` as a reference; ``ValueError`` when it cannot name a segment
    (empty, or nothing on one side of ``STRATEGY:``)."""
    text = text.strip()
    if not text:
        raise ValueError("is empty: give SEGMENT or STRATEGY:SEGMENT")
    head, colon, tail = text.partition(":")
    if colon and not (head.strip() and tail.strip()):
        raise ValueError(f"{text!r} is not STRATEGY:SEGMENT (a side of ':' is empty)")
    return SegmentRef(text)


def resolve_segment(conn: Connection, ref: SegmentRef | str, as_of: datetime | None = None,
                    registered: Iterable[str] = ()) -> ResolvedSegment:
    """The strategy, segment and run that ``ref`` names.

    ``registered``: the strategy names the CRM knows, so a strategy that never
    ran gets "has no run yet" rather than "unknown".  Raises
    :class:`~crmcore.ValidationError` (field ``segment``) for an unknown
    strategy or segment and for a name that several strategies' latest runs have.
    """
    if isinstance(ref, str):
        try:
            ref = parse_segment_ref(ref)
        except ValueError as exc:
            raise ValidationError.single("segment", str(exc)) from None
    latest = _latest_segments(conn, as_of)
    head, colon, tail = ref.text.partition(":")
    owners = _owners(latest, ref.text)
    if colon and head.strip() in latest:
        strategy, name = head.strip(), tail.strip()
        if name in latest[strategy][1]:
            return ResolvedSegment(strategy, name, latest[strategy][0])
        if not owners:  # nor is the whole text a segment's name
            raise _error(f"{ref.text!r}: the latest run of {strategy!r}{_until(as_of)} has no segment {name!r}",
                         {strategy: latest[strategy]})
    if len(owners) == 1:
        return ResolvedSegment(owners[0], ref.text, latest[owners[0]][0])
    if len(owners) > 1:
        raise ValidationError.single("segment", f"{ref.text!r} is a segment of several strategies "
                                     f"({', '.join(owners)}): use STRATEGY:{ref.text}")
    if colon and _looks_like_strategy(head):
        raise _unknown_strategy(ref, head.strip(), latest, set(registered), as_of)
    raise _error(f"no segment {ref.text!r} in the latest run of any strategy" + _until(as_of), latest)


def _latest_segments(conn: Connection, as_of: datetime | None) -> dict[str, tuple[int, list[str]]]:
    """``{strategy: (latest run id, its segments)}`` for every strategy that has run (up to ``as_of``)."""
    query = select(runs.c.strategy, func.max(runs.c.id)).group_by(runs.c.strategy)
    if as_of is not None:
        query = query.where(runs.c.as_of <= as_of)
    latest: dict[str, int] = {strategy: run_id for strategy, run_id in conn.execute(query)}
    counts = {run_id: names for run_id, names in conn.execute(
        select(runs.c.id, runs.c.counts).where(runs.c.id.in_(list(latest.values()))))}
    found = {}
    for strategy, run_id in latest.items():
        names = counts.get(run_id)
        if names is None:  # a run recorded without counts: read its memberships (once)
            names = conn.execute(select(distinct(m.c.segment)).where(m.c.run_id == run_id)).scalars().all()
        found[strategy] = (run_id, sorted(names))
    return found


def _owners(latest: dict[str, tuple[int, list[str]]], name: str) -> list[str]:
    return sorted(strategy for strategy, (_run, names) in latest.items() if name in names)


def _looks_like_strategy(head: str) -> bool:
    # Strategy names are identifiers such as "value-tier"; "Tier: Gold" has a space before the colon.
    return bool(head) and not any(ch.isspace() for ch in head)


def _unknown_strategy(ref: SegmentRef, strategy: str, latest: dict[str, tuple[int, list[str]]],
                      registered: set[str], as_of: datetime | None) -> ValidationError:
    ran = ", ".join(sorted(latest)) or "none"
    if strategy in registered:
        what = f"strategy {strategy!r} has no run{_until(as_of)} yet (crm segment run {strategy})"
    else:
        what = f"unknown strategy {strategy!r}"
    return ValidationError.single("segment", f"{ref.text!r}: {what}; strategies with runs: {ran}")


def _error(what: str, latest: dict[str, tuple[int, list[str]]]) -> ValidationError:
    known = [f"{strategy}:{name}" for strategy, (_run, names) in sorted(latest.items()) for name in names]
    listing = ", ".join(known[:LISTED]) + (f" and {len(known) - LISTED} more" if len(known) > LISTED else "")
    return ValidationError.single("segment", f"{what}; known: {listing or 'none (no segmentation run yet)'}")


def _until(as_of: datetime | None) -> str:
    return f" up to {as_of:%Y-%m-%d}" if as_of is not None else ""
