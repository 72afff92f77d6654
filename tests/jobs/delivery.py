"""What the delivery tests with real processes share: a CRM whose SMTP channel is a real sink,
an outbox of N messages, ``crm worker`` commands, and the count at the sink."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notify.conftest import SmtpServer, smtp_options

from crmcore.app import CRM
from crmcore.config import Config

CRM_BIN = str(Path(sys.executable).with_name("crm"))
PLUGINS = "notify,segments"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def open_crm(url: str, sink: SmtpServer, jobs: Mapping[str, Any], config: Path) -> CRM:
    """A CRM on ``url`` delivering to ``sink`` with ``[jobs]`` = ``jobs``; ``config`` gets the same
    settings as crm.toml for the worker processes."""
    smtp = smtp_options(sink)
    config.write_text("\n".join(["[channels.smtp]", *(f"{k} = {json.dumps(v)}" for k, v in smtp.items()),
                                 "[jobs]", *(f"{k} = {json.dumps(v)}" for k, v in jobs.items())]) + "\n")
    return CRM.open(config=Config.from_mapping({"database_url": url, "plugins": PLUGINS.split(","),
                                                "channels": {"smtp": smtp}, "jobs": dict(jobs)}),
                    clock=lambda: datetime.now(UTC))


def fill_outbox(crm: CRM, count: int) -> None:
    """``count`` due SMTP messages, subjects ``#0`` ... (one idempotency key each)."""
    with crm.unit() as uow:
        for n in range(count):
            uow.outbox.enqueue("smtp", recipient=f"m{n}@example.com", subject=f"#{n}", body=f"message {n}",
                               key=f"m:{n}")


def worker_command(url: str, config: Path, concurrency: int = 2, crm_bin: str = CRM_BIN) -> list[str]:
    return [crm_bin, "--db", url, "--config", str(config), "--plugins", PLUGINS, "worker",
            "--concurrency", str(concurrency), "--queues", "notify"]


def tally(sink: SmtpServer, expected: int) -> dict[str, int]:
    """Messages expected, delivered (distinct subjects of the expected ones), duplicated (extra
    copies, by subject and by Message-ID) and lost, counted at the sink."""
    by_subject = Counter(str(m["Subject"]) for m in sink.messages)
    by_message_id = Counter(sink.message_ids())
    wanted = {f"#{n}" for n in range(expected)}
    return {"expected": expected, "delivered": len(set(by_subject) & wanted),
            "duplicated": max(sum(n - 1 for n in by_subject.values()), sum(n - 1 for n in by_message_id.values())),
            "lost": len(wanted - set(by_subject))}


def line(counts: Mapping[str, int], **more: Any) -> str:
    """The figures line the failure tests print."""
    extra = "".join(f", {k.replace('_', ' ')} {v}" for k, v in more.items())
    return (f"messages expected {counts['expected']}, delivered {counts['delivered']}, "
            f"duplicated {counts['duplicated']}, lost {counts['lost']}{extra}")
