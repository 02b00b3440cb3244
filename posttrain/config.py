"""Recipes: one YAML file describes a run completely.

    model:    {name_or_path: embedded}            # posttrain.models.ModelConfig
    peft:     {enabled: true, r: 16}              # posttrain.models.PeftConfigSection (LoRA)
    data:     {generator: chain_sum, size: 2000}  # posttrain.data.DataConfig
    rewards:  [{name: accuracy, weight: 1.0}]     # posttrain.rewards.RewardSpec, one entry per reward
    method:   {name: grpo}                        # MethodConfig: loss/normalisation presets
    rollout:  {engine: vllm, mode: colocate}      # posttrain.rollout.config.RolloutConfig
    trainer:  {learning_rate: 1.0e-5}             # any TRL GRPOConfig field
    update:   {compact_logprobs: true}            # posttrain.update.UpdateConfig: the update's fast paths
    eval:     {before: true, after: true}         # EvalConfig: held-out accuracy around training
    run:      {time_budget: 20m}                  # RunConfig: budget, overwrite/resume, launcher

Precedence is defaults < YAML < command-line flags (``--key value``). A flag names a field by its
dotted path (``--data.size 200``) or by its bare name when that is unambiguous
(``--max_steps 2`` -> ``trainer.max_steps``). An unknown key is an error that names the closest
valid key. The resolved recipe is written to ``<output_dir>/recipe.yaml``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from posttrain.data import DataConfig
from posttrain.distributed import accelerate_precision, reconcile_precision
from posttrain.dynamic import DynamicSampling
from posttrain.errors import ConfigError
from posttrain.methods import SECTIONS as METHOD_SECTIONS
from posttrain.methods import get_method, method_names, section_class
from posttrain.models import ModelConfig, PeftConfigSection, detect_precision
from posttrain.rewards import RewardSpec
from posttrain.rollout.config import RolloutConfig
from posttrain.trainer_values import check_trainer_values
from posttrain.update import UpdateConfig

# Trainer defaults that differ from TRL's: no gradient checkpointing on small models (TRL turns it
# on; on CPU it costs ~7% speed to save memory we do not need), log every step, save rarely, and
# report to TensorBoard (a dependency) besides metrics.jsonl; wandb/trackio are opt-in in a recipe.
TRAINER_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/posttrain",
    "gradient_checkpointing": False,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "report_to": "tensorboard",
}


@dataclass
class MethodConfig:
    """Which member of the GRPO family to run, and the objective variants of :mod:`posttrain.advantages`.

    A recipe may write ``method: gcpo`` for ``method: {name: gcpo}``.
    """

    name: str = "grpo"
    """``grpo``, ``dr_grpo``, ``dapo``, ``gcpo``, ``spark``, ``ttrl``, ``ttrv`` or ``mash``: fills TRL loss
    settings the trainer section leaves unset; all but the first three also fill the reward list when the
    recipe gives none; ``spark`` recycles rollouts into judge/reflection tasks
    (section ``spark``); ``mash`` needs the search tool loop (section ``search``)."""
    sample_weight: str | None = None
    """A data column whose value multiplies each sample's policy loss (GUI-G1's per-question
    difficulty weight); null or missing in a row means 1. The column is carried from the data."""
    loss_constant: float | None = None
    """Sequence-sum loss divided by this constant (GUI-G1: 64) instead of a per-sequence token mean;
    TRL's ``dr_grpo`` loss with the constant in place of ``max_completion_length``."""
    train_samples: int | None = None
    """Train on this many of each prompt's ``num_generations`` samples; all of them vote (group rewards
    see the whole group). TTRL: 64 generations, 32 trained. Must divide num_generations."""
    dynamic_sampling: Any = None
    """DAPO's dynamic sampling, ``{enabled, max_rounds}`` (:mod:`posttrain.dynamic`): groups without reward
    variance are replaced by new ones; on by default for ``dapo``, off for the others."""

    def __post_init__(self) -> None:
        if self.name not in method_names():
            raise ConfigError(_unknown("method.name", self.name, method_names()))
        self.dynamic_sampling = DynamicSampling.from_value(self.dynamic_sampling)
        if self.sample_weight is not None and (
            not isinstance(self.sample_weight, str) or not self.sample_weight
        ):
            raise ConfigError(
                f"method.sample_weight must name a data column (e.g. sample_weight), got {self.sample_weight!r}."
            )
        if self.train_samples is not None and (
            isinstance(self.train_samples, bool)
            or not isinstance(self.train_samples, int)
            or self.train_samples < 2
        ):
            raise ConfigError(
                f"method.train_samples must be an integer >= 2 (samples trained per prompt), got {self.train_samples!r}."
            )
        if self.loss_constant is not None:
            ok = isinstance(self.loss_constant, int | float) and not isinstance(self.loss_constant, bool)
            if not ok or not 0 < self.loss_constant < float("inf"):
                raise ConfigError(
                    f"method.loss_constant must be a positive number (GUI-G1 uses 64), got {self.loss_constant!r}."
                )


@dataclass
class EvalConfig:
    """Held-out evaluation around training (greedy accuracy; mean@k and maj@k when ``num_samples > 1``)."""

    before: bool = False
    """Evaluate the model on the held-out split before training."""
    after: bool = False
    """Evaluate the trained model on the held-out split after training."""
    num_samples: int = 1
    """Samples per question for mean@k / maj@k (1 = greedy only)."""
    temperature: float = 1.0
    """Sampling temperature for the ``num_samples`` samples."""
    max_new_tokens: int | None = None
    """Generation budget; defaults to ``trainer.max_completion_length``."""
    batch_size: int = 64
    """Prompts per generation batch."""

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"eval.num_samples must be >= 1, got {self.num_samples}.")
        if self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}.")


@dataclass
class RunConfig:
    """How the run is driven: budget, what to do with an existing output folder."""

    time_budget: str | float | None = None
    """Stop training after this wall time: seconds, or ``"20m"``, ``"1h30m"``; None = until max_steps."""
    overwrite: bool = False
    """Allow writing into an output folder that already holds a run (nothing is deleted)."""
    resume: bool = False
    """Resume from the last checkpoint in the output folder."""
    plot: bool = True
    """Write ``training_curves.png`` (reward and accuracy) at the end of training."""
    accelerate_config: str | None = None
    """An accelerate YAML (e.g. accelerate_configs/zero2.yaml): ``posttrain train`` then re-launches
    itself through ``accelerate launch`` with it."""
    num_processes: int | None = None
    """Processes for that launch (default: the YAML's ``num_processes``)."""
    max_nonfinite_steps: int = 3
    """Steps with a NaN or infinite loss are skipped; more than this many in a row stop the run."""

    def __post_init__(self) -> None:
        if self.num_processes is not None and self.num_processes < 1:
            raise ConfigError(f"run.num_processes must be >= 1, got {self.num_processes}.")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
        if (
            isinstance(self.max_nonfinite_steps, bool)
            or not isinstance(self.max_nonfinite_steps, int)
            or self.max_nonfinite_steps < 0
        ):
            raise ConfigError(
                f"run.max_nonfinite_steps must be a whole number >= 0, got {self.max_nonfinite_steps!r}."
            )
        if self.overwrite and self.resume:
            raise ConfigError("Pass either --overwrite or --resume, not both.")


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "peft": PeftConfigSection,
    "data": DataConfig,
    "method": MethodConfig,
    "rollout": RolloutConfig,
    # The sections a method brings (posttrain/methods: SPARK's `spark`, pay-per-search's `search`).
    **{name: section_class(name) for name in METHOD_SECTIONS},
    "update": UpdateConfig,
    "eval": EvalConfig,
    "run": RunConfig,
}


