"""Import a CSV, JSON Lines or XLSX file of customers, contacts, interactions or deals.

The file is read as a stream, in batches (``batch_size`` rows):

1. the reader turns bytes into records (:mod:`crmcore.io.readers`);
2. :class:`~crmcore.io.rows.RowChecker` maps, builds, normalises and checks
   each row -- in worker processes for big files, since email and phone
   normalisation dominate the cost and need no database.  With workers, a CSV
   file is read by the workers too: the importing process cuts it into spans
   of about a batch's bytes where records start (:func:`~crmcore.io.readers.spans`),
   each worker reads and checks its span with the same reader code, and the
   records come back in file order, cut into batches again (a span that turns
   out to end inside a quoted value: the importing process reads on from there);
3. in the unit of work, one query per batch and key finds the rows that
   already exist (upsert by ``external_id``, ``email`` or ``id``), one query
   per batch resolves the ``customer`` / ``contact`` references, plugin
   ``validate_*`` hooks run (only when a plugin implements them), and the new
   rows go in with one executemany.  Rows that match an existing record are
   updated through the entity service (per row, with the per-entity update
   events).

Bulk inserts fire the batch events ``on_<kind>s_imported`` (skipped when no
plugin listens) instead of ``on_<kind>_created`` per row, like
:meth:`~crmcore.application.services.EntityService.add_many`.  Imported deals get their
first stage-history row, their buyers become customers when they arrive won, and loyalty
schemes earn for them (:meth:`~crmcore.application.services.DealService.after_bulk_insert`);
``on_deal_stage_changed``
is not fired per imported deal.  ``earn=False`` (``--no-earn``) turns earning off for the
import's units of work.  A deal row without an external id is the stored deal with the same
customer, title, amount and closed_at, when there is one (one query per batch;
``allow_duplicates`` adds it anyway).

``on_error="abort"`` (the default) is all-or-nothing: the whole file is one
transaction, rolled back when any row is bad (every bad row is still reported).
``on_error="skip"`` commits batch by batch and rejects only the bad rows; a
batch the database refuses (say, a concurrent writer took a key) is retried
row by row, so every good row lands.  ``dry_run`` validates everything in one
transaction that is rolled back at the end.
"""

from __future__ import annotations

import functools
import gc
import json
import multiprocessing
import operator
import os
import pickle
import stat
import time
from array import array
from collections import deque
from itertools import compress, repeat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from multiprocessing.pool import AsyncResult
from typing import Any, TypeAlias, TypeGuard, TypeVar, cast

import attrs
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    type_coerce,
    update,
)
from sqlalchemy import Select
from sqlalchemy import cast as cast_
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.types import NullType, TypeDecorator

from .. import startup
from ..application.consents import decisions_from, flags_set, new_flags_set, new_ids_flags_set
from ..application.duplicates import describe as describe_matches
from ..application.services import OWNED
from ..application.users import import_owners, owner_problems
from ..store.tables import users
from ..domain.convert import unstructure
from ..domain.entities import ENTITY_TYPES
from ..domain.errors import CRMError, HookError, ValidationError
from ..domain.validation import normalize_email
from ..store.bulk import (
    any_of,
    fetch_rows,
    insert_returning_ids,
    pg_array_text,
    probe_each,
    probes_pay,
    sqlite_new_ids,
)
from ..store.maintenance import refresh_statistics
from ..store.sealed import MARK, cipher_of, sealed
from ..store.tables import ENTITY_TABLES, contacts, customers
from .mapping import (
    FIELD,
    REFERENCE,
    ColumnMapping,
    MappingError,
    entity_fields,
    entity_kind,
)
from . import fingerprint
from .fingerprint import Screen, Stamp
from .readers import CSVReader, Reader, Record, SourceError, Span, open_reader, spans
from ..application.privacy_files import remember as remember_file
from .pgcopy import CopyTarget, copies, copy_new_rows, copy_target
from .rejects import RejectWriter, check_reject_target
from .rows import Binder, Given, RowChecker, integer_range, normalize_key

KEYS = {"customer": ("external_id", "email", "id"), "contact": ("external_id", "email", "id"),
        "interaction": ("external_id", "id"), "deal": ("external_id", "id"), "task": ("external_id", "id")}
#: The field of each kind that names a user (resolved from a login or an email; unknown: rejected).
USER_FIELDS = {kind: "owner" for kind in OWNED} | {"task": "assignee"}
# Fields an import must be able to fill for a new row (beyond those with defaults).
DEFAULTED = {"currency", "customer_id", "id"}
IN_CHUNK = 5000
#: What an import does with a new customer row that looks like a stored customer.
ON_DUPLICATE = ("skip", "update", "merge", "add")
# What a database (or its driver, before sending) raises for a row it will not store.
_REFUSED = (DBAPIError, StatementError, OverflowError, UnicodeEncodeError)
ProgressCallback = Callable[["ImportProgress"], None]


class ImportFailed(CRMError):
    """An all-or-nothing import found bad rows (nothing was written)."""

    def __init__(self, report: "ImportReport"):
        self.report = report
        super().__init__(report.summary())


@attrs.define
class ImportOptions:
    """How to read and apply a file; the ``crm import`` options."""

    format: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    mapping: dict[str, str] = attrs.field(factory=dict)
    #: field -> cell text -> value (a mapping file's ``[values.FIELD]`` tables)
    values: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    ignore_unknown: bool = False
    key: str | None = None
    dry_run: bool = False
    on_error: str = "abort"
    reject_file: str | Path | None = None
    batch_size: int = 5000
    workers: int | None = None
    max_errors: int | None = None
    #: CSV as written: no formula quote is removed on reading or added in the reject file.
    raw_csv: bool = False
    #: Other files the import reads (a mapping file): the reject file must not be one of them.
    inputs: tuple[str | Path, ...] = ()
    #: A CSV reject file in UTF-8 with a byte order mark, for Excel (None: ``excel_csv`` of crm.toml).
    excel: bool | None = None
    #: Won deals earn loyalty points (False for history loads: ``--no-earn``).
    earn: bool = True
    #: Deals without an external id are added even when a stored deal has the same
    #: customer, title, amount and closed_at (by default such a row is that deal).
    allow_duplicates: bool = False
    #: A new customer row sharing an exact key with a stored customer (the door check,
    #: ``[duplicates] exact``): skip, update that customer, merge (fill its empty fields), or add
    #: anyway.  None: ``[duplicates] on_import``.
    on_duplicate: str | None = None


@attrs.define
class RowError:
    """A rejected row: where (line, column) and why."""

    line: int
    column: str | None
    reason: str

    def message(self, name: str) -> str:
        where = f'column "{self.column}": ' if self.column else ""
        return f"{name}:{self.line}: {where}{self.reason}"


@attrs.define
class ImportProgress:
    rows: int
    bytes_read: int
    total_bytes: int | None


@attrs.define
class ImportReport:
    """What an import did (or, for a dry run or a failed abort-mode import, would have done)."""

    entity: str
    file: str
    format: str
    key: str
    on_error: str
    dry_run: bool
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    #: deal rows without an external id that matched a stored deal (counted in updated/unchanged too)
    matched: int = 0
    #: customer rows that looked like a stored customer (or an earlier row): what was done with each
    skipped: int = 0
    duplicates: list[dict[str, Any]] = attrs.field(factory=list)
    committed: bool = False
    errors: list[RowError] = attrs.field(factory=list)
    notes: list[str] = attrs.field(factory=list)
    reject_file: str | None = None
    stopped_early: bool = False
    workers: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = attrs.field(factory=dict)

    MAX_KEPT_ERRORS = 1000

    def add_error(self, error: RowError) -> None:
        self.rejected += 1
        if len(self.errors) < self.MAX_KEPT_ERRORS:
            self.errors.append(error)

    def error_messages(self, limit: int | None = None) -> list[str]:
        return [e.message(self.file) for e in self.errors[:limit]]

    def duplicate_messages(self, limit: int | None = None) -> list[str]:
        """``FILE:LINE: skipped: looks like customer 12 'Zhang Wei' (same email)`` per duplicate row."""
        return [f"{self.file}:{d['line']}: {d['action']}: {d['message']}" for d in self.duplicates[:limit]]

    def add_duplicate(self, line: int, action: str, message: str, customers: list[int]) -> None:
        """Record what the door check did with one row (``skipped``, ``updated``, ``merged``, ``added``)."""
        if len(self.duplicates) < self.MAX_KEPT_ERRORS:
            self.duplicates.append({"line": line, "action": action, "message": message, "customers": customers})

    def summary(self) -> str:
        what = f"{self.file}: {self.rows} {self.entity} row{'s' if self.rows != 1 else ''}"
        counts = [f"{self.inserted} inserted", f"{self.updated} updated"]
        if self.unchanged:
            counts.append(f"{self.unchanged} unchanged")
        if self.skipped:
            counts.append(f"{self.skipped} skipped as duplicates")
        counts.append(f"{self.rejected} rejected")
        if self.dry_run:
            text = f"{what}: dry run, nothing written; would have: {', '.join(counts)}"
        elif self.committed:
            text = f"{what}: {', '.join(counts)}"
        else:
            text = (f"{what}: {self.rejected} bad row{'s' if self.rejected != 1 else ''}, nothing written "
                    f"(--on-error abort); fix {'them' if self.rejected != 1 else 'it'} or use --on-error skip")
        if self.stopped_early:
            text += "; stopped early at --max-errors"
        if self.reject_file and self.rejected:
            text += f"; rejected rows in {self.reject_file}"
        if self.dry_run and self.rejected:
            text += f"; {self.rejected} of {self.rows} row{'s' if self.rows != 1 else ''} would be rejected"
        return text

    def to_dict(self) -> dict[str, Any]:
        data = attrs.asdict(self)
        data["errors"] = [{"line": e.line, "column": e.column, "reason": e.reason,
                           "message": e.message(self.file)} for e in self.errors]
        return data


def authorize_import(crm: Any, entity: str) -> str:
    """Ask ``authorize`` for ``KIND.import`` before any file is read; returns the kind.

    :func:`import_file` asks it too; an interface that must first receive the
    file (an HTTP upload) asks here, so a user who may not import stores nothing.
    """
    kind = entity_kind(entity)
    crm.authorize(f"{kind}.import", None)
    return kind


def import_file(crm: Any, entity: str, path: str | Path, options: ImportOptions | None = None,
                progress: ProgressCallback | None = None) -> ImportReport:
    """Import ``path`` into ``entity`` (``customer``/``customers``, ...); see the module doc.

    Raises :class:`ImportFailed` when ``on_error="abort"`` and any row is bad
    (nothing is written), and :class:`~crmcore.domain.errors.CRMError` subclasses for
    problems with the file as a whole (empty file, unknown column, bad header).
    """
    options = options or ImportOptions()
    kind = entity_kind(entity)
    if options.reject_file is not None:
        database = crm.engine.url.database if crm.engine.dialect.name == "sqlite" else None
        check_reject_target(options.reject_file, [path, *options.inputs, database])
    key = options.key or "external_id"
    if key not in KEYS[kind]:
        raise MappingError(f"--key {key!r}: {kind}s can be matched by {', '.join(KEYS[kind])}")
    if options.on_error not in ("abort", "skip"):
        raise MappingError(f"--on-error must be abort or skip, got {options.on_error!r}")
    if options.on_duplicate is not None and options.on_duplicate not in ON_DUPLICATE:
        raise MappingError(f"--on-duplicate must be {', '.join(ON_DUPLICATE)}, got {options.on_duplicate!r}")
    if options.batch_size < 1:
        raise MappingError("--batch-size must be at least 1")
    with open_reader(path, options.format, encoding=options.encoding, delimiter=options.delimiter,
                     sheet=options.sheet, raw_csv=options.raw_csv) as reader:
        mapping = ColumnMapping(kind, options.mapping, crm.custom_fields.get(kind, {}), options.ignore_unknown,
                                options.values)
        report = ImportReport(entity=kind, file=reader.name, format=reader.format, key=key,
                              on_error=options.on_error, dry_run=options.dry_run,
                              reject_file=str(options.reject_file) if options.reject_file else None)
        if reader.columns is not None:
            mapping.check_columns(reader.name, reader.header_line, reader.columns)
            _check_required(kind, key, mapping, reader, report)
        checker = RowChecker(kind, mapping, reader.columns, crm.validator, crm.clock(), key)
        crm.authorize(f"{kind}.import", None)
        with decisions_from("import"):  # a consent_marketing flag set by the file records a decision
            return _Import(crm, kind, key, checker, reader, options, report, progress).run()


