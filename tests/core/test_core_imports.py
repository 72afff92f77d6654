"""The core never imports a plugin: not at import time, not when plugins are
disabled, and not in its source (import-linter contract in pyproject.toml)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ["crmcore_segments", "crmcore_loyalty", "crmcore_notify", "crmcore_reports", "crmcore_access",
               "crmcore_web"]

PLUGIN_MODULES = textwrap.dedent("""
    import json, sys
    from importlib.metadata import entry_points

    def plugin_modules():
        tops = {ep.value.split(":")[0].split(".")[0] for ep in entry_points(group="crmcore")}
        return sorted(m for m in sys.modules if m.startswith("crmcore_") or m.split(".")[0] in tops)
""")


def run_python(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", PLUGIN_MODULES + textwrap.dedent(code)], cwd=cwd,
                            capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_crmcore_imports_no_plugin(tmp_path: Path) -> None:
    out = run_python("""
        import crmcore
        print(json.dumps(plugin_modules()))
    """, tmp_path)
    assert json.loads(out) == []


def test_open_with_no_plugins_imports_no_plugin(tmp_path: Path) -> None:
    out = run_python(f"""
        from crmcore import CRM, Config
        crm = CRM.open(config=Config.from_mapping({{"database_url": "sqlite:///{tmp_path / 'crm.db'}", "plugins": []}}))
        crm.customers.add(name="张伟")
        crm.close()
        print(json.dumps(plugin_modules()))
    """, tmp_path)
    assert json.loads(out) == []


def test_the_check_sees_plugin_modules(tmp_path: Path) -> None:
    """The detector itself works: importing a first-party plugin shows up."""
    if importlib.util.find_spec("crmcore_segments") is None:
        pytest.skip("crmcore_segments is not installed")
    out = run_python("""
        import crmcore_segments
        print(json.dumps(plugin_modules()))
    """, tmp_path)
    assert "crmcore_segments" in json.loads(out)


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    missing = [name for name in FIRST_PARTY if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"first-party plugin package(s) not installed yet: {', '.join(missing)} "
                    "(import-linter needs every root package importable)")
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.skip(f"import-linter is not installed in {exe.parent}")
    return subprocess.run([str(exe), "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_linter_contract_is_kept() -> None:
    result = _lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The core never imports a plugin KEPT" in result.stdout


def test_import_linter_would_catch_a_forbidden_import(tmp_path: Path) -> None:
    """The same kind of contract, pointed at something crmcore does import, is broken:
    the linter really analyses crmcore."""
    config = tmp_path / "importlinter.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["crmcore"]
        include_external_packages = true

        [[tool.importlinter.contracts]]
        name = "canary: crmcore must not import pluggy"
        type = "forbidden"
        source_modules = ["crmcore"]
        forbidden_modules = ["pluggy"]
    """))
    result = _lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "crmcore.application.plugins" in result.stdout
