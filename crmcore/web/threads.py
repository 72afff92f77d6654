"""Where the API's synchronous work runs: :func:`run_sync`, a pool of worker threads.

The services are synchronous SQLAlchemy code, so every route hands its work to a
worker thread.  Starlette's own hand-off (anyio's ``to_thread``, a capacity
limiter and a cancel scope per call) cost the event loop more than a point read
costs the database: under eight concurrent clients it was a third of the
server's time.  ``loop.run_in_executor`` on a fixed pool does the same job with
a fraction of the bookkeeping, and the pool is as large as the engine's
connection pool, so a request never waits for a connection another thread holds.
Long jobs (an upload's import) keep Starlette's separate pool and cannot starve
the reads.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from ..store.engine import POOL_SIZE

P = ParamSpec("P")
R = TypeVar("R")

_EXECUTOR = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="crm-api")


async def run_sync(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` in a worker thread, in a copy of the caller's context (its acting
    user and bearer token)."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_EXECUTOR, call)


def on_worker_thread(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """An ``async`` route function running the synchronous ``endpoint`` through :func:`run_sync`
    (FastAPI reads the parameters of ``endpoint`` itself, through ``__wrapped__``)."""

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_sync(endpoint, *args, **kwargs)

    return run
