"""Tests for the built-in reward plugins in rewards/: accuracy, format, length.

pytest tests/test_reward_builtins.py -q
"""

from __future__ import annotations

import doctest
import json

import pytest
import reasoning_gym

import posttrain.advantages
import posttrain.verify.math
import posttrain.verify.vote
import rewards.format
import rewards.gcpo
import rewards.length
import rewards.math
import rewards.ttrl
from posttrain.errors import RewardError
from posttrain.rewards import RewardPlugin, load_reward
from rewards.format import format_reward
from rewards.length import length
from rewards.math import accuracy, answers_match, extract_answer, normalize_gsm8k, score


@pytest.mark.parametrize(
    "module",
    [
        rewards.math,
        rewards.format,
        rewards.length,
        rewards.gcpo,
        rewards.ttrl,
        posttrain.advantages,
        posttrain.verify.math,
        posttrain.verify.vote,
    ],
)
def test_docstring_examples(module):
    # The docstring examples (inputs and expected scores) are part of the documentation: keep them true.
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------------------------------
# rewards.math
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{42}", "42"),  # boxed
        ("\\boxed{1} or rather \\boxed{2}", "2"),  # the last boxed wins
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("\\boxed{7} and then \\boxed{\\frac{1}{", "7"),  # truncated last boxed: the previous one
        ("\\boxed{} so 5", "5"),  # empty boxed is ignored
        ("\\box{3}", "3"),  # only \boxed counts; \box falls through to the last number
        ("<think>maybe 3</think><answer> 4 </answer>", "4"),  # answer tag, stripped
        ("<answer>1</answer> <answer>2</answer>", "2"),  # the last answer tag
        ("<answer>9</answer> but \\boxed{10}", "10"),  # boxed beats the answer tag
        ("Thus, the answer is 17.", "17"),  # "answer is", trailing period dropped
        ("**Answer:** 3/4\nsome more text 99", "3/4"),  # "Answer:" to end of line, markdown stripped
        ("3 + 4 = 7", "7"),  # last number
        ("The temperature fell to -12 degrees", "-12"),  # negative number
        ("5-3 = 2, minus 10-8", "8"),  # a binary minus is not a sign
        ("total: 1,234,567 dollars", "1234567"),  # thousands separators
        ("pi is about 3.14.", "3.14"),  # decimal followed by a period
        ("I do not know", None),  # nothing
        ("", None),  # empty completion
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


# Each policy on the same completions (issue 13: answer extraction is a named policy per reward).
# Columns: lenient, boxed (TTRL), first_boxed (SPARK), tagged (GeometryZero), qwen_math (TTRV).
POLICIES = ("lenient", "boxed", "first_boxed", "tagged", "qwen_math")


@pytest.mark.parametrize(
    "text, expected",
    [
        # one box: every box-reading policy takes it; `tagged` reads tags only
        ("so \\boxed{42}", ("42", "42", "42", None, "42")),
        # two boxes: the last for lenient/boxed/qwen_math, the first for SPARK
        ("\\boxed{1} or rather \\boxed{2}", ("2", "2", "1", None, "2")),
        # the last box cut off by the length limit: lenient and qwen_math fall back to the box before,
        # TTRL's box-only reading has no answer, SPARK's first box is the closed one
        ("\\boxed{7} and then \\boxed{\\frac{1}{", ("7", None, "7", None, "7")),
        # the first box unclosed: SPARK's verifier has no answer; lenient readers fall to the last number
        ("\\boxed{7 and more", ("7", None, None, None, "7")),
        # a tag and a box: the box wins for box readers, the tag for GeometryZero
        ("<think>\\boxed{2}</think><answer>3</answer>", ("2", "2", "2", "3", "2")),
        # two tags: lenient takes the last, GeometryZero the first
        ("<answer>1</answer> <answer>2</answer>", ("2", None, None, "1", "2")),
        # an unclosed answer tag: GeometryZero reads what follows it
        ("<think>ok</think><answer> 5", ("5", None, None, "5", "5")),
        # "the answer is": lenient and qwen_math read the phrase
        ("Thus, the answer is 17.", ("17", None, None, None, "17")),
        # "Answer:" is lenient's phrase only; qwen_math falls back to the last number
        ("Answer: 3/4 then 9", ("3/4 then 9", None, None, None, "9")),
        # a bare number: only the lenient readers (TTRL does not vote on it)
        ("3 + 4 = 7", ("7", None, None, None, "7")),
        # an empty box is no answer for the box-only readers
        ("\\boxed{} so 5", ("5", None, None, None, "5")),
        # nothing anywhere
        ("I do not know", (None, None, None, None, None)),
    ],
)
def test_extraction_policies_on_a_table(text, expected):
    got = tuple(extract_answer(text, policy) for policy in POLICIES)
    assert got == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),  # GSM8K solution
        ("#### 1,234", "1234"),  # commas removed
        ("  72 ", "72"),  # no ####: stripped input
    ],
)
def test_normalize_gsm8k(answer, expected):
    assert normalize_gsm8k(answer) == expected


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("72", "72.0", True),  # int vs float
        ("0.5", "\\frac{1}{2}", True),  # decimal vs LaTeX fraction
        ("\\frac{14}{3}", "\\frac{14}{3}", True),  # same fraction
        ("\\dfrac{14}{3}", "14/3", True),  # \dfrac vs a slash
        ("4.67", "\\frac{14}{3}", False),  # close is not equal
        ("1234", "1,234", True),  # thousands separator in gold
        ("$72$.", "72", True),  # dollars and a trailing period
        ("72 apples", "72", True),  # prose around the number
        ("Yes", "yes", True),  # unparseable text: normalized comparison
        ("no", "yes", False),  # different text
        ("71", "72", False),  # wrong number
        ("", "72", False),  # empty prediction
        ("72", "", False),  # empty gold
    ],
)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def _reasoning_gym_rows():
    data = reasoning_gym.create_dataset("basic_arithmetic", size=2, seed=0)
    entries = [data[i] for i in range(2)]
    verifiers = [
        json.dumps({"kind": "reasoning_gym", "generator": "basic_arithmetic", "entry": e}) for e in entries
    ]
    return entries, verifiers


