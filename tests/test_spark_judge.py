"""Tests for SPARK's prompt bank (posttrain/methods/spark/templates.py) and its reward (rewards/spark.py).

    pytest tests/test_spark_judge.py -q

The reward is loaded by its built-in name, as a recipe would; each table row is one completion with
its ``task`` and label columns.
"""

from __future__ import annotations

import doctest
import random
import re
import string

import pytest

import posttrain.methods.spark.templates
import rewards.spark
from posttrain.errors import RewardError
from posttrain.methods.spark import templates
from posttrain.methods.spark.templates import (
    JUDGE_TEMPLATE,
    PAIRWISE,
    POINTWISE_AB,
    POINTWISE_YESNO,
    REFLECT_ANS_NEUTRAL,
    REFLECT_ANS_WRONG,
    REFLECT_COT_NEUTRAL,
    REFLECT_COT_WRONG,
    REFLECT_TEMPLATE,
    SOLVE_SUFFIX,
    pairwise,
    pointwise,
    reflection,
)
from posttrain.rewards import RewardPlugin, load_reward
from posttrain.verify.verdict import judge_verdict


@pytest.fixture(scope="module")
def spark_judge():
    return load_reward("spark_judge")


@pytest.mark.parametrize("module", [rewards.spark, posttrain.methods.spark.templates])
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------------------------------
# The reward
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, task, label, expected",
    [
        ("It is right. \\boxed{Yes}", "pointwise", "Yes", 1.0),  # yes/no, right
        ("It is right. \\boxed{Yes}", "pointwise", "No", 0.0),  # yes/no, wrong
        ("Wrong sign. \\boxed{No}", "pointwise", "No", 1.0),  # a correct "No"
        ("Grade: \\boxed{A}", "pointwise", "A", 1.0),  # A/B family, right
        ("Grade: \\boxed{A}", "pointwise", "B", 0.0),  # A/B family, wrong
        ("\\boxed{\\text{yes}}", "pointwise", "Yes", 1.0),  # \text wrapper, lower case
        ("\\boxed{\\mathrm{No}.}", "pointwise", "No", 1.0),  # \mathrm wrapper, full stop
        ("\\boxed{'yes'}", "pointwise", "Yes", 1.0),  # quotes
        ("(A) is off by one, so \\boxed{(B)}", "pairwise", "B", 1.0),  # parenthesised letter
        ("\\boxed{B}", "pairwise", "A", 0.0),  # pairwise, wrong position
        ("\\boxed{\\text{(A)}}", "pairwise", "A", 1.0),  # wrapper around parentheses
        ("first \\boxed{A}, on reflection \\boxed{B}", "pairwise", "A", 1.0),  # the first box counts (SPARK)
        ("The answer is correct.", "pointwise", "Yes", 0.0),  # no box: unparseable
        ("\\boxed{Correct}", "pointwise", "A", 0.0),  # not a verdict word
        ("\\boxed{Yes", "pointwise", "Yes", 0.0),  # truncated box
        ("\\boxed{}", "pointwise", "No", 0.0),  # empty box
        ("\\boxed{A or B}", "pairwise", "A", 0.0),  # hedged
        ("Judgement: \\box{No}", "pointwise", "No", 1.0),  # \box{} as the reference prompts ask
        (
            "x = \\boxed{4}, so \\box{Yes}",
            "pointwise",
            "Yes",
            0.0,
        ),  # the first box is the math one, not a verdict
        ("\\box{Yes}, as x = \\boxed{4}", "pointwise", "Yes", 1.0),  # \box{} read like \boxed{}, first counts
        ("\\boxed{yes}", "pointwise", "yes", 1.0),  # a label written in lower case still matches
    ],
)
def test_judge_rows(spark_judge, completion, task, label, expected):
    assert spark_judge(completions=[completion], task=[task], judge_label=[label]) == [expected]


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("Redo: 1/2 of 1 is \\boxed{0.5}", "\\frac{1}{2}", 1.0),  # math equivalence
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),  # and the other way round
        ("Still \\boxed{3}", "4", 0.0),  # wrong again
        ("I give up.", "4", 0.0),  # no answer
        ("\\boxed{1234}", "Work: 1000 + 234\n#### 1,234", 1.0),  # GSM8K-style ground truth
        ("\\boxed{Yes}", "4", 0.0),  # a verdict is not an answer
    ],
)
def test_reflection_rows_scored_against_ground_truth(spark_judge, completion, answer, expected):
    assert spark_judge(completions=[completion], task=["reflection"], answer=[answer]) == [expected]


