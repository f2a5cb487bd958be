"""``--reuse RUN_DIR``: work with the same content keys is copied from another run, never recomputed."""

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_RUN, copy_run
from xdetox import grid
from xdetox.cli import main
from xdetox.store import DATA_TABLES, Store


def _run(tmp_path, tiny_model_dir, out, *extra, targets="en,de"):
    options = list(TINY_RUN)
    options[options.index("--targets") + 1] = targets
    return main(["run", "--model", str(tiny_model_dir), *options, "--out", str(tmp_path / out), *extra])


def _tables(run) -> dict[str, pd.DataFrame]:
    with Store(run / grid.STORE_FILE) as store:
        return {name: store.table(name) for name in DATA_TABLES}


def _file_bytes(path):
    return {p.name: p.read_bytes() for p in path.iterdir() if p.name.startswith(grid.STORE_FILE)}


def test_a_run_reusing_another_computes_nothing_and_gives_the_same_rows(tmp_path, tiny_model_dir, monkeypatch,
                                                                         capsys, tiny_run_dir):
    first = copy_run(tiny_run_dir, tmp_path / "first")  # what `_run(tmp_path, tiny_model_dir, "first")` makes
    before = _file_bytes(first)

    def no_training(*args, **kwargs):
        raise AssertionError("a reused setting was trained again")

    monkeypatch.setattr("xdetox.train.train_adapter", no_training)
    monkeypatch.setattr("xdetox.generate.Generator.generate_batch", no_training)
    capsys.readouterr()
    assert _run(tmp_path, tiny_model_dir, "second", "--reuse", str(first)) == 0
    assert "reused from" in capsys.readouterr().err
    second = tmp_path / "second"
    for name, table in _tables(second).items():
        pd.testing.assert_frame_equal(table, _tables(first)[name], obj=name)
    assert json.loads((second / "summary.json").read_text())["settings"] == \
        json.loads((first / "summary.json").read_text())["settings"]
    assert sorted(p.name for p in (second / "adapters").iterdir()) == \
        sorted(p.name for p in (first / "adapters").iterdir())
    assert _file_bytes(first).keys() == before.keys()  # the source store is read, not written
    with sqlite3.connect(first / grid.STORE_FILE) as conn:
        assert conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0] == 12


def test_only_the_shared_keys_are_reused(tmp_path, tiny_model_dir):
    """A run on en alone, then one on en,de reusing it: en is copied, de is computed."""
    assert _run(tmp_path, tiny_model_dir, "en", targets="en") == 0
    shutil.rmtree(tmp_path / "en" / "adapters")  # finished work needs no adapter; de's generation retrains it
    assert _run(tmp_path, tiny_model_dir, "both", "--reuse", str(tmp_path / "en")) == 0
    en, both = _tables(tmp_path / "en"), _tables(tmp_path / "both")
    assert len(both["evaluations"]) == 4 and len(en["evaluations"]) == 2
    shared = both["completions"][both["completions"]["eval_key"].isin(en["completions"]["eval_key"])]
    pd.testing.assert_frame_equal(shared.reset_index(drop=True), en["completions"], obj="completions")
    assert (tmp_path / "both" / "adapters").is_dir()


