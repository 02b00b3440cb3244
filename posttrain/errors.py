"""User-facing errors.

Every mistake a user can make (a bad recipe, a missing column, a reward plugin that raises)
surfaces as a :class:`PosttrainError` whose message names the problem and the fix. The command
line prints that message alone, without a traceback (set ``POSTTRAIN_DEBUG=1`` for one).
"""

from __future__ import annotations


class PosttrainError(Exception):
    """An error caused by the user's input, with a message that says how to fix it."""


class ConfigError(PosttrainError):
    """A recipe or command-line flag is missing, malformed or unknown."""


class DataError(PosttrainError):
    """A data set cannot be loaded or lacks the columns a run needs."""


class ModelError(PosttrainError):
    """A model cannot be found or loaded."""


class RewardError(PosttrainError):
    """A reward plugin cannot be loaded, raised, or returned something invalid."""


class OutputDirError(PosttrainError):
    """The output folder already holds a run and neither --overwrite nor --resume was given."""


class RolloutError(PosttrainError):
    """The rollout engine cannot serve the run: a server that is down, unreachable or holds another model."""


class TrainingError(PosttrainError):
    """Training cannot go on (losses that stay NaN or infinite)."""
