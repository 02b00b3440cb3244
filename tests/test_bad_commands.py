"""Every command of the README, given the wrong input a new user would type: one line of error, exit 2,
no traceback, nothing written.

    pytest tests/test_bad_commands.py -q
"""

from __future__ import annotations

import json

import pytest

from posttrain import cli


@pytest.fixture
def run_cli(monkeypatch, capsys):
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    monkeypatch.delenv("POSTTRAIN_DEBUG", raising=False)

    def run(*argv: str) -> tuple[int, str]:
        try:
            status = cli.main(list(argv))
        except SystemExit as exc:  # argparse's own usage errors exit 2 by themselves
            status = exc.code
        return status, capsys.readouterr().err

    return run


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"What is {i}+1?", "answer": str(i + 1)}) + "\n" for i in range(4))
    )
    return str(path)


CASES = {
    # posttrain eval
    "eval-missing-model": (["eval", "--model", "{tmp}/nope", "--data.path", "{q}"], "nope"),
    "eval-missing-data": (["eval", "--model", "{model}", "--data.path", "{tmp}/missing.jsonl"], "missing.jsonl"),
    "eval-zero-samples": (["eval", "--model", "{model}", "--data.path", "{q}", "--num_samples", "0"], "num_samples"),
    # posttrain generate
    "generate-missing-data": (["generate", "--model", "{model}", "--data", "{tmp}/missing.jsonl"], "missing.jsonl"),
    # posttrain adapt
    "adapt-missing-data": (["adapt", "--model", "{model}", "--data", "{tmp}/missing.jsonl"], "missing.jsonl"),
    "adapt-zero-steps": (["adapt", "--model", "{model}", "--data", "{q}", "--steps", "0"], "steps"),
    # posttrain retriever serve
    "retriever-bad-port": (["retriever", "serve", "--port", "0"], "--port"),
    "retriever-missing-corpus": (["retriever", "serve", "--corpus", "{tmp}/none.jsonl"], "none.jsonl"),
    "retriever-small-body": (["retriever", "serve", "--max_body", "10"], "--max_body"),
    # posttrain vllm-serve (the HF backend: no vLLM needed)
    "serve-bad-port": (["vllm-serve", "--engine", "hf", "--model", "{model}", "--port", "70000"], "--port"),
    # posttrain train
    "train-missing-recipe": (["train", "{tmp}/none.yaml"], "none.yaml"),
    "train-negative-lr": (["train", "recipes/quickstart.yaml", "--learning_rate", "-1", "--output_dir", "{tmp}/o"], "learning_rate"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    case, run_cli, tiny_model, questions, tmp_path, monkeypatch
):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    argv, phrase = CASES[case]
    argv = [a.format(tmp=tmp_path, q=questions, model=tiny_model) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    status, err = run_cli(*argv)
    assert status == 2, err[-2000:]
    assert "Traceback" not in err
    errors = [
        line
        for line in err.splitlines()
        if line.startswith(("posttrain: error:", "usage:")) or "error:" in line
    ]
    assert len([e for e in errors if "error:" in e]) == 1, err[-2000:]
    assert phrase in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
