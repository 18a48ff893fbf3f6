# mlops-kit: everything runs inside a local virtual environment, .venv/, created on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run test lab check-export clean-runs

# (Re)install when the package metadata changes.
$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

## The main job: a full lifecycle pipeline run on the default course data.
run: $(STAMP)
	$(BIN)/mlops-kit run

## The whole test suite: notebooks in sync with the library, notebook tests, pytest.
test: $(STAMP) check-export
	$(BIN)/nbdev-test --n-workers 2
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # 2 workers, one test file each: the CI machine has 2 cores

# Fails when nbdev-export or nbdev-clean would change a file under nbs/ or mlops_kit/.
check-export: $(STAMP)
	$(BIN)/python tools/check_export.py $(BIN)

## Open the course in JupyterLab (on 127.0.0.1).
lab: $(STAMP)
	$(BIN)/jupyter lab --ip 127.0.0.1 --notebook-dir nbs

clean-runs:
	rm -rf runs
