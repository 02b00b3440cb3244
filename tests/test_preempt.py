"""Preemption (posttrain/preempt.py): SIGTERM finishes the step, checkpoints, exits 0; a second exits at once.

    pytest tests/test_preempt.py -q

The real ``posttrain train`` runs in a subprocess on the tiny model with a long step budget; the test
waits for the first logged step, then signals it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from test_cli import _env, _metrics, _posttrain, setup  # noqa: F401  (the module-scoped recipe fixture)

from posttrain.checkpoints import check
from posttrain.preempt import Preemption


def _start(setup, out: Path, steps: int = 200) -> subprocess.Popen:  # noqa: F811
    args = [*_posttrain(), "train", str(setup["recipe"]), "--output_dir", str(out), "--max_steps", str(steps)]
    args += ["--save_steps", "1000", "--eval.before", "false", "--eval.after", "false", "--run.plot", "false"]
    return subprocess.Popen(
        args, env=setup["env"], cwd=setup["base"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for_steps(proc: subprocess.Popen, metrics: Path, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before step {n}: {proc.stderr.read()[-3000:]}")
        if metrics.exists() and sum("loss" in m for m in _metrics(metrics)) >= n:
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no step {n} within {timeout} s")


def test_sigterm_checkpoints_and_exits_zero_then_resume_continues(setup, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    proc = _start(setup, out)
    _wait_for_steps(proc, out / "metrics.jsonl", 1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    steps = [m["step"] for m in _metrics(out / "metrics.jsonl") if "loss" in m]
    last = steps[-1]
    assert last < 200 and (out / f"checkpoint-{last}").is_dir()  # saved although save_steps is 1000
    assert check(out / f"checkpoint-{last}") is None
    assert "Resume with" in stdout + stderr and f"{out / 'recipe.yaml'} --resume" in stdout + stderr
    assert not (out / "summary.json").exists()  # the run is not finished

    args = [str(out / "recipe.yaml"), "--resume", "--max_steps", str(last + 1)]
    done = subprocess.run(
        [*_posttrain(), "train", *args],
        env=setup["env"],
        cwd=setup["base"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == last + 1


def test_a_second_sigterm_exits_at_once(monkeypatch):
    from transformers import TrainerControl, TrainerState

    exits = []
    monkeypatch.setattr("posttrain.preempt.os._exit", exits.append)
    before = signal.getsignal(signal.SIGTERM)
    callback = Preemption()
    callback.on_train_begin(None, TrainerState(), TrainerControl())
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert callback.requested and exits == []  # the first one only asks the run to stop
        control = callback.on_step_end(None, TrainerState(global_step=7), TrainerControl())
        assert control.should_save and control.should_training_stop and callback.step == 7
        os.kill(os.getpid(), signal.SIGTERM)
        assert exits == [143]  # the second one exits at once, with the status a SIGTERM death has
    finally:
        callback.on_train_end(None, TrainerState(), TrainerControl())
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is only installed during training
