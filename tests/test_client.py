"""``resp.Client`` against real redis-server processes (and, for replies no
Redis would send on cue, a tiny socket server in the test).

Covers every method, reply types, URLs (redis://, rediss://, unix://), db
selection, passwords and ACL users, blocking commands under a short
socket_timeout, interruptions mid-reply, server restarts, fork, threads and
the bound on connections.
"""

import array
import builtins
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union
from urllib.parse import quote

import pytest
from redis_server import RedisServer, free_port, reap_child

import resp
from resp.protocol import LARGE_VALUE

MakeServer = Callable[..., RedisServer]


Closing = Callable[[resp.Client], resp.Client]


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Close at the end of the test the clients passed through it."""
    opened: List[resp.Client] = []

    def keep(client: resp.Client) -> resp.Client:
        opened.append(client)
        return client

    yield keep
    for client in opened:
        client.close()


def client_ids(observer: resp.Client) -> List[int]:
    """The ids of every connection the server has open."""
    listing = observer.execute("CLIENT", "LIST").decode()
    return [int(line.split("id=", 1)[1].split(" ", 1)[0]) for line in listing.splitlines() if line]


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- a tiny scripted server -----------------------------------------------------

Step = Union[bytes, float, None]  # bytes to send, seconds to sleep, None to hang up


class TinyServer:
    """A loopback server that parses commands (with ``resp.Reader``) and answers
    each one with the steps ``script(args)`` returns. It records every command
    with the number of the connection it came on."""

    def __init__(self, script: Callable[[List[bytes]], List[Step]]) -> None:
        self.script = script
        self.commands: List[Tuple[int, List[bytes]]] = []
        self.closed_by_client: List[int] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: List[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, number), daemon=True)
            self._threads.append(thread)
            thread.start()
            number += 1

    def _serve(self, sock: socket.socket, number: int) -> None:
        reader = resp.Reader()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    self.closed_by_client.append(number)
                    return
                reader.feed(data)
                while True:
                    command = reader.gets()
                    if command is False:
                        break
                    self.commands.append((number, command))
                    for step in self.script(command):
                        if step is None:
                            sock.close()
                            return
                        if isinstance(step, float):
                            if self._stop.wait(step):
                                return
                        else:
                            sock.sendall(step)
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        # shutdown() first: close() alone does not wake a thread blocked in
        # accept() or recv() on Linux, and a live thread makes fork() unsafe.
        for sock in [self._listener, *self._sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def tiny_server() -> Iterator[Callable[[Callable[[List[bytes]], List[Step]]], TinyServer]]:
    servers: List[TinyServer] = []

    def make(script: Callable[[List[bytes]], List[Step]]) -> TinyServer:
        servers.append(TinyServer(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# -- every method ---------------------------------------------------------------


def test_ping(client: resp.Client) -> None:
    assert client.ping() is True


def test_rpush_lpop_llen_delete(client: resp.Client, key: str) -> None:
    assert client.llen(key) == 0
    assert client.rpush(key, "a") == 1
    assert client.rpush(key, b"b", bytearray(b"c"), 4, 5.5, "\u00e9") == 6
    assert client.llen(key) == 6
    assert client.lpop(key) == b"a"
    assert client.lpop(key, 2) == [b"b", b"c"]
    assert client.lpop(key, count=10) == [b"4", b"5.5", "\u00e9".encode()]
    assert client.lpop(key) is None
    assert client.lpop(key, 3) is None  # a null array on a missing key
    assert client.rpush(key, "x") == 1
    assert client.delete(key, key + "-missing") == 1
    assert client.delete(key) == 0
    with pytest.raises(ValueError):
        client.rpush(key)
    with pytest.raises(ValueError):
        client.delete()
    with pytest.raises(ValueError):
        client.lpop(key, -1)


def test_blpop(client: resp.Client, key: str) -> None:
    other = key + "-other"
    client.rpush(other, "v1", "v2")
    assert client.blpop([key, other], 1) == (other.encode(), b"v1")
    assert client.blpop(other, 0.5) == (other.encode(), b"v2")
    assert client.blpop((key, other), timeout=0.1) is None  # both empty now
    started = time.monotonic()
    assert client.blpop(key, 0.3) is None
    assert 0.2 < time.monotonic() - started < 3
    client.rpush(key, "now")
    assert client.blpop(key) == (key.encode(), b"now")  # 0 = forever, but a value is there
    with pytest.raises(ValueError):
        client.blpop(key, -1)
    with pytest.raises(ValueError):
        client.blpop([], 1)


@pytest.mark.parametrize("kind", [bytearray, memoryview, lambda b: array.array("B", b)])
def test_blpop_takes_a_bytes_like_key_as_one_key(client: resp.Client, key: str, kind: Callable[[bytes], Any]) -> None:
    """A bytearray is a key to rpush, llen and blmove: to blpop too, not a
    list of keys named by its bytes' numbers ("116", "101", …), whose lists
    it would wait on and pop from."""
    decoy = str(key.encode()[0])  # the list blpop used to wait on first
    client.delete(decoy)
    client.rpush(key, "mine")
    client.rpush(decoy, "not mine")
    try:
        assert client.blpop(kind(key.encode()), 1) == (key.encode(), b"mine")
        assert client.lpop(decoy) == b"not mine"  # untouched
    finally:
        client.delete(key, decoy)


def test_blpop_refuses_what_is_neither_a_key_nor_keys(client: resp.Client) -> None:
    with pytest.raises(TypeError, match="keys must be a key or a sequence of keys, not int"):
        client.blpop(5, 1)  # type: ignore[arg-type]
    assert client.ping()


def test_blpop_is_woken_by_another_client(redis_url: str, key: str) -> None:
    with resp.Client.from_url(redis_url) as waiter, resp.Client.from_url(redis_url) as pusher:
        result: List[Any] = []
        thread = threading.Thread(target=lambda: result.append(waiter.blpop(key, 5)))
        thread.start()
        time.sleep(0.2)
        pusher.rpush(key, "wake")
        thread.join(5)
        assert result == [(key.encode(), b"wake")]


def test_lmove_blmove(client: resp.Client, key: str) -> None:
    dest = key + "-dest"
    client.rpush(key, "a", "b")
    assert client.lmove(key, dest) == b"a"
    assert client.lmove(key, dest, "RIGHT", "LEFT") == b"b"
    assert client.execute("LRANGE", dest, 0, -1) == [b"b", b"a"]
    assert client.lmove(key, dest) is None
    assert client.blmove(dest, key, 1) == b"b"
    assert client.blmove(dest, key, 0.5, wherefrom="RIGHT", whereto="LEFT") == b"a"
    started = time.monotonic()
    assert client.blmove(dest, key, 0.2) is None
    assert time.monotonic() - started > 0.15
    assert client.execute("LRANGE", key, 0, -1) == [b"a", b"b"]
    client.delete(key)


def test_reply_types(client: resp.Client, key: str) -> None:
    assert client.execute("SET", key, b"v\r\nw") == "OK"
    assert client.execute("GET", key) == b"v\r\nw"
    assert client.execute("GET", key + "-missing") is None
    assert client.execute("STRLEN", key) == 4
    assert client.execute("DEL", key) == 1
    assert client.execute("EVAL", "return {1, 'two', {3, false}, redis.status_reply('S')}", 0) == [
        1, b"two", [3, None], "S"
    ]
    assert client.execute("LRANGE", key, 0, -1) == []
    assert client.execute(b"ECHO", memoryview(b"mv")) == b"mv"
    assert client.execute("ECHO", array.array("B", b"any bytes-like")) == b"any bytes-like"
    assert client.rpush(key, array.array("H", [1, 2])) == 1
    assert client.lpop(key) == array.array("H", [1, 2]).tobytes()


def test_error_replies_raise(client: resp.Client, key: str) -> None:
    with pytest.raises(resp.ResponseError) as info:
        client.execute("NOSUCHCOMMAND", "x")
    assert type(info.value) is resp.ResponseError
    assert info.value.kind == "ERR"
    client.execute("SET", key, "string")
    with pytest.raises(resp.WrongTypeError) as wrong:
        client.rpush(key, "x")
    assert isinstance(wrong.value, resp.ResponseError)
    assert wrong.value.kind == "WRONGTYPE"
    assert client.execute("ECHO", "after") == b"after"  # the connection stayed in step
    client.delete(key)


def test_error_inside_an_array_is_returned(client: resp.Client, key: str) -> None:
    pipe = client.pipeline()
    pipe.command("MULTI").command("SET", key, "s").command("RPUSH", key, "x").command("GET", key)
    replies = pipe.command("EXEC").execute()
    assert replies[:4] == ["OK", "QUEUED", "QUEUED", "QUEUED"]
    exec_reply = replies[4]
    assert exec_reply[0] == "OK"
    assert type(exec_reply[1]) is resp.WrongTypeError
    assert exec_reply[2] == b"s"
    client.delete(key)


def test_bad_argument_raises_before_sending(client: resp.Client, key: str) -> None:
    for bad in (None, True, object(), ["x"]):
        with pytest.raises(TypeError):
            client.execute("SET", key, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            client.rpush(key, "ok", bad)  # type: ignore[arg-type]
    assert client.llen(key) == 0
    assert client.execute("EXISTS", key) == 0


def test_more_large_values_than_one_sendmsg_takes(client: resp.Client, redis_url: str, key: str) -> None:
    # Each value of 64 KiB or more is its own part of the command: 300 of
    # them make 601 parts, more than one sendmsg() call is given.
    values = [bytes([i % 251]) * (64 * 1024 + i) for i in range(300)]
    with_socket_timeout = resp.Client.from_url(redis_url, socket_timeout=30)
    for each in (client, with_socket_timeout):
        each.delete(key)
        assert each.rpush(key, *values) == len(values)
        assert each.execute("LRANGE", key, 0, -1) == values
    with_socket_timeout.close()


def test_long_values_of_many_sizes_on_one_connection(client: resp.Client, redis_url: str, key: str) -> None:
    # The first long value on a connection arrives in pieces; the later ones
    # that fit go straight into a buffer the connection keeps, at most 4 MiB.
    sizes = [100_000, 300_000, 300_000, 120_000, 1_000_000, 5_000_000, 70_000, 999_999, 4 * 1024 * 1024]
    with_socket_timeout = resp.Client.from_url(redis_url, socket_timeout=30)
    for each in (client, with_socket_timeout):
        for size in sizes:
            value = os.urandom(size)
            each.execute("SET", key, value)
            assert each.execute("GET", key) == value
            each.delete(key + "list")
            each.rpush(key + "list", value, b"x", value[: size // 2])
            assert each.execute("LRANGE", key + "list", 0, -1) == [value, b"x", value[: size // 2]]
        [conn] = each._pool._idle
        assert conn._bulk_buffer is not None and len(conn._bulk_buffer) <= 4 * 1024 * 1024
    with_socket_timeout.close()



def test_values_whose_reply_a_64_kib_recv_cuts_between_cr_and_lf(client: resp.Client, key: str) -> None:
    # A reply one byte longer than a recv() ends its first chunk with the
    # value's CR. Around that size, by GET, LPOP and BLPOP (whose reply puts
    # the key before the value); every value comes back whole and in place.
    for size in range(65_515, 65_535):
        value = bytes([size % 251]) * size
        client.execute("SET", key, value)
        assert client.execute("GET", key) == value
        client.rpush(key + "list", value, value)
        assert client.lpop(key + "list") == value
        assert client.blpop(key + "list", 1) == ((key + "list").encode(), value)
        assert client.llen(key + "list") == 0


def test_pipeline(client: resp.Client, key: str) -> None:
    pipe = client.pipeline()
    assert pipe.execute() == []
    pipe.command("RPUSH", key, "a", "b").command("LLEN", key).command("LPOP", key)
    assert len(pipe) == 3
    assert pipe.execute() == [2, 2, b"a"]
    assert len(pipe) == 0

    pipe.command("SET", key + "s", "x").command("LPUSH", key + "s", "y").command("RPUSH", key, "c")
    with pytest.raises(resp.WrongTypeError):
        pipe.execute()
    assert client.llen(key) == 2  # the command after the error ran too
    assert len(pipe) == 0

    pipe.command("RPUSH", key + "s", "y").command("NOSUCH").command("LLEN", key)
    replies = pipe.execute(raise_on_error=False)
    assert type(replies[0]) is resp.WrongTypeError
    assert type(replies[1]) is resp.ResponseError
    assert replies[2] == 2
    assert client.execute("ECHO", "mine") == b"mine"
    with pytest.raises(TypeError):
        pipe.command("SET", key, None)  # type: ignore[arg-type]
    client.delete(key, key + "s")


def test_close_and_context_manager(redis_url: str) -> None:
    name = "ctx-" + uuid.uuid4().hex[:8]
    with resp.Client.from_url(redis_url) as observer:

        def named() -> int:
            return observer.execute("CLIENT", "LIST").decode().count(f"name={name} ")

        with resp.Client.from_url(redis_url, client_name=name) as client:
            assert client.ping()
            assert named() == 1
        assert wait_until(lambda: named() == 0)

        client.ping()  # still usable after close: connects again
        assert named() == 1
        client.close()
        assert wait_until(lambda: named() == 0)


def test_positional_arguments_in_the_order_of_the_spec(redis_url: str, closing: Closing) -> None:
    # SPEC section 2: host, port, db, password, username, socket_timeout,
    # socket_connect_timeout, unix_socket_path, ssl, ssl_context, client_name,
    # max_connections; options beyond those come after them.
    address = resp.Client.from_url(redis_url)
    client = closing(resp.Client(address.address.host, address.address.port, address.db, None, None, 5.0,
                                 None, None, False, None, "positional-name", 4))
    assert client.execute("CLIENT", "GETNAME") == b"positional-name"
    assert client.address.ssl_context is None  # a plain connection, as ssl=False says


def test_repr(client: resp.Client) -> None:
    assert "resp.Client" in repr(client)
    assert "db=0" in repr(client)


# -- URLs, databases, authentication, TLS, unix sockets ---------------------------


def test_db_selection_isolates_keys(make_server: MakeServer, key: str) -> None:
    base = f"redis://127.0.0.1:{make_server().port}"  # a TCP URL whatever REDIS_URL is
    with resp.Client.from_url(base + "/3") as db3, resp.Client.from_url(base + "/0?db=5") as db5, \
            resp.Client.from_url(base) as db0:
        assert db3.db == 3 and db5.db == 5 and db0.db == 0
        db3.rpush(key, "in-three")
        assert db0.llen(key) == 0
        assert db5.llen(key) == 0
        assert db3.llen(key) == 1
        assert "db=3" in db3.execute("CLIENT", "INFO").decode()
        assert "db=5" in db5.execute("CLIENT", "INFO").decode()
        with resp.Client.from_url(base, db=3) as db3_again:
            assert db3_again.lpop(key) == b"in-three"


def test_url_options(redis_url: str, make_server: MakeServer) -> None:
    # A private TCP server: REDIS_URL may be a unix:// or rediss:// URL, whose
    # netloc is no redis:// address (an empty one would mean localhost:6379).
    server = make_server()
    client = resp.Client.from_url(
        f"redis://127.0.0.1:{server.port}/2?socket_timeout=1.5&socket_connect_timeout=2&client_name=urly"
    )
    assert (client.db, client.socket_timeout, client.client_name) == (2, 1.5, "urly")
    assert client.address.connect_timeout == 2.0
    assert client.execute("CLIENT", "GETNAME") == b"urly"
    client.close()
    assert resp.Client.from_url(redis_url, db=4, socket_timeout=3).db == 4


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:6379/0",
        "localhost:6379",
        "redis://localhost:notaport/0",
        "redis://localhost:99999/0",
        "redis://localhost/abc",
        "redis://localhost/-1",
        "redis://localhost/0?bogus=1",
        "redis://localhost/0?db=x",
        "redis://localhost/\u0661",  # ARABIC-INDIC DIGIT ONE: int() takes it
        "redis://localhost/\u00b2",  # SUPERSCRIPT TWO: isdigit(), but not int()
        "redis://localhost/0?db=1_0",
        "redis://localhost/0?db=%201",
        "redis://localhost/0?socket_timeout=soon",
        "redis://localhost/0?socket_timeout=-1",
        "unix://",
        "redis://user:hunter2pass@localhost:port/0",
        "redis://user:hunter2pass@localhost/zero",
    ],
)
def test_bad_urls_raise_value_error(url: str) -> None:
    with pytest.raises(ValueError) as info:
        resp.Client.from_url(url)
    assert "hunter2pass" not in str(info.value)


@pytest.mark.parametrize("url", ["http://localhost:6379/0", "foo://x", "redis+clustre://localhost:7000"])
def test_an_unknown_scheme_is_told_every_scheme_from_url_takes(url: str) -> None:
    with pytest.raises(ValueError) as info:
        resp.from_url(url)
    for scheme in ("redis://", "rediss://", "unix://", "redis+cluster://", "redis+sentinel://"):
        assert scheme in str(info.value)


def test_url_with_empty_password_sends_no_auth(make_server: MakeServer) -> None:
    """``redis://:@host`` has no password, as in redis-py and redis-cli: an
    ``AUTH ""`` would be refused by a server that asks for none."""
    server = make_server()
    with resp.Client.from_url(f"redis://:@127.0.0.1:{server.port}/0") as client:
        assert client.ping()
        assert client.execute("ACL", "WHOAMI") == b"default"


def test_url_must_be_str() -> None:
    with pytest.raises(TypeError):
        resp.Client.from_url(b"redis://localhost")  # type: ignore[arg-type]


def test_password_and_acl_user(make_server: MakeServer, key: str) -> None:
    server = make_server(args=["--requirepass", "s3cret"])
    with pytest.raises(resp.AuthenticationError):
        resp.Client(port=server.port).ping()  # NOAUTH
    admin = resp.Client(port=server.port, password="s3cret")
    assert admin.ping()
    url_client = resp.Client.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/1")
    assert url_client.rpush(key, "x") == 1
    assert admin.llen(key) == 0  # db 1, not 0

    assert admin.execute("ACL", "SETUSER", "alice", "on", ">alice pw%", "~*", "&*", "+@all") == "OK"
    assert admin.execute("ACL", "SETUSER", "bob", "on", ">bobpw", "~*", "+ping") == "OK"
    alice = resp.Client(port=server.port, username="alice", password="alice pw%")
    assert alice.execute("ACL", "WHOAMI") == b"alice"
    alice_url = resp.Client.from_url(f"redis://alice:{quote('alice pw%')}@127.0.0.1:{server.port}/1")
    assert alice_url.llen(key) == 1
    bob = resp.Client(port=server.port, username="bob", password="bobpw")
    assert bob.ping()
    with pytest.raises(resp.NoPermissionError):
        bob.llen(key)
    with pytest.raises(resp.AuthenticationError):
        resp.Client(port=server.port, username="alice", password="bobpw").ping()
    # A user name without a password: AUTH as that user, which a nopass user
    # accepts and one with a password refuses; never the default user.
    assert admin.execute("ACL", "SETUSER", "carol", "on", "nopass", "~*", "+@all") == "OK"
    carol = resp.Client(port=server.port, username="carol")
    assert carol.execute("ACL", "WHOAMI") == b"carol"
    carol_url = resp.Client.from_url(f"redis://carol@127.0.0.1:{server.port}/0")
    assert carol_url.execute("ACL", "WHOAMI") == b"carol"
    with pytest.raises(resp.AuthenticationError):
        resp.Client(port=server.port, username="alice").ping()
    for c in (admin, url_client, alice, alice_url, bob, carol, carol_url):
        c.close()


def test_wrong_password_is_never_shown(make_server: MakeServer) -> None:
    server = make_server(args=["--requirepass", "s3cret"])
    secret = "wrong-Secret-4711"
    clients = [
        resp.Client(port=server.port, password=secret),
        resp.Client(port=server.port, username="default", password=secret),
        resp.Client.from_url(f"redis://default:{secret}@127.0.0.1:{server.port}/0"),
    ]
    for client in clients:
        with pytest.raises(resp.AuthenticationError) as info:
            client.ping()
        error = info.value
        assert isinstance(error, resp.ResponseError)
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        for shown in (str(error), repr(error), text, repr(client), str(client)):
            assert secret not in shown
        assert "WRONGPASS" in str(error) or "invalid" in str(error)


def test_tls(make_server: MakeServer, key: str) -> None:
    server = make_server(tls=True)
    assert server.tls_dir is not None
    ca = os.path.join(server.tls_dir, "ca.crt")
    with resp.Client.from_url(f"rediss://127.0.0.1:{server.port}/0?ssl_ca_certs={quote(ca)}") as client:
        assert client.ping()
        assert client.rpush(key, b"secret\r\n") == 1
        assert client.lpop(key) == b"secret\r\n"
    with resp.Client(host="localhost", port=server.port, ssl=True, ssl_ca_certs=ca) as by_name:
        assert by_name.ping()
    untrusted = resp.Client.from_url(f"rediss://127.0.0.1:{server.port}/0", socket_timeout=5)
    with pytest.raises(resp.ConnectionError) as info:
        untrusted.ping()
    assert "certificate" in str(info.value)
    # A plain client on a TLS port must fail, not hang or misparse.
    with pytest.raises((resp.ConnectionError, resp.ProtocolError, resp.TimeoutError)):
        resp.Client(port=server.port, socket_timeout=2).ping()


def test_unix_socket(make_server: MakeServer, key: str) -> None:
    server = make_server(unix_socket=True)
    path = server.unix_socket_path
    assert path is not None
    with resp.Client.from_url(f"unix://{path}?db=2") as client:
        assert client.ping()
        client.rpush(key, "over unix")
        assert "db=2" in client.execute("CLIENT", "INFO").decode()
        assert "unix" in repr(client)
    with resp.Client(port=server.port, db=2) as tcp:
        assert tcp.lpop(key) == b"over unix"
    with resp.Client(unix_socket_path=path) as direct:
        assert direct.ping()


def test_unix_socket_path_that_is_not_utf8(make_server: MakeServer) -> None:
    """A path holding a byte that is not UTF-8 comes to Python with a lone
    surrogate for it (os.fsdecode): a file name like any other, accepted."""
    directory = tempfile.mkdtemp(prefix="hq-")
    path = os.path.join(directory, os.fsdecode(b"r\xff.sock"))
    try:
        make_server(args=["--unixsocket", path, "--unixsocketperm", "700"])
        assert os.path.exists(os.fsencode(path))
        with resp.Client(unix_socket_path=path) as client:
            assert client.ping()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- failures ---------------------------------------------------------------------


def test_nothing_listening_raises_connection_error() -> None:
    client = resp.Client(port=free_port(), socket_timeout=2)  # no I/O yet
    with pytest.raises(resp.ConnectionError) as info:
        client.ping()
    assert isinstance(info.value, ConnectionError)  # the builtin too
    assert isinstance(info.value, resp.RespError)


def test_each_address_of_the_host_is_tried_in_turn(redis_url: str, monkeypatch: Any, closing: Closing) -> None:
    # As socket.create_connection does: an address family the kernel lacks
    # (IPv6 turned off, say) and a refused address are passed over.
    import _socket

    server = resp.Client.from_url(redis_url).address
    assert server.unix_socket_path is None, "this test needs the server over TCP"
    reachable = socket.getaddrinfo(server.host, server.port, 0, socket.SOCK_STREAM)[0]
    addresses = [
        (12345, socket.SOCK_STREAM, 0, "", ("nowhere",)),  # socket() itself fails
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", free_port())),  # refused
        reachable,
    ]
    asked: List[Tuple[Any, ...]] = []

    def getaddrinfo(*args: Any) -> List[Tuple[Any, ...]]:
        asked.append(args)
        return addresses

    monkeypatch.setattr(_socket, "getaddrinfo", getaddrinfo)
    client = closing(resp.Client(host="several.example", port=server.port, socket_timeout=5))
    assert client.ping() is True
    assert asked and asked[0][:2] == (b"several.example", server.port)  # ASCII: as bytes, no IDNA codec
    del addresses[2]
    client.close()
    with pytest.raises(resp.ConnectionError, match="refused"):
        client.ping()


def test_blocking_command_outlives_socket_timeout(redis_url: str, key: str) -> None:
    with resp.Client.from_url(redis_url, socket_timeout=0.5) as client:
        started = time.monotonic()
        assert client.blpop(key, 3) is None
        elapsed = time.monotonic() - started
        assert 2.5 < elapsed < 6
        assert client.execute("BLPOP", key, "0.7") is None  # through execute as well
        assert client.execute(b"blpop", key, b"0.7") is None  # a bytes name is the same command
        assert client.execute("BLPOP", key, "0x1.8p-1") is None  # the server reads hex floats too (0.75 s)
        assert client.execute("BLPOP", key, b"0x1.8p-1") is None
        # Any bytes-like name or timeout is read as the bytes sent.
        assert client.execute(array.array("B", b"BLPOP"), key, "0.7") is None
        assert client.execute("BLPOP", key, bytearray(b"0x1.8p-1")) is None
        assert client.execute("BLPOP", key, memoryview(b"0x1.8p-1")) is None
        assert client.ping()


@pytest.mark.parametrize("timeout", ["0x1p2000", 10**400, 2**1024], ids=["hex 2**2000", "10**400", "2**1024"])
def test_a_timeout_too_large_for_a_float_is_left_to_the_server(client: resp.Client, key: str, timeout: Any) -> None:
    """The server refuses it at once: its error, not an OverflowError from
    working out the client's deadline."""
    with pytest.raises(resp.ResponseError, match="timeout"):
        client.execute("BLPOP", key, timeout)
    assert client.ping()


