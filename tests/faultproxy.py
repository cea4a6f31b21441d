"""A real TCP proxy that puts faults between a client and ``redis-server``.

The client connects to ``proxy.port``; every connection it opens is relayed to
the upstream server by two threads (requests one way, replies the other).
Faults are real socket events, not patched code:

- ``inject(fault)`` queues a fault for the next request that arrives on any
  connection: ``"cut_before"`` (close the client's connection instead of
  forwarding the request), ``"cut_after"`` (forward it, wait until the server's
  reply arrives — so the command has run — and close without passing the reply
  on), ``"cut_mid"`` (pass half the reply on, then close), ``"reset"`` (like
  ``cut_after`` but with a TCP RST), ``("delay", seconds)`` (hold the reply),
  ``("delay_request", seconds)`` (hold the request, then pass it on even when
  the client has given up and closed meanwhile: a late packet), ``"fragment"``
  (write the request and the reply one byte at a time).
- ``silent = True``: from now on forward nothing and close nothing (a half-open
  peer: a server that hangs, or a network that drops every packet).
- ``close_idle()``: close every relayed connection now, as a server's idle
  timeout or a restart would, so a client's pooled connection is dead before
  it carries anything.

``accepted`` counts the connections clients opened (used to bound reconnection
attempts); ``injected`` counts the faults that were applied, by kind;
``passed_late`` the requests held by ``delay_request`` that were passed on;
``swallowed`` the pieces of requests that arrived while ``silent``.

``inject(fault, marker)`` ties a fault to the request that contains
``marker`` (a command's unique value): then neither a late piece of an earlier
request nor another thread's request can take it. A connection carries one
command at a time (replies are not pipelined across commands), so "its reply"
is the next bytes the server sends on that connection.
"""

import collections
import os
import socket
import struct
import threading
import time
from typing import Any, Deque, Dict, Optional, Set, Tuple, Union

Fault = Union[str, Tuple[str, float]]
FAULTS = ("cut_before", "cut_after", "cut_mid", "reset", "delay", "delay_request", "fragment")


def _close(sock: socket.socket, reset: bool = False) -> None:
    try:
        if reset:
            # Linger 0: close() sends RST instead of FIN. SHUT_RD sends nothing
            # but wakes the thread blocked in recv(), which would otherwise
            # keep the socket open.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RD)
        else:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Link:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: "FaultProxy", client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.closed = False
        # What to do to the next reply: set when its request goes up.
        self.reply_fault: Optional[Fault] = None

    def start(self) -> None:
        for target in (self._requests, self._replies):
            threading.Thread(target=target, daemon=True).start()

    def close(self, reset: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        _close(self.client, reset)
        _close(self.upstream)
        self.proxy._forget(self)

    def _requests(self) -> None:
        proxy = self.proxy
        try:
            while True:
                data = self.client.recv(65536)
                if not data:
                    break
                if proxy.silent:
                    with proxy._lock:
                        proxy.swallowed += 1
                    continue  # the client waits for a reply that never comes
                with self.lock:
                    if self.closed:
                        break  # a piece read before a cut: the next fault is not its own
                    fault = proxy._take_fault(data)
                if fault == "cut_before":
                    break
                if isinstance(fault, tuple) and fault[0] == "delay_request":
                    time.sleep(fault[1])
                    self.upstream.sendall(data)
                    with proxy._lock:
                        proxy.passed_late += 1
                    continue
                if fault is not None:
                    # Kept until the reply comes: the rest of a request that
                    # arrives in several pieces must not clear it.
                    self.reply_fault = fault
                if fault == "fragment":
                    for i in range(len(data)):
                        self.upstream.sendall(data[i : i + 1])
                else:
                    self.upstream.sendall(data)
        except OSError:
            pass
        if not proxy.silent:
            self.close()

    def _replies(self) -> None:
        proxy = self.proxy
        try:
            while True:
                data = self.upstream.recv(65536)
                if not data:
                    break
                if proxy.silent:
                    continue
                fault, self.reply_fault = self.reply_fault, None
                if fault in ("cut_after", "reset"):
                    self.close(reset=fault == "reset")
                    return
                if fault == "cut_mid":
                    self.client.sendall(data[: len(data) // 2])
                    break
                if isinstance(fault, tuple):
                    time.sleep(fault[1])
                if fault == "fragment":
                    for i in range(len(data)):
                        self.client.sendall(data[i : i + 1])
                        if proxy.fragment_gap:
                            time.sleep(proxy.fragment_gap)
                else:
                    self.client.sendall(data)
        except OSError:
            pass
        if not proxy.silent:
            self.close()


class FaultProxy:
    """Relay loopback connections to ``upstream_port``, injecting faults on demand.

    >>> with FaultProxy(server.port) as proxy:          # doctest: +SKIP
    ...     client = resp.Client("127.0.0.1", proxy.port)
    ...     proxy.inject("cut_after")
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.silent = False
        self.fragment_gap = 0.0  # seconds between the bytes of a fragmented reply
        self.accepted = 0
        self.upstream_failures = 0
        self.injected: Dict[str, int] = collections.Counter()
        self.passed_late = 0  # requests held by delay_request, passed on by now
        self.swallowed = 0  # pieces of requests that arrived while silent
        self._faults: Deque[Tuple[Fault, Optional[bytes]]] = collections.deque()
        self._lock = threading.Lock()
        self._links: Set[_Link] = set()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def inject(self, fault: Fault, marker: Optional[bytes] = None) -> None:
        """Apply ``fault`` to the next request that arrives (see the module
        doc) or, with ``marker``, to the next one that contains those bytes: a
        late piece of an earlier request, or another thread's request, cannot
        take it then."""
        kind = fault[0] if isinstance(fault, tuple) else fault
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        with self._lock:
            self._faults.append((fault, marker))

    def pending(self, marker: Optional[bytes] = None) -> int:
        """How many injected faults (with ``marker``: with that marker) have
        not been applied yet."""
        with self._lock:
            return sum(1 for _, m in self._faults if marker is None or m == marker)

    def clear(self) -> None:
        """Forget the faults not applied yet."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, data: bytes) -> Optional[Fault]:
        with self._lock:
            for entry in self._faults:
                fault, marker = entry
                if marker is None or marker in data:
                    self._faults.remove(entry)
                    self.injected[fault[0] if isinstance(fault, tuple) else fault] += 1
                    return fault
            return None

    def connections(self) -> int:
        """How many relayed connections are open now."""
        with self._lock:
            return len(self._links)

    def close_idle(self) -> int:
        """Close every relayed connection now; return how many there were."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()
        return len(links)

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                self.accepted += 1
            if self._closed:
                client.close()
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.silent:
                # Accept and hold: never read, never answer, never close.
                link = _Link(self, client, socket.socket())
                with self._lock:
                    self._links.add(link)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                with self._lock:
                    self.upstream_failures += 1
                client.close()  # the server is down: the client sees its connection closed
                continue
            upstream.settimeout(None)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
            link.start()

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self._closed = True
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread on Linux
        except OSError:
            pass
        self._listener.close()
        self.silent = False
        self.close_idle()


def report(name: str, line: str) -> None:
    """Print a summary line of the reliability tests (seen with ``pytest -s``)
    and, when ``HOTQUEUE_REPORT_DIR`` is set, append it to ``<dir>/<name>.txt``:
    the README's Reliability figures come from there."""
    print("\n" + line)
    directory = os.environ.get("HOTQUEUE_REPORT_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name + ".txt"), "a") as file:
            file.write(line + "\n")
