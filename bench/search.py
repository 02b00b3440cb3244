"""Pay-per-search measured: searches and exact match before/after RL, and retriever throughput.

    python bench/search.py                        # CPU: warm start + 10 min of MASH RL on the embedded model
    python bench/search.py --skip_training        # retriever throughput only (~1 min)
    python bench/search.py --model /tmp/tiny --warm_examples 8 --budget 30 --eval_size 4 --qps_seconds 1 \\
        --out /tmp/search.json                    # smoke run (tests/test_bench.py)

**Training** (``recipes/mash_search.yaml`` shrunk for a CPU: SQuAD questions, BM25 over the shipped
SQuAD passages, ``pay_per_search`` with lam 0.5). SmolLM2-135M never writes ``<search>`` or
``<answer>`` on its own, so every reward would be 0; as MASH does (its RL starts from a warm-start
SFT checkpoint), a warm start on template trajectories comes first (about 10 min on 2 CPU cores)
(:mod:`posttrain.methods.mash.warmstart`: two thirds search once, one third answer directly, gold answers,
documents masked; 360 examples at lr 1e-4: with 120 at 5e-5 the model learnt the format but not
to copy the answer from the passage, and sampled rollouts were almost never right, docs/methods.md).
"Before" is the warm-started model, "after" the same model after ``--budget`` of
RL. Exact match and searches per question are measured with the tool on held-out questions
(:mod:`posttrain.methods.mash.evaluate`, greedy); the raw model is measured too, for reference.

**Throughput** of the BM25 retriever over the 2,067 passages, one query per call: in process (a
loop), and through ``posttrain retriever serve`` on 127.0.0.1 with 1 and with 8 concurrent clients
(threads, one query per request, for ``--qps_seconds`` each), plus one batched in-process call of all
queries. Server answers are checked against the in-process index.

Writes ``bench/results/search.json``; the last line is
``em_before=<x> em_after=<x> searches_before=<x> searches_after=<x> qps_inprocess=<x> qps_server8=<x>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python bench/search.py`

from bench.common import REPO, RESULTS, environment, headline, setup_logging, write_json  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_second(fn, seconds: float, clients: int) -> tuple[float, int]:
    """Calls of ``fn(i)`` per second over ``clients`` threads for ``seconds``; also the number of errors."""
    counts, errors = [0] * clients, [0]
    stop = time.monotonic() + seconds

    def worker(c: int) -> None:
        i = c
        while time.monotonic() < stop:
            try:
                fn(i)
            except Exception:  # counted, reported, and the benchmark goes on
                errors[0] += 1
            counts[c] += 1
            i += clients

    start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start), errors[0]


def throughput(corpus: str, queries: list[str], seconds: float, k: int = 3) -> dict:
    from posttrain.retrieval.client import RetrievalClient
    from posttrain.retrieval.index import load_index

    index = load_index(corpus)
    start = time.perf_counter()
    batched = index.search(queries, k)
    qps_batch = len(queries) / (time.perf_counter() - start)
    qps_inprocess, _ = _per_second(lambda i: index.search([queries[i % len(queries)]], k), seconds, 1)

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "posttrain.cli",
        "retriever",
        "serve",
        "--corpus",
        corpus,
        "--port",
        str(port),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = RetrievalClient(f"http://127.0.0.1:{port}")
        client.wait_until_ready(120)
        sample = list(range(0, len(queries), max(1, len(queries) // 32)))
        served = client.search([queries[i] for i in sample], k)
        agree = sum(
            [h.id for h in served[j]] == [h.id for h in batched[i]] for j, i in enumerate(sample)
        ) / len(sample)

        def one(i: int) -> None:
            client.search([queries[i % len(queries)]], k)

        qps_server1, errors1 = _per_second(one, seconds, 1)
        qps_server8, errors8 = _per_second(one, seconds, 8)
    finally:
        server.terminate()
        server.wait(30)
    return {
        "queries": len(queries),
        "k": k,
        "qps_inprocess": qps_inprocess,
        "qps_inprocess_batched": qps_batch,
        "qps_server1": qps_server1,
        "qps_server8": qps_server8,
        "server_errors": errors1 + errors8,
        "server_agrees_with_index": agree,
    }


def train_and_measure(args, runs: Path) -> dict:
    import dataclasses

    from posttrain.config import load_recipe
    from posttrain.data import load_datasets
    from posttrain.methods.mash.evaluate import evaluate_search
    from posttrain.methods.mash.warmstart import warm_start, warm_start_examples
    from posttrain.models import load_model
    from posttrain.train import run

    overrides = {
        "model.name_or_path": args.model,
        "rollout.engine": "hf",
        "data.eval_size": args.eval_size,
        "data.max_samples": args.train_questions,
        "search.top_k": args.top_k,
        "search.max_turn_tokens": args.turn_tokens,
        "search.max_doc_chars": args.doc_chars,
        "trainer.num_generations": args.num_generations,
        "trainer.per_device_train_batch_size": args.num_generations * args.questions_per_step,
        "trainer.steps_per_generation": 1,
        "trainer.max_completion_length": args.max_tokens,
        "trainer.learning_rate": args.learning_rate,
        "trainer.gradient_checkpointing": False,
        "trainer.save_steps": 10**6,
        "trainer.max_steps": args.max_steps,
        "trainer.output_dir": str(runs / "rl"),
        "eval.max_new_tokens": args.max_tokens,
        "eval.batch_size": 32,
        "run.time_budget": args.budget,
    }
    recipe = load_recipe(REPO / "recipes" / "mash_search.yaml", overrides)
    train_ds, eval_ds = load_datasets(recipe.data)
    tool = recipe.search.make_tool()

    model, tokenizer = load_model(recipe.model)
    raw = evaluate_search(
        model, tokenizer, list(eval_ds), recipe.search, args.max_tokens, known_samples=0, tool=tool
    ).metrics
    warm_rows = [dict(r) for r in train_ds][: args.warm_examples]
    examples = warm_start_examples(
        warm_rows, tool, tokenizer, top_k=args.top_k, seed=0, format_documents=recipe.search.formatter()
    )
    start = time.monotonic()
    warm_start(model, tokenizer, examples, str(runs / "warm_tmp"), epochs=1, learning_rate=args.warm_lr)
    warm_seconds = time.monotonic() - start
    warm_dir = runs / "warm"
    model.save_pretrained(warm_dir)
    tokenizer.save_pretrained(warm_dir)
    del model
    recipe.model = dataclasses.replace(recipe.model, name_or_path=str(warm_dir))
    summary = run(recipe)
    return {
        "raw_model": raw,
        "warm_start": {"examples": len(examples), "seconds": round(warm_seconds, 1)},
        "rl": {"steps": summary["steps"], "train_seconds": summary["train_seconds"]},
        "before": summary["eval"]["before"],
        "after": summary["eval"]["after"],
        "curves": _curves(runs / "rl" / "metrics.jsonl"),
    }


def _curves(path: Path) -> dict:
    from posttrain.plotting import read_metrics

    keys = ("reward", "tools/searches_mean", "search/accuracy", "tools/answered_frac", "tools/truncated_frac")
    rows = [r for r in read_metrics(path) if "reward" in r]
    return {k: [r.get(k) for r in rows] for k in keys}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--skip_training", action="store_true")
    parser.add_argument("--budget", default="10m", help="wall budget of the RL phase")
    parser.add_argument("--max_steps", type=int, default=10**6)
    parser.add_argument("--warm_examples", type=int, default=360)
    parser.add_argument("--warm_lr", type=float, default=1e-4)
    parser.add_argument("--train_questions", type=int, default=900)
    parser.add_argument("--eval_size", type=int, default=50)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--questions_per_step", type=int, default=2)
    parser.add_argument("--learning_rate", type=float, default=3e-5)
    parser.add_argument("--top_k", type=int, default=1)
    parser.add_argument("--doc_chars", type=int, default=300)
    parser.add_argument("--turn_tokens", type=int, default=64)
    parser.add_argument("--max_tokens", type=int, default=256)
    parser.add_argument("--qps_seconds", type=float, default=10.0)
    parser.add_argument("--runs_dir", default=str(REPO / "runs" / "bench_search"))
    parser.add_argument("--out", default=str(RESULTS / "search.json"))
    args = parser.parse_args(argv)
    setup_logging()

    from posttrain.retrieval import DEFAULT_CORPUS, DEFAULT_QUESTIONS

    questions = [json.loads(line)["question"] for line in Path(DEFAULT_QUESTIONS).read_text().splitlines()][
        :512
    ]
    qps = throughput(str(DEFAULT_CORPUS), questions, args.qps_seconds)
    result: dict = {"settings": vars(args), "throughput": qps, "environment": environment()}
    figures = {}
    if not args.skip_training:
        runs = Path(args.runs_dir)
        if runs.exists():
            shutil.rmtree(runs)  # the bench's own scratch folder, recreated every run
        result["training"] = training = train_and_measure(args, runs)
        figures = {
            "em_before": training["before"]["tool/exact_match"],
            "em_after": training["after"]["tool/exact_match"],
            "searches_before": training["before"]["tool/searches_mean"],
            "searches_after": training["after"]["tool/searches_mean"],
        }
    figures.update(qps_inprocess=qps["qps_inprocess"], qps_server8=qps["qps_server8"])
    result["headline"] = figures
    write_json(args.out, result)
    print(headline(figures))
    return figures


if __name__ == "__main__":
    main()
