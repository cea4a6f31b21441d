"""RESP2 without IO: ``Reader`` turns bytes into replies, ``encode_command`` turns
a command into bytes.

Rules this module keeps:

1. No IO. Bytes come in through ``Reader.feed``; nothing here imports ``socket``,
   ``selectors``, ``time`` or ``threading``.
2. Everything the peer claims is bounded before it is believed (see the limits
   below), and memory grows only with the bytes actually fed.
3. No recursion: nested arrays are kept on an explicit stack that survives
   between calls, so a reply split anywhere is parsed once, in linear time;
   replies left unread when more bytes are fed are not copied again.
4. Any malformed input raises ``ProtocolError``. Any other exception from the
   parser is a bug. After a ``ProtocolError`` the reader is unusable, as is the
   connection it served.
"""

from .errors import ProtocolError, error_from_reply

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import resp``
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple, Union

    Reply = Any
    CommandArg = Union[bytes, bytearray, memoryview, str, int, float]

__all__ = ["Reader", "encode_command"]

#: Redis refuses bulk strings over 512 MiB (``proto-max-bulk-len``); so do we.
MAX_BULK_LENGTH = 512 * 1024 * 1024
#: An array may claim at most 2**32 elements (the server's own limit); elements
#: are only ever stored as they arrive.
MAX_ARRAY_LENGTH = 2**32
#: Real replies nest three or four deep (CLUSTER SHARDS); hiredis stops at 9.
MAX_DEPTH = 32
#: Length and integer lines are short; one with no CRLF after this many bytes
#: is not RESP2.
MAX_LINE_LENGTH = 64 * 1024
#: Status and error lines have no length limit in RESP2: a Lua script's
#: ``redis.status_reply`` or ``redis.error_reply`` text comes back whole. They
#: are bounded as bulk strings are.
MAX_STATUS_LENGTH = MAX_BULK_LENGTH

_CRLF = b"\r\n"
_TYPE_BYTES = b"+-:$*"  # status, error, integer, bulk string, array


def _parse_int(line: "Union[bytes, bytearray]", what: str) -> int:
    # int() would accept '_', spaces, leading zeros and non-ASCII digits;
    # RESP2 does not. bytes.isdigit() is ASCII-only. The spec allows a '+'
    # on an integer reply (hiredis refuses it), on no length; "-0" is refused.
    sign = line[:1]
    digits = line[1:] if sign == b"-" or sign == b"+" and what == "integer" else line
    if not digits.isdigit() or len(digits) > 19 or (digits[0] == 48 and (len(digits) > 1 or sign == b"-")):
        raise ProtocolError(f"malformed {what}: {bytes(line[:40])!r}")
    return int(line)


