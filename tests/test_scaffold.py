"""``crm plugin new``: every family's generated package installs and its own tests pass as written.

The packages are installed (editable, no network, no build isolation) into a
throw-away virtual environment that sees this one's packages (crmcore, pytest)
through a ``.pth`` file, so the test environment itself is left alone.  Then
each package's tests run in a subprocess exactly as its author would run them.
That the generated code passes ``mypy --strict`` is checked in tests/test_typing.py,
which shares one mypy cache with the checks of crmcore itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmcore.cli import cli
from crmcore.scaffold import FAMILIES, new_plugin

# (package name, family, --tables)
PLUGINS = [("won_buyers", "segmenter", False), ("cash_points", "scheme", False),
           ("json_hook", "channel", False), ("owner_revenue", "report", False),
           ("audit_hook", "channel", True)]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment without pip that sees this environment's packages."""
    root = tmp_path_factory.mktemp("scaffold") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           check=True, capture_output=True, text=True).stdout.strip()
    # addsitedir (not a bare path) so this environment's own .pth files (editable installs) work too.
    outer = sysconfig.get_paths()["purelib"]
    Path(inner, "outer_env.pth").write_text(f"import site; site.addsitedir({outer!r})\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def generated(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every plugin of PLUGINS, generated through the CLI and installed editable in ``venv``."""
    output = tmp_path_factory.mktemp("plugins")
    made = {}
    for name, family, tables in PLUGINS:
        args = ["plugin", "new", name, "--family", family, "--output", str(output)] + (["--tables"] if tables else [])
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        made[name] = output / name
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
         "--no-build-isolation", "--no-index", *(arg for path in made.values() for arg in ("-e", str(path)))],
        capture_output=True, text=True)
    assert install.returncode == 0, install.stdout + install.stderr
    return made


def test_every_family_is_covered() -> None:
    assert {family for _, family, _ in PLUGINS} == set(FAMILIES)
    assert any(tables for _, _, tables in PLUGINS)


@pytest.fixture(scope="module")
def test_runs(venv: Path, generated: dict[str, Path]) -> dict[str, tuple[int, str]]:
    """Each generated package's tests, run as written (in parallel: they are independent).

    SQLite only: the server variants skip (their variables are removed), as on an author's laptop.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_TEST_", "CRM_REQUIRE"))}
    running = {name: subprocess.Popen([str(venv / "bin" / "python"), "-m", "pytest", str(path / "tests"),
                                       "-p", "no:cacheprovider", "-q"], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env, cwd=path)
               for name, path in generated.items()}
    outputs = {name: process.communicate(timeout=300)[0] for name, process in running.items()}
    return {name: (running[name].returncode, outputs[name]) for name in running}


@pytest.mark.parametrize("name", [name for name, _, _ in PLUGINS])
def test_generated_plugin_tests_pass(test_runs: dict[str, tuple[int, str]], name: str) -> None:
    code, output = test_runs[name]
    assert code == 0, output[-8000:]
    assert " passed" in output and "failed" not in output


def test_generated_files(tmp_path: Path) -> None:
    target = new_plugin("shop_report", "report", tmp_path, tables=True)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "shop_report/__init__.py",
                     "shop_report/migrations/shop_report_0001_events.py", "shop_report/reports.py",
                     "shop_report/tables.py", "tests/test_plugin.py"]
    pyproject = (target / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points.crmcore]\nshop_report = "shop_report"' in pyproject
    for path in target.rglob("*.py"):
        compile(path.read_text(encoding="utf-8"), str(path), "exec")


@pytest.mark.parametrize("args, message", [
    (["plugin", "new", "Bad-Name", "--family", "report"], "plugin name 'Bad-Name' is not usable"),
    (["plugin", "new", "class", "--family", "report"], "plugin name 'class' is not usable"),
    (["plugin", "new", "fine", "--family", "widget"], "unknown plugin family 'widget'"),
    (["plugin", "new", "taken", "--family", "report"], "already exists"),
])
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "taken").mkdir()
    result = CliRunner().invoke(cli, [*args, "--output", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
