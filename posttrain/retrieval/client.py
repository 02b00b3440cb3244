"""The HTTP side of the search tool: :class:`RetrievalClient` talks to ``posttrain retriever serve``.

    client = RetrievalClient("http://127.0.0.1:8001")
    client.wait_until_ready(timeout=60)                  # {"status": "ok", "passages": 2067}
    hits = client.search(["who won super bowl 50"], k=3) # same answer as the in-process BM25Index

A batch is one POST (split only past :data:`~posttrain.retrieval.MAX_QUERIES_PER_REQUEST` queries).
Connection errors, timeouts, 5xx, 408 and 429 answers are retried with back-off ``backoff``, 2x, 4x, ... seconds,
``retries`` times; then a :class:`~posttrain.retrieval.RetrievalError` says how to start the server and
resume the run. Another 4xx answer (a request the server refuses) is raised at once with the server's message:
sending it again would not help. The client may be shared by threads (one HTTP session per thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from posttrain.retrieval import MAX_K, MAX_QUERIES_PER_REQUEST, RetrievalError
from posttrain.retrieval.index import Hit
from posttrain.retrying import Refused, Unanswered, send, wait_until_up

logger = logging.getLogger(__name__)

RETRIED_4XX = (408, 429)
"""Client errors that are about timing (a proxy's timeout, a rate limit), not the request: retried."""


def _sleep(seconds: float) -> None:
    """The back-off wait (a function of its own so that tests can skip the waiting)."""
    time.sleep(seconds)


class RetrievalClient:
    """A :class:`~posttrain.retrieval.tool.SearchTool` whose index lives in a retrieval server."""

    def __init__(self, url: str, timeout: float = 30.0, retries: int = 3, backoff: float = 1.0):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"The retrieval server URL must look like http://HOST:PORT, got {url!r}.")
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError("timeout must be > 0, retries and backoff >= 0.")
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._local = threading.local()

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """The top ``k`` hits for each query (see :meth:`BM25Index.search`); ``k`` at most MAX_K."""
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise ValueError(f"k must be an integer in 1..{MAX_K} (passages per query), got {k!r}.")
        if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
            raise TypeError("queries must be a list of strings; wrap a single query in a list.")
        results: list[list[Hit]] = []
        for start in range(0, len(queries), MAX_QUERIES_PER_REQUEST):
            chunk = list(queries[start : start + MAX_QUERIES_PER_REQUEST])
            what = f"a search of {len(chunk)} queries"
            answer = self._request("POST", "/search", what, json={"queries": chunk, "k": k})
            rows = answer.get("results") if isinstance(answer, dict) else None
            if not isinstance(rows, list) or len(rows) != len(chunk):
                raise RetrievalError(
                    f"The server at {self.url} answered a search of {len(chunk)} queries with "
                    f"{len(rows) if isinstance(rows, list) else 'no'} result lists; is it a posttrain "
                    "retriever (`posttrain retriever serve`)?"
                )
            results.extend([Hit.from_dict(hit) for hit in row] for row in rows)
        return results

    def health(self) -> dict[str, Any]:
        """The server's /health answer (retried like a search)."""
        return self._request("GET", "/health", "a health check")

    def wait_until_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Poll /health until the server answers (it may still be indexing); its answer, or RetrievalError."""
        try:
            return wait_until_up(
                self._session(),
                f"{self.url}/health",
                timeout,
                first_delay=0.1,
                max_delay=2.0,
                read=lambda answer: answer.json(),
            )
        except Unanswered as exc:
            raise RetrievalError(
                f"No retrieval server answers at {self.url}/health after {timeout:.0f} s ({exc.last}). "
                f"{self._start_hint()}"
            ) from None

    def close(self) -> None:
        """Close this thread's connection (the server keeps running)."""
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None

    # ----------------------------------------------------------------------------- internals

    def _session(self):
        import requests

        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def _request(self, method: str, path: str, what: str, **kwargs) -> Any:
        """The JSON answer to one request, retried on connection errors, timeouts and 5xx answers."""
        try:
            answer = send(
                self._session(),
                method,
                self.url + path,
                what=what,
                server="Retrieval server",
                retries=self.retries,
                backoff=self.backoff,
                timeout=self.timeout,
                retry_statuses=RETRIED_4XX,
                sleep=_sleep,
                **kwargs,
            )
        except Refused as exc:
            raise RetrievalError(
                f"The retrieval server at {self.url} refused {what} (HTTP {exc.status}): {exc.detail}"
            ) from None
        except Unanswered as exc:
            raise RetrievalError(
                f"The retrieval server at {self.url} did not answer {what} after {exc.attempts} attempts "
                f"(last: {exc.last}). {self._start_hint()} Then resume the run with --resume."
            ) from None
        try:
            return answer.json()
        except ValueError as exc:
            raise RetrievalError(
                f"The server at {self.url} answered {what} with something that is not JSON; "
                "is it a posttrain retriever (`posttrain retriever serve`)?"
            ) from exc

    def _start_hint(self) -> str:
        port = urlparse(self.url).port or 8001
        return (
            f"Start it with `posttrain retriever serve --corpus CORPUS.jsonl --port {port}` (no --corpus: the "
            f"shipped SQuAD passages), or point the run at the URL where it listens."
        )
