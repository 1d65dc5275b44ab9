# Two entry points: `make demo` (the main job) and `make test`. Both build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint evaluate evaluate-task clean weights weights-task bench bench-enhancer

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: venv
	$(BIN)/ndpca demo --out out/demo

evaluate: venv
	$(BIN)/ndpca evaluate --out out/eval --limit 16

evaluate-task: venv
	$(BIN)/ndpca evaluate --task-aware --out out/eval_task --limit 16

lint: venv
	$(BIN)/ruff check .

test: venv lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) out

ARCHS := jae ndpca-e2d1 ndpca-e4d1 naive-e2d1 naive-e4d1

# Re-create the shipped weights in checkpoints/ (about 10-15 min per architecture on 2 cores).
weights: venv
	$(BIN)/ndpca data build --workers 2
	for a in $(ARCHS); do $(BIN)/ndpca train --config training/configs/$$a.toml --ship checkpoints --no-progress || exit 1; done
	for e in e2d1 e4d1; do $(BIN)/ndpca train --config training/configs/naive-$$e-full.toml --ship checkpoints/full_latent --no-progress || exit 1; done

# The enhancer, then the task- and perception-aware codecs (after `make weights`).
weights-task: venv
	$(BIN)/ndpca train-enhancer --config training/configs/enhancer.toml --ship checkpoints --no-progress
	NDPCA=$(BIN)/ndpca bash training/configs/task-aware.sh

bench: venv
	$(BIN)/ndpca bench --out out/bench

bench-enhancer: venv
	$(BIN)/ndpca bench-enhancer --out out/bench_enhancer
