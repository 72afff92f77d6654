"""Phone numbers keep their extension (``ext. 123``, ``x123``, ``转 123``, ``分机 123``) as
``+E164;ext=123`` on every way in: import, ``customer add``, contacts; search finds them, and an
export imports back as it is; on every database."""

from __future__ import annotations

import pytest
from iotools import read_csv, write_csv

from crmcore.domain.validation import normalize_phone


@pytest.mark.parametrize(("written", "stored"), [
    ("138 0013 8000 转 123", "+8613800138000;ext=123"),
    ("138 0013 8000转123", "+8613800138000;ext=123"),
    ("+86 10 1234 5678 ext. 123", "+861012345678;ext=123"),
    ("010 1234 5678 x123", "+861012345678;ext=123"),
    ("138 0013 8000 分机 123", "+8613800138000;ext=123"),
    ("010-1234-5678 分机号：０１２３", "+861012345678;ext=0123"),  # full-width digits, leading zero kept
    ("+1 650 253 0000 #55", "+16502530000;ext=55"),
    ("+861012345678;ext=123", "+861012345678;ext=123"),  # the stored form reads back as itself
    ("+86 138 0013 8000", "+8613800138000"),
])
def test_extension_is_kept(written, stored):
    assert normalize_phone(written, "CN") == stored


def test_an_extension_alone_is_not_a_number():
    with pytest.raises(ValueError, match="phone number"):
        normalize_phone("转 123", "CN")


@pytest.fixture
def cli(make_cli, crm_db_url, tmp_path):
    config = tmp_path / "crm.toml"
    config.write_text('phone_region = "CN"\n', encoding="utf-8")
    return make_cli(crm_db_url, config)


def test_every_way_in_keeps_the_extension(cli, tmp_path):
    customers = write_csv(tmp_path / "customers.csv", [
        ["external_id", "name", "phone"],
        ["C1", "张伟", "138 0013 8000 转 123"],
        ["C2", "Ana", "+86 10 1234 5678 ext. 45"],
    ])
    cli.run("import", "customers", str(customers))
    cli.run("customer", "add", "--name", "王芳", "--phone", "010 8888 6666 分机 7")
    contacts = write_csv(tmp_path / "contacts.csv", [
        ["customer", "name", "phone"], ["C1", "李娜", "010 1234 5678 x 9"]])
    cli.run("import", "contacts", str(contacts))
    crm = cli.open()
    assert sorted(c.phone for c in crm.customers.list()) == [
        "+861012345678;ext=45", "+861088886666;ext=7", "+8613800138000;ext=123"]
    assert [c.phone for c in crm.contacts.list()] == ["+861012345678;ext=9"]
    # Search by the number finds the customer whatever its extension; the extension is shown.
    result = cli.run("customer", "search", "13800138000")
    assert "张伟" in result.output and "ext=123" in result.output
    # An export imports back unchanged (the extension survives the trip).
    out = tmp_path / "out.csv"
    cli.run("export", "customers", "-o", str(out), "--raw-csv")
    header, *rows = read_csv(out)
    phones = {row[header.index("external_id")]: row[header.index("phone")] for row in rows}
    assert phones["C1"] == "+8613800138000;ext=123"
    result = cli.run("import", "customers", str(out), "--raw-csv", "--key", "id")
    assert "0 inserted, 0 updated, 3 unchanged" in result.output
