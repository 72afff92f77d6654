"""Real servers for the notification tests, shared by every test in tests/notify.

* ``smtp_server``: an aiosmtpd server on 127.0.0.1 that records every message
  it accepts (``smtp_server.messages``, counted on the server side).  It can be
  stopped and started again on the same port (``stop()`` / ``start()``), and
  reconfigured for STARTTLS, implicit TLS or AUTH (``smtp_server_factory``).
* ``tls_ca``: a throw-away certificate authority (trustme) with a certificate
  for 127.0.0.1 / localhost; ``tls_ca.ca_file`` is the PEM to trust.
* ``smtp_options(server, **more)``: the ``[channels.smtp]`` table pointing at a
  server.

Use these from another test module in this directory simply by naming them.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
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
    """aiosmtpd handler: keeps every accepted message (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.envelopes: list[tuple[str, list[str], bytes]] = []
        self.peers: list[Any] = []  # the client's (address, port) per message: one per connection

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content
                                   or envelope.content))
            self.peers.append(session.peer)
            number = len(self.envelopes)
        return f"250 2.0.0 Ok: queued as Q{number}"


class SmtpServer:
    """A restartable aiosmtpd server on a fixed loopback port."""

    def __init__(self, mode: str = "plain", tls: ssl.SSLContext | None = None, auth: bool = False):
        self.host, self.port, self.mode = "127.0.0.1", free_port(), mode
        self.recorder = Recorder()
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
    """``smtp_server_factory(mode="plain"|"starttls"|"tls", auth=False)``: a started server."""
    servers: list[SmtpServer] = []

    def factory(mode: str = "plain", auth: bool = False) -> SmtpServer:
        server = SmtpServer(mode, tls=tls_ca.server_context if mode != "plain" else None, auth=auth)
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
