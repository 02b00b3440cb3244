"""Tests for asynchronous generation (posttrain/rollout/asynchronous.py, ``rollout.async``).

pytest tests/test_async.py -q

The rules on their own (staleness, depth, the config), then the trainer on a tiny model with the
in-process transformers engine and with the server engine: the policy lag never exceeds k and equals
the step minus the version the engine reports, the importance correction sees the engine's own
log-probs, the data order is the synchronous feed's, k = 0 is the synchronous run, a rollout of unknown
weights (a restarted server) is generated again, and an engine that dies mid-run leaves a checkpoint
from which ``--resume`` regenerates the batches that were in flight. The two-process ZeRO-2 run is in
tests/test_distributed.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers_plugins import SeededRandom
from test_rollout_server import ThreadServer, _config
from test_trainer import make_trainer, train_logs

from posttrain import cli
from posttrain.config import load_recipe
from posttrain.errors import ConfigError, RolloutError
from posttrain.rewards import RewardPlugin
from posttrain.rollout.asynchronous import (
    AsyncRollout,
    LocalBackend,
    ServerBackend,
    policy_lag,
    prefetch_depth,
    too_stale,
)
from posttrain.rollout.client import ServerEngine
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.factory import async_engine
from posttrain.rollout.hf import HFEngine
from posttrain.rollout.server import server_info

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------------


def test_staleness_rule_on_a_table():
    # (step, version, k) -> too stale?
    table = [
        (5, 5, 1, False),
        (5, 4, 1, False),
        (5, 3, 1, True),
        (5, 3, 2, False),
        (5, None, 3, True),
        (2, 3, 1, True),
    ]
    for step, version, k, expected in table:
        assert too_stale(step, version, k) is expected, (step, version, k)
    assert policy_lag(7, 5) == 2 and policy_lag(7, None) is None


def test_prefetch_depth_follows_the_steps_one_batch_feeds():
    assert prefetch_depth(1, 1) == 1 and prefetch_depth(2, 1) == 2 and prefetch_depth(4, 2) == 2
    with pytest.raises(ConfigError, match="max_staleness >= 2"):
        prefetch_depth(1, 2)


@pytest.mark.parametrize("value", [-1, 1.5, "1", True])
def test_bad_max_staleness_is_refused(value):
    with pytest.raises(ConfigError, match="max_staleness must be an integer >= 0"):
        AsyncRollout(enabled=True, max_staleness=value)


def test_recipe_key_is_rollout_async_and_survives_the_written_recipe(tmp_path):
    flags = ["--rollout.async.enabled", "true", "--rollout.async.max_staleness", "2"]
    recipe = load_recipe(REPO / "recipes/quickstart.yaml", flags)
    assert (
        recipe.rollout.async_ == AsyncRollout(enabled=True, max_staleness=2) and recipe.rollout.async_.active
    )
    recipe.save(tmp_path / "r.yaml")
    assert yaml.safe_load((tmp_path / "r.yaml").read_text())["rollout"]["async"]["max_staleness"] == 2
    assert load_recipe(tmp_path / "r.yaml").rollout.async_.max_staleness == 2
    assert not RolloutConfig(async_={"enabled": True, "max_staleness": 0}).async_.active  # k = 0: synchronous
    with pytest.raises(ConfigError, match="Unknown key"):
        RolloutConfig(async_={"enabled": True, "staleness": 1})


def test_vllm_colocated_cannot_generate_while_training():
    with pytest.raises(ConfigError, match="rollout.mode: server"):
        RolloutConfig(engine="vllm", mode="colocate", async_={"enabled": True})


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class Recording:
    """Wraps a backend: the version each generation ran with and its log-probs, in order."""

    def __init__(self, backend, forget_at: int | None = None):
        self.backend, self.versions, self.logprobs, self.forget_at = backend, [], [], forget_at

    def generate(self, prompt_ids, n, sampling):
        out = self.backend.generate(prompt_ids, n, sampling)
        if len(self.versions) == self.forget_at:  # as a server restarted with its start weights answers
            out.info["weights_version"] = None
        self.versions.append(out.info["weights_version"])
        self.logprobs.append(out.logprobs)
        return out

    def load(self, tensors, version):
        self.backend.load(tensors, version)


class Prompts:
    """A reward that records the prompts of every training batch (scores 0)."""

    def __init__(self):
        self.batches = []

    def __call__(self, prompts, completions, **kwargs):
        self.batches.append([p[-1]["content"] if isinstance(p, list) else p for p in prompts])
        return [0.0] * len(completions)


def _trainer(tiny_model, math_jsonl, out, k, steps=4, forget_at=None, **kwargs):
    prompts = Prompts()
    plugins = [RewardPlugin(SeededRandom(), "random"), RewardPlugin(prompts, "prompts", weight=0.0)]
    trainer = make_trainer(tiny_model, math_jsonl, plugins, out, max_steps=steps, **kwargs)
    if k is None:  # synchronous, with the same feed the asynchronous run composes from
        trainer.start_feed()
        return trainer, prompts, None
    cfg = RolloutConfig(async_={"enabled": True, "max_staleness": k})
    engine, backend = async_engine(cfg, trainer.model, trainer.processing_class, trainer.accelerator)
    recording = Recording(backend, forget_at)
    trainer.enable_async_generation(engine, recording, k)
    return trainer, prompts, recording


def _captured(trainer):
    """Each training batch's scored output (what the loss sees), in order."""
    seen, score = [], trainer._score_round

    def capture(inputs):
        out = score(inputs)
        seen.append(out)
        return out

    trainer._score_round = capture
    return seen


