"""The ``kmeans`` segmenter against scikit-learn run directly on a pandas frame.

The expected clusters come from the generated Python data only: pandas
computes R/F/M from the deals (won stages per pipeline, up to as_of),
numpy/scikit-learn standardise and cluster them; the plugin's SQL features
and stored memberships must agree.  Names are checked on hand-made data whose
clusters are obvious.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from contribtools import bulk_load, explain, ok
from crmcore_kmeans import NO_PURCHASES, KMeansSegmenter
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from crmcore import ConfigError, SegmentContext
from crmcore.testing import SegmenterContract

UTC = timezone.utc
AS_OF = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)
PIPELINES = {
    "default": {"stages": [{"name": "lead"}, {"name": "won", "outcome": "won"}, {"name": "lost", "outcome": "lost"}]},
    # "won" is an open stage here: a segmenter reading stage names gets it wrong.
    "b2b": {"stages": [{"name": "won"}, {"name": "signed", "outcome": "won"}]},
}
WON = {("default", "won"), ("b2b", "signed")}


def generate(seed: int, customers: int) -> list[dict]:
    """Deals per customer index from three rough behaviours, plus noise and traps."""
    rng = random.Random(seed)
    deals = []
    for index in range(customers):
        kind = index % 4
        if kind == 3 and rng.random() < 0.5:
            continue  # no deals
        count, spend, days = [(rng.randint(6, 12), 800, 20), (rng.randint(1, 2), 40, 400),
                              (rng.randint(2, 5), 150, 120), (1, 60, 200)][kind]
        for _ in range(count):
            pipeline, stage = rng.choice([("default", "won"), ("default", "won"), ("b2b", "signed"),
                                          ("default", "lost"), ("b2b", "won")])
            ago = rng.randint(-10, 2 * days)  # negative: closed after as_of
            # Whole days at 06:00: recency is exact on every database.
            deals.append({"customer": index, "pipeline": pipeline, "stage": stage,
                          "amount": Decimal(rng.randint(1, 2 * spend * 100)) / 100,
                          "closed_at": AS_OF.replace(hour=6) - timedelta(days=ago)})
    return deals


def expected_features(deals: list[dict], ids: list[int], as_of: datetime) -> pd.DataFrame:
    """Independent R/F/M and standardised log features, indexed by customer id (ascending)."""
    frame = pd.DataFrame(deals)
    is_won = np.array([(p, s) in WON for p, s in zip(frame.pipeline, frame.stage)])
    won = frame[is_won & (frame.closed_at <= as_of).to_numpy()].copy()
    won["customer_id"] = [ids[i] for i in won.customer]
    won["amount"] = won.amount.astype(float)
    rfm = won.groupby("customer_id").agg(last=("closed_at", "max"), frequency=("amount", "size"),
                                         monetary=("amount", "sum")).sort_index()
    rfm["recency"] = [(as_of - t).total_seconds() / 86400 for t in rfm["last"]]
    logs = np.log1p(rfm[["recency", "frequency", "monetary"]].to_numpy(dtype=float))
    scaled = (logs - logs.mean(axis=0)) / logs.std(axis=0)  # population std, as StandardScaler
    for n, name in enumerate(("z_r", "z_f", "z_m")):
        rfm[name] = scaled[:, n]
    return rfm


def same_partition(a, b) -> bool:
    """Two labellings describe the same clusters (up to renaming)."""
    pairs = set(zip(a, b))
    return len(pairs) == len(set(a)) == len(set(b))


@pytest.fixture
def kmeans_crm(crm_factory):
    return crm_factory(plugins=["kmeans"], config={"pipelines": PIPELINES})


def test_clusters_match_sklearn_on_pandas(kmeans_crm):
    deals = generate(seed=11, customers=160)
    ids = bulk_load(kmeans_crm, 160, deals)
    expected = expected_features(deals, ids, AS_OF)
    scaled = expected[["z_r", "z_f", "z_m"]].to_numpy()
    reference = KMeans(n_clusters=4, n_init=10, random_state=7).fit(scaled)

    run = kmeans_crm.segments.run("kmeans", as_of=AS_OF, options={"k": 4, "seed": 7})
    members = {m["customer_id"]: m for m in kmeans_crm.segments.members("kmeans", run_id=run.id)}
    assert sorted(members) == sorted(ids)
    buyers = [members[c] for c in expected.index]
    assert all(members[c]["segment"] == NO_PURCHASES for c in set(ids) - set(expected.index))
    assert len(set(ids) - set(expected.index)) > 5  # the data has customers without purchases
    for member, (_, row) in zip(buyers, expected.iterrows()):
        d = member["details"]
        assert d["frequency"] == row.frequency
        assert Decimal(d["monetary"]) == sum(x["amount"] for x in deals
                                             if ids[x["customer"]] == member["customer_id"]
                                             and (x["pipeline"], x["stage"]) in WON and x["closed_at"] <= AS_OF)
        assert d["recency_days"] == pytest.approx(row.recency, abs=1e-6)
        assert [d["features"][f] for f in ("recency", "frequency", "monetary")] == pytest.approx(
            [row.z_r, row.z_f, row.z_m], abs=1e-9)
    assert same_partition([m["segment"] for m in buyers], reference.labels_)
    # Each customer sits in the nearest centroid; the score is that distance.
    centroid_of = {}
    for label, center in enumerate(reference.cluster_centers_):
        names = {m["segment"] for m, own in zip(buyers, reference.labels_) if own == label}
        centroid_of[names.pop()] = center
    for member, point in zip(buyers, scaled):
        distances = member["details"]["distances"]
        assert set(distances) == set(centroid_of)
        for name, center in centroid_of.items():
            assert distances[name] == pytest.approx(np.linalg.norm(point - center), abs=1e-6)
        # rel: MariaDB stores the score column as a single-precision FLOAT.
        assert member["score"] == pytest.approx(min(distances.values()), rel=1e-5)
        assert distances[member["segment"]] == pytest.approx(min(distances.values()))


def test_k_chosen_by_silhouette(kmeans_crm):
    deals = generate(seed=5, customers=120)
    ids = bulk_load(kmeans_crm, 120, deals)
    scaled = expected_features(deals, ids, AS_OF)[["z_r", "z_f", "z_m"]].to_numpy()
    scores = {k: silhouette_score(scaled, KMeans(n_clusters=k, n_init=10, random_state=0).fit(scaled).labels_)
              for k in range(2, 7)}
    best = max(scores, key=scores.get)
    run = kmeans_crm.segments.run("kmeans", as_of=AS_OF, options={"k_max": 6})
    members = [m for m in kmeans_crm.segments.members("kmeans", run_id=run.id) if m["segment"] != NO_PURCHASES]
    details = members[0]["details"]
    assert details["k"] == best
    assert {int(k): v for k, v in details["silhouettes"].items()} == pytest.approx(scores, abs=1e-5)
    assert len({m["segment"] for m in members}) == best


def test_same_seed_same_clusters(kmeans_crm):
    bulk_load(kmeans_crm, 80, generate(seed=3, customers=80))
    first = kmeans_crm.segments.run("kmeans", as_of=AS_OF, options={"k": 3, "seed": 42})
    second = kmeans_crm.segments.run("kmeans", as_of=AS_OF, options={"k": 3, "seed": 42})
    assert second.entered == second.left == second.moved == 0
    assert first.counts == second.counts


def test_names_from_centroids(kmeans_crm):
    """Three obvious groups, named in words, numbered by value."""
    groups = {  # name: (customers, deals each, amount, days ago)
        "high value, frequent, recent": (5, 10, Decimal("1000"), 2),
        "mid value, occasional, lapsing": (5, 3, Decimal("100"), 60),
        "low value, rare, lapsed": (5, 1, Decimal("10"), 600),
    }
    with kmeans_crm.unit():
        expected = {}
        for name, (count, deals, amount, ago) in groups.items():
            for i in range(count):
                customer = kmeans_crm.customers.add(name=f"{name} {i}")
                expected[customer.id] = name
                for _ in range(deals):
                    kmeans_crm.deals.add(customer_id=customer.id, title="x", amount=amount + i, stage="won",
                                         closed_at=AS_OF - timedelta(days=ago + i))
        idle = kmeans_crm.customers.add(name="Never bought").id
    run = kmeans_crm.segments.run("kmeans", as_of=AS_OF)  # k by silhouette: 3
    members = {m["customer_id"]: m for m in kmeans_crm.segments.members("kmeans", run_id=run.id)}
    assert {c: members[c]["segment"] for c in expected} == expected
    assert members[idle]["segment"] == NO_PURCHASES
    assert {m["details"]["cluster"] for c, m in members.items() if c in expected and
            m["segment"].startswith("high")} == {1}
    why = explain(kmeans_crm, "kmeans", next(iter(expected)), AS_OF)
    assert why["segment"] == "high value, frequent, recent"
    assert set(why["distances"]) == set(groups) and min(why["distances"], key=why["distances"].get) == why["segment"]
    assert why["frequency"] == 10 and Decimal(why["monetary"]) == Decimal("10000")
    assert "silhouette" in why["why"]
    assert explain(kmeans_crm, "kmeans", idle, AS_OF)["segment"] == NO_PURCHASES
    # The engine asks about a customer who is not in the run with segment None.
    segmenter = KMeansSegmenter()
    with kmeans_crm.unit(readonly=True) as uow:
        why = segmenter.explain(SegmentContext(uow, AS_OF), segmenter.options_type(),
                                {"segment": None, "details": None})
    assert why["segment"] is None and "not a member" in why["why"]


def test_empty_database(kmeans_crm):
    kmeans_crm.customers.add(name="Nobody bought")
    run = kmeans_crm.segments.run("kmeans", as_of=AS_OF)
    assert run.counts == {NO_PURCHASES: 1}


@pytest.mark.parametrize("options, message", [
    ({"k": 1}, r"\[segments.kmeans\] k: .*at least 2"),
    ({"k_min": 5, "k_max": 3}, r"\[segments.kmeans\] k_max: .*below k_min"),
    ({"clusters": 3}, r"\[segments.kmeans\] clusters"),
    ({"k": 5}, r"\[segments.kmeans\] k = 5 needs at least 5 customers .* found 3"),
    ({"k": "many"}, r"\[segments.kmeans\] k"),
])
def test_bad_options(kmeans_crm, options, message):
    with kmeans_crm.unit():
        for i in range(3):
            customer = kmeans_crm.customers.add(name=f"C{i}")
            kmeans_crm.deals.add(customer_id=customer.id, title="x", amount=Decimal(10 * (i + 1)), stage="won",
                                 closed_at=AS_OF - timedelta(days=i + 1))
    with pytest.raises(ConfigError, match=message):
        kmeans_crm.segments.run("kmeans", as_of=AS_OF, options=options)
    assert kmeans_crm.segments.runs("kmeans") == []  # nothing recorded


def test_too_few_customers_to_choose_k(kmeans_crm):
    customer = kmeans_crm.customers.add(name="Solo")
    kmeans_crm.deals.add(customer_id=customer.id, title="x", amount=Decimal("5"), stage="won",
                         closed_at=AS_OF - timedelta(days=1))
    with pytest.raises(ConfigError, match=r"choosing k needs at least 3 customers .* found 1"):
        kmeans_crm.segments.run("kmeans", as_of=AS_OF)


def test_through_the_cli(crm_cli, crm_factory):
    crm = crm_factory(plugins=["kmeans"], config={"pipelines": PIPELINES})
    deals = generate(seed=2, customers=60)
    ids = bulk_load(crm, 60, deals)
    expected = expected_features(deals, ids, AS_OF)
    reference = KMeans(n_clusters=3, n_init=10, random_state=1).fit(expected[["z_r", "z_f", "z_m"]].to_numpy())
    # The CLI reads its pipelines from crm.toml in the working directory.
    with open("crm.toml", "w") as fh:
        fh.write("[pipelines.default]\nstages = [{name = 'lead'}, {name = 'won', outcome = 'won'}, "
                 "{name = 'lost', outcome = 'lost'}]\n"
                 "[pipelines.b2b]\nstages = [{name = 'won'}, {name = 'signed', outcome = 'won'}]\n")
    out = ok(crm_cli("--as-of", AS_OF.isoformat(), "segment", "run", "kmeans", "--option", "k=3",
                     "--option", "seed=1", plugins="kmeans"))
    assert f"{len(ids)} customers" in out
    members = {m["customer_id"]: m["segment"] for m in crm.segments.members("kmeans")}
    assert same_partition([members[c] for c in expected.index], reference.labels_)
    bad = crm_cli("segment", "run", "kmeans", "--option", "k=1", plugins="kmeans")
    assert bad.exit_code != 0 and "k: " in bad.output and "Traceback" not in bad.output


class TestKMeansContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return KMeansSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        crm = crm_factory(plugins=["kmeans"], config={"pipelines": PIPELINES})
        bulk_load(crm, 30, generate(seed=9, customers=30))
        return crm


def test_registered_by_the_kmeans_plugin(crm_factory):
    crm = crm_factory(plugins=["kmeans"])
    info = {p.name: p for p in crm.plugin_info()}["kmeans"]
    assert info.distribution == "crmcore-kmeans"
    assert info.components["segmenters"] == ["kmeans"]
