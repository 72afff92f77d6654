"""Hide passwords and secrets in what the command line prints.

``crm config show`` (table and ``--json``) passes every value through
:func:`mask`; every error message passes through :func:`mask_text`, so a
password typed into a URL never reaches the screen or a log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: What a masked value prints as.
MASK = "***"

# Key names whose values are secrets (matched as words of the key: smtp password, api_key,
# unsubscribe_secret, Authorization, X-Auth-Token ...).
_SECRET_WORDS = re.compile(r"(^|[^a-z])(password|passwd|pwd|secret|token|api[_-]?key|apikey|credentials?|"
                           r"authorization|private[_-]?key|access[_-]?key|auth)([^a-z]|$)", re.I)
# user:password@ in any URL.  The scheme starts where a word starts (the lookbehind): otherwise
# a long run of letters without "://" is rescanned from every position (quadratic: 100,000
# characters took minutes).
_URL_PASSWORD = re.compile(r"(?<![\w+.-])([a-zA-Z][\w+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")


def is_secret_key(key: str) -> bool:
    """Whether a setting named ``key`` holds a secret.  ``*_env`` keys name an
    environment variable and ``*_file`` keys a file, neither itself a secret."""
    return bool(_SECRET_WORDS.search(key)) and not key.lower().endswith(("_env", "_file"))


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    if "://" not in text:
        return text
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)


def mask(value: Any, key: str = "") -> Any:
    """``value`` with secrets masked: the whole value under a secret key, URL
    passwords anywhere, recursively through mappings and lists."""
    if is_secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, Mapping):
        return {k: mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value