def test_reflection_row_uses_the_verifier_column(spark_judge):
    # The task's own verifier scores the reflection, as it scored the original question.
    verifier = {"kind": "reasoning_gym", "generator": "basic_arithmetic", "entry": {"answer": "7"}}
    scores = spark_judge(
        completions=["\\boxed{7}", "\\boxed{8}"],
        task=["reflection"] * 2,
        answer=[None, None],
        verifier=[verifier, verifier],
    )
    assert scores == [1.0, 0.0]


@pytest.mark.parametrize("task", ["solve", None, "", "judge_point", "Pointwise"])
def test_rows_of_other_tasks_are_not_applicable(spark_judge, task):
    # Only the exact task names are SPARK rows; the main rows are left to `accuracy`.
    assert spark_judge(completions=["\\boxed{Yes}"], task=[task], judge_label=["Yes"], answer=["4"]) == [None]


def test_no_task_column_means_no_spark_rows(spark_judge):
    assert spark_judge(completions=["\\boxed{4}", "\\boxed{Yes}"], answer=["4", "4"]) == [None, None]


def test_reflection_row_without_ground_truth_is_not_applicable(spark_judge):
    assert spark_judge(completions=["\\boxed{4}"], task=["reflection"], answer=[None]) == [None]


def test_mixed_batch(spark_judge):
    rows = [
        ("\\boxed{4}", "solve", None, "4", None),  # main row: accuracy's job
        ("\\boxed{Yes}", "pointwise", "Yes", None, 1.0),
        ("\\boxed{B}", "pointwise", "A", None, 0.0),
        ("\\boxed{A}", "pairwise", "A", None, 1.0),
        ("no verdict", "pairwise", "B", None, 0.0),
        ("\\boxed{0.5}", "reflection", None, "\\frac{1}{2}", 1.0),
        ("\\boxed{5}", "reflection", None, "4", 0.0),
        ("\\boxed{4}", None, None, "4", None),
    ]
    completions, tasks, labels, answers, expected = (list(col) for col in zip(*rows, strict=True))
    assert spark_judge(completions=completions, task=tasks, judge_label=labels, answer=answers) == expected


def test_conversational_completions(spark_judge):
    completion = [{"role": "assistant", "content": "Checked: \\boxed{No}"}]
    assert spark_judge(completions=[completion], task=["pointwise"], judge_label=["No"]) == [1.0]


@pytest.mark.parametrize("label", [None, "Maybe", ""])
def test_judge_row_without_a_valid_label_is_an_error(spark_judge, label):
    # A judge row without its label is a bug in the code that built it, not a bad completion.
    with pytest.raises(RewardError, match="judge_label"):
        spark_judge(completions=["\\boxed{Yes}"], task=["pointwise"], judge_label=[label])


def test_missing_judge_label_column_is_an_error(spark_judge):
    with pytest.raises(RewardError, match="judge_label"):
        spark_judge(completions=["\\boxed{Yes}"], task=["pairwise"])


