"""Real servers for the notification tests, shared by every test in tests/notify.

* ``smtp_server``: an aiosmtpd server on 127.0.0.1 that records every message
  it accepts (``smtp_server.messages``, counted on the server side).  It can be
  stopped and started again on the same port (``stop()`` / ``start()``), and
  reconfigured for STARTTLS, implicit TLS or AUTH (``smtp_server_factory``).
* ``tls_ca``: a throw-away certificate authority (trustme) with a certificate
  for 127.0.0.1 / localhost; ``tls_ca.ca_file`` is the PEM to trust.
* ``smtp_options(server, **more)``: the ``[channels.smtp]`` table pointing at a
  server.
* ``http_server``: a threaded ``http.server`` on 127.0.0.1 recording every
  request (``http_server.requests``); ``http_server.reply(path, status, body,
  delay=0)`` sets how a path answers (default 200 ``{"id": "m-N"}``).

Use these from another test module in this directory simply by naming them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

SMTP_USER, SMTP_PASSWORD = "crm", "s3cret-pa55"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Recorder:
    """aiosmtpd handler: keeps every accepted message (thread-safe).

    ``hang_after(n)``: once ``n`` messages are accepted, the next ``MAIL FROM``
    gets no answer and ``tripped`` is set, so a test can stop the server at a
    known point: between two messages, every accepted one acknowledged.
    ``delay``: seconds to wait before accepting each message (a slow server).
    ``pipelining``: advertise PIPELINING (RFC 2920) in the reply to ``EHLO``, as most servers do
    (aiosmtpd reads pipelined commands line by line but does not say so itself).
    """

    def __init__(self, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.hang_at: int | None = None
        self.tripped = threading.Event()
        self.delay = 0.0
        self.lock = threading.Lock()
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.peers: list[Any] = []  # the client's (address, port) per message: one per connection

    def hang_after(self, count: int | None) -> None:
        self.hang_at = count
        self.tripped.clear()

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname  # (aiosmtpd leaves that to a handler with this hook)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        with self.lock:
            hang = self.hang_at is not None and len(self.envelopes) >= self.hang_at
        if hang:
            self.tripped.set()
            await asyncio.sleep(3600)  # cancelled when the test stops the server
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
                                   or envelope.content))
            self.peers.append(session.peer)
            number = len(self.envelopes)
        return f"250 2.0.0 Ok: queued as Q{number}"


class SmtpServer:
    """A restartable aiosmtpd server on a fixed loopback port."""

    def __init__(self, mode: str = "plain", tls: ssl.SSLContext | None = None, auth: bool = False,
                 pipelining: bool = True):
        self.host, self.port, self.mode = "127.0.0.1", free_port(), mode
        self.recorder = Recorder(pipelining)
        self.tls, self.auth = tls, auth
        self.logins: list[str] = []
        self.controller: Controller | None = None

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login.decode() == SMTP_USER \
            and data.password.decode() == SMTP_PASSWORD
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def start(self) -> None:
        kwargs: dict[str, Any] = {}
        if self.mode == "starttls":
            kwargs.update(tls_context=self.tls, require_starttls=True)
        if self.mode == "tls":
            kwargs.update(ssl_context=self.tls, server_hostname="localhost")
        if self.auth:
            kwargs.update(authenticator=self._authenticate, auth_required=True)
            if self.mode == "tls":
                # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS from the start.
                kwargs.update(auth_require_tls=False)
        self.controller = Controller(self.recorder, hostname=self.host, port=self.port, **kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[EmailMessage]:
        """Accepted messages, parsed, in arrival order."""
        with self.recorder.lock:
            raw = [content for _, _, content in self.recorder.envelopes]
        return [message_from_bytes(content, policy=policy.default) for content in raw]

    @property
    def envelopes(self) -> list[tuple[str, list[str], bytes]]:
        with self.recorder.lock:
            return list(self.recorder.envelopes)

    def connections(self) -> int:
        """How many client connections delivered the accepted messages."""
        with self.recorder.lock:
            return len(set(self.recorder.peers))

    def message_ids(self) -> list[str]:
        return [str(m["Message-ID"]) for m in self.messages]


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A test CA and a server certificate for 127.0.0.1 and localhost."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder: Path = tmp_path_factory.mktemp("tls")
    ca_file = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)

    class Tls:
        pass

    tls = Tls()
    tls.ca_file, tls.server_context, tls.ca = str(ca_file), server, ca
    return tls


@pytest.fixture
def smtp_server_factory(tls_ca: Any) -> Iterator[Callable[..., SmtpServer]]:
    """``smtp_server_factory(mode="plain"|"starttls"|"tls", auth=False, pipelining=True)``: a started server."""
    servers: list[SmtpServer] = []

    def factory(mode: str = "plain", auth: bool = False, pipelining: bool = True) -> SmtpServer:
        server = SmtpServer(mode, tls=tls_ca.server_context if mode != "plain" else None, auth=auth,
                            pipelining=pipelining)
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: Callable[..., SmtpServer]) -> SmtpServer:
    """A plain SMTP server on loopback, recording what it accepts."""
    return smtp_server_factory()


def smtp_options(server: SmtpServer, **more: Any) -> dict[str, Any]:
    """``[channels.smtp]`` for ``server`` (plus ``more``)."""
    return {"host": server.host, "port": server.port, "security": server.mode,
            "sender": "shop@example.com", "timeout": 10, **more}


# -- HTTP ---------------------------------------------------------------------------------------

class Recorded:
    """One request as the server saw it."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes):
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class HttpServer:
    """A loopback HTTP server whose answers the test sets per path."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.replies: dict[str, tuple[int, bytes, float]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                with server.lock:
                    server.requests.append(Recorded(self.command, self.path, dict(self.headers.items()), body))
                    number = len(server.requests)
                    status, reply, delay = server.replies.get(path, (200, b"", 0.0))
                if delay:
                    time.sleep(delay)
                reply = reply or json.dumps({"id": f"m-{number}"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                    pass

            do_POST = do_PUT = do_GET = _any

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def reply(self, path: str, status: int, body: str | bytes = b"", delay: float = 0.0) -> None:
        with self.lock:
            self.replies[path] = (status, body.encode() if isinstance(body, str) else body, delay)

    def received(self, path: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path.split("?")[0] == path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A recording HTTP server on loopback (see :class:`HttpServer`)."""
    server = HttpServer()
    yield server
    server.close()
