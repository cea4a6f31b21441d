"""``Client``: send any command, with methods for the list commands a queue uses.

Rules this module keeps:

1. Arguments are checked and encoded before a connection is even taken: bad
   input raises ``TypeError`` or ``ValueError`` with nothing sent.
2. A command is resent only when not one byte of it reached the socket (a pooled
   connection found broken on the first write). Once anything was sent, a
   failure raises: an ``RPUSH`` is never doubled, a ``BLPOP``'s message never
   silently lost.
3. Any exception between sending a command and reading its whole reply, even a
   ``KeyboardInterrupt``, closes that connection, so no reply can ever reach the
   wrong command.
4. A blocking command's deadline is its own server-side timeout and as long
   again (``BLOCKING_MARGIN``, 5 s, at least), plus ``socket_timeout``.
"""

import math
import time

from .commands import (
    MAX_TIMEOUT,
    _allowed_command_name,
    _blpop_keys,
    _timeout_index,
    blocking_timeout_arg,
)
from .connection import _HOST_WITH_AT, Address, Connection, NothingSentError, _while_connecting
from .errors import AuthenticationError, MaxClientsError, ResponseError, _auth_refused
from .pool import Pool
from .protocol import encode_parts

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    import ssl as _ssl
    from typing import Any, Callable, List, Optional, Sequence, Tuple, Type, TypeVar, Union

    from .pipeline import Pipeline
    from .protocol import CommandArg, Reply

    KeyT = Union[str, bytes]
    ClientT = TypeVar("ClientT", bound="Client")

__all__ = ["Client"]

_monotonic = time.monotonic
#: After a blocking command's own timeout the client waits as long again for
#: its reply, and never less than this: servers before 7 overshoot the timeout
#: by up to a second, the reply still has to travel, and a server stalled past
#: it (a script under the 5 s busy threshold, a slow disk, a large DEL) may be
#: about to send a value it has already popped, which giving up on it would
#: lose. So a value is lost that way only in a stall longer than this and than
#: the wait itself.
BLOCKING_MARGIN = 5.0
#: One more than the highest database a server can have (its ``databases``
#: setting is a C int).
MAX_DB = 2**31 - 1


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_timeout(name: str, value: "Optional[float]") -> "Optional[float]":
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    if not 0 < value <= MAX_TIMEOUT:  # False for NaN too
        raise ValueError(
            f"{name} must be a positive number of seconds (at most {MAX_TIMEOUT:.0e}) or None, not {value!r}"
        )
    return float(value)


class Client:
    """A Redis client over a thread-safe pool of lazily opened connections.

    >>> client = Client(port=6379)                        # doctest: +SKIP
    >>> client.rpush("mylist", "a", b"b", 3)              # doctest: +SKIP
    3

    Every new connection authenticates (``AUTH [username] password``), selects
    ``db`` and sets ``client_name`` before its first command.

    :param socket_timeout: seconds a command may take, from sending it to
        reading its whole reply; ``None`` waits as long as the connection lives.
    :param socket_connect_timeout: seconds to connect, the TLS handshake and the
        setup commands included (each of a host's addresses is tried with the
        whole of it); defaults to ``socket_timeout``.
    :param ssl: use TLS, verifying the server's certificate and host name
        against the system's CAs, or ``ssl_ca_certs``, or ``ssl_context``
        (any of the three asks for TLS; with ``unix_socket_path``, ``ValueError``).
    :param client_name: sent as ``CLIENT SETNAME`` on every new connection:
        printable ASCII without spaces, as the server requires (else ``ValueError``).
    :param max_connections: bound on open connections, not counting those
        waiting in a blocking command (``blpop``, ``blmove``, ``BRPOP`` …), so
        that a wait never delays the command that would end it. Past it, a
        command waits its turn for a connection, up to ``socket_timeout``,
        before its own ``socket_timeout`` starts as it is sent.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        db: int = 0,
        password: "Optional[str]" = None,
        username: "Optional[str]" = None,
        socket_timeout: "Optional[float]" = None,
        socket_connect_timeout: "Optional[float]" = None,
        unix_socket_path: "Optional[str]" = None,
        ssl: bool = False,
        ssl_context: "Optional[_ssl.SSLContext]" = None,
        client_name: "Optional[str]" = None,
        max_connections: "Optional[int]" = None,
        ssl_ca_certs: "Optional[str]" = None,  # last: positional calls made without it keep their meaning
    ) -> None:
        if not isinstance(host, str) or not host:
            raise TypeError("host must be a non-empty str")
        if "@" in host:  # not repeated: what comes before the '@' may be a password
            raise ValueError(_HOST_WITH_AT)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int from 1 to 65535, not {port!r}")
        if isinstance(db, bool) or not isinstance(db, int) or not 0 <= db < MAX_DB:
            raise ValueError(f"db must be an int from 0 to {MAX_DB - 1}, not {db!r}")
        for name, value in (("password", password), ("username", username),
                            ("client_name", client_name), ("ssl_ca_certs", ssl_ca_certs),
                            ("unix_socket_path", unix_socket_path)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None")
        for name, value in (("password", password), ("username", username)):
            # Sent as UTF-8, unlike the paths (a lone surrogate there stands
            # for a byte of a non-UTF-8 file name). The value is not repeated.
            if value is not None and not _encodable(value):
                raise ValueError(f"{name} cannot be encoded as UTF-8 (it holds a lone surrogate)")
        if client_name is not None and not all("!" <= char <= "~" for char in client_name):
            # The server's own rule for CLIENT SETNAME: it would refuse every connection.
            raise ValueError(f"client_name must be printable ASCII without spaces, not {client_name!r}")
        if not isinstance(ssl, bool):
            raise TypeError(f"ssl must be True or False, not {type(ssl).__name__}")
        if ssl_ca_certs == "":
            raise ValueError("ssl_ca_certs is empty: give the path of a CA file, or None for the system's CAs")
        if ssl_context is not None and ssl_ca_certs is not None:
            # The file would be ignored: the context says whom it trusts.
            raise ValueError("give ssl_ca_certs or ssl_context, not both "
                             "(ssl_context.load_verify_locations(path) adds a CA to a context)")
        if unix_socket_path is not None and (ssl or ssl_context is not None or ssl_ca_certs is not None):
            # Not silently in plain text: the caller asked for TLS.
            raise ValueError("TLS is not available on a unix socket: give ssl, ssl_context and ssl_ca_certs"
                             " only with host and port")
        if max_connections is not None and (
            isinstance(max_connections, bool) or not isinstance(max_connections, int)
            or max_connections < 1
        ):
            raise ValueError(f"max_connections must be an int >= 1 or None, not {max_connections!r}")
        self.socket_timeout = _check_timeout("socket_timeout", socket_timeout)
        connect_timeout = _check_timeout("socket_connect_timeout", socket_connect_timeout)
        if ssl_context is not None or ssl or ssl_ca_certs is not None:
            import ssl as _ssl  # here, not at the top: only TLS users pay for it

            if ssl_context is not None and not isinstance(ssl_context, _ssl.SSLContext):
                raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {type(ssl_context).__name__}")
            if ssl_context is None:
                try:
                    ssl_context = _ssl.create_default_context(cafile=ssl_ca_certs)
                except OSError as exc:  # ssl.SSLError too: a file that holds no certificate
                    # ssl's own message names no file.
                    raise type(exc)(exc.errno, f"cannot load ssl_ca_certs {ssl_ca_certs!r}: {exc.strerror}") from None
        self.address = Address(
            host, port, unix_socket_path, ssl_context,
            connect_timeout if connect_timeout is not None else self.socket_timeout,
        )
        self.db = db
        self.username = username
        self._password = password
        self.client_name = client_name
        self._pool = Pool(self._connect, max_connections, self.socket_timeout)

    @classmethod
    def from_url(cls: "Type[ClientT]", url: str, **overrides: "Any") -> "ClientT":
        """Make a client from a URL; keyword arguments override what it says.

        ``redis://[[username]:password@]host[:port][/db]``, ``rediss://…`` for
        TLS, ``unix:///path/to/socket?db=N``. The query string may also give
        ``db``, ``socket_timeout``, ``socket_connect_timeout``, ``client_name``
        and ``ssl_ca_certs``.

        :raises ValueError: the URL is malformed (the message never repeats
            the password).
        """
        from .urls import parse_url  # only programs that use URLs pay for it

        return cls(**{**parse_url(url), **overrides})

    def __repr__(self) -> str:
        return f"<resp.Client {self.address} db={self.db}>"

    def __enter__(self: "ClientT") -> "ClientT":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every idle connection now, and each busy one as its command
        ends. The client stays usable: a later command connects again."""
        self._pool.close()

    def _connect(self) -> Connection:
        return self._connect_to(self.address)

    def _connect_to(self, address: Address) -> Connection:
        # A new connection to address, set up as the options say.
        conn = Connection(address)
        try:
            setup: List[Tuple[CommandArg, ...]] = []
            # An empty user name or password is none, as in a URL, redis-py
            # and HotQueue 0.2.8: password="" sends no AUTH.
            if self.username:
                # A user without a password: AUTH with an empty one, which a
                # nopass user accepts and any other refuses (as redis-py does).
                setup.append(("AUTH", self.username, self._password or ""))
            elif self._password:
                setup.append(("AUTH", self._password))
            if self.db:
                setup.append(("SELECT", self.db))
            if self.client_name is not None:
                setup.append(("CLIENT", "SETNAME", self.client_name))
            if setup:
                deadline = conn.setup_deadline  # part of connecting: what is left of its timeout
                conn.send([p for args in setup for p in encode_parts(args)], deadline)
                for args in setup:
                    reply = conn.read_reply(deadline)
                    if isinstance(reply, ResponseError):
                        if args[0] == "AUTH" and not isinstance(reply, MaxClientsError):
                            raise AuthenticationError(str(_auth_refused(reply, self._password)))
                        raise reply
        except BaseException as exc:
            conn.close()
            error = _while_connecting(exc)
            if error is not exc:
                raise error from exc
            raise
        return conn

    def _call(self, parts: "List[Any]", timeout: "Optional[float]", count: "Optional[int]" = None,
              blocking: bool = False, keep: "Optional[Callable[[List[Reply]], bool]]" = None) -> "Reply":
        # Send encoded commands and read one reply (count None: raised if an
        # error) or a list of ``count`` replies (errors left in place).
        # ``blocking``: the server may hold the command (see Pool.acquire).
        # ``keep``: given the replies, False if they leave the connection in a
        # state the pool must not hand out (see Pipeline.execute): closed.
        pool = self._pool
        # The connection taken, put here by acquire (and replace) before they
        # return: whatever is raised from then on (an interrupt included, even
        # one handled as acquire returns, before its result is stored)
        # discards it, which gives its place under the bound back.
        held: List[Connection] = []
        lease: Optional[int] = None  # changed by release once the connection is back in the pool
        try:
            conn, reused = pool.acquire(blocking, held)
            lease = conn.lease
            deadline = None if timeout is None else _monotonic() + timeout
            while True:
                try:
                    if count is None:
                        reply = conn.call(parts, deadline)
                    else:
                        conn.send(parts, deadline)
                    break
                except NothingSentError:
                    if not reused:
                        raise
                    # The pooled connection was dead before it carried
                    # anything: resend once on a fresh one, in its place
                    # (given back by replace if that fails; discarding the
                    # closed one below is then a no-op).
                    lease = None
                    conn = pool.replace(conn, held)
                    lease = conn.lease
                    reused = False
                    # From sending, as for the first try: connecting again
                    # had a timeout of its own.
                    deadline = None if timeout is None else _monotonic() + timeout
            if count is not None:
                reply = [conn.read_reply(deadline) for _ in range(count)]
                if keep is not None and not keep(reply):
                    pool.discard(conn)
                    return reply
            pool.release(conn)
        except BaseException:
            # An interrupt as release returns finds the connection back in
            # the pool already, maybe in another thread's hands: leave it.
            if held and (lease is None or held[-1].lease == lease):
                pool.discard(held[-1])
            raise
        if count is None and isinstance(reply, ResponseError):
            raise reply
        return reply

    def _blocking_timeout(self, server_timeout: object) -> "Optional[float]":
        # The deadline of a command that the server itself holds for
        # ``server_timeout`` seconds (0 = forever). blpop's fast path and the
        # CLI's _pop_grace repeat its sum: keep the three alike.
        try:
            seconds = float(server_timeout)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
            try:  # the server reads C99 hex floats too: '0x3', '0x1.8p1'
                text = server_timeout if isinstance(server_timeout, str) else (
                    memoryview(server_timeout).tobytes().decode())  # type: ignore[arg-type]
                seconds = float.fromhex(text)
            except (TypeError, ValueError, OverflowError):  # UnicodeDecodeError included
                return self.socket_timeout  # the server will refuse it at once
        if seconds == 0 or MAX_TIMEOUT < seconds < math.inf:
            return None  # forever, or as good as
        if not 0 < seconds < math.inf:
            return self.socket_timeout
        return seconds + max(seconds, BLOCKING_MARGIN) + (self.socket_timeout or 0.0)

    def execute(self, *args: "CommandArg") -> "Reply":
        """Send one command and return its reply.

        Bulk strings come back as ``bytes``, status replies as ``str``,
        integers as ``int``, arrays as ``list``, nulls as ``None``; an error
        inside an array is a ``ResponseError`` in its place.

        :raises TypeError: an argument is not bytes-like, ``str``, ``int`` or
            ``float``; nothing was sent.
        :raises ValueError: a command that would change the connection for
            the commands after it (``MULTI``, ``WATCH``, ``SELECT``, ``AUTH``,
            ``HELLO``, ``RESET``, ``SUBSCRIBE``…, ``UNSUBSCRIBE``…, ``MONITOR``, ``CLIENT REPLY``,
            ``QUIT``, ``SYNC``, ``PSYNC``, ``REPLCONF``, ``SCRIPT DEBUG`` but ``NO``):
            connections are pooled; nothing was sent.
        :raises ResponseError: the server answered with an error.
        :raises ConnectionError, TimeoutError, ProtocolError: the connection
            failed; it was closed.
        """
        parts = encode_parts(args)
        index = _timeout_index(args, _allowed_command_name(args))
        if index is None:
            return self._call(parts, self.socket_timeout)
        return self._call(parts, self._blocking_timeout(args[index]), blocking=True)

    def pipeline(self) -> "Pipeline":
        """Return a ``Pipeline``: queue commands, then send them in one write."""
        from .pipeline import Pipeline

        return Pipeline(self)

    # The list commands a queue needs. Keys and values: bytes-like or str.

    def ping(self) -> bool:
        """``PING``: True when the server answers."""
        return self._call(encode_parts(("PING",)), self.socket_timeout) == "PONG"  # type: ignore[no-any-return]

    def rpush(self, key: "KeyT", *values: "CommandArg") -> int:
        """``RPUSH``: append ``values`` in one atomic command; return the new length."""
        if not values:
            raise ValueError("rpush needs at least one value")
        return self._call(encode_parts(("RPUSH", key) + values), self.socket_timeout)  # type: ignore[no-any-return]

    def lpop(self, key: "KeyT", count: "Optional[int]" = None) -> "Any":
        """``LPOP``: the first value (``bytes``) or ``None`` when the list is empty;
        with ``count`` (Redis 6.2+), a list of up to ``count`` values or ``None``."""
        if count is None:
            return self._call(encode_parts(("LPOP", key)), self.socket_timeout)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an int >= 0, not {count!r}")
        return self._call(encode_parts(("LPOP", key, count)), self.socket_timeout)

    def blpop(self, keys: "Union[KeyT, Sequence[KeyT]]", timeout: float = 0) -> "Optional[Tuple[bytes, bytes]]":
        """``BLPOP``: wait up to ``timeout`` seconds (0 = forever) for a value on
        any of ``keys``; return ``(key, value)`` or ``None`` on timeout."""
        if type(keys) is str and type(timeout) is int and 0 <= timeout <= MAX_TIMEOUT:
            # One key and whole seconds, as a queue asks: what the checks of
            # the general case below would let through unchanged, and the
            # wait _blocking_timeout would give (None: forever).
            wait = timeout + max(timeout, BLOCKING_MARGIN) + (self.socket_timeout or 0.0) if timeout else None
            reply = self._call(encode_parts(("BLPOP", keys, timeout)), wait, blocking=True)
            return None if reply is None else (reply[0], reply[1])
        key_list = _blpop_keys(keys)
        if not key_list:
            raise ValueError("blpop needs at least one key")
        server_timeout = blocking_timeout_arg(timeout)
        reply = self._call(encode_parts(("BLPOP", *key_list, server_timeout)), self._blocking_timeout(server_timeout),
                           blocking=True)
        return None if reply is None else (reply[0], reply[1])

    def llen(self, key: "KeyT") -> int:
        """``LLEN``: the length of a list, 0 when the key is missing."""
        return self._call(encode_parts(("LLEN", key)), self.socket_timeout)  # type: ignore[no-any-return]

    def delete(self, *keys: "KeyT") -> int:
        """``DEL``: delete keys; return how many existed."""
        if not keys:
            raise ValueError("delete needs at least one key")
        return self._call(encode_parts(("DEL",) + keys), self.socket_timeout)  # type: ignore[no-any-return]

    def lmove(
        self, source: "KeyT", destination: "KeyT", wherefrom: str = "LEFT", whereto: str = "RIGHT"
    ) -> "Optional[bytes]":
        """``LMOVE`` (Redis 6.2+): move one value between lists atomically; return
        it, or ``None`` when ``source`` is empty."""
        return self._call(  # type: ignore[no-any-return]
            encode_parts(("LMOVE", source, destination, wherefrom, whereto)), self.socket_timeout
        )

    def blmove(self, source: "KeyT", destination: "KeyT", timeout: float = 0,
               wherefrom: str = "LEFT", whereto: str = "RIGHT") -> "Optional[bytes]":
        """``BLMOVE`` (Redis 6.2+): like ``lmove``, waiting up to ``timeout``
        seconds (0 = forever); ``None`` on timeout."""
        server_timeout = blocking_timeout_arg(timeout)
        return self._call(  # type: ignore[no-any-return]
            encode_parts(("BLMOVE", source, destination, wherefrom, whereto, server_timeout)),
            self._blocking_timeout(server_timeout), blocking=True,
        )
