"""Engines for the three supported databases, with their quirks handled once.

SQLite: WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for write
transactions.  Without IMMEDIATE, a transaction that reads before it writes can
fail with "database is locked" when another process committed in between,
which a concurrent redemption would hit; IMMEDIATE takes the write lock up front
and waits on the busy timeout instead.  Read-only work opens deferred.
"""

from __future__ import annotations

import json
import os
from typing import Any

import orjson

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url

from ..domain.errors import ConfigError
from . import direct
from .intlist import IntList, int_list_json

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Helper threads SQLite may start for one large sort (its sorter merges in parallel).
SQLITE_SORT_THREADS = min(os.cpu_count() or 1, 4)

# URL schemes without a driver -> the driver we install and test.
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def normalize_url(url: str) -> str:
    """Fill in the driver crmcore uses for a bare ``postgresql://`` / ``mysql://`` URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"database URL {url!r} has no scheme (e.g. sqlite:///crm.db)")
    scheme = DEFAULT_DRIVERS.get(scheme, scheme)
    url = f"{scheme}://{rest}"
    if scheme.split("+")[0] in ("mysql", "mariadb") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    return url


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and ``crm config show``).

    Text that does not parse as a URL is returned with anything between ``:``
    and ``@`` after the scheme masked, so a typo never prints a password either.
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return url
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


class DatabaseMissing(ConfigError):
    """A SQLite database file that does not exist, reached by an engine told not to create one."""


def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` names a SQLite database file that does not exist (yet)."""
    try:
        parsed = make_url(url)
    except Exception:
        return False
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:") or \
            str(database).startswith("file:"):
        return False
    return not os.path.exists(str(database))


#: Connections an engine keeps open (``crm serve`` runs at most this many requests at once).
POOL_SIZE = 16


def make_engine(url: str, *, create: bool = True, **kwargs: Any) -> Engine:
    """Create an engine for ``url`` with crmcore's per-dialect settings.

    A failure to connect, then or later (a SQLite file that cannot be opened,
    a server that refuses, bad credentials), is a :class:`ConfigError` whose
    one-line message names the URL with its password masked.

    :param create: with False, connecting to a SQLite file that does not exist
        raises :class:`DatabaseMissing` instead of creating the file (read-only
        commands never create a database).
    """
    try:
        parsed = make_url(normalize_url(url))
        kwargs.setdefault("json_serializer", _json_dumps)
        kwargs.setdefault("json_deserializer", _json_loads)
        if parsed.database not in (None, "", ":memory:"):
            # Keep as many connections as a served API runs requests at once (crm serve's worker
            # threads): with SQLAlchemy's default of 5, a sixth concurrent request opened a new
            # connection and closed it again on every request.
            kwargs.setdefault("pool_size", POOL_SIZE)
        engine = create_engine(parsed, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # bad URL or missing driver: the user's to fix
        raise ConfigError(f"cannot use database URL {mask_url(url)}: "
                          f"{_scrub(str(exc), parsed_password(url))}") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, in_memory=parsed.database in (None, "", ":memory:"))
        if not create and sqlite_file_missing(url):
            _refuse_to_create(engine, url)
    _report_connection_failures(engine, url)
    return engine


def parsed_password(url: str) -> str | None:
    """The password in ``url``, if any (to scrub it from drivers' messages)."""
    try:
        return make_url(url).password
    except Exception:
        return None


def _scrub(message: str, password: str | None) -> str:
    first = message.strip().splitlines()[0] if message.strip() else "no reason given"
    return first.replace(password, "***") if password else first


def _refuse_to_create(engine: Engine, url: str) -> None:
    path = str(engine.url.database)

    @event.listens_for(engine, "do_connect")
    def _on_connect(_dialect: Any, _record: Any, _args: Any, _params: Any) -> None:
        if not os.path.exists(path):
            raise DatabaseMissing(f"database {mask_url(url)} does not exist")


def _report_connection_failures(engine: Engine, url: str) -> None:
    """Turn an error while *establishing* a connection into a one-line ConfigError.

    SQLAlchemy calls ``handle_error`` without a connection only when opening one
    failed; errors of statements on an open connection are left alone.
    """
    masked, password = mask_url(url), parsed_password(url)

    @event.listens_for(engine, "handle_error")
    def _on_error(context: ExceptionContext) -> None:
        if context.connection is not None or isinstance(context.original_exception, ConfigError):
            return
        reason = _scrub(str(context.original_exception), password)
        hint = ""
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            folder = os.path.dirname(os.path.abspath(str(engine.url.database)))
            if not os.path.isdir(folder):
                hint = f" (directory {folder} does not exist)"
        raise ConfigError(f"cannot connect to database {masked}: {reason}{hint}")


# Keep non-ASCII text as is: SQLite's json_extract matches object keys
# literally, so a key stored as "\\u57ce\\u5e02" is not found by '$."城市"'.
# One encoder for every value: json.dumps with an option builds a new one per
# call, a measurable share of writing a million JSON values.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _json_dumps(value: Any) -> str:
    if value.__class__ is IntList:  # a batch's row ids (a job's audit record: 100,000 of them)
        text = int_list_json(value)
        if text is not None:
            return text
    return _JSON_ENCODER.encode(value)


def _json_loads(text: str | bytes) -> Any:
    """A JSON column's value (SQLite, MariaDB: text): orjson, about ten times json's speed on the
    small documents of tags and custom fields (two per customer read); json for what orjson
    refuses (NaN, integers beyond 64 bits), so every stored value still reads as before."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# What a point read's row function may call inline for this loader's common case (orjson, and
# the processor itself, thus this function, for what orjson refuses): see pointread.json_inline.
_json_loads.crm_fast = (orjson.loads, orjson.JSONDecodeError)  # type: ignore[attr-defined]


def _configure_sqlite(engine: Engine, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
        # transaction handling cannot do IMMEDIATE).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Let a big sort (GROUP BY over millions of deals) use helper threads: about 1.6x faster
        # on two cores.  SQLite starts them only for sorts that spill past the page cache.
        cursor.execute(f"PRAGMA threads={SQLITE_SORT_THREADS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("crm_plain", False):
            return  # a point read (crm.unit(plain=True)): SQLite's autocommit, one statement at a time
        if options.get("crm_readonly", False):
            # A deferred BEGIN takes no lock and cannot be busy: straight to the driver, without a
            # statement's round through SQLAlchemy's execution machinery (a tenth of a point read).
            conn.connection.dbapi_connection.execute("BEGIN")
        else:
            direct.begin_immediate(conn)
