"""Take a detoxified model home: one training setting of a finished run as a standalone model.

``export`` reads a run directory (its store, ``summary.json`` and ``adapters/<key>/``)
and writes, for one training setting (``x-ft:hi``, ``p-ft:10%``, ``m-ft``, ``dpo:en``):

- by default the base model with the LoRA adapter merged in (``merge_and_unload``),
  cast to ``bfloat16`` or ``float32``, as safetensors, with its tokenizer and a
  ``generation_config.json`` holding the run's sampling settings: plain
  ``transformers`` loads it, no xdetox needed;
- with ``merge=False`` the PEFT adapter itself (its config naming the base model)
  and the tokenizer;
- ``README.md``, a Hugging Face model card (``xdetox.card``: hub metadata with a ``model-index``)
  whose numbers all come from ``summary.json``;
- ``xdetox_export.json``, where the export came from.

With ``push_to_hub`` the finished export is then uploaded to that hub repo (``xdetox.hub``); where the hub
cannot be reached, the local export stays whole and the error says where it is.

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
from xdetox.card import base_model_id, model_card
from xdetox.errors import XdetoxInputError
from xdetox.specs import ModelSpec

__all__ = ["EXPORT_DTYPES", "EXPORT_FILE", "base_model_id", "export", "model_card"]

EXPORT_DTYPES = ("bfloat16", "float32")
EXPORT_FILE = "xdetox_export.json"
SUMMARY_FILE = "summary.json"


def export(run_dir: str | Path, setting: str, out: str | Path, seed: int | None = None,
           merge: bool = True, dtype: str = "bfloat16", push_to_hub: str | None = None) -> Path:
    """Export one training setting of a finished run into ``out``; return ``out``.

    ``push_to_hub``: a hub repo id (``user/name``) to upload the finished export to (``xdetox.hub``): checked
    before anything is written; where the hub cannot be reached the export stays complete in ``out`` and
    ``ServiceUnavailable`` says so."""
    from xdetox import hub

    run_dir, out = Path(run_dir), Path(out)
    if dtype not in EXPORT_DTYPES:
        raise XdetoxInputError(f"unknown --dtype {dtype!r}; choose one of {', '.join(EXPORT_DTYPES)}")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise XdetoxInputError(f"--out {out} exists and is not an empty directory")
    row, config, plan_id = _setting_row(run_dir, setting, seed)
    summary = _read_summary(run_dir)
    spec = _model_spec(config, row["model"]) if row["paradigm"] != "eval" else _given_base(config)
    adapter = _adapter_dir(run_dir, row)
    if push_to_hub is not None:
        hub.check_push(push_to_hub)  # last: it may probe the network
    info = {
        "run_dir": str(run_dir.resolve()), "setting": setting, "seed": row["seed"], "train_key": row["key"],
        "adapter_sha256": row["adapter_sha256"], "base_model": spec.to_dict(), "merged": merge,
        "dtype": dtype if merge else None, "xdetox_version": version("xdetox"), "plan_id": plan_id,
    }
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}-export-", dir=out.parent))
    except OSError as err:  # before any work: nothing is written
        raise XdetoxInputError(f"--out {out}: cannot write in {out.parent}: {err.strerror or err}") from None
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
    if push_to_hub is not None:
        hub.push_export(out, push_to_hub)
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
    if row["paradigm"] == "eval" and row["status"] == "done" and not row["adapter_path"]:
        raise XdetoxInputError(f"{label} measured the whole model {_given_base(config).name} as given, with no"
                               " adapter: it is standalone already, so there is nothing to export")
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


def _given_base(config: dict) -> ModelSpec:
    """The model an eval run's adapter was applied on (``GridConfig.evaluate``), not its baseline."""
    from xdetox.given import GivenSpec

    return GivenSpec.from_stored(config.get("evaluate"), "the run's stored config evaluate").model


def _adapter_dir(run_dir: Path, row: dict) -> Path:
    path = run_dir / row["adapter_path"]
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise XdetoxInputError(f"the adapter of {row['label']} is missing: {weights}")
    if row["adapter_sha256"] and file_sha256(weights) != row["adapter_sha256"]:
        raise XdetoxInputError(f"the adapter of {row['label']} differs from the one the run recorded: {weights}")
    return path


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
