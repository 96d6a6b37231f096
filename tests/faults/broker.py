"""A three-node RabbitMQ cluster of the suite's own, on this one machine.

Every node has its own name (``blume-chaos-<run>-<n>@localhost``), AMQP and distribution
ports, mnesia and log directories, config, env and enabled-plugins files, all under the
run's temporary directory, so the shared node on 5672 and its users are never touched.
The nodes use the shared node's Erlang cookie, so that an operator's plain
``rabbitmqctl -n <node>`` reaches them too. The broker faults are methods here:
``stop_app``/``start_app``, a full stop and start of the node's VM, and SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

from tests.faults.processes import FaultSuiteError, free_port, run_tool, spawn

SHARED_COOKIES: Final = (Path("/var/lib/rabbitmq/.erlang.cookie"), Path.home() / ".erlang.cookie")
"""Where the shared node's cookie lives on a Debian install, then a per-user install."""
CTL_TIMEOUT: Final = 90.0
STARTUP_TIMEOUT: Final = 180.0


def rabbitmq_bin_dir(explicit: Path | None) -> Path:
    """The directory of the real ``rabbitmq-server`` and ``rabbitmqctl`` scripts.

    Debian's ``/usr/sbin`` wrappers switch to the ``rabbitmq`` user and its home, which
    would run the nodes as another user than the one that owns the temporary directory.
    """
    candidates = [explicit] if explicit else [Path("/usr/lib/rabbitmq/bin")]
    if not explicit and (found := shutil.which("rabbitmq-server")):
        candidates.append(Path(found).resolve().parent)
    for candidate in candidates:
        if candidate is not None and (candidate / "rabbitmq-server").exists():
            return candidate
    raise FaultSuiteError("rabbitmq-server not found: install RabbitMQ or pass --rabbitmq-bin")


def erlang_cookie(explicit: Path | None) -> str:
    for path in [explicit] if explicit else SHARED_COOKIES:
        try:
            if path is not None:
                return path.read_text().strip()
        except OSError:
            continue
    # No shared node on this machine: any cookie will do, as long as all three share it.
    return secrets.token_hex(20)


@dataclass
class RabbitNode:
    number: int
    name: str
    amqp_port: int
    dist_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.home / "rabbitmq.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "console.log"


