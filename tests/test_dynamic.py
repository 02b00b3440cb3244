"""Tests for DAPO's dynamic sampling (posttrain/dynamic.py): the plan on hand-built signals, the merge,
and the trainer on a tiny model (uniform groups never reach the loss, ``max_rounds`` bounds generation).

pytest tests/test_dynamic.py -q

The two-process test (identical decisions on every process) is in tests/test_distributed.py.
"""

from __future__ import annotations

import re

import pytest
import torch
from helpers_plugins import always_one, uniform_when_even
from test_trainer import G, make_trainer, train_logs

from posttrain.config import load_recipe
from posttrain.dynamic import (
    DynamicSampling,
    group_signal,
    local_rows,
    merge_rounds,
    plan_slots,
    slot_bins,
)
from posttrain.errors import ConfigError
from posttrain.rewards import RewardPlugin

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# The pure parts
# --------------------------------------------------------------------------------------------------


def test_a_group_has_signal_when_one_of_its_rows_has_an_advantage():
    # mixed | all zero | one row moves | token-level (an importance-corrected batch)
    advantages = torch.tensor([0.5, -0.5, 0.5, -0.5, 0, 0, 0, 0, 0, 0, 1e-3, 0])
    assert group_signal(advantages, 4) == [True, False, True]
    assert group_signal(torch.tensor([1e-9, -1e-9]), 2) == [False]  # round-off of equal rewards
    tokens = torch.tensor([[0.0, 0.0], [0.0, 0.2], [0.0, 0.0], [0.0, 0.0]])
    assert group_signal(tokens, 2) == [True, False]


def test_slot_bins_whole_groups_share_a_process_split_groups_keep_their_place():
    assert slot_bins(4, 4, 1) == [[0, 1, 2, 3]]
    assert slot_bins(4, 4, 2) == [[0, 1], [2, 3]]  # 8 rows per process: whole groups
    assert slot_bins(3, 4, 2) == [[0], [1], [2]]  # 6 rows per process: group 1 is split


def test_plan_fills_slots_in_generation_order_and_drops_the_rest():
    signals = [[False, True, False, False], [True, True, False, True], [True, True, True, True]]
    # One bin: slot 0 <- (0,1), slot 1 <- (1,0), slot 2 <- (1,1), slot 3 <- (1,3); round 2 is surplus.
    assert plan_slots(signals, [[0, 1, 2, 3]]) == [(0, 1), (1, 0), (1, 1), (1, 3)]
    # Per process: slots 0-1 draw on groups 0-1 only, slots 2-3 on groups 2-3 only.
    assert plan_slots(signals, [[0, 1], [2, 3]]) == [(0, 1), (1, 0), (1, 3), (2, 2)]
    # Aligned: each slot takes the first round where its own position had signal.
    assert plan_slots(signals, [[0], [1], [2], [3]]) == [(1, 0), (0, 1), (2, 2), (1, 3)]
    # Not enough signal: empty slots stay None.
    assert plan_slots([[False, True], [False, False]], [[0, 1]]) == [(0, 1), None]


def test_local_rows_of_a_group_split_over_processes():
    # 3 groups of 4 on 2 processes, 6 rows each: rank 0 holds A A A A B B, rank 1 B B C C C C.
    assert local_rows(0, 4, 6, 0) == [0, 1, 2, 3] and local_rows(0, 4, 6, 1) == []
    assert local_rows(1, 4, 6, 0) == [4, 5] and local_rows(1, 4, 6, 1) == [0, 1]
    assert local_rows(2, 4, 6, 1) == [2, 3, 4, 5]


def test_merge_pads_prompts_left_and_completions_right():
    a = {
        "prompt_ids": torch.tensor([[7, 8], [7, 9]]),
        "completion_ids": torch.tensor([[1], [2]]),
        "advantages": torch.tensor([0.5, -0.5]),
        "num_items_in_batch": torch.tensor(2),
    }
    b = {
        "prompt_ids": torch.tensor([[5, 6, 7], [5, 6, 8]]),
        "completion_ids": torch.tensor([[3, 4], [5, 6]]),
        "advantages": torch.tensor([1.0, -1.0]),
        "num_items_in_batch": torch.tensor(4),
    }
    merged = merge_rounds([a, b], [(1, 0), (0, 1)], {"prompt_ids": 0, "completion_ids": 0})
    assert merged["prompt_ids"].tolist() == [[5, 6, 7], [0, 7, 9]]
    assert merged["completion_ids"].tolist() == [[3, 4], [2, 0]]
    assert merged["advantages"].tolist() == [1.0, -0.5]
    assert "num_items_in_batch" not in merged  # recounted by the sampler
    with pytest.raises(ConfigError, match="pixel_values"):
        merge_rounds([{**a, "pixel_values": torch.zeros(5, 3)}], [(0, 0)], {})


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, phrase",
    [
        ({"enabled": True, "max_rounds": 0}, "max_rounds must be an integer >= 1"),
        ({"max_rounds": 2.5}, "max_rounds must be an integer >= 1"),
        ({"enabled": "yes"}, "enabled must be true or false"),
        ({"enable": True}, "Unknown key(s) ['enable']"),
        ("on", "must be a mapping"),
    ],
)
def test_bad_settings_name_the_problem(value, phrase):
    with pytest.raises(ConfigError) as err:
        DynamicSampling.from_value(value)
    assert phrase in str(err.value)


