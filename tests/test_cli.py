"""``python -m hotqueue``, run as a user runs it: in a subprocess.

Every error must be one line on stderr with a non-zero status, never a
traceback. The default URL (localhost:6379) is never used: every run passes
``--url`` or ``REDIS_URL`` pointing at a private server or at a free port.
"""

import contextlib
import io
import json
import os
import pickle
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

import pytest

import resp
from hotqueue import HotQueue
from hotqueue.__main__ import main
from hotqueue.reliable import keys_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_fixtures import SentinelServer, wait_for  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from redis_server import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["put", "get", "len", "clear", "consume", "demo"]


def env(**extra: str) -> "dict[str, str]":
    e = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    e["PYTHONPATH"] = ROOT
    e.update(extra)
    return e


def hq(*args: str, url: Optional[str] = None, timeout: float = 30, **kwargs: Any) -> "subprocess.CompletedProcess[str]":
    """Run ``python -m hotqueue [--url URL] ARGS``."""
    words = [sys.executable, "-m", "hotqueue"] + (["--url", url] if url else []) + list(args)
    kwargs.setdefault("env", env())
    return subprocess.run(words, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)


def demo(url: str) -> "subprocess.CompletedProcess[str]":
    """Run the demo; if it hangs, stop it with SIGTERM (so it stops any server it started)."""
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", url, "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the demo hung: {out}{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def signal_once(proc: "subprocess.Popen[bytes]", sig: int, ready: Callable[[], bool], settle: float = 0.0) -> bytes:
    """Send ``sig`` to ``proc`` once ``ready()`` (or it ended, or 10 s passed),
    ``settle`` seconds later; return its stderr once it has exited (killed
    if it has not within 30 s)."""
    try:
        deadline = time.monotonic() + 10
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(settle)
        proc.send_signal(sig)
        return proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def named(url: str, name: str) -> str:
    """``url`` with ``client_name=name`` added to its options."""
    return f"{url}{'&' if '?' in url else '?'}client_name={name}"


def wait_blocked(url: str, name: str, timeout: float = 30) -> None:
    """Wait until the server at ``url`` has a client named ``name`` (given to
    the command by ``named``) blocked in a pop: the command started,
    connected and waits (a fixed sleep was too short for a loaded PyPy)."""
    blocked = re.compile(rf"\bname={re.escape(name)} .*\bflags=\w*b")
    deadline = time.monotonic() + timeout
    with resp.Client.from_url(url) as admin:
        while not any(blocked.search(line) for line in admin.execute("CLIENT", "LIST").decode().splitlines()):
            assert time.monotonic() < deadline, f"{name} never waited"
            time.sleep(0.01)


def one_line_error(result: "subprocess.CompletedProcess[str]", status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    return result.stderr


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def queue(redis_url: str, key: str) -> Any:
    q = HotQueue(key, url=redis_url)
    yield q
    q.clear()
    q.client.close()


# -- help --------------------------------------------------------------------------


def test_help() -> None:
    result = hq("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout
    for name in COMMANDS:
        result = hq(name, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: python -m hotqueue {name}" in result.stdout
        assert "--url" in result.stdout


def test_no_subcommand_is_a_usage_error() -> None:
    one_line_error(hq(), 2)
    one_line_error(hq("frobnicate"), 2)
    one_line_error(hq("put", "q"), 2)  # no message


# -- the subcommands ---------------------------------------------------------------


def test_put_len_get_clear(redis_url: str, queue: HotQueue) -> None:
    name = queue.name
    assert hq("put", name, "one", "two", "three", url=redis_url).returncode == 0
    result = hq("len", name, url=redis_url)
    assert (result.returncode, result.stdout) == (0, "3\n")
    result = hq("get", name, url=redis_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "one\n", "")
    assert hq("clear", name, url=redis_url).returncode == 0
    assert len(queue) == 0
    result = hq("get", name, url=redis_url)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


def test_shares_queues_with_the_library(redis_url: str, queue: HotQueue) -> None:
    hq("put", queue.name, "from the CLI", url=redis_url)
    assert queue.get() == "from the CLI"
    queue.put(("a", 1), None, 3)
    result = hq("consume", queue.name, "--no-block", url=redis_url)
    assert (result.returncode, result.stdout) == (0, "('a', 1)\nNone\n3\n")
    queue.put(None)  # a stored None is a message, not an empty queue
    result = hq("get", queue.name, url=redis_url)
    assert (result.returncode, result.stdout) == (0, "None\n")


def test_options_after_the_subcommand_and_redis_url(redis_url: str, queue: HotQueue) -> None:
    assert hq("put", "--url", redis_url, queue.name, "x").returncode == 0
    result = hq("len", queue.name, env=env(REDIS_URL=redis_url))
    assert (result.returncode, result.stdout) == (0, "1\n")
    # --url wins over REDIS_URL
    result = hq("len", queue.name, url=redis_url, env=env(REDIS_URL=dead_url()))
    assert (result.returncode, result.stdout) == (0, "1\n")


def test_default_url(monkeypatch: Any) -> None:
    # Read without connecting: the tests never touch the shared server on 6379.
    from hotqueue.__main__ import make_parser

    monkeypatch.delenv("REDIS_URL", raising=False)
    assert make_parser().parse_args(["len", "q"]).url == "redis://localhost:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:7000/2")
    assert make_parser().parse_args(["len", "q"]).url == "redis://elsewhere:7000/2"


def test_get_block_and_timeout(redis_url: str, queue: HotQueue) -> None:
    start = time.monotonic()
    result = hq("get", queue.name, "--timeout", "0.3", url=redis_url)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")
    assert time.monotonic() - start >= 0.3
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, "get", queue.name, "--block"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    time.sleep(0.5)
    assert proc.poll() is None  # waiting
    queue.put("late")
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out, err) == (0, "late\n", "")


def test_consume_timeout(redis_url: str, queue: HotQueue) -> None:
    queue.put("a", "b c", "d")
    start = time.monotonic()
    result = hq("consume", queue.name, "--timeout", "0.3", url=redis_url)
    assert (result.returncode, result.stdout, result.stderr) == (0, "a\nb c\nd\n", "")
    assert time.monotonic() - start >= 0.3
    assert len(queue) == 0
    one_line_error(hq("consume", queue.name, "--timeout", "1", "--no-block", url=redis_url), 2)


def test_consume_prints_one_message_a_line(redis_url: str, queue: HotQueue, key: str) -> None:
    # A message whose text would span lines is printed as its repr; get
    # prints it as it is.
    queue.put("plain", "line 1\nline 2", "cr\rhere", 7)
    result = hq("consume", queue.name, "--no-block", url=redis_url)
    assert (result.returncode, result.stdout) == (0, "plain\n'line 1\\nline 2'\n'cr\\rhere'\n7\n")
    queue.put("line 1\nline 2")
    assert hq("get", queue.name, url=redis_url).stdout == "line 1\nline 2\n"
    raw = HotQueue(key + "raw", serializer=None, url=redis_url)
    try:
        raw.put(b"one", b"two\nlines", b"\xff\r")
        result = hq("--serializer", "raw", "consume", raw.name, "--no-block", url=redis_url)
        assert (result.returncode, result.stdout) == (0, "one\nb'two\\nlines'\nb'\\xff\\r'\n")
    finally:
        raw.clear()
        raw.client.close()


def test_json(redis_url: str, key: str) -> None:
    q = HotQueue(key, serializer=json, url=redis_url)
    try:
        assert hq("--serializer", "json", "put", key, '{"n": [1, 2]}', '"text"', "3", url=redis_url).returncode == 0
        assert q.get() == {"n": [1, 2]}
        q.put("line\nbreak", None)
        result = hq("consume", key, "--no-block", "--serializer", "json", url=redis_url)
        assert result.stdout == '"text"\n3\n"line\\nbreak"\nnull\n'
        err = one_line_error(hq("put", key, "not json", "--serializer", "json", url=redis_url), 2)
        assert "JSON" in err
        assert len(q) == 0
    finally:
        q.clear()


def test_json_nested_too_deep_is_bad_input(redis_url: str, queue: HotQueue) -> None:
    """An argument nested deeper than the JSON parser goes is bad input
    (status 2, one line), like any other text that is not JSON; nothing is put."""
    err = one_line_error(hq("--serializer", "json", "put", queue.name, "[" * 100000, url=redis_url), 2)
    assert "JSON" in err and "unexpected" not in err
    assert len(queue) == 0


@pytest.mark.parametrize("text", ["1e400", "[-1e999]", "NaN", '{"n": Infinity}', "[-Infinity]"])
def test_json_without_a_json_number_is_bad_input(redis_url: str, queue: HotQueue, text: str) -> None:
    """Python's json reads NaN, Infinity and numbers too large for a float
    (as infinity) and would store them as ``Infinity``: not JSON, refused."""
    err = one_line_error(hq("--serializer", "json", "put", queue.name, text, url=redis_url), 2)
    assert "JSON" in err
    assert len(queue) == 0


def test_json_integer_too_long_for_python_says_so(redis_url: str, queue: HotQueue) -> None:
    """Python (3.11+, and later 3.8-3.10 releases) reads no integer of over
    4,300 digits; the error says that, not that the argument is not JSON
    (and needs quotes)."""
    if not hasattr(sys, "set_int_max_str_digits"):  # no such limit (added in 3.11, 3.10.7, 3.9.14…)
        assert hq("--serializer", "json", "put", queue.name, "1" * 5000, url=redis_url).returncode == 0
        assert len(queue) == 1
        return
    err = one_line_error(hq("--serializer", "json", "put", queue.name, "1" * 5000, url=redis_url), 2)
    assert "too long" in err and "quotes" not in err
    assert len(queue) == 0


def test_json_is_utf_8_text_in_and_out(redis_url: str, queue: HotQueue, client: resp.Client) -> None:
    """An argument whose bytes are not UTF-8 is no JSON text: refused (it was
    stored with a lone surrogate, "caf\\udce9"). A stored lone surrogate, and a
    character the output's encoding lacks, are printed as \\u escapes (the
    first was printed as a raw 0xFF byte, the second as Python's \\xe9)."""
    put = subprocess.run([sys.executable, "-m", "hotqueue", "--url", redis_url, "--serializer", "json", "put",
                          queue.name, b'"caf\xe9"'], capture_output=True, env=env(), cwd=ROOT, timeout=30)
    assert put.returncode == 2 and b"UTF-8" in put.stderr and put.stderr.count(b"\n") == 1, put.stderr
    assert len(queue) == 0
    client.rpush(queue.key, b'"\\udcff"', b'"caf\xc3\xa9"', b'"caf\xc3\xa9"')
    for encoding, printed in (("utf-8", b'"\\udcff"\n'), ("utf-8", '"café"\n'.encode()),
                              ("ascii", b'"caf\\u00e9"\n')):
        got = subprocess.run([sys.executable, "-m", "hotqueue", "--url", redis_url, "--serializer", "json", "get",
                              queue.name], capture_output=True, env=env(PYTHONIOENCODING=encoding), cwd=ROOT,
                             timeout=30)
        assert (got.returncode, got.stdout, got.stderr) == (0, printed, b""), encoding


def test_a_message_whose_repr_fails_is_reported_and_removed(redis_url: str, queue: HotQueue,
                                                           client: resp.Client) -> None:
    """A valid pickle of lists in lists 100,000 deep: its repr exceeds the
    recursion limit (3.13's too). It was "an unexpected error" (a bug, status 70), and put
    back at the head of the queue, where it stopped every later get."""
    nested = b"\x80\x04" + b"]" * 100_000 + b"a" * 99_999 + b"."  # [[[…]]]: EMPTY_LIST, then APPEND
    assert pickle.loads(nested)
    client.rpush(queue.key, nested, pickle.dumps("next"))
    for command in (["get"], ["consume", "--no-block"]):
        err = one_line_error(hq(*command, queue.name, url=redis_url), 4)
        assert "could not be shown" in err and "removed" in err, err
        assert hq("get", queue.name, url=redis_url).stdout == "next\n"
        client.rpush(queue.key, nested, pickle.dumps("next"))
    queue.clear()


@pytest.mark.parametrize("words", [["get", "{queue}"], ["len", "{queue}"], ["put", "{queue}", "m"]])
def test_the_command_line_closes_its_connections(redis_url: str, queue: HotQueue, words: List[str]) -> None:
    """Run with -X dev, Python warns of every socket left open at exit."""
    words = [word.format(queue=queue.name) for word in words]
    result = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-m", "hotqueue",
                             "--url", redis_url, *words], capture_output=True, text=True, env=env(), cwd=ROOT,
                            timeout=30)
    assert result.returncode in (0, 1) and result.stderr == "", result.stderr


