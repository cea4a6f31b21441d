"""Workers across a ``redis-server`` crash (SIGKILL) or shutdown (SIGTERM) and
restart on the same port.

While the server is down ``put`` raises ``resp.ConnectionError``; ``consume()``
and ``worker`` log a warning, wait 0.1 s doubling to 5 s between attempts (no
busy loop: the attempts are counted), and once the server is back every
message pushed after the restart is processed exactly once.
"""

import logging
import re
import socket
import threading
import time
from typing import Any, Callable, Iterator, List

import pytest
from faultproxy import FaultProxy, report
from redis_server import RedisServer, ServerStartError, free_port

import resp
from hotqueue import HotQueue
from hotqueue.queue import BACKOFF_FIRST, BACKOFF_MAX

OUTAGE = 1.6  # seconds the server stays down
STOP = "stop"


def max_attempts(seconds: float) -> int:
    """How many connection attempts the backoff schedule allows in ``seconds``
    (one at once, then after 0.1, 0.2, 0.4 … s), plus one for scheduling slack."""
    attempts, elapsed, wait = 1, 0.0, BACKOFF_FIRST
    while elapsed + wait <= seconds:
        elapsed += wait
        attempts += 1
        wait = min(wait * 2, BACKOFF_MAX)
    return attempts + 1


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the consumer")
        time.sleep(0.01)


def warnings(caplog: Any, queue: HotQueue) -> List[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "hotqueue" and r.levelno == logging.WARNING and repr(queue.name) in r.getMessage()]


@pytest.fixture
def stop_later() -> Iterator[Callable[[HotQueue], None]]:
    """Register a queue whose consumer must get a STOP when the test ends,
    even a failed one, so no thread outlives its test."""
    queues: List[HotQueue] = []
    yield queues.append
    for queue in queues:
        try:
            queue.put(STOP)
        except resp.RespError:
            pass
        queue.client.close()


def take_down(server: RedisServer, how: str) -> None:
    if how == "SIGKILL":
        server.kill()
    else:
        server.stop()  # SIGTERM: a clean shutdown


def check_outage(queue: HotQueue, caplog: Any) -> int:
    """Hold the outage; return how many warnings the consumer logged in it."""
    before = len(warnings(caplog, queue))
    with pytest.raises(resp.ConnectionError) as info:
        queue.put("while down")
    assert isinstance(info.value, ConnectionError)
    assert f":{queue.client.address.port}" in str(info.value)  # says where
    time.sleep(OUTAGE)
    return len(warnings(caplog, queue)) - before


def check_backoff(caplog: Any, queue: HotQueue) -> None:
    waits = [float(m.group(1)) for r in warnings(caplog, queue)
             if (m := re.search(r"retrying in ([0-9.]+) s", r.getMessage()))]
    assert waits and waits[0] == pytest.approx(BACKOFF_FIRST)
    for earlier, later in zip(waits, waits[1:]):
        assert later == pytest.approx(min(earlier * 2, BACKOFF_MAX))


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_consume_survives_restart(make_server: Any, stop_later: Any, key: str, caplog: Any, how: str) -> None:
    caplog.set_level(logging.WARNING, logger="hotqueue")
    server = make_server()
    queue = HotQueue(key, host="127.0.0.1", port=server.port, socket_timeout=2)
    got: List[Any] = []

    def run() -> None:
        for msg in queue.consume():  # blocks forever: only STOP ends it
            if msg == STOP:
                return
            got.append(msg)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stop_later(queue)
    queue.put(*range(20))
    wait_until(lambda: len(got) == 20)

    take_down(server, how)
    attempts = check_outage(queue, caplog)
    assert 1 <= attempts <= max_attempts(OUTAGE), attempts
    server.start()

    after = [f"after-{n}" for n in range(200)]
    for n in range(0, 200, 10):
        queue.put(*after[n : n + 10])
    queue.put(STOP)
    thread.join(15)
    assert not thread.is_alive()
    assert got == list(range(20)) + after  # each once, in order
    assert len(queue) == 0
    queue.client.close()
    check_backoff(caplog, queue)
    report("restart", f"restart ({how}, consume()): down {OUTAGE} s, {attempts} failed attempts logged "
           f"(the backoff allows at most {max_attempts(OUTAGE)}), put raised ConnectionError, "
           f"{len(after)} messages pushed after the restart each processed once")


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_worker_survives_restart(make_server: Any, stop_later: Any, key: str, caplog: Any, how: str) -> None:
    # Through a proxy that stays up, so that every reconnection attempt is a
    # TCP connection it can count.
    caplog.set_level(logging.WARNING, logger="hotqueue")
    server = make_server()
    with FaultProxy(server.port) as proxy:
        queue = HotQueue(key, host="127.0.0.1", port=proxy.port)
        got: List[Any] = []

        class Stop(Exception):
            pass

        @queue.worker
        def handle(msg: Any) -> None:
            if msg == STOP:
                raise Stop
            got.append(msg)

        def run() -> None:
            try:
                handle()
            except Stop:
                pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # Straight to the server, so that it works after the proxy is gone.
        stop_later(HotQueue(key, host="127.0.0.1", port=server.port))
        queue.put("before")
        wait_until(lambda: got == ["before"])

        take_down(server, how)
        accepted = proxy.accepted
        attempts = check_outage(queue, caplog)
        connections = proxy.accepted - accepted - 1  # the put's own attempt
        assert 1 <= connections <= max_attempts(OUTAGE), connections
        # One warning per attempt, and one more when the connection that was
        # waiting in BLPOP broke; an attempt at either edge of the window may
        # be counted on one side and not the other.
        assert abs(attempts - connections) <= 2, (attempts, connections)
        server.start()

        after = list(range(300))
        queue.put(*after)
        queue.put(STOP)
        thread.join(15)
        assert not thread.is_alive()
        assert got == ["before"] + after
        check_backoff(caplog, queue)
        queue.client.close()
        report("restart", f"restart ({how}, @worker): down {OUTAGE} s, {connections} TCP connection attempts "
               f"(the backoff allows at most {max_attempts(OUTAGE)}), put raised ConnectionError, "
               f"{len(after)} messages pushed after the restart each processed once")


