"""End-to-end tests of the ``posttrain`` command (posttrain/cli.py, posttrain/train.py).

pytest tests/test_cli.py -q

The real command runs in a subprocess on the tiny random model (a few seconds each, mostly imports):
train, refuse to clobber, resume, overwrite, ``python -m posttrain.train``, ``accelerate launch``
and ``posttrain eval``. Bad inputs run the same entry point in-process (``posttrain.cli.main``), which
is what the console script calls, to keep the suite fast.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers_plugins import SEEN
from safetensors.torch import load_file

from posttrain import cli
from posttrain.config import load_recipe
from posttrain.errors import OutputDirError
from posttrain.rewards import completion_text
from posttrain.train import check_output_dir

torch.set_num_threads(1)  # in-process runs: a 32-wide model only loses time to threads on a busy CPU

TESTS = Path(__file__).parent
ROOT = TESTS.parent
BIN = Path(sys.executable).parent
# A user's reward plugin (tests/fixtures/my_reward.py), copied outside the package and named by
# dotted path in the recipe.
USER_PLUGIN = TESTS / "fixtures" / "my_reward.py"


def _posttrain() -> list[str]:
    script = BIN / "posttrain"
    return [str(script)] if script.exists() else [sys.executable, "-m", "posttrain.cli"]


def _env(plugin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POSTTRAIN_DEBUG"}
    env.update(
        PYTHONPATH=os.pathsep.join([str(plugin_dir), str(TESTS)]),
        OMP_NUM_THREADS="1",  # see torch.set_num_threads above
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
    )
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def setup(tiny_model, tmp_path_factory):
    """A plugin folder, a 16-row data set (4 held out) and a recipe training 2 steps with checkpoints."""
    base = tmp_path_factory.mktemp("cli")
    plugins = base / "plugins"
    plugins.mkdir()
    (plugins / "my_plugin.py").write_text(USER_PLUGIN.read_text())
    data = base / "sums.jsonl"
    rows = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(4) for b in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = {
        "model": {"name_or_path": tiny_model},
        "data": {"path": str(data), "eval_size": 4},
        "rewards": [
            {"name": "my_plugin:brevity", "kwargs": {"max_words": 1}},
            # Random scores: every group has variance, so every parameter gets a gradient.
            {"name": "helpers_plugins:SeededRandom", "alias": "random"},
        ],
        "trainer": {
            "output_dir": str(base / "run"),
            "max_steps": 2,
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "max_completion_length": 8,
            "learning_rate": 1e-2,
            "save_steps": 1,
            "bf16": False,
        },
        "eval": {"before": True, "after": True, "num_samples": 2, "max_new_tokens": 8, "batch_size": 8},
    }
    recipe_path = base / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    return {"base": base, "recipe": recipe_path, "data": data, "env": _env(plugins), "model": tiny_model}


@pytest.fixture(scope="module")
def first_run(setup):
    """`posttrain train tiny.yaml`: the run the other subprocess tests start from."""
    result = _run([*_posttrain(), "train", str(setup["recipe"])], setup["env"], setup["base"])
    assert result.returncode == 0, result.stderr[-3000:]
    return result


# --------------------------------------------------------------------------------------------------
# Training end to end
# --------------------------------------------------------------------------------------------------


def test_train_writes_every_output_and_moves_every_weight(setup, first_run):
    out = setup["base"] / "run"
    for name in (
        "recipe.yaml",
        "metrics.jsonl",
        "summary.json",
        "training_curves.png",
        "eval_before.json",
        "eval_before_predictions.jsonl",
        "eval_after.json",
        "eval_after_predictions.jsonl",
        "model.safetensors",
        "checkpoint-2/posttrain_state.pt",
    ):
        assert (out / name).is_file(), name
    steps = [m for m in _metrics(out / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    # The user plugin from outside the package was trained on and logged under its name.
    assert all("rewards/brevity/mean" in m and "rewards/random/mean" in m for m in steps)
    # A plain run (no group plugin, no hook) still logs every named phase of a step.
    assert all(f"time/{phase}" in m for m in steps for phase in ("gen", "reward", "adv", "update"))
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert set(json.loads((out / "eval_before.json").read_text())) >= {"accuracy_greedy", "mean@2", "maj@2"}
    assert "Trained 2 steps" in first_run.stdout and "Held-out accuracy" in first_run.stdout
    # The resolved recipe reloads to the recipe the command ran.
    assert load_recipe(out / "recipe.yaml") == load_recipe(setup["recipe"])
    # Every weight in the saved model differs from the initial one.
    initial = load_file(Path(setup["model"]) / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert set(initial) == set(trained)
    unchanged = [name for name in initial if torch.equal(initial[name], trained[name])]
    assert not unchanged, f"unchanged after training: {unchanged}"


def test_rerun_into_the_same_folder_is_refused(setup, first_run):
    out = setup["base"] / "run"
    before = _snapshot(out)
    result = _run([*_posttrain(), "train", str(setup["recipe"])], setup["env"], setup["base"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("posttrain: error:")]
    assert len(errors) == 1 and "already holds a run" in errors[0]
    assert "--overwrite" in errors[0] and "--resume" in errors[0]
    assert _snapshot(out) == before  # nothing was touched


def test_resume_continues_from_the_last_checkpoint(setup, first_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(setup["base"] / "run", out)
    eval_before = (out / "eval_before.json").read_bytes()
    args = [str(setup["recipe"]), "--output_dir", str(out), "--resume", "--max_steps", "3"]
    result = _run([*_posttrain(), "train", *args], setup["env"], setup["base"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Restored reward-plugin state" in result.stderr
    steps = [m["step"] for m in _metrics(out / "metrics.jsonl") if "loss" in m]
    assert steps == [1, 2, 3]  # the earlier metrics kept, step 3 appended
    assert (out / "checkpoint-3").is_dir()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert (out / "eval_before.json").read_bytes() == eval_before  # not re-evaluated on resume


def test_resume_past_a_broken_checkpoint_logs_each_step_once(setup, first_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(setup["base"] / "run", out)
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"cut short")  # killed while copying, say
    old_step_2 = [m for m in _metrics(out / "metrics.jsonl") if m.get("step") == 2]
    args = [str(setup["recipe"]), "--output_dir", str(out), "--resume", "--max_steps", "3"]
    result = _run([*_posttrain(), "train", *args], setup["env"], setup["base"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Not resuming from checkpoint-2: model.safetensors has 9 bytes" in result.stderr
    steps = [m["step"] for m in _metrics(out / "metrics.jsonl") if "loss" in m]
    assert steps == [1, 2, 3]  # step 2 trained again from checkpoint-1, and logged once
    assert _metrics(out / "metrics.rolled_back.jsonl") == old_step_2  # the first attempt's rows, kept


def test_overwrite_through_the_module_entry_point(setup, first_run, tmp_path):
    """`python -m posttrain.train` is what `accelerate launch -m` runs."""
    out = tmp_path / "run"
    shutil.copytree(setup["base"] / "run", out)
    old_metrics = (out / "metrics.jsonl").read_bytes()
    flags = ["--output_dir", str(out), "--overwrite", "--max_steps", "1", "--eval.before", "false"]
    flags += ["--eval.after", "false", "--run.plot", "false"]
    result = _run([sys.executable, "-m", "posttrain.train", str(setup["recipe"]), *flags], setup["env"], ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    kept = [p for p in out.glob("metrics.*.jsonl")]
    assert len(kept) == 1 and kept[0].read_bytes() == old_metrics  # the old run's metrics, renamed
    assert [m["step"] for m in _metrics(out / "metrics.jsonl") if "loss" in m] == [1]
    assert json.loads((out / "summary.json").read_text())["steps"] == 1
    assert load_recipe(out / "recipe.yaml").run.overwrite is True


def test_accelerate_launch(setup, tmp_path):
    config = ROOT / "accelerate_configs" / "cpu.yaml"
    launcher = BIN / "accelerate"
    if not config.exists() or not launcher.exists():
        pytest.skip("accelerate_configs/cpu.yaml or the accelerate launcher is missing")
    out = tmp_path / "run"
    flags = ["--output_dir", str(out), "--max_steps", "1", "--eval.before", "false", "--eval.after", "false"]
    flags += ["--run.plot", "false", "--save_strategy", "no"]
    args = [str(launcher), "launch", "--config_file", str(config), "-m", "posttrain.train"]
    result = _run([*args, str(setup["recipe"]), *flags], setup["env"], ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["steps"] == 1


def test_eval_command(setup, tmp_path):
    args = ["eval", "--model", setup["model"], "--data", str(setup["data"]), "--num_samples", "2"]
    args += ["--max_new_tokens", "8", "--output_dir", str(tmp_path)]
    result = _run([*_posttrain(), *args], setup["env"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for metric in ("accuracy_greedy=", "mean@2=", "maj@2=", "n=16"):
        assert metric in result.stdout
    rows = [json.loads(line) for line in (tmp_path / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(len(row["samples"]) == 2 for row in rows)
    assert (tmp_path / "eval.json").is_file()


# --------------------------------------------------------------------------------------------------
# Bad input: one clear message, exit status 2 (in-process: same entry point, no subprocess cost)
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Call ``posttrain ...`` in-process; returns (exit status, stderr)."""
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)  # keep pytest's logging set-up
    monkeypatch.delenv("POSTTRAIN_DEBUG", raising=False)

    def run(*argv: str) -> tuple[int, str]:
        status = cli.main(list(argv))
        return status, capsys.readouterr().err

    return run


