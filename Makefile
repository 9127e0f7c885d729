# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build that this project's machines carry on disk; a CUDA user can pass their own,
# e.g. `make demo TORCH_SPEC="torch==2.13.0 --index-url ..."`, or keep the torch already in $(VENV).
TORCH_SPEC ?= torch==2.13.0
# torchvision / timm model definitions (`--model torchvision:NAME`, `timm:NAME`), installed without
# their dependencies so that pip leaves the torch above alone (see README, Dependencies).
ZOO_SPEC ?= torchvision==0.29.1 timm==1.0.31

.PHONY: demo test lint format clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(ZOO_SPEC)
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/dsaprune demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# one pytest-xdist worker per core (tests/conftest.py gives each its share of the threads)
test: lint
	$(VENV)/bin/python -m pytest -q -n auto

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
