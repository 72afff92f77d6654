"""A separate OS process for the engine tests (run as a script, not imported).

Each worker opens its own CRM on the database URL it is given, so the
concurrency tests exercise real inter-process races, not threads sharing state.

Modes:

``redeem URL SCHEME DIR WORKER ROUNDS POINTS``
    Signal readiness with ``DIR/ready-WORKER``; then for each round wait for
    ``DIR/go-ROUND`` (it holds a customer id) and redeem ``POINTS`` at once.
    One JSON line per round on stdout: ``{"round", "ok", "error", "balance"}``.

``die-in-send URL CHANNEL NOW``
    Dispatch with a clock fixed at ``NOW`` through a channel whose ``send``
    kills the process, leaving the claimed message in ``sending``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import crmcore
from crmcore import CRM, Config

WAIT_LIMIT_S = 120


class Scheme(crmcore.LoyaltyScheme):
    description = "a scheme with no rules: points come from adjustments"

    def __init__(self, name: str):
        self.name = name


class DyingChannel(crmcore.Channel):
    description = "dies in the middle of a delivery"
    address = None

    def __init__(self, name: str):
        self.name = name

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        sys.stdout.write(f"claimed {message.id} attempt {message.attempts}\n")
        sys.stdout.flush()
        os._exit(3)


class Register:
    __name__ = "worker_components"

    def __init__(self, schemes: tuple = (), channels: tuple = ()):
        self.schemes, self.channels = schemes, channels

    @crmcore.hookimpl
    def register_loyalty_schemes(self, register: Any) -> None:
        for scheme in self.schemes:
            register(scheme)

    @crmcore.hookimpl
    def register_channels(self, register: Any) -> None:
        for channel in self.channels:
            register(channel)


def open_crm(url: str, plugin: Register, clock: Any = None) -> CRM:
    return CRM.open(config=Config.from_mapping({"database_url": url, "plugins": []}),
                    extra_plugins=[plugin], migrate=False, clock=clock)


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {path}")
        time.sleep(0.0002)


def redeem(url: str, scheme: str, directory: str, worker: str, rounds: str, points: str) -> None:
    control = Path(directory)
    crm = open_crm(url, Register(schemes=(Scheme(scheme),)))
    crm.loyalty.balances(scheme)  # connect now, not inside the race
    (control / f"ready-{worker}").write_text("ready")
    for round_no in range(int(rounds)):
        go = control / f"go-{round_no}"
        wait_for(go)
        customer_id = int(go.read_text())
        result: dict[str, Any] = {"round": round_no, "ok": False, "error": None}
        try:
            crm.loyalty.redeem(customer_id, int(points), scheme, reason=f"worker {worker}",
                               key=f"race:{round_no}:{worker}")
            result["ok"] = True
        except Exception as exc:  # reported to the test, which decides
            result["error"] = type(exc).__name__
            result["message"] = str(exc)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
    crm.close()


def die_in_send(url: str, channel: str, now: str) -> None:
    moment = datetime.fromisoformat(now)
    crm = open_crm(url, Register(channels=(DyingChannel(channel),)), clock=lambda: moment)
    crm.notify.dispatch()
    raise SystemExit("the channel should have killed this process")


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    {"redeem": redeem, "die-in-send": die_in_send}[mode](*args)
