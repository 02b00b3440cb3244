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
    """FIFO of rows waiting to be trained on as whole groups."""

    def __init__(self, max_fraction: float = 0.5):
        self._rows: deque[dict[str, Any]] = deque()
        self.max_fraction = max_fraction
        """At most this share of a generation batch's groups is taken from the queue."""

    def put(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows; each becomes one whole group."""
        self._rows.extend(rows)

    def pop(self, k: int) -> list[dict[str, Any]]:
        return [self._rows.popleft() for _ in range(min(k, len(self._rows)))]

    def __len__(self) -> int:
        return len(self._rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self._rows), "max_fraction": self.max_fraction}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rows = deque(state.get("rows", []))
        self.max_fraction = state.get("max_fraction", self.max_fraction)


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
