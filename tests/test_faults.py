"""Faults between client and server, made by a real TCP proxy (``faultproxy``).

What must hold whatever the network does: a reply reaches only the command
that asked for it; a command that reached the socket is never resent (an
``RPUSH`` is never doubled); a command whose pooled connection died before it
carried anything is resent transparently; and no call outlives its deadline.
"""

import contextlib
import os
import pickle
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
from cluster_fixtures import wait_for
from faultproxy import FaultProxy, report
from redis_server import RedisServer

import resp
from hotqueue import HotQueue
from resp.client import BLOCKING_MARGIN

TIMEOUT = 0.25  # socket_timeout of the clients under test
SLACK = 1.5  # generous allowance for a loaded machine on top of a deadline
RANDOM_COMMANDS = int(os.environ.get("HOTQUEUE_FAULT_COMMANDS", "2000"))
SEED = int(os.environ.get("HOTQUEUE_FAULT_SEED", "20261128"))


@pytest.fixture
def proxied(make_server: Callable[..., RedisServer]) -> Iterator[Tuple[FaultProxy, resp.Client, resp.Client]]:
    """A proxy in front of a private server, a client through the proxy and a
    direct client to look at what the server really holds."""
    server = make_server()
    with FaultProxy(server.port) as proxy:
        client = resp.Client("127.0.0.1", proxy.port, socket_timeout=TIMEOUT)
        direct = resp.Client("127.0.0.1", server.port, socket_timeout=5)
        try:
            yield proxy, client, direct
        finally:
            client.close()
            direct.close()


def test_delayed_reply_past_socket_timeout_raises_timeout_error(proxied: Any) -> None:
    proxy, client, direct = proxied
    assert client.execute("ECHO", "warm") == b"warm"
    proxy.inject(("delay", TIMEOUT * 3))
    start = time.monotonic()
    with pytest.raises(resp.TimeoutError):
        client.execute("ECHO", "late")
    assert time.monotonic() - start < TIMEOUT + SLACK
    # The late reply arrives on a connection that was closed: the next command
    # gets its own reply, not "late".
    time.sleep(TIMEOUT * 3)
    assert client.execute("ECHO", "next") == b"next"


def test_delayed_reply_within_socket_timeout_is_returned(proxied: Any) -> None:
    proxy, client, direct = proxied
    proxy.inject(("delay", TIMEOUT / 3))
    assert client.execute("ECHO", "slow") == b"slow"


def test_fragmented_reply_is_reassembled(proxied: Any, key: str) -> None:
    proxy, _, direct = proxied
    values = [uuid.uuid4().bytes * 3 for _ in range(5)] + [b"", b"\r\n$-1\r\n"]
    direct.rpush(key, *values)
    proxy.fragment_gap = 0.0005
    proxy.inject("fragment")
    # Not the fixture's 0.25 s: some 300 bytes, each after a sleep, took longer
    # than that on a loaded machine (CI).
    with resp.Client("127.0.0.1", proxy.port, socket_timeout=10) as client:
        assert client.execute("LRANGE", key, 0, -1) == values
    assert proxy.injected["fragment"] == 1


def test_cut_after_rpush_forwarded_raises_and_server_holds_one_copy(proxied: Any, key: str) -> None:
    proxy, client, direct = proxied
    assert client.ping()
    proxy.inject("cut_after")
    with pytest.raises(resp.ConnectionError) as info:
        client.rpush(key, "only-once")
    assert isinstance(info.value, ConnectionError)  # the builtin, too
    assert direct.execute("LRANGE", key, 0, -1) == [b"only-once"]
    # The client goes on, on a fresh connection, and did not resend.
    assert client.llen(key) == 1


def test_cut_after_put_forwarded_hotqueue_holds_one_copy(proxied: Any, key: str) -> None:
    proxy, client, direct = proxied
    queue = HotQueue(key, client=client)
    proxy.inject("reset")
    with pytest.raises(resp.ConnectionError):
        queue.put("a", "b")
    assert direct.llen(queue.key) == 2
    assert queue.get() == "a" and queue.get() == "b" and queue.get() is None


