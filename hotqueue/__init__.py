"""HotQueue: use Redis as a FIFO message queue from Python, with no dependency
beyond the standard library (it speaks to Redis through the bundled ``resp``).

>>> from hotqueue import HotQueue
>>> queue = HotQueue("myqueue", host="localhost", port=6379, db=0)   # doctest: +SKIP
"""

from .queue import HotQueue, key_for_name

__version__ = "0.3.0"

__all__ = ["HotQueue", "key_for_name", "__version__"]
