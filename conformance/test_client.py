"""``resp.Client.execute`` against redis-py's ``execute_command`` on one server.

Hypothesis generates command sequences over lists, strings and counters,
including commands that fail (WRONGTYPE, wrong arity, unknown command, INCR on
a non-integer, out-of-range arguments). Each sequence runs through both clients
on the same server, ``resp`` in db 1 and redis-py in db 2 (both flushed
first), and every reply must agree.

Mapping (redis-py's response callbacks are removed, so its replies are the
parser's raw output, with ``decode_responses=False``):

- a status reply is ``str`` in resp and ``bytes`` in redis-py: compared as bytes;
- an error is compared as (kind, full message). redis-py strips a known error
  code (``ERR``, ``NOPERM`` …) from the message and keeps it in
  ``status_code``; unknown codes such as ``WRONGTYPE`` stay in the message. The
  full message is rebuilt from those. The classes must agree too: resp raises
  ``WrongTypeError`` for ``WRONGTYPE`` and ``ResponseError`` for ``ERR``;
  redis-py raises ``ResponseError`` for both.

redis-py runs three ways: RESP2 with its pure-Python parser, RESP2 with
hiredis, and its default (which in redis-py 8 is RESP3, negotiated by HELLO 3).
"""

from typing import Any, List, Tuple

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers import _HiredisParser, _RESP2Parser

import resp

KEYS = st.sampled_from(["k0", "k1", "k2"])
VALUES = st.one_of(st.sampled_from([b"", b"0", b"1", b"-3", b"10", b"abc", "ünï"]), st.binary(max_size=6),
                   st.integers(min_value=-5, max_value=5))
SMALL = st.integers(min_value=-4, max_value=4)
BIG = st.one_of(SMALL, st.sampled_from([2**63 - 1, -(2**63), 2**62]))


def _cmd(name: str, *parts: Any) -> Any:
    return st.tuples(st.just(name), *parts)


COMMANDS = st.one_of(
    # lists
    st.builds(lambda n, k, vs: (n, k, *vs), st.sampled_from(["RPUSH", "LPUSH"]), KEYS,
              st.lists(VALUES, min_size=1, max_size=3)),
    _cmd("LPOP", KEYS), _cmd("LPOP", KEYS, st.integers(min_value=0, max_value=3)), _cmd("RPOP", KEYS),
    _cmd("LLEN", KEYS), _cmd("LRANGE", KEYS, SMALL, SMALL), _cmd("LINDEX", KEYS, SMALL),
    _cmd("LSET", KEYS, SMALL, VALUES), _cmd("LREM", KEYS, st.integers(-2, 2), VALUES),
    _cmd("LTRIM", KEYS, SMALL, SMALL),
    # strings and counters
    _cmd("SET", KEYS, VALUES), _cmd("GET", KEYS), _cmd("APPEND", KEYS, VALUES), _cmd("STRLEN", KEYS),
    _cmd("INCR", KEYS), _cmd("INCRBY", KEYS, BIG), _cmd("DECR", KEYS),
    # keys
    st.builds(lambda n, ks: (n, *ks), st.sampled_from(["DEL", "EXISTS"]), st.lists(KEYS, min_size=1, max_size=3)),
    _cmd("TYPE", KEYS),
    # ones that fail whatever the data
    st.sampled_from([
        ("GET",), ("LPUSH", "k0"), ("SET", "k1"), ("INCRBY", "k2"), ("LLEN", "k0", "k1"),
        ("NOSUCHCOMMAND", "x"), ("INCRBY", "k0", "ten"), ("LRANGE", "k1", "a", 1), ("LPOP", "k2", -1),
        ("LSET", "nokey", 0, "v"), ("TYPE",),
    ]),
)

REDIS_PY_MODES = {
    "resp2-python": {"protocol": 2, "parser_class": _RESP2Parser},
    "resp2-hiredis": {"protocol": 2, "parser_class": _HiredisParser},
    "redis-py-default": {},
}


@pytest.fixture(scope="module")
def ours(server: Any) -> Any:
    with resp.Client(port=server.port, db=1, max_connections=1) as client:
        yield client


@pytest.fixture(scope="module", params=sorted(REDIS_PY_MODES))
def theirs(request: Any, server: Any) -> Any:
    pool = redis.ConnectionPool(host=server.host, port=server.port, db=2, decode_responses=False,
                                **REDIS_PY_MODES[request.param])
    client = redis.Redis(connection_pool=pool, single_connection_client=True)
    client.response_callbacks.clear()  # the parser's own replies, unconverted
    yield client
    client.close()
    pool.disconnect()


