"""Security: a password never shows in ``str``/``repr``, exception messages
(tracebacks included) or log records; ``rediss://`` verifies the server's
certificate and host name by default.
"""

import logging
import os
import socket
import ssl
import threading
import time
import traceback
from typing import Any, Callable, Dict, List

import pytest
from redis_server import free_port, make_certificates

import resp
from hotqueue import HotQueue

PASSWORD = "pw-Xq7-s3cr3t-9Zk"  # distinctive: a substring match means a leak
WRONG = "wrong-Pw-4jR-88Vb"
SECRETS = (PASSWORD, WRONG)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password leaked into: {text!r}"


def assert_exception_clean(exc: BaseException) -> None:
    # The whole chain, as a traceback would print it.
    assert_no_secret("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    assert_no_secret(repr(exc))


def test_password_not_in_str_or_repr(make_server: Any) -> None:
    server = make_server(["--requirepass", PASSWORD])
    url = f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0"
    client = resp.Client("127.0.0.1", server.port, password=PASSWORD)
    objects: List[Any] = [
        client,
        resp.Client.from_url(url),
        HotQueue("q", host="127.0.0.1", port=server.port, password=PASSWORD),
        HotQueue("q", url=url),
        client.pipeline(),
    ]
    assert client.ping()
    conn, _ = client._pool.acquire()  # a real, authenticated connection
    objects += [conn, conn.address]
    client._pool.release(conn)
    for obj in objects:
        assert_no_secret(str(obj))
        assert_no_secret(repr(obj))
        assert_no_secret(f"{obj!r:>10}")
    client.close()


@pytest.mark.parametrize("username", [None, "default"])
def test_wrong_password_error_names_no_password(make_server: Any, username: Any) -> None:
    server = make_server(["--requirepass", PASSWORD])
    client = resp.Client("127.0.0.1", server.port, password=WRONG, username=username)
    with pytest.raises(resp.AuthenticationError) as info:
        client.ping()
    assert_exception_clean(info.value)
    with pytest.raises(resp.AuthenticationError) as info:
        HotQueue("q", url=f"redis://:{WRONG}@127.0.0.1:{server.port}").put("x")
    assert_exception_clean(info.value)


def test_password_that_cannot_be_sent_is_refused_without_repeating_it(make_server: Any) -> None:
    # A lone surrogate: what os.environ gives for a non-UTF-8 byte. The
    # UnicodeEncodeError of the first AUTH held the whole password in its repr.
    server = make_server(["--requirepass", PASSWORD])
    with pytest.raises(ValueError) as info:
        resp.Client("127.0.0.1", server.port, password=PASSWORD + "\udcff", socket_timeout=5).ping()
    assert_exception_clean(info.value)
    assert "\udcff" not in str(info.value)


def test_no_password_error_is_clear(make_server: Any) -> None:
    server = make_server(["--requirepass", PASSWORD])
    with resp.Client("127.0.0.1", server.port) as client, pytest.raises(resp.AuthenticationError) as info:
        client.ping()
    assert "NOAUTH" in str(info.value)


def test_unreachable_server_error_names_no_password() -> None:
    port = free_port()  # nothing listens there
    for client in (resp.Client("127.0.0.1", port, password=PASSWORD, socket_timeout=2),
                   resp.Client.from_url(f"redis://user:{PASSWORD}@127.0.0.1:{port}/0")):
        with pytest.raises(resp.ConnectionError) as info:
            client.ping()
        assert_exception_clean(info.value)
        assert str(port) in str(info.value)  # it does say where


@pytest.mark.parametrize("url", [
    f"redis://:{PASSWORD}@127.0.0.1:port/0",
    f"redis://user:{PASSWORD}@127.0.0.1:99999/0",
    f"redis://:{PASSWORD}@127.0.0.1/notadb",
    f"redis://:{PASSWORD}@127.0.0.1/0?socket_timeout=soon",
    f"redis://:{PASSWORD}@127.0.0.1/0?db=x",
    f"redis://:{PASSWORD}@127.0.0.1/0?colour=blue",
    f"redis://:{PASSWORD}@[::1/0",
    f"http://:{PASSWORD}@127.0.0.1/0",
    f"redis://:se/{PASSWORD}@127.0.0.1/0",  # an unescaped '/' in the password
    f"redis://:se?{PASSWORD}@127.0.0.1/0",  # an unescaped '?'
    f"redis://:se#{PASSWORD}@127.0.0.1/0",  # an unescaped '#'
    # A password that starts with digits reads as a port before its '/', '?' or '#'.
    f"redis://user:1234/{PASSWORD}@127.0.0.1/0",
    f"redis://user:1234?{PASSWORD}@127.0.0.1/0",
    f"redis://user:1234#{PASSWORD}@127.0.0.1/0",
    f"redis+cluster://user:1234/{PASSWORD}@127.0.0.1:7000",
    f"redis+cluster://user:1234?{PASSWORD}@127.0.0.1:7000",
    f"redis+sentinel://user:1234/{PASSWORD}@127.0.0.1:26379/mymaster",
    # A slash too many or too few: no host part, and the rest read as a db or a socket path.
    f"redis:///:{PASSWORD}@localhost/0",
    f"redis:/:{PASSWORD}@localhost/0",
    f"redis::{PASSWORD}@localhost",
    f"redis:{PASSWORD}@localhost",
    f"unix:///:{PASSWORD}@/tmp/redis.sock",
    f"redis+cluster:///:{PASSWORD}@127.0.0.1:7000",
    f"redis:{PASSWORD}@127.0.0.1://x",  # an '@' in what would be the scheme
    f"redis:{PASSWORD}://127.0.0.1",
])
def test_malformed_url_error_names_no_password(url: str) -> None:
    for make in (resp.Client.from_url, resp.from_url, lambda u: HotQueue("q", url=u)):
        if "+" in url and make is resp.Client.from_url:
            continue  # cluster and sentinel URLs are resp.from_url's
        with pytest.raises(ValueError) as info:
            make(url)
        assert_exception_clean(info.value)


@pytest.mark.parametrize("make", [
    lambda: resp.Client(host=f"admin:{PASSWORD}@127.0.0.1", port=7000),
    lambda: HotQueue("q", host=f"admin:{PASSWORD}@127.0.0.1"),
    lambda: resp.ClusterClient([f"admin:{PASSWORD}@127.0.0.1:7000"]),
    lambda: resp.ClusterClient([(f"admin:{PASSWORD}@127.0.0.1", 7000)]),
    lambda: resp.SentinelClient([f"admin:{PASSWORD}@127.0.0.1:26379"], "mymaster"),
    lambda: resp.SentinelClient([(f"admin:{PASSWORD}@127.0.0.1", 26379)], "mymaster"),
], ids=["Client", "HotQueue", "cluster node", "cluster pair", "sentinel", "sentinel pair"])
def test_a_host_with_a_password_before_an_at_is_refused_without_repeating_it(make: Callable[[], Any]) -> None:
    """A host written as a URL's authority, password and all, was taken as a
    host name, and shown in repr and in every connection error."""
    with pytest.raises(ValueError, match="has no '@'") as info:
        make()
    assert_exception_clean(info.value)


def test_log_records_during_outage_name_no_password(make_server: Any, key: str, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_server(["--requirepass", PASSWORD])
    queue = HotQueue(key, url=f"redis://default:{PASSWORD}@127.0.0.1:{server.port}/0", socket_timeout=2)
    got: List[Any] = []

    def run() -> None:
        for msg in queue.consume():
            got.append(msg)
            if msg == "last":
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    queue.put("first")
    deadline = time.monotonic() + 10
    while got != ["first"] and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()
    time.sleep(0.8)
    server.start()
    queue.put("last")
    thread.join(15)
    queue.client.close()
    assert got == ["first", "last"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings, "the outage was logged"
    handler = logging.StreamHandler()
    for record in caplog.records:
        assert_no_secret(record.getMessage())
        assert_no_secret(handler.format(record))  # exc_info and stack too
    assert_no_secret(caplog.text)


# -- TLS -----------------------------------------------------------------------------


def _raised_within(seconds: float, call: Callable[[], Any], hung: str) -> BaseException:
    """What ``call`` raises, run in a daemon thread that must end within
    ``seconds`` (one stuck for ever must not hold up the run)."""
    outcome: List[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), hung
    assert len(outcome) == 1, "it returned instead of raising"
    return outcome[0]


def test_rediss_refuses_self_signed_certificate_by_default(make_server: Any) -> None:
    server = make_server(tls=True)
    for client in (resp.Client("localhost", server.port, ssl=True, socket_timeout=5),
                   resp.Client.from_url(f"rediss://localhost:{server.port}/0", socket_timeout=5)):
        with pytest.raises(resp.CertificateError) as info:  # a resp.ConnectionError
            client.ping()
        message = str(info.value)
        assert "certificate" in message and "not trusted" in message, message
        assert "give ssl_ca_certs" in message  # an unknown CA: trusting it is the cure


@pytest.mark.parametrize("reliable", [False, True])
def test_consume_raises_a_refused_certificate_rather_than_wait(make_server: Any, reliable: bool) -> None:
    """A certificate the client refuses is a configuration to fix, like a
    refused password: consume() and the workers raise it instead of retrying
    for ever as they do while a server is out of reach."""
    server = make_server(tls=True)
    queue = HotQueue("cert", host="localhost", port=server.port, ssl=True, socket_timeout=5)

    def consume() -> None:
        if reliable:
            queue.worker(reliable=True, timeout=1)(lambda message: None)()
        else:
            list(queue.consume(timeout=1))

    raised = _raised_within(10, consume, "consume() went on retrying a refused certificate")
    assert isinstance(raised, resp.CertificateError), raised


def test_rediss_with_the_ca_verifies_and_connects(make_server: Any) -> None:
    server = make_server(tls=True)
    ca = f"{server.tls_dir}/ca.crt"
    for client in (resp.Client("localhost", server.port, ssl=True, ssl_ca_certs=ca, socket_timeout=5),
                   resp.Client.from_url(f"rediss://localhost:{server.port}/0?ssl_ca_certs={ca}")):
        with client:
            assert client.ping()
            conn, _ = client._pool.acquire()
            assert conn.sock.version() is not None  # really TLS  # type: ignore[attr-defined]
            client._pool.release(conn)
            # Long values: the second and the fourth are read, through the TLS
            # socket's recv_into(), into the buffer that the first and the
            # third (longer than any before it) earned.
            for size in (300_000, 300_000, 1_000_000, 1_000_000):
                value = os.urandom(size)
                client.execute("SET", "tls-long", value)
                assert client.execute("GET", "tls-long") == value


def test_rediss_refuses_a_host_name_mismatch(make_server: Any) -> None:
    # A certificate for another name (and 127.0.0.1), from the CA the client trusts.
    server = make_server(tls=True)
    server.stop()
    make_certificates(server.tls_dir, hostname="other.example")
    server.start()
    ca = f"{server.tls_dir}/ca.crt"
    with pytest.raises(resp.ConnectionError) as info:
        resp.Client("localhost", server.port, ssl_ca_certs=ca, socket_timeout=5).ping()
    message = str(info.value)
    assert "localhost" in message and "not trusted" in message, message
    # The CA is trusted already: the name is wrong, which trusting a CA cannot cure.
    assert "give ssl_ca_certs" not in message, message
    # The same certificate is good for the address it names.
    with resp.Client("127.0.0.1", server.port, ssl_ca_certs=ca, socket_timeout=5) as client:
        assert client.ping()


def test_the_connect_timeout_bounds_the_handshake_and_auth_together(tmp_path: Any) -> None:
    """Connecting is one deadline: a TLS handshake that took most of
    socket_connect_timeout leaves AUTH only the rest of it, not a fresh one."""
    make_certificates(str(tmp_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tmp_path / "server.crt"), str(tmp_path / "server.key"))
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:  # shakes hands after 1.4 s, then never answers AUTH
        conn, _ = listener.accept()
        time.sleep(1.4)
        with context.wrap_socket(conn, server_side=True):
            done.wait(10)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    client = resp.Client("127.0.0.1", listener.getsockname()[1], password="secret", socket_timeout=30,
                         socket_connect_timeout=1.5, ssl_ca_certs=str(tmp_path / "ca.crt"))
    start = time.monotonic()
    try:
        with pytest.raises(resp.TimeoutError):
            client.ping()
        elapsed = time.monotonic() - start
    finally:
        done.set()
        listener.close()
    assert 1.4 <= elapsed < 1.5 + 1.2, elapsed  # a fresh 1.5 s for AUTH would make it 2.9


def test_rediss_to_a_plain_server_fails_clearly(make_server: Any) -> None:
    # A plain Redis port never answers a TLS handshake: it waits for the end
    # of a command line that the ClientHello never brings.
    server = make_server()
    client = resp.Client("127.0.0.1", server.port, ssl=True, socket_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(resp.TimeoutError) as info:
        client.ping()
    assert time.monotonic() - start < 0.5 + 1.5
    assert "TLS handshake" in str(info.value), str(info.value)


def test_rediss_to_a_plain_server_does_not_hang_without_a_timeout(make_server: Any, monkeypatch: Any,
                                                                   key: str) -> None:
    """With no timeout at all, neither for a command nor to connect, the TLS
    handshake alone is bounded (10 s, shortened here); the bound does not stay
    on the connection, whose commands wait as long as they take."""
    monkeypatch.setattr(resp.connection, "_SETUP_TIMEOUT", 1.0)
    server = make_server()
    raised = _raised_within(10, resp.Client("127.0.0.1", server.port, ssl=True).ping,
                            "a rediss:// client hung on a plain port")
    assert isinstance(raised, resp.TimeoutError), raised
    assert "TLS handshake" in str(raised)
    tls = make_server(tls=True)
    with resp.Client("localhost", tls.port, ssl_ca_certs=f"{tls.tls_dir}/ca.crt") as client:
        assert client.blpop(key, 2) is None  # a wait past the handshake's bound


@pytest.mark.parametrize("options", [{"password": "pw"}, {"db": 3}, {"client_name": "n"}],
                         ids=["AUTH", "SELECT", "SETNAME"])
def test_a_new_connections_set_up_on_a_silent_server_does_not_hang_without_a_timeout(
        make_server: Any, monkeypatch: Any, key: str, options: Dict[str, Any]) -> None:
    """With no timeout at all, AUTH, SELECT and CLIENT SETNAME on a new
    connection are bounded as the TLS handshake is (10 s, shortened here): a
    server that accepts connections and never answers (a stopped process)
    held the client, and a consume riding out its outage, for as long as it
    stayed so. The bound does not stay on the connection."""
    monkeypatch.setattr(resp.connection, "_SETUP_TIMEOUT", 1.0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel accepts; nothing ever answers
    try:
        raised = _raised_within(10, resp.Client("127.0.0.1", listener.getsockname()[1], **options).ping,
                                "the set-up of a connection hung on a silent server")
        assert isinstance(raised, resp.TimeoutError), raised
    finally:
        listener.close()
    server = make_server(["--requirepass", "pw"]) if "password" in options else make_server()
    with resp.Client("127.0.0.1", server.port, **options) as client:
        assert client.blpop(key, 2) is None  # a wait past the set-up's bound


def test_empty_password_or_user_name_is_none(make_server: Any, key: str) -> None:
    """As in a URL (``redis://:@host``), in redis-py and in HotQueue 0.2.8,
    where ``password=os.environ.get("REDIS_PASSWORD", "")`` is common:
    ``password=""`` sends no ``AUTH``."""
    server = make_server()
    for options in ({"password": ""}, {"username": "", "password": ""}, {"username": ""}):
        with resp.Client("127.0.0.1", server.port, socket_timeout=5, **options) as client:
            assert client.ping(), options
    queue = HotQueue(key, host="127.0.0.1", port=server.port, password="", socket_timeout=5)
    queue.put("x")
    assert queue.get() == "x"
    queue.client.close()


def test_an_unreadable_ssl_ca_certs_is_named(tmp_path: Any) -> None:
    """ssl's own message names no file; the exception's class stays."""
    missing = str(tmp_path / "missing-ca.crt")
    with pytest.raises(FileNotFoundError) as info:
        resp.Client("127.0.0.1", free_port(), ssl_ca_certs=missing)
    assert missing in str(info.value)
    not_a_certificate = tmp_path / "not-a-ca.crt"
    not_a_certificate.write_text("hello\n")
    with pytest.raises(ssl.SSLError) as error:
        resp.Client("127.0.0.1", free_port(), ssl_ca_certs=str(not_a_certificate))
    assert str(not_a_certificate) in str(error.value)


def test_auth_unknown_to_the_server_does_not_echo_the_password(make_server: Any) -> None:
    """A server that does not know AUTH (``rename-command AUTH ""``, a proxy)
    answers with Redis 7's unknown-command error, which repeats the command's
    arguments: the password must not reach the exception."""
    server = make_server(["--rename-command", "AUTH", ""])
    for username in (None, "app"):
        client = resp.Client("127.0.0.1", server.port, password=PASSWORD, username=username)
        with pytest.raises(resp.AuthenticationError) as info:
            client.ping()
        assert_exception_clean(info.value)
        assert "unknown command" in str(info.value)  # the server's reason is still there
        client.close()
    sentinel = resp.SentinelClient([f"127.0.0.1:{server.port}"], "svc", sentinel_password=PASSWORD,
                                   sentinel_timeout=2)
    with pytest.raises(resp.RespError) as info:
        sentinel.ping()
    assert_exception_clean(info.value)
