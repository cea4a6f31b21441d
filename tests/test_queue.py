"""HotQueue's documented behaviour (SPEC section 1) against real redis-server processes.

The first group ports the checks of the HotQueue 0.2.8 test suite to the
Python 3 semantics (``bytes`` under ``serializer=None``); the rest cover what
this version promises beyond it.
"""

import array
import functools
import json
import math
import multiprocessing
import os
import pickle
import platform
import signal
import subprocess
import sys
import threading
import time
import types
from decimal import Decimal
from typing import Any, Dict, Iterator, List

import pytest

import resp
from hotqueue import HotQueue, __version__, key_for_name

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from redis_server import free_port  # noqa: E402


class DummySerializer:
    """0.2.8's dummy: discards every message on dumps (a ``str``)."""

    @staticmethod
    def dumps(s: Any) -> str:
        return "foo"

    @staticmethod
    def loads(s: Any) -> Any:
        return s


@pytest.fixture
def queue(redis_url: str, key: str) -> Iterator[HotQueue]:
    q = HotQueue(key, url=redis_url)
    yield q
    q.serializer = pickle
    q.clear()
    q.client.close()


def commandstats(client: resp.Client) -> Dict[str, int]:
    """Calls per command name since the last ``CONFIG RESETSTAT``."""
    info = client.execute("INFO", "commandstats").decode()
    counts = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_"):].partition(":")
            counts[name] = int(rest.split(",")[0].split("=")[1])
    return counts


# -- the 0.2.8 suite, in Python 3 ------------------------------------------------


def test_arguments() -> None:
    q = HotQueue("testqueue", serializer=DummySerializer, host="localhost", port=free_port(), db=0)
    assert q.name == "testqueue"
    assert q.key == "hotqueue:testqueue"
    assert q.serializer is DummySerializer
    q = HotQueue("testqueue")
    assert q.name == "testqueue"
    assert q.key == "hotqueue:testqueue"
    assert q.serializer is pickle
    with pytest.raises(AttributeError):
        q.key = "other"  # type: ignore[misc]
    assert isinstance(__version__, str) and __version__


def test_consume(queue: HotQueue) -> None:
    nums = [1, 2, 3, 4, 5, 6, 7, 8]
    queue.put(*nums)
    assert list(queue.consume(timeout=1)) == nums
    queue.put(*nums)
    assert list(queue.consume(block=False)) == nums


def test_cleared(queue: HotQueue) -> None:
    assert len(queue) == 0
    assert queue.get() is None
    queue.put("x")
    queue.clear()
    assert len(queue) == 0
    assert queue.get() is None


def test_get_order(queue: HotQueue) -> None:
    alphabet = ["abc", "def", "ghi", "jkl", "mno"]
    queue.put(*alphabet[:3])
    queue.put(alphabet[3])
    queue.put(alphabet[4])
    assert [queue.get() for _ in alphabet] == alphabet


def test_length(queue: HotQueue) -> None:
    queue.put("a message")
    queue.put("another message")
    assert len(queue) == 2


def test_worker(queue: HotQueue) -> None:
    colors = ["blue", "green", "red", "pink", "black"]
    queue.put(*colors)
    msgs: List[str] = []

    @queue.worker(timeout=1)
    def appender(msg: str) -> None:
        """Append."""
        msgs.append(msg)

    appender()  # type: ignore[call-arg]
    assert msgs == colors
    assert appender.__name__ == "appender" and appender.__doc__ == "Append."

    queue.put(*colors)
    msgs.clear()

    @queue.worker(block=False)
    def appender2(msg: str) -> None:
        msgs.append(msg)

    appender2()  # type: ignore[call-arg]
    assert msgs == colors

    queue.put(*colors)
    msgs.clear()

    class MyClass:
        @queue.worker(block=False)
        def appender(self, msg: str) -> None:
            msgs.append((self, msg))  # type: ignore[arg-type]

    instance = MyClass()
    instance.appender()  # type: ignore[call-arg]
    assert msgs == [(instance, c) for c in colors]  # type: ignore[comparison-overlap]


class Done(Exception):
    pass


def test_worker_bare(queue: HotQueue) -> None:
    seen: List[Any] = []
    queue.put(1, 2, None, "stop")

    @queue.worker
    def record(msg: Any) -> None:
        seen.append(msg)
        if msg == "stop":
            raise Done  # the way out of a bare worker, which waits forever

    with pytest.raises(Done):
        record()  # type: ignore[call-arg]
    assert seen == [1, 2, None, "stop"]


