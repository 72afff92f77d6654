"""Shared test set-up.  Database fixtures (crm_db_url, crm_factory, ...) come from
crmcore.testing, the pytest plugin crmcore ships for plugin authors."""

from __future__ import annotations

import os

import pytest


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
