"""``posttrain vllm-serve``: a rollout engine behind HTTP, on its own GPUs, for ``rollout.mode: server``.

    CUDA_VISIBLE_DEVICES=1 posttrain vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct --port 8000
    posttrain vllm-serve --model embedded --engine hf       # no vLLM: transformers generate (tests, CPU)

The trainer reaches it through :class:`posttrain.rollout.client.ServerEngine`. One engine serves one
request at a time (a lock); the trainer sends a whole step's prompts in one request, so the batching
happens inside the engine. Endpoints, all JSON unless said otherwise:

    GET  /health        {"status": "ok"}
    GET  /info          {"model", "signature": {model_type, vocab_size, ...}, "engine", "version", "sleep_mode"}
    POST /generate      {"prompt_ids": [[int]], "n": int, "sampling": {SamplingSettings fields}}
                        -> {"completion_ids": [[int]], "logprobs": [[float]] | null, "engine_s": float,
                            "weights_version": int | null}
    POST /weights?push=ID&final=0|1[&version=V]   body: safetensors bytes (name -> tensor)
                        -> {"received" | "loaded": int}
    POST /sleep, /wake_up               -> {"status": "ok"}

A weight push may take several POSTs (one per ~200 MB chunk) under one ``push`` id; the tensors are kept
until the one marked ``final=1`` arrives, then handed to the engine's ``load_weights`` together, so the
engine never generates with half old, half new weights. ``version`` (the trainer's optimizer step) tags
the loaded weights; every /generate answer says which version generated it (null: the weights the server
started with), which asynchronous training uses to bound the policy lag. A chunk sent again (a retry) simply replaces
the same names; a new ``push`` id drops what an abandoned push left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request, Response
from safetensors.torch import load as load_safetensors
from starlette.concurrency import run_in_threadpool

from posttrain.errors import ConfigError
from posttrain.rollout.base import SamplingSettings
from posttrain.serving import TOKEN_ENV, BodyTooLarge, authorized, is_loopback, read_body

logger = logging.getLogger(__name__)

SAMPLING_FIELDS = {f.name for f in dataclasses.fields(SamplingSettings)}


def _json(payload: Any, status: int = 200):
    # json.dumps directly: FastAPI's encoder walks every element of a (B*n, T) list in Python (slow), and
    # Starlette's refuses NaN/-inf, which a log-probability can legitimately be.
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def _parse_generate(body: bytes) -> tuple[list[list[int]], int, SamplingSettings]:
    """The /generate request, or ValueError saying what is wrong with it."""
    try:
        request = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc}") from exc
    if not isinstance(request, dict):
        raise ValueError("body must be a JSON object {prompt_ids, n, sampling}")
    prompts, n, sampling = request.get("prompt_ids"), request.get("n", 1), request.get("sampling", {})
    if not isinstance(sampling, dict):
        raise ValueError("sampling must be an object of SamplingSettings fields")
    if not isinstance(prompts, list) or not all(
        isinstance(p, list) and all(isinstance(t, int) for t in p) for p in prompts
    ):
        raise ValueError("prompt_ids must be a list of lists of token ids")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    unknown = set(sampling) - SAMPLING_FIELDS
    if unknown:
        raise ValueError(f"unknown sampling fields {sorted(unknown)}; valid: {sorted(SAMPLING_FIELDS)}")
    return prompts, n, SamplingSettings(**sampling)


class _EngineFailed(RuntimeError):
    """The engine raised while serving a request: HTTP 400 for a request it refuses, 500 otherwise."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


MAX_GENERATE_BODY = 64 * 2**20  # token ids of a generation batch: ~6 bytes per token in JSON
MAX_WEIGHTS_BODY = 16 * 2**30  # one pushed chunk: 200 MiB or one tensor, whichever is larger


