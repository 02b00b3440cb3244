"""Reference equivalence: the importance-sampling correction (posttrain/rollout/importance.py).

pytest tests/test_reference_importance.py -q

TRL 1.16's vLLM correction (``GRPOTrainer._generate_and_score_completions``), restated per token in plain
Python: d_t = (logp_train - logp_sampler) * mask_t, a NaN sampler log-prob counting as d_t = 0;
sequence modes sum d over the sequence; the ratio is exp(d); ``*_truncate`` clamps it into [clip_min,
clip_max], ``*_mask`` sets it to 0 outside. posttrain multiplies the advantage by the ratio instead of the
loss, which is the same for every clipped-ratio loss because the weight is >= 0 (checked below), and
reports the weight's mean over the tokens that enter the loss.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posttrain.rollout.importance import MODES, importance_weights, masked_sum, token_advantages

logp = st.floats(-6.0, 0.0)


@st.composite
def batches(draw):
    b, t = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    train = [[draw(logp) for _ in range(t)] for _ in range(b)]
    sampler = [[draw(st.one_of(logp, st.just(math.nan))) for _ in range(t)] for _ in range(b)]
    mask = [[draw(st.integers(0, 1)) for _ in range(t)] for _ in range(b)]
    return train, sampler, mask


def reference_weights(train, sampler, mask, mode, lo, hi):
    """One weight per token (token modes) or per sequence (sequence modes), as TRL computes the ratio."""
    lo_, hi_ = (-math.inf if lo is None else lo), (math.inf if hi is None else hi)

    def finish(ratio):
        if mode.endswith("truncate"):
            return min(max(ratio, lo_), hi_)
        return 0.0 if ratio < lo_ or ratio > hi_ else ratio

    out = []
    for tr, sa, ma in zip(train, sampler, mask):
        diffs = [0.0 if math.isnan(s) else (a - s) * m for a, s, m in zip(tr, sa, ma)]
        if mode.startswith("sequence"):
            out.append([finish(math.exp(sum(diffs)))])
        else:
            out.append([finish(math.exp(d)) for d in diffs])
    return out


@settings(max_examples=200, deadline=None, database=None)
@given(
    data=batches(),
    mode=st.sampled_from(MODES),
    lo=st.sampled_from([None, 0.1, 0.5]),
    hi=st.sampled_from([None, 1.5, 3.0]),
)
def test_weights_are_trls_ratio(data, mode, lo, hi):
    """importance_weights equals TRL's per-token / per-sequence ratio, truncated or masked."""
    train, sampler, mask = data
    got = importance_weights(
        torch.tensor(train, dtype=torch.float64),
        torch.tensor(sampler, dtype=torch.float64),
        torch.tensor(mask, dtype=torch.float64),
        mode,
        lo,
        hi,
    )
    expected = torch.tensor(reference_weights(train, sampler, mask, mode, lo, hi), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@settings(max_examples=200, deadline=None, database=None)
@given(
    ratio=st.floats(0.05, 5.0),
    advantage=st.floats(-3.0, 3.0),
    weight=st.floats(0.0, 4.0),
    eps_low=st.sampled_from([0.2]),
    eps_high=st.sampled_from([0.2, 0.28]),
)
def test_weighting_the_advantage_is_weighting_the_clipped_loss(ratio, advantage, weight, eps_low, eps_high):
    """-min(r (wA), clip(r) (wA)) == w * -min(r A, clip(r) A) for w >= 0: TRL multiplies the per-token loss by
    the ratio, posttrain the advantage, and the two agree (sign-dependent clipping sees the same sign)."""
    clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
    trl = weight * -min(ratio * advantage, clipped * advantage)
    a = token_advantages(
        torch.tensor([advantage], dtype=torch.float64), torch.tensor([[weight]], dtype=torch.float64)
    )
    ours = -min(ratio * a.item(), clipped * a.item())
    assert math.isclose(ours, trl, rel_tol=1e-12, abs_tol=1e-12)


@settings(max_examples=100, deadline=None, database=None)
@given(data=batches(), mode=st.sampled_from(MODES))
def test_the_reported_mean_is_over_loss_tokens(data, mode):
    """rollout/is_weight_mean: the mean weight over tokens that enter the loss (a sequence weight counts once
    per sequence that has any), never over padding or inserted tokens."""
    train, sampler, mask = data
    w = importance_weights(
        torch.tensor(train, dtype=torch.float64), torch.tensor(sampler, dtype=torch.float64),
        torch.tensor(mask, dtype=torch.float64), mode, None, 3.0,
    )  # fmt: skip
    total, count = masked_sum(w, torch.tensor(mask, dtype=torch.float64))
    if mode.startswith("sequence"):
        counted = [row[0] for row, m in zip(w.tolist(), mask) if any(m)]
    else:
        counted = [x for row, m in zip(w.tolist(), mask) for x, keep in zip(row, m) if keep]
    assert count.item() == len(counted)
    assert math.isclose(total.item(), sum(counted), rel_tol=1e-9, abs_tol=1e-12)
