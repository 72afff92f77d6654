"""Reports over a real uvicorn process, on SQLite, PostgreSQL and MariaDB: every format parsed
back and checked against hand-summed values; a plugin's report and format appear with no HTTP code."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from pathlib import Path

import openpyxl

from .conftest import Api

API_TOML = f'plugins_dir = "{(Path(__file__).parent / "family_plugins").as_posix()}"\n'

# (owner, stage, amount): rita's and max's deals in this module's own currency.
DEALS = [("rita", "lead", "100.10"), ("rita", "lead", "250.00"), ("rita", "proposal", "999.99"),
         ("max", "lead", "70.00"), ("max", "won", "1000.00")]


def _seed(api: Api) -> str:
    """Deals in a currency no other test uses; returns it."""
    currency = "CHF"
    client = api.client("ann")
    if client.get("/reports/probe-totals?currency=CHF").json()["rows"]:
        return currency
    for owner, stage, amount in DEALS:
        customer = client.post("/customers", json={"name": f"R {uuid.uuid4().hex[:6]}", "owner": owner}).json()
        made = client.post("/deals", json={"customer_id": customer["id"], "title": "d", "amount": amount,
                                           "currency": currency, "stage": "lead", "owner": owner})
        assert made.status_code == 201, made.text
        if stage != "lead":
            assert client.post(f"/deals/{made.json()['id']}/move", json={"stage": stage}).status_code == 200
    return currency


def _hand(owner: str | None = None, stage: str | None = None) -> tuple[int, Decimal]:
    picked = [Decimal(a) for o, s, a in DEALS if owner in (None, o) and stage in (None, s)]
    return len(picked), sum(picked, Decimal(0))


def test_catalog_lists_the_plugin_report_and_format(api: Api) -> None:
    catalog = api.client("otto").get("/reports").json()
    reports = {r["name"]: r for r in catalog["reports"]}
    assert {"pipeline", "probe-totals"} <= set(reports)
    options = reports["probe-totals"]["options"]["properties"]
    assert options["currency"]["default"] == "EUR" and options["with_count"]["default"] is True
    assert "format" not in options
    formats = {f["name"]: f for f in catalog["formats"]}
    assert formats["probe-tsv"]["extension"] == "tsv" and formats["xlsx"]["media_type"].startswith("application/vnd")
    document = api.client("otto").get("/openapi.json").json()
    names = [p["name"] for p in document["paths"]["/reports/probe-totals"]["get"]["parameters"]]
    assert names == ["format", "as_of", "currency", "min_amount", "with_count"]
    assert api.client(None).get("/reports").status_code == 401


def test_plugin_report_numbers_in_json_csv_and_plugin_format(api: Api) -> None:
    currency = _seed(api)
    client = api.client("ann")
    data = client.get(f"/reports/probe-totals?currency={currency}&min_amount=100").json()
    rows = {r["owner"]: r for r in data["rows"]}
    for owner in ("rita", "max"):
        picked = [Decimal(a) for o, _, a in DEALS if o == owner and Decimal(a) >= 100]
        assert Decimal(rows[owner]["amount"]) == sum(picked) and rows[owner]["deals"] == len(picked)
    tsv = client.get(f"/reports/probe-totals?currency={currency}&format=probe-tsv&with_count=false")
    assert tsv.status_code == 200 and tsv.headers["content-disposition"].startswith("attachment; filename=")
    lines = [line.split("\t") for line in tsv.text.splitlines()]
    assert lines[0] == ["owner", "amount"]
    assert {o: Decimal(a) for o, a in lines[1:]} == {o: _hand(o)[1] for o in ("max", "rita")}


def test_pipeline_in_every_format(api: Api) -> None:
    currency = _seed(api)
    client = api.client("ann")
    query = f"/reports/pipeline?owner=rita&currency={currency}&as_of=2099-01-01"
    data = client.get(query + "&format=json")
    assert data.status_code == 200 and data.headers["content-type"] == "application/json"
    by_stage = {r["stage"]: r for r in data.json()["rows"]}
    for stage in ("lead", "proposal"):
        count, amount = _hand("rita", stage)
        assert (by_stage[stage]["count"], Decimal(by_stage[stage]["amount"])) == (count, amount)
    as_csv = client.get(query, headers={"Accept": "text/csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert 'filename="pipeline-2099-01-01.csv"' in as_csv.headers["content-disposition"]
    parsed = {r["stage"]: r for r in csv.DictReader(io.StringIO(as_csv.text))}
    assert {s: (int(r["count"]), Decimal(r["amount"])) for s, r in parsed.items()} == \
        {s: (r["count"], Decimal(r["amount"])) for s, r in by_stage.items()}
    xlsx = client.get(query + "&format=xlsx")
    assert xlsx.headers["content-type"] == "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    sheet = openpyxl.load_workbook(io.BytesIO(xlsx.content)).worksheets[0]
    cells = [[c.value for c in row] for row in sheet.iter_rows()]
    header = next(i for i, row in enumerate(cells) if "stage" in row or "Stage" in row)
    columns = [str(v).lower() for v in cells[header]]
    lead = next(row for row in cells[header + 1:] if row[0] == "lead")
    assert Decimal(str(lead[columns.index("amount")])) == _hand("rita", "lead")[1]
    html = client.get(query, headers={"Accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and "999.99" in html.text


def test_visibility_and_bad_parameters(api: Api) -> None:
    currency = _seed(api)
    mine = api.client("rita").get(f"/reports/probe-totals?currency={currency}").json()
    assert [(r["owner"], Decimal(r["amount"])) for r in mine["rows"]] == [("rita", _hand("rita")[1])]
    client = api.client("ann")
    for query, field in (("regoin=EU", "regoin"), ("include_closed=maybe", "include_closed"),
                         ("start=2024-13-01", "start"), ("as_of=soon", "as_of")):
        response = client.get(f"/reports/pipeline?{query}")
        assert response.status_code == 422, query
        assert [e["field"] for e in response.json()["errors"]] == [field]
    assert client.get("/reports/activity?by=colour").json()["errors"][0]["field"] == "by"
    assert client.get("/reports/retention-cohorts?months=0").json()["errors"][0]["field"] == "months"
    assert client.get("/reports/pipeline?format=pdf").status_code == 422
    assert client.get("/reports/pipeline", headers={"Accept": "image/png"}).status_code == 406
    assert client.get("/reports/no-such").status_code == 404