def test_raw(redis_url: str, key: str) -> None:
    q = HotQueue(key, serializer=None, url=redis_url)
    try:
        assert hq("put", key, "h\u00e9llo", "--serializer", "raw", url=redis_url).returncode == 0
        assert q.get() == "h\u00e9llo".encode()
        q.put(b"\x00\xff bytes")
        result = subprocess.run([sys.executable, "-m", "hotqueue", "--url", redis_url, "get", key,
                                 "--serializer", "raw"], capture_output=True, env=env(), cwd=ROOT, timeout=30)
        assert (result.returncode, result.stdout) == (0, b"\x00\xff bytes\n")
    finally:
        q.clear()


# -- errors ------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["put", "q", "m"], ["get", "q"], ["get", "q", "--block"], ["len", "q"],
                                  ["clear", "q"], ["consume", "q"]])
def test_unreachable_server(args: List[str]) -> None:
    err = one_line_error(hq(*args, url=dead_url()), 3)
    assert "Connection refused" in err


def test_rediss_url_to_a_plain_server_fails_instead_of_hanging(make_server: Any) -> None:
    """A ``rediss://`` URL pointed at a server that does not speak TLS: the
    handshake never ends, so connecting gives up after the default connect
    timeout (10 s) with one line and status 3, or sooner when the URL says."""
    plain = f"rediss://127.0.0.1:{make_server().port}/0"
    runs = {}
    for args in (["len", "q"], ["put", "q", "x"], ["consume", "q", "--no-block"]):
        runs[" ".join(args)] = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", plain, *args],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                env=env(), cwd=ROOT)
    start = time.monotonic()
    quick = hq("len", "q", url=plain + "?socket_connect_timeout=0.5")
    quick_seconds = time.monotonic() - start
    try:
        results = {}
        for what, proc in runs.items():
            try:
                out, err = proc.communicate(timeout=max(40 - (time.monotonic() - start), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"python -m hotqueue {what} with a rediss:// URL to a plain server hung")
            results[what] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for what, result in results.items():
        assert "timed out" in one_line_error(result, 3), what
    assert "timed out" in one_line_error(quick, 3)
    assert quick_seconds < 8  # the URL's own timeout, not the 10 s default


def test_password_is_not_shown() -> None:
    url = f"redis://user:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    err = one_line_error(hq("len", "q", url=url), 3)
    assert "s3cr3t" not in err


@pytest.mark.parametrize("cut", ["/", "?", "#"])
def test_password_with_an_unescaped_character_is_not_shown(cut: str) -> None:
    # '1234' reads as a port, and the rest of the password lies after the host part.
    url = f"redis://user:1234{cut}s3cr3t-pw@127.0.0.1:{free_port()}/0"
    for args in (["len", "q"], ["demo"]):
        err = one_line_error(hq(*args, url=url), 2)
        assert "s3cr3t" not in err and "percent-encode" in err


@pytest.mark.parametrize("url", ["redis:///:s3cr3t-pw@127.0.0.1/0", "redis:/:s3cr3t-pw@127.0.0.1/0",
                                 "redis://127.0.0.1/0?password=s3cr3t-pw"])
def test_a_password_in_the_wrong_place_is_not_shown(url: str) -> None:
    """A slash too many or too few before the password, or the password as
    an option, which resp does not take: the demo repeated the URL whole."""
    for args in (["len", "q"], ["demo"]):
        err = one_line_error(hq(*args, url=url), 2)
        assert "s3cr3t" not in err, args


@pytest.mark.parametrize("url", ["http://localhost/", "redis://localhost:99999", "redis://localhost/x",
                                 "redis://localhost/0?bogus=1"])
def test_bad_url(url: str) -> None:
    for args in (["len", "q"], ["demo"]):
        one_line_error(hq(*args, url=url), 2)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon", "", "1e10", "1e-400", "0.5e-330"])
def test_bad_timeout(value: str, redis_url: str) -> None:
    one_line_error(hq("get", "q", "--timeout", value, url=redis_url), 2)
    one_line_error(hq("consume", "q", "--timeout", value, url=redis_url), 2)


def test_bad_serializer_and_name(redis_url: str) -> None:
    one_line_error(hq("--serializer", "yaml", "len", "q", url=redis_url), 2)
    one_line_error(hq("put", "", "m", url=redis_url), 2)


def test_undecodable_message(redis_url: str, queue: HotQueue, client: resp.Client) -> None:
    client.rpush(queue.key, b"not a pickle", pickle.dumps("fine"))
    err = one_line_error(hq("get", queue.name, url=redis_url), 4)
    assert "removed" in err
    result = hq("get", queue.name, url=redis_url)
    assert (result.returncode, result.stdout) == (0, "fine\n")
    client.rpush(queue.key, b"\x80\x04K")
    one_line_error(hq("consume", queue.name, "--no-block", url=redis_url), 4)


def test_redis_refuses(redis_url: str, key: str, client: resp.Client) -> None:
    client.execute("SET", "hotqueue:" + key, "a string, not a list")
    try:
        err = one_line_error(hq("len", key, url=redis_url), 3)
        assert "WRONGTYPE" in err
    finally:
        client.delete("hotqueue:" + key)


def test_unknown_sentinel_service_is_a_redis_error() -> None:
    """A misspelt service name (the sentinels answer, but monitor no such
    service) is a Redis error like the rest, not the status kept for bugs."""
    sentinel = SentinelServer("")  # a real sentinel that monitors nothing
    try:
        sentinel.start()
        err = one_line_error(hq("len", "q", url=f"redis+sentinel://127.0.0.1:{sentinel.port}/no-such-service/0"), 3)
        assert "no-such-service" in err and "unexpected" not in err
    finally:
        sentinel.cleanup()


def test_ctrl_c_while_waiting(redis_url: str, key: str) -> None:
    for args in (["consume", key], ["get", key, "--block"]):
        name = f"{key}-{args[0]}"
        proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", named(redis_url, name), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
        wait_blocked(redis_url, name)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert (proc.returncode, out, err) == (130, "", ""), args


def test_broken_pipe(redis_url: str, queue: HotQueue) -> None:
    queue.put(*range(100))
    read, write = os.pipe()
    os.close(read)  # nobody will read what it prints
    try:
        result = subprocess.run([sys.executable, "-m", "hotqueue", "--url", redis_url, "consume", queue.name,
                                 "--no-block"], stdout=write, stderr=subprocess.PIPE, text=True, env=env(),
                                cwd=ROOT, timeout=30)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")


def test_get_takes_no_message_when_its_reader_is_gone(redis_url: str, queue: HotQueue) -> None:
    """``get`` whose output nobody reads any more (the reader of its pipe has
    exited) leaves the message in the queue and exits 141 quietly."""
    queue.put("precious")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before get starts
    try:
        result = subprocess.run([sys.executable, "-m", "hotqueue", "--url", redis_url, "get", queue.name],
                                stdout=write, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT, timeout=30)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (141, "")
    assert len(queue) == 1, "get took a message nobody could read"


def test_get_with_stdout_closed_takes_no_message(redis_url: str, queue: HotQueue) -> None:
    """``get Q >&-`` (no standard output at all) leaves the message in the
    queue and says so in one line, with the status of a closed output (141)."""
    queue.put("precious")
    words = [sys.executable, "-m", "hotqueue", "--url", redis_url, "get", queue.name]
    result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *words], capture_output=True, text=True, env=env(),
                            cwd=ROOT, timeout=30)
    assert "standard output is closed" in one_line_error(result, 141)
    assert len(queue) == 1, "get took a message it could not print"


