"""The door check: customers.add, the CLI and imports find stored customers with the same exact
keys (email whatever its case, the phone however it is written, a registration number)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crmcore import ConfigError
from crmcore.cli import cli
from crmcore.config import Config
from crmcore.domain.errors import DuplicateCustomer
from crmcore.io.importer import ImportOptions, import_file

REGION = {"phone_region": "CN"}


def test_add_refuses_the_same_person_and_says_who(sqlite_crm):
    crm = sqlite_crm(REGION)
    first = crm.customers.add(name="张伟", email="zhang.wei@example.com", phone="13291417776")
    with pytest.raises(DuplicateCustomer) as caught:
        # Capitals, spaces and another way of writing the number (full-width digits).
        crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@Example.com", phone="１３２-９１４１-７７７６")
    assert f"looks like customer {first.id} '张伟' (same email, phone)" in str(caught.value)
    assert [m.customer_id for m in caught.value.matches] == [first.id]
    assert crm.customers.count() == 1  # nothing written
    second = crm.customers.add(name="Zhang Wei", email="ZHANG.WEI@example.com", on_duplicate="add")
    assert second.id != first.id
    assert crm.customers.add(name="张伟", email="other@example.com").id  # a common name is no key


def test_registration_number_as_a_custom_field_key(sqlite_crm):
    crm = sqlite_crm({"duplicates": {"exact": ["attributes.registration_no"]},
                      "custom_fields": [{"entity": "customer", "name": "registration_no", "type": "str"}]})
    acme = crm.customers.add(name="华为技术有限公司", kind="company", attributes={"registration_no": "9144030071"})
    with pytest.raises(DuplicateCustomer, match=f"customer {acme.id} .*same registration_no"):
        crm.customers.add(name="Huawei Technologies Co., Ltd.", kind="company",
                          attributes={"registration_no": "9144030071"})
    # email is no key in this configuration
    crm.customers.add(name="A", email="a@example.com")
    crm.customers.add(name="B", email="a@example.com")


def test_on_add_setting_and_check(sqlite_crm):
    crm = sqlite_crm({**REGION, "duplicates": {"on_add": "add"}})
    crm.customers.add(name="Ann", email="ann@example.com")
    crm.customers.add(name="Ann", email="Ann@example.com")  # allowed by configuration
    found = crm.duplicates.check(email="ANN@EXAMPLE.COM")
    assert [(m.customer_id, m.fields) for m in found] == [(1, ("email",)), (2, ("email",))]
    assert crm.duplicates.check(email="nobody@example.com") == []


@pytest.mark.parametrize("table, message", [
    ({"on_add": "maybe"}, "on_add must be one of refuse, add"),
    ({"exact": ["email", "shoe_size"]}, "unknown key(s) 'shoe_size'"),
    ({"min_score": 2}, "min_score must be a number from 0 to 1"),
    ({"block": ["street"]}, "unknown column(s) 'street'"),
    ({"treshold": 1}, "unknown key(s): treshold"),
])
def test_bad_duplicates_table_names_the_key(table, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config.from_mapping({"duplicates": table})


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


CSV = """name,email,phone,city,industry
Zhang Wei,ZHANG.WEI@example.com,+86 132 9141 7776,Shanghai,retail
Li Na,li.na@example.com,,Beijing,
Li Na again,LI.NA@example.com,,Beijing,
"""


@pytest.mark.parametrize("mode, inserted, updated, skipped, actions", [
    ("skip", 1, 0, 2, ["skipped", "skipped"]),
    ("add", 3, 0, 0, ["added", "added"]),
    ("update", 1, 1, 1, ["updated", "skipped"]),
    ("merge", 1, 1, 1, ["merged", "skipped"]),
])
def test_import_on_duplicate(crm_factory, tmp_path, mode, inserted, updated, skipped, actions):
    crm = crm_factory(config=REGION)  # SQLite, PostgreSQL and MariaDB
    zhang = crm.customers.add(name="张伟", email="zhang.wei@example.com", city="Shanghai")
    report = import_file(crm, "customers", write(tmp_path / "c.csv", CSV), ImportOptions(on_duplicate=mode))
    assert (report.inserted, report.updated, report.skipped) == (inserted, updated, skipped)
    assert [d["action"] for d in report.duplicates] == actions
    assert [d["line"] for d in report.duplicates] == [2, 4]
    assert report.duplicates[0]["customers"] == [zhang.id]
    stored = crm.customers.get(zhang.id)
    if mode == "update":
        assert (stored.name, stored.phone, stored.industry) == ("Zhang Wei", "+8613291417776", "retail")
    elif mode == "merge":  # only the empty fields are filled
        assert (stored.name, stored.phone, stored.industry) == ("张伟", "+8613291417776", "retail")
    else:
        assert (stored.name, stored.phone) == ("张伟", None)


def test_import_cli_reports_each_duplicate_row(sqlite_crm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a crm.toml the README's demo left in the checkout
    crm = sqlite_crm(REGION)
    crm.customers.add(name="张伟", email="zhang.wei@example.com")
    url = crm.config.database_url
    crm.close()
    runner = CliRunner()
    path = write(tmp_path / "c.csv", CSV)
    result = runner.invoke(cli, ["--db", url, "--no-plugins", "import", "customers", str(path)])
    assert result.exit_code == 0, result.output
    assert "c.csv:2: skipped: looks like customer 1 '张伟' (same email)" in result.output
    assert "c.csv:4: skipped: looks like line 3 of this file" in result.output
    assert "1 inserted, 0 updated, 2 skipped as duplicates, 0 rejected" in result.output
    again = runner.invoke(cli, ["--db", url, "--no-plugins", "--json", "import", "customers", str(path),
                                "--on-duplicate", "add", "--dry-run"])
    assert again.exit_code == 0, again.output
    assert [d["action"] for d in json.loads(again.stdout)["duplicates"]] == ["added", "added", "added"]


def test_cli_add_says_who_without_a_traceback(sqlite_crm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a crm.toml the README's demo left in the checkout
    crm = sqlite_crm(REGION)
    crm.customers.add(name="张伟", email="zhang.wei@example.com")
    url = crm.config.database_url
    crm.close()
    runner = CliRunner()
    refused = runner.invoke(cli, ["--db", url, "--no-plugins", "customer", "add", "--name", "Zhang Wei",
                                  "--email", "Zhang.Wei@example.com"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert "looks like customer 1 '张伟' (same email)" in refused.output
    added = runner.invoke(cli, ["--db", url, "--no-plugins", "customer", "add", "--name", "Zhang Wei",
                                "--email", "Zhang.Wei@example.com", "--on-duplicate", "add"])
    assert added.exit_code == 0 and "customer 2 added" in added.output


def test_a_lead_in_other_capitals_is_the_stored_customer(sqlite_crm):
    crm = sqlite_crm(REGION)
    zhang = crm.customers.add(name="张伟", email="zhang.wei@example.com")
    captured = crm.leads.capture("form:contact", {"email": "ZHANG.WEI@EXAMPLE.COM"}, {"subject": "hi"})
    assert (captured.customer_id, captured.created) == (zhang.id, False)
    assert crm.customers.count() == 1