def _check_required(kind: str, key: str, mapping: ColumnMapping, reader: Reader, report: ImportReport) -> None:
    """No column for a required field: an error up front, unless rows may update by key."""
    mapped = mapping.mapped(reader.columns or [])
    have = {t.name for t in mapped if t.kind == FIELD} | {
        "customer_id" for t in mapped if t.kind == REFERENCE and t.name == "customer"}
    required = [f.name for f in attrs.fields(ENTITY_TYPES[kind])
                if f.default is attrs.NOTHING and f.name not in DEFAULTED and f.name in entity_fields(kind)]
    if kind != "customer":
        required.insert(0, "customer_id")
    missing = [f for f in required if f not in have]
    if missing and key not in have:
        names = ["customer (external id, email or id)" if f == "customer_id" else f for f in missing]
        raise MappingError(f"{reader.name}:{reader.header_line}: no column for required field(s) "
                           f"{', '.join(names)} (columns: {', '.join(reader.columns or [])}); "
                           f"map one with --map COLUMN=FIELD")
    if "id" in have and key != "id":
        report.notes.append("column id ignored: the database assigns ids (use --key id to keep them)")


class IdLines:
    """Which stored ids this import has written, and from which line (4 bytes an id).

    Ids are dense in practice (a table's own sequence), so an array indexed by
    ``id - base`` stays small and flat; far-away ids fall back to a dict.
    """

    SPAN = 1 << 20

    def __init__(self) -> None:
        self.base: int | None = None
        self.lines = array("I")
        self.far: dict[int, int] = {}

    def mark(self, id: int, line: int) -> None:
        line = min(line, 0xFFFFFFFF)
        if self.base is None:
            self.base = id
        offset = id - self.base
        if offset < 0 and -offset <= max(len(self.lines), self.SPAN):
            self.lines[0:0] = array("I", bytes(4 * -offset))  # move the base down
            self.base, offset = id, 0
        if 0 <= offset < len(self.lines) + max(len(self.lines), self.SPAN):
            if offset >= len(self.lines):
                self.lines.extend(array("I", bytes(4 * max(offset + 1 - len(self.lines), len(self.lines) // 2))))
            self.lines[offset] = line
        else:
            self.far[id] = line

    def mark_many(self, ids: list[int], lines: list[int]) -> None:
        """:meth:`mark` of each id with its line; a run of consecutive ids (a bulk insert's new rows
        on SQLite) that starts inside the array or right after it is one slice assignment."""
        count = len(ids)
        if count and self.base is None:
            self.base = ids[0]
        offset = ids[0] - cast(int, self.base) if count else -1
        if (count and 0 <= offset <= len(self.lines) and ids[-1] - ids[0] == count - 1
                and ids == list(range(ids[0], ids[0] + count)) and max(lines) <= 0xFFFFFFFF and min(lines) >= 0):
            if offset + count > len(self.lines):
                self.lines.extend(array("I", bytes(4 * (offset + count - len(self.lines)))))
            self.lines[offset:offset + count] = array("I", lines)
            return
        for id, line in zip(ids, lines):
            self.mark(id, line)

    def any_marked(self, ids: list[int]) -> bool:
        """Whether any of ``ids`` may be marked: False only when none is (a batch's ids, close
        together: one look at the slice of the array between them, which holds every mark)."""
        if self.base is None or not ids:
            return False
        low, high = min(ids) - self.base, max(ids) - self.base
        if self.far or low < 0 or high - low > 8 * len(ids):
            return any(self.get(id) is not None for id in ids)
        high = min(high, len(self.lines) - 1)  # ids past the array's end are not marked
        return low <= high and self.lines[low:high + 1].tobytes().count(0) != 4 * (high + 1 - low)

    def get(self, id: int) -> int | None:
        if self.base is None:
            return None
        offset = id - self.base
        if 0 <= offset < len(self.lines):
            return self.lines[offset] or self.far.get(id)
        return self.far.get(id)


#: A row to insert: a dict of column values, or (with a binder, the SQLite bulk
#: path) the tuple of bound values in the statement's column order.
_Row: TypeAlias = "dict[str, Any] | tuple[Any, ...]"


@attrs.define
class _Item:
    line: int
    values: Any
    row: tuple[Any, ...] | None
    issues: list[tuple[str, str]] | None
    references: dict[str, str] | None
    key: Any


class _Rollback(Exception):
    pass


class _Import:
    def __init__(self, crm: Any, kind: str, key: str, checker: RowChecker, reader: Reader,
                 options: ImportOptions, report: ImportReport, progress: ProgressCallback | None):
        self.crm, self.kind, self.key, self.checker = crm, kind, key, checker
        self.reader, self.options, self.report, self.progress = reader, options, report, progress
        self.table = ENTITY_TABLES[kind]
        self.service = getattr(crm, f"{kind}s")
        self.door = (options.on_duplicate or crm.config.duplicates.on_import) if kind == "customer" else None
        self.binder = self._binder()
        self.columns = self.binder.columns if self.binder is not None else checker.table_columns
        self.key_index = self.columns.index(key)
        self.ext_index = self.columns.index("external_id")
        self.written = IdLines()
        self.rejects: RejectWriter | None = None
        self.timings = {"read": 0.0, "validate": 0.0, "validate_wait": 0.0, "write": 0.0}
        self.explicit_ids = False
        self._rejected: list[tuple[int, str | None, str, Any]] = []
        self._update_statement: Any = None
        self._copy_target: CopyTarget | None = None  # PostgreSQL: the id's sequence and COPY's format
        self._position = 0  # bytes of the file read so far, when workers read it in spans (for progress)
        self.keyless = 0
        self.stamp, self.screen = self._fingerprints()

    def _binder(self) -> Binder | None:
        """The SQLite bulk path: rows leave validation as bound values, ready for executemany
        (PostgreSQL through psycopg: for COPY, :mod:`crmcore.io.pgcopy`).

        Only where nothing in the writing process needs them as entities
        (no plugin ``validate_*`` hook or batch listener, not deals) and not
        for ``--key id``; see :class:`~crmcore.io.rows.Binder`.
        """
        dialect = self.crm.engine.dialect
        plugins = self.crm.plugins
        if (not (dialect.name == "sqlite" or copies(dialect)) or self.kind == "deal" or self.key == "id"
                or plugins.has_impls(f"validate_{self.kind}") or plugins.has_impls(f"on_{self.kind}s_imported")
                or (self._workers() and "fork" not in multiprocessing.get_all_start_methods())):
            return None
        binder = Binder(self.table, dialect, remember=DOOR_SEALED if self.door is not None else ())
        self.checker.binder = binder
        return binder

    def _fingerprints(self) -> tuple[Stamp | None, Screen | None]:
        """Where rows get import fingerprints (:mod:`crmcore.io.fingerprint`): the path of
        :meth:`_drop_unchanged` (plain customers by external id, bound values) on a database whose
        trigger forgets a changed row's digest; the screen also needs no ``max_errors`` (whose cut
        counts the rows validation saw)."""
        if not (self.binder is not None and self.kind == "customer" and self.key == "external_id"
                and not self.crm.plugins.has_impls(f"validate_{self.kind}") and self._forgets()):
            return None, None
        binder = self.binder
        dialect = self.crm.engine.dialect
        stamp = Stamp(fingerprint.context(self.checker, binder, dialect.name), binder.columns.index(fingerprint.COLUMN))
        # A sealed database and a policy that may look at the customer: the general path asks for
        # each row (``_prepare_update``, since sealed values never compare equal bound): no screen.
        sealed_any = binder.cipher is not None and bool(binder.cipher.fields)
        if (not fingerprint.SHORTCUT or self.options.max_errors is not None
                or (sealed_any and self.crm.plugins.has_impls("authorize"))):
            return stamp, None
        cipher = binder.cipher
        opened = (lambda value: cipher.open("birthday", value) if value.startswith(MARK) else value
                  ) if cipher is not None else None
        return stamp, Screen(self.checker, stamp, self._stored_digests, self._logins, opened)

    def _forgets(self) -> bool:
        """Whether the database forgets a customer's digest when the row changes (the trigger of
        revision 0029_import_digest_trigger): without it no digest is written or trusted (a
        later revision that rebuilt the table on SQLite, say, and did not create it again)."""
        with self.crm.unit(readonly=True) as uow:
            if uow.dialect == "sqlite":
                found = uow.conn.exec_driver_sql(
                    "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ? AND tbl_name = 'customers'",
                    (fingerprint.TRIGGER,)).first()
            elif uow.dialect == "postgresql":
                found = uow.conn.execute(text(
                    "SELECT 1 FROM pg_trigger WHERE tgname = :name AND tgrelid = CAST('customers' AS regclass) "
                    "AND tgenabled IN ('O', 'A')"), {"name": fingerprint.TRIGGER}).first()
            else:
                return False
            return found is not None

    def _stored_digests(self, keys: set[Any]) -> list[tuple[Any, ...]]:
        """The screen's read: the stored rows with these keys as :data:`fingerprint.STORED` (in a
        read-only unit)."""
        table = self.table
        columns = [table.c.id, table.c[self.key], table.c.owner, table.c.birthday, table.c[fingerprint.COLUMN]]
        with self.crm.unit(readonly=True) as uow:
            return list(_where_in(uow, columns, table.c[self.key], keys, raw=True))

    def _compared_select(self, uow: Any) -> list[Any]:
        """The id, the compared columns (as stored) and the digest of the table's rows."""
        binder = cast(Binder, self.binder)
        table = self.table
        columns = [table.c.id, *(table.c[binder.columns[i]] for i in self._compared()),
                   table.c[fingerprint.COLUMN]]
        if uow.dialect == "postgresql":  # JSON as stored (its text, what COPY sent), not parsed by psycopg
            columns = [cast_(c, Text()) if isinstance(c.type, JSON) or isinstance(
                getattr(c.type, "impl_instance", None), JSON) else c for c in columns]
        return columns

    @functools.cached_property
    def _compared_positions(self) -> list[int]:
        return fingerprint.compared_columns(cast(Binder, self.binder))

    def _compared(self) -> list[int]:
        """The positions of the bound columns :meth:`_drop_equal` compares (worked out once)."""
        return self._compared_positions

    def _logins(self, names: set[str]) -> set[str]:
        """Which of ``names`` are users' logins (an owner import_owners keeps as it is)."""
        with self.crm.unit(readonly=True) as uow:
            return {row[0] for row in _where_in(uow, [users.c.login], users.c.login, names)}

    def _check_here(self, values: Any) -> Any:
        """A screened row validated at write time after all (:meth:`Screen.settle`), as a worker would."""
        result = cast(Stamp, self.stamp)(values, self.checker.check(values))
        cipher = self.checker.binder.cipher if self.checker.binder is not None else None
        if cipher is not None:  # the door check's look-ups of what it sealed (as from a worker)
            cipher.take_over(cipher.hand_over(DOOR_SEALED))
        return result

    def _key_of(self, record: Record, result: Any) -> Any:
        """A validated record's key as :meth:`_write_batch` takes it (None for a reader's problem)."""
        if record.problem is not None:
            return None
        row = result[0]
        return row[self.key_index] if row is not None else self.checker.key_value(_unpacked(record.values))

    # -- driving -------------------------------------------------------------------
    def run(self) -> ImportReport:
        started = time.perf_counter()
        options = self.options
        workers = self._workers()
        self.report.workers = workers
        if options.reject_file:
            self.rejects = RejectWriter(options.reject_file, self.reader, escape_formulas=not options.raw_csv,
                                        excel=options.excel, excel_default=self.crm.config.excel_csv)
        gc_state = _relax_gc()
        spanned = self._spanned(workers)
        validated = _Validation(self.checker, workers, self.timings, spanned, self.stamp)
        single = options.dry_run or options.on_error == "abort"
        try:
            batches = self._limited(validated.run(self._batches(), self.screen) if spanned is None else
                                    self._rebatched(validated.run_spans(self._spans(spanned), self._rest)))
            if single:
                try:
                    with self.crm.unit() as uow, _roomy_cache(uow):
                        for batch, results in batches:
                            self._write(uow, batch, results)
                        # Every batch is validated: the workers go before the commit writes the
                        # transaction's pages (their memory would count at the peak).
                        validated.close()
                        if options.dry_run or self.report.rejected:
                            raise _Rollback
                    self.report.committed = True
                except _Rollback:
                    pass
            else:
                for batch, results in batches:
                    with self.crm.unit() as uow, _roomy_cache(uow):
                        self._write(uow, batch, results)
                self.report.committed = True
        finally:
            validated.close()
            _restore_gc(gc_state)
            if self.rejects is not None:
                self.rejects.close()
                if self.rejects.count:  # an erasure must find the file (crmcore.application.privacy_files)
                    with self.crm.unit() as uow:
                        remember_file(uow, self.rejects.path)
        if self.report.committed and not options.dry_run:
            refresh_statistics(self.crm, self.table, changed=self.report.inserted + self.report.updated)
        if self.report.matched:
            matched = self.report.matched
            self.report.notes.append(
                f"{matched} deal row{'s' if matched != 1 else ''} without external_id matched "
                f"{'stored deals' if matched != 1 else 'a stored deal'} on customer, title, amount and closed_at "
                f"and {'were' if matched != 1 else 'was'} taken as {'those deals' if matched != 1 else 'that deal'} "
                f"(--allow-duplicates adds such rows as new deals)")
        if self.keyless:
            self.report.notes.append(
                f"{self.keyless} row{' had' if self.keyless == 1 else 's had'} no {self.key} and "
                f"{'was' if self.keyless == 1 else 'were'} added as new; importing "
                f"{'it' if self.keyless == 1 else 'them'} again adds {'it' if self.keyless == 1 else 'them'} "
                f"again (give rows an external_id, or match with --key email or --key id)")
        self.report.seconds = time.perf_counter() - started
        self.report.timings = {k: round(v, 3) for k, v in self.timings.items()}
        if options.on_error == "abort" and self.report.rejected:
            raise ImportFailed(self.report)  # a dry run too: it fails as the real run would
        return self.report

    def _limited(self, batches: Iterable[tuple[list[Record], list[Any]]]
                 ) -> Iterator[tuple[list[Record], list[Any]]]:
        """Batches up to the ``max_errors``-th bad row (cut inside its batch when validation finds it)."""
        limit = self.options.max_errors
        if limit is None:
            yield from batches
            return
        processed = 0
        for batch, results in batches:
            room = limit - self.report.rejected
            bad = 0
            for index, (record, result) in enumerate(zip(batch, results)):
                if record.problem is not None or (result is not None and result[1]):
                    bad += 1
                    if bad >= room:
                        batch, results = batch[:index + 1], results[:index + 1]
                        break
            processed += len(batch)
            yield batch, results
            if self.report.rejected >= limit:
                self.report.stopped_early = True
                self.report.rows = processed  # rows read ahead of the cut are not part of the import
                return

    def _workers(self) -> int:
        if self.options.workers is not None:
            return max(0, self.options.workers)
        cpus = os.cpu_count() or 1
        size = self.reader.total_bytes or 0
        # Below a few MB the pool's start-up costs more than it saves.  One core stays with this
        # process: it writes every row (the critical path), and a worker on its core only takes
        # turns with it (2 cores, 100k rows, quiet: 2 workers 34.6% of raw executemany median,
        # 1 worker 37.1%; PostgreSQL 31.8% -> 33.4% of COPY; docs/performance.md).
        return min(cpus - 1, 4) if cpus > 1 and size > 4_000_000 else 0

    def _batches(self) -> Iterator[list[Record]]:
        """The file's records in batches of ``batch_size``, read in this process."""
        by_span = self._read_by_span()
        for batch in self._cut(self._records_by_span() if by_span else self.reader.records()):
            self.report.rows += len(batch)
            yield batch
            if not self._read_on(self._position if by_span else self.reader.bytes_read):
                return

    def _read_by_span(self) -> bool:
        """Whether this process reads the file span by span, as the workers read theirs
        (:meth:`_records_by_span`): a CSV file (not standard input) read for the fingerprint screen,
        where a span of plain one-line records is read at once (:meth:`CSVReader.span`), about
        twice as fast as the line-by-line reading.  Without a screen the line-by-line reading
        stays: it is what the tests compare every other reading with."""
        return self.screen is not None and _seekable_csv(self.reader)

    def _records_by_span(self) -> Iterator[Record]:
        """The file's records, read span by span in this process (as :func:`_read_span` reads a
        span); from a span that ends inside a quoted value on, the rest of the file in one reading
        (as :meth:`_rest`)."""
        reader = cast(CSVReader, self.reader)
        start, line, per_line = reader.data_start()
        self._position = start
        for span in spans(reader.path, start, line, self.options.batch_size * per_line):
            part = reader.span(span.start, span.stop, span.first_line)
            try:
                records = list(part.records())
                ran_out = part.ran_out and not span.last
            finally:
                part.close()
            if ran_out:  # not cut where a record starts: its records are not the file's
                yield from self._rest_records(span)
                return
            self._position = span.stop
            yield from records

    def _cut(self, records: Iterator[Record]) -> Iterator[list[Record]]:
        size = self.options.batch_size
        batch: list[Record] = []
        clock = time.perf_counter
        while True:
            t0 = clock()
            try:
                for record in records:
                    batch.append(record)
                    if len(batch) >= size:
                        break
            finally:
                self.timings["read"] += clock() - t0
            if not batch:
                return
            yield batch
            batch = []

    def _read_on(self, bytes_read: int) -> bool:
        """After a batch: the progress callback; whether to read on (not past ``max_errors``)."""
        if self.progress is not None:
            self.progress(ImportProgress(self.report.rows, bytes_read, self.reader.total_bytes))
        if self.options.max_errors is not None and self.report.rejected >= self.options.max_errors:
            self.report.stopped_early = True
            return False
        return True

    # -- the file read by the workers, in spans -------------------------------------------
    def _spanned(self, workers: int) -> CSVReader | None:
        """The reader whose file the validation workers read themselves, in spans (a CSV file, not
        standard input, with workers); None: this process reads the records (:meth:`_batches`)."""
        reader = self.reader
        if not (workers and _seekable_csv(reader)):
            return None
        if self.screen is not None and self._has_rows():
            return None  # an import into stored rows: the fingerprint screen reads each row's cells first
        return reader

    def _has_rows(self) -> bool:
        """Whether the table holds any row (an import into an empty table has nothing to screen)."""
        with self.crm.unit(readonly=True) as uow:
            return uow.conn.execute(select(self.table.c.id).limit(1)).first() is not None

    def _spans(self, reader: CSVReader) -> Iterator[Span]:
        """The file after its header in spans of about a batch's bytes (cut where records start)."""
        start, line, per_line = reader.data_start()
        self._position = start
        parts = spans(reader.path, start, line, self.options.batch_size * per_line)
        clock = time.perf_counter
        while True:
            t0 = clock()
            part = next(parts, None)
            self.timings["read"] += clock() - t0
            if part is None:
                return
            yield part

    def _rest(self, span: Span) -> Iterator[list[Record]]:
        """The batches of the records from ``span`` on, read in this process (the span ends inside a
        quoted value: not where a record starts, so the workers cannot read on from there)."""
        return self._cut(self._rest_records(span))

    def _rest_records(self, span: Span) -> Iterator[Record]:
        """The records from ``span`` on to the end of the file, in one reading."""
        reader = cast(CSVReader, self.reader).span(span.start, None, span.first_line)
        try:
            for record in reader.records():
                self._position = span.start + reader.bytes_read
                yield record
        finally:
            reader.close()

    def _rebatched(self, parts: Iterable[tuple[list[Record], list[Any], int | None]]
                   ) -> Iterator[tuple[list[Record], list[Any]]]:
        """Validated spans in batches of ``batch_size`` records, as :meth:`_batches` cuts the file."""
        size = self.options.batch_size
        records: list[Record] = []
        results: list[Any] = []
        for part_records, part_results, stop in parts:
            if stop is not None:
                self._position = stop
            records += part_records
            results += part_results
            while len(records) >= size:
                batch, checked = records[:size], results[:size]
                del records[:size], results[:size]
                self.report.rows += size
                yield batch, checked
                if not self._read_on(self._position):
                    return
        if records:
            self.report.rows += len(records)
            yield records, results
            self._read_on(self._position)

    # -- one batch -----------------------------------------------------------------
    def _reject(self, line: int, column: str | None, reason: str, values: Any) -> None:
        self._rejected.append((line, column, reason, _unpacked(values)))

    def _flush_rejects(self) -> None:
        """Report a batch's rejected rows in file order."""
        self._rejected.sort(key=lambda r: r[0])
        for line, column, reason, values in self._rejected:
            self.report.add_error(RowError(line, column, reason))
            if self.rejects is not None:
                self.rejects.write(line, column, reason, values)
        self._rejected = []

    def _reject_all(self, line: int, issues: Iterable[tuple[str | None, str]], values: Any) -> None:
        """One rejected row with every issue: columns and reasons joined by "; "."""
        issues = list(issues)
        if len(issues) == 1:
            self._reject(line, issues[0][0], issues[0][1], values)
            return
        self._reject(line, "; ".join(str(c or "") for c, _ in issues), "; ".join(
            f'column "{c}": {r}' if c else r for c, r in issues), values)

    def _write(self, uow: Any, batch: list[Record], results: list[Any]) -> None:
        t0 = time.perf_counter()
        earning, uow.earn_points = uow.earn_points, self.options.earn
        try:
            self._write_batch(uow, batch, results)
            if uow.dialect == "sqlite":
                # The batch's audit record joins the chain now, in the same transaction (rolled back
                # with it), not at the commit: an all-or-nothing import of a million rows otherwise
                # holds every new id as a Python int until then (about 40 MB).  The chain is the same
                # (order, times, hashes).  SQLite only: its writers are serial anyway, where on a
                # server the chain's head would stay locked for the rest of the import.
                uow.audit.flush()
        finally:
            uow.earn_points = earning  # a unit joined from a caller gets its own setting back
            self._flush_rejects()
            self.timings["write"] += time.perf_counter() - t0

    def _write_batch(self, uow: Any, batch: list[Record], results: list[Any]) -> None:
        settled: tuple[list[int], list[int]] = ([], [])  # the screen's unchanged rows: ids, lines
        if self.screen is not None:
            batch, results, hit_ids, hit_lines = self.screen.settle(batch, results, self.written, self._key_of,
                                                                    self._check_here)
            settled = (hit_ids, hit_lines)
        items: list[_Item] = []
        folding = self.key == "email"
        # Sealed addresses are matched exactly, through the blind index (docs/privacy.md): the key
        # is the address as stored, not folded.  A bound row's email is sealed already; the cipher
        # remembers what the workers sealed, so opening it again costs a look-up.
        cipher = cipher_of(uow.conn.dialect) if folding and sealed(uow.conn.dialect, "email") else None
        for record, result in zip(batch, results):
            line, values, problem = record
            if problem is not None:
                self._reject(line, problem[0], problem[1], values)
                continue
            row, issues, references = result
            key = row[self.key_index] if row is not None else self.checker.key_value(_unpacked(values))
            if folding and key is not None:
                if cipher is None:
                    key = _fold(uow.dialect, key)
                elif key.startswith(MARK):
                    key = cipher.open("email", key)
            items.append(_Item(line, values, row, issues, references, key))
        if not items and not settled[0]:
            return
        user = USER_FIELDS.get(self.kind)
        if user is not None:  # owners (assignees) are users, given by login or email (crmcore.application.users)
            given = items
            rows = [item.row for item in given] if self.stamp is not None else None
            items = import_owners(uow, items, self.columns.index(user), lambda item, why: self._reject(
                item.line, self.checker.column_of(user), why, item.values))
            if rows is not None and items is not given:
                _unstamp_resolved(given, rows, cast(Stamp, self.stamp).slot)
        validate_hook = f"validate_{self.kind}"
        hooked = self.crm.plugins.has_impls(validate_hook)
        # Plain customers on the SQLite bulk path: nothing to resolve or re-shape.
        plain = self.binder is not None and self.kind == "customer" and self.key == "external_id" and not hooked
        claimed: dict[Any, int] = {}
        absent: set[Any] = set()  # keys no stored row has (the comparison's query just looked)
        if plain:  # rows equal to their stored record cost one comparison (re-importing a file)
            items = self._drop_unchanged(uow, items, claimed, absent, settled)
        existing = self._existing(uow, {i.key for i in items if i.key is not None and i.key not in absent})
        owners = self._external_id_owners(uow, items) if self.key != "external_id" else {}
        resolved = self._resolve_references(uow, items)
        claimed_ext: dict[str, int] = {}
        inserts: list[tuple[int, Any, _Row]] = []
        updates: list[tuple[_Item, Any]] = []
        # Deal rows without their key: matched to stored deals after the loop, in one query.
        same_deal = self.kind == "deal" and not self.options.allow_duplicates
        keyless_deals: list[tuple[_Item, dict[str, Any]]] = []
        for item in items:
            if plain and item.issues is None and item.key not in claimed and item.key not in existing:
                if item.key is not None:
                    claimed[item.key] = item.line
                assert item.row is not None, "check() gives a row when it finds no issues"
                inserts.append((item.line, item.values, item.row))
                continue
            if item.key is not None:
                if item.key in claimed:
                    self._reject(item.line, self._key_column(), f"duplicate {self.key} {item.key!r}: "
                                 f"line {claimed[item.key]} of this file has it too", item.values)
                    continue
                matches = existing.get(item.key)
                if matches:
                    if len(matches) > 1:
                        ids = ", ".join(str(m["id"]) for m in matches[:5])
                        self._reject(item.line, self._key_column(), f"{self.key} {item.key!r} matches "
                                     f"{len(matches)} existing {self.kind}s (ids {ids}); use --key external_id",
                                     item.values)
                        continue
                    earlier = self.written.get(matches[0]["id"])
                    if earlier is not None:
                        self._reject(item.line, self._key_column(), f"duplicate {self.key} {item.key!r}: "
                                     f"line {earlier} of this file has it too", item.values)
                        continue
                    claimed[item.key] = item.line
                    updates.append((item, matches[0]))
                    continue
                claimed[item.key] = item.line
            if item.issues:
                self._reject_all(item.line, item.issues, item.values)
                continue
            assert item.row is not None, "check() gives a row when it finds no issues"
            row = dict(zip(self.columns, item.row))
            problems = self._apply_references(row, item.references or {}, resolved) if item.references or (
                self.kind != "customer") else []
            ext = row["external_id"]
            if ext is not None and self.key != "external_id":
                problems += self._external_id_problem(ext, owners, claimed_ext, None)
                claimed_ext.setdefault(ext, item.line)
            if not problems and hooked:
                problems = self._hook_issues(uow, validate_hook, row, None, item.references)
            if problems:
                self._reject_all(item.line, problems, item.values)
                continue
            if same_deal and item.key is None:
                keyless_deals.append((item, row))
                continue
            insert_row: _Row = row
            if self.binder is not None:  # bound values in the statement's order
                insert_row = item.row if self.kind == "customer" else tuple(row[c] for c in self.columns)
            inserts.append((item.line, item.values, insert_row))
        if keyless_deals:
            matched, unmatched = self._same_deals(uow, keyless_deals)
            updates += matched
            self.report.matched += len(matched)
            inserts += [(item.line, item.values, row) for item, row in unmatched]
            inserts.sort(key=lambda insert: insert[0])  # file order, as without matching
        filling: set[int] = set()
        if self.door is not None and inserts:
            inserts, door_updates = self._door(uow, inserts)
            updates += door_updates
            if self.door == "merge":
                filling = {id(item) for item, _ in door_updates}
        if inserts:
            self._insert(uow, inserts)
        changed = []
        for item, match in updates:
            prepared = self._prepare_update(uow, item, match, resolved, owners, claimed_ext,
                                            fill_only=id(item) in filling)
            if prepared is not None:
                changed.append((item, *prepared))
        if changed:
            self._update(uow, changed)

    def _key_column(self) -> str:
        return self.checker.column_of(self.key)

    def _door(self, uow: Any, inserts: list[tuple[int, Any, _Row]]
              ) -> tuple[list[tuple[int, Any, _Row]], list[tuple[_Item, Any]]]:
        """The door check for a batch's new customer rows (one query per exact key): rows that look
        like a stored customer, or like an earlier row of this import, are skipped, turned into an
        update (or a fill of the empty fields: merge) of that customer, or added anyway, as
        ``--on-duplicate`` says; each is reported with its line."""
        duplicates = self.crm.duplicates
        # The exact keys of this batch's new rows so far: a later row with one is a duplicate too.  Rows
        # of earlier batches are in the database already, where the query finds them (memory stays flat).
        seen: dict[tuple[str, Any], int] = {}
        # A new row's external id is in no stored customer when rows are matched by it: no query for it.
        exact = [k for k in duplicates.settings.exact if not (k == "external_id" == self.key)]
        if self._door_clean(uow, inserts, exact):
            return inserts, []
        needed = {"attributes" if k.startswith("attributes.") else k for k in exact}
        positions = {name: self.columns.index(name) for name in needed}
        parsed: dict[str, Any] = {}  # attributes JSON text -> dict, shared by equal texts (only read)
        rows = [_as_columns(positions, row, parsed) for _, _, row in inserts]
        cipher = cipher_of(uow.conn.dialect)
        if cipher is not None:  # the bulk path's bound values are sealed already: compare the values
            for columns in rows:
                for name in DOOR_SEALED:
                    if isinstance(value := columns.get(name), str) and value.startswith(MARK):
                        columns[name] = cipher.open(name, value)
        stored = duplicates.matches_many(uow, rows, exact)
        wanted = sorted({m.customer_id for found in stored.values() for m in found if m.customer_id is not None})
        full = {r.id: r._mapping for r in _where_in(uow, [self.table], self.table.c.id, wanted)} if (
            self.door in ("update", "merge") and wanted) else {}
        kept: list[tuple[int, Any, _Row]] = []
        door_updates: list[tuple[_Item, Any]] = []
        action = {"skip": "skipped", "add": "added", "update": "updated", "merge": "merged"}[self.door or "add"]
        for (line, values, row), columns, index in zip(inserts, rows, range(len(inserts))):
            keys: list[tuple[str, Any]] = []
            earlier: int | None = None  # the line of the first key (in exact's order) an earlier row has
            for key in exact:
                value = _door_key(key, columns)
                if value is not None:
                    keys.append((key, value))
                    if earlier is None:
                        earlier = seen.get((key, value))
            matches = stored.get(index, [])
            if not matches and earlier is None:
                kept.append((line, values, row))
                for k in keys:
                    seen.setdefault(k, line)
                continue
            # A customer the acting user cannot see is matched but not named (no id, no name).
            ids = [m.customer_id for m in matches if m.customer_id is not None]
            said = describe_matches(matches) or f"looks like line {earlier} of this file"
            if self.door == "add":
                self.report.add_duplicate(line, "added", said, ids)
                kept.append((line, values, row))
                continue
            if self.door in ("update", "merge") and len(matches) == 1 and matches[0].visible and earlier is None \
                    and self.written.get(ids[0]) is None:
                self.report.add_duplicate(line, action, said, ids)
                door_updates.append((_Item(line, values, None, None, None, None), full[ids[0]]))
                continue
            why = said
            if self.door in ("update", "merge"):
                why += (" (several customers: merge them first, or --on-duplicate add)" if len(matches) > 1
                        else " (not yours to update)" if matches and not matches[0].visible
                        else " (an earlier row of this file is that customer)")
            self.report.add_duplicate(line, "skipped", why, ids)
            self.report.skipped += 1
        return kept, door_updates

    def _door_clean(self, uow: Any, inserts: list[tuple[int, Any, _Row]], exact: list[str]) -> bool:
        """Whether the door check has nothing to say about any row of ``inserts`` (the SQLite bulk
        path's bound rows, no sealed field, only column keys): no two rows share a value of an exact
        key, and no live customer has any of their values (one query per key).  Then every row is
        kept, as :meth:`_door`'s loop would keep it (no match, no earlier row), without building a
        dict of columns per row; otherwise (or when not sure) that loop decides, row by row."""
        if self.binder is None or cipher_of(uow.conn.dialect) is not None:
            return False
        if not all(key in self.columns and key not in ("attributes", "id") for key in exact):
            return False
        rows = list(map(operator.itemgetter(2), inserts))
        for key in exact:
            # As _door_key compares them: the address lower-cased, empty as none (in C: a batch's rows).
            values: list[Any] = list(filter(None, map(operator.itemgetter(self.columns.index(key)), rows)))
            if key == "email":
                values = list(map(str.lower, values))
            if not values:
                continue
            if len(set(values)) != len(values):  # a row like an earlier one of the batch
                return False
            if self.crm.duplicates.any_stored(uow, key, values):
                return False
        return True

    def _drop_unchanged(self, uow: Any, items: list[_Item], claimed: dict[Any, int],
                        absent: set[Any], settled: tuple[list[int], list[int]]) -> list[_Item]:
        """The batch without its rows that equal their stored record (the SQLite bulk path).

        A good row's bound values (what an insert would store) are compared
        with the stored row's values as the database holds them (one query
        per batch, no entity built): equal in every column but the time
        stamps means the import changes nothing, so the row counts as
        unchanged without the per-row update path (no write, no audit record,
        as there).  Anything else -- a difference, an archived record, a key
        seen earlier in the file, a key matching several rows -- stays in the
        batch for the general path, which updates, rejects or reports it.
        Asking ``authorize`` for ``KIND.update`` once per batch keeps a
        policy's refusal of updates fatal for unchanged rows too.  ``settled``:
        the ids and lines of the rows the fingerprint screen found unchanged
        (:mod:`crmcore.io.fingerprint`), counted with these.

        An unchanged row whose stored import fingerprint is not the row's gets
        it (one executemany): the next import finds the row without validating it.

        The keys the query found no row for go into ``absent``: the batch's
        look-up of existing records need not ask for them again (a new file's
        batch then costs one query by key, not two).  SQLite compares the key
        column exactly (binary collation), so a row found has the key asked.
        """
        same_ids, same_lines = settled
        keys = {i.key for i in items if i.key is not None and i.issues is None}
        kept = items
        if keys:
            kept = self._drop_equal(uow, items, keys, claimed, absent, same_ids, same_lines)
        unchanged = len(same_ids)
        self.written.mark_many(same_ids, same_lines)
        if unchanged:
            self.crm.authorize(f"{self.kind}.update", None)
            self.report.unchanged += unchanged
        return kept

    def _drop_equal(self, uow: Any, items: list[_Item], keys: set[Any], claimed: dict[Any, int], absent: set[Any],
                    same_ids: list[int], same_lines: list[int]) -> list[_Item]:
        """:meth:`_drop_unchanged`'s comparison: the items kept; the equal ones' ids and lines appended."""
        stamp = self.stamp
        stored: dict[Any, list[tuple[Any, ...]]] = {}
        compared = self._compared()
        key_at = 1 + compared.index(self.key_index)
        columns = self._compared_select(uow)
        # PostgreSQL runs READ COMMITTED: a change another session commits after this read is not
        # in the comparison, so a digest is written only on the row version read (its xmin).
        # (SQLite: the import's unit holds the write lock; MariaDB keeps no digests.)
        versioned = stamp is not None and uow.dialect == "postgresql"
        if versioned:
            columns = [*columns, _ROW_VERSION]
        end = -2 if versioned else -1  # the digest's place; the compared columns are 1..end
        for row in _where_in(uow, columns, self.table.c[self.key], keys, raw=True):
            stored.setdefault(row[key_at], []).append(row)
        absent.update(keys - stored.keys())
        if not stored:
            return items
        kept = []
        stamps: list[dict[str, Any]] = []  # unchanged rows whose stored fingerprint is not theirs
        slot = stamp.slot if stamp is not None else -1
        # The compared bound values as one tuple: a C-level comparison with the stored row's.
        pick = operator.itemgetter(*compared) if len(compared) > 1 else (lambda row: (row[compared[0]],))
        written = self.written
        for item in items:
            matches = stored.get(item.key) if item.issues is None else None
            if (matches is None or len(matches) > 1 or item.key in claimed
                    or written.get(matches[0][0]) is not None):
                kept.append(item)
                continue
            match = matches[0]
            row = cast(tuple[Any, ...], item.row)
            if pick(row) != match[1:end]:
                kept.append(item)
                continue
            claimed[item.key] = item.line
            same_ids.append(match[0])
            same_lines.append(item.line)
            # No digest: none is kept (a row whose owner this process resolved, no stamp at all).
            if stamp is not None and (digest := row[slot]) is not None and digest != match[end]:
                stamps.append({"_id": match[0], "digest": digest, "_version": match[-1]} if versioned
                              else {"_id": match[0], "digest": digest})
        if stamps:
            statement = update(self.table).where(self.table.c.id == bindparam("_id"))
            if versioned:
                statement = statement.where(_ROW_VERSION == bindparam("_version"))
            uow.conn.execute(statement.values({fingerprint.COLUMN: bindparam("digest")}), stamps)
        return kept

    # -- look-ups (one query per batch and kind) ---------------------------------------
    def _existing(self, uow: Any, keys: set[Any]) -> dict[Any, list[Any]]:
        found: dict[Any, list[Any]] = {}
        if not keys:
            return found
        if self.key == "email" and sealed(uow.conn.dialect, "email"):  # exact, through the blind index
            ordered = sorted(keys, key=str)
            for start in range(0, len(ordered), 500):
                query = select(self.table).where(self.table.c.email.in_(ordered[start:start + 500]))
                for row in uow.conn.execute(query):
                    found.setdefault(row._mapping["email"], []).append(row._mapping)
            return found
        if self.key == "email":  # addresses match whatever their case
            column = _folded_email(self.table)
            for row in _where_in(uow, [self.table], column, keys):
                found.setdefault(_fold(uow.dialect, row._mapping["email"]), []).append(row._mapping)
            return found
        for row in _where_in(uow, [self.table], self.table.c[self.key], keys):
            found.setdefault(row._mapping[self.key], []).append(row._mapping)
        return found

    def _same_deals(self, uow: Any, candidates: list[tuple[_Item, dict[str, Any]]]
                    ) -> tuple[list[tuple[_Item, Any]], list[tuple[_Item, dict[str, Any]]]]:
        """Deal rows without an external id: (those that are a stored deal, with it; the new ones).

        A row is the stored deal with the same customer, title, amount and
        closed_at; one query per batch (the batch's customers, within its
        closed_at range).  Stored deals are taken once each, in id order, and
        none this import already wrote: so a file holding two identical rows
        adds two deals the first time and matches both the next time.
        """
        table = self.table
        closed = [row["closed_at"] for _, row in candidates]
        moments = [c for c in closed if c is not None]
        in_range = [table.c.closed_at.between(min(moments), max(moments))] if moments else []
        when = or_(*in_range, table.c.closed_at.is_(None)) if None in closed else in_range[0]
        found: dict[tuple[Any, ...], list[Any]] = {}
        customer_ids = {row["customer_id"] for _, row in candidates}
        for match in _where_in(uow, [table], table.c.customer_id, customer_ids, when):
            found.setdefault(_deal_identity(match._mapping), []).append(match._mapping)
        stored = {identity: deque(sorted(rows, key=lambda r: r["id"])) for identity, rows in found.items()}
        matched: list[tuple[_Item, Any]] = []
        new: list[tuple[_Item, dict[str, Any]]] = []
        for item, row in candidates:
            pool = stored.get(_deal_identity(row))
            while pool and self.written.get(pool[0]["id"]) is not None:
                pool.popleft()
            if pool:
                matched.append((item, pool.popleft()))
            else:
                new.append((item, row))
        return matched, new

    def _external_id_owners(self, uow: Any, items: list[_Item]) -> dict[str, int]:
        ext_ids = {i.row[self.ext_index] for i in items if i.row is not None and i.row[self.ext_index]}
        column = self.table.c.external_id
        return {e: i for i, e in _where_in(uow, [self.table.c.id, column], column, ext_ids)}

    def _external_id_problem(self, ext: str, owners: dict[str, int], claimed: dict[str, int],
                             own_id: int | None) -> list[tuple[str, str]]:
        column = self.checker.column_of("external_id")
        owner = owners.get(ext)
        if owner is not None and owner != own_id:
            earlier = self.written.get(owner)
            if earlier is not None:
                return [(column, f"duplicate external_id {ext!r}: line {earlier} of this file has it too")]
            return [(column, f"external_id {ext!r} already belongs to {self.kind} {owner}")]
        if ext in claimed:
            return [(column, f"duplicate external_id {ext!r}: line {claimed[ext]} of this file has it too")]
        return []

    def _resolve_references(self, uow: Any, items: list[_Item]) -> dict[str, dict[Any, Any]]:
        """ref kind -> reference text (or id) -> id / (id, customer_id) / error message."""
        resolved: dict[str, dict[Any, Any]] = {"customer": {}, "contact": {}, "customer_id": {}, "contact_id": {}}
        if self.kind == "customer":
            return resolved
        wanted: dict[str, set[Any]] = {k: set() for k in resolved}
        for item in items:
            refs = item.references or {}
            for name, value in refs.items():
                wanted[name].add(value)
            if item.row is not None:
                row = dict(zip(self.columns, item.row))
                if "customer" not in refs and row.get("customer_id"):
                    wanted["customer_id"].add(row["customer_id"])
                if "contact" not in refs and row.get("contact_id"):
                    wanted["contact_id"].add(row["contact_id"])
            elif "customer" not in refs or "contact" not in refs:
                given = self.checker.given(_unpacked(item.values))
                for field in ("customer_id", "contact_id"):
                    raw = given.fields.get(field)
                    number = _as_id(str(raw)) if isinstance(raw, (str, int)) else None
                    if number is not None:
                        wanted[field].add(number)
        resolved["customer"] = _resolve(uow, customers, wanted["customer"], "customer", with_owner=False)
        resolved["contact"] = _resolve(uow, contacts, wanted["contact"], "contact", with_owner=True)
        resolved["customer_id"] = _by_id(uow, customers, wanted["customer_id"], "customer", with_owner=False)
        resolved["contact_id"] = _by_id(uow, contacts, wanted["contact_id"], "contact", with_owner=True)
        _refuse_archived(uow, resolved)
        return resolved

    def _apply_references(self, row: dict[str, Any], refs: dict[str, str],
                          resolved: dict[str, dict[Any, Any]]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.kind == "customer":
            return problems
        if "customer" in refs:
            found = resolved["customer"].get(refs["customer"])
            if isinstance(found, str) or found is None:
                problems.append((self.checker.column_of("customer_id", refs), found or "unknown customer"))
            else:
                row["customer_id"] = found
        elif row.get("customer_id") is not None:
            found = resolved["customer_id"].get(row["customer_id"])
            if isinstance(found, str) or found is None:
                problems.append((self.checker.column_of("customer_id", refs), found or "unknown customer"))
        if self.kind != "interaction":
            return problems
        contact = None
        if "contact" in refs:
            contact = resolved["contact"].get(refs["contact"])
            column = self.checker.column_of("contact_id", refs)
        elif row.get("contact_id") is not None:
            contact = resolved["contact_id"].get(row["contact_id"])
            column = self.checker.column_of("contact_id", refs)
        else:
            return problems
        if isinstance(contact, str) or contact is None:
            problems.append((column, contact or "unknown contact"))
        else:
            contact_id, owner = contact
            row["contact_id"] = contact_id
            if not problems and owner != row["customer_id"]:
                problems.append((column, f"contact {contact_id} belongs to customer {owner}, "
                                         f"not to customer {row['customer_id']}"))
        return problems

    def _hook_issues(self, uow: Any, hook: str, row: dict[str, Any], previous: Any,
                     refs: dict[str, str] | None) -> list[tuple[str, str]]:
        entity = self.service.repo(uow).from_row(row)
        issues = []
        for result in self.crm.plugins.call(hook, uow=uow, previous=previous, **{self.kind: entity}):
            if not result:
                continue
            for item in ([result] if isinstance(result, (str, tuple)) else result):
                field, message = item if isinstance(item, tuple) else ("*", str(item))
                issues.append((self.checker.column_of(field, refs), message))
        return issues

    # -- writing -------------------------------------------------------------------
    def _insert(self, uow: Any, inserts: list[tuple[int, Any, _Row]]) -> None:
        try:
            with uow.conn.begin_nested():
                ids = self._insert_rows(uow, [row for _, _, row in inserts])
                self._after_insert(uow, inserts, ids)
            return
        except HookError:
            raise
        except _REFUSED as exc:
            if len(inserts) == 1:
                line, values, _ = inserts[0]
                self._reject(line, None, f"the database refused the row: {_db_message(exc)}", values)
                return
        # One row at a time, to find the ones the database refuses.
        landed: list[tuple[int, Any, _Row]] = []
        ids = []
        for line, values, row in inserts:
            try:
                with uow.conn.begin_nested():
                    ids.extend(self._insert_rows(uow, [row]))
                    landed.append((line, values, row))
            except _REFUSED as exc:
                self._reject(line, None, f"the database refused the row: {_db_message(exc)}", values)
        if landed:
            self._after_insert(uow, landed, ids)

    def _insert_rows(self, uow: Any, rows: list[Any]) -> list[int]:
        if self.binder is not None:
            return self._insert_bound(uow, rows)
        ids: list[int | None] = [row["id"] for row in rows]
        new = [i for i, id in enumerate(ids) if id is None]
        if len(new) < len(rows):  # --key id: rows that bring their own id
            given = [rows[i] for i, id in enumerate(ids) if id is not None]
            uow.conn.execute(insert(self.table), given)
            self.explicit_ids = True
            if uow.dialect == "postgresql":
                uow.conn.execute(text(
                    f"SELECT setval(pg_get_serial_sequence('{self.table.name}', 'id'), "
                    f"(SELECT GREATEST(MAX(id), 1) FROM {self.table.name}))"))
        if new:
            values = [{k: v for k, v in rows[i].items() if k != "id"} for i in new]
            for i, new_id in zip(new, self._insert_returning_ids(uow, values)):
                ids[i] = new_id
        return ids  # type: ignore[return-value]

    def _insert_bound(self, uow: Any, rows: list[tuple[Any, ...]]) -> list[int]:
        if uow.dialect == "postgresql":  # COPY, after drawing the ids from the sequence
            if self._copy_target is None:
                self._copy_target = copy_target(uow.conn, self.table, self.columns)
            return copy_new_rows(uow.conn, self.table, self.columns, rows, self._copy_target)
        uow.conn.exec_driver_sql(self.binder.sql, rows)  # type: ignore[union-attr]
        return self._sqlite_ids(uow, len(rows))

    def _sqlite_ids(self, uow: Any, count: int) -> list[int]:
        return sqlite_new_ids(uow.conn, self.table, count)

    def _insert_returning_ids(self, uow: Any, values: list[dict[str, Any]]) -> list[int]:
        """executemany, and the new ids in parameter order."""
        return insert_returning_ids(uow.conn, self.table, values)

    def _after_insert(self, uow: Any, inserts: list[tuple[int, Any, _Row]], ids: list[int]) -> None:
        self.written.mark_many(ids, [line for line, _, _ in inserts])
        rows = [row for _, _, row in inserts]
        # With a binder rows are bound tuples, else dicts: either way a column's values by one C-level
        # getter (a binder's tuples by position, dicts by name).
        bound = self.binder is not None
        # Keyless deals are matched again on a re-import (see _same_deals): nothing to warn about.
        warn_keyless = self.kind != "deal" or self.options.allow_duplicates
        if warn_keyless:
            self.keyless += list(map(operator.itemgetter(self.key_index if bound else self.key), rows)).count(None)
        if self.kind == "customer":  # the flag is the "*" marketing decision (crmcore.application.consents)
            if bound and uow.dialect == "sqlite" and ids and ids == list(range(ids[0], ids[0] + len(ids))):
                new_flags_set(uow, ids[0], ids[-1])  # the batch's new rows are those ids: chosen in SQL
            else:
                flag = operator.itemgetter(self.columns.index("consent_marketing") if bound else "consent_marketing")
                chosen = list(compress(ids, map(flag, rows)))
                if bound and uow.dialect == "postgresql":  # COPY's new rows (ids just drawn): no stored decision
                    new_ids_flags_set(uow, chosen)
                else:
                    flags_set(uow, chosen)
        event = f"on_{self.kind}s_imported"
        if self.kind == "deal" or self.crm.plugins.has_impls(event):
            repo = self.service.repo(uow)
            # Dict rows: _binder() gives no bound tuples to deals or when a batch event has listeners.
            stored = [repo.from_row({**cast(dict[str, Any], row), "id": id}) for (_, _, row), id in zip(inserts, ids)]
            if self.kind == "deal":  # stage history, buyers become customers, loyalty: as for add_many
                self.crm.deals.after_bulk_insert(uow, stored)
            uow.fire(event, **{f"{self.kind}s": stored})
        self.report.inserted += len(inserts)
        uow.audit.batch(f"{self.kind}.import", self.kind, ids)

    def _prepare_update(self, uow: Any, item: _Item, match: Any, resolved: dict[str, dict[Any, Any]],
                        owners: dict[str, int], claimed_ext: dict[str, int],
                        fill_only: bool = False) -> tuple[Any, Any] | None:
        """(previous, candidate) for a row that updates ``match``; None if rejected or unchanged.

        Blank cells keep the stored value; given ones replace it, and the
        result is validated as a whole (e.g. a deal's stage and lost reason).
        ``fill_only`` (``--on-duplicate merge``): given cells fill only the stored record's empty
        fields, tags are added, custom fields the record has keep their value.
        """
        repo = self.service.repo(uow)
        previous = repo.from_row(match)
        if getattr(previous, "archived_at", None) is not None:
            # Refused, not restored: bringing a record back is a decision (crm KIND restore), not a side
            # effect of a file that happens to name it.
            self._reject(item.line, self._key_column() if item.key is not None else None,
                         f"{self.kind} {previous.id} is archived: restore it first "
                         f"(crm {self.kind} restore {previous.id}) or leave this row out", item.values)
            return None
        given: Given = self.checker.given(_unpacked(item.values))
        if given.issues:
            self._reject_all(item.line, given.issues, item.values)
            return None
        row_tuple, issues, refs = self.checker.check_given(given, unstructure(previous))
        if issues:
            self._reject_all(item.line, issues, item.values)
            return None
        row = dict(zip(self.checker.table_columns, row_tuple))  # type: ignore[arg-type]
        problems = self._apply_references(row, refs or {}, resolved) if refs else []
        user = USER_FIELDS.get(self.kind)
        if user is not None and row[user] not in (None, getattr(previous, user)):
            problems += owner_problems(uow, row, self.checker.column_of(user, refs), user)
        ext = row["external_id"]
        if ext is not None and self.key != "external_id":
            problems += self._external_id_problem(ext, owners, claimed_ext, previous.id)
            claimed_ext.setdefault(ext, item.line)
        if problems:
            self._reject_all(item.line, problems, item.values)
            return None
        candidate = repo.from_row(row)
        if fill_only:
            candidate = _fill_blanks(previous, candidate)
        if getattr(candidate, "archived_at", None) is not None:  # archiving has its own use case and audit
            self._reject(item.line, self.checker.column_of("archived_at"), f"{self.kind} {previous.id} is not "
                         f"archived: an import does not archive it (crm {self.kind} delete {previous.id} does)",
                         item.values)
            return None
        try:
            if self.kind == "deal":  # stage moves stamp closed_at, reset the probability
                candidate = self.service.prepare(uow, candidate, previous, check_references=False)
            elif self.crm.plugins.has_impls(f"validate_{self.kind}"):
                hook_issues = self._hook_issues(uow, f"validate_{self.kind}", repo.to_row(candidate), previous,
                                                refs)
                if hook_issues:
                    self._reject_all(item.line, hook_issues, item.values)
                    return None
            self.crm.authorize(f"{self.kind}.update", candidate)
        except ValidationError as exc:
            self._reject_all(item.line, [(self.checker.column_of(f, refs), m) for f, m in exc.issues], item.values)
            return None
        self.written.mark(previous.id, item.line)
        if _same(repo.to_row(candidate), repo.to_row(previous)):
            self.report.unchanged += 1
            return None
        return previous, candidate

    def _update(self, uow: Any, updates: list[tuple[_Item, Any, Any]]) -> None:
        """One executemany UPDATE for the batch, then the per-entity update events."""
        repo = self.service.repo(uow)
        try:
            with uow.conn.begin_nested():
                self._update_rows(uow, repo, [c for _, _, c in updates])
                for _, previous, candidate in updates:
                    self.service.after_update(uow, candidate, previous)
            uow.audit.batch(f"{self.kind}.import-update", self.kind, [c.id for _, _, c in updates])
            self.report.updated += len(updates)
            return
        except HookError:
            raise
        except _REFUSED:
            pass
        for item, previous, candidate in updates:
            try:
                with uow.conn.begin_nested():
                    self._update_rows(uow, repo, [candidate])
                    self.service.after_update(uow, candidate, previous)
                uow.audit.batch(f"{self.kind}.import-update", self.kind, [candidate.id])
                self.report.updated += 1
            except _REFUSED as exc:
                self._reject(item.line, None, f"the database refused the row: {_db_message(exc)}", item.values)

    def _update_rows(self, uow: Any, repo: Any, entities: list[Any]) -> None:
        columns = [c for c in self.checker.table_columns if c not in ("id", "created_at")]
        if self._update_statement is None:
            self._update_statement = update(self.table).where(self.table.c.id == bindparam("_id")).values(
                {c: bindparam(c) for c in columns})
        rows = []
        for entity in entities:
            row = repo.to_row(entity)
            rows.append({"_id": row["id"], **{c: row[c] for c in columns}})
        uow.conn.execute(self._update_statement, rows)


def _unstamp_resolved(items: list[_Item], rows: list[Any], slot: int) -> None:
    """No digest for the rows whose bound values ``import_owners`` changed (an owner given by an
    address, stored as the login): the stored row would not be what the cells bind to, and the
    address may name another user, or none, by the next import (crmcore.io.fingerprint)."""
    for item, row in zip(items, rows):
        if item.row is not row and item.row is not None:
            item.row = item.row[:slot] + (None,) + item.row[slot + 1:]


def _as_columns(positions: dict[str, int], row: Any, parsed: dict[str, Any]) -> dict[str, Any]:
    """The column values named by ``positions`` of a row to insert (a dict, or bound values: then
    at those positions), custom fields as a dict (the SQLite bulk path binds them as JSON text;
    ``parsed`` remembers each text's dict, which callers only read)."""
    if isinstance(row, dict):
        values = {name: row.get(name) for name in positions}
    else:
        values = {name: row[index] for name, index in positions.items()}
    text = values.get("attributes")
    if isinstance(text, str):
        found = parsed.get(text)
        if found is None:
            if len(parsed) > 1000:
                parsed.clear()
            found = parsed[text] = json.loads(text)
        values["attributes"] = found
    return values


#: PostgreSQL's version of a row (its creating transaction), as text.
_ROW_VERSION: Any = literal_column("CAST(xmin AS text)")


def _seekable_csv(reader: Reader) -> TypeGuard[CSVReader]:
    """Whether ``reader`` reads a CSV file that can be read again in spans (:func:`spans`): a
    regular file, not standard input, a pipe (``<(zcat file.gz)``) or a FIFO, which can be read
    only once, from the start."""
    if not isinstance(reader, CSVReader) or str(reader.path) == "-":
        return False
    try:
        return stat.S_ISREG(os.stat(reader.path).st_mode)
    except OSError:
        return False


def _door_key(key: str, columns: dict[str, Any]) -> Any:
    """An exact key's value in a row, as the door check compares it (email case-blind)."""
    if key == "email":
        return columns["email"].lower() if columns.get("email") else None
    if key.startswith("attributes."):
        value = (columns.get("attributes") or {}).get(key.removeprefix("attributes."))
        return None if value in (None, "") else str(value)
    return columns.get(key) or None


def _fill_blanks(previous: Any, candidate: Any) -> Any:
    """``candidate`` with every field ``previous`` has a value for taken from ``previous`` (tags
    united, custom fields added): an import row merged into a stored customer fills its gaps."""
    changes: dict[str, Any] = {}
    for field in attrs.fields(type(previous)):
        old = getattr(previous, field.name)
        if field.name == "tags":
            changes["tags"] = tuple(dict.fromkeys((*old, *candidate.tags)))
        elif field.name == "attributes":
            changes["attributes"] = {**candidate.attributes, **old}
        elif old not in (None, "") and not isinstance(old, bool):
            changes[field.name] = old
    return attrs.evolve(candidate, **changes)


def _deal_identity(row: Any) -> tuple[Any, ...]:
    """What makes a deal without an external id the same deal (Decimal 12.00 == 12.0000)."""
    return row["customer_id"], row["title"], row["amount"], row["closed_at"]


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return all(new[k] == old[k] for k in new if k != "updated_at")


def _resolve(uow: Any, table: Any, refs: set[str], what: str, with_owner: bool) -> dict[str, Any]:
    """Reference text -> id (or (id, customer_id)) by external id, then email, then id."""
    found: dict[str, Any] = {}
    if not refs:
        return found
    columns = [table.c.id, table.c.customer_id] if with_owner else [table.c.id]

    def value(row: Any) -> Any:
        return (row[0], row[1]) if with_owner else row[0]

    for row in _where_in(uow, [table.c.external_id, *columns], table.c.external_id, refs):
        found[row[0]] = value(row[1:])
    emails: dict[str, list[str]] = {}
    for ref in refs - found.keys():
        if "@" in ref:
            try:
                emails.setdefault(_fold(uow.dialect, normalize_email(ref)), []).append(ref)
            except ValueError:
                found[ref] = f"{ref!r} is neither a {what} external id nor a valid email address"
    if emails:
        matches: dict[str, list[Any]] = {}
        for row in _where_in(uow, [table.c.email, *columns], _folded_email(table), emails):
            matches.setdefault(_fold(uow.dialect, row[0]), []).append(value(row[1:]))
        for email, originals in emails.items():
            hits = matches.get(email, [])
            for ref in originals:
                if len(hits) == 1:
                    found[ref] = hits[0]
                elif len(hits) > 1:
                    ids = ", ".join(str(h[0] if with_owner else h) for h in hits[:5])
                    found[ref] = (f"{len(hits)} {what}s have the email {email!r} (ids {ids}); "
                                  f"refer to the {what} by external id")
    numbers = {number: r for r in refs - found.keys() if (number := _as_id(r)) is not None}
    if numbers:
        by_id = _by_id(uow, table, set(numbers), what, with_owner)
        for number, ref in numbers.items():
            if not isinstance(by_id.get(number), str):
                found[ref] = by_id[number]
    for ref in refs - found.keys():
        found[ref] = f"no {what} has the external id, email or id {ref!r}"
    return found


def _refuse_archived(uow: Any, resolved: dict[str, dict[Any, Any]]) -> None:
    """References to an archived customer, or to a contact of one, become row errors (one query per
    batch): a new record for an archived customer is refused, as ``crm.contacts.add`` refuses it."""
    owners = {v if isinstance(v, int) else v[1] for found in resolved.values() for v in found.values()
              if isinstance(v, (int, tuple))}
    archived = {row[0] for row in _where_in(uow, [customers.c.id], customers.c.id, owners,
                                            customers.c.archived_at.is_not(None))} if owners else set()
    if not archived:
        return
    for found in resolved.values():
        for ref, value in found.items():
            customer = value if isinstance(value, int) else value[1] if isinstance(value, tuple) else None
            if customer in archived:
                found[ref] = (f"customer {customer} is archived: restore it first (crm customer restore {customer})"
                              if isinstance(value, int) else
                              f"contact {value[0]} belongs to customer {customer}, which is archived")


def _by_id(uow: Any, table: Any, ids: set[int], what: str, with_owner: bool) -> dict[int, Any]:
    found: dict[int, Any] = {}
    columns = [table.c.id, table.c.customer_id] if with_owner else [table.c.id]
    for row in _where_in(uow, columns, table.c.id, ids):
        found[row[0]] = (row[0], row[1]) if with_owner else row[0]
    for id in ids - found.keys():
        found[id] = f"{what} {id} does not exist"
    return found


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _folded_email(table: Any) -> Any:
    """``lower(email)`` of ``table``: for customers the indexed ``email_key`` (the database keeps it
    equal to ``lower(email)`` for every unsealed address), an index seek instead of a scan."""
    return table.c.email_key if "email_key" in table.c else func.lower(table.c.email)


def _fold(dialect: str, email: str) -> str:
    """An email address as the database's lower() sees it (SQLite's folds ASCII only)."""
    return email.translate(_ASCII_LOWER) if dialect == "sqlite" else email.lower()


def _where_in(uow: Any, columns: list[Any], column: Any, values: Iterable[Any],
              *where: Any, raw: bool = False) -> Iterator[Any]:
    """Rows whose ``column`` is one of ``values``, a few thousand values per query.

    A plain ``IN (?, ?, ...)`` costs SQLAlchemy ~6 us per value to render, as
    much as the insert itself; SQLite gets the values as one JSON array
    (``json_each``) and PostgreSQL as one array parameter (``= ANY``).
    """
    ordered = sorted(_comparable(column, values), key=str)
    kinds = set(map(type, ordered))
    joined = uow.dialect == "sqlite" and _searchable(column) and len(kinds) == 1
    # PostgreSQL: one search of the column's index per value (bulk.probe_each) in a table large
    # enough for that to pay, where ``= ANY`` would scan the whole table for a batch's keys.
    # A unique column (one row a search), values and column of a plain type only.
    probed = (uow.dialect == "postgresql" and _searchable(column, unique=True) and kinds in ({str}, {int})
              and isinstance(column.type, (String, Integer)) and not isinstance(column.type, TypeDecorator)
              and probes_pay(uow.conn, column.table, min(len(ordered), IN_CHUNK)))
    if joined or probed:  # each value once: the join gives a row once per value equal to its key
        ordered = list(dict.fromkeys(ordered))
    for start in range(0, len(ordered), IN_CHUNK):
        chunk = ordered[start:start + IN_CHUNK]
        if probed:
            query = probe_each(columns, column, pg_array_text(chunk), *where)
            yield from fetch_rows(uow.conn, query) if raw else uow.conn.execute(query)
            continue
        if joined:
            # A join from the values to the column's index: one search per value, where IN first
            # sorts the values into a list of its own (three times the searches' cost).
            each = func.json_each(literal(json.dumps(chunk))).table_valued("value")
            query = select(*columns).select_from(each.join(column.table, column == each.c.value)).where(*where)
            yield from fetch_rows(uow.conn, query) if raw else uow.conn.execute(query)
            continue
        if uow.dialect == "sqlite":
            each_value: Select[Any] = select(literal_column("value")).select_from(
                func.json_each(literal(json.dumps(chunk))))
            condition = column.in_(each_value.scalar_subquery())
        elif uow.dialect == "postgresql":
            condition = any_of(type_coerce(column, String()) if isinstance(column.type, NullType) else column, chunk)
        else:
            condition = column.in_(chunk)
        query = select(*columns).where(condition, *where)
        # raw: the driver's own tuples, values as stored (no result processing)
        yield from fetch_rows(uow.conn, query) if raw else uow.conn.execute(query)


def _searchable(column: Any, unique: bool = False) -> bool:
    """Whether ``column`` is a table's column that leads an index of its table (or is its key);
    ``unique``: that is the whole of a unique index or constraint (at most one row per value)."""
    table = getattr(column, "table", None)
    if not isinstance(table, Table) or table.c.get(column.key) is not column:
        return False
    if column.primary_key and len(table.primary_key.columns) == 1:
        return True
    keys = [list(index.columns) for index in table.indexes
            if len(index.columns) and (not unique or index.unique and _plain_index(index))]
    keys += [list(c.columns) for c in table.constraints if isinstance(c, UniqueConstraint) and len(c.columns)]
    return any(key[0] is column and (len(key) == 1 or not unique) for key in keys)


def _plain_index(index: Any) -> bool:
    """Whether ``index`` is over its columns as they are, for every row: no expression (SQLAlchemy
    lists an expression's column among the index's columns) and no ``WHERE`` (a partial index)."""
    return all(isinstance(e, Column) for e in index.expressions) and not any(
        options.get("where") is not None for options in index.dialect_options.values())


def _comparable(column: Any, values: Iterable[Any]) -> Iterator[Any]:
    """The values a column can hold (others match nothing, and some make the database raise).

    NUL characters (PostgreSQL refuses them in text), unpaired surrogates (not
    encodable) and integers beyond the column's range (an overflow before the
    query runs) cannot be stored, so no row has them.
    """
    if isinstance(values, (set, frozenset, list, tuple)) and values and set(map(type, values)) == {str}:
        joined = "".join(values)  # a batch's keys: one C-level check of them all for the common case
        if "\x00" not in joined and joined.isascii():
            return iter(values)
    return _each_comparable(column, values)


def _each_comparable(column: Any, values: Iterable[Any]) -> Iterator[Any]:
    """:func:`_comparable`, value by value."""
    low, high = integer_range(column.type) if isinstance(column.type, Integer) else (-(1 << 63), (1 << 63) - 1)
    for value in values:
        if isinstance(value, str):
            if "\x00" in value or not (value.isascii() or _encodable(value)):  # ASCII always encodes
                continue
        elif isinstance(value, int) and not low <= value <= high:
            continue
        yield value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_id(text: str) -> int | None:
    """A reference or cell as a row id, or None (too many digits for any id)."""
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 20 else None


def _db_message(exc: Exception) -> str:
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())[:300]


# -- validation, in process or in a pool of workers --------------------------------------

#: The sealed fields the door check compares by value (it opens them; a worker hands them back).
DOOR_SEALED = ("email", "phone")


#: SQLite's page cache while an import writes (KiB; SQLite's default is 2,000).  The indexes of
#: keys that arrive in no order (sealed values' blind indexes in ``email_key`` / ``phone_key``,
#: but also addresses and numbers that are not sorted) take each insert at a random page: past
#: a few tens of thousands of rows they outgrow 2 MB, and each insert reads a page back from the
#: file and spills a dirty one to the WAL (a 100,000-row sealed import: 2.3 s of 5.3 s of the
#: writing process in executemany, 1.7 s with 16 or with 64 MB).  16 MB holds both key indexes
#: of about 150,000 rows; more would hold the whole transaction's pages, and an import's peak
#: memory counts (a plain 100k import's process tree: 179 MB before, 188 MB with this, 197 MB
#: with 64 MB; the goal is 200 MB).
IMPORT_CACHE_KIB = 16384


@contextmanager
def _roomy_cache(uow: Any) -> Iterator[None]:
    """:data:`IMPORT_CACHE_KIB` of page cache for the unit's SQLite connection while the block
    runs, then its own setting again (a pooled connection does not keep the pages)."""
    if uow.dialect != "sqlite":
        yield
        return
    # The driver's connection: a PRAGMA is no statement of the unit's transaction, and the setting
    # goes back also after a failed statement (which SQLAlchemy's connection would refuse to follow).
    conn = uow.conn.connection.dbapi_connection
    before = conn.execute("PRAGMA cache_size").fetchone()[0]
    # Negative: KiB; positive: pages (4 KiB by default).  Never made smaller.
    if (-before if before < 0 else before * 4) >= IMPORT_CACHE_KIB:
        yield
        return
    conn.execute(f"PRAGMA cache_size = -{IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        # Dirty pages stay until the commit writes them: shrinking drops only clean ones.
        conn.execute(f"PRAGMA cache_size = {int(before)}")


#: Whether an import in this process froze the objects alive before it (:func:`_relax_gc`); a
#: worker forked meanwhile inherits it.
_import_froze = False


def _relax_gc() -> tuple[tuple[int, int, int], bool]:
    """Fewer cyclic-GC passes while millions of short-lived rows go by (~15% of the time otherwise).

    Rows are acyclic tuples, dicts and strings, freed by reference counting;
    objects alive before the import are frozen out of the collector's scans
    (unless the application froze objects itself: then its freeze is left alone).
    Whether any object is frozen is known without counting them where start-up
    (:mod:`crmcore.startup`) or an import (for its forked workers) froze them:
    counting walks the whole permanent generation, ~10 ms after start-up.
    """
    global _import_froze
    state = gc.get_threshold()
    froze = not (startup.frozen or _import_froze) and gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
        _import_froze = True
    gc.set_threshold(max(state[0], 100_000), state[1], state[2])
    return state, froze


def _restore_gc(saved: tuple[tuple[int, int, int], bool]) -> None:
    global _import_froze
    state, froze = saved
    gc.set_threshold(*state)
    if froze:
        gc.unfreeze()
        _import_froze = False


_worker_checker: RowChecker | None = None
_worker_reader: CSVReader | None = None
_worker_stamp: Stamp | None = None  # sets each good row's import fingerprint (crmcore.io.fingerprint)


def _init_worker(checker: RowChecker, reader: CSVReader | None = None, stamp: Stamp | None = None) -> None:
    global _worker_checker, _worker_reader, _worker_stamp
    _worker_checker, _worker_reader, _worker_stamp = checker, reader, stamp
    _relax_gc()


def _check_batch(packed: bytes) -> tuple[bytes, float, dict[str, list[str]]]:
    """A worker's validation of a batch: (the checked rows, pickled; CPU seconds; what it sealed).

    The rows go back pickled by the worker, and are unpickled when the batch is written: a
    result the pool unpickles on arrival (in the importing process's result-handler thread)
    holds its rows as objects, several times the bytes, while earlier batches are written."""
    started = time.process_time()
    checked, sealed = _check_rows(pickle.loads(packed))
    return checked, time.process_time() - started, sealed


class _SpanResult:
    """A worker's reading and validation of a :class:`~crmcore.io.readers.Span` (see :func:`_read_span`)."""

    __slots__ = ("lines", "problems", "checksum", "checked", "cpu", "sealed", "ran_out")

    def __init__(self, lines: array[int], problems: dict[int, tuple[Any, Any]], checksum: int | None,
                 checked: bytes, cpu: float, sealed: dict[str, list[str]], ran_out: bool):
        self.lines, self.problems, self.checksum, self.checked = lines, problems, checksum, checked
        self.cpu, self.sealed, self.ran_out = cpu, sealed, ran_out


def _read_span(span: Span) -> _SpanResult:
    """A worker reads the records of ``span`` (as the importing process's reader would: the same
    code, from the same line number) and validates the good ones.

    Back go each record's line (4 or 8 bytes), the unreadable records' cells and problems by
    position, the CRC-32 of the span's bytes and the good records' checked rows pickled: the
    importing process neither reads, decodes nor pickles a cell.  The good records' cells stay
    here: the importing process reads them again from the file for a row that needs them (a
    rejection, an update; :class:`_SpanCells`), which no row of a clean import does.
    ``ran_out``: the span ended inside a quoted value, so its records are not the file's (the
    importing process reads on from its start itself)."""
    started = time.process_time()
    reader = cast(CSVReader, _worker_reader).span(span.start, span.stop, span.first_line)
    checksum = reader.span_checksum()
    lines = array("q")
    problems: dict[int, tuple[Any, Any]] = {}
    good = []
    for line, values, problem in reader.records():
        if problem is not None:
            problems[len(lines)] = (values, problem)
        else:
            good.append(values)
        lines.append(line)
    if reader.ran_out and not span.last:
        return _SpanResult(array("q"), {}, None, b"", time.process_time() - started, {}, True)
    checked, sealed = _check_rows(good)
    return _SpanResult(lines, problems, checksum, checked, time.process_time() - started, sealed, False)


def _check_rows(rows: list[Any]) -> tuple[bytes, dict[str, list[str]]]:
    """(the checked rows, pickled; what was sealed) of the rows' cells: each row's list is dropped
    as it is checked, so a worker's peak is one batch, not two."""
    checker = cast(RowChecker, _worker_checker)
    stamp = _worker_stamp
    checked_rows = []
    for index, values in enumerate(rows):
        checked_rows.append(checker.check(values) if stamp is None else stamp(values, checker.check(values)))
        rows[index] = None  # a row's cells go as its result comes: the worker's peak is one batch, not two
    del rows
    checked = pickle.dumps(checked_rows, protocol=pickle.HIGHEST_PROTOCOL)
    # The addresses and numbers this worker sealed go back with the rows: the door check compares
    # them (not the birthdays and custom fields: a third or more of the sealings, pickled for nothing).
    cipher = checker.binder.cipher if checker.binder is not None else None
    return checked, cipher.hand_over(DOOR_SEALED) if cipher is not None else {}


class _PackedBatch:
    """The cells of a batch's rows as pickled for the validation workers, unpickled again in the
    importing process only if a row needs them (a rejection, an update): about 190 bytes a row
    against 1.3 KB as lists of strings, while the batch waits for its workers."""

    __slots__ = ("data", "rows")

    def __init__(self, data: bytes):
        self.data = data
        self.rows: list[Any] | None = None

    def row(self, index: int) -> Any:
        if self.rows is None:
            self.rows = pickle.loads(self.data)
        return self.rows[index]


class _SpanCells(_PackedBatch):
    """The good records' cells of a span a worker read (:func:`_read_span`), read again from the
    file, as the worker read them, the first time a row needs them; the span's CRC-32 tells the
    bytes are the ones the worker validated (a file changed during its import is an error)."""

    __slots__ = ("reader", "span", "checksum")

    def __init__(self, reader: CSVReader, span: Span, checksum: int | None):
        super().__init__(b"")
        self.reader, self.span, self.checksum = reader, span, checksum

    def row(self, index: int) -> Any:
        if self.rows is None:
            span = self.span
            again = self.reader.span(span.start, span.stop, span.first_line)
            try:
                if again.span_checksum() != self.checksum:
                    raise SourceError(f"{self.reader.name}: the file changed while it was being imported "
                                      f"(lines {span.first_line} and on read differently)")
                self.rows = [values for _, values, problem in again.records() if problem is None]
            finally:
                again.close()
        return self.rows[index]


class _Packed(tuple[_PackedBatch, int]):
    """A row's cells in a :class:`_PackedBatch` (see :func:`_unpacked`): ``_Packed((batch, index))``.

    A tuple, so a span's rows get theirs from C (:func:`_span_records`), not one ``__init__`` each."""

    __slots__ = ()


def _unpacked(values: Any) -> Any:
    """A record's cells: the list itself, or a packed row's list unpickled."""
    return values[0].row(values[1]) if type(values) is _Packed else values


def _span_records(done: _SpanResult, box: _PackedBatch) -> tuple[list[Record], list[Any]]:
    """A span's records (good ones with their cells packed in ``box``, as :func:`_pack` leaves
    them) and results."""
    problems = done.problems
    if not problems:  # every record good (the usual span): its records built in C, as the Record tuples they are
        packed = map(_Packed, zip(repeat(box), range(len(done.lines))))
        records = list(map(tuple.__new__, repeat(Record), zip(done.lines, packed, repeat(None))))
        return records, pickle.loads(done.checked)
    records = []
    checked = iter(pickle.loads(done.checked))
    results: list[Any] = []
    index = 0
    for position, line in enumerate(done.lines):
        bad = problems.get(position)
        if bad is None:
            records.append(Record(line, _Packed((box, index)), None))
            results.append(next(checked))
            index += 1
        else:
            records.append(Record(line, bad[0], bad[1]))
            results.append(None)
    return records, results


def _pack(batch: list[Record]) -> tuple[bytes, list[Record]]:
    """(the good records' cells pickled, the batch with those records' cells as :class:`_Packed`):
    the pool would pickle them anyway, in this process's task-handler thread; pickling them here
    lets the importing process drop the lists while the batch is validated."""
    good = [r.values for r in batch if r.problem is None]
    data = pickle.dumps(good, protocol=pickle.HIGHEST_PROTOCOL)
    box = _PackedBatch(data)
    light = []
    index = 0
    for record in batch:
        if record.problem is None:
            record = Record(record.line, _Packed((box, index)), None)
            index += 1
        light.append(record)
    return data, light


_T = TypeVar("_T")
_END = object()  # the end of an iterator (None may be an item)


def _in_flight(items: Iterable[Any], send: Callable[[Any], _T], window: int) -> Iterator[_T]:
    """``send(item)`` of each item, in order, with up to ``window`` items sent before the one given
    back is used (so the workers keep busy while this process writes).  Only what ``send`` returns
    stays in flight: the item itself is dropped once sent."""
    pending: deque[_T] = deque()
    iterator = iter(items)
    while True:
        item = next(iterator, _END)
        if item is _END:
            break
        pending.append(send(item))
        del item
        if len(pending) >= window:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


class _Validation:
    """Runs :meth:`RowChecker.check` over batches, keeping order and at most a few batches in flight.

    The pool of workers starts with the first batch that has a row to validate: a re-import whose
    rows the fingerprint screen finds unchanged never forks it."""

    def __init__(self, checker: RowChecker, workers: int, timings: dict[str, float],
                 reader: CSVReader | None = None, stamp: Stamp | None = None):
        """``reader``: the workers can read spans of its file (:meth:`run_spans`); ``stamp``: the
        workers set each good row's import fingerprint."""
        self.checker, self.workers, self.timings, self.reader, self.stamp = checker, workers, timings, reader, stamp
        self.pool: Any = None

    def _pool(self) -> Any:
        if self.pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self.pool = context.Pool(self.workers, initializer=_init_worker, initargs=(self.checker, self.reader, self.stamp))
        return self.pool

    def run_spans(self, parts: Iterable[Span], rest: Callable[[Span], Iterable[list[Record]]]
                  ) -> Iterator[tuple[list[Record], list[Any], int | None]]:
        """(records, their results, the bytes read so far) of each span, read and validated by the
        workers (:func:`_read_span`), in file order, a few spans in flight.

        A span that ends inside a quoted value is not cut where a record starts: from its start
        on, ``rest(span)`` reads the batches in this process and :meth:`run` validates them
        (the bytes read are then None: the caller's reader counts them).
        """
        cipher = self.checker.binder.cipher if self.checker.binder is not None else None

        def send(span: Span) -> tuple[Span, AsyncResult[_SpanResult]]:
            return span, self._pool().apply_async(_read_span, (span,))

        for span, handle in _in_flight(parts, send, 2 * self.workers + 1):
            t0 = time.perf_counter()
            done = handle.get()
            self.timings["validate_wait"] += time.perf_counter() - t0
            self.timings["validate"] += done.cpu
            if done.ran_out:  # the later spans' results (still being computed) are left to the pool
                for batch, results in self.run(rest(span)):
                    yield batch, results, None
                return
            if done.sealed and cipher is not None:
                cipher.take_over(done.sealed)
            cells = _SpanCells(cast(CSVReader, self.reader), span, done.checksum)
            yield (*_span_records(done, cells), span.stop)

    def _check(self, values: Any) -> Any:
        result = self.checker.check(values)
        return result if self.stamp is None else self.stamp(values, result)

    def run(self, batches: Iterable[list[Record]], screen: Screen | None = None
            ) -> Iterator[tuple[list[Record], list[Any]]]:
        """Each batch with its results: ``check``'s, or :class:`~crmcore.io.fingerprint.Unchanged`
        where ``screen`` found the row unchanged (not validated), or None for a record the reader
        found bad."""
        cipher = self.checker.binder.cipher if self.checker.binder is not None else None
        if self.workers <= 0:
            for batch in batches:
                marks = screen(batch) if screen is not None else None
                t0 = time.perf_counter()
                results: list[Any] = [
                    None if r.problem else mark if mark is not None else self._check(r.values)
                    for r, mark in zip(batch, marks or [None] * len(batch))]
                if cipher is not None:  # the door check's look-ups of what the batch sealed (as from a worker)
                    cipher.take_over(cipher.hand_over(DOOR_SEALED))
                self.timings["validate"] += time.perf_counter() - t0
                yield batch, results
            return

        def send(upcoming: list[Record]
                 ) -> tuple[list[Record | None], list[Record], list[Any] | None, AsyncResult[Any] | None]:
            """(the records the screen found unchanged, in their places (None elsewhere), the records sent
            to the workers (cells packed), the screen's marks, the workers' answer).  Not the batch
            itself: while it is in flight, the cells of the rows sent wait pickled, not as lists (_pack)."""
            marks = screen(upcoming) if screen is not None else None
            screened: list[Record | None] = []
            sent = upcoming
            if marks is not None:
                screened = [r if m is not None else None for r, m in zip(upcoming, marks)]
                sent = [r for r, m in zip(upcoming, marks) if m is None]
            handle = None
            if any(r.problem is None for r in sent):
                packed, sent = _pack(sent)
                handle = self._pool().apply_async(_check_batch, (packed,))
            return screened, sent, marks, handle

        for screened, sent, marks, handle in _in_flight(batches, send, 2 * self.workers + 1):
            checked: list[Any] = []
            if handle is not None:
                t0 = time.perf_counter()
                packed_rows, cpu, sealed = handle.get()
                checked = pickle.loads(packed_rows)
                if sealed and cipher is not None:
                    cipher.take_over(sealed)
                self.timings["validate_wait"] += time.perf_counter() - t0
                self.timings["validate"] += cpu
            results = []
            it = iter(checked)
            for record in sent:
                results.append(None if record.problem else next(it))
            if marks is None:
                yield sent, results
                continue
            # The screened rows back in their places, in file order.
            others = iter(zip(sent, results))
            records: list[Record] = []
            merged: list[Any] = []
            for unsent, mark in zip(screened, marks):
                if unsent is None:
                    record, result = next(others)
                    records.append(record)
                    merged.append(result)
                else:
                    records.append(unsent)
                    merged.append(mark)
            yield records, merged

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None


__all__ = ["IdLines", "ImportFailed", "ImportOptions", "ImportProgress", "ImportReport", "RowError",
           "import_file", "normalize_key"]
