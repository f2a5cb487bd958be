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
from xdetox.report.simulate import coverage
from xdetox.report.stats import (
    SeedLevelTest,
    _crossed_anova,
    _CrossedAnova,
    _pivot_half_width,
    q_values,
    seed_level_test,
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


# --------------------------------------------------------------------------- seed-level test

HAND = np.array([[0.30, 0.10, 0.50, 0.20],  # 3 seeds x 4 prompts
                 [0.10, -0.10, 0.40, 0.00],
                 [0.45, 0.20, 0.60, 0.35]])


def _by_seed(table: np.ndarray, present: np.ndarray | None = None) -> dict[int, dict[str, float]]:
    present = np.isfinite(table) if present is None else present
    return {s: {f"p{p}": float(table[s, p]) for p in range(table.shape[1]) if present[s, p]}
            for s in range(table.shape[0])}


def _implied_se(result: SeedLevelTest) -> float:
    from scipy.stats import t

    return (result.ci_high - result.reduction) / t.ppf(0.975, result.df)


def test_balanced_matches_the_two_way_anova_by_hand():
    """Grand mean 31/120; seed means 0.275, 0.1, 0.4 and prompt means 17/60, 1/15, 0.5, 11/60
    give SS_seed = 0.181667 (2 df), SS_prompt = 0.304167 (3 df), SS_resid = 0.008333 (6 df),
    so Var = (MS_seed + MS_prompt - MS_resid) / 12 = (0.090833 + 0.101389 - 0.001389) / 12."""
    from scipy.stats import t

    result = seed_level_test(_by_seed(HAND))
    assert result.reduction == pytest.approx(31 / 120)
    assert (result.n, result.n_seeds, result.unit) == (4, 3, "seeds")
    anova = _crossed_anova(HAND, np.ones(HAND.shape, dtype=bool))
    assert anova.ss == pytest.approx([0.181667, 0.304167, 0.008333], abs=1e-6)
    assert anova.df.tolist() == [2, 3, 6]
    variance = (0.181667 / 2 + 0.304167 / 3 - 0.008333 / 6) / 12
    assert _implied_se(result) == pytest.approx(math.sqrt(variance), rel=1e-4)
    assert result.p_value == pytest.approx(2 * t.sf(result.reduction / math.sqrt(variance), result.df), rel=1e-4)
    assert 2 < result.df < 6  # between the seed term's 2 df and the residual's 6


def test_balanced_interval_is_the_generalized_pivot():
    """CI half-width = 97.5% point of |Z| sqrt(V*), V* from chi-square draws of each mean
    square (here 10^6 independent draws)."""
    rng = np.random.default_rng(123)
    n = 1_000_000
    theta_a, theta_b, theta_e = (ss / rng.chisquare(df, n) for ss, df in ((0.181667, 2), (0.304167, 3), (0.008333, 6)))
    v = (np.maximum(theta_a - theta_e, 0) + np.maximum(theta_b - theta_e, 0) + theta_e) / 12
    expected = np.quantile(np.abs(rng.standard_normal(n)) * np.sqrt(v), 0.95)
    result = seed_level_test(_by_seed(HAND))
    assert result.ci_high - result.reduction == pytest.approx(expected, rel=0.03)
    assert result.reduction - result.ci_low == pytest.approx(result.ci_high - result.reduction)


def test_pivot_with_one_mean_square_is_a_t_interval():
    from scipy.stats import t

    for df in (2, 10):
        anova = _CrossedAnova(np.array([0.5 * df, 0.0, 0.0]), np.array([df, 0.0, 0.0]), np.array([0.01, 0.0, 0.0]))
        expected = t.ppf(0.975, df) * math.sqrt(0.01 * 0.5)
        assert _pivot_half_width(anova, 0.95) == pytest.approx(expected, rel=0.03)


def test_missing_pairs_match_least_squares_fits():
    """Henderson's method III from explicit least-squares fits of the dummy-coded models."""
    rng = np.random.default_rng(4)
    n_seeds, n_prompts = 3, 8
    table = rng.normal(0.1, 0.3, (n_seeds, n_prompts)) + rng.normal(0, 0.2, (n_seeds, 1))
    present = np.ones(table.shape, dtype=bool)
    present[0, 1] = present[1, 5] = present[2, 5] = present[2, 7] = False
    rows, cols = np.nonzero(present)
    y = table[rows, cols]
    seeds, prompts = np.eye(n_seeds)[rows], np.eye(n_prompts)[cols]

    def rss(x: np.ndarray) -> tuple[float, int]:
        fit = np.linalg.lstsq(x, y, rcond=None)
        return float(((y - x @ fit[0]) ** 2).sum()), int(fit[2])

    rss_full, rank_full = rss(np.hstack([seeds, prompts]))
    rss_prompts, _ = rss(prompts)
    rss_seeds, _ = rss(seeds)
    n = len(y)
    ss_a, df_a = rss_prompts - rss_full, rank_full - n_prompts
    ss_b, df_b = rss_seeds - rss_full, rank_full - n_seeds
    df_e = n - rank_full
    s2_e = rss_full / df_e
    s2_a = max((ss_a - df_a * s2_e) / (n - n_prompts), 0)
    s2_b = max((ss_b - df_b * s2_e) / (n - n_seeds), 0)
    weights = present / (n_seeds * present.sum(axis=1, keepdims=True))
    variance = s2_a / n_seeds + s2_b * (weights.sum(axis=0) ** 2).sum() + s2_e * (weights ** 2).sum()

    anova = _crossed_anova(np.where(present, table, 0.0), present)
    assert anova.ss == pytest.approx([ss_a, ss_b, rss_full])
    assert anova.df.tolist() == [df_a, df_b, df_e] == [2, 7, 10]
    result = seed_level_test(_by_seed(table, present))
    seed_means = [table[s, present[s]].mean() for s in range(n_seeds)]
    assert result.reduction == pytest.approx(np.mean(seed_means))
    assert (result.n, result.n_seeds) == (8, 3)
    assert _implied_se(result) == pytest.approx(math.sqrt(variance), rel=1e-4)


def test_seeds_without_pairs_and_prompt_order_do_not_matter():
    full = seed_level_test(_by_seed(HAND[:2]))
    assert seed_level_test({**_by_seed(HAND[:2]), 7: {}}) == full
    shuffled = {s: dict(reversed(list(prompts.items()))) for s, prompts in reversed(list(_by_seed(HAND[:2]).items()))}
    assert tuple(seed_level_test(shuffled)[:4]) == pytest.approx(tuple(full[:4]))
    assert seed_level_test(_by_seed(HAND)) == seed_level_test(_by_seed(HAND))  # deterministic


def test_one_seed_is_a_t_interval_over_prompts():
    from scipy.stats import t, ttest_1samp

    diffs = np.array([0.3, -0.1, 0.25, 0.4, 0.05, 0.2])
    result = seed_level_test({42: dict(enumerate(diffs))})
    assert (result.unit, result.n, result.n_seeds, result.df) == ("prompts", 6, 1, 5.0)
    low, high = t.interval(0.95, 5, loc=diffs.mean(), scale=diffs.std(ddof=1) / math.sqrt(6))
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    assert result.p_value == pytest.approx(ttest_1samp(diffs, 0.0).pvalue)


def test_degenerate_tables():
    one_prompt = seed_level_test({42: {"a": 0.3}, 43: {"a": 0.1}, 44: {"a": 0.2}})
    assert tuple(one_prompt[:3]) == pytest.approx((0.2, 0.2, 0.2))
    assert tuple(one_prompt[3:]) == (1.0, 1, 3, "seeds", 0.0)  # one prompt says nothing about others
    assert seed_level_test({42: {"a": 0.3}}) == SeedLevelTest(0.3, 0.3, 0.3, 1.0, 1, 1, "prompts", 0.0)
    zeros = seed_level_test({s: dict.fromkeys("abcd", 0.0) for s in (42, 43, 44)})
    assert zeros == SeedLevelTest(0.0, 0.0, 0.0, 1.0, 4, 3, "seeds", 0.0)
    equal = seed_level_test({s: dict.fromkeys("abcd", 0.25) for s in (42, 43, 44)})
    assert (equal.ci_low, equal.ci_high, equal.p_value, equal.df) == (0.25, 0.25, 0.25, 0.0)  # 2^(1-3)
    thirds = seed_level_test({s: dict.fromkeys(range(7), 1 / 3) for s in (42, 43)})
    assert (thirds.ci_low, thirds.ci_high, thirds.p_value, thirds.df) == (1 / 3, 1 / 3, 0.5, 0.0)
    one_seed = seed_level_test({42: dict.fromkeys("abcd", -0.5)})
    assert (one_seed.unit, one_seed.p_value) == ("prompts", 0.125)  # 2^(1-4)
    confounded = seed_level_test({42: {"a": 0.1}, 43: {"b": 0.5}})  # each seed its own prompt
    assert confounded.df == 1.0 and confounded.ci_low < 0.3 < confounded.ci_high
    assert 0 < confounded.p_value < 1


def test_p_value_agrees_with_the_interval():
    rng = np.random.default_rng(8)
    for shift in np.linspace(-0.3, 0.3, 13):
        table = shift + rng.normal(0, 0.1, (3, 1)) + rng.normal(0, 0.25, (3, 30))
        result = seed_level_test(_by_seed(table))
        assert (result.p_value < 0.05) == (result.ci_low > 0 or result.ci_high < 0)
        assert result.ci_low < result.reduction < result.ci_high and 0 < result.p_value <= 1


def test_bad_input_is_an_error():
    for bad in ({}, {42: {}, 43: {}}):
        with pytest.raises(XdetoxInputError, match="no \\(seed, prompt\\) pair"):
            seed_level_test(bad)
    with pytest.raises(XdetoxInputError, match="finite"):
        seed_level_test({42: {"a": 0.1, "b": math.nan}})
    with pytest.raises(XdetoxInputError, match="level"):
        seed_level_test(_by_seed(HAND), level=95)


def test_q_values_benjamini_hochberg_by_hand():
    """Sorted 0.01, 0.03, 0.04, 0.20 (m = 4): m p / rank = 0.04, 0.06, 0.0533, 0.20, then the
    running minimum from the top: 0.04, 0.0533, 0.0533, 0.20."""
    assert q_values([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    with_none = q_values([None, 0.01, None, 0.04, 0.03, 0.20])
    assert with_none[0] is None and with_none[2] is None
    assert [with_none[i] for i in (1, 3, 4, 5)] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.20])
    assert q_values([0.9, 0.95]) == pytest.approx([0.95, 0.95])  # 2 x 0.9 / 1 is capped by the next
    assert q_values([]) == [] and q_values([None, None]) == [None, None]
    assert q_values([0.0, 1.0]) == pytest.approx([0.0, 1.0])
    for bad in ([0.5, 1.5], [math.nan], [-0.1]):
        with pytest.raises(XdetoxInputError):
            q_values(bad)


@pytest.mark.parametrize("scenario", [
    dict(sd_seed=0.1, sd_prompt=0.05, sd_noise=0.25),  # seed-dominated
    dict(sd_seed=0.0, sd_prompt=0.25, sd_noise=0.1),  # prompt-dominated
    dict(sd_seed=0.1, sd_prompt=0.2, sd_noise=0.2, missing=0.2),  # both, 20% of pairs missing
])
def test_seed_level_interval_covers_at_three_seeds(scenario):
    share = coverage(n_grids=1000, n_seeds=3, n_prompts=100, rng_seed=1, **scenario)
    assert 0.93 <= share <= 0.97


def test_prompt_pooled_bootstrap_misses_seed_variance():
    seed_dominated = dict(sd_seed=0.1, sd_prompt=0.05, sd_noise=0.25, n_grids=400, rng_seed=1)
    assert coverage(method="pooled_bootstrap", **seed_dominated) < 0.6
    assert coverage(method="seed_level", **seed_dominated) > 0.93


def test_one_seed_covers_sampling_variance():
    assert 0.93 <= coverage(n_grids=400, n_seeds=1, sd_seed=0.0, rng_seed=1) <= 0.97


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
