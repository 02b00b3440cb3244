"""What only a GPU can check: posttrain's training, rollout and evaluation paths on CUDA, in bf16.

    python -m pytest -m gpu -q tests/test_gpu.py     # on a machine with a CUDA GPU (estimate: 1-2 min on an H100)

Marked ``gpu`` (deselected by default); without CUDA every test is skipped. Each test runs 1-2 steps
on a tiny random Llama (``posttrain.testing.make_tiny_model``, 128 wide so that attention heads are 32
wide, a size every CUDA attention kernel takes), with ``bf16=True`` and no ``use_cpu``:

- a GRPO step (``PosttrainTrainer``) with gradient checkpointing: weights move, losses are finite, the
  batch's completions and advantages are CUDA tensors;
- LoRA: only the adapter moves, on the GPU;
- the HF rollout engine generates on the GPU, and the trainer keeps its weights in sync (against an
  engine that never receives them);
- the rollout server with its HF backend, served from the GPU: its log-probs are the local model's, and
  a weight push arrives bit for bit (skipped without fastapi/uvicorn, the ``serve`` extra);
- DeepSpeed ZeRO-2 on one GPU, launched through ``accelerate launch`` with ``accelerate_configs/zero2.yaml``
  and one process: NCCL, stage 2, bf16 weights, two logged steps (skipped without deepspeed);
- a group-level reward plugin and SPARK's recycler inside CUDA steps: whole groups, a recycled
  reflection task trained at step 2;
- held-out evaluation (``posttrain.evaluation.evaluate``) generating on the GPU.

``POSTTRAIN_GPU_TESTS_ON_CPU=1 python -m pytest -m gpu tests/test_gpu.py`` runs the same tests on the
CPU (bf16 autocast, gloo instead of NCCL), to check their logic on a machine without a GPU; it proves
nothing about CUDA.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers_plugins import GroupRecorder, SeededRandom
from trl import GRPOConfig

from posttrain.data import DataConfig, load_datasets
from posttrain.models import ModelConfig, load_model
from posttrain.queue import GroupQueue
from posttrain.rewards import RewardPlugin, RewardSpec, build_reward_plugins
from posttrain.rollout.base import SamplingSettings
from posttrain.rollout.hf import HFEngine
from posttrain.testing import make_tiny_model
from posttrain.trainer import PosttrainTrainer, ScoredBatch

HAS_CUDA = torch.cuda.is_available()
ON_CPU = not HAS_CUDA and os.environ.get("POSTTRAIN_GPU_TESTS_ON_CPU") == "1"
DEVICE = "cuda" if HAS_CUDA else "cpu"

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (HAS_CUDA or ON_CPU), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    ),
]

TESTS = Path(__file__).parent
ROOT = TESTS.parent
G = 4  # completions per prompt
B = 8  # completions per step: 2 groups
LAUNCH_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory) -> str:
    """A tiny random Llama (hidden 128, 4 heads of 32, 2 layers) with the ChatML character tokenizer."""
    return make_tiny_model(tmp_path_factory.mktemp("gpu_model"), hidden_size=128, num_layers=2)


def grpo_args(out: Path, **overrides) -> GRPOConfig:
    settings = {
        "output_dir": str(out),
        "use_cpu": ON_CPU,  # False on a GPU machine: TRL trains on CUDA
        "bf16": True,
        "gradient_checkpointing": False,
        "report_to": "none",
        "num_generations": G,
        "per_device_train_batch_size": B,
        "max_completion_length": 16,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        **overrides,
    }
    return GRPOConfig(**settings)


def make_trainer(
    model_path, data_path, plugins, out: Path, cls=PosttrainTrainer, peft_config=None, hooks=None, **config
):
    """A ``PosttrainTrainer`` on the GPU; ``hooks`` go to the trainer, ``config`` to GRPOConfig."""
    model, tokenizer = load_model(ModelConfig(name_or_path=model_path))  # fp32 masters; bf16 autocast
    train_ds, _ = load_datasets(DataConfig(path=data_path))
    return cls(
        model=model,
        reward_plugins=plugins,
        args=grpo_args(out, **config),
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        **(hooks or {}),
    )


def train_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def device_of(model) -> str:
    return next(model.parameters()).device.type


class CaptureOutput(PosttrainTrainer):
    """Keeps what ``_generate_and_score_completions`` hands to the loss, to check where it lives."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        self.outputs = [*getattr(self, "outputs", []), output]
        return output


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def test_grpo_step_in_bf16_with_gradient_checkpointing(gpu_model, math_jsonl, tmp_path):
    plugins = [RewardPlugin(SeededRandom(), "random")]
    trainer = make_trainer(
        gpu_model, math_jsonl, plugins, tmp_path, cls=CaptureOutput, gradient_checkpointing=True
    )
    assert trainer.args.bf16
    before = trainable(trainer.model)
    trainer.train()

    model = trainer.model
    assert model.is_gradient_checkpointing  # the Trainer turns it on when training starts
    assert device_of(model) == DEVICE
    if HAS_CUDA:
        assert next(model.parameters()).dtype == torch.float32  # fp32 masters; bf16 compute from autocast
    logs = train_logs(trainer)
    assert len(logs) == 2
    for entry in logs:
        assert math.isfinite(entry["loss"]) and math.isfinite(entry["grad_norm"]) and entry["grad_norm"] > 0
        assert entry["time/gen"] > 0 and entry["time/update"] > 0
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert before and not unchanged, f"parameters that did not change: {unchanged}"
    # The batch the loss saw was generated, scored and normalised on the GPU.
    assert len(trainer.outputs) == 2
    for output in trainer.outputs:
        assert output["completion_ids"].device.type == DEVICE
        assert output["advantages"].device.type == DEVICE
        assert output["completion_ids"].shape[0] == B