def test_cut_after_blpop_forwarded_raises_and_the_message_is_gone(proxied: Any, key: str) -> None:
    # At most once: the server popped the message and its reply was lost. The
    # client says so (ConnectionError) rather than retrying, which could pop
    # a second message; consume() logs the failure as a warning.
    proxy, client, direct = proxied
    queue = HotQueue(key, client=client)
    direct.rpush(queue.key, *[pickle.dumps(n) for n in ("lost", "next")])
    assert client.ping()
    proxy.inject("cut_after")
    with pytest.raises(resp.ConnectionError):
        queue.get(block=True, timeout=1)
    assert direct.llen(queue.key) == 1  # exactly one popped, not two
    assert queue.get() == "next"


def test_cut_before_forwarding_raises_and_server_holds_nothing(proxied: Any, key: str) -> None:
    # The request reached the socket, so the client cannot know the server
    # never saw it: it raises rather than risk a double.
    proxy, client, direct = proxied
    proxy.inject("cut_before")
    with pytest.raises(resp.ConnectionError):
        client.rpush(key, "x")
    assert direct.llen(key) == 0


def test_cut_mid_reply_raises_and_next_reply_is_its_own(proxied: Any, key: str) -> None:
    proxy, client, direct = proxied
    direct.rpush(key, b"v" * 1000)
    proxy.inject("cut_mid")
    with pytest.raises(resp.ConnectionError):
        client.execute("LRANGE", key, 0, -1)
    assert client.execute("ECHO", "after") == b"after"


def test_long_values_through_delays_fragments_and_a_cut(proxied: Any, key: str) -> None:
    # The rest of a long value is read into the buffer the connection keeps
    # after its first long value: whatever the network does, each reply is
    # whole and its own.
    proxy, _, direct = proxied
    value = os.urandom(300_000)
    direct.execute("SET", key, value)
    # A fragmented reply comes a byte per send(): more time than TIMEOUT.
    client = resp.Client("127.0.0.1", proxy.port, socket_timeout=30)
    try:
        assert client.execute("GET", key) == value
        proxy.inject(("delay", 0.1))
        assert client.execute("GET", key) == value
        proxy.inject("fragment")
        assert client.execute("GET", key) == value
        proxy.inject("cut_mid")
        with pytest.raises(resp.ConnectionError):
            client.execute("GET", key)
        assert client.execute("ECHO", "after") == b"after"
        assert client.execute("GET", key) == value
    finally:
        client.close()
    assert proxy.injected["fragment"] == proxy.injected["cut_mid"] == 1


def test_idle_pooled_connection_closed_by_peer_is_retried_transparently(proxied: Any, key: str) -> None:
    proxy, client, direct = proxied
    queue = HotQueue(key, client=client)
    queue.put("first")
    accepted = proxy.accepted
    assert proxy.close_idle() == 1  # the pooled connection dies while idle
    time.sleep(0.05)
    queue.put("second")  # no exception: nothing had been sent on the dead one
    assert proxy.accepted == accepted + 1
    assert direct.llen(queue.key) == 2
    assert [queue.get(), queue.get(), queue.get()] == ["first", "second", None]


def test_pooled_connection_broken_before_first_byte_is_resent_once(proxied: Any, key: str) -> None:
    # The write side of the pooled socket is shut, so the first send fails with
    # nothing written (EPIPE) while the socket does not look readable: this is
    # the resend path itself, not the pool's readability check.
    proxy, client, direct = proxied
    assert client.rpush(key, "one") == 1
    conn, reused = client._pool.acquire()
    assert reused
    conn.sock.shutdown(socket.SHUT_WR)
    client._pool.release(conn)
    accepted = proxy.accepted
    assert client.rpush(key, "two") == 2
    assert proxy.accepted == accepted + 1
    assert direct.execute("LRANGE", key, 0, -1) == [b"one", b"two"]


