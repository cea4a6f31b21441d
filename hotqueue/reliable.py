"""Reliable delivery: at-least-once consumption that survives a crashed worker.

``get`` removes a message before the worker has handled it, so a worker killed
mid-task loses it. A *reliable consumer* instead moves each message, in one
atomic step, from the queue into a processing list of its own, and removes it
only once the handler has succeeded::

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
``{hotqueue:<name>}:deliveries``       hash: consumer id -> number of the delivery held
``{hotqueue:<name>}:dead``             dead letters, oldest first
=====================================  ============================================

(A name whose main key already has a hash tag, like ``{tenant}jobs``, reuses that
tag, followed by the main key's length and the main key, so that queues sharing
a tag share no key: ``{tenant}:21:hotqueue:{tenant}jobs:dead``. A name with a
``}`` outside any tag cannot share a slot and is refused.)

Rules this module keeps:

1. A message is always in exactly one place: the queue, one processing list or
   the dead letters. Every move is a single ``LMOVE`` or one Lua script, so no
   crash can leave it in none or in two.
2. A consumer holds at most one message at a time; acknowledging removes that
   message from its own processing list only (``LREM``), never another's. Each
   take numbers its delivery, and every settlement (ack, failure, give-back)
   acts only while that number is the consumer's; one whose outcome is
   unknown (it raised on its way) is sent again before the next take, until
   the server answers it. So one held up in the network, sent again, and
   landing late, does nothing to the next message.
3. A handler that raises *fails* the message: it goes back to the head of the
   queue until it has failed ``max_attempts`` times, then to the dead letters
   with the reason (the exception's ``repr``). Identical message bytes share a
   counter (the hash is keyed by their SHA-1); success clears it.
4. A consumer refreshes its heartbeat key (``SET … PX ttl``) from a background
   thread every ``heartbeat_ttl / 3`` seconds, so a handler may run for longer
   than the TTL; each refresh is waited for that long at most, and one left
   unanswered is followed at once by another, on another connection. When a
   consumer dies its key expires; any consumer (when it
   starts and every ``heartbeat_ttl`` seconds) or ``recover()`` then moves its
   in-flight message back to the head of the queue, counting the abandoned
   delivery as a failed attempt (so a message that kills every worker that
   touches it ends in the dead letters too). A consumer that starts does the
   same first for what an earlier consumer of its id left behind.
5. A message enters a processing list only by the script ``TAKE``, which moves
   one only while its consumer is alive on the server (heartbeat there, in the
   set); recovery, and a consumer that stops, empty a list in the same step (a
   script) as they forget the consumer. So ``recover()`` and ``stats()`` find
   every message in a processing list, even after a take held up in the network
   past a recovery (it moves nothing then). A consumer waits for messages with
   a ``BLMOVE`` of the queue onto itself (head to head: it moves nothing), then
   takes.
6. Needs ``LMOVE``/``BLMOVE`` (Redis 6.2+): a consumer checks for them before
   taking anything and raises ``ReliableUnsupportedError`` at once on an older
   server; it never falls back to ``get``.

Guarantee: at least once. A message is handled again (a duplicate) only when
its handler did not finish with an acknowledgement: the consumer died or lost
Redis for longer than ``heartbeat_ttl`` mid-message, or the handler raised. A
dead letter is one list entry: a line of JSON (``reason``, ``attempts``,
``consumer``, ``failed_at``), a newline, then the message's bytes unchanged.

This module holds the consumer; ``_scripts`` holds the keys and the Lua
scripts, ``_inspection`` the dead letters and ``stats``. Their public names
are all importable from here.
"""

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import resp

from ._inspection import ConsumerStats, DeadLetter, DeadLetters, QueueStats, stats
from ._scripts import ACK, FAIL, RECOVER, RELEASE, RETIRE, TAKE, Keys, Script, keys_for, meta
from .queue import RIDE_OUT, _check_timeout, _no_loads, _probe, _RidingOut

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
#: Heartbeat rounds left waiting for a reply (see Consumer._beat) at most; past
#: it, no new round is sent until one of them ends.
UNANSWERED_ROUNDS = 2
#: Seconds after its last heartbeat that a silent consumer counts as dead: long
#: enough for a stalled process or a brief network cut, short enough that a
#: crashed worker's message waits only seconds.
DEFAULT_HEARTBEAT_TTL = 10.0
T = TypeVar("T")
AnyPipeline = Union[resp.Pipeline, resp.ClusterPipeline]