class Reader:
    """An incremental RESP2 parser with the interface of ``hiredis.Reader``.

    >>> reader = Reader()
    >>> reader.feed(b"*2\\r\\n$5\\r\\nhello\\r\\n:7\\r\\n")
    >>> reader.gets()
    [b'hello', 7]
    >>> reader.gets()
    False

    Bulk strings become ``bytes``, status replies ``str``, integers ``int``,
    arrays ``list``, nulls ``None``; an error reply is *returned* as a
    ``ResponseError`` instance, so one inside an array keeps its place.
    """

    __slots__ = ("_buffer", "_pos", "_stack", "_pieces", "_tail", "_pieces_size", "_need", "_line_wait", "_long_bulk")

    def __init__(self) -> None:
        # What is being parsed (always bytes) and where the next reply starts.
        self._buffer = b""
        self._pos = 0
        # One [items, remaining] pair per array still being filled.
        self._stack: List[List[Any]] = []
        # Bytes fed while a reply is unfinished, joined to the rest of
        # _buffer once at least _need of them are here (or, with _line_wait,
        # once a CRLF may have arrived): a reply fed in many pieces is copied
        # once, not once per piece.
        self._pieces: List[Union[bytes, bytearray]] = []
        self._tail: "Optional[bytearray]" = None  # the last piece, when small pieces go into it
        self._pieces_size = 0
        self._need = 0
        self._line_wait = False
        # (start, stop) in _buffer of a long bulk string's value being waited for.
        self._long_bulk: "Optional[Tuple[int, int]]" = None

    def feed(self, data: "Union[bytes, bytearray, memoryview]") -> None:
        """Append bytes received from the server.

        :raises TypeError: ``data`` is not bytes-like.
        """
        if type(data) is not bytes:
            # Not bytes(data): it takes an int n for n NUL bytes, and a list of ints.
            data = memoryview(data).tobytes()
        tail = self._tail
        if tail is not None and len(data) < _SMALL_PIECE:
            # A trickle of bytes while a reply is unfinished: into one
            # bytearray, not an object each.
            if self._line_wait and 10 in data:  # not b"\n" in: that tries int(b"\n") first
                self._note_line_end(data, tail)
            tail += data
            self._pieces_size += len(data)
            return
        pieces = self._pieces
        if not pieces and self._pos >= len(self._buffer):
            self._buffer = data
            self._pos = 0
            if self._need:  # a line waited for at the very end of the last chunk
                self._need = 0
                self._line_wait = False
            return
        if not data:
            return
        if self._line_wait and 10 in data:
            self._note_line_end(data, pieces[-1] if pieces else self._buffer)
        if len(data) >= _SMALL_PIECE:
            pieces.append(data)
            self._tail = None
        else:
            self._tail = bytearray(data)
            pieces.append(self._tail)
        self._pieces_size += len(data)

    def bulk_missing(self) -> int:
        """How many bytes are still to come of a long bulk string (16 KiB or
        more) that the reply being read waits for, its CRLF included; 0 when
        it waits for no such string. A caller may receive exactly that many
        into a buffer of its own and pass them to ``feed_rest``."""
        missing = self._need - self._pieces_size
        return missing if self._long_bulk and missing > 0 else 0

    def feed_rest(self, data: "Union[bytearray, memoryview]") -> None:
        """``feed`` exactly the ``bulk_missing()`` bytes without copying them:
        the next ``gets()`` takes them, and ``data`` must not change before
        it; after it the reader keeps nothing of them. Any other ``data`` is
        copied, as by ``feed``."""
        if (
            not self._long_bulk
            or len(data) != self._need - self._pieces_size
            # len() counts a view's items, and join() takes only contiguous
            # buffers: anything but flat bytes is copied by feed.
            or not (type(data) is bytearray or type(data) is memoryview
                    and data.ndim == 1 and data.itemsize == 1 and data.c_contiguous)
        ):
            self.feed(data)
            return
        self._pieces.append(data)  # type: ignore[arg-type]  # read only by _take_long_bulk
        self._tail = None
        self._pieces_size += len(data)

    def _note_line_end(self, data: bytes, before: "Union[bytes, bytearray]") -> None:
        # While waiting for the end of a line: does it end in data, or does
        # data's first byte end it (before ends with the CR)?
        if data.find(_CRLF) >= 0 or (data[:1] == b"\n" and before[-1:] == b"\r"):
            self._need = 0

    def gets(self) -> "Reply":
        """Return the next complete reply, or ``False`` while none is complete.

        :raises ProtocolError: the bytes fed so far are not RESP2.
        """
        if self._pieces:
            if self._pieces_size < self._need:
                return False  # the unfinished reply still lacks bytes
            # Otherwise the last gets() returned a whole reply, and what
            # follows it in _buffer is read first, joined to the pieces only
            # where it runs out (_wait_for_line, _wait_for_bulk): joined now,
            # replies left unread would be copied again at every feed().
            if self._need or self._line_wait or self._pos >= len(self._buffer):
                finished = self._join_pieces()
                if finished is not _UNFINISHED:
                    return finished
        buffer = self._buffer
        pos = self._pos
        value: Reply
        while True:
            end = buffer.find(b"\r\n", pos)
            if end < 0:
                return self._wait_for_line(pos)
            kind = buffer[pos]
            if kind == 58:  # ':' integer
                try:
                    least = _LEAST[end - pos]  # IndexError past 18 digits: int() never sees a long line
                    value = int(buffer[pos + 1 : end])
                except (IndexError, ValueError):
                    least, value = 0, -1
                if value < least:
                    value = _parse_int(buffer[pos + 1 : end], "integer")
                    if not -(2**63) <= value < 2**63:
                        raise ProtocolError("integer out of the signed 64-bit range")
                pos = end + 2
            elif kind == 36:  # '$' bulk string
                length = _BULK_LENGTHS.get(buffer[pos:end])  # the usual ones, checked by the table
                if length is None:
                    length = _parse_int(buffer[pos + 1 : end], "bulk length")
                    if length > MAX_BULK_LENGTH:
                        raise ProtocolError(f"bulk length {length} over the 512 MiB limit")
                    if length < -1:
                        raise ProtocolError(f"negative bulk length {length}")
                if length >= 0:
                    start = end + 2
                    stop = start + length
                    try:
                        if buffer[stop] != 13 or buffer[stop + 1] != 10:  # CR LF
                            return self._wait_for_bulk(pos, start, stop)
                    except IndexError:
                        return self._wait_for_bulk(pos, start, stop)
                    value = buffer[start:stop]
                    pos = stop + 2
                else:
                    value = None
                    pos = end + 2
            elif kind == 42:  # '*' array
                length = _ARRAY_LENGTHS.get(buffer[pos:end])
                if length is None:
                    length = _parse_int(buffer[pos + 1 : end], "array length")
                    if length > MAX_ARRAY_LENGTH:
                        raise ProtocolError(f"array length {length} over the 2**32 limit")
                    if length < -1:
                        raise ProtocolError(f"negative array length {length}")
                pos = end + 2
                if length > 0:
                    stack = self._stack
                    if stack and len(stack) >= MAX_DEPTH:
                        raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
                    items: List[Any] = []
                    pos = _take_short_bulks(buffer, pos, items, length)
                    if len(items) < length:
                        stack.append([items, length - len(items)])
                        self._pos = pos
                        continue
                    value = items
                else:
                    value = None if length else []
            elif kind == 43 or kind == 45:  # '+' status, '-' error
                line = buffer[pos + 1 : end]
                if line == b"OK" and kind == 43:  # the usual status, cheaply
                    value = "OK"
                else:
                    if end - pos >= MAX_STATUS_LENGTH:  # refused whole as in pieces (_wait_for_line)
                        raise ProtocolError("line too long")
                    if 13 in line or 10 in line:  # CR, LF
                        raise ProtocolError("CR or LF inside a status or error line")
                    text = line.decode("utf-8", "replace")
                    value = text if kind == 43 else error_from_reply(text)
                pos = end + 2
            else:
                raise ProtocolError(f"unknown reply type byte {bytes([kind])!r}")

            self._pos = pos
            if not self._stack:
                return value
            value = self._settle(value)
            if value is not _UNFINISHED:
                return value

    def _join_pieces(self) -> "Reply":
        # The bytes fed since _buffer joined to what is unread of it (or the
        # long bulk string waited for taken out of them): the whole reply
        # this completes, or _UNFINISHED.
        self._pieces_size = 0
        self._need = 0
        self._line_wait = False
        if self._long_bulk:
            return self._settle(self._take_long_bulk())
        self._pieces.insert(0, self._buffer[self._pos :])
        self._buffer = b"".join(self._pieces)
        self._pos = 0
        self._pieces = []
        self._tail = None
        if self._stack:
            # An array cut short by the end of the bytes fed before: its
            # short bulk strings in the tight loop again.
            top = self._stack[-1]
            taken = len(top[0])
            self._pos = _take_short_bulks(self._buffer, 0, top[0], top[1])
            top[1] -= len(top[0]) - taken
            if not top[1]:
                return self._settle(self._stack.pop()[0])
        return _UNFINISHED

    def _read_on(self) -> "Reply":
        # _buffer ran out where pieces fed before it was read take over.
        finished = self._join_pieces()
        return self.gets() if finished is _UNFINISHED else finished

    def _wait_for_line(self, pos: int) -> "Reply":
        # No CRLF after pos: wait for one, or for the line to outgrow the bound.
        self._pos = pos
        if self._pieces:
            return self._read_on()
        waiting = len(self._buffer) - pos
        if not waiting:
            return False
        kind = self._buffer[pos]
        if kind not in _TYPE_BYTES:  # no CRLF can make it RESP2
            raise ProtocolError(f"unknown reply type byte {self._buffer[pos : pos + 1]!r}")
        limit = MAX_STATUS_LENGTH if kind == 43 or kind == 45 else MAX_LINE_LENGTH  # '+' '-'
        if waiting > limit:
            raise ProtocolError("line too long")
        self._need = limit + 1 - waiting
        self._line_wait = True
        return False

    def _wait_for_bulk(self, pos: int, start: int, stop: int) -> "Reply":
        # The bulk string whose length line is at pos holds buffer[start:stop]
        # and a CRLF, but not all of it is here yet.
        buffer = self._buffer
        if stop + 2 <= len(buffer):
            raise ProtocolError("bulk string not terminated by CRLF")
        self._pos = pos
        if self._pieces:
            return self._read_on()
        self._need = stop + 2 - len(buffer)
        self._line_wait = False
        if stop - start >= _SMALL_PIECE:
            self._long_bulk = (start, stop)
        return False

    def _take_long_bulk(self) -> bytes:
        # The value of the long bulk string waited for, copied once from where
        # its bytes lie (the end of _buffer and the pieces fed since); what
        # follows it becomes the new _buffer.
        buffer = self._buffer
        start, stop = self._long_bulk  # type: ignore[misc]
        pieces = self._pieces
        missing = stop - len(buffer)  # bytes of the value in the pieces
        if missing <= 0:
            # The whole value came before, its CR too maybe: only the rest of
            # the terminator was waited for.
            value = buffer[start:stop]
            rest = buffer[stop:] + b"".join(pieces)
        else:
            parts: "List[Union[bytes, bytearray, memoryview]]" = [memoryview(buffer)[start:]]
            for index, piece in enumerate(pieces):
                if len(piece) < missing:
                    parts.append(piece)
                    missing -= len(piece)
                    continue
                parts.append(memoryview(piece)[:missing])
                rest = bytes(piece[missing:])  # the piece may be a view (feed_rest)
                if index + 1 < len(pieces):
                    rest += b"".join(pieces[index + 1 :])
                break
            value = b"".join(parts)
        if rest[:2] != b"\r\n":
            raise ProtocolError("bulk string not terminated by CRLF")
        self._buffer = rest
        self._pos = 2
        self._pieces = []
        self._tail = None
        self._long_bulk = None
        return value

    def _settle(self, value: "Reply") -> "Reply":
        # Put a finished value into the arrays being filled: return the whole
        # reply it completes, or _UNFINISHED.
        stack = self._stack
        while stack:
            top = stack[-1]
            top[0].append(value)
            top[1] -= 1
            if top[1]:
                return _UNFINISHED
            value = stack.pop()[0]
        return value

    def has_data(self) -> bool:
        """Whether bytes of an unfinished reply are buffered."""
        # Connection.is_readable repeats this test inline: keep them alike.
        return self._pos < len(self._buffer) or bool(self._stack) or bool(self._pieces)


#: The length lines of nulls, of bulk strings shorter than _SHORT_BULK and of
#: short arrays, looked up instead of parsed.
_SHORT_BULK = 1024
_BULK_LENGTHS = {b"$%d" % size: size for size in range(-1, _SHORT_BULK)}
_ARRAY_LENGTHS = {b"*%d" % size: size for size in range(-1, 64)}
#: _LEAST[n]: the least number of n - 1 digits (0 for one), for an integer
#: line ':…' of n bytes before its CRLF. int() takes what RESP2 does not
#: (spaces, '_', leading zeros): each leaves fewer digits than bytes, so a
#: value below _LEAST[n], and the line is then read by _parse_int (as is one
#: with a '+' sign, which RESP2 allows). Checked after int(), cheaper than the
#: bytes before it.
_LEAST = (0, 0, 0) + tuple(10 ** (size - 2) for size in range(3, 20))


def _take_short_bulks(buffer: bytes, pos: int, items: "List[Any]", count: int) -> int:
    # The elements of the arrays a queue reads (BLPOP, LRANGE, LPOP with a
    # count) are short bulk strings: append up to count of them to items, in
    # a tight loop, and return the position after the last one. Anything else
    # (a null, an empty or long string, another type, a malformed or partial
    # one) is left to the general loop of Reader.gets, which reports errors.
    for _ in range(count):
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            break
        size = _BULK_LENGTHS.get(buffer[pos:end])
        if not size:
            break
        start = end + 2
        stop = start + size
        try:
            if buffer[stop] != 13 or buffer[stop + 1] != 10:
                break
        except IndexError:
            break
        items.append(buffer[start:stop])
        pos = stop + 2
    return pos


