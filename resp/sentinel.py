"""``SentinelClient``: a ``Client`` for the primary that Redis Sentinel names.

Rules this module keeps (from the Sentinel clients guidelines):

1. Every new connection asks the sentinels where the primary is: each in turn,
   with a short timeout; the first that answers moves to the front of the list.
   ``SENTINEL get-master-addr-by-name`` names the primary, and ``ROLE`` on the
   new connection confirms it; if it is not a primary, start over (a bounded
   number of times, as a failover may be under way). A sentinel whose primary
   cannot be reached or is not one goes to the back of the list, so that a
   stale sentinel does not keep the client from the primary the others name.
   When the sentinels name another primary than before, every pooled
   connection to the old one is closed: one client never uses two primaries.
   A user whose ACL denies ``ROLE`` (it is in ``@admin``) trusts the
   sentinels; ``READONLY`` still catches a replica (rule 2), and sends the
   sentinel that named it to the back of the list.
2. A ``READONLY`` reply, or ``UNBLOCKED`` (a blocked command released because
   the server became a replica), means the server is no longer the primary and
   did *not* run the command: every pooled connection is closed, and a single
   command is sent once more on a new connection, which finds the new primary;
   a blocking one with what is left of its timeout.
3. A connection that breaks after the command was sent raises, as on one
   server (the command may have run), and the pool is emptied so the next
   command resolves the primary afresh.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, Type, Union

from .client import Client
from .commands import MAX_TIMEOUT, _time_left, _timeout_index
from .connection import Address, Connection, NothingSentError, _while_connecting
from .errors import (
    AuthenticationError,
    ConnectionError,
    MaxClientsError,
    NoSentinelReachableError,
    PoolTimeoutError,
    ProtocolError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    UnknownServiceError,
    _auth_refused,
    _demoted,
)
from .protocol import encode_parts
from .urls import _node_address, parse_url

if TYPE_CHECKING:  # type aliases, defined for type checkers only
    from .client import ClientT, KeyT
    from .protocol import CommandArg, Reply

__all__ = ["SentinelClient"]


class _Demoted(Exception):
    # A blocking command released by a failover (rule 2), to be sent again
    # with the time left; ``error`` is the server's reply.
    def __init__(self, error: ResponseError) -> None:
        super().__init__(str(error))
        self.error = error


#: How often a new connection starts over when the address the sentinels give
#: is not (yet) a primary, and the first wait between tries (doubling).
ROLE_ATTEMPTS, ROLE_WAIT = 6, 0.1
#: Seconds a new connection to the primary (connect, handshake, ``ROLE``) may
#: take when no ``socket_connect_timeout`` or ``socket_timeout`` is given: a
#: primary frozen mid-failover accepts connections and never answers.
PRIMARY_CONNECT_TIMEOUT = 10.0


class SentinelClient(Client):
    """A ``Client`` that finds the primary of ``service_name`` through Sentinel.

    >>> client = SentinelClient([("127.0.0.1", 26379)], "mymaster")   # doctest: +SKIP
    >>> client.rpush("jobs", "one")                                  # doctest: +SKIP
    1

    :param sentinels: the sentinels, as ``(host, port)`` pairs, ``"host:port"``
        strings or ``redis://host:port`` URLs (one that says more, a password
        or ``rediss://`` say, is refused: its sentinel would be reached without them).
    :param service_name: the name the sentinels monitor the primary under.
    :param sentinel_timeout: seconds to wait for each sentinel to connect and
        answer (a positive number: never ``None``).
    :param sentinel_password: the sentinels' own password (``requirepass``),
        with ``sentinel_username`` for an ACL user.
    :param options: the ``Client`` options for the primary (``db``,
        ``password``, ``socket_timeout``, ``ssl`` …), not its host or port.

    ``sentinels`` holds the sentinels in the order they are tried next.
    :raises UnknownServiceError: (on use) the sentinels answer but do not know
        ``service_name``.
    :raises NoSentinelReachableError: (on use) no sentinel answered; a
        ``ConnectionError``, so ``HotQueue.consume`` waits and tries again.
    :raises AuthenticationError: (on use) no sentinel answered and at least
        one refused ``sentinel_password``.
    """

    def __init__(
        self,
        sentinels: Sequence[Union[str, Tuple[str, int]]],
        service_name: str,
        sentinel_timeout: float = 0.5,
        sentinel_password: Optional[str] = None,
        sentinel_username: Optional[str] = None,
        **options: Any,
    ) -> None:
        for name in ("host", "port", "unix_socket_path"):
            if name in options:
                raise TypeError(f"SentinelClient() takes no {name}: the sentinels give it")
        if not isinstance(service_name, str) or not service_name:
            raise TypeError("service_name must be a non-empty str")
        super().__init__(**options)
        self.service_name = service_name
        # Never None: a sentinel that never answers would hang every connection.
        if isinstance(sentinel_timeout, bool) or not isinstance(sentinel_timeout, (int, float)):
            raise TypeError(f"sentinel_timeout must be a number of seconds, not {type(sentinel_timeout).__name__}")
        if not 0 < sentinel_timeout <= MAX_TIMEOUT:  # False for NaN too
            raise ValueError(f"sentinel_timeout must be a positive number of seconds, not {sentinel_timeout!r}")
        self.sentinel_timeout = float(sentinel_timeout)
        self._sentinel_auth: Tuple[str, ...] = ()
        if sentinel_password:  # "" is none, as password="" is (and in redis-py)
            self._sentinel_auth = ("AUTH", sentinel_password) if not sentinel_username else (
                "AUTH", sentinel_username, sentinel_password)
        self.sentinels: List[Tuple[str, int]] = []
        for sentinel in [sentinels] if isinstance(sentinels, str) else sentinels:
            if isinstance(sentinel, str) and "://" in sentinel:
                parsed = parse_url(sentinel)
                address = (parsed.pop("host", "localhost"), parsed.pop("port", 26379))
                if parsed.pop("db", 0) or parsed:  # a password, TLS, a socket path: not used
                    raise ValueError("a sentinel URL is redis://host:port and no more: a sentinel's "
                                     "password is sentinel_password, its connections are plain TCP")
                self.sentinels.append(address)
            else:
                self.sentinels.append(_node_address(sentinel))
        if not self.sentinels:
            raise ValueError("a SentinelClient needs at least one sentinel")
        self._primary: Optional[Tuple[str, int]] = None  # the primary last connected to
        self._named_by: Optional[Tuple[str, int]] = None  # the sentinel that named it

    def __repr__(self) -> str:
        return f"<resp.SentinelClient {self.service_name!r} via {len(self.sentinels)} sentinels db={self.db}>"

    def primary_address(self) -> Tuple[str, int]:
        """Ask the sentinels, in turn, where the primary is; the first that
        answers moves to the front of ``sentinels``.

        :raises UnknownServiceError: every sentinel answered, and none knows the service.
        :raises NoSentinelReachableError: none that knows the service answered.
        :raises AuthenticationError: a sentinel refused ``sentinel_password``.
        """
        return self._resolve()[1]

    def _resolve(self) -> Tuple[Tuple[str, int], Tuple[str, int]]:
        # The sentinel that answered, and the primary's address it gave.
        failures = []
        unknown = refused = 0
        for sentinel in list(self.sentinels):
            try:
                reply = self._ask(sentinel)
            except (ConnectionError, TimeoutError, ProtocolError, ResponseError) as exc:
                refused += isinstance(exc, AuthenticationError)
                failures.append(f"{sentinel[0]}:{sentinel[1]}: {exc}")
                continue
            if reply is None:
                unknown += 1
                continue
            if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(r, bytes) for r in reply)
                    and reply[0] and reply[0].isascii() and reply[1].isdigit() and len(reply[1]) <= 5
                    and 0 < int(reply[1]) < 65536):
                failures.append(f"{sentinel[0]}:{sentinel[1]}: not an address: {reply!r:.80}")
                continue
            # A new list in one assignment: no lock (none to hold across a
            # fork), and a thread iterating the old list is not disturbed.
            sentinels = self.sentinels
            if sentinel in sentinels and sentinels[0] != sentinel:
                self.sentinels = [sentinel] + [s for s in sentinels if s != sentinel]
            return sentinel, (reply[0].decode(), int(reply[1]))
        if unknown and not failures:
            raise UnknownServiceError(f"the sentinels monitor no service named {self.service_name!r}")
        if unknown:  # the sentinels that know it may be the ones that did not answer
            failures.append(f"{unknown} monitor no service named {self.service_name!r}")
        if refused:  # a configuration error, not one to wait out
            raise AuthenticationError("a sentinel refused sentinel_password: " + "; ".join(failures))
        raise NoSentinelReachableError("no sentinel answered: " + "; ".join(failures))

    def _ask(self, sentinel: Tuple[str, int]) -> Reply:
        deadline = time.monotonic() + self.sentinel_timeout
        conn = Connection(Address(sentinel[0], sentinel[1], connect_timeout=self.sentinel_timeout))
        try:
            commands: List[Tuple[str, ...]] = [("SENTINEL", "get-master-addr-by-name", self.service_name)]
            if self._sentinel_auth:
                commands.insert(0, self._sentinel_auth)
            conn.send([part for args in commands for part in encode_parts(args)], deadline)
            replies = [conn.read_reply(deadline) for _ in commands]
        finally:
            conn.close()
        for args, reply in zip(commands, replies):
            if isinstance(reply, ResponseError):
                if args[0] == "AUTH" and not isinstance(reply, MaxClientsError):
                    # As Client does: whatever the sentinel's words (a wrong
                    # password, or one given where none is set), a refusal.
                    raise AuthenticationError(str(_auth_refused(reply, args[-1])))
                raise reply
        return replies[-1]

    def _connect(self) -> Connection:
        # No lock held across the connection: one thread stuck on a frozen
        # old primary must not keep the others from the new one.
        wait = ROLE_WAIT
        generation = 0  # the pool's own stands (pool rule 7)
        for attempt in range(ROLE_ATTEMPTS):
            if attempt:  # a failover is under way: the sentinels will catch up
                time.sleep(wait)
                wait *= 2
            sentinel, (host, port) = self._resolve()
            previous = self._primary
            if previous != (host, port):
                # Set before the pool is closed: a thread that checks after
                # the close (its connection stamped with that generation)
                # must see the new primary, or it keeps one to the old.
                self._primary = (host, port)
                if previous is not None:
                    # The connections to the old primary, busy ones as they
                    # come back; not the one this opens, to the new primary.
                    generation = self._pool.close()
            old = self.address
            timeout = PRIMARY_CONNECT_TIMEOUT if old.connect_timeout is None else old.connect_timeout
            try:
                conn = self._connect_to(Address(host, port, None, old.ssl_context, timeout))
            except (ConnectionError, TimeoutError):
                self._pass_over(sentinel)
                raise
            self.address = conn.address  # for repr: the primary last connected to
            try:
                deadline = time.monotonic() + timeout
                conn.send(encode_parts(("ROLE",)), deadline)
                role = conn.read_reply(deadline)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, (ConnectionError, TimeoutError)):
                    self._pass_over(sentinel)
                error = _while_connecting(exc)
                if error is not exc:
                    raise error from exc
                raise
            if isinstance(role, ResponseError):
                # ROLE is in @admin and @dangerous: a least-privilege ACL user
                # (or a server with ROLE renamed away) cannot run it. Trust the
                # sentinels then; a READONLY reply still catches a replica.
                if role.kind == "NOPERM" or "unknown command" in str(role).lower():
                    conn.generation, self._named_by = generation, sentinel
                    return conn
                conn.close()
                raise role
            if isinstance(role, list) and role and role[0] == b"master":
                conn.generation, self._named_by = generation, sentinel
                return conn
            conn.close()  # not a primary: start over, after a wait (none after the last try)
            self._pass_over(sentinel)
        raise NothingSentError(
            f"the sentinels name {host}:{port} as the primary of {self.service_name!r}, but it is not one"
        )

    def _pass_over(self, sentinel: Tuple[str, int]) -> None:
        # The primary ``sentinel`` named cannot be reached or is not one: ask
        # the others first next time (a new list, as in primary_address).
        sentinels = self.sentinels
        if sentinel in sentinels and sentinels[-1] != sentinel:
            self.sentinels = [s for s in sentinels if s != sentinel] + [sentinel]

    def _call(self, parts: List[Any], timeout: Optional[float], count: Optional[int] = None,
              blocking: bool = False, keep: Optional[Callable[[List[Reply]], bool]] = None) -> Reply:
        for attempt in (1, 2):
            try:
                reply = super()._call(parts, timeout, count, blocking, keep)
            except ResponseError as exc:
                if attempt == 2 or not (isinstance(exc, ReadOnlyError) or _demoted(exc)):
                    raise  # e.g. UNBLOCKED by CLIENT UNBLOCK … ERROR: someone meant to stop it
                # The server is a replica now and did not run the command:
                # drop every connection to it and send the command once more;
                # a new connection asks the sentinels and checks ROLE. A
                # blocking one is sent again by _waited, with the time left.
                # The sentinel that named this server goes to the back: it
                # may be stale, and where ROLE is denied nothing else finds out.
                named_by = self._named_by
                if named_by is not None:
                    self._pass_over(named_by)
                self._pool.close()
                if blocking:
                    raise _Demoted(exc) from exc
                continue
            except ConnectionError:
                self._pool.close()  # the next connection asks the sentinels again
                raise
            except PoolTimeoutError:
                raise  # our own connections were busy: the primary is not in question
            except TimeoutError:
                # A frozen or cut-off old primary keeps its idle sockets open,
                # each good for another timeout: drop them, so that the next
                # command asks the sentinels. Not asked here: the deadline
                # has passed, and each silent sentinel would add its
                # sentinel_timeout to it.
                self._pool.close()
                raise
            if count is not None and any(isinstance(r, ReadOnlyError) for r in reply):
                self._pool.close()  # a pipeline is never resent: some of it may have run
            return reply
        raise AssertionError("unreachable")

    def _waited(self, wait: Callable[[Any], Reply], timeout: Any) -> Reply:
        # wait(timeout), and once more with what is left of the timeout if a
        # failover released it (rule 2); None, as on a timeout, if none is.
        # A READONLY means it ran nowhere: a timeout in fractions of a second
        # past its time gets the shortest wait on the new primary, as after
        # a cluster's MOVED.
        started = time.monotonic()
        try:
            return wait(timeout)
        except _Demoted:
            pass
        left = _time_left(timeout, started, at_least=True)
        if left is None:
            return None
        try:
            return wait(left)
        except _Demoted as again:
            raise again.error from None

    def execute(self, *args: CommandArg) -> Reply:
        """``Client.execute``; a blocking command that a failover released is
        sent once more to the new primary, with what is left of its timeout."""
        index = _timeout_index(args)
        if index is None:
            return super().execute(*args)
        run = super().execute
        return self._waited(lambda left: run(*args[:index], left, *args[index + 1 :]), args[index])

    def blpop(self, keys: Union[KeyT, Sequence[KeyT]], timeout: float = 0) -> Optional[Tuple[bytes, bytes]]:
        """``Client.blpop``, waiting through a failover as ``execute`` does."""
        run = super().blpop
        return self._waited(lambda left: run(keys, left), timeout)  # type: ignore[no-any-return]

    def blmove(self, source: KeyT, destination: KeyT, timeout: float = 0,
               wherefrom: str = "LEFT", whereto: str = "RIGHT") -> Optional[bytes]:
        """``Client.blmove``, waiting through a failover as ``execute`` does."""
        run = super().blmove
        return self._waited(  # type: ignore[no-any-return]
            lambda left: run(source, destination, left, wherefrom, whereto), timeout)

    @classmethod
    def from_url(cls: Type[ClientT], url: str, **overrides: Any) -> ClientT:
        """Make a client from a ``redis+sentinel://host:port,host:port/service[/db]``
        URL (see ``resp.from_url``); keyword arguments override what it says.

        :raises ValueError: the URL is malformed or not a sentinel URL.
        """
        from .urls import from_url  # urls imports this module

        client = from_url(url, **overrides)
        if not isinstance(client, cls):
            raise ValueError("SentinelClient.from_url needs a redis+sentinel:// URL")
        return client
