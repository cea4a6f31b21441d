"""The tutorial, run end to end by ``python -m hotqueue demo``.

Private to the command line: nothing here is public API. Rules it keeps:

- It touches only queues named ``hotqueue-demo-<random>`` and deletes them
  when it ends, however it ends: a user's data is never read or changed.
- Where nothing answers at the URL it starts its own ``redis-server`` on a
  free loopback port (in a temporary directory, persistence off) and stops
  it by its pid when it ends, including on Ctrl-C and errors.
- The two workers are separate processes (``multiprocessing`` with
  ``spawn``, so they share nothing with this one but the queue).
"""

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type
from urllib.parse import urlsplit, urlunsplit

import resp

from .queue import HotQueue

#: How long the demo's workers wait for another number before they stop.
WORKER_IDLE = 1.0
#: Bound on every wait for a worker or a server, so the demo never hangs.
WAIT_LIMIT = 30.0
#: Bound on the wait for the workers to finish once every number is queued.
FINISH_LIMIT = 30.0
#: The numbers the workers square, and what each does per number (long enough
#: that both workers get a share).
NUMBERS = list(range(2, 12))
WORK_SECONDS = 0.05
#: A worker's exit status when its output was closed (the command line's).
BROKEN_PIPE = 141


class DemoError(Exception):
    """The demo could not run, or saw something the tutorial does not promise."""


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit to print."""
    try:
        parts = urlsplit(url)  # resp refuses an '@' after the host part before this is shown
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<malformed URL>"


def answers(url: str) -> bool:
    """Whether a Redis server answers ``PING`` at ``url``.

    :raises ValueError: a malformed URL.
    :raises resp.ResponseError: a server answers but refuses us (e.g. a password is needed).
    :raises resp.ConnectionError: a server answers but TLS failed (e.g. its
        certificate is not trusted).
    """
    # resp.from_url, as HotQueue(url=...) uses: cluster and sentinel URLs too.
    with resp.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0) as client:
        try:
            return client.ping()
        except (resp.ConnectionError, resp.TimeoutError) as exc:
            ssl = sys.modules.get("ssl")  # imported only by TLS users
            if ssl is not None and isinstance(exc.__cause__, ssl.SSLError):  # PyPy's live in _cffi_ssl
                raise
            return False


def _free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:  # the usual shared server's port: never ours
            return port


def _last_line(path: str) -> str:
    """``": "`` and the last line of a log file, or "" when there is none."""
    try:
        with open(path, errors="replace") as log:
            lines = [line.strip() for line in log if line.strip()]
    except OSError:
        return ""
    return f": {lines[-1][-200:]}" if lines else ""


class PrivateServer:
    """A ``redis-server`` of our own on a free loopback port, for the demo only.

    Use as a context manager: the server is stopped (by its pid) and its
    temporary directory removed on the way out.
    """

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="hotqueue-demo-")
        self.process: Optional["subprocess.Popen[bytes]"] = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> "PrivateServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it answers on its port, as itself:
        its working directory is the one made for it.

        :raises DemoError: it exited (e.g. the port was taken by another
            program) or did not answer within ``WAIT_LIMIT`` seconds.
        """
        log = os.path.join(self.dir, "redis.log")
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--logfile", log],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # Its own process group: a terminal's Ctrl-C (sent to the whole
            # foreground group) interrupts the demo, which then still needs the
            # server to delete its queues, and stops it after.
            start_new_session=True,
        )
        deadline = time.monotonic() + WAIT_LIMIT
        ours = os.fsencode(os.path.realpath(self.dir))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # Its log goes with its directory (see stop): say what it says.
                raise DemoError(f"{self.binary} exited with status {self.process.returncode}{_last_line(log)}")
            if self._serving_from() == ours:
                return
            time.sleep(0.02)
        raise DemoError(f"{self.binary} did not answer on port {self.port} within {WAIT_LIMIT:g} s")

    def _serving_from(self) -> Optional[bytes]:
        """The working directory of the Redis server answering on our port,
        or None when none does. Another program may have taken the port
        after ``_free_port`` let it go (our server then fails to bind it):
        only ours works in ``self.dir``."""
        try:
            with resp.Client(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                             socket_connect_timeout=0.5) as client:
                reply = client.execute("CONFIG", "GET", "dir")
        except (resp.RespError, OSError):
            return None
        if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], bytes):
            return reply[1]
        return None

    def stop(self) -> None:
        """Stop the server by its pid (SIGTERM, then SIGKILL) and remove its directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_main(url: str, name: str, results: str, number: int) -> None:
    """One worker process: the tutorial's ``square`` worker, reporting each
    number it handled to the ``results`` queue so the demo can check them."""
    queue = HotQueue(name, url=url)
    report = HotQueue(results, url=url)

    @queue.worker(timeout=WORKER_IDLE)
    def square(num: int) -> None:
        # One write per line, so the two workers' lines never interleave.
        sys.stdout.write(f"    worker {number} (pid {os.getpid()}): {num} * {num} = {num * num}\n")
        sys.stdout.flush()
        report.put((number, num, num * num))
        time.sleep(WORK_SECONDS)

    try:
        report.put(("ready", number))
        square()
    except KeyboardInterrupt:
        pass  # SIGINT sent to this process alone: the demo's own process reports an interrupt
    except BrokenPipeError:
        # Nothing reads the transcript any more (``| head``): stop quietly
        # and tell the demo, which exits as the command line does then.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(BROKEN_PIPE)


def run(url: str, write: Callable[[str], None]) -> None:
    """Run the tutorial against ``url`` (which must answer), writing a
    transcript with ``write``; queues are removed whatever happens.

    :raises DemoError: a result differs from the tutorial's.
    """
    name = "hotqueue-demo-" + uuid.uuid4().hex[:12]
    queue = HotQueue(name, url=url)
    results = HotQueue(name + "-results", url=url)
    try:
        _tutorial(queue, redact(url), write)
        _consume(queue, write)
        _workers(queue, results, url, write)
    finally:
        try:
            queue.clear()
            results.clear()
        finally:
            queue.client.close()
            results.client.close()


def _expect(code: str, got: Any, want: Any, write: Callable[[str], None]) -> None:
    write(f">>> {code}")
    write(repr(got))
    if got != want or type(got) is not type(want):
        raise DemoError(f"{code} gave {got!r}; the tutorial expects {want!r}")


def _tutorial(queue: HotQueue, shown_url: str, write: Callable[[str], None]) -> None:
    write("# Connecting to Redis (a queue of the demo's own, deleted at the end)")
    write(">>> from hotqueue import HotQueue")
    write(f">>> queue = HotQueue({queue.name!r}, url={shown_url!r})")
    write("")
    write("# Putting items onto the queue")
    for code, msgs in (("queue.put(4)", (4,)), ("queue.put(5)", (5,)),
                       ("queue.put(6, 'my message', 7)", (6, "my message", 7))):
        write(f">>> {code}")
        queue.put(*msgs)
    write(">>> from decimal import Decimal")
    write(">>> queue.put(Decimal('1.4'))")
    queue.put(Decimal("1.4"))
    write("")
    write("# Getting items off the queue")
    for want in (4, 5, 6, "my message", 7):
        _expect("queue.get()", queue.get(), want, write)
    write(">>> dec = queue.get()")
    dec = queue.get()
    _expect("dec", dec, Decimal("1.4"), write)
    _expect("dec + Decimal('0.3')", dec + Decimal("0.3"), Decimal("1.7"), write)


def _consume(queue: HotQueue, write: Callable[[str], None]) -> None:
    write("")
    write("# Consuming the queue (the tutorial waits forever; the demo stops after 0.5 s without a message)")
    sent = ["first", "second", "third"]
    write(f">>> queue.put({', '.join(map(repr, sent))})")
    queue.put(*sent)
    write(">>> for item in queue.consume(timeout=0.5):")
    write("...     print(item)")
    got = []
    for item in queue.consume(timeout=0.5):
        write(str(item))
        got.append(item)
    if got != sent:
        raise DemoError(f"consume() yielded {got!r}; the tutorial expects {sent!r}")


def _start_deaf_to_ctrl_c(processes: "Sequence[multiprocessing.process.BaseProcess]") -> None:
    # A terminal's Ctrl-C goes to the whole process group: a worker still
    # starting up would print a KeyboardInterrupt traceback from whatever it
    # was importing. Started with SIGINT blocked, which they keep (the demo
    # stops them itself); here it waits, blocked, until they have started.
    blocking = hasattr(signal, "pthread_sigmask")
    if blocking:
        # Started by the first process otherwise, multiprocessing's resource
        # tracker would unblock SIGINT on its way (it blocks it for itself).
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if blocking else set()
    try:
        for process in processes:
            process.start()
    finally:
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _workers(queue: HotQueue, results: HotQueue, url: str, write: Callable[[str], None]) -> None:
    write("")
    write("# Writing a queue worker: two worker processes each run")
    write("#     @queue.worker(timeout=1)")
    write("#     def square(num):")
    write("#         print(num * num)")
    write("#     square()")
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=worker_main, args=(url, queue.name, results.name, number), daemon=True)
        for number in (1, 2)
    ]
    try:
        _start_deaf_to_ctrl_c(processes)
        for _ in processes:
            if results.get(block=True, timeout=WAIT_LIMIT) is None:
                raise DemoError(f"a worker process did not start within {WAIT_LIMIT:g} s")
        write(f">>> queue.put({', '.join(map(str, NUMBERS))})")
        sys.stdout.flush()
        queue.put(*NUMBERS)
        for process in processes:
            process.join(FINISH_LIMIT)
            if process.exitcode is None:
                raise DemoError(f"a worker process was still running after {FINISH_LIMIT:g} s")
            if process.exitcode == BROKEN_PIPE:
                raise BrokenPipeError("a worker's output was closed")
            if process.exitcode != 0:
                raise DemoError(f"a worker process ended with status {process.exitcode}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
    handled: Dict[int, List[int]] = {1: [], 2: []}
    squares: List[Tuple[int, int]] = []
    for number, num, square in results.consume(block=False):
        handled[number].append(num)
        squares.append((num, square))
    if sorted(squares) != [(n, n * n) for n in NUMBERS]:
        raise DemoError(f"the workers' results {sorted(squares)!r} are not each number squared exactly once")
    write(
        f"Each of the {len(NUMBERS)} numbers was squared exactly once: worker 1 took "
        f"{len(handled[1])}, worker 2 took {len(handled[2])}."
    )