@pytest.mark.parametrize("words, nothing_done", [
    (["len"], "nothing was printed"),
    (["stats"], "nothing was printed"),
    (["recover"], "nothing was recovered"),
])
def test_a_command_with_stdout_closed_says_so(redis_url: str, queue: HotQueue, words: List[str],
                                              nothing_done: str) -> None:
    """``len``, ``stats`` and ``recover`` with no standard output at all do
    not exit 0 having printed nothing (print() to no stdout prints nothing):
    they fail as ``get`` does, and ``recover`` moves nothing it could not report."""
    keys = keys_for(queue.key)
    queue.put("held")  # by a reliable consumer that is gone: recover would move it back
    queue.client.execute("LMOVE", queue.key, keys.processing("gone"), "LEFT", "RIGHT")
    queue.client.execute("SADD", keys.consumers, "gone")
    command = [sys.executable, "-m", "hotqueue", "--url", redis_url, *words, queue.name]
    result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *command], capture_output=True, text=True,
                            env=env(), cwd=ROOT, timeout=30)
    assert f"standard output is closed: {nothing_done}" in one_line_error(result, 141)
    assert queue.client.execute("LLEN", keys.processing("gone")) == 1
    assert queue.recover() == 1  # what recover would have moved, had it run


def test_consume_takes_no_message_after_its_reader_is_gone(redis_url: str, queue: HotQueue) -> None:
    """``consume Q | head -1``: once the reader has gone, consume notices it
    while it waits (within about a second) and exits 141 quietly; a message
    put after that stays in the queue instead of being taken and lost."""
    queue.put("first")
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, "consume", queue.name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "first\n"
        proc.stdout.close()  # like head -1: one line read, then gone
        try:
            proc.wait(10)  # it notices with no message to print
        except subprocess.TimeoutExpired:
            pass
        queue.put("second")  # a producer, later
        proc.wait(10)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(queue) == 1, "consume took a message after its reader had gone"
    assert (proc.returncode, err) == (141, "")


