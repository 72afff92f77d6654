"""Import fingerprints: a re-imported row equal to its stored customer, known without validating it.

A re-import of an unchanged file used to validate every row again (email, phone, binding: about
30 us of CPU a row) only to find it equal to the stored row.  Each customer an import writes, or
finds unchanged, keeps ``customers.import_digest`` (revision ``0028_import_digest``)::

    D = H(context, the row's source cells)

*context* is everything besides the cells that decides what an import stores (:func:`context`:
the file's columns and their mapping and value tables, the key, the configuration validation
reads, the dialect and the sealed fields, :data:`RULES_VERSION` and the installed versions of the
normalising libraries).  H is BLAKE2b (16 bytes, 32 hex characters) over :func:`_encoded`
(``marshal``: types kept apart, unicode exact, None distinct from ""; ``repr`` for values marshal
does not take).

A digest is only ever written where the stored row equals what the import binds from those
cells: the insert of a new row, and a row ``_Import._drop_unchanged`` compared equal (every bound
column but the time stamps and the digest; a row whose owner the importing process resolved from
an address gets none).  From then on the database keeps it true: a trigger (revision
``0029_import_digest_trigger``) forgets the digest when an UPDATE of the row writes no new one,
so a change of the customer by any path (an update, a merge, an archive, plain SQL) makes the
next import take the general path, which writes the digest again when it finds the row
unchanged.  A change of the context changes D.  The importer trusts no digest of a database
without the trigger.

The validation workers compute D of each good row from its cells (:class:`Stamp`).  Before a
batch goes to the workers, the importing process reads the batch's stored digests by key (one
query) and computes D of the cells (:class:`Screen`); a match means that validation would give
the stored values again, so the row is unchanged without validating it.  What D does not cover
is checked apart: a birthday "in the future" depends on the CRM's clock (checked against today),
the owner must still be a user's login (one query), and at write time the row must be the only
one of its batch with its key and its customer not written by an earlier batch of the import
(:meth:`Screen.settle`); otherwise it is validated then.
"""

from __future__ import annotations

import marshal
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from hashlib import blake2b
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .mapping import FIELD
from .readers import Record
from .rows import Binder, RowChecker

#: Bump when a normaliser or check of imported customer values changes what it gives for the
#: same cell: every stored digest then differs, and the next import validates each row again.
#: 2: the digest of the cells alone (revision 0029_import_digest_trigger).
RULES_VERSION = 2
#: The libraries whose versions are part of the context (normalisation of phones, emails, countries).
LIBRARIES = ("phonenumbers", "email-validator", "pycountry")
#: Off: every row is validated (tests compare a re-import with and without the shortcut).
SHORTCUT = True
#: The bound column that holds the digest (last of the customers table).
COLUMN = "import_digest"
#: The trigger that forgets a changed row's digest (revision 0029_import_digest_trigger).
TRIGGER = "customers_forget_import_digest"


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def context(checker: RowChecker, binder: Binder, dialect: str) -> bytes:
    """What, besides a row's cells, decides what an import of the row stores (see the module)."""
    config = checker.validator.config
    mapping = checker.mapping
    cipher = binder.cipher
    parts = (
        RULES_VERSION, sys.version, [(name, _version(name)) for name in LIBRARIES],
        checker.kind, checker.key, checker.columns, checker._plan,
        mapping.explicit, mapping.values, mapping.ignore_unknown, sorted(mapping.custom_fields.items()),
        repr(checker.validator.custom_fields), config.phone_region, config.timezone, config.default_currency,
        config.custom_fields, dialect, binder.columns,
        None if cipher is None else (sorted(cipher.fields), sorted(cipher.custom)),
    )
    return repr(parts).encode("utf-8", "surrogatepass")


