"""Tests for xdetox.report: hand-made completions with known answers."""

from __future__ import annotations

import json
import math
import re
import statistics

import numpy as np
import pandas as pd
import pytest

from xdetox.errors import XdetoxInputError
from xdetox.report.stats import seed_level_test
from xdetox.report.results import ONE_PROMPT, by_target, summary_views
from xdetox.report.tables import TABLE_HEADER, table_row
from xdetox.report import (
    RunInfo,
    matrix_filename,
    model_aliases,
    md_escape,
    print_table,
    result_matrix,
    summarize,
    write_report,
)

MODEL = "google/gemma-3-270m"
SETTING_KEYS = {"model", "paradigm", "source", "percent", "target", "split", "n", "seeds",
                "mean_toxicity", "std", "reduction_abs", "reduction_rel", "reduction_abs_std",
                "emt", "tox_prob", "ci95", "p_value", "ppl_completion", "ppl_change",
                "lang_fidelity", "empty_share", "new_tokens", "n_paired", "abstention_flag", "language_flag",
                "reduction_length_matched", "reduction_length_matched_std", "reduction_length_matched_ci",
                "reduction_length_matched_p", "n_length_matched", "flags", "silent_share",
                "reduction_same_language", "n_same_language", "reduction_same_language_std",
                "reduction_same_language_ci", "reduction_same_language_p", "relevance", "relevance_change",
                "degenerate_share", "letters", "reduction_silence_bounds", "ci_unit", "q_value", "degenerate_reasons",
                "not_computed", "reduction_same_language_q", "reduction_sentence", "reduction_sentence_ci",
                "reduction_sentence_q"}
PER_SEED_KEYS = {"model", "paradigm", "source", "percent", "target", "split", "seed", "n",
                 "mean_toxicity", "reduction_abs", "reduction_rel", "emt", "tox_prob",
                 "ppl_completion", "ppl_change", "lang_fidelity", "empty_share", "new_tokens",
                 "n_paired", "empty_share_zs", "reduction_length_matched", "n_length_matched", "flags",
                 "silent_share", "silent_share_zs", "reduction_same_language", "n_same_language",
                 "relevance", "relevance_change", "degenerate_share", "degenerate_share_zs", "letters",
                 "reduction_silence_bounds", "degenerate_reasons", "other_script_zs", "lang_fidelity_zs"}


def info(**over) -> RunInfo:
    base = dict(
        model=MODEL, scorer="toxclf-v1", seeds=(13,), epochs=2, limit=None,
        decode={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 20, "template": "{text}"},
        lora={"r": 8, "alpha": 16, "dropout": 0.05},
        versions={"xdetox": "0.1.0", "torch": "2.4"}, device="cpu", wall_time_s=12.5,
        started="2025-01-01T00:00:00+00:00", config_name="tiny",
    )
    base.update(over)
    return RunInfo(**base)


def rows(setting, target, tox, split="test_toxic", ids=None, sample=0, completion=None,
         seed=13, model=MODEL):
    """Completion rows of one setting label ("zs", "x-ft:en", "p-ft:10%", "m-ft", "dpo:en")."""
    paradigm, _, variant = setting.partition(":")
    percent = int(variant.rstrip("%")) if variant.endswith("%") else None
    ids = ids or [f"p{i + 1}" for i in range(len(tox))]
    return [
        {
            "model": model, "setting": setting, "paradigm": paradigm,
            "source": None if percent is not None else (variant or None), "percent": percent,
            "seed": seed, "target": target, "split": split, "prompt_id": pid, "sample": sample,
            "prompt": f"prompt {pid} in {target}",
            "completion": completion or f"{setting} says {pid}", "toxicity": t,
        }
        for pid, t in zip(ids, tox)
    ]


def frame() -> pd.DataFrame:
    """One model, one seed, the cases of the reduction definition."""
    data = (
        rows("zs", "de", [0.8, 0.6, 0.4])
        + rows("x-ft:en", "de", [0.2, 0.1])          # lacks p3, which zs has
        + rows("x-ft:es", "de", [0.4, 0.4, 0.4])
        + rows("zs", "en", [0.5, 0.3])
        + rows("x-ft:en", "en", [0.1, 0.1])
        + rows("zs", "es", [0.0, 0.0])               # ZS mean 0 -> rel is null
        + rows("x-ft:en", "es", [0.1, 0.1])
        + rows("x-ft:en", "ru", [0.3])               # no ZS for ru
    )
    return shuffled(data)


def seeds_frame() -> pd.DataFrame:
    """Two seeds; every number below is worked out by hand in the tests."""
    data = (
        rows("zs", "de", [0.8, 0.6], seed=1) + rows("x-ft:en", "de", [0.2, 0.4], seed=1)
        + rows("zs", "de", [0.6, 0.4], seed=2) + rows("x-ft:en", "de", [0.3, 0.1], seed=2)
        + rows("x-ft:en", "de", [0.5, 0.5], seed=3)  # seed 3 has no ZS: no reduction
    )
    return shuffled(data)


def grid_frame() -> pd.DataFrame:
    """Every paradigm, two seeds, targets en and de, one model."""
    data = []
    for seed, shift in ((1, 0.0), (2, 0.1)):
        for target in ("de", "en"):
            data += rows("zs", target, [0.6 + shift, 0.4 + shift], seed=seed)
            data += rows("x-ft:en", target, [0.3, 0.1], seed=seed)
            data += rows("x-ft:de", target, [0.5, 0.3], seed=seed)
            data += rows("p-ft:20%", target, [0.2, 0.2], seed=seed)
            data += rows("p-ft:10%", target, [0.4, 0.4], seed=seed)
            data += rows("m-ft", target, [0.1, 0.1], seed=seed)
            data += rows("dpo:en", target, [0.0, 0.2], seed=seed)
    return shuffled(data)


def shuffled(data) -> pd.DataFrame:
    df = pd.DataFrame(data)
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def find(summary, paradigm, source, target, split="test_toxic", percent=None, model=MODEL,
         key="settings"):
    hits = [
        s for s in summary[key]
        if (s["model"], s["paradigm"], s["source"], s["percent"], s["target"], s["split"])
        == (model, paradigm, source, percent, target, split)
    ]
    return hits


def one(summary, *args, **kwargs):
    hits = find(summary, *args, **kwargs)
    assert len(hits) == 1, hits
    return hits[0]


# --------------------------------------------------------------------------- summary


def test_summary_shape_and_order():
    summary = summarize(frame(), info())
    assert set(summary) == {"model", "scorer", "seeds", "run", "training", "settings", "per_seed", "measures",
                            "analysis", "text_normalisation", "q_family", "q_family_same_language"}
    assert summary["measures"] == []  # no reference measures given
    assert summary["model"] == MODEL
    assert summary["scorer"] == "toxclf-v1"
    assert summary["seeds"] == [13]
    assert summary["run"] == info().to_dict()
    assert summary["run"]["seeds"] == [13] and summary["run"]["config_name"] == "tiny"
    assert all(set(s) == SETTING_KEYS for s in summary["settings"])
    assert all(set(s) == PER_SEED_KEYS for s in summary["per_seed"])
    order = [(s["paradigm"], s["source"], s["target"]) for s in summary["settings"]]
    assert order == [
        ("zs", None, "en"), ("zs", None, "es"), ("zs", None, "de"),
        ("x-ft", "en", "en"), ("x-ft", "en", "es"), ("x-ft", "en", "de"), ("x-ft", "en", "ru"),
        ("x-ft", "es", "de"),
    ]


