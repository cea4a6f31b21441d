"""The layers, checked from the outside and from the source.

- ``import resp`` and ``import hotqueue`` load nothing outside the standard
  library, and ``resp`` never loads ``hotqueue``;
- ``resp/protocol.py`` imports no IO module;
- ``hotqueue`` uses only ``resp``'s public names.
"""

import ast
import json
import os
import subprocess
import sys
import sysconfig
from typing import Iterator, List, Optional, Set, Tuple

import pytest

import resp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESP_DIR = os.path.join(ROOT, "resp")
HOTQUEUE_DIR = os.path.join(ROOT, "hotqueue")

# Run in a fresh, isolated interpreter: what the import adds to sys.modules,
# with where each module came from. Site start-up (.pth files) happens before
# the snapshot, so only what the import itself loads is counted.
_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
before = set(sys.modules)
import {package}
loaded = {{}}
for name in sorted(set(sys.modules) - before):
    module = sys.modules[name]
    loaded[name] = getattr(module, "__file__", None)
print(json.dumps(loaded))
"""


def modules_loaded_by(package: str) -> dict:  # type: ignore[type-arg]
    result = subprocess.run(
        [sys.executable, "-I", "-c", _PROBE.format(root=ROOT, package=package)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _stdlib_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    return [os.path.realpath(paths[name]) for name in ("stdlib", "platstdlib")]


def is_stdlib(name: str, path: Optional[str]) -> bool:
    top = name.split(".", 1)[0]
    names = getattr(sys, "stdlib_module_names", None)
    if names is not None:  # Python 3.10+
        return top in names
    if path is None:  # built-in or frozen
        return True
    real = os.path.realpath(path)
    return any(real.startswith(d + os.sep) for d in _stdlib_dirs()) and "-packages" not in real


@pytest.mark.parametrize("package, own", [("resp", {"resp"}), ("hotqueue", {"hotqueue", "resp"})])
def test_import_loads_only_the_standard_library(package: str, own: Set[str]) -> None:
    loaded = modules_loaded_by(package)
    assert package in loaded  # the probe really imported it
    assert loaded[package].startswith(ROOT)  # ... from this tree
    foreign = {
        name: path for name, path in loaded.items()
        if name.split(".", 1)[0] not in own and not is_stdlib(name, path)
    }
    assert foreign == {}


def test_resp_never_loads_hotqueue() -> None:
    assert not [name for name in modules_loaded_by("resp") if name.split(".")[0] == "hotqueue"]


# Paid for only by the programs that use them: pickle by the first queue with
# the default serializer, logging by the first warning, ssl by TLS, urllib by
# URLs, threading by a bounded pool that fills up, functools by the first
# @queue.worker; ``from __future__`` is not used. Nor is socket's Python layer
# (connections are opened with its C module, _socket), which would bring enum
# and selectors.
NOT_LOADED_BY_IMPORT = {"pickle", "logging", "ssl", "urllib", "threading", "__future__",
                        "socket", "enum", "selectors", "functools", "weakref"}


@pytest.mark.parametrize("package", ["resp", "hotqueue"])
def test_import_leaves_out_what_only_some_programs_need(package: str) -> None:
    loaded = {name.split(".", 1)[0] for name in modules_loaded_by(package)}
    assert loaded & NOT_LOADED_BY_IMPORT == set()


def test_a_put_and_get_leave_out_the_idna_codec(redis_url: str) -> None:
    # An ASCII host name goes to getaddrinfo as bytes: the codec would bring
    # three modules (unicodedata's tables among them) to every program. Those
    # the interpreter has at start do not count (PyPy has unicodedata).
    probe = ("import sys; before = set(sys.modules); sys.path.insert(0, sys.argv[1]); import hotqueue\n"
             "queue = hotqueue.HotQueue('layering-idna', serializer=None, url=sys.argv[2])\n"
             "queue.put(b'x'); assert queue.get() == b'x'\n"
             "print(sorted(name for name in set(sys.modules) - before\n"
             "             if name.startswith(('encodings.idna', 'stringprep', 'unicodedata'))))")
    done = subprocess.run([sys.executable, "-I", "-c", probe, ROOT, redis_url],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_import_hotqueue_loads_at_most_40_modules() -> None:
    # The release's limit, counted as the benchmark counts (HotQueue 0.2.8 on
    # redis-py loads 239).
    assert len(modules_loaded_by("hotqueue")) <= 40


def test_the_stdlib_check_can_fail() -> None:
    # The same check flags a package that is not in the standard library.
    assert not is_stdlib("pytest", pytest.__file__)
    assert is_stdlib("json", json.__file__)


# -- from the source -------------------------------------------------------------


def python_files(directory: str) -> Iterator[str]:
    for base, _, files in os.walk(directory):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(base, name)


def parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as file:
        return ast.parse(file.read(), path)


def imported_modules(tree: ast.Module) -> Iterator[Tuple[str, int]]:
    """Every module name an import statement names, relative ones as '.x'."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or ""), node.lineno


