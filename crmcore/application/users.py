"""Users, teams and territories (``crm.users``, ``crm.teams``), and owners as users.

``owner`` on customers and deals holds the owning user's *login* (a foreign key
to ``users.login``): what a person types and what reports group by, so every
report keeps showing what it showed.  Services and imports take an owner by
login or email (:func:`owner_logins` maps a batch of them in one query).

**An unconfigured CRM** (no user added with ``crm user add`` / ``crm.users.add``,
as after ``crm init`` or when upgrading a single-user CRM) keeps working as
before: a new owner label is registered as a user (source ``owner``) and the
built-in ``system`` actor acts.  Once a user has been added, an unknown owner is
an error naming the field (the import names file, line and column), and the CLI
needs ``--as``, ``CRM_USER`` or ``default_user`` in ``crm.toml``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from babel import Locale, UnknownLocaleError
from sqlalchemy import Connection, bindparam, delete, exists, insert, or_, select, update

from ..domain.errors import CRMError, NotFound, ValidationError
from ..domain.text import text_problem
from ..domain.validation import normalize_email
from ..store.tables import team_members, teams, territories, users
from .uow import SYSTEM_ACTOR

if TYPE_CHECKING:
    from ..app import CRM
    from .uow import UnitOfWork

__all__ = ["SYSTEM_ACTOR", "InactiveUser", "Team", "TeamService", "User", "UserService", "import_owners", "owner_logins",
           "owner_problems", "resolve_owner", "resolve_owners", "unknown_owner"]


# A new login: no whitespace, no control characters, at most 100 characters (owners migrated
# from free text keep whatever text they had: they were already what the records said).
LOGIN = re.compile(r"[^\s]{1,100}")


class InactiveUser(CRMError):
    """A deactivated user was asked to act."""

    def __init__(self, login: str):
        self.login = login
        super().__init__(f"user {login!r} is deactivated and cannot act")


@attrs.frozen
class User:
    """A user of the CRM: who owns customers and deals and who acts."""

    login: str
    display_name: str
    email: str | None = None
    active: bool = True
    locale: str | None = None
    time_zone: str | None = None
    source: str = "added"
    id: int | None = None
    regions: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    #: A role some policy plugin registered (``crm role list``); None: the policy's default role.
    role: str | None = None


@attrs.frozen
class Team:
    """A team: a manager, members (logins) and the regions it covers."""

    name: str
    manager: str | None = None
    members: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    id: int | None = None


# -- owners ---------------------------------------------------------------------------

def configured(conn: Connection) -> bool:
    """Whether any user was added explicitly (then owners must be users and the CLI needs an actor)."""
    return bool(conn.execute(select(exists().where(users.c.source == "added"))).scalar())


def owner_logins(uow: "UnitOfWork", values: Iterable[str | None]) -> dict[str, str]:
    """Each given owner (a login or an email) -> the user's login, in one query per 1000 values.

    In an unconfigured CRM an owner that is no user yet is registered (source ``owner``);
    otherwise it is missing from the result (the caller names the field).
    """
    wanted = sorted({v for v in values if v is not None})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 1000):
        chunk = wanted[start:start + 1000]
        # One owner (a single write): the statement built once, no IN list expanded per call.
        query = (_ONE_OWNER, {"owner": chunk[0]}) if len(chunk) == 1 else (select(users.c.login, users.c.email).where(
            or_(users.c.login.in_(chunk), users.c.email.in_(chunk))), None)
        for login, email in uow.conn.execute(*query):
            found[login] = login
            if email is not None:
                found.setdefault(email, login)
    missing = [v for v in wanted if v not in found]
    if missing and not configured(uow.conn):
        now = uow.now
        uow.conn.execute(insert(users), [{"login": v, "display_name": v, "active": True, "source": "owner",
                                          "created_at": now, "updated_at": now} for v in missing])
        uow.audit.batch("user.register-owners", "user", missing)
        found.update({v: v for v in missing})
    return {v: found[v] for v in wanted if v in found}


_ONE_OWNER = select(users.c.login, users.c.email).where(
    or_(users.c.login == bindparam("owner"), users.c.email == bindparam("owner")))


def unknown_owner(value: str) -> str:
    """The message for an owner that is no user."""
    return f"unknown owner {value!r}: no user has this login or email (add it with `crm user add`)"


def resolve_owner(uow: "UnitOfWork", entity: Any, kind: str) -> Any:
    """``entity`` with its owner as a login (given as login or email); unknown: a ValidationError."""
    owner = getattr(entity, "owner", None)
    if owner is None:
        return entity
    login = owner_logins(uow, [owner]).get(owner)
    if login is None:
        raise ValidationError.single("owner", unknown_owner(owner), kind)
    return entity if login == owner else attrs.evolve(entity, owner=login)


def resolve_owners(uow: "UnitOfWork", entities: list[Any], kind: str) -> list[Any]:
    """A batch's owners as logins (one query per 1000 owners); an unknown one names its row."""
    logins = owner_logins(uow, (getattr(e, "owner", None) for e in entities))
    resolved = []
    for index, entity in enumerate(entities):
        owner = getattr(entity, "owner", None)
        if owner is not None and owner not in logins:
            raise ValidationError.single(f"row {index}: owner", unknown_owner(owner), kind)
        resolved.append(entity if owner is None or logins[owner] == owner else attrs.evolve(entity, owner=logins[owner]))
    return resolved


