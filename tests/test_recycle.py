"""Tests for SPARK's recycler (posttrain/methods/spark/recycle.py), the queue schedules and per-task reward routing.

    pytest tests/test_recycle.py -q

Groups are hand-built: the reference answer is 4; a completion "\\boxed{4}" is right, "\\boxed{5}"
wrong, and "no idea" is wrong with no answer to show a judge.
"""

from __future__ import annotations

import json
import random

import pytest
import torch

from posttrain.config import load_recipe
from posttrain.errors import ConfigError
from posttrain.methods.spark.recycle import Recycler, Rollout, SparkConfig, build_tasks, judge_task
from posttrain.queue import GroupQueue
from posttrain.rewards import RewardPlugin, RewardSpec, load_reward
from posttrain.trainer import ScoredBatch

RIGHT, WRONG, BLANK = "so \\boxed{4}", "so \\boxed{5}", "no idea"
G = 4


def rollouts(*texts: str) -> list[Rollout]:
    return [Rollout(t, {RIGHT: "4", WRONG: "5"}.get(t), t == RIGHT) for t in texts]


def source(i: int = 0) -> dict:
    return {"question": f"What is {i} + 4 - {i}?", "answer": "4", "verifier": "", "id": f"q{i}"}


def batch_of(groups: list[list[str]], rows: list[dict] | None = None) -> ScoredBatch:
    rows = rows or [source(i) for i in range(len(groups))]
    return ScoredBatch(
        rows=[dict(r) for r in rows for _ in range(G)],
        prompts=[None] * (G * len(groups)),
        completions=[t for group in groups for t in group],
        completion_ids=[[0]] * (G * len(groups)),
        rewards_per_func=torch.tensor([[float(t == RIGHT)] for group in groups for t in group]),
        reward_names=["accuracy"],
        group_size=G,
        process_slice=slice(0, G * len(groups)),
        extra={"global_step": 3},
    )


# -- construction rules ----------------------------------------------------------------------------


def test_all_correct_is_pointwise_on_rollout_zero_labelled_correct():
    for seed in range(20):
        task, text, label = judge_task(
            source(), rollouts(RIGHT, RIGHT, RIGHT, RIGHT), random.Random(seed), 0.3
        )
        assert task == "pointwise" and label in ("Yes", "A") and "<Answer>:\n4\n" in text


def test_all_wrong_is_pointwise_on_a_wrong_answer_labelled_wrong():
    for seed in range(20):
        task, text, label = judge_task(
            source(), rollouts(BLANK, WRONG, BLANK, WRONG), random.Random(seed), 0.3
        )
        assert task == "pointwise" and label in ("No", "B") and "<Answer>:\n5\n" in text
    # Nothing to show a judge: no task.
    assert judge_task(source(), rollouts(BLANK, BLANK, BLANK, BLANK), random.Random(0), 0.3) is None


def test_mixed_groups_are_thirty_percent_pointwise_and_pairwise_otherwise():
    kinds, positions = [], []
    for seed in range(400):
        task, text, label = judge_task(
            source(), rollouts(RIGHT, WRONG, RIGHT, WRONG), random.Random(seed), 0.3
        )
        kinds.append(task)
        if task == "pairwise":
            # The label is where the correct answer (4) was put.
            assert f"({label}) 4" in text
            positions.append(label)
    share = kinds.count("pointwise") / len(kinds)
    assert 0.22 < share < 0.38
    assert 0.4 < positions.count("A") / len(positions) < 0.6  # the order is randomised
    assert {judge_task(source(), rollouts(RIGHT, WRONG), random.Random(s), 1.0)[0] for s in range(20)} == {
        "pointwise"
    }
    assert {judge_task(source(), rollouts(RIGHT, WRONG), random.Random(s), 0.0)[0] for s in range(20)} == {
        "pairwise"
    }


def test_reflection_uses_full_text_for_the_first_half_and_answers_for_the_second():
    groups = [(source(i), rollouts(RIGHT, WRONG, RIGHT, RIGHT)) for i in range(4)]
    rows, stats = build_tasks(groups, SparkConfig(judge_cap=32, reflect_cap=32), random.Random(0), step=3)
    reflect = [r for r in rows if r["task"] == "reflection"]
    assert len(reflect) == 4 and stats["reflection"] == 4
    for i, row in enumerate(reflect):
        text = row["prompt"][0]["content"]
        assert ("so \\boxed{5}" in text) == (i < 2)  # cot mode shows the text, answer mode only "5"
        assert row["answer"] == "4" and row["judge_label"] is None  # the original ground truth
    judge = [r for r in rows if r["task"] != "reflection"]
    assert all(r["answer"] is None and r["judge_label"] in ("Yes", "No", "A", "B") for r in judge)
    assert len({r["id"] for r in rows}) == len(rows)


