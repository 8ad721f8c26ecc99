# raccoon_watch: `make run` to watch, `make test` to test. Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml
export RACCOON_SHARED ?= $(abspath ../shared)

.PHONY: venv venv-train venv-test system-deps run test test-fast bench bench-archive clips eval-clips soak train install-service lint clean

# What each target installs (pip constraints: requirements.lock), one stamp per level so that no
# target reinstalls what a bigger one already put there and none removes anything:
#   .installed-run    the daemon: the package with LiteRT, no TensorFlow, no Playwright (340 MiB)
#   .installed-train  + the train extra (TensorFlow, pycocotools, matplotlib): training, retrain
#   .installed        + the test and scale extras (pytest, Playwright, Ray): everything the test suite needs
INSTALL := $(BIN)/pip install -q -c requirements.lock
DEPS    := setup.cfg pyproject.toml requirements.lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-run: $(DEPS) | $(BIN)/python
	$(INSTALL) -e .
	touch $@

$(VENV)/.installed-train: $(DEPS) | $(BIN)/python
	$(INSTALL) -e '.[train]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed: $(DEPS) | $(BIN)/python
	$(INSTALL) -e '.[train,test,scale]'
	touch $@ $(VENV)/.installed-train $(VENV)/.installed-run

venv: $(VENV)/.installed-run
venv-train: $(VENV)/.installed-train
venv-test: $(VENV)/.installed

system-deps:
	@scripts/install-system-deps.sh

run: venv
	$(BIN)/raccoon-watch run --config $(CONFIG) --demo-if-no-camera

# 3 workers on 2 cores: a third of the suite's time is daemons waiting on real clocks (clips play in
# real time, a broker stays down for a minute). `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 3
test: lint venv-test system-deps
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: venv-test
	$(BIN)/python -m pytest -m "not slow"

bench: venv-train system-deps
	$(BIN)/python -m tools.bench

# Issue 22's disk soak: 3 looping file cameras with clips for SOAK_MINUTES under small caps, the storage
# folder sampled every second; JSON in var/disk_soak/<time>/ (docs/soak.md). The memory soak: scripts/soak.py.
SOAK_MINUTES ?= 30
soak: venv
	$(BIN)/python -m tools.disk_soak --minutes $(SOAK_MINUTES)

# Issue 25's archive numbers (docs/performance.md, "A season's archive on Ray"): 2,000 photos through
# `detect --json` in one process and `detect DIR --recursive --ray`, then killed halfway and rerun.
bench-archive: venv-test
	$(BIN)/python -m tools.bench_archive --output var/bench_archive/report.json

# Event-level evaluation (train/README.md, "Clips: event-level evaluation"): validation clips built
# from validation photos, then the real pipeline on them with $(CONFIG) and the shipped model.
CLIPS_DIR ?= var/clips/val
clips: venv system-deps
	$(BIN)/python -m tools.make_clips --output $(CLIPS_DIR)

eval-clips: venv
	@test -f $(CLIPS_DIR)/clips.csv || $(MAKE) clips
	$(BIN)/python -m tools.eval_clips --clips $(CLIPS_DIR)/clips.csv --config $(CONFIG) \
		--output $(CLIPS_DIR)/report.json

train: venv-train
	$(BIN)/python -m train all

# ruff and mypy over the package and train/, configured in pyproject.toml; `make test` runs it first
lint: venv-test
	$(BIN)/ruff check raccoon_watch train
	$(BIN)/mypy

install-service: venv
	scripts/install-service.sh

clean:
	rm -rf $(VENV) var build *.egg-info
