"""The PostgreSQL bulk path of imports: rows bound in the validation workers, written with COPY.

On SQLite an import's workers hand back each good row as the values an
``executemany`` binds (:class:`~crmcore.io.rows.Binder`), so the writing
process only inserts.  This module gives PostgreSQL (psycopg) the same shape:

* :func:`copy_processor`: a JSON column is bound as its JSON *text* (the
  engine's serializer, what psycopg's ``Json`` dumper would have sent), not as
  a ``psycopg.types.json.Json`` wrapper: text pickles back from a worker, is
  remembered for repeated values like any bound value, and COPY stores it in a
  ``json`` column as it is.  Other columns keep their own bind processors
  (UTC time stamps, booleans, sealed values), so what COPY stores is what an
  ``insert(table)`` of the same row would store.
* :func:`copy_new_rows`: ids drawn from the table's sequence (as its default
  would), then the bound rows, each behind its id, streamed with
  ``COPY ... FROM STDIN`` (psycopg formats each row in C: about a microsecond
  a row, against tens for SQLAlchemy's per-value bind processing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table, text
from sqlalchemy.types import TypeDecorator

from ..store.bulk import copy_in


def copies(dialect: Any) -> bool:
    """True when ``dialect`` is PostgreSQL through psycopg (3), where COPY is used."""
    return bool(dialect.name == "postgresql" and dialect.driver == "psycopg")


def copy_processor(column_type: Any, dialect: Any) -> Callable[[Any], Any] | None:
    """A JSON column's bind processor that gives the JSON text; None for any other type.

    A :class:`~sqlalchemy.types.TypeDecorator` over JSON (sealed custom fields)
    runs its own ``process_bind_param`` first, as its bind processor does.
    ``None`` and :data:`JSON.NULL` are handled by SQLAlchemy's JSON processor
    itself (``none_as_null``), so the text is what its ``Json`` wrapper holds.
    """
    decorator = column_type if isinstance(column_type, TypeDecorator) else None
    json_type = decorator.impl_instance if decorator is not None else column_type
    if not isinstance(json_type, JSON):
        return None
    serialize = getattr(dialect, "_json_serializer", None) or json.dumps
    as_text: Callable[[Any], Any] = json_type._make_bind_processor(None, serialize)  # type: ignore[no-untyped-call]
    if decorator is None:
        return as_text
    before = decorator.process_bind_param

    def process(value: Any) -> Any:
        return as_text(before(value, dialect))
    return process


def copy_new_rows(conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]],
                  sequence: str | None = None) -> list[int]:
    """Insert bound ``rows`` (values of ``columns``, without ``id``) with COPY; their new ids, in order.

    ``sequence``: the id column's sequence name, when the caller knows it
    (else one query asks ``pg_get_serial_sequence``).  A refused row raises
    :class:`sqlalchemy.exc.DBAPIError`, as an executemany would, and leaves
    the transaction to the caller (a savepoint around it rolls it back).
    """
    if not rows:
        return []
    if sequence is None:
        sequence = serial_sequence(conn, table)
    ids: list[int] = [row[0] for row in conn.exec_driver_sql(
        "SELECT nextval(%(sequence)s) FROM generate_series(1, %(count)s)",
        {"sequence": sequence, "count": len(rows)}).fetchall()]
    copy_in(conn, table, ("id", *columns), ((new_id, *row) for new_id, row in zip(ids, rows)))
    return ids


def serial_sequence(conn: Connection, table: Table) -> str:
    """The name of the sequence behind ``table``'s ``id`` column."""
    name: str = conn.execute(text("SELECT pg_get_serial_sequence(:table, 'id')"),
                             {"table": table.name}).scalar_one()
    return name


__all__ = ["copies", "copy_new_rows", "copy_processor", "serial_sequence"]
