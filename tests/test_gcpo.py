"""Tests for GCPO's group-contrastive reward (rewards/gcpo.py) and the correct-only length reward.

    pytest tests/test_gcpo.py -q

Groups are hand-built: every completion is written "<AUX?> <answer>" in the tables (:func:`rollouts`
wraps the answer in ``<answer>`` tags, as GeometryZero's accuracy reads it, the reward's default), the
reference answer is 4, and the detector is the regex ``AUX``, so which completions show the behaviour
and which are right is visible in the table itself. Property tests against the method's formulas are
in tests/test_reference_gcpo.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from posttrain.errors import RewardError
from posttrain.rewards import RewardPlugin, is_group_reward, load_reward
from rewards.gcpo import contrast_mask, has_auxiliary, make_detector
from rewards.length import length


def gcpo(**kwargs):
    return load_reward("gcpo_contrastive", **{"detector": "AUX", **kwargs})


def call(reward, completions, group_size=4, answer="4", **kwargs):
    logged: dict[str, list[float]] = {}
    scores = reward(
        completions=completions,
        group_size=group_size,
        answer=[answer] * len(completions),
        log_metric=lambda name, value: logged.setdefault(name, []).append(value),
        **kwargs,
    )
    return scores, {k: v[0] for k, v in logged.items()}


def rollouts(*specs: str) -> list[str]:
    """``"AUX 4"`` -> ``"AUX <answer>4</answer>"``: the last word is the answer, in tags."""
    out = []
    for spec in specs:
        head, _, ans = spec.rpartition(" ")
        out.append(f"{head} <answer>{ans}</answer>".lstrip())
    return out


HELPS = rollouts("AUX 4", "AUX 4", "5", "4")  # with: 2/2 right, without: 1/2 -> delta +0.5
HURTS = rollouts("AUX 5", "AUX 4", "4", "4")  # with: 1/2, without: 2/2 -> delta -0.5
TIE = rollouts("AUX 4", "AUX 5", "4", "5")  # 1/2 vs 1/2 -> delta 0
ALL_AUX = rollouts("AUX 4", "AUX 4", "AUX 5", "AUX 5")  # no subgroup without the behaviour
NO_AUX = rollouts("4", "4", "5", "5")  # no subgroup with it
# 7 completions, with: 2/3 right, without: 2/4 -> delta 1/6
SMALL = rollouts("AUX 4", "AUX 4", "AUX 5", "4", "4", "5", "5")


@pytest.mark.parametrize(
    ("name", "completions", "group_size", "epsilon", "expected"),
    [
        ("helps: +1 on the completions with the behaviour", HELPS, 4, 0.05, [1, 1, 0, 0]),
        ("hurts: -1 on the completions with the behaviour", HURTS, 4, 0.05, [-1, -1, 0, 0]),
        ("tie: delta 0", TIE, 4, 0.05, [0, 0, 0, 0]),
        ("delta 1/6 within epsilon 0.2", SMALL, 7, 0.2, [0] * 7),
        ("delta 1/6 beyond epsilon 0.1", SMALL, 7, 0.1, [1, 1, 1, 0, 0, 0, 0]),
        ("delta exactly epsilon: 0 (strict >)", HELPS, 4, 0.5, [0, 0, 0, 0]),
        ("epsilon 0: any difference counts", HELPS, 4, 0.0, [1, 1, 0, 0]),
        ("every completion shows it: subgroup empty", ALL_AUX, 4, 0.05, [0, 0, 0, 0]),
        ("no completion shows it: subgroup empty", NO_AUX, 4, 0.05, [0, 0, 0, 0]),
        (
            "several groups in one batch, each with its own sign",
            HELPS + HURTS + ALL_AUX + TIE,
            4,
            0.05,
            [1, 1, 0, 0, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ),
    ],
)
def test_gcpo_contrastive_table(name, completions, group_size, epsilon, expected):
    scores, _ = call(gcpo(epsilon=epsilon), completions, group_size=group_size)
    assert scores == [float(x) for x in expected], name


def test_gcpo_logs_mask_shares_and_subgroup_accuracy():
    _, logged = call(gcpo(), HELPS + HURTS + ALL_AUX + TIE)
    assert logged["gcpo/mask_pos"] == 0.25
    assert logged["gcpo/mask_neg"] == 0.25
    assert logged["gcpo/mask_zero"] == 0.5
    assert logged["gcpo/empty_subgroup"] == 0.25
    assert logged["gcpo/unscorable_groups"] == 0.0
    assert logged["gcpo/aux_rate"] == 10 / 16
    # with the behaviour: HELPS 2/2, HURTS 1/2, ALL_AUX 2/4, TIE 1/2 -> 6/10; without: 1/2, 2/2, 1/2 -> 4/6
    assert logged["gcpo/acc_aux"] == pytest.approx(0.6)
    assert logged["gcpo/acc_no_aux"] == pytest.approx(4 / 6)


def test_gcpo_split_by_logs_the_mask_per_kind_of_question():
    kinds = ["help"] * 4 + ["hurt"] * 4 + ["help"] * 4
    _, logged = call(gcpo(split_by="family"), HELPS + HURTS + TIE, family=kinds)
    assert logged["gcpo/help/mask_pos"] == 0.5 and logged["gcpo/help/mask_neg"] == 0.0
    assert logged["gcpo/hurt/mask_pos"] == 0.0 and logged["gcpo/hurt/mask_neg"] == 1.0
    assert logged["gcpo/hurt/aux_rate"] == 0.5
    with pytest.raises(RewardError, match="split_by names the column 'family'"):
        call(gcpo(split_by="family"), HELPS)


def test_gcpo_no_subgroup_mean_is_logged_when_it_would_be_nan():
    _, logged = call(gcpo(), NO_AUX)
    assert "gcpo/acc_aux" not in logged and logged["gcpo/aux_rate"] == 0.0


def test_gcpo_unscorable_group_scores_none_and_is_counted():
    reward = gcpo()
    logged: dict[str, float] = {}
    scores = reward(
        completions=HELPS + HELPS,
        group_size=4,
        answer=[None] * 4 + ["4"] * 4,  # the first group has no reference answer
        log_metric=lambda k, v: logged.__setitem__(k, v),
    )
    assert scores == [None] * 4 + [1.0, 1.0, 0.0, 0.0]
    assert logged["gcpo/unscorable_groups"] == 0.5


def test_gcpo_uses_the_accuracy_verifier_not_string_equality():
    # 0.5 and \frac{1}{2} are the same answer: the accuracy reward's math-verify check decides.
    completions = rollouts("AUX 0.5", "AUX \\frac{1}{2}", "3", "1")
    scores, _ = call(gcpo(), completions, answer="\\frac{1}{2}")
    assert scores == [1.0, 1.0, 0.0, 0.0]


# With the reference 4: 4.05 is within GeometryZero's 2% (relaxed), 4.1 is not; an untagged 4 is no
# answer under `tagged` but a right one under `lenient`; the first <answer> span is the one read.
RELAXED = ["AUX <answer>4.05</answer>", "AUX <answer>4.05</answer>", "<answer>4.1</answer>", "4"]
FIRST_SPAN = ["AUX <answer>4</answer><answer>5</answer>", "<answer>5</answer><answer>4</answer>"]


@pytest.mark.parametrize(
    ("kwargs", "completions", "expected"),
    [
        ({}, RELAXED, [1, 1, 0, 0]),  # the default: tagged, 2%; 4.05 right, 4.1 and untagged 4 wrong
        ({"rel_tol": 0.0}, RELAXED, [0, 0, 0, 0]),  # exact: nobody right, no contrast
        ({"extract": "lenient", "rel_tol": 0.0}, RELAXED, [-1, -1, 0, 0]),  # only the bare 4 is right
        ({}, FIRST_SPAN * 2, [1, 0, 1, 0]),  # the first span decides: 4 with AUX, 5 without
        ({"extract": "lenient"}, FIRST_SPAN * 2, [-1, 0, -1, 0]),  # lenient reads the last span
    ],
)
def test_gcpo_judges_correctness_like_geometryzero_accuracy(kwargs, completions, expected):
    scores, _ = call(gcpo(**kwargs), completions)
    assert scores == [float(x) for x in expected]
    # ... and exactly as the accuracy reward with the same kwargs does (one place decides correctness).
    reading = {"extract": "tagged", "rel_tol": 0.02, **kwargs}
    accuracy = load_reward("accuracy", **reading)(completions, answer=["4"] * len(completions))
    aux = [c.startswith("AUX") for c in completions]
    mask = contrast_mask(accuracy[:4], aux[:4], 0.05)
    assert scores[:4] == [float(mask * x) for x in aux[:4]]


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"extract": "last_line"}, "unknown answer extraction policy"),
        ({"rel_tol": 1.5}, "`rel_tol` must be a number in [0, 1)"),
        ({"rel_tol": "2%"}, "`rel_tol` must be a number in [0, 1)"),
    ],
)
def test_bad_extract_kwargs_are_a_clear_error_at_load_time(kwargs, phrase):
    with pytest.raises(RewardError) as info:
        load_reward("gcpo_contrastive", **kwargs)
    assert phrase in str(info.value) and "gcpo_contrastive" in str(info.value)


def test_gcpo_is_a_group_plugin_with_the_default_detector():
    reward = load_reward("gcpo_contrastive")
    assert is_group_reward(reward) and RewardPlugin(reward, "gcpo").is_group
    completions = ["<think>a</think><auxiliary>draw AD</auxiliary><answer>4</answer>", "<answer>5</answer>"]
    scores, _ = call(reward, completions * 2, answer="4")
    assert scores == [1.0, 0.0, 1.0, 0.0]


def test_gcpo_through_the_plugin_wrapper_needs_group_size():
    plugin = RewardPlugin(gcpo(), "gcpo_contrastive")
    assert plugin(None, HELPS, answer=["4"] * 4, group_size=4) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(RewardError, match="group_size"):
        plugin(None, HELPS, answer=["4"] * 4)


# -- detectors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "text", "expected"),
    [
        (None, "<auxiliary>let M be the midpoint of BC</auxiliary>", True),
        (None, "<auxiliary>  </auxiliary>", False),  # empty span: no construction
        (None, "<auxiliary>never closed", False),
        ("(?i)auxiliary line", "Draw an Auxiliary Line from A", True),
        (r"\d+\s*[-+]\s*\d+\s*=", "36 - 38 = -2", True),
        (r"\d+\s*[-+]\s*\d+\s*=", "The answer is 1.", False),
        ("rewards.gcpo:has_auxiliary", "<auxiliary>x</auxiliary>", True),
        ("rewards.gcpo.has_auxiliary", "<auxiliary>x</auxiliary>", True),  # importable package: a path
        ("a.b", "xa-b", True),  # `a` is no package: a regex (. matches any character)
    ],
)
def test_detectors(detector, text, expected):
    assert make_detector(detector)(text) is expected


def test_has_auxiliary_needs_a_non_empty_closed_span():
    assert has_auxiliary("<auxiliary></auxiliary><auxiliary>AD</auxiliary>")


@pytest.mark.parametrize(
    ("detector", "phrases"),
    [
        ("(unclosed", ["not a valid regular expression", "(unclosed"]),
        ("[a-", ["not a valid regular expression"]),
        ("no_such_pkg_xyz.mod:detect", ["cannot import module", "no_such_pkg_xyz.mod"]),
        ("rewards.gcpo:no_such_function", ["has no attribute", "detector"]),
        ("rewards.gcpo:AUX_TAG", ["not a function"]),
        ("", ["regular expression or 'pkg.module:function'"]),
        (42, ["regular expression or 'pkg.module:function'"]),
    ],
)
def test_bad_detector_is_a_clear_error_at_load_time(detector, phrases):
    with pytest.raises(RewardError) as info:
        load_reward("gcpo_contrastive", detector=detector)
    for phrase in phrases:
        assert phrase in str(info.value)


@pytest.mark.parametrize("epsilon", [-0.01, 1.0, 1.5, math.nan, "0.05", True, None])
def test_epsilon_outside_zero_one_is_an_error(epsilon):
    with pytest.raises(RewardError, match=r"epsilon"):
        load_reward("gcpo_contrastive", epsilon=epsilon)


def test_contrast_mask_ignores_unscorable_completions():
    # The unscorable completion with the behaviour is no evidence; the scorable one decides.
    assert contrast_mask([None, 1.0, 0.0], [True, True, False], 0.05) == 1
    assert contrast_mask([None, None, 0.0], [True, True, False], 0.05) == 0


# -- the length reward as GCPO uses it -------------------------------------------------------------


def test_length_with_the_paper_cap():
    ids = [[0] * 450, [0] * 900, [0] * 2000]
    assert length(["a", "b", "c"], completion_ids=ids, cap=900) == [0.5, 1.0, 1.0]


def test_length_correct_only_grants_it_to_correct_completions():
    ids = [[0] * 3, [0] * 3, [0] * 6]
    scores = length(
        ["\\boxed{4}", "\\boxed{5}", "\\boxed{4}"],
        completion_ids=ids,
        cap=6,
        correct_only=True,
        answer=["4"] * 3,
    )
    assert scores == [0.5, 0.0, 1.0]
    # A row without a reference answer cannot be judged: None, not 0.
    assert length(["4"], completion_ids=[[1]], cap=2, correct_only=True, answer=[None]) == [None]


def test_length_correct_only_judges_like_the_gcpo_accuracy_when_told():
    ids = [[0] * 3] * 3
    texts = ["<answer>4.05</answer>", "so 4", "<answer>4</answer><answer>5</answer>"]
    gated = {"completion_ids": ids, "cap": 6, "correct_only": True, "answer": ["4"] * 3}
    # GeometryZero's reading: 4.05 within 2%, the untagged 4 is no answer, the first span is read.
    assert length(texts, extract="tagged", rel_tol=0.02, **gated) == [0.5, 0.0, 0.5]
    # The default (lenient, exact): 4.05 is wrong, the bare 4 right, the last span (5) is read.
    assert length(texts, **gated) == [0.0, 0.5, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "phrase"), [({"extract": "nope"}, "extraction policy"), ({"rel_tol": -1}, "rel_tol")]
)
def test_length_bad_extract_kwargs_are_an_error(kwargs, phrase):
    with pytest.raises(RewardError, match=phrase):
        length(["4"], cap=2, **kwargs)


def test_length_correct_only_without_answers_is_an_error():
    with pytest.raises(RewardError, match="correct_only"):
        length(["4"], cap=2, correct_only=True)
    with pytest.raises(RewardError, match="correct_only"):
        load_reward("length", correct_only="yes")(["4"], answer=["4"])


# -- the shipped recipe, shrunk to two CPU steps ---------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# The CPU-shrinking flags of recipes/gcpo_geometry.yaml's header (the model swapped for the tiny one).
SHRINK = (
    "--rollout.engine hf --max_steps 2 --data.size 16 --per_device_train_batch_size 8 --num_generations 4 "
    "--steps_per_generation 1 --max_completion_length 16 --gradient_checkpointing false "
    "--eval.before false --eval.after false"
).split()


def test_gcpo_recipe_header_documents_the_shrink_flags():
    header = (REPO / "recipes" / "gcpo_geometry.yaml").read_text()
    for flag in SHRINK[::2]:
        assert flag in header, flag


def test_gcpo_recipe_trains_two_steps_on_cpu(tiny_model, tmp_path, monkeypatch):
    from posttrain import cli

    monkeypatch.chdir(REPO)  # the recipe names data/math500/geometry.jsonl relative to the repository
    monkeypatch.setattr("posttrain.console.setup_logging", lambda: None)
    out = tmp_path / "gcpo"
    argv = ["train", "recipes/gcpo_geometry.yaml", *SHRINK, "--model.name_or_path", tiny_model]
    assert cli.main([*argv, "--output_dir", str(out)]) == 0
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [entry for entry in logs if "loss" in entry]
    assert len(steps) == 2
    for entry in steps:
        for name in ("accuracy", "format", "gcpo_contrastive", "length"):
            assert f"rewards/{name}/mean" in entry, name
        shares = entry["gcpo/mask_pos"] + entry["gcpo/mask_neg"] + entry["gcpo/mask_zero"]
        assert shares == pytest.approx(1.0)
    resolved = (out / "recipe.yaml").read_text()
    assert "gcpo_contrastive" in resolved and "advanced_geometry" in resolved


@pytest.mark.parametrize(
    ("cap", "mask", "refused"), [(24, True, True), (12, True, False), (24, False, False)]
)
def test_length_cap_at_the_budget_with_masked_truncation_is_refused(tmp_path, cap, mask, refused):
    """A length reward saturated only by cut-off completions while those are masked from the loss: the
    run is refused with one message naming the cap and both fixes (it collapsed to 100% truncation)."""
    from posttrain.config import load_recipe
    from posttrain.errors import ConfigError

    path = tmp_path / "r.yaml"
    path.write_text(
        "data: {generator: chain_sum}\n"
        f"rewards: [{{name: length, kwargs: {{cap: {cap}}}}}]\n"
        f"trainer: {{max_completion_length: 24, mask_truncated_completions: {str(mask).lower()}}}\n"
    )
    recipe = load_recipe(path)
    if refused:
        with pytest.raises(
            ConfigError, match="cap .24 tokens.*Lower the cap.*mask_truncated_completions: false"
        ):
            recipe.grpo_config()
    else:
        recipe.grpo_config()
