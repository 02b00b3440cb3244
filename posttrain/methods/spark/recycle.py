"""SPARK's recycler: every scored step's rollouts become judge and reflection tasks for the same model.

SPARK (arXiv 2509.22624; InternLM/Spark ``new_data_gen.py``; docs/methods.md) keeps the rollouts of each
RLVR step and their verified correctness, and turns each prompt's group into new verifiable prompts:

    all correct  -> pointwise judgement of rollout 0's answer, labelled correct
    all wrong    -> pointwise judgement of a random wrong answer, labelled wrong
    mixed        -> pointwise (``pointwise_share``, 30%) of a random answer of a random class,
                    or pairwise (70%) correct vs wrong, the order randomised
    any wrong    -> reflection on a wrong rollout: its full text for the first half of the batch's
                    groups, its final answer only for the second half; target = the ground truth

With ``balance_labels`` (not in SPARK), as many pointwise tasks on right answers as on wrong ones are kept
per step (:func:`balance_pointwise`).

Judge prompts show the final answer only, read as SPARK reads it (:func:`shown_answer`: the first
``\\boxed{}``); a drawn rollout without one is not recycled (the task is dropped, as in the reference). Judge and
reflection prompts keep the source row's system message (:func:`posttrain.methods.spark.templates.chat`, the
builder ``posttrain generate --reflect`` uses too). At most ``judge_cap`` judge
and ``reflect_cap`` reflection tasks are kept per step (a random subset; by default half the batch's
prompts each, like the reference's 32 + 32 per 64 prompts). Recycled rows carry
``task`` (``pointwise`` | ``pairwise`` | ``reflection``), ``judge_label`` (``Yes``/``No``/``A``/``B``
for judge tasks) and, for reflection, the original ``answer``/``verifier``; they go into the
trainer's :class:`~posttrain.queue.GroupQueue` and are trained later as whole groups with the same
objective (``spark_judge`` scores them), in addition to the data (:mod:`posttrain.feed`). Recycled
tasks are not recycled again.

The recycler is a scored hook: it sees the batch gathered from every process, and its random draws
are seeded by ``(spark.seed, generation batch index)``, so every process builds the same tasks and two
generation batches of one optimizer step do not repeat each other's draws.

    recycler = Recycler(SparkConfig(), trainer.queue, log=trainer.log_metric)
    trainer.scored_hooks.append(recycler)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from posttrain.methods.spark import templates
from posttrain.methods.spark.config import SCHEDULES, SparkConfig  # noqa: F401  (SCHEDULES: importable here as before)
from posttrain.rewards import completion_text
from posttrain.verify.math import get_extractor, score

SOLVE = "solve"
TASKS = ("pointwise", "pairwise", "reflection")


@dataclass
class Rollout:
    """One completion of a prompt's group, as the recycler needs it."""

    text: str
    answer: str | None
    correct: bool


def _row(
    source: dict[str, Any],
    text: str,
    task: str,
    label: str | None,
    step: int,
    n: int,
    verdict_prefix: str | None = None,
) -> dict[str, Any]:
    reflect = task == "reflection"
    return {
        "prompt": templates.chat(text, source, None if reflect else verdict_prefix),
        "question": source.get("question") if reflect else text,
        # Judge rows have no math answer: `accuracy` must not score a verdict against it.
        "answer": source.get("answer") if reflect else None,
        "verifier": (source.get("verifier") or "") if reflect else "",
        "id": f"{source.get('id')}/{task}/{step}/{n}",
        "task": task,
        "judge_label": label,
    }