def _recipe(tmp_path, *flags):
    path = tmp_path / "r.yaml"
    path.write_text("data: {generator: chain_sum, size: 20}\n")
    return load_recipe(path, list(flags))


def test_dapo_turns_it_on_the_others_do_not_and_flags_reach_it(tmp_path):
    assert _recipe(tmp_path, "--method", "dapo").method.dynamic_sampling.enabled is True
    assert not _recipe(tmp_path, "--method", "grpo").method.dynamic_sampling.enabled
    off = _recipe(tmp_path, "--method", "dapo", "--method.dynamic_sampling.enabled", "false")
    assert off.method.dynamic_sampling.enabled is False
    on = _recipe(
        tmp_path, "--method.dynamic_sampling.enabled", "true", "--method.dynamic_sampling.max_rounds", "2"
    )
    assert on.method.dynamic_sampling == DynamicSampling(enabled=True, max_rounds=2)


# --------------------------------------------------------------------------------------------------
# In the trainer
# --------------------------------------------------------------------------------------------------


def _train(tiny_model, math_jsonl, out, reward, **kwargs):
    """Train the tiny model with one reward; returns the trainer and every batch the loss saw."""
    trainer = make_trainer(tiny_model, math_jsonl, [RewardPlugin(reward, reward.__name__)], out, **kwargs)
    outputs, inner = [], trainer._generate_and_score_completions

    def capture(inputs):
        outputs.append(inner(inputs))
        return outputs[-1]

    trainer._generate_and_score_completions = capture
    trainer.train()
    return trainer, outputs


def _answer_of(tokenizer, prompt_ids) -> int:
    a, b = re.search(r"What is (\d)\+(\d)", tokenizer.decode(prompt_ids, skip_special_tokens=True)).groups()
    return int(a) + int(b)


@pytest.mark.parametrize("train_samples", [None, 2])  # 2: TTRL's split, 2 of each 4 samples trained
def test_uniform_groups_never_reach_the_loss(tiny_model, math_jsonl, tmp_path, train_samples):
    trainer, outputs = _train(
        tiny_model,
        math_jsonl,
        tmp_path,
        uniform_when_even,
        max_steps=3,
        train_samples=train_samples,
        dynamic_sampling={"enabled": True, "max_rounds": 4},
    )
    per_group = train_samples or G
    trained = 0
    for out in outputs:
        mask = out["completion_mask"] * out.get("tool_mask", torch.ones_like(out["completion_mask"]))
        assert len(mask) == 2 * per_group  # the batch keeps its shape
        for g in range(2):
            rows = slice(g * per_group, (g + 1) * per_group)
            if mask[rows].sum() == 0:
                continue  # an empty slot, masked out
            trained += 1
            assert _answer_of(trainer.processing_class, out["prompt_ids"][g * per_group]) % 2 == 1
            assert out["advantages"][rows].abs().sum() > 0
        assert out["num_items_in_batch"] == mask.sum()
    assert trained > 0
    logs = train_logs(trainer)
    assert all(e["dynamic/kept_groups"] + e["dynamic/unfilled_groups"] == 2 for e in logs)
    assert sum(e["dynamic/dropped_groups"] for e in logs) > 0  # the even questions came and went
    assert trainer.feed.batches == sum(e["dynamic/rounds"] for e in logs)  # every round drew new prompts


@pytest.mark.parametrize("max_rounds", [1, 3])
def test_max_rounds_bounds_the_extra_generation(tiny_model, math_jsonl, tmp_path, max_rounds):
    trainer, outputs = _train(
        tiny_model,
        math_jsonl,
        tmp_path,
        always_one,
        max_steps=2,
        beta=0.0,
        dynamic_sampling={"enabled": True, "max_rounds": max_rounds},
    )
    logs = train_logs(trainer)
    assert [e["dynamic/rounds"] for e in logs] == [max_rounds, max_rounds]
    assert trainer.feed.batches == 2 * max_rounds  # prompts consumed, never more than max_rounds batches
    assert all(e["dynamic/unfilled_groups"] == 2 and e["dynamic/kept_groups"] == 0 for e in logs)
    assert all(
        out["tool_mask"].sum() == 0 and out["num_items_in_batch"] == 0 for out in outputs
    )  # nothing uniform is trained
    assert trainer.gate.skipped_steps == 2  # and no step moves the weights


def test_off_is_the_plain_trainer(tiny_model, math_jsonl, tmp_path):
    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(uniform_when_even, "even")], tmp_path, max_steps=1
    )
    trainer.train()
    assert trainer.dynamic is None and trainer.feed is None
    assert "dynamic/rounds" not in train_logs(trainer)[0]


def test_the_data_order_is_reproducible(tiny_model, math_jsonl, tmp_path):
    def prompts(run: str) -> list:
        _, outputs = _train(
            tiny_model, math_jsonl, tmp_path / run, uniform_when_even, max_steps=2, dynamic_sampling=True
        )
        return [out["prompt_ids"].tolist() for out in outputs]

    assert prompts("a") == prompts("b")


def test_without_max_steps_it_says_so_at_start(tiny_model, math_jsonl, tmp_path):
    with pytest.raises(ConfigError, match=r"set trainer.max_steps.*dynamic_sampling.enabled false"):
        make_trainer(
            tiny_model,
            math_jsonl,
            [RewardPlugin(uniform_when_even, "even")],
            tmp_path,
            max_steps=-1,
            num_train_epochs=1,
            dynamic_sampling=True,
        )