def test_consume_timeout_counts_only_on_a_live_connection(make_server: Any, key: str) -> None:
    timeout = 2  # shorter than the outage
    server = make_server()
    queue = HotQueue(key, host="127.0.0.1", port=server.port, socket_timeout=2)
    got: List[Any] = []
    thread = threading.Thread(target=lambda: got.extend(queue.consume(timeout=timeout)), daemon=True)
    thread.start()
    queue.put("before")
    wait_until(lambda: got == ["before"])

    # Down for 4 s: the consumer's attempts fail about 0, 0.1, 0.3, 0.7, 1.5
    # and 3.1 s in (the last after its timeout) and the one at 6.3 s succeeds.
    server.stop()  # while the consumer waits in BLPOP
    time.sleep(4)
    assert thread.is_alive()  # the outage did not use up its timeout
    server.start()
    queue.put("after")
    thread.join(20)  # the backoff's next attempt, then one timeout
    assert not thread.is_alive()
    assert got == ["before", "after"]
    assert len(queue) == 0
    queue.client.close()


@pytest.mark.parametrize("reliable", [False, True], ids=["plain", "reliable"])
def test_a_timeout_counts_waits_that_a_dropped_link_cut_short(make_server: Any, key: str, reliable: bool) -> None:
    """The link drops every 0.7 s (a proxy that closes idle connections)
    while ``consume(timeout=2)`` waits on an empty queue: the waits cut short
    add up, and it ends once 2 s of them have passed. (Each reconnection
    started the 2 s afresh: it never ended.)"""
    server = make_server()
    queue = HotQueue(key, host="127.0.0.1", port=server.port, socket_timeout=2)
    admin = resp.Client("127.0.0.1", server.port)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (list(queue.consume(timeout=2, reliable=reliable)), done.set()),
                              daemon=True)
    started = time.monotonic()
    thread.start()
    while not done.wait(0.7) and time.monotonic() - started < 20:
        for line in admin.execute("CLIENT", "LIST").decode().splitlines():
            fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
            if fields.get("cmd") in ("blpop", "blmove"):
                admin.execute("CLIENT", "KILL", "ID", fields["id"])
    took = time.monotonic() - started
    admin.close()
    queue.client.close()
    assert done.is_set(), "consume never timed out"
    assert 2 <= took < 10, took


@pytest.mark.parametrize("reliable", [False, True], ids=["plain", "reliable"])
def test_a_wait_cut_short_after_a_message_counts_toward_the_timeout(make_server: Any, key: str,
                                                                     reliable: bool) -> None:
    """``consume(timeout=3.0)`` gets a message at once, and its next wait is
    cut 2.5 s in: those 2.5 s count, and it ends half a second after the
    reconnection. (A reply marked the link alive only after a failure: the cut
    wait did not count, and the 3 s started again.)"""
    server = make_server()
    queue = HotQueue(key, host="127.0.0.1", port=server.port, socket_timeout=2)
    admin = resp.Client("127.0.0.1", server.port)
    queue.put("first")
    got: List[Any] = []
    done = threading.Event()

    def consume() -> None:
        for message in queue.consume(timeout=3.0, reliable=reliable):
            got.append(message)
        done.set()

    started = time.monotonic()
    threading.Thread(target=consume, daemon=True).start()
    wait_until(lambda: got == ["first"])
    time.sleep(max(0.0, started + 2.5 - time.monotonic()))
    killed = 0
    for line in admin.execute("CLIENT", "LIST").decode().splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if fields.get("cmd") in ("blpop", "blmove"):
            killed += admin.execute("CLIENT", "KILL", "ID", fields["id"])
    done.wait(15)
    took = time.monotonic() - started
    admin.close()
    queue.client.close()
    assert killed == 1 and done.is_set() and got == ["first"]
    assert 2.9 <= took < 4.6, took  # 2.5 s, the first backoff (0.1 s) and the 0.5 s left; before: 5.6 s