def test_through_the_plugin_wrapper():
    # As the trainer calls it: TRL's keyword signature, extra columns and prompts passed through.
    plugin = RewardPlugin(load_reward("spark_judge"), name="spark_judge")
    scores = plugin(
        prompts=["p"] * 3,
        completions=["\\boxed{Yes}", "\\boxed{4}", "\\boxed{4}"],
        task=["pointwise", "reflection", "solve"],
        judge_label=["Yes", None, None],
        answer=[None, "4", "4"],
        trainer_state=None,
    )
    assert scores == [1.0, 1.0, None]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\\boxed{ Yes }", "Yes"),  # spaces
        ("\\boxed{NO}", "No"),  # upper case
        ("\\boxed{\\textbf{b}}", "B"),  # bold wrapper, lower case
        ("\\boxed{$A$}", "A"),  # dollar signs
        ("\\boxed{\\text{Yes}.}", "Yes"),  # wrapper then full stop
        ("\\boxed{Yes, it is}", None),  # more than a verdict
        ("\\boxed{C}", None),  # not a SPARK option
        ("", None),  # empty completion
    ],
)
def test_judge_verdict(text, expected):
    assert judge_verdict(text) == expected


# --------------------------------------------------------------------------------------------------
# The templates
# --------------------------------------------------------------------------------------------------

FAMILIES = {
    "POINTWISE_YESNO": (POINTWISE_YESNO, 12, {"question", "answer"}),
    "POINTWISE_AB": (POINTWISE_AB, 12, {"question", "answer"}),
    "PAIRWISE": (PAIRWISE, 20, {"question", "answer_a", "answer_b"}),
    "REFLECT_COT_NEUTRAL": (REFLECT_COT_NEUTRAL, 20, {"question", "cot"}),
    "REFLECT_COT_WRONG": (REFLECT_COT_WRONG, 10, {"question", "cot"}),
    "REFLECT_ANS_NEUTRAL": (REFLECT_ANS_NEUTRAL, 20, {"question", "answer"}),
    "REFLECT_ANS_WRONG": (REFLECT_ANS_WRONG, 10, {"question", "answer"}),
}
JUDGE_FAMILIES = ("POINTWISE_YESNO", "POINTWISE_AB", "PAIRWISE")
ALL_TEMPLATES = [t for bank, _, _ in FAMILIES.values() for t in bank]


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_template_counts_and_fields(family):
    bank, count, expected_fields = FAMILIES[family]
    assert len(bank) == count
    for template in bank:
        assert fields(template) == expected_fields
        text = template.format(**{f: f"<<{f}>>" for f in expected_fields})
        assert "\\boxed{" in text
        for f in expected_fields:
            assert text.count(f"<<{f}>>") == 1


def test_templates_are_distinct():
    assert len(set(ALL_TEMPLATES)) == len(ALL_TEMPLATES) == 104
    instructions = [t.split("\n\n")[0] for t in ALL_TEMPLATES]
    assert len(set(instructions)) == len(instructions)  # not only the layout differs


@pytest.mark.parametrize("family", JUDGE_FAMILIES)
def test_judge_templates_layout(family):
    bank, _, expected_fields = FAMILIES[family]
    for template in bank:
        text = template.format(**{f: f"<<{f}>>" for f in expected_fields})
        assert "\\box{" not in text  # we ask for what the reward parses first
        assert text.endswith("\n\n<Judgement>:")
        assert "\n\n<Question>:\n<<question>>\n\n" in text
        if family == "PAIRWISE":
            assert "\n\n(A) <<answer_a>>\n(B) <<answer_b>>\n\n<Judgement>:" in text
        else:
            assert "\n\n<Answer>:\n<<answer>>\n\n<Judgement>:" in text


@pytest.mark.parametrize("family", ["POINTWISE_AB", "PAIRWISE"])
def test_ab_templates_name_both_letters(family):
    for template in FAMILIES[family][0]:
        instruction = template.split("\n\n<Question>")[0]
        assert re.search(r"\bA\b", instruction) and re.search(r"\bB\b", instruction)


def test_yesno_templates_name_both_words():
    for template in POINTWISE_YESNO:
        assert re.search(r"\bYes\b", template) and re.search(r"\bNo\b", template)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.startswith("REFLECT")])
