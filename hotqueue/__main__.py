"""The command line: ``python -m hotqueue SUBCOMMAND …`` (``--help`` on each).

Rules it keeps:

- No queue logic of its own: every subcommand calls ``HotQueue``.
- Each subcommand is one ``add_*`` function (its arguments) and one ``cmd_*``
  function (its work, returning the exit status), registered in ``COMMANDS``;
  add a subcommand by adding a row.
- Exit status: 0 done; 1 ``get`` found the queue empty or timed out; 2 bad
  usage or input; 3 Redis could not be reached or refused the command; 4 a
  message could not be decoded or shown; 70 an unexpected error (a bug, or the demo
  saw what the tutorial does not promise); 74 the
  output could not be written (a full disk); 130 interrupted (Ctrl-C); 141
  the output was closed (``| head``); 143 terminated (SIGTERM). Every error
  is one line on stderr, never a traceback.
- ``get`` and ``consume`` hold Ctrl-C and SIGTERM until the message they may
  have taken is printed (at most as long as the client waits for a pop's
  reply, see ``_pop_grace``): stopped between sending a pop and printing its
  reply, they would lose that message. ``put`` holds them until its reply
  (at most ``STOP_GRACE`` seconds), the demo until its next line. One that
  was ignored when the command started stays ignored.

Messages on the command line are strings. With ``--serializer pickle`` (the
default, like the library) a message is stored as that ``str``; with ``json``
the argument is JSON text (``'{"n": 1}'``, ``'"text"'``); with ``raw`` it is
stored as its bytes. Output: with pickle a ``str`` message is printed as it is
and anything else as its ``repr``; with json as JSON text on one line; with
raw as the stored bytes. ``consume`` prints one message a line: a message that
would span lines (a line feed or carriage return in what would be printed) is
printed as the ``repr`` of that text or those bytes.
"""

import signal
import sys

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    # Ctrl-C before main() sets its handlers (while the modules below load):
    # exit 130 quietly, as later, not with a KeyboardInterrupt traceback.
    # (Ignored when inherited so, as by a job started with '&' in a script.)
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(130))

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import pickle
import shutil
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, NoReturn, Optional, Sequence
from urllib.parse import parse_qsl

import resp

from .queue import HotQueue

DEFAULT_URL = "redis://localhost:6379/0"
#: Seconds to connect (TLS handshake and AUTH included) unless the URL says.
CONNECT_TIMEOUT = 10.0

SERIALIZERS: Dict[str, Any] = {"pickle": pickle, "json": json, "raw": None}

EXIT_OK, EXIT_EMPTY, EXIT_USAGE, EXIT_REDIS, EXIT_DECODE = 0, 1, 2, 3, 4
EXIT_SOFTWARE = 70  # a bug (sysexits' EX_SOFTWARE)
EXIT_OUTPUT = 74  # the output could not be written (sysexits' EX_IOERR)
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_TERMINATED = 130, 141, 143


class CLIError(Exception):
    """An error to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.status = status


class Terminated(BaseException):
    """SIGTERM arrived: unwind (so the demo stops its server) and exit 143."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def print_help(self, file: Any = None) -> None:
        """Print the help, as the output of any subcommand is: a help that
        cannot be written exits 74 or 141, not 0 (argparse drops the error)."""
        if file is None:
            _need_stdout("the help was not shown")
            file = sys.stdout
        with _writing():
            file.write(self.format_help())
            file.flush()


