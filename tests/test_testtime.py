"""`posttrain adapt` (posttrain/methods/ttrl/adapt.py) on the tiny model: outputs, flags, bad input, resume.

pytest tests/test_testtime.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.errors import ConfigError
from posttrain.methods.ttrl import adapt as testtime

# The tiny random model never writes a \boxed{} answer: `lenient` lets the digits it writes vote.
TINY = [
    "--trainer.max_completion_length",
    "8",
    "--eval.max_new_tokens",
    "8",
    "--n_votes",
    "4",
    "--extract",
    "lenient",
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def questions(tmp_path) -> str:
    return write_jsonl(
        tmp_path / "q.jsonl", [{"question": f"What is {a}+{b}?"} for a in range(2) for b in range(2)]
    )


@pytest.fixture
def labelled(tmp_path) -> str:
    rows = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(2) for b in range(2)]
    return write_jsonl(tmp_path / "l.jsonl", rows)


def adapt(tiny_model, data, out, *extra) -> int:
    return main(["adapt", "--model", tiny_model, "--data", data, "--output_dir", str(out), *TINY, *extra])


def test_adapt_writes_adapter_predictions_metrics_and_plot(tiny_model, questions, tmp_path, capsys):
    out = tmp_path / "run"
    assert adapt(tiny_model, questions, out, "--steps", "2") == 0
    for name in ("adapter_model.safetensors", "predictions.jsonl", "metrics.json", "majority_ratio.png"):
        assert (out / name).exists(), name
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4
    assert all({"id", "question", "prediction", "vote_share", "greedy"} <= set(p) for p in preds)
    assert all(0.0 <= p["vote_share"] <= 1.0 for p in preds)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["labelled"] is False
    assert metrics["n_votes"] == 4 and metrics["n_train"] == 2
    assert "accuracy_greedy" not in metrics["after"]  # no labels: no accuracy, only the vote
    assert "majority_share" in metrics["after"] and "train/majority_ratio_mean" in metrics
    recipe = (out / "recipe.yaml").read_text()
    assert "train_samples: 2" in recipe and "num_generations: 4" in recipe and "answer_field: null" in recipe
    assert "Adapted 2 steps (ttrl)" in capsys.readouterr().out


def test_the_votes_and_the_evaluation_read_answers_as_the_reward(tiny_model, questions, tmp_path, capsys):
    """TTRL reads the last box only: a model that writes none has no vote, and the check before training says
    so (it reads the votes as the reward will, not more leniently); `--extract` changes both at once."""
    from posttrain.methods.ttrl.adapt import answer_policy, build_recipe

    out = tmp_path / "run"
    flags = ["adapt", "--model", tiny_model, "--data", questions, "--output_dir", str(out), *TINY[:-2]]
    assert main([*flags, "--steps", "1"]) != 0
    assert "no parseable final answer" in capsys.readouterr().err
    assert answer_policy(build_recipe(None, {"data": questions})) == "boxed"
    assert answer_policy(build_recipe(None, {"data": questions, "reward": "ttrv"})) == "qwen_math"
    recipe = build_recipe(None, {"data": questions, "reward": "ttrv", "extract": "lenient"})
    assert recipe.rewards[0].kwargs["extract"] == "lenient" and answer_policy(recipe) == "lenient"
    with pytest.raises(Exception, match="unknown answer extraction policy"):
        build_recipe(None, {"data": questions, "extract": "boxd"})


def test_labels_give_accuracy_and_label_accuracy(tiny_model, labelled, tmp_path):
    out = tmp_path / "run"
    assert adapt(tiny_model, labelled, out, "--steps", "1", "--reward", "ttrv") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled"] is True and metrics["reward"] == "ttrv"
    for key in ("accuracy_greedy", "maj@4", "mean@4"):
        assert key in metrics["before"] and key in metrics["after"]
    assert "train/label_accuracy_mean" in metrics and "train/reward_accuracy_mean" in metrics
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all("answer" in p and "correct" in p for p in preds)


def test_merge_saves_a_loadable_merged_model(tiny_model, questions, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    assert adapt(tiny_model, questions, out, "--steps", "1", "--merge") == 0
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not hasattr(merged, "peft_config") or not merged.peft_config


def test_flags_map_onto_the_recipe():
    recipe = testtime.build_recipe(None, {"data": "q.jsonl", "n_votes": 32, "steps": 5, "reward": "ttrv"})
    assert recipe.trainer["num_generations"] == 32
    assert recipe.method.train_samples == 16  # half the votes, TTRL's ratio
    assert recipe.trainer["per_device_train_batch_size"] == 32  # one question's votes per step
    assert recipe.eval.num_samples == 32 and recipe.trainer["max_steps"] == 5
    assert recipe.method.name == "ttrv" and recipe.rewards[0].name == "ttrv_frequency"
    assert recipe.data.path == "q.jsonl" and recipe.peft.enabled
    yaml_recipe = testtime.build_recipe("recipes/ttrl_math.yaml", {"data": "q.jsonl", "n_train": 8})
    assert yaml_recipe.method.train_samples == 8 and yaml_recipe.trainer["num_generations"] == 64
    with pytest.raises(testtime.AdaptationError, match="not a test-time reward"):
        testtime.build_recipe(None, {"data": "q.jsonl", "method.name": "grpo"})
    with pytest.raises(ConfigError, match="Unknown key"):
        testtime.build_recipe(None, {"data": "q.jsonl", "trainer.learnin_rate": 1})


def run_error(tiny_model, data, out, capsys, *extra) -> str:
    assert adapt(tiny_model, data, out, *extra) == 2
    return capsys.readouterr().err


def test_empty_input(tiny_model, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    err = run_error(tiny_model, str(empty), tmp_path / "run", capsys, "--steps", "1")
    assert "no rows" in err or "empty" in err


def test_no_question_field(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?"}])
    err = run_error(tiny_model, data, tmp_path / "run", capsys, "--steps", "1")
    assert "no column 'question'" in err and "problem" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_questions_longer_than_the_context(tiny_model, tmp_path, capsys):
    rows = [{"question": "What is 1+1?"}, {"question": "x" * 2000}]  # the tiny model's context is 1024
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    err = run_error(tiny_model, data, tmp_path / "run", capsys, "--steps", "1")
    assert "do not fit the model's context of 1024 tokens" in err and "--skip_long" in err
    out = tmp_path / "run2"
    assert adapt(tiny_model, data, out, "--steps", "1", "--skip_long") == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1


def test_no_parseable_answer_stops_before_training(tiny_model, questions, tmp_path, capsys, monkeypatch):
    import posttrain.evaluation as evaluation

    real = evaluation.evaluate

    def wordy(*args, **kwargs):  # the model's completions, with every answer made unreadable
        result = real(*args, **kwargs)
        for p in result.predictions:
            p.update(extracted=None, majority=None, majority_share=0.0, completion="I am not sure.")
        return result

    monkeypatch.setattr(evaluation, "evaluate", wordy)
    out = tmp_path / "run"
    err = run_error(tiny_model, questions, out, capsys, "--steps", "2")
    assert "no parseable final answer" in err and "--data.instruction" in err
    assert not list(out.glob("checkpoint-*")) and (out / "eval_before.json").exists()


def test_no_answer_during_training_stops_after_patience():
    stop = testtime.NoAnswerStop(patience=2)

    class State:
        global_step = 3

    stop.on_log(None, State, None, logs={"ttrl/no_answer_groups": 1.0})
    stop.on_log(None, State, None, logs={"ttrl/no_answer_groups": 0.5})  # streak broken
    stop.on_log(None, State, None, logs={"ttrl/no_answer_groups": 1.0})
    with pytest.raises(testtime.AdaptationError, match="2 steps in a row"):
        stop.on_log(None, State, None, logs={"ttrl/no_answer_groups": 1.0})


def test_output_folder_in_use_and_resume(tiny_model, questions, tmp_path, capsys):
    out = tmp_path / "run"
    assert adapt(tiny_model, questions, out, "--steps", "2", "--trainer.save_steps", "1") == 0
    first = (out / "predictions.jsonl").read_text()
    err = run_error(tiny_model, questions, out, capsys, "--steps", "2")
    assert "already holds a run" in err and "--resume" in err
    assert (out / "predictions.jsonl").read_text() == first  # nothing was touched
    assert adapt(tiny_model, questions, out, "--steps", "3", "--resume") == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert adapt(tiny_model, questions, out, "--steps", "1", "--overwrite") == 0
    assert list(out.glob("predictions.*.jsonl"))  # the earlier predictions kept under a new name


def test_bad_flag_values(tiny_model, questions, tmp_path, capsys):
    err = run_error(tiny_model, questions, tmp_path / "run", capsys, "--n_train", "3")
    assert "train_samples (3)" in err
    err = run_error(tiny_model, questions, tmp_path / "run", capsys, "--k", "0")
    assert "--k must be a positive integer" in err


def test_fewer_questions_than_a_generation_batch(tiny_model, questions, tmp_path, capsys):
    err = run_error(tiny_model, questions, tmp_path / "run", capsys, "--trainer.steps_per_generation", "8")
    assert "samples 8 questions, but there are only 4" in err
