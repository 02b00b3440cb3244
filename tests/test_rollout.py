"""Rollout engines without vLLM: the importance-sampling maths, the HF engine, and an engine plugged
into the trainer (weight sync each step, sampler log-probs driving the correction).

pytest tests/test_rollout.py -q

The vLLM engine itself is tested in tests/test_vllm.py (``make test-vllm``).
"""

from __future__ import annotations

import copy
import importlib.util
import math

import pytest
import torch
from helpers_plugins import SeededRandom
from test_trainer import B, G, make_trainer, train_logs

from posttrain.config import load_recipe
from posttrain.errors import ConfigError
from posttrain.models import ModelConfig, load_model
from posttrain.rewards import RewardPlugin
from posttrain.rollout import RolloutConfig, RolloutEngine, SamplingSettings
from posttrain.rollout.hf import HFEngine, cut_at_eos
from posttrain.rollout.importance import importance_weights, token_advantages
from posttrain.rollout.weights import inference_weights

torch.set_num_threads(1)

# --------------------------------------------------------------------------------------------------
# Importance weights: hand-computed
# --------------------------------------------------------------------------------------------------

# trainer - sampler log-prob per token: row 0 = [ln 2, ln 0.5, 0], row 1 = [ln 4, ln 1, pad]
LN2 = math.log(2.0)
TRAIN = torch.tensor([[LN2, -LN2, 0.0], [2 * LN2, 0.0, 5.0]])
SAMPLER = torch.zeros(2, 3)
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    "mode, clip_min, clip_max, expected",
    [
        ("token_truncate", None, 3.0, [[2.0, 0.5, 1.0], [3.0, 1.0, 1.0]]),
        ("token_truncate", 0.8, 3.0, [[2.0, 0.8, 1.0], [3.0, 1.0, 1.0]]),
        ("token_mask", None, 3.0, [[2.0, 0.5, 1.0], [0.0, 1.0, 1.0]]),
        ("token_mask", 0.8, 3.0, [[2.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
        # sequence ratios: row 0 = 2 * 0.5 * 1 = 1; row 1 = 4 * 1 = 4 (padding ignored)
        ("sequence_truncate", None, 3.0, [[1.0], [3.0]]),
        ("sequence_mask", None, 3.0, [[1.0], [0.0]]),
        ("sequence_mask", None, None, [[1.0], [4.0]]),
    ],
)
def test_importance_weights_by_hand(mode, clip_min, clip_max, expected):
    weights = importance_weights(TRAIN, SAMPLER, MASK, mode, clip_min, clip_max)
    torch.testing.assert_close(weights, torch.tensor(expected))


def test_unavailable_sampler_logprob_means_no_correction():
    sampler = torch.tensor([[float("nan"), 0.0]])
    weights = importance_weights(torch.tensor([[1.0, 0.0]]), sampler, torch.ones(1, 2), "token_truncate")
    torch.testing.assert_close(weights, torch.ones(1, 2))


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="token_truncate"):
        importance_weights(TRAIN, SAMPLER, MASK, "tokens")


def test_weighting_the_advantage_equals_weighting_the_clipped_loss():
    """-min(r A, clip(r) A) * w == -min(r wA, clip(r) wA) for w >= 0: why token_advantages is exact."""
    gen = torch.Generator().manual_seed(0)
    ratio = torch.exp(0.3 * torch.randn(4, 6, generator=gen))
    adv = torch.randn(4, generator=gen)
    w = importance_weights(
        0.2 * torch.randn(4, 6, generator=gen), torch.zeros(4, 6), torch.ones(4, 6), "token_mask"
    )

    def loss(a):
        return -torch.min(ratio * a, ratio.clamp(0.8, 1.2) * a)

    torch.testing.assert_close(loss(adv[:, None]) * w, loss(token_advantages(adv, w)))


# --------------------------------------------------------------------------------------------------
# HF engine
# --------------------------------------------------------------------------------------------------


def test_cut_at_eos_keeps_the_eos_token():
    assert cut_at_eos([5, 6, 2, 2, 2], [2], 2) == [5, 6, 2]
    assert cut_at_eos([5, 6, 7], [2], 0) == [5, 6, 7]


def test_hf_engine_shapes_greedy_and_logprobs(tiny_model):
    model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    engine = HFEngine(model, tok)
    assert isinstance(engine, RolloutEngine)
    prompts = [tok("What is 1+2?")["input_ids"], tok("7+1=")["input_ids"]]
    out = engine.generate(prompts, 3, SamplingSettings(max_tokens=6, temperature=1.0, seed=0))
    assert len(out.completion_ids) == 6 and len(out.logprobs) == 6
    assert all(len(lp) == len(ids) for lp, ids in zip(out.logprobs, out.completion_ids))
    assert all(x <= 0 for lp in out.logprobs for x in lp)
    greedy = engine.generate(prompts, 2, SamplingSettings(max_tokens=6, temperature=0))
    assert greedy.completion_ids[0] == greedy.completion_ids[1]  # greedy: both samples equal
    # Log-probs of the greedy tokens agree with a plain forward pass on one unpadded sequence.
    ids = torch.tensor([prompts[1] + greedy.completion_ids[2]])
    logps = torch.log_softmax(model(ids).logits[0, len(prompts[1]) - 1 : -1], -1)
    direct = logps.gather(-1, torch.tensor(greedy.completion_ids[2])[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(greedy.logprobs[2]), direct, atol=1e-5, rtol=0)


def test_inference_weights_merge_lora_under_base_names(tiny_model):
    from peft import LoraConfig, get_peft_model

    model, _ = load_model(ModelConfig(name_or_path=tiny_model))
    base_names = {n for n, _ in model.named_parameters()}
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    with torch.no_grad():  # a non-zero adapter, so merging changes q_proj
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    names = {n: t.clone() for n, t in inference_weights(peft_model)}
    assert base_names <= set(names)
    q = next(n for n in names if n.endswith("q_proj.weight"))
    assert not torch.equal(names[q], dict(model.named_parameters())[q])  # the adapter was merged in
    after = dict(peft_model.get_base_model().named_parameters())[q.replace(".weight", ".base_layer.weight")]
    torch.testing.assert_close(after, dict(model.named_parameters())[q])  # ... and unmerged afterwards


# --------------------------------------------------------------------------------------------------
# An engine in the trainer: HFEngine on its own copy of the model stands in for vLLM
# --------------------------------------------------------------------------------------------------


class StaleEngine(HFEngine):
    """Never receives the trainer's weights: what happens when weight sync is broken."""

    def sync_weights(self, model) -> None:
        pass


@pytest.mark.parametrize("engine_cls", [HFEngine, StaleEngine])
def test_engine_in_the_trainer_syncs_weights_each_step(tiny_model, math_jsonl, tmp_path, engine_cls):
    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        [RewardPlugin(SeededRandom(), "random")],
        tmp_path,
        max_steps=3,
        learning_rate=5e-2,
    )
    copy_model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    trainer.set_rollout_engine(engine_cls(copy_model, tok))
    trainer.train()
    logs = train_logs(trainer)
    assert len(logs) == 3
    gaps = [entry["rollout/logp_gap"] for entry in logs]
    assert all("time/sync" in entry for entry in logs[1:])  # synced before steps 2 and 3
    assert gaps[0] < 1e-4  # same weights at step 1 either way
    if engine_cls is HFEngine:
        assert max(gaps) < 1e-4, gaps
    else:
        assert gaps[-1] > 100 * max(gaps[0], 1e-6), gaps


def test_engine_weights_scale_the_advantages(tiny_model, math_jsonl, tmp_path):
    """A sampler that saw different log-probs changes the update (the correction is really applied)."""

    class Biased(HFEngine):
        def generate(self, prompt_ids, n, sampling):
            out = super().generate(prompt_ids, n, sampling)
            out.logprobs = [[x - 0.5 for x in row] for row in out.logprobs]  # w = e^0.5 per token
            return out

    results = {}
    for name, cls in {"exact": HFEngine, "biased": Biased}.items():
        trainer = make_trainer(
            tiny_model,
            math_jsonl,
            [RewardPlugin(SeededRandom(), "random")],
            tmp_path / name,
            max_steps=1,
            vllm_importance_sampling_mode="token_truncate",
            vllm_importance_sampling_clip_max=100.0,
        )
        model, tok = load_model(ModelConfig(name_or_path=tiny_model))
        trainer.set_rollout_engine(cls(model, tok))
        trainer.train()
        results[name] = train_logs(trainer)[0]
    assert results["exact"]["rollout/is_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert results["biased"]["rollout/is_weight_mean"] == pytest.approx(math.exp(0.5), rel=1e-2)
    assert B % G == 0


class Shifted(HFEngine):
    """Reports its sampling log-probs ``shift`` lower than they are: every token weight is ``e^shift``."""

    shift = 0.5

    def generate(self, prompt_ids, n, sampling):
        out = super().generate(prompt_ids, n, sampling)
        out.logprobs = [[x - self.shift for x in row] for row in out.logprobs]
        return out


def _train_with_engine(tiny_model, math_jsonl, out, engine, **settings):
    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(SeededRandom(), "random")], out, max_steps=1, **settings
    )
    model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    trainer.set_rollout_engine(engine(model, tok))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    return trainer, before