def seconds(text: str) -> float:
    """An argparse type: a number of seconds from 0 to ``resp.MAX_TIMEOUT``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if value == 0 and any(digit in "123456789" for digit in text.lower().partition("e")[0]):
        value = math.nan  # too small for a float (1e-400): not the 0 that waits forever
    if not 0 <= value <= resp.MAX_TIMEOUT:  # False for NaN too
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r} (from 0 to {resp.MAX_TIMEOUT:.0e})")
    return value


# -- helpers the subcommands share -------------------------------------------------


_opened: "List[Any]" = []  # the clients of the queues open_queue made


def open_queue(args: argparse.Namespace, stored_bytes: bool = False) -> HotQueue:
    """The queue ``args.queue`` at ``args.url``, with ``args.serializer``, or
    with ``serializer=None`` when the caller decodes (``stored_bytes``)."""
    serializer = None if stored_bytes else SERIALIZERS[args.serializer]
    options = {}
    given = {name for name, _ in parse_qsl(args.url.partition("?")[2])}
    if not given & {"socket_timeout", "socket_connect_timeout"}:
        # Connecting (TLS handshake and AUTH included) never waits forever: a
        # rediss:// URL to a plain server would otherwise hang in the handshake.
        options["socket_connect_timeout"] = CONNECT_TIMEOUT
    try:
        queue = HotQueue(args.queue, serializer=serializer, url=args.url, **options)
        _opened.append(queue.client)  # closed by _run on the way out
        return queue
    except resp.RespError:
        raise  # a resp.ConnectionError is an OSError too
    except (TypeError, ValueError, OSError) as exc:  # OSError: an ssl_ca_certs that cannot be read
        raise CLIError(str(exc)) from None


def _need_stdout(nothing_done: str = "no message was taken") -> None:
    # Run with standard output closed (``>&-``), Python has no sys.stdout
    # (and print() to it prints nothing, silently): a message popped then
    # could not be printed, and would be lost; a count would go unseen.
    if sys.stdout is None:
        raise CLIError(f"standard output is closed: {nothing_done}", EXIT_BROKEN_PIPE)


#: While ``get --block`` and ``consume`` wait, how often they check that their
#: output is still read.
OUTPUT_CHECK = 1.0


def _output_closed() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (``| head``)."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are always reported
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return False  # no poll(), or no file descriptor: nothing to check


def _next_slice(timeout: Optional[float], waited: float) -> float:
    """The next slice of a wait of ``timeout`` seconds (None: forever) of
    which ``waited`` have passed; BrokenPipeError if the output's reader left."""
    if _output_closed():
        raise BrokenPipeError
    return OUTPUT_CHECK if timeout is None else max(min(OUTPUT_CHECK, timeout - waited), 0.001)


def _not_json(word: str) -> Any:
    # NaN, Infinity and -Infinity: Python's json reads them, JSON has no such thing.
    raise CLIError(f"not JSON text: {word} is not a JSON number")


def _finite_float(digits: str) -> float:
    # A JSON number too large for a float (1e400) would be stored as Infinity.
    number = float(digits)
    if math.isinf(number):
        raise CLIError(f"JSON number out of range: {digits[:40]}")
    return number


def _json_int(digits: str) -> int:
    # Python 3.11+ refuses to read an integer of over 4,300 digits (a guard
    # against slow conversions): say so, rather than "not JSON text".
    try:
        return int(digits)
    except ValueError:
        raise CLIError(f"JSON integer too long ({len(digits)} digits): give it as a string") from None


