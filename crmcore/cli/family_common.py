"""Helpers shared by the ``crm segment|loyalty|notify|report`` command groups."""

from __future__ import annotations

from typing import Any

import attrs

from ..domain.errors import ValidationError


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """Turn repeated ``--option KEY=VALUE`` pairs into a dict (values stay strings)."""
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ValidationError.single("--option", f"{pair!r} is not KEY=VALUE")
        options[key.strip()] = value
    return options


def component_rows(components: list[Any]) -> list[dict[str, Any]]:
    """One display row per registered component: name, description, option names."""
    return [{"name": c.name, "description": c.description,
             "options": ", ".join(f.name for f in attrs.fields(c.options_type)) if c.options_type else ""}
            for c in components]
