"""The sans-IO layer: ``resp.Reader`` and ``resp.encode_command``, with no socket.

Every wire case runs three ways (whole, split at every byte, with trailing
data). Hypothesis checks round trips under random chunkings and that random
bytes only ever end in ``ProtocolError``. Hostile lengths must be refused at
once, without allocating what they claim.
"""

import array
import math
from contextlib import contextmanager
from typing import Any, Iterator, List, Sequence, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

import resp
from resp import protocol
from resp.errors import error_from_reply
from resp.protocol import LARGE_VALUE, MAX_DEPTH, MAX_LINE_LENGTH, encode_parts

# -- helpers -----------------------------------------------------------------


def normalize(value: Any) -> Any:
    """A comparable form that keeps every type: errors by class and message,
    and ``bytes`` kept apart from ``str``."""
    if isinstance(value, resp.ResponseError):
        return ("error", type(value).__name__, str(value))
    if isinstance(value, list):
        return ("array", [normalize(item) for item in value])
    return (type(value).__name__, value)


def read_all(chunks: Sequence[bytes]) -> List[Any]:
    """Feed ``chunks`` one by one, collecting every reply as it completes."""
    reader = resp.Reader()
    replies = []
    for chunk in chunks:
        reader.feed(chunk)
        while True:
            reply = reader.gets()
            if reply is False:
                break
            replies.append(reply)
    return replies


def assert_three_ways(data: bytes, expected: Any) -> None:
    """``data`` holds exactly one reply: check it whole, split in two at every
    byte, one byte at a time, and followed by the start of another reply."""
    want = [normalize(expected)]
    assert [normalize(r) for r in read_all([data])] == want

    for cut in range(1, len(data)):
        reader = resp.Reader()
        reader.feed(data[:cut])
        assert reader.gets() is False, f"a reply from the first {cut} bytes"
        reader.feed(data[cut:])
        assert [normalize(reader.gets())] == want, f"split at {cut}"
        assert reader.gets() is False

    assert [normalize(r) for r in read_all([data[i : i + 1] for i in range(len(data))])] == want

    reader = resp.Reader()
    reader.feed(data + b"+next\r\n$5\r\nhe")
    assert [normalize(reader.gets())] == want
    assert reader.gets() == "next"
    assert reader.gets() is False
    assert reader.has_data()
    reader.feed(b"llo\r\n")
    assert reader.gets() == b"hello"
    assert not reader.has_data()


# -- every reply type three ways ---------------------------------------------

CASES: List[Tuple[str, bytes, Any]] = [
    ("status", b"+OK\r\n", "OK"),
    ("empty status", b"+\r\n", ""),
    ("status non-ascii", "+caf\u00e9\r\n".encode(), "caf\u00e9"),
    ("error", b"-ERR unknown command\r\n", resp.ResponseError("ERR unknown command")),
    ("wrongtype", b"-WRONGTYPE Operation against a key\r\n", resp.WrongTypeError("WRONGTYPE Operation against a key")),
    ("wrongpass", b"-WRONGPASS invalid\r\n", resp.AuthenticationError("WRONGPASS invalid")),
    ("noauth", b"-NOAUTH Authentication required.\r\n", resp.AuthenticationError("NOAUTH Authentication required.")),
    ("noperm", b"-NOPERM no\r\n", resp.NoPermissionError("NOPERM no")),
    ("readonly", b"-READONLY replica\r\n", resp.ReadOnlyError("READONLY replica")),
    ("loading", b"-LOADING wait\r\n", resp.BusyLoadingError("LOADING wait")),
    ("integer", b":42\r\n", 42),
    ("zero", b":0\r\n", 0),
    ("negative", b":-7\r\n", -7),
    ("int64 max", b":9223372036854775807\r\n", 2**63 - 1),
    ("int64 min", b":-9223372036854775808\r\n", -(2**63)),
    ("plus sign (the spec allows one)", b":+12\r\n", 12),
    ("plus zero", b":+0\r\n", 0),
    ("int64 max with a plus sign", b":+9223372036854775807\r\n", 2**63 - 1),
    ("bulk", b"$5\r\nhello\r\n", b"hello"),
    ("empty bulk", b"$0\r\n\r\n", b""),
    ("null bulk", b"$-1\r\n", None),
    ("binary bulk with CRLF", b"$8\r\n\r\n\x00\xff\r\n\r\n\r\n", b"\r\n\x00\xff\r\n\r\n"),
    ("bulk of CRLF only", b"$2\r\n\r\n\r\n", b"\r\n"),
    ("empty array", b"*0\r\n", []),
    ("null array", b"*-1\r\n", None),
    ("array", b"*2\r\n$5\r\nhello\r\n:7\r\n", [b"hello", 7]),
    ("nested", b"*2\r\n*2\r\n$5\r\nhello\r\n$5\r\nworld\r\n$1\r\n!\r\n", [[b"hello", b"world"], b"!"]),
    (
        "nested with errors and nulls",
        b"*5\r\n+OK\r\n-WRONGTYPE bad\r\n$-1\r\n*-1\r\n*3\r\n*0\r\n-ERR inner\r\n$0\r\n\r\n",
        ["OK", resp.WrongTypeError("WRONGTYPE bad"), None, None, [[], resp.ResponseError("ERR inner"), b""]],
    ),
    ("array ending in nested arrays", b"*1\r\n*1\r\n*1\r\n:1\r\n", [[[1]]]),
    ("as deep as allowed", b"*1\r\n" * MAX_DEPTH + b":5\r\n", None),  # expected filled in below
]


