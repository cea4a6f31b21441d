"""Hostile callers: every public function, and every subcommand of the command
line, given wrong types, empty names, negative, NaN or infinite timeouts,
bools where numbers go, and huge argument counts.

Each must raise a clear ``TypeError`` or ``ValueError`` (the CLI: a non-zero
exit status and one line on stderr) before anything is sent: the server's own
statistics show it received no connection and no command, and the queue holds
what it held.
"""

import ctypes
import math
import os
import pickle
import ssl
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest
from faultproxy import report
from redis_server import RedisServer

import resp
from hotqueue import HotQueue, key_for_name

NAN, INF = math.nan, math.inf
HUGE = 200_000  # arguments in one call
QUEUE = "victim"
CONTENT = [pickle.dumps(n) for n in ("one", 2, None)]
STATS = {"cases": 0}


class Watched:
    """A private server and a checker client that sees what the server saw."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.checker = resp.Client("127.0.0.1", server.port, socket_timeout=5)
        self.checker.delete(key_for_name(QUEUE))
        self.checker.rpush(key_for_name(QUEUE), *CONTENT)

    def reset(self) -> None:
        self.checker.execute("CONFIG", "RESETSTAT")

    def seen(self) -> Tuple[int, List[str]]:
        """Connections received and commands run since ``reset``, leaving out
        the checker's own CONFIG and INFO."""
        info = self.checker.execute("INFO", "all").decode()
        fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
        commands = sorted(
            name[len("cmdstat_"):] for name in fields
            if name.startswith("cmdstat_") and name[len("cmdstat_"):].split("|")[0] not in ("config", "info")
        )
        return int(fields["total_connections_received"]), commands

    def content(self) -> List[bytes]:
        return self.checker.execute("LRANGE", key_for_name(QUEUE), 0, -1)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def watched() -> Iterator[Watched]:
    server = RedisServer()
    try:
        server.start()
    except Exception as exc:
        server.cleanup()
        pytest.fail(f"cannot start redis-server: {exc}", pytrace=False)
    try:
        watcher = Watched(server)
        yield watcher
        watcher.checker.close()
    finally:
        server.cleanup()
    report("hostile_callers", f"hostile callers: {STATS['cases']} bad calls ({len(CASES)} to the Python API, "
           f"{len(CLI_CASES)} to the command line), each refused before the server saw a connection or a command")


def client(port: int, **kwargs: Any) -> resp.Client:
    return resp.Client("127.0.0.1", port, **kwargs)


def queue(port: int, **kwargs: Any) -> HotQueue:
    return HotQueue(QUEUE, host="127.0.0.1", port=port, **kwargs)


def huge(value: Any) -> List[Any]:
    return ["ok"] * HUGE + [value]


