"""Rollout engines: who generates the completions the trainer learns from (see ``base.py``)."""

from posttrain.rollout.base import RolloutEngine, Rollouts, SamplingSettings
from posttrain.rollout.config import RolloutConfig

__all__ = ["RolloutConfig", "RolloutEngine", "Rollouts", "SamplingSettings"]
