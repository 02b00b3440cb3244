"""The evaluation commands: ``posttrain eval`` and ``posttrain generate`` (dispatched by posttrain/cli.py).

    posttrain eval --model M --data D [--num_samples k --temperature t] [--reflect] [--judge] [--search]
    posttrain generate --model M --data D [--reflect --rounds 2]

Both build a Recipe through the same loader as ``posttrain train`` (:func:`build_recipe`), so any recipe
key works as a flag (``--data.answer_field answers``, ``--model.dtype bfloat16``, ``--eval.batch_size 8``).
``--reflect`` and ``--judge`` are SPARK's inference (posttrain/methods/spark/selfcheck.py), ``--search``
pay-per-search's evaluation (posttrain/methods/mash/evaluate.py).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from posttrain.errors import PosttrainError

# `posttrain eval/generate` flag -> recipe key; every other `--section.key value` flag sets a recipe key too.
FLAG_KEYS = {
    "model": "model.name_or_path",
    "data": "data.path",
    "num_samples": "eval.num_samples",
    "temperature": "eval.temperature",
    "max_new_tokens": "eval.max_new_tokens",
    "batch_size": "eval.batch_size",
    "seed": "trainer.seed",
    "retriever": "search.retriever",
    "top_k": "search.top_k",
    "max_searches": "search.max_searches",
}


def build_recipe(args: argparse.Namespace, rest: list[str], command: str, **keys: Any):
    """The command's Recipe, through the same loader as ``posttrain train``: its flags (:data:`FLAG_KEYS`),
    ``keys`` (dotted recipe keys) and any ``--section.key value`` flag (``--data.answer_field``,
    ``--model.dtype``, ...), so every recipe key works as a flag here too."""
    from posttrain.config import load_recipe, parse_flags

    flags = {
        key: getattr(args, name) for name, key in FLAG_KEYS.items() if getattr(args, name, None) is not None
    }
    flags.update(keys)
    flags.update(parse_flags(rest))
    return load_recipe(f"`posttrain {command}`", flags, sections={})


def load_split(recipe, split: str):
    """The ``split`` ("eval": the held-out split when there is one) of the recipe's data."""
    from posttrain.data import load_datasets

    train_ds, eval_ds = load_datasets(recipe.data)
    return eval_ds if (split == "eval" and eval_ds is not None) else train_ds


def _add_common_flags(parser: argparse.ArgumentParser, output_dir: str, what: str) -> None:
    parser.add_argument("--model", default="embedded", help="hub id, local folder, .gguf file or 'embedded'")
    parser.add_argument("--data", help="a JSONL/JSON/parquet file or a Hugging Face dataset name")
    parser.add_argument("--max_new_tokens", type=int, default=256, help="budget of every generation")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output_dir", default=output_dir, help=f"where {what} go")
    parser.add_argument("--split", choices=["eval", "train"], default="eval", help="held-out split if any")
    parser.add_argument(
        "--reflect",
        action="store_true",
        help="SPARK's solve -> judge -> reflect loop (posttrain.methods.spark.selfcheck)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="judge/reflect rounds of --reflect (>= 1)")


def _check_rounds(args: argparse.Namespace) -> None:
    if args.rounds < 1:
        raise PosttrainError(
            f"--rounds must be >= 1 (judge/reflect rounds after the first answer), got {args.rounds}; "
            "leave out --reflect for plain generation."
        )


def _print_metrics(metrics: dict) -> None:
    """One line ``key=value ...``; undefined metrics (None: e.g. accuracy of unlabelled data) are left out."""
    shown = {k: v for k, v in metrics.items() if v is not None}
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))


