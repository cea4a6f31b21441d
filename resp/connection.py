"""One socket to one server: connect (TCP, unix socket, TLS), send, read a reply
by a deadline, close.

Rules this module keeps:

1. Deadlines, not timeouts: every wait gets what is left of one
   ``time.monotonic()`` deadline, set by the caller for the whole command.
2. Every failure is raised as ``resp.ConnectionError`` or ``resp.TimeoutError``
   (a ``NothingSentError`` when not one byte of the command left), or as the
   reader's ``ProtocolError`` for bytes that are not RESP2; deciding
   what to do about it — close, retry — is the caller's job.
3. No retries and no parsing by hand: replies come from ``protocol.Reader``.
"""

import _socket  # socket's C core: socket.py would load enum and selectors for every import
import _thread
import os
import select
import sys
import time
from _weakref import ref as _ref  # weakref's C core: the weakref module costs a third of a MiB

from .errors import CertificateError, ConnectionError, TimeoutError
from .protocol import Reader

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:  # ssl is imported only by programs that use TLS: it costs ~30 modules
    import selectors
    import ssl
    from typing import Any, Callable, List, Optional, Set, Tuple, Union

    from .protocol import Reply

__all__ = ["Connection", "NothingSentError", "NothingSentTimeoutError", "Address"]

_monotonic = time.monotonic
_HAS_POLL = hasattr(select, "poll")
_MAX_POLL_MS = 2.0**31 - 1
#: The longest a socket's own timeout may be, in seconds: it is turned into
#: milliseconds in a C int, and one past it wraps round (to no wait at all, or
#: to waiting for ever). A longer wait is made of several.
_MAX_SOCKET_TIMEOUT = _MAX_POLL_MS / 1000.0
#: A command at most this long fits at once in the (empty) send buffer of an
#: idle connection: Linux gives a TCP socket at least 4 KiB.
_SHORT = 2048
_RECV_SIZE = 65536
#: The largest buffer a connection keeps to receive long bulk strings into.
_MAX_BULK_BUFFER = 4 * 1024 * 1024
_IOV_MAX = 512  # parts per sendmsg(); POSIX guarantees at least 16, Linux takes 1024
# Probe a silent peer after a minute idle, every 10 s, three times: a dead
# server is noticed in about 90 s even by a command that has no deadline.
_KEEPALIVE = {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 3}
#: OpenSSL's verify codes for a certificate whose issuer is not trusted:
#: unable to get the issuer (locally), self-signed (in the chain), unable to
#: verify the leaf's signature.
_UNKNOWN_ISSUER = frozenset((2, 18, 19, 20, 21))
#: Seconds the set-up of a new connection (a TLS handshake, AUTH, SELECT,
#: CLIENT SETNAME) may take once connected when no connect timeout is given:
#: a plain (non-TLS) Redis port never answers a handshake (it waits for the
#: end of a command line that never comes), and a server that accepts
#: connections and never answers (a stopped process) never answers AUTH.
_SETUP_TIMEOUT = 10.0


class _WeakRegistry:
    # The objects added, each held only until it is garbage: what the fork
    # hooks need of weakref.WeakSet (add, list, clear), without importing it.
    # As there, a set of references, each taken out by its own callback.

    __slots__ = ("_refs",)

    def __init__(self) -> None:
        self._refs: "Set[_ref[Any]]" = set()

    def add(self, member: object) -> None:
        self._refs.add(_ref(member, self._refs.discard))

    def members(self) -> "List[Any]":
        alive = [ref() for ref in self._refs.copy()]
        return [member for member in alive if member is not None]

    def clear(self) -> None:
        self._refs.clear()


# Every connection, from before its socket is made (a fork may come while
# another thread connects), so that a forked child closes its copies of their
# sockets all at once, the busy ones included (a pool only knows its idle
# ones, and only when the child uses it): a copy kept open in the child would
# keep the parent's connection alive after the parent gave it up, and a BLPOP
# the parent abandoned would go on taking messages that nobody reads.
_OPEN = _WeakRegistry()


