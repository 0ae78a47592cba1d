# The README's two commands: `make course` and `make test`. Each creates/updates .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PRESET ?= tiny
# Parallel test workers; CI has 2 cores.
JOBS   ?= 2

.PHONY: help install test test-fast test-unit course exercises notebooks lab clean bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

# Installs with constraints.txt, the one place where versions (torch==2.13.0, the CPU build) are pinned.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[course,dev,hf,triton]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(VENV)/.installed  ## create .venv and install minillama with all extras

test: $(VENV)/.installed  ## the whole suite: the package's floors (import-linter), pytest and nbval over the notebooks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n $(JOBS) --durations=15 tests
	@if ls notebooks/*.ipynb solutions/*.ipynb >/dev/null 2>&1; then \
	  OMP_NUM_THREADS=1 $(PY) -m pytest -n $(JOBS) --dist loadscope --nbval --nbval-sanitize-with .nbval-sanitize.cfg -p no:randomly notebooks solutions; \
	fi

test-fast: $(VENV)/.installed  ## pytest without the slow tests
	$(PY) -m pytest -n $(JOBS) -m "not slow" tests

test-unit: $(VENV)/.installed  ## pytest on the unit tests only (no stage, command or pipeline run end to end)
	$(PY) -m pytest -n $(JOBS) -m unit tests

course: $(VENV)/.installed  ## the end-to-end course pipeline on the tiny preset; writes runs/course/report.md
	$(PY) -m minillama course --preset $(PRESET) --out runs/course

exercises: $(VENV)/.installed  ## regenerate exercises/ from solutions/
	$(PY) -m minillama.grading.exercises solutions exercises

notebooks: $(VENV)/.installed  ## re-execute every chapter and solution notebook in place (outputs are committed)
	$(PY) -m minillama.notebook_tools notebooks/*.ipynb solutions/*.ipynb

lab: $(VENV)/.installed  ## start JupyterLab at the course
	$(VENV)/bin/jupyter lab notebooks/00_tour.ipynb

bench: $(VENV)/.installed  ## model throughput and attention benchmarks (CPU here; GPU where there is one)
	$(PY) -m minillama bench model
	$(PY) -m minillama bench attention

clean:  ## remove the virtual environment and caches (keeps runs/)
	rm -rf $(VENV) .pytest_cache .hypothesis .import_linter_cache
