"""The retrieval server and its client over real HTTP on 127.0.0.1 (posttrain/retrieval/server.py, client.py).

OMP_NUM_THREADS=1 pytest tests/test_retrieval_server.py -q                          # ~10 s
POSTTRAIN_LOAD_SECONDS=30 OMP_NUM_THREADS=1 pytest tests/test_retrieval_server.py -q -k concurrent

The server runs under uvicorn in a thread of this process (one command test starts the real process),
over the shipped SQuAD index, and every answer is compared with the in-process index's. The
concurrency test hammers it from 32 client threads for 3 s, or for POSTTRAIN_LOAD_SECONDS when set
(30 for a soak run). Retries are checked against a port nobody listens on, a server that fails, and
one that is too slow; the back-off waits are recorded instead of slept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from posttrain.retrieval import (
    DEFAULT_CORPUS,
    DEFAULT_QUESTIONS,
    MAX_K,
    MAX_QUERIES_PER_REQUEST,
    RetrievalError,
)
from posttrain.retrieval import client as client_module
from posttrain.retrieval.client import RetrievalClient
from posttrain.retrieval.corpus import read_corpus
from posttrain.retrieval.index import BM25Index
from posttrain.retrieval.server import create_app


class ThreadServer:
    """``app`` under uvicorn in a thread, on a free port; ``stop()`` is the server going away."""

    def __init__(self, app):
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
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


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(read_corpus(DEFAULT_CORPUS)[0])


@pytest.fixture(scope="module")
def questions() -> list[str]:
    return [json.loads(line)["question"] for line in DEFAULT_QUESTIONS.read_text().splitlines()]


@pytest.fixture(scope="module")
def served(index):
    """(server, app) over the shipped SQuAD index, for the whole module."""
    app = create_app(index, max_batch=64)
    server = ThreadServer(app)
    yield server, app
    server.stop()


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """The client's back-off waits, recorded and not slept."""
    waited: list[float] = []
    monkeypatch.setattr(client_module, "_sleep", waited.append)
    return waited


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- answers


def test_health(served, index):
    server, _ = served
    assert requests.get(f"{server.url}/health", timeout=5).json() == {"status": "ok", "passages": len(index)}
    assert RetrievalClient(server.url).wait_until_ready(timeout=5)["passages"] == 2067


def test_search_equals_in_process_index(served, index, questions):
    server, _ = served
    client = RetrievalClient(server.url)
    batch = questions[:50] + ["", "the of and", "Nile " * 3000]
    for k in (1, 3, 5):
        assert client.search(batch, k) == index.search(batch, k)
    raw = requests.post(f"{server.url}/search", json={"queries": questions[:2]}, timeout=5).json()
    assert [len(hits) for hits in raw["results"]] == [3, 3]  # k defaults to MASH's 3
    assert set(raw["results"][0][0]) == {"id", "title", "text", "score"}
    assert client.search([], 3) == []


def test_client_splits_a_batch_past_the_request_cap(served, index, questions):
    server, app = served
    many = (questions * 2)[: MAX_QUERIES_PER_REQUEST + 10]
    before = app.state.batcher.stats["requests"]
    assert RetrievalClient(server.url).search(many, 3) == index.search(many, 3)
    assert app.state.batcher.stats["requests"] - before == 2


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"k": 3}', "'queries' is missing"),
        (b'{"queries": "who won"}', "'queries' must be a list of strings"),
        (b'{"queries": ["a", 3]}', "'queries' must be a list of strings"),
        (b'{"queries": ["a"], "k": 0}', "'k' must be an integer"),
        (b'{"queries": ["a"], "k": "3"}', "'k' must be an integer"),
        (b'{"queries": ["a"], "k": 2.5}', "'k' must be an integer"),
        (b'{"queries": ["a"], "k": true}', "'k' must be an integer"),
        (json.dumps({"queries": ["a"], "k": MAX_K + 1}).encode(), f"1..{MAX_K}"),
        (json.dumps({"queries": ["a"] * (MAX_QUERIES_PER_REQUEST + 1)}).encode(), "split the batch"),
        (b'{"queries": ["a"], "topk": 3}', "unknown fields"),
        (b"\xff\xfe", "body is not JSON"),
    ],
)
def test_malformed_request_is_a_4xx_and_the_server_keeps_serving(served, index, body, message):
    server, _ = served
    answer = requests.post(f"{server.url}/search", data=body, timeout=5)
    assert 400 <= answer.status_code < 500 and message in answer.json()["detail"]
    assert RetrievalClient(server.url).search(["Super Bowl 50"], 2) == index.search(["Super Bowl 50"], 2)


def test_an_oversized_body_is_a_413_and_the_server_keeps_serving(index):
    server = ThreadServer(create_app(index, max_body=4096))
    try:
        big = json.dumps({"queries": ["Nile " * 1000]}).encode()
        answer = requests.post(f"{server.url}/search", data=big, timeout=5)
        assert answer.status_code == 413 and "split the batch" in answer.json()["detail"]
        chunked = requests.post(f"{server.url}/search", data=iter([big[:3000], big[3000:]]), timeout=5)
        assert chunked.status_code == 413  # no Content-Length: counted while reading
        assert RetrievalClient(server.url).search(["Super Bowl 50"], 2) == index.search(["Super Bowl 50"], 2)
    finally:
        server.stop()