@pytest.mark.parametrize("timeout", [0.0001, 0.001, 0.0099])
def test_a_tiny_blocking_timeout_is_sent_as_10_ms(make_server: MakeServer, key: str, timeout: float) -> None:
    """Redis 6.0-6.2 cut a timeout down to whole milliseconds: 0.001 and less
    became 0, wait forever (the client then timed out and closed the
    connection, and a value popped meanwhile was lost). Sent as 0.01."""
    server = make_server()  # a TCP server of our own, whatever REDIS_URL is, for MONITOR
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as monitor, \
            resp.Client(port=server.port) as client:
        monitor.sendall(b"MONITOR\r\n")
        assert monitor.recv(5) == b"+OK\r\n"
        assert client.blpop(key, timeout) is None
        assert client.blpop([key], timeout) is None
        assert client.blmove(key, key + "-to", timeout) is None
        seen = b""
        while seen.count(b"\n") < 3:
            seen += monitor.recv(4096)
    assert seen.count(b'"0.01"') == 3, seen


def test_timeout_mid_reply_closes_the_connection(tiny_server: Any) -> None:
    def script(command: List[bytes]) -> List[Step]:
        if command[1] == b"late":
            return [0.6, bulk(b"late")]  # nothing, then the whole reply
        if command[1] == b"half":
            return [b"$4\r\nha", 0.6, b"lf\r\n"]  # half a reply, then a stall
        return [bulk(command[1])]

    server = tiny_server(script)
    client = resp.Client(port=server.port, socket_timeout=0.3)
    assert client.execute("ECHO", "warm") == b"warm"
    with pytest.raises(resp.TimeoutError):
        client.execute("ECHO", "late")
    # Sent at once, before the late reply arrives: on the old connection it
    # would read b"late".
    assert client.execute("ECHO", "second") == b"second"
    with pytest.raises(resp.TimeoutError):
        client.execute("ECHO", "half")
    assert client.execute("ECHO", "third") == b"third"
    connections = [number for number, _ in server.commands]
    assert connections[1] == connections[0]  # 'warm' reused its connection ...
    assert connections[2] != connections[1]  # ... which was dropped after the timeout
    assert connections[4] != connections[3]
    assert wait_until(lambda: connections[1] in server.closed_by_client)


