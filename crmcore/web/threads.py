"""Where the API's synchronous work runs: :func:`run_sync`, a pool of worker threads.

The services are synchronous SQLAlchemy code, so every route hands its work to a
worker thread.  Starlette's own hand-off (anyio's ``to_thread``, a capacity
limiter and a cancel scope per call) cost the event loop more than a point read
costs the database: under eight concurrent clients it was a third of the
server's time.  ``loop.run_in_executor`` on a fixed pool does the same job with
a fraction of the bookkeeping, and the pool is as large as the engine's
connection pool, so a request never waits for a connection another thread holds.
Long jobs (an upload's import) keep Starlette's separate pool and cannot starve
the reads.  A point read on SQLite skips the hand-off altogether
(:func:`run_point_read`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..store.engine import POOL_SIZE

if TYPE_CHECKING:
    from ..app import CRM

P = ParamSpec("P")
R = TypeVar("R")

_EXECUTOR = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="crm-api")


async def run_sync(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` in a worker thread, in a copy of the caller's context (its acting
    user and bearer token)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, call)


async def run_point_read(crm: "CRM", fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """A point read (one record by id): on the event loop itself when the database is SQLite,
    else :func:`run_sync`.

    On SQLite a point read is a few hundred microseconds of Python holding the GIL and one
    indexed lookup that never waits for a lock (WAL: readers never wait for the writer), and
    the hand-off to a thread and back cost more than that: with eight concurrent clients the
    event loop spent most of its time waking worker threads and waiting to get the GIL back
    (about 800 reads/s in threads, 1,800 on the loop).  A server database answers over the
    network, so there the read keeps its thread.  Hooks a point read calls (``authorize``,
    ``visibility``) then run on the event loop: they must not wait on the network.
    """
    if crm.engine.dialect.name == "sqlite":
        return fn(*args, **kwargs)
    return await run_sync(fn, *args, **kwargs)


def on_worker_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """An ``async`` route function running the synchronous ``endpoint`` through :func:`run_sync`
    (FastAPI reads the parameters of ``endpoint`` itself, through ``__wrapped__``)."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_sync(endpoint, *args, **kwargs)

    return run