def _recipe(tmp_path: Path, tiny_model: str, data: Path, **sections) -> Path:
    recipe = {
        "model": {"name_or_path": tiny_model},
        "data": {"path": str(data)},
        "rewards": [{"name": "helpers_plugins:SeededRandom"}],
        "trainer": {
            "output_dir": str(tmp_path / "out"),
            "max_steps": 1,
            "num_generations": 4,
            "per_device_train_batch_size": 8,
            "max_completion_length": 8,
            "save_strategy": "no",
            "bf16": False,
        },
        "run": {"plot": False},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _boom_row_completion() -> str:
    return repr(completion_text(SEEN["boom"][0]))


@pytest.mark.parametrize(
    "case, phrases",
    [
        # The recipe file does not exist.
        ("missing-recipe", ["Recipe not found"]),
        # The recipe is not YAML.
        ("malformed-yaml", ["is not valid YAML"]),
        # A misspelt key: named, with the closest valid one.
        ("unknown-key", ["`eval.befor`", "`eval.before`"]),
        # A reward name that is neither built in nor importable.
        ("unknown-reward", ["Unknown reward 'acuracy'", "Did you mean 'accuracy'"]),
        # The data lack the question column.
        ("missing-column", ["has no column 'question'", "data.question_field"]),
        # The data file is empty.
        ("empty-data", ["has no rows"]),
        # Values torch would reject only once training starts (a traceback, before).
        ("negative-lr", ["trainer.learning_rate must be a number >= 0, got -1e-05", "--learning_rate"]),
        ("zero-temperature", ["trainer.temperature must be a number > 0, got 0"]),
        ("one-generation", ["trainer.num_generations must be a whole number >= 2, got 1"]),
        ("zero-max-steps", ["trainer.max_steps must be a positive whole number", "got 0"]),
        # The model folder does not exist.
        ("missing-model", ["does not exist", "model.name_or_path"]),
        # A plugin that raises: named, with the row and the completion it failed on.
        ("reward-raises", ["Reward 'boom' raised on row 0", "ValueError: boom", "completion:"]),
        # A plugin returning one score too few.
        ("reward-wrong-length", ["Reward 'short' returned 7 scores for 8 completions"]),
        # A plugin returning NaN.
        ("reward-nan", ["Reward 'nan_reward' returned nan for row 0"]),
        # Held-out evaluation asked for, but no held-out split.
        ("eval-without-split", ["no held-out split", "data.eval_size"]),
        # --resume where there is nothing to resume.
        ("resume-nothing", ["--resume was given", "holds no checkpoint"]),
    ],
)
def test_bad_input_is_one_clear_message(run_cli, tiny_model, math_jsonl, tmp_path, case, phrases):
    data = Path(math_jsonl)
    sections: dict = {}
    flags: list[str] = []
    if case == "malformed-yaml":
        recipe = tmp_path / "bad.yaml"
        recipe.write_text("data: {path: [\n")
    elif case == "missing-recipe":
        recipe = tmp_path / "nope.yaml"
    else:
        if case == "unknown-key":
            sections["eval"] = {"befor": True}
        elif case == "unknown-reward":
            sections["rewards"] = [{"name": "acuracy"}]
        elif case == "missing-column":
            data = tmp_path / "q.jsonl"
            data.write_text(json.dumps({"q": "1+1", "answer": "2"}) + "\n")
        elif case == "empty-data":
            data = tmp_path / "empty.jsonl"
            data.write_text("")
        elif case == "missing-model":
            sections["model"] = {"name_or_path": str(tmp_path / "no-model")}
        elif case.startswith("reward-"):
            name = {"reward-raises": "boom", "reward-wrong-length": "short", "reward-nan": "nan_reward"}[case]
            sections["rewards"] = [{"name": f"helpers_plugins:{name}"}]
        elif case == "eval-without-split":
            sections["eval"] = {"before": True}
        elif case == "resume-nothing":
            flags = ["--resume"]
        elif case in ("negative-lr", "zero-temperature", "one-generation", "zero-max-steps"):
            key, value = {
                "negative-lr": ("learning_rate", -1e-5),
                "zero-temperature": ("temperature", 0),
                "one-generation": ("num_generations", 1),
                "zero-max-steps": ("max_steps", 0),
            }[case]
            sections["trainer"] = {key: value}
        recipe = _recipe(tmp_path, tiny_model, data, **sections)
    SEEN.clear()
    status, err = run_cli("train", str(recipe), *flags)
    assert status == 2
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("posttrain: error:")]
    assert len(errors) == 1, err[-2000:]
    message = err[err.index("posttrain: error:") :]
    for phrase in phrases:
        assert phrase in message
    if case == "reward-raises":
        assert _boom_row_completion() in message


