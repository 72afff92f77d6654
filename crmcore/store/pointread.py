"""Point reads below SQLAlchemy's execution machinery (issue 21, point 1).

A point read (``crm.customers.get(id)``, ``find(email=...)``, the access policy's role look-up)
runs one statement that is built once.  Through a SQLAlchemy ``Connection`` each such read still
paid a pool checkout and return, the execution context, the result's set-up and its row
processing: several times what the driver itself takes.  :class:`PointReads` keeps what is the
same for every call of a statement and does only the rest per call:

* each statement is compiled once per engine into the driver's SQL, with its parameter order,
  its bind processors (a sealed field's blind index) and, from the first execution's cursor
  description, its result processors (SQLite's times, JSON, money);
* it runs on a raw DBAPI connection the reader owns (detached from the pool, so its autocommit
  mode never leaks into a unit of work's transaction), taken from a lock-free stack;
* on PostgreSQL the statement is prepared on the server (psycopg ``prepare=True``): one round
  trip per read, no ``BEGIN``/``COMMIT``.

Nothing here decides what may be read: the unit of work (:class:`~crmcore.application.uow.ReadUnit`)
asks ``authorize`` and applies record visibility to the statement before handing it here.
Whatever this reader cannot run as-is (a statement with post-compile parameters, a database
error) raises :class:`Fallback`, and the caller reads through the ordinary unit of work instead,
which reports errors as it always did.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Engine
from sqlalchemy.pool import QueuePool
from sqlalchemy.types import TypeDecorator

from ..domain.convert import entity_reader_body

#: Compiled statements kept per engine (statements are built once, so few shapes exist; a
#: visibility rewrite that cannot be cached makes a new statement per read: bounded, oldest out).
MAX_SHAPES = 512


class Fallback(Exception):
    """This read cannot run below SQLAlchemy: read it through an ordinary unit of work."""


class _Shape:
    """One statement compiled for one engine: what every execution of it shares."""

    __slots__ = ("sql", "order", "defaults", "binds", "keys", "bind", "results", "process", "last", "entities",
                 "tailed")

    def __init__(self, sql: str, order: tuple[str, ...] | None, defaults: dict[str, Any],
                 binds: dict[str, Callable[[Any], Any]], keys: tuple[str, ...], numbered: bool = False):
        self.sql, self.order, self.defaults, self.binds, self.keys = sql, order, defaults, binds, keys
        #: ``bind(params, login)``: what the driver is handed for ``params`` (see :func:`binder`);
        #: with ``numbered``, ``sql`` names each parameter once (``?1``) and so does the tuple.
        self.bind: Callable[[Mapping[str, Any], Any], Any] = binder(order, defaults, binds, numbered)
        #: (column index, result processor) of the columns that need one, set at the first execution.
        self.results: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None
        #: The driver's row -> the processed values (a function generated from :attr:`results`).
        self.process: Callable[[Any], Sequence[Any]] | None = None
        #: The last column's result processor (None: none), for a reader that looks at that
        #: column alone (the point-read unit's confirming column).
        self.last: Callable[[Any], Any] | None = None
        #: The driver's row -> an entity (:meth:`entity_function`), by entity class, reading every
        #: column (:attr:`entities`) or all but the last (:attr:`tailed`); None: the class cannot be
        #: read so (its converter reads it from :attr:`process`'s values).
        self.entities: dict[type, Callable[[Any], Any] | None] = {}
        self.tailed: dict[type, Callable[[Any], Any] | None] = {}

    def set_results(self, results: tuple[tuple[int, Callable[[Any], Any]], ...]) -> None:
        """Set :attr:`results` and what is made of them (at the first execution that returns a row)."""
        self.results = results
        self.last = next((process for index, process in results if index == len(self.keys) - 1), None)
        self.process = row_function(len(self.keys), results)

    def entity_function(self, cls: type, tail: bool) -> Callable[[Any], Any] | None:
        """The function taking a driver's row of this statement straight to a ``cls`` (with
        ``tail``, from every column but the last), or None; made at the first read that asks."""
        made = self.tailed if tail else self.entities
        if cls not in made:
            assert self.results is not None
            made[cls] = entity_function(self.keys, self.results, cls, tail)
        return made[cls]


def driver_form(statement: Any, dialect: Any, column_keys: list[str] | None = None) -> Any:
    """``statement`` compiled for ``dialect`` (with ``column_keys``: an INSERT or UPDATE built
    without values(), for those parameters), or None when it needs SQLAlchemy's per-execution
    processing (expanding or literal parameters, escaped bind names).  Shared with
    :mod:`crmcore.store.direct`."""
    compiled: Any = statement.compile(dialect=dialect, column_keys=column_keys)
    if compiled.post_compile_params or compiled.literal_execute_params or compiled.escaped_bind_names:
        return None
    return compiled


def bind_processors(compiled: Any) -> dict[str, Callable[[Any], Any]]:
    """The bind processors of a compiled statement, by parameter name (those that do something)."""
    return {name: fn for name, fn in compiled._bind_processors.items() if fn is not None}


def _compile(statement: Any, engine: Engine) -> _Shape:
    """The :class:`_Shape` of ``statement`` on ``engine``'s dialect (Fallback when it needs
    SQLAlchemy's per-execution processing)."""
    compiled = driver_form(statement, engine.dialect)
    if compiled is None:
        raise Fallback("statement needs per-execution compilation")
    defaults = compiled.construct_params(_check=False)
    order = tuple(compiled.positiontup) if compiled.positional else None
    keys = tuple(entry.keyname for entry in compiled._result_columns)
    sql = compiled.string
    numbered = None
    if order is not None and len(set(order)) < len(order) and engine.dialect.paramstyle == "qmark":
        numbered = numbered_sql(sql, order)
    return _Shape(numbered or sql, order, defaults, bind_processors(compiled), keys, numbered is not None)


