"""Reliable delivery: at-least-once consumption that survives a crashed worker.

``get`` removes a message before the worker has handled it, so a worker killed
mid-task loses it. A *reliable consumer* instead moves each message, in one
atomic ``BLMOVE``, from the queue into a processing list of its own, and
removes it only once the handler has succeeded::

    >>> with queue.reserve(timeout=5) as msg:           # doctest: +SKIP
    ...     handle(msg)        # acked on a clean exit, failed on an exception

    >>> @queue.worker(reliable=True, max_attempts=5)     # doctest: +SKIP
    ... def handle(msg):
    ...     ...

It is opt-in and shares the queue: the list ``hotqueue:<name>`` and the bytes
of its messages are exactly those of plain ``put``/``get`` (and of HotQueue
0.2.8), so old producers, plain consumers and reliable consumers mix freely.

Keys. Every other key of the queue starts with a hash tag equal to the main key
(``{hotqueue:<name>}``), so all of them live in the main key's Redis Cluster
slot and every script below touches one slot only:

=====================================  ============================================
``hotqueue:<name>``                    the queue (unchanged)
``{hotqueue:<name>}:processing:<id>``  the message consumer ``<id>`` is handling
``{hotqueue:<name>}:heartbeat:<id>``   present while ``<id>`` is alive (TTL)
``{hotqueue:<name>}:consumers``        set of the consumer ids
``{hotqueue:<name>}:attempts``         hash: SHA-1 of a message -> failed attempts
``{hotqueue:<name>}:dead``             dead letters, oldest first
=====================================  ============================================

(A name whose main key already has a hash tag, like ``{tenant}jobs``, reuses that
tag; a name with a ``}`` outside any tag cannot share a slot and is refused.)

Rules this module keeps:

1. A message is always in exactly one place: the queue, one processing list or
   the dead letters. Every move is a single ``LMOVE``/``BLMOVE`` or one Lua
   script, so no crash can leave it in none or in two.
2. A consumer holds at most one message at a time; acknowledging removes that
   message from its own processing list only (``LREM``), never another's.
3. A handler that raises *fails* the message: it goes back to the head of the
   queue until it has failed ``max_attempts`` times, then to the dead letters
   with the reason (the exception's ``repr``). Identical message bytes share a
   counter (the hash is keyed by their SHA-1); success clears it.
4. A consumer refreshes its heartbeat key (``SET … PX ttl``) from a background
   thread every ``heartbeat_ttl / 3`` seconds, so a handler may run for longer
   than the TTL. When a consumer dies its key expires; any consumer (when it
   starts and every ``heartbeat_ttl`` seconds) or ``recover()`` then moves its
   in-flight message back to the head of the queue, counting the abandoned
   delivery as a failed attempt (so a message that kills every worker that
   touches it ends in the dead letters too).
5. Needs ``LMOVE``/``BLMOVE`` (Redis 6.2+): a consumer checks for them before
   taking anything and raises ``ReliableUnsupportedError`` at once on an older
   server; it never falls back to ``get``.

Guarantee: at least once. A message is handled again (a duplicate) only when
its handler did not finish with an acknowledgement: the consumer died or lost
Redis for longer than ``heartbeat_ttl`` mid-message, or the handler raised. A
dead letter is one list entry: a line of JSON (``reason``, ``attempts``,
``consumer``, ``failed_at``), a newline, then the message's bytes unchanged.
"""

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import resp

from .queue import BACKOFF_FIRST, BACKOFF_MAX, _check_timeout

if TYPE_CHECKING:
    from .queue import HotQueue

__all__ = [
    "ReliableUnsupportedError",
    "Keys",
    "keys_for",
    "Consumer",
    "DeadLetter",
    "DeadLetters",
    "ConsumerStats",
    "QueueStats",
    "recover",
    "stats",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_HEARTBEAT_TTL",
]

log = logging.getLogger("hotqueue")

#: A message that failed this many times goes to the dead letters.
DEFAULT_MAX_ATTEMPTS = 5
#: Seconds after its last heartbeat that a silent consumer counts as dead: long
#: enough for a stalled process or a brief network cut, short enough that a
#: crashed worker's message waits only seconds.
DEFAULT_HEARTBEAT_TTL = 10.0
#: A dead letter's reason is cut to this many characters: a huge exception
#: message must not bloat the dead-letter list.
MAX_REASON = 2000

