"""Reliable delivery (hotqueue/reliable.py, _scripts.py, _inspection.py) against real redis-server processes.

Worker processes are real ``python`` processes running ``WORKER`` or
``HOLDER`` below; they are killed with SIGKILL by their pid, mid-message.
Connection drops and lost machines are real sockets through ``FaultProxy``.
"""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import types
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Set
from urllib.parse import urlsplit

import pytest
from faultproxy import FaultProxy

import resp
from hotqueue import HotQueue
from hotqueue._scripts import ACK, FAIL, RECOVER, RELEASE, RETIRE, TAKE, Script
from hotqueue.reliable import Consumer, ReliableUnsupportedError, keys_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A reliable worker process. argv: url, queue name, side-list prefix, the
# message to hang on ("-" for none), heartbeat TTL, idle timeout. The handler
# records each message it starts and finishes (pickled) on side lists.
WORKER = r"""
import pickle, sys, time
from hotqueue import HotQueue
url, name, side, hang, ttl, idle = sys.argv[1:7]
queue = HotQueue(name, url=url)
client = queue.client

@queue.worker(reliable=True, heartbeat_ttl=float(ttl), timeout=float(idle))
def handle(msg):
    client.rpush(side + ":started", pickle.dumps(msg))
    if repr(msg) == hang:
        time.sleep(600)
    client.rpush(side + ":done", pickle.dumps(msg))

handle()
"""

# A reliable consumer process under a fixed id, as a supervisor restarts one.
# argv: url, queue name, consumer id, max_attempts. It fetches one message,
# prints its repr and hangs holding it; its heartbeat (60 s) still lives when
# the test restarts it.
HOLDER = r"""
import sys, time
from hotqueue import HotQueue
from hotqueue.reliable import Consumer
url, name, consumer_id, max_attempts = sys.argv[1:5]
consumer = Consumer(HotQueue(name, url=url), consumer_id=consumer_id, heartbeat_ttl=60,
                    max_attempts=int(max_attempts))
consumer.start()
got = consumer.fetch(timeout=2)
print(repr(got and got[1]), flush=True)
time.sleep(600)
"""


def crc16_xmodem(data: bytes) -> int:
    """CRC16-XMODEM (poly 0x1021, init 0), bit by bit: the cluster's key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return crc16_xmodem(raw) % 16384


@pytest.fixture
def queue(redis_url: str, key: str) -> Iterator[HotQueue]:
    q = HotQueue(key, url=redis_url)
    yield q
    keys = q.client.execute("KEYS", "*" + key + "*")
    if keys:
        q.client.delete(*keys)
    q.client.close()


def child_env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def start_worker(url: str, name: str, side: str, hang: str = "-", ttl: float = 1.0,
                 idle: float = 30.0) -> "subprocess.Popen[bytes]":
    return subprocess.Popen([sys.executable, "-c", WORKER, url, name, side, hang, str(ttl), str(idle)],
                            env=child_env())  # stderr: captured by pytest, shown on failure


def hold_and_kill(url: str, name: str, consumer_id: str, max_attempts: int = 5) -> str:
    """Run ``HOLDER`` until it holds a message, SIGKILL it; return the repr of
    what it held ("None" when it got nothing)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, name, consumer_id, str(max_attempts)],
                              env=child_env(), stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        return holder.stdout.readline().decode().strip()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def stop_workers(workers: List["subprocess.Popen[bytes]"]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait()


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def side_list(client: resp.Client, key: str) -> List[object]:
    return [pickle.loads(v) for v in client.execute("LRANGE", key, 0, -1)]


def consumer_of(queue: HotQueue, pid: int) -> str:
    ids = [c.id for c in queue.stats().consumers if f":{pid}:" in c.id]
    assert len(ids) == 1, ids
    return ids[0]


def through(proxy: FaultProxy, redis_url: str, key: str, **options: Any) -> HotQueue:
    """The queue ``key`` on a client whose every connection goes through ``proxy``."""
    return HotQueue(key, client=resp.Client.from_url(redis_url, host="127.0.0.1", port=proxy.port), **options)


def proxy_for(redis_url: str) -> FaultProxy:
    # The proxy relays plain TCP and matches commands by their bytes: it needs
    # a redis://host:port URL. Never fall back to 6379 (the shared server).
    url = urlsplit(redis_url)
    if url.scheme != "redis" or url.port is None:
        pytest.fail(f"the proxied tests need a redis://host:port REDIS_URL, not {url.scheme}://", pytrace=False)
    return FaultProxy(url.port, url.hostname or "127.0.0.1")


def blocked_clients(client: resp.Client) -> int:
    info = client.execute("INFO", "clients").decode()
    return int(info.split("blocked_clients:")[1].split()[0])


# -- keys ------------------------------------------------------------------------


def test_crc16_matches_the_cluster_reference_value() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3


@pytest.mark.parametrize("name", ["jobs", "a{b", "a}b{c}", "{tenant}jobs", "é:{ü}", "with space"])
def test_every_key_of_a_queue_is_in_the_slot_of_the_main_key(name: str) -> None:
    main = "hotqueue:" + name
    keys = keys_for(main)
    assert keys.main == main
    derived = [keys.consumers, keys.attempts, keys.dead, keys.processing("host:1:ab}c"),
               keys.heartbeat("h{x}")]
    assert {slot(k) for k in derived} == {slot(main)}
    assert slot(main) == resp.key_slot(main)


def test_plain_names_use_the_main_key_as_hash_tag() -> None:
    assert keys_for("hotqueue:jobs").dead == "{hotqueue:jobs}:dead"
    assert keys_for("hotqueue:jobs").processing("c1") == "{hotqueue:jobs}:processing:c1"


@pytest.mark.parametrize("name", ["a}b", "x{}y"])
def test_a_name_that_cannot_share_a_slot_is_refused(name: str, queue: HotQueue) -> None:
    # The main key's slot hashes the whole key, "}" included, and no hash tag
    # can hold a "}"; refused before anything is sent.
    with pytest.raises(ValueError, match="hash tag"):
        keys_for("hotqueue:" + name)
    with pytest.raises(ValueError, match="hash tag"):
        HotQueue(name, client=queue.client).reserve(timeout=1)


# -- reserve, ack, fail ------------------------------------------------------------


def test_reserve_holds_the_message_in_its_processing_list_until_acked(queue: HotQueue) -> None:
    queue.put("first", "second")
    keys = keys_for(queue.key)
    with queue.reserve(timeout=1) as msg:
        assert msg == "first"
        (consumer,) = queue.stats().consumers
        assert consumer.in_flight == 1
        assert queue.client.execute("LRANGE", keys.processing(consumer.id), 0, -1) == [pickle.dumps("first")]
        assert queue.client.execute("EXISTS", keys.heartbeat(consumer.id)) == 1
        assert len(queue) == 1
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [pickle.dumps("second")]
    assert queue.stats().consumers == []
    assert queue.client.execute("EXISTS", keys.heartbeat(consumer.id), keys.processing(consumer.id)) == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("hotqueue-heartbeat")]


def test_reserve_gives_none_on_timeout_and_when_empty(queue: HotQueue) -> None:
    start = time.monotonic()
    with queue.reserve(timeout=0.3) as msg:
        assert msg is None
    assert 0.25 < time.monotonic() - start < 5
    with queue.reserve(block=False) as msg:
        assert msg is None


def test_a_failure_puts_the_message_back_at_the_head_with_its_bytes_unchanged(queue: HotQueue) -> None:
    queue.put({"n": 1}, {"n": 2})
    with pytest.raises(KeyError):
        with queue.reserve(timeout=1) as msg:
            assert msg == {"n": 1}
            raise KeyError("x")
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [pickle.dumps({"n": 1}), pickle.dumps({"n": 2})]
    assert queue.get() == {"n": 1}  # a plain consumer reads it as ever


def test_a_handler_that_always_raises_ends_in_the_dead_letters(queue: HotQueue) -> None:
    queue.put("poison", "ok-1", "ok-2")
    calls: List[str] = []

    @queue.worker(reliable=True, max_attempts=3, timeout=0.3)
    def handle(msg: str) -> None:
        calls.append(msg)
        if msg == "poison":
            raise ValueError(f"cannot handle {msg}")

    handle()
    assert calls.count("poison") == 3
    assert sorted(c for c in calls if c != "poison") == ["ok-1", "ok-2"]
    assert len(queue) == 0
    dead = queue.dead_letters
    assert len(dead) == 1
    (letter,) = dead.peek()
    assert letter.message == "poison"
    assert letter.reason == "ValueError('cannot handle poison')"
    assert letter.attempts == 3
    assert letter.data == pickle.dumps("poison")
    assert letter.consumer
    assert abs(letter.failed_at - time.time()) < 60
    # The failure count was reset: a requeued message gets its attempts again.
    assert queue.client.execute("HLEN", keys_for(queue.key).attempts) == 0
    assert dead.requeue() == 1
    assert len(dead) == 0
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [pickle.dumps("poison")]


def test_dead_letters_peek_requeue_and_clear_keep_order(queue: HotQueue) -> None:
    queue.put(*range(4))
    for _ in range(4):
        with pytest.raises(RuntimeError):
            with queue.reserve(timeout=1, max_attempts=1):
                raise RuntimeError("no\nnewline trouble: é")
    dead = queue.dead_letters
    assert [d.message for d in dead.peek(10)] == [0, 1, 2, 3]
    assert [d.message for d in dead.peek(2)] == [0, 1]
    assert dead.peek(1)[0].reason == repr(RuntimeError("no\nnewline trouble: é"))
    queue.put("new")
    assert dead.requeue() == 4
    assert list(queue.consume(block=False)) == ["new", 0, 1, 2, 3]
    queue.put(5)
    with pytest.raises(RuntimeError):
        with queue.reserve(timeout=1, max_attempts=1):
            raise RuntimeError
    assert dead.clear() == 1
    assert len(dead) == 0 and dead.peek() == []


def test_a_message_the_serializer_cannot_read_is_dead_lettered_and_skipped(
        queue: HotQueue, caplog: pytest.LogCaptureFixture) -> None:
    queue.client.rpush(queue.key, b"not a pickle", pickle.dumps("good"))
    with queue.reserve(timeout=1) as msg:
        assert msg == "good"
    (letter,) = queue.dead_letters.peek()
    assert letter.data == b"not a pickle" and letter.message == b"not a pickle"
    assert letter.reason.startswith("cannot deserialize:")
    # Said once, by what dead-lettered it (which says so only when it did).
    (record,) = [r for r in caplog.records if r.name == "hotqueue"]
    assert "dead-lettered after 1 attempt(s): cannot deserialize:" in record.getMessage()


def test_a_serializer_with_loads_none_set_later_takes_nothing(queue: HotQueue) -> None:
    """``loads`` set to ``None`` once the serializer was set: reserve()
    raises before its take, and does not hand over the raw bytes as the
    message."""
    queue.put("kept")
    serializer = types.SimpleNamespace(dumps=pickle.dumps, loads=pickle.loads)
    queue.serializer = serializer
    serializer.loads = None
    with pytest.raises(TypeError, match="loads"):
        with queue.reserve(timeout=1):
            pass
    assert len(queue) == 1  # not taken into a processing list
    queue.serializer = pickle
    with queue.reserve(timeout=1) as msg:
        assert msg == "kept"