def test_silent_server_times_out_at_socket_timeout(proxied: Any) -> None:
    proxy, client, direct = proxied
    assert client.ping()
    proxy.silent = True  # half-open: the pooled connection stays open, answers nothing
    for _ in range(2):
        start = time.monotonic()
        with pytest.raises(resp.TimeoutError):
            client.execute("ECHO", "anyone?")
        assert time.monotonic() - start < TIMEOUT + SLACK


@pytest.mark.slow  # about 6 s each: the server's wait plus the client's margin
@pytest.mark.parametrize("socket_timeout", [None, TIMEOUT])
def test_silent_server_blocking_get_ends_at_its_deadline(proxied: Any, key: str, socket_timeout: Any) -> None:
    proxy, _, _ = proxied
    queue = HotQueue(key, host="127.0.0.1", port=proxy.port, socket_timeout=socket_timeout)
    assert len(queue) == 0
    proxy.silent = True
    start = time.monotonic()
    with pytest.raises(resp.TimeoutError):
        queue.get(block=True, timeout=0.5)
    # The server's own timeout, plus the client's margin, plus socket_timeout.
    elapsed = time.monotonic() - start
    assert 0.5 + BLOCKING_MARGIN <= elapsed < 0.5 + BLOCKING_MARGIN + (socket_timeout or 0) + SLACK
    queue.client.close()


