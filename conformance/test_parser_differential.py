"""Differential fuzzing of ``resp.Reader`` against ``hiredis.Reader``, with the
streams cut where an incremental parser is most likely to slip.

``test_parser.py`` cuts its streams at random offsets and its bulk strings are
short, so it seldom cuts a reply at the exact byte that matters (a bug that
needed a 16 KiB bulk string cut between the CR and the LF of its terminator
went unseen there). Here:

* the streams hold every RESP2 reply type, bulk strings of 16 KiB to 200 KiB
  (sizes around 16384, 65527 and 65536 among them) and values holding CR, LF
  and CRLF bytes;
* the cuts fall mostly within two bytes of a CR, an LF, the end of a reply,
  the start and end of a bulk string's value, or 16 KiB into and before the end
  of a long one; the rest at random;
* ``resp.Reader`` is read (``gets()``) after some feeds and not others, is fed
  ``bytes``, ``bytearray`` or ``memoryview``, and, when ``bulk_missing()``
  says a long bulk string waits, is sometimes given the rest through
  ``feed_rest`` as ``Connection`` does: exactly that many bytes (or a few fewer
  or more, which it must copy), in a buffer that is overwritten after the next
  ``gets()`` (or at once where a copy is due) to show it keeps none of it.

``test_valid_streams_agree_when_cut_at_boundaries`` compares both readers with
the replies generated. ``test_mutated_streams_agree_where_hiredis_accepts``
flips, inserts and deletes bytes of such streams: ``resp`` must then raise
``resp.ProtocolError`` or return replies, nothing else; its replies must be
those of ``strict_parse``, a whole-buffer restatement of the rules in
``resp/protocol.py``, however the stream is cut; and where hiredis reads the
stream to its end, ``resp`` must return the same replies unless the stream
breaks a rule on which the two knowingly differ (``EXPECTED_DIFFERENCES``).

Comparison form: bulk strings ``bytes``, integers ``int``, nulls ``None``,
arrays ``list``, an error reply ("error", message), a status reply ("status",
text). hiredis returns a status reply as ``bytes``, the same type as a bulk
string, so ``agree`` matches such ``bytes`` with ("status", text) when they
decode to ``text`` (``resp`` decodes status lines as UTF-8 with replacement,
hiredis does that for error messages only).

The example counts keep the default run of this file around 15 s on the 2-core
machine. ``CONFORMANCE_FUZZ_EXAMPLES`` replaces both counts, for a deeper hunt
(20,000 each: about 8 minutes)::

    CONFORMANCE_FUZZ_EXAMPLES=20000 tox -e conformance -- conformance/test_parser_differential.py
"""

import os
import re
from itertools import islice
from typing import Any, List, Optional, Tuple

import hiredis
from hypothesis import event, given, settings
from hypothesis import strategies as st

import resp
from resp.protocol import MAX_ARRAY_LENGTH, MAX_BULK_LENGTH, MAX_DEPTH, MAX_LINE_LENGTH, MAX_STATUS_LENGTH

_DEEP = int(os.environ.get("CONFORMANCE_FUZZ_EXAMPLES", "0"))
VALID_EXAMPLES = _DEEP or 400
MUTATED_EXAMPLES = _DEEP or 600

SMALL_PIECE = 16 * 1024  # resp.protocol._SMALL_PIECE: where a bulk string becomes "long"
_CR_OR_LF = re.compile(b"[\r\n]")

# ---------------------------------------------------------------------------
# Reply trees and their bytes

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LINE_TEXT = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30),
    st.sampled_from(["OK", "QUEUED", "", "ERR unknown command 'X'", "WRONGTYPE Operation against a key",
                     "MOVED 3999 127.0.0.1:6381", "ASK 1 h:1", "MOVED x", "LOADING", "NOAUTH", "\x00", "$3", "*1"]),
)
TRICKY_SHORT = [b"", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b"\n\r", b"a\r\nb", b"$3\r\nabc\r\n", b"+OK\r\n",
                b"\r\r\n\n", b"*1\r\n:1\r\n", b"-ERR\r\n", b"0", b"\x00\r"]