def test_wrong_method_and_path_are_4xx(served):
    server, _ = served
    assert requests.get(f"{server.url}/search", timeout=5).status_code == 405
    assert requests.post(f"{server.url}/nope", json={}, timeout=5).status_code == 404


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_clients_get_their_own_answers(served, index, questions):
    """32 threads searching at once for 3 s (POSTTRAIN_LOAD_SECONDS to soak): every answer exact."""
    server, app = served
    seconds = float(os.environ.get("POSTTRAIN_LOAD_SECONDS") or 3)
    pool = questions[:200]
    expected = {k: dict(zip(pool, index.search(pool, k))) for k in (1, 3, 5)}
    shared = RetrievalClient(server.url)  # half the threads share one client, half have their own
    stats_before = dict(app.state.batcher.stats)
    deadline = time.monotonic() + seconds
    done, failures = [0] * 32, []

    def hammer(worker: int) -> None:
        rng = random.Random(worker)
        client = shared if worker % 2 else RetrievalClient(server.url)
        try:
            while time.monotonic() < deadline:
                batch, k = rng.sample(pool, rng.randint(1, 8)), rng.choice((1, 3, 5))
                got = client.search(batch, k)
                if got != [expected[k][q] for q in batch]:
                    failures.append((worker, batch, k))
                    return
                done[worker] += 1
        except Exception as exc:  # noqa: BLE001 - the test reports any failure of any thread
            failures.append((worker, repr(exc)))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    assert not failures, failures[:3]
    assert all(done), done  # no thread starved
    stats = app.state.batcher.stats
    requests_served = stats["requests"] - stats_before["requests"]
    assert requests_served == sum(done)
    # Concurrent requests were coalesced: fewer index calls than requests.
    assert stats["batches"] - stats_before["batches"] < requests_served


# ----------------------------------------------------------------------------- retries


def test_server_down_raises_after_bounded_retries(sleeps):
    url = f"http://127.0.0.1:{_free_port()}"
    client = RetrievalClient(url, timeout=2, retries=3, backoff=1.0)
    with pytest.raises(RetrievalError, match="after 4 attempts") as info:
        client.search(["who won"], 3)
    assert sleeps == [1.0, 2.0, 4.0]  # exponential back-off, bounded
    message = str(info.value)
    assert url in message and "posttrain retriever serve --corpus" in message and "--resume" in message
    with pytest.raises(RetrievalError, match="No retrieval server answers"):
        client.wait_until_ready(timeout=0.3)


def test_a_4xx_is_not_retried(served, sleeps):
    server, _ = served
    client = RetrievalClient(server.url, retries=3)
    with pytest.raises(RetrievalError, match=r"refused .*HTTP 400.*'queries' must be a list"):
        client._request("POST", "/search", "a search", json={"queries": "not a list"})
    assert sleeps == []
    with pytest.raises(ValueError, match="k must be an integer"):  # caught before the network
        client.search(["a"], MAX_K + 1)


class FailingIndex:
    """An index that raises: the server answers 500, which the client retries."""

    def __len__(self):
        return 1

    def search(self, queries, k):
        raise RuntimeError("disk on fire")


def test_a_5xx_is_retried_then_raised(sleeps):
    server = ThreadServer(create_app(FailingIndex()))
    try:
        client = RetrievalClient(server.url, retries=2, backoff=0.5)
        with pytest.raises(RetrievalError, match="after 3 attempts .*HTTP 500.*RuntimeError: disk on fire"):
            client.search(["a"], 3)
        assert sleeps == [0.5, 1.0]
        assert client.health() == {"status": "ok", "passages": 1}  # the server survived
    finally:
        server.stop()


def test_a_slow_answer_times_out_and_is_retried(sleeps):
    app, calls = FastAPI(), []

    @app.post("/search")
    async def slow_once():
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.sleep(1.5)  # the first answer comes too late (stop() waits for it)
        hit = {"id": "a", "title": "", "text": "x", "score": 1.0}
        return {"results": [[hit]]}

    server = ThreadServer(app)
    try:
        start = time.monotonic()
        hits = RetrievalClient(server.url, timeout=0.5, retries=2).search(["q"], 1)
        assert [h.id for h in hits[0]] == ["a"] and len(calls) == 2 and len(sleeps) == 1
        assert time.monotonic() - start < 3
    finally:
        server.stop()


# ----------------------------------------------------------------------------- the command


@contextlib.contextmanager
def _serve_process(args: list[str], log):
    """``python -m posttrain.retrieval.server ARGS`` in its own process group; yields the process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:  # a file, not a pipe: a pipe nobody reads stalls a chatty server
        proc = subprocess.Popen(
            [sys.executable, "-m", "posttrain.retrieval.server", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_serve_command_end_to_end(tmp_path, index, questions):
    port = _free_port()
    log = tmp_path / "server.log"
    with _serve_process(["--port", str(port), "--cache_dir", str(tmp_path / "cache")], log):
        client = RetrievalClient(f"http://127.0.0.1:{port}")
        assert client.wait_until_ready(timeout=30)["passages"] == 2067
        assert client.search(questions[:20], 3) == index.search(questions[:20], 3)
    text = log.read_text()
    assert f"http://127.0.0.1:{port}" in text and "2067 passages" in text


def test_serve_command_with_a_bad_corpus_says_so(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n')
    log = tmp_path / "server.log"
    with _serve_process(["--corpus", str(bad), "--port", str(_free_port())], log) as proc:
        assert proc.wait(timeout=30) == 2
    assert "bad.jsonl:1: the row has no 'text'" in log.read_text()
