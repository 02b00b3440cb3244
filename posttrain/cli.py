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

import importlib
import sys

from posttrain.console import run_command

# Command -> "module:function(argv)". The console only dispatches; each command lives with what it runs.
COMMANDS = {
    "train": "posttrain.train:main",
    "eval": "posttrain.commands:eval_main",
    "generate": "posttrain.commands:generate_main",
    "adapt": "posttrain.methods.ttrl.adapt:main",
    "retriever": "posttrain.retrieval.server:command",
    "vllm-serve": "posttrain.rollout.server:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"posttrain: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, _, function = COMMANDS[name].partition(":")
    command = getattr(importlib.import_module(module), function)
    return run_command(lambda: command(rest))


if __name__ == "__main__":
    sys.exit(main())