def _in_thread(target: Callable[[], Any]) -> Tuple[threading.Thread, List[Any]]:
    # Run target in a daemon thread (one stuck for ever must not hold up the
    # run); the list gets its result, or the exception it raised.
    outcome: List[Any] = []

    def run() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_silent_server_endless_blocking_get_raises_within_a_slice(
    proxied: Any, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A get(block=True) with no timeout waits in slices: a server that stops
    answering without closing the connection (frozen, cut off) is noticed,
    even with socket_timeout=None, instead of being waited on for ever."""
    monkeypatch.setattr("hotqueue.queue.WAIT_SLICE", 1)
    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)  # a quicker test; the margin is not its subject
    proxy, _, _ = proxied
    queue = HotQueue(key, host="127.0.0.1", port=proxy.port)  # socket_timeout=None
    assert len(queue) == 0
    proxy.silent = True
    start = time.monotonic()
    thread, outcome = _in_thread(lambda: queue.get(block=True))
    thread.join(1 + 1.0 + SLACK + 2)  # the slice, the client's margin
    assert outcome, "get(block=True) still waits on a server that answers nothing"
    assert isinstance(outcome[0], resp.TimeoutError), outcome
    assert time.monotonic() - start < 1 + 1.0 + SLACK
    queue.client.close()


def test_silent_server_endless_consume_is_ridden_out(
    proxied: Any, key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """consume() with no timeout notices a server gone silent within a slice,
    rides it out (a warning, a new connection) and goes on once it answers."""
    monkeypatch.setattr("hotqueue.queue.WAIT_SLICE", 1)
    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)
    proxy, _, direct = proxied
    queue = HotQueue(key, host="127.0.0.1", port=proxy.port, serializer=None)
    assert len(queue) == 0
    proxy.silent = True
    thread, outcome = _in_thread(lambda: next(queue.consume()))
    wait_for("consume() to give up on the silent server", lambda: "retrying" in caplog.text,
             timeout=1 + 1.0 + SLACK)
    assert "retrying" in caplog.text, "consume() still waits on a server that answers nothing"
    proxy.silent = False
    direct.rpush(queue.key, b"after the silence")
    # The pop sent while the proxy swallowed everything ends within a slice
    # and a second; the next one reaches the server.
    thread.join(2 * (1 + 1.0) + SLACK)
    assert outcome == [b"after the silence"]
    queue.client.close()


@pytest.mark.parametrize("reliable", [False, True], ids=["plain", "reliable"])
def test_consume_with_a_timeout_rides_out_a_server_silent_after_a_reconnection(
    proxied: Any, key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reliable: bool
) -> None:
    """After its connection drops, consume(timeout=…) checks that the new one
    answers before its waits count again. With socket_timeout=None that check
    (an LLEN) waited for as long as a server that accepts connections stayed
    silent: one warning, then nothing. It is now a wait of a hundredth of a
    second, whose reply the client waits for only its margin: the consumer
    warns and retries while the server is silent, and goes on after."""
    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)  # a quicker test; the margin is not its subject
    proxy, _, direct = proxied
    queue = HotQueue(key, host="127.0.0.1", port=proxy.port, serializer=None)  # socket_timeout=None
    assert len(queue) == 0
    thread, outcome = _in_thread(lambda: next(iter(queue.consume(timeout=60, reliable=reliable))))
    wait_for("the consumer to wait", lambda: proxy.connections() >= 1, timeout=5)
    time.sleep(0.5)
    proxy.silent = True
    proxy.close_idle()  # the wait's connection drops; the next ones are never answered
    wait_for("three warnings", lambda: caplog.text.count("retrying") >= 3, timeout=3 * (1 + 1.0) + SLACK)
    assert caplog.text.count("retrying") >= 3, caplog.text
    proxy.silent = False
    direct.rpush(queue.key, b"after the silence")
    thread.join(3 * (1 + 1.0) + SLACK)
    assert outcome == [b"after the silence"]
    queue.client.close()


@pytest.mark.parametrize("reliable", [False, True], ids=["plain", "reliable"])
def test_the_checks_a_stopped_server_runs_when_it_wakes_take_no_message(
    make_server: Any, key: str, monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """The checks a consume(timeout=…) sends on each new connection while
    the server is stopped (SIGSTOP: its kernel still accepts connections) are
    given up by the client after its margin, but run by the server when it
    wakes. A pop as the check would then take a message each, for a closed
    connection: lost. A BLMOVE of the queue onto itself moves nothing."""
    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)  # a quicker test; the margin is not its subject
    server = make_server()
    assert server.process is not None
    queue = HotQueue(key, port=server.port, serializer=None)  # socket_timeout=None, no set-up commands
    admin = resp.Client(port=server.port, socket_timeout=5)
    got: List[bytes] = []

    def consume() -> None:
        # Closed at once, not when garbage (PyPy): a reliable loop left gives its message back then.
        with contextlib.closing(queue.consume(timeout=60, reliable=reliable)) as messages:
            for message in messages:
                got.append(message)
                if len(got) == 5:
                    return

    thread, outcome = _in_thread(consume)
    try:
        def waiting_id() -> Optional[str]:
            for line in admin.execute("CLIENT", "LIST").decode().splitlines():
                fields = dict(field.split("=", 1) for field in line.split())
                if fields.get("cmd") in ("blpop", "blmove"):  # the consumer's: the admin never waits
                    return fields["id"]
            return None

        wait_for("the consumer to wait", lambda: waiting_id() is not None, timeout=5)
        admin.execute("CLIENT", "KILL", "ID", waiting_id())
        admin.rpush(queue.key, *[f"m{n}".encode() for n in range(5)])
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(4)  # checks sent, given up on, left for the server
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        thread.join(20)
        assert outcome == [None], outcome
        assert got == [f"m{n}".encode() for n in range(5)], got
        # Reliable: leaving the loop gives back the message held, the last.
        assert admin.execute("LRANGE", queue.key, 0, -1) == ([b"m4"] if reliable else [])
    finally:
        admin.close()
        queue.client.close()


def test_client_unblock_does_not_end_an_endless_wait(redis_url: str, key: str) -> None:
    """CLIENT UNBLOCK ends a BLPOP as if it timed out: a get(block=True) with
    no timeout has none, and goes on waiting (HotQueue 0.2.8 returned None)."""
    queue = HotQueue(key, serializer=None, client=resp.Client.from_url(redis_url, client_name="endless"))
    admin = resp.Client.from_url(redis_url)
    try:
        thread, outcome = _in_thread(lambda: queue.get(block=True))

        def blocked_id() -> Optional[str]:
            for line in admin.execute("CLIENT", "LIST").decode().splitlines():
                fields = dict(field.split("=", 1) for field in line.split())
                if fields.get("name") == "endless" and fields.get("cmd") == "blpop":
                    return fields["id"]
            return None

        wait_for("the get to block", lambda: blocked_id() is not None, timeout=5)
        client_id = blocked_id()
        assert client_id is not None
        assert admin.execute("CLIENT", "UNBLOCK", client_id) == 1
        thread.join(0.3)
        assert not outcome, "CLIENT UNBLOCK ended get(block=True) without a message"
        admin.rpush(queue.key, b"then a message")
        thread.join(5)
        assert outcome == [b"then a message"]
    finally:
        admin.delete(queue.key)
        admin.close()
        queue.client.close()


def _busy_script(seconds: float, push_to: Optional[str] = None) -> Tuple[str, List[Any]]:
    # A script that runs for ``seconds`` (after pushing one message, if told
    # where): the server answers other clients BUSY meanwhile.
    script = """
        if KEYS[1] then redis.call('RPUSH', KEYS[1], 'pushed before the stall') end
        local start = redis.call('TIME')
        while true do
            local now = redis.call('TIME')
            if (now[1] - start[1]) + (now[2] - start[2]) / 1e6 > tonumber(ARGV[1]) then return 1 end
        end
    """
    return script, ([1, push_to] if push_to is not None else [0]) + [seconds]


@pytest.mark.slow
def test_consume_rides_out_a_script_past_the_busy_threshold(
    make_server: Callable[..., RedisServer], key: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pop sent while a long script runs gets BUSY: nothing was run, and
    consume() waits it out, as it does a server still loading."""
    monkeypatch.setattr("hotqueue.queue.WAIT_SLICE", 1)
    # The pop in flight as the script starts gives up before it ends.
    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)
    server = make_server(args=["--busy-reply-threshold", "100"])
    queue = HotQueue(key, host="127.0.0.1", port=server.port, serializer=None, client_name="consumer")
    admin = resp.Client("127.0.0.1", server.port)
    try:
        thread, outcome = _in_thread(lambda: next(queue.consume()))
        wait_for("the consumer to connect", lambda: b"name=consumer" in admin.execute("CLIENT", "LIST"), timeout=5)
        script, args = _busy_script(3.0)
        assert admin.execute("EVAL", script, *args) == 1  # the pop in flight times out, the next gets BUSY
        admin.rpush(queue.key, b"after the script")
        thread.join(5)
        assert outcome == [b"after the script"]
        assert "BUSY" in caplog.text
    finally:
        admin.close()
        queue.client.close()