def test_reflection_templates_layout(family):
    bank, _, expected_fields = FAMILIES[family]
    shown = "cot" if "cot" in expected_fields else "answer"
    for template in bank:
        text = template.format(**{f: f"<<{f}>>" for f in expected_fields})
        assert text.endswith(f":\n<<{shown}>>\n\n{SOLVE_SUFFIX}")
        assert "\n\nQuestion:\n<<question>>\n\n" in text
        assert text.count("\\boxed{}") == 1  # from the suffix only


def test_inference_templates():
    assert JUDGE_TEMPLATE == POINTWISE_YESNO[0]
    assert REFLECT_TEMPLATE == REFLECT_ANS_WRONG[0]
    assert "incorrect" in REFLECT_TEMPLATE.split("\n\n")[0]


def test_values_with_braces_are_not_reformatted():
    # Questions and answers are values, never parsed as templates: LaTeX braces pass through.
    text, _ = pointwise("Simplify \\frac{2}{4}.", "\\frac{1}{2}", True, random.Random(0))
    assert "Simplify \\frac{2}{4}.\n\n" in text and "\n\\frac{1}{2}\n\n" in text


# --------------------------------------------------------------------------------------------------
# The builders
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda rng: pointwise("Q?", "4", True, rng),
        lambda rng: pairwise("Q?", "4", "5", rng),
        lambda rng: reflection("Q?", "wrong work", "cot", rng),
        lambda rng: reflection("Q?", "5", "answer", rng),
    ],
)
def test_builders_are_deterministic(build):
    first = [build(random.Random(seed)) for seed in range(20)]
    again = [build(random.Random(seed)) for seed in range(20)]
    assert first == again
    assert len({repr(x) for x in first}) > 1  # and the seed does matter


@pytest.mark.parametrize("correct", [True, False])
def test_pointwise_labels_follow_the_template_family(correct):
    families = set()
    for seed in range(200):
        text, label = pointwise("Q?", "4", correct, random.Random(seed))
        template = next(
            t for t in POINTWISE_YESNO + POINTWISE_AB if t.format(question="Q?", answer="4") == text
        )
        if template in POINTWISE_YESNO:
            families.add("yesno")
            assert label == ("Yes" if correct else "No")
        else:
            families.add("ab")
            assert label == ("A" if correct else "B")
    assert families == {"yesno", "ab"}


def test_pointwise_draws_from_all_24_templates():
    drawn = {pointwise("Q?", "4", True, random.Random(seed))[0] for seed in range(1000)}
    assert len(drawn) == 24


def test_pairwise_order_is_randomised_and_labelled():
    labels = []
    for seed in range(100):
        text, label = pairwise("Q?", "RIGHT", "WRONG", random.Random(seed))
        wrong = "B" if label == "A" else "A"
        assert f"({label}) RIGHT" in text and f"({wrong}) WRONG" in text
        labels.append(label)
    assert 25 <= labels.count("A") <= 75  # both positions, roughly balanced


def test_reflection_modes():
    for seed in range(50):
        cot = reflection("Q?", "MY WORK", "cot", random.Random(seed))
        assert cot in {
            t.format(question="Q?", cot="MY WORK") for t in REFLECT_COT_NEUTRAL + REFLECT_COT_WRONG
        }
        ans = reflection("Q?", "5", "answer", random.Random(seed))
        assert ans in {t.format(question="Q?", answer="5") for t in REFLECT_ANS_NEUTRAL + REFLECT_ANS_WRONG}
    drawn = {reflection("Q?", "5", "answer", random.Random(seed)) for seed in range(1000)}
    assert len(drawn) == 30  # uniform over neutral and "this is wrong" templates alike
    with pytest.raises(ValueError, match="mode"):
        reflection("Q?", "5", "answers", random.Random(0))


def test_module_exports():
    # The names the recycler and the test-time loop rely on.
    for name in ["SOLVE_SUFFIX", "JUDGE_TEMPLATE", "REFLECT_TEMPLATE", "pointwise", "pairwise", "reflection"]:
        assert hasattr(templates, name)
