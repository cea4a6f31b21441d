"""Drive a HotQueue in its own process: JSON requests in, JSON answers out.

Run by the conformance tests with one of two interpreters, so the original
HotQueue 0.2.8 and this project's ``hotqueue`` (both import as ``hotqueue``)
never meet in one process:

- the oracle virtualenv's python (``redis`` + ``hotqueue==0.2.8`` from PyPI),
- the conformance env's own python, where ``hotqueue`` is this project.

Usage: ``python hotqueue_driver.py '{"name": "q", "serializer": "pickle",
"host": "127.0.0.1", "port": 1234}'``. It then prints one JSON line naming the
``hotqueue`` it imported and answers one request per stdin line with one JSON
line: ``{"ok": value}`` or ``{"error": {"type": ..., "mro": [...], "message": ...}}``.

Values cross the pipe tagged so that bytes, str, tuples and dicts survive:
``{"$b": base64}`` is bytes, ``{"$t": [...]}`` a tuple, ``{"$d": [[k, v], ...]}``
a dict; other JSON values stand for themselves. Standard library only, and
Python 3 code that also runs on the oracle's interpreter.
"""

import base64
import json
import pickle
import sys

import hotqueue
from hotqueue import HotQueue


class DummySerializer(object):
    """The 0.2.8 test suite's serializer: stores ``"foo"`` whatever it is given."""

    @staticmethod
    def dumps(s):
        return "foo"

    @staticmethod
    def loads(s):
        return s


SERIALIZERS = {"pickle": pickle, "json": json, "none": None, "dummy": DummySerializer}


def encode(value):
    """A Python value as tagged JSON (see the module docstring)."""
    if isinstance(value, (bytes, bytearray)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, tuple):
        return {"$t": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$d": [[encode(k), encode(v)] for k, v in value.items()]}
    return value


def decode(value):
    """The inverse of ``encode``."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if "$b" in value:
            return base64.b64decode(value["$b"])
        if "$t" in value:
            return tuple(decode(v) for v in value["$t"])
        return {decode(k): decode(v) for k, v in value["$d"]}
    return value


def handle(queue, request):
    """Run one request on ``queue`` and return its result (before encoding)."""
    op = request["op"]
    if op == "put":
        return queue.put(*decode(request["msgs"]))
    if op == "get":
        return queue.get(**request.get("kwargs", {}))
    if op == "consume":
        return list(queue.consume(**request.get("kwargs", {})))
    if op == "len":
        return len(queue)
    if op == "clear":
        return queue.clear()
    if op == "key":
        return queue.key
    if op == "attrs":
        serializer = queue.serializer
        return {"name": queue.name, "key": queue.key,
                "serializer": None if serializer is None else getattr(serializer, "__name__", repr(serializer))}
    if op == "set_serializer":
        queue.serializer = SERIALIZERS[request["serializer"]]
        return None
    if op == "worker":
        # Runs the implementation's own worker decorator: bare, with keyword
        # arguments, or on a method, as the 0.2.8 suite does.
        seen = []
        kwargs = request.get("kwargs", {})
        style = request.get("style", "kwargs")
        if style == "bare":
            @queue.worker
            def appender(msg):
                seen.append(msg)
            appender()
        elif style == "method":
            class MyClass(object):
                @queue.worker(**kwargs)
                def appender(self, msg):
                    seen.append(msg)
            MyClass().appender()
        else:
            @queue.worker(**kwargs)
            def appender(msg):
                seen.append(msg)
            appender()
        return seen
    raise ValueError("unknown op %r" % (op,))


def main():
    config = json.loads(sys.argv[1])
    options = {k: v for k, v in config.items() if k not in ("name", "serializer")}
    queue = HotQueue(decode(config["name"]), serializer=SERIALIZERS[config.get("serializer", "pickle")], **options)
    out = sys.stdout
    out.write(json.dumps({"version": hotqueue.__version__, "file": hotqueue.__file__}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = {"ok": encode(handle(queue, json.loads(line)))}
        except Exception as exc:  # every failure goes back to the test to judge
            answer = {"error": {
                "type": type(exc).__name__,
                "mro": [cls.__module__ + "." + cls.__name__ for cls in type(exc).__mro__],
                "message": str(exc),
            }}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
