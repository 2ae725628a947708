# Two commands on a fresh machine:  `make lab` (the course) and `make test` (everything, incl. notebooks).
# Both create .venv if missing and install once; a second run installs nothing and starts in seconds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KERNEL := vgg-course
STAMP := $(VENV)/.installed
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup lab test lint fork-url clean

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

# For forks: point every Colab badge and setup cell at your repository, e.g.
#   make fork-url URL=https://github.com/you/vgg-close-reading
fork-url:
	@test -n "$(URL)" || { echo "usage: make fork-url URL=https://github.com/<you>/<repo>"; exit 2; }
	$(PYTHON) -m vgg_utils.fork "$(URL)"

clean:
	rm -rf $(VENV)
