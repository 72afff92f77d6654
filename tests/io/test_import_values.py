"""Values of real exports (issue 13 point 4): value mapping in the mapping file,
dates and money as Chinese and Excel exports write them."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from crmcore.io.values import parse_loose_date, parse_money
from iotools import write_csv

MAPPING = '''
[columns]
"编号" = "external_id"
"名称" = "name"
"类型" = "kind"
"营销同意" = "consent_marketing"
"短信" = "consent_sms"
"生日" = "birthday"
"阶段" = "stage"

[values.kind]
"个人" = "person"
"企业" = "company"

[values.consent_marketing]
"是" = true
"否" = false

[values.consent_sms]
"Y" = true
"N" = false

[values.stage]
"潜在客户" = "lead"
"成交客户" = "customer"
'''


def test_value_mapping_from_the_mapping_file(crm_cli, tmp_path):
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING, encoding="utf-8")
    file = write_csv(tmp_path / "客户.csv", [
        ["编号", "名称", "类型", "营销同意", "短信", "生日", "阶段"],
        ["C1", "张伟", "个人", "是", "Y", "1990/3/5", "潜在客户"],
        ["C2", "华为", "企业", "否", "N", "2001年12月31日", "成交客户"],
        ["C3", "李娜", "个人", "是", "N", "1985.07.09", "潜在客户"],
        ["C4", "王芳", "其他", "是", "Y", "", "潜在客户"],
    ])
    result = crm_cli.run("import", "customers", str(file), "--mapping", str(mapping), "--on-error", "skip")
    assert '客户.csv:5: column "类型": ' in result.output, result.output
    stored = {c.external_id: c for c in crm_cli.customers()}
    assert set(stored) == {"C1", "C2", "C3"}
    c1, c2, c3 = stored["C1"], stored["C2"], stored["C3"]
    assert (c1.kind.value, c1.consent_marketing, c1.consent_sms, c1.birthday, c1.stage.value) == (
        "person", True, True, date(1990, 3, 5), "lead")
    assert (c2.kind.value, c2.consent_marketing, c2.consent_sms, c2.birthday, c2.stage.value) == (
        "company", False, False, date(2001, 12, 31), "customer")
    assert c3.birthday == date(1985, 7, 9)


def test_money_and_excel_dates_in_deals(crm_cli, tmp_path):
    crm_cli.run("import", "customers", str(write_csv(tmp_path / "c.csv", [["external_id", "name"], ["C1", "A"]])))
    file = write_csv(tmp_path / "deals.csv", [
        ["external_id", "customer", "title", "amount", "currency", "stage", "expected_close"],
        ["D1", "C1", "a", "¥102,000", "CNY", "lead", "45292"],
        ["D2", "C1", "b", "￥１２，３４５.５０", "CNY", "lead", "2024/1/2"],
        ["D3", "C1", "c", "RMB 1,234,567.89", "CNY", "lead", "2024年1月2日"],
        ["D4", "C1", "d", "$99", "USD", "lead", "2024.01.02"],
        ["D5", "C1", "e", "102,000", "CNY", "lead", ""],
        ["D6", "C1", "f", "1,02", "CNY", "lead", ""],
    ])
    result = crm_cli.run("import", "deals", str(file), "--on-error", "skip")
    assert 'deals.csv:7: column "amount": ' in result.output, result.output
    deals = {d.external_id: d for d in crm_cli.open().deals.list()}
    assert {k: d.amount for k, d in deals.items()} == {
        "D1": Decimal("102000"), "D2": Decimal("12345.50"), "D3": Decimal("1234567.89"), "D4": Decimal("99"),
        "D5": Decimal("102000")}
    assert deals["D1"].expected_close == date(2024, 1, 1)  # Excel serial 45292
    assert {deals[k].expected_close for k in ("D2", "D3", "D4")} == {date(2024, 1, 2)}


@pytest.mark.parametrize("text, expected", [
    ("2024/1/2", date(2024, 1, 2)), ("2024年1月2日", date(2024, 1, 2)), ("2024.01.02", date(2024, 1, 2)),
    ("45292", date(2024, 1, 1)), ("2024-01-02", "2024-01-02"), ("2024/13/2", "2024/13/2"), ("12", "12"),
])
def test_parse_loose_date(text, expected):
    assert parse_loose_date(text) == expected


def test_parse_loose_datetime():
    assert parse_loose_date("2024/1/2 13:05", with_time=True) == datetime(2024, 1, 2, 13, 5)
    assert parse_loose_date("45292.5", with_time=True) == datetime(2024, 1, 1, 12, 0)


@pytest.mark.parametrize("text, expected", [
    ("¥102,000", "102000"), ("￥１２，３４５.５０", "12345.50"), ("RMB 1,234", "1234"), ("$99.5", "99.5"),
    ("102,000", "102000"), ("1,02", "1,02"), ("12.5", "12.5"), ("-1,000", "-1000"), ("abc", "abc"),
])
def test_parse_money(text, expected):
    assert parse_money(text) == expected