def test_reduction_uses_common_prompts():
    summary = summarize(frame(), info())
    zs_de = one(summary, "zs", None, "de")
    assert zs_de["n"] == 3 and zs_de["seeds"] == [13]
    assert zs_de["mean_toxicity"] == pytest.approx(0.6)
    assert zs_de["std"] is None  # one seed
    assert zs_de["reduction_abs"] is None and zs_de["reduction_rel"] is None

    ft = one(summary, "x-ft", "en", "de")
    assert ft["n"] == 2
    assert ft["mean_toxicity"] == pytest.approx(0.15)
    # ZS on {p1, p2} = 0.7, not 0.6 over all three prompts
    assert ft["reduction_abs"] == pytest.approx(0.55)
    assert ft["reduction_rel"] == pytest.approx(round(0.55 / 0.7, 6))
    assert ft["reduction_abs_std"] is None

    assert one(summary, "x-ft", "es", "de")["reduction_rel"] == pytest.approx(0.333333)
    en_en = one(summary, "x-ft", "en", "en")
    assert en_en["reduction_abs"] == pytest.approx(0.3)
    assert en_en["reduction_rel"] == pytest.approx(0.75)


def test_null_reductions_zero_and_missing_zs():
    summary = summarize(frame(), info())
    es = one(summary, "x-ft", "en", "es")
    assert es["reduction_abs"] == pytest.approx(-0.1)
    assert es["reduction_rel"] is None          # ZS mean is 0
    ru = one(summary, "x-ft", "en", "ru")
    assert ru["reduction_abs"] is None and ru["reduction_rel"] is None
    assert ru["mean_toxicity"] == pytest.approx(0.3)


def test_mean_over_completions_and_n_over_prompts():
    data = (
        rows("zs", "de", [0.2, 0.4]) + rows("zs", "de", [0.6, 0.8], sample=1)
        + rows("x-ft:en", "de", [0.0, 0.2]) + rows("x-ft:en", "de", [0.2, 0.0], sample=1)
    )
    summary = summarize(pd.DataFrame(data), info())
    zs = one(summary, "zs", None, "de")
    assert zs["n"] == 2 and zs["mean_toxicity"] == pytest.approx(0.5)
    assert one(summary, "x-ft", "en", "de")["reduction_abs"] == pytest.approx(0.4)


def test_seed_mean_and_std_known_answer():
    summary = summarize(seeds_frame(), info(seeds=(1, 2, 3)))
    assert summary["seeds"] == [1, 2, 3]

    per_seed = {s["seed"]: s for s in find(summary, "x-ft", "en", "de", key="per_seed")}
    # each seed against the ZS of the same seed: 0.7 - 0.3 and 0.5 - 0.2
    assert per_seed[1]["reduction_abs"] == pytest.approx(0.4)
    assert per_seed[1]["reduction_rel"] == pytest.approx(round(0.4 / 0.7, 6))
    assert per_seed[2]["reduction_abs"] == pytest.approx(0.3)
    assert per_seed[2]["reduction_rel"] == pytest.approx(0.6)
    assert per_seed[3]["reduction_abs"] is None and per_seed[3]["mean_toxicity"] == 0.5

    zs = one(summary, "zs", None, "de")
    assert zs["seeds"] == [1, 2] and zs["n"] == 2
    assert zs["mean_toxicity"] == pytest.approx(0.6)
    assert zs["std"] == pytest.approx(statistics.stdev([0.7, 0.5]), abs=1e-6)  # ddof=1

    ft = one(summary, "x-ft", "en", "de")
    assert ft["seeds"] == [1, 2, 3]
    assert ft["mean_toxicity"] == pytest.approx((0.3 + 0.2 + 0.5) / 3)
    assert ft["std"] == pytest.approx(statistics.stdev([0.3, 0.2, 0.5]), abs=1e-6)
    # reductions: over the seeds that have one (1 and 2)
    assert ft["reduction_abs"] == pytest.approx(0.35)
    assert ft["reduction_abs_std"] == pytest.approx(statistics.stdev([0.4, 0.3]), abs=1e-6)
    assert ft["reduction_rel"] == pytest.approx((0.4 / 0.7 + 0.6) / 2, abs=1e-6)


def test_emt_tox_prob_and_significance_known_answer():
    summary = summarize(seeds_frame(), info(seeds=(1, 2, 3)))
    per_seed = {s["seed"]: s for s in find(summary, "x-ft", "en", "de", key="per_seed")}
    assert [per_seed[k]["emt"] for k in (1, 2, 3)] == pytest.approx([0.3, 0.2, 0.5])
    assert [per_seed[k]["tox_prob"] for k in (1, 2, 3)] == [0.0, 0.0, 1.0]  # 0.5 counts
    ft = one(summary, "x-ft", "en", "de")
    assert ft["emt"] == pytest.approx(1 / 3, abs=1e-6) and ft["tox_prob"] == pytest.approx(1 / 3, abs=1e-6)
    # seeds 1 and 2 have a ZS (seed 3 has none): the seed-level test of their per-prompt differences
    expected = seed_level_test({1: {"p1": 0.8 - 0.2, "p2": 0.6 - 0.4}, 2: {"p1": 0.6 - 0.3, "p2": 0.4 - 0.1}})
    assert ft["ci95"] == pytest.approx([expected.ci_low, expected.ci_high], abs=1e-5)
    assert ft["p_value"] == pytest.approx(expected.p_value, abs=1e-5) and ft["ci_unit"] == "seeds"
    assert expected.ci_low < 0.35 < expected.ci_high
    zs = one(summary, "zs", None, "de")
    assert zs["ci95"] is None and zs["p_value"] is None
    assert zs["emt"] == pytest.approx(0.6) and zs["tox_prob"] == pytest.approx(0.75)
    assert summarize(seeds_frame(), info(seeds=(1, 2, 3))) == summary  # deterministic
    ru = one(summarize(frame(), info()), "x-ft", "en", "ru")  # no ZS
    assert ru["ci95"] is None and ru["p_value"] is None


def test_emt_over_samples():
    data = (rows("zs", "de", [0.2, 0.4]) + rows("zs", "de", [0.6, 0.8], sample=1)
            + rows("x-ft:en", "de", [0.0, 0.2]) + rows("x-ft:en", "de", [0.2, 0.0], sample=1))
    summary = summarize(pd.DataFrame(data), info())
    zs = one(summary, "zs", None, "de")
    assert zs["emt"] == pytest.approx(0.7) and zs["tox_prob"] == 1.0
    ft = one(summary, "x-ft", "en", "de")
    assert ft["emt"] == pytest.approx(0.2) and ft["tox_prob"] == 0.0
    # one seed: a prompt's value is its mean over samples, d = 0.4 − 0.1 and 0.6 − 0.1: a t interval over prompts
    expected = seed_level_test({13: {"p1": 0.3, "p2": 0.5}})
    assert ft["ci95"] == pytest.approx([expected.ci_low, expected.ci_high], abs=1e-5) and ft["ci_unit"] == "prompts"
    assert expected.ci_low < 0.4 < expected.ci_high


def test_models_and_paradigms_kept_apart():
    data = (
        rows("zs", "en", [0.5], model="b-model") + rows("x-ft:en", "en", [0.1], model="b-model")
        + rows("zs", "en", [0.9], model="a-model") + rows("x-ft:en", "en", [0.8], model="a-model")
        + rows("p-ft:10%", "en", [0.2], model="a-model") + rows("m-ft", "en", [0.3], model="a-model")
        + rows("dpo:en", "en", [0.4], model="a-model")
    )
    summary = summarize(shuffled(data), info(model="b-model, a-model"))
    assert [s["model"] for s in summary["settings"]][:2] == ["b-model", "b-model"]  # info order
    assert one(summary, "x-ft", "en", "en", model="b-model")["reduction_abs"] == pytest.approx(0.4)
    assert one(summary, "x-ft", "en", "en", model="a-model")["reduction_abs"] == pytest.approx(0.1)
    assert one(summary, "p-ft", None, "en", percent=10, model="a-model")["reduction_abs"] == \
        pytest.approx(0.7)
    assert one(summary, "m-ft", None, "en", model="a-model")["reduction_abs"] == pytest.approx(0.6)
    assert one(summary, "dpo", "en", "en", model="a-model")["reduction_abs"] == pytest.approx(0.5)
    paradigms = [s["paradigm"] for s in summary["settings"] if s["model"] == "a-model"]
    assert paradigms == ["zs", "x-ft", "p-ft", "m-ft", "dpo"]


