"""The trainer's side of ``rollout.mode: server``: a rollout engine that forwards to ``posttrain vllm-serve``.

    engine = ServerEngine(recipe.rollout, model_for_signature=model, accelerator=trainer.accelerator)
    rollouts = engine.generate(prompt_ids, n=8, sampling=sampling)   # every process calls it
    engine.sync_weights(model)                                      # every process calls it

Only the main process talks to the server; the others hand it their prompts and get their rows back::

    process 0: prompts a b  ──┐                                 ┌──▶ a a' b b'    (n = 2, prompt-major)
    process 1: prompts c d  ──┴─ gather ─▶ main ─▶ server ─▶ broadcast ──▶ c c' d d'

At construction the client waits for the server (``rollout.server_timeout``) and compares the model it
serves with the one being trained (``/info``); a different architecture stops the run before the first
step. Every request is retried on connection errors, timeouts and 5xx answers with back-off 1, 2, 4, ...
s (``rollout.retries`` times); then :class:`~posttrain.errors.RolloutError` stops the run, on every
process (the main one broadcasts the failure, so the others do not wait forever in a collective).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any
from urllib.parse import urlparse

from posttrain.errors import RolloutError
from posttrain.retrying import Refused, Unanswered, send, wait_until_up
from posttrain.rollout.base import Rollouts, SamplingSettings, broadcast_outcome
from posttrain.rollout.config import RolloutConfig
from posttrain.rollout.weights import inference_weights, unwrap
from posttrain.serving import client_headers

logger = logging.getLogger(__name__)

CHUNK_BYTES = 200 * 2**20
"""A weight push is split into POSTs of about this size (a whole 7B model in one body is 28 GB)."""


class ServerEngine:
    """A :class:`~posttrain.rollout.base.RolloutEngine` whose engine runs in a ``posttrain vllm-serve`` process."""

    name = "server"
    backoff_s = 1.0
    """First wait between retries, doubled after each (tests shorten it)."""

    def __init__(self, config: RolloutConfig, model_for_signature: Any = None, accelerator: Any = None):
        import requests

        self.config = config
        self.url = config.server_url.rstrip("/")
        self.accelerator = accelerator
        self.distributed = accelerator is not None and accelerator.num_processes > 1
        self.is_main = accelerator is None or accelerator.is_main_process
        self.session = requests.Session() if self.is_main else None
        if self.session is not None:
            self.session.headers.update(client_headers())  # POSTTRAIN_SERVER_TOKEN, when set
        hf_config = getattr(unwrap(model_for_signature), "config", model_for_signature)
        self.model_name = getattr(hf_config, "_name_or_path", None) or "MODEL"
        self.info: dict[str, Any] = self._on_main(lambda: self._connect(hf_config))
        self.sleep_mode = bool(self.info.get("sleep_mode"))
        self._last_answer: dict[str, Any] = {}
        self._model: Any = None  # the model of the last weight push, to push again after a restart
        self._weights_instance: str | None = None  # the server process that received it

    # ----------------------------------------------------------------------------- the protocol

    def generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        """``n`` completions per prompt from the server; collective when there are several processes."""
        from accelerate.utils import gather_object

        per_process = gather_object([prompt_ids]) if self.distributed else [prompt_ids]
        everything = [p for prompts in per_process for p in prompts]
        out = self._on_main(lambda: self._generate(everything, n, sampling))
        if self._model is not None and out.info.get("instance") != self._weights_instance:
            # A server restarted since the last push serves its initial weights: push ours again.
            logger.warning("The rollout server at %s restarted: pushing the current weights again.", self.url)
            self.sync_weights(self._model)
            out = self._on_main(lambda: self._generate(everything, n, sampling))
        rank = self.accelerator.process_index if self.distributed else 0
        start = sum(len(prompts) for prompts in per_process[:rank]) * n
        stop = start + len(prompt_ids) * n
        logprobs = out.logprobs[start:stop] if out.logprobs is not None else None
        return Rollouts(completion_ids=out.completion_ids[start:stop], logprobs=logprobs, info=out.info)

    def sync_weights(self, model: Any) -> None:
        """Push the trainer's weights. Every process must call it: ZeRO-3 gathers each weight collectively."""
        push, chunk, size, sent, error = uuid.uuid4().hex, {}, 0, 0, None
        start = time.perf_counter()
        for name, tensor in inference_weights(model):
            if not self.is_main or error is not None:
                continue  # keep iterating: the other processes are waiting for this weight's gather
            # A copy: a ZeRO-3 gathered tensor is freed when the iteration moves on.
            chunk[name] = tensor.detach().to("cpu", copy=True).contiguous()
            size += chunk[name].numel() * chunk[name].element_size()
            if size >= CHUNK_BYTES:
                error = self._push_chunk(push, chunk, final=False)
                sent, chunk, size = sent + len(chunk), {}, 0
        instance = None
        if self.is_main and error is None:
            error = self._push_chunk(push, chunk, final=True)
            instance = self._last_answer.get("instance")
            sent += len(chunk)
            logger.debug("Pushed %d tensors to %s in %.2f s", sent, self.url, time.perf_counter() - start)
        self._weights_instance = self._settle(instance, error)
        self._model = model

    # ----------------------------------------------------------------------------- asynchronous generation
    # Called from posttrain.rollout.asynchronous's worker thread on the main process: no collectives.

    def generate_on_main(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        """``n`` completions per prompt; ``info["weights_version"]`` names the weights that made them."""
        return self._generate(prompt_ids, n, sampling)

    def push_on_main(self, tensors: dict[str, Any], version: int) -> None:
        """Push a snapshot of the weights (name -> CPU tensor), tagged with ``version``."""
        push, chunk, size = uuid.uuid4().hex, {}, 0
        for name, tensor in tensors.items():
            chunk[name] = tensor
            size += tensor.numel() * tensor.element_size()
            if size >= CHUNK_BYTES:
                if (error := self._push_chunk(push, chunk, final=False)) is not None:
                    raise error
                chunk, size = {}, 0
        if (error := self._push_chunk(push, chunk, final=True, version=version)) is not None:
            raise error
        self._weights_instance = self._last_answer.get("instance")

    def sleep(self) -> None:
        """Forwarded only to a server started with ``--enable_sleep_mode`` (one that shares GPUs)."""
        if self.sleep_mode:
            self._on_main(lambda: self._request("POST", "/sleep", "sleep", 60).close())

    def wake_up(self) -> None:
        if self.sleep_mode:
            self._on_main(lambda: self._request("POST", "/wake_up", "wake_up", 60).close())

    def close(self) -> None:
        """Drop the connection; the server keeps running for the next run (stop it with Ctrl-C)."""
        if self.session is not None:
            self.session.close()

    # ----------------------------------------------------------------------------- main process only

    def _connect(self, hf_config: Any) -> dict[str, Any]:
        from posttrain import __version__
        from posttrain.rollout.vllm import model_signature

        self._wait_until_up()
        info = self._request("GET", "/info", "info", 30).json()
        if hf_config is not None:
            ours, theirs = model_signature(hf_config), info.get("signature", {})
            differ = [
                f"{key}: server {theirs[key]!r}, trainer {value!r}"
                for key, value in ours.items()
                if value is not None and theirs.get(key) is not None and theirs[key] != value
            ]
            if differ:
                raise RolloutError(
                    f"The rollout server at {self.url} serves {info.get('model')!r}, a different model from the "
                    f"one being trained ({self.model_name}): {'; '.join(differ)}. Restart the server with the "
                    f"training model: {self._start_command()}"
                )
        if info.get("version") != __version__:
            logger.warning(
                "The rollout server runs posttrain %s, this trainer %s.", info.get("version"), __version__
            )
        logger.info(
            "Rollout server at %s: %s engine serving %s", self.url, info.get("engine"), info.get("model")
        )
        return info

    def _wait_until_up(self) -> None:
        def announce(remaining: float) -> None:
            logger.info("Waiting up to %.0f s for the rollout server at %s ...", remaining, self.url)

        timeout = self.config.server_timeout
        try:
            wait_until_up(
                self.session, f"{self.url}/health", timeout, first_delay=0.25, max_delay=5.0, on_wait=announce
            )
        except Unanswered as exc:
            raise RolloutError(
                f"No rollout server answers at {self.url}/health after {timeout:.0f} s "
                f"({exc.last}). Start one (on GPUs the trainer does not use, e.g. CUDA_VISIBLE_DEVICES=1): "
                f"{self._start_command()} -- or set rollout.server_url to where it listens, or "
                "rollout.server_timeout higher for a model that loads slowly."
            ) from None

    def _generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingSettings) -> Rollouts:
        import dataclasses

        start = time.perf_counter()
        body = {"prompt_ids": prompt_ids, "n": n, "sampling": dataclasses.asdict(sampling)}
        answer = self._request("POST", "/generate", "generate", self.config.request_timeout, json=body).json()
        completions, logprobs = answer["completion_ids"], answer.get("logprobs")
        if len(completions) != len(prompt_ids) * n:
            raise RolloutError(
                f"The rollout server at {self.url} returned {len(completions)} completions for "
                f"{len(prompt_ids)} prompts x {n}; is another client using it?"
            )
        info = {
            "server_engine_s": answer.get("engine_s"),
            "server_request_s": time.perf_counter() - start,
            "instance": answer.get("instance"),  # which server process answered (a restart changes it)
            "weights_version": answer.get("weights_version"),  # the tag of the last push it loaded
        }
        return Rollouts(completion_ids=completions, logprobs=logprobs, info=info)

    def _push_chunk(
        self, push: str, chunk: dict[str, Any], final: bool, version: int | None = None
    ) -> RolloutError | None:
        from safetensors.torch import save

        tag = f"&version={version}" if version is not None else ""
        try:
            response = self._request(
                "POST",
                f"/weights?push={push}&final={int(final)}{tag}",
                "a weight push",
                self.config.request_timeout,
                data=save(chunk),
                headers={"Content-Type": "application/octet-stream"},
            )
            self._last_answer = response.json()
        except RolloutError as exc:
            return exc
        return None

    def _request(self, method: str, path: str, what: str, timeout: float, **kwargs):
        """One HTTP request with retries; a RolloutError once they are spent (or at once on a 4xx)."""
        try:
            return send(
                self.session,
                method,
                self.url + path,
                what=what,
                server="Rollout server",
                retries=self.config.retries,
                backoff=self.backoff_s,
                timeout=(min(10.0, timeout), timeout),
                **kwargs,
            )
        except Refused as exc:  # our request is wrong: sending it again will not help
            raise RolloutError(f"The rollout server at {self.url} rejected {what}: {exc.detail}") from None
        except Unanswered as exc:
            raise RolloutError(
                f"The rollout server at {self.url} did not answer {what} after {exc.attempts} attempts "
                f"(last: {exc.last}). It died, hangs or cannot be reached: check the `posttrain vllm-serve` log "
                "(out of memory? killed?), that it still listens at rollout.server_url, and rollout.request_timeout "
                "for long generations. Training stops here; the checkpoints already saved in the output folder "
                f"(checkpoint-*) are intact: restart the server ({self._start_command()}) and run the same "
                "training command with --resume."
            ) from None

    def _start_command(self) -> str:
        address = urlparse(self.url)
        host = (
            f" --host {address.hostname}" if address.hostname not in (None, "127.0.0.1", "localhost") else ""
        )
        return f"`posttrain vllm-serve --model {self.model_name}{host} --port {address.port or 8000}`"

    # ----------------------------------------------------------------------------- across processes

    def _on_main(self, fn):
        """Run ``fn`` on the main process and give every process its result, or raise its error on all."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except RolloutError as exc:
                error = exc
        return self._settle(result, error)

    def _settle(self, result: Any, error: RolloutError | None) -> Any:
        return broadcast_outcome(result, error, self.distributed)
