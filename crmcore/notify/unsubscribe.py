"""The page a signed unsubscribe link opens, for every front end.

``crm serve`` answers it at ``/unsubscribe`` (:mod:`crmcore.web.unsubscribe`);
:func:`wsgi_app` (``crmcore.notify.consent.unsubscribe_app``) serves the same
page from any WSGI server.  Configure the link as
``[notify] unsubscribe_url = "https://crm.example.com/unsubscribe?token={token}"``:
templates get it as ``unsubscribe_url`` and the smtp channel puts it in
``List-Unsubscribe`` with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``.

- ``GET ?token=...`` shows a confirmation with a button and changes nothing:
  mail filters fetch every link in a message, and a fetch must not unsubscribe.
- ``POST ?token=...`` records the withdrawal: the button's form post (source
  ``link``) or a mail client's RFC 8058 one-click request, whose body is
  ``List-Unsubscribe=One-Click`` (source ``one-click``).  A withdrawal that
  already stands is not recorded again, so retries and double clicks leave one
  decision.
- A forged, damaged or unusable token is a ``400`` page, never a server error.

Nobody is logged in: the signed token is the credential, and the page acts as
the built-in ``system`` actor (so the access plugin's ``system_role`` must allow
``consent.unsubscribe``; the default, admin, does).  The decision and its audit
record name ``system`` as the actor and the source as above.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs
import jinja2

from ..application.uow import SYSTEM_ACTOR
from ..domain.errors import ConfigError, CRMError, NotAuthorized, NotFound
from .consent import EVERY_CHANNEL, InvalidToken, read_token, unsubscribe_token

if TYPE_CHECKING:
    from ..app import CRM

#: The body of an RFC 8058 one-click request (``List-Unsubscribe-Post`` names it).
ONE_CLICK = ("List-Unsubscribe", "One-Click")
#: The most a form post to the page may carry (a token and a button; one-click bodies are tiny).
MAX_FORM_BYTES = 64 * 1024
# Tokens we sign are well under 200 characters; a longer one is not ours (and is not worth verifying).
MAX_TOKEN = 2000
#: Headers of every page: the token is in the URL, so no caching, indexing or referrer; no scripts.
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'",
}

# Autoescaped: the token and every message are text, never markup.
_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{{ title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;line-height:1.5}
button{font-size:1rem;padding:.5rem 1.25rem;cursor:pointer}</style></head>
<body><h1>{{ title }}</h1><p>{{ text }}</p>
{%- if token is not none %}
<form method="post"><input type="hidden" name="token" value="{{ token }}">\
<button type="submit">Unsubscribe</button></form>
{%- endif %}
</body></html>
""")


@attrs.frozen
class Page:
    """An answer of the unsubscribe page: HTTP status and HTML."""

    status: int
    title: str
    html: str

    @property
    def status_line(self) -> str:
        """``"200 OK"``, as WSGI wants it."""
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def page(status: int, title: str, text: str, token: str | None = None) -> Page:
    """A page with a title and a sentence (and the confirmation form when ``token`` is given)."""
    return Page(status, title, _PAGE.render(title=title, text=text, token=token))


def _what(channel: str, purpose: str) -> str:
    return f"{purpose} messages{'' if channel == EVERY_CHANNEL else ' via ' + channel}"


def is_one_click(fields: Mapping[str, Sequence[str]]) -> bool:
    """Whether a POST body is an RFC 8058 one-click request (``List-Unsubscribe=One-Click``)."""
    name, value = ONE_CLICK
    return value in fields.get(name, ())


def form_fields(content_type: str | None, body: bytes) -> dict[str, list[str]]:
    """The fields of a small form body: URL-encoded, or ``multipart/form-data`` (RFC 8058 allows both)."""
    if content_type and content_type.lower().startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
        fields: dict[str, list[str]] = {}
        for part in message.iter_parts() if message.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields.setdefault(name, []).append(payload.decode("utf-8", "replace").strip())
        return fields
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def handle(crm: "CRM", method: str, token: str | None, one_click: bool = False) -> Page:
    """The page for a ``GET`` (confirm) or ``POST`` (record) of ``token``; errors are pages too."""
    method = method.upper()
    if method not in ("GET", "POST"):
        return page(405, "Method not allowed", "Open the link from your message.")
    try:
        if not token or len(token) > MAX_TOKEN:
            raise InvalidToken("the link has no valid unsubscribe token (was it cut off?)")
        _customer_id, channel, purpose = read_token(crm.config.notify.secret(), token)
        if method == "GET":
            return page(200, "Unsubscribe?", f"Stop {_what(channel, purpose)}? Confirm with the button.", token)
        # The link's holder is nobody we know: the system acts, the token being the credential.
        with crm.acting_as(SYSTEM_ACTOR):
            unsubscribe_token(crm, token, source="one-click" if one_click else "link", again=False)
        return page(200, "You are unsubscribed.", f"You will no longer receive {_what(channel, purpose)}.")
    except InvalidToken as exc:
        return page(400, "Cannot unsubscribe", str(exc))
    except NotFound:
        return page(400, "Cannot unsubscribe", "this unsubscribe link is no longer valid")
    except (ConfigError, NotAuthorized):
        # The server's configuration, not the visitor's link: say so without details.
        return page(503, "Unsubscribe is unavailable",
                    "unsubscribing is not set up on this server; please contact the sender")
    except CRMError as exc:
        return page(400, "Cannot unsubscribe", str(exc))


def wsgi_app(crm: "CRM") -> Any:
    """The unsubscribe page as a WSGI application (``?token=...``; a form post may carry the token)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        params = parse_qs(environ.get("QUERY_STRING", ""))
        fields: dict[str, list[str]] = {}
        if method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_FORM_BYTES:
                return _respond(start_response, page(413, "Request too large", "The form is too large."))
            fields = form_fields(environ.get("CONTENT_TYPE"), environ["wsgi.input"].read(length))
        token = (params.get("token") or fields.get("token") or [""])[0]
        return _respond(start_response, handle(crm, method, token, is_one_click(fields)))

    return app


def _respond(start_response: Any, answer: Page) -> list[bytes]:
    body = answer.html.encode()
    start_response(answer.status_line, [("Content-Type", "text/html; charset=utf-8"),
                                        ("Content-Length", str(len(body))), *HEADERS.items()])
    return [body]
