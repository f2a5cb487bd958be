"""The Python API (``xdetox.run``, ``xdetox.open_run``, ``Run``) on a tiny random model, and its docs page."""

import ast
import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest

import xdetox
from xdetox.grid import RunOptions, config_from_stored

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
TINY = {"source": "en", "targets": ("en", "de"), "limit": 2, "epochs": 1, "max_new_tokens": 4, "scorer": "offline"}
"""The options of the tiny run, besides the model: two targets, two prompts each, four new tokens."""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    """A finished tiny run (ZS and X-FT from en on en and de) made with ``xdetox.run``."""
    out = tmp_path_factory.mktemp("api") / "run"
    return xdetox.run(out=out, model=str(tiny_model_dir), **TINY)


def copy_run(run, tmp_path) -> Path:
    """A copy of a run directory, for a test that changes it."""
    return Path(shutil.copytree(run.path, tmp_path / "copy"))


def same(a, b) -> bool:
    """Equal, with NaN (a frame's missing number) equal to None (summary.json's null)."""
    missing = [v is None or (isinstance(v, float) and math.isnan(v)) for v in (a, b)]
    return all(missing) if any(missing) else a == b


def test_import_xdetox_is_fast_and_loads_no_model_code():
    code = ("import json, sys, time; t = time.perf_counter(); import xdetox; seconds = time.perf_counter() - t; "
            "heavy = ('torch', 'transformers', 'pandas', 'xdetox.report', 'xdetox.api'); "
            "at_import = [m for m in heavy if m in sys.modules]; "
            "xdetox.open_run, xdetox.run, xdetox.Run; "
            "on_use = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(json.dumps({'seconds': seconds, 'at_import': at_import, 'on_use': on_use}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["at_import"] == [] and result["on_use"] == []
    assert result["seconds"] < 1.0
    assert {"run", "open_run", "Run", "XdetoxInputError", "__version__"} <= set(dir(xdetox))
    assert xdetox.XdetoxInputError is xdetox.errors.XdetoxInputError and isinstance(xdetox.__version__, str)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        xdetox.nope  # noqa: B018


def test_version_flag_prints_the_version():
    out = subprocess.run([sys.executable, "-m", "xdetox.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"xdetox {xdetox.__version__}"


def test_options_build_the_config_the_cli_builds(tiny_model_dir):
    from xdetox.cli import _config_from_args, build_parser

    argv = ["run", "--model", str(tiny_model_dir), "--targets", "en,de", "--limit", "2", "--epochs", "1",
            "--max-new-tokens", "4", "--scorer", "offline", "--sentences-per-sequence", "1",
            "--text-normalisation", "none", "--no-zs"]
    from_cli = _config_from_args(build_parser().parse_args(argv))
    options = {**TINY, "model": str(tiny_model_dir), "sentences_per_sequence": 1, "text_normalisation": "none",
               "no_zs": True}
    assert RunOptions.from_mapping(options).to_config() == from_cli
    # every flag of `xdetox run` that shapes the config is an option, with the CLI's default
    defaults = vars(build_parser().parse_args(["run"]))
    assert {f.name: getattr(RunOptions, f.name) for f in fields(RunOptions)} == {
        f.name: defaults[f.name] for f in fields(RunOptions)}


def test_a_stored_config_reads_back_as_the_config():
    config = RunOptions(targets="en,de", limit=2, text_normalisation="none", sentences_per_sequence=1).to_config()
    stored = json.loads(json.dumps(config.to_dict()))  # as the store keeps it
    assert config_from_stored(stored) == config and config_from_stored(stored).to_dict() == stored
    grid = xdetox.grid.load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.toml")
    assert config_from_stored(json.loads(json.dumps(grid.to_dict()))) == grid
    # a config stored before text_normalisation and sentences_per_sequence existed: their values then
    old = json.loads(json.dumps(replace(config, text_normalisation="v1").to_dict()))
    del old["text_normalisation"], old["train"]["sentences_per_sequence"]
    legacy = config_from_stored(old)
    assert legacy.text_normalisation == "none" and legacy.train.sentences_per_sequence == 1
    with pytest.raises(xdetox.XdetoxInputError, match="unknown key"):
        config_from_stored({**stored, "colour": "red"})


def test_run_and_open_run(tiny_run, tiny_model_dir):
    run = xdetox.open_run(tiny_run.path)
    summary = json.loads((run.path / "summary.json").read_text())
    assert run.summary == summary == tiny_run.summary
    assert run.config == RunOptions(model=str(tiny_model_dir), **TINY).to_config()
    assert run.config.to_dict() == xdetox.grid.config_from_stored(run.config.to_dict()).to_dict()
    assert "settings=4" in repr(run)

    settings = run.settings()
    assert len(settings) == len(summary["settings"]) == 4
    assert list(zip(settings["paradigm"], settings["target"])) == [
        ("zs", "en"), ("zs", "de"), ("x-ft", "en"), ("x-ft", "de")]
    assert {"ci95_low", "ci95_high", "flags.short", "degenerate_reasons.silent", "seeds"} <= set(settings.columns)
    assert "ci95" not in settings.columns and "flags" not in settings.columns
    # every run reads its scorer by sentence too: the summary's by_scorer holds it, each tuned row its reduction
    assert summary["scorers"] == ["offline", "sentences:offline"]
    assert {"reduction_sentence", "reduction_sentence_ci_low", "reduction_sentence_q"} <= set(settings.columns)
    by_sentence = {(e["paradigm"], e["target"]): e["reduction_abs"] for e in summary["by_scorer"]["sentences:offline"]}
    assert [by_sentence[k] for k in zip(settings["paradigm"], settings["target"]) if k[0] == "x-ft"] \
        == [None if math.isnan(v) else v for v in settings.loc[settings["paradigm"] == "x-ft", "reduction_sentence"]]
    for row, entry in zip(settings.to_dict("records"), summary["settings"]):
        for key, value in entry.items():
            columns = [c for c in row if c.startswith(f"{key}.")]
            if columns:  # a dict field: a column per key, missing where this setting has none (or null)
                assert all(same(row[c], (value or {}).get(c[len(key) + 1:])) for c in columns), key
            elif f"{key}_low" in row:  # an interval, null where the setting has none (ZS)
                low, high = value or (None, None)
                assert same(row[f"{key}_low"], low) and same(row[f"{key}_high"], high), key
            elif key == "seeds":
                assert row[key] == tuple(value)
            else:
                assert same(row[key], value), key

    per_seed = run.per_seed()
    assert len(per_seed) == len(summary["per_seed"]) and "seed" in per_seed.columns

    completions = run.completions()
    lines = (run.path / "completions.jsonl").read_text().splitlines()
    assert len(completions) == len(lines) == 4 * 2  # 4 settings x 2 prompts
    assert {"toxicity", "toxicity_length_matched", "zs_toxicity_length_matched"} <= set(completions.columns)
    assert list(completions.columns) == list(json.loads(lines[0]))
    assert len(run.measures()) > 0 and {"setting", "lang", "name", "value"} <= set(run.measures().columns)


def test_parquet_files_are_the_run_frames(tiny_run):
    """settings.parquet reads back as ``Run.settings()`` (its ``seeds`` as arrays), completions.parquet as the
    rows and columns of completions.jsonl (the JSONL rounds scores to 10 decimal places; missing is null)."""
    import pandas as pd

    run = xdetox.open_run(tiny_run.path)
    settings = pd.read_parquet(run.path / "settings.parquet")
    pd.testing.assert_frame_equal(settings.assign(seeds=settings["seeds"].map(tuple)), run.settings())

    completions = pd.read_parquet(run.path / "completions.parquet")
    rows = [json.loads(line) for line in (run.path / "completions.jsonl").read_text().splitlines()]
    assert list(completions.columns) == list(rows[0]) and len(completions) == len(rows)
    for written, row in zip(completions.to_dict("records"), rows):
        for key, value in row.items():
            if isinstance(value, float):
                assert written[key] == pytest.approx(value, rel=1e-9, abs=1e-10), key
            else:
                assert same(written[key], value), key
    pd.testing.assert_series_equal(completions["toxicity"], run.completions()["toxicity"])  # every digit kept


def test_completions_have_a_column_per_scorer(tiny_run, tmp_path):
    """A scorer added to a finished run: ``xdetox.run`` of its config resumes it, scoring only what is new."""
    config = replace(tiny_run.config, scorers=("offline", "lang-fidelity"))
    run = xdetox.run(config, out=copy_run(tiny_run, tmp_path))
    completions = run.completions()
    assert {"toxicity", "lang_fidelity"} <= set(completions.columns)
    assert completions[["completion", "toxicity"]].equals(tiny_run.completions()[["completion", "toxicity"]])
    assert run.config == config
    assert {s["target"]: s["n"] for s in run.summary["settings"]} == {"en": 2, "de": 2}


def test_report_rewrites_the_report_files(tiny_run, tmp_path):
    run = xdetox.open_run(copy_run(tiny_run, tmp_path))
    before = {name: (run.path / name).read_text() for name in ("summary.json", "report.md", "completions.jsonl")}
    for name in before:
        (run.path / name).unlink()
    assert run.report() == json.loads(before["summary.json"]) == run.summary
    assert {name: (run.path / name).read_text() for name in before} == before


def one_line_error(call) -> str:
    with pytest.raises(xdetox.XdetoxInputError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_open_run_refuses_what_is_not_a_finished_run(tmp_path, tiny_run):
    assert "no run directory at" in one_line_error(lambda: xdetox.open_run(tmp_path / "nope"))
    (tmp_path / "file").write_text("x")
    assert "is not a directory" in one_line_error(lambda: xdetox.open_run(tmp_path / "file"))
    (tmp_path / "empty").mkdir()
    assert "(no xdetox.sqlite)" in one_line_error(lambda: xdetox.open_run(tmp_path / "empty"))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "xdetox.sqlite").write_text("not a database")
    assert "is not an xdetox store" in one_line_error(lambda: xdetox.open_run(tmp_path / "text"))

    from xdetox.store import Store

    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with Store(unfinished / "xdetox.sqlite") as store:  # killed after planning, before its first evaluation
        store.set_meta("config", tiny_run.config.to_dict())
        store.set_meta("planned_evaluations", 4)
    message = one_line_error(lambda: xdetox.open_run(unfinished))
    assert "is not finished (0 of 4 evaluations started" in message and "run the same command again" in message
    message = one_line_error(lambda: xdetox.open_run(unfinished, partial=True))
    assert message == f"{unfinished} is not finished and has no partial report yet: `xdetox report --partial" \
                      f" {unfinished}` writes one"
    (unfinished / "partial").mkdir()
    (unfinished / "partial" / "summary.json").write_text("{")
    assert "is not valid JSON" in one_line_error(lambda: xdetox.open_run(unfinished, partial=True))
    assert "partial must be True or False" in one_line_error(lambda: xdetox.open_run(unfinished, partial="yes"))

    copy = copy_run(tiny_run, tmp_path)
    (copy / "summary.json").unlink()
    message = one_line_error(lambda: xdetox.open_run(copy))
    assert "has no summary.json" in message and f"xdetox report {copy}" in message


def test_run_refuses_bad_input_before_writing(tmp_path):
    out = tmp_path / "out"
    message = one_line_error(lambda: xdetox.run(out=out, limit=2, max_new_token=4))
    assert "'max_new_token'" in message and "did you mean max_new_tokens?" in message
    assert "unknown language code 'xx'" in one_line_error(lambda: xdetox.run(out=out, targets=("en", "xx")))
    assert "limit must be an integer" in one_line_error(lambda: xdetox.run(out=out, limit="2"))
    assert "apply only without one" in one_line_error(lambda: xdetox.run(RunOptions().to_config(), limit=2))
    assert "takes a GridConfig" in one_line_error(lambda: xdetox.run(42))
    assert not out.exists()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_docs_example_runs_on_a_run(tiny_run, capsys):
    blocks = [b for b in python_blocks(DOCS.read_text(encoding="utf-8")) if "run_dir" in b]
    assert len(blocks) == 1
    exec(compile(blocks[0], str(DOCS), "exec"), {"run_dir": str(tiny_run.path)})  # noqa: S102
    printed = capsys.readouterr().out
    assert "reduction_abs" in printed and "ci95_low" in printed and "x-ft:en" in printed


def test_the_docs_run_calls_name_real_options():
    """The ``xdetox.run`` calls of the docs page: their options exist and make a valid config."""
    calls = [node for block in python_blocks(DOCS.read_text(encoding="utf-8")) for node in ast.walk(ast.parse(block))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "xdetox.run"]
    assert len(calls) >= 2
    for call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        options = {k: ast.literal_eval(v) for k, v in keywords.items() if k not in ("out", "quiet", "reuse")}
        if call.args and isinstance(call.args[0], ast.Constant):  # a config file of the repository
            xdetox.grid.load_config(DOCS.parents[1] / call.args[0].value)
            assert not options
        elif not call.args:
            RunOptions.from_mapping(options).to_config()


def test_open_run_of_a_path_the_system_refuses_is_one_line(tmp_path, monkeypatch):
    from pathlib import Path

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "exists", refuse)
    with pytest.raises(xdetox.XdetoxInputError, match="cannot read .*: Permission denied"):
        xdetox.open_run(tmp_path)
