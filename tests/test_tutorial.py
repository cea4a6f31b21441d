"""Every example of the HotQueue tutorial, in Python 3, against a private server.

The tutorial's queue is ``myqueue`` on ``localhost``; each test starts its own
redis-server (never 6379) and uses that name unchanged. Where the tutorial
says "in another Python program", another process does it.
"""

import os
import selectors
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any, Callable, Iterator, List

import pytest

from hotqueue import HotQueue

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def port(make_server: Callable[..., Any]) -> int:
    """The port of a fresh private server: 'myqueue' is empty there."""
    return int(make_server().port)


@pytest.fixture
def queue(port: int) -> Iterator[HotQueue]:
    q = HotQueue("myqueue", host="localhost", port=port, db=0)
    yield q
    q.client.close()


def python(code: str, **kwargs: Any) -> "subprocess.Popen[str]":
    """Another Python program, importing this checkout's hotqueue."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", code], env=env, text=True, **kwargs)


def read_lines(procs: List["subprocess.Popen[str]"], count: int, timeout: float = 20) -> List[str]:
    """``count`` lines from the processes' stdout, whichever writes first
    (raw reads: a buffered reader would hide lines from ``select``)."""
    lines: List[str] = []
    pending = {}
    with selectors.DefaultSelector() as sel:
        for proc in procs:
            assert proc.stdout is not None
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
            pending[proc.stdout.fileno()] = b""
        deadline = time.monotonic() + timeout
        while len(lines) < count and sel.get_map() and time.monotonic() < deadline:
            for ready, _ in sel.select(max(0.0, deadline - time.monotonic())):
                fd = ready.fd
                data = os.read(fd, 65536)
                if not data:
                    sel.unregister(fd)
                    continue
                *complete, pending[fd] = (pending[fd] + data).split(b"\n")
                lines.extend(line.decode().strip() for line in complete)
    return lines


def test_connecting(port: int) -> None:
    queue = HotQueue("myqueue", host="localhost", port=port, db=0)
    assert queue.key == "hotqueue:myqueue"
    assert HotQueue("myqueue").key == "hotqueue:myqueue"  # host, port and db are optional


def test_put_and_get(queue: HotQueue) -> None:
    assert queue.put(4) is None
    assert queue.put(5) is None
    assert queue.put(6, "my message", 7) is None
    assert queue.put(Decimal("1.4")) is None
    assert queue.get() == 4
    assert queue.get() == 5
    assert queue.get() == 6
    assert queue.get() == "my message"
    assert queue.get() == 7
    dec = queue.get()
    assert repr(dec) == "Decimal('1.4')"
    assert repr(dec + Decimal("0.3")) == "Decimal('1.7')"


def test_consume_waits_for_another_program(queue: HotQueue, port: int) -> None:
    producer = python(
        "import time\nfrom hotqueue import HotQueue\n"
        f"queue = HotQueue('myqueue', host='localhost', port={port}, db=0)\n"
        "time.sleep(0.5)\nqueue.put('from another program')\n"
    )
    try:
        start = time.monotonic()
        items = []
        for item in queue.consume(timeout=10):
            items.append(item)
            break  # the tutorial's loop would go on waiting for the next one
        assert items == ["from another program"]
        assert time.monotonic() - start >= 0.3  # it blocked until the message came
    finally:
        assert producer.wait(10) == 0


WORKER = """
from hotqueue import HotQueue

queue = HotQueue('myqueue', host='localhost', port={port}, db=0)

@queue.worker
def square(num):
    print(num * num)

square()
"""


def test_worker(queue: HotQueue, port: int) -> None:
    worker = python(WORKER.format(port=port), stdout=subprocess.PIPE)
    try:
        assert queue.put(2, 3, 4) is None
        assert read_lines([worker], 3) == ["4", "9", "16"]
        assert worker.poll() is None  # it waits indefinitely for more
    finally:
        worker.kill()
        worker.wait()


def test_two_workers_never_share_a_message(queue: HotQueue, port: int) -> None:
    workers = [python(WORKER.format(port=port), stdout=subprocess.PIPE) for _ in range(2)]
    try:
        numbers = list(range(1, 201))
        queue.put(*numbers)
        lines = read_lines(workers, len(numbers))
        assert sorted(int(line) for line in lines) == [n * n for n in numbers]
        time.sleep(0.2)
        assert read_lines(workers, 1, timeout=0.3) == []  # nothing was handled twice
        assert len(queue) == 0
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
