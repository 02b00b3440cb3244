"""Tests for the GRPO trainer and its hooks (posttrain/trainer.py) on a tiny random model.

pytest tests/test_trainer.py -q

Each test trains the tiny Llama from ``conftest.tiny_model`` for 1-3 steps on 12 one-digit sums
(8 completions per step: 2 prompts x 4 generations), well under a second per run on one CPU core.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers_plugins import (
    SEEN,
    Counter,
    GroupRecorder,
    SeededRandom,
    boom,
    group_boom,
    nan_reward,
    odd_answer_raises,
    short,
)
from trl import GRPOConfig

from posttrain.data import DataConfig, load_datasets
from posttrain.dynamic import DynamicSampling
from posttrain.errors import ConfigError, RewardError
from posttrain.models import ModelConfig, load_model
from posttrain.queue import GroupQueue
from posttrain.rewards import RewardPlugin, completion_text
from posttrain.trainer import STATE_FILE, PosttrainTrainer, ScoredBatch

# Matrix products of a 32-wide model are microseconds; with several threads on a busy 2-core machine
# they spend milliseconds spinning on locks instead (measured: 300x slower generation).
torch.set_num_threads(1)

G = 4  # completions per prompt
B = 8  # completions per step (one process): 2 groups


def make_trainer(
    tiny_model, data_path, plugins, out: Path, cls: type = PosttrainTrainer, data_kwargs=None, **kwargs
) -> PosttrainTrainer:
    """A trainer with tiny settings; ``kwargs`` go to the trainer (hooks, queue) or to GRPOConfig."""
    hook_names = ("advantage_transforms", "loss_mask_hooks", "scored_hooks", "queue", "selections")
    hooks = {k: kwargs.pop(k) for k in hook_names if k in kwargs}
    # The `method` section's options, installed as a recipe would install them (posttrain/methods/base.py).
    options = {k: kwargs.pop(k, None) for k in ("sample_weight", "loss_constant", "train_samples")}
    options["dynamic_sampling"] = DynamicSampling.from_value(kwargs.pop("dynamic_sampling", None))
    settings = {
        "output_dir": str(out),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "num_generations": G,
        "per_device_train_batch_size": B,
        "max_completion_length": 8,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        **kwargs,
    }
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    train_ds, _ = load_datasets(DataConfig(path=data_path, **(data_kwargs or {})))
    trainer = cls(
        model=model,
        reward_plugins=plugins,
        args=GRPOConfig(**settings),
        train_dataset=train_ds,
        processing_class=tokenizer,
        **hooks,
    )
    if (
        any(v is not None for k, v in options.items() if k != "dynamic_sampling")
        or options["dynamic_sampling"].enabled
    ):
        from types import SimpleNamespace

        from posttrain.methods.options import install_options

        recipe = SimpleNamespace(method=SimpleNamespace(**options), search=SimpleNamespace(enabled=False))
        install_options(trainer, recipe)
    return trainer


def train_logs(trainer: PosttrainTrainer) -> list[dict]:
    """The per-step log entries (those with a loss), one per optimizer step."""
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def params_of(trainer: PosttrainTrainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------


def test_end_to_end_every_parameter_moves_and_hooks_see_whole_groups(tiny_model, math_jsonl, tmp_path):
    group = GroupRecorder()
    scored: list[ScoredBatch] = []
    plugins = [RewardPlugin(SeededRandom(), "random"), RewardPlugin(group, "group", weight=0.5)]
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path, scored_hooks=[scored.append])
    before = params_of(trainer)
    trainer.train()

    logs = train_logs(trainer)
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
    # Every trainable parameter changed (random rewards give every group variance, so no zero gradient).
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert before and not unchanged, f"parameters that did not change: {unchanged}"

    # The group-level plugin saw the whole batch once per step, group_size consecutive rows per prompt.
    assert len(group.calls) == 2
    for call in group.calls:
        assert call["group_size"] == G and len(call["completions"]) == B
        prompts, ids = call["prompts"], call["columns"]["id"]
        for start in range(0, B, G):
            assert all(p == prompts[start] for p in prompts[start : start + G])
            assert all(i == ids[start] for i in ids[start : start + G])
        assert len(set(ids)) == B // G  # and different groups are different prompts
        assert set(call["columns"]) >= {"question", "answer", "id"}  # dataset columns as kwargs
    # Its column reached TRL's metrics and the scored batch.
    assert all("rewards/group/mean" in entry and "rewards/random/mean" in entry for entry in logs)
    expected_group_column = torch.tensor([(i % G) / G for i in range(B)])
    for batch in scored:
        assert batch.rewards_per_func.shape == (B, 2)  # (N, F)
        assert batch.reward_names == ["random", "group"]
        assert torch.allclose(batch.rewards_per_func[:, 1], expected_group_column)
        assert batch.group_size == G and batch.mode == "train" and len(batch.rows) == B
        assert batch.advantages is not None and batch.advantages.shape == (B,)
    assert len(scored) == 2

    # Every phase of a step is timed and logged under its name.
    for entry in logs:
        for phase in ("gen", "reward", "adv", "update"):
            assert entry[f"time/{phase}"] >= 0.0, phase
        assert "time/recycle" in entry  # a scored hook ran


# --------------------------------------------------------------------------------------------------
# Advantage transforms and loss masks
# --------------------------------------------------------------------------------------------------


def _zero_advantages(advantages, batch):
    assert advantages.shape == (B,) and isinstance(batch, ScoredBatch)
    return torch.zeros_like(advantages)


def _mask_everything(output, batch):
    return torch.zeros_like(output["completion_mask"])


@pytest.mark.parametrize(
    "hooks",
    [
        {"advantage_transforms": [_zero_advantages]},  # zero advantages: nothing to learn
        {"loss_mask_hooks": [_mask_everything]},  # every token masked out of the loss
    ],
    ids=["advantages-zeroed", "loss-fully-masked"],
)
def test_hooks_that_remove_the_signal_stop_learning(tiny_model, math_jsonl, tmp_path, hooks):
    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(SeededRandom(), "random")], tmp_path, max_steps=1, **hooks
    )
    before = params_of(trainer)
    trainer.train()
    (log,) = train_logs(trainer)
    assert log["loss"] == 0.0 and log["grad_norm"] == 0.0
    # Adam with an all-zero gradient (and no weight decay) leaves every weight where it was.
    assert all(torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())


class _CaptureOutput(PosttrainTrainer):
    """Keeps the dict `_generate_and_score_completions` returns (what the loss will see)."""

    outputs: list[dict]

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.outputs = [*getattr(self, "outputs", []), output]
        return output


def test_partial_loss_mask_recounts_trained_tokens(tiny_model, math_jsonl, tmp_path):
    def first_token_only(output, batch):
        mask = torch.zeros_like(output["completion_mask"])
        mask[:, 0] = 1
        return mask

    plugins = [RewardPlugin(SeededRandom(), "random")]
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path, cls=_CaptureOutput, max_steps=1)
    trainer.loss_mask_hooks.append(first_token_only)
    trainer.train()
    (output,) = trainer.outputs
    assert output["tool_mask"].shape == output["completion_mask"].shape
    assert output["tool_mask"][:, 1:].sum() == 0
    # The dapo normaliser counts only tokens left in the loss: one per completion.
    assert int(output["num_items_in_batch"]) == int(output["completion_mask"][:, 0].sum()) == B


# --------------------------------------------------------------------------------------------------
# Prompt queue
# --------------------------------------------------------------------------------------------------


def _queued_rows(data_path: str, tasks: list[str]) -> list[dict]:
    train_ds, _ = load_datasets(DataConfig(path=data_path))
    return [{**train_ds[i], "task": task, "id": f"queued-{task}"} for i, task in enumerate(tasks)]


def _data_questions(group: GroupRecorder) -> list[str]:
    """The data prompts (not queued) generated, in order, one per group."""
    out = []
    for call in group.calls:
        questions = call["columns"]["question"]
        tasks = call["columns"].get("task", [None] * len(questions))  # no queued group: no `task` column
        out += [q for q, t in zip(questions[::G], tasks[::G], strict=True) if t is None]
    return out


def test_queued_groups_come_in_addition_to_the_data(tiny_model, math_jsonl, tmp_path):
    group = GroupRecorder()
    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(group, "group")], tmp_path, queue=GroupQueue(0.5), max_steps=8
    )
    trainer.queue.put(_queued_rows(math_jsonl, ["q0", "q1", "q2"]))
    trainer.train()
    # max_fraction 0.5 of 2 groups: one queued group per step while the queue lasts, the last of the batch.
    for step, call in enumerate(group.calls[:3]):
        tasks, ids = call["columns"]["task"], call["columns"]["id"]
        assert tasks == [None] * G + [f"q{step}"] * G  # every row has the `task` key (uniform keys)
        assert ids[G:] == [f"queued-q{step}"] * G
    # 3 data groups, then 2 per step: 13 in 8 steps. The first 12 are one whole pass over the 12 rows.
    questions = _data_questions(group)
    assert len(questions) == 13
    assert sorted(questions[:12]) == sorted({q for q in questions})  # each of the 12 exactly once
    assert len(set(questions[:12])) == 12
    logs = train_logs(trainer)
    assert logs[0]["feed/recycled_share"] == 0.5 and logs[-1]["feed/recycled_share"] == 0.0
    assert logs[-1]["feed/recycled_steps"] == 1.5  # three half-recycled steps


def test_a_mixed_spark_batch_routes_each_reward_to_its_rows(tiny_model, math_jsonl, tmp_path):
    """A real step on a batch with solve, judge and reflection groups: `accuracy` (tasks [solve]) is empty
    (NaN) exactly on the recycled rows, `spark_judge` exactly on the solve rows."""
    from posttrain.rewards import RewardSpec, build_reward_plugins

    plugins = build_reward_plugins(
        [RewardSpec(name="accuracy", tasks=["solve"]), RewardSpec(name="spark_judge")]
    )
    seen = []
    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        plugins,
        tmp_path,
        queue=GroupQueue(1.0),
        max_steps=1,
        per_device_train_batch_size=3 * G,
        scored_hooks=[seen.append],
    )
    judge = {**_queued_rows(math_jsonl, ["pointwise"])[0], "judge_label": "Yes", "answer": None}
    reflect = {**_queued_rows(math_jsonl, ["reflection"])[0], "judge_label": None}
    trainer.queue.put([judge, reflect])
    trainer.train()
    (batch,) = seen
    tasks = [row.get("task") or "solve" for row in batch.rows]
    assert tasks == ["solve"] * G + ["pointwise"] * G + ["reflection"] * G
    accuracy, verdict = batch.rewards_per_func[:, 0], batch.rewards_per_func[:, 1]
    assert torch.isnan(accuracy).tolist() == [t != "solve" for t in tasks]
    assert torch.isnan(verdict).tolist() == [t == "solve" for t in tasks]


def test_a_queue_needs_max_steps(tiny_model, math_jsonl, tmp_path):
    with pytest.raises(ConfigError, match="set trainer.max_steps"):
        make_trainer(
            tiny_model,
            math_jsonl,
            [RewardPlugin(GroupRecorder(), "g")],
            tmp_path,
            queue=GroupQueue(),
            max_steps=-1,
        )


# --------------------------------------------------------------------------------------------------
# Checkpoints: reward-plugin state, the queue and the feed
# --------------------------------------------------------------------------------------------------


def test_stateful_plugin_queue_and_feed_survive_resume(tiny_model, math_jsonl, tmp_path):
    counter, group = Counter(), GroupRecorder()
    plugins = [RewardPlugin(counter, "counter"), RewardPlugin(group, "group")]
    checkpoints = {"save_strategy": "steps", "save_steps": 1}
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path, queue=GroupQueue(0.5), **checkpoints)
    trainer.queue.put(_queued_rows(math_jsonl, ["q0", "q1", "q2"]))
    trainer.train()
    assert counter.calls == 2 and len(trainer.queue) == 1
    for step, calls in ((1, 1), (2, 2)):
        state = torch.load(tmp_path / f"checkpoint-{step}" / STATE_FILE, weights_only=False)
        assert state["rewards"] == {"counter": {"calls": calls}}  # only stateful plugins are saved
        assert len(state["queue"]["rows"]) == 3 - calls
        assert state["feed"]["position"] == calls and state["generations"] == calls

    # The uninterrupted run, for comparison.
    group_full = GroupRecorder()
    full = make_trainer(
        tiny_model,
        math_jsonl,
        [RewardPlugin(Counter(), "counter"), RewardPlugin(group_full, "group")],
        tmp_path / "full",
        queue=GroupQueue(0.5),
        max_steps=3,
    )
    full.queue.put(_queued_rows(math_jsonl, ["q0", "q1", "q2"]))
    full.train()

    # A fresh trainer (fresh counter, empty queue) resumed from step 2 continues all three.
    counter2, group2 = Counter(), GroupRecorder()
    plugins2 = [RewardPlugin(counter2, "counter"), RewardPlugin(group2, "group")]
    resumed = make_trainer(tiny_model, math_jsonl, plugins2, tmp_path, queue=GroupQueue(0.5), max_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert resumed.state.global_step == 3
    assert counter2.calls == 3  # 2 restored + 1 new call
    (call,) = group2.calls
    assert call["columns"]["task"][G:] == ["q2"] * G  # the restored queue's last row was trained on
    assert len(resumed.queue) == 0
    # The data prompt of step 3 is the one the uninterrupted run generated at step 3.
    assert call["columns"]["question"][:G] == group_full.calls[2]["columns"]["question"][:G]


# --------------------------------------------------------------------------------------------------
# Reward errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, name, phrases",
    [
        # Raises on every row: the row-by-row rerun names row 0 and shows its completion.
        (boom, "boom", ["Reward 'boom' raised on row 0 of 8", "ValueError: boom", "completion:"]),
        # One score too few.
        (short, "short", ["Reward 'short' returned 7 scores for 8 completions"]),
        # NaN is not a score; the message shows the row and its completion.
        (nan_reward, "nan_reward", ["Reward 'nan_reward' returned nan for row 0", "completion:"]),
        # A group-level reward that raises is reported for the whole batch.
        (group_boom, "group_boom", ["Group-level reward 'group_boom' raised", "RuntimeError: group boom"]),
    ],
    ids=["raises", "wrong-length", "nan", "group-raises"],
)
def test_bad_reward_stops_training_with_a_named_error(tiny_model, math_jsonl, tmp_path, fn, name, phrases):
    SEEN.clear()
    trainer = make_trainer(tiny_model, math_jsonl, [RewardPlugin(fn, name)], tmp_path, max_steps=1)
    with pytest.raises(RewardError) as info:
        trainer.train()
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message
    if name in SEEN:  # the completion in the message is the one the plugin choked on
        assert repr(completion_text(SEEN[name][0])) in message


def test_on_error_skip_scores_failing_rows_none(tiny_model, math_jsonl, tmp_path):
    plugins = [
        RewardPlugin(odd_answer_raises, "odd", on_error="skip"),
        RewardPlugin(SeededRandom(), "random"),
    ]
    scored: list[ScoredBatch] = []
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path, scored_hooks=[scored.append])
    trainer.train()
    assert trainer.state.global_step == 2  # training went on
    seen = set()
    for batch in scored:
        for row, value in zip(batch.rows, batch.rewards_per_func[:, 0].tolist()):
            odd = int(row["answer"]) % 2 == 1
            assert math.isnan(value) if odd else value == 1.0
            seen.add(odd)
    assert seen == {True, False}  # the seeded batches held both kinds of row


def test_lora_trains_only_the_adapter(tiny_model, math_jsonl, tmp_path):
    # LoRA through the recipe's `peft` section: adapter weights move, base weights stay frozen.
    from posttrain.models import PeftConfigSection

    lora = PeftConfigSection(enabled=True, r=4, lora_alpha=8, lora_dropout=0.0).to_lora_config()
    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(SeededRandom(), "random")], tmp_path, cls=PosttrainTrainer
    )
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    train_ds, _ = load_datasets(DataConfig(path=math_jsonl))
    trainer = PosttrainTrainer(
        model=model,
        reward_plugins=[RewardPlugin(SeededRandom(), "random")],
        args=trainer.args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert all(not torch.equal(params[n].detach(), v) for n, v in trainable.items())
    assert all(torch.equal(params[n].detach(), v) for n, v in frozen.items())


class FirstCallOnly:
    """Varied rewards on the first call, all zeros after: one step with a gradient, then none."""

    def __init__(self):
        self.calls = 0

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [float(i % 2) if self.calls == 1 else 0.0 for i in range(len(completions))]


def test_steps_without_signal_leave_the_weights_alone(tiny_model, math_jsonl, tmp_path):
    from transformers import TrainerCallback

    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})

    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(FirstCallOnly(), "first")], tmp_path, max_steps=3, beta=0.0
    )
    trainer.add_callback(Snapshot())
    trainer.train()
    assert len(snapshots) == 3 and trainer.gate.skipped_steps == 2
    assert all(torch.equal(snapshots[1][n], snapshots[2][n]) for n in snapshots[1])  # AdamW did not coast
    logged = [e.get("train/skipped_steps") for e in train_logs(trainer)]
    assert logged[-1] == 2.0
