"""CPU checks of the GPU step benchmark (bench/gpu/step.py): its logic end to end, without a GPU.

    pytest tests/test_gpu_step.py -q        # ~10 s on 2 CPU cores

``--cpu-smoke`` runs the benchmark's own code path (generation, reference/old log-probs, the GRPO update,
FLOP count, the time budget, JSON, headline) on two tiny Qwen2-shaped models on CPU. The rest checks what a CPU can check of
the GPU run: the model shapes against the published parameter counts (built on the meta device, no
memory), the FLOP formula by hand, the peak lookup by card name, the GRPO pieces, and the no-CUDA path
(SKIP, null headline, ``"skipped": true``, exit 0). The GPU run itself is ``python bench/gpu/step.py``.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HEADLINE_KEYS = ["gpu", "mfu_update", "step_s", "gen_tok_s", "peak_gib"]


@pytest.fixture
def step(monkeypatch):
    """``bench.gpu.step``, imported from the repository root whatever pytest put on sys.path."""
    monkeypatch.syspath_prepend(str(REPO))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more threads on a busy machine
    yield importlib.import_module("bench.gpu.step")
    torch.set_num_threads(threads)


def parse_line(line: str) -> dict[str, str]:
    pairs = dict(item.split("=", 1) for item in line.split())
    return pairs


def test_cpu_smoke_runs_the_whole_step_and_reports(step, tmp_path, capsys):
    out = tmp_path / "smoke.json"
    assert step.main(["--cpu-smoke", "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    last = parse_line(lines[-1])
    assert list(last) == HEADLINE_KEYS
    assert last["gpu"] == "cpu" and last["mfu_update"] == "null" and last["peak_gib"] == "null"
    assert float(last["step_s"]) > 0 and float(last["gen_tok_s"]) > 0
    assert any(line.startswith("model=tiny gpu=cpu ") for line in lines)
    assert any(line.startswith("model=tinier gpu=cpu ") for line in lines)

    data = json.loads(out.read_text())
    assert data["skipped"] is False and data["device"] == "cpu"
    result = data["models"]["tiny"]
    steps = result["steps"]
    assert [s["warmup"] for s in steps] == [True, False, False]
    for s in steps:
        assert s["gen_s"] > 0 and s["logprobs_s"] > 0 and s["update_s"] > 0
        assert s["step_s"] == pytest.approx(s["gen_s"] + s["logprobs_s"] + s["update_s"])
        # 8 prompts x 8 completions, every completion exactly 8 new tokens (no end-of-sequence reachable).
        assert s["completion_tokens"] == 64 * 8 and s["sequence_len"] == 16 + 8
        assert math.isfinite(s["loss"]) and math.isfinite(s["grad_norm"]) and s["grad_norm"] > 0
    assert result["dtype"] == "float32" and result["parameters"] == 138304  # fp32 masters by default
    # The median step is the median of the timed steps.
    timed = sorted(s["step_s"] for s in steps[1:])
    assert result["median"]["step_s"] == pytest.approx(sum(timed) / 2)
    flops = result["flops_update"]
    assert flops["total"] == pytest.approx(flops["dense"] + flops["lm_head"] + flops["attention"])
    assert flops["tokens"] == 64 * 24
    assert result["mfu_update"] is None and result["peak_gib"] is None
    assert result["gen_tok_s"] == pytest.approx(64 * 8 / result["median"]["gen_s"])
    assert data["headline"]["model"] == "tiny"  # the larger of the two
    assert list(data["models"]) == ["tiny", "tinier"] and "error" not in data["models"]["tinier"]
    assert data["models"]["tinier"]["timed_steps"] == 2 and not result["cut_by_budget"]


def test_the_time_budget_keeps_the_largest_model_and_one_timed_step(step, tmp_path, capsys):
    out = tmp_path / "budget.json"
    assert step.main(["--cpu-smoke", "--steps", "3", "--budget_s", "0", "--out", str(out)]) == 0
    last = parse_line(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["gpu"] == "cpu" and float(last["step_s"]) > 0
    data = json.loads(out.read_text())
    tiny, tinier = data["models"]["tiny"], data["models"]["tinier"]
    assert tiny["timed_steps"] == 1 and tiny["cut_by_budget"]  # warm-up + the first timed step, no more
    assert tinier["not_run"] and "budget" in tinier["error"]  # not an error of the run: exit status 0
    assert data["headline"]["model"] == "tiny"


def test_without_cuda_it_skips_with_a_null_headline(step, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "skip.json"
    assert step.main(["--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("SKIP: ")
    assert lines[-1] == "gpu=none mfu_update=null step_s=null gen_tok_s=null peak_gib=null"
    data = json.loads(out.read_text())
    assert data["skipped"] is True and "CUDA" in data["reason"]


@pytest.mark.parametrize(
    "key, total, non_embedding",
    # The model cards: Qwen2.5-0.5B 0.49B (0.36B non-embedding), Qwen2.5-1.5B 1.54B (1.31B).
    [("0.5b", 0.49e9, 0.36e9), ("1.5b", 1.54e9, 1.31e9)],
)
def test_model_shapes_match_the_published_parameter_counts(step, key, total, non_embedding):
    from transformers import AutoModelForCausalLM

    spec = step.MODELS[key]
    config = step.build_config(spec)
    with torch.device("meta"):  # shapes only, no memory
        model = AutoModelForCausalLM.from_config(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == step.qwen2_parameters(spec)  # the analytic count the budget's estimates use
    assert n == pytest.approx(total, abs=0.005e9)
    assert n - spec["vocab_size"] * spec["hidden_size"] == pytest.approx(non_embedding, abs=0.005e9)
    assert model.config.tie_word_embeddings and model.config.vocab_size == 151936
    theta = getattr(model.config, "rope_parameters", None) or {"rope_theta": model.config.rope_theta}
    assert theta["rope_theta"] == 1e6


def test_update_flops_by_hand(step):
    # N = 1000 parameters, V x d = 10 x 4 = 40 embedding, 2 layers, 3 sequences of 5 tokens, 2 logit positions.
    flops = step.update_flops(1000, vocab=10, hidden=4, layers=2, batch=3, seq_len=5, logit_positions=2)
    assert flops["tokens"] == 15
    assert flops["dense"] == 6 * 960 * 15
    assert flops["lm_head"] == 6 * 40 * 3 * 2
    assert flops["attention"] == 12 * 2 * 4 * 5 * 15
    assert flops["total"] == 6 * 960 * 15 + 6 * 40 * 6 + 12 * 2 * 4 * 5 * 15
    assert flops["flops_6nt"] == 6 * 1000 * 15


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("Tesla T4", None),
    ],
)
def test_peak_lookup_by_card_name(step, name, peak):
    assert step.peak_tflops(name) == peak


def test_headline_format(step):
    line = step.headline("NVIDIA H100 80GB HBM3", 0.41234, 12.5, 3000.0, 20.25)
    assert (
        line == "gpu=NVIDIA_H100_80GB_HBM3 mfu_update=0.412 step_s=12.500 gen_tok_s=3000.000 peak_gib=20.250"
    )
    assert step.headline("none", None, None, None, None) == step.NULL_HEADLINE


def test_grpo_pieces(step):
    # Advantages: zero mean and unit (sample) std within each group.
    adv = step.group_advantages(torch.tensor([0.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0]), 4)
    assert adv[:4].sum().abs() < 1e-6 and adv[:4].std().item() == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(adv[4:], torch.zeros(4))  # a unanimous group has nothing to learn
    # The mask keeps the first end-of-sequence token and drops what follows.
    mask = step.completion_mask(torch.tensor([[5, 9, 6, 9], [5, 6, 7, 8]]), eos_id=9)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    # At ratio 1 without KL the loss is -advantage per token; beyond the clip, the clipped value.
    zeros = torch.zeros(2, 3)
    loss = step.grpo_token_loss(zeros, zeros, None, torch.tensor([1.0, -2.0]), 0.2, 0.0)
    assert loss.tolist() == [[-1.0] * 3, [2.0] * 3]
    high = torch.full((1, 1), math.log(2.0))  # ratio 2: clipped to 1.2 for a positive advantage
    clipped = step.grpo_token_loss(high, torch.zeros(1, 1), None, torch.tensor([1.0]), 0.2, 0.0)
    assert clipped.item() == pytest.approx(-1.2)
    # k3 KL: exp(ref - logp) - (ref - logp) - 1, zero when equal, positive otherwise.
    kl = step.grpo_token_loss(zeros[:1], zeros[:1], torch.full((1, 3), -1.0), torch.zeros(1), 0.2, 1.0)
    assert kl[0, 0].item() == pytest.approx(math.exp(-1) + 1 - 1)


def test_token_logprobs_match_a_direct_log_softmax(step):
    torch.manual_seed(0)
    model = step.build_model(step.SMOKE_MODELS["tiny"], torch.device("cpu"), torch.float32)
    seqs = torch.randint(1, 999, (2, 7))
    got = step.token_logprobs(model, seqs, completion_len=3)
    logp = torch.log_softmax(model(input_ids=seqs).logits.float(), -1)
    want = logp[:, 3:6].gather(-1, seqs[:, 4:7, None]).squeeze(-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