def judge_task(
    source: dict[str, Any], rollouts: Sequence[Rollout], rng: random.Random, pointwise_share: float
) -> tuple[str, str, str] | None:
    """One judge task for a group: ``(task, prompt text, label)``, or None when no answer can be shown.

    The draws follow SPARK's ``new_data_gen``: in a mixed group the rollout is drawn from the whole class
    (pointwise) or one from each class (pairwise) and the task is dropped when a drawn rollout has no
    boxed answer; an all-wrong group draws among the wrong rollouts that have one.
    """
    question = source.get("question") or ""
    if all(r.correct for r in rollouts):
        if rollouts[0].answer is None:
            return None
        return ("pointwise", *templates.pointwise(question, rollouts[0].answer, True, rng))
    wrong = [r for r in rollouts if not r.correct]
    if not any(r.correct for r in rollouts):
        shown = [r for r in wrong if r.answer is not None]
        if not shown:
            return None
        return ("pointwise", *templates.pointwise(question, rng.choice(shown).answer, False, rng))
    right = [r for r in rollouts if r.correct]
    if rng.random() < pointwise_share:
        correct = rng.random() < 0.5  # the label class first, uniformly, then a rollout of it
        drawn = rng.choice(right if correct else wrong)
        if drawn.answer is None:
            return None
        return ("pointwise", *templates.pointwise(question, drawn.answer, correct, rng))
    good, bad = rng.choice(right), rng.choice(wrong)
    if good.answer is None or bad.answer is None:
        return None
    return ("pairwise", *templates.pairwise(question, good.answer, bad.answer, rng))


def reflection_task(
    source: dict[str, Any], rollouts: Sequence[Rollout], mode: str, rng: random.Random
) -> str | None:
    """A reflection prompt on one wrong rollout (``mode`` cot: its text; answer: its final answer)."""
    question = source.get("question") or ""
    if mode == "cot":
        wrong = [r for r in rollouts if not r.correct]
        return templates.reflection(question, rng.choice(wrong).text, "cot", rng) if wrong else None
    wrong = [r for r in rollouts if not r.correct and r.answer is not None]
    return templates.reflection(question, rng.choice(wrong).answer, "answer", rng) if wrong else None


def shown_answer(text: str) -> str | None:
    """The answer a judge is shown for a rollout, by SPARK's rule (``new_data_gen.extract_boxed_answer``):
    the content of the first ``\\boxed{``, up to its closing brace or, when it never closes, to the end of
    the text; None without a box or with an empty one.

    >>> shown_answer("so \\\\boxed{4} or \\\\boxed{5}"), shown_answer("so \\\\boxed{4"), shown_answer("4")
    ('4', '4', None)
    """
    start = text.find("\\boxed{")
    if start == -1:
        return None
    depth, chars = 1, []
    for ch in text[start + len("\\boxed{") :]:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            break
        chars.append(ch)
    return "".join(chars).strip() or None


