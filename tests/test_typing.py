"""The core and the first-party plugins pass ``mypy --strict``.

The configuration is ``[tool.mypy]`` in pyproject.toml (strict, Python 3.11,
overrides for untyped third-party libraries).  mypy runs in a subprocess with
this interpreter, so it sees the packages installed in the test environment;
its cache is the repository's ``.mypy_cache`` (git-ignored), so a second run
takes seconds.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["crmcore"]
PLUGINS = [
    "plugins/segments/crmcore_segments",
    "plugins/loyalty/crmcore_loyalty",
    "plugins/notify/crmcore_notify",
    "plugins/reports/crmcore_reports",
    "plugins/access/crmcore_access",
    "plugins/web/crmcore_web",
]


def run_mypy(paths: list[str]) -> subprocess.CompletedProcess[str]:
    """``python -m mypy PATHS`` from the repository root, with its pyproject configuration."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "pyproject.toml", "--cache-dir", ".mypy_cache", *paths],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)


def check(paths: list[str]) -> None:
    result = run_mypy(paths)
    if result.returncode != 0:
        pytest.fail(f"mypy --strict {' '.join(paths)} failed (exit {result.returncode}):\n"
                    f"{result.stdout}{result.stderr}", pytrace=False)


def test_core_passes_mypy_strict() -> None:
    check(CORE)


def test_first_party_plugins_pass_mypy_strict() -> None:
    check(PLUGINS)


#: One package of every family ``crm plugin new`` makes, and one with its own tables.
SCAFFOLDED = [("won_buyers", "segmenter", False), ("cash_points", "scheme", False),
              ("json_hook", "channel", False), ("owner_revenue", "report", False),
              ("audit_hook", "channel", True)]


def test_scaffolded_plugins_pass_mypy_strict(tmp_path: Path) -> None:
    """The scaffold shows the typed hooks (Register[...], UnitOfWork, entities): its code type-checks.

    Here rather than in tests/test_scaffold.py so it shares this module's mypy cache: crmcore,
    which the generated packages import, is analysed once for the three checks, not again.
    """
    from crmcore.scaffold import FAMILIES, new_plugin

    assert {family for _, family, _ in SCAFFOLDED} == set(FAMILIES)
    packages = [new_plugin(name, family, tmp_path, tables=tables) / name for name, family, tables in SCAFFOLDED]
    check([str(path) for path in packages])
