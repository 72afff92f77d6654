"""Shared by the web console's tests: sign in through the real form, read the page's CSRF token."""

from __future__ import annotations

import re

import httpx

from .conftest import Api

#: Every console user's password in the tests.
PASSWORD = "correct horse battery"


def set_passwords(api: Api, *logins: str) -> None:
    for login in logins:
        api.crm.users.set_password(login, PASSWORD)


def sign_in(api: Api, login: str, password: str = PASSWORD, token: str = "") -> httpx.Client:
    """A browser-like client (cookies, no token header) signed in through the form."""
    client = api.client(None, follow_redirects=False)
    form = client.get("/console/sign-in")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    done = client.post("/console/sign-in", data={"login": login, "password": password, "token": token,
                                                 "csrf": csrf.group(1), "next": "/console/customers"})
    assert done.status_code == 303, done.text
    return client


def csrf_of(client: httpx.Client) -> str:
    """The session's CSRF token, as a page carries it for htmx."""
    page = client.get("/console/customers")
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def drilled_ids(client: httpx.Client, drill: str) -> list[int]:
    """Every customer id the drill-down lists, following its pages."""
    ids: list[int] = []
    page = client.get("/console/customers", params={"drill": drill})
    assert page.status_code == 200 and 'id="drill"' in page.text, page.text[:500]
    while True:
        ids += [int(i) for i in re.findall(r'href="/console/customers/(\d+)"', page.text)]
        cursor = re.search(r"cursor=([A-Za-z0-9_-]+)", page.text)
        if not cursor:
            return ids
        page = client.get("/console/customers", params={"drill": drill, "cursor": cursor.group(1)},
                          headers={"HX-Request": "true"})
