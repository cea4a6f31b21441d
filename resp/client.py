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
4. A blocking command's deadline is its own server-side timeout plus a margin,
   not ``socket_timeout``.
"""

import math
import time

from .connection import Address, Connection, NothingSentError
from .errors import AuthenticationError, ResponseError, _auth_refused
from .pool import Pool
from .protocol import encode_parts

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    import ssl as _ssl
    from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

    from .protocol import CommandArg, Reply

    KeyT = Union[str, bytes]
    ClientT = TypeVar("ClientT", bound="Client")

__all__ = ["Client", "Pipeline"]

_monotonic = time.monotonic
#: Added to a blocking command's own timeout: servers before 7 overshoot it by
#: up to a second, and the reply still has to travel.
BLOCKING_MARGIN = 1.0
#: The longest timeout taken, in seconds (about 31 years): a socket timeout
#: past about 292 years overflows (OverflowError, not a resp error).
MAX_TIMEOUT = 1e9
# Commands whose last argument is a timeout in seconds (0 = forever), and
# those whose first one is. Others that block (XREAD BLOCK, WAIT) get
# ``socket_timeout`` as their deadline.
_BLOCKING_LAST = frozenset({"BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BZPOPMIN", "BZPOPMAX"})
_BLOCKING_FIRST = frozenset({"BLMPOP", "BZMPOP"})
# Commands that would leave a pooled connection changed for the commands that
# come after it on that connection, whoever sends them: refused before
# anything is sent (see _refuse_state_change). A pipeline takes MULTI and
# WATCH when it closes them itself.
_WHY_REFUSED = {
    "MULTI": "a transaction needs one connection: send MULTI … EXEC in one pipeline()",
    "WATCH": "WATCH needs one connection: send WATCH … EXEC in one pipeline()",
    "SELECT": "it would move a pooled connection to another database: give db= (or /N in the URL)",
    "AUTH": "it would change a pooled connection's user: give username= and password=",
    "HELLO": "resp speaks RESP2 only, and authenticates with username= and password=",
    "RESET": "it would reset a pooled connection's database, user and name",
    "SUBSCRIBE": "publish/subscribe is not supported: messages would come unasked",
    "PSUBSCRIBE": "publish/subscribe is not supported: messages would come unasked",
    "SSUBSCRIBE": "publish/subscribe is not supported: messages would come unasked",
    # One reply per channel named, even on a connection subscribed to none:
    # the replies after the first would answer the commands after it.
    "UNSUBSCRIBE": "publish/subscribe is not supported: it answers once per channel",
    "PUNSUBSCRIBE": "publish/subscribe is not supported: it answers once per pattern",
    "SUNSUBSCRIBE": "publish/subscribe is not supported: it answers once per channel",
    "MONITOR": "it would turn a pooled connection into a stream of every command",
    "CLIENT": "CLIENT REPLY would leave a pooled connection without the replies expected",
}
#: Why a pipeline that leaves a MULTI or WATCH open is refused.
UNCLOSED_TRANSACTION = ("a MULTI or WATCH in a pipeline must be closed by EXEC or DISCARD in it "
                        "(a WATCH with no MULTI after it: by UNWATCH): connections are pooled; nothing was sent")
def _database_number(text: str) -> int:
    # A database number in a URL: ASCII digits only (int() also takes "1_0",
    # " 1" and other scripts' digits).
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"the database in a Redis URL must be a number, not {text!r}")
    return int(text)


_URL_QUERY_OPTIONS: "Dict[str, Callable[[str], Any]]" = {
    "db": _database_number,
    "socket_timeout": float,
    "socket_connect_timeout": float,
    "client_name": str,
    "ssl_ca_certs": str,
}


def _command_name(args: "Sequence[CommandArg]", index: int = 0) -> str:
    # The upper-case name of a command (index 1: its subcommand); "" if none.
    name = args[index] if len(args) > index else ""
    if isinstance(name, (bytes, bytearray, memoryview)):
        name = bytes(name).decode("latin-1")  # b"BLPOP" blocks just the same
    return name.upper() if isinstance(name, str) else ""


def _timeout_index(args: "Tuple[CommandArg, ...]", name: "Optional[str]" = None) -> "Optional[int]":
    # Where a blocking command given by its arguments (and its name, if
    # known) has its own timeout; None for a command that does not block.
    if name is None:
        name = _command_name(args)
    if name in _BLOCKING_LAST:
        return len(args) - 1
    if name in _BLOCKING_FIRST and len(args) > 1:
        return 1
    return None


def _refuse_state_change(name: str, args: "Tuple[CommandArg, ...]") -> None:
    # ValueError for a command of _WHY_REFUSED (called with its name).
    if name == "CLIENT" and _command_name(args, 1) != "REPLY":
        return
    raise ValueError(f"{name} is refused, nothing was sent: {_WHY_REFUSED[name]}")


def _allowed_command_name(args: "Tuple[CommandArg, ...]") -> str:
    # The command's upper-case name, once execute() may send it.
    name = _command_name(args)
    if name in _WHY_REFUSED:
        _refuse_state_change(name, args)
    return name


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


#: The shortest fraction of a second sent as a blocking command's timeout.
#: Redis 6.0-6.2 cut a timeout down to whole milliseconds, and 0.001 and less
#: to 0, which means wait forever; they end waits about every 0.1 s anyway.
MIN_FRACTION = 0.01


def blocking_timeout_arg(timeout: float) -> "CommandArg":
    """Check a blocking command's timeout and return it as the server wants it:
    an integer when whole (servers before 6.0 accept nothing else), and at
    least ``MIN_FRACTION`` when positive.

    :raises TypeError: not a number. :raises ValueError: negative, NaN, infinite or over ``MAX_TIMEOUT``.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 <= timeout <= MAX_TIMEOUT:  # False for NaN too
        raise ValueError(f"timeout must be a number of seconds from 0 to {MAX_TIMEOUT:.0e}, not {timeout!r}")
    return int(timeout) if timeout == int(timeout) else max(float(timeout), MIN_FRACTION)


def _blpop_keys(keys: "Union[KeyT, Sequence[KeyT]]") -> "List[CommandArg]":
    """The keys of a ``blpop``: one key, or a sequence of keys. A bytes-like
    key (``bytearray``, ``memoryview`` …) is one key, not a sequence of ints.

    :raises TypeError: ``keys`` is neither a key nor an iterable of keys.
    """
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        return [keys]
    try:
        memoryview(keys)  # type: ignore[arg-type]  # any other bytes-like object: one key
    except TypeError:
        pass
    else:
        return [keys]  # type: ignore[list-item]
    try:
        return list(keys)
    except TypeError:
        raise TypeError(f"keys must be a key or a sequence of keys, not {type(keys).__name__}") from None


class Client:
    """A Redis client over a thread-safe pool of lazily opened connections.

    >>> client = Client(port=6379)                        # doctest: +SKIP
    >>> client.rpush("mylist", "a", b"b", 3)              # doctest: +SKIP
    3

    Every new connection authenticates (``AUTH [username] password``), selects
    ``db`` and sets ``client_name`` before its first command.

    :param socket_timeout: seconds a command may take, from sending it to
        reading its whole reply; ``None`` waits as long as the connection lives.
    :param socket_connect_timeout: seconds to connect; defaults to ``socket_timeout``.
    :param ssl: use TLS, verifying the server's certificate and host name
        against the system's CAs, or ``ssl_ca_certs``, or ``ssl_context``.
    :param client_name: sent as ``CLIENT SETNAME`` on every new connection:
        printable ASCII without spaces, as the server requires (else ``ValueError``).
    :param max_connections: bound on open connections, not counting those
        waiting in a blocking command (``blpop``, ``blmove``, ``BRPOP`` …), so
        that a wait never delays the command that would end it. Past it, a
        command waits its turn for a connection (up to ``socket_timeout``).
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
        ssl_ca_certs: "Optional[str]" = None,
        client_name: "Optional[str]" = None,
        max_connections: "Optional[int]" = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise TypeError("host must be a non-empty str")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int from 1 to 65535, not {port!r}")
        if isinstance(db, bool) or not isinstance(db, int) or db < 0:
            raise ValueError(f"db must be an int >= 0, not {db!r}")
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
                ssl_context = _ssl.create_default_context(cafile=ssl_ca_certs)
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
            if self.username is not None:
                # A user without a password: AUTH with an empty one, which a
                # nopass user accepts and any other refuses (as redis-py does).
                setup.append(("AUTH", self.username, self._password or ""))
            elif self._password is not None:
                setup.append(("AUTH", self._password))
            if self.db:
                setup.append(("SELECT", self.db))
            if self.client_name is not None:
                setup.append(("CLIENT", "SETNAME", self.client_name))
            if setup:
                deadline = None
                timeout = address.connect_timeout
                if timeout is not None:
                    deadline = _monotonic() + timeout
                conn.send([p for args in setup for p in encode_parts(args)], deadline)
                for args in setup:
                    reply = conn.read_reply(deadline)
                    if isinstance(reply, ResponseError):
                        if args[0] == "AUTH":
                            raise AuthenticationError(str(_auth_refused(reply, self._password)))
                        raise reply
        except BaseException:
            conn.close()
            raise
        return conn

    def _call(self, parts: "List[Any]", timeout: "Optional[float]", count: "Optional[int]" = None,
              blocking: bool = False) -> "Reply":
        # Send encoded commands and read one reply (count None: raised if an
        # error) or a list of ``count`` replies (errors left in place).
        # ``blocking``: the server may hold the command (see Pool.acquire).
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
            if count is not None:
                reply = [conn.read_reply(deadline) for _ in range(count)]
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
        # ``server_timeout`` seconds (0 = forever).
        try:
            seconds = float(server_timeout)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            try:  # the server reads C99 hex floats too: '0x3', '0x1.8p1'
                text = server_timeout.decode() if isinstance(server_timeout, bytes) else server_timeout
                seconds = float.fromhex(text)  # type: ignore[arg-type]
            except (TypeError, ValueError):  # UnicodeDecodeError included
                return self.socket_timeout  # the server will refuse it at once
        if seconds == 0 or MAX_TIMEOUT < seconds < math.inf:
            return None  # forever, or as good as
        if not 0 < seconds < math.inf:
            return self.socket_timeout
        return seconds + BLOCKING_MARGIN + (self.socket_timeout or 0.0)

    def execute(self, *args: "CommandArg") -> "Reply":
        """Send one command and return its reply.

        Bulk strings come back as ``bytes``, status replies as ``str``,
        integers as ``int``, arrays as ``list``, nulls as ``None``; an error
        inside an array is a ``ResponseError`` in its place.

        :raises TypeError: an argument is not bytes-like, ``str``, ``int`` or
            ``float``; nothing was sent.
        :raises ValueError: a command that would change the connection for
            the commands after it (``MULTI``, ``WATCH``, ``SELECT``, ``AUTH``,
            ``HELLO``, ``RESET``, ``SUBSCRIBE``…, ``UNSUBSCRIBE``…, ``MONITOR``, ``CLIENT REPLY``):
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

    def _timeout_for(self, args: "Tuple[CommandArg, ...]") -> "Optional[float]":
        # How long a command given by its arguments may take: socket_timeout,
        # or for a blocking command its own timeout plus a margin.
        index = _timeout_index(args)
        return self.socket_timeout if index is None else self._blocking_timeout(args[index])

    def pipeline(self) -> "Pipeline":
        """Return a ``Pipeline``: queue commands, then send them in one write."""
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
            wait = timeout + BLOCKING_MARGIN + (self.socket_timeout or 0.0) if timeout else None
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


