"""GRPO step time and MFU on one GPU, for randomly initialised models shaped like Qwen2.5-0.5B and -1.5B.

    python bench/gpu/step.py --out bench/results/gpu_step.json     # both models (estimate: 1-2 min on an H100)
    python bench/gpu/step.py --models 1.5b --steps 3 --completion_len 256
    python bench/gpu/step.py --cpu-smoke --out /tmp/smoke.json    # the same code on CPU, tiny models, seconds

What one step is (``grpo_step``), timed phase by phase with ``torch.cuda.synchronize`` around each:

1. **generation**: ``model.generate`` (transformers, sampling at temperature 1, no top-k/top-p) of
   ``--generations`` (8) completions for each of ``--prompts`` (8) prompts of ``--prompt_len`` (128)
   random token ids; ``min_new_tokens = max_new_tokens = --completion_len`` (512) and an end-of-sequence
   id that the min-length rule masks at every position, so every completion has exactly that length.
2. **log-probs**: no-grad forward passes that give each completion token's log-probability under the
   reference model (a frozen copy of the initial policy, for the KL term, ``--beta`` 0.04) and under
   the rollout policy ("old" log-probs of the clipped ratio). TRL runs the first only with beta > 0 and
   the second only when a generation batch is reused (``num_iterations`` or ``steps_per_generation``
   > 1): with the shipped recipes' beta 0 this phase is not run at all, so subtract it from ``step_s``.
3. **update**: the GRPO objective on the whole batch, in micro-batches of ``--micro_batch`` (8)
   sequences with gradient accumulation: group-normalised advantages of a random reward per completion
   (a random model writes nothing to verify; scoring is not timed), per-token ratio to the old
   log-probs clipped to [1 - 0.2, 1 + 0.2], k3 KL estimate to the reference times beta, token-level
   mean over the batch (TRL's default ``dapo`` aggregation); backward, gradient clipping at 1.0 and
   one fused AdamW step.

As ``posttrain`` does (``posttrain.models.resolve_dtype``), the weights are fp32 masters and the compute
is bf16 through autocast (``--weights bf16`` stores them in bf16 instead: half the memory, but AdamW then
drops updates below bf16's resolution); attention is PyTorch SDPA, no gradient checkpointing. No weights, tokenizer or
network are needed: the configs are written below, the prompts are random ids, the reward is random.
One warm-up step (``--warmup``) precedes ``--steps`` (2) timed steps; medians are reported. The largest
model runs first, and once ``--budget_s`` (170 s from the start; bench/gpu/check.sh gives the script 200 s)
is near, no further timed step beyond each model's first, and no model that would not finish, is started
(``cut_by_budget`` / ``not_run`` in the JSON).

**Model shapes**: the ``config.json`` of ``Qwen/Qwen2.5-0.5B`` and ``Qwen/Qwen2.5-1.5B`` on the Hugging
Face Hub (the Instruct variants have the same shapes): hidden 896 / 1536,
intermediate 4864 / 8960, 24 / 28 layers, 14 / 12 query heads and 2 KV heads, vocabulary 151936, tied
embeddings, RoPE theta 1e6, RMSNorm eps 1e-6, q/k/v biases (Qwen2's attention has them). Built this
way they have 494,032,768 and 1,543,714,304 parameters, the model cards' 0.49B and 1.54B.

**FLOPs of the update** (``update_flops``; the model FLOPs of PaLM's MFU, appendix B, arXiv 2204.02311):
with B sequences of S = prompt_len + completion_len tokens, T = B x S tokens through the model, N the
parameters, V x d the (tied) embedding matrix, L layers of width d::

    6 (N - V d) T              every non-embedding weight, forward (2) + backward (4), on all T tokens
  + 6 V d B (C + 1)            the output projection, on the C + 1 positions whose logits are kept (TRL's
                               logits_to_keep); the input embedding lookup costs no FLOPs
  + 12 L d S T                 attention scores and weighted sum (2 x 2 S d per token and layer, x3 for
                               forward + backward), counted over the full S x S matrix as PaLM does

No recomputation is counted (there is none: no gradient checkpointing). MFU = those FLOPs / (median
update time x the card's dense bf16 peak): H100 SXM and H200 989.4 TFLOP/s, H100 PCIe 756.5, H100 NVL
835.5, A100 312 (NVIDIA's datasheets; their sparsity figures halved); any other card: MFU null
(``--peak_tflops`` sets it). The simpler 6 N T is recorded alongside (``flops_6nt``).

Output: one line per model (``model=<name> gpu=... mfu_update=...``), then the headline as the LAST line,
for the largest model that ran: ``gpu=<name> mfu_update=<x> step_s=<x> gen_tok_s=<x> peak_gib=<x>``
(MFU as a fraction of peak; step_s = the three phases; gen_tok_s = completion tokens per second of
generation; peak_gib = ``torch.cuda.max_memory_allocated`` over the steps). ``--out FILE`` writes everything
measured as JSON: every step's phase times, loss, gradient norm and ``probe_changed_fraction`` (the share
of the first layer's query weights that the optimizer step changed: bf16 weights round away updates
below half their spacing, so at lr 1e-6 most entries do not move), the FLOP terms, MFU of the update and
of the log-prob forwards. Without CUDA (and without ``--cpu-smoke``) it prints a SKIP reason and
``gpu=none mfu_update=null step_s=null gen_tok_s=null peak_gib=null``, writes ``{"skipped": true, ...}``
and exits 0. It imports only torch and transformers (not posttrain), so ``python bench/gpu/step.py`` runs
from the repository root as it is. Exit status 1 when a model failed with anything but running out of
memory (its traceback is in the JSON).
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "bench" / "results" / "gpu_step.json"

# Published shapes (see the module docstring for the source).
QWEN25_COMMON: dict[str, Any] = {
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1_000_000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
}
MODELS: dict[str, dict[str, Any]] = {
    "0.5b": {
        "name": "Qwen2.5-0.5B (random init)",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        **QWEN25_COMMON,
    },
    "1.5b": {
        "name": "Qwen2.5-1.5B (random init)",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        **QWEN25_COMMON,
    },
}
# --cpu-smoke: the same code path on models small enough for a CPU test (two, so that the ordering, the
# headline's choice and the time budget across models run too).
SMOKE_MODELS: dict[str, dict[str, Any]] = {
    "tiny": {
        "name": "tiny (cpu smoke)",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        **{**QWEN25_COMMON, "vocab_size": 1000, "max_position_embeddings": 1024},
    },
    "tinier": {
        "name": "tinier (cpu smoke)",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        **{**QWEN25_COMMON, "vocab_size": 1000, "max_position_embeddings": 1024},
    },
}
SMOKE_SETTINGS = {"completion_len": 8, "prompt_len": 16}

# Dense bf16 tensor-core peaks, TFLOP/s (NVIDIA datasheets: the "with sparsity" figure / 2). The first
# entry whose every word occurs in the device name wins, so the specific H100 variants come first.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM5 (torch reports "NVIDIA H100 80GB HBM3")
    ("H200 NVL", 835.5),
    ("H200", 989.4),
    ("A100", 312.0),
]

NULL_HEADLINE = "gpu=none mfu_update=null step_s=null gen_tok_s=null peak_gib=null"


# --------------------------------------------------------------------------------------------------
# Pure helpers (unit-tested on CPU)
# --------------------------------------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a card from its ``torch.cuda.get_device_name()``; None when unknown."""
    name = device_name.upper()
    for key, value in PEAK_BF16_TFLOPS:
        if all(word.upper() in name for word in key.split()):
            return value
    return None


