"""What the HTTP channels (``webhook``, ``sms-http``) share: one httpx client per
dispatch batch and thread, and one verdict per response or error.

Verdicts: 2xx delivered; 408 and 429 retry (the server asks for it); any other
4xx is permanent (the request itself is wrong and will stay wrong); 3xx is
permanent too (redirects are not followed: a moved endpoint is a configuration
to fix, and following it would send the signed body somewhere unvetted); 5xx,
timeouts and refused connections retry.  A host name that does not resolve
is permanent.

Private targets: a client opened with ``refuse_private`` connects only to
public addresses.  The host name is resolved when connecting and every
address it resolves to is checked (:func:`refusal`: loopback, private,
link-local, and anything else that is not globally routable); the connection
then goes to a checked address, so a name cannot resolve to a public address
for the check and a private one for the connection.  A refused target is
permanent for the message.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import crmcore

if TYPE_CHECKING:
    import httpx

RETRY_STATUSES = (408, 429)


class TargetRefused(Exception):
    """A URL's host resolves to an address the client may not connect to."""


def refusal(address: str) -> str | None:
    """Why a client refusing private targets may not connect to ``address`` (an IP), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private and not ip.is_unspecified:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _public_only_backend() -> Any:
    """An httpcore network backend that resolves, checks, then connects to a checked address."""
    import httpcore

    class PublicOnly(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._backend = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                        socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
            try:
                found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise httpcore.ConnectError(str(exc)) from exc
            addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
            for address in addresses:
                why = refusal(address)
                if why is not None:
                    shown = host if host == address else f"{host} ({address})"
                    raise TargetRefused(f"{shown} is {why}; private targets are refused (refuse_private)")
            error: Exception | None = None
            for address in addresses:
                try:
                    return self._backend.connect_tcp(address, port, timeout, local_address, socket_options)
                except httpcore.ConnectError as exc:
                    error = exc
            raise error or httpcore.ConnectError(f"{host}: no address")

        def connect_unix_socket(self, path: str, timeout: float | None = None,
                                socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
            raise TargetRefused(f"unix socket {path} refused (refuse_private)")

        def sleep(self, seconds: float) -> None:
            self._backend.sleep(seconds)

    return PublicOnly()


class ClientPerThread:
    """An :class:`httpx.Client` per dispatcher thread, opened and closed with the batch
    (two when needed: one that may reach any address, one refusing private targets)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _clients(self) -> dict[bool, httpx.Client]:
        clients: dict[bool, httpx.Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        return clients

    def open(self, timeout: float, verify: bool | str = True, refuse_private: bool = False) -> None:
        """Open this thread's client (``refuse_private``: one that connects to public addresses only)."""
        # Imported on first use: registering the HTTP channels must not load httpx (start-up time).
        import httpx

        transport = httpx.HTTPTransport(verify=verify)
        if refuse_private:
            # httpx has no public hook for the connection step; its pool's network backend is it.
            transport._pool._network_backend = _public_only_backend()
        clients = self._clients()
        old = clients.pop(refuse_private, None)
        if old is not None:
            old.close()
        clients[refuse_private] = httpx.Client(timeout=timeout, follow_redirects=False, transport=transport)

    def get(self, timeout: float, verify: bool | str = True, refuse_private: bool = False) -> httpx.Client:
        """This thread's client, opened if it is not yet."""
        client = self._clients().get(refuse_private)
        if client is None:  # send() without open(): a caller outside the dispatcher, or a first guarded URL
            self.open(timeout, verify, refuse_private)
            client = self._clients()[refuse_private]
        return client

    def close(self) -> None:
        """Close this thread's clients."""
        clients = self._clients()
        for client in clients.values():
            client.close()
        clients.clear()


def request(client: httpx.Client, channel: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Make the request; errors become :class:`crmcore.TransientError` / :class:`crmcore.PermanentError`."""
    import httpx

    try:
        response = client.request(method, url, **kwargs)
    except TargetRefused as exc:
        raise crmcore.PermanentError(f"{channel}: {url}: {exc}") from None
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
