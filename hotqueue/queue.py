"""HotQueue: a FIFO queue of Python objects in one Redis list.

>>> from hotqueue import HotQueue
>>> queue = HotQueue("myqueue", host="localhost", port=6379, db=0)   # doctest: +SKIP
>>> queue.put("my message", {"any": "picklable object"})             # doctest: +SKIP
>>> queue.get()                                                      # doctest: +SKIP
'my message'

The list lives at ``hotqueue:<name>``; messages are pickled by default, so old
(0.2.8) and new producers and consumers can share one queue. Unpickling runs
code: consume only from a Redis that only trusted programs write to, or use
``serializer=json``.
"""

import time

import resp

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import hotqueue``
if TYPE_CHECKING:
    import logging
    from typing import Any, Callable, ContextManager, Iterator, Optional, Union, overload

    from .reliable import DeadLetters, QueueStats

__all__ = ["HotQueue", "key_for_name"]


def _log() -> "logging.Logger":
    # logging (about 30 modules) is imported the first time there is
    # something to say, not by every program that imports hotqueue.
    import logging

    return logging.getLogger("hotqueue")


class _Pickle:
    # The default serializer: the pickle module, imported by the first queue
    # that uses it rather than by ``import hotqueue``.
    def __repr__(self) -> str:
        return "pickle"


_PICKLE = _Pickle()

#: Reconnection backoff of ``consume`` and ``worker``: first wait, cap.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
# What consume and worker wait out: a server out of reach, still loading or
# held by a long script, a cluster that stayed down or kept redirecting
# (nothing was run).
RIDE_OUT = (resp.ConnectionError, resp.TimeoutError, resp.BusyLoadingError, resp.BusyScriptError,
            resp.ClusterDownError, resp.ClusterError)
# Kinds of those that waiting will not change, raised at once: a refused TLS
# certificate (a configuration to fix, as a refused password is) and keys in
# different cluster slots (a pop of one key never meets it; the reliable
# consumer's scripts have several keys).
NOT_RIDDEN_OUT = (resp.CertificateError, resp.CrossSlotError)
#: A wait with no timeout is a series of BLPOPs of this many seconds (whole:
#: the client's fast path): a server that stops answering without closing the
#: connection (frozen, or a failover's old primary cut off) is noticed within
#: two slices and socket_timeout (the client waits for a reply as long again
#: as the command's own timeout), where one endless BLPOP would wait for ever.
WAIT_SLICE = 30

_CONNECTION_OPTIONS = frozenset(
    {
        "host", "port", "db", "password", "username", "socket_timeout",
        "socket_connect_timeout", "unix_socket_path", "ssl", "ssl_context",
        "ssl_ca_certs", "client_name", "max_connections",
    }
)



def key_for_name(name: str) -> str:
    """Return the Redis key of the queue called ``name``: ``'hotqueue:' + name``.

    :raises TypeError: ``name`` is not a ``str`` (a ``bytes`` name would become
        ``hotqueue:b'…'``).
    """
    if not isinstance(name, str):
        raise TypeError(f"queue name must be a str, not {type(name).__name__}")
    return "hotqueue:" + name


#: ``resp.MAX_TIMEOUT`` as an int: ``get`` compares an int timeout with it
#: on every call, and an int with an int is the cheaper comparison.
_MAX_WHOLE_TIMEOUT = int(resp.MAX_TIMEOUT)


def _check_timeout(timeout: "Optional[float]") -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not 0 <= timeout <= resp.MAX_TIMEOUT:  # False for NaN too
        raise ValueError(f"timeout must be a number of seconds from 0 to {resp.MAX_TIMEOUT:.0e}, not {timeout!r}")


