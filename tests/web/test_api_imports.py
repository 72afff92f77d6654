"""``POST /imports/{kind}`` over a real uvicorn process: raw and multipart uploads, the
reject report (JSON and CSV), all-or-nothing and skip modes, the size limit and roles.
SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select

from crmcore.store import tables

from .conftest import Api

#: A small limit, so an oversized upload is cheap to send.
API_TOML = """
[api]
max_upload = "16K"
"""


def stored(api: Api, table: Any, column: Any, values: list[str]) -> dict[str, dict[str, Any]]:
    """Rows by ``column`` value, read straight from the database."""
    with api.crm.engine.connect() as conn:
        return {getattr(r, column.name): dict(r._mapping)
                for r in conn.execute(select(table).where(column.in_(values)))}


def customers_csv(prefix: str) -> tuple[bytes, list[str]]:
    """Three good rows and two bad ones (lines 3 and 5); returns the file and the good external ids."""
    rows = [("external_id", "name", "email", "country"),
            # Addresses of their own per call: tests share the server's database, and a stored
            # customer's address makes a new row a duplicate (skipped at the door).
            (f"{prefix}-1", "王芳", f"wang.fang.{prefix}@example.com", "CN"),
            (f"{prefix}-2", "Bad Email", "not-an-email", "US"),
            (f"{prefix}-3", "Ana Souza", f"ana.{prefix}@example.com", "BR"),
            (f"{prefix}-4", "Bad Country", f"bc.{prefix}@example.com", "Atlantis"),
            (f"{prefix}-5", "Otto Normal", "", "DE")]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode(), [f"{prefix}-1", f"{prefix}-3", f"{prefix}-5"]


def test_skip_mode_stores_good_rows_and_reports_each_bad_one(api: Api) -> None:
    prefix = uuid.uuid4().hex[:8]
    data, good = customers_csv(prefix)
    response = api.client("rita").post("/imports/customers", params={"on_error": "skip", "filename": "leads.csv"},
                                       content=data, headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["inserted"], report["rejected"], report["committed"]) == (5, 3, 2, True)
    assert [(e["file"], e["line"], e["field"]) for e in report["errors"]] == [
        ("leads.csv", 3, "email"), ("leads.csv", 5, "country")]
    assert all(e["reason"] and e["message"].startswith(f"leads.csv:{e['line']}:") for e in report["errors"])
    assert "crm-upload" not in response.text  # no server path leaks
    rows = stored(api, tables.customers, tables.customers.c.external_id, [f"{prefix}-{n}" for n in range(1, 6)])
    assert sorted(rows) == good
    assert rows[f"{prefix}-1"]["name"] == "王芳" and rows[f"{prefix}-3"]["country"] == "BR"


def test_abort_mode_writes_nothing_and_is_422_listing_the_rows(api: Api) -> None:
    prefix = uuid.uuid4().hex[:8]
    data, _ = customers_csv(prefix)
    response = api.client("ann").post("/imports/customers", content=data, headers={"Content-Type": "text/csv"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert [(e["line"], e["field"]) for e in problem["errors"]] == [(3, "email"), (5, "country")]
    assert problem["report"]["committed"] is False  # its counts say what the import would have done
    assert stored(api, tables.customers, tables.customers.c.external_id, [f"{prefix}-1"]) == {}


def test_dry_run_writes_nothing(api: Api) -> None:
    prefix = uuid.uuid4().hex[:8]
    data = f"external_id,name\n{prefix}-1,Dry\n".encode()
    response = api.client("ann").post("/imports/customers", params={"dry_run": "true"}, content=data,
                                      headers={"Content-Type": "text/csv"})
    assert response.status_code == 200 and response.json()["dry_run"] is True
    assert response.json()["inserted"] == 1 and response.json()["committed"] is False
    assert stored(api, tables.customers, tables.customers.c.external_id, [f"{prefix}-1"]) == {}


def test_multipart_jsonl_contacts_with_a_mapping(api: Api) -> None:
    owner = api.crm.customers.add(name="Acme", external_id=f"acme-{uuid.uuid4().hex[:8]}")
    lines = [{"who": "Li Lei", "customer": owner.external_id, "email": "li.lei@example.com"},
             {"who": "No Customer", "customer": "nobody-" + uuid.uuid4().hex, "email": "x@example.com"}]
    body = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines).encode()
    response = api.client("ann").post("/imports/contacts", params={"map": "who=name", "on_error": "skip"},
                                      files={"file": ("people.jsonl", body, "application/x-ndjson")})
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["file"], report["format"], report["inserted"], report["rejected"]) == ("people.jsonl", "jsonl", 1, 1)
    assert (report["errors"][0]["line"], report["errors"][0]["field"]) == (2, "customer")
    contacts = stored(api, tables.contacts, tables.contacts.c.email, ["li.lei@example.com", "x@example.com"])
    assert list(contacts) == ["li.lei@example.com"]
    assert contacts["li.lei@example.com"]["customer_id"] == owner.id


def test_reject_report_as_csv(api: Api) -> None:
    prefix = uuid.uuid4().hex[:8]
    data, _ = customers_csv(prefix)
    response = api.client("ann").post("/imports/customers", params={"on_error": "skip", "report": "csv"},
                                      content=data, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert (response.headers["import-inserted"], response.headers["import-rejected"]) == ("3", "2")
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:4] == ["error_line", "error_column", "error_reason", "external_id"]
    assert [(r[0], r[1], r[3]) for r in rows[1:]] == [("3", "email", f"{prefix}-2"), ("5", "country", f"{prefix}-4")]


def test_oversized_upload_is_413_and_stores_nothing(api: Api) -> None:
    prefix = uuid.uuid4().hex[:8]
    big = (f"external_id,name\n{prefix}-1,Big\n" + "".join(f"{prefix}-x{n},Row {n}\n" for n in range(2000))).encode()
    assert len(big) > 16 * 1024
    client = api.client("ann")
    declared = client.post("/imports/customers", content=big, headers={"Content-Type": "text/csv"})
    assert declared.status_code == 413 and declared.headers["content-type"] == "application/problem+json"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while streaming
        for start in range(0, len(big), 4096):
            yield big[start:start + 4096]

    streamed = client.post("/imports/customers", content=chunks(), headers={"Content-Type": "text/csv"})
    assert streamed.status_code == 413
    multipart = client.post("/imports/customers", files={"file": ("big.csv", big, "text/csv")})
    assert multipart.status_code == 413
    assert stored(api, tables.customers, tables.customers.c.external_id, [f"{prefix}-1"]) == {}


def test_read_only_user_is_403_and_bad_requests_are_clear(api: Api) -> None:
    prefix = uuid.uuid4().hex[:8]
    data = f"external_id,name\n{prefix}-1,Nope\n".encode()
    refused = api.client("otto").post("/imports/customers", content=data, headers={"Content-Type": "text/csv"})
    assert refused.status_code == 403
    assert stored(api, tables.customers, tables.customers.c.external_id, [f"{prefix}-1"]) == {}
    client = api.client("ann")
    assert client.post("/imports/customers", content=data,
                       headers={"Content-Type": "image/png"}).status_code == 415
    assert client.post("/imports/widgets", content=data, headers={"Content-Type": "text/csv"}).status_code == 422
    unknown = client.post("/imports/customers", content=b"external_id,shoe_size\nx,42\n",
                          headers={"Content-Type": "text/csv"})
    assert unknown.status_code == 422 and "shoe_size" in unknown.text
    empty = client.post("/imports/customers", content=b"", headers={"Content-Type": "text/csv"})
    assert empty.status_code == 422 and "empty" in empty.text
    assert api.client(None).post("/imports/customers", content=data,
                                 headers={"Content-Type": "text/csv"}).status_code == 401


def test_max_upload_setting_is_checked_at_load() -> None:
    from crmcore.config.api import parse_api
    from crmcore.domain.errors import ConfigError

    assert parse_api({}, "crm.toml").max_upload == 64 * 1024 * 1024
    assert parse_api({"max_upload": "16K"}, "crm.toml").max_upload == 16 * 1024
    assert parse_api({"max_upload": 1000}, "crm.toml").max_upload == 1000
    for bad in ("lots", 0, -1, True, "0M"):
        try:
            parse_api({"max_upload": bad}, "crm.toml")
        except ConfigError as exc:
            assert "[api] max_upload" in str(exc)
        else:
            raise AssertionError(f"{bad!r} accepted")
