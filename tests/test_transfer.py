"""Tests for xdetox.report.transfer: hand-made summaries with known answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xdetox.report.transfer import analysis_html, analysis_markdown, transfer_analysis

MODEL = "google/gemma-3-270m"
SCRIPT = {"en": "L", "es": "L", "de": "L", "uk": "C", "ru": "C", "zh": "zh"}


def cell(paradigm: str, target: str, value: float | None = None, source: str | None = None,
         percent: int | None = None, model: str = MODEL, split: str = "test_toxic",
         **extra) -> dict:
    """A settings cell; reduction_abs = value, mean_toxicity = 0.5 - value."""
    return {"model": model, "paradigm": paradigm, "source": source, "percent": percent,
            "target": target, "split": split, "n": 100, "seeds": [0],
            "mean_toxicity": 0.5 - (value or 0.0), "reduction_abs": value, "ci95": None,
            "p_value": None, **extra}


def xft(source: str, target: str, value: float, **extra) -> dict:
    return cell("x-ft", target, value, source=source, **extra)


def summary(*cells: dict, per_seed: list[dict] = ()) -> dict:
    return {"settings": list(cells), "per_seed": list(per_seed)}


def only_group(result: dict) -> dict:
    assert len(result["groups"]) == 1
    return result["groups"][0]


# ---------------------------------------------------------------- same_script

def script_grid(same: float, other: float) -> dict:
    langs = ["en", "es", "ru", "uk", "zh"]
    return summary(cell("zs", "en"), *(
        xft(s, t, same if SCRIPT[s] == SCRIPT[t] else other)
        for s in langs for t in langs if s != t))


def test_same_script_known_diff_and_exact_p():
    part = only_group(transfer_analysis(script_grid(0.3, 0.1)))["same_script"]
    rows = {r["target"]: r for r in part["targets"]}
    assert list(rows) == ["en", "es", "uk", "ru"]  # zh has no same-script source: left out
    assert rows["en"]["same_sources"] == ["es"]
    assert rows["en"]["other_sources"] == ["zh", "uk", "ru"]  # LANGS order
    for r in rows.values():
        assert r["same"] == pytest.approx(0.3) and r["other"] == pytest.approx(0.1)
        assert r["diff"] == pytest.approx(0.2)
        assert r["p_value"] == pytest.approx(1 / 4)  # 4 labelings, only the observed one hits
    assert part["mean_diff"] == pytest.approx(0.2)
    assert part["p_value"] == pytest.approx(1 / 4 ** 4)  # stratified: 256 labelings


def test_same_script_identical_values_give_p_one():
    part = only_group(transfer_analysis(script_grid(0.2, 0.2)))["same_script"]
    assert all(r["diff"] == pytest.approx(0.0) for r in part["targets"])
    assert all(r["p_value"] == 1.0 for r in part["targets"])
    assert part["mean_diff"] == pytest.approx(0.0) and part["p_value"] == 1.0


@pytest.mark.parametrize(("ru", "en", "es", "diff", "p"), [
    (0.5, 0.2, 0.1, 0.35, 1 / 3),  # relabelings give -0.1 and -0.25
    (0.1, 0.5, 0.2, -0.25, 2 / 3),  # relabelings give 0.35 (|.| >= 0.25) and -0.1
])
def test_same_script_exact_enumeration_by_hand(ru, en, es, diff, p):
    s = summary(xft("ru", "uk", ru), xft("en", "uk", en), xft("es", "uk", es))
    part = only_group(transfer_analysis(s))["same_script"]
    (row,) = part["targets"]
    assert (row["target"], row["same_sources"]) == ("uk", ["ru"])
    assert row["other_sources"] == ["en", "es"]
    assert row["diff"] == pytest.approx(diff)
    assert row["p_value"] == pytest.approx(p)
    assert part["p_value"] == pytest.approx(p)


def test_random_permutations_use_plus_one_formula_and_are_deterministic():
    s = summary(xft("ru", "uk", 0.5), xft("en", "uk", 0.2), xft("es", "uk", 0.1))
    first = transfer_analysis(s, n_perm=2, seed=3)  # 3 labelings > 2: random
    p = only_group(first)["same_script"]["p_value"]
    assert p in (1 / 3, 2 / 3, 1.0)
    assert first == transfer_analysis(s, n_perm=2, seed=3)


# ---------------------------------------------------------------- source_strength

def strength_summary() -> dict:
    per_seed = [{**xft("en", t, v), "seed": seed}
                for t, values in (("es", (0.1, 0.3)), ("de", (0.3, 0.5)))
                for seed, v in enumerate(values)]
    return summary(
        xft("en", "en", 0.9), xft("en", "es", 0.2, lang_fidelity=0.8),
        xft("en", "de", 0.4, lang_fidelity=0.6, empty_share=0.1, silent_share=0.3),
        xft("zh", "en", 0.1), xft("zh", "es", 0.1), xft("ru", "en", 0.5),
        cell("dpo", "es", 0.2, source="en"), per_seed=per_seed)


def test_source_strength_ranks_means_and_cis():
    group = only_group(transfer_analysis(strength_summary(), n_boot=2000))
    rows = group["source_strength"]
    assert [(r["rank"], r["source"], r["n_targets"]) for r in rows] == [
        (1, "ru", 1), (2, "en", 2), (3, "zh", 2)]
    tied = only_group(transfer_analysis(script_grid(0.3, 0.1), n_boot=100))["source_strength"]
    assert [r["source"] for r in tied] == ["en", "es", "uk", "ru", "zh"]  # ties in LANGS order
    means = {r["source"]: r["mean"] for r in rows}
    assert means == pytest.approx({"ru": 0.5, "en": 0.3, "zh": 0.1})  # en's self cell left out
    en = rows[1]
    assert 0.1 <= en["ci95"][0] < 0.3 < en["ci95"][1] <= 0.5  # seeds vary: a real interval
    for flat in (rows[0], rows[2]):  # one value / equal values: the CI is a point
        assert flat["ci95"] == pytest.approx([flat["mean"], flat["mean"]])
    assert en["lang_fidelity"] == pytest.approx(0.7)
    assert en["empty_share"] == pytest.approx(0.1)
    assert en["silent_share"] == pytest.approx(0.3), "the mean of the targets that have it"
    assert en["ppl_ref_change"] is None
    (dpo,) = group["dpo_source_strength"]
    assert (dpo["source"], dpo["rank"], dpo["mean"]) == ("en", 1, pytest.approx(0.2))


def test_source_strength_without_per_seed_bootstraps_targets():
    s = strength_summary()
    s["per_seed"] = []
    en = only_group(transfer_analysis(s, n_boot=2000))["source_strength"][1]
    assert en["source"] == "en"
    assert 0.2 <= en["ci95"][0] <= 0.3 <= en["ci95"][1] <= 0.4
    assert only_group(transfer_analysis(script_grid(0.3, 0.1)))["dpo_source_strength"] is None


# ---------------------------------------------------------------- self_vs_cross

def test_self_vs_cross_known_diff_and_sign_flip_p():
    s = summary(xft("en", "en", 0.5, lang_fidelity=1.0), xft("en", "es", 0.3, lang_fidelity=0.5),
                xft("en", "de", 0.1, lang_fidelity=0.7),
                xft("es", "es", 0.4), xft("es", "en", 0.2),
                xft("ru", "ru", 0.2), xft("ru", "en", 0.1),
                xft("zh", "zh", 0.9))  # self only: left out
    part = only_group(transfer_analysis(s))["self_vs_cross"]
    rows = {r["source"]: r for r in part["sources"]}
    assert list(rows) == ["en", "es", "ru"]
    assert rows["en"]["cross"] == pytest.approx(0.2) and rows["en"]["n_cross"] == 2
    assert [rows[k]["diff"] for k in rows] == pytest.approx([0.3, 0.2, 0.1])
    assert rows["en"]["self_lang_fidelity"] == 1.0
    assert rows["en"]["cross_lang_fidelity"] == pytest.approx(0.6)
    assert part["mean_self"] == pytest.approx(1.1 / 3)
    assert part["mean_cross"] == pytest.approx(0.5 / 3)
    assert part["mean_diff"] == pytest.approx(0.2)
    # 8 sign patterns of (0.3, 0.2, 0.1): only +++ and --- reach |mean| >= 0.2
    assert part["p_value"] == pytest.approx(2 / 8)


# ---------------------------------------------------------------- data_efficiency

def test_data_efficiency_curve_order_and_values():
    s = summary(
        *(cell("p-ft", t, v, percent=20, new_tokens=12.0) for t, v in (("en", 0.2), ("es", 0.4))),
        *(cell("zs", t, None, new_tokens=10.0) for t in ("es", "en")),
        *(cell("p-ft", t, v, percent=10) for t, v in (("en", 0.1), ("es", 0.1))),
        cell("m-ft", "en", 0.4, lang_fidelity=0.9), cell("m-ft", "es", 0.6),
        cell("p-ft", "en", 0.3, percent=30))
    part = only_group(transfer_analysis(s))["data_efficiency"]
    mean = part["mean"]
    assert [(p["point"], p["percent"]) for p in mean] == [
        ("zs", 0), ("p-ft 10%", 10), ("p-ft 20%", 20), ("p-ft 30%", 30), ("m-ft", 100)]
    assert [p["metric"] for p in mean] == pytest.approx([0.0, 0.1, 0.3, 0.3, 0.5])
    assert [p["mean_toxicity"] for p in mean] == pytest.approx([0.5, 0.4, 0.2, 0.2, 0.0])
    assert mean[0]["new_tokens"] == 10.0 and mean[2]["new_tokens"] == 12.0
    assert mean[1]["new_tokens"] is None
    assert mean[4]["lang_fidelity"] == 0.9  # the mean of the available values
    assert list(part["by_target"]) == ["en", "es"]
    assert [p["point"] for p in part["by_target"]["es"]] == ["zs", "p-ft 10%", "p-ft 20%", "m-ft"]
    assert [p["metric"] for p in part["by_target"]["en"]] == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])


# ---------------------------------------------------------------- missing parts, metric, groups

def test_missing_parts_are_none_with_sentences():
    s = summary(cell("zs", "en"), cell("zs", "es"), xft("en", "en", 0.3), xft("en", "es", 0.2))
    group = only_group(transfer_analysis(s))
    assert group["same_script"] is None and group["data_efficiency"] is None
    assert group["source_strength"][0]["source"] == "en"
    assert group["self_vs_cross"]["mean_diff"] == pytest.approx(0.1)
    assert ("same_script: needs x-ft from at least two scripts; has x-ft from en only"
            in group["missing"])
    assert ("data_efficiency: needs zs and at least one p-ft or m-ft cell; has zs"
            in group["missing"])
    bare = only_group(transfer_analysis(summary(cell("zs", "en"))))
    assert bare["source_strength"] is None and bare["self_vs_cross"] is None
    assert any(m.startswith("source_strength: needs x-ft cells with reduction_abs")
               and m.endswith("has no x-ft cells with reduction_abs") for m in bare["missing"])
    assert any(m.startswith("self_vs_cross:") for m in bare["missing"])


def test_metric_reads_its_key_and_skips_cells_without_it():
    rlm = "reduction_length_matched"
    s = summary(xft("en", "es", 0.9, **{rlm: 0.3}), xft("en", "de", 0.9, **{rlm: 0.1}),
                xft("en", "zh", 0.9), xft("ru", "es", 0.9, **{rlm: None}),
                xft("en", "en", 0.9, **{rlm: 0.5}),
                per_seed=[{**xft("en", "es", 0.9), "seed": 0}])  # per_seed lacks rlm
    result = transfer_analysis(s, metric=rlm)
    assert result["metric"] == rlm
    group = only_group(result)
    (en,) = group["source_strength"]
    assert (en["source"], en["n_targets"], en["mean"]) == ("en", 2, pytest.approx(0.2))
    assert group["self_vs_cross"]["sources"][0]["diff"] == pytest.approx(0.3)
    assert group["same_script"] is None  # ru -> es lacks the metric: one script left


def test_groups_per_model_and_split_and_json_safe():
    s = summary(xft("en", "es", 0.2), xft("en", "es", 0.4, split="test_neutral"),
                xft("en", "es", 0.6, model="other", lang_fidelity=float("nan")))
    result = transfer_analysis(s)
    assert [(g["model"], g["split"]) for g in result["groups"]] == [
        (MODEL, "test_toxic"), (MODEL, "test_neutral"), ("other", "test_toxic")]
    assert [g["source_strength"][0]["mean"] for g in result["groups"]] == pytest.approx(
        [0.2, 0.4, 0.6])
    assert result["groups"][2]["source_strength"][0]["lang_fidelity"] is None  # NaN -> None
    full = transfer_analysis(strength_summary(), n_boot=200, n_perm=200)
    assert json.loads(json.dumps(full, allow_nan=False)) == full


# ---------------------------------------------------------------- rendering, imports

def test_markdown_and_html_show_the_numbers_and_escape():
    s = script_grid(0.3, 0.1)
    for c in s["settings"]:
        c["model"] = "<script>alert(1)</script>"
    s["settings"].append(cell("m-ft", "en", 0.25, model=s["settings"][0]["model"]))
    analysis = transfer_analysis(s, n_boot=200)
    md = analysis_markdown(analysis)
    assert md.startswith("## Transfer analysis\n\nValues are reduction_abs, the mean over seeds")
    for text in ("### <script>", "0.200", "0.0039", "0.250", "| m-ft |", "Missing: self_vs_cross"):
        assert text in md
    page = analysis_html(analysis)
    assert "<h2>Transfer analysis</h2>" in page and "<table>" in page
    assert "0.200" in page and "0.0039" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for c in s["settings"]:
        c["reduction_length_matched"] = c.get("reduction_abs")
    matched = analysis_markdown(transfer_analysis(s, metric="reduction_length_matched", n_boot=200))
    assert matched.startswith("## Transfer analysis: length-matched reductions\n\nValues are "
                              "reduction_length_matched"), "each reduction's section has its own heading"


def test_import_does_not_load_torch():
    code = "import sys, xdetox.report.transfer; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
