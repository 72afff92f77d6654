"""The task queue adapter: Dramatiq over RabbitMQ (``amqp://``) or Redis (``redis://``).

Imported only by processes that send to or consume from the queue (start-up time is measured).
One Dramatiq actor per family queue (``PREFIX-notify``, ...); each message carries one job id.
Dramatiq acknowledges a message after the actor returns, so a worker killed mid-job leaves its
message unacknowledged and the broker hands it to another worker, which takes the job over
(:meth:`crmcore.jobs.Jobs.execute`).  Retries are the job's own business (its database row), so
Dramatiq's retries are off; its time limit is a day (an import may run long).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from ..domain.errors import ConfigError

ACTOR_OPTIONS = {"max_retries": 0, "time_limit": 24 * 3600 * 1000}
log = logging.getLogger("crmcore.jobs")


def make_broker(url: str) -> dramatiq.Broker:
    """A Dramatiq broker for ``url``, without Dramatiq's global broker."""
    if url.startswith(("amqp://", "amqps://")):
        return RabbitmqBroker(url=url)
    if url.startswith(("redis://", "rediss://")):
        return RedisBroker(url=url)  # type: ignore[no-untyped-call]
    raise ConfigError(f"broker URL must be amqp:// (RabbitMQ) or redis://, got {url!r}")


def _safe(url: str) -> str:
    """``url`` without its password."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


class Queue:
    """The queues of one CRM on one broker: send job ids, or consume them with :meth:`work`."""

    def __init__(self, url: str, queues: Iterable[str], handler: Callable[[int], Any]):
        self.url = url
        self.broker = make_broker(url)
        self.actors: dict[str, dramatiq.Actor[[int], Any]] = {}
        for name in queues:
            def run(job_id: int) -> None:
                handler(job_id)

            self.actors[name] = dramatiq.Actor(run, broker=self.broker, actor_name=f"crm_job@{name}",
                                               queue_name=name, priority=0, options=dict(ACTOR_OPTIONS))

    def send(self, queue: str, job_id: int, delay: timedelta | None = None) -> None:
        """Put ``job_id`` on ``queue``, after ``delay`` if given (a ConfigError naming the broker when
        it cannot be reached)."""
        try:
            if delay is None:
                self.actors[queue].send(job_id)
            else:
                self.actors[queue].send_with_options(args=(job_id,), delay=max(0, int(delay.total_seconds() * 1000)))
        except Exception as exc:
            raise ConfigError(f"the job broker {_safe(self.url)} did not take job {job_id} ({type(exc).__name__}: "
                              f"{exc}); the job stays queued: `crm jobs show {job_id}`") from exc

    def delete_queues(self) -> None:
        """Remove this CRM's queues from the broker (tests give each run its own prefix)."""
        if isinstance(self.broker, RabbitmqBroker):
            for name in self.actors:
                for suffix in ("", ".DQ", ".XQ"):
                    self.broker.channel.queue_delete(name + suffix)
        elif isinstance(self.broker, RedisBroker):
            client = self.broker.client
            for name in self.actors:
                keys = list(client.scan_iter(f"{self.broker.namespace}:{name}*"))
                if keys:
                    client.delete(*keys)

    def work(self, queues: Iterable[str] | None, concurrency: int, stop: threading.Event) -> None:
        """Consume ``queues`` (all of this CRM's by default) with ``concurrency`` threads until ``stop``
        is set; then finish the jobs in hand and return."""
        names = set(queues) if queues is not None else set(self.actors)
        self.broker.emit_after("process_boot")
        worker = dramatiq.Worker(self.broker, queues=names, worker_threads=concurrency, worker_timeout=200)
        # Prefetch as many jobs as there are threads (Dramatiq's default is twice as many): a job
        # waiting in one worker's prefetch while another worker is idle is a job done late.
        worker.queue_prefetch = concurrency
        worker.start()
        try:
            while not stop.wait(0.2):
                pass
        finally:
            worker.stop()
            self.broker.close()

    def close(self) -> None:
        """Close the broker's connections."""
        self.broker.close()
