"""The transformers engine: ``model.generate`` on the model itself. Runs on any device, needs nothing else.

In training, the trainer keeps TRL's own transformers path (it also gathers ZeRO-3 shards and unwraps
DDP for generation); this class is the same generation for evaluation, benchmarks, the test that
checks vLLM against it, and the backend of ``posttrain vllm-serve --engine hf`` (a server without vLLM).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from posttrain.rollout.base import Rollouts, SamplingSettings
from posttrain.rollout.weights import inference_weights


def _eos_ids(tokenizer, model) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = ids if ids is not None else tokenizer.eos_token_id
    return [ids] if isinstance(ids, int) else list(ids or [])


def cut_at_eos(ids: list[int], eos: list[int], pad_id: int | None) -> list[int]:
    """Keep tokens up to and including the first end-of-sequence token (drops right padding)."""
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[: i + 1]
    return ids


def stop_end(context: list[int], ids: list[int], stop: list[str], tokenizer) -> int | None:
    """Length of the shortest prefix of ``ids`` whose text completes one of the ``stop`` strings, or None.

    The token that completes a stop string is kept, as transformers' ``StopStringCriteria`` stops after
    it. ``context`` (the prompt's last tokens) lets a stop string begin before the completion, which that
    criterion also allows; an occurrence counts only if it ends inside ``ids``. A binary search over
    prefixes (a string found in a prefix stays found in longer ones): log2(len(ids)) decodes per row.
    With a character tokenizer, the ids of ``"ab</s>cd"`` and ``stop=["</s>"]`` give 6.
    """
    start = len(tokenizer.decode(context, skip_special_tokens=False)) if context else 0

    def found(k: int) -> bool:
        text = tokenizer.decode(context + ids[:k], skip_special_tokens=False)
        # An occurrence ending after `start` begins at or after start - len(s) + 1.
        return any(text.find(s, max(0, start - len(s) + 1)) != -1 for s in stop)

    if not ids or not found(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if found(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


class HFEngine:
    """``generate`` by transformers; ``batch_size`` prompts (times ``n``) per forward batch."""

    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(tokenizer, model)

    def _generation_config(self, s: SamplingSettings) -> GenerationConfig:
        sample = s.temperature > 0
        return GenerationConfig(
            do_sample=sample,
            temperature=s.temperature if sample else None,
            # Explicit 0 / 1.0: None would let transformers fill in its global default top_k=50.
            top_p=s.top_p if sample else None,
            top_k=s.top_k if sample else None,
            min_p=(s.min_p or None) if sample else None,
            repetition_penalty=s.repetition_penalty,
            max_new_tokens=s.max_tokens,
            min_new_tokens=s.min_tokens or None,
            stop_strings=list(s.stop) if s.stop else None,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        config = self._generation_config(sampling)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        repeated = [p for p in prompt_ids for _ in range(n)]
        completions: list[list[int]] = []
        # transformers needs the tokenizer to match stop strings against token text.
        extra = {"tokenizer": self.tokenizer} if sampling.stop else {}
        try:
            for start in range(0, len(repeated), self.batch_size):
                chunk = repeated[start : start + self.batch_size]
                ids, mask = _left_pad(chunk, self.pad_id, device)
                out = self.model.generate(
                    input_ids=ids, attention_mask=mask, generation_config=config, **extra
                )
                for prompt, row in zip(chunk, out[:, ids.shape[1] :].tolist()):
                    completions.append(self._finish(prompt, row, sampling.stop))
            logprobs = self.score(repeated, completions, sampling.temperature) if sampling.logprobs else None
        finally:
            self.model.train(was_training)
        return Rollouts(completion_ids=completions, logprobs=logprobs)

    def _finish(self, prompt: list[int], row: list[int], stop: list[str] | None) -> list[int]:
        """One generated row -> the completion: up to its end-of-sequence token or the token completing
        a stop string, whichever came first. A row that finished before the longest one in its batch
        was filled with padding after that point; padding may be the end-of-sequence token itself, so
        the stop string is looked for after the end-of-sequence cut, not instead of it."""
        ids = cut_at_eos(row, self.eos_ids, self.pad_id)
        if stop:
            context = prompt[-max(len(s) for s in stop) :]  # a token spans >= 1 character
            end = stop_end(context, ids, stop, self.tokenizer)
            if end is not None:
                ids = ids[:end]
        return ids

    @torch.no_grad()
    def score(
        self, prompt_ids: list[list[int]], completion_ids: list[list[int]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Log-probabilities of each completion token under the model (logits / temperature)."""
        device = next(self.model.parameters()).device
        scale = temperature if temperature > 0 else 1.0
        out: list[list[float]] = []
        for start in range(0, len(prompt_ids), self.batch_size):
            prompts = prompt_ids[start : start + self.batch_size]
            comps = completion_ids[start : start + self.batch_size]
            width = max(len(c) for c in comps) or 1
            seqs = [p + c + [self.pad_id] * (width - len(c)) for p, c in zip(prompts, comps)]
            ids, mask = _left_pad(seqs, self.pad_id, device)
            for row, c in enumerate(comps):  # right padding of the completion is not attended
                mask[row, ids.shape[1] - (width - len(c)) :] = 0
            positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            logits = logits[:, -width - 1 : -1].float()
            logps = torch.log_softmax(logits / scale, dim=-1)
            targets = ids[:, -width:]
            picked = logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            out.extend(picked[row, : len(c)].tolist() for row, c in enumerate(comps))
        return out

    def sync_weights(self, model) -> None:
        """Copy ``model``'s weights in (a no-op when the engine generates with that very model)."""
        if model is self.model:
            return
        self.model.load_state_dict(dict(inference_weights(model)), strict=False)

    def load_weights(self, named: list[tuple[str, torch.Tensor]]) -> None:
        """Weights pushed by name (what a server receives)."""
        self.model.load_state_dict(dict(named), strict=False)

    def sleep(self) -> None:
        pass

    def wake_up(self) -> None:
        pass

    def close(self) -> None:
        pass


def _left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        if s:
            ids[row, width - len(s) :] = torch.tensor(s)
            mask[row, width - len(s) :] = 1
    return ids.to(device), mask.to(device)
