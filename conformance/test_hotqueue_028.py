"""The HotQueue 0.2.8 test suite's behaviours, in Python 3, against both implementations.

Each test of the original ``tests.py`` (test_arguments, test_consume,
test_cleared, test_get_order, test_length, test_worker, test_threaded,
test_custom_serializer) is ported once and run twice per server build: on the
original 0.2.8 with redis-py (in its own process, through ``RemoteQueue``) and
on this project. Where the two differ, a ``test_difference_*`` below pins both
behaviours; README.md lists them all. The original suite used the shared Redis
on localhost:6379 and one fixed key; here each test has a private server and
its own key.
"""

import json
import pickle
import sys
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest
from oracle import RemoteError, RemoteQueue
from redis_server import free_port

import resp
from hotqueue import HotQueue


class DummySerializer(object):
    """Dummy serializer that deliberately discards messages on dumps (from 0.2.8's tests)."""

    @staticmethod
    def dumps(s: Any) -> str:
        return "foo"

    @staticmethod
    def loads(s: Any) -> Any:
        return s


SERIALIZERS = {"pickle": pickle, "json": json, "none": None, "dummy": DummySerializer}


@pytest.fixture(params=["original", "ours"])
def impl(request: Any) -> str:
    """Which HotQueue: ``original`` (0.2.8 on redis-py) or ``ours``."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_queue(impl: str, server: Any, oracle: str, drivers: Any) -> Iterator[Callable[..., Any]]:
    """``make_queue(name, serializer="pickle", **options)``: a queue of the
    implementation under test; every queue made is cleared after the test."""
    made: List[Any] = []

    def make(name: str, serializer: str = "pickle", **options: Any) -> Any:
        options.setdefault("port", server.port)
        if impl == "original":
            queue: Any = RemoteQueue(drivers(oracle, name, serializer=serializer, **options), name)
        else:
            queue = HotQueue(name, serializer=SERIALIZERS[serializer], **options)
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.clear()


def use_serializer(queue: Any, name: str) -> None:
    """``queue.serializer = <name>`` on either implementation."""
    queue.serializer = name if isinstance(queue, RemoteQueue) else SERIALIZERS[name]


def attrs(queue: Any) -> Any:
    """(name, key, serializer name) of either implementation's queue."""
    if isinstance(queue, RemoteQueue):
        got = queue._driver.call("attrs")
        return got["name"], got["key"], got["serializer"]
    serializer = queue.serializer
    return queue.name, queue.key, None if serializer is None else serializer.__name__


# The ported suite ----------------------------------------------------------------


def test_arguments(make_queue: Any, key: str, server: Any) -> None:
    """HotQueue.__init__ takes its arguments and forms the Redis key."""
    queue = make_queue(name=key, serializer="dummy", host="127.0.0.1", port=server.port, db=0)
    assert attrs(queue) == (key, "hotqueue:" + key, "DummySerializer")
    queue = make_queue(key)
    assert attrs(queue) == (key, "hotqueue:" + key, "pickle")  # pickle is the default


def test_consume(make_queue: Any, key: str) -> None:
    queue = make_queue(key)
    nums = [1, 2, 3, 4, 5, 6, 7, 8]
    queue.put(*nums)
    assert list(queue.consume(timeout=1)) == nums  # blocking, with a timeout
    queue.put(*nums)
    assert list(queue.consume(block=False)) == nums


def test_cleared(make_queue: Any, key: str) -> None:
    """A queue whose Redis list does not exist."""
    queue = make_queue(key)
    assert len(queue) == 0
    assert queue.get() is None


def test_get_order(make_queue: Any, key: str) -> None:
    queue = make_queue(key)
    alphabet = ["abc", "def", "ghi", "jkl", "mno"]
    queue.put(alphabet[0], alphabet[1], alphabet[2])
    queue.put(alphabet[3])
    queue.put(alphabet[4])
    assert [queue.get() for _ in range(5)] == alphabet


def test_length(make_queue: Any, key: str) -> None:
    queue = make_queue(key)
    queue.put("a message")
    queue.put("another message")
    assert len(queue) == 2


