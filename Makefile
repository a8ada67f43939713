# The README's two commands: `make demo` (the main job) and `make test` (every test).
# Both set up .venv first (scripts/setup.sh) when pyproject.toml is newer than it.
VENV ?= .venv
BIN := $(VENV)/bin
# Data: RKDSC_DATA_DIR wins; otherwise the project's shared CIFAR-10 copy, if present.
RKDSC_DATA_DIR ?= $(wildcard $(abspath ../shared/datasets/cifar10/cifar10-jpeg.tar.gz))
ifneq ($(RKDSC_DATA_DIR),)
export RKDSC_DATA_DIR
endif

.PHONY: setup demo test lint weights ship-weights ship-link sweep-docs sweep-full sweep-full-docs ship-nas teacher-weights results reproduce
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

# The shipped links, from the shipped teacher (FastNet; resumable: rerun after an
# interruption): make reproduce's stages with a 3-epoch stage 2 and the published DARTS_V2
# genotype instead of a search. Then ship-weights copies the RKD link (the default) and its
# two baselines into rkdsc_core/weights with their model cards (the teacher's own codec, the
# sweep's upper reference, stays in SHIP_RUNS: it would add the teacher's 6 MB again), and
# the sweep, the comparison and the targets into docs/results/sweep.
MACHINE ?= $(shell getconf _NPROCESSORS_ONLN)-core $(shell uname -m) CPU
SHIP_RUNS ?= runs/weights
SHIP_TEACHER ?= rkdsc_core/weights/teacher/teacher
weights: setup
	PATH="$(abspath $(BIN)):$$PATH" TEACHER=$(SHIP_TEACHER) \
	  GENOTYPE=darts_v2 STUDENT_EPOCHS=30 CODEC_EPOCHS=3 SWEEP_LIMIT=1000 \
	  scripts/reproduce.sh $(SHIP_RUNS)
	$(MAKE) ship-weights

ship-weights: setup
	@for f in rkd/weights/link.json stage1-only/weights/link.json ce-only/weights/link.json \
	  sweep/sweep.json sweep/sweep.csv; do test -f $(SHIP_RUNS)/$$f || \
	  { echo "ship-weights: $(SHIP_RUNS)/$$f is missing; nothing was changed"; exit 2; }; done
	for pair in rkd:default stage1-only:stage1-only ce-only:ce-only; do \
	  dest=rkdsc_core/weights/$${pair#*:}; rm -rf $$dest; \
	  cp -r $(SHIP_RUNS)/$${pair%%:*}/weights $$dest || exit 1; \
	  $(BIN)/python scripts/model_card.py $$dest --machine "$(MACHINE)" || exit 1; \
	done
	rm -rf docs/results/sweep; mkdir -p docs/results/sweep
	cp $(SHIP_RUNS)/sweep/sweep.csv $(SHIP_RUNS)/sweep/sweep.json $(SHIP_RUNS)/sweep/*.png docs/results/sweep/
	$(MAKE) sweep-docs

# One baseline link retrained on its own (the CE-only one at the RKD link's budget, say):
# ship its weights with their model card and swap its rows into the shipped sweep (`eval
# sweep --update`: the same images and noise, the other systems kept), then the docs:
#   make ship-link LINK=ce-only LINK_RUN=runs/ce33
# LINK is both the shipped folder and the sweep's system: stage1-only or ce-only (the RKD
# link is the digital baselines' reference: `make weights` redoes everything for it). The
# update runs first, so a refused one leaves the shipped weights as they were.
ship-link: setup
	@case "$(LINK)" in stage1-only|ce-only) ;; *) \
	  echo "ship-link: LINK must be stage1-only or ce-only, got '$(LINK)'"; exit 2;; esac
	@test -f "$(LINK_RUN)/weights/link.json" || \
	  { echo "usage: make ship-link LINK=ce-only LINK_RUN=<a run folder with weights/>"; exit 2; }
	$(BIN)/rkdsc eval sweep --update --out docs/results/sweep \
	  --weights $(LINK)=$(LINK_RUN)/weights > /dev/null
	rm -rf rkdsc_core/weights/$(LINK); cp -r $(LINK_RUN)/weights rkdsc_core/weights/$(LINK)
	$(BIN)/python scripts/model_card.py rkdsc_core/weights/$(LINK) --machine "$(MACHINE)"
	$(MAKE) sweep-docs

# The paper's targets read off a sweep (add --sweep and --out): the shipped teacher and
# link, and the KDL-DARTS lambda tables of every search seed, pooled.
TARGETS = $(BIN)/rkdsc eval targets --teacher $(SHIP_TEACHER) --link rkdsc_core/weights/default \
  $(foreach d,$(wildcard docs/results/nas/sweep.json docs/results/nas-search-seed*/sweep.json),--nas $(dir $(d)))

