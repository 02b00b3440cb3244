"""The ``posttrain`` command.

    posttrain train RECIPE.yaml [--key value ...]      train (see posttrain.train)
    posttrain eval --model M --data D [--num_samples k --temperature t]
                                                        greedy / mean@k / maj@k accuracy + predictions
    posttrain vllm-serve --model M [--engine vllm|hf] [--port 8000] [--tensor_parallel_size N]
                                                        a rollout server for `rollout.mode: server` runs

A mistake in the input (recipe, data, model, reward plugin, output folder) prints one message that
says what is wrong and how to fix it; set ``POSTTRAIN_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from posttrain.errors import PosttrainError


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def run_command(fn: Callable[[], object]) -> int:
    """Run ``fn``; turn a PosttrainError into one readable message and exit status 2."""
    setup_logging()
    try:
        fn()
    except PosttrainError as exc:
        if os.environ.get("POSTTRAIN_DEBUG"):
            raise
        print(f"\nposttrain: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _eval_command(argv: list[str]) -> None:
    from posttrain.config import EvalConfig, parse_flags
    from posttrain.data import DataConfig, load_datasets
    from posttrain.evaluation import evaluate
    from posttrain.models import ModelConfig, load_model

    parser = argparse.ArgumentParser(
        prog="posttrain eval",
        description="Held-out accuracy of a model: greedy, mean@k and maj@k, with a JSONL of predictions. "
        "Extra --data.<field> flags set any DataConfig field (e.g. --data.generator chain_sum).",
    )
    parser.add_argument("--model", default="embedded", help="hub id, local folder, .gguf file or 'embedded'")
    parser.add_argument("--data", help="a JSONL/JSON/parquet file or a Hugging Face dataset name")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per question for mean@k/maj@k")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="runs/eval", help="where eval.json and predictions go")
    parser.add_argument("--split", choices=["eval", "train"], default="eval", help="held-out split if any")
    args, rest = parser.parse_known_args(argv)
    flags = parse_flags(rest)
    data_kwargs = {}
    for key, value in flags.items():
        section, _, name = key.partition(".")
        if section != "data" or not name:
            raise PosttrainError(f"Unknown flag --{key} for `posttrain eval`; see `posttrain eval --help`.")
        data_kwargs[name] = value
    if args.data:
        data_kwargs["path"] = args.data
    EvalConfig(num_samples=args.num_samples, batch_size=args.batch_size)  # validates
    train_ds, eval_ds = load_datasets(DataConfig(**data_kwargs))
    dataset = eval_ds if (args.split == "eval" and eval_ds is not None) else train_ds
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model))
    result = evaluate(
        model,
        tokenizer,
        dataset,
        args.max_new_tokens,
        args.num_samples,
        args.temperature,
        args.batch_size,
        args.seed,
    )
    result.save(args.output_dir, "eval")
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.metrics.items()))
    print(f"predictions: {os.path.join(args.output_dir, 'eval_predictions.jsonl')}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": lambda rest: __import__("posttrain.train", fromlist=["main"]).main(rest),
        "eval": _eval_command,
        "vllm-serve": lambda rest: __import__("posttrain.rollout.server", fromlist=["main"]).main(rest),
    }
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"posttrain: unknown command {name!r}; choose one of: {', '.join(commands)}", file=sys.stderr)
        return 2
    return run_command(lambda: commands[name](rest))


if __name__ == "__main__":
    sys.exit(main())