@dataclass
class Recipe:
    """A whole run: one dataclass per concern, plus the TRL trainer fields and the reward list."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    peft: PeftConfigSection = field(default_factory=PeftConfigSection)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="accuracy")])
    method: MethodConfig = field(default_factory=MethodConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    spark: Any = field(default_factory=lambda: SECTIONS["spark"]())
    search: Any = field(default_factory=lambda: SECTIONS["search"]())
    trainer: dict[str, Any] = field(default_factory=dict)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def output_dir(self) -> Path:
        return Path(self.trainer["output_dir"])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in (
            "model",
            "peft",
            "data",
            "rewards",
            "method",
            "rollout",
            "spark",
            "search",
            "trainer",
            "update",
            "eval",
            "run",
        ):
            value = getattr(self, name)
            if name == "rewards":
                out[name] = [dataclasses.asdict(r) for r in value]
            elif dataclasses.is_dataclass(value):  # keys as recipes spell them (``async_`` -> ``async``)
                out[name] = {k.removesuffix("_"): v for k, v in dataclasses.asdict(value).items()}
            else:
                out[name] = dict(value)
        return out

    def save(self, path: str | Path) -> None:
        """Write the resolved recipe (every default filled in) as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False))

    def grpo_config(self):
        """The TRL ``GRPOConfig``: method preset < hardware precision < recipe ``trainer`` section."""
        from trl import GRPOConfig

        method = get_method(self.method.name)
        kwargs = {**method.preset, **detect_precision(), **self.trainer}
        if self.method.loss_constant is not None:
            if self.trainer.get("loss_type", "dr_grpo") != "dr_grpo":
                raise ConfigError(
                    f"method.loss_constant replaces the loss normaliser of loss_type dr_grpo, but trainer.loss_type "
                    f"is {self.trainer['loss_type']!r}. Remove trainer.loss_type, or unset method.loss_constant."
                )
            kwargs["loss_type"] = "dr_grpo"
        explicit = {k: v for k, v in self.trainer.items() if k in ("bf16", "fp16")}
        kwargs = reconcile_precision(kwargs, explicit, accelerate_precision())  # launched: the YAML decides
        defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
        for key, value in kwargs.items():
            if key.endswith("_strategy") and value is False:
                kwargs[key] = "no"  # YAML 1.1 reads `save_strategy: no` as false; TRL wants the word
            numeric = isinstance(defaults.get(key), int | float) and not isinstance(defaults[key], bool)
            if numeric and isinstance(value, str):  # TRL does not check: it would fail deep in torch
                raise ConfigError(f"trainer.{key} must be a number, got {value!r}.")
        if kwargs.get("fp16") and kwargs.get("bf16"):
            kwargs["bf16"] = False
        check_trainer_values(kwargs)  # what torch would reject only once training starts
        try:
            args = GRPOConfig(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"The trainer settings are invalid: {exc}") from exc
        self._check_length_cap(args)
        from posttrain.methods.gcpo import no_separate_normalisation

        no_separate_normalisation(self, args)  # any method given the contrastive reward
        return args

    def _check_length_cap(self, args) -> None:
        """A ``length`` reward saturated only by completions that get cut off, while truncated completions are
        masked from the loss: refused.

        Measured (bench/compare_methods.py, SmolLM2-135M): truncated completions earn the most length reward
        and leave the loss, yet raise their group's baseline, so every finished completion is pushed down;
        the run collapsed to 100% truncated completions within 30 steps. GeometryZero caps at 900 of 1024.
        """
        for spec in self.rewards:
            cap = spec.kwargs.get("cap", 512) if spec.name == "length" else None
            if cap is not None and args.mask_truncated_completions and cap >= args.max_completion_length:
                raise ConfigError(
                    f"The length reward's cap ({cap} tokens) is not below trainer.max_completion_length "
                    f"({args.max_completion_length}) while mask_truncated_completions is on: only truncated "
                    "completions would earn the full length reward, and they are masked from the loss, which "
                    "pushes the policy towards being cut off. Lower the cap below max_completion_length (GCPO: "
                    "900 of 1024), or set trainer.mask_truncated_completions: false."
                )


