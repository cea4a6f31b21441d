"""Parser benchmark: ``resp.Reader`` against redis-py's pure-Python RESP2 parser
and ``hiredis.Reader``, on the same bytes fed the same way.

    python parser.py [--quick]

Needs ``redis`` and ``hiredis`` importable and this project on ``PYTHONPATH``
(``run.py`` runs it in its ``hiredis`` virtualenv). redis-py's parser pulls its
bytes from a socket: it is driven through its own ``SocketBuffer`` with a stand-in
socket object whose ``recv`` hands out the prepared chunks — no server involved.
Each case is fed in 32 KiB chunks, in one whole multi-megabyte chunk, and (on
small totals) one byte at a time. Figures are the median time per reply.
"""

import argparse
import functools
import statistics
import sys
import time

import hiredis

import resp

try:  # redis-py 5 and later
    from redis._parsers.encoders import Encoder
    from redis._parsers.resp2 import _RESP2Parser as PurePythonParser
except ImportError:  # redis-py 4.x
    from redis.connection import Encoder  # type: ignore
    from redis.connection import PythonParser as PurePythonParser  # type: ignore

_clock = time.perf_counter


def bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data)


CASES = {
    "integer": b":1234567\r\n",
    "simple": b"+OK\r\n",
    "null": b"$-1\r\n",
    "bulk 100 B": bulk(b"v" * 100),
    "BLPOP array": b"*2\r\n" + bulk(b"hotqueue:jobs") + bulk(b"v" * 100),
    "1,000-element array": b"*1000\r\n" + b"".join(bulk(b"item%06d" % i) for i in range(1000)),
    "bulk 1 MiB": bulk(b"B" * (1 << 20)),
    "mixed session": b"".join([
        b":42\r\n", b"+OK\r\n", b"$-1\r\n", bulk(b"v" * 100), b"*2\r\n" + bulk(b"hotqueue:jobs") + bulk(b"w" * 60),
        b"*-1\r\n", b"-ERR unknown command\r\n", b"*10\r\n" + bulk(b"x" * 20) * 10,
    ]),
}
MIXED_REPLIES = 8  # replies in one "mixed session" unit


class FakeSocket:
    """Hands out prepared chunks through ``recv``, as a socket would."""

    def __init__(self, chunks):
        # recv(size) is next(chunks, size): a C call, no Python frame per
        # chunk (fed byte by byte, a frame per byte slowed redis-py by ~5%).
        # Never called past the last chunk: the replies are counted.
        self.recv = functools.partial(next, iter(chunks))

    def settimeout(self, timeout):
        pass


class FakeConnection:
    def __init__(self, sock):
        self._sock = sock
        self.socket_timeout = None
        self.encoder = Encoder("utf-8", "strict", False)


def split(data, size):
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_reader(make, chunks, replies):
    reader = make()
    # Bound once, as run_pure binds redis-py's read_response.
    feed, gets = reader.feed, reader.gets
    count = 0
    start = _clock()
    for chunk in chunks:
        feed(chunk)
        while gets() is not False:
            count += 1
    seconds = _clock() - start
    assert count == replies, (count, replies)
    return seconds


class CallFloor:
    """A reader that does nothing: what the two calls per chunk cost alone."""

    def feed(self, data):
        pass

    def gets(self):
        return False


def run_pure(chunks, replies, read_size):
    parser = PurePythonParser(socket_read_size=read_size)
    parser.on_connect(FakeConnection(FakeSocket(chunks)))
    read = parser.read_response
    start = _clock()
    for _ in range(replies):
        read()
    seconds = _clock() - start
    parser.on_disconnect()
    return seconds


def feeds(unit, units):
    data = unit * units
    return {
        "32 KiB chunks": (split(data, 32 * 1024), 65536),
        "one chunk": ([data], len(data)),
    }