# (id, call made with the server's port, the exception it must raise)
Case = Tuple[str, Callable[[int], Any], type]
CASES: List[Case] = [
    # resp.Client(...)
    ("Client host=int", lambda p: resp.Client(host=1, port=p), TypeError),  # type: ignore[arg-type]
    ("Client host=''", lambda p: resp.Client(host="", port=p), TypeError),
    ("Client port=str", lambda p: resp.Client("127.0.0.1", port=str(p)), ValueError),  # type: ignore[arg-type]
    ("Client port=True", lambda p: resp.Client("127.0.0.1", port=True), ValueError),
    ("Client port=-1", lambda p: resp.Client("127.0.0.1", port=-1), ValueError),
    ("Client port=70000", lambda p: resp.Client("127.0.0.1", port=70000), ValueError),
    ("Client port=float", lambda p: resp.Client("127.0.0.1", port=float(p)), ValueError),  # type: ignore[arg-type]
    ("Client db=-1", lambda p: client(p, db=-1), ValueError),
    ("Client db=True", lambda p: client(p, db=True), ValueError),
    ("Client db='0'", lambda p: client(p, db="0"), ValueError),
    ("Client db=2**31-1", lambda p: client(p, db=2**31 - 1), ValueError),  # no server has so many
    ("Client db=2**70", lambda p: client(p, db=2**70), ValueError),
    ("Client password=int", lambda p: client(p, password=1234), TypeError),
    ("Client username=bytes", lambda p: client(p, username=b"u"), TypeError),
    ("Client client_name=int", lambda p: client(p, client_name=1), TypeError),
    ("Client unix_socket_path=int", lambda p: client(p, unix_socket_path=3), TypeError),
    ("Client ssl_ca_certs=bytes", lambda p: client(p, ssl_ca_certs=b"/x"), TypeError),
    ("Client ssl_context=str", lambda p: client(p, ssl_context="tls"), TypeError),
    ("Client ssl='no'", lambda p: client(p, ssl="no"), TypeError),  # would have turned TLS on
    ("Client ssl=1", lambda p: client(p, ssl=1), TypeError),
    ("Client max_connections=0", lambda p: client(p, max_connections=0), ValueError),
    ("Client max_connections=True", lambda p: client(p, max_connections=True), ValueError),
    ("Client socket_timeout=-1", lambda p: client(p, socket_timeout=-1), ValueError),
    ("Client socket_timeout=0", lambda p: client(p, socket_timeout=0), ValueError),
    ("Client socket_timeout=nan", lambda p: client(p, socket_timeout=NAN), ValueError),
    ("Client socket_timeout=inf", lambda p: client(p, socket_timeout=INF), ValueError),
    ("Client socket_timeout=1e300", lambda p: client(p, socket_timeout=1e300), ValueError),
    ("Client socket_timeout='1'", lambda p: client(p, socket_timeout="1"), TypeError),
    ("Client socket_timeout=True", lambda p: client(p, socket_timeout=True), TypeError),
    ("Client socket_connect_timeout=nan", lambda p: client(p, socket_connect_timeout=NAN), ValueError),
    ("Client socket_connect_timeout=-0.5", lambda p: client(p, socket_connect_timeout=-0.5), ValueError),
    ("Client unknown option", lambda p: client(p, retries=3), TypeError),
    # resp.Client.from_url(...)
    ("from_url bytes", lambda p: resp.Client.from_url(b"redis://127.0.0.1"), TypeError),  # type: ignore[arg-type]
    ("from_url None", lambda p: resp.Client.from_url(None), TypeError),  # type: ignore[arg-type]
    ("from_url ''", lambda p: resp.Client.from_url(""), ValueError),
    ("from_url http", lambda p: resp.Client.from_url(f"http://127.0.0.1:{p}"), ValueError),
    ("from_url bad port", lambda p: resp.Client.from_url("redis://127.0.0.1:port/0"), ValueError),
    ("from_url port 0", lambda p: resp.Client.from_url("redis://127.0.0.1:0/0"), ValueError),
    ("from_url bad db", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}/zero"), ValueError),
    ("from_url db -1", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}/-1"), ValueError),
    ("from_url db 2**70", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}/{2**70}"), ValueError),
    ("from_url unknown option", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?retry=1"), ValueError),
    ("from_url timeout nan", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?socket_timeout=nan"),
     ValueError),
    ("from_url timeout inf", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?socket_timeout=inf"),
     ValueError),
    ("from_url timeout -1", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?socket_timeout=-1"),
     ValueError),
    ("from_url timeout abc", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?socket_timeout=abc"),
     ValueError),
    ("ssl_ca_certs and ssl_context",
     lambda p: resp.Client("127.0.0.1", p, ssl_ca_certs=__file__, ssl_context=ssl.create_default_context()),
     ValueError),
    ("ssl_ca_certs empty", lambda p: resp.Client("127.0.0.1", p, ssl_ca_certs=""), ValueError),
    ("from_url ssl_ca_certs empty", lambda p: resp.Client.from_url(f"rediss://127.0.0.1:{p}?ssl_ca_certs="),
     ValueError),
    ("from_url db twice", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?db=1&db=2"), ValueError),
    ("from_url timeout twice",
     lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}?socket_timeout=1&socket_timeout=2"), ValueError),
    ("from_url db override", lambda p: resp.Client.from_url(f"redis://127.0.0.1:{p}", db="x"), ValueError),
    ("unix url without path", lambda p: resp.Client.from_url("unix://"), ValueError),
    # Client methods
    ("execute()", lambda p: client(p).execute(), ValueError),
    ("execute(None)", lambda p: client(p).execute(None), TypeError),  # type: ignore[arg-type]
    ("execute bool", lambda p: client(p).execute("RPUSH", key_for_name(QUEUE), True), TypeError),
    ("execute list", lambda p: client(p).execute("RPUSH", key_for_name(QUEUE), ["x"]), TypeError),
    ("execute dict", lambda p: client(p).execute("GET", {}), TypeError),  # type: ignore[arg-type]
    # A number kept in machine bytes (as numpy.int64 is): its buffer, sent, would be b"\x05\0\0…".
    ("execute c_int64", lambda p: client(p).execute("RPUSH", key_for_name(QUEUE), ctypes.c_int64(5)), TypeError),
    ("execute 0-d view", lambda p: client(p).execute("SET", key_for_name(QUEUE), memoryview(ctypes.c_double(2.5))),
     TypeError),
    ("rpush c_int64s", lambda p: client(p).rpush(key_for_name(QUEUE), *[ctypes.c_int64(5)] * 100), TypeError),
    ("execute huge, last bad", lambda p: client(p).execute("RPUSH", key_for_name(QUEUE), *huge(None)),
     TypeError),
    ("rpush no value", lambda p: client(p).rpush(key_for_name(QUEUE)), ValueError),
    ("rpush None key", lambda p: client(p).rpush(None, "x"), TypeError),  # type: ignore[arg-type]
    ("rpush huge, last bad", lambda p: client(p).rpush(key_for_name(QUEUE), *huge(object())), TypeError),
    ("lpop None key", lambda p: client(p).lpop(None), TypeError),  # type: ignore[arg-type]
    ("lpop count=-1", lambda p: client(p).lpop(key_for_name(QUEUE), -1), ValueError),
    ("lpop count=True", lambda p: client(p).lpop(key_for_name(QUEUE), True), ValueError),
    ("lpop count=nan", lambda p: client(p).lpop(key_for_name(QUEUE), NAN), ValueError),  # type: ignore[arg-type]
    ("blpop no key", lambda p: client(p).blpop([], 1), ValueError),
    ("blpop None key", lambda p: client(p).blpop([None], 1), TypeError),  # type: ignore[list-item]
    ("blpop timeout=-1", lambda p: client(p).blpop(key_for_name(QUEUE), -1), ValueError),
    ("blpop timeout=nan", lambda p: client(p).blpop(key_for_name(QUEUE), NAN), ValueError),
    ("blpop timeout=inf", lambda p: client(p).blpop(key_for_name(QUEUE), INF), ValueError),
    ("blpop timeout=1e12", lambda p: client(p).blpop(key_for_name(QUEUE), 1e12), ValueError),
    ("blpop timeout='1'", lambda p: client(p).blpop(key_for_name(QUEUE), "1"), TypeError),  # type: ignore[arg-type]
    ("blpop timeout=True", lambda p: client(p).blpop(key_for_name(QUEUE), True), TypeError),
    ("llen None", lambda p: client(p).llen(None), TypeError),  # type: ignore[arg-type]
    ("delete()", lambda p: client(p).delete(), ValueError),
    ("delete huge, last bad", lambda p: client(p).delete(*huge(1.5j)), TypeError),
    ("lmove None", lambda p: client(p).lmove(None, "b"), TypeError),  # type: ignore[arg-type]
    ("blmove timeout=nan", lambda p: client(p).blmove(key_for_name(QUEUE), "b", NAN), ValueError),
    ("blmove timeout=-2", lambda p: client(p).blmove(key_for_name(QUEUE), "b", -2), ValueError),
    ("pipeline command(None)", lambda p: client(p).pipeline().command("GET", None), TypeError),  # type: ignore
    ("pipeline command()", lambda p: client(p).pipeline().command(), ValueError),
    # key_for_name and HotQueue(...)
    ("key_for_name bytes", lambda p: key_for_name(b"q"), TypeError),  # type: ignore[arg-type]
    ("key_for_name None", lambda p: key_for_name(None), TypeError),  # type: ignore[arg-type]
    ("key_for_name int", lambda p: key_for_name(7), TypeError),  # type: ignore[arg-type]
    ("HotQueue bytes name", lambda p: HotQueue(b"victim", port=p), TypeError),  # type: ignore[arg-type]
    ("HotQueue None name", lambda p: HotQueue(None, port=p), TypeError),  # type: ignore[arg-type]
    ("HotQueue empty name", lambda p: HotQueue("", port=p), ValueError),
    ("HotQueue unknown option", lambda p: HotQueue(QUEUE, port=p, sockettimeout=1), TypeError),
    ("HotQueue client=str", lambda p: HotQueue(QUEUE, client="redis://x"), TypeError),
    ("HotQueue client and port", lambda p: HotQueue(QUEUE, client=client(p), port=p), TypeError),
    ("HotQueue url=int", lambda p: HotQueue(QUEUE, url=6379), TypeError),
    ("HotQueue url http", lambda p: HotQueue(QUEUE, url=f"http://127.0.0.1:{p}"), ValueError),
    ("HotQueue port=str", lambda p: HotQueue(QUEUE, port=str(p)), ValueError),
    ("HotQueue socket_timeout=nan", lambda p: queue(p, socket_timeout=NAN), ValueError),
    ("HotQueue socket_timeout=-1", lambda p: queue(p, socket_timeout=-1), ValueError),
    # HotQueue methods
    ("get timeout=-1", lambda p: queue(p).get(block=True, timeout=-1), ValueError),
    ("get timeout=nan", lambda p: queue(p).get(block=True, timeout=NAN), ValueError),
    ("get timeout=inf", lambda p: queue(p).get(block=True, timeout=INF), ValueError),
    ("get timeout=1e12", lambda p: queue(p).get(block=True, timeout=1e12), ValueError),
    ("get timeout='1'", lambda p: queue(p).get(block=True, timeout="1"), TypeError),  # type: ignore[arg-type]
    ("get timeout=True", lambda p: queue(p).get(block=True, timeout=True), TypeError),
    ("get non-blocking timeout=nan", lambda p: queue(p).get(timeout=NAN), ValueError),
    ("put raw None", lambda p: queue(p, serializer=None).put(None), TypeError),
    ("put raw bool", lambda p: queue(p, serializer=None).put(True), TypeError),
    ("put raw object after good ones", lambda p: queue(p, serializer=None).put("a", b"b", 3, object()),
     TypeError),
    ("put raw huge, last bad", lambda p: queue(p, serializer=None).put(*huge([])), TypeError),
    ("put unpicklable after good ones", lambda p: queue(p).put("fine", lambda: 0), Exception),
    ("put dumps returns int", lambda p: queue(p, serializer=BadDumps).put("x"), TypeError),
    ("put dumps returns c_int64", lambda p: queue(p, serializer=NumberDumps).put("x"), TypeError),
    ("put(*2) dumps returns c_int64", lambda p: queue(p, serializer=NumberDumps).put("x", "y"), TypeError),
    ("consume timeout=-1", lambda p: next(queue(p).consume(timeout=-1)), ValueError),
    ("consume timeout=nan", lambda p: next(queue(p).consume(timeout=NAN)), ValueError),
    ("consume timeout=1e12", lambda p: next(queue(p).consume(timeout=1e12)), ValueError),
    ("consume unknown argument", lambda p: next(queue(p).consume(wait=1)), TypeError),
    ("worker timeout=nan", lambda p: queue(p).worker(timeout=NAN), ValueError),
    ("worker timeout=-1", lambda p: queue(p).worker(timeout=-1), ValueError),
    ("worker timeout=1e12", lambda p: queue(p).worker(timeout=1e12), ValueError),
    ("worker two functions", lambda p: queue(p).worker(print, print), TypeError),
    ("worker timout=1", lambda p: queue(p).worker(timout=1), TypeError),  # type: ignore[call-overload]
    ("worker max_attempts without reliable", lambda p: queue(p).worker(max_attempts=2), TypeError),  # type: ignore[call-overload]
    ("worker not callable", lambda p: queue(p).worker("f"), TypeError),
    # Options every connection would send, and the server refuse, every time.
    ("Client client_name with a space", lambda p: client(p, client_name="my worker").ping(), ValueError),
    ("Client client_name not ASCII", lambda p: client(p, client_name="w\u00f6rker").ping(), ValueError),
    ("Client password lone surrogate", lambda p: client(p, password="pa\udcffss").ping(), ValueError),
    ("HotQueue client_name with a space", lambda p: queue(p, client_name="my worker").put("x"), ValueError),
    # Reliable mode: checked before the consumer registers and recovers.
    ("reserve timeout=-1", lambda p: queue(p).reserve(timeout=-1).__enter__(), ValueError),
    ("reserve timeout=nan", lambda p: queue(p).reserve(timeout=NAN).__enter__(), ValueError),
    ("reserve timeout='1'", lambda p: queue(p).reserve(timeout="1").__enter__(), TypeError),  # type: ignore[arg-type]
    ("consume reliable timeout=-1", lambda p: next(queue(p).consume(reliable=True, timeout=-1)), ValueError),
    # A cluster has database 0 only: ?db=N is refused, as /N is.
    ("from_url cluster ?db=2", lambda p: resp.from_url(f"redis+cluster://127.0.0.1:{p}?db=2").ping(), ValueError),
    ("HotQueue cluster url ?db=2", lambda p: HotQueue(QUEUE, url=f"redis+cluster://127.0.0.1:{p}?db=2").put("x"),
     ValueError),
]


class NumberDumps:
    """A serializer whose dumps returns a number kept in machine bytes."""

    @staticmethod
    def dumps(obj: Any) -> Any:
        return ctypes.c_int64(5)

    @staticmethod
    def loads(data: bytes) -> Any:
        return data


class BadDumps:
    """A serializer whose dumps returns something that is not bytes."""

    @staticmethod
    def dumps(obj: Any) -> Any:
        return 42

    @staticmethod
    def loads(data: bytes) -> Any:
        return data


@pytest.mark.parametrize("name, call, error", CASES, ids=[case[0] for case in CASES])
def test_bad_call_is_refused_before_anything_is_sent(
    watched: Watched, name: str, call: Callable[[int], Any], error: type
) -> None:
    before = watched.content()
    watched.reset()
    with pytest.raises(error) as info:
        call(watched.server.port)
    assert type(info.value) not in (resp.ConnectionError, resp.TimeoutError, resp.ResponseError)
    assert str(info.value), "the message says what is wrong"
    connections, commands = watched.seen()
    assert (connections, commands) == (0, []), f"the server saw {connections} connection(s), {commands}"
    assert watched.content() == before == CONTENT
    STATS["cases"] += 1


def test_huge_valid_put_is_one_atomic_rpush(watched: Watched) -> None:
    # The other side of "huge argument counts": a valid one goes through whole.
    q = queue(watched.server.port, serializer=None)
    q.put(*range(HUGE))
    assert watched.checker.llen(q.key) == len(CONTENT) + HUGE
    watched.checker.execute("LTRIM", q.key, 0, len(CONTENT) - 1)
    q.client.close()
    assert watched.content() == CONTENT


# -- the command line -------------------------------------------------------------

CLI_CASES: List[Tuple[str, List[str]]] = [
    ("no subcommand", []),
    ("unknown subcommand", ["frobnicate", QUEUE]),
    ("put without queue", ["put"]),
    ("put without message", ["put", QUEUE]),
    ("put empty queue name", ["put", "", "x"]),
    ("put bad json", ["put", QUEUE, "{not json", "--serializer", "json"]),
    ("put unknown serializer", ["put", QUEUE, "x", "--serializer", "xml"]),
    ("get timeout -1", ["get", QUEUE, "--block", "--timeout", "-1"]),
    ("get timeout nan", ["get", QUEUE, "--block", "--timeout", "nan"]),
    ("get timeout inf", ["get", QUEUE, "--block", "--timeout", "inf"]),
    ("get timeout abc", ["get", QUEUE, "--timeout", "abc"]),
    ("get unknown flag", ["get", QUEUE, "--forever"]),
    ("get empty queue name", ["get", ""]),
    ("len extra argument", ["len", QUEUE, "extra"]),
    ("clear without queue", ["clear"]),
    ("consume timeout -5", ["consume", QUEUE, "--timeout", "-5"]),
    ("bad url scheme", ["len", QUEUE, "--url", "http://127.0.0.1:1"]),
    ("bad url port", ["len", QUEUE, "--url", "redis://127.0.0.1:port"]),
    ("bad url db", ["len", QUEUE, "--url", "redis://127.0.0.1/zero"]),
]


def run_cli(args: List[str], url: str) -> "subprocess.CompletedProcess[str]":
    env: Dict[str, str] = {**os.environ, "REDIS_URL": url}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "hotqueue", *args], capture_output=True, text=True,
                          env=env, timeout=30)


def test_cli_bad_arguments_exit_nonzero_with_one_line(watched: Watched) -> None:
    # One test for all cases: each is a Python start-up, so they are batched.
    url = f"redis://127.0.0.1:{watched.server.port}/0"
    before = watched.content()
    failures = []
    for name, args in CLI_CASES:
        watched.reset()
        result = run_cli(args, url)
        lines = result.stderr.strip().splitlines()
        connections, commands = watched.seen()
        if result.returncode == 0 or len(lines) != 1 or "Traceback" in result.stderr or commands:
            failures.append(f"{name}: exit {result.returncode}, stderr {result.stderr!r}, server saw {commands}")
        STATS["cases"] += 1
    assert not failures, "\n".join(failures)
    assert watched.content() == before


def test_the_readme_gives_the_number_of_cases_there_are() -> None:
    """The figure README quotes is this file's, not one from an older version of it."""
    readme = open(os.path.join(os.path.dirname(__file__), os.pardir, "README.md"), encoding="utf-8").read()
    total = len(CASES) + len(CLI_CASES)
    quoted = f"> {total} bad calls ({len(CASES)} to the Python API, {len(CLI_CASES)} to the command line)"
    assert quoted in readme
