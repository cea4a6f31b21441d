"""``Pipeline``: commands queued, then sent to one server in one write."""

from .commands import UNCLOSED_TRANSACTION, _still_open
from .errors import ResponseError
from .protocol import encode_parts

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    from typing import Any, List

    from .client import Client
    from .protocol import CommandArg, Reply

__all__ = ["Pipeline"]


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
    of its own, whose reply is dropped. Unless the commands that close what
    they open are answered as closing it, the connection is closed rather
    than pooled.
    """

    def __init__(self, client: "Client") -> None:
        self._client = client
        self._parts: List[Any] = []
        self._count = 0
        self._open = 0  # a MULTI or WATCH queued and not closed yet (see _still_open)
        self._watched = False  # a WATCH queued: execute() ends with an UNWATCH (see there)
        self._closers: List[int] = []  # where the EXECs and DISCARDs closing a MULTI are

    def __len__(self) -> int:
        return self._count

    def command(self, *args: "CommandArg") -> "Pipeline":
        """Queue one command (encoded now, so bad arguments raise here)."""
        parts = encode_parts(args)
        was_open, self._open = self._open, _still_open(args, self._open)
        if self._open == 2:
            self._watched = True
        elif was_open == 1 and not self._open:
            self._closers.append(self._count)
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
        parts, count, still_open, watched, closers = (
            self._parts, self._count, self._open, self._watched, self._closers)
        self._parts, self._count, self._open, self._watched, self._closers = [], 0, 0, False, []
        if still_open:
            raise ValueError(UNCLOSED_TRANSACTION)
        if not count:
            return []
        # The commands close what they open, as the server answers when it
        # runs them all; but one it refuses would leave its part open on the
        # pooled connection. A WATCH whose MULTI was refused (an ACL) would
        # abort a later transaction there: an UNWATCH after them, which must
        # answer OK. A MULTI whose EXEC or DISCARD was refused other than by
        # EXECABORT (an ACL, a wrong arity, and before Redis 6.2 an EXEC
        # refused for memory) would queue every later command. Either way,
        # _call closes the connection.
        if watched:
            parts.append(b"*1\r\n$7\r\nUNWATCH\r\n")

        def closed_all(replies: "List[Reply]") -> bool:
            if watched and replies[-1] != "OK":
                return False
            return not any(isinstance(replies[index], ResponseError) and replies[index].kind != "EXECABORT"
                           for index in closers)

        client = self._client
        replies: List[Reply] = client._call(parts, client.socket_timeout, count + 1 if watched else count,
                                            keep=closed_all if watched or closers else None)
        if watched:
            replies.pop()
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies
