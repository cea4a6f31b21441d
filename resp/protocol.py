"""RESP2 without IO: ``Reader`` turns bytes into replies, ``encode_command`` turns
a command into bytes.

Rules this module keeps:

1. No IO. Bytes come in through ``Reader.feed``; nothing here imports ``socket``,
   ``selectors``, ``time`` or ``threading``.
2. Everything the peer claims is bounded before it is believed (see the limits
   below), and memory grows only with the bytes actually fed.
3. No recursion: nested arrays are kept on an explicit stack that survives
   between calls, so a reply split anywhere is parsed once, in linear time.
4. Any malformed input raises ``ProtocolError``. Any other exception from the
   parser is a bug. After a ``ProtocolError`` the reader is unusable, as is the
   connection it served.
"""

from typing import Any, List, Tuple, Union

from .errors import ProtocolError, error_from_reply

__all__ = ["Reader", "encode_command", "Reply", "CommandArg"]

#: Redis refuses bulk strings over 512 MiB (``proto-max-bulk-len``); so do we.
MAX_BULK_LENGTH = 512 * 1024 * 1024
#: An array may claim at most 2**32 elements (the server's own limit); elements
#: are only ever stored as they arrive.
MAX_ARRAY_LENGTH = 2**32
#: Real replies nest three or four deep (CLUSTER SHARDS); hiredis stops at 9.
MAX_DEPTH = 32
#: Status, error and length lines are short; a line with no CRLF after this many
#: bytes is not RESP2.
MAX_LINE_LENGTH = 64 * 1024

Reply = Any
CommandArg = Union[bytes, bytearray, memoryview, str, int, float]

_CRLF = b"\r\n"


