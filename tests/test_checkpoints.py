"""Checkpoints that cannot be half-written (posttrain/checkpoints.py).

    pytest tests/test_checkpoints.py -q

A checkpoint is staged, sealed with a manifest and renamed; ``--resume`` takes the newest one that
matches its manifest and names the ones it skipped; ``save_total_limit`` never deletes the newest
complete one; a full disk leaves the earlier checkpoints intact and stops with the folder and the space.
"""

from __future__ import annotations

import errno
import json
import logging

import pytest
import torch
from helpers_plugins import Counter
from test_trainer import make_trainer

from posttrain import checkpoints
from posttrain.checkpoints import MANIFEST, CheckpointSpaceError, check, latest_complete, resume_point
from posttrain.errors import OutputDirError
from posttrain.rewards import RewardPlugin
from posttrain.state import save as real_save


def _fake(run, step: int, sealed: bool = True, payload: bytes = b"weights") -> None:
    folder = run / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(payload * 100)
    (folder / "sub" / "rng.pth").write_bytes(b"rng")
    (folder / "trainer_state.json").write_text("{}")
    if sealed:
        checkpoints.write_manifest(folder, step)


def test_training_publishes_sealed_checkpoints_and_keeps_the_newest(tiny_model, math_jsonl, tmp_path):
    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        [RewardPlugin(Counter(), "counter")],
        tmp_path,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=1,
    )
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (tmp_path / checkpoints.STAGING).exists()
    folder = tmp_path / "checkpoint-2"
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["step"] == 2
    assert {"model.safetensors", "trainer_state.json", "posttrain_state.pt"} <= set(manifest["files"])
    assert check(folder) is None
    assert latest_complete(tmp_path) == (str(folder), [])


def test_resume_skips_newer_broken_checkpoints_and_says_why(tmp_path, caplog):
    for step in (1, 2, 3, 4):
        _fake(tmp_path, step, sealed=step != 4)
    (tmp_path / "checkpoint-3" / "model.safetensors").write_bytes(b"cut")  # truncated after sealing
    (tmp_path / "checkpoint-2" / "sub" / "rng.pth").write_bytes(b"RNG")  # same size, other bytes
    with caplog.at_level(logging.WARNING, logger="posttrain.checkpoints"):
        assert resume_point(tmp_path) == str(tmp_path / "checkpoint-1")
    reasons = dict(latest_complete(tmp_path)[1])
    assert reasons["checkpoint-4"].startswith("no manifest")
    assert "model.safetensors has 3 bytes" in reasons["checkpoint-3"]
    assert "sub/rng.pth does not match its checksum" in reasons["checkpoint-2"]
    assert all(name in caplog.text for name in ("checkpoint-2", "checkpoint-3", "checkpoint-4"))


def test_resume_without_a_complete_checkpoint_names_each_reason(tmp_path):
    _fake(tmp_path, 5)
    (tmp_path / "checkpoint-5" / "model.safetensors").unlink()
    _fake(tmp_path, 6, sealed=False)
    with pytest.raises(OutputDirError) as err:
        resume_point(tmp_path)
    message = str(err.value)
    assert "checkpoint-5: model.safetensors is missing" in message and "checkpoint-6: no manifest" in message
    assert "Run without --resume" in message


def test_checkpoints_of_a_plain_trainer_are_still_resumable(tmp_path):
    _fake(tmp_path, 1, sealed=False)
    _fake(tmp_path, 2, sealed=False)
    assert latest_complete(tmp_path) == (str(tmp_path / "checkpoint-2"), [])


def test_a_save_killed_midway_leaves_only_staging_behind(tmp_path):
    _fake(tmp_path, 1)
    staged = checkpoints.staging_dir(tmp_path) / "checkpoint-2"
    staged.mkdir(parents=True)
    (staged / "model.safetensors").write_bytes(b"half")  # killed before the manifest and the rename
    assert latest_complete(tmp_path) == (str(tmp_path / "checkpoint-1"), [])
    checkpoints.clear_staging(tmp_path)  # what the next save does first
    assert not checkpoints.staging_dir(tmp_path).exists() and check(tmp_path / "checkpoint-1") is None


