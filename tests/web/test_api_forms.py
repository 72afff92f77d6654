"""Public lead-capture forms (POST /forms/{name}) over a real uvicorn process, on SQLite,
PostgreSQL and MariaDB; the [api] table's validation; the rate limit in memory and in Redis."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import limits
import pytest
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import select

from crmcore import CRM
from crmcore.config import Config
from crmcore.domain.entities import Interaction
from crmcore.domain.errors import ConfigError
from crmcore.store import tables

from .conftest import Api, start_server, stop_server, write_config

API_TOML = """
[[custom_fields]]
entity = "customer"
name = "company"

[api.forms.contact]
fields = { e_mail = "email", full_name = "name", company = "attributes.company", message = "interaction.body", topic = "interaction.subject" }
required = ["e_mail"]
consent = { marketing = "newsletter" }
interaction = { kind = "message", subject = "Contact: {topic}" }
owner = "rita"
rate_limit = "1000/minute"
honeypot = "website"

[api.forms.limited]
fields = { email = "email" }
rate_limit = "3/minute"

[api.forms.browser]
fields = { email = "email" }
redirect = "https://example.com/thanks"
interaction = { kind = "feedback" }
"""


def unique_email(domain: str = "example.com") -> str:
    return f"lead.{uuid.uuid4().hex[:10]}@{domain}"


def interactions_of(crm: CRM, customer_id: int) -> list[Interaction]:
    """The customer's inbound interactions (the test plugin acme adds a welcome note to new customers)."""
    return [i for i in crm.interactions.list({"customer_id": customer_id}) if i.direction.value == "inbound"]


def test_a_post_creates_a_lead_an_interaction_and_a_consent_decision(api: Api) -> None:
    email = unique_email()
    response = api.client(None).post("/forms/contact", data={
        "e_mail": email, "full_name": "Li Na", "company": "Acme", "topic": "pricing",
        "message": "Please call me back", "newsletter": "on", "submit": "Send"})
    assert response.status_code == 201, response.text
    assert response.json() == {"status": "received", "form": "contact"}  # nothing about who is known
    customer = api.crm.customers.find(email=email)
    assert customer is not None
    assert (customer.name, customer.stage.value, customer.source, customer.owner) == ("Li Na", "lead", "form:contact",
                                                                                      "rita")
    assert customer.attributes == {"company": "Acme"}
    assert customer.consent_marketing is True
    [interaction] = interactions_of(api.crm, customer.id)
    assert (interaction.kind.value, interaction.direction.value) == ("message", "inbound")
    assert (interaction.subject, interaction.body) == ("Contact: pricing", "Please call me back")
    [decision] = api.crm.messages.consents(customer.id)
    assert (decision.channel, decision.purpose, decision.granted, decision.source, decision.actor) == \
        ("*", "marketing", True, "form:contact", "system")


def test_the_same_email_again_is_the_same_customer(api: Api) -> None:
    local = f"repeat.{uuid.uuid4().hex[:8]}"
    client = api.client(None)
    first = client.post("/forms/contact", data={"e_mail": f"{local}@example.com", "full_name": "First Name"})
    assert first.status_code == 201, first.text
    before = api.crm.customers.count()
    # JSON this time, the domain in capitals (normalised), another name (never overwrites), a new field.
    again = client.post("/forms/contact", json={"e_mail": f"{local}@EXAMPLE.COM", "full_name": "Other",
                                                "company": "Beta", "message": "second"})
    assert again.status_code == 201, again.text
    assert api.crm.customers.count() == before
    customer = api.crm.customers.find(email=f"{local}@example.com")
    assert customer is not None
    assert customer.name == "First Name" and customer.attributes == {"company": "Beta"}  # a blank filled in
    assert [i.body for i in interactions_of(api.crm, customer.id)] == [None, "second"]
    assert customer.consent_marketing is False  # no box ticked: no decision
    assert api.crm.messages.consents(customer.id) == []


