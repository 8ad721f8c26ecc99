# raccoon_watch: `make run` to watch, `make test` to test. Everything installs into ./.venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.example.yaml
export RACCOON_SHARED ?= $(abspath ../shared)

.PHONY: venv system-deps run test test-fast bench soak train install-service lint clean

$(VENV)/.installed: setup.cfg pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[cpu,train,test]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	@scripts/install-system-deps.sh

run: venv
	$(BIN)/raccoon-watch run --config $(CONFIG) --demo-if-no-camera

test: venv system-deps
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest -m "not slow"

bench: venv system-deps
	$(BIN)/python -m tools.bench

train: venv
	$(BIN)/python -m train all

install-service: venv
	scripts/install-service.sh

clean:
	rm -rf $(VENV) var build *.egg-info