# What consume and worker wait out, as HotQueue.consume does.
_RIDE_OUT = (resp.ConnectionError, resp.TimeoutError, resp.BusyLoadingError, resp.ClusterDownError)
T = TypeVar("T")
AnyClient = Union[resp.Client, resp.ClusterClient]
AnyPipeline = Union[resp.Pipeline, resp.ClusterPipeline]


class ReliableUnsupportedError(resp.ResponseError):
    """The server has no ``LMOVE``/``BLMOVE`` (Redis before 6.2, or renamed
    away), which reliable mode needs; nothing was taken from the queue."""


# -- keys ------------------------------------------------------------------------


class Keys(NamedTuple):
    """The Redis keys of one queue in reliable mode (see the module docstring)."""

    main: str
    prefix: str  # "{tag}:" — every other key starts with it

    @property
    def consumers(self) -> str:
        """The set of consumer ids."""
        return self.prefix + "consumers"

    @property
    def attempts(self) -> str:
        """The hash of failed-attempt counts, keyed by the SHA-1 of a message."""
        return self.prefix + "attempts"

    @property
    def dead(self) -> str:
        """The dead-letter list."""
        return self.prefix + "dead"

    def processing(self, consumer_id: str) -> str:
        """The processing list of one consumer."""
        return self.prefix + "processing:" + consumer_id

    def heartbeat(self, consumer_id: str) -> str:
        """The heartbeat key of one consumer."""
        return self.prefix + "heartbeat:" + consumer_id


def _hash_tag(key: str) -> Optional[str]:
    # Redis Cluster hashes only the first "{…}" when it is not empty.
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1:end]


def keys_for(main_key: str) -> Keys:
    """The keys of the queue whose list is ``main_key``, all in its cluster slot.

    >>> keys_for("hotqueue:jobs").dead
    '{hotqueue:jobs}:dead'
    >>> keys_for("hotqueue:{tenant}jobs").dead
    '{tenant}:dead'

    :raises ValueError: ``main_key`` has a ``}`` outside a hash tag, so no other
        key can be made to share its slot.
    """
    tag = _hash_tag(main_key)
    if tag is None:
        if "}" in main_key:
            raise ValueError(
                f"reliable mode cannot keep the keys of {main_key!r} in one cluster slot: "
                "the name has a '}' outside a {hash tag}"
            )
        tag = main_key
    return Keys(main_key, "{" + tag + "}:")


# -- scripts ---------------------------------------------------------------------

# Redis does not roll a script back when a command in it fails, so every script
# checks what could fail (types, the JSON it is given) before its first write.
_CHECK_LISTS = """
for _, key in ipairs(LISTS) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'list' and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is not a list')
  end
end
"""


class _Script:
    """A Lua script run by ``EVALSHA``, loaded with ``EVAL`` when the server
    does not know it yet (after a restart or ``SCRIPT FLUSH``)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: AnyClient, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except resp.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return client.execute("EVAL", self.source, len(keys), *keys, *args)


# KEYS: processing, attempts. ARGV: message. Returns 1, or 0 when the message
# was no longer there (recovered while its handler ran).
_ACK = _Script("""
local removed = redis.call('LREM', KEYS[1], 1, ARGV[1])
if removed > 0 then redis.call('HDEL', KEYS[2], redis.sha1hex(ARGV[1])) end
return removed
""")

# KEYS: processing, main, dead, attempts. ARGV: message, max_attempts, meta
# (a JSON object). Returns {attempts, 1 if dead-lettered else 0}; attempts is
# 0 when the message was no longer in the processing list.
_FAIL = _Script("local LISTS = {KEYS[2], KEYS[3]}" + _CHECK_LISTS + """
local meta = cjson.decode(ARGV[3])
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return {0, 0} end
local digest = redis.sha1hex(ARGV[1])
local attempts = redis.call('HINCRBY', KEYS[4], digest, 1)
if attempts < tonumber(ARGV[2]) then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  return {attempts, 0}
end
redis.call('HDEL', KEYS[4], digest)
meta['attempts'] = attempts
redis.call('RPUSH', KEYS[3], cjson.encode(meta) .. '\\n' .. ARGV[1])
return {attempts, 1}
""")

# KEYS: main, consumers, attempts, dead, then (processing, heartbeat) of each
# consumer. ARGV: max_attempts, meta, then the consumer ids. Every consumer
# whose heartbeat is gone gets its messages moved back to the head of the
# queue (or to the dead letters) and leaves the set. Returns {requeued, dead}.
_RECOVER = _Script("local LISTS = {KEYS[1], KEYS[4]}" + _CHECK_LISTS + """
local meta = cjson.decode(ARGV[2])
local max_attempts = tonumber(ARGV[1])
local requeued, dead = 0, 0
for i = 3, #ARGV do
  local processing, heartbeat = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', heartbeat) == 0 then
    while true do
      local msg = redis.call('RPOP', processing)
      if not msg then break end
      local digest = redis.sha1hex(msg)
      local attempts = redis.call('HINCRBY', KEYS[3], digest, 1)
      if attempts < max_attempts then
        redis.call('LPUSH', KEYS[1], msg)
        requeued = requeued + 1
      else
        redis.call('HDEL', KEYS[3], digest)
        meta['attempts'] = attempts
        meta['consumer'] = ARGV[i]
        redis.call('RPUSH', KEYS[4], cjson.encode(meta) .. '\\n' .. msg)
        dead = dead + 1
      end
    end
    redis.call('SREM', KEYS[2], ARGV[i])
  end
