"""Task queue overhead (issue 20): Dramatiq vs Celery, each over RabbitMQ and over Redis.

    .venv/bin/python bench/queue_overhead.py                      # 2,000 jobs per case
    .venv/bin/python bench/queue_overhead.py --jobs 5000 --threads 4

For each case: N jobs of a trivial task (``INCR`` of a Redis counter, the same work inline) are
enqueued by this process (the *enqueue* rate), then one worker process with T threads executes them
(the *execute* rate, from the worker's start until the counter reaches N, minus the worker's own
start-up, which is timed separately by an empty run).  The per-job overhead is the enqueue cost
plus the execute cost per job minus the inline call.  Not a test: a figure to run by hand.  Needs
``dramatiq[rabbitmq,redis]`` and ``celery`` installed, RabbitMQ at ``--amqp`` and Redis at ``--redis``.

Figures (2026-12-06, 2 shared cores, 2,000 jobs, 4 worker threads; load average ~8, then ~4):
per-job overhead Dramatiq/RabbitMQ 396 / 511 us, Dramatiq/Redis 1,201 / 1,150 us, Celery/RabbitMQ
647 / 635 us, Celery/Redis 1,363 / 1,128 us; the whole table and the choice in docs/jobs.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
REDIS = "redis://127.0.0.1:6379/0"


# -- the task, as each framework sees it (this module is also the worker's app) ----------------
_CLIENT: list[object] = []


def _counter() -> tuple[object, str]:
    """One Redis client per process (as a real task keeps its database engine)."""
    if not _CLIENT:
        import redis

        _CLIENT.append(redis.Redis.from_url(os.environ.get("QB_REDIS", REDIS)))
    return _CLIENT[0], os.environ.get("QB_KEY", "qb:none")


def work(n: int) -> None:
    client, key = _counter()
    client.incr(key)  # type: ignore[attr-defined]


FRAMEWORK = os.environ.get("QB_FRAMEWORK")
if FRAMEWORK == "dramatiq":
    import dramatiq

    if os.environ["QB_BROKER"].startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        dramatiq.set_broker(RabbitmqBroker(url=os.environ["QB_BROKER"]))
    else:
        from dramatiq.brokers.redis import RedisBroker

        dramatiq.set_broker(RedisBroker(url=os.environ["QB_BROKER"]))
    dramatiq_task = dramatiq.actor(work, queue_name=os.environ["QB_QUEUE"], actor_name="qb_work", max_retries=0)
elif FRAMEWORK == "celery":
    from celery import Celery

    app = Celery("queue_overhead", broker=os.environ["QB_BROKER"])
    app.conf.update(task_default_queue=os.environ["QB_QUEUE"], task_ignore_result=True,
                    worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
                    worker_prefetch_multiplier=32)
    celery_task = app.task(name="qb_work")(work)


def _wait(client: object, key: str, n: int, timeout: float = 300) -> float:
    start = time.perf_counter()
    while int(client.get(key) or 0) < n:  # type: ignore[attr-defined]
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out: {client.get(key)} of {n}")  # type: ignore[attr-defined]
        time.sleep(0.005)
    return time.perf_counter()


def _worker(framework: str, threads: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    here = os.path.dirname(os.path.abspath(__file__))
    if framework == "dramatiq":
        cmd = [sys.executable, "-m", "dramatiq", "queue_overhead", "--processes", "1", "--threads", str(threads),
               "--queues", env["QB_QUEUE"]]
    else:
        cmd = [sys.executable, "-m", "celery", "-A", "queue_overhead", "worker", "--pool", "threads",
               "--concurrency", str(threads), "-Q", env["QB_QUEUE"], "--loglevel", "WARNING",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(cmd, cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def case(framework: str, broker: str, jobs: int, threads: int, redis_url: str) -> dict[str, float]:
    """Enqueue ``jobs`` in a child process (the framework's import set up there), then time a worker."""
    queue = f"qb{uuid.uuid4().hex[:8]}"
    key = f"qb:{queue}"
    env = {**os.environ, "QB_FRAMEWORK": framework, "QB_BROKER": broker, "QB_QUEUE": queue, "QB_KEY": key,
           "QB_REDIS": redis_url}
    import redis

    client = redis.Redis.from_url(redis_url)
    # Enqueue: a child process so each framework's broker module is set up from a clean import.
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--enqueue", str(jobs)], env=env,
                         check=True, capture_output=True, text=True).stdout
    enqueue_s = float(out.strip().splitlines()[-1])
    # Worker start-up on its own: one job, then the rest.
    start = time.perf_counter()
    worker = _worker(framework, threads, env)
    try:
        first = _wait(client, key, 1)
        done = _wait(client, key, jobs)
    finally:
        worker.terminate()
        worker.wait(30)
        client.delete(key)
        _delete_queue(broker, queue, client)
    return {"enqueue_per_s": jobs / enqueue_s, "execute_per_s": (jobs - 1) / (done - first),
            "startup_s": first - start, "overhead_us": 1e6 * (enqueue_s / jobs + (done - first) / (jobs - 1))}


def _delete_queue(broker: str, queue: str, client: object) -> None:
    """Leave nothing behind on the brokers (each case has a queue of its own)."""
    if broker.startswith("amqp"):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(broker))
        channel = connection.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(name)
        connection.close()
    else:
        keys = list(client.scan_iter(f"*{queue}*"))  # type: ignore[attr-defined]
        if keys:
            client.delete(*keys)  # type: ignore[attr-defined]


def _enqueue(jobs: int) -> None:
    start = time.perf_counter()
    if FRAMEWORK == "dramatiq":
        for i in range(jobs):
            dramatiq_task.send(i)
    else:
        for i in range(jobs):
            celery_task.delay(i)
    print(time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--amqp", default=os.environ.get("CRM_TEST_RABBITMQ_URL", AMQP))
    parser.add_argument("--redis", default=os.environ.get("CRM_TEST_REDIS_URL", REDIS))
    parser.add_argument("--enqueue", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.enqueue:
        _enqueue(args.enqueue)
        return
    os.environ["QB_KEY"] = "qb:inline"
    client, key = _counter()
    start = time.perf_counter()
    for i in range(args.jobs):
        work(i)
    inline_us = 1e6 * (time.perf_counter() - start) / args.jobs
    client.delete(key)  # type: ignore[attr-defined]
    print(f"{args.jobs} jobs, {args.threads} worker threads, load average {os.getloadavg()[0]:.1f}")
    print(f"inline call: {inline_us:.0f} us per job")
    print(f"{'case':22} {'enqueue/s':>10} {'execute/s':>10} {'start-up s':>10} {'per job us':>11} {'x inline':>9}")
    for framework in ("dramatiq", "celery"):
        for label, url in (("rabbitmq", args.amqp), ("redis", args.redis)):
            r = case(framework, url, args.jobs, args.threads, args.redis)
            print(f"{framework + '/' + label:22} {r['enqueue_per_s']:10.0f} {r['execute_per_s']:10.0f} "
                  f"{r['startup_s']:10.2f} {r['overhead_us']:11.0f} {r['overhead_us'] / inline_us:9.1f}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
