# Two commands do all set-up: `make run` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.xdetox-installed
# torch is pinned explicitly: an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
RUN_ARGS ?=

.PHONY: install run test clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/xdetox run $(RUN_ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -ra

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
