"""Tests for the prompt queue (posttrain/queue.py): injecting whole groups, on 1 and 2 processes.

pytest tests/test_queue.py -q
"""

from __future__ import annotations

import pytest

from posttrain.queue import GroupQueue, inject_groups


def _batch(n_groups: int, group_size: int) -> list[dict]:
    """A global batch as TRL lays it out: ``group_size`` consecutive copies of each prompt's row."""
    return [{"prompt": f"p{g}", "answer": str(g)} for g in range(n_groups) for _ in range(group_size)]


def _queued(*names: str) -> list[dict]:
    return [{"prompt": name, "answer": None, "task": name} for name in names]


def _inject_all_ranks(rows, queued, num_processes, group_size):
    """Run ``inject_groups`` on every rank's slice and concatenate (what a gather would see)."""
    n_local = len(rows) // num_processes
    out = []
    for rank in range(num_processes):
        local = rows[rank * n_local : (rank + 1) * n_local]
        out += inject_groups(local, queued, rank, num_processes, group_size)
    return out


@pytest.mark.parametrize(
    "n_groups, group_size, num_processes, queued, expected",
    [
        # One process, one of two groups replaced: the last one.
        (2, 4, 1, ["q0"], ["p0"] * 4 + ["q0"] * 4),
        # One process, two of three groups replaced, in queue order.
        (3, 2, 1, ["q0", "q1"], ["p0"] * 2 + ["q0"] * 2 + ["q1"] * 2),
        # Two processes, groups aligned with ranks: rank 1's group is replaced, rank 0 is untouched.
        (2, 4, 2, ["q0"], ["p0"] * 4 + ["q0"] * 4),
        # Two processes, 3 groups of 4 over 2 x 6 rows: group 1 spans both ranks and is replaced on both.
        (3, 4, 2, ["q0", "q1"], ["p0"] * 4 + ["q0"] * 4 + ["q1"] * 4),
        # Every group replaced.
        (2, 3, 2, ["q0", "q1"], ["q0"] * 3 + ["q1"] * 3),
        # Nothing queued: the batch is unchanged.
        (2, 4, 2, [], ["p0"] * 4 + ["p1"] * 4),
    ],
)
def test_inject_groups_replaces_last_whole_groups(n_groups, group_size, num_processes, queued, expected):
    rows = _batch(n_groups, group_size)
    out = _inject_all_ranks(rows, _queued(*queued), num_processes, group_size)
    assert [row["prompt"] for row in out] == expected


def test_injected_rows_have_uniform_keys_on_every_rank():
    rows = _batch(3, 4)
    queued = _queued("q0")
    for rank in range(2):  # rank 0 receives no queued row, yet gets the `task` key too
        local = inject_groups(rows[rank * 6 : (rank + 1) * 6], queued, rank, 2, 4)
        assert all(list(row) == ["prompt", "answer", "task"] for row in local)
    out = _inject_all_ranks(rows, queued, 2, 4)
    assert [row["task"] for row in out] == [None] * 8 + ["q0"] * 4


def test_inject_groups_copies_rows():
    queued = _queued("q0")
    out = inject_groups(_batch(2, 2), queued, 0, 1, 2)
    out[-1]["task"] = "changed"
    assert queued[0]["task"] == "q0" and out[-2]["task"] == "q0"  # each row is its own dict


def test_inject_more_groups_than_the_batch_holds_is_an_error():
    with pytest.raises(ValueError, match="Cannot inject 3 groups into a batch of 2 groups"):
        inject_groups(_batch(2, 4), _queued("a", "b", "c"), 0, 1, 4)


def test_queue_is_fifo_and_pop_stops_at_empty():
    queue = GroupQueue()
    queue.put(_queued("a", "b"))
    queue.put(_queued("c"))
    assert len(queue) == 3
    assert [row["task"] for row in queue.pop(2)] == ["a", "b"]
    assert [row["task"] for row in queue.pop(5)] == ["c"]
    assert queue.pop(1) == [] and len(queue) == 0


def test_queue_state_dict_round_trip():
    queue = GroupQueue(max_fraction=0.25)
    queue.put(_queued("a", "b"))
    restored = GroupQueue()
    restored.load_state_dict(queue.state_dict())
    assert restored.max_fraction == 0.25
    assert [row["task"] for row in restored.pop(2)] == ["a", "b"]
    assert len(queue) == 2  # the state is a copy: draining the restored queue leaves the original
    # An old checkpoint without the queue's fields restores an empty queue with its own fraction.
    empty = GroupQueue(max_fraction=0.5)
    empty.load_state_dict({})
    assert len(empty) == 0 and empty.max_fraction == 0.5