# Held while a socket is made, or wrapped in TLS, and handed to its
# connection: a fork waits for that, so no socket is copied into the child
# that the hook does not know (wrap_socket() empties the plain socket object
# before it returns the TLS one). Reentrant: a signal handler or a finalizer
# may connect, or fork, in the thread that holds it.
_MAKING = _thread.RLock()


def _hold_making() -> None:
    # Not _MAKING.acquire itself as the hook: a child replaces _MAKING.
    _MAKING.acquire()  # what it guards never waits on IO


def _release_making() -> None:
    _MAKING.release()


def _forget_imports_of_other_threads() -> None:
    # In a child: a module that another thread of the parent was importing
    # as it forked stays locked for good, by a thread the child does not
    # have, and the child's first import of it (of hotqueue.reliable by a
    # first reserve(), of logging by a first warning) would hang. Forget that
    # lock and the half-made module, with a package's submodules (made while
    # it was, they would keep the half-made one): the child imports them
    # afresh. Through importlib's own per-module locks (internal, alike in
    # every version since 3.3; nothing is done where they are missing). Waiting for such
    # imports before the fork instead could hang the parent: the fork hooks
    # of modules imported after this one run first and hold their locks
    # (logging's), which the import may need.
    bootstrap = sys.modules.get("_frozen_importlib")
    locks = getattr(bootstrap, "_module_locks", None)
    if not isinstance(locks, dict):
        return
    me = _thread.get_ident()
    for name, lock_ref in list(locks.items()):
        owner = getattr(lock_ref(), "owner", None)
        if owner is not None and owner != me:
            del locks[name]
            module = sys.modules.get(name)
            if getattr(getattr(module, "__spec__", None), "_initializing", False):
                inside = name + "."
                for made in [other for other in sys.modules if other == name or other.startswith(inside)]:
                    del sys.modules[made]


def _close_inherited() -> None:
    global _MAKING
    _MAKING = _thread.RLock()  # the child's own: held in it by the thread that forked, maybe more than once
    for conn in _OPEN.members():
        sock = getattr(conn, "sock", None)  # None: forked before it was made
        if sock is not None:
            sock.close()  # never shutdown(): the parent's side stays usable
    _OPEN.clear()
    try:
        _forget_imports_of_other_threads()
    except Exception:  # a module that is no module (an object in sys.modules whose attributes raise)
        pass  # its import, if the child makes it, hangs as it would have without this


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_hold_making, after_in_parent=_release_making, after_in_child=_close_inherited)


class NothingSentError(ConnectionError):
    """The connection failed before any byte of the command was written
    (connecting to the server failed, or a pooled connection was closed)."""


class NothingSentTimeoutError(TimeoutError):
    """Connecting (the TLS handshake and the connection's set-up included)
    took longer than its timeout: no byte of the command was written."""


def _while_connecting(exc: BaseException) -> BaseException:
    # ``exc``, raised on a new connection as it was set up (AUTH, SELECT, a
    # sentinel's ROLE), as it is to be raised: a broken or silent connection
    # there is one of the NothingSent kinds, since no command was sent on it.
    if type(exc) is ConnectionError:
        return NothingSentError(str(exc))
    if type(exc) is TimeoutError:
        return NothingSentTimeoutError(str(exc))
    return exc


#: Why a host with an '@' is refused, without repeating it.
_HOST_WITH_AT = ("a host name has no '@': a password goes in a URL (redis://user:password@host) "
                 "or in the password option")


