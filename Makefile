# Two entry points: `make demo` (the main job) and `make test`. Both build .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint evaluate evaluate-task clean weights weights-task bench bench-enhancer \
	chromium screenshot

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

test: venv lint chromium
	$(BIN)/pytest -q

# Debian's chromium for the live view's browser test, when /usr/bin/chromium is missing (needs
# root or passwordless sudo; the test skips and says why when it cannot be installed).
chromium:
	@.ci/install-chromium $(VENV)/chromium-install.log

# The README's picture of the live view: a demo run, screenshot at three quarters of it.
screenshot: venv chromium
	$(BIN)/ndpca demo --out out/screenshot --seconds 20 --screenshot docs/img/live.png

clean:
	rm -rf $(VENV) out

ARCHS := ndpca-e4d1 naive-e4d1 ndpca-e2d1 naive-e2d1 jae
LINEAR := dpca-e4d1 dpca-e2d1
LIBRI := ../shared/data/speech/librispeech-train-clean-100

# Re-create the shipped codecs in checkpoints/ (commands, steps and hours in checkpoints/README.md).
# Needs ../shared/data (LibriSpeech train-clean-100 and recorded noise) for the real-speech rooms.
weights: venv
	$(BIN)/ndpca data build --workers 2
	$(BIN)/ndpca data build --config training/configs/data-librispeech-train.toml --speech-dir $(LIBRI) \
		--noise-dir ../shared/data/noise --out data/rooms-librispeech --workers 2
	for a in $(LINEAR) $(ARCHS); do $(BIN)/ndpca train --config training/configs/$$a.toml --run-dir runs/$$a \
		--ship checkpoints --no-progress || exit 1; done
	for e in e2d1 e4d1; do $(BIN)/ndpca train --config training/configs/naive-$$e-full.toml \
		--run-dir runs/naive-$$e-full --ship checkpoints/full_latent --no-progress || exit 1; done

# The enhancers (the score-based one of the task-aware experiment, then the receiver's: the
# predictive network and its STOI fine-tune), then the task- and perception-aware codecs (after
# `make weights`).
weights-task: venv
	$(BIN)/ndpca train-enhancer --config training/configs/enhancer.toml --ship checkpoints/score --no-progress
	$(BIN)/ndpca train-enhancer --config training/configs/enhancer-predictive-stream.toml \
		--run-dir runs/enhancer-pred-stream --ship checkpoints/predictive --no-progress
	$(BIN)/ndpca train-enhancer --config training/configs/enhancer-predictive-stoi.toml \
		--run-dir runs/enhancer-pred-stoi --ship checkpoints --no-progress
	NDPCA=$(BIN)/ndpca bash training/configs/task-aware.sh

bench: venv
	$(BIN)/ndpca bench --out out/bench

bench-enhancer: venv
	$(BIN)/ndpca bench-enhancer --out out/bench_enhancer
