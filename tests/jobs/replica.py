"""A PostgreSQL streaming replica of the test server, started by the test that needs it.

``pg_basebackup -R -X stream`` copies the primary (the server of CRM_TEST_POSTGRES_URL) into a
temporary directory and writes ``standby.signal`` with the primary's connection; ``pg_ctl``
starts it on a free port as the ``postgres`` OS user (PostgreSQL refuses to run as root).  The
primary must accept replication connections: ``wal_level`` ``replica`` or ``logical``,
``max_wal_senders`` > 0, and a ``pg_hba.conf`` line such as
``host replication all 127.0.0.1/32 trust``; otherwise the test skips saying which is missing
(and fails under CRM_REQUIRE_SERVERS, as every server test does).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from crmcore.store.engine import make_engine

#: Settings a hot standby must have at least as high as its primary's (else recovery stops).
MATCHED = ("max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions",
           "max_locks_per_transaction")
WAIT_S = 60


def _unavailable(reason: str) -> None:
    if os.environ.get("CRM_REQUIRE_SERVERS"):
        pytest.fail(f"CRM_REQUIRE_SERVERS is set but the read-replica test cannot run: {reason}")
    pytest.skip(reason)


def _bindir() -> Path:
    """The directory of the server's own binaries (pg_ctl, postgres)."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "pg_ctl").exists():
            return candidate
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    _unavailable("no PostgreSQL server binaries (pg_ctl) on this machine to start a replica")
    raise AssertionError  # unreachable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Replica:
    """A running streaming replica of ``primary_url``; :attr:`url` reaches the same database on it."""

    def __init__(self, primary_url: str):
        self.primary_url = primary_url
        self.primary = make_engine(primary_url, isolation_level="AUTOCOMMIT")
        self.bindir = _bindir()
        self.port = free_port()
        self.url = make_url(primary_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        self.directory = Path(tempfile.mkdtemp(prefix="crm-replica-"))
        self.os_user = "postgres" if os.geteuid() == 0 else None
        self.engine = None

    # -- starting and stopping -------------------------------------------------------------------
    def start(self) -> Replica:
        settings = self._check_primary()
        self._base_backup()
        lines = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                 f"unix_socket_directories = '{self.directory}'", "hot_standby = on", "fsync = off",
                 "shared_buffers = 32MB", *(f"{name} = {value}" for name, value in settings.items())]
        (self.directory / "postgresql.conf").write_text("\n".join(lines) + "\n")
        (self.directory / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        (self.directory / "pg_ident.conf").write_text("")
        self._own()
        self._pg_ctl("start", "-w", "-t", str(WAIT_S), "-l", str(self.directory / "server.log"))
        self.engine = make_engine(self.url, isolation_level="AUTOCOMMIT")
        return self

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if (self.directory / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate", check=False)
        self.primary.dispose()
        shutil.rmtree(self.directory, ignore_errors=True)

    def _check_primary(self) -> dict[str, str]:
        with self.primary.connect() as conn:
            level = conn.exec_driver_sql("SHOW wal_level").scalar_one()
            senders = int(conn.exec_driver_sql("SHOW max_wal_senders").scalar_one())
            settings = {name: conn.exec_driver_sql(f"SHOW {name}").scalar_one() for name in MATCHED}
        if level not in ("replica", "logical") or senders < 1:
            _unavailable(f"the primary does not allow replication (wal_level={level}, max_wal_senders={senders})")
        return settings

    def _base_backup(self) -> None:
        primary = make_url(self.primary_url)
        command = ["pg_basebackup", "-h", primary.host or "127.0.0.1", "-p", str(primary.port or 5432),
                   "-U", primary.username or "postgres", "-D", str(self.directory), "-R", "-X", "stream",
                   "-c", "fast"]
        if shutil.which("pg_basebackup") is None:
            command[0] = str(self.bindir / "pg_basebackup")
        env = dict(os.environ, PGPASSWORD=primary.password or "")
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "no message"
            if "replication connection" in reason or "pg_hba" in reason:
                _unavailable(f"the primary refuses replication connections ({reason}); add "
                             "'host replication all 127.0.0.1/32 trust' to its pg_hba.conf and reload")
            raise AssertionError(f"pg_basebackup failed: {done.stderr}")

    def _own(self) -> None:
        self.directory.chmod(0o700)
        if self.os_user is None:
            return
        user = pwd.getpwnam(self.os_user)
        for path in [self.directory, *self.directory.rglob("*")]:
            os.lchown(path, user.pw_uid, user.pw_gid)

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        command = [str(self.bindir / "pg_ctl"), "-D", str(self.directory), *args]
        if self.os_user is not None:
            command = ["runuser", "-u", self.os_user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S + 30)
        if check and done.returncode != 0:
            log = self.directory / "server.log"
            raise AssertionError(f"pg_ctl {args[0]} failed: {done.stderr}\n"
                                 f"{log.read_text() if log.exists() else ''}")

    # -- replication -------------------------------------------------------------------------------
    def catch_up(self) -> None:
        """Wait until the replica has replayed everything the primary wrote so far."""
        with self.primary.connect() as conn:
            lsn = conn.exec_driver_sql("SELECT pg_current_wal_lsn()").scalar_one()
        deadline = time.monotonic() + WAIT_S
        while True:
            with self.engine.connect() as conn:
                if conn.execute(text("SELECT pg_last_wal_replay_lsn() >= CAST(:lsn AS pg_lsn)"),
                                {"lsn": lsn}).scalar_one():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the replica did not replay up to {lsn} in {WAIT_S} s")
            time.sleep(0.05)

    def pause(self) -> None:
        """Stop replaying (the replica keeps receiving WAL but shows the data as of now)."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_pause()")
            deadline = time.monotonic() + WAIT_S
            while conn.exec_driver_sql("SELECT pg_get_wal_replay_pause_state()").scalar_one() != "paused":
                assert time.monotonic() < deadline, "the replica did not pause its replay"
                time.sleep(0.02)

    def resume(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_resume()")