def qwen2_parameters(spec: dict[str, Any]) -> int:
    """Parameters of a Qwen2 model of these shapes (q/k/v biases, tied embeddings counted once)."""
    d, inter, layers = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"]
    kv = spec["num_key_value_heads"] * (d // spec["num_attention_heads"])
    attention = (d * d + d) + 2 * (d * kv + kv) + d * d  # q, k, v with biases; o without
    per_layer = attention + 3 * d * inter + 2 * d  # gate/up/down projections, two RMSNorms
    embeddings = spec["vocab_size"] * d * (1 if spec["tie_word_embeddings"] else 2)
    return layers * per_layer + embeddings + d  # + the final RMSNorm


def update_flops(
    n_params: int, vocab: int, hidden: int, layers: int, batch: int, seq_len: int, logit_positions: int
) -> dict[str, float]:
    """Model FLOPs of one update (forward + backward) over ``batch`` sequences of ``seq_len`` tokens.

    ``n_params`` counts the tied embedding once; ``logit_positions`` per sequence get the output
    projection. Returns each term and the total (see the module docstring).
    """
    tokens = batch * seq_len
    dense = 6.0 * (n_params - vocab * hidden) * tokens
    head = 6.0 * vocab * hidden * batch * logit_positions
    attention = 12.0 * layers * hidden * seq_len * tokens
    return {
        "dense": dense,
        "lm_head": head,
        "attention": attention,
        "total": dense + head + attention,
        "flops_6nt": 6.0 * n_params * tokens,
        "tokens": float(tokens),
    }


def headline(gpu: str, mfu: float | None, step_s: float | None, gen_tok_s: float | None, peak_gib) -> str:
    def fmt(value: float | None) -> str:
        return "null" if value is None or not math.isfinite(value) else f"{value:.3f}"

    name = "_".join(gpu.split()) or "none"
    return (
        f"gpu={name} mfu_update={fmt(mfu)} step_s={fmt(step_s)} gen_tok_s={fmt(gen_tok_s)} "
        f"peak_gib={fmt(peak_gib)}"
    )


def build_config(spec: dict[str, Any]):
    """A ``Qwen2Config`` from one of the shape dicts above (RoPE theta under either transformers API)."""
    from transformers import Qwen2Config

    kwargs = {k: v for k, v in spec.items() if k not in ("name", "rope_theta")}
    kwargs.update(use_sliding_window=False, attention_dropout=0.0, pad_token_id=0)
    theta = spec["rope_theta"]
    try:  # transformers 5: rope settings live in rope_parameters
        return Qwen2Config(**kwargs, rope_parameters={"rope_type": "default", "rope_theta": theta})
    except TypeError:  # older: a plain rope_theta field
        return Qwen2Config(**kwargs, rope_theta=theta)


def group_advantages(rewards, group_size: int, eps: float = 1e-4):
    """GRPO's advantages: each reward minus its group's mean, over the group's standard deviation."""
    grouped = rewards.view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def completion_mask(completions, eos_id: int):
    """1 up to and including the first end-of-sequence token of each row, 0 after it."""
    import torch

    is_eos = completions == eos_id
    after = torch.cumsum(is_eos.int(), dim=1) - is_eos.int()  # eos tokens strictly before this position
    return (after == 0).to(torch.float32)


def token_logprobs(model, sequences, completion_len: int, temperature: float = 1.0):
    """Log-probability of each completion token (the last ``completion_len`` of every row), in fp32.

    Logits are computed only for the positions that predict completion tokens (``logits_to_keep``), as
    TRL does; the log-softmax is taken in fp32 as gather - logsumexp.
    """
    import torch

    logits = model(input_ids=sequences, logits_to_keep=completion_len + 1, use_cache=False).logits
    logits = logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = sequences[:, -completion_len:]
    picked = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def grpo_token_loss(logps, old_logps, ref_logps, advantages, epsilon: float, beta: float):
    """Per-token GRPO loss: clipped surrogate on the ratio to the old policy + beta x k3 KL to the reference."""
    import torch

    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + epsilon) * adv)
    loss = -surrogate
    if beta:
        delta = ref_logps - logps
        loss = loss + beta * (torch.exp(delta) - delta - 1)
    return loss


