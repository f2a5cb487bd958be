"""Take a detoxified model home: one training setting of a finished run as a standalone model.

``export`` reads a run directory (its store, ``summary.json`` and ``adapters/<key>/``)
and writes, for one training setting (``x-ft:hi``, ``p-ft:10%``, ``m-ft``, ``dpo:en``):

- by default the base model with the LoRA adapter merged in (``merge_and_unload``),
  cast to ``bfloat16`` or ``float32``, as safetensors, with its tokenizer and a
  ``generation_config.json`` holding the run's sampling settings: plain
  ``transformers`` loads it, no xdetox needed;
- with ``merge=False`` the PEFT adapter itself (its config naming the base model)
  and the tokenizer;
- ``README.md``, a Hugging Face model card whose numbers all come from ``summary.json``;
- ``xdetox_export.json``, where the export came from.

Every check happens before anything is written; the files are written into a
temporary sibling of ``out`` and renamed into place at the end, so ``out`` either
holds the whole export or does not exist.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from xdetox._io import file_sha256
from xdetox.data import LANGS
from xdetox.errors import XdetoxInputError
from xdetox.specs import EMBEDDED, EMBEDDED_NAME, PARADIGM_LABELS, ModelSpec

EXPORT_DTYPES = ("bfloat16", "float32")
EXPORT_FILE = "xdetox_export.json"
SUMMARY_FILE = "summary.json"
EMBEDDED_HUB_ID = "google/gemma-3-270m"
DATA_ID = "textdetox/multilingual_paradetox"
DATA_LICENCE = "OpenRAIL++"
TAGS = ("xdetox", "detoxification", "lora", "peft")


def export(run_dir: str | Path, setting: str, out: str | Path, seed: int | None = None,
           merge: bool = True, dtype: str = "bfloat16") -> Path:
    """Export one training setting of a finished run into ``out``; return ``out``."""
    run_dir, out = Path(run_dir), Path(out)
    if dtype not in EXPORT_DTYPES:
        raise XdetoxInputError(f"unknown --dtype {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise XdetoxInputError(f"--out {out} exists and is not an empty directory")
    row, config, plan_id = _setting_row(run_dir, setting, seed)
    summary = _read_summary(run_dir)
    spec = _model_spec(config, row["model"])
    adapter = _adapter_dir(run_dir, row)
    info = {
        "run_dir": str(run_dir.resolve()), "setting": setting, "seed": row["seed"], "train_key": row["key"],
        "adapter_sha256": row["adapter_sha256"], "base_model": spec.to_dict(), "merged": merge,
        "dtype": dtype if merge else None, "xdetox_version": version("xdetox"), "plan_id": plan_id,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    try:
        if merge:
            seq2seq = _write_merged(spec, adapter, work, dtype, config["decode"])
        else:
            seq2seq = _write_adapter(spec, adapter, work)
        train_spec = json.loads(row["spec"])
        card = model_card(summary, row, train_spec, spec, config, merge=merge, seq2seq=seq2seq)
        (work / "README.md").write_text(card, encoding="utf-8")
        (work / EXPORT_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.replace(work, out)  # an empty ``out`` is replaced as well
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


# --------------------------------------------------------------------------- what to export


def _setting_row(run_dir: Path, label: str, seed: int | None) -> tuple[dict, dict, str | None]:
    """The store's row of the setting (one seed), the run's config and its plan id."""
    from xdetox.grid import STORE_FILE
    from xdetox.store import Store

    if not (run_dir / STORE_FILE).is_file():
        raise XdetoxInputError(f"{run_dir} is not an xdetox run directory (no {STORE_FILE})")
    with Store(run_dir / STORE_FILE, readonly=True) as store:  # checked, then read; never written
        frame = store.table("train_settings")
        config, plan_id = store.get_meta("config"), store.get_meta("plan_id")
    if config is None:
        raise XdetoxInputError(f"{run_dir} holds no run configuration; is it an xdetox run?")
    rows = [dict(r) for _, r in frame[frame["label"] == label].iterrows()]
    if not rows:
        labels = ", ".join(sorted(set(frame["label"]))) or "none"
        raise XdetoxInputError(f"the run has no setting {label!r}; its settings: {labels}")
    if rows[0]["paradigm"] == "zs":
        raise XdetoxInputError(f"{label} trains no adapter, so there is nothing to export; choose a tuned setting")
    if len({r["model"] for r in rows}) > 1:
        raise XdetoxInputError(f"the run has {label} for several models; export supports one model per run")
    seeds = sorted(int(r["seed"]) for r in rows)
    if seed is None and len(seeds) > 1:
        raise XdetoxInputError(f"{label} has several seeds ({', '.join(map(str, seeds))}); choose one with --seed")
    chosen = [r for r in rows if seed is None or int(r["seed"]) == seed]
    if not chosen:
        raise XdetoxInputError(f"{label} has no seed {seed}; its seeds: {', '.join(map(str, seeds))}")
    row = chosen[0]
    row["seed"] = int(row["seed"])
    if row["status"] != "done" or not row["adapter_path"]:
        raise XdetoxInputError(f"{label} seed {row['seed']} is not trained yet; resume the run first")
    return row, config, plan_id


def _read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise XdetoxInputError(f"{run_dir} is not finished (no {SUMMARY_FILE}); resume the run first") from None
    except (OSError, ValueError) as err:
        raise XdetoxInputError(f"cannot read {run_dir / SUMMARY_FILE}: {err}") from None


def _model_spec(config: dict, display_name: str) -> ModelSpec:
    """The run's ModelSpec whose display name the store recorded."""
    for raw in config["models"]:
        spec = ModelSpec(**raw)
        if spec.display_name == display_name:
            return spec
    raise XdetoxInputError(f"the run's configuration has no model {display_name!r}")


