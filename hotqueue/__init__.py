"""HotQueue: use Redis as a FIFO message queue from Python, with no dependency
beyond the standard library (it speaks to Redis through the bundled ``resp``).

>>> from hotqueue import HotQueue
>>> queue = HotQueue("myqueue", host="localhost", port=6379, db=0)   # doctest: +SKIP
"""

from .queue import HotQueue, key_for_name

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
