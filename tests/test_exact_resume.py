"""Exact resume: a run resumed from a checkpoint reproduces the uninterrupted run, per method.

    pytest tests/test_exact_resume.py -q

Each shipped recipe (shrunk to the tiny model, fp32, seed 0, plus a seeded random reward so that every
step learns) trains 4 steps with a checkpoint every 2. The copy of that run loses everything after
``checkpoint-2`` (as a run killed during step 3 or 4 would) and is resumed. Every logged loss, reward
and advantage statistic of steps 3 and 4 must equal the uninterrupted run's to 1e-6, each step must be
logged once, and the final weights must match: the data order, the RNGs, the optimizer, the reward
plugins' state, SPARK's queue and phase, pay-per-search's history and TTRL's vote split all resume.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "--rollout.engine", "hf", "--gradient_checkpointing", "false", "--eval.before", "false",
    "--eval.after", "false", "--per_device_train_batch_size", "8", "--num_generations", "4",
    "--steps_per_generation", "1", "--run.plot", "false", "--bf16", "false", "--seed", "0",
    "--report_to", "tensorboard", "--max_steps", "4", "--save_steps", "2",
]  # fmt: skip
RECIPES = {
    "grpo": ("quickstart", ["--data.size", "32", "--max_completion_length", "16", "--gradient_accumulation_steps", "2"]),
    "spark": ("spark_math", ["--data.max_samples", "32", "--max_completion_length", "16"]),
    "mash": ("mash_search", ["--data.max_samples", "16", "--max_completion_length", "48", "--search.max_turn_tokens", "24"]),
    # 32 questions, 16 per optimizer step (gradient accumulation 8): the resume falls in the second epoch.
    "memory_r_plus": ("memory_r_gsm8k", ["--data.max_samples", "32", "--max_completion_length", "16"]),
    # DAPO with dynamic sampling: the feed's position after a varying number of rounds per step resumes too.
    "dapo": ("quickstart", ["--data.size", "32", "--max_completion_length", "16", "--method.name", "dapo"]),
    "ttrl": ("quickstart", ["--data.size", "32", "--max_completion_length", "16", "--method.name", "ttrl", "--method.train_samples", "2"]),
}  # fmt: skip
NOT_COMPARED = ("time/", "step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")

torch.set_num_threads(1)


def _rows(out: Path) -> list[dict]:
    return [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]


def _tensorboard_steps(out: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for folder in sorted({e.parent for e in (out / "runs").rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder))  # what TensorBoard shows, purged events left out
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars(tag)]
    return sorted(steps)


@pytest.mark.parametrize("method, last", [*((m, 2) for m in RECIPES), ("grpo", 4)])
def test_a_resumed_run_reproduces_the_uninterrupted_one(method, last, tiny_model, tmp_path, monkeypatch):
    """``last``: the newest checkpoint the killed run kept (4: killed after its final checkpoint, before
    the final model was written; transformers alone would train a fifth step)."""
    from posttrain import cli

    monkeypatch.chdir(REPO)  # recipes name their data relative to the repository
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    name, flags = RECIPES[method]
    recipe = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())
    recipe["rewards"].append({"name": "helpers_plugins:SeededRandom", "weight": 1.0})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    common = ["train", str(path), *TINY, *flags, "--model.name_or_path", tiny_model]

    full = tmp_path / "full"
    assert cli.main([*common, "--output_dir", str(full)]) == 0
    killed = tmp_path / "killed"
    shutil.copytree(full, killed)
    if last == 2:
        shutil.rmtree(
            killed / "checkpoint-4"
        )  # killed during step 4 (its rows are logged, its checkpoint not)
    for leftover in ("model.safetensors", "summary.json"):
        (killed / leftover).unlink(missing_ok=True)
    assert cli.main([*common, "--output_dir", str(killed), "--resume"]) == 0

    want, got = _rows(full), _rows(killed)
    assert [r["step"] for r in got] == [1, 2, 3, 4]  # each step logged once
    for a, b in zip(want[2:], got[2:]):
        keys = [k for k, v in a.items() if isinstance(v, float) and not k.startswith(NOT_COMPARED)]
        assert {"loss", "reward"} <= set(keys)
        for key in keys:
            x, y = a[key], b.get(key)
            same = (x is None and y is None) or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-6
            assert same, f"step {a['step']} {key}: uninterrupted {x}, resumed {y}; all: " + str(
                {k: (a[k], b.get(k)) for k in keys if a[k] != b.get(k)}
            )
    if method == "grpo" and last == 2:  # TensorBoard shows each step once too
        assert (
            _tensorboard_steps(killed, "train/loss") == _tensorboard_steps(full, "train/loss") == [1, 2, 3, 4]
        )
    w_full, w_resumed = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert max((w_full[k] - w_resumed[k]).abs().max().item() for k in w_full) <= 1e-6
