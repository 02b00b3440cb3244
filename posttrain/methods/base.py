"""What a method is: :class:`Method`, the interface every method home implements.

``train.run`` reads like a checklist over it: the recipe loader fills TRL settings from :attr:`preset`
and the reward list from :attr:`rewards` (when the recipe gives none) and calls :meth:`check`; the run
builds the trainer with :meth:`trainer_kwargs`, calls :meth:`install` and evaluates with
:meth:`evaluator`. The options of the ``method`` and ``search`` sections work with every method and
are installed by :func:`posttrain.methods.options.install_options`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Every preset: PPO clip 0.2 both sides, sampling temperature 1.0, top-p 1, and the plain k3 KL estimator
# without TRL 1.16's importance-weighted "bias correction" (its default), which none of the references
# has. docs/methods.md, "The TRL settings each method preset sets", gives the source of every value.
PLAIN: dict[str, Any] = {"epsilon": 0.2, "temperature": 1.0, "top_p": 1.0, "use_bias_correction_kl": False}


@dataclass(frozen=True)
class Method:
    """One member of the GRPO family, as a recipe's ``method.name`` selects it."""

    name: str
    summary: str
    """One line: what it is and its paper."""
    preset: Mapping[str, Any] = field(default_factory=dict)
    """TRL ``GRPOConfig`` settings the method's reference relies on; a recipe's ``trainer`` keys win."""
    rewards: Sequence[Mapping[str, Any]] = ()
    """Reward entries the method brings when the recipe lists none."""
    checks: Sequence[Callable[[Any], None]] = ()
    """``check(recipe)``: a combination the reference forbids raises a ConfigError naming the fix (run by
    the recipe loader)."""
    trainer_kwargs: Callable[[Any], dict[str, Any]] | None = None
    """``fn(recipe) -> kwargs`` for the trainer's constructor (SPARK: its prompt queue)."""
    installs: Sequence[Callable[[Any, Any], None]] = ()
    """``install(trainer, recipe)``: hooks the method puts on the trainer (SPARK: its recycler)."""

    def check(self, recipe) -> None:
        for check in self.checks:
            check(recipe)

    def constructor_kwargs(self, recipe) -> dict[str, Any]:
        return self.trainer_kwargs(recipe) if self.trainer_kwargs is not None else {}

    def install(self, trainer, recipe) -> None:
        """The method's own hooks (the options every method takes: :mod:`posttrain.methods.options`)."""
        for install in self.installs:
            install(trainer, recipe)

    def evaluator(self, recipe, eval_ds, args) -> Callable[[Any, Any, str], dict[str, Any]]:
        """``evaluate(model, tokenizer, name) -> metrics`` on the held-out split: with the search tool when
        the recipe uses it (exact match, searches, abstention), else greedy / mean@k / maj@k accuracy."""
        if recipe.search.enabled:
            from posttrain.methods.mash.evaluate import held_out

            return lambda model, tokenizer, name: held_out(recipe, model, tokenizer, eval_ds, args, name)
        from posttrain.evaluation import held_out

        return lambda model, tokenizer, name: held_out(recipe, model, tokenizer, eval_ds, args, name)