class Address:
    """Where and how to connect: a TCP host and port or a unix socket path, and
    the TLS context for ``rediss://``. Holds no credentials."""

    __slots__ = ("host", "port", "unix_socket_path", "ssl_context", "connect_timeout")

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        unix_socket_path: "Optional[str]" = None,
        ssl_context: "Optional[ssl.SSLContext]" = None,
        connect_timeout: "Optional[float]" = None,
    ) -> None:
        self.host = host
        self.port = port
        self.unix_socket_path = unix_socket_path
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout

    def __str__(self) -> str:
        if self.unix_socket_path is not None:
            return f"unix:{self.unix_socket_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _host_bytes(host: str) -> "Union[bytes, str]":
    # What the IDNA codec makes of an ASCII host name whose labels it takes,
    # without loading it (three modules, a sixth of a MiB); any other name
    # goes to it, to be encoded or refused.
    name = host[:-1] if host.endswith(".") else host  # one final dot: the root
    if host.isascii() and all(0 < len(label) < 64 for label in name.split(".")):
        return host.encode()
    return host


def _connect_tcp(host: str, port: int, timeout: "Optional[float]",
                 made: "Callable[[Any], None]") -> "Tuple[_socket.socket, float]":
    # socket.create_connection: each address of the host in turn, until one
    # connects, each with the whole timeout. Returns when the one that did
    # began. Each socket is passed to made() as soon as it exists.
    error: "Optional[OSError]" = None
    for family, kind, proto, _, sockaddr in _socket.getaddrinfo(_host_bytes(host), port, 0, _socket.SOCK_STREAM):
        try:
            with _MAKING:
                sock = _socket.socket(family, kind, proto)
                made(sock)
        except OSError as exc:  # IPv6 turned off in the kernel, say: try the next address
            error = exc
            continue
        try:
            began = _monotonic()
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            return sock, began
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error if error is not None else OSError(f"no address found for {host!r}")


def _open_socket(address: Address, made: "Callable[[Any], None]") -> "Tuple[_socket.socket, float]":
    # The socket, and the deadline of the rest of its setup: the connect
    # timeout counted from when the connect that succeeded began (none given:
    # _SETUP_TIMEOUT from now).
    # Each socket (and the TLS one over it) is passed to made() as soon as it
    # exists, before any wait.
    timeout = address.connect_timeout
    if timeout is not None and timeout > _MAX_SOCKET_TIMEOUT:
        timeout = _MAX_SOCKET_TIMEOUT  # a connection not made in 24.8 days is given up on
    if address.unix_socket_path is not None:
        with _MAKING:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            made(sock)
        try:
            began = _monotonic()
            sock.settimeout(timeout)
            sock.connect(address.unix_socket_path)
        except BaseException:
            sock.close()
            raise
        return sock, _monotonic() + _SETUP_TIMEOUT if timeout is None else began + timeout
    sock, began = _connect_tcp(address.host, address.port, timeout, made)
    deadline = _monotonic() + _SETUP_TIMEOUT if timeout is None else began + timeout
    try:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
        for name, value in _KEEPALIVE.items():
            if hasattr(_socket, name):
                sock.setsockopt(_socket.IPPROTO_TCP, getattr(_socket, name), value)
        if address.ssl_context is not None:
            # What is left of the connect timeout: the handshake is part of connecting.
            left = deadline - _monotonic()
            if left <= 0:
                raise _socket.timeout("timed out")
            sock.settimeout(left)
            # The handshake apart, so that made() has the TLS socket before it.
            with _MAKING:
                sock = address.ssl_context.wrap_socket(sock, server_hostname=address.host,  # type: ignore[arg-type]  # any stream socket
                                                       do_handshake_on_connect=False)
                made(sock)
            try:
                sock.do_handshake()
            except _socket.timeout:
                raise NothingSentTimeoutError(
                    f"timed out in the TLS handshake with {address}: is it a TLS port?"
                    " (a plain Redis port never answers one; use redis:// there)"
                ) from None
            sock.settimeout(timeout)
    except BaseException:
        sock.close()
        raise
    return sock, deadline


