"""``xdetox compare`` and ``xdetox.compare.compare_runs`` on tiny runs of the tiny random model.

The runs (one module fixture, made once): ``base``; ``lr`` (another learning rate, made with
``reuse=[base]`` so its ZS completions are base's); ``seed`` (another seed: another ZS); ``raw``
(text_normalisation none: other prompt texts); ``hf`` (another toxicity scorer, a tiny random
classifier, its completions copied from base).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

import xdetox
from xdetox.cli import main
from xdetox.compare import PER_DIFF, PER_RUN, compare_runs, run_labels, zs_difference
from xdetox.errors import XdetoxInputError
from xdetox.report.results import ONE_PROMPT
from xdetox.report.stats import seed_level_test

TINY = {"source": "en", "targets": ("en", "de"), "limit": 4, "epochs": 1, "max_new_tokens": 4, "scorer": "offline",
        "train_batch_size": 16}
"""The tiny run of tests/test_api.py, with fewer optimizer steps (16 sequences each) and four prompts a target:
the tiny model's random bytes now and then hold no letter (a silent completion, left out of the pairs), and how
often depends on the CPU's arithmetic; the tests below read a cell left with one pair as the code must."""
DOCS = Path(__file__).resolve().parents[1] / "docs" / "compare.md"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, tiny_classifier_dir) -> dict[str, Path]:
    """Finished tiny runs by name (see the module docstring)."""
    root = tmp_path_factory.mktemp("compare")
    model = str(tiny_model_dir)
    base = xdetox.run(out=root / "base", model=model, **TINY).path
    return {
        "base": base,
        "lr": xdetox.run(out=root / "lr", model=model, reuse=[base], **{**TINY, "lr": 1e-3}).path,
        "seed": xdetox.run(out=root / "seed", model=model, **{**TINY, "seed": 7}).path,
        "raw": xdetox.run(out=root / "raw", model=model, reuse=[base], **{**TINY, "text_normalisation": "none"}).path,
        "hf": xdetox.run(out=root / "hf", model=model, reuse=[base],
                         **{**TINY, "scorer": f"hf:{tiny_classifier_dir}"}).path,
    }


