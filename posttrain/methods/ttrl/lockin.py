"""A label-free watch on test-time RL's majority: how often it flips, and when it locks in.

TTRL rewards agreement with the group's majority answer, so the majority reinforces itself. TTRL-Guard
(arXiv 2605.19444) names the failure: a question whose majority answer stops changing while its share
of the votes is still low has locked in on an answer the model is not sure of, and training then
sharpens it whether it is right or not. :class:`MajorityWatch` is a scored hook that follows each
question's majority from one visit to the next, from the votes alone:

    ttrl/flip_rate       of the questions voted on again this step, the share whose majority changed
    ttrl/revisited       how many questions were voted on again this step
    ttrl/locked_in       share of the questions seen so far that are locked in: the same majority for
                         ``visits`` visits in a row, with a share below ``max_share``

and logs a warning the first time a question locks in. When the data carries answers (a labelled
benchmark used without its labels), ``ttrl/locked_in_wrong`` is the share of locked-in questions whose
majority is wrong: a diagnostic only; labels never reach the reward or the watch's decisions.

    watch = MajorityWatch(extract="boxed", log=trainer.log_metric)
    trainer.scored_hooks.append(watch)          # methods/ttrl installs it for ttrl and ttrv
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from posttrain.rewards import completion_text
from posttrain.verify.math import answers_match, get_extractor, normalize_gsm8k
from posttrain.verify.vote import majority_answer

logger = logging.getLogger(__name__)


class MajorityWatch:
    """Scored hook following each question's majority answer across visits (module docstring)."""

    def __init__(
        self,
        extract: str = "boxed",
        log: Callable[[str, float], None] | None = None,
        visits: int = 3,
        max_share: float = 0.5,
    ):
        if visits < 2:
            raise ValueError(f"visits must be >= 2 (a lock-in is a majority that repeats), got {visits}")
        self.answer_of = get_extractor(extract)
        self.log, self.visits, self.max_share = log, visits, max_share
        self.history: dict[str, dict[str, Any]] = {}
        self.warned: set[str] = set()

    def __call__(self, batch) -> None:
        g = batch.group_size
        flips = revisited = 0
        for start in range(0, len(batch.rows), g):
            row = batch.rows[start]
            if row.get("task") not in (None, "solve"):
                continue
            key = str(row.get("id") if row.get("id") is not None else row.get("question"))
            answers = [self.answer_of(completion_text(c)) for c in batch.completions[start : start + g]]
            majority, share = majority_answer(answers)
            previous = self.history.get(key)
            same = previous is not None and _same(previous["answer"], majority)
            if previous is not None:
                revisited += 1
                flips += not same
            self.history[key] = {
                "answer": majority,
                "share": share,
                "streak": previous["streak"] + 1 if same else 1,
                "truth": row.get("answer"),
            }
        locked = {k for k, h in self.history.items() if self._locked(h)}
        for key in sorted(locked - self.warned):
            h = self.history[key]
            logger.warning(
                "Test-time RL lock-in: question %s has kept the majority answer %r for %d visits with only "
                "%.0f%% of the votes; training keeps sharpening an answer the model is unsure of. A lower "
                "learning rate or more votes per question (n_votes) slows it.",
                key,
                h["answer"],
                h["streak"],
                100 * h["share"],
            )
        self.warned |= locked
        if self.log is None:
            return
        if revisited:
            self.log("ttrl/flip_rate", flips / revisited)
        self.log("ttrl/revisited", float(revisited))
        self.log("ttrl/locked_in", len(locked) / max(len(self.history), 1))
        labelled = [self.history[k] for k in locked if self.history[k]["truth"] is not None]
        if labelled:
            wrong = [h for h in labelled if not _right(h["answer"], h["truth"])]
            self.log("ttrl/locked_in_wrong", len(wrong) / len(labelled))

    def _locked(self, h: dict[str, Any]) -> bool:
        return h["answer"] is not None and h["streak"] >= self.visits and h["share"] < self.max_share

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "warned": sorted(self.warned)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.warned = dict(state["history"]), set(state["warned"])


def _same(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or answers_match(a, b)


def _right(answer: str | None, truth: Any) -> bool:
    return answer is not None and answers_match(answer, normalize_gsm8k(str(truth)))
