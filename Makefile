# Two commands on a fresh machine:  `make lab` (the course) and `make test` (everything, incl. notebooks).
# Both create .venv if missing and install once; a second run installs nothing and starts in seconds.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
KERNEL := vgg-course
STAMP := $(VENV)/.installed
LAB_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup lab test lint fork-url clean gpu-suite mutation test-oldest oldest-env oldest-tests

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the declared dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[dev]"
	$(BIN)/python -m ipykernel install --user --name $(KERNEL) --display-name "Python (VGG course)"
	touch $(STAMP)

# No news pop-up and no update check for learners (JupyterLab 4). The prompt "Would you like to get
# notified about official Jupyter news?" appears while the setting fetchNews is "none" (its default),
# so lab-settings/overrides.json makes it "false" (and checkForUpdates false); the server also
# fetches no news feed and checks no version. tests/test_lab.py checks these names against the
# installed JupyterLab and asks the running server what it serves.
LAB_QUIET := --LabApp.news_url=None \
	--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate \
	"--LabApp.app_settings_dir=$(CURDIR)/lab-settings"

lab: setup
	$(BIN)/python -m jupyterlab --notebook-dir=notebooks $(LAB_QUIET) $(LAB_ARGS)

test: setup
	$(BIN)/python -m ruff check vgg_utils tests benchmarks notebooks mutation
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/python -m ruff check vgg_utils tests benchmarks notebooks mutation

# Lower bounds that are tested (README "Tests and CI"): a second venv with the OLDEST versions
# pyproject.toml allows (.ci/oldest_constraints.py pins each `name>=X` at X, prints what it
# installed, and re-installs only when those pins change) runs ruff and the unit tests selected
# below (OLDEST_TESTS minus OLDEST_DESELECT; everything runs in `make test`).
# CI keeps the venv across clones: VENV_OLDEST=$HOME/.cache/vgg-course/venv-oldest.
VENV_OLDEST ?= .venv-oldest
# The selection: the tests of every module whose work goes through a library with a declared
# bound (torch, torchvision, numpy, pandas, matplotlib, scikit-image, torchinfo, nbclient,
# nbconvert, JupyterLab). Left out (all run in `make test`): whole notebooks in kernels, the
# learning tests (trainings, the experiments grid, the shapes96 randomisation claim), the GPU
# suite's CPU smoke run, a second (subprocess) build of a course model, and the tests of the
# course's own logic that call no bounded library beyond what the selection covers (command line,
# downloads over loopback, exercise judges, layout, hidden-state and property tests).
OLDEST_TESTS ?= tests/test_configs.py tests/test_models.py tests/test_profiling.py tests/test_receptive.py \
	tests/test_augment.py tests/test_data.py tests/test_training.py tests/test_dense.py tests/test_scenes.py \
	tests/test_interpret.py tests/test_explain_metrics.py tests/test_transfer.py tests/test_transfer_data.py \
	tests/test_course_models.py tests/test_runtime.py tests/test_setup.py tests/test_plots.py \
	tests/test_latency.py tests/test_zoo.py tests/test_image_grid.py tests/test_notebook_runner.py \
	tests/test_lab.py tests/test_progress.py
OLDEST_DESELECT ?= --deselect tests/test_data.py::test_a_small_vgg_learns_the_shapes \
	--deselect tests/test_training.py::test_vgg_a_learns_real_cifar10_images \
	--deselect tests/test_course_models.py::test_build_command_line_smoke \
	--deselect tests/test_explain_metrics.py::test_randomising_shapes96
OLDEST_PYTEST_ARGS ?=
test-oldest: oldest-env oldest-tests

# The two halves, for CI (which runs the tests beside `make test`): the venv, then the tests.
oldest-env:
	$(PYTHON) .ci/oldest_constraints.py --venv $(VENV_OLDEST)

oldest-tests:
	$(VENV_OLDEST)/bin/python -m ruff check vgg_utils tests benchmarks notebooks mutation
	VGG_OLDEST=1 $(VENV_OLDEST)/bin/python -m pytest $(OLDEST_TESTS) -p no:cacheprovider $(OLDEST_DESELECT) $(OLDEST_PYTEST_ARGS)

# The GPU suite (README "GPU suite"): time to accuracy, loader ratio, ablation grid, ~9 min on one
# H100/H200; GPU_SUITE_ARGS="--smoke" runs it on tiny sizes on a CPU. No `setup` dependency: on a
# GPU machine without the venv it runs with the machine's own python3 and torch.
GPU_SUITE_ARGS ?=
gpu-suite:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_suite.py $(GPU_SUITE_ARGS)

# Mutation testing (README "Mutation scores"; not part of CI): mutmut puts one small bug at a
# time into a copy of each module that decides what a learner sees and runs that module's fast
# tests; scores go to mutation/scores.csv, survivors to mutation/work/<module>/survivors.txt.
# Measured on two cores (README "Mutation scores"): all seventeen modules in 26.8 min at the default
# seeded sample of 30 mutants per module (51-205 s each), 48 min with MUTATION_ARGS="--sample 60";
# MUTATION_ARGS="--seed 1" draws another sample, "--sample 0" tests every mutant (hours).
# MUTATION_MODULES="augment training" runs only those.
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

# The whole course as browsable HTML (build/html/index.html: each notebook with its time and peak
# memory), executed in the CI size; `vgg-course run --html DIR` without --fast for the default size.
.PHONY: html
html: setup
	$(BIN)/vgg-course run --fast --html build/html

clean:
	rm -rf $(VENV)
