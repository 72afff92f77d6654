"""A real ``crm serve`` (uvicorn) process on a free loopback port, per database.

``api`` is module-scoped and parametrised over SQLite, PostgreSQL and MariaDB
(servers skip without their URLs, as everywhere): one server per test module
and database, shared by the module's tests, so tests create the records they
need instead of assuming an empty database.  ``api.client(user)`` is an httpx
client sending that user's token; ``api.crm`` is the same CRM opened in the
test process (for checking what the API wrote, and as ``system`` for set-up).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from crmcore import CRM
from crmcore.config import Config
from crmcore.testing import reset_database, server_url

#: Users every API test server has, by role.
USERS = {"ann": "admin", "max": "manager", "rita": "sales-rep", "sam": "service-agent", "otto": "read-only"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Api:
    """A running API server and what a test needs to talk to it."""

    def __init__(self, base_url: str, crm: CRM, tokens: dict[str, str], directory: Path):
        self.base_url, self.crm, self.tokens, self.directory = base_url, crm, tokens, directory
        self._clients: list[httpx.Client] = []

    def client(self, user: str | None = "ann", **kwargs: Any) -> httpx.Client:
        """An httpx client for the server; with ``user``, it sends that user's token."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        headers.update(kwargs.pop("headers", {}))
        client = httpx.Client(base_url=self.base_url, headers=headers, timeout=30, **kwargs)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


def start_server(directory: Path, config_file: Path, extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``crm serve`` and wait until it answers ``/health``."""
    port = free_port()
    log = open(directory / "serve.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "crmcore.cli", "--config", str(config_file), "serve", "--port", str(port),
         "--log-level", "warning", *extra_args],
        cwd=directory, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "CRM_USER": "ann"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"crm serve exited: {(directory / 'serve.log').read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"crm serve did not answer in 60 s: {(directory / 'serve.log').read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def write_config(directory: Path, url: str, extra_toml: str = "") -> Path:
    path = directory / "crm.toml"
    path.write_text(f'database_url = "{url}"\ndefault_user = "ann"\n{extra_toml}', encoding="utf-8")
    return path


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def api_db_url(request: Any, tmp_path_factory: Any) -> str:
    """A fresh database for one test module's API server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('api') / 'crm.db'}"
    url = server_url(request.param)
    reset_database(url)
    return url


#: Extra crm.toml text a test module's server gets: set ``API_TOML = "..."`` in the module.
def _module_toml(request: Any) -> str:
    return getattr(request.module, "API_TOML", "")


@pytest.fixture(scope="module")
def api(api_db_url: str, tmp_path_factory: Any, request: Any) -> Iterator[Api]:
    """A ``crm serve`` process on ``api_db_url`` with the users of :data:`USERS`, each with a token."""
    directory = tmp_path_factory.mktemp("serve")
    config_file = write_config(directory, api_db_url, _module_toml(request))
    crm = CRM.open(config=Config.load(config_file))
    tokens = {}
    for login, role in USERS.items():
        crm.users.add(login, role=role)
    for login in USERS:
        tokens[login] = crm.tokens.create(login, "tests")[1]
    process, base = start_server(directory, config_file)
    server = Api(base, crm, tokens, directory)
    try:
        yield server
    finally:
        server.close()
        stop_server(process)
        crm.close()
