"""Subject access: everything the CRM holds about one person, as JSON and a readable HTML page.

:func:`collect` reads, in the caller's unit of work, every core table that refers to the
customer (the customer row, contacts, interactions, deals and their stage history, the points
ledger and balances, outbox messages, consent state and history, segment memberships, audit
records about them) and asks every plugin for its rows through the ``export_personal_data``
hook.  :func:`render_html` turns the result into a self-contained summary page (Jinja2,
autoescaped: the values are the person's own text and may hold markup).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select

from ..domain.convert import unstructure
from ..domain.entities import Customer
from ..store.tables import (
    audit_log,
    consent_history,
    contacts,
    customer_consents,
    deal_stage_history,
    deals,
    interactions,
    loyalty_accounts,
    loyalty_ledger,
    notify_outbox,
    privacy_erasures,
    segment_memberships,
    segment_runs,
    tasks,
)
from ..store.sealed import open_changes
from .audit import jsonable

if TYPE_CHECKING:
    import jinja2

    from .uow import UnitOfWork

#: Section name -> the table whose rows with the customer's id form it (in this order).
CUSTOMER_TABLES: dict[str, Table] = {
    "contacts": contacts,
    "interactions": interactions,
    "deals": deals,
    "tasks": tasks,
    "loyalty_ledger": loyalty_ledger,
    "loyalty_accounts": loyalty_accounts,
    "messages": notify_outbox,
    "consents": customer_consents,
    "consent_history": consent_history,
    "audit": audit_log,
}


def collect(uow: "UnitOfWork", customer: Customer) -> dict[str, Any]:
    """Everything held about ``customer``: ``{"customer": {...}, "sections": {name: [rows]},
    "plugins": {name: [rows]}}``, JSON-ready."""
    assert customer.id is not None, "a stored customer has an id"
    conn, cid = uow.conn, customer.id
    sections: dict[str, list[dict[str, Any]]] = {}
    for name, table in CUSTOMER_TABLES.items():
        order = table.c.seq if table is audit_log else list(table.primary_key.columns)[0]
        query = select(table).where(table.c.customer_id == cid).order_by(order)
        sections[name] = [jsonable(dict(row)) for row in conn.execute(query).mappings()]
    for record in sections["audit"]:  # sealed values opened: the person gets to read them
        record["changes"] = open_changes(conn.dialect, record["changes"])
    deal_ids = [row["id"] for row in sections["deals"]]
    sections["deal_stage_history"] = [
        jsonable(dict(row)) for row in conn.execute(
            select(deal_stage_history).where(deal_stage_history.c.deal_id.in_(deal_ids))
            .order_by(deal_stage_history.c.id)).mappings()] if deal_ids else []
    sections["segments"] = [
        jsonable(dict(row)) for row in conn.execute(
            select(segment_runs.c.strategy, segment_runs.c.as_of, segment_memberships.c.run_id,
                   segment_memberships.c.segment, segment_memberships.c.score, segment_memberships.c.details)
            .join(segment_runs, segment_runs.c.id == segment_memberships.c.run_id)
            .where(segment_memberships.c.customer_id == cid).order_by(segment_memberships.c.run_id)).mappings()]
    erased = conn.execute(select(privacy_erasures).where(privacy_erasures.c.customer_id == cid)).mappings().first()
    plugins: dict[str, list[Any]] = {}
    if uow.crm.plugins.has_impls("export_personal_data"):
        for answer in uow.crm.plugins.call("export_personal_data", uow=uow, customer=customer):
            for section, rows in _sections(answer):
                plugins.setdefault(section, []).extend(jsonable(list(rows)))
    return {
        "customer": jsonable(unstructure(customer)),
        "erasure": None if erased is None else jsonable(dict(erased)),
        "sections": sections,
        "plugins": plugins,
    }


def _sections(answer: Any) -> list[tuple[str, Any]]:
    if answer is None:
        return []
    if not isinstance(answer, Mapping):
        raise TypeError(f"export_personal_data must return a mapping of section -> rows, got {answer!r}")
    return [(str(name), rows) for name, rows in answer.items()]


_PAGE_SOURCE = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Personal data held about customer {{ data.customer.id }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 90%; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.empty { color: #777; font-style: italic; }
</style></head>
<body>
<h1>Personal data held about customer {{ data.customer.id }}</h1>
<p>Exported {{ exported_at }}. The JSON file next to this page holds the same data for programs.</p>
{% if data.erasure %}
<p><strong>This person's data was erased on {{ data.erasure.erased_at }}.</strong></p>
{% endif %}
<h2>Customer record</h2>
<table>{% for key, value in data.customer.items() %}
<tr><th>{{ key }}</th><td>{{ show(value) }}</td></tr>{% endfor %}
</table>
{% for title, rows in parts %}
<h2>{{ title }} ({{ rows|length }})</h2>
{% if rows %}{% set columns = columns_of(rows) %}
<table><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in columns %}<td>{{ show(row.get(c)) }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% else %}<p class="empty">none</p>{% endif %}
{% endfor %}
</body></html>
"""


@functools.cache
def _page() -> jinja2.Template:
    """The page's template, compiled on first use: importing Jinja2 and compiling it at import
    cost every command's start-up about 25 ms."""
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(_PAGE_SOURCE)


def render_html(data: Mapping[str, Any], exported_at: str) -> str:
    """A self-contained HTML summary of :func:`collect`'s result."""
    parts = [(name.replace("_", " ").capitalize(), rows) for name, rows in data["sections"].items()]
    parts += [(f"Plugin data: {name}", [row if isinstance(row, Mapping) else {"value": row} for row in rows])
              for name, rows in data["plugins"].items()]
    return _page().render(data=data, parts=parts, exported_at=exported_at, show=_show, columns_of=_columns)


def _columns(rows: list[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(str(key) for row in rows for key in row))


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)