end
return {requeued, dead}
""")

# KEYS: dead, main. Moves every dead letter's message to the tail of the queue.
_REQUEUE_DEAD = _Script("local LISTS = {KEYS[1], KEYS[2]}" + _CHECK_LISTS + """
local moved = 0
while true do
  local entry = redis.call('LPOP', KEYS[1])
  if not entry then break end
  local cut = string.find(entry, '\\n', 1, true)
  if cut then entry = string.sub(entry, cut + 1) end
  redis.call('RPUSH', KEYS[2], entry)
  moved = moved + 1
end
return moved
""")


def _meta(reason: str, consumer_id: str) -> str:
    # ensure_ascii: the JSON line of a dead letter never holds a raw newline;
    # backslashreplace: a lone surrogate would make the script's JSON decoder fail.
    reason = reason[:MAX_REASON].encode("utf-8", "backslashreplace").decode("utf-8")
    return json.dumps({"reason": reason, "consumer": consumer_id, "failed_at": time.time()})


def _unsupported(exc: resp.ResponseError) -> bool:
    return "unknown command" in str(exc).lower()


# -- recovery --------------------------------------------------------------------


def recover(queue: "HotQueue", max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Move the in-flight messages of every dead consumer (heartbeat expired)
    back to the head of the queue, atomically; return how many were moved.

    >>> queue.recover()                                   # doctest: +SKIP
    1

    Each recovered message counts one failed attempt; one that reaches
    ``max_attempts`` goes to the dead letters instead (reason ``abandoned``).
    Safe to run at any time, from any number of processes.
    """
    keys = keys_for(queue.key)
    client = queue.client
    ids = sorted(m.decode() for m in client.execute("SMEMBERS", keys.consumers))
    if not ids:
        return 0
    script_keys = [keys.main, keys.consumers, keys.attempts, keys.dead]
    for cid in ids:
        script_keys += [keys.processing(cid), keys.heartbeat(cid)]
    reason = "abandoned: its consumer stopped sending heartbeats while handling it"
    requeued, dead = _RECOVER(client, script_keys, [max_attempts, _meta(reason, ""), *ids])
    if requeued or dead:
        log.warning("queue %r: recovered %d message(s) from dead consumers, %d dead-lettered",
                    queue.name, requeued, dead)
    return int(requeued)


# -- the consumer ----------------------------------------------------------------