def test_timeout_mid_reply_against_redis(make_server: MakeServer, key: str) -> None:
    server = make_server()
    client = resp.Client(port=server.port, socket_timeout=0.3)
    pauser = resp.Client(port=server.port)
    first_id = client.execute("CLIENT", "ID")
    pauser.execute("CLIENT", "PAUSE", 10000, "WRITE")  # holds writes, not reads; UNPAUSE below ends it
    with pytest.raises(resp.TimeoutError):
        client.rpush(key, "a", "b", "c")
    # Not paused, but on the old connection it would queue behind the RPUSH
    # and then read its reply (3).
    assert client.execute("ECHO", "second") == b"second"
    assert client.execute("CLIENT", "ID") != first_id
    pauser.execute("CLIENT", "UNPAUSE")
    # Redis drops the paused RPUSH of a client that hung up; it must never
    # have been sent again on the new connection.
    time.sleep(0.05)
    assert pauser.llen(key) in (0, 3)
    assert client.execute("ECHO", "third") == b"third"


def test_keyboard_interrupt_in_blpop_discards_the_connection(redis_url: str, key: str, closing: Closing) -> None:
    client = closing(resp.Client.from_url(redis_url))
    observer = closing(resp.Client.from_url(redis_url))
    blpop_id = client.execute("CLIENT", "ID")  # the pool's one connection, reused by blpop

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.blpop(key, 10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The blocked connection was closed: the server drops it ...
    assert wait_until(lambda: blpop_id not in client_ids(observer))
    # ... so a value pushed now waits in the list instead of answering a dead BLPOP.
    observer.rpush(key, "pushed")
    assert client.execute("ECHO", "mine") == b"mine"
    assert client.execute("CLIENT", "ID") != blpop_id
    assert client.lpop(key) == b"pushed"


def test_keyboard_interrupt_mid_reply(tiny_server: Any) -> None:
    def script(command: List[bytes]) -> List[Step]:
        if command[1] == b"first":
            return [1.0, bulk(b"first")]
        if command[1] == b"half":
            return [b"$4\r\nha", 1.0, b"lf\r\n"]
        return [bulk(command[1])]

    server = tiny_server(script)
    client = resp.Client(port=server.port)  # no timeout at all

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        for interrupted, after in (("first", "second"), ("half", "third")):
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            with pytest.raises(KeyboardInterrupt):
                client.execute("ECHO", interrupted)
            signal.setitimer(signal.ITIMER_REAL, 0)
            # Sent at once: on the old connection it would read the late reply.
            assert client.execute("ECHO", after) == after.encode()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    connections = [number for number, _ in server.commands]
    assert connections[0] != connections[1]
    assert connections[2] == connections[1]  # 'second' came back clean and was reused
    assert connections[3] != connections[2]


def test_failure_after_sending_is_not_retried(tiny_server: Any) -> None:
    def script(command: List[bytes]) -> List[Step]:
        if command[0] == b"RPUSH":
            return [None]  # hang up without answering
        return [b"+PONG\r\n"]

    server = tiny_server(script)
    client = resp.Client(port=server.port, socket_timeout=2)
    assert client.ping()
    with pytest.raises(resp.ConnectionError):
        client.rpush("q", "once")
    time.sleep(0.1)
    assert [c for _, c in server.commands if c[0] == b"RPUSH"] == [[b"RPUSH", b"q", b"once"]]


def test_protocol_error_from_server_closes_the_connection(tiny_server: Any) -> None:
    def script(command: List[bytes]) -> List[Step]:
        if command[1] == b"bad":
            return [b"$1099511627776\r\n"]
        return [bulk(command[1])]

    server = tiny_server(script)
    client = resp.Client(port=server.port, socket_timeout=2)
    with pytest.raises(resp.ProtocolError):
        client.execute("ECHO", "bad")
    assert client.execute("ECHO", "good") == b"good"
    assert server.commands[0][0] != server.commands[1][0]


def test_idle_connection_with_stray_bytes_is_not_reused(tiny_server: Any) -> None:
    def script(command: List[bytes]) -> List[Step]:
        if command[1] == b"extra":
            return [bulk(b"extra") + b"+STRAY\r\n"]  # one reply too many
        return [bulk(command[1])]

    server = tiny_server(script)
    client = resp.Client(port=server.port, socket_timeout=2)
    assert client.execute("ECHO", "extra") == b"extra"
    time.sleep(0.05)
    assert client.execute("ECHO", "mine") == b"mine"
    assert server.commands[0][0] != server.commands[1][0]


def test_connection_killed_while_idle_is_replaced(redis_url: str, closing: Closing) -> None:
    client = closing(resp.Client.from_url(redis_url, socket_timeout=2))
    observer = closing(resp.Client.from_url(redis_url))
    old_id = client.execute("CLIENT", "ID")
    assert observer.execute("CLIENT", "KILL", "ID", old_id) == 1
    assert wait_until(lambda: old_id not in client_ids(observer))
    assert client.ping() is True  # found closed in the pool: replaced, nothing raised
    assert client.execute("CLIENT", "ID") != old_id


def test_close_while_busy_closes_that_connection_when_it_returns(redis_url: str, key: str) -> None:
    name = "busy-" + uuid.uuid4().hex[:8]
    client = resp.Client.from_url(redis_url, client_name=name)
    observer = resp.Client.from_url(redis_url)

    def named() -> int:
        return observer.execute("CLIENT", "LIST").decode().count(f"name={name} ")

    result: List[Any] = []
    waiter = threading.Thread(target=lambda: result.append(client.blpop(key, 5)))
    waiter.start()
    assert wait_until(lambda: named() == 1)
    client.close()  # the busy connection is left to finish its command
    observer.rpush(key, "delivered")
    waiter.join(5)
    assert result == [(key.encode(), b"delivered")]
    assert wait_until(lambda: named() == 0)  # ... and closed when it came back


@pytest.mark.parametrize("max_connections", [None, 2])
def test_a_connection_opened_while_the_pool_closes_is_closed_when_it_returns(
        redis_url: str, max_connections: Optional[int]) -> None:
    """close() while a command is still connecting: that connection counts as
    busy, and is closed when it comes back (pool rule 7)."""
    client = resp.Client.from_url(redis_url, max_connections=max_connections)
    connect_to = client._connect_to

    def connect_while_closing(address: Any) -> Any:
        conn = connect_to(address)
        client.close()  # as another thread's close() would, meanwhile
        return conn

    try:
        client._connect_to = connect_while_closing  # type: ignore[method-assign]
        first = client.execute("CLIENT", "ID")
        del client._connect_to
        assert client.execute("CLIENT", "ID") != first  # a new connection
        assert client.execute("CLIENT", "ID") == client.execute("CLIENT", "ID")  # which is kept
    finally:
        client.close()


def test_a_retired_pool_closes_every_connection_that_comes_back(redis_url: str) -> None:
    """``Pool.retire()`` (for a cluster node that left the slot map): the idle
    connection closes at once, a busy one when it is released, and one opened
    afterwards, by a thread that still holds the client, after its command;
    each gives its place under the bound back."""
    client = resp.Client.from_url(redis_url, max_connections=2, socket_timeout=5)
    pool = client._pool
    idle, _ = pool.acquire()
    busy, _ = pool.acquire()
    pool.release(idle)
    pool.retire()
    assert idle.sock.fileno() == -1
    pool.release(busy)
    assert busy.sock.fileno() == -1
    for _ in range(3):  # never "all 2 connections stayed busy"
        assert client.ping() is True
    assert pool._idle == [] and pool._open_count == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_client_survives_a_server_restart(make_server: MakeServer, key: str, how: str) -> None:
    server = make_server()
    client = resp.Client(port=server.port, socket_timeout=2)
    assert client.rpush(key, "before") == 1
    getattr(server, how)()
    server.start()
    assert client.ping() is True  # the dead pooled connection is replaced, nothing raised
    assert client.rpush(key, "after") == 1  # a fresh server with no data


def test_server_down_then_back(make_server: MakeServer) -> None:
    server = make_server()
    client = resp.Client(port=server.port, socket_timeout=2)
    assert client.ping()
    server.stop()
    with pytest.raises(resp.ConnectionError):
        client.ping()
    server.start()
    assert client.ping()


# -- fork and threads -------------------------------------------------------------


def test_the_fork_hooks_registry_holds_what_is_alive_and_lets_go_of_garbage(redis_url: str) -> None:
    from resp.connection import _OPEN, _WeakRegistry

    class Member:
        pass

    registry = _WeakRegistry()
    kept, dropped = Member(), Member()
    registry.add(kept)
    registry.add(dropped)
    del dropped
    gc.collect()
    assert registry.members() == [kept]
    assert len(registry._refs) == 1  # the dead one's reference went with it
    registry.clear()
    assert registry.members() == []
    client = resp.Client.from_url(redis_url)
    assert client.ping()
    (conn,) = client._pool._idle
    assert conn in _OPEN.members()  # what a forked child closes
    client.close()


def test_fork_child_uses_its_own_connection(redis_url: str, key: str, closing: Closing) -> None:
    client = closing(resp.Client.from_url(redis_url))
    parent_id = client.execute("CLIENT", "ID")
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            child_id = client.execute("CLIENT", "ID")
            if child_id != parent_id and client.rpush(key, "from child") == 1:
                status = 0
            client.close()  # must not break the parent's socket
        except BaseException:
            status = 2
        finally:
            os._exit(status)
    _, wait_status = os.waitpid(pid, 0)
    assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
    assert client.execute("CLIENT", "ID") == parent_id  # the parent's connection is intact
    assert client.lpop(key) == b"from child"


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # what is tested
def test_a_fork_while_another_thread_connects_leaves_the_child_no_copy_of_its_socket() -> None:
    """A thread is in its TLS handshake (with a server that never answers one)
    when the process forks. When the thread gives up and closes its socket,
    the server sees the connection end, though the child lives on. (The
    socket was known to the fork hook only once connected: the child's copy
    kept the connection open, and a BLPOP abandoned by the parent would have
    gone on taking messages.)"""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    failures: List[BaseException] = []

    def connect() -> None:
        try:
            resp.Client("127.0.0.1", port, ssl=True, socket_connect_timeout=1.5).ping()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    listener.settimeout(10)
    accepted, _ = listener.accept()  # the thread is connected, in its handshake
    pid = os.fork()
    if pid == 0:  # the child: outlives the thread's connection, never returns into pytest
        try:
            time.sleep(10)
        finally:
            os._exit(0)
    try:
        thread.join(10)
        assert len(failures) == 1 and isinstance(failures[0], resp.TimeoutError), failures
        accepted.settimeout(3)
        while accepted.recv(4096):  # its ClientHello, then the end
            pass
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        accepted.close()
        listener.close()


def test_a_fork_or_a_connection_from_the_thread_making_a_socket_does_not_wait_on_itself(redis_url: str) -> None:
    """What a signal handler (or a finalizer) may do while its thread holds
    the lock that a fork waits on: fork at once, the child connecting freely,
    and connect itself. (With a plain lock, the fork waited and the child, and
    the connection, hung.)"""
    from resp import connection

    with connection._MAKING:  # as the thread making a socket holds it
        reentered = connection._MAKING.acquire(True, 1.0)  # not a plain lock, which would hang what follows
        assert reentered
        connection._MAKING.release()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            status = 1
            try:
                with resp.Client.from_url(redis_url, socket_connect_timeout=2) as client:
                    status = 0 if client.ping() else 1
            finally:
                os._exit(status)
        forked_in = time.monotonic() - started
        with resp.Client.from_url(redis_url, socket_connect_timeout=2) as client:
            assert client.ping()
    wait_status = reap_child(pid, 10)
    assert wait_status is not None, "the child hung"
    assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0
    assert forked_in < 5, forked_in  # a plain lock hung it for good; a large PyPy heap forks slowly


_FORK_WHILE_A_PACKAGE_LOADS = r"""
import os, signal, sys, threading, time
import resp

threading.Thread(target=lambda: __import__("slowpkg"), daemon=True).start()
time.sleep(0.3)  # slowpkg.impl is made, slowpkg is still loading
assert "slowpkg.impl" in sys.modules
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # SIGALRM ends a child that hangs
    import slowpkg
    try:
        slowpkg.work()
    except slowpkg.Error:
        os._exit(0)
    except Exception:
        os._exit(3)  # the Error class of a half-made package, not this one
    os._exit(4)
_, status = os.waitpid(pid, 0)
print("killed by signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def test_a_child_forked_while_a_thread_imports_a_package_imports_it_whole(tmp_path: Any) -> None:
    """The child forgets a package another thread was importing as it forked,
    with its submodules made meanwhile, and imports them afresh: without the
    submodules, one kept would hold what the half-made package had defined
    (another Error class). Without any of this, the child's import hung."""
    package = tmp_path / "slowpkg"
    package.mkdir()
    (package / "__init__.py").write_text("import time\n\nclass Error(Exception):\n    pass\n\n"
                                         "from .impl import work\n\ntime.sleep(1.0)\n")
    (package / "impl.py").write_text("from . import Error\n\ndef work():\n    raise Error('boom')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", _FORK_WHILE_A_PACKAGE_LOADS], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), root])))
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stdout + done.stderr