def reader_leaves(redis_url: str, args: List[str], waiting: float, then: Any) -> "tuple[int, str]":
    """Run ``python -m hotqueue ARGS`` writing into a pipe; after ``waiting``
    seconds close the pipe's read end (the reader leaves), call ``then()``,
    and return the exit status and stderr."""
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, *args], stdout=write,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    os.close(write)
    try:
        time.sleep(waiting)
        assert proc.poll() is None, "it should still be waiting"
        os.close(read)
        then()
        proc.wait(10)
        assert proc.stderr is not None
        return proc.returncode, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_get_block_takes_no_message_after_its_reader_is_gone(redis_url: str, queue: HotQueue) -> None:
    """``get Q --block`` whose reader leaves while it waits notices it within
    about a second and exits 141, instead of taking the next message put."""

    def put_later() -> None:
        time.sleep(3)  # it has noticed by now
        queue.put("later")

    assert reader_leaves(redis_url, ["get", queue.name, "--block"], 1.0, put_later) == (141, "")
    assert len(queue) == 1, "get took a message after its reader had gone"


@pytest.mark.parametrize("command", [["get", "--block"], ["consume"]])
def test_a_message_that_cannot_be_printed_goes_back_to_the_head(redis_url: str, queue: HotQueue,
                                                                 command: List[str]) -> None:
    """A message that arrives while the command waits, just after its reader
    left, is taken before the next check; printing it fails, and it goes back
    to the head of the queue, in front of those put after it."""
    args = [command[0], queue.name, *command[1:]]
    # 1.3 s: waiting, the last output check behind it
    assert reader_leaves(redis_url, args, 1.3, lambda: queue.put("first", "second")) == (141, "")
    assert [queue.get(), queue.get(), queue.get()] == ["first", "second", None]


# -- the demo ----------------------------------------------------------------------


def demo_checks(result: "subprocess.CompletedProcess[str]") -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    for line in ["4", "5", "6", "'my message'", "7", "Decimal('1.4')", "Decimal('1.7')", "first", "third"]:
        assert f"\n{line}\n" in out
    handled = re.findall(r"worker ([12]) \(pid \d+\): (\d+) \* \d+ = (\d+)", out)
    assert sorted(int(n) for _, n, _ in handled) == list(range(2, 12))  # each number exactly once
    assert all(int(sq) == int(n) ** 2 for _, n, sq in handled)
    assert "exactly once" in out


def test_an_unreadable_ssl_ca_certs_is_a_usage_error(tmp_path: Any) -> None:
    """Status 2 and one line naming the file, not "unexpected error" and 70 (a bug)."""
    missing = str(tmp_path / "missing-ca.crt")
    err = one_line_error(hq("len", "q", url=f"rediss://127.0.0.1:{free_port()}/0?ssl_ca_certs={missing}"), 2)
    assert missing in err


