"""Idle connections, shared by threads.

Rules this module keeps:

1. Last in, first out: the connection used most recently is the one most likely
   to be alive, and the rest can time out on the server unused.
2. Only connections that finished their command cleanly come back (``release``);
   anything else is ``discard``-ed, which closes it.
3. A connection is handed out only in the process that opened it: after
   ``os.fork()`` the child closes what it inherited (never ``shutdown()``, which
   would break the parent's side) and connects afresh. Every pool is reset in
   the child by a fork hook, before any thread of the child can use it.
4. An idle connection that has become readable (the server closed it, or sent
   bytes nobody asked for) is dropped, not reused.
5. Past ``max_connections``, threads get connections first come, first
   served; a connection waiting in a blocking command holds no place.
6. Without ``max_connections`` there are no places to count, and a command
   takes and gives back its connection without the lock: the idle list is all
   that is shared, and ``list.pop()`` and ``list.append()`` are atomic. (The
   ``with`` of a lock costs more than the rest of ``acquire`` and ``release``.)
7. A connection being opened while ``close()`` runs is closed when it comes
   back: it may lead where ``close()`` meant to leave. Unless the connect
   function closed the pool itself before opening it (``SentinelClient``, on
   finding a new primary): it stamps the connection with the generation that
   ``close()`` began, and the later of the two stands.
"""

import _thread
import os
from time import monotonic as _monotonic

from .connection import Connection, _WeakRegistry
from .errors import PoolTimeoutError

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    import threading
    from typing import Callable, List, Optional, Tuple

__all__ = ["Pool"]

# os.getpid() is a system call, and the pool asks on every command: keep the
# answer, refreshed in the child by a fork hook (run by os.fork() and by every
# fork that goes on running Python). Platforms without the hook have no fork.
_pid = [os.getpid()]
# Every pool, reset in a forked child by the same hook. Not on first use: the
# child's threads could each find the pool inherited and reset it, one
# wiping what another had just set up (its lock, held; its connections,
# counted), which broke the bound or left every thread waiting on that lock.
_POOLS = _WeakRegistry()


def _reset_inherited() -> None:
    _pid[0] = os.getpid()
    for pool in _POOLS.members():
        pool._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_inherited)


