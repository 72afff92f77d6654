"""The ``markdown`` renderer: GitHub-flavoured pipe tables, one per table of the result."""

from __future__ import annotations

import crmcore

from .cells import NUMERIC, display


def _escape(text: str) -> str:
    # A pipe would end the cell and a newline the row.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(result: crmcore.ReportResult, level: str) -> list[str]:
    lines = [f"{level} {_escape(result.title)}", ""]
    if not result.columns:
        return lines
    lines.append("| " + " | ".join(_escape(c.label) for c in result.columns) + " |")
    lines.append("|" + "|".join("---:" if c.type in NUMERIC else ":---" for c in result.columns) + "|")
    for row in result.rows:
        lines.append("| " + " | ".join(_escape(display(v, c)) for v, c in zip(row, result.columns)) + " |")
    if not result.rows:
        lines.append("")
        lines.append("_No rows._")
    lines.append("")
    lines += [f"- {_escape(note)}" for note in result.notes]
    if result.notes:
        lines.append("")
    return lines


def render_markdown(result: crmcore.ReportResult) -> str:
    """The report as Markdown: a heading, the as-of line, then each table."""
    lines = _table(result, "#")
    if result.as_of is not None:
        lines.insert(2, f"As of {result.as_of:%Y-%m-%d %H:%M} UTC")
        lines.insert(3, "")
    for section in result.sections:
        lines += _table(section, "##")
    return "\n".join(lines).rstrip("\n") + "\n"