def test_threaded(queue: HotQueue) -> None:
    msgs: List[str] = []

    def put() -> None:
        for num in range(3):
            queue.put(f"message {num}")
            time.sleep(0.1)

    def consume() -> None:
        msgs.extend(queue.consume(timeout=1))

    threads = [threading.Thread(target=put), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert msgs == ["message 0", "message 1", "message 2"]


def test_custom_serializer(queue: HotQueue) -> None:
    queue.serializer = None
    queue.put("my message")
    assert queue.get() == b"my message"
    with pytest.raises(TypeError):
        queue.put({"a": 1})  # 0.2.8 stored str(msg); Python 3 refuses to guess
    assert len(queue) == 0
    queue.serializer = DummySerializer
    queue.put("my message")
    assert queue.get() == b"foo"  # dumps gave the str 'foo'; loads sees the stored bytes


# -- beyond 0.2.8 -------------------------------------------------------------------


def test_put_nothing_sends_no_command(make_server: Any) -> None:
    server = make_server()
    with resp.Client(port=server.port, host=server.host) as admin:
        q = HotQueue("q", client=admin)
        admin.execute("CONFIG", "RESETSTAT")
        assert q.put() is None
        assert "rpush" not in commandstats(admin)
        assert q.put(1) is None
        assert commandstats(admin)["rpush"] == 1  # the counter does see a put


def test_put_is_all_or_nothing(queue: HotQueue) -> None:
    queue.put("before")
    queue.serializer = None
    with pytest.raises(TypeError):
        queue.put(1, object(), 2)
    assert len(queue) == 1
    queue.serializer = pickle
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        queue.put(1, lambda: None, 2)
    assert len(queue) == 1


@pytest.mark.parametrize("bad", [True, False, None, [1], {"a": 1}, object()])
def test_raw_rejects(queue: HotQueue, bad: Any) -> None:
    queue.serializer = None
    with pytest.raises(TypeError):
        queue.put(bad)
    assert len(queue) == 0


def test_raw_accepts(queue: HotQueue) -> None:
    queue.serializer = None
    queue.put(b"b", bytearray(b"ba"), memoryview(b"mv"), "st\u00e9", 7, -2, 1.5)
    assert list(queue.consume(block=False)) == [b"b", b"ba", b"mv", "st\u00e9".encode(), b"7", b"-2", b"1.5"]


def test_raw_an_int_too_long_for_text_is_refused_before_anything_is_sent(queue: HotQueue) -> None:
    """CPython (3.11, and the security releases of 3.8 to 3.10) turns no int
    of over 4,300 digits into text (``sys.set_int_max_str_digits``): its
    ValueError, as from redis-py, before the put's other messages are sent.
    PyPy's ``%d`` has no such limit: there the int is stored as its digits."""
    queue.serializer = None
    huge = 10 ** 5000
    if platform.python_implementation() == "CPython" and hasattr(sys, "get_int_max_str_digits"):
        with pytest.raises(ValueError, match="int_max_str_digits"):
            queue.put(b"before", huge)
        assert len(queue) == 0
    else:
        queue.put(b"before", huge)
        assert queue.get() == b"before" and queue.get() == b"1" + b"0" * 5000


def test_none_message_is_yielded(queue: HotQueue) -> None:
    queue.put(1, None, 2, None)
    assert list(queue.consume(block=False)) == [1, None, 2, None]
    queue.put(None)
    assert list(queue.consume(timeout=0.2)) == [None]


def test_same_pickle_bytes_as_0_2_8(queue: HotQueue, client: resp.Client) -> None:
    msgs = [4, "my message", Decimal("1.4"), (6, "x", 7), {"a": [1.5, None]}]
    queue.put(*msgs)
    assert client.execute("LRANGE", "hotqueue:" + queue.name, 0, -1) == [pickle.dumps(m) for m in msgs]
    # and what an old producer stored is read back
    client.rpush(queue.key, pickle.dumps(("old", 1)))
    assert queue.get() == 4
    assert list(queue.consume(block=False))[-1] == ("old", 1)


def test_json_serializer(redis_url: str, key: str) -> None:
    q = HotQueue(key, serializer=json, url=redis_url)
    try:
        q.put({"n": 1, "s": "\u00e9"}, [1, 2], "text", None, 2.5)
        assert list(q.consume(block=False)) == [{"n": 1, "s": "\u00e9"}, [1, 2], "text", None, 2.5]
        with pytest.raises(TypeError):
            q.put(1, {1, 2})  # a set is not JSON
        assert len(q) == 0
    finally:
        q.clear()


def test_unreadable_message_raises_the_serializers_error_and_is_gone(redis_url: str, key: str) -> None:
    q = HotQueue(key, serializer=json, url=redis_url)
    try:
        q.client.rpush(q.key, b"not json")
        with pytest.raises(json.JSONDecodeError):
            q.get()
        assert len(q) == 0
        q.client.rpush(q.key, b"not json")
        with pytest.raises(json.JSONDecodeError):
            q.get(block=True, timeout=1)
        assert len(q) == 0
    finally:
        q.clear()
        q.client.close()


class DumpsOnly:
    @staticmethod
    def dumps(msg: Any) -> bytes:
        return b"dumped"


class LoadsNone:
    """A serializer whose ``loads`` is there, as ``None``."""

    dumps = staticmethod(pickle.dumps)
    loads = None


class LoadsNotCallable:
    dumps = staticmethod(pickle.dumps)
    loads = "pickle.loads"


@pytest.mark.parametrize("serializer", [object(), DumpsOnly, json.dumps, "pickle"])
def test_a_serializer_without_dumps_and_loads_is_refused_at_once(serializer: Any) -> None:
    with pytest.raises(TypeError, match="dumps.*loads"):
        HotQueue("q", serializer=serializer)


def test_a_serializer_without_loads_given_later_costs_no_message(queue: HotQueue) -> None:
    """``serializer`` set afterwards to one that cannot read, or losing its
    ``loads`` once set: get() and consume() fail before they pop, not after,
    which lost the message (a ``loads`` not callable) or handed over its raw
    bytes (``loads = None``)."""
    queue.put("kept")
    emptied = types.SimpleNamespace(dumps=pickle.dumps, loads=pickle.loads)
    for serializer, error in ((DumpsOnly, AttributeError), (LoadsNone, TypeError),
                              (LoadsNotCallable, TypeError), (emptied, TypeError)):
        queue.serializer = serializer
        emptied.loads = None
        for take in (queue.get, lambda: queue.get(block=True, timeout=1), lambda: next(queue.consume(timeout=1)),
                     lambda: next(queue.consume(block=False))):
            with pytest.raises(error, match="loads"):
                take()
            assert len(queue) == 1
    queue.serializer = pickle
    assert queue.get() == "kept"


def byte_array(data: bytes) -> "array.array[int]":
    return array.array("B", data)


@pytest.mark.parametrize("kind", [bytearray, memoryview, byte_array])  # any bytes-like object
def test_dumps_may_return_bytes_like(queue: HotQueue, kind: Any) -> None:
    class BytesLike:
        @staticmethod
        def dumps(msg: str) -> Any:
            return kind(b"\xff" + msg.encode())  # not UTF-8: stored as is

        @staticmethod
        def loads(data: bytes) -> Any:
            return ("loaded", data)

    queue.serializer = BytesLike
    queue.put("one")  # the one-message path
    queue.put("two", "three")  # the many-messages path
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [b"\xffone", b"\xfftwo", b"\xffthree"]
    assert queue.get() == ("loaded", b"\xffone")
    assert queue.get(block=True, timeout=1) == ("loaded", b"\xfftwo")
    assert list(queue.consume(block=False)) == [("loaded", b"\xffthree")]


def test_ten_megabyte_message(queue: HotQueue) -> None:
    big = os.urandom(10 * 1024 * 1024)
    queue.put(big)
    assert queue.get() == big
    queue.serializer = None
    queue.put(big)
    assert queue.get(block=True, timeout=5) == big


def test_name_that_cannot_be_sent_is_refused_at_once() -> None:
    # A lone surrogate (os.fsdecode of bytes that are not UTF-8): refused by
    # the constructor, not by the first put with a UnicodeEncodeError.
    with pytest.raises(ValueError, match="UTF-8"):
        HotQueue("caf\udce9", port=free_port())
    queue = HotQueue("caf\u00e9", port=free_port())
    with pytest.raises(ValueError, match="UTF-8"):
        queue.name = "x\ud800"
    assert queue.name == "caf\u00e9"


def test_key_for_name() -> None:
    assert key_for_name("myqueue") == "hotqueue:myqueue"
    assert key_for_name("\u00e9") == "hotqueue:\u00e9"
    for bad in (b"myqueue", 1, None):
        with pytest.raises(TypeError):
            key_for_name(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            HotQueue(bad)  # type: ignore[arg-type]


def test_unknown_connection_option() -> None:
    with pytest.raises(TypeError, match="hots"):
        HotQueue("q", hots="localhost")
    with pytest.raises(TypeError, match="socket_timeot"):
        HotQueue("q", socket_timeout=1, socket_timeot=1)


def test_client_is_shared(redis_url: str, key: str) -> None:
    with resp.Client.from_url(redis_url) as shared:
        a = HotQueue(key + "a", client=shared)
        b = HotQueue(key + "b", client=shared)
        assert a.client is b.client is shared
        a.put(1)
        b.put(2)
        assert (a.get(), b.get()) == (1, 2)
        with pytest.raises(TypeError):
            HotQueue(key, client=shared, port=1)


def test_url(redis_url: str, key: str) -> None:
    q = HotQueue(key, url=redis_url)
    q.put("via url")
    assert q.get() == "via url"
    with pytest.raises(ValueError):
        HotQueue(key, url="http://localhost")


def test_reassigning_name_moves_the_queue_to_its_key(redis_url: str, key: str) -> None:
    # name is a plain attribute in the spec and key follows it; the key is
    # kept with the name, so both must change together.
    q = HotQueue(key + "-a", url=redis_url)
    q.put("in a")
    q.name = key + "-b"
    assert q.key == "hotqueue:" + key + "-b"
    assert q.get() is None
    q.put("in b")
    direct = q.client
    assert direct.lpop("hotqueue:" + key + "-a") == pickle.dumps("in a")
    assert direct.lpop("hotqueue:" + key + "-b") == pickle.dumps("in b")
    with pytest.raises(ValueError):
        q.name = ""
    with pytest.raises(TypeError):
        q.name = b"bytes"  # type: ignore[assignment]
    assert q.name == key + "-b" and q.key == "hotqueue:" + key + "-b"
    q.client.delete("hotqueue:" + key + "-a", "hotqueue:" + key + "-b")


def test_no_io_in_constructor() -> None:
    port = free_port()  # nothing listens here
    q = HotQueue("q", host="127.0.0.1", port=port, socket_connect_timeout=2)
    with pytest.raises(resp.ConnectionError):
        len(q)
    with pytest.raises(ConnectionError):  # the builtin too
        q.put(1)
    with pytest.raises(ConnectionError):
        q.get()


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, math.inf])
def test_get_timeout_validation(queue: HotQueue, bad: float) -> None:
    queue.put(1)
    with pytest.raises(ValueError):
        queue.get(block=True, timeout=bad)
    with pytest.raises(ValueError):
        list(queue.consume(timeout=bad))
    assert len(queue) == 1


