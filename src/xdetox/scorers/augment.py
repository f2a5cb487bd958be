"""Training augmentation for the toxicity scorers: short templated cases, written for xdetox.

What: ``resources/scorer_train/templates.json``, a set of templates and word lists in the 9
languages, in the same format as the behavioural suite's (``resources/scorer_checks``) and built
by the same machinery (``xdetox.scorer_checks.suite.build_suite``), deterministically.  Nine
groups per language, with the suite's functionality names and labels: ``threat``,
``dehumanisation``, ``direct_insult`` and ``profanity_untargeted`` (toxic); ``negated_insult``,
``quoted_insult``, ``identity_neutral``, ``greeting`` and ``short_benign_phrase`` (benign).

Why: the scorers' training corpora (ParaDetox and the bundled toxicity corpus) hold almost no
threats, no dehumanising statements about identity groups and few insults under negation or in
quotes, so the offline scorer fails those groups of the suite.  These cases teach the patterns.

The suite must stay a fair test, so the training set is disjoint from it: its templates, texts,
threat phrases and dehumanising nouns differ from the suite's, and most of its insult words too
(``resources/scorer_train/README.md``; ``tests/test_scorer_augment.py`` checks every rule).

* ``augmentation_cases(langs)``: the cases (``Case``), in language then group order (cached);
* (``xdetox.scorers.offline.data.augmentation_rows`` turns them into the offline scorer's
  labelled texts.)

Importing this module loads no model library (no torch, no scikit-learn).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from xdetox.scorer_checks.suite import Case, build_suite, load_templates, suite_langs

RESOURCE_DIR = ("resources", "scorer_train")
TEMPLATES_FILE = "templates.json"
SOURCE_PREFIX = "augment/"
"""``LabelledText.source`` of an augmentation row: ``augment/<functionality>``."""


def train_templates_path():
    """The training set's ``templates.json`` (an ``importlib.resources`` file)."""
    return files("xdetox").joinpath(*RESOURCE_DIR, TEMPLATES_FILE)


@functools.lru_cache(maxsize=1)
def train_templates() -> dict[str, Any]:
    """The parsed training ``templates.json`` (cached; do not modify it)."""
    return load_templates(train_templates_path())


def train_functionalities() -> tuple[str, ...]:
    """The groups the training set declares, in the suite's report order."""
    return tuple(f["name"] for f in train_templates()["functionalities"])


@functools.lru_cache(maxsize=1)
def _all_cases() -> tuple[Case, ...]:
    return tuple(build_suite(train_templates(), train_functionalities()))


@functools.lru_cache(maxsize=16)
def _cases_of(langs: tuple[str, ...]) -> tuple[Case, ...]:
    wanted = set(langs)
    return tuple(case for case in _all_cases() if case.lang in wanted)


def augmentation_cases(langs: Iterable[str] | str | None = None) -> list[Case]:
    """The training cases of ``langs`` (a code, codes, or None: all 9), in language then group order.

    Deterministic; built once and cached.  ``XdetoxInputError`` for an unknown language.
    """
    return list(_cases_of(tuple(suite_langs(langs))))
