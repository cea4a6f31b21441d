"""resp: a minimal RESP2 client for Redis on the Python standard library alone.

>>> import resp
>>> client = resp.Client.from_url("redis://localhost:6379/0")   # doctest: +SKIP
>>> client.rpush("jobs", "one", "two")                          # doctest: +SKIP
2
>>> client.execute("LRANGE", "jobs", 0, -1)                     # doctest: +SKIP
[b'one', b'two']

Layers, each in its own module: ``protocol`` (sans-IO parser and encoder),
``connection`` (one socket), ``pool`` (idle connections), ``client`` (commands),
``pipeline`` (``Pipeline``), ``commands`` (which commands block or are refused),
``errors``. Beyond one server: ``cluster`` (``ClusterClient``, a ``Client`` per
node), ``cluster_pipeline`` (``ClusterPipeline``), ``sentinel``
(``SentinelClient``, a ``Client`` that asks Sentinel where the primary is) and
``urls`` (``parse_url``, and ``from_url`` for every URL form).
"""

from .client import BLOCKING_MARGIN, Client
from .commands import MAX_TIMEOUT
from .errors import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    BusyScriptError,
    CertificateError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    CrossSlotError,
    MaxClientsError,
    MovedError,
    NoPermissionError,
    NoSentinelReachableError,
    PoolTimeoutError,
    ProtocolError,
    ReadOnlyError,
    RespError,
    ResponseError,
    SentinelError,
    TimeoutError,
    TryAgainError,
    UnknownServiceError,
    WrongTypeError,
)
from .protocol import Reader, encode_command

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    from typing import Any

    from .cluster import ClusterClient, key_slot
    from .cluster_pipeline import ClusterPipeline
    from .pipeline import Pipeline
    from .sentinel import SentinelClient
    from .urls import from_url

# Loaded on first use, so that ``import resp`` costs only what one server needs.
_LAZY = {
    "Pipeline": "pipeline",
    "ClusterClient": "cluster",
    "ClusterPipeline": "cluster_pipeline",
    "key_slot": "cluster",
    "SentinelClient": "sentinel",
    "from_url": "urls",
}


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the lazy names imported above: a
    # module __getattr__ would make every other name, a misspelt one
    # included, type-check as Any.

    def __getattr__(name: str) -> "Any":
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'resp' has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value

__all__ = [
    "MAX_TIMEOUT",
    "BLOCKING_MARGIN",
    "Client",
    "Pipeline",
    "Reader",
    "encode_command",
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
    "ClusterClient",
    "ClusterPipeline",
    "key_slot",
    "SentinelClient",
    "from_url",
    "MovedError",
    "AskError",
    "TryAgainError",
    "ClusterDownError",
    "ClusterError",
    "CrossSlotError",
    "SentinelError",
    "NoSentinelReachableError",
    "UnknownServiceError",
]
