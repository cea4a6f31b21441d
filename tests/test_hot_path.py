"""The hot path stays short, counted rather than timed.

How many Python functions one queue operation runs, counted with
``sys.setprofile``: the same on every machine, however loaded, where a timing
is not. A layer or a helper added to the path of ``put`` or ``get`` fails here
before it shows as a slower benchmark (HotQueue 0.2.8 on redis-py and hiredis
runs 82 for one ``get``). The budgets are today's counts: raising one is a
decision, taken knowingly. (What ``import hotqueue`` loads is held to its
limit in ``test_layering.py``.)
"""

import os
import sys
from collections import Counter
from typing import Any, Callable, Iterator

import pytest

import hotqueue
import resp
from hotqueue import HotQueue

# Where the packages were imported from: this tree, or where tox installed them.
OUR_DIRS = tuple(os.path.dirname(str(package.__file__)) + os.sep for package in (resp, hotqueue))

#: Python functions of this project one operation runs, at most.
BUDGETS = {
    "put": 11,
    "get": 11,
    "get(block=True, timeout=1)": 13,
    "next(consume())": 13,
}


def calls_made(operation: Callable[[], Any]) -> "Counter[str]":
    """The functions of this project ``operation`` runs, by name, and how often."""
    calls: "Counter[str]" = Counter()

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(OUR_DIRS):
            calls[frame.f_code.co_name] += 1

    sys.setprofile(profile)
    try:
        operation()
    finally:
        sys.setprofile(None)
    return calls


@pytest.fixture
def client(redis_url: str) -> Iterator[resp.Client]:
    with resp.Client.from_url(redis_url) as c:
        yield c


@pytest.fixture
def queue(client: resp.Client, key: str) -> Iterator[HotQueue]:
    q = HotQueue(key, client=client, serializer=None)
    yield q
    q.clear()


def _operation(queue: HotQueue, name: str) -> "Callable[[], Any]":
    if name == "put":
        return lambda: queue.put(b"m" * 100)
    if name == "get":
        return queue.get
    if name == "get(block=True, timeout=1)":
        return lambda: queue.get(block=True, timeout=1)
    consumer = queue.consume(timeout=1)
    return lambda: next(consumer)


@pytest.mark.parametrize("name", list(BUDGETS))
def test_one_operation_runs_few_functions(queue: HotQueue, name: str) -> None:
    queue.put(*[b"m" * 100] * 10)
    operation = _operation(queue, name)
    operation()  # the first time connects and fills the caches
    calls = calls_made(operation)
    assert calls, "the profile saw nothing: the check itself is broken"
    assert sum(calls.values()) <= BUDGETS[name], dict(calls)


def test_the_budget_check_can_fail(queue: HotQueue, client: resp.Client) -> None:
    # A pool with no connection to reuse connects afresh: more functions than
    # the budget, which the same check must notice.
    queue.put(b"m")
    client.close()
    calls = calls_made(queue.get)
    assert sum(calls.values()) > BUDGETS["get"], dict(calls)

