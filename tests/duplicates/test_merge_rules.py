"""Merge field rules (non-empty, newest, kept, ``--prefer``) from Python and the CLI, bad merge input
without a traceback, and who may merge and unmerge (audited with the full before-state), on SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crmcore import Customer
from crmcore.cli import cli
from crmcore.domain.errors import NotAuthorized, NotFound
from crmcore.store import tables
from crmcore.testing import FIXED_NOW


class Clock:
    """A clock the test moves (so 'newest' has a newer customer)."""

    def __init__(self) -> None:
        self.now = FIXED_NOW

    def __call__(self):
        return self.now


def two_records(crm: Any, clock: Clock) -> tuple[Any, Any]:
    """The kept record (older: an industry, no city) and a newer one (a city, another name)."""
    kept = crm.customers.add(name="Zhang Wei", email="zw@example.com", industry="retail", region="")
    clock.now += timedelta(days=1)
    newer = crm.customers.add(name="张伟", email="ZW@example.com", city="Shanghai", industry="food",
                              on_duplicate="add")
    return kept, newer


@pytest.mark.parametrize("rule, expected", [
    ("non-empty", ("Zhang Wei", "Shanghai", "retail")),  # the kept value unless empty
    ("newest", ("张伟", "Shanghai", "food")),              # the newest record's non-empty value
    ("kept", ("Zhang Wei", None, "retail")),             # the kept record as it is
])
def test_field_rules(crm_factory: Any, rule: str, expected: tuple[Any, ...]) -> None:
    clock = Clock()
    crm = crm_factory(clock=clock, config={"phone_region": "CN"})
    kept, newer = two_records(crm, clock)
    done = crm.merges.merge(kept.id, [newer.id], rule=rule).kept
    assert (done.name, done.city, done.industry) == expected
    # --prefer overrides the rule field by field
    crm.merges.unmerge(crm.merges.list()[0]["id"])
    preferred = crm.merges.merge(kept.id, [newer.id], prefer={"industry": newer.id}, rule=rule).kept
    assert preferred.industry == "food"


def test_configured_rule_and_cli_prefer(crm_factory: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # not a crm.toml the README's demo left in the checkout
    clock = Clock()
    crm = crm_factory(clock=clock, config={"phone_region": "CN", "duplicates": {"merge_rule": "newest"}})
    kept, newer = two_records(crm, clock)
    third = crm.customers.add(name="Z. Wei", email="zw@EXAMPLE.com", on_duplicate="add")
    url = crm.engine.url.render_as_string(hide_password=False)
    # The command line reads the same rule from crm.toml.
    (tmp_path / "crm.toml").write_text('phone_region = "CN"\n[duplicates]\nmerge_rule = "newest"\n', encoding="utf-8")
    runner = CliRunner()
    base = ["--db", url, "--no-plugins"]
    for args, message in [
        (["--prefer", "name"], "'name' is not FIELD=CUSTOMER"),
        (["--prefer", "id=1"], "not a field a merge takes"),
        (["--prefer", "name=999"], "999"),
        (["--rule", "oldest"], "'oldest' is not one of"),
        (["--dry-run"], "--dry-run: goes with --all-above"),
    ]:
        bad = runner.invoke(cli, [*base, "customer", "merge", str(kept.id), str(newer.id), *args])
        assert bad.exit_code != 0 and "Traceback" not in bad.output and message in bad.output, (args, bad.output)
    assert crm.customers.get(newer.id).archived_at is None  # nothing merged by a refused command
    done = runner.invoke(cli, [*base, "customer", "merge", str(kept.id), str(newer.id), str(third.id),
                               "--prefer", f"name={third.id}"])
    assert done.exit_code == 0, done.output
    stored = crm.customers.get(kept.id)
    # name as preferred; city and industry by [duplicates] merge_rule = newest (the third has none)
    assert (stored.name, stored.city, stored.industry) == ("Z. Wei", "Shanghai", "food")
    again = runner.invoke(cli, [*base, "customer", "merge", str(kept.id), str(newer.id)])
    assert again.exit_code == 1 and "Traceback" not in again.output and "archived" in again.output
    for args, message in [(["customer", "unmerge", "999"], "999"), (["customer", "unmerge", "x"], "x"),
                          (["customer", "duplicates", "--min-score", "2"], "2"),
                          (["customer", "merge", "--all-above", "0.9", str(kept.id)], "not both")]:
        bad = runner.invoke(cli, [*base, *args])
        assert bad.exit_code != 0 and "Traceback" not in bad.output and message in bad.output, (args, bad.output)


def test_who_may_merge_and_unmerge_and_the_audit(crm_factory: Any) -> None:
    crm = crm_factory(plugins=["access"], config={"phone_region": "CN"})
    crm.users.add("rep", role="sales-rep")
    crm.users.add("boss", role="admin")
    with crm.acting("boss"):
        kept = crm.customers.add(Customer(name="张伟", email="zw@example.com", owner="rep"))
        other = crm.customers.add(Customer(name="Zhang Wei", email="ZW@example.com", phone="+8613291417776",
                                           owner="rep"), on_duplicate="add")
    with crm.acting("rep"):
        assert crm.duplicates.check(email="zw@example.com")  # a rep may ask the door
        with pytest.raises(NotAuthorized):
            crm.merges.merge(kept.id, [other.id])
    with crm.acting("boss"):
        done = crm.merges.merge(kept.id, [other.id])
    with crm.acting("rep"), pytest.raises(NotAuthorized):
        crm.merges.unmerge(done.merge_id)
    with crm.acting("boss"):
        with pytest.raises(NotFound):
            crm.merges.unmerge(done.merge_id + 100)
        crm.merges.unmerge(done.merge_id)
    with crm.engine.connect() as conn:
        audit = conn.execute(select(tables.audit_log.c.action, tables.audit_log.c.actor, tables.audit_log.c.changes)
                             .where(tables.audit_log.c.action.in_(["customer.merge", "customer.unmerge"]),
                                    tables.audit_log.c.entity_id == str(kept.id))
                             .order_by(tables.audit_log.c.seq)).all()
    assert [(a.action, a.actor) for a in audit] == [("customer.merge", "boss"), ("customer.unmerge", "boss")]
    before = audit[0].changes["before"][0]  # the full before-state of every customer merged
    assert before[str(kept.id)]["email"] == "zw@example.com" and before[str(kept.id)]["phone"] is None
    assert before[str(other.id)]["phone"] == "+8613291417776" and before[str(other.id)]["owner"] == "rep"
    assert audit[1].changes["merge_id"] == [done.merge_id, None]
