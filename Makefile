# The README's two commands: `make demo` (the main job) and `make test` (every test).
# Both set up .venv first (scripts/setup.sh) when pyproject.toml is newer than it.
VENV ?= .venv
BIN := $(VENV)/bin
# Data: RKDSC_DATA_DIR wins; otherwise the project's shared CIFAR-10 copy, if present.
RKDSC_DATA_DIR ?= $(wildcard $(abspath ../shared/datasets/cifar10/cifar10-jpeg.tar.gz))
ifneq ($(RKDSC_DATA_DIR),)
export RKDSC_DATA_DIR
endif

.PHONY: setup demo test lint weights teacher-weights results reproduce
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	scripts/setup.sh dev $(VENV)
	touch $@

demo: setup
	$(BIN)/rkdsc demo

test: setup
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check rkdsc_core services tests bench examples scripts deploy
	$(BIN)/ruff format --check rkdsc_core services tests bench examples scripts deploy
	$(BIN)/mypy rkdsc_core services
	$(BIN)/python scripts/gen_proto.py --check

# Retrain the shipped bootstrap link (resumable: rerun after an interruption), then its card.
MACHINE ?= $(shell getconf _NPROCESSORS_ONLN)-core $(shell uname -m) CPU
weights: setup
	$(BIN)/rkdsc train link --out runs/bootstrap --epochs 10 --weights-out rkdsc_core/weights/default
	$(BIN)/python scripts/model_card.py rkdsc_core/weights/default --machine "$(MACHINE)"

# The README's results section: demo sweeps (fixed and adaptive) and Prometheus figures.
# Ship the reproduction's teacher: fp16 weights, re-measured accuracy, model card.
teacher-weights: setup
	$(BIN)/python scripts/ship_teacher.py runs/reproduce/teacher/teacher rkdsc_core/weights/teacher --machine "$(MACHINE)"

# The whole training recipe and its sweep (hours on a CPU; resumable: rerun to continue).
reproduce: setup
	PATH="$(abspath $(BIN)):$$PATH" scripts/reproduce.sh runs/reproduce

results: setup
	scripts/measure_readme.sh docs/results
