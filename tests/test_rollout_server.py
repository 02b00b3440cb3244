"""The rollout server and its client (posttrain/rollout/server.py, client.py, ``posttrain vllm-serve``).

pytest tests/test_rollout_server.py -q                     # HF backend, no vLLM (a few seconds)
make test-vllm                                             # also the vLLM round trip (.venv-vllm)

Most tests serve the tiny random model with the transformers engine from a uvicorn thread in this
process and talk to it through ``ServerEngine``, as the trainer does: same completions as a local
engine, weight pushes that take effect, a different model refused at start, a server that is down or
dies mid-run stopping the run with a RolloutError. Several training processes are simulated by
threads with a fake accelerator (the real collectives would need a process group per test).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from posttrain import cli
from posttrain.errors import RolloutError
from posttrain.models import ModelConfig, load_model
from posttrain.rollout import client as client_module
from posttrain.rollout.base import SamplingSettings
from posttrain.rollout.client import ServerEngine
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.hf import HFEngine
from posttrain.rollout.server import build_app, server_info
from posttrain.rollout.vllm import model_signature

GREEDY = SamplingSettings(max_tokens=8, temperature=0.0)
TEXTS = ["What is 1+2?", "Hello", "The answer is"]


class ThreadServer:
    """``build_app`` under uvicorn in a thread, on a free port; ``stop()`` is the server dying."""

    def __init__(self, engine, info):
        import uvicorn

        config = uvicorn.Config(build_app(engine, info), host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def _config(url: str, **kwargs) -> RolloutConfig:
    return RolloutConfig(
        engine="vllm", mode="server", server_url=url, **{"server_timeout": 10, "retries": 1} | kwargs
    )


def _prompts(tokenizer) -> list[list[int]]:
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]


def _perturb(model, scale: float = 0.5) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale * p.std())


def _gap(a, b) -> float:
    """Largest log-prob difference between two greedy rollouts (inf when the tokens differ)."""
    if a.completion_ids != b.completion_ids:
        return float("inf")
    return max(abs(x - y) for row_a, row_b in zip(a.logprobs, b.logprobs) for x, y in zip(row_a, row_b))


@pytest.fixture
def served(tiny_model):
    """(server, local model, tokenizer): the server's engine holds its own copy of the tiny model."""
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    engine = HFEngine(load_model(ModelConfig(name_or_path=tiny_model))[0], tokenizer)
    server = ThreadServer(engine, server_info(tiny_model, engine, model_signature(model.config), False))
    yield server, model, tokenizer
    server.stop()


def _client(server, model, **kwargs) -> ServerEngine:
    engine = ServerEngine(_config(server.url, **kwargs), model_for_signature=model)
    engine.backoff_s = 0.05
    return engine


def test_generate_matches_local_engine(served):
    server, model, tokenizer = served
    remote = _client(server, model)
    assert remote.info["engine"] == "hf" and remote.info["signature"]["hidden_size"] == 32
    prompts = _prompts(tokenizer)
    got = remote.generate(prompts, 2, GREEDY)
    want = HFEngine(model, tokenizer).generate(prompts, 2, GREEDY)
    assert len(got.completion_ids) == len(prompts) * 2
    assert _gap(got, want) < 1e-5
    assert got.info["server_engine_s"] >= 0
    remote.close()


def test_sync_weights_reaches_the_server(served, monkeypatch):
    server, model, tokenizer = served
    monkeypatch.setattr(client_module, "CHUNK_BYTES", 4096)  # several POSTs per push, like a large model
    remote = _client(server, model)
    prompts = _prompts(tokenizer)
    _perturb(model)
    local = HFEngine(model, tokenizer).generate(prompts, 1, GREEDY)
    before = remote.generate(prompts, 1, GREEDY)
    assert _gap(before, local) > 1e-2
    remote.sync_weights(model)
    after = remote.generate(prompts, 1, GREEDY)
    assert after.completion_ids == local.completion_ids
    assert _gap(after, local) < 1e-5


def test_different_model_is_refused_at_start(served):
    server, model, _ = served
    other = copy.deepcopy(model.config)
    other.hidden_size, other.vocab_size = 64, 500
    with pytest.raises(RolloutError, match="hidden_size: server 32, trainer 64") as info:
        _client(server, other)
    assert "vocab_size" in str(info.value) and "posttrain vllm-serve --model" in str(info.value)