# --------------------------------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------------------------------


class Clock:
    """Wall-clock phases with the device synchronised at every boundary (CUDA kernels are asynchronous)."""

    def __init__(self, device):
        self.device = device

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def now(self) -> float:
        self.sync()
        return time.perf_counter()


def build_model(spec: dict[str, Any], device, dtype):
    """The randomly initialised causal LM (transformers' own init), on ``device`` in ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = build_config(spec)
    try:
        with torch.device(device):  # initialise on the GPU directly: seconds less than on the CPU
            model = AutoModelForCausalLM.from_config(config)
    except Exception:  # any trouble building on the device: build on the CPU, then move
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(device=device, dtype=dtype)
    model.config.use_cache = True
    return model


def grpo_step(model, ref_model, optimizer, prompts, args, clock: Clock, step_seed: int) -> dict[str, Any]:
    """One GRPO step on ``prompts`` (P, prompt_len); returns phase times and what the update computed."""
    import torch
    from transformers import GenerationConfig

    device = prompts.device
    n_gen, c_len = args.generations, args.completion_len
    eos_id = model.config.vocab_size - 1  # never sampled: the min-length rule masks it at every position
    gen_config = GenerationConfig(
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=c_len,
        min_new_tokens=c_len,
        eos_token_id=eos_id,
        pad_token_id=0,
    )
    batch = prompts.repeat_interleave(n_gen, dim=0)  # (B, prompt_len), a prompt's group consecutive
    n_rows = batch.shape[0]

    autocast = functools.partial(
        torch.autocast, device.type, dtype=torch.bfloat16, enabled=getattr(args, "autocast", False)
    )

    # 1. generation
    torch.manual_seed(step_seed)
    model.eval()
    t0 = clock.now()
    with torch.no_grad(), autocast():
        sequences = model.generate(
            input_ids=batch, attention_mask=torch.ones_like(batch), generation_config=gen_config
        )
    t1 = clock.now()
    completions = sequences[:, batch.shape[1] :]
    if completions.shape != (n_rows, c_len):
        raise RuntimeError(
            f"generation returned completions of shape {tuple(completions.shape)}, not {(n_rows, c_len)}"
        )
    mask = completion_mask(completions, eos_id)

    # 2. reference and old log-probs
    micro = args.micro_batch
    with torch.no_grad(), autocast():
        old_logps = torch.cat(
            [token_logprobs(model, sequences[i : i + micro], c_len) for i in range(0, n_rows, micro)]
        )
        if args.beta:
            ref_logps = torch.cat(
                [token_logprobs(ref_model, sequences[i : i + micro], c_len) for i in range(0, n_rows, micro)]
            )
        else:
            ref_logps = None
    t2 = clock.now()

    # 3. update
    generator = torch.Generator().manual_seed(step_seed)
    rewards = torch.rand(n_rows, generator=generator).to(device)
    advantages = group_advantages(rewards, n_gen)
    probe = _probe_param(model)
    before = probe.detach().clone()
    t_update = clock.now()  # the reward draw and the probe copy are not part of the update
    model.train()
    optimizer.zero_grad(set_to_none=True)
    n_tokens = mask.sum().clamp(min=1.0)  # the dapo normaliser: completion tokens of the whole batch
    losses = []
    for i in range(0, n_rows, micro):
        rows = slice(i, i + micro)
        with autocast():
            logps = token_logprobs(model, sequences[rows], c_len)
        ref = ref_logps[rows].float() if ref_logps is not None else None
        per_token = grpo_token_loss(
            logps.float(), old_logps[rows].float(), ref, advantages[rows], args.epsilon, args.beta
        )
        loss = (per_token * mask[rows]).sum() / n_tokens
        loss.backward()
        losses.append(loss.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    optimizer.step()
    t3 = clock.now()
    changed = (probe.detach() != before).float().mean()
    return {
        "gen_s": t1 - t0,
        "logprobs_s": t2 - t1,
        "update_s": t3 - t_update,
        "step_s": (t1 - t0) + (t2 - t1) + (t3 - t_update),
        "loss": float(torch.stack(losses).sum()),
        "grad_norm": float(grad_norm),
        "probe_changed_fraction": float(changed),
        "completion_tokens": int(mask.sum()),
        "sequence_len": int(sequences.shape[1]),
    }


def _probe_param(model):
    """A weight matrix to watch for change over the optimizer step (the first layer's query projection)."""
    for name, param in model.named_parameters():
        if name.endswith("layers.0.self_attn.q_proj.weight"):
            return param
    return next(model.parameters())


def run_model(key: str, spec: dict[str, Any], args, device, dtype) -> dict[str, Any]:
    """Build one model, run warm-up + timed steps, return everything measured for it."""
    import torch

    clock = Clock(device)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    model = build_model(spec, device, dtype)
    ref_model = copy.deepcopy(model).eval().requires_grad_(False) if args.beta else None
    params = list(model.parameters())  # shared (tied) tensors once
    optimizer = torch.optim.AdamW(
        params, lr=args.lr, weight_decay=0.0, **({"fused": True} if device.type == "cuda" else {})
    )
    build_s = clock.now() - start
    if device.type == "cuda":  # the peak of the steps, not of building (an fp32 copy is cast to bf16)
        torch.cuda.reset_peak_memory_stats(device)
    vocab, hidden, layers = spec["vocab_size"], spec["hidden_size"], spec["num_hidden_layers"]
    prompt_gen = torch.Generator().manual_seed(args.seed)
    # Random prompt ids below the end-of-sequence id (vocab - 1): equal lengths, so no padding.
    prompts = torch.randint(1, vocab - 1, (args.prompts, args.prompt_len), generator=prompt_gen).to(device)
    steps = []
    cut = False
    for index in range(args.warmup + args.steps):
        # Beyond the first timed step, a step that would end past the deadline is not started.
        if index > args.warmup and time.perf_counter() + steps[-1]["step_s"] > args.deadline:
            cut = True
            print(
                f"  {key}: stopping after {index - args.warmup} timed step(s): --budget_s reached", flush=True
            )
            break
        record = grpo_step(model, ref_model, optimizer, prompts, args, clock, args.seed + index)
        record["warmup"] = index < args.warmup
        steps.append(record)
        print(
            f"  {key} step {index + 1}/{args.warmup + args.steps}{' (warm-up)' if record['warmup'] else ''}: "
            f"gen {record['gen_s']:.2f} s, log-probs {record['logprobs_s']:.2f} s, "
            f"update {record['update_s']:.2f} s, loss {record['loss']:.4g}, grad norm {record['grad_norm']:.3g}",
            flush=True,
        )
    timed = [s for s in steps if not s["warmup"]]
    n_params = sum(p.numel() for p in params)
    n_rows = args.prompts * args.generations
    seq_len = args.prompt_len + args.completion_len
    flops = update_flops(n_params, vocab, hidden, layers, n_rows, seq_len, args.completion_len + 1)
    med = {k: statistics.median(s[k] for s in timed) for k in ("gen_s", "logprobs_s", "update_s", "step_s")}
    peak = args.peak_tflops
    mfu = flops["total"] / (med["update_s"] * peak * 1e12) if peak else None
    forward_flops = flops["total"] / 3.0  # forward only: a third of forward + backward
    n_forwards = 2 if args.beta else 1
    mfu_logprobs = n_forwards * forward_flops / (med["logprobs_s"] * peak * 1e12) if peak else None
    result = {
        "model": spec["name"],
        "config": {k: v for k, v in spec.items() if k != "name"},
        "parameters": n_params,
        "non_embedding_parameters": n_params - vocab * hidden,
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "build_s": build_s,
        "steps": steps,
        "timed_steps": len(timed),
        "cut_by_budget": cut,
        "median": med,
        "flops_update": flops,
        "update_tflops_per_s": flops["total"] / med["update_s"] / 1e12,
        "mfu_update": mfu,
        "mfu_logprobs": mfu_logprobs,
        "gen_tok_s": n_rows * args.completion_len / med["gen_s"],
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    del model, ref_model, optimizer, params
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="0.5b,1.5b", help=f"comma-separated, from {', '.join(MODELS)}")
    p.add_argument("--steps", type=int, default=2, help="timed steps per model (after --warmup)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (CUDA init, autotuning)")
    p.add_argument("--completion_len", type=int, default=None, help="new tokens per completion (512)")
    p.add_argument("--prompt_len", type=int, default=None, help="random prompt ids per prompt (128)")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--generations", type=int, default=8, help="completions per prompt (the group size)")
    p.add_argument("--micro_batch", type=int, default=8, help="sequences per forward/backward pass")
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient; 0: no reference model")
    p.add_argument("--epsilon", type=float, default=0.2, help="ratio clip")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--weights",
        choices=["fp32", "bf16"],
        default="fp32",
        help="fp32 master weights with bf16 autocast (posttrain's default) or weights stored in bf16",
    )
    p.add_argument(
        "--budget_s",
        type=float,
        default=170.0,
        help="wall time from the start after which no further timed step (beyond each model's first) or "
        "model is started (bench/gpu/check.sh allows the whole script 200 s)",
    )
    p.add_argument(
        "--peak_tflops", type=float, default=None, help="the card's dense bf16 peak (default: looked up)"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON with everything measured")
    p.add_argument(
        "--cpu-smoke",
        "--cpu_smoke",
        dest="cpu_smoke",
        action="store_true",
        help="run the same code on CPU with tiny models (hidden 64 and 32, 2 and 1 layers, vocab 1000, "
        "8 new tokens after 16 prompt ids)",
    )
    args = p.parse_args(argv)
    defaults = SMOKE_SETTINGS if args.cpu_smoke else {"completion_len": 512, "prompt_len": 128}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.prompts < 1 or args.generations < 2 or args.steps < 1 or args.warmup < 0 or args.micro_batch < 1:
        p.error("need --prompts >= 1, --generations >= 2, --steps >= 1, --warmup >= 0, --micro_batch >= 1")
    keys = [k.strip().lower() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in MODELS]
    if unknown and not args.cpu_smoke:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    args.model_keys = list(SMOKE_MODELS) if args.cpu_smoke else keys
    return args


def _versions() -> dict[str, str]:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda": str(torch.version.cuda)}
    try:
        import transformers

        out["transformers"] = transformers.__version__
    except ImportError:
        pass
    return out


def _write(path: str, payload: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.deadline = time.perf_counter() + args.budget_s
    import torch

    settings = {
        k: getattr(args, k)
        for k in (
            "models",
            "steps",
            "warmup",
            "completion_len",
            "prompt_len",
            "prompts",
            "generations",
            "micro_batch",
            "beta",
            "epsilon",
            "lr",
            "max_grad_norm",
            "seed",
            "budget_s",
            "cpu_smoke",
        )
    }
    payload: dict[str, Any] = {"benchmark": "gpu_step", "settings": settings, "versions": _versions()}
    if not args.cpu_smoke and not torch.cuda.is_available():
        reason = "no CUDA device (torch.cuda.is_available() is False); nothing measured"
        print(f"SKIP: {reason}", flush=True)
        _write(args.out, {**payload, "skipped": True, "reason": reason})
        print(NULL_HEADLINE, flush=True)
        return 0

    if args.cpu_smoke:
        device, gpu_name = torch.device("cpu"), "cpu"
        specs = dict(SMOKE_MODELS)
    else:
        device = torch.device("cuda", torch.cuda.current_device())
        gpu_name = torch.cuda.get_device_name(device)
        specs = {k: MODELS[k] for k in args.model_keys}
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = peak_tflops(gpu_name)
    dtype = torch.float32 if args.weights == "fp32" else torch.bfloat16
    args.autocast = device.type == "cuda" and args.weights == "fp32"  # bf16 compute over fp32 masters
    payload.update(
        skipped=False,
        device=device.type,
        gpu=gpu_name,
        peak_bf16_tflops=args.peak_tflops,
        flop_formula="6*(N - V*d)*B*S + 6*V*d*B*(C+1) + 12*L*d*S*B*S",
        models={},
    )
    print(
        f"{gpu_name}: peak bf16 {args.peak_tflops or 'unknown'} TFLOP/s; {args.prompts} prompts x "
        f"{args.generations} completions x {args.completion_len} new tokens (prompts {args.prompt_len}), "
        f"{args.warmup} warm-up + {args.steps} timed steps",
        flush=True,
    )
    failed = False
    last: tuple[float, int, int] | None = None  # median step seconds, parameters, layers of the last model
    # Largest first: the headline model is measured even when --budget_s leaves no time for the others.
    for key in sorted(specs, key=lambda k: qwen2_parameters(specs[k]), reverse=True):
        spec = specs[key]
        if last is not None:
            # Generation (most of a step) scales with the layer count (launch-bound), the rest with the size.
            scale = max(qwen2_parameters(spec) / last[1], spec["num_hidden_layers"] / last[2])
            needed = (args.warmup + 1) * last[0] * scale
            if time.perf_counter() + needed > args.deadline:
                reason = f"not run: about {needed:.0f} s needed, past --budget_s {args.budget_s:.0f}"
                print(f"  {key}: {reason}", flush=True)
                payload["models"][key] = {"model": spec["name"], "error": reason, "not_run": True}
                continue
        try:
            result = run_model(key, spec, args, device, dtype)
            last = (result["median"]["step_s"], result["parameters"], spec["num_hidden_layers"])
        except torch.cuda.OutOfMemoryError as exc:
            result = {"model": spec["name"], "error": f"out of memory: {exc}"}
        except Exception as exc:  # record it, go on to the next model, fail at the end
            failed = True
            result = {
                "model": spec["name"],
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
            print(result["traceback"], file=sys.stderr, flush=True)
        payload["models"][key] = result
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
    payload["models"] = {k: payload["models"][k] for k in specs if k in payload["models"]}  # as asked
    done = {k: r for k, r in payload["models"].items() if "error" not in r}
    for key, result in payload["models"].items():
        if "error" in result:
            print(f"model={key} error={result['error'].splitlines()[0]!r}", flush=True)
            continue
        line = headline(
            gpu_name,
            result["mfu_update"],
            result["median"]["step_s"],
            result["gen_tok_s"],
            result["peak_gib"],
        )
        print(f"model={key} {line}", flush=True)
    if done:
        key = max(done, key=lambda k: done[k]["parameters"])  # the largest model that ran
        best = done[key]
        payload["headline"] = {
            "model": key,
            "mfu_update": best["mfu_update"],
            "step_s": best["median"]["step_s"],
            "gen_tok_s": best["gen_tok_s"],
            "peak_gib": best["peak_gib"],
        }
        final = headline(
            gpu_name, best["mfu_update"], best["median"]["step_s"], best["gen_tok_s"], best["peak_gib"]
        )
    else:
        payload["headline"] = None
        final = headline(gpu_name, None, None, None, None)
    _write(args.out, payload)
    print(final, flush=True)
    return 1 if failed or not done else 0


if __name__ == "__main__":
    sys.exit(main())
