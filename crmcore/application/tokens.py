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

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import bindparam, insert, select, update

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
# The one statement every API request runs: built once.
_AUTHENTICATE = (select(users.c.login, users.c.active, api_tokens.c.expires_at, api_tokens.c.revoked_at)
                 .join(users, users.c.id == api_tokens.c.user_id)
                 .where(api_tokens.c.token_hash == bindparam("hash")))


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
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            raise InvalidToken("not a crmcore API token")
        with self.crm.unit(readonly=True, plain=True) as uow:
            pepper = self.crm.config.api.token_pepper()
            row = uow.conn.execute(_AUTHENTICATE, {"hash": token_hash(secret, pepper)}).first()
            if row is None and pepper:  # a token made before the pepper was set keeps working
                row = uow.conn.execute(_AUTHENTICATE, {"hash": token_hash(secret)}).first()
            now = uow.now
        if row is None:
            raise InvalidToken("unknown token")
        if row.revoked_at is not None:
            raise InvalidToken("the token was revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise InvalidToken("the token expired")
        if not row.active:
            raise InvalidToken(f"user {row.login!r} is deactivated")
        login: str = row.login
        return login

    @staticmethod
    def _get(uow: Any, token_id: int) -> ApiToken:
        row = uow.conn.execute(select(*_COLUMNS).join(users, users.c.id == api_tokens.c.user_id)
                               .where(api_tokens.c.id == token_id)).first()
        if row is None:
            raise NotFound("token", token_id)
        return ApiToken(*row)
