"""SPARK (arXiv 2509.22624): the policy is also trained as its own generative reward model.

    method: spark      # with no `rewards` list: accuracy on the task's rows, spark_judge on recycled ones
    spark: {...}       # config.py: what is recycled, how much, and when it trains

Every training batch's rollouts and their verified correctness are recycled (recycle.py) into pointwise
and pairwise judge tasks and reflections (templates.py), queued, and trained with the same GRPO
objective in addition to the data (posttrain/feed.py). At inference the policy judges and revises its
own answers (selfcheck.py: ``posttrain generate --reflect``, ``posttrain eval --judge``). The loss is
OpenRLHF's token-level mean (``bnpo``) with a k3 KL loss of 0.001, as the authors' scripts.
docs/methods.md, "SPARK".
"""

from __future__ import annotations

from posttrain.methods.base import PLAIN, Method


def _queue(recipe) -> dict:
    from posttrain.queue import GroupQueue

    spark = recipe.spark
    return {"queue": GroupQueue(max_fraction=spark.ratio, schedule=spark.schedule, capacity=spark.queue_cap)}


def _recycler(trainer, recipe) -> None:
    from posttrain.methods.spark.recycle import Recycler

    extract = next(
        (r.kwargs.get("extract", "lenient") for r in recipe.rewards if r.name == "accuracy"), "first_boxed"
    )  # judge labels are the rollouts' own accuracy rewards
    trainer.scored_hooks.append(
        Recycler(recipe.spark, trainer.queue, log=trainer.log_metric, extract=extract)
    )


SPARK = Method(
    name="spark",
    summary="SPARK (arXiv 2509.22624): rollouts recycled into judge and reflection tasks for the same model",
    preset={**PLAIN, "loss_type": "bnpo", "scale_rewards": "group", "beta": 0.001},
    # The task's accuracy on the original prompts (its verifier reads the first box); judge verdicts and
    # reflections on the recycled ones.
    rewards=(
        {"name": "accuracy", "weight": 1.0, "tasks": ["solve"], "kwargs": {"extract": "first_boxed"}},
        {"name": "spark_judge", "weight": 1.0},
    ),
    trainer_kwargs=_queue,
    installs=(_recycler,),
)