def _first_commands_at_once(client: resp.Client, name: str) -> int:
    # In a forked child: 8 threads make their first commands on the inherited
    # client at the same moment, switching threads as often as they can.
    # 0: all ran, and no more connections stayed open than the bound.
    sys.setswitchinterval(1e-6)
    errors: List[BaseException] = []
    barrier = threading.Barrier(8)

    def work(t: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                assert client.execute("ECHO", f"{t}:{i}") == f"{t}:{i}".encode()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        print("threads hung")
        return 3
    if errors:
        print(repr(errors[0]))
        return 1
    sys.setswitchinterval(0.005)
    with resp.Client(client.address.host, client.address.port) as observer:
        opened = observer.execute("CLIENT", "LIST").decode().count(f"name={name} ")
    return 0 if opened <= 2 else 2


def test_a_forked_childs_threads_share_the_inherited_client_from_the_start(redis_url: str,
                                                                           closing: Closing) -> None:
    """The child's pool is reset once, as it is forked: threads that find it
    inherited all at once do not each reset it, wiping the lock or the count
    another one holds (an error, a hang, or past max_connections)."""
    name = "forked-" + uuid.uuid4().hex[:8]
    client = closing(resp.Client.from_url(redis_url, client_name=name, max_connections=2))
    for _ in range(30):  # each child meets the race a few times in ten
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            status = 4
            try:
                status = _first_commands_at_once(client, name)
            finally:
                sys.stdout.flush()
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.WIFEXITED(wait_status) and os.WEXITSTATUS(wait_status) == 0, (
            "1: a command failed, 2: past max_connections, 3: hung")


def test_threads_share_one_client(client: resp.Client, key: str) -> None:
    pushed = [[f"{t}:{i}".encode() for i in range(150)] for t in range(8)]
    popped: List[List[Optional[bytes]]] = [[] for _ in range(8)]
    errors: List[BaseException] = []

    def work(t: int) -> None:
        try:
            for value in pushed[t]:
                client.rpush(key, value)
                got = client.lpop(key)
                if got is not None:
                    popped[t].append(got)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not [thread for thread in threads if thread.is_alive()]
    assert not errors
    rest = client.lpop(key, 10_000) or []
    everything = [v for values in popped for v in values] + rest
    assert sorted(everything) == sorted(v for values in pushed for v in values)  # type: ignore[type-var]


def test_max_connections_is_a_bound(redis_url: str, key: str, closing: Closing) -> None:
    name = "bound-" + uuid.uuid4().hex[:8]
    client = closing(resp.Client.from_url(redis_url, client_name=name, max_connections=2))
    observer = closing(resp.Client.from_url(redis_url))
    seen: List[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            seen.append(observer.execute("CLIENT", "LIST").decode().count(f"name={name} "))

    def work() -> None:
        for i in range(100):
            client.rpush(key, i)
            client.lpop(key)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=work) for _ in range(6)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(10)
    done.set()
    sampler.join()
    assert not [thread for thread in workers if thread.is_alive()], "workers stuck waiting for a connection"
    assert max(seen) <= 2
    assert 2 in seen  # the bound was reached, so it was what held the count down
    assert client.llen(key) == 0


def test_max_connections_wait_times_out(redis_url: str) -> None:
    # The one place is held outside any command: a command's own deadline
    # would end before a later waiter's, and a blocking command holds none.
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=0.5)
    held, _ = client._pool.acquire()
    started = time.monotonic()
    with pytest.raises(resp.PoolTimeoutError, match="all 1 connections stayed busy") as raised:
        client.ping()
    assert isinstance(raised.value, resp.TimeoutError) and isinstance(raised.value, TimeoutError)
    assert 0.3 < time.monotonic() - started < 3
    client._pool.release(held)
    assert client.ping()
    client.close()