def test_is_weight_mean_counts_only_the_tokens_of_the_loss(tiny_model, math_jsonl, tmp_path):
    """Defect (issue 13): rollout/is_weight_mean averaged padding (weight 1) with the real tokens (e^0.5)."""

    class Ragged(HFEngine):  # every other completion ends early (the batch is padded); weights e^0.5
        def generate(self, prompt_ids, n, sampling):
            out = super().generate(prompt_ids, n, sampling)
            eos = self.tokenizer.eos_token_id
            for i in range(0, len(out.completion_ids), 2):
                out.completion_ids[i] = out.completion_ids[i][:2] + [eos]
            scored = self.score(prompt_ids, out.completion_ids, sampling.temperature)
            out.logprobs = [[x - 0.5 for x in row] for row in scored]
            return out

    trainer, _ = _train_with_engine(
        tiny_model, math_jsonl, tmp_path, Ragged,
        vllm_importance_sampling_mode="token_truncate", vllm_importance_sampling_clip_max=100.0,
    )  # fmt: skip
    (log,) = train_logs(trainer)
    assert log["completions/min_length"] < log["completions/max_length"]  # some rows are padded
    assert log["rollout/is_weight_mean"] == pytest.approx(math.exp(0.5), rel=1e-5)


def test_a_micro_batch_whose_weights_are_all_masked_skips_the_step(tiny_model, math_jsonl, tmp_path):
    """Defect (issue 13): the skip test read the advantages before the importance weights; with every weight
    masked (ratio e^5 outside [clip_min, clip_max]) there is no gradient, yet the optimizer stepped."""

    class FarOff(Shifted):
        shift = 5.0

    trainer, before = _train_with_engine(
        tiny_model, math_jsonl, tmp_path, FarOff,
        vllm_importance_sampling_mode="token_mask", vllm_importance_sampling_clip_max=3.0,
    )  # fmt: skip
    (log,) = train_logs(trainer)
    assert log["rollout/is_weight_mean"] == 0.0
    assert log["train/skipped_steps"] == 1.0
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


