"""Writing a run's memberships: through the driver's executemany, or staged on SQLite."""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, overload

from sqlalchemy import and_, exists, insert, literal, null, or_, select
from sqlalchemy.sql.elements import BindParameter, Null
from sqlalchemy.types import NullType

from ..store import tables
from .protocol import MembershipChange

m = tables.segment_memberships


def untyped_null(column: Any) -> bool:
    """``null()`` or ``literal(None)`` (possibly labelled): a NULL with no SQL type."""
    element = getattr(column, "element", column)
    return isinstance(element, Null) or (
        isinstance(element, BindParameter) and element.value is None and isinstance(element.type, NullType))


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a run streams its rows.

    A model-based run builds and drops hundreds of thousands of rows and
    details dicts.  Each lives across a few young collections, so the
    collector promotes them and then makes full passes over every live object
    that find nothing (k-means on 1M customers: 9 passes, 1.1 s of 8 s).
    Reference counting still frees all of it; cycles a plugin makes meanwhile
    are collected once the collector is back on.  The collector is global, so
    other threads' cycles wait for the run too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class MembershipWriter:
    """Writes a run's memberships from Python with the driver's ``executemany``.

    A million rows through SQLAlchemy's per-row parameter processing cost
    about 9 s on SQLite, most of it JSON-encoding ``None`` details and
    building parameter dicts; the driver itself took 3 s.  So the statement is
    compiled once for the dialect and the rows go to the driver as plain
    tuples (or dicts for drivers with named parameters), details already
    serialised with the engine's JSON serializer.  No details is SQL NULL, as
    on the ``select()`` path.
    """

    def __init__(self, conn: Any, run_id: int):
        self.conn = conn
        self.run_id = run_id
        self.dumps = getattr(conn.dialect, "_json_serializer", None) or json.dumps
        compiled = insert(m).compile(dialect=conn.dialect, column_keys=[
            "run_id", "customer_id", "segment", "score", "details"])
        self.sql = compiled.string
        # positiontup: the parameter order of a positional paramstyle (set exactly when positional)
        self.order = list(compiled.positiontup) if compiled.positional and compiled.positiontup is not None else None

    def write(self, ids: list[Any], segments: list[Any], scores: list[Any], details: list[Any]) -> None:
        """Insert one batch given as columns."""
        if not ids:
            return
        dumps = self.dumps
        texts = [None if d is None else dumps(d) for d in details]
        run_ids = [self.run_id] * len(ids)
        if self.order is not None:
            by_name = {"run_id": run_ids, "customer_id": ids, "segment": segments, "score": scores,
                       "details": texts}
            rows: list[Any] = list(zip(*(by_name[name] for name in self.order)))
        else:
            rows = [{"run_id": r, "customer_id": c, "segment": s, "score": v, "details": t}
                    for r, c, s, v, t in zip(run_ids, ids, segments, scores, texts)]
        self.conn.exec_driver_sql(self.sql, rows)

    def finish(self, everyone_else: str | None) -> None:
        """After the last batch: every customer without a membership in this
        run so far goes to ``everyone_else`` (when given)."""
        if everyone_else is None:
            return
        c = tables.customers
        taken = exists().where(m.c.run_id == self.run_id, m.c.customer_id == c.c.id)
        source = select(literal(self.run_id), c.c.id, literal(everyone_else)).where(~taken)
        self.conn.execute(insert(m).from_select(["run_id", "customer_id", "segment"], source))


class SQLiteMembershipWriter(MembershipWriter):
    """On SQLite, batches are staged in a temporary table and moved into
    ``segment_memberships`` at the end with one ``INSERT ... SELECT`` in
    customer order.

    Why: rows in key order append to the membership indexes instead of
    splitting pages all over them, and "everyone else" becomes one ordered
    LEFT JOIN of the customers with the staged rows rather than a key probe
    into the memberships per customer (1M customers, 127k staged rows with
    JSON details: 1.75 s against 2.2 s).  A temporary table lives outside the
    database file and its WAL.
    """

    STAGE = "crm_segment_run_stage"

    def __init__(self, conn: Any, run_id: int):
        super().__init__(conn, run_id)
        conn.exec_driver_sql(f"CREATE TEMP TABLE {self.STAGE} (customer_id INTEGER PRIMARY KEY, "
                             "segment TEXT NOT NULL, score REAL, details TEXT)")
        self.sql = f"INSERT INTO {self.STAGE} (customer_id, segment, score, details) VALUES (?, ?, ?, ?)"
        self.order = ["customer_id", "segment", "score", "details"]

    def finish(self, everyone_else: str | None) -> None:
        columns = "run_id, customer_id, segment, score, details"
        move = f"INSERT INTO {m.name} ({columns}) "
        stage, customers = self.STAGE, tables.customers.name
        if everyone_else is None:
            # The stage's key is its rowid: reading it in customer order needs no sort.
            self.conn.exec_driver_sql(
                move + f"SELECT ?, customer_id, segment, score, details FROM {stage} ORDER BY customer_id",
                (self.run_id,))
        else:
            # Staged rows of customers that do not exist: inserted on their own so the
            # foreign key still rejects them, as it would without the stage.
            self.conn.exec_driver_sql(
                move + f"SELECT ?, s.customer_id, s.segment, s.score, s.details FROM {stage} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {customers} c WHERE c.id = s.customer_id)", (self.run_id,))
            self.conn.exec_driver_sql(
                move + f"SELECT ?, c.id, COALESCE(s.segment, ?), s.score, s.details FROM {customers} c "
                f"LEFT JOIN {stage} s ON s.customer_id = c.id ORDER BY c.id", (self.run_id, everyone_else))
        self.conn.exec_driver_sql(f"DROP TABLE {stage}")


