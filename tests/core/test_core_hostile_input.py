"""Hostile filters and configuration files (issue 14 point 2): a one-line error, never a traceback.

The filter cases run on every configured database: a NUL byte failed on
PostgreSQL, a JSON path with a quote and a 100k-character pattern on SQLite,
numbers beyond 64 bits everywhere.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

import pytest

from crmcore import ConfigError, ValidationError
from crmcore.config import Config
from crmcore.store.filters import parse_expression


@pytest.fixture
def crm(crm_factory):
    crm = crm_factory()
    customer = crm.customers.add(name="Ann", attributes={"k": "v", "n": 3})
    crm.deals.add(customer_id=customer.id, title="t", amount=Decimal("5"), stage="won")
    return crm


@pytest.mark.parametrize("where", [
    "amount>=1e400", "amount<-1e400", "amount=99999999999999999999", "probability>100000000000000000000000",
    "id=100000000000000000000", "customer_id<-100000000000000000000", "title=a\x00b", "title~a\x00b",
    'attributes.k">=1', 'attributes.k"~x', 'attributes.a\\b=1', "attributes.=1", "attributes.k=a\x00b",
    "title~" + "x" * 100_000, "title=\ud800", "amount>1.00001", "amount~5", "closed_at~2026",
])
def test_hostile_where_is_a_one_line_error(crm, where: str) -> None:
    key, value = parse_expression(where)
    with pytest.raises(ValidationError) as err:
        crm.deals.list({key: value}) if not key.startswith("attributes") else crm.customers.list({key: value})
    assert "\n" not in str(err.value)


def test_long_search_is_a_one_line_error(crm) -> None:
    with pytest.raises(ValidationError, match="at most"):
        crm.customers.search("x" * 100_000)
    assert [c.name for c in crm.customers.search("An")] == ["Ann"]


def test_in_range_filters_still_work(crm) -> None:
    assert len(crm.deals.list({"amount__ge": "5"})) == 1
    assert len(crm.deals.list({"amount__lt": "922337203685477"})) == 1
    assert len(crm.customers.list({"attributes.k": "v"})) == 1
    assert len(crm.customers.list({"name__contains": "x" * 1000})) == 0


def _write(tmp: Path, content: bytes) -> Path:
    file = tmp / "crm.toml"
    file.write_bytes(content)
    return file


@pytest.mark.parametrize(("content", "message"), [
    (b"\x98\xff\x00garbage", "not UTF-8"),
    (b"x = " + b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"x = " + b"{a = " * 5000 + b"1" + b"}" * 5000, "nested too deeply"),
    (b"default_currency = \"USD\"\x00\n", "crm.toml"),
])
def test_garbage_crm_toml_is_a_one_line_error(tmp_path: Path, content: bytes, message: str) -> None:
    file = _write(tmp_path, content)
    with pytest.raises(ConfigError, match=message) as err:
        Config.load(file, environ={})
    assert str(file) in str(err.value) and "\n" not in str(err.value)


def test_directory_as_crm_toml(tmp_path: Path) -> None:
    (tmp_path / "crm.toml").mkdir()
    with pytest.raises(ConfigError, match="directory") as err:
        Config.load(tmp_path / "crm.toml", environ={})
    assert "crm.toml" in str(err.value)


def test_crm_toml_with_a_bom_is_read(tmp_path: Path) -> None:
    file = _write(tmp_path, b'\xef\xbb\xbfdefault_currency = "USD"\n')
    assert Config.load(file, environ={}).default_currency == "USD"
