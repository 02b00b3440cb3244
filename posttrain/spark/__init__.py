"""SPARK: recycle RL rollouts into judge and reflection prompts for the same policy (arXiv 2509.22624)."""
