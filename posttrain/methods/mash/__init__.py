"""Pay-per-search (MASH, arXiv 2510.01152): searching costs reward, so a search request reads as abstention.

    method: mash
    search: {enabled: true}            # config.py: the tool loop's section; rollout.py: its wiring

The policy answers with a search tool (``<search>`` -> BM25 passages as ``<document>``, masked from the
loss -> resume, until ``<answer>``); ``pay_per_search`` (``rewards/search.py``) rewards exact match x
lam^(searches - the fewest searches of a correct answer so far). evaluate.py: exact match with the tool,
abstention without it (``posttrain eval --search``); warmstart.py: the SFT warm start that teaches a
tag-less model the format. verl GRPO with micro-batch 1 (a per-sequence token mean: ``grpo``), no KL,
an entropy bonus of 0.001, as MASH's config. docs/methods.md, "Pay-per-search".
"""

from __future__ import annotations

from posttrain.errors import ConfigError
from posttrain.methods.base import PLAIN, Method


def needs_the_search_tool(recipe) -> None:
    if not recipe.search.enabled:
        raise ConfigError(
            "method mash (pay-per-search) trains with the search tool: add `search: {enabled: true}` "
            "(see recipes/mash_search.yaml)."
        )


MASH = Method(
    name="mash",
    summary="Pay-per-search (MASH, arXiv 2510.01152): exact match discounted per search, with a search tool",
    preset={**PLAIN, "loss_type": "grpo", "scale_rewards": "group", "beta": 0.0, "entropy_coef": 0.001},
    # exact match x lam^(searches - fewest searches of a correct answer); lam 0.5 (single-hop).
    rewards=({"name": "pay_per_search", "weight": 1.0, "kwargs": {"lam": 0.5, "penalty": "exp"}},),
    checks=(needs_the_search_tool,),
)