def test_a_run_stopped_by_bad_input_can_be_retried(run_cli, tiny_model, math_jsonl, tmp_path):
    bad = _recipe(tmp_path, tiny_model, Path(math_jsonl), rewards=[{"name": "helpers_plugins:boom"}])
    assert run_cli("train", str(bad))[0] == 2
    assert (tmp_path / "out" / "recipe.yaml").exists()  # written before the reward failed
    good = _recipe(tmp_path, tiny_model, Path(math_jsonl))
    status, err = run_cli("train", str(good))
    assert status == 0, err[-2000:]
    assert (tmp_path / "out" / "summary.json").exists()


def test_a_reward_failing_mid_run_keeps_the_finished_steps(run_cli, tiny_model, math_jsonl, tmp_path):
    import helpers_plugins

    helpers_plugins._CALLS["n"] = 0
    recipe = _recipe(
        tmp_path,
        tiny_model,
        Path(math_jsonl),
        rewards=[{"name": "helpers_plugins:fails_on_third_call"}],
        trainer={"max_steps": 5},
    )
    status, err = run_cli("train", str(recipe))
    assert status == 2 and "Traceback" not in err
    assert "the grader went away" in err and "The 2 finished steps are kept" in err and "--resume" in err
    from posttrain.checkpoints import check

    assert check(tmp_path / "out" / "checkpoint-2") is None  # written before stopping, sealed


