"""What the client knows of commands, shared by ``Client``, ``Pipeline`` and
``ClusterClient``: which block and where their timeout is, which would change a
pooled connection for later commands (refused), how a pipeline's ``MULTI`` and
``WATCH`` stay open, and how a blocking command's timeout and ``BLPOP``'s keys
are checked.
"""

import time

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    from typing import Any, List, Optional, Sequence, Tuple, Union

    from .protocol import CommandArg

    KeyT = Union[str, bytes]

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
    "QUIT": "the server would close a connection that the pool hands out again: use close()",
    "SYNC": "it would turn a pooled connection into a replication stream",
    "PSYNC": "it would turn a pooled connection into a replication stream",
    # Sent by replicas to their primary: a client sending it gets no reply.
    "REPLCONF": "a replica's command, which the server answers with nothing",
    "SCRIPT": "SCRIPT DEBUG would turn a pooled connection's next EVAL into a debugging session",
}
#: Why a pipeline that leaves a MULTI or WATCH open is refused.
UNCLOSED_TRANSACTION = ("a MULTI or WATCH in a pipeline must be closed by EXEC or DISCARD in it "
                        "(a WATCH with no MULTI after it: by UNWATCH): connections are pooled; nothing was sent")


def _command_name(args: "Sequence[CommandArg]", index: int = 0) -> str:
    # The upper-case name of a command (index 1: its subcommand); "" if none.
    # A name given as any bytes-like object is read as the bytes the encoder
    # sends for it: b"MULTI" and array("B", b"MULTI") are refused alike.
    # Only ASCII letters are made upper-case, as the server compares names:
    # "diſcard".upper() is "DISCARD", a command it does not know.
    name = args[index] if len(args) > index else ""
    if isinstance(name, str):
        return name.upper() if name.isascii() else name.encode("utf-8", "replace").upper().decode("latin-1")
    try:
        return memoryview(name).tobytes().upper().decode("latin-1")  # type: ignore[arg-type]
    except TypeError:
        return ""  # a number: no command's name


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
    if name == "SCRIPT" and (_command_name(args, 1) != "DEBUG" or _command_name(args, 2) == "NO"):
        return
    raise ValueError(f"{name} is refused, nothing was sent: {_WHY_REFUSED[name]}")


def _allowed_command_name(args: "Tuple[CommandArg, ...]") -> str:
    # The command's upper-case name, once execute() may send it.
    name = _command_name(args)
    if name in _WHY_REFUSED:
        _refuse_state_change(name, args)
    return name


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
    name = name.upper() if type(name) is str and name.isascii() else _command_name(args)
    transitions = _TRANSITIONS.get(name)
    if transitions is not None:
        return transitions[open_before]
    if name in _WHY_REFUSED:
        _refuse_state_change(name, args)
    return open_before


def _time_left(timeout: "Any", started: float, at_least: bool = False) -> "Any":
    # A blocking command's timeout, waited since ``started`` (time.monotonic),
    # cut to what is left of it; None once it has passed, or with
    # ``at_least`` the shortest wait instead (MIN_FRACTION) unless it is
    # whole seconds, where that wait would be a whole second more. Whole
    # seconds stay whole (servers before 6.0 take nothing else); 0 (forever)
    # and what is not a number stay as they are.
    try:
        total = float(timeout)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float's range
        return timeout
    if not total > 0:
        return timeout
    left = total - (time.monotonic() - started)
    if left <= 0 and (not at_least or isinstance(timeout, int)):
        return None
    return max(1, round(left)) if isinstance(timeout, int) else max(round(left, 3), MIN_FRACTION)


def _with_time_left(args: "Tuple[CommandArg, ...]", index: int, started: float,
                    at_least: bool = False) -> "Optional[Tuple[CommandArg, ...]]":
    # The command with its timeout (at args[index]) cut by _time_left; None
    # once it has passed (unless ``at_least``, for a fraction of a second).
    left = _time_left(args[index], started, at_least)
    return None if left is None else args[:index] + (left,) + args[index + 1 :]