class Pipeline:
    """Commands queued with ``command`` and sent in one write by ``execute``.

    >>> pipe = client.pipeline()                          # doctest: +SKIP
    >>> pipe.command("RPUSH", "q", "a").command("LLEN", "q").execute()  # doctest: +SKIP
    [1, 1]

    Not atomic (use ``MULTI``/``EXEC`` inside it for that), and not for
    blocking commands. A ``MULTI`` or ``WATCH`` must be closed by ``EXEC``
    or ``DISCARD`` in the same pipeline (a ``WATCH`` with no ``MULTI`` after
    it, by ``UNWATCH``); the commands ``execute`` refuses (``SELECT``…) are
    refused here too. A pipeline with a ``WATCH`` ends with an ``UNWATCH``
    of its own, whose reply is dropped.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._parts: List[Any] = []
        self._count = 0
        self._open = 0  # a MULTI or WATCH queued and not closed yet (see _still_open)
        self._watched = False  # a WATCH queued: execute() ends with an UNWATCH (see there)

    def __len__(self) -> int:
        return self._count

    def command(self, *args: "CommandArg") -> "Pipeline":
        """Queue one command (encoded now, so bad arguments raise here)."""
        parts = encode_parts(args)
        self._open = _still_open(args, self._open)
        if self._open == 2:
            self._watched = True
        if len(parts) > 1 or type(parts[0]) is not bytes:
            # A long bytearray or memoryview comes back as a view of the
            # caller's buffer: copied, so that execute() sends what was queued.
            parts = [part if type(part) is bytes else bytes(part) for part in parts]
        self._parts.extend(parts)
        self._count += 1
        return self

    def execute(self, raise_on_error: bool = True) -> "List[Reply]":
        """Send the queued commands and return their replies in order.

        Every reply is read even when some are errors; then, with
        ``raise_on_error``, the first error is raised, else errors stay in the
        list as ``ResponseError`` instances. The queue is emptied either way.
        """
        parts, count, still_open, watched = self._parts, self._count, self._open, self._watched
        self._parts, self._count, self._open, self._watched = [], 0, 0, False
        if still_open:
            raise ValueError(UNCLOSED_TRANSACTION)
        if not count:
            return []
        if watched:
            # The commands close what they open, as the server answers when
            # it runs them all; but a MULTI it refuses (an ACL) would leave
            # the WATCH on the pooled connection, to abort a later
            # transaction there. An UNWATCH after them, its reply dropped.
            parts.append(b"*1\r\n$7\r\nUNWATCH\r\n")
        client = self._client
        replies: List[Reply] = client._call(parts, client.socket_timeout, count + 1 if watched else count)
        if watched:
            replies.pop()
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies


# What a pipeline leaves open on its connection: 0 nothing, 1 a MULTI (with
# or without keys watched: its EXEC or DISCARD ends both), 2 keys watched and
# no MULTI. For each command that changes it, the state after it from each
# state before it. The server refuses EXEC and DISCARD without a MULTI and
# changes nothing then: they do not end a WATCH on their own; UNWATCH does.
_TRANSITIONS = {
    "MULTI": (1, 1, 1),
    "WATCH": (2, 1, 2),  # refused inside a MULTI
    "EXEC": (0, 0, 2),
    "DISCARD": (0, 0, 2),
    "UNWATCH": (0, 1, 0),  # inside a MULTI only queued
}


def _still_open(args: "Tuple[CommandArg, ...]", open_before: int) -> int:
    """What a pipeline leaves open once ``args`` is queued after the commands
    before it (which left ``open_before``): 0 nothing, else a MULTI or WATCH.

    :raises ValueError: a command a pipeline refuses (see ``Client.execute``).
    """
    name = args[0]
    name = name.upper() if type(name) is str else _command_name(args)
    transitions = _TRANSITIONS.get(name)
    if transitions is not None:
        return transitions[open_before]
    if name in _WHY_REFUSED:
        _refuse_state_change(name, args)
    return open_before


def _check_no_at_after_host(url: str) -> None:
    # An '@' after the host part: a password holding an unescaped '/', '?' or
    # '#' ended the host part early, and the rest of it would reach error
    # messages as a database, an option or a host name. Refused, repeating
    # nothing of the URL.
    rest = url.partition("://")[2]
    ends = [index for index in (rest.find("/"), rest.find("?"), rest.find("#")) if index >= 0]
    host_part_end = min(ends, default=len(rest))
    if host_part_end and "@" in rest[host_part_end:]:
        raise ValueError(
            "malformed Redis URL: an '@' after the host; percent-encode '@', '/', '?' and '#' "
            "in a user name, password or option (e.g. '/' as %2F)"
        )


def _node_address(node: object) -> "Tuple[str, int]":
    # A cluster or sentinel node given as "host:port" or a (host, port) pair.
    # int() alone would take " 7000", "7_000" and other scripts' digits, and
    # a bare host or a None failed as "invalid literal for int()" or "cannot
    # unpack non-iterable NoneType object".
    if isinstance(node, str):
        host, _, port = node.rpartition(":")
        if host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
            return host.strip("[]"), int(port)
        raise ValueError(f"a node is 'host:port' or a (host, port) pair, not {node!r}")
    if isinstance(node, (tuple, list)) and len(node) == 2:
        host, port = node
        if isinstance(host, str) and host and isinstance(port, int) and not isinstance(port, bool) \
                and 0 < port < 65536:
            return host, int(port)
    raise TypeError(f"a node is 'host:port' or a (host, port) pair, not {node!r}")


def parse_url(url: str) -> "Dict[str, Any]":
    """Return the ``Client`` options that a ``redis://``, ``rediss://`` or
    ``unix://`` URL gives.

    :raises ValueError: the URL is malformed; the message never repeats a password.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    _check_no_at_after_host(url)
    from urllib.parse import parse_qsl, unquote, urlsplit  # only programs that use URLs pay for it

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("malformed Redis URL (expected redis://[[user]:password@]host[:port][/db])") from None
    options: Dict[str, Any] = {}
    if parts.username:
        options["username"] = unquote(parts.username)
    if parts.password:  # redis://:@host has no password, as in redis-py and redis-cli
        options["password"] = unquote(parts.password)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path:
            raise ValueError("a unix:// URL needs a socket path, e.g. unix:///run/redis.sock")
        if parts.hostname:  # unix://tmp/redis.sock: 'tmp' would silently drop out of the path
            raise ValueError("a unix:// URL has no host: give the socket path after three slashes, "
                             "e.g. unix:///run/redis.sock")
        options["unix_socket_path"] = unquote(parts.path)
    elif scheme in ("redis", "rediss"):
        if parts.hostname:
            options["host"] = unquote(parts.hostname)
        if port is not None:
            options["port"] = port
        path = parts.path.strip("/")
        if path:
            options["db"] = _database_number(path)
        if scheme == "rediss":
            options["ssl"] = True
    else:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r}: use redis://, rediss:// or unix://")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        convert = _URL_QUERY_OPTIONS.get(name)
        if convert is None:
            raise ValueError(f"unknown option {name!r} in Redis URL")
        try:
            options[name] = convert(value)
        except ValueError:
            raise ValueError(f"bad value for {name!r} in Redis URL: {value!r}") from None
    return options
