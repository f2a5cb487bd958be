"""What ``xdetox eval`` measures: a given model, and optionally a PEFT adapter on it (``GivenSpec``).

Torch-free. The ``eval`` paradigm of a run (``GridConfig.evaluate``) samples with this model instead of
training one: its setting is a training setting whose adapter is given, not trained. The model is an HF
id, a local directory or an ``xdetox export`` of merged weights; the adapter a PEFT LoRA directory
(``adapter_config.json`` + ``adapter_model.safetensors``): a run's ``adapters/<key>/``, an
``xdetox export --no-merge`` or any PEFT save. A ``--model`` that is itself such an adapter directory is
read as its base (``xdetox_export.json``, ``xdetox_adapter.json`` or ``base_model_name_or_path``) with it.

``resolve_given`` checks the files before anything is written and records the adapter's weights digest,
part of the eval setting's content key (a retrained adapter at the same path is other work);
``copy_adapter`` puts the adapter into the run directory, so the run holds what it measured.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from xdetox._io import file_sha256
from xdetox.errors import XdetoxInputError
from xdetox.specs import EMBEDDED, ModelSpec

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_RECORDS = ("xdetox_export.json", "xdetox_adapter.json")  # where xdetox wrote an adapter's base ModelSpec
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class GivenSpec:
    """The model the ``eval`` paradigm measures: ``model`` with, optionally, the PEFT ``adapter`` directory
    on it (``adapter_sha256``: its weights' digest, set together with it)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    adapter: str | None = None
    adapter_sha256: str | None = None

    def __post_init__(self):
        if not isinstance(self.model, ModelSpec):
            raise XdetoxInputError(f"the evaluated model must be a ModelSpec, got {self.model!r}")
        if self.adapter is not None and (not isinstance(self.adapter, str) or not self.adapter.strip()):
            raise XdetoxInputError(f"an adapter must be a directory path, got {self.adapter!r}")
        if (self.adapter is None) != (self.adapter_sha256 is None):
            raise XdetoxInputError("an adapter and its adapter_sha256 come together (resolve_given sets both)")
        if self.adapter_sha256 is not None and not (isinstance(self.adapter_sha256, str)
                                                    and SHA256.fullmatch(self.adapter_sha256)):
            raise XdetoxInputError(f"adapter_sha256 must be 64 hex digits, got {self.adapter_sha256!r}")

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "adapter": self.adapter, "adapter_sha256": self.adapter_sha256}

    def key_parts(self) -> dict:
        """What the eval setting's content key holds: the model and the adapter's weights, not its path."""
        return {"model": self.model.to_dict(), "adapter_sha256": self.adapter_sha256}

    @property
    def display_name(self) -> str:
        return self.model.display_name + (f" + adapter {self.adapter}" if self.adapter else "")

    @classmethod
    def from_stored(cls, raw, where: str) -> GivenSpec:
        """The spec ``to_dict`` stored (a run's config), read back."""
        if not isinstance(raw, dict) or set(raw) - {"model", "adapter", "adapter_sha256"}:
            raise XdetoxInputError(f"{where}: not an evaluated model table, got {raw!r}")
        model = raw.get("model", {})
        if not isinstance(model, dict):
            raise XdetoxInputError(f"{where}: model is not a table, got {model!r}")
        return cls(model=ModelSpec(**model), adapter=raw.get("adapter"), adapter_sha256=raw.get("adapter_sha256"))


def resolve_given(model: str | None, adapter: str | os.PathLike | None, dtype: str = "auto",
                  trust_remote_code: bool = False) -> GivenSpec:
    """The ``GivenSpec`` of ``--model`` and ``--adapter``, every file checked (one ``XdetoxInputError`` line).

    ``model`` None: the base an xdetox adapter records, else the embedded model. A ``model`` directory that
    holds a PEFT adapter (no ``config.json``) is that adapter on its recorded base."""
    for name, value in (("--model", model), ("--adapter", adapter)):
        if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value).strip()):
            raise XdetoxInputError(f"{name} must be a model name or a directory path, got {value!r}")
    spec = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if model is not None and _is_adapter_dir(Path(os.path.expanduser(model))):
        if adapter is not None:
            raise XdetoxInputError(f"--model {model} is a PEFT adapter, and --adapter gives another: pass the"
                                   " adapter's base as --model")
        adapter, model = model, None
    if adapter is None:
        return GivenSpec(ModelSpec(name=model or EMBEDDED, **spec))
    path = Path(os.path.expanduser(adapter))
    sha = check_adapter(path)
    if model is None:
        base = recorded_base(path)
        if base is None:
            raise XdetoxInputError(f"the adapter {path} does not say its base model: pass it as --model")
        model, spec["quantization"] = base.name, base.quantization
    return GivenSpec(ModelSpec(name=model, **spec), str(path.resolve()), sha)


def _is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file()


def check_adapter(path: Path) -> str:
    """``path`` is a PEFT adapter directory in the safetensors format; returns its weights' sha256."""
    try:
        if not path.is_dir():
            raise XdetoxInputError(f"--adapter {path}: no such directory")
        if not (path / ADAPTER_CONFIG).is_file():
            raise XdetoxInputError(f"--adapter {path} is not a PEFT adapter directory (no {ADAPTER_CONFIG})")
        config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        if not (path / ADAPTER_WEIGHTS).is_file():
            raise XdetoxInputError(f"--adapter {path} has no {ADAPTER_WEIGHTS}: save the adapter with"
                                   " safe_serialization=True (PEFT's default)")
        sha = file_sha256(path / ADAPTER_WEIGHTS)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XdetoxInputError(f"--adapter {path / ADAPTER_CONFIG} is not valid JSON: {err}") from None
    except OSError as err:
        raise XdetoxInputError(f"--adapter {path}: cannot read it: {err.strerror or err}") from None
    if not isinstance(config, dict):
        raise XdetoxInputError(f"--adapter {path / ADAPTER_CONFIG} is not a JSON object")
    return sha


def recorded_base(path: Path) -> ModelSpec | None:
    """The base model an adapter directory names: the ModelSpec xdetox recorded, else PEFT's
    ``base_model_name_or_path``; None when neither is there."""
    for record in BASE_RECORDS:
        try:
            base = json.loads((path / record).read_text(encoding="utf-8")).get("base_model")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(base, dict) and isinstance(base.get("name"), str):
            return ModelSpec(name=base["name"], quantization=base.get("quantization"))
    try:
        name = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return ModelSpec(name=name) if isinstance(name, str) and name.strip() else None


def lora_rank(path: Path) -> int:
    """The LoRA rank of the adapter in ``path`` (``r`` of its config; the largest of ``rank_pattern``), 0 if none."""
    config = json.loads((Path(path) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    ranks = [config.get("r") or 0, *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks if isinstance(r, (int, float)))


def copy_adapter(given: GivenSpec, target: Path) -> None:
    """The given adapter's files (its top level) into ``target``, whole or not at all; its weights must still be
    the ones the run was planned with."""
    source = Path(given.adapter)
    if not (source / ADAPTER_WEIGHTS).is_file() or file_sha256(source / ADAPTER_WEIGHTS) != given.adapter_sha256:
        raise XdetoxInputError(f"the adapter {source} is missing or changed since the run was planned"
                               f" (sha256 {given.adapter_sha256}); restore it, or evaluate it in another --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, work / item.name)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
