"""Chat prompts that prefill the start of the model's reply.

A prompt whose last message is from the assistant is a reply already begun: the model continues that
message instead of opening a new one (``continue_final_message`` in transformers' chat templates, what
TRL's ``apply_chat_template`` does for such prompts). SPARK's ``spark.verdict_prefix`` uses it so that a
small judge's next tokens are its verdict. The completion is then only the continuation; whoever reads
the reply (a reward, an evaluation) reads ``prefill(prompt) + completion``.

    messages = [{"role": "user", "content": "Is 3 right?"}, {"role": "assistant", "content": "\\\\boxed{"}]
    ids = encode(tokenizer, messages)          # ... <|im_start|>assistant\\n\\\\boxed{
    prefill(messages) + "Yes}"                 # "\\\\boxed{Yes}"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def continues_reply(messages: Any) -> bool:
    """True when ``messages`` is a conversation whose last message is the assistant's (a prefilled reply)."""
    return (
        isinstance(messages, Sequence)
        and not isinstance(messages, str)
        and len(messages) > 0
        and isinstance(messages[-1], dict)
        and messages[-1].get("role") == "assistant"
    )


def prefill(messages: Any) -> str:
    """The text a prompt prefills the reply with: the last message's content when it is the assistant's,
    else ``""``."""
    if not continues_reply(messages):
        return ""
    content = messages[-1].get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def template_kwargs(messages: Any) -> dict[str, bool]:
    """``apply_chat_template`` flags for ``messages``: open a new reply, or continue the prefilled one."""
    if continues_reply(messages):
        return {"add_generation_prompt": False, "continue_final_message": True}
    return {"add_generation_prompt": True}


def encode(tokenizer, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    """Token ids of a chat prompt, ending where the model's reply (or its continuation) starts."""
    enc = tokenizer.apply_chat_template(messages, return_dict=True, **template_kwargs(messages), **kwargs)
    return list(enc["input_ids"])
