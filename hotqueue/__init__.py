"""HotQueue: use Redis as a FIFO message queue from Python, with no dependency
beyond the standard library (it speaks to Redis through the bundled ``resp``).

>>> from hotqueue import HotQueue
>>> queue = HotQueue("myqueue", host="localhost", port=6379, db=0)   # doctest: +SKIP
"""

import sys

if sys.argv[:1] == ["-m"] and any(
    part == "-mhotqueue" or part == "-m" and sys.orig_argv[i + 1 : i + 2] == ["hotqueue"]
    for i, part in enumerate(getattr(sys, "orig_argv", ()))
):
    # Python is finding ``python -m hotqueue``, and imports this package
    # first: a Ctrl-C before the command line sets its own handlers exits 130
    # quietly, as later, not with a traceback (Python 3.10+: sys.orig_argv).
    import signal

    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(130))

from .queue import HotQueue, key_for_name  # noqa: E402

TYPE_CHECKING = False  # not typing's: importing typing would slow ``import hotqueue``
if TYPE_CHECKING:
    from .reliable import ReliableUnsupportedError

__version__ = "0.3.0"

__all__ = ["HotQueue", "key_for_name", "ReliableUnsupportedError", "__version__"]


if not TYPE_CHECKING:
    # Hidden from type checkers, which see the import above: a module
    # __getattr__ would make every other name, a misspelt one included,
    # type-check as an object.

    def __getattr__(name: str) -> object:
        # Reliable mode's module loads on first use: ``import hotqueue`` stays light.
        if name == "ReliableUnsupportedError":
            from .reliable import ReliableUnsupportedError

            return ReliableUnsupportedError
        raise AttributeError(f"module 'hotqueue' has no attribute {name!r}")