def ours_reply(client: resp.Client, command: Tuple[Any, ...]) -> Any:
    """resp's reply in the comparable form."""
    try:
        reply = client.execute(*command)
    except resp.ResponseError as exc:
        expected_class = resp.WrongTypeError if exc.kind == "WRONGTYPE" else resp.ResponseError
        assert type(exc) is expected_class, (command, exc)
        return ("error", exc.kind, str(exc))
    return _plain(reply)


def theirs_reply(client: redis.Redis, command: Tuple[Any, ...]) -> Any:
    """redis-py's reply in the comparable form."""
    try:
        reply = client.execute_command(*command)
    except redis.exceptions.ResponseError as exc:
        assert type(exc) is redis.exceptions.ResponseError, (command, exc)
        message = str(exc)
        code = getattr(exc, "status_code", None)
        if code:
            message = f"{code} {message}"
        return ("error", message.split(" ", 1)[0], message)
    return _plain(reply)


def _plain(reply: Any) -> Any:
    if isinstance(reply, resp.ResponseError):
        return ("error", reply.kind, str(reply))
    if isinstance(reply, redis.exceptions.ResponseError):
        code = getattr(reply, "status_code", None)
        message = f"{code} {reply}" if code else str(reply)
        return ("error", message.split(" ", 1)[0], message)
    if isinstance(reply, str):
        return reply.encode()
    if isinstance(reply, list):
        return [_plain(item) for item in reply]
    assert reply is None or isinstance(reply, (bytes, int)), reply
    return reply


@settings(max_examples=100)
@given(commands=st.lists(COMMANDS, min_size=1, max_size=25))
def test_replies_agree(ours: resp.Client, theirs: redis.Redis, commands: List[Tuple[Any, ...]]) -> None:
    ours.execute("FLUSHDB")
    theirs.execute_command("FLUSHDB")
    for command in commands:
        assert ours_reply(ours, command) == theirs_reply(theirs, command), command


def test_each_failure_kind_occurs(ours: resp.Client, theirs: redis.Redis) -> None:
    """The failing commands the generator draws from really fail, the same way
    in both clients, and cover WRONGTYPE, arity, unknown command and INCR on a
    non-integer."""
    ours.execute("FLUSHDB")
    theirs.execute_command("FLUSHDB")
    seen = {}
    for command in [("SET", "s", "abc"), ("INCR", "s"), ("LPUSH", "s", "x"), ("GET",), ("NOSUCHCOMMAND", "x")]:
        mine = ours_reply(ours, command)
        assert mine == theirs_reply(theirs, command), command
        seen[command[0]] = mine
    assert seen["INCR"][:2] == ("error", "ERR") and "not an integer" in seen["INCR"][2]
    assert seen["LPUSH"][:2] == ("error", "WRONGTYPE")
    assert seen["GET"][:2] == ("error", "ERR") and "wrong number of arguments" in seen["GET"][2]
    assert seen["NOSUCHCOMMAND"][:2] == ("error", "ERR") and "unknown command" in seen["NOSUCHCOMMAND"][2]


def test_status_and_bulk_stay_distinct_in_resp(ours: resp.Client, theirs: redis.Redis) -> None:
    """The one type difference the mapping hides: ``SET`` answers a status, ``GET``
    a bulk. resp returns ``"OK"`` and ``b"OK"``; redis-py ``b"OK"`` for both."""
    assert ours.execute("SET", "st", "OK") == "OK"
    assert ours.execute("GET", "st") == b"OK"
    assert theirs.execute_command("SET", "st", "OK") == b"OK"
    assert theirs.execute_command("GET", "st") == b"OK"


def test_errors_inside_an_array_agree(ours: resp.Client, theirs: redis.Redis) -> None:
    """``MULTI`` … ``EXEC`` with a command that fails at run time: the error is a
    value inside EXEC's array in both clients (not raised), in its place.
    resp takes a transaction in one pipeline (``execute("MULTI")`` is refused:
    connections are pooled); redis-py's single connection takes it a command
    at a time."""
    transaction = [("MULTI",), ("SET", "tx", "abc"), ("LPUSH", "tx", "x"), ("INCR", "tx"), ("GET", "tx"),
                   ("EXEC",)]
    ours.execute("FLUSHDB")
    theirs.execute_command("FLUSHDB")
    pipe = ours.pipeline()
    for command in transaction:
        pipe.command(*command)
    mine = [_plain(reply) for reply in pipe.execute(raise_on_error=False)]
    assert mine == [theirs_reply(theirs, command) for command in transaction]
    assert mine[-1][0] == b"OK" and mine[-1][3] == b"abc"
    assert mine[-1][1][:2] == ("error", "WRONGTYPE") and mine[-1][2][:2] == ("error", "ERR")
