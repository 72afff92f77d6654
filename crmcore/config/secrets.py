"""Secrets kept out of crm.toml: every secret setting ``NAME`` can instead be given as
``NAME_env = "VARIABLE"`` (an environment variable holding it) or ``NAME_file = "PATH"`` (a file
holding it, e.g. a Docker or Kubernetes secret mounted read-only).

The value is read when it is needed, so a rotated secret is picked up without a restart, and a
missing variable or file is a :class:`ConfigError` naming the setting and where it looked (never
the value).  :func:`register` adds every secret read to the set :func:`known` returns, so the
log filter of :mod:`crmcore.cli.masking` can blank them out of anything logged.
"""

from __future__ import annotations

import logging
import os
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
    """Remember ``secret`` so log output can be scrubbed of it (the first one installs the
    scrubber); returns it."""
    if len(secret) >= 4:  # a shorter "secret" would blank ordinary words out of every log line
        _seen.add(secret)
        _install_scrubber()
    return secret


def scrub(text: str) -> str:
    """``text`` with every known secret replaced by ``***``."""
    for secret in _seen:
        if secret in text:
            text = text.replace(secret, "***")
    return text


_factory: Callable[..., logging.LogRecord] | None = None


def _install_scrubber() -> None:
    """Make every log record, of any logger (ours, uvicorn's, a driver's), carry its message
    with the known secrets blanked: a record factory sees each record as it is made, which a
    filter on one logger or handler would not."""
    global _factory
    if _factory is not None:
        return
    _factory = logging.getLogRecordFactory()
    made_by = _factory

    def scrubbed(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = made_by(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is the logging module's to report, unchanged
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None and scrub(str(record.exc_info[1])) != str(
                record.exc_info[1]):
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(scrubbed)


def known() -> frozenset[str]:
    """Every secret read so far in this process."""
    return frozenset(_seen)
