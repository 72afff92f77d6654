"""The ``clv`` segmenter: its SQL history against pandas, its segments against
the documented rules applied independently, options, errors, CLI, contract."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from contribtools import bulk_load, explain, ok, simulate_bgnbd
from crmcore_clv import CLVSegmenter, bgnbd, gamma_gamma
from crmcore_clv.segmenter import LIKELY_CHURNED, NO_PURCHASES, STANDARD, TOP_VALUE
from crmcore_clv.transactions import load_history
from crmcore_clv.value import discounted_purchases, weekly_rate

from crmcore import ConfigError, CRMError, SegmentContext
from crmcore.testing import SegmenterContract

UTC = timezone.utc
START = datetime(2025, 1, 6, tzinfo=UTC)
AS_OF = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
PIPELINES = {
    "default": {"stages": [{"name": "lead"}, {"name": "won", "outcome": "won"}, {"name": "lost", "outcome": "lost"}]},
    "b2b": {"stages": [{"name": "won"}, {"name": "signed", "outcome": "won"}]},  # b2b "won" is open
}
WON = {("default", "won"), ("b2b", "signed")}


def generate(seed: int, customers: int) -> list[dict]:
    """Deals simulated from BG/NBD + Gamma-Gamma (first purchases over 12 weeks),
    with traps: lost and open deals, deals after as_of, other currencies,
    several deals on one day, customers without deals."""
    rng = np.random.default_rng(seed)
    deals = []
    for index, history in enumerate(simulate_bgnbd(rng, customers, 0.6, 4.0, 0.7, 2.5, weeks=60)):
        if index % 10 == 9:
            continue  # never bought
        first = START + timedelta(days=int(rng.integers(0, 84)), hours=int(rng.integers(0, 24)))
        for week, value in history:
            when = first + timedelta(weeks=float(week))
            amount = max(Decimal("0.01"), Decimal(str(round(float(value), 2))))
            deals.append({"customer": index, "pipeline": "default", "stage": "won", "amount": amount,
                          "currency": "USD", "closed_at": when})
            trap = rng.random()
            if trap < 0.15:  # a second deal the same day: merged into one transaction
                deals.append(dict(deals[-1], amount=Decimal("5.00"), closed_at=when.replace(hour=0, minute=1)))
            elif trap < 0.25:
                deals.append(dict(deals[-1], stage=str(rng.choice(["lost", "lead"]))))
            elif trap < 0.3:
                deals.append(dict(deals[-1], pipeline="b2b", stage="won"))
            elif trap < 0.35:
                deals.append(dict(deals[-1], currency="EUR", amount=Decimal("999.00")))
    return deals


def expected_history(deals: list[dict], ids: list[int], as_of: datetime, currency: str | None = None) -> pd.DataFrame:
    """x, t_x, T (weeks) and the mean repeat value per buyer, by pandas, indexed by customer id."""
    frame = pd.DataFrame(deals)
    keep = np.array([(p, s) in WON for p, s in zip(frame.pipeline, frame.stage)]) & np.array(
        [t <= as_of for t in frame.closed_at])
    if currency:
        keep &= (frame.currency == currency).to_numpy()
    bought = frame[keep].copy()
    bought["customer_id"] = [ids[i] for i in bought.customer]
    bought["day"] = [t.date() for t in bought.closed_at]
    days = bought.groupby(["customer_id", "day"]).amount.sum().reset_index().sort_values(["customer_id", "day"])
    rows = {}
    for cid, group in days.groupby("customer_id"):
        first, last = group.day.iloc[0], group.day.iloc[-1]
        x = len(group) - 1
        rows[cid] = {"x": x, "t_x": (last - first).days / 7, "T": (as_of.date() - first).days / 7,
                     "m": float(sum(group.amount.iloc[1:])) / x if x else 0.0}
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


def expected_segments(h: pd.DataFrame, horizon=52, rate=0.10, period="year", top_share=0.2, churn_below=0.3):
    """P(alive), CLV and segments from the pandas history, by the documented rules."""
    params = bgnbd.fit(h.x, h.t_x, h["T"])
    spenders = h[h.x > 0]
    spend = gamma_gamma.fit(spenders.x, spenders.m)
    out = h.copy()
    out["p_alive"] = bgnbd.probability_alive(params, h.x, h.t_x, h["T"])
    out["clv"] = gamma_gamma.expected_spend(spend, h.x, h.m) * discounted_purchases(
        params, horizon, weekly_rate(rate, period), h.x.to_numpy(float), h.t_x.to_numpy(), h["T"].to_numpy())
    higher = out.clv.rank(ascending=False, method="min") - 1  # buyers with a strictly higher CLV
    out["segment"] = np.where(out.p_alive < churn_below, LIKELY_CHURNED,
                              np.where(higher < top_share * len(out), TOP_VALUE, STANDARD))
    return out


@pytest.fixture
def clv_crm(crm_factory):
    return crm_factory(plugins=["clv"], config={"pipelines": PIPELINES})


@pytest.fixture
def simulated(clv_crm):
    deals = generate(seed=7, customers=400)
    return deals, bulk_load(clv_crm, 400, deals)


def check(crm, run, expected: pd.DataFrame, ids: list[int]) -> None:
    members = {m["customer_id"]: m for m in crm.segments.members("clv", run_id=run.id)}
    assert sorted(members) == sorted(ids)
    for cid in set(ids) - set(expected.index):
        assert members[cid]["segment"] == NO_PURCHASES and members[cid]["score"] is None
    for cid, row in expected.iterrows():
        member, d = members[cid], members[cid]["details"]
        assert (d["x"], d["t_x"], d["T"]) == (row.x, pytest.approx(row.t_x), pytest.approx(row["T"])), cid
        assert d["p_alive"] == pytest.approx(row.p_alive, rel=1e-6)
        assert float(d["clv"]) == pytest.approx(row.clv, abs=0.005)
        assert member["score"] == pytest.approx(row.clv, rel=1e-5)  # MariaDB's FLOAT is single precision
        assert member["segment"] == row.segment, cid


def test_segments_match_an_independent_computation(clv_crm, simulated):
    deals, ids = simulated
    expected = expected_segments(expected_history(deals, ids, AS_OF))
    # The data must exercise the rules.
    assert {TOP_VALUE, STANDARD, LIKELY_CHURNED} == set(expected.segment)
    assert (expected.x == 0).sum() > 20
    run = clv_crm.segments.run("clv", as_of=AS_OF)
    check(clv_crm, run, expected, ids)
    assert run.counts[NO_PURCHASES] == len(ids) - len(expected)


def test_options_change_the_numbers(clv_crm, simulated):
    deals, ids = simulated
    options = {"horizon_weeks": 26, "discount_rate": 0.02, "discount_period": "month", "top_share": 0.1,
               "churn_below": 0.5, "currency": "usd"}
    expected = expected_segments(expected_history(deals, ids, AS_OF, "USD"), horizon=26, rate=0.02,
                                 period="month", top_share=0.1, churn_below=0.5)
    run = clv_crm.segments.run("clv", as_of=AS_OF, options=options)
    check(clv_crm, run, expected, ids)
    # An earlier as_of sees less history.
    earlier = AS_OF - timedelta(days=120)
    check(clv_crm, clv_crm.segments.run("clv", as_of=earlier),
          expected_segments(expected_history(deals, ids, earlier)), ids)


def test_history_merges_days_and_ignores_what_does_not_count(clv_crm):
    """Same-day deals are one transaction; days are UTC days; lost, open and
    later deals do not count."""
    crm = clv_crm
    a, b, c = (crm.customers.add(name=n).id for n in "abc")
    day = datetime(2025, 3, 1, tzinfo=UTC)
    for cid, when, stage, amount in [
        (a, day.replace(hour=0, minute=1), "won", "10.00"), (a, day.replace(hour=23, minute=59), "won", "5.50"),
        (a, day + timedelta(days=1, minutes=1), "won", "7.25"),  # the next UTC day: a repeat purchase
        (a, day + timedelta(days=7), "won", "2.75"), (a, day + timedelta(days=7, hours=3), "won", "1.00"),
        (a, day + timedelta(days=9), "lost", "99.00"),
        (b, day + timedelta(days=14), "won", "3.00"), (b, AS_OF + timedelta(seconds=1), "won", "50.00"),
        (c, day, "lead", "8.00"),
    ]:
        crm.deals.add(customer_id=cid, title="x", amount=Decimal(amount), stage=stage, closed_at=when)
    with crm.unit(readonly=True) as uow:
        h = load_history(uow.conn, crm.config, AS_OF)
    assert h.customer_id.tolist() == [a, b] and h.without_purchases == [c]
    assert h.x.tolist() == [2, 0]
    assert h.t_x_days.tolist() == [7, 0]
    assert h.T_days.tolist() == [(AS_OF.date() - day.date()).days, (AS_OF.date() - day.date()).days - 14]
    assert h.repeat_total == [(725 + 275 + 100) * 100, 0]  # scaled Money: 11.00 over the repeat days


def test_explain(clv_crm, simulated):
    deals, ids = simulated
    expected = expected_segments(expected_history(deals, ids, AS_OF))
    clv_crm.segments.run("clv", as_of=AS_OF)
    for segment in (TOP_VALUE, LIKELY_CHURNED):
        cid = expected.index[expected.segment == segment][0]
        why = explain(clv_crm, "clv", cid, AS_OF)
        row = expected.loc[cid]
        assert why["segment"] == segment
        assert (why["x"], why["t_x"], why["T"]) == (row.x, pytest.approx(row.t_x), pytest.approx(row["T"]))
        assert why["p_alive"] == pytest.approx(row.p_alive, rel=1e-6)
        assert why["expected_purchases"] > 0 and float(why["clv"]) == pytest.approx(row.clv, abs=0.005)
        assert ("P(alive)" if segment == LIKELY_CHURNED else "top 20%") in why["why"]
    idle = next(c for c in ids if c not in expected.index)
    assert explain(clv_crm, "clv", idle, AS_OF)["segment"] == NO_PURCHASES
    segmenter = CLVSegmenter()
    with clv_crm.unit(readonly=True) as uow:
        why = segmenter.explain(SegmentContext(uow, AS_OF), segmenter.options_type(),
                                {"segment": None, "details": None})
    assert why["segment"] is None and "not a member" in why["why"]


def _json_object(output: str) -> dict:
    """One record from ``--json`` output (an object, or the one-element array some commands print)."""
    document = json.loads(output)
    if isinstance(document, list):
        [document] = document
    return document


def test_run_records_the_fitted_models(clv_crm, simulated, crm_cli):
    """A past run's models can be audited: BG/NBD and Gamma-Gamma parameters, the maximised
    log-likelihoods and the customers each was fitted on are stored with the run, and shown by
    ``segment runs --json`` and ``segment explain`` (of that run, not of the latest)."""
    deals, ids = simulated
    h = expected_history(deals, ids, AS_OF)
    params = bgnbd.fit(h.x, h.t_x, h["T"])
    spenders = h[(h.x > 0) & (h.m > 0)]
    spend = gamma_gamma.fit(spenders.x, spenders.m)
    first = clv_crm.segments.run("clv", as_of=AS_OF)
    later = clv_crm.segments.run("clv", as_of=START + timedelta(weeks=10))  # fewer buyers, another fit

    listed = json.loads(ok(crm_cli("--json", "segment", "runs", "--strategy", "clv", plugins="clv")))
    recorded = {run["id"]: run["details"] for run in listed}
    model = recorded[first.id]
    assert model == first.details == clv_crm.segments.run_info(first.id).details
    assert model["time_unit"] == "weeks"
    assert model["bgnbd"]["customers"] == len(h)
    for name in ("r", "alpha", "a", "b", "log_likelihood"):
        assert model["bgnbd"][name] == pytest.approx(getattr(params, name), rel=1e-5), name
    assert model["gamma_gamma"]["customers"] == len(spenders)
    for name in ("p", "q", "gamma", "log_likelihood"):
        assert model["gamma_gamma"][name] == pytest.approx(getattr(spend, name), rel=1e-5), name
    assert recorded[later.id]["bgnbd"]["customers"] < len(h)
    assert recorded[later.id]["bgnbd"]["r"] != model["bgnbd"]["r"]

    customer = str(ids[0])
    found = _json_object(ok(crm_cli("--json", "segment", "explain", "clv", customer, "--run", str(first.id),
                                    plugins="clv")))
    assert found["run_id"] == first.id and found["run_details"] == model
    text = ok(crm_cli("segment", "explain", "clv", customer, "--run", str(first.id), plugins="clv"))
    assert f"r={model['bgnbd']['r']:.4g}" in text and f"gamma={model['gamma_gamma']['gamma']:.4g}" in text
    assert f"{len(h)} customers" in text


@pytest.mark.parametrize("options, message", [
    ({"churn_below": 1.5}, r"\[segments.clv\] churn_below: must be between 0 and 1"),
    ({"top_share": 0}, r"\[segments.clv\] top_share: must be between 0 and 1"),
    ({"horizon_weeks": 0}, r"\[segments.clv\] horizon_weeks: must be positive"),
    ({"discount_rate": -0.1}, r"\[segments.clv\] discount_rate: must be 0 or more"),
    ({"discount_period": "week"}, r"\[segments.clv\] discount_period"),
    ({"horizon": 12}, r"\[segments.clv\] horizon: unknown field"),
    ({"currency": "dollars"}, r"\[segments.clv\] .*DOLLARS.* ISO 4217"),  # the core names no field here
])
def test_bad_options(clv_crm, options, message):
    with pytest.raises(ConfigError, match=message):
        clv_crm.segments.run("clv", as_of=AS_OF, options=options)


def test_too_few_customers(clv_crm):
    with clv_crm.unit():
        for i in range(3):
            cid = clv_crm.customers.add(name=f"C{i}").id
            clv_crm.deals.add(customer_id=cid, title="x", amount=Decimal("10"), stage="won",
                              closed_at=AS_OF - timedelta(days=i))
    with pytest.raises(CRMError, match="at least 5 customers with a purchase .* found 3"):
        clv_crm.segments.run("clv", as_of=AS_OF)
    assert clv_crm.segments.runs("clv") == []


def test_nobody_bought(clv_crm):
    clv_crm.customers.add(name="Window shopper")
    assert clv_crm.segments.run("clv", as_of=AS_OF).counts == {NO_PURCHASES: 1}


def test_through_the_cli(crm_cli, crm_factory):
    crm = crm_factory(plugins=["clv"])  # the default pipeline: "won" is won
    deals = [d for d in generate(seed=3, customers=150) if d["pipeline"] == "default"]
    ids = bulk_load(crm, 150, deals)
    expected = expected_segments(expected_history(deals, ids, AS_OF), horizon=26)
    out = ok(crm_cli("--as-of", AS_OF.isoformat(), "segment", "run", "clv", "-o", "horizon_weeks=26",
                     plugins="clv"))
    assert f"{len(ids)} customers" in out and TOP_VALUE in out
    check(crm, crm.segments.latest_run("clv"), expected, ids)
    bad = crm_cli("segment", "run", "clv", "-o", "churn_below=2", plugins="clv")
    assert bad.exit_code != 0 and "churn_below" in bad.output and "Traceback" not in bad.output


class TestCLVContract(SegmenterContract):
    @pytest.fixture
    def component(self):
        return CLVSegmenter()

    @pytest.fixture
    def seeded_crm(self, crm_factory):
        crm = crm_factory(plugins=["clv"], config={"pipelines": PIPELINES})
        bulk_load(crm, 60, generate(seed=5, customers=60))
        return crm


def test_registered_by_the_clv_plugin(crm_factory):
    info = {p.name: p for p in crm_factory(plugins=["clv"]).plugin_info()}["clv"]
    assert info.distribution == "crmcore-clv"
    assert info.components["segmenters"] == ["clv"]
