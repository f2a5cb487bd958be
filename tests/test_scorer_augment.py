"""The scorer training-augmentation set (resources/scorer_train): counts, labels, disjointness
from the behavioural suite (rules a-d of its README), determinism, scripts, rows."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorer_checks import FUNCTIONALITIES, TOXIC_FUNCTIONALITIES, build_suite, load_suite, load_templates
from xdetox.scorers.augment import (
    augmentation_cases,
    train_functionalities,
    train_templates,
    train_templates_path,
)
from xdetox.scorers.offline.data import augmentation_rows
from xdetox.text import SCRIPTS, dominant_script, normalize

GROUPS = ("greeting", "short_benign_phrase", "identity_neutral", "negated_insult", "quoted_insult",
          "profanity_untargeted", "direct_insult", "threat", "dehumanisation", "obfuscated_insult")
MIN_TRAIN_CASES = 40

# list names of the same kind in the suite (key) and the training set (value)
THREAT_LISTS = (("harm",), ("harm",))
DEHUM_LISTS = (("dehum", "beast"), ("dehum", "pest"))
INSULT_LISTS = (("ins", "adj"), ("ins", "adj"))


@pytest.fixture(scope="module")
def cases():
    return augmentation_cases()


@pytest.fixture(scope="module")
def suite_templates() -> dict:
    return load_templates()


def item_strings(item: Any) -> set[str]:
    """The strings of one list item (every field of an item with inflected forms)."""
    return {v.strip() for v in item.values()} if isinstance(item, dict) else {item.strip()}


def list_strings(lists: dict, names: tuple[str, ...]) -> set[str]:
    return {s for name in names for item in lists.get(name, []) for s in item_strings(item)}


def test_the_file_has_the_suite_format(suite_templates):
    train = train_templates()
    assert list(train) == list(suite_templates)
    assert train["format"] == suite_templates["format"] and train["max_per_group"] == 60
    assert train_functionalities() == GROUPS == tuple(f for f in FUNCTIONALITIES if f in GROUPS)
    suite_funcs = {f["name"]: f for f in suite_templates["functionalities"]}
    for func in train["functionalities"]:
        assert func["toxic"] == suite_funcs[func["name"]]["toxic"] == (func["name"] in TOXIC_FUNCTIONALITIES)
    assert list(train["languages"]) == list(LANGS)
    for lang, spec in train["languages"].items():
        assert list(spec["groups"]) == list(GROUPS), lang


def test_counts_per_language_and_group(cases):
    counts = Counter((c.lang, c.functionality) for c in cases)
    for lang in LANGS:
        for func in GROUPS:
            assert MIN_TRAIN_CASES <= counts[(lang, func)] <= 60, (lang, func, counts[(lang, func)])
    assert set(counts) == {(lang, func) for lang in LANGS for func in GROUPS}


def test_labels_per_group(cases):
    for case in cases:
        assert case.toxic == (case.functionality in TOXIC_FUNCTIONALITIES), case
    assert {c.functionality for c in cases if c.toxic} == {"profanity_untargeted", "direct_insult",
                                                           "threat", "dehumanisation", "obfuscated_insult"}


def test_no_duplicates_and_clean_texts(cases):
    for lang in LANGS:
        texts = [c.text for c in cases if c.lang == lang]
        assert len(texts) == len(set(texts)), lang
        assert all(t == " ".join(t.split()) and "{" not in t and "}" not in t for t in texts), lang
    assert len({c.id for c in cases}) == len(cases)


def test_rule_a_no_template_of_the_suite(suite_templates):
    for lang, spec in train_templates()["languages"].items():
        suite_groups = suite_templates["languages"][lang]["groups"]
        suite_tpl = {t.strip() for group in suite_groups.values()
                     for t in (group if isinstance(group, list) else group["templates"]) if isinstance(t, str)}
        train_tpl = [t.strip() for group in spec["groups"].values() for t in group]
        assert not [t for t in train_tpl if t in suite_tpl], lang


def test_rule_b_no_text_of_the_suite(cases):
    suite_texts = {(c.lang, normalize(c.text)) for c in load_suite()}
    clash = [(c.lang, c.text) for c in cases if (c.lang, normalize(c.text)) in suite_texts]
    assert clash == []


def test_rule_c_threat_phrases_and_dehumanising_nouns_are_new(suite_templates):
    for lang, spec in train_templates()["languages"].items():
        suite_lists = suite_templates["languages"][lang]["lists"]
        for suite_names, train_names in (THREAT_LISTS, DEHUM_LISTS):
            train_items = list_strings(spec["lists"], train_names)
            assert train_items, (lang, train_names)
            assert train_items.isdisjoint(list_strings(suite_lists, suite_names)), (lang, train_names)


def test_rule_d_most_insult_items_are_not_the_suites(suite_templates):
    suite_names, train_names = INSULT_LISTS
    for lang, spec in train_templates()["languages"].items():
        suite_words = list_strings(suite_templates["languages"][lang]["lists"], suite_names)
        items = [item for name in train_names for item in spec["lists"][name]]
        shared = [item for item in items if item_strings(item) & suite_words]
        assert len(items) >= 10 and len(shared) * 2 <= len(items), (lang, shared)


def test_threat_and_dehumanisation_templates_use_the_new_lists():
    for lang, spec in train_templates()["languages"].items():
        assert all("{harm}" in t for t in spec["groups"]["threat"]), lang
        assert all("{pest}" in t or "{dehum}" in t for t in spec["groups"]["dehumanisation"]), lang


def test_deterministic(cases):
    again = build_suite(json.loads(train_templates_path().read_text(encoding="utf-8")), GROUPS)
    assert again == list(cases)
    assert augmentation_cases(["de", "en"]) == [c for c in cases if c.lang in ("en", "de")]
    assert {c.lang for c in augmentation_cases("zh")} == {"zh"}
    with pytest.raises(XdetoxInputError):
        augmentation_cases("xx")


def test_every_language_is_mostly_in_its_script(cases):
    for lang in LANGS:
        scripts = [dominant_script(c.text) for c in cases if c.lang == lang]
        share = sum(s == SCRIPTS[lang] for s in scripts) / len(scripts)
        assert share >= 0.95, (lang, share)


def test_rows_are_normalised_and_labelled(cases):
    rows = augmentation_rows(1000)  # longer than every case: the whole normalised text
    assert len(rows) == len(cases)
    for row, case in zip(rows, cases):
        assert row.text == normalize(case.text) == normalize(row.text) != ""
        assert row.label == int(case.toxic) and row.lang == case.lang
        assert row.source == f"augment/{case.functionality}"
    assert [r.text for r in augmentation_rows(20)] == [normalize(c.text)[:20] for c in cases]


def test_build_suite_refuses_a_bad_subset():
    with pytest.raises(ValueError):
        build_suite(train_templates())  # the training file is not the full suite
    with pytest.raises(ValueError):
        build_suite(train_templates(), tuple(reversed(GROUPS)))


def test_the_cases_are_part_of_every_trained_scorers_key(monkeypatch):
    """A scorer trained on other augmentation cases is another model: its cache key must differ."""
    from xdetox.scorers import augment
    from xdetox.scorers.offline.config import OfflineScorerConfig
    from xdetox.scorers.semantic import SemanticScorerConfig

    digest = augment.augmentation_digest()
    assert len(digest) == 64 and digest == augment.augmentation_digest()
    # (offline-tuned's identity is the hash of its shipped files, whatever they were trained on)
    configs = (SemanticScorerConfig(augment_version=2), SemanticScorerConfig(augment_version=2, head_hidden=0),
               OfflineScorerConfig(augment_weight=1.0))
    unaffected = (SemanticScorerConfig(augment_version=2, head_augment=False), OfflineScorerConfig())
    before = [c.key() for c in configs + unaffected]
    monkeypatch.setattr(augment, "augmentation_digest", lambda version=augment.LATEST: "0" * 64)
    after = [c.key() for c in configs + unaffected]
    assert all(b != a for b, a in zip(before[:3], after[:3]))
    assert before[3:] == after[3:]


V1_DIGEST = "94dd12c6b52ca5c2cf90ed5d0f047868fe03b403a4af2d82fffc8bdf61f76bcd"
"""Version 1's cases as offline-semantic's cached model and its measured figures saw them. A change
to templates-v1.json would give that scorer another model under the same name: make a new version."""


def test_version_1_is_the_first_set_unchanged(suite_templates):
    from xdetox.scorers.augment import LATEST, VERSIONS, augmentation_digest

    assert LATEST == max(VERSIONS) == 2 and train_templates_path().name == "templates.json"
    v1 = augmentation_cases(version=1)
    assert train_functionalities(1) == GROUPS[:-1]
    assert Counter(c.lang for c in v1) == {lang: 536 for lang in LANGS}
    assert augmentation_digest(1) == V1_DIGEST != augmentation_digest()
    suite_texts = {(c.lang, normalize(c.text)) for c in load_suite()}
    assert not [c for c in v1 if (c.lang, normalize(c.text)) in suite_texts]
    assert [r.text for r in augmentation_rows(1000, version=1)] == [normalize(c.text) for c in v1]
    with pytest.raises(XdetoxInputError):
        augmentation_cases(version=3)


def test_the_shipped_scorers_keep_version_1_and_their_keys():
    """The cached models and the figures measured with them name version 1; 2 is chosen explicitly."""
    from xdetox.scorers.semantic import SemanticScorerConfig
    from xdetox.scorers.tuned import TunedScorerConfig

    assert SemanticScorerConfig().augment_version == TunedScorerConfig().semantic.augment_version == 1
    assert SemanticScorerConfig(augment_version=2).key() != SemanticScorerConfig().key()
    v2 = TunedScorerConfig(rows={"head_rows_per_lang": 1500, "augment_version": 2})
    assert v2.semantic.augment_version == 2 and v2.semantic.key() != TunedScorerConfig().semantic.key()
    with pytest.raises(XdetoxInputError):
        SemanticScorerConfig(augment_version=7)