def grpo_field_names() -> list[str]:
    from trl import GRPOConfig

    return [f.name for f in dataclasses.fields(GRPOConfig)]


def parse_duration(value: str | float | int) -> float:
    """``"20m"`` -> 1200.0; ``"1h30m"`` -> 5400.0; ``90`` -> 90.0 (seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(f"A duration must be positive, got {value}.")
        return float(value)
    text = str(value).strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text)
    if not text or parts is None or not any(parts.groups()):
        raise ConfigError(
            f"Cannot read the duration {value!r}: write seconds (600) or e.g. '20m', '1h30m', '45s'."
        )
    h, m, s = (float(x) if x else 0.0 for x in parts.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ConfigError(f"A duration must be positive, got {value!r}.")
    return seconds


def _unknown(key: str, value: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"Unknown {key} {value!r}.{hint} Valid: {', '.join(valid)}."


def _fields(cls: type) -> list[str]:
    # A field named after a Python keyword carries a trailing underscore (``async_``); recipes spell it
    # without (``rollout.async``).
    return [f.name.removesuffix("_") for f in dataclasses.fields(cls)]


def _field_kwargs(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Recipe keys -> the dataclass's field names (``async`` -> ``async_``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {(f"{k}_" if k not in names and f"{k}_" in names else k): v for k, v in values.items()}


def _all_keys() -> dict[str, list[str]]:
    """Every valid dotted key: section -> field names."""
    keys = {name: _fields(cls) for name, cls in SECTIONS.items()}
    keys["trainer"] = grpo_field_names()
    return keys


def _closest_key(key: str) -> str | None:
    """The valid dotted key closest to ``key`` (compared whole, then by its last part)."""
    dotted = [f"{s}.{f}" for s, fs in _all_keys().items() for f in fs] + [*SECTIONS, "rewards", "trainer"]
    close = difflib.get_close_matches(key, dotted, n=1, cutoff=0.75)
    if close:
        return close[0]
    by_bare = {d.rpartition(".")[2]: d for d in reversed(dotted)}
    close = difflib.get_close_matches(key.rpartition(".")[2], list(by_bare), n=1, cutoff=0.6)
    return by_bare[close[0]] if close else None


def _unknown_key_error(key: str, where: str) -> ConfigError:
    close = _closest_key(key)
    hint = f" Did you mean `{close}`?" if close else ""
    return ConfigError(f"Unknown key `{key}` in {where}.{hint}")


def _check_section(section: str, values: Any, where: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"`{section}` in {where} must be a mapping of keys to values, got {values!r}.")
    valid = _all_keys()[section]
    for key in values:
        if key not in valid:
            raise _unknown_key_error(f"{section}.{key}", where)
    return values


def _shorthands(sections: dict[str, Any]) -> dict[str, Any]:
    """``method: gcpo`` -> ``method: {name: gcpo}``."""
    if isinstance(sections.get("method"), str):
        sections["method"] = {"name": sections["method"]}
    return sections


def _build(sections: dict[str, Any], where: str) -> Recipe:
    sections = _shorthands(sections)
    for top in sections:
        if top not in (*SECTIONS, "rewards", "trainer"):
            raise _unknown_key_error(str(top), where)
    if "data" not in sections or not sections["data"]:
        raise ConfigError(
            f"{where} has no `data` section. Add e.g. `data: {{generator: chain_sum, size: 1000}}`."
        )
    kwargs: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        values = _check_section(name, sections.get(name), where)
        if name in sections or name == "data":
            try:
                kwargs[name] = cls(**_field_kwargs(cls, values))
            except TypeError as exc:
                raise ConfigError(f"Invalid `{name}` section in {where}: {exc}") from exc
    trainer = {**TRAINER_DEFAULTS, **_check_section("trainer", sections.get("trainer"), where)}
    if "reward_weights" in trainer:
        raise ConfigError(
            f"`trainer.reward_weights` in {where}: set each weight on its reward entry instead, "
            "e.g. `rewards: [{name: accuracy, weight: 1.0}]`."
        )
    kwargs["trainer"] = trainer
    if "rewards" in sections:
        rewards = sections["rewards"]
        if not isinstance(rewards, list) or not rewards:
            raise ConfigError(
                f"`rewards` in {where} must be a non-empty list of entries like `- name: accuracy`, got {rewards!r}."
            )
        kwargs["rewards"] = [RewardSpec.from_dict(r) for r in rewards]
    method = kwargs.get("method", MethodConfig())
    home = get_method(method.name)
    if "rewards" not in sections and home.rewards:
        kwargs["rewards"] = [RewardSpec.from_dict(copy.deepcopy(dict(r))) for r in home.rewards]
    search = kwargs.get("search") or SECTIONS["search"]()
    if search.enabled:  # how to search and answer, around each question
        kwargs["data"] = search.with_prompt(kwargs["data"])
    column = method.sample_weight
    if column is not None and column not in kwargs["data"].keep_columns:
        data = kwargs["data"]  # carry the column from the source (replace() re-runs the checks)
        kwargs["data"] = dataclasses.replace(data, keep_columns=[*data.keep_columns, column])
    recipe = Recipe(**kwargs)
    home.check(recipe)
    return recipe


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-5`` (no dot) as a string, which TRL would hand to the optimizer; read a float."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_value(text: str) -> Any:
    return yaml.load(text, Loader=_RecipeLoader)  # a SafeLoader: no arbitrary objects


def _flag_value(text: str) -> Any:
    """A flag's value typed as YAML (``2``, ``1e-5``, ``true``, ``null``, ``[a, b]``, ``{k: v}``).

    Text that YAML would garble stays as typed: ``"Answer: 1"`` (a mapping to YAML), ``"{question}"``,
    ``"Answer #1"`` (YAML drops the comment), ``"@me"`` (a YAML syntax error).
    """
    stripped = text.strip()
    try:
        value = _yaml_value(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        quoted = len(stripped) > 1 and stripped[0] == stripped[-1] and stripped[0] in "'\""
        return value if quoted else text
    if isinstance(value, dict) and not (stripped.startswith("{") and ":" in stripped):
        return text
    if isinstance(value, list) and not stripped.startswith("["):
        return text
    return value


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Recipe not found: {path}. Pass the path of a YAML recipe, e.g. recipes/quickstart.yaml."
        )
    try:
        loaded = _yaml_value(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"The recipe {path} is not valid YAML: {exc}") from exc
    if loaded is None:
        raise ConfigError(f"The recipe {path} is empty. See recipes/quickstart.yaml for a complete example.")
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"The recipe {path} must be a mapping of sections (model, data, ...), got {type(loaded).__name__}."
        )
    return loaded


# Flags that take no value on the command line.
BOOLEAN_FLAGS = {"overwrite": "run.overwrite", "resume": "run.resume"}
# Flags named after a section that set one of its fields (``--method gcpo``).
SECTION_FLAGS = {"method": "method.name"}


def parse_flags(argv: list[str]) -> dict[str, Any]:
    """``["--max_steps", "2", "--data.size", "50", "--overwrite"]`` -> ``{"max_steps": 2, "data.size": 50, ...}``."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--") or len(token) <= 2:
            raise ConfigError(
                f"Unexpected argument {token!r}: flags look like `--key value` (e.g. --max_steps 2)."
            )
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if eq:
            i += 1
        elif key in BOOLEAN_FLAGS and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            value, i = "true", i + 1
        elif i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        else:
            raise ConfigError(f"Flag --{key} needs a value, e.g. `--{key} VALUE`.")
        out[key] = _flag_value(value) if value != "" else ""
    return out


