"""The unit of work: one connection in one transaction, per use case.

Repositories, the loyalty ledger and the notification outbox are bound to it,
and event hooks receive it, so everything a use case and its plugins write
commits or rolls back together.  After-commit callbacks run only once the
transaction is durable (e.g. to wake a dispatcher).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from .store.repositories import (
    ContactRepository,
    CustomerRepository,
    DealRepository,
    InteractionRepository,
)

if TYPE_CHECKING:
    from .app import CRM


class UnitOfWork:
    """What a use case and its event handlers share.

    :ivar conn: the SQLAlchemy connection, inside the transaction.
    :ivar crm: the :class:`~crmcore.CRM` (call its services to join this unit).
    :ivar actor: the acting user, or None.
    :ivar now: the time of the use case (aware UTC).
    """

    def __init__(self, crm: "CRM", conn: Connection, actor: str | None, now: datetime):
        from .loyalty import LoyaltyLedger
        from .notify import Outbox

        self.crm, self.conn, self.actor, self.now = crm, conn, actor, now
        self.customers = CustomerRepository(conn)
        self.contacts = ContactRepository(conn)
        self.interactions = InteractionRepository(conn)
        self.deals = DealRepository(conn)
        self.loyalty = LoyaltyLedger(self)
        self.outbox = Outbox(self)
        self._after_commit: list[Callable[[], Any]] = []

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` after the transaction commits (never on rollback)."""
        self._after_commit.append(callback)

    def fire(self, hook: str, **kwargs: Any) -> None:
        """Fire an event hook inside this unit; skipped when nobody listens."""
        if self.crm.plugins.has_impls(hook):
            self.crm.plugins.call(hook, uow=self, **kwargs)

    def run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()
