"""Memory-R and Memory-R+ (Le, Do, Nguyen, Venkatesh, "Reasoning Under 1 Billion", arXiv 2504.02273):
GRPO whose reward adds episodic-memory terms, written for models under 1B parameters.

    method: memory_r        # exploit only: stay near what succeeded on similar questions
    method: memory_r_plus   # exploit + explore: also move away from what failed

The rewards (``rewards/memory.py``) are summed with correctness and format before group normalisation
(Eq. 8). The preset is the paper's GSM8K setting (App. A, Table 4; the code's TRL 0.14 defaults for
the rest): lr 5e-6 with cosine decay and 10% warm-up, Adam betas 0.9/0.99, weight decay 0.1, 16
generations, 200 completion tokens, gradient norm clipped at 0.1, KL 0.04. docs/methods.md "Memory-R+".
"""

from __future__ import annotations

from posttrain.methods.base import PLAIN, Method

PRESET = {
    **PLAIN,
    "loss_type": "grpo",
    "scale_rewards": "group",
    "beta": 0.04,
    "learning_rate": 5e-6,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.1,  # a ratio of max_steps (transformers 5)
    "adam_beta1": 0.9,
    "adam_beta2": 0.99,
    "weight_decay": 0.1,
    "num_generations": 16,
    "max_completion_length": 200,
    "max_grad_norm": 0.1,
}


def _rewards(explore: bool) -> tuple[dict, ...]:
    # The paper's task rewards (correctness and format, both baselines and memory arms share them) plus
    # the memory term with beta_exploit = beta_explore = 1 and K = 1 (GSM8K).
    # The reference reads the answer from its <answer> tag and stores the reasoning span.
    return (
        {"name": "accuracy", "weight": 1.0, "kwargs": {"extract": "tagged"}},
        {"name": "format", "weight": 0.5, "kwargs": {"tags": ["think", "answer"]}},
        {
            "name": "episodic_memory",
            "weight": 1.0,
            "kwargs": {"explore": explore, "k": 1, "window": 100, "extract": "tagged"},
        },
    )


MEMORY_R = Method(
    name="memory_r",
    summary="Memory-R (arXiv 2504.02273): GRPO + an exploit reward from a memory of successes",
    preset=PRESET,
    rewards=_rewards(explore=False),
)

MEMORY_R_PLUS = Method(
    name="memory_r_plus",
    summary="Memory-R+ (arXiv 2504.02273): GRPO + exploit (successes) and explore (failures) rewards",
    preset=PRESET,
    rewards=_rewards(explore=True),
)