class MembershipChanges(Sequence[MembershipChange]):
    """What a run changed against the previous run of its strategy: the ``changes`` of
    ``on_segment_membership_changed``, a read-only sequence of :class:`MembershipChange`
    (entered, then left, then moved) that is read from the database on first use.

    Why lazy: a run of a million customers can change a million memberships, and a
    listener often needs none of them (a trigger configured for another strategy) or
    only one segment's entries.  Building every change as a Python object cost 3.8 s
    and 300 MB on such a run whatever the listener then did.  ``len()`` is known
    without reading (the run counted the changes in SQL); iterating or indexing reads
    them all once, inside the event's unit of work, and keeps them (so a listener that
    keeps the sequence can read it later).  :meth:`entering` answers the common
    question in SQL without building the list.
    """

    def __init__(self, conn: Any, run_id: int, previous: int | None, count: int):
        self._conn = conn
        self.run_id = run_id
        #: the strategy's previous run the changes are against (None: this is its first run).
        self.previous_run_id = previous
        self._count = count
        self._items: list[MembershipChange] | None = None

    def _pair(self) -> tuple[Any, Any, Any]:
        new, old = m.alias("new"), m.alias("old")
        on = and_(new.c.customer_id == old.c.customer_id, new.c.run_id == self.run_id,
                  old.c.run_id == (self.previous_run_id if self.previous_run_id is not None else -1))
        return new, old, on

    def _load(self) -> list[MembershipChange]:
        if self._items is None:
            new, old, on = self._pair()
            previous = self.previous_run_id if self.previous_run_id is not None else -1
            entered = select(new.c.customer_id, null(), new.c.segment).select_from(
                new.outerjoin(old, on)).where(new.c.run_id == self.run_id, old.c.customer_id.is_(None))
            left = select(old.c.customer_id, old.c.segment, null()).select_from(
                old.outerjoin(new, on)).where(old.c.run_id == previous, new.c.customer_id.is_(None))
            moved = select(new.c.customer_id, old.c.segment, new.c.segment).select_from(
                new.join(old, on)).where(new.c.segment != old.c.segment)
            self._items = [MembershipChange(cid, o, n) for query in (entered, left, moved)
                           for cid, o, n in self._conn.execute(query)]
        return self._items

    def entering(self, segment: str) -> list[int]:
        """Ids (ascending) of the customers whose new segment is ``segment`` and whose old one
        was not: the entries and the moves into it, as one query."""
        if self._items is not None:
            return sorted(c.customer_id for c in self._items if c.new == segment and c.old != segment)
        new, old, on = self._pair()
        query = (select(new.c.customer_id).select_from(new.outerjoin(old, on))
                 .where(new.c.run_id == self.run_id, new.c.segment == segment,
                        or_(old.c.customer_id.is_(None), old.c.segment != segment))
                 .order_by(new.c.customer_id))
        return list(self._conn.execute(query).scalars())

    def __len__(self) -> int:
        return self._count if self._items is None else len(self._items)

    @overload
    def __getitem__(self, index: int) -> MembershipChange: ...

    @overload
    def __getitem__(self, index: slice) -> list[MembershipChange]: ...

    def __getitem__(self, index: int | slice) -> MembershipChange | list[MembershipChange]:
        return self._load()[index]

    def __iter__(self) -> Iterator[MembershipChange]:
        return iter(self._load())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MembershipChanges):
            return self._load() == other._load()
        if isinstance(other, (list, tuple)):
            return self._load() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list

    def __repr__(self) -> str:
        shown = f"{len(self)} changes" if self._items is None else repr(self._items)
        return f"MembershipChanges(run {self.run_id} against {self.previous_run_id}: {shown})"
