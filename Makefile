# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv (once), install pod-ops with what they need, and check system tools.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OPS    := $(VENV)/bin/ops
STAMP  := $(VENV)/.installed

.PHONY: demo test lint system-deps clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned exactly in the train extra: an open range would pull a CUDA build
	$(PY) -m pip install -q -e '.[dev,train,wandb]'
	touch $(STAMP)

system-deps:
	@scripts/system-deps.sh

demo: system-deps $(STAMP)
	@run=smoke-demo-$$(date -u +%Y%m%dT%H%M%S); \
	$(OPS) run submit --preset smoke --run-id $$run --follow && \
	dir=$$($(OPS) run status $$run --json | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["run_dir"])') && \
	$(OPS) validate --deep $$dir && echo "demo run: $$dir"

test: system-deps $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check ops runner tests bench
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)