@pytest.mark.parametrize("k", [1, 2])
def test_lag_never_exceeds_k_and_is_the_step_minus_the_engines_version(k, tiny_model, math_jsonl, tmp_path):
    trainer, prompts, recording = _trainer(tiny_model, math_jsonl, tmp_path, k)
    seen = _captured(trainer)
    trainer.train()
    trainer.generation.close()
    lags = [entry["async/lag"] for entry in train_logs(trainer)]
    assert lags == [min(step, k) for step in range(4)]  # the pipeline fills, then stays k behind
    # The logged lag is the step minus the version the engine generated that batch with.
    assert lags == [step - recording.versions[step] for step in range(4)]
    # At most k batches were in flight when training stopped: close() cancels the ones the worker had not
    # started yet, so how many of them ran depends on timing (a loaded machine ran k=2 as 4 + 1).
    assert 4 <= len(recording.versions) <= 4 + k
    # The importance correction got the engine's own log-probs for the rows it trained on.
    for out, logprobs in zip(seen, recording.logprobs, strict=False):
        sampled, mask = out["sampling_per_token_logps"], out["completion_mask"].bool()
        for row, expected in enumerate(logprobs):
            assert torch.allclose(sampled[row][mask[row]], torch.tensor(expected), atol=1e-6)
    assert all(entry["rollout/is_weight_mean"] > 0 for entry in train_logs(trainer))


def test_data_order_is_the_synchronous_feeds_and_reproducible(tiny_model, math_jsonl, tmp_path):
    _, sync_prompts, _ = (t := _trainer(tiny_model, math_jsonl, tmp_path / "sync", None))
    t[0].train()
    orders = []
    for run in ("a", "b"):
        trainer, prompts, _ = _trainer(tiny_model, math_jsonl, tmp_path / run, 2)
        trainer.train()
        trainer.generation.close()
        orders.append(prompts.batches)
    assert orders[0] == orders[1] == sync_prompts.batches
    assert len(orders[0]) == 4


def test_max_staleness_zero_is_the_synchronous_run(tiny_model, math_jsonl, tmp_path):
    """k = 0 installs nothing: the same command with and without it gives the same losses, step for step."""
    data = tmp_path / "r.yaml"
    recipe = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
    recipe["data"] = {"path": math_jsonl}
    data.write_text(yaml.safe_dump(recipe))
    tiny = ["--model.name_or_path", tiny_model, "--max_steps", "2", "--per_device_train_batch_size", "8",
            "--num_generations", "4", "--max_completion_length", "8", "--eval.before", "false", "--eval.after",
            "false", "--run.plot", "false", "--run.time_budget", "null", "--bf16", "false",
            "--gradient_checkpointing", "false", "--rewards", json.dumps([{"name": "helpers_plugins:SeededRandom"}])]  # fmt: skip
    losses = []
    for name, extra in [
        ("sync", []),
        ("k0", ["--rollout.async.enabled", "true", "--rollout.async.max_staleness", "0"]),
    ]:
        assert cli.main(["train", str(data), *tiny, *extra, "--output_dir", str(tmp_path / name)]) == 0
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        losses.append([row["loss"] for row in rows if "loss" in row])
        assert not any("async/lag" in row for row in rows)
    assert losses[0] == losses[1] and len(losses[0]) == 2


def test_rollouts_of_unknown_weights_are_generated_again(tiny_model, math_jsonl, tmp_path):
    # The third generation comes back without a version (a server restarted with its start weights).
    trainer, _, recording = _trainer(tiny_model, math_jsonl, tmp_path, 1, forget_at=2)
    trainer.train()
    trainer.generation.close()
    logs = train_logs(trainer)
    assert [entry["async/lag"] for entry in logs] == [0, 1, 0, 1]  # step 2's batch: regenerated now
    assert logs[-1]["async/regenerated"] == 1
    assert recording.versions[:4] == [0, 0, None, 2]  # the regeneration ran with step 2's weights


def test_checkpoint_resumes_before_the_batches_in_flight(tiny_model, math_jsonl, tmp_path):
    trainer, _, _ = _trainer(tiny_model, math_jsonl, tmp_path, 2, steps=3)
    trainer.train()
    trainer.generation.close()
    # 3 batches trained, 2 composed ahead: a checkpoint says "resume at batch 3", the feed itself is at 5.
    assert trainer.feed.batches == 5
    assert trainer.generation.checkpoint_state(trainer.feed)["batches"] == 3


