"""The unit of work: one connection in one transaction, per use case.

Repositories, the loyalty ledger and the notification outbox are bound to it,
and event hooks receive it, so everything a use case and its plugins write
commits or rolls back together.  After-commit callbacks run only once the
transaction is durable (e.g. to wake a dispatcher).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from sqlalchemy import Connection

from ..store.repositories import (
    ContactRepository,
    CustomerRepository,
    DealRepository,
    InteractionRepository,
    Repository,
    TaskRepository,
)
from .audit import AuditTrail
from .visibility import Visibility


class _Unset:
    """Not asked yet."""


_Part = TypeVar("_Part")


class _made_once(Generic[_Part]):
    """``functools.cached_property`` without Python 3.11's lock: a unit of work belongs to one
    thread, and taking the lock cost a point read (which makes one repository per unit) about as
    much as its statement's parameters."""

    def __init__(self, make: Callable[[Any], _Part]):
        self._make, self.__doc__ = make, make.__doc__
        self._name = make.__name__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, obj: Any, owner: type | None = None) -> _Part:
        if obj is None:
            return cast(_Part, self)
        value = obj.__dict__[self._name] = self._make(obj)  # (found in __dict__ from now on)
        return value


_UNSET = _Unset()

if TYPE_CHECKING:
    from ..app import CRM
    from .tokens import ActingUser
    from ..loyalty import LoyaltyLedger
    from ..notify import Outbox


