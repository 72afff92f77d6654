"""``crm plugin new``: write a ready plugin package from the templates in ``templates/``.

The package has a ``pyproject.toml`` with the ``crmcore`` entry point, a hook
module, one working component of the chosen family, tests that use crmcore's
pytest plugin and the family's contract class, a README and, with
``tables``, an Alembic branch creating a table the plugin uses.
"""

from __future__ import annotations

import keyword
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import attrs

from ..domain.errors import CRMError

TEMPLATES = Path(__file__).parent / "templates"
NAME = re.compile(r"[a-z][a-z0-9_]*")


@attrs.frozen
class Family:
    """What differs between the plugin families in the generated package."""

    module: str  # the component's module in the package
    suffix: str  # the component class's name ends with this
    hook: str  # the registration hook
    registry: str  # the key of ``plugin_info().components``
    contract: str  # the contract class the tests subclass
    title: str  # what the README calls it
    summary: str  # what the contract checks, for the test's docstring
    protocol: str  # the family's base class in the public API (what register() takes)


FAMILIES = {
    "segmenter": Family("segments", "Segmenter", "register_segmenters", "segmenters", "SegmenterContract",
                        "segmenter", "one membership per customer, explain, empty database", "Segmenter"),
    "scheme": Family("loyalty", "Scheme", "register_loyalty_schemes", "loyalty_schemes", "LoyaltySchemeContract",
                     "loyalty scheme", "ledger consistent with balances, idempotent jobs, no negative balance",
                     "LoyaltyScheme"),
    "channel": Family("channels", "Channel", "register_channels", "channels", "ChannelContract", "channel",
                      "delivery to a real endpoint, failures classified as transient or permanent", "Channel"),
    "report": Family("reports", "Report", "register_reports", "reports", "ReportContract", "report",
                     "rows match columns, every core renderer, empty database, as_of respected", "Report"),
}


class ScaffoldError(CRMError):
    """The plugin cannot be generated as asked (bad name, unknown family, existing directory)."""


def check_name(name: str) -> None:
    """A plugin name becomes the Python package and the entry point: a lowercase identifier."""
    if not NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ScaffoldError(f"plugin name {name!r} is not usable: use lowercase letters, digits and "
                            "underscores, starting with a letter (it becomes the Python package name)")
    if name == "crmcore" or name.startswith("crmcore_"):
        raise ScaffoldError(f"plugin name {name!r} is reserved for crmcore's own packages")


def _crmcore_version() -> str:
    try:
        return version("crmcore")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1"


def new_plugin(name: str, family: str, output: str | Path = ".", tables: bool = False) -> Path:
    """Write the plugin package ``output/name``; returns its directory.

    :raises ScaffoldError: for a bad name, an unknown family or an existing directory.
    """
    check_name(name)
    if family not in FAMILIES:
        raise ScaffoldError(f"unknown plugin family {family!r}: choose one of {', '.join(FAMILIES)}")
    kind = FAMILIES[family]
    target = Path(output) / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists: choose another name or --output directory")
    camel = "".join(part.capitalize() for part in name.split("_") if part)
    values = {
        "package": name, "distribution": name.replace("_", "-"), "component": name.replace("_", "-"),
        "family": family, "family_title": kind.title, "module": kind.module, "hook": kind.hook,
        "protocol": kind.protocol,
        "registry": kind.registry, "contract": kind.contract, "contract_summary": kind.summary,
        "camel": camel, "cls": camel + kind.suffix, "tables": tables, "table": f"{name}_events",
        "summary": f"A crmcore {kind.title} plugin: {name.replace('_', ' ')}",
        "crmcore_version": _crmcore_version(),
    }
    files = {
        "pyproject.toml": "pyproject.toml.j2",
        "README.md": "README.md.j2",
        f"{name}/__init__.py": "__init__.py.j2",
        f"{name}/{kind.module}.py": f"{family}.py.j2",
        "tests/test_plugin.py": "tests/test_plugin.py.j2",
    }
    if family == "channel":
        files["tests/conftest.py"] = "tests/conftest.py.j2"
    if tables:
        files[f"{name}/tables.py"] = "tables.py.j2"
        files[f"{name}/migrations/{name}_0001_events.py"] = "migration.py.j2"
    import jinja2  # here: `crm plugin new` is the one command that needs it, not every start-up

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined, autoescape=False)
    try:
        for relative, template in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(env.get_template(template).render(values), encoding="utf-8")
    except OSError as exc:
        raise ScaffoldError(f"cannot write the plugin under {target}: {exc.strerror or exc}") from None
    return target


__all__ = ["FAMILIES", "ScaffoldError", "check_name", "new_plugin"]