def to_message(text: str, serializer: str) -> Any:
    """Turn one command-line argument into the message ``put`` stores."""
    if serializer == "json":
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # an argument's bytes that are not UTF-8: no JSON text
            raise CLIError("a JSON message must be UTF-8 text: an argument is not") from None
        try:
            return json.loads(text, parse_constant=_not_json, parse_float=_finite_float, parse_int=_json_int)
        except RecursionError:
            raise CLIError(f"JSON text nested too deep: {text[:40]!r}…") from None
        except ValueError:
            raise CLIError(f"not JSON text: {text!r} (a JSON string needs quotes: '\"{text}\"')") from None
    if serializer == "raw":
        return os.fsencode(text)  # the argument's own bytes, even when not UTF-8
    return text


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """Report an output that cannot be written (a full disk, a device error)
    as such; a closed one (BrokenPipeError) goes on to exit 141 quietly."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        _discard_output()
        raise CLIError(f"cannot write the output: {exc}", EXIT_OUTPUT) from None


def _discard_output() -> None:
    # Point standard output at /dev/null: what is still buffered for it
    # would otherwise fail again as Python exits, which then prints a
    # traceback and changes the exit status to 120.
    try:
        fileno = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no stdout, or a stream of its own (io.StringIO)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fileno)
    os.close(devnull)


def say(text: Any) -> None:
    """Print ``text`` and a line feed, now (see ``_writing``)."""
    _need_stdout("nothing was printed")
    with _writing():
        print(text, flush=True)
    _raise_held()


def render_message(value: Any, serializer: str, one_line: bool = False) -> bytes:
    """The bytes that print one message (see the module docstring); with
    ``one_line``, one whose text would span lines as its ``repr``.

    :raises CLIError: the message cannot be shown: its ``repr`` fails (lists
        in lists 100,000 deep, a valid pickle, exceed the recursion limit).
    """
    if serializer == "raw" and isinstance(value, bytes) and not (one_line and _spans_lines(value)):
        return value
    encoding = sys.stdout.encoding or "utf-8"
    try:
        if serializer == "json":
            try:  # the characters as they are where the output can hold them
                return json.dumps(value, ensure_ascii=False).encode(encoding)
            except UnicodeEncodeError:  # else escaped: still JSON text (a lone surrogate too)
                return json.dumps(value).encode(encoding)
        text = value if isinstance(value, str) else repr(value)
    except Exception as exc:
        raise CLIError(f"a message could not be shown ({type(exc).__name__} from the repr of a "
                       f"{type(value).__name__}); it has been removed from the queue", EXIT_DECODE) from None
    if one_line and _spans_lines(text):
        text = repr(text)
    try:  # surrogateescape gives back the bytes of a non-UTF-8 argument
        return text.encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace")


def write_message(data: bytes) -> None:
    """Print ``data`` and a line feed, whole (see ``render_message``)."""
    with _writing():
        sys.stdout.flush()
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:  # a text stream of its own: io.StringIO, redirect_stdout, a notebook
            sys.stdout.write(data.decode(sys.stdout.encoding or "utf-8", "surrogateescape") + "\n")
            sys.stdout.flush()
            return
        # Unbuffered (python -u, PYTHONUNBUFFERED), buffer is the raw file,
        # whose write() may take only part of a long message into a pipe.
        rest = memoryview(data + b"\n")
        while rest:
            written = buffer.write(rest)
            if written is None:  # a non-blocking output that is full
                raise BlockingIOError(errno.EAGAIN, "the output is full (non-blocking)")
            rest = rest[written:]
        buffer.flush()


def _spans_lines(text: "Any") -> bool:
    newline, carriage_return = ("\n", "\r") if isinstance(text, str) else (b"\n", b"\r")
    return newline in text or carriage_return in text


def decode(data: bytes, serializer: str) -> Any:
    """The message that ``data``, as stored, holds under ``serializer``.

    The queues the CLI reads from are opened with ``serializer=None`` and the
    bytes decoded here, so that an empty queue is never confused with a stored
    ``None`` and a message that cannot be decoded is reported as such.
    """
    loads = SERIALIZERS[serializer]
    if loads is None:
        return data
    try:
        return loads.loads(data)
    except Exception as exc:
        raise CLIError(
            f"a message could not be decoded with {serializer} ({type(exc).__name__}: {exc}); "
            "it has been removed from the queue",
            EXIT_DECODE,
        ) from None


def _hand_out(queue: HotQueue, data: bytes, serializer: str, one_line: bool = False) -> None:
    """Print a message just taken from ``queue``. If the output fails (its
    reader left after the last check, or it is no stream we can write), or a
    held signal's grace runs out while the output is not read, put
    the message back at the head of the queue, where it was, before the error
    goes on."""
    shown = render_message(decode(data, serializer), serializer, one_line)
    try:
        write_message(shown)
    except BaseException as failure:
        # What is left of it in the output's buffer must not follow it (nor
        # block the exit on a pipe nobody reads): it goes back whole.
        _discard_output()
        try:
            queue.client.execute("LPUSH", queue.key, data)
        except resp.RespError as exc:
            if not isinstance(failure, Exception):
                raise failure from None  # the signal's own exit status
            raise CLIError(f"the output failed, and the message taken could not be put back: it is lost ({exc})",
                           EXIT_BROKEN_PIPE if isinstance(failure, OSError) else EXIT_SOFTWARE) from None
        raise


# -- the subcommands ---------------------------------------------------------------


def add_queue(parser: argparse.ArgumentParser) -> None:
    """The QUEUE argument most subcommands take."""
    parser.add_argument("queue", metavar="QUEUE", help="the queue's name (its Redis key is hotqueue:QUEUE)")


def add_put(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)
    parser.add_argument("messages", metavar="MSG", nargs="+",
                        help="a message: a string (pickle), JSON text (json) or bytes (raw)")


def cmd_put(args: argparse.Namespace) -> int:
    """Put every MSG on the queue, all at once or none."""
    queue = open_queue(args)
    messages = [to_message(text, args.serializer) for text in args.messages]
    # Ctrl-C or SIGTERM lets a put on its way finish (within STOP_GRACE), and
    # the exit says which way it went: a second run must not double it.
    with _signals_held():
        try:
            queue.put(*messages)
        except (KeyboardInterrupt, Terminated):  # the grace ran out: the server is gone or hung
            _say_why("stopped while putting: the messages may or may not be on the queue")
            raise
        except Exception as exc:
            if _held is None:
                raise
            # The put failed after the signal came: _fail would say nothing
            # after Ctrl-C (and SIGTERM would exit 3), so say here which way
            # it went, and exit as the signal asks.
            if isinstance(exc, resp.ResponseError):  # refused: nothing stored
                _say_why(f"stopped: the messages were not put (Redis refused: {exc})")
            else:  # a connection dropped after the RPUSH went out, say
                _say_why(f"stopped while putting: the messages may or may not be on the queue ({exc})")
            raise _held from None
        if _held is not None:
            _say_why("stopped after the messages were put")
    return EXIT_OK


def add_get(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)
    parser.add_argument("--block", action="store_true", help="wait for a message when the queue is empty")
    parser.add_argument("--timeout", type=seconds, metavar="S",
                        help="with --block (implied), give up after S seconds (0: wait forever)")


def cmd_get(args: argparse.Namespace) -> int:
    """Remove the first message and print it; status 1 when there is none."""
    _need_stdout()
    queue = open_queue(args, stored_bytes=True)
    with _signals_held(_pop_grace(queue)):
        if not (args.block or args.timeout is not None):
            if _output_closed():  # nobody would see the message: leave it in the queue
                raise BrokenPipeError
            data = queue.get()
        else:  # waits in slices, as consume does, to notice a reader that went away
            timeout = args.timeout or None  # 0: forever
            waited = 0.0
            while True:
                wait = _next_slice(timeout, waited)
                data = queue.get(block=True, timeout=wait)
                waited += wait
                if data is not None or (timeout is not None and waited >= timeout):
                    break
                _raise_held()
        if data is None:
            return EXIT_EMPTY
        _hand_out(queue, data, args.serializer)
    return EXIT_OK


def add_len(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)


def cmd_len(args: argparse.Namespace) -> int:
    """Print how many messages wait in the queue."""
    say(len(open_queue(args)))
    return EXIT_OK


def add_clear(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)


def cmd_clear(args: argparse.Namespace) -> int:
    """Delete the queue and every message in it."""
    open_queue(args).clear()
    return EXIT_OK


def add_consume(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--timeout", type=seconds, metavar="S",
                       help="stop after S seconds without a message (default: wait forever)")
    group.add_argument("--no-block", action="store_true", help="stop as soon as the queue is empty")


def cmd_consume(args: argparse.Namespace) -> int:
    """Print messages, one a line, as they arrive."""
    _need_stdout()
    queue = open_queue(args, stored_bytes=True)
    queue.client.ping()  # an unreachable server is an error now; later outages are ridden out
    # A message is taken only while someone reads the output: the wait is cut
    # into slices of OUTPUT_CHECK seconds, with a check in between, so that a
    # reader that went away (``| head -1``) is noticed before the next message
    # is taken, not by losing it. ``idle`` adds up the slices that ended
    # without a message (waits on a live connection, as in the library).
    timeout = args.timeout or None  # 0: forever
    idle = 0.0
    with _signals_held(_pop_grace(queue)):
        while True:
            wait = _next_slice(timeout, idle)
            got = False
            for data in queue.consume(block=not args.no_block, timeout=wait):
                got = True
                _hand_out(queue, data, args.serializer, one_line=True)
                _raise_held()
                if _output_closed():
                    raise BrokenPipeError
            _raise_held()
            if args.no_block:
                return EXIT_OK
            idle = wait if got else idle + wait
            if timeout is not None and idle >= timeout:
                return EXIT_OK


def add_demo(parser: argparse.ArgumentParser) -> None:
    pass


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the tutorial end to end, starting a private redis-server if none
    answers (with pickle, as the tutorial does, whatever --serializer says)."""
    # Ctrl-C and SIGTERM stop it between two lines of the transcript (see
    # say): raised anywhere, one could end the tutorial's consume() quietly
    # or fall in a weakref callback, which only prints it.
    with _signals_held():
        return _demo_command(args)


