"""Votes vs trained samples (``method.train_samples``, TTRL's 64 votes / 32 trained) on the tiny model.

pytest tests/test_vote_subset.py -q

Group rewards must see every vote; the update, the advantages and every later hook see only the
trained subset, with advantages recomputed over it.
"""

from __future__ import annotations

import pytest
import torch
from helpers_plugins import GroupRecorder
from test_trainer import B, G, make_trainer, train_logs

from posttrain.advantages import group_advantages, vote_subset
from posttrain.errors import ConfigError
from posttrain.rewards import RewardPlugin


def test_vote_subset_spreads_evenly_over_processes():
    # 2 groups of 4 on 2 processes (4 rows each): every process keeps 2 rows, every group 2 samples.
    keep = vote_subset(8, 4, 2).tolist()
    assert keep == [0, 2, 4, 6]
    assert [sum(0 <= i < 4 for i in keep), sum(4 <= i < 8 for i in keep)] == [2, 2]
    assert vote_subset(8, 4, 4).tolist() == list(range(8))
    with pytest.raises(ValueError):
        vote_subset(8, 4, 3)


def test_group_rewards_see_all_votes_and_the_update_sees_the_subset(tiny_model, math_jsonl, tmp_path):
    recorder = GroupRecorder()  # scores position-in-group / group_size: 0, .25, .5, .75
    seen: dict[str, list] = {"rows": [], "group_size": [], "advantages": [], "local_rows": []}

    def scored(batch):
        seen["rows"].append(len(batch.rows))
        seen["group_size"].append(batch.group_size)
        seen["advantages"].append(batch.advantages.clone())
        assert batch.extra["votes"].group_size == G
        assert len(batch.extra["votes"].rows) == B

    def mask_hook(output, batch):
        seen["local_rows"].append(output["completion_ids"].size(0))
        assert output["advantages"].shape == (B // 2,)
        return None

    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        [RewardPlugin(recorder, "rank")],
        tmp_path,
        train_samples=2,
        scored_hooks=[scored],
        loss_mask_hooks=[mask_hook],
    )
    trainer.train()
    assert [c["group_size"] for c in recorder.calls] == [G, G]
    assert all(len(c["completions"]) == B for c in recorder.calls)
    assert seen["rows"] == [B // 2, B // 2] and seen["group_size"] == [2, 2]
    assert seen["local_rows"] == [B // 2, B // 2]
    # Kept rows are positions 0 and 2 of each group: rewards 0 and .5, normalised within the pair.
    expected = group_advantages(torch.tensor([0.0, 0.5, 0.0, 0.5]), 2, "group")
    for adv in seen["advantages"]:
        assert torch.allclose(adv, expected, atol=1e-5)
    assert len(train_logs(trainer)) == 2


@pytest.mark.parametrize(
    ("train_samples", "extra", "match"),
    [
        (3, {}, "divide it"),
        (8, {}, "between 2 and num_generations"),
        (2, {"per_device_train_batch_size": 4, "num_generations": 4, "generation_batch_size": 8}, None),
        (2, {"multi_objective_aggregation": "normalize_then_sum"}, "sum_then_normalize"),
    ],
)
def test_bad_train_samples(tiny_model, math_jsonl, tmp_path, train_samples, extra, match):
    if match is None:  # per-device 4 with stride 2 is fine: the check is on divisibility
        make_trainer(
            tiny_model,
            math_jsonl,
            [RewardPlugin(GroupRecorder(), "rank")],
            tmp_path,
            train_samples=train_samples,
            **extra,
        )
        return
    with pytest.raises(ConfigError, match=match):
        make_trainer(
            tiny_model,
            math_jsonl,
            [RewardPlugin(GroupRecorder(), "rank")],
            tmp_path,
            train_samples=train_samples,
            **extra,
        )


def test_per_device_batch_must_hold_whole_trained_samples(tiny_model, math_jsonl, tmp_path):
    with pytest.raises(ConfigError, match="multiple of num_generations / train_samples"):
        make_trainer(
            tiny_model,
            math_jsonl,
            [RewardPlugin(GroupRecorder(), "rank")],
            tmp_path,
            train_samples=2,
            num_generations=8,
            per_device_train_batch_size=2,
            generation_batch_size=8,
        )
