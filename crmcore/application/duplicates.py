"""Duplicate customers (``crm.duplicates``): the door check and finding candidate pairs in bulk.

* :meth:`DuplicateService.matches` is the **door check**: the stored customers that share an exact
  key (``[duplicates] exact``: email whatever its case, the E.164 phone, the external id, a custom
  field such as a registration number) with a customer about to be added.  ``crm.customers.add``,
  the CLI, imports and the HTTP API ask it.
* :meth:`DuplicateService.find` lists **candidate pairs and clusters** over every customer:
  blocking in SQL (customers sharing an exact key are found by ``GROUP BY``; fuzzy candidates
  share the ``[duplicates] block`` columns, read in that order as one stream), scoring in Python
  with :mod:`rapidfuzz` (names as characters and as pinyin, company legal suffixes stripped).

How a pair scores (0..1): sharing an exact key gives ``0.7 + 0.3 * name similarity`` (+0.1 for
each further shared key, at most 1; -0.15 when both have an email address and the addresses
differ), so the same address under a differently spelt name still scores 1.0 while two people
sharing a family phone stay below the merge threshold; names both in Chinese characters are
compared as characters (homophones are different people); without an
exact key, ``0.9 * name similarity * (0.4 + 0.6 * the email local parts' similarity)`` (phone numbers
of one city share their first digits, so a near phone says nothing): at most 0.9, so such a pair is listed for a person to judge but never reaches the
defaults' merge score (0.95), and a common name (two 张伟 in one city with unrelated addresses) is
neither listed at the default ``min_score`` nor merged.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    String,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy.types import NullType

from ..config.duplicates import DuplicateSettings
from ..domain.entities import Customer, CustomerKind
from ..domain.errors import CRMError, DuplicateCustomer
from ..domain.matching import email_key, has_han, name_forms, name_similarity
from ..store import tables
from ..store.bulk import pg_array_text, probe_each, probes_pay, without_jit
from ..store.sealed import cipher_of, sealed

if TYPE_CHECKING:
    from ..app import CRM
    from .uow import UnitOfWork

customers = tables.customers
#: Customers per fuzzy block at most before it is split further by the name's first letters.
BLOCK_LIMIT = 2000
#: What a pair sharing a key but with two different email addresses loses.
CONFLICT = 0.15
#: Customers sharing one exact key at most for it to count (more: a placeholder such as ``noemail@...``).
EXACT_GROUP_LIMIT = 50
#: Rows read per round trip while streaming the fuzzy blocks.
STREAM_BATCH = 5000
#: The first key of the PostgreSQL advisory locks :meth:`DuplicateService.hold` takes (their second
#: key is the exact key's hash): its own key space, apart from the single-key job locks.
DOOR_LOCK_CLASS = 18
#: Seconds :meth:`DuplicateService.hold` waits on MariaDB for another unit holding the same key.
DOOR_LOCK_WAIT = 30
#: The columns a pair is scored on.
_COLUMNS = ("id", "kind", "name", "email", "phone", "external_id", "city", "region", "country", "updated_at")


@attrs.frozen
class Match:
    """A stored customer the door check found: its id and name, and the exact keys it shares.

    A customer the acting user may not see is matched too (a rep must not create a second record
    of another rep's customer) but never named: ``customer_id`` is None and ``name`` empty, and
    every such customer of one check is one match (how many there are is not said either)."""

    customer_id: int | None
    name: str
    fields: tuple[str, ...]

    @property
    def visible(self) -> bool:
        """Whether the acting user may see the customer (else nothing of it is said)."""
        return self.customer_id is not None

    def describe(self) -> str:
        """``customer 123 'Zhang Wei' (same email, phone)``, or for a customer the acting user
        cannot see ``an existing customer you cannot see has the same email``."""
        if self.customer_id is None:
            return f"an existing customer you cannot see has the same {', '.join(self.fields)}"
        return f"customer {self.customer_id} {self.name!r} (same {', '.join(self.fields)})"


def describe(matches: Sequence[Match], limit: int = 3) -> str:
    """What a check found, as a sentence: ``looks like customer 12 'Zhang Wei' (same email)``,
    ``an existing customer you cannot see has the same phone``, or both joined by ``; and ``."""
    seen = [m.describe() for m in matches if m.visible]
    parts = []
    if seen:
        more = f" and {len(seen) - limit} more" if len(seen) > limit else ""
        parts.append("looks like " + "; ".join(seen[:limit]) + more)
    parts += [m.describe() for m in matches if not m.visible]
    return "; and ".join(parts)


@attrs.frozen
class Pair:
    """Two customers that look alike: ``a < b``, a score 0..1 and what matched (``{"email": "same",
    "name": 0.93}``)."""

    a: int
    b: int
    score: float
    fields: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"a": self.a, "b": self.b, "score": round(self.score, 4), "fields": dict(self.fields)}


@attrs.frozen
class Cluster:
    """Customers linked by pairs at or above a score: their ids (ascending; the first is the oldest,
    the one a bulk merge keeps) and the pairs that link them."""

    ids: tuple[int, ...]
    pairs: tuple[Pair, ...]

    @property
    def score(self) -> float:
        """The weakest link's score."""
        return min(p.score for p in self.pairs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"ids": list(self.ids), "score": round(self.score, 4), "pairs": [p.as_dict() for p in self.pairs]}


class DuplicateService:
    """``crm.duplicates``: the door check and the search for candidate pairs."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    @property
    def settings(self) -> DuplicateSettings:
        """The ``[duplicates]`` table."""
        return self.crm.config.duplicates

    # -- the door ------------------------------------------------------------------------------
    def check(self, **fields: Any) -> builtins.list[Match]:
        """The customers a new customer with ``fields`` would duplicate (normalised as an add
        normalises them: ``check(email="ZHANG.WEI@example.com", phone="132-9141-7776")``).
        Asks ``authorize("customer.duplicates")``; every customer is compared, and one the acting
        user cannot see is reported without its id or name (see :class:`Match`)."""
        # A writing unit, as customers.add's: a read-only one scopes every select to what the
        # actor may see, and the door must compare every customer (unseen ones stay unnamed).
        with self.crm.unit() as uow:
            self.crm.authorize("customer.duplicates", None)
            fields.setdefault("name", "?")
            candidate = self.crm.validator.customer(self.crm.customers.build(fields))
            return self.matches(uow, candidate)

    def hold(self, uow: "UnitOfWork", **keys: str | None) -> None:
        """Serialise the door for these exact key values (``hold(uow, email=..., phone=...)``,
        normalised) until ``uow``'s transaction ends: another unit holding one of them waits here
        until this one has committed (or rolled back), and then finds what it stored.

        The check-then-add of a new customer is otherwise a race: two requests at once both look,
        both find nobody, both add.  No unique index can stop it (``on_duplicate="add"`` and the
        configured keys allow duplicates), so the keys are locked instead, in sorted order (two
        units holding several keys cannot deadlock): PostgreSQL a transaction-scoped advisory lock
        per key, after which every statement (read committed) sees the other's commit; MariaDB a
        named lock (``GET_LOCK``) on the unit's connection, released when its transaction has ended,
        taken before the unit's first read so its snapshot starts after the other's commit;
        SQLite nothing, as its write transactions are serial already (``BEGIN IMMEDIATE``).  An
        email address is held whatever its case."""
        names = sorted({f"{key}:{value.casefold() if key == 'email' else value}"
                        for key, value in keys.items() if value})
        dialect = uow.conn.dialect.name
        for name in names:
            digest = hashlib.sha256(name.encode("utf-8")).digest()
            if dialect == "postgresql":
                number = int.from_bytes(digest[:4], "big", signed=True)
                uow.conn.execute(select(func.pg_advisory_xact_lock(DOOR_LOCK_CLASS, number)))
            elif dialect in ("mysql", "mariadb"):
                lock = "crm.door." + digest.hex()[:40]
                if uow.conn.execute(select(func.get_lock(lock, DOOR_LOCK_WAIT))).scalar() != 1:
                    raise CRMError(f"another request adding a customer with this {name.partition(':')[0]} "
                                   f"held it for {DOOR_LOCK_WAIT} s; try again")
                uow.at_end(functools.partial(_release_lock, uow.conn, lock))

    def matches(self, uow: "UnitOfWork", customer: Customer) -> builtins.list[Match]:
        """The live (not archived) customers sharing an exact key with ``customer`` (already
        normalised), in id order, those the acting user cannot see as one unnamed :class:`Match`.

        One query over every customer, each key an index seek: ``email_key`` (the address
        lower-cased, or its blind index when addresses are sealed), ``phone`` (E.164, its blind
        index when sealed), ``external_id``; a custom-field key reads the JSON column.  Then one
        query for which of those the actor may see."""
        conditions = self._key_conditions(uow, customer)
        if not conditions:
            return []
        # Archived customers are skipped here, not in SQL: SQLite without statistics would rather
        # walk the archived_at index (every live customer) than seek the keys' indexes.
        query = select(customers).where(or_(*conditions))
        if customer.id is not None:
            query = query.where(customers.c.id != customer.id)
        # Unscoped: a customer the actor cannot see is still the same person.
        rows = [r for r in uow.conn.execute(query.order_by(customers.c.id).limit(200)).mappings()
                if r["archived_at"] is None][:20]
        found = {row["id"]: (row["name"], tuple(self._shared(customer, dict(row)))) for row in rows}
        return self._named(uow, {cid: (name, fields) for cid, (name, fields) in found.items() if fields})

    def matches_many(self, uow: "UnitOfWork", rows: Sequence[Mapping[str, Any]],
                     keys: Sequence[str] | None = None) -> dict[int, builtins.list[Match]]:
        """:meth:`matches` for a batch (new rows, as column values): index in ``rows`` -> matches,
        one query per exact key (``keys``: default ``[duplicates] exact``) and 5,000 rows (500
        phones when phones are sealed: each is compared by its blind index under every key)."""
        dialect = uow.conn.dialect
        found: dict[int, dict[int, tuple[str, list[str]]]] = {}
        for key in self.settings.exact if keys is None else keys:
            wanted: dict[Any, list[int]] = {}
            if (key == "email" and sealed(dialect, "email")) or (key == "phone" and sealed(dialect, "phone")):
                # _lookup_values of each row, with the cipher and the key's forms settled once per batch.
                lookup = _sealed_lookup(cipher_of(dialect), key)
                for index, row in enumerate(rows):
                    if given := row.get(key):
                        for value in lookup(given):
                            wanted.setdefault(value, []).append(index)
            else:  # what _lookup_values gives for a key that is not sealed: the one value, if any
                for index, row in enumerate(rows):
                    value = _key_value(key, row)
                    if value is not None:
                        wanted.setdefault(value, []).append(index)
            if not wanted:
                continue
            values = builtins.list(wanted)
            # Phones are looked up in phone_key (a sealed number's blind index, else the number; one
            # cached, indexed IN), not through the Sealed column's IN (a comparison per value and key).
            query = _batch_query(key, dialect.name)
            for start in range(0, len(values), 5000):
                chunk = values[start:start + 5000]
                params = _batch_params(dialect.name, chunk)
                for cid, name, value, archived_at in uow.conn.execute(query, params):
                    if archived_at is not None:  # skipped here, not in SQL: see matches()
                        continue
                    for index in wanted.get(value, ()):
                        labels = found.setdefault(index, {}).setdefault(cid, (name, []))[1]
                        if _label(key) not in labels:
                            labels.append(_label(key))
        visible = self._visible(uow, {cid for by_id in found.values() for cid in by_id})
        return {index: _matches(by_id, visible) for index, by_id in found.items()}

    def any_stored(self, uow: "UnitOfWork", key: str, values: Sequence[Any]) -> bool:
        """Whether any live customer has one of ``values`` under the exact ``key`` (values as
        :meth:`matches_many` looks them up for a key that is not sealed: the address lower-cased,
        the number, the text), with the same query, 5,000 values at a time.

        A bulk import asks this first for a batch whose rows share no key value: when it is False
        for every key, no row of the batch matches anybody, and no per-row work is needed.  A
        sealed key has other look-up values (blind indexes): it raises ValueError."""
        dialect = uow.conn.dialect
        if (key in ("email", "phone")) and sealed(dialect, key):
            raise ValueError(f"{key} is sealed: use matches_many")
        values = builtins.list(values)
        if dialect.name == "sqlite" and key in _INDEXED:
            query = _exists_query(key)
        elif dialect.name == "postgresql" and key in _INDEXED and probes_pay(uow.conn, customers, min(len(values), 5000)):
            with without_jit(uow.conn):  # the estimated cost is JIT's, the work a few milliseconds
                return self._any_live(uow, _probe_query(key), values)
        else:
            query = _batch_query(key, dialect.name)
        return self._any_live(uow, query, values)

    @staticmethod
    def _any_live(uow: "UnitOfWork", query: Any, values: builtins.list[Any]) -> bool:
        """:meth:`any_stored`'s look-ups, 5,000 values at a time."""
        for start in range(0, len(values), 5000):
            params = _batch_params(uow.conn.dialect.name, values[start:start + 5000])
            # Archived customers are skipped here, not in SQL (as in matches_many).
            if any(archived_at is None for _, _, _, archived_at in uow.conn.execute(query, params)):
                return True
        return False

    def first_duplicate(self, uow: "UnitOfWork", batch: Sequence[Customer]) -> DuplicateCustomer | None:
        """The door check of a bulk add: the refusal of the first customer of ``batch`` (validated,
        new) that shares an exact key with a stored customer (:meth:`matches_many`: one query per
        key and 5,000 rows) or with an earlier customer of the batch; None when there is none."""
        rows = [{"email": c.email, "phone": c.phone, "external_id": c.external_id, "attributes": c.attributes}
                for c in batch]
        stored = self.matches_many(uow, rows)
        seen: dict[tuple[str, Any], int] = {}
        for index, row in enumerate(rows):
            if index in stored:
                return DuplicateCustomer(stored[index], row=index)
            for key in self.settings.exact:
                value = _key_value(key, row)
                if value is None:
                    continue
                if (key, value) in seen:
                    return DuplicateCustomer([], row=index, same_as_row=seen[key, value])
                seen[key, value] = index
        return None

    def _named(self, uow: "UnitOfWork", found: Mapping[int, tuple[str, Sequence[str]]]) -> builtins.list[Match]:
        return _matches(found, self._visible(uow, set(found)))

    def _visible(self, uow: "UnitOfWork", ids: set[int]) -> set[int]:
        """Which of ``ids`` the acting user may see (one scoped query per 5,000)."""
        chosen, seen = sorted(ids), set[int]()
        for start in range(0, len(chosen), 5000):
            with uow.scoped():
                seen.update(uow.conn.execute(select(customers.c.id).where(
                    customers.c.id.in_(chosen[start:start + 5000]))).scalars())
        return seen

    def _key_conditions(self, uow: "UnitOfWork", customer: Customer) -> builtins.list[ColumnElement[bool]]:
        row = {"email": customer.email, "phone": customer.phone, "external_id": customer.external_id,
               "attributes": customer.attributes}
        conditions = []
        for key in self.settings.exact:
            values = _lookup_values(uow.conn.dialect, key, row)
            if values:
                column = _key_column(key)
                conditions.append(column.in_(values) if len(values) > 1 else column == values[0])
        return conditions

    def _shared(self, customer: Customer, row: Mapping[str, Any]) -> Iterator[str]:
        mine = {"email": customer.email, "phone": customer.phone, "external_id": customer.external_id,
                "attributes": customer.attributes}
        for key in self.settings.exact:
            value = _key_value(key, mine)
            if value is not None and value == _key_value(key, row):
                yield _label(key)

    # -- in bulk -------------------------------------------------------------------------------
    def find(self, min_score: float | None = None) -> builtins.list[Cluster]:
        """Candidate clusters over every live customer the acting user may see, best first.

        Asks ``authorize("customer.duplicates")``.  ``min_score`` defaults to ``[duplicates] min_score``.
        """
        threshold = self.settings.min_score if min_score is None else min_score
        with self.crm.unit(readonly=True) as uow:
            self.crm.authorize("customer.duplicates", None)
            pairs = builtins.list(self.pairs(uow, threshold))
        return clusters(pairs)

    def pairs(self, uow: "UnitOfWork", min_score: float = 0.0) -> Iterator[Pair]:
        """Every candidate pair scoring at least ``min_score`` (each once): exact-key pairs, then
        fuzzy ones."""
        seen: set[tuple[int, int]] = set()
        records: dict[int, Mapping[str, Any]] = {}
        exact_pairs: dict[tuple[int, int], list[str]] = {}
        for key in self.settings.exact:
            for members in self._exact_groups(uow, key):
                for row in members:
                    records[row["id"]] = row
                for x, y in itertools.combinations(sorted(r["id"] for r in members), 2):
                    exact_pairs.setdefault((x, y), []).append(_label(key))
        for (x, y), keys in exact_pairs.items():
            seen.add((x, y))
            pair = self.score(records[x], records[y], keys)
            if pair.score >= min_score:
                yield pair
        for rx, ry in self._fuzzy_candidates(uow, min_score):
            x, y = sorted((rx["id"], ry["id"]))
            if (x, y) not in seen:
                seen.add((x, y))
                pair = self.score(rx, ry, [])
                if pair.score >= min_score:
                    yield pair

    def score(self, a: Mapping[str, Any], b: Mapping[str, Any], exact: Sequence[str]) -> Pair:
        """Score two customers (as column values) that share the exact keys ``exact`` (see the module doc)."""
        company = CustomerKind.COMPANY.value in (a.get("kind"), b.get("kind"))
        name = name_similarity(a["name"], b["name"], company)
        fields: dict[str, Any] = {key: "same" for key in exact}
        fields["name"] = round(name, 4)
        if exact:
            score = min(1.0, 0.7 + 0.3 * name + 0.1 * (len(exact) - 1))
            if "email" not in exact and a.get("email") and b.get("email") \
                    and email_key(a["email"]) != email_key(b["email"]):
                score -= CONFLICT  # two different addresses speak against one person (a family's phone)
                fields["email"] = "different"
        else:
            from rapidfuzz import fuzz  # imported by the searches that score, not at every start-up

            other = 0.0
            if a.get("email") and b.get("email"):
                other = fuzz.ratio(_local_part(a["email"]), _local_part(b["email"])) / 100.0
                fields["email"] = round(other, 4)
            score = fuzzy_score(name, other)
        for column in self.settings.block:
            if a.get(column) is not None and a.get(column) == b.get(column):
                fields[column] = "same"
        x, y = sorted((a["id"], b["id"]))
        return Pair(x, y, score, fields)

    def _exact_groups(self, uow: "UnitOfWork", key: str) -> Iterator[builtins.list[Mapping[str, Any]]]:
        """The live customers sharing a value of ``key``, a list per value: ``GROUP BY ... HAVING
        COUNT(*) > 1`` finds the values, one ordered read their customers.  A value more than
        :data:`EXACT_GROUP_LIMIT` customers share is a placeholder (``noemail@...``), not a person."""
        column = _key_column(key)
        live = customers.c.archived_at.is_(None)
        shared = select(column).where(live, column.is_not(None)).group_by(column).having(
            func.count() > 1, func.count() <= EXACT_GROUP_LIMIT)
        query = select(*(customers.c[c] for c in _COLUMNS), column.label("match_key")).where(
            live, column.in_(shared.scalar_subquery())).order_by(column, customers.c.id)
        with uow.scoped():
            rows = uow.conn.execute(query).mappings()
            for _, group in itertools.groupby(rows, key=lambda r: r["match_key"]):
                yield [dict(r) for r in group]

    def _fuzzy_candidates(self, uow: "UnitOfWork", min_score: float
                          ) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        """Pairs in one block whose names are at least ``name_threshold`` alike and whose fuzzy
        score can reach ``min_score``.

        The block columns order one streamed read; each block is split by the first letters of
        the romanised name while a part is larger than :data:`BLOCK_LIMIT`, and
        :func:`rapidfuzz.process.cdist` scores each part's names, email local parts and phones
        against one another on every core, so only the pairs that qualify reach Python.
        """
        block = [customers.c[c] for c in self.settings.block]
        query = select(*(customers.c[c] for c in _COLUMNS)).where(
            customers.c.archived_at.is_(None), *(c.is_not(None) for c in block)).order_by(*block, customers.c.id)
        with uow.scoped():
            streaming = uow.conn.execution_options(stream_results=True, yield_per=STREAM_BATCH)
            rows = streaming.execute(query).mappings()
            for _, group in itertools.groupby(rows, key=lambda r: tuple(r[c] for c in self.settings.block)):
                members = [dict(r) for r in group]
                if len(members) > 1:
                    yield from self._similar(members, min_score)

    def _similar(self, members: builtins.list[dict[str, Any]], min_score: float, depth: int = 1
                 ) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
        parts: dict[str, list[dict[str, Any]]] = {}
        for row in members:
            romanised = name_forms(row["name"], row["kind"] == CustomerKind.COMPANY.value)[1]
            parts.setdefault(romanised[:depth], []).append(row)
        for part in parts.values():
            if len(part) < 2:
                continue
            if len(part) > BLOCK_LIMIT and depth < 4:
                yield from self._similar(part, min_score, depth + 1)
                continue
            for i, j in zip(*self._qualifying(part, min_score)):
                yield part[i], part[j]

    def _qualifying(self, part: builtins.list[dict[str, Any]], min_score: float) -> tuple[Any, Any]:
        """Index pairs ``(i, j)``, ``i < j``, of ``part`` whose names are alike enough and whose
        fuzzy score (as :func:`fuzzy_score`, from whole-part score matrices) reaches ``min_score``."""
        import numpy  # only a search needs it (not the start of every command), nor rapidfuzz
        from rapidfuzz import fuzz, process

        forms = [name_forms(r["name"], r["kind"] == CustomerKind.COMPANY.value) for r in part]
        cutoff = self.settings.name_threshold * 100

        def matrix(values: builtins.list[str], scorer: Any) -> Any:
            return process.cdist(values, values, scorer=scorer, dtype=numpy.uint8, workers=-1)

        han = numpy.array([has_han(r["name"]) for r in part], dtype=bool)
        roman = matrix([f[1] for f in forms], fuzz.token_sort_ratio)
        roman[numpy.outer(han, han)] = 0  # two names in characters: compared as characters only
        name = numpy.maximum(roman, matrix([f[0] for f in forms], fuzz.ratio))
        del roman
        # The candidates (names alike, each pair once), then their scores as vectors: no float matrix.
        first, second = numpy.nonzero(numpy.triu(name >= cutoff, k=1))
        if not len(first):
            return (), ()
        emails = [_local_part(r["email"]) if r["email"] else "" for r in part]
        has = numpy.array([bool(e) for e in emails], dtype=bool)
        other = matrix(emails, fuzz.ratio)[first, second] * (has[first] & has[second])
        scores = fuzzy_score(name[first, second].astype(numpy.float32) / 100, other.astype(numpy.float32) / 100)
        keep = scores >= min_score - 1e-6
        return first[keep], second[keep]


def fuzzy_score(name: Any, other: Any) -> Any:
    """The score of a pair sharing no exact key (floats or arrays, 0..1): ``0.9 * name * (0.4 + 0.6 *
    other)``, at most 0.9, so only an exact key takes a pair to the merge score."""
    return 0.9 * name * (0.4 + 0.6 * other)


def _release_lock(conn: Any, lock: str) -> None:
    """Release a MariaDB named lock after its unit's transaction; a connection that cannot is
    closed for good (its session's locks die with it), never handed back to the pool holding one."""
    try:
        conn.execute(select(func.release_lock(lock)))
    except Exception:
        conn.invalidate()


def clusters(pairs: Iterable[Pair]) -> builtins.list[Cluster]:
    """Group pairs into clusters (connected components, union-find), best first."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    kept = builtins.list(pairs)
    for pair in kept:
        ra, rb = root(pair.a), root(pair.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    grouped: dict[int, list[Pair]] = {}
    for pair in kept:
        grouped.setdefault(root(pair.a), []).append(pair)
    found = [Cluster(tuple(sorted({i for p in ps for i in (p.a, p.b)})), tuple(sorted(ps, key=lambda p: (p.a, p.b))))
             for ps in grouped.values()]
    return sorted(found, key=lambda c: (-c.score, c.ids))


def _matches(found: Mapping[int, tuple[str, Sequence[str]]], visible: set[int]) -> builtins.list[Match]:
    """Matches in id order, the customers not in ``visible`` as one unnamed match (keys united)."""
    named = [Match(cid, name, tuple(fields)) for cid, (name, fields) in sorted(found.items()) if cid in visible]
    hidden: list[str] = []
    for cid, (_, fields) in sorted(found.items()):
        if cid not in visible:
            hidden += [f for f in fields if f not in hidden]
    return named + ([Match(None, "", tuple(hidden))] if hidden else [])


def _batch_params(dialect: str, chunk: Sequence[Any]) -> dict[str, Any]:
    """The parameters of :func:`_batch_query` for ``chunk``: a JSON array on SQLite, PostgreSQL's
    array text (one untyped parameter: psycopg would dump a list element by element), else the list."""
    if dialect == "sqlite":
        return {"values": json.dumps(chunk)}
    return {"values": pg_array_text([str(v) for v in chunk]) if dialect == "postgresql" else chunk}


@functools.cache
def _batch_query(key: str, dialect: str = "") -> Any:
    """The live customers whose ``key`` is one of ``:values`` (built once: an import asks per batch).

    An expanding ``IN`` costs SQLAlchemy a few microseconds per value to render (and psycopg as
    much again to parse the long statement), about as much as the look-up itself.  So SQLite
    gets ``:values`` as one JSON array of the (text) values, read with ``json_each``, and
    PostgreSQL as one text array (sent in the array syntax: psycopg binds a list element by
    element), read as ``= ANY(:values)``; the key's index is searched the same way.
    """
    column = _key_column(key)
    condition: ColumnElement[bool]
    if dialect == "sqlite":
        condition = column.in_(select(literal_column("value")).select_from(
            func.json_each(bindparam("values"))).scalar_subquery())
    elif dialect == "postgresql":  # the array's text, read by the server as a constant (bulk.any_of)
        condition = column == any_(cast(bindparam("values", type_=NullType()), ARRAY(String())))
    else:
        condition = column.in_(bindparam("values", expanding=True))
    return select(*_found(column)).where(condition)


#: The exact keys whose look-up column has an index (a join from the values searches it per value).
_INDEXED = frozenset(("email", "phone", "external_id"))


@functools.cache
def _probe_query(key: str) -> Any:
    """:func:`_batch_query` on PostgreSQL for :meth:`DuplicateService.any_stored` in a large table
    (:func:`~crmcore.store.bulk.probes_pay`): the customers with each value, found by one
    search of the key's index per value (:func:`~crmcore.store.bulk.probe_each`), where ``= ANY``
    gets a scan of the whole table from the planner below about a million rows (an import into
    500,000 customers: about 300 ms a look-up instead of 20).  Archived customers are skipped
    by the caller, not in SQL: the planner, counting 0.5% of rows for ``archived_at IS NULL``
    without statistics, would AND a bitmap of every live customer into each search (10 s a
    look-up).  Run :func:`~crmcore.store.bulk.without_jit`."""
    column = _key_column(key)
    return probe_each(_found(column), column, bindparam("values", type_=NullType()))


def _found(column: Any) -> tuple[Any, ...]:
    """What the door's look-ups read of a customer with a value of ``column``: id, name, the
    value as ``k``, archived_at."""
    return (customers.c.id, customers.c.name, column.label("k"), customers.c.archived_at)


@functools.cache
def _exists_query(key: str) -> Any:
    """:func:`_batch_query` on SQLite for :meth:`DuplicateService.any_stored`, as a join from the
    values (``json_each``) to the key's index, one search per value: ``IN (SELECT value FROM
    json_each(...))`` first builds a sorted list of the values, which cost three times the
    searches (a 5,000-value batch: 2.4 ms against 0.8 ms).  A value given twice gives its rows
    twice, which tells nothing else: this is only for whether any row is there.  Only for keys
    whose column has an index (:data:`_INDEXED`): another one would be scanned once per value."""
    column = _key_column(key)
    values = func.json_each(bindparam("values")).table_valued("value")
    return select(customers.c.id, customers.c.name, column.label("k"), customers.c.archived_at).select_from(
        values.join(customers, column == values.c.value))


def _lookup_values(dialect: Any, key: str, row: Mapping[str, Any]) -> builtins.list[Any]:
    """What the door check looks ``key`` of ``row`` up by: the address lower-cased (``email_key``),
    or when addresses are sealed the blind indexes of the address as given and with its local
    part lower-cased (the blind index is of the address as stored, so one stored in other
    capitals is not found) under every listed key; the other keys' values as stored."""
    value = _key_value(key, row)
    if value is None:
        return []
    if key != "email" and key != "phone":
        return [value]
    cipher = cipher_of(dialect)
    if cipher is None or not cipher.seals(key):
        return [value]
    return _sealed_lookup(cipher, key)(row[key])