def test_methods_async_cannot_serve_are_refused(tiny_model, math_jsonl, tmp_path):
    from posttrain.queue import GroupQueue

    plugins = [RewardPlugin(SeededRandom(), "random")]
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path, queue=GroupQueue())
    with pytest.raises(ConfigError, match="recycled tasks"):
        trainer.enable_async_generation(None, None, 1)
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path / "b")
    trainer.rollout_func = lambda prompts, trainer: {}
    with pytest.raises(ConfigError, match="tool loop"):
        trainer.enable_async_generation(None, None, 1)
    trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path / "c", steps_per_generation=2,
                           gradient_accumulation_steps=1)  # fmt: skip
    engine = HFEngine(trainer.model, trainer.processing_class)
    with pytest.raises(ConfigError, match="max_staleness >= 2"):
        trainer.enable_async_generation(engine, LocalBackend(engine), 1)


# --------------------------------------------------------------------------------------------------
# The server engine
# --------------------------------------------------------------------------------------------------


def _serve(tiny_model, engine_cls=HFEngine, port: int = 0):
    from posttrain.models import ModelConfig, load_model
    from posttrain.rollout.vllm import model_signature

    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    engine = engine_cls(model, tokenizer)
    return ThreadServer(
        engine, server_info(tiny_model, engine, model_signature(model.config), False), port=port
    )


def test_server_engine_reports_the_version_it_generated_with(tiny_model, math_jsonl, tmp_path):
    server = _serve(tiny_model)
    try:
        prompts = Prompts()
        plugins = [RewardPlugin(SeededRandom(), "random"), RewardPlugin(prompts, "prompts", weight=0.0)]
        trainer = make_trainer(tiny_model, math_jsonl, plugins, tmp_path, max_steps=3)
        engine = ServerEngine(_config(server.url), model_for_signature=trainer.model)
        recording = Recording(ServerBackend(engine))
        trainer.enable_async_generation(engine, recording, 1)
        trainer.train()
        trainer.generation.close()
    finally:
        server.stop()
    assert recording.versions == [0, 0, 1, 2]  # tagged by the server, from the pushes' version
    assert [entry["async/lag"] for entry in train_logs(trainer)] == [0, 1, 1]


class DiesAfter(HFEngine):
    """Generates three batches, then fails every request (an engine that died behind its server)."""

    calls = 0

    def generate(self, prompt_ids, n, sampling):
        DiesAfter.calls += 1
        if DiesAfter.calls > 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().generate(prompt_ids, n, sampling)


def test_an_engine_dying_mid_run_leaves_a_checkpoint_and_resume_regenerates(
    tiny_model, math_jsonl, tmp_path, capsys
):
    recipe = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
    recipe["data"] = {"path": math_jsonl}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    DiesAfter.calls = 0
    server = _serve(tiny_model, DiesAfter)
    out = tmp_path / "run"
    flags = ["--model.name_or_path", tiny_model, "--max_steps", "5", "--per_device_train_batch_size", "8",
             "--num_generations", "4", "--max_completion_length", "8", "--eval.before", "false", "--eval.after",
             "false", "--run.plot", "false", "--run.time_budget", "null", "--bf16", "false", "--save_steps", "100",
             "--gradient_checkpointing", "false", "--rewards", json.dumps([{"name": "helpers_plugins:SeededRandom"}]),
             "--rollout.mode", "server", "--rollout.server_url", server.url, "--rollout.retries", "0",
             "--rollout.async.enabled", "true", "--rollout.async.max_staleness", "1", "--output_dir", str(out)]  # fmt: skip
    try:
        assert cli.main(["train", str(tmp_path / "r.yaml"), *flags]) != 0
    finally:
        server.stop()
    message = capsys.readouterr().err
    assert "--resume" in message and "checkpoint-3" in message
    # Batches 0-2 generated (two at the start, then one per step); batch 3's generation failed, found
    # when step 4 waited for it: steps 1-3 trained.
    state = torch.load(out / "checkpoint-3" / "posttrain_state.pt", weights_only=True)
    assert state["feed"]["batches"] == 3  # resume composes batch 3 (generated, never trained) again
    server = _serve(tiny_model, port=int(server.url.rsplit(":", 1)[1]))
    try:
        assert cli.main(["train", str(out / "recipe.yaml"), "--resume"]) == 0
    finally:
        server.stop()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3, 4, 5]


class PushFailsOnce(Recording):
    def load(self, tensors, version):
        if version == 1:
            raise RolloutError("The rollout server did not answer a weight push")
        super().load(tensors, version)


def test_a_failed_weight_push_stops_the_run_instead_of_training_on_old_weights(
    tiny_model, math_jsonl, tmp_path
):
    trainer, _, _ = _trainer(tiny_model, math_jsonl, tmp_path, 1)
    trainer.generation.worker.backend = PushFailsOnce(trainer.generation.worker.backend.backend)
    with pytest.raises(RolloutError, match="weight push"):
        trainer.train()
    trainer.generation.close()
    assert trainer.state.global_step <= 2
