"""Checks shared by the crm.toml tables: a value is a table, a value is non-empty text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..domain.errors import ConfigError


def table(value: Any, label: str) -> dict[str, Any]:
    """``value`` as a dict, or a ConfigError naming ``label`` (file and table)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{label} must be a table, got {value!r}")
    return dict(value)


def text(value: Any, label: str) -> str:
    """``value`` if it is non-empty text, else a ConfigError naming ``label``."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{label} must be non-empty text, got {value!r}")
    return value
