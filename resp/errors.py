"""The errors ``resp`` raises: one base class, subclasses by cause.

``ConnectionError`` and ``TimeoutError`` also subclass the builtins of the same
name, so ``except ConnectionError`` written against the standard library still
catches them. No message ever contains a password.
"""

import builtins

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Type

__all__ = [
    "RespError",
    "ConnectionError",
    "CertificateError",
    "TimeoutError",
    "PoolTimeoutError",
    "ProtocolError",
    "ResponseError",
    "WrongTypeError",
    "AuthenticationError",
    "NoPermissionError",
    "ReadOnlyError",
    "BusyLoadingError",
    "BusyScriptError",
    "MaxClientsError",
    "MovedError",
    "AskError",
    "TryAgainError",
    "ClusterDownError",
    "ClusterError",
    "CrossSlotError",
    "SentinelError",
    "NoSentinelReachableError",
    "UnknownServiceError",
    "error_from_reply",
]


class RespError(Exception):
    """Base class of every error raised by ``resp``."""


class ConnectionError(RespError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke mid-command."""


class CertificateError(ConnectionError):
    """The server's TLS certificate was refused (an unknown issuer, another
    host name, expired): a configuration to fix, not an outage to wait out,
    so ``consume`` and the workers raise it rather than retry."""


class TimeoutError(RespError, builtins.TimeoutError):
    """The server did not answer before the command's deadline."""


class PoolTimeoutError(TimeoutError):
    """Every connection under ``max_connections`` stayed busy until the
    command's deadline: nothing was sent, and the server was never in question."""


class ProtocolError(RespError):
    """The peer sent bytes that break RESP2; the connection cannot be trusted."""


class ResponseError(RespError):
    """The server answered with an error reply (``-ERR …``).

    ``kind`` holds the error's first word (``ERR``, ``WRONGTYPE``, ``MOVED`` …).
    """

    @property
    def kind(self) -> str:
        """The first word of the server's message, e.g. ``"WRONGTYPE"``."""
        message = str(self)
        return message.split(" ", 1)[0] if message else ""


class WrongTypeError(ResponseError):
    """The command was run against a key holding another type of value."""


class AuthenticationError(ResponseError):
    """The server refused the password or user (``NOAUTH``, ``WRONGPASS``)."""


class NoPermissionError(ResponseError):
    """The ACL user may not run that command or touch that key (``NOPERM``)."""


class ReadOnlyError(ResponseError):
    """A write reached a replica (``READONLY``), e.g. after a failover."""


class BusyLoadingError(ResponseError):
    """The server is still loading its dataset (``LOADING``)."""


class BusyScriptError(ResponseError):
    """A script or function has run past the server's busy threshold
    (``BUSY``): it answers nothing else until it ends; the command was not run."""


class MaxClientsError(ResponseError, ConnectionError):
    """The server turned a new connection away, as it does once it has
    ``maxclients`` clients (``ERR max number of clients reached``), and closed
    it: nothing was run. Also a ``ConnectionError``, so a consumer waits and
    tries again."""


class _RedirectError(ResponseError):
    # ``MOVED slot host:port`` / ``ASK slot host:port``: the command was not run.

    def _words(self) -> "List[str]":
        words = str(self).split(" ")
        if len(words) != 3 or not words[1].isdigit() or ":" not in words[2]:
            raise ProtocolError(f"malformed redirection: {str(self)[:80]!r}")
        return words

    @property
    def slot(self) -> int:
        """The hash slot the key belongs to.

        :raises ProtocolError: the reply is not ``MOVED|ASK slot host:port``."""
        return int(self._words()[1])

    @property
    def node(self) -> str:
        """Where to send the command instead, as ``host:port``.

        :raises ProtocolError: the reply is not ``MOVED|ASK slot host:port``."""
        return self._words()[2]


class MovedError(_RedirectError):
    """A cluster node does not serve the key's slot (``MOVED``); the command
    was not run. ``ClusterClient`` follows it and refreshes its slot map."""


class AskError(_RedirectError):
    """The key's slot is being migrated and the key is on the target (``ASK``);
    the command was not run. ``ClusterClient`` retries it there once."""


class TryAgainError(ResponseError):
    """A multi-key command met a slot half migrated (``TRYAGAIN``); not run."""


class ClusterDownError(ResponseError):
    """The cluster cannot serve the slot right now (``CLUSTERDOWN``); not run."""


class ClusterError(RespError):
    """The cluster could not serve a command: no node answered for its slot
    map, or the command was redirected too many times."""


class CrossSlotError(ClusterError):
    """A command's keys hash to different cluster slots; refused before
    anything was sent (put ``{tags}`` in the keys to keep them together)."""


class SentinelError(RespError):
    """Sentinel could not name a primary for the service."""


class NoSentinelReachableError(SentinelError, ConnectionError):
    """None of the sentinels answered; a ``ConnectionError``, so a consumer
    waits and tries again."""


class UnknownServiceError(SentinelError):
    """The sentinels answered but monitor no service of that name."""


_ERROR_CLASSES: "Dict[str, Type[ResponseError]]" = {
    "WRONGTYPE": WrongTypeError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "NOPERM": NoPermissionError,
    "READONLY": ReadOnlyError,
    "LOADING": BusyLoadingError,
    "BUSY": BusyScriptError,
    "MOVED": MovedError,
    "ASK": AskError,
    "TRYAGAIN": TryAgainError,
    "CLUSTERDOWN": ClusterDownError,
}


def _demoted(exc: ResponseError) -> bool:
    # The UNBLOCKED a server sends its blocked clients when it becomes a
    # replica (a failover): the command was not run.
    return exc.kind == "UNBLOCKED" and "instance state changed" in str(exc)


#: How a server full up (``maxclients``) greets a new connection before closing
#: it; a cluster node says "… clients + cluster connections reached".
_MAX_CLIENTS = "ERR max number of clients"


def error_from_reply(message: str) -> ResponseError:
    """Return the ``ResponseError`` (or subclass) for one error reply's text."""
    kind = message.split(" ", 1)[0]
    if kind == "ERR" and message.startswith(_MAX_CLIENTS):
        return MaxClientsError(message)
    return _ERROR_CLASSES.get(kind, ResponseError)(message)


#: How Redis 7 goes on after "ERR unknown command 'AUTH'": it repeats the
#: command's arguments, the password among them (a server where AUTH was
#: renamed away, a proxy or a Redis-like server without it).
_ECHOED_ARGUMENTS = ", with args beginning with"


def _auth_refused(reply: ResponseError, *secrets: "Optional[str]") -> ResponseError:
    """The error for a refused ``AUTH``: ``reply``'s class and text, without
    the arguments a server may echo and without any of ``secrets``."""
    message = str(reply)
    cut = message.find(_ECHOED_ARGUMENTS)
    if cut >= 0:
        message = message[:cut] + " (its arguments are not repeated here)"
    if any(secret and secret in message for secret in secrets):
        # Replacing the password there would garble the server's own words
        # when it is short ("e" in "configured"), and show where it matched.
        message = f"{reply.kind} (the server's message is not shown: it contains the password)"
    return type(reply)(message)
