"""The proof harness (bench/methods.py): one tiny-model smoke run per method, and its statistics.

    pytest tests/test_bench_methods.py -q

Each smoke run is one seed, two steps, a few held-out questions: it checks that the setting builds its
data and recipes, trains every arm, evaluates, and reports every figure with an interval and the
headline line. The numbers mean nothing on a random tiny model.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

SMOKE = {
    "grpo": ["--data.size", "64", "--per_device_train_batch_size", "8", "--num_generations", "4"],
    "spark": ["--data.size", "64", "--per_device_train_batch_size", "8", "--num_generations", "4", "--judge_warm_start", "8"],
    "gcpo": ["--train_size", "32", "--per_device_train_batch_size", "8", "--num_generations", "4"],
    "mash": ["--per_device_train_batch_size", "8", "--num_generations", "4", "--known_questions", "24", "--warm_examples", "8"],
    "ttrl": ["--n_votes", "4", "--n_train", "2", "--trainer.per_device_train_batch_size", "8"],
    "ttrv": ["--n_votes", "4", "--n_train", "2", "--trainer.per_device_train_batch_size", "8"],
    "memory_r_plus": ["--data.size", "64", "--per_device_train_batch_size", "8", "--num_generations", "4"],
    "dynamic_demo": ["--data.size", "64", "--per_device_train_batch_size", "8", "--num_generations", "4"],
    "dynamic_ttrl": ["--n_votes", "4", "--n_train", "2", "--trainer.per_device_train_batch_size", "8"],
    "async_server": ["--data.size", "64", "--per_device_train_batch_size", "8", "--num_generations", "4"],
}  # fmt: skip
LENGTH = {m: "--trainer.max_completion_length" for m in ("ttrl", "ttrv", "dynamic_ttrl")}


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda name: importlib.import_module(f"bench.{name}")
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", list(SMOKE))
def test_harness_smoke(bench, method, tiny_model, tmp_path, capsys):
    out = tmp_path / f"{method}.json"
    argv = ["--method", method, "--model", tiny_model, "--seeds", "1", "--max_steps", "2", "--eval_size", "8"]
    argv += [
        "--out",
        str(out),
        "--runs_dir",
        str(tmp_path / "runs"),
        LENGTH.get(method, "--max_completion_length"),
    ]
    argv += ["16" if method == "mash" else "8", *SMOKE[method]]
    headline = bench("methods").main(argv)

    last = capsys.readouterr().out.strip().splitlines()[-1]
    from bench.common import parse_headline

    parsed = parse_headline(last)
    assert list(parsed)[:3] == [f"{method}_effect", f"{method}_ci_low", f"{method}_ci_high"]
    assert set(parsed) == set(headline)
    result = json.loads(out.read_text())
    assert result["complete"] and result["seeds"] == [0]
    setting = bench("methods").load_setting(method)
    assert set(result["figures"]) == {f.name for f in setting.figures}
    for figure in result["figures"].values():
        assert len(figure["per_seed"]) == 1 and {"mean", "ci_low", "ci_high"} <= set(figure)
    for arm in setting.arms:
        run = result["runs"][0]["arms"][arm.name]
        assert run["steps"] == 2 and "after" in run["phases"]
    assert out.with_suffix(".png").exists()
    for key in headline:
        same = result[key] == pytest.approx(headline[key], nan_ok=True)
        assert same or (math.isnan(result[key]) and math.isnan(headline[key]))


def test_pipeline_smoke_prints_the_dynamic_sampling_figures(bench, tiny_model, tmp_path, capsys):
    argv = [
        "--only",
        "dynamic_demo",
        "--seeds",
        "1",
        "--model",
        tiny_model,
        "--max_steps",
        "2",
        "--eval_size",
        "8",
    ]
    argv += ["--out", str(tmp_path / "pipeline.json"), "--methods_dir", str(tmp_path / "methods")]
    argv += ["--runs_dir", str(tmp_path / "runs"), "--max_completion_length", "8", *SMOKE["dynamic_demo"]]
    figures = bench("pipeline").main(argv)
    from bench.common import parse_headline

    last = parse_headline(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(last) == ["signal_steps_dynamic", "signal_steps_plain", "signal_groups_dynamic"] + [
        "signal_groups_plain",
        "dynamic_acc",
        "plain_acc",
    ]
    assert last == pytest.approx(figures, nan_ok=True)
    assert (tmp_path / "methods" / "dynamic_demo.json").exists()
    assert json.loads((tmp_path / "pipeline.json").read_text())["settings"]["dynamic_demo"]


def test_resume_keeps_finished_runs(bench, tiny_model, tmp_path, capsys):
    out, runs = tmp_path / "grpo.json", tmp_path / "runs"
    argv = [
        "--method",
        "grpo",
        "--model",
        tiny_model,
        "--max_steps",
        "1",
        "--eval_size",
        "4",
        "--out",
        str(out),
    ]
    argv += ["--runs_dir", str(runs), "--max_completion_length", "8", *SMOKE["grpo"]]
    bench("methods").main([*argv, "--seeds", "1"])
    first = json.loads(out.read_text())["runs"][0]
    bench("methods").main([*argv, "--seeds", "2", "--resume"])
    result = json.loads(out.read_text())
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["runs"][0] == first  # seed 0 was not run again


# --------------------------------------------------------------------------------------------------
# bench/results_doc.py: docs/results.md quotes only what the JSON files hold
# --------------------------------------------------------------------------------------------------


def test_seeds_is_a_count_or_a_list_and_zero_seeds_is_refused(bench):
    methods = bench("methods")
    assert methods.seed_list([3]) == [0, 1, 2]
    assert methods.seed_list([3, 4]) == [3, 4]
    with pytest.raises(SystemExit, match="--seeds 1"):
        methods.seed_list([0])


def test_results_doc_is_in_sync_with_the_json_files(bench):
    assert bench("results_doc").main(["--check"]) == 0, "run `python bench/results_doc.py`"


def test_results_doc_table_quotes_every_figure_and_calls_the_effect(bench):
    fig = {"mean": 0.25, "ci_low": 0.1, "ci_high": 0.4, "per_seed": [0.2, 0.3]}
    results = {
        "method": "grpo",
        "complete": True,
        "seeds": [0, 1],
        "budget_seconds": 300.0,
        "eval_size": 200,
        "arms": {"grpo": {}},
        "figures": {"greedy_after": fig, "greedy_before": {**fig, "mean": 0.05, "ci_low": 0.0}},
        "extra": {
            "minutes_to_90pct": 5.0,
            "gain_by_minutes": [
                {"minutes": 2.5, "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3, "per_seed": [0.2]}
            ],
            "curve": {"ignored": 1},
        },
        "effect": {
            "of": "greedy_after",
            "minus": "greedy_before",
            "mean": 0.2,
            "ci_low": -0.01,
            "ci_high": 0.3,
        },
    }
    text = bench("results_doc").table(results)
    assert "| greedy_after | 0.250 | [0.100, 0.400] | 0.200, 0.300 |" in text
    assert (
        "| minutes_to_90pct | 5.000 |" in text
        and "| gain after 2.5 min | 0.200 | [0.100, 0.300] | 0.200 |" in text
    )
    assert "curve" not in text
    assert "no effect" in text  # the interval reaches below 0
    results["effect"]["ci_low"] = 0.05
    assert "an effect (the interval excludes 0)" in bench("results_doc").table(results)
    assert "incomplete" in bench("results_doc").table({**results, "complete": False})


def test_results_doc_summary_has_a_line_per_block(bench, tmp_path, monkeypatch):
    doc = bench("results_doc")
    monkeypatch.setattr(doc, "RESULTS", tmp_path)
    eff = {"of": "a", "minus": "b", "mean": 0.1, "ci_low": 0.02, "ci_high": 0.2}
    run = {"complete": True, "seeds": [0, 1, 2], "budget_seconds": 240.0, "effect": eff}
    run.update(method="m", eval_size=200, arms={"m": {}}, figures={})
    (tmp_path / "m1.json").write_text(json.dumps(run))
    (tmp_path / "m2.json").write_text(json.dumps({**run, "effect": {**eff, "ci_low": -0.1}}))
    text = "<!-- table:summary -->\n<!-- /table:summary -->\n" + "".join(
        f"<!-- table:{n} -->\n<!-- /table:{n} -->\n" for n in ("m1", "m2", "m3")
    )
    rows = doc.refresh(text).split("<!-- /table:summary -->")[0].splitlines()[3:]
    assert rows == [
        "| m1 | 3 x 4 min | `a - b` | 0.100 | [0.020, 0.200] | an effect |",
        "| m2 | 3 x 4 min | `a - b` | 0.100 | [-0.100, 0.200] | no effect |",
        "| m3 | | | | | not run or incomplete |",
    ]


# --------------------------------------------------------------------------------------------------
# bench/stats.py
# --------------------------------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_questions():
    from bench.stats import bootstrap, mean_over

    rng = np.random.default_rng(0)
    small = rng.binomial(1, 0.3, size=(3, 50)).astype(float)
    large = rng.binomial(1, 0.3, size=(3, 2000)).astype(float)

    def figure(data):
        return lambda s, q: float(np.mean([mean_over(data[i], q) for i in s]))

    a, b = bootstrap(figure(small), 3, 50), bootstrap(figure(large), 3, 2000)
    assert a.low <= a.mean <= a.high and b.low <= b.mean <= b.high
    assert (b.high - b.low) < (a.high - a.low)
    assert abs(b.mean - 0.3) < 0.03


def test_bootstrap_detects_a_real_difference_and_not_a_null_one():
    from bench.stats import bootstrap

    rng = np.random.default_rng(1)
    base = rng.binomial(1, 0.3, size=(3, 400)).astype(float)
    better = np.clip(base + rng.binomial(1, 0.2, size=base.shape), 0, 1)  # +~0.14 on the same questions
    same = rng.binomial(1, 0.3, size=(3, 400)).astype(float)

    def diff(x, y):
        return lambda s, q: float(np.mean([x[i][q].mean() - y[i][q].mean() for i in s]))

    assert bootstrap(diff(better, base), 3, 400).excludes_zero()
    assert not bootstrap(diff(same, base), 3, 400).excludes_zero()


def test_balanced_accuracy_does_not_reward_a_judge_that_always_says_no():
    from bench.stats import balanced_accuracy

    labels = [True] * 10 + [False] * 90
    assert balanced_accuracy(labels, [False] * 100) == 0.5  # plain accuracy would be 0.9
    assert balanced_accuracy(labels, labels) == 1.0
    assert balanced_accuracy(labels, [None] * 100) == 0.0  # unreadable verdicts are wrong
    assert math.isnan(balanced_accuracy([True, True], [True, False]))  # one class only


def test_undefined_replicates_are_dropped():
    from bench.stats import bootstrap

    ci = bootstrap(lambda s, q: math.nan, 2, 10)
    assert math.isnan(ci.mean) and math.isnan(ci.low)
    seeds_only = bootstrap(lambda s, q: float(np.mean([[0.1, 0.3][i] for i in s])), 2, 0)
    assert seeds_only.low >= 0.1 and seeds_only.high <= 0.3 and seeds_only.mean == pytest.approx(0.2)
