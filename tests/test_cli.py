"""The ``xdetox`` command end to end on a tiny random model (the offline scorer is real)."""

import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import TINY_RUN, copy_run
from xdetox.cli import main


def _run(tmp_path, tiny_model_dir, *extra, out="run"):
    return main(["run", "--model", str(tiny_model_dir), *TINY_RUN, "--out", str(tmp_path / out), *extra])


def test_run_writes_summary_with_zs_and_xft(tmp_path, tiny_model_dir, tiny_run_dir):
    run = copy_run(tiny_run_dir, tmp_path / "run")  # what `_run(tmp_path, tiny_model_dir)` makes (exit 0)
    summary = json.loads((run / "summary.json").read_text())
    settings = summary["settings"]
    from xdetox import models, prepack
    # how the linear layers multiplied (xdetox.prepack), for this machine's dtype
    assert summary["run"]["decode"]["linear"] == prepack.description(models.resolve_dtype("auto"))
    assert [(s["paradigm"], s["source"], s["target"]) for s in settings] == [
        ("zs", None, "en"), ("zs", None, "de"), ("x-ft", "en", "en"), ("x-ft", "en", "de")]
    for s in settings:
        assert s["split"] == "test_toxic" and s["n"] == 3
        assert 0 <= s["mean_toxicity"] <= 1
    zs = {s["target"]: s["mean_toxicity"] for s in settings if s["paradigm"] == "zs"}
    for s in settings:
        assert {"empty_share", "new_tokens", "reduction_length_matched", "reduction_length_matched_ci",
                "abstention_flag"} <= set(s)
        if s["paradigm"] == "x-ft":
            assert s["n_paired"] <= s["n"] and isinstance(s["abstention_flag"], bool)
            if s["n_paired"] == s["n"] and s["empty_share"] == 0:  # every prompt written on both sides
                assert s["reduction_abs"] == pytest.approx(zs[s["target"]] - s["mean_toxicity"], abs=1e-5)
        else:
            assert s["reduction_abs"] is None and s["abstention_flag"] is None
    rows = [json.loads(line) for line in (run / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 12
    assert {"setting", "target", "prompt_id", "prompt", "completion", "toxicity"} <= set(rows[0])
    assert list(run.glob("matrix_*_x-ft.csv")) and list(run.glob("matrix_*_zs.csv"))
    for name in ("report.html", "report.md"):
        assert (run / name).is_file()
    assert list((run / "adapters").iterdir())

    # Re-running the same command resumes: nothing is recomputed, the results are identical.
    before = (run / "completions.jsonl").read_text()
    assert _run(tmp_path, tiny_model_dir) == 0
    assert (run / "completions.jsonl").read_text() == before
    # A fresh run with the same seed reproduces the same completions.
    assert _run(tmp_path, tiny_model_dir, out="again") == 0
    assert (tmp_path / "again" / "completions.jsonl").read_text() == before


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--targets", "xx"], "'xx'"),
        (["--limit", "0"], "limit must be at least 1"),
        (["--source", "qq"], "'qq'"),
        (["--model", "./no/such/model"], "model path not found"),
        (["--data", "missing.jsonl"], "data file not found"),
        (["--scorer", "nope"], "unknown scorer"),
        (["--temperature", "0"], "temperature must be a finite number above 0"),
        (["--temperature", "nan"], "temperature"),
        (["--temperature", "inf"], "temperature"),
        (["--top-p", "1.5"], "top_p must be a number in (0, 1]"),
        (["--samples", "0"], "samples_per_prompt must be an integer of at least 1"),
        (["--batch-size", "-3"], "batch_size must be an integer of at least 1"),
        (["--train-batch-size", "-3"], "batch_size must be an integer of at least 1"),
        (["--max-new-tokens", "0"], "max_new_tokens"),
        (["--lora-r", "0"], "LoRA r must be an integer"),
        (["--lora-alpha", "0"], "LoRA alpha must be a positive number"),
        (["--lora-alpha", "-5"], "LoRA alpha"),
        (["--lora-dropout", "1.5"], "LoRA dropout must be a number in [0, 1)"),
        (["--lr", "nan"], "learning rate must be a positive number"),
        (["--epochs", "0"], "epochs must be an integer of at least 1"),
        (["--quick", "--epochs", "2"], "leave out --epochs, or leave out --quick"),
        (["--limit", "20", "--quick"], "leave out --limit, or leave out --quick"),  # even the preset's own value
        (["--quick", "--targets", "all", "--scorer", "offline-tuned"], "leave out --targets, --scorer"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert not out.exists(), "bad input must not create a run directory"


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert main(["run", "--out", str(path), "--limit", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_console_script_reports_unknown_language():
    exe = [sys.executable, "-m", "xdetox.cli", "run", "--targets", "xx"]
    done = subprocess.run(exe, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "xx" in lines[0]


@pytest.mark.parametrize("table, line, needle", [
    ("decode", "temperature = 0", "temperature must be a finite number above 0"),
    ("decode", 'temperature = "hot"', "temperature"),
    ("decode", "top_p = 1.5", "top_p must be a number in (0, 1]"),
    ("decode", "samples_per_prompt = 0", "samples_per_prompt"),
    ("decode", "batch_size = -1", "batch_size"),
    ("decode", "max_new_tokens = 0", "max_new_tokens"),
    ("decode", "top_k = -5", "top_k"),
    ("train.lora", "r = 0", "LoRA r"),
    ("train", "batch_size = 0", "batch_size"),
    ("train", "gradient_accumulation_steps = -1", "gradient_accumulation_steps"),
    ("train.x-ft", "epochs = 0", "epochs"),
])
def test_grid_plan_refuses_bad_values_in_a_config(tmp_path, capsys, table, line, needle):
    config = tmp_path / "bad.toml"
    config.write_text(f'sources = ["en"]\n[{table}]\n{line}\n')
    assert main(["grid", "plan", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_each_attempt_is_recorded_and_the_summary_gives_both_times(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """An interrupted attempt (130, one line) and its resume: the store keeps both, the summary and
    ``xdetox report`` give the latest attempt's wall time and the total over both."""
    from xdetox import grid
    from xdetox.store import Store

    argv = ["run", "--model", str(tiny_model_dir), "--targets", "en", "--limit", "2", "--epochs", "1",
            "--max-new-tokens", "3", "--scorer", "offline", "--quiet", "--out", str(tmp_path / "run")]
    real = grid.execute

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "execute", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "xdetox: interrupted"
    # an attempt of an earlier day, so that "started" tells the two attempts apart
    with sqlite3.connect(tmp_path / "run" / "xdetox.sqlite") as db:
        db.execute("UPDATE attempts SET started = '2026-01-01T00:00:00+00:00' WHERE id = 1")
    monkeypatch.setattr(grid, "execute", real)
    assert main(argv) == 0
    run = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]
    assert run["attempts"] == 2
    assert run["total_time_s"] >= run["wall_time_s"] >= 0
    with Store(tmp_path / "run" / "xdetox.sqlite", readonly=True) as store:
        attempts = store.table("attempts").sort_values("id")
        assert list(attempts["outcome"]) == ["interrupted", "finished"]
        assert run["started"] == attempts["started"].iloc[0] == "2026-01-01T00:00:00+00:00"  # the first began it
    assert main(["report", str(tmp_path / "run")]) == 0
    again = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]
    assert (again["wall_time_s"], again["total_time_s"], again["attempts"]) == (
        run["wall_time_s"], run["total_time_s"], 2)


def test_a_run_resumed_on_another_device_names_both(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """Each attempt records what it runs on when it starts; an attempt stopped on one machine and resumed on
    another gives a summary (and report) naming both devices with their attempts, not the last one alone."""
    from xdetox import grid

    argv = ["run", "--model", str(tiny_model_dir), "--targets", "en", "--limit", "2", "--epochs", "1",
            "--max-new-tokens", "3", "--scorer", "offline", "--quiet", "--out", str(tmp_path / "run")]
    real_execute, real_environment = grid.execute, grid.environment

    def machine(name: str, linear: str):
        return lambda: {**real_environment(), "device": f"cpu ({name})", "linear": linear}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "environment", machine("machine A", "F.linear"))
    monkeypatch.setattr(grid, "execute", interrupted)
    assert main(argv) == 130
    monkeypatch.setattr(grid, "environment", machine("machine B", "oneDNN prepacked"))
    monkeypatch.setattr(grid, "execute", real_execute)
    assert main(argv) == 0
    run = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]
    assert run["device"] == "cpu (machine A) (attempt 1); cpu (machine B) (attempt 2)"
    assert run["decode"]["linear"] == "F.linear (attempt 1); oneDNN prepacked (attempt 2)"
    assert run["decode"]["generator"] == "transformers"  # the same in both: named once
    assert "cpu (machine A) (attempt 1); cpu (machine B) (attempt 2)" in (tmp_path / "run" / "report.md").read_text()
    # a third attempt on machine B again: attempts grouped by device, in order of first use
    assert main(argv) == 0
    run = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]
    assert run["device"] == "cpu (machine A) (attempt 1); cpu (machine B) (attempts 2, 3)"
    capsys.readouterr()


def test_a_run_on_one_device_names_it_once(tmp_path, tiny_model_dir, capsys):
    from xdetox import grid

    argv = ["run", "--model", str(tiny_model_dir), "--targets", "en", "--limit", "2", "--epochs", "1",
            "--max-new-tokens", "3", "--scorer", "offline", "--quiet", "--out", str(tmp_path / "run")]
    assert main(argv) == 0 and main(argv) == 0
    run = json.loads((tmp_path / "run" / "summary.json").read_text())["run"]
    assert run["device"] == grid.environment()["device"] and run["attempts"] == 2
    capsys.readouterr()


class _Planned(Exception):
    """Raised in place of running a config: what a command or call would run, and where."""


def test_quick_is_a_preset_of_the_run_options_the_api_shares(monkeypatch):
    import xdetox
    import xdetox.api
    import xdetox.cli
    from xdetox.cli import _run_options, build_parser
    from xdetox.grid import RunOptions

    options = _run_options(build_parser().parse_args(["run", "--quick"]))
    assert (options.targets, options.limit, options.scorer, options.epochs) == ("en,de", 20, "offline-tuned", 1)
    assert options == RunOptions(quick=True) == RunOptions.from_mapping({"quick": True})
    config = options.to_config()
    assert config.targets == ("en", "de") and config.limit == 20
    assert config.scorers == ("offline-tuned", "sentences:offline-tuned", "lang-fidelity")
    assert config.train.epochs == 1 and config.paradigms == ("zs", "x-ft") and not config.measure_references
    # every other flag applies as usual
    other = _run_options(build_parser().parse_args(["run", "--quick", "--seed", "7", "--max-new-tokens", "4"]))
    assert (other.seed, other.max_new_tokens, other.limit) == (7, 4, 20)

    def planned(config, out, **kwargs):
        raise _Planned(config, out)

    monkeypatch.setattr(xdetox.cli, "run_config", planned)
    monkeypatch.setattr(xdetox.api, "run_config", planned)
    with pytest.raises(_Planned) as cli:
        main(["run", "--quick"])
    with pytest.raises(_Planned) as api:
        xdetox.run(quick=True)
    assert cli.value.args == api.value.args == (config, "runs/quick")  # not the default run's runs/<timestamp>
    with pytest.raises(_Planned) as elsewhere:
        main(["run", "--quick", "--out", "runs/mine"])
    assert elsewhere.value.args == (config, "runs/mine")
    with pytest.raises(xdetox.XdetoxInputError, match="leave out --epochs, or leave out --quick"):
        xdetox.run(quick=True, epochs=1)
    with pytest.raises(xdetox.XdetoxInputError, match="leave out --limit"):
        RunOptions(quick=True, limit=5)


def test_a_quick_run_writes_its_report_and_says_where(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "quick"
    argv = ["run", "--quick", "--model", str(tiny_model_dir), "--max-new-tokens", "4", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert f"{out / 'report.html'}" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert [(s["paradigm"], s["target"], s["n"]) for s in summary["settings"]] == [
        ("zs", "en", 20), ("zs", "de", 20), ("x-ft", "en", 20), ("x-ft", "de", 20)]
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
    with sqlite3.connect(out / "xdetox.sqlite") as db:  # the reference measures are skipped
        assert db.execute("SELECT COUNT(*) FROM measures").fetchone() == (0,)


def test_every_flag_has_help_that_shows_its_default():
    """``xdetox <command> --help`` explains every flag, and a flag with a default says what it is."""
    import argparse

    from xdetox.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif action.option_strings and action.dest not in ("help", "version"):
                text = action.help or ""
                silent_default = action.default not in (None, False, argparse.SUPPRESS) and "default" not in text
                if not text or silent_default:
                    missing.append(f"xdetox {' '.join(path)} {action.option_strings[0]}: {text!r}")

    walk(build_parser(), ())
    assert missing == []