def _adapter_dir(run_dir: Path, row: dict) -> Path:
    path = run_dir / row["adapter_path"]
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise XdetoxInputError(f"the adapter of {row['label']} is missing: {weights}")
    if row["adapter_sha256"] and file_sha256(weights) != row["adapter_sha256"]:
        raise XdetoxInputError(f"the adapter of {row['label']} differs from the one the run recorded: {weights}")
    return path


def base_model_id(spec: ModelSpec) -> str | None:
    """The Hub id of the base model (None for a local directory)."""
    if spec.name == EMBEDDED:
        return EMBEDDED_HUB_ID
    return None if Path(os.path.expanduser(spec.name)).exists() else spec.name


# --------------------------------------------------------------------------- writing the model


def _write_merged(spec: ModelSpec, adapter: Path, work: Path, dtype: str, decode: dict) -> bool:
    """Base + adapter merged, cast to ``dtype``, with tokenizer and generation config; returns seq2seq."""
    import torch
    from peft import PeftModel

    from xdetox import models

    loaded = models.load(spec, dtype="float32")  # merge in full precision, cast afterwards
    merged = PeftModel.from_pretrained(loaded.model, str(adapter)).merge_and_unload()
    merged = merged.to(device="cpu", dtype=getattr(torch, dtype))
    merged.config.torch_dtype = getattr(torch, dtype)
    generation = merged.generation_config
    generation.update(do_sample=True, temperature=decode["temperature"], top_p=decode["top_p"],
                      top_k=decode.get("top_k", 0), max_new_tokens=decode["max_new_tokens"])
    if generation.pad_token_id is None:
        generation.pad_token_id = loaded.tokenizer.pad_token_id
    merged.save_pretrained(work, safe_serialization=True)
    loaded.tokenizer.save_pretrained(work)
    return loaded.seq2seq


def _write_adapter(spec: ModelSpec, adapter: Path, work: Path) -> bool:
    """The adapter's files, its config naming the base model, and the tokenizer; returns seq2seq."""
    from transformers import AutoConfig, AutoTokenizer

    from xdetox import models

    where = models.locate(spec)
    for item in adapter.iterdir():
        if item.is_file():
            shutil.copy2(item, work / item.name)
    config_path = work / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base_model_id(spec) or spec.name
    config_path.write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    AutoTokenizer.from_pretrained(where, trust_remote_code=spec.trust_remote_code).save_pretrained(work)
    config = AutoConfig.from_pretrained(where, trust_remote_code=spec.trust_remote_code)
    return bool(getattr(config, "is_encoder_decoder", False))


