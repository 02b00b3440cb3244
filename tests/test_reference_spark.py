"""Reference equivalence: SPARK's task construction and verdict scoring (posttrain/methods/spark/recycle.py, rewards/spark.py).

pytest tests/test_reference_spark.py -q

The rules, read from SPARK's code (InternLM/Spark, ``Lmm_XC/openrlhf/trainer/ppo_utils/new_data_gen.py``
and ``Lmm_XC/XC/rm_fn/math_verify_2.py``), restated here in plain lines and checked on groups drawn by
hypothesis (all right, all wrong, mixed, rollouts with and without a box, several groups per batch).
Which rollout and template a draw picks is random in both; every property below holds for any draw:

    shown answer   the first \\boxed{...} of the rollout; an unclosed box: everything after it; no box: None
    all right      pointwise on rollout 0's shown answer, labelled right; none if rollout 0 shows nothing
    all wrong      pointwise on a wrong rollout that shows an answer, labelled wrong; none if none shows one
    mixed          pointwise on a rollout of the drawn class, or pairwise (right vs wrong, label = the right
                   one's position); the task is dropped if a drawn rollout shows nothing
    reflection     first half of the groups: the full text of a wrong rollout; second half: the shown answer
                   of a wrong rollout that shows one; target: the group's ground truth
    caps           at most ``cap`` of each kind (default: half the batch's groups)
    verdict        the first \\boxed{} (or \\box{}) of the judge's reply equals the label: 1, else 0
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.methods.spark.recycle import Recycler, SparkConfig
from posttrain.queue import GroupQueue
from posttrain.rewards import load_reward
from posttrain.trainer import ScoredBatch

GOLD = "4"
# A rollout: (text, right?). Right ones show 4, wrong ones 5 or 6; some show nothing or an unclosed box.
ROLLOUTS = [
    ("so \\boxed{4}", True),
    ("first \\boxed{4} then \\boxed{9}", True),  # the first box is the answer: right
    ("so \\boxed{5}", False),
    ("so \\boxed{6} hmm", False),
    ("it is 5", False),  # no box: wrong, and nothing to show a judge
    ("so \\boxed{5", False),  # unclosed: wrong for the verifier, yet "5" is shown (the data-gen rule)
    ("first \\boxed{9} then \\boxed{4}", False),  # the first box counts: wrong
]


def ref_shown(text: str) -> str | None:
    start = text.find("\\boxed{")
    if start == -1:
        return None
    out, depth = "", 1
    for ch in text[start + 7 :]:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            break
        out += ch
    return out.strip() or None


groups_st = st.lists(st.lists(st.sampled_from(ROLLOUTS), min_size=2, max_size=6), min_size=1, max_size=6)


def _batch(groups: list[list[tuple[str, bool]]], g: int) -> ScoredBatch:
    rows = [{"question": f"q{i}: what is 2 + 2?", "answer": GOLD, "id": f"q{i}"} for i in range(len(groups))]
    texts = [t for group in groups for t, _ in group]
    return ScoredBatch(
        rows=[r for r in rows for _ in range(g)],
        prompts=[None] * len(texts),
        completions=texts,
        completion_ids=[[0]] * len(texts),
        rewards_per_func=None,
        reward_names=[],
        group_size=g,
        process_slice=slice(0, len(texts)),
        extra={"generation_index": 0},
    )


@settings(max_examples=150, deadline=None, database=None)
@given(groups=groups_st, seed=st.integers(0, 10_000))
def test_tasks_follow_sparks_construction_rules(groups, seed):
    """Every recycled task satisfies the reference's rule for its group's kind (module docstring)."""
    g = min(len(x) for x in groups)
    groups = [group[:g] for group in groups]
    queue = GroupQueue()
    cfg = SparkConfig(seed=seed, judge_cap=len(groups), reflect_cap=len(groups))  # no cap: every group's task
    Recycler(cfg, queue, extract="first_boxed")(_batch(groups, g))
    queue_rows = queue.pop(len(queue))
    half = (len(groups) + 1) // 2
    by_group: dict[int, list[dict]] = {}
    for row in queue_rows:
        by_group.setdefault(int(row["id"].split("/")[0][1:]), []).append(row)
    for i, group in enumerate(groups):
        made = by_group.get(i, [])
        judges = [r for r in made if r["task"] != "reflection"]
        reflections = [r for r in made if r["task"] == "reflection"]
        right = [t for t, ok in group if ok]
        wrong = [t for t, ok in group if not ok]
        assert len(judges) <= 1 and len(reflections) <= 1
        # Judge tasks.
        if not wrong:  # all right: rollout 0
            assert bool(judges) == (ref_shown(group[0][0]) is not None)
        elif not right:  # all wrong: a wrong rollout that shows an answer
            assert bool(judges) == any(ref_shown(t) is not None for t in wrong)
        for row in judges:
            text = row["prompt"][-1]["content"]
            assert row["answer"] is None and row["question"] == text
            if row["task"] == "pointwise":
                correct = row["judge_label"] in ("Yes", "A")
                pool = right if correct else wrong
                shown = {ref_shown(t) for t in pool} - {None}
                assert any(f"\n{a}\n" in text for a in shown), (text, shown)
                if not wrong:
                    assert correct and f"\n{ref_shown(group[0][0])}\n" in text
                if not right:
                    assert not correct
            else:
                assert right and wrong and row["judge_label"] in ("A", "B")
                good = {ref_shown(t) for t in right} - {None}
                bad = {ref_shown(t) for t in wrong} - {None}
                label, other = row["judge_label"], "B" if row["judge_label"] == "A" else "A"
                assert any(f"({label}) {a}\n" in text for a in good)
                assert any(f"({other}) {a}\n" in text for a in bad)
        # Reflection tasks: on a wrong rollout; full text in the first half, the shown answer in the second.
        if i < half:
            assert bool(reflections) == bool(wrong)
            for row in reflections:
                assert any(t in row["prompt"][-1]["content"] for t in wrong)
        else:
            assert bool(reflections) == any(ref_shown(t) is not None for t in wrong)
        for row in reflections:
            assert row["answer"] == GOLD and row["judge_label"] is None


@settings(max_examples=60, deadline=None, database=None)
@given(groups=groups_st, seed=st.integers(0, 1000), cap=st.integers(0, 3))
def test_caps_bound_each_kind(groups, seed, cap):
    """At most ``cap`` judge and ``cap`` reflection tasks per batch (the reference keeps a random 32 of each)."""
    g = min(len(x) for x in groups)
    rows = []

    class Queue:
        def put(self, new):
            rows.extend(new)

    Recycler(SparkConfig(seed=seed, judge_cap=cap, reflect_cap=cap), Queue())(
        _batch([x[:g] for x in groups], g)
    )
    assert sum(r["task"] != "reflection" for r in rows) <= cap
    assert sum(r["task"] == "reflection" for r in rows) <= cap


VERDICTS = ["Yes", "No", "A", "B"]
WRITTEN = {  # ways a judge writes a verdict, all read as the verdict itself
    "Yes": ["Yes", "yes", "\\text{Yes}", "(Yes)", "Yes."],
    "No": ["No", "no", "\\mathrm{No}", "'No'"],
    "A": ["A", "(A)", "\\text{(A)}", "a"],
    "B": ["B", "(B)", "b."],
}


@settings(max_examples=200, deadline=None, database=None)
@given(
    label=st.sampled_from(VERDICTS),
    said=st.sampled_from(VERDICTS),
    writing=st.integers(0, 4),
    box=st.sampled_from(["\\boxed{", "\\box{"]),
    later=st.sampled_from(VERDICTS + [None]),
    prefix=st.sampled_from(["", "Let me check. ", "The sum is right, "]),
)
def test_verdict_scoring_is_the_first_box_against_the_label(label, said, writing, box, later, prefix):
    """spark_judge scores 1 exactly when the first box's verdict equals the label, whatever a later box says
    (SPARK's verifier: math-verify's first match), for \\box{} as for \\boxed{}."""
    forms = WRITTEN[said]
    text = f"{prefix}{box}{forms[writing % len(forms)]}}}"
    if later is not None:
        text += f" or maybe \\boxed{{{later}}}"
    task = "pairwise" if label in ("A", "B") else "pointwise"
    score = load_reward("spark_judge")(completions=[text], task=[task], judge_label=[label])
    assert score == [1.0 if said == label else 0.0]


def test_the_rollout_draws_depend_on_the_seed():
    """Draws are random, as in the reference: different seeds pick different rollouts or templates."""
    groups = [[ROLLOUTS[0], ROLLOUTS[2], ROLLOUTS[3], ROLLOUTS[1]]] * 4
    made = set()
    for seed in (0, 1, 2, 3, 4, 0):
        queue = GroupQueue()
        Recycler(SparkConfig(seed=seed), queue)(_batch(groups, 4))
        made.add(tuple(r["prompt"][-1]["content"] for r in queue.pop(len(queue))))
    assert 1 < len(made) <= 5  # seed 0 twice: the same draws
