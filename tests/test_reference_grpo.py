"""Reference equivalence: GRPO's group advantages and reward combination against TRL 1.16's formula.

pytest tests/test_reference_grpo.py -q

The reference side is written out here from the formula of TRL 1.16 ``GRPOTrainer._generate_and_score_
completions`` with ``multi_objective_aggregation="sum_then_normalize"`` (it does not import posttrain):

    r_i      = nansum_f w_f * r_if, NaN when every r_if is NaN (the row is unscorable)
    mean_g   = mean of the group's non-NaN rewards
    std      = Bessel-corrected std of the non-NaN rewards (of the group, or of the whole batch);
               NaN with fewer than two of them
    A_i      = (r_i - mean_g) / (std_g + 1e-4)      scale "group"
             = (r_i - mean_g) / (std_all + 1e-4)    scale "batch"
             = r_i - mean_g                         scale "none"
    A_i      = 0 wherever the above is NaN (unscorable rows, groups without two scorable rows)

Inputs are hypothesis-generated: group sizes 1..8, 1..6 groups, finite values in [-10, 10] with
ties and NaNs mixed in.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.advantages import combined_rewards, group_advantages

NAN = float("nan")
EPS = 1e-4
SETTINGS = settings(max_examples=150, deadline=None, database=None)

FINITE = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
# Values with ties (a few repeated numbers) and NaNs (unscorable completions) mixed in.
VALUES = st.one_of(
    FINITE,
    st.sampled_from([0.0, 1.0, -1.0, 0.5]),
    st.just(NAN),
)


@st.composite
def batches(draw, values=VALUES, finite=FINITE):
    """(rewards, group_size): 1..6 groups of 1..8 rewards each, some whole groups NaN or tied."""
    group_size = draw(st.integers(1, 8))
    n_groups = draw(st.integers(1, 6))
    rewards: list[float] = []
    for _ in range(n_groups):
        kind = draw(st.sampled_from(["mixed", "tied", "all_nan", "one_scorable"]))
        if kind == "mixed":
            rewards += draw(st.lists(values, min_size=group_size, max_size=group_size))
        elif kind == "tied":
            rewards += [draw(finite)] * group_size
        elif kind == "all_nan":
            rewards += [NAN] * group_size
        else:
            group = [NAN] * group_size
            group[draw(st.integers(0, group_size - 1))] = draw(finite)
            rewards += group
    return rewards, group_size


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else NAN


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return NAN  # TRL's nanstd: Bessel's correction is undefined with fewer than two values
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def reference_advantages(rewards: list[float], group_size: int, scale: str) -> list[float]:
    scorable = [r for r in rewards if not math.isnan(r)]
    batch_std = _std(scorable)
    out = []
    for start in range(0, len(rewards), group_size):
        group = rewards[start : start + group_size]
        valid = [r for r in group if not math.isnan(r)]
        mean, std = _mean(valid), _std(valid)
        for r in group:
            a = r - mean
            if scale == "group":
                a = a / (std + EPS)
            elif scale == "batch":
                a = a / (batch_std + EPS)
            out.append(0.0 if math.isnan(a) else a)
    return out


def reference_combined(rows: list[list[float]], weights: list[float]) -> list[float]:
    out = []
    for row in rows:
        terms = [w * r for w, r in zip(weights, row) if not math.isnan(r)]
        out.append(sum(terms) if terms else NAN)
    return out


def assert_close(actual: list[float], expected: list[float], atol: float) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        if math.isnan(e):
            assert math.isnan(a), (i, actual, expected)
        else:
            assert abs(a - e) <= atol, (i, a, e, actual, expected)


@SETTINGS
@given(batch=batches(), scale=st.sampled_from(["group", "batch", "none"]))
def test_group_advantages_match_trl_formula(batch, scale):
    """TRL 1.16 sum_then_normalize: group mean, Bessel std (group or batch), +1e-4, NaN rows take no
    part and get advantage 0, groups with fewer than two scorable rows get 0 (float64, atol 1e-5)."""
    rewards, group_size = batch
    actual = group_advantages(torch.tensor(rewards, dtype=torch.float64), group_size, scale).tolist()
    expected = reference_advantages(rewards, group_size, scale)
    assert_close(actual, expected, atol=1e-5)
    assert all(math.isfinite(a) for a in actual)
    for a, r in zip(actual, rewards):
        if math.isnan(r):
            assert a == 0.0


GRID = st.integers(-40, 40).map(lambda k: k / 4)


@SETTINGS
@given(
    batch=batches(values=st.one_of(GRID, st.just(NAN)), finite=GRID),
    scale=st.sampled_from(["group", "batch", "none"]),
)
def test_group_advantages_float32_match_trl_formula(batch, scale):
    """The same TRL formula on float32 tensors (the trainer's dtype). Rewards lie on a 0.25 grid so that
    float32 sums are exact; the reference runs in float64, the tolerance is 1e-4 (float32 rounding of the
    mean, divided by a group std that can be as small as ~0.09). Off the grid, a tied float32 group can
    get advantages of ~1e-3 instead of 0 (its float32 mean is 1 ulp off and its std ~1e-7); TRL's own
    code does the same, so that is float32 rounding, not a difference from the reference."""
    rewards, group_size = batch
    actual = group_advantages(torch.tensor(rewards, dtype=torch.float32), group_size, scale).tolist()
    assert_close(actual, reference_advantages(rewards, group_size, scale), atol=1e-4)


@SETTINGS
@given(
    data=st.data(),
    n_rows=st.integers(1, 24),
    n_funcs=st.integers(1, 4),
)
def test_combined_rewards_match_trl_formula(data, n_rows, n_funcs):
    """TRL 1.16 sum_then_normalize: r_i = nansum_f w_f r_if, and NaN exactly where every r_if is NaN."""
    rows = data.draw(
        st.lists(
            st.one_of(
                st.lists(VALUES, min_size=n_funcs, max_size=n_funcs),
                st.just([NAN] * n_funcs),  # unscorable: every reward function returned None
            ),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    weights = data.draw(
        st.lists(
            st.one_of(st.floats(-2, 2, allow_nan=False), st.sampled_from([0.0, 1.0])),
            min_size=n_funcs,
            max_size=n_funcs,
        )
    )
    actual = combined_rewards(
        torch.tensor(rows, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)
    ).tolist()
    assert_close(actual, reference_combined(rows, weights), atol=1e-9)


@SETTINGS
@given(data=st.data(), group_size=st.integers(1, 8), n_groups=st.integers(1, 5), n_funcs=st.integers(1, 3))
def test_combine_then_normalise_matches_trl_pipeline(data, group_size, n_groups, n_funcs):
    """TRL 1.16's whole reward -> advantage path: combine (N, F) rewards by weighted nansum (NaN rows
    unscorable), then normalise per group; posttrain's two functions chained give the same advantages."""
    n = group_size * n_groups
    rows = data.draw(st.lists(st.lists(VALUES, min_size=n_funcs, max_size=n_funcs), min_size=n, max_size=n))
    weights = data.draw(st.lists(st.floats(0, 2, allow_nan=False), min_size=n_funcs, max_size=n_funcs))
    scale = data.draw(st.sampled_from(["group", "batch", "none"]))
    combined = combined_rewards(
        torch.tensor(rows, dtype=torch.float64), torch.tensor(weights, dtype=torch.float64)
    )
    actual = group_advantages(combined, group_size, scale).tolist()
    expected = reference_advantages(reference_combined(rows, weights), group_size, scale)
    assert_close(actual, expected, atol=1e-5)
