"""Benchmark: API reads against a bare Starlette endpoint over raw sqlite3 (issue 16).

    .venv/bin/python bench/api_reads.py                       # 10,000 customers, 5 s per run, 3 rounds
    .venv/bin/python bench/api_reads.py --seconds 10 --rounds 5 --connections 8
    .venv/bin/python bench/api_reads.py --profile             # also py-spy our server (pip install py-spy)

In one run: builds a SQLite file with N customers (the CRM, every installed plugin, an admin user
``boss`` and his API token), then starts two servers, each uvicorn with one worker process:

* ours: ``crm serve`` (the full path: bearer token check, unit of work, ``authorize``, visibility,
  row -> entity -> JSON, ETag);
* the baseline: a bare Starlette app in this file (``--serve-baseline``) answering the same two URLs
  with ``sqlite3`` and ``json``: no token, no entity, one connection per worker thread.

Two endpoints: ``GET /customers/{id}`` (a random id per request) and a 100-row page (``?limit=100``
from a random position: our cursor, the baseline's ``WHERE id > ? ORDER BY id LIMIT 100``).  The
load generator is ``wrk`` (Debian package ``wrk``; one thread, ``--connections`` connections, a Lua
script picking the random URLs), or this file's asyncio + httpx client when wrk is not installed
(``--client httpx``; it needs a CPU of its own much more than wrk).  Each round runs every endpoint
against both servers, alternating which goes first.  Prints req/s and p50/p99 latency for both (the
median round), the ratio ours / baseline (goal: at least 0.5) and the load average.

With ``--profile``, py-spy samples our server during one extra run per endpoint and prints the
functions with the most samples (inclusive), our code and the libraries.

Figures (issue 16, 2026-12-06, the 2-core machine at load average 2-3; wrk 4.1 from Debian, 1 thread,
8 connections, 5 s x 3 rounds, 10,000 customers, median round):

* ``GET /customers/{id}``: ours 1,472 req/s (p50 5.0 ms, p99 50.7 ms), baseline 1,742 req/s (p50 4.4 ms,
  p99 11.3 ms): ratio 0.85 (it was 0.18 before the changes below).
* 100-row page: ours 127 req/s (p50 60.2 ms), baseline 235 req/s (p50 33.0 ms): ratio 0.54 (0.57 and 0.58
  in two runs before; it was 0.27).
* What changed: the token is checked inside the request's one unit of work (with the role, one query);
  routes run on crmcore's thread pool instead of anyio's; a SQLite point read runs on the event loop
  (threads: about 800 reads/s, the GIL changing hands under concurrency); a generated row reader, orjson
  bodies and ETags, ``fromisoformat`` for SQLite times, 16 pooled connections.
* What remains for a page (py-spy): SQLAlchemy's result processing and ours about a quarter each, the
  JSON columns' ``json.loads`` and the frozen entities' ``__init__`` about 6% each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

GOAL = 0.5
PAGE = 100


# --- the baseline: a bare Starlette app over sqlite3 -----------------------------------------------

def baseline_app(path: str) -> Any:
    """GET /customers/{id} and GET /customers?limit=&after= with raw sqlite3 and json."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    local = threading.local()

    def connection() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(path, check_same_thread=False)
            conn.row_factory = sqlite3.Row
        return conn

    def one(request: Request) -> Response:
        row = connection().execute("SELECT * FROM customers WHERE id = ?",
                                   (int(request.path_params["id"]),)).fetchone()
        if row is None:
            return Response(b'{"detail":"not found"}', 404, media_type="application/json")
        return Response(json.dumps(dict(row)), media_type="application/json")

    def page(request: Request) -> Response:
        limit = min(int(request.query_params.get("limit", "50")), 500)
        after = int(request.query_params.get("after", "0"))
        rows = connection().execute("SELECT * FROM customers WHERE id > ? ORDER BY id LIMIT ?",
                                    (after, limit)).fetchall()
        return Response(json.dumps({"items": [dict(r) for r in rows]}), media_type="application/json")

    # Plain functions: Starlette runs them in its thread pool, as FastAPI runs our routes.
    return Starlette(routes=[Route("/customers/{id:int}", one), Route("/customers", page)])


