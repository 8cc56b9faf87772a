# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv (once), install pod-ops with what they need, and check system tools.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
OPS    := $(VENV)/bin/ops
STAMP  := $(VENV)/.installed

.PHONY: demo smoke test lint system-deps clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned exactly in the train extra: an open range would pull a CUDA build
	$(PY) -m pip install -q -e '.[dev,train,wandb,report]'
	touch $(STAMP)

system-deps:
	@scripts/system-deps.sh

DEMO_DATA := data/vessels

$(DEMO_DATA)/dataset.json: | $(STAMP)
	$(OPS) data synth --out $(DEMO_DATA) --n 12 --size 64 --seed 0 --force

# the flagship trainer in its demo size (dice_ce_demo: 2 folds x 4 epochs x 15 steps, one torch
# thread; about two minutes on a quiet CPU), then the run directory is validated, checksums
# included, and the fold x metric table printed from the run's summary.json
demo: system-deps $(STAMP) $(DEMO_DATA)/dataset.json
	@run=dice_ce_demo-$$(date -u +%Y%m%dT%H%M%S); \
	$(OPS) run submit --preset dice_ce_demo --run-id $$run --follow && \
	dir=$$($(OPS) run status $$run --json | $(PY) -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["run_dir"])') && \
	$(OPS) validate --deep $$dir && echo "demo run: $$dir" && \
	$(PY) -m runner.seg.table $$dir

# the standard-library smoke preset: no torch, a few seconds
smoke: system-deps $(STAMP)
	$(OPS) run submit --preset smoke --follow

# two workers, one test file each at a time (module fixtures such as sshd stay per worker);
# then the SLURM tier on its own: its cluster keeps real time (time limits, scheduler passes)
test: system-deps $(STAMP)
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not slurm"
	$(VENV)/bin/pytest -q -m slurm

lint: $(STAMP)
	$(VENV)/bin/ruff check ops runner tests bench
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)
