"""Repositories: rows <-> entities for one connection.

They do no validation and fire no events; the use cases in
:mod:`crmcore.application.services` do.  Plugins get them from the unit of work
(``uow.customers``, ``uow.deals``, ...) to read and write inside the same
transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
import builtins
import functools
import operator
from typing import Any, Generic, Literal, Protocol, TypeVar

import attrs
from sqlalchemy import (JSON, Connection, Result, RowMapping, Select, Table, bindparam, delete, func, insert, or_,
                        select, update)
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.elements import BinaryExpression, BindParameter

from ..domain.convert import DERIVED_COLUMNS, entity_reader, from_values, unstructure
from ..domain.entities import Contact, Customer, Deal, Interaction, Task
from ..domain.errors import NotFound, ValidationError
from ..domain.validation import currency_digits
from . import direct, tables
from .bulk import inserted_id, insert_returning_ids
from .filters import conditions, equality, search_condition
from .sealed import bound_equals, bound_values, equals_value, is_sealed_column

#: One of the entity types (a repository, and a service, handle one of them).
E = TypeVar("E", Customer, Contact, Interaction, Deal, Task)

#: Which records a listing shows: the live ones (``exclude``, the default), all (``include``) or only the
#: archived ones (``only``).  A deal, contact or interaction of an archived customer counts as archived.
Archived = Literal["exclude", "include", "only"]
ARCHIVED_CHOICES: tuple[str, ...] = ("exclude", "include", "only")


def archived_conditions(table: Table, archived: str, kind: str) -> builtins.list[ColumnElement[bool]]:
    """The WHERE conditions of ``archived`` (:data:`Archived`) for one entity table.

    Customers and deals carry ``archived_at``; a deal, contact or interaction of an archived customer
    is hidden with it (a subquery on the indexed ``customers.archived_at``: few rows are archived).
    """
    if archived not in ARCHIVED_CHOICES:
        raise ValidationError.single("archived", f"must be one of {', '.join(ARCHIVED_CHOICES)}, got {archived!r}",
                                     kind)
    if archived == "include":
        return []
    own = table.c.archived_at.is_not(None) if "archived_at" in table.c else None
    gone = None
    if "customer_id" in table.c:
        archived_customers = select(tables.customers.c.id).where(tables.customers.c.archived_at.is_not(None))
        gone = table.c.customer_id.in_(archived_customers)
    either = [c for c in (own, gone) if c is not None]
    hidden = either[0] if len(either) == 1 else or_(*either)
    return [hidden] if archived == "only" else [~hidden]


@functools.cache
def _by_column(table: Table, column: str, limit: int | None = None) -> Select[Any]:
    """``SELECT * FROM table WHERE column = :value`` built once per table and column: the same statement
    object every call, so neither it nor its cache key is rebuilt (a point read's share was ~15%)."""
    target = table.c[column]
    # The entity's columns only: the keys the database derives (``email_key``, ``phone_key``) have
    # no field, and each column read costs its conversion on every point read.
    entity_columns = [c for c in table.c if c.name not in DERIVED_COLUMNS]
    # A sealed column: each possible key's blind index bound by name (see _point_params).
    stmt = select(*entity_columns).where(bound_equals(target) if is_sealed_column(target) else target == bindparam("value"))
    return stmt if limit is None else stmt.limit(limit)


#: The bound id of :func:`_by_id_update` (no column is named so).
_ROW_ID = "row_id_"


@functools.cache
def _by_id_update(table: Table) -> Any:
    """``UPDATE table SET ... WHERE id = :row_id_``, built once per table: the columns set are the
    keys of the parameters it runs with (building the UPDATE per call cost more than running it)."""
    return update(table).where(table.c.id == bindparam(_ROW_ID))


@functools.cache
def _stage_history_insert() -> Any:
    """The stage-history ``INSERT`` of a single move, built once."""
    return insert(tables.deal_stage_history)


def _point_params(table: Table, column: str, value: Any) -> dict[str, Any]:
    """The parameters of ``_by_column(table, column)`` for ``value``."""
    return bound_values(value) if _sealed(table, column) else {"value": value}


@functools.cache
def _sealed(table: Table, column: str) -> bool:
    """Whether ``table.column`` is sealed (asked at every point read; a column's type never changes)."""
    return is_sealed_column(table.c[column])


#: Not looked up yet (see :meth:`Repository.point_entity`).
_UNKNOWN: Any = object()


class PointSource(Protocol):
    """Where a repository's connection and point reads come from: a unit of work."""

    @property
    def conn(self) -> Connection: ...

    def read_first(self, statement: Any, params: Mapping[str, Any]) \
            -> tuple[tuple[str, ...], Sequence[Any]] | None: ...

    def read_entity(self, statement: Any, params: Mapping[str, Any], repository: Any) -> Any: ...


class Repository(Generic[E]):
    """Reads and writes one entity type on one connection.

    Made by a unit of work (``unit=``), its point reads (:meth:`get`, a one-column :meth:`find`) go
    through the unit's :meth:`~crmcore.UnitOfWork.read_first`, which a read-only point-read unit
    runs below SQLAlchemy, and the connection is the unit's, taken when first needed.
    """

    kind: str
    table: Table
    entity: type[E]

    def __init__(self, conn: Connection | None = None, *, unit: PointSource | None = None):
        # (Neither: a repository used only to convert rows, e.g. by the import's row checker.)
        self._conn, self._unit = conn, unit

    @property
    def conn(self) -> Connection:
        """The connection this repository reads and writes on."""
        if self._conn is None:
            if self._unit is None:
                raise RuntimeError(f"this {self.kind} repository has no connection (made to convert rows only)")
            self._conn = self._unit.conn
        return self._conn

    def _point(self, column: str, value: Any, limit: int | None = None) -> E | None:
        """The entity of the first row whose ``column`` equals ``value`` (a statement built once)."""
        if self._unit is not None:
            return self.point_read(self._unit, column, value, limit)
        return self.first(self.conn.execute(_by_column(self.table, column, limit),
                                            _point_params(self.table, column, value)))

    def point_read(self, unit: PointSource, column: str, value: Any, limit: int | None = None) -> E | None:
        """:meth:`_point` through ``unit``'s point reads (:meth:`UnitOfWork.read_entity`), whatever
        unit this repository was made for: a service keeps one repository to convert rows only and
        reads through each unit with it, instead of the unit's own repository made per read."""
        found: E | None = unit.read_entity(_by_column(self.table, column, limit),
                                           _point_params(self.table, column, value), self)
        return found

    def point_entity(self, shape: Any, row: Any, tail: bool = False) -> E:
        """The entity of a point read's driver ``row`` (a :class:`~crmcore.store.pointread._Shape`
        of the statement; with ``tail``, the row's last column is not the entity's): made by one
        function generated for the statement and the entity class, from the driver's values to the
        entity's slots (:meth:`_Shape.entity_function`), where :meth:`from_values` is this class's
        own (a repository that adds to it, deals, gets the processed values)."""
        if type(self).from_values is Repository.from_values:
            read = (shape.tailed if tail else shape.entities).get(self.entity, _UNKNOWN)
            if read is _UNKNOWN:
                read = shape.entity_function(self.entity, tail)
            if read is not None:
                try:
                    entity: E = read(row)
                    return entity
                except LookupError:
                    pass  # (a value of another type: the converter decides, as from_values does)
        values = shape.process(row)
        if tail:
            return self.from_values(shape.keys[:-1], values[:-1])
        return self.from_values(shape.keys, values)

    #: The column keys of the last point read of this class (the reader hands back the same tuple
    #: object for every read of a statement) and the entity reader compiled for them.
    _point_reader: tuple[tuple[str, ...], Any] | None = None

    def point_values(self, keys: tuple[str, ...], values: Sequence[Any]) -> E:
        """:meth:`from_values` of a point read's processed row (:meth:`UnitOfWork.read_first`):
        the reader found by one identity check on ``keys`` instead of two calls and the reader
        cache's hash of every key (issue 21)."""
        last = self._point_reader
        if last is not None and last[0] is keys:
            try:
                entity: E = last[1](values)
                return entity
            except LookupError:
                pass  # (a value of another type: the converter decides, as from_values does)
        elif type(self).from_values is Repository.from_values:  # (no subclass adds to it)
            read = entity_reader(self.entity, keys)
            if read is not None:
                type(self)._point_reader = (keys, read)
        return self.from_values(keys, values)

    # -- reading ---------------------------------------------------------
    def get(self, id: int) -> E:
        """The entity with ``id``; :class:`NotFound` if there is none."""
        found = self._point("id", id)
        if found is None:
            raise NotFound(self.kind, id)
        return found

    def get_for_update(self, id: int) -> E:
        """:meth:`get`, locking the row until the transaction ends (``SELECT ... FOR UPDATE`` on
        PostgreSQL and MariaDB; SQLite's write transaction already excludes other writers), so a
        check-then-write on it (a version check) cannot interleave with another writer."""
        stmt = select(self.table).where(self.table.c.id == id)
        if self.conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update()
        row = self.conn.execute(stmt).first()
        if row is None:
            raise NotFound(self.kind, id)
        return self.from_row(row._mapping)

    def find(self, **criteria: Any) -> E | None:
        """The first entity matching ``criteria`` (column equality), or None."""
        key = self.point_key(criteria)
        if key is not None:  # one column equal to one value (by email, external id): built once
            return self._point(key[0], key[1], limit=1)
        where = self._conditions(criteria)
        stmt = select(self.table).where(*where).limit(1)
        row = self.conn.execute(stmt).first()
        return None if row is None else self.from_row(row._mapping)

    def point_key(self, criteria: Mapping[str, Any]) -> tuple[str, Any] | None:
        """``(column, value)`` when :meth:`find`'s ``criteria`` are one column equal to one value
        (read by a statement built once: :meth:`point_read`), the value coerced and checked as the
        filters do; None otherwise.  Needs no connection."""
        single = equality(self.table, criteria, self.kind)
        if single is not None:
            return single
        if len(criteria) != 1:
            return None
        where = self._conditions(criteria)  # the filters' checks and coercion, whichever path runs
        if len(where) == 1:
            [name] = criteria
            condition = where[0]
            if name in self.table.c and isinstance(condition, BinaryExpression) \
                    and condition.operator is operator.eq and condition.left is self.table.c[name] \
                    and isinstance(condition.right, BindParameter):
                return name, condition.right.value  # (by external id)
            sealed = equals_value(condition, self.table.c[name]) if name in self.table.c else None
            if sealed is not None:  # by email or phone: the same, by blind index where sealed
                return name, sealed[0]
        return None

    def list(self, filters: Mapping[str, Any] | None = None, order_by: str = "id",
             limit: int | None = None, offset: int = 0, *, archived: Archived = "exclude") -> builtins.list[E]:
        """Entities matching ``filters``; ``attributes.NAME`` filters a custom field; archived records
        (and those of archived customers) only as ``archived`` says."""
        return list(self.iter(filters, order_by, limit, offset, archived=archived))

    def iter(self, filters: Mapping[str, Any] | None = None, order_by: str = "id",
             limit: int | None = None, offset: int = 0, *, archived: Archived = "exclude") -> Iterator[E]:
        column = order_by.lstrip("-")
        if column not in self.table.c:
            raise ValidationError.single("order_by", f"unknown column {column!r}", self.kind)
        order = self.table.c[column].desc() if order_by.startswith("-") else self.table.c[column]
        stmt = select(self.table).where(*self._conditions(filters or {}),
                                        *archived_conditions(self.table, archived, self.kind))
        stmt = stmt.order_by(order, self.table.c.id).offset(offset).limit(limit)
        result = self.conn.execute(stmt)
        keys = tuple(result.keys())
        for row in result:
            yield self.from_values(keys, row)

    def page(self, filters: Mapping[str, Any] | None, sort: str, limit: int, after: tuple[Any, int] | None = None,
             search: ColumnElement[bool] | None = None, *, archived: Archived = "exclude") -> builtins.list[E]:
        """One keyset page: up to ``limit`` entities in ``sort`` order (``-name``: descending), ties by
        id, starting after the row whose sort value and id are ``after``.

        ``sort`` must name a column without NULLs (:meth:`sortable`): NULLs sort first on one database
        and last on another, which would make a cursor skip or repeat rows.  Unlike an offset, a
        cursor costs the same on page 1,000 as on page 1 (an index range scan).
        """
        column = sort.lstrip("-")
        if column not in self.sortable():
            raise ValidationError.single("sort", f"cannot sort by {column!r} (sortable: "
                                                 f"{', '.join(self.sortable())})", self.kind)
        descending = sort.startswith("-")
        col = self.table.c[column]
        where = [*self._conditions(filters or {}), *archived_conditions(self.table, archived, self.kind)]
        if search is not None:
            where.append(search)
        if after is not None:
            value, last_id = after
            op = "lt" if descending else "gt"
            if column == "id":
                [beyond] = self._conditions({f"id__{op}": value})
            else:
                [beyond] = self._conditions({f"{column}__{op}": value})
                [same] = self._conditions({column: value})
                beyond = or_(beyond, same & (self.table.c.id > last_id))
            where.append(beyond)
        order = [col.desc() if descending else col]
        if column != "id":
            order.append(self.table.c.id)
        stmt = select(self.table).where(*where).order_by(*order).limit(limit)
        return self.all(self.conn.execute(stmt))

    def sortable(self) -> tuple[str, ...]:
        """The columns a keyset page may sort by: those that never hold NULL (JSON ones aside)."""
        return tuple(c.name for c in self.table.c if not c.nullable and not isinstance(c.type, JSON))

    def count(self, filters: Mapping[str, Any] | None = None, *, archived: Archived = "exclude") -> int:
        stmt = select(func.count()).select_from(self.table).where(
            *self._conditions(filters or {}), *archived_conditions(self.table, archived, self.kind))
        return self.conn.execute(stmt).scalar_one()

    # -- writing ---------------------------------------------------------
    def insert(self, entity: E, now: datetime) -> E:
        entity = attrs.evolve(entity, created_at=now, updated_at=now)
        values = self.to_row(entity)
        values.pop("id")
        new_id = inserted_id(self.conn.execute(insert(self.table).values(values)))
        return attrs.evolve(entity, id=new_id)

    def insert_many(self, entities: builtins.list[E], now: datetime) -> builtins.list[E]:
        """Bulk insert (one executemany); returns the entities with their new ids."""
        stamped = [attrs.evolve(e, created_at=now, updated_at=now) for e in entities]
        rows = []
        for entity in stamped:
            row = self.to_row(entity)
            row.pop("id")
            rows.append(row)
        ids = insert_returning_ids(self.conn, self.table, rows)
        return [attrs.evolve(e, id=i) for e, i in zip(stamped, ids)]

    def update(self, entity: E, now: datetime) -> E:
        entity = attrs.evolve(entity, updated_at=now)
        values = self.to_row(entity)
        values.pop("created_at")
        values[_ROW_ID] = values.pop("id")
        # The statement built once per table; the SET list comes from the parameters' keys.
        result = direct.run(self.conn, _by_id_update(self.table), values)
        if result.rowcount == 0:
            raise NotFound(self.kind, entity.id)
        return entity

    def delete(self, id: int) -> None:
        if self.conn.execute(delete(self.table).where(self.table.c.id == id)).rowcount == 0:
            raise NotFound(self.kind, id)

    # -- conversion ------------------------------------------------------
    def from_row(self, row: Mapping[str, Any] | RowMapping) -> E:
        """The entity of a table row (a result row's mapping or a dict of column values)."""
        return self.from_values(tuple(row.keys()), tuple(row.values()))

    def from_values(self, keys: tuple[str, ...], values: Sequence[Any]) -> E:
        """The entity of the row whose columns ``keys`` hold ``values`` (a result row)."""
        return from_values(keys, values, self.entity)

    def all(self, result: Result[Any]) -> builtins.list[E]:
        """The entities of every row of ``result`` (a ``select`` of this table)."""
        keys = tuple(result.keys())
        return [self.from_values(keys, row) for row in result.all()]  # one fetch, not one per row

    def first(self, result: Result[Any]) -> E | None:
        """The entity of the first row of ``result`` (None when it has none)."""
        keys = tuple(result.keys())
        row = result.first()
        return None if row is None else self.from_values(keys, row)

    def to_row(self, entity: E) -> dict[str, Any]:
        """The column values of ``entity`` (tags as a JSON list)."""
        row = unstructure(entity)
        if "tags" in row:
            row["tags"] = list(row["tags"])
        return row

    def _conditions(self, criteria: Mapping[str, Any]) -> builtins.list[ColumnElement[bool]]:
        return conditions(self.table, criteria, self.kind)

    def search(self, text: str, columns: tuple[str, ...], limit: int | None = None,
               also: Mapping[str, Sequence[str]] | None = None, *,
               archived: Archived = "exclude") -> builtins.list[E]:
        """Entities whose ``columns`` contain ``text`` (case-insensitive), or a column of
        ``also`` one of its substrings."""
        stmt = select(self.table).where(search_condition(self.table, text, columns, also),
                                        *archived_conditions(self.table, archived, self.kind))
        return [self.from_row(r._mapping) for r in self.conn.execute(stmt.order_by(self.table.c.id).limit(limit))]


class CustomerRepository(Repository[Customer]):
    kind, table, entity = "customer", tables.customers, Customer


class ContactRepository(Repository[Contact]):
    kind, table, entity = "contact", tables.contacts, Contact


class InteractionRepository(Repository[Interaction]):
    kind, table, entity = "interaction", tables.interactions, Interaction


class TaskRepository(Repository[Task]):
    kind, table, entity = "task", tables.tasks, Task


class DealRepository(Repository[Deal]):
    kind, table, entity = "deal", tables.deals, Deal

    def from_values(self, keys: tuple[str, ...], values: Sequence[Any]) -> Deal:
        """A deal of a row, its amount at the currency's minor unit."""
        deal = super().from_values(keys, values)
        # Storage keeps 4 decimals; show the currency's own (12000 -> 12000.00 CNY).
        exponent = Decimal(1).scaleb(-currency_digits(deal.currency))
        return attrs.evolve(deal, amount=deal.amount.quantize(exponent))

    def record_stage_change(self, deal_id: int, old: str | None, new: str, at: datetime,
                            actor: str | None) -> int:
        """Append to the stage history; returns the history row id."""
        return inserted_id(direct.run(self.conn, _stage_history_insert(), {
            "deal_id": deal_id, "from_stage": old, "to_stage": new, "changed_at": at, "actor": actor}))

    def record_initial_stages(self, deals: list[Deal], at: datetime, actor: str | None) -> None:
        """History rows for newly inserted deals, in one executemany."""
        if deals:
            self.conn.execute(insert(tables.deal_stage_history), [
                {"deal_id": d.id, "from_stage": None, "to_stage": d.stage, "changed_at": at, "actor": actor}
                for d in deals])

    def stage_history(self, deal_id: int) -> list[dict[str, Any]]:
        t = tables.deal_stage_history
        rows = self.conn.execute(select(t).where(t.c.deal_id == deal_id).order_by(t.c.id))
        return [dict(r._mapping) for r in rows]
