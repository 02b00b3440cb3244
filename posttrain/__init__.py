"""posttrain: GRPO-family post-training with pluggable verifiable rewards, built on TRL.

    posttrain train recipes/quickstart.yaml           # train from a YAML recipe
    posttrain eval --model M --data D                 # greedy / mean@k / maj@k accuracy

The reward plugin API lives in :mod:`posttrain.rewards`; the trainer hooks in
:mod:`posttrain.trainer`.
"""

__version__ = "0.1.0"
