"""Moved to :mod:`posttrain.verify.qa`; this import path keeps working for plugins, with a warning."""

import warnings

from posttrain.verify.qa import *  # noqa: F403
from posttrain.verify.qa import __all__  # noqa: F401

warnings.warn(
    "posttrain.qa moved to posttrain.verify.qa; import it from there.", DeprecationWarning, stacklevel=2
)
