"""Simulated hosts for the job tests: network namespaces joined to this one by veth pairs.

Each :class:`Host` is a network namespace with its own veth pair on a private /24 and its own
hostname (a UTS namespace per process started there, so ``crm worker`` names itself
``HOST:PID`` as on a separate machine).  The servers of the test machine listen on 127.0.0.1
only, so a ``socat`` proxy per host and port, bound to the root side of that host's veth pair,
forwards to them: the workers reach PostgreSQL, RabbitMQ and the SMTP sink over the virtual
network.  :class:`Network` removes every namespace, link and proxy it made, also when the test
fails.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pytest

WAIT_S = 30


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S)


def require_netns() -> None:
    """Skip with the reason unless this process may make network namespaces and proxies (fail
    instead under CRM_REQUIRE_SERVERS: CI's machine has them, and must not skip)."""
    if os.geteuid() != 0:
        _unavailable("network namespaces need root")
    for tool in ("ip", "socat", "unshare"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed: no simulated hosts")


def _unavailable(reason: str) -> None:
    if os.environ.get("CRM_REQUIRE_SERVERS"):
        pytest.fail(f"CRM_REQUIRE_SERVERS is set but the several-hosts test cannot run: {reason}")
    pytest.skip(reason)


class Host:
    """One simulated host: namespace ``ns``, its address ``address``, the root side's ``gateway``."""

    def __init__(self, name: str, tag: str, subnet: int):
        self.name = name
        self.ns = f"crm{tag}{name}"
        self.outer, self.inner = f"cv{tag}{name}0", f"cv{tag}{name}1"
        self.gateway, self.address = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
        self.proxies: list[subprocess.Popen[bytes]] = []

    def create(self) -> None:
        made = _run("ip", "netns", "add", self.ns)
        if made.returncode != 0:
            pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
        for command in (
            ("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner),
            ("ip", "link", "set", self.inner, "netns", self.ns),
            ("ip", "addr", "add", f"{self.gateway}/24", "dev", self.outer),
            ("ip", "link", "set", self.outer, "up"),
            ("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.address}/24", "dev", self.inner),
            ("ip", "netns", "exec", self.ns, "ip", "link", "set", self.inner, "up"),
            ("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up"),
        ):
            done = _run(*command)
            assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"

    def forward(self, port: int) -> None:
        """Forward ``gateway:port`` (reached from the host over its veth) to ``127.0.0.1:port``."""
        self.proxies.append(subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={self.gateway},reuseaddr,fork", f"TCP:127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                socket.create_connection((self.gateway, port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, f"socat did not listen on {self.gateway}:{port}"
                time.sleep(0.02)

    def start(self, command: list[str], **popen: object) -> subprocess.Popen[bytes]:
        """Run ``command`` on this host: in its namespace, under its own hostname."""
        wrapped = ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c",
                   f'hostname {self.hostname} && exec "$@"', "sh", *command]
        return subprocess.Popen(wrapped, **popen)  # type: ignore[call-overload]

    @property
    def hostname(self) -> str:
        return f"crm-host-{self.name}-{self.ns[3:7]}"

    def pids(self) -> list[int]:
        done = _run("ip", "netns", "pids", self.ns)
        return [int(p) for p in done.stdout.split()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process in the namespace (the host "crashes"); returns their pids."""
        pids = self.pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return pids

    def destroy(self) -> None:
        self.kill_all()
        for proxy in self.proxies:
            proxy.terminate()
            try:
                proxy.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                proxy.kill()
        _run("ip", "link", "del", self.outer)
        _run("ip", "netns", "del", self.ns)


class Network:
    """Hosts on their own subnets, removed (with their proxies) on :meth:`close`."""

    def __init__(self, names: list[str]):
        require_netns()
        tag = uuid.uuid4().hex[:4]
        subnets = random.sample(range(10, 250), len(names))
        self.hosts = [Host(name, tag, subnet) for name, subnet in zip(names, subnets)]
        self.made: list[Host] = []

    def create(self, ports: list[int]) -> list[Host]:
        for host in self.hosts:
            self.made.append(host)
            host.create()
            for port in ports:
                host.forward(port)
        return self.hosts

    def close(self) -> None:
        for host in self.made:
            host.destroy()
