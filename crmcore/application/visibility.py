"""Record visibility: which rows the acting user may see, applied in SQL to every read.

Plugins answer the ``visibility`` hook with a condition on ``customers`` and on
``deals`` for an actor (the first-party ``access`` plugin: a sales rep's own
customers, a manager's team's, a territory's regions).  A unit of work holds
one :class:`Visibility` for its actor, and every SELECT the unit runs while it
is *scoped* is rewritten before it executes: each of these tables becomes a
subquery of its visible rows, under the same column names:

* ``customers``: every plugin's customer condition (AND);
* ``deals``: every plugin's deal condition, or, when no plugin answers for
  deals, "the deal's customer is visible";
* every other table with a ``customer_id`` column (contacts, interactions,
  ledger entries, messages, memberships, consent history, audit records, a
  plugin's own tables): its customer is visible;
* a table with a ``deal_id`` and no ``customer_id`` (stage history): its deal
  is visible.

The rewrite happens at the connection (a ``before_execute`` listener), below
repositories, exporters, segment listings and report plugins, so no read path
can forget it and a third-party report needs no code for it.  Read-only units
are scoped throughout; a writing unit is scoped only inside
``with uow.scoped():``, where a use case loads the record the user named (so
editing a record one cannot see is :class:`~crmcore.domain.errors.NotFound`),
while what a write does next (a won deal promoting its customer, loyalty
jobs, uniqueness checks) sees every row, as the data's rules require.
"""

from __future__ import annotations

import itertools
import weakref
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Column, Connection, Engine, Table, and_, event, select
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Alias, CompoundSelect, Subquery
from sqlalchemy.sql.util import find_tables
from sqlalchemy.sql.visitors import replacement_traverse

from ..store import tables

if TYPE_CHECKING:
    from ..app import CRM

__all__ = ["Visibility", "install"]


def _conditions(crm: "CRM", actor: str, entity: str) -> ColumnElement[bool] | None:
    """Every plugin's condition for ``entity``, joined with AND; None when nobody restricts."""
    found = crm.plugins.call("visibility", actor=actor, entity=entity, crm=crm)
    if not found:  # (nobody restricts: the usual answer for an administrator)
        return None
    if len(found) == 1:  # (one plugin's answer, a condition or None: no list to filter)
        only: ColumnElement[bool] | None = found[0]
        return only
    found = [c for c in found if c is not None]
    if not found:
        return None
    return found[0] if len(found) == 1 else and_(*found)


