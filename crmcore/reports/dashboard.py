"""The report dashboard: one HTML index over every report's rendered file."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import attrs

from ..domain.errors import CRMError


@attrs.frozen
class DashboardEntry:
    """One report on the dashboard: its file, or the error that kept it out."""

    name: str
    description: str
    file: str | None
    title: str | None
    error: str | None


def write_output(path: Path, rendered: str | bytes) -> Path:
    """Write rendered output; a missing folder or no permission is a CRMError naming the path."""
    data = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise CRMError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def dashboard_index(entries: Sequence[DashboardEntry], as_of: datetime) -> str:
    """A small self-contained HTML page linking every report written."""
    items = []
    for entry in entries:
        if entry.file:
            items.append(f'<li><a href="{html.escape(entry.file, quote=True)}">{html.escape(entry.name)}</a>'
                         f" &mdash; {html.escape(entry.title or '')}<br><small>{html.escape(entry.description)}"
                         "</small></li>")
        else:
            items.append(f"<li>{html.escape(entry.name)} &mdash; <em>not available: "
                         f"{html.escape(entry.error or '')}</em></li>")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Reports</title>"
            "<style>body{font-family:sans-serif;margin:2em}li{margin:.6em 0}</style></head><body>"
            f"<h1>Reports</h1><p>As of {html.escape(as_of.isoformat())}</p><ul>{''.join(items)}</ul>"
            "</body></html>\n")