def _resolve_flag(key: str) -> tuple[str, str]:
    """Map a flag name to (section, field)."""
    keys = _all_keys()
    if key in BOOLEAN_FLAGS or key in SECTION_FLAGS:
        section, _, name = {**BOOLEAN_FLAGS, **SECTION_FLAGS}[key].partition(".")
        return section, name
    if "." in key:
        section, _, name = key.partition(".")
        if section in keys and name.partition(".")[0] in keys[section]:
            return section, name  # "field.sub": a key of a mapping-valued field
        raise _unknown_key_error(key, "the command-line flags")
    owners = [s for s, fs in keys.items() if key in fs]
    if len(owners) == 1:
        return owners[0], key
    if len(owners) > 1:
        # A bare trainer field wins (e.g. --seed, --output_dir): it is what TRL users type.
        if "trainer" in owners:
            return "trainer", key
        options = ", ".join(f"--{s}.{key}" for s in owners)
        raise ConfigError(f"Flag --{key} is ambiguous; use one of: {options}.")
    raise _unknown_key_error(key, "the command-line flags")


def _set_section(sections: dict[str, Any], key: str, value: Any) -> None:
    """``--rewards LIST`` replaces the reward list; ``--SECTION MAPPING`` sets several keys of a section."""
    if key == "rewards":
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(
                f"--rewards takes the whole reward list as YAML, e.g. --rewards '[{{name: accuracy, weight: 1.0}}]', "
                f"got {value!r}; or list the rewards in the recipe file."
            )
        sections["rewards"] = value
        return
    if not isinstance(value, dict):
        raise ConfigError(
            f"--{key} is a section: set one of its keys with --{key}.KEY VALUE, or several as YAML, e.g. "
            f"--{key} '{{KEY: VALUE}}'; got {value!r}."
        )
    current = sections.setdefault(key, {})
    if not isinstance(current, dict):
        raise ConfigError(f"`{key}` must be a mapping to take --{key}.")
    current.update(value)