def test_source_files_exist() -> None:
    assert os.path.join(RESP_DIR, "protocol.py") in set(python_files(RESP_DIR))
    assert os.path.join(HOTQUEUE_DIR, "queue.py") in set(python_files(HOTQUEUE_DIR))


def test_protocol_imports_no_io_module() -> None:
    forbidden = {"socket", "selectors", "select", "ssl", "time", "threading", "asyncio", "os"}
    tree = parse(os.path.join(RESP_DIR, "protocol.py"))
    found = [(name, line) for name, line in imported_modules(tree) if name.split(".")[0] in forbidden]
    assert found == []
    # Relative imports stay inside resp, and only to modules without IO.
    relative = {name for name, _ in imported_modules(tree) if name.startswith(".")}
    assert relative <= {".errors"}


def test_resp_source_never_imports_hotqueue() -> None:
    for path in python_files(RESP_DIR):
        for name, line in imported_modules(parse(path)):
            assert name.split(".")[0] != "hotqueue", f"{path}:{line} imports {name}"


def imported_at_run_time(tree: ast.Module) -> Set[str]:
    """The top-level modules a module imports when it is imported: not inside
    functions (imported on use) nor under ``if TYPE_CHECKING:``."""
    found: Set[str] = set()

    def visit(nodes: List[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, (ast.Try, ast.ClassDef, ast.With)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def test_import_hotqueue_leaves_typing_to_type_checkers() -> None:
    # typing (and re, which it imports) would cost ``import hotqueue`` about a
    # third of its time: annotations are strings, and typing is imported under
    # ``if TYPE_CHECKING:`` only, with TYPE_CHECKING = False.
    loaded = modules_loaded_by("hotqueue")
    importers = {
        name for name, path in loaded.items()
        if name.split(".")[0] in ("resp", "hotqueue") and "typing" in imported_at_run_time(parse(path))
    }
    assert importers == set()
    assert "typing" not in loaded


def test_the_run_time_import_check_can_fail() -> None:
    tree = ast.parse(
        "import os.path\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ssl\n"
        "else:\n    import json\ntry:\n    import re\nexcept ImportError:\n    import sre\n"
        "def f():\n    import pickle\n"
    )
    assert imported_at_run_time(tree) == {"os", "typing", "json", "re", "sre"}


def resp_names_used(tree: ast.Module) -> Iterator[Tuple[str, int]]:
    """Every name hotqueue takes from resp: ``resp.X`` (under any alias of the
    module) and ``from resp import X``. Importing a submodule is reported as
    its dotted name, which is never public."""
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "resp":
                    aliases.add(alias.asname or "resp")
                elif alias.name.startswith("resp."):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "resp":
                for alias in node.names:
                    yield alias.name, node.lineno
            elif node.module.startswith("resp."):
                yield node.module, node.lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield node.attr, node.lineno


def test_hotqueue_uses_only_public_resp_names() -> None:
    used = []
    for path in python_files(HOTQUEUE_DIR):
        for name, line in resp_names_used(parse(path)):
            used.append(name)
            assert name in resp.__all__, f"{path}:{line} uses resp.{name}, not in resp.__all__"
    assert "Client" in used  # the check saw hotqueue's use of resp at all


def test_resp_public_names_exist() -> None:
    for name in resp.__all__:
        assert hasattr(resp, name), name


def test_the_public_name_check_can_fail() -> None:
    tree = ast.parse("import resp\nimport resp.client\nfrom resp.pool import Pool\nresp.client.Client\n")
    names = sorted(name for name, _ in resp_names_used(tree))
    assert names == ["client", "resp.client", "resp.pool"]
