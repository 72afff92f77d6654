"""Built-once statements of a unit of work run on its SQLite driver connection (issue 21, single writes).

A single write (``crm.deals.move``) runs about fifteen small statements that are built once
(module constants, or cached per table).  With SQLite the driver is in-process and each one takes
a few microseconds of its own; through SQLAlchemy's execution machinery (cache look-up,
execution context, parameter and result processing, the result object) each cost about ten
times that, most of a move's CPU after its statements stopped being rebuilt per call.
:func:`run` keeps what is the same for every execution of a statement (its SQL, its parameter
order, its bind and result processors: the compiled form SQLAlchemy would use) and per call only
binds the values and runs the driver's cursor, on the connection of the unit's own transaction.

It goes through SQLAlchemy as before (``conn.execute``), and so changes nothing, whenever it
could differ from it:

* on PostgreSQL and MariaDB (a network round trip dominates a statement there);
* on a connection not in a transaction yet (SQLAlchemy's execute begins one);
* when something listens for the connection's statements (``before_cursor_execute`` or
  ``after_cursor_execute``: a test counting them, a tracer);
* for a ``SELECT`` inside a scoped unit of work, which the record-visibility rewrite may change;
* for a statement that needs per-execution compilation (an expanding ``IN``) or has escaped
  bind names.

A driver error is raised as SQLAlchemy's exception for it (``IntegrityError``, ...), as through
``conn.execute``.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, MultipleResultsFound, NoResultFound

from .pointread import bind_processors, driver_form, result_processors, row_function


class _Shape:
    """One statement compiled for one dialect and parameter keys: what each execution shares."""

    __slots__ = ("sql", "order", "defaults", "binds", "returns", "process", "row")

    def __init__(self, compiled: Any):
        self.sql: str = compiled.string
        self.order: tuple[str, ...] = tuple(compiled.positiontup)
        self.defaults: dict[str, Any] = compiled.construct_params(_check=False)
        self.binds: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(bind_processors(compiled).items())
        entries = compiled._result_columns
        self.returns = bool(entries)
        #: The driver's row -> its processed values (point reads' generated function), at the first rows.
        self.process: Callable[[Any], Any] | None = None
        keys = tuple(entry.keyname for entry in entries)
        self.row: Any = namedtuple("Row", keys, rename=True) if keys else None  # noqa: PYI024

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The driver's positional parameters for ``params``."""
        values = dict(self.defaults)
        values.update(params)
        for name, process in self.binds:  # (None too, as SQLAlchemy does: a JSON null is a value)
            values[name] = process(values[name])
        return tuple(map(values.__getitem__, self.order))


class DirectResult:
    """What :func:`run` returns: the rows (processed, with named columns), ``rowcount`` and, for an
    ``INSERT``, ``inserted_primary_key`` (SQLite's ``lastrowid``); the parts of SQLAlchemy's
    result the callers use."""

    __slots__ = ("rows", "rowcount", "lastrowid")

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None):
        self.rows, self.rowcount, self.lastrowid = rows, rowcount, lastrowid

    @property
    def inserted_primary_key(self) -> tuple[int | None]:
        """The new row's id (a single-row ``INSERT`` into a table with an integer key)."""
        return (self.lastrowid,)

    def first(self) -> Any:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        """The only row (SQLAlchemy's error if there is not exactly one)."""
        if not self.rows:
            raise NoResultFound("No row was found when one was required")
        if len(self.rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was required")
        return self.rows[0]

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        return self.rows[0][0] if self.rows else None

    def all(self) -> list[Any]:
        """Every row."""
        return self.rows

    def __iter__(self) -> Any:
        return iter(self.rows)


#: Shapes per dialect: {(statement, parameter keys): shape, or None when it must go through SQLAlchemy}.
_SHAPES: "weakref.WeakKeyDictionary[Dialect, dict[tuple[Any, tuple[str, ...]], _Shape | None]]" = \
    weakref.WeakKeyDictionary()
#: Shapes kept per dialect (the statements are built once, so few exist; bounded all the same).
MAX_SHAPES = 512


def run(conn: Connection, statement: Any, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
    """``conn.execute(statement, params)``, below SQLAlchemy when that changes nothing (see the
    module): a :class:`DirectResult`, else SQLAlchemy's result.  ``params`` is one mapping, or a
    list of them (an executemany: no rows returned)."""
    # (Not yet in a transaction: SQLAlchemy's execute begins one, the driver alone would autocommit.)
    if conn.dialect.name != "sqlite" or not params or not conn.in_transaction() or _listened(conn):
        return conn.execute(statement, params)
    listed: Sequence[Mapping[str, Any]] = [params] if isinstance(params, Mapping) else params
    many, first = len(listed) > 1 or not isinstance(params, Mapping), listed[0]
    if isinstance(statement, Select):
        unit = conn.get_execution_options().get("crm_unit")
        if unit is not None and unit.is_scoped:  # the visibility rewrite applies
            return conn.execute(statement, params)
    shape = _shape(conn.dialect, statement, tuple(sorted(first)))
    if shape is None or (many and shape.returns):
        return conn.execute(statement, params)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        try:
            if many:
                cursor.executemany(shape.sql, [shape.values(p) for p in listed])
                return DirectResult([], cursor.rowcount, None)
            cursor.execute(shape.sql, shape.values(first))
            rows: list[Any] = list(cursor.fetchall()) if shape.returns else []
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(shape.sql, params, exc, conn.dialect.loaded_dbapi.Error,
                                      dialect=conn.dialect) from exc
        if rows:
            rows = _processed(conn.dialect, statement, shape, cursor.description, rows)
        return DirectResult(rows, cursor.rowcount, cursor.lastrowid)
    finally:
        cursor.close()


def begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE`` on a SQLite connection (a writing unit's transaction takes the write lock
    at once), straight to the driver unless something listens for statements; a busy database
    raises SQLAlchemy's ``OperationalError`` either way."""
    if _listened(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    try:
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, conn.dialect.loaded_dbapi.Error,
                                  dialect=conn.dialect) from exc


def _listened(conn: Connection) -> bool:
    """Whether anything listens for the statements the connection's cursor runs."""
    dispatch = conn.dispatch
    return bool(dispatch.before_cursor_execute) or bool(dispatch.after_cursor_execute)


def _shape(dialect: Dialect, statement: Any, keys: tuple[str, ...]) -> _Shape | None:
    shapes = _SHAPES.setdefault(dialect, {})
    try:
        return shapes[statement, keys]
    except KeyError:
        pass
    # The keys name the columns an INSERT or UPDATE built without values() sets, as SQLAlchemy
    # compiles it for these parameters.
    compiled = driver_form(statement, dialect, list(keys))
    shape = _Shape(compiled) if compiled is not None and compiled.positional else None
    if len(shapes) >= MAX_SHAPES:
        del shapes[next(iter(shapes))]
    shapes[statement, keys] = shape
    return shape


def _processed(dialect: Dialect, statement: Any, shape: _Shape, description: Any, rows: list[Any]) -> list[Any]:
    """``rows`` through each column's result processor, as named rows."""
    if shape.process is None:
        shape.process = row_function(len(description), result_processors(statement, dialect, description))
    make, process = shape.row._make, shape.process
    return [make(process(row)) for row in rows]
