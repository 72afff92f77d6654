"""The point-read unit of work: ``get`` and ``find`` without SQLAlchemy's execution per read.

A :class:`ReadUnit` is a read-only :class:`~crmcore.application.uow.UnitOfWork` like any other for
the code that runs in it: ``crm.authorize`` asks every plugin (the access policy reads the actor's
role, kept in :attr:`memo` for the unit), record visibility rewrites each statement that reads a
restricted table, and ``uow.conn`` is there for a plugin that wants it (opened on first use).
What differs is how its point reads run: :meth:`read_first` hands the (rewritten) statement to
:class:`~crmcore.store.pointread.PointReads`, which runs it compiled once on a raw driver
connection in autocommit mode.  Each read is its own statement, as a plain unit's were (SQLite
without ``BEGIN``, PostgreSQL in autocommit), and nothing is cached across units: a role changed
by anyone counts at the very next read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from ..domain.convert import local_zone
from ..store.pointread import Fallback, PointReads
from .tokens import ActingUser
from .uow import UnitOfWork, current_unit
from .visibility import reads_restricted, rewrite

if TYPE_CHECKING:
    from ..app import CRM

__all__ = ["Fallback", "ReadUnit"]


class ReadUnit(UnitOfWork):
    """A read-only unit whose point reads run on a raw connection (see the module).

    Used as a context manager (``with unit:``); a :class:`Fallback` out of it means "read this
    through an ordinary unit of work" (the caller does).
    """

    def __init__(self, crm: "CRM", reads: PointReads, actor: str | None, now: datetime,
                 user: ActingUser | None):
        self._reads = reads
        self._raw: Any = None
        self._sql: Connection | None = None
        super().__init__(crm, None, actor, now)  # type: ignore[arg-type]  # (conn opens on first use)
        self.readonly = True
        self.acting_user = user if user is not None and user.login == self.actor else None

    # -- the SQLAlchemy connection, for whoever asks for one (a plugin's own query) ------------
    @property
    def conn(self) -> Connection:
        """A SQLAlchemy connection for this unit, opened when first asked for (as a plain read-only
        unit's: SQLite without ``BEGIN``, PostgreSQL in autocommit); the visibility listener finds
        this unit on it."""
        if self._sql is None:
            conn = self.crm.engine.connect()
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(crm_readonly=True, isolation_level="AUTOCOMMIT")
            else:
                conn = conn.execution_options(crm_readonly=True, crm_plain=True)
            conn.begin()
            conn.execution_options(crm_unit=self)
            self._sql = conn
        return self._sql

    @conn.setter
    def conn(self, value: Connection | None) -> None:
        self._sql = value

    def read_first(self, statement: Any, params: Mapping[str, Any]) -> tuple[tuple[str, ...], Sequence[Any]] | None:
        """:meth:`UnitOfWork.read_first` on the raw connection, visibility applied as the
        engine's listener applies it to a scoped unit's statements."""
        if reads_restricted(statement):
            seen = self.visibility
            if seen is not None:
                statement = rewrite(seen, statement)
        return self._reads.first(self._raw, statement, params)

    # -- the unit's life ------------------------------------------------------------------------
    def __enter__(self) -> "ReadUnit":
        self._raw = self._reads.checkout()
        self._token = current_unit.set(self)
        # Times given without a zone inside a use case are local ones (as in every unit).
        self._zone = local_zone(ZoneInfo(self.crm.config.timezone))
        self._zone.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        try:
            self._zone.__exit__(kind, error, tb)
            current_unit.reset(self._token)
            if kind is None and self.audit.pending:
                self.audit.flush()  # (no point read records any; a plugin's handler might)
            if self._sql is not None:
                if kind is None:
                    self._sql.commit()
                self._sql.close()
        finally:
            if isinstance(error, Fallback):
                self._reads.discard(self._raw)  # (a database error: the connection may be broken)
            else:
                self._reads.checkin(self._raw)
            self._raw = None
        if kind is None:
            self.run_after_commit()
