"""Where one GRPO update's time goes, and how far it is from what the CPU can compute.

    python bench/update_profile.py                         # the demo's batch and 256-token completions
    python bench/update_profile.py --model /tmp/tiny --repeats 1 --lengths 8 --data.size 16   # smoke

One generation batch of the recipe (quickstart: 4 prompts x 8 completions) is generated once by bare
``trl.GRPOTrainer``; for the long setting its completions are replaced by random tokens of
``length/2 .. length`` tokens (the 135M model answers chain_sum in a few tokens, so real 256-token
completions would need another task; the update's cost depends on the shapes, not on the text). The
same batch then goes through one update (``compute_loss`` -> backward -> optimizer step) per variant,
the variants alternating, ``--repeats`` times each after one warm-up:

- ``trl``: bare ``GRPOTrainer``, as TRL computes it;
- one posttrain switch at a time (posttrain/update.py): ``compact``, ``trim``, ``buckets2``, ``share``
  (with trim), ``fused``; then ``posttrain`` (the defaults: all on);
- ``trl+gc``: TRL with gradient checkpointing, TRL's own default (posttrain's default is off);
- ``posttrain-fp32`` when the recipe runs in bf16 (and the reverse).

The phases of ``trl``, ``trl+gc`` and ``posttrain`` are timed by wrapping the backbone's forward, TRL's chunked
LM-head log-prob function (forward and backward), the backward pass, the decoder layers while
recomputed (gradient checkpointing) and the optimizer step; "other" is the rest (loss maths, masks).

**The ceiling**: the model FLOPs the batch needs (real tokens only, no padding, no recomputation; PaLM's
accounting, arXiv 2204.02311 app. B: 6 (N - V d) per token through the body, 6 V d per completion token
through the head, 12 L d S per token for attention), every row with its own prompt as TRL computes it,
over the GEMM throughput measured here in the same run and dtype (the best of a few matrix products the
size of the model's). ``update_over_ceiling`` = update time / that ceiling. posttrain's shared-prompt
path needs fewer FLOPs than that count (each distinct prompt once); ``posttrain_over_own_ceiling``
measures it against its own FLOPs.

Writes ``bench/results/update_profile.json``; the last line:
``update_s_trl=<x> update_s_posttrain=<x> speedup=<x> update_share_padding=<x> update_over_ceiling=<x>``
for the demo batch.
"""

from __future__ import annotations

import argparse
import copy
import gc
import logging
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # also runnable as `python bench/update_profile.py`

import torch  # noqa: E402

from bench.common import (  # noqa: E402
    accuracy,
    add_common_args,
    environment,
    headline,
    recipe_overrides,
    setup_logging,
    write_json,
)

logger = logging.getLogger("bench.update_profile")

PHASES = ("forward", "head_forward", "backward", "head_backward", "recompute", "optimizer", "other")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser, "update_profile")
    parser.add_argument("--repeats", type=int, default=3, help="timed updates per variant (default 3)")
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[0, 256],
        help="completion lengths: 0 = the recipe's real generations, N = random completions of N/2..N tokens",
    )  # fmt: skip
    parser.add_argument(
        "--long_variants", nargs="+", default=["trl", "compact", "share", "posttrain"],
        help="the variants measured on the long settings (default: a subset; every variant on the demo batch)",
    )  # fmt: skip
    parser.add_argument(
        "--variants", nargs="+", default=None, help="measure only these variants (all settings)"
    )
    return parser.parse_known_args(argv)


# ----------------------------------------------------------------------------------------- the ceiling
def gemm_peak_flops(dtype: torch.dtype, hidden: int, intermediate: int, seconds: float = 1.0) -> float:
    """The best FLOP/s of matrix products shaped like the model's (tokens x hidden x intermediate) and a
    square one, in ``dtype``: what this CPU can compute, measured now."""
    best = 0.0
    shapes = [(4096, hidden, intermediate), (4096, intermediate, hidden), (2048, 2048, 2048)]
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.mm(a, b)  # warm-up
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / len(shapes):
            torch.mm(a, b)
            count += 1
        best = max(best, 2.0 * m * k * n * count / (time.perf_counter() - start))
    return best


def model_flops(config, n_params: int, prompt_lengths, completion_lengths) -> dict[str, float]:
    """Model FLOPs of one update over the real tokens (see the module docstring)."""
    vocab, hidden, layers = config.vocab_size, config.hidden_size, config.num_hidden_layers
    head_params = vocab * hidden
    seq = [p + c for p, c in zip(prompt_lengths, completion_lengths) if c > 0]  # masked rows train nothing
    tokens = float(sum(seq))
    completion = float(sum(c for c in completion_lengths if c > 0))
    dense = 6.0 * (n_params - head_params) * tokens
    head = 6.0 * head_params * completion
    attention = 12.0 * layers * hidden * float(sum(s * s for s in seq))
    return {"dense": dense, "lm_head": head, "attention": attention, "total": dense + head + attention}


