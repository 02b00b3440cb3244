"""The recipe's ``spark:`` section: what SPARK recycles, how much, and when it trains (``method: spark``).

    spark: {schedule: phase, pointwise_share: 0.3}

Defaults follow SPARK's code (InternLM/Spark ``new_data_gen.py``, ``ppo_trainer.py``): 30% pointwise
judges in mixed groups, at most half the batch's prompts of judge and of reflection tasks per step, and
an auxiliary phase of recycled tasks after each data batch once enough are queued.
"""

from __future__ import annotations

from dataclasses import dataclass

from posttrain.errors import ConfigError

SCHEDULES = ("phase", "interleave")


@dataclass
class SparkConfig:
    """SPARK co-training (used with ``method: spark``): what is recycled, how much, and when it trains."""

    pointwise_share: float = 0.3
    """In a mixed group (some right, some wrong): chance of a pointwise task instead of a pairwise one."""
    balance_labels: bool = False
    """Keep as many pointwise judge tasks on right answers as on wrong ones per step, after ``judge_cap`` (a
    random subset of the larger class; the rest logged as ``recycle/unbalanced``). SPARK takes the tasks as they come (off): when the policy is
    mostly wrong, most pointwise labels are "No" and a small judge can earn the verdict reward by always
    saying "No" (docs/results.md, SPARK). Pairwise tasks are already balanced (the order is random)."""
    judge_cap: int | None = None
    """Most judge tasks (pointwise + pairwise) kept per step; null: half the batch's prompts (the
    reference: 32 of 64), so that judge + reflection tasks never outgrow what a phase consumes."""
    reflect_cap: int | None = None
    """Most reflection tasks kept per step (0: none; null: half the batch's prompts)."""
    schedule: str = "phase"
    """``phase``: once the queue holds a whole batch of tasks, the next batch is only recycled tasks
    (SPARK's separate auxiliary phase), alternating with normal batches; ``interleave``: every batch
    takes up to ``ratio`` of its groups from the queue."""
    ratio: float = 0.5
    """``interleave``: the largest share of a batch's groups taken from the queue."""
    queue_cap: int = 4096
    """Tasks waiting at most; beyond it the oldest are dropped (logged as ``recycle/dropped``)."""
    seed: int = 0
    """Seed of the random choices (mixed with the step, identical on every process)."""
    verdict_prefix: str | None = None
    """Text that begins the judge's reply, e.g. ``"Judgement: \\boxed{"``: the judge prompt ends with it as
    an assistant message the model continues, so a small model's next tokens are its verdict (a 135M
    model otherwise rarely writes one that can be read). Used the same way in training (recycled judge
    tasks, ``spark_judge`` reads prefix + completion) and at inference (``posttrain eval --judge``,
    ``generate --reflect``). null (default): the reply is the model's own from its first token, as in
    SPARK."""

    def __post_init__(self) -> None:
        if not 0 <= self.pointwise_share <= 1:
            raise ConfigError(f"spark.pointwise_share must be in [0, 1], got {self.pointwise_share}.")
        for name in ("judge_cap", "reflect_cap", "queue_cap"):
            value = getattr(self, name)
            if value is None and name != "queue_cap":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"spark.{name} must be an integer >= 0, got {value!r}.")
        if not isinstance(self.balance_labels, bool):
            raise ConfigError(f"spark.balance_labels must be true or false, got {self.balance_labels!r}.")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"spark.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}.")
        if self.verdict_prefix is not None and not isinstance(self.verdict_prefix, str):
            raise ConfigError(
                f"spark.verdict_prefix must be a string (e.g. 'Judgement: \\boxed{{') or null, got {self.verdict_prefix!r}."
            )
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"spark.ratio must be in (0, 1], got {self.ratio}.")