def _deep(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


CASES[-1] = (CASES[-1][0], CASES[-1][1], _deep(MAX_DEPTH, 5))


@pytest.mark.parametrize("data, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_reply_three_ways(data: bytes, expected: Any) -> None:
    assert_three_ways(data, expected)


def test_error_replies_are_returned_not_raised() -> None:
    reader = resp.Reader()
    reader.feed(b"-ERR boom\r\n")
    error = reader.gets()
    assert type(error) is resp.ResponseError
    assert error.kind == "ERR"
    assert str(error) == "ERR boom"


def test_bulk_larger_than_one_chunk() -> None:
    payload = bytes(range(256)) * 1024 + b"\r\n" * 100
    data = b"$%d\r\n%s\r\n" % (len(payload), payload)
    chunks = [data[i : i + 4093] for i in range(0, len(data), 4093)]
    assert read_all(chunks) == [payload]


def test_many_replies_in_one_feed() -> None:
    data = b"".join(b":%d\r\n" % i for i in range(1000))
    assert read_all([data]) == list(range(1000))


def test_feed_accepts_bytearray_and_memoryview() -> None:
    reader = resp.Reader()
    source = bytearray(b"$3\r\nabc\r\n")
    reader.feed(memoryview(source)[:5])
    reader.feed(source[5:])
    source[4:7] = b"xyz"  # the reader must have copied what it was fed
    assert reader.gets() == b"abc"


def test_empty_feed_between_cr_and_lf_does_not_stall() -> None:
    assert read_all([b"*0\r", b"", b"\n", b"$1\r", b"", b"\nx\r", b"", b"\n"]) == [[], b"x"]


def test_replies_left_unread_between_feeds() -> None:
    # feed() twice without gets() in between: nothing is lost or reordered.
    reader = resp.Reader()
    reader.feed(b":1\r\n$3\r\nab")
    reader.feed(b"c\r\n:2\r\n" + b"+" + b"x" * 100)
    reader.feed(b"\r\n")
    assert [reader.gets() for _ in range(5)] == [1, b"abc", 2, "x" * 100, False]


@pytest.mark.parametrize("chunk", [1000, 4096, 16383, 65536, 100_000])
def test_long_bulks_fed_in_chunks_inside_and_outside_arrays(chunk: int) -> None:
    long_a = bytes(range(256)) * 200  # 51,200 bytes: gathered, then copied once
    long_b = b"\r\n" * 20_000
    wire = (
        b"$%d\r\n%s\r\n" % (len(long_a), long_a)
        + b":1\r\n"
        + b"*3\r\n$%d\r\n%s\r\n$1\r\nx\r\n$%d\r\n%s\r\n" % (len(long_b), long_b, len(long_a), long_a)
        + b"$%d\r\n%s\r\n" % (len(long_b), long_b)
        + b"+OK\r\n"
    )
    chunks = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
    expected = [long_a, 1, [long_b, b"x", long_a], long_b, "OK"]
    assert read_all(chunks) == expected
    # And with gets() called only after every third chunk.
    reader = resp.Reader()
    got = []
    for index, piece in enumerate(chunks):
        reader.feed(piece)
        if index % 3 == 2 or index == len(chunks) - 1:
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                got.append(reply)
    assert got == expected


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 10, 64, 1000, 4096, 16 * 1024, 32 * 1024])
def test_arrays_of_short_bulks_resumed_after_every_kind_of_cut(chunk: int) -> None:
    # An array cut short by the end of a feed goes on where it stopped, with
    # whatever comes next: short bulks, a nested array, an integer, a null.
    items = [b"item%06d" % i for i in range(1000)]
    wire = (
        b"*1000\r\n" + b"".join(b"$10\r\n%s\r\n" % item for item in items)
        + b"*4\r\n$1\r\na\r\n*2\r\n$2\r\nbc\r\n:5\r\n$-1\r\n$3\r\ndef\r\n"
        + b"*3\r\n$0\r\n\r\n$2\r\nxy\r\n-ERR in place\r\n"
    )
    chunks = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
    got = read_all(chunks)
    assert got[:2] == [items, [b"a", [b"bc", 5], None, b"def"]]
    assert got[2][:2] == [b"", b"xy"] and str(got[2][2]) == "ERR in place" and len(got) == 3


