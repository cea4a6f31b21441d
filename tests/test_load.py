"""Load: 8 producer threads, 4 consumer threads and 2 consumer processes move
N unique integers through one queue; the count, the sum and the set of what
was consumed show that none was lost and none duplicated.

N is ``HOTQUEUE_LOAD_MESSAGES`` (default 20,000, quick enough for CI). The
full run of the README's figures:

    HOTQUEUE_LOAD_MESSAGES=100000 python3 -m pytest tests/test_load.py -s
"""

import multiprocessing
import os
import random
import resource
import threading
import time

try:
    import tracemalloc
except ImportError:  # PyPy has none: memory goes unmeasured there, the rest runs
    tracemalloc = None  # type: ignore[assignment]
from typing import Any, List, Tuple

import pytest
from faultproxy import report

from hotqueue import HotQueue

MESSAGES = int(os.environ.get("HOTQUEUE_LOAD_MESSAGES", "20000"))
PRODUCERS = 8
CONSUMER_THREADS = 4
CONSUMER_PROCESSES = 2
STOP = -1  # one per consumer, pushed after every message


def consume(queue: HotQueue) -> List[int]:
    """Take messages until a STOP; return them in the order taken."""
    got: List[int] = []
    for msg in queue.consume():
        if msg == STOP:
            break
        got.append(msg)
    return got


def consumer_process(queue: HotQueue, conn: Any) -> None:
    # Runs in a forked child, with the queue object (and its pool) inherited
    # from the parent: the child must open its own connections.
    got = consume(queue)
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((got, maxrss_kib))
    conn.close()


def produce(queue: HotQueue, numbers: range, seed: int) -> None:
    # Batches of random size: single puts and multi-message RPUSHes both.
    rng = random.Random(seed)
    start = numbers.start
    while start < numbers.stop:
        size = rng.choice([1, 1, 2, 5, 10, 50])
        queue.put(*range(start, min(start + size, numbers.stop)))
        start += size


def test_load_no_message_lost_or_duplicated(redis_url: str, key: str) -> None:
    queue = HotQueue(key, url=redis_url, socket_timeout=30)
    queue.clear()
    context = multiprocessing.get_context("fork")
    # Children first: forking once threads run is unsafe. Threads that earlier
    # tests stopped may take a moment to end.
    deadline = time.monotonic() + 3
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    pipes: List[Tuple[Any, Any]] = []
    processes = []
    for _ in range(CONSUMER_PROCESSES):
        parent_end, child_end = context.Pipe(duplex=False)
        process = context.Process(target=consumer_process, args=(queue, child_end), daemon=True)
        process.start()
        child_end.close()
        pipes.append((parent_end, child_end))
        processes.append(process)

    if tracemalloc:
        tracemalloc.start()
    started = time.monotonic()
    results: List[List[int]] = [[] for _ in range(CONSUMER_THREADS)]

    def consumer_thread(index: int) -> None:
        results[index] = consume(queue)

    consumers = [threading.Thread(target=consumer_thread, args=(i,)) for i in range(CONSUMER_THREADS)]
    share = -(-MESSAGES // PRODUCERS)
    producers = [
        threading.Thread(target=produce, args=(queue, range(i * share, min((i + 1) * share, MESSAGES)), i))
        for i in range(PRODUCERS)
    ]
    for thread in consumers + producers:
        thread.start()
    for thread in producers:
        thread.join()
    queue.put(*[STOP] * (CONSUMER_THREADS + CONSUMER_PROCESSES))
    for thread in consumers:
        thread.join(120)
        assert not thread.is_alive(), "a consumer thread never got its STOP"
    peak = tracemalloc.get_traced_memory()[1] if tracemalloc else None
    if tracemalloc:
        tracemalloc.stop()

    child_rss = []
    for (parent_end, _), process in zip(pipes, processes):
        if not parent_end.poll(120):
            pytest.fail("a consumer process never reported")
        got, maxrss_kib = parent_end.recv()
        results.append(got)
        child_rss.append(maxrss_kib)
        process.join(10)
        assert process.exitcode == 0
    elapsed = time.monotonic() - started

    consumed = [n for got in results for n in got]
    assert len(consumed) == MESSAGES, f"{MESSAGES - len(consumed)} lost (or duplicated)"
    assert sum(consumed) == MESSAGES * (MESSAGES - 1) // 2
    assert set(consumed) == set(range(MESSAGES))  # with the count: no duplicate
    for got in results:
        # FIFO: what one consumer took from one producer is in that producer's order.
        for producer in range(PRODUCERS):
            mine = [n for n in got if n // share == producer]
            assert mine == sorted(mine)
    assert len(queue) == 0
    queue.client.close()
    # Bounded memory: the main process holds the consumed numbers (about 40
    # bytes each in lists) plus buffers, nothing that grows with the traffic.
    assert peak is None or peak < 16 * 2**20 + MESSAGES * 200, peak  # None: see the end

    line = (
        f"load: {MESSAGES} messages, {PRODUCERS} producer threads, {CONSUMER_THREADS} consumer threads, "
        f"{CONSUMER_PROCESSES} consumer processes, {elapsed:.1f} s ({MESSAGES / elapsed:,.0f} msg/s); "
        f"consumed {len(consumed)}, lost {MESSAGES - len(set(consumed))}, "
        f"duplicated {len(consumed) - len(set(consumed))}; per consumer {[len(g) for g in results]}; "
        f"peak traced memory in the main process "
        f"{'not measured (no tracemalloc)' if peak is None else f'{peak / 2**20:.1f} MiB'}, "
        f"max RSS of the consumer processes {[round(k / 1024, 1) for k in child_rss]} MiB"
    )
    report("load", line)  # shown with -s
    if peak is None:
        pytest.skip("the other checks passed; memory unmeasured: no tracemalloc on this interpreter")
