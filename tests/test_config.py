"""Tests for recipes (posttrain/config.py): precedence, flags, errors, round trip, shipped recipes.

pytest tests/test_config.py -q
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from posttrain.config import (
    TRAINER_DEFAULTS,
    load_recipe,
    parse_duration,
    parse_flags,
    recipe_keys,
)
from posttrain.errors import ConfigError

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))
MINIMAL = "data: {generator: chain_sum, size: 50}\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def _get(recipe, dotted: str) -> Any:
    """``trainer.max_steps`` -> recipe.trainer["max_steps"]; ``eval.before`` -> recipe.eval.before."""
    section, _, name = dotted.partition(".")
    value = getattr(recipe, section)
    return value[name] if isinstance(value, dict) else getattr(value, name)


# --------------------------------------------------------------------------------------------------
# Precedence and flags
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, flags, expected",
    [
        # Defaults: posttrain's trainer defaults, the dataclass defaults, one accuracy reward.
        (
            MINIMAL,
            [],
            {
                "trainer.logging_steps": 1,
                "trainer.gradient_checkpointing": False,
                "eval.before": False,
                "method.name": "grpo",
                "data.size": 50,
            },
        ),
        # The YAML beats the defaults.
        (MINIMAL + "trainer: {logging_steps: 5}\neval: {before: true}\n", [], {"trainer.logging_steps": 5}),
        # Flags beat the YAML.
        (MINIMAL + "trainer: {max_steps: 5}\n", ["--max_steps", "2"], {"trainer.max_steps": 2}),
        # Bare names resolve to the one section that has them; dotted names are taken as given.
        (
            MINIMAL,
            ["--max_steps", "2", "--eval.before", "true", "--data.size", "10", "--num_samples", "4"],
            {"trainer.max_steps": 2, "eval.before": True, "data.size": 10, "eval.num_samples": 4},
        ),
        # A bare name that several sections have goes to the trainer (what TRL users type).
        (MINIMAL, ["--seed", "3", "--temperature", "0.5"], {"trainer.seed": 3, "data.seed": 0}),
        # `--key=value` and dashes in names.
        (
            MINIMAL,
            ["--max-steps=7", "--eval.num-samples", "2"],
            {"trainer.max_steps": 7, "eval.num_samples": 2},
        ),
        # `1e-5` (no dot) is a float, in the YAML and in a flag, not the string YAML 1.1 would make it.
        (
            MINIMAL + "trainer: {learning_rate: 1e-5}\n",
            ["--adam_epsilon", "1e-7"],
            {"trainer.learning_rate": 1e-5, "trainer.adam_epsilon": 1e-7},
        ),
        # --overwrite and --resume take no value.
        (MINIMAL, ["--overwrite"], {"run.overwrite": True}),
        (MINIMAL, ["--resume", "--max_steps", "3"], {"run.resume": True, "trainer.max_steps": 3}),
        # A flag for a section the YAML does not have creates it.
        (MINIMAL, ["--peft.enabled", "true", "--r", "8"], {"peft.enabled": True, "peft.r": 8}),
    ],
)
def test_precedence_and_flags(tmp_path, text, flags, expected):
    recipe = load_recipe(_write(tmp_path, text), flags)
    for key, value in expected.items():
        assert _get(recipe, key) == value, key


def test_flags_alone_without_a_file():
    recipe = load_recipe(None, {"data.path": "x.jsonl", "max_steps": 1})
    assert recipe.data.path == "x.jsonl" and recipe.trainer["max_steps"] == 1


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--max_steps", "2"], {"max_steps": 2}),  # YAML-typed values
        (["--overwrite"], {"overwrite": True}),  # valueless at the end
        (["--overwrite", "--max_steps", "2"], {"overwrite": True, "max_steps": 2}),  # valueless before a flag
        (["--overwrite", "false"], {"overwrite": False}),  # an explicit value is still accepted
        (["--run.time_budget="], {"run.time_budget": ""}),  # `--key=` is an empty string
        (["--learning_rate", "1e-5"], {"learning_rate": 1e-5}),  # a float, not YAML 1.1's string
        (["--x", "[1, 2]", "--y", "{a: 1}", "--z", "null"], {"x": [1, 2], "y": {"a": 1}, "z": None}),
        # Text YAML would garble stays as typed:
        (["--data.instruction", "Answer: 1"], {"data.instruction": "Answer: 1"}),  # not a mapping
        (["--data.instruction", "Answer #1"], {"data.instruction": "Answer #1"}),  # not a comment
        (["--data.prompt_template", "{question}"], {"data.prompt_template": "{question}"}),  # a template
        (["--data.instruction", "@me `x`"], {"data.instruction": "@me `x`"}),  # not a YAML error
        (["--data.instruction", "- item"], {"data.instruction": "- item"}),  # not a list
        (["--data.instruction", '"2"'], {"data.instruction": "2"}),  # quotes force a string
    ],
)
def test_parse_flags(argv, expected):
    assert parse_flags(argv) == expected


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, flags, phrases",
    [
        # Unknown top-level key: named, with the closest valid key anywhere in the recipe.
        (MINIMAL + "learning_rte: 1.0\n", [], ["`learning_rte`", "`trainer.learning_rate`"]),
        # Misspelt section.
        (MINIMAL + "trainr: {max_steps: 1}\n", [], ["`trainr`", "`trainer`"]),
        # Unknown key inside a section.
        ("data: {generator: chain_sum, sze: 10}\n", [], ["`data.sze`", "`data.size`"]),
        # Unknown trainer (TRL GRPOConfig) field.
        (
            MINIMAL + "trainer: {learning_rte: 1.0}\n",
            [],
            ["`trainer.learning_rte`", "`trainer.learning_rate`"],
        ),
        # Unknown key in a reward entry.
        (MINIMAL + "rewards: [{name: accuracy, wieght: 2}]\n", [], ["'wieght'", "'weight'"]),
        # Unknown bare flag, and unknown dotted flag.
        (MINIMAL, ["--learning_rte", "1"], ["`learning_rte`", "`trainer.learning_rate`"]),
        (MINIMAL, ["--eval.befor", "true"], ["`eval.befor`", "`eval.before`"]),
        # A bare flag two non-trainer sections share is ambiguous: the message lists both.
        (MINIMAL, ["--name", "x"], ["ambiguous", "--data.name", "--method.name"]),
        # A flag without its value, and a stray positional argument.
        (MINIMAL, ["--max_steps"], ["--max_steps needs a value"]),
        (MINIMAL, ["extra.yaml"], ["Unexpected argument 'extra.yaml'"]),
        # Not YAML, empty, or not a mapping.
        ("data: {path: [\n", [], ["is not valid YAML"]),
        ("", [], ["is empty"]),
        ("- data\n", [], ["must be a mapping of sections"]),
        # No data section (absent, or present and empty).
        ("trainer: {max_steps: 1}\n", [], ["no `data` section"]),
        ("data:\n", [], ["no `data` section"]),
        # `rewards` must be a non-empty list of entries.
        (MINIMAL + "rewards: accuracy\n", [], ["`rewards`", "non-empty list"]),
        (MINIMAL + "rewards: []\n", [], ["`rewards`", "non-empty list"]),
        # A section that is not a mapping.
        (MINIMAL + "trainer: 3\n", [], ["`trainer`", "must be a mapping"]),
        # Unknown method: the closest name is suggested.
        (MINIMAL + "method: {name: drgrpo}\n", [], ["'drgrpo'", "'dr_grpo'"]),
        # A duration that cannot be read.
        (MINIMAL + "run: {time_budget: 20x}\n", [], ["Cannot read the duration '20x'"]),
        # --overwrite and --resume contradict each other.
        (MINIMAL, ["--overwrite", "--resume"], ["either --overwrite or --resume"]),
    ],
)
def test_recipe_errors_name_the_problem(tmp_path, text, flags, phrases):
    with pytest.raises(ConfigError) as info:
        load_recipe(_write(tmp_path, text), flags)
    for phrase in phrases:
        assert phrase in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="Recipe not found: .*nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        (90, 90.0),  # a number is seconds
        (1.5, 1.5),  # fractional seconds
        ("90", 90.0),  # a numeric string too
        ("45s", 45.0),
        ("20m", 1200.0),
        ("1h30m", 5400.0),
        ("1.5h", 5400.0),
        ("2h0m30s", 7230.0),
        ("20M", 1200.0),  # case-insensitive
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        0,  # not positive
        -5,
        "0m",
        "",  # nothing
        "abc",  # not a duration
        "20x",  # unknown unit
        "1h 30m",  # spaces are not accepted
        True,  # a bool is not a number of seconds
    ],
)
def test_parse_duration_rejects(value):
    with pytest.raises(ConfigError):
        parse_duration(value)


# --------------------------------------------------------------------------------------------------
# The resolved recipe and the TRL config
# --------------------------------------------------------------------------------------------------


def test_resolved_recipe_round_trips(tmp_path):
    text = (
        "data: {path: x.jsonl, eval_size: 0.1, generator_kwargs: {}}\n"
        "rewards: [{name: accuracy, weight: 0.5, kwargs: {tolerance: 2}}, {name: length, alias: len}]\n"
        "method: {name: dapo}\n"
        "trainer: {learning_rate: 1e-5, epsilon_high: 0.3}\n"
        "run: {time_budget: 20m}\n"
    )
    flags = ["--max_steps", "2", "--output_dir", str(tmp_path / "out"), "--eval.before", "true"]
    recipe = load_recipe(_write(tmp_path, text), flags)
    saved = tmp_path / "out" / "recipe.yaml"
    saved.parent.mkdir()
    recipe.save(saved)
    assert load_recipe(saved) == recipe  # every field, defaults included
    resolved = yaml.safe_load(saved.read_text())
    assert resolved["trainer"]["max_steps"] == 2 and resolved["rewards"][1]["alias"] == "len"
    assert set(TRAINER_DEFAULTS) <= set(resolved["trainer"])  # the defaults are written out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU precision settings")
def test_grpo_config_on_cpu(tmp_path):
    from trl import GRPOConfig

    # Plain TRL refuses this machine: its bf16 default needs a GPU unless use_cpu is set.
    with pytest.raises(ValueError, match="use_cpu"):
        GRPOConfig(output_dir=str(tmp_path))
    args = load_recipe(_write(tmp_path, MINIMAL)).grpo_config()
    assert args.use_cpu is True and args.fp16 is False
    assert args.gradient_checkpointing is False and args.report_to == ["tensorboard"]  # our defaults


@pytest.mark.parametrize(
    "method, trainer, expected",
    [
        # GRPO: per-group std normalisation.
        ("grpo", {}, {"loss_type": "grpo", "scale_rewards": "group"}),
        # Dr. GRPO: no std normalisation.
        ("dr_grpo", {}, {"loss_type": "dr_grpo", "scale_rewards": "none"}),
        # DAPO: clip-higher and overlong filtering.
        ("dapo", {}, {"loss_type": "dapo", "epsilon_high": 0.28, "mask_truncated_completions": True}),
        # An explicit trainer key beats the preset.
        ("dr_grpo", {"scale_rewards": "batch"}, {"loss_type": "dr_grpo", "scale_rewards": "batch"}),
        ("dapo", {"epsilon_high": 0.3, "loss_type": "bnpo"}, {"loss_type": "bnpo", "epsilon_high": 0.3}),
        # GCPO: OpenRLHF's token-level loss (bnpo) and group normalisation, no KL.
        ("gcpo", {}, {"loss_type": "bnpo", "scale_rewards": "group", "beta": 0.0}),
        # SPARK, TTRL, TTRV: token-level loss and the plain k3 KL of 0.001. Defect (issue 13): TRL 1.16's
        # default use_bias_correction_kl=True weighted the KL by the importance ratio, which none of them do.
        *[
            (m, {}, {"loss_type": "bnpo", "beta": 0.001, "use_bias_correction_kl": False, "epsilon": 0.2})
            for m in ("spark", "ttrl", "ttrv")
        ],
        # MASH: verl's entropy bonus of 0.001, no KL.
        ("mash", {}, {"loss_type": "grpo", "beta": 0.0, "entropy_coef": 0.001}),
        # Every preset samples at temperature 1.0 with PPO clip 0.2 (epsilon_high unset: symmetric).
        *[(m, {}, {"temperature": 1.0, "top_p": 1.0, "epsilon": 0.2}) for m in ("grpo", "dr_grpo", "gcpo")],
    ],
)
def test_method_presets(tmp_path, method, trainer, expected):
    sections = {"data": {"generator": "chain_sum"}, "method": {"name": method}, "trainer": trainer}
    if method == "mash":
        sections["search"] = {"enabled": True}  # pay-per-search needs its tool loop
    args = load_recipe(_write(tmp_path, yaml.safe_dump(sections))).grpo_config()
    for key, value in expected.items():
        assert getattr(args, key) == value, key


@pytest.mark.parametrize(
    "text, flags",
    [
        (MINIMAL + "trainer: {save_strategy: no}\n", []),  # YAML 1.1 reads `no` as false
        (MINIMAL, ["--save_strategy", "no"]),  # and so would the flag
    ],
)
def test_no_is_a_strategy_not_false(tmp_path, text, flags):
    args = load_recipe(_write(tmp_path, text), flags).grpo_config()
    assert args.save_strategy == "no"


@pytest.mark.parametrize(
    "trainer, phrase",
    [
        # TRL's own check: a batch holds whole groups.
        ({"per_device_train_batch_size": 6, "num_generations": 4}, "The trainer settings are invalid"),
        # A string where TRL needs a number (TRL would only fail inside the optimizer).
        ({"learning_rate": "abc"}, "trainer.learning_rate must be a number, got 'abc'"),
        ({"max_steps": "ten"}, "trainer.max_steps must be a number"),
    ],
)
def test_invalid_trainer_settings_are_a_config_error(tmp_path, trainer, phrase):
    sections = {"data": {"generator": "chain_sum"}, "trainer": trainer}
    with pytest.raises(ConfigError, match=phrase):
        load_recipe(_write(tmp_path, yaml.safe_dump(sections))).grpo_config()


# --------------------------------------------------------------------------------------------------
# Shipped recipes
# --------------------------------------------------------------------------------------------------


def _yaml_keys(path: Path) -> set[tuple[int, str]]:
    """(line, key) of every mapping key, from the YAML parser itself."""
    out: set[tuple[int, str]] = set()

    def walk(node):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                out.add((key.start_mark.line + 1, str(key.value)))
                walk(value)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item)

    walk(yaml.compose(path.read_text()))
    return out


def test_there_are_shipped_recipes():
    assert RECIPES, "recipes/*.yaml is empty"


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_recipe_key_is_commented(path):
    keys = recipe_keys(path)
    # recipe_keys reads lines; the YAML parser must agree, so no key hides in a flow mapping
    # (`data: {size: 10}`) or shares a line with another key.
    assert set(keys) == _yaml_keys(path), "write one key per line (block style) so each has a comment"
    lines = path.read_text().splitlines()
    # The line directly above each key (for `- name: x`, above the dash) must be a comment.
    missing = [
        f"{path.name}:{n} {key}" for n, key in keys if n < 2 or not lines[n - 2].lstrip().startswith("#")
    ]
    assert not missing, "keys without a comment line directly above:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    recipe.grpo_config()  # the trainer section is valid for TRL too
    assert recipe.rewards


# --------------------------------------------------------------------------------------------------
# GCPO shorthand and the objective variants (posttrain/advantages.py)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, flags",
    [
        (MINIMAL + "method: gcpo\n", []),  # the shorthand
        (MINIMAL + "method: {name: gcpo}\n", []),
        (MINIMAL, ["--method", "gcpo"]),
        (MINIMAL + "method: grpo\n", ["--method.name", "gcpo"]),  # a flag on top of the shorthand
    ],
)
def test_method_gcpo_fills_its_rewards(tmp_path, text, flags):
    recipe = load_recipe(_write(tmp_path, text), flags)
    assert recipe.method.name == "gcpo"
    assert [(r.name, r.weight) for r in recipe.rewards] == [
        ("accuracy", 1.0),
        ("format", 0.5),
        ("gcpo_contrastive", 0.5),
        ("length", 0.5),
    ]
    assert recipe.rewards[3].kwargs == {"cap": 900}
    # GeometryZero reads the <answer> span with a 2% numeric tolerance, in the reward and in the mask alike.
    assert recipe.rewards[0].kwargs == {"extract": "tagged", "rel_tol": 0.02}
    assert recipe.rewards[2].kwargs == {
        "detector": "<auxiliary>.*?</auxiliary>",
        "epsilon": 0.05,
        "extract": "tagged",
        "rel_tol": 0.02,
    }
    # The resolved recipe spells them out, so recipe.yaml shows what ran.
    recipe.save(tmp_path / "resolved.yaml")
    assert "gcpo_contrastive" in (tmp_path / "resolved.yaml").read_text()


def test_explicit_rewards_win_over_the_method_rewards(tmp_path):
    recipe = load_recipe(_write(tmp_path, MINIMAL + "method: gcpo\nrewards: [{name: accuracy}]\n"))
    assert [r.name for r in recipe.rewards] == ["accuracy"]


def test_loss_constant_selects_dr_grpo(tmp_path):
    recipe = load_recipe(_write(tmp_path, MINIMAL + "method: {name: dr_grpo, loss_constant: 64}\n"))
    assert recipe.method.loss_constant == 64 and recipe.grpo_config().loss_type == "dr_grpo"
    recipe = load_recipe(_write(tmp_path, MINIMAL + "method: {name: grpo, loss_constant: 64}\n"))
    assert recipe.grpo_config().loss_type == "dr_grpo"  # the grpo preset's loss_type gives way


def test_sample_weight_column_is_carried_from_the_data(tmp_path):
    text = "data: {path: d.jsonl}\nmethod: {sample_weight: rate}\n"
    assert load_recipe(_write(tmp_path, text)).data.keep_columns == ["rate"]


@pytest.mark.parametrize(
    "text, phrases",
    [
        (MINIMAL + "method: {loss_constant: 0}\n", ["method.loss_constant", "positive"]),
        (MINIMAL + "method: {loss_constant: true}\n", ["method.loss_constant"]),
        (
            MINIMAL + "method: {loss_constant: 64}\ntrainer: {loss_type: dapo}\n",
            ["loss_constant", "'dapo'", "Remove trainer.loss_type"],
        ),
        (
            MINIMAL + "method: gcpo\ntrainer: {multi_objective_aggregation: normalize_then_sum}\n",
            ["sum_then_normalize"],
        ),
        (MINIMAL + "method: {sample_weight: ''}\n", ["method.sample_weight"]),
        (MINIMAL + "method: gcp\n", ["Unknown method.name 'gcp'", "gcpo"]),
        (MINIMAL + "method: {sample_weight: w}\n", ["keep_columns", "reasoning-gym"]),
        ("data: {path: d.jsonl, keep_columns: [answer]}\n", ["keep_columns", "answer"]),
        ("data: {path: d.jsonl, keep_columns: w}\n", ["keep_columns must be a list"]),
    ],
)
def test_objective_variant_errors(tmp_path, text, phrases):
    with pytest.raises(ConfigError) as info:
        load_recipe(_write(tmp_path, text)).grpo_config()
    for phrase in phrases:
        assert phrase in str(info.value)


def test_whole_sections_as_flags():
    recipe = load_recipe(
        None,
        [
            "--data.generator",
            "chain_sum",
            "--rewards",
            "[{name: accuracy, weight: 2}]",
            "--eval",
            "{num_samples: 3}",
        ],
    )
    assert [(r.name, r.weight) for r in recipe.rewards] == [("accuracy", 2.0)]
    assert recipe.eval.num_samples == 3
    assert (
        load_recipe(None, {"data.generator": "chain_sum", "rewards": {"name": "format"}}).rewards[0].name
        == "format"
    )


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--rewards", "accuracy"], "--rewards takes the whole reward list as YAML"),
        (["--eval", "3"], "--eval is a section: set one of its keys with --eval.KEY VALUE"),
    ],
)
def test_a_section_flag_without_yaml_says_how_to_set_it(flags, phrase):
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        load_recipe(None, ["--data.generator", "chain_sum", *flags])
