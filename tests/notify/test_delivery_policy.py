"""Per-channel delivery settings: rate limits and quiet hours (deferred, never dropped)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import crmcore
from crmcore.notify.policy import Pacer, QuietHours, split_delivery_options

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Recording(crmcore.Channel):
    """Records what it delivers and when (monotonic seconds)."""

    name = "rec"
    description = "records deliveries"
    address = None

    def __init__(self) -> None:
        self.sent: list[tuple[int, float]] = []

    def send(self, message: crmcore.Message, options: Any) -> str | None:
        self.sent.append((message.id, time.monotonic()))
        return None


class Plugin:
    __name__ = "policy_test"

    def __init__(self, channel: Recording):
        self.channel = channel

    @crmcore.hookimpl
    def register_channels(self, register: Any) -> None:
        register(self.channel)


def open_crm(crm_factory, channel: Recording, clock=None, **delivery):
    return crm_factory(extra_plugins=[Plugin(channel)], config={"channels": {"rec": delivery}}, clock=clock)


# -- quiet hours -------------------------------------------------------------------------------

def shanghai(hour: int, minute: int = 0, day: int = 1) -> datetime:
    return datetime(2026, 7, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


@pytest.mark.parametrize(("local", "until"), [
    (shanghai(23, 0), shanghai(8, 0, day=2)),   # evening: to tomorrow morning
    (shanghai(3, 30), shanghai(8, 0)),          # after midnight: to this morning
    (shanghai(7, 59), shanghai(8, 0)),
    (shanghai(8, 0), None),                     # the window ends at 08:00
    (shanghai(12, 0), None),
    (shanghai(20, 59), None),
    (shanghai(21, 0), shanghai(8, 0, day=2)),
])
def test_quiet_window_across_midnight(local, until):
    quiet = QuietHours(clock_time(21, 0), clock_time(8, 0), SHANGHAI)
    assert quiet.deferral(local) == until


def test_quiet_window_within_a_day():
    quiet = QuietHours(clock_time(12, 0), clock_time(14, 0), SHANGHAI)
    assert quiet.deferral(shanghai(11, 59)) is None
    assert quiet.deferral(shanghai(12, 0)) == shanghai(14, 0)
    assert quiet.deferral(shanghai(13, 59)) == shanghai(14, 0)
    assert quiet.deferral(shanghai(14, 0)) is None


def test_marketing_deferred_transactional_goes(crm_factory):
    now = [shanghai(23, 0)]
    chan = Recording()
    crm = open_crm(crm_factory, chan, clock=lambda: now[0], quiet_hours="21:00-08:00",
                   quiet_hours_timezone="Asia/Shanghai")
    fan = crm.customers.add(name="Fan", email="fan@example.com", consent_marketing=True)
    promo = crm.notify.enqueue("rec", customer_id=fan.id, recipient="fan", body="sale", purpose="marketing")
    receipt = crm.notify.enqueue("rec", customer_id=fan.id, recipient="fan", body="receipt")

    assert crm.notify.dispatch().sent == 1
    assert [mid for mid, _ in chan.sent] == [receipt]
    [row] = crm.notify.outbox(message_id=promo)
    assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("pending", 0, shanghai(8, 0, day=2))

    now[0] = shanghai(7, 59, day=2)
    assert crm.notify.dispatch().sent == 0  # still quiet
    now[0] = shanghai(8, 0, day=2)
    assert crm.notify.dispatch().sent == 1
    assert [mid for mid, _ in chan.sent] == [receipt, promo]


def test_quiet_hours_for_all_defers_everything(crm_factory):
    now = [shanghai(22, 0)]
    chan = Recording()
    crm = open_crm(crm_factory, chan, clock=lambda: now[0], quiet_hours="21:00-08:00", quiet_hours_for="all",
                   quiet_hours_timezone="Asia/Shanghai")
    ids = [crm.notify.enqueue("rec", recipient="x", body=str(n)) for n in range(3)]
    assert crm.notify.dispatch().sent == 0
    assert {r["next_attempt_at"] for r in crm.notify.outbox()} == {shanghai(8, 0, day=2)}
    assert crm.notify.dispatch(as_of=shanghai(9, 0, day=2)).sent == 3
    assert sorted(mid for mid, _ in chan.sent) == ids


def test_quiet_hours_default_to_the_configured_timezone(crm_factory):
    chan = Recording()
    crm = crm_factory(extra_plugins=[Plugin(chan)], clock=lambda: shanghai(23, 0),
                      config={"timezone": "Asia/Shanghai",
                              "channels": {"rec": {"quiet_hours": "21:00-08:00", "quiet_hours_for": "all"}}})
    crm.notify.enqueue("rec", recipient="x", body="late")
    assert crm.notify.dispatch().sent == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"quiet_hours": "9pm-8am"}, r"quiet_hours: expected \"HH:MM-HH:MM\""),
    ({"quiet_hours": "08:00-08:00"}, "quiet_hours: start and end are the same"),
    ({"quiet_hours": "21:00-08:00", "quiet_hours_timezone": "Mars/Base"}, "quiet_hours_timezone: unknown time zone 'Mars/Base'"),
    ({"quiet_hours": "21:00-08:00", "quiet_hours_for": "some"}, "quiet_hours_for: one of marketing, all"),
    ({"quiet_hours_for": "all"}, "quiet_hours_timezone/quiet_hours_for need quiet_hours"),
    ({"rate_limit": 0}, "rate_limit: messages per second, a positive number"),
    ({"rate_limit": "fast"}, "rate_limit"),
])
def test_bad_delivery_settings_are_config_errors(options, message):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.rec\] " + message):
        split_delivery_options(options, "rec", "UTC")


def test_bad_delivery_settings_stop_start_up(crm_factory):
    with pytest.raises(crmcore.ConfigError, match=r"\[channels.rec\] quiet_hours"):
        open_crm(crm_factory, Recording(), quiet_hours="late")


def test_channel_options_do_not_see_delivery_keys(crm_factory, tmp_path):
    path = tmp_path / "out.jsonl"
    crm = crm_factory(plugins=["notify"], config={"channels": {"file": {"path": str(path), "rate_limit": 1000}}})
    crm.notify.enqueue("file", recipient="x", body="y")
    assert crm.notify.dispatch().sent == 1 and path.exists()


# -- rate limits -------------------------------------------------------------------------------

def test_rate_limit_spaces_sends(crm_factory):
    chan = Recording()
    crm = open_crm(crm_factory, chan, rate_limit=40)
    for n in range(12):
        crm.notify.enqueue("rec", recipient="x", body=str(n))
    assert crm.notify.dispatch(workers=3).sent == 12
    times = sorted(t for _, t in chan.sent)
    # Send slots are 1/40 s apart; each send follows its slot after a commit whose
    # duration varies, so the span is bounded below by the slots minus one such
    # variation (a busy machine only makes it longer).
    assert times[-1] - times[0] >= 11 / 40 - 0.02, times


def test_pacer_reserves_slots_across_callers():
    waits: list[float] = []
    pacer = Pacer(rate=10)
    for _ in range(5):
        pacer.wait_turn(waits.append)
    # The first call goes at once; each later one is given the next free slot, 0.1 s apart.
    assert len(waits) == 4
    assert all(abs(w - 0.1 * (i + 1)) < 0.05 for i, w in enumerate(waits)), waits


def test_stop_cuts_a_rate_limit_wait_short(crm_factory):
    import threading
    stop = threading.Event()

    class StopSoonAfterTheFirst(Recording):
        """Sets ``stop`` 0.5 s after its first delivery: inside the pacer's five-second wait, however
        long a loaded machine took to get that far (a timer from the start could fire before it)."""

        def send(self, message: crmcore.Message, options: Any) -> str | None:
            if not self.sent:
                threading.Timer(0.5, stop.set).start()
            return super().send(message, options)

    chan = StopSoonAfterTheFirst()
    crm = open_crm(crm_factory, chan, rate_limit=0.2)  # one message per five seconds
    for n in range(3):
        crm.notify.enqueue("rec", recipient="x", body=str(n))
    result = crm.notify.dispatch(stop=stop)
    assert time.monotonic() - chan.sent[0][1] < 4.5  # not the 10 s the remaining two would take
    assert result.sent + result.deferred == 3 and result.sent >= 1
    assert {r["status"] for r in crm.notify.outbox()} <= {"sent", "pending"}
