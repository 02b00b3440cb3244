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

import contextlib
import copy
import importlib.util
import os
import signal
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
from posttrain.testing import make_tiny_model

GREEDY = SamplingSettings(max_tokens=8, temperature=0.0)
TEXTS = ["What is 1+2?", "Hello", "The answer is"]


class ThreadServer:
    """``build_app`` under uvicorn in a thread, on a free port; ``stop()`` is the server dying."""

    def __init__(self, engine, info, port: int = 0, **app_kwargs):
        import uvicorn

        app = build_app(engine, info, **app_kwargs)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
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


class BrokenEngine:
    """Refuses every prompt (as vLLM does one past max_model_len) and crashes on every weight push."""

    name = "broken"

    def generate(self, prompt_ids, n, sampling):
        raise ValueError("prompt longer than max_model_len")

    def load_weights(self, named):
        raise RuntimeError("out of memory")


def test_engine_errors_refused_at_once_or_retried(served):
    _, model, tokenizer = served
    server = ThreadServer(BrokenEngine(), {"model": "broken", "signature": {}})
    try:
        remote = _client(server, None, retries=2)
        with pytest.raises(RolloutError, match="rejected generate: engine error: ValueError: prompt longer"):
            remote.generate(_prompts(tokenizer), 1, GREEDY)
        with pytest.raises(RolloutError, match="after 3 attempts .*RuntimeError: out of memory"):
            remote.sync_weights(model)
    finally:
        server.stop()


class SleepyEngine(BrokenEngine):
    def __init__(self):
        self.calls = []

    def sleep(self):
        self.calls.append("sleep")

    def wake_up(self):
        self.calls.append("wake_up")


@pytest.mark.parametrize("sleep_mode", [True, False])
def test_sleep_is_forwarded_only_to_a_sleep_mode_server(sleep_mode):
    engine = SleepyEngine()
    server = ThreadServer(engine, {"model": "sleepy", "signature": {}, "sleep_mode": sleep_mode})
    try:
        remote = _client(server, None)
        remote.sleep()
        remote.wake_up()
        assert engine.calls == (["sleep", "wake_up"] if sleep_mode else [])
    finally:
        server.stop()


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


@contextlib.contextmanager
def _cli_server(args: list[str], log: Path, env: dict[str, str] | None = None):
    """``posttrain vllm-serve ARGS`` in a process group of its own, output in ``log``; yields (process, URL)."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log, "w") as out:  # a file, not a pipe: a pipe nobody reads stalls a chatty server
        proc = subprocess.Popen(
            _serve_command(*args, "--port", str(port)),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        _kill_group(proc, signal.SIGTERM)


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    """Stop the server and anything it started (vLLM's engine process would outlive it otherwise)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_vllm_serve_command_with_hf_engine(tiny_model, tmp_path):
    """The real command end to end, then the server killed mid-run: the next request stops the run."""
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    log = tmp_path / "server.log"
    with _cli_server(["--engine", "hf", "--model", tiny_model], log) as (proc, url):
        remote = ServerEngine(_config(url, server_timeout=60), model_for_signature=model)
        remote.backoff_s = 0.05
        got = remote.generate(_prompts(tokenizer), 1, GREEDY)
        want = HFEngine(model, tokenizer).generate(_prompts(tokenizer), 1, GREEDY)
        assert got.completion_ids == want.completion_ids
        _kill_group(proc, signal.SIGKILL)
        with pytest.raises(RolloutError, match="did not answer generate"):
            remote.generate(_prompts(tokenizer), 1, GREEDY)
    assert url in log.read_text()  # the URL is logged


@pytest.mark.vllm
def test_vllm_server_round_trip(tmp_path):
    """vLLM behind the server: its log-probs follow a weight push (within kernel noise)."""
    # vLLM's CPU attention needs a head size of at least 32 (the shared tiny model has 8): 128 / 4 heads.
    tiny_model = make_tiny_model(tmp_path / "tiny128", hidden_size=128)
    env = {
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "0-1"),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
    }
    # float32: the comparison is with the fp32 local model, so no bf16 rounding in the gap.
    args = ["--engine", "vllm", "--model", tiny_model, "--enforce_eager", "--dtype", "float32"]
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    local = HFEngine(model, tokenizer)
    sampling = SamplingSettings(max_tokens=16, temperature=1.0, seed=0)
    prompts = _prompts(tokenizer)

    def gap(rollouts) -> float:
        """Mean |server log-prob - local log-prob| over the tokens the server sampled."""
        repeated = [p for p in prompts for _ in range(2)]
        ours = local.score(repeated, rollouts.completion_ids, sampling.temperature)
        diffs = [abs(a - b) for row_a, row_b in zip(rollouts.logprobs, ours) for a, b in zip(row_a, row_b)]
        return sum(diffs) / len(diffs)

    log = tmp_path / "server.log"
    with _cli_server([*args, "--max_model_len", "256"], log, env) as (_, url):
        try:
            remote = ServerEngine(_config(url, server_timeout=300, request_timeout=120), model)
            assert remote.info["engine"] == "vllm"
            same = gap(remote.generate(prompts, 2, sampling))
            _perturb(model, scale=2.0)
            stale = gap(remote.generate(prompts, 2, sampling))  # the server still has the old weights
            remote.sync_weights(model)
            pushed = gap(remote.generate(prompts, 2, sampling))
            assert same < 0.05 and stale > 0.2 and pushed < 0.05, (same, stale, pushed)
            print(f"mean |log-prob gap|: same weights {same:.2e}, stale {stale:.3f}, pushed {pushed:.2e}")
        except BaseException:
            print(log.read_text()[-5000:])  # the server's side of the failure
            raise