@pytest.mark.slow
@pytest.mark.parametrize("timeout, pushed_at, stall", [(1, 0.5, 3.0), (4, 1.0, 5.5)])
def test_a_value_popped_in_a_stall_past_the_timeout_is_still_received(
    make_server: Callable[..., RedisServer], key: str, timeout: int, pushed_at: float, stall: float
) -> None:
    """A server stalled past a BLPOP's timeout may already have popped the
    value it is about to send: the client waits as long again, and 5 s at
    least, before it gives up on it (and the value with it); it waited 1 s.
    A script under the default 5 s busy threshold is such a stall."""
    server = make_server()
    queue = HotQueue(key, host="127.0.0.1", port=server.port, serializer=None)
    admin = resp.Client("127.0.0.1", server.port)
    try:
        assert len(queue) == 0
        started = time.monotonic()
        thread, outcome = _in_thread(lambda: queue.get(block=True, timeout=timeout))
        time.sleep(pushed_at)
        # Handed over when the script ends, past the timeout and 1 s more
        # (the margin before), before the timeout and as long again or 5 s.
        assert timeout + 1 < pushed_at + stall < timeout + max(timeout, 5) - 1
        script, args = _busy_script(stall, push_to=queue.key)
        admin.execute("EVAL", script, *args)
        thread.join(5)
        assert outcome == [b"pushed before the stall"], (outcome, time.monotonic() - started)
        assert admin.llen(queue.key) == 0
    finally:
        admin.delete(queue.key)
        admin.close()
        queue.client.close()


