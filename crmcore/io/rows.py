"""One row of a file -> a validated, normalised table row (or the reasons it is not).

:class:`RowChecker` does everything about a row that needs no database: apply
the column mapping, build the entity with the one cattrs converter
(:func:`crmcore.domain.convert.structure`), normalise and check it with the CRM's
:class:`~crmcore.domain.validation.EntityValidator` (email, phone, country, money,
pipeline stage, custom fields), and check what the database would refuse
(text longer than its column, NUL characters).  It holds no connection and no
plugin, so import worker processes run it in parallel; references to other
records, keys and plugin ``validate_*`` hooks are checked afterwards by the
importer, in the unit of work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

import attrs
from sqlalchemy import JSON, BigInteger, Connection, Integer, SmallInteger, String, insert

from ..domain.convert import DERIVED_COLUMNS, local_zone, structure
from ..domain.entities import ENTITY_TYPES, Deal, StageOutcome
from ..domain.errors import ValidationError
from ..domain.validation import EntityValidator
from ..store.sealed import Sealed, SealedAttributes, SealedDate, cipher_of
from ..store.repositories import (
    ContactRepository,
    CustomerRepository,
    DealRepository,
    InteractionRepository,
    Repository,
    TaskRepository,
)
from ..store.tables import ENTITY_TABLES
from ..store.types import UTCDateTime
from .mapping import (
    ATTRIBUTE,
    ATTRIBUTES,
    FIELD,
    IGNORE,
    REFERENCE,
    REFERENCE_FIELDS,
    STRIPPED_FIELDS,
    ColumnMapping,
    Target,
    entity_fields,
    plain_json,
    text_fields,
)
from .fastrows import FastCustomerRows
from .pgcopy import copies, copy_processor
from .values import parse_loose_date, parse_money

#: The repository class by entity kind (the kind, so the entity type, is chosen at run time).
REPOSITORIES: dict[str, type[Repository[Any]]] = {"customer": CustomerRepository, "contact": ContactRepository,
                "interaction": InteractionRepository, "deal": DealRepository, "task": TaskRepository}
Issue = tuple[str, str]  # (column, reason)


@attrs.frozen
class Given:
    """The non-blank values of one row, by destination."""

    fields: dict[str, Any]
    attributes: dict[str, Any]
    references: dict[str, str]
    issues: list[Issue]


class RowChecker:
    """Validates rows of one file for one entity kind (picklable, for worker processes)."""

    def __init__(self, kind: str, mapping: ColumnMapping, columns: list[str] | None,
                 validator: EntityValidator, now: datetime, key: str | None):
        self.kind = kind
        self.cls = ENTITY_TYPES[kind]
        self.mapping = mapping
        self.columns = columns
        self.validator = validator
        self.now = now
        self.key = key
        self.zone = ZoneInfo(validator.config.timezone)
        # The entity's columns: not email_key (computed), not import_digest (the importer's own).
        self.table_columns = [c.name for c in ENTITY_TABLES[kind].c if c.name not in DERIVED_COLUMNS]
        self._text_columns = [(c.name, c.type.limit if isinstance(c.type, Sealed) else c.type.length)
                              for c in ENTITY_TABLES[kind].c
                              if c.name not in DERIVED_COLUMNS
                              and isinstance(c.type, (String, Sealed))]  # Text is a String too (no length)
        self._int_columns = [(c.name, integer_range(c.type)) for c in ENTITY_TABLES[kind].c
                             if isinstance(c.type, Integer)]
        self.binder: Binder | None = None
        # The fast path of plain customer rows (crmcore.io.fastrows), built for the binder it was made with.
        self._fast: FastCustomerRows | None = None
        self._fast_binder: Any = _UNBUILT
        self._texts = text_fields(kind)
        # to_row only; never touches a connection (so none is given: the cast says so to mypy)
        self._repo = REPOSITORIES[kind](cast(Connection, None))
        self._validate = getattr(validator, kind)
        self._plan = self._make_plan(columns) if columns is not None else None
        # Every mapped column a plain field: a tighter loop in given().
        self._values = mapping.values
        self._text_plan = ([(i, name, strip) for i, kind, name, _, strip in self._plan]
                           if self._plan is not None and all(p[1] == FIELD for p in self._plan)
                           and not self._values else None)
        hints = entity_fields(kind)
        self._loose = [(name, hints[name] is datetime or hints[name] == datetime | None)
                       for name in hints if hints[name] in (date, datetime, date | None, datetime | None)]
        self._money = [name for name in hints if hints[name] in (Decimal, Decimal | None)]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_repo"], state["_validate"]
        state["binder"] = None  # its processors are closures; only forked workers inherit them
        state["_fast"], state["_fast_binder"] = None, _UNBUILT
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._repo = REPOSITORIES[self.kind](cast(Connection, None))  # to_row only, as in __init__
        self._validate = getattr(self.validator, self.kind)

    def _make_plan(self, columns: list[str]) -> list[tuple[int, str, str, bool, bool]]:
        plan = []
        for index, column in enumerate(columns):
            target = self.mapping.target(column) or Target(IGNORE)
            if target.kind == IGNORE:
                continue
            plan.append((index, target.kind, target.name, target.name in self._texts,
                         target.name in STRIPPED_FIELDS or target.kind == REFERENCE))
        return plan

    # -- columns for messages ------------------------------------------------------
    def column_of(self, field: str, references: Mapping[str, str] | None = None) -> str:
        """The file column a field's value came from (for error messages)."""
        for ref, ref_field in REFERENCE_FIELDS.items():
            if field == ref_field and (references is None or ref in references):
                column = self._column_for(Target(REFERENCE, ref))
                if column:
                    return column
        column = self._column_for(Target(FIELD, field))
        if column:
            return column
        column = self._column_for(Target(ATTRIBUTE, field))
        if column:
            return column
        if field in self.validator.custom_fields.get(self.kind, {}):
            return self._column_for(Target(ATTRIBUTES)) or f"attributes.{field}"
        if field == "customer_id" and self.kind != "customer":
            return "customer"
        return field

    def _column_for(self, target: Target) -> str | None:
        return self.mapping.column_for(target, self.columns)

    # -- reading a row -----------------------------------------------------------
    def given(self, values: Any) -> Given:
        """Split a row into fields, custom attributes and references (blanks left out)."""
        fields: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        references: dict[str, str] = {}
        issues: list[Issue] = []
        if isinstance(values, list):
            if self._text_plan is not None:  # the common case: CSV text into plain fields
                for i, name, strip in self._text_plan:
                    value = values[i]
                    if value.__class__ is str:
                        if strip:
                            value = value.strip()
                            if value:
                                fields[name] = value
                        elif value and not value.isspace():
                            fields[name] = value
                        continue
                    if value is not None:  # XLSX cells: the general loop below
                        break
                else:
                    return Given(fields, attributes, references, issues)
                fields = {}
            items = ((values[i], kind, name, text, strip, self.columns[i])  # type: ignore[index]
                     for i, kind, name, text, strip in self._plan)  # type: ignore[union-attr]
        else:
            items = self._dict_items(values, issues)
        for value, kind, name, text, strip, column in items:
            if value is None:
                continue
            if isinstance(value, str):
                if strip:
                    value = value.strip()
                    if not value:
                        continue
                elif not value.strip():
                    continue
            elif (text and kind == FIELD) or kind == REFERENCE:
                if isinstance(value, _NOT_TEXT):
                    issues.append((column, f"expected text, got {_json_kind(value)} {_shown(value)}"))
                    continue
                if kind == REFERENCE:  # looked up by its text (an id, an email, an external id)
                    value = _as_text(value)
            if kind == FIELD:  # other values go to the converter as they are (types are types)
                if name in self._values and isinstance(value, str):
                    value = self._values[name].get(value.strip(), value)
                fields[name] = value
            elif kind == ATTRIBUTE:
                attributes[name] = plain_json(value)
            elif kind == REFERENCE:
                references[name] = value
            elif kind == ATTRIBUTES:
                parsed = _attributes_object(value)
                if isinstance(parsed, str):
                    issues.append((column, parsed))
                else:
                    attributes = {**parsed, **attributes}
        return Given(fields, attributes, references, issues)

    def _dict_items(self, values: dict[str, Any], issues: list[Issue]) -> Any:
        for column, value in values.items():
            target = self.mapping.target(column)
            if target is None:
                if value is not None and value != "":
                    issues.append((column, self.mapping.unknown_message(column)))
                continue
            if target.kind == IGNORE:
                continue
            yield (value, target.kind, target.name, target.name in self._texts,
                   target.name in STRIPPED_FIELDS or target.kind == REFERENCE, column)

    def key_value(self, values: Any) -> Any:
        """The normalised import key of a raw row, or None (for rows that failed checks)."""
        if self.key is None:
            return None
        given = self.given(values)
        value = given.fields.get(self.key)
        if value is None:
            return None
        try:
            return normalize_key(self.key, value)
        except (ValueError, TypeError):
            return None

    # -- checking a row ------------------------------------------------------------
    def check(self, values: Any) -> tuple[tuple[Any, ...] | None, list[Issue] | None, dict[str, str] | None]:
        """``(table row, None, references)`` for a good row, ``(None, issues, references)`` otherwise.

        The table row is a tuple in table column order (``id`` None unless the
        import key is ``id``); ``customer_id`` / ``contact_id`` hold 0 / None
        when the row names its customer / contact by reference, for the
        importer to fill in.
        """
        binder = self.binder
        if binder is not self._fast_binder:  # built (or not) for the binder in use, None included
            self._fast, self._fast_binder = FastCustomerRows.for_checker(self), binder
        if self._fast is not None and values.__class__ is list:
            row = self._fast(values)
            if row is not None:  # the same row the general path gives (else it explains why not)
                return row, None, {}
        given = self.given(values)
        if given.issues:
            return None, given.issues, given.references
        return self.check_given(given)

    def check_given(self, given: Given, base: Mapping[str, Any] | None = None
                    ) -> tuple[tuple[Any, ...] | None, list[Issue] | None, dict[str, str] | None]:
        """Build, normalise and check an entity from ``given`` (over ``base`` for updates)."""
        references = given.references
        data = dict(base) if base is not None else {}
        data.update(given.fields)
        for name, with_time in self._loose:  # 2024/1/2, 2024年1月2日, Excel serials
            value = given.fields.get(name)
            if value.__class__ is str:
                data[name] = parse_loose_date(value, with_time)
        for name in self._money:  # ¥102,000, ￥１２，３４５
            value = given.fields.get(name)
            if value.__class__ is str:
                data[name] = parse_money(value)
        if given.attributes:
            data["attributes"] = {**(data.get("attributes") or {}), **given.attributes}
        if base is not None:  # an update keeps the stored id and creation time
            data.update(id=base.get("id"), created_at=base.get("created_at"), updated_at=self.now)
        elif self.key != "id":  # ids are the database's unless the import is keyed by id
            data.pop("id", None)
        tags = data.get("tags")
        if isinstance(tags, str) and tags.lstrip().startswith("["):
            try:
                parsed = json.loads(tags)
            except ValueError:
                parsed = None
            if isinstance(parsed, list) and all(isinstance(t, str) for t in parsed):
                data["tags"] = parsed
        for ref in references:
            data[REFERENCE_FIELDS[ref]] = 0 if ref == "customer" else None
        if self.kind == "deal":
            data.setdefault("currency", self.validator.config.default_currency)
        try:
            with local_zone(self.zone):  # 2024/1/2 13:05 is a time in the configured timezone
                entity = structure(data, self.cls, self.kind)
            if isinstance(entity, Deal) and entity.closed_at is None and base is None:  # a deal
                pipeline = self.validator.config.pipelines.get(entity.pipeline)
                stage = pipeline.stage(entity.stage) if pipeline else None
                if stage is not None and stage.outcome is not StageOutcome.OPEN:
                    entity = attrs.evolve(entity, closed_at=self.now)
            entity = self._validate(entity)
        except ValidationError as exc:
            return None, [(self.column_of(f, references), m) for f, m in exc.issues], references
        if self.binder is not None and base is None:
            issues = self._storable(entity.__getattribute__, references)
            if issues:
                return None, issues, references
            return self.binder.bind_entity(entity, self.now), None, references
        row = self._repo.to_row(entity)
        if row["created_at"] is None:
            row["created_at"] = self.now
        if row["updated_at"] is None:
            row["updated_at"] = self.now
        issues = self._storable(row.__getitem__, references)
        if issues:
            return None, issues, references
        return tuple(row[c] for c in self.table_columns), None, references

    def _storable(self, get: Any, references: Mapping[str, str]) -> list[Issue]:
        """What the database would refuse: text longer than its column, NUL characters, integers out of range."""
        issues = []
        for name, (low, high) in self._int_columns:
            value = get(name)
            if value is not None and not low <= value <= high:
                issues.append((self.column_of(name, references),
                               f"{_digits(value)} is out of range (at most {high})"))
        for name, limit in self._text_columns:
            value = get(name)
            if value is None:
                continue
            if limit and len(value) > limit:
                issues.append((self.column_of(name, references),
                               f"is {len(value)} characters long; at most {limit} fit"))
            if "\x00" in value:
                issues.append((self.column_of(name, references), "contains a NUL character"))
        return issues


