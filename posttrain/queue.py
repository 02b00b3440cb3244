"""The prompt queue: later work (SPARK's recycler, curricula) injects whole groups of new prompts.

Each queued item is one dataset-like row (same keys as the data set's rows, plus e.g. ``task``);
the trainer repeats it ``group_size`` times and puts it in place of a whole group of the next
generation batch. Groups are laid out over processes like this (G = group size, 2 processes):

    global batch   | g0 g0 g0 g0 | g1 g1 g1 g1 | g2 g2 g2 g2 | g3 g3 g3 g3 |
    process        |<------- rank 0 -------->|<------- rank 1 -------->|
    inject k=1     |                                        | q0 q0 q0 q0 |

The last ``k`` groups of the *global* batch are replaced, so a group that spans two processes is
replaced on both; every process must hold the same queue (fill it from gathered data).
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


def inject_groups(
    local_rows: list[dict[str, Any]],
    queued: list[dict[str, Any]],
    process_index: int,
    num_processes: int,
    group_size: int,
) -> list[dict[str, Any]]:
    """Replace the last ``len(queued)`` groups of the global batch with the queued rows.

    ``local_rows`` is this process's slice (length B_local); the global batch is
    ``num_processes * B_local`` rows, ``group_size`` consecutive rows per prompt. Returns a new
    list of length B_local whose rows all share the same keys (missing keys filled with None).
    """
    if not queued:
        return local_rows
    n_local = len(local_rows)
    n_groups = n_local * num_processes // group_size
    first_injected = n_groups - len(queued)
    if first_injected < 0:
        raise ValueError(f"Cannot inject {len(queued)} groups into a batch of {n_groups} groups.")
    start = process_index * n_local
    out = []
    for i, row in enumerate(local_rows):
        group = (start + i) // group_size
        out.append(dict(queued[group - first_injected]) if group >= first_injected else row)
    keys: dict[str, None] = {}
    for row in (*local_rows, *queued):
        keys.update(dict.fromkeys(row))
    return [{k: row.get(k) for k in keys} for row in out]