class RabbitCluster:
    """Three RabbitMQ nodes joined into one cluster, and the faults that can befall them."""

    def __init__(
        self, workdir: Path, run_tag: str, bin_dir: Path, cookie: str, size: int = 3
    ) -> None:
        self._bin = bin_dir
        self._home = workdir / "rabbitmq"
        self._cookie_home = self._home / "erlang-home"
        self.user = "blume-chaos"
        self.vhost = "/"
        """The vhost the system runs in: ``/``, or the one the broker definitions name."""
        self.password = secrets.token_hex(24)  # never starts with '-'
        self.nodes = [
            RabbitNode(
                number=n,
                name=f"blume-chaos-{run_tag}-{n}@localhost",
                amqp_port=free_port(),
                dist_port=free_port(),
                home=self._home / f"node{n}",
            )
            for n in range(1, size + 1)
        ]
        self._cookie = cookie

    # ------------------------------------------------------------------ set-up

    def _write_files(self, node: RabbitNode) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        (node.home / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}",
                    "cluster_partition_handling = pause_minority",
                    f"default_user = {self.user}",
                    f"default_pass = {self.password}",
                    "default_user_tags.administrator = true",
                    "loopback_users = none",
                    "",
                ]
            )
        )
        (node.home / "enabled_plugins").write_text("[].\n")
        (node.home / "rabbitmq-env.conf").write_text("")  # never the system-wide one

    def environment(self, node: RabbitNode) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("RABBITMQ_")}
        env.update(
            HOME=str(self._cookie_home),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_NODENAME=node.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(node.amqp_port),
            RABBITMQ_DIST_PORT=str(node.dist_port),
            RABBITMQ_MNESIA_BASE=str(node.home / "mnesia"),
            RABBITMQ_LOG_BASE=str(node.home / "log"),
            RABBITMQ_PID_FILE=str(node.pid_file),
            RABBITMQ_CONFIG_FILE=str(node.home / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(node.home / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(node.home / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(node.home / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def start(self) -> None:
        """Start every node, join nodes 2..n to node 1, and wait until all run."""
        self._cookie_home.mkdir(parents=True, exist_ok=True)
        cookie_file = self._cookie_home / ".erlang.cookie"
        cookie_file.write_text(self._cookie)
        cookie_file.chmod(0o400)
        for node in self.nodes:
            self._write_files(node)
            self._spawn(node)
        for node in self.nodes:
            self.await_startup(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
            self.await_startup(node)

    def _spawn(self, node: RabbitNode) -> None:
        node.process = spawn(
            [str(self._bin / "rabbitmq-server")], self.environment(node), node.log_file
        )

    # ------------------------------------------------------------------ control

    def ctl(self, node: RabbitNode, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        return self._tool("rabbitmqctl", node, *args, timeout=timeout)

    def _tool(self, tool: str, node: RabbitNode, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        command = [str(self._bin / tool), "-n", node.name, *args]
        label = f"{tool} -n {node.name} {args[0] if args else ''}"
        return run_tool(command, label=label, timeout=timeout, env=self.environment(node))

    def await_startup(self, node: RabbitNode, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ctl(node, "await_startup", "--timeout", "10", timeout=30)
                return
            except (FaultSuiteError, subprocess.TimeoutExpired) as error:
                if node.process is not None and node.process.poll() is not None:
                    raise FaultSuiteError(
                        f"{node.name} exited: see {node.log_file} and {node.home / 'log'}"
                    ) from error
                if time.monotonic() > deadline:
                    raise FaultSuiteError(f"{node.name} did not start: {error}") from error
                time.sleep(1)

    def stop_app(self, node: RabbitNode) -> None:
        self.ctl(node, "stop_app")

    def start_app(self, node: RabbitNode) -> None:
        self.ctl(node, "start_app")
        self.await_startup(node)

    def stop_node(self, node: RabbitNode) -> None:
        """Stop the node's whole Erlang VM and wait for its process to end."""
        self.ctl(node, "stop")
        if node.process is not None:
            node.process.wait(timeout=CTL_TIMEOUT)

    def start_node(self, node: RabbitNode) -> None:
        """Start a stopped or killed node again; it rejoins the cluster from its own mnesia."""
        self._spawn(node)
        self.await_startup(node)

    def kill_node(self, node: RabbitNode) -> None:
        """SIGKILL the node's VM: no clean close of any connection, queue or file."""
        pid = int(node.pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            node.process.wait(timeout=CTL_TIMEOUT)

    def rebalance_quorum_leaders(self, via: RabbitNode) -> None:
        """Spread quorum-queue leaders over the nodes, so that one node's loss takes some."""
        self._tool(
            "rabbitmq-queues",
            via,
            "rebalance",
            "quorum",
            "--vhost-pattern",
            f"^{re.escape(self.vhost)}$",
        )

    def amqp_url(self, node: RabbitNode, user: str = "", password: str = "") -> str:
        """The node's URL for ``user`` (default: the suite's own administrator)."""
        user, password = (user, password) if user else (self.user, self.password)
        vhost = "" if self.vhost == "/" else quote(self.vhost, safe="")
        return f"amqp://{quote(user)}:{quote(password)}@127.0.0.1:{node.amqp_port}/{vhost}"

    def queue_table(self, via: RabbitNode, *columns: str) -> list[list[str]]:
        """``rabbitmqctl list_queues`` rows (name first), asked of a node that is up."""
        out = self.ctl(
            via, "list_queues", "-p", self.vhost, "-q", "--no-table-headers", "name", *columns
        )
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def live_consumers(self, via: RabbitNode) -> dict[str, int]:
        """Consumers per queue whose channel still exists.

        A quorum queue keeps the consumers of a node that went down (``suspected_down``)
        until it learns their fate, so a bare consumer count can still show a worker that
        lost its connection; a consumer counts here only if its channel is alive.
        """
        channels = set(self.ctl(via, "list_channels", "-q", "--no-table-headers", "pid").split())
        rows = self.ctl(
            via, "list_consumers", "-p", self.vhost, "-q", "--no-table-headers", "queue_name",
            "channel_pid",
        )  # fmt: skip
        counts: dict[str, int] = {}
        for line in rows.splitlines():
            queue, _, channel = line.partition("\t")
            if channel.strip() in channels:
                counts[queue] = counts.get(queue, 0) + 1
        return counts

    def stop(self) -> None:
        """Tear every node down (used on exit): a clean stop first, SIGKILL if it hangs."""
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            try:
                self.ctl(node, "stop", timeout=30)
                node.process.wait(timeout=30)
            except (FaultSuiteError, subprocess.TimeoutExpired, OSError):
                self._kill_quietly(node)

    def _kill_quietly(self, node: RabbitNode) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(node.pid_file.read_text().strip()), signal.SIGKILL)
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