def measure(quick):
    """Rows of (case, mode, replies, {side: [seconds per reply, one per round]}).
    Each round runs every side on every mode of a case, so that a slow spell
    of the machine touches all of them alike."""
    rows = []
    repeat = 3 if quick else 7
    for name, unit in CASES.items():
        per_unit = MIXED_REPLIES if name == "mixed session" else 1
        total = (1 if quick else 4) << 20  # bytes per stream: multi-megabyte
        units = max(2, total // len(unit))
        modes = feeds(unit, units)
        small_units = 1 if len(unit) > 4096 else max(1, 2000 // len(unit))
        if len(unit) < (1 << 20):
            byte_data = unit * small_units
            modes["byte by byte"] = (split(byte_data, 1), 1)
        replies = {mode: (small_units if mode == "byte by byte" else units) * per_unit for mode in modes}
        times = {mode: {"resp": [], "redis-py": [], "hiredis": []} for mode in modes}
        if "byte by byte" in modes:
            times["byte by byte"]["call floor"] = []
        sides = {
            "resp": lambda chunks, count, _: run_reader(resp.Reader, chunks, count),
            "redis-py": run_pure,
            "hiredis": lambda chunks, count, _: run_reader(hiredis.Reader, chunks, count),
        }
        for round_number in range(repeat):
            # One side at a time, its ways of feeding one after the other, so
            # that resp.Reader's whole and chunked runs meet the machine in
            # one state; which of the two goes first alternates by round.
            order = list(modes)
            if round_number % 2:
                order[0], order[1] = order[1], order[0]
            for side, run in sides.items():
                for mode in order:
                    chunks, read_size = modes[mode]
                    times[mode][side].append(run(chunks, replies[mode], read_size) / replies[mode])
            if "byte by byte" in modes:
                chunks = modes["byte by byte"][0]
                times["byte by byte"]["call floor"].append(run_reader(CallFloor, chunks, 0) / replies["byte by byte"])
        for mode in modes:
            rows.append((name, mode, replies[mode], times[mode]))
        print(f"  {name} done", file=sys.stderr, flush=True)
    return rows


def paired(numerators, denominators):
    """The median of per-round ratios (both measured in the same round)."""
    return statistics.median(a / b for a, b in zip(numerators, denominators))


def fmt(seconds):
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.3f} µs"


def markdown(rows):
    lines = [
        "## Parser (time per reply, median; × = how many times faster resp.Reader is, the median of per-round ratios)",
        "",
        "| case | fed as | replies | resp.Reader | redis-py pure | hiredis | × redis-py | × hiredis |",
        "|---|---|---|---|---|---|---|---|",
    ]
    chunked = {}
    for name, mode, replies, times in rows:
        med = {side: statistics.median(values) for side, values in times.items()}
        lines.append(
            f"| {name} | {mode} | {replies} | {fmt(med['resp'])} | {fmt(med['redis-py'])} | {fmt(med['hiredis'])}"
            f" | **{paired(times['redis-py'], times['resp']):.2f}×** | {paired(times['hiredis'], times['resp']):.2f}× |"
        )
        if mode == "32 KiB chunks":
            chunked[name] = times["resp"]
    lines += ["", "hiredis's time per reply fed one whole chunk grows with the chunk's size (measured at"
              " 256 KiB, 1 MiB and 4 MiB), so the × hiredis of \"one chunk\" rows tells more about"
              " the chunk's size than about resp.Reader: its \"32 KiB chunks\" rows are the comparison.",
              "", "Fed byte by byte, every reader interfaced like hiredis's pays a `feed()` and a `gets()` call"
              " per byte. What those two calls cost alone, to empty methods (the call floor), bounds how many"
              " times faster than redis-py any such reader written in Python can be:", "",
              "| case | redis-py pure | call floor | at most × redis-py | resp.Reader × redis-py |",
              "|---|---|---|---|---|"]
    for name, _, _, times in rows:
        if "call floor" in times:
            floor = statistics.median(times["call floor"])
            lines.append(
                f"| {name} | {fmt(statistics.median(times['redis-py']))} | {fmt(floor)}"
                f" | {paired(times['redis-py'], times['call floor']):.2f}×"
                f" | {paired(times['redis-py'], times['resp']):.2f}× |"
            )
    lines += ["", "resp.Reader, one whole chunk vs 32 KiB chunks (time per reply; the two measured one after the"
              " other in each round, in turns first; the median of per-round ratios and their range; below 1 ="
              " faster whole):", ""]
    lines += ["| case | one chunk / 32 KiB chunks | per-round range |", "|---|---|---|"]
    for name, mode, _, times in rows:
        if mode == "one chunk":
            ratios = [whole / chunks for whole, chunks in zip(times["resp"], chunked[name])]
            lines.append(f"| {name} | {statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 MiB streams, 3 rounds")
    args = parser.parse_args()
    lines = markdown(measure(args.quick))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
