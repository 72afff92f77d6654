"""An idempotency key guards the outbox under concurrency too (issue 14, point 4).

Two transactions queue one key at once: the second waits for the first (the
unique key), then returns the first's message instead of an IntegrityError.
"""

from __future__ import annotations

import threading
import time
from typing import Any



def test_two_transactions_queue_one_key(crm_factory):
    crm = crm_factory(plugins=["notify"], config={"channels": {"console": {}}})
    results: dict[str, Any] = {}
    with crm.unit() as first:
        winner = first.outbox.enqueue("console", recipient="a@example.com", body="one", key="order:7:paid")

        def second() -> None:
            try:
                results["id"] = crm.notify.enqueue("console", recipient="a@example.com", body="two",
                                                   key="order:7:paid")
            except Exception as exc:  # reported below
                results["error"] = exc

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second is now waiting on the first's key (or its write lock)
        assert "id" not in results and "error" not in results
    thread.join(60)
    assert "error" not in results, results["error"]
    assert results["id"] == winner
    rows = crm.notify.outbox(limit=10)
    assert [(r["id"], r["body"]) for r in rows] == [(winner, "one")]