def load_recipe(
    path: str | Path | None,
    overrides: list[str] | dict[str, Any] | None = None,
    *,
    sections: dict[str, Any] | None = None,
) -> Recipe:
    """Load a YAML recipe and apply command-line overrides (defaults < YAML < flags).

    ``sections`` (a recipe already in memory, e.g. a command's built-in defaults) is used instead of
    reading ``path``, which then only names it in messages.
    """
    if sections is not None:
        sections = _shorthands(copy.deepcopy(sections))
    else:
        sections = _shorthands(read_yaml(path) if path is not None else {})
    flags = parse_flags(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for key, value in flags.items():
        if key == "rewards" or (key in _all_keys() and key not in SECTION_FLAGS):
            _set_section(sections, key, value)
            continue
        section, name = _resolve_flag(key)
        current = sections.get(section)
        if current is None:
            current = sections[section] = {}
        elif not isinstance(current, dict):
            raise ConfigError(f"`{section}` in {path} must be a mapping to take --{key}.")
        name, _, sub = name.partition(".")
        if sub:  # --method.dynamic_sampling.enabled true
            inner = current.get(name)
            current[name] = inner = {} if inner is None else inner
            if not isinstance(inner, dict):
                raise ConfigError(f"`{section}.{name}` must be a mapping to take --{key}.")
            inner[sub] = value
        else:
            current[name] = value
    return _build(sections, str(path) if path is not None else "the flags")


def recipe_keys(path: str | Path) -> list[tuple[int, str]]:
    """(line number, key) for every mapping key in a YAML file (used by the recipe-comment test)."""
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        match = re.match(r"^\s*(?:-\s+)?([A-Za-z_][\w.]*)\s*:(\s|$)", line)
        if match and not line.lstrip().startswith("#"):
            out.append((lineno, match.group(1)))
    return out
