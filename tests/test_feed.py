"""Tests for the prompt queue and the feed (posttrain/queue.py, posttrain/feed.py): recycled groups come in
addition to the data, and no data prompt is skipped, in both schedules.

pytest tests/test_feed.py -q
"""

from __future__ import annotations

import pytest
from datasets import Dataset

from posttrain.feed import PlaceholderLoader, PromptFeed
from posttrain.queue import GroupQueue

G = 4


def _data(n: int) -> Dataset:
    return Dataset.from_list([{"prompt": f"p{i}", "answer": str(i)} for i in range(n)])


def _queued(*names: str) -> list[dict]:
    return [{"prompt": name, "answer": None, "task": name} for name in names]


def _run(feed: PromptFeed, n_batches: int, n_groups: int, refill: int) -> list[list[dict]]:
    """Compose ``n_batches`` batches, putting ``refill`` recycled rows in the queue after each (as SPARK's
    recycler does after scoring a batch)."""
    batches = []
    for b in range(n_batches):
        rows, _ = feed.next_batch(n_groups)
        batches.append(rows)
        feed.queue.put(_queued(*(f"q{b}.{i}" for i in range(refill))))
    return batches


def _data_prompts(batches: list[list[dict]]) -> list[str]:
    return [row["prompt"] for rows in batches for row in rows[::G] if row.get("task") is None]


@pytest.mark.parametrize(
    "schedule, fraction",
    [
        ("phase", 0.5),  # SPARK's auxiliary phase: whole recycled batches between data batches
        ("interleave", 0.5),  # half of every batch recycled once the queue has rows
        ("interleave", 1.0),  # as much of every batch as the queue holds
    ],
)
def test_every_data_prompt_is_generated_once_per_pass(schedule, fraction):
    n, n_groups = 10, 4
    feed = PromptFeed(_data(n), GroupQueue(fraction, schedule), G, seed=3)
    batches = _run(feed, 12, n_groups, refill=4)
    prompts = _data_prompts(batches)
    recycled = sum(row.get("task") is not None for rows in batches for row in rows[::G])
    assert recycled > 0  # the queue took part
    assert len(prompts) == 12 * n_groups - recycled  # nothing dropped: every non-recycled group is data
    # Pass by pass, each data prompt exactly once, in the feed's permutation of the pass.
    for p in range(len(prompts) // n):
        assert sorted(prompts[p * n : (p + 1) * n]) == sorted(f"p{i}" for i in range(n))
    assert prompts[:n] != [f"p{i}" for i in range(n)]  # shuffled...
    assert prompts[n : 2 * n] != prompts[:n]  # ...with a new permutation each pass


def test_phase_batches_are_whole_and_alternate_with_data():
    feed = PromptFeed(_data(8), GroupQueue(schedule="phase"), G, seed=0)
    kinds = []
    for _ in range(6):
        rows, recycled = feed.next_batch(2)
        kinds.append(recycled)
        feed.queue.put(_queued("a", "b"))
    # The first batch fills the queue; from then on data and recycled batches alternate.
    assert kinds == [0, 2, 0, 2, 0, 2]


def test_groups_are_whole_keys_uniform_and_rows_copied():
    queue = GroupQueue(0.5)
    feed = PromptFeed(_data(6), queue, G, shuffle=False)
    queue.put(_queued("q0"))
    rows, recycled = feed.next_batch(2)
    assert recycled == 1
    assert [r["prompt"] for r in rows] == ["p0"] * G + ["q0"] * G  # recycled groups last
    assert all(list(r) == ["prompt", "answer", "task"] for r in rows)  # data rows get `task: None`
    rows[0]["prompt"] = "changed"
    assert rows[1]["prompt"] == "p0"  # each row is its own dict


def test_every_process_slices_the_same_global_batch():
    """Two processes build the feed from the same state: the global batches agree, so each rank's slice
    holds its part of every group, including a group split across the two ranks."""
    feeds = [PromptFeed(_data(9), GroupQueue(0.5), G, seed=1) for _ in range(2)]
    for step in range(5):
        global_rows = [f.next_batch(3)[0] for f in feeds]
        assert global_rows[0] == global_rows[1]
        for f in feeds:
            f.queue.put(_queued(f"q{step}"))
        # 3 groups of 4 over 2 x 6 rows: group 1 is rows 4-7, split over rank 0 (4, 5) and rank 1 (6, 7).
        rank0, rank1 = global_rows[0][:6], global_rows[0][6:]
        assert rank0[4]["prompt"] == rank1[0]["prompt"]


def test_a_batch_may_straddle_two_passes():
    feed = PromptFeed(_data(3), GroupQueue(0.5), G, shuffle=False)
    rows, _ = feed.next_batch(2)
    rows, _ = feed.next_batch(2)  # p2, then p0 of the second pass
    assert [r["prompt"] for r in rows[::G]] == ["p2", "p0"]
    assert feed.pass_index == 1 and feed.position == 1


def test_state_round_trip_continues_the_same_stream():
    queue = GroupQueue(0.5)
    feed = PromptFeed(_data(7), queue, G, seed=5)
    for _ in range(3):
        feed.next_batch(2)
    restored = PromptFeed(_data(7), GroupQueue(0.5), G, seed=0)
    restored.load_state_dict(feed.state_dict())
    for _ in range(4):
        assert restored.next_batch(2)[0] == feed.next_batch(2)[0]
    assert restored.recycled_steps == feed.recycled_steps


def test_recycled_steps_count_the_recycled_share():
    queue = GroupQueue(0.5)
    feed = PromptFeed(_data(8), queue, G)
    queue.put(_queued("a", "b", "c"))
    feed.next_batch(4, steps_per_batch=2.0)  # 2 of 4 groups recycled, the batch feeds 2 optimizer steps
    assert feed.recycled_steps == 1.0


def test_placeholder_loader_counts_and_skips():
    loader = PlaceholderLoader(5, _data(2))
    assert len(loader) == 5 and len(list(loader)) == 5
    assert len(list(loader.skipping(3))) == 2


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