def test_backward_tolerance_without_model_seed_percent():
    df = frame().drop(columns=["model", "seed", "percent"])
    summary = summarize(df, info(seeds=(42, 43)))
    assert summary["seeds"] == [42]
    ft = one(summary, "x-ft", "en", "de")
    assert ft["seeds"] == [42] and ft["reduction_abs"] == pytest.approx(0.55)


def test_json_round_trip_with_numpy_types():
    df = seeds_frame()
    df["toxicity"] = df["toxicity"].astype(np.float32)
    df["sample"] = df["sample"].astype(np.int64)
    df["seed"] = df["seed"].astype(np.float64)  # e.g. read back from parquet
    df.loc[df["paradigm"] == "zs", "source"] = np.nan
    summary = summarize(df, info(seeds=(np.int64(1), 2), wall_time_s=float("nan")))
    again = json.loads(json.dumps(summary, allow_nan=False))
    assert again == summary
    assert again["run"]["wall_time_s"] is None
    assert again["run"]["seeds"] == [1, 2] and type(again["run"]["seeds"][0]) is int
    assert all(type(s) is int for s in again["seeds"])
    for s in again["settings"] + again["per_seed"]:
        for key in ("mean_toxicity", "std", "reduction_abs", "reduction_rel", "reduction_abs_std"):
            v = s.get(key)
            assert v is None or (type(v) is float and math.isfinite(v) and round(v, 6) == v)


@pytest.mark.parametrize("bad", [
    lambda df: df.drop(columns=["toxicity"]),
    lambda df: df.assign(toxicity=float("nan")),
    lambda df: df.assign(toxicity=1.5),
    lambda df: pd.concat([df, df.iloc[:1]]),
    lambda df: df.assign(seed=None),
    lambda df: df.assign(percent=12.5),
    lambda df: df.assign(percent=10),                                  # zs with a percent
    lambda df: df.assign(setting=df["setting"].where(df["prompt_id"] != "p1", "other")),
])
def test_bad_input(bad):
    with pytest.raises(XdetoxInputError):
        summarize(bad(frame()), info())


def test_same_prompt_under_two_seeds_is_no_duplicate():
    summary = summarize(seeds_frame(), info(seeds=(1, 2, 3)))
    assert len(summary["per_seed"]) == 5


# --------------------------------------------------------------------------- matrices, table


def test_result_matrix_per_paradigm():
    summary = summarize(grid_frame(), info(seeds=(1, 2)))
    xft = result_matrix(summary, MODEL, "x-ft")
    assert xft.index.name == "source" and list(xft.index) == ["en", "de"]
    assert list(xft.columns) == ["en", "de"]  # LANGS order
    # de: ZS 0.5 (seed 1) and 0.6 (seed 2); X-FT from en 0.2 -> reductions 0.3, 0.4
    assert xft.loc["en", "de"] == pytest.approx(0.35)
    assert xft.loc["de", "de"] == pytest.approx(0.15)

    pft = result_matrix(summary, MODEL, "p-ft")
    assert pft.index.name == "percent" and list(pft.index) == ["10%", "20%"]
    assert pft.loc["20%", "en"] == pytest.approx(0.35)
    mft = result_matrix(summary, MODEL, "m-ft")
    assert list(mft.index) == ["all"] and mft.loc["all", "en"] == pytest.approx(0.45)
    assert list(result_matrix(summary, MODEL, "dpo").index) == ["en"]
    zs = result_matrix(summary, MODEL, "zs")
    assert list(zs.index) == ["zs"] and zs.loc["zs", "de"] == pytest.approx(0.55)

    assert result_matrix(summary, MODEL, "x-ft", split="test_neutral").empty
    m = result_matrix(summarize(frame(), info()), MODEL, "x-ft")
    assert list(m.columns) == ["en", "es", "de", "ru"]
    assert math.isnan(m.loc["en", "ru"]) and math.isnan(m.loc["es", "en"])


def test_print_table_mean_and_std():
    text = print_table(summarize(seeds_frame(), info(seeds=(1, 2, 3))))
    lines = text.splitlines()
    assert lines[0].startswith(f"model {MODEL} · split test_toxic · n=2 prompts/target")
    assert "seeds 1, 2, 3" in lines[0] and "scorer toxclf-v1" in lines[0]
    zs = next(line for line in lines if line.startswith("de") and " ZS " in line)
    assert "0.600 ± 0.141" in zs
    ft = next(line for line in lines if "X-FT from en" in line)
    assert "0.333 ± 0.153" in ft and "+0.350 ± 0.071" in ft and "+58.6%" in ft
    assert ft.split()[5] == "3"  # seeds
    # 95% CI, p, q, silence bounds, length-matched (none here) and its CI and p, empty, new tokens, letters,
    # short, other script, silent, degenerate
    expected = seed_level_test({1: {"p1": 0.6, "p2": 0.2}, 2: {"p1": 0.3, "p2": 0.3}})
    ci = f"[{expected.ci_low:+.3f}, {expected.ci_high:+.3f}]"
    assert re.search(re.escape(ci) + r"\s+0\.\d\d\d\s+0\.\d\d\d\s+\[\+0\.350, \+0\.350\](\s+-){3}\s+0%\s+-\s+\d+"
                     r"\s+0%\s+0%\s+0%\s+0%$", ft), ft
    # ZS: no CI, p, q or bounds
    assert "95% CI (abs)" in lines[1] and zs.split()[-11:] == ["-", "-", "-", "-", "0%", "-", "7", "0%", "0%", "0%", "0%"]
    # measures without their scorer are left out of the printed table, and the table says so
    assert "ppl" not in lines[1] and "relevance" not in lines[1] and "in target lang" not in lines[1]
    assert "by sentence" not in lines[1]
    assert ("Not measured in this run: by sentence [95% CI], ppl, ppl vs ZS, in target lang, same-lang [95% CI] (n), "
            "relevance (vs ZS) (their scorers: sentences:<toxicity scorer>, ppl:<model>, lang-fidelity, "
            "relevance:<model>)." in text)


def test_print_table_several_models():
    data = rows("zs", "en", [0.5], model="m1") + rows("zs", "en", [0.4], model="m2")
    text = print_table(summarize(pd.DataFrame(data), info(model="m1, m2")))
    assert [line.split(" · ")[0] for line in text.splitlines() if line.startswith("model")] == [
        "model m1", "model m2"]
    assert print_table(summarize(pd.DataFrame(columns=list(data[0])), info())) == "(no results)"


def test_matrix_files_are_named_by_short_stable_aliases():
    from xdetox.specs import EMBEDDED_NAME

    aliases = model_aliases([EMBEDDED_NAME, "google/gemma-3-270m", "runs/my export/", "a b:c,d"])
    assert aliases == {EMBEDDED_NAME: "embedded", "google/gemma-3-270m": "gemma-3-270m",
                       "runs/my export/": "my_export", "a b:c,d": "a_b_c_d"}
    assert matrix_filename(aliases["google/gemma-3-270m"], "x-ft") == "matrix_gemma-3-270m_x-ft.csv"
    # two models with one short name keep their whole names: no file is written twice
    assert model_aliases(["org1/m", "org2/m", "x/y"]) == {"org1/m": "org1_m", "org2/m": "org2_m", "x/y": "y"}
    assert model_aliases(["org1/m", "org2/m"]) == model_aliases(["org2/m", "org1/m"])  # stable under order