def test_an_array_resumed_still_refuses_a_bad_terminator() -> None:
    reader = resp.Reader()
    reader.feed(b"*3\r\n$1\r\na\r\n$1\r")
    assert reader.gets() is False
    reader.feed(b"\nbXX$1\r\nc\r\n")
    with pytest.raises(resp.ProtocolError):
        reader.gets()


def test_long_bulk_with_a_bad_terminator_is_refused() -> None:
    value = b"v" * 50_000
    reader = resp.Reader()
    reader.feed(b"$%d\r\n" % len(value) + value[:1000])
    assert reader.gets() is False
    reader.feed(value[1000:] + b"XX:1\r\n")
    with pytest.raises(resp.ProtocolError):
        reader.gets()


def test_bulk_missing_counts_what_a_long_bulk_still_lacks() -> None:
    value = bytes(range(256)) * 400  # 102,400 bytes
    reader = resp.Reader()
    assert reader.bulk_missing() == 0
    reader.feed(b"$5\r\nab")
    assert reader.gets() is False and reader.bulk_missing() == 0  # a short bulk
    reader.feed(b"cde\r\n$%d\r\n" % len(value) + value[:1000])
    assert reader.gets() == b"abcde"
    assert reader.gets() is False
    assert reader.bulk_missing() == len(value) - 1000 + 2
    reader.feed(value[1000:30_000])
    reader.feed(value[30_000:30_005])  # a small piece, gathered in the tail
    assert reader.gets() is False
    assert reader.bulk_missing() == len(value) - 30_005 + 2
    reader.feed(value[30_005:] + b"\r\n:1\r\n")  # more than it lacked, before gets()
    assert reader.bulk_missing() == 0
    assert [reader.gets(), reader.gets(), reader.bulk_missing()] == [value, 1, 0]


@pytest.mark.parametrize("in_array", [False, True])
def test_feed_rest_takes_the_missing_bytes_without_keeping_them(in_array: bool) -> None:
    value = bytes(range(256)) * 400
    head = b"*2\r\n" if in_array else b""
    reader = resp.Reader()
    reader.feed(head + b"$%d\r\n" % len(value) + value[:5000])
    assert reader.gets() is False
    rest = bytearray(value[5000:] + b"\r\n")
    assert reader.bulk_missing() == len(rest)
    reader.feed_rest(memoryview(rest))
    if in_array:
        assert reader.gets() is False  # the array's second element is to come
        rest[:] = b"x" * len(rest)  # the buffer is the caller's again
        reader.feed(b":7\r\n")
        assert reader.gets() == [value, 7]
    else:
        got = reader.gets()
        rest[:] = b"x" * len(rest)
        assert got == value
    assert not reader.has_data()


def test_feed_after_feed_rest_before_gets() -> None:
    # The rest of a long bulk, then the next reply, then gets(): both come out.
    value = bytes(range(256)) * 400
    reader = resp.Reader()
    reader.feed(b"$%d\r\n" % len(value) + value[:10])
    assert reader.gets() is False
    rest = bytearray(value[10:] + b"\r\n")
    reader.feed_rest(memoryview(rest))
    reader.feed(b":1\r\n$3\r\nab")
    assert reader.gets() == value
    rest[:] = b"x" * len(rest)
    assert reader.gets() == 1
    reader.feed(b"c\r\n")
    assert reader.gets() == b"abc" and not reader.has_data()


def test_feed_rest_copies_what_is_not_exactly_the_rest() -> None:
    value = b"v" * 100_000
    reader = resp.Reader()
    reader.feed(b"$%d\r\n" % len(value))
    too_long = bytearray(value + b"\r\n:1\r\n")
    reader.feed_rest(too_long)  # more than bulk_missing(): copied like feed()
    too_long[:] = b"x" * len(too_long)
    assert reader.gets() == value and reader.gets() == 1
    reader.feed_rest(bytearray(b":2\r\n"))  # no long bulk waited for: copied
    assert reader.gets() == 2


def test_feed_rest_with_a_bad_terminator_is_refused() -> None:
    value = b"v" * 100_000
    reader = resp.Reader()
    reader.feed(b"$%d\r\n" % len(value) + value[:10])
    assert reader.gets() is False
    reader.feed_rest(bytearray(value[10:] + b"XX"))
    with pytest.raises(resp.ProtocolError):
        reader.gets()