def _encoded(cells: Any) -> bytes:
    """A row's cells as bytes: equal bytes only for equal values (of equal types).

    ``marshal`` (version 2: no back-references, so the bytes do not depend on which values are
    the same object) for the plain types of CSV cells; other values (an XLSX cell's datetime) by
    ``repr``, behind a byte marshal never starts with.
    """
    try:
        return marshal.dumps(cells, 2)
    except ValueError:
        return b"r" + repr(cells).encode("utf-8", "surrogatepass")


class Stamp:
    """Sets a checked row's digest in its bound values (the validation workers and the importing
    process alike); picklable (the hash state is made where it is used)."""

    def __init__(self, prefix: bytes, slot: int):
        self.prefix, self.slot = prefix, slot
        self._base: blake2b | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_base": None}

    def base(self) -> "blake2b":
        """The hash state after the context (copied for each row)."""
        if self._base is None:
            self._base = blake2b(self.prefix, digest_size=16)
        return self._base

    def digest(self, cells: Any) -> str:
        """D of a row's cells."""
        hashed = self.base().copy()
        hashed.update(_encoded(cells))
        return hashed.hexdigest()

    def __call__(self, cells: Any, result: Any) -> Any:
        """``checker.check(cells)``'s result, a good row's bound values with their digest."""
        row = result[0]
        if row is None:
            return result
        slot = self.slot
        return row[:slot] + (self.digest(cells),) + row[slot + 1:], result[1], result[2]


class Unchanged:
    """A record the screen found equal to its stored customer (not validated)."""

    __slots__ = ("id", "key")

    def __init__(self, id: int, key: Any):
        self.id, self.key = id, key


def compared_columns(binder: Binder) -> list[int]:
    """The positions of the bound columns an unchanged row equals (not time stamps, not the digest)."""
    return [i for i, c in enumerate(binder.columns) if c not in ("created_at", "updated_at", COLUMN)]


#: What :class:`Screen` reads of a stored row, in this order (:data:`COLUMN` is the digest).
STORED = ("id", "key", "owner", "birthday", COLUMN)


