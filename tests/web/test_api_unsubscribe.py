"""The public ``/unsubscribe`` page over a real uvicorn process: GET changes nothing, POST
(form or RFC 8058 one-click) records one withdrawal as the system actor, in the audit
trail; bad tokens are clear 400 pages.  SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from crmcore.notify.consent import make_token
from crmcore.store import tables

from .conftest import Api

SECRET = "unsubscribe-api-test-secret"
API_TOML = f"""
[notify]
unsubscribe_secret = "{SECRET}"
unsubscribe_url = "https://crm.example.com/unsubscribe?token={{token}}"
"""

#: A customer added with consent_marketing (by the test process, as the system): a recorded grant.
GRANTED = ("*", "marketing", True, "api", "system")


def history(api: Api, customer_id: int) -> list[tuple[Any, ...]]:
    """The customer's consent history, read straight from the database."""
    t = tables.consent_history
    with api.crm.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.c.channel, t.c.purpose, t.c.granted, t.c.source, t.c.actor)
            .where(t.c.customer_id == customer_id).order_by(t.c.id))]


def audit_of(api: Api, customer_id: int) -> list[tuple[Any, ...]]:
    t = tables.audit_log
    with api.crm.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(t.c.action, t.c.actor).where(t.c.customer_id == customer_id, t.c.action == "consent.record")
            .order_by(t.c.seq))]


def test_get_shows_a_confirmation_and_changes_nothing(api: Api) -> None:
    fan = api.crm.customers.add(name="<b>Fan</b>", email="fan@example.com", consent_marketing=True)
    before = history(api, fan.id)
    token = make_token(SECRET, fan.id, "smtp")
    client = api.client(None)  # no API token: the link's token is the credential
    for _ in range(2):
        page = client.get("/unsubscribe", params={"token": token})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<form method="post">' in page.text and "marketing messages via smtp" in page.text
        assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert history(api, fan.id) == before == [GRANTED]


def test_form_post_records_one_withdrawal_as_the_system(api: Api) -> None:
    fan = api.crm.customers.add(name="Form", email="form@example.com", consent_marketing=True)
    token = make_token(SECRET, fan.id)
    client = api.client(None)
    first = client.post("/unsubscribe", params={"token": token}, data={"token": token})
    assert first.status_code == 200 and "You are unsubscribed." in first.text
    again = client.post("/unsubscribe", data={"token": token})  # the token in the form only, a second click
    assert again.status_code == 200 and "You are unsubscribed." in again.text
    assert history(api, fan.id)[1:] == [("*", "marketing", False, "link", "system")]
    assert audit_of(api, fan.id)[-1] == ("consent.record", "system")
    assert api.crm.customers.get(fan.id).consent_marketing is False
    [standing] = api.crm.messages.consents(fan.id)
    assert (standing.granted, standing.source) == (False, "link")


def test_one_click_post_per_rfc_8058(api: Api) -> None:
    fan = api.crm.customers.add(name="Click", email="click@example.com", consent_marketing=True)
    url = api.crm.messages.unsubscribe_url(fan.id, "smtp")  # the link the messages carry
    assert url.startswith("https://crm.example.com/unsubscribe?token=")
    path = url.removeprefix("https://crm.example.com")
    client = api.client(None)
    for body, content_type in ((b"List-Unsubscribe=One-Click", "application/x-www-form-urlencoded"),
                               (None, None)):
        if body is None:  # a provider's retry as multipart/form-data (RFC 8058 allows both)
            response = client.post(path, files={"List-Unsubscribe": (None, "One-Click")})
        else:
            response = client.post(path, content=body, headers={"Content-Type": content_type})
        assert response.status_code == 200, response.text
    assert history(api, fan.id)[1:] == [("smtp", "marketing", False, "one-click", "system")]
    # Re-subscribing everything overrides it; a later click must then be recorded again.
    api.crm.messages.set_consent(fan.id, True, source="phone")
    assert client.post(path, content=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
    assert history(api, fan.id)[-1] == ("smtp", "marketing", False, "one-click", "system")


def test_bad_tokens_are_clear_400_pages(api: Api) -> None:
    fan = api.crm.customers.add(name="Damaged", email="damaged@example.com", consent_marketing=True)
    good = make_token(SECRET, fan.id)
    client = api.client(None)
    for token in (good[:-3] + "xyz", make_token("another-secret", fan.id), "<script>alert(1)</script>", "",
                  "x" * 5000):
        for method in ("GET", "POST"):
            response = client.request(method, "/unsubscribe", params={"token": token})
            assert response.status_code == 400, (method, token, response.text)
            assert "Cannot unsubscribe" in response.text and "<script>" not in response.text
    assert client.get("/unsubscribe").status_code == 400
    assert history(api, fan.id) == [GRANTED]
    # A valid signature for a customer that does not exist: a page, not a server error.
    response = client.post("/unsubscribe", params={"token": make_token(SECRET, 2**31 - 1)})
    assert response.status_code == 400 and "no longer valid" in response.text
    big = client.post("/unsubscribe", params={"token": good}, content=b"x" * (65 * 1024))
    assert big.status_code == 413
    assert history(api, fan.id) == [GRANTED]
