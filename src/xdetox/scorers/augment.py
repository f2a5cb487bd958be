"""Training augmentation for the toxicity scorers: short templated cases, written for xdetox.

What: ``resources/scorer_train/templates.json`` (version 2; ``templates-v1.json`` is version 1, kept
for the scorers trained on it), a set of templates and word lists in the 9
languages, in the same format as the behavioural suite's (``resources/scorer_checks``) and built
by the same machinery (``xdetox.scorer_checks.suite.build_suite``), deterministically.  Ten
groups per language, with the suite's functionality names and labels: ``threat``,
``dehumanisation``, ``direct_insult``, ``obfuscated_insult`` and ``profanity_untargeted`` (toxic);
``negated_insult``, ``quoted_insult``, ``identity_neutral``, ``greeting`` (farewells included) and
``short_benign_phrase`` (benign).

Why: the scorers' training corpora (ParaDetox and the bundled toxicity corpus) hold almost no
threats, no dehumanising statements about identity groups and few insults under negation or in
quotes, so the offline scorer fails those groups of the suite.  These cases teach the patterns.

The suite must stay a fair test, so the training set is disjoint from it: its templates, texts,
threat phrases and dehumanising nouns differ from the suite's, and most of its insult words too
(``resources/scorer_train/README.md``; ``tests/test_scorer_augment.py`` checks every rule).

* ``augmentation_cases(langs, version)``: the cases (``Case``), in language then group order (cached);
* ``augmentation_digest(version)``: sha256 over every case, part of the cache key of each scorer
  trained on them (another set of cases is another model);
* (``xdetox.scorers.offline.data.augmentation_rows`` turns them into the offline scorer's
  labelled texts.)

Importing this module loads no model library (no torch, no scikit-learn).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from xdetox.errors import XdetoxInputError
from xdetox.scorer_checks.suite import Case, build_suite, load_templates, suite_langs

RESOURCE_DIR = ("resources", "scorer_train")
VERSIONS = {1: "templates-v1.json", 2: "templates.json"}
"""Each version of the set and its file. A version never changes once a model is trained on it:
a change is a new version (and a new file), so the scorers trained on an older one keep their model."""
LATEST = max(VERSIONS)
SOURCE_PREFIX = "augment/"
"""``LabelledText.source`` of an augmentation row: ``augment/<functionality>``."""


def check_version(version: int) -> int:
    """``version`` if the set has it; ``XdetoxInputError`` otherwise."""
    if version not in VERSIONS:
        raise XdetoxInputError(f"no training augmentation version {version!r}; there are {sorted(VERSIONS)}")
    return version


def train_templates_path(version: int = LATEST):
    """The ``templates.json`` of a version of the training set (an ``importlib.resources`` file)."""
    return files("xdetox").joinpath(*RESOURCE_DIR, VERSIONS[check_version(version)])


@functools.lru_cache(maxsize=4)
def train_templates(version: int = LATEST) -> dict[str, Any]:
    """The parsed training ``templates.json`` of ``version`` (cached; do not modify it)."""
    return load_templates(train_templates_path(version))


def train_functionalities(version: int = LATEST) -> tuple[str, ...]:
    """The groups the training set declares, in the suite's report order."""
    return tuple(f["name"] for f in train_templates(version)["functionalities"])


@functools.lru_cache(maxsize=4)
def _all_cases(version: int) -> tuple[Case, ...]:
    return tuple(build_suite(train_templates(version), train_functionalities(version)))


@functools.lru_cache(maxsize=16)
def _cases_of(langs: tuple[str, ...], version: int) -> tuple[Case, ...]:
    wanted = set(langs)
    return tuple(case for case in _all_cases(version) if case.lang in wanted)


def augmentation_cases(langs: Iterable[str] | str | None = None, version: int = LATEST) -> list[Case]:
    """The training cases of ``langs`` (a code, codes, or None: all 9), in language then group order.

    Deterministic; built once and cached.  ``XdetoxInputError`` for an unknown language or version.
    """
    return list(_cases_of(tuple(suite_langs(langs)), check_version(version)))


@functools.lru_cache(maxsize=4)
def augmentation_digest(version: int = LATEST) -> str:
    """sha256 (hex) over every case's language, group, label and text: what a model trained on them saw."""
    digest = hashlib.sha256()
    for case in _all_cases(check_version(version)):
        digest.update(f"{case.lang}\t{case.functionality}\t{int(case.toxic)}\t{case.text}\n".encode())
    return digest.hexdigest()