@pytest.mark.parametrize(
    "completion, answer, expected",
    [
        ("The sum is \\boxed{72}", "72", 1.0),  # boxed number
        ("The sum is 72.0", "#### 72", 1.0),  # last number vs GSM8K gold
        ("so the total is 1234", "He earns...\n#### 1,234", 1.0),  # GSM8K gold with a comma
        ("\\boxed{\\frac{14}{3}}", "\\frac{14}{3}", 1.0),  # LaTeX fraction
        ("The answer is 0.5", "\\frac{1}{2}", 1.0),  # decimal vs fraction
        ("<answer>73</answer>", "72", 0.0),  # wrong answer
        ("I am not sure", "72", 0.0),  # no answer at all
        ("\\boxed{72}", "", 0.0),  # empty gold
    ],
)
def test_accuracy_rows(completion, answer, expected):
    assert accuracy([completion], answer=[answer]) == [expected]
    assert score(completion, answer) == expected  # the evaluation metric is the same code


def test_accuracy_reasoning_gym_verifier():
    entries, verifiers = _reasoning_gym_rows()
    completions = [
        f"Computing... \\boxed{{{entries[0]['answer']}}}",  # right
        "<answer>12345</answer>",  # wrong
        [{"role": "assistant", "content": f"The answer is {entries[1]['answer']}"}],  # right, conversational
        "\\boxed{72}",  # a plain row in the same batch, scored by answer
        "\\boxed{72}",  # verifier column empty string: plain row too
        "whatever",  # no answer, no verifier: not applicable
    ]
    scores = accuracy(
        completions,
        answer=[entries[0]["answer"], entries[1]["answer"], entries[1]["answer"], "72", "72", None],
        verifier=[verifiers[0], verifiers[1], verifiers[1], None, "", None],
    )
    assert scores == [1.0, 0.0, 1.0, 1.0, 1.0, None]


@pytest.mark.parametrize(
    "verifier, message",
    [
        ("{not json", "not valid JSON"),  # malformed column
        ('{"kind": "lean"}', "the only kind is 'reasoning_gym'"),  # unknown verifier kind
        ('{"kind": "reasoning_gym", "generator": "no_such_task", "entry": {}}', "not registered"),
        ('{"kind": "reasoning_gym", "generator": "basic_arithmetic"}', "needs a string `generator`"),
    ],
)
def test_accuracy_bad_verifier(verifier, message):
    with pytest.raises(RewardError, match=message):
        accuracy(["\\boxed{1}"], answer=["1"], verifier=[verifier])


def test_accuracy_none_answer_and_missing_column():
    assert accuracy(["\\boxed{1}", "\\boxed{2}"], answer=[None, "2"]) == [None, 1.0]  # None: not applicable
    with pytest.raises(RewardError, match="needs an `answer` column"):
        accuracy(["\\boxed{1}"])


def test_accuracy_through_plugin_with_conversational_completions():
    plugin = RewardPlugin(load_reward("accuracy"), name="accuracy")
    completions = [[{"role": "assistant", "content": "\\boxed{3}"}], [{"role": "assistant", "content": "4"}]]
    assert plugin(prompts=None, completions=completions, answer=["3", "3"], trainer_state=None) == [1.0, 0.0]


