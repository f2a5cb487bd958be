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


def test_card_numbers_are_the_summary(run_dir, merged):
    card = (merged / "README.md").read_text()
    front = card.split("---")[1]
    assert "license: other" in front and "- xdetox" in front and "textdetox/multilingual_paradetox" in front
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
        assert numbers == [round(v, 3) for v in [tuned["reduction_abs"], *tuned["ci95"]]]
        assert float(cells[5]) == round(tuned["p_value"], 3)
        assert f"{100 * tuned['empty_share']:.0f} %" in cells[7]
    assert "## Training" in card and "LoRA r = 16, alpha = 32, dropout = 0.05" in card
    assert "n = 3 prompts per target" in card


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


def test_card_of_the_embedded_model_names_gemma(run_dir):
    from xdetox.export import model_card
    from xdetox.specs import EMBEDDED_NAME, ModelSpec
    from xdetox.store import Store

    with Store(run_dir / "xdetox.sqlite") as store:
        frame = store.table("train_settings")
        config = store.get_meta("config")
    row = dict(frame[frame["label"] == "x-ft:en"].iloc[0])
    summary = json.loads((run_dir / "summary.json").read_text())
    card = model_card(summary, row, json.loads(row["spec"]), ModelSpec(), config, merge=False, seq2seq=False)
    front = card.split("---")[1]
    assert "license: gemma" in front and "base_model: google/gemma-3-270m" in front
    assert EMBEDDED_NAME in card and "Gemma Terms of Use" in card and "OpenRAIL++" in card