def _parse_int(line: Union[bytes, bytearray], what: str) -> int:
    # int() would accept '_', spaces, '+', leading zeros and non-ASCII digits;
    # RESP2 (and hiredis) does not. bytes.isdigit() is ASCII-only.
    digits = line[1:] if line[:1] == b"-" else line
    if not digits.isdigit() or len(digits) > 19 or (digits[0] == 48 and line != b"0"):
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

    __slots__ = ("_buffer", "_pos", "_stack", "_need", "_pieces", "_pieces_size")

    def __init__(self) -> None:
        self._buffer: Union[bytes, bytearray] = b""
        self._pos = 0
        # One [items, remaining] pair per array still being filled.
        self._stack: List[List[Any]] = []
        # Bytes from _pos that the bulk string being read needs (0: unknown).
        self._need = 0
        # While a long bulk string arrives: what was fed since, joined once
        # it is whole (growing one buffer would copy it again and again).
        self._pieces: List[Union[bytes, bytearray]] = []
        self._pieces_size = 0

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
        """Append bytes received from the server."""
        if self._need > _JOIN_LATER and data:
            self._add_piece(data)
            return
        if self._pos >= len(self._buffer):
            self._buffer = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif data:
            buffer = self._buffer
            if type(buffer) is bytes and len(buffer) - self._pos <= len(data):
                # A short leftover (a reply cut by the chunk's end): one copy of
                # it and the new bytes, no more than twice what was fed, and
                # the buffer stays bytes, which slice into replies directly.
                self._buffer = buffer[self._pos :] + data
                self._pos = 0
                return
            if isinstance(buffer, bytearray):
                if self._pos:
                    del buffer[: self._pos]  # O(1) for a bytearray in CPython
            else:
                buffer = bytearray(memoryview(buffer)[self._pos:])
            buffer += data
            self._buffer = buffer
            self._pos = 0

    def _add_piece(self, data: Union[bytes, bytearray, memoryview]) -> None:
        pieces = self._pieces
        if len(data) >= _SMALL_PIECE:
            pieces.append(data if type(data) is bytes else bytes(data))
        elif pieces and type(pieces[-1]) is bytearray and len(pieces[-1]) < _JOIN_LATER:
            pieces[-1] += data  # trickled bytes: no object per byte
        else:
            pieces.append(bytearray(data))
        self._pieces_size += len(data)
        if len(self._buffer) - self._pos + self._pieces_size >= self._need:
            pieces.insert(0, self._buffer[self._pos :])
            self._buffer = b"".join(pieces)
            self._pos = 0
            self._pieces = []
            self._pieces_size = 0

    def gets(self) -> Reply:
        """Return the next complete reply, or ``False`` while none is complete.

        :raises ProtocolError: the bytes fed so far are not RESP2.
        """
        buffer = self._buffer
        pos = self._pos
        size = len(buffer)
        if self._need:
            # A bulk string is known to need this many bytes from _pos: fed
            # one byte at a time, it is not parsed again for every byte.
            if size - pos < self._need:
                return False
            self._need = 0
        stack = self._stack
        while True:
            end = buffer.find(_CRLF, pos)
            if end < 0:
                if size - pos > MAX_LINE_LENGTH:
                    raise ProtocolError("line too long")
                return False
            kind = buffer[pos]
            if kind == 36:  # '$' bulk string
                digits = buffer[pos + 1 : end]
                # The common case inline (no sign, no leading zero); _parse_int
                # judges everything else.
                if digits.isdigit() and digits[0] != 48 and len(digits) < 10:
                    length = int(digits)
                elif digits == b"-1":  # a null
                    length = -1
                else:
                    length = _parse_int(digits, "bulk length")
                if length < 0:
                    if length != -1:
                        raise ProtocolError(f"negative bulk length {length}")
                    value: Reply = None
                    pos = end + 2
                else:
                    if length > MAX_BULK_LENGTH:
                        raise ProtocolError(f"bulk length {length} over the 512 MiB limit")
                    start = end + 2
                    stop = start + length
                    if stop + 2 > size:
                        self._need = stop + 2 - pos
                        return False
                    if buffer[stop : stop + 2] != _CRLF:
                        raise ProtocolError("bulk string not terminated by CRLF")
                    value = buffer[start:stop]
                    if type(value) is not bytes:
                        value = bytes(value)
                    pos = stop + 2
            elif kind == 42:  # '*' array
                digits = buffer[pos + 1 : end]
                if digits.isdigit() and digits[0] != 48 and len(digits) < 10:
                    length = int(digits)
                else:
                    length = _parse_int(digits, "array length")
                pos = end + 2
                if length > 0:
                    if length > MAX_ARRAY_LENGTH:
                        raise ProtocolError(f"array length {length} over the 2**32 limit")
                    if len(stack) >= MAX_DEPTH:
                        raise ProtocolError(f"arrays nested deeper than {MAX_DEPTH}")
                    items, pos = _bulk_items(buffer, pos, length)
                    if len(items) < length:
                        # Not all plain bulk strings, or not all here yet: the
                        # rest goes through the general loop.
                        stack.append([items, length - len(items)])
                        self._pos = pos
                        continue
                    value = items
                elif length == 0:
                    value = []
                elif length == -1:
                    value = None
                else:
                    raise ProtocolError(f"negative array length {length}")
            elif kind == 58:  # ':' integer
                digits = buffer[pos + 1 : end]
                if digits.isdigit() and digits[0] != 48 and len(digits) < 19:
                    value = int(digits)
                else:
                    value = _parse_int(digits, "integer")
                    if not -(2**63) <= value < 2**63:
                        raise ProtocolError("integer out of the signed 64-bit range")
                pos = end + 2
            elif kind == 43 or kind == 45:  # '+' status, '-' error
                line = buffer[pos + 1 : end]
                if line == b"OK" and kind == 43:  # the usual status, cheaply
                    value = "OK"
                else:
                    if b"\r" in line or b"\n" in line:
                        raise ProtocolError("CR or LF inside a status or error line")
                    text = line.decode("utf-8", "replace")
                    value = text if kind == 43 else error_from_reply(text)
                pos = end + 2
            else:
                raise ProtocolError(f"unknown reply type byte {bytes([kind])!r}")

            while stack:
                top = stack[-1]
                top[0].append(value)
                top[1] -= 1
                if top[1]:
                    break
                value = stack.pop()[0]
            else:
                self._pos = pos
                return value
            self._pos = pos

    def has_data(self) -> bool:
        """Whether bytes of an unfinished reply are buffered."""
        return self._pos < len(self._buffer) or bool(self._stack) or bool(self._pieces)


