"""The console's security paths over a real ``crm serve`` on SQLite, PostgreSQL and MariaDB:
sign-ins audited (refused ones without the password) and a login locked after failed ones;
changing one's password needs the current one and signs out every other session (the session
generation); a refused htmx request answers with a message the page shows."""

from __future__ import annotations

import json
import re
import uuid

import httpx
from crmcore.application.audit import records

from .conftest import Api
from .console_helpers import PASSWORD, csrf_of, set_passwords, sign_in

API_TOML = """
[plugins.web]
sign_in_rate_limit = "200/minute"
sign_in_lockout = "3/minute"
"""


def _audit(api: Api, since_seq: int = 0) -> list[dict[str, object]]:
    with api.crm.unit(readonly=True) as uow:
        return [{"seq": r.seq, "actor": r.actor, "action": r.action, "entity_id": r.entity_id,
                 "changes": r.changes} for r in records(uow.conn) if r.seq > since_seq]


def _last_seq(api: Api) -> int:
    with api.crm.unit(readonly=True) as uow:
        found = records(uow.conn, limit=1)
    return found[-1].seq if found else 0


def _post_sign_in(client: httpx.Client, **form: str) -> httpx.Response:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/sign-in").text)
    assert csrf
    return client.post("/console/sign-in", data={"csrf": csrf.group(1), **form})


def test_sign_ins_are_audited_without_the_password_and_failures_lock_the_login(api: Api) -> None:
    set_passwords(api, "sam", "max")
    before = _last_seq(api)
    client = api.client(None, follow_redirects=False)
    wrong = f"wrong-{uuid.uuid4().hex}"
    for _ in range(3):
        answer = _post_sign_in(client, login="sam", password=wrong)
        assert answer.status_code == 401 and "sign-in-error" in answer.text
    locked = _post_sign_in(client, login="sam", password=PASSWORD)  # right, but the login is locked
    assert locked.status_code == 429 and "locked" in locked.text and "crm_console=" not in \
        locked.headers.get("set-cookie", "")
    forged = _post_sign_in(client, login="", password="", token=f"crm_{wrong}")
    assert forged.status_code == 401
    assert sign_in(api, "max").get("/console/customers").status_code == 200  # another login is not locked

    trail = _audit(api, before)
    refused = [r for r in trail if r["action"] == "console.sign-in-refused"]
    assert [(r["actor"], r["entity_id"]) for r in refused] == [("anonymous", "sam")] * 3 + [("anonymous", None)]
    assert {r["changes"]["method"][1] for r in refused} == {"password", "token"}  # type: ignore[index]
    assert all(r["changes"]["address"][1] == "127.0.0.1" for r in refused)  # type: ignore[index]
    assert [(r["actor"], r["entity_id"]) for r in trail if r["action"] == "console.sign-in-locked"] == [
        ("anonymous", "sam")]
    assert ("max", "console.sign-in", "max") in [(r["actor"], r["action"], r["entity_id"]) for r in trail]
    written = json.dumps(trail)
    assert wrong not in written and PASSWORD not in written  # neither password nor token on record


def test_changing_ones_password_needs_the_current_one_and_ends_the_other_sessions(api: Api) -> None:
    set_passwords(api, "rita")
    here, elsewhere = sign_in(api, "rita"), sign_in(api, "rita")
    by_token = sign_in(api, "", "", token=api.tokens["rita"])
    page = here.get("/console/account")
    assert page.status_code == 200 and 'id="change-password"' in page.text
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf_of(here)}
    new = f"new password {uuid.uuid4().hex[:8]}"

    def change(current: str, fresh: str, repeat: str, send: dict[str, str] = headers) -> httpx.Response:
        return here.post("/console/account/password", data={"current": current, "new": fresh, "repeat": repeat},
                         headers=send)

    assert change(PASSWORD, new, new, {"HX-Request": "true"}).status_code == 403  # no CSRF token
    before = _last_seq(api)
    wrong = change("not my password", new, new)
    assert wrong.status_code == 200 and "password-error" in wrong.text and "current password is wrong" in wrong.text
    assert [(r["actor"], r["action"]) for r in _audit(api, before)] == [("rita", "console.password-refused")]
    differ = change(PASSWORD, new, new + "x")
    assert "password-error" in differ.text and "repetition" in differ.text
    short = change(PASSWORD, "short", "short")
    assert "password-error" in short.text and "8" in short.text  # the core's rule, next to the form
    assert api.crm.users.verify_password("rita", PASSWORD)  # nothing changed so far

    done = change(PASSWORD, new, new)
    assert done.status_code == 200 and 'id="password-changed"' in done.text, done.text
    assert re.search(r'password-changed"[^>]*>[^<]*1</p>', done.text)  # one other console session ended
    assert api.crm.users.verify_password("rita", new) and not api.crm.users.verify_password("rita", PASSWORD)
    assert here.get("/console/customers").status_code == 200  # this session goes on
    for other in (elsewhere, by_token):  # the others are signed out at their next request
        gone = other.get("/console/customers")
        assert gone.status_code == 303 and gone.headers["location"].startswith("/console/sign-in")
    sessions = [t for t in api.crm.tokens.list("rita") if t.name == "web console session"]
    assert len(sessions) == 1  # the other session's token is revoked, not only its cookie refused
    assert api.client("rita").get("/customers").status_code == 200  # rita's own API token is left alone

    # A password set elsewhere (an admin, the CLI) moves the generation too.
    api.crm.users.set_password("rita", PASSWORD)
    assert here.get("/console/customers").status_code == 303


def test_a_refused_htmx_request_answers_with_a_message_the_page_shows(api: Api) -> None:
    """The browser test sees it shown; here, what the page's script reads from each kind of refusal."""
    set_passwords(api, "otto")
    client = sign_in(api, "otto")
    forged = client.post("/console/language", data={"locale": "en"},
                         headers={"HX-Request": "true", "X-CSRF-Token": "forged"})
    assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
    missing = client.get("/console/customers/999999999", headers={"HX-Request": "true"})
    assert missing.status_code == 404 and 'id="page-error"' in missing.text
    page = client.get("/console/customers")
    assert 'id="flash"' in page.text and 'role="alert"' in page.text


def test_crm_serve_prints_the_console_address(api: Api) -> None:
    """README's tour ends with ``crm serve`` and the address it prints: this server's log has it."""
    log = (api.directory / "serve.log").read_text(encoding="utf-8")
    assert f"web console: {api.base_url}/console/\n" in log, log
    assert httpx.get(f"{api.base_url}/console/", follow_redirects=True).url.path == "/console/sign-in"
