"""Tests for MASH's pay-per-search reward (rewards/search.py) through ``load_reward`` on hand-built groups.

    pytest tests/test_pay_per_search.py -q

Every completion is built by :func:`done`: ``m`` search spans then an answer span, and the gold
answer is "Beijing" unless a case says otherwise, so correctness and the search count are visible
in each table row. Expected rewards are worked out by hand beside each case.
"""

from __future__ import annotations

import doctest
import io
import math

import pytest
import torch

import rewards.search
from posttrain.errors import RewardError
from posttrain.rewards import RewardPlugin, is_group_reward, is_stateful, load_reward


def done(answer: str | None, m: int = 0) -> str:
    """A completion with ``m`` searches and then ``<answer>answer</answer>`` (no tag when None)."""
    searches = "".join(f"<search>q{i}</search><document>(Title: T) text</document>" for i in range(m))
    return searches + (f"<answer>{answer}</answer>" if answer is not None else "I cannot tell.")


def call(reward, rows, group_size=None, ids=None, prompts=None, gold="Beijing", **kwargs):
    """Score ``rows`` = [(answer, m), ...]; one group unless ``group_size``; returns (scores, logged)."""
    n = len(rows)
    logged: dict[str, float] = {}
    if ids is None and prompts is None:
        ids = ["q1"] * n
    scores = reward(
        completions=[done(a, m) for a, m in rows],
        group_size=group_size or n,
        num_searches=[m for _, m in rows],
        id=ids,
        prompts=prompts,
        answer=[gold] * n if isinstance(gold, str) or gold is None else gold,
        log_metric=logged.__setitem__,
        **kwargs,
    )
    return scores, logged


def pps(**kwargs):
    return load_reward("pay_per_search", **kwargs)


def test_docstring_examples():
    result = doctest.testmod(rewards.search)
    assert result.failed == 0 and result.attempted > 0


def test_is_a_stateful_group_plugin():
    reward = pps()
    assert is_group_reward(reward) and is_stateful(reward)
    plugin = RewardPlugin(reward, "pay_per_search")
    assert plugin.is_group and plugin.is_stateful


B = "Beijing"


@pytest.mark.parametrize(
    ("name", "rows", "kwargs", "expected"),
    [
        (
            "all correct, m = 0..3: 1, lam, lam^2, lam^3",
            [(B, 0), (B, 1), (B, 2), (B, 3)],
            {},
            [1, 0.5, 0.25, 0.125],
        ),
        ("the minimum need not be 0: m_min = 2", [(B, 2), (B, 3), (B, 4), (B, 2)], {}, [1, 0.5, 0.25, 1]),
        ("lam 0.8 (MASH multi-hop)", [(B, 1), (B, 2), (B, 3)], {"lam": 0.8}, [1, 0.8, 0.64]),
        ("lam 1: searches are free", [(B, 0), (B, 4)], {"lam": 1.0}, [1, 1]),
        ("wrong answers score 0", [("Paris", 0), (B, 1), ("Shanghai", 2)], {}, [0, 1, 0]),
        (
            "a wrong answer with fewer searches sets no minimum",
            [("Paris", 0), (B, 2), (B, 3)],
            {},
            [0, 1, 0.5],
        ),
        ("no answer tag scores 0", [(None, 0), (None, 3), (B, 1)], {}, [0, 0, 1]),
        (
            "SQuAD normalisation: 'The  Beijing.' is 'beijing'",
            [("The  Beijing.", 1), ("beijing", 2)],
            {},
            [1, 0.5],
        ),
        ("nobody correct: all 0", [("Paris", 0), (None, 1)], {}, [0, 0]),
    ],
)
def test_single_group(name, rows, kwargs, expected):
    scores, _ = call(pps(**kwargs), rows)
    assert scores == pytest.approx([float(x) for x in expected]), name


def test_gold_from_the_answers_list_before_answer():
    reward = pps()
    scores = reward(
        completions=[done("Peking", 0), done("Beijing", 1), done("Beijing", 0)],
        group_size=3,
        num_searches=[0, 1, 0],
        id=["q1", "q1", "q2"],
        answers=[["Beijing", "Peking"], ["Beijing", "Peking"], []],  # q2: empty list -> `answer`
        answer=["Beijing", "Beijing", "Beijing"],
    )
    # q1: Peking (m 0) is right too, so m_min = 0 and Beijing with 1 search gets 0.5.
    assert scores == [1.0, 0.5, 1.0]


def test_several_groups_in_one_call_each_with_its_own_minimum():
    rows = [(B, 1), (B, 2), (B, 0), (B, 3), ("Paris", 0), (B, 2)]
    scores, _ = call(pps(), rows, group_size=2, ids=["a", "a", "b", "b", "c", "c"])
    # a: m_min 1 -> 1, 0.5; b: m_min 0 -> 1, 0.125; c: m_min 2 (the wrong 0 does not count) -> 0, 1.
    assert scores == [1.0, 0.5, 1.0, 0.125, 0.0, 1.0]


def test_groups_of_the_same_question_in_one_call_are_pooled():
    # Two groups of q1 (as MASH groups by question): the best correct answer of either sets m_min.
    scores, _ = call(pps(), [(B, 2), (B, 3), (B, 1), (B, 2)], group_size=2, ids=["q1"] * 4)
    assert scores == [0.5, 0.25, 1.0, 0.5]


def test_group_order_does_not_matter():
    ids = ["a", "a", "b", "b", "a", "a"]
    rows = [(B, 1), (B, 2), (B, 0), ("x", 0), (B, 3), (B, 0)]
    forward, _ = call(pps(), rows, group_size=2, ids=ids)
    order = [4, 5, 2, 3, 0, 1]
    backward, _ = call(pps(), [rows[i] for i in order], group_size=2, ids=[ids[i] for i in order])
    assert backward == [forward[i] for i in order]


def test_rows_keyed_by_prompt_without_an_id():
    chat = [{"role": "user", "content": "Capital of China?"}]
    other = [{"role": "user", "content": "Capital of France?"}]
    reward = pps()
    # Chat prompts: the first two groups share a prompt and pool, the third has its own.
    scores = reward(
        completions=[done(B, 1), done(B, 2), done(B, 3), done(B, 4), done("Paris", 2), done("Paris", 3)],
        group_size=2,
        num_searches=[1, 2, 3, 4, 2, 3],
        prompts=[chat, chat, chat, chat, other, other],
        answer=[B, B, B, B, "Paris", "Paris"],
    )
    assert scores == [1.0, 0.5, 0.25, 0.125, 1.0, 0.5]
    # And across calls, a string prompt remembers its minimum like an id does.
    reward = pps()
    first = reward(completions=[done(B, 1)], group_size=1, num_searches=[1], prompts=["Q?"], answer=[B])
    second = reward(completions=[done(B, 3)], group_size=1, num_searches=[3], prompts=["Q?"], answer=[B])
    assert (first, second) == ([1.0], [0.25])


def test_an_id_wins_over_the_prompt():
    reward = pps()
    call(reward, [(B, 0)], ids=["q1"], prompts=["same text"])
    scores, _ = call(reward, [(B, 2)], ids=["q2"], prompts=["same text"])
    assert scores == [1.0]  # q2 has no history, though its prompt text is q1's


# -- history across calls --------------------------------------------------------------------------


def test_a_later_group_is_penalised_against_the_historical_minimum():
    reward = pps()
    first, _ = call(reward, [(B, 1), (B, 2), ("Paris", 0)])
    assert first == [1.0, 0.5, 0.0]
    # Next step the best correct answer of q1 needs 3 searches: 2 more than the best ever seen.
    second, logged = call(reward, [(B, 3), (B, 4), (None, 0)])
    assert second == [0.25, 0.125, 0.0]
    assert logged["search/history_size"] == 1.0
    # A better answer lowers the minimum for later calls, and is itself scored against it.
    third, _ = call(reward, [(B, 0), (B, 1)])
    assert third == [1.0, 0.5]
    fourth, _ = call(reward, [(B, 1)])
    assert fourth == [0.5]
    assert reward.state_dict() == {"history": {"id:q1": 0}}


def test_history_is_per_question_and_only_correct_answers_enter_it():
    reward = pps()
    call(reward, [(B, 2), ("Paris", 0)], ids=["q1", "q1"])
    call(reward, [("Paris", 0), (None, 0)], ids=["q2", "q2"])  # q2: never right, no entry
    assert reward.state_dict() == {"history": {"id:q1": 2}}
    scores, _ = call(reward, [(B, 3), (B, 3)], group_size=1, ids=["q1", "q2"])
    assert scores == [0.5, 1.0]  # q1 against its history (2); q2's first correct answer sets its own


def _three_calls(reward):
    calls = [
        ([(B, 1), (B, 2), ("x", 0), (B, 0)], ["a", "a", "b", "b"]),
        ([(B, 3), (B, 2), (B, 4), (B, 1)], ["a", "a", "b", "b"]),
        ([(B, 4), (None, 0), (B, 2), (B, 2)], ["a", "a", "c", "c"]),
    ]
    return [call(reward, rows, group_size=2, ids=ids)[0] for rows, ids in calls]