def serve_baseline(path: str, port: int) -> None:
    import uvicorn

    uvicorn.run(baseline_app(path), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- set-up ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def build(directory: Path, customers: int) -> tuple[Path, str, list[int]]:
    """The database and crm.toml; returns the config file, boss's token and the customer ids."""
    from crmcore import CRM
    from crmcore.config import Config

    config = directory / "crm.toml"
    config.write_text(f'database_url = "sqlite:///{directory / "crm.db"}"\ndefault_user = "boss"\n')
    crm = CRM.open(config=Config.load(config))
    crm.users.add("boss", role="admin")
    countries = ["DE", "CN", "US", "BR", "IN", "FR"]
    crm.customers.add_many({"name": f"Customer {i}", "email": f"c{i}@example.com", "country": countries[i % 6],
                            "city": "Springfield", "industry": "retail", "tags": ["bench"],
                            "external_id": f"ext-{i}"} for i in range(customers))
    token = crm.tokens.create("boss", "bench")[1]
    ids = sorted(c.id for c in crm.customers.list())
    crm.close()
    return config, token, ids


def wait_until_up(base: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            httpx.get(base + "/customers/1", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{base} did not answer in 60 s")


# --- load generators -----------------------------------------------------------------------------------

def wrk_script(urls: list[str], token: str | None) -> str:
    """A wrk Lua script sending a random one of ``urls`` per request."""
    table = ",".join(f'"{u}"' for u in urls)
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    return (f"local urls = {{{table}}}\n{auth}"
            "math.randomseed(42)\n"
            "request = function()\n  return wrk.format(\"GET\", urls[math.random(#urls)])\nend\n")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(base: str, urls: list[str], token: str | None, seconds: int, connections: int,
            directory: Path) -> dict[str, float]:
    script = directory / "urls.lua"
    script.write_text(wrk_script(urls, token))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          base], capture_output=True, text=True, check=True).stdout
    found = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
             "p50": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
             "p99": _ms(re.search(r"\s99%\s+(\S+)", out).group(1))}  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    found["errors"] = float(bad.group(1)) if bad else 0.0
    if errors:
        found["errors"] += sum(int(n) for n in re.findall(r"\d+", errors.group(1)))
    return found


