"""The experiment grid: configs, plans, a tiny grid end to end, and kill -9 / resume."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import xdetox
from xdetox import data, grid
from xdetox.cli import main
from xdetox.errors import XdetoxInputError
from xdetox.store import DATA_TABLES, Store
from xdetox.text import is_silent

ROOT = Path(__file__).resolve().parents[1]

TINY = """
models = ["{model}"]
paradigms = ["zs", "x-ft", "p-ft", "m-ft", "dpo"]
sources = ["en", "de"]
targets = ["en", "de"]
seeds = [1, 2]
limit = 3
scorers = ["offline", "ppl:{model}", "lang-fidelity", "relevance:{model}"]
[train]
epochs = 1
batch_size = 16
max_length = 48
[decode]
max_new_tokens = 4
batch_size = 2
"""


@pytest.fixture
def tiny_config(tmp_path, tiny_model_dir) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(model=tiny_model_dir))
    return path


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny grid run once (``xdetox grid run tiny.toml --quiet``), finished: read it, or change a copy."""
    root = tmp_path_factory.mktemp("tiny-grid")
    config = root / "tiny.toml"
    config.write_text(TINY.format(model=tiny_model_dir))
    assert main(["grid", "run", str(config), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


@pytest.mark.parametrize("name, count, settings", [
    ("paper", 504, "14 training settings (ZS + 9 X-FT + 3 P-FT + M-FT) x 9 targets"),
    ("embedded", 405, "15 training settings (ZS + 9 X-FT + 3 P-FT + M-FT + 1 DPO) x 9 targets"),
])
def test_shipped_configs_plan_the_reference_counts(name, count, settings, capsys):
    assert main(["grid", "plan", str(ROOT / "configs" / f"{name}.toml")]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith(f"{count} evaluations = ")
    assert settings in out
    config = grid.load_config(ROOT / "configs" / f"{name}.toml")
    plan = grid.make_plan(config, data.load())
    assert len(plan.evaluations) == count
    assert len({e.key for e in plan.evaluations}) == count, "evaluation keys must be distinct"
    labels = [s.label for s in plan.settings[:14]]
    assert labels == ["zs", *(f"x-ft:{lang}" for lang in data.LANGS), "p-ft:10%", "p-ft:20%", "p-ft:30%", "m-ft"]


def test_plan_keys_follow_content():
    corpus = data.load()
    base = grid.config_from_dict({"paradigms": ["zs", "x-ft"], "sources": ["en"], "targets": ["de"]})
    again = grid.make_plan(base, corpus)
    assert [e.key for e in grid.make_plan(base, corpus).evaluations] == [e.key for e in again.evaluations]
    other_seed = grid.config_from_dict({"paradigms": ["zs", "x-ft"], "sources": ["en"], "targets": ["de"],
                                        "seeds": [7]})
    assert {e.key for e in grid.make_plan(other_seed, corpus).evaluations}.isdisjoint(
        e.key for e in again.evaluations)


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"paradigms": ["zs", "sft"]}, "unknown paradigm 'sft'"),
        ({"colour": "blue"}, "unknown key(s) colour"),
        ({"train": {"epoch": 3}}, "[train]: unknown key(s) epoch"),
        ({"percents": [0]}, "percents"),
        ({"targets": ["en", "xx"]}, "'xx'"),
        ({"seeds": []}, "seeds must not be empty"),
        ({"models": [{"name": "m", "quantization": "int3"}]}, "unknown quantization"),
        ({"decode": {"temperature": "hot", "top_p": 0.9, "nope": 1}}, "[decode]: unknown key(s) nope"),
        ({"generator": "fast"}, "unknown generator 'fast'"),
    ],
)
def test_bad_configs_are_one_clear_error(raw, needle):
    with pytest.raises(XdetoxInputError) as err:
        grid.config_from_dict(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_cli_config_errors_exit_2_without_a_run_directory(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('paradigms = ["zs", "x-ft"\n')
    out = tmp_path / "out"
    assert main(["grid", "run", str(bad), "--out", str(out)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["grid", "plan", str(tmp_path / "missing.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert not out.exists()


def test_nf4_without_cuda_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nf4 is allowed here")
    config = tmp_path / "q.toml"
    config.write_text(f'models = [{{ name = "{tiny_model_dir}", quantization = "nf4" }}]\nsources = ["en"]\n')
    out = tmp_path / "run"
    assert main(["grid", "run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a CUDA GPU" in err and "\n" not in err
    assert not out.exists()


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    with Store(run_dir / grid.STORE_FILE) as store:
        return {name: store.table(name) for name in DATA_TABLES}


def test_tiny_grid_runs_every_paradigm_with_two_seeds_and_resumes_for_free(tmp_path, tiny_config, tiny_model_dir,
                                                                          tiny_grid):
    run = Path(shutil.copytree(tiny_grid, tmp_path / "run"))  # the grid run of tiny_config, finished (exit 0)
    tables = _tables(run)
    # per seed: ZS + 2 X-FT + 3 P-FT + M-FT + 2 DPO = 9 settings; 2 seeds; 2 targets; 3 prompts
    assert len(tables["train_settings"]) == 18
    assert sorted(tables["train_settings"]["paradigm"].unique()) == ["dpo", "m-ft", "p-ft", "x-ft", "zs"]
    assert len(tables["evaluations"]) == 36
    assert len(tables["completions"]) == 36 * 3
    adapters = sorted((run / "adapters").iterdir())
    assert len(adapters) == 16 and not [a for a in adapters if a.name.startswith(".")]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["seeds"] == [1, 2]
    paradigms = {s["paradigm"] for s in summary["settings"]}
    assert paradigms == {"zs", "x-ft", "p-ft", "m-ft", "dpo"}
    assert {s["percent"] for s in summary["settings"] if s["paradigm"] == "p-ft"} == {10, 20, 30}
    for paradigm in ("x-ft", "p-ft", "m-ft", "dpo"):
        assert list(run.glob(f"matrix_*_{paradigm}.csv")), paradigm
    assert (run / "report.html").is_file()
    for s in summary["settings"]:  # fluency: completions' perplexity under the base model
        assert s["ppl_completion"] > 1
        assert (s["ppl_change"] is None) == (s["paradigm"] == "zs")
        assert 0 <= s["lang_fidelity"] <= 1
        assert isinstance(s["relevance"], float) and (s["relevance_change"] is None) == (s["paradigm"] == "zs")
    assert "| relevance (vs ZS) |" in (run / "report.md").read_text()
    assert f"log-likelihood under {tiny_model_dir} (one fixed reference model" in (run / "report.md").read_text()
    # Four scorers (toxicity, perplexity, language, relevance) score every completion with text, and nothing else.
    texts = tables["completions"].set_index(["eval_key", "prompt_id", "sample"])["text"]
    written = texts[~texts.map(is_silent)]
    scores = tables["scores"]
    for name in ("offline", "ppl:" + str(tiny_model_dir), "lang-fidelity", "relevance:" + str(tiny_model_dir)):
        keys = scores[scores["scorer"] == name].set_index(["eval_key", "prompt_id", "sample"]).index
        assert sorted(keys) == sorted(written.index), name
    # Length-matched scores: each tuned completion and ZS's of the same prompt, both with text.
    evals = tables["evaluations"].merge(tables["train_settings"][["key", "paradigm", "seed"]],
                                        left_on="train_key", right_on="key", suffixes=("", "_t"))
    zs_of = {(r.seed, r.target): r.key for r in evals[evals["paradigm"] == "zs"].itertuples()}
    expected = sorted((r.key, pid, sample) for r in evals[evals["paradigm"] != "zs"].itertuples()
                      for (ek, pid, sample) in written.index if ek == r.key
                      and (zs_of[(r.seed, r.target)], pid, sample) in written.index)
    for suffix in (grid.LENGTH_MATCHED, grid.LENGTH_MATCHED_ZS):
        keys = scores[scores["scorer"] == "offline" + suffix].set_index(["eval_key", "prompt_id", "sample"]).index
        assert sorted(keys) == expected and expected
    assert all(s["reduction_length_matched"] is not None for s in summary["settings"] if s["paradigm"] != "zs")
    assert all(t["end_token_trained"] == (t["setting"].startswith("dpo")) for t in summary["training"]
               if t["setting"] != "zs")
    assert all("end_token_trained" not in t for t in summary["training"] if t["setting"] == "zs")
    assert list(run.glob("matrix_*_x-ft_length_matched.csv"))
    # Reference measures per setting: test_neutral perplexity per target, embedding analysis.
    measures = {(m["paradigm"], m["source"], m["percent"]): m for m in summary["measures"]}
    assert len(measures) == 9
    for m in measures.values():
        assert set(m["ppl_ref"]) == {"en", "de"} and all(v > 1 for v in m["ppl_ref"].values())
        assert -1 <= m["silhouette"] <= 1 and m["seeds"] == [1, 2]
        assert (m["ppl_ref_change"] is None) == (m["paradigm"] == "zs")
    assert all(s["ppl_ref"] > 1 for s in summary["settings"])
    assert "Knowledge preservation" in (run / "report.html").read_text()

    # Running the same config again redoes nothing: no training, no generation, same rows.
    stamps = {a.name: (a / "adapter_model.safetensors").stat().st_mtime_ns for a in adapters}
    assert main(["grid", "run", str(tiny_config), "--out", str(run), "--quiet"]) == 0
    assert {a.name: (a / "adapter_model.safetensors").stat().st_mtime_ns for a in adapters} == stamps
    for name, table in _tables(run).items():
        pd.testing.assert_frame_equal(table, tables[name], obj=name)
    # A finished store needs no adapters: resuming it elsewhere (the adapters left behind) trains nothing.
    shutil.rmtree(run / "adapters")
    (run / "summary.json").unlink()
    assert main(["grid", "run", str(tiny_config), "--out", str(run), "--quiet"]) == 0
    assert not (run / "adapters").exists() and (run / "summary.json").is_file()
    for name, table in _tables(run).items():
        pd.testing.assert_frame_equal(table, tables[name], obj=name)


SMALL = """
models = ["{model}"]
paradigms = ["zs", "x-ft"]
sources = ["en"]
targets = ["en", "de"]
limit = 2
scorers = ["offline", "ppl:{model}", "lang-fidelity"]
[train]
epochs = 1
batch_size = 16
max_length = 48
[decode]
max_new_tokens = 4
batch_size = 2
"""


def test_progress_bars_show_every_slow_step_and_change_no_row(tmp_path, tiny_model_dir, capfd):
    """Without --quiet each step draws its bar on stderr; with it, none; the store's rows are the same."""
    config = tmp_path / "small.toml"
    config.write_text(SMALL.format(model=tiny_model_dir))
    assert main(["grid", "run", str(config), "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    quiet = capfd.readouterr()
    assert main(["grid", "run", str(config), "--out", str(tmp_path / "bars")]) == 0
    shown = capfd.readouterr()
    ppl = f"ppl:{tiny_model_dir}"
    bars = ["settings", "train x-ft:en", "generate zs", "generate x-ft:en", "reference measures", "score offline",
            f"score {ppl}", "perplexity", "score lang-fidelity", "score offline length-matched"]
    for desc in bars:  # tqdm draws "<desc>: <percent>|..."
        assert f"{desc}: " in shown.err, desc
        assert f"{desc}: " not in quiet.err + quiet.out, desc
    assert "loss=" in shown.err  # the training bar's postfix: the step's loss
    quiet_tables, bar_tables = _tables(tmp_path / "quiet"), _tables(tmp_path / "bars")
    for name in DATA_TABLES:
        pd.testing.assert_frame_equal(bar_tables[name], quiet_tables[name], obj=name)
    assert len(quiet_tables["completions"]) == 2 * 2 * 2 and len(quiet_tables["measures"]) > 0


def test_partial_report_holds_the_finished_settings_exactly_and_says_what_is_missing(tmp_path, tiny_model_dir,
                                                                                    capsys):
    config = tmp_path / "small.toml"
    config.write_text(SMALL.replace('sources = ["en"]', 'sources = ["en", "de"]').format(model=tiny_model_dir))
    run = tmp_path / "run"
    assert main(["grid", "run", str(config), "--out", str(run), "--quiet"]) == 0
    full = json.loads((run / "summary.json").read_text())
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1:] for line in lines[1:5]] == [["zs", "42", "done"], ["x-ft:en", "42", "done"],
                                                        ["x-ft:de", "42", "done"]] + [[]]
    assert "finished (summary.json written): 3 of 3 training settings done, 6 of 6 evaluations started" in lines[5]
    assert f"{2 * 3 * 2} completions stored" in lines[5] and "ended finished" in lines[6] and len(lines) == 7
    whole = xdetox.open_run(run, partial=True)  # a finished run opens whole
    assert whole.partial is None and whole.summary == full
    run_measures = whole.measures()
    capsys.readouterr()
    assert main(["report", str(run), "--partial"]) == 2 and "is finished" in capsys.readouterr().err
    with sqlite3.connect(run / grid.STORE_FILE) as conn:  # X-FT from de loses one generated batch: unfinished
        (key,) = conn.execute("SELECT e.key FROM evaluations e JOIN train_settings t ON t.key = e.train_key"
                              " WHERE t.label = 'x-ft:de' AND e.target = 'en'").fetchone()
        conn.execute("DELETE FROM batches WHERE eval_key = ? AND batch = 0", (key,))
    for name in ("summary.json", "report.html", "report.md"):
        (run / name).unlink()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "not finished (1 batches not generated)" in err and "--partial" in err
    before = sorted(p.stat().st_mtime_ns for p in run.rglob("*"))
    assert main(["status", str(run)]) == 0
    table = {tuple(line.split()[1:3]): line.split(None, 3)[3] for line in capsys.readouterr().out.splitlines()[1:4]}
    assert table == {("zs", "42"): "done", ("x-ft:en", "42"): "done", ("x-ft:de", "42"): "evaluating 1 of 2"}
    assert sorted(p.stat().st_mtime_ns for p in run.rglob("*")) == before, "status writes nothing"
    from xdetox.grid.status import run_status

    status = run_status(run)  # the one attempt began with nothing and completed 5 of the 6 evaluations left now
    assert status.complete == 5 and status.evaluations == (6, 6) and status.pace[0] == 5
    assert "left: 1 evaluations; at the latest attempt's pace (5 in " in status.to_text()
    with pytest.raises(XdetoxInputError, match=r"not finished .*open_run\(path, partial=True\)"):
        xdetox.open_run(run)
    with pytest.raises(XdetoxInputError, match="has no partial report yet: `xdetox report --partial .*` writes one"):
        xdetox.open_run(run, partial=True)
    assert main(["report", str(run), "--partial"]) == 0
    part = json.loads((run / "partial" / "summary.json").read_text())
    opened = xdetox.open_run(run, partial=True)  # the partial report from Python: only what it holds
    assert opened.summary == part and opened.partial == part["run"]["partial"] and "partial)" in repr(opened)
    finished = {("zs", 42), ("x-ft:en", 42)}
    assert set(zip(opened.completions()["setting"], opened.completions()["seed"])) == finished
    assert len(opened.completions()) == 2 * 2 * 2  # two settings x two targets x two prompts
    measures = opened.measures()
    assert set(zip(measures["setting"], measures["seed"])) == finished and len(measures) < len(run_measures)
    assert {(s["paradigm"], s["source"]) for s in opened.report()["settings"]} == {("zs", None), ("x-ft", "en")}
    assert opened.partial == part["run"]["partial"]
    assert not (run / "summary.json").exists(), "a partial report never takes the run's own files"
    note = part["run"]["partial"]
    assert "1 batches not generated" in note and "zs (seed 42), x-ft:en (seed 42)" in note
    assert "x-ft:de" not in note
    labels = {(s["paradigm"], s["source"]) for s in part["settings"]}
    assert labels == {("zs", None), ("x-ft", "en")}
    same = [s for s in full["settings"] if (s["paradigm"], s["source"]) in labels]

    def without_q(cells):  # q adjusts over the report's own family: fewer cells, other q
        return sorted(({k: v for k, v in c.items() if k != "q_value"} for c in cells), key=json.dumps)

    assert without_q(part["settings"]) == without_q(same), "the same numbers as the full run"
    assert "of this summary" in part["q_family"] and part["q_family"] != full["q_family"]
    assert {t["setting"] for t in part["training"]} == {"zs", "x-ft:en"}
    assert {(m["paradigm"], m["source"]) for m in part["measures"]} == labels
    html = (run / "partial" / "report.html").read_text()
    assert 'class="partial"' in html and "Partial report" in (run / "partial" / "report.md").read_text()
    with sqlite3.connect(run / grid.STORE_FILE) as conn:  # nothing finished with its ZS: nothing to report
        conn.execute("DELETE FROM batches WHERE eval_key IN (SELECT e.key FROM evaluations e JOIN train_settings t"
                     " ON t.key = e.train_key WHERE t.label = 'zs')")
    assert main(["report", str(run), "--partial"]) == 2
    assert "nothing to report" in capsys.readouterr().err


def _progress(store_path: Path) -> int:
    """Finished training settings + committed batches + scores (0 before the store exists)."""
    if not store_path.is_file():
        return 0
    try:
        with sqlite3.connect(store_path, timeout=5) as conn:
            return sum(conn.execute(q).fetchone()[0] for q in (
                "SELECT COUNT(*) FROM train_settings WHERE status = 'done'",
                "SELECT COUNT(*) FROM batches",
                "SELECT COUNT(*) FROM scores",
            ))
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_rows(tmp_path, tiny_config, tiny_grid):
    """SIGKILL the grid at >= 5 random points of its progress; the resumed store equals a clean run's."""
    command = [sys.executable, "-m", "xdetox.cli", "grid", "run", str(tiny_config), "--quiet", "--out"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    clean = Path(shutil.copytree(tiny_grid, tmp_path / "clean"))  # the same config run once, uninterrupted
    total = _progress(clean / grid.STORE_FILE)  # 18 settings + 72 batches + 108 scores

    rng = random.Random(20261127)
    marks = sorted(rng.sample(range(1, total - 5), 5))
    killed = tmp_path / "killed"
    store_path = killed / grid.STORE_FILE
    kills = []
    for mark in marks:
        proc = subprocess.Popen([*command, str(killed)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and _progress(store_path) < mark:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))  # land inside whatever comes next: training, sampling, scoring
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills.append(_progress(store_path))
    assert len(kills) >= 5, f"the run finished before it could be killed 5 times: {kills}"
    assert kills[-1] < total and not (killed / "summary.json").exists()

    done = subprocess.run([*command, str(killed)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    clean_tables, killed_tables = _tables(clean), _tables(killed)
    for name in DATA_TABLES:
        pd.testing.assert_frame_equal(killed_tables[name], clean_tables[name], obj=name)
    assert not [p for p in (killed / "adapters").iterdir() if p.name.startswith(".")], "half-trained leftovers"
    assert json.loads((killed / "summary.json").read_text())["settings"] == \
        json.loads((clean / "summary.json").read_text())["settings"]


def test_a_scorer_that_cannot_score_a_target_is_refused_before_any_work(tmp_path, tiny_model_dir, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("PERSPECTIVE_API_KEY", "not-a-real-key")
    config = tmp_path / "p.toml"
    config.write_text(f'models = ["{tiny_model_dir}"]\nsources = ["en"]\ntargets = ["en", "uk", "am"]\n'
                      'scorers = ["perspective"]\n')
    out = tmp_path / "run"
    assert main(["grid", "run", str(config), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "perspective does not support uk, am" in err and "not-a-real-key" not in err
    assert not out.exists()


def test_a_run_directory_resumes_only_the_same_work(tmp_path, tiny_model_dir, tiny_classifier_dir, capsys):
    """Scorers may be added to a run; a change of what is computed (here: seeds) is refused."""
    base = f'models = ["{tiny_model_dir}"]\nparadigms = ["zs"]\ntargets = ["en"]\nlimit = 2\n' \
           'measure_references = false\n[decode]\nmax_new_tokens = 8\n'
    first, more_scorers, other_seeds = (tmp_path / f"{n}.toml" for n in ("a", "b", "c"))
    first.write_text('scorers = ["offline"]\n' + base)
    more_scorers.write_text(f'scorers = ["offline", "lang-fidelity", "hf:{tiny_classifier_dir}"]\n'
                            'generator = "vllm"\n' + base)  # the generator is not part of the run's identity
    other_seeds.write_text("seeds = [7]\n" + base)
    out = tmp_path / "run"
    assert main(["grid", "run", str(first), "--out", str(out), "--quiet"]) == 0
    before = _tables(out)["completions"]
    assert main(["grid", "run", str(more_scorers), "--out", str(out), "--quiet"]) == 0
    after = _tables(out)
    pd.testing.assert_frame_equal(after["completions"], before)
    assert "vllm generator skipped" in capsys.readouterr().err  # no CUDA, or no vllm package
    assert set(after["scores"]["scorer"]) == {"offline", "lang-fidelity", f"hf:{tiny_classifier_dir}"}
    summary = json.loads((out / "summary.json").read_text())  # two toxicity scorers: compared
    assert summary["scorers"] == ["offline", f"hf:{tiny_classifier_dir}"]
    assert [a["lang"] for a in summary["scorer_agreement"]] == ["en"]
    # every completion with text, by both scorers (which completions are silent depends on the sampling
    # seed, derived from the content key, which holds the tiny model's temporary path)
    written = int((~after["completions"]["text"].map(is_silent)).sum())
    assert summary["scorer_agreement"][0]["n"] == written >= 1
    capsys.readouterr()
    assert main(["grid", "run", str(other_seeds), "--out", str(out), "--quiet"]) == 2
    assert "holds a run with a different configuration" in capsys.readouterr().err


def test_paper_config_takes_the_reference_recipe_per_paradigm():
    config = grid.load_config(ROOT / "configs" / "paper.toml")
    xft, pft, mft = (config.train_for(p) for p in ("x-ft", "p-ft", "m-ft"))
    assert (xft.epochs, xft.batch_size, xft.gradient_accumulation_steps, xft.max_length) == (10, 12, 4, 256)
    assert (pft.epochs, pft.batch_size, pft.gradient_accumulation_steps, pft.max_length) == (15, 12, 4, 256)
    assert (mft.epochs, mft.batch_size, mft.max_length) == (10, 8, 512)
    assert config.train_for("dpo").learning_rate == 1e-4 and config.train_for("dpo").gradient_accumulation_steps == 16
    assert all(t.objective == "neutral-lm" and t.learning_rate == 2e-4 for t in (xft, pft, mft))
    specs = {s.spec.label: s.spec for s in grid.make_plan(config, data.load()).settings}
    assert specs["x-ft:hi"].epochs == 10 and specs["p-ft:20%"].epochs == 15 and specs["m-ft"].max_length == 512
    table = grid.plan_table(grid.make_plan(config, data.load()), data.load()).splitlines()
    assert "epochs x batch" in table[0]
    rows = {line.split()[1]: line.split() for line in table[1:] if "aya-23-8B" in line}
    assert rows["x-ft:hi"][4:8] == ["10", "x", "48", "256"] and rows["p-ft:10%"][4:8] == ["15", "x", "48", "256"]
    assert rows["m-ft"][4:8] == ["10", "x", "32", "512"] and rows["zs"][4:6] == ["-", "-"]


def test_per_paradigm_overrides_change_only_their_paradigm_and_its_keys():
    raw = {"paradigms": ["zs", "x-ft", "m-ft"], "sources": ["en", "de"], "targets": ["de"],
           "train": {"epochs": 2, "lora": {"r": 8}, "m-ft": {"epochs": 5, "lora": {"alpha": 64}}}}
    config = grid.config_from_dict(raw)
    plan = grid.make_plan(config, data.load())
    by_label = {s.label: s for s in plan.settings}
    assert by_label["x-ft:en"].spec.epochs == 2 and by_label["m-ft"].spec.epochs == 5
    assert by_label["m-ft"].spec.lora.r == 8 and by_label["m-ft"].spec.lora.alpha == 64
    assert by_label["x-ft:de"].spec.lora.alpha == 32
    plain = grid.make_plan(grid.config_from_dict({**raw, "train": {"epochs": 2, "lora": {"r": 8}}}), data.load())
    assert [s.key for s in plain.settings if s.label != "m-ft"] == [s.key for s in plan.settings if s.label != "m-ft"]
    assert {s.key for s in plain.settings} != {s.key for s in plan.settings}


@pytest.mark.parametrize("train, message", [
    ({"x-ft": {"epochs": 2, "bogus": 1}}, r"\[train.x-ft\]: unknown key\(s\) bogus"),
    ({"zs": {"epochs": 2}}, r"\[train\]: unknown key\(s\) zs"),
    ({"m-ft": 3}, "train.m-ft must be a table"),
    ({"dpo": {"lora": {"rank": 4}}}, r"\[train.dpo.lora\]: unknown key"),
    ({"p-ft": {"gradient_accumulation_steps": 0}}, "gradient_accumulation_steps"),
])
def test_bad_per_paradigm_tables_are_refused(train, message):
    with pytest.raises(XdetoxInputError, match=message):
        grid.config_from_dict({"train": train})


def test_dpo_sources_choose_the_dpo_settings_alone():
    config = grid.config_from_dict({"paradigms": ["zs", "x-ft", "dpo"], "sources": ["en", "de", "ru"],
                                    "dpo_sources": ["en"], "targets": ["de"]})
    labels = [s.label for s in grid.make_plan(config, data.load()).settings]
    assert labels == ["zs", "x-ft:en", "x-ft:de", "x-ft:ru", "dpo:en"]
    with pytest.raises(XdetoxInputError, match="'xx'"):
        grid.config_from_dict({"dpo_sources": ["xx"]})


def test_generate_commits_each_batch_the_one_generator_interface_yields(tmp_path):
    """Whatever the backend, the grid asks the session for one generator and commits what it yields, batch by batch."""
    from xdetox.generate import Batch, Completion, derive_seed

    class Recorder:
        def generate_batches(self, work, decode):
            for batch, seed in work:
                yield [Completion(p.id, 0, decode.render(p.text), f"seed {seed}", 1) for p in batch.prompts]

    class OneGeneratorSession(grid.Session):
        def generator_for(self, setting, adapter, requested, max_lora_rank):
            self.asked = (setting.key, adapter, requested, max_lora_rank)
            return Recorder()

    corpus = data.load()
    config = grid.config_from_dict({"paradigms": ["zs"], "targets": ["en", "de"], "limit": 3, "generator": "vllm",
                                    "train": {"lora": {"r": 8}}})
    plan = grid.make_plan(config, corpus)
    setting = plan.settings[0]
    todo = [(ev, Batch(i, tuple(corpus.prompts(ev.target, ev.split)[i:i + 2]))) for ev in plan.evaluations
            for i in (0, 2)]
    session = OneGeneratorSession()
    with Store(tmp_path / "run.sqlite") as store:
        grid.generate(plan, setting, todo, store, session, None, progress=False)
        assert session.asked == (setting.key, None, "vllm", 8)
        for ev in plan.evaluations:
            assert store.done_batches(ev.key) == {0, 2}
        completions = store.table("completions")
    expected = sorted((ev.key, p.id, f"seed {derive_seed(setting.spec.seed, ev.key, b.index)}")
                      for ev, b in todo for p in b.prompts)
    assert sorted(zip(completions["eval_key"], completions["prompt_id"], completions["text"])) == expected


def test_text_normalisation_is_part_of_every_key_and_none_keeps_the_keys_of_the_data_as_shipped():
    corpus = data.load()
    raw = {"paradigms": ["zs", "x-ft"], "sources": ["en"], "targets": ["zh", "en"]}
    v1 = grid.make_plan(grid.config_from_dict(raw), corpus)
    none = grid.make_plan(grid.config_from_dict({**raw, "text_normalisation": "none"}), corpus)
    assert v1.config.text_normalisation == "v1", "v1 is the default"
    # every evaluation key changes with the version, zh too (v1 leaves most zh rows as they are)
    assert {e.key for e in v1.evaluations}.isdisjoint(e.key for e in none.evaluations)
    tuned = [s for s in v1.settings if s.spec.paradigm != "zs"]
    assert tuned and {s.key for s in tuned}.isdisjoint(s.key for s in none.settings)
    # none: the keys a plan of the data as shipped had before normalisation existed
    from xdetox._io import content_key
    from xdetox.train import data_digest, training_examples

    setting = next(s for s in none.settings if s.spec.paradigm == "x-ft")
    examples = training_examples(setting.spec, corpus)
    assert setting.key == content_key({"model": setting.model.to_dict(), "train": setting.spec.to_dict(),
                                       "data": data_digest(examples)})
    assert "text_normalisation" not in grid.config_from_dict({**raw, "text_normalisation": "none"}).to_dict()
    # a corpus cleaned already plans the same keys as one cleaned by the plan
    from xdetox.hygiene import clean_corpus

    assert grid.make_plan(grid.config_from_dict(raw), clean_corpus(corpus, "v1")).identity() == v1.identity()


def test_text_normalisation_is_checked_where_the_config_is_read(tmp_path):
    with pytest.raises(XdetoxInputError, match="unknown text normalisation 'v9'; choose one of none, v1"):
        grid.config_from_dict({"text_normalisation": "v9"})
    path = tmp_path / "c.toml"
    path.write_text('text_normalisation = "v2"\n')
    assert main(["grid", "plan", str(path)]) == 2


def test_a_training_lets_go_of_the_session_model_first(tmp_path, tiny_model_dir, monkeypatch):
    """A training loads a model of its own: the session's loaded base model (kept for generation) is let go
    first, so only one is in memory, and generation loads it again afterwards."""
    import xdetox.train

    config = grid.config_from_dict({"models": [str(tiny_model_dir)], "paradigms": ["zs", "x-ft"], "sources": ["en"],
                                    "targets": ["en"], "limit": 2, "seeds": [1], "scorers": ["lang-fidelity"],
                                    "measure_references": False, "train": {"epochs": 1, "max_length": 48},
                                    "decode": {"max_new_tokens": 3, "batch_size": 2}})
    corpus = data.load()
    plan = grid.make_plan(config, corpus)
    session, seen = grid.Session(), []
    real = xdetox.train.train_adapter

    def train_adapter(*args, **kwargs):
        seen.append(session.loaded)
        return real(*args, **kwargs)

    monkeypatch.setattr(xdetox.train, "train_adapter", train_adapter)
    with Store(tmp_path / "run.sqlite") as store:
        zs, xft = plan.settings
        grid.run_setting(plan, zs, corpus, tmp_path, store, session)
        assert session.loaded is not None  # ZS generated with the session's model
        grid.run_setting(plan, xft, corpus, tmp_path, store, session)
        assert seen == [None]  # trained with no other model loaded
        assert session.loaded is not None and session.peft is not None  # generation loaded it again
        assert len(store.table("completions")) == 4


def test_a_model_let_go_is_freed_though_what_survives_is_set_aside(tiny_model_dir):
    """``collect_garbage`` sets what survives a collection aside (``gc.freeze``: later collections are quick);
    a model dropped before it, even one held in a reference cycle, is freed each time, the second as the first."""
    import gc
    import weakref

    config = grid.config_from_dict({"models": [str(tiny_model_dir)], "paradigms": ["zs"], "targets": ["en"],
                                    "limit": 1, "seeds": [1], "scorers": ["lang-fidelity"]})
    spec = grid.make_plan(config, data.load()).settings[0].generates_with
    session, gone = grid.Session(), []
    for _ in range(2):
        model = session.base(spec).model
        model.cycle = [model]  # only the cycle collector can free it
        gone.append(weakref.ref(model))
        del model
        session.release()
        assert gc.get_freeze_count() > 0, "what survives is set aside"
        assert all(ref() is None for ref in gone), "a released model is still in memory"


def test_status_states_of_a_setting():
    from xdetox.grid.status import NOT_STARTED, state

    assert state(None, 0, 0, 9) == NOT_STARTED
    assert state("pending", 0, 0, 9) == "training"
    assert state("done", 0, 0, 9) == "trained"
    assert state("done", 3, 2, 9) == "evaluating 2 of 9"
    assert state("done", 9, 9, 9) == "done"


def test_status_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an xdetox run directory (no xdetox.sqlite)" in err


def test_status_text_says_what_is_left_at_the_latest_attempts_pace():
    from xdetox.grid.status import RunStatus

    rows = (("m", "zs", 42, "done"), ("m", "x-ft:en", 42, "evaluating 4 of 9"), ("m", "x-ft:de", 42, "-"))
    latest = {"id": 3, "started": "2026-01-01T00:00:00+00:00", "start_s": 1000.0, "last_s": 1600.0, "end_s": None,
              "outcome": "running"}
    status = RunStatus(Path("runs/g"), "g", rows, (14, 27), 13, 1300, False,
                       {"total_time_s": 7200.0, "attempts": 3}, latest, (10, 600.0))
    text = status.to_text(now=1630.0)
    assert "runs/g: g, not finished: 1 of 3 training settings done, 14 of 27 evaluations started" in text
    assert "1,300 completions stored" in text and "2 h 00 min over 3 attempt(s)" in text
    assert "its last write 0 min 30 s ago (running, or stopped without an end: a kill)" in text
    # 27 - 13 = 14 evaluations at 10 per 600 s: 840 s
    assert "left: 14 evaluations; at the latest attempt's pace (10 in 10 min 00 s) about 14 min 00 s" in text
    assert "left:" not in RunStatus(**{**status.__dict__, "pace": (0, 600.0)}).to_text(now=1630.0)
    # every evaluation generated, the run not finished: what remains is said, not a pace of zero
    generated = RunStatus(**{**status.__dict__, "evaluations": (27, 27), "complete": 27}).to_text(now=1630.0)
    assert "every evaluation is generated: scoring, measures and the report remain" in generated
    assert "left:" not in generated
    assert "remain" not in RunStatus(**{**status.__dict__, "evaluations": (27, 27), "complete": 27,
                                        "finished": True}).to_text(now=1630.0)
