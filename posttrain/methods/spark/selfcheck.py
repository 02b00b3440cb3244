r"""SPARK inference: the policy judges and revises its own answers, and is scored as a reward model.

    posttrain generate --model runs/spark --data.generator chain_sum --data.eval_size 50 --reflect
    posttrain eval --model runs/spark --data.generator chain_sum --data.eval_size 50 --reflect --judge

Two procedures from SPARK (Liu et al., arXiv 2509.22624, section 3.3; its ``Evaluation/evaluation_tts.py``;
docs/methods.md, "SPARK"):

* :func:`solve_judge_reflect`, the test-time loop. Greedy throughout, one prompt family each:

      solve (the row's own prompt) -> a0
      for round in 1..rounds:
          judge a0 (JUDGE_TEMPLATE, the final answer only, not the reasoning)
              "Yes"                 -> stop: a0 stands
              anything else         -> reflect (REFLECT_TEMPLATE, shown a0 only) -> a1; a0 := a1
      after `rounds` reflections the last answer stands (it is not judged again)

  An answer that cannot be extracted (SPARK's rule: no ``\\boxed{}``) counts as judged wrong without
  asking the judge: the row goes straight to reflection, shown :data:`NO_ANSWER`. So a row costs at
  most ``1 + 2 * rounds`` calls.

* :func:`judge_eval`, the policy as a reward model on held-out questions: sampled solutions are
  verified by :func:`rewards.math.score` and turned into pointwise ("is this answer correct?") and
  pairwise ("which of (A)/(B) is correct?") judge prompts with the training template bank; the
  policy's greedy verdicts are compared with the verifier's labels. The correct answer of a pair is
  shown first for even-numbered pairs and second for odd ones, so position bias is measured on a
  balanced set.

Both are pure logic over a :data:`Generator` (chat prompts -> one greedy completion each), so tests
script a fake model and the CLI passes :func:`hf_generator`. Each stage is one call over the rows
still active, which lets the backend batch them. Judge and reflection prompts are built by
:func:`posttrain.methods.spark.templates.chat`, the same function that builds the recycled training prompts:
the row's own system message, then one user turn.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from posttrain.errors import ConfigError, DataError
from posttrain.evaluation import generate as hf_generate
from posttrain.methods.spark.templates import (
    JUDGE_TEMPLATE,
    PAIRWISE,
    POSITIVE_VERDICTS,
    REFLECT_TEMPLATE,
    chat,
    pointwise,
)
from posttrain.verify.math import get_extractor, score
from posttrain.verify.verdict import judge_verdict

Chat = list[dict[str, str]]
Generator = Callable[[list[Chat]], list[str]]
"""Chat prompts -> one greedy completion per prompt, in order."""
Sampler = Callable[[list[Chat], int], list[list[str]]]
"""(chat prompts, k) -> k sampled completions per prompt."""

NO_ANSWER = "(no final answer was given)"
"""Shown to the reflection prompt in place of an answer that could not be extracted."""

# --------------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------------


def labelled(row: dict[str, Any]) -> bool:
    """Whether the row has a reference answer or a verifier, so correctness can be decided."""
    return bool(row.get("answer")) or bool(row.get("verifier"))


ANSWER_POLICY = "first_boxed"
"""How answers are read, by default: SPARK's rule (the first ``\\boxed{}``, as its recycler and verifier
read them), so the judge sees at test time the answers it was trained to judge."""


def _correct(text: str, row: dict[str, Any], extract: str = ANSWER_POLICY) -> bool | None:
    """The verifier's judgement of a completion; None for an unlabelled row."""
    if not labelled(row):
        return None
    return score(text, row.get("answer") or "", row.get("verifier") or None, extract) >= 1.0