def tree(*dirs: Path) -> dict[str, tuple]:
    """Every file under ``dirs``: size, mtime and content hash (to see that nothing was written)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def xft(frame: pd.DataFrame, target: str) -> pd.Series:
    """The row of the X-FT-from-en cell on ``target``."""
    rows = frame[(frame["paradigm"] == "x-ft") & (frame["target"] == target)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_shared_zs_gives_the_paired_difference_and_its_seed_level_interval(runs):
    base, lr = xdetox.open_run(runs["base"]), xdetox.open_run(runs["lr"])
    zs = [r.completions().query("paradigm == 'zs'")[["target", "prompt_id", "sample", "completion", "toxicity"]]
          for r in (base, lr)]
    assert zs[0].reset_index(drop=True).equals(zs[1].reset_index(drop=True))  # reuse: the same ZS evaluation

    result = compare_runs([runs["base"], runs["lr"]])
    assert result.labels == ("base", "lr")
    table = result.table
    assert list(table.columns) == [*("model", "paradigm", "source", "percent", "target", "split"),
                                   *(f"{r}.{f}" for r in ("base", "lr") for f in PER_RUN),
                                   *(f"lr.{f}" for f in PER_DIFF)]
    assert len(table) == 4  # ZS and X-FT on en and de
    for target in ("en", "de"):
        row = xft(table, target)
        for run, label in ((base, "base"), (lr, "lr")):
            cell = xft(run.settings(), target)
            for field in PER_RUN:
                assert row[f"{label}.{field}"] == pytest.approx(cell[field], nan_ok=True), (label, field)
        # by hand: per prompt, the toxicity of base's X-FT minus lr's (ZS is shared, so this is the
        # difference of the reductions), through the report's seed-level test
        frames = [f[f["target"] == target] for f in (base.completions(), lr.completions())]
        zs_means = frames[0].query("paradigm == 'zs'").groupby("prompt_id")["toxicity"].mean().dropna()
        means = [f.query("paradigm == 'x-ft'").groupby("prompt_id")["toxicity"].mean().dropna() for f in frames]
        common = zs_means.index.intersection(means[0].index).intersection(means[1].index)  # all three wrote text
        if zs_means.empty or any(m.empty for m in means):  # ZS or a tuned model wrote nothing: no reduction
            assert row["lr.diff_note"].startswith("no reduction in") and pd.isna(row["lr.diff"])
            continue
        reductions = xft(lr.settings(), target)["reduction_abs"] - xft(base.settings(), target)["reduction_abs"]
        if common.empty:
            assert row["lr.diff_note"] == "no CI: no prompt where ZS and both settings wrote text"
            assert row["lr.diff"] == pytest.approx(reductions)
            continue
        test = seed_level_test({42: (means[0][common] - means[1][common]).to_dict()})
        assert row["lr.diff"] == test.reduction
        if test.n < 2:  # one pair left: no interval, and the note says why
            assert all(pd.isna(row[f"lr.{f}"]) for f in ("diff_ci95_low", "diff_ci95_high", "diff_p_value"))
            assert row["lr.diff_note"] == f"no CI: {ONE_PROMPT}"
            continue
        assert (row["lr.diff_ci95_low"], row["lr.diff_ci95_high"]) == (test.ci_low, test.ci_high)
        assert row["lr.diff_p_value"] == test.p_value and row["lr.diff_ci_unit"] == test.unit == "prompts"
        if all(len(m.index.intersection(zs_means.index)) == len(common) for m in means):
            # the same prompts in both reductions: their difference is the paired one
            assert row["lr.diff"] == pytest.approx(reductions, abs=2e-6)  # summary.json rounds to 6 digits
            assert pd.isna(row["lr.diff_note"])
        else:
            assert row["lr.diff_note"].startswith("paired over the prompts ZS and both settings wrote text for")
    assert set(result.notes) == set(table["lr.diff_note"].dropna())  # none where every prompt wrote text
    text = result.to_text()
    assert "lr − base" in text and f"{xft(table, 'en')['lr.diff']:+.3f}" in text
    assert ("[1]" in text) == bool(result.notes)


def test_without_shared_zs_the_difference_has_no_interval_and_says_why(runs):
    result = compare_runs([runs["base"], runs["seed"]])
    base, seed = (xdetox.open_run(runs[n]).settings() for n in ("base", "seed"))
    for target in ("en", "de"):
        row = xft(result.table, target)
        reductions = xft(seed, target)["reduction_abs"] - xft(base, target)["reduction_abs"]
        assert row["seed.diff"] == pytest.approx(reductions, nan_ok=True)
        assert all(pd.isna(row[f"seed.{f}"]) for f in ("diff_ci95_low", "diff_ci95_high", "diff_p_value"))
        assert row["seed.diff_note"] == "no CI: ZS not shared with base: other seeds (42 vs 7)"
    assert result.notes == ("no CI: ZS not shared with base: other seeds (42 vs 7)",)
    text = result.to_text()
    assert "[1] no CI: ZS not shared with base: other seeds (42 vs 7)" in text
    assert re.search(r"X-FT from en .*[+-]\d\.\d{3} \[1\]", text)


def test_zs_difference_names_what_differs():
    zs = pd.DataFrame({"prompt_id": ["p1", "p2"], "sample": [0, 0], "completion": ["a", "b"], "toxicity": [0.1, None]})
    labels = ("one", "two")
    assert zs_difference(zs, zs.iloc[::-1].copy(), 42, labels) is None  # order does not matter, NaN equals NaN
    assert zs_difference(zs, None, 42, labels) == "two has no ZS of seed 42"
    assert zs_difference(zs, zs.assign(completion=["a", "c"]), 42, labels) == "their ZS completions of seed 42 differ"
    assert "other prompts" in zs_difference(zs, zs.assign(prompt_id=["p1", "p3"]), 42, labels)
    assert "scored differently" in zs_difference(zs, zs.assign(toxicity=[0.2, None]), 42, labels)


def test_other_prompts_are_refused_naming_them(runs, capsys):
    before = tree(runs["base"], runs["raw"])
    with pytest.raises(XdetoxInputError, match=r"cannot compare base and raw: different prompts for \w\w/test_toxic:"
                                               r" other prompt texts .*; text_normalisation v1 vs none") as err:
        compare_runs([runs["base"], runs["raw"]])
    assert "\n" not in str(err.value)
    assert main(["compare", str(runs["lr"]), str(runs["base"]), str(runs["raw"])]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "different prompts" in line and "base and raw" not in line  # lr is first
    assert tree(runs["base"], runs["raw"]) == before


def test_another_scorer_is_refused_naming_it(runs, tmp_path):
    with pytest.raises(XdetoxInputError, match=r"cannot compare base and hf: .*different scorers \(offline vs hf:"):
        compare_runs([runs["base"], runs["hf"]])
    # the same name, another model behind it: the identity the store records (check_scorer_identity)
    other = Path(shutil.copytree(runs["base"], tmp_path / "rescored"))
    conn = sqlite3.connect(other / "xdetox.sqlite")
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'scorer_identity:offline'", ('"offline-lexical-0"',))
    conn.close()
    refused = (r"cannot compare base and rescored: their toxicity scorer offline is a different model in each"
               r" \(offline-lexical-\w+ vs offline-lexical-0\)")
    with pytest.raises(XdetoxInputError, match=refused):
        compare_runs([runs["base"], other])


def test_csv_and_markdown_parse(runs):
    result = compare_runs([runs["base"], runs["lr"], runs["seed"]])
    frame = pd.read_csv(io.StringIO(result.to_csv()))
    assert list(frame.columns) == list(result.table.columns) and len(frame) == len(result.table) == 4
    assert "lr.diff" in frame and "seed.diff_note" in frame
    assert frame["lr.diff"].dropna().tolist() == pytest.approx(result.table["lr.diff"].dropna().tolist())

    lines = result.to_markdown().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["target", "setting", "base reduction"]
    assert "lr − base" in header and "seed − base" in header
    assert re.fullmatch(r"\|(---\|)+", lines[1]) and lines[1].count("|") == len(header) + 1
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:6]]
    assert all(len(r) == len(header) for r in rows) and {r[1] for r in rows} == {"ZS", "X-FT from en"}
    assert lines[6] == "" and any(re.match(r"\* \[\d\] no CI: ZS not shared", line) for line in lines)


def test_cli_exit_codes_and_formats(runs, tmp_path, capsys):
    base, lr = str(runs["base"]), str(runs["lr"])
    before = tree(runs["base"], runs["lr"])
    assert main(["compare", base, lr]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("target") and "lr − base" in out
    assert main(["compare", base, lr, "--csv"]) == 0
    assert len(pd.read_csv(io.StringIO(capsys.readouterr().out))) == 4
    assert main(["compare", base, lr, "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| target | setting |")
    unfinished = Path(shutil.copytree(runs["base"], tmp_path / "unfinished"))
    (unfinished / "summary.json").unlink()
    for argv, needle in (([base], "at least 2 run directories, got 1"),
                         ([base, str(tmp_path / "missing")], "no run directory at"),
                         ([base, str(unfinished)], "not finished"),
                         ([base, lr, "--csv", "--markdown"], "not allowed with")):
        assert main(["compare", *argv]) == 2, argv
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1 and needle in captured.err, captured.err
    assert tree(runs["base"], runs["lr"]) == before


def test_run_labels_are_the_directory_names_made_unique():
    assert run_labels([Path("a/run"), Path("b/other")]) == ["run", "other"]
    assert run_labels([Path("a/run"), Path("b/run")]) == ["a/run", "b/run"]
    assert run_labels([Path("a/run"), Path("a/run"), Path("b/x")]) == ["a/run#1", "a/run#2", "x"]


def test_the_docs_example_runs(runs, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1
    exec(compile(blocks[0], str(DOCS), "exec"), {"run_a": str(runs["base"]), "run_b": str(runs["lr"])})  # noqa: S102
    printed = capsys.readouterr().out
    assert "lr.diff_ci95_low" in printed
    table = compare_runs([runs["base"], runs["lr"]]).table
    for row in table[table["paradigm"] != "zs"].to_dict("records"):  # numbers, or NaN where a note says why
        line = re.search(rf"^{row['target']} .*$", printed, re.M).group(0)
        if pd.isna(row["lr.diff_ci95_low"]):
            assert line.endswith("NaN") and row["lr.diff_note"].startswith("no ")
        else:
            assert re.search(r"\d$", line) and "nan" not in line.lower()
