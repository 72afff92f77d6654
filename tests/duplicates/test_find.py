"""Finding candidate duplicates in bulk, the match keys, and merging from the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from crmcore.application.duplicates import Pair, clusters
from crmcore.cli import cli
from crmcore.domain.matching import (
    code_key,
    email_key,
    name_similarity,
    strip_legal_suffix,
)


@pytest.mark.parametrize("a, b", [
    ("张伟", "Zhang Wei"), ("张伟", "WEI ZHANG"), ("Ｚｈａｎｇ　Ｗｅｉ", "zhang wei"), ("Zhang  Wei", "zhang wei"),
])
def test_one_name_in_characters_pinyin_and_any_width(a, b):
    assert name_similarity(a, b) == 1.0


@pytest.mark.parametrize("a, b", [("华为技术有限公司", "华为技术"), ("Acme Trading Co., Ltd.", "ACME Trading Ltd"),
                                  ("Siemens AG", "Siemens"), ("阿里巴巴集团", "阿里巴巴")])
def test_company_names_without_their_legal_suffix(a, b):
    assert name_similarity(a, b, company=True) == 1.0


def test_keys():
    assert email_key(" Zhang.Wei@Example.COM ") == "zhang.wei@example.com"
    assert code_key("91-4403 0071/X") == "9144030071x"
    assert strip_legal_suffix("Disco") == "disco"  # "co" only as a word of its own
    assert name_similarity("张伟", "李娜") < 0.5


def test_clusters_are_connected_components():
    found = clusters([Pair(1, 2, 0.9, {}), Pair(2, 3, 1.0, {}), Pair(5, 7, 0.85, {})])
    assert [(c.ids, c.score) for c in found] == [((1, 2, 3), 0.9), ((5, 7), 0.85)]


def seed(crm):
    people = [
        ("张伟", "zhang.wei@example.com", "+8613291417776", "Shanghai", "person"),   # 1
        ("Zhang Wei", "ZHANG.WEI@example.com", None, "Shanghai", "person"),          # 2: same email
        ("Wei Zhang", None, "132 9141 7776", "Shanghai", "person"),                  # 3: same phone

        ("张伟", "zhangwei88@example.com", "+8613800000001", "Shanghai", "person"),  # 4: same name only
        ("华为技术有限公司", "info@huawei.example", None, "Shenzhen", "company"),       # 5
        ("华为技术", "info@huawei.example", None, "Shenzhen", "company"),              # 6: same email
        ("李娜", "li.na@example.com", None, "Beijing", "person"),                   # 7
        ("王军", "wang.jun@example.com", "+8613911112222", "Beijing", "person"),      # 8: a father
        ("王俊", "wang.jun.jr@example.com", "+8613911112222", "Beijing", "person"),   # 9: his son, same phone
    ]
    for name, email, phone, city, kind in people:
        crm.customers.add(name=name, email=email, phone=phone, city=city, kind=kind, on_duplicate="add")


def test_find_scores_pairs_and_keeps_namesakes_below_the_merge_score(sqlite_crm):
    crm = sqlite_crm({"phone_region": "CN"})
    seed(crm)
    found = crm.duplicates.find(0.5)
    pairs = {(p.a, p.b): p for c in found for p in c.pairs}
    assert pairs[(1, 2)].score == 1.0 and pairs[(1, 2)].fields["email"] == "same"
    assert pairs[(1, 3)].score == 1.0 and pairs[(1, 3)].fields["phone"] == "same"
    assert pairs[(5, 6)].score == 1.0
    assert pairs[(1, 4)].fields["name"] == 1.0 and pairs[(1, 4)].score < 0.95  # a namesake, not the same person
    assert 7 not in {i for c in found for i in c.ids}
    # Father and son: one phone, homophone names (compared as characters), two addresses.
    family = next(p for c in crm.duplicates.find(0.0) for p in c.pairs if (p.a, p.b) == (8, 9))
    assert family.fields["email"] == "different" and family.fields["name"] == 0.5 and family.score < 0.8
    merged = crm.merges.plan()  # at [duplicates] merge_score (0.95)
    assert [c.ids for c in merged] == [(1, 2, 3), (5, 6)]


def test_cli_duplicates_and_bulk_merge(sqlite_crm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a crm.toml the README's demo left in the checkout
    crm = sqlite_crm({"phone_region": "CN"})
    seed(crm)
    url = crm.config.database_url
    crm.close()
    runner = CliRunner()
    base = ["--db", url, "--no-plugins"]
    listed = runner.invoke(cli, [*base, "--json", "customer", "duplicates", "--min-score", "0.95"])
    assert listed.exit_code == 0, listed.output
    assert [c["ids"] for c in json.loads(listed.stdout)] == [[1, 2, 3], [5, 6]]
    dry = runner.invoke(cli, [*base, "customer", "merge", "--all-above", "0.95", "--dry-run"])
    assert dry.exit_code == 0 and "would merge 3 customers into 2" in dry.output, dry.output
    done = runner.invoke(cli, [*base, "--json", "customer", "merge", "--all-above", "0.95"])
    assert done.exit_code == 0, done.output
    assert [m["merged_ids"] for m in json.loads(done.stdout)["merges"]] == [[2, 3], [6]]
    listed = runner.invoke(cli, [*base, "--json", "customer", "duplicates", "--min-score", "0.95"])
    assert json.loads(listed.stdout) == []
    undone = runner.invoke(cli, [*base, "customer", "unmerge", "1"])
    assert undone.exit_code == 0 and "merge 1 undone" in undone.output
    bad = runner.invoke(cli, [*base, "customer", "merge", "4"])
    assert bad.exit_code == 1 and "Traceback" not in bad.output and "at least one to merge" in bad.output


def test_merge_with_prefer_and_rules(sqlite_crm):
    crm = sqlite_crm({"phone_region": "CN"})
    a = crm.customers.add(name="Zhang Wei", email="zw@example.com", city="Shanghai", industry="retail",
                          consent_sms=False)
    b = crm.customers.add(name="张伟", email="ZW@example.com", city="Beijing", on_duplicate="add",
                          attributes={"vip": "yes"})
    result = crm.merges.merge(a.id, [b.id], prefer={"name": b.id})
    kept = result.kept
    assert (kept.name, kept.city, kept.industry) == ("张伟", "Shanghai", "retail")
    assert kept.attributes == {"vip": "yes"} and kept.consent_sms is False and kept.consent_email is True
    with pytest.raises(Exception, match="not one of those merged"):
        crm.merges.merge(a.id, [crm.customers.add(name="x").id], prefer={"name": 999})


def _bench_generators():
    """The benchmark's generators of people and planted duplicates (bench/duplicates_bench.py)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "duplicates_bench.py"
    spec = importlib.util.spec_from_file_location("duplicates_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.person, module.variant


def test_the_defaults_merge_planted_duplicates_and_no_distinct_people(crm_factory):
    """Issue 18's planted set, smaller, on every database: people with many namesakes, a planted
    copy of 10% of them (email case, phone formats, full-width digits, pinyin, company suffixes) and
    families sharing a phone.  Truth is what was planted; what a bulk merge would merge at the
    default merge_score must hold no pair of distinct people, and precision and recall >= 0.95."""
    import random

    person, variant = _bench_generators()
    rng = random.Random(18)
    people, planted = 1500, 150
    base = [person(rng, i) for i in range(people)]
    rows, truth = list(base), []
    for index in rng.sample(range(people), planted):
        rows.append(variant(rng, base[index]))
        truth.append((index, len(rows) - 1))
    for index in rng.sample(range(people), planted // 4):  # another person with the same phone
        rows.append({**person(rng, people + len(rows)), "phone": base[index]["phone"]})
    crm = crm_factory(config={"phone_region": "CN"})
    crm.customers.add_many(rows, on_duplicate="add")
    ids = [c.id for c in crm.customers.list(limit=len(rows), order_by="id")]
    expected = {tuple(sorted((ids[a], ids[b]))) for a, b in truth}
    merged = {(a, b) for c in crm.merges.plan() for i, a in enumerate(c.ids) for b in c.ids[i + 1:]}
    assert not merged - expected, sorted(merged - expected)[:5]  # no distinct people
    assert len(merged & expected) / len(expected) >= 0.95  # recall (precision is 1.0 by the line above)
    # The bulk merge: a dry run merges nothing, then every planned cluster is merged, nothing refused.
    live = crm.customers.count()
    plan, done, refused = crm.merges.merge_all(dry_run=True)
    assert (done, refused, crm.customers.count()) == ([], [], live)
    plan, done, refused = crm.merges.merge_all()
    assert not refused and len(done) == len(plan)
    gone = sum(len(c.ids) - 1 for c in plan)
    assert crm.customers.count() == live - gone and sum(len(m.merged_ids) for m in done) == gone
