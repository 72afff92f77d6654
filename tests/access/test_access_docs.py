"""The built-in roles table in docs/users-and-audit.md says what the code allows."""

from __future__ import annotations

import re
from pathlib import Path

from crmcore_access.roles import built_in_roles

from .test_access_policy import ALLOWED

DOC = Path(__file__).resolve().parents[2] / "docs" / "users-and-audit.md"


def documented() -> tuple[list[str], dict[str, list[str]]]:
    """The roles table: its role columns and area -> one cell per role."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### The built-in roles"):text.index("### Settings and custom roles")]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip(" `") for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`*")] = [c.strip("`") for c in cells[1:]]
    return header[1:], rows


def test_the_documented_table_matches_the_roles() -> None:
    columns, rows = documented()
    roles = {role.name: role for role in built_in_roles()}
    assert columns == ["manager", "sales-rep", "service-agent", "read-only"]
    assert rows.pop("scope") == [roles[name].scope for name in columns]
    wrong = []
    for area, cells in rows.items():
        verbs = {v for cell in cells for v in re.split(r",\s*", cell) if v not in ("*", "-")}
        verbs |= {a.split(".", 1)[1] for a in ALLOWED if a.startswith(area + ".")} | {"frobnicate"}
        for name, cell in zip(columns, cells):
            listed = set(re.split(r",\s*", cell))
            for verb in sorted(verbs):
                if roles[name].allows(f"{area}.{verb}") != ("*" in listed or verb in listed):
                    wrong.append(f"{name}: {area}.{verb}")
    assert wrong == []
