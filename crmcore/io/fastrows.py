"""The bound row of a plain customer row, without cattrs, ``attrs.evolve`` or an entity.

:meth:`crmcore.io.rows.RowChecker.check` builds an entity with the cattrs
converter, validates it (:meth:`~crmcore.domain.validation.EntityValidator.customer`,
which ends in ``attrs.evolve``), checks what the database would refuse and binds
the entity's values.  For the bulk import's common row -- CSV text in which
every mapped column is a plain customer field -- :class:`FastCustomerRows`
computes the same bound values directly, each with the function the general
path uses for it (``normalize_email``, ``normalize_phone``, ``normalize_country``,
``parse_bool``, the enums, ``parse_loose_date`` / ``parse_date``) and the
same :class:`~crmcore.io.rows.Binder`.

It answers only when it is sure: any value a rule refuses, a control character
in any cell, a JSON list of tags, a birthday after today, a value too long for
its column, a missing name -- anything unusual -- gives None, and the checker
runs the general path, which says what is wrong with its usual messages.  So a
row is accepted here only if the general path accepts it, with the same values
(``tests/io/test_fast_rows.py`` compares the two, with hypothesis and on tricky
rows), and every rejection is the general path's.

With a binder (the SQLite bulk path) the result is the bound values an insert
takes; without one (PostgreSQL, MariaDB, a plugin's ``validate_customer`` or
batch listener) the table row ``Repository.to_row`` gives.  Where it does not
apply (other entity kinds, custom fields declared for customers, mapped custom
fields, value tables of a mapping file, time stamp columns in the file, keyed
by id, a subclassed validator), the checker never builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import attrs

from ..domain.convert import parse_bool, parse_date
from ..domain.entities import Customer, CustomerKind, LifecycleStage
from ..domain.text import ONE_LINE_FORBIDDEN
from ..domain.validation import EntityValidator, normalize_country, normalize_email, normalize_phone
from .mapping import FIELD
from .values import parse_loose_date

if TYPE_CHECKING:
    from .rows import RowChecker

#: The customer fields, in class order, that this module knows how to take; a change to the
#: entity class switches the fast path off until this module learns the new field.
KNOWN_FIELDS = ("name", "id", "kind", "email", "phone", "country", "region", "city", "industry", "source",
                "owner", "stage", "birthday", "consent_email", "consent_sms", "consent_marketing", "tags",
                "attributes", "external_id", "created_at", "updated_at", "archived_at")
#: Fields a file column may fill on the fast path (``id`` is read and dropped, as the general path does
#: unless the import is keyed by id, which never has a binder).
FAST_FIELDS = frozenset({"name", "id", "kind", "email", "phone", "country", "region", "city", "industry",
                         "source", "owner", "stage", "birthday", "consent_email", "consent_sms",
                         "consent_marketing", "tags", "external_id"})
#: Plain text fields: the cell is the value (cattrs' ``parse_text`` of a str is the str).
_PLAIN_TEXT = ("region", "city", "industry", "source", "owner", "external_id")
_FLAGS = (("consent_email", True), ("consent_sms", True), ("consent_marketing", False))
# Bounded memories of pure conversions of repeated cells (a handful of distinct values in practice).
_MEMO_LIMIT = 4096


class FastCustomerRows:
    """``checker.check(values)``'s bound row for a plain customer row, or None when not sure."""

    def __init__(self, checker: "RowChecker", plan: list[tuple[int, str, bool]]):
        self.checker = checker
        self.plan = [(i, name, strip) for i, name, strip in plan]
        self.validator = checker.validator
        self.region = checker.validator.config.phone_region
        self.binder = checker.binder
        self.columns = checker.table_columns
        self.now = checker.now
        # (name, longest) of every text column with a limit, as RowChecker._storable checks them.
        self.limits = [(name, limit) for name, limit in checker._text_columns if limit]
        self._kinds: dict[str, CustomerKind] = {}
        self._stages: dict[str, LifecycleStage] = {}
        self._flags: dict[str, bool] = {}
        self._tags: dict[str, tuple[str, ...]] = {}

    @classmethod
    def for_checker(cls, checker: "RowChecker") -> "FastCustomerRows | None":
        """The fast path for ``checker``'s rows, or None where it does not apply (see the module)."""
        plan = checker._text_plan
        if (checker.kind != "customer" or plan is None or checker.key == "id"
                or not set(checker.table_columns) <= set(KNOWN_FIELDS)
                or checker.cls is not Customer or checker._values
                or tuple(f.name for f in attrs.fields(Customer)) != KNOWN_FIELDS
                or type(checker.validator) is not EntityValidator
                or checker.validator.custom_fields.get("customer")):
            return None
        names = [name for _, name, _ in plan]
        if len(set(names)) != len(names) or not set(names) <= FAST_FIELDS:
            return None
        if any(p[1] != FIELD for p in checker._plan or []):  # _text_plan says so; kept explicit
            return None
        return cls(checker, plan)

    def __call__(self, values: list[Any]) -> tuple[Any, ...] | None:
        got: dict[str, str] = {}
        for i, name, strip in self.plan:  # as RowChecker.given: blanks left out
            value = values[i]
            if value.__class__ is not str:
                if value is None:
                    continue
                return None  # an XLSX number or date: the general path types it
            if strip:
                value = value.strip()
                if value:
                    got[name] = value
            elif value and not value.isspace():
                got[name] = value
        # Every cell at once: a superset of the text fields and tags EntityValidator._texts checks.
        if ONE_LINE_FORBIDDEN.search("".join(got.values())) is not None:
            return None
        try:
            return self._build(got)
        except Exception:  # any doubt: the general path decides (and words the problem)
            return None

    def _build(self, got: dict[str, str]) -> tuple[Any, ...] | None:
        name = got.get("name")
        if name is None or not name.strip():
            return None
        fields: dict[str, Any] = {"name": name}
        for field in _PLAIN_TEXT:
            fields[field] = got.get(field)
        text = got.get("email")
        fields["email"] = normalize_email(text) if text is not None else None
        text = got.get("phone")
        fields["phone"] = normalize_phone(text, self.region) if text is not None else None
        text = got.get("country")
        fields["country"] = normalize_country(text) if text is not None else None
        text = got.get("kind")
        fields["kind"] = CustomerKind.PERSON if text is None else _remember(self._kinds, text, _kind)
        text = got.get("stage")
        fields["stage"] = LifecycleStage.LEAD if text is None else _remember(self._stages, text, _stage)
        for flag, default in _FLAGS:
            text = got.get(flag)
            fields[flag] = default if text is None else _remember(self._flags, text, parse_bool)
        text = got.get("tags")
        if text is not None:
            if text.lstrip().startswith("["):  # a JSON list: the general path reads it
                return None
            fields["tags"] = _remember(self._tags, text, _split_tags)
        else:
            fields["tags"] = ()
        text = got.get("birthday")
        if text is not None:
            birthday = _birthday(text)
            if birthday > self.validator.today():
                return None
            fields["birthday"] = birthday
        fields["attributes"] = {}
        for column, limit in self.limits:  # RowChecker._storable (NUL is a forbidden character above)
            value = fields.get(column)
            if value is not None and len(value) > limit:
                return None
        if self.binder is not None:  # the SQLite bulk path: the values an insert binds
            return self.binder.bind_fields(fields.get, self.now)
        # Elsewhere Repository.to_row's values (the entity unstructured: enums kept, tags a list, a
        # new attributes dict), time stamps "now", in table column order.
        fields["tags"] = list(fields["tags"])
        fields["created_at"] = fields["updated_at"] = self.now
        return tuple([fields.get(column) for column in self.columns])


def _remember(memo: dict[str, Any], text: str, convert: Callable[[str], Any]) -> Any:
    try:
        return memo[text]
    except KeyError:
        value = convert(text)  # raises for a bad value: nothing remembered
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[text] = value
        return value


def _kind(text: str) -> CustomerKind:
    return CustomerKind(text.strip().lower())  # convert._parse_enum without its message


def _stage(text: str) -> LifecycleStage:
    return LifecycleStage(text.strip().lower())


def _split_tags(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())  # convert._parse_tags of a str


def _birthday(text: str) -> date:
    """What check_given and the converter make of a birthday cell (ValueError: not a date)."""
    if (len(text) == 10 and text[4] == "-" and text[7] == "-" and text.isascii() and text[:4].isdigit()
            and text[5:7].isdigit() and text[8:].isdigit()):
        # YYYY-MM-DD: parse_loose_date leaves it as it is (no / . or 年), parse_date reads it
        return date.fromisoformat(text)
    loose = parse_loose_date(text, False)
    return loose if loose.__class__ is date else parse_date(loose)


__all__ = ["FAST_FIELDS", "FastCustomerRows", "KNOWN_FIELDS"]
