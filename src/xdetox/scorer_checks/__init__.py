"""Behavioural checks for toxicity scorers, in the spirit of CheckList (Ribeiro et al., 2020).

Every toxicity number of the project is read through a scorer, so the scorers get their own
functional test suite: short, hand-templated cases in each of the 9 languages, grouped by
*functionality* (what the case tests), each group either all benign or all toxic. The cases
ship in ``resources/scorer_checks/`` (``<lang>.jsonl``, built from ``templates.json``).

Rooms:

* ``suite``: the cases: ``FUNCTIONALITIES`` and their labels, ``Case``, ``expand_template`` and
  ``build_suite`` (templates -> cases, deterministic), ``load_templates``, ``load_suite``,
  ``write_suite``, and ``main``: ``python -m xdetox.scorer_checks build [--out DIR]`` rewrites the
  shipped JSONL files from the templates;
* ``transforms``: ``TRANSFORMS``, the obfuscations a template may apply to a word;
* ``parallel``: ``load_parallel(1, 2 or 3)``, ``run_parallel`` (the same benign sentences and insults in
  all 9 languages, three sets: per language the mean score, its spread over languages and the spread's
  bootstrap interval, ``spread_interval``), ``format_parallel``, ``PARALLEL_FILES``, ``PARALLEL_TITLES``,
  ``parallel_key``;
* ``run``: ``run_checks(scorer, langs)`` (accuracy at ``THRESHOLD`` and ROC-AUC per language,
  per functionality and overall; JSON-serialisable), ``format_checks`` (plain-text tables),
  ``weakest_functionalities``.

Running the suite is ``xdetox scorer check``; every name below is importable from
``xdetox.scorer_checks`` itself.
"""

from xdetox.scorer_checks.parallel import (PARALLEL_FILE, PARALLEL_FILES, PARALLEL_TITLES, ParallelCase, format_parallel,
                                           load_parallel, parallel_key, run_parallel, spread_interval)
from xdetox.scorer_checks.run import THRESHOLD, format_checks, run_checks, weakest_functionalities
from xdetox.scorer_checks.suite import (BENIGN_SHORT, FUNCTIONALITIES, MIN_CASES, MIN_CASES_EXCEPTIONS, RESOURCE_DIR,
                                        TEMPLATES_FILE, TOXIC_FUNCTIONALITIES, Case, build_suite, case_to_json,
                                        expand_template, load_suite, load_templates, main, suite_langs, write_suite)
from xdetox.scorer_checks.transforms import TRANSFORMS

__all__ = [
    "BENIGN_SHORT", "FUNCTIONALITIES", "MIN_CASES", "MIN_CASES_EXCEPTIONS", "PARALLEL_FILE", "PARALLEL_FILES",
    "PARALLEL_TITLES", "RESOURCE_DIR", "TEMPLATES_FILE", "ParallelCase", "format_parallel", "load_parallel",
    "parallel_key", "run_parallel", "spread_interval",
    "THRESHOLD", "TOXIC_FUNCTIONALITIES", "TRANSFORMS", "Case", "build_suite", "case_to_json", "expand_template",
    "format_checks", "load_suite", "load_templates", "main", "run_checks", "suite_langs", "weakest_functionalities",
    "write_suite",
]
