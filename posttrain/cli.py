"""The ``posttrain`` command.

    posttrain train RECIPE.yaml [--key value ...]      train (see posttrain.train)
    posttrain eval --model M --data D [--num_samples k --temperature t]
                                                        greedy / mean@k / maj@k accuracy + predictions
                  [--reflect --rounds 2] [--judge --judge_samples 4]
                                                        + SPARK self-reflection / the model as a judge
                  [--search --retriever URL|corpus.jsonl --known_samples 4]
                                                        exact match with the search tool, abstention without
    posttrain generate --model M --data D [--reflect --rounds 2]
                                                        answers (and self-reflections) to generations.jsonl
    posttrain adapt --model M --data questions.jsonl [--reward ttrl|ttrv] [--n_votes 16 --n_train 8]
                    [--steps N | --time_budget 10m] [--lora | --full] [--merge] --output_dir OUT
                                                        test-time RL on unlabeled questions (posttrain.methods.ttrl.adapt)
    posttrain retriever serve [--corpus C.jsonl] [--port 8001] [--host 127.0.0.1]
                                                        the BM25 search tool over HTTP (`search.retriever: URL`)
    posttrain vllm-serve --model M [--engine vllm|hf] [--port 8000] [--tensor_parallel_size N]
                                                        a rollout server for `rollout.mode: server` runs

A mistake in the input (recipe, data, model, reward plugin, output folder) prints one message that
says what is wrong and how to fix it; set ``POSTTRAIN_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from posttrain.console import run_command
from posttrain.errors import PosttrainError


def _data_flags(rest: list[str], command: str) -> dict:
    """``--data.<field> v`` flags -> DataConfig keyword arguments; any other extra flag is an error."""
    from posttrain.config import parse_flags

    data_kwargs = {}
    for key, value in parse_flags(rest).items():
        section, _, name = key.partition(".")
        if section != "data" or not name:
            raise PosttrainError(
                f"Unknown flag --{key} for `posttrain {command}`; see `posttrain {command} --help`."
            )
        data_kwargs[name] = value
    return data_kwargs


def _load_split(args: argparse.Namespace, rest: list[str], command: str, adjust=None):
    """The split ``--split`` names of ``--data`` + ``--data.<field>`` flags; ``adjust(DataConfig)`` may
    change the config first (e.g. put the search prompt around the questions)."""
    from posttrain.data import DataConfig, load_datasets

    data_kwargs = _data_flags(rest, command)
    if args.data:
        data_kwargs["path"] = args.data
    config = DataConfig(**data_kwargs)
    train_ds, eval_ds = load_datasets(adjust(config) if adjust is not None else config)
    return eval_ds if (args.split == "eval" and eval_ds is not None) else train_ds


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


def _eval_command(argv: list[str]) -> None:
    from posttrain.config import EvalConfig
    from posttrain.evaluation import evaluate
    from posttrain.models import ModelConfig, load_model

    parser = argparse.ArgumentParser(
        prog="posttrain eval",
        description="Held-out accuracy of a model: greedy, mean@k and maj@k, with a JSONL of predictions; "
        "optionally SPARK's self-reflection (--reflect) and the model as its own judge (--judge). "
        "Extra --data.<field> flags set any DataConfig field (e.g. --data.generator chain_sum).",
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
    EvalConfig(num_samples=args.num_samples, batch_size=args.batch_size)  # validates
    _check_rounds(args)
    if args.judge and args.judge_samples < 2:
        raise PosttrainError(
            f"--judge_samples must be >= 2 (a pairwise task needs a correct and a wrong sample of the same "
            f"question), got {args.judge_samples}."
        )
    if args.judge and args.temperature <= 0:
        raise PosttrainError(f"--judge samples candidates: set --temperature > 0, got {args.temperature}.")
    dataset = _load_split(args, rest, "eval")
    if args.judge:
        from posttrain.methods.spark.selfcheck import labelled

        if not all(labelled(row) for row in dataset):
            raise PosttrainError(
                "--judge needs reference answers to label the judge tasks, and this data has rows without "
                "one. Set --data.answer_field to the column holding the answers, or leave out --judge."
            )
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
    if args.reflect or args.judge:
        from posttrain.methods.spark import selfcheck

        rows = [dict(r) for r in dataset]
        generator = selfcheck.hf_generator(
            model, tokenizer, args.max_new_tokens, args.batch_size, "selfcheck"
        )
    if args.reflect:
        initial = [p["completion"] for p in result.predictions]  # the greedy solve is already done
        records = selfcheck.solve_judge_reflect(generator, rows, args.rounds, initial=initial)
        reflect = selfcheck.reflect_metrics(records)
        result.metrics.update({f"reflect/{k}": v for k, v in reflect.items()})
        selfcheck.write_jsonl(os.path.join(args.output_dir, "eval_reflect.jsonl"), records)
    if args.judge:
        import random

        import torch

        torch.manual_seed(args.seed)
        sampler = selfcheck.hf_sampler(
            model, tokenizer, args.max_new_tokens, args.temperature, args.batch_size, "judge candidates"
        )
        judge, tasks = selfcheck.judge_eval(
            generator, rows, args.judge_samples, sampler, random.Random(args.seed)
        )
        result.metrics.update({f"judge/{k}": v for k, v in judge.items()})
        selfcheck.write_jsonl(os.path.join(args.output_dir, "eval_judge.jsonl"), tasks)
    result.save(args.output_dir, "eval")
    _print_metrics(result.metrics)
    print(f"predictions: {os.path.join(args.output_dir, 'eval_predictions.jsonl')}")


def _search_eval(args: argparse.Namespace, rest: list[str]) -> None:
    from posttrain.methods.mash.config import SearchConfig
    from posttrain.methods.mash.evaluate import evaluate_search
    from posttrain.models import ModelConfig, load_model

    if args.reflect or args.judge:
        raise PosttrainError("--search cannot be combined with --reflect or --judge; run them separately.")
    if args.known_samples < 0:
        raise PosttrainError(f"--known_samples must be >= 0 (0 skips it), got {args.known_samples}.")
    search = SearchConfig(
        enabled=True, retriever=args.retriever, top_k=args.top_k, max_searches=args.max_searches
    )
    dataset = _load_split(args, rest, "eval", adjust=SearchConfig.with_prompt)
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model))
    result = evaluate_search(
        model,
        tokenizer,
        list(dataset),
        search,
        args.max_new_tokens,
        batch_size=args.batch_size,
        known_samples=args.known_samples,
        seed=args.seed,
    )
    result.save(args.output_dir, "eval_search")
    _print_metrics(result.metrics)
    print(f"predictions: {os.path.join(args.output_dir, 'eval_search_predictions.jsonl')}")


def _generate_command(argv: list[str]) -> None:
    import json

    from posttrain.methods.spark import selfcheck
    from posttrain.models import ModelConfig, load_model

    parser = argparse.ArgumentParser(
        prog="posttrain generate",
        description="Greedy answers of a model to a data set, written to generations.jsonl; with --reflect, "
        "SPARK's solve -> judge -> reflect loop. Accuracy is printed when the data has answers. "
        "Extra --data.<field> flags set any DataConfig field (e.g. --data.answer_field null).",
    )
    _add_common_flags(parser, "runs/generate", "generations.jsonl and generate.json")
    args, rest = parser.parse_known_args(argv)
    _check_rounds(args)
    if args.batch_size < 1:
        raise PosttrainError(f"--batch_size must be >= 1, got {args.batch_size}.")
    rows = [dict(r) for r in _load_split(args, rest, "generate")]
    model, tokenizer = load_model(ModelConfig(name_or_path=args.model))
    generator = selfcheck.hf_generator(model, tokenizer, args.max_new_tokens, args.batch_size, "generate")
    if args.reflect:
        records = selfcheck.solve_judge_reflect(generator, rows, args.rounds)
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


def _adapt_command(argv: list[str]) -> None:
    from posttrain.config import parse_flags
    from posttrain.methods.ttrl import adapt as testtime

    parser = argparse.ArgumentParser(
        prog="posttrain adapt",
        description="Adapt a model to unlabeled questions with test-time RL (TTRL majority vote or TTRV "
        "frequency + entropy), then answer them by majority vote. Extra `--section.key value` flags set any "
        "recipe key (e.g. --trainer.learning_rate 5e-5 --data.instruction 'Answer with a number.').",
    )
    parser.add_argument("--model", help="hub id, local folder, .gguf file or 'embedded' (the default)")
    parser.add_argument("--data", required=True, help="questions: JSONL/JSON/parquet file or HF dataset name")
    parser.add_argument("--recipe", help="a YAML recipe to start from (e.g. recipes/ttrl_math.yaml)")
    parser.add_argument("--reward", choices=testtime.REWARDS, help="ttrl (majority vote, default) or ttrv")
    parser.add_argument("--n_votes", type=int, help="samples per question that vote (TTRL: 64; default 16)")
    parser.add_argument("--n_train", type=int, help="of those, trained on (TTRL: 32; default n_votes / 2)")
    parser.add_argument(
        "--k", type=int, help="samples per question for the before/after vote (default n_votes)"
    )
    parser.add_argument(
        "--extract",
        help="how answers are read, in the votes and the before/after evaluation: boxed (TTRL's default: the "
        "last \\boxed{}), qwen_math (TTRV's), lenient (also a bare number), tagged, first_boxed",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="optimizer steps (default 20)")
    budget.add_argument("--time_budget", help="stop after this wall time, e.g. 10m")
    lora = parser.add_mutually_exclusive_group()
    lora.add_argument(
        "--lora", dest="lora", action="store_true", default=None, help="train a LoRA adapter (default)"
    )
    lora.add_argument("--full", dest="lora", action="store_false", help="fine-tune all weights instead")
    parser.add_argument(
        "--merge", action="store_true", help="also save the base model with the adapter merged"
    )
    parser.add_argument("--question_field", help="the column holding the questions (default: question)")
    parser.add_argument("--answer_field", help="the column holding labels, if any (default: answer)")
    parser.add_argument(
        "--skip_long", action="store_true", help="leave out questions too long for the context"
    )
    parser.add_argument("--output_dir", help="where everything goes (default runs/adapt)")
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
    )
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that holds a run")
    args, rest = parser.parse_known_args(argv)
    for name in ("n_votes", "n_train", "k", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise PosttrainError(f"--{name} must be a positive integer, got {value}.")
    flags = {name: getattr(args, name) for name in testtime.FLAG_KEYS if name != "data"}
    flags["data"] = args.data
    if args.steps is None and args.time_budget is not None:
        flags["trainer.max_steps"] = 10**9  # the budget ends the run
    if args.lora is not None:
        flags["peft.enabled"] = args.lora
    for name in ("question_field", "answer_field"):
        if getattr(args, name) is not None:
            flags[f"data.{name}"] = getattr(args, name)
    if args.resume:
        flags["run.resume"] = True
    if args.overwrite:
        flags["run.overwrite"] = True
    flags.update(parse_flags(rest))
    recipe = testtime.build_recipe(args.recipe, flags)
    metrics = testtime.adapt(recipe, skip_long=args.skip_long, merge=args.merge)
    print(testtime.format_metrics(metrics))
    print(f"predictions: {recipe.output_dir / 'predictions.jsonl'}")


def _retriever_command(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or argv[0] != "serve":
        raise PosttrainError(
            "Usage: posttrain retriever serve [--corpus C.jsonl] [--port 8001] [--host 127.0.0.1] "
            "(`serve` is the one retriever command; `posttrain retriever serve --help` for every flag)."
        )
    from posttrain.retrieval.server import main as serve

    serve(argv[1:])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": lambda rest: __import__("posttrain.train", fromlist=["main"]).main(rest),
        "eval": _eval_command,
        "generate": _generate_command,
        "adapt": _adapt_command,
        "retriever": _retriever_command,
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