def test_caps_keep_a_random_subset_and_count_the_rest():
    groups = [(source(i), rollouts(RIGHT, WRONG, WRONG, WRONG)) for i in range(10)]
    rows, stats = build_tasks(groups, SparkConfig(judge_cap=3, reflect_cap=2), random.Random(0), step=0)
    assert sum(r["task"] != "reflection" for r in rows) == 3 and stats["capped_judge"] == 7
    assert sum(r["task"] == "reflection" for r in rows) == 2 and stats["capped_reflection"] == 8
    rows, _ = build_tasks(groups, SparkConfig(reflect_cap=0), random.Random(0), step=0)
    assert not any(r["task"] == "reflection" for r in rows)


def test_recycler_is_deterministic_across_processes_and_skips_unlabelled_and_recycled_rows():
    groups = [[RIGHT, WRONG, RIGHT, WRONG], [RIGHT] * 4, [WRONG] * 4, [RIGHT, WRONG, BLANK, BLANK]]
    rows = [source(0), {**source(1), "answer": None}, source(2), {**source(3), "task": "pairwise"}]
    queues, logged = [], {}
    for _ in range(2):  # two "processes" see the same gathered batch
        queue = GroupQueue()
        Recycler(SparkConfig(), queue, log=logged.__setitem__)(batch_of(groups, rows))
        queues.append(queue.pop(100))
    assert queues[0] == queues[1] and queues[0]
    # q1 has no answer (skipped, counted); q3 is a recycled task (not recycled again).
    assert {r["id"].split("/")[0] for r in queues[0]} == {"q0", "q2"}
    assert logged["recycle/skipped_no_answer"] == 1.0
    assert logged["tasks/solve/count"] == 3.0 and logged["tasks/pairwise/count"] == 1.0
    assert logged["tasks/solve/score"] == pytest.approx(6 / 12)


# -- issue 13 defects: what a judge is shown, its context, its seed ----------------------------------


def test_a_rollout_without_a_box_is_never_shown_to_a_judge():
    """Defect (issue 13): the lenient extractor showed "5" from "The answer is 5"; SPARK shows boxed answers
    only, so an all-wrong group whose rollouts have no box makes no judge task."""
    queue = GroupQueue()
    unboxed = ["The answer is 5", "I think 5", "5", "it is 6"]
    Recycler(SparkConfig(reflect_cap=0), queue)(batch_of([unboxed]))
    assert len(queue) == 0
    # The box is what is shown, also when the text says more after it.
    Recycler(SparkConfig(reflect_cap=0), queue)(batch_of([["so \\boxed{5}, maybe 7"] * 4]))
    (row,) = queue.pop(1)
    assert "<Answer>:\n5\n" in row["prompt"][-1]["content"]


def test_recycled_prompts_keep_the_system_message_as_at_inference():
    """Defect (issue 13): recycled prompts dropped the row's system message that `generate --reflect` adds."""
    from posttrain.methods.spark.templates import chat

    system = {"role": "system", "content": "You are a careful tutor."}
    row = {**source(0), "prompt": [system, {"role": "user", "content": "What is 0 + 4 - 0?"}]}
    queue = GroupQueue()
    Recycler(SparkConfig(), queue)(batch_of([[WRONG] * 4], [row]))
    made = queue.pop(10)
    assert made and all(r["prompt"][0] == system and len(r["prompt"]) == 2 for r in made)
    for r in made:  # the same builder as inference: system message + one user turn
        assert r["prompt"] == chat(r["prompt"][1]["content"], row)


def test_two_generation_batches_of_one_step_draw_differently():
    """Defect (issue 13): the recycler seeded its draws by the optimizer step only, so two generation batches
    of one step (gradient accumulation over several generations) drew the same templates and rollouts."""
    groups = [[RIGHT, WRONG, WRONG, RIGHT]] * 6
    made = []
    for index in (0, 1):
        queue = GroupQueue()
        batch = batch_of(groups)
        batch.extra.update(global_step=3, generation_index=index)
        Recycler(SparkConfig(), queue)(batch)
        made.append([r["prompt"][-1]["content"] for r in queue.pop(100)])
    assert made[0] != made[1]


