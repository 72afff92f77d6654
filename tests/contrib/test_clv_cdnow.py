"""The literature check: BG/NBD and Gamma-Gamma on the CDNOW sample.

The transaction log (tests/data/cdnow, see its README) becomes two CSV files
the CRM imports (customers; one won deal per transaction, amounts as decimal
text, dates as UTC), ``crm import`` loads them into a fresh database, and the
``clv`` plugin fits both models with the calibration period ending
1997-09-30, time in weeks.  The estimates must be within 1% of those published
by Fader, Hardie & Lee (2005) for this sample:

- BG/NBD ("Counting Your Customers the Easy Way", Marketing Science 24(2)):
  r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 (log-likelihood -9582.4);
- Gamma-Gamma ("RFM and CLV", JMR 42(4), on the 946 customers with a repeat
  purchase in the calibration period, mean repeat-transaction value):
  p = 6.25, q = 3.74, gamma = 15.44.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from contribtools import explain, ok
from crmcore_clv import CLVOptions, CLVSegmenter
from crmcore_clv.segmenter import NO_PURCHASES

from crmcore import CRM, Config, SegmentContext

CDNOW = Path(__file__).resolve().parent.parent / "data" / "cdnow" / "CDNOW_sample.txt"
CALIBRATION_END = "1997-09-30"
BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def write_csvs(directory: Path) -> tuple[Path, Path, int]:
    """customers.csv and deals.csv from the whitespace-separated CDNOW log."""
    customers, deals = directory / "customers.csv", directory / "deals.csv"
    seen: set[str] = set()
    with CDNOW.open() as log, customers.open("w", newline="") as c, deals.open("w", newline="") as d:
        cw, dw = csv.writer(c), csv.writer(d)
        cw.writerow(["external_id", "name"])
        dw.writerow(["customer", "title", "amount", "currency", "stage", "closed_at"])
        for n, line in enumerate(log, 1):
            _master, sample_id, day, cds, dollars = line.split()
            if sample_id not in seen:
                seen.add(sample_id)
                cw.writerow([f"cdnow-{int(sample_id)}", f"CDNOW customer {int(sample_id)}"])
            when = datetime.strptime(day, "%Y%m%d").replace(tzinfo=timezone.utc)
            dw.writerow([f"cdnow-{int(sample_id)}", f"{cds} CDs", str(Decimal(dollars)), "USD", "won",
                         when.isoformat()])
    return customers, deals, n


@pytest.fixture
def cdnow_crm(crm_db_url, crm_cli, tmp_path):
    customers, deals, transactions = write_csvs(tmp_path)
    assert transactions == 6919
    ok(crm_cli("import", "customers", str(customers), plugins="clv"))
    ok(crm_cli("import", "deals", str(deals), plugins="clv"))
    crm = CRM.open(config=Config.from_mapping({"database_url": crm_db_url, "plugins": ["clv"]}))
    yield crm
    crm.close()


def test_cdnow_estimates_match_the_literature(cdnow_crm, crm_cli):
    crm = cdnow_crm
    segmenter = crm.segments.registry.get("clv")
    assert isinstance(segmenter, CLVSegmenter)
    with crm.unit(readonly=True) as uow:
        fitted = segmenter.fit(SegmentContext(uow, crm.as_of(CALIBRATION_END)), CLVOptions())
    history = fitted.history
    assert len(history) == 2357
    assert int((history.x > 0).sum()) == 946
    for name, published in BGNBD.items():
        assert getattr(fitted.bgnbd, name) == pytest.approx(published, rel=0.01), name
    assert fitted.bgnbd.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    for name, published in GAMMA_GAMMA.items():
        assert getattr(fitted.spend, name) == pytest.approx(published, rel=0.01), name

    # The same data through `crm segment run clv`: every customer scored.
    run = json.loads(ok(crm_cli("--as-of", CALIBRATION_END, "--json", "segment", "run", "clv", plugins="clv")))
    assert run["members"] == 2357 and NO_PURCHASES not in run["counts"]
    # The fitted models are stored with the run, for audit (and match the literature).
    [listed] = json.loads(ok(crm_cli("--json", "segment", "runs", "--strategy", "clv", plugins="clv")))
    model = listed["details"]
    assert (model["bgnbd"]["customers"], model["gamma_gamma"]["customers"]) == (2357, 946)
    for name, published in BGNBD.items():
        assert model["bgnbd"][name] == pytest.approx(published, rel=0.01), name
    assert model["bgnbd"]["log_likelihood"] == pytest.approx(-9582.4, abs=0.1)
    for name, published in GAMMA_GAMMA.items():
        assert model["gamma_gamma"][name] == pytest.approx(published, rel=0.01), name
    # Customer 1 bought on 1997-01-01, 01-18 and 08-02 in the calibration period
    # (and 12-12, after it): x = 2, t_x = 213 days, T = 272 days.
    customer = crm.customers.find(external_id="cdnow-1")
    why = explain(crm, "clv", customer.id, CALIBRATION_END)
    assert why["x"] == 2
    assert why["t_x"] == pytest.approx(213 / 7) and why["T"] == pytest.approx(272 / 7)
    assert 0 < why["p_alive"] < 1 and why["expected_purchases"] > 0 and Decimal(why["clv"]) > 0
