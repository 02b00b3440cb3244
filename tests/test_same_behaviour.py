"""The behaviour of every shipped recipe and command, pinned: a refactoring must not change it.

    pytest tests/test_same_behaviour.py -q
    python tests/test_same_behaviour.py --record      # rewrite tests/golden/behaviour.json (on purpose only)

Each shipped recipe is shrunk to the tiny random model (its header's CPU flags, 3 steps, seed 0, fp32),
given one seeded random reward besides its own (the tiny model earns none, and a step without signal
updates nothing) and trained; per step the loss, the logged rewards and, per completion, the rewards and the advantage
(TRL's completions table) are compared with the recording. `posttrain eval` (greedy, maj@k, --reflect,
--judge), `posttrain adapt` (the TTRL recipe) and `posttrain generate --reflect` are compared by their
outputs. The recording was made before the code was reshaped into method homes (issue 15); a change
of behaviour since then fails here with the first value that differs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden" / "behaviour.json"
# fp32 everywhere: bf16 autocast depends on the CPU (AVX-512 bf16 or not), fp32 does not.
COMMON = ["--bf16", "false", "--seed", "0", "--report_to", "none"]
TRAIN = [*COMMON, "--max_steps", "3", "--log_completions", "true", "--num_completions_to_print", "0"]
TINY_RUN = [
    "--rollout.engine", "hf", "--gradient_checkpointing", "false", "--eval.before", "false",
    "--eval.after", "false", "--per_device_train_batch_size", "8", "--num_generations", "4",
    "--steps_per_generation", "1", "--run.plot", "false",
]  # fmt: skip
RECIPES = {
    "quickstart": ["--data.size", "16", "--max_completion_length", "16"],
    "gsm8k_grpo": ["--data.max_samples", "16", "--max_completion_length", "16"],
    "gcpo_geometry": ["--data.size", "16", "--max_completion_length", "32"],
    "spark_math": ["--data.max_samples", "16", "--max_completion_length", "16"],
    "mash_search": ["--data.max_samples", "8", "--max_completion_length", "48", "--search.max_turn_tokens", "24"],
}  # fmt: skip
QUESTIONS = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(2) for b in range(2)]


def _floats(values) -> list[float | None]:
    return [None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v) for v in values]


def _train(cli, tiny_model: str, name: str, out: Path) -> dict:
    import yaml

    # The shipped recipe plus one seeded random reward: the tiny model earns no task reward, and without
    # a signal the steps would not update anything (the recipe's own rewards are still computed).
    recipe = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())
    recipe["rewards"].append({"name": "helpers_plugins:SeededRandom", "weight": 1.0})
    path = out.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    flags = [*TINY_RUN, *RECIPES[name], *TRAIN, "--model.name_or_path", tiny_model, "--output_dir", str(out)]
    assert cli.main(["train", str(path), *flags]) == 0
    import pandas as pd

    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "loss" in s]
    table = pd.concat(pd.read_parquet(f) for f in sorted((out / "completions").glob("*.parquet")))
    reward_cols = [c for c in table.columns if c not in ("step", "prompt", "completion", "advantage")]
    per_step = []
    for entry in steps:
        rows = table[table["step"] == str(entry["step"])] if table["step"].dtype == object else None
        if rows is None or rows.empty:
            rows = table[table["step"].astype(str) == str(entry["step"])]
        per_step.append(
            {
                "step": entry["step"],
                "loss": entry["loss"],
                "reward": entry.get("reward"),
                "rewards": {
                    k: v for k, v in entry.items() if k.startswith("rewards/") and k.endswith("/mean")
                },
                "completions": list(rows["completion"].astype(str)),
                "advantages": _floats(rows["advantage"]),
                "row_rewards": {c: _floats(rows[c]) for c in reward_cols},
            }
        )
    return {"steps": per_step}


def _eval(cli, tiny_model: str, data: str, out: Path) -> dict:
    flags = ["--model", tiny_model, "--data.path", data, "--max_new_tokens", "8", "--num_samples", "2"]
    flags += ["--reflect", "--judge", "--judge_samples", "2", "--seed", "0", "--output_dir", str(out)]
    assert cli.main(["eval", *flags]) == 0
    metrics = json.loads((out / "eval.json").read_text())
    preds = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    return {"metrics": metrics, "completions": [p["completion"] for p in preds]}


def _adapt(cli, tiny_model: str, data: str, out: Path) -> dict:
    flags = [
        "--recipe",
        "recipes/ttrl_math.yaml",
        "--data",
        "data/math500/test.json",
        "--data.max_samples",
        "4",
    ]
    flags += ["--model", tiny_model, "--lora"]
    flags += [
        "--n_votes",
        "4",
        "--steps",
        "2",
        "--rollout.engine",
        "hf",
        "--trainer.steps_per_generation",
        "1",
    ]
    flags += ["--trainer.max_completion_length", "8", "--trainer.gradient_checkpointing", "false"]
    flags += ["--trainer.bf16", "false", "--trainer.report_to", "none", "--eval.num_samples", "2"]
    flags += ["--eval.max_new_tokens", "8", "--extract", "lenient", "--output_dir", str(out)]
    assert cli.main(["adapt", *flags]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "before": metrics["before"],
        "after": metrics["after"],
        "losses": [s["loss"] for s in steps if "loss" in s],
        "predictions": [p["prediction"] for p in preds],
    }


def _generate(cli, tiny_model: str, data: str, out: Path) -> dict:
    flags = ["--model", tiny_model, "--data.path", data, "--max_new_tokens", "8", "--reflect"]
    assert cli.main(["generate", *flags, "--output_dir", str(out)]) == 0
    files = sorted(out.glob("*.jsonl"))
    return {f.name: [json.loads(line) for line in f.read_text().splitlines()] for f in files}


def run_all(tiny_model: str, work: Path) -> dict:
    import os

    from posttrain import cli, console

    console.setup_logging = lambda: None  # keep pytest's logging as it is
    os.chdir(REPO)  # the recipes name their data relative to the repository
    data = work / "questions.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in QUESTIONS))
    out = {f"train/{name}": _train(cli, tiny_model, name, work / name) for name in RECIPES}
    out["eval"] = _eval(cli, tiny_model, str(data), work / "eval")
    out["adapt"] = _adapt(cli, tiny_model, str(data), work / "adapt")
    out["generate"] = _generate(cli, tiny_model, str(data), work / "generate")
    return out


def _compare(expected, actual, where: str = "") -> None:
    """Equal, floats within 1e-5 (relative) / 1e-6; the first difference is named by its path."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and set(expected) == set(actual), (
            f"{where}: keys {sorted(expected)} vs {sorted(actual)}"
        )
        for key in expected:
            _compare(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(expected) == len(actual), f"{where}: lengths differ"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _compare(e, a, f"{where}[{i}]")
    elif isinstance(expected, float) and isinstance(actual, int | float) and not isinstance(actual, bool):
        assert math.isclose(expected, actual, rel_tol=1e-5, abs_tol=1e-6), f"{where}: {expected} != {actual}"
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


def test_every_recipe_and_command_behaves_as_recorded(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    expected = json.loads(GOLDEN.read_text())
    actual = json.loads(json.dumps(run_all(tiny_model, tmp_path)))  # the same float round trip as the file
    _compare(expected, actual)


if __name__ == "__main__":
    import tempfile

    import torch

    from posttrain.testing import make_tiny_model

    sys.path.insert(0, str(Path(__file__).parent))  # helpers_plugins, as pytest puts tests/ on the path
    if "--record" not in sys.argv:
        sys.exit(
            "Usage: python tests/test_same_behaviour.py --record   (rewrites tests/golden/behaviour.json)"
        )
    torch.set_num_threads(1)  # as the tests run (tests/conftest.py)
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "tiny_model")
        result = run_all(model, Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
