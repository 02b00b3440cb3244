"""One process at a time around building a cache entry (a GGUF conversion, a BM25 index).

    with exclusive(cache / "entry.lock", "building the index"):
        ...  # check again whether another process built it while this one waited, else build it

The ranks of one launch start together and would otherwise all build the same entry. The lock is
``filelock``'s (flock on POSIX, msvcrt on Windows); the entries themselves appear by an atomic rename,
so a reader never needs the lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: str | Path, waiting_for: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path``; log once if another process holds it."""
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("Waiting for another process to finish %s (lock %s) ...", waiting_for, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
