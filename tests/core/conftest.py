"""Helpers for the core tests: an event recorder plugin and a SQLite-only CRM factory.

Storage tests use ``crm_factory`` (from :mod:`crmcore.testing`), which runs once
per database; tests about validation, configuration or plugin loading, where the
database does not matter, use ``sqlite_crm`` to stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import crmcore
from crmcore import CRM, Config
from crmcore.testing import FIXED_NOW

FIXTURE_PLUGINS = Path(__file__).resolve().parent.parent / "fixtures_plugins"

def _event_hooks() -> list[str]:
    from crmcore import hookspecs

    return sorted(n for n in dir(hookspecs) if n.startswith("on_") and callable(getattr(hookspecs, n)))


class Recorder:
    """A plugin that records every entity event it receives, with its arguments."""

    __name__ = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def named(self, hook: str) -> list[dict[str, Any]]:
        return [kwargs for name, kwargs in self.calls if name == hook]

    def hooks(self) -> list[str]:
        return [name for name, _ in self.calls]


def _make_recorder_method(hook: str, argnames: tuple[str, ...]) -> Callable[..., None]:
    # pluggy reads the argument names from the signature, so build a function
    # with exactly the spec's parameters.
    params = ", ".join(argnames)
    namespace: dict[str, Any] = {}
    body = f"def {hook}(self, {params}):\n    self.calls.append(({hook!r}, dict({', '.join(f'{a}={a}' for a in argnames)})))\n"
    exec(body, namespace)  # noqa: S102 - test helper
    return crmcore.hookimpl(namespace[hook])


def _install_recorder_hooks() -> None:
    import inspect

    from crmcore import hookspecs

    for hook in _event_hooks():
        argnames = tuple(inspect.signature(getattr(hookspecs, hook)).parameters)
        setattr(Recorder, hook, _make_recorder_method(hook, argnames))


_install_recorder_hooks()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def sqlite_crm(crm_sqlite_url: str) -> Iterator[Callable[..., CRM]]:
    """Like ``crm_factory`` but on SQLite only (for tests where the database does not matter)."""
    opened: list[CRM] = []

    def factory(config: dict | None = None, extra_plugins: tuple = (), **kwargs: Any) -> CRM:
        values = dict(config or {})
        values.setdefault("database_url", crm_sqlite_url)
        values.setdefault("plugins", [])
        crm = CRM.open(config=Config.from_mapping(values), extra_plugins=extra_plugins,
                       clock=kwargs.pop("clock", lambda: FIXED_NOW), **kwargs)
        opened.append(crm)
        return crm

    yield factory
    for crm in opened:
        crm.close()


@pytest.fixture
def fixture_plugins_path() -> Iterator[Path]:
    """``tests/fixtures_plugins`` on sys.path, so its packages import as plugins."""
    sys.path.insert(0, str(FIXTURE_PLUGINS))
    try:
        yield FIXTURE_PLUGINS
    finally:
        sys.path.remove(str(FIXTURE_PLUGINS))


def db_kind(url: str) -> str:
    """``sqlite``, ``postgresql`` or ``mariadb`` for a test database URL."""
    scheme = url.split(":", 1)[0].split("+")[0]
    return {"postgres": "postgresql", "mysql": "mariadb"}.get(scheme, scheme)
