# Two commands on a fresh machine:  `make lab` (the course) and `make test` (everything, incl. notebooks).
# Both create .venv if missing and install once; a second run installs nothing and starts in seconds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KERNEL := vgg-course
STAMP := $(VENV)/.installed
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup lab test lint fork-url clean gpu-suite mutation

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the declared dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m ipykernel install --user --name $(KERNEL) --display-name "Python (VGG course)"
	touch $(STAMP)

lab: setup
	$(BIN)/python -m jupyterlab --notebook-dir=notebooks $(LAB_ARGS)

test: setup
	$(BIN)/python -m ruff check vgg_utils tests benchmarks notebooks
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/python -m ruff check vgg_utils tests benchmarks notebooks

# The GPU suite (README "GPU suite"): time to accuracy, loader ratio, ablation grid, ~9 min on one
# H100/H200; GPU_SUITE_ARGS="--smoke" runs it on tiny sizes on a CPU. No `setup` dependency: on a
# GPU machine without the venv it runs with the machine's own python3 and torch.
GPU_SUITE_ARGS ?=
gpu-suite:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_suite.py $(GPU_SUITE_ARGS)

# Mutation testing (README "Mutation scores"; not part of CI): mutmut puts one small bug at a
# time into a copy of each module that decides what a learner sees and runs that module's fast
# tests; scores go to mutation/scores.csv, survivors to mutation/work/<module>/survivors.txt.
# Measured on two quiet cores: 1-4 min per module at a seeded sample of 60 mutants (augment 55 s,
# models 230 s), so all fifteen modules take about 30-60 min; MUTATION_ARGS="--sample 0" tests every mutant
# (much longer). MUTATION_MODULES="augment training" runs only those.
MUTATION_MODULES ?=
MUTATION_ARGS ?=
mutation: setup
	$(BIN)/python -c "import mutmut" 2>/dev/null || $(BIN)/python -m pip install "mutmut>=3.8"
	nice -n 10 $(BIN)/python mutation/run.py $(MUTATION_ARGS) $(MUTATION_MODULES)

# For forks: point every Colab badge and setup cell at your repository, e.g.
#   make fork-url URL=https://github.com/you/vgg-close-reading
fork-url:
	@test -n "$(URL)" || { echo "usage: make fork-url URL=https://github.com/<you>/<repo>"; exit 2; }
	$(PYTHON) -m vgg_utils.fork "$(URL)"

clean:
	rm -rf $(VENV)