# --------------------------------------------------------------------------- files


def evil_frame() -> pd.DataFrame:
    df = grid_frame()
    evil = "<script>alert(1)</script> a | b `code` [x](http://e.vil)\nnew line"
    pick = (df["setting"] == "x-ft:en") & (df["target"] == "de") & (df["prompt_id"] == "p1")
    df.loc[pick, "completion"] = evil
    return df


def test_write_report_files(tmp_path):
    run_dir = tmp_path / "run"
    summary = write_report(run_dir, evil_frame(), info(seeds=(1, 2)))

    stem = "matrix_gemma-3-270m_"
    matrices = [f"{stem}{p}.csv" for p in ("zs", "x-ft", "p-ft", "m-ft", "dpo")]
    matrices += [f"{stem}{p}_{kind}.csv" for p in ("x-ft", "p-ft", "m-ft", "dpo")
                 for kind in ("length_matched", "silent_unchanged", "silent_nontoxic")]
    names = [*matrices, "report.html", "report.md", "settings.parquet", "completions.parquet", "summary.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(names)  # no temp files left
    mtimes = [(run_dir / n).stat().st_mtime_ns for n in names]
    assert mtimes[-1] == max(mtimes)
    assert json.loads((run_dir / "summary.json").read_text()) == summary

    shapes = {"zs": (1, 2), "x-ft": (2, 2), "p-ft": (2, 2), "m-ft": (1, 2), "dpo": (1, 2)}
    for paradigm, shape in shapes.items():
        csv = pd.read_csv(run_dir / f"{stem}{paradigm}.csv", index_col=0)
        assert csv.shape == shape, paradigm
        assert list(csv.columns) == ["en", "de"]
        pd.testing.assert_frame_equal(
            csv, result_matrix(summary, MODEL, paradigm), check_names=False, check_dtype=False)
    pft = pd.read_csv(run_dir / f"{stem}p-ft.csv", index_col="percent")
    assert list(pft.index) == ["10%", "20%"] and pft.loc["10%", "de"] == pytest.approx(0.15)
    zs = pd.read_csv(run_dir / f"{stem}zs.csv", index_col="setting")
    assert zs.loc["zs", "en"] == pytest.approx(0.55)


def test_write_report_parquet_files_read_back_as_the_frames(tmp_path):
    """settings.parquet is the frame ``Run.settings()`` makes of summary.json; completions.parquet the
    completions frame as given (the rows of completions.jsonl), every column and value."""
    from xdetox.report import summary_frame

    completions = evil_frame()
    write_report(tmp_path, completions, info(seeds=(1, 2)))
    summary = json.loads((tmp_path / "summary.json").read_text())
    settings = pd.read_parquet(tmp_path / "settings.parquet")
    assert settings["seeds"].map(tuple).tolist() == [tuple(s["seeds"]) for s in summary["settings"]]
    expected = summary_frame(summary["settings"])
    assert {"ci95_low", "ci95_high", "flags.short", "degenerate_reasons.silent"} <= set(settings.columns)
    pd.testing.assert_frame_equal(settings.assign(seeds=settings["seeds"].map(tuple)), expected)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "completions.parquet"), completions)


def test_summary_frame_keeps_interval_columns_where_every_row_is_null():
    """A run whose cells all have one prompt (every ci95 null) has the columns of any other run."""
    from xdetox.report import summary_frame

    rows = [{"target": "en", "ci95": None, "reduction_silence_bounds": None, "seeds": [42], "note": None},
            {"target": "de", "ci95": None, "reduction_silence_bounds": [0.1, 0.3], "seeds": [42], "note": None}]
    frame = summary_frame(rows)
    assert list(frame.columns) == ["target", "ci95_low", "ci95_high", "reduction_silence_bounds_low",
                                   "reduction_silence_bounds_high", "seeds", "note"]
    assert frame["ci95_low"].isna().all() and frame["reduction_silence_bounds_high"].tolist()[1] == 0.3
    assert frame["seeds"].tolist() == [(42,), (42,)]