def test_demo_reports_a_refused_certificate(make_server: Any) -> None:
    """A TLS server answered, but its certificate is not trusted: the demo
    says so (status 3), rather than take it for no server at all and run on
    a private one of its own."""
    server = make_server(tls=True)
    err = one_line_error(hq("demo", url=f"rediss://localhost:{server.port}/0"), 3)
    assert "not trusted" in err


def test_a_failure_after_ctrl_c_exits_130_quietly(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C came, and what came after it failed (a Ctrl-C that ends the
    demo's ``consume()`` quietly leaves it short of messages): status 130 and
    no error line, not "demo failed" and 1."""
    from hotqueue import _demo

    def interrupted_consume(queue: HotQueue, write: Any) -> None:
        try:
            os.kill(os.getpid(), signal.SIGINT)  # to the handler main() installed
            time.sleep(0.2)
        except KeyboardInterrupt:
            pass  # as consume() ends on Ctrl-C
        raise _demo.DemoError("consume() yielded []; the tutorial expects ['first', 'second', 'third']")

    monkeypatch.setattr(_demo, "_consume", interrupted_consume)
    assert main(["--url", redis_url, "demo"]) == 130
    assert capsys.readouterr().err == ""


def test_a_demo_that_sees_what_the_tutorial_does_not_promise_exits_70(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Status 1 is get's empty queue alone: a failed demo is a bug's 70."""
    from hotqueue import _demo

    def short_consume(queue: HotQueue, write: Any) -> None:
        raise _demo.DemoError("consume() yielded []; the tutorial expects ['first', 'second', 'third']")

    monkeypatch.setattr(_demo, "_consume", short_consume)
    assert main(["--url", redis_url, "demo"]) == 70
    assert capsys.readouterr().err.startswith("hotqueue: error: demo failed: consume() yielded []")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads a process's blocked signals in /proc")
def test_the_demos_workers_keep_the_terminals_ctrl_c_blocked(make_server: Any) -> None:
    """A terminal's Ctrl-C goes to the whole process group: a worker still
    starting up printed a KeyboardInterrupt traceback from what it was
    importing. The workers start with SIGINT blocked (the demo stops them)."""
    server = make_server()
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", f"redis://127.0.0.1:{server.port}/0", "demo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
    blocked = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(rb"worker \d \(pid (\d+)\)", line)
            if found and int(found.group(1)) not in blocked:
                pid = int(found.group(1))
                with open(f"/proc/{pid}/status") as status:  # it sleeps after each line: still there
                    mask = re.search(r"SigBlk:\s*([0-9a-f]+)", status.read())
                assert mask is not None
                blocked[pid] = bool(int(mask.group(1), 16) & (1 << (signal.SIGINT - 1)))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, err) == (0, b"")
    assert len(blocked) == 2 and all(blocked.values()), blocked


def test_demo_against_a_running_server(redis_url: str, client: resp.Client) -> None:
    # Only the demo's own keys are looked at: REDIS_URL may name a server
    # that other programs use meanwhile.
    before = set(client.execute("KEYS", "hotqueue-demo-*"))
    result = demo(redis_url)
    demo_checks(result)
    assert "started a private redis-server" not in result.stdout
    assert set(client.execute("KEYS", "hotqueue-demo-*")) == before  # its queues are gone


def test_demo_starts_its_own_server() -> None:
    result = demo(dead_url())
    demo_checks(result)
    match = re.search(r"started a private redis-server on 127\.0\.0\.1:(\d+)", result.stdout)
    assert match, result.stdout
    port = int(match.group(1))
    assert port != 6379
    with pytest.raises(OSError):  # and stopped it
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.parametrize("taker", ["listener", "redis-server"])
def test_demo_server_is_not_fooled_by_a_port_taken_before_it_binds(
    taker: str, make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another program takes the port between ``_free_port()`` and our
    redis-server's bind (here, before it is even started): a socket that
    accepts and never answers, or a Redis server of its own. Our server fails
    to bind and exits; start() says so, rather than report that server up."""
    from hotqueue import _demo

    binary = shutil.which("redis-server")
    assert binary is not None
    with socket.socket() as listener:
        if taker == "listener":
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            port = int(listener.getsockname()[1])
        else:
            port = make_server().port
        monkeypatch.setattr(_demo, "_free_port", lambda: port)
        server = _demo.PrivateServer(binary)
        with pytest.raises(_demo.DemoError, match="exited with status"):
            with server:
                pass
    assert server.process is None and not os.path.exists(server.dir)


def test_demo_reports_a_worker_still_running(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that has not ended when the demo stops waiting is reported as
    such (it was "ended with status None"), and stopped."""
    from hotqueue import _demo

    server = make_server()
    monkeypatch.setattr(_demo, "FINISH_LIMIT", 0.01)  # the workers idle 1 s before they end
    lines: List[str] = []
    with pytest.raises(_demo.DemoError, match="still running after 0.01 s"):
        _demo.run(f"redis://127.0.0.1:{server.port}/0", lines.append)
    with resp.Client(port=server.port) as client:
        assert client.execute("KEYS", "*") == []  # its queues are gone


def test_demo_without_redis_server_on_path() -> None:
    err = one_line_error(hq("demo", url=dead_url(), env=env(PATH="/nonexistent")), 3)
    assert "redis-server" in err


def test_demo_does_not_show_the_password_of_its_url() -> None:
    url = dead_url().replace("//", "//user:s3cret@")
    err = one_line_error(hq("demo", url=url, env=env(PATH="/nonexistent")), 3)
    assert "user:***@127.0.0.1" in err and "s3cret" not in err


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_demo_interrupted_stops_its_server(sig: int, status: int) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", dead_url(), "demo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # written once its server listens
        match = re.search(r"redis-server on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        port = int(match.group(1))
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it is up
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # SIGTERM, not SIGKILL: let it stop its server
            proc.terminate()
            proc.wait(30)
    assert (proc.returncode, err) == (status, "")
    with pytest.raises(OSError):  # its server is gone
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_demo_output_closed_while_the_workers_print(redis_url: str, client: resp.Client) -> None:
    """``demo | head`` cut while the worker processes print: the demo exits
    141 quietly, as the other subcommands do, and still deletes its queues."""
    before = set(client.execute("KEYS", "hotqueue-demo-*"))  # the demo's own keys (a shared REDIS_URL)
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, "demo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if line.startswith("    worker"):
                break  # the first line a worker printed: the reader goes
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:  # SIGTERM, not SIGKILL: let it delete its queues
            proc.terminate()
            proc.wait(30)
    assert (proc.returncode, err) == (141, "")
    assert set(client.execute("KEYS", "hotqueue-demo-*")) == before  # its queues are gone


def test_demo_ctrl_c_in_a_terminal_stops_its_server() -> None:
    """Ctrl-C in a terminal goes to the demo's whole process group, but not to
    the redis-server it started: the demo still deletes its queues there,
    then stops that server itself and exits 130 quietly."""
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", dead_url(), "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT, start_new_session=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.search(r"redis-server on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        port = int(match.group(1))
        for line in proc.stdout:
            if line.startswith("    worker"):
                break  # both workers are running
        # The demo is held still while the Ctrl-C reaches everything else in
        # its group, so that its clean-up cannot win a race with the server.
        os.kill(proc.pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        time.sleep(0.5)
        with resp.Client(host="127.0.0.1", port=port, socket_timeout=5) as admin:
            try:
                alive = admin.ping()
            except resp.ConnectionError:
                alive = False
        assert alive, "the Ctrl-C stopped the demo's server, which the demo still needs to clean up"
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:  # SIGTERM, not SIGKILL: let it stop its server
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(30)
    assert (proc.returncode, err) == (130, "")
    with pytest.raises(OSError):  # its server is gone
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_get_and_consume_print_to_a_text_stream_without_a_buffer(redis_url: str, queue: HotQueue) -> None:
    """main() run from Python with stdout redirected to an io.StringIO (no
    .buffer): the messages are printed, not taken and lost."""
    queue.put("hello", "caf\u00e9", "two\nlines")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--url", redis_url, "get", queue.name]) == 0
        assert main(["--url", redis_url, "consume", queue.name, "--no-block"]) == 0
    assert out.getvalue() == "hello\ncaf\u00e9\n'two\\nlines'\n"
    assert len(queue) == 0


def test_main_run_from_python_puts_the_signal_handlers_back(redis_url: str, queue: HotQueue) -> None:
    """A program that calls main() keeps its own handlers afterwards: SIGTERM
    does not go on raising the command line's Terminated in it."""
    def own(signum: int, frame: Any) -> None:
        pass

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
    saved = {signum: signal.signal(signum, own) for signum in signals}
    try:
        queue.put("m")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--url", redis_url, "get", queue.name]) == 0
            with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
                main(["--url", redis_url, "no-such-command"])  # argparse's exit, too
        assert {signum: signal.getsignal(signum) for signum in signals} == dict.fromkeys(signals, own)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_a_ctrl_c_held_by_one_main_call_does_not_end_the_next(redis_url: str, queue: HotQueue) -> None:
    """A program that calls main() again: the Ctrl-C that stopped a ``get``
    is not raised again by the next, uninterrupted commands, which would
    exit 130 after doing their work (a ``recover`` that ran, reported as
    interrupted)."""
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))  # to the handler main() installed
    timer.start()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--url", redis_url, "get", queue.name, "--timeout", "3"]) == 130
    finally:
        timer.join()
    queue.put("m")
    for command in ("len", "stats", "recover"):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--url", redis_url, command, queue.name]) == 0, command


def test_a_message_whose_printing_fails_for_any_reason_goes_back(redis_url: str, queue: HotQueue) -> None:
    class Unwritable(io.StringIO):
        def write(self, text: str) -> int:
            raise ValueError("not this stream")

    queue.put("kept")
    with contextlib.redirect_stdout(Unwritable()):
        assert main(["--url", redis_url, "get", queue.name]) == 70
    assert queue.get() == "kept"


def test_demo_private_server_that_cannot_start(tmp_path: Any) -> None:
    """A redis-server on PATH that exits at once: one line, status 3, with the
    server's own reason (its log goes with its temporary directory)."""
    fake = tmp_path / "redis-server"
    fake.write_text('#!/bin/sh\n'
                    'while [ $# -gt 0 ]; do [ "$1" = --logfile ] && log="$2"; shift; done\n'
                    'echo "# Could not create server TCP listening socket: bind: Address already in use" > "$log"\n'
                    'exit 1\n')
    fake.chmod(0o755)
    result = hq("demo", url=dead_url(), env=env(PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}"))
    err = one_line_error(result, 3)
    assert "unexpected" not in err
    assert "Address already in use" in err
    assert "see its log" not in err


def test_queue_name_not_utf8_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable.encode(), b"-m", b"hotqueue", b"--url", dead_url().encode(),
                             b"put", b"caf\xe9", b"x"], capture_output=True, env=env(), cwd=ROOT, timeout=30)
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr and b"unexpected" not in result.stderr
    assert b"UTF-8" in result.stderr


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("extra", [[], ["--no-block"]])
def test_consume_stopped_by_a_signal_loses_no_message(redis_url: str, queue: HotQueue, tmp_path: Any,
                                                       sig: int, status: int, extra: List[str]) -> None:
    """Ctrl-C or SIGTERM while ``consume`` drains a backlog: every message is
    either printed or still in the queue, once, in order (the one whose pop
    was on its way when the signal came is printed before the exit)."""
    sent = [f"m{i}" for i in range(20000)]
    queue.put(*sent)
    out = tmp_path / "out"
    with open(out, "wb") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, "consume", queue.name,
                                 *extra], stdout=stdout, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
        err = signal_once(proc, sig, lambda: out.stat().st_size >= 10000)  # while it drains
    assert (proc.returncode, err) == (status, b"")
    printed = out.read_text().splitlines()
    assert 0 < len(printed) < len(sent)
    assert printed + list(iter(queue.get, None)) == sent


class _SlowToAnswer:
    """A server that takes one connection, reads one command, and answers
    ``:1`` only once ``answer()`` is called (never, if it is not)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.received = b""
        self.conn: Optional[socket.socket] = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.conn, _ = self.listener.accept()
        while b"RPUSH" not in self.received or not self.received.endswith(b"\r\n"):
            chunk = self.conn.recv(65536)
            if not chunk:
                return
            self.received += chunk

    def wait_for(self, data: bytes) -> None:
        """Wait (10 s at most) until ``data`` has been received."""
        deadline = time.monotonic() + 10
        while data not in self.received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert data in self.received

    def answer(self) -> None:
        assert self.conn is not None
        self.conn.sendall(b":1\r\n")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


@pytest.mark.parametrize("answered", [True, False], ids=["answered-in-the-grace", "never-answered"])
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_put_stopped_by_a_signal_says_whether_it_was_stored(answered: bool, sig: int, status: int) -> None:
    """A signal while the RPUSH waits for its reply: the put finishes if the
    server answers within the grace, and standard error says which way it
    went, so that the user knows whether to put it again."""
    server = _SlowToAnswer()
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", server.url, "put", "q", "only once"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
    try:
        server.wait_for(b"only once")
        start = time.monotonic()
        proc.send_signal(sig)
        if answered:
            time.sleep(0.5)
            server.answer()
        err = proc.communicate(timeout=30)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
    assert proc.returncode == status, err
    if answered:
        assert err == "hotqueue: stopped after the messages were put\n"
    else:
        assert err == "hotqueue: stopped while putting: the messages may or may not be on the queue\n"
        assert time.monotonic() - start < 10  # the grace, not forever


def test_the_grace_runs_out_with_sigalrm_ignored_when_the_command_starts() -> None:
    """The grace after Ctrl-C is timed with SIGALRM, which the command owns:
    inherited ignored (``trap '' ALRM``), it is set all the same, where a
    put to a stalled server then ignored Ctrl-C for as long as it stalled."""
    start = time.monotonic()
    returncode, err = _put_held_then(_SlowToAnswer(), signal.SIGINT, lambda: None,
                                     preexec_fn=lambda: signal.signal(signal.SIGALRM, signal.SIG_IGN))
    assert returncode == 130, err
    assert time.monotonic() - start < 15  # loading, the grace: not the communicate() timeout of 30 s


def _put_held_then(server: "_SlowToAnswer", sig: int, then: Callable[[], None],
                   **popen: Any) -> Tuple[int, str]:
    """Run ``put q 'only once'`` against ``server``, send ``sig`` while its
    RPUSH waits for a reply, then call ``then``; return its exit status and
    standard error."""
    popen.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", server.url, "put", "q", "only once"],
                            stdout=subprocess.PIPE, env=env(), cwd=ROOT, **popen)
    try:
        server.wait_for(b"only once")
        proc.send_signal(sig)
        time.sleep(0.3)
        then()
        err = proc.communicate(timeout=30)[1] or b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.close()
    return proc.returncode, err.decode()


@pytest.mark.parametrize("failure", ["refused", "dropped"])
@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_put_stopped_by_a_signal_then_failing_still_says_which_way_it_went(failure: str, sig: int,
                                                                             status: int) -> None:
    """The put fails within the grace (the server refuses it, or drops the
    connection after the RPUSH went out): the exit is still the signal's,
    and standard error says so (after Ctrl-C it said nothing at all)."""
    server = _SlowToAnswer()

    def fail() -> None:
        assert server.conn is not None
        if failure == "refused":
            server.conn.sendall(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
        else:
            server.conn.close()

    returncode, err = _put_held_then(server, sig, fail)
    assert returncode == status, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    if failure == "refused":
        assert err.startswith("hotqueue: stopped: the messages were not put (Redis refused: WRONGTYPE"), err
    else:
        assert err.startswith("hotqueue: stopped while putting: the messages may or may not be on the queue"), err


@pytest.mark.parametrize("answered", [True, False], ids=["answered-in-the-grace", "never-answered"])
def test_a_put_stopped_by_sigterm_with_stderr_closed_still_exits_143(answered: bool) -> None:
    """Run with standard error closed (``2>&-``: Python has no sys.stderr),
    the note on stderr must not turn the exit into 1."""
    server = _SlowToAnswer()
    returncode, _ = _put_held_then(server, signal.SIGTERM, server.answer if answered else (lambda: None),
                                   stderr=None, preexec_fn=lambda: os.close(2))
    assert returncode == 143


@pytest.mark.parametrize("command", [["get", "--block"], ["consume"]])
def test_a_signal_while_a_popped_message_is_on_its_way_loses_no_message(make_server: Any,
                                                                         command: List[str]) -> None:
    """The server has popped a message for the CLI's BLPOP, and the reply is
    4.5 s on its way (a stalled server, a slow link) when Ctrl-C comes: the
    CLI waits for it as long as its client would (a second's wait, the
    client's 5 s margin), prints it, then stops. With a grace of 3 s it
    stopped first, and the message was in neither the queue nor the output."""
    server = make_server()
    direct = HotQueue("q", serializer=None, port=server.port)
    with FaultProxy(server.port) as proxy:
        proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", f"redis://127.0.0.1:{proxy.port}/0",
                                 "--serializer", "raw", command[0], "q", *command[1:]],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
        try:
            proxy.inject(("delay", 4.5), b"BLPOP")
            wait_for("the BLPOP to pass", lambda: proxy.pending(b"BLPOP") == 0, 10)  # on the server now
            direct.put(b"precious")  # popped for it at once, within its second
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            direct.client.close()
    assert (proc.returncode, out, err) == (130, b"precious\n", b"")


def test_a_signal_while_consume_rides_out_an_outage_still_stops_it(make_server: Any) -> None:
    """With the server gone, nothing can be in flight: SIGTERM stops
    ``consume`` within its grace of a few seconds, not when the server is back."""
    server = make_server()
    url = f"redis://127.0.0.1:{server.port}/0"
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", named(url, "outage"),
                             "consume", "q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
    try:
        wait_blocked(url, "outage")
        server.stop()
        time.sleep(1)  # riding it out
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        assert time.monotonic() - start < 9  # the grace: 6.5 s, what the client waits for a pop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143


@pytest.mark.parametrize("credentials, kind", [(":e", "ERR"), ("nobody:p", "WRONGPASS")])
def test_a_refused_short_password_does_not_garble_the_error(redis_url: str, credentials: str, kind: str) -> None:
    """A password that also occurs in the server's refusal ("e" in
    "configured", "p" in "password pair") is not cut out of the server's
    words, which would garble them and show where it matched."""
    url = redis_url.replace("://", f"://{credentials}@", 1)
    err = one_line_error(hq("len", "q", url=url), 3)
    assert kind in err
    assert not re.search(r"\w<password>|<password>\w", err), err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_an_output_that_cannot_be_written_is_its_own_error(redis_url: str, queue: HotQueue) -> None:
    """Writing to a full disk is no bug of ours (status 70, "unexpected
    error"): it is reported as an output error, status 74, and a message
    taken goes back to the head of the queue."""
    queue.put("kept", "too")
    for args in (["get", queue.name], ["consume", queue.name, "--no-block"], ["len", queue.name]):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "hotqueue", "--url", redis_url, *args], stdout=full,
                                    stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT, timeout=30)
        err = one_line_error(result, 74)
        assert "cannot write the output" in err and "No space left" in err, args
    assert [queue.get(), queue.get(), queue.get()] == ["kept", "too", None]
    # --help too (argparse drops the error: it exited 0), or with no output at all.
    for args in (["--help"], ["get", "--help"]):
        with open("/dev/full", "w") as full:
            result = subprocess.run([sys.executable, "-m", "hotqueue", *args], stdout=full,
                                    stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT, timeout=30)
        assert "No space left" in one_line_error(result, 74), args
        closed = subprocess.run([sys.executable, "-m", "hotqueue", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT, timeout=30,
                                preexec_fn=lambda: os.close(1))
        assert "standard output is closed" in one_line_error(closed, 141), args


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_output_is_not_read_loses_no_message(redis_url: str, queue: HotQueue, sig: int,
                                                                 status: int) -> None:
    """``consume`` blocked writing to a pipe that nobody empties when Ctrl-C or
    SIGTERM comes: after its grace it stops in the middle of the write, and
    the message it was printing goes back to the head of the queue."""
    sent = [f"m{i:05d}-" + "x" * 200 for i in range(2000)]  # more than a pipe holds
    queue.put(*sent)
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as pipe:  # read only once the consumer has gone
        try:
            proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, "consume", queue.name],
                                    stdout=write_end, stderr=subprocess.PIPE, env=env(), cwd=ROOT)
        finally:
            os.close(write_end)
        # Once it has begun, the pipe fills up and consume waits to write.
        err = signal_once(proc, sig, lambda: len(queue) <= len(sent) - 10, settle=1.0)
        printed = pipe.read().decode().splitlines()
    assert (proc.returncode, err) == (status, b"")
    assert 0 < len(printed) < len(sent)
    assert printed + list(iter(queue.get, None)) == sent


@pytest.mark.parametrize("module", [
    "argparse",  # the command line's own imports
    "resp.client",  # the package's, which Python imports first
])
def test_ctrl_c_while_the_command_line_loads_exits_130_without_a_traceback(tmp_path: Any, module: str) -> None:
    """SIGINT that arrives while ``python -m hotqueue`` imports what it needs,
    before its own handlers are set: exit status 130 and nothing on stderr, as
    later. (It was a KeyboardInterrupt traceback.) The signal is sent from an
    import hook, as ``module`` starts to load."""
    (tmp_path / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "class InterruptOnImport:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, InterruptOnImport())\n"
    )
    result = hq("len", "q", url=dead_url(), env=env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"))
    assert (result.returncode, result.stderr, result.stdout) == (130, "", "")


def test_a_program_that_imports_hotqueue_keeps_its_ctrl_c(tmp_path: Any) -> None:
    """The quiet Ctrl-C of ``python -m hotqueue`` is set only there: not in
    ``python -m other`` whose package imports hotqueue, even when its own
    arguments read ``-m hotqueue``."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "__init__.py").write_text("import hotqueue\n")
    (other / "__main__.py").write_text(
        "import signal\nprint(signal.getsignal(signal.SIGINT) is signal.default_int_handler)\n")
    for args in (["-m", "hotqueue"], ["-mhotqueue"], []):
        done = subprocess.run([sys.executable, "-m", "other", *args], capture_output=True, text=True, timeout=30,
                              cwd=ROOT, env=env(PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}"))
        assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", ""), args


def test_a_long_message_cut_short_by_its_reader_goes_back_with_unbuffered_output(redis_url: str,
                                                                                  queue: HotQueue) -> None:
    """With unbuffered output (``python -u``, ``PYTHONUNBUFFERED``) standard
    output is the raw file, whose write() took only what the pipe held of a
    long message when its reader left: the command exited 0 and the message
    was lost. It is printed whole or put back."""
    message = "x" * 5_000_000  # far more than a pipe holds
    queue.put(message)
    for command in (["get", queue.name], ["consume", queue.name, "--no-block"]):
        proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", redis_url, *command],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(PYTHONUNBUFFERED="1"),
                                cwd=ROOT)
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(10) == b"x" * 10  # the write has begun, and waits for room
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(30)
        assert (proc.returncode, err) == (141, b""), command
        assert len(queue) == 1, command
    assert queue.get() == message


@pytest.mark.parametrize("ignored, other, status", [(signal.SIGINT, signal.SIGTERM, 143),
                                                    (signal.SIGTERM, signal.SIGINT, 130)],
                         ids=["SIGINT ignored", "SIGTERM ignored"])
def test_a_signal_ignored_when_the_command_starts_stays_ignored(redis_url: str, key: str, ignored: int,
                                                                other: int, status: int) -> None:
    """A job a shell script starts with '&' (Ctrl-C ignored), under ``trap ''``
    or ``nohup``: what the command inherits as ignored it ignores, as Python
    does, where it set its own handlers and stopped. Not on PyPy, whose
    ``signal.getsignal()`` does not report an inherited ignore (and which
    sets its own Ctrl-C handler over one): there the command stops as before."""
    proc = subprocess.Popen([sys.executable, "-m", "hotqueue", "--url", named(redis_url, key), "consume",
                             key], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=ROOT,
                            preexec_fn=lambda: signal.signal(ignored, signal.SIG_IGN))
    wait_blocked(redis_url, key)
    proc.send_signal(ignored)
    if platform.python_implementation() == "PyPy":
        out, err = proc.communicate(timeout=10)
        assert (proc.returncode, out, err) == ({signal.SIGINT: 130, signal.SIGTERM: 143}[ignored], b"", b"")
        return
    time.sleep(0.5)
    assert proc.poll() is None, "the ignored signal stopped it"
    proc.send_signal(other)
    out, err = proc.communicate(timeout=10)
    assert (proc.returncode, out, err) == (status, b"", b"")