#: The parameter a point-read unit binds to the acting user's login (its confirming column): given
#: to :meth:`PointReads.first_row` on its own, so the caller's parameters need no copy per read.
LOGIN = "crm_login"


def binder(order: tuple[str, ...] | None, defaults: Mapping[str, Any], binds: Mapping[str, Callable[[Any], Any]],
           numbered: bool = False) -> Callable[[Mapping[str, Any], Any], Any]:
    """A function generated for one statement: ``(params, login)`` -> the driver's parameters.

    Each parameter is the caller's value if given, else the statement's own (a ``LIMIT``), and
    :data:`LOGIN` is ``login`` when that is not None; its bind processor, if it has one, runs on
    it (on None too, as SQLAlchemy's do).  A tuple in ``order`` for a positional paramstyle (with
    ``numbered``: each name once, in order of first appearance, as :func:`numbered_sql` numbers
    them), else a dict.  Why: merging the caller's values into a copy of the defaults and
    picking them out by name cost a point read five C calls and a dict per read (and a find by
    email binds its value four times: once with ``numbered``).
    """
    names = list(dict.fromkeys(order if order is not None else defaults))
    namespace: dict[str, Any] = {}
    lines = ["def bind_(p, login):"]
    for number, name in enumerate(names):
        namespace[f"d{number}"] = defaults.get(name)
        value = f"p.get({name!r}, d{number})"
        if name == LOGIN:
            value = f"(login if login is not None else {value})"
        if name in binds:
            namespace[f"b{number}"] = binds[name]
            value = f"b{number}({value})"
        lines.append(f"    v{number} = {value}")
    by_name = {name: f"v{number}" for number, name in enumerate(names)}
    if order is None:
        lines.append("    return {" + "".join(f"{name!r}: {by_name[name]}, " for name in names) + "}")
    else:
        picked = names if numbered else order
        lines.append("    return (" + "".join(f"{by_name[name]}, " for name in picked) + ")")
    exec("\n".join(lines), namespace)  # noqa: S102 - the source is made of names and repr()s only
    bind: Callable[[Mapping[str, Any], Any], Any] = namespace["bind_"]
    return bind


