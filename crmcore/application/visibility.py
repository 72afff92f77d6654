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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Column, Connection, Table, and_, event, select
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.selectable import Alias, CompoundSelect, Subquery
from sqlalchemy.sql.visitors import replacement_traverse

from ..store import tables

if TYPE_CHECKING:
    from ..app import CRM

__all__ = ["Visibility", "install"]


def _conditions(crm: "CRM", actor: str, entity: str) -> ColumnElement[bool] | None:
    """Every plugin's condition for ``entity``, joined with AND; None when nobody restricts."""
    found = [c for c in crm.plugins.call("visibility", actor=actor, entity=entity, crm=crm) if c is not None]
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

    @classmethod
    def of(cls, crm: "CRM", actor: str) -> "Visibility | None":
        """The visibility of ``actor`` in ``crm``; None when no plugin restricts it."""
        if not crm.plugins.has_impls("visibility"):
            return None
        customer = _conditions(crm, actor, "customer")
        deal = _conditions(crm, actor, "deal")
        return None if customer is None and deal is None else cls(customer, deal)

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


def install(conn: Connection, visibility: Callable[[], "Visibility | None"], active: Callable[[], bool]) -> None:
    """Rewrite every SELECT run on ``conn`` while ``active()`` holds, by ``visibility()``
    (asked at the first such SELECT, so a unit that reads nothing asks no plugin)."""

    def before_execute(conn: Connection, clause: Any, multiparams: Any, params: Any,
                       options: Any) -> tuple[Any, Any, Any]:
        if isinstance(clause, Select | CompoundSelect) and active():
            seen = visibility()
            if seen is not None:
                clause = seen.apply(clause)
        return clause, multiparams, params

    event.listen(conn, "before_execute", before_execute, retval=True)
