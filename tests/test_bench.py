"""Smoke tests of the benchmarks in ``bench/``: each main function on the tiny model, tiny settings.

    pytest tests/test_bench.py -q          # ~20-30 s on 2 CPU cores

They check that each benchmark runs end to end, writes its JSON, and prints its headline figures on
the last line as ``name=value`` pairs; the numbers themselves mean nothing on a random tiny model.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Shrink the quickstart recipe so a step takes well under a second on the tiny model.
TINY_FLAGS = [
    "--per_device_train_batch_size", "8",
    "--num_generations", "4",
    "--max_completion_length", "8",
    "--data.size", "64",
]  # fmt: skip


@pytest.fixture
def bench(monkeypatch):
    """Import ``bench.<name>`` from the repository root, whatever directory pytest put on sys.path."""
    monkeypatch.syspath_prepend(str(REPO))
    # One torch thread: a tiny model gains nothing from more, and it keeps the test steady on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda name: importlib.import_module(f"bench.{name}")
    torch.set_num_threads(threads)


def last_line(capsys) -> dict[str, float]:
    from bench.common import parse_headline

    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines, "the benchmark printed nothing"
    return parse_headline(lines[-1])


def test_overhead(bench, tiny_model, tmp_path, capsys):
    out = tmp_path / "overhead.json"
    argv = ["--model", tiny_model, "--steps", "2", "--rounds", "1", "--out", str(out), *TINY_FLAGS]
    bench("overhead").main(argv)

    headline = last_line(capsys)
    assert list(headline) == ["overhead_ratio", "update_share_padding", "update_over_ceiling", "peak_rss_gb"]
    assert headline["overhead_ratio"] > 0 and headline["update_over_ceiling"] > 0
    assert 0 <= headline["update_share_padding"] < 1
    result = json.loads(out.read_text())
    assert 0 < result["peak_rss_gb"]["posttrain"] < 20 and result["peak_rss_gb"]["update_off"] > 0
    # Shared prompts when a prompt has two rows with trained tokens (truncated rows are masked out).
    assert result["update"]["posttrain_path"]["path"] in ("shared", "buckets")
    assert [r["side"] for r in result["runs"]] == ["trl", "posttrain"]
    assert all(len(r["step_seconds"]) == 2 for r in result["runs"])
    assert result["overhead_ratio"] == pytest.approx(headline["overhead_ratio"], abs=1e-3)
    assert result["config"]["recipe"]["trainer"]["max_steps"] == 2
    assert result["config"]["recipe"]["trainer"]["save_strategy"] == "no"
    # Same seed, same rows, same config: both sides generated and scored the same completions and
    # computed the same entropy from their log-probabilities (fp32 on the tiny model: to 1e-5).
    assert result["same_work"]["match"], result["same_work"]


def test_learning(bench, tiny_model, tmp_path, capsys):
    out = tmp_path / "learning.json"
    argv = [
        "--model", tiny_model,
        "--steps", "2",
        "--budget", "60",
        "--eval_size", "4",
        "--runs_dir", str(tmp_path / "runs"),
        "--out", str(out),
        "--eval.num_samples", "2",
        "--run.plot", "false",
        *TINY_FLAGS,
    ]  # fmt: skip
    bench("learning").main(argv)

    headline = last_line(capsys)
    assert list(headline) == ["posttrain_before", "posttrain_after", "trl_before", "trl_after"]
    assert all(0.0 <= v <= 1.0 for v in headline.values())
    result = json.loads(out.read_text())
    for side in ("posttrain", "trl"):
        assert result[side]["steps"] == 2
        assert result[side]["before"]["n"] == 4
        assert {"accuracy_greedy", "mean@2", "maj@2"} <= set(result[side]["after"])
        assert (tmp_path / "runs" / side / "eval_after.json").is_file()
    assert result["before_match"]
    assert result["config"]["budget_seconds"] == 60.0
    assert headline["trl_after"] == pytest.approx(result["trl"]["after"]["accuracy_greedy"], abs=1e-3)


def test_compare_methods(bench, tiny_model, tmp_path, capsys):
    out = tmp_path / "gcpo.json"
    argv = [
        "--model", tiny_model,
        "--device", "cpu",
        "--steps", "2",
        "--budget", "60",
        "--eval_size", "4",
        "--warmup_steps", "0",
        "--runs_dir", str(tmp_path / "runs"),
        "--out", str(out),
        "--eval.num_samples", "2",
        "--run.plot", "false",
        *TINY_FLAGS,
    ]  # fmt: skip
    bench("compare_methods").main(argv)

    headline = last_line(capsys)
    assert list(headline) == ["grpo_before", "grpo_after", "gcpo_before", "gcpo_after"]
    assert all(0.0 <= v <= 1.0 for v in headline.values())
    result = json.loads(out.read_text())
    assert result["config"]["budget_seconds"] == 60.0
    for arm in ("grpo", "gcpo"):
        assert result[arm]["method"] == arm
        assert result[arm]["steps"] == 2
        assert result[arm]["before"]["n"] == 4
        assert {"accuracy_greedy", "mean@2", "maj@2"} <= set(result[arm]["after"])
        assert set(result[arm]["behaviour"]["after"]) == {"greedy", "samples"}
        assert len(result[arm]["curves"]["step"]) == 2
    assert [r["name"] for r in result["grpo"]["rewards"]] == ["accuracy"]
    assert [r["name"] for r in result["gcpo"]["rewards"]] == ["accuracy", "gcpo_contrastive", "length"]
    # Only the gcpo arm logs the contrastive mask; its metrics are kept as curves, one value per step.
    assert len(result["gcpo"]["curves"]["gcpo/mask_pos"]) == 2
    assert "gcpo/aux_rate" not in result["grpo"]["curves"]
    assert result["before_match"]
    assert (tmp_path / "gcpo.png").is_file()
    assert headline["gcpo_after"] == pytest.approx(result["gcpo"]["after"]["accuracy_greedy"], abs=1e-3)


def test_compare_methods_spark(bench, tiny_model, tmp_path, capsys):
    out = tmp_path / "spark.json"
    argv = [
        "--model", tiny_model, "--device", "cpu", "--methods", "grpo", "spark", "--steps", "2",
        "--budget", "60", "--eval_size", "4", "--warmup_steps", "0", "--runs_dir", str(tmp_path / "runs"),
        "--out", str(out), "--run.plot", "false", *TINY_FLAGS,
    ]  # fmt: skip
    bench("compare_methods").main(argv)

    headline = last_line(capsys)
    assert list(headline) == ["grpo_after", "spark_after", "grpo_judge", "spark_judge", "spark_reflect"]
    assert all(0.0 <= v <= 1.0 for v in headline.values())
    result = json.loads(out.read_text())
    assert result["spark"]["method"] == "spark"
    assert [r["name"] for r in result["spark"]["rewards"]] == ["accuracy", "spark_judge"]
    for arm in ("grpo", "spark"):
        assert {"judge", "reflect"} <= set(result[arm]["selfcheck"])
        assert result[arm]["selfcheck"]["reflect"]["n"] == 4
    assert "tasks/solve/count" in result["spark"]["curves"]


def test_testtime(bench, tiny_model, tmp_path, capsys):
    out = tmp_path / "testtime.json"
    argv = [
        "--model", tiny_model, "--questions", "4", "--n_votes", "4", "--n_train", "2", "--k", "4",
        "--steps", "1", "--max_tokens", "8", "--runs_dir", str(tmp_path / "runs"), "--out", str(out),
    ]  # fmt: skip
    bench("testtime").main(argv)

    headline = last_line(capsys)
    assert list(headline) == ["greedy_before", "greedy_after", "maj_before", "maj_after", "label_accuracy"]
    result = json.loads(out.read_text())
    assert result["metrics"]["steps"] == 1 and result["metrics"]["labelled"] is True
    assert headline["maj_after"] == pytest.approx(result["metrics"]["after"]["maj@4"], abs=1e-3)


def test_search(bench, tiny_model, tmp_path, capsys):
    out = tmp_path / "search.json"
    argv = [
        "--model", tiny_model, "--warm_examples", "8", "--budget", "60", "--max_steps", "1", "--eval_size", "4",
        "--train_questions", "16", "--num_generations", "2", "--questions_per_step", "2", "--max_tokens", "64",
        "--doc_chars", "40", "--turn_tokens", "16", "--qps_seconds", "0.5", "--runs_dir", str(tmp_path / "runs"),
        "--out", str(out),
    ]  # fmt: skip
    bench("search").main(argv)

    headline = last_line(capsys)
    assert list(headline) == [
        "em_before", "em_after", "searches_before", "searches_after", "qps_inprocess", "qps_server8"
    ]  # fmt: skip
    result = json.loads(out.read_text())
    qps = result["throughput"]
    assert qps["server_errors"] == 0 and qps["server_agrees_with_index"] == 1.0
    assert qps["qps_inprocess"] > 0 and qps["qps_server1"] > 0 and qps["qps_server8"] > 0
    assert result["training"]["rl"]["steps"] == 1 and result["training"]["warm_start"]["examples"] == 8