def test_report_html_is_escaped_offline_and_captioned(tmp_path):
    write_report(tmp_path, evil_frame(), info(seeds=(1, 2)))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a | b `code` [x](http://e.vil)" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|url\(""", page, re.I)
    images = re.findall(r'<img class="([a-z-]+)"[^>]* src="data:image/png;base64,', page)
    assert images == ["zs-bars", "heatmap", "heatmap", "heatmap", "heatmap", "pft-curve"]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    assert len(captions) == 6
    for caption in captions:
        assert f"model {MODEL} · split test_toxic · n=2 prompts/target · seeds 1, 2 · " \
               "scorer toxclf-v1" in caption
    for fact in ("max_new_tokens=20", "r=8", "2 epoch(s)", "wall time 12.5 s", "torch=&quot;2.4&quot;",
                 "configuration tiny", "ddof=1", "0.350 ± 0.071", "<th>95% CI (abs)</th><th>p</th>",
                 "[+0.350, +0.350]", "generalized pivot", "q &lt; 0.05"):
        assert fact in page, fact


def test_report_md_escapes_model_text_only(tmp_path):
    write_report(tmp_path, evil_frame(), info(seeds=(1, 2)))
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert f"# xdetox report: {MODEL}" in md
    assert "## google/gemma-3-270m, test_toxic" in md and "max_new_tokens=20" in md
    assert "&#95;" not in md.split("## Example completions")[0]  # our own prose is not escaped
    assert "<script>" not in md and "alert(1)</script>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "a &#124; b" in md and "`code`" not in md and "](http://e.vil)" not in md
    # the table row keeps its columns despite the pipe and the newline
    [line] = [line for line in md.splitlines() if "alert(1)" in line]
    assert line.startswith("| X-FT from en | 0.300 | ")
    assert line.count("|") == 4 and "<br>" in line


def test_write_report_replaces_old_summary_and_matrices(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    (tmp_path / "matrix_google_gemma-3-270m_zs.csv").write_text("an earlier report's name\n")
    write_report(tmp_path, frame(), info())
    assert json.loads((tmp_path / "summary.json").read_text())["model"] == MODEL
    assert sorted(p.name for p in tmp_path.glob("matrix_*.csv")) == [
        f"matrix_gemma-3-270m_{name}.csv" for name in
        ("x-ft", "x-ft_length_matched", "x-ft_silent_nontoxic", "x-ft_silent_unchanged", "zs")]


def test_write_report_zs_only(tmp_path):
    summary = write_report(tmp_path, pd.DataFrame(rows("zs", "de", [0.5])), info())
    assert summary["settings"][0]["paradigm"] == "zs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "completions.parquet", "matrix_gemma-3-270m_zs.csv", "report.html", "report.md", "settings.parquet",
        "summary.json"]
    assert 'class="heatmap"' not in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_write_report_varying_n(tmp_path):
    write_report(tmp_path, frame(), info())
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "n per target: en 2, es 2, de 3, ru 1 · seeds 13" in page


def test_md_escape():
    assert md_escape("<b>&|`\n") == "&lt;b&gt;&amp;&#124;&#96;<br>"
    assert md_escape(None) == ""


def test_completion_perplexity_is_a_geometric_mean_compared_with_zs():
    frame = pd.DataFrame(
        rows("zs", "en", [0.5, 0.5]) + rows("x-ft:en", "en", [0.2, 0.2]))
    frame["ppl"] = [10.0, 40.0, 20.0, 80.0]  # ZS geo-mean 20, X-FT geo-mean 40
    frame["lang_fidelity"] = [1.0, 1.0, 1.0, 0.0]
    summary = summarize(frame, info(ppl_scorer="ppl:base", lang_scorer="lang-fidelity"))
    zs, ft = summary["settings"]
    assert (zs["lang_fidelity"], ft["lang_fidelity"]) == (1.0, 0.5)
    assert zs["ppl_completion"] == pytest.approx(20.0) and zs["ppl_change"] is None
    assert ft["ppl_completion"] == pytest.approx(40.0) and ft["ppl_change"] == pytest.approx(1.0)
    assert "+100.0%" in print_table(summary)
    without = summarize(frame.drop(columns=["ppl"]), info())
    assert all(s["ppl_completion"] is None for s in without["settings"])


def test_relevance_is_a_mean_over_text_compared_with_zs_on_the_prompts_both_answered(tmp_path):
    # ZS answers p1-p3 on topic; the tuned model changes the subject on p1 and p2 and says nothing on p3
    frame = pd.DataFrame(rows("zs", "de", [0.8, 0.6, 0.4]) + rows("x-ft:en", "de", [0.1, 0.1, 0.1]))
    frame.loc[5, "completion"] = "..."  # silent: no toxicity, no relevance, not paired
    frame["relevance"] = [0.7, 0.5, 0.6, 0.1, 0.0, 0.9]
    summary = summarize(frame, info(relevance_scorer="relevance:base"))
    zs, ft = summary["settings"]
    assert zs["relevance"] == pytest.approx(0.6) and zs["relevance_change"] is None
    assert ft["relevance"] == pytest.approx(0.05), "the silent completion's value is dropped"
    assert ft["relevance_change"] == pytest.approx((0.1 - 0.7 + 0.0 - 0.5) / 2), "p1 and p2 only"
    assert "0.05 (-0.550)" in print_table(summary)
    write_report(tmp_path, frame, info(relevance_scorer="relevance:base"))
    assert "log-likelihood under base (one fixed reference model" in (tmp_path / "report.md").read_text()
    without = summarize(frame.drop(columns=["relevance"]), info())
    assert all(s["relevance"] is None and s["relevance_change"] is None for s in without["settings"])
    write_report(tmp_path, frame.drop(columns=["relevance"]), info())
    method = (tmp_path / "report.md").read_text()
    assert ("**Relevance**: relevance (how much a completion depends on its prompt): not measured in this run"
            in method), "a run without the scorer says so in a whole sentence"


def test_same_language_reduction_pairs_the_prompts_both_answered_in_the_target_language(tmp_path):
    # ZS answers p1, p2 in the target language, p3, p4 in another; the tuned model answers p1, p3, p4 in it
    frame = pd.DataFrame(rows("zs", "de", [0.8, 0.6, 0.1, 0.1]) + rows("x-ft:en", "de", [0.5, 0.9, 0.7, 0.3]))
    frame["lang_fidelity"] = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    summary = summarize(frame, info(lang_scorer="lang-fidelity"))
    zs, ft = summary["settings"]
    assert ft["reduction_abs"] == pytest.approx(0.4 - 0.6)  # all 4 prompts: the language shift included
    assert ft["reduction_same_language"] == pytest.approx(0.8 - 0.5) and ft["n_same_language"] == 1  # p1 only
    assert zs["reduction_same_language"] is None and zs["n_same_language"] is None
    # one pair: no interval (not one of width 0), and the cell says why
    assert ft["reduction_same_language_ci"] is None and ft["reduction_same_language_p"] is None
    assert ft["not_computed"] == {"reduction_same_language_ci": ONE_PROMPT}
    assert zs["reduction_same_language_ci"] is None and zs["reduction_same_language_p"] is None
    assert "+0.300 [n/c] (1)" in print_table(summary)
    without = summarize(frame.drop(columns=["lang_fidelity"]), info())
    assert all(s["reduction_same_language"] is None for s in without["settings"])
    written = write_report(tmp_path / "with", frame, info(lang_scorer="lang-fidelity"))
    assert "reduction_same_language" in written["analysis"]  # the transfer analysis on it too
    matrix = pd.read_csv(tmp_path / "with" / "matrix_gemma-3-270m_x-ft_same_language.csv", index_col=0)
    assert matrix.loc["en", "de"] == pytest.approx(0.3)
    plain = write_report(tmp_path / "without", frame.drop(columns=["lang_fidelity"]), info())
    assert "reduction_same_language" not in plain["analysis"]
    assert not list((tmp_path / "without").glob("*same_language*"))


# --------------------------------------------------------------------------- several scorers


def test_second_scorer_gets_its_own_summary_and_agreement(tmp_path):
    data = grid_frame()
    # the second scorer inverts the first on de and matches it on en
    data["toxicity:judge"] = np.where(data["target"] == "de", 1.0 - data["toxicity"], data["toxicity"])
    summary = write_report(tmp_path, data, info())
    assert summary["scorers"] == ["toxclf-v1", "judge"]
    primary = one(summary, "x-ft", "en", "de", percent=None)
    second = one({"settings": summary["by_scorer"]["judge"]}, "x-ft", "en", "de")
    # under the inverted scorer the reduction flips sign
    assert primary["reduction_abs"] == pytest.approx(-second["reduction_abs"])
    agreement = {a["lang"]: a for a in summary["scorer_agreement"]}
    assert set(agreement) == {"en", "de"}
    assert agreement["en"]["spearman"] == pytest.approx(1.0)
    assert agreement["en"]["agreement"] == 1.0
    assert agreement["de"]["spearman"] == pytest.approx(-1.0)
    assert agreement["en"]["n"] == len(data[data["target"] == "en"])
    page = (tmp_path / "report.html").read_text()
    assert 'id="scorers"' in page and "toxclf-v1 vs judge" in page
    assert "Toxicity scorers compared" in (tmp_path / "report.md").read_text()
    # a single-scorer run keeps the old shape


def test_sentence_level_reading_sits_beside_the_primary_reduction(tmp_path):
    """With ``sentences:<primary>`` among the scorers, every tuned cell carries that scorer's reduction, CI and q,
    and the tables show them in the by-sentence column; another second scorer fills nothing there."""
    data = grid_frame()
    data["toxicity:sentences:toxclf-v1"] = np.clip(data["toxicity"] + 0.25, 0.0, 1.0)
    summary = write_report(tmp_path, data, info())
    by_sentence = summary["by_scorer"]["sentences:toxclf-v1"]
    tuned = [s for s in summary["settings"] if s["paradigm"] != "zs"]
    assert tuned and all(s["reduction_sentence"] is not None for s in tuned)
    assert all(s["reduction_sentence"] is None for s in summary["settings"] if s["paradigm"] == "zs")
    for s in tuned:
        other = one({"settings": by_sentence}, s["paradigm"], s["source"], s["target"], percent=s["percent"])
        assert (s["reduction_sentence"], s["reduction_sentence_ci"], s["reduction_sentence_q"]) \
            == (other["reduction_abs"], other["ci95"], other["q_value"])
    cell = one(summary, "x-ft", "en", "de", percent=None)
    column = TABLE_HEADER.index("by sentence [95% CI]")
    rows = [table_row(r) for view in summary_views(summary) for r in by_target(view.results)
            if r.cell.setting.paradigm == "x-ft" and r.cell.setting.source == "en" and r.cell.target == "de"]
    row, = rows
    assert row[column].startswith(f"{cell['reduction_sentence']:+.3f}")
    assert "by sentence [95% CI]" in print_table(summary) and "by sentence" in (tmp_path / "report.md").read_text()
    data = data.rename(columns={"toxicity:sentences:toxclf-v1": "toxicity:judge"})
    other = summarize(data, info())
    assert all(s["reduction_sentence"] is None for s in other["settings"])
    assert "Not measured in this run: by sentence [95% CI]" in print_table(other)
    assert "by_scorer" not in summarize(grid_frame(), info())


def test_second_scorer_values_are_checked():
    data = grid_frame()
    data["toxicity:judge"] = 2.0
    with pytest.raises(XdetoxInputError, match="toxicity:judge must be a number"):
        summarize(data, info())


def test_empty_completions_and_new_tokens_are_reported(tmp_path):
    data = rows("zs", "en", [0.6, 0.4, 0.5, 0.5]) + rows("x-ft:en", "en", [0.2, 0.2, 0.2, 0.3])
    frame = pd.DataFrame(data)
    frame["n_tokens"] = [50, 50, 50, 50, 0, 0, 0, 7]
    frame.loc[4:6, "completion"] = ["", "  ", ""]  # three of the four X-FT completions are empty
    summary = write_report(tmp_path, frame, info())
    xft = one(summary, "x-ft", "en", "en")
    assert xft["empty_share"] == 0.75 and xft["new_tokens"] == 1.75
    assert one(summary, "zs", None, "en")["empty_share"] == 0.0
    assert "75%" in print_table(summary) and "Empty and silent completions" in (tmp_path / "report.html").read_text()
    assert summarize(frame.drop(columns=["n_tokens"]), info())["settings"][0]["new_tokens"] is None


# --------------------------------------------------------------------------- silence is not detoxification


def _with_completions(data: list[dict], texts: list[str]) -> list[dict]:
    for row, text in zip(data, texts):
        row["completion"] = text
    return data


def test_empty_completions_are_not_scored_and_pairs_need_text_on_both_sides():
    # ZS wrote p1..p4; the tuned model wrote p1 and p2 only (p3, p4 empty, with scores a scorer gave "").
    zs = rows("zs", "de", [0.8, 0.6, 0.4, 0.2])
    ft = _with_completions(rows("x-ft:en", "de", [0.5, 0.3, 0.19, 0.19]), ["a b", "c d", "", "  "])
    summary = summarize(pd.DataFrame(zs + ft), info())
    cell = one(summary, "x-ft", "en", "de")
    assert cell["mean_toxicity"] == pytest.approx(0.4)  # (0.5 + 0.3) / 2: the empty ones have no toxicity
    assert cell["reduction_abs"] == pytest.approx((0.8 + 0.6) / 2 - 0.4)  # paired on p1, p2 only
    assert cell["n"] == 4 and cell["n_paired"] == 2
    assert cell["empty_share"] == pytest.approx(0.5)
    assert cell["abstention_flag"] is True  # 50 % empty against ZS's 0 %
    assert one(summary, "zs", None, "de")["abstention_flag"] is None


def test_abstention_flag_needs_more_than_five_points():
    zs = _with_completions(rows("zs", "de", [0.5] * 20), ["text"] * 19 + [""])  # 5 % empty
    same = _with_completions(rows("x-ft:en", "de", [0.4] * 20), ["text"] * 18 + ["", ""])  # 10 %: +5 points
    more = _with_completions(rows("x-ft:es", "de", [0.4] * 20), ["text"] * 17 + [""] * 3)  # 15 %: +10 points
    summary = summarize(pd.DataFrame(zs + same + more), info())
    assert one(summary, "x-ft", "en", "de")["abstention_flag"] is False
    assert one(summary, "x-ft", "es", "de")["abstention_flag"] is True
    text = print_table(summary)
    assert "15% †" in text and "10% †" not in text and "abstains" in text


def test_a_change_of_language_flags_the_cell():
    hindi, english = "यह वाक्य हिंदी में लिखा है", "this one is written in English"
    zs = _with_completions(rows("zs", "hi", [0.5] * 20), [hindi] * 20)
    same = _with_completions(rows("x-ft:en", "hi", [0.4] * 20), [hindi] * 19 + [english])  # 5 %: +5 points
    switched = _with_completions(rows("x-ft:es", "hi", [0.4] * 20), [hindi] * 10 + [english] * 10)  # 50 %
    summary = summarize(pd.DataFrame(zs + same + switched), info())
    assert one(summary, "x-ft", "en", "hi")["language_flag"] is False
    assert one(summary, "x-ft", "es", "hi")["language_flag"] is True
    assert one(summary, "zs", None, "hi")["language_flag"] is None
    assert one(summary, "x-ft", "es", "hi", key="per_seed")["other_script_zs"] == 0.0
    text = print_table(summary)
    assert "50% ‡" in text and "5% ‡" not in text and "change of language" in text
    # a language that keeps the script (es answered in English): the measured language fidelity moves instead
    frame = pd.DataFrame(rows("zs", "es", [0.5] * 4) + rows("x-ft:en", "es", [0.3] * 4))
    frame["lang_fidelity"] = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    cell = one(summarize(frame, info(lang_scorer="lang-fidelity")), "x-ft", "en", "es")
    assert cell["flags"]["other_script"] == 0.0 and cell["language_flag"] is True
    assert "‡" not in print_table(summarize(frame.drop(columns=["lang_fidelity"]), info()))


def test_a_run_with_lang_fidelity_draws_the_same_language_heatmap_too(tmp_path):
    frame = pd.DataFrame(rows("zs", "es", [0.5] * 4) + rows("x-ft:en", "es", [0.3] * 4))
    frame["lang_fidelity"] = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    write_report(tmp_path, frame, info(lang_scorer="lang-fidelity"))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    alts = re.findall(r'<img class="heatmap" alt="([^"]+)"', page)
    assert alts == ["X-FT toxicity reduction heatmap",
                    "X-FT toxicity reduction heatmap, over the prompts both answered in the target language"]
    write_report(tmp_path / "without", frame.drop(columns=["lang_fidelity"]), info())
    assert len(re.findall(r'<img class="heatmap"', (tmp_path / "without" / "report.html").read_text())) == 1


def test_a_cell_whose_every_completion_is_empty_has_no_toxicity():
    zs = rows("zs", "de", [0.8, 0.6])
    ft = _with_completions(rows("x-ft:en", "de", [0.19, 0.19]), ["", ""])
    cell = one(summarize(pd.DataFrame(zs + ft), info()), "x-ft", "en", "de")
    assert cell["mean_toxicity"] is None and cell["reduction_abs"] is None and cell["ci95"] is None
    assert cell["empty_share"] == 1.0 and cell["abstention_flag"] is True


def test_a_written_completion_without_a_score_is_refused():
    data = rows("zs", "de", [0.8, float("nan")])
    with pytest.raises(XdetoxInputError, match="toxicity must be a number"):
        summarize(pd.DataFrame(data), info())


def test_length_matched_reduction_with_ci_and_p():
    zs = rows("zs", "de", [0.9, 0.9, 0.9, 0.9])
    ft = rows("x-ft:en", "de", [0.1, 0.1, 0.1, 0.1])
    for row, (cut, cut_zs) in zip(ft, [(0.2, 0.5), (0.3, 0.5), (0.4, 0.4), (None, None)]):
        row["toxicity_length_matched"], row["zs_toxicity_length_matched"] = cut, cut_zs
    for row in zs:  # ZS rows carry no length-matched scores
        row["toxicity_length_matched"] = row["zs_toxicity_length_matched"] = None
    summary = summarize(pd.DataFrame(zs + ft), info())
    cell = one(summary, "x-ft", "en", "de")
    assert cell["reduction_abs"] == pytest.approx(0.8)
    assert cell["reduction_length_matched"] == pytest.approx((0.3 + 0.2 + 0.0) / 3, abs=1e-6)  # rounded to 6
    assert cell["n_length_matched"] == 3
    expected = seed_level_test({13: {"p1": 0.3, "p2": 0.2, "p3": 0.0}})  # one seed: over the three pairs
    assert cell["reduction_length_matched_ci"] == pytest.approx([expected.ci_low, expected.ci_high], abs=1e-5)
    assert cell["reduction_length_matched_p"] == pytest.approx(expected.p_value, abs=1e-5)
    per_seed = one(summary, "x-ft", "en", "de", key="per_seed")
    assert per_seed["reduction_length_matched"] == pytest.approx(cell["reduction_length_matched"], abs=1e-6)
    assert one(summary, "zs", None, "de")["reduction_length_matched"] is None


def test_length_matched_matrix_and_analysis_in_the_written_report(tmp_path):
    data = grid_frame()
    data["toxicity_length_matched"] = [None if p == "zs" else 0.3 for p in data["paradigm"]]
    data["zs_toxicity_length_matched"] = [None if p == "zs" else 0.5 for p in data["paradigm"]]
    summary = write_report(tmp_path, data, info(seeds=(1, 2)))
    matrix = pd.read_csv(tmp_path / "matrix_gemma-3-270m_x-ft_length_matched.csv", index_col=0)
    assert matrix.loc["en", "de"] == pytest.approx(0.2)
    assert set(summary["analysis"]) == {"reduction_abs", "reduction_length_matched"}
    strength = summary["analysis"]["reduction_length_matched"]["groups"][0]["source_strength"]
    assert [row["mean"] for row in strength] == pytest.approx([0.2, 0.2])
    page = (tmp_path / "report.html").read_text()
    assert "Transfer analysis" in page and "length-matched" in page
    assert "Transfer analysis" in (tmp_path / "report.md").read_text()


def test_flag_shares_count_short_and_other_script_completions():
    zs = _with_completions(rows("zs", "ru", [0.5] * 4),
                           ["Это обычное длинное предложение", "Hello there my friend", "да", "  "])
    cell = one(summarize(pd.DataFrame(zs), info()), "zs", None, "ru")
    # three non-empty completions: one in Latin script, one short ("да"), one fine
    assert cell["flags"] == {"short": pytest.approx(1 / 3, abs=1e-6), "no_letters": 0.0,
                             "other_script": pytest.approx(1 / 3, abs=1e-6)}
    assert cell["empty_share"] == 0.25


def test_method_prints_the_scorers_validation_figures_for_the_run_languages(tmp_path):
    figures = {"paradetox_test": {"de": 0.905, "en": 0.974, "am": 0.5}, "pairwise": {"de": 0.97},
               "heldout": {}, "ece": {"de": 0.05}, "parallel_benign": {"en": 0.078, "de": 0.197},
               "parallel2_benign": {"en": 0.02, "de": 0.101, "zh": 0.05}}
    write_report(tmp_path / "with", frame(), info(scorer_validation=figures))
    text = (tmp_path / "with" / "report.md").read_text()
    line = next(line for line in text.splitlines() if "**Scorer validation**" in line)
    assert "paradetox test AUC: en 0.974, de 0.905" in line and "pairwise accuracy" in line and "am 0.5" not in line
    assert "held-out" not in line and "calibration error (ECE): de 0.050" in line
    assert "the same 40 benign sentences in each language: en 0.078, de 0.197" in line
    # parity over every language the figures have (zh too), each set apart; a set without figures says nothing
    assert "over all 2 languages: benign 0.119, second set benign 0.081" in line and "insults" not in line
    figures["intervals"] = {"parallel_benign": [0.1, 0.25], "parallel2_benign": None}
    write_report(tmp_path / "intervals", frame(), info(scorer_validation=figures))
    line = next(line for line in (tmp_path / "intervals" / "report.md").read_text().splitlines()
                if "**Scorer validation**" in line)
    assert ("languages [95% bootstrap interval over the sentences]: benign 0.119 [0.100, 0.250], second set"
            " benign 0.081" in line)
    write_report(tmp_path / "without", frame(), info())
    assert "xdetox scorer eval --scorer toxclf-v1" in (tmp_path / "without" / "report.md").read_text()


def test_punctuation_only_completions_are_silence_not_text_and_flag_abstention():
    zs = rows("zs", "en", [0.5] * 20)
    # 8 runs of dots (a scorer gave them 0.0), 12 written completions at 0.2
    dots = _with_completions(rows("x-ft:en", "en", [0.0] * 8 + [0.2] * 12),
                             [". . . . ."] * 8 + ["some words here"] * 12)
    summary = summarize(pd.DataFrame(zs + dots), info())
    cell = one(summary, "x-ft", "en", "en")
    assert cell["empty_share"] == 0 and cell["silent_share"] == pytest.approx(0.4)
    assert cell["mean_toxicity"] == pytest.approx(0.2), "the dots' scores are dropped"
    assert cell["reduction_abs"] == pytest.approx(0.3) and cell["n_paired"] == 12
    assert cell["flags"]["no_letters"] == 0.0, "flags describe the scored completions"
    assert cell["abstention_flag"] is True, "writing only dots is abstaining too"
    assert one(summary, "zs", None, "en")["silent_share"] == 0


def test_a_length_matched_pair_needs_text_on_both_sides():
    zs = _with_completions(rows("zs", "de", [0.9] * 3), ["ein Satz hier", "! ! ! !", "noch ein Satz"])
    ft = rows("x-ft:en", "de", [0.1] * 3)
    for row in ft:  # a store from before silence was excluded: every pair carries scores
        row["toxicity_length_matched"], row["zs_toxicity_length_matched"] = 0.1, 0.6
    for row in zs:
        row["toxicity_length_matched"] = row["zs_toxicity_length_matched"] = None
    cell = one(summarize(pd.DataFrame(zs + ft), info()), "x-ft", "en", "de")
    assert cell["n_length_matched"] == 2 and cell["n_paired"] == 2
    assert cell["silent_share"] == 0 and one(summarize(pd.DataFrame(zs + ft), info()), "zs", None, "de")[
        "silent_share"] == pytest.approx(1 / 3)


def test_report_gives_this_attempts_time_and_the_total(tmp_path):
    summary = write_report(tmp_path, frame(), info(wall_time_s=3.0, total_time_s=10.5, attempts=2))
    run = summary["run"]
    assert (run["wall_time_s"], run["total_time_s"], run["attempts"]) == (3.0, 10.5, 2)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "wall time 3.0 s for the latest attempt, 10.5 s in total over 2 attempts" in md
    assert "counts up to its last committed write" in md


def test_same_language_interval_is_the_seed_level_test_of_the_in_language_prompts():
    # values in summary.json are rounded (jsonable): compared to 1e-4
    # seed 1: p1-p3 in the target language for both; seed 2: p3 answered in another language by the tuned model
    frame = pd.DataFrame(rows("zs", "de", [0.9, 0.6, 0.4], seed=1) + rows("x-ft:en", "de", [0.2, 0.5, 0.1], seed=1)
                         + rows("zs", "de", [0.8, 0.7, 0.5], seed=2) + rows("x-ft:en", "de", [0.4, 0.3, 0.0], seed=2))
    frame["lang_fidelity"] = [1.0] * 9 + [1.0, 1.0, 0.0]
    ft = summarize(frame, info(seeds=(1, 2), lang_scorer="lang-fidelity"))["settings"][1]
    per_seed = [(0.9 + 0.6 + 0.4 - 0.2 - 0.5 - 0.1) / 3, (0.8 + 0.7 - 0.4 - 0.3) / 2]
    assert ft["reduction_same_language"] == pytest.approx(np.mean(per_seed), abs=1e-4)
    assert ft["reduction_same_language_std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-4)
    expected = seed_level_test({1: {"p1": 0.7, "p2": 0.1, "p3": 0.3}, 2: {"p1": 0.4, "p2": 0.4}})
    assert ft["reduction_same_language_ci"] == pytest.approx([expected.ci_low, expected.ci_high], abs=1e-4)
    assert ft["reduction_same_language_p"] == pytest.approx(expected.p_value, abs=1e-4)
    assert ft["n_same_language"] == 5  # 3 + 2 prompts, summed over seeds


def test_same_language_reductions_get_their_own_q_values_and_star():
    from scipy.stats import false_discovery_control

    noise = [0.1 if i % 2 else -0.1 for i in range(20)]  # the per-prompt differences vary around the drop
    data = []
    for source, drop in (("en", 0.4), ("es", 0.02), ("de", 0.3)):
        data += rows(f"x-ft:{source}", "de", [0.5 - drop + e for e in noise])
    frame = pd.DataFrame(rows("zs", "de", [0.5] * 20) + data)
    frame["lang_fidelity"] = 1.0
    summary = summarize(frame, info(lang_scorer="lang-fidelity"))
    tuned = [c for c in summary["settings"] if c["paradigm"] != "zs"]
    expected = false_discovery_control([c["reduction_same_language_p"] for c in tuned])
    assert [c["reduction_same_language_q"] for c in tuned] == pytest.approx(list(expected), abs=1e-5)
    assert "all 3 tuned cells with one" in summary["q_family_same_language"]
    assert one(summary, "zs", None, "de")["reduction_same_language_q"] is None
    text = print_table(summary)
    assert re.search(r"\+0\.400 \[[^]]+\] \* \(20\)", text), text  # the same-lang column's star
    assert re.search(r"\+0\.020 \[[^]]+\] \(20\)", text), text  # es: not significant, no star
    assert "q_family_same_language" in text
    assert summarize(frame.drop(columns=["lang_fidelity"]), info())["q_family_same_language"] is None


# --------------------------------------------------------------------------- degeneracy, silence bounds, q


def test_degenerate_share_letters_and_their_abstention_flag():
    zs = _with_completions(rows("zs", "en", [0.5] * 20), ["a plain sentence here"] * 20)
    # 4 of 20 repeat one phrase (degenerate, yet text: scored), 16 write; 20 % degenerate against ZS's 0 %
    loop = _with_completions(rows("x-ft:en", "en", [0.1] * 20),
                             ["I am sorry. I am sorry. I am sorry. I am sorry. I am sorry."] * 4
                             + ["a plain sentence here"] * 16)
    summary = summarize(pd.DataFrame(zs + loop), info())
    cell = one(summary, "x-ft", "en", "en")
    assert cell["silent_share"] == 0 and cell["degenerate_share"] == pytest.approx(0.2)
    assert cell["abstention_flag"] is True, "degenerate text moves more than 5 points from ZS"
    assert cell["mean_toxicity"] == pytest.approx(0.1), "degenerate text is still scored"
    zs_cell = one(summary, "zs", None, "en")
    assert zs_cell["degenerate_share"] == 0
    assert zs_cell["letters"] == pytest.approx(len("aplainsentencehere"))
    assert cell["letters"] == pytest.approx((4 * 5 * len("Iamsorry") + 16 * len("aplainsentencehere")) / 20)
    per_seed = one(summary, "x-ft", "en", "en", key="per_seed")
    assert per_seed["degenerate_share_zs"] == 0 and per_seed["degenerate_share"] == pytest.approx(0.2)
    assert cell["degenerate_reasons"] == {"silent": 0, "no_letters": 0, "letterless": 0, "repetitive": 0.2}
    assert "degenerate" in print_table(summary)


def test_silence_bounds_count_silent_completions_as_unchanged_and_as_non_toxic():
    zs = rows("zs", "de", [0.8, 0.6, 0.4, 0.2])
    ft = _with_completions(rows("x-ft:en", "de", [0.2, 0.2, 0.0, 0.0]), ["ein Satz", "ein Satz", ". . .", ""])
    cell = one(summarize(pd.DataFrame(zs + ft), info()), "x-ft", "en", "de")
    assert cell["reduction_abs"] == pytest.approx(0.5)  # p1, p2 only: (0.6 + 0.4) / 2
    # unchanged: p3, p4 count 0; non-toxic: they count their ZS toxicity
    assert cell["reduction_silence_bounds"] == pytest.approx([(0.6 + 0.4) / 4, (0.6 + 0.4 + 0.4 + 0.2) / 4])
    assert one(summarize(pd.DataFrame(zs + ft), info()), "zs", None, "de")["reduction_silence_bounds"] is None


def test_silence_bounds_have_their_matrices(tmp_path):
    zs = rows("zs", "de", [0.8, 0.6, 0.4, 0.2])
    ft = _with_completions(rows("x-ft:en", "de", [0.2, 0.2, 0.0, 0.0]), ["ein Satz", "ein Satz", ". . .", ""])
    write_report(tmp_path, pd.DataFrame(zs + ft), info())
    low = pd.read_csv(tmp_path / "matrix_gemma-3-270m_x-ft_silent_unchanged.csv", index_col=0)
    high = pd.read_csv(tmp_path / "matrix_gemma-3-270m_x-ft_silent_nontoxic.csv", index_col=0)
    assert low.loc["en", "de"] == pytest.approx(0.25) and high.loc["en", "de"] == pytest.approx(0.4)


def test_silence_bounds_leave_out_the_prompts_zs_was_silent_on():
    zs = _with_completions(rows("zs", "de", [0.8, 0.6]), ["ein Satz", "? ? ?"])
    ft = _with_completions(rows("x-ft:en", "de", [0.2, 0.0]), ["ein Satz", ". ."])
    cell = one(summarize(pd.DataFrame(zs + ft), info()), "x-ft", "en", "de")
    assert cell["reduction_silence_bounds"] == pytest.approx([0.6, 0.6])


def test_q_values_adjust_every_tuned_cell_and_name_their_family():
    summary = summarize(frame(), info())
    tuned = [c for c in summary["settings"] if c["paradigm"] != "zs"]
    tested = [c for c in tuned if c["p_value"] is not None]
    assert tested and all(c["q_value"] >= c["p_value"] - 1e-9 for c in tested)
    assert all(c["q_value"] is None for c in summary["settings"] if c["p_value"] is None)
    assert f"all {len(tested)} tuned cells" in summary["q_family"]
    from scipy.stats import false_discovery_control

    expected = false_discovery_control([c["p_value"] for c in tested])
    assert [c["q_value"] for c in tested] == pytest.approx(list(expected), abs=1e-5)


def test_one_seed_says_its_interval_covers_sampling_variance_only(tmp_path):
    summary = write_report(tmp_path, frame(), info())
    assert {c["ci_unit"] for c in summary["settings"] if c["ci95"]} == {"prompts"}
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "sampling variance only" in md
    several = summarize(seeds_frame(), info(seeds=(1, 2, 3)))
    assert one(several, "x-ft", "en", "de")["ci_unit"] == "seeds"


def test_text_normalisation_is_in_the_summary_and_the_method(tmp_path):
    summary = write_report(tmp_path, frame(), info(text_normalisation="v1"))
    assert summary["text_normalisation"] == "v1"
    assert "text_normalisation v1" in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert summarize(frame(), info())["text_normalisation"] == "none"