def _demo_command(args: argparse.Namespace) -> int:
    from . import _demo  # only the demo needs multiprocessing and subprocess

    url = args.url
    shown = _demo.redact(url)
    try:
        here = _demo.answers(url)
    except resp.RespError:
        raise  # a resp.ConnectionError is an OSError too
    except (ValueError, OSError) as exc:  # OSError: an ssl_ca_certs that cannot be read
        raise CLIError(f"bad Redis URL: {exc}") from None  # not shown: it may be cut where the password is
    if here:
        return _run_demo(url)
    binary = shutil.which("redis-server")
    if binary is None:
        raise CLIError(f"nothing answers at {shown}, and redis-server is not on PATH to start one: "
                       "install Redis or pass --url", EXIT_REDIS)
    try:
        with _demo.PrivateServer(binary) as server:
            say(f"# Nothing answers at {shown}: started a private redis-server on 127.0.0.1:{server.port} "
                "(stopped at the end).")
            return _run_demo(server.url)
    except _demo.DemoError as exc:  # from starting the server: _run_demo reports its own as CLIError
        raise CLIError(f"nothing answers at {shown}, and a private redis-server could not be started: {exc}",
                       EXIT_REDIS) from None


def _run_demo(url: str) -> int:
    from . import _demo

    try:
        _demo.run(url, say)
    except _demo.DemoError as exc:
        raise CLIError(f"demo failed: {exc}", EXIT_SOFTWARE) from None
    return EXIT_OK


