"""Test-suite speed on the servers: empty a migrated database instead of dropping and rebuilding it.

Every server test starts from ``reset_database`` (drop every table), then opens a CRM, which
replays the migrated schema (``schema_cache``).  On MariaDB both are DDL: dropping and creating
about 35 InnoDB tables takes seconds per test, most of a server test's time.

When the database still has exactly the schema a replay left in it (same tables, columns,
indexes, keys, triggers, views, routines and types: compared by a fingerprint read from the
catalog), a reset here deletes the rows instead, sets the id counters (AUTO_INCREMENT,
sequences) back to what the replay left, and puts back the rows the migrations wrote
(Alembic's version tables): the database is then what the replay made, without DDL.  The next
``CRM.open`` with the same revision sources has nothing to migrate and skips the upgrade.  Any
schema change a test made (a plugin enabled later, a migration test, a test's own table) shows
in the fingerprint, and the reset falls back to dropping everything.

What stays tested: ``tests/core/test_core_migrations.py`` turns the cache off (full drop, real
migrations) and checks that both a replayed and an emptied database equal a migrated one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

import attrs
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from crmcore.store.engine import make_engine, normalize_url


@attrs.frozen
class Migrated:
    """A server database right after a replay of one snapshot."""

    fingerprint: str
    tables: tuple[str, ...]
    rows: tuple[tuple[str, tuple[str, ...], tuple[tuple[Any, ...], ...]], ...]
    counters: tuple[tuple[str, Any, Any], ...]


#: Per snapshot key (dialect, revision sources): the state a replay leaves.
_states: dict[tuple[Any, ...], Migrated] = {}
#: Per database: the snapshot key it was last migrated to (until a reset finds its schema changed).
_migrated: dict[tuple[Any, ...], tuple[Any, ...]] = {}
#: Per database: the key it was emptied back to by the last reset, until the next open takes it.
_fresh: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def database(url: Any) -> tuple[Any, ...]:
    """Which server database a URL (string or SQLAlchemy URL) names."""
    parsed = make_url(normalize_url(url)) if isinstance(url, str) else url
    return (parsed.get_backend_name(), parsed.host, parsed.port, parsed.database)


def remember(engine: Engine, key: tuple[Any, ...]) -> None:
    """``engine``'s database was just migrated or replayed to ``key``: note its state."""
    dialect = engine.dialect.name
    if dialect not in CATALOG:
        return
    if key not in _states:
        with engine.connect() as conn:
            tables = TABLES[dialect](conn)
            _states[key] = Migrated(fingerprint(conn, dialect), tuple(tables),
                                    rows(conn, tables, QUOTE[dialect]), COUNTERS[dialect](conn))
    _migrated[database(engine.url)] = key


def take_fresh(engine: Engine) -> tuple[Any, ...] | None:
    """The key ``engine``'s database was emptied back to by the last reset, once."""
    return _fresh.pop(database(engine.url), None)


def forget(url: str) -> None:
    """``url``'s database was dropped behind this module's back."""
    _migrated.pop(database(url), None)
    _fresh.pop(database(url), None)


def reset(url: str, drop: Callable[[str], None], enabled: bool) -> None:
    """Empty ``url``'s database back to its last replay when its schema is unchanged, else ``drop``."""
    db = database(url)
    _fresh.pop(db, None)
    key = _migrated.pop(db, None)
    if enabled and key is not None and _empty(url, _states[key]):
        _migrated[db] = _fresh[db] = key
        return
    drop(url)


def _empty(url: str, state: Migrated) -> bool:
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            dialect = engine.dialect.name
            if fingerprint(conn, dialect) != state.fingerprint:
                return False
            EMPTY[dialect](conn, state)
            insert(conn, state.rows, QUOTE[dialect])
            return True
    finally:
        engine.dispose()


def rows(conn: Any, tables: list[str], quote: Callable[[str], str]) -> tuple[Any, ...]:
    """Every non-empty table's rows: (table, columns, rows)."""
    result = []
    for table in tables:
        cursor = conn.exec_driver_sql(f"SELECT * FROM {quote(table)}")
        found = tuple(tuple(row) for row in cursor)
        if found:
            result.append((table, tuple(cursor.keys()), found))
    return tuple(result)


def insert(conn: Any, table_rows: tuple[Any, ...], quote: Callable[[str], str], marker: str = "%s") -> None:
    """Put back what :func:`rows` read (``marker``: the driver's parameter mark)."""
    for table, columns, values in table_rows:
        names = ", ".join(quote(c) for c in columns)
        marks = ", ".join([marker] * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})", list(values))


def fingerprint(conn: Any, dialect: str) -> str:
    """A digest of the schema as the catalog describes it (not of the data)."""
    found = sorted(tuple("" if v is None else str(v) for v in row) for row in conn.exec_driver_sql(CATALOG[dialect]))
    return hashlib.sha256(repr(found).encode()).hexdigest()


def _nonempty(conn: Any, tables: tuple[str, ...], quote: Callable[[str], str]) -> list[str]:
    """The tables holding a row, in one statement."""
    probe = " UNION ALL ".join(f"SELECT {i} FROM (SELECT 1 AS x FROM {quote(t)} LIMIT 1) AS t{i}"
                               for i, t in enumerate(tables))
    return [tables[i] for (i,) in conn.exec_driver_sql(probe)]


# --- MariaDB / MySQL ----------------------------------------------------------------------------

def _mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