def _mean(values: Iterable[float | bool]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _call(generate: Generator, prompts: list[Chat]) -> list[str]:
    """One generator call; checks that it returned one completion per prompt."""
    if not prompts:
        return []
    out = list(generate(prompts))
    if len(out) != len(prompts):
        raise RuntimeError(f"the generator returned {len(out)} completions for {len(prompts)} prompts")
    return out


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------------------------------
# Solve -> judge -> reflect
# --------------------------------------------------------------------------------------------------


def solve(
    generate: Generator,
    rows: list[dict[str, Any]],
    initial: list[str] | None = None,
    extract: str = ANSWER_POLICY,
) -> list[dict[str, Any]]:
    """The solve stage alone: each row's own prompt, one greedy completion; one record per row.

    ``initial``, when given, holds completions already generated for the rows (``posttrain eval``
    has its greedy ones), and nothing is generated. Records have the keys of
    :func:`solve_judge_reflect`'s, with empty ``rounds``.
    """
    if initial is None:
        initial = _call(generate, [row["prompt"] for row in rows])
    elif len(initial) != len(rows):
        raise ValueError(f"initial has {len(initial)} completions for {len(rows)} rows")
    answer_of = get_extractor(extract)
    records = []
    for row, text in zip(rows, initial):
        correct = _correct(text, row, extract)
        records.append(
            {
                "id": row.get("id"),
                "question": row["question"],
                "answer": row.get("answer"),
                "completion": text,
                "extracted": answer_of(text),
                "correct_initial": correct,
                "rounds": [],
                "final_completion": text,
                "final_answer": answer_of(text),
                "correct": correct,
                "calls": 1,
            }
        )
    return records


def solve_judge_reflect(
    generate: Generator,
    rows: list[dict[str, Any]],
    rounds: int = 2,
    initial: list[str] | None = None,
    extract: str = ANSWER_POLICY,
    verdict_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """Run the test-time loop (module docstring) over ``rows``; one record per row.

    ``verdict_prefix`` (``spark.verdict_prefix``) begins each judge reply, as in training.

    ``initial``: the rows' solve completions when already generated (see :func:`solve`); the solve
    stage then costs nothing here but still counts as one call per row.

    A record::

        id, question, answer                 the row's (answer: the reference, None if unlabelled)
        completion, extracted, correct_initial   the solve stage (correct_*: None if unlabelled)
        rounds    [{judged, judge, verdict, judged_correct, reflection, extracted, correct}, ...]
                  judge/verdict are None when the answer was missing and the judge was skipped;
                  reflection/extracted/correct are None in the round where the judge said "Yes"
        final_completion, final_answer, correct  what stands at the end
        calls     generator calls spent on the row (1 + judges + reflections)
    """
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1 (reflection rounds after the first solve), got {rounds}.")
    records = solve(generate, rows, initial, extract)
    answer_of = get_extractor(extract)
    active = list(range(len(rows)))
    for _ in range(rounds):
        for i in active:
            rec = records[i]
            rec["rounds"].append(
                {
                    "judged": rec["final_answer"],
                    "judge": None,
                    "verdict": None,
                    "judged_correct": rec["correct"],
                }
            )
        # Judge stage: only rows with an answer to show; a missing answer is wrong without asking.
        asked = [i for i in active if records[i]["final_answer"] is not None]
        prompts = [
            chat(
                JUDGE_TEMPLATE.format(question=rows[i]["question"], answer=records[i]["final_answer"]),
                rows[i],
                verdict_prefix,
            )
            for i in asked
        ]
        for i, text in zip(asked, _call(generate, prompts)):
            records[i]["rounds"][-1].update(judge=text, verdict=judge_verdict(text))
            records[i]["calls"] += 1
        stopped = {i for i in asked if records[i]["rounds"][-1]["verdict"] == "Yes"}
        for i in stopped:
            records[i]["rounds"][-1].update(reflection=None, extracted=None, correct=None)
        active = [i for i in active if i not in stopped]
        # Reflection stage: every row the judge did not accept.
        prompts = [
            chat(
                REFLECT_TEMPLATE.format(
                    question=rows[i]["question"], answer=records[i]["final_answer"] or NO_ANSWER
                ),
                rows[i],
            )
            for i in active
        ]
        for i, text in zip(active, _call(generate, prompts)):
            rec = records[i]
            correct = _correct(text, rows[i], extract)
            rec["rounds"][-1].update(reflection=text, extracted=answer_of(text), correct=correct)
            rec.update(
                final_completion=text,
                final_answer=answer_of(text),
                correct=correct,
                calls=rec["calls"] + 1,
            )
        if not active:
            break
    return records


def reflect_metrics(records: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Summary of :func:`solve_judge_reflect` records.

    Accuracies and changes are fractions of the labelled rows (so ``accuracy_reflect -
    accuracy_initial == changed_wrong_to_right - changed_right_to_wrong``); they are None when no
    row is labelled. Judge figures are over the judge calls actually made: ``judge_accuracy`` counts
    a verdict right when it is "Yes" for a correct answer or "No" for a wrong one (an unparseable
    verdict is wrong); ``judge_unparsed`` and ``judge_yes_rate`` are fractions of all judge calls.

    >>> reflect_metrics([{"correct_initial": False, "correct": True, "calls": 3, "rounds": [
    ...     {"judge": "... No", "verdict": "No", "judged_correct": False}]}])["judge_accuracy"]
    1.0
    """
    scored = [r for r in records if r["correct_initial"] is not None]
    judged = [t for r in records for t in r["rounds"] if t["judge"] is not None]
    judged_scored = [t for t in judged if t["judged_correct"] is not None]
    return {
        "n": len(records),
        "n_labelled": len(scored),
        "accuracy_initial": _mean(r["correct_initial"] for r in scored),
        "accuracy_reflect": _mean(r["correct"] for r in scored),
        "changed_right_to_wrong": _mean(r["correct_initial"] and not r["correct"] for r in scored),
        "changed_wrong_to_right": _mean(not r["correct_initial"] and r["correct"] for r in scored),
        "judge_calls": len(judged),
        "judge_accuracy": _mean(
            t["verdict"] == ("Yes" if t["judged_correct"] else "No") for t in judged_scored
        ),
        "judge_unparsed": _mean(t["verdict"] is None for t in judged),
        "judge_yes_rate": _mean(t["verdict"] == "Yes" for t in judged),
        "mean_calls": _mean(r["calls"] for r in records),
    }


# --------------------------------------------------------------------------------------------------
# The policy as a reward model
# --------------------------------------------------------------------------------------------------


def _first(candidates: list[tuple[str, bool]], correct: bool) -> str | None:
    return next((answer for answer, ok in candidates if ok == correct), None)


def judge_eval(
    generate: Generator,
    rows: list[dict[str, Any]],
    samples_per_row: int,
    sampler: Sampler,
    rng: random.Random,
    extract: str = ANSWER_POLICY,
    verdict_prefix: str | None = None,
) -> tuple[dict[str, float | int | None], list[dict[str, Any]]]:
    """Judge accuracy of the policy on its own sampled answers; returns (metrics, task records).

    Per row, ``samples_per_row`` solutions are sampled and verified. The first correct and the first
    wrong extracted answer (when they exist; completions without an answer are dropped) give one
    pointwise task each, labelled by :func:`posttrain.methods.spark.templates.pointwise` with a template
    drawn by ``rng`` ("Yes"/"A" = correct); a row with both gives one pairwise task, the correct
    answer at (A) for even-numbered pairs and at (B) for odd ones. All tasks are judged greedily in
    one ``generate`` call.

    Metrics: ``pointwise_accuracy`` (also split ``_on_correct`` / ``_on_wrong`` answers),
    ``pairwise_accuracy`` and its ``_correct_first`` / ``_correct_second`` halves, ``position_bias``
    (first - second: > 0 when the judge favours (A)), ``yes_rate`` (pointwise verdicts calling the
    answer correct), ``unparsed`` (verdicts that could not be read, over all tasks), the counts
    ``n_pointwise`` / ``n_pairwise`` and ``sample_accuracy`` (fraction of sampled solutions that are
    correct). An accuracy with no tasks behind it is None.
    """
    if samples_per_row < 1:
        raise ConfigError(f"samples_per_row must be >= 1, got {samples_per_row}.")
    unlabelled = [row.get("id") for row in rows if not labelled(row)]
    if unlabelled:
        raise DataError(
            f"judge evaluation needs reference answers, and {len(unlabelled)} rows have none "
            f"(e.g. {unlabelled[0]!r}). Point data.answer_field at the answer column, or drop --judge."
        )
    samples = sampler([row["prompt"] for row in rows], samples_per_row)
    answer_of = get_extractor(extract)
    tasks: list[dict[str, Any]] = []
    prompts: list[Chat] = []
    verified: list[bool] = []
    n_pairs = 0
    for row, texts in zip(rows, samples):
        candidates = []
        for text in texts:
            ok = bool(_correct(text, row, extract))
            verified.append(ok)
            answer = answer_of(text)
            if answer is not None:
                candidates.append((answer, ok))
        right, wrong = _first(candidates, True), _first(candidates, False)
        base = {"id": row.get("id"), "question": row["question"], "reference": row.get("answer")}
        for answer, ok in ((right, True), (wrong, False)):
            if answer is not None:
                text, label = pointwise(row["question"], answer, ok, rng)
                tasks.append(
                    {**base, "kind": "pointwise", "answer": answer, "answer_correct": ok, "label": label}
                )
                prompts.append(chat(text, row, verdict_prefix))
        if right is not None and wrong is not None:
            correct_first = n_pairs % 2 == 0
            n_pairs += 1
            a, b = (right, wrong) if correct_first else (wrong, right)
            text = rng.choice(PAIRWISE).format(question=row["question"], answer_a=a, answer_b=b)
            label = "A" if correct_first else "B"
            tasks.append({**base, "kind": "pairwise", "answer_a": a, "answer_b": b, "label": label})
            prompts.append(chat(text, row, verdict_prefix))
    for task, text in zip(tasks, _call(generate, prompts)):
        verdict = judge_verdict(text)
        task.update(judge=text, verdict=verdict, right=verdict == task["label"])
    point = [t for t in tasks if t["kind"] == "pointwise"]
    pair = [t for t in tasks if t["kind"] == "pairwise"]
    first = _mean(t["right"] for t in pair if t["label"] == "A")
    second = _mean(t["right"] for t in pair if t["label"] == "B")
    metrics = {
        "n": len(rows),
        "sample_accuracy": _mean(verified),
        "n_pointwise": len(point),
        "n_pairwise": len(pair),
        "pointwise_accuracy": _mean(t["right"] for t in point),
        "pointwise_accuracy_on_correct": _mean(t["right"] for t in point if t["answer_correct"]),
        "pointwise_accuracy_on_wrong": _mean(t["right"] for t in point if not t["answer_correct"]),
        "yes_rate": _mean(t["verdict"] in POSITIVE_VERDICTS for t in point),
        "pairwise_accuracy": _mean(t["right"] for t in pair),
        "pairwise_accuracy_correct_first": first,
        "pairwise_accuracy_correct_second": second,
        "position_bias": None if first is None or second is None else first - second,
        "unparsed": _mean(t["verdict"] is None for t in tasks),
    }
    return metrics, tasks


# --------------------------------------------------------------------------------------------------
# Hugging Face adapters
# --------------------------------------------------------------------------------------------------


def hf_generator(
    model, tokenizer, max_new_tokens: int, batch_size: int = 64, desc: str = "selfcheck"
) -> Generator:
    """A :data:`Generator` decoding greedily with ``model`` (:func:`posttrain.evaluation.generate`)."""

    def run(prompts: list[Chat]) -> list[str]:
        outs = hf_generate(model, tokenizer, prompts, max_new_tokens, 1, 0.0, batch_size, desc)
        return [texts[0] for texts in outs]

    return run


def hf_sampler(
    model, tokenizer, max_new_tokens: int, temperature: float, batch_size: int = 64, desc: str = "sample"
) -> Sampler:
    """A :data:`Sampler` drawing ``k`` completions per prompt at ``temperature`` (> 0)."""
    if temperature <= 0:
        raise ConfigError(f"sampling needs temperature > 0, got {temperature}; judge candidates must vary.")

    def run(prompts: list[Chat], k: int) -> list[list[str]]:
        return hf_generate(model, tokenizer, prompts, max_new_tokens, k, temperature, batch_size, desc)

    return run