def test_simultaneous_first_posts_of_one_address_are_one_lead(api: Api) -> None:
    """A double click, or two tabs: posts of one new address at the same moment make one lead with
    every message on it (issue 18; the door's locks, ``crm.duplicates.hold``)."""
    email, posts = unique_email(), 6
    barrier = threading.Barrier(posts)

    def post(i: int) -> int:
        with api.client(None) as client:
            barrier.wait()
            return client.post("/forms/contact", data={"e_mail": email.upper() if i % 2 else email,
                                                       "full_name": f"Visitor {i}", "message": f"post {i}"}).status_code

    with ThreadPoolExecutor(posts) as pool:
        assert list(pool.map(post, range(posts))) == [201] * posts
    with api.crm.engine.connect() as conn:
        ids = conn.execute(select(tables.customers.c.id).where(tables.customers.c.email_key == email)).scalars().all()
    assert len(ids) == 1, ids
    assert sorted(i.body for i in interactions_of(api.crm, ids[0])) == [f"post {i}" for i in range(posts)]
    assert api.crm.customers.get(ids[0]).name.startswith("Visitor ")


def test_invalid_fields_are_422_naming_the_form_fields_and_nothing_is_written(api: Api) -> None:
    client = api.client(None)
    before = (api.crm.customers.count(), api.crm.interactions.count())
    missing = client.post("/forms/contact", data={"full_name": "No Mail", "newsletter": "maybe"})
    assert missing.status_code == 422
    assert missing.headers["content-type"] == "application/problem+json"
    assert {e["field"] for e in missing.json()["errors"]} == {"e_mail", "newsletter"}
    bad = client.post("/forms/contact", data={"e_mail": "no-at-sign", "full_name": "Bad"})
    assert bad.status_code == 422
    assert [e["field"] for e in bad.json()["errors"]] == ["e_mail"]
    nested = client.post("/forms/contact", json={"e_mail": ["a@example.com"]})
    assert nested.status_code == 422 and nested.json()["errors"][0]["field"] == "e_mail"
    assert (api.crm.customers.count(), api.crm.interactions.count()) == before
    assert "Traceback" not in missing.text + bad.text + nested.text


def test_unknown_form_is_404_and_a_bot_filling_the_honeypot_stores_nothing(api: Api) -> None:
    client = api.client(None)
    unknown = client.post("/forms/nope", data={"email": unique_email()})
    assert unknown.status_code == 404 and unknown.json()["status"] == 404
    email = unique_email()
    bot = client.post("/forms/contact", data={"e_mail": email, "website": "http://spam.example"})
    assert bot.status_code == 201  # the bot cannot tell
    assert api.crm.customers.find(email=email) is None


def test_browser_post_redirects_json_post_gets_201(api: Api) -> None:
    client = api.client(None)
    email = unique_email()
    browser = client.post("/forms/browser", files={"email": (None, email)})  # multipart/form-data
    assert browser.status_code == 303 and browser.headers["location"] == "https://example.com/thanks"
    customer = api.crm.customers.find(email=email)
    assert customer is not None and customer.name == email  # a lead without a name is named by its email
    [interaction] = interactions_of(api.crm, customer.id)
    assert (interaction.kind.value, interaction.subject) == ("feedback", "form:browser")
    assert client.post("/forms/browser", json={"email": unique_email()}).status_code == 201


