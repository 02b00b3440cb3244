"""Multi-turn search-tool rollouts (MASH / Search-R1 style): the model writes ``<search> q </search>``,
the environment answers with documents, the model goes on, until ``</answer>``, end-of-sequence or a limit.

    from posttrain.rollout.tools import ToolConfig, run_search_loop
    trajectories = run_search_loop(engine, prompt_ids, tokenizer, tool, ToolConfig(max_searches=5), sampling)

``run_search_loop`` is the loop itself, for any engine with our ``generate`` (``rollout/base.py``);
``posttrain.methods.mash.rollout.make_rollout_func`` wraps it as TRL's ``rollout_func``.
Tests: tests/test_tools.py.

One trajectory, as token ids after the prompt (``env_mask`` under it: 1 = model token, trained;
0 = inserted by the environment, excluded from the loss)::

    prompt | <think>.</think><search> q </search> | \\n<document>(Title: T)</document>\\n | <answer>A</answer>
             1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1   0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0   1 1 1 1 1 1 1 1 1 1
             round 1: stops at </search>           documents for q, tokenised alone      round 2: </answer>

Each round continues from prompt + every completion token so far, model and inserted alike: token-level
concatenation, so the ids that are trained are exactly the ids the model was conditioned on (MASH
re-tokenises decoded text instead, which can drift at the seams). Loop after Gul et al., "Pay-Per-Search
Models are Abstention Models", arXiv 2510.01152 (their ``agentic_loop``); facts only, own code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from posttrain.retrieval.tool import NO_RESULTS, format_documents  # the one document format
from posttrain.rollout.base import SamplingSettings

SEARCH_CLOSE = "</search>"
ANSWER_CLOSE = "</answer>"
STOP_STRINGS = [SEARCH_CLOSE, ANSWER_CLOSE]
SEARCH_RE = re.compile(r"<search>(.*?)</search>", re.DOTALL)
LIMIT_WARNING = "\n<warning>SEARCH LIMIT REACHED</warning>\n"
SEARCH_PROMPT = (
    "Answer the question at the end. Each time you get new information, reason about it first, "
    "between <think> and </think>. If you are missing knowledge you need, you can look it up by "
    "writing a query between <search> and </search>; the results will be shown to you between "
    "<document> and </document>. Every search has a cost, so search only when you need to. Once you "
    "know the answer, write only the short answer, with no explanation, between <answer> and "
    "</answer>, for example <answer> Paris </answer>.\n\nQuestion: {question}\n"
)
"""The instruction, as a ``data.prompt_template``: ``SEARCH_PROMPT.format(question=...)``. Our wording of
the behaviour MASH's prompt asks for (think, search, documents, costly searches, short answer)."""


class SearchTool(Protocol):
    """Anything that searches a batch of queries; ``posttrain.retrieval.tool`` implements it. Each hit
    has ``.id``, ``.title``, ``.text`` (and ``.score``). It must be local to the process: it is called
    only on rounds where this process has queries, so it must not be a collective operation."""

    def search(self, queries: list[str], k: int) -> list[list[Any]]: ...