def test_reuse_of_something_that_is_not_a_run_is_one_line_before_any_work(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "junk").mkdir()
    assert _run(tmp_path, tiny_model_dir, "out", "--reuse", str(tmp_path / "junk")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an xdetox run directory" in err[0]
    assert not (tmp_path / "out").exists()


def test_scores_of_another_scorer_model_are_not_reused(tmp_path, tiny_model_dir, tiny_run_dir):
    copy_run(tiny_run_dir, tmp_path / "first")  # what `_run(tmp_path, tiny_model_dir, "first")` makes
    with Store(tmp_path / "first" / grid.STORE_FILE) as store:
        store.set_meta("scorer_identity:offline", "an older offline model")
    assert _run(tmp_path, tiny_model_dir, "second", "--reuse", str(tmp_path / "first")) == 0
    first, second = _tables(tmp_path / "first"), _tables(tmp_path / "second")
    pd.testing.assert_frame_equal(second["completions"], first["completions"], obj="completions")
    # scored again by today's model: the same values, since only the recorded identity was changed
    assert len(second["scores"]) == len(first["scores"])
    with Store(tmp_path / "second" / grid.STORE_FILE) as store:
        assert store.get_meta("scorer_identity:offline") != "an older offline model"


def test_scores_of_a_scorer_whose_name_says_all_are_reused_as_a_resumed_run_keeps_them(tmp_path, tiny_model_dir,
                                                                                        tiny_run_dir):
    from xdetox.reuse import find_work

    first = copy_run(tiny_run_dir, tmp_path / "first")  # what `_run(tmp_path, tiny_model_dir, "first")` makes
    with sqlite3.connect(first / grid.STORE_FILE) as conn:  # as a run with the lang-fidelity scorer writes them
        conn.execute("INSERT OR REPLACE INTO scores"
                     " SELECT eval_key, prompt_id, sample, 'lang-fidelity', 1.0 FROM completions")
        conn.execute("DELETE FROM meta WHERE key = 'scorer_identity:lang-fidelity'")
        n = conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        train_keys = [r[0] for r in conn.execute("SELECT key FROM train_settings")]
        eval_keys = [r[0] for r in conn.execute("SELECT key FROM evaluations")]

    def reused(scorer):
        found = find_work([first], train_keys, eval_keys, ["offline", "lang-fidelity"], tmp_path / "second")
        return sum(row[3] == scorer for row in found[0].rows["scores"])

    assert reused("lang-fidelity") == n and reused("offline") > 0  # no identity recorded, none today: the same
    with Store(first / grid.STORE_FILE) as store:
        store.set_meta("scorer_identity:lang-fidelity", None)  # recorded as none: still the same
    assert reused("lang-fidelity") == n
    with Store(first / grid.STORE_FILE) as store:
        store.set_meta("scorer_identity:lang-fidelity", "some model")  # a scorer that had an identity then
    assert reused("lang-fidelity") == 0 and reused("offline") > 0


@pytest.mark.parametrize("content", [b"", b"not a database at all", b"SQLite format 3\x00" + b"\x00" * 50])
def test_a_broken_source_store_is_refused_and_left_alone(tmp_path, tiny_model_dir, capsys, content):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / grid.STORE_FILE).write_bytes(content)
    assert _run(tmp_path, tiny_model_dir, "out", "--reuse", str(broken)) == 2
    assert (broken / grid.STORE_FILE).read_bytes() == content
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "xdetox store" in err[0] and str(broken) in err[0]


def test_a_retrained_adapter_that_differs_regenerates_its_settings_completions(tmp_path, tiny_model_dir, capsys,
                                                                                tiny_run_dir):
    """Resumed elsewhere without its adapters, a setting with work left retrains; if the new adapter is not
    the recorded one, every completion of that setting is generated again (none mixes two adapters)."""
    run = copy_run(tiny_run_dir, tmp_path / "run")  # what `_run(tmp_path, tiny_model_dir, "run")` makes
    original = _tables(run)
    shutil.rmtree(run / "adapters")
    (run / "summary.json").unlink()
    with Store(run / grid.STORE_FILE) as store:
        tuned = store.table("train_settings").query("paradigm == 'x-ft'")["key"].iloc[0]
        store.conn.execute("UPDATE train_settings SET adapter_sha256 = 'another adapter' WHERE key = ?", (tuned,))
        first_eval = store.table("evaluations").query("train_key == @tuned")["key"].iloc[0]
        store.conn.execute("DELETE FROM batches WHERE eval_key = ?", (first_eval,))  # work left to do
    capsys.readouterr()
    assert _run(tmp_path, tiny_model_dir, "run") == 0
    assert "differs from the one the run recorded" in capsys.readouterr().err
    for name, table in _tables(run).items():  # the same adapter again (training is deterministic): same rows
        pd.testing.assert_frame_equal(table, original[name], obj=name)


def test_the_default_run_is_part_of_the_embedded_grid():
    """Same training, same keys: `xdetox run`'s ZS and X-FT from en are the grid's seed-42 settings."""
    from xdetox import data
    from xdetox.cli import _config_from_args, build_parser

    corpus = data.load(None)
    run = grid.make_plan(_config_from_args(build_parser().parse_args(["run"])), corpus)
    embedded = grid.make_plan(grid.load_config(Path(__file__).parents[1] / "configs" / "embedded.toml"), corpus)
    assert {s.label for s in run.settings} == {"zs", "x-ft:en"}
    assert {s.key for s in run.settings} <= {s.key for s in embedded.settings}
    assert {e.key for e in run.evaluations} <= {e.key for e in embedded.evaluations}