def build_app(
    engine: Any,
    info: dict[str, Any],
    token: str | None = None,
    max_generate_body: int = MAX_GENERATE_BODY,
    max_weights_body: int = MAX_WEIGHTS_BODY,
) -> FastAPI:
    """A FastAPI app serving ``engine`` (a :class:`RolloutEngine` with ``load_weights``); ``info`` is /info.
    With ``token``, weight pushes, sleep and wake-up need ``Authorization: Bearer <token>`` (401 without)."""
    app = FastAPI(title="posttrain rollout server")
    instance = uuid.uuid4().hex  # this process: a client that sees it change knows the server restarted
    lock = threading.Lock()  # one request at a time reaches the engine (none of them is thread-safe)
    pending: dict[str, Any] = {"push": None, "tensors": {}}  # the weight push being received
    loaded: dict[str, Any] = {"version": None}  # the version tag of the weights the engine holds

    def locked(fn, *args):
        with lock:
            return fn(*args)

    async def call_engine(fn, *args):
        # The engine blocks for seconds; in a worker thread /health keeps answering meanwhile.
        try:
            return await run_in_threadpool(locked, fn, *args)
        except (ValueError, TypeError) as exc:
            # What engines raise for a request they refuse (vLLM: a prompt longer than max_model_len,
            # a sampling value out of range): a 4xx, so the client stops instead of retrying it.
            raise _EngineFailed(f"{type(exc).__name__}: {exc}", 400) from exc
        except Exception as exc:
            logger.exception("The engine failed in %s", getattr(fn, "__name__", fn))
            raise _EngineFailed(f"{type(exc).__name__}: {exc}", 500) from exc

    @app.exception_handler(_EngineFailed)
    async def engine_failed(request, exc):
        return _json({"detail": f"engine error: {exc}"}, status=exc.status)

    def refused(request: Request) -> Response | None:  # requests that change the server's state
        if authorized(request, token):
            return None
        return _json({"detail": f"this server needs its token: set {TOKEN_ENV} for the trainer"}, status=401)

    def too_large(limit: int, flag: str) -> Response:
        return _json({"detail": f"request body over {limit} bytes (the server's {flag})"}, status=413)

    @app.get("/health")
    async def health():
        return _json({"status": "ok"})

    @app.get("/info")
    async def get_info():
        return _json(info)

    @app.post("/generate")
    async def generate(request: Request):
        try:
            prompts, n, sampling = _parse_generate(await read_body(request, max_generate_body))
        except BodyTooLarge:
            return too_large(max_generate_body, "--max_generate_body")
        except ValueError as exc:
            return _json({"detail": str(exc)}, status=400)
        start = time.perf_counter()
        out, version = await call_engine(_generate_tagged, prompts, n, sampling)
        elapsed = time.perf_counter() - start
        logger.info("generate: %d prompts x %d in %.2f s", len(prompts), n, elapsed)
        answer = {"completion_ids": out.completion_ids, "logprobs": out.logprobs, "engine_s": elapsed}
        answer["weights_version"] = version
        return _json({**answer, "instance": instance})

    def _generate_tagged(prompts, n, sampling):
        return engine.generate(prompts, n, sampling), loaded["version"]  # under the lock: one version

    def receive(push: str, final: int, tensors: dict[str, Any], version: int | None = None) -> dict[str, int]:
        # Runs under the lock: no generate sees a half-loaded push, and the chunks of two pushes do not mix.
        if pending["push"] != push:
            pending["push"], pending["tensors"] = push, {}
        pending["tensors"].update(tensors)
        if not final:
            return {"received": len(pending["tensors"])}
        named = list(pending["tensors"].items())
        pending["push"], pending["tensors"] = None, {}
        start = time.perf_counter()
        engine.load_weights(named)
        loaded["version"] = version
        logger.info("weights: loaded %d tensors in %.2f s", len(named), time.perf_counter() - start)
        return {"loaded": len(named)}

    @app.post("/weights")
    async def weights(request: Request, push: str = "", final: int = 1, version: int | None = None):
        if (answer := refused(request)) is not None:
            return answer
        try:
            body = await read_body(request, max_weights_body)
        except BodyTooLarge:
            return too_large(max_weights_body, "--max_weights_body")
        try:
            tensors = await run_in_threadpool(load_safetensors, body)
        except Exception as exc:  # safetensors raises its own error types
            return _json({"detail": f"body is not a safetensors file: {exc}"}, status=400)
        return _json({**await call_engine(receive, push, final, tensors, version), "instance": instance})

    @app.post("/sleep")
    async def sleep(request: Request):
        if (answer := refused(request)) is not None:
            return answer
        await call_engine(engine.sleep)
        return _json({"status": "ok"})

    @app.post("/wake_up")
    async def wake_up(request: Request):
        if (answer := refused(request)) is not None:
            return answer
        await call_engine(engine.wake_up)
        return _json({"status": "ok"})

    return app


def server_info(
    name_or_path: str, engine: Any, signature: dict[str, Any], sleep_mode: bool
) -> dict[str, Any]:
    """The /info answer: what the client checks against the trainer's model before the first step."""
    from posttrain import __version__

    return {
        "model": name_or_path,
        "signature": signature,
        "engine": getattr(engine, "name", type(engine).__name__),
        "version": __version__,
        "sleep_mode": sleep_mode,
    }


