"""The console's session: a signed cookie holding the sign-in's API token, and CSRF checks.

Signing in (with a password or an API token) gives the browser a cookie signed with
itsdangerous (HMAC-SHA256 over the session secret, ``[plugins.web] session_secret_env``).
With a password, the console creates an API token for the user that expires with the
session, so each page request is checked exactly as an API request is (revoked or expired
token, deactivated user: signed out), and signing out revokes it.  The cookie is HttpOnly
and SameSite=Lax; every state-changing request must also carry the session's CSRF token
(a form field or the ``X-CSRF-Token`` header htmx sends), compared in constant time.

Each session also carries its user's **generation** (:func:`generation`): a keyed digest of the
user's stored password hash, checked on every request.  Changing the password (in the console,
``crm user set-password`` or from Python) changes it, so every session signed in before the
change is refused at its next request, with no session table to keep.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any

import attrs
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import bindparam, select

import crmcore
from crmcore.store import tables

from .settings import WebSettings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from crmcore import CRM

COOKIE = "crm_console"
#: A cookie the sign-in form's CSRF check uses before there is a session (double submit).
PRE_COOKIE = "crm_console_pre"
PATH = "/console"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_PROCESS_SECRET = secrets.token_urlsafe(32)


@attrs.frozen
class ConsoleSession:
    """One sign-in: the API token it acts with, the token's id when the console made it (revoked
    at sign-out), the login, the CSRF token, the page language and the user's
    :func:`generation` when the session began."""

    token: str
    login: str
    csrf: str
    locale: str
    token_id: int | None = None
    generation: str = ""


def generation(crm: "CRM", login: str) -> str:
    """The user's session generation: an HMAC (under the session secret) of their password hash.

    It changes whenever the password does, which ends every session made before.  The hash
    itself never leaves the database: the cookie (signed, not encrypted) carries the digest.
    Opening the unit also checks the request's token, so a page pays one small query for both.
    """
    with crm.unit(readonly=True, plain=True) as uow:
        stored = uow.conn.execute(_PASSWORD_HASH, {"login": login}).scalar()
    digest = hmac.new(secret(crm).encode(), b"generation:" + (stored or "").encode(), hashlib.sha256)
    return digest.hexdigest()[:24]


#: Built once: every page request runs it, and building a select costs more than running it.
_PASSWORD_HASH = select(tables.users.c.password_hash).where(tables.users.c.login == bindparam("login"))


def secret(crm: "CRM") -> str:
    """The key signing session cookies (``[plugins.web] session_secret``, ``_env`` or ``_file``)."""
    settings = crm.settings_for(WebSettings)
    found = crmcore.read_secret("session_secret", value=settings.session_secret, env=settings.session_secret_env,
                                file=settings.session_secret_file, label="[plugins.web]")
    return found or _PROCESS_SECRET


def _serializer(crm: "CRM", salt: str) -> URLSafeTimedSerializer:
    return _signing(secret(crm), salt)


@functools.lru_cache(maxsize=16)
def _signing(key: str, salt: str) -> URLSafeTimedSerializer:
    """One serializer per key and salt (read on every page request; it holds no state)."""
    return URLSafeTimedSerializer(key, salt=salt)


def read(request: "Request", crm: "CRM") -> ConsoleSession | None:
    """The request's session, or None (no cookie, a bad signature or an expired one)."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    max_age = crm.settings_for(WebSettings).session_hours * 3600
    try:
        data: Any = _serializer(crm, "crmcore-web-session").loads(raw, max_age=max_age)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return ConsoleSession(**data)
    except TypeError:
        return None


def write(response: "Response", crm: "CRM", session: ConsoleSession) -> None:
    """Set the session cookie on ``response``."""
    settings = crm.settings_for(WebSettings)
    value = _serializer(crm, "crmcore-web-session").dumps(attrs.asdict(session))
    response.set_cookie(COOKIE, value, max_age=settings.session_hours * 3600, path=PATH, httponly=True,
                        samesite="lax", secure=settings.secure_cookie)
    response.delete_cookie(PRE_COOKIE, path=PATH)


def clear(response: "Response") -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path=PATH)


def set_pre(response: "Response", crm: "CRM", token: str) -> None:
    """Keep the sign-in form's CSRF token in its own cookie until the session replaces it."""
    response.set_cookie(PRE_COOKIE, token, max_age=3600, path=PATH, httponly=True, samesite="lax",
                        secure=crm.settings_for(WebSettings).secure_cookie)


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of two CSRF tokens (a missing one never matches)."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


class SignInLimit:
    """Sign-in attempts per client address and per login (``[plugins.web] sign_in_rate_limit``),
    and failed ones per login (``sign_in_lockout``: past it the login is locked for the window)."""

    def __init__(self, crm: "CRM"):
        import limits
        from limits.storage import storage_from_string
        from limits.strategies import MovingWindowRateLimiter

        settings = crm.settings_for(WebSettings)
        try:
            self.rate = limits.parse(settings.sign_in_rate_limit)
            self.lockout = limits.parse(settings.sign_in_lockout)
        except ValueError as exc:
            raise crmcore.ConfigError(f"[plugins.web] sign_in_rate_limit or sign_in_lockout: {exc}") from None
        self.limiter = MovingWindowRateLimiter(storage_from_string(crm.config.api.rate_limit_storage))

    def allows(self, address: str, login: str) -> bool:
        """Count one attempt from ``address`` for ``login``; False once either used up the limit."""
        by_address = self.limiter.hit(self.rate, "console-sign-in", "address", address)
        by_login = self.limiter.hit(self.rate, "console-sign-in", "login", login.lower()) if login else True
        return by_address and by_login

    def locked(self, login: str) -> bool:
        """Whether ``login`` used up its failed attempts (checked before the password, so a
        locked login is refused even with the right one until the window moves)."""
        return bool(login) and not self.limiter.test(self.lockout, "console-sign-in", "failed", login.lower())

    def failed(self, login: str) -> None:
        """Count one failed attempt for ``login``."""
        if login:
            self.limiter.hit(self.lockout, "console-sign-in", "failed", login.lower())


def new_csrf() -> str:
    """A fresh CSRF token for a new session."""
    return secrets.token_urlsafe(24)