def _encode_arg(arg: "CommandArg") -> bytes:
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, (bytes, bytearray)):
        return bytes(arg)
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % arg  # not str(): an IntEnum on 3.8-3.10 would give its name
    if isinstance(arg, float):
        return float.__repr__(arg).encode("ascii")  # a subclass's own repr is not the value
    try:
        view = memoryview(arg)  # type: ignore[arg-type]  # any other bytes-like object: array.array, mmap, …
    except TypeError:
        raise TypeError(
            f"command arguments must be bytes-like, str, int or float, not {type(arg).__name__}"
        ) from None
    if not view.ndim:
        # A number with a buffer (numpy.int64, ctypes.c_int): its buffer
        # holds machine bytes, not the digits Redis would read.
        raise TypeError(f"command arguments must be bytes-like, str, int or float, not {type(arg).__name__} "
                        "(a number kept in machine bytes: convert it with int() or float())")
    return view.tobytes()


#: Values at least this long are sent as they are instead of being copied into
#: the joined command.
LARGE_VALUE = 64 * 1024


_UNFINISHED = object()  # what _settle returns while an array still lacks elements

#: Fed chunks shorter than this, while a reply is unfinished, are gathered in
#: one bytearray so that a trickle of bytes does not cost an object each.
_SMALL_PIECE = 16 * 1024