def test_a_heartbeat_the_link_swallowed_does_not_stop_the_next(queue: HotQueue, redis_url: str) -> None:
    """With socket_timeout=None, a heartbeat sent while the link is silent
    for a moment (a connection dropped without a word) never gets its reply.
    The heartbeat thread waited for it for as long as the connection lived,
    and every handler longer than heartbeat_ttl was then recovered from under
    it: its ack failed, and it handled the same message again and again.
    Each round now waits for its reply a third of the TTL; the next goes on
    another connection."""
    ttl = 1.5
    with proxy_for(redis_url) as proxy:
        proxied = through(proxy, redis_url, queue.name, serializer=None)
        try:
            queue.put("one")
            handled: List[Any] = []
            with Consumer(proxied, heartbeat_ttl=ttl) as consumer:
                taken = consumer.fetch(timeout=5)
                assert taken is not None
                handled.append(taken[1])
                proxy.silent = True  # a heartbeat (every 0.5 s) is sent into the silence and lost
                wait_until("a heartbeat to be swallowed", lambda: proxy.swallowed >= 1, timeout=5)
                proxy.silent = False
                with Consumer(queue, heartbeat_ttl=ttl):  # another, recovering the dead's messages as it starts
                    time.sleep(2 * ttl)  # the handler runs past heartbeat_ttl
                    assert consumer.ack(taken[0]), "the message was recovered from under its live consumer"
            assert handled == [pickle.dumps("one")]
            assert len(queue) == 0 and queue.dead_letters.peek() == []
        finally:
            proxied.client.close()


def test_two_lapses_of_registration_apart_are_not_taken_for_a_heartbeat_ttl_too_short(
        queue: HotQueue, caplog: pytest.LogCaptureFixture) -> None:
    """A fetch that finds its consumer forgotten on the server (a restart, a
    long stall) registers again; twice in a row, before a take gets through,
    means heartbeat_ttl is too short for the link (logged). Twice with an
    alive take between (here: the consumer's registration removed during two
    waits, each ended by CLIENT UNBLOCK) is not; it was said all the same."""
    with Consumer(queue, heartbeat_ttl=60) as consumer:
        outcome: List[Any] = []
        fetching = threading.Thread(target=lambda: outcome.append(consumer.fetch(timeout=8)))
        fetching.start()
        admin = queue.client
        try:
            for _ in range(2):
                deadline = time.monotonic() + 5
                while True:  # the fetch's wait, once it is there
                    waiting = [line for line in admin.execute("CLIENT", "LIST").decode().splitlines()
                               if "cmd=blmove" in line and " flags=b " in line]
                    if waiting or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                assert waiting, "the fetch is not waiting"
                assert admin.execute("SREM", consumer.keys.consumers, consumer.id) == 1
                client_id = waiting[0].split("id=", 1)[1].split()[0]
                assert admin.execute("CLIENT", "UNBLOCK", client_id) == 1
                time.sleep(0.3)  # registered again, and waiting again
        finally:
            queue.put("done")
            fetching.join(10)
    assert outcome and outcome[0] is not None and outcome[0][1] == "done"
    assert not [r for r in caplog.records if "too short" in r.getMessage()]


def test_serializer_none_and_json(redis_url: str, key: str) -> None:
    raw = HotQueue(key, url=redis_url, serializer=None)
    raw.put(b"\x00\r\n\xff")
    with raw.reserve(timeout=1) as msg:
        assert msg == b"\x00\r\n\xff"
    as_json = HotQueue(key, url=redis_url, serializer=json)
    as_json.put({"a": [1, 2]})
    with as_json.reserve(timeout=1) as msg:
        assert msg == {"a": [1, 2]}
    assert len(raw) == 0
    raw.client.close()
    as_json.client.close()


def test_identical_messages_held_by_two_consumers_are_settled_apart(queue: HotQueue) -> None:
    """The same bytes put twice may be held by two consumers at once: an ack
    or a failure removes the copy in its own processing list only."""
    keys = keys_for(queue.key)
    queue.put("same", "same")
    with Consumer(queue, consumer_id="a") as a, Consumer(queue, consumer_id="b") as b:
        data_a, _ = a.fetch(timeout=1)
        data_b, _ = b.fetch(timeout=1)
        assert data_a == data_b
        assert a.ack(data_a) is True
        assert a.ack(data_a) is False  # acked already: b's copy stays
        assert a.fail(data_a, ValueError()) is False
        assert queue.client.execute("LRANGE", keys.processing("b"), 0, -1) == [data_b]
        assert len(queue) == 0
        assert b.ack(data_b) is True
    assert queue.stats() == (0, 0, [])


def test_a_consumer_stopped_on_its_own_heartbeat_thread_still_unregisters(queue: HotQueue) -> None:
    # The garbage collector may close a forgotten reliable consume on any
    # thread, the heartbeat's own included: that thread cannot join itself.
    consumer = Consumer(queue, consumer_id="self-stop", heartbeat_ttl=1)
    consumer.start()
    heartbeat = consumer._thread
    raised: List[BaseException] = []

    def stop_as_the_heartbeat() -> None:
        consumer._thread = threading.current_thread()
        try:
            consumer.stop()
        except BaseException as exc:
            raised.append(exc)

    stopper = threading.Thread(target=stop_as_the_heartbeat)
    stopper.start()
    stopper.join(10)
    assert raised == []
    assert queue.stats() == (0, 0, [])  # unregistered
    assert heartbeat is not None
    heartbeat.join(5)
    assert not heartbeat.is_alive()


def test_every_script_is_sent_whole_again_after_script_flush(queue: HotQueue) -> None:
    """A server forgets its scripts on a restart or ``SCRIPT FLUSH``: each one
    (recover, fail, dead-letter, ack, requeue) then runs from its source."""
    keys = keys_for(queue.key)
    queue.put("a", "b")

    def flush() -> None:
        queue.client.execute("SCRIPT", "FLUSH")

    flush()
    with Consumer(queue, max_attempts=2, consumer_id="c") as consumer:  # start() recovers
        data, msg = consumer.fetch(timeout=1)
        flush()
        assert (msg, consumer.fail(data, ValueError("x"))) == ("a", False)
        flush()
        data, msg = consumer.fetch(timeout=1)
        assert (msg, consumer.fail(data, ValueError("x"))) == ("a", True)
        flush()
        data, msg = consumer.fetch(timeout=1)
        assert (msg, consumer.ack(data)) == ("b", True)
    queue.client.execute("SADD", keys.consumers, "ghost")
    queue.client.rpush(keys.processing("ghost"), pickle.dumps("in flight"))
    flush()
    assert queue.recover() == 1
    flush()
    assert queue.dead_letters.requeue() == 1
    assert list(queue.consume(block=False)) == ["in flight", "a"]


def test_a_dead_letter_reason_is_cut_to_2000_characters_and_keeps_any_text(queue: HotQueue) -> None:
    """A huge exception message does not bloat the dead letters, and non-ASCII
    text, a newline or a lone surrogate in it cannot break the entry."""
    queue.put("m")
    with Consumer(queue, max_attempts=1) as consumer:
        data, _ = consumer.fetch(timeout=1)
        assert consumer.fail(data, ValueError("é😀\n\udcff" + "x" * 10**6)) is True
    (letter,) = queue.dead_letters.peek()
    assert (letter.message, letter.attempts) == ("m", 1)
    assert letter.reason.startswith("ValueError('é😀\\n\\udcff")
    assert 1000 < len(letter.reason) <= 2000


# -- consume(reliable=True) --------------------------------------------------------


def test_consume_acks_each_message_when_the_next_is_asked_for(queue: HotQueue) -> None:
    queue.put("a", "b", "c")
    seen = []
    for msg in queue.consume(reliable=True, timeout=0.3):
        # The message being handled is still held, not yet acked.
        assert [c.in_flight for c in queue.stats().consumers] == [1]
        seen.append(msg)
    assert seen == ["a", "b", "c"]
    assert len(queue) == 0 and queue.stats().consumers == []


def test_leaving_consume_early_gives_the_current_message_back(queue: HotQueue) -> None:
    queue.put("a", "b", "c")
    gen = queue.consume(reliable=True, timeout=1)
    assert next(gen) == "a"
    assert next(gen) == "b"
    gen.close()
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [pickle.dumps("b"), pickle.dumps("c")]
    assert queue.stats().consumers == []
    assert queue.client.execute("HLEN", keys_for(queue.key).attempts) == 0


# -- heartbeats and recovery -------------------------------------------------------


def test_recover_moves_a_dead_consumers_message_back_to_the_head(queue: HotQueue) -> None:
    # What a killed consumer leaves: registered, holding a message, no heartbeat.
    keys = keys_for(queue.key)
    queue.put("next")
    queue.client.execute("SADD", keys.consumers, "ghost")
    queue.client.rpush(keys.processing("ghost"), pickle.dumps("in flight"))
    assert queue.recover() == 1
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [pickle.dumps("in flight"), pickle.dumps("next")]
    assert queue.stats().consumers == []
    assert queue.recover() == 0


def test_a_processing_key_that_is_not_a_list_stops_no_recovery(queue: HotQueue) -> None:
    """Something else wrote a string where a dead consumer's processing list
    would be: the others are recovered, that one is left alone, and a new
    consumer still starts (its start runs the recovery)."""
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "a-ghost", "b-odd")
    queue.client.rpush(keys.processing("a-ghost"), pickle.dumps("held"))
    queue.client.execute("SET", keys.processing("b-odd"), "not a list")
    assert queue.recover() == 1
    assert sorted(queue.client.execute("SMEMBERS", keys.consumers)) == [b"b-odd"]
    with queue.reserve(timeout=1) as msg:
        assert msg == "held"


def test_stats_reads_an_unreadable_heartbeat_as_no_age(queue: HotQueue) -> None:
    keys = keys_for(queue.key)
    for cid, value in (("huge", '{"ttl_ms": 1e400}'), ("deep", "[" * 100000 + "]" * 100000)):
        queue.client.execute("SADD", keys.consumers, cid)
        queue.client.execute("SET", keys.heartbeat(cid), value, "PX", 60000)
    assert sorted(queue.stats().consumers) == [("deep", 0, None, True), ("huge", 0, None, True)]


def test_stats_reads_consumer_keys_of_another_type_as_recovery_does(queue: HotQueue) -> None:
    # Recovery leaves such a consumer registered; stats must not fail on it
    # from then on (nor on a heartbeat of another type, which keeps it alive).
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "a-ghost", "b-odd", "c-odd")
    queue.client.rpush(keys.processing("a-ghost"), pickle.dumps("held"))
    queue.client.execute("SET", keys.processing("b-odd"), "not a list")
    queue.client.execute("HSET", keys.heartbeat("c-odd"), "f", "v")
    assert queue.recover() == 1
    assert sorted(queue.stats().consumers) == [("b-odd", 0, None, False), ("c-odd", 0, None, True)]
    queue.client.execute("SET", queue.key, "not a list")
    with pytest.raises(resp.WrongTypeError):
        queue.stats()  # the queue's own key: nothing to read around


def test_stats_raises_a_refusal_that_is_not_a_key_of_another_type(redis_url: str, key: str,
                                                                   queue: HotQueue) -> None:
    # A user who may not read the consumers' keys learns so, rather than see
    # a dead consumer holding a message as alive and holding none.
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "c1")
    queue.client.rpush(keys.processing("c1"), pickle.dumps("held"))
    user = "monitor-" + key
    queue.client.execute("ACL", "SETUSER", user, "on", ">pw", "resetkeys", "~" + keys.main, "~" + keys.dead,
                         "~" + keys.consumers, "+@read")
    try:
        watcher = HotQueue(queue.name, url=redis_url, username=user, password="pw")
        with pytest.raises(resp.NoPermissionError):
            watcher.stats()
        watcher.client.close()
    finally:
        queue.client.execute("ACL", "DELUSER", user)
    assert queue.stats().consumers == [("c1", 1, None, False)]