class Screen:
    """Finds a batch's unchanged rows before validation (see the module).

    ``read(keys)`` gives the stored rows with those keys, each as :data:`STORED` (the key column's
    value for "key"); ``logins(names)`` the names that are users' logins; ``opened(value)`` a
    sealed birthday's value.
    """

    def __init__(self, checker: RowChecker, stamp: Stamp,
                 read: Callable[[set[Any]], Iterable[tuple[Any, ...]]],
                 logins: Callable[[set[str]], set[str]], opened: Callable[[str], str] | None):
        self.checker, self.stamp = checker, stamp
        self.read, self.logins, self.opened = read, logins, opened
        self.cell = self._key_cell()

    def _key_cell(self) -> int | None:
        """The position of the key's cell in a CSV row when a plain strip finds the key as
        validation normalises it (``normalize_key``; a wrong find is a miss, never a wrong hit)."""
        plan = self.checker._plan or []
        at = [p[0] for p in plan if p[2] == self.checker.key]
        if len(at) != 1 or self.checker.key in self.checker.mapping.values:
            return None
        return at[0] if all(p[1] == FIELD for p in plan if p[0] == at[0]) else None

    def _keys(self, batch: list[Record]) -> dict[Any, list[int]]:
        """The batch's records by key, as far as the raw cells tell (records with no key left out)."""
        wanted: dict[Any, list[int]] = {}
        cell, key_value = self.cell, self.checker.key_value
        for index, record in enumerate(batch):
            if record.problem is not None:
                continue
            values = record.values
            if cell is not None and values.__class__ is list and (value := values[cell]).__class__ is str:
                key = value.strip() or None
            else:
                key = key_value(values)
            if key is not None:
                found = wanted.get(key)
                if found is None:
                    wanted[key] = [index]
                else:
                    found.append(index)
        return wanted

    def __call__(self, batch: list[Record]) -> list[Unchanged | None] | None:
        """Per record, :class:`Unchanged` or None (validate it); None when no record is unchanged."""
        wanted = self._keys(batch)
        if not wanted:
            return None
        found: list[tuple[int, tuple[Any, ...]]] = []
        copy = self.stamp.base().copy
        dumps = marshal.dumps
        for stored in self.read(set(wanted)):
            digest = stored[4]
            indices = wanted.get(stored[1]) if digest is not None else None
            if indices is None:
                continue
            for index in indices:
                cells = batch[index].values
                try:  # _encoded, inline: once a row
                    data = dumps(cells, 2)
                except ValueError:
                    data = _encoded(cells)
                hashed = copy()
                hashed.update(data)
                if hashed.hexdigest() == digest:
                    found.append((index, stored))
        if not found:
            return None
        found = self._still_valid(found)
        if not found:
            return None
        marks: list[Unchanged | None] = [None] * len(batch)
        for index, stored in found:
            marks[index] = Unchanged(stored[0], stored[1])
        return marks

    def _still_valid(self, found: list[tuple[int, tuple[Any, ...]]]) -> list[tuple[int, tuple[Any, ...]]]:
        """The found rows that validation would pass today too: the owner is still a user's login
        (import_owners), the birthday not after the CRM's today (the validator's check)."""
        owner_at, birthday_at, opened = 2, 3, self.opened
        owners = {stored[owner_at] for _, stored in found if stored[owner_at] is not None}
        users = self.logins(owners) if owners else set()
        today = self.checker.validator.today().isoformat()
        kept = []
        for index, stored in found:
            owner, birthday = stored[owner_at], stored[birthday_at]
            if owner is not None and owner not in users:
                continue
            if birthday is not None:
                if opened is not None:
                    birthday = opened(birthday)
                if birthday > today:
                    continue
            kept.append((index, stored))
        return kept

    def settle(self, batch: list[Record], results: list[Any], written: Any,
               key_of: Callable[[Record, Any], Any], check: Callable[[Any], Any]
               ) -> tuple[list[Record], list[Any], list[int], list[int]]:
        """A batch at write time: (its records and results without the unchanged rows, their
        customer ids, their lines).

        A screened row stays unchanged only if no other row of the batch has its key and no
        earlier batch of this import wrote its customer (``written``, the import's
        :class:`~crmcore.io.importer.IdLines`): the read that found it may predate that write,
        and the general path decides such rows by their order in the file.  Those are validated
        now (``check``) and go on with the rest.
        """
        hits = [i for i, result in enumerate(results) if result.__class__ is Unchanged]
        if not hits:
            return batch, results, [], []
        keys = [results[i].key for i in hits]
        ids = [results[i].id for i in hits]
        others = {key_of(r, m) for r, m in zip(batch, results) if m.__class__ is not Unchanged} if len(
            hits) < len(results) else set()
        if len(set(keys)) == len(keys) and others.isdisjoint(keys) and not written.any_marked(ids):
            if len(hits) == len(results):  # a batch of unchanged rows (an unchanged file)
                return [], [], ids, [record.line for record in batch]
            hit = set(hits)
            kept = [i for i in range(len(batch)) if i not in hit]
            return [batch[i] for i in kept], [results[i] for i in kept], ids, [batch[i].line for i in hits]
        # Some row shares its key or its customer: row by row.
        counted = Counter(m.key if m.__class__ is Unchanged else key_of(r, m) for r, m in zip(batch, results))
        kept_records: list[Record] = []
        kept_results: list[Any] = []
        ids, lines = [], []
        for record, result in zip(batch, results):
            if result.__class__ is Unchanged:
                if counted[result.key] == 1 and written.get(result.id) is None:
                    ids.append(result.id)
                    lines.append(record.line)
                    continue
                result = check(record.values)
            kept_records.append(record)
            kept_results.append(result)
        return kept_records, kept_results, ids, lines


__all__ = ["COLUMN", "RULES_VERSION", "SHORTCUT", "STORED", "Screen", "Stamp", "Unchanged", "compared_columns",
           "context"]
