"""The majority watch of test-time RL (posttrain/methods/ttrl/lockin.py): flips and lock-in, label-free.

pytest tests/test_lockin.py -q
"""

from __future__ import annotations

import logging

import pytest
import torch

from posttrain.batch import ScoredBatch
from posttrain.methods.ttrl.lockin import MajorityWatch

G = 4


def batch(groups: dict[str, list[str]], truth: dict[str, str] | None = None) -> ScoredBatch:
    rows, completions = [], []
    for qid, answers in groups.items():
        row = {"id": qid, "question": qid, "answer": (truth or {}).get(qid)}
        rows += [row] * G
        completions += [f"so \\boxed{{{a}}}" if a else "no idea" for a in answers]
    return ScoredBatch(
        rows=rows,
        prompts=[None] * len(rows),
        completions=completions,
        completion_ids=[[0]] * len(rows),
        rewards_per_func=torch.zeros(len(rows), 1),
        reward_names=["ttrl_majority"],
        group_size=G,
        process_slice=slice(0, len(rows)),
        extra={},
    )


def run(watch: MajorityWatch, *batches: ScoredBatch) -> list[dict[str, float]]:
    logs = []
    for b in batches:
        logged: dict[str, float] = {}
        watch.log = logged.__setitem__
        watch(b)
        logs.append(logged)
    return logs


def test_flip_rate_counts_changed_majorities_among_revisited_questions():
    watch = MajorityWatch()
    first, second = run(
        watch,
        batch({"a": ["1", "1", "2", "3"], "b": ["5", "5", "5", "6"]}),
        batch({"a": ["2", "2", "1", "3"], "b": ["5", "5", "6", "6"], "c": ["7", "7", "7", "7"]}),
    )
    assert "ttrl/flip_rate" not in first and first["ttrl/revisited"] == 0
    assert second["ttrl/revisited"] == 2 and second["ttrl/flip_rate"] == pytest.approx(0.5)  # a flipped


def test_a_majority_that_repeats_with_a_low_share_locks_in_and_warns_once(caplog):
    watch = MajorityWatch(visits=3, max_share=0.5)
    low = {"a": ["1", "2", "3", "4"], "b": ["5", "5", "5", "5"]}  # a: 25% share; b: sure
    with caplog.at_level(logging.WARNING, logger="posttrain.methods.ttrl.lockin"):
        logs = run(watch, batch(low), batch(low), batch(low), batch(low))
    assert [log["ttrl/locked_in"] for log in logs] == [0.0, 0.0, 0.5, 0.5]
    warnings = [r for r in caplog.records if "lock-in" in r.getMessage()]
    assert len(warnings) == 1 and "question a" in warnings[0].getMessage()


def test_labels_only_add_a_diagnostic():
    low = {"a": ["1", "2", "3", "4"], "b": ["5", "6", "7", "8"]}
    plain = run(MajorityWatch(), *[batch(low)] * 3)
    labelled = run(MajorityWatch(), *[batch(low, truth={"a": "1", "b": "9"})] * 3)
    assert labelled[-1].pop("ttrl/locked_in_wrong") == pytest.approx(0.5)  # b's majority 5 is wrong
    assert plain == labelled


def test_no_answer_never_locks_in_and_recycled_rows_are_ignored():
    watch = MajorityWatch()
    blank = {"a": ["", "", "", ""]}
    logs = run(watch, *[batch(blank)] * 3)
    assert logs[-1]["ttrl/locked_in"] == 0.0
    recycled = batch({"r": ["1", "2", "3", "4"]})
    recycled.rows = [{**r, "task": "pointwise"} for r in recycled.rows]
    watch(recycled)
    assert "r" not in watch.history


def test_state_round_trips():
    watch = MajorityWatch()
    run(watch, batch({"a": ["1", "1", "2", "3"]}))
    other = MajorityWatch()
    other.load_state_dict(watch.state_dict())
    again = batch({"a": ["2", "2", "2", "3"]})
    assert run(watch, again) == run(other, again)
