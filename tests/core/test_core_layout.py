"""docs/architecture.md and the tree agree: every core module is listed, every
listed path exists, and the layers table names the layers of the import-linter
contract in pyproject.toml, in the same order."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def listed_paths() -> list[str]:
    block = re.search(r"```text\n(crmcore/.*?)```", ARCHITECTURE, re.S)
    assert block, "docs/architecture.md has no ```text block with the crmcore/ tree"
    return [line.split()[0] for line in block.group(1).splitlines() if line.startswith("crmcore/")]


def test_every_listed_path_exists() -> None:
    missing = [path for path in listed_paths() if not (ROOT / path).exists()]
    assert not missing, f"docs/architecture.md lists paths that do not exist: {missing}"


def test_every_core_module_is_listed() -> None:
    listed = listed_paths()
    packages = [p for p in listed if p.endswith("/")]
    modules = {p for p in listed if p.endswith(".py")}
    unlisted = []
    for path in sorted((ROOT / "crmcore").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in modules or any(rel.startswith(pkg) for pkg in packages):
            continue
        unlisted.append(rel)
    assert not unlisted, f"core modules missing from the tree in docs/architecture.md: {unlisted}"


def test_layers_table_matches_the_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    contract_layers = [sorted(re.split(r"\s*[:|]\s*", layer)) for layer in contract["layers"]]
    section = ARCHITECTURE.split("## Layers", 1)[1]
    table = section[section.index("| layer |"):].split("\n\n", 1)[0]
    rows = [line for line in table.splitlines()[2:]]
    doc_layers = [sorted(re.findall(r"`(\w+)`", row.split("|")[2])) for row in rows]
    assert doc_layers == contract_layers