class Binder:
    """Turns a table row into the values SQLAlchemy would bind for it on one dialect.

    Uses the columns' own bind processors (UTC datetimes, JSON with the
    engine's serializer, booleans, dates), so ``exec_driver_sql`` with these
    tuples stores exactly what a Core ``insert()`` would, without the
    per-row parameter processing in the writing process.  Forked import
    workers run it in parallel.
    """

    def __init__(self, table: Any, dialect: Any, remember: Collection[str] = ()):
        """``remember``: the sealed fields whose sealings the cipher keeps for a later look-up by
        value (the importer's door check: addresses and numbers; see :meth:`Cipher.sealer`)."""
        self.columns = [c.name for c in table.c if c.name != "id" and c.computed is None]
        compiled = insert(table).compile(dialect=dialect, column_keys=self.columns)
        copy = copies(dialect)  # PostgreSQL: rows go in with COPY (crmcore.io.pgcopy), naming the columns
        if compiled.positiontup is None and not copy:
            raise ValueError(f"{dialect.name}: positional parameters expected")
        if compiled.positiontup is not None:
            self.columns = list(compiled.positiontup)
        self.sql = compiled.string
        #: The engine's cipher when fields are sealed (a worker hands its sealings back through it).
        self.cipher = cipher_of(dialect)
        self.processors = [table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in self.columns]
        # Sealed columns seal through the cipher's sealer for their field, not the type's bind
        # processor (which looks the engine's cipher up and checks the field at every value):
        # three sealings a customer row, the most of what encryption adds to an import.
        sealing_columns = set()
        for i, name in enumerate(self.columns):
            column_type = table.c[name].type
            if isinstance(column_type, Sealed | SealedDate):
                sealing = column_type.sealing_processor(self.cipher, column_type.field in remember)
                if sealing is not None:
                    self.processors[i] = sealing
                    sealing_columns.add(name)
                elif isinstance(column_type, Sealed):  # the cipher leaves the text as it is
                    impl = cast(Sealed, column_type.dialect_impl(dialect)).impl_instance
                    if impl.bind_processor(dialect) is None:
                        self.processors[i] = None  # then so does the type: no call per value
        if copy:  # JSON as its text, not psycopg's Json wrapper: it pickles back from a worker
            for i, name in enumerate(self.columns):
                as_text = copy_processor(table.c[name].type, dialect)
                if as_text is not None:
                    self.processors[i] = as_text
        # Time stamps, tags and custom attributes repeat a lot (one "now" per
        # import, a few tag sets) and their processors (JSON serialisation, UTC
        # conversion) are pure and not cheap, so equal inputs -- equal by value
        # *and* type -- get the remembered output.
        # Customers' attributes too, unless custom fields are sealed (a sealed value is never
        # reused: each sealing has its own nonce).
        cipher = cipher_of(dialect)
        self._memo: dict[str, dict[Any, Any]] = {
            name: {} for name in self.columns
            if isinstance(table.c[name].type, (UTCDateTime, JSON))
            or (isinstance(table.c[name].type, SealedAttributes) and not (cipher is not None and cipher.custom))}
        #: The columns whose bound value depends on the value alone (not sealed: a sealing has its
        #: own nonce, and the door check's sealings are remembered), so it may be reused.
        self.pure = frozenset(name for name in self.columns if name not in sealing_columns and not (
            isinstance(table.c[name].type, SealedAttributes) and cipher is not None and cipher.custom))
        self._plan = [(name, process, self._memo.get(name)) for name, process in zip(self.columns, self.processors)]
        self._last: list[tuple[Any, Any]] = [(_NOTHING, None)] * len(self._plan)
        self._bind_fields = self._compile_bind_fields()

    def processor(self, column: str) -> Callable[[Any], Any] | None:
        """The function that binds ``column``'s values (None: a value is bound as it is)."""
        process: Callable[[Any], Any] | None = self.processors[self.columns.index(column)]
        return process

    def bind_entity(self, entity: Any, now: datetime) -> tuple[Any, ...]:
        """:meth:`bind` of the entity's table row (``Repository.to_row``), time stamps defaulting to ``now``."""
        return self.bind_fields(entity.__getattribute__, now)

    def bind_fields(self, get: Callable[[str], Any], now: datetime) -> tuple[Any, ...]:
        """:meth:`bind_entity` of the entity whose field ``name`` is ``get(name)`` (a dict's ``get``:
        absent fields are None).  (:mod:`crmcore.io.fastrows` binds with :meth:`processor` and
        :attr:`pure` in its own generated row function.)"""
        return self._bind_fields(get, now)

    def _compile_bind_fields(self) -> Callable[[Callable[[str], Any], datetime], tuple[Any, ...]]:
        """``bind_fields`` as one generated function: per column, what the loop below did for it.

        A loop over ~20 columns (a look-up, three tests and a call each) was half of the cost of
        a plain customer row once validation got cheap; the generated code does the same steps
        (the same processors, memories and time stamp rule) without the per-column dispatch.
        The loop, for reading: ``value = get(name)``; a time stamp that is None is ``now``;
        tags become a list; no processor: the value; the same object as the previous row's
        (time stamps): its bound value; no memory: ``process(value)``; else the remembered
        bound value (datetimes recognised by identity for the next row).
        """
        scope: dict[str, Any] = {"R": self._remember, "datetime": datetime, "L": self._last}
        lines = ["def bind_fields(get, now):"]
        for index, (name, process, memo) in enumerate(self._plan):
            if name in UNBOUND:  # no entity field: None (the importer fills the digest in)
                lines.append(f"    x{index} = None")
                continue
            lines.append(f"    v = get({name!r})")
            if name in _STAMPS:
                lines.append("    if v is None: v = now")
            elif name == "tags":
                lines.append("    v = list(v)")
            if process is None:
                lines.append(f"    x{index} = v")
                continue
            scope[f"P{index}"] = process
            if memo is None:  # last[index] is never set for it: the identity test never holds
                lines.append(f"    x{index} = P{index}(v)")
                continue
            scope[f"M{index}"] = memo
            lines += [f"    last = L[{index}]",
                      f"    if v is last[0]: x{index} = last[1]",
                      "    else:",
                      f"        x{index} = R(M{index}, v, P{index})",
                      f"        if v.__class__ is datetime: L[{index}] = (v, x{index})"]
        lines.append("    return (" + "".join(f"x{i}, " for i in range(len(self._plan))) + ")")
        exec(compile("\n".join(lines), "<crmcore binder>", "exec"), scope)  # noqa: S102
        return cast(Callable[[Callable[[str], Any], datetime], tuple[Any, ...]], scope["bind_fields"])

    @staticmethod
    def _remember(memo: dict[Any, Any], value: Any, process: Any) -> Any:
        key = _memo_key(value)
        if key is None:
            return process(value)
        try:
            return memo[key]
        except KeyError:
            if len(memo) > 10_000:
                memo.clear()
            memo[key] = bound = process(value)
            return bound

    def bind(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        values = []
        for name, process, memo in self._plan:
            value = row.get(name) if name in UNBOUND else row[name]
            if process is None:
                values.append(value)
                continue
            if memo is None:
                values.append(process(value))
                continue
            values.append(self._remember(memo, value, process))
        return tuple(values)


_STAMPS = frozenset({"created_at", "updated_at"})
#: Bound columns with no entity field: ``customers.import_digest``, which the importer sets in the
#: bound row after validation (crmcore.io.fingerprint); None until then.
UNBOUND = frozenset({"import_digest"})
_UNBUILT = "no fast path built yet"  # never a binder (nor None), also after pickling
_NOTHING = object()


_SCALARS = (str, int, bool, type(None))  # not float: -0.0 == 0.0 but they serialise apart


def _memo_key(value: Any) -> Any:
    """A hashable key that is equal only for values a processor cannot tell apart; None if there is none."""
    if isinstance(value, list):
        if all(type(v) is str for v in value):
            return (list, tuple(value))
        return None
    if isinstance(value, dict):
        if all(type(k) is str and type(v) in _SCALARS for k, v in value.items()):
            return (dict, tuple((k, type(v), v) for k, v in value.items()))
        return None
    if isinstance(value, datetime):
        return (datetime, value, value.utcoffset())
    return (type(value), value)


def integer_range(type_: Any) -> tuple[int, int]:
    """The values an integer column holds on every supported database (INTEGER is 32 bits on servers)."""
    if isinstance(type_, SmallInteger):
        bits = 16
    elif isinstance(type_, BigInteger):
        bits = 64
    else:
        bits = 32
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _digits(value: int) -> str:
    if abs(value) < 10**40:
        return str(value)
    return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"


def normalize_key(key: str, value: Any) -> Any:
    """An import key as stored: emails normalised, ids as integers."""
    from ..domain.convert import parse_int
    from ..domain.validation import normalize_email

    if key == "email":
        return normalize_email(value.strip() if isinstance(value, str) else value)
    if key == "id":
        return parse_int(value)
    return value.strip() if isinstance(value, str) else _as_text(value)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "isoformat"):
        text: str = value.isoformat()  # a date or time
        return text
    return str(value)


# What a text field refuses (a JSON object, list or boolean is not a name or a city).
_NOT_TEXT = (dict, list, tuple, bool)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return "a JSON object" if isinstance(value, dict) else "a list"


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:40] + "..."


def _attributes_object(value: Any) -> dict[str, Any] | str:
    if isinstance(value, dict):
        plain: dict[str, Any] = plain_json(value)  # a dict stays a dict
        return plain
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            return f"not a JSON object of custom fields: {exc}"
        if isinstance(parsed, dict):
            return parsed
    return f"expected a JSON object of custom fields, got {value!r}"


__all__ = ["Given", "RowChecker", "integer_range", "normalize_key"]