class Connection:
    """An open connection to one server, used by one thread at a time.

    Any exception from ``send`` or ``read_reply`` leaves the connection out of
    step with the server; the caller must ``close`` it.
    """

    __slots__ = ("sock", "setup_deadline", "reader", "pid", "address", "generation", "_selector", "_poll",
                 "_timeout", "_tls", "_plain", "_bulk_buffer", "_bulk_room", "_bulk_earning", "counted", "lease",
                 "__weakref__")

    def __init__(self, address: Address) -> None:
        """Connect to ``address``.

        :raises ConnectionError: the server cannot be reached or refused TLS.
        :raises TimeoutError: connecting took longer than its timeout.
        """
        self.address = address
        _OPEN.add(self)
        try:
            self.sock, self.setup_deadline = _open_socket(address, self._made)
        except TimeoutError:
            raise  # the TLS handshake's, which says so
        except _socket.timeout as exc:
            raise NothingSentTimeoutError(f"timed out connecting to {address}") from exc
        except OSError as exc:
            if address.ssl_context is not None:
                import ssl

                if isinstance(exc, ssl.SSLCertVerificationError):
                    # The hint only where the issuer is unknown: a certificate
                    # for another name, or expired, is refused whatever the CA.
                    hint = ""
                    if exc.verify_code in _UNKNOWN_ISSUER:
                        hint = " (give ssl_ca_certs or ssl_context to trust its CA)"
                    raise CertificateError(
                        f"TLS certificate of {address} not trusted: {exc.verify_message}{hint}"
                    ) from exc
            raise NothingSentError(f"could not connect to {address}: {_describe(exc)}") from exc
        except UnicodeError as exc:  # the IDNA codec refused the host name (an empty or long label)
            raise NothingSentError(f"could not connect to {address}: {exc}") from exc
        self.reader = Reader()
        self.pid = os.getpid()
        self.generation = 0  # the pool's, see pool.Pool.close
        self.counted = True  # the pool's: holds a place under max_connections
        self.lease = 0  # the pool's: bumped each time the connection goes back to it
        self._timeout: Optional[float] = address.connect_timeout
        # Only TCP connections are wrapped in TLS (see _open_socket).
        self._tls = address.ssl_context is not None and address.unix_socket_path is None
        self._selector: "Optional[selectors.BaseSelector]" = None  # where there is no poll()
        # poll() where there is one: no file descriptor of its own to close
        # or to leak across a fork, and cheaper per check than a selector.
        self._poll: Optional["select.poll"] = None
        if _HAS_POLL:
            self._poll = select.poll()
            self._poll.register(self.sock, select.POLLIN)
        # A plain socket with poll() stays blocking and waits for a deadline
        # with poll() (see send and read_reply): a socket with a timeout costs
        # two extra system calls per send() or recv(). TLS cannot: a readable
        # socket may hold only part of a TLS record.
        self._plain = self._poll is not None and not self._tls
        self._bulk_buffer: "Optional[bytearray]" = None  # see _receive_bulk_rest
        self._bulk_room = 0
        self._bulk_earning = 0  # room earned once the reply being read has all arrived

    def __repr__(self) -> str:
        return f"<resp.Connection {self.address}>"

    def _set_deadline(self, deadline: "Optional[float]") -> None:
        if deadline is None:
            if self._timeout is not None:
                self.sock.settimeout(None)
                self._timeout = None
            return
        remaining = deadline - _monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out waiting for {self.address}")
        if remaining > _MAX_SOCKET_TIMEOUT:
            remaining = _MAX_SOCKET_TIMEOUT  # a read that times out before the deadline waits again
        self.sock.settimeout(remaining)
        self._timeout = remaining

    def send(self, parts: "List[Union[bytes, memoryview]]", deadline: "Optional[float]") -> None:
        """Write every part, in order, by ``deadline``.

        :raises NothingSentError: failed before the first byte was written.
        :raises ConnectionError, TimeoutError: failed after that.
        """
        sent_any = False
        if len(parts) == 1:
            # One piece (a short command): one send() call in the usual case.
            data = parts[0]
            try:
                if deadline is not None and self._plain and len(data) <= _SHORT:
                    # Every earlier command on this connection was answered,
                    # so the server has read it and the send buffer is empty:
                    # a short command is copied in at once, never waits, and
                    # needs no timeout.
                    if deadline <= _monotonic():
                        raise TimeoutError(f"timed out waiting for {self.address}")
                    if self._timeout is not None:
                        self.sock.settimeout(None)
                        self._timeout = None
                elif deadline is not None or self._timeout is not None:
                    self._set_deadline(deadline)
                count = self.sock.send(data)
            except TimeoutError:
                raise
            except OSError as exc:
                raise self._write_error(exc, sent_any=False) from exc
            if count == len(data):
                return
            parts = [memoryview(data)[count:]]  # the rest, after a short send
            sent_any = count > 0
        self._send_all(parts, deadline, sent_any)

    def _send_all(self, parts: "List[Union[bytes, memoryview]]", deadline: "Optional[float]", sent_any: bool) -> None:
        views = [memoryview(part) for part in parts]
        # sendmsg() hands the kernel many parts in one call, none copied: a
        # server reading a large value gets it in fewer, larger pieces. TLS
        # sockets have no sendmsg(): a part at a time. A TLS send() that
        # fails may have written some records of its part, but a part holds
        # at most one command, which the server does not run before it has
        # read it whole: when the first part fails, nothing was sent that
        # could have run, and the command may be sent again.
        sendmsg = None if self._tls else getattr(self.sock, "sendmsg", None)
        first = 0  # views[first:] are still to send
        try:
            while first < len(views):
                self._set_deadline(deadline)
                if sendmsg is not None:
                    count = sendmsg(views[first : first + _IOV_MAX])
                else:
                    count = self.sock.send(views[first])
                sent_any = True
                while count:
                    size = len(views[first])
                    if count < size:
                        views[first] = views[first][count:]
                        break
                    count -= size
                    first += 1
        except TimeoutError:
            raise
        except OSError as exc:
            raise self._write_error(exc, sent_any) from exc

    def _write_error(self, exc: OSError, sent_any: bool) -> OSError:
        # socket.timeout is an OSError too (the builtin TimeoutError on 3.10+).
        if isinstance(exc, _socket.timeout):
            return TimeoutError(f"timed out writing to {self.address}")
        error = ConnectionError if sent_any else NothingSentError
        return error(f"error writing to {self.address}: {_describe(exc)}")

    def call(self, parts: "List[Union[bytes, memoryview]]", deadline: "Optional[float]") -> "Reply":
        """Send one command and return its reply, on a connection with no
        reply unread (as the pool hands them out): ``send``, then ``read_reply``.
        With no ``parts``, only receive until the reader has a whole reply.
        """
        if parts:
            data = parts[0]
            size = len(data)
            if len(parts) == 1 and self._timeout is None and (deadline is None or self._plain and size <= _SHORT):
                # One piece, on a blocking socket: with no deadline, or short
                # enough to be copied at once into the send buffer, which is
                # empty on a connection with no reply unread (see send). One send().
                try:
                    count = self.sock.send(data)
                except OSError as exc:
                    raise self._write_error(exc, sent_any=False) from exc
                if count != size:
                    self._send_all([memoryview(data)[count:]], deadline, count > 0)
            else:
                self.send(parts, deadline)
        # Receive until the reader has a whole reply (here, not in a method
        # of its own: a call per command less).
        reader = self.reader
        while True:
            if deadline is not None or self._timeout is not None:
                self._wait_for_bytes(deadline)
            try:
                data = self.sock.recv(_RECV_SIZE)
            except OSError as exc:
                error = self._read_error(exc, deadline)
                if error is None:
                    continue
                raise error from exc
            if not data:
                raise ConnectionError(f"connection closed by {self.address}")
            reader.feed(data)
            reply = reader.gets()
            if reply is False:
                missing = reader.bulk_missing()
                if missing > _RECV_SIZE and self._receive_bulk_rest(missing, deadline):
                    reply = reader.gets()
            if reply is not False:
                if self._bulk_earning:
                    self._bulk_room = max(self._bulk_room, self._bulk_earning)
                    self._bulk_earning = 0
                return reply

    def read_reply(self, deadline: "Optional[float]") -> "Reply":
        """Return the next reply, waiting for it until ``deadline`` at most.

        :raises ConnectionError: the server closed the connection, or it broke.
        :raises TimeoutError: no whole reply by the deadline.
        :raises ProtocolError: the server sent something that is not RESP2.
        """
        reply = self.reader.gets()
        return self.call([], deadline) if reply is False else reply

    def _receive_bulk_rest(self, missing: int, deadline: "Optional[float]") -> bool:
        # The missing rest of a long bulk string, into one buffer kept for
        # the purpose: no pieces to join, no heap churn of a piece per recv().
        # The buffer is only as large as long bulks this connection has
        # already received whole (an unfinished one ends the connection): the
        # size a server claims buys no memory until its bytes arrive. Returns
        # False, having received nothing, where no buffer is allowed yet.
        room = self._bulk_room
        if missing > room:
            # Earned by this value once its bytes have come (see call),
            # not by the length claimed.
            self._bulk_earning = max(self._bulk_earning, min(missing + _RECV_SIZE, _MAX_BULK_BUFFER))
            return False
        buffer = self._bulk_buffer
        if buffer is None or len(buffer) < missing:
            buffer = self._bulk_buffer = bytearray(room)
        view = memoryview(buffer)[:missing]
        got = 0
        while got < missing:
            if deadline is not None or self._timeout is not None:
                self._wait_for_bytes(deadline)
            try:
                count = self.sock.recv_into(view[got:])
            except OSError as exc:
                error = self._read_error(exc, deadline)
                if error is None:
                    continue
                raise error from exc
            if not count:
                raise ConnectionError(f"connection closed by {self.address}")
            got += count
        self.reader.feed_rest(view)
        return True

    def _wait_for_bytes(self, deadline: "Optional[float]") -> None:
        # Before a recv() with a deadline or a socket timeout: wait until the
        # socket has bytes (or EOF) so that recv() returns at once, or raise
        # at the deadline.
        if deadline is None or not self._plain:
            self._set_deadline(deadline)  # the socket's own timeout waits
            return
        if self._timeout is not None:
            self.sock.settimeout(None)
            self._timeout = None
        poll = self._poll.poll  # type: ignore[union-attr]  # self._plain: there is one
        while True:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out reading from {self.address}")
            # poll() takes milliseconds, rounds them up, and stops at 2**31-1
            # (a comparison, not min(): a builtin call costs more).
            milliseconds = remaining * 1000.0
            if poll(milliseconds if milliseconds < _MAX_POLL_MS else _MAX_POLL_MS):
                return

    def _read_error(self, exc: OSError, deadline: "Optional[float]") -> "Optional[OSError]":
        # socket.timeout is an OSError too (the builtin TimeoutError on 3.10+).
        # None: the socket's own timeout, held under _MAX_SOCKET_TIMEOUT,
        # ended before the deadline: receive again.
        if isinstance(exc, _socket.timeout):
            if deadline is not None and deadline > _monotonic():
                return None
            return TimeoutError(f"timed out reading from {self.address}")
        return ConnectionError(f"error reading from {self.address}: {_describe(exc)}")

    def is_readable(self) -> bool:
        """Whether an idle connection has something to read: the server closed
        it, or sent bytes nobody asked for. Either way it must not be reused."""
        reader = self.reader
        # Reader.has_data() inlined: a call costs as much as the test.
        if reader._pos < len(reader._buffer) or reader._stack or reader._pieces:
            return True
        sock = self.sock
        if self._tls and sock.pending():  # type: ignore[attr-defined]  # an ssl.SSLSocket
            return True
        if self._poll is not None:
            return bool(self._poll.poll(0))
        selector = self._selector
        if selector is None:
            import selectors

            selector = self._selector = selectors.DefaultSelector()
            selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(0))

    def _made(self, sock: "Any") -> None:
        # A socket of this connection as it is being opened, known to the
        # fork hook from now on (see _OPEN).
        self.sock = sock

    def close(self) -> None:
        """Close the socket without ``shutdown()``: after a fork the parent's
        side must stay usable."""
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self.sock.close()


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__