def build_tasks(
    groups: Sequence[tuple[dict[str, Any], Sequence[Rollout]]],
    cfg: SparkConfig,
    rng: random.Random,
    step: int,
    batch_groups: int | None = None,
) -> tuple[list[dict[str, Any]], Counter]:
    """Recycled rows for one step's solve groups (``(source row, rollouts)`` each), and counts.

    ``batch_groups``: prompts in the batch (default ``len(groups)``), for the default caps.
    """
    stats: Counter = Counter()
    judge, reflect = [], []
    half = (len(groups) + 1) // 2
    default_cap = max(1, (batch_groups or len(groups)) // 2)
    judge_cap = default_cap if cfg.judge_cap is None else cfg.judge_cap
    reflect_cap = default_cap if cfg.reflect_cap is None else cfg.reflect_cap
    for i, (source, rollouts) in enumerate(groups):
        made = judge_task(source, rollouts, rng, cfg.pointwise_share)
        if made is not None:
            judge.append(_row(source, made[1], made[0], made[2], step, i, cfg.verdict_prefix))
        if reflect_cap:
            text = reflection_task(source, rollouts, "cot" if i < half else "answer", rng)
            if text is not None:
                reflect.append(_row(source, text, "reflection", None, step, i))
    for rows, cap, name in ((judge, judge_cap, "judge"), (reflect, reflect_cap, "reflection")):
        if len(rows) > cap:
            stats[f"capped_{name}"] += len(rows) - cap
            keep = sorted(rng.sample(range(len(rows)), cap))
            rows[:] = [rows[k] for k in keep]
    if cfg.balance_labels:  # after the cap, which draws at random and would unbalance them again
        judge = balance_pointwise(judge, rng, stats)
    for row in (*judge, *reflect):
        stats[row["task"]] += 1
    return [*judge, *reflect], stats


def balance_pointwise(rows: list[dict[str, Any]], rng: random.Random, stats: Counter) -> list[dict[str, Any]]:
    """``rows`` with as many pointwise tasks on right answers (a positive label) as on wrong ones: a random
    subset of the larger class is kept, the other judge rows untouched and in order; the number dropped
    is counted as ``unbalanced``."""
    point = [i for i, r in enumerate(rows) if r["task"] == "pointwise"]
    classes = [
        [i for i in point if (rows[i]["judge_label"] in templates.POSITIVE_VERDICTS) == right]
        for right in (True, False)
    ]
    k = min(map(len, classes))
    kept = {i for members in classes for i in rng.sample(members, k)}
    stats["unbalanced"] += len(point) - len(kept)
    return [r for i, r in enumerate(rows) if r["task"] != "pointwise" or i in kept]


class Recycler:
    """Scored hook: turn each training batch's solve groups into SPARK tasks and queue them.

    ``extract``: the answer policy of the method's ``accuracy`` reward, so that a judge label is exactly the
    reward the rollout got (SPARK: ``first_boxed``). The answer shown to a judge is, with that policy, the
    first ``\\boxed{}`` (SPARK's rule); with another (e.g. ``lenient`` for a task that asks for a bare
    number), the answer that policy reads. A rollout without one is never shown.
    """

    def __init__(
        self,
        cfg: SparkConfig,
        queue,
        log: Callable[[str, float], None] | None = None,
        extract: str = "first_boxed",
    ):
        self.cfg = cfg
        self.queue = queue
        self.log = log
        self.extract = extract
        # SPARK's rule (the first box, even unclosed) with SPARK's policy; otherwise the answer exactly as
        # the accuracy reward read it (a task that asks for a bare number shows that number).
        self.shown = shown_answer if extract == "first_boxed" else get_extractor(extract)

    def __call__(self, batch) -> None:
        # Seeded per generation batch, not per optimizer step: two batches of one step draw differently.
        draw = int(batch.extra.get("generation_index", batch.extra.get("global_step", 0)))
        tasks = [row.get("task") or SOLVE for row in batch.rows]
        g = batch.group_size
        groups, skipped = [], 0
        for start in range(0, len(batch.rows), g):
            source = batch.rows[start]
            if tasks[start] != SOLVE:
                continue  # recycled tasks are trained, not recycled again (as in the reference)
            if source.get("answer") is None and not source.get("verifier"):
                skipped += 1  # no ground truth: correctness, and so every label, is unknown
                continue
            rollouts = []
            for text in map(completion_text, batch.completions[start : start + g]):
                ok = score(text, source.get("answer"), source.get("verifier") or None, self.extract) >= 1.0
                rollouts.append(Rollout(text=text, answer=self.shown(text), correct=ok))
            groups.append((source, rollouts))
        rng = random.Random(f"{self.cfg.seed}:{draw}")
        rows, stats = build_tasks(groups, self.cfg, rng, draw, batch_groups=len(batch.rows) // g)
        self.queue.put(rows)
        if self.log is not None:
            self._log(batch, tasks, stats, skipped)

    def _log(self, batch, tasks: list[str], stats: Counter, skipped: int) -> None:
        g = batch.group_size
        in_batch = Counter(tasks[::g])  # prompts (groups) of each task in the batch just trained
        for task in (SOLVE, *TASKS):
            self.log(f"tasks/{task}/count", float(in_batch.get(task, 0)))
            rows = [i for i, t in enumerate(tasks) if t == task]
            if rows:  # the task's own reward: accuracy for solve/reflection, the verdict for judging
                values = [v for v in (_first_score(batch.rewards_per_func[i]) for i in rows) if v is not None]
                if values:
                    self.log(f"tasks/{task}/score", sum(values) / len(values))
        for task in TASKS:
            self.log(f"recycle/made_{task}", float(stats.get(task, 0)))
        self.log("recycle/skipped_no_answer", float(skipped))
        if self.cfg.balance_labels:
            self.log("recycle/unbalanced", float(stats.get("unbalanced", 0)))
        self.log("recycle/queue_size", float(len(self.queue)))
        self.log("recycle/dropped", float(self.queue.dropped))


def _first_score(values) -> float | None:
    for v in values.tolist():
        if v == v:  # not NaN
            return v
    return None
