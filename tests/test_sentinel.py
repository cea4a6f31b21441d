"""resp.SentinelClient and HotQueue behind Redis Sentinel: a real primary,
replica and three sentinels (``cluster_fixtures.SentinelSet``), plus a tiny
socket server playing a sentinel where a test needs it to lie."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest
from cluster_fixtures import NO_SYNC_DELAY, SentinelServer, SentinelSet, run_example, scaling_out_examples, wait_for
from redis_server import RedisServer, free_port, reap_child

import resp
import resp.sentinel
from hotqueue import HotQueue


@pytest.fixture(scope="module")
def sentinels() -> Iterator[SentinelSet]:
    # Under heavy load a sentinel can miss the replica for a long while: one
    # more try on fresh ports before failing (with the logs of both tries).
    errors = []
    for _ in range(2):
        try:
            servers = SentinelSet("mymaster").start()
            break
        except Exception as exc:
            errors.append(str(exc))
    else:
        pytest.fail("cannot start redis-server --sentinel for the tests: " + "\n".join(errors), pytrace=False)
    yield servers
    servers.stop()


def unique(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def closed_port() -> int:
    """A port nothing listens on, never handed to a server of these tests."""
    return free_port()


class TinyServer:
    """A listening socket on a free loopback port whose thread hands each
    connection to ``answer``; ``close()`` stops it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        # shutdown() first: close() alone leaves the serving thread's accept()
        # taking connections meant for a later test's fake on the same port.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class FakeSentinel(TinyServer):
    """Answers ``SENTINEL get-master-addr-by-name`` with the next port of
    ``ports`` (the last one repeats), like a sentinel whose view changes."""

    def __init__(self, ports: List[int], raw: Optional[bytes] = None) -> None:
        self.ports = list(ports)
        self.raw = raw  # a reply to send instead, as it is
        self.asked = 0
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        with conn:
            reader = resp.Reader()
            command = False
            while command is False:
                data = conn.recv(4096)
                if not data:
                    break
                reader.feed(data)
                command = reader.gets()
            port = self.ports[min(self.asked, len(self.ports) - 1)]
            self.asked += 1
            reply = b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n" % (len(str(port)), port)
            conn.sendall(self.raw if self.raw is not None else reply)


def test_resolves_the_primary_and_promotes_the_sentinel_that_answered(sentinels: SentinelSet) -> None:
    dead = ("127.0.0.1", closed_port())
    client = resp.SentinelClient([dead, *sentinels.addresses], "mymaster")
    key = unique()
    assert client.rpush(key, "x") == 1
    assert client.sentinels == [sentinels.addresses[0], dead, *sentinels.addresses[1:]]
    with resp.Client("127.0.0.1", sentinels.primary.port) as primary:
        assert primary.execute("LRANGE", key, 0, -1) == [b"x"]
    assert client.primary_address() == ("127.0.0.1", sentinels.primary.port)
    client.delete(key)
    client.close()


def test_a_silent_sentinel_costs_only_its_timeout(sentinels: SentinelSet) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        client = resp.SentinelClient(
            [silent.getsockname(), sentinels.addresses[1]], "mymaster", sentinel_timeout=0.3
        )
        started = time.monotonic()
        assert client.primary_address()[1] == sentinels.primary.port
        assert 0.25 < time.monotonic() - started < 3
        assert client.sentinels[0] == sentinels.addresses[1]
    finally:
        silent.close()


def test_a_sentinel_that_answers_nonsense_is_passed_over(sentinels: SentinelSet) -> None:
    fakes = [FakeSentinel([0], raw) for raw in (b"$3\r\nfoo\r\n", b"*2\r\n$1\r\nh\r\n$1\r\nx\r\n",
                                                b"-ERR no\r\n", b"%1\r\n")]
    try:
        client = resp.SentinelClient([("127.0.0.1", f.port) for f in fakes] + sentinels.addresses[:1], "mymaster")
        assert client.primary_address() == ("127.0.0.1", sentinels.primary.port)
        assert client.sentinels[0] == sentinels.addresses[0]
        assert all(f.asked == 1 for f in fakes)
        only_fakes = resp.SentinelClient([("127.0.0.1", f.port) for f in fakes], "mymaster")
        with pytest.raises(resp.NoSentinelReachableError, match="not an address"):
            only_fakes.primary_address()
    finally:
        for fake in fakes:
            fake.close()


def test_distinct_errors_for_unknown_service_and_no_sentinel(sentinels: SentinelSet) -> None:
    unknown = resp.SentinelClient(sentinels.addresses, "no-such-service")
    with pytest.raises(resp.UnknownServiceError, match="no-such-service") as caught:
        unknown.ping()
    assert not isinstance(caught.value, resp.ConnectionError)
    nobody = resp.SentinelClient([("127.0.0.1", closed_port()), ("127.0.0.1", closed_port())], "mymaster")
    with pytest.raises(resp.NoSentinelReachableError, match="no sentinel answered") as no_sentinel:
        nobody.ping()
    assert isinstance(no_sentinel.value, resp.ConnectionError)  # consume() waits it out
    assert isinstance(no_sentinel.value, ConnectionError)


