"""Control characters at the door (issue 14 point 1): every text field, every entry path.

One-line fields (names, emails, subjects, cities, tags, ...) refuse C0/C1
control characters (CR, LF, TAB and NUL included), the Unicode line and
paragraph separators and lone surrogates.  Multi-line fields (an interaction's
body) keep LF and TAB, store CR LF and lone CR as LF, and refuse the rest.
Runs on every configured database: NUL used to reach PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from iotools import write_csv

from crmcore import Config, Customer, Interaction, InteractionKind, ValidationError
from crmcore.domain.validation import EntityValidator, index_custom_fields
from crmcore.testing import FIXED_NOW

BAD = ["a\nb", "a\rb", "a\r\nb", "a\x00b", "a\tb", "a\x1bb", "a\x85b", "a\x7fb", "a\u2028b", "a\ud800b"]


def validator() -> EntityValidator:
    config = Config()
    return EntityValidator(config, index_custom_fields(config.custom_fields), lambda: FIXED_NOW)


@pytest.mark.parametrize("text", BAD, ids=repr)
@pytest.mark.parametrize("field", ["name", "email", "city", "owner", "external_id", "tags"])
def test_one_line_customer_fields_refuse_control_characters(field: str, text: str) -> None:
    value: object = (text,) if field == "tags" else text
    with pytest.raises(ValidationError) as err:
        validator().customer(Customer(**{"name": "x", field: value}))  # type: ignore[arg-type]
    assert [f for f, _ in err.value.issues] == [field]
    assert "\n" not in str(err.value) and "\r" not in str(err.value)


def test_interaction_subject_is_one_line_body_keeps_lines() -> None:
    v = validator()
    base = Interaction(1, InteractionKind.NOTE, datetime(2026, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ValidationError, match="subject"):
        v.interaction(Interaction(1, InteractionKind.NOTE, base.occurred_at, subject="Hi\r\nBcc: x@example.com"))
    kept = v.interaction(Interaction(1, InteractionKind.NOTE, base.occurred_at, body="line 1\r\nline 2\rline 3\n\tend"))
    assert kept.body == "line 1\nline 2\nline 3\n\tend"
    for bad in ("a\x00b", "a\x1bb", "a\ud800b", "a\x0cb"):
        with pytest.raises(ValidationError, match="body"):
            v.interaction(Interaction(1, InteractionKind.NOTE, base.occurred_at, body=bad))


def test_services_refuse_control_characters(crm_cli) -> None:
    crm = crm_cli.open()
    if True:
        for bad in ("Li\r\nBcc: all@example.com", "Li\x00", "Li\ud800"):
            with pytest.raises(ValidationError, match="name"):
                crm.customers.add(name=bad)
        stored = crm.customers.add(name="Li")
        with pytest.raises(ValidationError, match="city"):
            crm.customers.update(stored.id, city="Shang\nhai")
        with pytest.raises(ValidationError, match="title"):
            crm.deals.add(customer_id=stored.id, title="Big\x00deal", amount="1.00", stage="qualified")
        note = crm.interactions.add(customer_id=stored.id, kind="note", occurred_at=FIXED_NOW,
                                    subject="call", body="first\r\nsecond")
        assert crm.interactions.get(note.id).body == "first\nsecond"


def test_import_rejects_control_characters_keeps_the_rest(crm_cli, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "customers.csv", [
        ["external_id", "name", "email"],
        ["C1", "Alice", "alice@example.com"],
        ["C2", "Bob\r\nBcc: all@example.com", "bob@example.com"],
        ["C3", "Carol\x00", "carol@example.com"],
        ["C4", "Dan", "dan@example.com"],
    ])
    result = crm_cli.run("import", "customers", str(file), "--on-error", "skip", ok=None)
    assert "Traceback" not in result.output
    assert {c.external_id for c in crm_cli.customers()} == {"C1", "C4"}
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"external_id": "J1", "name": "Eve\u2028x"}, {"external_id": "J2", "name": "Fay"},
        {"external_id": "J3", "name": "Gus", "city": "\x1b[31mred"}]) + "\n", encoding="utf-8")
    result = crm_cli.run("import", "customers", str(jsonl), "--on-error", "skip", ok=None)
    assert "Traceback" not in result.output
    assert {c.external_id for c in crm_cli.customers()} == {"C1", "C4", "J2"}


def test_cli_refuses_control_characters_in_one_line(crm_cli) -> None:
    result = crm_cli.run("customer", "add", "--name", "Mallory\nBcc: all@example.com", ok=False)
    assert "Traceback" not in result.output
    message = (result.output + (result.stderr or "")).strip()
    assert "name" in message and "line feed" in message
    assert not crm_cli.customers()
