"""``ClusterPipeline``: commands whose keys share one hash slot, sent in one
write to the primary that serves it (made by ``ClusterClient.pipeline()``).

Rules this module keeps:

1. Every command with a key is in one slot, checked as it is queued
   (``CrossSlotError``, nothing sent); key-less commands go along.
2. The pipeline is sent again only when every reply says nothing ran
   (``MOVED``, ``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``, or a transaction they
   aborted; ``PING`` and ``ECHO`` change nothing), at most ``max_redirects``
   times. Once any command may have run,
   the replies stand as they are: resending could run it twice. Outside a
   transaction, the commands answered ``ASK`` alone (a slot half migrated:
   their keys are on the target already) are then sent on there, once.
3. A failed connection, or any reply of those but ``ASK``, marks the
   cluster's slot map stale, to be learned again; ``ASK`` alone leaves it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional, Tuple

from .cluster import RETRY_FIRST, RETRY_MAX, ClusterClient, _cross_slot, _slot_of, command_keys
from .commands import UNCLOSED_TRANSACTION, _command_name, _still_open
from .errors import (
    AskError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    MovedError,
    PoolTimeoutError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from .protocol import encode_parts

if TYPE_CHECKING:  # type aliases, defined for type checkers only
    from .client import Client
    from .protocol import CommandArg, Reply

__all__ = ["ClusterPipeline"]


#: Key-less commands that change nothing anywhere: run twice, they are as
#: run once, so they do not keep the rest of a pipeline from being resent.
EFFECT_FREE = frozenset({"PING", "ECHO"})


def _not_run(reply: Reply, args: Tuple[CommandArg, ...], queued: bool) -> bool:
    # Whether a pipelined command's reply shows it did not run, or ran without
    # effect (MULTI, PING, ECHO; a command queued in a transaction that was
    # then aborted). Only one sent between MULTI and its EXEC (queued) is
    # QUEUED by that reply: a script may return the status "QUEUED" after it
    # has written.
    if isinstance(reply, (MovedError, AskError, TryAgainError, ClusterDownError)):
        return True
    if isinstance(reply, ResponseError):
        return reply.kind == "EXECABORT"
    if queued:
        return bool(reply == "QUEUED")
    name = _command_name(args)
    return name in EFFECT_FREE or (reply == "OK" and name == "MULTI")


def _queued_flags(commands: List[Tuple[CommandArg, ...]]) -> List[bool]:
    # For each command, whether it is sent inside a MULTI (before its EXEC or DISCARD).
    flags = []
    in_multi = False
    for args in commands:
        name = _command_name(args)
        closing = name in ("EXEC", "DISCARD")
        flags.append(in_multi and not closing)
        in_multi = name == "MULTI" or (in_multi and not closing)
    return flags


def _send_asked_on(cluster: ClusterClient, node: Client, commands: List[Tuple[CommandArg, ...]],
                   replies: List[Reply]) -> List[Reply]:
    # The replies, with those of the commands answered ASK replaced by what
    # the migration's target answers them (each after ASKING, in order):
    # they did not run, their keys being on the target already. Not inside a
    # transaction, whose commands must run together on one node, nor beside
    # a WATCH or UNWATCH, whose effect belongs to the connection they ran on
    # (a WATCH sent on without its UNWATCH would be refused as left open).
    asked = [index for index, reply in enumerate(replies) if isinstance(reply, AskError)]
    if len({replies[index].node for index in asked}) != 1 or any(
            _command_name(args) in ("MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH") for args in commands):
        return replies
    target = cluster._redirected_to(replies[asked[0]], node)
    if target is None:
        return replies
    pipe = cluster._node(target).pipeline()
    for index in asked:
        pipe.command("ASKING").command(*commands[index])
    try:
        answers = pipe.execute(raise_on_error=False)
    except PoolTimeoutError:
        raise  # our own connections were busy: the map is not in question
    except (ConnectionError, TimeoutError):
        cluster._stale = True
        raise
    replies = list(replies)
    for index, answer in zip(asked, answers[1::2]):
        replies[index] = answer
    return replies


class ClusterPipeline:
    """Commands sent in one write to the node serving their one slot.

    Like ``Pipeline``, not atomic unless wrapped in ``MULTI``/``EXEC``. When
    every reply says nothing ran (``MOVED``, ``ASK``, ``TRYAGAIN``,
    ``CLUSTERDOWN``, or a transaction aborted by one; ``PING`` and ``ECHO``
    change nothing), the whole pipeline is sent again: to the new owner, to the ``ASK`` target after ``ASKING`` when
    every command with a key was sent there, or after a short wait. Otherwise
    some of the commands may have run, so none of those is resent; outside a
    ``MULTI`` (and with no ``WATCH``), those answered ``ASK`` (a slot half
    migrated, their keys on the target already) are sent on to the target,
    after ``ASKING``.
    """

    def __init__(self, cluster: ClusterClient) -> None:
        self._cluster = cluster
        self._commands: List[Tuple[CommandArg, ...]] = []
        self._slot: Optional[int] = None
        self._open = 0  # a MULTI or WATCH queued and not closed yet (see commands._still_open)

    def __len__(self) -> int:
        return len(self._commands)

    def command(self, *args: CommandArg) -> "ClusterPipeline":
        """Queue one command; its keys must share the slot of those before it.

        :raises CrossSlotError: they do not; the pipeline is left as it was.
        :raises ValueError: a command ``Pipeline.command`` refuses.
        """
        slot = _slot_of(command_keys(args))
        if slot is not None and self._slot is not None and slot != self._slot:
            raise _cross_slot({slot, self._slot})
        encode_parts(args)  # bad arguments raise here
        self._open = _still_open(args, self._open)
        # A buffer (bytearray, memoryview, …) is copied: what is sent, maybe
        # more than once, is what was queued, whatever its owner does after.
        self._commands.append(tuple(
            arg if isinstance(arg, (str, bytes, int, float)) else memoryview(arg).tobytes() for arg in args
        ))
        if slot is not None:
            self._slot = slot
        return self

    def execute(self, raise_on_error: bool = True) -> List[Reply]:
        """Send the queued commands and return their replies in order, as
        ``Pipeline.execute`` does. The queue is emptied either way."""
        commands, self._commands = self._commands, []
        slot, self._slot = self._slot, None
        still_open, self._open = self._open, 0
        if still_open:
            raise ValueError(UNCLOSED_TRANSACTION)
        cluster = self._cluster
        replies: List[Reply] = []
        redirect: Optional[str] = None
        if not commands:
            return []
        asking = False  # whether to send it all to an ASK's target, after ASKING
        wait = RETRY_FIRST
        for _ in range(cluster.max_redirects):
            try:
                node = cluster._node(redirect or cluster._owner(slot))
            except ClusterDownError as exc:
                # No node serves the slot, by the map (learned again next
                # time): what a node would answer. Nothing sent; wait a little.
                replies, redirect, asking = [exc] * len(commands), None, False
                moved: List[ResponseError] = [exc]
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                continue
            pipe = node.pipeline()
            asked = set()  # where the replies of ASKING are, to drop them
            in_multi = False
            for args in commands:
                if asking and not in_multi:  # ASKING holds for one command, or one MULTI block
                    asked.add(len(pipe))
                    pipe.command("ASKING")
                pipe.command(*args)
                name = _command_name(args)
                in_multi = name == "MULTI" or (in_multi and name not in ("EXEC", "DISCARD"))
            try:
                replies = pipe.execute(raise_on_error=False)
            except PoolTimeoutError:
                raise  # our own connections were busy: the map is not in question
            except (ConnectionError, TimeoutError):
                cluster._stale = True
                raise
            if asked:
                replies = [reply for index, reply in enumerate(replies) if index not in asked]
            moved = [r for r in replies if isinstance(r, (MovedError, AskError, TryAgainError, ClusterDownError))]
            if not moved:
                break
            asks = [reply for reply in moved if isinstance(reply, AskError)]
            if len(asks) < len(moved):
                cluster._stale = True  # an ASK alone leaves the map as it is
            if not all(map(_not_run, replies, commands, _queued_flags(commands))):
                # Some of it ran: resending all could run that twice.
                if len(asks) == len(moved):
                    replies = _send_asked_on(cluster, node, commands, replies)
                break
            keyed = [reply for reply, args in zip(replies, commands) if command_keys(args)]
            if isinstance(moved[0], MovedError):
                redirect, asking = cluster._redirected_to(moved[0], node), False
            elif all(isinstance(r, AskError) for r in keyed) and len(asks) == len(moved) and (
                    len({ask.node for ask in asks}) == 1):
                # Every command with a key was sent on to the migration's
                # target: all of it goes there, after ASKING.
                redirect, asking = cluster._redirected_to(asks[0], node), True
            else:
                # A slot half migrated (TRYAGAIN, or ASK for some keys only) or
                # a failover: nothing ran; wait a little, retry by the map.
                redirect, asking = None, False
                time.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
        else:
            if raise_on_error:  # nothing ran, as from ClusterClient.execute
                last = moved[-1]
                if isinstance(last, ClusterDownError):
                    raise last
                raise ClusterError(f"gave up after {cluster.max_redirects} redirections; last: {last}")
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies
