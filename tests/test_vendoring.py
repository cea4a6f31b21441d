"""Copying ``hotqueue/`` and ``resp/`` into another project is supported.

The copies go into a temporary tree beside a small program, which is run with
``python -I`` (no environment variables, no user site-packages) from that
tree; it must import the copies — not this checkout or an installed
``hotqueue`` — and put and get through a real server.
"""

import os
import shutil
import subprocess
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROGRAM = """
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "vendor"))   # how a project puts its vendored code first

import hotqueue, resp
from hotqueue import HotQueue

for module in (hotqueue, resp):
    assert module.__file__.startswith(os.path.join(here, "vendor")), module.__file__
queue = HotQueue(sys.argv[2], url=sys.argv[1])
queue.put("it works", 42)
print(queue.get(), queue.get(), len(queue))
"""


def test_vendored_copy_runs_isolated(tmp_path: Any, redis_url: str, key: str) -> None:
    vendor = tmp_path / "app" / "vendor"
    for package in ("hotqueue", "resp"):
        shutil.copytree(os.path.join(ROOT, package), vendor / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    program = tmp_path / "app" / "main.py"
    program.write_text(PROGRAM)
    result = subprocess.run([sys.executable, "-I", str(program), redis_url, key], cwd=str(tmp_path / "app"),
                            capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "it works 42 0\n"


def test_vendored_command_line(tmp_path: Any, redis_url: str, key: str) -> None:
    for package in ("hotqueue", "resp"):
        shutil.copytree(os.path.join(ROOT, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # python -m runs from the current directory, which -I leaves off sys.path:
    # the copies are found through the directory given with -c's sys.path edit.
    code = ("import sys, runpy; sys.path.insert(0, '.'); sys.argv = ['hotqueue'] + sys.argv[1:]; "
            "runpy.run_module('hotqueue', run_name='__main__')")
    run = [sys.executable, "-I", "-c", code, "--url", redis_url]
    put = subprocess.run(run + ["put", key, "hello"], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=60)
    assert put.returncode == 0, put.stderr
    get = subprocess.run(run + ["get", key], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=60)
    assert (get.returncode, get.stdout, get.stderr) == (0, "hello\n", "")
