"""Brokers for the job tests: RabbitMQ (CRM_TEST_RABBITMQ_URL) and Redis (CRM_TEST_REDIS_URL).

Each test gets its own queue prefix, so pytest-xdist workers never share a queue.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

BROKER_ENV = {"rabbitmq": "CRM_TEST_RABBITMQ_URL", "redis": "CRM_TEST_REDIS_URL"}


def broker_url(kind: str) -> str:
    """The broker URL for ``kind``, or skip (fail under CRM_REQUIRE_SERVERS) with the reason."""
    var = BROKER_ENV[kind]
    url = os.environ.get(var)
    if not url and os.environ.get("CRM_REQUIRE_SERVERS"):
        pytest.fail(f"{var} is not set but CRM_REQUIRE_SERVERS is: CI must test the {kind} broker")
    if not url:
        pytest.skip(f"{var} is not set: no {kind} broker to test against")
    return url


@pytest.fixture
def queue_prefix() -> str:
    """A queue prefix of this test's own."""
    return f"crmtest{uuid.uuid4().hex[:10]}"


@pytest.fixture
def smtp_sink() -> Iterator[Any]:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""
    from notify.conftest import SmtpServer

    server = SmtpServer()
    server.start()
    yield server
    server.stop()