def test_a_dead_idle_connection_does_not_restart_the_wait_for_one(redis_url: str) -> None:
    # The waiter is handed the one connection, finds it closed by the server
    # and goes back into line behind a thread that came meanwhile: it still
    # gives up socket_timeout after it began to wait, not that long again.
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=2)
    held, _ = client._pool.acquire()
    waited: List[Any] = []

    def wait() -> None:
        started = time.monotonic()
        try:
            client.ping()
        except resp.PoolTimeoutError as exc:
            waited.append(exc)
        waited.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(1.2)
    with resp.Client.from_url(redis_url) as killer:
        killer.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    time.sleep(0.2)  # the close reaches the held connection
    client._pool.release(held)
    again, _ = client._pool.acquire()  # in line behind the waiter, then ahead of it
    waiter.join(10)
    assert isinstance(waited[0], resp.PoolTimeoutError), waited
    assert waited[1] < 3.2, waited  # 2 s and some; a second wait would end at 3.4 s or later
    client._pool.release(again)
    client.close()


def test_an_interrupt_while_waiting_for_a_connection_gives_the_turn_on(redis_url: str) -> None:
    # The interrupted thread leaves the line of threads waiting for a place:
    # the one behind it gets the connection when it comes free.
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=5)
    held, _ = client._pool.acquire()
    behind: List[Any] = []

    def wait_behind() -> None:
        time.sleep(0.2)  # after the main thread has begun to wait
        behind.append(client.ping())

    thread = threading.Thread(target=wait_behind, daemon=True)
    thread.start()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.ping()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    client._pool.release(held)
    thread.join(10)
    assert behind == [True]
    assert client.ping()
    client.close()


def test_an_interrupt_while_close_closes_the_idle_connections_loses_no_place(redis_url: str) -> None:
    """Ctrl-C in close(), as it closes one idle connection of several: the
    others were dropped unclosed, their places under max_connections never
    given back, and every command after waited for room for good."""
    client = resp.Client.from_url(redis_url, max_connections=2, socket_timeout=2)
    first, _ = client._pool.acquire()
    second, _ = client._pool.acquire()
    client._pool.release(first)
    client._pool.release(second)
    real_close = type(first).close
    calls: List[Any] = []

    def interrupted_close(conn: Any) -> None:
        real_close(conn)
        calls.append(conn)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as the first one is closed

    type(first).close = interrupted_close  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            client.close()
    finally:
        type(first).close = real_close  # type: ignore[method-assign]
    assert len(calls) == 2 and client._pool._open_count == 0
    assert client.ping() and client.execute("ECHO", "both places back") == b"both places back"
    client.close()


def _named(observer: resp.Client, name: str, flag: str = "") -> int:
    # How many connections named ``name`` the server has open (with ``flag``
    # among their flags: "b" for one waiting in a blocking command).
    lines = observer.execute("CLIENT", "LIST").decode().splitlines()
    return sum(f"name={name} " in line and flag in line.split(" flags=", 1)[1].split(" ", 1)[0]
               for line in lines)


@pytest.mark.parametrize("wait", [
    lambda client, key: client.blpop(key, 0)[1],
    lambda client, key: client.blmove(key, key + ":moved", 0),
    lambda client, key: client.execute("BRPOP", key, 0)[1],
], ids=["blpop", "blmove", "execute BRPOP"])
def test_a_command_waiting_on_the_server_never_delays_the_command_that_ends_it(
        redis_url: str, key: str, wait: Callable[[resp.Client, str], Any]) -> None:
    """With max_connections=1, a thread waiting forever in a blocking command
    holds no place under the bound: another thread's RPUSH runs at once and
    ends the wait, instead of waiting for it (deadlocked, with timeout 0).
    SPEC 1: a thread blocked in get(block=True) never delays another's put."""
    name = "waiting-" + uuid.uuid4().hex[:8]
    client = resp.Client.from_url(redis_url, client_name=name, max_connections=1)
    observer = resp.Client.from_url(redis_url)
    # First on a new connection, then on the idle one the first round leaves.
    for _ in range(2):
        got: List[Any] = []
        waiter = threading.Thread(target=lambda out: out.append(wait(client, key)), args=(got,), daemon=True)
        waiter.start()
        assert wait_until(lambda: _named(observer, name, "b") == 1), "the wait never reached the server"
        started = time.monotonic()
        pusher = threading.Thread(target=client.rpush, args=(key, "hello"), daemon=True)
        pusher.start()
        pusher.join(10)
        took = time.monotonic() - started
        if pusher.is_alive():  # deadlocked: end the wait from outside so that both threads end
            observer.rpush(key, "rescue")
            pusher.join(10)
        waiter.join(10)
        assert took < 2, f"the RPUSH waited {took:.1f} s for the command it would end"
        assert got == [b"hello"]
        # The bound still holds once the wait is over: the waiter's connection
        # found the place taken (by the pusher's, now idle) and was closed.
        assert wait_until(lambda: _named(observer, name) == 1)
    assert client.ping()
    client.close()
    observer.close()


