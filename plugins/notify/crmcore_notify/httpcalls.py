"""What the HTTP channels (``webhook``, ``sms-http``) share: one httpx client per
dispatch batch and thread, and one verdict per response or error.

Verdicts: 2xx delivered; 408 and 429 retry (the server asks for it); any other
4xx is permanent (the request itself is wrong and will stay wrong); 3xx is
permanent too (redirects are not followed: a moved endpoint is a configuration
to fix, and following it would send the signed body somewhere unvetted); 5xx,
timeouts and refused connections retry.  A host name that does not resolve
is permanent.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

import crmcore

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = (408, 429)


class ClientPerThread:
    """An :class:`httpx.Client` per dispatcher thread, opened and closed with the batch."""

    def __init__(self) -> None:
        self._local = threading.local()

    def open(self, timeout: float, verify: bool | str = True) -> None:
        # Imported on first use: registering the HTTP channels must not load httpx (start-up time).
        import httpx

        self._local.client = httpx.Client(timeout=timeout, verify=verify, follow_redirects=False)

    def get(self, timeout: float, verify: bool | str = True) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:  # send() without open(): a caller outside the dispatcher
            self.open(timeout, verify)
            client = self._local.client
        return client

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        self._local.client = None
        if client is not None:
            client.close()


def request(client: httpx.Client, channel: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Make the request; errors become :class:`crmcore.TransientError` / :class:`crmcore.PermanentError`."""
    import httpx

    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise crmcore.TransientError(f"{channel}: {method} {url} timed out ({type(exc).__name__})") from None
    except httpx.ConnectError as exc:
        if _unresolvable(exc):
            raise crmcore.PermanentError(f"{channel}: unknown host in {url}: {exc}") from None
        raise crmcore.TransientError(f"{channel}: cannot connect to {url}: {exc}") from None
    except httpx.LocalProtocolError as exc:  # the request built from this message is malformed (CR/LF in a header)
        raise crmcore.PermanentError(f"{channel}: cannot send this message to {url}: {exc}") from None
    except httpx.UnsupportedProtocol as exc:
        raise crmcore.PermanentError(f"{channel}: bad URL {url!r}: {exc}") from None
    except httpx.TransportError as exc:
        raise crmcore.TransientError(f"{channel}: {method} {url} failed: {type(exc).__name__}: {exc}") from None
    check(response, channel)
    return response


def check(response: httpx.Response, channel: str) -> None:
    """Raise the verdict for a response that is not 2xx."""
    if response.is_success:
        return
    text = response.text[:200].strip()
    detail = f"{channel}: {response.request.method} {response.request.url} -> {response.status_code} " \
             f"{response.reason_phrase}" + (f": {text}" if text else "")
    if response.status_code >= 500 or response.status_code in RETRY_STATUSES:
        raise crmcore.TransientError(detail)
    raise crmcore.PermanentError(detail)


def _unresolvable(exc: BaseException) -> bool:
    """True when the error comes from a name that does not resolve (not a resolver outage)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return seen.errno != socket.EAI_AGAIN
        seen = seen.__cause__ or seen.__context__
    return "Name or service not known" in str(exc) or "nodename nor servname" in str(exc)


def provider_id(response: httpx.Response, field: str | None) -> str | None:
    """The provider's message id from a JSON response (``field`` is a dotted path,
    list indexes allowed: ``messages.0.id``), or None."""
    if not field:
        return None
    try:
        value: Any = response.json()
    except ValueError:
        return None
    for part in field.split("."):
        if isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return None
    return None if value is None else str(value)