class Consumer:
    """One reliable consumer of a queue: an id, a processing list, a heartbeat.

    >>> with Consumer(queue, max_attempts=3) as consumer:       # doctest: +SKIP
    ...     while True:
    ...         with consumer.reserve(timeout=5) as msg:
    ...             if msg is None:
    ...                 break
    ...             handle(msg)

    ``HotQueue.reserve``, ``consume(reliable=True)`` and
    ``worker(reliable=True)`` make one for you. Use it from one thread at a time.

    :param max_attempts: failures (including deliveries to consumers that died)
        after which a message goes to the dead letters.
    :param heartbeat_ttl: seconds without a heartbeat after which this consumer
        counts as dead and its message is recovered by others.
    :param consumer_id: a name unique among the queue's live consumers; by
        default ``host:pid:random``.
    """

    def __init__(
        self,
        queue: "HotQueue",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL,
        consumer_id: Optional[str] = None,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
        if isinstance(heartbeat_ttl, bool) or not isinstance(heartbeat_ttl, (int, float)) \
                or not 0.01 <= heartbeat_ttl < 1e9:
            raise ValueError(f"heartbeat_ttl must be a number of seconds >= 0.01, not {heartbeat_ttl!r}")
        if consumer_id is None:
            consumer_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.queue = queue
        self.keys = keys_for(queue.key)
        self.id = consumer_id
        self.max_attempts = max_attempts
        self.heartbeat_ttl = float(heartbeat_ttl)
        self._processing = self.keys.processing(consumer_id)
        self._heartbeat = self.keys.heartbeat(consumer_id)
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # Set when a move may have happened on the server without its reply
        # reaching us: the processing list may hold a message nobody handles.
        self._unsure = False

    def __repr__(self) -> str:
        return f"<hotqueue.reliable.Consumer {self.id!r} of {self.queue.name!r}>"

    def __enter__(self) -> "Consumer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- life cycle

    def _heartbeat_commands(self, pipe: AnyPipeline) -> AnyPipeline:
        value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "ttl_ms": int(self.heartbeat_ttl * 1000)})
        # The heartbeat first: a consumer in the set without one is dead.
        return (pipe.command("SET", self._heartbeat, value, "PX", int(self.heartbeat_ttl * 1000))
                .command("SADD", self.keys.consumers, self.id))

    def start(self) -> None:
        """Check the server, register, recover dead consumers' messages and
        start the heartbeat thread.

        :raises ReliableUnsupportedError: the server has no ``LMOVE``/``BLMOVE``.
        """
        if self._thread is not None:
            return
        probe = self.keys.prefix + "probe"  # never written: LMOVE of an empty list
        pipe = self.queue.client.pipeline().command("MULTI")
        # Inside MULTI a BLMOVE does not block; an unknown command aborts the
        # whole transaction, so nothing is registered on an old server.
        pipe.command("LMOVE", probe, probe, "LEFT", "LEFT")
        pipe.command("BLMOVE", probe, probe, "LEFT", "LEFT", 0)
        self._heartbeat_commands(pipe).command("EXEC")
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[1:3]:
            if isinstance(reply, resp.ResponseError) and _unsupported(reply):
                raise ReliableUnsupportedError(
                    "reliable mode needs LMOVE and BLMOVE (Redis 6.2 or newer); "
                    f"the server answered: {reply}"
                )
        for reply in replies:
            if isinstance(reply, resp.ResponseError):
                raise reply
        self._stopping.clear()
        try:
            recover(self.queue, self.max_attempts)
        except BaseException:
            self._retire()
            raise
        self._thread = threading.Thread(
            target=self._beat, name=f"hotqueue-heartbeat-{self.id}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        # The background thread: heartbeat every ttl/3, recovery every ttl.
        next_recovery = time.monotonic() + self.heartbeat_ttl
        failing = False
        while not self._stopping.wait(self.heartbeat_ttl / 3):
            try:
                self._heartbeat_commands(self.queue.client.pipeline()).execute()
                if time.monotonic() >= next_recovery:
                    next_recovery = time.monotonic() + self.heartbeat_ttl
                    recover(self.queue, self.max_attempts)
            except Exception as exc:  # keep beating: the server may come back
                if not failing:
                    log.warning("queue %r: heartbeat of consumer %s failed: %r", self.queue.name, self.id, exc)
                failing = True
            else:
                failing = False

    def stop(self) -> None:
        """Stop the heartbeat, put any message still held back at the head of
        the queue, and unregister. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join(self.heartbeat_ttl)
        self._retire()

    def _retire(self) -> None:
        try:
            self._return_held()
            client = self.queue.client
            client.pipeline().command("DEL", self._heartbeat).command(
                "SREM", self.keys.consumers, self.id).execute()
        except Exception as exc:
            # Harmless: the heartbeat expires and others recover what we held.
            log.warning("queue %r: consumer %s could not unregister: %r", self.queue.name, self.id, exc)

    def _return_held(self) -> int:
        # Move whatever the processing list holds back to the head of the queue.
        moved = 0
        client = self.queue.client
        while client.lmove(self._processing, self.keys.main, "RIGHT", "LEFT") is not None:
            moved += 1
        self._unsure = False
        return moved

    # -- one message

    def fetch(self, block: bool = True, timeout: Optional[float] = None) -> Optional[Tuple[bytes, Any]]:
        """Move the next message into this consumer's processing list and
        return ``(stored bytes, message)``, or ``None`` when the queue is empty
        (``block=False``) or ``timeout`` seconds passed. Settle it with ``ack``,
        ``fail`` or ``release``.

        A message the serializer cannot read goes straight to the dead letters
        (logged) and the next one is fetched.
        """
        _check_timeout(timeout)
        if self._thread is None:
            raise RuntimeError("start the consumer first (use it as a context manager)")
        deadline = None if not timeout else time.monotonic() + timeout
        client = self.queue.client
        while True:
            if self._unsure:
                self._return_held()
            try:
                if block:
                    wait = 0.0 if deadline is None else max(deadline - time.monotonic(), 0.001)
                    data = client.blmove(self.keys.main, self._processing, wait, "LEFT", "RIGHT")
                else:
                    data = client.lmove(self.keys.main, self._processing, "LEFT", "RIGHT")
            except resp.ResponseError as exc:
                if _unsupported(exc):
                    raise ReliableUnsupportedError(f"reliable mode needs Redis 6.2 or newer: {exc}") from exc
                raise
            except BaseException:
                self._unsure = True
                raise
            if data is None:
                return None
            serializer = self.queue.serializer
            if serializer is None:
                return data, data
            try:
                return data, serializer.loads(data)
            except Exception as exc:
                log.error("queue %r: cannot deserialize a message, dead-lettered: %r", self.queue.name, exc)
                self._fail(data, f"cannot deserialize: {exc!r}", 1)

    def ack(self, data: bytes) -> bool:
        """Acknowledge a fetched message: remove it for good. Returns False
        (and logs a warning) when it was no longer held — recovered by another
        consumer because this one's heartbeat expired — so it may run twice."""
        removed = _ACK(self.queue.client, [self._processing, self.keys.attempts], [data])
        if not removed:
            log.warning("queue %r: consumer %s acked a message it no longer held (recovered by "
                        "another consumer after its heartbeat expired, or acked already)",
                        self.queue.name, self.id)
        return bool(removed)

    def fail(self, data: bytes, exc: BaseException) -> bool:
        """Record a failed attempt at a fetched message: back to the head of the
        queue, or to the dead letters after ``max_attempts``. Returns True when
        it was dead-lettered."""
        return self._fail(data, repr(exc), self.max_attempts)

    def _fail(self, data: bytes, reason: str, max_attempts: int) -> bool:
        keys = self.keys
        attempts, dead = _FAIL(self.queue.client, [self._processing, keys.main, keys.dead, keys.attempts],
                               [data, max_attempts, _meta(reason, self.id)])
        if dead:
            log.error("queue %r: message dead-lettered after %d attempt(s): %s",
                      self.queue.name, attempts, reason[:200])
        elif not attempts:
            log.warning("queue %r: consumer %s failed a message that had been recovered by "
                        "another consumer; it may be handled twice", self.queue.name, self.id)
        return bool(dead)

    def release(self, data: bytes) -> None:
        """Give a fetched message back unhandled, to the head of the queue,
        without counting a failure."""
        self._return_held()

    @contextlib.contextmanager
    def reserve(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Any]:
        """A context manager: fetch one message (``None`` when the queue is
        empty or ``timeout`` passed); on a clean exit ack it, on an ``Exception``
        fail it and re-raise, on any other ``BaseException`` (Ctrl-C) release it."""
        got = self.fetch(block, timeout)
        if got is None:
            yield None
            return
        data, msg = got
        try:
            yield msg
        except Exception as exc:
            self.fail(data, exc)
            raise
        except BaseException:
            self.release(data)
            raise
        self.ack(data)

    # -- many messages, riding out a server that goes away

    def _ride_out(self, action: Callable[..., T], *args: Any) -> T:
        # Run ``action(*args)`` until the server answers: capped exponential backoff.
        backoff = BACKOFF_FIRST
        while True:
            try:
                return action(*args)
            except _RIDE_OUT as exc:
                log.warning("queue %r: %s; retrying in %.1f s", self.queue.name, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def deliveries(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Tuple[bytes, Any]]:
        """Yield ``(stored bytes, message)`` like ``fetch`` until the queue is
        empty or a wait times out, reconnecting like ``HotQueue.consume``.
        A ``KeyboardInterrupt`` while waiting ends it quietly."""
        while True:
            try:
                got = self._ride_out(self.fetch, block, timeout)
            except KeyboardInterrupt:
                return
            if got is None:
                return
            yield got

    def consume(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Any]:
        """Yield messages; each is acked when the next one is asked for (or the
        loop ends by itself). Leaving the loop early (``break``, an exception,
        closing the generator) puts the current message back at the head of the
        queue, unacknowledged and without counting a failure."""
        for data, msg in self.deliveries(block, timeout):
            try:
                yield msg
            except BaseException:
                with contextlib.suppress(Exception):
                    self.release(data)
                raise
            self._ride_out(self.ack, data)

    def work(self, func: Callable[..., Any], args: Sequence[Any] = (), block: bool = True,
             timeout: Optional[float] = None) -> None:
        """Run ``func(*args, msg)`` on every message: ack when it returns, fail
        (log, requeue or dead-letter) when it raises an ``Exception``; release
        the message and re-raise on any other ``BaseException``."""
        for data, msg in self.deliveries(block, timeout):
            try:
                func(*args, msg)
            except Exception as exc:
                log.warning("queue %r: handler %s failed: %r", self.queue.name,
                            getattr(func, "__name__", func), exc)
                self._ride_out(self.fail, data, exc)
                continue
            except BaseException:
                with contextlib.suppress(Exception):
                    self.release(data)
                raise
            self._ride_out(self.ack, data)


def reserve(queue: "HotQueue", block: bool = True, timeout: Optional[float] = None,
            **options: Any) -> "contextlib.AbstractContextManager[Any]":
    """``HotQueue.reserve``: one message under a consumer of its own."""
    return _reserve(Consumer(queue, **options), block, timeout)


@contextlib.contextmanager
def _reserve(consumer: Consumer, block: bool, timeout: Optional[float]) -> Iterator[Any]:
    with consumer, consumer.reserve(block, timeout) as msg:
        yield msg


def consume(queue: "HotQueue", block: bool = True, timeout: Optional[float] = None,
            **options: Any) -> Iterator[Any]:
    """``HotQueue.consume(reliable=True)``: ``Consumer.consume`` under a consumer of its own."""
    consumer = Consumer(queue, **options)
    if not _start_riding_out(consumer):
        return
    try:
        yield from consumer.consume(block, timeout)
    finally:
        consumer.stop()


def work(queue: "HotQueue", func: Callable[..., Any], args: Sequence[Any] = (), block: bool = True,
         timeout: Optional[float] = None, **options: Any) -> None:
    """``HotQueue.worker(reliable=True)``: ``Consumer.work`` under a consumer of its own."""
    consumer = Consumer(queue, **options)
    if not _start_riding_out(consumer):
        return
    try:
        consumer.work(func, args, block, timeout)
    finally:
        consumer.stop()


def _start_riding_out(consumer: Consumer) -> bool:
    # consume and worker wait for an unreachable server even before their
    # first message, as the plain ones do; False: Ctrl-C while waiting.
    try:
        consumer._ride_out(consumer.start)
    except KeyboardInterrupt:
        return False
    return True


# -- dead letters ----------------------------------------------------------------


class DeadLetter(NamedTuple):
    """One dead letter, as ``DeadLetters.peek`` returns it."""

    message: Any
    """The message, deserialized; its stored bytes when that fails or with ``serializer=None``."""
    reason: str
    """Why it failed: the exception's ``repr`` (or ``abandoned: …``, ``cannot deserialize: …``)."""
    attempts: int
    """How many times it failed."""
    consumer: str
    """The id of the consumer that gave up on it (empty when found by recovery)."""
    failed_at: float
    """When it was dead-lettered (Unix time, the consumer's clock)."""
    data: bytes
    """The message's stored bytes."""


def _parse_dead(entry: bytes, serializer: Any) -> DeadLetter:
    line, _, data = entry.partition(b"\n")
    try:
        meta = json.loads(line)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        meta, data = {"reason": "(not written by hotqueue)"}, entry
    message: Any = data
    if serializer is not None:
        with contextlib.suppress(Exception):
            message = serializer.loads(data)
    return DeadLetter(message, str(meta.get("reason", "")), int(meta.get("attempts", 0)),
                      str(meta.get("consumer", "")), float(meta.get("failed_at", 0.0)), data)


class DeadLetters:
    """The messages that failed ``max_attempts`` times: ``queue.dead_letters``.

    >>> len(queue.dead_letters)                           # doctest: +SKIP
    1
    >>> queue.dead_letters.peek()[0].reason               # doctest: +SKIP
    "ValueError('bad input')"
    >>> queue.dead_letters.requeue()                      # doctest: +SKIP
    1
    """

    def __init__(self, queue: "HotQueue") -> None:
        self.queue = queue
        self.key = keys_for(queue.key).dead

    def __repr__(self) -> str:
        return f"<hotqueue.reliable.DeadLetters of {self.queue.name!r}>"

    def __len__(self) -> int:
        """How many dead letters there are."""
        return self.queue.client.llen(self.key)

    def peek(self, count: int = 10) -> List[DeadLetter]:
        """The oldest ``count`` dead letters, oldest first, left in place."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count must be an int >= 0, not {count!r}")
        if count == 0:
            return []
        entries = self.queue.client.execute("LRANGE", self.key, 0, count - 1)
        return [_parse_dead(entry, self.queue.serializer) for entry in entries]

    def requeue(self) -> int:
        """Move every dead letter back to the tail of the queue, its bytes
        unchanged and its failure count reset, atomically; return how many."""
        return int(_REQUEUE_DEAD(self.queue.client, [self.key, self.queue.key], []))

    def clear(self) -> int:
        """Delete every dead letter; return how many there were."""
        pipe = self.queue.client.pipeline().command("MULTI").command("LLEN", self.key)
        replies = pipe.command("DEL", self.key).command("EXEC").execute()
        return int(replies[-1][0])


# -- statistics ------------------------------------------------------------------


class ConsumerStats(NamedTuple):
    """One registered consumer, as ``stats`` sees it."""

    id: str
    in_flight: int
    """Messages in its processing list (0 or 1)."""
    heartbeat_age: Optional[float]
    """Seconds since its last heartbeat; ``None`` when it expired (a dead
    consumer whose messages the next recovery moves back)."""


class QueueStats(NamedTuple):
    """What ``stats`` returns."""

    length: int
    """Messages waiting in the queue."""
    dead_letters: int
    consumers: List[ConsumerStats]

    @property
    def in_flight(self) -> int:
        """Messages held by consumers."""
        return sum(c.in_flight for c in self.consumers)

    @property
    def oldest_heartbeat_age(self) -> Optional[float]:
        """The largest heartbeat age among live consumers, or ``None``."""
        ages = [c.heartbeat_age for c in self.consumers if c.heartbeat_age is not None]
        return max(ages) if ages else None


def stats(queue: "HotQueue") -> QueueStats:
    """Length, in-flight messages per consumer, dead letters and heartbeat ages.

    >>> queue.stats().length                              # doctest: +SKIP
    3
    """
    keys = keys_for(queue.key)
    client = queue.client
    ids = sorted(m.decode() for m in client.execute("SMEMBERS", keys.consumers))
    pipe = client.pipeline().command("LLEN", keys.main).command("LLEN", keys.dead)
    for cid in ids:
        pipe.command("LLEN", keys.processing(cid)).command("GET", keys.heartbeat(cid))
        pipe.command("PTTL", keys.heartbeat(cid))
    replies = pipe.execute()
    consumers = []
    for i, cid in enumerate(ids):
        in_flight, value, pttl = replies[2 + 3 * i: 5 + 3 * i]
        age: Optional[float] = None
        if value is not None and pttl >= 0:
            try:
                age = max(int(json.loads(value)["ttl_ms"]) - pttl, 0) / 1000
            except (ValueError, KeyError, TypeError):
                age = None
        consumers.append(ConsumerStats(cid, in_flight, age))
    return QueueStats(replies[0], replies[1], consumers)
