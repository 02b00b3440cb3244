"""Tests for the objective variants (posttrain/advantages.py) on numbers worked out by hand, and for
how they reach the loss of a real training step (tiny random model, 1 step each).

    pytest tests/test_advantages.py -q
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers_plugins import SeededRandom
from test_trainer import G, make_trainer

from posttrain.advantages import (
    check_weight,
    constant_loss_scale,
    group_advantages,
    sequence_sum_loss,
    weight_samples,
)
from posttrain.errors import DataError
from posttrain.methods.gui_g1 import SampleWeights
from posttrain.rewards import RewardPlugin
from posttrain.trainer import PosttrainTrainer, ScoredBatch

# rewards of two groups of two: [1, 0] and [3, 1]
REWARDS = torch.tensor([1.0, 0.0, 3.0, 1.0])
S1, S2 = math.sqrt(0.5), math.sqrt(2.0)  # Bessel std of [1, 0] and of [3, 1]
SB = math.sqrt(4.75 / 3)  # Bessel std of all four: mean 1.25, squared deviations sum to 4.75


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        ("none", [0.5, -0.5, 1.0, -1.0]),
        ("group", [0.5 / (S1 + 1e-4), -0.5 / (S1 + 1e-4), 1 / (S2 + 1e-4), -1 / (S2 + 1e-4)]),
        ("batch", [0.5 / (SB + 1e-4), -0.5 / (SB + 1e-4), 1 / (SB + 1e-4), -1 / (SB + 1e-4)]),
    ],
)
def test_group_advantages_by_hand(scale, expected):
    assert group_advantages(REWARDS, 2, scale).tolist() == pytest.approx(expected, abs=1e-6)


def test_group_advantages_unscorable_rows_are_left_out_and_get_zero():
    # Group 1 is [1, NaN]: its mean is 1, so the scorable row gets 0 and so does the NaN row.
    adv = group_advantages(torch.tensor([1.0, math.nan, 0.0, 2.0]), 2, "none")
    assert adv.tolist() == [0.0, 0.0, -1.0, 1.0]


def test_group_advantages_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        group_advantages(REWARDS, 2, "global")
    with pytest.raises(ValueError, match="multiple"):
        group_advantages(REWARDS, 3)


def test_weight_samples_by_hand():
    assert weight_samples(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])).tolist() == [0.5, -4.0]
    per_token = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # (B, T) advantages (importance-weighted)
    assert weight_samples(per_token, torch.tensor([0.0, 0.5])).tolist() == [[0.0, 0.0], [1.5, 2.0]]
    with pytest.raises(ValueError, match=">= 0"):
        weight_samples(torch.tensor([1.0]), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="weights must be"):
        weight_samples(torch.tensor([1.0, 2.0]), torch.tensor([1.0]))


def test_sequence_sum_loss_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # (1 + 2 + 4) / (2 sequences x 64): the shorter sequence is not up-weighted by 1/|o|.
    assert sequence_sum_loss(loss, mask, 64.0).item() == pytest.approx(7 / 128)
    assert constant_loss_scale(128, 64) == 2.0 and constant_loss_scale(24, 48) == 0.5
    with pytest.raises(ValueError):
        sequence_sum_loss(loss, mask, 0.0)


@pytest.mark.parametrize(("value", "expected"), [(None, 1.0), (0, 0.0), (2, 2.0), (0.25, 0.25)])
def test_check_weight(value, expected):
    assert check_weight(value, "r1", "w") == expected


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "2", True])
def test_bad_weight_names_the_row_and_column(value):
    with pytest.raises(DataError, match=r"Row 'r7'.*'w'"):
        check_weight(value, "r7", "w")


def test_sample_weights_transform_reads_the_column():
    batch = ScoredBatch(
        rows=[{"id": "a", "w": 2.0}, {"id": "b", "w": None}, {"id": "c"}],
        prompts=[],
        completions=[],
        completion_ids=[],
        rewards_per_func=torch.zeros(3, 1),
        reward_names=["r"],
        group_size=3,
        process_slice=slice(0, 3),
    )
    out = SampleWeights("w")(torch.tensor([1.0, 1.0, -1.0]), batch)
    assert out.tolist() == [2.0, 1.0, -1.0]


# --------------------------------------------------------------------------------------------------
# In a real step: TRL's advantages are group_advantages, and the loss sees the variants exactly
# --------------------------------------------------------------------------------------------------


class _CaptureLoss(PosttrainTrainer):
    """Keeps each micro-batch's inputs and the loss computed from them."""

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        self.seen = [*getattr(self, "seen", []), (inputs, loss.detach())]
        return loss


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_advantages_equal_group_advantages(tiny_model, math_jsonl, tmp_path, scale):
    scored: list[ScoredBatch] = []
    plugins = [RewardPlugin(SeededRandom(), "random", weight=0.5)]
    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        plugins,
        tmp_path,
        max_steps=1,
        scale_rewards=scale,
        scored_hooks=[scored.append],
    )
    trainer.train()
    (batch,) = scored
    rewards = batch.rewards_per_func[:, 0] * 0.5
    assert torch.allclose(batch.advantages, group_advantages(rewards, G, scale), atol=1e-6)