# --------------------------------------------------------------------------- the model card


def _number(value, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _interval(value, ci) -> str:
    if value is None:
        return "–"
    bounds = f" [{_number(ci[0], signed=True)}, {_number(ci[1], signed=True)}]" if ci else ""
    return _number(value, signed=True) + bounds


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def setting_entries(summary: dict, row: dict) -> tuple[list[dict], dict]:
    """The summary's entries of the setting and the ZS entries by (target, split)."""
    source = row["source"] if isinstance(row["source"], str) else None
    percent = None if row["percent"] is None or row["percent"] != row["percent"] else int(row["percent"])

    def same_model(e: dict) -> bool:
        return e["model"] == row["model"]

    tuned = [e for e in summary["settings"] if same_model(e) and e["paradigm"] == row["paradigm"]
             and e["source"] == source and e["percent"] == percent]
    zs = {(e["target"], e["split"]): e for e in summary["settings"] if same_model(e) and e["paradigm"] == "zs"}
    return tuned, zs


def results_table(tuned: list[dict], zs: dict) -> list[str]:
    lines = [
        "| target | split | ZS toxicity | tuned toxicity | reduction [95 % CI] | p | length-matched [95 % CI]"
        " | empty ZS → tuned | ppl ref change | language fidelity |",
        "|---|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for e in tuned:
        base = zs.get((e["target"], e["split"]), {})
        cells = [
            e["target"], e["split"], _number(base.get("mean_toxicity")), _number(e["mean_toxicity"]),
            _interval(e["reduction_abs"], e.get("ci95")), _number(e.get("p_value")),
            _interval(e.get("reduction_length_matched"), e.get("reduction_length_matched_ci")),
            f"{_percent(base.get('empty_share'))} → {_percent(e.get('empty_share'))}",
            _number(e.get("ppl_ref_change"), signed=True), _number(e.get("lang_fidelity")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _validation_table(figures: dict) -> list[str]:
    names = list(figures)
    langs = [lang for lang in LANGS if any(lang in figures[n] for n in names)]
    lines = ["| lang | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += ["| " + " | ".join([lang] + [_number(figures[n].get(lang)) for n in names]) + " |" for lang in langs]
    return lines


def _front_matter(spec: ModelSpec) -> list[str]:
    hub_id = base_model_id(spec)
    lines = ["---", "language:"] + [f"- {lang}" for lang in LANGS]
    if spec.name == EMBEDDED:
        lines += ["license: gemma", "license_link: https://ai.google.dev/gemma/terms"]
    else:
        lines += ["license: other", "license_name: the base model's licence"]
    lines += [f"# training data: {DATA_ID}, {DATA_LICENCE}"]
    if hub_id:
        lines.append(f"base_model: {hub_id}")
    lines += ["tags:"] + [f"- {tag}" for tag in TAGS]
    lines += ["datasets:", f"- {DATA_ID}", "---", ""]
    return lines


def model_card(summary: dict, row: dict, train: dict, spec: ModelSpec, config: dict,
               merge: bool, seq2seq: bool) -> str:
    """The export's README.md: front matter, usage, results, recipe, scorer, limits, licences."""
    tuned, zs = setting_entries(summary, row)
    label = row["label"]
    paradigm = PARADIGM_LABELS.get(train["paradigm"], train["paradigm"])
    auto = "AutoModelForSeq2SeqLM" if seq2seq else "AutoModelForCausalLM"
    base = spec.display_name
    lines = _front_matter(spec) + [
        f"# {base}, detoxified ({label}, seed {row['seed']})", "",
        f"The base model **{base}** fine-tuned with LoRA by [xdetox](https://pypi.org/project/xdetox/)"
        f" ({paradigm}) to write less toxic completions.",
    ]
    if spec.name == EMBEDDED:
        lines.append(f"The base is the dequantised GGUF copy \"{EMBEDDED_NAME}\", not Google's bf16 checkpoint.")
    lines += ["", "## Use", "", "```python"]
    if merge:
        lines += [f"from transformers import {auto}, AutoTokenizer",
                  f"model = {auto}.from_pretrained(\"PATH\")", "tokenizer = AutoTokenizer.from_pretrained(\"PATH\")"]
    else:
        lines += ["from peft import PeftModel", f"from transformers import {auto}, AutoTokenizer",
                  f"model = PeftModel.from_pretrained({auto}.from_pretrained(\"BASE\"), \"PATH\")",
                  "tokenizer = AutoTokenizer.from_pretrained(\"PATH\")"]
    lines += ["```", "",
              "The merged weights (LoRA merged into the base, `merge_and_unload`)." if merge else
              f"A PEFT LoRA adapter; BASE is `{base_model_id(spec) or spec.name}`"
              + (" (the run used its dequantised GGUF Q4_K_M copy)." if spec.name == EMBEDDED else "."),
              f"The run sampled with the prompt template `{config['decode']['template']}`, temperature"
              f" {config['decode']['temperature']}, top-p {config['decode']['top_p']},"
              f" {config['decode']['max_new_tokens']} new tokens"
              + (" (in `generation_config.json`)." if merge else "."), ""]
    seeds = tuned[0]["seeds"] if tuned else [row["seed"]]
    lines += ["## Results", "",
              f"Measured by the run (`summary.json`), scorer `{summary['scorer']}`; mean toxicity of the"
              " completions of toxic prompts, ZS = the base model. Reduction = ZS − tuned over the prompts where"
              " both wrote something, with its paired bootstrap 95 % CI and permutation p; length-matched = both"
              " completions cut to the shorter one; ppl ref change = relative change of the perplexity of"
              " the target's neutral reference sentences."
              + (f" Means over seeds {', '.join(map(str, seeds))}; this export is seed {row['seed']}."
                 if len(seeds) > 1 else ""), ""]
    lines += results_table(tuned, zs) + [""]
    lora = train["lora"]
    what = {"x-ft": f"the {train['source']} train pairs", "dpo": f"the {train['source']} train pairs",
            "p-ft": f"{train['percent']} % of the train pairs of {', '.join(train['pool'])}",
            "m-ft": f"all train pairs of {', '.join(train['pool'])}"}.get(train["paradigm"], "-")
    data = config.get("data_path") or f"{DATA_ID} (bundled with xdetox)"
    lines += ["## Training", "",
              f"- paradigm: {paradigm} (`{label}`), objective `{train['objective']}`",
              f"- data: {what} of {data}",
              f"- epochs {train['epochs']}, batch size {train['batch_size']} (gradient accumulation"
              f" {train['gradient_accumulation_steps']}), learning rate {train['learning_rate']},"
              f" max length {train['max_length']}, seed {train['seed']}",
              f"- LoRA r = {lora['r']}, alpha = {lora['alpha']}, dropout = {lora['dropout']},"
              f" target modules {', '.join(lora['target_modules'])}", ""]
    figures = summary["run"].get("scorer_validation")
    lines += ["## Scorer", "", f"Toxicity is scored by xdetox's `{summary['scorer']}` scorer."]
    if figures:
        lines += ["Its validation figures (ROC-AUC, accuracy, calibration error) per language:", ""]
        lines += _validation_table(figures)
    lines.append("")
    ns = sorted({e["n"] for e in tuned})
    flagged = [e["target"] for e in tuned if e.get("abstention_flag")]
    lines += ["## Limits", "",
              f"- n = {', '.join(map(str, ns)) or '–'} prompts per target language; seeds: {', '.join(map(str, seeds))}.",
              f"- One automatic toxicity scorer (`{summary['scorer']}`); its errors are the numbers' errors.",
              "- Abstention: " + (f"the empty share differs from ZS's by more than 5 points in {', '.join(flagged)}:"
                                  " part of the reduction there is silence." if flagged else
                                  "no target's empty share differs from ZS's by more than 5 points."),
              "- Lower measured toxicity is not safety: the model can still write harmful text.", "",
              "## Licences", "",
              f"- Base model: {'Gemma Terms of Use (https://ai.google.dev/gemma/terms)' if spec.name == EMBEDDED else 'see the base model'}.",
              f"- Training data: {DATA_ID} (TextDetox 2024; Dementieva et al.), {DATA_LICENCE}.", ""]
    return "\n".join(lines)

