"""A running job's heartbeat: the worker renews ``jobs.heartbeat_at`` while the job runs.

Another worker takes a running job over only when it has been silent for a whole ``[jobs] lease``
(:meth:`crmcore.jobs.Jobs.execute`), so the lease measures silence, not the job's length: a short
lease finds a lost host's jobs quickly, and a long import is not taken over while it runs.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy import update

from ..store import tables

if TYPE_CHECKING:
    from ..app import CRM

log = logging.getLogger("crmcore.jobs")
#: The shortest time between two beats (a lease of one second beats this often).
MIN_INTERVAL_S = 0.3


class Heartbeat:
    """``with Heartbeat(crm, job_id, worker, lease):`` renews the job's ``heartbeat_at`` every third
    of ``lease`` in a thread of its own, while the job is this worker's and running."""

    def __init__(self, crm: CRM, job_id: int, worker: str, lease: timedelta):
        self.crm, self.job_id, self.worker = crm, job_id, worker
        self.interval = max(lease.total_seconds() / 3, MIN_INTERVAL_S)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"crm-job-{job_id}-heartbeat", daemon=True)
        self.beats = 0

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop.set()
        self.thread.join()

    def _run(self) -> None:
        jobs = tables.jobs
        while not self.stop.wait(self.interval):
            try:  # a plain transaction: bookkeeping, not a use case (no audit record per beat)
                with self.crm.engine.begin() as conn:
                    conn.execute(update(jobs).where(jobs.c.id == self.job_id, jobs.c.worker == self.worker,
                                                    jobs.c.status == "running").values(heartbeat_at=self.crm.clock()))
                self.beats += 1
            except Exception:  # the database away for a moment: the next beat tries again
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