# docs/results/sweep's comparison tables and targets, read off its sweep.json.
sweep-docs: setup
	for n in 8 64; do $(BIN)/rkdsc eval compare --sweep docs/results/sweep --length $$n \
	  --snr-db=-10 --snr-db=-4 --snr-db=0 --snr-db=4 --snr-db=10 --snr-db=20 || exit 1; \
	  done > docs/results/sweep/compare.md
	$(BIN)/rkdsc eval plot --sweep docs/results/sweep
	$(TARGETS) --sweep docs/results/sweep --out docs/results/sweep/targets.md

# The low-SNR verdict on all 10,000 test images (the sweep above has 1,000): the shipped
# links at L = 64 with pilot CSI, -10..4 dB and 20 dB (37 min on this CPU beside other
# work), then its margins and the targets read off it.
FULL := docs/results/sweep-full
sweep-full: setup
	$(BIN)/rkdsc eval sweep --limit 10000 --no-digital --out $(FULL) --knowledge pilot \
	  --length 64 --channel awgn --channel rayleigh \
	  $(foreach s,-10 -8 -6 -4 -2 0 2 4 20,--snr-db=$(s)) \
	  --weights rkd=rkdsc_core/weights/default \
	  --weights stage1-only=rkdsc_core/weights/stage1-only \
	  --weights ce-only=rkdsc_core/weights/ce-only > /dev/null
	$(MAKE) sweep-full-docs

sweep-full-docs: setup
	$(BIN)/rkdsc eval margins --sweep $(FULL) --against stage1-only --against ce-only \
	  --knowledge pilot --max-snr-db 5 > $(FULL)/margins.md
	$(BIN)/rkdsc eval plot --sweep $(FULL)
	$(TARGETS) --sweep $(FULL) --out $(FULL)/targets.md

# The KDL-DARTS lambda table of a run (`rkdsc nas sweep` in NAS_RUN) into NAS_DOCS: the
# table, the command, each row's genotype as <row>.json (a --genotype for `rkdsc train
# student`) and every protocol run as <folder>.eval-seed<N>.json (rows, and references such
# as `rkdsc nas evaluate --genotype darts_v2 --out SHIP_RUNS/nas/darts_v2`). The sweep at
# search seed N (`nas sweep --seed N`) goes to docs/results/nas-search-seedN:
#   make ship-nas NAS_RUN=runs/nas-seed1 NAS_DOCS=docs/results/nas-search-seed1
# ship-weights then checks the two KDL-DARTS targets on all of them, pooled.
NAS_RUN ?= $(SHIP_RUNS)/nas
NAS_DOCS ?= docs/results/nas
ship-nas:
	@for f in sweep.json sweep.md sweep-command.txt; do test -f $(NAS_RUN)/$$f || \
	  { echo "ship-nas: $(NAS_RUN)/$$f is missing (run rkdsc nas sweep there); nothing was changed"; \
	    exit 2; }; done
	rm -rf $(NAS_DOCS); mkdir -p $(NAS_DOCS)
	cp $(NAS_RUN)/sweep.json $(NAS_RUN)/sweep.md $(NAS_RUN)/sweep-command.txt $(NAS_DOCS)/
	for row in $(NAS_RUN)/*/row.json; do d=$$(dirname $$row); \
	  cp $$d/genotype.json $(NAS_DOCS)/$$(basename $$d).json || exit 1; done
	for f in $(NAS_RUN)/*/eval-seed*.json; do \
	  cp $$f $(NAS_DOCS)/$$(basename $$(dirname $$f)).$$(basename $$f) || exit 1; done

# Ship the reproduction's teacher (FastNet, the default of `rkdsc train teacher`): fp16
# weights, re-measured accuracy, model card.
teacher-weights: setup
	$(BIN)/python scripts/ship_teacher.py runs/reproduce/teacher/teacher rkdsc_core/weights/teacher --machine "$(MACHINE)"

# The whole training recipe and its sweep (hours on a CPU; resumable: rerun to continue).
reproduce: setup
	PATH="$(abspath $(BIN)):$$PATH" scripts/reproduce.sh runs/reproduce

# The README's results section: demo sweeps (fixed and adaptive) and Prometheus figures.
results: setup
	VENV=$(VENV) scripts/measure_readme.sh docs/results
