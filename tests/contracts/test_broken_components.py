"""Each contract class fails a deliberately broken component and passes a good one.

The contracts run in a separate pytest session (``pytester``) on test
classes that subclass them with the components of ``broken_components.py``;
every broken component must fail the check its flaw breaks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

HERE = Path(__file__).parent

# family -> (contract class, the code of the fixtures a subclass adds)
FIXTURES = {
    "SegmenterContract": "",
    "LoyaltySchemeContract": "",
    "ReportContract": "",
    "ChannelContract": '''
    @pytest.fixture
    def channel_options(self, tmp_path):
        return {"path": str(tmp_path / "lines.txt")}

    @pytest.fixture
    def delivered(self, tmp_path):
        path = tmp_path / "lines.txt"
        return lambda: path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    @pytest.fixture
    def provoke_failure(self, tmp_path):
        def provoke(kind):
            if kind == "transient":  # the folder is not there yet: someone may create it
                return {"options": {"path": str(tmp_path / "missing" / "lines.txt")}}
            return {"options": {"path": str(tmp_path)}}  # a directory: the configuration is wrong
        return provoke
''',
}

# (contract, component class, the contract's tests it must fail; empty = must pass all)
CASES = [
    ("SegmenterContract", "WonDeals", set()),
    ("SegmenterContract", "Duplicates", {"test_run_assigns_every_customer_at_most_once", "test_explain_member",
                                         "test_explain_non_member", "test_rerun_on_the_same_data_changes_nothing"}),
    ("SegmenterContract", "ExplainFailsForNonMembers", {"test_explain_non_member"}),
    ("SegmenterContract", "FailsOnEmpty", {"test_empty_database"}),
    ("SegmenterContract", "Shuffles", {"test_rerun_on_the_same_data_changes_nothing"}),
    ("LoyaltySchemeContract", "Cashback", set()),
    ("LoyaltySchemeContract", "BonusEveryRun", {"test_jobs_are_idempotent"}),
    ("LoyaltySchemeContract", "BalanceBehindTheLedger", {"test_ledger_matches_balances"}),
    ("ChannelContract", "Lines", set()),
    ("ChannelContract", "Silent", {"test_send_arrives_once", "test_dispatcher_delivers"}),
    ("ChannelContract", "Twice", {"test_send_arrives_once", "test_dispatcher_delivers"}),
    ("ChannelContract", "Unclassified", {"test_failure_classified"}),
    ("ChannelContract", "AlwaysPermanent", {"test_failure_classified"}),
    ("ReportContract", "WonCount", set()),
    ("ReportContract", "ShortRows", {"test_rows_match_columns", "test_empty_database"}),
    ("ReportContract", "IgnoresAsOf", {"test_as_of_respected"}),
    ("ReportContract", "ReportFailsOnEmpty", {"test_empty_database", "test_as_of_respected"}),
]


def subclass_module(contract: str, component: str) -> str:
    return f'''
import pytest
from crmcore.testing import {contract}
from broken_components import {component}


class TestIt({contract}):
    @pytest.fixture
    def component(self):
        return {component}()
{FIXTURES[contract]}'''


@pytest.mark.parametrize("contract, component, must_fail", CASES, ids=[f"{c}-{k}" for c, k, _ in CASES])
def test_contract_judges_component(pytester: pytest.Pytester, contract: str, component: str,
                                   must_fail: set[str]) -> None:
    pytester.syspathinsert(HERE)
    pytester.makepyfile(test_it=subclass_module(contract, component))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "not postgresql and not mariadb", "-q")
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    failed = {r.nodeid.split("::")[-1].split("[")[0] for r in reports if r.failed}
    passed = {r.nodeid.split("::")[-1].split("[")[0] for r in reports if r.passed and r.when == "call"}
    assert passed, result.stdout.str()
    if must_fail:
        assert must_fail <= failed, f"{component} should fail {sorted(must_fail - failed)}:\n{result.stdout.str()}"
    else:
        assert not failed, result.stdout.str()
