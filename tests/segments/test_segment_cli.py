"""``crm segment runs|members|export|diff|explain``, segments in ``crm customer
show``, and ``--segment`` in ``crm customer list`` / ``crm export``: through
click's CliRunner, on every database the fixtures provide.

Expected values are worked out by hand from the data each test creates.
"""

from __future__ import annotations

import csv
import io
import json

from .conftest import as_json, ok

# Three customers, value-tier with the default 80/15/5 shares:
# Ann 800, Bob 150, Cy 50 (total 1000; ahead 0, 800, 950) -> A, B, C; Dee nothing.
PEOPLE = [("Ann", "ann@example.com", "800"), ("Bob", "bob@example.com", "150"), ("Cy", "cy@example.com", "50"),
          ("Dee", "dee@example.com", None)]


def seed(run) -> dict[str, int]:
    ids = {}
    for name, email, amount in PEOPLE:
        added = as_json(run("--json", "customer", "add", "--name", name, "--email", email, "--external-id", name))
        ids[name] = added[0]["id"]
        if amount:
            ok(run("deal", "add", "--customer", name, "--title", "t", "--amount", amount, "--currency", "CNY",
                   "--stage", "won"))
    return ids


def test_runs_members_export_diff(run, tmp_path):
    ids = seed(run)
    first = as_json(run("--json", "--as-of", "2030-01-01", "segment", "run", "value-tier"))[0]
    assert first["counts"] == {"A": 1, "B": 1, "C": 1, "No revenue": 1}

    members = as_json(run("--json", "segment", "members", "value-tier"))
    assert [(m["name"], m["email"], m["segment"]) for m in members] == [
        ("Ann", "ann@example.com", "A"), ("Bob", "bob@example.com", "B"), ("Cy", "cy@example.com", "C"),
        ("Dee", "dee@example.com", "No revenue")]
    table = ok(run("segment", "members", "B", "--strategy", "value-tier"))
    assert "Bob" in table and "bob@example.com" in table and "Ann" not in table

    # Cy buys 900 more: Cy 950, Ann 800, Bob 150 (total 1900): ahead 0, 950, 1750 -> A, A, B.
    ok(run("deal", "add", "--customer", "Cy", "--title", "t", "--amount", "900", "--currency", "CNY",
           "--stage", "won"))
    second = as_json(run("--json", "--as-of", "2030-01-01", "segment", "run", "value-tier"))[0]
    assert (second["entered"], second["left"], second["moved"]) == (0, 0, 1)
    runs = as_json(run("--json", "segment", "runs", "--strategy", "value-tier"))
    assert [r["id"] for r in runs] == [second["id"], first["id"]]

    diff = as_json(run("--json", "segment", "diff", str(first["id"]), str(second["id"])))
    assert diff == [{"customer_id": ids["Cy"], "change": "moved", "from": "C", "to": "A"}]
    back = as_json(run("--json", "segment", "diff", str(second["id"]), str(first["id"])))
    assert back == [{"customer_id": ids["Cy"], "change": "moved", "from": "A", "to": "C"}]
    text = ok(run("segment", "diff", str(first["id"]), str(second["id"])))
    assert "entered 0, left 0, moved 1" in text

    out = tmp_path / "a.csv"
    ok(run("segment", "export", "A", "--strategy", "value-tier", "--output", str(out)))
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [(r["name"], r["segment"]) for r in rows] == [("Ann", "A"), ("Cy", "A")]
    assert json.loads(rows[0]["details"])["revenue"] == "800.0000"
    lines = ok(run("segment", "export", "value-tier", "--run", str(first["id"]), "--format", "jsonl")).splitlines()
    assert [json.loads(line)["segment"] for line in lines] == ["A", "B", "C", "No revenue"]


def test_diff_and_explain_errors(run):
    seed(run)
    geo = as_json(run("--json", "segment", "run", "geo"))[0]
    tier = as_json(run("--json", "segment", "run", "value-tier"))[0]
    bad = run("segment", "diff", str(geo["id"]), str(tier["id"]))
    assert bad.exit_code == 1 and "same strategy" in bad.output and "Traceback" not in bad.output
    missing = run("segment", "diff", str(geo["id"]), "999")
    assert missing.exit_code == 1 and "segment run 999 not found" in missing.output
    nobody = run("segment", "explain", "value-tier", "nobody@example.com")
    assert nobody.exit_code == 1 and "not found" in nobody.output
    never = run("segment", "explain", "lifecycle", "Ann")
    assert never.exit_code == 1 and "lifecycle" in never.output


def test_explain(run):
    seed(run)
    ok(run("--as-of", "2030-01-01", "segment", "run", "value-tier"))
    found = as_json(run("--json", "segment", "explain", "value-tier", "bob@example.com"))[0]
    assert found["segment"] == "B"
    assert found["explanation"]["revenue"] == "150.0000" and found["explanation"]["rank"] == 2
    assert found["explanation"]["share_before"] == 80.0
    text = ok(run("segment", "explain", "value-tier", "Bob"))
    assert "is in B" in text and "share_before" in text
    ok(run("--as-of", "2030-01-01", "segment", "run", "rules", "-o", "rules=Big: total_spend >= 500",
           "-o", "default=Small"))
    rules = as_json(run("--json", "segment", "explain", "rules", "Ann"))[0]["explanation"]
    assert rules["matched_rule"] == "Big" and rules["values"] == {"total_spend": "800"}


def test_customer_show_list_and_export_by_segment(run, tmp_path):
    ids = seed(run)
    ok(run("--as-of", "2030-01-01", "segment", "run", "value-tier"))
    ok(run("segment", "run", "geo"))
    shown = as_json(run("--json", "customer", "show", str(ids["Bob"])))[0]
    assert shown["segments"] == {"value-tier": "B", "geo": "Unknown"}
    listed = as_json(run("--json", "customer", "list", "--segment", "value-tier:A"))
    assert [c["name"] for c in listed] == ["Ann"]
    both = as_json(run("--json", "customer", "list", "--segment", "value-tier:No revenue", "--segment",
                       "Unknown"))  # only geo has it: the strategy may be left out
    assert [c["name"] for c in both] == ["Dee"]
    assert as_json(run("--json", "customer", "list", "--where", "segment.value-tier!=A"))[0]["name"] == "Bob"
    never = run("customer", "list", "--segment", "rfm:Lost")
    assert never.exit_code == 1 and "strategy 'rfm' has no run yet" in never.output
    out = tmp_path / "c.csv"
    ok(run("export", "customers", "--segment", "value-tier:C", "-o", str(out)))
    assert [r["name"] for r in csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))] == ["Cy"]
    bad = run("export", "deals", "--segment", "value-tier:C")
    assert bad.exit_code == 1 and "--segment filters customers" in bad.output
    bad = run("customer", "list", "--segment", "value-tier")
    assert bad.exit_code == 1 and "no segment 'value-tier'" in bad.output and "value-tier:A" in bad.output
