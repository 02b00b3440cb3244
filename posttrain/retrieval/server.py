"""``posttrain retriever serve``: the BM25 index behind HTTP, for rollouts on other processes or machines.

    posttrain retriever serve                                    # the shipped SQuAD passages, port 8001
    posttrain retriever serve --corpus wiki.jsonl --port 8001 --cache_dir /scratch/retrieval
    python -m posttrain.retrieval.server --corpus wiki.jsonl     # the same, without the CLI wiring

Endpoints (JSON; errors are ``{"detail": message}`` with a 4xx status for a request the server refuses):

    GET  /health   -> {"status": "ok", "passages": N}
    POST /search   {"queries": [str, ...], "k": int (default 3, MASH's top-k)}
                   -> {"results": [[{"id", "title", "text", "score"}, ...], ...]}   one list per query

Concurrent requests are micro-batched: each request's queries wait in a queue; one worker takes
whatever is queued (up to ``--max_batch`` queries, a larger request goes alone), runs one index search
in a thread, and hands every request its own rows. Requests that arrive while a search runs form the
next batch, so batches grow with the load and nothing waits on a timer::

    request A (2 queries, k=3) ──┐
    request B (1 query,  k=5) ──┼─ queue ─▶ worker: index.search([a1, a2, b1, c1], k=5) ─▶ A: rows 0-1 cut to 3
    request C (1 query,  k=3) ──┘                                                       B: row 2, C: row 3 cut to 3

Mixed ``k`` are served by one search with the largest ``k``: the index orders ties by corpus position,
so its top 3 is always the first 3 of its top 5 (see :mod:`posttrain.retrieval.index`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response

from posttrain.errors import ConfigError, PosttrainError
from posttrain.retrieval import DEFAULT_CORPUS, MAX_K, MAX_QUERIES_PER_REQUEST
from posttrain.retrieval.index import BM25Index, Hit, load_index
from posttrain.serving import BodyTooLarge, is_loopback, read_body

logger = logging.getLogger(__name__)

DEFAULT_K = 3
"""``k`` of a request that gives none: MASH trains and evaluates with the top 3 passages."""

STATS_EVERY_S = 60.0
"""How often the server logs what it served (one INFO line, not one per request)."""


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def parse_search(body: bytes) -> tuple[list[str], int]:
    """The queries and k of a /search request, or ValueError saying what is wrong with it."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f'body is not JSON ({exc}); send {{"queries": [...], "k": {DEFAULT_K}}}') from exc
    if not isinstance(request, dict):
        raise ValueError('body must be a JSON object {"queries": [...], "k": int}')
    unknown = set(request) - {"queries", "k"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; a search takes 'queries' and 'k'")
    if "queries" not in request:
        raise ValueError("'queries' is missing: send a list of query strings")
    queries, k = request["queries"], request.get("k", DEFAULT_K)
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise ValueError("'queries' must be a list of strings")
    if len(queries) > MAX_QUERIES_PER_REQUEST:
        raise ValueError(
            f"{len(queries)} queries in one request; at most {MAX_QUERIES_PER_REQUEST} (split the batch)"
        )
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"'k' must be an integer in 1..{MAX_K}, got {k!r}")
    return queries, k


@dataclasses.dataclass
class _Pending:
    """One request waiting in the batcher's queue."""

    queries: list[str]
    k: int
    future: asyncio.Future


