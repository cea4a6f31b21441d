"""Private ``redis-server`` processes for the tests, on free loopback ports.

Each server runs in its own temporary directory with persistence off, is
stopped by its pid, and is never on port 6379. Used by ``tests/``,
``conformance/`` and ``benchmarks/``.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import List, Optional, Sequence, Set

REDIS_SERVER = os.environ.get("REDIS_SERVER", "redis-server")
SHARED_PORT = 6379  # the machine's own Redis: never touched by the tests


class ServerStartError(RuntimeError):
    """redis-server could not be started."""


#: Ports ``free_port`` has handed out: the kernel may give a port it just
#: freed to the next ``bind(0)``, and two servers made before either started
#: would then share one port.
_HANDED_OUT: Set[int] = set()


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now (never 6379),
    and never one this process was given before."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != SHARED_PORT and port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid``, or one it started (a ``REDIS_SERVER`` wrapper
    that forks), holds the socket listening on 127.0.0.1:``port``.

    True where ``/proc`` cannot tell (not Linux), so that only a listener
    known to be another process's counts against it.
    """
    loopback = socket.inet_aton("127.0.0.1")
    address = (loopback[::-1] if sys.byteorder == "little" else loopback).hex().upper()
    try:
        with open("/proc/net/tcp") as table:
            inodes = {f"socket:[{row[9]}]" for row in (line.split() for line in table)
                      if row[1] == f"{address}:{port:04X}" and row[3] == "0A"}  # 0A: LISTEN
        processes = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return True
    for process in processes:
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{process}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{process}/fd")):
                return pid in _ancestry(int(process))
    return False


def _ancestry(pid: int) -> List[int]:
    """``pid``, its parent, its parent's parent … up to the first process."""
    chain = [pid]
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                pid = int(stat.read().rsplit(")", 1)[1].split()[1])  # after "(name)": state, ppid
        except (OSError, IndexError, ValueError):
            break
        chain.append(pid)
    return chain


def reap_child(pid: int, timeout: float) -> Optional[int]:
    """The wait status of the forked child ``pid`` once it has ended, or None
    when it is still running after ``timeout`` seconds (it is then killed)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def server_version(binary: str = REDIS_SERVER) -> str:
    """The version that ``redis-server --version`` reports, e.g. ``'7.0.15'``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    for word in out.split():
        if word.startswith("v="):
            return word[2:]
    return out.strip()


class RedisServer:
    """One private redis-server.

    :param args: extra configuration, as ``redis-server`` command-line words
        (e.g. ``["--requirepass", "secret"]``).
    :param unix_socket: also listen on a unix socket (``self.unix_socket_path``).
    :param tls: listen with TLS only, with a certificate made by ``openssl``
        (``self.tls_dir`` holds ``ca.crt``, ``server.crt``, ``server.key``).
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        port: Optional[int] = None,
        unix_socket: bool = False,
        tls: bool = False,
        binary: str = REDIS_SERVER,
    ) -> None:
        self.args = list(args)
        self.port = port or free_port()
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="hotqueue-redis-")
        self.unix_socket_path = os.path.join(self.dir, "redis.sock") if unix_socket else None
        self.tls_dir = os.path.join(self.dir, "tls") if tls else None
        self.process: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        if self.tls_dir:
            make_certificates(self.tls_dir)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls_dir else "redis"
        return f"{scheme}://{self.host}:{self.port}/0"

    def command_line(self) -> List[str]:
        words = [
            self.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning",
            "--logfile", os.path.join(self.dir, "redis.log"),
        ]
        if self.tls_dir:
            words += [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", os.path.join(self.tls_dir, "server.crt"),
                "--tls-key-file", os.path.join(self.tls_dir, "server.key"),
                "--tls-ca-cert-file", os.path.join(self.tls_dir, "ca.crt"),
                "--tls-auth-clients", "no",
            ]
        else:
            words += ["--port", str(self.port)]
        if self.unix_socket_path:
            words += ["--unixsocket", self.unix_socket_path, "--unixsocketperm", "700"]
        return words + self.args

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Start (or restart) the server on its port and wait until it listens."""
        if self.process is not None and self.process.poll() is None:
            return self
        try:
            self.process = subprocess.Popen(
                self.command_line(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except FileNotFoundError as exc:
            raise ServerStartError(f"{self.binary} not found: install redis-server") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"redis-server exited with {self.process.returncode}: {self.log()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
            except OSError:
                pass
            else:
                # Another process may hold the port: ours then exits, unable to bind.
                if listens_on(self.process.pid, self.port):
                    return self
            time.sleep(0.02)
        self.stop()
        raise ServerStartError(f"redis-server did not listen on port {self.port} within {timeout} s")

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "redis.log")) as file:
                return file.read()[-2000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the server by its pid (SIGTERM: a clean shutdown; SIGKILL: a crash)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()

    def kill(self) -> None:
        """Crash the server with SIGKILL."""
        self.stop(signal.SIGKILL)

    def cleanup(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def make_certificates(directory: str, hostname: str = "localhost") -> None:
    """Make a CA and a server certificate for ``hostname`` and 127.0.0.1 with openssl."""
    os.makedirs(directory, exist_ok=True)

    def run(*words: str) -> None:
        subprocess.run(["openssl", *words], cwd=directory, check=True, capture_output=True)

    # Python 3.13 verifies with VERIFY_X509_STRICT: the CA needs keyUsage and
    # the server certificate an authority key identifier.
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hotqueue test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hostname}",
        "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(directory, "ext.cnf"), "w") as file:
        file.write(f"subjectAltName=DNS:{hostname},IP:127.0.0.1\n"
                   "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