#: Commands with more arguments than this (``put(*batch)``) take _encode_many.
_MANY = 16
_BULK_HEADERS = [b"$%d\r\n" % size for size in range(_SHORT_BULK)]
_BYTES_ONLY = frozenset({bytes})


def _encode_many(args: "Tuple[CommandArg, ...]") -> "Union[bytes, None]":
    # A long command of short arguments in one piece, with the per-argument
    # work done by C loops (list slices, map, join). None when an argument is
    # 1 KiB or longer: encode_parts then keeps the large ones uncopied.
    values: "List[Any]" = list(args)
    if not _BYTES_ONLY.issuperset(map(type, values[2:])):  # RPUSH key value...: the values
        values[2:] = [arg if type(arg) is bytes else _encode_arg(arg) for arg in values[2:]]
    values[:2] = [arg if type(arg) is bytes else _encode_arg(arg) for arg in values[:2]]
    sizes = list(map(len, values))
    if max(sizes) >= len(_BULK_HEADERS):
        return None
    count = len(values)
    pieces: List[bytes] = [_CRLF] * (3 * count)
    pieces[0::3] = map(_BULK_HEADERS.__getitem__, sizes)
    pieces[1::3] = values
    return b"*%d\r\n" % count + b"".join(pieces)


#: The encoded name and first argument of recent commands (a queue sends the
#: same few again and again), by their str: encoding them costs more than the
#: lookup. Bounded: at most _MAX_HEADS of them, each at most _MAX_HEAD bytes.
_HEADS: "Dict[Tuple[str, str], bytes]" = {}
_MAX_HEADS = 256
_MAX_HEAD = 512


def _head(command: str, key: str) -> bytes:
    # The bulk strings of a command's name and first argument, remembered in
    # _HEADS (emptied when full, which only costs their encoding again).
    command_bytes = command.encode()  # UTF-8 (without an argument to parse)
    key_bytes = key.encode()
    head = b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(command_bytes), command_bytes, len(key_bytes), key_bytes)
    if len(head) <= _MAX_HEAD:
        if len(_HEADS) >= _MAX_HEADS:
            _HEADS.clear()
        _HEADS[(command, key)] = head
    return head