class MicroBatcher:
    """Coalesces concurrent searches into one call of ``search(queries, k)`` (run in a worker thread)."""

    def __init__(self, search: Callable[[Sequence[str], int], list[list[Hit]]], max_batch: int = 64):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.search, self.max_batch = search, max_batch
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.stats = {"requests": 0, "queries": 0, "batches": 0, "search_s": 0.0}

    async def submit(self, queries: list[str], k: int) -> list[list[Hit]]:
        """The hits for ``queries``, searched together with whatever else is queued."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(queries, k, future))
        return await future

    async def run(self) -> None:
        """The worker: forever, take a batch off the queue and answer it (cancel the task to stop)."""
        held: _Pending | None = None  # the request that did not fit into the last batch
        last_log = time.monotonic()
        while True:
            first = held if held is not None else await self.queue.get()
            batch, size, held = [first], len(first.queries), None
            while not self.queue.empty():
                nxt = self.queue.get_nowait()
                if size + len(nxt.queries) > self.max_batch:
                    held = nxt
                    break
                batch.append(nxt)
                size += len(nxt.queries)
            await self._answer([p for p in batch if not p.future.done()])  # done: the client hung up
            if time.monotonic() - last_log > STATS_EVERY_S:
                self._log_stats()
                last_log = time.monotonic()

    async def _answer(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        queries = [q for p in batch for q in p.queries]
        start = time.perf_counter()
        try:
            results = await asyncio.to_thread(self.search, queries, max(p.k for p in batch))
        except Exception as exc:
            logger.exception("The index failed on a batch of %d queries", len(queries))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        elapsed = time.perf_counter() - start
        row = 0
        for p in batch:
            if not p.future.done():
                p.future.set_result([hits[: p.k] for hits in results[row : row + len(p.queries)]])
            row += len(p.queries)
        self.stats["requests"] += len(batch)
        self.stats["queries"] += len(queries)
        self.stats["batches"] += 1
        self.stats["search_s"] += elapsed
        logger.debug("search: %d requests, %d queries in %.1f ms", len(batch), len(queries), 1e3 * elapsed)

    def _log_stats(self) -> None:
        s = self.stats
        if s["batches"]:
            logger.info(
                "served %d requests (%d queries) in %d batches, %.1f queries per batch, %.2f ms per query",
                s["requests"], s["queries"], s["batches"], s["queries"] / s["batches"],
                1e3 * s["search_s"] / max(s["queries"], 1),
            )  # fmt: skip


MAX_BODY = 1 << 20  # bytes of one search request; a batch of 256 long questions is ~50 KB


def create_app(index: BM25Index, max_batch: int = 64, max_body: int = MAX_BODY) -> FastAPI:
    """A FastAPI app serving ``index`` (anything with ``search(queries, k)`` and ``len()``); a request
    body over ``max_body`` bytes gets a 413."""
    batcher = MicroBatcher(index.search, max_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # The worker lives on the server's event loop, so it starts with the server, not at import.
        worker = asyncio.create_task(batcher.run())
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        batcher._log_stats()

    app = FastAPI(title="posttrain retriever", lifespan=lifespan)
    app.state.batcher = batcher

    @app.get("/health")
    async def health():
        return _json({"status": "ok", "passages": len(index)})

    @app.post("/search")
    async def search(request: Request):
        try:
            queries, k = parse_search(await read_body(request, max_body))
        except BodyTooLarge:
            detail = f"request body over {max_body} bytes: split the batch (or raise the server's --max_body)"
            return _json({"detail": detail}, status=413)
        except ValueError as exc:
            return _json({"detail": str(exc)}, status=400)
        if not queries:
            return _json({"results": []})
        try:
            results = await batcher.submit(queries, k)
        except Exception as exc:  # logged by the batcher; the client sees a 5xx and retries
            return _json({"detail": f"search failed: {type(exc).__name__}: {exc}"}, status=500)
        return _json({"results": [[hit.to_dict() for hit in hits] for hits in results]})

    return app


# ---------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="posttrain retriever serve",
        description="Serve BM25 search over a JSONL passage corpus for pay-per-search (MASH) rollouts.",
    )
    p.add_argument(
        "--corpus",
        default=str(DEFAULT_CORPUS),
        help="JSONL file, one {id, title, text} per line (default: the shipped SQuAD v1.1 dev passages)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="0.0.0.0 to accept other machines (no auth: read-only)"
    )
    p.add_argument("--port", type=int, default=8001)
    p.add_argument(
        "--cache_dir",
        default=None,
        help="where built indexes are kept (default: $POSTTRAIN_CACHE/retrieval, else ~/.cache/posttrain/retrieval)",
    )
    p.add_argument("--max_batch", type=int, default=64, help="most queries searched together in one batch")
    p.add_argument(
        "--max_body", type=int, default=MAX_BODY, help="largest request body in bytes (413 beyond)"
    )
    p.add_argument("--stem", action="store_true", help="stem words (needs PyStemmer)")
    return p


def main(argv: list[str]) -> None:
    """``posttrain retriever serve ...`` (argv: the flags after ``serve``); serves until interrupted."""
    import uvicorn

    args = _parser().parse_args(argv)
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}.")
    if args.max_batch < 1:
        raise ConfigError(f"--max_batch must be at least 1, got {args.max_batch}.")
    if args.max_body < 1024:
        raise ConfigError(f"--max_body must be at least 1024 bytes, got {args.max_body}.")
    if not is_loopback(args.host):
        logger.warning(
            "Serving on %s: any machine that can reach it can search the corpus (the server is read-only; "
            "keep it on a private network).",
            args.host,
        )
    index = load_index(args.corpus, cache_dir=args.cache_dir, stem=args.stem)
    url = f"http://{args.host}:{args.port}"
    logger.info(
        "Retriever serving BM25 over %d passages of %s on %s (POST /search, GET /health); "
        "give the run this URL as its search source",
        len(index), args.corpus, url,
    )  # fmt: skip
    uvicorn.run(
        create_app(index, args.max_batch, args.max_body), host=args.host, port=args.port, log_level="warning"
    )


if __name__ == "__main__":
    import sys

    from posttrain.console import run_command

    sys.exit(run_command(lambda: main(sys.argv[1:])))


def command(argv: list[str]) -> None:
    """``posttrain retriever serve ...``."""
    if not argv or argv[0] in ("-h", "--help") or argv[0] != "serve":
        raise PosttrainError(
            "Usage: posttrain retriever serve [--corpus C.jsonl] [--port 8001] [--host 127.0.0.1] "
            "(`serve` is the one retriever command; `posttrain retriever serve --help` for every flag)."
        )
    main(argv[1:])