class _RidingOut:
    """A wait for messages riding out a server that goes away: the backoff
    between tries, and how much of ``timeout`` (None or 0: none) the waits
    for the next message have used. A wait counts only when a connection
    broke or fell silent under it after the link was seen alive since the
    last failure (the probe after the reconnection answered, or a wait
    replied): time spent connecting, in a cluster that is down or waiting for
    a place in the pool is not time waiting on a live connection, and the
    first wait cut short is not counted either."""

    __slots__ = ("name", "timeout", "backoff", "waited", "seen_alive", "probing")

    def __init__(self, name: str, timeout: "Optional[float]") -> None:
        self.name, self.timeout = name, timeout
        self.backoff = BACKOFF_FIRST
        self.waited = 0.0
        self.seen_alive = False
        self.probing = False  # whether to see the link answer before the next wait

    def failed(self, exc: Exception, started: float) -> bool:
        """Count the wait begun at ``started`` (monotonic) that raised
        ``exc``, log it and sleep the backoff; False, without sleeping, once
        the timeout is used up. Raises ``exc`` again if it is not ridden out."""
        if isinstance(exc, NOT_RIDDEN_OUT):
            raise exc
        if self.timeout and self.seen_alive and type(exc) in (resp.ConnectionError, resp.TimeoutError):
            self.waited += time.monotonic() - started
            if self.waited >= self.timeout:
                return False  # the wait has timed out, in pieces
        self.seen_alive, self.probing = False, bool(self.timeout)
        _log().warning("queue %r: %s; retrying in %.1f s", self.name, exc, self.backoff)
        time.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        return True

    def answered(self) -> None:
        """The link answered the probe: waits on it count again (the backoff
        goes on growing until a wait ends with a reply)."""
        self.seen_alive, self.probing = True, False

    def replied(self) -> None:
        """A wait ended with a reply: the next one is a new wait."""
        self.backoff, self.waited, self.seen_alive, self.probing = BACKOFF_FIRST, 0.0, True, False

    def left(self) -> float:
        """What is left of the timeout for the next wait (0: none). Whole
        seconds stay whole: servers before 6.0 take no other timeout."""
        timeout = self.timeout
        if not timeout or not self.waited:
            return timeout or 0
        left = timeout - self.waited
        return max(1, round(left)) if isinstance(timeout, int) else left


#: How long the wait that checks a new connection takes (see _probe).
PROBE_WAIT = 0.01


def _probe(client: "Any", key: str) -> None:
    # After a reconnection, whether the link answers, before the next wait
    # counts toward a timeout: a BLMOVE of the queue onto itself, head to
    # head, waiting a hundredth of a second. The client waits for its reply
    # its margin (resp.BLOCKING_MARGIN) plus socket_timeout, a bound even with
    # socket_timeout=None, where an LLEN would wait for as long as a server that accepts
    # connections and never answers (a stopped process) stays so; and it
    # moves nothing, even run by a server that wakes after the client gave up
    # on it (a pop would then take a message and lose it). Any answer will
    # do, a refusal too (no BLMOVE before Redis 6.2, or not for this user),
    # but one that says the server is not ready yet: ridden out.
    try:
        client.blmove(key, key, PROBE_WAIT, "LEFT", "LEFT")
    except resp.ResponseError as exc:
        if isinstance(exc, RIDE_OUT):  # LOADING, BUSY, CLUSTERDOWN
            raise


def _no_loads(serializer: "Any", loads: "Any") -> TypeError:
    """The error for a serializer set later whose ``loads`` cannot be called
    (``None``, a string): raised before a message is taken, which would
    otherwise be lost, or handed over as raw bytes."""
    return TypeError(f"serializer {serializer!r} has loads={loads!r}, not callable: it cannot read a message")


_WORKER_OPTIONS = frozenset({"block", "timeout", "reliable"})
_RELIABLE_WORKER_OPTIONS = _WORKER_OPTIONS | {"max_attempts", "heartbeat_ttl", "consumer_id"}
_RAW_TYPES = frozenset({bytes, str, int, float, bytearray, memoryview})
_DUMPED_TYPES = frozenset({bytes, str, bytearray, memoryview})


def _raw(message: "Any") -> "Union[bytes, bytearray, memoryview, str, int, float]":
    # What serializer=None accepts: the types Redis stores without ambiguity.
    if isinstance(message, bool) or not isinstance(
        message, (bytes, bytearray, memoryview, str, int, float)
    ):
        raise TypeError(
            "with serializer=None a message must be bytes, str, int or float, "
            f"not {type(message).__name__}"
        )
    return message


def _dumped(data: "Any", serializer: "Any") -> "Union[bytes, bytearray, memoryview, str]":
    if isinstance(data, (bytes, bytearray, memoryview, str)):
        return data
    try:
        view = memoryview(data)  # any other bytes-like object: array.array, mmap, …
    except TypeError:
        view = None
    if view is None or not view.ndim:  # no buffer, or a number's machine bytes (numpy.int64)
        raise TypeError(f"{serializer!r}.dumps returned {type(data).__name__}, not bytes-like or str")
    return view