def test_lora_trains_only_the_adapter_on_the_gpu(gpu_model, math_jsonl, tmp_path):
    from posttrain.models import PeftConfigSection

    lora = PeftConfigSection(enabled=True, r=4, lora_alpha=8, lora_dropout=0.0).to_lora_config()
    trainer = make_trainer(
        gpu_model,
        math_jsonl,
        [RewardPlugin(SeededRandom(), "random")],
        tmp_path,
        peft_config=lora,
        gradient_checkpointing=True,  # with peft, TRL must make the inputs require grad
    )
    model = trainer.model
    adapter = trainable(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert adapter and frozen and all("lora_" in n for n in adapter)
    trainer.train()

    params = dict(model.named_parameters())
    assert all(p.device.type == DEVICE for p in params.values())
    assert all(math.isfinite(entry["loss"]) for entry in train_logs(trainer))
    moved = [n for n, v in adapter.items() if not torch.equal(params[n].detach(), v)]
    assert sorted(moved) == sorted(adapter), "adapter weights that did not move"
    touched = [n for n, v in frozen.items() if not torch.equal(params[n].detach(), v)]
    assert not touched, f"frozen base weights changed: {touched}"


# --------------------------------------------------------------------------------------------------
# Rollout engines
# --------------------------------------------------------------------------------------------------


class StaleEngine(HFEngine):
    """Never receives the trainer's weights: what a broken weight sync looks like."""

    def sync_weights(self, model) -> None:
        pass


def test_hf_engine_generates_on_the_gpu(gpu_model):
    model, tok = load_model(ModelConfig(name_or_path=gpu_model), device=DEVICE)
    engine = HFEngine(model, tok)
    prompts = [tok("What is 1+2?")["input_ids"], tok("7+1=")["input_ids"]]
    out = engine.generate(prompts, 3, SamplingSettings(max_tokens=8, temperature=1.0, seed=0))
    assert len(out.completion_ids) == 6 and len(out.logprobs) == 6
    assert all(
        1 <= len(ids) <= 8 and len(lp) == len(ids) for ids, lp in zip(out.completion_ids, out.logprobs)
    )
    assert all(math.isfinite(x) and x <= 0 for lp in out.logprobs for x in lp)
    greedy = engine.generate(prompts, 2, SamplingSettings(max_tokens=8, temperature=0))
    assert greedy.completion_ids[0] == greedy.completion_ids[1]
    # The engine's log-probs agree with a plain forward pass on the GPU (bf16 rounding apart).
    ids = torch.tensor([prompts[1] + greedy.completion_ids[2]], device=DEVICE)
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.device.type == DEVICE
    logps = torch.log_softmax(logits[0, len(prompts[1]) - 1 : -1].float(), -1)
    direct = logps.gather(-1, ids[0, len(prompts[1]) :, None]).squeeze(-1).cpu()
    torch.testing.assert_close(torch.tensor(greedy.logprobs[2]), direct, atol=2e-2, rtol=0)


def test_trainer_syncs_its_weights_into_a_gpu_engine(gpu_model, math_jsonl, tmp_path):
    gaps = {}
    for engine_cls in (HFEngine, StaleEngine):
        trainer = make_trainer(
            gpu_model,
            math_jsonl,
            [RewardPlugin(SeededRandom(), "random")],
            tmp_path / engine_cls.__name__,
            learning_rate=5e-2,
        )
        engine_model, tok = load_model(ModelConfig(name_or_path=gpu_model), device=DEVICE)
        trainer.set_rollout_engine(engine_cls(engine_model, tok))
        trainer.train()
        assert device_of(engine_model) == DEVICE and device_of(trainer.model) == DEVICE
        logs = train_logs(trainer)
        assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
        assert "time/sync" in logs[1]  # synced before step 2
        gaps[engine_cls.__name__] = [entry["rollout/logp_gap"] for entry in logs]
    synced, stale = gaps["HFEngine"], gaps["StaleEngine"]
    # Mean |trainer - engine| log-prob per token. Step 1: the same weights either way (bf16 rounding
    # apart: TRL takes a bf16 model's log-softmax in bf16); step 2: only the synced engine has the
    # trainer's weights (measured on CPU: 0.003 synced, 2.0 stale).
    assert synced[0] < 0.1 and stale[0] < 0.1, gaps
    assert synced[1] < 0.1, gaps
    assert stale[1] > 5 * max(synced[1], 1e-3), gaps


def test_rollout_server_round_trip_on_the_gpu(gpu_model):
    pytest.importorskip("fastapi", reason="the rollout server needs fastapi (pip install 'posttrain[serve]')")
    pytest.importorskip("uvicorn", reason="the rollout server needs uvicorn (pip install 'posttrain[serve]')")
    pytest.importorskip("requests", reason="the rollout client needs requests")
    from test_rollout_server import GREEDY, ThreadServer, _config, _perturb, _prompts

    from posttrain.rollout.client import ServerEngine
    from posttrain.rollout.server import server_info
    from posttrain.rollout.vllm import model_signature

    model, tok = load_model(ModelConfig(name_or_path=gpu_model), device=DEVICE)
    served = HFEngine(load_model(ModelConfig(name_or_path=gpu_model), device=DEVICE)[0], tok)
    server = ThreadServer(served, server_info(gpu_model, served, model_signature(model.config), False))
    try:
        remote = ServerEngine(_config(server.url), model_for_signature=model)
        assert remote.info["engine"] == "hf" and remote.info["signature"]["hidden_size"] == 128
        prompts = _prompts(tok)
        local = HFEngine(model, tok)

        def scoring_gap(rollouts, n: int) -> float:
            """Largest difference between the server's log-probs and the local model's for the same tokens."""
            repeated = [p for p in prompts for _ in range(n)]
            mine = local.score(repeated, rollouts.completion_ids)
            return max(abs(a - b) for x, y in zip(rollouts.logprobs, mine) for a, b in zip(x, y))

        got = remote.generate(prompts, 2, GREEDY)
        assert len(got.completion_ids) == 2 * len(prompts) and all(got.completion_ids)
        assert scoring_gap(got, 2) < 2e-2  # the served copy computes what the local one does
        # A weight push: the served model becomes the trainer's model, bit for bit, and stays on the GPU.
        _perturb(model)
        assert scoring_gap(remote.generate(prompts, 1, GREEDY), 1) > 2e-2  # not yet pushed: different
        remote.sync_weights(model)
        mine = dict(model.named_parameters())
        for name, param in served.model.named_parameters():
            assert param.device.type == DEVICE
            assert torch.equal(param.detach(), mine[name].detach()), name
        assert scoring_gap(remote.generate(prompts, 1, GREEDY), 1) < 2e-2
        remote.close()
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-2 on one GPU, through accelerate
# --------------------------------------------------------------------------------------------------


def test_deepspeed_zero2_on_one_gpu(gpu_model, tmp_path):
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (pip install 'posttrain[deepspeed]')")
    from posttrain import distributed

    data = tmp_path / "sums.jsonl"
    rows = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(4) for b in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, probe = tmp_path / "zero2", tmp_path / "probe"
    recipe = tmp_path / "zero2.yaml"
    spec = {
        "model": {"name_or_path": gpu_model},
        "data": {"path": str(data)},
        "rewards": [
            {"name": "probes:EngineProbe", "kwargs": {"out_dir": str(probe)}},
            {"name": "helpers_plugins:SeededRandom"},  # reward variance in every group: a real update
        ],
        "trainer": {
            "output_dir": str(out),
            "max_steps": 2,
            "num_generations": G,
            "per_device_train_batch_size": B,
            "max_completion_length": 16,
            "learning_rate": 1e-2,
            "save_strategy": "no",
            "seed": 0,
        },
        "run": {"plot": False},
    }
    recipe.write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k not in (*distributed.LAUNCHED_ENV, "POSTTRAIN_DEBUG")}
    # Keep whatever PYTHONPATH the caller set (e.g. carried wheels) after the test helpers and the repo.
    paths = [str(TESTS / "dist"), str(TESTS), str(ROOT), env.get("PYTHONPATH", "")]
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
    )
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "accelerate_configs" / "zero2.yaml"),
        "--num_processes",
        "1",
        "--main_process_port",
        "0",
        "-m",
        "posttrain.train",
        str(recipe),
    ]
    try:
        result = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=LAUNCH_TIMEOUT_S,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the ZeRO-2 launch did not end within {LAUNCH_TIMEOUT_S} s:\n{str(exc.stderr)[-4000:]}")
    assert result.returncode == 0, result.stderr[-6000:]

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row for row in metrics if "loss" in row]
    assert [row["step"] for row in steps] == [1, 2]
    assert all(math.isfinite(row["loss"]) for row in steps)
    seen = json.loads((probe / "engine-rank0.json").read_text())
    assert seen["world_size"] == 1 and seen["distributed_type"] == "DistributedType.DEEPSPEED"
    assert (seen["engine"], seen["zero_stage"], seen["optimizer"]) == (
        "DeepSpeedEngine",
        2,
        "DeepSpeedZeroOptimizer",
    )
    assert seen["param_dtype"] == "torch.bfloat16"  # the YAML's mixed_precision: bf16
    assert ("nccl" if HAS_CUDA else "gloo") in seen["backend"]  # NCCL: the process group is on the GPU