def test_saving_the_same_step_again_replaces_it_whole(tmp_path):
    _fake(tmp_path, 3, payload=b"old")
    staged = checkpoints.staging_dir(tmp_path)
    _fake(staged, 3, sealed=False, payload=b"new")
    checkpoints.publish(tmp_path, 3)
    assert (tmp_path / "checkpoint-3" / "model.safetensors").read_bytes() == b"new" * 100
    assert check(tmp_path / "checkpoint-3") is None


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_space(
    tiny_model, math_jsonl, tmp_path, monkeypatch
):
    trainer = make_trainer(
        tiny_model,
        math_jsonl,
        [RewardPlugin(Counter(), "counter")],
        tmp_path,
        save_strategy="steps",
        save_steps=1,
    )
    calls = []

    def save(folder, *args, **kwargs):  # the second save runs out of space halfway
        calls.append(folder)
        real_save(folder, *args, **kwargs)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("posttrain.trainer_checkpoints.checkpoint_state.save", save)
    with pytest.raises(CheckpointSpaceError) as err:
        trainer.train()
    message = str(err.value)
    assert "checkpoint-2" in message and str(tmp_path) in message
    assert "checkpoint-1 is intact" in message and "GiB" in message and "--resume" in message
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == ["checkpoint-1"]
    assert check(tmp_path / "checkpoint-1") is None
    assert not checkpoints.staging_dir(tmp_path).exists()


def test_a_resumed_run_only_gets_what_is_left_of_its_time_budget(tiny_model, math_jsonl, tmp_path):
    from posttrain.callbacks import TimeBudget

    first = make_trainer(
        tiny_model,
        math_jsonl,
        [RewardPlugin(Counter(), "counter")],
        tmp_path,
        save_strategy="steps",
        save_steps=1,
    )
    first.add_callback(TimeBudget(3600))
    first.train()
    saved = json.loads((tmp_path / "checkpoint-1" / "trainer_state.json").read_text())
    spent = saved["stateful_callbacks"]["TimeBudget"]["attributes"]["spent"]
    assert spent > 0

    # Resumed with a budget the first step already used up: it stops after one more step.
    resumed = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(Counter(), "counter")], tmp_path, max_steps=5
    )
    budget = TimeBudget(spent)
    resumed.add_callback(budget)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert budget.spent == pytest.approx(spent) and resumed.state.global_step == 2


def _nan_on_steps(trainer, bad_steps: set[int]):
    """Make the loss NaN during the given (1-based) optimizer steps."""
    compute = trainer.compute_loss

    def compute_loss(model, inputs, *args, **kwargs):
        loss = compute(model, inputs, *args, **kwargs)
        return loss * float("nan") if trainer.state.global_step + 1 in bad_steps else loss

    trainer.compute_loss = compute_loss


def test_a_nan_loss_skips_the_step_and_leaves_the_weights(tiny_model, math_jsonl, tmp_path):
    from transformers import TrainerCallback

    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(Counter(), "counter")], tmp_path, max_steps=3
    )
    _nan_on_steps(trainer, {2})
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})

    trainer.add_callback(Snapshot())
    trainer.train()
    after_1, after_2, after_3 = snapshots
    assert all(torch.equal(after_1[n], after_2[n]) for n in after_1)  # step 2 changed nothing
    assert any(not torch.equal(after_2[n], after_3[n]) for n in after_2)  # step 3 trained again
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.guard.skipped == 1 and trainer.guard.in_a_row == 0
    logged = [h for h in trainer.state.log_history if "skipped/nonfinite" in h]
    assert [h["step"] for h in logged] == [2]


def test_too_many_nan_steps_in_a_row_stop_the_run(tiny_model, math_jsonl, tmp_path):
    from posttrain.errors import TrainingError

    trainer = make_trainer(
        tiny_model, math_jsonl, [RewardPlugin(Counter(), "counter")], tmp_path, max_steps=6
    )
    trainer.guard.limit = 2
    _nan_on_steps(trainer, {2, 3, 4, 5})
    with pytest.raises(TrainingError, match="3 steps in a row.*max_nonfinite_steps = 2"):
        trainer.train()
    assert trainer.state.global_step == 3  # steps 2 and 3 skipped, the third bad one stopped it