def numbered_sql(sql: str, order: tuple[str, ...]) -> str | None:
    """``sql`` (qmark paramstyle, parameters named ``order``) with each ``?`` numbered by its name
    (``?1`` for the first name, used again wherever that name is), so a value the statement uses
    several times is bound once (SQLite's ``?NNN``); None when the marks found outside quoted
    text are not ``len(order)`` (then the statement runs as compiled)."""
    numbers: dict[str, int] = {}
    for name in order:
        numbers.setdefault(name, len(numbers) + 1)
    parts: list[str] = []
    quote: str | None = None
    found = 0
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None  # (a doubled quote closes and opens again: still inside)
        elif char in "'\"":
            quote = char
        elif char == "?":
            if found == len(order):
                return None
            char = f"?{numbers[order[found]]}"
            found += 1
        parts.append(char)
    return "".join(parts) if found == len(order) and quote is None else None


def result_processors(statement: Any, dialect: Any, description: Sequence[Any]) -> \
        tuple[tuple[int, Callable[[Any], Any]], ...]:
    """Each column's result processor for the driver's column types in ``description`` (the
    columns that need one, by index).  Shared with :mod:`crmcore.store.direct`."""
    compiled: Any = statement.compile(dialect=dialect)
    return tuple((index, _json_processor(entry.type, dialect, column[1], process))
                 for index, (entry, column) in enumerate(zip(compiled._result_columns, description))
                 if (process := entry.type._cached_result_processor(dialect, column[1])) is not None)


def json_inline(json_type: Any, dialect: Any, coltype: Any) -> tuple[str, dict[str, Any]] | None:
    """How a row function parses the text of a column of ``json_type`` (SQLAlchemy's JSON, or
    a type decorating it) inline: ``(name, names)``, where ``name(text)`` is the engine's JSON
    loader's fast path (``crmcore.store.engine``'s: orjson), raising ``names``'s
    ``json_fast_error_`` for what it refuses (the processor then decides, as it always did).
    None when SQLAlchemy's processor does more than the loader on text (a string processor
    first), or the loader offers no fast path."""
    impl = json_type.dialect_impl(dialect)
    if isinstance(impl, TypeDecorator):
        impl = impl.impl_instance.dialect_impl(dialect)
    if not isinstance(impl, JSON) or not type(impl).__module__.startswith("sqlalchemy."):
        return None
    if impl._str_impl.result_processor(dialect, coltype) is not None:
        return None
    fast = getattr(dialect._json_deserializer, "crm_fast", None)
    if fast is None:
        return None
    return "json_fast_", {"json_fast_": fast[0], "json_fast_error_": fast[1]}