# --------------------------------------------------------------------------------------------------
# rewards.format
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kwargs, expected",
    [
        ("<think>a</think><answer>b</answer>", {}, 1.0),  # default tags
        ("\n <think>\na\n</think>\n\n<answer> b </answer>\n", {}, 1.0),  # whitespace around tags is fine
        ("<answer>b</answer>", {}, 0.0),  # missing think
        ("<think>a</think>", {}, 0.0),  # missing answer
        ("<answer>b</answer><think>a</think>", {}, 0.0),  # wrong order
        ("Sure! <think>a</think><answer>b</answer>", {}, 0.0),  # extra text before
        ("<think>a</think><answer>b</answer> Done.", {}, 0.0),  # extra text after
        ("<think>a</think> so <answer>b</answer>", {}, 0.0),  # extra text between
        ("<think> </think><answer>b</answer>", {}, 0.0),  # empty block
        ("<think>a<think>b</think><answer>c</answer>", {}, 0.0),  # nested opening tag
        ("<think>a</think><answer>b", {}, 0.0),  # unclosed tag
        ("<answer>7</answer>", {"tags": ["answer"]}, 1.0),  # custom tags
        ("<answer>7</answer>", {"tags": "answer"}, 1.0),  # a single tag as a string
        ("anything", {"tags": []}, 1.0),  # no tags: nothing to check
        ("Final: 42", {"pattern": r"Final: -?\d+"}, 1.0),  # pattern fullmatch
        ("Final: 42 ok", {"pattern": r"Final: -?\d+"}, 0.0),  # pattern must match the whole text
        ("line1\nFinal: 4", {"pattern": r".*Final: \d"}, 1.0),  # DOTALL: '.' crosses lines
        ("<x>1</x>Final: 4", {"pattern": r".*Final: \d", "tags": ["x"]}, 0.0),  # tags and pattern both apply
        ("so \\boxed{4}", {"tags": [], "require_boxed": True}, 1.0),  # boxed required and present
        ("so 4", {"tags": [], "require_boxed": True}, 0.0),  # boxed required, absent
        ("so \\boxed{}", {"tags": [], "require_boxed": True}, 0.0),  # empty boxed does not count
        ("<think>a</think><answer>\\boxed{4}</answer>", {"require_boxed": True}, 1.0),  # tags and boxed
        ("<think>a</think><answer>4</answer>", {"require_boxed": True}, 0.0),  # tags ok, no boxed
    ],
)
def test_format_reward(text, kwargs, expected):
    assert format_reward([text], **kwargs) == [expected]


def test_format_reward_conversational_and_bad_pattern():
    conv = [{"role": "assistant", "content": "<think>a</think><answer>b</answer>"}]
    assert format_reward([conv]) == [1.0]
    with pytest.raises(RewardError, match=r"`pattern` '\(unclosed' is not a valid regular expression"):
        format_reward(["x"], pattern="(unclosed")


# --------------------------------------------------------------------------------------------------
# rewards.length
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completions, completion_ids, cap, expected",
    [
        (["a", "b", "c"], [[1] * 10, [1] * 5, []], 10, [1.0, 0.5, 0.0]),  # at, below and far below the cap
        (["a"], [[1] * 100], 10, [1.0]),  # above the cap: clipped to 1
        (["a b", "c", ""], None, 4, [0.5, 0.25, 0.0]),  # no token ids: whitespace words
    ],
)
def test_length(completions, completion_ids, cap, expected):
    assert length(completions, completion_ids=completion_ids, cap=cap) == expected


@pytest.mark.parametrize("cap", [0, -5, 2.5, "512", True, None])  # zero, negative, float, string, bool, None
def test_length_bad_cap(cap):
    with pytest.raises(RewardError, match="`cap` must be a positive integer"):
        length(["a"], cap=cap)


# --------------------------------------------------------------------------------------------------
# overlong: DAPO's soft overlong punishment (Eq. 13)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_tokens, expected",
    [(1, 0.0), (16, 0.0), (17, -0.25), (18, -0.5), (20, -1.0), (21, -1.0)],  # L_max 20, L_cache 4
)
def test_overlong_follows_dapo_equation_13(n_tokens, expected):
    from rewards.overlong import overlong

    assert overlong(["x"], completion_ids=[[7] * n_tokens], max_length=20, cache=4) == [
        pytest.approx(expected)
    ]


@pytest.mark.parametrize(
    "kwargs, phrase",
    [({}, "`max_length` must be a positive integer"), ({"max_length": 8, "cache": 9}, "`cache`")],
)
def test_overlong_bad_kwargs(kwargs, phrase):
    from posttrain.errors import RewardError
    from rewards.overlong import overlong

    with pytest.raises(RewardError, match=phrase):
        overlong(["x"], completion_ids=[[1]], **kwargs)


def test_method_dapo_adds_the_overlong_punishment_once(tmp_path):
    from posttrain.config import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("data: {generator: chain_sum}\nmethod: dapo\ntrainer: {max_completion_length: 100}\n")
    recipe = load_recipe(path)
    (entry,) = [r for r in recipe.rewards if r.name == "overlong"]
    assert entry.kwargs == {"max_length": 100, "cache": 20}
    recipe.save(tmp_path / "saved.yaml")
    assert [r.name for r in load_recipe(tmp_path / "saved.yaml").rewards].count("overlong") == 1