# -- the queue: cap, schedules, resume ---------------------------------------------------------------


def test_queue_over_capacity_drops_the_oldest_and_counts_them():
    queue = GroupQueue(capacity=3)
    queue.put([{"id": i} for i in range(5)])
    assert [r["id"] for r in queue.pop(10)] == [2, 3, 4] and queue.dropped == 2


def test_phase_schedule_alternates_whole_batches_once_enough_is_queued():
    queue = GroupQueue(schedule="phase")
    queue.put([{"id": i} for i in range(3)])
    assert queue.take_count(4) == 0  # not a whole batch yet
    queue.put([{"id": 3}, {"id": 4}])
    assert queue.take_count(4) == 4
    queue.pop(4)
    queue.put([{"id": i} for i in range(10)])
    assert queue.take_count(4) == 0  # a normal batch after every auxiliary one
    assert queue.take_count(4) == 4


def test_interleave_schedule_takes_a_share_of_every_batch():
    queue = GroupQueue(max_fraction=0.5)
    queue.put([{"id": i} for i in range(10)])
    assert queue.take_count(4) == 2 and queue.take_count(1) == 1


def test_queue_state_round_trips():
    queue = GroupQueue(schedule="phase", capacity=2)
    queue.put([{"id": i} for i in range(4)])
    queue.take_count(2)
    restored = GroupQueue(schedule="phase", capacity=2)
    restored.load_state_dict(queue.state_dict())
    assert restored.pop(5) == [{"id": 2}, {"id": 3}] and restored.dropped == 2
    assert restored.take_count(0) == 0  # the last batch was a phase: a normal one comes next


# -- reward routing and the recipe -------------------------------------------------------------------


def test_reward_tasks_filter_routes_rows():
    accuracy = RewardPlugin.from_spec(RewardSpec(name="accuracy", tasks=["solve"]))
    judge = RewardPlugin(load_reward("spark_judge"), "spark_judge")
    completions = [RIGHT, "\\boxed{Yes}", RIGHT]
    kwargs = {
        "answer": ["4", None, "4"],
        "task": [None, "pointwise", "reflection"],
        "judge_label": [None, "Yes", None],
    }
    assert accuracy(None, completions, **kwargs) == [1.0, None, None]
    assert judge(None, completions, **kwargs) == [None, 1.0, 1.0]


@pytest.mark.parametrize(
    "spark, phrase",
    [
        ({"schedule": "both"}, "spark.schedule"),
        ({"judge_cap": -1}, "spark.judge_cap"),
        ({"balance_labels": "yes"}, "spark.balance_labels"),
        ({"ratio": 0}, "spark.ratio"),
    ],
)
def test_spark_settings_are_checked(tmp_path, spark, phrase):
    path = tmp_path / "r.yaml"
    path.write_text(json.dumps({"data": {"generator": "chain_sum"}, "method": "spark", "spark": spark}))
    with pytest.raises(ConfigError, match=phrase):
        load_recipe(path)