# --------------------------------------------------------------------------------------------------
# Group-level reward + SPARK's recycler inside CUDA steps
# --------------------------------------------------------------------------------------------------


def test_group_reward_and_spark_recycler_in_a_cuda_step(gpu_model, math_jsonl, tmp_path):
    from posttrain.methods.spark.recycle import Recycler, SparkConfig

    group = GroupRecorder()
    plugins = build_reward_plugins(
        [
            RewardSpec(name="accuracy", tasks=["solve"], kwargs={"extract": "first_boxed"}),
            RewardSpec(name="spark_judge"),
        ]
    )
    # Random scores give every group reward variance (the tiny model never answers), so steps learn.
    plugins += [RewardPlugin(SeededRandom(), "random"), RewardPlugin(group, "group", weight=0.5)]
    scored: list[ScoredBatch] = []
    trainer = make_trainer(
        gpu_model,
        math_jsonl,
        plugins,
        tmp_path,
        hooks={"queue": GroupQueue(max_fraction=0.5, schedule="interleave"), "scored_hooks": [scored.append]},
        max_steps=2,  # a queue adds steps an epoch count cannot foresee: the run is bounded by max_steps
    )
    trainer.scored_hooks.append(
        Recycler(SparkConfig(), trainer.queue, log=trainer.log_metric, extract="first_boxed")
    )
    before = trainable(trainer.model)
    trainer.train()

    assert device_of(trainer.model) == DEVICE
    logs = train_logs(trainer)
    assert len(logs) == 2 and all(math.isfinite(entry["loss"]) for entry in logs)
    assert any(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters())
    # The group reward saw the whole gathered batch once per step, G consecutive rows per prompt.
    assert len(group.calls) == 2
    for call in group.calls:
        assert call["group_size"] == G and len(call["completions"]) == B
        prompts = call["prompts"]
        assert all(p == prompts[start] for start in range(0, B, G) for p in prompts[start : start + G])
    # Step 1's wrong solve groups were recycled into a reflection task, trained as step 2's second group.
    assert logs[0]["recycle/made_reflection"] >= 1
    assert group.calls[1]["columns"]["task"] == [None] * G + ["reflection"] * G
    assert logs[1]["feed/recycled_share"] == 0.5
    # Both scored batches (rewards incl. the group column, advantages) were computed on the GPU.
    assert len(scored) == 2
    for batch in scored:
        assert batch.rewards_per_func.device.type == DEVICE and batch.advantages.device.type == DEVICE
        assert batch.rewards_per_func.shape == (B, 4)
        expected = torch.tensor([(i % G) / G for i in range(B)], device=batch.rewards_per_func.device)
        assert torch.allclose(batch.rewards_per_func[:, 3], expected)