#: Whole commands of a name, a key and an int (``BLPOP key timeout``), by
#: their arguments; bounded as _HEADS is.
_WHOLES: "Dict[Tuple[object, ...], bytes]" = {}


def _whole(command: str, key: str, number: int) -> bytes:
    # The bytes of such a command, remembered in _WHOLES.
    digits = b"%d" % number
    head = _HEADS.get((command, key)) or _head(command, key)
    whole = b"*3\r\n%b$%d\r\n%b\r\n" % (head, len(digits), digits)
    if len(whole) <= _MAX_HEAD:
        if len(_WHOLES) >= _MAX_HEADS:
            _WHOLES.clear()
        _WHOLES[(command, key, number)] = whole
    return whole


def encode_parts(args: "Tuple[CommandArg, ...]") -> "List[Union[bytes, memoryview]]":
    """Encode one command as a list of byte strings to send in order.

    Short arguments are joined into one piece; long bytes-like values are kept
    as their own pieces so that they are never copied.

    :raises TypeError: an argument is not bytes-like, ``str``, ``int`` or ``float``
        (``bool`` and ``None`` included), before anything is encoded.
    :raises ValueError: there is no argument at all.
    """
    count = len(args)
    if count == 3:
        # RPUSH key value, BLPOP key timeout: no loop, no format.
        first, second, third = args
        if type(third) is int:
            if type(first) is str and type(second) is str:  # BLPOP key timeout
                return [_WHOLES.get(args) or _whole(first, second, third)]
            third = b"%d" % third
        elif type(third) is str:
            third = third.encode()
        if type(first) is str and type(second) is str and type(third) is bytes and len(third) < LARGE_VALUE:
            head = _HEADS.get((first, second)) or _head(first, second)
            size = len(third)
            if size < _SHORT_BULK:
                return [b"".join((b"*3\r\n", head, _BULK_HEADERS[size], third, b"\r\n"))]
            return [b"*3\r\n%b$%d\r\n%b\r\n" % (head, size, third)]
    elif count == 2:
        first, second = args
        if type(first) is str and type(second) is str:  # LPOP key, LLEN key
            return [b"*2\r\n" + (_HEADS.get((first, second)) or _head(first, second))]
    elif not args:
        raise ValueError("a command needs at least its name")
    if len(args) > _MANY:
        many = _encode_many(args)
        if many is not None:
            return [many]
    pieces: List[bytes] = [b"*%d\r\n" % len(args)]
    parts: List[Union[bytes, memoryview]] = []
    for arg in args:
        if type(arg) is bytes:
            value: Union[bytes, memoryview] = arg
        elif type(arg) is str:  # keys and command names: skip _encode_arg's checks
            value = arg.encode("utf-8")
        elif type(arg) is int:  # counts and timeouts (bool is not int's type)
            value = b"%d" % arg
        elif isinstance(arg, (bytearray, memoryview)) and (
            # Only a contiguous view casts to bytes; a 0-d one is a number's (see _encode_arg).
            not isinstance(arg, memoryview) or arg.ndim and arg.c_contiguous
        ) and len(arg) >= LARGE_VALUE:
            value = memoryview(arg).cast("B")
        else:
            value = _encode_arg(arg)
        size = len(value)
        if size >= LARGE_VALUE:
            pieces.append(b"$%d\r\n" % size)
            parts.append(b"".join(pieces))
            parts.append(value)
            pieces = [_CRLF]
        else:
            pieces.append(b"$%d\r\n%s\r\n" % (size, value))
    parts.append(b"".join(pieces))
    return parts


def encode_command(*args: "CommandArg") -> bytes:
    """Return the RESP2 bytes of one command (an array of bulk strings).

    >>> encode_command("RPUSH", "q", b"x", 7)
    b'*4\\r\\n$5\\r\\nRPUSH\\r\\n$1\\r\\nq\\r\\n$1\\r\\nx\\r\\n$1\\r\\n7\\r\\n'

    :raises TypeError: an argument is not bytes-like, ``str``, ``int`` or ``float``.
    :raises ValueError: there is no argument at all.
    """
    return b"".join(encode_parts(args))