def import_owners(uow: "UnitOfWork", items: list[Any], index: int, reject: Callable[[Any, str], None]) -> list[Any]:
    """The importer's batch with each row's owner (``item.row[index]``) as a login; rows whose
    owner is no user go to ``reject(item, message)`` and are left out.  One query per batch."""
    owners = {i.row[index] for i in items if i.row is not None}
    logins = owner_logins(uow, owners)
    if all(owner is None or logins.get(owner) == owner for owner in owners):
        return items  # every owner is a user's login as given (a file's usual case): nothing to change per row
    kept = []
    for item in items:
        owner = item.row[index] if item.row is not None else None
        if owner is not None and owner not in logins:
            reject(item, unknown_owner(owner))
            continue
        if owner is not None and logins[owner] != owner:
            item.row = (*item.row[:index], logins[owner], *item.row[index + 1:])
        kept.append(item)
    return kept


def owner_problems(uow: "UnitOfWork", row: dict[str, Any], column: str, field: str = "owner") -> list[tuple[str, str]]:
    """An imported update's owner (or another user ``field``: a task's ``assignee``) as a login, in
    place; ``[(column, message)]`` if it is no user."""
    login = owner_logins(uow, [row[field]]).get(row[field])
    if login is None:
        return [(column, unknown_owner(row[field]))]
    row[field] = login
    return []


# -- users ------------------------------------------------------------------------------

