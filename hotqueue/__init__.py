"""HotQueue: use Redis as a FIFO message queue from Python, with no dependency
beyond the standard library (it speaks to Redis through the bundled ``resp``).

>>> from hotqueue import HotQueue
>>> queue = HotQueue("myqueue", host="localhost", port=6379, db=0)   # doctest: +SKIP
"""

import sys


def _located_by_python_m() -> bool:
    # Whether Python is finding ``python -m hotqueue``: runpy imports this
    # package before the command line's module (sys.argv[0] is "-m" then).
    if sys.argv[:1] != ["-m"]:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_run_module_as_main" and frame.f_globals.get("__name__") == "runpy":
            return frame.f_locals.get("mod_name") == "hotqueue"
        frame = frame.f_back  # type: ignore[assignment]
    return False


if _located_by_python_m():
    # A Ctrl-C before the command line sets its own handlers exits 130
    # quietly, as later, not with a traceback; one ignored stays ignored.
    import signal

    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
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
