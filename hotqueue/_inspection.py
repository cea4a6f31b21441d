"""What an operator looks at (see ``hotqueue.reliable``): a queue's dead
letters and the state of its reliable consumers."""

import contextlib
import json
from typing import TYPE_CHECKING, Any, List, NamedTuple, Optional

import resp

from ._scripts import CLEAR_DEAD, REQUEUE_DEAD, is_dead_letter_meta, keys_for

if TYPE_CHECKING:
    from .queue import HotQueue


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
    """The id of the consumer that gave up on it (for one found by recovery, the
    dead consumer that held it)."""
    failed_at: float
    """When it was dead-lettered (Unix time, the consumer's clock)."""
    data: bytes
    """The message's stored bytes."""


def _parse_dead(entry: bytes, serializer: Any) -> DeadLetter:
    line, newline, data = entry.partition(b"\n")
    meta: Any = None
    # The same split as REQUEUE_DEAD's, so that ``data`` is what requeue puts back.
    if newline and is_dead_letter_meta(line):
        with contextlib.suppress(ValueError, RecursionError):
            meta = json.loads(line.decode("utf-8", "replace"))
    else:
        data = entry
    if not isinstance(meta, dict):
        meta = {"reason": "(not written by hotqueue)"}
    message: Any = data
    if serializer is not None:
        with contextlib.suppress(Exception):
            message = serializer.loads(data)
    return DeadLetter(message, str(meta.get("reason", "")), _number(int, meta.get("attempts")),
                      str(meta.get("consumer", "")), _number(float, meta.get("failed_at")), data)


def _number(kind: Any, value: Any) -> Any:
    # A field that another writer got wrong reads as 0, not as an error that
    # would hide every dead letter from peek.
    try:
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        return kind(0)


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
        # LRANGE takes 64-bit indexes: a larger count means "all of them".
        entries = self.queue.client.execute("LRANGE", self.key, 0, min(count, 2**63) - 1)
        return [_parse_dead(entry, self.queue.serializer) for entry in entries]

    def requeue(self) -> int:
        """Move every dead letter back to the tail of the queue, its bytes
        unchanged and its failure count reset, atomically; return how many."""
        return int(REQUEUE_DEAD(self.queue.client, [self.key, self.queue.key], []))

    def clear(self) -> int:
        """Delete every dead letter, atomically; return how many there were.

        :raises resp.WrongTypeError: the key holds something other than a
            list, which is left as it is.
        """
        return int(CLEAR_DEAD(self.queue.client, [self.key], []))


# -- statistics ------------------------------------------------------------------


class ConsumerStats(NamedTuple):
    """One registered consumer, as ``stats`` sees it."""

    id: str
    in_flight: int
    """Messages in its processing list (0 or 1)."""
    heartbeat_age: Optional[float]
    """Seconds since its last heartbeat; ``None`` when it expired, or when it
    cannot be told (a heartbeat with no expiry, written by something else)."""
    alive: bool = True
    """Its heartbeat is there: recovery leaves it alone. ``False``: a dead
    consumer whose messages the next recovery moves back."""


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
    ids = sorted(client.execute("SMEMBERS", keys.consumers))  # bytes: see recover
    pipe = client.pipeline().command("LLEN", keys.main).command("LLEN", keys.dead)
    for cid in ids:
        pipe.command("LLEN", keys.processing(cid)).command("GET", keys.heartbeat(cid))
        pipe.command("PTTL", keys.heartbeat(cid))
    # A consumer's key of another type (written by something else) is read
    # as recovery reads it: a heartbeat that is there, no message held. Any
    # other error, or one on the queue's own keys, is raised.
    replies = pipe.execute(raise_on_error=False)
    for index, reply in enumerate(replies):
        if isinstance(reply, resp.ResponseError) and (index < 2 or not isinstance(reply, resp.WrongTypeError)):
            raise reply
    consumers = []
    for i, cid in enumerate(ids):
        in_flight, value, pttl = replies[2 + 3 * i: 5 + 3 * i]
        if isinstance(in_flight, resp.ResponseError):
            in_flight = 0
        alive = value is not None
        age: Optional[float] = None
        if alive and not isinstance(value, resp.ResponseError) and pttl >= 0:
            try:
                age = max(int(json.loads(value)["ttl_ms"]) - pttl, 0) / 1000
            except (ValueError, KeyError, TypeError, OverflowError, RecursionError):  # written by something else
                age = None
        consumers.append(ConsumerStats(cid.decode("utf-8", "backslashreplace"), in_flight, age, alive))
    return QueueStats(replies[0], replies[1], consumers)