# ----------------------------------------------------------------------------- abuse


def test_state_changes_need_the_token_and_bodies_have_limits(tiny_model, monkeypatch):
    import requests

    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    engine = HFEngine(load_model(ModelConfig(name_or_path=tiny_model))[0], tokenizer)
    info = server_info(tiny_model, engine, model_signature(model.config), False)
    server = ThreadServer(engine, info, token="s3cret", max_generate_body=2048)
    try:
        for path in ("/weights", "/sleep", "/wake_up"):
            answer = requests.post(server.url + path, data=b"", timeout=5)
            assert answer.status_code == 401 and "POSTTRAIN_SERVER_TOKEN" in answer.json()["detail"]
        wrong = requests.post(server.url + "/sleep", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        big = {"prompt_ids": [[1] * 2000], "n": 1}
        answer = requests.post(server.url + "/generate", json=big, timeout=5)
        assert answer.status_code == 413 and "--max_generate_body" in answer.json()["detail"]

        # The trainer's client sends the token from the environment: generation and a weight push work.
        monkeypatch.setenv("POSTTRAIN_SERVER_TOKEN", "s3cret")
        remote = _client(server, model)
        assert len(remote.generate(_prompts(tokenizer), 1, GREEDY).completion_ids) == len(TEXTS)
        remote.sync_weights(model)
        remote.close()
        monkeypatch.setenv("POSTTRAIN_SERVER_TOKEN", "wrong")
        with pytest.raises(RolloutError, match="401|token"):
            _client(server, model).sync_weights(model)
    finally:
        server.stop()


def test_serving_beyond_loopback_without_a_token_is_refused(monkeypatch):
    from posttrain.errors import ConfigError
    from posttrain.rollout.server import serve

    monkeypatch.delenv("POSTTRAIN_SERVER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="POSTTRAIN_SERVER_TOKEN"):
        serve(engine=None, info={}, host="0.0.0.0", port=8000)


def test_a_restarted_server_gets_the_current_weights_again(tiny_model):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model))
    info = server_info(tiny_model, HFEngine(model, tokenizer), model_signature(model.config), False)

    def fresh_engine():  # what a restarted server loads: the initial weights
        return HFEngine(load_model(ModelConfig(name_or_path=tiny_model))[0], tokenizer)

    first = ThreadServer(fresh_engine(), info)
    port = int(first.url.rsplit(":", 1)[1])
    remote = _client(first, model, retries=5)
    _perturb(model)  # the trainer's weights moved on
    remote.sync_weights(model)
    prompts = _prompts(tokenizer)
    want = HFEngine(model, tokenizer).generate(prompts, 1, GREEDY)
    assert _gap(remote.generate(prompts, 1, GREEDY), want) < 1e-5
    first.stop()
    second = ThreadServer(fresh_engine(), info, port=port)  # restarted on the same address
    try:
        assert _gap(remote.generate(prompts, 1, GREEDY), want) < 1e-5  # pushed again, then generated
    finally:
        remote.close()
        second.stop()
