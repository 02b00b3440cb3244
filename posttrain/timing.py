"""Named, timed phases of a training step (``gen``, ``reward``, ``adv``, ``update``, ...).

timer = PhaseTimer()
with timer("gen"):
    ...
timer.pop()  # {"time/gen": 1.23}
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager


class PhaseTimer:
    """Accumulates wall time per phase name until :meth:`pop` is called."""

    def __init__(self):
        self._totals: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._totals[name] += time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self._totals[name] += seconds

    def total(self, name: str) -> float:
        return self._totals.get(name, 0.0)

    def pop(self) -> dict[str, float]:
        out = {f"time/{k}": v for k, v in self._totals.items()}
        self._totals.clear()
        return out