# --------------------------------------------------------------------------------------------------
# Held-out evaluation
# --------------------------------------------------------------------------------------------------


def test_evaluate_generates_on_the_gpu(gpu_model, math_jsonl):
    from posttrain.evaluation import evaluate

    model, tok = load_model(ModelConfig(name_or_path=gpu_model), device=DEVICE)
    _, eval_ds = load_datasets(DataConfig(path=math_jsonl, eval_size=4))
    devices = []
    generate = model.generate

    def spy(*args, **kwargs):
        devices.append(kwargs["input_ids"].device.type)
        out = generate(*args, **kwargs)
        devices.append(out.device.type)
        return out

    model.generate = spy
    result = evaluate(model, tok, eval_ds, max_new_tokens=8, num_samples=2, temperature=1.0)
    assert devices and set(devices) == {DEVICE}  # greedy and sampled passes, inputs and outputs
    if HAS_CUDA:
        assert next(model.parameters()).dtype == torch.float32  # evaluate() autocasts over fp32 masters
    metrics = result.metrics
    assert metrics["n"] == 4 and 0.0 <= metrics["accuracy_greedy"] <= 1.0
    assert 0.0 <= metrics["mean@2"] <= 1.0 and 0.0 <= metrics["maj@2"] <= 1.0
    assert len(result.predictions) == 4 and all(len(p["samples"]) == 2 for p in result.predictions)
