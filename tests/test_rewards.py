"""Tests for the reward plugin API (posttrain/rewards.py): loading, wrapping, validation, errors.

pytest tests/test_rewards.py -q
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
import sys
import types
from pathlib import Path

import pytest

from posttrain.errors import ConfigError, RewardError
from posttrain.rewards import (
    BUILTIN_REWARDS,
    RewardPlugin,
    RewardSpec,
    build_reward_plugins,
    completion_text,
    group_reward,
    is_group_reward,
    is_stateful,
    load_reward,
)

FIXTURES = Path(__file__).parent / "fixtures"


# --------------------------------------------------------------------------------------------------
# A fake user module, installed in sys.modules so dotted paths resolve without touching disk
# --------------------------------------------------------------------------------------------------


def _constant(completions, value=1.0, **kwargs):
    return [value] * len(completions)


@group_reward
def _group_mean(completions, group_size, scale=1.0, **kwargs):
    # Each group's score: its index, so the test can see the grouping.
    return [float(i // group_size) for i in range(len(completions))]


class _Counter:
    """A stateful reward: counts calls, scores every row with `start + calls`."""

    def __init__(self, start=0):
        self.calls = start

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [float(self.calls)] * len(completions)

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


@pytest.fixture
def fake_module(monkeypatch):
    module = types.ModuleType("fake_user_rewards")
    module.constant = _constant
    module.group_mean = _group_mean
    module.Counter = _Counter
    module.not_callable = 42
    monkeypatch.setitem(sys.modules, "fake_user_rewards", module)
    return module


def _fake_entry_points(monkeypatch, *entries: tuple[str, str]):
    """Make `importlib.metadata.entry_points(group=...)` return the given (name, value) pairs."""
    eps = [importlib.metadata.EntryPoint(name, value, "posttrain.rewards") for name, value in entries]

    def entry_points(**params):
        return [ep for ep in eps if params.get("group") == ep.group]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


# --------------------------------------------------------------------------------------------------
# Markers and helpers
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, text",
    [
        ("plain", "plain"),  # standard format: a string
        ([{"role": "assistant", "content": "conv"}], "conv"),  # conversational format
        (
            [
                {"role": "assistant", "content": "calling a tool"},
                {"role": "tool", "content": "42"},
                {"role": "assistant", "content": "final"},
            ],
            "final",
        ),  # multi-turn tool rollout: the last assistant message is the answer
        (
            [
                {
                    "role": "assistant",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ],
            "ab",
        ),
        ([], ""),  # empty conversation
        (None, ""),  # missing completion
    ],
)
def test_completion_text(completion, text):
    assert completion_text(completion) == text


def test_markers():
    assert is_group_reward(_group_mean)
    assert not is_group_reward(_constant)
    assert is_stateful(_Counter())
    assert not is_stateful(_constant)
    assert not is_stateful(_Counter)  # the class is not an instance: load_reward instantiates it first


# --------------------------------------------------------------------------------------------------
# load_reward
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("length", {"cap": 2}, [1.0, 0.5]),  # built-in name, kwargs bound with partial
        ("fake_user_rewards:constant", {"value": 0.25}, [0.25, 0.25]),  # dotted path with ':'
        ("fake_user_rewards.constant", {}, [1.0, 1.0]),  # dotted path with '.'
        ("fake_user_rewards:Counter", {"start": 10}, [11.0, 11.0]),  # class instantiated with kwargs
        ("my_entry", {"value": 3}, [3.0, 3.0]),  # an entry point in group posttrain.rewards
    ],
)
def test_load_reward_resolves(monkeypatch, fake_module, name, kwargs, expected):
    _fake_entry_points(monkeypatch, ("my_entry", "fake_user_rewards:constant"))
    fn = load_reward(name, **kwargs)
    assert fn(prompts=None, completions=["a b", "c"], completion_ids=None) == expected


def test_load_reward_keeps_name_and_group_marker(fake_module):
    bound = load_reward("fake_user_rewards:group_mean", scale=1)
    assert bound.__name__ == "_group_mean"
    assert is_group_reward(bound)
    assert load_reward("fake_user_rewards:constant", value=2.0).__name__ == "_constant"


def test_builtins_all_load():
    for name in BUILTIN_REWARDS:
        assert callable(load_reward(name))


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("acurracy", {}, "Did you mean 'accuracy'"),  # typo: closest match suggested
        (
            "zzz",
            {},
            "Known rewards: accuracy, format, length, gcpo_contrastive, spark_judge, ttrl_majority, ttrv_frequency, pay_per_search, episodic_memory, overlong, broken_entry, my_entry.",
        ),  # built-ins, entry points
        ("no_such_pkg.mod:fn", {}, "cannot import module 'no_such_pkg.mod'"),  # bad module
        (
            "fake_user_rewards:constnat",
            {},
            "has no attribute 'constnat'. Did you mean 'constant'",
        ),  # bad attr
        ("fake_user_rewards:not_callable", {}, "not callable"),  # resolves to a non-callable
        ("fake_user_rewards:Counter", {"stop": 1}, "creating _Counter"),  # class rejects kwargs
        ("fake_user_rewards:_group_mean_nope", {}, "has no attribute"),  # missing attr, no suggestion
        ("broken_entry", {}, "loading the entry point"),  # entry point whose target does not import
        (":fn", {}, "not a valid dotted path"),  # empty module part
    ],
)
def test_load_reward_errors(monkeypatch, fake_module, name, kwargs, message):
    _fake_entry_points(
        monkeypatch, ("my_entry", "fake_user_rewards:constant"), ("broken_entry", "nope_xyz:f")
    )
    with pytest.raises(RewardError) as info:
        load_reward(name, **kwargs)
    assert message in str(info.value)


def test_load_reward_rejects_kwargs_the_function_cannot_take(monkeypatch):
    module = types.ModuleType("strict_rewards")
    module.strict = lambda completions, scale=1.0: [scale] * len(completions)
    monkeypatch.setitem(sys.modules, "strict_rewards", module)
    with pytest.raises(RewardError, match="has no setting 'sclae'.*Did you mean 'scale'"):
        load_reward("strict_rewards:strict", sclae=2.0)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("format", {"extract": "boxed"}),  # format reads no answers: an extraction policy cannot apply
        ("pay_per_search", {"extract": "boxed"}),  # MASH reads <answer> spans its own way (a class)
        ("accuracy", {"extrcat": "boxed"}),  # a typo would land in **kwargs and be ignored
    ],
)
def test_a_setting_the_reward_does_not_have_is_refused(name, kwargs):
    with pytest.raises(RewardError, match=f"{name}.*{next(iter(kwargs))}"):
        load_reward(name, **kwargs)


def test_an_unknown_extraction_policy_is_named():
    from posttrain.rewards import RewardPlugin, RewardSpec

    plugin = RewardPlugin.from_spec(RewardSpec(name="accuracy", kwargs={"extract": "boxd"}))
    with pytest.raises(RewardError, match="unknown answer extraction policy.*boxed"):
        plugin(prompts=None, completions=["\\boxed{1}"], answer=["1"])


def test_load_reward_module_that_fails_to_import(monkeypatch, tmp_path):
    (tmp_path / "needs_missing_dep.py").write_text("import not_installed_dep_xyz\n")
    (tmp_path / "raises_on_import.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RewardError, match="needs a missing module"):
        load_reward("needs_missing_dep:f")
    with pytest.raises(RewardError, match="RuntimeError: boom"):
        load_reward("raises_on_import:f")


def test_user_plugin_fixture_by_dotted_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    plugin = build_reward_plugins([{"name": "my_reward:brevity", "kwargs": {"max_words": 2}}])[0]
    assert plugin.name == "brevity"
    assert plugin(prompts=["p", "p"], completions=["a b", [{"role": "assistant", "content": "a b c d"}]]) == [
        1.0,
        0.5,
    ]


# --------------------------------------------------------------------------------------------------
# RewardSpec and build_reward_plugins
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, alias",
    [
        ("accuracy", "accuracy"),  # built-in name
        ("my_pkg.mod:my_reward", "my_reward"),  # ':' path
        ("my_pkg.mod.my_reward", "my_reward"),  # '.' path
    ],
)
def test_spec_default_alias(name, alias):
    assert RewardSpec(name).alias == alias


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "accuracy", "weight": math.nan}, "`weight` must be finite"),  # NaN weight
        ({"name": "accuracy", "weight": "1"}, "`weight` must be a number"),  # string weight
        ({"name": "accuracy", "on_error": "ignore"}, "`on_error` must be one of"),  # bad on_error
        ({"name": ""}, "non-empty `name`"),  # empty name
        ({"name": "accuracy", "kwargs": [1]}, "`kwargs` must be a mapping"),  # kwargs not a dict
        ({"name": "accuracy", "alias": "a/b"}, "without '/'"),  # alias would break metric keys
    ],
)
def test_spec_validation(fields, message):
    with pytest.raises(ConfigError, match=message):
        RewardSpec(**fields)


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "accuracy"}, {"name": "accuracy"}], "both logged as 'accuracy'. Set a distinct `alias`"),
        ([{"name": "accuracy", "wieght": 2}], "unknown key 'wieght'. Did you mean 'weight'"),  # typo'd key
        ([{"weight": 2}], "has no `name`"),  # name missing
        (["accuracy"], "must be a mapping"),  # a bare string instead of an entry
    ],
)
def test_build_reward_plugins_errors(entries, message):
    with pytest.raises(ConfigError, match=message):
        build_reward_plugins(entries)


def test_build_reward_plugins(fake_module):
    plugins = build_reward_plugins(
        [
            {"name": "accuracy", "weight": 2},
            RewardSpec("accuracy", alias="accuracy_again", on_error="skip"),
            {"name": "fake_user_rewards:Counter", "kwargs": {"start": 5}},
        ]
    )
    assert [p.__name__ for p in plugins] == ["accuracy", "accuracy_again", "Counter"]
    assert [p.weight for p in plugins] == [2.0, 1.0, 1.0]
    assert plugins[1].on_error == "skip"
    assert plugins[2].is_stateful and not plugins[2].is_group


# --------------------------------------------------------------------------------------------------
# RewardPlugin: validation
# --------------------------------------------------------------------------------------------------


def _plugin(fn, on_error="raise", name="r"):
    return RewardPlugin(fn, name=name, on_error=on_error)


COMPLETIONS = ["zero", "one", "two"]


@pytest.mark.parametrize(
    "returned, message",
    [
        ([1.0, 2.0], "returned 2 scores for 3 completions"),  # too short
        ([1.0] * 4, "expected 3, got 4"),  # too long
        (1.0, "returned a float"),  # a scalar instead of a list
        ("abc", "returned a str"),  # a string is a sequence, but not of scores
        ([1.0, "x", 2.0], "returned 'x' (str) for row 1"),  # a non-number score
    ],
)
def test_plugin_rejects_bad_output(returned, message):
    plugin = _plugin(lambda completions, **kw: returned, name="badshape")
    with pytest.raises(RewardError, match=re.escape(message)) as info:
        plugin(prompts=None, completions=COMPLETIONS)
    assert "'badshape'" in str(info.value)


@pytest.mark.parametrize(
    "returned, expected",
    [
        ([1, True, None], [1.0, 1.0, None]),  # ints and bools become floats, None stays
        ((0.5, 0.5, 0.5), [0.5, 0.5, 0.5]),  # a tuple is fine
    ],
)
def test_plugin_converts_output(returned, expected):
    assert _plugin(lambda completions, **kw: returned)(prompts=None, completions=COMPLETIONS) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_plugin_non_finite(bad, caplog):
    fn = lambda completions, **kw: [1.0, bad, 0.0]  # noqa: E731
    with pytest.raises(RewardError, match="returned .* for row 1 .*on_error: skip"):
        _plugin(fn)(prompts=None, completions=COMPLETIONS)
    with caplog.at_level(logging.WARNING, logger="posttrain.rewards"):
        assert _plugin(fn, on_error="skip")(prompts=None, completions=COMPLETIONS) == [1.0, None, 0.0]
    assert "row 1" in caplog.text


def test_plugin_rejects_async_reward():
    async def async_reward(completions, **kwargs):
        return [1.0] * len(completions)

    with pytest.raises(RewardError, match="async rewards are not supported"):
        _plugin(async_reward)(prompts=None, completions=COMPLETIONS)


# --------------------------------------------------------------------------------------------------
# RewardPlugin: a reward that raises
# --------------------------------------------------------------------------------------------------


def _fails_on_two(completions, answer, **kwargs):
    # Fails on any completion containing "two"; uses a per-row column so the slicing is exercised.
    return [1.0 / (0 if "two" in c else 1) + float(a) for c, a in zip(completions, answer)]


def test_plugin_raising_names_plugin_row_and_completion():
    plugin = _plugin(_fails_on_two, name="fragile")
    long_text = "two " + "x" * 1000
    with pytest.raises(RewardError) as info:
        plugin(prompts=["p"] * 3, completions=["zero", "one", long_text], answer=[0, 1, 2])
    message = str(info.value)
    assert "'fragile' raised on row 2 of 3" in message
    assert "ZeroDivisionError" in message
    assert "'two xxx" in message and "more chars" in message and len(message) < 1000  # truncated
    assert "on_error: skip" in message
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_plugin_skip_only_failing_rows(caplog):
    plugin = _plugin(_fails_on_two, on_error="skip")
    seen_kwargs = {}

    def spy(completions, **kwargs):
        seen_kwargs.update(kwargs)
        return _fails_on_two(completions, **kwargs)

    plugin.fn = spy
    with caplog.at_level(logging.WARNING, logger="posttrain.rewards"):
        scores = plugin(
            prompts=["p0", "p1", "p2", "p3"],
            completions=["zero", "two", "one", "two again"],
            completion_ids=[[0], [1], [2], [3]],
            answer=[0, 1, 2, 3],
            trainer_state="state object",  # not per-row: passed as is
        )
    assert scores == [1.0, None, 3.0, None]
    assert seen_kwargs["trainer_state"] == "state object"
    assert "row 1" in caplog.text and "row 3" in caplog.text


def test_plugin_batch_only_failure():
    # Raises on any batch larger than one row: no single row is to blame.
    fn = lambda completions, **kw: [1.0] if len(completions) == 1 else 1 / 0  # noqa: E731
    with pytest.raises(RewardError, match="every row succeeded on its own"):
        _plugin(fn)(prompts=None, completions=COMPLETIONS)
    assert _plugin(fn, on_error="skip")(prompts=None, completions=COMPLETIONS) == [1.0, 1.0, 1.0]


def test_plugin_lets_reward_errors_through():
    # A RewardError from the plugin itself is a misconfiguration: never skipped, never re-wrapped.
    def misconfigured(completions, **kwargs):
        raise RewardError("bad cap")

    with pytest.raises(RewardError, match="^bad cap$"):
        _plugin(misconfigured, on_error="skip")(prompts=None, completions=COMPLETIONS)


# --------------------------------------------------------------------------------------------------
# RewardPlugin: group-level and stateful rewards
# --------------------------------------------------------------------------------------------------


def test_group_plugin_receives_group_size():
    plugin = _plugin(_group_mean)
    assert plugin.is_group
    assert plugin(prompts=None, completions=list("abcdef"), group_size=3) == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "without a valid `group_size`"),  # not called through the group hook
        ({"group_size": 0}, "without a valid `group_size`"),  # nonsense size
        ({"group_size": 4}, "not a multiple of group_size=4"),  # 6 rows do not split into groups of 4
    ],
)
def test_group_plugin_group_size_errors(kwargs, message):
    with pytest.raises(RewardError, match=message):
        _plugin(_group_mean)(prompts=None, completions=list("abcdef"), **kwargs)


def test_group_plugin_raising_reports_batch(caplog):
    @group_reward
    def broken(completions, **kwargs):
        raise ValueError("vote failed")

    with pytest.raises(RewardError, match="raised on a batch of 4 completions: ValueError: vote failed"):
        _plugin(broken)(prompts=None, completions=list("abcd"), group_size=2)
    with caplog.at_level(logging.WARNING, logger="posttrain.rewards"):
        assert (
            _plugin(broken, on_error="skip")(prompts=None, completions=list("abcd"), group_size=2)
            == [None] * 4
        )
    assert "vote failed" in caplog.text


def test_stateful_pass_through(fake_module):
    plugin = RewardPlugin.from_spec(RewardSpec("fake_user_rewards:Counter", kwargs={"start": 1}))
    assert plugin.is_stateful
    plugin(prompts=None, completions=["a"])
    assert plugin.state_dict() == {"calls": 2}
    restored = RewardPlugin.from_spec(RewardSpec("fake_user_rewards:Counter"))
    restored.load_state_dict(plugin.state_dict())
    assert restored(prompts=None, completions=["a"]) == [3.0]


def test_stateless_state_dict_is_empty():
    plugin = _plugin(_constant)
    assert plugin.state_dict() == {}
    plugin.load_state_dict({"ignored": 1})  # no-op


def test_plugin_handles_conversational_completions(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    plugin = RewardPlugin(load_reward("my_reward:brevity", max_words=1), name="brevity")
    completions = [
        [{"role": "assistant", "content": "short"}],
        [{"role": "assistant", "content": "not short"}],
    ]
    assert plugin(prompts=None, completions=completions) == [1.0, 0.5]
