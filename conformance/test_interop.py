"""Interop with the original HotQueue 0.2.8 (on redis-py) sharing one queue.

The original runs in its own process and virtualenv (``oracle`` fixture,
``hotqueue_driver.py``); this project's HotQueue runs here or, for the mixed
pool of consumers, in driver processes of its own. Every test runs once per
server build.
"""

import json
import pickle
import sys
from collections import Counter
from typing import Any, Dict, List

import pytest

import hotqueue
import resp
from hotqueue import HotQueue

MESSAGES: Dict[str, List[Any]] = {
    "pickle": [
        "my message", "ünïcødé ✓", b"\x00\xffraw bytes", 0, -1, 2**70, 3.25, True,
        [1, "two", b"3"], {"a": 1, "nested": {"b": [1, 2]}}, (1, "tuple"), "",
    ],
    "json": ["my message", "ünïcødé ✓", 0, -7, 2**60, 3.25, True, [1, "two"], {"a": 1, "b": [None, 2.5]}, ""],
    # serializer=None: what goes in, and the bytes both implementations give back.
    "none": ["my message", "ünïcødé ✓", b"\x00\xff\r\nraw", 42, -3, 3.25, 1e100, ""],
}
SERIALIZERS = {"pickle": pickle, "json": json, "none": None}


def expected(serializer: str, messages: List[Any]) -> List[Any]:
    """What a consumer gets back for ``messages`` put with ``serializer``."""
    if serializer == "none":
        return [m if isinstance(m, bytes) else (m.encode() if isinstance(m, str) else repr(m).encode())
                for m in messages]
    if serializer == "json":
        return [json.loads(json.dumps(m)) for m in messages]
    return list(messages)


@pytest.fixture
def new_queue(server: Any, key: str) -> Any:
    """This project's HotQueue on the server, cleared after the test."""
    queue = HotQueue(key, port=server.port, host=server.host)
    yield queue
    queue.clear()
    queue.client.close()


def test_oracle_is_the_original(oracle: str, server: Any, key: str, drivers: Any) -> None:
    """The driver under the oracle's interpreter really runs 0.2.8, from its own
    virtualenv; under ours it runs this project."""
    old = drivers(oracle, key, server.port)
    new = drivers(sys.executable, key, server.port)
    assert old.version == "0.2.8" and old.file.startswith(oracle.rsplit("/bin/", 1)[0])
    assert new.version == hotqueue.__version__ != "0.2.8"
    assert "hotqueue" not in sys.modules or sys.modules["hotqueue"].__version__ != "0.2.8"


@pytest.mark.parametrize("serializer", sorted(MESSAGES))
def test_old_producer_new_consumer(serializer: str, oracle: str, server: Any, new_queue: HotQueue,
                                   drivers: Any) -> None:
    old = drivers(oracle, new_queue.name, server.port, serializer=serializer)
    messages = MESSAGES[serializer]
    old.call("put", msgs=_tagged(messages[:3]))  # one RPUSH of several
    for message in messages[3:]:
        old.call("put", msgs=_tagged([message]))
    new_queue.serializer = SERIALIZERS[serializer]
    want = expected(serializer, messages)
    assert [new_queue.get() for _ in range(3)] == want[:3]
    assert list(new_queue.consume(block=False)) == want[3:]
    assert len(new_queue) == 0


@pytest.mark.parametrize("serializer", sorted(MESSAGES))
def test_new_producer_old_consumer(serializer: str, oracle: str, server: Any, new_queue: HotQueue,
                                   drivers: Any) -> None:
    old = drivers(oracle, new_queue.name, server.port, serializer=serializer)
    new_queue.serializer = SERIALIZERS[serializer]
    messages = MESSAGES[serializer]
    new_queue.put(*messages[:3])
    for message in messages[3:]:
        new_queue.put(message)
    want = expected(serializer, messages)
    assert [old.call("get") for _ in range(3)] == want[:3]
    assert old.call("consume", kwargs={"block": False}) == want[3:]
    assert old.call("len") == 0


@pytest.mark.parametrize("serializer", sorted(MESSAGES))
def test_stored_bytes_are_identical(serializer: str, oracle: str, server: Any, key: str, drivers: Any) -> None:
    """The same messages put by each side leave the same bytes in Redis (LRANGE),
    under the same key name."""
    messages = MESSAGES[serializer] + ([None] if serializer != "none" else [])
    old_name, new_name = key + "-old", key + "-new"
    old = drivers(oracle, old_name, server.port, serializer=serializer)
    old.call("put", msgs=_tagged(messages))
    new = HotQueue(new_name, serializer=SERIALIZERS[serializer], port=server.port)
    new.put(*messages)
    with resp.Client(port=server.port) as client:
        assert old.call("key") == "hotqueue:" + old_name and new.key == "hotqueue:" + new_name
        stored_old = client.execute("LRANGE", "hotqueue:" + old_name, 0, -1)
        stored_new = client.execute("LRANGE", "hotqueue:" + new_name, 0, -1)
        client.delete("hotqueue:" + old_name, "hotqueue:" + new_name)
    new.client.close()
    assert len(stored_new) == len(messages)
    assert stored_old == stored_new


@pytest.mark.slow
def test_mixed_pool_receives_each_message_once(oracle: str, server: Any, key: str, drivers: Any) -> None:
    """Two old and two new consumer processes wait on one queue while old and
    new producers put 5,000 messages: each message is received exactly once,
    and both kinds of consumer take part."""
    total, batch = 5000, 50
    consumers = {
        "old": [drivers(oracle, key, server.port) for _ in range(2)],
        "new": [drivers(sys.executable, key, server.port) for _ in range(2)],
    }
    for group in consumers.values():
        for consumer in group:
            consumer.send("consume", kwargs={"timeout": 3})  # idle 3 s: done (under redis-py's 5 s socket_timeout)
    old_producer = drivers(oracle, key, server.port)
    new_producer = HotQueue(key, port=server.port)
    for start in range(0, total, batch):
        chunk = [{"id": i, "body": "message %d" % i} for i in range(start, start + batch)]
        if (start // batch) % 2:
            old_producer.call("put", msgs=_tagged(chunk))
        else:
            new_producer.put(*chunk)
    received = {kind: [m["id"] for c in group for m in c.answer()] for kind, group in consumers.items()}
    new_producer.clear()
    new_producer.client.close()
    every = received["old"] + received["new"]
    duplicates = [i for i, n in Counter(every).items() if n > 1]
    assert duplicates == []
    assert sorted(every) == list(range(total))
    assert received["old"] and received["new"], {k: len(v) for k, v in received.items()}


def _tagged(values: List[Any]) -> Any:
    from oracle import encode

    return encode(values)
