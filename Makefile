# The whole set-up on a fresh machine: `make reproduce` runs the main job (PRESET=smoke|tiny|paper), `make test` runs every test.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install reproduce plan lane figures demo test slow test-site export clean-nbs readme bench docs base

$(STAMP): settings.ini setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# CPU build of torch first: an unpinned torch on a fresh venv pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/sftrl reproduce --preset $(or $(PRESET),tiny)

# Every task's lane (its SFT, Init, RL and the evaluations of Figs. 5-8) at the preset's seeds, how far and its time left,
# and the seeds each figure is drawn at;
# nothing run; `make lane TASK=gp-l` runs one, continuing where it stopped (two lanes side by side use the two cores).
plan: $(STAMP)
	$(BIN)/sftrl reproduce --plan --preset $(or $(PRESET),tiny)

lane: $(STAMP)
	$(BIN)/sftrl lane $(or $(TASK),$(error give the lane's task: make lane TASK=gp-l)) --preset $(or $(PRESET),tiny) --seed $(or $(SEED),0)

# Redraw every committed figure as its CSV records it was drawn (preset, seeds, parameters), from the ledger: minutes, no training.
figures: $(STAMP)
	$(BIN)/sftrl reproduce --redraw

# Rebuild the tiny text and vision bases and commit them to ledger/base/ (after a change to the base chapters;
# about 20 and 60 min on 2 cores); `git add ledger` afterwards. A fresh clone finds them there instead of training.
base: $(STAMP)
	$(BIN)/sftrl base --size tiny --rebuild
	$(BIN)/sftrl base --size tiny --vision --rebuild

demo: $(STAMP)
	$(BIN)/sftrl demo --out figures/demo
	$(BIN)/sftrl demo --vision --out figures/demo-vl

# One torch thread per process: the tests' models are tiny and run two at a time (nbdev_test's workers,
# 2-process accelerate runs, kernels); two threads each on 2 cores made generation about 4x slower (measured).
test: export OMP_NUM_THREADS = 1
# One cache of base models for every test, whatever its working directory (nbdev_test runs in nbs/).
test: export SFTRL_RUNS = $(CURDIR)/runs
test: $(STAMP)
	# experiment notebooks run through papermill with the smoke preset (tests/test_experiments.py), not here
	$(BIN)/nbdev_test --n_workers 2 --do_print --skip_folder_re '^([_.]|experiments$$)'
	# two workers, a test file each at a time (a file's module fixtures are built once)
	$(BIN)/pytest -q -n 2 --dist loadfile tests

# Tests that take minutes (marked `slow`), e.g. PPO raising ID success from the tiny GP-L SFT checkpoint.
slow: export OMP_NUM_THREADS = 1
slow: export SFTRL_RUNS = $(CURDIR)/runs
slow: $(STAMP)
	$(BIN)/pytest -q -m slow tests

export: $(STAMP)
	$(BIN)/nbdev_export

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

readme: $(STAMP)
	$(BIN)/jupyter nbconvert --to markdown --output-dir . --output README nbs/index.ipynb

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# The whole site built and read in headless Chromium (tests/test_docs.py); `make test` builds one chapter only.
test-site: $(STAMP)
	$(BIN)/pytest -q -m site tests/test_docs.py

# The site, from the notebooks (Sphinx + myst-nb, executed and cached): _build/site/index.html.
docs: $(STAMP)
	$(BIN)/python docs/build.py _build/site
