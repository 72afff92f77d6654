"""The contract every notification channel obeys (:class:`ChannelContract`).

The fixture protocol (what the subclass provides):

* ``component``: the channel.
* ``channel_options``: the channel's options (its ``[channels.NAME]`` table)
  pointing at a real endpoint the test runs: a loopback HTTP or SMTP server,
  a file in ``tmp_path``...  Default ``{}``.
* ``delivered``: a callable returning what has arrived at that endpoint so
  far, one item per message; the contract finds a message in ``str(item)``
  (bytes are decoded as UTF-8) by its body or its idempotency key, so return
  texts (request bodies, e-mails as strings, log lines) rather than objects
  whose ``str`` hides them.
* ``provoke_failure``: a callable ``provoke_failure(kind)`` with ``kind``
  ``"transient"`` or ``"permanent"``: it makes the *next* send fail that way
  (a server answering 503, then 400; a stopped server; a full disk...).  It may
  return a mapping with ``"options"`` (channel options to use instead) and/or
  ``"message"`` (fields of the message to change, e.g. ``{"recipient": None}``)
  when the failure is provoked through them.  The contract then expects
  :class:`crmcore.TransientError` (retry later) or
  :class:`crmcore.PermanentError` (give up) from ``open()`` or ``send()``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from ..notify import Delivered, Message, PermanentError, TransientError
from .base import ComponentPlugin, Contract

# A recipient of the kind the channel's ``address`` asks for.
RECIPIENTS: dict[str | None, str] = {"email": "contract@example.com", "phone": "+8613800138000",
                                     None: "contract-recipient"}


def _text(item: Any) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _shows(text: str, body: str | None, key: str) -> bool:
    """Whether what arrived is this message: its body or its idempotency key is in it."""
    return bool(body and body in text) or key in text


class ChannelContract(Contract):
    """Subclass and provide ``component`` (a :class:`crmcore.Channel`),
    ``delivered`` and ``provoke_failure``; usually ``channel_options`` too
    (see the module's documentation for the protocol).

    Checks: a message sent through the component arrives at the endpoint
    (exactly once, with its body), ``send`` returns a provider id, a
    :class:`crmcore.Delivered` or None, the outbox's dispatcher delivers
    through it, and provoked failures are classified: one that should be
    retried raises :class:`crmcore.TransientError`, one that cannot succeed
    raises :class:`crmcore.PermanentError`.
    """

    family = "channels"

    @pytest.fixture
    def channel_options(self) -> dict[str, Any]:
        """The channel's options pointing at the test's endpoint (none by default)."""
        return {}

    @pytest.fixture
    def contract_crm(self, crm_factory: Callable[..., Any], component: Any, contract_config: dict[str, Any],
                     channel_options: dict[str, Any]) -> Any:
        """An empty CRM with the channel registered and configured with ``channel_options``."""
        channels = {**contract_config.get("channels", {}), component.name: channel_options}
        return crm_factory(extra_plugins=[ComponentPlugin(component, self.family)],
                           config={**contract_config, "channels": channels})

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def contract_message(component: Any, body: str, **fields: Any) -> Message:
        """A message as the dispatcher would hand it to ``component``."""
        values: dict[str, Any] = {
            "id": 1, "channel": component.name, "recipient": RECIPIENTS.get(component.address, "contract"),
            "subject": "Contract test", "body": body, "payload": {"contract": True}, "purpose": "transactional",
            "customer_id": None, "idempotency_key": f"contract:{uuid.uuid4().hex}", "attempts": 1}
        values.update(fields)
        return Message(**values)

    @staticmethod
    def send_once(component: Any, message: Message, options: Any) -> Any:
        """open, send, close: one batch of one message.

        When ``send`` fails, an error from ``close`` (a file that cannot be
        flushed either, say) is ignored: the send's failure is what is classified.
        """
        component.open(options)
        try:
            result = component.send(message, options)
        except Exception:
            try:
                component.close()
            except Exception:  # noqa: S110 - the send's error is the one that matters
                pass
            raise
        component.close()
        return result

    # -- checks --------------------------------------------------------------------------
    def test_address_kind(self, component: Any) -> None:
        """``address`` is a customer field the outbox knows, or None."""
        assert component.address in (None, "email", "phone")

    def test_send_arrives_once(self, contract_crm: Any, component: Any, delivered: Callable[[], Any]) -> None:
        """Two messages sent through the component arrive, each once, with their bodies."""
        options = contract_crm.notify.channel_options(component.name)
        before = list(delivered())
        messages = [self.contract_message(component, f"contract-body-{uuid.uuid4().hex[:12]}", id=n + 1)
                    for n in range(2)]
        component.open(options)
        try:
            results = [component.send(message, options) for message in messages]
        finally:
            component.close()
        assert all(r is None or isinstance(r, (str, Delivered)) for r in results), results
        arrived = [_text(item) for item in list(delivered())[len(before):]]
        assert len(arrived) == 2, f"expected 2 deliveries at the endpoint, found {len(arrived)}"
        for message in messages:
            found = sum(_shows(text, message.body, message.idempotency_key) for text in arrived)
            assert found == 1, f"message {message.body!r} arrived {found} times, not once"

    def test_dispatcher_delivers(self, contract_crm: Any, component: Any, delivered: Callable[[], Any]) -> None:
        """Enqueued through the outbox and dispatched, the message arrives and is marked sent."""
        before = len(list(delivered()))
        body = f"contract-dispatch-{uuid.uuid4().hex[:12]}"
        key = f"contract:{uuid.uuid4().hex}"
        message_id = contract_crm.notify.enqueue(component.name, recipient=RECIPIENTS.get(component.address),
                                                 subject="Contract test", body=body, key=key)
        result = contract_crm.notify.dispatch()
        row = contract_crm.notify.outbox(message_id=message_id)[0]
        assert result.sent == 1, f"not sent: {row['status']} ({row['last_error']})"
        assert row["status"] == "sent"
        arrived = [_text(item) for item in list(delivered())[before:]]
        assert len(arrived) == 1 and _shows(arrived[0], body, key), arrived

    @pytest.mark.parametrize("kind, error", [("transient", TransientError), ("permanent", PermanentError)])
    def test_failure_classified(self, contract_crm: Any, component: Any, provoke_failure: Callable[[str], Any],
                                kind: str, error: type[Exception]) -> None:
        """A provoked transient failure raises TransientError; a permanent one PermanentError."""
        change = provoke_failure(kind) or {}
        assert isinstance(change, Mapping), "provoke_failure returns None or a mapping"
        options = contract_crm.notify.channel_options(component.name, change.get("options"))
        message = self.contract_message(component, f"contract-{kind}", **dict(change.get("message") or {}))
        with pytest.raises(Exception) as raised:
            self.send_once(component, message, options)
        assert isinstance(raised.value, error), (
            f"a {kind} failure should raise {error.__name__}, got {type(raised.value).__name__}: {raised.value}")


__all__ = ["ChannelContract"]
