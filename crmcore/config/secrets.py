"""Secrets kept out of crm.toml: every secret setting ``NAME`` can instead be given as
``NAME_env = "VARIABLE"`` (an environment variable holding it) or ``NAME_file = "PATH"`` (a file
holding it, e.g. a Docker or Kubernetes secret mounted read-only).

The value is read when it is needed, so a rotated secret is picked up without a restart, and a
missing variable or file is a :class:`ConfigError` naming the setting and where it looked (never
the value).  :func:`register` adds every secret read to the set :func:`known` returns, so the
log filter of :mod:`crmcore.cli.masking` can blank them out of anything logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..domain.errors import ConfigError

#: The suffixes naming where a secret comes from instead of the file itself.
SOURCES = ("_env", "_file")

_seen: set[str] = set()


def read(name: str, *, value: str | None = None, env: str | None = None, file: str | None = None,
         label: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The secret ``name`` from ``env`` (an environment variable's name), else ``file`` (a path;
    one trailing newline dropped), else ``value`` (given in crm.toml); None when none is set."""
    environ = os.environ if environ is None else environ
    if env:
        found = environ.get(env)
        if not found:
            raise ConfigError(f"{label} {name}_env: environment variable {env} is not set")
        return register(found)
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{label} {name}_file: cannot read {file}: {exc.strerror or exc}") from None
        text = text[:-1] if text.endswith("\n") else text
        if not text:
            raise ConfigError(f"{label} {name}_file: {file} is empty")
        return register(text)
    return None if value is None else register(value)


def register(secret: str) -> str:
    """Remember ``secret`` so log output can be scrubbed of it; returns it."""
    if len(secret) >= 4:  # a shorter "secret" would blank ordinary words out of every log line
        _seen.add(secret)
    return secret


def known() -> frozenset[str]:
    """Every secret read so far in this process."""
    return frozenset(_seen)
