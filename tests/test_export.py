"""``xdetox export``: a tuned setting of a tiny run as a model plain transformers loads."""

import json
import re
import shutil

import pytest
import torch

from xdetox.cli import main

PROMPTS = ["Complete the sentence: you are", "Complete the sentence: das ist"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    run = tmp_path_factory.mktemp("export") / "run"
    assert main([
        "run", "--model", str(tiny_model_dir), "--targets", "en,de", "--limit", "3", "--epochs", "1",
        "--max-new-tokens", "5", "--quiet", "--out", str(run),
    ]) == 0
    return run


@pytest.fixture(scope="module")
def merged(run_dir):
    out = run_dir.parent / "merged"
    assert main(["export", str(run_dir), "--setting", "x-ft:en", "--out", str(out), "--dtype", "float32"]) == 0
    return out


def _adapter_dir(run_dir):
    (adapter,) = [p for p in (run_dir / "adapters").iterdir() if not p.name.startswith(".")]
    return adapter


def _greedy(model, tokenizer):
    outputs = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, do_sample=False, max_new_tokens=8, pad_token_id=tokenizer.pad_token_id)
        outputs.append(out[0].tolist())
    return outputs


def test_merged_export_equals_base_plus_adapter(run_dir, merged, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert model.dtype == torch.float32
    assert not any("lora" in name for name, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    weight = "model.layers.0.self_attn.q_proj.weight"  # the adapter changed it: the comparison means something
    assert not torch.equal(model.state_dict()[weight], base.state_dict()[weight])
    tuned = PeftModel.from_pretrained(base, str(_adapter_dir(run_dir))).eval()
    assert _greedy(model.eval(), tokenizer) == _greedy(tuned, AutoTokenizer.from_pretrained(tiny_model_dir))
    generation = json.loads((merged / "generation_config.json").read_text())
    assert generation["do_sample"] is True
    assert (generation["temperature"], generation["top_p"], generation["max_new_tokens"]) == (0.7, 0.9, 5)


def load_card(export_dir):
    """The export's README.md as the hub reads it: ``huggingface_hub.ModelCard`` (metadata validated)."""
    from huggingface_hub import ModelCard

    return ModelCard.load(export_dir / "README.md")


def test_card_metadata_is_the_hubs(run_dir, merged, tiny_model_dir):
    """The front matter parses as ``ModelCardData``: library, pipeline, data, tags, languages; no licence or
    base model for a local base directory (nothing is known of them); the model-index holds, per target, the
    tuned model's mean toxicity and its reduction against ZS, the summary's values verbatim."""
    data = load_card(merged).data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.datasets == ["textdetox/multilingual_paradetox"]
    assert {"detoxification", "xdetox", "cross-lingual"} <= set(data.tags)
    assert data.language == ["en", "es", "de", "zh", "ar", "hi", "uk", "ru", "am"]
    assert data.license is None and data.license_link is None and data.base_model is None
    summary = json.loads((run_dir / "summary.json").read_text())
    tuned = {e["target"]: e for e in summary["settings"] if e["paradigm"] == "x-ft"}
    results = {(r.dataset_config, r.metric_type): r for r in data.eval_results}
    assert len(results) == len(data.eval_results) == 2 * len(tuned) == 4
    for target, entry in tuned.items():
        for metric, field in (("toxicity", "mean_toxicity"), ("toxicity_reduction", "reduction_abs")):
            result = results[(target, metric)]
            assert result.metric_value == entry[field], (target, metric)
            assert (result.task_type, result.dataset_type, result.dataset_split, result.metric_config) == (
                "text-generation", "textdetox/multilingual_paradetox", "test_toxic", summary["scorer"])
    assert data.model_name == f"{tiny_model_dir}, detoxified (x-ft:en, seed 42)"


def test_card_numbers_are_the_summary(run_dir, merged):
    card = (merged / "README.md").read_text()
    front = card.split("---")[1]
    assert "- xdetox" in front and "textdetox/multilingual_paradetox" in front and "model-index:" in front
    assert all(f"- {lang}" in front for lang in ("en", "es", "de", "zh", "ar", "hi", "uk", "ru", "am"))
    summary = json.loads((run_dir / "summary.json").read_text())
    entries = {(e["paradigm"], e["target"]): e for e in summary["settings"]}
    rows = [line.split("|")[1:-1] for line in card.splitlines() if re.match(r"\| (en|de) \| test_toxic", line)]
    assert len(rows) == 2
    for cells in rows:
        target = cells[0].strip()
        tuned, zs = entries[("x-ft", target)], entries[("zs", target)]
        assert float(cells[2]) == round(zs["mean_toxicity"], 3)
        assert float(cells[3]) == round(tuned["mean_toxicity"], 3)
        numbers = [float(x) for x in re.findall(r"[+-]?\d+\.\d+", cells[4])]
        # the interval and p where the cell has two or more pairs (the random tiny model can write letterless text)
        assert numbers == [round(v, 3) for v in [tuned["reduction_abs"], *(tuned["ci95"] or ())]]
        assert cells[5].strip() == ("–" if tuned["p_value"] is None else f"{tuned['p_value']:.3f}")
        assert f"{100 * tuned['empty_share']:.0f} %" in cells[7]
    assert "## Training" in card and "LoRA r = 16, alpha = 32, dropout = 0.05" in card
    assert "n = 3 prompts per target" in card and "seeds: 42" in card and "by more than 5 points" in card
    switched = [t for t in ("en", "de") if entries[("x-ft", t)]["language_flag"]]
    language = next(line for line in card.splitlines() if line.startswith("- Language: "))
    assert ("differs from ZS's" in language) == bool(switched) and all(t in language for t in switched)
    assert "## Citation" in card and "Breaking mBad! Supervised Fine-tuning for Cross-Lingual Detoxification" in card
    assert "eprint = {2505.16722}" in card and "Beniwal, Himanshu" in card


def test_export_json(run_dir, merged, tiny_model_dir):
    info = json.loads((merged / "xdetox_export.json").read_text())
    adapter = _adapter_dir(run_dir)
    assert info["run_dir"] == str(run_dir.resolve()) and info["setting"] == "x-ft:en" and info["seed"] == 42
    assert info["train_key"] == adapter.name and info["merged"] is True and info["dtype"] == "float32"
    from xdetox.grid import file_sha256

    assert info["adapter_sha256"] == file_sha256(adapter / "adapter_model.safetensors")
    assert info["base_model"]["name"] == str(tiny_model_dir)
    assert info["xdetox_version"] and info["plan_id"]
    assert not [p for p in merged.parent.iterdir() if p.name.startswith(".merged-export-")]


def test_no_merge_loads_with_peft(run_dir, tmp_path, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter"
    assert main(["export", str(run_dir), "--setting", "x-ft:en", "--seed", "42", "--out", str(out), "--no-merge"]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(out)).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                          str(_adapter_dir(run_dir))).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert _greedy(model, tokenizer) == _greedy(reference, tokenizer)
    info = json.loads((out / "xdetox_export.json").read_text())
    assert info["merged"] is False and info["dtype"] is None
    assert "PeftModel.from_pretrained" in (out / "README.md").read_text()
    data = load_card(out).data
    assert data.library_name == "peft" and data.pipeline_tag == "text-generation" and "peft" in data.tags


def _several_seeds(run_dir, tmp_path):
    from xdetox.store import Store

    copy = tmp_path / "seeds"
    shutil.copytree(run_dir, copy)
    with Store(copy / "xdetox.sqlite") as store:
        store.add_train_setting("other-key", "x-ft:en", "other", "x-ft", "en", None, 7, {})
        store.conn.execute("UPDATE train_settings SET model = (SELECT model FROM train_settings"
                           " WHERE key != 'other-key' LIMIT 1) WHERE key = 'other-key'")
    return copy


@pytest.mark.parametrize("case, needle", [
    (["--setting", "x-ft:hi"], "its settings: x-ft:en, zs"),
    (["--setting", "zs"], "trains no adapter"),
    (["--setting", "x-ft:en", "--dtype", "float16"], "unknown --dtype"),
    (["--setting", "x-ft:en", "--seed", "3"], "has no seed 3"),
    (["NOT_A_RUN", "--setting", "x-ft:en"], "not an xdetox run"),
    (["FULL_OUT", "--setting", "x-ft:en"], "exists and is not an empty directory"),
    (["SEEDS", "--setting", "x-ft:en"], "several seeds (7, 42)"),
])
def test_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, case, needle):
    out = tmp_path / "out"
    source = run_dir
    if case[0] == "NOT_A_RUN":
        source = tmp_path / "empty"
        source.mkdir()
    elif case[0] == "SEEDS":
        source = _several_seeds(run_dir, tmp_path)
    elif case[0] == "FULL_OUT":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    args = case[1:] if case[0].isupper() else case
    capsys.readouterr()
    assert main(["export", str(source), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    if case[0] == "FULL_OUT":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-export-")]


def _card_of(run_dir, spec=None, **config_changes):
    """The card ``model_card`` writes for x-ft:en of the run, with the base ``spec`` and config changes."""
    from xdetox.export import model_card
    from xdetox.specs import ModelSpec
    from xdetox.store import Store

    with Store(run_dir / "xdetox.sqlite", readonly=True) as store:
        frame = store.table("train_settings")
        config = store.get_meta("config")
    row = dict(frame[frame["label"] == "x-ft:en"].iloc[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    return model_card(summary, row, json.loads(row["spec"]), spec or ModelSpec(), {**config, **config_changes},
                      merge=False, seq2seq=False)


def test_card_of_the_embedded_model_names_gemma(run_dir, tmp_path):
    from xdetox.specs import EMBEDDED_NAME

    card = _card_of(run_dir)
    front = card.split("---")[1]
    assert "license: gemma" in front and "base_model: google/gemma-3-270m" in front
    assert EMBEDDED_NAME in card and "Gemma Terms of Use" in card and "OpenRAIL++" in card
    (tmp_path / "README.md").write_text(card)
    data = load_card(tmp_path).data
    assert (data.license, data.license_link, data.base_model) == (
        "gemma", "https://ai.google.dev/gemma/terms", "google/gemma-3-270m")


def test_card_of_a_run_on_user_data_names_no_paradetox(run_dir, tmp_path):
    """A run on the user's own --data file: that file is the data; it has no hub id, so ``datasets`` is left
    out and the model-index names the file. paradetox appears nowhere, and the numbers are the same."""
    user_file = tmp_path / "my_pairs.jsonl"
    card = _card_of(run_dir, data_path=str(user_file))
    trained_and_measured = card.split("## Scorer")[0] + card.split("## Scorer")[1].split("## ", 1)[1]
    # the scorer's own validation table may name the sets it was validated on; nothing else may
    assert "paradetox" not in trained_and_measured.lower() and "OpenRAIL" not in card
    (tmp_path / "README.md").write_text(card)
    data = load_card(tmp_path).data
    assert data.datasets is None and "datasets" not in data.to_dict()
    assert {r.dataset_type for r in data.eval_results} == {"my_pairs.jsonl"}
    assert all("my_pairs.jsonl" in r.dataset_name for r in data.eval_results)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {(r.dataset_config, r.metric_type): r.metric_value for r in data.eval_results} == {
        (e["target"], metric): e[field] for e in summary["settings"] if e["paradigm"] == "x-ft"
        for metric, field in (("toxicity", "mean_toxicity"), ("toxicity_reduction", "reduction_abs"))}
    assert f"data: the en train pairs of {user_file}" in card and "the run's own data file `my_pairs.jsonl`" in card


# --------------------------------------------------------------------------- --push-to-hub


def _export_files(out):
    return sorted(p.name for p in out.iterdir())


@pytest.fixture(scope="module")
def adapter_files(run_dir, tmp_path_factory):
    """The files of the plain --no-merge export, which a failed push must leave the same."""
    out = tmp_path_factory.mktemp("plain") / "adapter"
    assert main(["export", str(run_dir), "--setting", "x-ft:en", "--out", str(out), "--no-merge"]) == 0
    return _export_files(out)


def _push(run_dir, out, capsys, repo="someone/xdetox-en"):
    capsys.readouterr()
    code = main(["export", str(run_dir), "--setting", "x-ft:en", "--out", str(out), "--no-merge",
                 "--push-to-hub", repo])
    return code, capsys.readouterr()


def test_push_to_hub_offline_exits_3_and_keeps_the_export(run_dir, tmp_path, capsys, monkeypatch, adapter_files):
    from huggingface_hub import constants

    from xdetox.models import hub_offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1, as on this offline machine
    hub_offline.cache_clear()
    out = tmp_path / "adapter"
    code, output = _push(run_dir, out, capsys)
    hub_offline.cache_clear()
    assert code == 3
    [line] = output.err.strip().splitlines()
    assert line.startswith("xdetox: error: cannot push to the Hugging Face hub: HF_HUB_OFFLINE is set;")
    assert f"the export is complete in {out}" in line and "hf upload someone/xdetox-en" in line
    assert _export_files(out) == adapter_files
    assert load_card(out).data.library_name == "peft"
    assert json.loads((out / "xdetox_export.json").read_text())["setting"] == "x-ft:en"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".adapter-export-")]


def test_push_to_hub_unreachable_exits_3_and_keeps_the_export(run_dir, tmp_path, capsys, monkeypatch, adapter_files):
    """No HF_HUB_OFFLINE, but nothing answers at the hub's address: xdetox's probe finds it unreachable."""
    from huggingface_hub import constants

    from xdetox.models import hub_offline

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored afterwards: the probe sets it to 1
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    hub_offline.cache_clear()
    out = tmp_path / "adapter"
    code, output = _push(run_dir, out, capsys)
    hub_offline.cache_clear()
    assert code == 3
    [line] = output.err.strip().splitlines()
    assert "the hub at 127.0.0.1 is unreachable" in line and f"the export is complete in {out}" in line
    assert _export_files(out) == adapter_files


def test_push_to_hub_upload_failure_exits_3_and_keeps_the_export(run_dir, tmp_path, capsys, monkeypatch,
                                                                 adapter_files):
    """The probe passes but the upload's connection fails: the hub client's error is one line, exit 3."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr("xdetox.hub.hub_offline", lambda: None)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    out = tmp_path / "adapter"
    code, output = _push(run_dir, out, capsys)
    assert code == 3
    [line] = output.err.strip().splitlines()
    assert line.startswith("xdetox: error: the upload to the Hugging Face hub repo someone/xdetox-en failed:")
    assert f"the export is complete in {out}" in line
    assert _export_files(out) == adapter_files


@pytest.mark.parametrize("repo, reachable, needle", [
    ("not a repo", False, "is not a hub repo id"),
    ("a/b/c", False, "is not a hub repo id"),
    ("someone/xdetox-en", True, "needs a Hugging Face token"),
])
def test_push_to_hub_bad_input_exits_2_and_writes_nothing(run_dir, tmp_path, capsys, monkeypatch, repo, reachable,
                                                          needle):
    if reachable:
        monkeypatch.setattr("xdetox.hub.hub_offline", lambda: None)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    out = tmp_path / "out"
    code, output = _push(run_dir, out, capsys, repo=repo)
    assert code == 2
    [line] = output.err.strip().splitlines()
    assert needle in line, line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out-export-")]


def test_an_out_the_system_refuses_exits_2_and_writes_nothing(run_dir, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["export", str(run_dir), "--setting", "x-ft:en", "--no-merge", "--out", str(blocker / "sub" / "out")])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and line.startswith(f"xdetox: error: --out {blocker / 'sub' / 'out'}: cannot write in")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