class UserService:
    """``crm.users``: add, list, show and deactivate users; assign regions."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    def add(self, login: str, display_name: str | None = None, email: str | None = None,
            locale: str | None = None, time_zone: str | None = None, role: str | None = None) -> User:
        """Add a user (the CRM is *configured* from then on).  A user registered from an owner
        label or migrated from a text owner is adopted: its fields are set and it counts as added.

        ``role`` names a role in ``crm.roles`` (None: the policy's default role)."""
        self.crm.authorize("user.add", login)
        fields = _user_fields(login, display_name, email, locale, time_zone)
        fields["role"] = self._role(role)
        with self.crm.unit() as uow:
            previous = self._find(uow.conn, login)
            if previous is not None and previous.source == "added":
                raise ValidationError.single("login", f"user {login!r} already exists", "user")
            if fields["email"] is not None and uow.conn.execute(select(users.c.login).where(
                    users.c.email == fields["email"], users.c.login != login)).first() is not None:
                raise ValidationError.single("email", f"{fields['email']!r} is another user's email", "user")
            values = {**fields, "source": "added", "updated_at": uow.now}
            if previous is None:
                uow.conn.execute(insert(users).values(**values, active=True, created_at=uow.now))
            else:
                uow.conn.execute(update(users).where(users.c.login == login).values(**values))
            stored = self._get(uow.conn, login)
            uow.audit.record("user.add", "user", login, changes=_changes(previous, stored))
            return stored

    def get(self, login: str) -> User:
        """The user with this login (:class:`NotFound` if none), with their teams and regions."""
        self.crm.authorize("user.read", login)
        with self.crm.unit(readonly=True) as uow:
            return self._get(uow.conn, login)

    def list(self, include_inactive: bool = True) -> list[User]:
        """Every user, by login."""
        self.crm.authorize("user.list", None)
        query = select(users).order_by(users.c.login)
        if not include_inactive:
            query = query.where(users.c.active.is_(True))
        with self.crm.unit(readonly=True) as uow:
            return [_user(row) for row in uow.conn.execute(query).mappings()]

    def deactivate(self, login: str) -> User:
        """Deactivate a user: they can no longer act; what they own stays theirs."""
        self.crm.authorize("user.deactivate", login)
        with self.crm.unit() as uow:
            previous = self._get(uow.conn, login)
            uow.conn.execute(update(users).where(users.c.login == login).values(active=False, updated_at=uow.now))
            stored = self._get(uow.conn, login)
            uow.audit.record("user.deactivate", "user", login, changes=_changes(previous, stored))
            uow.memo.clear()  # a policy's look-ups of this user in this unit are stale now
            return stored

    def set_role(self, login: str, role: str | None) -> User:
        """Give the user ``role`` (a name in ``crm.roles``; None: the policy's default role)."""
        self.crm.authorize("user.set-role", login)
        checked = self._role(role)
        with self.crm.unit() as uow:
            previous = self._get(uow.conn, login)
            if previous.role != checked:
                uow.conn.execute(update(users).where(users.c.login == login).values(role=checked,
                                                                                    updated_at=uow.now))
                uow.audit.record("user.set-role", "user", login, changes={"role": [previous.role, checked]})
                uow.memo.clear()  # what was worked out for this unit (a policy's role look-ups) is stale now
            return self._get(uow.conn, login)

    def _role(self, role: str | None) -> str | None:
        """``role`` if some plugin registered it (None passes: the default role)."""
        if role is None or role in self.crm.roles:
            return role
        known = self.crm.roles.names()
        if not known:
            raise ValidationError.single("role", f"unknown role {role!r}: no policy plugin defines roles "
                                                 f"(install or enable one, e.g. access)", "user")
        raise ValidationError.single("role", f"unknown role {role!r} (known: {', '.join(known)})", "user")

    def assign_region(self, login: str, region: str) -> User:
        """Let the user cover ``region`` (matched against customers' region)."""
        self.crm.authorize("user.assign-region", login)
        with self.crm.unit() as uow:
            user = self._get(uow.conn, login)
            _assign(uow, "user_id", user.id, _region(region), "user", login)
            return self._get(uow.conn, login)

    def unassign_region(self, login: str, region: str) -> User:
        """Stop the user covering ``region``."""
        self.crm.authorize("user.unassign-region", login)
        with self.crm.unit() as uow:
            user = self._get(uow.conn, login)
            _unassign(uow, "user_id", user.id, region, "user", login)
            return self._get(uow.conn, login)

    def set_password(self, login: str, password: str) -> None:
        """Store ``password`` for ``login`` (its argon2id hash; the web console's sign-in).

        Any user may set their own; another user's needs ``user.set-password``.  The audit
        record says that the password changed, never the password or its hash.
        """
        self.crm.authorize("user.set-password", login)
        problem = _password_problem(password)
        if problem:
            raise ValidationError.single("password", problem, "user")
        digest = _hasher().hash(password)
        with self.crm.unit() as uow:
            previous = self._get(uow.conn, login)
            uow.conn.execute(update(users).where(users.c.login == login).values(password_hash=digest,
                                                                                updated_at=uow.now))
            uow.audit.record("user.set-password", "user", previous.login, values={"password": "changed"})

    def verify_password(self, login: str, password: str) -> bool:
        """Whether ``password`` is the password of the active user ``login`` (sign-in).

        Authentication, not a use case: nobody acts yet, so nothing is authorized or audited.
        Unknown, deactivated and password-less users take as long as a wrong password (a
        hash is checked either way), so the answer's timing tells nothing about which logins
        exist.  A hash made with older argon2 parameters is replaced on success.
        """
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _hasher()
        with self.crm.unit(readonly=True) as uow:
            row = uow.conn.execute(select(users.c.active, users.c.password_hash)
                                   .where(users.c.login == login)).first()
        digest = row.password_hash if row is not None and row.active and row.password_hash else None
        try:
            hasher.verify(digest or _dummy_hash(), password if isinstance(password, str) else "")
        except (VerificationError, InvalidHashError):
            return False
        if digest is None:
            return False
        if hasher.check_needs_rehash(digest):
            with self.crm.unit() as uow:
                uow.conn.execute(update(users).where(users.c.login == login, users.c.password_hash == digest)
                                 .values(password_hash=hasher.hash(password)))
        return True

    def has_password(self, login: str) -> bool:
        """Whether ``login`` has a password set (``crm user show`` and the console's sign-in page)."""
        self.crm.authorize("user.read", login)
        with self.crm.unit(readonly=True) as uow:
            return uow.conn.execute(select(users.c.password_hash).where(users.c.login == login)
                                    ).scalar() is not None

    def check_can_act(self, login: str) -> None:
        """Refuse an unknown or deactivated user as the actor (one-line errors)."""
        if login == SYSTEM_ACTOR:
            return
        with self.crm.unit(readonly=True) as uow:
            active = uow.conn.execute(select(users.c.active).where(users.c.login == login)).scalar()
        if active is None:
            raise NotFound("user", login)
        if not active:
            raise InactiveUser(login)

    def configured(self) -> bool:
        """Whether a user was ever added explicitly (see the module's documentation)."""
        with self.crm.unit(readonly=True) as uow:
            return configured(uow.conn)

    def _find(self, conn: Connection, login: str) -> User | None:
        row = conn.execute(select(users).where(users.c.login == login)).mappings().first()
        if row is None:
            return None
        user = _user(row)
        regions = conn.execute(select(territories.c.region).where(territories.c.user_id == user.id)
                               .order_by(territories.c.region)).scalars().all()
        names = conn.execute(select(teams.c.name).join(team_members, team_members.c.team_id == teams.c.id)
                             .where(team_members.c.user_id == user.id).order_by(teams.c.name)).scalars().all()
        return attrs.evolve(user, regions=tuple(regions), teams=tuple(names))

    def _get(self, conn: Connection, login: str) -> User:
        found = self._find(conn, login)
        if found is None:
            raise NotFound("user", login)
        return found


#: The shortest password ``set_password`` takes (NIST SP 800-63B's minimum) and the longest.
MIN_PASSWORD, MAX_PASSWORD = 8, 1024


def _password_problem(password: Any) -> str | None:
    if not isinstance(password, str):
        return "must be text"
    if not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        return f"{MIN_PASSWORD} to {MAX_PASSWORD} characters"
    return text_problem(password)


_HASHER: Any = None
_DUMMY: str | None = None


def _hasher() -> Any:
    """argon2-cffi's PasswordHasher with its (RFC 9106 low-memory) defaults, imported on first use."""
    global _HASHER
    if _HASHER is None:
        from argon2 import PasswordHasher

        _HASHER = PasswordHasher()
    return _HASHER


def _dummy_hash() -> str:
    """A hash to check when there is none, so a missing user costs what a wrong password costs."""
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = _hasher().hash("not a password: no user has it")
    return _DUMMY


def _user(row: Any) -> User:
    return User(**{f.name: row[f.name] for f in attrs.fields(User) if f.name in row})


def _changes(previous: Any, stored: Any) -> dict[str, list[Any]]:
    old = attrs.asdict(previous) if previous is not None else {}
    new = attrs.asdict(stored)
    return {k: [old.get(k), new[k]] for k in new if k not in ("id",) and old.get(k) != new[k]}


def _user_fields(login: str, display_name: str | None, email: str | None, locale: str | None,
                 time_zone: str | None) -> dict[str, Any]:
    """Validated user fields; every problem named by field."""
    issues: list[tuple[str, str]] = []
    if not isinstance(login, str) or not LOGIN.fullmatch(login):
        issues.append(("login", "1 to 100 characters without spaces or control characters"))
    elif login == SYSTEM_ACTOR:
        issues.append(("login", f"{SYSTEM_ACTOR!r} is the built-in actor's login"))
    name = display_name if display_name is not None else login
    problem = text_problem(name) if isinstance(name, str) else "must be text"
    if problem or not (0 < len(name) <= 200):
        issues.append(("display_name", problem or "1 to 200 characters"))
    if email is not None:
        try:
            email = normalize_email(email)
        except ValueError as exc:
            issues.append(("email", str(exc)))
    if locale is not None:
        try:
            Locale.parse(locale.replace("-", "_"))
            locale = locale.replace("_", "-")  # as the user wrote it (zh-CN), babel checks it
        except (ValueError, UnknownLocaleError):
            issues.append(("locale", f"{locale!r} is not a known locale (e.g. en, zh-CN)"))
    if time_zone is not None:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            issues.append(("time_zone", f"{time_zone!r} is not an IANA time zone (e.g. Asia/Shanghai)"))
    if issues:
        raise ValidationError(issues, "user")
    return {"login": login, "display_name": name, "email": email, "locale": locale, "time_zone": time_zone}


def _region(region: str) -> str:
    problem = text_problem(region) if isinstance(region, str) else "must be text"
    if problem or not (0 < len(region) <= 100):
        raise ValidationError.single("region", problem or "1 to 100 characters", "territory")
    return region


def _assign(uow: "UnitOfWork", column: str, holder: Any, region: str, kind: str, name: str) -> None:
    taken = uow.conn.execute(select(territories.c.id).where(
        territories.c[column] == holder, territories.c.region == region)).first()
    if taken is None:
        uow.conn.execute(insert(territories).values(**{column: holder, "region": region}))
        uow.audit.record("territory.assign", kind, name, changes={"regions": [None, region]})


def _unassign(uow: "UnitOfWork", column: str, holder: Any, region: str, kind: str, name: str) -> None:
    gone = uow.conn.execute(delete(territories).where(
        territories.c[column] == holder, territories.c.region == region)).rowcount
    if not gone:
        raise NotFound(f"region of {kind} {name!r}", region)
    uow.audit.record("territory.unassign", kind, name, changes={"regions": [region, None]})


# -- teams ------------------------------------------------------------------------------

class TeamService:
    """``crm.teams``: teams with a manager, members and regions."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    def add(self, name: str, manager: str | None = None) -> Team:
        """Add a team, optionally with its manager (a user's login)."""
        self.crm.authorize("team.add", name)
        problem = text_problem(name) if isinstance(name, str) else "must be text"
        if problem or not (0 < len(name) <= 100):
            raise ValidationError.single("name", problem or "1 to 100 characters", "team")
        with self.crm.unit() as uow:
            if uow.conn.execute(select(teams.c.id).where(teams.c.name == name)).first() is not None:
                raise ValidationError.single("name", f"team {name!r} already exists", "team")
            manager_id = self._user_id(uow.conn, manager) if manager is not None else None
            uow.conn.execute(insert(teams).values(name=name, manager_id=manager_id, created_at=uow.now,
                                                  updated_at=uow.now))
            uow.audit.record("team.add", "team", name, changes={"name": [None, name], "manager": [None, manager]})
            return self._get(uow.conn, name)

    def get(self, name: str) -> Team:
        """The team called ``name`` (:class:`NotFound` if none)."""
        self.crm.authorize("team.read", name)
        with self.crm.unit(readonly=True) as uow:
            return self._get(uow.conn, name)

    def list(self) -> list[Team]:
        """Every team, by name."""
        self.crm.authorize("team.list", None)
        with self.crm.unit(readonly=True) as uow:
            names = uow.conn.execute(select(teams.c.name).order_by(teams.c.name)).scalars().all()
            return [self._get(uow.conn, n) for n in names]

    def add_member(self, name: str, login: str) -> Team:
        """Make ``login`` a member of the team (already one: nothing changes)."""
        self.crm.authorize("team.add-member", name)
        with self.crm.unit() as uow:
            team, user_id = self._get(uow.conn, name), self._user_id(uow.conn, login)
            if login not in team.members:
                uow.conn.execute(insert(team_members).values(team_id=team.id, user_id=user_id))
                uow.audit.record("team.add-member", "team", name, changes={"members": [None, login]})
            return self._get(uow.conn, name)

    def remove_member(self, name: str, login: str) -> Team:
        """Remove ``login`` from the team."""
        self.crm.authorize("team.remove-member", name)
        with self.crm.unit() as uow:
            team, user_id = self._get(uow.conn, name), self._user_id(uow.conn, login)
            if login not in team.members:
                raise NotFound(f"member of team {name!r}", login)
            uow.conn.execute(delete(team_members).where(team_members.c.team_id == team.id,
                                                        team_members.c.user_id == user_id))
            uow.audit.record("team.remove-member", "team", name, changes={"members": [login, None]})
            return self._get(uow.conn, name)

    def assign_region(self, name: str, region: str) -> Team:
        """Let the team cover ``region``."""
        self.crm.authorize("team.assign-region", name)
        with self.crm.unit() as uow:
            _assign(uow, "team_id", self._get(uow.conn, name).id, _region(region), "team", name)
            return self._get(uow.conn, name)

    def unassign_region(self, name: str, region: str) -> Team:
        """Stop the team covering ``region``."""
        self.crm.authorize("team.unassign-region", name)
        with self.crm.unit() as uow:
            _unassign(uow, "team_id", self._get(uow.conn, name).id, region, "team", name)
            return self._get(uow.conn, name)

    @staticmethod
    def _user_id(conn: Connection, login: str) -> int:
        found = conn.execute(select(users.c.id).where(users.c.login == login)).scalar()
        if found is None:
            raise NotFound("user", login)
        return int(found)

    @staticmethod
    def _get(conn: Connection, name: str) -> Team:
        row = conn.execute(select(teams.c.id, teams.c.name, users.c.login.label("manager"))
                           .join_from(teams, users, users.c.id == teams.c.manager_id, isouter=True)
                           .where(teams.c.name == name)).mappings().first()
        if row is None:
            raise NotFound("team", name)
        members = conn.execute(select(users.c.login).join(team_members, team_members.c.user_id == users.c.id)
                               .where(team_members.c.team_id == row["id"]).order_by(users.c.login)).scalars()
        regions = conn.execute(select(territories.c.region).where(territories.c.team_id == row["id"])
                               .order_by(territories.c.region)).scalars()
        return Team(name=row["name"], manager=row["manager"], members=tuple(members), regions=tuple(regions),
                    id=row["id"])