def _sequence_loss(inputs) -> torch.Tensor:
    """At the first micro-step the ratio pi/pi_old is exactly 1, so each token's loss is -A_i (beta = 0)."""
    adv = inputs["advantages"]
    adv = adv.unsqueeze(1) if adv.dim() == 1 else adv
    return -(adv * inputs["completion_mask"])


def test_loss_constant_is_sequence_sum_over_the_constant(tiny_model, math_jsonl, tmp_path):
    plugins = [RewardPlugin(SeededRandom(), "random")]
    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        plugins,
        tmp_path,
        cls=_CaptureLoss,
        max_steps=1,
        loss_type="dr_grpo",
        loss_constant=3.0,
    )
    trainer.train()
    ((inputs, loss),) = trainer.seen
    expected = sequence_sum_loss(_sequence_loss(inputs), torch.ones_like(inputs["completion_mask"]), 3.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert expected.abs() > 0  # random rewards: a non-trivial loss


def test_loss_constant_needs_dr_grpo(tiny_model, math_jsonl, tmp_path):
    with pytest.raises(ValueError, match="dr_grpo"):
        make_trainer(tiny_model, math_jsonl, [RewardPlugin(SeededRandom(), "r")], tmp_path, loss_constant=64)


def test_sample_weight_multiplies_each_sample_loss(tiny_model, tmp_path):
    data = tmp_path / "weighted.jsonl"
    rows = [{"question": f"What is {a}+1?", "answer": str(a + 1), "w": float(a % 3)} for a in range(12)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    before: list[torch.Tensor] = []
    scored: list[ScoredBatch] = []

    def record(advantages, batch):
        before.append(advantages.clone())
        return advantages

    trainer = make_trainer(
        tiny_model,
        str(data),
        [RewardPlugin(SeededRandom(), "random")],
        tmp_path / "out",
        cls=_CaptureLoss,
        data_kwargs={"keep_columns": ["w"]},
        max_steps=1,
        advantage_transforms=[record, SampleWeights("w")],
        scored_hooks=[scored.append],
    )
    trainer.train()
    ((inputs, loss),) = trainer.seen
    (batch,) = scored
    weights = torch.tensor(batch.column("w"))
    assert len(set(weights.tolist())) > 1
    assert torch.equal(batch.advantages, before[0] * weights)  # A_i -> w_i * A_i
    # What the loss used (one process; TRL shuffles the rows before splitting them into micro-batches).
    assert torch.equal(inputs["advantages"].sort().values, batch.advantages.sort().values)
    # loss_type grpo: each sequence's token mean of -w_i * A_i, then the batch mean.
    per_seq = _sequence_loss(inputs).sum(1) / inputs["completion_mask"].sum(1).clamp(min=1)
    assert loss.item() == pytest.approx(per_seq.mean().item(), rel=1e-5, abs=1e-7)