class ReliableUnsupportedError(resp.ResponseError):
    """The server has no ``LMOVE``/``BLMOVE`` (Redis before 6.2, or renamed
    away), which reliable mode needs; nothing was taken from the queue."""


def _unsupported(exc: resp.ResponseError) -> bool:
    return "unknown command" in str(exc).lower()


def _reason(exc: BaseException) -> str:
    # What a failure record says of exc: its repr, or its type when the repr
    # itself fails (a failure that cannot be recorded would never be counted,
    # and the message would come back for ever).
    try:
        return repr(exc)
    except Exception:
        return f"{type(exc).__qualname__} (its repr failed)"


def _check_max_attempts(max_attempts: int) -> None:
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an int >= 1, not {max_attempts!r}")


# -- recovery --------------------------------------------------------------------

_ABANDONED = "abandoned: its consumer stopped sending heartbeats while handling it"


def recover(queue: "HotQueue", max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Move the in-flight messages of every dead consumer (heartbeat expired)
    back to the head of the queue, atomically; return how many were moved.

    >>> queue.recover()                                   # doctest: +SKIP
    1

    Each recovered message counts one failed attempt; one that reaches
    ``max_attempts`` goes to the dead letters instead (reason ``abandoned``).
    Safe to run at any time, from any number of processes.

    :raises ValueError: ``max_attempts`` is not an int >= 1 (checked before
        anything is sent: the script would fail after taking the message).
    """
    _check_max_attempts(max_attempts)
    keys = keys_for(queue.key)
    client = queue.client
    # Bytes: an id that another client wrote may not be UTF-8, and must not
    # stop the recovery of every other consumer. '' is no consumer's id (its
    # field in the deliveries hash is the run counter, which recovering it
    # would delete).
    ids = sorted(cid for cid in client.execute("SMEMBERS", keys.consumers) if cid)
    if not ids:
        return 0
    script_keys = [keys.main, keys.consumers, keys.attempts, keys.dead, keys.deliveries]
    for cid in ids:
        script_keys += [keys.processing(cid), keys.heartbeat(cid)]
    requeued, dead = RECOVER(client, script_keys, [max_attempts, meta(_ABANDONED, ""), 0, *ids])
    if requeued or dead:
        log.warning("queue %r: recovered %d message(s) from dead consumers, %d dead-lettered",
                    queue.name, requeued, dead)
    return int(requeued)


# -- the consumer ----------------------------------------------------------------


def _default_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Consumer:
    """One reliable consumer of a queue: an id, a processing list, a heartbeat.

    >>> with Consumer(queue, max_attempts=3) as consumer:       # doctest: +SKIP
    ...     while True:
    ...         with consumer.reserve(timeout=5) as msg:
    ...             if msg is None:
    ...                 break
    ...             handle(msg)

    ``HotQueue.reserve``, ``consume(reliable=True)`` and
    ``worker(reliable=True)`` make one for you. Use it from one thread at a
    time, in the process that started it: in a forked child ``fetch`` raises
    and ``stop`` leaves the parent's registration and message alone.

    :param max_attempts: failures (including deliveries to consumers that died)
        after which a message goes to the dead letters.
    :param heartbeat_ttl: seconds without a heartbeat after which this consumer
        counts as dead and its message is recovered by others.
    :param consumer_id: a name unique among the queue's live consumers; by
        default ``host:pid:random``. A consumer that starts takes back, as
        abandoned, what an earlier one of its id still held; so two live
        consumers given one id would handle each other's messages twice.
    :raises ValueError: ``max_attempts`` is not an int >= 1, ``heartbeat_ttl``
        not a number of seconds >= 0.01, or ``consumer_id`` is empty.
    :raises TypeError: ``consumer_id`` is not a ``str``.
    """

    def __init__(
        self,
        queue: "HotQueue",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        heartbeat_ttl: float = DEFAULT_HEARTBEAT_TTL,
        consumer_id: Optional[str] = None,
    ) -> None:
        _check_max_attempts(max_attempts)
        if isinstance(heartbeat_ttl, bool) or not isinstance(heartbeat_ttl, (int, float)) \
                or not 0.01 <= heartbeat_ttl < 1e9:
            raise ValueError(f"heartbeat_ttl must be a number of seconds >= 0.01, not {heartbeat_ttl!r}")
        # A default id names the process that made it: one made before a
        # fork is made again by start() in the child.
        self._default_id_pid = os.getpid() if consumer_id is None else 0
        if consumer_id is None:
            consumer_id = _default_id()
        elif not isinstance(consumer_id, str):
            raise TypeError(f"consumer_id must be a str, not {type(consumer_id).__name__}")
        elif not consumer_id:
            raise ValueError("consumer_id must not be empty")
        else:
            try:
                consumer_id.encode()  # a lone surrogate would fail only as start() sends it
            except UnicodeEncodeError:
                raise ValueError(f"consumer_id must be text UTF-8 can encode, not {consumer_id!r}") from None
        self.queue = queue
        self.keys = keys_for(queue.key)
        self.max_attempts = max_attempts
        self.heartbeat_ttl = float(heartbeat_ttl)
        self._name(consumer_id)
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        # monotonic() of the last heartbeat that reached the server.
        self._last_beat = 0.0
        self._pid = 0  # of the process that started it: a forked child shares its id
        self._run = 0  # this start's number (see start)
        self._delivery = b""  # the number TAKE gave the message held (as bytes), named by its settlement
        # A settlement sent whose outcome is not known (it raised, or was
        # interrupted): sent again before the next take, so that no copy of
        # it still on its way can land on the same message delivered again.
        self._unsettled: Optional[Tuple[Script, List[Any], List[Any]]] = None

    def __repr__(self) -> str:
        return f"<hotqueue.reliable.Consumer {self.id!r} of {self.queue.name!r}>"

    def _name(self, consumer_id: str) -> None:
        self.id = consumer_id
        self._processing = self.keys.processing(consumer_id)
        self._heartbeat = self.keys.heartbeat(consumer_id)

    def _started_here(self) -> bool:
        # Whether this process started it: in a forked child the
        # registration and the message held are the parent's.
        return self._pid == os.getpid()

    def __enter__(self) -> "Consumer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- life cycle

    def _heartbeat_args(self) -> Tuple[Tuple[Any, ...], Tuple[Any, ...]]:
        value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "ttl_ms": int(self.heartbeat_ttl * 1000), "run": self._run})
        # The heartbeat first: a consumer in the set without one is dead.
        return (("SET", self._heartbeat, value, "PX", int(self.heartbeat_ttl * 1000)),
                ("SADD", self.keys.consumers, self.id))

    def _heartbeat_commands(self, pipe: AnyPipeline) -> AnyPipeline:
        for args in self._heartbeat_args():
            pipe.command(*args)
        return pipe

    def _send_heartbeat(self) -> None:
        # One command at a time, each following its own redirection: while a
        # cluster slot migrates, one of the two keys may have moved and the
        # other not.
        client = self.queue.client
        for args in self._heartbeat_args():
            client.execute(*args)

    def start(self) -> None:
        """Check the server, register, recover dead consumers' messages and
        start the heartbeat thread.

        :raises ReliableUnsupportedError: the server has no ``LMOVE``/``BLMOVE``.
        """
        if self._thread is not None:
            return
        if self._default_id_pid and self._default_id_pid != os.getpid():
            # Made before a fork and started in the child (or in both): the
            # parent's default id would make the two one consumer, each
            # recovering and retiring what the other holds.
            self._default_id_pid = os.getpid()
            self._name(_default_id())
        probe = self.keys.prefix + "probe"  # never written: LMOVE of an empty list
        keys = self.keys
        client = self.queue.client
        pipe = client.pipeline().command("MULTI")
        # Inside MULTI a BLMOVE does not block; an unknown command aborts the
        # whole transaction, so nothing is written on an old server.
        pipe.command("LMOVE", probe, probe, "LEFT", "LEFT")
        pipe.command("BLMOVE", probe, probe, "LEFT", "LEFT", 0)
        # This run's number, from the counter that numbers deliveries: what
        # this run sends as it starts and stops leaves a later run of the same
        # id alone, however late it lands (see _scripts.RETIRE).
        pipe.command("HINCRBY", keys.deliveries, "", 1).command("EXEC")
        replies = pipe.execute(raise_on_error=False)
        for reply in replies[1:3]:
            if isinstance(reply, resp.ResponseError) and _unsupported(reply):
                raise ReliableUnsupportedError(
                    "reliable mode needs LMOVE and BLMOVE (Redis 6.2 or newer); "
                    f"the server answered: {reply}"
                )
        for reply in [*replies, *(replies[-1] if isinstance(replies[-1], list) else ())]:
            if isinstance(reply, resp.ResponseError):
                raise reply
        self._run = replies[-1][-1]
        # A consumer that had our id before and was killed (a supervisor that
        # restarts a worker under a fixed consumer_id) may have left its
        # message in our processing list: recover it now, as abandoned, even
        # while the heartbeat it left lasts (an earlier run's), before ours
        # hides it. Then register.
        RECOVER(client, [keys.main, keys.consumers, keys.attempts, keys.dead, keys.deliveries,
                         self._processing, self._heartbeat],
                [self.max_attempts, meta(_ABANDONED, ""), self._run, self.id])
        self._heartbeat_commands(client.pipeline()).execute()
        self._last_beat = time.monotonic()
        self._pid = os.getpid()
        # An event of its own for each heartbeat thread: one that stop() gave
        # up waiting for must not take up beating again when we start anew.
        self._stopping = threading.Event()
        try:
            recover(self.queue, self.max_attempts)
        except BaseException:
            self._retire()
            raise
        self._thread = threading.Thread(
            target=self._beat, args=(self._stopping,), name=f"hotqueue-heartbeat-{self.id}", daemon=True
        )
        self._thread.start()

    def _beat(self, stopping: threading.Event) -> None:
        # The background thread: heartbeat every ttl/3, recovery every ttl.
        # Each round is sent by a thread of its own and waited for ttl/3 at
        # most. A request the link swallowed (a connection dropped without a
        # word, with socket_timeout=None) would otherwise hold the heartbeat
        # for as long as the kernel keeps that connection, and every handler
        # longer than heartbeat_ttl would be recovered from under it. A round
        # left waiting keeps its connection; the next one, sent at once, goes
        # on another. At most UNANSWERED_ROUNDS are left waiting at a time.
        interval = self.heartbeat_ttl / 3
        next_recovery = time.monotonic() + self.heartbeat_ttl
        failing = False
        waiting: List[threading.Thread] = []
        pause = interval
        while not stopping.wait(pause):
            pause = interval
            waiting = [sender for sender in waiting if sender.is_alive()]
            if len(waiting) >= UNANSWERED_ROUNDS:
                continue
            recovering = time.monotonic() >= next_recovery
            if recovering:
                next_recovery = time.monotonic() + self.heartbeat_ttl
            outcome: List[Optional[Exception]] = []
            sender = threading.Thread(target=self._beat_once, args=(recovering, outcome),
                                      name=f"hotqueue-heartbeat-round-{self.id}", daemon=True)
            sender.start()
            sender.join(interval)
            if sender.is_alive():
                waiting.append(sender)
                pause = 0.0
                error: Optional[Exception] = resp.TimeoutError(f"no reply within {interval:g} s")
            else:
                error = outcome[0] if outcome else None
            if error is None:
                failing = False
            elif not failing:  # keep beating: the server may come back
                log.warning("queue %r: heartbeat of consumer %s failed: %r", self.queue.name, self.id, error)
                failing = True

    def _beat_once(self, recovering: bool, outcome: List[Optional[Exception]]) -> None:
        # One round of _beat: the heartbeat, and recovery when it is time.
        try:
            self._send_heartbeat()
            self._last_beat = time.monotonic()
            if recovering:
                recover(self.queue, self.max_attempts)
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    def stop(self) -> None:
        """Stop the heartbeat, put any message still held back at the head of
        the queue, and unregister. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is None or not self._started_here():
            return  # in a forked child the registration and the message are the parent's
        self._stopping.set()
        if thread is not threading.current_thread():  # the garbage collector may close a consume there
            thread.join(self.heartbeat_ttl)
        self._retire()

    def _retire(self) -> None:
        keys = self.keys
        try:
            self._send_unsettled()  # one that raised (an ack: the handler's work is done)
        except Exception as exc:  # RETIRE makes a late copy of it do nothing
            log.warning("queue %r: consumer %s could not settle its last message: %r", self.queue.name, self.id, exc)
        try:
            RETIRE(self.queue.client, [keys.main, self._processing, self._heartbeat, keys.consumers, keys.deliveries],
                   [self.id, self._run])
        except Exception as exc:
            # Harmless: the heartbeat expires and others recover what we held.
            log.warning("queue %r: consumer %s could not unregister: %r", self.queue.name, self.id, exc)

    # -- one message

    def fetch(self, block: bool = True, timeout: Optional[float] = None) -> Optional[Tuple[bytes, Any]]:
        """Move the next message into this consumer's processing list and
        return ``(stored bytes, message)``, or ``None`` when the queue is empty
        (``block=False``) or ``timeout`` seconds passed, or when its heartbeat
        has expired again before a take reached the server (``heartbeat_ttl``
        too short for the link: logged). Settle it with ``ack``,
        ``fail`` or ``release``. A consumer holds one message at a time: a
        settlement whose outcome is unknown (it raised on its way) is sent
        again by the next fetch before it takes; a message never settled is
        delivered again.

        A message the serializer cannot read goes straight to the dead letters
        (logged) and the next one is fetched.

        :raises RuntimeError: the consumer was not started, or was started by
            another process (this one is a fork of it): a consumer's id,
            processing list and heartbeat belong to one process.
        """
        _check_timeout(timeout)
        if self._thread is None:
            raise RuntimeError("start the consumer first (use it as a context manager)")
        if not self._started_here():
            raise RuntimeError("this consumer was started by the parent of this forked process: "
                               "start a Consumer of its own here")
        deadline = None if not timeout else time.monotonic() + timeout
        client = self.queue.client
        self._send_unsettled()
        keys = self.keys
        take_keys = [keys.main, self._processing, self._heartbeat, keys.consumers, keys.deliveries]
        expired = 0  # takes in a row that found this consumer's heartbeat gone
        while True:
            serializer = self.queue.serializer
            loads = None if serializer is None else serializer.loads  # before the take
            if serializer is not None and not callable(loads):
                raise _no_loads(serializer, loads)
            try:
                if time.monotonic() - self._last_beat > self.heartbeat_ttl / 3:
                    # The heartbeat thread is late (stalled, or waiting for a
                    # place in a bounded pool): beat here, so that what is
                    # taken is not recovered from under its handler.
                    self._send_heartbeat()
                    self._last_beat = time.monotonic()
                # A message still in the processing list (a take whose reply
                # was lost, a message never settled) is delivered again (TAKE).
                taken = TAKE(client, take_keys, [self.id])
                if type(taken) is int:
                    # Not alive on the server: the heartbeat expired (this
                    # process stalled, or lost Redis for longer than the TTL)
                    # and recovery forgot this consumer. Register again first.
                    self._last_beat = 0.0
                    expired += 1
                    if expired == 2:  # gone again between the beat and the take
                        log.warning("queue %r: consumer %s: its heartbeat expires before a take reaches "
                                    "the server; heartbeat_ttl %s is too short for this link",
                                    self.queue.name, self.id, self.heartbeat_ttl)
                    if expired >= 2 and (not block or deadline is not None and time.monotonic() >= deadline):
                        return None
                    continue
                expired = 0  # alive on the server: lapses are counted in a row
                if taken is None:
                    if not block or deadline is not None and time.monotonic() >= deadline:
                        return None
                    # Wait for a message without taking it: a BLMOVE of the
                    # queue onto itself, head to head, moves nothing, so one
                    # held up in the network or left waiting on the server
                    # by a lost machine is harmless. In slices of ttl/3 at
                    # most, so that a late heartbeat is made up for above.
                    wait = self.heartbeat_ttl / 3
                    if deadline is not None:
                        wait = min(wait, max(deadline - time.monotonic(), 0.001))
                    client.blmove(keys.main, keys.main, wait, "LEFT", "LEFT")
                    continue
            except resp.ResponseError as exc:
                if _unsupported(exc):
                    raise ReliableUnsupportedError(f"reliable mode needs Redis 6.2 or newer: {exc}") from exc
                raise
            # Held until ack, fail or release settles it: one that raised is
            # sent again by the next fetch; a message never settled is
            # delivered again.
            data, self._delivery = taken
            if loads is None:
                return data, data
            try:
                return data, loads(data)
            except Exception as exc:
                # Dead-lettered (which _fail logs, or that it no longer held
                # it); if that fails, it stays held and the next fetch tries again.
                self._fail(data, "cannot deserialize: " + _reason(exc), 1)

    def ack(self, data: bytes) -> bool:
        """Acknowledge a fetched message: remove it for good. Returns False
        (and logs a warning) when it was no longer held: recovered by another
        consumer because this one's heartbeat expired (so it may run twice),
        or acked already (an earlier copy of this ack, which raised, acted)."""
        removed = self._settle(ACK, [self._processing, self.keys.attempts, self.keys.deliveries],
                               [self.id, self._delivery, data])
        if not removed:
            log.warning("queue %r: consumer %s acked a message it no longer held (recovered by "
                        "another consumer after its heartbeat expired, or acked already)",
                        self.queue.name, self.id)
        return bool(removed)

    def fail(self, data: bytes, exc: BaseException) -> bool:
        """Record a failed attempt at a fetched message: back to the head of the
        queue, or to the dead letters after ``max_attempts``. Returns True when
        this call dead-lettered it (False too when an earlier copy of it, which
        raised, acted)."""
        return self._fail(data, _reason(exc), self.max_attempts)

    def _fail(self, data: bytes, reason: str, max_attempts: int) -> bool:
        keys = self.keys
        reply = self._settle(FAIL, [self._processing, keys.main, keys.dead, keys.attempts, keys.deliveries],
                             [self.id, self._delivery, data, max_attempts, meta(reason, self.id)])
        attempts, dead = reply or (0, 0)
        if dead:
            log.error("queue %r: message dead-lettered after %d attempt(s): %s",
                      self.queue.name, attempts, reason[:200])
        elif not attempts:
            log.warning("queue %r: consumer %s failed a message it no longer held (recovered by "
                        "another consumer after its heartbeat expired, or failed already)",
                        self.queue.name, self.id)
        return bool(dead)

    def release(self, data: bytes) -> None:
        """Give a fetched message back unhandled, to the head of the queue,
        without counting a failure."""
        keys = self.keys
        self._settle(RELEASE, [self._processing, keys.main, keys.deliveries], [self.id, self._delivery, data])

    def _settle(self, script: Script, keys: List[Any], args: List[Any]) -> Any:
        if not self._started_here():
            raise RuntimeError("this consumer was started by the parent of this forked process: "
                               "the message it holds is the parent's to settle")
        # Run a settlement script, which acts once at most (on the delivery
        # it names, if it holds the message given). Until the server has
        # answered, its outcome is unknown: it is kept, to be sent again
        # (_send_unsettled). Refused before it was sent or before it acted,
        # or answered without acting, it leaves unknown only what was before.
        before = self._unsettled
        self._unsettled = (script, keys, args)
        try:
            reply = script(self.queue.client, keys, args)
        except (resp.ConnectionError, resp.TimeoutError, resp.ProtocolError):
            raise
        except Exception:
            self._unsettled = before
            raise
        self._unsettled = None if reply else before  # acted: the delivery is settled
        return reply

    def _send_unsettled(self) -> None:
        # Send again, until the server answers it, the settlement whose
        # outcome is unknown: a copy still on its way may yet act, so it is
        # kept through any error or interrupt.
        if self._unsettled is not None:
            script, keys, args = self._unsettled
            script(self.queue.client, keys, args)
            self._unsettled = None

    @contextlib.contextmanager
    def reserve(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Any]:
        """A context manager: fetch one message (``None`` when the queue is
        empty or ``timeout`` passed); on a clean exit ack it, on an ``Exception``
        fail it and re-raise, on any other ``BaseException`` (Ctrl-C) release it.
        The ack and the failure wait for a server out of reach, as ``work``
        does, rather than give back a message that was handled or let a failure
        go uncounted; what the block raised is what comes out, never an
        error of the settlement in its place (one the server refuses is
        logged, and the message stays held). A message that is
        ``None`` looks like no message: ``fetch`` tells the two apart."""
        got = self.fetch(block, timeout)
        if got is None:
            yield None
            return
        data, msg = got
        try:
            yield msg
        except Exception as exc:
            if self._started_here():  # a forked child leaves the parent's message alone
                try:
                    self._ride_out(self.fail, data, exc)
                except Exception as refused:  # OOM, READONLY, NOPERM…: not ridden out
                    log.warning("queue %r: the failure could not be recorded (%s); the message stays "
                                "held until the next fetch or stop gives it back", self.queue.name, refused)
            raise
        except BaseException:
            # Still held if this fails: the next fetch, or stop, gives it back.
            with contextlib.suppress(Exception):  # RuntimeError in a forked child
                self.release(data)
            raise
        # Ridden out like consume and work do: the handler has finished, and
        # giving the message back because of a brief drop would run it twice.
        if self._started_here():
            self._ride_out(self.ack, data)

    # -- many messages, riding out a server that goes away

    def _ride_out(self, action: Callable[..., T], *args: Any) -> T:
        # Run ``action(*args)`` until the server answers, with consume's backoff.
        riding = _RidingOut(self.queue.name, None)
        while True:
            try:
                return action(*args)
            except RIDE_OUT as exc:
                riding.failed(exc, 0.0)  # no timeout: logs, sleeps, or raises exc

    def deliveries(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Tuple[bytes, Any]]:
        """Yield ``(stored bytes, message)`` like ``fetch`` until the queue is
        empty or a wait times out, reconnecting like ``HotQueue.consume``.
        A ``KeyboardInterrupt`` while waiting ends it quietly."""
        answered = False  # whether a fetch has: a wait cut short after one counts toward the timeout
        while True:
            try:
                got = self._fetch_riding_out(block, timeout, answered)
            except KeyboardInterrupt:
                return
            if got is None:
                return
            answered = True
            yield got

    def _fetch_riding_out(self, block: bool, timeout: Optional[float],
                          seen_alive: bool) -> Optional[Tuple[bytes, Any]]:
        # fetch(), again after a backoff while the server is out of reach,
        # with what is left of the timeout (see queue._RidingOut).
        riding = _RidingOut(self.queue.name, timeout if block else None)
        riding.seen_alive = seen_alive
        while True:
            started = time.monotonic()
            try:
                if riding.probing:  # after a reconnection: does the link answer?
                    _probe(self.queue.client, self.keys.main)
                    riding.answered()
                    started = time.monotonic()
                return self.fetch(block, riding.left() or timeout)
            except RIDE_OUT as exc:
                if not riding.failed(exc, started):
                    return None

    def consume(self, block: bool = True, timeout: Optional[float] = None) -> Iterator[Any]:
        """Yield messages; each is acked when the next one is asked for (or the
        loop ends by itself). Leaving the loop early (``break``, an exception,
        closing the generator) puts the current message back at the head of the
        queue, unacknowledged and without counting a failure."""
        for data, msg in self.deliveries(block, timeout):
            try:
                yield msg
            except BaseException:
                with contextlib.suppress(Exception):  # RuntimeError in a forked child
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
                log.warning("queue %r: handler %s failed: %s", self.queue.name,
                            getattr(func, "__name__", func), _reason(exc))
                self._ride_out(self.fail, data, exc)
                continue
            except BaseException:
                with contextlib.suppress(Exception):  # RuntimeError in a forked child
                    self.release(data)
                raise
            self._ride_out(self.ack, data)


def reserve(queue: "HotQueue", block: bool = True, timeout: Optional[float] = None,
            **options: Any) -> "contextlib.AbstractContextManager[Any]":
    """``HotQueue.reserve``: one message under a consumer of its own."""
    _check_timeout(timeout)  # before the consumer registers: a bad call sends nothing
    return _reserve(Consumer(queue, **options), block, timeout)


@contextlib.contextmanager
def _reserve(consumer: Consumer, block: bool, timeout: Optional[float]) -> Iterator[Any]:
    with consumer, consumer.reserve(block, timeout) as msg:
        yield msg


def consume(queue: "HotQueue", block: bool = True, timeout: Optional[float] = None,
            **options: Any) -> Iterator[Any]:
    """``HotQueue.consume(reliable=True)``: ``Consumer.consume`` under a consumer of its own."""
    _check_timeout(timeout)  # before the consumer registers: a bad call sends nothing
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
