"""Property tests of every door (issue 14): no input gives anything but a CRMError.

Bounded by the hypothesis profile registered in tests/conftest.py ("ci": a few
seconds each; HYPOTHESIS_PROFILE=thorough for more).  Filters and rules run on
SQLite; the importer runs under ``--on-error skip`` and every valid row must land.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmcore import CRM, Config, CRMError
from crmcore.io.importer import ImportOptions, import_file
from crmcore.store.filters import parse_expression
from crmcore.testing import FIXED_NOW

AS_OF = datetime(2026, 6, 30, tzinfo=timezone.utc)

# Text that reaches the corners: control characters, surrogates, digits of other scripts, huge numbers.
NASTY = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=30),
    st.sampled_from(["\x00", "\ud800", "1e400", "-1e400", "9" * 25, "１２３", "1_000", "NaN", "inf", '"', "'",
                     "\\", "%", "_", "x" * 2000, "2026-13-45", "true", "", " "]),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | NASTY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ["name", "email", "phone", "country", "city", "birthday", "stage", "kind", "tags", "consent_email",
          "external_id", "attributes", "owner"]


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> CRM:
    path = tmp_path_factory.mktemp("props") / "crm.db"
    crm = CRM.open(config=Config.from_mapping({"database_url": f"sqlite:///{path}", "plugins": ["segments"]}),
                   clock=lambda: FIXED_NOW)
    crm.upgrade()
    customer = crm.customers.add(name="Ann", attributes={"k": "v", "n": 3})
    crm.deals.add(customer_id=customer.id, title="t", amount="5", stage="won", closed_at=AS_OF)
    yield crm
    crm.close()


@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6))
def test_services_raise_only_crm_errors(crm: CRM, fields: dict) -> None:
    try:
        crm.customers.add(**fields)
    except CRMError:
        pass


WHERE_FIELDS = ["name", "email", "id", "amount", "probability", "closed_at", "title", "attributes.k",
                "attributes.n", "stage", "customer_id", "expected_close"]


@given(st.sampled_from(WHERE_FIELDS + ["attributes.\"", "nope"]), st.sampled_from(["=", "!=", ">=", "<=", ">", "<", "~"]),
       NASTY)
def test_where_raises_only_crm_errors(crm: CRM, field: str, symbol: str, value: str) -> None:
    try:
        key, parsed = parse_expression(f"{field}{symbol}{value}")
        target = crm.customers if field in ("name", "email", "attributes.k", "attributes.n") else crm.deals
        target.list({key: parsed})
    except CRMError:
        pass


@given(st.text(max_size=200))
def test_where_any_text(crm: CRM, text: str) -> None:
    try:
        crm.deals.list(dict([parse_expression(text)]))
    except CRMError:
        pass


RULE_TOKENS = ["and", "or", "not", "in", "is", "null", "true", "false", "(", ")", ",", "==", "!=", "<", ">=",
               "orders", "total_spend", "avg_order_value", "region", "name", "attributes.k", '"x"', "'\x00'",
               "12", "-3.5", "9" * 25, "0.00001", '"\ud800"']


@given(st.lists(st.sampled_from(RULE_TOKENS), min_size=1, max_size=12))
def test_rules_raise_only_crm_errors(crm: CRM, tokens: list[str]) -> None:
    try:
        crm.segments.run("rules", as_of=AS_OF, options={"rules": {"R": " ".join(tokens)}})
    except CRMError:
        pass


@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_config_loading_raises_only_config_errors(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    file = tmp_path_factory.mktemp("cfg") / "crm.toml"
    file.write_bytes(data)
    try:
        Config.load(file, environ={})
    except CRMError:
        pass


VALID_ROW = st.fixed_dictionaries({"name": st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1,
                                                   max_size=12)})
BAD_ROW = st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=4)


@given(st.lists(st.tuples(st.booleans(), VALID_ROW, BAD_ROW), min_size=1, max_size=8))
def test_import_skip_mode_lands_every_valid_row(tmp_path_factory: pytest.TempPathFactory,
                                                rows: list[tuple[bool, dict, dict]]) -> None:
    tmp = tmp_path_factory.mktemp("imp")
    crm = CRM.open(config=Config.from_mapping({"database_url": f"sqlite:///{tmp / 'crm.db'}", "plugins": []}),
                   clock=lambda: FIXED_NOW)
    try:
        crm.upgrade()
        lines, valid = [], []
        for number, (good, row, bad) in enumerate(rows):
            record = dict(row, external_id=f"r{number}") if good else dict(bad, external_id=f"r{number}")
            if good:
                valid.append(f"r{number}")
            lines.append(json.dumps(record))
        path: Path = tmp / "in.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        try:
            report = import_file(crm, "customer", path, ImportOptions(on_error="skip"))
        except CRMError:
            return  # a problem with the file as a whole
        landed = {c.external_id for c in crm.customers.list()}
        assert set(valid) <= landed, report.error_messages()
        assert report.inserted + report.rejected == len(rows)
    finally:
        crm.close()
