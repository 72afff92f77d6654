"""Shared test set-up.  Database fixtures (crm_db_url, crm_factory, ...) come from
crmcore.testing, the pytest plugin crmcore ships for plugin authors."""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

TEST_PLUGINS = [Path(__file__).resolve().parent / "thirdparty" / "acme-crm-plugin"]


def _register_test_plugins() -> None:
    """Make the test-only plugins (acme) real entry points for this test session only.

    They are not installed (requirements-test.txt leaves them out), so a user's
    own CRM never loads them.  Here each gets a ``.dist-info`` (its name,
    version and entry points from its pyproject.toml) in a temporary directory
    put on ``sys.path`` and ``PYTHONPATH`` (for ``crm`` run as a subprocess), so
    ``importlib.metadata`` finds the entry point the way it finds an installed one.
    """
    metadata_dir = Path(tempfile.mkdtemp(prefix="crm-test-plugins-"))
    paths = [str(metadata_dir)]
    for source in TEST_PLUGINS:
        project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        name, version = project["name"], project["version"]
        info = metadata_dir / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                                       encoding="utf-8")
        groups = project.get("entry-points", {})
        (info / "entry_points.txt").write_text("".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()) + "\n"
            for group, points in groups.items()), encoding="utf-8")
        paths.append(str(source))
    sys.path[:0] = paths
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])


_register_test_plugins()

# Opening a CRM on an empty database replays the first migration's result
# instead of migrating again (tests/schema_cache.py says why and what stays tested).
import schema_cache  # noqa: E402

schema_cache.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test's fixtures: may its server database be emptied back to its schema rather than
    dropped?  Not for a test marked ``empty_database`` (it migrates to an older revision itself)."""
    schema_cache.reuse_schemas(item.get_closest_marker("empty_database") is None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (CRM_REQUIRE_SERVERS=1) a skipped test is a failure: nothing may be skipped."""
    if not os.environ.get("CRM_REQUIRE_SERVERS"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"CRM_REQUIRE_SERVERS is set but {len(skipped)} test(s) were skipped", red=True)
        session.exitstatus = 1


# Hypothesis profiles: "ci" (the default) keeps every property test to a few
# seconds; HYPOTHESIS_PROFILE=thorough runs many more examples locally.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