# ----------------------------------------------------------------------------------------- phase timing
class PhaseClock:
    """Seconds per phase of one update, from wrappers around the pieces TRL calls."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.in_backward = False

    def timed(self, phase: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start

        return wrapper


@contextmanager
def instrument(trainer, clock: PhaseClock):
    """Wrap the backbone, TRL's chunked log-prob function, backward and the decoder layers."""
    from trl.kernels import chunked_logprob

    fn = chunked_logprob.ChunkedLogProbFunction
    saved_fn = (fn.__dict__["forward"], fn.__dict__["backward"])
    body = trainer.model.get_decoder() if hasattr(trainer.model, "get_decoder") else trainer.model.model
    saved_body = body.forward
    fn.forward = staticmethod(clock.timed("head_forward", saved_fn[0].__func__))
    fn.backward = staticmethod(clock.timed("head_backward", saved_fn[1].__func__))

    def body_forward(*args, **kwargs):
        if clock.in_backward:
            return saved_body(*args, **kwargs)
        return clock.timed("forward", saved_body)(*args, **kwargs)

    body.forward = body_forward
    layers = list(getattr(body, "layers", []))
    saved_layers = [layer.forward for layer in layers]
    for layer, forward in zip(layers, saved_layers):

        def layer_forward(*args, _forward=forward, **kwargs):
            if clock.in_backward:  # gradient checkpointing runs the layer again
                return clock.timed("recompute", _forward)(*args, **kwargs)
            return _forward(*args, **kwargs)

        layer.forward = layer_forward
    try:
        yield
    finally:
        fn.forward, fn.backward = saved_fn
        body.forward = saved_body
        for layer, forward in zip(layers, saved_layers):
            layer.forward = forward


def one_update(trainer, inputs, clock: PhaseClock | None = None) -> float:
    """compute_loss -> backward -> optimizer step, as the Trainer's step does it; seconds."""
    model = trainer.model
    model.train()
    start = time.perf_counter()
    loss = trainer.compute_loss(model, inputs)
    if clock is not None:
        clock.in_backward = True
        back = time.perf_counter()
    trainer.accelerator.backward(loss)
    if clock is not None:
        clock.in_backward = False
        clock.seconds["backward"] += time.perf_counter() - back
        step = time.perf_counter()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    if clock is not None:
        clock.seconds["optimizer"] += time.perf_counter() - step
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------- the variants
def variants(bf16: bool) -> dict[str, dict[str, Any]]:
    from posttrain.update import UpdateConfig

    off = {
        "compact_logprobs": False, "trim_padding": False, "length_buckets": 1, "share_prompts": False,
        "fused_optimizer": False,
    }  # fmt: skip
    one = {
        "compact": {**off, "compact_logprobs": True},
        "trim": {**off, "trim_padding": True},
        "buckets2": {**off, "trim_padding": True, "length_buckets": 2},
        "share": {**off, "trim_padding": True, "share_prompts": True},
        "fused": {**off, "fused_optimizer": True},
    }
    out: dict[str, dict[str, Any]] = {
        "trl": {"side": "trl"},
        "trl+gc": {"side": "trl", "gradient_checkpointing": True},
    }
    out.update({name: {"side": "posttrain", "update": UpdateConfig(**u)} for name, u in one.items()})
    out["posttrain"] = {"side": "posttrain", "update": UpdateConfig()}
    for n in (1, 2, 4):  # completions bucketed by length on top of the shared prompts
        out[f"posttrain-b{n}"] = {"side": "posttrain", "update": UpdateConfig(length_buckets=n)}
    out["posttrain-fp32" if bf16 else "posttrain-bf16"] = {
        "side": "posttrain", "update": UpdateConfig(), "bf16": not bf16,
    }  # fmt: skip
    return out


def build_trainer(spec: dict[str, Any], recipe, train_ds):
    from trl import GRPOTrainer

    from posttrain.models import load_model
    from posttrain.rewards import build_reward_plugins
    from posttrain.trainer import PosttrainTrainer

    args = recipe.grpo_config()
    for key in ("gradient_checkpointing", "bf16"):
        if key in spec:
            setattr(args, key, spec[key])
    model, tokenizer = load_model(recipe.model)
    common = {"args": args, "train_dataset": train_ds, "processing_class": tokenizer}
    if spec["side"] == "trl":
        trainer = GRPOTrainer(model=model, reward_funcs=[accuracy], **common)
    else:
        plugins = build_reward_plugins(recipe.rewards)
        trainer = PosttrainTrainer(model=model, reward_plugins=plugins, update=spec["update"], **common)
    trainer.create_optimizer()  # no scheduler: one update is timed, the learning rate stays
    trainer.current_gradient_accumulation_steps = args.gradient_accumulation_steps  # set by train() otherwise
    if args.gradient_checkpointing:
        trainer.model.gradient_checkpointing_enable(args.gradient_checkpointing_kwargs)
    return trainer


