"""Memory-R+'s episodic-memory rewards: exploit what succeeded on similar questions, explore away from
what failed (Le, Do, Nguyen, Venkatesh, "Reasoning Under 1 Billion", arXiv 2504.02273, TMLR 2025;
docs/methods.md "Memory-R+").

For a completion ``a`` (the embedding of its reasoning span) of question ``q`` (the embedding of the
question), with a success memory ``M_s`` and a failure memory ``M_f`` keyed by question embedding:

    B(M, q)      = the responses stored under the K stored questions nearest to q (cosine)
    exploit(q,a) = -|| a - mean(B(M_s, q)) ||_2                               (Eq. 4; 0 if B is empty)
    explore(q,a) = 1 - max_{a' in B(M_f, q)} cos(a, a')                     (Eq. 5; 0 during warm-up)
    R_mem        = beta_exploit * minmax_w(exploit) + beta_explore * minmax_w(explore)      (Eq. 6-7)

``minmax_w`` rescales by the minimum and maximum of the last ``window`` raw values of the same
component, the call's own values included: ``(x - min) / (max - min + eps)``; with equal minimum and
maximum it gives 0 (the reference returns the raw value there, which for the exploit distance is a
negative number of the wrong scale), and all of a call's values enter the window before any is
rescaled (the reference goes one completion at a time, so a batch's first completions see a shorter
window than its last). A completion is a success when its correctness (``accuracy``'s reading, the
same ``extract`` policy) exceeds 0.5, else a failure, and it is written to that memory under its own
question (never under the call's first prompt: the reference's ``prompts[0]`` keying scores half of a
batch of two questions against the wrong one). ``insert``: ``after`` (the paper's text: a completion is
scored against the memory of earlier steps, then stored) or ``before`` (the reference code: stored
first, so a correct completion is partly compared with itself). Each memory keeps at most ``capacity``
questions (the oldest evicted) and ``per_key`` responses per question (the oldest dropped).

Recipe entries (``method: memory_r_plus`` adds them with accuracy and format):

    - name: episodic_memory
      kwargs: {explore: true, k: 1, window: 100, warmup_steps: 50}

Embeddings are computed once per call for the whole gathered batch; ``time/memory`` logs the seconds
spent per call (embedding and search), ``memory/size_success``, ``memory/size_failure``, ``memory/exploit``
and ``memory/explore`` (normalised means). Nearest questions are found with matrix products below
``faiss_above`` stored questions and with a FAISS inner-product index above it: 256 by default, measured
by ``bench/memory_search.py`` (2-core CPU, 64 queries, K = 1: matrix products 20x faster at 64 keys,
FAISS 1.25x faster at 256 and 1.6-3.3x from 1,024 to 16,384).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from posttrain.errors import RewardError
from posttrain.rewards import completion_text, group_reward
from posttrain.verify.math import get_extractor, score

EPS = 1e-8


# --------------------------------------------------------------------------------------------------
# The maths (pure functions)
# --------------------------------------------------------------------------------------------------


def exploit_value(a: np.ndarray, responses: np.ndarray) -> float:
    """Eq. 4: minus the Euclidean distance of ``a`` to the centroid of ``responses`` (0 when none)."""
    if len(responses) == 0:
        return 0.0
    return -float(np.linalg.norm(a - responses.mean(axis=0)))


def explore_value(a: np.ndarray, responses: np.ndarray) -> float:
    """Eq. 5: one minus the highest cosine similarity of ``a`` to ``responses`` (1 when none)."""
    if len(responses) == 0:
        return 1.0
    na = np.linalg.norm(a) + EPS
    sims = responses @ a / (np.linalg.norm(responses, axis=1) * na + EPS)
    return float(1.0 - sims.max())


class SlidingMinMax:
    """Eq. 6: min-max normalisation over the last ``window`` raw values (the values scored included)."""

    def __init__(self, window: int = 100):
        self.values: collections.deque[float] = collections.deque(maxlen=window)

    def __call__(self, xs: Sequence[float]) -> list[float]:
        """Add a call's raw values, then rescale each by the window's minimum and maximum. All of a
        call's values enter first, so a completion's score does not depend on its position in the batch
        (the reference adds and rescales one completion at a time)."""
        self.values.extend(xs)
        if not self.values:
            return []
        low, high = min(self.values), max(self.values)
        if high - low <= EPS:
            return [0.0] * len(xs)
        return [(x - low) / (high - low + EPS) for x in xs]


class KeyedMemory:
    """Responses keyed by question: at most ``capacity`` questions (FIFO) and ``per_key`` responses each."""

    def __init__(self, capacity: int = 10_000, per_key: int = 100, faiss_above: int = 256):
        self.capacity, self.per_key, self.faiss_above = capacity, per_key, faiss_above
        self.keys: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.responses: dict[str, collections.deque[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, key_vec: np.ndarray, response: np.ndarray) -> None:
        if key not in self.keys:
            if len(self.keys) >= self.capacity:
                old, _ = self.keys.popitem(last=False)
                del self.responses[old]
            self.keys[key] = key_vec
            self.responses[key] = collections.deque(maxlen=self.per_key)
        self.responses[key].append(response)

    def nearest(self, queries: np.ndarray, k: int) -> list[list[str]]:
        """For each row of ``queries``, the ``k`` stored questions most similar to it (cosine; vectors
        are unit length). The stored keys are stacked (and indexed) once per call, not per query."""
        if not self.keys:
            return [[] for _ in queries]
        names = list(self.keys)
        matrix = np.stack([self.keys[n] for n in names]).astype(np.float32)
        k = min(k, len(names))
        queries = np.asarray(queries, dtype=np.float32)
        if len(names) > self.faiss_above:
            import faiss

            index = faiss.IndexFlatIP(matrix.shape[1])
            index.add(matrix)
            _, idx = index.search(queries, k)
            return [[names[i] for i in row if i >= 0] for row in idx]
        sims = queries @ matrix.T
        return [[names[i] for i in np.argsort(-row, kind="stable")[:k]] for row in sims]

    def read(self, queries: np.ndarray, k: int) -> list[np.ndarray]:
        """B(M, q) for each query: every response stored under its ``k`` nearest questions, as one array."""
        out = []
        for found in self.nearest(queries, k):
            rows = [r for name in found for r in self.responses[name]]
            out.append(np.stack(rows) if rows else np.zeros((0, queries.shape[1]), dtype=np.float32))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "key_vecs": [v.tolist() for v in self.keys.values()],
            "responses": [[r.tolist() for r in self.responses[k]] for k in self.keys],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.keys = collections.OrderedDict(
            (k, np.asarray(v, dtype=np.float32)) for k, v in zip(state["keys"], state["key_vecs"])
        )
        self.responses = {
            k: collections.deque((np.asarray(r, dtype=np.float32) for r in rs), maxlen=self.per_key)
            for k, rs in zip(state["keys"], state["responses"])
        }


def reasoning_span(text: str) -> str:
    """The reasoning part of a completion: inside <think> or <reasoning> when present, else before an
    <answer> tag, else the whole text (Memory-R's reference stores the reasoning span only)."""
    for tag in ("think", "reasoning"):
        start, end = text.find(f"<{tag}>"), text.find(f"</{tag}>")
        if start != -1:
            return text[start + len(tag) + 2 : end if end != -1 else None].strip()
    cut = text.find("<answer>")
    return (text[:cut] if cut > 0 else text).strip()


def question_text(prompt: Any) -> str:
    """The last user message of a conversational prompt, or the prompt itself."""
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return str(users[-1] if users else prompt[-1].get("content", ""))
    return str(prompt)


# --------------------------------------------------------------------------------------------------
# The plugin
# --------------------------------------------------------------------------------------------------


def _check(name: str, value: Any, ok: bool, must: str) -> None:
    if not ok:
        raise RewardError(f"episodic_memory: `{name}` must be {must}, got {value!r}.")


@group_reward
class EpisodicMemory:
    """Memory-R (``explore: false``) and Memory-R+ (``explore: true``); group-level and stateful."""

    def __init__(
        self,
        explore: bool = True,
        k: int = 1,
        capacity: int = 10_000,
        per_key: int = 100,
        window: int = 100,
        warmup_steps: int = 50,
        warmup_failures: int = 0,
        beta_exploit: float = 1.0,
        beta_explore: float = 1.0,
        threshold: float = 0.5,
        insert: str = "after",
        extract: str = "lenient",
        embedder: str = "all-MiniLM-L6-v2",
        faiss_above: int = 256,
        embed: Callable[[Sequence[str]], np.ndarray] | None = None,
    ):
        _check("k", k, isinstance(k, int) and k >= 1, "an integer >= 1 (the paper: 1 on GSM8K)")
        _check("window", window, isinstance(window, int) and window >= 2, "an integer >= 2 (the paper: 100)")
        _check("capacity", capacity, isinstance(capacity, int) and capacity >= 1, "an integer >= 1")
        _check("per_key", per_key, isinstance(per_key, int) and per_key >= 1, "an integer >= 1")
        for name, value in (("beta_exploit", beta_exploit), ("beta_explore", beta_explore)):
            _check(
                name,
                value,
                isinstance(value, int | float) and math.isfinite(value) and value >= 0,
                "a number >= 0",
            )
        _check(
            "warmup_steps",
            warmup_steps,
            isinstance(warmup_steps, int) and warmup_steps >= 0,
            "an integer >= 0",
        )
        _check(
            "warmup_failures",
            warmup_failures,
            isinstance(warmup_failures, int) and warmup_failures >= 0,
            "an integer >= 0",
        )
        _check(
            "insert",
            insert,
            insert in ("after", "before"),
            "'after' (the paper) or 'before' (the reference code)",
        )
        get_extractor(extract, "episodic_memory")
        self.explore, self.k, self.threshold, self.insert, self.extract = (
            explore,
            k,
            threshold,
            insert,
            extract,
        )
        self.beta_exploit, self.beta_explore = float(beta_exploit), float(beta_explore)
        self.warmup_steps, self.warmup_failures = warmup_steps, warmup_failures
        self.success = KeyedMemory(capacity, per_key, faiss_above)
        self.failure = KeyedMemory(capacity, per_key, faiss_above)
        self.norm_exploit, self.norm_explore = SlidingMinMax(window), SlidingMinMax(window)
        self.calls = 0  # training calls so far: the explore warm-up counts them
        self.embedder_name = embedder
        self._embed = embed

    # ---- state (checkpointed: both memories, both windows, the warm-up counter)
    def state_dict(self) -> dict[str, Any]:
        return {
            "success": self.success.state_dict(),
            "failure": self.failure.state_dict(),
            "window_exploit": list(self.norm_exploit.values),
            "window_explore": list(self.norm_explore.values),
            "calls": self.calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.success.load_state_dict(state["success"])
        self.failure.load_state_dict(state["failure"])
        self.norm_exploit.values.clear()
        self.norm_exploit.values.extend(state["window_exploit"])
        self.norm_explore.values.clear()
        self.norm_explore.values.extend(state["window_explore"])
        self.calls = int(state["calls"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embed is None:
            from posttrain.embedding import load_embedder

            self._embed = load_embedder(self.embedder_name)
        return self._embed(texts)

    def explore_active(self) -> bool:
        return self.explore and self.calls >= self.warmup_steps and len(self.failure) >= self.warmup_failures

    def __call__(
        self,
        completions: Sequence[Any],
        group_size: int,
        prompts: Sequence[Any] | None = None,
        answer: Sequence[Any] | None = None,
        verifier: Sequence[Any] | None = None,
        log_metric: Callable[[str, float], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        start = time.perf_counter()
        n = len(completions)
        if prompts is None:
            raise RewardError(
                "episodic_memory needs the prompts (to key each completion by its own question)."
            )
        if answer is None and verifier is None:
            raise RewardError(
                "episodic_memory needs a correctness signal: an `answer` (or `verifier`) column in the data, "
                "to decide which memory a completion goes to."
            )
        texts = [completion_text(c) for c in completions]
        questions = [question_text(p) for p in prompts]
        unique = list(dict.fromkeys(questions))
        vectors = self.embed(unique + [reasoning_span(t) for t in texts])  # one batch per call
        q_vec = dict(zip(unique, vectors[: len(unique)]))
        a_vecs = vectors[len(unique) :]
        answers = answer if answer is not None else [None] * n
        verifiers = verifier if verifier is not None else [None] * n
        correct = [
            None
            if answers[i] is None and verifiers[i] is None
            else score(texts[i], answers[i], verifiers[i], self.extract)
            for i in range(n)
        ]
        explore_on = self.explore_active()

        def write(i: int) -> None:
            if correct[i] is None:
                return
            memory = self.success if correct[i] > self.threshold else self.failure
            memory.add(questions[i], q_vec[questions[i]], a_vecs[i])

        if self.insert == "before":
            for i in range(n):
                write(i)
        exploits, explores = [0.0] * n, [0.0] * n
        q_rows = np.stack([q_vec[q] for q in questions]) if n else np.zeros((0, a_vecs.shape[1]))
        if len(self.success):  # an empty success memory gives no exploit signal: 0
            reads = self.success.read(q_rows, self.k)
            exploits = self.norm_exploit([exploit_value(a_vecs[i], reads[i]) for i in range(n)])
        if explore_on:
            reads = self.failure.read(q_rows, self.k)
            explores = self.norm_explore([explore_value(a_vecs[i], reads[i]) for i in range(n)])
        scores: list[float | None] = [
            self.beta_exploit * exploits[i] + self.beta_explore * explores[i] for i in range(n)
        ]
        if self.insert == "after":
            for i in range(n):
                write(i)
        self.calls += 1
        if log_metric is not None:
            log_metric("time/memory", time.perf_counter() - start)
            log_metric("memory/size_success", float(len(self.success)))
            log_metric("memory/size_failure", float(len(self.failure)))
            log_metric("memory/exploit", float(np.mean(exploits)) if exploits else 0.0)
            log_metric("memory/explore", float(np.mean(explores)) if explores else 0.0)
            log_metric("memory/explore_active", float(explore_on))
        return scores