def add_stats(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)


def cmd_stats(args: argparse.Namespace) -> int:
    """Print the state of a queue used in reliable mode: its length, the
    messages in flight (per consumer, with its heartbeat's age), the dead
    letters and the oldest heartbeat."""
    try:
        stats = open_queue(args).stats()
    except ValueError as exc:  # a name whose keys cannot share a cluster slot
        raise CLIError(str(exc)) from None

    def age(seconds: Optional[float], alive: bool = True) -> str:
        if not alive:
            return "expired"
        return "of unknown age" if seconds is None else f"{seconds:.1f} s ago"

    oldest = stats.oldest_heartbeat_age
    lines = [f"length: {stats.length}", f"in flight: {stats.in_flight}",
             f"dead letters: {stats.dead_letters}",
             f"oldest heartbeat: {'none' if oldest is None else age(oldest)}",
             f"consumers: {len(stats.consumers)}"]
    lines += [f"  {c.id}: {c.in_flight} in flight, heartbeat {age(c.heartbeat_age, c.alive)}"
              for c in stats.consumers]
    say("\n".join(lines))
    return EXIT_OK


def add_recover(parser: argparse.ArgumentParser) -> None:
    add_queue(parser)
    parser.add_argument("--max-attempts", type=int, default=5, metavar="N",
                        help="the workers' max_attempts: a message reaching N failures goes to the dead letters"
                             " instead (default 5)")


def cmd_recover(args: argparse.Namespace) -> int:
    """Move the in-flight messages of reliable consumers whose heartbeat
    expired back to the head of the queue; print how many."""
    _need_stdout("nothing was recovered")
    try:
        say(open_queue(args).recover(args.max_attempts))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return EXIT_OK


class Command(NamedTuple):
    """One subcommand: its help line, its arguments, its work."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Every subcommand, in the order ``--help`` lists them.
COMMANDS: Dict[str, Command] = {
    "put": Command("put messages at the end of a queue", add_put, cmd_put),
    "get": Command("remove the first message and print it (status 1 when empty)", add_get, cmd_get),
    "len": Command("print the number of messages in a queue", add_len, cmd_len),
    "clear": Command("delete a queue and all its messages", add_clear, cmd_clear),
    "consume": Command("print messages, one a line, as they arrive", add_consume, cmd_consume),
    "stats": Command("reliable mode: length, messages in flight per consumer, dead letters, heartbeats",
                     add_stats, cmd_stats),
    "recover": Command("reliable mode: put dead consumers' messages back at the head of the queue",
                       add_recover, cmd_recover),
    "demo": Command("run the tutorial end to end (starts a private redis-server if none answers)",
                    add_demo, cmd_demo),
}


def make_parser() -> argparse.ArgumentParser:
    """The argument parser, built from ``COMMANDS``."""
    default_url = os.environ.get("REDIS_URL") or DEFAULT_URL

    def add_connection(parser: argparse.ArgumentParser, top: bool) -> None:
        # Accepted before and after the subcommand; after wins.
        suppress = None if top else argparse.SUPPRESS
        parser.add_argument("--url", default=suppress or default_url,
                            help=f"Redis URL (default: $REDIS_URL or {DEFAULT_URL})")
        parser.add_argument("--serializer", choices=sorted(SERIALIZERS), default=suppress or "pickle",
                            help="how messages are stored (default: pickle, as the library does)")

    parser = Parser(prog="python -m hotqueue", description="Use a Redis list as a FIFO message queue.",
                    epilog="Exit status: 0 done, 1 get: empty or timed out, 2 bad usage, 3 Redis unreachable "
                           "or refusing, 4 undecodable message, 70 a bug, 74 output not written, 130 interrupted, "
                           "141 output closed, 143 terminated.")
    add_connection(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.run.__doc__)
        add_connection(child, top=False)
        command.add_arguments(child)
        child.set_defaults(run=command.run)
    return parser


#: After Ctrl-C or SIGTERM, how long a ``put`` on its way may go on to
#: finish, and the demo to reach its next line, before they stop anyway (a
#: server gone or hung); the least ``get`` and ``consume`` are given.
STOP_GRACE = 3.0


def _pop_grace(queue: HotQueue) -> float:
    """How long ``get`` and ``consume`` may go on after Ctrl-C or SIGTERM:
    longer than the client waits for the reply of one of their pops (a wait
    of OUTPUT_CHECK seconds, the client's margin, ``socket_timeout``), so
    that a message the server has popped is printed, even from a server
    that stalls, rather than lost with the connection."""
    client_wait = OUTPUT_CHECK + max(OUTPUT_CHECK, resp.BLOCKING_MARGIN) + (queue.client.socket_timeout or 0.0)
    return max(STOP_GRACE, client_wait + 0.5)


_interrupted = False
_holding = False  # inside _signals_held: SIGINT and SIGTERM wait their turn
_held: Optional[BaseException] = None  # what the signal held raises
_grace = STOP_GRACE  # how long it is held at most (see _signals_held)


def _stop(exc: BaseException) -> None:
    # Raise exc now, or, while signals are held, at the next _raise_held (or
    # when the grace has passed: SIGALRM).
    global _held
    if not _holding:
        raise exc
    if _held is None:
        _held = exc
        signal.setitimer(signal.ITIMER_REAL, _grace)


def _on_sigint(signum: int, frame: Optional[FrameType]) -> None:
    # consume() ends quietly on Ctrl-C; remember it, to exit with 130 anyway.
    global _interrupted
    _interrupted = True
    _stop(KeyboardInterrupt())


def _on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    _stop(Terminated())


def _on_sigalrm(signum: int, frame: Optional[FrameType]) -> None:
    # The grace has passed since a held signal: stop wherever we are.
    _raise_held()


def _raise_held() -> None:
    """Raise what a held SIGINT or SIGTERM raises, if one arrived."""
    if _held is not None:
        raise _held


@contextlib.contextmanager
def _signals_held(grace: float = STOP_GRACE) -> Iterator[None]:
    """Hold SIGINT and SIGTERM (see ``_stop``) while a pop may be in flight or
    a message in hand, for ``grace`` seconds at most, and raise what they
    raise on the way out."""
    global _holding, _held, _grace
    _holding, _held, _grace = True, None, grace
    try:
        yield
        _raise_held()
    finally:
        _holding = False
        if _held is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; return the exit status."""
    global _interrupted, _held
    _interrupted, _held = False, None  # nothing held over from an earlier call
    logging.basicConfig(format="hotqueue: %(message)s", level=logging.WARNING)
    # The handlers before ours, put back on the way out: a program that
    # calls main() keeps its own (SIGTERM would otherwise raise Terminated
    # in it ever after).
    before: Dict[int, Any] = {}
    try:
        for signum, handler in ((signal.SIGINT, _on_sigint), (signal.SIGTERM, _on_sigterm)):
            if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored (nohup, '&', trap ''): stays so
                before[signum] = signal.signal(signum, handler)
        before[signal.SIGALRM] = signal.signal(signal.SIGALRM, _on_sigalrm)  # the grace's own timer
    except ValueError:
        pass  # not the main thread: the signals keep their default behaviour
    try:
        return _run(argv)
    finally:
        for number, previous in before.items():
            if previous is not None:  # None: not set from Python, cannot be put back
                signal.signal(number, previous)


def _run(argv: Optional[Sequence[str]]) -> int:
    try:
        args = make_parser().parse_args(argv)
        try:
            status = args.run(args)
        finally:
            while _opened:  # their sockets, which Python would warn of (-X dev) as it exits
                _opened.pop().close()
        return EXIT_INTERRUPTED if _interrupted else status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Terminated:
        return EXIT_TERMINATED
    except BrokenPipeError:
        # Nothing reads our output any more: stop quietly, as `yes | head` does.
        _discard_output()
        return EXIT_BROKEN_PIPE
    except CLIError as exc:
        return _fail(str(exc), exc.status)
    except (resp.ConnectionError, resp.TimeoutError, resp.ProtocolError) as exc:
        return _fail(f"cannot talk to Redis: {exc}", EXIT_REDIS)
    except resp.ResponseError as exc:
        return _fail(f"Redis refused: {exc}", EXIT_REDIS)
    except resp.RespError as exc:  # SentinelError (UnknownServiceError), ClusterError
        return _fail(f"Redis error: {exc}", EXIT_REDIS)
    except Exception as exc:  # a bug: still one line, never a traceback
        return _fail(f"unexpected error: {type(exc).__name__}: {exc}", EXIT_SOFTWARE)


def _say_why(text: str) -> None:
    # One line on standard error, beside an exit status that cannot tell it.
    # With standard error closed (``2>&-``: no sys.stderr) or gone, the line
    # is dropped: the exit status must still be the one it goes with.
    if sys.stderr is None:
        return
    try:
        sys.stderr.write(f"hotqueue: {' '.join(text.split())}\n")
        sys.stderr.flush()
    except OSError:
        pass


def _fail(message: str, status: int) -> int:
    if _interrupted:
        # Ctrl-C came first and ended a consume() quietly (the demo's, say):
        # what failed after it failed for that reason.
        return EXIT_INTERRUPTED
    _say_why(f"error: {message}")
    return status


if __name__ == "__main__":
    sys.exit(main())
