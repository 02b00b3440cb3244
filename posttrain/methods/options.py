"""The options every method takes, installed after the method's own hooks (``train.run``).

- ``method.sample_weight`` / ``method.loss_constant``: GUI-G1's objective (:mod:`posttrain.methods.gui_g1`);
- ``method.train_samples``: TTRL's vote/train split (:mod:`posttrain.methods.ttrl`);
- ``method.dynamic_sampling``: DAPO's dynamic sampling (:mod:`posttrain.dynamic`);
- ``search: {enabled: true}``: the search tool loop (:mod:`posttrain.methods.mash.rollout`).
"""

from __future__ import annotations


def install_options(trainer, recipe) -> None:
    """What the ``method`` and ``search`` sections ask of any method."""
    options = recipe.method
    if options.sample_weight is not None or options.loss_constant is not None:
        from posttrain.methods import gui_g1

        gui_g1.install(trainer, recipe)
    if options.train_samples is not None:
        from posttrain.methods.ttrl import install_vote_subset

        install_vote_subset(trainer, recipe)
    if options.dynamic_sampling.enabled:
        trainer.enable_dynamic_sampling(options.dynamic_sampling.max_rounds)
    if recipe.search.enabled:
        from posttrain.methods.mash.rollout import install_search

        install_search(trainer, recipe)
