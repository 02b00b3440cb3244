"""The reward plugin API: load reward functions by name and wrap them for the trainer.

A reward plugin is a plain function with TRL's reward signature, so every TRL reward works
unchanged. Dataset columns arrive as keyword arguments; ``None`` means "not applicable to this row".
A user plugin in ten lines (``my_pkg/my_rewards.py``):

    from posttrain.rewards import completion_text

    def brevity(completions, max_words=50, **kwargs):
        # brevity(["a b", "a b c d"], max_words=2) == [1.0, 0.5]
        scores = []
        for c in completions:
            n = len(completion_text(c).split())
            scores.append(1.0 if n <= max_words else max_words / n)
        return scores

and its recipe entry: ``rewards: [{name: "my_pkg.my_rewards:brevity", weight: 0.5, kwargs: {max_words: 30}}]``.

A name is resolved in this order (:func:`load_reward`): a built-in name (:data:`BUILTIN_REWARDS`),
an entry point in the group ``posttrain.rewards``, a dotted path (``pkg.module:attr`` or
``pkg.module.attr``). A class is instantiated with the entry's kwargs; a function gets them bound.

Two optional traits change how the trainer calls a plugin:

- ``@group_reward``: called once per step on the batch gathered from all processes, with each run
  of ``group_size`` consecutive rows being one prompt's group (``group_size`` is a keyword argument).
- stateful: an object with ``state_dict()`` / ``load_state_dict(state)``; its state is saved in
  every checkpoint and restored on resume.

:class:`RewardPlugin` wraps one loaded reward: it checks what the function returns (one finite
number or ``None`` per completion) and, when the function raises, finds the failing row and says
which one, so a bad completion never surfaces as an anonymous traceback deep inside TRL.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import importlib.metadata
import inspect
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from posttrain.errors import ConfigError, RewardError

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "posttrain.rewards"

# Built-in names -> "module:attr". Built-ins live in the top-level `rewards` package and are written
# exactly like user plugins; add one here to give it a short name.
BUILTIN_REWARDS: dict[str, str] = {
    "accuracy": "rewards.math:accuracy",
    "format": "rewards.format:format_reward",
    "length": "rewards.length:length",
    "gcpo_contrastive": "rewards.gcpo:GroupContrastive",
    "spark_judge": "rewards.spark:spark_judge",
    "ttrl_majority": "rewards.ttrl:ttrl_majority",
    "ttrv_frequency": "rewards.ttrl:ttrv_frequency",
    "pay_per_search": "rewards.search:PayPerSearch",
    "episodic_memory": "rewards.memory:EpisodicMemory",
    "overlong": "rewards.overlong:overlong",
}

ON_ERROR_CHOICES = ("raise", "skip")
_SNIPPET_CHARS = 300


# --------------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------------


def group_reward(fn):
    """Mark a reward function (or class) as group-level: it sees whole groups and gets ``group_size``.

    The trainer calls a group-level reward once per step on the batch gathered from all processes,
    ordered so that rows ``[k * group_size, (k + 1) * group_size)`` are the completions of prompt k.
    """
    fn.__posttrain_group__ = True
    return fn


def group_placeholder(name: str) -> Callable[..., list[float]]:
    """Stands in for a group-level plugin in TRL's per-process reward loop; the trainer fills its column
    from the gathered batch afterwards."""

    def placeholder(completions, **kwargs):
        return [0.0] * len(completions)

    placeholder.__name__ = name
    return placeholder


def is_group_reward(obj: Any) -> bool:
    """True if ``obj`` (a function, class, instance or bound partial) was marked with ``@group_reward``."""
    return getattr(obj, "__posttrain_group__", False) is True


def is_stateful(obj: Any) -> bool:
    """True if ``obj`` (an instance, not a class) has ``state_dict`` and ``load_state_dict`` methods."""
    if inspect.isclass(obj):
        return False
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def completion_text(completion: Any) -> str:
    """The text of one completion, whether TRL passed it as a string or as a conversation.

    Conversational completions are lists of messages (``[{"role": "assistant", "content": "..."}]``);
    the text is the content of the last assistant message (the final answer of a multi-turn rollout).
    Content given as a list of parts (``[{"type": "text", "text": "..."}]``) is joined.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
        chosen = assistant or messages
        return _content_text(chosen[-1].get("content")) if chosen else ""
    return str(completion)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "".join(p for p in parts if isinstance(p, str))
    return str(content)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed entry points in the ``posttrain.rewards`` group, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def known_reward_names() -> list[str]:
    """Built-in names followed by the names of installed entry points."""
    return list(BUILTIN_REWARDS) + sorted(set(_entry_points()) - set(BUILTIN_REWARDS))