class HotQueue:
    """A FIFO queue of messages in the Redis list ``hotqueue:<name>``.

    >>> queue = HotQueue("myqueue", host="localhost", port=6379, db=0)  # doctest: +SKIP

    :param name: the queue's name (a non-empty ``str``).
    :param serializer: anything with ``dumps`` and ``loads`` — ``pickle`` (the
        default), ``json``, a class — or ``None`` to store ``bytes``, ``str``,
        ``int`` and ``float`` as they are (``get`` then returns ``bytes``).
    :param kwargs: connection options for ``resp.Client`` (``host``, ``port``,
        ``db``, ``password``, ``username``, ``socket_timeout``, ``ssl`` …), or
        ``url="redis://…"`` (also ``redis+cluster://`` and
        ``redis+sentinel://``, see ``resp.from_url``), or ``client=`` an
        existing ``resp.Client`` (``resp.SentinelClient`` included) or
        ``resp.ClusterClient`` to share among queues. Nothing connects until the first command.
    :raises TypeError: an unknown connection option (named in the message),
        or a ``serializer`` without ``dumps`` and ``loads``.
    """

    def __init__(self, name: str, serializer: "Any" = _PICKLE, **kwargs: "Any") -> None:
        self.name = name
        unknown = sorted(set(kwargs) - _CONNECTION_OPTIONS - {"url", "client"})
        if unknown:
            raise TypeError(f"HotQueue() got unknown connection option(s): {', '.join(unknown)}")
        client = kwargs.pop("client", None)
        url = kwargs.pop("url", None)
        if client is not None:
            if kwargs or url is not None:
                raise TypeError("client= cannot be combined with other connection options")
            if not (isinstance(client, resp.Client) or isinstance(client, resp.ClusterClient)):
                raise TypeError(
                    f"client must be a resp.Client or resp.ClusterClient, not {type(client).__name__}"
                )
        elif url is not None:
            client = resp.from_url(url, **kwargs)
        else:
            client = resp.Client(**kwargs)
        if serializer is _PICKLE:
            import pickle

            serializer = pickle
        elif serializer is not None and not (callable(getattr(serializer, "dumps", None))
                                             and callable(getattr(serializer, "loads", None))):
            # Found out only after a pop, it would cost the message popped.
            raise TypeError(f"serializer must have dumps() and loads(), or be None, not {serializer!r}")
        self.serializer = serializer
        self._client: Union[resp.Client, resp.ClusterClient] = client

    def __repr__(self) -> str:
        return f"HotQueue({self.name!r}, {self._client!r})"

    @property
    def name(self) -> str:
        """The queue's name; setting it moves the queue to another key."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        key = key_for_name(name)
        if not name:
            raise ValueError("queue name must not be empty")
        try:
            key.encode("utf-8")  # as every command sends it: fail here, not at the first put
        except UnicodeEncodeError:
            raise ValueError(f"queue name {name!r} cannot be encoded as UTF-8 (it holds a lone surrogate)") from None
        self._name = name
        self._key = key

    @property
    def key(self) -> str:
        """The Redis key of this queue: ``hotqueue:<name>``."""
        return self._key

    @property
    def client(self) -> "Union[resp.Client, resp.ClusterClient]":
        """The ``resp`` client this queue talks through."""
        return self._client

    def __len__(self) -> int:
        """The number of messages waiting (``LLEN``); 0 when the key is missing."""
        return self._client.llen(self.key)

    def clear(self) -> None:
        """Delete the queue and every message in it."""
        self._client.delete(self.key)

    def put(self, *msgs: "Any") -> None:
        """Put one or more messages onto the end of the queue, atomically.

        >>> queue.put("my message")                        # doctest: +SKIP
        >>> queue.put("my message", "another", 3)          # doctest: +SKIP

        Every message is serialized first; if one fails, its error propagates
        and nothing is sent. Then one ``RPUSH`` stores all of them or none.
        ``put()`` with no message does nothing.
        """
        serializer = self.serializer
        if len(msgs) == 1:  # the usual case, without building a list
            msg = msgs[0]
            if serializer is None:
                value = msg if type(msg) in _RAW_TYPES else _raw(msg)
            else:
                value = serializer.dumps(msg)
                if type(value) is not bytes:
                    value = _dumped(value, serializer)
            self._client.rpush(self._key, value)
            return
        if not msgs:
            return
        # The type checks of _raw and _dumped, run by a C loop for the types
        # met in practice, per message only when another type is there.
        if serializer is None:
            values: Any = msgs
            if not _RAW_TYPES.issuperset(map(type, values)):
                values = [_raw(msg) for msg in msgs]
        else:
            values = list(map(serializer.dumps, msgs))
            if not _DUMPED_TYPES.issuperset(map(type, values)):
                values = [_dumped(value, serializer) for value in values]
        self._client.rpush(self._key, *values)

    def get(self, block: bool = False, timeout: "Optional[float]" = None) -> "Any":
        """Remove and return the first message, or ``None`` when there is none.

        >>> queue.get()                                    # doctest: +SKIP
        'my message'

        :param block: wait for a message when the queue is empty.
        :param timeout: with ``block``, give up after this many seconds and
            return ``None``; ``None`` or ``0`` waits forever, in ``BLPOP`` commands
            of ``WAIT_SLICE`` seconds (a server that stops answering raises
            ``resp.TimeoutError`` within two, plus ``socket_timeout``). Floats allowed.
        :raises ValueError: a negative or NaN ``timeout``, or one over ``resp.MAX_TIMEOUT``.
        :raises resp.ConnectionError, resp.TimeoutError: Redis is unreachable.
        :raises resp.BusyLoadingError, resp.BusyScriptError: the server is
            loading its data or held by a long script; nothing was run.

        A stored value that ``serializer.loads`` cannot read raises that
        serializer's own error, and the message is gone from Redis.
        """
        if timeout is not None and (type(timeout) is not int or not 0 <= timeout <= _MAX_WHOLE_TIMEOUT):
            _check_timeout(timeout)
        serializer = self.serializer
        loads = None if serializer is None else serializer.loads  # before the pop: a message depends on it
        if serializer is not None and not callable(loads):
            raise _no_loads(serializer, loads)
        if block:
            while True:
                popped = self._client.blpop(self._key, timeout or WAIT_SLICE)
                if popped is not None:
                    break
                if timeout:
                    return None
            data = popped[1]
        else:
            data = self._client.lpop(self._key)
            if data is None:
                return None
        return data if loads is None else loads(data)

    def consume(self, **kwargs: "Any") -> "Iterator[Any]":
        """Yield messages as they arrive, until the queue is empty (with
        ``block=False``) or a wait times out (with ``timeout``).

        >>> for msg in queue.consume(timeout=1):           # doctest: +SKIP
        ...     print(msg)

        :param kwargs: what ``get`` takes; ``block`` defaults to ``True``.
            ``reliable=True`` (with ``max_attempts``, ``heartbeat_ttl``) acks
            each message when the next one is asked for: see ``reserve``.

        A message that is ``None`` is yielded like any other. When Redis goes
        away the generator waits and reconnects (0.1 s doubling to 5 s, with a
        warning logged each time) and goes on; a timeout counts the time the
        pops for one message waited on a live connection, those that a
        connection broke under included, but not the time spent reconnecting
        (a reconnection is confirmed with a wait that moves nothing before
        the next wait counts); with no timeout, a server that stops answering is
        noticed within two slices of ``WAIT_SLICE`` seconds (plus the
        client's ``socket_timeout``), and ridden out
        the same way. ``KeyboardInterrupt`` while waiting ends it quietly.
        """
        if kwargs.pop("reliable", False):
            from .reliable import consume

            yield from consume(self, **kwargs)
            return
        kwargs.setdefault("block", True)
        block = kwargs["block"]
        timeout = kwargs.get("timeout")
        _check_timeout(timeout)
        unknown = set(kwargs) - {"block", "timeout"}
        if unknown:
            raise TypeError(f"consume() got unexpected argument(s): {', '.join(sorted(unknown))}")
        client, key = self._client, self._key
        riding = _RidingOut(self.name, timeout if block else None)
        server_timeout = timeout or WAIT_SLICE
        failing = False  # since the last reply: riding is then to be asked
        while True:
            serializer = self.serializer
            loads = None if serializer is None else serializer.loads  # before the pop, as in get()
            if serializer is not None and not callable(loads):
                raise _no_loads(serializer, loads)
            started = time.monotonic() if riding.timeout else 0.0  # read only to count a timeout
            try:
                if failing and riding.probing:  # after a reconnection: does the link answer?
                    _probe(client, key)
                    riding.answered()
                    server_timeout, started = riding.left(), time.monotonic()
                if block:  # as get() does, without its checks each time
                    popped = client.blpop(key, server_timeout)
                    data = None if popped is None else popped[1]
                else:
                    data = client.lpop(key)
            except KeyboardInterrupt:
                return
            # A failover or a slot migration is ridden out by popping again:
            # MOVED, ASK and READONLY replies are followed inside the cluster
            # and sentinel clients, which is safe because the server did not
            # run the pop. What reaches here is a broken connection (the pop
            # raised, as the contract wants, and a new one is tried after the
            # backoff) or a cluster that stayed down or kept redirecting past
            # its retries.
            except RIDE_OUT as exc:
                failing = True
                try:
                    if not riding.failed(exc, started):
                        return
                except KeyboardInterrupt:
                    return
                server_timeout = riding.left() or WAIT_SLICE
                continue
            if failing or not riding.seen_alive:  # a reply: the next wait is a new one, on a link that answers
                failing = False
                riding.replied()
                server_timeout = timeout or WAIT_SLICE
            if data is None:
                if block and not timeout:
                    continue  # a slice of an endless wait
                return
            yield data if loads is None else loads(data)

    # The wrapped function takes one argument less (the message), which the
    # type system cannot spell: it is typed as taking anything.
    if TYPE_CHECKING:
        @overload
        def worker(self, func: Callable[..., Any]) -> Callable[..., None]: ...

        @overload
        def worker(self, *, block: bool = ..., timeout: Optional[float] = ..., reliable: bool = ...,
                   max_attempts: int = ..., heartbeat_ttl: float = ..., consumer_id: Optional[str] = ...
                   ) -> Callable[[Callable[..., Any]], Callable[..., None]]: ...

    def worker(self, *args: "Any", **kwargs: "Any") -> "Any":
        """Decorate a function to run it on every message ``consume`` yields.

        >>> @queue.worker                                   # doctest: +SKIP
        ... def square(num):
        ...     print(num * num)
        >>> square()                                        # doctest: +SKIP

        Usable bare or with ``get``'s arguments (``@queue.worker(timeout=1)``).
        Calling the wrapped function with ``*args`` runs ``func(*args, msg)`` for
        each message, so methods can be decorated too. With ``reliable=True``
        (and ``max_attempts``, ``heartbeat_ttl``) a message is acked when
        ``func`` returns, and one that raises is retried, then dead-lettered;
        the worker goes on (see ``reserve``).
        """
        if args and (len(args) > 1 or kwargs or not callable(args[0])):
            raise TypeError("use @queue.worker or @queue.worker(block=..., timeout=...)")
        unknown = set(kwargs) - (_RELIABLE_WORKER_OPTIONS if kwargs.get("reliable") else _WORKER_OPTIONS)
        if unknown:  # now, not when the worker is first called
            raise TypeError(f"worker() got unexpected argument(s): {', '.join(sorted(unknown))}")
        _check_timeout(kwargs.get("timeout"))

        def decorator(func: "Callable[..., Any]") -> "Callable[..., None]":
            import functools  # here: it would add collections to every import of hotqueue

            @functools.wraps(func)
            def wrapper(*call_args: "Any") -> None:
                if kwargs.get("reliable"):
                    from .reliable import work

                    options = {k: v for k, v in kwargs.items() if k != "reliable"}
                    work(self, func, call_args, **options)
                    return
                for msg in self.consume(**kwargs):
                    func(*call_args, msg)

            return wrapper

        if args:
            return decorator(args[0])
        return decorator

    # Reliable delivery (at least once): the logic lives in hotqueue/reliable.py.

    def reserve(self, block: bool = True, timeout: "Optional[float]" = None,
                **options: "Any") -> "ContextManager[Any]":
        """Reliable mode: a context manager that holds one message (``None`` when
        the queue is empty or ``timeout`` passed) and acks it on a clean exit.

        >>> with queue.reserve(timeout=5) as msg:             # doctest: +SKIP
        ...     handle(msg)

        An exception inside the block requeues the message at the head of the
        queue (re-raised); after ``max_attempts`` (default 5) failures it goes
        to ``dead_letters``. While the block runs a heartbeat (``heartbeat_ttl``
        seconds, default 10) marks the message as taken; if the process dies,
        another consumer or ``recover()`` puts it back. Needs Redis 6.2+
        (``hotqueue.reliable.ReliableUnsupportedError`` otherwise). A message
        that is ``None`` looks like no message here: a queue that carries
        ``None`` is read with ``consume(reliable=True)``.
        """
        from .reliable import reserve

        return reserve(self, block, timeout, **options)

    def recover(self, max_attempts: int = 5) -> int:
        """Reliable mode: put the messages of consumers whose heartbeat expired
        back at the head of the queue; return how many (see ``reserve``)."""
        from .reliable import recover

        return recover(self, max_attempts)

    @property
    def dead_letters(self) -> "DeadLetters":
        """Reliable mode: the messages that failed too often — ``len()``,
        ``peek(n)``, ``requeue()``, ``clear()``."""
        from .reliable import DeadLetters

        return DeadLetters(self)

    def stats(self) -> "QueueStats":
        """Reliable mode: length, in-flight messages per consumer, dead letters
        and heartbeat ages (a ``hotqueue.reliable.QueueStats``)."""
        from .reliable import stats

        return stats(self)
