"""Fault injection: kill -9 at random points and resume; plugin faults; a retriever restarted mid-run.

    python bench/faults.py                      # 4 methods x 3 kill points, plus the plugin/server faults
    python bench/faults.py --points 1 --methods grpo    # a quick look

For each method that keeps state (grpo with a stateful reward, spark, mash, ttrl), a fixed-seed run of
the shipped recipe on a tiny random model (fp32, CPU, a checkpoint every step) is run once without
interruption. Then, for each of ``--points`` seeded kill points, the same run is started, killed with
SIGKILL at that point (during generation, the reward, the update or a checkpoint write: wherever the
random delay after a logged step falls), resumed with ``--resume`` (from scratch when no checkpoint was
complete yet) and compared with the uninterrupted run: every logged figure of every step (timings
aside) to ``--tol``, each step logged once, the final weights.

Faults, each with its expected outcome:
- ``plugin_skip``: a reward raising on every third call with ``on_error: skip`` -> the run finishes.
- ``plugin_raise``: the same without ``on_error`` -> exit 2, the plugin named, finished steps checkpointed.
- ``nan_loss``: handled in-process by the NaN guard (tests/test_checkpoints.py); not repeated here.
- ``retriever_restart``: pay-per-search against a retriever server that is killed and restarted while
  the run searches -> the client retries and the run finishes with no lost rows.
- ``retriever_load``: 32 concurrent clients for 60 s, one request in ten malformed, the server killed
  and restarted halfway -> every valid request answered, every malformed one a 4xx.

Writes ``bench/results/faults.json``; the last line is
``resume_exact=<k>/<n> max_abs_diff=<x> faults_survived=<k>/<n> rows_lost=<n>``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as `python bench/faults.py`

import yaml  # noqa: E402

from bench.common import REPO, RESULTS  # noqa: E402

STEPS = 5
TINY = [
    "--rollout.engine", "hf", "--gradient_checkpointing", "false", "--eval.before", "false",
    "--eval.after", "false", "--per_device_train_batch_size", "8", "--num_generations", "4",
    "--steps_per_generation", "1", "--run.plot", "false", "--bf16", "false", "--seed", "0",
    "--report_to", "none", "--max_steps", str(STEPS), "--save_steps", "1",
]  # fmt: skip
METHODS = {
    "grpo": ("quickstart", ["--data.size", "32", "--max_completion_length", "16"]),
    "spark": ("spark_math", ["--data.max_samples", "32", "--max_completion_length", "16"]),
    "mash": ("mash_search", ["--data.max_samples", "16", "--max_completion_length", "48", "--search.max_turn_tokens", "24"]),
    "memory_r_plus": ("memory_r_gsm8k", ["--data.max_samples", "32", "--max_completion_length", "16"]),
    "ttrl": ("quickstart", ["--data.size", "32", "--max_completion_length", "16", "--method.name", "ttrl", "--method.train_samples", "2"]),
}  # fmt: skip
NOT_COMPARED = ("time/", "step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "POSTTRAIN_DEBUG"}
    tests = str(REPO / "tests")  # the seeded random reward and the failing plugin live in tests/
    env.update(PYTHONPATH=os.pathsep.join([tests, str(REPO)]), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    return env


def _command(recipe: Path, flags: list[str], out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "posttrain.cli",
        "train",
        str(recipe),
        *TINY,
        *flags,
        "--output_dir",
        str(out),
        *extra,
    ]


def _recipe(
    work: Path, method: str, model: str, rewards_extra: list[dict] | None = None
) -> tuple[Path, list[str]]:
    name, flags = METHODS[method]
    recipe = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())
    recipe["rewards"].append({"name": "helpers_plugins:SeededRandom", "weight": 1.0})
    recipe["rewards"] += rewards_extra or []
    recipe["model"]["name_or_path"] = model
    path = work / f"{method}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path, flags


def _rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [m for m in map(json.loads, path.read_text().splitlines()) if "loss" in m]


def _compare(full: Path, other: Path) -> tuple[bool, float, int]:
    """(exact, largest difference, rows lost or duplicated) between two finished runs."""
    from safetensors.torch import load_file

    want, got = _rows(full), _rows(other)
    lost = abs(len(want) - len(got)) + sum(a["step"] != b["step"] for a, b in zip(want, got))
    worst = 0.0
    for a, b in zip(want, got):
        for key, x in a.items():
            if not isinstance(x, float) or key.startswith(NOT_COMPARED):
                continue
            y = b.get(key)
            if y is None or math.isnan(x) != math.isnan(y):
                worst = math.inf
            elif not math.isnan(x):
                worst = max(worst, abs(x - y))
    wa, wb = load_file(full / "model.safetensors"), load_file(other / "model.safetensors")
    worst = max(worst, max((wa[k] - wb[k]).abs().max().item() for k in wa))
    return lost == 0 and worst <= 1e-6, worst, lost


def _timed_run(recipe: Path, flags: list[str], out: Path) -> float:
    """Run to the end; the mean seconds between logged steps (what a kill point is drawn within)."""
    proc = subprocess.Popen(
        _command(recipe, flags, out),
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: dict[int, float] = {}
    while proc.poll() is None:
        seen.setdefault(len(_rows(out)), time.monotonic())
        time.sleep(0.02)
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted run in {out} failed (exit {proc.returncode})")
    times = [seen[k] for k in sorted(seen) if k >= 1]
    return (times[-1] - times[0]) / max(len(times) - 1, 1) if len(times) > 1 else 1.0


def _kill(recipe: Path, flags: list[str], out: Path, rng: random.Random, step_s: float) -> dict:
    """Start the run and SIGKILL it a random part of a step after a random logged step."""
    after = rng.randint(0, STEPS - 2)
    delay = rng.uniform(0, step_s)
    proc = subprocess.Popen(
        _command(recipe, flags, out),
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and len(_rows(out)) < after and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    killed_at = len(_rows(out))
    finished_first = proc.poll() is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {
        "kill_after_rows": after,
        "delay_s": round(delay, 3),
        "rows_at_kill": killed_at,
        "finished_before_kill": finished_first,
        "killed_during_save": (out / ".staging").exists(),  # a checkpoint was being written
    }


def _kill_and_resume(recipe: Path, flags: list[str], out: Path, rng: random.Random, step_s: float) -> dict:
    """A kill (a draw the run outlived, finishing first, is drawn again up to three times), then the
    resume: from the newest complete checkpoint, or afresh when none was complete yet."""
    for _ in range(3):
        info = _kill(recipe, flags, out, rng, step_s)
        if not info["finished_before_kill"]:
            break
        shutil.rmtree(out, ignore_errors=True)
    extra = ("--resume",) if any(out.glob("checkpoint-*")) else ("--overwrite",)
    resumed = subprocess.run(
        _command(recipe, flags, out, *extra), env=_env(), cwd=REPO, capture_output=True, text=True
    )
    return {
        **info,
        "resumed_with": extra[0],
        "resume_rc": resumed.returncode,
        "resume_error": resumed.stderr[-1500:] if resumed.returncode else "",
    }


def kill_points(work: Path, model: str, methods: list[str], points: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    results = []
    for method in methods:
        recipe, flags = _recipe(work, method, model)
        full = work / f"{method}-full"
        step_s = _timed_run(recipe, flags, full)
        for i in range(points):
            out = work / f"{method}-kill{i}"
            info = _kill_and_resume(recipe, flags, out, rng, step_s)
            exact, diff, lost = _compare(full, out) if info["resume_rc"] == 0 else (False, math.inf, STEPS)
            results.append(
                {
                    "method": method,
                    "point": i,
                    **info,
                    "exact": exact,
                    "max_abs_diff": diff,
                    "rows_lost": lost,
                }
            )
            print(f"{method} kill {i}: {json.dumps(results[-1])}", flush=True)
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def plugin_faults(work: Path, model: str) -> list[dict]:
    out = []
    skip = [{"name": "helpers_plugins:fails_every_third_call", "on_error": "skip"}]
    recipe, flags = _recipe(work, "grpo", model, skip)
    run = subprocess.run(
        _command(recipe, flags, work / "plugin-skip"), env=_env(), cwd=REPO, capture_output=True, text=True
    )
    steps = [r["step"] for r in _rows(work / "plugin-skip")]
    out.append(
        {
            "fault": "plugin_skip",
            "survived": run.returncode == 0 and steps == list(range(1, STEPS + 1)),
            "rc": run.returncode,
        }
    )
    recipe, flags = _recipe(work, "grpo", model, [{"name": "helpers_plugins:fails_every_third_call"}])
    run = subprocess.run(
        _command(recipe, flags, work / "plugin-raise"), env=_env(), cwd=REPO, capture_output=True, text=True
    )
    named = "fails_every_third_call" in run.stderr and "finished steps are kept" in run.stderr
    out.append(
        {
            "fault": "plugin_raise",
            "survived": run.returncode == 2 and named and "Traceback" not in run.stderr,
            "rc": run.returncode,
        }
    )
    return out


def retriever_restart(work: Path, model: str) -> dict:
    """pay-per-search against a served retriever that is killed and restarted during the run."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "posttrain.cli", "retriever", "serve", "--port", str(port)]
    server = subprocess.Popen(
        serve, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    from posttrain.retrieval.client import RetrievalClient

    RetrievalClient(url).wait_until_ready(timeout=120)
    recipe, flags = _recipe(work, "mash", model)
    out = work / "retriever-restart"
    run = subprocess.Popen(
        _command(recipe, flags, out, "--search.retriever", url, "--search.retries", "6"),
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while run.poll() is None and len(_rows(out)) < 1:
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait()
    time.sleep(2.0)  # down for a while: the client backs off and retries
    server = subprocess.Popen(
        serve, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, err = run.communicate(timeout=600)
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    steps = [r["step"] for r in _rows(out)]
    lost = STEPS - len(set(steps)) + (len(steps) - len(set(steps)))
    return {
        "fault": "retriever_restart",
        "survived": run.returncode == 0 and lost == 0,
        "rc": run.returncode,
        "rows_lost": lost,
        "error": err[-1500:] if run.returncode else "",
    }


def retriever_load(seconds: float, clients: int = 32, seed: int = 0) -> dict:
    """``clients`` threads for ``seconds`` against one retriever, one request in ten malformed, and a
    kill -9 plus restart of the server halfway: every valid request answered (the client retries), every
    malformed one a 4xx, none lost."""
    import threading

    import requests

    from posttrain.retrieval.client import RetrievalClient

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "posttrain.cli", "retriever", "serve", "--port", str(port)]
    server = subprocess.Popen(
        serve, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    RetrievalClient(url).wait_until_ready(timeout=120)
    questions = [f"Who won Super Bowl {n}?" for n in range(1, 60)] + [
        "Where is the Nile?",
        "Luther 95 theses",
    ]
    bad_bodies = [b"{not json", b'{"queries": "x"}', b'{"queries": ["a"], "k": 0}', b"[1]"]
    stop = time.monotonic() + seconds
    counts = {"valid": 0, "valid_errors": 0, "malformed": 0, "malformed_not_4xx": 0, "lost": 0}
    lock = threading.Lock()

    def worker(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        client = RetrievalClient(url, retries=8, backoff=0.5)
        while time.monotonic() < stop:
            if rng.random() < 0.1:
                try:
                    answer = requests.post(f"{url}/search", data=rng.choice(bad_bodies), timeout=10)
                    ok = 400 <= answer.status_code < 500
                except requests.RequestException:
                    ok = True  # the server is restarting: nothing was answered, nothing to check
                with lock:
                    counts["malformed"] += 1
                    counts["malformed_not_4xx"] += not ok
            else:
                batch = rng.sample(questions, 4)
                try:
                    hits = client.search(batch, 3)
                    ok = len(hits) == len(batch)
                except Exception:
                    ok = False
                with lock:
                    counts["valid"] += 1
                    counts["valid_errors"] += not ok
                    counts["lost"] += not ok

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds / 2)
    server.send_signal(signal.SIGKILL)
    server.wait()
    server = subprocess.Popen(
        serve, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for t in threads:
        t.join()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    survived = counts["valid_errors"] == 0 and counts["malformed_not_4xx"] == 0
    return {
        "fault": "retriever_load",
        "survived": survived,
        "rows_lost": counts["lost"],
        "clients": clients,
        "seconds": seconds,
        **counts,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--points", type=int, default=3, help="kill points per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_server", action="store_true", help="skip the retriever faults")
    parser.add_argument("--load_seconds", type=float, default=60, help="the retriever load test's length")
    parser.add_argument("--out", default=str(RESULTS / "faults.json"))
    args = parser.parse_args(argv)
    from posttrain.testing import make_tiny_model

    work = Path(tempfile.mkdtemp(prefix="posttrain-faults-"))
    try:
        model = str(make_tiny_model(work / "model"))
        kills = kill_points(work, model, args.methods, args.points, args.seed)
        faults = plugin_faults(work, model)
        if not args.no_server:
            faults.append(retriever_restart(work, model))
            faults.append(retriever_load(args.load_seconds, seed=args.seed))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    exact = sum(k["exact"] and not k["finished_before_kill"] for k in kills)  # a real kill, resumed exactly
    finite = [k["max_abs_diff"] for k in kills]
    head = {
        "resume_exact": f"{exact}/{len(kills)}",
        "max_abs_diff": max(finite, default=0.0),
        "faults_survived": f"{sum(f['survived'] for f in faults)}/{len(faults)}",
        "rows_lost": sum(k["rows_lost"] for k in kills) + sum(f.get("rows_lost", 0) for f in faults),
    }
    payload = {**head, "kills": kills, "faults": faults, "steps": STEPS, "seed": args.seed}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(" ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in head.items()))
    return payload


if __name__ == "__main__":
    main()
