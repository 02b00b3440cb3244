"""The recipe's `search:` section and `method: mash` (posttrain/methods/mash/config.py, posttrain/config.py).

pytest tests/test_search_config.py -q
"""

from __future__ import annotations

import pytest

from posttrain.config import load_recipe
from posttrain.errors import ConfigError
from posttrain.methods.mash.config import SearchConfig
from posttrain.rollout.tools import SEARCH_PROMPT

DATA = {"data.path": "data/squad/questions.jsonl", "data.answer_field": "answers"}


def test_mash_fills_pay_per_search_and_no_kl():
    recipe = load_recipe(None, {**DATA, "method": "mash", "search.enabled": True})
    assert [r.name for r in recipe.rewards] == ["pay_per_search"]
    assert recipe.rewards[0].kwargs == {"lam": 0.5, "penalty": "exp"}
    assert recipe.grpo_config().beta == 0.0


def test_mash_needs_the_search_tool():
    with pytest.raises(ConfigError, match="search: {enabled: true}"):
        load_recipe(None, {**DATA, "method": "mash"})


def test_search_gets_the_search_prompt_unless_the_data_says_otherwise():
    recipe = load_recipe(None, {**DATA, "search.enabled": True})
    assert recipe.data.prompt_template == SEARCH_PROMPT
    own = load_recipe(None, {**DATA, "search.enabled": True, "data.instruction": "Be brief."})
    assert own.data.prompt_template is None and own.data.instruction == "Be brief."
    off = load_recipe(None, DATA)
    assert off.data.prompt_template is None


def test_tool_config_fits_the_completion_budget():
    tool = SearchConfig(enabled=True, max_turn_tokens=512, top_k=2, max_searches=1).tool_config(96)
    assert (tool.max_turn_tokens, tool.max_total_tokens, tool.top_k, tool.max_searches) == (96, 96, 2, 1)
    assert tool.max_rounds == 3  # every search, one refused request, the answer


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("top_k", 0, "search.top_k must be an integer >= 1"),
        ("max_searches", -1, "search.max_searches must be an integer >= 0"),
        ("max_turn_tokens", "many", "search.max_turn_tokens"),
        ("retriever", " ", "search.retriever must be null"),
    ],
)
def test_bad_search_values(field, value, match):
    with pytest.raises(ConfigError, match=match):
        SearchConfig(**{field: value})


def test_the_mash_recipe_loads():
    recipe = load_recipe("recipes/mash_search.yaml")
    assert recipe.search.enabled and recipe.method.name == "mash"
    assert recipe.data.id_field == "id" and recipe.data.answer_field == "answers"


def test_retriever_command_usage(capsys):
    from posttrain.cli import main

    assert main(["retriever"]) == 2 and "posttrain retriever serve" in capsys.readouterr().err
    assert main(["retriever", "serve", "--port", "0"]) == 2 and "--port must be in" in capsys.readouterr().err
