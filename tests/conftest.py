"""Fixtures: private redis-server processes on free loopback ports.

``REDIS_URL`` points the shared-server tests at another server instead. A test
that needs a server fails loudly when none can start; nothing is skipped.
"""

import os
import sys
import uuid
from typing import Callable, Iterator, List
from urllib.parse import urlsplit

import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from redis_server import SHARED_PORT, RedisServer  # noqa: E402

import resp  # noqa: E402

settings.register_profile("default", deadline=None)
settings.register_profile("ci", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def _is_shared_server(url: str) -> bool:
    # A TCP URL for port 6379 (given or by default) on this machine.
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    local = host == "localhost" or host == "::1" or host.startswith("127.")
    return parts.scheme in ("redis", "rediss") and local and (parts.port or SHARED_PORT) == SHARED_PORT


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of the server most tests share: ``REDIS_URL``, or a private one."""
    if os.environ.get("REDIS_URL"):
        url = os.environ["REDIS_URL"]
        if _is_shared_server(url):
            pytest.fail(f"REDIS_URL={url} is this machine's shared server on port {SHARED_PORT}: the tests "
                        "write and delete keys on their server; unset it or point it elsewhere", pytrace=False)
        yield url
        return
    server = RedisServer()
    try:
        server.start()
    except Exception as exc:
        server.cleanup()
        pytest.fail(f"cannot start redis-server for the tests: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
def client(redis_url: str) -> Iterator[resp.Client]:
    """A ``resp.Client`` on the shared test server, closed after the test."""
    with resp.Client.from_url(redis_url) as c:
        yield c


@pytest.fixture
def key() -> str:
    """A key (and queue name) no other test uses."""
    return "test-" + uuid.uuid4().hex


@pytest.fixture
def make_server() -> Iterator[Callable[..., RedisServer]]:
    """Start private servers with given options; all are stopped after the test.

    ``make_server(args=[...], unix_socket=True, tls=True)`` returns a started
    ``RedisServer``; ``server.stop()`` / ``server.kill()`` / ``server.start()``
    stop and restart it on the same port.
    """
    servers: List[RedisServer] = []

    def make(*args: object, **kwargs: object) -> RedisServer:
        server = RedisServer(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        try:
            return server.start()
        except Exception as exc:
            pytest.fail(f"cannot start redis-server: {exc}", pytrace=False)

    yield make
    for server in servers:
        server.cleanup()