def import_object(target: str, name: str, field: str = "the reward's `name`") -> Any:
    """Import ``pkg.module:attr`` or ``pkg.module.attr``; ``name`` is what the user wrote, ``field`` where.

    Every failure is a :class:`RewardError` that says what to fix in ``field``.
    """
    if ":" in target:
        module_name, _, attr_path = target.partition(":")
    else:
        module_name, _, attr_path = target.rpartition(".")
    if not module_name or not attr_path:
        raise RewardError(
            f"Reward {name!r}: {target!r} is not a valid dotted path. "
            "Write it as 'my_pkg.my_module:my_reward' (or 'my_pkg.my_module.my_reward')."
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name) and module_name[len(exc.name) :][:1] in ("", "."):
            raise RewardError(
                f"Reward {name!r}: cannot import module {module_name!r} ({exc}). Check the spelling, and "
                "that the package is installed or its folder is on PYTHONPATH."
            ) from exc
        raise RewardError(
            f"Reward {name!r}: module {module_name!r} failed to import because it needs a missing module "
            f"({exc}). Install it, or fix the import in {module_name!r}."
        ) from exc
    except Exception as exc:
        raise RewardError(
            f"Reward {name!r}: importing module {module_name!r} raised {type(exc).__name__}: {exc}. "
            f"Fix the error in {module_name!r}."
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            public = [a for a in dir(module) if not a.startswith("_")]
            close = difflib.get_close_matches(part, public, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RewardError(
                f"Reward {name!r}: module {module_name!r} has no attribute {attr_path!r}.{hint} "
                f"Fix the name after the module in {field}."
            )
        obj = getattr(obj, part)
    return obj


def _resolve(name: str) -> Any:
    """The object a reward name refers to, before instantiation or binding."""
    if not isinstance(name, str) or not name.strip():
        raise RewardError(
            f"A reward name must be a non-empty string, got {name!r}. Known rewards: "
            f"{', '.join(known_reward_names())}, or a dotted path such as 'my_pkg.my_module:my_reward'."
        )
    if name in BUILTIN_REWARDS:
        return import_object(BUILTIN_REWARDS[name], name)
    entry_points = _entry_points()
    if name in entry_points:
        try:
            return entry_points[name].load()
        except Exception as exc:
            raise RewardError(
                f"Reward {name!r}: loading the entry point {entry_points[name].value!r} (group "
                f"{ENTRY_POINT_GROUP!r}) raised {type(exc).__name__}: {exc}. Fix or reinstall the package "
                "that declares it."
            ) from exc
    if ":" in name or "." in name:
        return import_object(name, name)
    known = known_reward_names()
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise RewardError(
        f"Unknown reward {name!r}.{hint} Known rewards: {', '.join(known)}. For your own reward, give a "
        f"dotted path such as 'my_pkg.my_module:my_reward', or register an entry point in the group "
        f"{ENTRY_POINT_GROUP!r}."
    )


def load_reward(name: str, **kwargs: Any) -> Callable[..., list[float | None]]:
    """Load a reward by built-in name, entry point or dotted path, and configure it with ``kwargs``.

    A class is instantiated with ``kwargs``; a function gets them bound with :func:`functools.partial`
    (its ``__name__`` and ``@group_reward`` marker are kept). Every failure is a :class:`RewardError`.

        load_reward("accuracy")
        load_reward("length", cap=256)
        load_reward("my_pkg.my_module:MyStatefulReward", window=100)
    """
    obj = _resolve(name)
    if inspect.isclass(obj):
        try:
            obj = obj(**kwargs)
        except Exception as exc:
            raise RewardError(
                f"Reward {name!r}: creating {obj.__name__}(**{kwargs!r}) raised {type(exc).__name__}: {exc}. "
                "Fix the reward's `kwargs` in the recipe."
            ) from exc
        kwargs = {}
    if not callable(obj):
        raise RewardError(
            f"Reward {name!r} resolved to a {type(obj).__name__}, which is not callable. Point the name at a "
            "function `fn(completions, **kwargs) -> list[float | None]` or a class with `__call__`."
        )
    if kwargs:
        _check_binds(obj, name, kwargs)
        obj = functools.update_wrapper(functools.partial(obj, **kwargs), obj)
    return obj


def _check_binds(fn: Callable, name: str, kwargs: dict[str, Any]) -> None:
    """Fail at load time, not at the first training step, when ``fn`` cannot take ``kwargs``.

    A recipe kwarg must name one of the function's own parameters: one that would only land in its
    ``**kwargs`` (where dataset columns arrive) is a typo, or a setting this reward does not have, such
    as an ``extract`` policy given to a reward that reads no answers.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    named = [
        p.name for p in signature.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(kwargs) - set(named))
    if unknown:
        hints = [
            f" Did you mean {c[0]!r}?" for k in unknown if (c := difflib.get_close_matches(k, named, n=1))
        ]
        raise RewardError(
            f"Reward {name!r} has no setting {', '.join(map(repr, unknown))}; its settings are {named}."
            f"{''.join(hints)} Fix the reward's `kwargs` in the recipe."
        )
    try:
        signature.bind_partial(**kwargs)
    except TypeError as exc:
        raise RewardError(
            f"Reward {name!r} does not accept the kwargs {sorted(kwargs)} ({exc}); its parameters are "
            f"{list(signature.parameters)}. Fix the reward's `kwargs` in the recipe."
        ) from exc


# --------------------------------------------------------------------------------------------------
# Recipe entries and the trainer-facing wrapper
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RewardSpec:
    """One reward entry of a recipe: ``{name, weight, kwargs, on_error, alias}``."""

    name: str
    """Built-in name, entry point name, or dotted path (``my_pkg.my_module:my_reward``)."""
    weight: float = 1.0
    """Weight of this reward in the total reward (TRL's weighted sum over plugins)."""
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments: passed to the class constructor, or bound to the function."""
    on_error: str = "raise"
    """``raise``: a row that raises or scores NaN stops the run; ``skip``: it scores ``None``."""
    alias: str | None = None
    """Metric name (``rewards/<alias>/mean``); defaults to the last part of ``name``."""
    tasks: list[str] | None = None
    """Score only rows whose ``task`` column is one of these (a row without one is a ``solve`` row);
    other rows get None. E.g. SPARK's ``accuracy`` applies to ``[solve]``, not to recycled tasks."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"A reward entry needs a non-empty `name`, got {self.name!r}.")
        if isinstance(self.weight, bool) or not isinstance(self.weight, numbers.Real):
            raise ConfigError(f"Reward {self.name!r}: `weight` must be a number, got {self.weight!r}.")
        if not math.isfinite(self.weight):
            raise ConfigError(f"Reward {self.name!r}: `weight` must be finite, got {self.weight!r}.")
        self.weight = float(self.weight)
        if self.kwargs is None:
            self.kwargs = {}
        if not isinstance(self.kwargs, dict):
            raise ConfigError(
                f"Reward {self.name!r}: `kwargs` must be a mapping of argument names to values, got "
                f"{self.kwargs!r}."
            )
        if self.on_error not in ON_ERROR_CHOICES:
            raise ConfigError(
                f"Reward {self.name!r}: `on_error` must be one of {list(ON_ERROR_CHOICES)}, got {self.on_error!r}."
            )
        if self.alias is None:
            self.alias = default_alias(self.name)
        if not isinstance(self.alias, str) or not self.alias.strip() or "/" in self.alias:
            raise ConfigError(
                f"Reward {self.name!r}: `alias` must be a non-empty metric name without '/', got {self.alias!r}."
            )
        if self.tasks is not None and (
            not isinstance(self.tasks, list)
            or not self.tasks
            or not all(isinstance(t, str) for t in self.tasks)
        ):
            raise ConfigError(
                f"Reward {self.name!r}: `tasks` must be a non-empty list of task names (e.g. [solve]), got "
                f"{self.tasks!r}."
            )

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> RewardSpec:
        """Build a spec from a recipe entry; an unknown key is an error naming the closest valid key."""
        if not isinstance(entry, dict):
            raise ConfigError(f"A reward entry must be a mapping with at least `name`, got {entry!r}.")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in entry:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"Reward entry {entry.get('name', entry)!r} has an unknown key {key!r}.{hint} "
                    f"Valid keys: {', '.join(valid)}."
                )
        if "name" not in entry:
            raise ConfigError(f"The reward entry {entry!r} has no `name`. Add e.g. `name: accuracy`.")
        return cls(**entry)


def default_alias(name: str) -> str:
    """The metric name of a reward: the last part of its name (``pkg.mod:my_reward`` -> ``my_reward``)."""
    return name.rpartition(":")[2].rpartition(".")[2] or name


class RewardPlugin:
    """One loaded reward, as the trainer calls it: validated output and row-level error reports.

    Callable with TRL's reward signature, so it can be passed straight to ``GRPOTrainer`` as a reward
    function; ``__name__`` is the metric name (``rewards/<name>/mean``).
    """

    def __init__(
        self,
        fn: Callable,
        name: str,
        weight: float = 1.0,
        on_error: str = "raise",
        tasks: Sequence[str] | None = None,
    ):
        if on_error not in ON_ERROR_CHOICES:
            raise ConfigError(f"Reward {name!r}: `on_error` must be one of {list(ON_ERROR_CHOICES)}.")
        self.fn = fn
        self.name = name
        self.__name__ = name
        self.weight = float(weight)
        self.on_error = on_error
        self.is_group = is_group_reward(fn)
        self.is_stateful = is_stateful(fn)
        self.tasks = tuple(tasks) if tasks is not None else None

    @classmethod
    def from_spec(cls, spec: RewardSpec) -> RewardPlugin:
        fn = load_reward(spec.name, **spec.kwargs)
        return cls(
            fn,
            name=spec.alias or default_alias(spec.name),
            weight=spec.weight,
            on_error=spec.on_error,
            tasks=spec.tasks,
        )

    def __repr__(self) -> str:
        kind = "group" if self.is_group else "sample"
        return f"RewardPlugin({self.name!r}, weight={self.weight}, {kind}, on_error={self.on_error!r})"

    def __call__(
        self, prompts: Sequence[Any] | None, completions: Sequence[Any], completion_ids=None, **kwargs: Any
    ) -> list[float | None]:
        scores = self._score(prompts, completions, completion_ids, **kwargs)
        if self.tasks is None:
            return scores
        row_tasks = kwargs.get("task") or [None] * len(scores)
        return [s if (t or "solve") in self.tasks else None for s, t in zip(scores, row_tasks, strict=True)]

    def _score(
        self, prompts: Sequence[Any] | None, completions: Sequence[Any], completion_ids=None, **kwargs: Any
    ) -> list[float | None]:
        n = len(completions)
        if self.is_group:
            self._check_group_size(n, kwargs)
        try:
            raw = self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        except RewardError:
            raise  # the plugin's own report of a misconfiguration: never a row to skip
        except Exception as exc:
            if self.is_group:
                return self._group_failure(n, exc)
            return self._rerun_rows(prompts, completions, completion_ids, kwargs, exc)
        return self._validate(raw, n, completions)

    # -- checks ------------------------------------------------------------------------------------

    def _check_group_size(self, n: int, kwargs: dict[str, Any]) -> None:
        group_size = kwargs.get("group_size")
        if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
            raise RewardError(
                f"Group-level reward {self.name!r} was called without a valid `group_size` (got "
                f"{group_size!r}). Group rewards must be called by the trainer's group hook, which passes "
                "`group_size`; do not pass this plugin to TRL as a plain reward function."
            )
        if n % group_size:
            raise RewardError(
                f"Group-level reward {self.name!r} got {n} completions, not a multiple of group_size="
                f"{group_size}. Each run of `group_size` consecutive rows must be one prompt's group."
            )

    def _validate(self, raw: Any, n: int, completions: Sequence[Any], offset: int = 0) -> list[float | None]:
        """One ``float | None`` per completion; NaN/inf raise, or become ``None`` with ``on_error=skip``."""
        if inspect.isawaitable(raw):
            if inspect.iscoroutine(raw):
                raw.close()
            raise RewardError(
                f"Reward {self.name!r} returned an awaitable; async rewards are not supported. Make it a "
                "plain `def` that returns a list."
            )
        if hasattr(raw, "tolist") and not isinstance(raw, (list, tuple)):
            raw = raw.tolist()  # numpy arrays and tensors
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
            raise RewardError(
                f"Reward {self.name!r} returned a {type(raw).__name__}; it must return a list with one "
                f"float (or None) per completion ({n} expected)."
            )
        if len(raw) != n:
            raise RewardError(
                f"Reward {self.name!r} returned {len(raw)} scores for {n} completions (expected {n}, got "
                f"{len(raw)}). Return one float (or None) per completion, in order."
            )
        scores: list[float | None] = []
        for i, value in enumerate(raw):
            if value is None:
                scores.append(None)
                continue
            if not isinstance(value, numbers.Real):
                raise RewardError(
                    f"Reward {self.name!r} returned {value!r} ({type(value).__name__}) for row {offset + i}; "
                    "scores must be float, int, bool or None."
                )
            value = float(value)
            if not math.isfinite(value):
                if self.on_error == "skip":
                    logger.warning(
                        "Reward %r returned %s for row %d; scoring it None (on_error=skip).",
                        self.name,
                        value,
                        offset + i,
                    )
                    scores.append(None)
                    continue
                raise RewardError(
                    f"Reward {self.name!r} returned {value} for row {offset + i} (completion: "
                    f"{_snippet(completions[i])}). Scores must be finite: fix the reward, or set "
                    "`on_error: skip` in its recipe entry to score such rows as None."
                )
            scores.append(value)
        return scores

    # -- failures ----------------------------------------------------------------------------------

    def _group_failure(self, n: int, exc: Exception) -> list[float | None]:
        if self.on_error == "skip":
            logger.warning(
                "Group-level reward %r raised %s: %s; scoring all %d rows None (on_error=skip).",
                self.name,
                type(exc).__name__,
                exc,
                n,
            )
            return [None] * n
        raise RewardError(
            f"Group-level reward {self.name!r} raised on a batch of {n} completions: "
            f"{type(exc).__name__}: {exc}. Fix the reward, or set `on_error: skip` in its recipe entry to "
            "score the whole batch as None when it fails."
        ) from exc

    def _rerun_rows(
        self,
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        completion_ids: Any,
        kwargs: dict[str, Any],
        batch_exc: Exception,
    ) -> list[float | None]:
        """Call ``fn`` one row at a time to find which rows raise (per-sample rewards only)."""
        n = len(completions)

        def row(value: Any, i: int) -> Any:
            # Only per-row columns are sliced; trainer_state, log_metric, ... pass through as they are.
            if isinstance(value, (list, tuple)) and len(value) == n:
                return value[i : i + 1]
            return value

        scores: list[float | None] = []
        failed = 0
        for i in range(n):
            try:
                raw = self.fn(
                    prompts=row(prompts, i),
                    completions=completions[i : i + 1],
                    completion_ids=row(completion_ids, i),
                    **{key: row(value, i) for key, value in kwargs.items()},
                )
            except RewardError:
                raise
            except Exception as exc:
                if self.on_error == "raise":
                    raise RewardError(
                        f"Reward {self.name!r} raised on row {i} of {n}: {type(exc).__name__}: {exc}\n"
                        f"  completion: {_snippet(completions[i])}\n"
                        "Fix the reward so it handles this completion, or set `on_error: skip` in its "
                        "recipe entry to score rows that raise as None."
                    ) from exc
                logger.warning(
                    "Reward %r raised on row %d (%s: %s); scoring it None (on_error=skip).",
                    self.name,
                    i,
                    type(exc).__name__,
                    exc,
                )
                scores.append(None)
                failed += 1
                continue
            scores.extend(self._validate(raw, 1, completions[i : i + 1], offset=i))
        if failed == 0 and self.on_error == "raise":
            raise RewardError(
                f"Reward {self.name!r} raised on a batch of {n} completions ({type(batch_exc).__name__}: "
                f"{batch_exc}), yet every row succeeded on its own: the reward depends on the batch as a "
                "whole. Fix the reward, or set `on_error: skip` in its recipe entry to score rows one by one."
            ) from batch_exc
        return scores

    # -- checkpointing -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The wrapped reward's state for the checkpoint; ``{}`` when it is stateless."""
        return self.fn.state_dict() if self.is_stateful else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped reward's state on resume; a no-op when it is stateless."""
        if self.is_stateful:
            self.fn.load_state_dict(state)


def _snippet(completion: Any) -> str:
    text = completion_text(completion)
    if len(text) > _SNIPPET_CHARS:
        text = text[:_SNIPPET_CHARS] + f"... [{len(text) - _SNIPPET_CHARS} more chars]"
    return repr(text)


def build_reward_plugins(specs: Sequence[RewardSpec | dict[str, Any]]) -> list[RewardPlugin]:
    """Load every recipe entry into a :class:`RewardPlugin`; metric names must be unique."""
    parsed: list[RewardSpec] = []
    for entry in specs:
        if isinstance(entry, RewardSpec):
            parsed.append(entry)
        elif isinstance(entry, dict):
            parsed.append(RewardSpec.from_dict(entry))
        else:
            raise ConfigError(
                f"A reward entry must be a mapping like {{name: accuracy, weight: 1.0}}, got {entry!r}."
            )
    seen: dict[str, int] = {}
    for i, spec in enumerate(parsed):
        if spec.alias in seen:
            raise ConfigError(
                f"Reward entries {seen[spec.alias]} and {i} ({parsed[seen[spec.alias]].name!r} and "
                f"{spec.name!r}) are both logged as {spec.alias!r}. Set a distinct `alias` on one of them."
            )
        seen[spec.alias] = i
    return [RewardPlugin.from_spec(spec) for spec in parsed]
