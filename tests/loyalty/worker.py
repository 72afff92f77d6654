"""A separate OS process for the loyalty concurrency tests (run as a script).

``python worker.py URL CONFIG_JSON DIR WORKER ROUNDS``: opens its own CRM with
the loyalty plugin, writes ``DIR/ready-WORKER``, then for each round waits for
``DIR/go-ROUND`` holding ``{"customer": id, "what": points-or-reward}`` (a
per-worker mapping) and redeems at once (``"what": "expire"`` runs the expiry job, ``"earn"`` the
earning job, ``"credit_many"`` credits the task's ``credits`` in one unit of work
(``LoyaltyLedger.credit_many``); ``{"customer", "points", "key"}`` redeems with an idempotency key).  One JSON line per round on stdout:
``{"round", "ok", "error", "message"}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from crmcore import CRM, Config

WAIT_LIMIT_S = 120


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(0.0002)


def main(url: str, config: str, directory: str, worker: str, rounds: str) -> None:
    control = Path(directory)
    values = {"database_url": url, "plugins": ["loyalty"], "loyalty": json.loads(config)}
    crm = CRM.open(config=Config.from_mapping(values), migrate=False)
    crm.loyalty.balances("points")  # connect now, not inside the race
    (control / f"ready-{worker}").write_text("ready")
    for round_no in range(int(rounds)):
        go = control / f"go-{round_no}"
        wait_for(go)
        task = json.loads(go.read_text())[worker]
        result = {"round": round_no, "ok": False, "error": None, "message": None}
        try:
            if task.get("what") == "expire":
                crm.loyalty.expire()
            elif task.get("what") == "credit_many":
                with crm.unit() as uow:
                    result["written"] = uow.loyalty.credit_many("points", task["credits"])
            elif task.get("what") == "earn":
                result["written"] = crm.loyalty.earn_won_deals()["points"]
            elif "key" in task:
                entry = crm.loyalty.redeem(task["customer"], task["points"], "points", key=task["key"])
                result["entry"] = entry.id
            elif isinstance(task["what"], int):
                crm.loyalty.redeem(task["customer"], task["what"], "points", reason=f"worker {worker}")
            else:
                crm.loyalty.redeem_reward(task["customer"], task["what"])
            result["ok"] = True
        except Exception as exc:  # reported to the test, which decides
            result["error"], result["message"] = type(exc).__name__, str(exc)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    crm.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