class Visibility:
    """What one actor may see: a condition per table, and the statement rewrite that applies them.

    :ivar customer: the condition on ``customers`` (None: every customer).
    :ivar deal: the condition on ``deals`` (None: every deal of a visible customer).
    """

    def __init__(self, customer: ColumnElement[bool] | None, deal: ColumnElement[bool] | None):
        self.customer, self.deal = customer, deal
        self._views: dict[Table | Alias, Subquery | None] = {}
        #: Statements rewritten by these conditions (:func:`rewrite`), by statement object.
        self._rewritten: dict[Any, Any] = {}

    @classmethod
    def of(cls, crm: "CRM", actor: str) -> "Visibility | None":
        """The visibility of ``actor`` in ``crm``; None when no plugin restricts it."""
        if not crm.plugins.has_impls("visibility"):
            return None
        customer = _conditions(crm, actor, "customer")
        deal = _conditions(crm, actor, "deal")
        return None if customer is None and deal is None else cls(customer, deal)

    @classmethod
    def of_customers(cls, crm: "CRM", actor: str) -> "Visibility | None":
        """:meth:`of` for statements that read no deal (:func:`reads_deals` false): only the
        customer condition is asked (the deal one cannot change what such a statement reads)."""
        customer = _conditions(crm, actor, "customer")
        if customer is None:
            return None
        # The same object for the same condition object (the access plugin returns one per scope
        # and login): its views and rewrites are then found on it, read after read.
        known = _BY_CUSTOMER.get(id(customer))
        if known is not None and known.customer is customer:
            return known
        found = cls(customer, None)
        if len(_BY_CUSTOMER) >= _REWRITES_MAX:
            del _BY_CUSTOMER[next(iter(_BY_CUSTOMER))]
        _BY_CUSTOMER[id(customer)] = found  # (it keeps the condition alive: the id is not reused)
        return found

    # -- the visible rows ------------------------------------------------------------
    def customer_ids(self) -> Select[Any]:
        """``SELECT id FROM customers WHERE <visible>``."""
        query = select(tables.customers.c.id)
        return query if self.customer is None else query.where(self.customer)

    def deal_ids(self) -> Select[Any]:
        """``SELECT id FROM deals WHERE <visible>``."""
        return select(tables.deals.c.id).where(self._deal_condition())

    def _deal_condition(self) -> ColumnElement[bool]:
        if self.deal is not None:
            return self.deal
        return tables.deals.c.customer_id.in_(self.customer_ids())

    def condition(self, table: Table) -> ColumnElement[bool] | None:
        """The condition rows of ``table`` must meet (None: the table is not restricted)."""
        if table is tables.customers:
            return self.customer
        if table is tables.deals:
            return self._deal_condition()
        if "customer_id" in table.c:
            return None if self.customer is None else table.c.customer_id.in_(self.customer_ids())
        if "deal_id" in table.c:
            return table.c.deal_id.in_(self.deal_ids())
        return None

    def view(self, source: Table | Alias) -> Subquery | None:
        """The visible rows of a table (or of an alias of one) as a subquery with the same
        columns (cached per source), or None when its rows are not restricted."""
        if source not in self._views:
            table = source if isinstance(source, Table) else source.element
            condition = self.condition(table) if isinstance(table, Table) else None
            name = f"visible_{table.name}" if source is table else source.name
            self._views[source] = (None if condition is None else
                                   select(table).where(condition).subquery(name))
        return self._views[source]

    # -- the rewrite ---------------------------------------------------------------------
    def apply(self, statement: Any) -> Any:
        """``statement`` reading visible rows only: each restricted table replaced by its view."""

        def replace(element: Any) -> Any:
            if isinstance(element, Table | Alias):
                return self.view(element)
            if isinstance(element, Column) and isinstance(element.table, Table | Alias):
                view = self.view(element.table)
                return None if view is None else view.c[element.key]
            return None

        # (cast: the stubs' overloads take no Select, which is what this is always given)
        return cast(Any, replacement_traverse)(statement, {}, replace)


# Whether a statement reads any table a visibility condition can restrict, per statement object: the
# statements built once (a repository's point read, a plugin's look-up) are checked once.
_READS_RESTRICTED: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
# Rewritten statements by (statement, the conditions' structure and values): a point read of a
# restricted actor rewrites its statement once, not in every unit of work.  Bounded, oldest out.
_REWRITES: dict[tuple[Any, ...], Any] = {}
_REWRITES_MAX = 512
# The customers-only visibility (Visibility.of_customers) by the id of its condition object.
_BY_CUSTOMER: "dict[int, Visibility]" = {}
#: Rewrites kept on one Visibility object (a few point statements per actor).
_OWN_REWRITES_MAX = 64


def restrictable(table: Any) -> bool:
    """Whether a visibility condition can ever restrict ``table`` (see :meth:`Visibility.condition`)."""
    if not isinstance(table, Table):
        return False
    return table is tables.customers or table is tables.deals or "customer_id" in table.c or "deal_id" in table.c


def reads_restricted(statement: Any) -> bool:
    """Whether ``statement`` reads a :func:`restrictable` table (when it does not, the rewrite would
    change nothing, and no plugin needs asking)."""
    try:
        return _READS_RESTRICTED[statement]
    except (KeyError, TypeError):
        pass
    # The tables a SELECT's columns come from answer most statements (a repository's list or
    # page, built anew per request) without walking the whole statement; only one reading none
    # of them there is searched through (a subquery in its WHERE clause may still read one).
    froms = statement.columns_clause_froms if isinstance(statement, Select) else ()
    found = any(restrictable(t) for t in froms) or \
        any(restrictable(t) for t in find_tables(statement, include_aliases=True, include_crud=True))
    try:
        _READS_RESTRICTED[statement] = found
    except TypeError:  # pragma: no cover - every Select is weak-referenceable
        pass
    return found


_READS_DEALS: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _deal_restricted(table: Any) -> bool:
    """Whether ``table`` (or the table of an alias) is restricted through the deal condition."""
    table = getattr(table, "element", table) if isinstance(table, Alias) else table
    return isinstance(table, Table) and (table is tables.deals or
                                         ("deal_id" in table.c and "customer_id" not in table.c))


