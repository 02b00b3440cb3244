"""The real embedded SmolLM2-135M end to end (minutes on 2 cores): `pytest -m slow`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_quickstart_recipe_runs_on_the_embedded_model(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "posttrain.cli", "train", "recipes/quickstart.yaml",
        "--max_steps", "2", "--data.size", "32", "--data.eval_size", "8", "--eval.num_samples", "2",
        "--per_device_train_batch_size", "16", "--time_budget", "null", "--output_dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2
    assert set(summary["eval"]) == {"before", "after"}
    assert "Held-out accuracy (n=8)" in proc.stdout


def test_gcpo_geometry_recipe_runs_on_the_embedded_model(tmp_path):
    """The acceptance run of the GCPO issue: the recipe header's CPU-shrinking flags, 2 steps."""
    out = tmp_path / "gcpo"
    cmd = [
        sys.executable, "-m", "posttrain.cli", "train", "recipes/gcpo_geometry.yaml",
        "--model.name_or_path", "embedded", "--rollout.engine", "hf", "--max_steps", "2",
        "--data.size", "64", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--steps_per_generation", "1", "--max_completion_length", "64", "--gradient_checkpointing", "false",
        "--eval.before", "false", "--eval.after", "false", "--output_dir", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(steps) == 2 and all("gcpo/mask_zero" in m for m in steps)