def test_a_wait_of_weeks_over_tls_waits(make_server: Callable[..., RedisServer], key: str) -> None:
    """Over TLS the socket's own timeout waits, in milliseconds held in a C
    int: the client's deadline for this wait (twice 24.9 days) is past 2**32
    ms, which wrapped round to a wait of 0.7 s and ended it."""
    server = make_server(tls=True)
    with resp.Client("localhost", server.port, ssl_ca_certs=f"{server.tls_dir}/ca.crt") as client:
        queue = HotQueue(key, serializer=None, client=client)
        assert len(queue) == 0
        thread, outcome = _in_thread(lambda: queue.get(block=True, timeout=2_147_484))  # 24.9 days
        thread.join(1.0)
        assert not outcome, "the wait ended at once"
        with resp.Client("localhost", server.port, ssl_ca_certs=f"{server.tls_dir}/ca.crt") as other:
            other.rpush(queue.key, b"weeks early")
        thread.join(5)
        assert outcome == [b"weeks early"]


def test_a_tls_wait_longer_than_one_socket_timeout_goes_on(
    make_server: Callable[..., RedisServer], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wait longer than a socket's own timeout may be (24.8 days; 0.3 s
    here) is made of several: each that ends before the deadline is followed
    by another, and a value that comes after the first is received."""
    monkeypatch.setattr("resp.connection._MAX_SOCKET_TIMEOUT", 0.3)
    server = make_server(tls=True)
    with resp.Client("localhost", server.port, ssl_ca_certs=f"{server.tls_dir}/ca.crt") as client:
        queue = HotQueue(key, serializer=None, client=client)
        started = time.monotonic()
        assert queue.get(block=True, timeout=1) is None  # the server's own answer, at 1 s
        assert time.monotonic() - started >= 0.9
        thread, outcome = _in_thread(lambda: queue.get(block=True, timeout=3))
        time.sleep(0.8)
        with resp.Client("localhost", server.port, ssl_ca_certs=f"{server.tls_dir}/ca.crt") as other:
            other.rpush(queue.key, b"after two socket timeouts")
        thread.join(5)
        assert outcome == [b"after two socket timeouts"]


def test_silent_server_during_handshake_times_out(proxied: Any) -> None:
    # A new connection that must AUTH and SELECT before its first command.
    proxy, _, _ = proxied
    proxy.silent = True
    client = resp.Client("127.0.0.1", proxy.port, password="pw", db=1, socket_timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(resp.TimeoutError):
        client.ping()
    assert time.monotonic() - start < TIMEOUT + SLACK


def test_silent_server_during_tls_handshake_times_out(proxied: Any) -> None:
    proxy, _, _ = proxied
    proxy.silent = True
    client = resp.Client("127.0.0.1", proxy.port, ssl=True, socket_timeout=TIMEOUT)
    start = time.monotonic()
    with pytest.raises(resp.TimeoutError):
        client.ping()
    assert time.monotonic() - start < TIMEOUT + SLACK


def _random_run(proxy: FaultProxy, client: resp.Client, direct: resp.Client, count: int, seed: int) -> Counter:
    """``count`` commands, each with a unique value, faults at random points.

    Every reply that comes back is checked against what its own command must
    return; every failure against the fault that caused it; and what the
    server holds against what was (not) resent. Returns the counts. Safe to
    run in several threads at once on one client: each fault is tied to its
    command by the command's unique value.
    """
    rng = random.Random(seed)
    prefix = f"faults-{uuid.uuid4().hex}:"
    faults: list = [None] * 50 + ["cut_before"] * 8 + ["cut_after"] * 8 + ["cut_mid"] * 5
    faults += ["reset"] * 4 + ["fragment"] * 14 + ["delay-short"] * 9 + ["delay-long"] * 1
    timeout = client.socket_timeout or TIMEOUT
    checked = failed = stalled = 0
    pushed = {}  # key -> whether the RPUSH must have run (None: either)
    proxy.fragment_gap = 0.0
    for i in range(count):
        uid = f"{seed}-{i}-{rng.getrandbits(64):x}"
        fault = rng.choice(faults)
        if fault == "delay-short":
            proxy.inject(("delay", timeout / 20), uid.encode())
        elif fault == "delay-long":
            proxy.inject(("delay", timeout * 1.5), uid.encode())
        elif fault is not None:
            proxy.inject(fault, uid.encode())
        may_fail = fault in ("cut_before", "cut_after", "cut_mid", "reset", "delay-long")
        kind = rng.choice(["echo", "echo", "rpush", "lpop", "pipeline"])
        start = time.monotonic()
        try:
            if kind == "echo":
                assert client.execute("ECHO", uid) == uid.encode()
            elif kind == "rpush":
                key = prefix + uid
                pushed[key] = None if may_fail else True
                assert client.rpush(key, uid) == 1
                pushed[key] = True
            elif kind == "lpop":
                key = prefix + "pop:" + uid
                direct.rpush(key, uid)
                assert client.lpop(key) == uid.encode()
                assert direct.llen(key) == 0
            else:
                pipe = client.pipeline()
                for n in range(3):
                    pipe.command("ECHO", f"{uid}/{n}")
                assert pipe.execute() == [f"{uid}/{n}".encode() for n in range(3)]
            checked += 1
            assert not may_fail, f"command {i} ({kind}) survived fault {fault}"
        except (resp.ConnectionError, resp.TimeoutError) as exc:
            failed += 1
            if not may_fail and isinstance(exc, resp.TimeoutError) and time.monotonic() - start >= timeout:
                # No fault, but the machine stalled past the 0.1 s deadline:
                # a late reply, not a misdelivered one. Counted and bounded below.
                stalled += 1
                pushed.update({prefix + uid: None} if kind == "rpush" else {})
                continue
            assert may_fail, f"command {i} ({kind}) failed without a fault: {exc!r}"
            if fault == "delay-long":
                assert isinstance(exc, resp.TimeoutError)
            else:
                # A cut shows as ConnectionError, or as TimeoutError when a
                # loaded machine runs the proxy's closing thread after the
                # client's (short) deadline; either way the connection is gone.
                assert isinstance(exc, (resp.ConnectionError, resp.TimeoutError))
            if kind == "lpop" and fault == "cut_before":
                assert direct.llen(key) == 1  # never popped, so not lost
        assert time.monotonic() - start < timeout * 2 + SLACK
        if proxy.pending(uid.encode()):
            pytest.fail(f"fault {fault} was not applied to command {i}")
    # No RPUSH was resent: each key holds its one value exactly once, or
    # nothing when the request never reached the server (cut_before).
    for key, must in pushed.items():
        held = direct.execute("LRANGE", key, 0, -1)
        one = [key[len(prefix):].encode()]
        assert held == one or (must is None and held == []), (key, held)
    assert stalled <= max(count // 50, 2), f"{stalled} of {count} commands without a fault timed out"
    return Counter(commands=count, checked=checked, failed=failed, rpush_keys=len(pushed))


def _summary(proxy: FaultProxy, counts: Counter, seed: int, threads: int) -> str:
    injected = sum(proxy.injected.values())
    details = ", ".join(f"{k} {v}" for k, v in sorted(proxy.injected.items()))
    return (
        f"fault run (seed {seed}, {threads} thread(s) on one client): {counts['commands']} commands, "
        f"{injected} faults injected ({details}), {counts['checked']} replies checked (each its own "
        f"command's), {counts['failed']} failures raised (each by its fault), "
        f"{counts['rpush_keys']} RPUSH keys each holding at most one copy"
    )


def test_randomized_faults_never_misdeliver_a_reply(proxied: Any) -> None:
    proxy, _, direct = proxied
    with resp.Client("127.0.0.1", proxy.port, socket_timeout=0.1) as client:
        counts = _random_run(proxy, client, direct, RANDOM_COMMANDS, SEED)
    assert counts["commands"] >= 2000 or "HOTQUEUE_FAULT_COMMANDS" in os.environ
    report("faults", _summary(proxy, counts, SEED, 1))  # shown with -s


def test_randomized_faults_in_threads_sharing_a_client(proxied: Any) -> None:
    # Four threads on one client (one pool): a fault on one thread's
    # connection must not disturb, or reach, another thread's replies. The
    # pool is bounded at one connection a thread, so a connection that a
    # fault failed to give back would make a command wait, and fail.
    proxy, _, direct = proxied
    threads, each = 4, max(RANDOM_COMMANDS // 8, 100)
    results: List[Counter] = []
    errors: List[BaseException] = []

    def run(n: int) -> None:
        try:
            results.append(_random_run(proxy, client, direct, each, SEED + 1 + n))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with resp.Client("127.0.0.1", proxy.port, socket_timeout=0.1, max_connections=threads) as client:
        workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    if errors:
        raise errors[0]
    assert len(results) == threads
    report("faults", _summary(proxy, sum(results, Counter()), SEED + 1, threads))


def test_random_faults_over_tls(make_server: Callable[..., RedisServer]) -> None:
    # Encrypted bytes cannot be matched to a command, so each fault falls on
    # whatever comes next: a command, or the handshake of a new connection.
    # Either way a reply reaches only its own command, and only resp errors
    # come out (never ssl.SSLError), by the deadline.
    server = make_server(tls=True)
    rng = random.Random(SEED)
    faults: list = [None] * 8 + ["cut_before", "cut_after", "cut_mid", "reset", "fragment", "fragment",
                                 ("delay", 0.01), ("delay", 0.2)]
    checked = failed = stalled = 0
    with FaultProxy(server.port) as proxy, resp.Client(
        "localhost", proxy.port, ssl_ca_certs=f"{server.tls_dir}/ca.crt", socket_timeout=0.1
    ) as client:
        for i in range(300):
            fault = rng.choice(faults)
            if fault is not None:
                proxy.inject(fault)
            uid = f"tls-{i}-{rng.getrandbits(64):x}"
            applied = sum(proxy.injected.values())
            start = time.monotonic()
            try:
                assert client.execute("ECHO", uid) == uid.encode()
                checked += 1
            except (resp.ConnectionError, resp.TimeoutError) as exc:
                failed += 1
                if sum(proxy.injected.values()) == applied:
                    # No fault, but the machine stalled past the 0.1 s deadline
                    # (a handshake after each cut): a late reply, not a
                    # misdelivered one. Counted and bounded below.
                    assert isinstance(exc, resp.TimeoutError) and time.monotonic() - start >= 0.1, (
                        f"command {i} failed without a fault: {exc!r}")
                    stalled += 1
            assert time.monotonic() - start < 0.1 * 2 + SLACK
        proxy.clear()
        assert client.execute("ECHO", "after") == b"after"
    assert checked and failed
    assert stalled <= 6, f"{stalled} of 300 commands without a fault timed out"
    report("faults", f"fault run over TLS (seed {SEED}): 300 commands, {sum(proxy.injected.values())} faults "
                     f"applied to commands or handshakes, {checked} replies checked (each its own command's), "
                     f"{failed} resp errors raised")