_MYSQL_CATALOG = """
SELECT 'c', table_name, column_name, column_type, is_nullable, column_default, extra, collation_name
  FROM information_schema.columns WHERE table_schema = DATABASE()
UNION ALL SELECT 'i', table_name, index_name, non_unique, seq_in_index, column_name, sub_part, index_type
  FROM information_schema.statistics WHERE table_schema = DATABASE()
UNION ALL SELECT 'f', table_name, constraint_name, referenced_table_name, update_rule, delete_rule, '', ''
  FROM information_schema.referential_constraints WHERE constraint_schema = DATABASE()
UNION ALL SELECT 'k', table_name, constraint_name, check_clause, '', '', '', ''
  FROM information_schema.check_constraints WHERE constraint_schema = DATABASE()
UNION ALL SELECT 't', event_object_table, trigger_name, action_timing, event_manipulation, '', '', ''
  FROM information_schema.triggers WHERE trigger_schema = DATABASE()
UNION ALL SELECT 'v', table_name, table_type, engine, '', '', '', ''
  FROM information_schema.tables WHERE table_schema = DATABASE()
UNION ALL SELECT 'r', routine_name, routine_type, '', '', '', '', ''
  FROM information_schema.routines WHERE routine_schema = DATABASE()
"""


def _mysql_tables(conn: Any) -> list[str]:
    return [name for name, kind in conn.exec_driver_sql("SHOW FULL TABLES") if kind == "BASE TABLE"]


def _mysql_counters(conn: Any) -> tuple[tuple[str, Any, Any], ...]:
    return tuple(sorted((name, value, None) for name, value in conn.exec_driver_sql(
        "SELECT table_name, auto_increment FROM information_schema.tables "
        "WHERE table_schema = DATABASE() AND auto_increment IS NOT NULL")))


def _empty_mysql(conn: Any, state: Migrated) -> None:
    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
    try:
        for table in _nonempty(conn, state.tables, _mysql_quote):
            conn.exec_driver_sql(f"DELETE FROM {_mysql_quote(table)}")
    finally:
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")
    # InnoDB keeps a table's next id when its rows go: set back the ones that moved.
    for (table, value, _), (_, now, _) in zip(state.counters, _mysql_counters(conn)):
        if value != now:
            conn.exec_driver_sql(f"ALTER TABLE {_mysql_quote(table)} AUTO_INCREMENT = {int(value)}")


# --- PostgreSQL ---------------------------------------------------------------------------------

def _pg_quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_PG_CATALOG = """
SELECT 'c', table_name, column_name, data_type, is_nullable, column_default,
       character_maximum_length::text, numeric_precision::text || ',' || numeric_scale::text
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL SELECT 'r', c.relname, c.relkind::text, '', '', '', '', '' FROM pg_class c
  WHERE c.relnamespace = 'public'::regnamespace
UNION ALL SELECT 'i', i.indrelid::regclass::text, pg_get_indexdef(i.indexrelid), '', '', '', '', ''
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'public'::regnamespace
UNION ALL SELECT 'k', conrelid::regclass::text, conname, pg_get_constraintdef(oid), '', '', '', ''
  FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL SELECT 't', tgrelid::regclass::text, tgname, '', '', '', '', '' FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
UNION ALL SELECT 'p', proname, pg_get_function_identity_arguments(oid), '', '', '', '', '' FROM pg_proc
  WHERE pronamespace = 'public'::regnamespace
UNION ALL SELECT 'y', typname, typtype::text, '', '', '', '', '' FROM pg_type
  WHERE typnamespace = 'public'::regnamespace
"""


def _pg_tables(conn: Any) -> list[str]:
    return [name for (name,) in conn.exec_driver_sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]


def _pg_counters(conn: Any) -> tuple[tuple[str, Any, Any], ...]:
    return tuple(sorted(conn.exec_driver_sql(
        "SELECT sequencename, coalesce(last_value, start_value), last_value IS NOT NULL "
        "FROM pg_sequences WHERE schemaname = 'public'").all()))


def _empty_pg(conn: Any, state: Migrated) -> None:
    full = _nonempty(conn, state.tables, _pg_quote)
    if full:
        # One statement; CASCADE takes along the (empty) tables whose keys point at these.
        conn.exec_driver_sql(f"TRUNCATE {', '.join(_pg_quote(t) for t in full)} CASCADE")
    if state.counters:
        values = ", ".join(f"('public.{_pg_quote(name)}', {int(value)}, {'true' if called else 'false'})"
                           for name, value, called in state.counters)
        conn.exec_driver_sql(f"SELECT setval(v.s::regclass, v.n, v.c) FROM (VALUES {values}) AS v(s, n, c)")


CATALOG = {"mysql": _MYSQL_CATALOG, "mariadb": _MYSQL_CATALOG, "postgresql": _PG_CATALOG}
TABLES: dict[str, Callable[[Any], list[str]]] = {
    "mysql": _mysql_tables, "mariadb": _mysql_tables, "postgresql": _pg_tables}
COUNTERS: dict[str, Callable[[Any], tuple[tuple[str, Any, Any], ...]]] = {
    "mysql": _mysql_counters, "mariadb": _mysql_counters, "postgresql": _pg_counters}
EMPTY: dict[str, Callable[[Any, Migrated], None]] = {
    "mysql": _empty_mysql, "mariadb": _empty_mysql, "postgresql": _empty_pg}
QUOTE: dict[str, Callable[[str], str]] = {
    "mysql": _mysql_quote, "mariadb": _mysql_quote, "postgresql": _pg_quote}


def untouched(engine: Engine, key: tuple[Any, ...]) -> bool:
    """Whether ``engine``'s database is still exactly as a reset left it for ``key`` (nothing written)."""
    state = _states[key]
    dialect = engine.dialect.name
    with engine.connect() as conn:
        return (fingerprint(conn, dialect) == state.fingerprint
                and COUNTERS[dialect](conn) == state.counters
                and set(_nonempty(conn, state.tables, QUOTE[dialect])) == {table for table, _, _ in state.rows})
