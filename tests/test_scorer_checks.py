"""The scorer-check suite: its data, its recipe, and the runner (fake scorers, no model)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.scorer_checks import (
    BENIGN_SHORT,
    FUNCTIONALITIES,
    MIN_CASES,
    MIN_CASES_EXCEPTIONS,
    PARALLEL_FILES,
    THRESHOLD,
    TOXIC_FUNCTIONALITIES,
    TRANSFORMS,
    Case,
    build_suite,
    expand_template,
    format_checks,
    format_parallel,
    load_parallel,
    load_suite,
    load_templates,
    main,
    parallel_key,
    run_checks,
    run_parallel,
    weakest_functionalities,
)


@pytest.fixture(scope="module")
def suite() -> list[Case]:
    return load_suite()


@pytest.fixture(scope="module")
def templates() -> dict:
    return load_templates()


# --------------------------------------------------------------------------- the data


def test_suite_loads_all_languages_in_order(suite):
    assert suite and all(isinstance(c, Case) for c in suite)
    assert list(dict.fromkeys(c.lang for c in suite)) == list(LANGS)
    assert [c.lang for c in load_suite(["de", "en"])][:1] == ["en"]  # language order, not argument order
    assert {c.lang for c in load_suite("zh")} == {"zh"}


def test_case_is_frozen(suite):
    with pytest.raises(AttributeError):
        suite[0].text = "changed"  # type: ignore[misc]


def test_every_language_has_every_functionality_with_enough_cases(suite):
    counts = Counter((c.lang, c.functionality) for c in suite)
    for lang in LANGS:
        for func in FUNCTIONALITIES:
            need = MIN_CASES_EXCEPTIONS.get((lang, func), MIN_CASES)
            assert counts[(lang, func)] >= need, (lang, func, counts[(lang, func)])


def test_no_duplicate_texts_within_a_language_and_unique_ids(suite):
    by_lang = defaultdict(list)
    for c in suite:
        by_lang[c.lang].append(c.text)
    for lang, texts in by_lang.items():
        dup = [t for t, n in Counter(texts).items() if n > 1]
        assert not dup, (lang, dup[:5])
    ids = [c.id for c in suite]
    assert len(ids) == len(set(ids))
    assert all(c.id.startswith(f"{c.lang}-{c.functionality}-") for c in suite)


def test_texts_are_clean(suite):
    for c in suite:
        assert c.text == c.text.strip() and "  " not in c.text and "{" not in c.text and "}" not in c.text, c


def test_labels_are_as_declared(suite, templates):
    declared = {f["name"]: f["toxic"] for f in templates["functionalities"]}
    assert tuple(declared) == FUNCTIONALITIES
    assert {f for f, toxic in declared.items() if toxic} == TOXIC_FUNCTIONALITIES
    assert BENIGN_SHORT <= set(FUNCTIONALITIES) - TOXIC_FUNCTIONALITIES
    for c in suite:
        assert c.toxic == (c.functionality in TOXIC_FUNCTIONALITIES), c
        assert c.toxic == declared[c.functionality]
    assert "profanity_untargeted" in TOXIC_FUNCTIONALITIES  # the ParaDetox convention (README)


def test_shipped_files_equal_what_the_templates_generate(suite, templates):
    assert build_suite(templates) == suite


def test_build_command_rewrites_identical_files(tmp_path):
    assert main(["build", "--out", str(tmp_path)]) == 0
    shipped = Path(__file__).resolve().parents[1] / "src" / "xdetox" / "resources" / "scorer_checks"
    for lang in LANGS:
        assert (tmp_path / f"{lang}.jsonl").read_bytes() == (shipped / f"{lang}.jsonl").read_bytes(), lang


def test_benign_other_language_comes_from_the_other_languages(suite, templates):
    langs = templates["languages"]
    for lang in LANGS:
        own = set(langs[lang]["lists"]["benign_sentence"])
        others = {s for other in LANGS if other != lang for s in langs[other]["lists"]["benign_sentence"]}
        texts = {c.text for c in suite if c.lang == lang and c.functionality == "benign_other_language"}
        assert texts == others and not texts & own, lang


def test_non_latin_languages_are_in_their_scripts(suite):
    # Most identity cases should be in the language's script.
    def share(lang, lo, hi):
        texts = [c.text for c in suite if c.lang == lang and c.functionality == "identity_neutral"]
        return sum(any(lo <= ch <= hi for ch in t) for t in texts) / len(texts)

    assert share("am", "\u1200", "\u137f") == 1.0  # Ge'ez
    assert share("hi", "\u0900", "\u097f") == 1.0  # Devanagari
    assert share("ar", "\u0600", "\u06ff") == 1.0
    assert share("uk", "\u0400", "\u04ff") == 1.0 and share("ru", "\u0400", "\u04ff") == 1.0
    assert share("zh", "\u4e00", "\u9fff") == 1.0
    shared = {"punctuation_only", "digits", "benign_other_language"}
    uk = {c.text for c in suite if c.lang == "uk" and c.functionality not in shared}
    ru = {c.text for c in suite if c.lang == "ru" and c.functionality not in shared}
    assert not uk & ru  # Ukrainian and Russian are written separately


# --------------------------------------------------------------------------- the recipe


def test_transforms():
    assert TRANSFORMS["spaced"]("idiot") == "i d i o t"
    assert TRANSFORMS["dotted"]("idiot") == "i.d.i.o.t"
    assert TRANSFORMS["leet"]("idiot") == "1d10t"
    assert TRANSFORMS["dropped"]("idiot") == "idot"
    assert TRANSFORMS["starred"]("idiot") == "id*ot"
    assert TRANSFORMS["repeated"]("idiot") == "idiooooot"
    assert TRANSFORMS["homoglyph"]("идиот") == "иди\u006fт"  # Cyrillic о -> Latin o
    assert TRANSFORMS["tatweel"]("حمار") == "حـمـار"
    assert TRANSFORMS["spaced"]("कमीना") == "क मी ना"  # aksharas stay whole
    assert TRANSFORMS["spaced"]("कुत्ता") == "कु त्ता"  # a conjunct stays whole
    assert TRANSFORMS["repeated"]("कमीना") == "कमीनााााा"
    assert TRANSFORMS["repeated"]("كلب") == "كلببببب"
    assert TRANSFORMS["starred"]("傻逼") == "傻*"


def test_expand_template_fills_in_step_and_shares_items():
    lists = {"a": ["x", "y", "z"], "b": [{"s": "1", "p": "ones"}, {"s": "2", "p": "twos"}], "c": ["q"]}
    out = expand_template("{a}-{b.s}-{b.p}", lists)
    assert len(out) == 6 and len(set(out)) == 6
    assert out[:3] == ["X-1-ones", "Y-2-twos", "Z-1-ones"]  # every item of every list early; capitalised
    assert expand_template("say {c:spaced}", {"c": ["ab"]}) == ["say a b"]
    assert expand_template("say {c:dropped}", {"c": ["ab"]}) == []  # no-op obfuscation is skipped
    with pytest.raises(ValueError, match="unknown list"):
        expand_template("{nope}", lists)
    with pytest.raises(ValueError, match="unknown transform"):
        expand_template("{a:nope}", lists)
    with pytest.raises(ValueError, match="needs a field"):
        expand_template("{b}", lists)


def test_build_suite_is_deterministic_and_validates(templates):
    assert build_suite(templates) == build_suite(json.loads(json.dumps(templates)))
    broken = json.loads(json.dumps(templates))
    del broken["languages"]["de"]["groups"]["threat"]
    with pytest.raises(ValueError, match="missing"):
        build_suite(broken)
    relabelled = json.loads(json.dumps(templates))
    relabelled["functionalities"][0]["toxic"] = True
    with pytest.raises(ValueError, match="label"):
        build_suite(relabelled)


# --------------------------------------------------------------------------- the runner


class MarkerScorer:
    """0.9 for texts containing the marker word, 0.1 otherwise."""

    name = "marker"

    def __init__(self, marker: str = "BAD", langs=LANGS):
        self.marker = marker
        self.supported_languages = frozenset(langs)
        self.calls: list[tuple[int, str]] = []

    def score(self, texts, lang):
        self.calls.append((len(texts), lang))
        return [0.9 if self.marker in t else 0.1 for t in texts]


def _case(lang, func, text, i):
    return Case(lang=lang, functionality=func, text=text, toxic=func in TOXIC_FUNCTIONALITIES, id=f"{lang}-{i}")


def _tiny_cases():
    rows = [
        ("direct_insult", "you BAD person"), ("direct_insult", "BAD BAD"), ("threat", "I will find you"),
        ("greeting", "hello"), ("greeting", "hi"), ("digits", "42"), ("quoted_insult", 'he said "BAD"'),
    ]
    return [_case(lang, f, t, i) for lang in ("en", "de") for i, (f, t) in enumerate(rows)]


def test_run_checks_known_accuracy_and_auc():
    scorer = MarkerScorer()
    result = run_checks(scorer, cases=_tiny_cases(), batch_size=3, parallel=False)
    assert "parallel" not in result
    assert result["scorer"] == "marker" and result["threshold"] == THRESHOLD
    assert list(result["languages"]) == ["en", "de"] and result["skipped"] == []
    en = result["languages"]["en"]
    assert en["n"] == 7
    assert en["accuracy"] == pytest.approx(5 / 7)
    # toxic scores 0.9 0.9 0.1; benign 0.1 0.1 0.9 and "42", silent, not scored (ranks as 0):
    # (7 wins + 4 ties / 2) of 12 pairs
    assert en["auc"] == pytest.approx(9 / 12)
    assert sum(n for n, _ in scorer.calls) == 12  # "42" in neither language went to the scorer
    by = en["by_functionality"]
    assert list(by) == ["digits", "greeting", "quoted_insult", "direct_insult", "threat"]  # FUNCTIONALITIES order
    assert by["direct_insult"] == {"n": 2, "accuracy": 1.0, "mean_score": pytest.approx(0.9), "not_scored": 0,
                                   "toxic": True}
    assert by["digits"] == {"n": 1, "accuracy": 1.0, "mean_score": None, "not_scored": 1, "toxic": False}
    assert by["threat"]["accuracy"] == 0.0 and by["quoted_insult"]["accuracy"] == 0.0
    assert by["greeting"] == {"n": 2, "accuracy": 1.0, "mean_score": pytest.approx(0.1), "not_scored": 0,
                              "toxic": False}
    assert result["benign_short_accuracy"] == {"en": 1.0, "de": 1.0}
    assert result["overall"]["n"] == 14 and result["overall"]["accuracy"] == pytest.approx(5 / 7)
    assert result["overall"]["auc"] == pytest.approx(9 / 12)
    assert [f for f, _ in weakest_functionalities(result, 2)] == ["quoted_insult", "threat"]
    assert max(n for n, _ in scorer.calls) <= 3  # batched


def test_run_checks_on_the_whole_suite_with_an_oracle_and_a_constant(suite):
    toxic_texts = {(c.lang, c.text) for c in suite if c.toxic}

    class Oracle:
        name = "oracle"
        supported_languages = frozenset(LANGS)

        def score(self, texts, lang):
            return [1.0 if (lang, t) in toxic_texts else 0.0 for t in texts]

    class Constant:
        name = "constant"
        supported_languages = frozenset(LANGS)

        def score(self, texts, lang):
            return [0.1] * len(texts)

    oracle = run_checks(Oracle())
    assert set(oracle["languages"]) == set(LANGS)
    for lang, stats in oracle["languages"].items():
        assert stats["accuracy"] == 1.0 and stats["auc"] == 1.0
        assert list(stats["by_functionality"]) == list(FUNCTIONALITIES)
        assert stats["n"] == sum(row["n"] for row in stats["by_functionality"].values())
    constant = run_checks(Constant(), langs=["en", "am"])
    for lang in ("en", "am"):
        stats = constant["languages"][lang]
        benign = sum(r["n"] for f, r in stats["by_functionality"].items() if f not in TOXIC_FUNCTIONALITIES)
        assert stats["accuracy"] == pytest.approx(benign / stats["n"])
        silent = sum(r["not_scored"] for r in stats["by_functionality"].values())
        by = stats["by_functionality"]
        assert by["punctuation_only"]["not_scored"] == by["punctuation_only"]["n"]  # all silent
        assert silent == by["punctuation_only"]["n"] + by["digits"]["not_scored"] > by["punctuation_only"]["n"]
        # every toxic case ties with every scored benign case and beats a silent one (ranked as 0)
        assert stats["auc"] == pytest.approx(0.5 + 0.5 * silent / benign)


def test_unsupported_languages_are_skipped_and_reported():
    scorer = MarkerScorer(langs=("en", "de", "zh"))
    result = run_checks(scorer, langs=["en", "uk", "am"])
    assert list(result["languages"]) == ["en"]
    assert result["skipped"] == ["uk", "am"]
    assert {lang for _, lang in scorer.calls} == {"en"}
    assert "skipped" in format_checks(result) and "uk, am" in format_checks(result)
    nothing = run_checks(MarkerScorer(langs=()), langs=["en"])
    assert nothing["languages"] == {} and nothing["overall"]["n"] == 0 and nothing["skipped"] == ["en"]
    json.dumps(nothing)
    format_checks(nothing)


def test_one_class_gives_no_auc():
    cases = [_case("en", "greeting", t, i) for i, t in enumerate(["hi", "hello"])]
    result = run_checks(MarkerScorer(), cases=cases)
    assert result["languages"]["en"]["auc"] is None and result["overall"]["auc"] is None
    assert "   -" in format_checks(result)


def test_bad_scorers_and_inputs_are_refused():
    class Short:
        name = "short"
        supported_languages = frozenset(LANGS)

        def score(self, texts, lang):
            return [0.5]

    class NaN:
        name = "nan"
        supported_languages = frozenset(LANGS)

        def score(self, texts, lang):
            return [float("nan")] * len(texts)

    with pytest.raises(ValueError, match="returned 1 scores"):
        run_checks(Short(), langs=["en"])
    with pytest.raises(ValueError, match="non-finite"):
        run_checks(NaN(), langs=["en"])
    with pytest.raises(XdetoxInputError):
        load_suite(["xx"])
    with pytest.raises(XdetoxInputError):
        run_checks(MarkerScorer(), batch_size=0)


def test_format_checks_lists_languages_and_groups():
    result = run_checks(MarkerScorer(marker="idiot"), langs=["en", "hi"])
    text = format_checks(result)
    assert "[en] English" in text and "[hi] Hindi" in text
    for func in FUNCTIONALITIES:
        assert func in text
    assert "benign_short_accuracy=" in text and "\noverall: n=" in text and "weakest:" in text
    assert "the same sentences in every language" in text.split("\noverall:")[1]  # the parallel table last


def test_result_is_json_serialisable():
    result = run_checks(MarkerScorer(marker="idiot"), langs=["en", "ar"])
    assert json.loads(json.dumps(result)) == result


def test_offline_scorer_on_a_handful_of_cases(suite):
    """Only when the offline model is already cached (training takes ~40 s)."""
    score = pytest.importorskip("xdetox.scorers")
    try:
        cached = score.OfflineScorer.cache_path(score.OfflineScorerConfig()).exists()
    except Exception:  # the scorer's API moved on: nothing to check here
        cached = False
    if not cached:
        pytest.skip("offline scorer not cached")
    few = [c for c in suite if c.lang == "en" and c.id.endswith(("-000", "-001"))]
    result = run_checks(score.get_scorer("offline"), cases=few)
    stats = result["languages"]["en"]
    assert stats["n"] == len(few) == 2 * len(FUNCTIONALITIES)
    for func, row in stats["by_functionality"].items():
        if row["not_scored"] == row["n"]:  # silent cases (punctuation, digits) are never scored
            assert row["mean_score"] is None and row["accuracy"] == 1.0
        else:
            assert 0.0 <= row["mean_score"] <= 1.0
    assert stats["by_functionality"]["punctuation_only"]["not_scored"] == 2


def test_cli_scorer_check_prints_json_per_language(capsys):
    from xdetox.cli import main

    assert main(["scorer", "check", "--scorer", "offline", "--langs", "en,am", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["languages"]) == {"en", "am"}
    for lang in ("en", "am"):
        groups = result["languages"][lang]["by_functionality"]
        assert set(groups) == set(FUNCTIONALITIES) and all(g["n"] >= 40 for g in groups.values())
        assert 0 <= result["languages"][lang]["accuracy"] <= 1


@pytest.mark.parametrize("args, needle", [(["--langs", "xx"], "xx"), (["--scorer", "nope"], "unknown scorer"),
                                          (["--scorer", "lang-fidelity"], "not a toxicity scorer")])
def test_cli_scorer_check_bad_input(capsys, args, needle):
    from xdetox.cli import main

    assert main(["scorer", "check", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


# --------------------------------------------------------------------------- the same sentences in every language


@pytest.mark.parametrize("which, benign, toxic", [(1, 40, 20), (2, 40, 20), (3, 100, 80)])
def test_parallel_set_has_every_sentence_in_every_language_in_its_script(suite, which, benign, toxic):
    from xdetox.scorers.augment import augmentation_cases
    from xdetox.text import SCRIPTS, dominant_script, normalize

    cases = load_parallel(which)
    assert [c.toxic for c in cases].count(False) == benign and [c.toxic for c in cases].count(True) == toxic
    assert [c.toxic for c in cases] == sorted(c.toxic for c in cases)  # benign first
    assert len({c.id for c in cases}) == len(cases)
    for lang in LANGS:
        texts = [c.texts[lang] for c in cases]
        assert all(t.strip() == t and t for t in texts)
        assert len({normalize(t) for t in texts}) == len(texts)  # no sentence twice in a language
        assert {dominant_script(t) for t in texts} == {SCRIPTS[lang]}
    uk_ru = [c for c in cases if c.texts["uk"] == c.texts["ru"]]
    assert not uk_ru  # written separately
    # nothing shared with the behavioural suite or with the scorers' written training set
    elsewhere = {(c.lang, normalize(c.text)) for c in [*suite, *augmentation_cases()]}
    assert not [(lang, c.texts[lang]) for c in cases for lang in LANGS if (lang, normalize(c.texts[lang])) in elsewhere]
    # and the sets share no sentence: sets 2 and 3 say how a scorer chosen on set 1 reads sentences it never saw
    other = {(lang, normalize(c.texts[lang])) for n in PARALLEL_FILES if n != which for c in load_parallel(n)
             for lang in LANGS}
    assert not [(lang, c.texts[lang]) for c in cases for lang in LANGS if (lang, normalize(c.texts[lang])) in other]


def test_the_spread_has_a_paired_bootstrap_interval_over_the_sentences():
    from xdetox.scorer_checks.parallel import spread_interval

    rng = np.random.default_rng(1)
    en = rng.uniform(0.0, 0.2, 40)
    de = en + np.where(np.arange(40) < 10, 0.8, 0.0)  # the same sentences, 10 of 40 read as insults in de
    low, high = spread_interval({"en": list(en), "de": list(de)})
    assert low < 0.2 < high and 0.0 < low and high < 0.5  # the spread is 0.2; another 40 sentences may move it
    assert [low, high] == spread_interval({"en": list(en), "de": list(de)})  # seeded
    # paired: a language that reads every sentence exactly 0.1 higher has a spread of 0.1 whatever is drawn
    assert spread_interval({"en": list(en), "zh": list(en + 0.1)}) == pytest.approx([0.1, 0.1])
    assert spread_interval({"en": list(en)}) is None and spread_interval({"en": [0.1], "de": [0.2]}) is None


def test_there_are_three_parallel_sets_and_no_fourth():
    assert [parallel_key(n) for n in PARALLEL_FILES] == ["parallel", "parallel2", "parallel3"]
    with pytest.raises(ValueError, match="no parallel set 4; there are \\[1, 2, 3\\]"):
        load_parallel(4)


def test_run_parallel_means_per_language_and_their_spread():
    cases = load_parallel()
    toxic_texts = {c.texts[lang] for c in cases if c.toxic for lang in LANGS}
    lift = {"en": 0.0, "de": 0.2, "zh": 0.1}

    class Biased:  # 0.8 for an insult, 0.1 for a benign sentence, plus a per-language lift
        name = "biased"
        supported_languages = frozenset(lift)

        def __init__(self):
            self.calls = []

        def score(self, texts, lang):
            self.calls.append(len(texts))
            return [(0.8 if t in toxic_texts else 0.1) + lift[lang] for t in texts]

    scorer = Biased()
    result = run_parallel(scorer, ["en", "de", "zh", "uk"], batch_size=16)  # uk: not supported, left out
    assert result["n_benign"] == 40 and result["n_toxic"] == 20
    assert result["benign_mean"] == pytest.approx({"en": 0.1, "de": 0.3, "zh": 0.2})
    assert result["toxic_mean"] == pytest.approx({"en": 0.8, "de": 1.0, "zh": 0.9})
    assert result["benign_spread"] == pytest.approx(0.2) and result["toxic_spread"] == pytest.approx(0.2)
    assert max(scorer.calls) <= 16 and sum(scorer.calls) == 3 * 60
    table = "\n".join(format_parallel(result))
    assert "benign (40)" in table and "0.300" in table and "0.200" in table
    assert result["benign_spread_ci"] == pytest.approx([0.2, 0.2]) and "[0.200, 0.200]" in table
    alone = run_parallel(Biased(), ["en"])
    assert alone["benign_spread"] is None and alone["toxic_spread"] is None  # a spread needs two languages
    checked = run_checks(Biased(), langs=["en", "de"])
    assert checked["parallel"]["benign_mean"] == pytest.approx({"en": 0.1, "de": 0.3})
    second = checked["parallel2"]  # set 2 on the same languages: its insults are not set 1's (0.1 + lift here)
    assert (second["n_benign"], second["n_toxic"]) == (40, 20)
    assert second["toxic_mean"] == pytest.approx({"en": 0.1, "de": 0.3})
    third = checked["parallel3"]  # and set 3, the largest
    assert (third["n_benign"], third["n_toxic"]) == (100, 80)
    assert "set 3" in format_checks(checked)