def _bulk_items(buffer: Union[bytes, bytearray], pos: int, count: int) -> Tuple[List[Any], int]:
    # The arrays a queue reads (BLPOP, LRANGE, LPOP with a count) hold bulk
    # strings only: take as many of the ``count`` as are here and well formed
    # in one tight loop, and return them with the position after the last.
    # Anything else (a null, another type, a malformed or partial one) stops
    # the loop and is left to the general parser, which reports errors.
    items: List[Any] = []
    append = items.append
    size = len(buffer)
    find = buffer.find
    as_bytes = type(buffer) is bytes
    for _ in range(count):
        if pos >= size or buffer[pos] != 36:
            break
        end = find(_CRLF, pos)
        if end < 0:
            break
        digits = buffer[pos + 1 : end]
        if not digits.isdigit() or digits[0] == 48 or len(digits) > 9:
            break  # "$0" (an empty string) included: _parse_int judges it
        start = end + 2
        stop = start + int(digits)
        if stop + 2 > size or buffer[stop : stop + 2] != _CRLF:
            break
        append(buffer[start:stop] if as_bytes else bytes(buffer[start:stop]))
        pos = stop + 2
    return items, pos


def _encode_arg(arg: CommandArg) -> bytes:
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, (bytes, bytearray, memoryview)) and not isinstance(arg, bool):
        return bytes(arg)
    if isinstance(arg, int) and not isinstance(arg, bool):
        return b"%d" % arg  # not str(): an IntEnum on 3.8-3.10 would give its name
    if isinstance(arg, float):
        return float.__repr__(arg).encode("ascii")  # a subclass's own repr is not the value
    raise TypeError(
        f"command arguments must be bytes, str, int or float, not {type(arg).__name__}"
    )


#: Values at least this long are sent as they are instead of being copied into
#: the joined command.
LARGE_VALUE = 64 * 1024


#: A bulk string longer than this is gathered in pieces, joined once whole;
#: chunks shorter than _SMALL_PIECE are merged so that a trickle of bytes does
#: not cost an object each.
_JOIN_LATER = 64 * 1024
_SMALL_PIECE = 16 * 1024

#: Commands with more arguments than this (``put(*batch)``) take _encode_many.
_MANY = 16
_BULK_HEADERS = [b"$%d\r\n" % size for size in range(1024)]


def _encode_many(args: Tuple[CommandArg, ...]) -> Union[bytes, None]:
    # A long command of short arguments in one piece, with the per-argument
    # work done by C loops (list slices, map, join). None when an argument is
    # 1 KiB or longer: encode_parts then keeps the large ones uncopied.
    values = [arg if type(arg) is bytes else _encode_arg(arg) for arg in args]
    sizes = list(map(len, values))
    if max(sizes) >= len(_BULK_HEADERS):
        return None
    count = len(values)
    pieces: List[bytes] = [_CRLF] * (3 * count)
    pieces[0::3] = map(_BULK_HEADERS.__getitem__, sizes)
    pieces[1::3] = values
    return b"*%d\r\n" % count + b"".join(pieces)


def encode_parts(args: Tuple[CommandArg, ...]) -> List[Union[bytes, memoryview]]:
    """Encode one command as a list of byte strings to send in order.

    Short arguments are joined into one piece; long bytes-like values are kept
    as their own pieces so that they are never copied.

    :raises TypeError: an argument is not bytes-like, ``str``, ``int`` or ``float``
        (``bool`` and ``None`` included), before anything is encoded.
    :raises ValueError: there is no argument at all.
    """
    if not args:
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
        elif isinstance(arg, (bytearray, memoryview)) and len(arg) >= LARGE_VALUE and (
            not isinstance(arg, memoryview) or arg.c_contiguous  # only a contiguous view casts to bytes
        ):
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


def encode_command(*args: CommandArg) -> bytes:
    """Return the RESP2 bytes of one command (an array of bulk strings).

    >>> encode_command("RPUSH", "q", b"x", 7)
    b'*4\\r\\n$5\\r\\nRPUSH\\r\\n$1\\r\\nq\\r\\n$1\\r\\nx\\r\\n$1\\r\\n7\\r\\n'

    :raises TypeError: an argument is not bytes-like, ``str``, ``int`` or ``float``.
    """
    return b"".join(encode_parts(args))
