"""``customer search`` finds phone numbers as people write them (issue 13, point 12).

Phones are stored in E.164 (``+8613291417776``); a search term that is digits
with separators or a ``+`` is matched in that form too: the whole number
normalised, or a run of its digits.  On every database the fixtures provide.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from crmcore.application.services import phone_search_terms
from crmcore.cli import cli

# Stored as +8613291417776, +8675512345678 and +14155550123.
PEOPLE = [("Ann", "13291417776"), ("Bo", "0755 1234 5678"), ("Cy", "+1 415 555 0123")]


@pytest.fixture
def crm(crm_factory):
    crm = crm_factory(config={"phone_region": "CN"})
    for name, phone in PEOPLE:
        crm.customers.add(name=name, phone=phone)
    return crm


def found(crm, text: str) -> list[str]:
    return [c.name for c in crm.customers.search(text)]


@pytest.mark.parametrize("text, names", [
    ("132-9141-7776", ["Ann"]),          # the whole number, national, with dashes
    ("+86 132 9141 7776", ["Ann"]),      # international with spaces
    ("+86 132", ["Ann"]),                # the start of an international number
    ("9141 7776", ["Ann"]),              # a run of digits inside
    ("(0755) 1234-5678", ["Bo"]),        # national with the trunk 0 that E.164 drops
    ("0755-1234", ["Bo"]),               # a part of it, trunk 0 and all
    ("+1 (415) 555-0123", ["Cy"]),
    ("415.555", ["Cy"]),
    ("+44 20", []),                      # no such number
    ("Bo", ["Bo"]),                      # names still match as typed
])
def test_search_matches_formatted_phone_numbers(crm, text, names):
    assert found(crm, text) == names


def test_cli_customer_search_by_formatted_phone(crm, crm_db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRM_PHONE_REGION", "CN")
    for var in ("CRM_PLUGINS", "CRM_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(cli, ["--db", crm_db_url, "--no-plugins", "--json", "customer", "search",
                                      "132-9141-7776"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.output)] == ["Ann"]


def test_terms_only_for_phone_like_text():
    assert phone_search_terms("Ann", "CN") == []
    assert phone_search_terms("ann@example.com", "CN") == []
    assert phone_search_terms("132-9141-7776", None) == ["13291417776"]
    assert phone_search_terms("132-9141-7776", "CN") == ["+8613291417776", "13291417776"]


@given(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=15),
       st.lists(st.sampled_from([" ", "-", ".", "(", ")"]), max_size=15))
def test_separators_never_change_the_digit_run(digits, separators):
    typed = "".join(d + (separators[i] if i < len(separators) else "") for i, d in enumerate(digits))
    assert "".join(digits) in phone_search_terms(typed, None)