def test_a_thread_waiting_for_a_connection_gets_one_in_its_turn(redis_url: str, key: str) -> None:
    """Past max_connections, threads get connections first come, first served:
    threads that release one and ask again at once never starve a thread
    that was already waiting."""
    client = resp.Client.from_url(redis_url, max_connections=2, socket_timeout=5)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            client.lpop(key)

    pollers = [threading.Thread(target=poll, daemon=True) for _ in range(4)]
    for thread in pollers:
        thread.start()
    worst = 0.0
    try:
        time.sleep(0.2)  # the pollers keep both connections busy
        for _ in range(20):
            started = time.monotonic()
            client.rpush(key, "job")
            worst = max(worst, time.monotonic() - started)
    finally:
        stop.set()
        for thread in pollers:
            thread.join(10)
    assert not [thread for thread in pollers if thread.is_alive()]
    assert worst < 2, f"an RPUSH waited {worst:.1f} s for a connection"
    client.close()


def _interrupt_once(monkeypatch: Any, owner: Any, name: str, as_it_returns: bool = False) -> List[int]:
    # Make owner.name raise KeyboardInterrupt on its first call, as a Ctrl-C
    # landing there would (as_it_returns: after running it, a signal handled
    # as the call returns); later calls run the real one. A builtin that
    # owner (a module) only looks up, such as max, is patched into it.
    real = getattr(owner, name) if hasattr(owner, name) else getattr(builtins, name)
    raised: List[int] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        if raised:
            return real(*args, **kwargs)
        raised.append(1)
        if as_it_returns:
            real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, interrupted, raising=False)
    return raised


@pytest.mark.parametrize("where", [
    (resp.connection.Connection, "is_readable"),  # in acquire, with an idle connection popped
    (resp.pool.Pool, "release"),  # as the command ends
    (resp.client, "_monotonic"),  # as the deadline is set
])
def test_an_interrupt_anywhere_in_a_command_gives_its_place_back(
        redis_url: str, monkeypatch: Any, where: Tuple[Any, str]) -> None:
    # With one connection allowed, a place lost to an interrupt would leave
    # every later command waiting for it.
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    assert client.ping()  # one idle connection in the pool
    raised = _interrupt_once(monkeypatch, *where)
    with pytest.raises(KeyboardInterrupt):
        client.execute("BLPOP", "nothing-" + uuid.uuid4().hex, 1)
    assert raised
    assert client.ping()  # not "all 1 connections stayed busy"
    assert client._pool._open_count == 1
    client.close()


