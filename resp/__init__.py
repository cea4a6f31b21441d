"""resp: a minimal RESP2 client for Redis on the Python standard library alone.

>>> import resp
>>> client = resp.Client.from_url("redis://localhost:6379/0")   # doctest: +SKIP
>>> client.rpush("jobs", "one", "two")                          # doctest: +SKIP
2
>>> client.execute("LRANGE", "jobs", 0, -1)                     # doctest: +SKIP
[b'one', b'two']

Layers, each in its own module: ``protocol`` (sans-IO parser and encoder),
``connection`` (one socket), ``pool`` (idle connections), ``client`` (commands),
``errors``.
"""

from .client import Client, Pipeline
from .errors import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    ProtocolError,
    ReadOnlyError,
    RespError,
    ResponseError,
    TimeoutError,
    WrongTypeError,
)
from .protocol import Reader, encode_command

__all__ = [
    "Client",
    "Pipeline",
    "Reader",
    "encode_command",
    "RespError",
    "ConnectionError",
    "TimeoutError",
    "ProtocolError",
    "ResponseError",
    "WrongTypeError",
    "AuthenticationError",
    "NoPermissionError",
    "ReadOnlyError",
    "BusyLoadingError",
]