#: Sizes of bulk strings around the thresholds of resp.protocol (_SHORT_BULK
#: 1024, _SMALL_PIECE 16 KiB, MAX_LINE_LENGTH 64 KiB) and of common buffers.
MEDIUM_SIZES = [1022, 1023, 1024, 1025, 4096, 8192, 16379, 16380, 16381, 16382, 16383]
LONG_SIZES = [16384, 16385, 16386, 16387, 16388, 32768, 65520, 65525, 65526, 65527, 65528, 65529,
              65534, 65535, 65536, 65537, 65538, 65540, 131072, 200 * 1024]


class Long(bytes):
    """A long value, shown by its size and ends in hypothesis's reports."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes: {bytes(self[:12])!r}...{bytes(self[-12:])!r}>"


@st.composite
def patterned(draw: Any, sizes: Any) -> Tuple[str, bytes]:
    """A bulk string of a drawn size: a short drawn pattern repeated, with CRLF,
    CR or LF written in at drawn places (at its ends often)."""
    size = draw(sizes)
    pattern = draw(st.binary(min_size=1, max_size=8))
    value = bytearray((pattern * (size // len(pattern) + 1))[:size])
    places = st.one_of(st.sampled_from([0, 1, size - 3, size - 2, size - 1, SMALL_PIECE - 10, SMALL_PIECE - 1]),
                       st.integers(0, size - 1))
    for at, what in draw(st.lists(st.tuples(places, st.sampled_from([b"\r\n", b"\r", b"\n"])), max_size=4)):
        at %= size
        value[at:at + len(what)] = what[:size - at]
    assert len(value) == size
    return ("bulk", Long(value))


short_bulks = st.tuples(st.just("bulk"), st.one_of(st.binary(max_size=40), st.sampled_from(TRICKY_SHORT)))
medium_bulks = patterned(st.sampled_from(MEDIUM_SIZES))
long_bulks = patterned(st.one_of(st.sampled_from(LONG_SIZES), st.integers(SMALL_PIECE, 200 * 1024)))

leaves = st.one_of(
    short_bulks,
    st.just(("nullbulk", None)),
    st.tuples(st.just("status"), LINE_TEXT),
    st.tuples(st.just("error"), LINE_TEXT),
    st.tuples(st.just("int"), st.one_of(INT64, st.sampled_from([0, -1, 10, 2**63 - 1, -(2**63)]))),
    st.just(("nullarray", None)),
    st.just(("array", [])),
    medium_bulks,
    long_bulks,
)
replies = st.recursive(leaves, lambda children: st.tuples(st.just("array"), st.lists(children, max_size=5)),
                       max_leaves=10)
#: Streams of replies. Hypothesis favours small trees, so long bulk strings are
#: also drawn on their own, at the top level and inside an array: without
#: that, most streams would hold none.
streams = st.lists(
    st.one_of(
        replies,
        long_bulks,
        st.builds(lambda before, long, after: ("array", before + [long] + after),
                  st.lists(replies, max_size=2), long_bulks, st.lists(replies, max_size=2)),
    ),
    min_size=1, max_size=4,
)


class Marks:
    """Where a stream is worth cutting.

    ``near``: offsets around which to cut: every structural CR and LF, the
    start and end of each reply and of each bulk string's value, CR and LF
    bytes in values (the first and last few), 16 KiB into and before the end
    of a long value. ``crs``: the offset of every structural CR (ending a line
    or a bulk string). ``long_crs``: those ending a bulk string of 16 KiB or
    more."""

    def __init__(self) -> None:
        self.near: List[int] = []
        self.crs: List[int] = []
        self.long_crs: List[int] = []


def encode(tree: Tuple[str, Any], out: bytearray, marks: Marks) -> None:
    """Append the RESP2 bytes of ``tree`` to ``out``, noting in ``marks`` where
    they are worth cutting."""
    kind, value = tree
    near = marks.near
    near.append(len(out))
    if kind == "bulk":
        out += b"$%d\r\n" % len(value)
        start = len(out)
        marks.crs.append(start - 2)
        near += [start - 2, start - 1, start]
        out += value + b"\r\n"
        stop = start + len(value)
        near += [stop, stop + 1]
        marks.crs.append(stop)
        if len(value) >= SMALL_PIECE:
            marks.long_crs.append(stop)
        found = [start + m.start() for m in islice(_CR_OR_LF.finditer(value), 6)]
        tail = max(0, len(value) - 64)
        found += [start + m.start() for m in _CR_OR_LF.finditer(value, tail)][-6:]
        near += found
        if len(value) >= SMALL_PIECE - 8:
            near += [start + SMALL_PIECE, stop - SMALL_PIECE, stop + 2 - SMALL_PIECE]
    else:
        if kind in ("status", "error"):
            out += (b"+" if kind == "status" else b"-") + value.encode() + b"\r\n"
        elif kind == "int":
            out += b":%d\r\n" % value
        elif kind == "nullbulk":
            out += b"$-1\r\n"
        elif kind == "nullarray":
            out += b"*-1\r\n"
        else:
            out += b"*%d\r\n" % len(value)
        near.append(len(out) - 2)
        marks.crs.append(len(out) - 2)
        if kind == "array":
            for child in value:
                encode(child, out, marks)
    near.append(len(out))


def expected(tree: Tuple[str, Any]) -> Any:
    """The comparison form of a reply tree."""
    kind, value = tree
    if kind in ("status", "error"):
        return (kind, value)
    if kind == "array":
        return [expected(child) for child in value]
    if kind in ("nullbulk", "nullarray"):
        return None
    return value


def stream_of(trees: List[Tuple[str, Any]]) -> Tuple[bytes, Marks]:
    """The bytes of the replies and where they are worth cutting."""
    out = bytearray()
    marks = Marks()
    for tree in trees:
        encode(tree, out, marks)
    return bytes(out), marks


def draw_cuts(data: Any, size: int, marks: Marks) -> List[int]:
    """Sorted offsets (1 to size - 1) cutting a stream of ``size`` bytes: one
    or two within two bytes of a structural CR (of a long bulk string's
    terminator, half the time there is one); a few of the offsets within two
    bytes of any mark (a reply is then often cut only once, where it matters),
    many of them, or all; plus a few random offsets."""
    if size < 2:
        return []
    cuts = set()
    crs = st.sampled_from(marks.crs)
    if marks.long_crs:
        crs = st.one_of(st.sampled_from(marks.long_crs), crs)
    # Between the CR and the LF (shift 1) most often: the cut a parser waits
    # across with one byte of the terminator in hand.
    shifts = st.sampled_from([1, 1, 1, 0, 2, -1, -2])
    for cr, shift in data.draw(st.lists(st.tuples(crs, shifts), min_size=1, max_size=2), label="cuts at a CR"):
        cuts.add(cr + shift)
        if cr in marks.long_crs and shift == 1:
            event("a long bulk string cut between the CR and LF of its terminator")
    candidates = sorted({at + d for at in marks.near for d in range(-2, 3)})
    if candidates:
        how = data.draw(st.sampled_from(["few", "few", "many", "every"]), label="structural cuts: how many")
        if how == "every":
            cuts.update(candidates)
        else:
            limit = 3 if how == "few" else 24
            cuts.update(data.draw(st.lists(st.sampled_from(candidates), max_size=limit), label="structural cuts"))
    cuts.update(data.draw(st.lists(st.integers(1, size - 1), max_size=3), label="random cuts"))
    return sorted(at for at in cuts if 0 < at < size)


# ---------------------------------------------------------------------------
# Running the readers

Outcome = Tuple[List[Any], str]  # the replies, then "complete", "incomplete" or "error"


def ours(reply: Any) -> Any:
    """A reply of ``resp.Reader`` in the comparison form; its types checked."""
    if type(reply) is bytes or type(reply) is int or reply is None:
        return reply
    if type(reply) is str:
        return ("status", reply)
    if isinstance(reply, resp.ResponseError):
        return ("error", str(reply))
    if type(reply) is list:
        return [ours(item) for item in reply]
    raise AssertionError(f"resp returned a {type(reply).__name__}: {reply!r:.80}")


def theirs(reply: Any) -> Any:
    """A reply of ``hiredis.Reader`` in the comparison form (a status reply
    stays ``bytes``: see ``agree``)."""
    if isinstance(reply, hiredis.ReplyError):
        return ("error", str(reply))
    if isinstance(reply, list):
        return [theirs(item) for item in reply]
    return reply


def agree(our: Any, their: Any) -> bool:
    """Whether a reply of resp and one of hiredis, both in comparison form, are
    the same reply."""
    if isinstance(our, tuple) and our[0] == "status":
        return type(their) is bytes and their.decode("utf-8", "replace") == our[1]
    if isinstance(our, list):
        return isinstance(their, list) and len(our) == len(their) and all(map(agree, our, their))
    if isinstance(our, bytes):  # a bulk string (or a Long expected)
        return type(their) is bytes and our == their
    return type(our) is type(their) and our == their


def all_agree(our: List[Any], their: List[Any]) -> bool:
    return len(our) == len(their) and all(map(agree, our, their))


def brief(**values: Any) -> str:
    """A failure message: the values, with long byte strings shortened."""

    def short(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)) and len(value) > 80:
            return Long(value)
        if isinstance(value, (list, tuple)):
            return type(value)(map(short, value))
        return value

    return "\n".join(f"{name} = {short(value)!r}" for name, value in values.items())


def _scribble(buffer: bytearray) -> None:
    buffer[:] = b"\xa5" * len(buffer)  # same length: allowed while views of it exist


def run_resp(data: Any, stream: bytes, cuts: List[int]) -> Outcome:
    """Feed ``stream`` to a ``resp.Reader`` cut at ``cuts``, with the choices
    described in the module docstring drawn from ``data``. Only a
    ``resp.ProtocolError`` is caught."""
    reader = resp.Reader()
    replies: List[Any] = []
    lent: List[bytearray] = []  # given to feed_rest uncopied: overwritten after the next gets()

    def read() -> None:
        while True:
            reply = reader.gets()
            for buffer in lent:
                _scribble(buffer)
            lent.clear()
            if reply is False:
                # What Connection reads next: never negative.
                assert reader.bulk_missing() >= 0
                return
            replies.append(ours(reply))

    reading = data.draw(st.sampled_from(["after every feed", "at random", "at the end"]), label="gets()")
    bounds = iter(cuts + [len(stream)])
    bound = 0
    pos = 0
    try:
        while pos < len(stream):
            missing = reader.bulk_missing()
            if missing > 0 and data.draw(st.booleans(), label="feed_rest?"):
                extra = data.draw(st.sampled_from([0, 0, 0, 0, -2, -1, 1, 2, len(stream)]), label="rest size error")
                size = max(1, min(missing + extra, len(stream) - pos))
                room = bytearray(size + data.draw(st.sampled_from([0, 0, 7]), label="room"))
                room[:size] = stream[pos:pos + size]
                given = room if len(room) == size and data.draw(st.booleans(), label="bytearray?") else (
                    memoryview(room)[:size])
                reader.feed_rest(given)
                event("feed_rest: the exact rest" if size == missing else "feed_rest: not the exact rest")
                if size == missing:
                    lent.append(room)
                else:
                    _scribble(room)  # not the exact rest: copied like feed()
                pos += size
                if data.draw(st.integers(0, 3), label="read after feed_rest?"):
                    read()
                continue
            while bound <= pos:
                bound = next(bounds)
            chunk = stream[pos:bound]
            kind = data.draw(st.sampled_from(["bytes", "bytes", "bytearray", "memoryview"]), label="chunk type")
            if kind == "bytes":
                reader.feed(chunk)
            else:
                copy = bytearray(chunk)
                reader.feed(copy if kind == "bytearray" else memoryview(copy))
                _scribble(copy)  # feed() copies what is not bytes
            pos = bound
            if reading == "after every feed" or (reading == "at random" and data.draw(st.booleans(), label="read?")):
                read()
        read()
    except resp.ProtocolError:
        return replies, "error"
    return replies, "incomplete" if reader.has_data() else "complete"


def _drain(reader: Any, convert: Any, replies: List[Any]) -> None:
    # Every reply the reader has whole, converted, onto replies.
    while True:
        reply = reader.gets()
        if reply is False:
            return
        replies.append(convert(reply))


def run_resp_whole(stream: bytes) -> Outcome:
    reader = resp.Reader()
    replies: List[Any] = []
    try:
        reader.feed(stream)
        _drain(reader, ours, replies)
    except resp.ProtocolError:
        return replies, "error"
    return replies, "incomplete" if reader.has_data() else "complete"


_PROBE = b"+\x00probe\r\n"


def run_hiredis(chunks: List[bytes]) -> Outcome:
    """Feed the chunks to a ``hiredis.Reader``, reading after each. hiredis's
    ``has_data()`` is False inside an array whose elements have not all come,
    or after the type byte of a line (its bytes are consumed), so completeness
    is checked with a probe: a status reply fed after the stream comes back
    alone only if nothing was unfinished (else it is taken into the unfinished
    reply, always with its "+", or refused)."""
    reader = hiredis.Reader()
    replies: List[Any] = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            _drain(reader, theirs, replies)
    except hiredis.ProtocolError:
        return replies, "error"
    if reader.has_data():
        return replies, "incomplete"
    reader.feed(_PROBE)
    try:
        return replies, "complete" if reader.gets() == b"\x00probe" else "incomplete"
    except hiredis.ProtocolError:
        return replies, "incomplete"


def pieces(stream: bytes, cuts: List[int]) -> List[bytes]:
    bounds = [0] + cuts + [len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


# ---------------------------------------------------------------------------
# Valid streams


@settings(max_examples=VALID_EXAMPLES)
@given(trees=streams, data=st.data())
def test_valid_streams_agree_when_cut_at_boundaries(trees: List[Tuple[str, Any]], data: Any) -> None:
    """Generated replies, cut mostly next to CRs, LFs and reply ends: resp (fed
    in every way it may be) and hiredis both return exactly those replies."""
    stream, marks = stream_of(trees)
    cuts = draw_cuts(data, len(stream), marks)
    want = [expected(tree) for tree in trees]
    got = run_resp(data, stream, cuts)
    same = got == (want, "complete")
    assert same, brief(cuts=cuts, resp=got, want=want)
    their = run_hiredis(pieces(stream, cuts))
    same = their[1] == "complete" and all_agree(want, their[0])
    assert same, brief(cuts=cuts, hiredis=their, want=want)


# ---------------------------------------------------------------------------
# Mutated streams


class _Bad(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Short(Exception):
    def __init__(self, type_byte: int) -> None:
        super().__init__(type_byte)
        self.type_byte = type_byte


#: Type bytes hiredis parses (RESP3, even in a RESP2 reader) and resp refuses.
RESP3_TYPE_BYTES = frozenset(b"_#,(%~>=|")

#: Rules resp keeps and hiredis does not: where the first break of a mutated
#: stream is one of these, hiredis may read on (or wait) where resp refuses,
#: and only the replies before the break are compared. The first four are
#: pinned one by one in test_parser.py::test_known_divergence. Leading zeros,
#: "-0" and "+" in lengths are not here: hiredis refuses them too
#: (test_parser.py::test_malformed_inputs_fail_in_both), so they are compared.
#: One difference is no break: an integer with a "+" sign, which the RESP spec
#: allows and hiredis refuses (strict_parse reports where the first one is).
EXPECTED_DIFFERENCES = {
    "bulk not ended by CRLF",  # hiredis skips the two bytes after the value unchecked
    "RESP3 type byte",  # hiredis parses _ # , ( % ~ > = | in any reader
    "arrays nested too deep",  # resp's MAX_DEPTH (32); hiredis allows more
    "bulk over 512 MiB",  # resp's MAX_BULK_LENGTH; hiredis waits for the bytes
    # resp's MAX_LINE_LENGTH: an integer or length line of 64 KiB or more (its
    # type byte included), refused whether or not its CRLF has come; hiredis
    # reads lines of any length. (Status and error lines are bounded only as
    # bulk strings are, by MAX_STATUS_LENGTH.)
    "line over 64 KiB",
}


def _number(line: bytes, what: str) -> int:
    # resp.protocol._parse_int, restated: ASCII digits, an optional "-" (or,
    # on an integer, "+"), at most 19 digits, no leading zero (nor "-0").
    sign = line[:1] if line[:1] == b"-" or line[:1] == b"+" and what == "integer" else b""
    digits = line[len(sign):]
    if not digits.isdigit() or len(digits) > 19 or digits[:1] == b"0" and (len(digits) > 1 or sign == b"-"):
        raise _Bad(f"malformed {what}")
    return int(line)


def strict_parse(stream: bytes) -> Tuple[List[Any], str, Optional[int]]:
    """The replies of ``stream`` by resp's rules, read from the whole buffer at
    once (recursively, nothing incremental): the replies, how it ends
    ("complete", "incomplete" or the reason it breaks the rules), and how many
    replies came before the first integer with a "+" sign (None: there is none)."""
    plus_at: List[int] = []

    def line(pos: int) -> int:
        limit = MAX_STATUS_LENGTH if stream[pos:pos + 1] in (b"+", b"-") else MAX_LINE_LENGTH
        end = stream.find(b"\r\n", pos)
        if end < 0:
            if len(stream) - pos > limit:
                raise _Bad("line over 64 KiB")
            raise _Short(stream[pos] if pos < len(stream) else 42)  # 42: "*", no type byte yet
        if end - pos >= limit:
            raise _Bad("line over 64 KiB")
        return end

    def parse(pos: int, depth: int) -> Tuple[Any, int]:
        end = line(pos)
        kind = stream[pos]
        text = stream[pos + 1:end]
        if kind == 58:  # ':'
            value = _number(text, "integer")
            if not -(2**63) <= value < 2**63:
                raise _Bad("integer out of range")
            if text[:1] == b"+" and not plus_at:
                plus_at.append(len(out))
            return value, end + 2
        if kind == 36:  # '$'
            length = _number(text, "bulk length")
            if length > MAX_BULK_LENGTH:
                raise _Bad("bulk over 512 MiB")
            if length < -1:
                raise _Bad("negative bulk length")
            if length == -1:
                return None, end + 2
            stop = end + 2 + length
            if len(stream) < stop + 2:
                raise _Short(kind)
            if stream[stop:stop + 2] != b"\r\n":
                raise _Bad("bulk not ended by CRLF")
            return stream[end + 2:stop], stop + 2
        if kind == 42:  # '*'
            length = _number(text, "array length")
            if length > MAX_ARRAY_LENGTH:
                raise _Bad("array over 2**32")
            if length < -1:
                raise _Bad("negative array length")
            if length <= 0:
                return (None if length else []), end + 2
            if depth >= MAX_DEPTH:
                raise _Bad("arrays nested too deep")
            items = []
            pos = end + 2
            for _ in range(length):
                item, pos = parse(pos, depth + 1)
                items.append(item)
            return items, pos
        if kind in (43, 45):  # '+' '-'
            if b"\r" in text or b"\n" in text:
                raise _Bad("CR or LF in a line")
            return ("status" if kind == 43 else "error", text.decode("utf-8", "replace")), end + 2
        raise _Bad("RESP3 type byte" if kind in RESP3_TYPE_BYTES else "unknown type byte")

    out: List[Any] = []
    pos = 0
    try:
        while pos < len(stream):
            value, pos = parse(pos, 0)
            out.append(value)
    except _Short as short:
        # A type byte that starts no RESP2 reply is refused as soon as it has
        # come, as hiredis does, without waiting for the rest of its line.
        first_plus = plus_at[0] if plus_at else None
        if short.type_byte in RESP3_TYPE_BYTES:
            return out, "RESP3 type byte", first_plus
        if short.type_byte not in b"$*:+-":
            return out, "unknown type byte", first_plus
        return out, "incomplete", first_plus
    except _Bad as exc:
        return out, exc.reason, plus_at[0] if plus_at else None
    return out, "complete", plus_at[0] if plus_at else None


MUTATION_BYTES = st.one_of(st.integers(0, 255), st.sampled_from(b"\r\n$*:+-_0123456789"))


@settings(max_examples=MUTATED_EXAMPLES)
@given(trees=streams, data=st.data())
def test_mutated_streams_agree_where_hiredis_accepts(trees: List[Tuple[str, Any]], data: Any) -> None:
    """Valid streams with one to three bytes flipped, inserted or deleted (mostly
    near CRs, LFs and reply ends): resp raises nothing but ProtocolError; it
    returns what strict_parse does, cut anywhere; and it agrees with hiredis
    unless the stream breaks one of EXPECTED_DIFFERENCES first."""
    stream, marks = stream_of(trees)
    mutated = bytearray(stream)
    near = sorted({at + d for at in marks.near for d in range(-2, 3)})
    where = st.one_of(st.sampled_from(near), st.integers(0, len(stream)))
    how = st.sampled_from(["flip", "replace", "insert", "delete"])
    for op, at, byte in data.draw(st.lists(st.tuples(how, where, MUTATION_BYTES), min_size=1, max_size=3),
                                  label="mutations"):
        at %= len(mutated) + 1
        if op == "insert":
            mutated[at:at] = bytes([byte])
        elif at == len(mutated):
            continue
        elif op == "delete":
            del mutated[at]
        elif op == "flip":
            mutated[at] ^= 1 << (byte % 8)
        else:
            mutated[at] = byte
    bad = bytes(mutated)
    model, model_end, first_plus = strict_parse(bad)
    event(f"mutated stream: {model_end}")
    ends = {"complete": "complete", "incomplete": "incomplete"}

    # resp against its own rules, whole and cut (the cut run also proves that
    # nothing but ProtocolError escapes: any other exception fails the test).
    whole = run_resp_whole(bad)
    same = whole == (model, ends.get(model_end, "error"))
    assert same, brief(stream=bad, resp=whole, model=(model, model_end))
    # Cut near the marks of the stream before its mutation: they moved by a
    # byte or three at most.
    cuts = draw_cuts(data, len(bad), marks)
    cut = run_resp(data, bad, cuts)
    same = cut == whole
    assert same, brief(stream=bad, cuts=cuts, resp_cut=cut, resp_whole=whole)

    # resp against hiredis.
    their, their_end = run_hiredis([bad])
    if first_plus is not None:
        # hiredis refuses the "+": the replies before that one agree.
        same = len(their) == first_plus and all_agree(whole[0][:first_plus], their) and their_end == "error"
    elif model_end in EXPECTED_DIFFERENCES:
        # Both read the same bytes up to the break: the replies before it agree.
        same = len(their) >= len(whole[0]) and all_agree(whole[0], their[:len(whole[0])])
    else:
        same = all_agree(whole[0], their) and whole[1] == their_end
    assert same, brief(stream=bad, model_end=model_end, resp=whole, hiredis=(their, their_end))
