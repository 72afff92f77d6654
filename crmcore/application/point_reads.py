"""The point-read unit of work: ``get`` and ``find`` without SQLAlchemy's execution per read.

A :class:`ReadUnit` is a read-only :class:`~crmcore.application.uow.UnitOfWork` like any other for
the code that runs in it: ``crm.authorize`` asks every plugin (the access policy reads the actor's
role, kept in :attr:`memo` for the unit), record visibility rewrites each statement that reads a
restricted table, and ``uow.conn`` is there for a plugin that wants it (opened on first use).
What differs is how its point reads run: :meth:`read_first` hands the (rewritten) statement to
:class:`~crmcore.store.pointread.PointReads`, which runs it compiled once on a raw driver
connection in autocommit mode.  Each read is its own statement, as a plain unit's were (SQLite
without ``BEGIN``, PostgreSQL in autocommit).

The acting user's record (login, active, role: :class:`~crmcore.application.tokens.ActingUser`,
what the ``access`` plugin decides with) is remembered across units (:class:`KnownUsers`) but never
trusted unconfirmed: a unit that starts from a remembered record reads the record again *in the
same statement* as each row it returns (one ``EXISTS`` on ``users`` appended to the point
read: no second statement, no second round trip on a server), or, when it returns no row or reads
no point statement, with one look-up when it ends.  If the database disagrees, the unit's answer is
dropped (:class:`Stale`, a :class:`Fallback`) and the read runs again in an ordinary unit with the
record read afresh.  So a role changed or a user deactivated by anyone, in any process, counts at
the very next read, as when the record was read first in every unit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, bindparam, exists, literal_column, select
from sqlalchemy.sql import Select

from ..domain.convert import enter_local_zone, leave_local_zone
from ..store import tables
from ..store.pointread import LOGIN, Fallback, PointReads, _Shape
from .tokens import ActingUser
from .uow import _UNSET, SYSTEM_ACTOR, UnitOfWork, _Unset, current_unit
from .visibility import Visibility, reads_deals, reads_restricted, rewrite

if TYPE_CHECKING:
    from ..app import CRM
    from ..store.repositories import Repository

__all__ = ["Fallback", "KnownUsers", "ReadUnit", "Stale"]

#: The acting user's record by login (built once: compiled once per engine by the reader).
_USER = select(tables.users.c.active, tables.users.c.role).where(tables.users.c.login == bindparam(LOGIN))


def _same_record(form: int) -> Any:
    """One column a point read carries along to confirm the remembered record of ``:crm_login``
    (one index look-up, where reading ``active`` and ``role`` back took two).  ``form`` is
    :func:`_form_of` the remembered record: its ``active`` is part of the SQL, so the column is
    the user's role when they are still as active as remembered (NULL otherwise, or when no such
    user is left), which the unit compares with the remembered role in Python (case and all: a
    MariaDB collation may call two spellings equal); for a remembered role that is NULL (the
    default role), whether such a user with no role exists (``EXISTS``: true).  Uncorrelated: it
    means the same in any statement, even one that reads ``users``."""
    users = tables.users
    # (active is compared as SQL truth, as bool() takes the value read: any non-zero is active)
    active = users.c.active != False if form & _ACTIVE else users.c.active == False  # noqa: E712
    login = users.c.login == bindparam(LOGIN)
    if form & _NO_ROLE:
        same: Any = select(literal_column("1")).where(login, active, users.c.role.is_(None)).correlate(None)
        return exists(same).label("crm_user_same")
    return select(users.c.role).where(login, active).correlate(None).scalar_subquery().label("crm_user_same")


#: The bits of a confirming form (:func:`_form_of`).
_ACTIVE, _NO_ROLE = 1, 2


def _form_of(record: ActingUser) -> int:
    """Which of the four confirming forms checks ``record`` (see :func:`_same_record`)."""
    return (_ACTIVE if record.active else 0) | (_NO_ROLE if record.role is None else 0)


def _expected(record: ActingUser) -> Any:
    """What :func:`_same_record` reads while the database still has ``record``."""
    return True if record.role is None else record.role


class _Plan:
    """What a point-read unit works out once per statement object (see :func:`_plan_of`)."""

    __slots__ = ("restricted", "deals", "statement", "confirming", "read", "keys")

    def __init__(self, restricted: bool, deals: bool, statement: Any):
        self.restricted, self.deals, self.statement = restricted, deals, statement
        #: The confirming statements by form (:func:`_form_of`), made when first needed; None: the
        #: statement is not a plain SELECT to append to (the unit confirms the record when it ends).
        self.confirming: list[Any] | None = [None] * 4 if isinstance(statement, Select) else None
        #: A confirming statement's column keys as last read (each engine's reader has its own
        #: tuple), and the same without the confirming one: one tuple for every read, not a slice
        #: per read.
        self.read: tuple[str, ...] | None = None
        self.keys: tuple[str, ...] = ()

    def confirming_form(self, form: int) -> Any:
        """The statement with :func:`_same_record` of ``form`` appended as its last column."""
        assert self.confirming is not None
        found = self.confirming[form]
        if found is None:
            found = self.confirming[form] = self.statement.add_columns(_same_record(form))
        return found


#: Plans by statement object: the statements built once (a repository's point read, a plugin's
#: look-up) and their rewrites.  Bounded, oldest out (a rewrite that cannot be reused is a new
#: statement per read).
_PLANS: dict[Any, _Plan] = {}
MAX_PLANS = 1024


def _plan_of(statement: Any) -> _Plan:
    """The :class:`_Plan` of ``statement``: whether it reads a table visibility can restrict
    (:func:`reads_restricted`) and one restricted through deals (:func:`reads_deals`), and its
    confirming forms (:meth:`_Plan.confirming_form`).  One dict look-up per read instead of three weak ones."""
    found = _PLANS.get(statement)
    if found is None:
        restricted = reads_restricted(statement)
        found = _Plan(restricted, restricted and reads_deals(statement), statement)
        if len(_PLANS) >= MAX_PLANS:
            del _PLANS[next(iter(_PLANS))]
        _PLANS[statement] = found
    return found


#: The configured time zone's ZoneInfo by name (asked by every point read).
_zone = functools.lru_cache(maxsize=16)(ZoneInfo)


class Stale(Fallback):
    """The remembered acting user's record is not the database's any more: read again in an
    ordinary unit (the record is remembered afresh already)."""


class KnownUsers:
    """Acting users' records remembered across point-read units, one CRM's (see the module).

    Only ever a hint: a :class:`ReadUnit` that uses one confirms it against the database in the
    statement that reads its answer.  Bounded (oldest out); ``enabled`` turns off for good when
    the database cannot be asked (a schema older than ``users.role``).
    """

    MAX = 4096

    def __init__(self) -> None:
        #: By login: the record, its confirming form (:func:`_form_of`) and what that form reads
        #: while the record holds (:func:`_expected`), worked out once per record, not per read.
        self._records: dict[str, tuple[ActingUser, int, Any]] = {}
        self.enabled = True

    def get(self, login: str) -> ActingUser | None:
        """The remembered record of ``login`` (None: not known)."""
        found = self._records.get(login)
        return None if found is None else found[0]

    def entry(self, login: str) -> tuple[ActingUser, int, Any] | None:
        """(record, confirming form, what it reads) of ``login`` (None: not known)."""
        return self._records.get(login)

    def remember(self, login: str, record: ActingUser | None) -> None:
        """Remember ``record`` for ``login`` (None: forget it)."""
        if record is None:
            self._records.pop(login, None)
            return
        if len(self._records) >= self.MAX and login not in self._records:
            self._records.pop(next(iter(self._records)), None)
        self._records[login] = (record, _form_of(record), _expected(record))

    def clear(self) -> None:
        """Forget every record."""
        self._records.clear()


def _record(login: str, values: Any) -> ActingUser | None:
    """The :class:`ActingUser` of ``login`` from (active, role) as read (None: no such user)."""
    if values is None or values[0] is None:
        return None
    return ActingUser(login, bool(values[0]), values[1])



class ReadUnit(UnitOfWork):
    """A read-only unit whose point reads run on a raw connection (see the module).

    Used as a context manager (``with unit:``); a :class:`Fallback` out of it means "read this
    through an ordinary unit of work" (the caller does).
    """

    # What a unit starts with, as class attributes: a point read sets only what differs (each
    # attribute set in __init__ cost every read its share).
    readonly = True
    _raw: Any = None
    _sql: Connection | None = None
    #: The remembered record this unit acts on, until a read of this unit confirms it, its
    #: confirming form and what that form reads (:func:`_same_record`).
    _remembered: ActingUser | None = None
    _form: int = 0
    _expect: Any = None
    _confirmed = False
    _customer_view: Visibility | None | _Unset = _UNSET

    def __init__(self, crm: "CRM", reads: PointReads, actor: str | None, now: datetime,
                 user: ActingUser | None, known: KnownUsers | None = None):
        # UnitOfWork.__init__'s per-unit state, set here (its ``conn = None`` would go through
        # the property setter below); tests/core/test_point_reads.py checks that a ReadUnit has
        # every attribute a UnitOfWork sets.
        self.crm, self.now, self._reads = crm, now, reads
        self.actor = actor = actor or SYSTEM_ACTOR
        self._after_commit, self._at_end, self.memo = [], [], {}
        if user is not None and user.login == actor:
            self.acting_user = user
        # Where the acting user's record is remembered (None: read by whoever needs it, per unit).
        self._known = known if known is not None and known.enabled and self.acting_user is None \
            and actor != SYSTEM_ACTOR else None

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
        found = self._run(statement, params)
        if found is None:
            return None
        shape, row, tail = found
        values = shape.process(row)  # type: ignore[misc]  # (set with the first row)
        return (shape.keys[:-1], values[:-1]) if tail else (shape.keys, values)

    def read_entity(self, statement: Any, params: Mapping[str, Any], repository: "Repository[Any]") -> Any:
        """:meth:`UnitOfWork.read_entity` as :meth:`read_first` runs it, the entity made straight
        from the driver's row (:meth:`Repository.point_entity`)."""
        found = self._run(statement, params)
        return None if found is None else repository.point_entity(*found)

    def _run(self, statement: Any, params: Mapping[str, Any]) -> tuple[_Shape, Any, bool] | None:
        """The driver's first row of ``statement`` as this unit may read it (the visibility
        rewrite; with a remembered record, its confirming column appended and checked): its
        :class:`~crmcore.store.pointread._Shape`, the row, and whether the row's last column is
        the confirming one (no column of ``statement``); None: no row."""
        plan = _PLANS.get(statement) or _plan_of(statement)
        if plan.restricted:
            seen = self.visibility if plan.deals else self._customers_visibility()
            if seen is not None:
                statement = rewrite(seen, statement)
                plan = _PLANS.get(statement) or _plan_of(statement)
        remembered = self._remembered
        if remembered is None or plan.confirming is None:
            found = self._reads.first_row(self._raw, statement, params)
            return None if found is None else (found[0], found[1], False)
        form = self._form
        confirming = plan.confirming[form]
        if confirming is None:
            confirming = plan.confirming_form(form)
        found = self._reads.first_row(self._raw, confirming, params, remembered.login)
        if found is None:
            self._confirm()  # (no row to carry the record: ask for it alone)
            return None
        shape, row = found
        same = row[-1]
        if shape.last is not None and same is not None:
            same = shape.last(same)
        if same != self._expect:  # changed: read it (for the next unit) and drop this answer
            self._forget_stale(self._look_up())
        self._confirmed = True
        return shape, row, True

    def _customers_visibility(self) -> Visibility | None:
        """:attr:`visibility` for a statement that reads no deal (nor a table restricted through
        deals): only the customer condition matters there, so only that is asked of the plugins."""
        if not isinstance(self._visibility, _Unset):
            return self._visibility  # (the whole of it is known already)
        if isinstance(self._customer_view, _Unset):
            self._customer_view = None  # the plugins' own look-ups while asking read unrestricted
            self._customer_view = Visibility.of_customers(self.crm, self.actor)
        return self._customer_view

    # -- the acting user's record ---------------------------------------------------------------
    def _look_up(self) -> ActingUser | None:
        """The acting user's record as the database has it now (one statement)."""
        found = self._reads.first(self._raw, _USER, {LOGIN: self.actor})
        return _record(self.actor, None if found is None else found[1])

    def _start(self, known: KnownUsers) -> None:
        """Set :attr:`acting_user`: the remembered record (confirmed later), or read and remembered."""
        entry = known.entry(self.actor)
        if entry is not None:
            self.acting_user, self._form, self._expect = entry
            self._remembered = self.acting_user
            return
        try:
            self.acting_user = self._look_up()
        except Fallback:
            known.enabled = False  # (no users.role yet: the policy reads what it needs, per unit)
            raise
        known.remember(self.actor, self.acting_user)

    def _confirm(self) -> None:
        """Check the remembered record against the database (:class:`Stale` if it changed)."""
        remembered = self._remembered
        if remembered is not None and not self._confirmed:
            fresh = self._look_up()
            if fresh != remembered:
                self._forget_stale(fresh)
            self._confirmed = True

    def _forget_stale(self, fresh: ActingUser | None) -> None:
        assert self._known is not None
        self._known.remember(self.actor, fresh)
        raise Stale(f"the record of {self.actor!r} changed")

    # -- the unit's life ------------------------------------------------------------------------
    def __enter__(self) -> "ReadUnit":
        self._raw = self._reads.checkout()
        known = self._known
        if known is not None:
            entry = known._records.get(self.actor)  # (_start's usual case, without its two calls)
            if entry is not None:
                self.acting_user, self._form, self._expect = entry
                self._remembered = entry[0]
            else:
                try:
                    self._start(known)
                except Fallback:
                    self._reads.discard(self._raw)
                    raise
        self._token = current_unit.set(self)
        # Times given without a zone inside a use case are local ones (as in every unit).
        self._zone = enter_local_zone(_zone(self.crm.config.timezone))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if kind is None and self._sql is None and (self._confirmed or self._remembered is None) \
                and not self._after_commit and "audit" not in self.__dict__:
            # The usual end of a point read: an answer on a confirmed record, nothing else opened
            # or recorded (what the general path below would do, without its checks).
            leave_local_zone(self._zone)
            current_unit.reset(self._token)
            self._reads.checkin(self._raw)
            self._raw = None
            return
        stale: Fallback | None = None
        if not isinstance(error, Fallback):
            try:
                # Nothing leaves this unit, an answer or a refusal, decided on an unconfirmed record.
                self._confirm()
            except Fallback as exc:
                stale = exc
        ok = kind is None and stale is None
        try:
            leave_local_zone(self._zone)
            current_unit.reset(self._token)
            audit = self.__dict__.get("audit")  # (made when first used: no point read records any)
            if ok and audit is not None and audit.pending:
                audit.flush()  # (a plugin's handler might)
            if self._sql is not None:
                if ok:
                    self._sql.commit()
                self._sql.close()
        finally:
            if (isinstance(error, Fallback) and not isinstance(error, Stale)) or \
                    (stale is not None and not isinstance(stale, Stale)):
                self._reads.discard(self._raw)  # (a database error: the connection may be broken)
            else:
                self._reads.checkin(self._raw)
            self._raw = None
        if stale is not None:
            raise stale
        if ok and self._after_commit:
            self.run_after_commit()