def test_stats_tells_a_live_heartbeat_of_unknown_age_from_an_expired_one(redis_url: str, key: str,
                                                                         queue: HotQueue) -> None:
    # Recovery goes by whether the heartbeat is there: one with no expiry
    # (PERSIST, or written by something else) keeps its consumer alive.
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "kept", "gone")
    queue.client.execute("SET", keys.heartbeat("kept"), '{"ttl_ms": 5000}')
    assert sorted(queue.stats().consumers) == [("gone", 0, None, False), ("kept", 0, None, True)]
    shown = run_cli(redis_url, "stats", key)
    assert "kept: 0 in flight, heartbeat of unknown age" in shown.stdout
    assert "gone: 0 in flight, heartbeat expired" in shown.stdout
    queue.recover()
    assert [c.id for c in queue.stats().consumers] == ["kept"]


def test_recover_leaves_live_consumers_alone(queue: HotQueue) -> None:
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "alive")
    queue.client.execute("SET", keys.heartbeat("alive"), "{}", "PX", 5000)
    queue.client.rpush(keys.processing("alive"), b"busy")
    assert queue.recover() == 0
    assert queue.client.execute("LRANGE", keys.processing("alive"), 0, -1) == [b"busy"]


def test_a_message_abandoned_too_often_is_dead_lettered(queue: HotQueue) -> None:
    keys = keys_for(queue.key)
    queue.client.rpush(keys.processing("ghost"), pickle.dumps("kills workers"))
    for _ in range(2):  # delivered to "ghost", which dies; twice
        queue.client.execute("SADD", keys.consumers, "ghost")
        queue.recover(max_attempts=2)
        queue.client.execute("LMOVE", queue.key, keys.processing("ghost"), "LEFT", "RIGHT")
    (letter,) = queue.dead_letters.peek()
    assert letter.message == "kills workers" and letter.attempts == 2
    assert letter.reason.startswith("abandoned") and letter.consumer == "ghost"
    assert len(queue) == 0


def test_recover_gives_back_several_held_messages_in_their_order(queue: HotQueue) -> None:
    """A dead consumer's list holding several messages (a consumer holds one,
    but an older version or a hand may leave more) goes back to the head of
    the queue whole and in its order."""
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "ghost")
    queue.client.rpush(keys.processing("ghost"), b"1", b"2", b"3")
    queue.client.rpush(queue.key, b"4")
    assert queue.recover() == 3
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [b"1", b"2", b"3", b"4"]