class UnitOfWork:
    """What a use case and its event handlers share.

    :ivar conn: the SQLAlchemy connection, inside the transaction.
    :ivar crm: the :class:`~crmcore.CRM` (call its services to join this unit).
    :ivar actor: the acting user's login (``system`` when nobody was named).
    :ivar audit: the audit records of this unit (appended when it commits).
    :ivar now: the time of the use case (aware UTC).
    :ivar loyalty: the points ledger bound to this unit.
    :ivar outbox: the notification outbox bound to this unit.
    :ivar memo: values worked out once per unit of work and shared by its calls (the ``access``
        plugin keeps the acting user's role here, asked by every ``authorize`` and ``visibility``
        call); it dies with the unit, so nothing in it outlives a transaction.
    :ivar acting_user: the acting user's record (login, active, role) when this unit read it
        already, as the HTTP API's token check does, or when a point-read unit starts from the
        record remembered by an earlier one (it confirms it against the database in the statement
        that reads its answer, and reads again in an ordinary unit if it changed: see
        :mod:`crmcore.application.point_reads`); None otherwise.  The ``access`` plugin takes the
        role from it instead of asking the database again.
    :ivar earn_points: whether deals that become won in this unit earn loyalty points
        (a history import turns it off: ``crm import deals --no-earn``; reversals still apply).
    """

    # What every unit starts with and few change, as class attributes (set on the unit when changed).
    acting_user: "ActingUser | None" = None
    earn_points = True
    readonly = False
    _visibility: Visibility | None | _Unset = _UNSET
    _scoping = 0

    def __init__(self, crm: "CRM", conn: Connection, actor: str | None, now: datetime):
        # Every unit of work has an actor: the built-in one when nobody was named.
        self.crm, self.conn, self.actor, self.now = crm, conn, actor or SYSTEM_ACTOR, now
        self._after_commit: list[Callable[[], Any]] = []
        self._at_end: list[Callable[[], Any]] = []
        self.memo: dict[Any, Any] = {}

    # -- the parts of a unit, made when first used (a point read needs one repository) ------------
    @_made_once
    def audit(self) -> AuditTrail:
        """The audit records of this unit (appended when it commits)."""
        return AuditTrail(self)

    @_made_once
    def customers(self) -> CustomerRepository:
        """The customers repository on this unit's connection."""
        return CustomerRepository(unit=self)

    @_made_once
    def contacts(self) -> ContactRepository:
        """The contacts repository on this unit's connection."""
        return ContactRepository(unit=self)

    @_made_once
    def interactions(self) -> InteractionRepository:
        """The interactions repository on this unit's connection."""
        return InteractionRepository(unit=self)

    @_made_once
    def deals(self) -> DealRepository:
        """The deals repository on this unit's connection."""
        return DealRepository(unit=self)

    @_made_once
    def tasks(self) -> TaskRepository:
        """The follow-up tasks repository on this unit's connection."""
        return TaskRepository(unit=self)

    @_made_once
    def loyalty(self) -> LoyaltyLedger:
        """The points ledger bound to this unit (made by the CRM: the families sit above this layer)."""
        ledger: LoyaltyLedger = self.crm.unit_parts["loyalty"](self)
        return ledger

    @_made_once
    def outbox(self) -> Outbox:
        """The notification outbox bound to this unit (made by the CRM, as :attr:`loyalty`)."""
        outbox: Outbox = self.crm.unit_parts["outbox"](self)
        return outbox

    # -- record visibility (crmcore.application.visibility) ----------------------------------
    @property
    def visibility(self) -> Visibility | None:
        """What this unit's actor may see (None: everything), asked of the plugins once."""
        if isinstance(self._visibility, _Unset):
            self._visibility = None  # the plugins' own look-ups while asking read unrestricted
            self._visibility = Visibility.of(self.crm, self.actor)
        return self._visibility

    @property
    def is_scoped(self) -> bool:
        """Whether reads now see only the actor's visible records (a read-only unit, or
        inside :meth:`scoped`)."""
        return self.readonly or self._scoping > 0

    @contextmanager
    def scoped(self) -> Iterator[None]:
        """Read only the actor's visible records in this block of a writing unit: a use case
        loads the record the user named here, so one they cannot see is NotFound."""
        self._scoping += 1
        try:
            yield
        finally:
            self._scoping -= 1

    def read_first(self, statement: Any, params: Mapping[str, Any]) -> tuple[tuple[str, ...], Sequence[Any]] | None:
        """The first row of ``statement`` (a SELECT built once, e.g. at import time) with bound
        ``params``: its column keys and values, or None.  Record visibility applies as to any read
        of this unit; a point-read unit (:class:`~crmcore.application.point_reads.ReadUnit`) runs it
        below SQLAlchemy, on the driver, with the statement compiled once."""
        result = self.conn.execute(statement, params)
        keys = tuple(result.keys())
        row = result.first()
        return None if row is None else (keys, row)

    def read_entity(self, statement: Any, params: Mapping[str, Any], repository: "Repository[Any]") -> Any:
        """The entity of :meth:`read_first`'s row, read by ``repository`` (None: no row): a
        repository's point read (:meth:`Repository.get`), whose entity a point-read unit makes
        straight from the driver's row."""
        found = self.read_first(statement, params)
        return None if found is None else repository.point_values(*found)

    @property
    def dialect(self) -> str:
        """The database dialect's name: ``sqlite``, ``postgresql`` or ``mysql``."""
        return self.conn.dialect.name

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` after the transaction commits (never on rollback)."""
        self._after_commit.append(callback)

    def at_end(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` once the transaction has ended, committed or rolled back, before the
        connection goes back to the pool: to release what belongs to the connection rather than
        to the transaction (a MariaDB named lock)."""
        self._at_end.append(callback)

    def fire(self, hook: str, **kwargs: Any) -> None:
        """Fire an event hook inside this unit; skipped when nobody listens."""
        if self.crm.plugins.has_impls(hook):
            self.crm.plugins.call(hook, uow=self, **kwargs)

    def run_after_commit(self) -> None:
        """Run the after-commit callbacks (the CRM calls it once the transaction is durable)."""
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def run_at_end(self) -> None:
        """Run the :meth:`at_end` callbacks, last registered first (the CRM calls it whether the
        transaction committed or not)."""
        callbacks, self._at_end = self._at_end, []
        for callback in reversed(callbacks):
            callback()


#: The unit of work open in this context (``crm.unit()`` joins it instead of opening another).
current_unit: contextvars.ContextVar[UnitOfWork | None] = contextvars.ContextVar("crm_unit", default=None)
#: The login of the built-in actor (an unconfigured CRM, Python code that names nobody).
SYSTEM_ACTOR = "system"
#: The acting user of the use cases in this context.
current_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar("crm_actor", default=None)


def unit_open(crm: "CRM") -> bool:
    """Whether a unit of work of ``crm`` is open in this context."""
    current = current_unit.get()
    return current is not None and current.crm is crm