@pytest.mark.parametrize("reliable", [False, True], ids=["plain", "reliable"])
def test_the_backoff_grows_on_a_link_that_answers_but_cuts_every_wait(
        make_server: Any, key: str, caplog: Any, reliable: bool) -> None:
    """Every blocking pop is cut as it is sent, while other commands (the
    probe after each reconnection) pass: with a timeout, the backoff still
    doubles, as the contract says. (The probe's answer set it back to 0.1 s
    each time: ten reconnections a second.)"""
    caplog.set_level(logging.WARNING, logger="hotqueue")
    server = make_server()
    with FaultProxy(server.port) as proxy:
        for _ in range(1000):
            proxy.inject("cut_before", b"BLMOVE" if reliable else b"BLPOP")
        queue = HotQueue(key, host="127.0.0.1", port=proxy.port)
        consuming = queue.consume(timeout=60, reliable=reliable)
        consumer = threading.Thread(target=lambda: next(consuming, None), daemon=True)
        consumer.start()
        time.sleep(OUTAGE)
        logged = len(warnings(caplog, queue))
        proxy.clear()
        HotQueue(key, host="127.0.0.1", port=server.port).put("end")  # the consumer's last message
        consumer.join(15)
    assert not consumer.is_alive()
    assert 1 <= logged <= max_attempts(OUTAGE), logged
    check_backoff(caplog, queue)


def test_backoff_doubles_up_to_the_cap(monkeypatch: Any) -> None:
    # Nothing listens on the port, so every pop fails at once; the 8th sleep
    # is interrupted, which ends consume() quietly.
    delays: List[float] = []

    def record(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr("hotqueue.queue.time.sleep", record)
    queue = HotQueue("backoff", host="127.0.0.1", port=free_port(), socket_connect_timeout=2)
    assert list(queue.consume()) == []
    expected: List[float] = []
    wait = BACKOFF_FIRST
    for _ in range(8):
        expected.append(wait)
        wait = min(wait * 2, BACKOFF_MAX)
    assert expected[-2:] == [BACKOFF_MAX, BACKOFF_MAX]  # the schedule reaches the cap
    assert delays == pytest.approx(expected)
    assert (BACKOFF_FIRST, BACKOFF_MAX) == (0.1, 5.0)  # SPEC: 0.1 s doubling to 5 s
    queue.client.close()


def test_max_attempts_matches_the_schedule() -> None:
    # 0, 0.1, 0.3, 0.7, 1.5: five attempts in 1.6 s, plus the slack of one.
    assert max_attempts(1.6) == 6
    assert max_attempts(0.05) == 2


def occupy(server: RedisServer, count: int) -> List[socket.socket]:
    """Open ``count`` raw connections that the server has taken as clients."""
    hogs: List[socket.socket] = []
    while len(hogs) < count:
        hog = socket.create_connection((server.host, server.port), timeout=5)
        hog.sendall(b"PING\r\n")
        if hog.recv(100).startswith(b"-ERR max number of clients"):
            hog.close()  # the fixture's own probe was still counted: try again
            time.sleep(0.05)
            continue
        hogs.append(hog)
    return hogs


@pytest.mark.parametrize("password", [None, "secret"])
def test_a_server_at_maxclients_is_ridden_out(make_server: Any, stop_later: Any, key: str, caplog: Any,
                                              password: Any) -> None:
    """A server that has ``maxclients`` clients greets a new connection with
    an error and closes it: ``put`` raises a ``ConnectionError`` (not an
    ``AuthenticationError`` when a password is set), and ``consume()`` waits
    until there is room, as it waits out an outage."""
    caplog.set_level(logging.WARNING, logger="hotqueue")
    server = make_server(args=["--maxclients", "2"] + (["--requirepass", password] if password else []))
    queue = HotQueue(key, host="127.0.0.1", port=server.port, password=password, socket_timeout=2)
    hogs = occupy(server, 2)
    got: List[Any] = []
    failure: List[BaseException] = []

    def run() -> None:
        try:
            for msg in queue.consume():
                if msg == STOP:
                    return
                got.append(msg)
        except BaseException as exc:  # reported below, not lost in the thread
            failure.append(exc)

    try:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        stop_later(queue)
        wait_until(lambda: len(warnings(caplog, queue)) >= 2 or bool(failure))
        assert not failure, failure
        with pytest.raises(resp.ConnectionError) as info:
            queue.put("turned away")
        assert not isinstance(info.value, resp.AuthenticationError)
    finally:
        for hog in hogs:
            hog.close()
    deadline = time.monotonic() + 10
    while True:  # the server notices the closed connections on its next turn
        try:
            queue.put("served")
            break
        except resp.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    wait_until(lambda: got == ["served"] or bool(failure))
    assert not failure and got == ["served"]


def test_the_private_servers_never_share_a_port() -> None:
    # The kernel may give a port it just freed to the next bind(0): two
    # servers made before either started then shared one (a sentinel set of
    # three ran with two, in CI).
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_private_server_does_not_take_another_listener_for_itself() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        server = RedisServer(port=taken.getsockname()[1])
        try:
            with pytest.raises(ServerStartError, match="exited"):
                server.start(timeout=10)
        finally:
            server.cleanup()
