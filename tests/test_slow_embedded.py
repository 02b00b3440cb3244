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