def test_a_loss_the_correction_cannot_serve_is_refused(tiny_model, math_jsonl, tmp_path):
    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(SeededRandom(), "random")], tmp_path, loss_type="vespo"
    )
    model, tok = load_model(ModelConfig(name_or_path=tiny_model))
    with pytest.raises(ConfigError, match="vespo"):
        trainer.set_rollout_engine(HFEngine(model, tok))


# --------------------------------------------------------------------------------------------------
# Configuration and the missing-vLLM error
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        ({"engine": "sglang"}, "rollout.engine"),
        ({"mode": "remote"}, "rollout.mode"),
        ({"weight_sync": "nccl"}, "rollout.weight_sync"),
        ({"engine": "vllm", "tensor_parallel_size": 2}, "mode: server"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
    ],
)
def test_bad_rollout_settings_are_named(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        RolloutConfig(**kwargs)


def test_rollout_flags_reach_the_recipe():
    recipe = load_recipe("recipes/quickstart.yaml", ["--rollout.engine", "vllm", "--rollout.mode", "server"])
    assert (recipe.rollout.engine, recipe.rollout.mode) == ("vllm", "server")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_requested_but_missing_names_the_install_command(tiny_model, math_jsonl, tmp_path):
    from posttrain.train import main

    flags = ["--model.name_or_path", tiny_model, "--data.path", math_jsonl, "--data.generator", "null"]
    with pytest.raises(ConfigError, match="pip install") as err:
        main(["recipes/quickstart.yaml", *flags, "--rollout.engine", "vllm", "--output_dir", str(tmp_path)])
    assert "make test-vllm" in str(err.value)
    assert not (tmp_path / "metrics.jsonl").exists()  # nothing started