@dataclass
class ToolConfig:
    """Limits of the search loop (MASH's values as defaults)."""

    max_searches: int = 5
    """Searches sent to the tool per trajectory; a request beyond this gets ``LIMIT_WARNING`` instead."""
    max_turn_tokens: int = 512
    """Most new tokens the model writes in one round (one turn)."""
    max_total_tokens: int | None = None
    """Most completion tokens in all, documents included; None = the sampling's ``max_tokens``
    (TRL's ``max_completion_length``). A trajectory that reaches it is cut there and flagged truncated."""
    top_k: int = 3
    """Documents per search."""
    max_rounds: int | None = None
    """Most generation rounds; None = ``max_searches + 2`` (room for every search, one refused request
    and a final answer)."""

    def __post_init__(self):
        if self.max_rounds is None:
            self.max_rounds = self.max_searches + 2
        for name in ("max_turn_tokens", "top_k", "max_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"ToolConfig.{name} must be at least 1, got {getattr(self, name)}.")
        if self.max_searches < 0:
            raise ValueError(f"ToolConfig.max_searches must be 0 or more, got {self.max_searches}.")
        if self.max_total_tokens is not None and self.max_total_tokens < 1:
            raise ValueError(
                f"ToolConfig.max_total_tokens must be at least 1 (or None for max_completion_length), "
                f"got {self.max_total_tokens}."
            )


@dataclass
class Trajectory:
    """One finished rollout: everything after the prompt, and what happened on the way."""

    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    """1 = written by the model, 0 = inserted (documents, warnings); aligned with ``completion_ids``."""
    logprobs: list[float] | None = field(default_factory=list)
    """The engine's log-probabilities of model tokens, 0.0 on inserted ones; None if the engine gave none."""
    num_searches: int = 0
    """Searches the model requested, refused over-budget ones included (MASH counts every request: its
    penalty is on what the model asked for, and a request past the budget is still a request)."""
    search_budget_hit: bool = False
    """Some request was refused because ``max_searches`` had been used."""
    truncated: bool = False
    """Ended by a limit (turn cap, total cap, round cap) instead of by ``</answer>`` or by stopping itself."""
    finish_reason: str = ""
    """``answer`` | ``stop`` (end-of-sequence, or a stop with no complete tag) | ``turn_cap`` |
    ``total_cap`` | ``rounds``. A complete trajectory (``answer``, ``stop``) ends with an end-of-sequence
    token, inserted when the model stopped at a stop string (:func:`close_complete`)."""
    retrieved_ids: list[Any] = field(default_factory=list)
    """Ids of the documents inserted, in order, over all searches."""
    queries: list[str] = field(default_factory=list)
    """Queries sent to the tool (stripped), in order; refused requests are not in it."""

    def extend(self, ids: list[int], logprobs: list[float] | None, from_model: bool) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([int(from_model)] * len(ids))
        if self.logprobs is not None:
            self.logprobs.extend(logprobs if from_model and logprobs is not None else [0.0] * len(ids))

    def cut(self, length: int) -> None:
        del self.completion_ids[length:], self.env_mask[length:]
        if self.logprobs is not None:
            del self.logprobs[length:]

    def end(self, reason: str) -> None:
        self.finish_reason = reason
        self.truncated = reason in ("turn_cap", "total_cap", "rounds")


def read_turn(text: str, capped: bool) -> tuple[str, str | None]:
    """What one round's new text asks for: ``("search", query)``, ``("answer", None)``, ``("stop", None)``
    (the model stopped by itself: end-of-sequence, or a stray closing tag) or ``("turn_cap", None)``.

    A search wins over an answer, as in MASH (only the first search of the round is read).

    >>> read_turn("<think>hm</think><search> capital of Peru </search>", capped=False)
    ('search', ' capital of Peru ')
    >>> read_turn("<answer> Lima </answer>", capped=False)
    ('answer', None)
    >>> read_turn("I think the answer", capped=True)
    ('turn_cap', None)
    """
    match = SEARCH_RE.search(text)
    if match:
        return "search", match.group(1)
    if ANSWER_CLOSE in text:
        return "answer", None
    return ("turn_cap" if capped else "stop"), None


def run_search_loop(
    engine,
    prompt_ids: list[list[int]],
    tokenizer,
    tool: SearchTool,
    config: ToolConfig,
    sampling: SamplingSettings,
    *,
    format_documents: Callable[[Sequence[Any]], str] = format_documents,
    all_finished: Callable[[bool], bool] | None = None,
) -> list[Trajectory]:
    """One trajectory per prompt. Each round is one ``engine.generate`` over the trajectories still
    running, and at most one ``tool.search`` with the queries of that round.

    ``sampling`` sets temperature and the like; each round runs with ``stop=STOP_STRINGS`` and
    ``max_tokens = min(max_turn_tokens, max_total_tokens)`` (the same in every round and process, so a
    server engine that batches all processes together sees one setting), and ``seed + round`` when seeded.
    ``all_finished(done_here) -> done_everywhere``: several processes whose engine call is collective
    (a ``posttrain vllm-serve`` client; sharded models) must all run the same rounds; a process with
    nothing left generates a throw-away turn for its first prompt until every process is done.
    """
    if not prompt_ids:
        return []
    total_cap = config.max_total_tokens or sampling.max_tokens
    turn_cap = min(config.max_turn_tokens, total_cap)
    eos = _eos_ids(engine, tokenizer)
    trajectories = [Trajectory() for _ in prompt_ids]
    active = list(range(len(prompt_ids)))
    for round_index in range(config.max_rounds):
        done_here = not active
        if all_finished(done_here) if all_finished is not None else done_here:
            break
        turn = replace(
            sampling,
            max_tokens=turn_cap,
            stop=list(STOP_STRINGS),
            seed=None if sampling.seed is None else sampling.seed + round_index,
        )
        contexts = [prompt_ids[i] + trajectories[i].completion_ids for i in active] or [prompt_ids[0]]
        out = engine.generate(contexts, 1, turn)
        requests: list[tuple[int, str]] = []
        for row, i in enumerate(active):
            logprobs = out.logprobs[row] if out.logprobs is not None else None
            query = _take_turn(
                trajectories[i], out.completion_ids[row], logprobs, turn_cap, total_cap, eos, tokenizer
            )
            if query is None:
                continue
            trajectories[i].num_searches += 1
            if trajectories[i].num_searches > config.max_searches:
                trajectories[i].search_budget_hit = True
                trajectories[i].extend(_encode(tokenizer, LIMIT_WARNING), None, from_model=False)
            else:
                requests.append((i, query.strip()))
        if requests:  # one batched call per round, with this round's queries only
            results = tool.search([q for _, q in requests], config.top_k)
            for (i, query), hits in zip(requests, results, strict=True):
                trajectories[i].queries.append(query)
                trajectories[i].retrieved_ids.extend(h.id for h in hits)
                text = (format_documents(hits) if hits else NO_RESULTS) + "\n"
                trajectories[i].extend(_encode(tokenizer, text), None, from_model=False)
        for i in active:  # inserted text may pass the total cap: cut there, it ends the episode
            traj = trajectories[i]
            if not traj.finish_reason and len(traj.completion_ids) >= total_cap:
                traj.cut(total_cap)
                traj.end("total_cap")
        active = [i for i in active if not trajectories[i].finish_reason]
    for i in active:
        trajectories[i].end("rounds")
    close_complete(trajectories, eos)
    return trajectories


def close_complete(trajectories: list[Trajectory], eos: set[int]) -> None:
    """End every complete trajectory with an end-of-sequence token, inserted (``env_mask`` 0, not trained).

    A trajectory that stops at ``</answer>`` (a stop string, no EOS) is complete, but TRL takes a completion
    without a final EOS for one cut off by the length limit: ``mask_truncated_completions`` (which DAPO sets)
    would drop every answered trajectory from the loss, and ``completions/clipped_ratio`` would read about 1.
    Only truncated trajectories (turn, total or round cap) are left without one.
    """
    if not eos:
        return
    end = min(eos)
    for traj in trajectories:
        ids = traj.completion_ids
        if not traj.truncated and (not ids or ids[-1] not in eos):
            traj.extend([end], None, from_model=False)


def _take_turn(
    traj: Trajectory,
    new: list[int],
    logprobs: list[float] | None,
    turn_cap: int,
    total_cap: int,
    eos: set[int],
    tokenizer,
) -> str | None:
    """Append one round's model tokens to ``traj``; end it, or return the query it asks for."""
    if logprobs is None:
        traj.logprobs = None
    room = total_cap - len(traj.completion_ids)
    traj.extend(new[:room], logprobs[:room] if logprobs is not None else None, from_model=True)
    capped = len(new) >= turn_cap and not (new and new[-1] in eos)
    kind, query = read_turn(tokenizer.decode(new[:room], skip_special_tokens=False), capped)
    if kind != "answer" and (len(new) > room or (kind == "search" and len(new) == room)):
        # Past the total cap, or a search with no room left for its documents: a request, no tool call.
        if kind == "search":
            traj.num_searches += 1
        traj.end("total_cap")
        return None
    if kind != "search":
        traj.end(kind)
        return None
    return query


def _encode(tokenizer, text: str) -> list[int]:
    """Inserted text is tokenised on its own: its ids are appended as they are to the model's ids."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _eos_ids(engine, tokenizer) -> set[int]:
    ids = set(getattr(engine, "eos_ids", None) or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
