"""`posttrain eval --search` (posttrain/methods/mash/evaluate.py): the three passes on the tiny model, a fake tool.

pytest tests/test_search_eval.py -q
"""

from __future__ import annotations

import pytest
from helpers_search import FakeTool

from posttrain.methods.mash.config import SearchConfig
from posttrain.methods.mash.evaluate import asked_to_search, evaluate_search
from posttrain.models import ModelConfig, load_model


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>hm</think><search> capital of France </search>", True),
        ("<search> unclosed because the tool is gone", True),
        ("<answer> Paris </answer>", False),
        ("I think it is Paris.", False),
    ],
)
def test_a_search_request_is_an_abstention(text, expected):
    assert asked_to_search(text) is expected


def rows(n=3):
    from posttrain.rollout.tools import SEARCH_PROMPT

    out = []
    for i in range(n):
        q = f"What is the capital number {i}?"
        out.append(
            {
                "id": f"q{i}",
                "question": q,
                "prompt": [{"role": "user", "content": SEARCH_PROMPT.format(question=q)}],
                "answer": "Paris",
                "answers": ["Paris", "paris city"],
            }
        )
    return out


def test_three_passes_report_tool_and_abstention_metrics(tiny_model):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    result = evaluate_search(
        model,
        tokenizer,
        rows(),
        SearchConfig(enabled=True),
        max_new_tokens=12,
        known_samples=2,
        tool=FakeTool(),
    )
    m = result.metrics
    assert m["n"] == 3
    for key in (
        "tool/exact_match",
        "tool/f1",
        "tool/searches_mean",
        "tool/search_rate",
        "no_tool/abstention_rate",
    ):
        assert 0.0 <= m[key] <= (6 if key == "tool/searches_mean" else 1.0), key
    assert "no_tool/abstain_when_unknown" in m  # known was estimated (2 samples per question)
    assert [p["id"] for p in result.predictions] == ["q0", "q1", "q2"]
    assert all(p["known"] in (0.0, 0.5, 1.0) for p in result.predictions)
    assert model.training is False or model.training is True  # restored, whichever it was


def test_questions_without_answers_are_refused(tiny_model):
    from posttrain.errors import DataError

    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    bad = rows(1)
    bad[0].update(answer=None, answers=None)
    with pytest.raises(DataError, match="--data.answer_field"):
        evaluate_search(model, tokenizer, bad, SearchConfig(enabled=True), 8, tool=FakeTool())


class ScriptedEngine:
    """q0 searches (then answers Paris once documents are in), q1 answers Paris, q2 answers Rome; asked
    without the tool (the direct prompt) only q1 knows Paris."""

    def __init__(self, tokenizer):
        self.tok = tokenizer

    def generate(self, prompt_ids, n, sampling):
        from posttrain.rollout.base import Rollouts

        out = []
        for ids in prompt_ids:
            text = self.tok.decode(ids)
            if "from what you know" in text:
                reply = "<answer> Paris </answer>" if "number 1?" in text else "<answer> Rome </answer>"
            elif "number 0?" in text:
                reply = "<answer> Paris </answer>" if "(Title:" in text else "<search> capital </search>"
            else:
                reply = "<answer> Paris </answer>" if "number 1?" in text else "<answer> Rome </answer>"
            out += [self.tok.encode(reply, add_special_tokens=False) + [self.tok.eos_token_id]] * n
        return Rollouts(completion_ids=out, logprobs=None)


def test_metrics_on_a_scripted_model(tiny_model):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    tool = FakeTool()
    result = evaluate_search(
        model,
        tokenizer,
        rows(),
        SearchConfig(enabled=True),
        max_new_tokens=400,  # characters: three inserted documents need room
        known_samples=2,
        tool=tool,
        engine=ScriptedEngine(tokenizer),
    )
    m = result.metrics
    assert tool.calls == [["capital"]]  # one round with a search: q0's query alone
    assert m["tool/exact_match"] == pytest.approx(2 / 3)  # q0 (after searching) and q1
    assert m["tool/searches_mean"] == pytest.approx(1 / 3) and m["tool/search_rate"] == pytest.approx(1 / 3)
    assert m["no_tool/abstention_rate"] == pytest.approx(1 / 3)  # q0 asks to search: abstains
    assert m["no_tool/answered_accuracy"] == pytest.approx(1 / 2)  # q1 right, q2 wrong
    assert m["no_tool/exact_match"] == pytest.approx(1 / 3)
    assert m["no_tool/abstain_when_unknown"] == pytest.approx(1 / 2)  # unknown: q0 (abstained), q2 (not)
    assert m["no_tool/abstain_when_known"] == 0.0  # q1 knows and answers
    assert [p["known"] for p in result.predictions] == [0.0, 1.0, 0.0]
    assert result.predictions[0]["retrieved_ids"] == ["d0", "d1", "d2"]


def test_eval_search_command(tiny_model, tmp_path, capsys):
    import json

    from posttrain.cli import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "title": "T", "text": f"Paris fact {i}."}) + "\n" for i in range(3)
        )
    )
    questions = tmp_path / "q.jsonl"
    questions.write_text(
        "".join(json.dumps({"question": f"Capital {i}?", "answers": ["Paris"]}) + "\n" for i in range(3))
    )
    out = tmp_path / "out"
    argv = ["eval", "--search", "--model", tiny_model, "--data", str(questions), "--data.answer_field", "answers",
            "--split", "train", "--retriever", str(corpus), "--max_new_tokens", "8", "--known_samples", "1",
            "--output_dir", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "tool/exact_match=" in printed and "no_tool/abstention_rate=" in printed
    metrics = json.loads((out / "eval_search.json").read_text())
    assert metrics["n"] == 3
    assert len((out / "eval_search_predictions.jsonl").read_text().splitlines()) == 3
    assert main([*argv[:2], "--judge", *argv[2:]]) == 2  # --search is its own evaluation
