"""Background jobs on a task queue (Dramatiq over RabbitMQ or Redis); inline without a broker.

A queue carries job ids, never state: the ``jobs`` table holds each job's kind and arguments,
and a worker claims the job in the database and runs it idempotently (see
:mod:`crmcore.jobs.engine`).  The scheduler (:mod:`crmcore.jobs.scheduler`) fires the daily jobs
once per period, however many schedulers run.
"""

from .engine import STATUSES, Jobs
from .kinds import KINDS, QUEUES, JobContext, JobKind

__all__ = ["KINDS", "QUEUES", "STATUSES", "JobContext", "JobKind", "Jobs"]
