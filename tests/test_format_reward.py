"""The ``format`` reward's ``style: geometryzero`` against GeometryZero's own check, re-implemented here.

    pytest tests/test_format_reward.py -q

GeometryZero's format reward (r1_workspace, ``workspace/reward/reward_utils.py``, ``format_reward_func``)
is ``re.match(r"<think>.*?</think>.*?<answer>.*?</answer>", completion.strip(), re.DOTALL)``: 0.5 on a
match (posttrain: 1.0 at recipe weight 0.5). ``re.match`` anchors only the start, so that regex means:
the stripped text starts with ``<think>`` and, after it, ``</think>``, ``<answer>`` and ``</answer>``
occur in this order. :func:`reference_accepts` writes that meaning with ``str.find`` (no regex), so the
test does not just compare a regex with itself; each table case also states by hand what the
reference does, which keeps the re-implementation honest.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from posttrain.errors import RewardError
from posttrain.rewards import load_reward
from rewards.format import format_reward

GEOMETRYZERO = {"style": "geometryzero"}


def reference_accepts(text: str) -> bool:
    """GeometryZero's format check: the stripped text opens with <think>, then the 3 tags follow in order."""
    s = text.strip()
    if not s.startswith("<think>"):
        return False
    pos = len("<think>")
    for tag in ("</think>", "<answer>", "</answer>"):
        found = s.find(tag, pos)  # the earliest occurrence leaves the most room for the tags after it
        if found == -1:
            return False
        pos = found + len(tag)
    return True


CASES = [
    # the canonical shape
    ("<think>2+2 is 4</think><answer>4</answer>", True),
    # a newline between </think> and <answer>
    ("<think>a</think>\n<answer>4</answer>", True),
    # text between </think> and <answer>
    ("<think>a</think> So the answer is: <answer>4</answer>", True),
    # text after </answer> (re.match does not anchor the end)
    ("<think>a</think><answer>4</answer> Hope this helps!", True),
    # leading and trailing whitespace: stripped first
    ("  \n\t<think>a</think><answer>4</answer>\n\n", True),
    # leading Unicode whitespace (a no-break space): str.strip removes it too
    ("\u00a0<think>a</think><answer>4</answer>", True),
    # empty blocks
    ("<think></think><answer></answer>", True),
    # whitespace-only blocks
    ("<think> </think><answer>\n</answer>", True),
    # multi-line blocks: DOTALL
    ("<think>line 1\nline 2</think>\n<answer>\n4\n</answer>", True),
    # an <auxiliary> span inside the reasoning
    ("<think>draw <auxiliary>AD</auxiliary></think><answer>4</answer>", True),
    # two answers: the first one completes the match
    ("<think>a</think><answer>4</answer><answer>5</answer>", True),
    # nested: an answer block inside the think block, then a real one
    ("<think>a<answer>3</answer></think><answer>4</answer>", True),
    # nested think tags: the first </think> closes the match's think block
    ("<think><think>a</think></think><answer>4</answer>", True),
    # unclosed think block, but a </think> inside the answer lets the pattern through
    ("<think>a<answer>x</think><answer>4</answer>", True),
    # missing think block
    ("<answer>4</answer>", False),
    # text before <think>: the start is anchored
    ("Sure! <think>a</think><answer>4</answer>", False),
    # answer before think
    ("<answer>4</answer><think>a</think>", False),
    # unclosed answer (a completion cut off)
    ("<think>a</think><answer>4", False),
    # unclosed think, no </think> anywhere
    ("<think>a<answer>4</answer>", False),
    # the only answer block is inside the think block
    ("<think>a<answer>4</answer></think>", False),
    # </answer> before <answer>
    ("<think>a</think></answer><answer>4", False),
    # no answer block
    ("<think>a</think>", False),
    # tags are case-sensitive
    ("<THINK>a</THINK><ANSWER>4</ANSWER>", False),
    # a space inside a tag makes it another tag
    ("<think >a</think><answer>4</answer>", False),
    # the empty completion
    ("", False),
    # whitespace only
    (" \n ", False),
]


@pytest.mark.parametrize(("text", "accepted"), CASES)
def test_geometryzero_style_is_the_reference_check(text, accepted):
    assert reference_accepts(text) is accepted, "the hand label and the re-implementation disagree"
    expected = [1.0 if reference_accepts(text) else 0.0]
    assert format_reward([text], **GEOMETRYZERO) == expected
    assert load_reward("format", **GEOMETRYZERO)([text]) == expected  # as a recipe loads it
    conversational = [{"role": "assistant", "content": text}]
    assert format_reward([conversational], **GEOMETRYZERO) == expected


# Pieces that make near-misses likely: the four tags, their look-alikes, text and whitespace.
PIECES = "<think> </think> <answer> </answer> <think answer> </ x 4".split() + [" ", "\n", "\t"]


@given(st.lists(st.sampled_from(PIECES), max_size=12))
def test_geometryzero_style_matches_the_reference_on_random_tag_soup(pieces):
    text = "".join(pieces)
    assert format_reward([text], **GEOMETRYZERO) == [1.0 if reference_accepts(text) else 0.0]


@pytest.mark.parametrize(
    ("text", "strict", "geometryzero"),
    [
        ("<think>a</think><answer>4</answer>", 1.0, 1.0),  # both accept the canonical shape
        ("<think>a</think><answer>4</answer> Done.", 0.0, 1.0),  # strict: nothing after the blocks
        ("<think>a</think> so <answer>4</answer>", 0.0, 1.0),  # strict: nothing between them
        ("<think></think><answer>4</answer>", 0.0, 1.0),  # strict: no empty block
        ("<answer>4</answer>", 0.0, 0.0),  # neither without the think block
    ],
)
def test_the_default_style_is_unchanged(text, strict, geometryzero):
    assert format_reward([text]) == format_reward([text], style="strict") == [strict]
    assert format_reward([text], **GEOMETRYZERO) == [geometryzero]


def test_geometryzero_style_with_require_boxed():
    texts = ["<think>a</think><answer>\\boxed{4}</answer>", "<think>a</think><answer>4</answer>"]
    assert format_reward(texts, require_boxed=True, **GEOMETRYZERO) == [1.0, 0.0]


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"style": "GeometryZero"}, "unknown `style: 'GeometryZero'`"),  # names are exact
        ({"style": None}, "unknown `style: None`"),
        ({"style": "geometryzero", "tags": ["answer"]}, "takes no `tags` or `pattern`"),
        ({"style": "geometryzero", "pattern": ".*"}, "takes no `tags` or `pattern`"),
    ],
)
def test_bad_style_is_a_clear_error(kwargs, phrase):
    with pytest.raises(RewardError) as info:
        format_reward(["<think>a</think><answer>4</answer>"], **kwargs)
    assert phrase in str(info.value)