def serve(engine: Any, info: dict[str, Any], host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Serve ``engine`` until interrupted (Ctrl-C / SIGTERM), then close it. Beyond loopback a token
    (``POSTTRAIN_SERVER_TOKEN``) is required; ``limits``: ``build_app``'s body limits."""
    import uvicorn

    token = os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host):
        if not token:
            raise ConfigError(
                f"Serving on {host} lets other machines push weights: set {TOKEN_ENV} to a shared secret "
                "here and for the trainer, or serve on 127.0.0.1."
            )
        logger.warning("Serving on %s: weight pushes, sleep and wake-up need the token.", host)
    app = build_app(engine, info, token=token, **limits)
    url = f"http://{host}:{port}"
    logger.info(
        "Rollout server (%s engine, %s) listening on %s; point the trainer at it with "
        "`rollout: {engine: vllm, mode: server, server_url: %s}`",
        info.get("engine"),
        info.get("model"),
        url,
        url,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        engine.close()


# ---------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from posttrain.rollout.config import RolloutConfig

    defaults = RolloutConfig()
    p = argparse.ArgumentParser(
        prog="posttrain vllm-serve",
        description="Serve rollouts for a `rollout.mode: server` training run (see posttrain.rollout.server).",
    )
    p.add_argument("--model", default="embedded", help="hub id, local folder, .gguf file or 'embedded'")
    p.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="hf: transformers, no vLLM")
    p.add_argument(
        "--host", default="127.0.0.1", help=f"0.0.0.0 to accept other machines (needs {TOKEN_ENV})"
    )
    p.add_argument("--max_generate_body", type=int, default=MAX_GENERATE_BODY, help="bytes (413 beyond)")
    p.add_argument("--max_weights_body", type=int, default=MAX_WEIGHTS_BODY, help="bytes per pushed chunk")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="vLLM: GPUs for the engine")
    p.add_argument("--dtype", default="auto", help="vLLM weights dtype (auto, bfloat16, float16, float32)")
    p.add_argument("--enforce_eager", action="store_true", help="vLLM: no CUDA graphs / compile")
    p.add_argument("--max_model_len", type=int, default=None, help="vLLM context length (prompt+completion)")
    p.add_argument("--seed", type=int, default=0)
    # The server owns its GPUs, unlike a colocated engine that shares them with the trainer.
    p.add_argument("--gpu_memory_utilization", type=float, default=0.9)
    p.add_argument("--weight_sync", choices=["auto", "reload", "load"], default=defaults.weight_sync)
    p.add_argument("--cpu_kvcache_gib", type=int, default=int(defaults.cpu_kvcache_gib))
    p.add_argument(
        "--enable_sleep_mode", action="store_true", help="vLLM on GPU: sleep while the trainer updates"
    )
    p.add_argument(
        "--latency_s",
        type=float,
        default=0.0,
        help="sleep this long in every generate (benchmarks: stands in for a slower or remote engine)",
    )
    return p


class _Delayed:
    """An engine whose every ``generate`` first sleeps ``latency_s`` (``--latency_s``)."""

    def __init__(self, engine: Any, latency_s: float):
        self._engine, self._latency_s = engine, latency_s

    def generate(self, *args, **kwargs):
        time.sleep(self._latency_s)
        return self._engine.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


def _build_engine(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The engine for ``args`` and the model signature /info reports."""
    from posttrain.models import ModelConfig, load_model, resolve_model_path
    from posttrain.rollout.vllm import model_signature

    if args.engine == "hf":
        from posttrain.rollout.hf import HFEngine

        model, tokenizer = load_model(ModelConfig(name_or_path=args.model), device=_hf_device())
        return HFEngine(model, tokenizer), model_signature(model.config)
    from posttrain.rollout.config import RolloutConfig
    from posttrain.rollout.factory import vllm_engine

    # The engine core in this process, not a child: weight pushes hand vLLM an iterator of tensors
    # (which its inter-process encoder refuses) and the per-parameter path reaches into the model runner.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # vLLM reads a folder of safetensors: the embedded model and .gguf files resolve to their conversion.
    path = resolve_model_path(args.model)
    settings = RolloutConfig(
        engine="vllm",
        mode="server",
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        enable_sleep_mode=args.enable_sleep_mode,
        tensor_parallel_size=args.tensor_parallel_size,
        weight_sync=args.weight_sync,
        cpu_kvcache_gib=args.cpu_kvcache_gib,
    )
    # A process of its own, not one of the trainer's ranks: no external launcher.
    engine = vllm_engine(settings, path, args.seed, external_launcher=False)
    return engine, engine.model_signature()


def _hf_device() -> str | None:
    import torch

    return "cuda" if torch.cuda.is_available() else None


def main(argv: list[str]) -> None:
    """``posttrain vllm-serve ...`` (called by posttrain.cli, which turns errors into messages)."""
    args = _parser().parse_args(argv)
    if args.engine == "vllm":
        from posttrain.rollout.vllm import require_vllm

        require_vllm()  # before the model is resolved or loaded: fail in a second, not a minute
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}.")
    engine, signature = _build_engine(args)
    # The engine's own word: vLLM has no sleep mode on CPU even when asked for one.
    info = server_info(args.model, engine, signature, sleep_mode=getattr(engine, "enable_sleep_mode", False))
    limits = {"max_generate_body": args.max_generate_body, "max_weights_body": args.max_weights_body}
    if args.latency_s < 0:
        raise ConfigError(f"--latency_s must be >= 0, got {args.latency_s}.")
    if args.latency_s > 0:
        logger.warning("Every generate request sleeps %.1f s first (--latency_s).", args.latency_s)
        engine = _Delayed(engine, args.latency_s)
    serve(engine, info, args.host, args.port, **limits)
