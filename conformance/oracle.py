"""The original HotQueue 0.2.8, in a virtualenv of its own, driven from the tests.

``oracle_python()`` makes (once, then reuses) a virtualenv holding ``redis``
(the same version as this env's) and ``hotqueue==0.2.8`` from PyPI, and returns
its interpreter. ``Driver`` runs ``hotqueue_driver.py`` under an interpreter and
talks to it; ``RemoteQueue`` wraps a driver in HotQueue's own API so a test can
be written once and run against either implementation.
"""

import json
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, Iterator, List

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DRIVER = os.path.join(HERE, "hotqueue_driver.py")
ORIGINAL = "hotqueue==0.2.8"


def _redis_requirement() -> str:
    try:
        from importlib.metadata import version

        return f"redis=={version('redis')}"
    except Exception:
        return "redis"


def oracle_dir() -> str:
    """Where the oracle virtualenv lives: inside this env when it is one (so
    ``tox -r`` rebuilds it), else in the temporary directory."""
    if sys.prefix != getattr(sys, "base_prefix", sys.prefix):
        return os.path.join(sys.prefix, "hotqueue-0.2.8-oracle")
    return os.path.join(tempfile.gettempdir(), "hotqueue-0.2.8-oracle-py%d%d" % sys.version_info[:2])


def oracle_python() -> str:
    """The interpreter of the oracle virtualenv, made on first use.

    :raises RuntimeError: the virtualenv or the install failed (with pip's output).
    """
    venv = oracle_dir()
    python = os.path.join(venv, "bin", "python")
    requirements = [_redis_requirement(), ORIGINAL]
    stamp = os.path.join(venv, "oracle-requirements.txt")
    wanted = "\n".join(requirements) + "\n"
    try:
        with open(stamp) as file:
            if file.read() == wanted and os.access(python, os.X_OK):
                return python
    except OSError:
        pass
    for command in (
        [sys.executable, "-m", "venv", "--clear", venv],
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
    ):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    with open(stamp, "w") as file:
        file.write(wanted)
    return python


class RemoteError(Exception):
    """An exception raised inside a driver; ``type`` and ``mro`` name its class."""

    def __init__(self, type: str, mro: List[str], message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.mro = mro
        self.message = message


def encode(value: Any) -> Any:
    """Tag a value for the driver (same scheme as ``hotqueue_driver.encode``)."""
    import base64

    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"$t": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$d": [[encode(k), encode(v)] for k, v in value.items()]}
    return value


def decode(value: Any) -> Any:
    """Untag a value from the driver."""
    import base64

    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if "$b" in value:
            return base64.b64decode(value["$b"])
        if "$t" in value:
            return tuple(decode(v) for v in value["$t"])
        return {decode(k): decode(v) for k, v in value["$d"]}
    return value


class Driver:
    """One ``hotqueue_driver.py`` process holding one queue.

    :param python: the interpreter; the oracle's runs HotQueue 0.2.8, this
        env's own runs this project (``ROOT`` is put on its path).
    """

    def __init__(self, python: str, name: Any, port: int, serializer: str = "pickle",
                 host: str = "127.0.0.1", **options: Any) -> None:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if python == sys.executable:
            env["PYTHONPATH"] = ROOT
        config = {"name": encode(name), "serializer": serializer, "host": host, "port": port, **options}
        # cwd is the driver's folder: nothing named hotqueue is importable from there.
        self.process = subprocess.Popen(
            [python, DRIVER, json.dumps(config)], cwd=HERE, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        hello = self._read()
        self.version: str = hello["version"]
        self.file: str = hello["file"]

    def _read(self) -> Dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            assert self.process.stderr is not None
            raise RuntimeError(f"driver exited ({self.process.returncode}): {self.process.stderr.read()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, op: str, **request: Any) -> None:
        """Send one request without waiting for its answer (see ``answer``)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self.process.stdin.flush()

    def answer(self) -> Any:
        """The next answer: the value, or ``RemoteError`` raised."""
        reply = self._read()
        if "error" in reply:
            raise RemoteError(**reply["error"])
        return decode(reply["ok"])

    def call(self, op: str, **request: Any) -> Any:
        """Send a request and return its answer."""
        self.send(op, **request)
        return self.answer()

    def close(self) -> None:
        """End the driver (closing its stdin ends its loop)."""
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


class RemoteQueue:
    """HotQueue's API on a queue living in a driver process.

    Exceptions from the driver come back as ``RemoteError``. ``serializer``
    can be set to ``"pickle"``, ``"json"``, ``"none"`` or ``"dummy"``.
    """

    def __init__(self, driver: Driver, name: str) -> None:
        self._driver = driver
        self.name = name
        self._serializer = "pickle"

    @property
    def key(self) -> str:
        return self._driver.call("key")  # type: ignore[no-any-return]

    @property
    def serializer(self) -> str:
        return self._serializer

    @serializer.setter
    def serializer(self, name: str) -> None:
        self._driver.call("set_serializer", serializer=name)
        self._serializer = name

    def __len__(self) -> int:
        return self._driver.call("len")  # type: ignore[no-any-return]

    def clear(self) -> None:
        self._driver.call("clear")

    def put(self, *msgs: Any) -> None:
        self._driver.call("put", msgs=encode(list(msgs)))

    def get(self, **kwargs: Any) -> Any:
        return self._driver.call("get", kwargs=kwargs)

    def consume(self, **kwargs: Any) -> Iterator[Any]:
        """Consumes remotely to the end, then yields what was received."""
        return iter(self._driver.call("consume", kwargs=kwargs))

    def worker(self, *args: Any, **kwargs: Any) -> Any:
        """The remote implementation's ``worker`` runs over the queue and collects
        the messages; the decorated function is then called on each, here."""
        def decorator(func: Callable[..., Any], style: str = "kwargs") -> Callable[..., None]:
            def wrapper(*call_args: Any) -> None:
                method = style if not call_args else "method"
                for msg in self._driver.call("worker", kwargs=kwargs, style=method):
                    func(*call_args, msg)
            return wrapper

        if args:
            return decorator(args[0], "bare")
        return decorator