def eval_main(argv: list[str]) -> None:
    """``posttrain eval``."""
    from posttrain.evaluation import evaluate
    from posttrain.models import load_model

    parser = argparse.ArgumentParser(
        prog="posttrain eval",
        description="Held-out accuracy of a model: greedy, mean@k and maj@k, with a JSONL of predictions; "
        "optionally SPARK's self-reflection (--reflect) and the model as its own judge (--judge). "
        "Any recipe key works as a flag, e.g. --data.generator chain_sum or --model.dtype bfloat16.",
    )
    _add_common_flags(parser, "runs/eval", "eval.json and predictions")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per question for mean@k/maj@k")
    parser.add_argument("--temperature", type=float, default=1.0, help="for mean@k/maj@k and --judge samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--judge",
        action="store_true",
        help="score the model as a pointwise/pairwise judge of its own samples",
    )
    parser.add_argument("--judge_samples", type=int, default=4, help="samples per question for --judge")
    parser.add_argument(
        "--search",
        action="store_true",
        help="MASH: exact match / F1 / searches with the search tool, abstention with it removed",
    )
    parser.add_argument("--retriever", help="--search: a corpus .jsonl or a retriever URL (default: SQuAD)")
    parser.add_argument("--top_k", type=int, default=3, help="--search: passages per search")
    parser.add_argument(
        "--max_searches", type=int, default=5, help="--search: searches answered per question"
    )
    parser.add_argument(
        "--known_samples", type=int, default=4, help="--search: no-tool samples per question for `known`"
    )
    args, rest = parser.parse_known_args(argv)
    if args.search:
        _search_eval(args, rest)
        return
    _check_rounds(args)
    if args.judge and args.judge_samples < 2:
        raise PosttrainError(
            f"--judge_samples must be >= 2 (a pairwise task needs a correct and a wrong sample of the same "
            f"question), got {args.judge_samples}."
        )
    recipe = build_recipe(args, rest, "eval")  # validates the eval settings too
    if args.judge and recipe.eval.temperature <= 0:
        raise PosttrainError(
            f"--judge samples candidates: set --temperature > 0, got {recipe.eval.temperature}."
        )
    dataset = load_split(recipe, args.split)
    if args.judge:
        from posttrain.methods.spark.selfcheck import labelled

        if not all(labelled(row) for row in dataset):
            raise PosttrainError(
                "--judge needs reference answers to label the judge tasks, and this data has rows without "
                "one. Set --data.answer_field to the column holding the answers, or leave out --judge."
            )
    model, tokenizer = load_model(recipe.model)
    # The flags, or the same keys given as --eval.* / --trainer.seed.
    ev, seed = recipe.eval, recipe.trainer.get("seed", 42)
    result = evaluate(
        model, tokenizer, dataset, ev.max_new_tokens, ev.num_samples, ev.temperature, ev.batch_size, seed
    )
    if args.reflect or args.judge:
        from posttrain.methods.spark import selfcheck

        rows = [dict(r) for r in dataset]
        generator = selfcheck.hf_generator(model, tokenizer, ev.max_new_tokens, ev.batch_size, "selfcheck")
    if args.reflect:
        initial = [p["completion"] for p in result.predictions]  # the greedy solve is already done
        records = selfcheck.solve_judge_reflect(
            generator, rows, args.rounds, initial=initial, verdict_prefix=recipe.spark.verdict_prefix
        )
        reflect = selfcheck.reflect_metrics(records)
        result.metrics.update({f"reflect/{k}": v for k, v in reflect.items()})
        selfcheck.write_jsonl(os.path.join(args.output_dir, "eval_reflect.jsonl"), records)
    if args.judge:
        import random

        import torch

        torch.manual_seed(seed)
        sampler = selfcheck.hf_sampler(
            model, tokenizer, ev.max_new_tokens, ev.temperature, ev.batch_size, "judge candidates"
        )
        judge, tasks = selfcheck.judge_eval(
            generator,
            rows,
            args.judge_samples,
            sampler,
            random.Random(seed),
            verdict_prefix=recipe.spark.verdict_prefix,
        )
        result.metrics.update({f"judge/{k}": v for k, v in judge.items()})
        selfcheck.write_jsonl(os.path.join(args.output_dir, "eval_judge.jsonl"), tasks)
    result.save(args.output_dir, "eval")
    _print_metrics(result.metrics)
    print(f"predictions: {os.path.join(args.output_dir, 'eval_predictions.jsonl')}")


def _search_eval(args: argparse.Namespace, rest: list[str]) -> None:
    from posttrain.methods.mash.evaluate import evaluate_search
    from posttrain.models import load_model

    if args.reflect or args.judge:
        raise PosttrainError("--search cannot be combined with --reflect or --judge; run them separately.")
    if args.known_samples < 0:
        raise PosttrainError(f"--known_samples must be >= 0 (0 skips it), got {args.known_samples}.")
    recipe = build_recipe(
        args, rest, "eval", **{"search.enabled": True}
    )  # the search prompt, the tool's limits
    dataset = load_split(recipe, args.split)
    model, tokenizer = load_model(recipe.model)
    result = evaluate_search(
        model,
        tokenizer,
        list(dataset),
        recipe.search,
        recipe.eval.max_new_tokens,
        batch_size=recipe.eval.batch_size,
        known_samples=args.known_samples,
        seed=recipe.trainer.get("seed", 42),
    )
    result.save(args.output_dir, "eval_search")
    _print_metrics(result.metrics)
    print(f"predictions: {os.path.join(args.output_dir, 'eval_search_predictions.jsonl')}")


def generate_main(argv: list[str]) -> None:
    """``posttrain generate``."""
    import json

    from posttrain.methods.spark import selfcheck
    from posttrain.models import load_model

    parser = argparse.ArgumentParser(
        prog="posttrain generate",
        description="Greedy answers of a model to a data set, written to generations.jsonl; with --reflect, "
        "SPARK's solve -> judge -> reflect loop. Accuracy is printed when the data has answers. "
        "Any recipe key works as a flag, e.g. --data.answer_field null.",
    )
    _add_common_flags(parser, "runs/generate", "generations.jsonl and generate.json")
    args, rest = parser.parse_known_args(argv)
    _check_rounds(args)
    recipe = build_recipe(args, rest, "generate")  # checks eval.batch_size >= 1 among the rest
    rows = [dict(r) for r in load_split(recipe, args.split)]
    model, tokenizer = load_model(recipe.model)
    ev = recipe.eval  # --max_new_tokens / --batch_size, or the same keys given as --eval.*
    generator = selfcheck.hf_generator(model, tokenizer, ev.max_new_tokens, ev.batch_size, "generate")
    if args.reflect:
        records = selfcheck.solve_judge_reflect(
            generator, rows, args.rounds, verdict_prefix=recipe.spark.verdict_prefix
        )
        metrics = selfcheck.reflect_metrics(records)
    else:
        records = selfcheck.solve(generator, rows)
        summary = selfcheck.reflect_metrics(records)
        metrics = {
            "n": summary["n"],
            "n_labelled": summary["n_labelled"],
            "accuracy": summary["accuracy_initial"],
        }
    selfcheck.write_jsonl(os.path.join(args.output_dir, "generations.jsonl"), records)
    with open(os.path.join(args.output_dir, "generate.json"), "w") as f:
        f.write(json.dumps(metrics, indent=2) + "\n")
    _print_metrics(metrics)
    print(f"generations: {os.path.join(args.output_dir, 'generations.jsonl')}")