def test_an_interrupt_as_a_blocking_command_connects_gives_back_no_place(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blocking command's new connection holds no place under the bound:
    interrupted as the pool finishes setting it up, it gives none back (the
    count went to -1, one connection over the bound for good)."""
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    pool = client._pool
    raised = _interrupt_once(monkeypatch, resp.pool, "max", as_it_returns=True)
    with pytest.raises(KeyboardInterrupt):
        client.execute("BLPOP", "nothing-" + uuid.uuid4().hex, 1)
    assert raised
    monkeypatch.undo()
    assert pool._open_count == 0
    client.close()


def _replaced_at_next_command(client: resp.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # The idle connection fails its next write before sending anything (and
    # looks alive to acquire): the pool replaces it (Pool.replace).
    assert client.ping()
    client._pool._idle[0].sock.shutdown(socket.SHUT_RDWR)
    monkeypatch.setattr(resp.connection.Connection, "is_readable", lambda self: False)


def test_an_interrupt_as_replace_sets_up_the_fresh_connection_keeps_the_place(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted after connecting, before the fresh connection was in the
    command's hands: it is discarded, and its place given back (it was lost
    for good: every later command waited for it, then timed out)."""
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    _replaced_at_next_command(client, monkeypatch)
    raised = _interrupt_once(monkeypatch, resp.pool, "max", as_it_returns=True)
    with pytest.raises(KeyboardInterrupt):
        client.execute("ECHO", "x")
    assert raised
    monkeypatch.undo()
    assert client._pool._open_count == 0
    assert client.ping()
    client.close()


def test_an_interrupt_as_replace_closes_the_dead_connection_gives_its_place_back_once(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted inside the dead connection's close(): its place is given
    back once, not by replace and again by the command's discard (the count
    went to -1)."""
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    _replaced_at_next_command(client, monkeypatch)
    raised = _interrupt_once(monkeypatch, resp.connection.Connection, "close")
    with pytest.raises(KeyboardInterrupt):
        client.execute("ECHO", "x")
    assert raised
    monkeypatch.undo()
    assert client._pool._open_count == 0
    client.close()


def test_an_interrupt_inside_discard_still_gives_the_place_back(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """discard() closed the socket, then was interrupted before it gave the
    place back: a second discard found the socket closed and did nothing, so
    the place was lost, and every later command timed out waiting for it."""
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    pool = client._pool
    conn, _ = pool.acquire()
    pool.close()  # the busy connection is closed when it comes back
    real_close = resp.connection.Connection.close

    def close_then_interrupt(self: Any) -> None:
        real_close(self)
        raise KeyboardInterrupt  # as the call returns

    monkeypatch.setattr(resp.connection.Connection, "close", close_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pool.release(conn)  # a changed generation: discard
    monkeypatch.undo()
    pool.discard(conn)  # what an interrupted command does next
    assert pool._open_count == 0
    assert client.ping()
    client.close()


def test_pool_replace_keeps_the_place_under_the_bound(redis_url: str) -> None:
    # A dead connection's place passes to its replacement: a thread waiting
    # for a place does not get it in between (and the replacing one is not
    # left waiting behind the connection that thread then keeps idle).
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=5)
    pool = client._pool
    conn, _ = pool.acquire()
    waiter_got: List[Any] = []
    waiter = threading.Thread(target=lambda: waiter_got.append(pool.acquire()))
    waiter.start()
    time.sleep(0.2)
    fresh = pool.replace(conn)
    time.sleep(0.2)
    assert not waiter_got and pool._open_count == 1
    pool.release(fresh)
    waiter.join(5)
    assert waiter_got and waiter_got[0][0] is fresh
    pool.release(fresh)
    client.close()


def test_a_failed_replace_gives_back_only_a_place_held(make_server: MakeServer) -> None:
    server = make_server()
    client = resp.Client(port=server.port, max_connections=1, socket_timeout=5)
    pool = client._pool
    waiting, _ = pool.acquire(blocking=True)  # as a BLPOP's: holds no place
    busy, _ = pool.acquire()  # holds the one place
    server.stop()
    for conn in (waiting, busy):
        with pytest.raises(resp.ConnectionError):
            pool.replace(conn)
    assert pool._open_count == 0


# -- options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error",
    [
        ({"port": 0}, ValueError),
        ({"port": 65536}, ValueError),
        ({"port": "6379"}, (TypeError, ValueError)),
        ({"port": True}, (TypeError, ValueError)),
        ({"db": -1}, ValueError),
        ({"db": "0"}, (TypeError, ValueError)),
        ({"db": 1.0}, (TypeError, ValueError)),
        ({"socket_timeout": 0}, ValueError),
        ({"socket_timeout": -1}, ValueError),
        ({"socket_timeout": float("nan")}, ValueError),
        ({"socket_timeout": "1"}, TypeError),
        ({"socket_timeout": True}, TypeError),
        ({"socket_connect_timeout": 0}, ValueError),
        ({"socket_connect_timeout": "5"}, TypeError),
        ({"max_connections": 0}, ValueError),
        ({"max_connections": 1.5}, (TypeError, ValueError)),
        ({"host": ""}, (TypeError, ValueError)),
        ({"host": 127}, TypeError),
        ({"password": 1234}, TypeError),
        ({"username": b"user"}, TypeError),
        ({"client_name": 5}, TypeError),
        ({"unix_socket_path": 5}, TypeError),
        ({"unix_socket_path": "/nonexistent/redis.sock", "ssl": True}, ValueError),
        ({"unix_socket_path": "/nonexistent/redis.sock", "ssl_ca_certs": "/nonexistent/ca.pem"}, ValueError),
        ({"no_such_option": 1}, TypeError),
    ],
    ids=repr,
)
def test_invalid_options_raise_before_any_io(options: Any, error: Any) -> None:
    # The port has nothing listening: an attempt to connect would raise
    # ConnectionError instead of the error expected here.
    options = {"port": free_port(), **options}
    with pytest.raises(error):
        resp.Client(**options)


def test_tls_on_a_unix_socket_is_refused_not_dropped() -> None:
    # TLS asked for, in any of its three ways, is never silently plain text.
    import ssl

    with pytest.raises(ValueError, match="unix socket"):
        resp.Client(unix_socket_path="/nonexistent/redis.sock", ssl_context=ssl.create_default_context())
    with pytest.raises(ValueError, match="unix socket"):
        resp.Client.from_url("unix:///nonexistent/redis.sock?ssl_ca_certs=/nonexistent/ca.pem")


def test_constructor_does_no_io() -> None:
    client = resp.Client(port=free_port(), socket_timeout=1)
    with pytest.raises(resp.ConnectionError):
        client.ping()


class _PopThenInterrupt(list):  # type: ignore[type-arg]
    # An idle list whose pop() is interrupted as it returns, as a Ctrl-C
    # handled right after that call would be.
    def pop(self, *args: Any) -> Any:
        super().pop(*args)
        raise KeyboardInterrupt


def test_an_interrupt_as_an_idle_connection_is_taken_gives_its_place_back(redis_url: str) -> None:
    # With one connection allowed, a place lost with the popped connection
    # would leave every later command waiting for it.
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    assert client.ping()  # one idle connection in the pool
    pool = client._pool
    pool._idle = _PopThenInterrupt(pool._idle)
    with pytest.raises(KeyboardInterrupt):
        client.ping()
    pool._idle = []
    assert client.ping()  # not "all 1 connections stayed busy"
    assert pool._open_count == 1
    client.close()


class _AppendThenInterrupt(list):  # type: ignore[type-arg]
    # An idle list whose append() is interrupted as it returns: a Ctrl-C
    # landing in Pool.release with the connection already idle.
    def append(self, conn: Any) -> None:
        super().append(conn)
        raise KeyboardInterrupt


def test_an_interrupt_inside_release_neither_loses_the_place_nor_closes_an_idle_connection(redis_url: str) -> None:
    # Interrupted before the lease changed, release is undone: the connection
    # leaves the idle list again and the interrupted command discards it,
    # giving its place back. (Left idle, it would be closed under another
    # thread that took it; left out and not discarded, its place would be
    # lost for good: with one allowed, every later command would wait.)
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    first_id = client.execute("CLIENT", "ID")
    pool = client._pool
    pool._idle = _AppendThenInterrupt(pool._idle)
    with pytest.raises(KeyboardInterrupt):
        client.ping()
    assert list(pool._idle) == []
    pool._idle = []
    assert pool._open_count == 0
    assert client.execute("CLIENT", "ID") != first_id  # a new connection, in the place given back
    assert pool._open_count == 1
    assert [conn.sock.fileno() >= 0 for conn in pool._idle] == [True]
    client.close()


# -- a pool without a bound: no lock (see rule 6 in resp/pool.py) --------------------


def test_an_interrupt_as_an_unbounded_pool_hands_out_a_connection_leaves_it_to_no_command(
        redis_url: str, closing: Closing) -> None:
    # The connection popped is lost to the interrupt, and closed by the
    # garbage collector: it is neither idle in the pool nor left open.
    client = closing(resp.Client.from_url(redis_url, socket_timeout=5))
    observer = closing(resp.Client.from_url(redis_url))
    popped_id = client.execute("CLIENT", "ID")
    pool = client._pool
    pool._idle = _PopThenInterrupt(pool._idle)
    with pytest.raises(KeyboardInterrupt):
        client.ping()
    pool._idle = []
    gc.collect()  # PyPy has no reference counts
    assert wait_until(lambda: popped_id not in client_ids(observer))
    assert client.execute("CLIENT", "ID") != popped_id


def test_an_interrupt_inside_an_unbounded_release_leaves_the_connection_idle_and_open(
        redis_url: str, closing: Closing) -> None:
    # Interrupted once the connection is idle: another thread may have taken
    # it already, so the interrupted command must not close it; the next
    # command uses it.
    client = closing(resp.Client.from_url(redis_url, socket_timeout=5))
    first_id = client.execute("CLIENT", "ID")
    pool = client._pool
    pool._idle = _AppendThenInterrupt(pool._idle)
    with pytest.raises(KeyboardInterrupt):
        client.ping()
    assert [conn.sock.fileno() >= 0 for conn in pool._idle] == [True]
    pool._idle = list(pool._idle)
    assert client.execute("CLIENT", "ID") == first_id


def test_an_interrupt_as_an_unbounded_pool_checks_an_idle_connection_closes_it(
        redis_url: str, closing: Closing, monkeypatch: pytest.MonkeyPatch) -> None:
    # Interrupted between taking the idle connection and handing it to the
    # command (a Ctrl-C handled inside is_readable()): the command never
    # held it, so acquire itself must close it, as the bounded pool does.
    # Left open, it stays connected after close() for as long as the
    # KeyboardInterrupt (its traceback) is kept.
    client = closing(resp.Client.from_url(redis_url, socket_timeout=5))
    observer = closing(resp.Client.from_url(redis_url))
    conn_id = client.execute("CLIENT", "ID")
    [conn] = client._pool._idle

    def interrupted(self: Any) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(resp.connection.Connection, "is_readable", interrupted)
    with pytest.raises(KeyboardInterrupt) as kept:  # keeps the traceback alive
        client.ping()
    monkeypatch.undo()
    client.close()
    assert conn not in client._pool._idle
    assert conn.sock.fileno() == -1, "the connection taken was left open"
    assert wait_until(lambda: conn_id not in client_ids(observer))
    assert kept.value is not None


class _CloseAround(list):  # type: ignore[type-arg]
    # An idle list whose append() runs the pool's close() just before or
    # just after it adds the connection: a close() in another thread landing
    # inside a release that takes no lock.
    def __init__(self, pool: Any, close_first: bool) -> None:
        super().__init__(pool._idle)
        self.pool, self.close_first = pool, close_first

    def append(self, conn: Any) -> None:
        if self.close_first:
            self.pool.close()
        super().append(conn)
        if not self.close_first:
            self.pool.close()


@pytest.mark.parametrize("close_first", [True, False], ids=["close-then-append", "append-then-close"])
def test_a_close_inside_an_unbounded_release_still_closes_that_connection(
        redis_url: str, closing: Closing, close_first: bool) -> None:
    client = closing(resp.Client.from_url(redis_url, socket_timeout=5))
    assert client.ping()
    pool = client._pool
    [conn] = pool._idle
    pool._idle = _CloseAround(pool, close_first)
    assert client.ping()  # takes conn, then gives it back as close() runs
    assert conn.sock.fileno() == -1
    assert list(pool._idle) == [] and not isinstance(pool._idle, _CloseAround)
    assert client.ping()  # a fresh connection


def test_threads_share_an_unbounded_pool_while_it_is_closed_again_and_again(
        redis_url: str, closing: Closing) -> None:
    # Every reply reaches the command that asked for it, and after the last
    # close() not one connection is left open.
    name = "closing-" + uuid.uuid4().hex[:8]
    client = resp.Client.from_url(redis_url, socket_timeout=5, client_name=name)
    observer = closing(resp.Client.from_url(redis_url))
    errors: List[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(300):
                value = f"{t}:{i}".encode()
                got = client.execute("ECHO", value)
                if got != value:
                    raise AssertionError(f"sent {value!r}, got {got!r}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        client.close()
        time.sleep(0.001)
    for thread in threads:
        thread.join(30)
    assert not errors
    client.close()
    assert wait_until(lambda: f"name={name} " not in observer.execute("CLIENT", "LIST").decode())


class _ReturnThenInterrupt:
    # Wraps a pool method so that it is interrupted as it returns, before
    # the caller has stored what it returned: where Python before 3.11 runs a
    # signal handler (after every call), as a Ctrl-C landing there would.
    def __init__(self, real: Any) -> None:
        self.real, self.raised = real, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.real(*args, **kwargs)
        if not self.raised:
            self.raised += 1
            raise KeyboardInterrupt
        return result


@pytest.mark.parametrize("method", ["acquire", "replace"])
def test_an_interrupt_as_a_connection_is_handed_over_gives_its_place_back(
        redis_url: str, monkeypatch: Any, method: str) -> None:
    # With one connection allowed, a place lost with a connection taken from
    # the pool (or made in place of a dead one) and never given back would
    # leave every later command waiting for it: "all 1 connections stayed busy".
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=1)
    pool = client._pool
    assert client.ping()  # one idle connection in the pool
    if method == "replace":
        # Found dead at the first write (EPIPE), not before: replaced.
        pool._idle[0].sock.shutdown(socket.SHUT_WR)
        monkeypatch.setattr(resp.connection.Connection, "is_readable", lambda self: False)
    wrapper = _ReturnThenInterrupt(getattr(pool, method))
    monkeypatch.setattr(pool, method, wrapper)
    with pytest.raises(KeyboardInterrupt):
        client.execute("ECHO", "lost?")
    assert wrapper.raised
    assert client.execute("ECHO", "next") == b"next"  # not a TimeoutError after 1 s
    assert pool._open_count == 1 and len(pool._idle) == 1
    client.close()


def test_a_pipeline_sends_the_value_queued_not_the_buffer_later(client: resp.Client, key: str) -> None:
    buffer = bytearray(b"a" * LARGE_VALUE)
    pipe = client.pipeline().command("SET", key, buffer)
    buffer[:] = b"b" * LARGE_VALUE  # the caller reuses its buffer
    buffer.extend(b"more")  # and may resize it: no view of it is kept
    assert pipe.execute() == ["OK"]
    assert client.execute("GET", key) == b"a" * LARGE_VALUE
    client.delete(key)


@pytest.mark.parametrize("url", ["unix://tmp/redis.sock", "unix://:secret@tmp/redis.sock?db=2"])
def test_a_unix_url_with_a_host_is_refused(url: str) -> None:
    # Two slashes: 'tmp' is the host part, and the path would be /redis.sock.
    with pytest.raises(ValueError, match="three slashes") as caught:
        resp.Client.from_url(url)
    assert "secret" not in str(caught.value)


def test_a_url_without_its_two_slashes_is_refused_and_one_after_a_space_is_not() -> None:
    for url in ("redis:localhost", "redis:/0", "REDIS:x", "rediss:"):
        with pytest.raises(ValueError, match="expected redis://"):
            resp.Client.from_url(url)
    # urllib (since the 2023 security releases) drops the spaces before a URL,
    # as from an environment variable written with one: the slashes are
    # still there, and the URL is read as urllib reads it.
    from urllib.parse import urlsplit

    if urlsplit(" redis://localhost").scheme == "redis":
        assert repr(resp.Client.from_url(" redis://localhost:7/2")) == "<resp.Client localhost:7 db=2>"
    else:
        with pytest.raises(ValueError, match="scheme"):
            resp.Client.from_url(" redis://localhost:7/2")


def test_an_at_sign_in_a_socket_path_is_given_as_percent_40() -> None:
    """An unescaped '@' after the host part is refused (a password with a
    slash too many would be read as a socket path, and shown in errors)."""
    from resp.urls import parse_url

    assert parse_url("unix:///run/redis%40main.sock") == {"unix_socket_path": "/run/redis@main.sock"}
    with pytest.raises(ValueError, match="%40"):
        resp.Client.from_url("unix:///run/redis@main.sock")


def test_one_bad_byte_then_silence_is_a_protocol_error_not_a_wait(tiny_server: Any) -> None:
    def script(command: List[bytes]) -> List[Any]:
        return [b"x", 30.0]

    server = tiny_server(script)
    client = resp.Client(port=server.port, socket_timeout=10)
    started = time.monotonic()
    with pytest.raises(resp.ProtocolError):
        client.ping()
    assert time.monotonic() - started < 5  # not the socket timeout


REFUSED = [("MULTI",), ("watch", "k"), (b"SELECT", 3), ("AUTH", "x"), ("HELLO", "3"), ("RESET",),
           ("SUBSCRIBE", "c"), ("PSUBSCRIBE", "c*"), ("SSUBSCRIBE", "c"), ("unsubscribe", "a", "b"),
           ("PUNSUBSCRIBE", "a*", "b*"), (b"SUNSUBSCRIBE", "a", "b"), ("MONITOR",), ("CLIENT", "REPLY", "OFF"),
           ("client", b"reply", "SKIP"), ("QUIT",), ("sync",), ("PSYNC", "?", "-1"),
           ("REPLCONF", "GETACK", "*"), ("replconf", "ACK", 0), ("SCRIPT", "DEBUG", "YES"), ("script", "debug", "sync"),
           # Any bytes-like name is the command whose bytes it holds.
           (array.array("B", b"MULTI"),), (array.array("B", b"select"), 3), (memoryview(bytearray(b"QUIT")),)]


@pytest.mark.parametrize("args", REFUSED)
def test_a_command_that_would_change_a_pooled_connection_is_refused(redis_url: str, key: str, args: Any) -> None:
    """Connections are pooled: ``execute("MULTI")`` would make a later
    ``RPUSH`` on that connection answer ``QUEUED`` and never run, ``SELECT``
    would send later commands to another database. Refused, nothing sent."""
    client = resp.Client.from_url(redis_url, max_connections=1, socket_timeout=5)  # REPLCONF: no reply
    try:
        with pytest.raises(ValueError, match="nothing was sent"):
            client.execute(*args)
        pipe = client.pipeline()
        name = args[0] if isinstance(args[0], str) else bytes(args[0]).decode()
        if name.upper() not in ("MULTI", "WATCH"):  # a pipeline takes those, closed in it
            with pytest.raises(ValueError, match="nothing was sent"):
                pipe.command(*args)
            assert len(pipe) == 0
        assert client.rpush(key, "x") == 1  # run now, in this client's database
        with resp.Client.from_url(redis_url) as other:
            assert other.llen(key) == 1
        assert isinstance(client.execute("CLIENT", "ID"), int)  # other CLIENT subcommands go
        assert client.execute("SCRIPT", "DEBUG", "no") == "OK"  # and other SCRIPT ones
        assert client.execute("SCRIPT", "EXISTS", "0" * 40) == [0]
    finally:
        client.delete(key)
        client.close()


def test_a_pipeline_must_close_its_multi_or_watch(client: resp.Client, key: str) -> None:
    for opened in (["MULTI"], ["WATCH", key]):
        pipe = client.pipeline().command(*opened).command("RPUSH", key, "never")
        with pytest.raises(ValueError, match="closed by EXEC or DISCARD"):
            pipe.execute()
        assert len(pipe) == 0 and client.llen(key) == 0  # nothing was sent
    # Names are compared as the server does, ASCII letters alone made
    # upper-case: "diſcard".upper() is "DISCARD", a command it does not know.
    pipe = client.pipeline().command("MULTI").command("RPUSH", key, "never").command("diſcard")
    with pytest.raises(ValueError, match="closed by EXEC or DISCARD"):
        pipe.execute()
    replies = client.pipeline().command("WATCH", key).command("MULTI").command("RPUSH", key, "a").command(
        "EXEC").execute()
    assert replies == ["OK", "OK", "QUEUED", [1]]
    assert client.pipeline().command("MULTI").command("RPUSH", key, "b").command("DISCARD").execute() == [
        "OK", "QUEUED", "OK"]
    assert client.lpop(key, 5) == [b"a"]


@pytest.mark.parametrize("closer", ["DISCARD", "EXEC"])
def test_a_watch_is_not_closed_by_exec_or_discard_without_a_multi(redis_url: str, key: str, closer: str) -> None:
    """The server refuses EXEC and DISCARD without a MULTI and keeps the
    WATCH: sent, it would stay on the pooled connection and silently abort a
    later transaction there (EXEC -> None) once the key changed. Refused,
    nothing sent; UNWATCH closes a WATCH."""
    client = resp.Client.from_url(redis_url, max_connections=1)  # one connection: every command reuses it
    try:
        pipe = client.pipeline().command("WATCH", key).command("GET", key).command(closer)
        with pytest.raises(ValueError, match="closed by EXEC or DISCARD"):
            pipe.execute()
        assert len(pipe) == 0
        assert client.pipeline().command("WATCH", key).command("GET", key).command("UNWATCH").execute() == [
            "OK", None, "OK"]
        with resp.Client.from_url(redis_url) as other:
            other.execute("SET", key, "changed")
        counter = key + "-counter"
        assert client.pipeline().command("MULTI").command("INCR", counter).command("EXEC").execute() == [
            "OK", "QUEUED", [1]]
        client.delete(counter)
        # Inside a MULTI, EXEC and DISCARD end the WATCH too.
        assert client.pipeline().command("WATCH", key).command("MULTI").command("DISCARD").execute() == [
            "OK", "OK", "OK"]
    finally:
        client.delete(key)
        client.close()


def test_a_watch_whose_multi_the_server_refused_is_not_left_on_the_connection(
        make_server: MakeServer, key: str) -> None:
    """A MULTI refused by the server (an ACL without it) leaves the WATCH
    before it in place: on a pooled connection it would abort a later
    transaction there (EXEC -> None) once the key changed. The pipeline ends
    with an UNWATCH, its reply dropped."""
    server = make_server()
    with resp.Client(port=server.port) as admin:
        assert admin.execute("ACL", "SETUSER", "u", "on", ">pw", "~*", "+@all", "-multi") == "OK"
        user = resp.Client(port=server.port, username="u", password="pw", max_connections=1)
        try:
            pipe = user.pipeline().command("WATCH", key).command("MULTI").command("GET", key).command("EXEC")
            replies = pipe.execute(raise_on_error=False)
            assert len(replies) == 4 and replies[0] == "OK"
            assert isinstance(replies[1], resp.NoPermissionError)
            assert admin.execute("ACL", "SETUSER", "u", "+multi") == "OK"
            admin.execute("SET", key, "changed")  # what the WATCH, if left, would see
            assert user.pipeline().command("MULTI").command("INCR", key + "n").command("EXEC").execute() == [
                "OK", "QUEUED", [1]]
            assert user.pipeline().command("WATCH", key).command("UNWATCH").execute() == ["OK", "OK"]
        finally:
            user.close()


@pytest.mark.parametrize("closer", [("DISCARD", "all"), ("EXEC", "now"), ("DISCARD",)])
def test_a_multi_the_server_kept_open_is_not_left_on_the_connection(
        make_server: MakeServer, key: str, closer: Tuple[str, ...]) -> None:
    """A DISCARD (or EXEC) the server refuses leaves the MULTI open: every
    later command on that pooled connection would be queued, not run, its
    reply "QUEUED" (an RPUSH never written). The connection is closed. The
    last closer is an ACL's refusal (Redis 7.0 answers an EXEC of the wrong
    arity EXECABORT, and ends the MULTI)."""
    server = make_server()
    with resp.Client(port=server.port) as admin:
        assert admin.execute("ACL", "SETUSER", "u", "on", ">pw", "~*", "+@all", "-discard") == "OK"
        user = resp.Client(port=server.port, username="u", password="pw", max_connections=1)
        try:
            pipe = user.pipeline().command("MULTI").command("RPUSH", key, "queued").command(*closer)
            replies = pipe.execute(raise_on_error=False)
            assert replies[:2] == ["OK", "QUEUED"] and isinstance(replies[2], resp.ResponseError)
            assert user.rpush(key, "written") == 1
            assert user.llen(key) == 1 and admin.lpop(key) == b"written"
            # A WATCH before it changes nothing.
            pipe = user.pipeline().command("WATCH", key).command("MULTI").command("RPUSH", key, "q").command(*closer)
            assert pipe.execute(raise_on_error=False)[:3] == ["OK", "OK", "QUEUED"]
            assert user.rpush(key, "written") == 1 and admin.lpop(key) == b"written"
        finally:
            user.close()


def test_a_transaction_keeps_its_connection_for_a_user_without_unwatch(make_server: MakeServer, key: str) -> None:
    """Whether a MULTI is still open is read from the replies to its EXEC or
    DISCARD, not from an UNWATCH sent after it, which a user without that
    command is refused: each such pipeline would close its connection."""
    server = make_server()
    with resp.Client(port=server.port) as admin:
        assert admin.execute("ACL", "SETUSER", "u", "on", ">pw", "~*", "+@all", "-unwatch") == "OK"
        with resp.Client(port=server.port, username="u", password="pw") as user:
            first = user.execute("CLIENT", "ID")
            for closer in ("EXEC", "DISCARD", "EXEC"):
                replies = user.pipeline().command("MULTI").command("INCR", key).command(closer).execute()
                assert replies[:2] == ["OK", "QUEUED"]
            assert user.execute("CLIENT", "ID") == first
            assert admin.execute("GET", key) == b"2"


def test_lua_status_and_error_replies_of_70_kib(client: resp.Client) -> None:
    text = "x" * 70_000
    assert client.execute("EVAL", "return redis.status_reply(ARGV[1])", 0, text) == text
    with pytest.raises(resp.ResponseError) as info:
        client.execute("EVAL", "return redis.error_reply(ARGV[1])", 0, "ERR " + text)
    assert str(info.value) == "ERR " + text
    assert client.ping()


@pytest.mark.parametrize("host", ["redis..internal", "x" * 64 + ".example"])
def test_host_name_refused_by_idna_is_a_connection_error(host: str) -> None:
    client = resp.Client(host=host, socket_timeout=2)
    with pytest.raises(resp.ConnectionError, match="could not connect"):
        client.ping()
