"""``[plugins.web]``: the console's session settings."""

from __future__ import annotations

import attrs


@attrs.frozen
class WebSettings:
    """``[plugins.web]``; each key can be overridden by ``CRM_PLUGIN_WEB_<KEY>``.

    :ivar session_secret: the key signing session cookies; prefer ``session_secret_env`` or
        ``session_secret_file``.  None of the three: a random key per server process (sessions
        end when it restarts, and several workers need a shared key).
    :ivar session_hours: how long a sign-in lasts (its API token expires then).
    :ivar secure_cookie: send the cookie over HTTPS only (set it behind TLS).
    :ivar sign_in_rate_limit: sign-in attempts allowed per client address and per login
        (``limits`` notation; counted in ``[api] rate_limit_storage``, so shared by every
        worker with Redis); further attempts are refused, right or wrong, until the window moves.
    :ivar sign_in_lockout: failed sign-ins (and wrong current passwords) allowed per login in the
        window; past it the login is locked, right password or wrong, until the window moves.
    """

    session_secret: str | None = None
    session_secret_env: str | None = None
    session_secret_file: str | None = None
    session_hours: int = attrs.field(default=12, validator=attrs.validators.and_(attrs.validators.gt(0),
                                                                                 attrs.validators.le(24 * 30)))
    secure_cookie: bool = False
    sign_in_rate_limit: str = attrs.field(default="10/minute", validator=attrs.validators.min_len(3))
    sign_in_lockout: str = attrs.field(default="5/15 minutes", validator=attrs.validators.min_len(3))