@pytest.mark.parametrize("too_long", [10**12, 1e12])
def test_get_refuses_a_timeout_over_the_maximum_int_or_float(queue: HotQueue, too_long: float) -> None:
    queue.put(1)
    for block in (False, True):
        with pytest.raises(ValueError):
            queue.get(block=block, timeout=too_long)
    assert len(queue) == 1  # nothing was taken


def test_float_timeout(queue: HotQueue) -> None:
    start = time.monotonic()
    assert queue.get(block=True, timeout=0.3) is None
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 3


def test_keyboard_interrupt_ends_consume_quietly(queue: HotQueue, capsys: Any) -> None:
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    try:
        assert list(queue.consume()) == []
    finally:
        timer.cancel()
    assert time.monotonic() - start < 10
    assert capsys.readouterr() == ("", "")
    queue.put("after")  # the interrupted connection was not reused for a wrong reply
    assert queue.get() == "after"


def test_eight_threads_share_one_queue(queue: HotQueue) -> None:
    per_producer = 250
    received: List[int] = []
    lock = threading.Lock()

    def produce(base: int) -> None:
        for i in range(0, per_producer, 10):
            queue.put(*range(base + i, base + i + 10))

    def consume() -> None:
        mine = list(queue.consume(timeout=1))
        with lock:
            received.extend(mine)

    threads = [threading.Thread(target=produce, args=(n * 1000,)) for n in range(4)]
    threads += [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    expected = [n * 1000 + i for n in range(4) for i in range(per_producer)]
    assert sorted(received) == expected


def test_blocked_get_does_not_delay_put(queue: HotQueue, key: str) -> None:
    got: List[Any] = []
    waiter = threading.Thread(target=lambda: got.append(queue.get(block=True, timeout=20)))
    waiter.start()
    time.sleep(0.2)
    other = HotQueue(key + "-other", client=queue.client)
    start = time.monotonic()
    other.put("not delayed")
    assert len(other) == 1
    assert time.monotonic() - start < 2
    other.clear()
    queue.put("wake up")
    waiter.join(10)
    assert got == ["wake up"]


def test_after_fork_both_sides_work(queue: HotQueue) -> None:
    queue.put("parent-1")
    assert queue.get() == "parent-1"  # the parent now holds a pooled connection
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status, never raise
        code = 1
        try:
            queue.put("child")
            code = 0 if queue.get() == "child" and len(queue) == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    queue.put("parent-2")
    assert queue.get() == "parent-2"
    assert len(queue) == 0


# A process blocked in get() whose other thread forks a child that never uses
# the queue; the child reports its pid and lives on (the test kills it).
FORK_WHILE_BLOCKED = r"""
import os, sys, threading, time
from hotqueue import HotQueue

def fork_when_told():
    sys.stdin.readline()  # the main thread is blocked in BLPOP by now
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    print(pid, flush=True)

threading.Thread(target=fork_when_told, daemon=True).start()
try:
    HotQueue(sys.argv[1], url=sys.argv[2]).get(block=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_forked_child_does_not_keep_a_wait_its_parent_gave_up(make_server: Any, key: str) -> None:
    """A child forked while its parent waits in ``get`` closes its copies of
    the parent's connections: once the parent gives up the wait (Ctrl-C), no
    client is left blocked on the server, and the next message goes to the
    next consumer, not to a socket that nobody reads."""
    server = make_server()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    observer = resp.Client.from_url(server.url)
    queue = HotQueue(key, url=server.url)

    def blocked_clients() -> int:
        info = observer.execute("INFO", "clients").decode()
        return int(info.split("blocked_clients:")[1].split()[0])

    def wait_for(want: int) -> int:
        deadline = time.monotonic() + 10
        while blocked_clients() != want and time.monotonic() < deadline:
            time.sleep(0.02)
        return blocked_clients()

    parent = subprocess.Popen([sys.executable, "-W", "ignore::DeprecationWarning", "-c", FORK_WHILE_BLOCKED, key,
                               server.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": root})
    child = 0
    try:
        assert parent.stdin is not None and parent.stdout is not None
        assert wait_for(1) == 1  # the parent waits in BLPOP
        parent.stdin.write("fork\n")
        parent.stdin.flush()
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGINT)  # Ctrl-C: the parent gives up its wait
        assert parent.stdout.readline() == "interrupted\n"
        assert parent.wait(10) == 0
        assert wait_for(0) == 0, "the child kept the parent's BLPOP alive on the server"
        queue.put("important")
        assert queue.get(block=True, timeout=2) == "important"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        queue.clear()
        queue.client.close()
        observer.close()


def _worker_process(url: str, name: str, out: str, ready: str) -> None:
    # One of two consumer processes: records what it received in the list `out`.
    q = HotQueue(name, url=url)
    HotQueue(ready, url=url).put(os.getpid())
    got = list(q.consume(timeout=1.5))
    HotQueue(out, url=url).put(got)


def test_two_worker_processes_each_message_once(redis_url: str, key: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    q = HotQueue(key, url=redis_url)
    ready = HotQueue(key + "-ready", url=redis_url)
    out = HotQueue(key + "-out", url=redis_url)
    procs = [ctx.Process(target=_worker_process, args=(redis_url, key, out.name, ready.name)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            assert ready.get(block=True, timeout=30) is not None
        messages = list(range(2000))
        for i in range(0, 2000, 100):
            q.put(*messages[i:i + 100])
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        results = list(out.consume(block=False))
        assert len(results) == 2
        assert all(results), "both workers received messages"
        assert sorted(results[0] + results[1]) == messages
        assert all(r == sorted(r) for r in results)  # each saw its share in FIFO order
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for x in (q, ready, out):
            x.clear()


def test_partial(queue: HotQueue) -> None:
    seen: List[Any] = []
    queue.put("a")
    worker = queue.worker(block=False)(functools.partial(lambda tag, msg: seen.append((tag, msg)), "t"))
    worker()
    assert seen == [("t", "a")]
