"""Pins the TRL 1.16 internals that posttrain/trainer.py overrides or relies on.

pytest tests/test_trl_internals.py -q

PosttrainTrainer subclasses ``trl.GRPOTrainer`` and overrides private methods. A TRL upgrade that
renames one, changes its arguments or the dict it returns should fail here, in one place, with the
name of what moved, rather than somewhere deep in a training run.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
import trl
from trl import GRPOConfig, GRPOTrainer

from posttrain.data import DataConfig, load_datasets
from posttrain.models import ModelConfig, load_model

torch.set_num_threads(1)  # a 32-wide model: threads only add lock contention on a busy CPU


def test_trl_version():
    assert trl.__version__.startswith("1.16"), (
        f"TRL {trl.__version__}: posttrain/trainer.py overrides TRL 1.16 internals; re-check each pin below"
    )


@pytest.mark.parametrize(
    "name, params",
    [
        # Extended: runs group-level rewards on the gathered batch.
        ("_calculate_rewards", ["self", "inputs", "prompts", "completions", "completion_ids_list"]),
        # Extended: queue injection before, advantage transforms and loss masks after.
        ("_generate_and_score_completions", ["self", "inputs"]),
        # Timed as the `gen` phase.
        ("_generate", ["self", "prompts"]),
        # Timed, to subtract generation from the `update` phase.
        ("_prepare_inputs", ["self", "generation_batch"]),
        # Timed as `update`; pops the phase timings into the metrics.
        ("training_step", ["self", "model", "inputs", "num_items_in_batch"]),
        # Writes posttrain_state.pt into each checkpoint.
        ("_save_checkpoint", ["self", "model", "trial"]),
        # Restores posttrain_state.pt on resume.
        ("_load_optimizer_and_scheduler", ["self", "checkpoint"]),
        # Loads a finished run's last checkpoint without training a step past max_steps.
        ("_load_from_checkpoint", ["self", "resume_from_checkpoint", "model"]),
        # Passed to group-level rewards as `log_metric`.
        ("_log_metric", ["self", "name", "value"]),
        # Reads `tool_mask` (our loss masks) and `num_items_in_batch`; we add the engine's IS weights.
        ("_compute_loss", ["self", "model", "inputs"]),
        # Prompts that prefill the reply (posttrain/chat.py) are tokenized by us; returns (ids, images, fields).
        ("_tokenize_prompts", ["self", "prompts"]),
        # Replaced by the rollout engine when one is set.
        (
            "_generate_single_turn",
            ["self", "prompt_ids", "images", "multimodal_fields", "num_generations", "has_tool_images"],
        ),
        # Its first call inside _compute_loss gives the log-probs the IS weights are computed from.
        ("_get_per_token_logps_and_entropies", None),
        # Its RepeatSampler gets set_epoch (posttrain/feed.py: epoch_seeded), so a resume in a later epoch is exact.
        ("_get_train_sampler", ["self", "dataset"]),
        # With a prompt feed (SPARK), a placeholder loader only counts the Trainer's steps.
        ("get_train_dataloader", ["self"]),
        # transformers' hook for skipping batches on resume; the feed restores its own position instead.
        ("get_resumed_dataloader", ["self", "dataloader", "num_batches"]),
    ],
)
def test_overridden_method_signatures(name, params):
    method = getattr(GRPOTrainer, name, None)
    assert method is not None, f"GRPOTrainer.{name} is gone"
    if params is not None:
        assert list(inspect.signature(method).parameters) == params, name


def test_loss_reads_advantages_after_its_forward_pass():
    """posttrain's importance weights (engine rollouts) are set on ``inputs["advantages"]`` by the
    first ``_get_per_token_logps_and_entropies`` call of ``_compute_loss``; TRL must read the
    advantages after that call, and accept (B, T) advantages."""
    source = inspect.getsource(GRPOTrainer._compute_loss)
    forward = source.index("self._get_per_token_logps_and_entropies(")
    read = source.index('advantages = inputs["advantages"]')
    assert forward < read, "GRPOTrainer._compute_loss now reads the advantages before its forward pass"
    assert "advantages.dim() == 1" in source, "GRPOTrainer._compute_loss no longer takes (B, T) advantages"
    assert source.count("self._get_per_token_logps_and_entropies(") == 1


@pytest.mark.parametrize(
    "method, calls",
    [
        # Our `_generate` and `_calculate_rewards` overrides only run if TRL still calls them from here.
        ("_generate_and_score_completions", ["self._generate(", "self._calculate_rewards("]),
        # The loss multiplies the completion mask by `tool_mask` when present (loss-mask hooks use it)
        # and normalises dapo-style losses by `num_items_in_batch` (recounted after masking).
        ("_compute_loss", ['inputs["tool_mask"]', 'inputs["num_items_in_batch"]']),
        # Our training_step reads the step counter TRL keeps.
        ("training_step", ["self._step += 1", "self.current_gradient_accumulation_steps"]),
        # The feed replaces the generation batch exactly when TRL generates (the same condition).
        (
            "_prepare_inputs",
            [
                "self._step % generate_every == 0 or self._buffered_inputs is None",
                "self._generate_and_score_completions(",
            ],
        ),
        # A completion without a final EOS (or pad) is "truncated": the search loop closes complete ones.
        ("_generate_and_score_completions", ["ids[-1] not in eos_and_pad"]),
    ],
)
def test_call_sites_we_rely_on(method, calls):
    source = inspect.getsource(getattr(GRPOTrainer, method))
    for call in calls:
        assert call in source, f"GRPOTrainer.{method} no longer contains {call!r}"


def test_grpo_config_fields():
    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    needed = {
        "reward_weights",
        "scale_rewards",
        "loss_type",
        "num_generations",
        "num_generations_eval",
        "max_completion_length",
        "use_cpu",
        "bf16",
        "fp16",
        "epsilon_high",
        "mask_truncated_completions",
        "steps_per_generation",
        "gradient_checkpointing",
        # set by every method preset (posttrain/methods/: Method.preset)
        "use_bias_correction_kl",
        "entropy_coef",
        "epsilon",
        "temperature",
        "top_p",
        "beta",
        "shuffle_dataset",
        "generation_batch_size",
    }
    assert needed <= fields, f"GRPOConfig lost {sorted(needed - fields)}"


class _Capture(GRPOTrainer):
    """Plain TRL trainer that keeps what ``_generate_and_score_completions`` returns."""

    def _generate_and_score_completions(self, inputs):
        self.captured = super()._generate_and_score_completions(inputs)
        return self.captured


def _reward(completions, **kwargs):
    return [float(i % 3) for i in range(len(completions))]


def test_generation_output_and_trainer_attributes(tiny_model, math_jsonl, tmp_path):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    train_ds, _ = load_datasets(DataConfig(path=math_jsonl))
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=8,
        max_steps=1,
        save_strategy="no",
    )
    trainer = _Capture(
        model=model, reward_funcs=[_reward], args=args, train_dataset=train_ds, processing_class=tokenizer
    )
    # Attributes the posttrain trainer reads.
    assert trainer.reward_func_names == ["_reward"]
    assert trainer.num_generations == 4 and trainer.num_generations_eval == 4
    assert set(trainer._metrics) == {"train", "eval"} and trainer._step == 0
    trainer.train()
    assert trainer._step == 1 and trainer.current_gradient_accumulation_steps == 1

    out = trainer.captured
    assert {"advantages", "completion_mask", "num_items_in_batch", "completion_ids", "prompt_ids"} <= set(out)
    assert out["advantages"].shape == (8,)  # this process's rows only (we gather them for transforms)
    assert out["completion_mask"].shape == out["completion_ids"].shape  # (B, T)
    assert out["num_items_in_batch"].ndim == 0
    assert int(out["num_items_in_batch"]) == int(out["completion_mask"].sum())
    assert "tool_mask" not in out  # no tools: posttrain's loss masks create it

    # The loss honours `tool_mask`: with every token masked, no parameter gets a gradient.
    inputs = {**out, "advantages": torch.linspace(-1, 1, 8)}
    for mask, expect_grad in ((None, True), (torch.zeros_like(out["completion_mask"]), False)):
        trainer.model.zero_grad()
        batch = inputs if mask is None else {**inputs, "tool_mask": mask}
        trainer.compute_loss(trainer.model, batch).backward()
        grad = sum(p.grad.abs().sum() for p in trainer.model.parameters() if p.grad is not None)
        assert (float(grad) > 0) == expect_grad
