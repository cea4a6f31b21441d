"""A Redis Cluster and a Sentinel set made of real processes on free loopback ports.

``RedisCluster`` starts cluster-enabled ``redis-server`` processes and joins
them with ``redis-cli --cluster create``; ``SentinelSet`` starts a primary, a
replica and three sentinels watching them. Used by ``tests/`` and
``benchmarks/cluster.py``; every process is stopped by its pid.
"""

import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, List, Optional

from redis_server import RedisServer, free_port, server_version

import resp

REDIS_CLI = os.environ.get("REDIS_CLI", "redis-cli")
#: A primary waits 5 s before a diskless full sync by default (for more
#: replicas to join it); the tests have no time to lose.
NO_SYNC_DELAY = ["--repl-diskless-sync-delay", "0"]


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``check`` until it is true; ``RuntimeError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (resp.RespError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _info(client: resp.Client, section: str) -> Dict[str, str]:
    text = client.execute("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def scaling_out_examples() -> List[str]:
    """The Python examples of README's "Scaling out" section, in order."""
    readme = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
    with open(readme, encoding="utf-8") as file:
        text = file.read()
    section = text[text.index("\n## Scaling out\n"):]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def run_example(code: str, ports: Dict[int, int]) -> List[str]:
    """Run an example with its port numbers replaced; return what it printed."""
    for old, new in ports.items():
        code = re.sub(rf"\b{old}\b", str(new), code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    return out.getvalue().splitlines()


class RedisCluster:
    """``primaries`` cluster primaries, each with ``replicas`` replicas.

    ``nodes`` are ``RedisServer`` objects; ``client(name)`` is a plain client
    to one node (for ``CLUSTER`` admin commands) and ``url`` the seed URL.
    """

    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 3000) -> None:
        self.primaries = primaries
        self.replicas = replicas
        self.nodes: List[RedisServer] = []
        # The bus port defaults to port + 10000, which may be taken or past
        # 65535: Redis 7 takes a free port of its own, older servers get a
        # port whose bus port is free.
        own_bus_port = int(server_version().split(".")[0]) >= 7
        for _ in range(primaries * (1 + replicas)):
            server = RedisServer(port=None if own_bus_port else _port_with_free_bus())
            server.args += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", os.path.join(server.dir, "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
                *NO_SYNC_DELAY,
            ]
            if own_bus_port:
                server.args += ["--cluster-port", str(free_port())]
            self.nodes.append(server)
        self._clients: Dict[int, resp.Client] = {}

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def client(self, port: int) -> resp.Client:
        """A plain ``resp.Client`` to the node on ``port`` (kept open)."""
        if port not in self._clients:
            self._clients[port] = resp.Client("127.0.0.1", port, socket_timeout=10)
        return self._clients[port]

    def start(self) -> "RedisCluster":
        """Start the nodes and join them; on any failure, stop them all and raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "RedisCluster":
        for node in self.nodes:
            node.start()
        command = [REDIS_CLI, "--cluster", "create",
                   *[f"127.0.0.1:{node.port}" for node in self.nodes],
                   "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr}")
        for node in self.nodes:
            wait_for(f"cluster_state:ok on {node.port}",
                     lambda node=node: _info_cluster(self.client(node.port))["cluster_state"] == "ok")
        wait_for("every node to agree on the slot map", self._agreed)
        return self

    def _agreed(self, primaries_only: bool = False) -> bool:
        ports = self.primary_ports() if primaries_only else [node.port for node in self.nodes]
        maps = [self.client(port).execute("CLUSTER", "SLOTS") for port in ports]
        views = [sorted((s[0], s[1], s[2][1]) for s in slots) for slots in maps]
        return all(view == views[0] for view in views) and len(views[0]) >= self.primaries

    def node_ids(self) -> Dict[int, str]:
        """Port -> node id, for every node still running."""
        return {node.port: self.client(node.port).execute("CLUSTER", "MYID").decode()
                for node in self.nodes if node.process is not None and node.process.poll() is None}

    def _slots(self) -> List[list]:  # type: ignore[type-arg]
        # CLUSTER SLOTS from the first live node.
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                return self.client(node.port).execute("CLUSTER", "SLOTS")  # type: ignore[no-any-return]
        raise RuntimeError("no cluster node is running")

    def primary_ports(self) -> List[int]:
        """The ports of the nodes that own slots now."""
        return sorted({s[2][1] for s in self._slots()})

    def owner(self, slot: int) -> int:
        """The port of the primary that owns ``slot`` now."""
        for start, end, primary, *_ in self._slots():
            if start <= slot <= end:
                return int(primary[1])
        raise LookupError(f"slot {slot} is not served")

    def migrate_slot(self, slot: int, target: int, pause: float = 0.0,
                     batch: int = 10, on_step: Optional[Callable[[str], None]] = None) -> None:
        """Move ``slot`` to the primary on port ``target`` the way ``redis-cli
        --cluster reshard`` does: IMPORTING, MIGRATING, MIGRATE the keys a few
        at a time (sleeping ``pause`` between batches), then SETSLOT NODE."""
        source = self.owner(slot)
        ids = self.node_ids()
        src, dst = self.client(source), self.client(target)
        dst.execute("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        src.execute("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        if on_step:
            on_step("migrating")
        while True:
            time.sleep(pause)
            keys = src.execute("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            src.execute("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
        time.sleep(pause)
        for port in [target, source] + [p for p in self.primary_ports() if p not in (source, target)]:
            self.client(port).execute("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        wait_for(f"slot {slot} to be owned by {target}", lambda: self._agreed(primaries_only=True))

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        _stop_all(self.nodes)


def _port_with_free_bus() -> int:
    while True:
        port = free_port()
        if port <= 55535:
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                pass


def _info_cluster(client: resp.Client) -> Dict[str, str]:
    text = client.execute("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


class SentinelServer(RedisServer):
    """``redis-server --sentinel`` with its own (rewritable) config file."""

    def __init__(self, config: str) -> None:
        super().__init__()
        self.config_path = os.path.join(self.dir, "sentinel.conf")
        with open(self.config_path, "w") as file:
            file.write(config)

    def command_line(self) -> List[str]:
        return [self.binary, self.config_path, "--sentinel", "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", self.dir, "--daemonize", "no",
                "--logfile", os.path.join(self.dir, "redis.log"), "--loglevel", "notice"]


class SentinelSet:
    """A primary, one replica and ``count`` sentinels monitoring them as ``service``."""

    def __init__(self, service: str = "mymaster", count: int = 3) -> None:
        self.service = service
        self.primary = RedisServer(args=NO_SYNC_DELAY)
        self.replica = RedisServer(args=[*NO_SYNC_DELAY, "--replicaof", "127.0.0.1", str(self.primary.port)])
        config = (
            f"sentinel monitor {service} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {service} 5000\n"
            f"sentinel failover-timeout {service} 5000\n"
            f"sentinel parallel-syncs {service} 1\n"
        )
        self.sentinels = [SentinelServer(config) for _ in range(count)]

    @property
    def addresses(self) -> List[tuple]:  # type: ignore[type-arg]
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def sentinel_client(self, index: int = 0) -> resp.Client:
        return resp.Client("127.0.0.1", self.sentinels[index].port, socket_timeout=5)

    def start(self) -> "SentinelSet":
        """Start every server; on any failure, stop them all and raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "SentinelSet":
        self.primary.start()
        self.replica.start()
        with resp.Client("127.0.0.1", self.replica.port) as replica:
            wait_for("the replica to sync", lambda: _info(replica, "replication")["master_link_status"] == "up")
        for sentinel in self.sentinels:
            sentinel.start()
        for i in range(len(self.sentinels)):
            with self.sentinel_client(i) as sentinel:
                # A forced failover needs only a known replica; the sentinels
                # find each other later, through the servers.
                try:
                    wait_for("every sentinel to know the replica", lambda: (
                        len(sentinel.execute("SENTINEL", "REPLICAS", self.service)) == 1
                    ), timeout=30)
                except RuntimeError as exc:
                    log = self.sentinels[i].log()[-1500:]
                    raise RuntimeError(f"{exc}; sentinel {i} log:\n{log}") from None
        return self

    def primary_port(self, index: int = 0) -> int:
        """The primary's port according to sentinel ``index``."""
        with self.sentinel_client(index) as sentinel:
            return int(sentinel.execute("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1])

    def stop(self) -> None:
        _stop_all([*self.sentinels, self.replica, self.primary])


def _stop_all(servers: List[RedisServer]) -> None:
    # SIGTERM to all first: each takes a moment to shut down.
    for server in servers:
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
    for server in servers:
        server.cleanup()


__all__ = ["RedisCluster", "SentinelSet", "SentinelServer", "wait_for", "free_port"]
