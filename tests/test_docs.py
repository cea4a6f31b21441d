"""The ``>>>`` examples of ``README.md`` and ``docs/`` run as doctests against a real server.

The docs connect to ``localhost:6379`` as a reader would; each file runs
against a fresh private server instead, with ``6379`` rewritten to its port
before a single example runs (the shared 6379 is never touched).
"""

import doctest
import os
import re
from typing import Any, Callable

import pytest

import hotqueue
import resp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", "docs/tutorial.md", "docs/api.md"]


def run_doctests(path: str, port: int) -> doctest.TestResults:
    with open(os.path.join(ROOT, path), encoding="utf-8") as file:
        text = file.read()
    assert "port=6379" in text or "localhost:6379" in text  # the rewrite below has work to do
    text = text.replace("6379", str(port))
    test = doctest.DocTestParser().get_doctest(text, {}, path, path, 0)
    assert test.examples, f"{path} has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    return runner.summarize(verbose=False)


@pytest.fixture
def shared_port_refused(monkeypatch: Any) -> None:
    """An example that connects to port 6379 without saying so (a default
    port) fails instead of touching the machine's shared Redis."""
    connect = resp.connection._connect_tcp

    def refuse_shared_port(host: str, port: int, *rest: Any) -> Any:
        if port == 6379:
            raise AssertionError("a doc example connected to port 6379")
        return connect(host, port, *rest)

    monkeypatch.setattr(resp.connection, "_connect_tcp", refuse_shared_port)


@pytest.mark.parametrize("path", DOCS)
def test_doc_examples(path: str, make_server: Callable[..., Any], capsys: Any, shared_port_refused: None) -> None:
    server = make_server()
    failed, attempted = run_doctests(path, server.port)
    report = capsys.readouterr().out
    assert attempted >= 5
    assert failed == 0, report


def test_api_reference_names_every_public_name() -> None:
    with open(os.path.join(ROOT, "docs/api.md"), encoding="utf-8") as file:
        text = file.read()
    for name in hotqueue.__all__ + resp.__all__:
        assert re.search(rf"\b{re.escape(name)}\b", text), f"docs/api.md does not mention {name}"


def test_readme_names_the_two_commands() -> None:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as file:
        first_screen = "\n".join(file.read().splitlines()[:25])
    assert "python3 -m hotqueue demo" in first_screen
    assert "bash .ci/run" in first_screen