def run_httpx(base: str, urls: list[str], token: str | None, seconds: int, connections: int,
              directory: Path) -> dict[str, float]:
    import httpx

    async def main() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
            stop = time.perf_counter() + seconds
            rng = random.Random(42)

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    start = time.perf_counter()
                    try:
                        response = await client.get(rng.choice(urls))
                        errors += response.status_code >= 300
                    except httpx.HTTPError:
                        errors += 1
                    latencies.append((time.perf_counter() - start) * 1000)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        latencies.sort()
        return {"rps": len(latencies) / elapsed, "p50": latencies[len(latencies) // 2],
                "p99": latencies[int(len(latencies) * 0.99)], "errors": float(errors)}

    return asyncio.run(main())


# --- profiling -----------------------------------------------------------------------------------------

def profile(pid: int, seconds: int, directory: Path,
            load: Any) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """py-spy samples of ``pid`` while ``load()`` runs: the functions with the most busy samples
    (inclusive, ours and the request path's libraries) and the leaf functions (self time)."""
    out = directory / "profile.txt"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    spy = subprocess.Popen([py_spy, "record", "--subprocesses", "-p", str(pid), "-d", str(seconds + 1), "-r", "200",
                            "-f", "raw", "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load()
    spy.wait()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in _IDLE):
            continue  # a worker thread waiting for work or the event loop waiting for a socket
        n = int(count)
        total += n
        leaf[frames[-1]] += n
        for frame in set(frames):
            if any(part in frame for part in _SHOWN):
                inclusive[frame] += n
    if not total:
        return [], []
    return ([(frame, n / total) for frame, n in inclusive.most_common(25)],
            [(frame, n / total) for frame, n in leaf.most_common(12)])


#: Leaf frames of an idle thread.
_IDLE = ("Condition.wait", "Queue.get", ".select (selectors.py", "_run_once (asyncio/base_events.py")
#: Frames worth listing: ours and the libraries a request passes through.
_SHOWN = ("crmcore/", "sqlalchemy/", "fastapi/", "starlette/", "pydantic", "json/", "uvicorn/protocols", "anyio/")


# --- the run -------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--serve-baseline", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline[0], int(args.serve_baseline[1]))
        return

    directory = Path(tempfile.mkdtemp(prefix="crm-api-reads-"))
    print(f"building {args.customers:,} customers in {directory} ...", flush=True)
    config, token, ids = build(directory, args.customers)
    rng = random.Random(7)
    sample = [rng.choice(ids) for _ in range(500)]
    starts = sorted(rng.choice(ids[:-PAGE]) for _ in range(200))

    from crmcore.web.encoding import encode_cursor

    ours_port, base_port = free_port(), free_port()
    env = {**os.environ, "CRM_USER": "boss"}
    ours = subprocess.Popen([sys.executable, "-m", "crmcore.cli", "--config", str(config), "serve", "--port",
                             str(ours_port), "--workers", "1", "--log-level", "warning"], env=env, cwd=directory)
    baseline = subprocess.Popen([sys.executable, __file__, "--serve-baseline", str(directory / "crm.db"),
                                 str(base_port)], cwd=directory)
    servers = {"ours": (f"http://127.0.0.1:{ours_port}", token), "baseline": (f"http://127.0.0.1:{base_port}", None)}
    endpoints = {
        "GET /customers/{id}": {"ours": [f"/customers/{i}" for i in sample],
                                "baseline": [f"/customers/{i}" for i in sample]},
        f"page of {PAGE}": {"ours": [f"/customers?limit={PAGE}&cursor={encode_cursor(s, s)}" for s in starts],
                            "baseline": [f"/customers?limit={PAGE}&after={s}" for s in starts]},
    }
    run = run_wrk if args.client == "wrk" else run_httpx
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        for base, _ in servers.values():
            wait_until_up(base, ours if base.endswith(str(ours_port)) else baseline)
        for endpoint, urls in endpoints.items():  # warm up both (imports, caches, page cache)
            for side, (base, tok) in servers.items():
                run(base, urls[side], tok, 1, args.connections, directory)
        for round_ in range(args.rounds):
            order = ["ours", "baseline"] if round_ % 2 == 0 else ["baseline", "ours"]
            for endpoint, urls in endpoints.items():
                for side in order:
                    base, tok = servers[side]
                    found = run(base, urls[side], tok, args.seconds, args.connections, directory)
                    results.setdefault((endpoint, side), []).append(found)
                    print(f"  round {round_ + 1} {endpoint:22} {side:8} {found['rps']:8.0f} req/s  "
                          f"p50 {found['p50']:7.2f} ms  p99 {found['p99']:7.2f} ms  errors {found['errors']:.0f}",
                          flush=True)
        print(f"\nclient {args.client}, {args.connections} connections, {args.seconds} s x {args.rounds} rounds, "
              f"{args.customers:,} customers, load average {os.getloadavg()[0]:.1f} "
              f"{os.getloadavg()[1]:.1f} {os.getloadavg()[2]:.1f} ({os.cpu_count()} CPUs)")
        for endpoint in endpoints:
            line = []
            rps = {}
            for side in ("ours", "baseline"):
                runs = sorted(results[(endpoint, side)], key=lambda r: r["rps"])
                mid = runs[len(runs) // 2]
                rps[side] = mid["rps"]
                line.append(f"{side} {mid['rps']:6.0f} req/s p50 {mid['p50']:6.2f} ms p99 {mid['p99']:6.2f} ms")
            ratio = rps["ours"] / rps["baseline"]
            print(f"{endpoint:22} {' | '.join(line)} | ratio {ratio:.2f} "
                  f"({'meets' if ratio >= GOAL else 'misses'} the goal {GOAL})")
        if args.profile:
            for endpoint, urls in endpoints.items():
                base, tok = servers["ours"]
                top, leaves = profile(ours.pid, args.seconds, directory,
                                      lambda: run(base, urls["ours"], tok, args.seconds, args.connections, directory))
                print(f"\nprofile of ours, {endpoint}: share of busy samples, inclusive:")
                for frame, share in top:
                    print(f"  {share:6.1%}  {frame[:150]}")
                print("self (leaf functions):")
                for frame, share in leaves:
                    print(f"  {share:6.1%}  {frame[:150]}")
    finally:
        for process in (ours, baseline):
            process.terminate()
            process.wait(timeout=15)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