def test_an_address_that_is_not_a_primary_is_refused(sentinels: SentinelSet, monkeypatch) -> None:
    monkeypatch.setattr(resp.sentinel, "ROLE_ATTEMPTS", 3)
    liar = FakeSentinel([sentinels.replica.port])
    try:
        client = resp.SentinelClient([("127.0.0.1", liar.port)], "mymaster")
        with pytest.raises(resp.ConnectionError, match="not one"):
            client.ping()
        assert liar.asked == 3  # asked again after each ROLE said replica
    finally:
        liar.close()
    # A sentinel that catches up after one wrong answer: the client starts over.
    late = FakeSentinel([sentinels.replica.port, sentinels.primary.port])
    try:
        client = resp.SentinelClient([("127.0.0.1", late.port)], "mymaster")
        key = unique()
        assert client.rpush(key, "v") == 1 and late.asked == 2
        client.delete(key)
    finally:
        late.close()


def primary_and_replica(make_server) -> Tuple[resp.Client, resp.Client, FakeSentinel]:
    """Clients of a primary and of its synced replica, and a fake sentinel
    naming the primary."""
    first = make_server(args=NO_SYNC_DELAY)
    second = make_server(args=[*NO_SYNC_DELAY, "--replicaof", "127.0.0.1", str(first.port)])
    a, b = resp.Client("127.0.0.1", first.port), resp.Client("127.0.0.1", second.port)
    wait_for("the replica to sync", lambda: b"master_link_status:up" in b.execute("INFO", "replication"))
    return a, b, FakeSentinel([first.port])


def fail_over(a: resp.Client, b: resp.Client, fake: FakeSentinel) -> None:
    """The failover, by hand: the replica (b) becomes the primary, named by
    the sentinel, and the primary (a) its replica, which releases its
    blocked commands with UNBLOCKED."""
    fake.ports.append(b.address.port)
    fake.asked = len(fake.ports) - 1
    b.execute("REPLICAOF", "NO", "ONE")
    a.execute("REPLICAOF", "127.0.0.1", b.address.port)


def test_readonly_and_unblocked_re_resolve_and_retry_once(make_server) -> None:
    a, b, fake = primary_and_replica(make_server)
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "svc")
    key = unique()
    assert client.rpush(key, "1") == 1  # a pooled connection to `first` now
    popped: List[Optional[Tuple[bytes, bytes]]] = []
    blocked = threading.Thread(target=lambda: popped.append(client.blpop(key + "-b", 10)))
    assert client.lpop(key) == b"1"
    blocked.start()
    wait_for("BLPOP to block", lambda: b"blocked_clients:1" in a.execute("INFO", "clients"))
    fail_over(a, b, fake)  # UNBLOCKED for the BLPOP
    assert client.rpush(key, "2") == 1  # READONLY on the pooled connection, then once on `second`
    assert b.execute("LRANGE", key, 0, -1) == [b"2"]
    b.rpush(key + "-b", "woken")
    blocked.join(10)
    assert popped == [((key + "-b").encode(), b"woken")]
    for c in (a, b, client):
        c.close()
    fake.close()


class SlowlyDemoted(TinyServer):
    """A "primary" that passes the ROLE check, then answers every other
    command, ``delay`` seconds late, with READONLY: a primary demoted while
    the command was on its way."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        reader = resp.Reader()
        with conn, contextlib.suppress(OSError):
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                reader.feed(data)
                command = reader.gets()
                while command is not False:
                    if command[0].upper() == b"ROLE":
                        conn.sendall(b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
                    else:
                        time.sleep(self.delay)
                        conn.sendall(b"-READONLY You can't write against a read only replica.\r\n")
                    command = reader.gets()


@pytest.mark.parametrize("how", ["blpop", "execute", "blmove"])
def test_a_short_wait_refused_after_its_time_is_still_sent_to_the_new_primary(make_server, how: str) -> None:
    """The READONLY comes after the 0.05 s wait is over: the command ran
    nowhere, so the new primary gets it with the shortest wait, as a cluster's
    new owner does after MOVED; returning None unasked passed consume's
    check of a new connection on the old primary's refusal alone."""
    old = SlowlyDemoted(delay=0.2)
    new = make_server()
    fake = FakeSentinel([old.port, new.port])
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "svc")
    key = unique()
    client_of_new = resp.Client("127.0.0.1", new.port)
    client_of_new.rpush(key, "waiting")
    wait = {"blpop": lambda: client.blpop(key, 0.05), "execute": lambda: client.execute("BLPOP", key, 0.05),
            "blmove": lambda: client.blmove(key, key + "-to", 0.05)}[how]
    assert wait() in ([key.encode(), b"waiting"], (key.encode(), b"waiting"), b"waiting")
    assert fake.asked == 2
    for c in (client, client_of_new, fake, old):
        c.close()