def test_worker(make_queue: Any, key: str) -> None:
    queue = make_queue(key)
    colors = ["blue", "green", "red", "pink", "black"]
    for kwargs in ({"timeout": 1}, {"block": False}):
        queue.put(*colors)
        msgs: List[Any] = []

        @queue.worker(**kwargs)
        def appender(msg: Any, msgs: List[Any] = msgs) -> None:
            msgs.append(msg)

        appender()
        assert msgs == colors
    # Decorating a method:
    queue.put(*colors)
    msgs = []

    class MyClass(object):
        @queue.worker(block=False)
        def appender(self, msg: Any) -> None:
            msgs.append(msg)

    MyClass().appender()
    assert msgs == colors


def test_threaded(make_queue: Any, key: str) -> None:
    """put and consume from two threads (each with its own queue object for the
    original, whose driver serves one request at a time)."""
    producer, consumer = make_queue(key), make_queue(key)
    msgs: List[Any] = []

    def put() -> None:
        for num in range(3):
            producer.put("message %d" % num)
            time.sleep(0.1)

    def consume() -> None:
        msgs.extend(consumer.consume(timeout=3))  # 0.2.8 had 1 s: a loaded machine stalls the puts longer

    threads = [threading.Thread(target=put), threading.Thread(target=consume)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert msgs == ["message 0", "message 1", "message 2"]


def test_custom_serializer(make_queue: Any, key: str) -> None:
    """None as serializer, then DummySerializer. In Python 3 both implementations
    give back bytes under serializer=None (0.2.8's suite, on Python 2, expected
    the str it put); the dict case is test_difference_unstorable_message_under_none."""
    queue = make_queue(key)
    use_serializer(queue, "none")
    queue.put("my message")
    assert queue.get() == b"my message"
    use_serializer(queue, "dummy")
    queue.put("my message")
    assert queue.get() == b"foo"  # loads gets the stored bytes


# Where the two differ: each pins the original's behaviour and ours -----------------


@pytest.fixture
def both(server: Any, oracle: str, drivers: Any, key: str) -> Any:
    """(the original's queue, our queue) on the same key, cleared after the test."""
    old = RemoteQueue(drivers(oracle, key, server.port), key)
    new = HotQueue(key, port=server.port)
    yield old, new
    new.clear()
    new.client.close()


def test_difference_put_without_messages(both: Any) -> None:
    """``put()``: the original sends ``RPUSH key`` and the server's arity error
    comes back as redis-py's ResponseError; ours does nothing."""
    old, new = both
    with pytest.raises(RemoteError) as info:
        old.put()
    assert info.value.type == "ResponseError" and "wrong number of arguments" in info.value.message
    assert new.put() is None
    assert len(new) == 0


def test_difference_none_message_in_consume(both: Any) -> None:
    """A pickled ``None`` ends the original's ``consume`` (and what follows it
    stays queued); ours yields it and goes on."""
    old, new = both
    new.put("a", None, "b")
    assert list(old.consume(block=False)) == ["a"]
    assert len(new) == 1  # "b" is left behind
    new.clear()
    old.put("a", None, "b")
    assert list(new.consume(block=False)) == ["a", None, "b"]


def test_difference_unstorable_message_under_none(both: Any) -> None:
    """``serializer=None`` with a dict, a bool or None: the original's redis-py
    raises ``DataError``, ours ``TypeError``; neither stores anything. (0.2.8 on
    Python 2 stored ``str(msg)``; its suite expected ``"{'a': 1}"``.)"""
    old, new = both
    old.serializer = "none"
    new.serializer = None
    for message in ({"a": 1}, True, None):
        with pytest.raises(RemoteError) as info:
            old.put(message)
        assert info.value.type == "DataError"
        with pytest.raises(TypeError):
            new.put(message)
    assert len(new) == 0


def test_difference_names_must_be_str(server: Any, oracle: str, drivers: Any) -> None:
    """A ``bytes`` or ``int`` name: the original formats it into the key
    (``hotqueue:b'q'``, ``hotqueue:5``); ours raises ``TypeError``. An empty
    name: the original uses ``hotqueue:``; ours raises ``ValueError``."""
    for name, key in ((b"q", "hotqueue:b'q'"), (5, "hotqueue:5"), ("", "hotqueue:")):
        assert drivers(oracle, name, server.port).call("key") == key
        with pytest.raises(TypeError if name != "" else ValueError):
            HotQueue(name, port=server.port)  # type: ignore[arg-type]


def test_difference_negative_timeout(both: Any) -> None:
    """``get(block=True, timeout=-1)``: the original sends it and the server
    refuses it; ours raises ``ValueError`` before sending."""
    old, new = both
    with pytest.raises(RemoteError) as info:
        old.get(block=True, timeout=-1)
    assert info.value.type == "ResponseError" and "negative" in info.value.message
    with pytest.raises(ValueError):
        new.get(block=True, timeout=-1)


def test_same_put_is_atomic_when_a_message_cannot_be_serialized(both: Any) -> None:
    """Not a difference: in both, a message ``json.dumps`` refuses stops the whole
    ``put`` before anything is sent (0.2.8 builds the argument list first)."""
    old, new = both
    old.serializer = "json"
    new.serializer = json
    with pytest.raises(RemoteError) as info:
        old.put("fine", b"bytes")
    assert info.value.type == "TypeError"
    with pytest.raises(TypeError):
        new.put("fine", b"bytes")
    assert len(new) == 0


@pytest.mark.slow
def test_difference_unreachable_server(oracle: str, drivers: Any) -> None:
    """Nothing listens: the original raises redis-py's ``ConnectionError`` (not a
    subclass of the builtin) after redis-py 8's retries (seconds); ours raises
    ``resp.ConnectionError``, a subclass of the builtin, at once."""
    port = free_port()
    old = RemoteQueue(drivers(oracle, "q", port), "q")
    started = time.monotonic()
    with pytest.raises(RemoteError) as info:
        old.get()
    old_seconds = time.monotonic() - started
    assert info.value.mro[0] == "redis.exceptions.ConnectionError"
    assert "builtins.ConnectionError" not in info.value.mro
    new = HotQueue("q", port=port)
    started = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        new.get()
    assert isinstance(caught.value, resp.ConnectionError)
    assert time.monotonic() - started < 1.0 < old_seconds


def test_redis_py_8_defaults_seen_by_the_original(build: Any, make_server: Any, oracle: str,
                                                  drivers: Any, key: str) -> None:
    """What the original runs on today: redis-py 8 negotiates RESP3 (``HELLO 3``)
    on connecting, and has a default ``socket_timeout`` of 5 s, under which a
    long idle blocking ``get`` fails (about a minute with its retries; not
    re-run here). Ours sends no ``HELLO``: it speaks RESP2."""
    server = make_server(build.binary)
    old = RemoteQueue(drivers(oracle, key, server.port), key)
    new = HotQueue(key, port=server.port)
    assert len(new) == 0
    with resp.Client(port=server.port) as client:
        assert b"cmdstat_hello" not in client.execute("INFO", "commandstats")
        assert len(old) == 0  # the original connects
        assert b"cmdstat_hello" in client.execute("INFO", "commandstats")
    new.client.close()
    assert sys.modules["hotqueue"].__version__ != "0.2.8"


@pytest.mark.slow
def test_difference_blocking_get_longer_than_socket_timeout(make_server: Any, oracle: str, drivers: Any,
                                                          key: str) -> None:
    """``get(block=True, timeout=2)`` with ``socket_timeout=0.5``: the original's
    read times out, redis-py retries (sending BLPOP again) and finally raises
    ``TimeoutError`` — the bug class behind redis-py 8's default 5 s timeout on
    a long idle ``get``. Ours waits for the server's own 2 s and returns None."""
    from servers import BUILDS

    server = make_server(BUILDS[0].binary)
    old = RemoteQueue(drivers(oracle, key, server.port, socket_timeout=0.5), key)
    with pytest.raises(RemoteError) as info:
        old.get(block=True, timeout=2)
    assert info.value.mro[0] == "redis.exceptions.TimeoutError"
    new = HotQueue(key, port=server.port, socket_timeout=0.5)
    started = time.monotonic()
    assert new.get(block=True, timeout=2) is None
    assert 1.5 < time.monotonic() - started < 10
    new.client.close()