def test_a_worker_restarted_under_its_id_first_takes_back_what_its_killed_predecessor_held(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """A supervisor restarts a killed worker at once under the same fixed
    ``consumer_id``, while the dead one's heartbeat still lives: the new
    consumer recovers the message left in its processing list before it
    beats, so that message is delivered again, first, as one failed attempt."""
    queue.put("in flight", "next")
    assert hold_and_kill(redis_url, key, "worker-1") == "'in flight'"
    keys = keys_for(queue.key)
    digest = hashlib.sha1(pickle.dumps("in flight")).hexdigest()
    with Consumer(queue, consumer_id="worker-1") as consumer:
        counted = queue.client.execute("HGET", keys.attempts, digest)
        with consumer.reserve(timeout=1) as first:
            pass
        with consumer.reserve(timeout=1) as second:
            pass
    assert (first, second, counted) == ("in flight", "next", b"1")
    assert queue.stats() == (0, 0, [])


def test_a_message_that_kills_every_worker_restarted_under_one_id_ends_in_the_dead_letters(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """Each delivery to a fixed-id worker that is killed counts as a failed
    attempt, as for any dead consumer: after ``max_attempts`` the message is
    dead-lettered, naming the consumer that died holding it."""
    queue.put("poison")
    held = [hold_and_kill(redis_url, key, "worker-1", max_attempts=3) for _ in range(3)]
    assert held == ["'poison'"] * 3
    with Consumer(queue, consumer_id="worker-1", max_attempts=3) as consumer:
        assert consumer.fetch(block=False) is None
    (letter,) = queue.dead_letters.peek()
    assert (letter.message, letter.attempts, letter.consumer) == ("poison", 3, "worker-1")
    assert letter.reason.startswith("abandoned")
    assert queue.stats() == (0, 1, [])


def test_an_idle_consumer_on_a_one_connection_client_stays_alive(redis_url: str, key: str,
                                                                  queue: HotQueue) -> None:
    """With ``max_connections=1`` the heartbeat thread cannot get the only
    connection while the consumer waits for a message; the consumer waits in
    slices and beats between them when the thread is late, so an idle
    consumer is never taken for dead, and the message that ends its wait is
    its own."""
    one = HotQueue(key, url=redis_url, max_connections=1)
    got: List[Any] = []
    seen: List[List[str]] = []
    with Consumer(one, heartbeat_ttl=1.0, consumer_id="idle") as consumer:
        waiter = threading.Thread(target=lambda: got.append(consumer.fetch()), daemon=True)
        waiter.start()
        end = time.monotonic() + 2.5  # idle for 2.5 TTLs, recovery running
        while time.monotonic() < end:
            queue.recover()
            seen.append([c.id for c in queue.stats().consumers])
            time.sleep(0.05)
        queue.put("wake")  # ends the wait whatever happened (the join below cannot hang)
        waiter.join(10)
        assert len(got) == 1 and got[0][1] == "wake"
        assert consumer.ack(got[0][0])
    one.client.close()
    assert [ids for ids in seen if ids != ["idle"]] == []
    assert queue.stats() == (0, 0, [])


def test_a_consumer_lost_while_waiting_does_not_swallow_the_next_message(redis_url: str, key: str,
                                                                        queue: HotQueue) -> None:
    """A consumer's machine is lost while it waits in ``BLMOVE``: no packet
    passes and nothing is closed, so the server keeps the wait's connection for
    minutes. Each wait ends before the heartbeat does, so a message put once
    the consumer counts as dead reaches a live consumer, not the processing
    list of one that recovery has already given up."""
    keys = keys_for(queue.key)
    errors: List[BaseException] = []
    with proxy_for(redis_url) as proxy:
        lost_queue = through(proxy, redis_url, key)
        lost = Consumer(lost_queue, heartbeat_ttl=1.0, consumer_id="lost")
        lost.start()

        def wait_for_a_message() -> None:
            try:
                lost.fetch()
            except resp.RespError as exc:  # its reply never comes, or the proxy closes
                errors.append(exc)

        waiter = threading.Thread(target=wait_for_a_message, daemon=True)
        waiter.start()
        wait_until("the consumer to wait in BLMOVE", lambda: blocked_clients(queue.client) == 1, timeout=10)
        proxy.silent = True
        wait_until("its heartbeat to expire",
                   lambda: queue.client.execute("EXISTS", keys.heartbeat("lost")) == 0, timeout=10)
        assert queue.recover() == 0
        assert queue.stats().consumers == []
        queue.put("precious")
        with Consumer(queue) as live:
            got = live.fetch(timeout=2)
            if got is not None:
                assert live.ack(got[0])
        swallowed = queue.client.execute("LRANGE", keys.processing("lost"), 0, -1)
    waiter.join(10)
    lost.stop()  # the proxy is gone: it only logs that it could not unregister
    lost_queue.client.close()
    assert swallowed == [] and got is not None and got[1] == "precious"
    assert errors and not waiter.is_alive()


# A reliable consumer process whose heartbeats no longer get through (the test
# cuts them in a proxy). argv: url, queue name. As consumer "c" it starts,
# waits for a line, takes one message without blocking, prints its repr (or
# the error) and hangs until killed.
LATE_BEATER = r"""
import sys
from hotqueue import HotQueue
from hotqueue.reliable import Consumer
url, name = sys.argv[1:3]
consumer = Consumer(HotQueue(name, url=url), consumer_id="c", heartbeat_ttl=1)
consumer.start()
print("started", flush=True)
sys.stdin.readline()
try:
    got = consumer.fetch(block=False)
    print(repr(got and got[1]), flush=True)
except Exception as exc:
    print(type(exc).__name__, flush=True)
sys.stdin.readline()
"""


def test_a_consumer_given_up_as_dead_beats_before_it_takes_a_message(redis_url: str, key: str,
                                                                      queue: HotQueue) -> None:
    """A consumer whose heartbeats stopped reaching Redis for longer than its
    TTL has been recovered as dead and left the set of consumers. Were it to
    take a message without beating first and be killed then, no recovery would
    ever look in its processing list again: the message would be lost for
    good. ``fetch(block=False)`` beats first, as a blocking fetch does."""
    keys = keys_for(queue.key)
    queue.put("job")
    with proxy_for(redis_url) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        child = subprocess.Popen([sys.executable, "-c", LATE_BEATER, url, key], env=child_env(),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline() == b"started\n"
            for _ in range(100):
                proxy.inject("cut_before", marker=keys.heartbeat("c").encode())
            wait_until("its heartbeat to expire",
                       lambda: queue.client.execute("EXISTS", keys.heartbeat("c")) == 0, timeout=10)
            assert queue.recover() == 0
            assert queue.stats().consumers == []
            child.stdin.write(b"go\n")
            child.stdin.flush()
            child.stdout.readline()  # 'job' when it took it, else the error
        finally:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()
        proxy.clear()
    wait_until("the heartbeat to expire", lambda: queue.client.execute("EXISTS", keys.heartbeat("c")) == 0)
    queue.recover()
    assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == []
    assert queue.get() == "job"


def test_the_heartbeat_keeps_a_handler_longer_than_its_ttl(queue: HotQueue) -> None:
    queue.put("slow")
    with queue.reserve(timeout=1, heartbeat_ttl=1.5) as msg:
        time.sleep(4.0)  # over two TTLs
        assert queue.recover() == 0
        (consumer,) = queue.stats().consumers
        assert consumer.in_flight == 1 and consumer.heartbeat_age is not None
        assert consumer.heartbeat_age < 1.5
    assert msg == "slow" and len(queue) == 0


def test_a_killed_worker_process_message_is_handled_again_by_another(redis_url: str, key: str,
                                                                     queue: HotQueue) -> None:
    side = key + ":side"
    client = queue.client
    workers = [start_worker(redis_url, key, side, hang=repr(5), ttl=1.0)]
    try:
        queue.put(*range(20))
        wait_until("the victim to start message 5",
                   lambda: 5 in side_list(client, side + ":started"), timeout=20)
        victim = workers[0]
        victim_id = consumer_of(queue, victim.pid)
        assert client.execute("LRANGE", keys_for(queue.key).processing(victim_id), 0, -1) == [pickle.dumps(5)]
        victim.kill()
        victim.wait()
        killed_at = time.monotonic()
        workers.append(start_worker(redis_url, key, side, ttl=1.0))
        wait_until("every message done", lambda: len(side_list(client, side + ":done")) >= 20, timeout=20)
        recovered_after = time.monotonic() - killed_at
        time.sleep(0.3)  # a duplicate would show up here
        done = side_list(client, side + ":done")
        assert sorted(done) == list(range(20))  # each exactly once, 5 included
        assert side_list(client, side + ":started").count(5) == 2
        assert recovered_after >= 0.5  # only after the heartbeat expired
        assert [c.id for c in queue.stats().consumers] == [consumer_of(queue, workers[1].pid)]
    finally:
        stop_workers(workers)


def test_four_workers_and_an_old_style_producer_lose_nothing_when_one_is_killed(
        redis_url: str, key: str, queue: HotQueue) -> None:
    total = 10_000
    side = key + ":side"
    producer = resp.Client.from_url(redis_url)
    # TTL 2 s: a live worker starved of CPU on a busy machine for over a
    # second would count as dead and its message would be handled twice.
    workers = [start_worker(redis_url, key, side, ttl=2.0) for _ in range(4)]
    try:
        # Exactly what HotQueue 0.2.8 writes: RPUSH of pickle.dumps bytes.
        def produce(first: int, stop: int) -> None:
            for start in range(first, stop, 500):
                producer.rpush(queue.key, *[pickle.dumps(i) for i in range(start, start + 500)])

        produce(0, total // 2)
        wait_until("a quarter done", lambda: producer.llen(side + ":done") >= total // 4, timeout=60)
        victim = workers[0]
        victim_id = consumer_of(queue, victim.pid)
        victim.send_signal(signal.SIGSTOP)  # freeze it to read what it holds
        in_flight: Set[int] = {
            pickle.loads(v) for v in producer.execute(
                "LRANGE", keys_for(queue.key).processing(victim_id), 0, -1)
        }
        victim.kill()
        victim.wait()
        produce(total // 2, total)  # the rest only after the kill: it was mid-run
        wait_until("every message done", lambda: producer.llen(side + ":done") >= total, timeout=90)
        wait_until("the queue drained", lambda: len(queue) == 0 and queue.stats().in_flight == 0, timeout=30)
        done = side_list(producer, side + ":done")
        assert set(done) == set(range(total))
        duplicates = {m for m, n in Counter(done).items() if n > 1}
        assert duplicates <= in_flight
        assert len(done) - total == len(duplicates) <= 1
        assert len(queue.dead_letters) == 0
        print(f"in flight at the kill: {sorted(in_flight)}, handled twice: {sorted(duplicates)}")
    finally:
        stop_workers(workers)
        producer.close()


def test_plain_and_reliable_consumers_share_one_queue(redis_url: str, key: str, queue: HotQueue) -> None:
    plain = HotQueue(key, url=redis_url)
    reliable = HotQueue(key, url=redis_url)
    got_plain: List[int] = []
    got_reliable: List[int] = []
    threads = [
        threading.Thread(target=lambda: got_plain.extend(plain.consume(timeout=0.5))),
        threading.Thread(target=lambda: got_reliable.extend(reliable.consume(reliable=True, timeout=0.5))),
    ]
    for thread in threads:
        thread.start()
    for start in range(0, 600, 50):
        queue.put(*range(start, start + 50))
    for thread in threads:
        thread.join(30)
    assert sorted(got_plain + got_reliable) == list(range(600))
    assert got_plain and got_reliable
    plain.client.close()
    reliable.client.close()


# -- servers without LMOVE ---------------------------------------------------------


def test_a_server_without_lmove_is_refused_at_once(make_server: Callable[..., object]) -> None:
    server = make_server(args=["--rename-command", "LMOVE", "", "--rename-command", "BLMOVE", ""])
    queue = HotQueue("old", url=server.url)  # type: ignore[attr-defined]
    queue.put("kept")
    start = time.monotonic()
    with pytest.raises(ReliableUnsupportedError, match="Redis 6.2"):
        with queue.reserve(timeout=5):
            pass  # pragma: no cover
    with pytest.raises(ReliableUnsupportedError):
        next(queue.consume(reliable=True, timeout=5))

    @queue.worker(reliable=True, timeout=5)
    def handle(msg: object) -> None:
        raise AssertionError("never called")  # pragma: no cover

    with pytest.raises(ReliableUnsupportedError):
        handle()
    assert time.monotonic() - start < 3  # at once, not after the timeouts
    assert isinstance(ReliableUnsupportedError("x"), resp.ResponseError)
    assert queue.get() == "kept"  # nothing taken, nothing registered
    assert queue.client.execute("KEYS", "*") == []
    queue.client.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the heartbeat thread
def test_a_consumer_in_a_forked_child_neither_takes_nor_unregisters(queue: HotQueue) -> None:
    """A started consumer's id, processing list and heartbeat are its
    process's. In a forked child (a handler that forks, a process pool
    started from a worker) ``fetch`` raises at once: its take would give back
    the parent's message to take another under the parent's id. ``stop``
    (a ``with`` block the child leaves) touches nothing on the server."""
    keys = keys_for(queue.key)
    queue.put("m1", "m2")
    with Consumer(queue, consumer_id="c") as consumer:
        data, msg = consumer.fetch(block=False)
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status, never raise
            code = 1
            try:
                try:
                    consumer.fetch(block=False)
                    code = 2
                except RuntimeError:
                    code = 0
                    # The message held is the parent's to settle, too.
                    for settle in (consumer.ack, consumer.release, lambda d: consumer.fail(d, ValueError())):
                        try:
                            settle(data)
                            code = 5
                        except RuntimeError:
                            pass
                    consumer.stop()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == [data]
        assert queue.client.execute("SMEMBERS", keys.consumers) == [b"c"]
        assert queue.client.execute("EXISTS", keys.heartbeat("c")) == 1
        assert msg == "m1" and consumer.ack(data)
    assert queue.get() == "m2" and queue.stats() == (0, 0, [])


def _leave(how: str) -> None:
    if how == "exception":
        raise ValueError("the child's handler failed")
    if how == "exit":
        raise SystemExit(0)  # sys.exit() in a forked helper


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the heartbeat thread
@pytest.mark.parametrize("how", ["return", "exception", "exit"])
def test_a_forked_child_leaving_a_reserve_block_leaves_the_parents_message(queue: HotQueue, how: str) -> None:
    """A handler that forks: the child unwinds the ``reserve`` block it
    inherited (done, failed, or by ``sys.exit``). Acking, failing or
    releasing the parent's message there left the parent handling a message
    that was gone, or back in the queue for another consumer."""
    keys = keys_for(queue.key)
    queue.put("job")
    parent = os.getpid()
    try:
        with queue.reserve(timeout=1, consumer_id="parent") as msg:
            pid = os.fork()
            if pid == 0:
                _leave(how)  # "return": the block ends as the handler returns
            else:
                os.waitpid(pid, 0)
                assert msg == "job"
                assert queue.client.execute("LRANGE", keys.processing("parent"), 0, -1) == [pickle.dumps("job")]
                assert len(queue) == 0 and queue.dead_letters.peek(1) == []
    finally:
        if os.getpid() != parent:
            os._exit(0)  # the child: whatever leaving the block did is seen by the parent on the server
    assert queue.stats() == (0, 0, [])  # acked by the parent, once


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the heartbeat thread
def test_a_forked_child_closing_a_reliable_consume_leaves_the_parents_message(queue: HotQueue) -> None:
    """The child of a handler inside ``consume(reliable=True)`` ends, and its
    copy of the generator is closed: releasing the message there gave the
    parent's message back to the queue while the parent handled it."""
    keys = keys_for(queue.key)
    queue.put("job")
    messages = queue.consume(reliable=True, consumer_id="parent", timeout=1)
    assert next(messages) == "job"
    pid = os.fork()
    if pid == 0:
        try:
            messages.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert queue.client.execute("LRANGE", keys.processing("parent"), 0, -1) == [pickle.dumps("job")]
    assert len(queue) == 0
    assert list(messages) == []  # acked when the next is asked for; none is left
    assert queue.stats() == (0, 0, [])


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_consumer_made_before_a_fork_and_started_after_it_has_an_id_per_process(queue: HotQueue) -> None:
    """The default id names the process that made it: a consumer made in the
    parent and started in a child (or in both) ran as one consumer, each
    side's start recovering the other's message as abandoned."""
    consumer = Consumer(queue)
    made_as = consumer.id
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            consumer.start()
            os.write(write_end, consumer.id.encode())
            consumer.stop()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        child_id = reader.read().decode()
    with consumer:
        assert consumer.id == made_as  # the parent keeps the id it made
    assert child_id and child_id != made_as and f":{pid}:" in child_id


_FORK_WHILE_IMPORTING = r"""
import importlib.abc, os, signal, sys, threading, time

class SlowUuid(importlib.abc.MetaPathFinder):  # as a cold disk would make it, in the parent's thread only
    def find_spec(self, name, path, target=None):
        if name == "uuid" and threading.current_thread() is not threading.main_thread():
            time.sleep(1.0)
        return None

sys.meta_path.insert(0, SlowUuid())
from hotqueue import HotQueue
queue = HotQueue(sys.argv[2], url=sys.argv[1])
queue.put("one", "two")

def first_reliable_call():  # imports hotqueue.reliable, and uuid with it
    with queue.reserve(block=False):
        pass

thread = threading.Thread(target=first_reliable_call)
thread.start()
time.sleep(0.3)
assert "hotqueue.reliable" in sys.modules and "uuid" not in sys.modules, "not forking mid-import"
pid = os.fork()
if pid == 0:
    signal.alarm(20)  # SIGALRM ends a child that hangs
    with queue.reserve(block=False) as message:
        pass  # acked as the block ends
    os._exit(0 if message in ("one", "two") else 3)
thread.join()
_, status = os.waitpid(pid, 0)
print("child", "killed by signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def test_a_child_forked_while_a_thread_imports_the_reliable_module_can_use_it(queue: HotQueue, redis_url: str) -> None:
    """A thread makes the process's first reliable call, which imports
    hotqueue.reliable, and the process forks meanwhile: the child's own first
    reliable call hung for good on the module's import lock, held by a
    thread the child does not have."""
    done = subprocess.run([sys.executable, "-c", _FORK_WHILE_IMPORTING, redis_url, queue.name], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "child 0", done.stdout + done.stderr
    assert len(queue) == 0 and all(c.in_flight == 0 for c in queue.stats().consumers)


def test_consumer_checks_its_options(queue: HotQueue) -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        Consumer(queue, consumer_id="worker-\ud800")
    with pytest.raises(ValueError):
        Consumer(queue, max_attempts=0)
    with pytest.raises(ValueError):
        Consumer(queue, heartbeat_ttl=0)
    with pytest.raises(TypeError):
        queue.reserve(timeout=1, unknown=1)


# -- a real cluster ----------------------------------------------------------------


def test_reliable_mode_on_a_cluster_touches_one_slot_per_queue() -> None:
    from cluster_fixtures import RedisCluster

    cluster = RedisCluster(primaries=3, replicas=0)
    try:
        try:
            cluster.start()
        except Exception as exc:
            pytest.fail(f"cannot start a Redis Cluster: {exc}", pytrace=False)
        names = ["jobs", "other", "{tenant}jobs", "more"]
        owners = {cluster.owner(resp.key_slot("hotqueue:" + name)) for name in names}
        assert len(owners) > 1  # the queues live on different nodes
        for name in names:
            queue = HotQueue(name, url=cluster.url)
            keys = keys_for(queue.key)
            queue.put("a", "b", "c")
            with queue.reserve(timeout=1) as msg:
                assert msg == "a"
                assert queue.stats().in_flight == 1
            with pytest.raises(ValueError):
                with queue.reserve(timeout=1, max_attempts=1) as msg:
                    raise ValueError(msg)
            assert [d.message for d in queue.dead_letters.peek()] == ["b"]
            assert queue.dead_letters.requeue() == 1
            queue.client.execute("SADD", keys.consumers, "ghost")
            queue.client.rpush(keys.processing("ghost"), pickle.dumps("in flight"))
            assert queue.recover() == 1
            assert list(queue.consume(reliable=True, timeout=0.2)) == ["in flight", "c", "b"]
            assert queue.stats() == (0, 0, [])
            queue.client.close()
    finally:
        cluster.stop()


# -- faults ------------------------------------------------------------------------


def test_a_lost_blmove_reply_does_not_strand_the_message(redis_url: str, key: str, queue: HotQueue) -> None:
    queue.put("a", "b")
    with proxy_for(redis_url) as proxy:
        via_proxy = HotQueue(key, client=resp.Client.from_url(redis_url, host="127.0.0.1", port=proxy.port))
        # The server runs the BLMOVE (the message is in the processing list)
        # but its reply never arrives: the consumer must give it back.
        proxy.inject("cut_after", marker=b"BLMOVE\r\n$%d\r\n%s" % (len(queue.key), queue.key.encode()))
        got = list(via_proxy.consume(reliable=True, timeout=0.5))
        assert proxy.injected["cut_after"] == 1
        via_proxy.client.close()
    assert got == ["a", "b"]
    assert len(queue) == 0 and queue.stats() == (0, 0, [])


def test_a_drop_when_acking_neither_raises_nor_gives_the_handled_message_back(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """``reserve``'s block has finished; the connection carrying the ack drops
    before it reaches the server. The ack is sent again, as ``consume`` and
    ``worker`` do, so the block exits cleanly and the message does not go
    back to the queue to be handled twice."""
    queue.put("charge card 42")
    with proxy_for(redis_url) as proxy:
        via_proxy = through(proxy, redis_url, key)
        with via_proxy.reserve(timeout=1) as msg:
            assert msg == "charge card 42"
            proxy.inject("cut_before", marker=pickle.dumps(msg))  # only the ack carries the bytes
        assert proxy.injected["cut_before"] == 1
        via_proxy.client.close()
    assert queue.stats() == (0, 0, [])


def test_a_drop_when_reserve_reports_a_failure_neither_hides_the_error_nor_loses_the_count(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """``reserve``'s block raised; the connection carrying the failure report
    drops before it reaches the server. The report is sent again, as ``work``
    does: the handler's own exception comes out of the block (not a
    ``ConnectionError``) and the failure counts, so with ``max_attempts=1``
    the message is a dead letter, not back in the queue uncounted."""
    queue.put("poison")
    with proxy_for(redis_url) as proxy:
        via_proxy = through(proxy, redis_url, key)
        with pytest.raises(ValueError, match="cannot handle"):
            with via_proxy.reserve(timeout=1, max_attempts=1) as msg:
                proxy.inject("cut_before", marker=pickle.dumps(msg))  # only the report carries the bytes
                raise ValueError("cannot handle " + msg)
        assert proxy.injected["cut_before"] == 1
        via_proxy.client.close()
    (letter,) = queue.dead_letters.peek()
    assert letter.message == "poison" and letter.reason == "ValueError('cannot handle poison')"
    assert queue.stats() == (0, 1, [])


def test_a_drop_when_reserve_gives_a_message_back_does_not_hide_the_exit(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """``sys.exit()`` (or Ctrl-C) inside ``reserve``'s block gives the message
    back; when the connection carrying that drops, the ``SystemExit`` still
    comes out of the block, as ``consume`` and ``worker`` let it, and the
    message is given back as the consumer stops."""
    keys = keys_for(queue.key)
    queue.put("job")
    with proxy_for(redis_url) as proxy:
        via_proxy = through(proxy, redis_url, key)
        processing = keys.processing("c").encode()
        give_back = b"%s\r\n$%d\r\n%s" % (processing, len(queue.key), queue.key.encode())  # processing, then main
        with pytest.raises(SystemExit):
            with via_proxy.reserve(timeout=1, consumer_id="c"):
                proxy.inject("cut_before", marker=give_back)
                sys.exit(3)
        assert proxy.injected["cut_before"] == 1
        via_proxy.client.close()
    assert queue.stats() == (1, 0, [])


def test_an_unreadable_message_whose_dead_lettering_drops_is_not_left_held(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """``fetch`` dead-letters a message the serializer cannot read; when that
    write meets a dropped connection ``fetch`` raises, and the next ``fetch``
    gives the message back before taking another: a consumer never holds
    two, and the unreadable one ends in the dead letters, not hidden."""
    keys = keys_for(queue.key)
    queue.client.rpush(queue.key, b"not a pickle", pickle.dumps("good"))
    with proxy_for(redis_url) as proxy:
        via_proxy = through(proxy, redis_url, key)
        with Consumer(via_proxy, consumer_id="c") as consumer:
            proxy.inject("cut_before", marker=b"not a pickle")  # only the dead-lettering carries it
            with pytest.raises(resp.ConnectionError):
                consumer.fetch(timeout=1)
            data, msg = consumer.fetch(timeout=1)
            assert msg == "good"
            assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == [data]
            assert consumer.ack(data)
        assert proxy.injected["cut_before"] == 1
        via_proxy.client.close()
    (letter,) = queue.dead_letters.peek()
    assert letter.data == b"not a pickle" and letter.reason.startswith("cannot deserialize:")
    assert queue.stats() == (0, 1, [])


def _take_marker(queue: HotQueue, consumer_id: str) -> bytes:
    # The bytes that only a take by consumer_id carries: the queue's key, then
    # its processing list's (a give-back names them the other way round).
    processing = keys_for(queue.key).processing(consumer_id)
    return b"%s\r\n$%d\r\n%s" % (queue.key.encode(), len(processing), processing.encode())


def _impatient(proxy: FaultProxy, redis_url: str, key: str, *scripts: Script,
               socket_timeout: float = 0.5) -> HotQueue:
    # The queue named key through proxy, on a client that gives up on a reply
    # after socket_timeout, with scripts loaded: a late copy of one is an
    # EVALSHA, which must not meet NOSCRIPT.
    slow = HotQueue(key, client=resp.Client.from_url(redis_url, host="127.0.0.1", port=proxy.port,
                                                     socket_timeout=socket_timeout))
    for script in scripts:
        slow.client.execute("SCRIPT", "LOAD", script.source)
    return slow


def _first_take_held_up(proxy: FaultProxy, redis_url: str, key: str, seconds: float,
                        socket_timeout: float = 0.5) -> HotQueue:
    # As _impatient, with the first take by consumer "c" held up for seconds on its way.
    slow = _impatient(proxy, redis_url, key, TAKE, RETIRE, socket_timeout=socket_timeout)
    proxy.inject(("delay_request", seconds), marker=_take_marker(slow, "c"))
    return slow


_SETTLEMENTS = {"ack": ACK, "fail": FAIL, "release": RELEASE}


def _settlement_times_out(proxy: FaultProxy, consumer: Consumer, settle: str, seconds: float = 1.0) -> bytes:
    # Fetch a message and settle it, the settlement held up in the network
    # for seconds, past the client's timeout; return the message's bytes.
    data, _ = consumer.fetch(block=False)
    proxy.inject(("delay_request", seconds), marker=_SETTLEMENTS[settle].sha.encode())
    with pytest.raises(resp.TimeoutError):
        if settle == "ack":
            consumer.ack(data)
        elif settle == "fail":
            consumer.fail(data, ValueError("x"))
        else:
            consumer.release(data)
    return data


def _late_request_ran(proxy: FaultProxy) -> None:
    wait_until("the late request", lambda: proxy.passed_late == 1)
    time.sleep(0.2)  # the server runs it as it arrives, on a connection of its own


def test_a_take_that_reaches_the_server_late_while_a_message_is_held_takes_no_second(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """A take is held up in the network past the client's socket timeout: the
    consumer gives up on it and takes a message again; then the late take
    runs while that message is being handled. It gives back what the list
    holds and takes the head again, so the consumer still holds one message,
    and every message is handled once."""
    keys = keys_for(queue.key)
    queue.put("m1", "m2", "m3")
    handled: List[str] = []
    with proxy_for(redis_url) as proxy:
        slow = _first_take_held_up(proxy, redis_url, key, 1.0)
        with Consumer(slow, consumer_id="c", heartbeat_ttl=30) as consumer:
            for data, msg in consumer.deliveries(block=False):
                if not handled:
                    _late_request_ran(proxy)
                    assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == [data]
                handled.append(msg)
                consumer.ack(data)
            held = queue.client.execute("LRANGE", keys.processing("c"), 0, -1)
        assert proxy.injected["delay_request"] == 1
        slow.client.close()
    assert held == [] and handled == ["m1", "m2", "m3"]
    assert queue.stats() == (0, 0, [])


def test_a_late_take_that_lands_after_the_settlement_is_given_back_by_the_next_fetch(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """As above, but the late take lands after the message handled meanwhile
    was acked, while the consumer holds nothing: it moves a message into the
    list, which the next fetch gives back and takes again (before, one
    stayed hidden there for as long as the consumer lived)."""
    keys = keys_for(queue.key)
    queue.put("m1", "m2")
    with proxy_for(redis_url) as proxy:
        slow = _first_take_held_up(proxy, redis_url, key, 1.5)
        with Consumer(slow, consumer_id="c", heartbeat_ttl=30) as consumer:
            with pytest.raises(resp.TimeoutError):
                consumer.fetch(block=False)  # the take held up
            data, msg = consumer.fetch(block=False)
            assert msg == "m1"
            assert consumer.ack(data)  # nothing else held yet
            _late_request_ran(proxy)
            assert queue.client.llen(keys.processing("c")) == 1
            data, msg = consumer.fetch(block=False)
            assert msg == "m2"
            assert consumer.ack(data)
            assert consumer.fetch(block=False) is None
        assert proxy.injected["delay_request"] == 1
        slow.client.close()
    assert queue.stats() == (0, 0, [])


def test_a_take_held_up_past_a_recovery_moves_nothing(redis_url: str, key: str, queue: HotQueue) -> None:
    """A take is held up in the network (TCP retransmissions across a
    partition) for longer than ``heartbeat_ttl``, and the consumer's machine
    is lost meanwhile: its heartbeat expires and recovery forgets it. When
    the take arrives at last it must not move a message into that
    consumer's list, which neither ``recover()`` nor ``stats()`` looks at
    any more: the message stays in the queue."""
    keys = keys_for(queue.key)
    queue.put("m1")
    with proxy_for(redis_url) as proxy:
        lost = _first_take_held_up(proxy, redis_url, key, 3.0, socket_timeout=0.3)
        consumer = Consumer(lost, consumer_id="c", heartbeat_ttl=0.5)
        consumer.start()
        with pytest.raises(resp.TimeoutError):
            consumer.fetch(block=False)  # the take held up
        proxy.silent = True  # the machine is lost: nothing more of it arrives
        wait_until("the heartbeat to expire", lambda: not queue.client.execute("EXISTS", keys.heartbeat("c")))
        assert queue.recover() == 0  # it held nothing
        assert queue.client.execute("SMEMBERS", keys.consumers) == []
        _late_request_ran(proxy)
        in_queue = queue.client.execute("LRANGE", queue.key, 0, -1)
        stranded = queue.client.execute("LRANGE", keys.processing("c"), 0, -1)
        consumer._stopping.set()  # the lost machine's heartbeat thread, for the test's sake
        lost.client.close()
    assert stranded == [] and in_queue == [pickle.dumps("m1")]
    assert queue.stats() == (1, 0, [])


def test_a_take_that_lands_while_its_consumer_stops_is_given_back(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """A take is held up in the network past the client's socket timeout, and
    the consumer stops meanwhile (``reserve`` whose fetch raised leaves its
    ``with`` block), its unregistering held up too. The late take lands while
    the consumer is still registered and moves a message into its list; the
    unregistering, when it lands, gives it back in the same step as it forgets
    the consumer. (Given back first and forgotten later, in two commands, the
    message was left in the list of a consumer nobody knew any more.)"""
    keys = keys_for(queue.key)
    queue.put("m1")
    heartbeat = keys.heartbeat("c").encode()
    with proxy_for(redis_url) as proxy:
        slow = _first_take_held_up(proxy, redis_url, key, 1.0)
        consumer = Consumer(slow, consumer_id="c", heartbeat_ttl=30)
        consumer.start()
        # The next request naming the heartbeat after the take: the unregistering.
        proxy.inject(("delay_request", 2.0), marker=b"$%d\r\n%s" % (len(heartbeat), heartbeat))
        with pytest.raises(resp.TimeoutError):
            consumer.fetch(block=False)  # the take held up
        consumer.stop()  # its unregistering held up: logged, not raised
        wait_until("both late requests", lambda: proxy.passed_late == 2)
        time.sleep(0.2)  # the server runs each as it arrives
        slow.client.close()
    assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == []
    assert queue.client.execute("SMEMBERS", keys.consumers) == []
    assert queue.get() == "m1" and queue.stats() == (0, 0, [])


def test_a_late_ack_does_not_settle_the_next_message_with_the_same_bytes(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """An ack held up in the network past the socket timeout is sent again
    and settles the message; the consumer takes the next one, which has the
    same bytes. When the first ack lands at last it must not remove that one
    from the processing list while it is being handled (a consumer that died
    then would lose it): a settlement names the delivery, not only the bytes."""
    keys = keys_for(queue.key)
    queue.put("same", "same")
    with proxy_for(redis_url) as proxy:
        slow = _impatient(proxy, redis_url, key, ACK)
        with Consumer(slow, consumer_id="c", heartbeat_ttl=30) as consumer:
            data = _settlement_times_out(proxy, consumer, "ack")
            assert consumer.ack(data)  # sent again: settled
            again, _ = consumer.fetch(block=False)
            assert again == data
            _late_request_ran(proxy)
            held = queue.client.execute("LRANGE", keys.processing("c"), 0, -1)
            assert consumer.ack(again)
        slow.client.close()
    assert held == [data]
    assert queue.stats() == (0, 0, [])


@pytest.mark.parametrize("settle", ["ack", "fail", "release"])
def test_a_late_settlement_does_not_land_on_the_message_delivered_again(
        redis_url: str, key: str, queue: HotQueue, settle: str) -> None:
    """A settlement held up in the network past the socket timeout raises;
    the next fetch sends it again before taking, so the message is settled
    (acked, or back in the queue and taken again under a new number). When the
    first copy lands at last it finds another number and does nothing: before,
    the message was delivered again under its old number, and the late copy
    gave it back to the queue (or removed it) while it was being handled."""
    keys = keys_for(queue.key)
    queue.put("m")
    with proxy_for(redis_url) as proxy:
        slow = _impatient(proxy, redis_url, key, _SETTLEMENTS[settle])
        with Consumer(slow, consumer_id="c", heartbeat_ttl=30) as consumer:
            data = _settlement_times_out(proxy, consumer, settle)
            got = consumer.fetch(block=False)
            _late_request_ran(proxy)
            held = queue.client.execute("LRANGE", keys.processing("c"), 0, -1)
            waiting = len(queue)
            if settle == "ack":
                assert got is None and held == []
            else:
                assert got is not None and got[0] == data and held == [data]
                assert consumer.ack(data)
        slow.client.close()
    assert waiting == 0
    assert queue.stats() == (0, 0, [])


@pytest.mark.parametrize("last", ["not a number", "007", "99999999999999999999", "9223372036854775807"])
def test_a_take_fails_before_it_moves_anything(queue: HotQueue, last: str) -> None:
    """The take numbers the delivery after moving the message, so it checks
    first that the number can be written: a foreign value there (not an
    integer to Redis, or about to overflow) makes it fail with the message
    still in the queue, not moved and unnumbered."""
    keys = keys_for(queue.key)
    queue.put("m")
    with Consumer(queue, consumer_id="c") as consumer:  # its start takes a run number from the counter
        queue.client.execute("HSET", keys.deliveries, "", last)
        with pytest.raises(resp.ResponseError, match="not a number"):
            consumer.fetch(block=False)
        assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == []
        assert len(queue) == 1
        queue.client.execute("HDEL", keys.deliveries, "")
        data, msg = consumer.fetch(block=False)
        assert msg == "m" and consumer.ack(data)


def test_delivery_numbers_are_kept_exactly_as_written(queue: HotQueue) -> None:
    """Numbers go to the client and back as the bytes Redis wrote: through a
    Lua number, a large one came back as 1e+17 and no settlement matched it,
    so the message was delivered again for ever."""
    keys = keys_for(queue.key)
    queue.put("m1", "m2")
    with Consumer(queue, consumer_id="c") as consumer:  # its start takes a run number from the counter
        queue.client.execute("HSET", keys.deliveries, "", "99999999999999999")
        for expected in ("m1", "m2"):
            data, msg = consumer.fetch(block=False)
            assert msg == expected and consumer.ack(data)
    assert queue.client.execute("HGET", keys.deliveries, "") == b"100000000000000001"
    assert queue.stats() == (0, 0, [])


def test_a_settlement_refused_before_it_acts_leaves_the_consumer_usable(caplog: pytest.LogCaptureFixture,
                                                                         queue: HotQueue) -> None:
    """A settlement whose outcome is known, because it was refused before it
    was sent (a bad argument) or before it acted (a foreign value at the
    dead letters), is not sent again: the next fetch delivers the message
    again, and stop gives it back. (Kept to be sent again, it failed every
    later fetch the same way, and kept stop from unregistering.)"""
    keys = keys_for(queue.key)
    queue.put({"job": 1})
    with Consumer(queue, consumer_id="c", max_attempts=1) as consumer:
        data, msg = consumer.fetch(block=False)
        with pytest.raises(TypeError):
            consumer.ack(msg)  # the message, not its bytes: nothing sent
        again, _ = consumer.fetch(block=False)
        assert again == data
        queue.client.execute("SET", keys.dead, "foreign")
        with pytest.raises(resp.WrongTypeError):
            consumer.fail(again, ValueError("x"))  # refused before it wrote anything
        assert consumer.fetch(block=False)[0] == data
    assert not [r for r in caplog.records if "could not" in r.getMessage()]
    assert queue.client.execute("SMEMBERS", keys.consumers) == []
    assert queue.get() == {"job": 1}


@pytest.mark.parametrize("settle", ["ack", "fail", "release"])
def test_a_resent_settlement_is_kept_until_the_server_answers_it(
        make_server: Callable[..., Any], settle: str) -> None:
    """A settlement held up in the network times out; the next fetch sends
    it again and meets a refusal that says only that this copy did not run
    (READONLY, as in a failover). It stays unsettled: the fetch after sends
    it once more, before taking, so the first copy, landing late, does
    nothing. (Dropped, the message was delivered again under its old number,
    and the late copy gave it back or removed it while it was handled.)"""
    server = make_server()
    queue = HotQueue("q", url=server.url)
    queue.put("m")
    with proxy_for(server.url) as proxy:
        slow = _impatient(proxy, server.url, "q", _SETTLEMENTS[settle])
        with Consumer(slow, consumer_id="c", heartbeat_ttl=30) as consumer:
            data = _settlement_times_out(proxy, consumer, settle, 2.0)
            queue.client.execute("REPLICAOF", "127.0.0.1", "1")  # writes refused for a moment
            with pytest.raises(resp.ReadOnlyError):
                consumer.fetch(block=False)
            queue.client.execute("REPLICAOF", "NO", "ONE")
            got = consumer.fetch(block=False)
            _late_request_ran(proxy)
            if settle == "ack":
                assert got is None
            else:  # back in the queue, then taken again under a new number
                assert got is not None and got[0] == data and consumer.ack(data)
        slow.client.close()
    assert queue.stats() == (0, 0, [])
    queue.client.close()


def test_an_interrupt_as_a_settlement_is_sent_again_keeps_it(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """An interrupt (a signal handler's exception) lands just as fetch sends
    again a settlement that timed out: it stays unsettled, and the next fetch
    sends it before taking, so the first copy, landing late, does nothing."""
    queue.put("m")
    with proxy_for(redis_url) as proxy:
        slow = _impatient(proxy, redis_url, key, RELEASE)
        with Consumer(slow, consumer_id="c", heartbeat_ttl=30) as consumer:
            data = _settlement_times_out(proxy, consumer, "release", 2.0)

            def interrupt_the_resend(frame: Any, event: str, arg: Any) -> None:
                # At the first call of the resend: the script, or (before) _settle.
                if event == "call" and frame.f_code in (Script.__call__.__code__, Consumer._settle.__code__):
                    sys.settrace(None)
                    raise KeyboardInterrupt

            sys.settrace(interrupt_the_resend)
            try:
                with pytest.raises(KeyboardInterrupt):
                    consumer.fetch(block=False)
            finally:
                sys.settrace(None)
            got = consumer.fetch(block=False)  # the give-back, then the same message taken anew
            _late_request_ran(proxy)
            assert got is not None and got[0] == data and consumer.ack(data)
        slow.client.close()
    assert queue.stats() == (0, 0, [])


def test_a_release_of_a_message_not_held_does_nothing(queue: HotQueue) -> None:
    """Like ack and fail, release acts only on the message it is given: given
    one settled before, it does not give back the message now held."""
    queue.put("a", "b")
    with Consumer(queue, consumer_id="c") as consumer:
        a, _ = consumer.fetch(block=False)
        assert consumer.ack(a)
        b, _ = consumer.fetch(block=False)
        consumer.release(a)
        assert len(queue) == 0
        assert consumer.ack(b)
    assert queue.stats() == (0, 0, [])


def test_a_failure_whose_repr_fails_is_still_counted(queue: HotQueue) -> None:
    """repr() of the handler's exception (or of the serializer's) raises: the
    failure is recorded under the exception's type. It raised TypeError in
    fail() instead, so the failure was never counted and the message came
    back for ever."""

    class Odd(Exception):
        def __repr__(self) -> str:
            return None  # type: ignore[return-value]  # repr() raises TypeError

    queue.put("poison")
    for _ in range(2):
        with pytest.raises(Odd):
            with queue.reserve(timeout=1, max_attempts=2):
                raise Odd("x")
    assert len(queue) == 0
    [entry] = queue.dead_letters.peek(1)
    assert "Odd (its repr failed)" in str(entry)

    class Unreadable:
        @staticmethod
        def dumps(msg: Any) -> bytes:
            return b"x"

        @staticmethod
        def loads(data: bytes) -> Any:
            raise Odd("unreadable")

    odd = HotQueue(queue.name + "-odd", serializer=Unreadable, client=queue.client)
    odd.put("y")
    with odd.reserve(block=False) as msg:
        assert msg is None  # dead-lettered, and the queue is empty
    assert len(odd.dead_letters) == 1 and len(odd) == 0
    odd.clear()

    queue.put("poison again")

    @queue.worker(reliable=True, max_attempts=1, timeout=0.5)
    def handle(msg: Any) -> None:
        raise Odd("x")

    handle()  # logs it, dead-letters it, and ends when the queue stays empty
    assert len(queue) == 0 and len(queue.dead_letters) == 2


@pytest.mark.parametrize("fault", ["cut_before", "cut_after"])
def test_a_failure_report_sent_again_after_a_drop_counts_once(redis_url: str, key: str, queue: HotQueue,
                                                              fault: str) -> None:
    """``work`` reports a handler's failure again after a dropped connection,
    whether the first report ran (``cut_after``) or not (``cut_before``): the
    failure counts once, so with ``max_attempts=2`` the message is tried again,
    not dead-lettered."""
    queue.put("fails once")
    calls: List[str] = []
    with proxy_for(redis_url) as proxy:
        via_proxy = through(proxy, redis_url, key)

        def handle(msg: str) -> None:
            calls.append(msg)
            if len(calls) == 1:
                proxy.inject(fault, marker=pickle.dumps(msg))  # the failure report carries the bytes
                raise ValueError("boom")

        with Consumer(via_proxy, max_attempts=2) as consumer:
            consumer.work(handle, timeout=0.5)
        assert proxy.injected[fault] == 1
        via_proxy.client.close()
    assert calls == ["fails once", "fails once"]
    assert queue.stats() == (0, 0, [])
    assert queue.client.execute("HLEN", keys_for(queue.key).attempts) == 0


@pytest.mark.parametrize("settle", ["ack", "fail", "release", "before ack"])
def test_an_interrupted_settlement_does_not_leave_the_message_held_under_the_next(
        queue: HotQueue, monkeypatch: Any, settle: str) -> None:
    """An interrupt (Ctrl-C, or an exception raised by a signal handler such
    as a task timeout) landing in ``ack``, ``fail`` or ``release`` before it
    reaches the server leaves the message in the processing list. The next
    ``fetch`` sends that settlement again (or, interrupted before the
    settlement began, delivers the message again) before taking another: a
    consumer never holds two, and the message is not hidden from every other
    consumer for as long as this one lives (its heartbeat keeps recovery
    away)."""
    keys = keys_for(queue.key)
    queue.put("a", "b")
    client = queue.client

    def interrupted(*args: Any) -> Any:
        # The first settling command of this consumer raises, as a signal
        # handler's exception landing just before it is sent would; other
        # commands (the heartbeat thread's) run as usual.
        monkeypatch.undo()
        raise KeyboardInterrupt

    handled: List[str] = []
    with Consumer(queue, consumer_id="c", heartbeat_ttl=30) as consumer:
        data, msg = consumer.fetch(timeout=1)
        handled.append(msg)
        if settle == "before ack":  # landing before ack is called: in reserve, as _ride_out starts
            monkeypatch.setattr(consumer, "ack", interrupted)
        else:
            monkeypatch.setattr(client, "execute", interrupted)  # each settlement is one script
        with pytest.raises(KeyboardInterrupt):
            if settle in ("ack", "before ack"):
                consumer.ack(data)
            elif settle == "fail":
                consumer.fail(data, ValueError("x"))
            else:
                consumer.release(data)
        for obj, name in ((client, "execute"), (client, "lmove"), (consumer, "ack")):  # undone
            assert getattr(getattr(obj, name), "__func__", None) is getattr(type(obj), name)
        while True:
            got = consumer.fetch(block=False)
            if got is None:
                break
            assert len(client.execute("LRANGE", keys.processing("c"), 0, -1)) == 1, "held two at once"
            handled.append(got[1])
            consumer.ack(got[0])
    # The ack sent again settles "a"; failed or given back, "a" comes again,
    # as it does when the interrupt came before ack was called.
    assert sorted(handled) == (["a", "b"] if settle == "ack" else ["a", "a", "b"])
    assert queue.stats() == (0, 0, [])


def test_a_failure_that_cannot_be_counted_keeps_the_message(queue: HotQueue) -> None:
    """A failure is counted before the message leaves the processing list:
    when the count cannot be written (a foreign value at the attempts key)
    the script stops with an error and the message is still held, so nothing
    is lost, and failing it works again once the key is fixed."""
    keys = keys_for(queue.key)
    queue.put("m")
    with Consumer(queue, consumer_id="c") as consumer:
        data, _ = consumer.fetch(timeout=1)
        queue.client.execute("SET", keys.attempts, "not a hash")
        with pytest.raises(resp.ResponseError):
            consumer.fail(data, ValueError("x"))
        assert queue.client.execute("LRANGE", keys.processing("c"), 0, -1) == [data]
        queue.client.delete(keys.attempts)
        assert consumer.fail(data, ValueError("x")) is False
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [data]


def test_a_recovery_that_cannot_count_the_attempt_keeps_the_message(queue: HotQueue) -> None:
    """Recovery too counts the abandoned attempt before the message leaves the
    dead consumer's list: a count that is not an integer stops it with an
    error, the message and the consumer stay where they were, and recovery
    works once the count is fixed."""
    keys = keys_for(queue.key)
    digest = hashlib.sha1(b"m").hexdigest()
    queue.client.execute("SADD", keys.consumers, "ghost")
    queue.client.rpush(keys.processing("ghost"), b"m")
    queue.client.execute("HSET", keys.attempts, digest, "not a number")
    with pytest.raises(resp.ResponseError, match="not an integer"):
        queue.recover()
    assert queue.client.execute("LRANGE", keys.processing("ghost"), 0, -1) == [b"m"]
    assert queue.client.execute("SMEMBERS", keys.consumers) == [b"ghost"]
    queue.client.execute("HDEL", keys.attempts, digest)
    assert queue.recover() == 1
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [b"m"]


def test_a_reliable_worker_rides_out_a_server_restart(make_server: Callable[..., Any]) -> None:
    server = make_server()
    queue = HotQueue("restart", url=server.url)
    seen: List[str] = []

    @queue.worker(reliable=True, heartbeat_ttl=0.5, timeout=2)
    def handle(msg: str) -> None:
        seen.append(msg)

    thread = threading.Thread(target=handle)
    queue.put("before")
    thread.start()
    wait_until("the first message", lambda: seen == ["before"])
    server.kill()
    time.sleep(0.3)
    server.start()
    queue.put("after")
    wait_until("the message put after the restart", lambda: seen == ["before", "after"])
    # The heartbeat registered the consumer again on the fresh server.
    wait_until("re-registration", lambda: len(queue.stats().consumers) == 1, timeout=5)
    thread.join(20)
    assert not thread.is_alive()
    assert queue.stats() == (0, 0, [])
    queue.client.close()


# -- the command line --------------------------------------------------------------


def run_cli(url: str, *words: str) -> "subprocess.CompletedProcess[str]":
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "hotqueue", "--url", url, *words],
                          capture_output=True, text=True, env=env, timeout=60)


def test_cli_stats_and_recover(redis_url: str, key: str, queue: HotQueue) -> None:
    keys = keys_for(queue.key)
    queue.put("a", "b")
    with pytest.raises(ValueError):
        with queue.reserve(timeout=1, max_attempts=1):
            raise ValueError("dead")
    with queue.reserve(timeout=1) as msg:  # a live consumer holding "b"
        assert msg == "b"
        # A consumer that died holding a message (added after the live one
        # started, which would have recovered it at once).
        queue.client.execute("SADD", keys.consumers, "ghost")
        queue.client.rpush(keys.processing("ghost"), pickle.dumps("in flight"))
        done = run_cli(redis_url, "stats", key)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[:3] == ["length: 0", "in flight: 2", "dead letters: 1"]
        assert lines[3].startswith("oldest heartbeat: ") and lines[3].endswith(" s ago")
        assert lines[4] == "consumers: 2"
        assert "  ghost: 1 in flight, heartbeat expired" in lines
        assert any(line.endswith("1 in flight, heartbeat " + lines[3].split(": ")[1]) for line in lines[5:])
    done = run_cli(redis_url, "recover", key)
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == [pickle.dumps("in flight")]
    done = run_cli(redis_url, "stats", key)
    assert done.stdout.splitlines() == ["length: 1", "in flight: 0", "dead letters: 1",
                                        "oldest heartbeat: none", "consumers: 0"]
    assert run_cli(redis_url, "recover", key).stdout == "0\n"
    refused = run_cli(redis_url, "stats", "a}b")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "hash tag" in refused.stderr


def test_cli_recover_takes_the_workers_max_attempts(redis_url: str, key: str, queue: HotQueue) -> None:
    # Counted against the limit the workers use, not always 5: with
    # --max-attempts 1 a dead consumer's message has had its last try.
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "ghost")
    queue.client.rpush(keys.processing("ghost"), pickle.dumps("poison"))
    refused = run_cli(redis_url, "recover", "--max-attempts", "0", key)
    assert refused.returncode == 2 and "max_attempts" in refused.stderr
    assert len(queue.dead_letters) == 0 and queue.stats().in_flight == 1  # nothing moved
    done = run_cli(redis_url, "recover", "--max-attempts", "1", key)
    assert (done.returncode, done.stdout) == (0, "0\n"), done.stderr
    [letter] = queue.dead_letters.peek(10)
    assert (letter.message, letter.attempts) == ("poison", 1) and letter.reason.startswith("abandoned")
    assert len(queue) == 0


def test_queues_whose_names_share_a_hash_tag_share_no_key(redis_url: str, key: str) -> None:
    """A tag in the name (a tenant's queues kept on one cluster node) must not
    merge the queues' consumers, attempts or dead letters."""
    jobs, mail = HotQueue("{%s}jobs" % key, url=redis_url), HotQueue("{%s}mail" % key, url=redis_url)
    # A name that reads as another's main key and a suffix: told apart too.
    lookalike = HotQueue("{%s}jobs:processing" % key, url=redis_url)
    try:
        a, b, c = keys_for(jobs.key), keys_for(mail.key), keys_for(lookalike.key)
        assert a.dead == "{%s}:%d:%s:dead" % (key, len(jobs.key), jobs.key)
        assert not {a.consumers, a.attempts, a.dead, a.processing("c"), a.heartbeat("c")} & {
            b.consumers, b.attempts, b.dead, b.processing("c"), b.heartbeat("c")}
        assert a.processing("dead") != c.dead
        mail.put("invoice")
        with pytest.raises(RuntimeError):
            with mail.reserve(timeout=1, max_attempts=1):
                raise RuntimeError("smtp down")
        assert (len(mail.dead_letters), len(jobs.dead_letters)) == (1, 0)
        assert jobs.dead_letters.requeue() == 0 and len(jobs) == 0
        # A mail consumer that died holding a message: not jobs' to recover.
        mail.client.execute("SADD", b.consumers, "mailer")
        mail.client.rpush(b.processing("mailer"), pickle.dumps("reset password"))
        assert jobs.recover() == 0 and len(jobs) == 0
        assert mail.recover() == 1 and mail.get() == "reset password"
    finally:
        found = jobs.client.execute("KEYS", "*" + key + "*")
        if found:
            jobs.client.delete(*found)
        for queue in (jobs, mail, lookalike):
            queue.client.close()


@pytest.mark.parametrize("bad", ["five", 0, -1, 2.5, True, None])
def test_recover_checks_max_attempts_before_taking_anything(queue: HotQueue, bad: Any) -> None:
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, "ghost")
    queue.client.rpush(keys.processing("ghost"), b"precious")
    with pytest.raises(ValueError, match="max_attempts"):
        queue.recover(max_attempts=bad)
    assert queue.client.execute("LRANGE", keys.processing("ghost"), 0, -1) == [b"precious"]
    assert len(queue) == 0 and len(queue.dead_letters) == 0


@pytest.mark.parametrize("bad, error", [(b"w1", TypeError), (7, TypeError), ("", ValueError)])
def test_consumer_id_must_be_a_non_empty_str(queue: HotQueue, bad: Any, error: type) -> None:
    with pytest.raises(error, match="consumer_id"):
        with queue.reserve(timeout=0.1, consumer_id=bad):
            pass


# -- foreign values at the keys -------------------------------------------------------


def test_clearing_dead_letters_at_a_key_of_another_type_refuses_and_keeps_it(queue: HotQueue) -> None:
    dead = keys_for(queue.key).dead
    queue.client.execute("SET", dead, "not ours")
    with pytest.raises(resp.WrongTypeError):
        queue.dead_letters.clear()
    assert queue.client.execute("GET", dead) == b"not ours"


def test_requeue_gives_back_the_bytes_peek_shows_for_an_entry_not_written_by_hotqueue(queue: HotQueue) -> None:
    # A pickle of protocol 0 has newlines in it; a JSON object alone is no header.
    foreign = [pickle.dumps("line 1\nline 2", protocol=0), b'{"id": 7}', b"plain"]
    queue.client.rpush(keys_for(queue.key).dead, *foreign)
    letters = queue.dead_letters.peek()
    assert [d.data for d in letters] == foreign
    assert letters[0].message == "line 1\nline 2"
    assert {d.reason for d in letters} == {"(not written by hotqueue)"}
    assert queue.dead_letters.requeue() == 3
    assert queue.client.execute("LRANGE", queue.key, 0, -1) == foreign


def test_a_dead_letter_with_odd_details_does_not_hide_the_others_from_peek(queue: HotQueue) -> None:
    queue.client.rpush(keys_for(queue.key).dead, b'{"attempts": "many", "failed_at": null}\nodd',
                       b'{"attempts": 1e400}\n' + pickle.dumps("huge"), b'{"reason": "fine", "attempts": 2}\nok')
    letters = queue.dead_letters.peek()
    assert [(d.data, d.attempts, d.failed_at) for d in letters] == [
        (b"odd", 0, 0.0), (pickle.dumps("huge"), 0, 0.0), (b"ok", 2, 0.0)]
    assert letters[1].message == "huge" and letters[2].reason == "fine"


def test_peek_with_a_count_past_64_bits_returns_them_all(queue: HotQueue) -> None:
    queue.put("a")
    with pytest.raises(ValueError):
        with queue.reserve(timeout=1, max_attempts=1) as msg:
            raise ValueError(msg)
    assert [d.message for d in queue.dead_letters.peek(10**20)] == ["a"]


def test_a_consumer_id_that_is_not_utf8_stops_no_recovery(redis_url: str, key: str, queue: HotQueue) -> None:
    """Another client put an id that is not UTF-8 in the set of consumers:
    recover, stats, the CLI and every new consumer still work, and the
    message it held is recovered."""
    keys = keys_for(queue.key)
    queue.client.execute("SADD", keys.consumers, b"\xffghost")
    queue.client.rpush(keys.prefix.encode() + b"processing:\xffghost", pickle.dumps("held"))
    assert queue.stats().consumers == [("\\xffghost", 1, None, False)]
    stats = run_cli(redis_url, "stats", key)
    assert stats.returncode == 0 and "  \\xffghost: 1 in flight, heartbeat expired" in stats.stdout
    assert queue.recover() == 1 and queue.stats() == (1, 0, [])
    queue.client.execute("SADD", keys.consumers, b"\xfe")
    with queue.reserve(timeout=1) as msg:
        assert msg == "held"


@pytest.mark.parametrize("fetch_options", [{"block": False}, {"timeout": 0.3}])
def test_a_heartbeat_that_expires_before_each_take_does_not_hold_fetch_past_its_time(
        fetch_options: Dict[str, Any], caplog: pytest.LogCaptureFixture,
        redis_url: str, key: str, queue: HotQueue) -> None:
    """A heartbeat_ttl shorter than the way to the server: every take finds
    the heartbeat that fetch has just renewed expired, and the consumer not
    alive. A non-blocking fetch, or one with a timeout, gives up (once it has
    registered again and failed again) instead of trying again for ever; the
    cause is logged. (It went on while takes came back refused.)"""
    queue.put("m1")
    with proxy_for(redis_url) as proxy:
        slow = through(proxy, redis_url, key)
        slow.client.execute("SCRIPT", "LOAD", TAKE.source)
        consumer = Consumer(slow, consumer_id="c", heartbeat_ttl=0.01)
        consumer.start()
        consumer._stopping.set()  # a stalled heartbeat thread: only fetch beats
        consumer._thread.join(5)
        for _ in range(400):  # 400 x 50 ms: far past any bound below
            proxy.inject(("delay_request", 0.05), marker=_take_marker(slow, "c"))
        started = time.monotonic()
        assert consumer.fetch(**fetch_options) is None
        took = time.monotonic() - started
        proxy.clear()
        consumer.stop()
        slow.client.close()
    assert took < 5, took
    assert any("heartbeat_ttl 0.01 is too short" in r.getMessage() for r in caplog.records)
    assert queue.get() == "m1" and queue.stats() == (0, 0, [])


def test_a_heartbeat_thread_stop_gave_up_on_does_not_beat_again_after_a_new_start(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """A heartbeat held up in the network for longer than heartbeat_ttl; the
    consumer is stopped and started again. The round that sent it is left
    waiting (the heartbeat thread waits a third of the TTL for a round), and
    ends when its heartbeat lands at last: one heartbeat thread per consumer.
    (Before rounds, the thread itself was held up, stop() went on without
    it, and it took up beating beside the new one.)"""
    heartbeat = keys_for(queue.key).heartbeat("c").encode()

    def beating(name: str = "hotqueue-heartbeat-c") -> List[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == name and t.is_alive()]

    with proxy_for(redis_url) as proxy:
        slow = through(proxy, redis_url, key)
        consumer = Consumer(slow, consumer_id="c", heartbeat_ttl=0.3)
        consumer.start()
        proxy.inject(("delay_request", 1.0), marker=b"$%d\r\n%s" % (len(heartbeat), heartbeat))
        wait_until("a heartbeat held up", lambda: proxy.injected["delay_request"] == 1)
        consumer.stop()
        wait_until("the heartbeat thread ended", lambda: not beating())
        assert len(beating("hotqueue-heartbeat-round-c")) == 1  # the round held up
        consumer.start()
        wait_until("the late heartbeat passed on", lambda: proxy.passed_late == 1)
        wait_until("the held-up round ended", lambda: not beating("hotqueue-heartbeat-round-c"))
        time.sleep(0.5)  # several beats of the new thread
        assert len(beating()) == 1
        consumer.stop()
        slow.client.close()
    wait_until("no heartbeat thread", lambda: not beating())


def _late_copy_lands(proxy: FaultProxy) -> None:
    wait_until("the request held up to be passed on", lambda: proxy.passed_late == 1)
    time.sleep(0.2)  # the server runs it as it arrives


def _still_held_by(queue: HotQueue, consumer: Consumer, data: bytes) -> None:
    keys = keys_for(queue.key)
    assert queue.client.execute("LRANGE", keys.processing(consumer.id), 0, -1) == [data]
    assert len(queue) == 0
    assert queue.client.execute("HGETALL", keys.attempts) == []  # no attempt counted
    assert queue.client.execute("SMEMBERS", keys.consumers) == [consumer.id.encode()]
    assert consumer.ack(data)


def test_a_late_unregistering_leaves_the_next_start_of_the_same_id_alone(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """stop()'s unregistering is held up in the network past the socket
    timeout (logged), and the same consumer starts again and takes a
    message. When the unregistering lands it finds the heartbeat of a later
    run and does nothing. (It gave that message back to the queue while it
    was being handled, for another consumer to take at the same time.)"""
    with proxy_for(redis_url) as proxy:
        slow = _impatient(proxy, redis_url, key, RETIRE)
        consumer = Consumer(slow, consumer_id="c")
        with consumer:
            proxy.inject(("delay_request", 1.5), marker=RETIRE.sha.encode())
        queue.put("m2")
        with consumer:
            data, msg = consumer.fetch(block=False)
            assert msg == "m2"
            _late_copy_lands(proxy)
            _still_held_by(queue, consumer, data)
        slow.client.close()
    assert queue.stats() == (0, 0, [])


def test_a_late_recovery_at_start_leaves_the_next_start_of_the_same_id_alone(
        redis_url: str, key: str, queue: HotQueue) -> None:
    """start()'s recovery of its own id (what a killed earlier run of it
    left) is held up past the socket timeout, and start() is tried again, as
    consume(reliable=True) does, under the same id; the consumer takes a
    message. When the first recovery lands, it finds the heartbeat of a
    later run and does nothing. (It took the consumer for dead: the message
    went back to the queue, counted as abandoned, while it was handled.)"""
    queue.put("m1")
    with proxy_for(redis_url) as proxy:
        slow = _impatient(proxy, redis_url, key, RECOVER)
        consumer = Consumer(slow, consumer_id="c")
        proxy.inject(("delay_request", 1.5), marker=RECOVER.sha.encode())
        with pytest.raises(resp.TimeoutError):
            consumer.start()
        with consumer:
            data, msg = consumer.fetch(block=False)
            assert msg == "m1"
            _late_copy_lands(proxy)
            _still_held_by(queue, consumer, data)
        slow.client.close()
    assert queue.stats() == (0, 0, [])


def test_recover_skips_an_empty_id_in_the_consumers_set(queue: HotQueue) -> None:
    """'' is no consumer's id: its field in the deliveries hash is the run
    counter. Written into the set by something else, it was recovered as a
    dead consumer, which deleted the counter: run numbers started again from
    1, and a late copy of what an earlier run sent would act on a later one."""
    keys = keys_for(queue.key)
    with Consumer(queue, consumer_id="c"):
        pass
    counter = queue.client.execute("HGET", keys.deliveries, "")
    assert counter is not None
    queue.client.execute("SADD", keys.consumers, "")
    assert queue.recover() == 0
    assert queue.client.execute("HGET", keys.deliveries, "") == counter


def test_reserve_raises_what_the_block_raised_when_its_failure_cannot_be_recorded(
        queue: HotQueue, caplog: pytest.LogCaptureFixture) -> None:
    """The server refuses to record the failure (here the attempts hash is a
    string written by something else; OOM, READONLY and NOPERM alike): that
    is logged, and what the block raised comes out, not the refusal."""
    keys = keys_for(queue.key)
    queue.put("m")
    queue.client.execute("SET", keys.attempts, "not a hash")
    with pytest.raises(ValueError, match="the handler's"):
        with queue.reserve(block=False) as msg:
            assert msg == "m"
            raise ValueError("the handler's")
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)
    queue.client.execute("DEL", keys.attempts)
    assert queue.get() == "m"  # given back when the reserve's consumer stopped