def test_state_dict_round_trip_into_a_fresh_plugin():
    original = pps(lam=0.5)
    call(original, [(B, 1), (B, 2), (B, 0), (B, 2)], group_size=2, ids=["a", "a", "b", "b"])
    state = original.state_dict()
    # Through torch.save / torch.load, as the trainer writes it into each checkpoint.
    buffer = io.BytesIO()
    torch.save({"rewards": {"pay_per_search": state}}, buffer)
    buffer.seek(0)
    restored = pps(lam=0.5)
    plugin = RewardPlugin(restored, "pay_per_search")
    plugin.load_state_dict(torch.load(buffer, weights_only=False)["rewards"]["pay_per_search"])
    assert restored.state_dict() == state == {"history": {"id:a": 1, "id:b": 0}}
    assert _three_calls(restored) == _three_calls(original)
    # Without the state the same call scores differently: the restored history is what counts.
    fresh = pps(lam=0.5)
    assert call(fresh, [(B, 3)], ids=["a"])[0] == [1.0]
    assert call(restored, [(B, 3)], ids=["a"])[0] == [0.25]


def test_load_state_dict_replaces_and_validates():
    reward = pps()
    call(reward, [(B, 2)])
    reward.load_state_dict({})  # a state without history (e.g. written before any step): empty
    assert reward.state_dict() == {"history": {}}
    for bad in ({"history": {"q": -1}}, {"history": ["q"]}, {"history": {"q": 1.5}}, "history"):
        with pytest.raises(RewardError, match="not a pay_per_search history"):
            reward.load_state_dict(bad)


# -- penalty variants ------------------------------------------------------------------------------

# Group A: everyone right with m = 0, 1, 2, 3 (m_min = 0). Group B: right with m = 2, 3, 5 and a
# wrong answer with 0 searches (m_min = 2).
GROUP_A = [(B, 0), (B, 1), (B, 2), (B, 3)]
GROUP_B = [(B, 2), (B, 3), (B, 5), ("Paris", 0)]


def otc_by_hand(m: int, n: int, c: int) -> float:
    if m == n == 0:
        return 1.0
    if n == 0:
        return math.cos(m * math.pi / (2 * m + c))
    return math.sin((2 * m * n / (m + n)) * math.pi / (2 * n))


@pytest.mark.parametrize(
    ("penalty", "kwargs", "expected_a", "expected_b"),
    [
        ("none", {}, [1, 1, 1, 1], [1, 1, 1, 0]),
        ("exp", {"lam": 0.5}, [1, 0.5, 0.25, 0.125], [1, 0.5, 0.125, 0]),
        ("exp", {"lam": 0.8}, [1, 0.8, 0.64, 0.512], [1, 0.8, 0.512, 0]),
        # 1 - m/6: the best known count plays no part.
        ("linear", {}, [1, 5 / 6, 4 / 6, 3 / 6], [4 / 6, 3 / 6, 1 / 6, 0]),
        ("linear", {"max_searches": 3}, [1, 3 / 4, 2 / 4, 1 / 4], [2 / 4, 1 / 4, 0, 0]),  # 1 - 5/4 < 0: 0
        # n = 0: cos(m pi / (2m + 5)) = cos(0), cos(pi/7), cos(2pi/9), cos(3pi/11).
        (
            "otc",
            {},
            [1, math.cos(math.pi / 7), math.cos(2 * math.pi / 9), math.cos(3 * math.pi / 11)],
            # n = 2: f = 2, 12/5, 20/7 -> sin(f pi / 4) = sin(pi/2), sin(3pi/5), sin(5pi/7).
            [1, math.sin(3 * math.pi / 5), math.sin(5 * math.pi / 7), 0],
        ),
        (
            "otc",
            {"max_searches": 3},
            [otc_by_hand(m, 0, 3) for m in range(4)],
            [1, math.sin(0.6 * math.pi), math.sin(5 * math.pi / 7), 0],
        ),
        # A correct answer without search is known for A: every search scores 0. B is as under otc.
        ("otc_strict", {}, [1, 0, 0, 0], [1, math.sin(3 * math.pi / 5), math.sin(5 * math.pi / 7), 0]),
    ],
)
def test_penalty_variants_by_hand(penalty, kwargs, expected_a, expected_b):
    scores, _ = call(
        pps(penalty=penalty, **kwargs), GROUP_A + GROUP_B, group_size=4, ids=["a"] * 4 + ["b"] * 4
    )
    assert scores == pytest.approx([float(x) for x in expected_a + expected_b]), penalty


def test_otc_formula_table_matches_the_written_form():
    # The test's own transcription of the spec agrees with the plugin's on a grid of (m, n, c).
    for c in (0, 3, 5):
        for n in range(4):
            for m in range(n, 8):
                assert rewards.search.otc_penalty(m, n, 0.5, c) == pytest.approx(otc_by_hand(m, n, c))


# -- diagnostics -----------------------------------------------------------------------------------


