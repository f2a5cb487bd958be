# Two commands do all set-up: `make run` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.xdetox-installed
# torch is pinned explicitly: an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
RUN_ARGS ?=

.PHONY: install run test docs clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/xdetox run $(RUN_ARGS)

# The docs build first (seconds), so pytest's summary stays the last line; --strict fails on a broken link,
# a missing anchor or a page of docs/ left out of mkdocs.yml's nav.
test: $(STAMP) docs
	$(VENV)/bin/python -m pytest -q -ra -n auto --dist loadfile

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache
