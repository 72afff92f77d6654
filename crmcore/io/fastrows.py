"""The bound row of a plain customer row, without cattrs, ``attrs.evolve`` or an entity.

:meth:`crmcore.io.rows.RowChecker.check` builds an entity with the cattrs
converter, validates it (:meth:`~crmcore.domain.validation.EntityValidator.customer`,
which ends in ``attrs.evolve``), checks what the database would refuse and binds
the entity's values.  For the bulk import's common row -- CSV text in which
every mapped column is a plain customer field -- :class:`FastCustomerRows`
computes the same bound values directly, each with the function the general
path uses for it (``normalize_email``, ``normalize_phone``, ``normalize_country``,
``parse_bool``, the enums, ``parse_loose_date`` / ``parse_date``) and the
processors of the same :class:`~crmcore.io.rows.Binder`, in one function
generated for the file's columns (see :class:`FastCustomerRows`).

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
from datetime import date, datetime
from functools import partial
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
#: The entity's value of a field no cell gives (the entity class's defaults; None for the others).
_DEFAULTS: dict[str, Any] = {"kind": CustomerKind.PERSON, "stage": LifecycleStage.LEAD, "consent_email": True,
                             "consent_sms": True, "consent_marketing": False, "tags": ()}
_STAMPS = ("created_at", "updated_at")
#: Bound values that one object can stand for in every row (PostgreSQL binds time stamps as
#: naive UTC datetimes, not text: the import's "now" converted once, not twice a row).
_IMMUTABLE = (str, int, float, bool, bytes, datetime, date)
# Bounded memories of pure conversions of repeated cells (a handful of distinct values in practice).
_MEMO_LIMIT = 4096


class FastCustomerRows:
    """``checker.check(values)``'s bound row for a plain customer row, or None when not sure.

    The file's columns are known up front, so the row is worked out once, as the source of one
    generated function (:meth:`_source`) that goes from the cell list straight to the row: each
    cell read, blank-tested and converted by the rule of its field, each value bound by its
    column's processor, without a dictionary of fields or a per-field dispatch at every row.
    The cells of the few-valued columns (:data:`_MEMO_FIELDS`: kind, stage, flags, country, tags,
    industry, source, owner) are looked up in a memory of the *bound* value of each cell seen
    (``" Company "`` -> ``CustomerKind.COMPANY`` -> ``"company"`` in one look-up); a column the
    file lacks is its bound default, worked out once.  A sealed value (its own nonce each time)
    is never remembered: it is sealed at every row.
    """

    def __init__(self, checker: "RowChecker", plan: list[tuple[int, str, bool]]):
        self.checker = checker
        self.plan = [(i, name, strip) for i, name, strip in plan]
        self.binder = checker.binder
        # (name, longest) of every text column with a limit, as RowChecker._storable checks them.
        self.limits = {name: limit for name, limit in checker._text_columns if limit}
        scope: dict[str, Any] = {}
        source = self._source(scope)
        exec(compile(source, "<crmcore fast customer row>", "exec"), scope)  # noqa: S102
        self._row: Callable[[list[Any]], tuple[Any, ...] | None] = scope["row"]

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
        try:
            return self._row(values)
        except Exception:  # any doubt: the general path decides (and words the problem)
            return None

    # -- the row function, generated once per file ---------------------------------------------
    def _source(self, scope: dict[str, Any]) -> str:
        """The source of ``row(values)``; ``scope`` gets the names it uses.

        Reading it: the cells of the many-valued columns (``t<i>``: the text as
        ``RowChecker.given`` keeps it, "" when blank) are read first and searched for control
        characters at once; then each output column ``x<j>``: a remembered cell, a rule applied
        to a cell, or a default.  ``return None`` where the row is unusual; a rule's exception
        (a bad value) ends in :meth:`__call__`, which returns None too.
        """
        validator = self.checker.validator
        scope.update(FORBIDDEN=ONE_LINE_FORBIDDEN.search, EMAIL=normalize_email, PHONE=normalize_phone,
                     REGION=validator.config.phone_region, BIRTHDAY=_birthday, TODAY=validator.today)
        # The id column is read and dropped by the general path (ids are the database's here).
        cells = {name: (i, strip) for i, name, strip in self.plan if name != "id"}
        if "name" not in cells:
            return "def row(values):\n    return None  # no name: the general path refuses the row\n"
        lines = ["def row(values):"]
        read = [name for name in cells if name not in _MEMO_FIELDS]
        for name in read:
            i, strip = cells[name]
            lines += [f"    t{i} = values[{i}]",
                      f"    if t{i}.__class__ is not str:",
                      f"        if t{i} is not None: return None  # an XLSX number or date: the general path",
                      f"        t{i} = ''",
                      f"    else: t{i} = t{i}.strip()" if strip else f"    elif t{i}.isspace(): t{i} = ''"]
        # Every such cell at once (the remembered ones are searched at first sight): a superset of
        # the text fields EntityValidator._texts checks.
        lines.append("    if FORBIDDEN(''.join((" + "".join(f"t{cells[n][0]}, " for n in read)
                     + "))) is not None: return None")
        columns = self.binder.columns if self.binder is not None else self.checker.table_columns
        for j, column in enumerate(columns):
            if column in cells and column in _MEMO_FIELDS:
                lines += self._remembered(scope, j, column, *cells[column])
            elif column in cells:
                lines += self._converted(scope, j, column, f"t{cells[column][0]}")
            else:
                lines += self._default(scope, j, column)
        lines.append("    return (" + "".join(f"x{j}, " for j in range(len(columns))) + ")")
        return "\n".join(lines) + "\n"

    def _process(self, column: str) -> tuple[Any, bool]:
        """(the column's bind processor or None, whether the bound value depends on the value alone)."""
        if self.binder is None:
            return None, True
        return self.binder.processor(column), column in self.binder.pure

    def _bound(self, scope: dict[str, Any], j: int, column: str, value: str) -> list[str]:
        """``x<j> =`` the value (an expression) as the row holds it: bound, or to_row's."""
        if column == "tags":
            value = f"list({value})"  # a tuple here; a list in the entity's table row
        process, _ = self._process(column)
        if process is None:
            return [f"    x{j} = {value}"]
        scope[f"P{j}"] = process
        return [f"    x{j} = P{j}({value})"]

    def _converted(self, scope: dict[str, Any], j: int, column: str, t: str) -> list[str]:
        """A column of many values (a name, an address, a birthday): its rule at every row.

        A limit (RowChecker._storable; NUL is a forbidden character above) is checked on the
        value: the cell itself for text kept as it is (len("") is 0), the rule's result else."""
        limit = self.limits.get(column)
        too_long = f"        if len(v) > {limit}: return None" if limit else None
        if column == "name":
            lines = [f"    if not {t}.strip(): return None", f"    v = {t}"]
            if limit:
                lines.append(too_long[4:])  # type: ignore[index]
        elif column in ("email", "phone", "birthday"):
            rule = {"email": f"EMAIL({t})", "phone": f"PHONE({t}, REGION)", "birthday": f"BIRTHDAY({t})"}[column]
            lines = [f"    if {t}:", f"        v = {rule}"]
            if column == "birthday":
                lines.append("        if v > TODAY(): return None")
            if limit:
                lines.append(too_long)  # type: ignore[arg-type]
            lines.append("    else: v = None")
        elif column in _PLAIN_TEXT:
            lines = [f"    if len({t}) > {limit}: return None"] if limit else []
            lines.append(f"    v = {t} or None")
        else:  # pragma: no cover - FAST_FIELDS and the rules above go together
            raise AssertionError(f"no rule for {column}")
        return lines + self._bound(scope, j, column, "v")

    def _remembered(self, scope: dict[str, Any], j: int, column: str, i: int, strip: bool) -> list[str]:
        """A few-valued column: the bound value of each distinct cell, worked out at its first sight."""
        process, pure = self._process(column)
        memo: dict[Any, Any] = {}
        scope[f"M{j}"] = memo
        scope[f"F{j}"] = partial(_first_sight, memo, strip, _MEMO_FIELDS[column], _DEFAULTS.get(column),
                                 self.limits.get(column), process if pure else None, column == "tags")
        lines = ["    try:", f"        x{j} = M{j}[values[{i}]]", "    except KeyError:",
                 f"        x{j} = F{j}(values[{i}])"]
        if not pure:  # remembered unbound; a sealed value is sealed at every row
            lines += self._bound(scope, j, column, f"x{j}")
        elif self.binder is None and column == "tags":
            lines.append(f"    x{j} = list(x{j})")  # to_row's tags: a new list each row
        return lines

    def _default(self, scope: dict[str, Any], j: int, column: str) -> list[str]:
        """A column the file does not fill: the entity's default (time stamps: "now")."""
        scope[f"C{j}"] = self.checker.now if column in _STAMPS else _DEFAULTS.get(column)
        value = "{}" if column == "attributes" else f"C{j}"  # a new dict each row
        process, pure = self._process(column)
        if process is not None and pure:  # the same bound value every row, if it is immutable
            bound = process(list(scope[f"C{j}"]) if column == "tags" else {} if column == "attributes"
                            else scope[f"C{j}"])
            if bound is None or type(bound) in _IMMUTABLE:
                scope[f"C{j}"] = bound
                return [f"    x{j} = C{j}"]
        return self._bound(scope, j, column, value)


def _first_sight(memo: dict[Any, Any], strip: bool, convert: Callable[[str], Any], default: Any,
                 limit: int | None, process: Callable[[Any], Any] | None, listed: bool, cell: Any) -> Any:
    """What a row function does with a cell of a few-valued column, remembered for the next rows.

    ``memo`` maps cells (text or None) to their value, bound with ``process`` if given (of the
    value as a list, ``listed``); raises for a cell the general path must see (nothing is
    remembered then).  Only text and None are keys: no number can equal one (1 == True does).
    """
    if cell is None:
        text = ""
    elif cell.__class__ is not str:
        raise ValueError("not text: the general path types it")
    else:
        text = cell.strip() if strip else ("" if cell.isspace() else cell)
    if not text:
        value = default
    elif ONE_LINE_FORBIDDEN.search(text) is not None:
        raise ValueError("a control character: the general path words it")
    else:
        value = convert(text)
    if limit and value is not None and len(value) > limit:  # RowChecker._storable
        raise ValueError("too long: the general path words it")
    if process is not None:
        value = process(list(value) if listed else value)
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[cell] = value
    return value


def _kind(text: str) -> CustomerKind:
    return CustomerKind(text.strip().lower())  # convert._parse_enum without its message


def _stage(text: str) -> LifecycleStage:
    return LifecycleStage(text.strip().lower())


def _tags(text: str) -> tuple[str, ...]:
    """convert._parse_tags of a str; a JSON list is the general path's to read."""
    if text.lstrip().startswith("["):
        raise ValueError("a JSON list of tags: the general path reads it")
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _text(text: str) -> str:
    return text


#: The few-valued fields (remembered by cell) and their rules (each raises for a bad value).
_MEMO_FIELDS: dict[str, Callable[[str], Any]] = {
    "kind": _kind, "stage": _stage, "consent_email": parse_bool, "consent_sms": parse_bool,
    "consent_marketing": parse_bool, "country": normalize_country, "tags": _tags, "industry": _text,
    "source": _text, "owner": _text}


def _birthday(text: str) -> date:
    """What check_given and the converter make of a birthday cell (ValueError: not a date)."""
    if (len(text) == 10 and text[4] == "-" and text[7] == "-" and text.isascii() and text[:4].isdigit()
            and text[5:7].isdigit() and text[8:].isdigit()):
        # YYYY-MM-DD: parse_loose_date leaves it as it is (no / . or 年), parse_date reads it
        return date.fromisoformat(text)
    loose = parse_loose_date(text, False)
    return loose if loose.__class__ is date else parse_date(loose)


__all__ = ["FAST_FIELDS", "FastCustomerRows", "KNOWN_FIELDS"]