@pytest.mark.parametrize("how", ["blpop", "execute", "blmove"])
def test_a_wait_released_by_a_failover_goes_on_for_the_time_left(make_server, how: str) -> None:
    # 3 s of a 4 s wait gone when the failover releases it: the wait sent to
    # the new primary is the 1 s left, not 4 s again.
    a, b, fake = primary_and_replica(make_server)
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "svc")
    key = unique()
    wait = {"blpop": lambda: client.blpop(key, 4), "execute": lambda: client.execute("BRPOP", key, 4.0),
            "blmove": lambda: client.blmove(key, key + "-to", 4)}[how]
    outcome: List[Any] = []

    def waiter() -> None:
        started = time.monotonic()
        outcome.append(wait())
        outcome.append(time.monotonic() - started)

    blocked = threading.Thread(target=waiter)
    blocked.start()
    wait_for("the wait to block", lambda: b"blocked_clients:1" in a.execute("INFO", "clients"))
    time.sleep(3)
    fail_over(a, b, fake)
    blocked.join(15)
    assert outcome[0] is None and 3.5 < outcome[1] < 6.0, outcome  # 7 s and more when it began again
    for c in (a, b, client):
        c.close()
    fake.close()


def test_hotqueue_through_a_sentinel_url(sentinels: SentinelSet) -> None:
    queue = HotQueue(unique("url"), url=sentinels.url)
    assert isinstance(queue.client, resp.SentinelClient)
    queue.put("a", "b")
    assert queue.get() == "a" and queue.get(block=True, timeout=1) == "b"
    shared = HotQueue(unique("client"), client=resp.SentinelClient(sentinels.addresses, "mymaster"))
    shared.put(1)
    assert len(shared) == 1 and list(shared.consume(timeout=0.1)) == [1]


