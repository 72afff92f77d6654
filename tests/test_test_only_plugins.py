"""Test-only plugins load only in tests (issue 13, point 20): installing the test
requirements must not give a user's own CRM the example plugin ``acme``."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

SCRIPT = "from importlib.metadata import entry_points; print(sorted(e.name for e in entry_points(group='crmcore')))"


def test_acme_is_not_an_installed_entry_point_outside_the_tests(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    names = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                           text=True, check=True).stdout
    assert "'acme'" not in names and "'segments'" in names


def test_the_tests_see_acme_through_a_real_entry_point() -> None:
    [acme] = [ep for ep in entry_points(group="crmcore") if ep.name == "acme"]
    assert acme.value == "acme_crm" and acme.dist is not None and acme.dist.name == "acme-crm-plugin"