def stretch(inputs: dict[str, Any], length: int, vocab: int, seed: int = 0) -> dict[str, Any]:
    """The batch with random completions of ``length/2 .. length`` tokens (right-padded, all trained)."""
    out = copy.copy(inputs)
    rows = inputs["completion_ids"].size(0)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
    out["completion_ids"] = torch.randint(3, vocab, (rows, length), generator=g) * mask
    out["completion_mask"] = mask
    out["num_items_in_batch"] = mask.sum()
    out.pop("old_per_token_logps", None)
    return out


def measure(recipe, train_ds, inputs, repeats: int, only: list[str] | None = None) -> dict[str, Any]:
    """Every variant (or those in ``only``) on the same batch, alternating, a warm-up update before each."""
    from posttrain.update import padded_positions, plan_buckets, read_layout

    specs = variants(bool(recipe.grpo_config().bf16))
    specs = {name: spec for name, spec in specs.items() if only is None or name in only}
    times: dict[str, list[float]] = {name: [] for name in specs}
    phases: dict[str, list[dict[str, float]]] = {"trl": [], "trl+gc": [], "posttrain": []}
    n_params = config = ran = None
    for _ in range(repeats):
        for name, spec in specs.items():  # one model at a time: ten 135M trainers would not fit in memory
            trainer = build_trainer(spec, recipe, train_ds)
            n_params = sum(p.numel() for p in trainer.model.parameters())
            config = trainer.model.config
            one_update(trainer, inputs)  # warm-up (allocations, oneDNN kernels)
            if name in phases:
                clock = PhaseClock()
                with instrument(trainer, clock):
                    total = one_update(trainer, inputs, clock)
                seconds = clock.seconds  # backward ran the head's backward and any recomputation inside it
                seconds["backward"] -= seconds["head_backward"] + seconds["recompute"]
                seconds["other"] = total - sum(v for k, v in seconds.items() if k != "other")
                phases[name].append(dict(clock.seconds))
            else:
                total = one_update(trainer, inputs)
            times[name].append(total)
            if name == "posttrain":
                ran = dict(trainer.fast.last)  # the path the update took, positions run and real tokens
            logger.info("  %-15s %.3f s", name, total)
            del trainer
            gc.collect()
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    keep = inputs["completion_ids"].size(1)
    layout = read_layout(mask, keep)
    full = mask.numel()
    trimmed, real = padded_positions(layout, plan_buckets(layout, 1))
    p_len, c_len = layout.prompt_lengths.tolist(), layout.completion_lengths.tolist()
    flops = model_flops(config, n_params, p_len, c_len)
    # What the shared-prompt path computes: each distinct prompt once, then every completion on top of it.
    trained = [i for i, c in enumerate(c_len) if c > 0]
    prompts = torch.cat([inputs["prompt_ids"], inputs["prompt_mask"]], dim=1)[trained]
    distinct = torch.unique(prompts, dim=0, return_inverse=True)[1].tolist()
    first = {g: trained[k] for k, g in reversed(list(enumerate(distinct)))}
    shared_tokens = [p_len[i] for i in first.values()] + [c_len[i] for i in trained]
    hidden, layers = config.hidden_size, config.num_hidden_layers
    dense = 6.0 * (n_params - config.vocab_size * hidden) * sum(shared_tokens)
    attention = (
        12.0
        * layers
        * hidden
        * (
            sum(p_len[i] ** 2 for i in first.values())
            + sum((p_len[i] + c_len[i]) ** 2 - p_len[i] ** 2 for i in trained)
        )
    )
    flops["shared_total"] = dense + flops["lm_head"] + attention
    return {
        "rows": mask.size(0),
        "prompt_tokens": int(layout.prompt_lengths.sum()),
        "completion_tokens": int(layout.completion_lengths.sum()),
        "rows_without_trained_tokens": int((layout.completion_lengths == 0).sum()),
        "positions_padded": full,
        "positions_trimmed": trimmed,
        "real_tokens_trained_rows": real,
        "padding_share_trl": 1 - int(mask.sum()) / full,
        "padding_share_trimmed": 1 - real / trimmed,
        "posttrain_path": ran,
        "padding_share_posttrain": None if ran is None else 1 - ran["real"] / ran["positions"],
        "flops": flops,
        "seconds": times,
        "median_seconds": {name: statistics.median(v) for name, v in times.items()},
        "phases": {
            name: {k: statistics.median(p[k] for p in runs) for k in PHASES}
            for name, runs in phases.items()
            if runs
        },
    }