def test_method_spark_fills_its_rewards(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {generator: chain_sum}\nmethod: spark\n")
    recipe = load_recipe(path)
    assert [(r.name, r.tasks) for r in recipe.rewards] == [("accuracy", ["solve"]), ("spark_judge", None)]
    assert recipe.grpo_config().beta == 0.001


# -- the shipped recipe, shrunk: recycled tasks reach the logged batches ----------------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]
SHRINK = (
    "--rollout.engine hf --max_steps 3 --data.max_samples 64 --per_device_train_batch_size 8 "
    "--num_generations 4 --steps_per_generation 1 --max_completion_length 64 --gradient_checkpointing false "
    "--eval.before false --eval.after false"
).split()


def test_spark_recipe_header_documents_the_shrink_flags():
    header = (REPO / "recipes" / "spark_math.yaml").read_text()
    for flag in SHRINK[::2]:
        assert flag in header, flag


def test_spark_recipe_trains_recycled_tasks(tiny_model, tmp_path, monkeypatch):
    from posttrain import cli

    monkeypatch.chdir(REPO)  # the recipe names data/gsm8k/*.jsonl relative to the repository
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    out = tmp_path / "spark"
    # Short answers from the tiny model: every group is wrong and none has a \boxed{} answer, so no judge
    # task (SPARK never shows a judge a rollout without a box) and one full-text reflection per step.
    flags = [
        *SHRINK,
        "--max_completion_length",
        "16",
        "--model.name_or_path",
        tiny_model,
        "--output_dir",
        str(out),
    ]
    assert cli.main(["train", "recipes/spark_math.yaml", *flags]) == 0
    steps = [m for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(steps) == 3
    solve = [m["tasks/solve/count"] for m in steps]
    recycled = [
        m["tasks/pointwise/count"] + m["tasks/pairwise/count"] + m["tasks/reflection/count"] for m in steps
    ]
    # Phase schedule: two solve batches fill the queue with one batch (2 groups) of tasks, trained next.
    assert solve == [2.0, 2.0, 0.0] and recycled == [0.0, 0.0, 2.0]
    assert steps[0]["recycle/made_pointwise"] + steps[0]["recycle/made_pairwise"] == 0
    assert steps[0]["recycle/made_reflection"] == 1
    assert "rewards/spark_judge/mean" in steps[2]
    # Every optimizer step is logged with the share of recycled groups it trained on.
    assert [m["feed/recycled_share"] for m in steps] == [0.0, 0.0, 1.0]


def test_default_caps_are_half_the_batch_so_phases_keep_up():
    groups = [(source(i), rollouts(RIGHT, WRONG, WRONG, WRONG)) for i in range(8)]
    rows, stats = build_tasks(groups, SparkConfig(), random.Random(0), step=0)
    assert (
        sum(r["task"] != "reflection" for r in rows) == 4
        and sum(r["task"] == "reflection" for r in rows) == 4
    )
    # Made per solve batch <= one batch of groups, which is what the next phase consumes.
    assert len(rows) <= len(groups)


def test_balanced_labels_keep_as_many_yes_as_no_pointwise_tasks():
    # 6 all-wrong groups ("No"), 2 all-right groups ("Yes"), 2 mixed groups (pairwise at share 0).
    groups = (
        [(source(i), rollouts(WRONG, WRONG, WRONG, WRONG)) for i in range(6)]
        + [(source(i), rollouts(RIGHT, RIGHT, RIGHT, RIGHT)) for i in range(6, 8)]
        + [(source(i), rollouts(RIGHT, WRONG, WRONG, RIGHT)) for i in range(8, 10)]
    )
    cfg = dict(judge_cap=10, reflect_cap=0, pointwise_share=0.0)
    rows, stats = build_tasks(groups, SparkConfig(**cfg), random.Random(0), step=0)
    right = [r["judge_label"] in ("Yes", "A") for r in rows if r["task"] == "pointwise"]
    assert right.count(False) == 6 and right.count(True) == 2  # SPARK's way: as they come

    rows, stats = build_tasks(groups, SparkConfig(balance_labels=True, **cfg), random.Random(0), step=0)
    right = [r["judge_label"] in ("Yes", "A") for r in rows if r["task"] == "pointwise"]
    assert right.count(False) == right.count(True) == 2 and stats["unbalanced"] == 4
    assert sum(r["task"] == "pairwise" for r in rows) == 2  # pairwise tasks are left alone
    # One class missing: no pointwise task survives, and the step says so.
    only_no = groups[:6]
    rows, stats = build_tasks(only_no, SparkConfig(balance_labels=True, **cfg), random.Random(0), step=0)
    assert rows == [] and stats["unbalanced"] == 6


def test_balanced_labels_are_logged_by_the_recycler():
    logged = {}
    queue = GroupQueue()
    cfg = SparkConfig(balance_labels=True, judge_cap=4, reflect_cap=0)
    Recycler(cfg, queue, log=logged.__setitem__)(batch_of([[WRONG] * G, [WRONG] * G, [RIGHT] * G]))
    assert logged["recycle/unbalanced"] == 1.0 and len(queue) == 2


def test_balancing_comes_after_the_cap():
    groups = [(source(i), rollouts(WRONG, WRONG, WRONG, WRONG)) for i in range(6)] + [
        (source(i), rollouts(RIGHT, RIGHT, RIGHT, RIGHT)) for i in range(6, 9)
    ]
    for seed in range(10):
        cfg = SparkConfig(balance_labels=True, judge_cap=5, reflect_cap=0)
        rows, _ = build_tasks(groups, cfg, random.Random(seed), step=0)
        right = [r["judge_label"] in ("Yes", "A") for r in rows]
        assert right.count(True) == right.count(False) <= 3
