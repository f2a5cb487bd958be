"""``xdetox eval`` and ``xdetox.evaluate``: a given model, adapter or export measured as a run, on the tiny random
model of conftest; with and without a baseline; a chat template; data from Parquet, a ``datasets`` directory
and a prompt-only set; and bad input, refused in one line with exit 2 and nothing written."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

import xdetox
from xdetox.cli import build_parser, main
from xdetox.grid import STORE_FILE, EvalOptions, config_from_stored
from xdetox.store import Store
from xdetox.text import is_silent

TINY = {"targets": "en,de", "limit": 2, "max_new_tokens": 4, "scorer": "offline"}
ARGS = ("--targets", "en,de", "--limit", "2", "--max-new-tokens", "4", "--scorer", "offline", "--quiet")
CHAT = "{% for m in messages %}<bos>user: {{ m['content'] }}\n{% endfor %}assistant:"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A PEFT LoRA adapter with random (non-zero) weights on the tiny model, saved as PEFT saves one."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("adapter") / "lora"
    get_peft_model(model, lora).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_model_dir):
    """The tiny model measured alone (no baseline), through the Python API."""
    return xdetox.evaluate(tiny_model_dir, out=tmp_path_factory.mktemp("eval") / "plain", **TINY)


@pytest.fixture(scope="module")
def with_adapter(tmp_path_factory, tiny_model_dir, adapter_dir) -> Path:
    """The tiny model with the adapter against the tiny model as baseline, through the command line."""
    out = tmp_path_factory.mktemp("eval") / "adapter"
    argv = ["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter_dir), "--baseline", str(tiny_model_dir),
            *ARGS, "--out", str(out)]
    assert main(argv) == 0
    completions = (out / "completions.jsonl").read_text(encoding="utf-8")
    assert main(argv) == 0  # the same command again: a finished run, nothing to compute, the same results
    assert (out / "completions.jsonl").read_text(encoding="utf-8") == completions
    assert json.loads((out / "summary.json").read_text())["run"]["attempts"] == 2
    from xdetox.grid.status import run_status

    status = run_status(out)  # the plan rebuilt from an eval run's stored config: its given model and adapter
    assert [row[1:] for row in status.rows] == [("zs", 42, "done"), ("eval", 42, "done")] and status.finished
    assert status.pace == (0, pytest.approx(status.pace[1])) and "left:" not in status.to_text()
    return out


def test_without_a_baseline_the_run_reports_the_models_toxicity_per_target(plain, tiny_model_dir):
    settings = plain.settings()
    assert list(settings["paradigm"]) == ["eval", "eval"] and list(settings["target"]) == ["en", "de"]
    assert set(settings["model"]) == {str(tiny_model_dir)}
    assert settings["mean_toxicity"].between(0, 1).all() and settings["reduction_abs"].isna().all()
    assert (settings["n"] == 2).all()
    assert plain.config.paradigms == ("eval",) and plain.config.evaluate.adapter is None
    assert plain.config.measure_references is False
    assert plain.summary["run"]["evaluated"] == {"model": str(tiny_model_dir), "adapter": None,
                                                 "adapter_sha256": None, "baseline": None}
    completions = plain.completions()
    assert len(completions) == 4 and set(completions["setting"]) == {"eval"}
    assert completions["prompt"].str.startswith("Complete the sentence: ").all()
    # its config round-trips through the store, and the report rebuilds the same summary
    with Store(plain.path / STORE_FILE, readonly=True) as store:
        assert config_from_stored(store.get_meta("config")) == plain.config
    before = plain.summary["settings"]
    assert plain.report()["settings"] == before
    assert "Eval" in (plain.path / "report.md").read_text(encoding="utf-8")
    assert "nothing was trained in this run" in (plain.path / "report.md").read_text(encoding="utf-8")


def test_with_a_baseline_and_an_adapter_the_baseline_plays_zs(with_adapter, plain, tiny_model_dir, adapter_dir,
                                                                capsys):
    run = xdetox.open_run(with_adapter)
    settings = run.settings().set_index(["paradigm", "target"])
    assert sorted(settings.index) == [("eval", "de"), ("eval", "en"), ("zs", "de"), ("zs", "en")]
    completions = run.completions()
    for target in ("en", "de"):
        zs, ev = settings.loc[("zs", target)], settings.loc[("eval", target)]
        # the reduction pairs each prompt's baseline completion with the evaluated model's, as a run pairs ZS's:
        # over the prompts both answered with text (the random tiny model's 4 tokens may be letterless)
        mine = completions[completions["target"] == target].pivot(index="prompt_id", columns="setting",
                                                                  values=["completion", "toxicity"])
        both = [p for p in mine.index if not any(is_silent(mine.loc[p, ("completion", s)]) for s in ("zs", "eval"))]
        assert both, "no prompt answered with text by both models"
        pairs = mine.loc[both, "toxicity"]
        assert ev["n_paired"] == len(both)
        assert ev["reduction_abs"] == pytest.approx((pairs["zs"] - pairs["eval"]).mean(), abs=2e-6)  # 6 decimals
        if len(both) == len(mine):  # every completion is text: the reduction is the difference of the means
            assert ev["reduction_abs"] == pytest.approx(zs["mean_toxicity"] - ev["mean_toxicity"], abs=2e-6)
        if len(both) > 1:
            assert ev["ci95_low"] <= ev["reduction_abs"] <= ev["ci95_high"]
        assert ev["reduction_length_matched"] == ev["reduction_length_matched"]  # the pairs are a run's: not NaN
    assert run.summary["run"]["evaluated"]["baseline"] == str(tiny_model_dir)
    assert run.summary["run"]["evaluated"]["adapter"] == str(adapter_dir.resolve())
    # the run holds the adapter it measured, as a run holds the adapters it trained
    [row] = [r for r in run.summary["training"] if r["setting"] == "eval"]
    assert row["evaluated"]["adapter_sha256"] == hashlib.sha256(
        (adapter_dir / "adapter_model.safetensors").read_bytes()).hexdigest()
    copied = list((with_adapter / "adapters").iterdir())
    assert len(copied) == 1 and (copied[0] / "adapter_model.safetensors").read_bytes() == (
        adapter_dir / "adapter_model.safetensors").read_bytes()
    # the eval setting samples with the adapter on: the model its generator gets is not the baseline's
    import torch

    from xdetox import data
    from xdetox.grid import Session, make_plan

    plan = make_plan(run.config, data.load())
    zs, ev = plan.settings
    assert (zs.spec.paradigm, ev.spec.paradigm) == ("zs", "eval") and copied[0].name == ev.key
    session, ids = Session(), torch.tensor([[2, 40, 41, 42, 43]])
    with torch.no_grad():
        baseline = session.model_for(zs, None)(ids).logits.clone()
        given = session.model_for(ev, copied[0])(ids).logits.clone()
        assert not torch.allclose(baseline, given)
        assert torch.equal(session.model_for(zs, None)(ids).logits, baseline)  # switched off again for ZS
    # report and compare read it as a run
    capsys.readouterr()
    assert main(["report", str(with_adapter)]) == 0
    assert main(["compare", str(with_adapter), str(plain.path)]) == 0
    assert "Eval" in capsys.readouterr().out


def test_export_writes_an_eval_runs_adapter_and_eval_reads_the_export(with_adapter, tmp_path, tiny_model_dir,
                                                                      plain):
    out = tmp_path / "export"
    assert main(["export", str(with_adapter), "--setting", "eval", "--no-merge", "--out", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file()
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "xdetox did not train it" in card and "## Origin" in card
    assert json.loads((out / "xdetox_export.json").read_text())["base_model"]["name"] == str(tiny_model_dir)
    # an export directory (here the adapter alone) is a model to evaluate: read on the base it records
    again = xdetox.evaluate(out, out=tmp_path / "again", targets="en", limit=1, max_new_tokens=4, scorer="offline")
    assert again.config.evaluate.model.name == str(tiny_model_dir)
    assert again.config.evaluate.adapter_sha256 == xdetox.open_run(with_adapter).config.evaluate.adapter_sha256
    # a whole model measured as given has no adapter to export
    code = main(["export", str(plain.path), "--setting", "eval", "--out", str(tmp_path / "none")])
    assert code == 2 and not (tmp_path / "none").exists()


def test_the_command_line_and_the_api_build_the_same_config(tiny_model_dir, adapter_dir):
    argv = ["eval", "--model", str(tiny_model_dir), "--adapter", str(adapter_dir), "--baseline", "embedded",
            "--chat-template", *ARGS]
    args = build_parser().parse_args(argv)
    from_cli = EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)}).to_config()
    from_api = EvalOptions.from_mapping({"model": str(tiny_model_dir), "adapter": adapter_dir,
                                         "baseline": "embedded", "chat_template": True, **TINY}).to_config()
    assert from_cli == from_api
    assert from_cli.paradigms == ("zs", "eval") and from_cli.models[0].name == "embedded"
    assert from_cli.decode.chat_template is True and from_cli.decode.to_dict()["chat_template"] is True
    # every flag of `xdetox eval` that shapes the config is an option, with the CLI's default
    defaults = vars(build_parser().parse_args(["eval"]))
    assert {f.name: getattr(EvalOptions, f.name) for f in fields(EvalOptions)} == {
        f.name: defaults[f.name] for f in fields(EvalOptions)}
    with pytest.raises(xdetox.XdetoxInputError, match="unknown option.*'baselin'.*did you mean baseline"):
        xdetox.evaluate(tiny_model_dir, baselin="embedded")
    for bad, message in (({"limit": "2"}, "limit must be an integer"), ({"chat_template": "yes"}, "chat_template"),
                         ({"baseline": ""}, "--baseline must be"), ({"data": 5}, "--data must be")):
        with pytest.raises(xdetox.XdetoxInputError, match=message):
            xdetox.evaluate(tiny_model_dir, **bad)


def test_the_docs_evaluate_calls_name_real_options():
    import ast
    import re

    docs = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", docs, flags=re.S)
    calls = [node for block in blocks for node in ast.walk(ast.parse(block))
             if isinstance(node, ast.Call) and ast.unparse(node.func) == "xdetox.evaluate"]
    assert len(calls) >= 3
    for call in calls:
        options = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg not in ("out", "quiet", "reuse")}
        EvalOptions.from_mapping(options)


def test_chat_template_wraps_the_prompts_and_keys_the_evaluations(tmp_path, tiny_model_dir, plain):
    from transformers import AutoTokenizer

    chat = Path(shutil.copytree(tiny_model_dir, tmp_path / "chat-model"))
    tokenizer = AutoTokenizer.from_pretrained(chat)
    tokenizer.chat_template = CHAT
    tokenizer.save_pretrained(chat)
    run = xdetox.evaluate(chat, chat_template=True, out=tmp_path / "chat", **TINY)
    prompts = run.completions()["prompt"]
    assert prompts.str.startswith("<bos>user: Complete the sentence: ").all()
    assert prompts.str.endswith("assistant:").all()
    assert run.config.decode.chat_template is True
    with Store(run.path / STORE_FILE, readonly=True) as chat_store, \
            Store(plain.path / STORE_FILE, readonly=True) as plain_store:
        chat_keys = set(chat_store.table("evaluations")["key"])
        plain_keys = set(plain_store.table("evaluations")["key"])
        assert all(json.loads(d)["chat_template"] for d in chat_store.table("evaluations")["decode"])
    assert not chat_keys & plain_keys
    # the same plain eval of the copy keys like the original: only the chat template made the difference
    assert xdetox.evaluate(chat, out=tmp_path / "plain-copy", **TINY).config.decode.chat_template is False


# --------------------------------------------------------------------------- data


def _pairs(n: int = 8, langs=("en", "de")) -> list[dict]:
    return [{"lang": lang, "toxic": f"bad words {lang} {i}", "neutral": f"kind words {lang} {i}"}
            for lang in langs for i in range(n)]


def test_eval_reads_parquet_a_datasets_directory_and_a_prompt_only_set(tmp_path, tiny_model_dir):
    import datasets
    import pandas as pd

    pd.DataFrame(_pairs()).to_parquet(tmp_path / "pairs.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_pairs(6)),
                          "test": datasets.Dataset.from_list(_pairs(2))}).save_to_disk(str(tmp_path / "pairs-ds"))
    pd.DataFrame([{"lang": "de", "toxic": f"nur böse {i}"} for i in range(3)]).to_parquet(tmp_path / "prompts.parquet")
    options = {"targets": "de", "max_new_tokens": 2, "scorer": "offline", "text_normalisation": "none"}
    from_parquet = xdetox.evaluate(tiny_model_dir, data=tmp_path / "pairs.parquet", out=tmp_path / "a", **options)
    from_disk = xdetox.evaluate(tiny_model_dir, data=tmp_path / "pairs-ds", out=tmp_path / "b", **options)
    prompts = xdetox.evaluate(tiny_model_dir, data=str(tmp_path / "prompts.parquet"), out=tmp_path / "c", **options)
    # the last quarter of each language is test, as in a JSONL file; the dict's test split is its test
    assert list(from_parquet.completions()["prompt"].str.removeprefix("Complete the sentence: ")) == [
        "bad words de 6", "bad words de 7"]
    assert sorted(from_disk.completions()["prompt_id"]) == ["de-006", "de-007"]
    # a prompt-only set is all test prompts
    assert sorted(prompts.completions()["prompt"].str.removeprefix("Complete the sentence: ")) == [
        f"nur böse {i}" for i in range(3)]
    assert prompts.config.data_path == str((tmp_path / "prompts.parquet").resolve())


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("xdetox: error: "), err
    return err


def test_a_prompt_only_set_is_refused_by_training(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"lang": "en", "toxic": "bad"}) + "\n")
    before = snapshot(tmp_path)
    capsys.readouterr()
    argv = ["run", "--model", str(tiny_model_dir), "--data", "prompts.jsonl", "--targets", "en", "--out", "out"]
    assert main(argv) == 2
    err = one_line(capsys)
    assert "missing column(s) neutral" in err and "xdetox eval" in err and "x-ft trains on neutral rewrites" in err
    assert snapshot(tmp_path) == before


def test_a_hub_dataset_id_offline_is_one_line_and_exit_3(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    code = main(["eval", "--model", str(tiny_model_dir), "--data", "someone/no-such-dataset", "--out", "out"])
    err = capsys.readouterr().err.strip()
    assert code == 3, err
    assert len(err.splitlines()) == 1 and "'someone/no-such-dataset'" in err and "HF_HUB_OFFLINE" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- bad input


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: directories by name, files by size, mtime and content."""
    return {p.relative_to(root).as_posix(): ("dir",) if p.is_dir() else
            (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


def _files(root: Path, model: str) -> None:
    (root / "lora-nojson").mkdir()
    (root / "lora-nojson" / "adapter_config.json").write_text("{not json")
    (root / "lora-bin").mkdir()
    (root / "lora-bin" / "adapter_config.json").write_text("{}")
    (root / "lora-bin" / "adapter_model.bin").write_bytes(b"x")
    (root / "lora-nobase").mkdir()
    (root / "lora-nobase" / "adapter_config.json").write_text("{}")
    (root / "lora-nobase" / "adapter_model.safetensors").write_bytes(b"x")
    (root / "empty").mkdir()
    (root / "a-file").write_text("x")
    (root / "d.txt").write_text("x")
    (root / "prompts.jsonl").write_text(json.dumps({"lang": "en", "toxic": "bad"}) + "\n")


BAD = [
    (("--limit", "0"), "limit must be at least 1"),
    (("--targets", "xx"), "unknown language code 'xx'"),
    (("--split", "dev"), "unknown split 'dev'"),
    (("--scorer", "nope"), "unknown scorer 'nope'"),
    (("--dtype", "int3"), "unknown --dtype 'int3'"),
    (("--temperature", "0"), "temperature must be a finite number above 0"),
    (("--seed", "-1"), "seed must be between 0"),
    (("--adapter", "nowhere"), "--adapter nowhere: no such directory"),
    (("--adapter", "empty"), "is not a PEFT adapter directory (no adapter_config.json)"),
    (("--adapter", "lora-nojson"), "is not valid JSON"),
    (("--adapter", "lora-bin"), "has no adapter_model.safetensors"),
    (("--model", "lora-nobase", "--adapter", "lora-bin"), "is a PEFT adapter, and --adapter gives another"),
    (("NO-MODEL", "--adapter", "lora-nobase"), "does not say its base model: pass it as --model"),
    (("--baseline", "./no-such-model"), "model path not found: ./no-such-model"),
    (("--model", "a-file"), "is not a model directory"),
    (("--chat-template",), "tokenizer has no chat template"),
    (("--data", "nope.jsonl"), "data file not found"),
    (("--data", "d.txt"), "must end in .jsonl, .csv or .parquet"),
    (("--data", "empty"), "is a directory but not a saved datasets dataset"),
    (("--data", "prompts.jsonl", "--split", "test_neutral"), "test_neutral prompts are its neutral sentences"),
    (("--out", "a-file"), "--out a-file exists and is not a directory"),
    (("--out", "empty", "--limit", "x"), "--limit"),
]


@pytest.mark.parametrize(("extra", "needle"), BAD, ids=[n.split()[0] + "-" + str(i) for i, (_, n) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2_and_nothing_written(extra, needle, tmp_path, tiny_model_dir, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDETOX_CACHE", str(tmp_path / "cache"))
    _files(tmp_path, str(tiny_model_dir))
    model = () if "NO-MODEL" in extra else ("--model", str(tiny_model_dir))  # NO-MODEL: --model left out
    argv = ["eval", *model, "--targets", "en", "--limit", "1", "--scorer", "offline", "--quiet", "--out", "out",
            *(e for e in extra if e != "NO-MODEL")]
    before = snapshot(tmp_path)
    capsys.readouterr()
    code = main(argv)
    err = one_line(capsys)
    assert code == 2, err
    assert needle in err, err
    assert snapshot(tmp_path) == before, "the command changed the files it was given, or left some behind"