def test_logged_diagnostics_by_hand():
    reward = pps()
    scores, logged = call(
        reward,
        [(B, 0), (B, 2), ("Paris", 1), (None, 3), (B, 1), (B, 1), (B, 2), (B, 2)],
        group_size=4,
        ids=["a"] * 4 + ["b"] * 4,
        gold=[B] * 4 + [None] * 4,  # group b has no gold answers: scored None
    )
    assert scores == [1.0, 0.25, 0.0, 0.0, None, None, None, None]
    assert logged["search/accuracy"] == 0.5  # 2 right of the 4 scorable rows
    assert logged["search/searches_mean"] == 12 / 8
    assert logged["search/searches_correct_mean"] == 1.0  # (0 + 2) / 2
    assert logged["search/penalty_mean"] == pytest.approx((1 + 0.25) / 2)
    assert logged["search/no_search_rate"] == 1 / 8
    assert logged["search/no_answer_rate"] == 1 / 8
    assert logged["search/unscorable_groups"] == 0.5
    assert logged["search/history_size"] == 1.0  # b, with no gold, never enters the history


def test_no_correct_answer_logs_no_conditional_means():
    _, logged = call(pps(), [("Paris", 0), (None, 1)])
    assert logged["search/accuracy"] == 0.0
    assert "search/searches_correct_mean" not in logged and "search/penalty_mean" not in logged


def test_conversational_completions_and_a_tensor_of_counts():
    reward = pps()
    completions = [[{"role": "assistant", "content": done(B, m)}] for m in (1, 2)]
    scores = reward(
        completions=completions, group_size=2, num_searches=torch.tensor([1, 2]), id=["q"] * 2, answer=[B] * 2
    )
    assert scores == [1.0, 0.5]


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "phrases"),
    [
        ({"lam": 0}, ["`lam` must be a number in (0, 1]"]),
        ({"lam": -0.5}, ["`lam`"]),
        ({"lam": 1.5}, ["`lam`"]),
        ({"lam": math.nan}, ["`lam`"]),
        ({"lam": "0.5"}, ["`lam`"]),
        ({"lam": True}, ["`lam`"]),
        ({"penalty": "expo"}, ["unknown `penalty` 'expo'", "exp, none, linear, otc, otc_strict"]),
        ({"penalty": None}, ["Valid penalties"]),
        ({"penalty": ["exp"]}, ["Valid penalties"]),  # unhashable: still the same message
        ({"max_searches": -1}, ["`max_searches` must be an integer >= 0"]),
        ({"max_searches": 2.5}, ["`max_searches`"]),
        ({"max_searches": True}, ["`max_searches`"]),
        ({"lamda": 0.5}, ["lamda"]),  # a misspelt kwarg is caught at load time
    ],
)
def test_bad_kwargs_are_clear_errors_at_load_time(kwargs, phrases):
    with pytest.raises(RewardError) as info:
        pps(**kwargs)
    for phrase in phrases:
        assert phrase in str(info.value)


def test_missing_num_searches_names_the_search_tool_loop():
    reward = pps()
    with pytest.raises(RewardError, match="search tool loop") as info:
        reward(completions=[done(B)], group_size=1, id=["q"], answer=[B])
    assert "num_searches" in str(info.value)
    # Through the trainer's wrapper it is never swallowed, even with on_error=skip.
    plugin = RewardPlugin(reward, "pay_per_search", on_error="skip")
    with pytest.raises(RewardError, match="search tool loop"):
        plugin(None, [done(B)], group_size=1, id=["q"], answer=[B])


@pytest.mark.parametrize(
    ("num_searches", "phrase"),
    [
        ([0], "one count per completion (2)"),  # misaligned with the rows
        ([0, -1], "row 1"),  # negative
        ([0, None], "row 1"),  # missing count
        ([0, 1.5], "row 1"),  # not a count
        ([0, math.nan], "row 1"),  # NaN is not a count either
        ("01", "one count per completion"),  # a string is not a list of counts
    ],
)
def test_bad_num_searches(num_searches, phrase):
    with pytest.raises(RewardError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        pps()(
            completions=[done(B), done(B)],
            group_size=2,
            num_searches=num_searches,
            id=["q"] * 2,
            answer=[B] * 2,
        )


@pytest.mark.parametrize(
    "columns",
    [
        {"answer": [None, None]},  # an unlabeled data set
        {"answer": ["", "  "], "answers": [[], None]},  # empty gold everywhere
        {},  # no answer column at all
    ],
)
def test_no_gold_answers_in_the_whole_call_is_an_error(columns):
    with pytest.raises(RewardError, match="`answers` column") as info:
        pps()(completions=[done(B), done(B)], group_size=2, num_searches=[0, 0], id=["q"] * 2, **columns)
    assert "`answer` column" in str(info.value)


def test_neither_id_nor_prompt_is_an_error():
    with pytest.raises(RewardError, match="`id` column"):
        pps()(completions=[done(B)], group_size=1, num_searches=[0], answer=[B])
