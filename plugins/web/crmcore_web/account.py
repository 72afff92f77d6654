"""The account page's use case: a signed-in user changes their own password.

The current password is asked again (a session left open on a shared machine must not be
enough to take the account over), counted against the sign-in limits of the login and the
address, and a wrong one is audited.  The new one is stored through
``crm.users.set_password`` (authorize, validation, audit); that moves the user's session
generation, which signs out every other console session at its next request, and the other
session tokens the console created for the user are revoked, so they stop working through
the API as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import crmcore

from . import session as sessions

if TYPE_CHECKING:
    from crmcore import CRM

#: The name of the API tokens a password sign-in creates (one per session).
SESSION_TOKEN_NAME = "web console session"


class Refused(Exception):
    """The change was refused: ``reason`` (a key the form translates) and the core's ``detail``."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def change_password(crm: "CRM", limit: sessions.SignInLimit, console: sessions.ConsoleSession, address: str,
                    current: str, new: str, repeat: str) -> int:
    """Check ``current``, store ``new``; the number of the user's other console sessions ended."""
    login = console.login
    if not limit.allows(address, login) or limit.locked(login):
        raise Refused("rate")
    if not crm.users.verify_password(login, current):
        limit.failed(login)
        with crm.unit() as uow:  # acting as the session's user: a wrong current password, on record
            uow.audit.record("console.password-refused", "user", login, values={"address": address})
        raise Refused("current")
    if new != repeat:
        raise Refused("repeat")
    try:
        crm.users.set_password(login, new)
    except crmcore.ValidationError as error:
        raise Refused("invalid", "; ".join(message for _, message in error.issues)) from None
    return revoke_other_sessions(crm, login, console.token_id)


def revoke_other_sessions(crm: "CRM", login: str, keep: int | None) -> int:
    """Revoke ``login``'s live console session tokens but ``keep``; how many were revoked.

    API tokens the user made for scripts are left alone: they are not sessions."""
    ended = 0
    for token in crm.tokens.list(login):
        if token.name == SESSION_TOKEN_NAME and token.id != keep:
            crm.tokens.revoke(token.id)
            ended += 1
    return ended