def test_rate_limit_answers_429_with_retry_after(api: Api) -> None:
    client = api.client(None)
    answers = [client.post("/forms/limited", data={"email": unique_email()}) for _ in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Another form has its own budget.
    assert client.post("/forms/browser", json={"email": unique_email()}).status_code == 201


def test_bad_api_config_names_the_key() -> None:
    def load(toml: str) -> Config:
        return Config.from_mapping(__import__("tomllib").loads(toml), {"api": "crm.toml"})

    with pytest.raises(ConfigError, match=r"crm.toml: \[api.forms.contact\] unknown key\(s\): feilds "
                                          r"\(did you mean 'fields'\?\)"):
        load('[api.forms.contact]\nfeilds = { email = "email" }')
    with pytest.raises(ConfigError, match=r"\[api.forms.contact\] fields.e: unknown target: emial "
                                          r"\(did you mean 'email'\?\)"):
        load('[api.forms.contact]\nfields = { e = "emial" }')
    with pytest.raises(ConfigError, match=r"\[api.forms.contact\] rate_limit must be like"):
        load('[api.forms.contact]\nfields = { e = "email" }\nrate_limit = "lots"')
    with pytest.raises(ConfigError, match=r"\[api.forms.contact\] required: unknown field"):
        load('[api.forms.contact]\nfields = { e = "email" }\nrequired = ["x"]')
    with pytest.raises(ConfigError, match=r"\[api.webhooks.shop\] secret: never put the secret in the file"):
        load('[api.webhooks.shop]\nfields = { e = "email" }\nsecret = "s3cret"')
    with pytest.raises(ConfigError, match=r"\[api\] unknown key\(s\): rate_limit_store \(did you mean "
                                          r"'rate_limit_storage'\?\)"):
        load('[api]\nrate_limit_store = "memory://"')
    with pytest.raises(ConfigError, match=r"subject: placeholder unknown field: topik \(did you mean 'topic'\?\)"):
        load('[api.forms.c]\nfields = { e = "email", topic = "interaction.subject" }\n'
             'interaction = { subject = "{topik}" }')
    settings = load('[api.forms.c]\nfields = { e = "email" }\nconsent = { "marketing:sms" = "texts" }').api
    assert settings.forms["c"].consent == (("marketing", "sms", "texts"),)
    assert settings.forms["c"].source == "form:c" and settings.forms["c"].rate_limit == "10/minute"


def test_rate_limit_in_redis_is_shared(tmp_path: Path) -> None:
    redis_url = os.environ.get("CRM_TEST_REDIS_URL")
    if not redis_url:
        if os.environ.get("CRM_REQUIRE_SERVERS"):
            pytest.fail("CRM_TEST_REDIS_URL is not set but CRM_REQUIRE_SERVERS is: CI must test Redis")
        pytest.skip("CRM_TEST_REDIS_URL is not set: no Redis to keep the form rate limits in")
    name = f"redis{uuid.uuid4().hex[:8]}"  # a form of its own: no counter left from another run
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'crm.db'}",
                          f'[api]\nrate_limit_storage = "{redis_url}"\n'
                          f'[api.forms.{name}]\nfields = {{ email = "email" }}\nrate_limit = "2/minute"\n')
    with CRM.open(config=Config.load(config)) as crm:  # migrated, with the user crm serve runs as
        crm.users.add("ann", role="admin")
    process, base = start_server(tmp_path, config)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            codes = [client.post(f"/forms/{name}", data={"email": unique_email()}).status_code for _ in range(3)]
    finally:
        stop_server(process)
    assert codes == [201, 201, 429]
    # The counter lives in Redis, where any other worker or server sees it.
    limiter = MovingWindowRateLimiter(storage_from_string(redis_url))
    stats = limiter.get_window_stats(limits.parse("2/minute"), "form", name, "127.0.0.1")
    assert stats.remaining == 0
    limiter.clear(limits.parse("2/minute"), "form", name, "127.0.0.1")


def test_rate_limits_count_the_forwarded_client_only_behind_a_named_proxy(tmp_path: Path) -> None:
    """``crm serve --forwarded-allow-ips`` makes the limit count X-Forwarded-For's client, as the
    proxy it names says; without it the header is ignored (anyone could forge one)."""
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'crm.db'}",
                          '[api.forms.once]\nfields = { email = "email" }\nrate_limit = "1/minute"\n')
    with CRM.open(config=Config.load(config)) as crm:
        crm.users.add("ann", role="admin")

    def codes(base: str, clients: list[str]) -> list[int]:
        with httpx.Client(base_url=base, timeout=30) as client:
            return [client.post("/forms/once", data={"email": unique_email()},
                                headers={"X-Forwarded-For": who}).status_code for who in clients]

    process, base = start_server(tmp_path, config, ("--forwarded-allow-ips", "127.0.0.1"))
    try:
        assert codes(base, ["203.0.113.7", "203.0.113.8", "203.0.113.7"]) == [201, 201, 429]
    finally:
        stop_server(process)
    process, base = start_server(tmp_path, config)
    try:
        assert codes(base, ["198.51.100.1", "198.51.100.2"]) == [201, 429]  # both are 127.0.0.1
    finally:
        stop_server(process)
