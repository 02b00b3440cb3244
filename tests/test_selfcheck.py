"""Tests of SPARK inference (posttrain/methods/spark/selfcheck.py) and the ``generate`` / ``eval --reflect --judge`` CLI.

pytest tests/test_selfcheck.py -q

The loop and the judge evaluation run on scripted fake models: functions that answer from the
prompt text (which template it is, which answer it shows), so every branch is reached on purpose.
The CLI runs once per command on the tiny random model.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain import cli
from posttrain.errors import ConfigError, DataError
from posttrain.methods.spark.selfcheck import (
    NO_ANSWER,
    judge_eval,
    reflect_metrics,
    solve,
    solve_judge_reflect,
)
from posttrain.methods.spark.templates import JUDGE_TEMPLATE, REFLECT_TEMPLATE

BIN = Path(sys.executable).parent
JUDGE_HEAD = JUDGE_TEMPLATE.format(question="", answer="").split("\n\n")[0]
REFLECT_HEAD = REFLECT_TEMPLATE.format(question="", answer="").split("\n\n")[0]


def _row(i: int, answer: str | None = "4") -> dict:
    question = f"Q{i}: what is 2 + 2?"
    return {
        "prompt": [{"role": "user", "content": question}],
        "question": question,
        "answer": answer,
        "id": str(i),
    }


def _kind(prompt: list[dict]) -> str:
    text = prompt[-1]["content"]
    if text.startswith(JUDGE_HEAD):
        return "judge"
    if text.startswith(REFLECT_HEAD):
        return "reflect"
    return "solve"


class Scripted:
    """A fake model: ``replies[kind]`` is a reply or a function of the prompt text; records every call."""

    def __init__(self, **replies):
        self.replies = replies
        self.calls: list[tuple[str, int]] = []  # (kind of the first prompt, number of prompts)

    def __call__(self, prompts: list[list[dict]]) -> list[str]:
        kinds = [_kind(p) for p in prompts]
        assert len(set(kinds)) == 1, "one stage per call"
        self.calls.append((kinds[0], len(prompts)))
        reply = self.replies[kinds[0]]
        return [reply(p[-1]["content"]) if callable(reply) else reply for p in prompts]


# --------------------------------------------------------------------------------------------------
# solve -> judge -> reflect
# --------------------------------------------------------------------------------------------------


def test_wrong_then_judged_no_then_fixed():
    model = Scripted(solve="so \\boxed{5}", judge="\\boxed{No}", reflect="oh, \\boxed{4}")
    # The reflected 4 is judged in round 2: "No" again, so it is reflected once more (still 4).
    (rec,) = solve_judge_reflect(model, [_row(0)], rounds=2)
    assert (rec["correct_initial"], rec["correct"], rec["final_answer"]) == (False, True, "4")
    assert rec["calls"] == 5 and len(rec["rounds"]) == 2
    assert [r["judged"] for r in rec["rounds"]] == ["5", "4"]
    m = reflect_metrics([rec])
    assert (m["accuracy_initial"], m["accuracy_reflect"]) == (0.0, 1.0)
    assert (m["changed_wrong_to_right"], m["changed_right_to_wrong"]) == (1.0, 0.0)
    # Round 1: "No" on a wrong 5 is right; round 2: "No" on a correct 4 is wrong.
    assert (m["judge_calls"], m["judge_accuracy"], m["mean_calls"]) == (2, 0.5, 5.0)


def test_judge_sees_the_answer_only_and_reflection_is_shown_it():
    seen = []
    model = Scripted(
        solve="long reasoning 1+1+2 ... \\boxed{5}",
        judge=lambda t: seen.append(t) or "\\boxed{No}",
        reflect=lambda t: seen.append(t) or "\\boxed{4}",
    )
    solve_judge_reflect(model, [_row(0)], rounds=1)
    judge, reflect = seen
    assert judge == JUDGE_TEMPLATE.format(question="Q0: what is 2 + 2?", answer="5")
    assert reflect == REFLECT_TEMPLATE.format(question="Q0: what is 2 + 2?", answer="5")


def test_yes_stops_after_one_judge_call():
    model = Scripted(solve="\\boxed{4}", judge="Correct. \\boxed{Yes}", reflect="unused")
    (rec,) = solve_judge_reflect(model, [_row(0)], rounds=2)
    assert rec["calls"] == 2 and len(rec["rounds"]) == 1 and rec["rounds"][0]["verdict"] == "Yes"
    assert rec["final_answer"] == "4" and rec["correct"] is True
    assert model.calls == [("solve", 1), ("judge", 1)]
    assert reflect_metrics([rec])["judge_accuracy"] == 1.0


def test_rounds_exhausted_last_answer_stands_without_a_final_judge():
    answers = iter(["\\boxed{6}", "\\boxed{7}", "\\boxed{8}"])
    model = Scripted(solve="\\boxed{5}", judge="\\boxed{No}", reflect=lambda t: next(answers))
    (rec,) = solve_judge_reflect(model, [_row(0)], rounds=3)
    assert rec["final_answer"] == "8" and rec["calls"] == 1 + 3 + 3
    assert [k for k, _ in model.calls] == ["solve"] + ["judge", "reflect"] * 3  # no judge after the last


def test_unparseable_verdict_counts_as_not_yes_and_wrong():
    model = Scripted(solve="\\boxed{4}", judge="I think it's fine", reflect="\\boxed{5}")
    (rec,) = solve_judge_reflect(model, [_row(0)], rounds=1)
    assert rec["rounds"][0]["verdict"] is None and rec["final_answer"] == "5"  # reflected anyway
    m = reflect_metrics([rec])
    assert (m["judge_unparsed"], m["judge_accuracy"], m["changed_right_to_wrong"]) == (1.0, 0.0, 1.0)


def test_missing_answer_skips_the_judge():
    shown = []
    model = Scripted(solve="no idea", judge="\\boxed{Yes}", reflect=lambda t: shown.append(t) or "\\boxed{4}")
    (rec,) = solve_judge_reflect(model, [_row(0)], rounds=1)
    assert model.calls == [("solve", 1), ("reflect", 1)]
    assert rec["rounds"][0]["judge"] is None and NO_ANSWER in shown[0] and rec["calls"] == 2
    assert reflect_metrics([rec])["judge_calls"] == 0 and reflect_metrics([rec])["judge_accuracy"] is None


def test_one_call_per_stage_over_the_active_rows_only():
    # Row i solves to i; the judge accepts even answers; a reflection always answers 4 (even).
    model = Scripted(
        solve=lambda t: f"\\boxed{{{t[1]}}}",
        judge=lambda t: "\\boxed{Yes}" if int(t.split("<Answer>:\n")[1][0]) % 2 == 0 else "\\boxed{No}",
        reflect="\\boxed{4}",
    )
    records = solve_judge_reflect(model, [_row(i) for i in range(6)], rounds=2)
    # Round 1 judges 6 rows, reflects the 3 odd ones; round 2 judges those 3 (now 4) and stops.
    assert model.calls == [("solve", 6), ("judge", 6), ("reflect", 3), ("judge", 3)]
    assert [r["final_answer"] for r in records] == ["0", "4", "2", "4", "4", "4"]
    assert [r["calls"] for r in records] == [2, 4, 2, 4, 2, 4]


def test_metrics_by_hand_and_unlabelled_rows():
    model = Scripted(
        solve=lambda t: "\\boxed{4}" if t[1] in "01" else "\\boxed{5}",
        judge="\\boxed{No}",
        reflect="\\boxed{5}",
    )
    records = solve_judge_reflect(model, [_row(i) for i in range(4)] + [_row(9, answer=None)], rounds=1)
    m = reflect_metrics(records)
    # Labelled rows 0-3: right, right, wrong, wrong -> all answer 5 after reflection.
    assert (m["n"], m["n_labelled"], m["accuracy_initial"], m["accuracy_reflect"]) == (5, 4, 0.5, 0.0)
    assert (m["changed_right_to_wrong"], m["changed_wrong_to_right"]) == (0.5, 0.0)
    # Five judge calls (the unlabelled one counts for unparsed/yes-rate, not for accuracy): No is
    # right on rows 2 and 3.
    assert (m["judge_calls"], m["judge_accuracy"], m["judge_yes_rate"], m["mean_calls"]) == (5, 0.5, 0.0, 3.0)
    assert records[4]["correct"] is None and records[4]["rounds"][0]["judged_correct"] is None


def test_solve_only_and_initial_completions():
    model = Scripted(solve="\\boxed{4}", judge="\\boxed{Yes}")
    assert solve(model, [_row(0)])[0]["correct"] is True
    records = solve_judge_reflect(model, [_row(0)], rounds=1, initial=["\\boxed{4}"])
    assert model.calls == [("solve", 1), ("judge", 1)] and records[0]["calls"] == 2  # no second solve
    with pytest.raises(ConfigError, match="rounds"):
        solve_judge_reflect(model, [_row(0)], rounds=0)


# --------------------------------------------------------------------------------------------------
# judge_eval
# --------------------------------------------------------------------------------------------------


def _sampler(prompts, k):
    # Each question gets one correct and k - 1 wrong samples; the last is unanswerable.
    return [["\\boxed{4}"] + ["\\boxed{5}"] * (k - 2) + ["no idea"] for _ in prompts]


def test_judge_eval_always_a_measures_position_bias():
    def always_a(prompts):
        return ["\\boxed{A}"] * len(prompts)

    metrics, tasks = judge_eval(always_a, [_row(i) for i in range(4)], 3, _sampler, random.Random(0))
    assert (metrics["n_pointwise"], metrics["n_pairwise"]) == (8, 4)
    assert [t["label"] for t in tasks if t["kind"] == "pairwise"] == ["A", "B", "A", "B"]
    assert metrics["pairwise_accuracy_correct_first"] == 1.0
    assert metrics["pairwise_accuracy_correct_second"] == 0.0
    assert (metrics["position_bias"], metrics["pairwise_accuracy"]) == (1.0, 0.5)
    assert metrics["sample_accuracy"] == pytest.approx(1 / 3)
    pair = next(t for t in tasks if t["kind"] == "pairwise" and t["label"] == "B")
    assert (pair["answer_a"], pair["answer_b"]) == ("5", "4")


def test_judge_eval_pointwise_metrics_by_hand():
    # A judge that says "Yes" to every pointwise prompt and nothing readable to pairwise ones.
    def judge(prompts):
        return ["\\boxed{Yes}" if "<Answer>:" in p[-1]["content"] else "hmm" for p in prompts]

    metrics, tasks = judge_eval(judge, [_row(i) for i in range(5)], 3, _sampler, random.Random(1))
    point = [t for t in tasks if t["kind"] == "pointwise"]
    assert (metrics["n_pointwise"], metrics["n_pairwise"]) == (10, 5)
    # "Yes" is right only where the template is a Yes/No one and the answer is correct; an A/B
    # template wants "A"/"B", so "Yes" is wrong there.
    assert metrics["pointwise_accuracy"] == sum(t["label"] == "Yes" for t in point) / 10
    assert metrics["pointwise_accuracy_on_wrong"] == 0.0 and metrics["yes_rate"] == 1.0
    assert (metrics["pairwise_accuracy"], metrics["position_bias"], metrics["unparsed"]) == (0.0, 0.0, 5 / 15)


def test_judge_eval_needs_answers():
    with pytest.raises(DataError, match="answer_field"):
        judge_eval(lambda p: [], [_row(0, answer=None)], 2, _sampler, random.Random(0))


# --------------------------------------------------------------------------------------------------
# CLI on the tiny random model
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def data(tmp_path) -> str:
    path = tmp_path / "math.jsonl"
    rows = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(2) for b in range(2)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    script = BIN / "posttrain"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "posttrain.cli"]
    env = {
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    return subprocess.run(
        [*cmd, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def test_cli_generate_reflect(tiny_model, data, tmp_path):
    args = ["generate", "--model", tiny_model, "--data", data, "--reflect", "--rounds", "1"]
    result = _run([*args, "--max_new_tokens", "8", "--output_dir", str(tmp_path / "out")], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for key in ("n=4", "accuracy_initial=", "accuracy_reflect=", "mean_calls="):
        assert key in result.stdout
    records = [json.loads(line) for line in (tmp_path / "out" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(
        {"question", "completion", "final_answer", "correct"} <= set(r) for r in records
    )
    assert json.loads((tmp_path / "out" / "generate.json").read_text())["n"] == 4


def test_cli_eval_judge(tiny_model, data, tmp_path):
    args = ["eval", "--model", tiny_model, "--data", data, "--judge", "--judge_samples", "2"]
    result = _run([*args, "--max_new_tokens", "8", "--output_dir", str(tmp_path)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "accuracy_greedy=" in result.stdout and "judge/n_pointwise=" in result.stdout
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert {"judge/pointwise_accuracy", "judge/pairwise_accuracy", "judge/position_bias"} <= set(metrics)
    assert (tmp_path / "eval_judge.jsonl").is_file()


@pytest.mark.parametrize(
    "argv, message",
    [
        # Zero reflection rounds is no reflection: say so.
        (["generate", "--reflect", "--rounds", "0"], "--rounds must be >= 1"),
        (["eval", "--reflect", "--rounds", "0"], "--rounds must be >= 1"),
        # One sample cannot give a correct and a wrong answer to pair.
        (["eval", "--judge", "--judge_samples", "1"], "--judge_samples must be >= 2"),
    ],
)
def test_cli_bad_flags(monkeypatch, capsys, argv, message):
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    monkeypatch.delenv("POSTTRAIN_DEBUG", raising=False)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_judge_without_answers(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    monkeypatch.delenv("POSTTRAIN_DEBUG", raising=False)
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "What is 1+1?"}) + "\n")
    argv = ["eval", "--data", str(path), "--data.answer_field", "null", "--judge"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--judge needs reference answers" in err and "--data.answer_field" in err


def test_cli_generate_unlabelled(monkeypatch, capsys, tiny_model, tmp_path):
    # No answers: generations and judge verdicts are written, no accuracy is printed.
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {a}+1?"}) + "\n" for a in range(3)))
    argv = [
        "generate",
        "--model",
        tiny_model,
        "--data",
        str(path),
        "--data.answer_field",
        "null",
        "--reflect",
    ]
    assert cli.main([*argv, "--max_new_tokens", "4", "--output_dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "n=3 n_labelled=0" in out and "accuracy" not in out and "mean_calls=" in out
    records = [json.loads(line) for line in (tmp_path / "out" / "generations.jsonl").read_text().splitlines()]
    assert all(r["correct"] is None and r["correct_initial"] is None for r in records)
