"""SMTP PIPELINING (RFC 2920) in the smtp channel (``crmcore_notify.smtp_pipeline``).

* A server that answers nothing until ``DATA`` has arrived (allowed for a pipelining server, and
  deadlocks a client that waits for each reply) gets every message: the envelope and ``DATA`` go
  in one write.  The same server can open ``DATA`` after refusing the recipient (a broken server):
  that message keeps the recipient's refusal, the connection is dropped, the next one goes.
* With aiosmtpd, pipelining or not: a refused recipient (550 dead, 452 retried) and a refused
  ``MAIL`` are classified as step by step, the rest go; a body line starting with "." arrives intact.
"""

from __future__ import annotations

import smtplib
import socket
import threading
from typing import Any

import pytest

from crmcore_notify.smtp_pipeline import _route, content_bytes

from .conftest import smtp_options


class HoldingServer:
    """Answers ``MAIL``, ``RCPT`` and ``DATA`` only together, once ``DATA`` has arrived.

    ``open_data_after_refusal``: answer 354 to ``DATA`` even after refusing ``RCPT`` (a broken
    server).  Records each accepted message's recipient and the connections made."""

    def __init__(self, open_data_after_refusal: bool = False):
        self.open_data_after_refusal = open_data_after_refusal
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()
        self.accepted: list[str] = []
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 holding ESMTP\r\n")
            held: list[bytes] = []
            for line in lines:
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-holding\r\n250-PIPELINING\r\n250 HELP\r\n")
                elif verb in (b"MAIL", b"RCPT"):
                    held.append(line)  # no reply yet: a client waiting for one would hang here
                elif verb == b"DATA":
                    self._transaction(conn, lines, held)
                    held = []
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 OK\r\n")

    def _transaction(self, conn: socket.socket, lines: Any, held: list[bytes]) -> None:
        refused = any(b"nobody@" in line for line in held if line[:4].upper() == b"RCPT")
        replies = [b"250 OK\r\n", b"550 5.1.1 no such user\r\n" if refused else b"250 OK\r\n"]
        if refused and not self.open_data_after_refusal:
            conn.sendall(b"".join(replies) + b"554 5.5.1 no valid recipients\r\n")
            return
        conn.sendall(b"".join(replies) + b"354 go ahead\r\n")
        for line in lines:
            if line == b".\r\n":
                break
        if refused:
            conn.sendall(b"554 5.5.1 no valid recipients\r\n")
            return
        recipient = next(line for line in held if line[:4].upper() == b"RCPT")
        self.accepted.append(recipient.split(b"<", 1)[1].split(b">", 1)[0].decode())
        conn.sendall(b"250 2.0.0 queued\r\n")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def holding() -> Any:
    servers: list[HoldingServer] = []

    def make(**kwargs: Any) -> HoldingServer:
        servers.append(HoldingServer(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def holding_crm(crm_factory: Any, server: HoldingServer) -> Any:
    options = {"host": server.host, "port": server.port, "sender": "shop@example.com", "timeout": 3}
    return crm_factory(plugins=["notify"], config={"channels": {"smtp": options}})


def test_envelope_and_data_go_in_one_write(crm_factory, holding):
    server = holding()
    crm = holding_crm(crm_factory, server)
    recipients = [f"c{i}@example.com" for i in range(5)]
    for to in recipients:
        crm.notify.enqueue("smtp", recipient=to, subject="s", body="b")
    result = crm.notify.dispatch()
    assert (result.sent, result.retried, result.dead) == (5, 0, 0)
    assert server.accepted == recipients and server.connections == 1


def test_a_server_opening_data_after_a_refused_recipient(crm_factory, holding):
    server = holding(open_data_after_refusal=True)
    crm = holding_crm(crm_factory, server)
    bad = crm.notify.enqueue("smtp", recipient="nobody@example.com", subject="s", body="b")
    good = crm.notify.enqueue("smtp", recipient="ok@example.com", subject="s", body="b")
    result = crm.notify.dispatch()
    assert (result.sent, result.dead) == (1, 1)
    [row] = crm.notify.outbox(message_id=bad)
    assert row["status"] == "dead" and "RCPT TO nobody@example.com: 550" in row["last_error"]
    assert crm.notify.outbox(message_id=good)[0]["status"] == "sent"
    assert server.accepted == ["ok@example.com"] and server.connections == 2  # the open DATA was dropped


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "step-by-step"])
def test_refusals_are_classified_per_step(crm_factory, smtp_server_factory, pipelining):
    server = smtp_server_factory(pipelining=pipelining)
    recorder = server.recorder
    plain_mail = type(recorder).handle_MAIL

    async def handle_MAIL(server_: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if getattr(session, "refuse_mail", False):
            return "451 4.3.0 try later"
        return await plain_mail(recorder, server_, session, envelope, address, options)

    async def handle_RCPT(server_: Any, session: Any, envelope: Any, address: str, options: list) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        if address.startswith("full@"):
            return "452 4.2.2 mailbox full"
        if address.startswith("later@"):
            session.refuse_mail = True  # the next MAIL FROM on this connection is refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    recorder.handle_MAIL, recorder.handle_RCPT = handle_MAIL, handle_RCPT
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(server)}})
    ids = {to: crm.notify.enqueue("smtp", recipient=to, subject="s", body="b")
           for to in ["nobody@example.com", "a@example.com", "full@example.com", "later@example.com",
                      "refused@example.com"]}
    result = crm.notify.dispatch()
    rows = {to: crm.notify.outbox(message_id=i)[0] for to, i in ids.items()}
    assert (result.sent, result.dead, result.retried) == (2, 1, 2)
    assert rows["nobody@example.com"]["status"] == "dead" and "RCPT TO nobody@example.com: 550" in \
        rows["nobody@example.com"]["last_error"]
    assert rows["full@example.com"]["status"] == "pending" and "RCPT TO full@example.com: 452" in \
        rows["full@example.com"]["last_error"]
    assert rows["refused@example.com"]["status"] == "pending" and "MAIL FROM: 451" in \
        rows["refused@example.com"]["last_error"]
    assert sorted(env[1][0] for env in server.envelopes) == ["a@example.com", "later@example.com"]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "step-by-step"])
def test_leading_dots_arrive_intact(crm_factory, smtp_server_factory, pipelining):
    server = smtp_server_factory(pipelining=pipelining)
    crm = crm_factory(plugins=["notify"], config={"channels": {"smtp": smtp_options(server)}})
    body = ".starts with a dot\n..two\nmiddle . dot\n.\nend"
    crm.notify.enqueue("smtp", recipient="a@example.com", subject="dots", body=body)
    assert crm.notify.dispatch().sent == 1
    [message] = server.messages
    assert message.get_content().replace("\r\n", "\n").rstrip("\n") == body


def test_content_bytes_doubles_leading_dots_and_ends_the_data():
    assert content_bytes(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert content_bytes(b".x") == b"..x\r\n.\r\n"
    assert content_bytes(b"no dot. here\r\n") == b"no dot. here\r\n.\r\n"


@pytest.mark.parametrize("address", [
    "a@example.com", "first.last+tag@sub.example.co.uk", "o'brien@x.org", "a{b}|c~d@h-1.example", "x@y",
    "not an address", "a..b@x.com", "\u00e9@x.com", "a@x.com>", '"q"@x.com', "Name <a@x.com>", ""])
def test_the_route_is_what_smtplib_would_send(address):
    assert _route(address) == smtplib.quoteaddr(address)