class Pool:
    """A thread-safe LIFO pool of connections made by ``connect``.

    :param connect: makes a new, ready connection (handshake included).
    :param max_connections: how many may be open at once, not counting those
        waiting in a blocking command (``acquire(blocking=True)``); ``None``
        for no bound. Past the bound, ``acquire`` waits its turn, first come
        first served, up to ``wait_timeout``, then raises ``PoolTimeoutError``.
    """

    def __init__(
        self,
        connect: "Callable[[], Connection]",
        max_connections: "Optional[int]" = None,
        wait_timeout: "Optional[float]" = None,
    ) -> None:
        self._connect = connect
        self._max_connections = max_connections
        self._wait_timeout = wait_timeout
        self._retired = False  # see retire()
        self._reset()
        _POOLS.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        # _thread's lock, not threading's: importing threading costs about a
        # millisecond, and only a bounded pool that fills up needs its
        # Condition (made by _wait_for_room).
        self._lock = _thread.allocate_lock()
        self._released: "Optional[threading.Condition]" = None
        self._idle: List[Connection] = []
        self._open_count = 0  # connections holding a place under the bound
        # A ticket per thread in _wait_for_room, first come first served: a
        # thread that has just released a connection does not take it back
        # ahead of them. notify_all() is a Python-level call, spent only when
        # someone waits; all are woken, and the first in line goes.
        self._line: "List[object]" = []
        # Bumped by close(): connections busy at that moment are closed when
        # they come back instead of being kept.
        self._generation = 0

    def acquire(self, blocking: bool = False, held: "Optional[List[Connection]]" = None) -> "Tuple[Connection, bool]":
        """Return a connection for one command, and whether it was reused.

        ``blocking``: the command may wait on the server (``BLPOP``) until
        another command ends the wait. Its connection holds no place under the
        bound until ``release``, so this never waits for room, and the command
        that would end the wait never waits for this one.

        ``held``: the connection is appended to it before this returns, so
        that a caller interrupted as the call returns (before Python 3.11
        signal handlers run after every call, before the result is stored)
        still finds it, to discard it and give its place back.
        """
        if self._pid != _pid[0]:
            self._after_fork()
        if self._max_connections is None:
            return self._acquire_unbounded(held)
        wait_until: Optional[float] = None  # one wait for the whole of acquire, set when it begins
        while True:
            conn: Optional[Connection] = None
            counted = False
            # Whatever is raised in here (an interrupt included) gives back
            # the connection's place under the bound.
            try:
                with self._lock:
                    if not blocking and (self._line or not self._idle):
                        wait_until = self._wait_for_room(wait_until)
                    idle = self._idle  # close() may have put a new list in its place
                    if idle:
                        # Held before it leaves the list: an interrupt as pop()
                        # returns would otherwise lose it and its place.
                        conn = idle[-1]
                        idle.pop()
                        if blocking:
                            conn.counted = False
                            self._open_count -= 1
                            if self._line:
                                self._released.notify_all()  # type: ignore[union-attr]  # made by the waiter
                    elif not blocking:
                        self._open_count += 1
                        counted = True
                if conn is None:
                    generation = self._generation
                    conn = self._connect()
                    # Before any call: an interrupt as one returns must find
                    # it marked as holding a place only if it took one.
                    conn.counted = counted
                    conn.generation = max(generation, conn.generation)  # rule 7
                    if held is not None:
                        held.append(conn)
                    return conn, False
                if not conn.is_readable():
                    if held is not None:
                        held.append(conn)
                    return conn, True
            except BaseException:
                if conn is not None:
                    self.discard(conn)
                elif counted:
                    self._forget()
                raise
            self.discard(conn)

    def _acquire_unbounded(self, held: "Optional[List[Connection]]") -> "Tuple[Connection, bool]":
        # acquire() with no bound (rule 6). An interrupt as pop() returns
        # loses the connection to the garbage collector, which closes it.
        idle = self._idle  # close() may put a new list in its place
        while True:
            try:
                conn = idle.pop()
            except IndexError:
                break
            # Until it is in held, only this frame has it: whatever is raised
            # (an interrupt in is_readable() included) closes it here.
            try:
                if not conn.is_readable():
                    if held is not None:
                        held.append(conn)
                    return conn, True
            except BaseException:
                self.discard(conn)
                raise
            self.discard(conn)
        generation = self._generation
        conn = self._connect()
        try:
            conn.counted = False  # there are no places (first: see acquire)
            conn.generation = max(generation, conn.generation)  # rule 7
            if held is not None:
                held.append(conn)
        except BaseException:
            self.discard(conn)
            raise
        return conn, False

    def replace(self, conn: Connection, held: "Optional[List[Connection]]" = None) -> Connection:
        """Close a connection that must not be reused and return a fresh one
        in its place. Its place under the bound passes to the new one, so no
        other thread can take it in between and leave this one waiting.
        ``held``: as for ``acquire``, the fresh one goes in it before this returns."""
        counted = conn.counted
        conn.counted = False  # its place is this frame's now, until fresh holds it
        fresh: Optional[Connection] = None
        try:
            conn.close()
            generation = self._generation
            fresh = self._connect()
            fresh.counted = counted  # before any call (see acquire)
            fresh.generation = max(generation, fresh.generation)  # rule 7
            if held is not None:
                held.append(fresh)
        except BaseException:
            if fresh is not None:
                self.discard(fresh)  # gives its place back, if it holds one
            elif counted:
                self._forget()
            raise
        return fresh

    def _wait_for_room(self, wait_until: "Optional[float]") -> "Optional[float]":
        # Called with the lock held: returns once this thread is first in line
        # and there is a place free or an idle connection (acquire takes it),
        # raising at ``wait_until`` (None: ``wait_timeout`` from now, which is
        # returned for acquire's next turn, if the connection found was dead).
        limit = self._max_connections
        if limit is None or not self._line and self._open_count < limit:
            return wait_until
        timeout = self._wait_timeout
        if timeout is not None:
            if wait_until is None:
                wait_until = _monotonic() + timeout
            else:
                timeout = max(0.0, wait_until - _monotonic())
        line = self._line
        ticket = object()

        def ready() -> bool:
            return line[0] is ticket and (self._open_count < limit or bool(self._idle))

        if self._released is None:
            import threading

            self._released = threading.Condition(self._lock)
        try:
            line.append(ticket)  # inside the try: an interrupt after it still takes it out
            if not self._released.wait_for(ready, timeout):
                raise PoolTimeoutError(f"all {limit} connections stayed busy")
        finally:
            if ticket in line:  # not yet, if an interrupt came just before the append
                line.remove(ticket)
            if line:
                self._released.notify_all()  # the next in line may go now
        return wait_until

    def release(self, conn: Connection) -> None:
        """Take back a connection whose command finished cleanly. One back
        from a blocking command takes a place under the bound again, or is
        closed if there is none."""
        if conn.pid != _pid[0]:
            return  # opened by the parent of a fork: not ours to close or keep
        if self._max_connections is None:
            if conn.generation == self._generation and not self._retired:
                # The lease changes first: once the connection is idle another
                # thread may take it, and the caller, if interrupted, must
                # then leave it alone (an interrupt before the append leaves
                # it to the garbage collector).
                conn.lease += 1
                idle = self._idle
                idle.append(conn)
                if conn.generation == self._generation and not self._retired:
                    return
                # close() or retire() ran meanwhile and may have missed it.
                try:
                    idle.remove(conn)
                except ValueError:
                    return  # taken by close(), which closes it, or by a command, whose release will
            self.discard(conn)
            return
        with self._lock:
            if conn.generation == self._generation and not self._retired:
                counted, open_count, lease = conn.counted, self._open_count, conn.lease
                try:
                    limit = self._max_connections
                    if not conn.counted and (limit is None or self._open_count < limit):
                        self._open_count += 1
                        conn.counted = True
                    if conn.counted:
                        self._idle.append(conn)
                        # From here on the caller, if interrupted, must not
                        # discard it: another thread may have taken it.
                        conn.lease += 1
                        if self._line:
                            self._released.notify_all()  # type: ignore[union-attr]  # made by the waiter
                        return
                except BaseException:
                    # An interrupt before the lease changed (before Python
                    # 3.10 one can come between any two bytecodes): as if
                    # release had not been called; the caller discards it.
                    if conn.lease == lease:
                        if self._idle and self._idle[-1] is conn:
                            self._idle.pop()
                        conn.counted, self._open_count = counted, open_count
                    raise
        self.discard(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that must not be reused. A second call does
        nothing: its place under the bound is given back once."""
        if conn.pid == os.getpid() and conn.sock.fileno() >= 0:
            try:
                conn.close()
            finally:
                # Even if interrupted in close(): the socket may be closed
                # already, and a second discard would then give nothing back.
                # Inline, not _forget(): an interrupt at the entry of a call
                # between marking it and giving its place back would lose it.
                if conn.counted:
                    with self._lock:
                        if conn.counted:
                            conn.counted = False  # given back once, whatever comes
                            self._open_count -= 1
                            if self._line:
                                self._released.notify_all()  # type: ignore[union-attr]  # made by the waiter

    def _forget(self) -> None:
        with self._lock:
            self._open_count -= 1
            if self._line:
                self._released.notify_all()  # type: ignore[union-attr]  # made by the waiter

    def _after_fork(self) -> None:
        inherited = self._idle
        self._reset()
        for conn in inherited:
            conn.sock.close()

    def close(self) -> int:
        """Close the idle connections now, and the busy ones when they are
        released. The pool stays usable: a later command connects afresh.
        Returns the generation this begins (rule 7)."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            self._generation += 1
            generation = self._generation
            idle, self._idle = self._idle, []
        interrupted: Optional[BaseException] = None
        while idle:  # pop(), not a for loop: a release without the lock may take one out meanwhile
            try:
                conn = idle.pop()
            except IndexError:
                break
            try:
                self.discard(conn)
            except BaseException as exc:  # an interrupt: the others still give their places back
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        return generation

    def retire(self) -> None:
        """Close the pool for good: the idle connections now, and every other
        one when it is released, even one opened after this call by a thread
        that still held the pool. Commands still run, each on a connection of
        its own."""
        self._retired = True
        self.close()