def test_sentinel_urls(sentinels: SentinelSet) -> None:
    client = resp.SentinelClient.from_url(sentinels.url.replace("/0", "/2") + "?socket_timeout=3")
    assert (client.db, client.socket_timeout, client.service_name) == (2, 3.0, "mymaster")
    assert client.sentinels == sentinels.addresses
    key = unique()
    assert client.rpush(key, "in db 2") == 1
    with resp.Client("127.0.0.1", sentinels.primary.port, db=2) as primary:
        assert primary.execute("LPOP", key) == b"in db 2"
    secret = resp.from_url("redis+sentinel://:s3cret@127.0.0.1:1/mymaster")
    assert isinstance(secret, resp.SentinelClient) and "s3cret" not in repr(secret)
    with pytest.raises(resp.NoSentinelReachableError) as caught:
        secret.ping()
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="service name"):
        resp.from_url("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ValueError, match="redis\\+sentinel"):
        resp.SentinelClient.from_url("redis://127.0.0.1:6380")
    with pytest.raises(TypeError, match="host"):
        resp.SentinelClient(sentinels.addresses, "mymaster", host="127.0.0.1")


def test_a_sentinel_url_that_says_more_than_host_and_port_is_refused() -> None:
    """Its password, TLS, database or socket path were dropped without a word
    (``rediss://`` then reached the sentinel in plain text, ``unix://`` the
    default localhost:26379)."""
    assert resp.SentinelClient(["redis://127.0.0.1:26380/0"], "mymaster").sentinels == [("127.0.0.1", 26380)]
    for url in ["redis://:s3cret@127.0.0.1:26380", "rediss://127.0.0.1:26380", "redis://127.0.0.1:26380/7",
                "redis://127.0.0.1:26380?socket_timeout=1", "unix:///tmp/sentinel.sock"]:
        with pytest.raises(ValueError, match="sentinel_password") as caught:
            resp.SentinelClient([url], "mymaster")
        assert "s3cret" not in str(caught.value)


def test_a_url_fragment_is_dropped_and_the_service_name_decoded() -> None:
    """As in a redis:// URL: a fragment is no part of the last host, service
    or database, and the service name is percent-decoded like the rest."""
    client = resp.from_url("redis+sentinel://127.0.0.1:1/my%20master/2#section")
    assert isinstance(client, resp.SentinelClient)
    assert (client.service_name, client.db) == ("my master", 2)
    cluster = resp.from_url("redis+cluster://127.0.0.1:1,127.0.0.1:2#section")
    assert repr(cluster) == "<resp.ClusterClient seeds=127.0.0.1:1,127.0.0.1:2>"


def test_the_readme_example_runs(sentinels: SentinelSet) -> None:
    example = scaling_out_examples()[1]
    assert "SentinelClient" in example and "redis+sentinel://" in example
    ports = dict(zip([26380, 26381, 26382], [port for _, port in sentinels.addresses]))
    assert run_example(example, ports) == ["hello"]


@pytest.mark.parametrize("rules", [["+@all", "-@dangerous"], ["+@list", "+@connection"]])
def test_a_user_whose_acl_denies_role_works_through_the_sentinels(sentinels: SentinelSet, rules: List[str]) -> None:
    """ROLE is in @admin and @dangerous, which a least-privilege user (the ACL
    docs' "+@all -@dangerous", or one for queues only) may not run: such a user
    trusts the sentinels, and a replica they name is still caught by READONLY."""
    user = unique("worker")
    servers = (sentinels.primary.port, sentinels.replica.port)
    for port in servers:
        with resp.Client("127.0.0.1", port) as admin:
            admin.execute("ACL", "SETUSER", user, "on", ">s3cret", "~*", *rules)
    try:
        client = resp.SentinelClient(sentinels.addresses, "mymaster", username=user, password="s3cret")
        queue = HotQueue(unique("acl"), client=client)
        queue.put("via the sentinels")
        assert queue.get() == "via the sentinels"
        client.close()
        liar = FakeSentinel([sentinels.replica.port])
        try:
            to_replica = resp.SentinelClient([("127.0.0.1", liar.port)], "mymaster", username=user, password="s3cret")
            with pytest.raises(resp.ReadOnlyError):
                to_replica.rpush(queue.key, "never written")
            assert liar.asked == 2  # READONLY: asked again, sent once more, refused again
            to_replica.close()
            # A stale sentinel asked first: READONLY sends it to the back, as
            # ROLE would, and the command is sent once more where the others say.
            past_it = resp.SentinelClient([("127.0.0.1", liar.port), *sentinels.addresses], "mymaster",
                                          username=user, password="s3cret")
            assert past_it.rpush(queue.key, "past the stale sentinel") == 1
            assert past_it.sentinels[-1] == ("127.0.0.1", liar.port)
            assert past_it.lpop(queue.key) == b"past the stale sentinel"
            past_it.close()
        finally:
            liar.close()
    finally:
        for port in servers:
            with resp.Client("127.0.0.1", port) as admin:
                admin.execute("ACL", "DELUSER", user)


@pytest.fixture
def stuck(sentinels: SentinelSet, make_server: Callable[..., RedisServer]) -> Iterator[resp.SentinelClient]:
    """A client one thread of which is connecting to a frozen old primary
    (SIGSTOP: the kernel still accepts, nobody answers), while the sentinel
    names the real primary to whoever asks next."""
    frozen = make_server()
    assert frozen.process is not None
    fake = FakeSentinel([frozen.port, sentinels.primary.port])
    # db=1: the handshake (SELECT) is what waits on the frozen server.
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster", db=1, socket_connect_timeout=60,
                                 sentinel_timeout=10)  # a loaded machine may be slow to answer
    first = threading.Thread(target=client.ping, daemon=True)
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        first.start()
        wait_for("the first connection to ask the sentinel", lambda: fake.asked == 1)
        time.sleep(0.5)  # for it to connect and send SELECT
        yield client
    finally:
        frozen.process.send_signal(signal.SIGCONT)  # SELECT is answered: the first thread ends
        first.join(30)
        client.close()
        fake.close()


def test_a_connection_stuck_on_a_frozen_primary_holds_up_no_other_thread(stuck: resp.SentinelClient) -> None:
    """Another thread connects to the primary the sentinels name now, without
    waiting for the one stuck on the old primary."""
    done: List[bool] = []
    other = threading.Thread(target=lambda: done.append(stuck.ping()), daemon=True)
    other.start()
    other.join(10)
    assert done == [True], "another thread waited for the one stuck on the frozen primary"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # the point of the test
