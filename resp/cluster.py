"""``ClusterClient``: one client for a Redis Cluster, routing each command to
the primary that serves its key's hash slot.

Rules this module keeps:

1. A command goes to one node, chosen by the hash slot of its keys
   (CRC16-XMODEM mod 16384; a ``{tag}`` in a key hashes alone). Keys in
   different slots are refused with ``CrossSlotError`` before anything is sent.
2. Each node is an ordinary ``Client`` with its own pool: the rules of
   ``client.py`` (encode first, resend only what never left, close a
   connection that failed mid-command) hold on every node.
3. Only replies that say the command was *not* run are followed: ``MOVED``
   (retry on the new owner, and refresh the whole slot map before the next
   command), ``ASK`` (``ASKING`` and the command on the named node, on one
   connection, without touching the map), ``TRYAGAIN`` and ``CLUSTERDOWN``
   (wait a little, retry), and for a blocking command the ``UNBLOCKED`` of a
   primary demoted while it waited (learn the map again, wait on the new
   primary for what is left of the timeout; after ``MOVED`` or ``ASK``, a
   timeout given in fractions of a second at least the shortest wait, so
   that the owner answers). Each command
   gets at most ``max_redirects`` of those. A connection that fails after the
   command was sent raises, as on one server; the map is refreshed before the
   next command because the node may have failed over.
4. No network I/O in the constructor: the slot map is learned on first use.

``ClusterPipeline`` lives in ``cluster_pipeline``, which imports this module;
``from resp.cluster import ClusterPipeline`` still finds it there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .client import Client
from .commands import (
    _allowed_command_name,
    _blpop_keys,
    _command_name,
    _timeout_index,
    _with_time_left,
    blocking_timeout_arg,
)
from .connection import Address, NothingSentError
from .errors import (
    AskError,
    AuthenticationError,
    CertificateError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    CrossSlotError,
    MovedError,
    PoolTimeoutError,
    ResponseError,
    TimeoutError,
    TryAgainError,
    _demoted,
)
from .protocol import _encode_arg, encode_parts
from .urls import _node_address, parse_url

if TYPE_CHECKING:  # type aliases, defined for type checkers only
    from .cluster_pipeline import ClusterPipeline
    from .commands import KeyT
    from .protocol import CommandArg, Reply

__all__ = ["ClusterClient", "ClusterPipeline", "key_slot"]

SLOTS = 16384
#: Waits between retries of ``TRYAGAIN`` / ``CLUSTERDOWN``: short, because a
#: migration step or a replica promotion takes milliseconds to a few seconds.
RETRY_FIRST, RETRY_MAX = 0.05, 1.0
#: How long a node may take to give the slot map when no ``socket_timeout``
#: was given: a node that stopped answering (a frozen process, whose kernel
#: still accepts connections) must not keep the next one from being asked.
SLOT_MAP_TIMEOUT = 5.0
# Options a seed URL or the caller may give that every node's Client gets.
_NODE_OPTIONS = frozenset({
    "password", "username", "socket_timeout", "socket_connect_timeout", "ssl",
    "ssl_context", "ssl_ca_certs", "client_name", "max_connections",
})


def _crc16_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_CRC16 = _crc16_table()


_SLOT_CACHE: Dict[Union[str, bytes], int] = {}
#: Queues use few keys over and over: remember their slots, up to this many.
SLOT_CACHE_SIZE = 4096


def key_slot(key: Union[KeyT, bytearray, memoryview, int, float]) -> int:
    """The cluster hash slot of ``key``: CRC16-XMODEM of the key, or of the
    first ``{…}`` in it with something inside, modulo 16384.

    >>> key_slot("123456789") == 0x31C3 % 16384
    True
    >>> key_slot("{user1}.a") == key_slot("user1")
    True
    """
    cacheable = type(key) is str or type(key) is bytes
    if cacheable:
        slot = _SLOT_CACHE.get(key)  # type: ignore[arg-type]
        if slot is not None:
            return slot
    data = _encode_arg(key)
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    slot = crc % SLOTS
    if cacheable:
        if len(_SLOT_CACHE) >= SLOT_CACHE_SIZE:
            _SLOT_CACHE.clear()
        _SLOT_CACHE[key] = slot  # type: ignore[index]
    return slot


# Where the keys of a command are: (first, stop, step) as for args[first:stop:step].
_KEY_SPECS: Dict[str, Tuple[int, Optional[int], int]] = {
    **{name: (1, None, 1) for name in ("DEL", "UNLINK", "EXISTS", "TOUCH", "MGET", "WATCH")},
    **{name: (1, None, 2) for name in ("MSET", "MSETNX")},
    **{name: (1, -1, 1) for name in ("BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX")},
    **{name: (1, 3, 1) for name in ("LMOVE", "BLMOVE", "RPOPLPUSH", "BRPOPLPUSH", "SMOVE",
                                    "RENAME", "RENAMENX", "COPY", "LCS", "ZRANGESTORE", "GEOSEARCHSTORE")},
    **{name: (1, None, 1) for name in ("SUNION", "SINTER", "SDIFF", "SUNIONSTORE", "SINTERSTORE",
                                       "SDIFFSTORE", "PFCOUNT", "PFMERGE")},
    "BITOP": (2, None, 1),
}
# Commands whose keys follow a count: where the count is, and whether the
# argument before it is a key too (a destination).
_NUMKEYS: Dict[str, Tuple[int, bool]] = {
    **{name: (1, False) for name in ("LMPOP", "ZMPOP", "SINTERCARD", "ZINTERCARD", "ZUNION",
                                     "ZINTER", "ZDIFF")},
    **{name: (2, False) for name in ("BLMPOP", "BZMPOP")},
    **{name: (2, True) for name in ("ZUNIONSTORE", "ZINTERSTORE", "ZDIFFSTORE")},
}
# Commands with a key first and another one in their options (STORE), and
# how many arguments each of their options takes (see _keys_of_options).
_GEORADIUS_OPTIONS = {"COUNT": 1, "STORE": -1, "STOREDIST": -1}
_OPTION_KEYS: Dict[str, Tuple[int, Dict[str, int]]] = {
    "SORT": (2, {"BY": 1, "LIMIT": 2, "GET": 1, "STORE": -1}),
    "GEORADIUS": (6, _GEORADIUS_OPTIONS),
    "GEORADIUSBYMEMBER": (5, _GEORADIUS_OPTIONS),
}
_MIGRATE_OPTIONS = {"AUTH": 1, "AUTH2": 2, "KEYS": -2}
# Commands whose key follows a subcommand (XINFO STREAM key, OBJECT ENCODING
# key, XGROUP CREATE key group …, MEMORY USAGE key), and their subcommands
# that take none (HELP, and MEMORY's others).
_SUBCOMMAND_KEY = frozenset({"XINFO", "OBJECT", "XGROUP", "MEMORY"})
_KEYLESS_SUBCOMMANDS = frozenset({"HELP", "DOCTOR", "STATS", "MALLOC-STATS", "PURGE"})
# Commands without keys: they may run on any node.
_KEYLESS = frozenset({
    "PING", "ECHO", "INFO", "TIME", "DBSIZE", "ROLE", "CLUSTER", "COMMAND", "CONFIG",
    "CLIENT", "MULTI", "EXEC", "DISCARD", "UNWATCH", "WAIT", "SCRIPT", "FUNCTION",
    "LASTSAVE", "SLOWLOG", "LATENCY", "FLUSHALL", "FLUSHDB", "RANDOMKEY", "SCAN",
})


def command_keys(args: Sequence[CommandArg]) -> List[CommandArg]:
    """The keys of one command, by its name. ``EVAL``/``EVALSHA``/``FCALL`` take
    theirs from ``numkeys``; a command not known here has one key, its first
    argument (as most Redis commands do); known key-less ones have none."""
    name = _command_name(args)
    if name in _KEYLESS:
        return []
    if name in _SUBCOMMAND_KEY:
        return [] if _command_name(args, 1) in _KEYLESS_SUBCOMMANDS else list(args[2:3])
    if name in ("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO") and len(args) > 2:
        try:
            count = int(args[2])
        except (TypeError, ValueError):
            return []  # the server refuses it
        return list(args[3 : 3 + max(count, 0)])
    if name in _NUMKEYS and len(args) > _NUMKEYS[name][0]:
        at, destination = _NUMKEYS[name]
        try:
            count = int(args[at])
        except (TypeError, ValueError):
            return list(args[at + 1 : at + 2])  # the server refuses it
        return list(args[1:2] if destination else ()) + list(args[at + 1 : at + 1 + max(count, 0)])
    if name in _OPTION_KEYS:
        first, options = _OPTION_KEYS[name]
        return list(args[1:2]) + _keys_of_options(args, first, options)
    if name == "MIGRATE":
        # MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [KEYS key …]
        keys = [key for key in args[3:4] if key not in ("", b"")]
        return keys + _keys_of_options(args, 6, _MIGRATE_OPTIONS)
    if name in ("XREAD", "XREADGROUP"):
        # ... STREAMS key [key ...] id [id ...] (XREADGROUP: after GROUP group consumer)
        for index in range(4 if name == "XREADGROUP" else 1, len(args)):
            if _command_name(args, index) == "STREAMS":
                streams = args[index + 1 :]
                return list(streams[: len(streams) // 2])
        return []
    first, stop, step = _KEY_SPECS.get(name, (1, 2, 1))
    return list(args[first:stop:step])


def _keys_of_options(args: Sequence[CommandArg], first: int, options: Dict[str, int]) -> List[CommandArg]:
    # The keys among a command's options from args[first] on: each option
    # takes options[name] arguments (-1: the key after it, the last such
    # option of a name counting, as for the server; -2: every argument after
    # it are keys); a word not known takes none.
    named: Dict[str, List[CommandArg]] = {}
    index = first
    while index < len(args):
        name = _command_name(args, index)
        takes = options.get(name, 0)
        if takes == -1:
            named[name] = list(args[index + 1 : index + 2])
            takes = 1
        elif takes == -2:
            named[name] = list(args[index + 1 :])
            break
        index += 1 + takes
    return [key for keys in named.values() for key in keys]


def _slot_of(keys: Iterable[CommandArg]) -> Optional[int]:
    slots = {key_slot(key) for key in keys}
    if len(slots) > 1:
        raise _cross_slot(slots)
    return slots.pop() if slots else None


def _cross_slot(slots: Iterable[int]) -> CrossSlotError:
    return CrossSlotError(
        f"keys in different hash slots {sorted(slots)}: a cluster runs a command on one node;"
        " give the keys a common {hash tag}"
    )


def _split_node(name: str) -> Tuple[str, int]:
    host, _, port = name.rpartition(":")
    return host.strip("[]"), int(port)


def _str(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _ask_bounded(node: Client, timeout: float, *args: CommandArg) -> Reply:
    # One command, all of it within ``timeout``: a new connection's handshake
    # (AUTH, CLIENT SETNAME) included, which waits as long as the connect
    # timeout allows, forever when there is none.
    address = node.address
    if address.connect_timeout is not None:
        return node._call(encode_parts(args), timeout)
    conn = node._connect_to(Address(address.host, address.port, address.unix_socket_path,
                                    address.ssl_context, timeout))
    try:
        reply = conn.call(encode_parts(args), time.monotonic() + timeout)
    finally:
        conn.close()
    if isinstance(reply, ResponseError):
        raise reply
    return reply


class ClusterClient:
    """A client for a Redis Cluster, with the command methods of ``Client``.

    >>> cluster = ClusterClient(["redis://127.0.0.1:7000", ("127.0.0.1", 7001)])  # doctest: +SKIP
    >>> cluster.rpush("jobs", "one")                                          # doctest: +SKIP
    1

    :param startup_nodes: where to learn the slot map: ``redis://`` URLs (their
        password, username and query options apply to every node),
        ``"host:port"`` strings or ``(host, port)`` pairs. One live node is enough.
    :param max_redirects: how many ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN``
        replies one command may meet before ``ClusterError`` (or the last
        ``ClusterDownError``) is raised; an int >= 1 (else ``ValueError``).
    :param options: ``Client`` options for every node: ``password``,
        ``username``, ``socket_timeout``, ``ssl`` … (a cluster has only db 0:
        ``db=0`` is taken, any other ``db`` raises ``ValueError``).
    """

    def __init__(
        self,
        startup_nodes: Sequence[Union[str, Tuple[str, int]]] = (("localhost", 6379),),
        max_redirects: int = 16,
        **options: Any,
    ) -> None:
        seeds: List[str] = []
        given: List[Dict[str, Any]] = []  # the options of each node URL
        for node in ([startup_nodes] if isinstance(startup_nodes, str) else startup_nodes):
            if isinstance(node, str) and "://" in node:
                parsed = parse_url(node)
                if parsed.pop("db", 0) or "unix_socket_path" in parsed:
                    raise ValueError("a cluster node URL is redis[s]://host:port, with db 0")
                host, port = parsed.pop("host", "localhost"), parsed.pop("port", 6379)
                given.append(parsed)
            else:
                host, port = _node_address(node)
            seeds.append(f"{host}:{port}")
        # The options hold for every node: node URLs that disagree on one
        # (one rediss://, one redis://; two passwords) leave none to take,
        # unless a keyword gives it.
        url_options: Dict[str, Any] = {}
        for name in sorted({name for parsed in given for name in parsed} - set(options)):
            values = [parsed.get(name) for parsed in given]
            if any(value != values[0] for value in values):
                raise ValueError(f"the cluster node URLs give different {name} options")
            url_options[name] = values[0]
        if not seeds:
            raise ValueError("a cluster client needs at least one startup node")
        if isinstance(max_redirects, bool) or not isinstance(max_redirects, int) or max_redirects < 1:
            raise ValueError(f"max_redirects must be an int >= 1, not {max_redirects!r}")
        db = options.pop("db", 0)  # a Client option that a cluster takes as 0 only
        if isinstance(db, bool) or not isinstance(db, int) or db:  # as Client checks it
            raise ValueError(f"a Redis Cluster has only database 0, not db={db!r}")
        unknown = sorted(set(options) - _NODE_OPTIONS)
        if unknown:
            raise TypeError(f"ClusterClient() got unknown option(s): {', '.join(unknown)}")
        self._options = {**url_options, **options}
        self.socket_timeout: Optional[float] = self._options.get("socket_timeout")
        self.max_redirects = max_redirects
        self._seeds = seeds
        self._nodes: Dict[str, Client] = {}
        self._slots: List[Optional[str]] = [None] * SLOTS
        self._stale = True
        self._unanswered: frozenset[str] = frozenset()  # nodes the last refreshes got no map from
        # The other nodes the last map named (replicas): asked last, so
        # that a client idle while every node it knew was replaced, one by
        # one, by its replica, still finds the cluster.
        self._others: List[str] = []
        for seed in seeds:
            self._node(seed)  # checks the options now, without connecting

    def __repr__(self) -> str:
        return f"<resp.ClusterClient seeds={','.join(self._seeds)}>"

    def __enter__(self) -> "ClusterClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every node's connections; the client stays usable."""
        for node in list(self._nodes.values()):
            node.close()

    # The slot map.

    def _node(self, name: str) -> Client:
        node = self._nodes.get(name)
        if node is None:
            # No lock: setdefault() is atomic, so threads that race here all
            # get the one client that went in (the others' made no
            # connection), and a fork can find nothing held.
            host, port = _split_node(name)
            node = self._nodes.setdefault(name, Client(host, port, **self._options))
        return node

    def refresh(self) -> None:
        """Learn the slot map again from the first node that answers (known
        primaries first, then the startup nodes, then the replicas the map
        named; those that gave no map last time after the others, so that a
        frozen node does not cost every refresh its timeout).

        :raises ConnectionError: no node answered (so ``consume`` waits it out).
        :raises AuthenticationError: none did, and one refused the credentials:
            no outage to wait out.
        :raises CertificateError: none did, and one's TLS certificate was refused.
        """
        errors = []
        refused: Optional[Union[AuthenticationError, CertificateError]] = None  # no outage to wait out
        names = list(dict.fromkeys([*filter(None, self._slots), *self._seeds, *self._others]))
        unanswered = self._unanswered.intersection(names)
        names.sort(key=unanswered.__contains__)  # stable: the order otherwise kept
        for name in names:
            try:
                slots, others = self._fetch_slots(name)
            except (ConnectionError, TimeoutError, ResponseError) as exc:
                if refused is None and isinstance(exc, (AuthenticationError, CertificateError)):
                    refused = exc
                errors.append(f"{name}: {exc}")
                unanswered |= {name}
                continue
            if not any(slots):  # a node that has not joined the cluster (yet)
                errors.append(f"{name}: serves no slot map")
                unanswered |= {name}
                continue
            self._unanswered = unanswered - {name}
            self._slots, self._others, self._stale = slots, others, False
            # Let go of nodes the map no longer names (failed over, removed):
            # their idle sockets would stay open until close().
            keep = {*filter(None, slots), *self._seeds}
            # pop(old, None): another thread's refresh may have taken it first.
            gone = [self._nodes.pop(old, None) for old in list(self._nodes) if old not in keep]
            for client in filter(None, gone):
                # For good: a command still running on it finishes first, and
                # a thread that took it from the map just before may still
                # start one; either way the connection is closed afterwards.
                client._pool.retire()
            return
        self._unanswered = unanswered
        if refused is not None:
            raise refused
        raise NothingSentError("no cluster node answered for the slot map: " + "; ".join(errors))

    def _fetch_slots(self, name: str) -> Tuple[List[Optional[str]], List[str]]:
        # The owner of each slot, and the other nodes named (replicas, and
        # nodes that serve no slot, such as a replica not yet attached).
        node = self._node(name)
        slots: List[Optional[str]] = [None] * SLOTS
        others: List[str] = []
        timeout = SLOT_MAP_TIMEOUT if node.socket_timeout is None else node.socket_timeout
        try:
            shards = _ask_bounded(node, timeout, "CLUSTER", "SHARDS")
        except ResponseError as exc:
            if "unknown subcommand" not in str(exc).lower():
                raise
            shards = None  # before Redis 7.0
        if shards is not None:
            for shard in shards:
                shard = dict(zip(map(_str, shard[::2]), shard[1::2]))
                nodes = [dict(zip(map(_str, fields[::2]), fields[1::2])) for fields in shard["nodes"]]
                # Redis 7.2+ may list a failed old primary beside the new one:
                # one whose health is "online" is taken last, so it is the owner.
                nodes.sort(key=lambda info: (_str(info["role"]) == "master",
                                             _str(info.get("health") or b"online") == "online"))
                for info in nodes:
                    host = _str(info.get("endpoint") or b"?")
                    host = _str(info["ip"]) if host in ("", "?") else host
                    host = host or node.address.host  # "" means: the node asked
                    # A node that takes both TLS and plain text lists both ports.
                    tls = node.address.ssl_context is not None and info.get("tls-port")
                    address = f"{host}:{tls or info.get('port') or info.get('tls-port')}"
                    others.append(address)
                    if _str(info["role"]) != "master":
                        continue
                    ranges = shard["slots"]
                    for start, end in zip(ranges[::2], ranges[1::2]):
                        slots[int(start) : int(end) + 1] = [address] * (int(end) - int(start) + 1)
            owners = set(slots)
            return slots, [address for address in others if address not in owners]
        for start, end, *served_by in _ask_bounded(node, timeout, "CLUSTER", "SLOTS"):
            # The primary first, then its replicas; "" means: the node asked.
            addresses = [f"{_str(host) or node.address.host}:{port}" for host, port, *_ in served_by]
            slots[start : end + 1] = [addresses[0]] * (end - start + 1)
            others.extend(addresses[1:])
        return slots, others

    def _owner(self, slot: Optional[int]) -> str:
        if self._stale:
            self.refresh()
        if slot is None:
            owners = [name for name in self._slots[:: SLOTS // 64] if name]
            return owners[0] if owners else self._seeds[0]
        owner = self._slots[slot]
        if owner is None:
            # What a node answers for it too: wait and retry, and learn the
            # map again, since the slot may be served by then.
            self._stale = True
            raise ClusterDownError(f"CLUSTERDOWN no node serves hash slot {slot}")
        return owner

    def node_for(self, key: KeyT) -> Client:
        """The ``Client`` of the primary that serves ``key`` (per the map)."""
        return self._node(self._owner(key_slot(key)))

    def primaries(self) -> List[Client]:
        """The ``Client`` of every primary in the slot map."""
        self._owner(None)
        return [self._node(name) for name in dict.fromkeys(filter(None, self._slots))]

    def _redirected_to(self, exc: Union[MovedError, AskError], node: Optional[Client]) -> Optional[str]:
        # The node a MOVED or ASK names, as "host:port"; None: learn the map
        # again and go by it. Redis 7 may leave the host out. ":port"
        # (cluster-preferred-endpoint-type unknown-endpoint) means the node
        # that answered. "?:port" (type hostname, but the target announces
        # none) names no host, so we guess: the one node we know on that port
        # besides the one that answered; failing that, a MOVED goes by the
        # map learned again (it takes the ip for "?"), and an ASK, which the
        # map cannot answer, to that port on the answering node's host.
        host, _, port = exc.node.rpartition(":")
        if host not in ("", "?") or node is None:
            return exc.node
        here = node.address
        if host == "?":
            known = {*self._nodes, *filter(None, self._slots)}
            elsewhere = [name for name in known
                         if name.rpartition(":")[2] == port and _split_node(name) != (here.host, here.port)]
            if len(elsewhere) == 1:
                return elsewhere[0]
            if isinstance(exc, MovedError):
                return None
        return f"{here.host}:{port}"

    # Running commands.

    def _run(self, args: Tuple[CommandArg, ...], key: Optional[KeyT] = None) -> Reply:
        # ``key``: the one key of a command known to have exactly one, given
        # by the command methods to skip the look-up.
        if key is None:
            slot = _slot_of(command_keys(args))
        else:
            slot = _SLOT_CACHE.get(key) if type(key) is str else None  # the common case, inline
            if slot is None:
                slot = key_slot(key)
        parts = encode_parts(args)  # bad arguments raise here, before any I/O
        redirect: Optional[str] = None  # where MOVED or ASK said to go next
        asking = False
        last: Optional[ResponseError] = None
        wait = RETRY_FIRST
        # A blocking command resent after a redirection waits only for what
        # is left of its timeout; after MOVED or ASK (run nowhere yet), one
        # in fractions of a second at least the shortest wait once it has
        # passed: the owner is asked still, so that a short wait (consume's
        # check of a new connection) is answered by the node that serves the
        # key, not by a redirection. (Whole seconds would wait one more.)
        blocking = None if key is not None else _timeout_index(args)
        started = time.monotonic() if blocking is not None else 0.0
        waited = args[blocking] if blocking is not None else 0  # the timeout the server is sent
        for _ in range(self.max_redirects):
            if blocking is not None and last is not None:
                resend = _with_time_left(args, blocking, started, isinstance(last, (MovedError, AskError)))
                if resend is None:
                    if isinstance(last, ClusterDownError):
                        # The time passed while the cluster was down, not
                        # waiting for a value: say so (consume waits it out),
                        # rather than answer as an empty queue would.
                        raise last
                    return None  # what the server answers once the timeout has passed
                parts, waited = encode_parts(resend), resend[blocking]
            owner = redirect or (None if self._stale or slot is None else self._slots[slot])
            node = self._nodes.get(owner) if owner else None
            try:
                if node is None:
                    node = self._node(owner or self._owner(slot))
                timeout = node.socket_timeout if blocking is None else node._blocking_timeout(waited)
                if not asking:
                    return node._call(parts, timeout, blocking=blocking is not None)
                # ASKING holds for the next command on the same connection only.
                asked, reply = node._call(encode_parts(("ASKING",)) + parts, timeout, 2, blocking is not None)
                for answer in (asked, reply):
                    if isinstance(answer, ResponseError):
                        raise answer
                return reply
            except MovedError as exc:
                # Not run. The slot has a new owner: retry there now, and learn
                # the whole map again before the next command. (Retrying by
                # the refreshed map could bounce back to the old owner while
                # the nodes still disagree.)
                redirect = self._redirected_to(exc, node)
                if redirect is not None:
                    self._slots[exc.slot] = redirect
                self._stale, asking, last = True, False, exc
            except AskError as exc:
                # Not run. This key alone is already on the migration's target:
                # retry there, without changing the map.
                redirect, asking, last = self._redirected_to(exc, node), True, exc
            except (TryAgainError, ClusterDownError) as exc:
                # Not run: a multi-key command met a half-migrated slot, or a
                # failover is under way. Wait a little; retry by the map.
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                redirect, asking, last = None, False, exc
                self._stale = self._stale or isinstance(exc, ClusterDownError)
            except PoolTimeoutError:
                raise  # our own connections were busy: the map is not in question
            except (ConnectionError, TimeoutError):
                self._stale = True  # the node may be gone or no longer a primary
                raise
            except ResponseError as exc:
                if blocking is None or not _demoted(exc):
                    raise
                # Not run: the node was demoted while the command waited
                # there. Learn the map again and wait on the new primary.
                redirect, asking, last, self._stale = None, False, exc, True
        if isinstance(last, ClusterDownError):
            raise last
        raise ClusterError(f"gave up after {self.max_redirects} redirections; last: {last}")

    def execute(self, *args: CommandArg) -> Reply:
        """Send one command to the node that serves its keys and return the
        reply, as ``Client.execute`` does.

        A command without keys (``PING``, ``INFO``, ``FLUSHALL`` …) runs on one
        node, any: use ``primaries()`` to run it on each. Each call may use
        another connection, so ``MULTI``/``EXEC`` belong in a ``pipeline()``.

        :raises CrossSlotError: its keys are in different slots; nothing sent.
        :raises ValueError: a command ``Client.execute`` refuses (``MULTI``,
            ``SELECT`` …); nothing sent.
        """
        _allowed_command_name(args)
        return self._run(args)

    def pipeline(self) -> ClusterPipeline:
        """Return a ``ClusterPipeline``: commands whose keys share one slot,
        sent in one write to the node that serves it."""
        from .cluster_pipeline import ClusterPipeline  # here: that module imports this one

        return ClusterPipeline(self)

    def ping(self) -> bool:
        """``PING`` one node of the cluster: True when it answers."""
        return self._run(("PING",)) == "PONG"  # type: ignore[no-any-return]

    def rpush(self, key: KeyT, *values: CommandArg) -> int:
        """``RPUSH``: append ``values`` in one atomic command; return the new length."""
        if not values:
            raise ValueError("rpush needs at least one value")
        return self._run(("RPUSH", key) + values, key)  # type: ignore[no-any-return]

    def lpop(self, key: KeyT, count: Optional[int] = None) -> Any:
        """``LPOP``: the first value or ``None``; with ``count``, a list or ``None``."""
        if count is None:
            return self._run(("LPOP", key), key)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an int >= 0, not {count!r}")
        return self._run(("LPOP", key, count), key)

    def blpop(self, keys: Union[KeyT, Sequence[KeyT]], timeout: float = 0) -> Optional[Tuple[bytes, bytes]]:
        """``BLPOP``: wait up to ``timeout`` seconds (0 = forever) for a value on
        any of ``keys`` (all in one slot); ``(key, value)`` or ``None``."""
        key_list = _blpop_keys(keys)
        if not key_list:
            raise ValueError("blpop needs at least one key")
        reply = self._run(("BLPOP", *key_list, blocking_timeout_arg(timeout)))
        return None if reply is None else (reply[0], reply[1])

    def llen(self, key: KeyT) -> int:
        """``LLEN``: the length of a list, 0 when the key is missing."""
        return self._run(("LLEN", key), key)  # type: ignore[no-any-return]

    def delete(self, *keys: KeyT) -> int:
        """``DEL``: delete keys (all in one slot); return how many existed."""
        if not keys:
            raise ValueError("delete needs at least one key")
        return self._run(("DEL",) + keys)  # type: ignore[no-any-return]

    def lmove(self, source: KeyT, destination: KeyT, wherefrom: str = "LEFT",
              whereto: str = "RIGHT") -> Optional[bytes]:
        """``LMOVE`` between two lists in one slot; the value or ``None``."""
        return self._run(("LMOVE", source, destination, wherefrom, whereto))  # type: ignore[no-any-return]

    def blmove(self, source: KeyT, destination: KeyT, timeout: float = 0,
               wherefrom: str = "LEFT", whereto: str = "RIGHT") -> Optional[bytes]:
        """``BLMOVE`` between two lists in one slot, waiting up to ``timeout``
        seconds (0 = forever); ``None`` on timeout."""
        server_timeout = blocking_timeout_arg(timeout)
        return self._run(  # type: ignore[no-any-return]
            ("BLMOVE", source, destination, wherefrom, whereto, server_timeout)
        )


def __getattr__(name: str) -> Any:
    # ``from resp.cluster import ClusterPipeline``, as before it had a module
    # of its own: imported on first use, since that module imports this one.
    if name == "ClusterPipeline":
        from .cluster_pipeline import ClusterPipeline

        return ClusterPipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