@pytest.mark.parametrize("in_array", [False, True])
@pytest.mark.parametrize("size", [16 * 1024, 65_527, 100_000])
def test_long_bulk_cut_anywhere_around_its_terminator(size: int, in_array: bool) -> None:
    # A chunk may end with the value, with its CR (a 64 KiB recv() of a
    # 65,527-byte value does), or with its LF, and the rest come later; the
    # value may also lie partly in a middle chunk.
    value = (bytes(range(256)) * (size // 256 + 1))[:size]
    head = b"*2\r\n$1\r\nk\r\n" if in_array else b""
    bulk = b"$%d\r\n%s\r\n" % (size, value)
    wire = head + bulk + b":7\r\n"
    end = len(head) + len(bulk)  # just after the value's LF
    expected = [[b"k", value] if in_array else value, 7]
    for cut in range(end - 5, end + 2):
        for pieces in ([wire[:cut], wire[cut:]], [wire[: len(head) + 20], wire[len(head) + 20 : cut], wire[cut:]]):
            assert read_all(pieces) == expected, (cut, [len(piece) for piece in pieces])


def test_long_bulk_with_a_bad_byte_after_its_cr_is_refused() -> None:
    value = b"v" * 20_000
    reader = resp.Reader()
    reader.feed(b"$%d\r\n%s\r" % (len(value), value))
    assert reader.gets() is False
    reader.feed(b"X:1\r\n")
    with pytest.raises(resp.ProtocolError):
        reader.gets()


@given(
    size=st.integers(16 * 1024, 70_000),
    in_array=st.booleans(),
    around=st.lists(st.integers(-3, 2), min_size=1, max_size=3),
    early=st.integers(0, 70_000),
)
def test_long_bulk_cut_near_its_end_reads_whole(size: int, in_array: bool, around: List[int], early: int) -> None:
    # Cuts drawn near the end of a long value, where its terminator is, and
    # one anywhere before: the replies are those of one whole feed.
    value = bytes([size % 251]) * size
    head = b"*2\r\n:1\r\n" if in_array else b""
    wire = head + b"$%d\r\n%s\r\n" % (size, value) + b"+OK\r\n"
    end = len(wire) - 5  # just after the value's LF
    cuts = sorted({min(early, end - 1)} | {end + offset for offset in around})
    pieces = [wire[start:stop] for start, stop in zip([0] + cuts, cuts + [len(wire)])]
    assert read_all(pieces) == [[1, value] if in_array else value, "OK"]


@given(
    sizes=st.lists(st.integers(16 * 1024, 200_000), min_size=1, max_size=3),
    cut=st.integers(0, 70_000),
    data=st.data(),
)
def test_feed_rest_reads_the_same_as_feed(sizes: List[int], cut: int, data: Any) -> None:
    # A connection feeds one chunk, then hands over the rest of a long bulk
    # with feed_rest whenever one is waited for: the replies are what feed()
    # alone gives.
    values = [bytes([i % 251]) * size for i, size in enumerate(sizes)]
    wire = b"*%d\r\n" % len(values) + b"".join(b"$%d\r\n%s\r\n" % (len(v), v) for v in values) + b":1\r\n"
    reader = resp.Reader()
    got: List[Any] = []
    pos = 0
    while pos < len(wire):
        step = data.draw(st.integers(1, cut + 1)) if reader.bulk_missing() == 0 else reader.bulk_missing()
        piece = wire[pos : pos + step]
        buffer = bytearray(piece)
        if reader.bulk_missing():
            reader.feed_rest(memoryview(buffer))
        else:
            reader.feed(piece)
        pos += len(piece)
        if pos < len(wire) and data.draw(st.booleans()):
            continue  # gets() later, after more feeds
        while True:
            reply = reader.gets()
            if reply is False:
                break
            got.append(reply)
        buffer[:] = b"x" * len(buffer)  # reused by the caller: nothing of it is kept
    assert got == [values, 1]


# -- hypothesis: round trips and random bytes ---------------------------------

_line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)

replies = st.recursive(
    st.one_of(
        st.binary(max_size=40),
        _line_text,
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.none(),
        # Built as the parser builds them, so each kind gets its own class.
        st.builds(lambda word, text: error_from_reply(f"{word} {text}"),
                  st.sampled_from(["ERR", "MOVED", "BUSY", "WRONGTYPE", "NOAUTH"]), _line_text),
    ),
    lambda children: st.lists(children, max_size=5),
    max_leaves=30,
)


def encode_reply(value: Any, null_array: bool = False) -> bytes:
    """The test's own RESP2 encoder, independent of resp."""
    if value is None:
        return b"*-1\r\n" if null_array else b"$-1\r\n"
    if isinstance(value, resp.ResponseError):
        return b"-" + str(value).encode() + b"\r\n"
    if isinstance(value, bytes):
        return b"$" + str(len(value)).encode() + b"\r\n" + value + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":" + str(value).encode() + b"\r\n"
    items = [encode_reply(item, null_array=not null_array) for item in value]
    return b"*" + str(len(value)).encode() + b"\r\n" + b"".join(items)


def chunked(data: bytes, draw: Any) -> List[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


@given(st.lists(replies, min_size=1, max_size=5), st.booleans(), st.data())
def test_round_trip_under_random_chunkings(values: List[Any], null_array: bool, data: Any) -> None:
    wire = b"".join(encode_reply(v, null_array) for v in values)
    got = read_all(chunked(wire, data.draw))
    assert [normalize(r) for r in got] == [normalize(v) for v in values]


@given(st.lists(st.one_of(replies, st.sampled_from([b"L" * 16_384, b"\r\n" * 9_000])), min_size=1, max_size=6),
       st.booleans(), st.data())
def test_round_trip_with_gets_called_at_random_between_feeds(values: List[Any], null_array: bool,
                                                              data: Any) -> None:
    """Fed before it is drained (gets() called any number of times between
    two feeds, none included): the same replies, in the same order."""
    wire = b"".join(encode_reply(v, null_array) for v in values)
    reader = resp.Reader()
    got = []
    for chunk in chunked(wire, data.draw):
        reader.feed(chunk)
        for _ in range(data.draw(st.integers(0, 2))):
            reply = reader.gets()
            if reply is not False:
                got.append(reply)
    while True:
        reply = reader.gets()
        if reply is False:  # is, not ==: a reply 0 equals False
            break
        got.append(reply)
    assert [normalize(r) for r in got] == [normalize(v) for v in values]
    assert not reader.has_data()


def test_replies_left_unread_are_not_copied_again_at_each_feed() -> None:
    """Fed before it is drained, the reader reads on in what it holds and
    joins what came since only where that runs out: joined at each feed,
    every reply left unread was copied again, in time that grew with the
    square of the backlog."""
    reader = resp.Reader()
    reader.feed(b":1\r\n" * 1000)
    held = reader._buffer  # type: ignore[attr-defined]
    for _ in range(1000):
        reader.feed(b":2\r\n")
        assert reader.gets() == 1
        assert reader._buffer is held  # type: ignore[attr-defined]
    assert [reader.gets() for _ in range(1001)] == [2] * 1000 + [False]


def _random_bytes_only_raise_protocol_error(chunks: List[bytes]) -> None:
    reader = resp.Reader()
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while reader.gets() is not False:
                pass
    except resp.ProtocolError:
        pass


@given(st.lists(st.binary(max_size=30), max_size=10))
def test_random_bytes_only_raise_protocol_error(chunks: List[bytes]) -> None:
    _random_bytes_only_raise_protocol_error(chunks)


# Bytes that look almost like RESP2 find the corners that uniform noise misses.
_resp_ish = st.lists(
    st.sampled_from([b"*", b"$", b":", b"+", b"-", b"\r\n", b"\r", b"\n", b"0", b"1", b"2", b"-1",
                     b"9", b"_", b" ", b"x", b"\x00", b"\xff", b"%", b"#"]),
    max_size=40,
).map(b"".join)


@given(_resp_ish, st.data())
def test_resp_like_bytes_only_raise_protocol_error(wire: bytes, data: Any) -> None:
    _random_bytes_only_raise_protocol_error(chunked(wire, data.draw))


# -- hostile input ------------------------------------------------------------

HOSTILE = [
    ("huge bulk", b"$1099511627776\r\n"),
    ("bulk just over 512 MiB", b"$536870913\r\n"),
    ("huge array", b"*4294967297\r\n"),
    ("bulk -2", b"$-2\r\n"),
    ("array -2", b"*-2\r\n"),
    ("underscore in int", b":12_3\r\n"),
    ("underscore in bulk length", b"$1_0\r\n"),
    ("space in int", b": 12\r\n"),
    ("space after int", b":12 \r\n"),
    ("tab in int", b":\t12\r\n"),
    ("CR after int", b":12\r\r\n"),
    ("plus sign in bulk length", b"$+3\r\nabc\r\n"),
    ("plus sign in array length", b"*+1\r\n:1\r\n"),
    ("plus and minus in int", b":+-12\r\n"),
    ("lone plus", b":+\r\n"),
    ("leading zero after a plus", b":+012\r\n"),
    ("leading zero in int", b":012\r\n"),
    ("zeros for zero", b":00\r\n"),
    ("minus zero", b":-0\r\n"),
    ("leading zero in negative int", b":-012\r\n"),
    ("18 digits with a leading zero", b":0" + b"9" * 17 + b"\r\n"),
    ("a whole line of digits", b":" + b"1" * (MAX_LINE_LENGTH - 8) + b"\r\n"),
    ("empty int", b":\r\n"),
    ("empty bulk length", b"$\r\n"),
    ("lone minus", b":-\r\n"),
    ("non-ascii digits", ":\u0661\u0662\r\n".encode()),
    ("20-digit length", b"$00000000000000000001\r\n"),
    ("int over int64", b":9223372036854775808\r\n"),
    ("int under int64", b":-9223372036854775809\r\n"),
    ("unknown type byte", b"?what\r\n"),
    ("empty line", b"\r\n"),
    ("inline text", b"OK\r\n"),
    ("lone CR in a status", b"+O\rK\r\n"),
    ("lone LF in a status", b"+O\nK\r\n"),
    ("lone CR in an error", b"-ERR \rx\r\n"),
    ("lone LF in an error", b"-ERR \nx\r\n"),
    ("bulk not ended by CRLF", b"$3\r\nabcXY"),
    ("nested too deep", b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n"),
    ("integer line too long", b":" + b"1" * (MAX_LINE_LENGTH + 1)),
    ("length line too long", b"$" + b"1" * (MAX_LINE_LENGTH + 1)),
] + [(f"RESP3 {chr(t)}", bytes([t]) + b"1\r\n") for t in b"_#,(!=%~>|"]


@contextmanager
def peak_memory() -> Iterator[List[int]]:
    """Measure the peak of Python allocations in the block (into the list it
    yields). PyPy has no tracemalloc: the test is then reported as skipped."""
    tracemalloc = pytest.importorskip("tracemalloc", reason="no tracemalloc on this interpreter")
    try:
        tracemalloc.start()
    except Exception:  # PyPy: the module exists, its C part does not
        pytest.skip("no tracemalloc on this interpreter")
    result: List[int] = []
    try:
        yield result
        result.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("data", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_input_raises_at_once(data: bytes) -> None:
    reader = resp.Reader()
    reader.feed(data)
    with pytest.raises(resp.ProtocolError):
        reader.gets()


@pytest.mark.parametrize("data", [h[1] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_input_allocates_little(data: bytes) -> None:
    reader = resp.Reader()
    with peak_memory() as peak:
        reader.feed(data)
        with pytest.raises(resp.ProtocolError):
            reader.gets()
    # What was fed is at most ~64 KiB; what is claimed is up to a terabyte.
    assert peak[0] < 4 * len(data) + 64 * 1024


def test_hostile_array_inside_an_array() -> None:
    reader = resp.Reader()
    reader.feed(b"*2\r\n:1\r\n*4294967297\r\n")
    with pytest.raises(resp.ProtocolError):
        reader.gets()


def test_long_line_refused_once_over_the_bound_when_fed_in_pieces() -> None:
    reader = resp.Reader()
    reader.feed(b"$")
    fed = 1
    while fed <= MAX_LINE_LENGTH:
        assert reader.gets() is False
        reader.feed(b"a" * 4096)
        fed += 4096
    with pytest.raises(resp.ProtocolError):
        reader.gets()


@pytest.mark.parametrize("chunk", [1, 4096, 10**6])
def test_line_bound_is_the_same_fed_whole_or_in_pieces(chunk: int) -> None:
    # Status and error lines have no bound but the bulk one: long ones (a Lua
    # script's status_reply or error_reply) are read, however the bytes
    # arrive (the CR alone at the end of a piece included). A length line
    # that reaches MAX_LINE_LENGTH without its CRLF is refused.
    for kind in (b"+", b"-"):
        for text_length in (MAX_LINE_LENGTH - 2, MAX_LINE_LENGTH - 1, 80_000):
            wire = kind + b"a" * text_length + b"\r\n:1\r\n"
            pieces = [wire[i : i + chunk] for i in range(0, len(wire), chunk)]
            cr = len(wire) - 6
            for cuts in (pieces, [wire[:cr], wire[cr : cr + 1], wire[cr + 1 :]]):
                assert len(read_all(cuts)) == 2
    wire = b"$" + b"1" * MAX_LINE_LENGTH
    with pytest.raises(resp.ProtocolError):
        read_all([wire[i : i + chunk] for i in range(0, len(wire), chunk)])


def test_array_claiming_many_elements_holds_only_what_arrived() -> None:
    # A legal length (2**32) that never arrives: memory follows the bytes.
    reader = resp.Reader()
    with peak_memory() as peak:
        reader.feed(b"*4294967296\r\n" + b":1\r\n" * 10)
        assert reader.gets() is False
    assert peak[0] < 64 * 1024


def test_bulk_claiming_512_mib_holds_only_what_arrived() -> None:
    reader = resp.Reader()
    with peak_memory() as peak:
        reader.feed(b"$536870912\r\n" + b"x" * 1000)
        assert reader.gets() is False
        reader.feed(b"y" * 1000)
        assert reader.gets() is False
    assert peak[0] < 64 * 1024


# -- encode_command -----------------------------------------------------------


def parse_request(data: bytes) -> List[bytes]:
    """The test's own request parser: one array of bulk strings, nothing after."""
    assert data[:1] == b"*"
    end = data.index(b"\r\n")
    count = int(data[1:end])
    pos = end + 2
    args = []
    for _ in range(count):
        assert data[pos : pos + 1] == b"$"
        end = data.index(b"\r\n", pos)
        length = int(data[pos + 1 : end])
        start = end + 2
        args.append(data[start : start + length])
        assert data[start + length : start + length + 2] == b"\r\n"
        pos = start + length + 2
    assert pos == len(data), "bytes after the command"
    return args


def expected_bytes(arg: Any) -> bytes:
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, int):
        return str(arg).encode()
    if isinstance(arg, float):
        return repr(arg).encode()
    return bytes(arg)


@pytest.mark.parametrize(
    "arg, wire",
    [
        (b"x\r\ny", b"x\r\ny"),
        (b"", b""),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        (memoryview(b"abcdef")[::2], b"ace"),
        (memoryview(array.array("H", [1, 2])), array.array("H", [1, 2]).tobytes()),
        (array.array("B", b"hi"), b"hi"),  # any bytes-like object, not only the three built-in types
        (array.array("H", [1, 2]), array.array("H", [1, 2]).tobytes()),
        ("str", b"str"),
        ("caf\u00e9 \u2603", "caf\u00e9 \u2603".encode()),
        (0, b"0"),
        (42, b"42"),
        (-42, b"-42"),
        (2**70, str(2**70).encode()),
        (1.5, b"1.5"),
        (-0.25, b"-0.25"),
        (1e100, b"1e+100"),
        (math.inf, b"inf"),
    ],
    ids=repr,
)
def test_encode_command_accepted_types(arg: Any, wire: bytes) -> None:
    data = resp.encode_command("ECHO", arg)
    assert data == b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (len(wire), wire)
    assert parse_request(data) == [b"ECHO", wire]


def test_encode_command_exact_bytes() -> None:
    assert resp.encode_command("RPUSH", "q", b"x", 7) == (
        b"*4\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$1\r\nx\r\n$1\r\n7\r\n"
    )


class _Int(int):
    def __str__(self) -> str:  # what IntEnum does on Python 3.8-3.10
        return "_Int.ONE"

    __repr__ = __str__


class _Float(float):
    def __repr__(self) -> str:
        return "_Float(1.5)"


def test_encode_command_sends_the_value_of_int_and_float_subclasses() -> None:
    assert parse_request(resp.encode_command("ECHO", _Int(1), _Float(1.5))) == [b"ECHO", b"1", b"1.5"]


@pytest.mark.parametrize("bad", [True, False, None, object(), ["a"], ("a",), {"a": 1}, 1j],
                         ids=lambda v: type(v).__name__)
def test_encode_command_refuses_other_types(bad: Any) -> None:
    with pytest.raises(TypeError):
        resp.encode_command("SET", "k", bad)
    with pytest.raises(TypeError):
        encode_parts(("SET", b"k" * LARGE_VALUE, bad))


def test_encode_command_needs_a_name() -> None:
    with pytest.raises(ValueError):
        resp.encode_command()


command_args = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.binary(max_size=30).map(bytearray),
        st.binary(max_size=30).map(memoryview),
        st.text(max_size=20),
        st.integers(),
        st.floats(allow_nan=False),
    ),
    min_size=1,
    max_size=8,
)


@given(command_args)
def test_encode_command_round_trip(args: List[Any]) -> None:
    assert parse_request(resp.encode_command(*args)) == [expected_bytes(a) for a in args]


@pytest.mark.parametrize("key", ["q", "caf\u00e9", "k" * 600, "k" * 1023, "k" * 1024, "k" * 3000])
@pytest.mark.parametrize("value", [b"", b"v", b"v" * 1023, b"v" * 1024, b"v" * (LARGE_VALUE - 1), "\u2603", 7, -1])
def test_the_two_and_three_argument_paths_encode_what_the_general_one_does(key: str, value: Any) -> None:
    # RPUSH key value and LPOP key take a path of their own, with the
    # encoded name and key remembered: a second time gives the same bytes.
    for _ in range(2):
        three = encode_parts(("RPUSH", key, value))
        assert len(three) == 1
        assert parse_request(three[0]) == [b"RPUSH", key.encode(), expected_bytes(value)]
        two = encode_parts(("LPOP", key))
        assert len(two) == 1
        assert parse_request(two[0]) == [b"LPOP", key.encode()]


def test_remembered_command_heads_stay_bounded() -> None:
    for n in range(3 * protocol._MAX_HEADS):
        assert parse_request(resp.encode_command("LLEN", f"key{n}")) == [b"LLEN", b"key%d" % n]
        assert len(protocol._HEADS) <= protocol._MAX_HEADS
        # Whole commands of a name, a key and an int, as BLPOP key timeout.
        assert parse_request(resp.encode_command("BLPOP", "q", n)) == [b"BLPOP", b"q", b"%d" % n]
        assert len(protocol._WHOLES) <= protocol._MAX_HEADS
    long_key = "k" * protocol._MAX_HEAD
    assert parse_request(resp.encode_command("LLEN", long_key)) == [b"LLEN", long_key.encode()]
    assert ("LLEN", long_key) not in protocol._HEADS
    assert parse_request(resp.encode_command("BLPOP", long_key, 5)) == [b"BLPOP", long_key.encode(), b"5"]
    assert ("BLPOP", long_key, 5) not in protocol._WHOLES
    # An int remembered is not confused with the bool or float equal to it.
    assert parse_request(resp.encode_command("BLPOP", "q", 1)) == [b"BLPOP", b"q", b"1"]
    with pytest.raises(TypeError):
        encode_parts(("BLPOP", "q", True))
    assert parse_request(resp.encode_command("BLPOP", "q", 1.0)) == [b"BLPOP", b"q", b"1.0"]


def test_an_unencodable_key_raises_and_is_not_remembered() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_parts(("LPOP", "\ud800"))
    with pytest.raises(UnicodeEncodeError):
        encode_parts(("RPUSH", "q", "\ud800"))
    with pytest.raises(UnicodeEncodeError):
        encode_parts(("BLPOP", "\ud800", 0))
    assert ("LPOP", "\ud800") not in protocol._HEADS
    assert ("BLPOP", "\ud800", 0) not in protocol._WHOLES


# -- the large-value path ------------------------------------------------------


def test_large_values_are_separate_pieces_not_copies() -> None:
    big_bytes = b"b" * LARGE_VALUE
    big_array = bytearray(b"a" * (LARGE_VALUE + 1))
    big_view = memoryview(bytearray(b"v" * (2 * LARGE_VALUE)))
    parts = encode_parts(("MSET", "k1", big_bytes, "k2", big_array, "k3", big_view, "end", b"tiny"))
    assert parts[1] is big_bytes
    assert isinstance(parts[3], memoryview) and parts[3].obj is big_array
    assert isinstance(parts[5], memoryview) and parts[5].obj is big_view.obj
    assert len(parts) == 7  # header+k1 header, value, CRLF+k2 header, value, ..., CRLF+tail
    joined = b"".join(parts)
    assert joined == resp.encode_command("MSET", "k1", big_bytes, "k2", big_array, "k3", big_view,
                                         "end", b"tiny")
    assert parse_request(joined) == [b"MSET", b"k1", big_bytes, b"k2", bytes(big_array), b"k3",
                                     bytes(big_view), b"end", b"tiny"]


def test_value_just_under_large_is_joined() -> None:
    value = b"s" * (LARGE_VALUE - 1)
    parts = encode_parts(("SET", "k", value))
    assert len(parts) == 1
    assert parse_request(parts[0]) == [b"SET", b"k", value]


@pytest.mark.parametrize(
    "value",
    [
        memoryview(b"n" * (2 * LARGE_VALUE))[::2],  # not contiguous
        memoryview(array.array("i", range(LARGE_VALUE))),  # items wider than a byte
        "\u2603" * LARGE_VALUE,  # a str: encoded, then its own piece
    ],
    ids=["strided memoryview", "int memoryview", "large str"],
)
def test_large_values_of_every_kind_encode_correctly(value: Any) -> None:
    parts = encode_parts(("SET", "k", value))
    assert parse_request(b"".join(bytes(p) for p in parts)) == [b"SET", b"k", expected_bytes(value)]


def test_protocol_module_limits() -> None:
    # The documented bounds of SPEC section 2.
    assert protocol.MAX_BULK_LENGTH == 512 * 1024 * 1024
    assert protocol.MAX_ARRAY_LENGTH == 2**32


@pytest.mark.parametrize("first", [b"x", b"_", b"#", b"%", b"\r", b"\x00"])
def test_a_reply_with_no_type_byte_is_refused_at_once(first: bytes) -> None:
    # No line end needed: nothing that follows can make it RESP2.
    reader = resp.Reader()
    reader.feed(first)
    with pytest.raises(resp.ProtocolError, match="type byte"):
        reader.gets()


@pytest.mark.parametrize("chunk", [1000, 4096, 65536, 10**6])
@pytest.mark.parametrize("length", [MAX_LINE_LENGTH - 1, MAX_LINE_LENGTH, 200_000])
def test_long_status_and_error_lines_are_read_whole_or_in_pieces(length: int, chunk: int) -> None:
    text = b"s" * length
    wire = b"+" + text + b"\r\n-ERR " + text + b"\r\n:1\r\n"
    got = read_all([wire[i : i + chunk] for i in range(0, len(wire), chunk)])
    assert got[0] == text.decode() and str(got[1]) == "ERR " + text.decode() and got[2] == 1
    assert isinstance(got[1], resp.ResponseError)


def _waiting_reader(value: bytes) -> resp.Reader:
    reader = resp.Reader()
    reader.feed(b"$%d\r\n" % len(value) + value[:1000])
    assert reader.gets() is False
    return reader


def test_feed_rest_with_a_non_contiguous_view_reads_as_feed() -> None:
    value = bytes(range(256)) * 400
    reader = _waiting_reader(value)
    rest = value[1000:] + b"\r\n"
    spread = bytearray(2 * len(rest))
    spread[::2] = rest
    view = memoryview(spread)[::2]
    assert len(view) == reader.bulk_missing()
    reader.feed_rest(view)
    spread[:] = b"x" * len(spread)  # copied: the caller's again at once
    assert reader.gets() == value


def test_feed_rest_with_a_view_of_wide_items_reads_as_feed() -> None:
    value = b"\r\n" * 60_000
    reader = _waiting_reader(value)
    items = memoryview(array.array("H", [0x0A0D] * reader.bulk_missing()))  # twice the bytes missing
    reader.feed_rest(items)
    assert reader.gets() == value  # the declared length, not the view's
    assert reader.has_data()


@pytest.mark.parametrize("bad", [5, True, 100_000, [43, 79, 75, 13, 10], "+OK\r\n"])
def test_feed_refuses_what_is_not_bytes_like(bad: Any) -> None:
    reader = resp.Reader()
    with pytest.raises(TypeError):
        reader.feed(bad)
    assert not reader.has_data()