def test_a_child_forked_while_a_connection_is_stuck_can_connect(stuck: resp.SentinelClient) -> None:
    """A child forked while a thread is stuck connecting inherits no lock held
    by that thread: its first connection reaches the primary."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            status = 0 if stuck.ping() else 1
        except BaseException:
            traceback.print_exc()  # into the test's captured output
            status = 2
        finally:
            os._exit(status)
    status = reap_child(pid, 15)
    if status is None:
        pytest.fail("the forked child hung on its first connection")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("host, port", [(b"\xff\xfe", b"6380"), (b"", b"6380"), (b"127.0.0.1", b"0"),
                                        (b"127.0.0.1", b"65536"), (b"127.0.0.1", b"99999"),
                                        (b"127.0.0.1", b"1" * 5000)],
                         ids=["non-ASCII host", "empty host", "port 0", "port 65536", "port 99999", "5000 digits"])
def test_an_address_no_server_can_have_is_passed_over(sentinels: SentinelSet, host: bytes, port: bytes) -> None:
    """A host that is not ASCII, or a port outside 1-65535 (which the kernel
    would wrap), is "not an address", like other nonsense: the next sentinel is
    asked, and with none left the error is one that ``consume`` waits out."""
    fake = FakeSentinel([0], b"*2\r\n" + _bulk(host) + _bulk(port))
    try:
        client = resp.SentinelClient([("127.0.0.1", fake.port), *sentinels.addresses], "mymaster")
        assert client.primary_address() == ("127.0.0.1", sentinels.primary.port)
        assert fake.asked == 1
        only_fake = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster")
        with pytest.raises(resp.NoSentinelReachableError, match="not an address"):
            only_fake.ping()
    finally:
        fake.close()


def test_one_timeout_on_a_frozen_primary_is_enough_to_find_the_new_one(
    sentinels: SentinelSet, make_server: Callable[..., RedisServer]
) -> None:
    """A frozen or cut-off primary keeps its idle sockets open: after one
    command times out on it, the next asks the sentinels again instead of
    trying each pooled connection in turn."""
    frozen = make_server()
    assert frozen.process is not None
    fake = FakeSentinel([frozen.port])
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster", socket_timeout=1)
    key = unique()
    # Four idle connections to it, as a client that threads share has.
    pops = [threading.Thread(target=client.blpop, args=(key + "-empty", 0.5)) for _ in range(4)]
    for pop in pops:
        pop.start()
    for pop in pops:
        pop.join()
    assert fake.asked == 4
    fake.ports.append(sentinels.primary.port)  # the failover
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(resp.TimeoutError):
            client.rpush(key, "may have run")
        assert client.rpush(key, "x") == 1
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        client.close()
        fake.close()
    with resp.Client("127.0.0.1", sentinels.primary.port) as primary:
        assert primary.execute("LRANGE", key, 0, -1) == [b"x"]
        primary.delete(key)


def test_an_endless_consume_on_a_frozen_primary_goes_on_on_the_new_one(
    sentinels: SentinelSet, make_server: Callable[..., RedisServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """consume() with no timeout waits in slices: on a primary frozen by a
    failover (its kernel still holds the connection open) the slice ends in
    a timeout, and the next pop asks the sentinels for the new primary."""
    monkeypatch.setattr("hotqueue.queue.WAIT_SLICE", 1)
    monkeypatch.setattr("resp.client.BLOCKING_MARGIN", 1.0)  # a quicker test
    frozen = make_server()
    assert frozen.process is not None
    fake = FakeSentinel([frozen.port])
    queue = HotQueue(unique("frozen-consume"), serializer=None,
                     client=resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster"))  # socket_timeout=None
    assert len(queue) == 0
    fake.ports.append(sentinels.primary.port)  # the failover
    frozen.process.send_signal(signal.SIGSTOP)
    outcome: List[object] = []
    consumer = threading.Thread(target=lambda: outcome.append(next(queue.consume())), daemon=True)
    try:
        consumer.start()
        with resp.Client("127.0.0.1", sentinels.primary.port) as primary:
            primary.rpush(queue.key, b"on the new primary")
            # The slice, the client's margin, the first backoff, and slack.
            consumer.join(1 + 1.0 + 0.1 + 5)
            assert outcome == [b"on the new primary"], "consume() still waits on the frozen primary"
            assert primary.llen(queue.key) == 0
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        queue.client.close()
        fake.close()


def test_a_busy_pool_is_not_taken_for_a_lost_primary(sentinels: SentinelSet) -> None:
    """A wait for a place under max_connections that times out says nothing
    of the primary: the client keeps its connections (it dropped them all, and
    asked the sentinels again, as after a command that timed out)."""
    client = resp.SentinelClient(sentinels.addresses, "mymaster", max_connections=1, socket_timeout=0.3)
    try:
        first = client.execute("CLIENT", "ID")
        held, _ = client._pool.acquire()  # the one place, held outside any command
        with pytest.raises(resp.PoolTimeoutError):
            client.rpush(unique("busy"), "never sent")
        client._pool.release(held)
        assert client.execute("CLIENT", "ID") == first  # the same connection, kept
    finally:
        client.close()


def test_a_sentinel_that_refuses_our_password_is_an_authentication_error(
    make_server: Callable[..., RedisServer]
) -> None:
    """A sentinel that refuses ``sentinel_password`` (wrong or missing) did
    answer: a configuration error, which ``consume`` does not wait out, not
    "no sentinel answered"."""
    primary = make_server()
    guarded = SentinelServer(f"sentinel monitor svc 127.0.0.1 {primary.port} 1\nrequirepass sentinel-pw\n")
    try:
        guarded.start()
        address = ("127.0.0.1", guarded.port)
        with resp.SentinelClient([address], "svc", sentinel_password="sentinel-pw") as client:
            assert client.ping()
        for password in (None, "wrong"):
            refused = resp.SentinelClient([address], "svc", sentinel_password=password)
            with pytest.raises(resp.AuthenticationError) as caught:
                refused.ping()
            assert not isinstance(caught.value, resp.ConnectionError)
        queue = HotQueue(unique(), client=resp.SentinelClient([address], "svc", sentinel_password="wrong"))
        outcome: List[object] = []

        def consume() -> None:
            try:
                outcome.extend(queue.consume(timeout=0.1))
            except resp.RespError as exc:
                outcome.append(exc)

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        consumer.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], resp.AuthenticationError), "consume is waiting it out"
    finally:
        guarded.cleanup()


@pytest.mark.parametrize("timeout", [None, 0, -1, float("nan"), "1"])
def test_sentinel_timeout_is_checked_up_front(timeout: object) -> None:
    """A positive number of seconds: not None (a sentinel that never answers
    would hang every new connection), and not one that makes every sentinel
    time out, which ``consume`` would wait out forever."""
    with pytest.raises((TypeError, ValueError), match="sentinel_timeout"):
        resp.SentinelClient([("127.0.0.1", closed_port())], "mymaster", sentinel_timeout=timeout)  # type: ignore[arg-type]


def test_client_unblock_error_reaches_the_caller(sentinels: SentinelSet) -> None:
    """``CLIENT UNBLOCK id ERROR`` is someone stopping a blocked pop on purpose:
    the UNBLOCKED error is raised, and the pop is not sent again (only a
    failover's UNBLOCKED is)."""
    name = unique("blocked")
    client = resp.SentinelClient(sentinels.addresses, "mymaster", client_name=name)
    key = unique()
    outcome: List[object] = []

    def pop() -> None:
        try:
            outcome.append(client.blpop(key, 0))
        except resp.ResponseError as exc:
            outcome.append(exc)

    with resp.Client("127.0.0.1", sentinels.primary.port) as admin:

        def blocked() -> Optional[str]:
            for line in admin.execute("CLIENT", "LIST").decode().splitlines():
                fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
                if fields.get("name") == name and fields.get("cmd") == "blpop":
                    return fields["id"]
            return None

        popper = threading.Thread(target=pop, daemon=True)
        popper.start()
        wait_for("BLPOP to block", lambda: blocked() is not None)
        assert admin.execute("CLIENT", "UNBLOCK", blocked(), "ERROR") == 1
        popper.join(10)
        if popper.is_alive():  # sent again: let it end
            admin.rpush(key, "released")
            popper.join(10)
    client.close()
    assert len(outcome) == 1 and isinstance(outcome[0], resp.ResponseError), outcome
    assert outcome[0].kind == "UNBLOCKED"


def _role(port: int) -> str:
    with resp.Client("127.0.0.1", port, socket_timeout=2) as client:
        return str(client.execute("ROLE")[0].decode())


@pytest.mark.slow
def test_a_worker_rides_through_a_forced_failover(sentinels: SentinelSet) -> None:
    # Last in this module: it swaps the primary and the replica.
    producer = resp.SentinelClient(sentinels.addresses, "mymaster")
    queue = HotQueue(unique("failover"), client=producer, serializer=None)
    consumer = HotQueue(queue.name, client=resp.SentinelClient(sentinels.addresses, "mymaster"),
                        serializer=None)
    received: List[int] = []
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            for message in consumer.consume(timeout=1):
                received.append(int(message))

    worker = threading.Thread(target=work)
    worker.start()
    try:
        queue.put(*range(100))
        wait_for("the first batch", lambda: len(received) == 100)
        producer.execute("WAIT", 1, 2000)
        old, new = sentinels.primary.port, sentinels.replica.port
        with sentinels.sentinel_client() as sentinel:
            assert sentinel.execute("SENTINEL", "FAILOVER", "mymaster") == "OK"
        wait_for("the sentinels to name the new primary", lambda: sentinels.primary_port() == new)
        # Writes that the old primary takes before it is demoted would be
        # lost (replication is asynchronous), so the next batch waits for it.
        wait_for("the old primary to become a replica", lambda: _role(old) == "slave", timeout=40)
        queue.put(*range(100, 200))  # through the same client: its pool held the old primary
        wait_for("the second batch", lambda: len(received) >= 200, timeout=30)
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(30)
    assert sorted(received) == list(range(200))
    assert producer.primary_address() == ("127.0.0.1", new)
    with resp.Client("127.0.0.1", new) as primary:
        assert primary.execute("EXISTS", queue.key) == 0


def test_cli_demo_runs_through_sentinel(sentinels: SentinelSet) -> None:
    """Every subcommand takes a redis+sentinel:// URL, demo too: it runs on the
    primary the sentinels name, starting no private server."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = root
    result = subprocess.run([sys.executable, "-m", "hotqueue", "--url", sentinels.url, "demo"],
                            capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert result.returncode == 0, result.stderr
    assert "private redis-server" not in result.stdout
    assert "squared exactly once" in result.stdout


def test_a_timeout_is_raised_at_its_deadline_while_the_sentinels_are_silent(make_server) -> None:
    """A command that times out raises at its ``socket_timeout``: the
    sentinels are not asked then (each silent one would add its
    ``sentinel_timeout``); the pool is emptied, so the next command asks."""
    from faultproxy import FaultProxy

    frozen = make_server()
    assert frozen.process is not None
    fake = FakeSentinel([frozen.port])
    proxies = [FaultProxy(fake.port) for _ in range(3)]
    client = resp.SentinelClient([("127.0.0.1", proxy.port) for proxy in proxies], "mymaster",
                                 socket_timeout=0.5, sentinel_timeout=1)
    try:
        assert client.ping()
        for proxy in proxies:
            proxy.silent = True  # the network goes quiet: sentinels accept and never answer
        frozen.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(resp.TimeoutError):
            client.ping()
        assert time.monotonic() - started < 1.5, "the sentinels were asked past the deadline"
        for proxy in proxies:
            proxy.silent = False
        frozen.process.send_signal(signal.SIGCONT)
        assert client.ping()
        assert fake.asked == 2  # the next command asked again
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        client.close()
        for proxy in proxies:
            proxy.close()
        fake.close()


def test_no_wait_after_the_last_try_at_a_server_that_is_not_a_primary(make_server, monkeypatch) -> None:
    """The waits between tries give a failover time to finish; after the
    last try there is nothing left to wait for: the error is raised at once."""
    monkeypatch.setattr(resp.sentinel, "ROLE_ATTEMPTS", 2)
    monkeypatch.setattr(resp.sentinel, "ROLE_WAIT", 1.0)
    replica = make_server(args=["--replicaof", "127.0.0.1", str(closed_port())])  # ROLE: slave
    liar = FakeSentinel([replica.port])
    try:
        client = resp.SentinelClient([("127.0.0.1", liar.port)], "mymaster")
        started = time.monotonic()
        with pytest.raises(resp.ConnectionError, match="not one"):
            client.ping()
        assert liar.asked == 2
        assert time.monotonic() - started < 2.5  # one wait of 1 s, not 1 s and then 2 s more
    finally:
        liar.close()


def test_an_ipv6_sentinel_without_a_port_gets_the_default_one() -> None:
    """``[::1]`` has no port: its colons are inside the brackets."""
    client = resp.from_url("redis+sentinel://[::1],[::1]:26380,localhost/mymaster")
    assert client.sentinels == [("::1", 26379), ("::1", 26380), ("localhost", 26379)]


def test_a_client_never_uses_two_primaries_at_once(make_server) -> None:
    """Once a new connection finds that the sentinels name another primary,
    the connections to the old one are dropped (the busy ones as they come
    back): after a forced failover the old primary takes writes and pops for
    seconds, and a client using both would lose some and deliver others twice."""
    old, new = make_server(), make_server()
    fake = FakeSentinel([old.port, new.port])
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster")
    key = unique()
    try:
        assert client.rpush(key, "before") == 1  # a pooled connection to `old`
        waiting = threading.Thread(target=client.blpop, args=(key + "-other", 1))
        waiting.start()  # holds that connection for a second
        with resp.Client("127.0.0.1", old.port) as admin:
            wait_for("BLPOP to block", lambda: b"blocked_clients:1" in admin.execute("INFO", "clients"))
        assert client.ping()  # a new connection: the sentinel names `new` now
        waiting.join(10)  # the connection to `old` comes back to the pool
        client.rpush(key, "after")
        with resp.Client("127.0.0.1", old.port) as on_old, resp.Client("127.0.0.1", new.port) as on_new:
            assert on_old.execute("LRANGE", key, 0, -1) == [b"before"]
            assert on_new.execute("LRANGE", key, 0, -1) == [b"after"]
    finally:
        client.close()
        fake.close()


def test_the_first_connection_to_a_new_primary_is_kept(make_server) -> None:
    """The connection that found the new primary closed the pool (the
    connections to the old one) before it was opened: it goes back to the
    pool after its command, not closed as one opened while the pool was
    closing would be. It was closed, and the next command asked the
    sentinels and checked ROLE again."""
    old, new = make_server(), make_server()
    fake = FakeSentinel([old.port, new.port])
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster")
    try:
        assert client.ping()  # to `old`
        with resp.Client("127.0.0.1", old.port) as admin:
            admin.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # a new connection next
        client.rpush(unique(), "x")  # the sentinel names `new` now; one connection to it
        with resp.Client("127.0.0.1", new.port) as admin:
            connections = int(admin.execute("INFO", "stats").split(b"total_connections_received:")[1].split()[0])
            for _ in range(3):
                assert client.ping()
            assert fake.asked == 2
            assert admin.execute("INFO", "stats").count(b"total_connections_received:%d\r" % connections) == 1
    finally:
        client.close()
        fake.close()


def test_a_stale_answer_while_another_thread_switches_primaries_keeps_one_primary(make_server) -> None:
    """Thread A finds the new primary and closes the pool; before it records
    the new primary, thread C is told the old one by a stale sentinel. C must
    see that the primary changed (and close the pool again), not keep a
    connection to the old primary beside A's to the new one."""
    old, new = make_server(), make_server()
    fake = FakeSentinel([old.port, new.port, old.port])  # the third answer is stale
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster", socket_timeout=5)
    pool = client._pool
    real_close = pool.close
    closed, c_done = threading.Event(), threading.Event()

    def close_then_pause() -> int:
        generation = real_close()
        if threading.current_thread().name == "A" and not closed.is_set():
            closed.set()
            c_done.wait(10)  # A held up right after close() returns
        return generation

    try:
        assert client.ping()  # to `old`
        client.close()  # nothing idle: the next commands connect
        pool.close = close_then_pause  # type: ignore[method-assign]
        a = threading.Thread(target=client.ping, name="A")
        a.start()
        assert closed.wait(10)
        assert client.ping()  # C, told `old`
        c_done.set()
        a.join(10)
        ports = {conn.sock.getpeername()[1] for conn in pool._idle}
        assert len(ports) == 1, (ports, old.port, new.port)
    finally:
        client.close()
        fake.close()


def test_a_stale_sentinel_naming_an_unreachable_primary_is_asked_last(sentinels: SentinelSet) -> None:
    """A sentinel that answers with an address where nothing listens (it
    missed a failover) goes to the back of the list: the next connection asks
    the others, instead of failing on that address for ever."""
    stale = FakeSentinel([])
    stale.ports = [closed_port()]  # after the fake's own bind(0): it cannot be the fake's port
    try:
        client = resp.SentinelClient([("127.0.0.1", stale.port), *sentinels.addresses], "mymaster")
        with pytest.raises(resp.ConnectionError):
            client.ping()
        assert client.ping()
        assert client.sentinels[-1] == ("127.0.0.1", stale.port)
        client.close()
    finally:
        stale.close()


def test_a_service_unknown_to_the_only_sentinel_that_answered_is_waited_out(sentinels: SentinelSet) -> None:
    """"Unknown service" only when every sentinel answered: while the ones
    that know it are unreachable, the error is one ``consume`` waits out."""
    other = SentinelServer("sentinel monitor other 127.0.0.1 1 2\n")  # knows no "mymaster"
    try:
        other.start()
        client = resp.SentinelClient([("127.0.0.1", other.port), ("127.0.0.1", closed_port())], "mymaster")
        with pytest.raises(resp.NoSentinelReachableError, match="monitor no service named 'mymaster'"):
            client.ping()
        client.sentinels.append(sentinels.addresses[0])  # one that knows it answers again
        assert client.ping()
    finally:
        other.cleanup()


def test_a_primary_frozen_mid_failover_holds_up_a_new_connection_only_so_long(
    sentinels: SentinelSet, make_server: Callable[..., RedisServer], monkeypatch
) -> None:
    """Without timeouts, a new connection to a frozen primary (the kernel
    accepts, nobody answers) gives up after PRIMARY_CONNECT_TIMEOUT; the next
    asks the sentinels again and finds the primary they name now."""
    monkeypatch.setattr(resp.sentinel, "PRIMARY_CONNECT_TIMEOUT", 1.0, raising=False)
    frozen = make_server()
    assert frozen.process is not None
    fake = FakeSentinel([frozen.port, sentinels.primary_port()])  # primary_port: after the failover test too
    client = resp.SentinelClient([("127.0.0.1", fake.port)], "mymaster")
    queue = HotQueue(unique(), client=client)
    HotQueue(queue.name, client=resp.SentinelClient(sentinels.addresses, "mymaster")).put("moved")
    got: List[object] = []
    frozen.process.send_signal(signal.SIGSTOP)
    try:
        consumer = threading.Thread(target=lambda: got.extend(queue.consume(timeout=1)), daemon=True)
        consumer.start()
        consumer.join(10)
        assert got == ["moved"], "the consumer is still waiting for the frozen primary"
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        client.close()
        fake.close()


def test_an_empty_sentinel_password_is_none(make_server: Callable[..., RedisServer]) -> None:
    """sentinel_password='' sends no AUTH, as password='' does (a sentinel
    without requirepass refuses AUTH '', which reads as no sentinel answered)."""
    primary = make_server()
    sentinel = SentinelServer(f"sentinel monitor k2 127.0.0.1 {primary.port} 1\n")
    try:
        sentinel.start()
        client = resp.SentinelClient([("127.0.0.1", sentinel.port)], "k2", sentinel_password="",
                                     sentinel_username="")
        assert client.primary_address() == ("127.0.0.1", primary.port)
        assert client.ping()
        client.close()
        # A password where the sentinel has none: refused, a configuration
        # error as a wrong one is (not "no sentinel answered", waited out).
        needless = resp.SentinelClient([("127.0.0.1", sentinel.port)], "k2", sentinel_password="needless")
        with pytest.raises(resp.AuthenticationError) as caught:
            needless.ping()
        assert not isinstance(caught.value, resp.ConnectionError) and "needless" not in str(caught.value)
    finally:
        sentinel.cleanup()
