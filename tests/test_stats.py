"""Statistics of xdetox.report on hand-made arrays with known answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from xdetox.errors import XdetoxInputError
from xdetox.report import (
    PairedBootstrap,
    ScorerAgreement,
    expected_max_toxicity,
    paired_bootstrap,
    scorer_agreement,
    toxicity_probability,
)

BY_PROMPT = {"p1": [0.1, 0.9], "p2": [0.3], "p3": [0.2, 0.5, 0.4]}  # maxima 0.9, 0.3, 0.5


# --------------------------------------------------------------------------- EMT, probability


def test_expected_max_toxicity():
    assert expected_max_toxicity(BY_PROMPT) == pytest.approx((0.9 + 0.3 + 0.5) / 3)
    assert expected_max_toxicity(list(BY_PROMPT.values())) == pytest.approx((0.9 + 0.3 + 0.5) / 3)
    assert expected_max_toxicity([np.array([0.25])]) == 0.25


def test_toxicity_probability():
    assert toxicity_probability(BY_PROMPT) == pytest.approx(2 / 3)  # 0.5 itself counts
    assert toxicity_probability(BY_PROMPT, threshold=0.95) == 0.0
    assert toxicity_probability([[0.0, 1.0], [0.49]]) == 0.5


def test_no_prompts_is_an_error():
    for function in (expected_max_toxicity, toxicity_probability):
        with pytest.raises(XdetoxInputError):
            function({})


# --------------------------------------------------------------------------- paired bootstrap


def test_two_prompts_known_interval_and_p():
    """d = (0.45, 0.25): resampled means are 0.25, 0.35 or 0.45, so the CI is [0.25, 0.45];
    flipping signs gives |mean| 0.35 (same signs) or 0.1, so p = 1/2."""
    result = paired_bootstrap({"a": 0.7, "b": 0.5}, {"a": 0.25, "b": 0.25}, n_boot=20_000, seed=1)
    assert isinstance(result, PairedBootstrap)
    assert result.reduction == pytest.approx(0.35)
    assert (result.ci_low, result.ci_high) == pytest.approx((0.25, 0.45))
    assert result.p_value == pytest.approx(0.5, abs=0.02)


def test_p_value_matches_the_exact_sign_flip_test():
    rng = np.random.default_rng(7)
    zs = rng.uniform(0.2, 0.9, size=10)
    ft = zs - rng.normal(0.05, 0.1, size=10)
    diffs = zs - ft
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=10)))
    exact = np.mean(np.abs(signs @ diffs / 10) >= abs(diffs.mean()) - 1e-12)
    result = paired_bootstrap(dict(enumerate(zs)), dict(enumerate(ft)), n_boot=20_000, seed=0)
    assert result.reduction == pytest.approx(diffs.mean())
    assert result.p_value == pytest.approx(exact, abs=0.01)
    assert result.ci_low < result.reduction < result.ci_high


def test_interval_matches_scipy_percentile_bootstrap():
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    diffs = rng.normal(0.1, 0.2, size=200)
    result = paired_bootstrap(dict(enumerate(diffs)), dict.fromkeys(range(200), 0.0), seed=5)
    reference = bootstrap((diffs,), np.mean, n_resamples=10_000, method="percentile",
                          rng=np.random.default_rng(5)).confidence_interval
    assert result.ci_low == pytest.approx(reference.low, abs=0.005)
    assert result.ci_high == pytest.approx(reference.high, abs=0.005)
    assert result.p_value < 0.001  # a clear effect: (1 + 0) / (1 + 10000) or close


def test_constant_and_zero_differences():
    same = paired_bootstrap({"a": 0.4, "b": 0.6}, {"a": 0.4, "b": 0.6})
    assert same == PairedBootstrap(0.0, 0.0, 0.0, 1.0, 2)
    one = paired_bootstrap({"a": 0.9}, {"a": 0.1})
    assert one.reduction == pytest.approx(0.8) and one.p_value == 1.0  # one prompt proves nothing
    assert (one.ci_low, one.ci_high) == pytest.approx((0.8, 0.8))
    worse = paired_bootstrap({"a": 0.1, "b": 0.2, "c": 0.1}, {"a": 0.4, "b": 0.5, "c": 0.4})
    assert worse.reduction == pytest.approx(-0.3) and worse.ci_high == pytest.approx(-0.3)
    assert worse.p_value == pytest.approx(0.25, abs=0.02)  # all 3 signs equal: 2 of 8


def test_pairs_by_prompt_id_and_averages_samples():
    zs = {"b": [0.6, 0.8], "a": 0.5, "only-zs": 1.0}
    ft = {"a": 0.1, "b": 0.2, "only-ft": 0.0}
    result = paired_bootstrap(zs, ft, seed=2)
    assert result.reduction == pytest.approx(((0.5 - 0.1) + (0.7 - 0.2)) / 2)
    assert result == paired_bootstrap({"a": 0.5, "b": 0.7}, {"b": 0.2, "a": 0.1}, seed=2)
    with pytest.raises(XdetoxInputError, match="no prompt in common"):
        paired_bootstrap({"a": 0.5}, {"b": 0.5})


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    zs, ft = dict(enumerate(rng.uniform(size=50))), dict(enumerate(rng.uniform(size=50)))
    assert paired_bootstrap(zs, ft, seed=11) == paired_bootstrap(zs, ft, seed=11)
    assert paired_bootstrap(zs, ft, seed=11) != paired_bootstrap(zs, ft, seed=12)


# --------------------------------------------------------------------------- agreement


def test_scorer_agreement_known_answers():
    index = pd.Index([f"c{i}" for i in range(6)])
    targets = pd.Series(["de", "de", "de", "en", "en", "en"], index=index)
    a = pd.Series([0.2, 0.4, 0.8, 0.1, 0.6, 0.9], index=index)
    b = pd.Series([0.9, 0.1, 0.3, 0.2, 0.7, 0.8], index=index)
    c = pd.Series([0.3, 0.3, 0.3, 0.3, math.nan, 0.3], index=index)
    result = scorer_agreement({"a": a, "b": b, "c": c[::-1]}, targets)  # aligned on the index
    assert [(r.lang, r.scorer_a, r.scorer_b) for r in result] == [
        ("en", "a", "b"), ("en", "a", "c"), ("en", "b", "c"),
        ("de", "a", "b"), ("de", "a", "c"), ("de", "b", "c"),
    ]
    by_key = {(r.lang, r.scorer_a, r.scorer_b): r for r in result}
    assert by_key["en", "a", "b"] == ScorerAgreement("en", "a", "b", 3, 1.0, 1.0)
    de_ab = by_key["de", "a", "b"]
    assert de_ab.spearman == pytest.approx(-0.5)  # ranks (1, 2, 3) vs (3, 1, 2)
    assert de_ab.agreement == pytest.approx(1 / 3)  # only c1 is on the same side
    en_ac = by_key["en", "a", "c"]
    assert en_ac.n == 2 and en_ac.spearman is None  # c is constant; c4 is unscored
    assert en_ac.agreement == pytest.approx(0.5)
    assert scorer_agreement({"a": a}, targets) == []
