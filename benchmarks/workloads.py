"""The timed workloads, run inside one worker process per implementation.

``run.py`` starts this script once per side — this project, HotQueue 0.2.8 on
redis-py, the same with hiredis — each in its own interpreter, so the two
``hotqueue`` packages never meet. It then sends one JSON line per measurement
on stdin and reads one JSON line back: ``{"seconds": …, "ops": …}``.

    python workloads.py this|redispy|floor PORT
"""

import json
import os
import pickle
import socket
import sys
import threading
import time

MESSAGE = b"m" * 100
# A dict whose pickle is about 100 bytes.
DICT_MESSAGE = {"id": 12345, "user": "someone@example.com", "tags": ["a", "b", "c"], "ok": True}
BIG = b"B" * (1024 * 1024)

_clock = time.perf_counter


def make_queue(port, name, serializer):
    # Whichever hotqueue this interpreter has: this project's or 0.2.8.
    from hotqueue import HotQueue

    return HotQueue(name, serializer=serializer, host="127.0.0.1", port=port)


class Workloads:
    """Each method runs ``n`` operations and returns the seconds they took."""

    def __init__(self, impl, port):
        self.impl = impl
        self.port = port
        tag = f"bench-{impl}-{os.getpid()}"
        self.raw = make_queue(port, tag + "-raw", None)
        self.pickled = make_queue(port, tag + "-pickle", pickle)
        self.raw.clear()
        self.pickled.clear()

    def _fill(self, n, message=MESSAGE):
        batch = [message] * 1000
        for start in range(0, n, 1000):
            self.raw.put(*batch[: min(1000, n - start)])

    def put_raw(self, n):
        put = self.raw.put
        start = _clock()
        for _ in range(n):
            put(MESSAGE)
        seconds = _clock() - start
        self.raw.clear()
        return seconds

    def put_pickle(self, n):
        put = self.pickled.put
        start = _clock()
        for _ in range(n):
            put(DICT_MESSAGE)
        seconds = _clock() - start
        self.pickled.clear()
        return seconds

    def _put_batch(self, n, size):
        put = self.raw.put
        batch = [MESSAGE] * size
        start = _clock()
        for _ in range(n):
            put(*batch)
        seconds = _clock() - start
        self.raw.clear()
        return seconds

    def put_batch100(self, n):
        return self._put_batch(n, 100)

    def put_batch1000(self, n):
        return self._put_batch(n, 1000)

    def get_drain(self, n):
        self._fill(n)
        get = self.raw.get
        start = _clock()
        for _ in range(n):
            get()
        seconds = _clock() - start
        assert get() is None
        return seconds

    def get_block(self, n):
        self._fill(n)
        get = self.raw.get
        start = _clock()
        for _ in range(n):
            get(block=True, timeout=1)
        seconds = _clock() - start
        assert len(self.raw) == 0
        return seconds

    def consume(self, n):
        self._fill(n)
        count = 0
        start = _clock()
        for _ in self.raw.consume(timeout=1):
            count += 1
            if count == n:
                break
        seconds = _clock() - start
        assert count == n
        return seconds

    def big_roundtrip(self, n):
        put, get = self.raw.put, self.raw.get
        start = _clock()
        for _ in range(n):
            put(BIG)
            if len(get()) != len(BIG):
                raise AssertionError("1 MiB message came back wrong")
        return _clock() - start

    def threads(self, n):
        queue = self.pickled
        got = []

        def produce():
            put = queue.put
            for i in range(n):
                put(i)

        def consume():
            get = queue.get
            for _ in range(n):
                got.append(get(block=True, timeout=5))

        producer = threading.Thread(target=produce)
        consumer = threading.Thread(target=consume)
        start = _clock()
        consumer.start()
        producer.start()
        producer.join()
        consumer.join()
        seconds = _clock() - start
        assert got == list(range(n)), "messages lost or reordered"
        return seconds


class Floor:
    """RPUSH and LPOP over a raw blocking socket with minimal Python: what no
    client can beat from this interpreter."""

    def __init__(self, impl, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.key = f"bench-floor-{os.getpid()}".encode()

    def _command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for arg in args:
            out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(out)

    def put_raw(self, n):
        sock = self.sock
        command = self._command(b"RPUSH", self.key, MESSAGE)
        sendall, recv = sock.sendall, sock.recv
        start = _clock()
        for _ in range(n):
            sendall(command)
            recv(65536)  # ':N\r\n' arrives in one segment on loopback
        seconds = _clock() - start
        sendall(self._command(b"DEL", self.key))
        recv(65536)
        return seconds

    def get_drain(self, n):
        sock = self.sock
        sendall, recv = sock.sendall, sock.recv
        fill = self._command(b"RPUSH", self.key, *[MESSAGE] * 1000)
        for _ in range(0, n, 1000):
            sendall(fill)
            recv(65536)
        command = self._command(b"LPOP", self.key)
        expected = 4 + 2 + len(MESSAGE) + 2  # $100\r\n + data + \r\n
        start = _clock()
        for _ in range(n):
            sendall(command)
            data = recv(65536)
            while len(data) < expected:
                data += recv(65536)
        seconds = _clock() - start
        sendall(self._command(b"DEL", self.key))
        recv(65536)
        return seconds


def main():
    impl, port = sys.argv[1], int(sys.argv[2])
    runner = Floor(impl, port) if impl == "floor" else Workloads(impl, port)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        seconds = getattr(runner, request["workload"])(request["n"])
        print(json.dumps({"seconds": seconds, "ops": request["n"]}), flush=True)


if __name__ == "__main__":
    main()
