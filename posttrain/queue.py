"""The prompt queue: later work (SPARK's recycler, curricula) adds whole groups of new prompts.

Each queued item is one dataset-like row (same keys as the data set's rows, plus e.g. ``task``);
:class:`posttrain.feed.PromptFeed` repeats it ``group_size`` times as one group of a later generation
batch, in addition to the data. Every process must hold the same queue (fill it from gathered data):
the feed composes the same global batch on each and each takes its slice.
"""

from __future__ import annotations

from collections import deque
from typing import Any


class GroupQueue:
    """FIFO of rows waiting to be trained on as whole groups.

    ``schedule`` decides how many groups of a batch come from the queue (:meth:`take_count`):
    ``interleave``: up to ``max_fraction`` of every batch; ``phase``: a whole batch once the queue
    holds one, alternating with normal batches (SPARK's auxiliary phase). Beyond ``capacity`` the
    oldest rows are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, max_fraction: float = 0.5, schedule: str = "interleave", capacity: int | None = None):
        if schedule not in ("interleave", "phase"):
            raise ValueError(f"schedule must be 'interleave' or 'phase', got {schedule!r}.")
        self._rows: deque[dict[str, Any]] = deque()
        self.max_fraction = max_fraction
        """``interleave``: at most this share of a generation batch's groups is taken from the queue."""
        self.schedule = schedule
        self.capacity = capacity
        self.dropped = 0
        """Rows dropped so far because the queue was full."""
        self._last_was_phase = False

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows; each becomes one whole group. The oldest are dropped beyond ``capacity``."""
        self._rows.extend(rows)
        while self.capacity is not None and len(self._rows) > self.capacity:
            self._rows.popleft()
            self.dropped += 1

    def pop(self, k: int) -> list[dict[str, Any]]:
        return [self._rows.popleft() for _ in range(min(k, len(self._rows)))]

    def take_count(self, n_groups: int) -> int:
        """How many of a batch's ``n_groups`` groups to replace with queued rows now."""
        if self.schedule == "phase":
            run = not self._last_was_phase and len(self._rows) >= n_groups
            self._last_was_phase = run
            return n_groups if run else 0
        if self.max_fraction <= 0 or not self._rows:
            return 0
        # At least one group whenever the queue is allowed a share, so a one-group batch still drains it.
        return min(len(self._rows), max(int(n_groups * self.max_fraction), 1))

    def __len__(self) -> int:
        return len(self._rows)

    def state_dict(self) -> dict[str, Any]:
        return {
            "rows": list(self._rows),
            "max_fraction": self.max_fraction,
            "dropped": self.dropped,
            "last_was_phase": self._last_was_phase,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rows = deque(state.get("rows", []))
        self.max_fraction = state.get("max_fraction", self.max_fraction)
        self.dropped = state.get("dropped", 0)
        self._last_was_phase = state.get("last_was_phase", False)