def _json_processor(type_: Any, dialect: Any, coltype: Any, process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``process``, for a plain JSON column with the text fast path of :func:`json_inline`, as a
    function offering it to :func:`row_function` (two or three calls a value fewer on SQLite:
    SQLAlchemy's JSON processors around the engine's loader; ``tags`` on every customer)."""
    if type(type_) is not JSON and not (isinstance(type_, JSON) and type(type_).__module__.startswith("sqlalchemy.")):
        return process
    found = json_inline(type_, dialect, coltype)
    if found is None:
        return process

    def json_process(value: Any) -> Any:
        return process(value)
    fast, names = found
    json_process.crm_inline = ([  # type: ignore[attr-defined]
        "if {v}.__class__ is str:",
        f"    try: {{v}} = {fast}({{v}})",
        "    except json_fast_error_: {v} = {p}({v})",
        "else: {v} = {p}({v})"], names)
    return json_process


def row_function(width: int, results: tuple[tuple[int, Callable[[Any], Any]], ...]) -> Callable[[Any], Sequence[Any]]:
    """A function taking a driver's row of ``width`` columns to its processed values: generated
    per statement (as the entity reader is), so each column that needs a processor costs its call
    and nothing else (instead of a loop over ``results`` on a copy of the row)."""
    if not results:
        return tuple  # (the driver's row as it is, a tuple already on SQLite)
    scope: dict[str, Any] = {f"p{index}": process for index, process in results}
    columns = "".join(f"c{i}, " for i in range(width))
    lines = ["def process(row):", f"    {columns}= row"]
    for index, process in results:
        lines.append(f"    if c{index} is not None:")
        lines += _inline(index, process, scope)
    lines.append(f"    return ({columns})")
    exec(compile("\n".join(lines), "<crmcore point row>", "exec"), scope)  # noqa: S102
    return scope["process"]  # type: ignore[no-any-return]


def _inline(index: int, process: Callable[[Any], Any], scope: dict[str, Any]) -> list[str]:
    """The lines (under ``if c<index> is not None:``) that process column ``index``: the
    processor's own common case inline where it offers one (its ``crm_inline``: a template of
    lines in ``{v}``, the value, and ``{p}``, the processor, with the names it needs), saving a
    call per value; else a call of the processor."""
    inline = getattr(process, "crm_inline", None)
    if inline is None:
        return [f"        c{index} = p{index}(c{index})"]
    template, names = inline
    for name, value in names.items():
        if scope.setdefault(name, value) != value:
            raise ValueError(f"two inline processors name {name!r} differently")
    return ["        " + line.format(v=f"c{index}", p=f"p{index}") for line in template]


def entity_function(keys: tuple[str, ...], results: tuple[tuple[int, Callable[[Any], Any]], ...], cls: type,
                    tail: bool = False) -> Callable[[Any], Any] | None:
    """One generated function from a driver's row (columns ``keys``, processors ``results``) to an
    entity of ``cls``: :func:`row_function`'s processing and the entity reader's checks and slots
    (:func:`crmcore.domain.convert.entity_reader_body`) in one body, with no tuple of processed
    values in between, no second unpacking and no second call (issue 21).  With ``tail`` the last
    column is not the entity's (nor processed: its reader looks at it).  It raises LookupError for a value the entity's converter must decide on (the caller then
    converts :func:`row_function`'s values).  None: ``cls`` has no such reader."""
    fields = keys[:-1] if tail else keys
    body = entity_reader_body(cls, fields)
    if body is None:
        return None
    lines, scope = body
    columns = "".join(f"c{i}, " for i in range(len(keys)))
    source = ["def read(row):", f"    {columns}= row"]
    for index, process in results:
        if tail and index == len(keys) - 1:
            continue
        scope_name = f"p{index}"
        if scope.setdefault(scope_name, process) is not process:
            return None  # (a name of the reader's: cannot happen with today's names)
        source.append(f"    if c{index} is not None:")
        source += _inline(index, process, scope)
    source += lines
    source.append("    return entity")
    exec(compile("\n".join(source), f"<crmcore point {cls.__name__}>", "exec"), scope)  # noqa: S102
    return scope["read"]  # type: ignore[no-any-return]


#: Every live reader, told when the process forks.
_READERS: "weakref.WeakSet[PointReads]" = weakref.WeakSet()


def _after_fork() -> None:
    for reads in list(_READERS):
        reads._forked = True


os.register_at_fork(after_in_child=_after_fork)


class PointReads:
    """Runs built-once statements on raw connections of ``engine`` (see the module).

    :ivar available: whether this engine's reads can go below SQLAlchemy at all (a file or server
        database with a queue pool; an in-memory SQLite database is one connection per thread).
    """

    def __init__(self, engine: Engine):
        self.engine = engine
        self.available = isinstance(engine.pool, QueuePool)
        self._idle: list[Any] = []
        self._shapes: dict[Any, _Shape] = {}
        self._inherited: list[Any] = []  # a forked child's copies of the parent's connections
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        name = engine.dialect.name
        self._prepare = name == "postgresql" and engine.dialect.driver == "psycopg"
        self._closed = False
        # Set in a forked child (_after_fork), so a checkout does not ask the process id every time.
        self._forked = False
        _READERS.add(self)

    # -- connections ---------------------------------------------------------------------------
    def checkout(self) -> Any:
        """A raw DBAPI connection in autocommit mode, owned by the caller until :meth:`checkin`."""
        if self._forked:  # the parent's sockets are not ours to use (or close)
            self._forked = False
            self._inherited.extend(self._idle)
            self._idle = []
        try:
            return self._idle.pop()  # atomic under the GIL: no lock on the common path
        except IndexError:
            return self._connect()

    def checkin(self, connection: Any) -> None:
        """Give back a connection from :meth:`checkout` (closed instead once the reader is)."""
        if self._closed:
            connection.close()
        else:
            self._idle.append(connection)

    def discard(self, connection: Any) -> None:
        """Close a connection that failed (it is not given back)."""
        try:
            connection.close()
        except Exception:  # already broken: nothing more to release
            pass

    def _connect(self) -> Any:
        if self._closed:
            raise Fallback("the reader is closed")
        fairy = self.engine.raw_connection()  # the engine's connect events (SQLite's pragmas) run
        fairy.detach()  # never back into the pool: its autocommit mode is this reader's alone
        dbapi: Any = fairy.dbapi_connection
        if self.engine.dialect.name == "postgresql":
            dbapi.autocommit = True  # each read its own statement: no BEGIN/COMMIT round trips
        elif self.engine.dialect.name in ("mysql", "mariadb"):
            dbapi.autocommit(True)
        # SQLite: the engine's connect event already put the driver in autocommit (isolation_level None).
        return dbapi

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            self.discard(connection)

    # -- statements ----------------------------------------------------------------------------
    def shape(self, statement: Any) -> _Shape:
        """The compiled form of ``statement`` (compiled at its first read)."""
        found = self._shapes.get(statement)
        if found is None:
            found = _compile(statement, self.engine)
            if len(self._shapes) >= MAX_SHAPES:
                del self._shapes[next(iter(self._shapes))]
            self._shapes[statement] = found
        return found

    def first(self, connection: Any, statement: Any, params: Mapping[str, Any]) \
            -> tuple[tuple[str, ...], Sequence[Any]] | None:
        """The first row of ``statement`` with ``params`` on ``connection``: its column keys and
        processed values, or None.  Raises :class:`Fallback` on a database error (the caller reads
        again through SQLAlchemy, which reports it as usual)."""
        found = self.first_row(connection, statement, params)
        if found is None:
            return None
        shape, row = found
        return shape.keys, shape.process(row)  # type: ignore[misc]  # (set with the first row)

    def first_row(self, connection: Any, statement: Any, params: Mapping[str, Any],
                  login: str | None = None) -> tuple[_Shape, Any] | None:
        """:meth:`first` without the processing: the statement's :class:`_Shape` (its
        :attr:`_Shape.process` and :meth:`_Shape.entity_function` ready) and the driver's row, or
        None.  ``login``: the value of the statement's :data:`LOGIN` parameter (instead of
        ``params``')."""
        shape = self._shapes.get(statement) or self.shape(statement)
        bound = shape.bind(params, login)
        try:
            cursor = connection.cursor()
            try:
                if self._prepare:
                    cursor.execute(shape.sql, bound, prepare=True)
                else:
                    cursor.execute(shape.sql, bound)
                row = cursor.fetchone()
                if row is not None and shape.process is None:
                    shape.set_results(result_processors(statement, self.engine.dialect, cursor.description))
            finally:
                cursor.close()
        except self._dbapi_error as exc:
            raise Fallback(str(exc)) from exc
        if row is None:
            return None
        return shape, row
