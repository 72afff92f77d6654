"""API tokens (``crm.tokens``): bearer tokens for the HTTP API, one user each.

A token is ``crm_`` and 43 URL-safe characters (256 random bits).  It is shown
once, when created; the database keeps only its SHA-256 (a slow password hash
would buy nothing against 256 random bits, and every API request checks one)
and its first characters, so ``crm token list`` can tell tokens apart.  A
request with a token acts as the token's user: the same ``authorize`` checks,
record visibility and audit trail as that user at the command line.  Revoking
or expiring a token, or deactivating its user, stops it at the next request.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import Connection, Dialect, bindparam, insert, select, update

from ..domain.errors import CRMError, NotFound, ValidationError
from ..domain.text import text_problem
from ..store.bulk import inserted_id
from ..store.tables import api_tokens, users

if TYPE_CHECKING:
    from ..app import CRM

#: What every token starts with (so secret scanners and people recognise one).
TOKEN_PREFIX = "crm_"


class InvalidToken(CRMError):
    """A bearer token that is unknown, revoked or expired, or whose user is deactivated."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"invalid API token: {reason}")


@attrs.frozen
class ApiToken:
    """One API token as stored: never the token itself, only its first characters (``prefix``)."""

    id: int
    login: str
    name: str
    prefix: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked`` at ``now``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def as_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready fields, with the token's ``state`` at ``now``."""
        return {"id": self.id, "login": self.login, "name": self.name, "prefix": self.prefix,
                "state": self.state(now), "created_at": self.created_at.isoformat(),
                "created_by": self.created_by,
                "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
                "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat()}


def token_hash(secret: str, pepper: bytes | None = None) -> str:
    """The stored form of a token: hex SHA-256, or with a pepper (``[api] token_pepper_env`` /
    ``token_pepper_file``) hex HMAC-SHA256 keyed by it."""
    data = secret.encode("utf-8", "surrogatepass")
    if pepper:
        return hmac.new(pepper, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


_COLUMNS = (api_tokens.c.id, users.c.login, api_tokens.c.name, api_tokens.c.prefix, api_tokens.c.created_at,
            api_tokens.c.created_by, api_tokens.c.expires_at, api_tokens.c.revoked_at)
# The one statement every API request runs: built once.  It reads the user's role too, so the
# request's access checks need no query of their own (UnitOfWork.acting_user).
_AUTHENTICATE = (select(users.c.login, users.c.active, users.c.role, api_tokens.c.expires_at,
                        api_tokens.c.revoked_at)
                 .join(users, users.c.id == api_tokens.c.user_id)
                 .where(api_tokens.c.token_hash == bindparam("hash")))


@attrs.frozen
class ActingUser:
    """The acting user's record as a unit of work read it: ``login``, ``active`` and ``role``
    (None: the access policy's default role).  See :attr:`UnitOfWork.acting_user`."""

    login: str
    active: bool
    role: str | None


@attrs.define
class Credential:
    """A bearer token presented with one request, checked once, at first use.

    The HTTP API puts it in :data:`current_credential` without touching the database; the
    request's first unit of work checks it on its own connection (:func:`check_credential`), so an
    API read costs one connection and one thread hand-off, not two.  Until it is checked the
    request can do nothing: every unit of work and :attr:`CRM.actor` check it first.
    """

    secret: str
    #: The checked user (None until checked).
    user: ActingUser | None = None
    #: Why the token was refused, once it was (raised again on every later use).
    error: InvalidToken | None = None

    @property
    def login(self) -> str | None:
        """The login the token acts as, once checked."""
        return None if self.user is None else self.user.login


#: The bearer token of the request being served (None outside the HTTP API).
current_credential: contextvars.ContextVar[Credential | None] = contextvars.ContextVar(
    "crm_credential", default=None)


def check_credential(credential: Credential, conn: Connection, now: datetime,
                     pepper: bytes | None = None) -> ActingUser:
    """Check ``credential`` on ``conn`` at ``now`` (one indexed query, once per credential), its
    hash keyed by ``pepper`` when one is configured (``[api] token_pepper_env``).

    :class:`InvalidToken` says why a token is refused: unknown, revoked, expired, or its user
    deactivated.
    """
    if credential.user is not None:
        return credential.user
    if credential.error is None:
        credential.error = _refusal(credential.secret, conn, now, credential, pepper)
    if credential.error is not None:
        raise credential.error
    assert credential.user is not None
    return credential.user


def _refusal(secret: str, conn: Connection, now: datetime, credential: Credential,
             pepper: bytes | None) -> InvalidToken | None:
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return InvalidToken("not a crmcore API token")
    login, active, role, expires_at, revoked_at = _authenticating_row(conn, token_hash(secret, pepper))
    if login is None and pepper:  # a token made before the pepper was set keeps working
        login, active, role, expires_at, revoked_at = _authenticating_row(conn, token_hash(secret))
    if login is None:
        return InvalidToken("unknown token")
    if revoked_at is not None:
        return InvalidToken("the token was revoked")
    if expires_at is not None and expires_at <= now:
        return InvalidToken("the token expired")
    if not active:
        return InvalidToken(f"user {login!r} is deactivated")
    credential.user = ActingUser(login, True, role)
    return None


def _authenticating_row(conn: Connection, digest: str) -> tuple[Any, ...]:
    """(login, active, role, expires_at, revoked_at) of the token with SHA-256 ``digest``; Nones
    when there is none.

    Every API request runs this statement, so it goes straight to the driver's cursor, compiled
    once per dialect: SQLAlchemy's execution machinery cost more than the query (and the
    request's read is still SQLAlchemy's, on the same connection and transaction).
    """
    sql, positional, expires, revoked = _compiled_authenticate(conn.dialect)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, (digest,) if positional else {"hash": digest})
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None:
        return None, None, None, None, None
    login, active, role, expires_at, revoked_at = row
    return login, bool(active), role, expires(expires_at), revoked(revoked_at)


@functools.lru_cache(maxsize=8)
def _compiled_authenticate(dialect: Dialect) -> tuple[str, bool, Callable[[Any], Any], Callable[[Any], Any]]:
    """The authenticating statement's SQL for ``dialect``, whether it binds by position, and the
    column types' result processors of ``expires_at`` and ``revoked_at`` (raw -> aware UTC)."""
    compiled = _AUTHENTICATE.compile(dialect=dialect)

    def processor(column: Any) -> Callable[[Any], Any]:
        found = column.type.result_processor(dialect, None)
        return found if found is not None else (lambda value: value)

    return (compiled.string, bool(compiled.positional), processor(api_tokens.c.expires_at),
            processor(api_tokens.c.revoked_at))


class TokenService:
    """``crm.tokens``: create, list, revoke and check API tokens."""

    def __init__(self, crm: "CRM"):
        self.crm = crm

    def create(self, login: str, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
        """A new token for user ``login``: the stored record and the token itself (shown once).

        ``expires_at`` (aware) must lie in the future; None: the token lasts until revoked.
        """
        self.crm.authorize("token.create", login)
        problem = text_problem(name) if isinstance(name, str) else "must be text"
        if problem or not (0 < len(name) <= 100):
            raise ValidationError.single("name", problem or "1 to 100 characters", "token")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.crm.unit() as uow:
            if expires_at is not None and expires_at <= uow.now:
                raise ValidationError.single("expires", f"{expires_at.isoformat()} is not in the future", "token")
            user = uow.conn.execute(select(users.c.id, users.c.active).where(users.c.login == login)).first()
            if user is None:
                raise NotFound("user", login)
            if not user.active:
                raise ValidationError.single("user", f"user {login!r} is deactivated", "token")
            result = uow.conn.execute(insert(api_tokens).values(
                user_id=user.id, name=name, prefix=secret[:12],
                token_hash=token_hash(secret, self.crm.config.api.token_pepper()),
                created_at=uow.now, created_by=uow.actor, expires_at=expires_at))
            new_id = inserted_id(result)
            uow.audit.record("token.create", "token", new_id, values={"login": login, "name": name,
                                                                       "prefix": secret[:12],
                                                                       "expires_at": expires_at})
            return self._get(uow, new_id), secret

    def list(self, login: str | None = None, include_inactive: bool = False) -> list[ApiToken]:
        """Tokens of ``login`` (None: every user's), newest first; ``include_inactive`` adds revoked
        and expired ones."""
        self.crm.authorize("token.list", login)
        query = select(*_COLUMNS).join(users, users.c.id == api_tokens.c.user_id)
        if login is not None:
            query = query.where(users.c.login == login)
        with self.crm.unit(readonly=True) as uow:
            if not include_inactive:
                query = query.where(api_tokens.c.revoked_at.is_(None)).where(
                    api_tokens.c.expires_at.is_(None) | (api_tokens.c.expires_at > uow.now))
            rows = uow.conn.execute(query.order_by(api_tokens.c.id.desc())).all()
        return [ApiToken(*row) for row in rows]

    def revoke(self, token_id: int) -> ApiToken:
        """Revoke a token: requests with it fail from now on.  Revoking twice is an error."""
        with self.crm.unit() as uow:
            try:
                found: ApiToken | None = self._get(uow, token_id)
            except NotFound:
                found = None
            # Asked before "not found": whether a token id exists is not for everybody to learn.
            self.crm.authorize("token.revoke", None if found is None else found.login)
            if found is None:
                raise NotFound("token", token_id)
            if found.revoked_at is not None:
                raise ValidationError.single("token", f"token {token_id} was revoked at "
                                                      f"{found.revoked_at.isoformat()}", "token")
            uow.conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(revoked_at=uow.now))
            uow.audit.record("token.revoke", "token", token_id, changes={"revoked_at": [None, uow.now]})
            return self._get(uow, token_id)

    def authenticate(self, secret: str) -> str:
        """The login a presented token acts as; :class:`InvalidToken` says why not (one query)."""
        return self.check(Credential(secret))

    def check(self, credential: Credential) -> str:
        """Check a request's :class:`Credential` now, if no unit of work has yet; its login."""
        if credential.user is None:
            with self.crm.unit(readonly=True, plain=True) as uow:  # checks it on opening
                check_credential(credential, uow.conn, uow.now, self.crm.config.api.token_pepper())
        assert credential.login is not None
        return credential.login

    @staticmethod
    def _get(uow: Any, token_id: int) -> ApiToken:
        row = uow.conn.execute(select(*_COLUMNS).join(users, users.c.id == api_tokens.c.user_id)
                               .where(api_tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound("token", token_id)
        return ApiToken(*row)