def _sealed_lookup(cipher: Any, key: str) -> Callable[[Any], builtins.list[str]]:
    """:func:`_lookup_values` of a sealed ``key`` (``email`` or ``phone``) as a function of the
    row's value (not empty), for one cipher: an import's door check asks it for every new row."""
    prefix, count = cipher.prefix, cipher.key_count
    numbers = range(count)
    if key == "email":
        def email(value: Any) -> builtins.list[str]:
            given = str(value).strip()
            lowered = given.lower()
            if lowered != given:  # most addresses are in lower case already: one form
                local, _, domain = given.rpartition("@")
                forms = dict.fromkeys((given, f"{local.lower()}@{domain}", lowered))
                return [prefix("email", form, number) for form in forms for number in numbers]
            return [prefix("email", given)] if count == 1 else [prefix("email", given, n) for n in numbers]
        return email

    def phone(value: Any) -> builtins.list[str]:
        value = str(value)  # phone_key: the blind index
        return [prefix(key, value)] if count == 1 else [prefix(key, value, n) for n in numbers]
    return phone


def _local_part(email: str) -> str:
    """The folded part of an address before the ``@`` (a shared domain says nothing about a person)."""
    return (email_key(email) or "").partition("@")[0]


def _label(key: str) -> str:
    return key.removeprefix("attributes.")


def _key_column(key: str) -> ColumnElement[Any]:
    """The SQL expression of an exact key: ``email_key`` (the address lower-cased, or its blind
    index), ``phone_key`` (the number, or its blind index when sealed: a sealed form differs each
    time, its index does not), a custom field as text."""
    if key == "email":
        return customers.c.email_key
    if key == "phone":  # the generated, indexed column: neither customers.email nor .phone has an index
        return customers.c.phone_key
    if key.startswith("attributes."):
        text: ColumnElement[Any] = customers.c.attributes[key.removeprefix("attributes.")].as_string()
        return text
    return customers.c[key]


def _key_value(key: str, row: Mapping[str, Any]) -> Any:
    """The value of an exact key in ``row`` (column values) as :func:`_key_column` compares it."""
    if key == "email":
        email = row.get("email")
        return email.lower() if email else None
    if key.startswith("attributes."):
        value = (row.get("attributes") or {}).get(key.removeprefix("attributes."))
        return None if value is None or value == "" else str(value)
    return row.get(key) or None
