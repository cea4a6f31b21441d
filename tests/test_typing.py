"""What a type checker makes of programs that use the packages (both ship
``py.typed``): documented calls are accepted, and names the packages do not
have are errors, as they are when the program runs.

Needs mypy: run by ``tox -e typing``, skipped elsewhere. Nothing here talks
to Redis.
"""

import os
import textwrap
from typing import Any

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is the typing environment's: tox -e typing")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mypy(source: str, tmp_path: Any, monkeypatch: Any) -> str:
    """mypy --strict's report on ``source``, checked against this checkout."""
    program = tmp_path / "program.py"
    program.write_text(textwrap.dedent(source))
    monkeypatch.setenv("MYPYPATH", ROOT)
    out, err, _ = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)])
    return str(out + err)


def test_a_reliable_worker_with_a_fixed_consumer_id_type_checks(tmp_path: Any, monkeypatch: Any) -> None:
    # README, Reliable delivery: "A worker restarted under a fixed consumer_id".
    report = mypy("""
        from hotqueue import HotQueue

        queue = HotQueue("jobs")

        @queue.worker(reliable=True, max_attempts=3, heartbeat_ttl=10, timeout=0.5, consumer_id="worker-1")
        def handle(job: str) -> None:
            print(job)
        """, tmp_path, monkeypatch)
    assert "Success" in report, report


@pytest.mark.parametrize("use", ["resp.Clinet()", "resp.ConectionError", "hotqueue.HotQeue('q')",
                                 "hotqueue.key_for_nam('q')"])
def test_a_name_the_package_does_not_have_is_a_type_error(use: str, tmp_path: Any, monkeypatch: Any) -> None:
    # Each raises AttributeError when run; the lazily loaded names
    # (resp.ClusterClient, hotqueue.ReliableUnsupportedError …) stay typed.
    report = mypy(f"""
        import hotqueue
        import resp

        print({use})
        cluster: resp.ClusterClient = resp.ClusterClient(["127.0.0.1:7000"])
        error: type = hotqueue.ReliableUnsupportedError
        """, tmp_path, monkeypatch)
    assert "has no attribute" in report and "Found 1 error" in report, report