def test_bad_request_is_not_retried(served):
    server, model, _ = served
    remote = _client(server, model, retries=3)
    remote.backoff_s = 10.0  # a retry would blow the test's time
    with pytest.raises(RolloutError, match="rejected generate: unknown sampling fields"):
        remote._request(
            "POST", "/generate", "generate", 5, json={"prompt_ids": [[1]], "sampling": {"temp": 1}}
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_stops_at_start():
    url = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(RolloutError, match="No rollout server answers") as info:
        ServerEngine(_config(url, server_timeout=0.5), model_for_signature=None)
    assert url in str(info.value) and "posttrain vllm-serve" in str(info.value)
    assert time.monotonic() - start < 3


def test_server_dying_mid_run_stops_the_run(served, caplog):
    server, model, tokenizer = served
    remote = _client(server, model, retries=2)
    remote.generate(_prompts(tokenizer), 1, GREEDY)
    server.stop()
    with pytest.raises(RolloutError, match="did not answer generate after 3 attempts") as info:
        remote.generate(_prompts(tokenizer), 1, GREEDY)
    assert "--resume" in str(info.value)
    assert sum("retry" in r.message for r in caplog.records) == 2
    with pytest.raises(RolloutError, match="did not answer a weight push"):
        remote.sync_weights(model)


class FakeAccelerator:
    """Threads standing in for training processes: gather/broadcast meet at a barrier."""

    shared: dict = {}
    rank = threading.local()

    def __init__(self, index: int, size: int):
        self.process_index, self.num_processes, self.is_main_process = index, size, index == 0

    @classmethod
    def install(cls, monkeypatch, size: int):
        import accelerate.utils

        barrier = threading.Barrier(size, timeout=30)
        slots: list = [None] * size

        def gather_object(obj):
            slots[cls.rank.value] = obj
            barrier.wait()
            out = [x for s in slots for x in s]
            barrier.wait()
            return out

        def broadcast_object_list(objs, from_process=0):
            if cls.rank.value == from_process:
                slots[from_process] = list(objs)
            barrier.wait()
            objs[:] = slots[from_process]
            barrier.wait()
            return objs

        monkeypatch.setattr(accelerate.utils, "gather_object", gather_object)
        monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast_object_list)


def test_several_processes_get_their_own_rows(served, monkeypatch):
    server, model, tokenizer = served
    FakeAccelerator.install(monkeypatch, 2)
    prompts = _prompts(tokenizer)
    mine = {0: prompts[:2], 1: prompts[2:]}  # unequal shares
    results: dict = {}

    def process(rank: int):
        FakeAccelerator.rank.value = rank
        try:
            engine = ServerEngine(_config(server.url), model, FakeAccelerator(rank, 2))
            engine.backoff_s = 0.05
            results[rank] = engine.generate(mine[rank], 2, GREEDY)
            engine.sync_weights(model)
            if rank == 0:
                server.stop()
            engine.generate(mine[rank], 2, GREEDY)
        except RolloutError as exc:
            results[rank, "error"] = str(exc)

    threads = [threading.Thread(target=process, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    local = HFEngine(model, tokenizer)
    for rank in (0, 1):
        assert results[rank].completion_ids == local.generate(mine[rank], 2, GREEDY).completion_ids
        # The main process's failure reaches the other one instead of leaving it in a collective.
        assert "did not answer generate" in results[rank, "error"]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_serve_without_vllm_names_the_install(tiny_model, capsys):
    assert cli.main(["vllm-serve", "--engine", "vllm", "--model", tiny_model]) == 2
    err = capsys.readouterr().err
    assert "pip install vllm" in err and "make test-vllm" in err


def _serve_command(*args: str) -> list[str]:
    script = Path(sys.executable).parent / "posttrain"
    return [
        str(script) if script.exists() else sys.executable,
        *([] if script.exists() else ["-m", "posttrain.cli"]),
    ] + [
        "vllm-serve",
        *args,
    ]


def _start_cli_server(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.Popen(
        _serve_command(*args, "--port", str(port)),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_vllm_serve_command_with_hf_engine(tiny_model):
    proc, url = _start_cli_server(["--engine", "hf", "--model", tiny_model])
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    try:
        remote = ServerEngine(_config(url, server_timeout=60), model_for_signature=model)
        got = remote.generate(_prompts(tokenizer), 1, GREEDY)
        assert (
            got.completion_ids
            == HFEngine(model, tokenizer).generate(_prompts(tokenizer), 1, GREEDY).completion_ids
        )
    finally:
        out = _stop(proc)
    assert url in out  # the URL is logged


@pytest.mark.vllm
def test_vllm_server_round_trip(tiny_model):
    """vLLM behind the server: its log-probs follow a weight push (within bf16/fp32 kernel noise)."""
    env = {
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1"),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    args = [
        "--engine",
        "vllm",
        "--model",
        tiny_model,
        "--enforce_eager",
        "--dtype",
        "float32",
        "--max_model_len",
        "256",
    ]
    proc, url = _start_cli_server(args, env)
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    local = HFEngine(model, tokenizer)
    sampling = SamplingSettings(max_tokens=16, temperature=1.0, seed=0)
    prompts = _prompts(tokenizer)

    def gap(rollouts) -> float:
        """Mean |server log-prob - local log-prob| over the server's own sampled tokens."""
        ours = local.score(
            [p for p in prompts for _ in range(2)], rollouts.completion_ids, sampling.temperature
        )
        diffs = [abs(a - b) for row_a, row_b in zip(rollouts.logprobs, ours) for a, b in zip(row_a, row_b)]
        return sum(diffs) / len(diffs)

    try:
        remote = ServerEngine(
            _config(url, server_timeout=300, request_timeout=120), model_for_signature=model
        )
        assert remote.info["engine"] == "vllm"
        assert gap(remote.generate(prompts, 2, sampling)) < 0.05  # same weights: same distribution
        _perturb(model)
        assert gap(remote.generate(prompts, 2, sampling)) > 0.2  # the server still has the old weights
        remote.sync_weights(model)
        assert gap(remote.generate(prompts, 2, sampling)) < 0.05
    finally:
        out = _stop(proc)
        print(out[-3000:])