def generate_batch(recipe, train_ds) -> dict[str, Any]:
    """One generation batch of the recipe, generated and scored by bare ``GRPOTrainer``."""
    from trl import GRPOTrainer

    from posttrain.models import load_model

    model, tokenizer = load_model(recipe.model)
    generator = GRPOTrainer(
        model=model, reward_funcs=[accuracy], args=recipe.grpo_config(), train_dataset=train_ds,
        processing_class=tokenizer,
    )  # fmt: skip
    rows = next(iter(generator.get_train_dataloader()))
    generator.model.train()
    logger.info("Generating one batch of %d completions", len(rows))
    batch = generator._generate_and_score_completions(rows)
    del generator, model
    gc.collect()
    return batch


def against_ceiling(result: dict[str, Any], peak: float) -> dict[str, Any]:
    """Add the FLOP ceiling and each variant's time over it (module docstring)."""
    ceiling = result["flops"]["total"] / peak
    result["ceiling_seconds"] = ceiling
    result["over_ceiling"] = {k: v / ceiling for k, v in result["median_seconds"].items()}
    if "posttrain" in result["median_seconds"]:  # the shared-prompt path needs fewer FLOPs: its own figure
        own = result["flops"]["shared_total"] / peak
        result["posttrain_over_own_ceiling"] = result["median_seconds"]["posttrain"] / own
    return result


def peak_for(recipe) -> tuple[float, torch.dtype]:
    """The GEMM peak of this CPU in the recipe's compute dtype."""
    from posttrain.models import load_model

    dtype = torch.bfloat16 if recipe.grpo_config().bf16 else torch.float32
    config = load_model(recipe.model)[0].config
    peak = gemm_peak_flops(dtype, config.hidden_size, config.intermediate_size)
    logger.info("GEMM peak here: %.1f GFLOP/s (%s)", peak / 1e9, dtype)
    return peak, dtype


def main(argv: list[str] | None = None) -> dict[str, float]:
    setup_logging()
    args, extra = parse_args(argv)
    from posttrain.config import load_recipe
    from posttrain.data import load_datasets
    from posttrain.models import load_model

    settings = {}
    with tempfile.TemporaryDirectory(prefix="bench-update-") as tmp:
        forced = {"output_dir": tmp, "save_strategy": "no", "run.time_budget": None, "report_to": "none"}
        if args.model:
            forced["model.name_or_path"] = args.model
        recipe = load_recipe(args.recipe, recipe_overrides(extra, forced))
        train_ds, _ = load_datasets(recipe.data)
        batch = generate_batch(recipe, train_ds)
        vocab = load_model(recipe.model)[0].config.vocab_size
        peak, dtype = peak_for(recipe)
        for length in args.lengths:
            name = "demo" if length == 0 else f"completions_{length}"
            inputs = batch if length == 0 else stretch(batch, length, vocab)
            logger.info(
                "Setting %s: %d rows x %d completion columns",
                name,
                inputs["completion_ids"].size(0),
                inputs["completion_ids"].size(1),
            )
            only = args.variants or (None if length == 0 else args.long_variants)
            result = against_ceiling(measure(recipe, train_ds, inputs, args.repeats, only), peak)
            ceiling = result["ceiling_seconds"]
            settings[name] = result
            med = result["median_seconds"]
            logger.info(
                "  %s", ", ".join(f"{k} {v:.3f}s" for k, v in med.items()) + f"; ceiling {ceiling:.3f}s"
            )
    first = settings[next(iter(settings))]
    med = first["median_seconds"]
    head = {}
    if "trl" in med and "posttrain" in med:
        head = {
            "update_s_trl": med["trl"],
            "update_s_posttrain": med["posttrain"],
            "speedup": med["trl"] / med["posttrain"],
        }
    if "posttrain" in med:
        head["update_share_padding"] = first["padding_share_posttrain"]
        head["update_over_ceiling"] = first["over_ceiling"]["posttrain"]
    payload = {
        "benchmark": "update_profile",
        "config": {"recipe": args.recipe, "repeats": args.repeats, "extra_flags": extra, **environment()},
        "peak_flops": peak,
        "dtype": str(dtype),
        "settings": settings,
        "headline": head,
    }
    write_json(args.out, payload)
    print(headline(head))
    return head


if __name__ == "__main__":
    main()
