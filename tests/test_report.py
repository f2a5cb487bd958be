"""Tests for xdetox.report: hand-made completions with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from xdetox.errors import XdetoxInputError
from xdetox.report import (
    RunInfo,
    md_escape,
    print_table,
    reduction_matrix,
    summarize,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def info(**over) -> RunInfo:
    base = dict(
        model="google/gemma-3-270m", scorer="toxclf-v1", seed=13, epochs=2, limit=None,
        decode={"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 20, "template": "{text}"},
        lora={"r": 8, "alpha": 16, "dropout": 0.05},
        versions={"xdetox": "0.1.0", "torch": "2.4"}, device="cpu", wall_time_s=12.5,
        started="2025-01-01T00:00:00+00:00",
    )
    base.update(over)
    return RunInfo(**base)


def rows(setting, target, tox, split="test_toxic", ids=None, sample=0, completion=None):
    paradigm, _, source = setting.partition(":")
    ids = ids or [f"p{i + 1}" for i in range(len(tox))]
    return [
        {
            "setting": setting, "paradigm": paradigm, "source": source or None,
            "target": target, "split": split, "prompt_id": pid, "sample": sample,
            "prompt": f"prompt {pid} in {target}",
            "completion": completion or f"{setting} says {pid}", "toxicity": t,
        }
        for pid, t in zip(ids, tox)
    ]


def frame() -> pd.DataFrame:
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
    df = pd.DataFrame(data)
    return df.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


def find(summary, paradigm, source, target, split="test_toxic"):
    hits = [
        s for s in summary["settings"]
        if (s["paradigm"], s["source"], s["target"], s["split"]) == (paradigm, source, target, split)
    ]
    assert len(hits) == 1, hits
    return hits[0]


def test_summary_shape_and_order():
    summary = summarize(frame(), info())
    assert set(summary) == {"model", "scorer", "seed", "run", "settings"}
    assert summary["model"] == "google/gemma-3-270m"
    assert summary["scorer"] == "toxclf-v1"
    assert summary["seed"] == 13
    assert summary["run"] == info().to_dict()
    keys = {"paradigm", "source", "target", "split", "n", "mean_toxicity",
            "reduction_abs", "reduction_rel"}
    assert all(set(s) == keys for s in summary["settings"])
    order = [(s["paradigm"], s["source"], s["target"]) for s in summary["settings"]]
    assert order == [
        ("zs", None, "en"), ("zs", None, "es"), ("zs", None, "de"),
        ("x-ft", "en", "en"), ("x-ft", "en", "es"), ("x-ft", "en", "de"), ("x-ft", "en", "ru"),
        ("x-ft", "es", "de"),
    ]


def test_reduction_uses_common_prompts():
    summary = summarize(frame(), info())
    zs_de = find(summary, "zs", None, "de")
    assert zs_de["n"] == 3
    assert zs_de["mean_toxicity"] == pytest.approx(0.6)
    assert zs_de["reduction_abs"] is None and zs_de["reduction_rel"] is None

    ft = find(summary, "x-ft", "en", "de")
    assert ft["n"] == 2
    assert ft["mean_toxicity"] == pytest.approx(0.15)
    # ZS on {p1, p2} = 0.7, not 0.6 over all three prompts
    assert ft["reduction_abs"] == pytest.approx(0.55)
    assert ft["reduction_rel"] == pytest.approx(round(0.55 / 0.7, 6))

    es_de = find(summary, "x-ft", "es", "de")
    assert es_de["reduction_abs"] == pytest.approx(0.2)
    assert es_de["reduction_rel"] == pytest.approx(0.333333)

    en_en = find(summary, "x-ft", "en", "en")
    assert en_en["reduction_abs"] == pytest.approx(0.3)
    assert en_en["reduction_rel"] == pytest.approx(0.75)


def test_null_reductions_zero_and_missing_zs():
    summary = summarize(frame(), info())
    es = find(summary, "x-ft", "en", "es")
    assert es["reduction_abs"] == pytest.approx(-0.1)
    assert es["reduction_rel"] is None          # ZS mean is 0
    ru = find(summary, "x-ft", "en", "ru")
    assert ru["reduction_abs"] is None and ru["reduction_rel"] is None
    assert ru["mean_toxicity"] == pytest.approx(0.3)


def test_mean_over_completions_and_n_over_prompts():
    data = (
        rows("zs", "de", [0.2, 0.4]) + rows("zs", "de", [0.6, 0.8], sample=1)
        + rows("x-ft:en", "de", [0.0, 0.2]) + rows("x-ft:en", "de", [0.2, 0.0], sample=1)
    )
    summary = summarize(pd.DataFrame(data), info())
    zs = find(summary, "zs", None, "de")
    assert zs["n"] == 2 and zs["mean_toxicity"] == pytest.approx(0.5)
    ft = find(summary, "x-ft", "en", "de")
    assert ft["reduction_abs"] == pytest.approx(0.4)


def test_json_round_trip_with_numpy_types():
    df = frame()
    df["toxicity"] = df["toxicity"].astype(np.float32)
    df["sample"] = df["sample"].astype(np.int64)
    df.loc[df["paradigm"] == "zs", "source"] = np.nan  # e.g. read back from parquet
    summary = summarize(df, info(seed=np.int64(13), wall_time_s=float("nan")))
    text = json.dumps(summary, allow_nan=False)
    again = json.loads(text)
    assert again == summary
    assert again["run"]["wall_time_s"] is None
    assert type(again["seed"]) is int
    for s in again["settings"]:
        for key in ("mean_toxicity", "reduction_abs", "reduction_rel"):
            v = s[key]
            assert v is None or (type(v) is float and math.isfinite(v) and round(v, 6) == v)


def test_reduction_matrix():
    m = reduction_matrix(summarize(frame(), info()))
    assert m.index.name == "source"
    assert list(m.index) == ["en", "es"]
    assert list(m.columns) == ["en", "es", "de", "ru"]  # LANGS order
    assert m.shape == (2, 4)
    assert m.loc["en", "de"] == pytest.approx(0.55)
    assert m.loc["es", "de"] == pytest.approx(0.2)
    assert math.isnan(m.loc["en", "ru"])   # no ZS
    assert math.isnan(m.loc["es", "en"])   # not run
    assert reduction_matrix(summarize(frame(), info()), split="test_neutral").empty


def test_print_table():
    text = print_table(summarize(frame(), info()))
    lines = text.splitlines()
    assert "test_toxic" in lines[0]
    de_en = next(line for line in lines if line.startswith("de") and "X-FT from en" in line)
    assert "0.600" in de_en and "0.150" in de_en and "+0.550" in de_en and "+78.6%" in de_en
    ru = next(line for line in lines if line.startswith("ru"))
    assert ru.split()[2] == "-"  # no ZS


def test_write_report(tmp_path):
    df = frame()
    evil = "<script>alert(1)</script> a | b `code` [x](http://e.vil)\nnew line"
    df.loc[(df["setting"] == "x-ft:en") & (df["target"] == "de") & (df["prompt_id"] == "p1"),
           "completion"] = evil
    run_dir = tmp_path / "run"
    summary = write_report(run_dir, df, info())

    names = ["matrix_reduction.csv", "heatmap_reduction.png", "report.md", "summary.json"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(names)  # no temp files left
    mtimes = [(run_dir / n).stat().st_mtime_ns for n in names]
    assert mtimes[-1] == max(mtimes)

    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert (run_dir / "heatmap_reduction.png").read_bytes()[:8] == PNG_MAGIC

    csv = pd.read_csv(run_dir / "matrix_reduction.csv", index_col="source")
    assert list(csv.columns) == ["en", "es", "de", "ru"]
    assert csv.loc["en", "de"] == pytest.approx(0.55)

    md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "google/gemma-3-270m" in md
    assert "toxclf&#45;v1" in md or "toxclf-v1" in md
    assert "seed 13" in md
    assert "prompts per target language (en 2, es 2, de 3, ru 1)" in md
    assert "max&#95;new&#95;tokens=20" in md and "r=8" in md and "2 epoch(s)" in md
    assert "](heatmap_reduction.png)" in md
    assert "<script>" not in md and "alert(1)</script>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "a &#124; b" in md and "`code`" not in md and "](http://e.vil)" not in md
    # every table row keeps its column count despite the pipe and newline
    for line in md.splitlines():
        if line.startswith("| X-FT from en | 0.200"):
            assert line.count("|") == 4
            assert "<br>" in line


def test_write_report_replaces_old_summary(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    write_report(tmp_path, frame(), info())
    assert json.loads((tmp_path / "summary.json").read_text())["model"] == "google/gemma-3-270m"


def test_write_report_zs_only(tmp_path):
    summary = write_report(tmp_path, pd.DataFrame(rows("zs", "de", [0.5])), info())
    assert summary["settings"][0]["paradigm"] == "zs"
    assert (tmp_path / "heatmap_reduction.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "summary.json").exists()


def test_md_escape():
    assert md_escape("<b>&|`\n") == "&lt;b&gt;&amp;&#124;&#96;<br>"
    assert md_escape(None) == ""


@pytest.mark.parametrize("bad", [
    lambda df: df.drop(columns=["toxicity"]),
    lambda df: df.assign(toxicity=float("nan")),
    lambda df: df.assign(toxicity=1.5),
    lambda df: pd.concat([df, df.iloc[:1]]),
])
def test_bad_input(bad):
    with pytest.raises(XdetoxInputError):
        summarize(bad(frame()), info())


def test_report_uniform_n(tmp_path):
    df = pd.DataFrame(rows("zs", "de", [0.5, 0.7]) + rows("x-ft:en", "de", [0.1, 0.3]))
    write_report(tmp_path, df, info())
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "completed 2 prompts per target language" in md
    assert "seed 13" in md and "toxclf-v1" in md
