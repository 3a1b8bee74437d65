# elbolab: `make demo` trains and samples a small DDPM on the embedded MNIST; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_PIN := torch==2.13.0

.PHONY: venv install install-test demo test test-slow bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first, with the exact pin (the CPU build here); a torch that is already importable is kept.
venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install --quiet $(TORCH_PIN)

install: venv
	$(PIP) install --quiet -e .

install-test: venv
	$(PIP) install --quiet -e ".[test]"

demo: install
	$(VENV)/bin/elbolab demo

# the suite without the tests marked slow (< 10 min on 2 cores); CI runs both tiers (.ci/run)
test: install-test
	$(PY) -m pytest -q -m "not slow"

test-slow: install-test
	$(PY) -m pytest -q -m slow

bench: venv
	$(PIP) install --quiet -e ".[bench]"
	$(PY) benchmarks/train_speed.py --out benchmarks/results/train_speed.json

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