def test_unknown_command(run_cli):
    status, err = run_cli("trian")
    assert status == 2 and "unknown command 'trian'" in err and "train" in err


# --------------------------------------------------------------------------------------------------
# The output-folder guard
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files, flags, outcome",
    [
        ([], [], None),  # a new folder: go
        (["eval_before.json"], [], None),  # no run marker: go
        (["recipe.yaml"], [], None),  # only the recipe of a run that stopped on bad input: go
        (["metrics.jsonl"], [], "already holds a run"),  # a run's metrics: refuse
        (["model.safetensors"], [], "already holds a run"),  # a trained model: refuse
        (["checkpoint-4/trainer_state.json"], [], "already holds a run"),  # a checkpoint: refuse
        (["metrics.jsonl"], ["--overwrite"], None),  # --overwrite: go
        (["metrics.jsonl"], ["--resume"], "holds no checkpoint"),  # --resume with nothing to resume
        (
            ["checkpoint-2/trainer_state.json", "checkpoint-4/trainer_state.json"],
            ["--resume"],
            "checkpoint-4",
        ),
    ],
)
def test_check_output_dir(tmp_path, files, flags, outcome):
    out = tmp_path / "out"
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("{}")
    recipe = load_recipe(None, {"data.generator": "chain_sum", "output_dir": str(out), **_flags(flags)})
    if outcome is None:
        assert check_output_dir(recipe) is None
    elif outcome.startswith("checkpoint-"):
        assert check_output_dir(recipe) == str(out / outcome)  # resume from the last checkpoint
    else:
        with pytest.raises(OutputDirError, match=outcome):
            check_output_dir(recipe)


def _flags(flags: list[str]) -> dict:
    return {flag.lstrip("-"): True for flag in flags}


# --------------------------------------------------------------------------------------------------
# eval / generate take any recipe key as a flag (they build their Recipe with the train loader)
# --------------------------------------------------------------------------------------------------


def test_recipe_keys_are_flags_of_generate(run_cli, tiny_model, math_jsonl, tmp_path):
    out = tmp_path / "gen"
    args = ["generate", "--model", tiny_model, "--data", math_jsonl, "--output_dir", str(out)]
    status, err = run_cli(*args, "--eval.max_new_tokens", "3", "--model.dtype", "float32")
    assert status == 0, err[-2000:]
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    # The char tokenizer: 3 new tokens are at most 3 characters; the --max_new_tokens default is 256.
    assert max(len(row["completion"]) for row in rows) <= 3


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_a_misspelt_recipe_key_flag_is_named(run_cli, tiny_model, math_jsonl, tmp_path, command):
    args = [command, "--model", tiny_model, "--data", math_jsonl, "--output_dir", str(tmp_path)]
    status, err = run_cli(*args, "--eval.max_new_tokn", "3")
    assert status == 2
    assert "`eval.max_new_tokn`" in err and "`eval.max_new_tokens`" in err
