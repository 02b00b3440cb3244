"""Multi-process training on CPU (posttrain/distributed.py, accelerate_configs/*.yaml).

pytest tests/test_distributed.py -q

The launches are real: ``accelerate launch`` starts 2 processes on the tiny random model (gloo on
CPU, one thread each), 2 steps. They cover DeepSpeed ZeRO-2 and ZeRO-3 through the shipped YAMLs, a
group-level reward giving the same rewards and advantages on 1 and 2 processes, and a crash on one
rank ending the whole launch. The first DeepSpeed launch on a machine compiles a small shared-memory
op with g++ (~40 s, cached in ~/.cache/torch_extensions); later ones take ~15 s. The plugins they load
are in tests/dist/probes.py. The rest are in-process unit tests of the precision rule and the launcher.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from posttrain import cli, distributed
from posttrain.config import load_recipe
from posttrain.distributed import (
    launch_command,
    reconcile_precision,
    relaunch,
    resolve_accelerate_config,
    should_relaunch,
)
from posttrain.errors import ConfigError

TESTS = Path(__file__).parent
ROOT = TESTS.parent
CONFIGS = ROOT / "accelerate_configs"
BIN = Path(sys.executable).parent
HAVE_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
needs_deepspeed = pytest.mark.skipif(
    not HAVE_DEEPSPEED, reason="deepspeed is not installed (pip install -e '.[deepspeed]')"
)
# Bound on one launch: a hang (a rank waiting forever in a collective) fails the test instead of the suite.
LAUNCH_TIMEOUT_S = 180


# --------------------------------------------------------------------------------------------------
# Launch helpers
# --------------------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*distributed.LAUNCHED_ENV, "POSTTRAIN_DEBUG")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(TESTS / "dist"), str(TESTS)]),
        # 2 processes on a 2-core machine: one thread each, or they fight over the cores.
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        MPLBACKEND="Agg",
    )
    return env


def _accelerate(config: str, *args: str) -> list[str]:
    # A free port per launch: a test's launch never meets a previous one still releasing 29500.
    return [
        str(BIN / "accelerate"),
        "launch",
        "--config_file",
        str(CONFIGS / config),
        "--main_process_port",
        "0",
        *args,
    ]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a launch in its own process group, so a hang ends with every worker killed, not orphaned."""
    proc = subprocess.Popen(
        args,
        env=_env(),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the launch did not end within {LAUNCH_TIMEOUT_S} s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _steps(out: Path) -> list[int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def workdir(tiny_model, tmp_path_factory):
    """A 16-row data set and a writer of tiny recipes: 2 steps, groups of 4, 8-token completions."""
    base = tmp_path_factory.mktemp("dist")
    data = base / "sums.jsonl"
    rows = [{"question": f"What is {a}+{b}?", "answer": str(a + b)} for a in range(4) for b in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def recipe(name: str, rewards: list[dict], sections: dict | None = None, **trainer) -> Path:
        spec = {
            **(sections or {}),
            "model": {"name_or_path": tiny_model},
            "data": {"path": str(data)},
            "rewards": rewards,
            "trainer": {
                "output_dir": str(base / name),
                "max_steps": 2,
                "num_generations": 4,
                "per_device_train_batch_size": 4,
                "max_completion_length": 8,
                "learning_rate": 1e-2,
                "save_strategy": "no",
                "seed": 0,
                **trainer,
            },
            "run": {"plot": False},
        }
        path = base / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return {"base": base, "recipe": recipe}


# --------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO on CPU through the shipped YAMLs
# --------------------------------------------------------------------------------------------------


@needs_deepspeed
@pytest.mark.parametrize(
    "config, stage, optimizer",
    [
        ("zero2.yaml", 2, "DeepSpeedZeroOptimizer"),
        ("zero3.yaml", 3, "DeepSpeedZeroOptimizer_Stage3"),
    ],
)
def test_deepspeed_zero_on_cpu(workdir, config, stage, optimizer):
    """The acceptance command on the tiny model: the YAML as shipped (use_cpu: false, bf16) on CPU."""
    base = workdir["base"]
    name = config.removesuffix(".yaml")
    probe = {"name": "probes:EngineProbe", "kwargs": {"out_dir": str(base / f"{name}-probe")}}
    # Random scores: every group has reward variance, so the update is not a no-op.
    recipe = workdir["recipe"](name, [probe, {"name": "helpers_plugins:SeededRandom"}])
    args = ["--num_processes", "2", "-m", "posttrain.train", str(recipe), "--max_steps", "2"]
    result = _run(_accelerate(config, *args), ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    out = base / name
    assert _steps(out) == [1, 2]
    assert (out / "model.safetensors").is_file()  # ZeRO-3: the shards were gathered into one file
    for rank in (0, 1):
        seen = json.loads((base / f"{name}-probe" / f"engine-rank{rank}.json").read_text())
        assert seen["world_size"] == 2 and seen["backend"] == "gloo"
        assert seen["distributed_type"] == "DistributedType.DEEPSPEED"
        assert (seen["engine"], seen["zero_stage"], seen["optimizer"]) == (
            "DeepSpeedEngine",
            stage,
            optimizer,
        )
        # The YAML's mixed_precision: bf16 reached DeepSpeed (which casts the weights) and the trainer.
        assert seen["param_dtype"] == "torch.bfloat16"
    assert "Precision from the accelerate config (mixed_precision: bf16)" in result.stderr


# --------------------------------------------------------------------------------------------------
# Equivalence: a group-level reward on 1 process and on 2
# --------------------------------------------------------------------------------------------------


def _completions(out: Path) -> list[dict]:
    """TRL's per-step table of the gathered batch (``log_completions``): prompt, completion, rewards, advantage."""
    import pandas as pd

    files = sorted((out / "completions").glob("completions_*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files]).to_dict("records")


def test_group_reward_is_the_same_on_one_and_two_processes(workdir):
    """Groups split over two DDP processes score and normalise as on one process.

    Generation is greedy (``do_sample: false``): sampling draws from a per-process seed, so sampled
    completions differ with the number of processes; greedy ones do not. The reward depends on the
    completion and on its position within its group, so a group put back out of order scores differently.
    """
    common = {
        "bf16": False,  # fp32: the two runs batch generation differently, keep round-off out of the argmax
        "log_completions": True,
        "generation_kwargs": {"do_sample": False},
        "num_completions_to_print": 0,
    }
    rewards = [{"name": "probes:answer_length_position"}]
    # The same global batch per step, 3 groups of 4: 12 rows on one process here; below 6 + 6 on two,
    #   rank 0: A A A A B B | rank 1: B B C C C C   (group B is split over the processes)
    one = workdir["recipe"]("one-process", rewards, per_device_train_batch_size=12, **common)
    two = workdir["recipe"]("two-processes", rewards, per_device_train_batch_size=6, **common)
    single = _run([sys.executable, "-m", "posttrain.train", str(one)], ROOT)
    assert single.returncode == 0, single.stderr[-4000:]
    args = ["--num_processes", "2", "--mixed_precision", "no", "-m", "posttrain.train", str(two)]
    double = _run(_accelerate("ddp.yaml", *args), ROOT)
    assert double.returncode == 0, double.stderr[-4000:]

    rows_1 = _completions(workdir["base"] / "one-process")
    rows_2 = _completions(workdir["base"] / "two-processes")
    assert len(rows_1) == len(rows_2) == 24  # 2 steps x 3 groups of 4
    for a, b in zip(rows_1, rows_2, strict=True):
        assert (a["step"], a["prompt"], a["completion"]) == (b["step"], b["prompt"], b["completion"])
        assert a["answer_length_position"] == pytest.approx(b["answer_length_position"], abs=1e-6)
        assert a["advantage"] == pytest.approx(b["advantage"], abs=1e-6)
    # Not a vacuous comparison: 6 different prompts, and groups with reward variance.
    assert len({str(row["prompt"]) for row in rows_1}) == 6
    assert any(abs(row["advantage"]) > 0.1 for row in rows_1)


GREEDY = {
    "bf16": False,  # fp32: the two runs batch generation differently, keep round-off out of the argmax
    "log_completions": True,
    "generation_kwargs": {"do_sample": False},
    "num_completions_to_print": 0,
}


def _one_and_two(workdir, name: str, rewards: list[dict], sections: dict | None = None, **trainer):
    """Run the recipe on one process (12 rows per step) and on two (6 + 6, one group split); both must end."""
    one = workdir["recipe"](
        f"{name}-one", rewards, sections, per_device_train_batch_size=12, **GREEDY, **trainer
    )
    two = workdir["recipe"](
        f"{name}-two", rewards, sections, per_device_train_batch_size=6, **GREEDY, **trainer
    )
    single = _run([sys.executable, "-m", "posttrain.train", str(one)], ROOT)
    assert single.returncode == 0, single.stderr[-4000:]
    args = ["--num_processes", "2", "--mixed_precision", "no", "-m", "posttrain.train", str(two)]
    double = _run(_accelerate("ddp.yaml", *args), ROOT)
    assert double.returncode == 0, double.stderr[-4000:]
    return workdir["base"] / f"{name}-one", workdir["base"] / f"{name}-two"


def test_gcpo_and_pay_per_search_are_the_same_on_one_and_two_processes(workdir):
    """The real gcpo_contrastive and pay_per_search (stateful: its history carries over steps), fed
    synthetic completions derived from each row and its position in its group (tests/dist/probes.py), give
    the same rewards and advantages when a group is split over two processes."""
    rewards = [{"name": "probes:GcpoProbe"}, {"name": "probes:PayPerSearchProbe"}]
    one, two = _one_and_two(workdir, "gcpo-pps", rewards, max_steps=3)
    rows_1, rows_2 = _completions(one), _completions(two)
    assert len(rows_1) == len(rows_2) == 36  # 3 steps x 3 groups of 4
    for a, b in zip(rows_1, rows_2, strict=True):
        assert (a["step"], a["prompt"], a["completion"]) == (b["step"], b["prompt"], b["completion"])
        for column in ("GcpoProbe", "PayPerSearchProbe", "advantage"):
            assert a[column] == pytest.approx(b[column], abs=1e-6), column
    # Not vacuous: the mask takes both signs, and some correct answers are discounted for searching.
    assert {row["GcpoProbe"] for row in rows_1} >= {1.0, -1.0}
    assert any(0 < row["PayPerSearchProbe"] < 1 for row in rows_1)


def test_spark_recycling_is_the_same_on_every_process_and_on_one(workdir):
    """SPARK with a group split over two processes: both ranks gather the same batches, so both recycle the
    same tasks into the same queue and the feed gives both the same next batch, each rank training its own
    slice of it; and the batches are those of the one-process run."""
    probes = workdir["base"] / "spark-probes"

    def rewards(procs: str) -> list[dict]:
        out = {"out_dir": str(probes / procs)}
        return [
            {"name": "accuracy", "tasks": ["solve"], "kwargs": {"extract": "first_boxed"}},
            {"name": "spark_judge"},
            {"name": "probes:RowProbe", "weight": 0.0, "kwargs": out},
            {"name": "probes:GatheredRowProbe", "weight": 0.0, "kwargs": out},
        ]

    # Interleave: from the second step on, one of the three groups is a recycled task (full-text reflection).
    sections = {"method": {"name": "spark"}, "spark": {"schedule": "interleave", "ratio": 0.34}}
    for procs, per_device in (("one", 12), ("two", 6)):
        workdir["recipe"](
            f"spark-{procs}",
            rewards(procs),
            sections,
            per_device_train_batch_size=per_device,
            max_steps=3,
            **GREEDY,
        )
    single = _run([sys.executable, "-m", "posttrain.train", str(workdir["base"] / "spark-one.yaml")], ROOT)
    assert single.returncode == 0, single.stderr[-4000:]
    args = ["--num_processes", "2", "--mixed_precision", "no", "-m", "posttrain.train"]
    double = _run(_accelerate("ddp.yaml", *args, str(workdir["base"] / "spark-two.yaml")), ROOT)
    assert double.returncode == 0, double.stderr[-4000:]

    def read(name: str) -> list:
        return [json.loads(line) for line in (probes / name).read_text().splitlines()]

    gathered_0, gathered_1 = read("two/gathered-rank0.jsonl"), read("two/gathered-rank1.jsonl")
    local_0, local_1 = read("two/local-rank0.jsonl"), read("two/local-rank1.jsonl")
    assert len(gathered_0) == 3
    assert gathered_0 == gathered_1  # the same gathered batch on both ranks: the same recycled tasks
    for step, batch in enumerate(gathered_0):
        assert local_0[step] + local_1[step] == batch  # each rank trained its own slice of the feed's batch
    assert gathered_0 == read("one/gathered-rank0.jsonl")  # and the same batches as on one process
    tasks = [[task for _, task in batch[::4]] for batch in gathered_0]
    assert tasks[0] == ["solve"] * 3 and tasks[1] == ["solve", "solve", "reflection"]
    # Rows 4-7 (the second group) are split over the ranks: both sides hold the same prompt.
    assert local_0[1][4] == local_1[1][0]


def test_dynamic_sampling_takes_the_same_decisions_on_both_processes(workdir):
    """DAPO's dynamic sampling with a group split over two processes: both ranks see the same gathered
    rounds (so they agreed on how many to run and which prompts came next), and the logged plan matches
    the rewards: the even-answer groups (uniform) are dropped, replaced from later rounds."""
    probes = workdir["base"] / "dynamic-probes"
    rewards = [
        {"name": "probes:uniform_when_even"},
        {"name": "probes:GatheredRowProbe", "weight": 0.0, "kwargs": {"out_dir": str(probes)}},
    ]
    sections = {"method": {"name": "grpo", "dynamic_sampling": {"enabled": True, "max_rounds": 3}}}
    two = workdir["recipe"]("dynamic-two", rewards, sections, per_device_train_batch_size=6, **GREEDY)
    args = ["--num_processes", "2", "--mixed_precision", "no", "-m", "posttrain.train", str(two)]
    double = _run(_accelerate("ddp.yaml", *args), ROOT)
    assert double.returncode == 0, double.stderr[-4000:]

    def read(name: str) -> list:
        return [json.loads(line) for line in (probes / name).read_text().splitlines()]

    gathered_0, gathered_1 = read("gathered-rank0.jsonl"), read("gathered-rank1.jsonl")
    assert gathered_0 == gathered_1
    metrics = [json.loads(line) for line in (workdir["base"] / "dynamic-two" / "metrics.jsonl").open()]
    steps = [m for m in metrics if "dynamic/rounds" in m]
    assert (
        len(steps) == 2 and sum(m["dynamic/rounds"] for m in steps) == len(gathered_0) > 2
    )  # extra rounds ran
    assert sum(m["dynamic/kept_groups"] for m in steps) > 0


@needs_deepspeed
def test_async_generation_under_zero2_on_two_processes(workdir):
    """rollout.async with k = 1 under ZeRO-2 on two processes: the main process's engine generates a
    step ahead, both ranks score the same gathered rows, every step trains with a lag of at most 1."""
    probes = workdir["base"] / "async-probes"
    rewards = [
        {"name": "helpers_plugins:SeededRandom"},
        {"name": "probes:GatheredRowProbe", "weight": 0.0, "kwargs": {"out_dir": str(probes)}},
    ]
    sections = {"rollout": {"async": {"enabled": True, "max_staleness": 1}}}
    recipe = workdir["recipe"]("async-zero2", rewards, sections, max_steps=3)
    args = ["--num_processes", "2", "-m", "posttrain.train", str(recipe)]
    result = _run(_accelerate("zero2.yaml", *args), ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (probes / "gathered-rank0.jsonl").read_text() == (probes / "gathered-rank1.jsonl").read_text()
    metrics = [json.loads(line) for line in (workdir["base"] / "async-zero2" / "metrics.jsonl").open()]
    assert [m["async/lag"] for m in metrics if "loss" in m] == [0, 1, 1]


# --------------------------------------------------------------------------------------------------
# A crash on one rank ends the launch
# --------------------------------------------------------------------------------------------------


@needs_deepspeed
def test_a_crash_on_one_rank_ends_the_launch(workdir):
    """Rank 1 raises in a reward at step 1; rank 0 waits in a collective and must not hang there.

    Started as ``posttrain train --run.accelerate_config``, so the re-launch and its exit status are
    covered too.
    """
    recipe = workdir["recipe"]("crash", [{"name": "probes:crash_on_rank1"}])
    flags = ["--run.accelerate_config", "zero2", "--run.num_processes", "2"]
    start = time.monotonic()
    result = _run([str(BIN / "posttrain"), "train", str(recipe), *flags], ROOT)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 120, f"the launch took {elapsed:.0f} s to end after a rank crashed"
    assert "crash_on_rank1: rank 1 fails on purpose" in result.stderr
    assert not (workdir["base"] / "crash" / "metrics.jsonl").exists()


@needs_deepspeed
def test_a_rank_killed_by_sigkill_ends_the_launch_and_is_named(workdir):
    """Rank 1 is SIGKILLed while rank 0 waits for it in a collective: the launcher notices the dead
    worker, stops the other within seconds (not the process group's 10-30 minute timeout) and names it."""
    recipe = workdir["recipe"]("killed", [{"name": "probes:killed_on_rank1"}])
    flags = ["--run.accelerate_config", "zero2", "--run.num_processes", "2"]
    start = time.monotonic()
    result = _run([str(BIN / "posttrain"), "train", str(recipe), *flags], ROOT)
    elapsed = time.monotonic() - start
    assert result.returncode != 0
    assert elapsed < 120, f"the launch took {elapsed:.0f} s to end after a rank was killed"
    assert "local_rank: 1" in result.stderr and "Signal 9 (SIGKILL)" in result.stderr, result.stderr[-3000:]


# --------------------------------------------------------------------------------------------------
# The shipped YAMLs
# --------------------------------------------------------------------------------------------------

SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def test_the_launch_configs_are_shipped():
    names = {p.name for p in SHIPPED}
    assert {"cpu.yaml", "single_gpu.yaml", "ddp.yaml", "zero2.yaml", "zero3.yaml", "multi_node.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_launch_config_key_is_commented_and_accelerate_reads_it(path):
    from accelerate.commands.config.config_args import load_config_from_file

    lines = path.read_text().splitlines()
    keys = [n for n, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    missing = [lines[n].strip() for n in keys if n == 0 or not lines[n - 1].lstrip().startswith("#")]
    assert not missing, "keys without a comment line directly above: " + ", ".join(missing)
    config = load_config_from_file(str(path))  # accelerate's own parser: no unknown or mistyped key
    assert config.mixed_precision in ("no", "bf16", "fp16")


# --------------------------------------------------------------------------------------------------
# Precision: the accelerate launch decides, an explicit disagreement is an error
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, explicit, launched, expected",
    [
        # Not launched by accelerate: the kwargs as they are.
        ({"bf16": True, "fp16": False}, {}, None, {"bf16": True, "fp16": False}),
        # bf16 launch on a machine whose detection said fp32: follow the launch.
        (
            {"bf16": False, "fp16": False, "use_cpu": True},
            {},
            "bf16",
            {"bf16": True, "fp16": False, "use_cpu": True},
        ),
        # fp16 launch where detection said bf16: fp16 only.
        ({"bf16": True, "fp16": False}, {}, "fp16", {"bf16": False, "fp16": True}),
        # 'no' launch: fp32 even on a bf16-capable machine.
        ({"bf16": True, "fp16": False}, {}, "no", {"bf16": False, "fp16": False}),
        # fp8: neither flag, so TrainingArguments takes accelerate's own value.
        ({"bf16": True}, {}, "fp8", {"bf16": False, "fp16": False}),
        # Explicit and in agreement: fine, the other flag follows the launch.
        ({"bf16": True, "fp16": True}, {"bf16": True}, "bf16", {"bf16": True, "fp16": False}),
        # Explicitly off and launched without mixed precision: fine.
        ({"bf16": False}, {"bf16": False}, "no", {"bf16": False, "fp16": False}),
        # bf16 explicitly off does not contradict an fp16 launch.
        ({"bf16": False}, {"bf16": False}, "fp16", {"bf16": False, "fp16": True}),
        # A key set to null in the recipe counts as not set.
        ({"bf16": None}, {"bf16": None}, "bf16", {"bf16": True, "fp16": False}),
    ],
)
def test_reconcile_precision(kwargs, explicit, launched, expected):
    assert reconcile_precision(dict(kwargs), explicit, launched) == expected


@pytest.mark.parametrize(
    "explicit, launched, phrases",
    [
        # The recipe turns bf16 off under a bf16 launch: both fixes named.
        (
            {"bf16": False},
            "bf16",
            [
                "mixed_precision: bf16",
                "trainer.bf16: false",
                "`mixed_precision: 'no'`",
                "--trainer.bf16 true",
            ],
        ),
        # The recipe asks for bf16 under a launch without mixed precision.
        (
            {"bf16": True},
            "no",
            ["mixed_precision: no", "trainer.bf16: true", "`mixed_precision: bf16`", "--trainer.bf16 false"],
        ),
        # The recipe asks for fp16 under a bf16 launch.
        ({"fp16": True}, "bf16", ["trainer.fp16: true", "`mixed_precision: fp16`", "--trainer.fp16 false"]),
        # Both keys disagree: both named in one message.
        (
            {"bf16": False, "fp16": True},
            "bf16",
            ["trainer.bf16: false and trainer.fp16: true", "--trainer.bf16 true --trainer.fp16 false"],
        ),
    ],
)
def test_reconcile_precision_refuses_a_disagreement(explicit, launched, phrases):
    with pytest.raises(ConfigError) as info:
        reconcile_precision({"bf16": True, "fp16": False}, explicit, launched)
    for phrase in phrases:
        assert phrase in str(info.value)


def test_grpo_config_follows_the_launch(monkeypatch, tmp_path):
    """The wiring in Recipe.grpo_config: the launch's precision wins over detection, not over the recipe."""
    flags = {"data.generator": "chain_sum", "output_dir": str(tmp_path)}
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    args = load_recipe(None, flags).grpo_config()
    assert (args.bf16, args.fp16) == (False, False)
    with pytest.raises(ConfigError, match="mixed_precision: no"):
        load_recipe(None, {**flags, "bf16": True}).grpo_config()
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert load_recipe(None, {**flags, "bf16": False}).grpo_config().bf16 is False  # not launched: the recipe


# --------------------------------------------------------------------------------------------------
# Re-launching `posttrain train` through accelerate
# --------------------------------------------------------------------------------------------------


def test_launch_command():
    cmd = launch_command("r.yaml", ["--max_steps", "2"], "accelerate_configs/zero2.yaml", 2)
    assert cmd == [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "accelerate_configs/zero2.yaml",
        "--num_processes",
        "2",
        "-m",
        "posttrain.train",
        "r.yaml",
        "--max_steps",
        "2",
    ]
    # No process count: the YAML's num_processes.
    assert "--num_processes" not in launch_command("r.yaml", [], "x.yaml", None)
    assert importlib.util.find_spec("accelerate.commands.launch") is not None


@pytest.fixture
def not_launched(monkeypatch):
    """This test process as if started from a shell, whatever started pytest."""
    for name in distributed.LAUNCHED_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "config, env, expected",
    [
        (None, {}, False),  # no accelerate config in the recipe: train in this process
        ("zero2", {}, True),  # a config, started from a shell: re-launch
        ("zero2", {"LOCAL_RANK": "0"}, False),  # inside torchrun / DeepSpeed workers
        ("zero2", {"ACCELERATE_MIXED_PRECISION": "no"}, False),  # inside accelerate's one-process launcher
        ("zero2", {"POSTTRAIN_LAUNCHED": "1"}, False),  # inside our own re-launch
    ],
)
def test_should_relaunch(not_launched, config, env, expected):
    for name, value in env.items():
        not_launched.setenv(name, value)
    run = load_recipe(None, {"data.generator": "chain_sum", "run.accelerate_config": config}).run
    assert should_relaunch(run) is expected


@pytest.mark.parametrize(
    "name", ["zero2", "zero2.yaml", "accelerate_configs/zero2.yaml", str(CONFIGS / "zero2.yaml")]
)
def test_a_shipped_config_is_found_by_name_or_path(name):
    assert resolve_accelerate_config(name).resolve() == (CONFIGS / "zero2.yaml").resolve()


def test_relaunch_with_a_missing_config_names_it_and_the_shipped_ones(tmp_path):
    run = load_recipe(None, {"data.generator": "chain_sum", "run.accelerate_config": "zero9.yaml"}).run
    with pytest.raises(ConfigError) as info:
        relaunch("r.yaml", [], run)
    message = str(info.value)
    assert "zero9.yaml" in message
    assert "accelerate_configs/zero2.yaml" in message and "accelerate_configs/multi_node.yaml" in message


def test_posttrain_train_reports_a_missing_config(not_launched, capsys, math_jsonl):
    """Through the command line (train.main's wiring): one message, exit status 2, nothing launched."""
    not_launched.setattr("posttrain.console.setup_logging", lambda: None)
    recipe = Path(math_jsonl).with_name("recipe.yaml")
    recipe.write_text(yaml.safe_dump({"data": {"path": math_jsonl}}))
    status = cli.main(["train", str(recipe), "--run.accelerate_config", "nope.yaml"])
    err = capsys.readouterr().err
    assert status == 2 and "Accelerate config not found: nope.yaml" in err


def test_relaunch_returns_the_launch_status_and_marks_the_child(monkeypatch):
    # The child exits 0 only if it can tell it was launched (so it would not launch again), else 4.
    child = "import os, sys; sys.exit(3 if os.environ.get('POSTTRAIN_LAUNCHED') == '1' else 4)"
    monkeypatch.setattr(distributed, "launch_command", lambda *a: [sys.executable, "-c", child])
    run = load_recipe(None, {"data.generator": "chain_sum", "run.accelerate_config": "cpu"}).run
    assert relaunch("r.yaml", [], run) == 3


def test_stop_escalates_when_the_launcher_ignores_ctrl_c():
    ignore = "import signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", ignore], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "up"
    start = time.monotonic()
    code = distributed._stop(proc, grace_s=0.5, typed=False)
    assert code == -signal.SIGTERM  # SIGINT ignored, SIGTERM ended it
    assert time.monotonic() - start < 10


def test_held_out_eval_under_zero3_is_refused_with_the_fix(monkeypatch):
    from posttrain.config import load_recipe
    from posttrain.train import _check_zero3_eval

    recipe = load_recipe("recipes/quickstart.yaml")  # eval.before/after: true
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ConfigError, match="--eval.before false --eval.after false"):
        _check_zero3_eval(recipe)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    _check_zero3_eval(recipe)  # ZeRO-2 keeps whole weights on every process: fine