def reads_deals(statement: Any) -> bool:
    """Whether ``statement`` reads ``deals`` or a table restricted through it (see
    :meth:`Visibility.condition`): where it does not, only the customer condition applies."""
    try:
        return _READS_DEALS[statement]
    except (KeyError, TypeError):
        pass
    found = any(_deal_restricted(t) for t in find_tables(statement, include_aliases=True, include_crud=True))
    try:
        _READS_DEALS[statement] = found
    except TypeError:  # pragma: no cover - every Select is weak-referenceable
        pass
    return found


# Conditions' tokens by the condition object's id (the object kept with its token, so the id is not
# reused while the entry lives): a plugin that returns the same object for the same actor (the
# access plugin does) has its condition's cache key computed once, not at every point read.
_CONDITION_KEYS: dict[int, tuple[Any, int | None]] = {}
# A number per condition structure and values (a condition's cache key is a deep tuple: hashing it
# for every rewrite look-up cost a sales rep's point read 3,000 instructions).  Numbers are never reused, so an
# entry that left this table can never make two different conditions share a rewrite.
_TOKENS: dict[tuple[Any, ...], int] = {}
_NUMBERS = itertools.count(1)


def _condition_key(condition: ColumnElement[bool] | None) -> int | None:
    """The token of a condition's structure and bound values (0: no condition; None: not cacheable)."""
    if condition is None:
        return 0
    known = _CONDITION_KEYS.get(id(condition))
    if known is not None and known[0] is condition:
        return known[1]
    structure = _structure_key(condition)
    token = None
    if structure is not None:
        token = _TOKENS.get(structure)
        if token is None:
            if len(_TOKENS) >= _REWRITES_MAX:
                del _TOKENS[next(iter(_TOKENS))]
            token = _TOKENS[structure] = next(_NUMBERS)
    if len(_CONDITION_KEYS) >= _REWRITES_MAX:
        del _CONDITION_KEYS[next(iter(_CONDITION_KEYS))]
    _CONDITION_KEYS[id(condition)] = (condition, token)
    return token


def _structure_key(condition: ColumnElement[bool]) -> tuple[Any, ...] | None:
    """The structure and bound values of a condition (None: not cacheable)."""
    key = condition._generate_cache_key()
    if key is None:
        return None
    values = tuple(b.effective_value for b in key.bindparams)
    try:
        hash(values)
    except TypeError:  # a list (an IN of values): not worth a key
        return None
    return (key.key, values)


def rewrite(visibility: Visibility, statement: Any) -> Any:
    """``visibility.apply(statement)``, reused for the same statement and the same conditions
    (structure and values: two actors with different conditions never share a rewrite)."""
    own = visibility._rewritten
    found = own.get(statement)  # (a Visibility reused across units: Visibility.of_customers)
    if found is not None:
        return found
    customer, deal = _condition_key(visibility.customer), _condition_key(visibility.deal)
    if customer is None or deal is None:
        return visibility.apply(statement)
    key = (statement, customer, deal)
    try:
        found = _REWRITES.get(key)
    except TypeError:  # pragma: no cover - statements hash by identity
        return visibility.apply(statement)
    if found is None:
        found = visibility.apply(statement)
        if len(_REWRITES) >= _REWRITES_MAX:
            del _REWRITES[next(iter(_REWRITES))]
        _REWRITES[key] = found
    if len(own) < _OWN_REWRITES_MAX:
        own[statement] = found  # (only a cacheable rewrite: its conditions' structure and values)
    return found


def install(engine: Engine) -> None:
    """Rewrite every SELECT run inside a scoped unit of work on ``engine``'s connections by the
    unit's visibility.  The unit is found on the connection (execution option ``crm_unit``, set
    by ``crm.unit()`` on the connection it opens and gone with it); the visibility is asked at
    the first SELECT that reads a restrictable table, so a unit that reads none asks no plugin."""

    def before_execute(conn: Connection, clause: Any, multiparams: Any, params: Any,
                       options: Any) -> tuple[Any, Any, Any]:
        if isinstance(clause, Select | CompoundSelect):
            unit = conn.get_execution_options().get("crm_unit")
            if unit is not None and unit.is_scoped and reads_restricted(clause):
                seen = unit.visibility
                if seen is not None:
                    clause = rewrite(seen, clause)
        return clause, multiparams, params

    event.listen(engine, "before_execute", before_execute, retval=True)
